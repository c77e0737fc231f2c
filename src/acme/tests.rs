//! Unit tests of the answers' classification, the backoff and the gate.

use std::fs;
use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderValue, StatusCode};

use super::gate::{backoff, Gate, BACKOFF_MAX, DEFAULT_RATE_LIMIT_PAUSE, MAX_RETRY_AFTER};
use super::http::admit;
use super::problem::{classify, parse_retry_after, Verdict};

fn t(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
}

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.insert(*k, HeaderValue::from_str(v).expect("header value"));
    }
    h
}

const JSON: (&str, &str) = ("content-type", "application/json");
const PROBLEM: (&str, &str) = ("content-type", "application/problem+json");

fn problem(kind: &str) -> Vec<u8> {
    format!(r#"{{"type":"urn:ietf:params:acme:error:{kind}","detail":"it says {kind}"}}"#)
        .into_bytes()
}

#[test]
fn successes_and_definitive_refusals_are_answers() {
    let now = t(0);
    let ok = classify(
        StatusCode::OK,
        &headers(&[JSON]),
        br#"{"status":"valid"}"#,
        now,
    );
    assert_eq!(ok, Verdict::Answer);
    for kind in [
        "malformed",
        "unauthorized",
        "rejectedIdentifier",
        "caa",
        "orderNotReady",
    ] {
        let v = classify(
            StatusCode::FORBIDDEN,
            &headers(&[PROBLEM]),
            &problem(kind),
            now,
        );
        assert_eq!(v, Verdict::Answer, "{kind}");
    }
    let v = classify(
        StatusCode::BAD_REQUEST,
        &headers(&[PROBLEM]),
        &problem("malformed"),
        now,
    );
    assert_eq!(v, Verdict::Answer);
    // Server errors outside the retry list are final too.
    for code in [501, 505, 507, 511] {
        let v = classify(
            StatusCode::from_u16(code).expect("status"),
            &headers(&[PROBLEM]),
            &problem("serverInternal"),
            now,
        );
        assert_eq!(v, Verdict::Answer, "{code}");
    }
    // A HEAD for a nonce has no body at all.
    assert_eq!(
        classify(StatusCode::OK, &headers(&[JSON]), b"", now),
        Verdict::Answer
    );
}

#[test]
fn bad_nonce_is_its_own_verdict() {
    let v = classify(
        StatusCode::BAD_REQUEST,
        &headers(&[PROBLEM]),
        &problem("badNonce"),
        t(0),
    );
    assert_eq!(v, Verdict::BadNonce);
}

#[test]
fn server_errors_and_garbled_bodies_are_transient() {
    let now = t(0);
    let v = classify(
        StatusCode::INTERNAL_SERVER_ERROR,
        &headers(&[PROBLEM]),
        &problem("serverInternal"),
        now,
    );
    assert_eq!(
        v,
        Verdict::Transient("HTTP 500: it says serverInternal (serverInternal)".into())
    );
    let v = classify(StatusCode::BAD_GATEWAY, &HeaderMap::new(), b"<html>", now);
    assert_eq!(v, Verdict::Transient("HTTP 502".into()));
    // 503 without Retry-After is an ordinary transient failure.
    assert!(matches!(
        classify(StatusCode::SERVICE_UNAVAILABLE, &HeaderMap::new(), b"", now),
        Verdict::Transient(_)
    ));
    let v = classify(
        StatusCode::OK,
        &headers(&[JSON]),
        b"{\"status\": \"val\x00\xff",
        now,
    );
    assert!(
        matches!(v, Verdict::Transient(ref m) if m.contains("not the JSON")),
        "{v:?}"
    );
    let pem = ("content-type", "application/pem-certificate-chain");
    let v = classify(
        StatusCode::OK,
        &headers(&[pem]),
        b"-----BEGIN CERTIFICATE-----\nMIIB",
        now,
    );
    assert!(
        matches!(v, Verdict::Transient(ref m) if m.contains("garbled")),
        "{v:?}"
    );
}

#[test]
fn retry_after_in_seconds_or_as_a_date_is_a_moment() {
    let now = t(0);
    let v = classify(
        StatusCode::TOO_MANY_REQUESTS,
        &headers(&[PROBLEM, ("retry-after", "120")]),
        &problem("rateLimited"),
        now,
    );
    assert_eq!(
        v,
        Verdict::RetryAfter {
            until: t(120),
            why: "rate limited (HTTP 429: it says rateLimited (rateLimited))".into()
        }
    );
    let date = httpdate::fmt_http_date(t(300));
    let v = classify(
        StatusCode::SERVICE_UNAVAILABLE,
        &headers(&[("retry-after", &date)]),
        b"",
        now,
    );
    assert_eq!(
        v,
        Verdict::RetryAfter {
            until: t(300),
            why: "unavailable (HTTP 503)".into()
        }
    );
}

#[test]
fn retry_after_is_clamped_and_defaults_for_rate_limits() {
    let now = t(1000);
    // No Retry-After on a 429: an hour.
    let v = classify(StatusCode::TOO_MANY_REQUESTS, &HeaderMap::new(), b"", now);
    assert!(
        matches!(v, Verdict::RetryAfter { until, .. } if until == now + DEFAULT_RATE_LIMIT_PAUSE)
    );
    // A year is believed as a day.
    let h = headers(&[("retry-after", "31536000")]);
    assert_eq!(parse_retry_after(&h, now), Some(now + MAX_RETRY_AFTER));
    // A date in the past means now; garbage means nothing.
    let h = headers(&[("retry-after", "Sun, 06 Nov 1994 08:49:37 GMT")]);
    assert_eq!(parse_retry_after(&h, now), Some(now));
    let h = headers(&[("retry-after", "soon")]);
    assert_eq!(parse_retry_after(&h, now), None);
    // A 429 always waits at least a second.
    let v = classify(
        StatusCode::TOO_MANY_REQUESTS,
        &headers(&[("retry-after", "0")]),
        b"",
        now,
    );
    assert!(matches!(v, Verdict::RetryAfter { until, .. } if until == t(1001)));
}

#[test]
fn backoff_doubles_with_jitter_between_half_and_all() {
    assert_eq!(backoff(1, 0.0), Duration::from_millis(500));
    assert_eq!(backoff(1, 1.0), Duration::from_secs(1));
    assert_eq!(backoff(2, 0.0), Duration::from_secs(1));
    assert_eq!(backoff(3, 0.5), Duration::from_secs(3));
    assert_eq!(backoff(40, 1.0), BACKOFF_MAX);
    for n in 1..10 {
        let (lo, hi) = (backoff(n, 0.0), backoff(n, 0.999));
        assert!(lo <= hi && hi <= lo * 2, "{n}: {lo:?} {hi:?}");
    }
}

#[tokio::test]
async fn a_long_pause_closes_the_gate_and_survives_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("ca.pause");
    let gate = Gate::open("ca", file.clone(), SystemTime::now());
    assert!(gate.paused(SystemTime::now()).is_none());
    admit(&gate).await.expect("open gate");

    let until = SystemTime::now() + Duration::from_secs(3600);
    gate.defer(until, "rate limited (HTTP 429)".into(), SystemTime::now());
    let (when, why) = gate.paused(SystemTime::now()).expect("paused");
    assert_eq!(when, until);
    assert_eq!(why, "rate limited (HTTP 429)");
    let closed = admit(&gate).await.expect_err("fails fast");
    assert_eq!(
        closed.to_string(),
        "not contacted: paused after rate limited (HTTP 429)"
    );
    assert_eq!(closed.until, until);
    // A shorter wait never shortens the pause.
    gate.defer(
        SystemTime::now() + Duration::from_secs(5),
        "other".into(),
        SystemTime::now(),
    );
    assert_eq!(gate.paused(SystemTime::now()).map(|p| p.0), Some(until));

    // A new process reads the pause back.
    assert!(file.exists());
    let again = Gate::open("ca", file.clone(), SystemTime::now());
    let (when, _) = again.paused(SystemTime::now()).expect("still paused");
    assert!(when >= until && when <= until + Duration::from_secs(1));

    // An expired pause is forgotten at the next answer.
    let old = Gate::open("ca", file.clone(), SystemTime::now());
    old.set_not_before(SystemTime::now() - Duration::from_secs(1));
    old.answered(SystemTime::now());
    assert!(!file.exists());
    // An unreadable pause file is ignored.
    fs::write(&file, b"{not json").expect("write");
    assert!(Gate::open("ca", file, SystemTime::now())
        .paused(SystemTime::now())
        .is_none());
}

#[tokio::test]
async fn a_short_wait_delays_the_next_request() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gate = Gate::open("ca", dir.path().join("ca.pause"), SystemTime::now());
    let start = std::time::Instant::now();
    gate.defer(
        SystemTime::now() + Duration::from_millis(300),
        "HTTP 500".into(),
        SystemTime::now(),
    );
    assert!(
        gate.paused(SystemTime::now()).is_none(),
        "a short wait is not a pause"
    );
    admit(&gate).await.expect("opens");
    assert!(start.elapsed() >= Duration::from_millis(290));
    assert!(!dir.path().join("ca.pause").exists(), "nothing persisted");
}

#[test]
fn the_first_bad_nonce_is_free_later_ones_back_off() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gate = Gate::open("ca", dir.path().join("ca.pause"), SystemTime::now());
    assert_eq!(gate.bad_nonce(), Duration::ZERO);
    assert!(gate.bad_nonce() >= Duration::from_millis(500));
    assert!(gate.bad_nonce() >= Duration::from_secs(1));
    gate.answered(SystemTime::now());
    assert_eq!(gate.bad_nonce(), Duration::ZERO);
}

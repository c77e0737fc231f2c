//! Faults from the CA, through the fault proxy in front of a real Pebble: what renewd does
//! when the CA answers 5xx, rate-limits, rejects nonces, resets, stalls, garbles its answers
//! or sends a certificate that must not be deployed.
//!
//! Timing assertions are lower bounds only (renewd waited at least this long); nothing
//! here asserts that something is fast.

use crate::common;
use crate::common::rig;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use common::faultproxy::*;
use common::*;
use rig::*;

/// A rig whose `[ca.pebble]` goes through a fault proxy.
struct Faulty {
    rig: Rig,
    proxy: FaultProxy,
}

impl Faulty {
    fn new() -> Faulty {
        let rig = Rig::new(PebbleOptions {
            nonce_reject_percent: Some(0),
            ..PebbleOptions::default()
        });
        let proxy = FaultProxy::start(&rig.pebble);
        Faulty { rig, proxy }
    }

    /// Writes the configuration: the rig's, pointed at the proxy, with `ca_extra` lines in
    /// `[ca.pebble]`, then `body`.
    fn write_config(&self, ca_extra: &str, body: &str) {
        self.write_config_with("", ca_extra, body)
    }

    /// [`Faulty::write_config`] with top-level keys `top` first.
    fn write_config_with(&self, top: &str, ca_extra: &str, body: &str) {
        let base = self.rig.base_config_via(&self.proxy);
        fs::write(
            &self.rig.config_path,
            format!("{top}{base}{ca_extra}\n{body}"),
        )
        .unwrap();
    }

    /// One certificate `www`, issued now through the proxy (no rules yet).
    fn with_www(ca_extra: &str) -> Faulty {
        let f = Faulty::new();
        f.write_config(ca_extra, &f.rig.cert("www", &["www.test"], ""));
        f.rig.renewd_ok("run", &["--once"]);
        f
    }

    /// `renewd renew --force www`, expected to fail: its stderr.
    fn renew_fails(&self) -> String {
        let out = self.rig.renewd("renew", &["--force", "www"]);
        assert_eq!(out.status.code(), Some(1), "the renewal must fail");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(stdout.contains("www: failed"), "{stdout}");
        stdout
    }

    fn renew_ok(&self) -> String {
        let out = self.rig.renewd_ok("renew", &["--force", "www"]);
        assert!(out.contains("www: renewed"), "{out}");
        out
    }

    /// The deployed leaf of `www`, checked to match the deployed key.
    fn deployed_www(&self) -> CertView {
        let leaf = read_cert_pem(self.rig.fullchain("www"));
        assert_eq!(
            key_spki(self.rig.key("www")),
            leaf.spki,
            "key and certificate match"
        );
        leaf
    }

    fn status(&self) -> serde_json::Value {
        let json = self.rig.renewd_ok("status", &["--json"]);
        serde_json::from_str(&json).unwrap()
    }

    fn record(&self, name: &str) -> serde_json::Value {
        let path = self.rig.state_dir.join(format!("certs/{name}.json"));
        serde_json::from_slice(&fs::read(&path).unwrap()).unwrap()
    }
}

/// Every file of a directory with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| {
            let bytes = fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect()
}

/// The gaps between consecutive requests (end of one to the start of the next).
fn gaps(entries: &[LogEntry]) -> Vec<Duration> {
    entries
        .windows(2)
        .map(|w| w[1].start.saturating_duration_since(w[0].end))
        .collect()
}

fn assert_at_least(gaps: &[Duration], mins: &[f64], log: &str) {
    assert_eq!(gaps.len(), mins.len(), "gaps {gaps:?}\n{log}");
    for (i, (g, m)) in gaps.iter().zip(mins).enumerate() {
        assert!(
            g.as_secs_f64() >= *m,
            "gap {i} is {g:?}, less than the backoff's {m} s\n{log}"
        );
    }
}

/// A failed attempt left the deployed set exactly as it was, no temporary file, and said
/// why in the state record and `status`.
fn assert_failed_cleanly(
    f: &Faulty,
    before: &BTreeMap<PathBuf, Vec<u8>>,
    failures: u64,
    needle: &str,
) -> String {
    assert_eq!(
        &snapshot(&f.rig.path("tls")),
        before,
        "the deployed files changed, or a file was left beside them"
    );
    let rec = f.record("www");
    assert_eq!(rec["consecutive_failures"], failures, "{rec:#}");
    let msg = rec["history"].as_array().unwrap().last().unwrap()["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(msg.contains(needle), "state record says: {msg}");
    let rows = f.status();
    assert_eq!(rows[0]["last_ok"], false);
    assert_eq!(rows[0]["last_result"].as_str(), Some(msg.as_str()));
    // The old certificate is still deployed and still shown.
    assert!(rows[0]["serial"].is_string());
    msg
}

// ---------------------------------------------------------------------------------------
// Transient faults: recovered within the attempt, with backoff.

#[test]
fn server_errors_are_retried_with_backoff_and_the_renewal_succeeds() {
    let f = Faulty::with_www("");
    let first = read_cert_pem(f.rig.fullchain("www"));
    f.proxy
        .add_rule(Rule::new("POST", "/order-plz", Action::status(500)).times(2));
    f.proxy
        .add_rule(Rule::new("POST", "/finalize-order/", Action::status(503)).times(1));
    f.renew_ok();
    let log = f.proxy.log_text();
    let orders = f.proxy.requests("POST", "/order-plz");
    // One for the first issuance, then 500, 500, 201.
    let statuses: Vec<_> = orders.iter().map(|e| e.status).collect();
    assert_eq!(
        statuses,
        vec![Some(201), Some(500), Some(500), Some(201)],
        "{log}"
    );
    assert_at_least(&gaps(&orders[1..]), &[0.5, 1.0], &log);
    let finals = f.proxy.requests("POST", "/finalize-order/");
    assert_eq!(finals.len(), 3, "{log}");
    assert_eq!(finals[1].status, Some(503));
    assert_at_least(&gaps(&finals[1..]), &[0.5], &log);
    let second = f.deployed_www();
    assert_ne!(second.serial_hex, first.serial_hex);
}

#[test]
fn resets_are_retried_and_a_finalize_whose_answer_was_lost_completes() {
    let f = Faulty::with_www("");
    f.proxy
        .add_rule(Rule::new("POST", "/order-plz", Action::Reset).times(2));
    f.proxy
        .add_rule(Rule::new("POST", "/finalize-order/", Action::ResetAfterForward).times(1));
    let issued = f.rig.pebble.count_log(Pebble::CERT_ISSUED_LOG);
    f.renew_ok();
    let log = f.proxy.log_text();
    let orders = f.proxy.requests("POST", "/order-plz");
    assert_eq!(orders.len(), 4, "{log}");
    assert_eq!((orders[1].status, orders[2].status), (None, None), "{log}");
    assert_at_least(&gaps(&orders[1..]), &[0.5, 1.0], &log);
    // The finalize reached Pebble but its answer was lost; the resent one is refused
    // (nonce used, then order no longer ready) and renewd carries on with the order.
    let finals: Vec<_> = f
        .proxy
        .requests("POST", "/finalize-order/")
        .iter()
        .map(|e| e.status)
        .collect();
    assert_eq!(finals[1..], [None, Some(400), Some(403)], "{log}");
    assert_eq!(
        f.rig.pebble.count_log(Pebble::CERT_ISSUED_LOG),
        issued + 1,
        "one certificate for the attempt"
    );
    f.deployed_www();
}

#[test]
fn garbled_and_truncated_answers_are_retried() {
    let f = Faulty::with_www("");
    f.proxy
        .add_rule(Rule::new("POST", "/order-plz", Action::Garble).times(1));
    f.proxy
        .add_rule(Rule::new("POST", "/my-order/", Action::Truncate).times(1));
    f.proxy
        .add_rule(Rule::new("POST", "/certZ/", Action::Garble).times(1));
    f.renew_ok();
    let log = f.proxy.log_text();
    for path in ["/order-plz", "/my-order/", "/certZ/"] {
        let hit: Vec<_> = f.proxy.requests("POST", path);
        let i = hit
            .iter()
            .position(|e| e.rule.is_some())
            .unwrap_or_else(|| panic!("no fault on {path}\n{log}"));
        assert!(hit.len() > i + 1, "{path} was not retried\n{log}");
        // The garbled answer was processed by Pebble, so the resent request is refused as
        // a used nonce and signed again at once: the backoff precedes the resend.
        assert!(
            hit[i + 1].start.duration_since(hit[i].end) >= Duration::from_millis(500),
            "{path} retried without backoff\n{log}"
        );
    }
    let leaf = f.deployed_www();
    assert_eq!(leaf.names, vec!["www.test"]);
}

#[test]
fn a_bad_nonce_storm_is_ridden_out_with_growing_pauses() {
    let f = Faulty::with_www("");
    f.proxy
        .add_rule(Rule::new("POST", "/order-plz", Action::BadNonce).times(3));
    f.renew_ok();
    let log = f.proxy.log_text();
    let orders = f.proxy.requests("POST", "/order-plz");
    let statuses: Vec<_> = orders[1..].iter().map(|e| e.status).collect();
    // instant-acme resends a badNonce twice, then renewd starts the order again.
    assert_eq!(
        statuses,
        vec![Some(400), Some(400), Some(400), Some(201)],
        "{log}"
    );
    // The first badNonce is routine and resent at once; later ones are spaced.
    assert_at_least(&gaps(&orders[1..]), &[0.0, 0.5, 1.0], &log);
    assert_eq!(
        f.rig.pebble.count_log(Pebble::ORDER_CREATED_LOG),
        2,
        "one order per issuance"
    );
}

#[test]
fn a_stalled_answer_hits_the_deadline_and_is_retried() {
    let f = Faulty::with_www("timeout = \"2s\"");
    f.proxy.add_rule(
        Rule::new(
            "POST",
            "/order-plz",
            Action::Stall {
                duration: Duration::from_secs(6),
                then: AfterStall::Drop,
            },
        )
        .times(1),
    );
    f.renew_ok();
    // The stalled request is logged when the proxy lets go of it.
    wait_until(Duration::from_secs(15), "the stall to end", || {
        f.proxy.requests("POST", "/order-plz").len() == 3
    });
    let log = f.proxy.log_text();
    let orders = f.proxy.requests("POST", "/order-plz");
    assert_eq!(orders.len(), 3, "{log}");
    // renewd gave up on the stalled request at its 2 s deadline and resent it after a
    // backoff; the stalled request was still held at the proxy then.
    assert!(
        orders[2].start.duration_since(orders[1].start) >= Duration::from_millis(2500),
        "{log}"
    );
    assert!(
        orders[2].start < orders[1].end,
        "resent before the stall ended\n{log}"
    );
    assert_eq!(orders[1].status, None);
}

// ---------------------------------------------------------------------------------------
// Retry-After.

#[test]
fn a_short_retry_after_is_waited_for_before_anything_else_is_sent() {
    let f = Faulty::with_www("");
    f.proxy.add_rule(
        Rule::new(
            "POST",
            "/order-plz",
            Action::RateLimited {
                retry_after: Some("3".into()),
            },
        )
        .times(1),
    );
    // And a 503 whose Retry-After is an HTTP-date, about 6 s from now (whole seconds).
    let date = SystemTime::now() + Duration::from_secs(6);
    let date_text = httpdate::fmt_http_date(date);
    let date = httpdate::parse_http_date(&date_text).unwrap();
    let (base_sys, base_instant) = (SystemTime::now(), Instant::now());
    f.proxy.add_rule(
        Rule::new(
            "POST",
            "/finalize-order/",
            Action::Status {
                code: 503,
                retry_after: Some(date_text),
            },
        )
        .times(1),
    );
    f.renew_ok();
    let log = f.proxy.log_text();
    let all = f.proxy.log();
    for (what, path) in [("429", "/order-plz"), ("503", "/finalize-order/")] {
        let i = all
            .iter()
            .position(|e| e.path.contains(path) && e.rule.is_some())
            .unwrap_or_else(|| panic!("no {what}\n{log}"));
        let next = &all[i + 1];
        let waited = next.start.duration_since(all[i].end);
        if what == "429" {
            assert!(
                waited >= Duration::from_secs(3),
                "the next request came {waited:?} after the 429\n{log}"
            );
        } else {
            let not_before = base_instant + date.duration_since(base_sys).unwrap();
            assert!(
                next.start >= not_before,
                "a request came before the 503's Retry-After date\n{log}"
            );
        }
        assert!(
            next.path.contains(path),
            "the same request is resent\n{log}"
        );
    }
    f.deployed_www();
}

#[test]
fn a_long_retry_after_fails_the_attempt_and_becomes_the_retry_time() {
    let f = Faulty::with_www("");
    let before = snapshot(&f.rig.path("tls"));
    f.proxy.add_rule(Rule::new(
        "POST",
        "/order-plz",
        Action::Status {
            code: 503,
            retry_after: Some("7200".into()),
        },
    ));
    let t0 = now_secs();
    f.renew_fails();
    let msg = assert_failed_cleanly(&f, &before, 1, "renewd sends this CA nothing before");
    assert!(
        msg.contains("HTTP 503") || msg.contains("injected HTTP 503"),
        "{msg}"
    );
    assert_eq!(
        f.proxy.requests("POST", "/order-plz").len(),
        2,
        "one try only"
    );
    let rec = f.record("www");
    let retry_after = rec["retry_after"].as_u64().expect("retry_after recorded");
    assert!(
        retry_after >= t0 + 7199 && retry_after <= t0 + 7300,
        "{retry_after} vs {t0}"
    );
    let rows = f.status();
    assert!(rows[0]["next_renewal"].as_u64().unwrap() >= retry_after);
}

// ---------------------------------------------------------------------------------------
// Persistent faults: a failed attempt, a clear error, nothing changed, bounded requests.

#[test]
fn a_ca_that_keeps_failing_gets_four_tries_and_the_files_stay() {
    let f = Faulty::with_www("");
    let before = snapshot(&f.rig.path("tls"));
    f.proxy
        .add_rule(Rule::new("POST", "/order-plz", Action::status(500)));
    f.renew_fails();
    let msg = assert_failed_cleanly(&f, &before, 1, "gave up after 4 tries");
    assert!(msg.contains("HTTP 500"), "{msg}");
    let log = f.proxy.log_text();
    let orders = f.proxy.requests("POST", "/order-plz");
    assert_eq!(orders.len(), 5, "first issuance + 4 tries\n{log}");
    assert_at_least(&gaps(&orders[1..]), &[0.5, 1.0, 2.0], &log);
    assert!(f.record("www")["retry_after"].is_null());
}

#[test]
fn persistent_resets_stalls_and_garbled_certificates_fail_cleanly() {
    let f = Faulty::with_www("timeout = \"1s\"");
    let before = snapshot(&f.rig.path("tls"));

    f.proxy
        .add_rule(Rule::new("POST", "/order-plz", Action::Reset));
    f.renew_fails();
    assert_failed_cleanly(&f, &before, 1, "gave up after 4 tries");
    assert_eq!(f.proxy.requests("POST", "/order-plz").len(), 5);

    f.proxy.clear_rules();
    f.proxy.add_rule(Rule::new(
        "POST",
        "/order-plz",
        Action::Stall {
            duration: Duration::from_secs(3),
            then: AfterStall::Drop,
        },
    ));
    f.renew_fails();
    assert_failed_cleanly(&f, &before, 2, "no complete answer within 1s");
    wait_until(Duration::from_secs(10), "the stalls to end", || {
        f.proxy.requests("POST", "/order-plz").len() == 9
    });

    f.proxy.clear_rules();
    f.proxy.add_rule(Rule::new(
        "POST",
        "/certZ/",
        Action::ReplaceBody(
            "-----BEGIN CERTIFICATE-----\nthis is not base64!\n-----END CERTIFICATE-----\n".into(),
        ),
    ));
    f.renew_fails();
    let msg = assert_failed_cleanly(&f, &before, 3, "the certificate download is garbled");
    assert!(msg.contains("unusable answers in a row"), "{msg}");
    // Each garbled download was resent once (refused as a used nonce) and signed anew by
    // instant-acme, three times: bounded, no new order.
    let log = f.proxy.log_text();
    let downloads = f.proxy.requests("POST", "/certZ/");
    assert_eq!(downloads.len(), 1 + 6, "{log}");
}

// ---------------------------------------------------------------------------------------
// Answers that must never be deployed.

#[test]
fn a_forged_certificate_that_passes_every_check_is_deployed() {
    // The control for the refusals below: the forge itself yields a usable certificate.
    let f = Faulty::with_www("");
    f.proxy
        .add_rule(Rule::new("POST", "/finalize-order/", Action::Forge(Forge::faithful())).times(1));
    f.renew_ok();
    let chain = read_certs_pem(f.rig.fullchain("www"));
    assert_eq!(key_spki(f.rig.key("www")), chain[0].spki);
    assert_eq!(chain.len(), 2);
    assert!(
        f.proxy
            .log()
            .iter()
            .any(|e| e.rule.as_deref() == Some("forged certificate")),
        "{}",
        f.proxy.log_text()
    );
    assert_ne!(
        chain[1].der,
        parse_certs_pem(&f.rig.pebble.issuing_intermediate_pem())[0].der,
        "the forging CA's chain was deployed, not Pebble's"
    );
}

#[test]
fn a_certificate_for_another_key_wrong_names_expired_or_not_chaining_is_refused() {
    let f = Faulty::with_www("");
    let before = snapshot(&f.rig.path("tls"));
    let cases = [
        (
            Forge::faithful().other_key(),
            "the certificate is for another key",
        ),
        (
            Forge::faithful().names(&["other.test"]),
            "the certificate does not cover www.test",
        ),
        (
            Forge::faithful().expired(),
            "the certificate is not valid now",
        ),
        (
            Forge::faithful().break_chain(),
            "the certificate is not signed by the intermediate the CA sent",
        ),
    ];
    for (n, (forge, needle)) in cases.into_iter().enumerate() {
        f.proxy.clear_rules();
        f.proxy
            .add_rule(Rule::new("POST", "/finalize-order/", Action::Forge(forge)).times(1));
        let issued = f.rig.pebble.count_log(Pebble::CERT_ISSUED_LOG);
        f.renew_fails();
        let msg = assert_failed_cleanly(&f, &before, n as u64 + 1, needle);
        assert!(
            msg.contains("answered with an unusable certificate"),
            "{msg}"
        );
        assert_eq!(
            f.rig.pebble.count_log(Pebble::CERT_ISSUED_LOG),
            issued + 1,
            "Pebble completed the order"
        );
        // A refused certificate is definitive: downloaded once, not retried.
        assert!(
            f.proxy
                .log()
                .iter()
                .filter(|e| e.rule.as_deref() == Some("forged certificate"))
                .count()
                == n + 1,
            "{}",
            f.proxy.log_text()
        );
    }
}

// ---------------------------------------------------------------------------------------
// The daemon: a paused CA, and no hammering.

#[test]
fn a_rate_limit_pauses_the_ca_for_every_certificate_and_survives_a_restart() {
    let f = Faulty::new();
    // One renewal at a time, so which one meets the 429 first is the only open question.
    f.write_config_with(
        "max_concurrent_renewals = 1\n",
        "",
        &format!(
            "{}{}",
            f.rig.cert("a", &["a.test"], ""),
            f.rig.cert("b", &["b.test"], "")
        ),
    );
    f.rig.renewd_ok("run", &["--once"]);
    let before = snapshot(&f.rig.path("tls"));
    let requests_before = f.proxy.log().len();

    f.proxy.add_rule(Rule::new(
        "POST",
        "/order-plz",
        Action::RateLimited {
            retry_after: Some("3600".into()),
        },
    ));
    let mut d = f.rig.spawn_daemon();
    let t0 = now_secs();
    let out = f.rig.renewd("renew", &["--force", "--all"]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("a: failed") && stdout.contains("b: failed"),
        "{stdout}"
    );
    assert!(stdout.contains("rate limited"), "{stdout}");
    assert!(
        stdout.contains("not contacted"),
        "the second fails fast: {stdout}"
    );

    let log = f.proxy.log_text();
    assert_eq!(
        f.proxy.requests("POST", "/order-plz").len(),
        3,
        "two first issuances, then one 429\n{log}"
    );
    // Nothing more reaches the CA while the daemon runs: it goes idle with its next timer
    // no sooner than the pause ends, and the CA saw nothing meanwhile.
    let count = f.proxy.log().len();
    let until = unix_secs(f.rig.idle_until(&d).expect("a next timer"));
    assert!(
        until >= t0 + 3599,
        "idle until {until}, paused at {t0}\n{}",
        d.log()
    );
    assert_eq!(f.proxy.log().len(), count, "{}", f.proxy.log_text());
    assert!(count > requests_before);

    for name in ["a", "b"] {
        let rec = f.record(name);
        let ra = rec["retry_after"].as_u64().expect("retry_after");
        assert!(ra >= t0 + 3599 && ra <= t0 + 3700, "{name}: {ra} vs {t0}");
    }
    let rows = f.status();
    for row in rows.as_array().unwrap() {
        assert_eq!(row["last_ok"], false, "{row}");
        assert!(
            row["last_result"]
                .as_str()
                .unwrap()
                .contains("sends this CA nothing before"),
            "{row}"
        );
        assert!(row["next_renewal"].as_u64().unwrap() >= t0 + 3599, "{row}");
    }
    let table = f.rig.renewd_ok("status", &[]);
    assert!(table.contains("rate limited"), "{table}");
    assert!(d.stop().success());
    assert_eq!(
        snapshot(&f.rig.path("tls")),
        before,
        "nothing deployed changed"
    );

    // Another process remembers the pause: not one request.
    let count = f.proxy.log().len();
    let out = f.rig.renewd("renew", &["--force", "a"]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("not contacted"), "{stdout}");
    assert_eq!(f.proxy.log().len(), count, "{}", f.proxy.log_text());
    assert!(f.rig.state_dir.join("accounts/pebble.pause").exists());
}

#[test]
fn the_daemon_does_not_hammer_a_failing_ca() {
    let f = Faulty::new();
    f.write_config("", &f.rig.cert("www", &["www.test"], ""));
    f.proxy
        .add_rule(Rule::new("POST", "/order-plz", Action::status(500)));
    let d = f.rig.spawn_daemon();
    wait_until(Duration::from_secs(60), "the first attempt to fail", || {
        d.log().contains("renewal failed")
    });
    let tries = f.proxy.requests("POST", "/order-plz").len();
    assert_eq!(tries, 4, "{}", f.proxy.log_text());
    // The daemon backs off between attempts: it goes idle until the retry, and the CA saw
    // nothing meanwhile.
    let total = f.proxy.log().len();
    let until = unix_secs(f.rig.idle_until(&d).expect("a next timer"));
    assert_eq!(
        f.proxy.log().len(),
        total,
        "the daemon backs off between attempts\n{}",
        f.proxy.log_text()
    );
    let rows = f.status();
    assert_eq!(rows[0]["consecutive_failures"], 1);
    let next = rows[0]["next_renewal"].as_u64().unwrap();
    let last = rows[0]["last_attempt"].as_u64().unwrap();
    assert!(next >= last + 45, "retry at {next}, failed at {last}");
    assert!(until >= last + 45, "idle until {until}, failed at {last}");
    assert!(!f.rig.fullchain("www").exists());
    assert!(!f.rig.key("www").exists());
}

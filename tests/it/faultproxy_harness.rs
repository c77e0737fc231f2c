//! Tests of the fault proxy itself (tests/it/common/faultproxy.rs) in front of a real Pebble:
//! if these fail, every fault test's result is suspect.

use crate::common;

use std::time::{Duration, Instant};

use common::faultproxy::*;
use common::*;

fn quiet() -> PebbleOptions {
    PebbleOptions {
        nonce_reject_percent: Some(0),
        ..PebbleOptions::default()
    }
}

/// A whole issuance with instant-acme through the proxy, no rules: the certificate is
/// Pebble's, and every request went through the proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_a_full_issuance_unchanged() {
    use instant_acme::{Identifier, NewOrder, OrderStatus, RetryPolicy};
    let pebble = Pebble::start(quiet());
    let proxy = FaultProxy::start(&pebble);
    let webroot = tempfile::tempdir().unwrap();
    let _server = StaticServer::start(webroot.path(), pebble.http_port);

    let account = acme_client::new_account(&proxy.ca_pem_path, &proxy.directory_url).await;
    let ids = [Identifier::Dns("proxied.example.test".into())];
    let mut order = account.new_order(&NewOrder::new(&ids)).await.unwrap();
    assert!(
        order.url().starts_with(&proxy.base_url),
        "order URL {} is the proxy's",
        order.url()
    );
    acme_client::answer_http01(&mut order, webroot.path()).await;
    let retry = RetryPolicy::new().timeout(Duration::from_secs(20));
    assert_eq!(order.poll_ready(&retry).await.unwrap(), OrderStatus::Ready);
    order.finalize().await.unwrap();
    let chain = order.poll_certificate(&retry).await.unwrap();

    let certs = parse_certs_pem(&chain);
    assert_eq!(certs[0].names, vec!["proxied.example.test"]);
    assert_eq!(
        certs[1].der,
        parse_certs_pem(&pebble.issuing_intermediate_pem())[0].der,
        "the chain is Pebble's, unchanged"
    );
    let log = proxy.log_text();
    for path in [
        "/dir",
        "/nonce-plz",
        "/sign-me-up",
        "/order-plz",
        "/authZ/",
        "/chalZ/",
        "/my-order/",
        "/finalize-order/",
        "/certZ/",
    ] {
        assert!(!proxy.requests("", path).is_empty(), "no {path} in\n{log}");
    }
    assert!(
        proxy
            .log()
            .iter()
            .all(|e| e.rule.is_none() && e.status.is_some_and(|s| (200..300).contains(&s))),
        "{log}"
    );
    assert_eq!(pebble.count_log(Pebble::CERT_ISSUED_LOG), 1);
}

#[test]
fn urls_in_answers_are_the_proxys() {
    let pebble = Pebble::start(quiet());
    let proxy = FaultProxy::start(&pebble);
    let dir = proxy.request("GET", "/dir").unwrap();
    assert_eq!(dir.status, 200);
    let json: serde_json::Value = serde_json::from_slice(&dir.body).unwrap();
    for key in [
        "newNonce",
        "newAccount",
        "newOrder",
        "revokeCert",
        "renewalInfo",
    ] {
        let url = json[key].as_str().unwrap();
        assert!(url.starts_with(&proxy.base_url), "{key}: {url}");
    }
    assert!(!dir.text().contains(&proxy.upstream), "{}", dir.text());
    let nonce = proxy.request("HEAD", "/nonce-plz").unwrap();
    assert!(!nonce.header("replay-nonce").is_empty());
    let links = nonce.header("link");
    assert!(
        links
            .iter()
            .any(|l| l.contains(&format!("{}/dir", proxy.base_url))),
        "{links:?}"
    );
    assert!(links.iter().all(|l| !l.contains(&proxy.upstream)));
}

#[test]
fn a_rule_applies_n_times_then_stops_and_is_logged() {
    let pebble = Pebble::start(quiet());
    let proxy = FaultProxy::start(&pebble);
    proxy.add_rule(
        Rule::new(
            "GET",
            "/dir",
            Action::Status {
                code: 503,
                retry_after: Some("7".into()),
            },
        )
        .times(2),
    );
    // Other methods and paths are untouched.
    assert_eq!(proxy.request("HEAD", "/nonce-plz").unwrap().status, 200);
    let first = proxy.request("GET", "/dir").unwrap();
    assert_eq!(first.status, 503);
    assert_eq!(first.header("retry-after"), vec!["7"]);
    let problem: serde_json::Value = serde_json::from_slice(&first.body).unwrap();
    assert_eq!(problem["type"], "urn:ietf:params:acme:error:serverInternal");
    assert_eq!(proxy.request("GET", "/dir").unwrap().status, 503);
    assert_eq!(proxy.request("GET", "/dir").unwrap().status, 200);
    assert_eq!(proxy.rules_left(), vec![Some(0)]);

    let dirs = proxy.requests("GET", "/dir");
    assert_eq!(dirs.len(), 3, "{}", proxy.log_text());
    assert_eq!(dirs[0].status, Some(503));
    assert!(dirs[0].rule.as_deref().unwrap().contains("503"));
    assert_eq!(dirs[2].status, Some(200));
    assert!(dirs[2].rule.is_none());

    proxy.add_rule(Rule::any_method(
        "/dir",
        Action::RateLimited { retry_after: None },
    ));
    let limited = proxy.request("GET", "/dir").unwrap();
    assert_eq!(limited.status, 429);
    assert!(limited.text().contains("rateLimited"));
    proxy.clear_rules();
    assert_eq!(proxy.request("GET", "/dir").unwrap().status, 200);
}

#[test]
fn connection_faults_reach_the_client_as_such() {
    let pebble = Pebble::start(quiet());
    let proxy = FaultProxy::start(&pebble);

    proxy.add_rule(Rule::new("GET", "/dir", Action::Reset).times(1));
    let err = proxy.request("GET", "/dir").unwrap_err();
    assert!(!err.is_empty());

    proxy.add_rule(Rule::new("GET", "/dir", Action::Truncate).times(1));
    let err = proxy.request("GET", "/dir").unwrap_err();
    assert!(err.contains("body"), "a truncated body is an error: {err}");

    proxy.add_rule(Rule::new("GET", "/dir", Action::Garble).times(1));
    let garbled = proxy.request("GET", "/dir").unwrap();
    assert_eq!(garbled.status, 200);
    assert!(serde_json::from_slice::<serde_json::Value>(&garbled.body).is_err());

    proxy.add_rule(
        Rule::new(
            "GET",
            "/dir",
            Action::Stall {
                duration: Duration::from_millis(800),
                then: AfterStall::Forward,
            },
        )
        .times(1),
    );
    let started = Instant::now();
    assert_eq!(proxy.request("GET", "/dir").unwrap().status, 200);
    assert!(started.elapsed() >= Duration::from_millis(800));
    assert!(proxy.max_in_flight("/dir") >= 1);

    proxy.add_rule(Rule::new("HEAD", "/nonce-plz", Action::BadNonce).times(1));
    let bad = proxy.request("HEAD", "/nonce-plz").unwrap();
    assert_eq!(bad.status, 400);
    assert!(
        !bad.header("replay-nonce").is_empty(),
        "a fresh nonce comes along"
    );

    let statuses: Vec<Option<u16>> = proxy.requests("", "").iter().map(|e| e.status).collect();
    assert_eq!(
        statuses,
        vec![None, Some(200), Some(200), Some(200), Some(400)],
        "{}",
        proxy.log_text()
    );
}

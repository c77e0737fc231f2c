//! Smoke tests of the test harness itself (tests/it/common) against the real
//! Pebble: if these fail, every other integration test's failure is suspect.

use crate::common;

use std::time::{Duration, SystemTime};

use common::*;

fn quiet() -> PebbleOptions {
    PebbleOptions {
        nonce_reject_percent: Some(0),
        ..PebbleOptions::default()
    }
}

#[test]
fn pebble_starts_and_serves_a_directory_with_ari() {
    let started = std::time::Instant::now();
    let pebble = Pebble::start(PebbleOptions::default());
    eprintln!("pebble started in {:?}", started.elapsed());

    let dir = pebble.directory();
    for key in ["newOrder", "newAccount", "newNonce", "renewalInfo"] {
        assert!(dir.get(key).is_some(), "directory lacks {key}: {dir}");
    }
    let profiles = &dir["meta"]["profiles"];
    assert!(
        profiles.get("default").is_some() && profiles.get("shortlived").is_some(),
        "profiles missing: {dir}"
    );
    assert!(pebble.directory_url.starts_with("https://127.0.0.1:"));
    assert!(pebble.directory_url.ends_with("/dir"));

    let root = pebble.issuing_roots_pem();
    assert_eq!(parse_certs_pem(&root).len(), 1, "roots/0: {root}");
    let inter = pebble.issuing_intermediate_pem();
    assert_eq!(parse_certs_pem(&inter).len(), 1, "intermediates/0: {inter}");

    // The harness's TLS root signed the certificate Pebble serves.
    let tls_root = read_cert_pem(&pebble.tls_root_path);
    assert!(tls_root.names.is_empty());
}

#[test]
fn restart_keeps_ports_and_forgets_state() {
    let mut pebble = Pebble::start(quiet());
    let before = (
        pebble.directory_url.clone(),
        pebble.mgmt_url.clone(),
        pebble.http_port,
        pebble.tls_port,
        pebble.dns_port,
    );
    let root_before = pebble.issuing_roots_pem();
    pebble.restart();
    let after = (
        pebble.directory_url.clone(),
        pebble.mgmt_url.clone(),
        pebble.http_port,
        pebble.tls_port,
        pebble.dns_port,
    );
    assert_eq!(before, after);
    assert!(pebble.directory().get("newOrder").is_some());
    assert_ne!(
        root_before,
        pebble.issuing_roots_pem(),
        "a restarted Pebble has a new CA"
    );
    assert_eq!(pebble.count_log("=== harness: pebble restarted ==="), 1);
}

#[test]
fn two_pebbles_at_once_use_distinct_ports() {
    let a = Pebble::start(quiet());
    let b = Pebble::start(quiet());
    let ports = |p: &Pebble| {
        vec![
            p.directory_url.clone(),
            p.mgmt_url.clone(),
            p.challtestsrv_mgmt.clone(),
            p.http_port.to_string(),
            p.tls_port.to_string(),
            p.dns_port.to_string(),
        ]
    };
    for x in ports(&a) {
        assert!(!ports(&b).contains(&x), "{x} used by both");
    }
    assert!(a.directory().get("newOrder").is_some());
    assert!(b.directory().get("newOrder").is_some());
    assert_ne!(a.issuing_roots_pem(), b.issuing_roots_pem());
}

#[test]
fn static_server_serves_files_and_404s() {
    let root = tempfile::tempdir().unwrap();
    write_file(
        root.path().join(".well-known/acme-challenge/tok"),
        "tok.thumb",
    );
    write_file(
        root.path().parent().unwrap().join("renewd-harness-secret"),
        "x",
    );
    let server = StaticServer::start(root.path(), free_port());
    let base = format!("http://127.0.0.1:{}", server.port);

    let r = http_request(
        "GET",
        &format!("{base}/.well-known/acme-challenge/tok"),
        None,
        None,
    )
    .unwrap();
    assert_eq!((r.status, r.body.as_str()), (200, "tok.thumb"));
    let r = http_request(
        "GET",
        &format!("{base}/.well-known/acme-challenge/nope"),
        None,
        None,
    )
    .unwrap();
    assert_eq!(r.status, 404);
    let r = http_request(
        "GET",
        &format!("{base}/.well-known/../../renewd-harness-secret"),
        None,
        None,
    )
    .unwrap();
    assert_ne!(r.status, 200, "{}", r.body);
    assert_eq!(server.requests().len(), 3);

    let port = server.port;
    drop(server);
    // (A child process forked by a parallel test may hold a copy of the
    // listening socket until its exec; give that a moment.)
    wait_until(
        Duration::from_secs(2),
        "StaticServer closed on drop",
        || std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
    );
}

#[test]
fn key_spki_matches_its_certificate_and_no_other() {
    let dir = tempfile::tempdir().unwrap();
    let algs: [&'static rcgen::SignatureAlgorithm; 3] = [
        &rcgen::PKCS_ECDSA_P256_SHA256,
        &rcgen::PKCS_ECDSA_P384_SHA384,
        &rcgen::PKCS_RSA_SHA256,
    ];
    let mut spkis = Vec::new();
    for (i, alg) in algs.into_iter().enumerate() {
        let key = if *alg == rcgen::PKCS_RSA_SHA256 {
            rcgen::KeyPair::generate_rsa_for(alg, rcgen::RsaKeySize::_2048).unwrap()
        } else {
            rcgen::KeyPair::generate_for(alg).unwrap()
        };
        let params = rcgen::CertificateParams::new(vec![format!("k{i}.test")]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        write_file(dir.path().join(format!("{i}.pem")), cert.pem());
        write_file(dir.path().join(format!("{i}.key")), key.serialize_pem());
        let view = read_cert_pem(dir.path().join(format!("{i}.pem")));
        assert_eq!(view.names, vec![format!("k{i}.test")]);
        assert_eq!(
            view.spki,
            key_spki(dir.path().join(format!("{i}.key"))),
            "{alg:?}"
        );
        spkis.push(view.spki);
    }
    assert_ne!(spkis[0], spkis[1]);
    assert_ne!(spkis[0], spkis[2]);
}

#[test]
fn write_exec_makes_a_runnable_script() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("bin/hello");
    write_exec(&script, "echo hello \"$1\"\n");
    let out = std::process::Command::new(&script)
        .arg("x")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello x\n");
}

#[test]
#[should_panic(expected = "never true")]
fn wait_until_panics_with_what_on_timeout() {
    wait_until(Duration::from_millis(120), "never true", || false);
}

/// A whole issuance over http-01 through the harness: Pebble resolves the
/// name through challtestsrv to 127.0.0.1 and fetches the token from the
/// StaticServer on its http_port. Also pins what Pebble logs per new order
/// and that /set-renewal-info/ changes what ARI answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issuance_over_http01_with_the_harness() {
    use instant_acme::{CertificateIdentifier, Identifier, NewOrder, OrderStatus, RetryPolicy};

    let pebble = Pebble::start(PebbleOptions {
        validity_secs: 120,
        ..quiet()
    });
    let webroot = tempfile::tempdir().unwrap();
    let _server = StaticServer::start(webroot.path(), pebble.http_port);

    let account = acme_client::new_account(&pebble.tls_root_path, &pebble.directory_url).await;
    assert_eq!(pebble.count_log(Pebble::NEW_ORDER_LOG), 0);
    let ids = [Identifier::Dns("harness.example.test".into())];
    let mut order = account.new_order(&NewOrder::new(&ids)).await.unwrap();
    assert_eq!(pebble.count_log(Pebble::NEW_ORDER_LOG), 1);
    assert_eq!(pebble.count_log(Pebble::NEW_ACCOUNT_LOG), 1);

    acme_client::answer_http01(&mut order, webroot.path()).await;
    let retry = RetryPolicy::new().timeout(Duration::from_secs(20));
    let status = order.poll_ready(&retry).await.unwrap();
    assert_eq!(status, OrderStatus::Ready, "pebble log:\n{}", pebble.log());
    let key_pem = order.finalize().await.unwrap();
    let chain_pem = order.poll_certificate(&retry).await.unwrap();

    let out = tempfile::tempdir().unwrap();
    write_file(out.path().join("fullchain.pem"), &chain_pem);
    write_file(out.path().join("key.pem"), &key_pem);
    let leaf = read_cert_pem(out.path().join("fullchain.pem"));
    assert_eq!(leaf.names, vec!["harness.example.test".to_string()]);
    assert_eq!(leaf.spki, key_spki(out.path().join("key.pem")));
    let lifetime = leaf.not_after.duration_since(leaf.not_before).unwrap();
    assert!(
        lifetime <= Duration::from_secs(121) && lifetime >= Duration::from_secs(119),
        "validity_secs not applied: {lifetime:?}"
    );
    assert!(
        pebble.log().contains(&leaf.pebble_serial()),
        "serial {} not in log",
        leaf.pebble_serial()
    );
    let chain = read_certs_pem(out.path().join("fullchain.pem"));
    assert!(chain.len() >= 2);
    assert_eq!(
        chain[1].der,
        parse_certs_pem(&pebble.issuing_intermediate_pem())[0].der
    );

    // ARI: override the window and see the CA answer with it.
    let leaf_pem = format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        chain_pem
            .split("-----BEGIN CERTIFICATE-----")
            .nth(1)
            .unwrap()
            .split("-----END CERTIFICATE-----")
            .next()
            .unwrap()
            .trim()
    );
    let start = SystemTime::now() - Duration::from_secs(7200);
    let end = SystemTime::now() - Duration::from_secs(3600);
    pebble.set_renewal_window(&leaf_pem, start, end);
    let id = CertificateIdentifier::new(
        leaf.aki.as_deref().expect("AKI").into(),
        leaf.serial_raw.as_slice().into(),
    );
    let (info, _retry_after) = account.renewal_info(&id).await.unwrap();
    assert_eq!(
        info.suggested_window.start.unix_timestamp(),
        start
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    );

    // A replacement order (ARI `replaces`).
    assert_eq!(pebble.count_log(Pebble::ORDER_CREATED_LOG), 1);
    account
        .new_order(&NewOrder::new(&ids).replaces(id))
        .await
        .unwrap();
    assert_eq!(pebble.count_log(Pebble::NEW_ORDER_LOG), 2);
    assert_eq!(pebble.count_log(Pebble::ORDER_CREATED_LOG), 2);
    assert_eq!(pebble.count_log(Pebble::CERT_ISSUED_LOG), 1);

    eprintln!("--- pebble log of one issuance ---\n{}", pebble.log());
    assert_eq!(
        pebble.count_log(Pebble::REPLACEMENT_LOG),
        1,
        "{}",
        pebble.log()
    );
}

#[test]
fn dns_hook_sets_and_clears_txt_in_challtestsrv() {
    let pebble = Pebble::start(quiet());
    let hook = pebble.dir.path().join("dns-hook");
    pebble.write_dns_hook(&hook);
    for args in [
        ["set", "_acme-challenge.hook.example.test", "abc"],
        ["clear", "_acme-challenge.hook.example.test", "abc"],
    ] {
        let out = std::process::Command::new(&hook)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "hook {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // A direct call through the harness too.
    pebble.challtestsrv_post(
        "/set-txt",
        &serde_json::json!({"host": "_acme-challenge.direct.example.test.", "value": "v"}),
    );
}

//! One-shot issuance and renewal against a real Pebble: `run --once`, `renew`, accounts.

use crate::common;
use crate::common::rig;

use std::fs;

use common::*;
use instant_acme::{AuthorizationStatus, ChallengeStatus, OrderStatus};
use rig::*;

/// Pebble's default nonce rejection (5%) stays on here: renewd must retry badNonce.
#[test]
fn once_issues_every_certificate_with_all_file_kinds_and_one_reload_per_batch() {
    let rig = Rig::new(PebbleOptions::default());
    let hook_log = rig.path("reload.log");
    let hook = rig.path("reload.sh");
    write_exec(
        &hook,
        &format!(
            "echo \"$RENEWD_NAME|$RENEWD_DOMAINS|$RENEWD_SERIAL|$RENEWD_FULLCHAIN|$RENEWD_KEY\" >> {}\n",
            hook_log.display()
        ),
    );
    let tls = rig.path("tls");
    let all_kinds = format!(
        r#"
[[certificate]]
name = "www"
domains = ["www.test", "alt.test"]
owner = "web@example.org"
challenge = {{ type = "http-01", listen = "127.0.0.1:{port}" }}
files = {{ cert = "{t}/www.crt", chain = "{t}/www.chain", fullchain = "{t}/www.pem", key = "{t}/www.key", combined = "{t}/www.combined" }}
key_mode = "0640"
key_type = "rsa-2048"
reload = [["{hook}"]]
"#,
        port = rig.pebble.http_port,
        t = tls.display(),
        hook = hook.display()
    );
    let api = rig.cert(
        "api",
        &["api.test"],
        &format!("reload = [[\"{}\"]]", hook.display()),
    );
    rig.write_config(&format!("{all_kinds}{api}"));

    rig.renewd_ok("run", &["--once"]);

    // www: every kind, consistent with each other and with the key.
    let leaf = read_cert_pem(tls.join("www.crt"));
    let full = read_certs_pem(tls.join("www.pem"));
    let chain = read_certs_pem(tls.join("www.chain"));
    let combined = read_certs_pem(tls.join("www.combined"));
    assert_eq!(full[0], leaf, "fullchain starts with the leaf");
    assert_eq!(&full[1..], &chain[..], "fullchain continues with the chain");
    assert!(!chain.is_empty(), "the CA's intermediates are deployed");
    assert_eq!(combined, full, "combined holds the fullchain");
    assert_eq!(
        key_spki(tls.join("www.key")),
        leaf.spki,
        "key matches the certificate"
    );
    assert_eq!(
        key_spki(tls.join("www.combined")),
        leaf.spki,
        "combined's key matches"
    );
    let combined_text = fs::read_to_string(tls.join("www.combined")).unwrap();
    assert!(
        combined_text.find("PRIVATE KEY").unwrap()
            < combined_text.find("BEGIN CERTIFICATE").unwrap(),
        "combined is key first (HAProxy order)"
    );
    let mut names = leaf.names.clone();
    names.sort();
    assert_eq!(names, vec!["alt.test", "www.test"]);
    assert_eq!(mode(&tls.join("www.key")), 0o640);
    assert_eq!(mode(&tls.join("www.combined")), 0o640);
    assert_eq!(mode(&tls.join("www.pem")), 0o644);

    // api: default key mode.
    let api_leaf = read_cert_pem(rig.fullchain("api"));
    assert_eq!(key_spki(rig.key("api")), api_leaf.spki);
    assert_eq!(mode(&rig.key("api")), 0o600);

    // One reload for the batch, serving both certificates.
    let runs = lines(&hook_log);
    assert_eq!(runs.len(), 1, "one reload per batch: {runs:?}");
    let fields: Vec<&str> = runs[0].split('|').collect();
    assert_eq!(fields[0], "www api");
    assert_eq!(fields[1], "www.test,alt.test api.test");
    assert_eq!(
        fields[2],
        format!("{} {}", leaf.serial_hex, api_leaf.serial_hex)
    );
    assert_eq!(
        fields[3],
        format!(
            "{} {}",
            tls.join("www.pem").display(),
            rig.fullchain("api").display()
        )
    );

    // status (no daemon: read from disk) shows both, with a next renewal.
    let json = rig.renewd_ok("status", &["--json"]);
    let rows: serde_json::Value = serde_json::from_str(&json).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["name"], "www");
    assert_eq!(rows[0]["serial"], leaf.serial_hex.as_str());
    assert_eq!(rows[0]["owner"], "web@example.org");
    assert_eq!(rows[0]["issued_by"], "pebble");
    assert_eq!(rows[0]["last_ok"], true);
    assert_eq!(rows[0]["next_renewal_reason"], "renew_before threshold");
}

#[test]
fn once_issues_through_a_webroot_and_cleans_up_the_answer() {
    let rig = Rig::new(PebbleOptions {
        nonce_reject_percent: Some(0),
        authz_reuse_percent: Some(0),
        ..Default::default()
    });
    let webroot = rig.path("www");
    fs::create_dir_all(&webroot).unwrap();
    let server = StaticServer::start(&webroot, rig.pebble.http_port);
    let cert = rig.cert("site", &["site.test"], "").replace(
        &format!("listen = \"127.0.0.1:{}\"", rig.pebble.http_port),
        &format!("webroot = \"{}\"", webroot.display()),
    );
    rig.write_config(&cert);

    rig.renewd_ok("run", &["--once"]);

    let leaf = read_cert_pem(rig.fullchain("site"));
    assert_eq!(key_spki(rig.key("site")), leaf.spki);
    assert_eq!(leaf.names, vec!["site.test"]);
    let answers = webroot.join(".well-known/acme-challenge");
    assert_eq!(
        fs::read_dir(&answers).unwrap().count(),
        0,
        "answers are removed after validation"
    );
    assert!(
        server
            .requests()
            .iter()
            .any(|r| r.contains("/.well-known/acme-challenge/")),
        "Pebble fetched the answer from the webroot: {:?}",
        server.requests()
    );
}

#[test]
fn second_pass_with_nothing_due_creates_no_order() {
    let rig = Rig::new(PebbleOptions::default());
    rig.write_config(&format!(
        "{}{}",
        rig.cert("a", &["a.test"], ""),
        rig.cert("b", &["b.test"], "")
    ));
    rig.renewd_ok("run", &["--once"]);
    let orders = rig.pebble.count_log(Pebble::ORDER_CREATED_LOG);
    assert_eq!(orders, 2);
    let order_requests = rig.pebble.count_log(Pebble::NEW_ORDER_LOG);
    // Pebble 2.10 offers ARI, so every pass asks it about each certificate: the directory
    // and renewalInfo GETs are expected; anything else (a POST, a nonce) is not.
    let other_requests = |log: String| {
        log.lines()
            .filter(|l| l.contains("-> calling handler()"))
            .filter(|l| !l.contains("GET /dir ") && !l.contains("/renewalInfo/"))
            .count()
    };
    let requests = other_requests(rig.pebble.log());
    let ari_gets = rig.pebble.count_log("/renewalInfo/");
    let serial = read_cert_pem(rig.fullchain("a")).serial_hex;

    let out = rig.renewd("run", &["--once"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing due"));
    assert_eq!(
        rig.pebble.count_log(Pebble::NEW_ORDER_LOG),
        order_requests,
        "no new-order request"
    );
    assert_eq!(rig.pebble.count_log(Pebble::ORDER_CREATED_LOG), orders);
    assert_eq!(
        other_requests(rig.pebble.log()),
        requests,
        "no request but ARI's GETs reached the CA"
    );
    assert_eq!(
        rig.pebble.count_log("/renewalInfo/"),
        ari_gets + 2,
        "the pass asked ARI afresh about both certificates"
    );
    assert_eq!(read_cert_pem(rig.fullchain("a")).serial_hex, serial);
}

#[test]
fn renew_skips_what_is_not_due_and_force_and_dry_run_do_what_they_say() {
    let rig = Rig::new(PebbleOptions::default());
    let hook_log = rig.path("reload.log");
    let hook = rig.path("reload.sh");
    write_exec(
        &hook,
        &format!("echo \"$RENEWD_SERIAL\" >> {}\n", hook_log.display()),
    );
    rig.write_config(&rig.cert(
        "www",
        &["www.test"],
        &format!("reload = [[\"{}\"]]", hook.display()),
    ));
    rig.renewd_ok("run", &["--once"]);
    let first = read_cert_pem(rig.fullchain("www"));

    let out = rig.renewd_ok("renew", &["www"]);
    assert!(out.contains("www: skipped: not due until"), "{out}");
    assert_eq!(read_cert_pem(rig.fullchain("www")), first);

    // A pass with nothing due records the CA's ARI advice about the deployed certificate,
    // so a real renewal would now name it in `replaces`.
    rig.renewd_ok("run", &["--once"]);
    let orders = rig.pebble.count_log(Pebble::ORDER_CREATED_LOG);
    let issued = rig.pebble.count_log(Pebble::CERT_ISSUED_LOG);
    let finalizes = rig.pebble.count_log("POST /finalize-order/");
    let replacements = rig.pebble.count_log(Pebble::REPLACEMENT_LOG);
    let dry = rig.renewd("renew", &["--dry-run", "--force", "www"]);
    assert!(dry.status.success(), "dry run failed: {}", dry.status);
    let out = String::from_utf8_lossy(&dry.stdout);
    assert!(out.contains("www: dry-run-ok"), "{out}");
    assert!(out.contains("no certificate was issued"), "{out}");
    assert_eq!(
        rig.pebble.count_log(Pebble::ORDER_CREATED_LOG),
        orders + 1,
        "dry run orders"
    );
    // ... proves its authorizations, and stops before finalize: Pebble issued nothing.
    assert_eq!(
        rig.pebble.count_log(Pebble::CERT_ISSUED_LOG),
        issued,
        "a dry run issues no certificate"
    );
    assert_eq!(
        rig.pebble.count_log("POST /finalize-order/"),
        finalizes,
        "a dry run never finalizes"
    );
    assert_eq!(
        rig.pebble.count_log(Pebble::REPLACEMENT_LOG),
        replacements,
        "a dry run's order claims no replacement (ARI `replaces`)"
    );
    // The order's final state, as the CA keeps it: not valid, no certificate; each
    // authorization proven and then deactivated (RFC 8555 §7.5.2).
    let order_url = out
        .split_whitespace()
        .skip_while(|w| *w != "order")
        .nth(1)
        .unwrap_or_else(|| panic!("no order URL in {out}"))
        .to_string();
    let (status, certificate, authzs) = order_as_the_ca_keeps_it(&rig, &order_url);
    assert_ne!(status, OrderStatus::Valid, "{order_url}");
    assert_eq!(certificate, None, "{order_url}");
    assert_eq!(authzs.len(), 1, "{authzs:?}");
    for (status, challenges) in &authzs {
        assert_eq!(*status, AuthorizationStatus::Deactivated, "{authzs:?}");
        assert!(
            challenges.contains(&ChallengeStatus::Valid),
            "the challenge was answered and validated: {authzs:?}"
        );
    }
    assert_eq!(
        read_cert_pem(rig.fullchain("www")),
        first,
        "dry run deploys nothing"
    );
    assert_eq!(lines(&hook_log).len(), 1, "dry run reloads nothing");

    let out = rig.renewd_ok("renew", &["--force", "www"]);
    assert!(out.contains("www: renewed"), "{out}");
    let second = read_cert_pem(rig.fullchain("www"));
    assert_ne!(second.serial_hex, first.serial_hex);
    assert_eq!(key_spki(rig.key("www")), second.spki);
    assert_ne!(second.spki, first.spki, "a fresh key every renewal");
    assert_eq!(
        lines(&hook_log),
        vec![first.serial_hex.clone(), second.serial_hex.clone()]
    );

    // An unknown name is a bad command line (SPEC: exit 2).
    let out = rig.renewd("renew", &["nosuch"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no certificate named `nosuch`"));
}

#[test]
fn accounts_are_reused_across_runs_and_registered_again_when_the_ca_forgets_them() {
    let mut rig = Rig::new(PebbleOptions::default());
    // A second CA: another Pebble, with its own account.
    let second = Pebble::start(PebbleOptions::default());
    let second_ca = format!(
        r#"
[ca.second]
directory = "{}"
accept_terms = true
trust_roots = "{}"
"#,
        second.directory_url,
        second.tls_root_path.display()
    );
    let on_second = rig.cert("two", &["two.test"], "ca = [\"second\"]").replace(
        &format!("127.0.0.1:{}", rig.pebble.http_port),
        &format!("127.0.0.1:{}", second.http_port),
    );
    rig.write_config(&format!(
        "{second_ca}{}{on_second}",
        rig.cert("one", &["one.test"], "ca = [\"pebble\"]")
    ));
    rig.renewd_ok("run", &["--once"]);
    let acct1 = fs::read(rig.state_dir.join("accounts/pebble.json")).unwrap();
    let acct2 = fs::read(rig.state_dir.join("accounts/second.json")).unwrap();
    assert_eq!(mode(&rig.state_dir.join("accounts/pebble.json")), 0o600);
    assert_eq!(rig.pebble.count_log(Pebble::ACCOUNT_CREATED_LOG), 1);
    assert_eq!(second.count_log(Pebble::ACCOUNT_CREATED_LOG), 1);
    assert_eq!(second.count_log(Pebble::ORDER_CREATED_LOG), 1);

    // A new process reuses both accounts.
    rig.renewd_ok("renew", &["--force", "--all"]);
    assert_eq!(
        rig.pebble.count_log(Pebble::ACCOUNT_CREATED_LOG),
        1,
        "account reused"
    );
    assert_eq!(
        second.count_log(Pebble::ACCOUNT_CREATED_LOG),
        1,
        "second CA's account reused"
    );
    assert_eq!(second.count_log(Pebble::ORDER_CREATED_LOG), 2);
    assert_eq!(
        fs::read(rig.state_dir.join("accounts/pebble.json")).unwrap(),
        acct1
    );
    assert_eq!(
        fs::read(rig.state_dir.join("accounts/second.json")).unwrap(),
        acct2
    );

    // The CA forgets everything; renewd registers again and the renewal succeeds.
    rig.pebble.restart();
    let out = rig.renewd("renew", &["--force", "one"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("registering a new one"));
    assert_ne!(
        fs::read(rig.state_dir.join("accounts/pebble.json")).unwrap(),
        acct1
    );
    let kept: Vec<_> = fs::read_dir(rig.state_dir.join("accounts"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("pebble.json."))
        .collect();
    assert_eq!(
        kept.len(),
        1,
        "the old account key is kept aside, never deleted"
    );
    assert_eq!(
        key_spki(rig.key("one")),
        read_cert_pem(rig.fullchain("one")).spki
    );
}

#[test]
fn a_failed_validation_is_reported_with_the_cas_words_and_nothing_is_deployed() {
    let rig = Rig::new(PebbleOptions {
        authz_reuse_percent: Some(0),
        ..Default::default()
    });
    // Validated through a webroot nobody serves: Pebble cannot fetch the answer.
    let webroot = rig.path("unserved");
    fs::create_dir_all(&webroot).unwrap();
    let cert = rig.cert("www", &["www.test"], "").replace(
        &format!("listen = \"127.0.0.1:{}\"", rig.pebble.http_port),
        &format!("webroot = \"{}\"", webroot.display()),
    );
    rig.write_config(&cert);
    let out = rig.renewd("run", &["--once"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("validation of www.test failed"), "{err}");
    assert!(
        err.contains("connection refused")
            || err.contains("Connection refused")
            || err.contains("connection"),
        "{err}"
    );
    assert!(!rig.fullchain("www").exists());
    assert!(!rig.key("www").exists());
    let json = rig.renewd_ok("status", &["--json"]);
    let rows: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(rows[0]["last_ok"], false);
    assert_eq!(rows[0]["consecutive_failures"], 1);
    assert!(rows[0]["last_result"]
        .as_str()
        .unwrap()
        .contains("www.test"));
    // Backing off: a second pass right away does not hammer the CA.
    let orders = rig.pebble.count_log(Pebble::ORDER_CREATED_LOG);
    let out = rig.renewd("run", &["--once"]);
    assert_eq!(out.status.code(), Some(1), "still not fine");
    assert_eq!(
        rig.pebble.count_log(Pebble::ORDER_CREATED_LOG),
        orders,
        "backoff respected"
    );
    // `renew www` skips it for the backoff too, and with nothing deployed that is a failure.
    let out = rig.renewd("renew", &["www"]);
    assert_eq!(out.status.code(), Some(1), "nothing deployed: not fine");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("www: failed: nothing usable is deployed") && said.contains("not due until"),
        "{said}"
    );
    assert_eq!(rig.pebble.count_log(Pebble::ORDER_CREATED_LOG), orders);
}

/// Order state as the CA keeps it: status, certificate URL, and each authorization's status
/// with its challenges' statuses.
type OrderView = (
    OrderStatus,
    Option<String>,
    Vec<(AuthorizationStatus, Vec<ChallengeStatus>)>,
);

/// The order at `order_url` and its authorizations, as Pebble keeps them now: POST-as-GET
/// (RFC 8555 §6.3) signed with renewd's own account for CA `pebble` (Pebble refuses plain
/// GETs of orders).
fn order_as_the_ca_keeps_it(rig: &Rig, order_url: &str) -> OrderView {
    let stored: serde_json::Value = serde_json::from_slice(
        &fs::read(rig.state_dir.join("accounts/pebble.json")).expect("account file"),
    )
    .expect("account file is JSON");
    let credentials: instant_acme::AccountCredentials =
        serde_json::from_value(stored["credentials"].clone()).expect("account credentials");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let account = instant_acme::Account::builder_with_root(&rig.pebble.tls_root_path)
            .expect("client")
            .from_credentials(credentials)
            .await
            .expect("account");
        let mut order = account.order(order_url.to_string()).await.expect("order");
        let mut authzs = Vec::new();
        let mut it = order.authorizations();
        while let Some(authz) = it.next().await {
            let mut authz = authz.expect("authorization");
            let state = authz.refresh().await.expect("authorization");
            let challenges = state.challenges.iter().map(|c| c.status).collect();
            authzs.push((state.status, challenges));
        }
        let state = order.refresh().await.expect("order");
        (state.status, state.certificate.clone(), authzs)
    })
}

//! A renewal storm: every certificate due at once, through the fault proxy in front of a
//! real Pebble. `max_concurrent_renewals` must hold, every certificate must be deployed,
//! and a reload command they share must run once for the batch.

use crate::common;
use crate::common::rig;

use std::fs;
use std::time::Duration;

use common::faultproxy::*;
use common::*;
use rig::*;

const CERTS: usize = 20;
const LIMIT: usize = 3;

#[test]
fn max_concurrent_renewals_holds_under_a_storm_and_the_shared_reload_runs_once() {
    let rig = Rig::new(PebbleOptions {
        nonce_reject_percent: Some(0),
        ..PebbleOptions::default()
    });
    let proxy = FaultProxy::start(&rig.pebble);
    let reload_log = rig.path("reload.log");
    let hook = rig.path("reload.sh");
    write_exec(
        &hook,
        &format!("echo \"$RENEWD_NAME\" >> {}\n", reload_log.display()),
    );
    let mut body = String::new();
    for i in 0..CERTS {
        body.push_str(&rig.cert(
            &format!("c{i:02}"),
            &[&format!("c{i:02}.test")],
            &format!("reload = [[\"{}\"]]", hook.display()),
        ));
    }
    let base = rig.base_config_via(&proxy);
    fs::write(
        &rig.config_path,
        format!("max_concurrent_renewals = {LIMIT}\n{base}{body}"),
    )
    .unwrap();

    // Every new order is held a moment, so renewals under way overlap for certain.
    proxy.add_rule(Rule::new(
        "POST",
        "/order-plz",
        Action::Stall {
            duration: Duration::from_millis(1500),
            then: AfterStall::Forward,
        },
    ));
    rig.renewd_ok("run", &["--once"]);

    let log = proxy.log_text();
    assert_eq!(
        proxy.requests("POST", "/order-plz").len(),
        CERTS,
        "one order each\n{log}"
    );
    assert_eq!(
        proxy.max_in_flight("/order-plz"),
        LIMIT,
        "at most {LIMIT} renewals at once, and the storm reached that many\n{log}"
    );
    for i in 0..CERTS {
        let name = format!("c{i:02}");
        let leaf = read_cert_pem(rig.fullchain(&name));
        assert_eq!(leaf.names, vec![format!("{name}.test")]);
        assert_eq!(key_spki(rig.key(&name)), leaf.spki, "{name}");
    }
    let runs = lines(&reload_log);
    assert_eq!(runs.len(), 1, "the shared reload ran once: {runs:?}");
    let served: Vec<&str> = runs[0].split(' ').collect();
    assert_eq!(served.len(), CERTS, "it served every certificate: {runs:?}");
}

/// `renew_before = "120d"` for 90-day certificates from a CA without ARI once made the daemon
/// order, deploy and reload about once a second, with no warning. Now the threshold is
/// clamped to 2/3 of the lifetime the CA gave: one issuance while a 90-second certificate
/// beside it (the test's clock: renewed every 60 s) is issued twice, and the clamp is said in
/// `status`, the log, `check` and an alert.
#[test]
fn a_renew_before_longer_than_the_lifetime_issues_once_and_warns() {
    let rig = Rig::new(PebbleOptions {
        validity_secs: 90 * 86400,
        profile_validity: vec![("shortlived".into(), 90)],
        nonce_reject_percent: Some(0),
        ..PebbleOptions::default()
    });
    let reload_log = rig.path("reload.log");
    let hook = rig.path("reload.sh");
    write_exec(
        &hook,
        &format!("echo \"$RENEWD_NAME\" >> {}\n", reload_log.display()),
    );
    let alert_log = rig.path("alerts.log");
    let alert = rig.path("alert.sh");
    write_exec(
        &alert,
        &format!("cat >> {}\necho >> {0}\n", alert_log.display()),
    );
    let reload = format!("reload = [[\"{}\"]]", hook.display());
    let body = format!(
        "ari = false\n\n[alert]\ncommand = [\"{}\"]\n{}{}",
        alert.display(),
        rig.cert(
            "www",
            &["www.test"],
            // Pebble picks a random profile for an order that names none: name it.
            &format!("renew_before = \"120d\"\nprofile = \"default\"\n{reload}")
        ),
        rig.cert(
            "tick",
            &["tick.test"],
            &format!("profile = \"shortlived\"\n{reload}")
        ),
    );
    rig.write_config(&body);
    // One line per reload; a reload shared by both lists both names.
    let issued = |name: &str| {
        lines(&reload_log)
            .iter()
            .filter(|l| l.split(' ').any(|n| n == name))
            .count()
    };

    let d = rig.spawn_daemon();
    wait_until(Duration::from_secs(60), "first issuances", || {
        issued("www") >= 1 && issued("tick") >= 1
    });
    // A minute of daemon time, as the 90-second certificate's renewal measures it.
    wait_until(
        Duration::from_secs(150),
        "the tick certificate renewed",
        || issued("tick") >= 2,
    );
    assert_eq!(issued("www"), 1, "www issued once\n{}", d.log());
    assert_eq!(
        rig.pebble.count_log("ARI:"),
        0,
        "no `replaces` with ari = false"
    );

    let json = rig.renewd_ok("status", &["--json", "www"]);
    let rows: serde_json::Value = serde_json::from_str(&json).expect("status JSON");
    let row = &rows[0];
    assert_eq!(
        row["next_renewal_reason"], "renew_before threshold, clamped to 2/3 of the lifetime",
        "{row}"
    );
    let leaf = read_cert_pem(rig.fullchain("www"));
    let unix = unix_secs;
    assert_eq!(
        row["next_renewal"].as_u64(),
        Some(unix(leaf.not_after) - 60 * 86400),
        "{row}"
    );
    let warning = "renew_before (120d) is longer than 2/3 of the certificate's lifetime (90d): \
                   renewing 60d before expiry instead";
    assert_eq!(row["warnings"][0], warning, "{row}");
    assert!(d.log().contains(warning), "{}", d.log());
    wait_until(
        Duration::from_secs(10),
        "the renew_before_too_long alert",
        || {
            std::fs::read_to_string(&alert_log)
                .unwrap_or_default()
                .contains("\"condition\":\"renew_before_too_long\"")
        },
    );
    let out = rig.renewd_ok("check", &[]);
    assert!(
        out.lines()
            .any(|l| l.contains(": warning: certificate www: ") && l.contains(warning)),
        "{out}"
    );
}

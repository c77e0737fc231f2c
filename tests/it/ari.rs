//! ARI (RFC 9773) against a real Pebble 2.10: the CA's suggested window decides when a
//! certificate is renewed, `replaces` names the certificate renewed, and answers that cannot
//! be used fall back to `renew_before`.

use crate::common;
use crate::common::rig;

use std::time::{Duration, SystemTime};

use common::*;
use rig::*;

const DAY: Duration = Duration::from_secs(86400);

fn status_of(rig: &Rig, name: &str) -> serde_json::Value {
    let json = rig.renewd_ok("status", &["--json", name]);
    let v: serde_json::Value = serde_json::from_str(&json).expect("status JSON");
    let row = v
        .as_array()
        .and_then(|a| a.first())
        .cloned()
        .unwrap_or_else(|| panic!("no status row in {json}"));
    row
}

/// A rig with a 90-day certificate `www` (`renew_before = "1d"`: only ARI renews it early),
/// issued; its leaf.
fn ninety_day_www() -> (Rig, CertView) {
    let rig = Rig::new(PebbleOptions {
        validity_secs: 90 * 86400,
        ..PebbleOptions::default()
    });
    rig.write_config(&rig.cert("www", &["www.test"], r#"renew_before = "1d""#));
    rig.renewd_ok("run", &["--once"]);
    let first = read_cert_pem(rig.fullchain("www"));
    (rig, first)
}

/// A certificate far from its `renew_before` threshold is renewed on the next pass once the
/// CA's window has passed, with `replaces` accepted by Pebble, and not renewed again after.
#[test]
fn a_passed_window_renews_once_with_replaces() {
    let (rig, first) = ninety_day_www();
    let orders = rig.pebble.count_log(Pebble::ORDER_CREATED_LOG);
    assert_eq!(orders, 1);

    // Pebble's own window for a fresh 90-day certificate is weeks away: nothing happens.
    rig.renewd_ok("run", &["--once"]);
    assert_eq!(rig.pebble.count_log(Pebble::ORDER_CREATED_LOG), orders);
    let row = status_of(&rig, "www");
    assert_eq!(row["next_renewal_reason"], "ARI window", "{row}");
    assert!(
        row["ari"].as_str().is_some_and(|s| s.contains("window")),
        "{row}"
    );

    // The CA now says the window has passed, and renewd deployed the certificate two hours
    // ago (its record says so): past the floor that keeps a certificate just deployed from
    // being renewed again at once, whatever the CA says.
    rig.backdate_last_success("www", 2 * 3600);
    let pem = std::fs::read_to_string(rig.fullchain("www")).expect("read fullchain");
    let now = SystemTime::now();
    rig.pebble
        .set_renewal_window(&pem, now - 2 * DAY, now - DAY);
    rig.renewd_ok("run", &["--once"]);
    let second = read_cert_pem(rig.fullchain("www"));
    assert_ne!(second.serial_hex, first.serial_hex, "renewed");
    assert_eq!(rig.pebble.count_log(Pebble::ORDER_CREATED_LOG), orders + 1);
    assert_eq!(
        rig.pebble.count_log(Pebble::REPLACEMENT_LOG),
        1,
        "the new order named the certificate it replaces:\n{}",
        rig.pebble.log()
    );

    // The new certificate's window is Pebble's default again: no further renewal.
    rig.renewd_ok("run", &["--once"]);
    assert_eq!(rig.pebble.count_log(Pebble::ORDER_CREATED_LOG), orders + 1);
    assert_eq!(
        read_cert_pem(rig.fullchain("www")).serial_hex,
        second.serial_hex
    );
}

/// A window in the future is respected even when `renew_before` says the certificate is due;
/// an answer that cannot be used makes `renew_before` decide again.
#[test]
fn a_future_window_is_respected_and_garbage_falls_back_to_the_threshold() {
    let (rig, first) = ninety_day_www();
    let pem = std::fs::read_to_string(rig.fullchain("www")).expect("read fullchain");
    let orders = rig.pebble.count_log(Pebble::ORDER_CREATED_LOG);

    let now = SystemTime::now();
    let (start, end) = (now + 10 * DAY, now + 11 * DAY);
    rig.pebble.set_renewal_window(&pem, start, end);
    // renew_before of 100 days would make a 90-day certificate due at once: ARI wins.
    rig.write_config(&rig.cert("www", &["www.test"], r#"renew_before = "100d""#));
    rig.renewd_ok("run", &["--once"]);
    assert_eq!(rig.pebble.count_log(Pebble::ORDER_CREATED_LOG), orders);
    let row = status_of(&rig, "www");
    assert_eq!(row["next_renewal_reason"], "ARI window", "{row}");
    let at = row["next_renewal"].as_u64().expect("next_renewal");
    let unix = unix_secs;
    assert!(
        at + 1 >= unix(start) && at <= unix(end) + 1,
        "{at} inside [{}, {}]",
        unix(start),
        unix(end)
    );
    // The chosen moment is stable across passes while the window stays the same.
    rig.renewd_ok("run", &["--once"]);
    assert_eq!(status_of(&rig, "www")["next_renewal"].as_u64(), Some(at));

    // Garbage from the CA: renew_before decides, so with 100 days the certificate is due.
    rig.pebble.set_renewal_info(
        &pem,
        &serde_json::json!({ "suggestedWindow": "soon, maybe" }),
    );
    rig.write_config(&rig.cert("www", &["www.test"], r#"renew_before = "1d""#));
    rig.renewd_ok("run", &["--once"]);
    assert_eq!(rig.pebble.count_log(Pebble::ORDER_CREATED_LOG), orders);
    let row = status_of(&rig, "www");
    assert_eq!(
        row["next_renewal_reason"], "renew_before threshold",
        "{row}"
    );
    assert!(
        row["ari"].as_str().is_some_and(|s| s.contains("not used")),
        "{row}"
    );

    // A window that ends before it starts is garbage too: renew_before decides, and 100
    // days for a 90-day certificate is clamped to 2/3 of its lifetime, so nothing is due
    // (it once made every fresh certificate due at once: a renewal storm).
    rig.pebble
        .set_renewal_window(&pem, now + 11 * DAY, now + 10 * DAY);
    rig.write_config(&rig.cert("www", &["www.test"], r#"renew_before = "100d""#));
    rig.renewd_ok("run", &["--once"]);
    assert_eq!(rig.pebble.count_log(Pebble::ORDER_CREATED_LOG), orders);
    let row = status_of(&rig, "www");
    assert_eq!(
        row["next_renewal_reason"], "renew_before threshold, clamped to 2/3 of the lifetime",
        "{row}"
    );
    assert!(
        row["warnings"][0]
            .as_str()
            .is_some_and(|w| w.contains("renew_before (100d) is longer than 2/3")),
        "{row}"
    );
    assert_eq!(
        read_cert_pem(rig.fullchain("www")).serial_hex,
        first.serial_hex
    );
}

/// `profile` per CA, overridden per certificate: the issued lifetime is the profile's.
#[test]
fn the_profile_chosen_decides_the_lifetime_and_an_unknown_one_is_refused() {
    let short = 6 * 86400;
    let rig = Rig::new(PebbleOptions {
        validity_secs: 90 * 86400,
        profile_validity: vec![("shortlived".into(), short)],
        ..PebbleOptions::default()
    });
    let body = format!(
        "profile = \"default\"\n{}{}",
        rig.cert("long", &["long.test"], ""),
        rig.cert("short", &["short.test"], r#"profile = "shortlived""#)
    );
    rig.write_config(&body);
    // `check` asks the CA which profiles it offers.
    rig.renewd_ok("check", &[]);
    rig.renewd_ok("run", &["--once"]);
    let lifetime = |name: &str| {
        let c = read_cert_pem(rig.fullchain(name));
        c.not_after.duration_since(c.not_before).unwrap().as_secs()
    };
    // Pebble's validityPeriod is notAfter - notBefore, give or take a second.
    assert!(
        lifetime("long").abs_diff(90 * 86400) <= 1,
        "{}",
        lifetime("long")
    );
    assert!(
        lifetime("short").abs_diff(short) <= 1,
        "{}",
        lifetime("short")
    );

    rig.write_config(&rig.cert("nope", &["nope.test"], r#"profile = "classic""#));
    // It stops that certificate only: a warning, which --strict turns into exit 78.
    let out = rig.renewd("check", &["--strict"]);
    assert_eq!(
        out.status.code(),
        Some(78),
        "check refuses an unknown profile"
    );
    let said = String::from_utf8_lossy(&out.stdout);
    let at = format!("{}:", rig.config_path.display());
    assert!(
        said.lines().any(|l| l.starts_with(&at)
            && l.contains(
                "CA pebble does not offer the profile \"classic\"; it offers: default, shortlived"
            )),
        "{said}"
    );
    let out = rig.renewd("run", &["--once"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("profile \"classic\" is not offered; the CA offers: default, shortlived"),
        "{err}"
    );
    assert!(!rig.fullchain("nope").exists());
}

/// `ca = ["dead", "pebble"]`: after three failures in a row on an unreachable first CA, the
/// second one issues, and `status` says which CA did.
#[test]
fn a_second_ca_issues_after_three_failures_of_the_first() {
    let rig = Rig::new(PebbleOptions::default());
    let dead_port = free_port();
    let body = format!(
        r#"
[ca.dead]
directory = "https://127.0.0.1:{dead_port}/dir"
contact = ["mailto:ops@example.org"]
accept_terms = true
timeout = "2s"
{}"#,
        rig.cert("www", &["www.test"], r#"ca = ["dead", "pebble"]"#)
    );
    rig.write_config(&body);
    for attempt in 1..=3 {
        let out = rig.renewd("renew", &["--force", "www"]);
        assert_eq!(
            out.status.code(),
            Some(1),
            "attempt {attempt} fails on CA dead"
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("CA dead"));
        assert!(!rig.fullchain("www").exists());
    }
    assert_eq!(rig.pebble.count_log(Pebble::ORDER_CREATED_LOG), 0);
    let out = rig.renewd_ok("renew", &["--force", "www"]);
    assert!(out.contains("from CA pebble"), "{out}");
    assert!(rig.fullchain("www").exists());
    assert_eq!(rig.pebble.count_log(Pebble::ORDER_CREATED_LOG), 1);
    assert_eq!(status_of(&rig, "www")["issued_by"], "pebble");
    let table = rig.renewd_ok("status", &[]);
    assert!(table.contains("issued by:  CA pebble"), "{table}");
}

/// `ari = false` set after the CA gave advice: the advice is dropped (status says
/// renew_before decides, the record keeps no window) and the next order names no
/// certificate in `replaces` (the new-order body, as the fault proxy saw it).
#[test]
fn ari_false_drops_recorded_advice_and_sends_no_replaces() {
    use common::faultproxy::FaultProxy;
    let rig = Rig::new(PebbleOptions {
        validity_secs: 90 * 86400,
        nonce_reject_percent: Some(0),
        ..PebbleOptions::default()
    });
    let proxy = FaultProxy::start(&rig.pebble);
    let config = |ca_extra: &str| {
        let base = rig.base_config_via(&proxy);
        std::fs::write(
            &rig.config_path,
            format!(
                "{base}{ca_extra}\n{}",
                rig.cert("www", &["www.test"], r#"renew_before = "1d""#)
            ),
        )
        .expect("write config");
    };
    config("");
    rig.renewd_ok("run", &["--once"]);
    // The second pass asks the CA about the new certificate: advice recorded.
    rig.renewd_ok("run", &["--once"]);
    assert_eq!(status_of(&rig, "www")["next_renewal_reason"], "ARI window");

    config("ari = false");
    let row = status_of(&rig, "www");
    assert_eq!(
        row["next_renewal_reason"], "renew_before threshold",
        "{row}"
    );
    rig.renewd_ok("run", &["--once"]);
    let rec: serde_json::Value = serde_json::from_slice(
        &std::fs::read(rig.state_dir.join("certs/www.json")).expect("record"),
    )
    .expect("record JSON");
    assert!(
        rec["ari"].is_null() || rec["ari"]["window"].is_null(),
        "stale advice dropped: {rec}"
    );
    let before = proxy.requests("POST", "/order-plz").len();
    rig.renewd_ok("renew", &["--force", "www"]);
    let orders = proxy.requests("POST", "/order-plz");
    assert_eq!(orders.len(), before + 1, "{}", proxy.log_text());
    let payload = orders
        .last()
        .and_then(|o| o.jws_payload())
        .expect("new-order payload");
    assert!(payload["identifiers"].is_array(), "{payload}");
    assert!(payload.get("replaces").is_none(), "{payload}");
    assert_eq!(rig.pebble.count_log(Pebble::REPLACEMENT_LOG), 0);
    assert!(
        proxy.requests("GET", "renewalInfo").len() <= 2,
        "no ARI request once ari = false\n{}",
        proxy.log_text()
    );
}

/// Pebble's normal window for a fresh 90-day certificate (a day either side of the 1/3
/// point, so it starts before the `renew_before` point) is business as usual: no alert.
#[test]
fn a_fresh_certificate_under_the_default_window_raises_no_alert() {
    let rig = Rig::new(PebbleOptions {
        validity_secs: 90 * 86400,
        ..PebbleOptions::default()
    });
    let alert_log = rig.path("alerts.log");
    let alert = rig.path("alert.sh");
    write_exec(
        &alert,
        &format!("cat >> {}\necho >> {0}\n", alert_log.display()),
    );
    rig.write_config(&format!(
        "\n[alert]\ncommand = [\"{}\"]\n{}",
        alert.display(),
        rig.cert("www", &["www.test"], "")
    ));
    let d = rig.spawn_daemon();
    // Issued, then asked about at once: the advice is in the record.
    let record = rig.state_dir.join("certs/www.json");
    wait_until(Duration::from_secs(60), "ARI advice recorded", || {
        std::fs::read(&record)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .is_some_and(|r| !r["ari"]["window"].is_null())
    });
    // A reload re-evaluates the alerts synchronously and then logs; alerts.json is written
    // before any delivery.
    d.signal(nix::sys::signal::Signal::SIGHUP);
    wait_until(Duration::from_secs(10), "configuration reloaded", || {
        d.log().contains("configuration reloaded")
    });
    let sent = std::fs::read_to_string(rig.state_dir.join("alerts.json")).unwrap_or_default();
    assert!(!sent.contains("ari_early_replacement"), "{sent}");
    let delivered = std::fs::read_to_string(&alert_log).unwrap_or_default();
    assert!(!delivered.contains("ari_early_replacement"), "{delivered}");
}

/// A daemon started after `run --once` issued its certificates, from a CA with `ari = false`,
/// writes no state record: nothing has changed. (Its first start used to rewrite every record
/// to add a "not asked" ARI entry: 1,000 writes for 1,000 certificates.)
#[test]
fn a_daemon_start_without_ari_rewrites_no_state_record() {
    use std::os::unix::fs::MetadataExt;
    let rig = Rig::new(PebbleOptions::default());
    rig.write_config(&format!(
        "ari = false\n{}{}",
        rig.cert("www", &["www.test"], ""),
        rig.cert("api", &["api.test"], "")
    ));
    rig.renewd_ok("run", &["--once"]);
    let records = |rig: &Rig| -> Vec<(String, Vec<u8>, i64, i64)> {
        let mut v: Vec<_> = std::fs::read_dir(rig.state_dir.join("certs"))
            .expect("certs/")
            .map(|e| {
                let path = e.expect("entry").path();
                let meta = std::fs::metadata(&path).expect("stat");
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                (
                    name,
                    std::fs::read(&path).expect("read"),
                    meta.mtime(),
                    meta.mtime_nsec(),
                )
            })
            .collect();
        v.sort();
        v
    };
    let before = records(&rig);
    assert_eq!(before.len(), 2, "{before:?}");
    // Nor the lock file: taking it changes nothing on disk (its mode was set each start).
    let lock = |rig: &Rig| {
        let m = std::fs::metadata(rig.state_dir.join("lock")).expect("lock");
        (m.ctime(), m.ctime_nsec(), m.mtime(), m.mtime_nsec())
    };
    let lock_before = lock(&rig);
    let mut daemon = rig.spawn_daemon();
    daemon.wait_idle_after(0);
    assert_eq!(
        lock(&rig),
        lock_before,
        "the daemon's start changed the lock file"
    );
    let after = records(&rig);
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(
            (&b.0, String::from_utf8_lossy(&b.1), b.2, b.3),
            (&a.0, String::from_utf8_lossy(&a.1), a.2, a.3),
            "the daemon's start rewrote a state record\n{}",
            daemon.log()
        );
    }
    daemon.stop();
}

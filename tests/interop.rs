//! Interoperability: the protocol faults other ACME servers than Pebble reveal, reproduced
//! through the fault proxy (`tests/common/faultproxy.rs`) in front of a real Pebble.

mod common;
mod rig;

use std::fs;
use std::time::{Duration, SystemTime};

use common::faultproxy::*;
use common::*;
use rig::*;

const DAY: Duration = Duration::from_secs(86400);

/// A rig whose `[ca.pebble]` goes through a fault proxy.
struct Proxied {
    rig: Rig,
    proxy: FaultProxy,
}

impl Proxied {
    /// A rig with a 90-day certificate `www` (`renew_before = "1d"`, so only ARI or `--force`
    /// renews it), issued through the proxy, its ARI advice recorded.
    fn with_www() -> Proxied {
        let rig = Rig::new(PebbleOptions {
            validity_secs: 90 * 86400,
            nonce_reject_percent: Some(0),
            ..PebbleOptions::default()
        });
        let proxy = FaultProxy::start(&rig.pebble);
        let p = Proxied { rig, proxy };
        p.write_config(&p.rig.cert("www", &["www.test"], r#"renew_before = "1d""#));
        p.rig.renewd_ok("run", &["--once"]);
        p.rig.renewd_ok("run", &["--once"]);
        p
    }

    /// The rig's configuration pointed at the proxy, then `body`.
    fn write_config(&self, body: &str) {
        let base = self
            .rig
            .base_config()
            .replace(&self.rig.pebble.directory_url, &self.proxy.directory_url)
            .replace(
                &self.rig.pebble.tls_root_path.display().to_string(),
                &self.proxy.ca_pem_path.display().to_string(),
            );
        fs::write(&self.rig.config_path, format!("{base}\n{body}")).expect("write config");
    }

    fn serial(&self) -> String {
        read_cert_pem(self.rig.fullchain("www")).serial_hex
    }

    /// Pebble's ARI window for the deployed certificate: passed a day ago.
    fn window_passed(&self) {
        let pem = fs::read_to_string(self.rig.fullchain("www")).expect("read fullchain");
        let now = SystemTime::now();
        self.rig
            .pebble
            .set_renewal_window(&pem, now - 2 * DAY, now - DAY);
    }
}

/// RFC 9773 lets a CA ignore `replaces`; acme2certifier creates the order without echoing
/// it. renewd must renew anyway (by ARI advice, by `--force`, and after `revoke`), not fail
/// forever on the missing echo.
#[test]
fn a_ca_that_ignores_replaces_still_renews() {
    let p = Proxied::with_www();
    let first = p.serial();
    p.proxy.add_rule(Rule::new(
        "POST",
        "/order-plz",
        Action::StripField("replaces".into()),
    ));

    // The CA's window has passed: the daemon's pass renews, naming the replaced certificate.
    p.window_passed();
    p.rig.renewd_ok("run", &["--once"]);
    let second = p.serial();
    assert_ne!(
        second,
        first,
        "renewed by ARI advice:\n{}",
        p.proxy.log_text()
    );
    assert!(
        p.rig.pebble.count_log(Pebble::REPLACEMENT_LOG) >= 1,
        "the first order named the certificate it replaces:\n{}",
        p.rig.pebble.log()
    );
    assert!(
        p.proxy
            .requests("POST", "/order-plz")
            .iter()
            .any(|e| e.rule.as_deref() == Some("strip \"replaces\"")),
        "the proxy stripped `replaces` from a new order:\n{}",
        p.proxy.log_text()
    );

    // With advice about the new certificate too, `renew --force` and `revoke` work.
    p.rig.renewd_ok("run", &["--once"]);
    p.window_passed();
    let out = p.rig.renewd_ok("renew", &["--force", "www"]);
    assert!(out.contains("www: renewed"), "{out}");
    let third = p.serial();
    assert_ne!(third, second);
    p.rig.renewd_ok("run", &["--once"]);
    p.window_passed();
    p.rig.renewd_ok("revoke", &["www"]);
    assert_ne!(p.serial(), third, "revoke deployed a replacement");
}

//! Interoperability: renewd against ACME servers other than Pebble — acme2certifier
//! (`tests/it/common/a2c.rs`) and Caddy's `acme_server` (`tests/it/common/caddy.rs`), each inside
//! the test's own network namespace (`tests/it/common/netns.rs`) because they validate on ports
//! 80 and 443 — and the protocol faults they reveal, reproduced through the fault proxy
//! (`tests/it/common/faultproxy.rs`) in front of a real Pebble.

use crate::common;
use crate::common::rig;

use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime};

use common::a2c::*;
use common::faultproxy::*;
use common::netns::PrivateNet;
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
        let base = self.rig.base_config_via(&self.proxy);
        fs::write(&self.rig.config_path, format!("{base}\n{body}")).expect("write config");
    }

    fn serial(&self) -> String {
        read_cert_pem(self.rig.fullchain("www")).serial_hex
    }

    /// Pebble's ARI window for the deployed certificate: passed a day ago.
    fn window_passed(&self) {
        // Deployed long enough ago that the floor between renewals has passed too.
        self.rig.backdate_last_success("www", 2 * 3600);
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

// ---------------------------------------------------------------------------
// Against real servers other than Pebble, in a private network namespace.

/// A renewd setup (state directory, configuration, `renewd` runs) from the rig, whose own
/// Pebble is left unused, with one `[ca.NAME]` for the server under test.
struct Other {
    rig: Rig,
    ca_block: String,
}

impl Other {
    fn new(ca: &str, directory: &str, trust_roots: Option<&Path>) -> Other {
        let rig = Rig::new(PebbleOptions::default());
        let roots = trust_roots
            .map(|p| format!("trust_roots = \"{}\"\n", p.display()))
            .unwrap_or_default();
        let ca_block = format!(
            "state_dir = \"{state}\"\ncontrol_socket = \"{socket}\"\n\n[ca.{ca}]\n\
             directory = \"{directory}\"\ncontact = [\"mailto:ops@example.org\"]\n\
             accept_terms = true\n{roots}",
            state = rig.state_dir.display(),
            socket = rig.socket.display(),
        );
        Other { rig, ca_block }
    }

    /// A `[[certificate]]` NAME for `domains` with `challenge` (a TOML inline table), plus
    /// `extra` lines.
    fn cert(&self, name: &str, domains: &[&str], challenge: &str, extra: &str) -> String {
        let domains: Vec<String> = domains.iter().map(|d| format!("\"{d}\"")).collect();
        format!(
            "\n[[certificate]]\nname = \"{name}\"\ndomains = [{domains}]\n\
             owner = \"ops@example.org\"\nchallenge = {challenge}\n\
             files = {{ fullchain = \"{fc}\", key = \"{key}\" }}\n{extra}\n",
            domains = domains.join(", "),
            fc = self.rig.fullchain(name).display(),
            key = self.rig.key(name).display(),
        )
    }

    fn write_config(&self, certs: &str) {
        fs::write(&self.rig.config_path, format!("{}{certs}", self.ca_block))
            .expect("write config");
    }

    fn serial(&self, name: &str) -> String {
        read_cert_pem(self.rig.fullchain(name)).serial_hex
    }

    /// `renew --force NAME` deploys a new serial (not `before`), then `revoke NAME` deploys
    /// a replacement for the revoked one.
    fn renew_then_revoke(&self, name: &str, before: &str) {
        let out = self.rig.renewd_ok("renew", &["--force", name]);
        assert!(out.contains(&format!("{name}: renewed")), "{out}");
        let renewed = self.serial(name);
        assert_ne!(renewed, before);
        self.rig.renewd_ok("revoke", &[name]);
        assert_ne!(self.serial(name), renewed, "revoke deployed a replacement");
    }

    fn status(&self, name: &str) -> serde_json::Value {
        let json = self.rig.renewd_ok("status", &["--json", name]);
        let v: serde_json::Value = serde_json::from_str(&json).expect("status JSON");
        v.as_array()
            .and_then(|a| a.first())
            .cloned()
            .unwrap_or_else(|| panic!("no status row in {json}"))
    }
}

const HTTP01: &str = r#"{ type = "http-01", listen = "127.0.0.1:80" }"#;
const ALPN01: &str = r#"{ type = "tls-alpn-01", listen = "127.0.0.1:443" }"#;

/// The issue's scenario: acme2certifier with ARI. Issue (http-01), store the CA's ARI advice,
/// renew when the CA says so (the order carries `replaces`, which acme2certifier does not
/// echo: this failed, forever, before renewd ordered again without it), `renew --force`,
/// and `revoke` (which deploys a replacement).
#[test]
fn acme2certifier_issues_renews_by_ari_forced_and_revokes() {
    let _net = PrivateNet::enter();
    let mut a2c = Acme2certifier::start(A2cOptions::default());
    let o = Other::new("a2c", &a2c.directory_url, None);
    o.write_config(&o.cert("www", &["www.test"], HTTP01, ""));

    o.rig.renewd_ok("run", &["--once"]);
    let first = o.serial("www");
    let chain = read_certs_pem(o.rig.fullchain("www"));
    assert_eq!(chain[0].names, vec!["www.test".to_string()]);

    // The next pass records acme2certifier's ARI window (weeks away): nothing is due. The
    // earlier of its moment and the `renew_before` point decides.
    o.rig.renewd_ok("run", &["--once"]);
    let row = o.status("www");
    assert!(
        row["ari"]
            .as_str()
            .is_some_and(|a| a.starts_with("window ")),
        "{row}"
    );
    assert!(
        row["next_renewal_reason"] == "ARI window"
            || row["next_renewal_reason"] == "renew_before threshold",
        "{row}"
    );
    assert_eq!(o.serial("www"), first);
    // Deployed long enough ago that the floor between renewals does not hold it back.
    o.rig.backdate_last_success("www", 2 * 3600);

    // The CA now says every certificate is due: renewed, by ARI, on the next pass.
    a2c.restart(A2cOptions {
        renewal_force: true,
        ..A2cOptions::default()
    });
    let out = o.rig.renewd("run", &["--once"]);
    assert!(
        out.status.success(),
        "the ARI renewal failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let second = o.serial("www");
    assert_ne!(second, first, "renewed by ARI advice");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("ordering again without `replaces`"),
        "acme2certifier ignored `replaces`:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    a2c.restart(A2cOptions::default());
    o.rig.renewd_ok("run", &["--once"]);
    o.renew_then_revoke("www", &second);
}

/// acme2certifier validates tls-alpn-01 (renewd's listener on port 443) and dns-01 (the
/// hook sets the TXT record in the namespace's DNS).
#[test]
fn acme2certifier_validates_tls_alpn_01_and_dns_01() {
    let net = PrivateNet::enter();
    let a2c = Acme2certifier::start(A2cOptions::default());
    let o = Other::new("a2c", &a2c.directory_url, None);
    let hook = o.rig.path("dns-hook.sh");
    net.write_dns_hook(&hook);
    let dns01 = format!(r#"{{ type = "dns-01", hook = ["{}"] }}"#, hook.display());
    o.write_config(&format!(
        "{}{}",
        o.cert("alpn", &["alpn.test"], ALPN01, ""),
        o.cert("dns", &["dns.test"], &dns01, "")
    ));
    let out = o.rig.renewd("run", &["--once"]);
    assert!(
        out.status.success(),
        "{}\n--- acme2certifier ---\n{}",
        String::from_utf8_lossy(&out.stderr),
        a2c.log_tail(80)
    );
    assert_eq!(
        read_cert_pem(o.rig.fullchain("alpn")).names,
        vec!["alpn.test"]
    );
    assert_eq!(
        read_cert_pem(o.rig.fullchain("dns")).names,
        vec!["dns.test"]
    );
}

/// Caddy's `acme_server`: issue (http-01 for an IP identifier), `renew --force`, `revoke`,
/// tls-alpn-01 (IP identifier) and dns-01 (a name, through the hook). Caddy offers neither
/// ARI nor profiles, so renewd sends no `replaces` and asks no `renewalInfo`.
#[test]
fn caddy_issues_renews_revokes_with_every_challenge() {
    let net = PrivateNet::enter();
    let caddy = common::caddy::Caddy::start(Duration::from_secs(3600));
    let o = Other::new("caddy", &caddy.directory_url, Some(&caddy.root_pem_path));
    let hook = o.rig.path("dns-hook.sh");
    net.write_dns_hook(&hook);
    let dns01 = format!(r#"{{ type = "dns-01", hook = ["{}"] }}"#, hook.display());
    o.write_config(&format!(
        "{}{}{}",
        o.cert("http", &["127.0.0.1"], HTTP01, ""),
        o.cert("alpn", &["127.0.0.1"], ALPN01, ""),
        o.cert("dns", &["dns.test"], &dns01, "")
    ));
    let out = o.rig.renewd("run", &["--once"]);
    assert!(
        out.status.success(),
        "{}\n--- caddy ---\n{}",
        String::from_utf8_lossy(&out.stderr),
        last_lines(&caddy.log(), 40)
    );
    assert_eq!(
        read_cert_pem(o.rig.fullchain("http")).names,
        vec!["127.0.0.1"]
    );
    assert_eq!(
        read_cert_pem(o.rig.fullchain("alpn")).names,
        vec!["127.0.0.1"]
    );
    assert_eq!(
        read_cert_pem(o.rig.fullchain("dns")).names,
        vec!["dns.test"]
    );
    let row = o.status("http");
    assert_eq!(
        row["next_renewal_reason"], "renew_before threshold",
        "{row}"
    );

    // A name Caddy cannot resolve (it looks names up through the system resolver for
    // http-01): Caddy refuses the challenge request, and the error names the identifier.
    let bad = o.cert("bad", &["unresolvable.test"], HTTP01, "");
    o.write_config(&format!(
        "{}{}{}{bad}",
        o.cert("http", &["127.0.0.1"], HTTP01, ""),
        o.cert("alpn", &["127.0.0.1"], ALPN01, ""),
        o.cert("dns", &["dns.test"], &dns01, "")
    ));
    let out = o.rig.renewd("renew", &["bad"]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("validation of unresolvable.test failed"),
        "{stdout}"
    );

    o.renew_then_revoke("http", &o.serial("http"));
}

/// The daemon renews a short-lived certificate from Caddy on its own: 5-minute certificates
/// (Caddy's minimum), due 290 s before they end, so 10 s after issuance.
#[test]
fn caddy_short_lived_certificate_is_renewed_by_the_daemon() {
    // Timing-sensitive (5-minute certificates renewed within a bound): no heavy test meanwhile.
    let _timing = common::serial::timing();
    let _net = PrivateNet::enter();
    let caddy = common::caddy::Caddy::start(Duration::from_secs(300));
    let o = Other::new("caddy", &caddy.directory_url, Some(&caddy.root_pem_path));
    o.write_config(&o.cert("www", &["127.0.0.1"], HTTP01, r#"renew_before = "290s""#));
    o.rig.renewd_ok("run", &["--once"]);
    let first = o.serial("www");
    let mut daemon = o.rig.spawn_daemon();
    // renew_before is clamped to 2/3 of the 5-minute lifetime and a third of it is the floor
    // between renewals: the daemon renews about 100 s after the first issuance.
    wait_until(
        Duration::from_secs(180),
        "the daemon to renew the short-lived certificate",
        || o.serial("www") != first,
    );
    daemon.stop();
}

// ---------------------------------------------------------------------------
// Smaller protocol faults, through the fault proxy in front of Pebble.

/// A 501 (like any status outside the retry list: 500, 502, 503, 504) is the CA's final
/// word: the request is sent once, the renewal fails, and the error names the status.
#[test]
fn a_final_server_error_is_not_resent() {
    let p = Proxied::with_www();
    p.proxy
        .add_rule(Rule::new("POST", "/order-plz", Action::status(501)));
    let out = p.rig.renewd("renew", &["--force", "www"]);
    assert_eq!(out.status.code(), Some(1), "the renewal must fail");
    let refused: Vec<_> = p
        .proxy
        .requests("POST", "/order-plz")
        .into_iter()
        .filter(|e| e.status == Some(501))
        .collect();
    assert_eq!(
        refused.len(),
        1,
        "the refused order was sent once:\n{}",
        p.proxy.log_text()
    );
}

/// A CA that refuses the challenge request itself (validating at once, as Caddy's
/// acme_server does) fails the validation of that identifier, and the error says which.
#[test]
fn a_refused_challenge_names_its_identifier() {
    let p = Proxied::with_www();
    p.write_config(&format!(
        "{}{}",
        p.rig.cert("www", &["www.test"], r#"renew_before = "1d""#),
        p.rig.cert("api", &["api.test"], "")
    ));
    p.proxy
        .add_rule(Rule::new("POST", "/chalZ/", Action::status(403)));
    let out = p.rig.renewd("renew", &["--force", "api"]);
    assert_eq!(out.status.code(), Some(1), "the renewal must fail");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("validation of api.test failed"),
        "the error names the identifier: {stdout}"
    );
}

/// Every request to the CA carries renewd's own User-Agent, then the ACME library's.
#[test]
fn requests_carry_renewds_user_agent() {
    let p = Proxied::with_www();
    // renewd's own product first on every request; the library's after it on those the
    // library makes (every signed POST; renewd's own directory read for the clock check has
    // no library token).
    let own = format!("renewd/{}", env!("CARGO_PKG_VERSION"));
    let want = format!("{own} instant-acme/");
    let log = p.proxy.log();
    assert!(log.iter().any(|e| e.method == "POST"));
    for e in &log {
        let ua = e.user_agent.as_deref().unwrap_or("");
        let ok = if e.method == "POST" {
            ua.starts_with(&want)
        } else {
            ua == own || ua.starts_with(&want)
        };
        assert!(ok, "{e}: User-Agent {ua:?}, expected {want}…");
    }
}

/// A certificate another account issued (here: the account file was lost, so renewd
/// registers a new account) is revoked with a request signed by the certificate's own key
/// (RFC 8555 §7.6) once the CA refuses the account's, for ECDSA and RSA keys alike.
#[test]
fn revoking_another_accounts_certificate_signs_with_its_key() {
    let p = Proxied::with_www();
    p.write_config(&format!(
        "{}{}",
        p.rig.cert("www", &["www.test"], r#"renew_before = "1d""#),
        p.rig.cert(
            "rsa",
            &["rsa.test"],
            "key_type = \"rsa-2048\"\nrenew_before = \"1d\""
        )
    ));
    p.rig.renewd_ok("run", &["--once"]);
    let before = [p.serial(), read_cert_pem(p.rig.fullchain("rsa")).serial_hex];
    fs::remove_file(p.rig.state_dir.join("accounts/pebble.json")).expect("remove account");

    for (name, old) in ["www", "rsa"].iter().zip(before) {
        let out = p.rig.renewd("revoke", &[name]);
        assert!(
            out.status.success(),
            "revoke {name}: {}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            p.proxy.log_text()
        );
        assert_ne!(
            read_cert_pem(p.rig.fullchain(name)).serial_hex,
            old,
            "{name}: a replacement is deployed"
        );
    }
    let revokes: Vec<_> = p
        .proxy
        .requests("POST", "/revoke-cert")
        .into_iter()
        .map(|e| e.status)
        .collect();
    assert_eq!(
        revokes,
        vec![Some(403), Some(200), Some(403), Some(200)],
        "refused for the account, accepted with the certificate's key:\n{}",
        p.proxy.log_text()
    );
}

/// The daemon renews a short-lived acme2certifier certificate on its own: the CA lives
/// 5 minutes and acme2certifier ends each certificate with it (`cert_validity_adjust`);
/// due 280 s before the end, so about 20 s after issuance.
#[test]
fn acme2certifier_short_lived_certificate_is_renewed_by_the_daemon() {
    // Timing-sensitive (5-minute certificates renewed within a bound): no heavy test meanwhile.
    let _timing = common::serial::timing();
    let _net = PrivateNet::enter();
    let a2c = Acme2certifier::start(A2cOptions {
        ca_lifetime: Some(Duration::from_secs(300)),
        ..A2cOptions::default()
    });
    let mut o = Other::new("a2c", &a2c.directory_url, None);
    // With ARI, acme2certifier's window (the last 15% of the lifetime) would decide, not
    // `renew_before` (the schedule lets ARI replace the threshold): the threshold is tested.
    o.ca_block.push_str("ari = false\n");
    o.write_config(&o.cert("www", &["www.test"], HTTP01, r#"renew_before = "280s""#));
    o.rig.renewd_ok("run", &["--once"]);
    let first = read_cert_pem(o.rig.fullchain("www"));
    let lifetime = first
        .not_after
        .duration_since(SystemTime::now())
        .expect("not expired");
    assert!(lifetime < Duration::from_secs(300), "{lifetime:?}");
    let mut daemon = o.rig.spawn_daemon();
    // renew_before is clamped to 2/3 of the 5-minute lifetime and a third of it is the floor
    // between renewals: the daemon renews about 100 s after the first issuance.
    wait_until(
        Duration::from_secs(180),
        "the daemon to renew the short-lived certificate",
        || o.serial("www") != first.serial_hex,
    );
    daemon.stop();
}

/// acme2certifier with external account binding required and profiles advertised: an
/// account without EAB is refused; with `eab_kid` and the HMAC key file, renewd registers and
/// an order naming an advertised profile is issued.
#[test]
fn acme2certifier_requires_eab_and_offers_profiles() {
    let _net = PrivateNet::enter();
    let (kid, hmac) = ("kid-1", "dGhpcyBpcyBhIHRlc3Qga2V5IGZvciByZW5ld2QncyBFQUI");
    let a2c = Acme2certifier::start(A2cOptions {
        eab: Some((kid.into(), hmac.into())),
        profiles: vec![
            ("classic".into(), "the usual".into()),
            ("shortlived".into(), "short".into()),
        ],
        ..A2cOptions::default()
    });
    let mut o = Other::new("a2c", &a2c.directory_url, None);
    let cert = o.cert("www", &["www.test"], HTTP01, r#"profile = "shortlived""#);
    o.write_config(&cert);
    let out = o.rig.renewd("run", &["--once"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "registration without EAB must fail"
    );
    assert!(!o.rig.fullchain("www").exists());

    let key_file = o.rig.path("eab.key");
    fs::write(&key_file, hmac).expect("write EAB key");
    o.ca_block.push_str(&format!(
        "eab_kid = \"{kid}\"\neab_hmac_key_file = \"{}\"\n",
        key_file.display()
    ));
    o.write_config(&cert);
    // `--force`: now, whatever the backoff after the refused registration.
    let out = o.rig.renewd("renew", &["--force", "www"]);
    assert!(
        out.status.success(),
        "{}\n--- acme2certifier ---\n{}",
        String::from_utf8_lossy(&out.stderr),
        a2c.log_tail(60)
    );
    assert_eq!(
        read_cert_pem(o.rig.fullchain("www")).names,
        vec!["www.test"]
    );
}

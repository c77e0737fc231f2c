//! Discovery beyond PEM and DER files, through the real binary: PKCS#12 bundles made by
//! `openssl pkcs12 -export` (unencrypted, with a password file, with a wrong one, found by
//! content, one asking for too much key-derivation work), the certificates served by this
//! host's TLS listeners (a real nginx, and a socket that accepts and never answers), and
//! `[[discovery.owner]]` rules.
//!
//! Each test runs in its own network namespace ([`private_net`]): `listeners = true` probes
//! every listening socket of the namespace, and must see only the test's own, never another
//! test's servers.

use crate::common;

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::nginx::{Nginx, Site};
use common::now_secs;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use serde_json::Value;

/// What a whole inventory with one silent listener may take: its 2 s handshake timeout
/// once (a non-TLS socket is not asked again with each name), plus the rest.
const INVENTORY_BOUND: Duration = Duration::from_secs(8);

/// Moves this test thread (and everything it starts) into a new network namespace with
/// loopback up: the listener probe sees only this test's sockets.
fn private_net() {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
        .unwrap_or_else(|e| panic!("unshare(CLONE_NEWNET): {e} (these tests need root)"));
    let st = Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()
        .unwrap_or_else(|e| panic!("run `ip link set lo up`: {e} (install iproute2)"));
    assert!(st.success(), "`ip link set lo up` failed: {st}");
}

/// A CA and the certificates it signs, written as PEM files.
struct Pki {
    issuer: Issuer<'static, KeyPair>,
    ca_pem: String,
}

impl Pki {
    fn new() -> Pki {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "discovery sources test CA");
        let ca = params.self_signed(&key).expect("self-sign CA");
        Pki {
            issuer: Issuer::new(params, key),
            ca_pem: ca.pem(),
        }
    }

    /// A leaf for `name` valid 60 more days, written to `DIR/STEM.pem` and `DIR/STEM.key`.
    fn leaf(&self, name: &str, dir: &Path, stem: &str) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().expect("leaf key");
        let mut params = CertificateParams::new(vec![name.to_string()]).expect("params");
        params.distinguished_name.push(DnType::CommonName, name);
        let t = now_secs() as i64;
        params.not_before = time::OffsetDateTime::from_unix_timestamp(t - 86_400).expect("nb");
        params.not_after = time::OffsetDateTime::from_unix_timestamp(t + 60 * 86_400).expect("na");
        let cert = params.signed_by(&key, &self.issuer).expect("sign leaf");
        let (c, k) = (
            dir.join(format!("{stem}.pem")),
            dir.join(format!("{stem}.key")),
        );
        fs::write(&c, cert.pem()).expect("write cert");
        fs::write(&k, key.serialize_pem()).expect("write key");
        (c, k)
    }

    /// `openssl pkcs12 -export` of the leaf `(cert, key)` and this CA into `out`, with
    /// `args` (the password and encryption options).
    fn export(&self, (cert, key): &(PathBuf, PathBuf), out: &Path, args: &[&str]) {
        let ca = out.with_extension("ca.pem");
        fs::write(&ca, &self.ca_pem).expect("write CA");
        let o = Command::new("openssl")
            .args(["pkcs12", "-export", "-name", "leaf", "-in"])
            .arg(cert)
            .arg("-inkey")
            .arg(key)
            .arg("-certfile")
            .arg(&ca)
            .arg("-out")
            .arg(out)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run openssl pkcs12");
        assert!(
            o.status.success(),
            "openssl pkcs12 -export {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        fs::remove_file(&ca).expect("remove CA copy");
    }
}

/// `openssl s_server` serving `(cert, key)` on a free loopback port with `args`; killed
/// and reaped on drop.
struct SServer {
    child: std::process::Child,
}

impl SServer {
    fn start((cert, key): &(PathBuf, PathBuf), args: &[&str]) -> SServer {
        let port = common::free_port();
        let child = Command::new("openssl")
            .args(["s_server", "-quiet", "-accept"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("-cert")
            .arg(cert)
            .arg("-key")
            .arg(key)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn openssl s_server");
        common::wait_until(
            Duration::from_secs(10),
            "openssl s_server listening",
            || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
        );
        SServer { child }
    }
}

impl Drop for SServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn renewd(config: &Path, args: &[&str]) -> Output {
    let out = Command::new(common::renewd_bin())
        .args(args)
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .output()
        .expect("run renewd");
    eprintln!(
        "--- renewd {args:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `renewd inventory --json`, and how long it took.
fn inventory(config: &Path) -> (Value, Duration) {
    let started = Instant::now();
    let out = renewd(config, &["inventory", "--json"]);
    let took = started.elapsed();
    assert!(out.status.success(), "inventory failed");
    (
        serde_json::from_slice(&out.stdout).expect("inventory JSON"),
        took,
    )
}

/// The items whose `names` are exactly `[name]`.
fn named<'a>(inv: &'a Value, name: &str) -> Vec<&'a Value> {
    inv["certificates"]
        .as_array()
        .expect("certificates")
        .iter()
        .filter(|c| c["names"] == serde_json::json!([name]))
        .collect()
}

fn only<'a>(inv: &'a Value, name: &str) -> &'a Value {
    let found = named(inv, name);
    assert_eq!(found.len(), 1, "one item for {name}: {inv:#}");
    found[0]
}

fn text(p: &Path) -> String {
    p.display().to_string()
}

/// The managed certificate `www` (files in `tls/`, not due), discovery of `scan/` and the
/// listeners, plus `extra` at the end of `[discovery]`.
fn write_config(dir: &Path, extra: &str) -> PathBuf {
    let d = dir.display();
    let config = dir.join("renewd.toml");
    fs::write(
        &config,
        format!(
            r#"state_dir = "{d}/state"
control_socket = "{d}/control.sock"

[ca.test]
directory = "https://127.0.0.1:9/dir"
accept_terms = true

[[certificate]]
name = "www"
domains = ["www.test"]
challenge = {{ type = "http-01", listen = "127.0.0.1:9" }}
files = {{ fullchain = "{d}/tls/www.pem", key = "{d}/tls/www.key" }}

[discovery]
paths = ["{d}/scan"]
listeners = true
{extra}"#
        ),
    )
    .expect("write config");
    config
}

/// The done-when of issue 16's "No certificate unseen": PKCS#12 bundles and a certificate
/// served only by a local TLS listener are in the inventory as unmanaged, with where they
/// were found; the managed certificate nginx also serves is not listed again; a wrong
/// password is reported with the bundle's path; a listener that accepts and never answers
/// costs one handshake timeout, not one per name.
#[test]
fn pkcs12_bundles_and_served_certificates_are_inventoried_where_found() {
    private_net();
    let dir = common::tempdir_with(&["", "tls", "scan", "scan/java", "served", "nginx"]);
    let p = |rel: &str| dir.path().join(rel);
    let pki = Pki::new();
    let www = pki.leaf("www.test", &p("tls"), "www");

    // Bundles: unencrypted (no PBE, empty password MAC), with a password file, with a
    // password file that holds the wrong password, locked with no password file named,
    // and one without a PKCS#12 name (found by content).
    let none = ["-keypbe", "NONE", "-certpbe", "NONE", "-passout", "pass:"];
    pki.export(
        &pki.leaf("plain.test", &p("served"), "plain"),
        &p("scan/plain.p12"),
        &none,
    );
    let secret = ["-passout", "pass:hunter2"];
    pki.export(
        &pki.leaf("secret.test", &p("served"), "secret"),
        &p("scan/secret.pfx"),
        &secret,
    );
    pki.export(
        &pki.leaf("wrong.test", &p("served"), "wrong"),
        &p("scan/java/wrong.p12"),
        &["-passout", "pass:other"],
    );
    pki.export(
        &pki.leaf("locked.test", &p("served"), "locked"),
        &p("scan/locked.p12"),
        &["-passout", "pass:x"],
    );
    pki.export(
        &pki.leaf("content.test", &p("served"), "content"),
        &p("scan/java/keystore"),
        &secret,
    );
    // An appliance's keystore tracked as an exception (outside the discovery paths).
    pki.export(
        &pki.leaf("appliance.test", &p("served"), "appliance"),
        &p("served/appliance.pfx"),
        &secret,
    );
    // A bundle asking for 3,000,000 key-derivation iterations (key, certificates and MAC
    // at 1,000,000 each, under the right password): refused unopened, in no time.
    pki.export(
        &pki.leaf("costly.test", &p("served"), "costly"),
        &p("scan/costly.pfx"),
        &["-passout", "pass:hunter2", "-iter", "1000000", "-maciter"],
    );
    fs::write(p("p12.pass"), "hunter2\n").expect("write password");
    fs::write(p("other.pass"), "not-other\n").expect("write password");

    // nginx: a default site only it knows (its files are outside the discovery paths),
    // and the managed certificate for SNI www.test. And a socket that never answers.
    let only_served = pki.leaf("only-served.test", &p("served"), "only-served");
    let nginx = Nginx::start_sites(
        &p("nginx"),
        &[
            Site::new(&[], &only_served.0, &only_served.1),
            Site::new(&["www.test"], &www.0, &www.1),
        ],
        &["TLSv1.2", "TLSv1.3"],
    );
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind the silent listener");
    let silent_port = silent.local_addr().expect("addr").port();

    let d = dir.path().display();
    let metrics_port = common::free_port();
    let config = write_config(
        dir.path(),
        &format!(
            "pkcs12_password_files = {{ \"{d}/scan/*.pfx\" = \"{d}/p12.pass\", \
             \"{d}/scan/java/*.p12\" = \"{d}/other.pass\", \"{d}/scan/java/keystore\" = \"{d}/p12.pass\", \
             \"{d}/served/*.pfx\" = \"{d}/p12.pass\" }}\n\
             \n[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n\
             \n[[exception]]\npath = \"{d}/served/appliance.pfx\"\nowner = \"netops@example.org\"\n\
             reason = \"vendor appliance\"\nreview_by = \"2099-01-01\"\n"
        ),
    );
    let (inv, took) = inventory(&config);
    eprintln!("inventory took {took:?}");

    // Every certificate of a readable bundle, its leaf marked.
    for (name, bundle) in [
        ("plain.test", "scan/plain.p12"),
        ("secret.test", "scan/secret.pfx"),
        ("content.test", "scan/java/keystore"),
    ] {
        let leaf = only(&inv, name);
        assert_eq!(leaf["kind"], "unmanaged", "{leaf:#}");
        assert_eq!(leaf["paths"], serde_json::json!([text(&p(bundle))]));
        assert_eq!(leaf["pkcs12_leaf"], true, "{leaf:#}");
    }
    let ca = inv["certificates"]
        .as_array()
        .expect("certificates")
        .iter()
        .find(|c| {
            c["subject"]
                .as_str()
                .is_some_and(|s| s.contains("discovery sources test CA"))
        })
        .expect("the CA of the bundles is listed");
    assert_eq!(ca["pkcs12_leaf"], false, "{ca:#}");
    assert_eq!(
        ca["paths"].as_array().expect("paths").len(),
        3,
        "in each readable bundle"
    );

    // Bundles that cannot be opened are reported with their path and why.
    let errors: Vec<&str> = inv["discovery"]["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| e.as_str().expect("error"))
        .collect();
    let wrong = format!(
        "{}: wrong PKCS#12 password (from {})",
        text(&p("scan/java/wrong.p12")),
        text(&p("other.pass"))
    );
    assert!(errors.iter().any(|e| e.starts_with(&wrong)), "{errors:#?}");
    let locked = format!(
        "{}: PKCS#12 bundle protected by a password",
        text(&p("scan/locked.p12"))
    );
    assert!(errors.iter().any(|e| e.starts_with(&locked)), "{errors:#?}");
    let costly = format!(
        "{}: PKCS#12 bundle not opened: it asks for 3000000 key-derivation iterations",
        text(&p("scan/costly.pfx"))
    );
    assert!(errors.iter().any(|e| e.starts_with(&costly)), "{errors:#?}");
    assert!(named(&inv, "wrong.test").is_empty() && named(&inv, "locked.test").is_empty());
    assert!(named(&inv, "costly.test").is_empty());

    // An exception may name a bundle: its leaf is what is tracked.
    let appliance = only(&inv, "appliance.test");
    assert_eq!(appliance["kind"], "exception", "{appliance:#}");
    assert_eq!(appliance["problem"], Value::Null);

    // Served only by the listener, without SNI: unmanaged, found there.
    let served = only(&inv, "only-served.test");
    assert_eq!(served["kind"], "unmanaged");
    assert_eq!(served["paths"], serde_json::json!([]));
    assert_eq!(
        served["listeners"],
        serde_json::json!([format!("listener:127.0.0.1:{}", nginx.port())])
    );
    // The managed certificate served for SNI www.test: listed once, as managed, with the
    // listener that serves it.
    let www_item = only(&inv, "www.test");
    assert_eq!(www_item["kind"], "managed");
    assert_eq!(
        www_item["listeners"],
        serde_json::json!([format!("listener:127.0.0.1:{} sni=www.test", nginx.port())])
    );
    // Nothing from the silent socket, and it held the inventory for one timeout at most.
    assert!(
        !inv.to_string().contains(&format!(":{silent_port}")),
        "{inv:#}"
    );
    assert!(
        took < INVENTORY_BOUND,
        "inventory took {took:?} with a silent listener"
    );

    // The table shows where each was found.
    let out = renewd(&config, &["inventory"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains(&format!("listener:127.0.0.1:{}", nginx.port())),
        "{table}"
    );
    assert!(table.contains("PKCS#12 leaf: plain.test"), "{table}");

    // The daemon's scan finds the same: its metrics carry the bundle read with its
    // password, each certificate of a bundle, and the certificate only the listener serves.
    let mut daemon = common::rig::spawn_daemon(&config, &p("control.sock"), p("daemon.log"), &[]);
    let url = format!("http://127.0.0.1:{metrics_port}/metrics");
    let wanted = [
        format!("path=\"{}\"", text(&p("scan/secret.pfx"))),
        format!("path=\"listener:127.0.0.1:{}\"", nginx.port()),
        // The CA of the bundle, beside its leaf: `PATH#SERIAL`.
        format!("path=\"{}#", text(&p("scan/java/keystore"))),
    ];
    let mut body = String::new();
    common::wait_until(
        Duration::from_secs(20),
        "the daemon's inventory metrics",
        || {
            body = common::http_request("GET", &url, None, None)
                .map(|r| r.body)
                .unwrap_or_default();
            wanted.iter().all(|w| body.contains(w.as_str()))
        },
    );
    daemon.stop();
    drop(silent);
}

/// `[[discovery.owner]]`: a path rule names the owner of a bundle under its glob, a port
/// rule the owner of what a listener serves; what no rule matches has no owner.
#[test]
fn owner_rules_give_discovered_certificates_an_owner_and_service() {
    private_net();
    let dir = common::tempdir_with(&["", "tls", "scan", "scan/postgresql", "served", "nginx"]);
    let p = |rel: &str| dir.path().join(rel);
    let pki = Pki::new();
    pki.leaf("www.test", &p("tls"), "www");
    pki.leaf("db.test", &p("scan/postgresql"), "server");
    pki.leaf("stray.test", &p("scan"), "stray");
    let web = pki.leaf("web.test", &p("served"), "web");
    let nginx = Nginx::start(&p("nginx"), &web.0, &web.1);
    // A TLS 1.2 service that requires a client certificate: it aborts the handshake once
    // it has shown its own, which is all discovery asks.
    let mtls = pki.leaf("mtls.test", &p("served"), "mtls");
    let _mtls_server = SServer::start(&mtls, &["-tls1_2", "-Verify", "1"]);
    let d = dir.path().display();
    let config = write_config(
        dir.path(),
        &format!(
            r#"
[[discovery.owner]]
match = "{d}/scan/postgresql/**"
owner = "dba@example.org"
service = "postgresql"

[[discovery.owner]]
match = "port:{port}"
owner = "web@example.org"
service = "nginx"
"#,
            port = nginx.port()
        ),
    );
    let (inv, _) = inventory(&config);
    let db = only(&inv, "db.test");
    assert_eq!(
        (&db["owner"], &db["service"]),
        (
            &serde_json::json!("dba@example.org"),
            &serde_json::json!("postgresql")
        )
    );
    let web_item = only(&inv, "web.test");
    assert_eq!(web_item["owner"], "web@example.org", "{web_item:#}");
    assert_eq!(web_item["service"], "nginx");
    let mtls_item = only(&inv, "mtls.test");
    assert_eq!(mtls_item["kind"], "unmanaged", "{mtls_item:#}");
    let stray = only(&inv, "stray.test");
    assert_eq!(stray["owner"], Value::Null, "no rule matches it");
    let out = renewd(&config, &["inventory"]);
    let table = String::from_utf8_lossy(&out.stdout);
    let line = table
        .lines()
        .find(|l| l.contains("web.test"))
        .unwrap_or_else(|| panic!("web.test in the table:\n{table}"));
    assert!(
        line.contains("web@example.org") && line.contains("nginx"),
        "{line}"
    );
}

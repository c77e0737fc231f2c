//! Revocation, enforced, through the real binary: certificates issued by an OpenSSL CA made
//! here (`openssl ca`, index.txt), answered for by `openssl ocsp` on loopback and by a CRL
//! served over HTTP on loopback; and a managed certificate issued by Pebble, revoked at
//! Pebble by another client with the certificate's own key, and replaced by renewd.

use crate::common;

use std::fs;
use std::net::TcpListener;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use common::ocsp::{openssl, revoked_index_line, OpensslCa, Responder};
use common::rig::{spawn_daemon, Rig};
use common::{
    free_port, http_request, tempdir_with, wait_until, write_exec, PebbleOptions, StaticServer,
};
use serde_json::Value;

/// The certificate of `inv` held in `file` (a path ending so).
fn item<'a>(inv: &'a Value, file: &str) -> &'a Value {
    inv["certificates"]
        .as_array()
        .expect("certificates")
        .iter()
        .find(|c| {
            c["paths"].as_array().is_some_and(|ps| {
                ps.iter()
                    .any(|p| p.as_str().is_some_and(|p| p.ends_with(file)))
            })
        })
        .unwrap_or_else(|| panic!("{file} not in the inventory: {inv:#}"))
}

fn renewd(config: &Path, args: &[&str]) -> std::process::Output {
    let out = std::process::Command::new(common::renewd_bin())
        .args(args)
        .arg("--config")
        .arg(config)
        .stdin(std::process::Stdio::null())
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

fn inventory(config: &Path) -> Value {
    let out = renewd(config, &["inventory", "--json"]);
    assert!(out.status.success());
    serde_json::from_slice(&out.stdout).expect("inventory JSON")
}

/// Unmanaged certificates of an OpenSSL CA: revoked and good by OCSP (signed by the CA), good
/// by a delegated responder, revoked by a CRL (no OCSP named), a responder the CA never
/// authorized, a CRL signed by another key under the issuer's name, an unreachable
/// responder, an oversized CRL; and an exception revoked by OCSP. `inventory` shows each
/// status with its source and time, and keeps the results (a second look asks nothing); the
/// daemon alerts `revoked` (critical) for both revoked ones and sets the metric.
#[test]
fn unmanaged_certificates_revoked_by_ocsp_or_crl_are_shown_alerted_and_cached() {
    let tmp = tempdir_with(&["", "ca", "forger", "scan", "www", "legacy"]);
    let d = tmp.path();
    let ca = OpensslCa::new(&d.join("ca"));
    let ocsp_port = free_port();
    let ocsp = format!("http://127.0.0.1:{ocsp_port}");
    // Accepts connections (the kernel's backlog) and never answers.
    let hole = TcpListener::bind("127.0.0.1:0").expect("bind");
    let hole_url = format!(
        "http://127.0.0.1:{}",
        hole.local_addr().expect("addr").port()
    );
    let www = StaticServer::start(&d.join("www"), free_port());
    let crl_url = format!("http://127.0.0.1:{}/ca.crl", www.port);
    let big_url = format!("http://127.0.0.1:{}/big.crl", www.port);
    let forged_url = format!("http://127.0.0.1:{}/forged.crl", www.port);
    let (delegated_port, rogue_port) = (free_port(), free_port());
    let delegated = format!("http://127.0.0.1:{delegated_port}");
    let rogue = format!("http://127.0.0.1:{rogue_port}");

    let issued = [
        ("good", ca.issue("good.test", Some(&ocsp), None)),
        ("revoked", ca.issue("revoked.test", Some(&ocsp), None)),
        (
            "crl-revoked",
            ca.issue("crl-revoked.test", None, Some(&crl_url)),
        ),
        (
            "unreachable",
            ca.issue("unreachable.test", Some(&hole_url), None),
        ),
        ("big-crl", ca.issue("big-crl.test", None, Some(&big_url))),
        (
            "delegated",
            ca.issue("delegated.test", Some(&delegated), None),
        ),
        ("rogue", ca.issue("rogue.test", Some(&rogue), None)),
        (
            "forged-crl",
            ca.issue("forged-crl.test", None, Some(&forged_url)),
        ),
    ];
    ca.revoke("revoked.test");
    ca.revoke("crl-revoked.test");
    // An exception (tracked, renewed by a person), revoked too.
    let legacy = ca.issue("legacy.test", Some(&ocsp), None);
    ca.revoke("legacy.test");
    fs::copy(&legacy, d.join("legacy/appliance.pem")).expect("copy");
    ca.write_crl(&d.join("www/ca.crl"));
    // A CRL naming the same issuer, signed by another key (a CA of the same name).
    OpensslCa::new(&d.join("forger")).write_crl(&d.join("www/forged.crl"));
    // 17 MiB: over the 16 MiB cap.
    fs::write(d.join("www/big.crl"), vec![0x30u8; 17 * 1024 * 1024]).expect("big");
    let _responder = ca.responder(ocsp_port);
    // A responder the CA authorized (its certificate, for OCSP signing), and one it did not
    // (self-signed, for OCSP signing too).
    let (resp_cert, resp_key) = ca.issue_responder("responder");
    let _delegated = ca.responder_signing_with(delegated_port, (&resp_cert, &resp_key));
    openssl(
        &ca.dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "rogue.key",
            "-out",
            "rogue.pem",
            "-days",
            "30",
            "-subj",
            "/CN=rogue",
            "-addext",
            "extendedKeyUsage=OCSPSigning",
        ],
    );
    let (rogue_cert, rogue_key) = (ca.dir.join("rogue.pem"), ca.dir.join("rogue.key"));
    let _rogue = ca.responder_signing_with(rogue_port, (&rogue_cert, &rogue_key));
    for (name, chain) in &issued {
        fs::copy(chain, d.join(format!("scan/{name}.pem"))).expect("copy");
    }
    let (hook, log) = (d.join("page.sh"), d.join("alerts.log"));
    write_exec(
        &hook,
        &format!("cat >> {l}\necho >> {l}\n", l = log.display()),
    );
    let metrics_port = free_port();
    let config = d.join("renewd.toml");
    fs::write(
        &config,
        format!(
            r#"state_dir = "{d}/state"
control_socket = "{d}/control.sock"

[[exception]]
path = "{d}/legacy/appliance.pem"
owner = "netops@example.org"
reason = "vendor appliance, manual import only"
review_by = "2099-01-01"

[discovery]
paths = ["{d}/scan"]

[alert]
command = ["{hook}"]

[metrics]
listen = "127.0.0.1:{metrics_port}"
"#,
            d = d.display(),
            hook = hook.display()
        ),
    )
    .expect("config");

    let started = Instant::now();
    let inv = inventory(&config);
    // The unreachable responder costs one 10 s timeout, not more.
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    let status = |file: &str| {
        let i = item(&inv, file);
        (
            i["revocation"].as_str().map(String::from),
            i["revocation_source"].as_str().map(String::from),
        )
    };
    let s = |a: &str, b: Option<&str>| (Some(a.to_string()), b.map(String::from));
    let detail = |file: &str| {
        item(&inv, file)["revocation_detail"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    assert_eq!(status("scan/good.pem"), s("good", Some("ocsp")));
    assert_eq!(status("legacy/appliance.pem"), s("revoked", Some("ocsp")));
    assert_eq!(status("scan/revoked.pem"), s("revoked", Some("ocsp")));
    assert_eq!(status("scan/crl-revoked.pem"), s("revoked", Some("crl")));
    assert_eq!(status("scan/unreachable.pem"), s("unknown", None));
    assert_eq!(status("scan/big-crl.pem"), s("unknown", None));
    assert_eq!(status("scan/delegated.pem"), s("good", Some("ocsp")));
    assert_eq!(status("scan/rogue.pem"), s("unknown", None));
    assert_eq!(status("scan/forged-crl.pem"), s("unknown", None));
    assert!(
        detail("scan/forged-crl.pem").contains("signature does not verify with the issuer's key"),
        "{}",
        detail("scan/forged-crl.pem")
    );
    assert!(
        detail("scan/rogue.pem").contains("signature does not verify"),
        "{}",
        detail("scan/rogue.pem")
    );
    assert!(
        detail("scan/unreachable.pem").contains("no answer within 10s"),
        "{}",
        detail("scan/unreachable.pem")
    );
    assert!(
        detail("scan/big-crl.pem").contains("larger than 16777216 bytes; refused"),
        "{}",
        detail("scan/big-crl.pem")
    );
    assert!(
        detail("scan/revoked.pem").contains("revoked at"),
        "{}",
        detail("scan/revoked.pem")
    );
    let checked = item(&inv, "scan/good.pem")["revocation_checked_at"]
        .as_str()
        .expect("checked at");
    assert!(
        checked.ends_with('Z') && checked.len() == 20,
        "RFC 3339: {checked}"
    );
    let fetched = www.requests();
    assert_eq!(
        fetched.iter().filter(|r| *r == "GET /ca.crl").count(),
        1,
        "{fetched:?}"
    );

    // The results are kept: a second look asks nobody, and the table shows them.
    let out = renewd(&config, &["inventory"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("REVOCATION"), "{table}");
    assert!(
        table.contains("revoked (ocsp)") && table.contains("revoked (crl)"),
        "{table}"
    );
    assert!(table.contains("good (ocsp)"), "{table}");
    assert_eq!(www.requests(), fetched, "nothing fetched again");
    let status_file = d.join("state/revocation/status.json");
    assert_eq!(common::rig::mode(&status_file), 0o600);

    // The CRL itself is cached until its nextUpdate: with the CRL result forgotten, the
    // certificate is checked again from the cached CRL, which is not fetched again.
    let mut kept: Value =
        serde_json::from_slice(&fs::read(&status_file).expect("read")).expect("JSON");
    kept["entries"]
        .as_object_mut()
        .expect("entries")
        .retain(|_, e| e["source"] != "crl");
    fs::write(&status_file, kept.to_string()).expect("write");
    let again = inventory(&config);
    assert_eq!(
        item(&again, "scan/crl-revoked.pem")["revocation_source"],
        "crl",
        "{again:#}"
    );
    assert_eq!(
        item(&again, "scan/crl-revoked.pem")["revocation"],
        "revoked"
    );
    assert_eq!(www.requests(), fetched, "the cached CRL answered");

    // The daemon: a `revoked` alert (critical) for each revoked certificate, the metric.
    let mut daemon = spawn_daemon(&config, &d.join("control.sock"), d.join("daemon.log"), &[]);
    let alerts = || -> Vec<Value> {
        fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).expect("alert JSON"))
            .collect()
    };
    wait_until(Duration::from_secs(20), "three revoked alerts", || {
        alerts()
            .iter()
            .filter(|a| a["condition"] == "revoked")
            .count()
            >= 3
    });
    let revoked: Vec<Value> = alerts()
        .into_iter()
        .filter(|a| a["condition"] == "revoked")
        .collect();
    assert_eq!(revoked.len(), 3, "{revoked:#?}");
    for a in &revoked {
        assert_eq!(a["severity"], "critical", "{a:#}");
    }
    let kinds: Vec<&str> = revoked.iter().filter_map(|a| a["kind"].as_str()).collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "unmanaged").count(),
        2,
        "{kinds:?}"
    );
    assert!(kinds.contains(&"exception"), "{kinds:?}");
    let keys: Vec<&str> = revoked.iter().filter_map(|a| a["key"].as_str()).collect();
    assert!(
        keys.iter().any(|k| k.ends_with("scan/revoked.pem")),
        "{keys:?}"
    );
    assert!(
        keys.iter().any(|k| k.ends_with("scan/crl-revoked.pem")),
        "{keys:?}"
    );
    let url = format!("http://127.0.0.1:{metrics_port}/metrics");
    let body = http_request("GET", &url, None, None).expect("scrape").body;
    let line = |file: &str| {
        format!(
            "renewd_certificate_revoked{{path=\"{}\",kind=\"unmanaged\"}}",
            d.join("scan").join(file).display()
        )
    };
    assert!(
        body.contains(&format!("{} 1", line("revoked.pem"))),
        "{body}"
    );
    assert!(body.contains(&format!("{} 0", line("good.pem"))), "{body}");
    // Nothing was due again: no CRL fetched by the daemon.
    assert_eq!(www.requests(), fetched, "the daemon fetched nothing again");
    daemon.stop();
}

/// One CERTIFICATE block (RFC 7468) of `der`.
fn pem(der: &[u8]) -> String {
    let b64 = data_encoding::BASE64.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).expect("ASCII"))
        .collect();
    format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        lines.join("\n")
    )
}

/// `YYMMDDHHMMSSZ` (the index's UTCTime) of `t`.
fn utc_time(t: SystemTime) -> String {
    let dt = time::OffsetDateTime::from(t);
    format!(
        "{:02}{:02}{:02}{:02}{:02}{:02}Z",
        dt.year() % 100,
        u8::from(dt.month()),
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second()
    )
}

/// A managed certificate from Pebble, revoked at Pebble by another client with the
/// certificate's own key: Pebble's ARI says so, `openssl ocsp` answers for Pebble's
/// intermediate (its key from the management port) from an index written here; `inventory`
/// finds it revoked, `status` says "revoked", and the next `run --once` replaces it with a
/// new certificate on a new key.
#[test]
fn a_managed_certificate_revoked_behind_renewds_back_is_replaced_with_a_new_key() {
    let ocsp_port = free_port();
    let rig = Rig::new(PebbleOptions {
        ocsp_responder_url: format!("http://127.0.0.1:{ocsp_port}"),
        key_algorithm: "rsa",
        ..PebbleOptions::default()
    });
    rig.write_config(&rig.cert("www", &["www.revoked.test"], ""));
    rig.renewd_ok("run", &["--once"]);
    let chain = common::read_certs_pem(rig.fullchain("www"));
    let old = chain[0].clone();
    let old_key = common::key_spki(rig.key("www"));

    // Another client revokes it with the certificate's key (keyCompromise).
    let key_pem = fs::read_to_string(rig.key("www")).expect("key");
    let (code, body) = common::acme_client::revoke_with_certificate_key(
        &rig.pebble.directory_url,
        &rig.pebble.tls_root_path,
        &old.der,
        &key_pem,
        1,
    );
    assert_eq!(code, 200, "revocation at Pebble: {body}");

    // What Pebble's ARI answers for it now.
    let dir = rig.pebble.directory();
    let ari_url = dir["renewalInfo"].as_str().expect("renewalInfo");
    let b64 = data_encoding::BASE64URL_NOPAD;
    let aki = old.aki.as_ref().expect("AKI");
    let id = format!("{}.{}", b64.encode(aki), b64.encode(&old.serial_raw));
    let ari = http_request(
        "GET",
        &format!("{ari_url}/{id}"),
        None,
        Some(&rig.pebble.tls_root_path),
    )
    .expect("ARI");
    eprintln!(
        "Pebble's ARI for the revoked certificate: {} {}",
        ari.status, ari.body
    );
    assert_eq!(ari.status, 200, "{}", ari.body);
    let ari: Value = serde_json::from_str(&ari.body).expect("ARI JSON");
    let end = ari["suggestedWindow"]["end"].as_str().expect("end");
    let end: SystemTime =
        time::OffsetDateTime::parse(end, &time::format_description::well_known::Rfc3339)
            .expect("RFC 3339")
            .into();
    assert!(
        end <= SystemTime::now(),
        "Pebble asks for replacement now: {ari:#}"
    );

    // An OCSP responder for Pebble's issuer, from an index saying the certificate is revoked.
    let d = rig.path("ocsp");
    fs::create_dir_all(&d).expect("mkdir");
    fs::write(d.join("issuer.pem"), pem(&chain[1].der)).expect("issuer");
    fs::write(
        d.join("issuer.key"),
        rig.pebble.mgmt_get("/intermediate-keys/0"),
    )
    .expect("key");
    fs::write(
        d.join("index.txt"),
        revoked_index_line(
            &old.serial_hex,
            &utc_time(old.not_after),
            &utc_time(SystemTime::now()),
            "/CN=www.revoked.test",
        ),
    )
    .expect("index");
    let responder = Responder::start(
        ocsp_port,
        &d,
        &d.join("index.txt"),
        &d.join("issuer.pem"),
        (&d.join("issuer.pem"), &d.join("issuer.key")),
    );
    // The responder itself says revoked (as renewd will).
    let said = openssl(
        &d,
        &[
            "ocsp",
            "-issuer",
            "issuer.pem",
            "-cert",
            &rig.fullchain("www").display().to_string(),
            "-url",
            &responder.url(),
            "-noverify",
        ],
    );
    assert!(said.contains("revoked"), "{said}");

    let inv: Value = serde_json::from_str(&rig.renewd_ok("inventory", &["--json"])).expect("JSON");
    let www = inv["certificates"]
        .as_array()
        .expect("certs")
        .iter()
        .find(|c| c["name"] == "www")
        .expect("www");
    assert_eq!(
        (
            www["revocation"].as_str(),
            www["revocation_source"].as_str()
        ),
        (Some("revoked"), Some("ocsp")),
        "{www:#}"
    );
    let rows: Value = serde_json::from_str(&rig.renewd_ok("status", &["--json"])).expect("JSON");
    assert_eq!(rows[0]["next_renewal_reason"], "revoked", "{rows:#}");

    let out = rig.renewd("run", &["--once"]);
    assert!(out.status.success());
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("www: renewal due: revoked"), "{log}");
    let new = common::read_cert_pem(rig.fullchain("www"));
    assert_ne!(new.serial_hex, old.serial_hex);
    assert_ne!(
        common::key_spki(rig.key("www")),
        old_key,
        "a revoked certificate gets a new key"
    );
    let rows: Value = serde_json::from_str(&rig.renewd_ok("status", &["--json"])).expect("JSON");
    assert_ne!(rows[0]["next_renewal_reason"], "revoked", "{rows:#}");

    // The daemon learns it by itself (nothing else asks for a renewal: ARI is off): the new certificate is revoked at Pebble too, the
    // responder (restarted: it reads its index once) says so, and the daemon's first pass
    // finds it, alerts, and replaces it with a new key.
    let second_key = common::key_spki(rig.key("www"));
    let key_pem = fs::read_to_string(rig.key("www")).expect("key");
    let (code, body) = common::acme_client::revoke_with_certificate_key(
        &rig.pebble.directory_url,
        &rig.pebble.tls_root_path,
        &new.der,
        &key_pem,
        1,
    );
    assert_eq!(code, 200, "revocation at Pebble: {body}");
    drop(responder);
    let now = utc_time(SystemTime::now());
    let index = [&old, &new]
        .iter()
        .map(|c| {
            revoked_index_line(
                &c.serial_hex,
                &utc_time(c.not_after),
                &now,
                "/CN=www.revoked.test",
            )
        })
        .collect::<String>();
    fs::write(d.join("index.txt"), index).expect("index");
    let _responder = Responder::start(
        ocsp_port,
        &d,
        &d.join("index.txt"),
        &d.join("issuer.pem"),
        (&d.join("issuer.pem"), &d.join("issuer.key")),
    );
    let (hook, log) = (rig.path("page.sh"), rig.path("alerts.log"));
    write_exec(
        &hook,
        &format!("cat >> {l}\necho >> {l}\n", l = log.display()),
    );
    let alert = format!("\n[alert]\ncommand = [\"{}\"]\n", hook.display());
    // ARI off, so what the daemon learns comes from OCSP alone (Pebble's ARI would also ask
    // for a renewal now, racing with it).
    let base = rig
        .base_config()
        .replace("accept_terms = true", "accept_terms = true\nari = false");
    let body = rig.cert("www", &["www.revoked.test"], "") + &alert;
    fs::write(&rig.config_path, base + &body).expect("config");
    let mut daemon = rig.spawn_daemon();
    wait_until(
        Duration::from_secs(30),
        "the daemon to replace the revoked certificate",
        || common::read_cert_pem(rig.fullchain("www")).serial_hex != new.serial_hex,
    );
    assert!(
        daemon.log().contains("www: renewal due: revoked"),
        "{}",
        daemon.log()
    );
    assert_ne!(
        common::key_spki(rig.key("www")),
        second_key,
        "a new key again"
    );
    let alerts = || -> Vec<Value> {
        fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).expect("alert JSON"))
            .collect()
    };
    // Firing while it was revoked, resolved once replaced.
    wait_until(
        Duration::from_secs(20),
        "the revoked alert and its resolution",
        || {
            let a = alerts();
            let of = |status: &str| {
                a.iter().any(|a| {
                    a["condition"] == "revoked" && a["status"] == status && a["kind"] == "managed"
                })
            };
            of("firing") && of("resolved")
        },
    );
    let firing = alerts()
        .into_iter()
        .find(|a| a["condition"] == "revoked" && a["status"] == "firing")
        .expect("firing");
    assert_eq!(firing["severity"], "critical", "{firing:#}");
    daemon.stop();
}

/// One request a [`ForwardProxy`] forwarded: its request line, and its
/// `Proxy-Authorization` value.
type Forwarded = (String, Option<String>);

/// A minimal HTTP forward proxy on 127.0.0.1 (plain HTTP, absolute-form requests, RFC 9112
/// §3.2.2): logs each request line and its `Proxy-Authorization`, sends the request on to its
/// host in origin form, copies the answer back. Stops on drop.
struct ForwardProxy {
    port: u16,
    log: std::sync::Arc<std::sync::Mutex<Vec<Forwarded>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl ForwardProxy {
    fn start() -> ForwardProxy {
        use std::sync::atomic::Ordering;
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (l, s) = (log.clone(), stop.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(client) = client {
                    let l = l.clone();
                    std::thread::spawn(move || {
                        let _ = forward(client, &l);
                    });
                }
            }
        });
        ForwardProxy { port, log, stop }
    }

    fn forwarded(&self) -> Vec<Forwarded> {
        self.log.lock().expect("log").clone()
    }
}

impl Drop for ForwardProxy {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        // Wakes the accept loop, which then sees the flag.
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Forwards one request of `client` (see [`ForwardProxy`]).
fn forward(
    client: std::net::TcpStream,
    log: &std::sync::Mutex<Vec<Forwarded>>,
) -> std::io::Result<()> {
    use std::io::{BufRead, BufReader, Read, Write};
    client.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(client.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let (mut headers, mut auth, mut length) = (String::new(), None, 0usize);
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" {
            break;
        }
        let lower = h.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
        if lower.starts_with("proxy-authorization:") {
            auth = Some(h["proxy-authorization:".len()..].trim().to_string());
        } else if !lower.starts_with("connection:") {
            headers.push_str(&h);
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body)?;
    log.lock()
        .expect("log")
        .push((line.trim_end().to_string(), auth));
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let rest = target.strip_prefix("http://").unwrap_or(target);
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let mut upstream = std::net::TcpStream::connect(authority)?;
    write!(
        upstream,
        "{method} {path} HTTP/1.1\r\n{headers}Connection: close\r\n\r\n"
    )?;
    upstream.write_all(&body)?;
    let mut client = client;
    std::io::copy(&mut upstream, &mut client)?;
    client.shutdown(std::net::Shutdown::Write)
}

/// `HTTP_PROXY` carries the OCSP request, with the proxy's credentials; the certificate is
/// found revoked all the same.
#[test]
fn ocsp_requests_go_through_http_proxy() {
    let tmp = tempdir_with(&["", "ca", "scan"]);
    let d = tmp.path();
    let ca = OpensslCa::new(&d.join("ca"));
    let ocsp_port = free_port();
    let chain = ca.issue(
        "proxied.test",
        Some(&format!("http://127.0.0.1:{ocsp_port}")),
        None,
    );
    ca.revoke("proxied.test");
    let _responder = ca.responder(ocsp_port);
    fs::copy(&chain, d.join("scan/proxied.pem")).expect("copy");
    let config = d.join("renewd.toml");
    fs::write(
        &config,
        format!(
            "state_dir = \"{d}/state\"\ncontrol_socket = \"{d}/control.sock\"\n\n[discovery]\npaths = [\"{d}/scan\"]\n",
            d = d.display()
        ),
    )
    .expect("config");
    let proxy = ForwardProxy::start();
    let inventory_via = |proxy_port: u16| -> Value {
        let out = std::process::Command::new(common::renewd_bin())
            .args(["inventory", "--json", "--config"])
            .arg(&config)
            .env(
                "HTTP_PROXY",
                format!("http://ops:s3cret@127.0.0.1:{proxy_port}"),
            )
            .env_remove("http_proxy")
            .env_remove("NO_PROXY")
            .env_remove("no_proxy")
            .env_remove("ALL_PROXY")
            .env_remove("all_proxy")
            .env_remove("REQUEST_METHOD")
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run renewd");
        eprintln!("{}", String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success());
        serde_json::from_slice(&out.stdout).expect("JSON")
    };
    let inv = inventory_via(proxy.port);
    let i = item(&inv, "scan/proxied.pem");
    assert_eq!(
        (i["revocation"].as_str(), i["revocation_source"].as_str()),
        (Some("revoked"), Some("ocsp")),
        "{i:#}"
    );
    let forwarded = proxy.forwarded();
    assert_eq!(
        forwarded,
        vec![(
            format!("POST http://127.0.0.1:{ocsp_port}/ HTTP/1.1"),
            Some("Basic b3BzOnMzY3JldA==".to_string())
        )],
        "one request, in absolute form, with the proxy's credentials"
    );

    // A proxy that is not there: unknown, the proxy named, its password not.
    fs::remove_file(d.join("state/revocation/status.json")).expect("forget the result");
    let dead = free_port();
    let inv = inventory_via(dead);
    let i = item(&inv, "scan/proxied.pem");
    let detail = i["revocation_detail"].as_str().unwrap_or_default();
    assert_eq!(i["revocation"], "unknown", "{i:#}");
    assert!(
        detail.contains(&format!("through proxy http://127.0.0.1:{dead}")),
        "{detail}"
    );
    assert!(!detail.contains("s3cret"), "{detail}");
}

/// A certificate in a file another user controls (here: owned by `nobody`) names the OCSP
/// responder and CRL of that user's choice: renewd, as root, does not ask them. It is shown
/// `unknown`, saying why, and the address named never sees a connection.
#[test]
fn addresses_in_files_other_users_control_are_not_asked() {
    let tmp = tempdir_with(&["", "ca", "scan"]);
    let d = tmp.path();
    let ca = OpensslCa::new(&d.join("ca"));
    // Where the planted certificate points: a listener that records any connection.
    let trap = TcpListener::bind("127.0.0.1:0").expect("bind");
    trap.set_nonblocking(true).expect("nonblocking");
    let url = format!(
        "http://127.0.0.1:{}",
        trap.local_addr().expect("addr").port()
    );
    let planted = ca.issue("planted.test", Some(&url), Some(&format!("{url}/x.crl")));
    let target = d.join("scan/planted.pem");
    fs::copy(&planted, &target).expect("copy");
    let nobody = nix::unistd::User::from_name("nobody")
        .expect("getpwnam")
        .expect("a nobody user");
    nix::unistd::chown(&target, Some(nobody.uid), None).expect("chown");
    let config = d.join("renewd.toml");
    fs::write(
        &config,
        format!(
            "state_dir = \"{d}/state\"\ncontrol_socket = \"{d}/control.sock\"\n\n[discovery]\npaths = [\"{d}/scan\"]\n",
            d = d.display()
        ),
    )
    .expect("config");
    let inv = inventory(&config);
    let it = item(&inv, "scan/planted.pem");
    assert_eq!(it["revocation"], "unknown", "{it:#}");
    let detail = it["revocation_detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("not checked") && detail.contains("belongs to uid"),
        "{detail}"
    );
    assert!(
        matches!(trap.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "renewd connected to the address a file owned by nobody named"
    );
}

/// The tester's attack: a planted certificate with the managed one's serial and issuer name,
/// from a CA of the same name with its own responder. Each certificate gets its own answer
/// both ways: the planted one's "revoked" does not mark the managed one, and the planted
/// one's "good" does not hide a real revocation of a certificate of the same serial.
#[test]
fn a_certificate_with_the_same_serial_and_issuer_name_does_not_set_anothers_status() {
    let tmp = tempdir_with(&["", "real", "fake", "managed", "scan"]);
    let d = tmp.path();
    // Two CAs of the same name ("renewd revocation test CA"), serials from 1000 in each.
    let (real, fake) = (
        OpensslCa::new(&d.join("real")),
        OpensslCa::new(&d.join("fake")),
    );
    let (real_port, fake_port) = (free_port(), free_port());
    let (real_url, fake_url) = (
        format!("http://127.0.0.1:{real_port}"),
        format!("http://127.0.0.1:{fake_port}"),
    );
    // Serial 1000 of each: the real one good (managed), the forged one revoked.
    let managed = real.issue("www.example.org", Some(&real_url), None);
    let forged_revoked = fake.issue("forged-revoked.test", Some(&fake_url), None);
    fake.revoke("forged-revoked.test");
    // Serial 1001 of each: the real one revoked, the forged one good.
    let revoked = real.issue("revoked.test", Some(&real_url), None);
    real.revoke("revoked.test");
    let forged_good = fake.issue("forged-good.test", Some(&fake_url), None);
    let _real = real.responder(real_port);
    let _fake = fake.responder(fake_port);
    fs::copy(&managed, d.join("managed/www.pem")).expect("copy");
    fs::copy(
        real.dir.join("www.example.org.key"),
        d.join("managed/www.key"),
    )
    .expect("copy");
    for (name, chain) in [
        ("forged-revoked", &forged_revoked),
        ("revoked", &revoked),
        ("forged-good", &forged_good),
    ] {
        fs::copy(chain, d.join(format!("scan/{name}.pem"))).expect("copy");
    }
    let config = d.join("renewd.toml");
    fs::write(
        &config,
        format!(
            r#"state_dir = "{d}/state"
control_socket = "{d}/control.sock"

[ca.pebble]
directory = "https://127.0.0.1:14000/dir"
accept_terms = true

[[certificate]]
name = "www"
domains = ["www.example.org"]
challenge = {{ type = "http-01", webroot = "{d}" }}
files = {{ fullchain = "{d}/managed/www.pem", key = "{d}/managed/www.key" }}

[discovery]
paths = ["{d}/scan"]
"#,
            d = d.display()
        ),
    )
    .expect("config");
    let out = renewd(&config, &["inventory", "--json"]);
    assert!(out.status.success());
    let inv: Value = serde_json::from_slice(&out.stdout).expect("inventory JSON");
    // The log names the file checked (not only a serial and an issuer's name).
    let log = String::from_utf8_lossy(&out.stderr);
    let logged = format!("revocation checked path={}/managed/www.pem", d.display());
    assert!(log.contains(&logged), "{log}");
    let got = |file: &str| {
        let i = item(&inv, file);
        (
            i["serial"].as_str().unwrap_or_default().to_string(),
            i["issuer"].as_str().unwrap_or_default().to_string(),
            i["revocation"].as_str().unwrap_or_default().to_string(),
        )
    };
    let (www, forged_r) = (got("managed/www.pem"), got("scan/forged-revoked.pem"));
    let (rev, forged_g) = (got("scan/revoked.pem"), got("scan/forged-good.pem"));
    // The attack's premise: same serial, same issuer name.
    assert_eq!((&www.0, &www.1), (&forged_r.0, &forged_r.1));
    assert_eq!((&rev.0, &rev.1), (&forged_g.0, &forged_g.1));
    assert_eq!(www.2, "good", "{inv:#}");
    assert_eq!(forged_r.2, "revoked", "{inv:#}");
    assert_eq!(rev.2, "revoked", "{inv:#}");
    assert_eq!(forged_g.2, "good", "{inv:#}");
    // Shown again from the kept results (no request): still each its own.
    let again = inventory(&config);
    assert_eq!(item(&again, "managed/www.pem")["revocation"], "good");
    assert_eq!(item(&again, "scan/forged-good.pem")["revocation"], "good");
    assert_eq!(item(&again, "scan/revoked.pem")["revocation"], "revoked");
    // `status` does not show the managed certificate revoked (due at once) either.
    let out = renewd(&config, &["status", "--json", "www"]);
    assert!(out.status.success());
    let status = String::from_utf8_lossy(&out.stdout);
    assert!(!status.contains("revoked"), "{status}");
}

/// A certificate naming many OCSP responders and CRLs: at most two of each are asked, all
/// within 20 s; the rest are reported as not tried and never see a connection.
#[test]
fn only_the_first_two_ocsp_and_crl_urls_are_asked_within_one_deadline() {
    let tmp = tempdir_with(&["", "ca", "scan"]);
    let d = tmp.path();
    let ca = OpensslCa::new(&d.join("ca"));
    // Accept connections (the kernel's backlog) and never answer.
    let silent: Vec<TcpListener> = (0..3)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind"))
        .collect();
    let url = |l: &TcpListener| format!("http://127.0.0.1:{}", l.local_addr().expect("a").port());
    // Record any connection: past the caps, never asked.
    let trap = TcpListener::bind("127.0.0.1:0").expect("bind");
    trap.set_nonblocking(true).expect("nonblocking");
    let trap_url = url(&trap);
    let (s0, s1, s2) = (url(&silent[0]), url(&silent[1]), url(&silent[2]));
    let ocsp: Vec<String> = vec![s0.clone(), s1.clone()]
        .into_iter()
        .chain((0..20).map(|n| format!("{trap_url}/{n}")))
        .collect();
    let crl = [
        format!("{s2}/a.crl"),
        format!("{s2}/b.crl"),
        format!("{trap_url}/c.crl"),
    ];
    let ocsp: Vec<&str> = ocsp.iter().map(String::as_str).collect();
    let crl: Vec<&str> = crl.iter().map(String::as_str).collect();
    let many = ca.issue_naming("many.test", &ocsp, &crl);
    fs::copy(&many, d.join("scan/many.pem")).expect("copy");
    let config = d.join("renewd.toml");
    fs::write(
        &config,
        format!(
            "state_dir = \"{d}/state\"\ncontrol_socket = \"{d}/control.sock\"\n\n[discovery]\npaths = [\"{d}/scan\"]\n",
            d = d.display()
        ),
    )
    .expect("config");
    let started = Instant::now();
    let inv = inventory(&config);
    let took = started.elapsed();
    // Two silent responders take the 20 s; unbounded, the CRL would add 10 s more.
    assert!(took < Duration::from_secs(28), "{took:?}");
    let it = item(&inv, "scan/many.pem");
    assert_eq!(it["revocation"], "unknown", "{it:#}");
    let detail = it["revocation_detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("20 more OCSP responder URLs not tried")
            && detail.contains("1 more CRL distribution point URLs not tried")
            && detail.contains("ran out"),
        "{detail}"
    );
    assert!(
        matches!(trap.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "renewd asked a URL past the cap"
    );
}

/// A certificate found in a PKCS#12 bundle (read by the inventory with its password) is
/// shown `unknown`, saying it is not checked because it is in a bundle, not that it "does
/// not parse"; its responder is not asked.
#[test]
fn a_certificate_in_a_pkcs12_bundle_is_said_not_checked() {
    let tmp = tempdir_with(&["", "ca", "scan"]);
    let d = tmp.path();
    let ca = OpensslCa::new(&d.join("ca"));
    let trap = TcpListener::bind("127.0.0.1:0").expect("bind");
    trap.set_nonblocking(true).expect("nonblocking");
    let url = format!("http://127.0.0.1:{}", trap.local_addr().expect("a").port());
    ca.issue("bundled.test", Some(&url), None);
    fs::write(d.join("p12.pass"), "s3cret\n").expect("pass");
    openssl(
        &ca.dir,
        &[
            "pkcs12",
            "-export",
            "-in",
            "bundled.test.pem",
            "-inkey",
            "bundled.test.key",
            "-passout",
            "pass:s3cret",
            "-out",
            &d.join("scan/app.p12").display().to_string(),
        ],
    );
    let config = d.join("renewd.toml");
    fs::write(
        &config,
        format!(
            "state_dir = \"{d}/state\"\ncontrol_socket = \"{d}/control.sock\"\n\n[discovery]\npaths = [\"{d}/scan\"]\npkcs12_password_files = {{ \"{d}/scan/app.p12\" = \"{d}/p12.pass\" }}\n",
            d = d.display()
        ),
    )
    .expect("config");
    let inv = inventory(&config);
    let leaf = inv["certificates"]
        .as_array()
        .expect("certificates")
        .iter()
        .find(|c| c["pkcs12_leaf"] == true)
        .unwrap_or_else(|| panic!("the bundle's leaf: {inv:#}"));
    assert_eq!(leaf["revocation"], "unknown", "{leaf:#}");
    let detail = leaf["revocation_detail"].as_str().unwrap_or_default();
    assert!(
        detail.starts_with("not checked: it is in a PKCS#12 bundle"),
        "{detail}"
    );
    assert!(
        matches!(trap.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "renewd asked the responder of a certificate it does not check"
    );
}

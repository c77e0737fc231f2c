//! `renewd trust-audit` through the real binary, on anchors made by the real `openssl`:
//! an mTLS bundle (`[trust] paths`) with an expired, a SHA-1-signed and a stale anchor
//! among good ones that a managed, an exception or a discovered certificate chains to;
//! an anchor acknowledged by an `[[exception]]` (and flagged again once its review date
//! has passed); a malformed bundle; and the daemon's `/metrics` and alerts, resolved when an
//! exception acknowledges the anchor on SIGHUP.
//!
//! No Pebble: the managed certificate is deployed, not due, and its CA port closed.

use crate::common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::rig::spawn_daemon;
use common::{free_port, http_request, wait_until, write_exec};
use serde_json::Value;

/// Runs openssl with `args` in `dir`; panics with its stderr when it fails.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A root CA made by `openssl req -x509`: `NAME.pem` and `NAME.key` in `dir`.
/// `digest`: the self-signature's hash; `expired`: re-dated to end yesterday.
fn root(dir: &Path, name: &str, digest: &str, expired: bool) -> String {
    let subj = format!("/O=renewd test/CN={name}");
    let (key, pem) = (format!("{name}.key"), format!("{name}.pem"));
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &key,
            "-subj",
            &subj,
            &format!("-{digest}"),
            "-days",
            "3650",
            "-out",
            &pem,
        ],
    );
    if expired {
        openssl(
            dir,
            &[
                "x509", "-in", &pem, "-signkey", &key, "-days", "-1", "-sha256", "-out", &pem,
            ],
        );
    }
    fs::read_to_string(dir.join(&pem)).expect("root PEM")
}

/// A leaf for `cn` issued by root `ca` (`CA.pem`, `CA.key`): its PEM (and key at `key`).
fn leaf(dir: &Path, ca: &str, cn: &str, key: &Path) -> String {
    let csr = format!("{cn}.csr");
    let subj = format!("/CN={cn}");
    let ext = dir.join(format!("{cn}.ext"));
    fs::write(&ext, format!("subjectAltName=DNS:{cn}\n")).expect("ext");
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &key.display().to_string(),
            "-subj",
            &subj,
            "-out",
            &csr,
        ],
    );
    let out = format!("{cn}.crt");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-days",
            "60",
            "-sha256",
            "-extfile",
            &ext.display().to_string(),
            "-out",
            &out,
        ],
    );
    fs::read_to_string(dir.join(out)).expect("leaf PEM")
}

/// The fixture: five roots, the bundle of all five at `mtls/client-ca.pem` (under a
/// discovery path too, as a bundle in /etc/nginx would be), and the certificates that chain
/// to four of them (managed `www` to "Good A", an exception to "Good B", discovered ones to
/// "Expired" and "SHA1").
struct Fixture {
    dir: tempfile::TempDir,
    bundle: PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = common::tempdir_with(&["", "ca", "tls", "legacy", "scan", "mtls"]);
        let ca = dir.path().join("ca");
        let mut bundle = String::new();
        for (name, digest, expired) in [
            ("Good A", "sha256", false),
            ("Expired", "sha256", true),
            ("Good B", "sha256", false),
            ("SHA1", "sha1", false),
            ("Stale", "sha256", false),
        ] {
            bundle.push_str(&root(&ca, name, digest, expired));
        }
        let p = |rel: &str| dir.path().join(rel);
        let www = leaf(&ca, "Good A", "www.test", &p("tls/www.key"));
        fs::write(
            p("tls/www.pem"),
            www + &fs::read_to_string(ca.join("Good A.pem")).unwrap(),
        )
        .expect("fullchain");
        let legacy = leaf(&ca, "Good B", "appliance.test", &p("ca/appliance.key"));
        fs::write(p("legacy/appliance.pem"), legacy).expect("exception");
        let old = leaf(&ca, "Expired", "old.test", &p("ca/old.key"));
        fs::write(p("scan/old.pem"), old).expect("discovered");
        let sha1 = leaf(&ca, "SHA1", "sha1.test", &p("ca/sha1.key"));
        fs::write(p("scan/sha1.pem"), sha1).expect("discovered");
        let bundle_path = p("mtls/client-ca.pem");
        fs::write(&bundle_path, bundle).expect("bundle");
        Fixture {
            dir,
            bundle: bundle_path,
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// The configuration, with `[trust]` auditing the bundle only, plus `extra`.
    fn config(&self, extra: &str) {
        let d = self.dir.path().display();
        let text = format!(
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

[[exception]]
path = "{d}/legacy/appliance.pem"
owner = "netops@example.org"
reason = "vendor appliance"
review_by = "2099-01-01"

[discovery]
paths = ["{d}/scan", "{d}/mtls"]

[trust]
paths = ["{bundle}"]
{extra}"#,
            bundle = self.bundle.display()
        );
        fs::write(self.path("renewd.toml"), text).expect("config");
    }

    fn renewd(&self, args: &[&str]) -> Output {
        let out = Command::new(common::renewd_bin())
            .arg("--config")
            .arg(self.path("renewd.toml"))
            .args(args)
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

    /// `trust-audit --json` (plus `args`): the exit code and the document.
    fn audit(&self, args: &[&str]) -> (i32, Value) {
        let mut all = vec!["trust-audit", "--json"];
        all.extend_from_slice(args);
        let out = self.renewd(&all);
        let doc = serde_json::from_slice(&out.stdout).expect("trust-audit JSON");
        (out.status.code().unwrap_or(-1), doc)
    }
}

/// Each anchor's CN and its flags, as `CN:flag,flag` (`CN:` when none), in bundle order.
fn flags(doc: &Value) -> Vec<String> {
    doc["anchors"]
        .as_array()
        .expect("anchors")
        .iter()
        .map(|a| {
            let cn = a["subject"]
                .as_str()
                .unwrap()
                .rsplit("CN=")
                .next()
                .unwrap()
                .to_string();
            let f: Vec<&str> = a["flags"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f.as_str().unwrap())
                .collect();
            format!("{cn}:{}", f.join(","))
        })
        .collect()
}

fn anchor<'a>(doc: &'a Value, cn: &str) -> &'a Value {
    doc["anchors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| {
            a["subject"]
                .as_str()
                .unwrap()
                .ends_with(&format!("CN={cn}"))
        })
        .unwrap_or_else(|| panic!("no anchor {cn}"))
}

#[test]
fn flags_exactly_the_expired_sha1_and_stale_anchors() {
    let f = Fixture::new();
    f.config("");
    let (code, doc) = f.audit(&[]);
    assert_eq!(code, 1, "an anchor is flagged: exit 1");
    assert_eq!(
        flags(&doc),
        [
            "Good A:",
            "Expired:expired",
            "Good B:",
            "SHA1:weak",
            "Stale:stale"
        ]
    );
    assert_eq!(doc["flagged"], 3);
    assert_eq!(doc["errors"], serde_json::json!([]));
    let sha1 = anchor(&doc, "SHA1");
    assert_eq!(sha1["signature_algorithm"], "sha1WithRSAEncryption");
    assert_eq!(sha1["key"], "rsa-2048");
    assert_eq!(sha1["block"], 4);
    assert!(anchor(&doc, "Expired")["days_left"].as_i64().unwrap() < 0);
    // The fingerprint is the one openssl computes.
    let fp = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(f.path("ca/Stale.pem"))
        .output()
        .expect("openssl");
    let fp = String::from_utf8_lossy(&fp.stdout)
        .trim()
        .rsplit('=')
        .next()
        .unwrap()
        .replace(':', "")
        .to_lowercase();
    assert_eq!(anchor(&doc, "Stale")["fingerprint"], format!("sha256:{fp}"));
    // Named on the command line, the bundle is still one of [trust] paths.
    let (code, named) = f.audit(&[f.bundle.to_str().unwrap()]);
    assert_eq!((code, flags(&named)), (1, flags(&doc)));
    // The text report names each flagged anchor's fingerprint and reason.
    let out = f.renewd(&["trust-audit"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!(
        "sha256:{fp}: no certificate in the inventory chains to it"
    )));
    assert!(
        text.contains("5 anchor(s) in ") && text.contains("; 3 flagged"),
        "{text}"
    );
}

#[test]
fn an_acknowledged_anchor_is_shown_not_flagged_until_its_review_date() {
    let f = Fixture::new();
    f.config("");
    let (_, doc) = f.audit(&[]);
    let stale = anchor(&doc, "Stale")["fingerprint"]
        .as_str()
        .unwrap()
        .to_string();
    let expired = anchor(&doc, "Expired")["fingerprint"]
        .as_str()
        .unwrap()
        .to_string();
    let sha1 = anchor(&doc, "SHA1")["fingerprint"]
        .as_str()
        .unwrap()
        .to_string();
    // The stale one acknowledged until 2099, the expired one's review already overdue.
    let ack = |fp: &str, review: &str, path: &str| {
        format!(
            "\n[[exception]]\nfingerprint = \"{fp}\"\n{path}owner = \"pki@example.org\"\n\
             reason = \"partner CA, removal planned\"\nreview_by = \"{review}\"\n"
        )
    };
    let scoped = format!("path = \"{}\"\n", f.bundle.display());
    f.config(&format!(
        "{}{}{}",
        ack(&stale, "2099-12-31", &scoped),
        ack(&expired, "2020-01-01", ""),
        ack(&sha1, "2099-12-31", "path = \"/etc/other-bundle.pem\"\n"),
    ));
    let (code, doc) = f.audit(&[]);
    assert_eq!(code, 1);
    let s = anchor(&doc, "Stale");
    assert_eq!(
        s["flags"],
        serde_json::json!(["stale"]),
        "still shown with its flag"
    );
    assert_eq!(s["flagged"], false);
    assert_eq!(s["acknowledged"]["owner"], "pki@example.org");
    assert_eq!(s["acknowledged"]["overdue"], false);
    let e = anchor(&doc, "Expired");
    assert_eq!(
        (e["flagged"].clone(), e["acknowledged"]["overdue"].clone()),
        (true.into(), true.into())
    );
    // An exception scoped to another path does not acknowledge it here.
    assert_eq!(anchor(&doc, "SHA1")["acknowledged"], Value::Null);
    assert_eq!(doc["flagged"], 2);
    // With everything acknowledged until 2099, nothing is flagged: exit 0.
    f.config(&format!(
        "{}{}{}",
        ack(&stale, "2099-12-31", ""),
        ack(&expired, "2099-12-31", ""),
        ack(&sha1, "2099-12-31", &scoped),
    ));
    let (code, doc) = f.audit(&[]);
    assert_eq!((code, doc["flagged"].clone()), (0, 0.into()));
}

#[test]
fn a_malformed_bundle_names_path_and_block_and_the_rest_is_audited() {
    let f = Fixture::new();
    f.config("");
    let good = fs::read_to_string(f.path("ca/Good A.pem")).unwrap();
    let other = fs::read_to_string(f.path("ca/Good B.pem")).unwrap();
    let bad = f.path("mtls/bad.pem");
    let text = format!(
        "# comment\n{good}-----BEGIN CERTIFICATE-----\nnot*base64\n-----END CERTIFICATE-----\n\
         -----BEGIN CERTIFICATE-----\nMIIBkTCB+wIJAKHBfpegPjMCMA0GCSqGSIb3DQEBCwUAMA0xCzAJBgNVBAMMAmNh\n\
         -----END CERTIFICATE-----\n{other}-----BEGIN CERTIFICATE-----\nMIIB\n"
    );
    fs::write(&bad, text).unwrap();
    let missing = f.path("mtls/missing.pem");
    let (code, doc) = f.audit(&[bad.to_str().unwrap(), missing.to_str().unwrap()]);
    assert_eq!(code, 1, "unreadable blocks: exit 1");
    assert_eq!(
        flags(&doc),
        ["Good A:", "Good B:"],
        "the good blocks are still audited"
    );
    let errors: Vec<&str> = doc["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    let at = |n: usize| format!("{}: block {n} (line ", bad.display());
    assert_eq!(errors.len(), 4, "{errors:?}");
    assert!(
        errors[0].starts_with(&at(2)) && errors[0].contains("invalid base64"),
        "{errors:?}"
    );
    assert!(errors[1].starts_with(&at(3)), "{errors:?}");
    assert!(
        errors[2].starts_with(&at(5)) && errors[2].contains("no END line"),
        "{errors:?}"
    );
    assert_eq!(errors[3], format!("{}: does not exist", missing.display()));
    // Text mode says the same on stdout.
    let out = f.renewd(&["trust-audit", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("cannot read {}", at(5))));
}

#[test]
fn the_daemon_exports_and_alerts_flagged_anchors() {
    let f = Fixture::new();
    let port = free_port();
    let log = f.path("alerts.log");
    let hook = f.path("page.sh");
    write_exec(
        &hook,
        &format!("cat >> {l}\necho >> {l}\n", l = log.display()),
    );
    f.config(&format!(
        "\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n\n[alert]\ncommand = [\"{}\"]\n",
        hook.display()
    ));
    let (_, doc) = f.audit(&[]);
    let mut daemon = spawn_daemon(
        &f.path("renewd.toml"),
        &f.path("control.sock"),
        f.path("daemon.log"),
        &[],
    );
    let url = format!("http://127.0.0.1:{port}/metrics");
    let want: Vec<String> = [("Expired", "expired"), ("SHA1", "weak"), ("Stale", "stale")]
        .iter()
        .map(|(cn, flag)| {
            format!(
                "renewd_trust_anchor_flagged{{path=\"{}\",fingerprint=\"{}\",flag=\"{flag}\"}} 1",
                f.bundle.display(),
                anchor(&doc, cn)["fingerprint"].as_str().unwrap()
            )
        })
        .collect();
    let mut body = String::new();
    wait_until(
        Duration::from_secs(20),
        "the flagged anchors in /metrics",
        || {
            body = http_request("GET", &url, None, None)
                .map(|r| r.body)
                .unwrap_or_default();
            want.iter().all(|w| body.contains(w.as_str()))
        },
    );
    assert_eq!(
        body.matches("renewd_trust_anchor_flagged{").count(),
        3,
        "{body}"
    );
    let alerts = || -> Vec<Value> {
        fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).expect("alert JSON"))
            .filter(|a: &Value| a["condition"] == "trust_anchor")
            .collect()
    };
    wait_until(Duration::from_secs(20), "three trust_anchor alerts", || {
        alerts().len() >= 3
    });
    let sent = alerts();
    assert_eq!(sent.len(), 3, "{sent:?}");
    let severity = |cn: &str| {
        sent.iter()
            .find(|a| {
                a["message"]
                    .as_str()
                    .unwrap()
                    .contains(&format!("CN={cn}\""))
            })
            .map(|a| a["severity"].as_str().unwrap().to_string())
            .unwrap_or_else(|| panic!("no alert for {cn}: {sent:?}"))
    };
    assert_eq!(severity("Expired"), "critical");
    assert_eq!(severity("SHA1"), "warning");
    assert_eq!(severity("Stale"), "warning");
    assert!(sent.iter().all(|a| a["kind"] == "anchor"));
    // Acknowledged on SIGHUP: the stale anchor's alert resolves and its sample goes.
    let stale = anchor(&doc, "Stale")["fingerprint"]
        .as_str()
        .unwrap()
        .to_string();
    f.config(&format!(
        "\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n\n[alert]\ncommand = [\"{}\"]\n\n\
         [[exception]]\nfingerprint = \"{stale}\"\nowner = \"pki@example.org\"\n\
         reason = \"partner CA\"\nreview_by = \"2099-01-01\"\n",
        hook.display()
    ));
    daemon.signal(nix::sys::signal::Signal::SIGHUP);
    let resolved = || {
        fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str::<Value>(l).expect("alert JSON"))
            .any(|a| {
                a["status"] == "resolved"
                    && a["condition"] == "trust_anchor"
                    && a["message"].as_str().unwrap().contains("CN=Stale")
            })
    };
    wait_until(
        Duration::from_secs(20),
        "the stale anchor's alert resolved",
        resolved,
    );
    wait_until(
        Duration::from_secs(20),
        "two flagged anchors in /metrics",
        || {
            body = http_request("GET", &url, None, None)
                .map(|r| r.body)
                .unwrap_or_default();
            body.matches("renewd_trust_anchor_flagged{").count() == 2
        },
    );
    assert!(!body.contains(&stale), "{body}");
    daemon.stop();
}

/// A self-signed root made by rcgen with `cn` as its common name (any characters, so a
/// name can carry control characters or be 60,000 characters long): its PEM.
fn rcgen_root(cn: &str) -> String {
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    p.distinguished_name.push(rcgen::DnType::CommonName, cn);
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let key = rcgen::KeyPair::generate().expect("key");
    p.self_signed(&key).expect("self-signed").pem()
}

/// One anchor 50 times at the head of the bundle, its CN holding ESC, CR and LF (a forged
/// log line): the audit lists it once with 50 copies; the daemon sends one document for it
/// (not 50), and its WARN line shows the name escaped, never a raw line break.
#[test]
fn a_repeated_anchor_with_a_forged_line_in_its_name_alerts_once_escaped() {
    let f = Fixture::new();
    let evil = rcgen_root("Evil\x1b[31mRED\x1b[0m\nFAKE ok line\r");
    let rest = fs::read_to_string(&f.bundle).expect("bundle");
    fs::write(&f.bundle, evil.repeat(50) + &rest).expect("bundle");
    let log = f.path("alerts.log");
    let hook = f.path("page.sh");
    write_exec(
        &hook,
        &format!("cat >> {l}\necho >> {l}\n", l = log.display()),
    );
    f.config(&format!("\n[alert]\ncommand = [\"{}\"]\n", hook.display()));
    let (_, doc) = f.audit(&[]);
    let anchors = doc["anchors"].as_array().expect("anchors");
    let evil_entries: Vec<&Value> = anchors
        .iter()
        .filter(|a| a["subject"].as_str().unwrap().contains("FAKE ok line"))
        .collect();
    assert_eq!(evil_entries.len(), 1, "{anchors:?}");
    assert_eq!(evil_entries[0]["copies"], 50);
    assert!(flags(&doc).iter().any(|f| f.contains("duplicate")));
    let reasons = evil_entries[0]["reasons"].to_string();
    assert!(
        reasons.contains("50 copies of the same certificate"),
        "{reasons}"
    );
    let mut daemon = spawn_daemon(
        &f.path("renewd.toml"),
        &f.path("control.sock"),
        f.path("daemon.log"),
        &[],
    );
    let sent = || -> Vec<Value> {
        fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).expect("alert JSON"))
            .filter(|a: &Value| a["condition"] == "trust_anchor")
            .collect()
    };
    // The documents of one pass go out in order, the evil anchor's first and the stale
    // one's last: once the stale one is in, every copy of the evil one would be too.
    wait_until(Duration::from_secs(20), "the stale anchor's alert", || {
        sent()
            .iter()
            .any(|a| a["message"].as_str().unwrap().contains("CN=Stale"))
    });
    let evil_sent = sent()
        .into_iter()
        .filter(|a| a["message"].as_str().unwrap().contains("FAKE ok line"))
        .count();
    assert_eq!(evil_sent, 1);
    wait_until(
        Duration::from_secs(20),
        "the WARN line of the alert",
        || {
            daemon
                .log()
                .lines()
                .any(|l| l.contains("WARN alert: trust anchor") && l.contains("FAKE ok line"))
        },
    );
    let text = daemon.log();
    assert!(
        !text.lines().any(|l| l.starts_with("FAKE ok line")),
        "a forged line in the log:\n{text}"
    );
    let warned = text
        .lines()
        .filter(|l| l.contains("WARN alert: trust anchor") && l.contains("\\nFAKE ok line\\r"))
        .count();
    assert_eq!(warned, 1, "{text}");
    daemon.stop();
}

/// A `[trust] paths` bundle in a directory every user can write: `check` warns at the
/// entry's FILE:LINE:COL and the audit reports it as not trustworthy, naming who can
/// write, without reading it (no anchor of it is listed).
#[test]
fn a_trust_path_others_can_write_is_reported_not_read() {
    use std::os::unix::fs::PermissionsExt;
    let f = Fixture::new();
    f.config("");
    let mtls = f.path("mtls");
    fs::set_permissions(&mtls, fs::Permissions::from_mode(0o777)).expect("chmod");
    let out = f.renewd(&["check"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.contains("not trustworthy"))
        .unwrap_or_else(|| panic!("no warning: {stdout}"));
    let config = f.path("renewd.toml").display().to_string();
    let text = fs::read_to_string(f.path("renewd.toml")).unwrap();
    let row = text
        .lines()
        .position(|l| l.starts_with("paths = [\"") && l.contains("client-ca.pem"))
        .expect("paths line")
        + 1;
    assert!(
        line.starts_with(&format!("{config}:{row}:")) && line.contains("warning:"),
        "{line}"
    );
    assert!(line.contains("every user can write in it"), "{line}");
    let (code, doc) = f.audit(&[]);
    assert_eq!(code, 1);
    assert_eq!(doc["anchors"].as_array().unwrap().len(), 0, "{doc}");
    assert_eq!(doc["sources"][0]["kind"], "untrusted");
    let errors = doc["errors"].to_string();
    assert!(errors.contains("not trustworthy, not read"), "{errors}");
    assert!(errors.contains(&mtls.display().to_string()), "{errors}");
    fs::set_permissions(&mtls, fs::Permissions::from_mode(0o755)).expect("chmod");
    let (_, doc) = f.audit(&[]);
    assert_eq!(doc["anchors"].as_array().unwrap().len(), 5, "{doc}");
}

/// A trust directory holding what is not a certificate: each entry is reported by name
/// with why, at once (no read blocks on the FIFO or /dev/zero); messages are in words, not
/// parser internals; a BEGIN line with a leading space is not a block (as for OpenSSL);
/// a file with a hash-link name too is listed under its own name; a 60,000-character
/// subject is cut short.
#[test]
fn a_trust_directory_reports_every_entry_it_cannot_use() {
    let f = Fixture::new();
    let dir = f.path("store");
    fs::create_dir(&dir).unwrap();
    let ca = f.path("ca");
    fs::copy(ca.join("Good A.pem"), dir.join("good-a.pem")).unwrap();
    std::os::unix::fs::symlink("good-a.pem", dir.join("e015395b.0")).unwrap();
    nix::unistd::mkfifo(
        &dir.join("fifo.pem"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    std::os::unix::fs::symlink("/dev/zero", dir.join("zero.pem")).unwrap();
    std::os::unix::fs::symlink(dir.join("gone.pem"), dir.join("dangling.pem")).unwrap();
    std::os::unix::fs::symlink(dir.join("loop-b.pem"), dir.join("loop-a.pem")).unwrap();
    std::os::unix::fs::symlink(dir.join("loop-a.pem"), dir.join("loop-b.pem")).unwrap();
    fs::write(dir.join("empty.pem"), "").unwrap();
    fs::write(
        dir.join("random.der"),
        [0x9c, 0x01, 0xff, 0x42, 0x17, 0x00, 0x80],
    )
    .unwrap();
    fs::write(dir.join("endonly.crt"), "AAAA\n-----END CERTIFICATE-----\n").unwrap();
    fs::write(
        dir.join("short.pem"),
        "-----BEGIN CERTIFICATE-----\nMAMC\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let good_b = fs::read_to_string(ca.join("Good B.pem")).unwrap();
    fs::write(
        dir.join("indented.pem"),
        good_b.replace("-----BEGIN", " -----BEGIN"),
    )
    .unwrap();
    openssl(
        &ca,
        &[
            "crl2pkcs7",
            "-nocrl",
            "-certfile",
            "Good B.pem",
            "-outform",
            "DER",
            "-out",
            &dir.join("p7.der").display().to_string(),
        ],
    );
    openssl(
        &ca,
        &[
            "crl2pkcs7",
            "-nocrl",
            "-certfile",
            "Good B.pem",
            "-out",
            &dir.join("p7.pem").display().to_string(),
        ],
    );
    fs::write(dir.join("long.pem"), rcgen_root(&"L".repeat(60_000))).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        let open = dir.join("open.pem");
        fs::copy(ca.join("Good B.pem"), &open).unwrap();
        fs::set_permissions(&open, fs::Permissions::from_mode(0o666)).unwrap();
    }
    f.config("");
    let started = std::time::Instant::now();
    let (code, doc) = f.audit(&[dir.to_str().unwrap()]);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(code, 1);
    let errors: Vec<String> = doc["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap().to_string())
        .collect();
    let error = |name: &str| -> String {
        let p = dir.join(name).display().to_string();
        errors
            .iter()
            .find(|e| e.starts_with(&format!("{p}:")))
            .unwrap_or_else(|| panic!("no error for {name}: {errors:#?}"))
            .clone()
    };
    for (name, want) in [
        ("fifo.pem", "a FIFO"),
        ("zero.pem", "a character device"),
        ("dangling.pem", "which does not exist"),
        ("loop-a.pem", "symbolic link loop"),
        ("empty.pem", "holds no certificate: the file is empty"),
        ("random.der", "holds no certificate"),
        ("endonly.crt", "END line (line 2) without its BEGIN"),
        ("short.pem", "truncated"),
        ("indented.pem", "holds no certificate"),
        ("p7.der", "PKCS#7 bundle"),
        ("p7.pem", "PKCS#7 bundle"),
        ("open.pem", "not trustworthy, not read: every user"),
    ] {
        let e = error(name);
        assert!(e.contains(want), "{name}: {e}");
    }
    assert!(
        errors
            .iter()
            .all(|e| !e.contains("Parsing Error") && !e.contains("Nom")),
        "{errors:#?}"
    );
    // OpenSSL agrees the indented BEGIN line starts no block.
    let storeutl = Command::new("openssl")
        .args(["storeutl", "-noout", "-certs"])
        .arg(dir.join("indented.pem"))
        .output()
        .expect("openssl storeutl");
    assert!(
        String::from_utf8_lossy(&storeutl.stdout).contains("Total found: 0"),
        "{}",
        String::from_utf8_lossy(&storeutl.stdout)
    );
    let anchors = doc["anchors"].as_array().unwrap();
    let files: Vec<&str> = anchors
        .iter()
        .map(|a| a["file"].as_str().unwrap())
        .collect();
    assert!(
        files.contains(&dir.join("good-a.pem").to_str().unwrap()),
        "{files:?}"
    );
    assert!(
        !files.iter().any(|f| f.ends_with("e015395b.0")),
        "{files:?}"
    );
    let long = anchors
        .iter()
        .find(|a| a["file"].as_str().unwrap().ends_with("long.pem"))
        .expect("the long-named anchor");
    let subject = long["subject"].as_str().unwrap();
    assert!(
        subject.len() < 1_200 && subject.contains("more bytes not shown"),
        "{}",
        subject.len()
    );
}

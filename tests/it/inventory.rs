//! Lifecycle governance through the real binary: `renewd inventory` classifying managed,
//! exception and unmanaged certificates; the daemon alerting (command and a real HTTP
//! webhook listener), de-duplicating across a restart, and resolving; `/metrics` scraped.
//!
//! No Pebble: the managed certificate is self-signed and not due, so no CA is contacted
//! (except in the metrics test, where a renewal against a closed port fails on purpose).

use crate::common;

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::rig::{spawn_daemon, DaemonProc};
use common::{free_port, http_request, now_secs, renewd_bin, wait_until, write_exec};
use serde_json::Value;

const DAY: u64 = 86_400;

/// A self-signed certificate for `names`, valid from `from` to `until` (Unix seconds), and
/// its key, as PEM; also the DER.
fn cert(names: &[&str], from: u64, until: u64) -> (String, String, Vec<u8>) {
    let mut params =
        rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .expect("params");
    params.not_before = time::OffsetDateTime::from_unix_timestamp(from as i64).expect("nb");
    params.not_after = time::OffsetDateTime::from_unix_timestamp(until as i64).expect("na");
    let key = rcgen::KeyPair::generate().expect("key");
    let c = params.self_signed(&key).expect("self-signed");
    (c.pem(), key.serialize_pem(), c.der().to_vec())
}

struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        let dir = common::tempdir_with(&["", "tls", "scan", "scan/sub", "legacy"]);
        Setup { dir }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// An alert command that appends each alert document (its stdin) and a newline to a
    /// log: (the command, the log).
    fn alert_hook(&self) -> (PathBuf, PathBuf) {
        let log = self.path("alerts.log");
        let hook = self.path("page.sh");
        write_exec(
            &hook,
            &format!("cat >> {log}\necho >> {log}\n", log = log.display()),
        );
        (hook, log)
    }

    /// State, socket, an unreachable CA, the managed certificate `www` (deployed, valid
    /// 90 days, not due), an exception, discovery of `scan/`, plus `extra`.
    fn config(&self, review_by: &str, extra: &str) {
        let d = self.dir.path().display();
        let text = format!(
            r#"state_dir = "{d}/state"
control_socket = "{d}/control.sock"

[ca.test]
directory = "https://127.0.0.1:9/dir"
accept_terms = true

[defaults]
owner = "platform@example.org"

[[certificate]]
name = "www"
domains = ["www.test"]
service = "nginx"
challenge = {{ type = "http-01", listen = "127.0.0.1:9" }}
files = {{ fullchain = "{d}/tls/www.pem", key = "{d}/tls/www.key" }}

[[exception]]
path = "{d}/legacy/appliance.pem"
owner = "netops@example.org"
reason = "vendor appliance, manual import only"
review_by = "{review_by}"

[discovery]
paths = ["{d}/scan", "{d}/tls"]
{extra}"#
        );
        fs::write(self.path("renewd.toml"), text).expect("config");
    }

    /// Deploys `www`, the exception's certificate, and a discovery tree holding: an
    /// unmanaged certificate expiring in 5 days (PEM, plus a symlink to it and a DER copy
    /// of another), a private key, and unrelated files.
    fn files(&self) {
        let t = now_secs();
        let (pem, key, _) = cert(&["www.test"], t - DAY, t + 89 * DAY);
        fs::write(self.path("tls/www.pem"), pem).expect("write");
        fs::write(self.path("tls/www.key"), key).expect("write");
        let (pem, _, _) = cert(&["appliance.test"], t - 100 * DAY, t + 265 * DAY);
        fs::write(self.path("legacy/appliance.pem"), pem).expect("write");
        let (pem, key, _) = cert(&["old.test"], t - 85 * DAY, t + 5 * DAY);
        fs::write(self.path("scan/old.pem"), &pem).expect("write");
        std::os::unix::fs::symlink(
            self.path("scan/old.pem"),
            self.path("scan/sub/old-link.pem"),
        )
        .expect("symlink");
        fs::write(self.path("scan/old.key"), key).expect("write");
        let (_, _, der) = cert(&["der.test"], t - DAY, t + 300 * DAY);
        fs::write(self.path("scan/sub/other.der"), der).expect("write");
        fs::write(self.path("scan/nginx.conf"), "server { listen 443 ssl; }\n").expect("write");
        fs::write(
            self.path("scan/sub/random.bin"),
            [0x30u8, 0x82, 0x00, 0x10, 0x02, 0x01],
        )
        .expect("write");
        // A link out of the tree is not followed.
        std::os::unix::fs::symlink(self.path("legacy"), self.path("scan/sub/outside"))
            .expect("symlink");
    }

    fn renewd(&self, args: &[&str]) -> Output {
        let out = Command::new(renewd_bin())
            .args(args)
            .arg("--config")
            .arg(self.path("renewd.toml"))
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

    fn inventory(&self) -> Value {
        let out = self.renewd(&["inventory", "--json"]);
        assert!(out.status.success());
        serde_json::from_slice(&out.stdout).expect("inventory JSON")
    }

    fn spawn(&self) -> DaemonProc {
        spawn_daemon(
            &self.path("renewd.toml"),
            &self.path("control.sock"),
            self.path("daemon.log"),
            &[],
        )
    }
}

fn by_kind<'a>(inv: &'a Value, kind: &str) -> Vec<&'a Value> {
    inv["certificates"]
        .as_array()
        .expect("certificates")
        .iter()
        .filter(|c| c["kind"] == kind)
        .collect()
}

fn paths(item: &Value) -> Vec<String> {
    item["paths"]
        .as_array()
        .expect("paths")
        .iter()
        .map(|p| p.as_str().expect("path").to_string())
        .collect()
}

#[test]
fn inventory_classifies_managed_exception_and_unmanaged_certificates() {
    let s = Setup::new();
    s.config("2099-01-01", "");
    s.files();
    let inv = s.inventory();
    assert_eq!(inv["version"], 1);

    let managed = by_kind(&inv, "managed");
    assert_eq!(managed.len(), 1, "{inv:#}");
    let www = managed[0];
    assert_eq!(www["name"], "www");
    assert_eq!(www["owner"], "platform@example.org");
    assert_eq!(www["service"], "nginx");
    assert_eq!(www["names"], serde_json::json!(["www.test"]));
    assert_eq!(www["days_left"], 88);
    assert_eq!(www["next_renewal_reason"], "renew_before threshold");
    assert!(www["next_renewal"].as_u64().expect("next") > now_secs());

    let exceptions = by_kind(&inv, "exception");
    assert_eq!(exceptions.len(), 1);
    let ex = exceptions[0];
    assert_eq!(
        paths(ex),
        [s.path("legacy/appliance.pem").display().to_string()]
    );
    assert_eq!(ex["owner"], "netops@example.org");
    assert_eq!(ex["review_by"], "2099-01-01");
    assert_eq!(ex["reason"], "vendor appliance, manual import only");
    assert_eq!(ex["names"], serde_json::json!(["appliance.test"]));

    // Unmanaged: the 5-day certificate under both its names, and the DER one; not the key,
    // not the unrelated files, not the managed files in tls/, nothing through the link
    // that leads out of the tree.
    let unmanaged = by_kind(&inv, "unmanaged");
    assert_eq!(unmanaged.len(), 2, "{inv:#}");
    let old = unmanaged
        .iter()
        .find(|u| u["names"] == serde_json::json!(["old.test"]))
        .expect("old.test found");
    assert_eq!(
        paths(old),
        [
            s.path("scan/old.pem").display().to_string(),
            s.path("scan/sub/old-link.pem").display().to_string()
        ]
    );
    assert_eq!(old["days_left"], 4);
    assert!(old["owner"].is_null());
    let der = unmanaged
        .iter()
        .find(|u| u["names"] == serde_json::json!(["der.test"]))
        .expect("DER certificate found");
    assert_eq!(
        paths(der),
        [s.path("scan/sub/other.der").display().to_string()]
    );
    assert_eq!(inv["discovery"]["files_scanned"], 6, "{inv:#}");

    // The table names all three.
    let out = s.renewd(&["inventory"]);
    assert!(out.status.success());
    let table = String::from_utf8_lossy(&out.stdout);
    for word in [
        "managed",
        "exception",
        "unmanaged",
        "www",
        "netops@example.org",
        "old.pem",
    ] {
        assert!(table.contains(word), "{word} in\n{table}");
    }
}

#[test]
fn check_requires_an_owner_for_every_certificate() {
    let s = Setup::new();
    s.config("2099-01-01", "");
    s.files();
    let ok = s.renewd(&["check"]);
    assert_eq!(ok.status.code(), Some(0));
    let text = fs::read_to_string(s.path("renewd.toml"))
        .expect("read")
        .replace("owner = \"platform@example.org\"\n", "");
    fs::write(s.path("renewd.toml"), text).expect("write");
    // A warning (renewing goes on): exit 0, 78 with --strict.
    assert_eq!(s.renewd(&["check"]).status.code(), Some(0));
    let out = s.renewd(&["check", "--strict"]);
    assert_eq!(out.status.code(), Some(78));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let at = format!("{}:10:1:", s.path("renewd.toml").display());
    assert!(
        stdout.contains(&at) && stdout.contains("has no `owner`"),
        "{stdout}"
    );
}

/// A real HTTP listener that records every POST body and answers 200.
fn webhook() -> (u16, Arc<Mutex<Vec<String>>>) {
    let port = free_port();
    let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind");
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let seen = bodies.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut len = 0usize;
            let mut first = String::new();
            reader.read_line(&mut first).expect("request line");
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).expect("header") == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().expect("length");
                }
            }
            let mut body = vec![0; len];
            reader.read_exact(&mut body).expect("body");
            assert!(first.starts_with("POST /hook "), "{first}");
            seen.lock()
                .expect("lock")
                .push(String::from_utf8(body).expect("utf8"));
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    (port, bodies)
}

fn command_log(path: &Path) -> Vec<Value> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("alert JSON from stdin"))
        .collect()
}

fn parsed(bodies: &Arc<Mutex<Vec<String>>>) -> Vec<Value> {
    bodies
        .lock()
        .expect("lock")
        .iter()
        .map(|b| serde_json::from_str(b).expect("webhook JSON"))
        .collect()
}

fn keyed(alerts: &[Value]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = alerts
        .iter()
        .map(|a| {
            (
                a["key"].as_str().expect("key").to_string(),
                a["status"].as_str().expect("status").to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn daemon_alerts_once_through_command_and_webhook_and_resolves() {
    let s = Setup::new();
    let (port, bodies) = webhook();
    let (hook, log) = s.alert_hook();
    let alert = format!(
        "\n[alert]\ncommand = [\"{}\"]\nwebhook = \"http://127.0.0.1:{port}/hook\"\n",
        hook.display()
    );
    s.config("2020-01-01", &alert);
    s.files();
    let old_key = format!("expiring:unmanaged:{}", s.path("scan/old.pem").display());
    let review_key = format!(
        "review_overdue:exception:{}",
        s.path("legacy/appliance.pem").display()
    );

    let mut d = s.spawn();
    wait_until(
        Duration::from_secs(20),
        "two alerts by command and webhook",
        || command_log(&log).len() >= 2 && parsed(&bodies).len() >= 2,
    );
    let by_command = command_log(&log);
    let by_webhook = parsed(&bodies);
    assert_eq!(
        keyed(&by_command),
        [
            (old_key.clone(), "firing".to_string()),
            (review_key.clone(), "firing".to_string())
        ]
    );
    // The webhook got the very same documents.
    let mut a = by_command.clone();
    let mut b = by_webhook.clone();
    a.sort_by_key(|v| v["key"].to_string());
    b.sort_by_key(|v| v["key"].to_string());
    assert_eq!(a, b);
    let old = by_command
        .iter()
        .find(|a| a["key"] == old_key.as_str())
        .expect("old");
    assert_eq!(old["condition"], "expiring");
    assert_eq!(old["kind"], "unmanaged");
    assert_eq!(old["days_left"], 4);
    let review = by_command
        .iter()
        .find(|a| a["key"] == review_key.as_str())
        .expect("review");
    assert_eq!(review["owner"], "netops@example.org");
    assert_eq!(review["review_by"], "2020-01-01");
    // What was sent is saved on its own blocking task, beside the deliveries: wait for it.
    common::wait_until(
        Duration::from_secs(10),
        "state/alerts.json to be saved",
        || s.path("state/alerts.json").exists(),
    );
    // The inventory shows what is firing.
    let inv = s.inventory();
    assert_eq!(
        by_kind(&inv, "exception")[0]["alerts"],
        serde_json::json!(["review_overdue"])
    );

    // A restart does not alert again: the next thing delivered is the resolution of the
    // expiring certificate, replaced by a fresh one (a discovery file event).
    d.stop();
    let mut d = s.spawn();
    let t = now_secs();
    let (pem, _, _) = cert(&["old.test"], t - DAY, t + 89 * DAY);
    fs::write(s.path("scan/old.pem.tmp"), pem).expect("write");
    fs::rename(s.path("scan/old.pem.tmp"), s.path("scan/old.pem")).expect("rename");
    wait_until(Duration::from_secs(20), "the resolution", || {
        command_log(&log).len() >= 3 && parsed(&bodies).len() >= 3
    });
    let third = &command_log(&log)[2];
    assert_eq!(third["key"], old_key.as_str());
    assert_eq!(third["status"], "resolved");

    // The exception reviewed: SIGHUP with a new date resolves it too.
    s.config("2099-01-01", &alert);
    d.signal(nix::sys::signal::Signal::SIGHUP);
    wait_until(Duration::from_secs(20), "the review resolution", || {
        command_log(&log).len() >= 4 && parsed(&bodies).len() >= 4
    });
    let all = command_log(&log);
    assert_eq!(all.len(), 4, "{all:#?}");
    assert_eq!(all[3]["key"], review_key.as_str());
    assert_eq!(all[3]["status"], "resolved");
    assert_eq!(parsed(&bodies).len(), 4);
    d.stop();
}

#[test]
fn metrics_are_served_with_the_spec_names() {
    let s = Setup::new();
    let port = free_port();
    let (hook, log) = s.alert_hook();
    s.config(
        "2020-01-01",
        &format!(
            "\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n\n[alert]\ncommand = [\"{}\"]\n",
            hook.display()
        ),
    );
    s.files();
    let renewed_at = metrics_fixture(&s);
    let mut daemon = s.spawn();
    let url = format!("http://127.0.0.1:{port}/metrics");
    let mut body = String::new();
    wait_until(Duration::from_secs(30), "a failed renewal counted", || {
        body = http_request("GET", &url, None, None)
            .map(|r| r.body)
            .unwrap_or_default();
        body.contains("renewd_renewals_total{name=\"api\",result=\"failure\"} 1")
    });
    eprintln!("{body}");
    metric_names_and_labels_are_the_spec_ones(&s, &body, renewed_at);
    scrape_formats_follow_accept(&url);
    // The failing certificate with nothing deployed alerts.
    wait_until(Duration::from_secs(20), "renewal_failing alert", || {
        command_log(&log)
            .iter()
            .any(|a| a["condition"] == "renewal_failing" && a["name"] == "api")
    });
    daemon.stop();
}

/// A second certificate `api` with nothing deployed: due now, and its renewal fails (the
/// CA's port is closed); a second CA, paused; `www` renewed a day ago. Returns when.
fn metrics_fixture(s: &Setup) -> u64 {
    // A second certificate with nothing deployed: due now, and its renewal fails (the CA's
    // port is closed), which counts in renewd_renewals_total and alerts at once.
    let d = s.path("");
    let mut text = fs::read_to_string(s.path("renewd.toml")).expect("read");
    text = text.replace(
        "[[exception]]",
        &format!(
            "[[certificate]]\nname = \"api\"\ndomains = [\"api.test\"]\nchallenge = {{ type = \"http-01\", listen = \"127.0.0.1:9\" }}\nfiles = {{ fullchain = \"{d}tls/api.pem\", key = \"{d}tls/api.key\" }}\n\n[[exception]]",
            d = d.display()
        ),
    );
    // A second CA, unused and paused (as a long Retry-After leaves it): renewd_ca_paused.
    text = text.replace(
        "[defaults]",
        "[ca.paused]\ndirectory = \"https://127.0.0.1:9/other\"\naccept_terms = true\n\n[defaults]\nca = [\"test\"]",
    );
    fs::write(s.path("renewd.toml"), text).expect("write");
    // www was renewed successfully once (its record says when): last_success.
    for dir in ["state", "state/accounts", "state/certs"] {
        fs::create_dir_all(s.path(dir)).expect("mkdir");
        fs::set_permissions(s.path(dir), fs::Permissions::from_mode(0o700)).expect("chmod");
    }
    let renewed_at = now_secs() - DAY;
    fs::write(
        s.path("state/certs/www.json"),
        format!(r#"{{"history":[{{"at":{renewed_at},"ok":true,"message":"renewed"}}]}}"#),
    )
    .expect("record");
    fs::write(
        s.path("state/accounts/paused.pause"),
        format!(r#"{{"until":{},"why":"HTTP 429"}}"#, now_secs() + 3 * 3600),
    )
    .expect("pause file");
    renewed_at
}

/// The families, names and labels of the spec, in the scrape `body`.
fn metric_names_and_labels_are_the_spec_ones(s: &Setup, body: &str, renewed_at: u64) {
    for needle in [
        "renewd_certificate_not_after_seconds{name=\"www\",owner=\"platform@example.org\",service=\"nginx\"} ",
        "renewd_certificate_next_renewal_seconds{name=\"www\",reason=\"renew_before threshold\"} ",
        "renewd_renewal_consecutive_failures{name=\"api\"} 1",
        "renewd_renewal_consecutive_failures{name=\"www\"} 0",
        "renewd_reloads_total{result=\"success\"} 0",
        "renewd_reloads_total{result=\"failure\"} 0",
        "renewd_exception_review_by_seconds{path=",
        ",kind=\"managed\"} ",
        ",kind=\"exception\"} ",
        ",kind=\"unmanaged\"} ",
    ] {
        assert!(body.contains(needle), "{needle} in\n{body}");
    }
    let www_pem = format!(
        "renewd_inventory_not_after_seconds{{path=\"{}\",kind=\"managed\"}}",
        s.path("tls/www.pem").display()
    );
    assert!(body.contains(&www_pem), "{www_pem}");
    assert!(!body.contains("www.key"), "key files carry no expiry");
    // The new families; the failing certificate's reason is one fixed value, not a count.
    for needle in [
        format!(
            "renewd_build_info{{version=\"{}\"}} 1\n",
            env!("CARGO_PKG_VERSION")
        ),
        format!("renewd_certificate_last_success_seconds{{name=\"www\"}} {renewed_at}\n"),
        "renewd_ca_paused{ca=\"paused\"} 1\n".to_string(),
        "renewd_ca_paused{ca=\"test\"} 0\n".to_string(),
        "renewd_certificate_next_renewal_seconds{name=\"api\",reason=\"retry\"} ".to_string(),
    ] {
        assert!(body.contains(&needle), "{needle} in\n{body}");
    }
    assert!(!body.contains("failure(s)"), "no count in a label:\n{body}");
}

/// No Accept or text: the classic text format (promtool accepts it); Prometheus' own
/// Accept: OpenMetrics.
fn scrape_formats_follow_accept(url: &str) {
    // No Accept (curl, promtool): the classic text format, which promtool accepts.
    let plain = http_get_with_accept(url, None);
    assert!(
        plain.0.starts_with("text/plain; version=0.0.4"),
        "{}",
        plain.0
    );
    assert!(!plain.1.contains("# EOF"), "{}", plain.1);
    assert!(
        plain.1.contains("# TYPE renewd_renewals_total counter\n"),
        "{}",
        plain.1
    );
    promtool_check_metrics(&plain.1);
    // Prometheus' own Accept: OpenMetrics.
    let om = http_get_with_accept(
        url,
        Some("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"),
    );
    assert!(
        om.0.starts_with("application/openmetrics-text; version=1.0.0"),
        "{}",
        om.0
    );
    assert!(om.1.ends_with("# EOF\n"), "{}", om.1);
    assert!(
        om.1.contains("# TYPE renewd_renewals counter\n"),
        "{}",
        om.1
    );
    // Asked for text explicitly, text.
    let text = http_get_with_accept(url, Some("text/plain;version=0.0.4"));
    assert!(
        text.0.starts_with("text/plain; version=0.0.4"),
        "{}",
        text.0
    );
}

/// `GET url` over plain HTTP/1.1 with `Accept: accept` (or none): (content type, body).
fn http_get_with_accept(url: &str, accept: Option<&str>) -> (String, String) {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").expect("http URL");
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let mut conn = std::net::TcpStream::connect(authority).expect("connect");
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let accept = accept.map_or(String::new(), |a| format!("Accept: {a}\r\n"));
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\n{accept}Connection: close\r\n\r\n"
    )
    .expect("send");
    let mut raw = String::new();
    conn.read_to_string(&mut raw).expect("read");
    let (head, body) = raw.split_once("\r\n\r\n").expect("a response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let content_type = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-type")
                .then(|| v.trim().to_string())
        })
        .expect("content-type");
    (content_type, body.to_string())
}

/// `promtool check metrics` (Debian's `prometheus` package) on `exposition`: it must pass
/// (exit 0), lint included.
fn promtool_check_metrics(exposition: &str) {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; scripts/fetch-test-deps.sh installs it)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(exposition.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool check metrics failed: {}{}\non\n{exposition}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A certificate a person renews needs lead time in absolute terms: an unmanaged 5-day
/// certificate with 5 days left alerts (the old window, a third of its lifetime, did not).
#[test]
fn an_unmanaged_short_lived_certificate_alerts_with_days_to_act() {
    let s = Setup::new();
    let (hook, log) = s.alert_hook();
    s.config(
        "2099-01-01",
        &format!("\n[alert]\ncommand = [\"{}\"]\n", hook.display()),
    );
    s.files();
    let t = now_secs();
    let (pem, _, _) = cert(&["short.test"], t - 60, t + 5 * DAY - 60);
    fs::write(s.path("scan/short.pem"), pem).expect("write");
    let short_key = format!("expiring:unmanaged:{}", s.path("scan/short.pem").display());
    let _d = s.spawn();
    wait_until(
        Duration::from_secs(20),
        "the short certificate's alert",
        || {
            command_log(&log)
                .iter()
                .any(|a| a["key"] == short_key.as_str())
        },
    );
    let alerts = command_log(&log);
    let short = alerts
        .iter()
        .find(|a| a["key"] == short_key.as_str())
        .expect("short");
    assert_eq!(short["condition"], "expiring");
    assert_eq!(short["days_left"], 4);
    // The exception, 265 days from expiry, is outside its 30 days.
    assert!(
        alerts.iter().all(|a| a["kind"] != "exception"),
        "{alerts:?}"
    );
}

/// A file planted under a discovery path with terminal escapes and a newline in its name
/// (and, in its certificate, a name with an escape): `renewd inventory`'s table shows them
/// escaped (`\x1b`, `\n`), so they can neither drive the terminal nor forge a row; the
/// JSON keeps the exact names.
#[test]
fn inventory_table_escapes_control_characters_in_names() {
    let s = Setup::new();
    s.config("2099-01-01", "");
    s.files();
    let t = now_secs();
    let evil_name = "evil\x1b[2J\nmanaged  www  FAKE\u{202e}.pem";
    let (pem, _, _) = cert(&["bell\x07.test"], t - DAY, t + 30 * DAY);
    fs::write(s.path("scan").join(evil_name), pem).expect("write");

    let out = s.renewd(&["inventory"]);
    assert!(out.status.success());
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        !table
            .chars()
            .any(|c| c.is_control() && c != '\n' || c == '\u{202e}'),
        "a control character reached the table:\n{table:?}"
    );
    assert!(
        table.contains("evil\\x1b[2J\\nmanaged  www  FAKE\\u{202e}.pem"),
        "{table}"
    );
    assert!(table.contains("bell\\x07.test"), "{table}");
    assert!(
        !table.lines().any(|l| l.starts_with("managed  www  FAKE")),
        "a forged row:\n{table}"
    );

    let inv = s.inventory();
    let planted = by_kind(&inv, "unmanaged")
        .into_iter()
        .find(|u| paths(u).iter().any(|p| p.ends_with(evil_name)));
    assert!(planted.is_some(), "the JSON keeps the exact name: {inv:#}");
}

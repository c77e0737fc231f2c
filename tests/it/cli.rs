//! The command line as users meet it, through the real binary: exit codes (2 for a bad
//! command line, an unknown certificate name included, before anything is created),
//! `--config` before or after the subcommand, `help`, `account show` offline, `status`
//! marking an expired certificate, shell completions (no hidden subcommands; certificate
//! names completed by a real bash), and the journal fields of the renewal lines, read at
//! the datagram level from a socket standing in for journald's.

use crate::common;
use crate::common::rig;

use std::fs;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

use common::{renewd_bin, PebbleOptions};
use rig::Rig;

/// A configuration with two certificates (`www`, `api`) and two CAs, nothing deployed; no
/// server is ever contacted by the commands below.
fn setup() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    fs::create_dir_all(d.join("tls")).expect("mkdir");
    for p in [d.to_path_buf(), d.join("tls")] {
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let cfg = d.join("renewd.toml");
    let mut text = format!(
        r#"state_dir = "{d}/state"
control_socket = "{d}/run/control.sock"
[ca.one]
directory = "https://127.0.0.1:9/one"
accept_terms = true
[ca.two]
directory = "https://127.0.0.1:9/two"
accept_terms = true
[defaults]
owner = "ops@example.org"
ca = ["one"]
"#,
        d = d.display()
    );
    for name in ["www", "api"] {
        text.push_str(&format!(
            r#"[[certificate]]
name = "{name}"
domains = ["{name}.test"]
challenge = {{ type = "http-01", listen = "127.0.0.1:5002" }}
files = {{ fullchain = "{d}/tls/{name}.pem", key = "{d}/tls/{name}.key" }}
"#,
            d = d.display()
        ));
    }
    fs::write(&cfg, text).expect("write config");
    (dir, cfg)
}

fn renewd(args: &[&str]) -> Output {
    Command::new(renewd_bin())
        .args(args)
        .env_remove("RENEWD_CONFIG")
        .env_remove("JOURNAL_STREAM")
        .stdin(Stdio::null())
        .output()
        .expect("run renewd")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn an_unknown_certificate_name_exits_2_with_a_suggestion_and_creates_nothing() {
    let (dir, cfg) = setup();
    let cfg = cfg.to_str().expect("utf-8 path");
    for args in [
        &["renew", "wwww", "--config", cfg][..],
        &["renew", "--force", "--config", cfg, "www", "wwww"][..],
        &["status", "wwww", "--config", cfg][..],
        &["revoke", "wwww", "--config", cfg][..],
    ] {
        let out = renewd(args);
        let all = text(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {all}");
        assert!(
            all.contains("`wwww` (did you mean `www`?)"),
            "{args:?}: {all}"
        );
        assert!(!all.contains("`www` ("), "www is known: {all}");
        assert!(
            !dir.path().join("state").exists(),
            "{args:?} created the state directory"
        );
    }
    // A name close to nothing gets the list of configured names instead.
    let out = renewd(&["renew", "zzzzzzzz", "--config", cfg]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out)
            .contains("no certificate named `zzzzzzzz` in the configuration; configured: www, api"),
        "{}",
        text(&out)
    );
}

#[test]
fn renew_without_names_says_to_use_all() {
    let out = renewd(&["renew"]);
    assert_eq!(out.status.code(), Some(2));
    let all = text(&out);
    assert!(all.contains("--all"), "{all}");
    assert!(all.contains("renewd renew"), "the renew usage: {all}");
}

#[test]
fn config_is_accepted_before_and_after_the_subcommand() {
    let (_dir, cfg) = setup();
    let cfg = cfg.to_str().expect("utf-8 path");
    for args in [
        &["--config", cfg, "check"][..],
        &["check", "--config", cfg][..],
    ] {
        let out = renewd(args);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", text(&out));
        assert!(String::from_utf8_lossy(&out.stdout).contains("ok (2 certificate(s)"));
    }
    let out = renewd(&["--config", cfg, "status", "--names"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "www\napi\n");
}

#[test]
fn help_of_help_and_of_subcommands() {
    let out = renewd(&["help", "--help"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("Usage: renewd help"), "{}", text(&out));
    let out = renewd(&["help", "renew"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out).contains("--all"), "{}", text(&out));
    let out = renewd(&["help", "frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn account_show_reads_the_stored_accounts_without_the_ca() {
    let (dir, cfg) = setup();
    let cfg = cfg.to_str().expect("utf-8 path");
    // Two CAs, neither reachable, no --ca: every CA's account is shown.
    let accounts = dir.path().join("state/accounts");
    fs::create_dir_all(&accounts).expect("mkdir");
    fs::write(
        accounts.join("one.json"),
        r#"{"directory": "https://127.0.0.1:9/one",
            "credentials": {"id": "https://127.0.0.1:9/acct/17", "key_pkcs8": "", "directory": null}}"#,
    )
    .expect("account file");
    let out = renewd(&["account", "show", "--config", cfg]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(
        all.contains("CA one: account https://127.0.0.1:9/acct/17"),
        "{all}"
    );
    assert!(all.contains("CA two: no account yet"), "{all}");
    let out = renewd(&["account", "show", "--ca", "two", "--config", cfg]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(!text(&out).contains("CA one"), "{}", text(&out));
    let out = renewd(&["account", "show", "--ca", "three", "--config", cfg]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

#[test]
fn status_marks_an_expired_certificate() {
    let (dir, cfg) = setup();
    let d = dir.path();
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let mut params = rcgen::CertificateParams::new(vec!["www.test".to_string()]).expect("params");
    params.not_before = time::OffsetDateTime::from_unix_timestamp(now - 90 * 86400).expect("nb");
    params.not_after = time::OffsetDateTime::from_unix_timestamp(now - 86400).expect("na");
    let key = rcgen::KeyPair::generate().expect("key");
    let c = params.self_signed(&key).expect("self-signed");
    fs::write(d.join("tls/www.pem"), c.pem()).expect("cert");
    fs::write(d.join("tls/www.key"), key.serialize_pem()).expect("key");
    let out = renewd(&["status", "--config", cfg.to_str().expect("utf-8")]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    let www = all.split("\napi\n").next().expect("www's rows");
    assert!(www.contains("(EXPIRED)"), "{all}");
    assert!(!all
        .split("\napi\n")
        .nth(1)
        .unwrap_or("")
        .contains("EXPIRED"));
    let out = renewd(&["status", "--json", "--config", cfg.to_str().expect("utf-8")]);
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(rows[0]["name"], "www");
    assert_eq!(rows[0]["expired"], true, "{rows}");
    assert_eq!(rows[1]["expired"], false, "{rows}");
}

#[test]
fn completions_hide_manpage_and_complete_certificate_names() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = renewd(&["completions", shell]);
        assert_eq!(out.status.code(), Some(0));
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(
            !script.contains("manpage"),
            "{shell} offers the hidden manpage"
        );
        assert!(script.contains("check"), "{shell}: {script}");
        if ["bash", "zsh", "fish"].contains(&shell) {
            assert!(
                script.contains("renewd status --names"),
                "{shell}: {script}"
            );
        }
    }
    // A real bash completes `renewd renew <TAB>` with the configured names.
    let (dir, cfg) = setup();
    let script = dir.path().join("renewd.bash");
    fs::write(&script, renewd(&["completions", "bash"]).stdout).expect("script");
    let bin_dir = renewd_bin().parent().expect("bin dir").to_path_buf();
    let complete = |words: &str, cword: usize| {
        let out = Command::new("bash")
            .arg("-c")
            .arg(format!(
                "source {}; COMP_WORDS=({words}); COMP_CWORD={cword}; \
                 COMP_LINE=\"${{COMP_WORDS[*]}}\"; COMP_POINT=${{#COMP_LINE}}; \
                 _renewd_with_names renewd \"${{COMP_WORDS[COMP_CWORD]}}\" \
                 \"${{COMP_WORDS[COMP_CWORD-1]}}\"; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
                script.display()
            ))
            .env(
                "PATH",
                format!(
                    "{}:{}",
                    bin_dir.display(),
                    std::env::var("PATH").unwrap_or_default()
                ),
            )
            .env("RENEWD_CONFIG", &cfg)
            .output()
            .expect("bash");
        let mut got: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect();
        got.sort();
        got
    };
    assert_eq!(complete("renewd renew ''", 2), ["api", "www"]);
    assert_eq!(complete("renewd status --json w", 3), ["www"]);
    let options = complete("renewd renew --", 2);
    assert!(options.contains(&"--all".to_string()), "{options:?}");
    let subcommands = complete("renewd ''", 1);
    assert!(
        subcommands.contains(&"check".to_string()),
        "{subcommands:?}"
    );
    assert!(
        !subcommands.contains(&"manpage".to_string()),
        "{subcommands:?}"
    );
}

/// A journal entry: its fields in order, as (name, value).
type Entry = Vec<(String, String)>;

/// One journal entry as sent over the native protocol
/// (<https://systemd.io/JOURNAL_NATIVE_PROTOCOL/>): `KEY=value` lines, or `KEY`, a 64-bit
/// little-endian length and the value.
fn parse_entry(mut buf: &[u8]) -> Entry {
    let mut fields = Vec::new();
    while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
        let line = &buf[..nl];
        buf = &buf[nl + 1..];
        if let Some(eq) = line.iter().position(|&b| b == b'=') {
            fields.push((
                String::from_utf8_lossy(&line[..eq]).into_owned(),
                String::from_utf8_lossy(&line[eq + 1..]).into_owned(),
            ));
            continue;
        }
        let len = u64::from_le_bytes(buf[..8].try_into().expect("length")) as usize;
        let value = &buf[8..8 + len];
        fields.push((
            String::from_utf8_lossy(line).into_owned(),
            String::from_utf8_lossy(value).into_owned(),
        ));
        buf = &buf[8 + len + 1..];
    }
    fields
}

fn field<'e>(entry: &'e [(String, String)], name: &str) -> Option<&'e str> {
    entry
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// `renewd run --once` as systemd would start it (stderr a journal stream), in a private
/// mount namespace where journald's socket path is a datagram socket of this test: one
/// certificate is issued through Pebble, one cannot be renewed as configured (its target
/// directory is missing). The entries must carry `CERT=`, `CA=`, `ORDER=`, `ERROR=` (no
/// `F_` prefix), INFO at priority 6, and MESSAGE naming the certificate and the reason.
#[test]
fn journal_entries_carry_cert_ca_order_error_and_name_the_certificate_in_message() {
    let rig = Rig::new(PebbleOptions::default());
    let mut body = rig.cert("www", &["www.test"], "");
    body.push_str(
        &rig.cert("gone", &["gone.test"], "")
            .replace("/tls/", "/missing/"),
    );
    rig.write_config(&body);

    let (status, entries, stderr_text) = run_once_into_a_private_journal(&rig);
    let dump = entries
        .iter()
        .map(|e| format!("{e:?}"))
        .collect::<Vec<_>>()
        .join("\n");
    assert_eq!(
        status.code(),
        Some(1),
        "gone is due and not renewable\n{stderr_text}\n{dump}"
    );
    assert!(
        !entries.is_empty(),
        "nothing reached the journal socket: {stderr_text}"
    );
    assert!(
        Path::new(&rig.fullchain("www")).exists(),
        "www is issued although gone is not renewable\n{dump}"
    );

    for e in &entries {
        assert!(
            e.iter().all(|(k, _)| !k.starts_with("F_")),
            "prefixed field: {e:?}"
        );
        assert_eq!(field(e, "SYSLOG_IDENTIFIER"), Some("renewd"));
    }
    let find = |cert: &str, words: &[&str]| {
        entries
            .iter()
            .find(|e| {
                field(e, "CERT") == Some(cert)
                    && field(e, "MESSAGE").is_some_and(|m| words.iter().all(|w| m.contains(w)))
            })
            .unwrap_or_else(|| panic!("no entry with CERT={cert} and MESSAGE {words:?}:\n{dump}"))
    };
    let due = find("www", &["www", "renewal due"]);
    assert_eq!(field(due, "PRIORITY"), Some("6"), "INFO is informational");
    let renewed = find("www", &["www: certificate renewed and deployed", "pebble"]);
    assert_eq!(field(renewed, "CA"), Some("pebble"));
    assert_eq!(field(renewed, "PRIORITY"), Some("6"));
    let order = entries
        .iter()
        .find(|e| field(e, "ORDER").is_some())
        .unwrap_or_else(|| panic!("no ORDER= entry:\n{dump}"));
    assert_eq!(
        field(order, "CERT"),
        Some("www"),
        "the order's lines carry CERT="
    );
    assert_eq!(field(order, "CA"), Some("pebble"));
    let refused = find("gone", &["gone: due", "not renewable", "missing"]);
    assert_eq!(field(refused, "PRIORITY"), Some("3"));
    assert!(
        field(refused, "ERROR").is_some_and(|e| e.contains("does not exist")),
        "{refused:?}"
    );
    let warning = entries
        .iter()
        .find(|e| field(e, "MESSAGE").is_some_and(|m| m.contains(": warning: ")))
        .unwrap_or_else(|| panic!("the check's warning is logged:\n{dump}"));
    assert_eq!(field(warning, "PRIORITY"), Some("4"));
}

/// `renewd run --once` in a mount namespace of its own where journald's socket is a datagram
/// socket of this test, stderr a file that `JOURNAL_STREAM` names (so renewd logs to the
/// journal): its exit status, the journal entries it sent, and its stderr.
fn run_once_into_a_private_journal(rig: &Rig) -> (ExitStatus, Vec<Entry>, String) {
    let sock_path = rig.path("journal.sock");
    let journal = UnixDatagram::bind(&sock_path).expect("bind the journal socket");
    journal
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let stderr_path = rig.path("stderr.log");
    let stderr = fs::File::create(&stderr_path).expect("stderr file");
    let meta = fs::metadata(&stderr_path).expect("stat");
    let mut child = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(
            "mount -t tmpfs tmpfs /run && mkdir -p /run/systemd/journal && \
             touch /run/systemd/journal/socket && \
             mount --bind \"$0\" /run/systemd/journal/socket && exec \"$@\"",
        )
        .arg(&sock_path)
        .arg(renewd_bin())
        .args(["run", "--once", "--config"])
        .arg(&rig.config_path)
        .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("unshare renewd");

    let mut entries = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut buf = vec![0u8; 1 << 20];
    let status = loop {
        match journal.recv(&mut buf) {
            Ok(n) if n > 0 => entries.push(parse_entry(&buf[..n])),
            _ => {}
        }
        if let Some(status) = child.try_wait().expect("wait") {
            while let Ok(n) = journal.recv(&mut buf) {
                entries.push(parse_entry(&buf[..n]));
            }
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "renewd run --once did not finish"
        );
    };
    let mut stderr_text = String::new();
    fs::File::open(&stderr_path)
        .and_then(|mut f| f.read_to_string(&mut stderr_text))
        .expect("stderr");
    (status, entries, stderr_text)
}

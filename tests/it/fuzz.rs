//! Property tests over everything renewd reads from outside, on the stable toolchain
//! (proptest strategies driven for a time budget): the configuration loader, the PEM/DER
//! readers, state records, swap journals, the control protocol, and ACME answers from a
//! hostile CA (fields made huge, wrongly typed or out of range by the fault proxy in front
//! of a real Pebble). The property everywhere: no panic, an answer or a clear error, and
//! nothing outside renewd's own names touched.
//!
//! Each target runs for a short budget in the normal test command (3 s; the ACME target a
//! few cases). `RENEWD_LONG_TESTS=1` runs each for 120 s instead (`RENEWD_FUZZ_SECS`
//! overrides either). Inputs are drawn from a seeded generator; the seed is printed, and
//! `RENEWD_FUZZ_SEED=N` replays a run. Each target prints how many inputs it tried. A
//! failing input is printed with the seed and becomes a regression test in the module
//! that failed.

use crate::common;

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config as PtConfig, RngAlgorithm, TestRng, TestRunner};

use renewd::config;
use renewd::x509;

// ---------------------------------------------------------------------------------------
// The driver

fn long_mode() -> bool {
    std::env::var("RENEWD_LONG_TESTS").is_ok_and(|v| v == "1")
}

/// Seconds each target runs.
fn budget() -> Duration {
    let secs = std::env::var("RENEWD_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if long_mode() { 120 } else { 3 });
    Duration::from_secs(secs)
}

fn seed() -> u64 {
    common::seed::seed("RENEWD_FUZZ_SEED")
}

/// Draws inputs from `strategy` and checks `property` on each until `budget` (or `max`
/// inputs) is spent; panics, naming the seed and the input, at the first failure (a panic
/// inside `property` included). Returns how many inputs were tried.
fn fuzz<S: Strategy>(
    target: &str,
    budget: Duration,
    max: u64,
    strategy: S,
    mut property: impl FnMut(&S::Value) -> Result<(), String>,
) -> u64
where
    S::Value: std::fmt::Debug,
{
    let seed = seed();
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let mut runner = TestRunner::new_with_rng(
        PtConfig::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &bytes),
    );
    eprintln!("fuzz {target}: seed {seed} (RENEWD_FUZZ_SEED={seed} replays it), {budget:?}");
    let deadline = Instant::now() + budget;
    let mut runs = 0u64;
    while Instant::now() < deadline && runs < max {
        let input = strategy
            .new_tree(&mut runner)
            .expect("strategy draws")
            .current();
        let outcome = catch_unwind(AssertUnwindSafe(|| property(&input)));
        runs += 1;
        let failure = match outcome {
            Ok(Ok(())) => continue,
            Ok(Err(why)) => why,
            Err(panic) => format!(
                "panicked: {}",
                panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default()
            ),
        };
        panic!("fuzz {target}: input {runs} of seed {seed} fails: {failure}\ninput: {input:?}");
    }
    eprintln!("fuzz {target}: {runs} inputs, no failure");
    runs
}

/// One edit of a byte string: what, where (scaled to the input), how long, and bytes or a
/// token from [`HOSTILE`] to put there.
#[derive(Debug, Clone)]
struct Edit {
    op: u8,
    at: u32,
    len: u16,
    token: u8,
    bytes: Vec<u8>,
}

/// Values that break parsers: huge and negative numbers, wrong types, empty and huge
/// strings, control characters, unbalanced brackets.
const HOSTILE: &[&str] = &[
    "18446744073709551616",
    "-1",
    "9999999999999999999999999",
    "1e309",
    "-0",
    "0",
    "\"\"",
    "[",
    "]",
    "{",
    "}",
    "null",
    "true",
    "\"\\u0000\"",
    "\"\u{1b}[2J\"",
    "\"9999999999999d\"",
    "\"0s\"",
    "\"-5m\"",
    "=",
    "\n[[certificate]]\n",
    "\n[ca.x]\n",
    "'''",
    "\"\"\"",
    "\\",
    ",",
    ":",
    "-----BEGIN CERTIFICATE-----\n",
    "-----END CERTIFICATE-----\n",
    "-----BEGIN PRIVATE KEY-----\n",
    "\u{ffff}",
];

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    prop::collection::vec(
        (
            0u8..6,
            any::<u32>(),
            0u16..64,
            any::<u8>(),
            prop::collection::vec(any::<u8>(), 0..12),
        )
            .prop_map(|(op, at, len, token, bytes)| Edit {
                op,
                at,
                len,
                token,
                bytes,
            }),
        1..6,
    )
}

/// `base` with `edits` applied: insert bytes or a token, delete a range, duplicate a
/// range, flip a byte, truncate.
fn mutate(base: &[u8], edits: &[Edit]) -> Vec<u8> {
    let mut v = base.to_vec();
    for e in edits {
        let at = if v.is_empty() {
            0
        } else {
            e.at as usize % (v.len() + 1)
        };
        let end = (at + e.len as usize).min(v.len());
        match e.op {
            0 => {
                v.splice(at..at, e.bytes.iter().copied());
            }
            1 => {
                let token = HOSTILE[e.token as usize % HOSTILE.len()].as_bytes();
                v.splice(at..end, token.iter().copied());
            }
            2 => {
                v.drain(at..end);
            }
            3 => {
                let copy = v[at..end].to_vec();
                v.splice(at..at, copy);
            }
            4 => {
                if at < v.len() {
                    v[at] ^= e.token | 1;
                }
            }
            _ => v.truncate(at),
        }
    }
    v
}

// ---------------------------------------------------------------------------------------
// Configuration

const CONFIG: &str = r#"state_dir = "/var/lib/renewd"
control_socket = "/run/renewd/control.sock"
max_concurrent_renewals = 4

[metrics]
listen = "127.0.0.1:9443"

[alert]
command = ["/usr/local/bin/page-oncall"]

[ca.letsencrypt]
directory = "https://acme-v02.api.letsencrypt.org/directory"
contact = ["mailto:ops@example.org"]
accept_terms = true
timeout = "30s"

[defaults]
ca = ["letsencrypt"]
key_type = "ecdsa-p256"
renew_before = "1/3"
owner = "platform@example.org"

[[certificate]]
name = "www"
domains = ["example.org", "www.example.org", "192.0.2.1"]
service = "nginx"
challenge = { type = "http-01", webroot = "/var/www/html", trust_owner = false }
files = { fullchain = "/etc/nginx/tls/www.pem", key = "/etc/nginx/tls/www.key" }
user = "root"
key_mode = "0640"
reload = [["systemctl", "reload", "nginx"]]
verify = { connect = "127.0.0.1:443", server_name = "example.org", timeout = "10s" }

[[certificate]]
name = "wild"
domains = ["*.example.org"]
challenge = { type = "dns-01", hook = ["/usr/local/bin/dns-txt"], propagation_wait = "5s" }
files = { cert = "/etc/tls/w.crt", chain = "/etc/tls/w.chain", key = "/etc/tls/w.key", combined = "/etc/tls/w.all" }
renew_before = "30d"

[[exception]]
path = "/etc/appliance/legacy.pem"
owner = "netops@example.org"
reason = "vendor appliance"
review_by = "2027-03-01"

[discovery]
paths = ["/etc/ssl"]
"#;

/// Every mutated configuration either loads or is refused with problems that each point
/// into the file (line and column within it), one line each; never a panic.
#[test]
fn fuzz_configuration_loader() {
    // Loads the machine: no other heavy or timing-sensitive test meanwhile.
    let _heavy = common::serial::heavy();
    if let Err(e) =
        config::load_from_sources(&[(PathBuf::from("/etc/renewd/renewd.toml"), CONFIG.into())])
    {
        panic!("the base configuration does not load: {e}");
    }
    fuzz("config", budget(), u64::MAX, edits(), |e| {
        let text = String::from_utf8_lossy(&mutate(CONFIG.as_bytes(), e)).into_owned();
        let lines = text.lines().count() + 1;
        match config::load_from_sources(&[(PathBuf::from("/etc/renewd/renewd.toml"), text)]) {
            Ok(_) => Ok(()),
            Err(err) => {
                if err.problems.is_empty() {
                    return Err("refused without a problem".into());
                }
                for p in &err.problems {
                    let shown = p.to_string();
                    if !shown.starts_with("/etc/renewd/renewd.toml:") {
                        return Err(format!("problem without its file: {shown}"));
                    }
                    if p.location.line > lines {
                        return Err(format!("problem past the end of the file: {shown}"));
                    }
                }
                Ok(())
            }
        }
    });
}

// ---------------------------------------------------------------------------------------
// PEM and DER

fn sample_chain() -> (String, Vec<u8>, String) {
    let key = rcgen::KeyPair::generate().expect("key");
    let params =
        rcgen::CertificateParams::new(vec!["fuzz.example".to_string(), "127.0.0.1".to_string()])
            .expect("params");
    let cert = params.self_signed(&key).expect("self-signed");
    let pem = format!("{}{}", cert.pem(), cert.pem());
    (pem, cert.der().to_vec(), key.serialize_pem())
}

/// The certificate and key readers on mutated PEM and DER: an error or a value, never a
/// panic; whatever parses can be asked its names, dates and key match.
#[test]
fn fuzz_pem_and_der_readers() {
    // Loads the machine: no other heavy or timing-sensitive test meanwhile.
    let _heavy = common::serial::heavy();
    let (pem, der, key_pem) = sample_chain();
    let strategy = (0u8..3, edits());
    fuzz("pem-der", budget(), u64::MAX, strategy, |(which, e)| {
        match which {
            0 => {
                let bytes = mutate(pem.as_bytes(), e);
                if let Ok(ders) = x509::pem_certificates(&bytes) {
                    for d in ders {
                        if let Ok(info) = x509::CertInfo::parse_der(&d) {
                            let _ = info.covers(&["fuzz.example".into()]);
                            let _ = info.lifetime();
                            let _ = info.is_valid_at(SystemTime::now());
                        }
                    }
                }
            }
            1 => {
                let bytes = mutate(&der, e);
                if let Ok(info) = x509::CertInfo::parse_der(&bytes) {
                    let _ = info.missing_names(&["other.example".into()]);
                    let _ = x509::verify_issued_by(&bytes, &der);
                }
            }
            _ => {
                let bytes = mutate(key_pem.as_bytes(), e);
                if let Ok(key) = x509::pem_private_key(&bytes) {
                    let _ = key.describe();
                    if let Ok(info) = x509::CertInfo::parse_der(&der) {
                        let _ = key.matches(&info);
                    }
                }
            }
        }
        Ok(())
    });
}

// ---------------------------------------------------------------------------------------
// State records

/// A configuration whose one certificate `www` is deployed nowhere, state in `dir`.
fn state_config(dir: &Path) -> config::Config {
    let text = format!(
        "state_dir = \"{d}/state\"\ncontrol_socket = \"{d}/ctl.sock\"\n\
         [ca.x]\ndirectory = \"https://127.0.0.1:9/dir\"\naccept_terms = true\n\
         [[certificate]]\nname = \"www\"\ndomains = [\"www.test\"]\nowner = \"o@example.org\"\n\
         challenge = {{ type = \"http-01\", listen = \"127.0.0.1:9\" }}\n\
         files = {{ fullchain = \"{d}/www.pem\", key = \"{d}/www.key\" }}\n",
        d = dir.display()
    );
    config::load_from_sources(&[(dir.join("renewd.toml"), text)]).expect("config")
}

const RECORD: &str = r#"{"consecutive_failures":3,"last_failure":1700000000,"retry_after":1700003600,
"issued_by":"x","serial":"0a1b","history":[{"at":1700000000,"ok":false,"message":"boom"}],
"ari":{"serial":"0a1b","window":[1700000000,1700086400],"chosen":1700040000,
"next_poll":1700010000,"explanation_url":"https://ca.example/why","error":null}}"#;

/// A state record as anyone with access to the state directory (or a torn disk) may leave
/// it, mutated bytes and out-of-range numbers: loading it, deciding when the certificate is
/// due, and showing its status row never panic.
#[test]
fn fuzz_state_records() {
    // Loads the machine: no other heavy or timing-sensitive test meanwhile.
    let _heavy = common::serial::heavy();
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = state_config(dir.path());
    let state = renewd::state::StateDir::open(&cfg.state_dir).expect("state dir");
    let cert = cfg.certificate("www").expect("www").clone();
    let record_path = cfg.state_dir.join("certs/www.json");
    let numbers = prop::collection::vec(
        prop_oneof![
            Just(u64::MAX),
            Just(u64::MAX / 2),
            Just(i64::MAX as u64),
            Just(0u64),
            any::<u64>()
        ],
        6,
    );
    let strategy = (edits(), numbers, any::<bool>());
    fuzz(
        "state",
        budget(),
        u64::MAX,
        strategy,
        |(e, n, structured)| {
            let bytes = if *structured {
                let mut v: serde_json::Value = serde_json::from_str(RECORD).expect("record");
                v["last_failure"] = n[0].into();
                v["retry_after"] = n[1].into();
                v["history"][0]["at"] = n[2].into();
                v["ari"]["window"] = serde_json::json!([n[3], n[4]]);
                v["ari"]["chosen"] = n[5].into();
                v["ari"]["next_poll"] = n[4].into();
                v["consecutive_failures"] = (n[0] % (u32::MAX as u64 + 1)).into();
                serde_json::to_vec(&v).expect("json")
            } else {
                mutate(RECORD.as_bytes(), e)
            };
            fs::write(&record_path, bytes).map_err(|e| e.to_string())?;
            let rec = state.load_cert("www");
            let now = SystemTime::now();
            let ev = renewd::status::evaluate(&cert, &rec, &std::collections::BTreeMap::new(), now);
            let row = renewd::status::row(&cert, &rec, &ev, false);
            let _ = renewd::status::render(&[row], now);
            Ok(())
        },
    );
}

// ---------------------------------------------------------------------------------------
// Swap journals

/// Journals naming every kind of thing (renewd's temporaries and backups, files that are
/// not renewd's, missing paths, directories), in every phase, with wrong types and cut
/// short: recovery never panics and never removes or changes a file that does not carry
/// renewd's marker (the victims below).
#[test]
fn fuzz_swap_journals() {
    // Loads the machine: no other heavy or timing-sensitive test meanwhile.
    let _heavy = common::serial::heavy();
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().to_path_buf();
    let tls = root.join("tls");
    let journal = root.join("journal");
    fs::create_dir_all(&tls).expect("mkdir");
    fs::create_dir_all(&journal).expect("mkdir");
    let victims: Vec<PathBuf> = ["cert.pem", "key.pem", "victim"]
        .iter()
        .map(|n| tls.join(n))
        .collect();
    let names: Vec<String> = vec![
        tls.join("cert.pem").display().to_string(),
        tls.join("key.pem").display().to_string(),
        tls.join("victim").display().to_string(),
        tls.join(".cert.pem.renewd-0123456789abcdef")
            .display()
            .to_string(),
        tls.join(".cert.pem.renewd-old-0123456789abcdef")
            .display()
            .to_string(),
        tls.join(".key.pem.renewd-fedcba9876543210")
            .display()
            .to_string(),
        tls.display().to_string(),
        root.join("missing/x").display().to_string(),
        "relative/x".into(),
        "".into(),
    ];
    let value = prop_oneof![(0usize..10).prop_map(Some), Just(None::<usize>),];
    let entry = (0usize..10, 0usize..10, value);
    let strategy = (
        prop::collection::vec(entry, 0..4),
        0u8..6,
        any::<u32>(),
        prop::option::of(any::<u16>()),
        0u8..4,
    );
    fuzz(
        "journal",
        budget(),
        u64::MAX,
        strategy,
        |(files, phase, version, cut, wrong)| {
            let files_named = files;
            for v in &victims {
                fs::write(v, "victim").map_err(|e| e.to_string())?;
            }
            let phase: serde_json::Value = match phase {
                0 => "staged".into(),
                1 => "swapped".into(),
                2 => "rolling-back".into(),
                3 => 7.into(),
                4 => serde_json::Value::Null,
                _ => "finished".into(),
            };
            let files: Vec<serde_json::Value> = files
                .iter()
                .map(|(t, tmp, backup)| {
                    serde_json::json!({
                        "target": names[*t],
                        "temp": names[*tmp],
                        "backup": backup.map(|b| names[b].clone()),
                    })
                })
                .collect();
            let mut record = serde_json::json!({
                "version": if *version % 3 == 0 { 1 } else { *version },
                "cert": "www",
                "phase": phase,
                "serial": "0a",
                "files": files,
            });
            match wrong {
                1 => record["files"] = "not a list".into(),
                2 => record["cert"] = serde_json::json!(["www"]),
                _ => {}
            }
            let mut bytes = serde_json::to_vec(&record).expect("json");
            if let Some(cut) = cut {
                bytes.truncate(*cut as usize % (bytes.len() + 1));
            }
            fs::write(journal.join("www.json"), &bytes).map_err(|e| e.to_string())?;
            // The certificate `www` owns the two real targets; whatever else a journal names
            // is not renewd's to touch.
            let configured: renewd::deploy::journal::Configured = [(
                "www".to_string(),
                [tls.join("cert.pem"), tls.join("key.pem")]
                    .into_iter()
                    .collect(),
            )]
            .into();
            let _ = renewd::deploy::journal::recover(&journal, &configured);
            // A target may be restored or (when it had no backup) removed: that is what a
            // journal is for. Anything else must be as it was.
            let targets: Vec<&String> = files_named.iter().map(|(t, _, _)| &names[*t]).collect();
            for v in victims
                .iter()
                .filter(|v| !targets.contains(&&v.display().to_string()))
            {
                match fs::read_to_string(v) {
                    Ok(s) if s == "victim" => {}
                    other => {
                        return Err(format!(
                            "recovery touched {} (not renewd's): {other:?}",
                            v.display()
                        ))
                    }
                }
            }
            let _ = fs::remove_file(journal.join("www.json"));
            Ok(())
        },
    );
}

// ---------------------------------------------------------------------------------------
// Control protocol

/// Mutated request lines sent to the real control server: every connection gets one
/// JSON answer line (an error for anything malformed), and the server keeps answering.
#[test]
fn fuzz_control_protocol() {
    // Loads the machine: no other heavy or timing-sensitive test meanwhile.
    let _heavy = common::serial::heavy();
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("ctl.sock");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let listener = rt
        .block_on(renewd::control::bind(&socket))
        .expect("bind control socket");
    let (tx, mut rx) = tokio::sync::mpsc::channel::<renewd::control::Incoming>(16);
    rt.spawn(renewd::control::serve(listener, tx, stop_rx));
    rt.spawn(async move {
        while let Some((req, reply)) = rx.recv().await {
            let _ = reply.send(renewd::control::Response::Error {
                message: format!("seen {req:?}"),
            });
        }
    });
    let requests = [
        r#"{"op":"status","names":["www"]}"#,
        r#"{"op":"renew","names":["www"],"all":false,"force":true,"dry_run":false}"#,
        r#"{"op":"revoke","name":"www","reason":"keyCompromise"}"#,
    ];
    let strategy = (0usize..3, edits(), any::<bool>());
    let ask = |line: &[u8]| -> Result<renewd::control::Response, String> {
        let mut s = UnixStream::connect(&socket).map_err(|e| format!("connect: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(20)))
            .map_err(|e| e.to_string())?;
        // The server may answer and close as soon as it has read a line (a newline inside
        // the input): what is left unsent does not matter, the answer does.
        let _ = s.write_all(line).and_then(|()| s.write_all(b"\n"));
        let mut answer = String::new();
        BufReader::new(s)
            .read_line(&mut answer)
            .map_err(|e| format!("read: {e}"))?;
        serde_json::from_str(&answer).map_err(|e| format!("answer {answer:?}: {e}"))
    };
    fuzz(
        "control",
        budget(),
        u64::MAX,
        strategy,
        |(which, e, newline_inside)| {
            let mut line = mutate(requests[*which].as_bytes(), e);
            if !newline_inside {
                line.retain(|b| *b != b'\n');
            }
            // A line holding a newline of its own is two requests; the first is answered.
            ask(&line)?;
            Ok(())
        },
    );
    match ask(requests[0].as_bytes()) {
        Ok(renewd::control::Response::Error { message }) if message.starts_with("seen") => {}
        other => panic!("the server stopped answering well-formed requests: {other:?}"),
    }
    let _ = stop_tx.send(true);
}

// ---------------------------------------------------------------------------------------
// A hostile CA

/// Where a hostile CA puts what: a path of Pebble's, a JSON pointer into its answer.
const ACME_FIELDS: &[(&str, &str)] = &[
    ("/dir", "/newOrder"),
    ("/dir", "/newNonce"),
    ("/dir", "/newAccount"),
    ("/dir", "/meta"),
    ("/dir", "/renewalInfo"),
    ("/dir", ""),
    ("/sign-me-up", "/status"),
    ("/sign-me-up", "/orders"),
    ("/order-plz", "/status"),
    ("/order-plz", "/authorizations"),
    ("/order-plz", "/authorizations/0"),
    ("/order-plz", "/finalize"),
    ("/order-plz", "/expires"),
    ("/order-plz", "/identifiers"),
    ("/authZ/", "/status"),
    ("/authZ/", "/challenges"),
    ("/authZ/", "/challenges/0/token"),
    ("/authZ/", "/challenges/0/type"),
    ("/authZ/", "/challenges/0/url"),
    ("/authZ/", "/identifier/value"),
    ("/authZ/", "/expires"),
    ("/chalZ/", "/status"),
    ("/chalZ/", "/error"),
    ("/my-order/", "/status"),
    ("/my-order/", "/certificate"),
    ("/finalize-order/", "/status"),
    ("/renewalInfo/", "/suggestedWindow/start"),
    ("/renewalInfo/", "/suggestedWindow"),
    ("/renewalInfo/", "/explanationURL"),
];

fn hostile_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::json;
    prop_oneof![
        Just(json!(null)),
        Just(json!(-1)),
        Just(json!(u64::MAX)),
        Just(json!(1e300)),
        Just(json!(true)),
        Just(json!([])),
        Just(json!({})),
        Just(
            serde_json::from_str::<serde_json::Value>(&format!(
                "{}{}",
                "[".repeat(100),
                "]".repeat(100)
            ))
            .unwrap_or_default()
        ),
        Just(json!("")),
        Just(json!("../../../../etc/passwd")),
        Just(json!("https://127.0.0.1:1/nowhere")),
        Just(json!("not a url \u{1b}[2J")),
        Just(json!("9999-99-99T99:99:99Z")),
        Just(json!("-000001-01-01T00:00:00Z")),
        Just(json!("x".repeat(900 * 1024))),
        Just(json!(vec!["https://127.0.0.1:1/a"; 5000])),
        "[ -~]{0,40}".prop_map(serde_json::Value::String),
        any::<i64>().prop_map(|n| json!(n)),
    ]
}

/// A Pebble behind the fault proxy, and a configuration of one certificate `www` renewd
/// gets from it.
struct HostileCa {
    _pebble: common::Pebble,
    proxy: common::faultproxy::FaultProxy,
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl HostileCa {
    fn start() -> HostileCa {
        let pebble = common::Pebble::start(common::PebbleOptions {
            authz_reuse_percent: Some(0),
            ..Default::default()
        });
        let proxy = common::faultproxy::FaultProxy::start(&pebble);
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        fs::create_dir_all(root.join("tls")).expect("mkdir");
        for d in [root.to_path_buf(), root.join("tls")] {
            let mut perm = fs::metadata(&d).expect("stat").permissions();
            std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
            fs::set_permissions(&d, perm).expect("chmod");
        }
        let config = root.join("renewd.toml");
        fs::write(
            &config,
            format!(
                r#"state_dir = "{d}/state"
control_socket = "{d}/ctl.sock"

[ca.hostile]
directory = "{dir}"
contact = ["mailto:ops@example.org"]
accept_terms = true
trust_roots = "{roots}"
timeout = "10s"

[[certificate]]
name = "www"
domains = ["www.test"]
owner = "ops@example.org"
challenge = {{ type = "http-01", listen = "127.0.0.1:{port}" }}
files = {{ fullchain = "{d}/tls/www.pem", key = "{d}/tls/www.key" }}
"#,
                d = root.display(),
                dir = proxy.directory_url,
                roots = proxy.ca_pem_path.display(),
                port = pebble.http_port,
            ),
        )
        .expect("config");
        HostileCa {
            _pebble: pebble,
            proxy,
            dir,
            config,
        }
    }

    /// A fresh `run --once` (no state, nothing deployed) while the CA's answers on `path`
    /// have `value` at `pointer`. Its exit code (0 or 1), or why it is a failure: a panic,
    /// a signal, another code, or not ending within 90 s.
    fn run_case(
        &self,
        path: &str,
        pointer: &str,
        value: &serde_json::Value,
    ) -> Result<(i32, String), String> {
        use common::faultproxy::{Action, Rule};
        let root = self.dir.path();
        self.proxy.clear_rules();
        self.proxy.add_rule(Rule::new(
            if path == "/dir" || path == "/renewalInfo/" {
                "GET"
            } else {
                "POST"
            },
            path,
            Action::EditJson {
                pointer: pointer.into(),
                value: value.clone(),
            },
        ));
        let _ = fs::remove_dir_all(root.join("state"));
        let _ = fs::remove_file(root.join("tls/www.pem"));
        let _ = fs::remove_file(root.join("tls/www.key"));
        // The log goes to a file: a pipe nobody reads would hold renewd up.
        let log_path = root.join("renewd.log");
        let log = fs::File::create(&log_path).map_err(|e| e.to_string())?;
        let child = std::process::Command::new(common::renewd_bin())
            .args(["run", "--once", "--config"])
            .arg(&self.config)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| e.to_string())?;
        let status = common::wait_bounded(child, Duration::from_secs(90)).map(|out| out.status);
        let text = fs::read(&log_path).map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&text).into_owned();
        let tail: String = text
            .chars()
            .rev()
            .take(4000)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        let Some(status) = status else {
            return Err(format!(
                "renewd did not finish within 90 s; its log ends:\n{tail}"
            ));
        };
        if text.contains("panicked") {
            return Err(format!("renewd panicked:\n{tail}"));
        }
        match status.code() {
            Some(code @ (0 | 1)) => Ok((code, text)),
            other => Err(format!("renewd ended with {other:?}:\n{tail}")),
        }
    }
}

/// ACME answers edited by the fault proxy in front of a real Pebble: every `run --once`
/// ends by itself (exit 0 or 1, never a panic or a signal) well within its deadline.
#[test]
fn fuzz_acme_answers_from_a_hostile_ca() {
    // Loads the machine: no other heavy or timing-sensitive test meanwhile.
    let _heavy = common::serial::heavy();
    let ca = HostileCa::start();
    let (budget, max) = match std::env::var("RENEWD_FUZZ_SECS") {
        Ok(_) => (budget(), u64::MAX),
        Err(_) if long_mode() => (budget(), u64::MAX),
        // A few seconds in the normal test command: each case is a whole run against
        // Pebble (about 0.5 s on an idle machine).
        Err(_) => (Duration::from_secs(5), u64::MAX),
    };
    let strategy = (0usize..ACME_FIELDS.len(), hostile_value());
    let mut tally: BTreeMap<i32, u64> = BTreeMap::new();
    fuzz("acme", budget, max, strategy, |(field, value)| {
        let (path, pointer) = ACME_FIELDS[*field];
        let (code, _) = ca.run_case(path, pointer, value)?;
        *tally.entry(code).or_default() += 1;
        Ok(())
    });
    eprintln!("fuzz acme: exit codes {tally:?}");
}

/// Found by the fuzz target above: the whole directory replaced by a 900 KB JSON string.
#[test]
fn a_directory_that_is_a_huge_string_fails_the_run_in_time() {
    let ca = HostileCa::start();
    let huge = serde_json::json!("x".repeat(900 * 1024));
    let (code, log) = ca
        .run_case("/dir", "", &huge)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(code, 1);
    let longest = log.lines().map(str::len).max().unwrap_or(0);
    let sample: Vec<String> = log
        .lines()
        .filter(|l| l.len() > 2000)
        .map(|l| format!("{}…{}", &l[..300], &l[l.len() - 200..]))
        .collect();
    assert!(
        log.len() < 256 * 1024,
        "{} bytes of log, longest line {longest}: {sample:#?}",
        log.len()
    );
}

/// Found by the fuzz target above (seed 1796065738818830548): a new order whose
/// `authorizations` is `[]` stays `pending` forever, and the run polled it for the whole order
/// timeout. Now such an order is refused at once (RFC 8555 §7.1.3: a pending order lists the
/// authorizations to complete), and the run fails quickly, saying why.
#[test]
fn a_pending_order_without_authorizations_fails_the_run_at_once() {
    let ca = HostileCa::start();
    // `run_case` fails when the run takes over 90 s; the order timeout is 120 s.
    let (code, log) = ca
        .run_case("/order-plz", "/authorizations", &serde_json::json!([]))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(code, 1, "{log}");
    assert!(log.contains("lists no authorizations"), "{log}");
}

/// Found by the fuzz target above: a directory whose `newNonce` (or an order whose
/// `authorizations`) is not a URL made the ACME library panic in renewd's renewal task.
/// Now the answer is refused, the run fails (exit 1) and says which member was wrong.
#[test]
fn urls_that_are_not_urls_fail_the_run_without_a_panic() {
    let ca = HostileCa::start();
    let bad = serde_json::json!("../../../../etc/passwd");
    for (path, pointer) in [
        ("/dir", "/newNonce"),
        ("/order-plz", "/authorizations/0"),
        ("/authZ/", "/challenges/0/url"),
    ] {
        let (code, log) = ca
            .run_case(path, pointer, &bad)
            .unwrap_or_else(|e| panic!("{path} {pointer}: {e}"));
        assert_eq!(code, 1, "{path} {pointer}");
        assert!(
            log.contains("which is not an absolute URL"),
            "{path} {pointer}: {log}"
        );
    }
}

//! Files renewd reads that someone made hostile: FIFOs and `/dev/zero` where a configuration
//! names a file or where a state record lives, a FIFO swapped into a discovery directory
//! while the daemon scans it, a swap journal naming a file renewd did not create, times out
//! of range in a record and a pause file, a directory symlink to a big tree under a
//! discovery path. Each must end in a clear message in bounded time and memory, with the
//! daemon still answering and nothing outside renewd's own files touched.
//!
//! No Pebble: the CA is an unreachable port, and the managed certificate is self-signed and
//! not due.

use crate::common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::rig::{spawn_daemon, DaemonProc};
use common::{now_secs, renewd_bin, wait_bounded, wait_until};

const DAY: u64 = 86_400;
/// What any one command may take here; a hang is a failure, not a wait.
const COMMAND_DEADLINE: Duration = Duration::from_secs(20);

/// A self-signed certificate for `names`, valid 90 days, and its key, as PEM.
fn cert(names: &[&str]) -> (String, String) {
    let mut params =
        rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .expect("params");
    let t = now_secs();
    params.not_before = time::OffsetDateTime::from_unix_timestamp((t - DAY) as i64).expect("nb");
    params.not_after =
        time::OffsetDateTime::from_unix_timestamp((t + 89 * DAY) as i64).expect("na");
    let key = rcgen::KeyPair::generate().expect("key");
    let c = params.self_signed(&key).expect("self-signed");
    (c.pem(), key.serialize_pem())
}

fn mkfifo(path: &Path) {
    let _ = fs::remove_file(path);
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o644)).expect("mkfifo");
}

fn dev_zero(path: &Path) {
    let _ = fs::remove_file(path);
    std::os::unix::fs::symlink("/dev/zero", path).expect("symlink");
}

struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        let dir = common::tempdir_with(&["", "tls", "scan", "legacy", "etc"]);
        let s = Setup { dir };
        let (pem, key) = cert(&["www.test"]);
        fs::write(s.path("tls/www.pem"), pem).expect("write");
        fs::write(s.path("tls/www.key"), key).expect("write");
        let (pem, _) = cert(&["appliance.test"]);
        fs::write(s.path("legacy/appliance.pem"), pem).expect("write");
        fs::write(s.path("etc/roots.pem"), cert(&["root.test"]).0).expect("write");
        fs::write(s.path("etc/eab.key"), "c2VjcmV0\n").expect("write");
        fs::write(
            s.path("etc/tsig.key"),
            "key \"k\" { algorithm hmac-sha256; secret \"c2VjcmV0\"; };\n",
        )
        .expect("write");
        s.config("");
        s
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// State, socket, an unreachable CA (with trust_roots and EAB), the managed
    /// certificate `www` (deployed, not due), `dns` (RFC 2136 with a TSIG key file), an
    /// exception, discovery of `scan/`, plus `extra`.
    fn config(&self, extra: &str) {
        let d = self.dir.path().display();
        let text = format!(
            r#"state_dir = "{d}/state"
control_socket = "{d}/control.sock"

[ca.test]
directory = "https://127.0.0.1:9/dir"
accept_terms = true
trust_roots = "{d}/etc/roots.pem"
eab_kid = "kid-1"
eab_hmac_key_file = "{d}/etc/eab.key"

[defaults]
owner = "platform@example.org"

[[certificate]]
name = "www"
domains = ["www.test"]
challenge = {{ type = "http-01", listen = "127.0.0.1:9" }}
files = {{ fullchain = "{d}/tls/www.pem", key = "{d}/tls/www.key" }}

[[certificate]]
name = "dns"
domains = ["dns.test"]
challenge = {{ type = "dns-01", rfc2136 = {{ server = "127.0.0.1:9", tsig_key_file = "{d}/etc/tsig.key" }} }}
files = {{ fullchain = "{d}/tls/dns.pem", key = "{d}/tls/dns.key" }}

[[exception]]
path = "{d}/legacy/appliance.pem"
owner = "netops@example.org"
reason = "vendor appliance"
review_by = "2099-01-01"

[discovery]
paths = ["{d}/scan"]
{extra}"#
        );
        fs::write(self.path("renewd.toml"), text).expect("config");
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(renewd_bin());
        c.args(args)
            .arg("--config")
            .arg(self.path("renewd.toml"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    /// Runs renewd with `args`; a run longer than [`COMMAND_DEADLINE`] is killed and fails
    /// the test (a hang on a FIFO, or reading `/dev/zero` until memory runs out).
    fn renewd(&self, args: &[&str]) -> Output {
        let started = Instant::now();
        let child = self.command(args).spawn().expect("run renewd");
        let out = wait_bounded(child, COMMAND_DEADLINE)
            .unwrap_or_else(|| panic!("renewd {args:?} did not end within {COMMAND_DEADLINE:?}"));
        eprintln!(
            "--- renewd {args:?}: {} in {:?}\n{}{}",
            out.status,
            started.elapsed(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn spawn(&self) -> DaemonProc {
        spawn_daemon(
            &self.path("renewd.toml"),
            &self.path("control.sock"),
            self.path("daemon.log"),
            &[],
        )
    }

    /// `renewd status --json` through the daemon answers, in bounded time, with both
    /// certificates.
    fn status_answers(&self) {
        let out = self.renewd(&["status", "--json"]);
        assert!(out.status.success(), "status failed");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("\"www\"") && text.contains("\"dns\""),
            "{text}"
        );
    }
}

/// `check` reads trust_roots, the EAB key and the TSIG key file: a FIFO or a symlink to
/// `/dev/zero` at any of them is a `FILE:LINE:COL` error saying what it is, at once.
#[test]
fn check_refuses_fifos_and_devices_at_configured_files() {
    let s = Setup::new();
    for (file, key) in [
        ("etc/roots.pem", "trust_roots"),
        ("etc/eab.key", "eab_hmac_key_file"),
        ("etc/tsig.key", "tsig_key_file"),
    ] {
        let good = fs::read(s.path(file)).expect("read");
        for (make, what) in [
            (mkfifo as fn(&Path), "is a FIFO"),
            (dev_zero as fn(&Path), "is a character device"),
        ] {
            make(&s.path(file));
            // An unreadable file of one CA stops that CA's certificates only: a warning,
            // which --strict makes a failure.
            let out = s.renewd(&["check", "--strict"]);
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(78), "{key} {what}: {stdout}");
            let line = stdout
                .lines()
                .find(|l| l.contains(&format!("`{key}`")) && l.contains(what))
                .unwrap_or_else(|| panic!("no `{key}` {what} error in:\n{stdout}"));
            assert!(
                line.starts_with(&s.path("renewd.toml").display().to_string()),
                "{line}"
            );
        }
        fs::remove_file(s.path(file)).expect("rm");
        fs::write(s.path(file), good).expect("restore");
    }
    let out = s.renewd(&["check"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// A FIFO or `/dev/zero` at an exception's path and at a state record: the daemon starts,
/// answers `status`, and names the problem; the record is moved aside.
#[test]
fn daemon_answers_with_fifos_and_devices_at_an_exception_and_a_record() {
    let s = Setup::new();
    fs::create_dir_all(s.path("state/certs")).expect("mkdir");
    private_state_dir(&s.path("state"));
    mkfifo(&s.path("legacy/appliance.pem"));
    mkfifo(&s.path("state/certs/www.json"));
    dev_zero(&s.path("state/certs/dns.json"));
    let mut d = s.spawn();
    s.status_answers();
    assert!(d.alive());
    assert!(s.path("state/certs/www.json.corrupt").exists());
    assert!(fs::symlink_metadata(s.path("state/certs/dns.json.corrupt")).is_ok());
    let inv = s.renewd(&["inventory", "--json"]);
    assert!(inv.status.success());
    let text = String::from_utf8_lossy(&inv.stdout);
    assert!(text.contains("is a FIFO, not a regular file"), "{text}");

    // The same through a symlink to /dev/zero, picked up on SIGHUP.
    dev_zero(&s.path("legacy/appliance.pem"));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(d.pid()),
        nix::sys::signal::Signal::SIGHUP,
    )
    .expect("hup");
    wait_until(Duration::from_secs(15), "the reload", || {
        d.log().contains("configuration reloaded")
    });
    s.status_answers();
    let inv = s.renewd(&["inventory", "--json"]);
    let text = String::from_utf8_lossy(&inv.stdout);
    assert!(text.contains("is a character device"), "{text}");
    assert!(d.alive());
}

/// The race: certificates in a discovery directory are replaced by FIFOs and back, as fast
/// as possible, for a bounded time; every rescan meets names that changed kind between the
/// listing and the open. The daemon must keep answering `status` throughout.
#[test]
fn discovery_fifo_swap_race_never_freezes_the_daemon() {
    let s = Setup::new();
    let mut d = s.spawn();
    s.status_answers();
    let (pem, _) = cert(&["race.test"]);
    let stop = Arc::new(AtomicBool::new(false));
    let swaps = Arc::new(AtomicUsize::new(0));
    let racer = {
        let (stop, swaps, dir) = (stop.clone(), swaps.clone(), s.path("scan"));
        std::thread::spawn(move || {
            let names: Vec<PathBuf> = (0..100).map(|i| dir.join(format!("c{i}.pem"))).collect();
            let fifo = dir.join(".fifo");
            while !stop.load(Ordering::Relaxed) {
                for n in &names {
                    let tmp = dir.join(".tmp");
                    let _ = fs::write(&tmp, &pem);
                    let _ = fs::rename(&tmp, n);
                }
                for n in &names {
                    let _ =
                        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644));
                    if fs::rename(&fifo, n).is_ok() {
                        swaps.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        })
    };
    let started = Instant::now();
    let mut answered = 0;
    while started.elapsed() < Duration::from_secs(8) {
        s.status_answers();
        answered += 1;
    }
    stop.store(true, Ordering::Relaxed);
    racer.join().expect("racer");
    let swaps = swaps.load(Ordering::Relaxed);
    eprintln!("discovery swaps tried: {swaps}; status answered {answered} times");
    assert!(swaps > 0);
    assert!(d.alive());
    let scans = d.log().matches("discovery scan").count();
    assert!(scans >= 2, "the daemon rescanned ({scans})");
    // Still scanning: a certificate placed now is found.
    s.status_answers();
}

/// A journal in the state directory naming a file that is not a configured target (with
/// no backup, so a roll back would remove it), or a certificate that is not configured:
/// recovery refuses it, deletes nothing, and the daemon still starts.
#[test]
fn a_journal_naming_a_foreign_file_deletes_nothing() {
    let s = Setup::new();
    fs::create_dir_all(s.path("state/journal")).expect("mkdir");
    private_state_dir(&s.path("state"));
    let victim = s.path("legacy/precious");
    fs::write(&victim, "precious").expect("write");
    let foreign_temp = s.path("legacy/.precious.renewd-0000000000000000");
    fs::write(&foreign_temp, "also precious").expect("write");
    for (cert, target) in [("www", &victim), ("nobody", &s.path("tls/www.pem"))] {
        let journal = serde_json::json!({
            "version": 1,
            "cert": cert,
            "phase": "rolling-back",
            "serial": "02",
            "files": [{ "target": target, "temp": foreign_temp, "backup": null }],
        });
        fs::write(
            s.path(&format!("state/journal/{cert}.json")),
            journal.to_string(),
        )
        .expect("journal");
    }
    let mut d = s.spawn();
    s.status_answers();
    assert!(d.alive());
    assert_eq!(fs::read_to_string(&victim).expect("victim"), "precious");
    assert_eq!(
        fs::read_to_string(&foreign_temp).expect("temp"),
        "also precious"
    );
    assert!(s.path("tls/www.pem").exists());
    let log = d.log();
    assert!(log.contains("is not a configured file"), "{log}");
    assert!(log.contains("is not configured"), "{log}");
    // Refused journals stay for a person to look at.
    assert!(s.path("state/journal/www.json").exists());
}

/// A record and a pause file with times beyond what a clock can hold: no panic (exit
/// 101), the record moved aside with a message, the pause ignored with a message.
#[test]
fn out_of_range_times_in_a_record_and_a_pause_file() {
    let s = Setup::new();
    fs::create_dir_all(s.path("state/certs")).expect("mkdir");
    fs::create_dir_all(s.path("state/accounts")).expect("mkdir");
    private_state_dir(&s.path("state"));
    let record = format!(
        r#"{{"consecutive_failures": 3, "last_failure": {max}, "retry_after": {max}}}"#,
        max = u64::MAX
    );
    fs::write(s.path("state/certs/www.json"), &record).expect("record");
    fs::write(
        s.path("state/accounts/test.pause"),
        format!(r#"{{"until": {}, "why": "x"}}"#, u64::MAX),
    )
    .expect("pause");

    let out = s.renewd(&["status"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("beyond year 9999"), "{stderr}");
    assert!(stderr.contains("moving it aside"), "{stderr}");
    assert_eq!(
        fs::read_to_string(s.path("state/certs/www.json.corrupt")).expect("aside"),
        record
    );

    // The pause file is read when the CA is opened (`account show` reads only the stored
    // account, offline).
    let out = s.renewd(&["renew", "--force", "www"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(101), "{stderr}");
    assert!(stderr.contains("beyond year 9999"), "{stderr}");
}

/// A symlink to /usr under a discovery path adds no inotify watch: only the real
/// directories under the configured paths are watched.
#[test]
fn a_directory_symlink_to_a_big_tree_adds_no_watches() {
    let s = Setup::new();
    fs::create_dir_all(s.path("scan/a/b")).expect("mkdir");
    std::os::unix::fs::symlink("/usr", s.path("scan/usr")).expect("symlink");
    let d = s.spawn();
    s.status_answers();
    let watches = inotify_watches(d.pid());
    // tls/ and legacy/ (deployed files), scan, scan/a, scan/a/b; a few to spare.
    assert!(watches <= 8, "{watches} inotify watches");
    assert!(watches >= 3, "{watches} inotify watches");
}

/// A state directory made by a test is renewd's alone: 0700, as renewd makes it (renewd
/// refuses one that others could read rather than chmod it).
fn private_state_dir(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).expect("chmod state");
}

/// inotify watches the process `pid` holds, from /proc/PID/fdinfo.
fn inotify_watches(pid: i32) -> usize {
    let dir = format!("/proc/{pid}/fdinfo");
    fs::read_dir(&dir)
        .expect("fdinfo")
        .flatten()
        .map(|e| fs::read_to_string(e.path()).unwrap_or_default())
        .map(|t| t.lines().filter(|l| l.starts_with("inotify wd:")).count())
        .sum()
}

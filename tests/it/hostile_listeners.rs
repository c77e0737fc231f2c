//! Nobody can exhaust renewd's listeners or squat its control socket.
//!
//! The daemon runs with `RLIMIT_NOFILE` 1024 (soft and hard: the limit it gets from systemd's
//! defaults when nothing raises it) while another user (`nobody`, through `setpriv`) floods a
//! listener with idle connections and slowloris ones (a request head trickled a byte at a
//! time, never finished), re-opening whatever the daemon closes. A renewal must still succeed
//! and root's `renewd status` must answer within a second (a deadline on the answer).
//!
//! The flood comes from this very test binary, run again as `nobody` with
//! `HOSTILE_FLOOD` set (see [`flood_helper_process`]), so no other tool is needed.

use crate::common;
use crate::common::rig;

use std::fs;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use rig::*;

/// The daemon's open file limit in these tests (soft and hard).
const DAEMON_NOFILE: u64 = 1024;
/// ... and in the challenge listener tests, where the listener is up for a fraction of a
/// second only, so the flood cannot open a thousand connections in time.
const DAEMON_NOFILE_LISTENER: u64 = 256;
/// Connections the flood keeps trying to hold: more than the daemon's whole limit.
const IDLE: usize = 700;
const SLOW: usize = 400;
/// The unprivileged user the flood runs as.
const NOBODY: u32 = 65534;

// ---------------------------------------------------------------------------------------
// The flooder (a second process, unprivileged)

/// Not a test: the entry point of the flood process. It does nothing unless `HOSTILE_FLOOD`
/// is set, as it is only when [`Flood::start`] runs this binary again.
#[test]
fn flood_helper_process() {
    let Ok(spec) = std::env::var("HOSTILE_FLOOD") else {
        return;
    };
    let mut parts = spec.split(' ');
    let mode = parts.next().expect("mode").to_string();
    let target = parts.next().expect("target").to_string();
    let report = PathBuf::from(parts.next().expect("report file"));
    match mode.as_str() {
        "squat" => squat(Path::new(&target), &report),
        _ => {
            let idle: usize = parts.next().expect("idle").parse().expect("idle");
            let slow: usize = parts.next().expect("slow").parse().expect("slow");
            let budget: usize = parts.next().expect("budget").parse().expect("budget");
            flood(&mode, &target, idle, slow, budget, &report)
        }
    }
}

/// Opens a non-blocking stream connection to `target` (`tcp` IP:port, or `unix` path);
/// `None` when it is refused or not accepted into the backlog within 50 ms (no listener, a
/// full backlog).
fn connect(mode: &str, target: &str) -> Option<OwnedFd> {
    if mode == "tcp" {
        let addr: std::net::SocketAddr = target.parse().expect("IP address and port");
        let s = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(50)).ok()?;
        s.set_nonblocking(true).ok()?;
        Some(OwnedFd::from(s))
    } else {
        use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, UnixAddr};
        let flags = SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC;
        let fd = socket(AddressFamily::Unix, SockType::Stream, flags, None).ok()?;
        let addr = UnixAddr::new(Path::new(target)).expect("unix address");
        connect(fd.as_raw_fd(), &addr).ok().map(|()| fd)
    }
}

/// Whether the server has closed (or refused) this connection; `slow` ones also get one
/// more byte of a request head that never ends.
fn still_open(fd: &OwnedFd, slow_byte: Option<u8>) -> bool {
    let mut buf = [0u8; 256];
    match nix::unistd::read(fd, &mut buf) {
        Ok(0) => return false,
        Ok(_) => {}
        Err(nix::errno::Errno::EAGAIN) => {}
        Err(_) => return false,
    }
    if let Some(b) = slow_byte {
        match nix::unistd::write(fd, &[b]) {
            Ok(_) | Err(nix::errno::Errno::EAGAIN) => {}
            Err(_) => return false,
        }
    }
    true
}

/// Keeps `idle` idle and `slow` slowloris connections open to `target`, re-opening the ones
/// the server closes (at most `budget` every 100 ms, so a long flood is sustained without
/// burning the test machine's CPU), and writes `held opened closed` to `report` every round.
fn flood(mode: &str, target: &str, idle: usize, slow: usize, budget: usize, report: &Path) {
    // Whatever this user's soft limit, hold the whole flood.
    let (_, hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .expect("getrlimit");
    let _ = nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, hard, hard);
    let head: &[u8] = if mode == "tcp" {
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: "
    } else {
        b"{\"op\":\"status\",\"names\":[\""
    };
    let mut slots: Vec<Option<(OwnedFd, usize)>> = (0..idle + slow).map(|_| None).collect();
    let (mut opened, mut closed) = (0u64, 0u64);
    let mut round = 0usize;
    loop {
        let mut budget = budget;
        for (i, slot) in slots.iter_mut().enumerate() {
            let is_slow = i >= idle;
            if let Some((fd, sent)) = slot {
                // Slow ones send a byte every 5th round (~500 ms).
                let byte = (is_slow && round.is_multiple_of(5))
                    .then(|| head.get(*sent).copied().unwrap_or(b'a'));
                if still_open(fd, byte) {
                    if byte.is_some() {
                        *sent += 1;
                    }
                    continue;
                }
                *slot = None;
                closed += 1;
            }
            if budget > 0 {
                budget -= 1;
                match connect(mode, target) {
                    Some(fd) => {
                        *slot = Some((fd, 0));
                        opened += 1;
                    }
                    // Refused or not taken: no more tries this round.
                    None => budget = 0,
                }
            }
        }
        let held = slots.iter().filter(|s| s.is_some()).count();
        let _ = fs::write(report, format!("{held} {opened} {closed}\n"));
        round += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Binds `socket` and answers every connection with a made-up status: no certificate at all.
fn squat(socket: &Path, report: &Path) {
    let listener = std::os::unix::net::UnixListener::bind(socket).expect("squat bind");
    fs::set_permissions(socket, fs::Permissions::from_mode(0o777)).expect("chmod");
    fs::write(report, "listening\n").expect("report");
    for stream in listener.incoming() {
        let Ok(mut s) = stream else { continue };
        let mut buf = [0u8; 4096];
        let _ = s.read(&mut buf);
        let _ = s.write_all(b"{\"result\":\"status\",\"certificates\":[]}\n");
    }
}

/// A flood process running as `nobody`; killed on drop.
struct Flood {
    child: Child,
    report: PathBuf,
    _exe_dir: tempfile::TempDir,
}

impl Flood {
    /// Starts this test binary again as `nobody`, running [`flood_helper_process`] with
    /// `spec` (`MODE TARGET` then mode-specific words); `as_root` keeps root (for the control
    /// socket, which no other user may open).
    fn start(spec: &str, as_root: bool) -> Flood {
        // A copy of this binary that `nobody` may run, whatever the modes above the build tree.
        let exe_dir = tempfile::tempdir().expect("tempdir");
        fs::set_permissions(exe_dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
        let exe = exe_dir.path().join("flood");
        let me = std::env::current_exe().expect("current exe");
        // A hard link when the build tree is on the same file system and the binary is
        // executable by others (no 80 MB copy); else a copy made so.
        let linked = fs::hard_link(&me, &exe).is_ok()
            && fs::metadata(&exe).is_ok_and(|m| m.permissions().mode() & 0o005 == 0o005);
        if !linked {
            let _ = fs::remove_file(&exe);
            fs::copy(&me, &exe).expect("copy test binary");
            fs::set_permissions(&exe, fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        let report = exe_dir.path().join("report");
        fs::write(&report, "").expect("report");
        fs::set_permissions(&report, fs::Permissions::from_mode(0o666)).expect("chmod");
        let mut cmd = if as_root {
            Command::new(&exe)
        } else {
            let mut c = Command::new("setpriv");
            c.args([
                &format!("--reuid={NOBODY}"),
                &format!("--regid={NOBODY}"),
                "--clear-groups",
                "--",
            ])
            .arg(&exe);
            c
        };
        let child = cmd
            .args([
                "--exact",
                "hostile_listeners::flood_helper_process",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("HOSTILE_FLOOD", flood_spec(spec, &report))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("start the flood (setpriv, from util-linux)");
        Flood {
            child,
            report,
            _exe_dir: exe_dir,
        }
    }

    /// `(held, opened, closed by the server)` as last reported.
    fn figures(&self) -> (u64, u64, u64) {
        let text = fs::read_to_string(&self.report).unwrap_or_default();
        let v: Vec<u64> = text
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        match v[..] {
            [held, opened, closed] => (held, opened, closed),
            _ => (0, 0, 0),
        }
    }

    fn report_text(&self) -> String {
        fs::read_to_string(&self.report).unwrap_or_default()
    }
}

/// `HOSTILE_FLOOD`: `MODE TARGET REPORT` then what follows `MODE TARGET` in `spec`.
fn flood_spec(spec: &str, report: &Path) -> String {
    let words: Vec<&str> = spec.split(' ').collect();
    let mut out = format!("{} {} {}", words[0], words[1], report.display());
    for w in &words[2..] {
        out.push(' ');
        out.push_str(w);
    }
    out
}

impl Drop for Flood {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------
// The daemon under a flood

/// `renewd run` with `RLIMIT_NOFILE` at `nofile` (soft and hard), its log in `daemon.log`;
/// waits until its control socket answers.
fn spawn_limited_daemon(rig: &Rig, nofile: u64) -> DaemonProc {
    let log_path = rig.path("daemon.log");
    let log = fs::File::create(&log_path).expect("daemon log");
    let mut cmd = Command::new(renewd_bin());
    cmd.arg("run")
        .arg("--config")
        .arg(&rig.config_path)
        .env("RUST_LOG", "renewd=debug,info")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log);
    // SAFETY: setrlimit(2) is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::resource::setrlimit(
                nix::sys::resource::Resource::RLIMIT_NOFILE,
                nofile,
                nofile,
            )
            .map_err(std::io::Error::from)
        });
    }
    let child = cmd.spawn().expect("spawn renewd run");
    let d = DaemonProc {
        child: Some(child),
        log_path,
    };
    let socket = rig.socket.clone();
    wait_until(
        Duration::from_secs(15),
        "the daemon's control socket",
        || std::os::unix::net::UnixStream::connect(&socket).is_ok(),
    );
    d
}

/// Descriptors the process `pid` has open now.
fn open_fds(pid: i32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// `renewd status` must answer within `deadline` (the answer is waited for, never longer):
/// returns its stdout.
fn status_within(rig: &Rig, deadline: Duration) -> String {
    let child = Command::new(renewd_bin())
        .args(["status", "--config"])
        .arg(&rig.config_path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("renewd status");
    let out = wait_bounded(child, deadline)
        .unwrap_or_else(|| panic!("renewd status did not answer within {deadline:?}"));
    assert!(
        out.status.success(),
        "renewd status failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Floods `target` (as `nobody`, or root for the control socket) while a forced renewal of
/// `name` runs through the daemon; the renewal must succeed, `status` must answer within a
/// second before and after it, and the daemon must stay well inside its descriptor limit
/// `nofile`.
/// Returns the flood (still on), its figures and the most descriptors the daemon held.
fn renew_under_flood(
    rig: &Rig,
    d: &DaemonProc,
    name: &str,
    spec: &str,
    as_root: bool,
    wait_for_flood: bool,
    nofile: u64,
) -> (Flood, (u64, u64, u64), usize) {
    let before = read_cert_pem(rig.fullchain(name)).serial_hex;
    let flood = Flood::start(spec, as_root);
    if wait_for_flood {
        // The flood is on: far more connections opened than the daemon may hold.
        wait_until(
            Duration::from_secs(30),
            "the flood to open its connections",
            || flood.figures().1 >= (IDLE + SLOW) as u64,
        );
    } else {
        wait_until(Duration::from_secs(30), "the flood to start", || {
            !flood.report_text().is_empty()
        });
    }
    let mut most_fds = open_fds(d.pid());
    status_within(rig, Duration::from_secs(1));
    let renew = Command::new(renewd_bin())
        .args(["renew", "--force", name, "--config"])
        .arg(&rig.config_path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("renewd renew");
    let pid = d.pid();
    let sampler = std::thread::spawn(move || {
        let mut most = 0;
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(2) {
            most = most.max(open_fds(pid));
            std::thread::sleep(Duration::from_millis(50));
        }
        most
    });
    let out = renew.wait_with_output().expect("renewd renew");
    most_fds = most_fds.max(sampler.join().expect("sampler"));
    assert!(
        out.status.success(),
        "the renewal under the flood failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let after = read_cert_pem(rig.fullchain(name)).serial_hex;
    assert_ne!(before, after, "a new certificate was deployed");
    status_within(rig, Duration::from_secs(1));
    most_fds = most_fds.max(open_fds(d.pid()));
    let figures = flood.figures();
    assert!(
        (most_fds as u64) < nofile / 2,
        "the daemon held {most_fds} descriptors of {nofile} under the flood"
    );
    (flood, figures, most_fds)
}

fn metrics_config(rig: &Rig, metrics_port: u16) -> String {
    format!(
        "{}\n[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n",
        rig.cert("www", &["www.test"], "")
    )
}

#[test]
fn a_flood_at_the_metrics_port_starves_neither_renewals_nor_status() {
    // Loads the machine: no other heavy or timing-sensitive test meanwhile.
    let _heavy = common::serial::heavy();
    let rig = Rig::new(PebbleOptions::default());
    let port = free_port();
    rig.write_config(&metrics_config(&rig, port));
    let d = spawn_limited_daemon(&rig, DAEMON_NOFILE);
    wait_until(Duration::from_secs(60), "the first issuance", || {
        rig.fullchain("www").exists()
    });
    let (_flood, figures, fds) = renew_under_flood(
        &rig,
        &d,
        "www",
        &format!("tcp 127.0.0.1:{port} {IDLE} {SLOW} 100"),
        false,
        true,
        DAEMON_NOFILE,
    );
    // /metrics itself still answers an honest scrape.
    let scrape = http_request(
        "GET",
        &format!("http://127.0.0.1:{port}/metrics"),
        None,
        None,
    )
    .expect("scrape under the flood");
    assert!(
        scrape.body.contains("renewd_renewals_total"),
        "scrape under the flood: {} {}",
        scrape.status,
        scrape.body
    );
    eprintln!(
        "FIGURES metrics flood: {} connections held by the flood (opened {}, closed by renewd {}); \
         renewd held at most {fds} descriptors; renewal and status fine",
        figures.0, figures.1, figures.2
    );
}

/// A flood at the built-in listener of `challenge` (on `port`) while it validates a renewal.
fn flood_at_a_challenge_listener(kind: &str, port_of: impl Fn(&Pebble) -> u16) {
    // Loads the machine: no other heavy or timing-sensitive test meanwhile.
    let _heavy = common::serial::heavy();
    let rig = Rig::new(PebbleOptions {
        // Every order validates afresh, so the listener is up during the renewal.
        authz_reuse_percent: Some(0),
        ..Default::default()
    });
    let port = port_of(&rig.pebble);
    let cert = rig.cert("www", &["www.test"], "").replace(
        &format!(
            "{{ type = \"http-01\", listen = \"127.0.0.1:{}\" }}",
            rig.pebble.http_port
        ),
        &format!("{{ type = \"{kind}\", listen = \"127.0.0.1:{port}\" }}"),
    );
    assert!(cert.contains(kind), "{cert}");
    rig.write_config(&cert);
    let d = spawn_limited_daemon(&rig, DAEMON_NOFILE_LISTENER);
    wait_until(Duration::from_secs(60), "the first issuance", || {
        rig.fullchain("www").exists()
    });
    // The listener exists only while a validation is under way: the flood keeps knocking,
    // and fills it as soon as it is bound, with the whole flood at once each round.
    let (_flood, figures, fds) = renew_under_flood(
        &rig,
        &d,
        "www",
        &format!("tcp 127.0.0.1:{port} {IDLE} {SLOW} {}", IDLE + SLOW),
        false,
        false,
        DAEMON_NOFILE_LISTENER,
    );
    eprintln!(
        "FIGURES {kind} flood: {} held (opened {}, closed by renewd {}); renewd held at most \
         {fds} descriptors",
        figures.0, figures.1, figures.2
    );
}

#[test]
fn a_flood_at_the_http01_listener_during_validation_does_not_stop_the_renewal() {
    flood_at_a_challenge_listener("http-01", |p| p.http_port);
}

#[test]
fn a_flood_at_the_tls_alpn01_listener_during_validation_does_not_stop_the_renewal() {
    flood_at_a_challenge_listener("tls-alpn-01", |p| p.tls_port);
}

#[test]
fn a_flood_at_the_control_socket_does_not_stop_status_or_renewals() {
    // Loads the machine: no other heavy or timing-sensitive test meanwhile.
    let _heavy = common::serial::heavy();
    let rig = Rig::new(PebbleOptions::default());
    rig.write_config(&rig.cert("www", &["www.test"], ""));
    let d = spawn_limited_daemon(&rig, DAEMON_NOFILE);
    wait_until(Duration::from_secs(60), "the first issuance", || {
        rig.fullchain("www").exists()
    });
    // No other user may even connect (0600 socket, 0700 directory) ...
    let refused = Command::new("setpriv")
        .args([
            &format!("--reuid={NOBODY}"),
            &format!("--regid={NOBODY}"),
            "--clear-groups",
            "--",
        ])
        .arg(renewd_bin())
        .args(["status", "--config"])
        .arg(&rig.config_path)
        .output()
        .expect("setpriv renewd status");
    assert!(!refused.status.success());
    // ... so the flood comes from root (a runaway script): it may not starve root's status.
    let (_flood, figures, fds) = renew_under_flood(
        &rig,
        &d,
        "www",
        &format!("unix {} {IDLE} {SLOW} 100", rig.socket.display()),
        true,
        true,
        DAEMON_NOFILE,
    );
    eprintln!(
        "FIGURES control flood: {} held (opened {}, closed by renewd {}); renewd held at most \
         {fds} descriptors",
        figures.0, figures.1, figures.2
    );
}

// ---------------------------------------------------------------------------------------
// The control socket in a directory others can write

#[test]
fn a_squatted_control_socket_is_refused_by_the_daemon_check_and_status() {
    let rig = Rig::new(PebbleOptions::default());
    // A shared directory, like /tmp: anyone may create a socket in it.
    let shared = rig.path("shared");
    fs::create_dir(&shared).expect("mkdir");
    fs::set_permissions(&shared, fs::Permissions::from_mode(0o1777)).expect("chmod");
    let socket = shared.join("control.sock");
    let config = format!(
        "{}\n{}",
        rig.base_config(),
        rig.cert("www", &["www.test"], "")
    )
    .replace(
        &format!("control_socket = \"{}\"", rig.socket.display()),
        &format!("control_socket = \"{}\"", socket.display()),
    );
    fs::write(&rig.config_path, config).expect("config");

    // `check` says so, at the value.
    let out = rig.renewd("check", &[]);
    assert_eq!(out.status.code(), Some(78));
    let text = String::from_utf8_lossy(&out.stdout);
    let config_path = rig.config_path.display().to_string();
    assert!(
        text.lines()
            .any(|l| l.starts_with(&format!("{config_path}:2:"))
                && l.contains(&shared.display().to_string())
                && l.contains("writable by")),
        "check output: {text}"
    );

    // Another user squats the socket before the daemon starts.
    let flood = Flood::start(&format!("squat {}", socket.display()), false);
    wait_until(Duration::from_secs(15), "the squatter to listen", || {
        flood.report_text().contains("listening")
    });

    // The daemon refuses to start there, naming the directory.
    let out = Command::new(renewd_bin())
        .args(["run", "--config"])
        .arg(&rig.config_path)
        .stdin(Stdio::null())
        .output()
        .expect("renewd run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the daemon started: {stderr}");
    assert!(
        stderr.contains(&shared.display().to_string()) && stderr.contains("writable by"),
        "daemon: {stderr}"
    );

    // Root's status does not believe the squatter's answer.
    let out = rig.renewd("status", &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "status believed the squatter");
    assert!(
        stderr.contains(&socket.display().to_string()) && stderr.contains("not by root"),
        "status: {stderr}"
    );
}

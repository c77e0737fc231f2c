//! The daemon under a stand-in for systemd: a datagram socket as `$NOTIFY_SOCKET` receives
//! READY, STATUS, RELOADING around SIGHUP, watchdog pings and STOPPING.

use crate::common;
use crate::common::rig;

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::Signal;
use rig::*;

/// Collects notification datagrams until one contains `want`, or panics after `timeout`.
fn until(sock: &UnixDatagram, seen: &mut Vec<String>, want: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        if let Ok(n) = sock.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            let hit = msg.contains(want);
            seen.push(msg);
            if hit {
                return;
            }
        }
    }
    panic!("no notification containing {want:?} within {timeout:?}; seen: {seen:?}");
}

#[test]
fn readiness_status_reload_watchdog_and_stop_reach_the_notify_socket() {
    // Timing-sensitive: no heavy test meanwhile.
    let _timing = common::serial::timing();
    let rig = Rig::new(PebbleOptions::default());
    let env_dump = rig.path("hook-env.txt");
    let hook = rig.path("reload.sh");
    write_exec(&hook, &format!("env > {}\n", env_dump.display()));
    rig.write_config(&rig.cert(
        "a",
        &["a.test"],
        &format!("reload = [[\"{}\"]]", hook.display()),
    ));
    let sock_path = rig.path("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut seen = Vec::new();

    // A 2 s watchdog: renewd must ping every second.
    let mut d = rig.spawn_daemon_with_env(&[
        ("NOTIFY_SOCKET", sock_path.to_str().unwrap()),
        ("WATCHDOG_USEC", "2000000"),
    ]);
    until(&sock, &mut seen, "READY=1", Duration::from_secs(10));
    // Ready once the sockets are bound: the certificates are read after it.
    assert!(
        seen.iter().any(|m| m.contains("READY=1")
            && m.contains("STATUS=starting: reading 1 certificates")),
        "READY comes with a STATUS line: {seen:?}"
    );
    // The first issuance changes the status: renewing, then the next deadline.
    until(
        &sock,
        &mut seen,
        "STATUS=1 certificates, next: a in ",
        Duration::from_secs(30),
    );
    let status = seen
        .iter()
        .rev()
        .find(|m| m.contains("STATUS=1 certificates, next: a in "))
        .cloned()
        .unwrap_or_default();
    assert!(
        !status.contains("failing"),
        "the first issuance failed: {status}\n--- daemon log:\n{}",
        d.log()
    );
    // Two pings within 2.5 s, counted as they arrive (not after a fixed sleep).
    let count_pings = |seen: &[String]| seen.iter().filter(|m| m.contains("WATCHDOG=1")).count();
    let pings_before = count_pings(&seen);
    let window_end = Instant::now() + Duration::from_millis(2500);
    let mut buf = [0u8; 4096];
    while count_pings(&seen) - pings_before < 2 && Instant::now() < window_end {
        if let Ok(n) = sock.recv(&mut buf) {
            seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    let pings = count_pings(&seen) - pings_before;
    assert!(
        pings >= 2,
        "watchdog pinged {pings} times in 2.5 s: {seen:?}"
    );

    // The reload hook ran without systemd's variables.
    let hook_env = std::fs::read_to_string(&env_dump).unwrap();
    assert!(hook_env.contains("RENEWD_NAME=a"));
    assert!(!hook_env.contains("NOTIFY_SOCKET"), "{hook_env}");
    assert!(!hook_env.contains("WATCHDOG_USEC"), "{hook_env}");

    // SIGHUP: RELOADING, then READY, and the new configuration is in force.
    rig.write_config(&format!(
        "{}{}",
        rig.cert("a", &["a.test"], ""),
        rig.cert("b", &["b.test"], "")
    ));
    seen.clear();
    d.signal(Signal::SIGHUP);
    until(&sock, &mut seen, "RELOADING=1", Duration::from_secs(10));
    assert!(seen.last().unwrap().contains("MONOTONIC_USEC="), "{seen:?}");
    until(&sock, &mut seen, "READY=1", Duration::from_secs(10));
    until(
        &sock,
        &mut seen,
        "STATUS=2 certificates",
        Duration::from_secs(30),
    );
    wait_until(Duration::from_secs(30), "b issued", || {
        rig.fullchain("b").exists()
    });

    let mut seen_stop = Vec::new();
    d.signal(Signal::SIGTERM);
    until(&sock, &mut seen_stop, "STOPPING=1", Duration::from_secs(10));
    assert!(d.wait_exit().success());
}

/// A configuration `run` cannot use: exit 78 (which RestartPreventExitStatus= sees, `run`
/// being the unit's main process), every problem as FILE:LINE:COL on stderr, and the first
/// one as STATUS= for `systemctl status`, sent before the process exits. No Pebble needed.
#[test]
fn a_refused_configuration_exits_78_and_says_where_in_status() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("renewd.toml");
    std::fs::write(
        &config,
        "state_dir = \"/nonexistent/state\"\nmax_concurent_renewals = 4\n",
    )
    .unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();

    let out = std::process::Command::new(renewd_bin())
        .args(["run", "--config"])
        .arg(&config)
        .env("NOTIFY_SOCKET", &sock_path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78), "{out:?}");
    let where_ = format!("{}:2:1", config.display());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&where_), "stderr names {where_}: {stderr}");
    // The datagram was sent before the exit, so it is already queued.
    let mut seen = Vec::new();
    until(
        &sock,
        &mut seen,
        &format!("STATUS=bad configuration: {where_}: "),
        Duration::from_secs(1),
    );
    assert!(
        !seen.iter().any(|m| m.contains("READY=1")),
        "never ready: {seen:?}"
    );
}

//! The running daemon against a real Pebble: renewals on its own, re-issue on file events,
//! control socket, SIGHUP and SIGTERM.

use crate::common;
use crate::common::rig;

use std::collections::BTreeSet;
use std::fs;
use std::time::Duration;

use common::*;
use nix::sys::signal::Signal;
use rig::*;

fn hook(rig: &Rig) -> (std::path::PathBuf, std::path::PathBuf) {
    let log = rig.path("reload.log");
    let hook = rig.path("reload.sh");
    write_exec(
        &hook,
        &format!(
            "echo \"$RENEWD_NAME $RENEWD_SERIAL\" >> {}\n",
            log.display()
        ),
    );
    (hook, log)
}

#[test]
fn daemon_renews_thirty_second_certificates_again_and_again() {
    let rig = Rig::new(PebbleOptions {
        validity_secs: 30,
        ..Default::default()
    });
    let (hook, log) = hook(&rig);
    // Renew with 20 s left: every ~10 s.
    rig.write_config(&rig.cert(
        "short",
        &["short.test"],
        &format!(
            "renew_before = \"20s\"\nreload = [[\"{}\"]]",
            hook.display()
        ),
    ));
    let mut d = rig.spawn_daemon();
    wait_until(
        Duration::from_secs(90),
        "four issuances of the 30 s certificate",
        || lines(&log).len() >= 4,
    );
    let serials: BTreeSet<String> = lines(&log)
        .iter()
        .map(|l| l.split(' ').nth(1).unwrap().to_string())
        .collect();
    assert!(
        serials.len() >= 4,
        "each reload saw a new serial: {serials:?}"
    );
    // Whatever instant we look, the deployed pair matches (modulo a swap in progress: retry).
    wait_until(Duration::from_secs(5), "key matches certificate", || {
        key_spki(rig.key("short")) == read_cert_pem(rig.fullchain("short")).spki
    });
    assert!(d.log().contains("renewal due"));
    assert!(d.stop().success());
}

#[test]
fn daemon_reissues_a_deleted_or_mismatched_file_within_seconds() {
    let rig = Rig::new(PebbleOptions::default());
    let (hook, log) = hook(&rig);
    rig.write_config(&rig.cert(
        "www",
        &["www.test"],
        &format!("reload = [[\"{}\"]]", hook.display()),
    ));
    let mut d = rig.spawn_daemon();
    wait_until(Duration::from_secs(30), "first issuance", || {
        lines(&log).len() == 1
    });
    let first = read_cert_pem(rig.fullchain("www"));

    fs::remove_file(rig.fullchain("www")).unwrap();
    wait_until(Duration::from_secs(15), "re-issue after deletion", || {
        lines(&log).len() == 2
    });
    let second = read_cert_pem(rig.fullchain("www"));
    assert_ne!(second.serial_hex, first.serial_hex);
    assert_eq!(key_spki(rig.key("www")), second.spki);

    // A key that no longer matches the certificate (someone copied the wrong file), of the
    // same size and with the modification time put back: only the bytes say it changed
    // (renewd recorded the digest of the set it deployed, and must not trust it blindly).
    let before = fs::metadata(rig.key("www")).unwrap();
    let stranger = loop {
        let k = rcgen::KeyPair::generate().unwrap().serialize_pem();
        if k.len() as u64 == before.len() {
            break k;
        }
    };
    fs::write(rig.key("www"), stranger).unwrap();
    fs::File::options()
        .write(true)
        .open(rig.key("www"))
        .and_then(|f| f.set_modified(before.modified().unwrap()))
        .unwrap();
    assert_eq!(fs::metadata(rig.key("www")).unwrap().len(), before.len());
    wait_until(
        Duration::from_secs(15),
        "re-issue after key mismatch",
        || lines(&log).len() == 3,
    );
    assert_eq!(
        key_spki(rig.key("www")),
        read_cert_pem(rig.fullchain("www")).spki
    );
    // Whichever noticed first (the file watch or an evaluation at a deadline), and whatever
    // it read (the key half-written, or the stranger's whole), the log names the key file.
    assert!(d.log().lines().any(|l| l.contains("www.key")
        && (l.contains("not usable") || l.contains("deployed set unusable"))));

    // Garbage in the certificate file.
    fs::write(rig.fullchain("www"), b"this is not a certificate").unwrap();
    wait_until(Duration::from_secs(15), "re-issue after garbage", || {
        lines(&log).len() == 4
    });
    assert_eq!(
        key_spki(rig.key("www")),
        read_cert_pem(rig.fullchain("www")).spki
    );
    assert!(d.stop().success());
}

#[test]
fn status_and_renew_go_through_the_running_daemon() {
    let rig = Rig::new(PebbleOptions::default());
    let (hook, log) = hook(&rig);
    rig.write_config(&format!(
        "{}{}",
        rig.cert(
            "a",
            &["a.test"],
            &format!("reload = [[\"{}\"]]", hook.display())
        ),
        rig.cert(
            "b",
            &["b.test"],
            &format!("reload = [[\"{}\"]]", hook.display())
        )
    ));
    let mut d = rig.spawn_daemon();
    wait_until(Duration::from_secs(30), "first issuance", || {
        lines(&log).len() == 1 && lines(&log)[0].starts_with("a b ")
    });

    // The reload hook runs before the batch is settled (proofs, records), so the daemon may
    // still report the renewal as in progress for a moment after the hook has written its line.
    let status_b = || {
        let json = rig.renewd_ok("status", &["--json", "b"]);
        serde_json::from_str::<serde_json::Value>(&json).unwrap()
    };
    wait_until(Duration::from_secs(10), "batch settled", || {
        status_b()[0]["renewing"] == false
    });
    let rows = status_b();
    assert_eq!(rows.as_array().unwrap().len(), 1);
    assert_eq!(rows[0]["name"], "b");
    assert_eq!(rows[0]["renewing"], false);
    assert_eq!(
        rows[0]["serial"],
        read_cert_pem(rig.fullchain("b")).serial_hex.as_str()
    );
    let table = rig.renewd_ok("status", &[]);
    assert!(
        // Pebble 2.10 offers ARI: once the daemon has asked it, its window decides, unless
        // the floor after a renewal (a third of the lifetime) comes later.
        table.contains("a\n")
            && (table.contains("renew_before threshold")
                || table.contains("ARI window")
                || table.contains("minimum interval since the last renewal")),
        "{table}"
    );

    // The daemon holds the state lock, so this can only succeed through the socket.
    let before = read_cert_pem(rig.fullchain("a")).serial_hex;
    let out = rig.renewd_ok("renew", &["--force", "a"]);
    assert!(out.contains("a: renewed"), "{out}");
    assert_ne!(read_cert_pem(rig.fullchain("a")).serial_hex, before);
    assert_eq!(lines(&log).len(), 2);
    let out = rig.renewd("run", &["--once"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a second renewing process is refused"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("locked by another renewd"));

    assert!(d.stop().success());
    assert!(!rig.socket.exists(), "socket removed on exit");
}

#[test]
fn sighup_rereads_the_configuration_and_keeps_the_old_one_when_the_new_is_bad() {
    let rig = Rig::new(PebbleOptions::default());
    rig.write_config(&rig.cert("a", &["a.test"], ""));
    let mut d = rig.spawn_daemon();
    wait_until(Duration::from_secs(30), "a issued", || {
        rig.fullchain("a").exists()
    });

    // A broken configuration is refused; the daemon keeps running with the old one.
    fs::write(&rig.config_path, "state_dir = [").unwrap();
    d.signal(Signal::SIGHUP);
    wait_until(Duration::from_secs(10), "refusal logged", || {
        d.log().contains("configuration not reloaded")
    });
    assert!(
        d.log().contains("renewd.toml:1:"),
        "the error names file, line and column"
    );

    rig.write_config(&format!(
        "{}{}",
        rig.cert("a", &["a.test"], ""),
        rig.cert("b", &["b.test"], "")
    ));
    d.signal(Signal::SIGHUP);
    wait_until(Duration::from_secs(30), "b issued after SIGHUP", || {
        rig.fullchain("b").exists()
    });
    assert_eq!(
        key_spki(rig.key("b")),
        read_cert_pem(rig.fullchain("b")).spki
    );
    assert!(d.log().contains("configuration reloaded"));
    assert!(d.stop().success());
}

/// On SIGHUP, a configuration whose new certificate writes the files of an existing one
/// through a symlinked directory is refused like a broken one: the old configuration stays,
/// and the first certificate's files still hold its own certificate.
#[test]
fn sighup_refuses_a_configuration_whose_certificates_share_a_file() {
    let rig = Rig::new(PebbleOptions::default());
    rig.write_config(&rig.cert("a", &["a.test"], ""));
    let mut d = rig.spawn_daemon();
    wait_until(Duration::from_secs(30), "a issued", || {
        rig.fullchain("a").exists()
    });
    std::os::unix::fs::symlink(rig.path("tls"), rig.path("tls-link")).unwrap();
    let b = rig
        .cert("b", &["b.test"], "")
        .replace("tls/b.pem", "tls-link/a.pem")
        .replace("tls/b.key", "tls-link/a.key");
    rig.write_config(&format!("{}{b}", rig.cert("a", &["a.test"], "")));
    d.signal(Signal::SIGHUP);
    wait_until(Duration::from_secs(10), "refusal logged", || {
        d.log().contains("configuration not reloaded")
    });
    assert!(d.log().contains("is the same file as"), "{}", d.log());
    let rows = rig.renewd_ok("status", &["--json"]);
    assert!(!rows.contains("b.test"), "b was not taken in: {rows}");
    assert_eq!(read_cert_pem(rig.fullchain("a")).names, vec!["a.test"]);
    assert!(d.stop().success());
}

#[test]
fn sigterm_during_a_renewal_lets_it_finish_then_exits_cleanly() {
    let rig = Rig::new(PebbleOptions::default());
    let log = rig.path("reload.log");
    let hook = rig.path("slow-reload.sh");
    // The reload takes two seconds; SIGTERM arrives while it runs.
    write_exec(
        &hook,
        &format!(
            "echo started >> {l}\nsleep 2\necho finished >> {l}\n",
            l = log.display()
        ),
    );
    rig.write_config(&rig.cert(
        "www",
        &["www.test"],
        &format!("reload = [[\"{}\"]]", hook.display()),
    ));
    let mut d = rig.spawn_daemon();
    wait_until(Duration::from_secs(30), "the reload to start", || {
        lines(&log).len() == 1
    });
    let status = d.stop();
    assert!(status.success(), "{status}");
    assert_eq!(
        lines(&log),
        vec!["started", "finished"],
        "work under way was finished"
    );
    assert_eq!(
        key_spki(rig.key("www")),
        read_cert_pem(rig.fullchain("www")).spki
    );
    let leftovers: Vec<_> = fs::read_dir(rig.path("tls"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(
        leftovers.is_empty(),
        "no temporary files left: {leftovers:?}"
    );
    assert!(d.log().contains("waiting for renewals under way"));
    assert!(!rig.socket.exists());
}

#[test]
fn the_control_socket_refuses_other_users_even_when_its_mode_would_let_them_in() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let rig = Rig::new(PebbleOptions::default());
    rig.write_config(&rig.cert("a", &["a.test"], ""));
    let mut d = rig.spawn_daemon();
    assert_eq!(mode(&rig.socket), 0o600, "root only by mode");
    // Defeat the mode on purpose: the daemon's own check of the peer must still refuse.
    for p in [rig.dir.path().to_path_buf(), rig.path("run")] {
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    }
    fs::set_permissions(&rig.socket, fs::Permissions::from_mode(0o666)).unwrap();
    let public = tempfile::tempdir().unwrap();
    fs::set_permissions(public.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let cfg = public.path().join("renewd.toml");
    fs::copy(&rig.config_path, &cfg).unwrap();
    fs::set_permissions(&cfg, fs::Permissions::from_mode(0o644)).unwrap();
    let out = std::process::Command::new(renewd_bin())
        .args(["status", "--config"])
        .arg(&cfg)
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("permission denied: only root may control renewd"),
        "{err}"
    );
    assert!(d.log().contains("control request refused: not root"));
    // Root still gets its answer: the daemon lived on.
    assert!(rig
        .renewd_ok("status", &["--json"])
        .contains("\"name\": \"a\""));
    assert!(d.stop().success());
}

/// A state directory that cannot be written (here: the record's name is taken by a
/// directory, so every write of it fails) must not make the daemon forget a failure:
/// `status` shows it, and says the state directory is not writable.
#[test]
fn failures_that_cannot_be_written_are_still_shown() {
    let rig = Rig::new(PebbleOptions::default());
    let dead = format!("https://127.0.0.1:{}/dir", free_port());
    fs::write(
        &rig.config_path,
        format!(
            "{}{}",
            rig.base_config().replace(&rig.pebble.directory_url, &dead),
            rig.cert("www", &["www.test"], "")
        ),
    )
    .unwrap();
    // A full state directory: a small tmpfs of its own, filled before the daemon starts (it
    // needs only directories and an empty lock file there), so every record write fails
    // with ENOSPC.
    let _full = FullDir::mount(&rig.state_dir);
    let d = rig.spawn_daemon();
    wait_until(Duration::from_secs(60), "the failed renewal", || {
        d.log().contains("cannot record the renewal's outcome")
    });
    let json = rig.renewd_ok("status", &["--json"]);
    let rows: serde_json::Value = serde_json::from_str(&json).unwrap();
    let row = &rows[0];
    assert_eq!(row["consecutive_failures"], 1, "{row}");
    assert_eq!(row["last_ok"], false, "{row}");
    assert!(
        row["last_result"]
            .as_str()
            .is_some_and(|m| m.contains("127.0.0.1")),
        "{row}"
    );
    assert!(
        row["warnings"]
            .as_array()
            .is_some_and(|w| w.iter().any(|w| w.as_str().is_some_and(|w| w
                .contains("state directory is not writable")
                && w.contains("www.json")))),
        "{row}"
    );
}

/// A tmpfs mounted at a directory and filled to the last byte; unmounted when dropped.
struct FullDir(std::path::PathBuf);

impl FullDir {
    fn mount(dir: &std::path::Path) -> FullDir {
        fs::create_dir_all(dir).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs"])
            .arg(dir)
            .status()
            .expect("mount (the test needs root)");
        assert!(ok.success(), "mount -t tmpfs on {}", dir.display());
        let full = FullDir(dir.to_path_buf());
        let mut fill = fs::File::create(dir.join("fill")).unwrap();
        let block = [0u8; 4096];
        while std::io::Write::write_all(&mut fill, &block).is_ok() {}
        full
    }
}

impl Drop for FullDir {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// libfaketime's preload library (Debian's `libfaketime`).
fn libfaketime() -> std::path::PathBuf {
    [
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/faketime/libfaketime.so.1",
    ]
    .iter()
    .map(std::path::PathBuf::from)
    .find(|p| p.exists())
    .expect("libfaketime (scripts/fetch-test-deps.sh installs it)")
}

/// With this host's clock 20 minutes behind the CA's, nothing is ordered (no certificate
/// wasted as "not valid now"), the message names the local clock and NTP, and once the
/// clock agrees the renewal goes through.
#[test]
fn a_wrong_local_clock_is_named_and_nothing_is_ordered() {
    let rig = Rig::new(PebbleOptions::default());
    rig.write_config(&rig.cert("www", &["www.test"], ""));
    let out = std::process::Command::new(renewd_bin())
        .args(["run", "--once", "--config"])
        .arg(&rig.config_path)
        .env("LD_PRELOAD", libfaketime())
        .env("FAKETIME", "-20m")
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
        .output()
        .expect("run renewd");
    let err = String::from_utf8_lossy(&out.stderr);
    eprintln!("{err}");
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("the local clock is off by 20m (behind CA pebble's clock")
            && err.contains("NTP"),
        "{err}"
    );
    assert_eq!(rig.pebble.count_log(Pebble::ORDER_CREATED_LOG), 0);
    assert_eq!(rig.pebble.count_log(Pebble::CERT_ISSUED_LOG), 0);
    assert!(!rig.fullchain("www").exists());
    // The clock agrees again: the renewal goes through.
    let out = rig.renewd_ok("renew", &["--force", "www"]);
    assert!(out.contains("www: renewed"), "{out}");
    assert_eq!(rig.pebble.count_log(Pebble::CERT_ISSUED_LOG), 1);
}

/// A reload hook that prints 18 MB (200,000 lines on stdout, and some on stderr): renewd's
/// log keeps at most 64 KiB of it and says how much it dropped, and the hook is not held
/// up (it runs to completion, the renewal succeeds).
#[test]
fn a_hook_flooding_its_output_is_logged_up_to_a_cap() {
    let rig = Rig::new(PebbleOptions::default());
    let hook = rig.path("noisy.sh");
    write_exec(
        &hook,
        "yes 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx' \
         | head -n 200000\nyes oops | head -n 1000 >&2\necho done >&2\n",
    );
    rig.write_config(&rig.cert(
        "www",
        &["www.test"],
        &format!("reload = [[\"{}\"]]", hook.display()),
    ));
    let out = rig.renewd("run", &["--once"]);
    assert!(out.status.success(), "{}", out.status);
    let log_bytes = out.stdout.len() + out.stderr.len();
    let all =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(
        log_bytes < 512 * 1024,
        "{log_bytes} bytes of log for 18 MB of hook output"
    );
    let dropped = all
        .lines()
        .find(|l| l.contains("bytes not logged"))
        .unwrap_or_else(|| panic!("no line says what was dropped"));
    // 200,000 lines of 92 bytes and 1,000 of 5 and one of 5, less at most 64 KiB logged.
    let total = 200_000 * 92 + 1_000 * 5 + 5;
    assert!(dropped.contains(&format!("of {total} bytes")), "{dropped}");
}

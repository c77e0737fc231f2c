//! Crash safety of deployment: the daemon is killed with SIGKILL at random instants while it
//! renews, again and again, and every restart must find every certificate's file set whole —
//! all old or all new, never a key that does not match its certificate.
//!
//! Each round: start the daemon (which recovers before it answers its control socket), check
//! every set, force a renewal of every certificate through the control socket, and SIGKILL the
//! daemon after a random delay drawn from the time a whole renewal takes, so kills land before,
//! during and after the ACME exchange, the staging, the swap and the reload. What the kill
//! interrupted is read from the state directory before the next start and tallied, so the test
//! shows how many kills hit a swap. 200 rounds by default; `RENEWD_LONG_TESTS=1` runs
//! 1,000 (see `kills`).

use crate::common;
use crate::common::rig;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{key_spki, parse_certs_pem, renewd_bin, write_exec, PebbleOptions};
use rand::Rng;
use rig::Rig;

const CERTS: usize = 3;

/// 200 kills; `RENEWD_LONG_TESTS=1` (the longer mode of the fuzz targets too) makes it
/// 1,000; `RENEWD_CRASH_KILLS=N` sets any number.
fn kills() -> usize {
    let long = std::env::var("RENEWD_LONG_TESTS").is_ok_and(|v| v == "1");
    std::env::var("RENEWD_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if long { 1000 } else { 200 })
}

fn file(rig: &Rig, cert: usize, kind: &str) -> PathBuf {
    rig.path(&format!("tls/c{cert}/{kind}.pem"))
}

/// Writes the configuration ([`config`]) with a reload command that appends `line` (shell
/// words, e.g. `$RENEWD_NAME`) to a log; returns the log's path.
fn configure_with_reload_log(rig: &Rig, line: &str) -> PathBuf {
    let reloads = rig.path("reloads.log");
    let reload = rig.path("reload.sh");
    write_exec(
        &reload,
        &format!("#!/bin/sh\necho \"{line}\" >> {}\n", reloads.display()),
    );
    rig.write_config(&config(rig, &reload));
    reloads
}

fn config(rig: &Rig, reload: &Path) -> String {
    let mut body = String::new();
    for i in 0..CERTS {
        let dir = rig.path(&format!("tls/c{i}"));
        fs::create_dir_all(&dir).expect("mkdir");
        // Whatever the umask: renewd refuses directories others can write.
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).expect("chmod");
        body.push_str(&rig.cert(&format!("c{i}"), &[&format!("c{i}.example.org")], ""));
        // Replace the rig's two files by all five kinds.
        let files = format!(
            "files = {{ cert = \"{}\", chain = \"{}\", fullchain = \"{}\", key = \"{}\", combined = \"{}\" }}",
            file(rig, i, "cert").display(),
            file(rig, i, "chain").display(),
            file(rig, i, "fullchain").display(),
            file(rig, i, "key").display(),
            file(rig, i, "combined").display(),
        );
        let start = body.rfind("files = {").expect("files line");
        let end = start + body[start..].find('\n').expect("eol");
        body.replace_range(start..end, &files);
        body.push_str(&format!("reload = [[\"{}\"]]\n", reload.display()));
    }
    body
}

/// Checks that every file of certificate `i` belongs to one and the same issuance; returns
/// the leaf's serial. Panics with what is wrong otherwise.
fn check_set(rig: &Rig, i: usize, round: usize) -> String {
    let read = |kind: &str| {
        let p = file(rig, i, kind);
        fs::read_to_string(&p)
            .unwrap_or_else(|e| panic!("round {round}: c{i}: cannot read {}: {e}", p.display()))
    };
    let (cert, chain, fullchain, key, combined) = (
        read("cert"),
        read("chain"),
        read("fullchain"),
        read("key"),
        read("combined"),
    );
    let full = parse_certs_pem(&fullchain);
    assert!(
        full.len() >= 2,
        "round {round}: c{i}: fullchain holds {} certificates",
        full.len()
    );
    let leaf = &parse_certs_pem(&cert)[0];
    assert_eq!(
        leaf.der, full[0].der,
        "round {round}: c{i}: cert.pem and fullchain.pem differ"
    );
    let inter: Vec<Vec<u8>> = parse_certs_pem(&chain).into_iter().map(|c| c.der).collect();
    let full_inter: Vec<Vec<u8>> = full[1..].iter().map(|c| c.der.clone()).collect();
    assert_eq!(
        inter, full_inter,
        "round {round}: c{i}: chain.pem is not fullchain's intermediates"
    );
    assert_eq!(
        combined,
        format!("{key}{fullchain}"),
        "round {round}: c{i}: combined.pem is not key + fullchain"
    );
    assert_eq!(
        key_spki(file(rig, i, "key")),
        leaf.spki,
        "round {round}: c{i}: key.pem does not belong to the certificate"
    );
    leaf.serial_hex.clone()
}

/// Nothing of renewd's own may be left beside the files or in the journal once recovered.
fn check_clean(rig: &Rig, round: usize) {
    for i in 0..CERTS {
        for e in fs::read_dir(rig.path(&format!("tls/c{i}"))).expect("read_dir") {
            let name = e.expect("entry").file_name().to_string_lossy().into_owned();
            assert!(
                !name.starts_with('.'),
                "round {round}: leftover {name} in tls/c{i} after recovery"
            );
        }
    }
    let journals: Vec<_> = fs::read_dir(rig.state_dir.join("journal"))
        .expect("journal dir")
        .collect();
    assert!(
        journals.is_empty(),
        "round {round}: journal left after recovery: {journals:?}"
    );
}

/// What a kill left on disk, before recovery: the phase of any journal, else whether
/// temporaries were being written.
fn interrupted(rig: &Rig) -> String {
    let mut phases = Vec::new();
    if let Ok(entries) = fs::read_dir(rig.state_dir.join("journal")) {
        for e in entries.flatten() {
            let Ok(text) = fs::read_to_string(e.path()) else {
                continue;
            };
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
                phases.push(format!("journal {}", v["phase"].as_str().unwrap_or("?")));
            }
        }
    }
    phases.sort();
    phases.dedup();
    if !phases.is_empty() {
        return phases.join(" + ");
    }
    let temporaries = (0..CERTS).any(|i| {
        fs::read_dir(rig.path(&format!("tls/c{i}")))
            .map(|d| {
                d.flatten()
                    .any(|e| e.file_name().to_string_lossy().starts_with('.'))
            })
            .unwrap_or(false)
    });
    if temporaries {
        "staging (temporaries, no journal)".into()
    } else {
        "no swap under way".into()
    }
}

/// Waits until a temporary (a name starting with '.') appears beside some certificate's
/// files, polling every 100 µs; returns when it was seen.
fn wait_for_staging(rig: &Rig, timeout: Duration) -> Option<Instant> {
    let dirs: Vec<PathBuf> = (0..CERTS).map(|i| rig.path(&format!("tls/c{i}"))).collect();
    let start = Instant::now();
    while start.elapsed() < timeout {
        for d in &dirs {
            if fs::read_dir(d)
                .map(|es| {
                    es.flatten()
                        .any(|e| e.file_name().as_encoded_bytes()[0] == b'.')
                })
                .unwrap_or(false)
            {
                return Some(Instant::now());
            }
        }
        std::thread::sleep(Duration::from_micros(100));
    }
    None
}

#[test]
fn sigkill_at_random_instants_never_leaves_a_mismatched_set() {
    // Loads the machine: no other heavy or timing-sensitive test meanwhile.
    let _heavy = common::serial::heavy();
    // A day's lifetime: nothing falls due while the test runs (15 minutes did on a loaded
    // machine, and a due renewal staging its files right after the restart was taken for a
    // leftover of the recovery). Every renewal here is forced.
    let rig = Rig::new(PebbleOptions {
        validity_secs: 86_400,
        order_retry_after: 0,
        authz_retry_after: 0,
        ..PebbleOptions::default()
    });
    let reloads = configure_with_reload_log(&rig, "$RENEWD_NAME");

    rig.renewd_ok("run", &["--once"]);
    for i in 0..CERTS {
        check_set(&rig, i, 0);
    }
    // How long one forced renewal of every certificate takes, and how long its deployment
    // (first temporary written to reload run) lasts: kills are spread over both.
    let reloaded = rig::lines(&reloads).len();
    let t = Instant::now();
    let mut calibration = spawn_renew_all(&rig);
    let staging = wait_for_staging(&rig, Duration::from_secs(30)).expect("staging seen");
    while rig::lines(&reloads).len() == reloaded {
        std::thread::sleep(Duration::from_micros(200));
    }
    let deployment = staging.elapsed();
    assert!(
        calibration.wait().expect("wait").success(),
        "forced renewal failed"
    );
    let whole = t.elapsed();
    eprintln!(
        "one forced renewal of {CERTS} certificates took {whole:?}, its deployment {deployment:?}"
    );

    let mut rng = common::seed::seeded_rng("RENEWD_CRASH_SEED", "kill instants");
    let mut tally: BTreeMap<String, usize> = BTreeMap::new();
    let mut changed = 0;
    let mut serials: Vec<String> = (0..CERTS).map(|i| check_set(&rig, i, 0)).collect();
    let kills = kills();
    for round in 1..=kills {
        let mut daemon = rig.spawn_daemon();
        // The daemon answers requests only once it has recovered.
        rig.renewd("status", &[]);
        check_clean(&rig, round);
        for (i, serial) in serials.iter_mut().enumerate() {
            let now = check_set(&rig, i, round);
            if now != *serial {
                changed += 1;
                *serial = now;
            }
        }

        let mut client = spawn_renew_all(&rig);
        if round % 2 == 0 {
            // Anywhere in the renewal: ACME exchange, staging, swap, reload, or after.
            std::thread::sleep(whole.mul_f64(rng.random_range(0.0..1.3)));
        } else {
            // Inside the deployment, which is a few milliseconds of a renewal lasting about a
            // second: at a random instant after the first temporary appears.
            let _ = wait_for_staging(&rig, whole * 3);
            std::thread::sleep(deployment.mul_f64(rng.random_range(0.0..1.5)));
        }
        daemon.signal(nix::sys::signal::Signal::SIGKILL);
        daemon.wait_exit();
        let _ = client.wait();
        *tally.entry(interrupted(&rig)).or_default() += 1;
    }

    let _daemon = rig.spawn_daemon();
    rig.renewd("status", &[]);
    check_clean(&rig, kills + 1);
    for i in 0..CERTS {
        check_set(&rig, i, kills + 1);
    }
    eprintln!("{kills} SIGKILLs; what each interrupted: {tally:#?}; certificate sets changed between rounds: {changed}");
    let hit_swaps: usize = tally
        .iter()
        .filter(|(k, _)| k.starts_with("journal"))
        .map(|(_, n)| *n)
        .sum();
    // Guard against a test that never hits what it is about: with kills spread over whole
    // renewals, some must land inside a swap and some renewals must complete.
    assert!(
        kills < 50 || (hit_swaps > 0 && changed > 0),
        "no kill interrupted a swap ({tally:?}) or no renewal ever completed ({changed})"
    );
}

#[test]
fn interrupted_swap_of_a_completed_set_is_reloaded_at_start() {
    // A swap that completed just before the crash: the next start keeps the new set and
    // runs the reload the crash prevented.
    let rig = Rig::new(PebbleOptions::default());
    let reloads = configure_with_reload_log(&rig, "$RENEWD_NAME $RENEWD_SERIAL");
    rig.renewd_ok("run", &["--once"]);
    let before = rig::lines(&reloads).len();
    let serial = check_set(&rig, 0, 0);

    // Forge what a crash right after the swap leaves: a `swapped` journal whose backups hold
    // the previous files.
    let journal = rig.state_dir.join("journal/c0.json");
    let mut files = Vec::new();
    for kind in ["cert", "chain", "fullchain", "key", "combined"] {
        let target = file(&rig, 0, kind);
        let backup = target.with_file_name(format!(".{kind}.pem.renewd-old-0000000000000001"));
        fs::copy(&target, &backup).expect("backup");
        files.push(serde_json::json!({
            "target": target,
            "temp": target.with_file_name(format!(".{kind}.pem.renewd-0000000000000001")),
            "backup": backup,
        }));
    }
    fs::write(
        &journal,
        serde_json::to_vec(&serde_json::json!({
            "version": 1, "cert": "c0", "phase": "swapped", "serial": serial, "files": files,
        }))
        .expect("json"),
    )
    .expect("journal");

    rig.renewd_ok("run", &["--once"]);
    let lines = rig::lines(&reloads);
    assert_eq!(
        lines[before..].to_vec(),
        vec![format!("c0 {serial}")],
        "the interrupted swap's reload ran once, for c0 only"
    );
    assert_eq!(check_set(&rig, 0, 1), serial);
    check_clean(&rig, 1);
}

/// `renewd renew --all --force` in the background, its output discarded.
fn spawn_renew_all(rig: &Rig) -> std::process::Child {
    Command::new(renewd_bin())
        .args(["renew", "--all", "--force", "--config"])
        .arg(&rig.config_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn renewd renew")
}

//! Rollback: a renewal whose reload command fails, or whose `verify` proof fails, puts the
//! previous files back, reloads the service again, and records the failure — shown against
//! a real nginx serving the deployed files.

use crate::common;
use crate::common::rig;

use std::fs;
use std::path::{Path, PathBuf};

use common::nginx::Nginx;
use common::*;
use rig::*;

/// The files of `www`, as bytes, in a fixed order.
fn snapshot(rig: &Rig) -> Vec<Vec<u8>> {
    [rig.fullchain("www"), rig.key("www")]
        .iter()
        .map(|p| fs::read(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display())))
        .collect()
}

/// Nothing of renewd's left beside the files or in the journal.
fn assert_clean(rig: &Rig) {
    let leftovers: Vec<String> = fs::read_dir(rig.path("tls"))
        .expect("tls")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "left beside the files: {leftovers:?}");
    let journals = fs::read_dir(rig.state_dir.join("journal"))
        .expect("journal")
        .count();
    assert_eq!(journals, 0, "swap journal left behind");
}

/// A placeholder certificate for another name, so nginx can start; renewd replaces it at once
/// (a deployed certificate that does not cover the configured names is renewed).
fn placeholder(rig: &Rig) {
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["placeholder.test".to_string()])
        .expect("params")
        .self_signed(&key)
        .expect("self-sign");
    write_file(rig.fullchain("www"), cert.pem());
    write_file(rig.key("www"), key.serialize_pem());
}

/// A reload script that runs nginx's reload and logs each run with the serial it was told
/// about; when `fail_flag` exists it removes it and exits 1 after reloading (a reload that
/// reports failure), when `skip_flag` exists it removes it and exits 0 without reloading (a
/// service that ignores the reload).
fn reload_script(rig: &Rig, nginx: &Nginx) -> (PathBuf, PathBuf, PathBuf, PathBuf) {
    let script = rig.path("reload.sh");
    let log = rig.path("reloads.log");
    let fail = rig.path("fail-next-reload");
    let skip = rig.path("skip-next-reload");
    let argv: Vec<String> = nginx
        .reload_argv()
        .iter()
        .map(|a| format!("'{a}'"))
        .collect();
    write_exec(
        &script,
        &format!(
            "#!/bin/sh\n\
             echo \"reload $RENEWD_SERIAL\" >> '{log}'\n\
             if [ -e '{skip}' ]; then rm -f '{skip}'; exit 0; fi\n\
             {argv} || exit 2\n\
             if [ -e '{fail}' ]; then rm -f '{fail}'; echo 'service refused the new certificate' >&2; exit 1; fi\n",
            log = log.display(),
            skip = skip.display(),
            fail = fail.display(),
            argv = argv.join(" "),
        ),
    );
    (script, log, fail, skip)
}

fn setup(verify: bool) -> (Rig, Nginx, PathBuf, PathBuf, PathBuf) {
    let rig = Rig::new(PebbleOptions::default());
    placeholder(&rig);
    let nginx = Nginx::start(&rig.path("nginx"), &rig.fullchain("www"), &rig.key("www"));
    let (script, log, fail, skip) = reload_script(&rig, &nginx);
    let mut extra = format!("reload = [[\"{}\"]]\n", script.display());
    if verify {
        extra.push_str(&format!(
            "verify = {{ connect = \"{}\", server_name = \"www.test\", timeout = \"3s\" }}\n",
            nginx.connect()
        ));
    }
    rig.write_config(&rig.cert("www", &["www.test"], &extra));
    rig.renewd_ok("run", &["--once"]);
    let first = read_cert_pem(rig.fullchain("www"));
    assert!(first.names.contains(&"www.test".to_string()));
    nginx.wait_serving(Some("www.test"), &first.der);
    (rig, nginx, log, fail, skip)
}

fn status_json(rig: &Rig) -> serde_json::Value {
    let out = rig.renewd("status", &["--json"]);
    serde_json::from_slice(&out.stdout).expect("status --json")
}

/// The last message recorded for `www`, from `status --json` (whatever its exact shape:
/// the whole entry is searched as text).
fn status_text(rig: &Rig) -> String {
    status_json(rig).to_string()
}

fn assert_rolled_back(
    rig: &Rig,
    nginx: &Nginx,
    before: &[Vec<u8>],
    previous: &CertView,
    out: &std::process::Output,
    why: &str,
) {
    assert_eq!(
        out.status.code(),
        Some(1),
        "the renewal must report failure"
    );
    assert_eq!(
        snapshot(rig),
        before,
        "the previous files are back, byte for byte"
    );
    assert_clean(rig);
    // The service was reloaded again and serves the previous certificate.
    nginx.wait_serving(Some("www.test"), &previous.der);
    assert_eq!(
        nginx.served_cert(Some("www.test")).serial_hex,
        previous.serial_hex
    );
    let status = status_text(rig);
    assert!(
        status.contains("rolled back") && status.contains(why),
        "status shows the rollback and why ({why}): {status}"
    );
}

fn reload_lines(log: &Path) -> Vec<String> {
    lines(log)
}

#[test]
fn a_failing_reload_rolls_back_and_the_service_serves_the_previous_certificate() {
    let (rig, nginx, log, fail, _) = setup(false);
    let previous = read_cert_pem(rig.fullchain("www"));
    let before = snapshot(&rig);
    let issued_before = rig.pebble.count_log(common::Pebble::CERT_ISSUED_LOG);
    let reloads_before = reload_lines(&log).len();

    fs::write(&fail, b"").expect("flag");
    let out = rig.renewd("renew", &["--force", "www"]);
    assert_eq!(
        rig.pebble.count_log(common::Pebble::CERT_ISSUED_LOG),
        issued_before + 1,
        "a new certificate was issued"
    );
    assert_rolled_back(&rig, &nginx, &before, &previous, &out, "reload command");
    let runs = reload_lines(&log)[reloads_before..].to_vec();
    assert_eq!(
        runs.len(),
        2,
        "reloaded for the new files, then again for the restored ones: {runs:?}"
    );
    assert_ne!(runs[0], format!("reload {}", previous.serial_hex));
    assert_eq!(runs[1], format!("reload {}", previous.serial_hex));

    // Once the service accepts it, the next renewal goes through.
    rig.renewd_ok("renew", &["--force", "www"]);
    let next = read_cert_pem(rig.fullchain("www"));
    assert_ne!(next.serial_hex, previous.serial_hex);
    nginx.wait_serving(Some("www.test"), &next.der);
    assert_clean(&rig);
}

#[test]
fn a_failed_proof_rolls_back_and_the_service_serves_the_previous_certificate() {
    let (rig, nginx, log, _, skip) = setup(true);
    let previous = read_cert_pem(rig.fullchain("www"));
    let before = snapshot(&rig);
    let reloads_before = reload_lines(&log).len();

    // The service ignores the next reload: it keeps serving the previous certificate, so the
    // proof of the new one fails.
    fs::write(&skip, b"").expect("flag");
    let out = rig.renewd("renew", &["--force", "www"]);
    assert_rolled_back(&rig, &nginx, &before, &previous, &out, "proof failed");
    let status = status_text(&rig);
    assert!(
        status.contains(&format!("serves serial {}", previous.serial_hex)),
        "status names what was served: {status}"
    );
    assert_eq!(reload_lines(&log)[reloads_before..].len(), 2);

    // With a service that reloads, the proof passes and the new certificate stays.
    rig.renewd_ok("renew", &["--force", "www"]);
    let next = read_cert_pem(rig.fullchain("www"));
    assert_ne!(next.serial_hex, previous.serial_hex);
    nginx.wait_serving(Some("www.test"), &next.der);
    assert_clean(&rig);
}

//! ACME account matters against a real Pebble 2.10: external account binding (EAB), with
//! the key from a file or from systemd's credentials directory.

use crate::common;
use crate::common::rig;

use std::fs;
use std::process::{Command, Stdio};

use common::*;
use rig::*;

// Pebble's EAB keys are base64url HMAC keys, as CAs hand them out.
const KID: &str = "kid-renewd";
const HMAC: &str = "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W";

fn eab_config(rig: &Rig, key_file: &std::path::Path) -> String {
    format!(
        "eab_kid = \"{KID}\"\neab_hmac_key_file = \"{}\"\n{}",
        key_file.display(),
        rig.cert("www", &["www.test"], "")
    )
}

#[test]
fn external_account_binding_from_a_file_or_systemd_credentials() {
    let rig = Rig::new(PebbleOptions {
        eab_keys: vec![(KID.into(), HMAC.into())],
        ..PebbleOptions::default()
    });

    // Without EAB the CA refuses the account, and says why. (Later steps use `renew
    // --force`: the failure put the certificate in backoff.)
    rig.write_config(&rig.cert("www", &["www.test"], ""));
    let out = rig.renewd("run", &["--once"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("externalAccountRequired") || err.contains("External Account Binding"),
        "{err}"
    );
    assert!(!rig.fullchain("www").exists());

    // The key from $CREDENTIALS_DIRECTORY (LoadCredential=), by the configured file's name;
    // the configured path itself does not exist.
    let creds = rig.path("creds");
    fs::create_dir(&creds).expect("mkdir creds");
    write_file(creds.join("eab.key"), format!("{HMAC}\n"));
    rig.write_config(&eab_config(&rig, &rig.path("absent/eab.key")));
    let out = Command::new(renewd_bin())
        .args(["renew", "--force", "www", "--config"])
        .arg(&rig.config_path)
        .env("RUST_LOG", "renewd=debug,info")
        .env("CREDENTIALS_DIRECTORY", &creds)
        .stdin(Stdio::null())
        .output()
        .expect("run renewd");
    let err = String::from_utf8_lossy(&out.stderr);
    eprintln!("{err}");
    assert!(out.status.success(), "{err}");
    assert!(!err.contains(HMAC), "the key never reaches the log");
    assert!(rig.fullchain("www").exists());
    assert_eq!(rig.pebble.count_log(Pebble::ACCOUNT_CREATED_LOG), 1);

    // The key from the configured file: a fresh account is bound with it.
    fs::remove_dir_all(&rig.state_dir).expect("forget the account");
    fs::remove_file(rig.fullchain("www")).expect("rm");
    let key_file = rig.path("eab.key");
    write_file(&key_file, HMAC);
    rig.write_config(&eab_config(&rig, &key_file));
    let out = rig.renewd("run", &["--once"]);
    assert!(out.status.success());
    assert!(!String::from_utf8_lossy(&out.stderr).contains(HMAC));
    assert_eq!(rig.pebble.count_log(Pebble::ACCOUNT_CREATED_LOG), 2);

    // A wrong key is refused by the CA.
    fs::remove_dir_all(&rig.state_dir).expect("forget the account");
    fs::remove_file(rig.fullchain("www")).expect("rm");
    write_file(&key_file, "c2VjcmV0LWJ1dC13cm9uZw");
    let out = rig.renewd("run", &["--once"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(!rig.fullchain("www").exists());
}

/// `renewd revoke`: the certificate is revoked at the CA and replaced (fresh key, normal
/// deployment), in-process without a daemon and through the daemon's socket with one.
#[test]
fn revoke_then_reissue_in_process_and_through_the_daemon() {
    let rig = Rig::new(PebbleOptions::default());
    rig.write_config(&rig.cert("www", &["www.test"], ""));
    rig.renewd_ok("run", &["--once"]);
    let revoked_status = |c: &CertView| {
        rig.pebble
            .mgmt_get(&format!("/cert-status-by-serial/{}", c.pebble_serial()))
    };
    let first = read_cert_pem(rig.fullchain("www"));
    let first_key = key_spki(rig.key("www"));
    assert!(
        !revoked_status(&first).contains("Revoked"),
        "{}",
        revoked_status(&first)
    );

    // A reason that is not an RFC 5280 name is a command-line error.
    assert_eq!(
        rig.renewd("revoke", &["www", "--reason", "oops"])
            .status
            .code(),
        Some(2)
    );

    let out = rig.renewd_ok("revoke", &["www", "--reason", "keyCompromise"]);
    assert!(
        out.contains(&format!("revoked serial {}", first.serial_hex)),
        "{out}"
    );
    let second = read_cert_pem(rig.fullchain("www"));
    assert_ne!(second.serial_hex, first.serial_hex);
    assert_ne!(key_spki(rig.key("www")), first_key, "a fresh key");
    assert!(
        revoked_status(&first).contains("Revoked"),
        "{}",
        revoked_status(&first)
    );

    let mut daemon = rig.spawn_daemon();
    let out = rig.renewd_ok("revoke", &["www"]);
    assert!(
        out.contains(&format!("revoked serial {}", second.serial_hex)),
        "{out}"
    );
    let third = read_cert_pem(rig.fullchain("www"));
    assert_ne!(third.serial_hex, second.serial_hex);
    assert!(revoked_status(&second).contains("Revoked"));
    assert!(
        daemon.log().contains("certificate revoked"),
        "went through the daemon"
    );
    daemon.stop();
}

/// `renewd account show|rollover-key|deactivate`: the key is replaced at the CA and the same
/// account keeps ordering; a deactivated account is replaced by a new one at the next order.
#[test]
fn account_show_rollover_and_deactivate() {
    let rig = Rig::new(PebbleOptions::default());
    rig.write_config(&rig.cert("www", &["www.test"], ""));
    // No account yet: show says so (from the state directory alone) and registers nothing.
    assert!(rig
        .renewd_ok("account", &["show"])
        .contains("CA pebble: no account yet"));
    assert_eq!(rig.pebble.count_log(Pebble::ACCOUNT_CREATED_LOG), 0);

    rig.renewd_ok("run", &["--once"]);
    let shown = rig.renewd_ok("account", &["show", "--ca", "pebble"]);
    assert!(shown.contains("/my-account/"), "{shown}");
    let file = rig.state_dir.join("accounts/pebble.json");
    let before = fs::read(&file).expect("account file");

    let out = rig.renewd_ok("account", &["rollover-key"]);
    assert!(out.contains("new key"), "{out}");
    assert_ne!(
        fs::read(&file).expect("account file"),
        before,
        "new key stored"
    );
    // The rolled-over key keeps working for the same account.
    rig.renewd_ok("renew", &["--force", "www"]);
    assert_eq!(rig.pebble.count_log(Pebble::ACCOUNT_CREATED_LOG), 1);
    assert_eq!(rig.renewd_ok("account", &["show"]), shown);

    rig.renewd_ok("account", &["deactivate"]);
    assert!(
        !file.exists(),
        "the deactivated account's file is set aside"
    );
    rig.renewd_ok("renew", &["--force", "www"]);
    assert_eq!(rig.pebble.count_log(Pebble::ACCOUNT_CREATED_LOG), 2);
    assert_eq!(
        rig.renewd("account", &["show", "--ca", "nope"])
            .status
            .code(),
        Some(2),
        "an unknown CA name is a bad command line"
    );
}

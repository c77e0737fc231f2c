//! Configuration mistakes through the real binary: each gives `FILE:LINE:COL: message` and
//! exit 78, from `check` and from `run`, and nothing is created or changed on disk. Problems
//! that stop one certificate only are warnings, judged alike by `check`, `run` and SIGHUP.

use crate::common;
use crate::common::rig;

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use std::time::Duration;

use common::{renewd_bin, wait_until, write_exec, PebbleOptions};
use nix::sys::signal::Signal;
use rig::Rig;

const EX_CONFIG: i32 = 78;

/// A valid configuration (9 lines) that the cases below break one way each.
fn base(dir: &Path) -> String {
    format!(
        r#"state_dir = "{d}/state"
[ca.le]
directory = "https://127.0.0.1:14000/dir"
accept_terms = true
[[certificate]]
name = "www"
domains = ["www.test"]
challenge = {{ type = "http-01", listen = "127.0.0.1:5002" }}
files = {{ fullchain = "{d}/tls/www.pem", key = "{d}/tls/www.key" }}
"#,
        d = dir.display()
    )
}

fn renewd(args: &[&str], config: &Path) -> Output {
    Command::new(renewd_bin())
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .expect("run renewd")
}

/// Writes `text` as the main configuration, runs `check` and `run --once`, and asserts both
/// exit 78 printing `expect_at` (a `FILE:LINE:COL` or `FILE:LINE:` prefix) and `words`.
fn assert_config_error(dir: &Path, text: &str, expect_at: &str, words: &[&str]) {
    let cfg = dir.join("renewd.toml");
    fs::write(&cfg, text).unwrap();
    for args in [&["check"][..], &["run", "--once"][..]] {
        let out = renewd(args, &cfg);
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            out.status.code(),
            Some(EX_CONFIG),
            "{args:?} on\n{text}\ngave\n{all}"
        );
        let at = format!("{}:{expect_at}", cfg.display());
        assert!(all.contains(&at), "{args:?}: expected {at} in\n{all}");
        for w in words {
            assert!(all.contains(w), "{args:?}: expected {w:?} in\n{all}");
        }
    }
    assert!(
        !dir.join("state").exists(),
        "a bad configuration creates nothing"
    );
    assert!(!dir.join("tls").exists());
}

#[test]
fn the_base_configuration_is_valid() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path().join("tls")).unwrap();
    let cfg = dir.path().join("renewd.toml");
    // `check` also wants every certificate to have an owner (tests/it/inventory.rs).
    fs::write(
        &cfg,
        format!("{}owner = \"ops@example.org\"\n", base(dir.path())),
    )
    .unwrap();
    let out = renewd(&["check"], &cfg);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok (1 certificate"));
    assert!(!dir.path().join("state").exists(), "check touches nothing");
}

#[test]
fn every_configuration_mistake_names_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let b = base(d);
    let cases: Vec<(&str, String, &str, Vec<&str>)> = vec![
        ("TOML syntax", format!("{b}renew_before = \n"), "10:", vec![]),
        (
            "unknown key, with suggestion",
            format!("{b}renew_befor = \"30d\"\n"),
            "10:1:",
            vec!["renew_befor", "renew_before"],
        ),
        (
            "unknown top-level key",
            format!("stat_dir = \"/x\"\n{b}"),
            "1:1:",
            vec!["stat_dir", "state_dir"],
        ),
        (
            "wrong type",
            format!("max_concurrent_renewals = \"four\"\n{b}"),
            "1:",
            vec!["max_concurrent_renewals"],
        ),
        ("key mode too wide", format!("{b}key_mode = \"0644\"\n"), "10:", vec!["key_mode"]),
        ("undefined CA", format!("{b}ca = [\"nope\"]\n"), "10:", vec!["nope"]),
        ("bad duration", format!("{b}renew_before = \"30 days\"\n"), "10:", vec!["renew_before"]),
        ("bad key type", format!("{b}key_type = \"dsa-1024\"\n"), "10:", vec!["dsa-1024"]),
        (
            "unknown challenge type",
            b.replace("type = \"http-01\"", "type = \"http-02\""),
            "8:",
            vec!["http-02"],
        ),
        (
            "wildcard without dns-01",
            b.replace("[\"www.test\"]", "[\"*.www.test\"]"),
            "7:",
            vec!["*.www.test", "dns-01"],
        ),
        (
            "bad certificate name",
            b.replace("name = \"www\"", "name = \"../etc\""),
            "6:",
            vec!["name"],
        ),
        (
            "files without a key",
            b.replace(&format!(", key = \"{}/tls/www.key\"", d.display()), ""),
            "9:",
            vec!["key"],
        ),
        (
            "relative file path",
            b.replace(&format!("{}/tls/www.pem", d.display()), "tls/www.pem"),
            "9:",
            vec!["absolute"],
        ),
        (
            "duplicate certificate name",
            format!("{b}[[certificate]]\nname = \"www\"\ndomains = [\"x.test\"]\nchallenge = {{ type = \"http-01\", listen = \"127.0.0.1:5002\" }}\nfiles = {{ fullchain = \"/x/a.pem\", key = \"/x/a.key\" }}\n"),
            "11:",
            vec!["www", ":6:"],
        ),
        (
            "terms not accepted",
            b.replace("accept_terms = true", "accept_terms = false"),
            "4:",
            vec!["accept_terms"],
        ),
        (
            "inline secret",
            b.replace("accept_terms = true", "accept_terms = true\neab_hmac_key = \"c2VjcmV0\""),
            "5:1:",
            vec!["eab_hmac_key_file"],
        ),
    ];
    for (what, text, at, words) in cases {
        eprintln!("case: {what}");
        assert_config_error(d, &text, at, &words);
    }
}

#[test]
fn a_key_set_twice_across_conf_d_names_both_places() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::create_dir_all(d.join("conf.d")).unwrap();
    fs::write(
        d.join("conf.d/10-more.toml"),
        format!("\n\nstate_dir = \"{}/other\"\n", d.display()),
    )
    .unwrap();
    let out = {
        let cfg = d.join("renewd.toml");
        fs::write(&cfg, base(d)).unwrap();
        renewd(&["check"], &cfg)
    };
    let all =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(EX_CONFIG), "{all}");
    assert!(
        all.contains(&format!("{}:3:", d.join("conf.d/10-more.toml").display())),
        "{all}"
    );
    assert!(
        all.contains(&format!("{}:1:", d.join("renewd.toml").display())),
        "{all}"
    );
}

#[test]
fn conf_d_files_add_certificates_in_name_order() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::create_dir_all(d.join("conf.d")).unwrap();
    fs::create_dir_all(d.join("tls")).unwrap();
    let extra = |name: &str| {
        format!(
            "[[certificate]]\nname = \"{name}\"\ndomains = [\"{name}.test\"]\nca = [\"le\"]\nchallenge = {{ type = \"http-01\", listen = \"127.0.0.1:5002\" }}\nfiles = {{ fullchain = \"{d}/tls/{name}.pem\", key = \"{d}/tls/{name}.key\" }}\n",
            d = d.display()
        )
    };
    fs::write(d.join("conf.d/20-b.toml"), extra("b")).unwrap();
    fs::write(d.join("conf.d/10-a.toml"), extra("a")).unwrap();
    fs::write(d.join("conf.d/ignored.txt"), "not toml at all [").unwrap();
    let cfg = d.join("renewd.toml");
    fs::write(&cfg, base(d)).unwrap();
    let out = renewd(&["status", "--json"], &cfg);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["www", "a", "b"]);
}

#[test]
fn check_finds_missing_directories_and_unusable_hooks() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let hook = d.join("not-executable.sh");
    fs::write(&hook, "#!/bin/sh\n").unwrap();
    let good = d.join("good.sh");
    write_exec(&good, "true\n");
    // No tls/ directory; one hook not executable, one missing, one fine.
    let text = format!(
        "{}reload = [[\"{}\"], [\"{}/missing\"], [\"{}\"]]\n",
        base(d),
        hook.display(),
        d.display(),
        good.display()
    );
    let cfg = d.join("renewd.toml");
    fs::write(&cfg, &text).unwrap();
    // They stop this one certificate only: warnings, exit 0; 78 with --strict.
    let out = renewd(&["check"], &cfg);
    let all =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{all}");
    let file = cfg.display().to_string();
    assert!(
        all.lines()
            .any(|l| l.starts_with(&format!("{file}:9:")) && l.contains(": warning: the directory")),
        "files' directory missing: {all}"
    );
    assert!(all.contains(&format!("{file}:10:")), "hooks: {all}");
    assert!(all.contains("not-executable.sh"), "{all}");
    assert!(all.contains("missing"), "{all}");
    assert!(
        !all.contains("good.sh"),
        "the good hook is not reported: {all}"
    );
    assert!(
        all.contains("1 certificate(s) not renewable as written"),
        "{all}"
    );
    let strict = renewd(&["check", "--strict"], &cfg);
    assert_eq!(strict.status.code(), Some(EX_CONFIG));
    assert_eq!(
        String::from_utf8_lossy(&strict.stdout)
            .lines()
            .take(4)
            .collect::<Vec<_>>(),
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .take(4)
            .collect::<Vec<_>>(),
        "--strict prints the same problems"
    );
    // `run` applies the same rule: it logs the same warnings, leaves the certificate
    // alone (no CA is contacted, nothing created beside the state directory) and fails it.
    let run = renewd(&["run", "--once"], &cfg);
    let logged = String::from_utf8_lossy(&run.stderr).into_owned();
    assert_eq!(run.status.code(), Some(1), "{logged}");
    for line in String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(": warning: "))
    {
        assert!(logged.contains(line), "run logs {line:?}:\n{logged}");
    }
    assert!(logged.contains("www: due"), "{logged}");
    assert!(!d.join("tls").exists());
}

#[test]
fn a_state_dir_that_cannot_be_created_is_an_error_for_check_and_run() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::create_dir_all(d.join("tls")).unwrap();
    let text = base(d).replace(
        &format!("{}/state", d.display()),
        &format!("{}/absent/state", d.display()),
    );
    let cfg = d.join("renewd.toml");
    fs::write(&cfg, text).unwrap();
    for args in [&["check"][..], &["run", "--once"][..]] {
        let out = renewd(args, &cfg);
        let all = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(EX_CONFIG), "{args:?}: {all}");
        assert!(
            all.lines()
                .any(|l| l.starts_with(&format!("{}:1:", cfg.display()))
                    && l.contains(": the parent")),
            "{args:?}: {all}"
        );
        assert!(!all.contains("warning: the parent"), "{all}");
    }
}

#[test]
fn a_missing_configuration_file_is_a_configuration_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("absent.toml");
    let out = renewd(&["check"], &cfg);
    assert_eq!(out.status.code(), Some(EX_CONFIG));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("{}:1:1:", cfg.display())));
    // RENEWD_CONFIG is honoured when --config is absent.
    let out = Command::new(renewd_bin())
        .arg("check")
        .env("RENEWD_CONFIG", &cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(EX_CONFIG));
    assert!(String::from_utf8_lossy(&out.stderr).contains("absent.toml:1:1:"));
}

#[test]
fn a_bad_command_line_exits_2() {
    let out = Command::new(renewd_bin()).args(["renew"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(renewd_bin())
        .args(["frobnicate"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn the_shipped_example_configuration_passes_check_and_manages_nothing() {
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/renewd.toml");
    let out = renewd(&["check"], &example);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("ok (0 certificate(s)"), "{stdout}");
}

/// One certificate whose target directory is missing, one without an owner, one fine:
/// `check` warns (exit 0, 78 with --strict); the daemon logs the same warnings, issues the
/// other two, shows the first as not renewable (status, inventory, renew); after the
/// directory is made, SIGHUP judges again and it is issued.
#[test]
fn check_run_and_sighup_agree_that_one_bad_certificate_stops_only_itself() {
    let rig = Rig::new(PebbleOptions::default());
    let gone_dir = rig.path("gone");
    let body = format!(
        "{}{}{}",
        rig.cert("www", &["www.test"], ""),
        rig.cert("anon", &["anon.test"], "")
            .replace("owner = \"ops@example.org\"\n", ""),
        rig.cert("gone", &["gone.test"], "")
            .replace("/tls/", "/gone/"),
    );
    rig.write_config(&body);
    let file = rig.config_path.display().to_string();

    let out = rig.renewd("check", &[]);
    assert_eq!(out.status.code(), Some(0));
    let warnings: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with(&format!("{file}:")) && l.contains(": warning: "))
        .map(str::to_string)
        .collect();
    assert!(
        warnings.iter().any(|l| l.contains("`anon` has no `owner`")),
        "{warnings:?}"
    );
    assert!(
        warnings
            .iter()
            .any(|l| l.contains(&format!("the directory `{}`", gone_dir.display()))),
        "{warnings:?}"
    );
    assert_eq!(rig.renewd("check", &["--strict"]).status.code(), Some(78));

    let mut d = rig.spawn_daemon();
    wait_until(Duration::from_secs(60), "www and anon issued", || {
        rig.fullchain("www").exists() && rig.fullchain("anon").exists()
    });
    for w in &warnings {
        assert!(d.log().contains(w.as_str()), "the daemon logs {w:?}");
    }
    assert!(
        d.log().contains("3 certificates, next: www")
            || d.log().contains("3 certificates, next: anon"),
        "the next renewal is never the certificate that cannot be renewed"
    );
    assert!(d.log().contains(", 1 not renewable as configured"));
    let status: serde_json::Value =
        serde_json::from_str(&rig.renewd_ok("status", &["--json"])).expect("status json");
    let row = |name: &str| {
        status
            .as_array()
            .expect("rows")
            .iter()
            .find(|r| r["name"] == name)
            .cloned()
            .expect("row")
    };
    assert!(
        row("gone")["not_renewable"]
            .as_str()
            .is_some_and(|w| w.starts_with(&format!("{file}:")) && w.contains("does not exist")),
        "{status}"
    );
    assert!(row("www")["not_renewable"].is_null(), "{status}");
    assert!(row("anon")["not_renewable"].is_null(), "owner is advisory");
    assert!(rig
        .renewd_ok("status", &[])
        .contains("NOT RENEWABLE as configured"));
    let inventory = rig.renewd_ok("inventory", &["--json"]);
    assert!(inventory.contains("not renewable: "), "{inventory}");
    let out = rig.renewd("renew", &["--force", "gone"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("gone: failed: not renewable"));

    fs::create_dir(&gone_dir).expect("mkdir");
    fs::set_permissions(
        &gone_dir,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    d.signal(Signal::SIGHUP);
    wait_until(Duration::from_secs(60), "gone issued after SIGHUP", || {
        gone_dir.join("gone.pem").exists()
    });
    let owner_warning = warnings
        .iter()
        .find(|l| l.contains("`anon` has no `owner`"))
        .expect("owner warning");
    assert_eq!(
        d.log().matches(owner_warning.as_str()).count(),
        2,
        "logged at start and again on SIGHUP"
    );

    // What `check` calls an error, SIGHUP refuses: a state_dir that cannot be created.
    let broken = fs::read_to_string(&rig.config_path)
        .expect("config")
        .replace(
            &format!("state_dir = \"{}\"", rig.state_dir.display()),
            "state_dir = \"/nonexistent-renewd-test/state\"",
        );
    fs::write(&rig.config_path, broken).expect("write");
    assert_eq!(rig.renewd("check", &[]).status.code(), Some(78));
    d.signal(Signal::SIGHUP);
    wait_until(Duration::from_secs(10), "the refusal logged", || {
        d.log().contains("configuration not reloaded")
    });
    assert!(
        d.log().contains("of `state_dir` does not exist"),
        "{}",
        d.log()
    );
    assert!(d.stop().success());
}

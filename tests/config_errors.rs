//! Configuration mistakes through the real binary: each gives `FILE:LINE:COL: message` and
//! exit 78, from `check` and from `run`, and nothing is created or changed on disk.

mod common;

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use common::{renewd_bin, write_exec};

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
    // `check` also wants every certificate to have an owner (tests/inventory.rs).
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
    let out = renewd(&["check"], &cfg);
    let all =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(EX_CONFIG), "{all}");
    let file = cfg.display().to_string();
    assert!(
        all.contains(&format!("{file}:9:")),
        "files' directory missing: {all}"
    );
    assert!(all.contains(&format!("{file}:10:")), "hooks: {all}");
    assert!(all.contains("not-executable.sh"), "{all}");
    assert!(all.contains("missing"), "{all}");
    assert!(
        !all.contains("good.sh"),
        "the good hook is not reported: {all}"
    );
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

//! Loading from disk, `check_environment`, `diagnose` and unknown certificate names.

use super::*;

// --- loading from disk and the environment ----------------------------------------

#[test]
fn load_reads_conf_d_in_name_order() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let main = dir.path().join("renewd.toml");
    fs::write(&main, BASE)?;
    let conf_d = dir.path().join("conf.d");
    fs::create_dir(&conf_d)?;
    fs::write(conf_d.join("20-b.toml"), API_DROPIN.replace("api", "b"))?;
    fs::write(conf_d.join("10-a.toml"), API_DROPIN.replace("api", "a"))?;
    fs::write(conf_d.join(".hidden.toml"), "garbage = [")?;
    fs::write(conf_d.join("notes.txt"), "garbage = [")?;
    let config = load(&main)?;
    let names: Vec<&str> = config
        .certificates
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(names, ["www", "a", "b"]);
    assert_eq!(config.sources.len(), 3);
    assert_eq!(config.sources[1], conf_d.join("10-a.toml"));
    Ok(())
}

#[test]
fn load_reports_a_missing_main_file_at_1_1() {
    let err = load(Path::new("/nonexistent/renewd.toml")).expect_err("missing");
    assert_eq!(err.problems.len(), 1);
    assert!(err.problems[0]
        .to_string()
        .starts_with("/nonexistent/renewd.toml:1:1: cannot read configuration: "));
}

#[test]
fn load_without_conf_d_is_fine() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let main = dir.path().join("renewd.toml");
    fs::write(&main, "")?;
    assert_eq!(load(&main)?.sources, [main]);
    Ok(())
}

#[test]
fn resolve_path_prefers_the_flag() {
    let flag = Some(Path::new("/tmp/x.toml"));
    assert_eq!(resolve_path(flag), Path::new("/tmp/x.toml"));
    let env = || Some(std::ffi::OsString::from("/srv/renewd.toml"));
    assert_eq!(resolve_path_with(flag, env()), Path::new("/tmp/x.toml"));
    assert_eq!(
        resolve_path_with(None, env()),
        Path::new("/srv/renewd.toml")
    );
    assert_eq!(
        resolve_path_with(None, Some("".into())),
        Path::new(DEFAULT_CONFIG)
    );
    assert_eq!(resolve_path_with(None, None), Path::new(DEFAULT_CONFIG));
}

// --- check_environment ------------------------------------------------------------

#[test]
fn check_environment_reports_the_machine() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let root = dir.path().display().to_string();
    let tls = dir.path().join("tls");
    fs::create_dir(&tls)?;
    let webroot = dir.path().join("www");
    fs::create_dir(&webroot)?;
    let script = dir.path().join("reload.sh");
    fs::write(&script, "#!/bin/sh\n")?;
    fs::set_permissions(&script, fs::Permissions::from_mode(0o644))?;
    let good = dir.path().join("good.sh");
    fs::write(&good, "#!/bin/sh\n")?;
    fs::set_permissions(&good, fs::Permissions::from_mode(0o755))?;
    let text = format!(
        r#"state_dir = "{root}/state/renewd"
[ca.le]
directory = "https://acme.example.org/directory"
accept_terms = true
trust_roots = "{root}/roots.pem"
[[certificate]]
name = "www"
domains = ["example.org"]
challenge = {{ type = "http-01", webroot = "{root}/www" }}
files = {{ fullchain = "{root}/tls/www.pem", key = "{root}/missing/www.key" }}
user = "renewd-no-such-user-4711"
group = "root"
reload = [["{root}/good.sh"], ["{root}/reload.sh", "x"], ["sh", "-c", "true"], ["renewd-no-such-cmd"], ["rel/x"]]
"#
    );
    let config = load_ok(&text);
    let found: Vec<String> = config
        .check_environment()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(found.len(), 8, "{found:#?}");
    assert_has(&found, MAIN, 6, 1, "certificate `www` has no `owner`");
    assert_has(&found, MAIN, 1, 13, "the parent");
    assert_has(&found, MAIN, 1, 13, "of `state_dir` does not exist");
    assert_has(&found, MAIN, 5, 15, "cannot read `trust_roots`");
    assert_has(
        &found,
        MAIN,
        10,
        45 + root.len(),
        "for `files.key` does not exist",
    );
    assert_has(
        &found,
        MAIN,
        11,
        8,
        "user `renewd-no-such-user-4711` does not exist",
    );
    assert_has(
        &found,
        MAIN,
        13,
        25 + root.len(),
        "reload.sh` is not executable",
    );
    assert_has(
        &found,
        MAIN,
        13,
        68 + 2 * root.len(),
        "`renewd-no-such-cmd` is not an executable found in $PATH",
    );
    assert_has(
        &found,
        MAIN,
        13,
        92 + 2 * root.len(),
        "`rel/x` must be an absolute path",
    );

    // Fix everything and the machine checks pass.
    fs::create_dir(dir.path().join("state"))?;
    fs::create_dir(dir.path().join("missing"))?;
    fs::write(
        dir.path().join("roots.pem"),
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
    )?;
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755))?;
    let text = text
        .replace("renewd-no-such-user-4711", "root")
        .replace(", [\"renewd-no-such-cmd\"], [\"rel/x\"]", "")
        .replace(
            "group = \"root\"",
            "group = \"root\"\nowner = \"ops@example.org\"",
        );
    let found = load_ok(&text).check_environment();
    assert!(found.is_empty(), "{found:#?}");
    Ok(())
}

#[test]
fn check_environment_trust_roots_need_a_certificate() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let roots = dir.path().join("roots.pem");
    fs::write(&roots, "not a certificate\n")?;
    let text = format!(
            "state_dir = \"{}/state\"\n[ca.le]\ndirectory = \"https://a.example/\"\naccept_terms = true\ntrust_roots = \"{}\"\n",
            dir.path().display(),
            roots.display()
        );
    let found: Vec<String> = load_ok(&text)
        .check_environment()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_has(&found, MAIN, 5, 15, "holds no PEM certificate");
    Ok(())
}

#[test]
fn check_environment_webroot_must_exist() {
    let text = BASE.replace("/var/www/html", "/nonexistent/renewd-webroot");
    let found: Vec<String> = load_ok(&text)
        .check_environment()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_has(
        &found,
        MAIN,
        8,
        43,
        "webroot `/nonexistent/renewd-webroot` does not exist",
    );
}

/// Two certificates inheriting `[defaults] files`' directory, one with its own webroot.
const DIAGNOSE: &str = r#"state_dir = "/var/lib/renewd"
[ca.le]
directory = "https://acme.example/dir"
accept_terms = true
[defaults]
owner = "ops@example.org"
files = { fullchain = "/srv/tls/shared.pem", key = "/srv/tls/shared.key" }
[[certificate]]
name = "a"
domains = ["a.example"]
challenge = { type = "http-01", webroot = "/var/www/a" }
files = { fullchain = "/srv/a/a.pem", key = "/srv/a/a.key" }
[[certificate]]
name = "b"
domains = ["b.example"]
challenge = { type = "http-01", listen = "[::]:80" }
[[certificate]]
name = "c"
domains = ["c.example"]
challenge = { type = "http-01", listen = "[::]:80" }
files = { fullchain = "/srv/c/c.pem", key = "/srv/c/c.key" }
"#;

#[test]
fn diagnose_makes_a_certificate_problem_a_warning_that_stops_only_its_certificates() {
    let cfg = load_from_sources(&[(PathBuf::from(MAIN), DIAGNOSE.to_string())])
        .expect("valid configuration");
    let a = cfg.certificate("a").expect("a");
    let b = cfg.certificate("b").expect("b");
    let c = cfg.certificate("c").expect("c");
    let found = vec![
        // At a's own value.
        Problem::new(
            a.key_location("challenge.webroot").clone(),
            "webroot missing",
        ),
        // At an inherited [defaults] value: b only (a and c have their own files).
        Problem::new(
            b.key_location("files.fullchain").clone(),
            "directory missing",
        ),
        // Advisory: c stays renewable.
        Problem::warning(c.location.clone(), "no owner"),
        // Not at a certificate: keeps its severity.
        Problem::new(cfg.key_location("state_dir"), "parent missing"),
        Problem::warning(cfg.cas["le"].key_location("directory").clone(), "CA file"),
    ];
    let d = cfg.diagnose(found);
    assert_eq!(
        d.not_renewable
            .keys()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        ["a", "b"]
    );
    assert!(d.not_renewable["a"].ends_with(": webroot missing"));
    assert!(d.not_renewable["b"].starts_with(&format!("{MAIN}:7:")));
    assert!(d.has_errors());
    let errors = d.errors().expect("errors");
    assert_eq!(errors.problems.len(), 1);
    assert_eq!(errors.problems[0].message, "parent missing");
    assert_eq!(d.warnings().count(), 4);
    let shown: Vec<String> = d.problems.iter().map(|p| p.to_string()).collect();
    assert!(
        shown.contains(&format!("{MAIN}:1:13: parent missing")),
        "{shown:?}"
    );
    assert!(
        shown
            .iter()
            .any(|l| l.starts_with(&format!("{MAIN}:11:"))
                && l.ends_with(": warning: webroot missing")),
        "{shown:?}"
    );
    // Without the state_dir error the configuration is usable.
    let d = cfg.diagnose(vec![Problem::new(
        a.key_location("challenge.webroot").clone(),
        "webroot missing",
    )]);
    assert!(!d.has_errors() && d.errors().is_none());
}

#[test]
fn unknown_certificate_names_get_the_closest_configured_one() {
    let cfg = load_from_sources(&[(PathBuf::from(MAIN), DIAGNOSE.to_string())])
        .expect("valid configuration");
    assert!(cfg.check_names(&["a".into(), "c".into()]).is_ok());
    let e = cfg
        .check_names(&["a".into(), "zzzzzz".into()])
        .expect_err("unknown")
        .to_string();
    assert_eq!(
        e,
        "no certificate named `zzzzzz` in the configuration; configured: a, b, c"
    );
}

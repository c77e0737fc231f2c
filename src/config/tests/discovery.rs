//! `[discovery]`'s `listeners`, `pkcs12_password_files` and `[[discovery.owner]]`.

use super::*;

const DISCOVERY: &str = r#"[discovery]
paths = ["/etc/ssl"]
listeners = true
pkcs12_password_files = { "/opt/app/keystore.p12" = "/etc/renewd/app.pass", "/opt/tomcat/**/*.pfx" = "/etc/renewd/tomcat.pass" }

[[discovery.owner]]
match = "/etc/postgresql/**"
owner = "dba@example.org"
service = "postgresql"

[[discovery.owner]]
match = "listener:*:443"
service = "nginx"
"#;

#[test]
fn listeners_password_files_and_owner_rules_are_read() {
    let config = load_ok(DISCOVERY);
    let d = config.discovery.expect("[discovery]");
    assert!(d.listeners);
    let files: Vec<(&str, &Path)> = d
        .pkcs12_password_files
        .iter()
        .map(|f| (f.bundles.as_str(), f.password_file.as_path()))
        .collect();
    assert_eq!(
        files,
        [
            ("/opt/app/keystore.p12", Path::new("/etc/renewd/app.pass")),
            ("/opt/tomcat/**/*.pfx", Path::new("/etc/renewd/tomcat.pass"))
        ]
    );
    assert!(d.pkcs12_password_files[1]
        .bundles
        .is_match(Path::new("/opt/tomcat/conf/x/server.pfx")));
    assert_eq!(d.owners.len(), 2);
    assert_eq!(d.owners[0].owner.as_deref(), Some("dba@example.org"));
    assert_eq!(
        d.owners[1].matches,
        OwnerMatch::Listener {
            ip: None,
            port: Some(443)
        }
    );
    assert_eq!(d.owners[1].owner, None);
    // Off unless asked.
    let config = load_ok("[discovery]\npaths = []\n");
    let d = config.discovery.expect("[discovery]");
    assert!(!d.listeners && d.pkcs12_password_files.is_empty() && d.owners.is_empty());
}

#[test]
fn mistakes_are_reported_where_they_are_written() {
    let bad = |from: &str, to: &str| DISCOVERY.replace(from, to);
    assert_only(
        &bad(
            "match = \"/etc/postgresql/**\"",
            "match = \"/etc/[postgresql/**\"",
        ),
        7,
        9,
        "is not a valid glob",
    );
    assert_only(
        &bad("match = \"listener:*:443\"", "match = \"port:http\""),
        12,
        9,
        "is not a port",
    );
    assert_only(
        &bad("match = \"listener:*:443\"", "match = \"listener:::1:443\""),
        12,
        9,
        "`[IPv6]`",
    );
    assert_only(
        &bad("match = \"listener:*:443\"", "match = \"postgres\""),
        12,
        9,
        "must be an absolute path glob",
    );
    assert_only(
        &bad("service = \"nginx\"", "service = \"nginx\"\nowners = \"x\""),
        14,
        1,
        "unknown key `owners` in [[discovery.owner]]; did you mean `owner`?",
    );
    assert_only(
        &bad("listeners = true", "listeners = \"yes\""),
        3,
        13,
        "`listeners` must be",
    );
    assert_only(
        &bad("\"/opt/tomcat/**/*.pfx\"", "\"/opt/{tomcat/*.pfx\""),
        4,
        77,
        "is not a valid glob",
    );
    assert_only(
        &bad("\"/etc/renewd/app.pass\"", "\"app.pass\""),
        4,
        53,
        "must be an absolute path",
    );
    assert_only(
        &bad("listeners = true", "listener = true"),
        3,
        1,
        "did you mean `listeners`?",
    );
    let found = problems(&bad("match = \"listener:*:443\"\n", ""));
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(found[0].contains("needs `match`"), "{found:#?}");
    let found = problems(&bad("service = \"nginx\"\n", ""));
    assert!(
        found[0].contains("needs `owner`, `service` or both"),
        "{found:#?}"
    );
}

#[test]
fn check_warns_about_missing_empty_and_world_readable_password_files(
) -> Result<(), Box<dyn std::error::Error>> {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir()?;
    let d = dir.path().display();
    let (good, open, empty) = (
        dir.path().join("good.pass"),
        dir.path().join("open.pass"),
        dir.path().join("empty.pass"),
    );
    fs::write(&good, "s3cret\n")?;
    fs::set_permissions(&good, fs::Permissions::from_mode(0o600))?;
    fs::write(&open, "s3cret\n")?;
    fs::set_permissions(&open, fs::Permissions::from_mode(0o644))?;
    fs::write(&empty, "\n")?;
    fs::set_permissions(&empty, fs::Permissions::from_mode(0o600))?;
    let text = format!(
        "state_dir = \"{d}/state\"\n[discovery]\npaths = []\npkcs12_password_files = {{ \
         \"/a/*.p12\" = \"{d}/good.pass\", \"/b/*.p12\" = \"{d}/open.pass\", \
         \"/c/*.p12\" = \"{d}/empty.pass\", \"/d/*.p12\" = \"{d}/missing.pass\" }}\n"
    );
    let found = load_ok(&text).check_environment();
    let messages: Vec<String> = found.iter().map(ToString::to_string).collect();
    assert_eq!(found.len(), 3, "{messages:#?}");
    assert!(found.iter().all(|p| p.severity == Severity::Warning));
    assert!(messages[0].contains("open.pass` is readable by every user"));
    assert!(messages[1].contains("empty.pass` is empty"));
    assert!(messages[2].contains("missing.pass`: does not exist"));
    Ok(())
}

/// The SPEC's `[discovery]` example, verbatim, and its `port:` form.
#[test]
fn the_spec_discovery_example_is_read() {
    let spec = r#"[discovery]
paths = ["/etc/ssl", "/etc/nginx"]          # scanned and watched for certificates nobody manages
listeners = false                           # true: also the certificates served by this host's TLS listeners
alert_before = "30d"

[[discovery.owner]]                         # owner rules for what discovery finds
match = "/etc/postgresql/**"                # a path glob, or "port:5432"
owner = "dba@example.org"
service = "postgresql"
"#;
    let d = load_ok(spec).discovery.expect("[discovery]");
    assert!(!d.listeners);
    assert_eq!(d.owners.len(), 1);
    assert!(
        matches!(&d.owners[0].matches, OwnerMatch::Path(g) if g.as_str() == "/etc/postgresql/**")
    );
    let d = load_ok(&spec.replace("/etc/postgresql/**\"", "port:5432\""))
        .discovery
        .expect("[discovery]");
    assert_eq!(
        d.owners[0].matches,
        OwnerMatch::Listener {
            ip: None,
            port: Some(5432)
        }
    );
}

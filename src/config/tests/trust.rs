//! `[trust]` and the `[[exception]]` tables that acknowledge a trust anchor.

use super::*;

const FP: &str = "sha256:6c7c6f4e2b0a9d8e7f6a5b4c3d2e1f0a1b2c3d4e5f60718293a4b5c6d7e8f901";

#[test]
fn trust_defaults_and_values() {
    let c = load_ok("[trust]\npaths = [\"/etc/nginx/client-ca.pem\", \"/etc/pki/mtls\"]\n");
    let t = c.trust.expect("[trust]");
    assert_eq!(
        t.paths,
        [
            PathBuf::from("/etc/nginx/client-ca.pem"),
            PathBuf::from("/etc/pki/mtls")
        ]
    );
    assert_eq!(t.expiring_within, DEFAULT_TRUST_EXPIRING_WITHIN);
    assert!(!t.system);
    let c = load_ok("[trust]\nexpiring_within = \"30d\"\nsystem = true\n");
    let t = c.trust.expect("[trust]");
    assert_eq!(t.expiring_within, Duration::from_secs(30 * 86_400));
    assert!(t.system && t.paths.is_empty());
    assert!(load_ok("").trust.is_none());
}

#[test]
fn trust_mistakes_are_reported_where_written() {
    assert_only(
        "[trust]\npaths = [\"ca.pem\"]\n",
        2,
        10,
        "must be an absolute path",
    );
    assert_only(
        "[trust]\npaths = [\"/a.pem\", \"/a.pem\"]\n",
        2,
        20,
        "listed twice",
    );
    assert_only(
        "[trust]\nexpiring_within = \"soon\"\n",
        2,
        19,
        "`expiring_within`",
    );
    assert_only(
        "[trust]\npath = [\"/a.pem\"]\n",
        2,
        1,
        "did you mean `paths`",
    );
}

#[test]
fn an_exception_with_a_fingerprint_acknowledges_an_anchor() {
    let text = format!(
        "[[exception]]\nfingerprint = \"{FP}\"\npath = \"/etc/nginx/client-ca.pem\"\n\
         owner = \"pki@example.org\"\nreason = \"partner CA\"\nreview_by = 2027-03-01\n"
    );
    let c = load_ok(&text);
    assert!(c.exceptions.is_empty(), "not a certificate exception");
    let a = &c.anchor_exceptions[0];
    assert_eq!(a.fingerprint[0], 0x6c);
    assert_eq!(
        a.path.as_deref(),
        Some(Path::new("/etc/nginx/client-ca.pem"))
    );
    assert_eq!(
        (a.owner.as_str(), a.review_by.as_str()),
        ("pki@example.org", "2027-03-01")
    );
    assert_eq!(a.location, loc(1, 1));
    // Declared twice for the same path.
    let twice = format!("{text}{text}");
    assert_only(&twice, 7, 1, "declared again here; first declared at");
}

#[test]
fn anchor_exception_mistakes_are_reported_where_written() {
    let base = "owner = \"o\"\nreason = \"r\"\nreview_by = \"2027-03-01\"\n";
    assert_only(
        &format!("[[exception]]\nfingerprint = \"sha256:abc\"\n{base}"),
        2,
        15,
        "has 3 hex digits",
    );
    assert_only(
        &format!(
            "[[exception]]\nfingerprint = \"{FP}\"\nreason = \"r\"\nreview_by = \"2027-03-01\"\n"
        ),
        1,
        1,
        "[[exception]] needs `owner`",
    );
    assert_only(
        &format!("[[exception]]\nfingerprint = \"{FP}\"\nalert_before = \"30d\"\n{base}"),
        3,
        1,
        "with `fingerprint`",
    );
}

#[test]
fn check_warns_of_a_trust_path_that_is_not_there() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let there = dir.path().join("ca.pem");
    fs::write(&there, "")?;
    let text = format!(
        "state_dir = \"{d}/state\"\n[trust]\npaths = [\"{}\", \"{d}/gone.pem\"]\n",
        there.display(),
        d = dir.path().display()
    );
    let found: Vec<String> = load_ok(&text)
        .check_environment()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_has(
        &found,
        MAIN,
        3,
        9,
        "gone.pem` of `[trust] paths`: No such file",
    );
    assert!(found[0].contains("warning:"), "{found:#?}");
    Ok(())
}

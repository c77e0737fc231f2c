//! `[ca.NAME]` and the other sections.

use super::*;

// --- CAs --------------------------------------------------------------------------

#[test]
fn ca_timeout_defaults_and_bounds() {
    assert_eq!(load_ok(BASE).cas["le"].timeout, DEFAULT_CA_TIMEOUT);
    let text = BASE.replace(
        "accept_terms = true",
        "accept_terms = true\ntimeout = \"5s\"",
    );
    assert_eq!(load_ok(&text).cas["le"].timeout, Duration::from_secs(5));
    let text = BASE.replace(
        "accept_terms = true",
        "accept_terms = true\ntimeout = \"0s\"",
    );
    assert_only(&text, 4, 11, "must be at least 1s");
    let text = BASE.replace(
        "accept_terms = true",
        "accept_terms = true\ntimeout = \"1h\"",
    );
    assert_only(&text, 4, 11, "must be at most 5m");
}

#[test]
fn ari_is_asked_unless_turned_off() {
    assert!(load_ok(BASE).cas["le"].ari);
    let text = BASE.replace("accept_terms = true", "accept_terms = true\nari = false");
    assert!(!load_ok(&text).cas["le"].ari);
    let text = BASE.replace("accept_terms = true", "accept_terms = true\nari = \"no\"");
    assert_only(&text, 4, 7, "`ari` must be");
}

#[test]
fn accept_terms_must_be_true() {
    let text = BASE.replace("accept_terms = true", "accept_terms = false");
    assert_only(&text, 3, 16, "renewd cannot register an account");
    let text = BASE.replace("accept_terms = true", "");
    assert_only(&text, 1, 1, "[ca.le] needs `accept_terms = true`");
}

#[test]
fn directory_must_be_https_except_loopback() {
    let dir = |url: &str| BASE.replace("https://acme.example.org/directory", url);
    assert_only(
        &dir("http://acme.example.org/directory"),
        2,
        13,
        "must use https://",
    );
    assert_only(&dir("acme.example.org"), 2, 13, "is not a URL");
    assert_only(
        &dir("https://user:pw@acme.example.org/"),
        2,
        13,
        "user name or password",
    );
    for ok in [
        "http://127.0.0.1:14000/dir",
        "http://localhost:14000/dir",
        "http://[::1]:14000/dir",
        "https://[2001:db8::1]/dir",
    ] {
        assert_eq!(load_ok(&dir(ok)).cas["le"].directory, ok);
    }
}

#[test]
fn contact_must_be_mailto() {
    let text = BASE.replace(
        "accept_terms = true",
        "accept_terms = true\ncontact = [\"mailto:ops@example.org\", \"ops@example.org\"]",
    );
    assert_only(&text, 4, 38, "must be a mailto: URL");
}

#[test]
fn eab_needs_both_halves_and_loads_with_both() {
    let text = BASE.replace(
        "accept_terms = true",
        "accept_terms = true\neab_kid = \"kid-1\"",
    );
    assert_only(&text, 4, 1, "`eab_kid` needs `eab_hmac_key_file` too");
    let text = BASE.replace(
        "accept_terms = true",
        "accept_terms = true\neab_kid = \"kid-1\"\neab_hmac_key_file = \"/etc/renewd/eab.key\"",
    );
    let config = load_ok(&text);
    let ca = config.cas.values().next().expect("a CA");
    assert_eq!(ca.eab_kid.as_deref(), Some("kid-1"));
    assert_eq!(
        ca.eab_hmac_key_file.as_deref(),
        Some(Path::new("/etc/renewd/eab.key"))
    );
}

#[test]
fn ca_name_must_be_a_safe_file_name() {
    let text = BASE.replace("[ca.le]", "[ca.\"Let's Encrypt\"]");
    let found = problems(&text);
    assert_has(
        &found,
        MAIN,
        1,
        5,
        "CA name `Let's Encrypt` may only contain",
    );
}

// --- other sections ---------------------------------------------------------------

#[test]
fn exception_values_are_validated() {
    let text = "[[exception]]\npath = \"/etc/x.pem\"\nowner = \"a\"\nreason = \"b\"\nreview_by = \"2027-02-30\"\n[[exception]]\npath = \"/etc/y.pem\"\nowner = \"a\"\nreason = \"b\"\nreview_by = 2027-03-01\n";
    let found = problems(text);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_has(&found, MAIN, 5, 13, "that month has 28 days");
}

#[test]
fn alert_needs_something_to_do() {
    assert_has(
        &problems("[alert]\n"),
        MAIN,
        1,
        1,
        "[alert] needs `command`, `webhook` or both",
    );
}

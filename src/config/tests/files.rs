//! Whole files, TOML syntax and value types, and unknown keys.

use super::*;

// --- whole files ------------------------------------------------------------------

#[test]
fn spec_example_without_unsupported_parts_loads() {
    let config = load_ok(&supported_example());
    assert_eq!(config.state_dir, Path::new("/var/lib/renewd"));
    assert_eq!(config.control_socket, Path::new("/run/renewd/control.sock"));
    assert_eq!(config.max_concurrent_renewals, 4);
    let ca = &config.cas["letsencrypt"];
    assert_eq!(
        ca.directory,
        "https://acme-v02.api.letsencrypt.org/directory"
    );
    assert_eq!(ca.contact, ["mailto:ops@example.org"]);
    assert!(ca.accept_terms);
    assert_eq!(ca.location, loc(12, 1));
    let www = config.certificate("www").expect("certificate www");
    assert_eq!(www.domains, ["example.org", "www.example.org"]);
    assert_eq!(www.ca, ["letsencrypt"]);
    assert_eq!(www.owner.as_deref(), Some("platform@example.org"));
    assert_eq!(www.service.as_deref(), Some("nginx"));
    assert_eq!(www.key_type, KeyType::EcdsaP256);
    assert_eq!(www.renew_before, RenewBefore::Fraction(1.0 / 3.0));
    assert_eq!(www.challenge.certificate, "www");
    assert_eq!(www.challenge.domains, www.domains);
    assert_eq!(www.challenge.rules.len(), 1);
    assert_eq!(www.challenge.rules[0].pattern, None);
    assert_eq!(
        www.challenge.rules[0].config,
        ChallengeConfig::Http01Webroot {
            webroot: "/var/www/html".into(),
            trust_owner: false,
        }
    );
    assert_eq!(
        www.files.iter().collect::<Vec<_>>(),
        [
            (FileKind::Fullchain, Path::new("/etc/nginx/tls/www.pem")),
            (FileKind::Key, Path::new("/etc/nginx/tls/www.key")),
        ]
    );
    assert_eq!(www.user.as_deref(), Some("root"));
    assert_eq!(www.group.as_deref(), Some("ssl-cert"));
    assert_eq!(www.key_mode, 0o640);
    assert_eq!(www.reload, [["systemctl", "reload", "nginx"]]);
    assert_eq!(www.reload_timeout, Duration::from_secs(60));
    assert_eq!(
        www.verify,
        Some(VerifyConfig {
            connect: "127.0.0.1:443".into(),
            server_name: "example.org".into(),
            timeout: Duration::from_secs(30),
        })
    );
    assert_eq!(www.location, loc(27, 1));
    assert_eq!(config.sources, [PathBuf::from(MAIN)]);
    assert!(config.metrics.is_none() && config.alert.is_none());
    assert!(config.exceptions.is_empty() && config.discovery.is_none());
}

#[test]
fn spec_example_loads_its_governance_sections() {
    let config = load_ok(SPEC_EXAMPLE);
    assert_eq!(
        config.metrics.as_ref().map(|m| m.listen),
        Some("127.0.0.1:9443".parse().expect("addr"))
    );
    let alert = config.alert.as_ref().expect("[alert]");
    assert_eq!(
        alert.command.as_deref(),
        Some(&["/usr/local/bin/page-oncall".to_string()][..])
    );
    assert_eq!(
        alert.webhook.as_deref(),
        Some("https://alerts.example.org/hook")
    );
    assert_eq!(config.exceptions.len(), 1);
    assert_eq!(config.exceptions[0].owner, "netops@example.org");
    assert_eq!(config.exceptions[0].review_by, "2027-03-01");
    assert_eq!(config.exceptions[0].location, loc(44, 1));
    assert_eq!(
        config.discovery.as_ref().map(|d| d.paths.clone()),
        Some(vec![PathBuf::from("/etc/ssl"), PathBuf::from("/etc/nginx")])
    );
}

#[test]
fn empty_file_gives_defaults() {
    let config = load_ok("");
    assert_eq!(config.state_dir, Path::new(DEFAULT_STATE_DIR));
    assert_eq!(config.control_socket, Path::new(DEFAULT_CONTROL_SOCKET));
    assert_eq!(config.max_concurrent_renewals, 4);
    assert!(config.cas.is_empty() && config.certificates.is_empty());
}

#[test]
fn problems_display_one_per_line() {
    let e = load_one("state_dir = 1\ncontrol_socket = \"run\"\n").unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "{MAIN}:1:13: `state_dir` must be a string, found an integer\n\
                 {MAIN}:2:18: `control_socket` must be an absolute path, found `run`"
        )
    );
}

// --- syntax and types -------------------------------------------------------------

#[test]
fn toml_syntax_error_has_position() {
    assert_only(
        "state_dir = \"/x\"\nmax_concurrent_renewals = = 4\n",
        2,
        27,
        "invalid TOML",
    );
}

#[test]
fn toml_duplicate_key_in_one_file() {
    assert_only(
        "state_dir = \"/a\"\nstate_dir = \"/b\"\n",
        2,
        1,
        "duplicate key",
    );
}

#[test]
fn column_counts_characters_not_bytes() {
    assert_only("# é\nowner = \"ü\"; x = 1\n", 2, 12, "invalid TOML");
}

#[test]
fn wrong_type_names_both_types() {
    assert_only(
        "max_concurrent_renewals = \"4\"\n",
        1,
        27,
        "`max_concurrent_renewals` must be an integer, found a string",
    );
    assert_only(
        &with_cert("owner = [\"a\"]\n"),
        10,
        9,
        "`owner` must be a string, found an array",
    );
}

#[test]
fn log_level_is_checked() {
    assert_eq!(
        load_ok("log_level = \"debug\"\n").log_level.as_deref(),
        Some("debug")
    );
    assert_eq!(load_ok("").log_level, None);
    assert_only(
        "log_level = \"loud\"\n",
        1,
        13,
        "must be one of error, warn",
    );
}

#[test]
fn max_concurrent_renewals_range() {
    assert_only("max_concurrent_renewals = 0\n", 1, 27, "between 1 and 1024");
    assert_only(
        "max_concurrent_renewals = 1025\n",
        1,
        27,
        "between 1 and 1024",
    );
    assert_eq!(
        load_ok("max_concurrent_renewals = 1024\n").max_concurrent_renewals,
        1024
    );
}

#[test]
fn single_bracket_certificate_is_explained() {
    assert_only(
        "[certificate]\nname = \"x\"\n",
        1,
        1,
        "write [[certificate]] with double brackets",
    );
}

// --- unknown keys -----------------------------------------------------------------

#[test]
fn unknown_key_in_certificate_suggests() {
    let found = problems(&with_cert("renew_befor = \"30d\"\n"));
    assert_eq!(
            found,
            [format!(
                "{MAIN}:10:1: unknown key `renew_befor` in [[certificate]]; did you mean `renew_before`?"
            )]
        );
}

#[test]
fn unknown_keys_at_every_level() {
    let text = r#"stat_dir = "/x"
[ca.le]
directory = "https://acme.example.org/directory"
accept_terms = true
contacts = []
[defaults]
key_typ = "rsa-2048"
[[certificate]]
name = "www"
domains = ["example.org"]
challenge = { type = "http-01", webrot = "/srv" }
files = { fullchian = "/a", key = "/b" }
"#;
    let found = problems(text);
    assert_has(
        &found,
        MAIN,
        1,
        1,
        "unknown key `stat_dir` at the top level; did you mean `state_dir`?",
    );
    assert_has(
        &found,
        MAIN,
        5,
        1,
        "unknown key `contacts` in [ca.le]; did you mean `contact`?",
    );
    assert_has(
        &found,
        MAIN,
        7,
        1,
        "unknown key `key_typ` in [defaults]; did you mean `key_type`?",
    );
    assert_has(
        &found,
        MAIN,
        11,
        33,
        "unknown key `webrot` in `challenge`; did you mean `webroot`?",
    );
    assert_has(
        &found,
        MAIN,
        12,
        11,
        "unknown key `fullchian` in `files`; did you mean `fullchain`?",
    );
}

#[test]
fn unknown_keys_in_optional_sections() {
    let text = "[metrics]\nlisten = \"127.0.0.1:9443\"\nport = 1\n[alert]\nwebhok = \"https://a.example/\"\n[discovery]\npath = []\n";
    let found = problems(text);
    assert_has(&found, MAIN, 3, 1, "unknown key `port` in [metrics]");
    assert_has(
        &found,
        MAIN,
        5,
        1,
        "unknown key `webhok` in [alert]; did you mean `webhook`?",
    );
    assert_has(
        &found,
        MAIN,
        7,
        1,
        "unknown key `path` in [discovery]; did you mean `paths`?",
    );
}

#[test]
fn unknown_key_without_a_close_match_has_no_suggestion() {
    let found = problems(&with_cert("xyzzy = 1\n"));
    assert_eq!(
        found,
        [format!(
            "{MAIN}:10:1: unknown key `xyzzy` in [[certificate]]"
        )]
    );
}

#[test]
fn inline_secrets_point_to_file_variant() {
    let text = r#"[ca.le]
directory = "https://acme.example.org/directory"
accept_terms = true
eab_hmac_key = "c2VjcmV0"
"#;
    assert_only(text, 4, 1, "use `eab_hmac_key_file`");
    let text = with_cert(
            "challenge = { type = \"dns-01\", rfc2136 = { server = \"10.0.0.53\", tsig_key = \"x\" } }\n",
        )
        .replace("challenge = { type = \"http-01\", webroot = \"/var/www/html\" }\n", "");
    let found = problems(&text);
    assert_has(&found, MAIN, 9, 66, "unknown key `tsig_key` in `rfc2136`");
    assert_has(&found, MAIN, 9, 66, "use `tsig_key_file`");
}

//! `[[certificate]]`: names, domains, CAs, challenges, files, key modes, reload, verify.

use super::*;

// --- certificates -----------------------------------------------------------------

#[test]
fn missing_required_keys_point_at_the_header() {
    let text = "[ca.le]\ndirectory = \"https://a.example/\"\naccept_terms = true\n\n[[certificate]]\nname = \"x\"\n";
    let found = problems(text);
    assert_eq!(found.len(), 3, "{found:#?}");
    assert_has(&found, MAIN, 5, 1, "certificate `x` has no `domains`");
    assert_has(
        &found,
        MAIN,
        5,
        1,
        "certificate `x` has no `challenge`; set it here or in [defaults]",
    );
    assert_has(&found, MAIN, 5, 1, "certificate `x` has no `files`");
}

#[test]
fn certificate_name_rules() {
    let base = BASE.replace("name = \"www\"", "name = \"WWW\"");
    assert_only(
        &base,
        6,
        8,
        "certificate name `WWW` may only contain a-z, 0-9",
    );
    let base = BASE.replace("name = \"www\"", "name = \"..\"");
    assert_only(&base, 6, 8, "must not be `.` or `..`");
    let base = BASE.replace("name = \"www\"", "name = \"a.b_c-1\"");
    assert_eq!(load_ok(&base).certificates[0].name, "a.b_c-1");
}

#[test]
fn domains_are_normalized() {
    let text = BASE.replace(
        "[\"example.org\", \"www.example.org\"]",
        "[\"Example.ORG.\", \"2001:DB8::0:1\", \"192.0.2.1\"]",
    );
    let config = load_ok(&text);
    assert_eq!(
        config.certificates[0].domains,
        ["example.org", "2001:db8::1", "192.0.2.1"]
    );
}

#[test]
fn bad_domains_are_pinpointed() {
    let text = BASE.replace(
            "[\"example.org\", \"www.example.org\"]",
            "[\"example.org\", \"EXAMPLE.org\", \"-a.example\", \"a..b\", \"f*.example.org\", \"1.2.3\"]",
        );
    let found = problems(&text);
    assert_eq!(found.len(), 5, "{found:#?}");
    assert_has(
        &found,
        MAIN,
        7,
        27,
        "`example.org` is listed twice in `domains`",
    );
    assert_has(&found, MAIN, 7, 42, "starts or ends with `-`");
    assert_has(&found, MAIN, 7, 56, "empty label");
    assert_has(
        &found,
        MAIN,
        7,
        64,
        "a wildcard must be the whole leftmost label",
    );
    assert_has(
        &found,
        MAIN,
        7,
        82,
        "neither a valid IP address nor a DNS name",
    );
    assert_only(
        &BASE.replace("[\"example.org\", \"www.example.org\"]", "[]"),
        7,
        11,
        "at least one",
    );
}

#[test]
fn wildcard_needs_dns01() {
    let text = BASE.replace("\"www.example.org\"", "\"*.example.org\"");
    assert_only(
        &text,
        7,
        27,
        "wildcard `*.example.org` needs a dns-01 challenge",
    );
}

#[test]
fn wildcard_with_dns01_loads() {
    let text = BASE
        .replace("\"www.example.org\"", "\"*.example.org\"")
        .replace(
        "{ type = \"http-01\", webroot = \"/var/www/html\" }",
        "{ type = \"dns-01\", hook = [\"/usr/local/bin/dns-txt\"], propagation_wait = \"30s\" }",
    );
    let config = load_ok(&text);
    assert_eq!(
        config.certificates[0].domains,
        ["example.org", "*.example.org"]
    );
}

#[test]
fn no_ca_at_all_is_an_error_at_the_certificate() {
    let text = BASE.replace(
        "[ca.le]\ndirectory = \"https://acme.example.org/directory\"\naccept_terms = true\n",
        "\n\n\n",
    );
    assert_only(
        &text,
        5,
        1,
        "certificate `www` has no CA: define one in a [ca.NAME] table",
    );
}

#[test]
fn several_cas_need_an_explicit_choice() {
    let two = BASE.replace(
            "[[certificate]]",
            "[ca.other]\ndirectory = \"https://other.example/dir\"\naccept_terms = true\n[[certificate]]",
        );
    assert_only(&two, 8, 1, "must choose its CA with `ca = [...]`");
    let chosen = format!("{two}ca = [\"other\", \"le\"]\n");
    assert_eq!(load_ok(&chosen).certificates[0].ca, ["other", "le"]);
}

#[test]
fn unknown_or_repeated_ca_reference() {
    assert_only(
        &with_cert("ca = [\"lee\"]\n"),
        10,
        7,
        "`lee` is not a defined CA; did you mean `le`?",
    );
    assert_only(
        &with_cert("ca = [\"le\", \"le\"]\n"),
        10,
        13,
        "`le` is listed twice in `ca`",
    );
    assert_only(
        &with_cert("ca = []\n"),
        10,
        6,
        "`ca` must name at least one CA",
    );
}

#[test]
fn challenge_shapes() {
    let replace = |challenge: &str| {
        BASE.replace(
            "{ type = \"http-01\", webroot = \"/var/www/html\" }",
            challenge,
        )
    };
    assert_only(
        &replace("{ type = \"http-01\", webroot = \"/srv\", listen = \"[::]:80\" }"),
        8,
        51,
        "takes `webroot` or `listen`, not both",
    );
    assert_only(&replace("{ type = \"http-01\" }"), 8, 13, "needs `webroot`");
    assert_only(
            &replace("{ type = \"http01\", webroot = \"/srv\" }"),
            8,
            22,
            "unknown challenge type `http01`; valid types are http-01, dns-01, tls-alpn-01, dns-persist-01, dns-account-01; did you mean `http-01`?",
        );
    assert_only(
        &replace("{ webroot = \"/srv\" }"),
        8,
        13,
        "`challenge` needs a `type`",
    );
    assert_only(
        &replace("{ type = \"http-01\", webroot = \"srv\" }"),
        8,
        43,
        "`webroot` must be an absolute path, found `srv`",
    );
    assert_only(
        &replace("{ type = \"http-01\", hook = [\"/x\"], webroot = \"/srv\" }"),
        8,
        33,
        "`hook` does not apply to the http-01 challenge",
    );
    assert_only(
        &replace("{ type = \"http-01\", listen = \"80\" }"),
        8,
        42,
        "must be an IP address and a port other than 0",
    );
    assert_only(
        &replace("\"http-01\""),
        8,
        13,
        "`challenge` must be a table like",
    );
}

#[test]
fn every_challenge_type_loads() {
    let hook = BASE.replace(
        "{ type = \"http-01\", webroot = \"/var/www/html\" }",
        "{ type = \"dns-01\", hook = [\"/usr/local/bin/dns-txt\"], propagation_wait = \"30s\" }",
    );
    let config = load_ok(&hook);
    assert_eq!(
        config.certificates[0].challenge.rules[0].config,
        ChallengeConfig::Dns01Hook {
            hook: vec!["/usr/local/bin/dns-txt".into()],
            propagation_wait: Duration::from_secs(30),
        }
    );
    let alpn = BASE.replace(
        "{ type = \"http-01\", webroot = \"/var/www/html\" }",
        "{ type = \"tls-alpn-01\", listen = \"[::]:443\" }",
    );
    let config = load_ok(&alpn);
    assert_eq!(
        config.certificates[0].challenge.rules[0].config,
        ChallengeConfig::TlsAlpn01 {
            listen: "[::]:443".parse().expect("addr")
        }
    );
    let text = BASE.replace(
            "{ type = \"http-01\", webroot = \"/var/www/html\" }",
            "{ type = \"dns-01\", rfc2136 = { server = \"10.0.0.53\", tsig_key_file = \"/etc/renewd/tsig.key\" } }",
        );
    let config = load_ok(&text);
    assert_eq!(
        config.certificates[0].challenge.rules[0].config,
        ChallengeConfig::Dns01Rfc2136 {
            server: "10.0.0.53:53".parse().expect("addr"),
            tsig_key_file: Some("/etc/renewd/tsig.key".into()),
            propagation_wait: Duration::ZERO,
        }
    );
}

fn per_name(challenge: &str, domains: &str) -> String {
    BASE.replace(
        "challenge = { type = \"http-01\", webroot = \"/var/www/html\" }",
        challenge,
    )
    .replace("[\"example.org\", \"www.example.org\"]", domains)
}

#[test]
fn per_name_challenges_pick_the_most_specific_entry() {
    let text = per_name(
        r#"challenge = { "*.example.org" = { type = "dns-01", hook = ["/bin/true"] }, "example.org" = { type = "http-01", listen = "127.0.0.1:80" }, "*" = { type = "tls-alpn-01", listen = "127.0.0.1:443" } }"#,
        r#"["example.org", "*.example.org", "www.example.org", "other.test", "192.0.2.1"]"#,
    );
    let config = load_ok(&text);
    let c = &config.certificates[0].challenge;
    let kind = |name: &str| c.for_name(name).map(|r| r.config.kind());
    assert_eq!(kind("example.org"), Some("http-01"));
    assert_eq!(kind("*.example.org"), Some("dns-01"));
    assert_eq!(kind("www.example.org"), Some("dns-01"));
    assert_eq!(kind("a.www.example.org"), Some("tls-alpn-01"));
    assert_eq!(kind("other.test"), Some("tls-alpn-01"));
    assert_eq!(kind("192.0.2.1"), Some("tls-alpn-01"));
    assert_eq!(
        c.for_name("*.example.org").map(|r| r.key.as_str()),
        Some("challenge.\"*.example.org\"")
    );
}

#[test]
fn per_name_challenge_errors_point_at_the_place() {
    // A name no entry covers.
    let text = per_name(
        r#"challenge = { "example.org" = { type = "http-01", listen = "127.0.0.1:80" } }"#,
        r#"["example.org", "www.example.org"]"#,
    );
    assert_only(
        &text,
        7,
        27,
        "no entry of `challenge` covers `www.example.org`",
    );
    // A wildcard through http-01 by its entry.
    let text = per_name(
        r#"challenge = { "*.example.org" = { type = "http-01", listen = "127.0.0.1:80" } }"#,
        r#"["*.example.org"]"#,
    );
    assert_only(
        &text,
        7,
        12,
        "wildcard `*.example.org` needs a dns-01 challenge, not http-01",
    );
    // An entry that covers nothing (a typo).
    let text = per_name(
        r#"challenge = { "example.org" = { type = "http-01", listen = "127.0.0.1:80" }, "exmaple.org" = { type = "http-01", listen = "127.0.0.1:80" } }"#,
        r#"["example.org"]"#,
    );
    assert_only(
        &text,
        8,
        78,
        "the `challenge` entry `exmaple.org` covers none of `domains`",
    );
    // A bad key, and a bad entry inside.
    let text = per_name(
        r#"challenge = { "exa mple.org" = { type = "http-01", listen = "127.0.0.1:80" }, "*" = { type = "http-01", lisen = "127.0.0.1:80" } }"#,
        r#"["example.org"]"#,
    );
    let found = problems(&text);
    assert_has(
        &found,
        MAIN,
        8,
        15,
        "`challenge` keys are names a challenge covers",
    );
    assert_has(
        &found,
        MAIN,
        8,
        105,
        "unknown key `lisen` in `challenge.\"*\"`; did you mean `listen`?",
    );
    // An IP through dns-01.
    let text = per_name(
        r#"challenge = { "192.0.2.1" = { type = "dns-01", hook = ["/bin/true"] } }"#,
        r#"["192.0.2.1"]"#,
    );
    assert_only(
        &text,
        7,
        12,
        "IP address `192.0.2.1` cannot be validated with dns-01",
    );
}

#[test]
fn files_rules() {
    let replace = |files: &str| {
        BASE.replace(
            "{ fullchain = \"/etc/tls/www.pem\", key = \"/etc/tls/www.key\" }",
            files,
        )
    };
    assert_only(
        &replace("{ fullchain = \"/etc/tls/www.pem\" }"),
        9,
        9,
        "somewhere to put the private key",
    );
    assert_only(
        &replace("{ key = \"/etc/tls/www.key\", chain = \"/etc/tls/c.pem\" }"),
        9,
        9,
        "somewhere to put the certificate",
    );
    assert_only(
        &replace("{ cert = \"/etc/tls/a.pem\", key = \"/etc/tls//a.pem\" }"),
        9,
        42,
        "`files.key` is the same file as `files.cert`",
    );
    assert_only(
        &replace("{ combined = \"tls/a.pem\" }"),
        9,
        22,
        "`combined` must be an absolute path",
    );
    assert_only(
        &replace("{ combined = \"/etc/tls/\" }"),
        9,
        22,
        "`combined` must name a file",
    );
    let config = load_ok(&replace(
        "{ combined = \"/etc/haproxy/www.pem\", chain = \"/etc/tls/chain.pem\" }",
    ));
    let kinds: Vec<(FileKind, bool)> = config.certificates[0]
        .files
        .iter()
        .map(|(kind, _)| (kind, kind.holds_key()))
        .collect();
    assert_eq!(
        kinds,
        [(FileKind::Chain, false), (FileKind::Combined, true)]
    );
}

#[test]
fn key_mode_validation() {
    let mode = |value: &str| load_one(&with_cert(&format!("key_mode = {value}\n")));
    assert_eq!(
        mode("\"0640\"").expect("0640").certificates[0].key_mode,
        0o640
    );
    assert_eq!(
        mode("\"0600\"").expect("0600").certificates[0].key_mode,
        0o600
    );
    assert_eq!(
        mode("\"440\"").expect("440").certificates[0].key_mode,
        0o440
    );
    assert_eq!(
        mode("0o640").expect("0o640").certificates[0].key_mode,
        0o640
    );
    assert_eq!(load_ok(BASE).certificates[0].key_mode, 0o600);
    for wide in ["\"0644\"", "\"0660\"", "\"0700\"", "\"0641\"", "\"4600\""] {
        let found = problems_of(mode(wide));
        assert_eq!(found.len(), 1, "{wide}: {found:#?}");
        assert_has(&found, MAIN, 10, 12, "is wider than 0640");
    }
    assert_only(
        &with_cert("key_mode = 640\n"),
        10,
        12,
        "written as a string",
    );
    assert_only(
        &with_cert("key_mode = \"rw-r-----\"\n"),
        10,
        12,
        "octal mode like \"0640\"",
    );
    assert_only(
        &with_cert("key_mode = \"0680\"\n"),
        10,
        12,
        "octal mode like \"0640\"",
    );
}

#[test]
fn renew_before_forms() {
    let rb = |value: &str| load_one(&with_cert(&format!("renew_before = {value}\n")));
    let get = |value: &str| rb(value).expect(value).certificates[0].renew_before;
    assert_eq!(get("\"1/3\""), RenewBefore::Fraction(1.0 / 3.0));
    assert_eq!(get("\"0.25\""), RenewBefore::Fraction(0.25));
    assert_eq!(get("0.5"), RenewBefore::Fraction(0.5));
    assert_eq!(
        get("\"36h\""),
        RenewBefore::Duration(Duration::from_secs(36 * 3600))
    );
    for bad in ["\"3/3\"", "\"0/3\"", "\"1.5\"", "\"0s\"", "\"soon\"", "30"] {
        let found = problems_of(rb(bad));
        assert_eq!(found.len(), 1, "{bad}: {found:#?}");
        assert_has(&found, MAIN, 10, 16, "renew_before");
    }
}

#[test]
fn alert_before_in_defaults_certificate_exception_and_discovery() {
    let d = |days: u64| RenewBefore::Duration(Duration::from_secs(days * 86400));
    let text = format!(
        "[defaults]\nalert_before = \"20d\"\n{}\n[[certificate]]\nname = \"api\"\n\
             domains = [\"api.example.org\"]\nca = [\"le\"]\n\
             challenge = {{ type = \"http-01\", webroot = \"/var/www/html\" }}\n\
             files = {{ fullchain = \"/etc/tls/api.pem\", key = \"/etc/tls/api.key\" }}\n\
             alert_before = \"1/2\"\n\
             [[exception]]\npath = \"/etc/a.pem\"\nowner = \"o\"\nreason = \"r\"\n\
             review_by = \"2027-01-01\"\nalert_before = \"45d\"\n\
             [[exception]]\npath = \"/etc/b.pem\"\nowner = \"o\"\nreason = \"r\"\n\
             review_by = \"2027-01-01\"\n[discovery]\npaths = [\"/etc/ssl\"]\n",
        BASE.replace("[[certificate]]\n", "[[certificate]]\nca = [\"le\"]\n")
    );
    let config = load_ok(&text);
    assert_eq!(config.certificates[0].alert_before, Some(d(20)));
    assert_eq!(
        config.certificates[1].alert_before,
        Some(RenewBefore::Fraction(0.5))
    );
    assert_eq!(config.exceptions[0].alert_before, Some(d(45)));
    assert_eq!(config.exceptions[1].alert_before, Some(d(20)));
    assert_eq!(
        config.discovery.as_ref().and_then(|d| d.alert_before),
        Some(d(20))
    );
    let found = problems(&with_cert("alert_before = \"soon\"\n"));
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_has(&found, MAIN, 10, 16, "`alert_before` must be");
}

#[test]
fn reload_rules() {
    assert_only(
        &with_cert("reload = [\"systemctl\", \"reload\", \"nginx\"]\n"),
        10,
        10,
        "write [[\"systemctl\", \"reload\", \"nginx\"]]",
    );
    assert_only(
        &with_cert("reload = [[\"a\"], []]\n"),
        10,
        18,
        "`reload` must not be empty",
    );
    assert_only(
        &with_cert("reload = [[\"\", \"x\"]]\n"),
        10,
        12,
        "the command in `reload` must not be empty",
    );
    assert_only(
        &with_cert("reload = [[\"a\", 1]]\n"),
        10,
        17,
        "each entry of `reload` must be a string, found an integer",
    );
    let config = load_ok(&with_cert("reload = [[\"a\"], [\"b\", \"c\"]]\n"));
    assert_eq!(config.certificates[0].reload, [vec!["a"], vec!["b", "c"]]);
    assert_eq!(
        config.certificates[0].key_locations["reload.1"],
        loc(10, 18)
    );
}

#[test]
fn reload_timeout_bounds() {
    assert_eq!(
        load_ok(BASE).certificates[0].reload_timeout,
        Duration::from_secs(60)
    );
    let config = load_ok(&with_cert("reload_timeout = \"2m30s\"\n"));
    assert_eq!(
        config.certificates[0].reload_timeout,
        Duration::from_secs(150)
    );
    assert_only(
        &with_cert("reload_timeout = \"0s\"\n"),
        10,
        18,
        "must be at least 1s",
    );
    assert_only(
        &with_cert("reload_timeout = \"2h\"\n"),
        10,
        18,
        "must be at most 1h",
    );
    assert_only(
        &with_cert("reload_timeout = 60\n"),
        10,
        18,
        "must be a duration string like \"90s\", found an integer",
    );
}

#[test]
fn verify_is_supported_with_a_default_timeout() {
    let config = load_ok(&with_cert(
        "verify = { connect = \"127.0.0.1:443\", server_name = \"WWW.Example.org.\" }\n",
    ));
    let cert = &config.certificates[0];
    assert_eq!(
        cert.verify,
        Some(VerifyConfig {
            connect: "127.0.0.1:443".into(),
            server_name: "www.example.org".into(),
            timeout: Duration::from_secs(30),
        })
    );
    assert_eq!(cert.key_locations["verify"], loc(10, 10));
    assert_eq!(cert.key_locations["verify.connect"], loc(10, 22));
    assert_eq!(cert.key_locations["verify.server_name"], loc(10, 53));
    assert!(config.unsupported().is_empty());

    let config = load_ok(&with_cert(
            "[certificate.verify]\nconnect = \"localhost:8443\"\nserver_name = \"192.0.2.7\"\ntimeout = \"2m\"\n",
        ));
    let verify = config.certificates[0].verify.clone().expect("verify");
    assert_eq!(verify.connect, "localhost:8443");
    assert_eq!(verify.server_name, "192.0.2.7");
    assert_eq!(verify.timeout, Duration::from_secs(120));
    assert_eq!(
        config.certificates[0].key_locations["verify.timeout"],
        loc(13, 11)
    );
}

#[test]
fn verify_inherits_from_defaults() {
    let text = BASE.replace(
            "[[certificate]]",
            "[defaults]\nverify = { connect = \"[::1]:443\", server_name = \"example.org\", timeout = \"5s\" }\n\n[[certificate]]",
        );
    let config = load_ok(&text);
    let cert = &config.certificates[0];
    let verify = cert.verify.clone().expect("inherited verify");
    assert_eq!(verify.connect, "[::1]:443");
    assert_eq!(verify.timeout, Duration::from_secs(5));
    assert_eq!(cert.key_locations["verify.timeout"], loc(6, 74));
}

#[test]
fn verify_values_are_checked() {
    let verify = |inner: &str| with_cert(&format!("verify = {{ {inner} }}\n"));
    assert_only(
        &verify("connect = \"127.0.0.1:443\", server_name = \"example.org\", timeout = \"0s\""),
        10,
        78,
        "`timeout` must be at least 1s",
    );
    assert_only(
        &verify("connect = \"127.0.0.1:443\", server_name = \"example.org\", timeout = \"2h\""),
        10,
        78,
        "`timeout` must be at most 1h",
    );
    assert_only(
        &verify("connect = \"127.0.0.1:443\", server_name = \"example.org\", timeout = 30"),
        10,
        78,
        "`timeout` must be a duration string like \"90s\", found an integer",
    );
    assert_only(
        &verify("connect = \"127.0.0.1:443\", server_name = \"example.org\", timout = \"5s\""),
        10,
        68,
        "unknown key `timout` in `verify`; did you mean `timeout`?",
    );
    assert_only(
        &verify("connect = \"127.0.0.1\", server_name = \"example.org\""),
        10,
        22,
        "`connect` must be `host:port`, like `127.0.0.1:443`, found `127.0.0.1`",
    );
    assert_only(
        &verify("connect = \"127.0.0.1:443\", server_name = \"*.example.org\""),
        10,
        53,
        "`server_name` must be a name the service answers to, not a wildcard",
    );
    assert_only(
        &verify("connect = \"127.0.0.1:443\", timeout = \"5s\""),
        10,
        10,
        "`verify` needs `server_name`",
    );
    assert_only(
        &with_cert("verify = \"127.0.0.1:443\"\n"),
        10,
        10,
        "`verify` must be",
    );
}

// --- chains, keys and client-certificate outputs (issue 17) -------------------------

#[test]
fn common_name_must_be_one_of_the_domains_and_fit_64_characters() {
    let config = load_ok(&with_cert("common_name = \"WWW.Example.org.\"\n"));
    assert_eq!(
        config.certificates[0].common_name.as_deref(),
        Some("www.example.org")
    );
    assert_only(
        &with_cert("common_name = \"other.example.org\"\n"),
        10,
        15,
        "`common_name` `other.example.org` must be one of `domains`",
    );
    let long = format!("{}.example.org", "a".repeat(60));
    let text = BASE
        .replace("\"www.example.org\"]", &format!("\"{long}\"]"))
        .to_string()
        + &format!("common_name = \"{long}\"\n");
    assert_only(&text, 10, 15, "holds at most 64 (RFC 5280)");
}

#[test]
fn chain_and_key_options_load_and_inherit() {
    let text = BASE.replace(
        "[[certificate]]",
        "[defaults]\npreferred_chain = \"ISRG Root X2\"\nreuse_key = true\n\n[[certificate]]",
    );
    let cert = &load_ok(&text).certificates[0];
    assert_eq!(cert.preferred_chain.as_deref(), Some("ISRG Root X2"));
    assert!(cert.reuse_key);
    let cert = &load_ok(BASE).certificates[0];
    assert_eq!(cert.preferred_chain, None);
    assert!(!cert.reuse_key);
    assert_only(&with_cert("reuse_key = \"yes\"\n"), 10, 13, "a boolean");
}

#[test]
fn pkcs12_needs_a_password_file() {
    let files = "files = { fullchain = \"/etc/tls/www.pem\", key = \"/etc/tls/www.key\" }";
    let with_p12 = "files = { fullchain = \"/etc/tls/www.pem\", key = \"/etc/tls/www.key\", pkcs12 = \"/etc/tls/www.p12\" }";
    let text = BASE.replace(files, with_p12);
    assert_only(&text, 9, 78, "`files.pkcs12` needs `pkcs12_password_file`");
    let text = format!("{text}pkcs12_password_file = \"/etc/renewd/www.p12.pass\"\n");
    let cert = &load_ok(&text).certificates[0];
    assert_eq!(
        cert.files.pkcs12.as_deref(),
        Some(Path::new("/etc/tls/www.p12"))
    );
    assert_eq!(
        cert.pkcs12_password_file.as_deref(),
        Some(Path::new("/etc/renewd/www.p12.pass"))
    );
}

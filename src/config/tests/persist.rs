//! dns-persist-01 and dns-account-01 challenge tables, and `[ca.NAME] issuer_domain_name`.

use super::*;

fn with_challenge(challenge: &str, domains: &str) -> String {
    BASE.replace(
        "{ type = \"http-01\", webroot = \"/var/www/html\" }",
        challenge,
    )
    .replace("[\"example.org\", \"www.example.org\"]", domains)
}

#[test]
fn dns_persist_01_loads_with_its_keys() {
    let config = load_ok(&with_challenge(
        "{ type = \"dns-persist-01\", policy = \"wildcard\", persist_until = \"2027-06-30\", resolver = \"10.0.0.53\" }",
        "[\"example.org\", \"*.example.org\"]",
    ));
    assert_eq!(
        config.certificates[0].challenge.rules[0].config,
        ChallengeConfig::DnsPersist01(crate::config::PersistConfig {
            wildcard: true,
            persist_until: Some(1_814_313_600),
            resolver: Some("10.0.0.53:53".parse().expect("addr")),
        })
    );
    let config = load_ok(&with_challenge(
        "{ type = \"dns-persist-01\", persist_until = \"2027-06-30T12:00:00+02:00\" }",
        "[\"example.org\"]",
    ));
    let ChallengeConfig::DnsPersist01(p) = &config.certificates[0].challenge.rules[0].config else {
        panic!("not dns-persist-01");
    };
    assert_eq!(p.persist_until, Some(1_814_349_600));
    assert!(!p.wildcard);
}

#[test]
fn dns_persist_01_mistakes_are_placed() {
    assert_only(
        &with_challenge(
            "{ type = \"dns-persist-01\" }",
            "[\"example.org\", \"*.example.org\"]",
        ),
        7,
        27,
        "wildcard `*.example.org` with dns-persist-01 needs `policy = \"wildcard\"`",
    );
    assert_only(
        &with_challenge(
            "{ type = \"dns-persist-01\", policy = \"subdomains\" }",
            "[\"example.org\"]",
        ),
        8,
        49,
        "`policy` of a dns-persist-01 challenge can only be \"wildcard\"",
    );
    assert_only(
        &with_challenge(
            "{ type = \"dns-persist-01\", persist_until = \"next year\" }",
            "[\"example.org\"]",
        ),
        8,
        56,
        "`persist_until` must be a date like",
    );
    assert_only(
        &with_challenge(
            "{ type = \"dns-persist-01\", hook = [\"/x\"] }",
            "[\"example.org\"]",
        ),
        8,
        40,
        "`hook` does not apply to the dns-persist-01 challenge",
    );
}

#[test]
fn dns_persist_01_resolver_is_an_address_with_an_optional_nonzero_port() {
    for (written, addr) in [
        ("127.0.0.1", "127.0.0.1:53"),
        ("::1", "[::1]:53"),
        ("[::1]:5353", "[::1]:5353"),
        ("10.0.0.53:53", "10.0.0.53:53"),
    ] {
        let config = load_ok(&with_challenge(
            &format!("{{ type = \"dns-persist-01\", resolver = \"{written}\" }}"),
            "[\"example.org\"]",
        ));
        let ChallengeConfig::DnsPersist01(p) = &config.certificates[0].challenge.rules[0].config
        else {
            panic!("not dns-persist-01");
        };
        assert_eq!(p.resolver, Some(addr.parse().expect("addr")), "{written}");
    }
    for bad in ["[::1]:0", "127.0.0.1:0", "localhost:53", "10.0.0.53:http"] {
        let text = with_challenge(
            &format!("{{ type = \"dns-persist-01\", resolver = \"{bad}\" }}"),
            "[\"example.org\"]",
        );
        assert_only(
            &text,
            8,
            51,
            &format!(
                "`resolver` must be an IP address, alone (port 53) or with a port other than 0, \
                 like `10.0.0.53`, `10.0.0.53:5353` or `[::1]:53`, found `{bad}`"
            ),
        );
    }
}

#[test]
fn dns_account_01_takes_dns_01s_mechanisms() {
    let config = load_ok(&with_challenge(
        "{ type = \"dns-account-01\", hook = [\"/usr/local/bin/dns-txt\"] }",
        "[\"*.example.org\"]",
    ));
    assert_eq!(
        config.certificates[0].challenge.rules[0].config,
        ChallengeConfig::DnsAccount01Hook {
            hook: vec!["/usr/local/bin/dns-txt".into()],
            propagation_wait: Duration::ZERO,
        }
    );
    let config = load_ok(&with_challenge(
        "{ type = \"dns-account-01\", rfc2136 = { server = \"10.0.0.53\" } }",
        "[\"example.org\"]",
    ));
    assert!(matches!(
        config.certificates[0].challenge.rules[0].config,
        ChallengeConfig::DnsAccount01Rfc2136 { .. }
    ));
    assert_only(
        &with_challenge("{ type = \"dns-account-01\" }", "[\"example.org\"]"),
        8,
        13,
        "needs `hook`",
    );
}

#[test]
fn issuer_domain_name_is_a_dns_name() {
    let text = BASE.replace(
        "accept_terms = true\n",
        "accept_terms = true\nissuer_domain_name = \"Pebble.LetsEncrypt.org\"\n",
    );
    assert_eq!(
        load_ok(&text).cas["le"].issuer_domain_name.as_deref(),
        Some("pebble.letsencrypt.org")
    );
    let text = BASE.replace(
        "accept_terms = true\n",
        "accept_terms = true\nissuer_domain_name = \"https://ca\"\n",
    );
    assert_only(&text, 4, 22, "`issuer_domain_name` must be a DNS name");
}

/// Every address key is read by one rule: an IP address with a port other than 0, or alone
/// where a default port exists (`rfc2136.server`: 53), and the message says so.
#[test]
fn address_keys_refuse_port_0_and_say_when_the_port_may_be_left_out() {
    let server = with_challenge(
        "{ type = \"dns-account-01\", rfc2136 = { server = \"10.0.0.53:0\" } }",
        "[\"example.org\"]",
    );
    assert_only(
        &server,
        8,
        61,
        "`server` must be an IP address, alone (port 53) or with a port other than 0, like \
         `10.0.0.53`, `10.0.0.53:5353` or `[::1]:53`, found `10.0.0.53:0`",
    );
    let listen = with_challenge(
        "{ type = \"http-01\", listen = \"127.0.0.1:0\" }",
        "[\"example.org\"]",
    );
    assert_only(
        &listen,
        8,
        42,
        "`listen` must be an IP address and a port other than 0, like `127.0.0.1:9443` or \
         `[::]:80`, found `127.0.0.1:0`",
    );
}

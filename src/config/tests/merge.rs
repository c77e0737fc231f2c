//! `conf.d` merging and `[defaults]`.

use super::*;

// --- conf.d merging ---------------------------------------------------------------
#[test]
fn conf_d_appends_certificates_in_order() {
    let config = load_from_sources(&[
        (MAIN.into(), BASE.to_string()),
        (DROPIN.into(), API_DROPIN.to_string()),
    ])
    .expect("loads");
    let names: Vec<&str> = config
        .certificates
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(names, ["www", "api"]);
    assert_eq!(config.sources, [PathBuf::from(MAIN), PathBuf::from(DROPIN)]);
    let api = config.certificate("api").expect("api");
    assert_eq!(api.location, Location::new(DROPIN, 1, 1));
    assert_eq!(api.ca, ["le"]);
    assert_eq!(
        api.challenge.rules[0].config,
        ChallengeConfig::Http01Listen {
            listen: "[::]:80".parse().expect("addr")
        }
    );
}

#[test]
fn conf_d_key_set_twice_names_both_places() {
    let found = problems_of(load_from_sources(&[
        (
            MAIN.into(),
            "# main\n\nstate_dir = \"/var/lib/renewd\"\n".into(),
        ),
        (DROPIN.into(), "state_dir = \"/srv/renewd\"\n".into()),
    ]));
    assert_eq!(
        found,
        [format!(
            "{DROPIN}:1:1: `state_dir` is set again here; first set at {MAIN}:3:1"
        )]
    );
}

#[test]
fn conf_d_ca_and_defaults_set_twice() {
    let found = problems_of(load_from_sources(&[
            (MAIN.into(), format!("{BASE}[defaults]\nowner = \"a\"\n")),
            (
                DROPIN.into(),
                "[defaults]\nowner = \"b\"\nservice = \"x\"\n[ca.le]\ndirectory = \"https://b.example/\"\naccept_terms = true\n".into(),
            ),
        ]));
    assert_eq!(found.len(), 2, "{found:#?}");
    assert_has(
        &found,
        DROPIN,
        2,
        1,
        &format!("`defaults.owner` is set again here; first set at {MAIN}:11:1"),
    );
    assert_has(
        &found,
        DROPIN,
        4,
        1,
        &format!("`[ca.le]` is defined again here; first defined at {MAIN}:1:1"),
    );
}

#[test]
fn conf_d_tables_merge_disjoint_keys() {
    let config = load_from_sources(&[
        (MAIN.into(), format!("{BASE}[defaults]\nowner = \"a\"\n")),
        (
            DROPIN.into(),
            format!("[defaults]\nservice = \"web\"\n{API_DROPIN}"),
        ),
    ])
    .expect("loads");
    let api = config.certificate("api").expect("api");
    assert_eq!(api.owner.as_deref(), Some("a"));
    assert_eq!(api.service.as_deref(), Some("web"));
    assert_eq!(api.key_locations["service"], Location::new(DROPIN, 2, 11));
}

#[test]
fn duplicate_certificate_name_across_files() {
    let dropin = API_DROPIN.replace("\"api\"", "\"www\"");
    let found = problems_of(load_from_sources(&[
        (MAIN.into(), BASE.to_string()),
        (DROPIN.into(), dropin),
    ]));
    assert_eq!(
        found,
        [format!(
            "{DROPIN}:2:8: certificate name `www` is used again here; first used at {MAIN}:6:8"
        )]
    );
}

#[test]
fn same_file_written_by_two_certificates() {
    let dropin = API_DROPIN.replace("/etc/haproxy/api.pem", "/etc/tls/www.pem");
    let found = problems_of(load_from_sources(&[
        (MAIN.into(), BASE.to_string()),
        (DROPIN.into(), dropin),
    ]));
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_has(
        &found,
        DROPIN,
        5,
        22,
        "is also written by certificate `www`",
    );
}

// --- [defaults] -------------------------------------------------------------------

#[test]
fn defaults_are_inherited_and_overridden() {
    let text = r#"[ca.le]
directory = "https://acme.example.org/directory"
accept_terms = true
[defaults]
key_type = "rsa-2048"
renew_before = "30d"
challenge = { type = "http-01", webroot = "/var/www/html" }
reload = [["systemctl", "reload", "nginx"]]
[[certificate]]
name = "a"
domains = ["a.example.org"]
files = { cert = "/etc/tls/a.crt", key = "/etc/tls/a.key" }
[[certificate]]
name = "b"
domains = ["b.example.org"]
key_type = "ecdsa-p384"
reload = []
files = { cert = "/etc/tls/b.crt", key = "/etc/tls/b.key" }
"#;
    let config = load_ok(text);
    let a = config.certificate("a").expect("a");
    let b = config.certificate("b").expect("b");
    assert_eq!(a.key_type, KeyType::Rsa2048);
    assert_eq!(b.key_type, KeyType::EcdsaP384);
    assert_eq!(
        a.renew_before,
        RenewBefore::Duration(Duration::from_secs(30 * 86400))
    );
    assert_eq!(b.renew_before, a.renew_before);
    assert_eq!(a.reload, [["systemctl", "reload", "nginx"]]);
    assert!(b.reload.is_empty());
    assert_eq!(a.key_locations["challenge"], loc(7, 13));
    assert_eq!(a.key_locations["reload.0"], loc(8, 11));
    assert_eq!(b.key_locations["key_type"], loc(16, 12));
    assert_eq!(a.key_location("files.cert"), &loc(12, 18));
    assert_eq!(a.key_location("user"), &loc(9, 1));
}

#[test]
fn defaults_reject_name_and_domains() {
    let found = problems(&format!(
        "{BASE}[defaults]\nname = \"x\"\ndomains = [\"a.example\"]\n"
    ));
    assert_eq!(found.len(), 2, "{found:#?}");
    assert_has(&found, MAIN, 11, 1, "`name` cannot be set in [defaults]");
    assert_has(&found, MAIN, 12, 1, "`domains` cannot be set in [defaults]");
}

#[test]
fn bad_default_is_reported_once_even_when_inherited_twice() {
    let text = format!(
            "{BASE}[[certificate]]\nname = \"two\"\ndomains = [\"two.example\"]\nfiles = {{ combined = \"/etc/tls/two.pem\" }}\nchallenge = {{ type = \"http-01\", listen = \"0.0.0.0:80\" }}\n[defaults]\nkey_type = \"ed25519\"\n"
        );
    let found = problems(&text);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_has(&found, MAIN, 16, 12, "unknown `key_type` `ed25519`; valid types are ecdsa-p256, ecdsa-p384, rsa-2048, rsa-3072, rsa-4096");
}

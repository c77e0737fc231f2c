use super::types::{DEFAULT_CONTROL_SOCKET, DEFAULT_STATE_DIR};
use super::value::normalize_identifier;
use super::*;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[test]
fn xn_labels_must_be_valid_punycode() {
    // Valid A-labels (bücher.example, 例え.jp) pass, as written.
    for ok in [
        "xn--bcher-kva.example",
        "www.xn--r8jz45g.jp",
        "*.xn--bcher-kva.example",
    ] {
        assert_eq!(normalize_identifier(ok).as_deref(), Ok(ok), "{ok}");
    }
    // Punycode that does not decode, one that decodes to plain ASCII (never an A-label),
    // and a bare prefix.
    for (bad, label) in [
        ("www.xn--99999999999.example", "xn--99999999999"),
        ("xn--abc-.example", "xn--abc-"),
        ("xn--abc-9.example", "xn--abc-9"),
    ] {
        let e = normalize_identifier(bad).expect_err(bad).to_string();
        assert!(
            e.contains(&format!("`{label}`")) && e.contains("not valid punycode")
                || e.contains("starts or ends with `-`"),
            "{bad}: {e}"
        );
    }
}

const MAIN: &str = "/etc/renewd/renewd.toml";
const DROPIN: &str = "/etc/renewd/conf.d/10-api.toml";

/// The SPEC's example, verbatim.
const SPEC_EXAMPLE: &str = r#"state_dir = "/var/lib/renewd"              # accounts, per-certificate state, swap journal, lock
control_socket = "/run/renewd/control.sock"
max_concurrent_renewals = 4

[metrics]
listen = "127.0.0.1:9443"                  # Prometheus text exposition on /metrics; optional

[alert]                                    # optional; both may be set
command = ["/usr/local/bin/page-oncall"]   # argv, gets the alert as JSON on stdin
webhook = "https://alerts.example.org/hook" # POSTed the same JSON

[ca.letsencrypt]
directory = "https://acme-v02.api.letsencrypt.org/directory"
contact = ["mailto:ops@example.org"]
accept_terms = true
# trust_roots = "/etc/renewd/private-ca.pem" # extra roots for a private ACME server's HTTPS
# eab_kid = "kid-1"                          # external account binding
# eab_hmac_key_file = "/etc/renewd/eab.key"  # secrets come from files (or $CREDENTIALS_DIRECTORY), never inline
# profile = "shortlived"                     # ACME profile to request, if the CA offers it

[defaults]                                 # any [[certificate]] key but name and domains; a certificate overrides it
ca = ["letsencrypt"]                       # ordered: later entries are fallbacks when the first keeps failing
key_type = "ecdsa-p256"                    # ecdsa-p256 | ecdsa-p384 | rsa-2048 | rsa-3072 | rsa-4096
renew_before = "1/3"                       # fraction of lifetime left, or a duration ("30d", "36h")
owner = "platform@example.org"             # who answers for the certificate

[[certificate]]
name = "www"                               # unique; [a-z0-9._-]
domains = ["example.org", "www.example.org"]  # DNS names, wildcards (dns-01 only), IP addresses
service = "nginx"                          # what depends on it (inventory, alerts)
challenge = { type = "http-01", webroot = "/var/www/html" }
# challenge = { type = "http-01", listen = "[::]:80" }                      # built-in server
# challenge = { type = "dns-01", hook = ["/usr/local/bin/dns-txt"] }        # hook sets/clears the TXT record
# challenge = { type = "dns-01", rfc2136 = { server = "10.0.0.53:53", tsig_key_file = "/etc/renewd/tsig.key" } }
# challenge = { type = "tls-alpn-01", listen = "[::]:443" }
files = { fullchain = "/etc/nginx/tls/www.pem", key = "/etc/nginx/tls/www.key" }
# files keys: cert (leaf), chain (intermediates), fullchain, key, combined (key + fullchain, for HAProxy)
user = "root"
group = "ssl-cert"
key_mode = "0640"                          # never wider than 0640; default 0600
reload = [["systemctl", "reload", "nginx"]]  # argv lists, no shell; run once per batch even when many certificates share them
verify = { connect = "127.0.0.1:443", server_name = "example.org" }  # after reload, the service must serve the new certificate

[[exception]]                              # a certificate renewd cannot renew, tracked on purpose
path = "/etc/appliance/legacy.pem"
owner = "netops@example.org"
reason = "vendor appliance, manual import only"
review_by = "2027-03-01"

[discovery]
paths = ["/etc/ssl", "/etc/nginx"]          # scanned and watched for certificates nobody manages
"#;

/// The SPEC example with the parts this version cannot act on commented out, so
/// that line numbers stay the same.
fn supported_example() -> String {
    const UNSUPPORTED_LINES: &[usize] = &[5, 6, 8, 9, 10, 44, 45, 46, 47, 48, 50, 51];
    SPEC_EXAMPLE
        .lines()
        .enumerate()
        .map(|(i, line)| {
            if UNSUPPORTED_LINES.contains(&(i + 1)) {
                format!("# {line}\n")
            } else {
                format!("{line}\n")
            }
        })
        .collect()
}

/// One CA and one certificate; tests append keys to the certificate at line 10.
const BASE: &str = r#"[ca.le]
directory = "https://acme.example.org/directory"
accept_terms = true

[[certificate]]
name = "www"
domains = ["example.org", "www.example.org"]
challenge = { type = "http-01", webroot = "/var/www/html" }
files = { fullchain = "/etc/tls/www.pem", key = "/etc/tls/www.key" }
"#;

fn with_cert(extra: &str) -> String {
    format!("{BASE}{extra}")
}

fn load_one(text: &str) -> Result<Config, ConfigError> {
    load_from_sources(&[(PathBuf::from(MAIN), text.to_string())])
}

fn load_ok(text: &str) -> Config {
    match load_one(text) {
        Ok(config) => config,
        Err(e) => panic!("expected the configuration to load, got:\n{e}"),
    }
}

fn problems_of(result: Result<Config, ConfigError>) -> Vec<String> {
    match result {
        Ok(_) => panic!("expected the configuration to be rejected"),
        Err(e) => e.problems.iter().map(ToString::to_string).collect(),
    }
}

fn problems(text: &str) -> Vec<String> {
    problems_of(load_one(text))
}

/// Asserts that `text` fails with exactly one problem, at `line:col` of the main
/// file, whose message contains `needle`.
fn assert_only(text: &str, line: usize, col: usize, needle: &str) {
    let found = problems(text);
    assert_eq!(found.len(), 1, "expected one problem, got {found:#?}");
    let prefix = format!("{MAIN}:{line}:{col}: ");
    assert!(
        found[0].starts_with(&prefix) && found[0].contains(needle),
        "expected `{prefix}…{needle}…`, got {found:#?}"
    );
}

fn assert_has(found: &[String], file: &str, line: usize, col: usize, needle: &str) {
    let prefix = format!("{file}:{line}:{col}: ");
    assert!(
        found
            .iter()
            .any(|p| p.starts_with(&prefix) && p.contains(needle)),
        "expected `{prefix}…{needle}…` in {found:#?}"
    );
}

fn loc(line: usize, col: usize) -> Location {
    Location::new(MAIN, line, col)
}

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

// --- conf.d merging ---------------------------------------------------------------

const API_DROPIN: &str = r#"[[certificate]]
name = "api"
domains = ["api.example.org"]
challenge = { type = "http-01", listen = "[::]:80" }
files = { combined = "/etc/haproxy/api.pem" }
"#;

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
            "unknown challenge type `http01`; valid types are http-01, dns-01, tls-alpn-01; did you mean `http-01`?",
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
        "must be an IP address and port",
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

// --- durations --------------------------------------------------------------------

#[test]
fn parse_duration_accepts_units_and_combinations() {
    let secs = |s: &str| parse_duration(s).map(|d| d.as_secs());
    assert_eq!(secs("90s"), Ok(90));
    assert_eq!(secs("15m"), Ok(900));
    assert_eq!(secs("36h"), Ok(129_600));
    assert_eq!(secs("30d"), Ok(2_592_000));
    assert_eq!(secs("1h30m"), Ok(5_400));
    assert_eq!(secs("1d2h3m4s"), Ok(93_784));
    assert_eq!(secs("0s"), Ok(0));
    assert_eq!(format_duration(Duration::from_secs(93_784)), "1d2h3m4s");
}

#[test]
fn parse_duration_rejects_clearly() {
    let err = |s: &str| parse_duration(s).expect_err(s).to_string();
    assert!(err("").contains("empty duration"));
    assert!(err("-5m").contains("cannot be negative"));
    assert!(err("90").contains("has no unit"));
    assert!(err("5y").contains("unknown unit `y`"));
    assert!(err("1.5h").contains("whole numbers"));
    assert!(err("30m1h").contains("largest first"));
    assert!(err("1h1h").contains("largest first"));
    assert!(err("1h 30m").contains("unexpected ` `"));
    assert!(err("99999999999999999999s").contains("too large"));
    assert!(err("36501d").contains("too large"));
    assert!(err("h").contains("invalid duration"));
}

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

// --- proxy URLs -----------------------------------------------------------------------

#[test]
fn proxy_urls_are_http_host_port_and_shown_without_credentials() {
    assert_eq!(
        check_proxy_url("http://proxy.example:3128").as_deref(),
        Ok("http://proxy.example:3128")
    );
    assert_eq!(
        check_proxy_url("HTTP://u:p%40ss@[::1]:8080/").as_deref(),
        Ok("http://[::1]:8080")
    );
    for bad in [
        "https://u:s3cret@proxy.example:3128",
        "socks5h://u:s3cret@proxy.example:1080",
        "u:s3cret@proxy.example:3128",
        "http://u:s3cret@proxy.example:3128/x",
        "http://u:s3cret@",
    ] {
        let why = check_proxy_url(bad).expect_err(bad).to_string();
        assert!(!why.contains("s3cret"), "{bad}: {why}");
        assert!(why.contains("***@"), "{bad}: {why}");
    }
    assert_eq!(redact_url("http://a:b@h:1/p@q"), "http://***@h:1/p@q");
    assert_eq!(redact_url("http://h:1"), "http://h:1");
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

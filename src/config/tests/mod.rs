//! Unit tests of the configuration, by concern; the helpers and the SPEC's example are here.

mod certificate;
mod discovery;
mod environment;
mod files;
mod merge;
mod persist;
mod sections;
mod trust;
mod value;

use super::ca::DEFAULT_CA_TIMEOUT;
use super::types::{DEFAULT_CONTROL_SOCKET, DEFAULT_STATE_DIR};
use super::value::{format_duration, normalize_identifier, parse_duration, redact_url};
use super::*;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

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

const API_DROPIN: &str = r#"[[certificate]]
name = "api"
domains = ["api.example.org"]
challenge = { type = "http-01", listen = "[::]:80" }
files = { combined = "/etc/haproxy/api.pem" }
"#;

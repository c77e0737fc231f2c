//! The `challenge` key of a certificate: one challenge for every name, or a table of them
//! keyed by name pattern, each `http-01` (webroot or listener), `dns-01` (hook or RFC 2136)
//! or `tls-alpn-01`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::problem::{Location, Problem};
use super::schema::{
    as_abs_path, as_argv, as_bool, as_duration, as_file_path, as_socket_addr, as_str, as_table,
    check_keys, find, key_names, parse_keys, record_locations, report_missing, suggest, Draft,
    KeySpec,
};
use super::source::{Entry, Node, Val};
use super::types::{ChallengeConfig, ChallengeRule, PersistConfig};
use super::value::normalize_identifier;

pub(super) const MAX_PROPAGATION_WAIT: Duration = Duration::from_secs(3600);

/// Each challenge type and the keys it takes, in the order suggestions prefer on a tie.
const CHALLENGE_TYPES: &[(&str, &[&str])] = &[
    ("http-01", &["type", "webroot", "trust_owner", "listen"]),
    ("dns-01", &["type", "hook", "rfc2136", "propagation_wait"]),
    ("tls-alpn-01", &["type", "listen"]),
    (
        "dns-persist-01",
        &["type", "policy", "persist_until", "resolver"],
    ),
    (
        "dns-account-01",
        &["type", "hook", "rfc2136", "propagation_wait"],
    ),
];

/// Every key a challenge table may have: those of all types, each once.
fn challenge_keys() -> Vec<&'static str> {
    let mut keys: Vec<&'static str> = Vec::new();
    for key in CHALLENGE_TYPES.iter().flat_map(|(_, keys)| keys.iter()) {
        if !keys.contains(key) {
            keys.push(key);
        }
    }
    keys
}

fn type_names() -> Vec<&'static str> {
    CHALLENGE_TYPES.iter().map(|(name, _)| *name).collect()
}

/// `challenge`: one challenge for every name (a table with a `type`), or a table of them
/// keyed by name pattern (every value a table, no `type` key).
pub(super) fn parse_challenge(
    node: &Node,
    locs: &mut BTreeMap<String, Location>,
    p: &mut Vec<Problem>,
) -> Option<Vec<ChallengeRule>> {
    let entries = as_table(
        "challenge",
        node,
        "{ type = \"http-01\", webroot = \"/var/www/html\" }",
        p,
    )?;
    let per_name = !entries.is_empty()
        && find(entries, "type").is_none()
        && entries.iter().all(|e| matches!(e.node.val, Val::Table(_)));
    if !per_name {
        return parse_one_challenge(node, "challenge", locs, p).map(|config| {
            vec![ChallengeRule {
                pattern: None,
                config,
                key: "challenge".into(),
            }]
        });
    }
    let start = p.len();
    let mut rules: Vec<ChallengeRule> = Vec::new();
    for e in entries {
        let pattern = if e.key == "*" {
            Ok("*".to_string())
        } else {
            normalize_identifier(&e.key)
        };
        let pattern = match pattern {
            Ok(pattern) => pattern,
            Err(why) => {
                p.push(Problem::new(
                    e.key_loc.clone(),
                    format!(
                        "`challenge` keys are names a challenge covers (`example.org`, \
                         `*.example.org`, an IP address, or `*` for every other name): {why}"
                    ),
                ));
                continue;
            }
        };
        if rules
            .iter()
            .any(|r| r.pattern.as_deref() == Some(pattern.as_str()))
        {
            p.push(Problem::new(
                e.key_loc.clone(),
                format!("`{pattern}` has two entries in `challenge`"),
            ));
            continue;
        }
        let key = format!("challenge.\"{pattern}\"");
        locs.insert(key.clone(), e.key_loc.clone());
        if let Some(config) = parse_one_challenge(&e.node, &key, locs, p) {
            rules.push(ChallengeRule {
                pattern: Some(pattern),
                config,
                key,
            });
        }
    }
    (p.len() == start).then_some(rules)
}

/// One `{ type = ..., ... }` challenge table; its keys' places go into `locs` under `prefix`.
pub(super) fn parse_one_challenge(
    node: &Node,
    prefix: &str,
    locs: &mut BTreeMap<String, Location>,
    p: &mut Vec<Problem>,
) -> Option<ChallengeConfig> {
    let entries = as_table(
        prefix,
        node,
        "{ type = \"http-01\", webroot = \"/var/www/html\" }",
        p,
    )?;
    let start = p.len();
    let known = challenge_keys();
    check_keys(entries, &known, &format!("in `{prefix}`"), p);
    for e in entries {
        if known.contains(&e.key.as_str()) {
            locs.insert(format!("{prefix}.{}", e.key), e.node.loc.clone());
        }
    }
    let Some(type_entry) = find(entries, "type") else {
        p.push(Problem::new(
            node.loc.clone(),
            format!(
                "`{prefix}` needs a `type`: one of {}",
                type_names().join(", ")
            ),
        ));
        return None;
    };
    let kind = as_str("type", &type_entry.node, p)?.to_ascii_lowercase();
    let allowed = keys_of_type(&kind, &type_entry.node, p)?;
    for e in entries {
        if known.contains(&e.key.as_str()) && !allowed.contains(&e.key.as_str()) {
            p.push(Problem::new(
                e.key_loc.clone(),
                format!(
                    "`{}` does not apply to the {kind} challenge (its keys: {})",
                    e.key,
                    allowed.join(", ")
                ),
            ));
        }
    }
    let challenge = match kind.as_str() {
        "http-01" => parse_http01(node, entries, p),
        "tls-alpn-01" => parse_tls_alpn01(node, entries, p),
        "dns-persist-01" => parse_persist01(entries, p),
        "dns-account-01" => parse_dns01(node, entries, prefix, locs, p).map(account_label),
        _ => parse_dns01(node, entries, prefix, locs, p),
    };
    if p.len() > start {
        return None;
    }
    locs.insert(format!("{prefix}.type"), type_entry.node.loc.clone());
    challenge
}

/// The keys the challenge type `kind` takes, or `None` with the unknown type reported at
/// `node`.
fn keys_of_type(kind: &str, node: &Node, p: &mut Vec<Problem>) -> Option<&'static [&'static str]> {
    if let Some((_, keys)) = CHALLENGE_TYPES.iter().find(|(name, _)| *name == kind) {
        return Some(keys);
    }
    let types = type_names();
    let mut message = format!(
        "unknown challenge type `{kind}`; valid types are {}",
        types.join(", ")
    );
    if let Some(close) = suggest(kind, &types) {
        message.push_str(&format!("; did you mean `{close}`?"));
    }
    p.push(Problem::new(node.loc.clone(), message));
    None
}

/// http-01: a `webroot` (with `trust_owner`) or a `listen` address, not both.
fn parse_http01(node: &Node, entries: &[Entry], p: &mut Vec<Problem>) -> Option<ChallengeConfig> {
    match (find(entries, "webroot"), find(entries, "listen")) {
        (Some(w), None) => {
            let trust_owner = match find(entries, "trust_owner") {
                Some(t) => as_bool("trust_owner", &t.node, p)?,
                None => false,
            };
            as_abs_path("webroot", &w.node, p).map(|webroot| ChallengeConfig::Http01Webroot {
                webroot,
                trust_owner,
            })
        }
        (None, Some(l)) => as_socket_addr("listen", &l.node, None, p)
            .map(|listen| ChallengeConfig::Http01Listen { listen }),
        (Some(w), Some(l)) => {
            let second = if (w.key_loc.line, w.key_loc.col) > (l.key_loc.line, l.key_loc.col) {
                w
            } else {
                l
            };
            p.push(Problem::new(
                second.key_loc.clone(),
                "an http-01 challenge takes `webroot` or `listen`, not both",
            ));
            None
        }
        (None, None) => {
            p.push(Problem::new(
                node.loc.clone(),
                "an http-01 challenge needs `webroot` (a directory the web server serves) \
                 or `listen` (an address for renewd's own server)",
            ));
            None
        }
    }
}

/// tls-alpn-01: the `listen` address of renewd's own TLS server.
fn parse_tls_alpn01(
    node: &Node,
    entries: &[Entry],
    p: &mut Vec<Problem>,
) -> Option<ChallengeConfig> {
    match find(entries, "listen") {
        Some(l) => as_socket_addr("listen", &l.node, None, p)
            .map(|listen| ChallengeConfig::TlsAlpn01 { listen }),
        None => {
            p.push(Problem::new(
                node.loc.clone(),
                "a tls-alpn-01 challenge needs `listen`, like `[::]:443`",
            ));
            None
        }
    }
}

/// dns-01: a `hook` or an `rfc2136` server, not both, and a `propagation_wait`.
fn parse_dns01(
    node: &Node,
    entries: &[Entry],
    prefix: &str,
    locs: &mut BTreeMap<String, Location>,
    p: &mut Vec<Problem>,
) -> Option<ChallengeConfig> {
    let wait = match find(entries, "propagation_wait") {
        Some(e) => as_duration(
            "propagation_wait",
            &e.node,
            Duration::ZERO,
            MAX_PROPAGATION_WAIT,
            p,
        ),
        None => Some(Duration::ZERO),
    };
    match (find(entries, "hook"), find(entries, "rfc2136")) {
        (Some(h), None) => as_argv("hook", &h.node, p).and_then(|hook| {
            wait.map(|propagation_wait| ChallengeConfig::Dns01Hook {
                hook,
                propagation_wait,
            })
        }),
        (None, Some(r)) => parse_rfc2136(&r.node, prefix, locs, p).and_then(|(server, key)| {
            wait.map(|propagation_wait| ChallengeConfig::Dns01Rfc2136 {
                server,
                tsig_key_file: key,
                propagation_wait,
            })
        }),
        (Some(_), Some(r)) => {
            p.push(Problem::new(
                r.key_loc.clone(),
                "a dns-01 challenge takes `hook` or `rfc2136`, not both",
            ));
            None
        }
        (None, None) => {
            p.push(Problem::new(
                node.loc.clone(),
                "a dns-01 challenge needs `hook` (a command that sets the TXT record) \
                 or `rfc2136` (a DNS server that accepts dynamic updates)",
            ));
            None
        }
    }
}

/// dns-01's mechanisms used for dns-account-01 (the same keys, another record name).
fn account_label(dns01: ChallengeConfig) -> ChallengeConfig {
    match dns01 {
        ChallengeConfig::Dns01Hook {
            hook,
            propagation_wait,
        } => ChallengeConfig::DnsAccount01Hook {
            hook,
            propagation_wait,
        },
        ChallengeConfig::Dns01Rfc2136 {
            server,
            tsig_key_file,
            propagation_wait,
        } => ChallengeConfig::DnsAccount01Rfc2136 {
            server,
            tsig_key_file,
            propagation_wait,
        },
        other => other,
    }
}

/// dns-persist-01: `policy = "wildcard"`, `persist_until` (a date or an RFC 3339 time),
/// `resolver` (where the record is looked up); all optional.
fn parse_persist01(entries: &[Entry], p: &mut Vec<Problem>) -> Option<ChallengeConfig> {
    let start = p.len();
    let mut persist = PersistConfig::default();
    if let Some(e) = find(entries, "policy") {
        match as_str("policy", &e.node, p) {
            Some(v) if v.eq_ignore_ascii_case("wildcard") => persist.wildcard = true,
            Some(v) => p.push(Problem::new(
                e.node.loc.clone(),
                format!(
                    "`policy` of a dns-persist-01 challenge can only be \"wildcard\" (the \
                     record then also covers *.NAME and names below it), found `{v}`"
                ),
            )),
            None => {}
        }
    }
    if let Some(e) = find(entries, "persist_until") {
        persist.persist_until = parse_persist_until(&e.node, p);
    }
    if let Some(e) = find(entries, "resolver") {
        persist.resolver = parse_resolver(&e.node, p);
    }
    (p.len() == start).then_some(ChallengeConfig::DnsPersist01(persist))
}

/// dns-persist-01's `resolver`: an IP address, with a port other than 0, or without one
/// (53).
fn parse_resolver(node: &Node, p: &mut Vec<Problem>) -> Option<SocketAddr> {
    as_socket_addr("resolver", node, Some(53), p)
}

/// `persist_until`: `"2027-06-30"` (midnight UTC), an RFC 3339 time, or a TOML date or
/// offset date-time; seconds since the Unix epoch.
fn parse_persist_until(node: &Node, p: &mut Vec<Problem>) -> Option<i64> {
    use time::format_description::well_known::Rfc3339;
    let text = match &node.val {
        Val::Str(s) => s.clone(),
        Val::Datetime(d) => d.to_string(),
        _ => String::new(),
    };
    let date = time::macros::format_description!("[year]-[month]-[day]");
    let parsed = time::Date::parse(&text, date)
        .map(|d| d.midnight().assume_utc())
        .or_else(|_| time::OffsetDateTime::parse(&text, &Rfc3339));
    match parsed {
        Ok(t) => Some(t.unix_timestamp()),
        Err(_) => {
            p.push(Problem::new(
                node.loc.clone(),
                format!(
                    "`persist_until` must be a date like \"2027-06-30\" (midnight UTC) or an \
                     RFC 3339 time like \"2027-06-30T12:00:00Z\", found `{}`",
                    if text.is_empty() {
                        "a value of another type"
                    } else {
                        &text
                    }
                ),
            ));
            None
        }
    }
}

/// What an `rfc2136` table says.
#[derive(Default)]
struct Rfc2136 {
    server: Option<SocketAddr>,
    tsig_key_file: Option<PathBuf>,
}

impl Draft for Rfc2136 {}

/// A key of `rfc2136`.
type Rfc2136Key = KeySpec<Rfc2136>;

/// Every key of `rfc2136`.
static RFC2136_KEYS: &[Rfc2136Key] = &[
    Rfc2136Key::own("server", |r, e, _, p| {
        r.server = as_socket_addr(&e.key, &e.node, Some(53), p)
    })
    .required(),
    Rfc2136Key::own("tsig_key_file", |r, e, _, p| {
        r.tsig_key_file = as_file_path(&e.key, &e.node, p)
    }),
];

/// `rfc2136`: the DNS server to update (port 53 if not given) and its TSIG key file.
pub(super) fn parse_rfc2136(
    node: &Node,
    prefix: &str,
    locs: &mut BTreeMap<String, Location>,
    p: &mut Vec<Problem>,
) -> Option<(SocketAddr, Option<PathBuf>)> {
    let entries = as_table(
        "rfc2136",
        node,
        "{ server = \"10.0.0.53:53\", tsig_key_file = \"/etc/renewd/tsig.key\" }",
        p,
    )?;
    let start = p.len();
    check_keys(entries, &key_names(RFC2136_KEYS), "in `rfc2136`", p);
    let mut rfc2136 = Rfc2136::default();
    parse_keys(RFC2136_KEYS, entries, &mut rfc2136, &(), p);
    record_locations(RFC2136_KEYS, entries, &format!("{prefix}.rfc2136"), locs);
    let needs = |_: &str| {
        "`rfc2136` needs `server`, the DNS server to update, like `10.0.0.53:53`".to_string()
    };
    report_missing(RFC2136_KEYS, entries, &node.loc, needs, p);
    if p.len() > start {
        return None;
    }
    rfc2136.server.map(|server| (server, rfc2136.tsig_key_file))
}

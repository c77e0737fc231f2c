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
    check_keys, find, suggest,
};
use super::source::{Node, Val};
use super::types::{ChallengeConfig, ChallengeRule};
use super::value::normalize_identifier;

pub(super) const MAX_PROPAGATION_WAIT: Duration = Duration::from_secs(3600);

pub(super) const CHALLENGE_KEYS: &[&str] = &[
    "type",
    "webroot",
    "trust_owner",
    "listen",
    "hook",
    "rfc2136",
    "propagation_wait",
];

pub(super) const CHALLENGE_TYPES: &[&str] = &["http-01", "dns-01", "tls-alpn-01"];

pub(super) const RFC2136_KEYS: &[&str] = &["server", "tsig_key_file"];

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
    check_keys(entries, CHALLENGE_KEYS, &format!("in `{prefix}`"), p);
    for e in entries {
        if CHALLENGE_KEYS.contains(&e.key.as_str()) {
            locs.insert(format!("{prefix}.{}", e.key), e.node.loc.clone());
        }
    }
    let Some(type_entry) = find(entries, "type") else {
        p.push(Problem::new(
            node.loc.clone(),
            format!(
                "`{prefix}` needs a `type`: one of {}",
                CHALLENGE_TYPES.join(", ")
            ),
        ));
        return None;
    };
    let kind = as_str("type", &type_entry.node, p)?.to_ascii_lowercase();
    let allowed: &[&str] = match kind.as_str() {
        "http-01" => &["type", "webroot", "trust_owner", "listen"],
        "dns-01" => &["type", "hook", "rfc2136", "propagation_wait"],
        "tls-alpn-01" => &["type", "listen"],
        _ => {
            let mut message = format!(
                "unknown challenge type `{kind}`; valid types are {}",
                CHALLENGE_TYPES.join(", ")
            );
            if let Some(close) = suggest(&kind, CHALLENGE_TYPES) {
                message.push_str(&format!("; did you mean `{close}`?"));
            }
            p.push(Problem::new(type_entry.node.loc.clone(), message));
            return None;
        }
    };
    for e in entries {
        if CHALLENGE_KEYS.contains(&e.key.as_str()) && !allowed.contains(&e.key.as_str()) {
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
    let webroot = find(entries, "webroot");
    let listen = find(entries, "listen");
    let challenge = match kind.as_str() {
        "http-01" => match (webroot, listen) {
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
        },
        "tls-alpn-01" => match listen {
            Some(l) => as_socket_addr("listen", &l.node, None, p)
                .map(|listen| ChallengeConfig::TlsAlpn01 { listen }),
            None => {
                p.push(Problem::new(
                    node.loc.clone(),
                    "a tls-alpn-01 challenge needs `listen`, like `[::]:443`",
                ));
                None
            }
        },
        _ => {
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
                (None, Some(r)) => {
                    parse_rfc2136(&r.node, prefix, locs, p).and_then(|(server, key)| {
                        wait.map(|propagation_wait| ChallengeConfig::Dns01Rfc2136 {
                            server,
                            tsig_key_file: key,
                            propagation_wait,
                        })
                    })
                }
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
    };
    if p.len() > start {
        return None;
    }
    locs.insert(format!("{prefix}.type"), type_entry.node.loc.clone());
    challenge
}

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
    check_keys(entries, RFC2136_KEYS, "in `rfc2136`", p);
    let mut server = None;
    let mut key_file = None;
    for e in entries {
        match e.key.as_str() {
            "server" => server = as_socket_addr("server", &e.node, Some(53), p),
            "tsig_key_file" => key_file = as_file_path("tsig_key_file", &e.node, p),
            _ => continue,
        }
        locs.insert(format!("{prefix}.rfc2136.{}", e.key), e.node.loc.clone());
    }
    if find(entries, "server").is_none() {
        p.push(Problem::new(
            node.loc.clone(),
            "`rfc2136` needs `server`, the DNS server to update, like `10.0.0.53:53`",
        ));
    }
    if p.len() > start {
        return None;
    }
    server.map(|server| (server, key_file))
}

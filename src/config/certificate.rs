//! One `[[certificate]]` with `[defaults]` applied: its keys, the tables inside it
//! (`files`, `reload`, `verify`), and the checks across keys (every name has a challenge
//! that can validate it).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::challenge::parse_challenge;
use super::problem::{Location, Problem};
use super::schema::*;
use super::source::{Entry, Node, Val};
use super::types::*;
use super::value::*;

pub(super) const DEFAULT_KEY_MODE: u32 = 0o600;

pub(super) const DEFAULT_RELOAD_TIMEOUT: Duration = Duration::from_secs(60);

pub(super) const MIN_RELOAD_TIMEOUT: Duration = Duration::from_secs(1);

pub(super) const MAX_RELOAD_TIMEOUT: Duration = Duration::from_secs(3600);

/// How long the post-reload proof may retry before the renewal counts as failed.
pub(super) const DEFAULT_VERIFY_TIMEOUT: Duration = Duration::from_secs(30);

pub(super) const MIN_VERIFY_TIMEOUT: Duration = Duration::from_secs(1);

pub(super) const MAX_VERIFY_TIMEOUT: Duration = Duration::from_secs(3600);

pub(super) const CERT_KEYS: &[&str] = &[
    "name",
    "domains",
    "owner",
    "service",
    "ca",
    "key_type",
    "renew_before",
    "challenge",
    "files",
    "user",
    "group",
    "key_mode",
    "reload",
    "reload_timeout",
    "verify",
    "profile",
    "alert_before",
];

pub(super) const FILES_KEYS: &[&str] = &["cert", "chain", "fullchain", "key", "combined"];

pub(super) const VERIFY_KEYS: &[&str] = &["connect", "server_name", "timeout"];

pub(super) const VERIFY_REQUIRED_KEYS: &[&str] = &["connect", "server_name"];

/// What one certificate's keys say, before the cross-key checks.
#[derive(Default)]
pub(super) struct CertFields {
    name: Option<String>,
    domains: Option<Vec<String>>,
    owner: Option<String>,
    service: Option<String>,
    ca: Option<Vec<String>>,
    key_type: Option<KeyType>,
    renew_before: Option<RenewBefore>,
    challenge: Option<Vec<ChallengeRule>>,
    files: Option<FileSet>,
    user: Option<String>,
    group: Option<String>,
    key_mode: Option<u32>,
    reload: Option<Vec<Vec<String>>>,
    reload_timeout: Option<Duration>,
    verify: Option<VerifyConfig>,
    profile: Option<String>,
    alert_before: Option<RenewBefore>,
    locs: BTreeMap<String, Location>,
}

pub(super) fn parse_cert_fields<'e>(
    entries: impl IntoIterator<Item = &'e Entry>,
    cas: &BTreeSet<String>,
    p: &mut Vec<Problem>,
) -> CertFields {
    let mut f = CertFields::default();
    for e in entries {
        let (key, node) = (e.key.as_str(), &e.node);
        if !CERT_KEYS.contains(&key) {
            continue;
        }
        f.locs.insert(key.to_string(), node.loc.clone());
        match key {
            "name" => {
                if let Some(name) = as_str(key, node, p) {
                    match check_ident(name) {
                        Ok(()) => f.name = Some(name.to_string()),
                        Err(why) => p.push(Problem::new(
                            node.loc.clone(),
                            format!("certificate name `{name}` {why}"),
                        )),
                    }
                }
            }
            "domains" => f.domains = parse_domains(node, &mut f.locs, p),
            "owner" => f.owner = as_nonempty_str(key, node, p),
            "service" => f.service = as_nonempty_str(key, node, p),
            "ca" => f.ca = parse_ca_refs(node, cas, p),
            "key_type" => {
                if let Some(s) = as_str(key, node, p) {
                    f.key_type = KeyType::from_name(s);
                    if f.key_type.is_none() {
                        let valid: Vec<&str> = KeyType::ALL.iter().map(|k| k.as_str()).collect();
                        p.push(Problem::new(
                            node.loc.clone(),
                            format!(
                                "unknown `key_type` `{s}`; valid types are {}",
                                valid.join(", ")
                            ),
                        ));
                    }
                }
            }
            "renew_before" => match margin_value(key, node) {
                Ok(r) => f.renew_before = Some(r),
                Err(why) => p.push(Problem::new(node.loc.clone(), why)),
            },
            "alert_before" => match margin_value(key, node) {
                Ok(r) => f.alert_before = Some(r),
                Err(why) => p.push(Problem::new(node.loc.clone(), why)),
            },
            "challenge" => f.challenge = parse_challenge(node, &mut f.locs, p),
            "files" => f.files = parse_files(node, &mut f.locs, p),
            "user" => f.user = as_account_name(key, node, p),
            "group" => f.group = as_account_name(key, node, p),
            "key_mode" => match parse_key_mode(node) {
                Ok(mode) => f.key_mode = Some(mode),
                Err(why) => p.push(Problem::new(node.loc.clone(), why)),
            },
            "reload" => f.reload = parse_reload(node, &mut f.locs, p),
            "reload_timeout" => {
                f.reload_timeout = as_duration(key, node, MIN_RELOAD_TIMEOUT, MAX_RELOAD_TIMEOUT, p)
            }
            "verify" => f.verify = parse_verify(node, &mut f.locs, p),
            "profile" => f.profile = as_nonempty_str(key, node, p),
            _ => {}
        }
    }
    f
}

pub(super) fn parse_domains(
    node: &Node,
    locs: &mut BTreeMap<String, Location>,
    p: &mut Vec<Problem>,
) -> Option<Vec<String>> {
    let list = as_str_list("domains", node, p)?;
    if list.is_empty() {
        p.push(Problem::new(
            node.loc.clone(),
            "`domains` must list at least one name",
        ));
        return None;
    }
    let mut out: Vec<String> = Vec::with_capacity(list.len());
    let mut ok = true;
    for (written, loc) in list {
        match normalize_identifier(written) {
            Ok(domain) if out.contains(&domain) => {
                p.push(Problem::new(
                    loc.clone(),
                    format!("`{domain}` is listed twice in `domains`"),
                ));
                ok = false;
            }
            Ok(domain) => {
                locs.insert(format!("domains.{}", out.len()), loc.clone());
                out.push(domain);
            }
            Err(why) => {
                p.push(Problem::new(loc.clone(), why));
                ok = false;
            }
        }
    }
    ok.then_some(out)
}

pub(super) fn parse_ca_refs(
    node: &Node,
    cas: &BTreeSet<String>,
    p: &mut Vec<Problem>,
) -> Option<Vec<String>> {
    if let Val::Str(name) = &node.val {
        p.push(Problem::new(
            node.loc.clone(),
            format!("`ca` must be an array of CA names, like [\"{name}\"], found a string"),
        ));
        return None;
    }
    let list = as_str_list("ca", node, p)?;
    if list.is_empty() {
        p.push(Problem::new(
            node.loc.clone(),
            "`ca` must name at least one CA",
        ));
        return None;
    }
    let known: Vec<&str> = cas.iter().map(String::as_str).collect();
    let mut out: Vec<String> = Vec::new();
    let mut ok = true;
    for (name, loc) in list {
        if !cas.contains(name) {
            let mut message = format!("`{name}` is not a defined CA");
            if let Some(close) = suggest(name, &known) {
                message.push_str(&format!("; did you mean `{close}`?"));
            } else if known.is_empty() {
                message.push_str(&format!("; define it in a [ca.{name}] table"));
            } else {
                message.push_str(&format!("; defined: {}", known.join(", ")));
            }
            p.push(Problem::new(loc.clone(), message));
            ok = false;
        } else if out.iter().any(|n| n == name) {
            p.push(Problem::new(
                loc.clone(),
                format!("`{name}` is listed twice in `ca`"),
            ));
            ok = false;
        } else {
            out.push(name.to_string());
        }
    }
    ok.then_some(out)
}

pub(super) fn parse_files(
    node: &Node,
    locs: &mut BTreeMap<String, Location>,
    p: &mut Vec<Problem>,
) -> Option<FileSet> {
    let entries = as_table(
        "files",
        node,
        "{ fullchain = \"/etc/nginx/tls/www.pem\", key = \"/etc/nginx/tls/www.key\" }",
        p,
    )?;
    let start = p.len();
    check_keys(entries, FILES_KEYS, "in `files`", p);
    let mut files = FileSet::default();
    let mut seen: Vec<(PathBuf, FileKind)> = Vec::new();
    for e in entries {
        let Some(kind) = FileKind::from_name(&e.key) else {
            continue;
        };
        let key = format!("files.{kind}");
        locs.insert(key.clone(), e.node.loc.clone());
        let Some(path) = as_file_path(kind.as_str(), &e.node, p) else {
            continue;
        };
        if let Some((_, other)) = seen.iter().find(|(seen_path, _)| *seen_path == path) {
            p.push(Problem::new(
                e.node.loc.clone(),
                format!("`{key}` is the same file as `files.{other}`"),
            ));
            continue;
        }
        seen.push((path.clone(), kind));
        *files.slot(kind) = Some(path);
    }
    if p.len() > start {
        return None;
    }
    if files.cert.is_none() && files.fullchain.is_none() && files.combined.is_none() {
        p.push(Problem::new(
            node.loc.clone(),
            "`files` needs somewhere to put the certificate: `cert`, `fullchain` or `combined`",
        ));
    }
    if files.key.is_none() && files.combined.is_none() {
        p.push(Problem::new(
            node.loc.clone(),
            "`files` needs somewhere to put the private key: `key` or `combined`",
        ));
    }
    (p.len() == start).then_some(files)
}

pub(super) fn parse_reload(
    node: &Node,
    locs: &mut BTreeMap<String, Location>,
    p: &mut Vec<Problem>,
) -> Option<Vec<Vec<String>>> {
    let Val::Array(items) = &node.val else {
        wrong_type(
            "reload",
            node,
            "a list of commands, like [[\"systemctl\", \"reload\", \"nginx\"]]",
            p,
        );
        return None;
    };
    if !items.is_empty() && items.iter().all(|i| matches!(i.val, Val::Str(_))) {
        p.push(Problem::new(
            node.loc.clone(),
            "`reload` is a list of commands, each a list of arguments: write \
             [[\"systemctl\", \"reload\", \"nginx\"]] rather than [\"systemctl\", \"reload\", \"nginx\"]",
        ));
        return None;
    }
    let mut out = Vec::with_capacity(items.len());
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        match as_argv("reload", item, p) {
            Some(argv) => {
                locs.insert(format!("reload.{i}"), item.loc.clone());
                out.push(argv);
            }
            None => ok = false,
        }
    }
    ok.then_some(out)
}

pub(super) fn parse_verify(
    node: &Node,
    locs: &mut BTreeMap<String, Location>,
    p: &mut Vec<Problem>,
) -> Option<VerifyConfig> {
    let entries = as_table(
        "verify",
        node,
        "{ connect = \"127.0.0.1:443\", server_name = \"example.org\" }",
        p,
    )?;
    let start = p.len();
    check_keys(entries, VERIFY_KEYS, "in `verify`", p);
    let mut connect = None;
    let mut server_name = None;
    let mut timeout = DEFAULT_VERIFY_TIMEOUT;
    for e in entries {
        match e.key.as_str() {
            "connect" => {
                if let Some(s) = as_str("connect", &e.node, p) {
                    match check_host_port(s) {
                        Ok(()) => connect = Some(s.to_string()),
                        Err(why) => p.push(Problem::new(e.node.loc.clone(), why)),
                    }
                }
            }
            "server_name" => {
                if let Some(s) = as_str("server_name", &e.node, p) {
                    match normalize_identifier(s) {
                        Ok(name) if !name.starts_with("*.") => server_name = Some(name),
                        Ok(_) => p.push(Problem::new(
                            e.node.loc.clone(),
                            "`server_name` must be a name the service answers to, not a wildcard",
                        )),
                        Err(why) => p.push(Problem::new(
                            e.node.loc.clone(),
                            format!("`server_name`: {why}"),
                        )),
                    }
                }
            }
            "timeout" => {
                if let Some(d) = as_duration(
                    "timeout",
                    &e.node,
                    MIN_VERIFY_TIMEOUT,
                    MAX_VERIFY_TIMEOUT,
                    p,
                ) {
                    timeout = d;
                }
            }
            _ => continue,
        }
        locs.insert(format!("verify.{}", e.key), e.node.loc.clone());
    }
    for key in VERIFY_REQUIRED_KEYS {
        if find(entries, key).is_none() {
            p.push(Problem::new(
                node.loc.clone(),
                format!("`verify` needs `{key}`"),
            ));
        }
    }
    if p.len() > start {
        return None;
    }
    Some(VerifyConfig {
        connect: connect?,
        server_name: server_name?,
        timeout,
    })
}

/// Validates `[defaults]` on its own, so its mistakes are reported even when no
/// certificate inherits them.
pub(super) fn check_defaults(defaults: &[Entry], cas: &BTreeSet<String>, p: &mut Vec<Problem>) {
    for e in defaults {
        if e.key == "name" || e.key == "domains" {
            p.push(Problem::new(
                e.key_loc.clone(),
                format!(
                    "`{}` cannot be set in [defaults]: every [[certificate]] has its own",
                    e.key
                ),
            ));
        }
    }
    let allowed: Vec<&str> = CERT_KEYS
        .iter()
        .copied()
        .filter(|k| *k != "name" && *k != "domains")
        .collect();
    let others: Vec<Entry> = defaults
        .iter()
        .filter(|e| e.key != "name" && e.key != "domains")
        .cloned()
        .collect();
    check_keys(&others, &allowed, "in [defaults]", p);
    parse_cert_fields(others.iter(), cas, p);
}

pub(super) fn build_certificate(
    node: &Node,
    defaults: &[Entry],
    cas: &BTreeSet<String>,
    p: &mut Vec<Problem>,
) -> Option<CertConfig> {
    let Val::Table(own) = &node.val else {
        return None;
    };
    let start = p.len();
    check_keys(own, CERT_KEYS, "in [[certificate]]", p);
    let inherited = defaults
        .iter()
        .filter(|d| d.key != "name" && d.key != "domains" && find(own, &d.key).is_none());
    let mut f = parse_cert_fields(own.iter().chain(inherited), cas, p);
    let written = |key: &str| f.locs.contains_key(key);
    let label = match &f.name {
        Some(name) => format!("certificate `{name}`"),
        None => "this certificate".to_string(),
    };
    if !written("name") {
        p.push(Problem::new(
            node.loc.clone(),
            "this [[certificate]] has no `name`",
        ));
    }
    if !written("domains") {
        p.push(Problem::new(
            node.loc.clone(),
            format!("{label} has no `domains`"),
        ));
    }
    for key in ["challenge", "files"] {
        if !written(key) {
            p.push(Problem::new(
                node.loc.clone(),
                format!("{label} has no `{key}`; set it here or in [defaults]"),
            ));
        }
    }
    if !written("ca") {
        match cas.len() {
            1 => f.ca = Some(cas.iter().cloned().collect()),
            0 => p.push(Problem::new(
                node.loc.clone(),
                format!("{label} has no CA: define one in a [ca.NAME] table"),
            )),
            _ => {
                let names: Vec<&str> = cas.iter().map(String::as_str).collect();
                p.push(Problem::new(
                    node.loc.clone(),
                    format!(
                        "{label} must choose its CA with `ca = [...]` (here or in [defaults]): \
                         several are defined ({})",
                        names.join(", ")
                    ),
                ));
            }
        }
    }
    if let (Some(domains), Some(rules), Some(name)) = (&f.domains, &f.challenge, &f.name) {
        let challenges = Challenges {
            certificate: name.clone(),
            domains: domains.clone(),
            rules: rules.clone(),
        };
        let mut used = vec![false; rules.len()];
        for (i, domain) in domains.iter().enumerate() {
            let Some(loc) = f.locs.get(&format!("domains.{i}")) else {
                continue;
            };
            let Some(rule) = challenges.for_name(domain) else {
                p.push(Problem::new(
                    loc.clone(),
                    format!(
                        "no entry of `challenge` covers `{domain}`: add one for it, or a \
                         `\"*\"` entry for every name not listed"
                    ),
                ));
                continue;
            };
            if let Some(n) = rules.iter().position(|r| r == rule) {
                used[n] = true;
            }
            let challenge = &rule.config;
            if domain.starts_with("*.") && !challenge.is_dns01() {
                p.push(Problem::new(
                    loc.clone(),
                    format!(
                        "wildcard `{domain}` needs a dns-01 challenge, not {}",
                        challenge.kind()
                    ),
                ));
            }
            if domain.parse::<IpAddr>().is_ok() && challenge.is_dns01() {
                p.push(Problem::new(
                    loc.clone(),
                    format!(
                        "IP address `{domain}` cannot be validated with dns-01; \
                         use http-01 or tls-alpn-01"
                    ),
                ));
            }
        }
        for (rule, used) in rules.iter().zip(used) {
            if let (Some(pattern), false) = (&rule.pattern, used) {
                if let Some(loc) = f.locs.get(&rule.key) {
                    p.push(Problem::new(
                        loc.clone(),
                        format!("the `challenge` entry `{pattern}` covers none of `domains`"),
                    ));
                }
            }
        }
    }
    if p.len() > start {
        return None;
    }
    let challenge = Challenges {
        certificate: f.name.clone()?,
        domains: f.domains.clone()?,
        rules: f.challenge?,
    };
    Some(CertConfig {
        name: f.name?,
        domains: f.domains?,
        owner: f.owner,
        service: f.service,
        ca: f.ca?,
        key_type: f.key_type.unwrap_or(KeyType::EcdsaP256),
        renew_before: f.renew_before.unwrap_or(RenewBefore::Fraction(1.0 / 3.0)),
        challenge,
        files: f.files?,
        user: f.user,
        group: f.group,
        key_mode: f.key_mode.unwrap_or(DEFAULT_KEY_MODE),
        reload: f.reload.unwrap_or_default(),
        reload_timeout: f.reload_timeout.unwrap_or(DEFAULT_RELOAD_TIMEOUT),
        verify: f.verify,
        profile: f.profile,
        alert_before: f.alert_before,
        location: node.loc.clone(),
        key_locations: Arc::new(f.locs),
    })
}

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

/// A key of a `[[certificate]]`; parsing it needs the names of the defined CAs.
type CertKey = KeySpec<CertConfig, BTreeSet<String>>;

/// Every key of a `[[certificate]]`, in the order suggestions prefer on a tie. Each parser
/// leaves its field as [`CertConfig::unset`] made it when the value is wrong, and says why.
pub(super) static CERT_KEYS: &[CertKey] = &[
    CertKey::own("name", parse_name).required(),
    CertKey::own("domains", |c, e, _, p| {
        c.domains = parse_domains(&e.node, c.locations(), p).unwrap_or_default()
    })
    .required(),
    CertKey::inheritable("owner", |c, e, _, p| {
        c.owner = as_nonempty_str(&e.key, &e.node, p)
    }),
    CertKey::inheritable("service", |c, e, _, p| {
        c.service = as_nonempty_str(&e.key, &e.node, p)
    }),
    CertKey::inheritable("ca", |c, e, cas, p| {
        c.ca = parse_ca_refs(&e.node, cas, p).unwrap_or_default()
    }),
    CertKey::inheritable("key_type", parse_key_type),
    CertKey::inheritable("renew_before", |c, e, _, p| {
        if let Some(margin) = or_report(&e.node, margin_value(&e.key, &e.node), p) {
            c.renew_before = margin;
        }
    }),
    CertKey::inheritable("challenge", |c, e, _, p| {
        c.challenge.rules = parse_challenge(&e.node, c.locations(), p).unwrap_or_default()
    })
    .required(),
    CertKey::inheritable("files", |c, e, _, p| {
        c.files = parse_files(&e.node, c.locations(), p).unwrap_or_default()
    })
    .required(),
    CertKey::inheritable("user", |c, e, _, p| {
        c.user = as_account_name(&e.key, &e.node, p)
    }),
    CertKey::inheritable("group", |c, e, _, p| {
        c.group = as_account_name(&e.key, &e.node, p)
    }),
    CertKey::inheritable("key_mode", |c, e, _, p| {
        if let Some(mode) = or_report(&e.node, parse_key_mode(&e.node), p) {
            c.key_mode = mode;
        }
    }),
    CertKey::inheritable("reload", |c, e, _, p| {
        c.reload = parse_reload(&e.node, c.locations(), p).unwrap_or_default()
    }),
    CertKey::inheritable("reload_timeout", |c, e, _, p| {
        let (min, max) = (MIN_RELOAD_TIMEOUT, MAX_RELOAD_TIMEOUT);
        if let Some(timeout) = as_duration(&e.key, &e.node, min, max, p) {
            c.reload_timeout = timeout;
        }
    }),
    CertKey::inheritable("verify", |c, e, _, p| {
        c.verify = parse_verify(&e.node, c.locations(), p)
    }),
    CertKey::inheritable("profile", |c, e, _, p| {
        c.profile = as_nonempty_str(&e.key, &e.node, p)
    }),
    CertKey::inheritable("alert_before", |c, e, _, p| {
        c.alert_before = or_report(&e.node, margin_value(&e.key, &e.node), p)
    }),
    CertKey::inheritable("preferred_chain", |c, e, _, p| {
        c.preferred_chain = as_nonempty_str(&e.key, &e.node, p)
    }),
    CertKey::inheritable("reuse_key", |c, e, _, p| {
        if let Some(b) = as_bool(&e.key, &e.node, p) {
            c.reuse_key = b;
        }
    }),
    CertKey::own("common_name", |c, e, _, p| {
        c.common_name = as_nonempty_str(&e.key, &e.node, p)
    }),
    CertKey::inheritable("pkcs12_password_file", |c, e, _, p| {
        c.pkcs12_password_file = as_file_path(&e.key, &e.node, p)
    }),
];

/// Whether `key` is a certificate key that `[defaults]` cannot set (`name`, `domains`).
fn own_only(key: &str) -> bool {
    spec(CERT_KEYS, key).is_some_and(|k| k.scope == Scope::Own)
}

impl Draft for CertConfig {
    fn written_at(&mut self, key: &str, at: &Location) {
        self.locations().insert(key.to_string(), at.clone());
    }
}

impl CertConfig {
    /// Where each key was written, to add to while the certificate is built.
    fn locations(&mut self) -> &mut BTreeMap<String, Location> {
        Arc::make_mut(&mut self.key_locations)
    }

    /// A certificate before its keys are read: the default of every key that has one,
    /// empty values for the others.
    fn unset(location: Location) -> Self {
        CertConfig {
            name: String::new(),
            domains: Vec::new(),
            owner: None,
            service: None,
            ca: Vec::new(),
            key_type: KeyType::EcdsaP256,
            renew_before: RenewBefore::Fraction(1.0 / 3.0),
            challenge: Challenges {
                certificate: String::new(),
                domains: Vec::new(),
                rules: Vec::new(),
            },
            files: FileSet::default(),
            user: None,
            group: None,
            key_mode: DEFAULT_KEY_MODE,
            reload: Vec::new(),
            reload_timeout: DEFAULT_RELOAD_TIMEOUT,
            verify: None,
            profile: None,
            alert_before: None,
            preferred_chain: None,
            reuse_key: false,
            common_name: None,
            pkcs12_password_file: None,
            location,
            key_locations: Arc::default(),
        }
    }
}

fn parse_name(c: &mut CertConfig, e: &Entry, _: &BTreeSet<String>, p: &mut Vec<Problem>) {
    if let Some(name) = as_str(&e.key, &e.node, p) {
        match check_ident(name) {
            Ok(()) => c.name = name.to_string(),
            Err(why) => p.push(Problem::new(
                e.node.loc.clone(),
                format!("certificate name `{name}` {why}"),
            )),
        }
    }
}

fn parse_key_type(c: &mut CertConfig, e: &Entry, _: &BTreeSet<String>, p: &mut Vec<Problem>) {
    let Some(s) = as_str(&e.key, &e.node, p) else {
        return;
    };
    match KeyType::from_name(s) {
        Some(key_type) => c.key_type = key_type,
        None => {
            let valid: Vec<&str> = KeyType::ALL.iter().map(|k| k.as_str()).collect();
            p.push(Problem::new(
                e.node.loc.clone(),
                format!(
                    "unknown `key_type` `{s}`; valid types are {}",
                    valid.join(", ")
                ),
            ));
        }
    }
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
    check_keys(
        entries,
        &FileKind::ALL.map(FileKind::as_str),
        "in `files`",
        p,
    );
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

/// A key of the `verify` table.
type VerifyKey = KeySpec<VerifyConfig>;

/// Every key of `verify`, in the order suggestions prefer on a tie.
static VERIFY_KEYS: &[VerifyKey] = &[
    VerifyKey::own("connect", |v, e, _, p| {
        if let Some(s) = as_str(&e.key, &e.node, p) {
            if or_report(&e.node, check_host_port(s), p).is_some() {
                v.connect = s.to_string();
            }
        }
    })
    .required(),
    VerifyKey::own("server_name", parse_server_name).required(),
    VerifyKey::own("timeout", |v, e, _, p| {
        let (min, max) = (MIN_VERIFY_TIMEOUT, MAX_VERIFY_TIMEOUT);
        if let Some(timeout) = as_duration(&e.key, &e.node, min, max, p) {
            v.timeout = timeout;
        }
    }),
];

impl Draft for VerifyConfig {}

fn parse_server_name(v: &mut VerifyConfig, e: &Entry, _: &(), p: &mut Vec<Problem>) {
    let Some(s) = as_str(&e.key, &e.node, p) else {
        return;
    };
    match normalize_identifier(s) {
        Ok(name) if !name.starts_with("*.") => v.server_name = name,
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

/// `verify`: where to prove, after a reload, that the new certificate is served.
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
    check_keys(entries, &key_names(VERIFY_KEYS), "in `verify`", p);
    let mut verify = VerifyConfig {
        connect: String::new(),
        server_name: String::new(),
        timeout: DEFAULT_VERIFY_TIMEOUT,
    };
    parse_keys(VERIFY_KEYS, entries, &mut verify, &(), p);
    record_locations(VERIFY_KEYS, entries, "verify", locs);
    report_missing(
        VERIFY_KEYS,
        entries,
        &node.loc,
        |key| format!("`verify` needs `{key}`"),
        p,
    );
    (p.len() == start).then_some(verify)
}

/// Validates `[defaults]` on its own, so its mistakes are reported even when no
/// certificate inherits them.
pub(super) fn check_defaults(defaults: &[Entry], cas: &BTreeSet<String>, p: &mut Vec<Problem>) {
    let Some(first) = defaults.first() else {
        return;
    };
    for e in defaults.iter().filter(|e| own_only(&e.key)) {
        p.push(Problem::new(
            e.key_loc.clone(),
            format!(
                "`{}` cannot be set in [defaults]: every [[certificate]] has its own",
                e.key
            ),
        ));
    }
    let allowed: Vec<&str> = CERT_KEYS
        .iter()
        .filter(|k| k.scope == Scope::Inheritable)
        .map(|k| k.name)
        .collect();
    let others: Vec<Entry> = defaults
        .iter()
        .filter(|e| !own_only(&e.key))
        .cloned()
        .collect();
    check_keys(&others, &allowed, "in [defaults]", p);
    let mut scratch = CertConfig::unset(first.key_loc.clone());
    parse_keys(CERT_KEYS, &others, &mut scratch, cas, p);
}

/// One `[[certificate]]`: its own keys, then those of `[defaults]` it does not set; `None`
/// when anything about it is wrong (and `p` says what).
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
    check_keys(own, &key_names(CERT_KEYS), "in [[certificate]]", p);
    let inherited = defaults
        .iter()
        .filter(|d| !own_only(&d.key) && find(own, &d.key).is_none());
    let mut cert = CertConfig::unset(node.loc.clone());
    parse_keys(CERT_KEYS, own.iter().chain(inherited), &mut cert, cas, p);
    check_required(&mut cert, cas, p);
    check_challenges_cover_domains(&cert, p);
    check_common_name(&mut cert, p);
    check_pkcs12(&cert, p);
    if p.len() > start {
        return None;
    }
    cert.challenge.certificate = cert.name.clone();
    cert.challenge.domains = cert.domains.clone();
    Some(cert)
}

/// Reports each required key a certificate lacks, at its header; without `ca`, the only
/// CA there is is chosen.
fn check_required(cert: &mut CertConfig, cas: &BTreeSet<String>, p: &mut Vec<Problem>) {
    let header = cert.location.clone();
    let written = |key: &str| cert.key_locations.contains_key(key);
    let label = match cert.name.as_str() {
        "" => "this certificate".to_string(),
        name => format!("certificate `{name}`"),
    };
    for key in CERT_KEYS.iter().filter(|k| k.required && !written(k.name)) {
        let message = match (key.name, key.scope) {
            ("name", _) => "this [[certificate]] has no `name`".to_string(),
            (name, Scope::Own) => format!("{label} has no `{name}`"),
            (name, Scope::Inheritable) => {
                format!("{label} has no `{name}`; set it here or in [defaults]")
            }
        };
        p.push(Problem::new(header.clone(), message));
    }
    if written("ca") {
        return;
    }
    match cas.len() {
        1 => cert.ca = cas.iter().cloned().collect(),
        0 => p.push(Problem::new(
            header,
            format!("{label} has no CA: define one in a [ca.NAME] table"),
        )),
        _ => {
            let names: Vec<&str> = cas.iter().map(String::as_str).collect();
            p.push(Problem::new(
                header,
                format!(
                    "{label} must choose its CA with `ca = [...]` (here or in [defaults]): \
                     several are defined ({})",
                    names.join(", ")
                ),
            ));
        }
    }
}

/// `common_name` must be one of `domains` (compared as normalized there) and fit RFC 5280's `ub-common-name` of 64 characters (Appendix A.1).
fn check_common_name(cert: &mut CertConfig, p: &mut Vec<Problem>) {
    let Some(written) = cert.common_name.clone() else {
        return;
    };
    let at = cert.key_location("common_name").clone();
    let normalized = normalize_identifier(&written).unwrap_or_else(|_| written.clone());
    if !cert.domains.is_empty() && !cert.domains.contains(&normalized) {
        p.push(Problem::new(
            at,
            format!("`common_name` `{written}` must be one of `domains`"),
        ));
    } else if normalized.len() > 64 {
        p.push(Problem::new(
            at,
            format!(
                "`common_name` `{written}` is {} characters; a certificate's common name \
                 holds at most 64 (RFC 5280): leave `common_name` out, the names stay in \
                 the subjectAltName",
                normalized.len()
            ),
        ));
    } else {
        cert.common_name = Some(normalized);
    }
}

/// `files.pkcs12` needs `pkcs12_password_file` (an unencrypted archive of a private key is
/// what `key` is for).
fn check_pkcs12(cert: &CertConfig, p: &mut Vec<Problem>) {
    if cert.files.pkcs12.is_some() && cert.pkcs12_password_file.is_none() {
        p.push(Problem::new(
            cert.key_location("files.pkcs12").clone(),
            "`files.pkcs12` needs `pkcs12_password_file`: the file holding its password \
             (or a systemd credential of that name)",
        ));
    }
}

/// Every name has a challenge entry that can validate it, and every per-name entry is used.
/// Skipped while `name`, `domains` or `challenge` is missing or wrong (already reported).
fn check_challenges_cover_domains(cert: &CertConfig, p: &mut Vec<Problem>) {
    let rules = &cert.challenge.rules;
    if cert.name.is_empty() || cert.domains.is_empty() || rules.is_empty() {
        return;
    }
    let mut used = vec![false; rules.len()];
    for (i, domain) in cert.domains.iter().enumerate() {
        let Some(loc) = cert.key_locations.get(&format!("domains.{i}")) else {
            continue;
        };
        let Some(rule) = cert.challenge.for_name(domain) else {
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
        check_challenge_fits(domain, &rule.config, loc, p);
    }
    for (rule, used) in rules.iter().zip(used) {
        if let (Some(pattern), false) = (&rule.pattern, used) {
            if let Some(loc) = cert.key_locations.get(&rule.key) {
                p.push(Problem::new(
                    loc.clone(),
                    format!("the `challenge` entry `{pattern}` covers none of `domains`"),
                ));
            }
        }
    }
}

/// A wildcard needs dns-01; an IP address cannot use it.
fn check_challenge_fits(
    domain: &str,
    challenge: &ChallengeConfig,
    loc: &Location,
    p: &mut Vec<Problem>,
) {
    if domain.starts_with("*.") && !challenge.is_dns() {
        p.push(Problem::new(
            loc.clone(),
            format!(
                "wildcard `{domain}` needs a dns-01 challenge, not {}",
                challenge.kind()
            ),
        ));
    }
    if let ChallengeConfig::DnsPersist01(persist) = challenge {
        if domain.starts_with("*.") && !persist.wildcard {
            p.push(Problem::new(
                loc.clone(),
                format!(
                    "wildcard `{domain}` with dns-persist-01 needs `policy = \"wildcard\"` in \
                     the challenge: the CA accepts a wildcard only from a record that says \
                     `policy=wildcard`"
                ),
            ));
        }
    }
    if domain.parse::<IpAddr>().is_ok() && challenge.is_dns() {
        p.push(Problem::new(
            loc.clone(),
            format!(
                "IP address `{domain}` cannot be validated with {}; \
                 use http-01 or tls-alpn-01",
                challenge.kind()
            ),
        ));
    }
}

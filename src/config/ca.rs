//! One `[ca.NAME]` table: an ACME server, how to reach it and the account to use there.

use std::collections::BTreeMap;
use std::time::Duration;

use super::problem::{Location, Problem};
use super::schema::{
    as_bool, as_duration, as_file_path, as_nonempty_str, as_str, as_str_list, check_keys, find,
    key_names, or_report, parse_keys, Draft, KeySpec,
};
use super::source::{Entry, Val};
use super::types::CaConfig;
use super::value::{check_ident, check_proxy_url, check_url};

/// Deadline of one HTTP exchange with a CA (`[ca.NAME] timeout`).
pub(super) const DEFAULT_CA_TIMEOUT: Duration = Duration::from_secs(30);

pub(super) const MIN_CA_TIMEOUT: Duration = Duration::from_secs(1);

pub(super) const MAX_CA_TIMEOUT: Duration = Duration::from_secs(300);

/// Every key of a `[ca.NAME]` table, in the order suggestions prefer on a tie.
pub(super) static CA_KEYS: &[KeySpec<CaConfig>] = &[
    KeySpec::own("directory", |ca, e, _, p| {
        if let Some(url) = as_str(&e.key, &e.node, p) {
            let checked = check_url(url, false).map_err(|why| format!("`directory` {why}"));
            if or_report(&e.node, checked, p).is_some() {
                ca.directory = url.to_string();
            }
        }
    }),
    KeySpec::own("contact", parse_contact),
    KeySpec::own("accept_terms", |ca, e, _, p| {
        match as_bool(&e.key, &e.node, p) {
            Some(true) => ca.accept_terms = true,
            Some(false) => p.push(Problem::new(
                e.node.loc.clone(),
                "`accept_terms` must be true: renewd cannot register an account with \
                 this CA unless you accept the CA's terms of service",
            )),
            None => {}
        }
    }),
    KeySpec::own("trust_roots", |ca, e, _, p| {
        ca.trust_roots = as_file_path(&e.key, &e.node, p)
    }),
    KeySpec::own("eab_kid", |ca, e, _, p| {
        ca.eab_kid = as_nonempty_str(&e.key, &e.node, p)
    }),
    KeySpec::own("eab_hmac_key_file", |ca, e, _, p| {
        ca.eab_hmac_key_file = as_file_path(&e.key, &e.node, p)
    }),
    KeySpec::own("profile", |ca, e, _, p| {
        ca.profile = as_nonempty_str(&e.key, &e.node, p)
    }),
    KeySpec::own("timeout", |ca, e, _, p| {
        if let Some(d) = as_duration(&e.key, &e.node, MIN_CA_TIMEOUT, MAX_CA_TIMEOUT, p) {
            ca.timeout = d;
        }
    }),
    KeySpec::own("ari", |ca, e, _, p| {
        if let Some(b) = as_bool(&e.key, &e.node, p) {
            ca.ari = b;
        }
    }),
    KeySpec::own("proxy", parse_proxy),
    KeySpec::own("issuer_domain_name", parse_issuer_domain_name),
];

impl Draft for CaConfig {
    fn written_at(&mut self, key: &str, at: &Location) {
        self.key_locations.insert(key.to_string(), at.clone());
    }
}

impl CaConfig {
    /// A CA called `name` before its keys are read: the default of every key that has one.
    fn unset(name: &str, location: Location) -> Self {
        CaConfig {
            name: name.to_string(),
            directory: String::new(),
            contact: Vec::new(),
            accept_terms: false,
            trust_roots: None,
            eab_kid: None,
            eab_hmac_key_file: None,
            profile: None,
            timeout: DEFAULT_CA_TIMEOUT,
            ari: true,
            proxy: None,
            issuer_domain_name: None,
            location,
            key_locations: BTreeMap::new(),
        }
    }
}

fn parse_contact(ca: &mut CaConfig, e: &Entry, _: &(), p: &mut Vec<Problem>) {
    for (contact, loc) in as_str_list(&e.key, &e.node, p).unwrap_or_default() {
        match contact.strip_prefix("mailto:") {
            Some(address) if address.contains('@') && !address.contains(char::is_whitespace) => {
                ca.contact.push(contact.to_string())
            }
            _ => p.push(Problem::new(
                loc.clone(),
                format!(
                    "each `contact` must be a mailto: URL like \
                     \"mailto:ops@example.org\", found `{contact}`"
                ),
            )),
        }
    }
}

fn parse_proxy(ca: &mut CaConfig, e: &Entry, _: &(), p: &mut Vec<Problem>) {
    let Some(url) = as_str(&e.key, &e.node, p) else {
        return;
    };
    if url.is_empty() {
        ca.proxy = Some(String::new());
        return;
    }
    let checked =
        check_proxy_url(url).map_err(|why| format!("`proxy` {why} (or \"\" to connect directly)"));
    if or_report(&e.node, checked, p).is_some() {
        ca.proxy = Some(url.to_string());
    }
}

/// `issuer_domain_name`: a DNS name as draft-ietf-acme-dns-persist §3.1 writes issuer
/// domain names (lowercase A-labels, no trailing dot, at most 253 octets).
fn parse_issuer_domain_name(ca: &mut CaConfig, e: &Entry, _: &(), p: &mut Vec<Problem>) {
    let Some(name) = as_str(&e.key, &e.node, p) else {
        return;
    };
    let checked = super::value::normalize_identifier(name)
        .ok()
        .filter(|n| {
            !n.starts_with("*.") && n.parse::<std::net::IpAddr>().is_err() && n.len() <= 253
        })
        .ok_or_else(|| {
            format!(
                "`issuer_domain_name` must be a DNS name like \"letsencrypt.org\" (the \
                 CA's issuer domain name for dns-persist-01), found `{name}`"
            )
        });
    if let Some(name) = or_report(&e.node, checked, p) {
        ca.issuer_domain_name = Some(name);
    }
}

/// One `[ca.NAME]`; `None` when anything about it is wrong (and `p` says what).
pub(super) fn build_ca(entry: &Entry, p: &mut Vec<Problem>) -> Option<CaConfig> {
    let start = p.len();
    let name = entry.key.as_str();
    let header = entry.node.loc.clone();
    if let Err(why) = check_ident(name) {
        p.push(Problem::new(
            entry.key_loc.clone(),
            format!("CA name `{name}` {why}"),
        ));
    }
    let Val::Table(entries) = &entry.node.val else {
        return None;
    };
    check_keys(entries, &key_names(CA_KEYS), &format!("in [ca.{name}]"), p);
    let mut ca = CaConfig::unset(name, header.clone());
    parse_keys(CA_KEYS, entries, &mut ca, &(), p);
    if find(entries, "directory").is_none() {
        p.push(Problem::new(
            header.clone(),
            format!("[ca.{name}] has no `directory` (the CA's ACME directory URL)"),
        ));
    }
    if find(entries, "accept_terms").is_none() {
        p.push(Problem::new(
            header,
            format!(
                "[ca.{name}] needs `accept_terms = true`: renewd cannot register an account \
                 unless you accept the CA's terms of service"
            ),
        ));
    }
    for (have, need) in [
        ("eab_kid", "eab_hmac_key_file"),
        ("eab_hmac_key_file", "eab_kid"),
    ] {
        if let (Some(e), None) = (find(entries, have), find(entries, need)) {
            p.push(Problem::new(
                e.key_loc.clone(),
                format!("`{have}` needs `{need}` too (external account binding)"),
            ));
        }
    }
    (p.len() == start).then_some(ca)
}

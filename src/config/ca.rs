//! One `[ca.NAME]` table: an ACME server, how to reach it and the account to use there.

use std::collections::BTreeMap;
use std::time::Duration;

use super::problem::Problem;
use super::schema::{
    as_bool, as_duration, as_file_path, as_nonempty_str, as_str, as_str_list, check_keys, find,
};
use super::source::{Entry, Val};
use super::types::CaConfig;
use super::value::{check_ident, check_proxy_url, check_url};

/// Deadline of one HTTP exchange with a CA (`[ca.NAME] timeout`).
pub const DEFAULT_CA_TIMEOUT: Duration = Duration::from_secs(30);

pub(super) const MIN_CA_TIMEOUT: Duration = Duration::from_secs(1);

pub(super) const MAX_CA_TIMEOUT: Duration = Duration::from_secs(300);

pub(super) const CA_KEYS: &[&str] = &[
    "directory",
    "contact",
    "accept_terms",
    "trust_roots",
    "eab_kid",
    "eab_hmac_key_file",
    "profile",
    "timeout",
    "ari",
    "proxy",
];

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
    check_keys(entries, CA_KEYS, &format!("in [ca.{name}]"), p);
    let mut ca = CaConfig {
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
        location: header.clone(),
        key_locations: BTreeMap::new(),
    };
    for e in entries {
        let (key, node) = (e.key.as_str(), &e.node);
        match key {
            "directory" => {
                if let Some(url) = as_str(key, node, p) {
                    match check_url(url, false) {
                        Ok(()) => ca.directory = url.to_string(),
                        Err(why) => {
                            p.push(Problem::new(node.loc.clone(), format!("`directory` {why}")))
                        }
                    }
                }
            }
            "contact" => {
                for (contact, loc) in as_str_list(key, node, p).unwrap_or_default() {
                    match contact.strip_prefix("mailto:") {
                        Some(address)
                            if address.contains('@') && !address.contains(char::is_whitespace) =>
                        {
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
            "accept_terms" => match as_bool(key, node, p) {
                Some(true) => ca.accept_terms = true,
                Some(false) => p.push(Problem::new(
                    node.loc.clone(),
                    "`accept_terms` must be true: renewd cannot register an account with \
                     this CA unless you accept the CA's terms of service",
                )),
                None => {}
            },
            "trust_roots" => ca.trust_roots = as_file_path(key, node, p),
            "eab_kid" => ca.eab_kid = as_nonempty_str(key, node, p),
            "eab_hmac_key_file" => ca.eab_hmac_key_file = as_file_path(key, node, p),
            "profile" => ca.profile = as_nonempty_str(key, node, p),
            "timeout" => {
                if let Some(d) = as_duration(key, node, MIN_CA_TIMEOUT, MAX_CA_TIMEOUT, p) {
                    ca.timeout = d;
                }
            }
            "ari" => {
                if let Some(b) = as_bool(key, node, p) {
                    ca.ari = b;
                }
            }
            "proxy" => {
                if let Some(url) = as_str(key, node, p) {
                    match url {
                        "" => ca.proxy = Some(String::new()),
                        _ => match check_proxy_url(url) {
                            Ok(_) => ca.proxy = Some(url.to_string()),
                            Err(why) => p.push(Problem::new(
                                node.loc.clone(),
                                format!("`proxy` {why} (or \"\" to connect directly)"),
                            )),
                        },
                    }
                }
            }
            _ => continue,
        }
        ca.key_locations.insert(key.to_string(), node.loc.clone());
    }
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

//! The governance and optional sections: `[[exception]]`, `[discovery]`, `[metrics]` and
//! `[alert]`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::problem::{Location, Problem};
use super::schema::*;
use super::source::{Entry, Node, Section, Val};
use super::types::{AlertConfig, DiscoveryConfig, ExceptionConfig, MetricsConfig, RenewBefore};
use super::value::{check_url, margin_value};

pub(super) const METRICS_KEYS: &[&str] = &["listen"];

pub(super) const DISCOVERY_KEYS: &[&str] = &["paths", "alert_before"];

/// Every key of `[discovery]`: [`DISCOVERY_KEYS`] and those `discovery.rs` reads.
fn discovery_keys() -> Vec<&'static str> {
    [DISCOVERY_KEYS, super::discovery::DISCOVERY_SOURCE_KEYS].concat()
}

/// A key of an `[[exception]]`.
type ExceptionKey = KeySpec<ExceptionConfig>;

/// Every key of an `[[exception]]`, in the order suggestions prefer on a tie.
static EXCEPTION_KEYS: &[ExceptionKey] = &[
    ExceptionKey::own("path", |x, e, _, p| {
        if let Some(path) = as_file_path(&e.key, &e.node, p) {
            x.path = path;
        }
    })
    .required(),
    ExceptionKey::own("owner", |x, e, _, p| {
        x.owner = as_nonempty_str(&e.key, &e.node, p).unwrap_or_default()
    })
    .required(),
    ExceptionKey::own("reason", |x, e, _, p| {
        x.reason = as_nonempty_str(&e.key, &e.node, p).unwrap_or_default()
    })
    .required(),
    ExceptionKey::own("review_by", parse_review_by).required(),
    ExceptionKey::own("alert_before", |x, e, _, p| {
        x.alert_before = or_report(&e.node, margin_value(&e.key, &e.node), p)
    }),
];

impl Draft for ExceptionConfig {}

/// `review_by`: see [`as_date`].
fn parse_review_by(x: &mut ExceptionConfig, e: &Entry, _: &(), p: &mut Vec<Problem>) {
    if let Some(date) = as_date(&e.key, &e.node, p) {
        x.review_by = date;
    }
}

/// One `[[exception]]`; `None` when anything about it is wrong (and `p` says what).
pub(super) fn build_exception(
    node: &Node,
    defaults: &[Entry],
    p: &mut Vec<Problem>,
) -> Option<ExceptionConfig> {
    let Val::Table(entries) = &node.val else {
        return None;
    };
    let start = p.len();
    check_keys(entries, &key_names(EXCEPTION_KEYS), "in [[exception]]", p);
    let mut exception = ExceptionConfig {
        path: PathBuf::new(),
        owner: String::new(),
        reason: String::new(),
        review_by: String::new(),
        alert_before: None,
        location: node.loc.clone(),
    };
    parse_keys(EXCEPTION_KEYS, entries, &mut exception, &(), p);
    if find(entries, "alert_before").is_none() {
        exception.alert_before = inherited_alert_before(defaults);
    }
    let needs = |key: &str| format!("[[exception]] needs `{key}`");
    report_missing(EXCEPTION_KEYS, entries, &node.loc, needs, p);
    (p.len() == start).then_some(exception)
}

/// `alert_before` of a `[discovery]` table, else of `[defaults]`.
fn alert_before_of(
    entries: &[Entry],
    defaults: &[Entry],
    p: &mut Vec<Problem>,
) -> Option<RenewBefore> {
    match find(entries, "alert_before") {
        Some(e) => or_report(&e.node, margin_value(&e.key, &e.node), p),
        None => inherited_alert_before(defaults),
    }
}

/// `alert_before` of `[defaults]`, whose mistakes are reported by its own check.
fn inherited_alert_before(defaults: &[Entry]) -> Option<RenewBefore> {
    find(defaults, "alert_before").and_then(|e| margin_value("alert_before", &e.node).ok())
}

pub(super) fn build_metrics(
    section: &Section,
    locs: &mut BTreeMap<String, Location>,
    p: &mut Vec<Problem>,
) -> Option<MetricsConfig> {
    check_keys(&section.entries, METRICS_KEYS, "in [metrics]", p);
    let Some(e) = find(&section.entries, "listen") else {
        p.push(Problem::new(
            section.loc.clone(),
            "[metrics] needs `listen`, like \"127.0.0.1:9443\"",
        ));
        return None;
    };
    locs.insert("metrics.listen".into(), e.node.loc.clone());
    let listen = as_socket_addr("listen", &e.node, None, p)?;
    Some(MetricsConfig { listen })
}

/// Every key of `[alert]`.
static ALERT_KEYS: &[KeySpec<AlertConfig>] = &[
    KeySpec::own("command", |alert, e, _, p| {
        alert.command = as_argv(&e.key, &e.node, p)
    }),
    KeySpec::own("webhook", |alert, e, _, p| {
        if let Some(url) = as_str(&e.key, &e.node, p) {
            let checked = check_url(url, true).map_err(|why| format!("`webhook` {why}"));
            if or_report(&e.node, checked, p).is_some() {
                alert.webhook = Some(url.to_string());
            }
        }
    }),
];

impl Draft for AlertConfig {}

/// `[alert]`: a command, a webhook, or both.
pub(super) fn build_alert(
    section: &Section,
    locs: &mut BTreeMap<String, Location>,
    p: &mut Vec<Problem>,
) -> Option<AlertConfig> {
    let start = p.len();
    check_keys(&section.entries, &key_names(ALERT_KEYS), "in [alert]", p);
    let mut alert = AlertConfig {
        command: None,
        webhook: None,
    };
    parse_keys(ALERT_KEYS, &section.entries, &mut alert, &(), p);
    record_locations(ALERT_KEYS, &section.entries, "alert", locs);
    if ALERT_KEYS
        .iter()
        .all(|k| find(&section.entries, k.name).is_none())
    {
        p.push(Problem::new(
            section.loc.clone(),
            "[alert] needs `command`, `webhook` or both",
        ));
    }
    (p.len() == start).then_some(alert)
}

pub(super) fn build_discovery(
    section: &Section,
    defaults: &[Entry],
    locs: &mut BTreeMap<String, Location>,
    p: &mut Vec<Problem>,
) -> Option<DiscoveryConfig> {
    let start = p.len();
    check_keys(&section.entries, &discovery_keys(), "in [discovery]", p);
    let sources = super::discovery::build_sources(&section.entries, p);
    let alert_before = alert_before_of(&section.entries, defaults, p);
    let Some(e) = find(&section.entries, "paths") else {
        p.push(Problem::new(
            section.loc.clone(),
            "[discovery] needs `paths`, the directories to scan",
        ));
        return None;
    };
    locs.insert("discovery.paths".into(), e.node.loc.clone());
    let paths: Vec<PathBuf> = as_abs_path_list("paths", &e.node, p)
        .into_iter()
        .map(|(path, _)| path)
        .collect();
    (p.len() == start).then_some(DiscoveryConfig {
        paths,
        alert_before,
        listeners: sources.listeners,
        pkcs12_password_files: sources.pkcs12_password_files,
        owners: sources.owners,
    })
}

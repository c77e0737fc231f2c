//! The governance and optional sections: `[[exception]]`, `[discovery]`, `[metrics]` and
//! `[alert]`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::problem::{Location, Problem};
use super::schema::*;
use super::source::{Entry, Node, Section, Val};
use super::types::{AlertConfig, DiscoveryConfig, ExceptionConfig, MetricsConfig, RenewBefore};
use super::value::{check_date, check_url, margin_value};

pub(super) const METRICS_KEYS: &[&str] = &["listen"];

pub(super) const ALERT_KEYS: &[&str] = &["command", "webhook"];

/// The keys every `[[exception]]` needs; [`EXCEPTION_ALL_KEYS`] adds the optional ones.
pub(super) const EXCEPTION_KEYS: &[&str] = &["path", "owner", "reason", "review_by"];

pub(super) const EXCEPTION_ALL_KEYS: &[&str] =
    &["path", "owner", "reason", "review_by", "alert_before"];

pub(super) const DISCOVERY_KEYS: &[&str] = &["paths", "alert_before"];

pub(super) fn build_exception(
    node: &Node,
    defaults: &[Entry],
    p: &mut Vec<Problem>,
) -> Option<ExceptionConfig> {
    let Val::Table(entries) = &node.val else {
        return None;
    };
    let start = p.len();
    check_keys(entries, EXCEPTION_ALL_KEYS, "in [[exception]]", p);
    let alert_before = alert_before_of(entries, defaults, p);
    let mut path = None;
    let mut owner = None;
    let mut reason = None;
    let mut review_by = None;
    for e in entries {
        let (key, n) = (e.key.as_str(), &e.node);
        match key {
            "path" => path = as_file_path(key, n, p),
            "owner" => owner = as_nonempty_str(key, n, p),
            "reason" => reason = as_nonempty_str(key, n, p),
            "review_by" => {
                let date = match &n.val {
                    Val::Str(s) => Some(s.clone()),
                    Val::Datetime(d) if d.time.is_none() && d.offset.is_none() => d
                        .date
                        .map(|d| format!("{:04}-{:02}-{:02}", d.year, d.month, d.day)),
                    _ => None,
                };
                match date {
                    Some(date) => match check_date(&date) {
                        Ok(()) => review_by = Some(date),
                        Err(why) => p.push(Problem::new(n.loc.clone(), why)),
                    },
                    None => wrong_type(key, n, "a date like \"2027-03-01\"", p),
                }
            }
            _ => {}
        }
    }
    for key in EXCEPTION_KEYS {
        if find(entries, key).is_none() {
            p.push(Problem::new(
                node.loc.clone(),
                format!("[[exception]] needs `{key}`"),
            ));
        }
    }
    if p.len() > start {
        return None;
    }
    Some(ExceptionConfig {
        path: path?,
        owner: owner?,
        reason: reason?,
        review_by: review_by?,
        alert_before,
        location: node.loc.clone(),
    })
}

/// `alert_before` of an `[[exception]]` or `[discovery]` table, else of `[defaults]` (whose
/// mistakes are reported by its own check).
pub(super) fn alert_before_of(
    entries: &[Entry],
    defaults: &[Entry],
    p: &mut Vec<Problem>,
) -> Option<RenewBefore> {
    if let Some(e) = find(entries, "alert_before") {
        return match margin_value("alert_before", &e.node) {
            Ok(r) => Some(r),
            Err(why) => {
                p.push(Problem::new(e.node.loc.clone(), why));
                None
            }
        };
    }
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

pub(super) fn build_alert(
    section: &Section,
    locs: &mut BTreeMap<String, Location>,
    p: &mut Vec<Problem>,
) -> Option<AlertConfig> {
    let start = p.len();
    check_keys(&section.entries, ALERT_KEYS, "in [alert]", p);
    let mut alert = AlertConfig {
        command: None,
        webhook: None,
    };
    for e in &section.entries {
        match e.key.as_str() {
            "command" => alert.command = as_argv("command", &e.node, p),
            "webhook" => {
                if let Some(url) = as_str("webhook", &e.node, p) {
                    match check_url(url, true) {
                        Ok(()) => alert.webhook = Some(url.to_string()),
                        Err(why) => {
                            p.push(Problem::new(e.node.loc.clone(), format!("`webhook` {why}")))
                        }
                    }
                }
            }
            _ => continue,
        }
        locs.insert(format!("alert.{}", e.key), e.node.loc.clone());
    }
    if find(&section.entries, "command").is_none() && find(&section.entries, "webhook").is_none() {
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
    check_keys(&section.entries, DISCOVERY_KEYS, "in [discovery]", p);
    let alert_before = alert_before_of(&section.entries, defaults, p);
    let Some(e) = find(&section.entries, "paths") else {
        p.push(Problem::new(
            section.loc.clone(),
            "[discovery] needs `paths`, the directories to scan",
        ));
        return None;
    };
    locs.insert("discovery.paths".into(), e.node.loc.clone());
    let mut paths: Vec<PathBuf> = Vec::new();
    for (s, loc) in as_str_list("paths", &e.node, p).unwrap_or_default() {
        let path = PathBuf::from(s);
        if !path.is_absolute() {
            p.push(Problem::new(
                loc.clone(),
                format!("each of `paths` must be an absolute path, found `{s}`"),
            ));
        } else if paths.contains(&path) {
            p.push(Problem::new(
                loc.clone(),
                format!("`{s}` is listed twice in `paths`"),
            ));
        } else {
            paths.push(path);
        }
    }
    (p.len() == start).then_some(DiscoveryConfig {
        paths,
        alert_before,
    })
}

//! From the merged tree to the typed [`Config`]: the top-level keys, then each CA,
//! certificate, exception and optional section, with the checks that span several of them
//! (certificate names and target files used twice).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use super::ca::build_ca;
use super::certificate::{build_certificate, check_defaults};
use super::problem::{Location, Problem};
use super::schema::{as_abs_path, as_file_path, as_int, as_str, check_keys};
use super::sections::{build_alert, build_discovery, build_exception, build_metrics};
use super::source::{Entry, Raw};
use super::types::Config;

pub(super) const TOP_KEYS: &[&str] = &[
    "state_dir",
    "control_socket",
    "max_concurrent_renewals",
    "log_level",
    "metrics",
    "alert",
    "ca",
    "defaults",
    "certificate",
    "exception",
    "discovery",
];

pub(super) const TOP_SCALAR_KEYS: &[&str] = &[
    "state_dir",
    "control_socket",
    "max_concurrent_renewals",
    "log_level",
];

/// What `log_level` may say; `RUST_LOG`, when set, takes precedence with its full syntax.
pub const LOG_LEVELS: &[&str] = &["error", "warn", "info", "debug", "trace"];

impl Raw {
    pub(super) fn build(self, p: &mut Vec<Problem>) -> Config {
        let mut config = Config::default();
        check_keys(&self.top, TOP_KEYS, "at the top level", p);
        for entry in &self.top {
            let (key, node) = (entry.key.as_str(), &entry.node);
            match key {
                "state_dir" => {
                    if let Some(path) = as_abs_path(key, node, p) {
                        config.state_dir = path;
                    }
                }
                "control_socket" => {
                    if let Some(path) = as_file_path(key, node, p) {
                        config.control_socket = path;
                    }
                }
                "max_concurrent_renewals" => {
                    if let Some(n) = as_int(key, node, p) {
                        match usize::try_from(n) {
                            Ok(n) if (1..=1024).contains(&n) => config.max_concurrent_renewals = n,
                            _ => p.push(Problem::new(
                                node.loc.clone(),
                                format!("`{key}` must be between 1 and 1024, found {n}"),
                            )),
                        }
                    }
                }
                "log_level" => {
                    if let Some(level) = as_str(key, node, p) {
                        if LOG_LEVELS.contains(&level) {
                            config.log_level = Some(level.to_string());
                        } else {
                            p.push(Problem::new(
                                node.loc.clone(),
                                format!(
                                    "`log_level` must be one of {}, found {level:?} (RUST_LOG takes full filter directives)",
                                    LOG_LEVELS.join(", ")
                                ),
                            ));
                        }
                    }
                }
                _ => continue,
            }
            config
                .key_locations
                .insert(key.to_string(), node.loc.clone());
        }

        for entry in &self.cas {
            if let Some(ca) = build_ca(entry, p) {
                config.cas.insert(ca.name.clone(), ca);
            }
        }
        // Names count as defined even when their table has errors, so that a typo in a
        // CA does not also produce an error at every certificate that uses it.
        let ca_names: BTreeSet<String> = self.cas.iter().map(|e| e.key.clone()).collect();

        let defaults: &[Entry] = self
            .sections
            .get("defaults")
            .map_or(&[], |s| s.entries.as_slice());
        check_defaults(defaults, &ca_names, p);
        let mut names: BTreeMap<String, Location> = BTreeMap::new();
        let mut targets: BTreeMap<PathBuf, (String, Location)> = BTreeMap::new();
        for node in &self.certificates {
            let Some(cert) = build_certificate(node, defaults, &ca_names, p) else {
                continue;
            };
            let name_loc = cert.key_location("name").clone();
            if let Some(first) = names.get(&cert.name) {
                p.push(Problem::new(
                    name_loc,
                    format!(
                        "certificate name `{}` is used again here; first used at {first}",
                        cert.name
                    ),
                ));
                continue;
            }
            names.insert(cert.name.clone(), name_loc);
            let mut clash = false;
            for (kind, path) in cert.files.iter() {
                let here = cert.key_location(&format!("files.{kind}")).clone();
                if let Some((other, first)) = targets.get(path) {
                    p.push(Problem::new(
                        here,
                        format!(
                            "`{}` is also written by certificate `{other}` (set at {first})",
                            path.display()
                        ),
                    ));
                    clash = true;
                } else {
                    targets.insert(path.to_path_buf(), (cert.name.clone(), here));
                }
            }
            if !clash {
                config.certificates.push(cert);
            }
        }

        let mut exception_paths: BTreeMap<PathBuf, Location> = BTreeMap::new();
        for node in &self.exceptions {
            if let Some(exception) = build_exception(node, defaults, p) {
                if let Some(first) = exception_paths.get(&exception.path) {
                    p.push(Problem::new(
                        exception.location.clone(),
                        format!(
                            "an [[exception]] for `{}` is declared again here; first declared at {first}",
                            exception.path.display()
                        ),
                    ));
                    continue;
                }
                exception_paths.insert(exception.path.clone(), exception.location.clone());
                config.exceptions.push(exception);
            }
        }

        if let Some(section) = self.sections.get("metrics") {
            config
                .key_locations
                .insert("metrics".into(), section.loc.clone());
            config.metrics = build_metrics(section, &mut config.key_locations, p);
        }
        if let Some(section) = self.sections.get("alert") {
            config
                .key_locations
                .insert("alert".into(), section.loc.clone());
            config.alert = build_alert(section, &mut config.key_locations, p);
        }
        if let Some(section) = self.sections.get("discovery") {
            config
                .key_locations
                .insert("discovery".into(), section.loc.clone());
            config.discovery = build_discovery(section, defaults, &mut config.key_locations, p);
        }
        config
    }
}

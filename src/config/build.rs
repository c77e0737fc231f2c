//! From the merged tree to the typed [`Config`]: the top-level keys, then each CA,
//! certificate, exception and optional section, with the checks that span several of them
//! (certificate names and target files used twice).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use super::ca::build_ca;
use super::certificate::{build_certificate, check_defaults};
use super::problem::{Location, Problem};
use super::schema::{
    as_abs_path, as_file_path, as_int, as_str, check_keys, key_names, parse_keys, Draft, KeySpec,
};
use super::sections::{build_alert, build_discovery, build_exception, build_metrics};
use super::source::{Entry, Raw};
use super::trust::{build_anchor_exceptions, build_trust, is_anchor_exception};
use super::types::{CertConfig, Config};

/// The top-level keys that hold a value rather than a table, in the order suggestions
/// prefer on a tie.
pub(super) static TOP_KEYS: &[KeySpec<Config>] = &[
    KeySpec::own("state_dir", |config, e, _, p| {
        if let Some(path) = as_abs_path(&e.key, &e.node, p) {
            config.state_dir = path;
        }
    }),
    KeySpec::own("control_socket", |config, e, _, p| {
        if let Some(path) = as_file_path(&e.key, &e.node, p) {
            config.control_socket = path;
        }
    }),
    KeySpec::own("max_concurrent_renewals", |config, e, _, p| {
        let Some(n) = as_int(&e.key, &e.node, p) else {
            return;
        };
        match usize::try_from(n) {
            Ok(n) if (1..=1024).contains(&n) => config.max_concurrent_renewals = n,
            _ => p.push(Problem::new(
                e.node.loc.clone(),
                format!("`{}` must be between 1 and 1024, found {n}", e.key),
            )),
        }
    }),
    KeySpec::own("log_level", |config, e, _, p| {
        let Some(level) = as_str(&e.key, &e.node, p) else {
            return;
        };
        if LOG_LEVELS.contains(&level) {
            config.log_level = Some(level.to_string());
        } else {
            p.push(Problem::new(
                e.node.loc.clone(),
                format!(
                    "`log_level` must be one of {}, found {level:?} (RUST_LOG takes full \
                         filter directives)",
                    LOG_LEVELS.join(", ")
                ),
            ));
        }
    }),
];

/// The top-level keys that hold tables, after [`TOP_KEYS`] in suggestions.
const TOP_TABLES: &[&str] = &[
    "metrics",
    "alert",
    "ca",
    "defaults",
    "certificate",
    "exception",
    "discovery",
    "trust",
];

/// What `log_level` may say; `RUST_LOG`, when set, takes precedence with its full syntax.
pub(super) const LOG_LEVELS: &[&str] = &["error", "warn", "info", "debug", "trace"];

impl Draft for Config {
    fn written_at(&mut self, key: &str, at: &Location) {
        self.key_locations.insert(key.to_string(), at.clone());
    }
}

impl Raw {
    /// The typed configuration, with every problem found on the way in `p`.
    pub(super) fn build(self, p: &mut Vec<Problem>) -> Config {
        let mut config = Config::default();
        let mut known = key_names(TOP_KEYS);
        known.extend_from_slice(TOP_TABLES);
        check_keys(&self.top, &known, "at the top level", p);
        parse_keys(TOP_KEYS, &self.top, &mut config, &(), p);
        for entry in &self.cas {
            if let Some(ca) = build_ca(entry, p) {
                config.cas.insert(ca.name.clone(), ca);
            }
        }
        let defaults: &[Entry] = self
            .sections
            .get("defaults")
            .map_or(&[], |s| s.entries.as_slice());
        self.build_certificates(defaults, &mut config, p);
        self.build_exceptions(defaults, &mut config, p);
        self.build_sections(defaults, &mut config, p);
        config
    }

    /// Every `[[certificate]]` but those whose name or target files another one has already.
    fn build_certificates(&self, defaults: &[Entry], config: &mut Config, p: &mut Vec<Problem>) {
        // Names count as defined even when their table has errors, so that a typo in a
        // CA does not also produce an error at every certificate that uses it.
        let ca_names: BTreeSet<String> = self.cas.iter().map(|e| e.key.clone()).collect();
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
            if claim_targets(&cert, &mut targets, p) {
                config.certificates.push(std::sync::Arc::new(cert));
            }
        }
        // Kept for the process's life: no spare capacity (16,384 slots for 10,000).
        config.certificates.shrink_to_fit();
    }

    /// Every `[[exception]]` but those for a path another one has already.
    fn build_exceptions(&self, defaults: &[Entry], config: &mut Config, p: &mut Vec<Problem>) {
        let mut exception_paths: BTreeMap<PathBuf, Location> = BTreeMap::new();
        let anchors = self.exceptions.iter().filter(|n| is_anchor_exception(n));
        config.anchor_exceptions = build_anchor_exceptions(anchors, p);
        for node in &self.exceptions {
            if is_anchor_exception(node) {
                continue;
            }
            let Some(exception) = build_exception(node, defaults, p) else {
                continue;
            };
            if let Some(first) = exception_paths.get(&exception.path) {
                p.push(Problem::new(
                    exception.location.clone(),
                    format!(
                        "an [[exception]] for `{}` is declared again here; first declared at \
                         {first}",
                        exception.path.display()
                    ),
                ));
                continue;
            }
            exception_paths.insert(exception.path.clone(), exception.location.clone());
            config.exceptions.push(exception);
        }
    }

    /// `[metrics]`, `[alert]` and `[discovery]`, each where it is written.
    fn build_sections(&self, defaults: &[Entry], config: &mut Config, p: &mut Vec<Problem>) {
        let locs = &mut config.key_locations;
        if let Some(section) = self.sections.get("metrics") {
            locs.insert("metrics".into(), section.loc.clone());
            config.metrics = build_metrics(section, locs, p);
        }
        if let Some(section) = self.sections.get("alert") {
            locs.insert("alert".into(), section.loc.clone());
            config.alert = build_alert(section, locs, p);
        }
        if let Some(section) = self.sections.get("discovery") {
            locs.insert("discovery".into(), section.loc.clone());
            config.discovery = build_discovery(section, defaults, locs, p);
        }
        if let Some(section) = self.sections.get("trust") {
            locs.insert("trust".into(), section.loc.clone());
            config.trust = build_trust(section, locs, p);
        }
    }
}

/// Records the files `cert` writes in `targets`; false (and each clash reported) when
/// another certificate writes one of them already.
fn claim_targets(
    cert: &CertConfig,
    targets: &mut BTreeMap<PathBuf, (String, Location)>,
    p: &mut Vec<Problem>,
) -> bool {
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
    !clash
}

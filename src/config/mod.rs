//! The configuration: the TOML schema of `renewd.toml` and its `conf.d/*.toml` drop-ins,
//! loading and merging them, and validating every value so that a mistake is reported as
//! `FILE:LINE:COL: message` pointing at what the user wrote, never as a failure later at
//! 3 a.m. when a renewal comes due.
//!
//! Parsing goes through `toml`'s span-preserving [`DeTable`] rather than serde derives:
//! the derive route stops at the first error and loses the positions of inherited
//! `[defaults]` values, while `renewd check` must list every problem with its place.
//! Everything other modules need is in the typed [`Config`]; nothing downstream sees TOML.
//!
//! The code map: `types` is the data model; `source` reads files into a positioned tree
//! and merges `conf.d`; `schema` declares every key once (name, where it may be written,
//! how its value is parsed) and holds the typed readers of values; `build`, `ca`,
//! `certificate`, `challenge` and `sections` turn the merged tree into the data model;
//! `value` is the syntax of single values (durations, names, URLs); `environment` is the
//! look at the machine (`renewd check`); `problem` is what is wrong and how bad it is.

mod build;
mod ca;
mod certificate;
mod challenge;
mod discovery;
mod environment;
mod problem;
mod schema;
mod sections;
mod source;
#[cfg(test)]
mod tests;
mod trust;
mod types;
mod value;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use toml::de::DeTable;

use crate::fsutil::ReadError;

pub use discovery::{InvalidMatch, OwnerMatch, OwnerRule, PathGlob, Pkcs12PasswordFile};
pub use problem::{ConfigError, Diagnosis, Location, Problem, Severity};
pub use types::PersistConfig;
pub use types::{
    AlertConfig, CaConfig, CertConfig, ChallengeConfig, ChallengeRule, Challenges, Config,
    DiscoveryConfig, ExceptionConfig, FileKind, FileSet, KeyType, MetricsConfig, RenewBefore,
    VerifyConfig,
};
pub use types::{AnchorException, TrustConfig, DEFAULT_TRUST_EXPIRING_WITHIN};
pub(crate) use value::check_ident;
pub(crate) use value::normalize_identifier;
pub(crate) use value::{check_proxy_url, InvalidValue};

use problem::finish;
use schema::suggest;
use source::{conf_d_files, convert_table, Raw, SourceMap};

/// Where the configuration lives when neither `--config` nor `$RENEWD_CONFIG` says otherwise.
pub(crate) const DEFAULT_CONFIG: &str = "/etc/renewd/renewd.toml";

/// The environment variable that overrides [`DEFAULT_CONFIG`].
const CONFIG_ENV: &str = "RENEWD_CONFIG";

/// The `--config` value if given, else `$RENEWD_CONFIG` if set and not empty, else
/// [`DEFAULT_CONFIG`].
pub fn resolve_path(cli: Option<&Path>) -> PathBuf {
    resolve_path_with(cli, std::env::var_os(CONFIG_ENV))
}

fn resolve_path_with(cli: Option<&Path>, env: Option<std::ffi::OsString>) -> PathBuf {
    match (cli, env) {
        (Some(path), _) => path.to_path_buf(),
        (None, Some(value)) if !value.is_empty() => PathBuf::from(value),
        _ => PathBuf::from(DEFAULT_CONFIG),
    }
}

/// Reads `main`, then every `<dir of main>/conf.d/*.toml` in name order (a missing
/// `conf.d` is fine; hidden files are skipped), merges, validates and applies `[defaults]`.
pub fn load(main: &Path) -> Result<Config, ConfigError> {
    let text = match read_config_file(main) {
        Ok(text) => text,
        Err(e) => {
            return Err(ConfigError {
                problems: vec![Problem::new(
                    Location::start_of(main),
                    format!("cannot read configuration: {}", e.reason()),
                )],
            })
        }
    };
    let mut files = vec![(main.to_path_buf(), text)];
    let mut problems = Vec::new();
    let conf_d = conf_d_dir(main);
    for path in conf_d_files(&conf_d, &mut problems) {
        match read_config_file(&path) {
            Ok(text) => files.push((path, text)),
            Err(e) => problems.push(Problem::new(
                Location::start_of(&path),
                format!("cannot read configuration: {}", e.reason()),
            )),
        }
    }
    match load_from_sources(&files) {
        Ok(config) if problems.is_empty() => Ok(config),
        Ok(_) => Err(ConfigError { problems }),
        Err(mut e) => {
            e.problems.extend(problems);
            Err(e)
        }
    }
}

/// A configuration file's text: a regular file (a symlink to one is followed) of at most
/// `fsutil::caps::CONFIG` bytes, UTF-8; a FIFO or a device is refused without blocking.
/// The caller's `FILE:LINE:COL` names the file; [`ReadError::reason`] says the rest.
fn read_config_file(path: &Path) -> Result<String, ReadError> {
    crate::fsutil::read_regular_string(
        path,
        crate::fsutil::caps::CONFIG,
        crate::fsutil::Follow::Yes,
    )
}

/// The drop-in directory that belongs to the main file `main`.
fn conf_d_dir(main: &Path) -> PathBuf {
    match main.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.join("conf.d"),
        _ => PathBuf::from("conf.d"),
    }
}

/// Parses configuration from memory: `files` is `[(path for messages, contents)]`, the
/// main file first, then the drop-ins in the order they apply.
pub fn load_from_sources(files: &[(PathBuf, String)]) -> Result<Config, ConfigError> {
    let sources: Vec<PathBuf> = files.iter().map(|(path, _)| path.clone()).collect();
    let mut problems = Vec::new();
    let mut raw = Raw::default();
    let mut syntax_ok = true;
    for (path, text) in files {
        let map = SourceMap::new(path, text);
        let (root, errors) = DeTable::parse_recoverable(text);
        if !errors.is_empty() {
            syntax_ok = false;
            let mut located: Vec<(Location, String)> = errors
                .iter()
                .map(|error| {
                    let location = error
                        .span()
                        .map(|span| map.location(span.start))
                        .unwrap_or_else(|| Location::start_of(path));
                    (location, error.message().trim().replace('\n', "; "))
                })
                .collect();
            located.sort_by_key(|(l, _)| (l.line, l.col));
            // The parser's recovery often reports a second error further along the same
            // line; only the first says what the user got wrong.
            located.dedup_by_key(|(l, _)| l.line);
            for (location, message) in located {
                problems.push(Problem::new(location, format!("invalid TOML: {message}")));
            }
            continue;
        }
        raw.merge(convert_table(root.get_ref(), &map), &mut problems);
    }
    // A file that does not parse would only produce misleading follow-on errors.
    if !syntax_ok {
        return Err(ConfigError {
            problems: finish(problems, &sources),
        });
    }
    let mut config = raw.build(&mut problems);
    config.sources = sources;
    problems.extend(config.unsupported());
    let problems = finish(problems, &config.sources);
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(ConfigError { problems })
    }
}

impl Config {
    /// The certificate called `name`.
    pub fn certificate(&self, name: &str) -> Option<&CertConfig> {
        self.certificates
            .iter()
            .find(|c| c.name == name)
            .map(|c| &**c)
    }

    /// `Err` naming every one of `names` that is no configured certificate, each with the
    /// closest configured name when one is close (`no certificate named `wwww` (did you
    /// mean `www`?)`). The command line turns it into exit 2.
    pub fn check_names(&self, names: &[String]) -> Result<(), UnknownCertificates> {
        let known: Vec<&str> = self.certificates.iter().map(|c| c.name.as_str()).collect();
        let unknown: Vec<(String, Option<String>)> = names
            .iter()
            .filter(|n| self.certificate(n).is_none())
            .map(|n| (n.clone(), suggest(n, &known).map(str::to_string)))
            .collect();
        if unknown.is_empty() {
            return Ok(());
        }
        Err(UnknownCertificates {
            unknown,
            configured: known.into_iter().map(str::to_string).collect(),
        })
    }

    /// Where a top-level `key` was written, else the start of the main file.
    pub fn key_location(&self, key: &str) -> Location {
        match self.key_locations.get(key) {
            Some(location) => location.clone(),
            None => match self.sources.first() {
                Some(main) => Location::start_of(main),
                None => Location::start_of(DEFAULT_CONFIG),
            },
        }
    }

    /// Configuration that parses but that this version of renewd cannot act on yet; [`load`]
    /// fails with these too. Every key of the specification is acted on now, so the list is
    /// empty: it is where a key parsed ahead of its feature belongs.
    pub fn unsupported(&self) -> Vec<Problem> {
        Vec::new()
    }
}

/// Names given on the command line that are no configured certificate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no certificate named {} in the configuration; {}", self.names(), self.listed())]
pub struct UnknownCertificates {
    /// Each unknown name, with the closest configured name when one is close.
    pub(crate) unknown: Vec<(String, Option<String>)>,
    /// Every configured certificate's name.
    pub(crate) configured: Vec<String>,
}

impl UnknownCertificates {
    fn names(&self) -> String {
        let names: Vec<String> = self
            .unknown
            .iter()
            .map(|(name, close)| match close {
                Some(close) => format!("`{name}` (did you mean `{close}`?)"),
                None => format!("`{name}`"),
            })
            .collect();
        names.join(", ")
    }

    fn listed(&self) -> String {
        let known = &self.configured;
        if known.is_empty() {
            "no certificate is configured".to_string()
        } else if known.len() <= 10 {
            format!("configured: {}", known.join(", "))
        } else {
            format!(
                "{} certificates are configured (renewd status --names)",
                known.len()
            )
        }
    }
}

impl Config {
    /// The one rule `check`, `run` and SIGHUP share, applied to `found` (what
    /// [`Config::check_environment`] and the other machine checks reported).
    ///
    /// A problem whose location is one of a certificate's values (its own, or a
    /// `[defaults]` value it inherits) stops that certificate only: it becomes a warning,
    /// and the certificate is *not renewable* with that problem as the reason — unless the
    /// problem was a warning already (advisory, like a missing `owner`), which changes
    /// nothing about renewing. Every other problem keeps its severity: an error means the
    /// configuration as a whole cannot be used (a `state_dir` that cannot be created).
    pub fn diagnose(&self, found: Vec<Problem>) -> Diagnosis {
        let mut owners: std::collections::HashMap<&Location, Vec<&str>> = Default::default();
        for cert in &self.certificates {
            let places: HashSet<&Location> = cert
                .key_locations
                .values()
                .chain([&cert.location])
                .collect();
            for place in places {
                owners.entry(place).or_default().push(&cert.name);
            }
        }
        let mut not_renewable = BTreeMap::new();
        let mut problems = Vec::with_capacity(found.len());
        for mut problem in found {
            if let (Severity::Error, Some(certs)) =
                (problem.severity, owners.get(&problem.location))
            {
                problem.severity = Severity::Warning;
                for name in certs {
                    not_renewable
                        .entry(name.to_string())
                        .or_insert_with(|| format!("{}: {}", problem.location, problem.message));
                }
            }
            problems.push(problem);
        }
        Diagnosis {
            problems: finish(problems, &self.sources),
            not_renewable,
        }
    }
}

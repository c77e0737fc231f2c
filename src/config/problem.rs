//! What is wrong with a configuration and how bad it is: [`Location`], [`Problem`],
//! [`Severity`], and [`Diagnosis`] (what `Config::diagnose`, in `mod.rs`, gives).

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A position in a configuration file, 1-based; the column counts characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Location {
    /// Shared by every location in one file: a configuration with thousands of
    /// certificates keeps tens of thousands of these for its error messages.
    pub file: Arc<Path>,
    pub line: usize,
    pub col: usize,
}

impl Location {
    pub fn new(file: impl AsRef<Path>, line: usize, col: usize) -> Self {
        Location {
            file: Arc::from(file.as_ref()),
            line,
            col,
        }
    }

    /// The start of `file`: where problems about a file as a whole are reported.
    pub(crate) fn start_of(file: impl AsRef<Path>) -> Self {
        Location::new(file, 1, 1)
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.col)
    }
}

/// How bad a [`Problem`] is; the one rule `check`, `run` and SIGHUP share (see
/// [`Config::diagnose`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// The configuration cannot be used: `check` exits 78, `run` refuses to start (78),
    /// SIGHUP keeps the previous configuration.
    Error,
    /// One certificate (or one optional part, such as the alert command) cannot work as
    /// written; everything else can. Printed as `FILE:LINE:COL: warning: message`; `check`
    /// exits 0 (78 with `--strict`); the daemon logs it and renews every other certificate.
    Warning,
}

/// One thing wrong with the configuration (or with the machine it describes).
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub location: Location,
    pub message: String,
    pub severity: Severity,
}

impl Problem {
    /// An error: the configuration cannot be used as a whole.
    pub fn new(location: Location, message: impl Into<String>) -> Self {
        Problem {
            location,
            message: message.into(),
            severity: Severity::Error,
        }
    }

    /// A warning (see [`Severity::Warning`]).
    pub fn warning(location: Location, message: impl Into<String>) -> Self {
        Problem {
            severity: Severity::Warning,
            ..Problem::new(location, message)
        }
    }

    /// Whether this is a [`Severity::Warning`].
    pub(crate) fn is_warning(&self) -> bool {
        self.severity == Severity::Warning
    }
}

impl fmt::Display for Problem {
    /// `FILE:LINE:COL: message`, or `FILE:LINE:COL: warning: message`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.severity {
            Severity::Error => write!(f, "{}: {}", self.location, self.message),
            Severity::Warning => write!(f, "{}: warning: {}", self.location, self.message),
        }
    }
}

/// What [`Config::diagnose`] found: every problem with its final severity, and the
/// certificates that cannot be renewed as written, each with its reason.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Diagnosis {
    /// In file order (then line, then column), without repeats.
    pub problems: Vec<Problem>,
    /// Certificate name → why it cannot be renewed (`FILE:LINE:COL: message` of its first
    /// problem). The daemon starts no renewal of these; `status` and `inventory` show why.
    pub not_renewable: BTreeMap<String, String>,
}

impl Diagnosis {
    /// Whether any problem is an error (the configuration cannot be used).
    pub fn has_errors(&self) -> bool {
        self.problems.iter().any(|p| !p.is_warning())
    }

    /// The errors only, as a [`ConfigError`] (`None` when there are none).
    pub fn errors(&self) -> Option<ConfigError> {
        let problems: Vec<Problem> = self
            .problems
            .iter()
            .filter(|p| !p.is_warning())
            .cloned()
            .collect();
        (!problems.is_empty()).then_some(ConfigError { problems })
    }

    /// The warnings only.
    pub fn warnings(&self) -> impl Iterator<Item = &Problem> {
        self.problems.iter().filter(|p| p.is_warning())
    }
}

/// Every problem found while loading, in file order; never empty.
#[derive(Debug)]
pub struct ConfigError {
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Sorts problems into file order (then line, then column) and drops repeats, which
/// arise when a bad `[defaults]` value is inherited by several certificates.
pub(super) fn finish(mut problems: Vec<Problem>, sources: &[PathBuf]) -> Vec<Problem> {
    let rank = |file: &Path| {
        sources
            .iter()
            .position(|s| s == file)
            .unwrap_or(sources.len())
    };
    problems.sort_by_cached_key(|p| (rank(&p.location.file), p.location.line, p.location.col));
    let mut seen = HashSet::new();
    problems.retain(|p| seen.insert((p.location.clone(), p.message.clone())));
    problems
}

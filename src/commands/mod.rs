//! The commands that are not the daemon's event loop: `check`, `status` and `inventory`,
//! `run` (the daemon's start, and `run --once`), `renew` and `revoke` (through the running
//! daemon, else in this process), and `account`. Each prints what it has to say and returns
//! an [`Outcome`] or a [`CommandError`]; `main.rs` maps them to the exit codes of SPEC.

mod account;
mod check;
mod persist;
mod renew;
mod run;
mod status;
mod trust_audit;

use std::path::{Path, PathBuf};

use crate::config::{self, Config};

pub use account::account;
pub use check::check;
pub use persist::persist_record;
pub use renew::{renew, revoke, RenewArgs};
pub use run::run;
pub use status::{inventory, status, StatusArgs};
pub use trust_audit::{trust_audit, TrustAuditArgs};

/// How a command that ran to its end went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Everything asked was done (exit 0).
    Success,
    /// A certificate operation failed (exit 1); the output said which.
    CertificateFailed,
    /// The configuration cannot be used (exit 78); the problems are printed.
    ConfigRefused,
}

/// Why a command stopped. The message is printed to standard error as it is.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// A bad command line, an unknown certificate or CA name included (exit 2). Printed as
    /// `renewd: MESSAGE`.
    #[error("{0}")]
    Usage(String),
    /// The configuration cannot be used (exit 78): every problem, one per line, as
    /// `FILE:LINE:COL: message`.
    #[error("{0}")]
    Config(String),
    /// The operation failed (exit 1). Printed as `renewd: MESSAGE`.
    #[error("{0}")]
    Failed(String),
}

impl CommandError {
    fn failed(e: impl std::fmt::Display) -> CommandError {
        CommandError::Failed(e.to_string())
    }
}

impl From<config::ConfigError> for CommandError {
    fn from(e: config::ConfigError) -> CommandError {
        CommandError::Config(e.to_string())
    }
}

/// Loads the configuration at `arg` (else `$RENEWD_CONFIG`, else the default path) and
/// sets the log level it names.
fn load(arg: Option<&Path>) -> Result<(PathBuf, Config), config::ConfigError> {
    let path = config::resolve_path(arg);
    let c = config::load(&path)?;
    crate::logging::set_level(c.log_level.as_deref());
    Ok((path, c))
}

/// Exit 2 (a bad command line) unless every one of `names` is a configured certificate;
/// checked before anything is created or asked.
fn known_names(cfg: &Config, names: &[String]) -> Result<(), CommandError> {
    cfg.check_names(names)
        .map_err(|e| CommandError::Usage(e.to_string()))
}

/// The daemon answered something other than what was asked (or an error).
fn unexpected(answer: crate::control::Response) -> CommandError {
    match answer {
        crate::control::Response::Error { message } => CommandError::Failed(message),
        other => CommandError::Failed(format!("unexpected answer from the daemon: {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::Response;

    #[test]
    fn the_daemons_error_is_said_as_it_is() {
        let e = unexpected(Response::Error {
            message: "permission denied: only root may control renewd".into(),
        });
        assert!(matches!(&e, CommandError::Failed(_)));
        assert_eq!(
            e.to_string(),
            "permission denied: only root may control renewd"
        );
        let e = unexpected(Response::Status {
            certificates: Vec::new(),
        });
        assert!(e
            .to_string()
            .starts_with("unexpected answer from the daemon: Status"));
    }
}

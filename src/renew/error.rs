//! Why a renewal, a revocation or the check of what the CA sent failed: the messages users
//! read (in the log, `status` and the record's history), and what the schedule acts on
//! ([`RenewError::retry_after`]).

use std::time::SystemTime;

use tokio::task::JoinError;

use crate::acme::AcmeError;
use crate::config::KeyType;
use crate::deploy::journal::JournalError;
use crate::deploy::{DeployError, DeployedProblem};
use crate::text::rfc3339;
use crate::x509::X509Error;

/// Why one certificate was not renewed (or revoked).
#[derive(Debug, thiserror::Error)]
pub(crate) enum RenewError {
    #[error("no CA configured for this certificate")]
    NoCa,
    #[error("CA {0} is not configured")]
    CaNotConfigured(String),
    /// The CA's answer, or its refusal; may carry when to come back (Retry-After).
    #[error(transparent)]
    Acme(#[from] AcmeError),
    /// `user`/`group` of the certificate do not resolve.
    #[error(transparent)]
    Ownership(DeployError),
    #[error("key generation aborted: {0}")]
    KeyAborted(JoinError),
    #[error("cannot generate a {key_type} key: {source}")]
    Key {
        key_type: KeyType,
        source: X509Error,
    },
    #[error("cannot build the CSR: {0}")]
    Csr(X509Error),
    /// The `pkcs12` file could not be made (its password file, the encoding).
    #[error(transparent)]
    Pkcs12(crate::deploy::pkcs12::Pkcs12Error),
    /// This host's clock disagrees with the CA's (see [`super::clock_problem`]).
    #[error("{0}")]
    ClockSkew(String),
    #[error("a dry run's order was finalized (bug)")]
    DryRunFinalized,
    #[error("CA {ca} answered with an unusable certificate (order {order_url}): {source}")]
    Unusable {
        ca: String,
        order_url: String,
        source: IssuedError,
    },
    #[error("deployment failed, previous files left in place: {0}")]
    Stage(DeployError),
    #[error("deployment failed: {0}")]
    Journal(JournalError),
    #[error("deployment aborted: {0}")]
    DeployAborted(JoinError),
    #[error("renewal task was aborted")]
    TaskAborted,
    #[error("unknown revocation reason {0:?}")]
    UnknownReason(String),
    #[error("nothing to revoke: {0}")]
    NothingToRevoke(DeployedProblem),
    /// A blocking task (reading files, restoring them) did not complete.
    #[error("{0}")]
    Task(JoinError),
    /// The previous files could not be put back.
    #[error(transparent)]
    Restore(JournalError),
}

impl RenewError {
    /// When the CA allows the next attempt, when it said (Retry-After, rate limit): the
    /// schedule never tries again before that.
    pub(crate) fn retry_after(&self) -> Option<SystemTime> {
        match self {
            RenewError::Acme(e) => e.retry_after(),
            _ => None,
        }
    }
}

/// Why a chain the CA sent is not deployed (see [`super::check_issued`]).
#[derive(Debug, thiserror::Error)]
pub(crate) enum IssuedError {
    #[error(transparent)]
    Pem(X509Error),
    #[error("the chain holds malformed PEM blocks")]
    MalformedBlocks,
    #[error("leaf certificate: {0}")]
    Leaf(X509Error),
    #[error("chain certificate {index}: {source}")]
    Chain { index: usize, source: X509Error },
    #[error("the certificate is for another key")]
    OtherKey,
    #[error("the certificate does not cover {}", .0.join(", "))]
    MissingNames(Vec<String>),
    #[error("the certificate is not valid now (valid from {} to {})",
        rfc3339(*.not_before), rfc3339(*.not_after))]
    NotValidNow {
        not_before: SystemTime,
        not_after: SystemTime,
    },
    #[error("the certificate is not signed by the intermediate the CA sent: {0}")]
    NotSignedByIntermediate(X509Error),
    #[error(
        "chain certificate {index} is not signed by the next certificate the CA sent: {source}"
    )]
    NotSignedByNext { index: usize, source: X509Error },
}

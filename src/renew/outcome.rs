//! What a batch reports: per certificate, what was issued or why not; per reload command,
//! whether it ran. The daemon, `run --once` and the control socket's answers are built from
//! these.

use std::sync::Arc;
use std::time::SystemTime;

use super::RenewError;
use crate::hooks::HookError;

/// The result of renewing one certificate.
#[derive(Debug, Clone)]
pub(crate) struct CertOutcome {
    pub(crate) name: String,
    pub(crate) result: Result<Renewed, CertFailure>,
}

/// Why a certificate of a batch has no new files in place. Its `Display` is the text users
/// read in the log, `status` (the record's `last_result`) and the control socket's answer.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum CertFailure {
    /// Nothing was deployed: the order, the checks or the staging failed.
    #[error(transparent)]
    Renewal(Arc<RenewError>),
    /// The new files were deployed, then restored from the swap journal: why (the failed
    /// reload command or proof, and how the restore went).
    #[error("{0}")]
    RolledBack(String),
    /// `revoke`: the revocation itself failed, so no renewal was started.
    #[error("revocation failed: {0}")]
    Revocation(Arc<RenewError>),
}

/// A certificate that was issued and deployed, or (a dry run) an order whose
/// authorizations were proven and which was never finalized.
#[derive(Debug, Clone)]
pub(crate) struct Renewed {
    pub(crate) ca: String,
    /// The new certificate's serial, hex; empty for a dry run (nothing was issued).
    pub(crate) serial: String,
    /// The new certificate's notAfter; the epoch for a dry run.
    pub(crate) not_after: SystemTime,
    /// The ACME order's URL; empty for a swap finished after a restart (not recorded).
    pub(crate) order_url: String,
    /// The [`deploy::set_digest`](crate::deploy::set_digest) of the files staged, as renewd
    /// rendered them; `None` for a dry run or a swap finished after a restart.
    pub(crate) deployed_sha256: Option<crate::deploy::SetDigest>,
}

/// The outcome of one reload command of a batch.
#[derive(Debug, Clone)]
pub(crate) struct ReloadOutcome {
    pub(crate) argv: Vec<String>,
    pub(crate) certificates: Vec<String>,
    pub(crate) result: Result<(), Arc<HookError>>,
}

/// Everything one batch did.
#[derive(Debug, Clone, Default)]
pub(crate) struct BatchReport {
    pub(crate) certificates: Vec<CertOutcome>,
    pub(crate) reloads: Vec<ReloadOutcome>,
}

impl BatchReport {
    /// Every certificate renewed and every reload command succeeded.
    pub(crate) fn all_ok(&self) -> bool {
        self.certificates.iter().all(|c| c.result.is_ok())
            && self.reloads.iter().all(|r| r.result.is_ok())
    }
}

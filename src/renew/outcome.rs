//! What a batch reports: per certificate, what was issued or why not; per reload command,
//! whether it ran. The daemon, `run --once` and the control socket's answers are built from
//! these.

use std::time::SystemTime;

/// The result of renewing one certificate.
#[derive(Debug, Clone)]
pub(crate) struct CertOutcome {
    pub(crate) name: String,
    /// The failure as users read it (the log, `status`, the control socket's answer).
    pub(crate) result: Result<Renewed, String>,
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
}

/// The outcome of one reload command of a batch.
#[derive(Debug, Clone)]
pub(crate) struct ReloadOutcome {
    pub(crate) argv: Vec<String>,
    pub(crate) certificates: Vec<String>,
    /// Why the command failed, as users read it.
    pub(crate) result: Result<(), String>,
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

//! The renewal of certificates, as one straight pipeline per certificate — key → order →
//! validate the CA's answer → deploy ([`issue`]) — and, per batch, the reload commands of
//! every certificate that changed, each distinct command run once, the proofs and the
//! rollbacks ([`batch`], [`settle`]).
//!
//! The daemon, `run --once` and an in-process `renew` all go through [`Renewer::run_batch`],
//! so they behave the same way. Around it: [`recover`] finishes what a crash interrupted,
//! [`ari`] asks the CA's renewal information (the decisions are `schedule::ari`'s),
//! [`revoke`] revokes the deployed certificate, [`outcome`] is what a batch reports.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex, Semaphore};

use crate::acme::{AcmeError, Ca};
use crate::challenge::Responders;
use crate::config::CaConfig;
use crate::state::{self, StateDir};

mod ari;
mod batch;
mod error;
mod issue;
mod key;
mod outcome;
mod recover;
mod revoke;
mod settle;

use error::{IssuedError, RenewError};
pub(crate) use outcome::{BatchReport, CertFailure, CertOutcome, ReloadOutcome, Renewed};

/// Clock skew tolerated between the CA and this host: when checking a new certificate's
/// `notBefore`, and between this host's clock and the CA's `Date` header before ordering.
pub(crate) const CLOCK_SKEW: Duration = Duration::from_secs(300);

/// Why this host's clock cannot be trusted to order from CA `ca`, when it differs from the
/// CA's (`offset`: seconds this host is ahead, negative when behind) by more than
/// [`CLOCK_SKEW`]: a certificate issued now would look "not valid yet" or expire early here.
pub(crate) fn clock_problem(ca: &str, offset: Option<i64>) -> Option<String> {
    let offset = offset?;
    if offset.unsigned_abs() <= CLOCK_SKEW.as_secs() {
        return None;
    }
    let by = crate::schedule::human(Duration::from_secs(offset.unsigned_abs()));
    Some(format!(
        "the local clock is off by {by} ({} CA {ca}'s clock, from its Date header); check \
         NTP (timedatectl, chronyc tracking). Not ordering until the clocks agree",
        if offset < 0 { "behind" } else { "ahead of" }
    ))
}

/// Renews certificates; shared by every batch of one process.
pub(crate) struct Renewer {
    state: StateDir,
    responders: Responders,
    /// Accounts are opened on first use only, so a pass with nothing due talks to no CA.
    cas: Mutex<HashMap<String, (CaConfig, Arc<Ca>)>>,
    limit: Arc<Semaphore>,
    /// Records that could not be written (disk full, read-only), as they should be: the
    /// newest truth about those certificates in this process, so that `status`, metrics,
    /// alerts and the schedule still see the failures; and why the last write failed.
    unsaved: std::sync::Mutex<Unsaved>,
}

#[derive(Default)]
struct Unsaved {
    records: HashMap<String, state::CertRecord>,
    error: Option<String>,
}

impl Renewer {
    /// A renewer over `state`, renewing at most `max_concurrent` certificates at once.
    pub(crate) fn new(state: StateDir, max_concurrent: usize) -> Renewer {
        Renewer {
            state,
            responders: Responders::default(),
            cas: Mutex::new(HashMap::new()),
            limit: Arc::new(Semaphore::new(max_concurrent.max(1))),
            unsaved: Default::default(),
        }
    }

    /// The record of `name` as this process knows it: the one it could not write, if any,
    /// else the state directory's.
    pub(crate) fn record(&self, name: &str) -> state::CertRecord {
        let unsaved = self.unsaved.lock().unwrap_or_else(|e| e.into_inner());
        match unsaved.records.get(name) {
            Some(rec) => rec.clone(),
            None => self.state.load_cert(name),
        }
    }

    /// Why the state directory could not be written at the last attempt, if it could not
    /// (a message naming the file and the OS reason).
    pub(crate) fn state_problem(&self) -> Option<String> {
        let unsaved = self.unsaved.lock().unwrap_or_else(|e| e.into_inner());
        unsaved.error.clone()
    }

    /// The state directory this renewer records into.
    pub(crate) fn state(&self) -> &StateDir {
        &self.state
    }

    /// The CA named `name`, its account opened (or registered) on first use. A CA whose
    /// configuration changed since (SIGHUP) is opened afresh.
    async fn ca(&self, config: &CaConfig) -> Result<Arc<Ca>, AcmeError> {
        let mut cas = self.cas.lock().await;
        if let Some((cfg, ca)) = cas.get(&config.name) {
            if cfg == config {
                return Ok(ca.clone());
            }
        }
        let ca = Arc::new(Ca::open(config, &self.state.ca_files(&config.name)).await?);
        cas.insert(config.name.clone(), (config.clone(), ca.clone()));
        Ok(ca)
    }

    /// Changes the record of `name`: a read-modify-write with no other update by this
    /// process in between (see [`StateDir::update_cert`]). A failure to write it is logged,
    /// never fatal, and the changed record is kept in memory ([`Renewer::record`]) until a
    /// later write succeeds.
    fn update(&self, name: &str, change: impl FnOnce(&mut state::CertRecord)) {
        let mut unsaved = self.unsaved.lock().unwrap_or_else(|e| e.into_inner());
        let mut rec = match unsaved.records.get(name) {
            Some(rec) => rec.clone(),
            None => self.state.load_cert(name),
        };
        change(&mut rec);
        match self.state.save_cert(name, &rec) {
            Ok(()) => {
                unsaved.records.remove(name);
                if unsaved.records.is_empty() {
                    unsaved.error = None;
                }
            }
            Err(e) => {
                tracing::error!(cert = %name, error = %e,
                    "{name}: cannot record the renewal's outcome: the state directory is not \
                     writable ({e}); keeping it in memory");
                unsaved.error = Some(e.to_string());
                unsaved.records.insert(name.to_string(), rec);
            }
        }
    }
}

/// The deployed certificate of `files`, read on a blocking thread.
async fn inspect(
    files: &crate::config::FileSet,
) -> Result<Result<crate::x509::CertInfo, crate::deploy::DeployedProblem>, tokio::task::JoinError> {
    let files = files.clone();
    tokio::task::spawn_blocking(move || crate::deploy::inspect(&files)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clock_off_by_more_than_the_skew_is_named() {
        assert_eq!(clock_problem("le", None), None);
        assert_eq!(clock_problem("le", Some(-300)), None);
        assert_eq!(clock_problem("le", Some(299)), None);
        let why = clock_problem("le", Some(-1200)).expect("20 minutes behind");
        assert!(
            why.starts_with("the local clock is off by 20m (behind CA le's clock"),
            "{why}"
        );
        assert!(why.contains("NTP"), "{why}");
        let why = clock_problem("le", Some(7200)).expect("2 hours ahead");
        assert!(why.contains("off by 2h (ahead of CA le's clock"), "{why}");
    }

    #[test]
    fn rfc3339_rendering() {
        assert_eq!(
            crate::text::rfc3339(state::from_unix(0)),
            "1970-01-01T00:00:00Z"
        );
    }
}

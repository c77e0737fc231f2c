//! A batch: renew many certificates at once (at most `max_concurrent_renewals`), then settle
//! the ones swapped together ([`super::settle`]); and the reload commands of a batch, each
//! distinct command run once.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::task::JoinSet;

use super::issue::Issued;
use super::{BatchReport, CertFailure, CertOutcome, ReloadOutcome, RenewError, Renewed, Renewer};
use crate::config::{CaConfig, CertConfig, FileKind};
use crate::deploy::journal::Swap;
use crate::hooks;
use crate::state;

/// A certificate whose new files are in place, waiting for its reload and proof.
pub(super) struct Pending {
    pub(super) cert: CertConfig,
    pub(super) renewed: Renewed,
    /// Compared with the certificate the service serves, by the proof.
    pub(super) leaf_der: Vec<u8>,
    pub(super) swap: Swap,
}

/// What settling a batch's swaps did.
#[derive(Default)]
pub(super) struct Settled {
    /// The certificates whose new files did not stay, and why.
    pub(super) failed: HashMap<String, String>,
    pub(super) reloads: Vec<ReloadOutcome>,
}

impl Settled {
    /// The batch's report: `certificates` as issued, with the ones rolled back marked failed.
    pub(super) fn report(self, mut certificates: Vec<CertOutcome>) -> BatchReport {
        for c in &mut certificates {
            if let Some(e) = self.failed.get(&c.name) {
                c.result = Err(CertFailure::RolledBack(e.clone()));
            }
        }
        BatchReport {
            certificates,
            reloads: self.reloads,
        }
    }
}

impl Renewer {
    /// Renews every certificate of `certs` (at most `max_concurrent_renewals` at once), then
    /// reloads the services of the ones deployed (each distinct command once) and proves
    /// them; a certificate whose reload or proof fails gets its previous files back.
    pub(crate) async fn run_batch(
        self: &Arc<Self>,
        certs: Vec<CertConfig>,
        cas: &BTreeMap<String, CaConfig>,
        dry_run: bool,
    ) -> BatchReport {
        let mut set = JoinSet::new();
        for (i, cert) in certs.iter().enumerate() {
            let this = self.clone();
            let cert = cert.clone();
            let cas = cas.clone();
            set.spawn(async move {
                let _permit = this.limit.clone().acquire_owned().await;
                let result = this.renew_one(&cert, &cas, dry_run).await;
                (i, result)
            });
        }
        let mut results: Vec<Option<Result<Issued, RenewError>>> =
            (0..certs.len()).map(|_| None).collect();
        while let Some(joined) = set.join_next().await {
            match joined {
                Ok((i, result)) => results[i] = Some(result),
                Err(e) => tracing::error!(error = %e, "renewal task failed"),
            }
        }
        let mut certificates = Vec::new();
        let mut pending = Vec::new();
        for (cert, result) in certs.iter().zip(results) {
            let result = match result.unwrap_or(Err(RenewError::TaskAborted)) {
                Ok(Issued {
                    renewed,
                    swap: Some((swap, leaf_der)),
                }) => {
                    pending.push(Pending {
                        cert: cert.clone(),
                        renewed: renewed.clone(),
                        leaf_der,
                        swap,
                    });
                    Ok(renewed)
                }
                Ok(Issued {
                    renewed,
                    swap: None,
                }) => Ok(renewed),
                Err(e) => Err(CertFailure::Renewal(Arc::new(e))),
            };
            certificates.push(CertOutcome {
                name: cert.name.clone(),
                result,
            });
        }
        self.settle(pending).await.report(certificates)
    }

    /// Runs each distinct command of `batch` once.
    pub(super) async fn reload(
        &self,
        batch: &[hooks::BatchEntry],
        timeout: Duration,
    ) -> Vec<ReloadOutcome> {
        let mut results = Vec::new();
        for hook in hooks::coalesce(batch, timeout) {
            let served: Vec<String> = batch
                .iter()
                .filter(|(_, cmds, _)| cmds.contains(&hook.argv))
                .map(|(name, _, _)| name.clone())
                .collect();
            tracing::info!(command = ?hook.argv, certificates = %served.join(","), "running reload command");
            let result = match hooks::run(&hook).await {
                Ok(_) => Ok(()),
                Err(e) => {
                    tracing::error!(command = ?hook.argv, error = %e, "reload command failed");
                    Err(Arc::new(e))
                }
            };
            results.push(ReloadOutcome {
                argv: hook.argv.clone(),
                certificates: served,
                result,
            });
        }
        results
    }
}

/// The longest `reload_timeout` of `certs` (a second when there are none).
pub(super) fn reload_timeout<'a>(certs: impl Iterator<Item = &'a CertConfig>) -> Duration {
    certs
        .map(|c| c.reload_timeout)
        .max()
        .unwrap_or(Duration::from_secs(1))
}

/// The environment of SPEC for a reload command of one certificate.
pub(super) fn hook_env(
    cert: &CertConfig,
    serial: &str,
    not_after: SystemTime,
) -> Vec<(String, String)> {
    let mut env = vec![
        ("RENEWD_NAME".to_string(), cert.name.clone()),
        ("RENEWD_DOMAINS".to_string(), cert.domains.join(",")),
        ("RENEWD_SERIAL".to_string(), serial.to_string()),
        (
            "RENEWD_NOT_AFTER".to_string(),
            state::unix(not_after).to_string(),
        ),
    ];
    for (kind, path) in cert.files.iter() {
        let var = match kind {
            FileKind::Cert => "RENEWD_CERT",
            FileKind::Key => "RENEWD_KEY",
            FileKind::Fullchain => "RENEWD_FULLCHAIN",
            FileKind::Chain => "RENEWD_CHAIN",
            FileKind::Combined => "RENEWD_COMBINED",
            FileKind::Pkcs12 => "RENEWD_PKCS12",
        };
        env.push((var.to_string(), path.display().to_string()));
    }
    env
}

//! Finishing what a crash interrupted, before anything else is done with the deployed files
//! (every process that takes the state lock runs this first).

use super::batch::Pending;
use super::{inspect, BatchReport, CertOutcome, Renewed, Renewer};
use crate::config::CertConfig;
use crate::deploy::journal;

impl Renewer {
    /// Swaps caught half-way are rolled back, swaps that had completed are reloaded and
    /// proven like a fresh renewal (and rolled back if that fails), and temporaries nobody
    /// refers to any more are removed. The report lists the completed swaps.
    pub(crate) async fn recover(&self, certs: &[std::sync::Arc<CertConfig>]) -> BatchReport {
        let dir = self.state.journal_dir();
        let configured: journal::Configured = certs
            .iter()
            .map(|c| {
                let targets = c.files.iter().map(|(_, p)| p.to_path_buf()).collect();
                (c.name.clone(), targets)
            })
            .collect();
        let recovery =
            match tokio::task::spawn_blocking(move || journal::recover(&dir, &configured)).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = %e, "recovery of interrupted swaps aborted");
                    return BatchReport::default();
                }
            };
        for name in &recovery.rolled_back {
            tracing::warn!(cert = %name,
                "{name}: a swap of this certificate's files was interrupted; the previous files are back in place");
        }
        for e in &recovery.errors {
            tracing::error!(error = %e, "cannot recover an interrupted swap");
        }
        log_sweep(recovery.sweep(certs.iter().map(|c| (c.name.as_str(), &c.files))));
        let mut pending = Vec::new();
        for swap in recovery.pending {
            // `journal::recover` hands back swaps of configured certificates only (it leaves
            // any other journal alone, as an error), so this always finds one.
            let Some(cert) = certs.iter().find(|c| c.name == swap.cert()) else {
                continue;
            };
            pending.extend(self.completed(cert, swap).await);
        }
        if pending.is_empty() {
            return BatchReport::default();
        }
        let certificates = pending
            .iter()
            .map(|p| CertOutcome {
                name: p.cert.name.clone(),
                result: Ok(p.renewed.clone()),
            })
            .collect::<Vec<_>>();
        self.settle(pending).await.report(certificates)
    }

    /// A swap of `cert` that completed before the interruption: to be reloaded and proven
    /// when its files are usable as configured now, else rolled back at once.
    async fn completed(&self, cert: &CertConfig, swap: journal::Swap) -> Option<Pending> {
        let why = match inspect(&cert.files).await {
            Ok(Ok(leaf)) => {
                tracing::warn!(cert = %cert.name, serial = %leaf.serial_hex,
                    "{}: a swap of this certificate's files completed before an interruption; reloading and proving it now",
                    cert.name);
                let rec = self.record(&cert.name);
                return Some(Pending {
                    cert: cert.clone(),
                    renewed: Renewed {
                        ca: rec.issued_by.unwrap_or_default(),
                        serial: leaf.serial_hex.clone(),
                        not_after: leaf.not_after,
                        order_url: String::new(),
                        deployed_sha256: None,
                    },
                    leaf_der: leaf.der,
                    swap,
                });
            }
            Ok(Err(problem)) => problem.to_string(),
            Err(e) => e.to_string(),
        };
        tracing::error!(cert = %cert.name, error = %why,
            "{}: the files of an interrupted swap are not usable as configured now ({why}); restoring the previous ones",
            cert.name);
        if let Err(e) = swap.roll_back() {
            tracing::error!(cert = %cert.name, error = %e,
                "{}: cannot restore the previous files: {e}", cert.name);
        }
        None
    }
}

/// Logs what [`journal::Recovery::sweep`] removed, or could not.
fn log_sweep(swept: Vec<(std::path::PathBuf, std::io::Result<Vec<std::path::PathBuf>>)>) {
    for (dir, result) in swept {
        match result {
            Ok(removed) => {
                for path in removed {
                    tracing::info!(path = %path.display(),
                        "removed a temporary file left by an interrupted run");
                }
            }
            Err(e) => tracing::warn!(dir = %dir.display(), error = %e,
                "cannot remove temporary files left by an interrupted run"),
        }
    }
}

//! After the swaps of a batch: run the reload commands (each distinct one once), prove the
//! new certificates are served, finish the swaps that hold and roll back the others
//! (reloading their services again), and record every outcome.

use std::collections::HashMap;
use std::time::SystemTime;

use tokio::task::JoinSet;

use super::batch::{hook_env, reload_timeout, Pending, Settled};
use super::{inspect, RenewError, Renewer};
use crate::config::CertConfig;
use crate::deploy::journal::Swap;
use crate::hooks;
use crate::logging;
use crate::text::rfc3339;
use crate::verify;

impl Renewer {
    /// Settles the swaps of a batch: reloads, proofs, then each swap finished or rolled
    /// back, and recorded.
    pub(super) async fn settle(&self, pending: Vec<Pending>) -> Settled {
        let mut settled = Settled::default();
        if pending.is_empty() {
            return settled;
        }
        let mut failed = self.reload_new(&pending, &mut settled).await;
        prove(&pending, &mut failed).await;
        let now = SystemTime::now();
        let mut rolled_back = Vec::new();
        for p in pending {
            let name = p.cert.name.clone();
            match failed.remove(&name) {
                None => self.keep(p, now).await,
                Some(why) => {
                    let message = self.restore(p, &why, &mut rolled_back).await;
                    logging::renewal_rolled_back(&name, &message);
                    self.update(&name, |r| r.record_failure(now, None, message.clone()));
                    settled.failed.insert(name, message);
                }
            }
        }
        self.reload_again(&rolled_back, &mut settled).await;
        settled
    }

    /// Runs the reload commands of the certificates of `pending`; returns the ones whose
    /// command failed, and why.
    async fn reload_new(
        &self,
        pending: &[Pending],
        settled: &mut Settled,
    ) -> HashMap<String, String> {
        let entries: Vec<hooks::BatchEntry> = pending
            .iter()
            .filter(|p| !p.cert.reload.is_empty())
            .map(|p| {
                (
                    p.cert.name.clone(),
                    p.cert.reload.clone(),
                    hook_env(&p.cert, &p.renewed.serial, p.renewed.not_after),
                )
            })
            .collect();
        let timeout = reload_timeout(pending.iter().map(|p| &p.cert));
        let mut failed = HashMap::new();
        for outcome in self.reload(&entries, timeout).await {
            if let Err(e) = &outcome.result {
                for name in &outcome.certificates {
                    failed.entry(name.clone()).or_insert_with(|| {
                        format!("reload command {:?} failed: {e}", outcome.argv)
                    });
                }
            }
            settled.reloads.push(outcome);
        }
        failed
    }

    /// The new files of `p` stay: the swap is finished and the success recorded.
    async fn keep(&self, p: Pending, now: SystemTime) {
        let name = p.cert.name.clone();
        let swap = p.swap;
        match tokio::task::spawn_blocking(move || swap.finish()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(cert = %name, error = %e,
                "{name}: the new files are in place but the swap journal could not be removed: {e}"),
            Err(e) => {
                tracing::error!(cert = %name, error = %e, "{name}: finishing the swap aborted: {e}")
            }
        }
        let r = &p.renewed;
        logging::renewal_succeeded(&name, &r.ca, &r.serial, &rfc3339(r.not_after));
        self.update(&name, |rec| {
            rec.record_success(
                now,
                &r.ca,
                &r.serial,
                r.deployed_sha256.as_ref(),
                format!("issued serial {}", r.serial),
            )
        });
    }

    /// The new files of `p` go, for `why`: the previous ones are put back (and `p`'s
    /// certificate joins `rolled_back`). Returns the failure's message.
    async fn restore(&self, p: Pending, why: &str, rolled_back: &mut Vec<CertConfig>) -> String {
        let swap: Swap = p.swap;
        let restored = match tokio::task::spawn_blocking(move || swap.roll_back()).await {
            Ok(r) => r.map_err(RenewError::Restore),
            Err(e) => Err(RenewError::Task(e)),
        };
        let serial = &p.renewed.serial;
        match restored {
            Ok(()) => {
                rolled_back.push(p.cert);
                format!("new certificate (serial {serial}) rolled back, previous files restored: {why}")
            }
            Err(e) => format!(
                "new certificate (serial {serial}) failed ({why}) and the previous files could not be restored: {e}"
            ),
        }
    }

    /// The services were told about files that are gone again: tell them once more.
    async fn reload_again(&self, rolled_back: &[CertConfig], settled: &mut Settled) {
        let mut again = Vec::new();
        for cert in rolled_back {
            let env = match inspect(&cert.files).await {
                Ok(Ok(leaf)) => hook_env(cert, &leaf.serial_hex, leaf.not_after),
                _ => hook_env(cert, "", SystemTime::UNIX_EPOCH),
            };
            if !cert.reload.is_empty() {
                again.push((cert.name.clone(), cert.reload.clone(), env));
            }
        }
        if again.is_empty() {
            return;
        }
        tracing::info!("reloading again after restoring previous files");
        let timeout = reload_timeout(rolled_back.iter());
        settled.reloads.extend(self.reload(&again, timeout).await);
    }
}

/// The proofs, concurrently (each may wait for its service to pick the files up), of the
/// certificates of `pending` that have one and whose reload did not fail; a failed proof
/// joins `failed`.
async fn prove(pending: &[Pending], failed: &mut HashMap<String, String>) {
    let mut proofs = JoinSet::new();
    for p in pending {
        let Some(v) = p.cert.verify.clone() else {
            continue;
        };
        if failed.contains_key(&p.cert.name) {
            continue;
        }
        let (name, der, serial) = (
            p.cert.name.clone(),
            p.leaf_der.clone(),
            p.renewed.serial.clone(),
        );
        proofs.spawn(async move {
            let result = verify::prove(&v, &der, &serial, v.timeout).await;
            (name, v.connect, result)
        });
    }
    while let Some(joined) = proofs.join_next().await {
        let Ok((name, connect, result)) = joined else {
            continue;
        };
        match result {
            Ok(proven) => tracing::info!(cert = %name, connect = %connect,
                attempts = proven.attempts, elapsed_ms = proven.elapsed.as_millis() as u64,
                "{name}: proof: the service at {connect} serves the new certificate"),
            Err(e) => {
                failed.insert(name, format!("proof failed: {e}"));
            }
        }
    }
}

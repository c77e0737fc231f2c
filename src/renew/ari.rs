//! Asking the CA's ARI (RFC 9773) about deployed certificates and recording the answers.
//! What an answer means (the moment chosen, the re-poll time, what is kept) is decided by
//! `schedule::ari`; this module does the asking, the logging and the writing.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::{inspect, Renewer};
use crate::config::{CaConfig, CertConfig};
use crate::schedule::{self, ari::Answer};
use crate::state;
use crate::text::rfc3339;
use crate::x509::CertInfo;

/// ARI requests under way at once when many certificates are asked about together (a
/// `--once` pass, a daemon start): enough to hide the round trips, few enough to be polite.
pub(crate) const ARI_CONCURRENCY: usize = 8;

impl Renewer {
    /// Asks the CA's ARI (RFC 9773) about `cert`'s deployed certificate and records the
    /// answer (see [`schedule::ari::record`]). A failed request or malformed answer is
    /// recorded as such, and the schedule falls back to `renew_before`; nothing here stops a
    /// renewal. Does nothing when no usable certificate is deployed.
    async fn refresh_ari(&self, cert: &CertConfig, cas: &BTreeMap<String, CaConfig>) {
        let Ok(Ok(leaf)) = inspect(&cert.files).await else {
            return;
        };
        self.refresh_ari_with(cert, &leaf, cas).await;
    }

    /// [`Renewer::refresh_ari`] for many certificates, [`ARI_CONCURRENCY`] requests at once;
    /// each with its deployed leaf when the caller has read it already. Returns the record
    /// of each certificate given with its leaf, as it stands after the answer.
    pub(crate) async fn refresh_ari_all(
        self: &Arc<Self>,
        certs: Vec<(CertConfig, Option<CertInfo>)>,
        cas: &BTreeMap<String, CaConfig>,
    ) -> HashMap<String, state::CertRecord> {
        let limit = Arc::new(Semaphore::new(ARI_CONCURRENCY));
        let cas = Arc::new(cas.clone());
        let mut set = JoinSet::new();
        for (cert, leaf) in certs {
            let (this, limit, cas) = (self.clone(), limit.clone(), cas.clone());
            set.spawn(async move {
                let _permit = limit.acquire_owned().await;
                match leaf {
                    Some(leaf) => Some((
                        cert.name.clone(),
                        this.refresh_ari_with(&cert, &leaf, &cas).await,
                    )),
                    None => {
                        this.refresh_ari(&cert, &cas).await;
                        None
                    }
                }
            });
        }
        let mut records = HashMap::new();
        while let Some(joined) = set.join_next().await {
            if let Ok(Some((name, rec))) = joined {
                records.insert(name, rec);
            }
        }
        records
    }

    /// [`Renewer::refresh_ari`] about `leaf`, `cert`'s deployed certificate; returns the
    /// certificate's record as it stands after the answer.
    async fn refresh_ari_with(
        &self,
        cert: &CertConfig,
        leaf: &CertInfo,
        cas: &BTreeMap<String, CaConfig>,
    ) -> state::CertRecord {
        let mut rec = self.record(&cert.name);
        let ca_name = schedule::deployed_ca(&cert.ca, rec.issued_by.as_deref());
        let Some(ca_config) = ca_name.and_then(|n| cas.get(n)) else {
            return rec;
        };
        let now = SystemTime::now();
        let answer = self.ask_ari(cert, ca_config, leaf).await;
        let prev = rec.ari.take();
        let ari = schedule::ari::record(
            prev.as_ref(),
            &leaf.serial_hex,
            answer,
            now,
            rand::random::<f64>(),
        );
        if let Some((start, end)) = ari
            .window
            .map(|(s, e)| (state::from_unix(s), state::from_unix(e)))
        {
            tracing::info!(cert = %cert.name, ca = %ca_config.name,
                window_start = %rfc3339(start), window_end = %rfc3339(end),
                renew_at = %ari.chosen.map(|c| rfc3339(state::from_unix(c))).unwrap_or_default(),
                explanation = %ari.explanation_url.as_deref().unwrap_or("-"),
                "{}: ARI: the CA's suggested renewal window is {} .. {}",
                cert.name, rfc3339(start), rfc3339(end));
        }
        rec.ari = if schedule::ari::unchanged(prev.as_ref(), &ari, now) {
            prev
        } else {
            self.update(&cert.name, |r| r.ari = Some(ari.clone()));
            Some(ari)
        };
        rec
    }

    /// One ARI request about `leaf` to CA `ca` (a failure logged). `ari = false`: the CA is treated as
    /// offering no renewalInfo, and not contacted.
    async fn ask_ari(&self, cert: &CertConfig, ca: &CaConfig, leaf: &CertInfo) -> Answer {
        if !ca.ari {
            return Answer::Disabled {
                ca: ca.name.clone(),
            };
        }
        let answer = match self.ca(ca).await {
            Ok(acme) => acme.renewal_info(leaf).await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match answer {
            Ok(Some(a)) => Answer::Window {
                start: a.start,
                end: a.end,
                retry_after: a.retry_after,
                explanation_url: a.explanation_url,
            },
            Ok(None) => Answer::NotOffered,
            Err(e) => {
                tracing::warn!(cert = %cert.name, ca = %ca.name, error = %e,
                    "{}: ARI: no usable renewal information from CA {} ({e}); renew_before applies",
                    cert.name, ca.name);
                Answer::Failed(e)
            }
        }
    }
}

//! The renewal of certificates, as one straight pipeline per certificate — key → order →
//! validate the CA's answer → deploy — and, per batch, the reload commands of every
//! certificate that changed, each distinct command run once.
//!
//! The daemon, `run --once` and an in-process `renew` all go through [`Renewer::run_batch`],
//! so they behave the same way.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{Mutex, Semaphore};
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::acme::{AcmeError, Ca, OrderOutcome};
use crate::challenge::Responders;
use crate::config::{CaConfig, CertConfig, FileKind};
use crate::deploy::journal::{self, Swap};
use crate::deploy::{self, Material, Ownership};
use crate::hooks;
use crate::logging;
use crate::state::{self, StateDir};
use crate::verify;
use crate::x509::{self, CertInfo, PrivateKey};

/// ARI requests under way at once when many certificates are asked about together (a
/// `--once` pass, a daemon start): enough to hide the round trips, few enough to be polite.
pub const ARI_CONCURRENCY: usize = 8;

/// Clock skew tolerated between the CA and this host: when checking a new certificate's
/// `notBefore`, and between this host's clock and the CA's `Date` header before ordering.
pub const CLOCK_SKEW: Duration = Duration::from_secs(300);

/// Why this host's clock cannot be trusted to order from CA `ca`, when it differs from the
/// CA's (`offset`: seconds this host is ahead, negative when behind) by more than
/// [`CLOCK_SKEW`]: a certificate issued now would look "not valid yet" or expire early here.
pub fn clock_problem(ca: &str, offset: Option<i64>) -> Option<String> {
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

/// The result of renewing one certificate.
#[derive(Debug, Clone)]
pub struct CertOutcome {
    pub name: String,
    pub result: Result<Renewed, String>,
}

/// A certificate that was issued and deployed, or (a dry run) an order whose
/// authorizations were proven and which was never finalized.
#[derive(Debug, Clone)]
pub struct Renewed {
    pub ca: String,
    /// The new certificate's serial, hex; empty for a dry run (nothing was issued).
    pub serial: String,
    /// The new certificate's notAfter; the epoch for a dry run.
    pub not_after: SystemTime,
    /// False for a dry run.
    pub deployed: bool,
    /// The ACME order's URL; empty for a swap finished after a restart (not recorded).
    pub order_url: String,
}

/// The outcome of one reload command of a batch.
#[derive(Debug, Clone)]
pub struct ReloadOutcome {
    pub argv: Vec<String>,
    pub certificates: Vec<String>,
    pub result: Result<(), String>,
}

#[derive(Debug, Clone, Default)]
pub struct BatchReport {
    pub certificates: Vec<CertOutcome>,
    pub reloads: Vec<ReloadOutcome>,
}

impl BatchReport {
    pub fn all_ok(&self) -> bool {
        self.certificates.iter().all(|c| c.result.is_ok())
            && self.reloads.iter().all(|r| r.result.is_ok())
    }
}

/// Renews certificates; shared by every batch of one process.
pub struct Renewer {
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
    pub fn new(state: StateDir, max_concurrent: usize) -> Renewer {
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
    pub fn record(&self, name: &str) -> state::CertRecord {
        let unsaved = self.unsaved.lock().unwrap_or_else(|e| e.into_inner());
        match unsaved.records.get(name) {
            Some(rec) => rec.clone(),
            None => self.state.load_cert(name),
        }
    }

    /// Why the state directory could not be written at the last attempt, if it could not
    /// (a message naming the file and the OS reason).
    pub fn state_problem(&self) -> Option<String> {
        let unsaved = self.unsaved.lock().unwrap_or_else(|e| e.into_inner());
        unsaved.error.clone()
    }

    pub fn state(&self) -> &StateDir {
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
        let ca = Arc::new(Ca::open(config, &self.state.account_path(&config.name)).await?);
        cas.insert(config.name.clone(), (config.clone(), ca.clone()));
        Ok(ca)
    }

    /// Asks the CA's ARI (RFC 9773) about `cert`'s deployed certificate and records the
    /// answer: the suggested window, a moment chosen uniformly inside it (kept while the
    /// window stays the same, so restarts do not move it), and when to ask again (the CA's
    /// Retry-After, clamped). A failed request or malformed answer is recorded as such, and
    /// the schedule falls back to `renew_before`; nothing here stops a renewal. Does nothing
    /// when no usable certificate is deployed.
    pub async fn refresh_ari(&self, cert: &CertConfig, cas: &BTreeMap<String, CaConfig>) {
        let files = cert.files.clone();
        let Ok(Ok(leaf)) = tokio::task::spawn_blocking(move || deploy::inspect(&files)).await
        else {
            return;
        };
        self.refresh_ari_with(cert, &leaf, cas).await;
    }

    /// [`Renewer::refresh_ari`] for many certificates, [`ARI_CONCURRENCY`] requests at once;
    /// each with its deployed leaf when the caller has read it already. Returns the record
    /// of each certificate given with its leaf, as it stands after the answer.
    pub async fn refresh_ari_all(
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
    pub async fn refresh_ari_with(
        &self,
        cert: &CertConfig,
        leaf: &CertInfo,
        cas: &BTreeMap<String, CaConfig>,
    ) -> state::CertRecord {
        use crate::schedule::{ari_poll_delay, choose_in_window};
        let mut rec = self.record(&cert.name);
        // The CA that issued it, when known; else the first configured.
        let ca_name = rec
            .issued_by
            .clone()
            .filter(|n| cert.ca.contains(n))
            .or_else(|| cert.ca.first().cloned());
        let Some(ca_config) = ca_name.as_ref().and_then(|n| cas.get(n)) else {
            return rec;
        };
        let now = SystemTime::now();
        // `ari = false`: the CA is treated as offering no renewalInfo, and not contacted.
        let answer = match ca_config.ari {
            false => Ok(None),
            true => match self.ca(ca_config).await {
                Ok(ca) => ca.renewal_info(leaf).await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            },
        };
        let prev = rec.ari.take().filter(|a| a.serial == leaf.serial_hex);
        let ari = match answer {
            Ok(Some(a)) => {
                let window = (state::unix(a.start), state::unix(a.end));
                let chosen = match &prev {
                    Some(p) if p.window == Some(window) && p.chosen.is_some() => p.chosen,
                    _ => choose_in_window(a.start, a.end, rand::random::<f64>()).map(state::unix),
                };
                tracing::info!(cert = %cert.name, ca = %ca_config.name,
                    window_start = %httpdate(a.start), window_end = %httpdate(a.end),
                    renew_at = %chosen.map(|c| httpdate(state::from_unix(c))).unwrap_or_default(),
                    explanation = %a.explanation_url.as_deref().unwrap_or("-"),
                    "{}: ARI: the CA's suggested renewal window is {} .. {}",
                    cert.name, httpdate(a.start), httpdate(a.end));
                let first_start = prev
                    .as_ref()
                    .and_then(|p| p.first_start.or(p.window.map(|w| w.0)))
                    .unwrap_or(window.0);
                state::AriRecord {
                    serial: leaf.serial_hex.clone(),
                    window: Some(window),
                    chosen,
                    first_start: Some(first_start),
                    next_poll: state::unix(now + ari_poll_delay(Some(a.retry_after))),
                    explanation_url: a.explanation_url,
                    error: None,
                }
            }
            Ok(None) => state::AriRecord {
                serial: leaf.serial_hex.clone(),
                first_start: prev.as_ref().and_then(|p| p.first_start),
                next_poll: state::unix(now + crate::schedule::ARI_POLL_MAX),
                error: Some(match ca_config.ari {
                    true => "the CA offers no renewalInfo".into(),
                    false => format!("not asked: [ca.{}] sets ari = false", ca_config.name),
                }),
                ..Default::default()
            },
            Err(e) => {
                tracing::warn!(cert = %cert.name, ca = %ca_config.name, error = %e,
                    "{}: ARI: no usable renewal information from CA {} ({e}); renew_before applies",
                    cert.name, ca_config.name);
                state::AriRecord {
                    serial: leaf.serial_hex.clone(),
                    first_start: prev.as_ref().and_then(|p| p.first_start),
                    next_poll: state::unix(now + ari_poll_delay(None)),
                    error: Some(e),
                    ..Default::default()
                }
            }
        };
        // The same answer as last time, asked again before its re-poll time (every `--once`
        // pass asks): nothing to record, and no state file rewritten per certificate.
        let same = prev.as_ref().is_some_and(|p| {
            state::from_unix(p.next_poll) > now
                && state::AriRecord {
                    next_poll: p.next_poll,
                    ..ari.clone()
                } == *p
        });
        rec.ari = if same {
            prev
        } else {
            self.update(&cert.name, |r| r.ari = Some(ari.clone()));
            Some(ari)
        };
        rec
    }

    /// Revokes `cert`'s deployed certificate at the CA that issued it (the first configured
    /// when unknown), for `reason` (an RFC 5280 name); returns its serial. The replacement is
    /// issued by the caller through [`Renewer::run_batch`].
    pub async fn revoke(
        &self,
        cert: &CertConfig,
        cas: &BTreeMap<String, CaConfig>,
        reason: Option<&str>,
    ) -> Result<String, String> {
        let reason = match reason {
            Some(r) => Some(
                crate::acme::revocation_reason(r)
                    .ok_or_else(|| format!("unknown revocation reason {r:?}"))?,
            ),
            None => None,
        };
        let files = cert.files.clone();
        let leaf = tokio::task::spawn_blocking(move || deploy::inspect(&files))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("nothing to revoke: {e}"))?;
        let rec = self.record(&cert.name);
        let ca_name = rec
            .issued_by
            .clone()
            .filter(|n| cert.ca.contains(n))
            .or_else(|| cert.ca.first().cloned())
            .ok_or_else(|| "no CA configured for this certificate".to_string())?;
        let ca_config = cas
            .get(&ca_name)
            .ok_or_else(|| format!("CA {ca_name} is not configured"))?;
        let ca = self.ca(ca_config).await.map_err(|e| e.to_string())?;
        // The deployed key, should the CA want the revocation signed with it (RFC 8555 §7.6).
        let files = cert.files.clone();
        let key_pem = tokio::task::spawn_blocking(move || deployed_key_pem(&files))
            .await
            .ok()
            .flatten();
        ca.revoke(&leaf.der, key_pem.as_deref(), reason)
            .await
            .map_err(|e| e.to_string())?;
        tracing::warn!(cert = %cert.name, ca = %ca_name, serial = %leaf.serial_hex,
            "{}: certificate revoked (serial {}, CA {ca_name}); issuing a replacement with a fresh key",
            cert.name, leaf.serial_hex);
        Ok(leaf.serial_hex)
    }

    /// Renews every certificate of `certs` (at most `max_concurrent_renewals` at once), then
    /// reloads the services of the ones deployed (each distinct command once) and proves
    /// them; a certificate whose reload or proof fails gets its previous files back.
    pub async fn run_batch(
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
        let mut results: Vec<Option<Result<Issued, String>>> =
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
            let result = result.unwrap_or_else(|| Err("renewal task was aborted".into()));
            let result = match result {
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
                Err(e) => Err(e),
            };
            certificates.push(CertOutcome {
                name: cert.name.clone(),
                result,
            });
        }
        self.settle(pending).await.report(certificates)
    }

    /// Finishes what a crash interrupted, before anything else is done with the deployed
    /// files: swaps caught half-way are rolled back, swaps that had completed are reloaded
    /// and proven like a fresh renewal (and rolled back if that fails), and temporaries
    /// nobody refers to any more are removed. The report lists the completed swaps.
    pub async fn recover(&self, certs: &[CertConfig]) -> BatchReport {
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
        let sets = certs
            .iter()
            .filter(|c| !recovery.holds(&c.name))
            .map(|c| &c.files);
        for (dir, result) in deploy::sweep_temporaries_of(sets) {
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
        let mut pending = Vec::new();
        for swap in recovery.pending {
            let Some(cert) = certs.iter().find(|c| c.name == swap.cert()) else {
                tracing::warn!(cert = %swap.cert(), serial = %swap.serial(),
                    "{}: an interrupted swap completed for a certificate no longer configured; keeping its new files",
                    swap.cert());
                if let Err(e) = swap.finish() {
                    tracing::error!(error = %e, "cannot finish the interrupted swap");
                }
                continue;
            };
            let files = cert.files.clone();
            let inspected = tokio::task::spawn_blocking(move || deploy::inspect(&files)).await;
            match inspected {
                Ok(Ok(leaf)) => {
                    tracing::warn!(cert = %cert.name, serial = %leaf.serial_hex,
                        "{}: a swap of this certificate's files completed before an interruption; reloading and proving it now",
                        cert.name);
                    let rec = self.record(&cert.name);
                    pending.push(Pending {
                        cert: cert.clone(),
                        renewed: Renewed {
                            ca: rec.issued_by.unwrap_or_default(),
                            serial: leaf.serial_hex.clone(),
                            not_after: leaf.not_after,
                            deployed: true,
                            order_url: String::new(),
                        },
                        leaf_der: leaf.der,
                        swap,
                    });
                }
                other => {
                    let why = match other {
                        Ok(Err(problem)) => problem.to_string(),
                        Err(e) => e.to_string(),
                        Ok(Ok(_)) => unreachable!("matched above"),
                    };
                    tracing::error!(cert = %cert.name, error = %why,
                        "{}: the files of an interrupted swap are not usable as configured now ({why}); restoring the previous ones",
                        cert.name);
                    if let Err(e) = swap.roll_back() {
                        tracing::error!(cert = %cert.name, error = %e,
                            "{}: cannot restore the previous files: {e}", cert.name);
                    }
                }
            }
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

    /// Renews one certificate up to its swap. An issuance failure is recorded here; the
    /// outcome of a swap is recorded by [`Renewer::settle`], once reloaded and proven.
    async fn renew_one(
        &self,
        cert: &CertConfig,
        cas: &BTreeMap<String, CaConfig>,
        dry_run: bool,
    ) -> Result<Issued, String> {
        let now = SystemTime::now();
        // Every line of the order (CA=, ORDER=) carries the certificate too (CERT=).
        let result = self
            .issue_and_deploy(cert, cas, dry_run)
            .instrument(tracing::info_span!("renewal", cert = %cert.name))
            .await;
        let retry_after = result.as_ref().err().and_then(|f| f.retry_after);
        let result = result.map_err(|f| f.message);
        if dry_run {
            match &result {
                Ok(r) => {
                    logging::dry_run_succeeded(&cert.name, &r.renewed.ca, &r.renewed.order_url)
                }
                Err(e) => logging::dry_run_failed(&cert.name, e),
            }
            return result;
        }
        if let Err(e) = &result {
            logging::renewal_failed(&cert.name, e);
            self.update(&cert.name, |r| {
                r.record_failure(now, retry_after, e.clone())
            });
        }
        result
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

    async fn issue_and_deploy(
        &self,
        cert: &CertConfig,
        cas: &BTreeMap<String, CaConfig>,
        dry_run: bool,
    ) -> Result<Issued, Failure> {
        // The first CA, or a fallback after repeated failures (`ca = ["first", "second"]`).
        let failures = self.record(&cert.name).consecutive_failures;
        let ca_name = cert
            .ca
            .get(crate::schedule::pick_ca(cert.ca.len(), failures))
            .ok_or_else(|| "no CA configured for this certificate".to_string())?;
        if Some(ca_name) != cert.ca.first() {
            tracing::warn!(ca = %ca_name, failures,
                "{}: falling back to CA {ca_name} after {failures} failures in a row", cert.name);
        }
        let ca_config = cas
            .get(ca_name)
            .ok_or_else(|| format!("CA {ca_name} is not configured"))?;
        let ownership = Ownership::resolve(cert.user.as_deref(), cert.group.as_deref())
            .map_err(|e| e.to_string())?;

        // Key generation (RSA-4096 takes a while) stays off the async threads. A dry run
        // never finalizes, so it needs neither key nor CSR.
        let key_csr = if dry_run {
            None
        } else {
            let key_type = cert.key_type;
            let key = tokio::task::spawn_blocking(move || PrivateKey::generate(key_type))
                .await
                .map_err(|e| format!("key generation aborted: {e}"))?
                .map_err(|e| format!("cannot generate a {key_type} key: {e}"))?;
            let csr = key
                .csr_der(&cert.domains)
                .map_err(|e| format!("cannot build the CSR: {e}"))?;
            Some((key, csr))
        };

        let ca = self.ca(ca_config).await?;
        // This host's clock against the CA's, from a fresh answer (the directory): a wrong
        // host clock is not the CA's fault, and ordering would waste a certificate.
        if let Err(e) = ca.advertised_profiles().await {
            tracing::debug!(ca = %ca_name, error = %e, "cannot read the directory to compare clocks");
        }
        if let Some(why) = clock_problem(ca_name, crate::acme::clock_offset(ca_name)) {
            return Err(why.into());
        }
        // `replaces` names the deployed certificate when this CA gave ARI advice about it.
        let rec = self.record(&cert.name);
        let files = cert.files.clone();
        let deployed = tokio::task::spawn_blocking(move || deploy::inspect(&files).ok())
            .await
            .ok()
            .flatten()
            .filter(|leaf| {
                // `ari = false`: no `replaces`, whatever advice was recorded before.
                ca_config.ari
                    && rec.issued_by.as_deref() == Some(ca_name.as_str())
                    && rec.ari_advice(&leaf.serial_hex).is_some()
            });
        let options = crate::acme::OrderOptions {
            // A dry run's order is never finalized: it must not claim the deployed
            // certificate's replacement (a CA may hold that claim against the real one).
            replaces: deployed.as_ref().filter(|_| !dry_run),
            profile: cert.profile.as_deref().or(ca_config.profile.as_deref()),
            dry_run,
        };
        let outcome = ca
            .issue(
                &cert.domains,
                key_csr.as_ref().map_or(&[][..], |(_, csr)| csr.as_slice()),
                &cert.challenge,
                &self.responders,
                options,
            )
            .await?;
        let (issued, key) = match (outcome, key_csr) {
            (OrderOutcome::Issued(issued), Some((key, _))) => (issued, key),
            (OrderOutcome::Rehearsed { order_url, .. }, _) => {
                return Ok(Issued {
                    renewed: Renewed {
                        ca: ca.name().to_string(),
                        serial: String::new(),
                        not_after: SystemTime::UNIX_EPOCH,
                        deployed: false,
                        order_url,
                    },
                    swap: None,
                })
            }
            (OrderOutcome::Issued(_), None) => {
                return Err("a dry run's order was finalized (bug)".to_string().into())
            }
        };
        let (material, leaf) =
            check_issued(&issued.chain_pem, &key, &cert.domains, SystemTime::now()).map_err(
                |e| {
                    format!(
                        "CA {ca_name} answered with an unusable certificate (order {}): {e}",
                        issued.order_url
                    )
                },
            )?;
        let renewed = Renewed {
            ca: ca.name().to_string(),
            serial: leaf.serial_hex.clone(),
            not_after: leaf.not_after,
            deployed: true,
            order_url: issued.order_url.clone(),
        };
        let files = cert.files.clone();
        let key_mode = cert.key_mode;
        let journal_dir = self.state.journal_dir();
        let name = cert.name.clone();
        let serial = leaf.serial_hex.clone();
        let swap = tokio::task::spawn_blocking(move || {
            let staged = deploy::stage(&files, &material, &ownership, key_mode)
                .map_err(|e| format!("deployment failed, previous files left in place: {e}"))?;
            Swap::begin(&journal_dir, &name, &serial, staged)
                .map_err(|e| format!("deployment failed: {e}"))
        })
        .await
        .map_err(|e| format!("deployment aborted: {e}"))??;
        Ok(Issued {
            renewed,
            swap: Some((swap, leaf.der)),
        })
    }

    /// After the swaps of a batch: runs the reload commands (each distinct one once), proves
    /// the new certificates are served, rolls back the ones whose reload or proof failed
    /// and reloads their services again, then records every outcome.
    async fn settle(&self, pending: Vec<Pending>) -> Settled {
        let mut settled = Settled::default();
        if pending.is_empty() {
            return settled;
        }
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
        let mut failed: HashMap<String, String> = HashMap::new();
        for outcome in self.reload(&entries, reload_timeout(&pending)).await {
            if let Err(e) = &outcome.result {
                for name in &outcome.certificates {
                    failed.entry(name.clone()).or_insert_with(|| {
                        format!("reload command {:?} failed: {e}", outcome.argv)
                    });
                }
            }
            settled.reloads.push(outcome);
        }

        // The proofs, concurrently: each may wait for its service to pick the files up.
        let mut proofs = JoinSet::new();
        for p in &pending {
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

        let now = SystemTime::now();
        let mut rolled_back = Vec::new();
        for p in pending {
            let name = p.cert.name.clone();
            match failed.remove(&name) {
                None => {
                    let swap = p.swap;
                    match tokio::task::spawn_blocking(move || swap.finish()).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => tracing::error!(cert = %name, error = %e,
                            "{name}: the new files are in place but the swap journal could not be removed: {e}"),
                        Err(e) => {
                            tracing::error!(cert = %name, error = %e, "{name}: finishing the swap aborted: {e}")
                        }
                    }
                    logging::renewal_succeeded(
                        &name,
                        &p.renewed.ca,
                        &p.renewed.serial,
                        &httpdate(p.renewed.not_after),
                    );
                    self.update(&name, |r| {
                        r.record_success(
                            now,
                            &p.renewed.ca,
                            &p.renewed.serial,
                            format!("issued serial {}", p.renewed.serial),
                        )
                    });
                    settled.results.insert(name.clone(), Ok(()));
                }
                Some(why) => {
                    let swap = p.swap;
                    let restored = tokio::task::spawn_blocking(move || swap.roll_back())
                        .await
                        .map_err(|e| e.to_string())
                        .and_then(|r| r.map_err(|e| e.to_string()));
                    let message = match restored {
                        Ok(()) => {
                            rolled_back.push(p.cert.clone());
                            format!(
                                "new certificate (serial {}) rolled back, previous files restored: {why}",
                                p.renewed.serial
                            )
                        }
                        Err(e) => format!(
                            "new certificate (serial {}) failed ({why}) and the previous files could not be restored: {e}",
                            p.renewed.serial
                        ),
                    };
                    logging::renewal_rolled_back(&name, &message);
                    self.update(&name, |r| r.record_failure(now, None, message.clone()));
                    settled.results.insert(name.clone(), Err(message));
                }
            }
        }

        // The services were told about files that are gone again: tell them once more.
        let mut again = Vec::new();
        for cert in &rolled_back {
            let files = cert.files.clone();
            let env = match tokio::task::spawn_blocking(move || deploy::inspect(&files)).await {
                Ok(Ok(leaf)) => hook_env(cert, &leaf.serial_hex, leaf.not_after),
                _ => hook_env(cert, "", SystemTime::UNIX_EPOCH),
            };
            if !cert.reload.is_empty() {
                again.push((cert.name.clone(), cert.reload.clone(), env));
            }
        }
        if !again.is_empty() {
            let timeout = rolled_back
                .iter()
                .map(|c| c.reload_timeout)
                .max()
                .unwrap_or(Duration::from_secs(1));
            tracing::info!("reloading again after restoring previous files");
            settled.reloads.extend(self.reload(&again, timeout).await);
        }
        settled
    }

    /// Runs each distinct command of `batch` once.
    async fn reload(&self, batch: &[hooks::BatchEntry], timeout: Duration) -> Vec<ReloadOutcome> {
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
                    Err(e.to_string())
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

/// What [`Renewer::renew_one`] hands on: the issued certificate and, unless dry-run, its
/// swap (with the new leaf's DER, for the proof).
struct Issued {
    renewed: Renewed,
    swap: Option<(Swap, Vec<u8>)>,
}

/// A certificate whose new files are in place, waiting for its reload and proof.
struct Pending {
    cert: CertConfig,
    renewed: Renewed,
    /// Compared with the certificate the service serves, by the proof.
    leaf_der: Vec<u8>,
    swap: Swap,
}

#[derive(Default)]
struct Settled {
    /// Per certificate: whether its new files stayed.
    results: HashMap<String, Result<(), String>>,
    reloads: Vec<ReloadOutcome>,
}

impl Settled {
    /// The batch's report: `certificates` as issued, with the ones rolled back marked failed.
    fn report(self, mut certificates: Vec<CertOutcome>) -> BatchReport {
        for c in &mut certificates {
            if let Some(Err(e)) = self.results.get(&c.name) {
                c.result = Err(e.clone());
            }
        }
        BatchReport {
            certificates,
            reloads: self.reloads,
        }
    }
}

fn reload_timeout(pending: &[Pending]) -> Duration {
    pending
        .iter()
        .map(|p| p.cert.reload_timeout)
        .max()
        .unwrap_or(Duration::from_secs(1))
}

/// Why a renewal failed, and when the CA allows the next attempt if it said (Retry-After,
/// rate limit): the schedule never tries again before that.
#[derive(Debug)]
struct Failure {
    message: String,
    retry_after: Option<SystemTime>,
}

impl From<String> for Failure {
    fn from(message: String) -> Failure {
        Failure {
            message,
            retry_after: None,
        }
    }
}

impl From<AcmeError> for Failure {
    fn from(e: AcmeError) -> Failure {
        Failure {
            retry_after: e.retry_after(),
            message: e.to_string(),
        }
    }
}

/// The environment of SPEC for a reload command of one certificate.
fn hook_env(cert: &CertConfig, serial: &str, not_after: SystemTime) -> Vec<(String, String)> {
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
        };
        env.push((var.to_string(), path.display().to_string()));
    }
    env
}

/// Checks a chain the CA sent before anything is written: it parses, its leaf matches our
/// key, covers every configured name, is valid now, and each certificate is signed by the
/// next one the CA sent (a chain of the leaf alone is accepted: some private CAs send no
/// intermediates). Returns what to deploy.
pub fn check_issued(
    chain_pem: &str,
    key: &PrivateKey,
    names: &[String],
    now: SystemTime,
) -> Result<(Material, CertInfo), String> {
    let blocks = pem_blocks(chain_pem);
    let ders = x509::pem_certificates(chain_pem.as_bytes()).map_err(|e| e.to_string())?;
    if blocks.len() != ders.len() {
        return Err("the chain holds malformed PEM blocks".into());
    }
    let leaf = CertInfo::parse_der(&ders[0]).map_err(|e| format!("leaf certificate: {e}"))?;
    for (i, der) in ders.iter().enumerate().skip(1) {
        CertInfo::parse_der(der).map_err(|e| format!("chain certificate {i}: {e}"))?;
    }
    if !key.matches(&leaf) {
        return Err("the certificate is for another key".into());
    }
    let missing = leaf.missing_names(names);
    if !missing.is_empty() {
        return Err(format!(
            "the certificate does not cover {}",
            missing.join(", ")
        ));
    }
    if leaf.not_after <= now || leaf.not_before > now + CLOCK_SKEW {
        return Err(format!(
            "the certificate is not valid now (valid from {} to {})",
            httpdate(leaf.not_before),
            httpdate(leaf.not_after)
        ));
    }
    for (i, pair) in ders.windows(2).enumerate() {
        x509::verify_issued_by(&pair[0], &pair[1]).map_err(|e| {
            if i == 0 {
                format!("the certificate is not signed by the intermediate the CA sent: {e}")
            } else {
                format!(
                    "chain certificate {i} is not signed by the next certificate the CA sent: {e}"
                )
            }
        })?;
    }
    Ok((
        Material {
            key_pem: key.to_pem(),
            chain_pem: blocks,
        },
        leaf,
    ))
}

#[cfg(test)]
mod check_issued_tests {
    use super::*;
    use crate::config::KeyType;
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

    fn ca(cn: &str) -> (Issuer<'static, KeyPair>, String) {
        let key = KeyPair::generate().expect("ca key");
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, cn);
        let pem = params.self_signed(&key).expect("ca").pem();
        (Issuer::new(params, key), pem)
    }

    /// A leaf for `key` and `names`, signed by `issuer`, valid from an hour ago for a day.
    fn leaf(key: &PrivateKey, names: &[&str], issuer: &Issuer<'static, KeyPair>) -> String {
        let spki_pem = key.to_pem();
        let pair = KeyPair::from_pem(&spki_pem).expect("key");
        let mut params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .expect("params");
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::days(1);
        params.signed_by(&pair, issuer).expect("leaf").pem()
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_chain_that_chains_is_accepted_and_so_is_a_lone_leaf() {
        let key = PrivateKey::generate(KeyType::EcdsaP256).expect("key");
        let (inter, inter_pem) = ca("Intermediate");
        let leaf_pem = leaf(&key, &["a.test"], &inter);
        let (material, info) = check_issued(
            &format!("{leaf_pem}{inter_pem}"),
            &key,
            &names(&["a.test"]),
            SystemTime::now(),
        )
        .expect("chains");
        assert_eq!(material.chain_pem.len(), 2);
        assert_eq!(info.dns_names, vec!["a.test"]);
        check_issued(&leaf_pem, &key, &names(&["a.test"]), SystemTime::now())
            .expect("a lone leaf is accepted");
    }

    #[test]
    fn a_chain_that_does_not_chain_is_refused() {
        let key = PrivateKey::generate(KeyType::EcdsaP256).expect("key");
        let (inter, _) = ca("Intermediate");
        let (_, stranger_pem) = ca("Stranger");
        let leaf_pem = leaf(&key, &["a.test"], &inter);
        let err = check_issued(
            &format!("{leaf_pem}{stranger_pem}"),
            &key,
            &names(&["a.test"]),
            SystemTime::now(),
        )
        .expect_err("must not chain");
        assert!(
            err.starts_with("the certificate is not signed by the intermediate the CA sent"),
            "{err}"
        );

        // Same subject name, another key: caught by the signature.
        let (_, impostor_pem) = ca("Intermediate");
        let err = check_issued(
            &format!("{leaf_pem}{impostor_pem}"),
            &key,
            &names(&["a.test"]),
            SystemTime::now(),
        )
        .expect_err("impostor");
        assert!(err.contains("signature does not verify"), "{err}");

        // A broken link further up.
        let (root, root_pem) = ca("Root");
        let _ = root;
        let (inter2, inter2_pem) = ca("Intermediate 2");
        let leaf2 = leaf(&key, &["a.test"], &inter2);
        let err = check_issued(
            &format!("{leaf2}{inter2_pem}{root_pem}"),
            &key,
            &names(&["a.test"]),
            SystemTime::now(),
        )
        .expect_err("intermediate not signed by root");
        assert!(
            err.starts_with("chain certificate 1 is not signed"),
            "{err}"
        );
    }

    #[test]
    fn other_key_missing_names_and_expiry_are_refused() {
        let key = PrivateKey::generate(KeyType::EcdsaP256).expect("key");
        let other = PrivateKey::generate(KeyType::EcdsaP256).expect("other");
        let (inter, inter_pem) = ca("Intermediate");
        let chain = |k: &PrivateKey, n: &[&str]| format!("{}{inter_pem}", leaf(k, n, &inter));
        let err = check_issued(
            &chain(&other, &["a.test"]),
            &key,
            &names(&["a.test"]),
            SystemTime::now(),
        )
        .expect_err("other key");
        assert_eq!(err, "the certificate is for another key");
        let err = check_issued(
            &chain(&key, &["a.test"]),
            &key,
            &names(&["a.test", "b.test"]),
            SystemTime::now(),
        )
        .expect_err("names");
        assert_eq!(err, "the certificate does not cover b.test");
        let later = SystemTime::now() + Duration::from_secs(3 * 86400);
        let err = check_issued(&chain(&key, &["a.test"]), &key, &names(&["a.test"]), later)
            .expect_err("expired");
        assert!(err.starts_with("the certificate is not valid now"), "{err}");
    }
}

/// The CERTIFICATE blocks of a PEM text, each ending with a newline.
fn pem_blocks(pem: &str) -> Vec<String> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let mut out = Vec::new();
    let mut rest = pem;
    while let Some(start) = rest.find(BEGIN) {
        let Some(len) = rest[start..].find(END) else {
            break;
        };
        let end = start + len + END.len();
        out.push(format!("{}\n", &rest[start..end]));
        rest = &rest[end..];
    }
    out
}

/// RFC 3339 UTC rendering of a time, for logs and `status`.
pub fn httpdate(t: SystemTime) -> String {
    state::rfc3339(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_blocks_split_and_normalise() {
        let pem = "junk\n-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\r\n\
                   -----BEGIN CERTIFICATE-----\nBBBB\n-----END CERTIFICATE-----";
        let b = pem_blocks(pem);
        assert_eq!(b.len(), 2);
        assert!(b[0].ends_with("-----END CERTIFICATE-----\n"));
        assert!(b[1].contains("BBBB"));
    }

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
        assert_eq!(httpdate(state::from_unix(0)), "1970-01-01T00:00:00Z");
    }
}

/// The deployed private key (the `key` file, else `combined`) as PKCS#8 PEM; `None` when it
/// cannot be read or parsed (`inspect` has checked it a moment before). A regular file only
/// (opened without blocking, so a FIFO swapped in cannot hang it), at most 1 MiB read.
fn deployed_key_pem(files: &crate::config::FileSet) -> Option<String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let path = files.key.as_deref().or(files.combined.as_deref())?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path)
        .ok()?;
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    let mut pem = Vec::new();
    file.take(1 << 20).read_to_end(&mut pem).ok()?;
    crate::x509::pem_private_key(&pem).ok().map(|k| k.to_pem())
}

//! The certificate table: what the daemon knows of each configured certificate (its
//! evaluation, whether it is renewing or asking ARI, the failures this process saw, which
//! evaluation is current) and the decisions made from it — which are due, the next
//! deadline, what a finished batch changes. Pure: every method that needs the time takes
//! `now`, and none reads a file or the clock, so the rules are unit-tested here.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use crate::config::CertConfig;
use crate::control::RenewResult;
use crate::renew::BatchReport;
use crate::requests::{refusal, skip};
use crate::schedule::Deployed;
use crate::status::Evaluation;
use crate::text::rfc3339;

/// One certificate as the daemon knows it.
pub(super) struct Entry {
    /// Shared with the configuration: one copy of each certificate's configuration.
    pub(super) cfg: Arc<CertConfig>,
    pub(super) eval: Evaluation,
    pub(super) renewing: bool,
    /// Failures seen by this process, so that a state directory that cannot be written
    /// (disk full) still cannot make the daemon retry in a tight loop.
    pub(super) failures_seen: u32,
    pub(super) last_failure_seen: Option<SystemTime>,
    /// The CA's ARI is being asked about this certificate (no renewal starts meanwhile).
    polling_ari: bool,
    /// Generation of the last evaluation asked for, and of the last one applied: the files
    /// are read on a blocking thread; until the last one asked for is applied no renewal or
    /// ARI poll starts, and an older result never replaces a newer one.
    eval_asked: u64,
    eval_done: u64,
    /// After an ARI poll: when to ask again if the record still says "now" (it could not
    /// be written), so the loop cannot spin.
    ari_fallback: Option<SystemTime>,
}

impl Entry {
    /// Nothing may start for it: renewing, polling ARI, or its files being read.
    fn busy(&self) -> bool {
        self.renewing || self.polling_ari || self.eval_asked != self.eval_done
    }
}

/// A counter of the metrics, counted once the inventory collected after it is applied, so
/// a scrape never shows a renewal counted with the gauges from before it.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Count {
    Renewal(String, bool),
    Reload(bool),
}

/// Why the daemon refuses a revoke request; the client gets the message.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub(super) enum RevokeRefused {
    #[error("no certificate named {0}")]
    Unknown(String),
    #[error("{0}: a renewal is under way; try again when it is done")]
    Renewing(String),
    /// No replacement could be deployed, so the certificate in use is not revoked.
    #[error("{name}: not revoked: no replacement could be deployed as configured: {why}")]
    NotRenewable { name: String, why: String },
}

/// Why evaluations were asked for: what applying them logs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Asked {
    /// A file event on a deployed file.
    Files,
    /// An ARI poll ended.
    Ari,
    /// A batch ended.
    Batch,
}

/// One evaluation to make on a blocking thread: name, generation, configuration, and the
/// failures this process saw.
pub(super) type EvalJob = (String, u64, Arc<CertConfig>, u32, Option<SystemTime>);

/// Evaluations read on a blocking thread: name, generation, and the evaluation (`None` when
/// the read failed: the previous one stays).
pub(super) type Evaluated = Vec<(String, u64, Option<Evaluation>)>;

/// Every configured certificate, by name.
#[derive(Default)]
pub(super) struct Table {
    entries: BTreeMap<String, Entry>,
    /// Certificates that cannot be renewed as configured, and why (`status::diagnose` at
    /// start and on SIGHUP).
    not_renewable: BTreeMap<String, String>,
}

impl Table {
    pub(super) fn new(not_renewable: BTreeMap<String, String>) -> Table {
        Table {
            entries: BTreeMap::new(),
            not_renewable,
        }
    }

    pub(super) fn get(&self, name: &str) -> Option<&Entry> {
        self.entries.get(name)
    }

    pub(super) fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values()
    }

    /// A new verdict on which certificates cannot be renewed as configured (SIGHUP); the
    /// entries take it at [`Table::rebuild`].
    pub(super) fn set_not_renewable(&mut self, not_renewable: BTreeMap<String, String>) {
        self.not_renewable = not_renewable;
    }

    /// Rebuilds the table for `certs` with `evals` (read on a blocking thread), keeping what
    /// is known about certificates that are still configured.
    pub(super) fn rebuild(
        &mut self,
        certs: &[Arc<CertConfig>],
        mut evals: HashMap<String, Evaluation>,
    ) {
        let mut old = std::mem::take(&mut self.entries);
        for cert in certs {
            let prev = old.remove(&cert.name);
            let Some(mut eval) = evals
                .remove(&cert.name)
                .or_else(|| prev.as_ref().map(|p| p.eval.clone()))
            else {
                continue;
            };
            eval.not_renewable = self.not_renewable.get(&cert.name).cloned();
            let entry = Entry {
                cfg: cert.clone(),
                eval,
                renewing: prev.as_ref().is_some_and(|p| p.renewing),
                failures_seen: prev.as_ref().map_or(0, |p| p.failures_seen),
                last_failure_seen: prev.as_ref().and_then(|p| p.last_failure_seen),
                polling_ari: prev.as_ref().is_some_and(|p| p.polling_ari),
                eval_asked: prev.as_ref().map_or(0, |p| p.eval_asked),
                eval_done: prev.as_ref().map_or(0, |p| p.eval_done),
                ari_fallback: prev.as_ref().and_then(|p| p.ari_fallback),
            };
            self.entries.insert(cert.name.clone(), entry);
        }
    }

    /// The failures this process saw, per certificate, for an evaluation elsewhere.
    pub(super) fn failures_seen(&self) -> HashMap<String, (u32, Option<SystemTime>)> {
        self.entries
            .iter()
            .map(|(n, e)| (n.clone(), (e.failures_seen, e.last_failure_seen)))
            .collect()
    }

    /// Asks for a new evaluation of each of `names` (unknown ones are left out): the jobs to
    /// run on a blocking thread. Until the newest is applied nothing starts for them.
    pub(super) fn ask_evaluations(
        &mut self,
        names: impl IntoIterator<Item = String>,
    ) -> Vec<EvalJob> {
        let mut jobs = Vec::new();
        for name in names {
            if let Some(e) = self.entries.get_mut(&name) {
                e.eval_asked += 1;
                jobs.push((
                    name,
                    e.eval_asked,
                    e.cfg.clone(),
                    e.failures_seen,
                    e.last_failure_seen,
                ));
            }
        }
        jobs
    }

    /// Applies evaluations read on a blocking thread; one older than the last applied is
    /// dropped (results may arrive out of order).
    pub(super) fn apply_evaluations(&mut self, results: Evaluated, asked: Asked, now: SystemTime) {
        for (name, gen, ev) in results {
            let Some(e) = self.entries.get_mut(&name) else {
                continue;
            };
            if gen <= e.eval_done {
                continue;
            }
            e.eval_done = gen;
            let Some(ev) = ev else {
                continue;
            };
            if ev.clamp_warning != e.eval.clamp_warning {
                warn_clamped(&name, &ev);
            }
            e.eval = ev;
            e.eval.not_renewable = self.not_renewable.get(&name).cloned();
            // A record that could not be written after an ARI poll must not make the loop
            // spin.
            match (e.eval.ari_poll, e.ari_fallback) {
                (Some(t), Some(fallback)) if t <= now => e.eval.ari_poll = Some(fallback),
                (Some(t), _) if t > now => e.ari_fallback = None,
                _ => {}
            }
            match asked {
                Asked::Batch => {
                    tracing::info!(cert = %name, next = %rfc3339(e.eval.decision.at),
                        reason = %e.eval.decision.reason, "{name}: next renewal at {} ({})",
                        rfc3339(e.eval.decision.at), e.eval.decision.reason)
                }
                Asked::Files if !e.renewing => {
                    if let Deployed::Unusable(why) = &e.eval.deployed {
                        tracing::warn!(cert = %name, error = %why,
                            "{name}: deployed files changed and are not usable: {why}");
                    }
                }
                _ => {}
            }
        }
    }

    /// Whether an evaluation or an ARI poll is under way for any certificate.
    pub(super) fn in_flight(&self) -> bool {
        self.entries
            .values()
            .any(|e| e.polling_ari || e.eval_asked != e.eval_done)
    }

    /// The earliest renewal deadline or ARI re-poll time of a certificate nothing is under
    /// way for. A certificate that cannot be renewed waits for SIGHUP, not its deadline.
    pub(super) fn next_deadline(&self) -> Option<SystemTime> {
        self.entries
            .values()
            .filter(|e| !e.busy())
            .flat_map(|e| {
                let due = e.eval.decision.at;
                [
                    e.eval.not_renewable.is_none().then_some(due),
                    e.eval.ari_poll,
                ]
            })
            .flatten()
            .min()
    }

    /// Marks every certificate whose ARI re-poll time has come as polling, and returns them.
    pub(super) fn start_ari_polls(&mut self, now: SystemTime) -> Vec<CertConfig> {
        self.entries
            .values_mut()
            .filter(|e| !e.busy() && e.eval.ari_poll.is_some_and(|t| t <= now))
            .map(|e| {
                e.polling_ari = true;
                (*e.cfg).clone()
            })
            .collect()
    }

    /// The ARI polls of `names` ended at `now`; their records are to be read again.
    pub(super) fn ari_done(&mut self, names: &[String], now: SystemTime) {
        for name in names {
            if let Some(e) = self.entries.get_mut(name) {
                e.polling_ari = false;
                e.ari_fallback = Some(now + crate::schedule::ARI_POLL_DEFAULT);
            }
        }
    }

    /// The certificates due at `now` that nothing is under way for.
    pub(super) fn due(&self, now: SystemTime) -> Vec<String> {
        self.entries
            .iter()
            .filter(|(_, e)| !e.busy() && e.eval.should_renew(now))
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Marks `names` as renewing (a batch starts); returns their configurations.
    pub(super) fn start_renewing(&mut self, names: &[String]) -> Vec<CertConfig> {
        let mut certs = Vec::new();
        for name in names {
            if let Some(e) = self.entries.get_mut(name) {
                e.renewing = true;
                certs.push((*e.cfg).clone());
            }
        }
        certs
    }

    /// A batch ended at `now`: its certificates stop renewing and count a failure (or clear
    /// their failures) unless it was a dry run. Returns the metrics' counters for it.
    pub(super) fn finish_batch(
        &mut self,
        report: &BatchReport,
        dry_run: bool,
        now: SystemTime,
    ) -> Vec<Count> {
        let mut counts = Vec::new();
        for c in &report.certificates {
            let failed_reload = report
                .reloads
                .iter()
                .any(|r| r.result.is_err() && r.certificates.contains(&c.name));
            let Some(e) = self.entries.get_mut(&c.name) else {
                continue;
            };
            e.renewing = false;
            if dry_run {
                continue;
            }
            let ok = c.result.is_ok() && !failed_reload;
            if ok {
                e.failures_seen = 0;
                e.last_failure_seen = None;
            } else {
                e.failures_seen += 1;
                e.last_failure_seen = Some(now);
            }
            counts.push(Count::Renewal(c.name.clone(), ok));
        }
        for r in &report.reloads {
            counts.push(Count::Reload(r.result.is_ok()));
        }
        counts
    }

    /// Of `names` (changed on disk), those to read again: known and not renewing.
    pub(super) fn idle_of(&self, names: impl IntoIterator<Item = String>) -> Vec<String> {
        names
            .into_iter()
            .filter(|n| self.entries.get(n).is_some_and(|e| !e.renewing))
            .collect()
    }

    /// The certificates with a file in one of `dirs`.
    pub(super) fn with_files_in(&self, dirs: &HashSet<PathBuf>) -> Vec<String> {
        self.entries
            .values()
            .filter(|e| {
                e.cfg
                    .files
                    .iter()
                    .any(|(_, p)| p.parent().is_some_and(|d| dirs.contains(d)))
            })
            .map(|e| e.cfg.name.clone())
            .collect()
    }

    /// A renew request for `selected`: the results of those it leaves alone (renewing, not
    /// renewable, or not due without `force`), and the names to renew.
    pub(super) fn sort_request(
        &self,
        selected: Vec<String>,
        force: bool,
        now: SystemTime,
    ) -> (Vec<RenewResult>, Vec<String>) {
        let mut skipped = Vec::new();
        let mut run = Vec::new();
        for name in selected {
            let Some(e) = self.entries.get(&name) else {
                continue;
            };
            if e.renewing {
                skipped.push(skip(&name, "a renewal is already under way".into()));
            } else if let Some(result) = refusal(&name, &e.eval, force, now) {
                skipped.push(result);
            } else {
                run.push(name);
            }
        }
        (skipped, run)
    }

    /// A revoke request for `name`: its configuration, marked renewing, or why it is
    /// refused.
    pub(super) fn start_revoke(&mut self, name: &str) -> Result<CertConfig, RevokeRefused> {
        let Some(e) = self.entries.get_mut(name) else {
            return Err(RevokeRefused::Unknown(name.to_string()));
        };
        if e.renewing {
            return Err(RevokeRefused::Renewing(name.to_string()));
        }
        if let Some(why) = &e.eval.not_renewable {
            return Err(RevokeRefused::NotRenewable {
                name: name.to_string(),
                why: why.clone(),
            });
        }
        e.renewing = true;
        Ok((*e.cfg).clone())
    }

    /// The one-line STATUS systemd shows, e.g. "12 certificates, next: www in 23d".
    pub(super) fn status_line(&self, now: SystemTime) -> String {
        let mut line = format!("{} certificates", self.entries.len());
        if let Some(e) = self
            .entries
            .values()
            .filter(|e| !e.renewing && e.eval.not_renewable.is_none())
            .min_by_key(|e| e.eval.decision.at)
        {
            line.push_str(&format!(
                ", next: {} {}",
                e.cfg.name,
                relative(e.eval.decision.at, now)
            ));
        }
        let renewing = self.entries.values().filter(|e| e.renewing).count();
        if renewing > 0 {
            line.push_str(&format!(", {renewing} renewing"));
        }
        let failing = self
            .entries
            .values()
            .filter(|e| e.failures_seen > 0)
            .count();
        if failing > 0 {
            line.push_str(&format!(", {failing} failing"));
        }
        if !self.not_renewable.is_empty() {
            line.push_str(&format!(", {} not renewable", self.not_renewable.len()));
        }
        line
    }

    /// "N certificates, next: NAME at TIME (REASON)", for the log at start and reload.
    pub(super) fn summary(&self) -> String {
        let next = self
            .entries
            .values()
            .filter(|e| e.eval.not_renewable.is_none())
            .min_by_key(|e| e.eval.decision.at)
            .map(|e| {
                format!(
                    ", next: {} at {} ({})",
                    e.cfg.name,
                    rfc3339(e.eval.decision.at),
                    e.eval.decision.reason
                )
            })
            .unwrap_or_default();
        let blocked = match self.not_renewable.len() {
            0 => String::new(),
            n => format!(", {n} not renewable as configured"),
        };
        format!("{} certificates{next}{blocked}", self.entries.len())
    }
}

/// Logs, once per change, that a certificate's `renew_before` is clamped to its lifetime.
fn warn_clamped(name: &str, eval: &Evaluation) {
    if let Some(w) = &eval.clamp_warning {
        tracing::warn!(cert = %name, "{name}: {w}");
    }
}

/// "in 23d", "in 4h", "in 12m", "in 30s", "now": coarse on purpose, for a status line.
fn relative(at: SystemTime, now: SystemTime) -> String {
    let Ok(d) = at.duration_since(now) else {
        return "now".into();
    };
    let s = d.as_secs();
    match s {
        0 => "now".into(),
        1..=119 => format!("in {s}s"),
        120..=7199 => format!("in {}m", s / 60),
        7200..=172_799 => format!("in {}h", s / 3600),
        _ => format!("in {}d", s / 86400),
    }
}

#[cfg(test)]
mod tests;

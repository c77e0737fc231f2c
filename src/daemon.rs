//! The daemon's event loop, and the one-shot entry points (`run --once`, `renew` without a
//! daemon) that share its selection logic.
//!
//! The loop sleeps until the earliest renewal deadline, and wakes earlier only for a file
//! event on a deployed file, a control request, a finished batch, or a signal. Nothing
//! polls. Renewals run in batches on spawned tasks; the loop itself never blocks on the
//! network, so `status` answers while a renewal is under way.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use notify::{EventKind, RecursiveMode, Watcher};
use sd_notify::NotifyState;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, oneshot, watch};

use crate::config::{self, CertConfig, Config};
use crate::control::{self, Incoming, RenewResult, Request, Response};
use crate::renew::{httpdate, BatchReport, Renewer};
use crate::schedule::Deployed;
use crate::state::StateDir;
use crate::status::{self, Evaluation, StatusRow};

/// File events are gathered for this long before the affected certificates are re-read, so
/// an editor's or a deployment's burst of events causes one evaluation.
const DEBOUNCE: Duration = Duration::from_millis(250);
/// How long a stopping daemon waits for renewals under way before abandoning them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// `renewd run --once`: issues what is missing, renews what is due, then returns whether
/// every certificate is fine.
pub async fn run_once(config: &Config) -> Result<bool, String> {
    let state = StateDir::open(&config.state_dir).map_err(|e| e.to_string())?;
    let _lock = state.try_lock().map_err(|e| e.to_string())?;
    let renewer = Arc::new(Renewer::new(state.clone(), config.max_concurrent_renewals));
    let mut fine = renewer.recover(&config.certificates).await.all_ok();
    // A journal still there after recovery is a swap that could not be recovered (`recover`
    // logged why): that certificate's files are in doubt, so the pass has failed.
    let left = leftover_journals(&state.journal_dir());
    if !left.is_empty() {
        tracing::error!(journals = ?left,
            "interrupted swaps could not be recovered; their files are in doubt");
        fine = false;
    }
    // Each certificate's files are read once, for ARI and for the decision.
    let certs = config.certificates.clone();
    let inspected = tokio::task::spawn_blocking(move || {
        certs
            .iter()
            .map(|c| crate::deploy::inspect(&c.files))
            .collect::<Vec<_>>()
    })
    .await
    .map_err(|e| format!("reading the deployed certificates failed: {e}"))?;
    // Every pass asks the CA's ARI afresh about each deployed certificate (the records come
    // back as the answers left them), unless none of its CAs is to be asked (`ari = false`):
    // those are not even handed over, which keeps a pass without ARI cheap.
    let asks_ari = |c: &CertConfig| {
        c.ca.iter()
            .any(|n| config.cas.get(n).is_some_and(|ca| ca.ari))
    };
    let asked = config
        .certificates
        .iter()
        .zip(&inspected)
        .filter(|(c, _)| asks_ari(c))
        .filter_map(|(c, i)| Some((c.clone(), Some(i.as_ref().ok()?.clone()))))
        .collect();
    let mut records = renewer.refresh_ari_all(asked, &config.cas).await;
    let now = SystemTime::now();
    let mut due = Vec::new();
    for (cert, inspected) in config.certificates.iter().zip(&inspected) {
        let rec = match records.remove(&cert.name) {
            Some(rec) => rec,
            None => {
                let mut rec = state.load_cert(&cert.name);
                if !asks_ari(cert) {
                    // Advice recorded before `ari = false` was set no longer counts.
                    rec.ari = None;
                }
                rec
            }
        };
        let ev = status::evaluate_inspected(cert, &rec, now, inspected.as_ref());
        if ev.decision.is_due(now) {
            tracing::info!(cert = %cert.name, reason = %ev.decision.reason, "due");
            due.push(cert.clone());
        } else if let Deployed::Unusable(why) = &ev.deployed {
            tracing::error!(cert = %cert.name, problem = %why, retry_at = %httpdate(ev.decision.at),
                "not usable, and still backing off after earlier failures");
            fine = false;
        } else {
            tracing::info!(cert = %cert.name, next = %httpdate(ev.decision.at),
                reason = %ev.decision.reason, "not due");
        }
    }
    if due.is_empty() {
        tracing::info!("nothing due");
        return Ok(fine);
    }
    let report = renewer.run_batch(due, &config.cas, false).await;
    Ok(fine && report.all_ok())
}

/// The swap journals in `dir` (`NAME.json`; renewd's own temporaries start with a dot).
/// A directory that cannot be read counts as one left over: nothing says it is clean.
fn leftover_journals(dir: &Path) -> Vec<PathBuf> {
    match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| {
                p.extension().is_some_and(|x| x == "json")
                    && !p
                        .file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            })
            .collect(),
        Err(e) => {
            tracing::error!(dir = %dir.display(), error = %e, "cannot read the swap journals");
            vec![dir.to_path_buf()]
        }
    }
}

/// `renewd renew` when no daemon runs: the same selection as the daemon's, done in this
/// process under the state directory's lock.
pub async fn renew_in_process(
    config: &Config,
    names: &[String],
    all: bool,
    force: bool,
    dry_run: bool,
) -> Result<Vec<RenewResult>, String> {
    let state = StateDir::open(&config.state_dir).map_err(|e| e.to_string())?;
    let _lock = state.try_lock().map_err(|e| e.to_string())?;
    let renewer = Arc::new(Renewer::new(state.clone(), config.max_concurrent_renewals));
    renewer.recover(&config.certificates).await;
    let selected = select(config, names, all)?;
    let now = SystemTime::now();
    let mut skipped = Vec::new();
    let mut run = Vec::new();
    for cert in selected {
        let ev = status::evaluate(cert, &state.load_cert(&cert.name), now);
        match skip_reason(&ev, force, now) {
            Some(why) => skipped.push(skip(&cert.name, why)),
            None => run.push(cert.clone()),
        }
    }
    let report = renewer.run_batch(run, &config.cas, dry_run).await;
    Ok(results(skipped, &report, dry_run))
}

/// `renewd revoke` when no daemon runs: revoke at the CA, then issue and deploy a
/// replacement through the normal pipeline, in this process under the state lock.
pub async fn revoke_in_process(
    config: &Config,
    name: &str,
    reason: Option<&str>,
) -> Result<Vec<RenewResult>, String> {
    let state = StateDir::open(&config.state_dir).map_err(|e| e.to_string())?;
    let _lock = state.try_lock().map_err(|e| e.to_string())?;
    let renewer = Arc::new(Renewer::new(state.clone(), config.max_concurrent_renewals));
    renewer.recover(&config.certificates).await;
    let cert = select(config, &[name.to_string()], false)?
        .into_iter()
        .next()
        .cloned()
        .ok_or_else(|| format!("no certificate named {name}"))?;
    let serial = renewer.revoke(&cert, &config.cas, reason).await?;
    let report = renewer.run_batch(vec![cert], &config.cas, false).await;
    Ok(revoked_results(&serial, &report))
}

/// `renewd account show|rollover-key|deactivate [--ca NAME]`, under the state lock (so
/// not while a daemon runs). `--ca` may be left out when one CA is configured.
pub async fn account(config: &Config, op: &str, ca: Option<&str>) -> Result<String, String> {
    let ca = match ca {
        Some(name) => config
            .cas
            .get(name)
            .ok_or_else(|| format!("no CA named {name} in the configuration"))?,
        None if config.cas.len() == 1 => config.cas.values().next().ok_or("no CA")?,
        None => {
            return Err(format!(
                "several CAs are configured ({}); say which with --ca",
                config.cas.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
        }
    };
    let state = StateDir::open(&config.state_dir).map_err(|e| e.to_string())?;
    let _lock = state
        .try_lock()
        .map_err(|e| format!("{e} (stop the daemon for account maintenance)"))?;
    let path = state.account_path(&ca.name);
    use crate::acme::account;
    let result = match op {
        "show" => account::show(ca, &path).await.map(|id| {
            format!(
                "CA {}: account {id}\n  directory: {}\n  file: {}",
                ca.name,
                ca.directory,
                path.display()
            )
        }),
        "rollover-key" => account::rollover_key(ca, &path).await.map(|id| {
            format!(
                "CA {}: account {id}: new key stored in {}",
                ca.name,
                path.display()
            )
        }),
        "deactivate" => account::deactivate(ca, &path).await.map(|id| {
            format!(
                "CA {}: account {id} deactivated; the next order registers a new one",
                ca.name
            )
        }),
        other => return Err(format!("unknown account operation {other}")),
    };
    result.map_err(|e| e.to_string())
}

/// The results of a revoke: the batch's, each saying which serial was revoked.
fn revoked_results(serial: &str, report: &BatchReport) -> Vec<RenewResult> {
    results(Vec::new(), report, false)
        .into_iter()
        .map(|mut r| {
            r.message = format!("revoked serial {serial}; replacement: {}", r.message);
            r
        })
        .collect()
}

/// The certificates a renew request names; unknown names are an error listing them.
fn select<'a>(
    config: &'a Config,
    names: &[String],
    all: bool,
) -> Result<Vec<&'a CertConfig>, String> {
    if all {
        return Ok(config.certificates.iter().collect());
    }
    let unknown: Vec<&str> = names
        .iter()
        .filter(|n| config.certificate(n).is_none())
        .map(String::as_str)
        .collect();
    if !unknown.is_empty() {
        return Err(format!(
            "no certificate named {} in the configuration",
            unknown.join(", ")
        ));
    }
    Ok(names.iter().filter_map(|n| config.certificate(n)).collect())
}

/// Why a renew request without `--force` leaves a certificate alone, if it does.
fn skip_reason(ev: &Evaluation, force: bool, now: SystemTime) -> Option<String> {
    if force || ev.decision.is_due(now) {
        return None;
    }
    Some(format!(
        "not due until {} ({}); use --force to renew anyway",
        httpdate(ev.decision.at),
        ev.decision.reason
    ))
}

fn skip(name: &str, why: String) -> RenewResult {
    RenewResult {
        name: name.to_string(),
        outcome: "skipped".into(),
        message: why,
    }
}

/// One result per certificate of a renew request: the skipped ones, then the batch's.
fn results(mut out: Vec<RenewResult>, report: &BatchReport, dry_run: bool) -> Vec<RenewResult> {
    for c in &report.certificates {
        let failed_reload = report
            .reloads
            .iter()
            .find(|r| r.result.is_err() && r.certificates.contains(&c.name));
        out.push(match (&c.result, failed_reload) {
            (Err(e), _) => RenewResult {
                name: c.name.clone(),
                outcome: "failed".into(),
                message: e.clone(),
            },
            (Ok(r), Some(reload)) => RenewResult {
                name: c.name.clone(),
                outcome: "failed".into(),
                message: format!(
                    "deployed serial {}, but reload {:?} failed: {}",
                    r.serial,
                    reload.argv,
                    reload
                        .result
                        .as_ref()
                        .err()
                        .map(String::as_str)
                        .unwrap_or("")
                ),
            },
            (Ok(r), None) => RenewResult {
                name: c.name.clone(),
                outcome: if dry_run { "dry-run-ok" } else { "renewed" }.into(),
                message: format!(
                    "serial {} from CA {}, valid until {}{}",
                    r.serial,
                    r.ca,
                    httpdate(r.not_after),
                    if dry_run {
                        " (dry run: nothing deployed)"
                    } else {
                        ""
                    }
                ),
            },
        });
    }
    out
}

/// Status rows computed from disk, for `renewd status` when no daemon runs.
pub fn status_offline(config: &Config, names: &[String]) -> Result<Vec<StatusRow>, String> {
    let state = StateDir::open_existing(&config.state_dir);
    let now = SystemTime::now();
    let certs = if names.is_empty() {
        config.certificates.iter().collect()
    } else {
        select(config, names, false)?
    };
    Ok(certs
        .into_iter()
        .map(|c| {
            let rec = state.load_cert(&c.name);
            let ev = status::evaluate(c, &rec, now);
            status::row(c, &rec, &ev, false)
        })
        .collect())
}

enum Event {
    Files(Vec<PathBuf>),
    /// The CA's ARI was asked about these certificates; their records are updated.
    AriDone(Vec<String>),
    BatchDone {
        report: BatchReport,
        dry_run: bool,
        /// The control client waiting for this batch, with the results already known.
        reply: Option<(oneshot::Sender<Response>, Vec<RenewResult>)>,
    },
}

struct Entry {
    cfg: CertConfig,
    eval: Evaluation,
    renewing: bool,
    /// Failures seen by this process, so that a state directory that cannot be written
    /// (disk full) still cannot make the daemon retry in a tight loop.
    failures_seen: u32,
    last_failure_seen: Option<SystemTime>,
    /// The CA's ARI is being asked about this certificate (no renewal starts meanwhile).
    polling_ari: bool,
}

struct Daemon {
    config_path: PathBuf,
    config: Config,
    state: StateDir,
    renewer: Arc<Renewer>,
    entries: BTreeMap<String, Entry>,
    /// Deployed file → the certificates that own it.
    targets: HashMap<PathBuf, Vec<String>>,
    watched_dirs: HashSet<PathBuf>,
    watcher: Option<notify::RecommendedWatcher>,
    events: mpsc::UnboundedSender<Event>,
    dirty: BTreeSet<String>,
    debounce: Option<tokio::time::Instant>,
    batches_in_flight: usize,
    wakeups: u64,
    /// Inventory, alerts and metrics (see `Daemon::refresh_governance`).
    governance: crate::inventory::Live,
    discovery_dirty: bool,
    discovery_watched: Vec<PathBuf>,
}

/// `renewd run`: the daemon, until SIGTERM or SIGINT.
pub async fn run(config_path: &Path, config: Config) -> Result<(), String> {
    let state = StateDir::open(&config.state_dir).map_err(|e| e.to_string())?;
    let _lock = state.try_lock().map_err(|e| e.to_string())?;
    let listener = control::bind(&config.control_socket).await?;
    let (ctl_tx, mut ctl_rx) = mpsc::channel::<Incoming>(16);
    let (stop_tx, stop_rx) = watch::channel(false);
    let server = tokio::spawn(control::serve(listener, ctl_tx, stop_rx));

    // Before anything else looks at the deployed files: finish or undo what a crash
    // interrupted.
    let renewer = Arc::new(Renewer::new(state.clone(), config.max_concurrent_renewals));
    renewer.recover(&config.certificates).await;

    let (ev_tx, mut ev_rx) = mpsc::unbounded_channel();
    let governance = crate::inventory::Live::start(&config).await?;
    let mut d = Daemon {
        config_path: config_path.to_path_buf(),
        renewer,
        state,
        config,
        entries: BTreeMap::new(),
        targets: HashMap::new(),
        watched_dirs: HashSet::new(),
        watcher: None,
        events: ev_tx,
        dirty: BTreeSet::new(),
        debounce: None,
        batches_in_flight: 0,
        wakeups: 0,
        governance,
        discovery_dirty: false,
        discovery_watched: Vec::new(),
    };
    d.watcher = Some(d.new_watcher()?);
    d.apply_config();
    d.watch_discovery();
    d.governance.rescan();
    d.refresh_governance();

    let mut hup = signal(SignalKind::hangup()).map_err(|e| e.to_string())?;
    let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
    release_free_memory();
    tracing::info!(socket = %d.config.control_socket.display(), "renewd started; {}", d.summary());
    let mut status = d.status_line(SystemTime::now());
    tell_systemd(&[NotifyState::Ready, NotifyState::Status(&status)]);
    // systemd's watchdog, when the unit asks for one: the only periodic wake-up.
    let mut watchdog = sd_notify::watchdog_enabled().map(|timeout| {
        let every = (timeout / 2).max(Duration::from_secs(1));
        tracing::debug!(?every, "watchdog enabled");
        tokio::time::interval_at(tokio::time::Instant::now() + every, every)
    });

    loop {
        d.wakeups += 1;
        let deadline = d.next_deadline();
        let timer = async {
            match deadline {
                Some(t) => {
                    tokio::time::sleep(t.duration_since(SystemTime::now()).unwrap_or_default())
                        .await
                }
                None => std::future::pending().await,
            }
        };
        let debounce = d.debounce;
        let debounced = async {
            match debounce {
                Some(i) => tokio::time::sleep_until(i).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = timer => {
                d.start_due();
                d.refresh_governance();
            }
            _ = debounced => d.reevaluate_dirty(),
            Some(ev) = ev_rx.recv() => d.on_event(ev),
            Some((req, reply)) = ctl_rx.recv() => d.on_control(req, reply),
            _ = hup.recv() => {
                let reloading = NotifyState::monotonic_usec_now();
                let mut states = vec![NotifyState::Reloading];
                states.extend(reloading.ok());
                tell_systemd(&states);
                d.reload();
                tell_systemd(&[NotifyState::Ready]);
            }
            _ = async { watchdog.as_mut().map(|w| w.tick()).expect("guarded").await }, if watchdog.is_some() => {
                tell_systemd(&[NotifyState::Watchdog]);
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
        tracing::trace!(wakeups = d.wakeups, "event loop woke");
        let now_status = d.status_line(SystemTime::now());
        if now_status != status {
            status = now_status;
            tell_systemd(&[NotifyState::Status(&status)]);
        }
    }

    tracing::info!("stopping");
    tell_systemd(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
    let _ = stop_tx.send(true);
    let _ = server.await;
    if d.batches_in_flight > 0 {
        tracing::info!(
            batches = d.batches_in_flight,
            "waiting for renewals under way"
        );
        let grace = tokio::time::sleep(SHUTDOWN_GRACE);
        tokio::pin!(grace);
        while d.batches_in_flight > 0 {
            tokio::select! {
                _ = &mut grace => {
                    tracing::warn!(batches = d.batches_in_flight,
                        "abandoning renewals under way; their temporary files are removed and \
                         deployed files are left as they were");
                    break;
                }
                Some(ev) = ev_rx.recv() => if let Event::BatchDone { .. } = ev { d.on_event(ev) },
            }
        }
    }
    d.governance.stop();
    let _ = std::fs::remove_file(&d.config.control_socket);
    tracing::info!("stopped");
    Ok(())
}

/// Hands heap freed after a burst of work (start-up, a batch, a reload) back to the kernel.
/// glibc keeps it otherwise, so a daemon that read 1,000 certificates at start would hold
/// that peak for months of idleness.
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages of the allocator to the kernel; it is
    // thread-safe and touches no memory in use.
    unsafe {
        nix::libc::malloc_trim(0);
    }
}

/// Sends state to systemd when it supervises us (`NOTIFY_SOCKET`); otherwise does nothing.
fn tell_systemd(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "cannot notify systemd");
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

impl Daemon {
    /// The one-line STATUS systemd shows, e.g. "12 certificates, next: www in 23d".
    fn status_line(&self, now: SystemTime) -> String {
        let mut line = format!("{} certificates", self.entries.len());
        if let Some(e) = self
            .entries
            .values()
            .filter(|e| !e.renewing)
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
        line
    }

    fn new_watcher(&self) -> Result<notify::RecommendedWatcher, String> {
        let tx = self.events.clone();
        notify::recommended_watcher(move |res: notify::Result<notify::Event>| match res {
            // Reads (ours included: evaluating a certificate opens its files) are not changes.
            Ok(ev) if matches!(ev.kind, EventKind::Access(_)) => {}
            Ok(ev) => {
                let _ = tx.send(Event::Files(ev.paths));
            }
            Err(e) => tracing::warn!(error = %e, "file watcher error"),
        })
        .map_err(|e| format!("cannot watch files: {e}"))
    }

    /// Rebuilds the certificate table and the watches from `self.config`, keeping what is
    /// known about certificates that are still configured.
    fn apply_config(&mut self) {
        // Watches first, then the files are read: a change in between is then an event.
        self.targets.clear();
        for cert in &self.config.certificates {
            for (_, path) in cert.files.iter() {
                self.targets
                    .entry(path.to_path_buf())
                    .or_default()
                    .push(cert.name.clone());
            }
        }
        let dirs: HashSet<PathBuf> = self
            .targets
            .keys()
            .filter_map(|p| p.parent().map(Path::to_path_buf))
            .collect();
        if let Some(w) = self.watcher.as_mut() {
            for gone in self.watched_dirs.difference(&dirs) {
                let _ = w.unwatch(gone);
            }
            for new in dirs.difference(&self.watched_dirs) {
                if let Err(e) = w.watch(new, RecursiveMode::NonRecursive) {
                    tracing::warn!(dir = %new.display(), error = %e,
                        "cannot watch directory; changes to its certificates are noticed only at their deadline");
                }
            }
        }
        self.watched_dirs = dirs;

        let now = SystemTime::now();
        let mut old = std::mem::take(&mut self.entries);
        for cert in &self.config.certificates {
            let prev = old.remove(&cert.name);
            let failures_seen = prev.as_ref().map_or(0, |p| p.failures_seen);
            let last_failure_seen = prev.as_ref().and_then(|p| p.last_failure_seen);
            let entry = Entry {
                cfg: cert.clone(),
                eval: self.evaluation(cert, failures_seen, last_failure_seen, now),
                renewing: prev.as_ref().is_some_and(|p| p.renewing),
                failures_seen,
                last_failure_seen,
                polling_ari: prev.as_ref().is_some_and(|p| p.polling_ari),
            };
            self.entries.insert(cert.name.clone(), entry);
        }
    }

    fn evaluate(&self, entry: &mut Entry, now: SystemTime) {
        entry.eval = self.evaluation(
            &entry.cfg,
            entry.failures_seen,
            entry.last_failure_seen,
            now,
        );
    }

    /// Reads `cert`'s files and record; failures this process saw count even when the record
    /// could not be written.
    fn evaluation(
        &self,
        cert: &CertConfig,
        failures_seen: u32,
        last_failure_seen: Option<SystemTime>,
        now: SystemTime,
    ) -> Evaluation {
        let mut rec = self.state.load_cert(&cert.name);
        if failures_seen > rec.consecutive_failures {
            rec.consecutive_failures = failures_seen;
            rec.last_failure = last_failure_seen.map(crate::state::unix);
        }
        status::evaluate(cert, &rec, now)
    }

    fn summary(&self) -> String {
        let next = self
            .entries
            .values()
            .min_by_key(|e| e.eval.decision.at)
            .map(|e| {
                format!(
                    ", next: {} at {} ({})",
                    e.cfg.name,
                    httpdate(e.eval.decision.at),
                    e.eval.decision.reason
                )
            })
            .unwrap_or_default();
        format!("{} certificates{next}", self.entries.len())
    }

    /// The earliest renewal deadline or ARI re-poll time.
    fn next_deadline(&self) -> Option<SystemTime> {
        self.entries
            .values()
            .filter(|e| !e.renewing && !e.polling_ari)
            .flat_map(|e| [Some(e.eval.decision.at), e.eval.ari_poll])
            .flatten()
            .chain(self.governance.next_deadline())
            .min()
    }

    /// Asks the CA's ARI about every certificate whose re-poll time has come (on a spawned
    /// task); returns whether any such poll started.
    fn start_ari_polls(&mut self, now: SystemTime) -> bool {
        let names: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, e)| {
                !e.renewing && !e.polling_ari && e.eval.ari_poll.is_some_and(|t| t <= now)
            })
            .map(|(n, _)| n.clone())
            .collect();
        if names.is_empty() {
            return false;
        }
        let mut certs = Vec::new();
        for name in &names {
            if let Some(e) = self.entries.get_mut(name) {
                e.polling_ari = true;
                certs.push(e.cfg.clone());
            }
        }
        let renewer = self.renewer.clone();
        let cas = self.config.cas.clone();
        let events = self.events.clone();
        tokio::spawn(async move {
            let certs = certs.into_iter().map(|c| (c, None)).collect();
            renewer.refresh_ari_all(certs, &cas).await;
            let _ = events.send(Event::AriDone(names));
        });
        true
    }

    /// Starts one batch with every certificate that is due and not already renewing; first
    /// asks ARI about those whose re-poll time has come (their renewal waits for the answer).
    fn start_due(&mut self) {
        let now = SystemTime::now();
        self.start_ari_polls(now);
        let due: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, e)| !e.renewing && !e.polling_ari && e.eval.decision.is_due(now))
            .map(|(n, _)| n.clone())
            .collect();
        for name in &due {
            if let Some(e) = self.entries.get(name) {
                tracing::info!(cert = %name, reason = %e.eval.decision.reason, "renewal due");
            }
        }
        self.start_batch(due, false, None);
    }

    fn start_batch(
        &mut self,
        names: Vec<String>,
        dry_run: bool,
        reply: Option<(oneshot::Sender<Response>, Vec<RenewResult>)>,
    ) {
        let mut certs = Vec::new();
        for name in &names {
            if let Some(e) = self.entries.get_mut(name) {
                e.renewing = true;
                certs.push(e.cfg.clone());
            }
        }
        if certs.is_empty() {
            if let Some((tx, results)) = reply {
                let _ = tx.send(Response::Renew { results });
            }
            return;
        }
        self.batches_in_flight += 1;
        let renewer = self.renewer.clone();
        let cas = self.config.cas.clone();
        let events = self.events.clone();
        tokio::spawn(async move {
            let report = renewer.run_batch(certs, &cas, dry_run).await;
            let _ = events.send(Event::BatchDone {
                report,
                dry_run,
                reply,
            });
        });
    }

    fn on_event(&mut self, ev: Event) {
        match ev {
            Event::AriDone(names) => {
                let now = SystemTime::now();
                for name in names {
                    let Some(mut e) = self.entries.remove(&name) else {
                        continue;
                    };
                    e.polling_ari = false;
                    self.evaluate(&mut e, now);
                    // A record that could not be written must not make the loop spin.
                    if e.eval.ari_poll.is_some_and(|t| t <= now) {
                        e.eval.ari_poll = Some(now + crate::schedule::ARI_POLL_DEFAULT);
                    }
                    self.entries.insert(name, e);
                }
                self.start_due();
            }
            Event::Files(paths) => {
                let mut hit = false;
                for p in paths {
                    if let Some(names) = self.targets.get(&p) {
                        self.dirty.extend(names.iter().cloned());
                        hit = true;
                    }
                    if self.governance.is_discovery_path(&p) {
                        self.discovery_dirty = true;
                        hit = true;
                    }
                }
                if hit && self.debounce.is_none() {
                    self.debounce = Some(tokio::time::Instant::now() + DEBOUNCE);
                }
            }
            Event::BatchDone {
                report,
                dry_run,
                reply,
            } => {
                self.batches_in_flight -= 1;
                let now = SystemTime::now();
                for c in &report.certificates {
                    let failed_reload = report
                        .reloads
                        .iter()
                        .any(|r| r.result.is_err() && r.certificates.contains(&c.name));
                    let Some(mut e) = self.entries.remove(&c.name) else {
                        continue;
                    };
                    e.renewing = false;
                    if !dry_run {
                        if c.result.is_err() || failed_reload {
                            e.failures_seen += 1;
                            e.last_failure_seen = Some(now);
                        } else {
                            e.failures_seen = 0;
                            e.last_failure_seen = None;
                        }
                    }
                    if !dry_run {
                        self.governance
                            .metrics()
                            .renewal(&c.name, c.result.is_ok() && !failed_reload);
                    }
                    self.evaluate(&mut e, now);
                    tracing::info!(cert = %c.name, next = %httpdate(e.eval.decision.at),
                        reason = %e.eval.decision.reason, "next renewal");
                    self.entries.insert(c.name.clone(), e);
                }
                for r in &report.reloads {
                    self.governance.metrics().reload(r.result.is_ok());
                }
                self.refresh_governance();
                if let Some((tx, skipped)) = reply {
                    let _ = tx.send(Response::Renew {
                        results: results(skipped, &report, dry_run),
                    });
                }
            }
        }
    }

    fn reevaluate_dirty(&mut self) {
        self.debounce = None;
        let now = SystemTime::now();
        for name in std::mem::take(&mut self.dirty) {
            let Some(mut e) = self.entries.remove(&name) else {
                continue;
            };
            if !e.renewing {
                self.evaluate(&mut e, now);
                if let Deployed::Unusable(why) = &e.eval.deployed {
                    tracing::warn!(cert = %name, problem = %why, "deployed files changed and are not usable");
                }
            }
            self.entries.insert(name, e);
        }
        if std::mem::take(&mut self.discovery_dirty) {
            self.governance.rescan();
        }
        self.refresh_governance();
    }

    fn on_control(&mut self, req: Request, reply: oneshot::Sender<Response>) {
        match req {
            Request::Status { names } => {
                let unknown: Vec<&String> = names
                    .iter()
                    .filter(|n| !self.entries.contains_key(*n))
                    .collect();
                let rsp = if !unknown.is_empty() {
                    Response::Error {
                        message: format!(
                            "no certificate named {}",
                            unknown
                                .iter()
                                .map(|s| s.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    }
                } else {
                    Response::Status {
                        certificates: self
                            .entries
                            .values()
                            .filter(|e| names.is_empty() || names.contains(&e.cfg.name))
                            .map(|e| {
                                status::row(
                                    &e.cfg,
                                    &self.state.load_cert(&e.cfg.name),
                                    &e.eval,
                                    e.renewing,
                                )
                            })
                            .collect(),
                    }
                };
                let _ = reply.send(rsp);
            }
            Request::Renew {
                names,
                all,
                force,
                dry_run,
            } => {
                let selected = match select(&self.config, &names, all) {
                    Ok(s) => s.into_iter().map(|c| c.name.clone()).collect::<Vec<_>>(),
                    Err(message) => {
                        let _ = reply.send(Response::Error { message });
                        return;
                    }
                };
                let now = SystemTime::now();
                let mut skipped = Vec::new();
                let mut run = Vec::new();
                for name in selected {
                    let Some(e) = self.entries.get(&name) else {
                        continue;
                    };
                    if e.renewing {
                        skipped.push(skip(&name, "a renewal is already under way".into()));
                    } else if let Some(why) = skip_reason(&e.eval, force, now) {
                        skipped.push(skip(&name, why));
                    } else {
                        run.push(name);
                    }
                }
                self.start_batch(run, dry_run, Some((reply, skipped)));
            }
            Request::Revoke { name, reason } => self.revoke(name, reason, reply),
        }
    }

    /// A revoke request: revoke at the CA, then the replacement goes through a normal batch
    /// (journal, reload, verify) on a spawned task, like a forced renewal.
    fn revoke(&mut self, name: String, reason: Option<String>, reply: oneshot::Sender<Response>) {
        let Some(e) = self.entries.get_mut(&name) else {
            let _ = reply.send(Response::Error {
                message: format!("no certificate named {name}"),
            });
            return;
        };
        if e.renewing {
            let _ = reply.send(Response::Error {
                message: format!("{name}: a renewal is under way; try again when it is done"),
            });
            return;
        }
        e.renewing = true;
        let cert = e.cfg.clone();
        self.batches_in_flight += 1;
        let renewer = self.renewer.clone();
        let cas = self.config.cas.clone();
        let events = self.events.clone();
        tokio::spawn(async move {
            let (report, results) = match renewer.revoke(&cert, &cas, reason.as_deref()).await {
                Ok(serial) => {
                    let report = renewer.run_batch(vec![cert], &cas, false).await;
                    let results = revoked_results(&serial, &report);
                    (report, results)
                }
                Err(message) => {
                    let report = BatchReport {
                        certificates: vec![crate::renew::CertOutcome {
                            name: cert.name.clone(),
                            result: Err(format!("revocation failed: {message}")),
                        }],
                        reloads: Vec::new(),
                    };
                    let results = results(Vec::new(), &report, false);
                    (report, results)
                }
            };
            let _ = reply.send(Response::Renew { results });
            let _ = events.send(Event::BatchDone {
                report,
                dry_run: false,
                reply: None,
            });
        });
    }

    /// SIGHUP: re-read the configuration. A configuration with errors is refused as a whole
    /// and the daemon keeps the one it has; renewals under way continue either way.
    fn reload(&mut self) {
        match config::load(&self.config_path) {
            Err(e) => {
                for p in &e.problems {
                    tracing::error!("{p}");
                }
                tracing::error!("configuration not reloaded; keeping the previous one");
            }
            Ok(new) if !crate::deploy::clashing_targets(&new).is_empty() => {
                for p in crate::deploy::clashing_targets(&new) {
                    tracing::error!("{p}");
                }
                tracing::error!("configuration not reloaded; keeping the previous one");
            }
            Ok(new) => {
                if new.state_dir != self.config.state_dir
                    || new.control_socket != self.config.control_socket
                    || new.max_concurrent_renewals != self.config.max_concurrent_renewals
                {
                    tracing::warn!("state_dir, control_socket and max_concurrent_renewals take effect at the next restart");
                }
                let keep = (
                    self.config.state_dir.clone(),
                    self.config.control_socket.clone(),
                    self.config.max_concurrent_renewals,
                );
                crate::logging::set_level(new.log_level.as_deref());
                self.config = new;
                (
                    self.config.state_dir,
                    self.config.control_socket,
                    self.config.max_concurrent_renewals,
                ) = keep;
                self.apply_config();
                self.governance.configure(&self.config);
                self.watch_discovery();
                self.governance.rescan();
                self.refresh_governance();
                tracing::info!("configuration reloaded; {}", self.summary());
            }
        }
    }
}

// --- Governance: inventory, alerts, metrics (src/inventory) ----------------------------

impl Daemon {
    /// Hands the managed certificates as evaluated now to the inventory, which updates the
    /// metrics, sends due alerts and sets its next deadline.
    fn refresh_governance(&mut self) {
        let now = SystemTime::now();
        let managed: Vec<crate::inventory::Managed> = self
            .entries
            .values()
            .map(|e| {
                let mut rec = self.state.load_cert(&e.cfg.name);
                rec.consecutive_failures = rec.consecutive_failures.max(e.failures_seen);
                status::managed(&e.cfg, &rec, &e.eval)
            })
            .collect();
        self.governance.refresh(&managed, now);
    }

    /// Watches the discovery paths recursively (events are debounced like deployed files').
    fn watch_discovery(&mut self) {
        let roots = self.governance.discovery_roots();
        if let Some(w) = self.watcher.as_mut() {
            for gone in self.discovery_watched.iter().filter(|r| !roots.contains(r)) {
                let _ = w.unwatch(gone);
            }
            for new in roots.iter().filter(|r| !self.discovery_watched.contains(r)) {
                if let Err(e) = w.watch(new, RecursiveMode::Recursive) {
                    tracing::warn!(dir = %new.display(), error = %e,
                        "cannot watch discovery path; it is rescanned only on SIGHUP");
                }
            }
        }
        self.discovery_watched = roots;
    }
}

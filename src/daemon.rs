//! The daemon's event loop.
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

use crate::config::{self, CaConfig, CertConfig, Config, Diagnosis};
use crate::control::{self, Incoming, RenewResult, Request, Response};
use crate::renew::{httpdate, BatchReport, Renewer};
use crate::requests::{refusal, results, revoked_results, select, skip};
use crate::schedule::Deployed;
use crate::session::Session;
use crate::status::{self, Evaluation};

/// File events are gathered for this long before the affected certificates are re-read, so
/// an editor's or a deployment's burst of events causes one evaluation.
const DEBOUNCE: Duration = Duration::from_millis(250);
/// How long a stopping daemon waits for renewals under way before abandoning them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// At most this many directories under the discovery paths are watched (one inotify watch
/// each); beyond it, a warning, and changes there are seen at the next SIGHUP.
pub const MAX_DISCOVERY_WATCHES: usize = 8192;

enum Event {
    Files(Vec<PathBuf>),
    /// The CA's ARI was asked about these certificates; their records are updated.
    AriDone(Vec<String>),
    /// Evaluations asked by [`Daemon::request_evaluations`]; `None` when the blocking task
    /// failed (the previous evaluation stays).
    Evaluated {
        results: Vec<(String, u64, Option<Evaluation>)>,
        after: After,
    },
    /// The inventory collected on a blocking thread (`None`: the task failed).
    Collected(Option<Box<(crate::inventory::Inventory, SystemTime)>>),
    /// SIGHUP: the configuration read again and evaluated, on a blocking thread.
    Reloaded(Box<Result<(Loaded, Diagnosis), config::ConfigError>>),
    /// A discovery scan finished on its blocking thread.
    ScanDone {
        scan: crate::inventory::discovery::Scan,
        elapsed: Duration,
    },
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
    /// Generation of the last evaluation asked for, and of the last one applied: the files
    /// are read on a blocking thread ([`Event::Evaluated`]); until the last one asked for is
    /// applied no renewal or ARI poll starts, and an older result never replaces a newer one.
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
enum Count {
    Renewal(String, bool),
    Reload(bool),
}

/// What asked for an evaluation, for what to do once it is applied.
enum After {
    /// A file event on a deployed file.
    Files,
    /// An ARI poll ended (then the due renewals start).
    Ari,
    /// A batch ended; the control client waiting for it is answered once the new files
    /// are read (so a `status` right after shows them).
    Batch {
        reply: Option<(oneshot::Sender<Response>, Response)>,
        /// Its counters, counted with the inventory collected after these evaluations.
        counts: Vec<Count>,
    },
}

/// One evaluation to make on a blocking thread: name, generation, configuration, and the
/// failures this process saw.
type EvalJob = (String, u64, CertConfig, u32, Option<SystemTime>);

/// Reads each job's record and files (blocking).
fn evaluate_jobs(
    renewer: &Renewer,
    cas: &BTreeMap<String, CaConfig>,
    jobs: Vec<EvalJob>,
) -> Vec<(String, u64, Evaluation)> {
    let now = SystemTime::now();
    jobs.into_iter()
        .map(|(name, gen, cfg, failures_seen, last_failure_seen)| {
            let ev = evaluation(renewer, cas, &cfg, failures_seen, last_failure_seen, now);
            (name, gen, ev)
        })
        .collect()
}

/// Reads `cert`'s files and record (the renewer's: one that could not be written is kept in
/// memory); failures this process saw count even when the record could not be written;
/// `cas` says whether ARI advice may be used. Blocking.
fn evaluation(
    renewer: &Renewer,
    cas: &BTreeMap<String, CaConfig>,
    cert: &CertConfig,
    failures_seen: u32,
    last_failure_seen: Option<SystemTime>,
    now: SystemTime,
) -> Evaluation {
    let mut rec = renewer.record(&cert.name);
    if failures_seen > rec.consecutive_failures {
        rec.consecutive_failures = failures_seen;
        rec.last_failure = last_failure_seen.map(crate::state::unix);
    }
    status::evaluate(cert, &rec, cas, now)
}

/// A configuration (re)read and every certificate of it evaluated, on a blocking thread.
struct Loaded {
    config: Config,
    evals: HashMap<String, Evaluation>,
}

/// Evaluates every certificate of `config` with the failures this process saw (`seen`).
/// Blocking.
fn evaluate_config(
    config: Config,
    renewer: &Renewer,
    seen: &HashMap<String, (u32, Option<SystemTime>)>,
) -> Loaded {
    let now = SystemTime::now();
    let evals = config
        .certificates
        .iter()
        .map(|c| {
            let (f, l) = seen.get(&c.name).copied().unwrap_or((0, None));
            let ev = evaluation(renewer, &config.cas, c, f, l, now);
            (c.name.clone(), ev)
        })
        .collect();
    Loaded { config, evals }
}

struct Daemon {
    config_path: PathBuf,
    config: Config,
    renewer: Arc<Renewer>,
    entries: BTreeMap<String, Entry>,
    /// Certificates that cannot be renewed as configured, and why ([`status::diagnose`] at
    /// start and on SIGHUP).
    not_renewable: BTreeMap<String, String>,
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
    /// Paths under the discovery roots that changed since the last scan began.
    discovery_changed: BTreeSet<PathBuf>,
    /// The next scan must walk every root afresh (start, SIGHUP).
    discovery_full: bool,
    /// A scan runs on a blocking thread; at most one at a time.
    scanning: bool,
    discovery_watch: Arc<std::sync::Mutex<DiscoveryWatch>>,
    /// A SIGHUP's configuration is being read; another SIGHUP came meanwhile.
    reloading: bool,
    reload_again: bool,
    /// The inventory is being collected on a blocking thread; asked again meanwhile.
    collecting: bool,
    collect_again: bool,
    /// Counters waiting for the next collection to start, and for the one under way.
    counts: Vec<Count>,
    counting: Vec<Count>,
}

/// The discovery paths' watches: one non-recursive inotify watch per real directory the
/// scan walks (never one reached through a symlink), at most [`MAX_DISCOVERY_WATCHES`]. Its
/// own watcher, so that discovery's watches and the deployed files' never replace each
/// other's.
struct DiscoveryWatch {
    watcher: Option<notify::RecommendedWatcher>,
    watched: HashSet<PathBuf>,
    /// At most this many watches ([`MAX_DISCOVERY_WATCHES`]; lower in tests).
    cap: usize,
    /// The cap was reached and said so (once until the next full scan).
    capped: bool,
}

impl DiscoveryWatch {
    /// Called by the scan before it reads `dir`.
    fn add(&mut self, dir: &Path) {
        if self.watched.contains(dir) {
            return;
        }
        let Some(w) = self.watcher.as_mut() else {
            return;
        };
        if self.watched.len() >= self.cap {
            if !self.capped {
                self.capped = true;
                tracing::warn!(dir = %dir.display(), limit = self.cap,
                    "too many directories under the discovery paths to watch them all; \
                     changes in the others are seen at the next SIGHUP");
            }
            return;
        }
        match w.watch(dir, RecursiveMode::NonRecursive) {
            Ok(()) => {
                self.watched.insert(dir.to_path_buf());
            }
            Err(e) => tracing::warn!(dir = %dir.display(), error = %e,
                "cannot watch a discovery directory; changes in it are seen at the next SIGHUP"),
        }
    }

    fn remove(&mut self, dir: &Path) {
        if self.watched.remove(dir) {
            if let Some(w) = self.watcher.as_mut() {
                // A deleted directory's watch is already gone.
                let _ = w.unwatch(dir);
            }
        }
    }

    fn clear(&mut self) {
        for dir in std::mem::take(&mut self.watched) {
            if let Some(w) = self.watcher.as_mut() {
                let _ = w.unwatch(&dir);
            }
        }
        self.capped = false;
    }

    /// How many directories are watched now.
    fn count(&self) -> usize {
        self.watched.len()
    }
}

/// `renewd run`: the daemon, until SIGTERM or SIGINT. `diagnosis` is
/// [`status::diagnose`]'s verdict on `config` (without errors); it is logged, and its
/// certificates that cannot be renewed are shown so and left alone.
pub async fn run(config_path: &Path, config: Config, diagnosis: Diagnosis) -> Result<(), String> {
    status::log_diagnosis(&diagnosis);
    // The lock is held until `session` is dropped, at the end.
    let session = Session::open(&config).map_err(|e| e.to_string())?;
    let listener = control::bind(&config.control_socket).await?;
    let (ctl_tx, mut ctl_rx) = mpsc::channel::<Incoming>(16);
    let (stop_tx, stop_rx) = watch::channel(false);
    let server = tokio::spawn(control::serve(listener, ctl_tx, stop_rx));

    // Before anything else looks at the deployed files: finish or undo what a crash
    // interrupted.
    session.recover(&config).await;
    let renewer = session.renewer.clone();

    let (ev_tx, mut ev_rx) = mpsc::unbounded_channel();
    let governance = crate::inventory::Live::start(&config).await?;
    let mut d = Daemon {
        config_path: config_path.to_path_buf(),
        renewer,
        config,
        entries: BTreeMap::new(),
        not_renewable: diagnosis.not_renewable,
        targets: HashMap::new(),
        watched_dirs: HashSet::new(),
        watcher: None,
        events: ev_tx,
        dirty: BTreeSet::new(),
        debounce: None,
        batches_in_flight: 0,
        wakeups: 0,
        governance,
        discovery_changed: BTreeSet::new(),
        discovery_full: true,
        scanning: false,
        discovery_watch: Arc::new(std::sync::Mutex::new(DiscoveryWatch {
            watcher: None,
            watched: HashSet::new(),
            cap: MAX_DISCOVERY_WATCHES,
            capped: false,
        })),
        reloading: false,
        reload_again: false,
        collecting: false,
        collect_again: false,
        counts: Vec::new(),
        counting: Vec::new(),
    };
    d.watcher = Some(d.new_watcher()?);
    d.lock_discovery_watch().watcher = Some(d.new_watcher()?);
    // Watches first, then the files are read (off the event loop's thread): a change in
    // between is then an event.
    d.watch_targets();
    let loaded = {
        let (config, renewer) = (d.config.clone(), d.renewer.clone());
        tokio::task::spawn_blocking(move || evaluate_config(config, &renewer, &HashMap::new()))
            .await
            .map_err(|e| format!("cannot read the certificates' files: {e}"))?
    };
    d.rebuild_entries(loaded.evals);
    // The first scan is awaited (off the event loop's thread) so the first inventory,
    // metrics and alerts include what it finds.
    if let Some(job) = d.scan_job() {
        match tokio::task::spawn_blocking(job).await {
            Ok((scan, elapsed)) => d.governance.set_scan(scan, elapsed),
            Err(e) => tracing::error!(error = %e, "discovery scan failed"),
        }
        d.scanning = false;
    }
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
                // READY=1 follows once the configuration is read (`apply_reload`).
                d.reload();
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
                Some(ev) = ev_rx.recv() => if matches!(ev, Event::BatchDone { .. }
                    | Event::Evaluated { after: After::Batch { .. }, .. }) {
                    d.on_event(ev)
                },
            }
        }
    }
    d.governance.stop();
    let _ = std::fs::remove_file(&d.config.control_socket);
    tracing::info!("stopped");
    Ok(())
}

/// Logs, once per change, that a certificate's `renew_before` is clamped to its lifetime.
fn warn_clamped(name: &str, eval: &Evaluation) {
    if let Some(w) = &eval.clamp_warning {
        tracing::warn!(cert = %name, "{name}: {w}");
    }
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

/// Tells systemd, when it supervises us, why `run` refuses to start: `STATUS=` with the first
/// problem (`FILE:LINE:COL: message`) and how many more there are, so `systemctl status
/// renewd` shows it beside the unit's failure (exit 78). `problems` is the refused
/// configuration's text, one problem per line. Does nothing outside systemd.
pub fn tell_config_refused(problems: &str) {
    let mut lines = problems.lines().filter(|l| !l.trim().is_empty());
    let first = lines.next().unwrap_or("the configuration cannot be used");
    let more = lines.count();
    let status = if more == 0 {
        format!("bad configuration: {first}")
    } else {
        format!("bad configuration: {first} (and {more} more: renewd check)")
    };
    tell_systemd(&[NotifyState::Status(&status)]);
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

    /// Sets the deployed files' table and watches from `self.config`; returns the
    /// directories watched now that were not before (their files must be read after this).
    fn watch_targets(&mut self) -> HashSet<PathBuf> {
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
        let new = dirs.difference(&self.watched_dirs).cloned().collect();
        self.watched_dirs = dirs;
        new
    }

    /// Rebuilds the certificate table from `self.config` and `evals` (read on a blocking
    /// thread), keeping what is known about certificates that are still configured.
    fn rebuild_entries(&mut self, mut evals: HashMap<String, Evaluation>) {
        let mut old = std::mem::take(&mut self.entries);
        for cert in &self.config.certificates {
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
    fn failures_seen(&self) -> HashMap<String, (u32, Option<SystemTime>)> {
        self.entries
            .iter()
            .map(|(n, e)| (n.clone(), (e.failures_seen, e.last_failure_seen)))
            .collect()
    }

    /// Reads the files and records of `names` again on a blocking thread; the result comes
    /// back as [`Event::Evaluated`]. Until then nothing starts for them.
    fn request_evaluations(&mut self, names: impl IntoIterator<Item = String>, after: After) {
        let mut jobs: Vec<EvalJob> = Vec::new();
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
        if jobs.is_empty() {
            if let After::Batch { reply, counts } = after {
                if let Some((tx, rsp)) = reply {
                    let _ = tx.send(rsp);
                }
                self.counts.extend(counts);
                self.refresh_governance();
            }
            return;
        }
        let asked: Vec<(String, u64)> = jobs.iter().map(|j| (j.0.clone(), j.1)).collect();
        let renewer = self.renewer.clone();
        let cas = self.config.cas.clone();
        let events = self.events.clone();
        tokio::spawn(async move {
            let job = move || evaluate_jobs(&renewer, &cas, jobs);
            let results = match tokio::task::spawn_blocking(job).await {
                Ok(done) => done
                    .into_iter()
                    .map(|(n, g, ev)| (n, g, Some(ev)))
                    .collect(),
                Err(e) => {
                    tracing::error!(error = %e, "reading certificates' files failed");
                    asked.into_iter().map(|(n, g)| (n, g, None)).collect()
                }
            };
            let _ = events.send(Event::Evaluated { results, after });
        });
    }

    /// Applies evaluations read on a blocking thread (one older than the last applied is
    /// dropped).
    fn apply_evaluations(
        &mut self,
        results: Vec<(String, u64, Option<Evaluation>)>,
        mut after: After,
    ) {
        let now = SystemTime::now();
        for (name, gen, ev) in results {
            let Some(e) = self.entries.get_mut(&name) else {
                continue;
            };
            // Results may arrive out of order: only a newer one than applied counts.
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
            match &after {
                After::Batch { .. } => {
                    tracing::info!(cert = %name, next = %httpdate(e.eval.decision.at),
                        reason = %e.eval.decision.reason, "{name}: next renewal at {} ({})",
                        httpdate(e.eval.decision.at), e.eval.decision.reason)
                }
                After::Files if !e.renewing => {
                    if let Deployed::Unusable(why) = &e.eval.deployed {
                        tracing::warn!(cert = %name, error = %why,
                            "{name}: deployed files changed and are not usable: {why}");
                    }
                }
                _ => {}
            }
        }
        if let After::Batch { counts, .. } = &mut after {
            self.counts.append(counts);
        }
        self.refresh_governance();
        match after {
            After::Ari => self.start_due(),
            After::Batch {
                reply: Some((tx, rsp)),
                ..
            } => {
                let _ = tx.send(rsp);
            }
            _ => {}
        }
    }

    fn summary(&self) -> String {
        let next = self
            .entries
            .values()
            .filter(|e| e.eval.not_renewable.is_none())
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
        let blocked = match self.not_renewable.len() {
            0 => String::new(),
            n => format!(", {n} not renewable as configured"),
        };
        format!("{} certificates{next}{blocked}", self.entries.len())
    }

    /// The earliest renewal deadline or ARI re-poll time.
    fn next_deadline(&self) -> Option<SystemTime> {
        self.entries
            .values()
            .filter(|e| !e.busy())
            .flat_map(|e| {
                // A certificate that cannot be renewed waits for SIGHUP, not for its deadline.
                let due = e.eval.decision.at;
                [
                    e.eval.not_renewable.is_none().then_some(due),
                    e.eval.ari_poll,
                ]
            })
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
            .filter(|(_, e)| !e.busy() && e.eval.ari_poll.is_some_and(|t| t <= now))
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
            .filter(|(_, e)| !e.busy() && e.eval.should_renew(now))
            .map(|(n, _)| n.clone())
            .collect();
        for name in &due {
            if let Some(e) = self.entries.get(name) {
                crate::logging::renewal_due(name, &e.eval.decision.reason);
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
                for name in &names {
                    if let Some(e) = self.entries.get_mut(name) {
                        e.polling_ari = false;
                        e.ari_fallback = Some(now + crate::schedule::ARI_POLL_DEFAULT);
                    }
                }
                // The due renewals start once the records are read again; the CA's advice may
                // start or end an alert condition (ari_early_replacement), which the
                // collection after the evaluations looks at.
                self.request_evaluations(names, After::Ari);
            }
            Event::Evaluated { results, after } => self.apply_evaluations(results, after),
            Event::Reloaded(loaded) => self.apply_reload(*loaded),
            Event::Collected(collected) => self.apply_collected(collected),
            Event::ScanDone { scan, elapsed } => {
                self.scanning = false;
                self.governance.set_scan(scan, elapsed);
                self.refresh_governance();
                // Changes that arrived during the scan.
                if !self.discovery_changed.is_empty() || self.discovery_full {
                    self.start_scan();
                }
            }
            Event::Files(paths) => {
                let mut hit = false;
                for p in paths {
                    if let Some(names) = self.targets.get(&p) {
                        self.dirty.extend(names.iter().cloned());
                        hit = true;
                    }
                    if self.governance.is_discovery_path(&p) {
                        self.discovery_changed.insert(p);
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
                        let ok = c.result.is_ok() && !failed_reload;
                        counts.push(Count::Renewal(c.name.clone(), ok));
                    }
                }
                for r in &report.reloads {
                    counts.push(Count::Reload(r.result.is_ok()));
                }
                let reply = reply.map(|(tx, skipped)| {
                    let rsp = Response::Renew {
                        results: results(skipped, &report, dry_run),
                    };
                    (tx, rsp)
                });
                let names = report.certificates.iter().map(|c| c.name.clone());
                self.request_evaluations(names, After::Batch { reply, counts });
            }
        }
    }

    fn reevaluate_dirty(&mut self) {
        self.debounce = None;
        let dirty: Vec<String> = std::mem::take(&mut self.dirty)
            .into_iter()
            .filter(|n| self.entries.get(n).is_some_and(|e| !e.renewing))
            .collect();
        self.request_evaluations(dirty, After::Files);
        if !self.discovery_changed.is_empty() {
            self.start_scan();
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
                if !unknown.is_empty() {
                    let _ = reply.send(Response::Error {
                        message: format!(
                            "no certificate named {}",
                            unknown
                                .iter()
                                .map(|s| s.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    });
                    return;
                }
                // The records are read on a blocking thread, not on the loop.
                let rows: Vec<(CertConfig, Evaluation, bool)> = self
                    .entries
                    .values()
                    .filter(|e| names.is_empty() || names.contains(&e.cfg.name))
                    .map(|e| (e.cfg.clone(), e.eval.clone(), e.renewing))
                    .collect();
                let renewer = self.renewer.clone();
                tokio::spawn(async move {
                    let job = move || {
                        rows.iter()
                            .map(|(c, ev, renewing)| {
                                let mut row =
                                    status::row(c, &renewer.record(&c.name), ev, *renewing);
                                row.warnings.extend(renewer.state_problem().map(|p| {
                                    format!(
                                        "the state directory is not writable ({p}); what \
                                         happened is kept in memory only"
                                    )
                                }));
                                row
                            })
                            .collect()
                    };
                    let rsp = match tokio::task::spawn_blocking(job).await {
                        Ok(certificates) => Response::Status { certificates },
                        Err(e) => Response::Error {
                            message: format!("cannot read the state records: {e}"),
                        },
                    };
                    let _ = reply.send(rsp);
                });
            }
            Request::Renew {
                names,
                all,
                force,
                dry_run,
            } => {
                let selected = match select(&self.config, &names, all) {
                    Ok(s) => s.into_iter().map(|c| c.name.clone()).collect::<Vec<_>>(),
                    Err(e) => {
                        let _ = reply.send(Response::Error {
                            message: e.to_string(),
                        });
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
                    } else if let Some(result) = refusal(&name, &e.eval, force, now) {
                        skipped.push(result);
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
        if let Some(why) = &e.eval.not_renewable {
            let _ = reply.send(Response::Error {
                message: format!(
                    "{name}: not revoked: no replacement could be deployed as configured: {why}"
                ),
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

    /// SIGHUP: re-read the configuration and the certificates' files on a blocking thread
    /// ([`Event::Reloaded`]; one at a time, a SIGHUP meanwhile reads again after it).
    fn reload(&mut self) {
        if self.reloading {
            self.reload_again = true;
            return;
        }
        self.reloading = true;
        let path = self.config_path.clone();
        let renewer = self.renewer.clone();
        let seen = self.failures_seen();
        let events = self.events.clone();
        tokio::spawn(async move {
            // Judged by the same rule as `check` and `run` ([`status::diagnose`], which looks
            // at the machine: blocking too).
            let job = move || {
                config::load(&path).and_then(|c| {
                    // Two certificates writing one file refuse the whole configuration, as
                    // `run` does at start.
                    let clashing = crate::deploy::clashing_targets(&c);
                    if !clashing.is_empty() {
                        return Err(config::ConfigError { problems: clashing });
                    }
                    let diagnosis = status::diagnose(&c);
                    match diagnosis.errors() {
                        Some(e) => Err(e),
                        None => Ok((evaluate_config(c, &renewer, &seen), diagnosis)),
                    }
                })
            };
            match tokio::task::spawn_blocking(job).await {
                Ok(loaded) => {
                    let _ = events.send(Event::Reloaded(Box::new(loaded)));
                }
                Err(e) => {
                    tracing::error!(error = %e, "configuration not reloaded; keeping the previous one");
                    let _ = events.send(Event::Reloaded(Box::new(Err(config::ConfigError {
                        problems: Vec::new(),
                    }))));
                }
            }
        });
    }

    /// A configuration read after SIGHUP. One with errors is refused as a whole and the
    /// daemon keeps the one it has; warnings are logged and only their certificates are
    /// left alone; renewals under way continue either way.
    fn apply_reload(&mut self, loaded: Result<(Loaded, Diagnosis), config::ConfigError>) {
        self.reloading = false;
        match loaded {
            Err(e) => {
                for p in &e.problems {
                    tracing::error!("{p}");
                }
                tracing::error!("configuration not reloaded; keeping the previous one");
            }
            Ok((Loaded { config: new, evals }, diagnosis)) => {
                status::log_diagnosis(&diagnosis);
                self.not_renewable = diagnosis.not_renewable;
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
                let new_dirs = self.watch_targets();
                self.rebuild_entries(evals);
                // Files in directories watched only now were read before their watch: read
                // them again, so a change in between is not lost.
                let reread: Vec<String> = self
                    .entries
                    .values()
                    .filter(|e| {
                        e.cfg
                            .files
                            .iter()
                            .any(|(_, p)| p.parent().is_some_and(|d| new_dirs.contains(d)))
                    })
                    .map(|e| e.cfg.name.clone())
                    .collect();
                self.request_evaluations(reread, After::Files);
                self.governance.configure(&self.config);
                self.discovery_full = true;
                self.start_scan();
                self.refresh_governance();
                tracing::info!("configuration reloaded; {}", self.summary());
            }
        }
        tell_systemd(&[NotifyState::Ready]);
        if std::mem::take(&mut self.reload_again) {
            self.reload();
        }
    }
}

// --- Governance: inventory, alerts, metrics (src/inventory) ----------------------------

impl Daemon {
    /// Hands the managed certificates as evaluated now to the inventory, collected on a
    /// blocking thread (it reads the exceptions' and certificates' files); then
    /// [`Daemon::apply_collected`] updates the metrics, sends due alerts and sets the next
    /// alert deadline. One collection at a time; asked meanwhile, another follows it.
    fn refresh_governance(&mut self) {
        if self.collecting {
            self.collect_again = true;
            return;
        }
        self.collecting = true;
        self.counting = std::mem::take(&mut self.counts);
        let entries: Vec<(CertConfig, Evaluation, u32)> = self
            .entries
            .values()
            .map(|e| (e.cfg.clone(), e.eval.clone(), e.failures_seen))
            .collect();
        let renewer = self.renewer.clone();
        let collect = self.governance.collector();
        let metrics = self.governance.metrics().clone();
        let cas: Vec<String> = self.config.cas.keys().cloned().collect();
        let events = self.events.clone();
        tokio::spawn(async move {
            let job = move || {
                let now = SystemTime::now();
                let managed: Vec<crate::inventory::Managed> = entries
                    .iter()
                    .map(|(cfg, eval, failures_seen)| {
                        // The renewer's record: one the disk could not take is kept in memory.
                        let mut rec = renewer.record(&cfg.name);
                        rec.consecutive_failures = rec.consecutive_failures.max(*failures_seen);
                        status::managed(cfg, &rec, eval)
                    })
                    .collect();
                // Whether each CA is paused (Retry-After) is in its pause file.
                metrics.set_ca_paused(cas.iter().map(|ca| {
                    let pause = crate::acme::pause_of(ca, &renewer.state().account_path(ca));
                    (ca.as_str(), pause.is_some())
                }));
                (collect(&managed, now), now)
            };
            let collected = match tokio::task::spawn_blocking(job).await {
                Ok(done) => Some(done),
                Err(e) => {
                    tracing::error!(error = %e, "collecting the inventory failed");
                    None
                }
            };
            let _ = events.send(Event::Collected(collected.map(Box::new)));
        });
    }

    /// An inventory collected on a blocking thread: metrics, alerts, and the next alert
    /// deadline follow from it.
    fn apply_collected(
        &mut self,
        collected: Option<Box<(crate::inventory::Inventory, SystemTime)>>,
    ) {
        self.collecting = false;
        if let Some(done) = collected {
            let (inv, now) = *done;
            self.governance.apply(inv, now);
        }
        // Gauges first: a scrape that sees a counter also sees the state after it.
        for count in std::mem::take(&mut self.counting) {
            match count {
                Count::Renewal(name, ok) => self.governance.metrics().renewal(&name, ok),
                Count::Reload(ok) => self.governance.metrics().reload(ok),
            }
        }
        if std::mem::take(&mut self.collect_again) {
            self.refresh_governance();
        }
    }

    fn lock_discovery_watch(&self) -> std::sync::MutexGuard<'_, DiscoveryWatch> {
        self.discovery_watch
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Starts a discovery scan on a blocking thread unless one runs (its end starts the
    /// next one if more changed meanwhile); it ends in [`Event::ScanDone`].
    fn start_scan(&mut self) {
        if self.scanning {
            return;
        }
        let Some(job) = self.scan_job() else {
            return;
        };
        let events = self.events.clone();
        tokio::spawn(async move {
            match tokio::task::spawn_blocking(job).await {
                Ok((scan, elapsed)) => {
                    let _ = events.send(Event::ScanDone { scan, elapsed });
                }
                Err(e) => tracing::error!(error = %e, "discovery scan failed"),
            }
        });
    }

    /// The scan to run next, for a blocking thread: the whole of every discovery path after
    /// a start or a SIGHUP (with fresh watches), else only the paths that changed. Each
    /// directory is watched before it is read. `None` when there is nothing to scan.
    fn scan_job(
        &mut self,
    ) -> Option<impl FnOnce() -> (crate::inventory::discovery::Scan, Duration) + Send + 'static>
    {
        let full = std::mem::take(&mut self.discovery_full);
        let changed = std::mem::take(&mut self.discovery_changed);
        if !full && changed.is_empty() {
            return None;
        }
        self.scanning = true;
        let roots = self.governance.discovery_roots();
        let skip = self.governance.discovery_skip();
        let previous = (!full).then(|| self.governance.scan_snapshot());
        let watch = self.discovery_watch.clone();
        Some(move || {
            let started = std::time::Instant::now();
            let lock = || watch.lock().unwrap_or_else(|e| e.into_inner());
            let mut on_dir = |dir: &Path| lock().add(dir);
            let scan = match previous {
                None => {
                    lock().clear();
                    crate::inventory::discovery::scan(&roots, &skip, &mut on_dir)
                }
                Some(mut scan) => {
                    let gone = scan.update(&roots, &skip, &changed, &mut on_dir);
                    let mut w = lock();
                    for dir in gone {
                        w.remove(&dir);
                    }
                    scan
                }
            };
            tracing::debug!(watches = lock().count(), "discovery directories watched");
            (scan, started.elapsed())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Watches stop at the cap (with one warning); removing and clearing give them back.
    #[test]
    fn discovery_watches_are_capped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let watcher =
            notify::recommended_watcher(|_: notify::Result<notify::Event>| {}).expect("watcher");
        let mut w = DiscoveryWatch {
            watcher: Some(watcher),
            watched: HashSet::new(),
            cap: 3,
            capped: false,
        };
        let dirs: Vec<PathBuf> = (0..5).map(|i| dir.path().join(format!("d{i}"))).collect();
        for d in &dirs {
            std::fs::create_dir(d).expect("mkdir");
            w.add(d);
        }
        assert_eq!(w.count(), 3);
        assert!(w.capped);
        w.add(&dirs[0]);
        assert_eq!(w.count(), 3, "a watched directory is not watched twice");
        w.remove(&dirs[0]);
        w.add(&dirs[4]);
        assert!(w.watched.contains(&dirs[4]));
        w.clear();
        assert_eq!(w.count(), 0);
        assert!(!w.capped);
    }
}

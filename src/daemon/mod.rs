//! The daemon: one select loop over the [certificate table](table::Table).
//!
//! The loop sleeps until the earliest renewal deadline, and wakes earlier only for a file
//! event on a deployed file, a control request, a finished batch, or a signal. Nothing
//! polls. Renewals run in batches on spawned tasks, and files are read on blocking threads;
//! the loop itself never blocks on the network or the disk, so `status` answers while a
//! renewal is under way.
//!
//! Its parts: [`table`] (the per-certificate bookkeeping, pure), [`watch`] (the inotify
//! watches), [`answers`] (the control protocol's requests), [`reload`] (SIGHUP),
//! [`governance`] (inventory, alerts, metrics, discovery scans), [`systemd`] (sd_notify) and
//! [`shutdown`].

mod answers;
mod governance;
mod reload;
mod revocation;
mod shutdown;
mod systemd;
mod table;
mod watch;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, oneshot};

use crate::config::{self, CaConfig, CertConfig, Config, Diagnosis};
use crate::control::{self, Incoming, RenewResult, Response};
use crate::renew::{BatchReport, Renewer};
use crate::session::Session;
use crate::status::{self, Evaluation};
use crate::text::rfc3339;
use governance::Governance;
use reload::Loaded;
use shutdown::{Shutdown, SHUTDOWN_GRACE};
use systemd::Systemd;
use table::{Asked, Count, EvalJob, Evaluated, Table};
use watch::DeployedWatch;

pub(crate) use systemd::tell_config_refused;

/// File events are gathered for this long before the affected certificates are re-read, so
/// an editor's or a deployment's burst of events causes one evaluation.
const DEBOUNCE: Duration = Duration::from_millis(250);

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DaemonError {
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    #[error(transparent)]
    Control(#[from] control::ControlError),
    /// The inventory, alerts or metrics could not start (the metrics listener).
    #[error("{0}")]
    Governance(String),
    #[error("cannot watch files: {0}")]
    Watch(#[source] notify::Error),
    #[error("cannot read the certificates' files: {0}")]
    FirstRead(#[source] tokio::task::JoinError),
    /// A signal handler could not be installed.
    #[error("{0}")]
    Signal(#[source] std::io::Error),
}

enum Event {
    /// The first evaluation of every certificate, made after READY=1 on blocking threads
    /// (an error when the blocking task failed: the daemon stops).
    FirstRead(Box<Result<reload::Loaded, tokio::task::JoinError>>),
    Files(Vec<PathBuf>),
    /// The CA's ARI was asked about these certificates; their records are updated.
    AriDone(Vec<String>),
    /// Evaluations asked by [`Daemon::request_evaluations`]; `None` when the blocking task
    /// failed (the previous evaluation stays).
    Evaluated {
        results: Evaluated,
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
    /// A revocation pass ended (its results are in the state directory).
    RevocationDone,
    /// These managed certificates were newly marked revoked in their records.
    RevocationMarked(Vec<String>),
    BatchDone {
        report: BatchReport,
        dry_run: bool,
        /// The control client waiting for this batch, with the results already known.
        reply: Option<(oneshot::Sender<Response>, Vec<RenewResult>)>,
    },
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

impl After {
    fn asked(&self) -> Asked {
        match self {
            After::Files => Asked::Files,
            After::Ari => Asked::Ari,
            After::Batch { .. } => Asked::Batch,
        }
    }
}

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

/// File events not yet acted on: the certificates whose files changed, and when the burst
/// is over ([`DEBOUNCE`]).
#[derive(Default)]
struct Debounce {
    dirty: BTreeSet<String>,
    until: Option<tokio::time::Instant>,
}

struct Daemon {
    config_path: PathBuf,
    config: Config,
    renewer: Arc<Renewer>,
    events: mpsc::UnboundedSender<Event>,
    table: Table,
    deployed: DeployedWatch,
    debounce: Debounce,
    batches_in_flight: usize,
    governance: Governance,
    reload: reload::Reloading,
    /// The certificates are being read for the first time (after READY=1): control
    /// requests wait in their channel until the table is filled.
    starting: bool,
    /// Why the daemon must stop now (the first read failed); the loop ends with it.
    failed: Option<DaemonError>,
    /// A burst of work (the first read, a batch, an ARI poll, a revocation pass) ended: the
    /// heap it freed is handed back once the inventory collected after it is applied.
    trim_pending: bool,
}

/// The channels the loop receives on.
struct Inbox {
    events: mpsc::UnboundedReceiver<Event>,
    control: mpsc::Receiver<Incoming>,
}

/// `renewd run`: the daemon, until SIGTERM or SIGINT. `diagnosis` is
/// [`status::diagnose`]'s verdict on `config` (without errors); it is logged, and its
/// certificates that cannot be renewed are shown so and left alone.
pub(crate) async fn run(
    config_path: &Path,
    config: Config,
    diagnosis: Diagnosis,
) -> Result<(), DaemonError> {
    status::log_diagnosis(&diagnosis);
    // The lock is held until `session` is dropped, at the end.
    let session = Session::open(&config)?;
    let listener = control::bind(&config.control_socket).await?;
    let (ctl_tx, ctl_rx) = mpsc::channel::<Incoming>(16);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(control::serve(listener, ctl_tx, stop_rx));

    // Before anything else looks at the deployed files: finish or undo what a crash
    // interrupted.
    session.recover(&config).await;
    let renewer = session.renewer.clone();

    let (ev_tx, ev_rx) = mpsc::unbounded_channel();
    let mut d = Daemon::start(config_path, config, diagnosis, renewer, ev_tx).await?;
    let mut inbox = Inbox {
        events: ev_rx,
        control: ctl_rx,
    };
    let mut hup = signal(SignalKind::hangup()).map_err(DaemonError::Signal)?;
    let mut shutdown = Shutdown::listen().map_err(DaemonError::Signal)?;
    // Ready once the sockets are bound and the watches set: reading the certificates, the
    // discovery scan and the first inventory follow, off the loop's thread.
    let mut systemd = Systemd::ready(d.status_line());
    d.first_read();

    loop {
        let deadline = d.next_deadline();
        d.log_idle(deadline);
        tokio::select! {
            _ = sleep_until(deadline) => {
                d.start_due();
                d.refresh_governance();
                d.start_revocation_checks(SystemTime::now());
            }
            _ = debounced(d.debounce.until) => d.reevaluate_dirty(),
            Some(ev) = inbox.events.recv() => d.on_event(ev),
            // Until the first read is applied, requests wait in the channel (bounded: the
            // control server waits to hand over more).
            Some((req, reply)) = inbox.control.recv(), if !d.starting => d.on_control(req, reply),
            // A SIGHUP during the first read waits for it (the signal is kept meanwhile), so
            // an older first read never replaces a newer configuration's evaluations.
            _ = hup.recv(), if !d.starting => {
                systemd.reloading();
                // READY=1 follows once the configuration is read (`apply_reload`).
                d.reload();
            }
            _ = systemd.watchdog_due() => systemd.ping(),
            _ = shutdown.requested() => break,
        }
        tracing::trace!("event loop woke");
        if d.failed.is_some() {
            break;
        }
        systemd.status(d.status_line());
    }

    tracing::info!("stopping");
    systemd.stopping();
    let _ = stop_tx.send(true);
    let _ = server.await;
    d.finish_batches(&mut inbox.events).await;
    d.governance.stop();
    let _ = std::fs::remove_file(&d.config.control_socket);
    if let Some(e) = d.failed.take() {
        return Err(e);
    }
    tracing::info!("stopped");
    Ok(())
}

/// Resolves at `deadline` (a wall-clock time; never without one).
async fn sleep_until(deadline: Option<SystemTime>) {
    match deadline {
        Some(t) => {
            tokio::time::sleep(t.duration_since(SystemTime::now()).unwrap_or_default()).await
        }
        None => std::future::pending().await,
    }
}

/// Resolves when the file events' burst is over (never without one).
async fn debounced(until: Option<tokio::time::Instant>) {
    match until {
        Some(i) => tokio::time::sleep_until(i).await,
        None => std::future::pending().await,
    }
}

/// Hands heap freed after a burst of work (start-up, a batch, an ARI poll, a revocation
/// pass) back to the kernel.
/// glibc keeps it otherwise, so a daemon that read 1,000 certificates at start would hold
/// that peak for months of idleness. Then pages the binary's own code and read-only data
/// out ([`page_out_code`]).
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages of the allocator to the kernel; it is
    // thread-safe and touches no memory in use.
    unsafe {
        nix::libc::malloc_trim(0);
    }
    page_out_code();
}

/// Asks the kernel to reclaim the pages of renewd's own executable that a burst of work
/// brought in (`madvise(MADV_PAGEOUT)`, Linux 5.4) — its code and read-only data, mapped
/// from the binary and never written, so nothing is lost: a page needed again is read back
/// from the file (a fault, a few microseconds from the page cache, more from disk). An idle
/// daemon otherwise keeps every page of start-up, parsing and renewal code resident for
/// months (about 9 MiB of a 11 MiB binary). Older kernels refuse the advice (EINVAL) and
/// keep the pages: nothing else changes. Returns the bytes of mappings the kernel took the
/// advice for.
fn page_out_code() -> usize {
    let Ok(exe) = std::fs::read_link("/proc/self/exe") else {
        return 0;
    };
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return 0;
    };
    let mut advised = 0;
    for (start, end) in readonly_mappings_of(&maps, &exe) {
        // SAFETY: MADV_PAGEOUT only drops clean pages of this read-only, file-backed mapping
        // from memory; their contents are unchanged and come back from the file on the next
        // access. The range is one whole mapping the kernel listed.
        let done = unsafe {
            nix::libc::madvise(
                start as *mut nix::libc::c_void,
                end - start,
                nix::libc::MADV_PAGEOUT,
            )
        };
        if done == 0 {
            advised += end - start;
        }
    }
    advised
}

/// The (start, end) addresses of the mappings of `exe` in `maps` (the text of
/// `/proc/self/maps`) that cannot be written: `r-xp`, `r--p`.
fn readonly_mappings_of(maps: &str, exe: &Path) -> Vec<(usize, usize)> {
    let exe = exe.to_string_lossy();
    maps.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let range = fields.next()?;
            let perms = fields.next()?;
            // offset, device, inode, then the path (which may hold spaces).
            let path = line.splitn(6, char::is_whitespace).nth(5)?.trim_start();
            if path != exe || perms.as_bytes().get(1) != Some(&b'-') {
                return None;
            }
            let (a, b) = range.split_once('-')?;
            let start = usize::from_str_radix(a, 16).ok()?;
            let end = usize::from_str_radix(b, 16).ok()?;
            (end > start).then_some((start, end))
        })
        .collect()
}

impl Daemon {
    /// Binds the metrics listener and watches the deployed files; the certificates are read
    /// after READY=1 ([`Daemon::first_read`]).
    async fn start(
        config_path: &Path,
        config: Config,
        diagnosis: Diagnosis,
        renewer: Arc<Renewer>,
        events: mpsc::UnboundedSender<Event>,
    ) -> Result<Daemon, DaemonError> {
        let live = crate::inventory::Live::start(&config)
            .await
            .map_err(|e| DaemonError::Governance(e.to_string()))?;
        let deployed = DeployedWatch::new(watch::new_watcher(&events)?);
        let governance = Governance::new(live, watch::new_watcher(&events)?);
        let mut d = Daemon {
            config_path: config_path.to_path_buf(),
            renewer,
            config,
            events,
            table: Table::new(diagnosis.not_renewable),
            deployed,
            debounce: Debounce::default(),
            batches_in_flight: 0,
            governance,
            reload: reload::Reloading::default(),
            starting: true,
            failed: None,
            trim_pending: false,
        };
        // Watches first, then the files are read: a change in between is then an event.
        d.deployed.watch(&d.config);
        Ok(d)
    }

    /// Reads every certificate's files and record for the first time, on blocking threads;
    /// the result comes back as [`Event::FirstRead`].
    fn first_read(&mut self) {
        let (config, renewer) = (self.config.clone(), self.renewer.clone());
        let events = self.events.clone();
        tokio::spawn(async move {
            let job = move || reload::evaluate_config(config, &renewer, &HashMap::new());
            let loaded = tokio::task::spawn_blocking(job).await;
            let _ = events.send(Event::FirstRead(Box::new(loaded)));
        });
    }

    /// The first read is done: the table is filled, control requests are answered, file
    /// events seen meanwhile read again, and the discovery scan (then the first inventory,
    /// metrics and alerts) starts.
    fn apply_first_read(&mut self, loaded: Result<reload::Loaded, tokio::task::JoinError>) {
        // A panic while reading: a daemon that knows nothing must not pretend to run.
        let loaded = match loaded {
            Ok(loaded) => loaded,
            Err(e) => {
                self.failed = Some(DaemonError::FirstRead(e));
                return;
            }
        };
        self.starting = false;
        self.table.rebuild(&self.config.certificates, loaded.evals);
        tracing::info!(socket = %self.config.control_socket.display(), "renewd started; {}", self.table.summary());
        // Changes seen while the files were read may have been read before they happened.
        if !self.debounce.dirty.is_empty() && self.debounce.until.is_none() {
            self.debounce.until = Some(tokio::time::Instant::now() + DEBOUNCE);
        }
        // The first inventory waits for the first scan (it is collected when the scan ends),
        // so the first metrics and alerts include what discovery finds.
        self.start_scan();
        self.trim_pending = true;
    }

    /// The one-line STATUS= for systemd.
    fn status_line(&self) -> String {
        match self.starting {
            true => format!(
                "starting: reading {} certificates",
                self.config.certificates.len()
            ),
            false => self.table.status_line(SystemTime::now()),
        }
    }

    /// After SIGTERM or SIGINT: waits for the batches under way, at most
    /// [`SHUTDOWN_GRACE`], applying what they report.
    async fn finish_batches(&mut self, events: &mut mpsc::UnboundedReceiver<Event>) {
        if self.batches_in_flight == 0 {
            return;
        }
        tracing::info!(
            batches = self.batches_in_flight,
            "waiting for renewals under way"
        );
        let grace = tokio::time::sleep(SHUTDOWN_GRACE);
        tokio::pin!(grace);
        while self.batches_in_flight > 0 {
            tokio::select! {
                _ = &mut grace => {
                    tracing::warn!(batches = self.batches_in_flight,
                        "abandoning renewals under way; their temporary files are removed and \
                         deployed files are left as they were");
                    break;
                }
                Some(ev) = events.recv() => if matches!(ev, Event::BatchDone { .. }
                    | Event::Evaluated { after: After::Batch { .. }, .. }) {
                    self.on_event(ev)
                },
            }
        }
    }

    /// Whether nothing is in flight: not starting, no inventory being collected, no batch
    /// running, no evaluation pending, no ARI poll running, no debounce pending, no
    /// configuration being read, no revocation pass.
    fn idle(&self) -> bool {
        !self.starting
            && !self.governance.collecting()
            && self.batches_in_flight == 0
            && self.debounce.until.is_none()
            && !self.reload.running()
            && !self.table.in_flight()
            && !self.governance.revocation.running()
    }

    /// The event tests wait for to assert that nothing more happened: `idle`, with the next
    /// timer (`until`, RFC 3339 UTC, or "never"), logged when the loop is about to wait with
    /// nothing in flight, after every event the loop handled (a control request too, so a
    /// test can ask `status` and wait for the next `idle` as a point where all is settled).
    fn log_idle(&self, deadline: Option<SystemTime>) {
        if !self.idle() {
            return;
        }
        let until = deadline.map_or_else(|| "never".to_string(), rfc3339);
        tracing::debug!(until = %until, "idle");
    }

    /// The earliest renewal deadline, ARI re-poll time or alert deadline.
    fn next_deadline(&self) -> Option<SystemTime> {
        self.table
            .next_deadline()
            .into_iter()
            .chain(self.governance.next_deadline())
            .chain(self.governance.revocation.next_deadline())
            .min()
    }

    /// Reads the files and records of `names` again on a blocking thread; the result comes
    /// back as [`Event::Evaluated`]. Until then nothing starts for them.
    fn request_evaluations(&mut self, names: impl IntoIterator<Item = String>, after: After) {
        let jobs = self.table.ask_evaluations(names);
        if jobs.is_empty() {
            if let After::Batch { reply, counts } = after {
                if let Some((tx, rsp)) = reply {
                    let _ = tx.send(rsp);
                }
                self.governance.count(counts);
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

    /// Applies evaluations read on a blocking thread, then does what asked for them.
    fn apply_evaluations(&mut self, results: Evaluated, after: After) {
        self.table
            .apply_evaluations(results, after.asked(), SystemTime::now());
        match after {
            After::Files => self.refresh_governance(),
            After::Ari => {
                self.refresh_governance();
                self.start_due();
            }
            After::Batch { reply, counts } => {
                self.governance.count(counts);
                self.refresh_governance();
                if let Some((tx, rsp)) = reply {
                    let _ = tx.send(rsp);
                }
            }
        }
    }

    /// Asks the CA's ARI about every certificate whose re-poll time has come (on a spawned
    /// task).
    fn start_ari_polls(&mut self, now: SystemTime) {
        let certs = self.table.start_ari_polls(now);
        if certs.is_empty() {
            return;
        }
        let names = certs.iter().map(|c| c.name.clone()).collect();
        let renewer = self.renewer.clone();
        let cas = self.config.cas.clone();
        let events = self.events.clone();
        tokio::spawn(async move {
            let certs = certs.into_iter().map(|c| (c, None)).collect();
            renewer.refresh_ari_all(certs, &cas).await;
            let _ = events.send(Event::AriDone(names));
        });
    }

    /// Starts one batch with every certificate that is due and not already renewing; first
    /// asks ARI about those whose re-poll time has come (their renewal waits for the answer).
    fn start_due(&mut self) {
        let now = SystemTime::now();
        self.start_ari_polls(now);
        let due = self.table.due(now);
        for name in &due {
            if let Some(e) = self.table.get(name) {
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
        let certs = self.table.start_renewing(&names);
        if certs.is_empty() {
            if let Some((tx, results)) = reply {
                let _ = tx.send(Response::Renew { results });
            }
            return;
        }
        self.spawn_batch(move |renewer, cas| async move {
            let report = renewer.run_batch(certs, &cas, dry_run).await;
            Event::BatchDone {
                report,
                dry_run,
                reply,
            }
        });
    }

    /// Runs `batch` (given the renewer and the CAs) on a spawned task, counted in flight
    /// until the [`Event::BatchDone`] it ends with is applied.
    fn spawn_batch<F, Fut>(&mut self, batch: F)
    where
        F: FnOnce(Arc<Renewer>, BTreeMap<String, CaConfig>) -> Fut,
        Fut: std::future::Future<Output = Event> + Send + 'static,
    {
        self.batches_in_flight += 1;
        let done = batch(self.renewer.clone(), self.config.cas.clone());
        let events = self.events.clone();
        tokio::spawn(async move {
            let _ = events.send(done.await);
        });
    }

    fn on_event(&mut self, ev: Event) {
        match ev {
            Event::AriDone(names) => {
                self.table.ari_done(&names, SystemTime::now());
                // A poll of many certificates is a burst too (TLS, JSON, records).
                self.trim_pending = true;
                // The due renewals start once the records are read again; the CA's advice may
                // start or end an alert condition (ari_early_replacement), which the
                // collection after the evaluations looks at.
                self.request_evaluations(names, After::Ari);
            }
            Event::FirstRead(loaded) => self.apply_first_read(*loaded),
            Event::Evaluated { results, after } => self.apply_evaluations(results, after),
            Event::Reloaded(loaded) => self.apply_reload(*loaded),
            Event::Collected(collected) => self.apply_collected(collected),
            Event::ScanDone { scan, elapsed } => self.scan_done(scan, elapsed),
            Event::Files(paths) => self.on_files(paths),
            Event::RevocationDone => self.revocation_done(),
            Event::RevocationMarked(marked) => self.revocation_marked(marked),
            Event::BatchDone {
                report,
                dry_run,
                reply,
            } => {
                self.batches_in_flight -= 1;
                self.trim_pending = true;
                let counts = self.table.finish_batch(&report, dry_run, SystemTime::now());
                let reply = reply.map(|(tx, skipped)| {
                    let rsp = Response::Renew {
                        results: crate::requests::results(skipped, &report, dry_run),
                    };
                    (tx, rsp)
                });
                let names = report.certificates.iter().map(|c| c.name.clone());
                self.request_evaluations(names, After::Batch { reply, counts });
            }
        }
    }

    /// File events: the certificates owning a changed deployed file are read again, and
    /// changed discovery paths scanned, once the burst is over.
    fn on_files(&mut self, paths: Vec<PathBuf>) {
        let mut hit = false;
        for p in paths {
            if let Some(names) = self.deployed.owners(&p) {
                self.debounce.dirty.extend(names.iter().cloned());
                hit = true;
            }
            hit |= self.governance.discovery_changed(p);
        }
        if hit && self.debounce.until.is_none() {
            self.debounce.until = Some(tokio::time::Instant::now() + DEBOUNCE);
        }
    }

    fn reevaluate_dirty(&mut self) {
        self.debounce.until = None;
        // Kept until the first read is applied (which reads them again).
        if self.starting {
            return;
        }
        let dirty = self.table.idle_of(std::mem::take(&mut self.debounce.dirty));
        self.request_evaluations(dirty, After::Files);
        if self.governance.discovery_has_changes() {
            self.start_scan();
        }
        self.refresh_governance();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_executables_unwritable_mappings_are_paged_out() {
        let maps = "\
55d000000000-55d000001000 r--p 00000000 fd:01 42                         /usr/bin/renew d
55d000001000-55d000009000 r-xp 00001000 fd:01 42                         /usr/bin/renew d
55d000009000-55d00000a000 rw-p 00009000 fd:01 42                         /usr/bin/renew d
55d00000a000-55d00000b000 rw-p 00000000 00:00 0                          [heap]
7f0000000000-7f0000100000 r-xp 00000000 fd:01 7                          /usr/lib/libc.so.6
7f0000200000-7f0000201000 r--p 00000000 fd:01 43                         /usr/bin/renew d.old
";
        assert_eq!(
            readonly_mappings_of(maps, Path::new("/usr/bin/renew d")),
            vec![
                (0x55d0_0000_0000, 0x55d0_0000_1000),
                (0x55d0_0000_1000, 0x55d0_0000_9000)
            ]
        );
    }

    /// Resident KiB of this process's own executable's mappings (`/proc/self/smaps`).
    fn exe_rss_kib() -> u64 {
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut ours = false;
        let mut kib = 0;
        for line in smaps.lines() {
            if line.starts_with(|c: char| c.is_ascii_hexdigit()) && line.contains('-') {
                ours = line.ends_with(&*exe.to_string_lossy());
            } else if let (true, Some(v)) = (ours, line.strip_prefix("Rss:")) {
                kib += v.trim().trim_end_matches(" kB").parse::<u64>().unwrap();
            }
        }
        kib
    }

    #[test]
    fn paging_out_this_process_code_lowers_its_resident_pages_and_it_runs_on() {
        let before = exe_rss_kib();
        let advised = page_out_code();
        let after = exe_rss_kib();
        if advised == 0 {
            // A kernel before 5.4 refuses MADV_PAGEOUT: nothing changes, nothing breaks.
            eprintln!("MADV_PAGEOUT refused here; {before} KiB resident stay");
            return;
        }
        // Other tests' threads bring some pages back at once; most stay out.
        assert!(
            after < before / 2,
            "{before} KiB resident before, {after} KiB after paging out {advised} bytes"
        );
    }
}

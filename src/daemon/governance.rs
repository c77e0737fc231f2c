//! The daemon's governance: the inventory (managed certificates, declared exceptions, and
//! what the discovery scans find), the alerts and the metrics ([`crate::inventory`]). The
//! inventory is collected and the discovery paths scanned on blocking threads, one at a
//! time; the loop gets [`Event::Collected`] and [`Event::ScanDone`].

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use super::table::Count;
use super::watch::{DiscoveryWatch, MAX_DISCOVERY_WATCHES};
use super::{Daemon, Event};
use crate::config::Config;
use crate::inventory::discovery::Scan;
use crate::inventory::Live;
use crate::status;

/// Inventory, alerts, metrics, and the discovery scans feeding them.
pub(super) struct Governance {
    live: Live,
    /// The inventory is being collected on a blocking thread; asked again meanwhile.
    collecting: bool,
    collect_again: bool,
    /// Counters waiting for the next collection to start, and for the one under way.
    counts: Vec<Count>,
    counting: Vec<Count>,
    /// Paths under the discovery roots that changed since the last scan began.
    discovery_changed: BTreeSet<PathBuf>,
    /// The next scan must walk every root afresh (start, SIGHUP).
    discovery_full: bool,
    /// A scan runs on a blocking thread; at most one at a time.
    scanning: bool,
    /// The first scan has ended: inventories are collected from then on.
    scanned_once: bool,
    discovery_watch: Arc<Mutex<DiscoveryWatch>>,
    /// The revocation checks: what to check, when next.
    pub(super) revocation: super::revocation::Checks,
    /// The revocation results as last read, shared with the collections.
    revocation_store: Arc<Mutex<crate::revocation::store::Cached>>,
}

type ScanJob = Box<dyn FnOnce() -> (Scan, Duration) + Send + 'static>;

/// What a scan job starts from.
enum ScanFrom {
    /// Nothing: the whole of the configuration's discovery is scanned.
    Full(Box<Config>),
    /// The cached scan, brought up to date for the changed paths.
    Update(Scan),
}

impl Governance {
    pub(super) fn new(live: Live, watcher: notify::RecommendedWatcher) -> Governance {
        Governance {
            live,
            collecting: false,
            collect_again: false,
            counts: Vec::new(),
            counting: Vec::new(),
            discovery_changed: BTreeSet::new(),
            discovery_full: true,
            scanning: false,
            scanned_once: false,
            discovery_watch: Arc::new(Mutex::new(DiscoveryWatch::new(
                Some(watcher),
                MAX_DISCOVERY_WATCHES,
            ))),
            revocation: Default::default(),
            revocation_store: Default::default(),
        }
    }

    /// The next alert deadline.
    pub(super) fn next_deadline(&self) -> Option<SystemTime> {
        self.live.next_deadline()
    }

    pub(super) fn stop(&mut self) {
        self.live.stop();
    }

    /// Counters to count once the next inventory is applied.
    pub(super) fn count(&mut self, counts: Vec<Count>) {
        self.counts.extend(counts);
    }

    /// A new configuration (SIGHUP): the next scan walks every root afresh.
    pub(super) fn configure(&mut self, config: &Config) {
        self.live.configure(config);
        self.discovery_full = true;
    }

    /// Notes `path` if it is under a discovery path; returns whether it is.
    pub(super) fn discovery_changed(&mut self, path: PathBuf) -> bool {
        if self.live.is_discovery_path(&path) {
            self.discovery_changed.insert(path);
            return true;
        }
        false
    }

    pub(super) fn discovery_has_changes(&self) -> bool {
        !self.discovery_changed.is_empty()
    }

    /// Whether the inventory is being collected.
    pub(super) fn collecting(&self) -> bool {
        self.collecting
    }

    /// The scan to run next, for a blocking thread: the whole of every discovery path after
    /// a start or a SIGHUP (with fresh watches), else only the paths that changed. Each
    /// directory is watched before it is read. `None` when there is nothing to scan.
    fn scan_job(&mut self) -> Option<ScanJob> {
        let full = std::mem::take(&mut self.discovery_full);
        let changed = std::mem::take(&mut self.discovery_changed);
        if !full && changed.is_empty() {
            return None;
        }
        self.scanning = true;
        let roots = self.live.discovery_roots();
        let skip = self.live.discovery_skip();
        // A full scan is of the whole configuration (paths with PKCS#12 passwords, then
        // listeners); an update brings the cached scan up to date for what changed.
        let from = match full {
            true => ScanFrom::Full(Box::new(self.live.config().clone())),
            false => ScanFrom::Update(self.live.scan_snapshot()),
        };
        let watch = self.discovery_watch.clone();
        Some(Box::new(move || {
            let started = std::time::Instant::now();
            let lock = || watch.lock().unwrap_or_else(|e| e.into_inner());
            let mut on_dir = |dir: &Path| lock().add(dir);
            let scan = match from {
                ScanFrom::Full(config) => {
                    lock().clear();
                    crate::inventory::discover_watching(&config, &mut on_dir)
                }
                ScanFrom::Update(mut scan) => {
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
        }))
    }
}

impl Daemon {
    /// Hands the managed certificates as evaluated now to the inventory, collected on a
    /// blocking thread (it reads the exceptions' and certificates' files); then
    /// [`Daemon::apply_collected`] updates the metrics, sends due alerts and sets the next
    /// alert deadline. One collection at a time; asked meanwhile, another follows it.
    pub(super) fn refresh_governance(&mut self) {
        let g = &mut self.governance;
        // Not before the first scan, which starts once the first read is applied: an
        // inventory without them would resolve the alerts of every certificate it lacks
        // (and fire them again after).
        if !g.scanned_once {
            return;
        }
        if g.collecting {
            g.collect_again = true;
            return;
        }
        g.collecting = true;
        g.counting = std::mem::take(&mut g.counts);
        // Built here, from the evaluations: collecting reads no record or certificate file.
        let managed: Vec<crate::inventory::Managed> = self
            .table
            .entries()
            .map(|e| status::managed(&e.cfg, &e.eval))
            .collect();
        let renewer = self.renewer.clone();
        let collect = g.live.collector();
        let metrics = g.live.metrics().clone();
        let cas: Vec<String> = self.config.cas.keys().cloned().collect();
        let state_dir = self.config.state_dir.clone();
        let events = self.events.clone();
        let store = g.revocation_store.clone();
        tokio::spawn(async move {
            let job = move || {
                let now = SystemTime::now();
                // Whether each CA is paused (Retry-After) is in its pause file.
                metrics.set_ca_paused(cas.iter().map(|ca| {
                    let pause = crate::acme::pause_of(ca, &renewer.state().ca_files(ca).pause);
                    (ca.as_str(), pause.is_some())
                }));
                let mut inv = collect(&managed, now);
                let store = store
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(&state_dir);
                crate::revocation::annotate(&mut inv, &store);
                (inv, now)
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
    pub(super) fn apply_collected(
        &mut self,
        collected: Option<Box<(crate::inventory::Inventory, SystemTime)>>,
    ) {
        let g = &mut self.governance;
        g.collecting = false;
        if let Some(done) = collected {
            let (inv, now) = *done;
            g.revocation.plan(&inv);
            let inv = g.live.apply(inv, now);
            self.mark_revoked(&inv);
        }
        let g = &mut self.governance;
        // Gauges first: a scrape that sees a counter also sees the state after it.
        for count in std::mem::take(&mut g.counting) {
            match count {
                Count::Renewal(name, ok) => g.live.metrics().renewal(&name, ok),
                Count::Reload(ok) => g.live.metrics().reload(ok),
            }
        }
        if std::mem::take(&mut g.collect_again) {
            self.refresh_governance();
        } else if std::mem::take(&mut self.trim_pending) {
            super::release_free_memory();
        }
    }

    /// Starts a discovery scan on a blocking thread unless one runs (its end starts the
    /// next one if more changed meanwhile); it ends in [`Event::ScanDone`].
    pub(super) fn start_scan(&mut self) {
        if self.governance.scanning {
            return;
        }
        let Some(job) = self.governance.scan_job() else {
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

    /// A discovery scan ended; changes that arrived during it start the next one.
    pub(super) fn scan_done(&mut self, scan: Scan, elapsed: Duration) {
        let g = &mut self.governance;
        g.scanning = false;
        g.scanned_once = true;
        g.live.set_scan(scan, elapsed);
        self.refresh_governance();
        let g = &self.governance;
        if !g.discovery_changed.is_empty() || g.discovery_full {
            self.start_scan();
        }
    }
}

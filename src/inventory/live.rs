//! The daemon's side of governance: the cached discovery scan, the metrics registry and its
//! listener, and the alert state. The daemon hands it the managed certificates whenever it
//! has evaluated them, and asks it for the next instant an alert condition may change.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::alerts::{self, AlertState, Notifier};
use super::discovery::Scan;
use super::metrics::{ListenError, Metrics, MetricsServer};
use super::{collect, Inventory, Managed};
use crate::config::Config;

/// The governance state the daemon holds while it runs.
pub(crate) struct Live {
    config: Config,
    /// Shared with collectors running on blocking threads.
    scan: std::sync::Arc<Scan>,
    /// Generation of the last alert state handed to a save, and of the last saved.
    save_generation: u64,
    saved: std::sync::Arc<std::sync::Mutex<u64>>,
    metrics: Metrics,
    server: Option<MetricsServer>,
    notifier: Option<Notifier>,
    alerts: AlertState,
    next: Option<SystemTime>,
    host: String,
    /// The trust stores' parsed anchors by file identity, shared with the collectors.
    trust_cache: std::sync::Arc<std::sync::Mutex<crate::trust::Cache>>,
    /// Held by the task delivering a plan's alerts (FIFO: tokio's mutex is fair).
    delivering: std::sync::Arc<tokio::sync::Mutex<()>>,
}

impl Live {
    /// Loads the alert state and starts the metrics listener. Errors: the listener's bind. The first discovery scan is
    /// the caller's ([`Live::set_scan`]), once it watches the discovery paths: a file changed
    /// between a scan and the watch would otherwise go unnoticed.
    pub(crate) async fn start(config: &Config) -> Result<Live, ListenError> {
        let metrics = Metrics::new();
        let server = match &config.metrics {
            Some(m) => Some(MetricsServer::start(m.listen, metrics.clone()).await?),
            None => None,
        };
        let mut live = Live {
            config: config.clone(),
            scan: Default::default(),
            save_generation: 0,
            saved: Default::default(),
            metrics,
            server,
            notifier: None,
            alerts: AlertState::load(&config.state_dir),
            next: None,
            host: std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_default(),
            trust_cache: Default::default(),
            delivering: Default::default(),
        };
        live.configure(config);
        Ok(live)
    }

    /// A new configuration (SIGHUP): alerts, exceptions and discovery take effect now;
    /// `[metrics] listen` at the next restart. Rescan ([`Live::set_scan`]) once the new
    /// discovery paths are watched.
    pub(crate) fn configure(&mut self, config: &Config) {
        if config.metrics.as_ref().map(|m| m.listen)
            != self.config.metrics.as_ref().map(|m| m.listen)
        {
            tracing::warn!("[metrics] listen takes effect at the next restart");
        }
        let listen = self.config.metrics.clone();
        self.config = config.clone();
        self.config.metrics = listen;
        self.notifier = match &config.alert {
            Some(a) => match Notifier::new(a.clone()) {
                Ok(n) => Some(n),
                Err(e) => {
                    tracing::error!(error = %e, "cannot set up alert delivery");
                    None
                }
            },
            None => None,
        };
    }

    /// The configuration in force, for a full discovery scan ([`super::discover_watching`]).
    pub(crate) fn config(&self) -> &Config {
        &self.config
    }

    /// The directories the daemon watches (recursively) for discovery.
    pub(crate) fn discovery_roots(&self) -> Vec<PathBuf> {
        self.config
            .discovery
            .as_ref()
            .map(|d| d.paths.clone())
            .unwrap_or_default()
    }

    /// Whether a file event at `path` concerns discovery.
    pub(crate) fn is_discovery_path(&self, path: &Path) -> bool {
        self.discovery_roots().iter().any(|r| path.starts_with(r))
            || self.config.exceptions.iter().any(|e| e.path == path)
    }

    /// The paths discovery leaves to the inventory's other kinds (managed files and
    /// exceptions), for a scan.
    pub(crate) fn discovery_skip(&self) -> std::collections::HashSet<PathBuf> {
        super::known_paths(&self.config)
    }

    /// A copy of the cached scan, for a scan on another thread to bring up to date (see
    /// [`Live::set_scan`]); the inventory keeps the cached one meanwhile.
    pub(crate) fn scan_snapshot(&self) -> Scan {
        (*self.scan).clone()
    }

    /// The result of a discovery scan, cached until the next one.
    pub(crate) fn set_scan(&mut self, scan: Scan, elapsed: std::time::Duration) {
        self.scan = std::sync::Arc::new(scan);
        if self.config.discovery.is_some() {
            tracing::debug!(
                files = self.scan.files_seen(),
                certificates = self.scan.found().count(),
                ?elapsed,
                "discovery scan"
            );
        }
    }

    /// The registry, for the renewal and reload counters.
    pub(crate) fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// What builds the inventory from the managed certificates and the time, reading the
    /// exceptions' and managed certificates' files: for a blocking thread. Pass its result
    /// to [`Live::apply`].
    pub(crate) fn collector(
        &self,
    ) -> impl FnOnce(&[Managed], SystemTime) -> Inventory + Send + 'static {
        let config = self.config.clone();
        let scan = self.scan.clone();
        let trust_cache = self.trust_cache.clone();
        move |managed, now| {
            let mut inv = collect(&config, managed, &scan, now);
            let mut cache = trust_cache.lock().unwrap_or_else(|e| e.into_inner());
            (inv.anchors, inv.anchors_next) =
                super::trust::daemon_pass(&config, &inv, &mut cache, now);
            inv
        }
    }

    /// Updates the metrics from `inv` (collected at `now`), and sends the alerts that are
    /// due. The alert state is saved on a blocking thread, newest last.
    pub(crate) fn apply(&mut self, inv: Inventory, now: SystemTime) -> Inventory {
        self.metrics.update(&inv);
        let Some(notifier) = self.notifier.clone() else {
            // Without alerts, only the trust audit's gauges change with time alone.
            self.next = inv.anchors_next;
            return inv;
        };
        let items: std::borrow::Cow<[super::Item]> = if inv.anchors.is_empty() {
            std::borrow::Cow::Borrowed(&inv.certificates)
        } else {
            std::borrow::Cow::Owned([&inv.certificates[..], &inv.anchors[..]].concat())
        };
        let plan = alerts::plan(&self.alerts, &items, now, &self.host);
        self.next = match (plan.next, inv.anchors_next) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if plan.state != self.alerts {
            self.save_generation += 1;
            let (generation, saved) = (self.save_generation, self.saved.clone());
            let (state, dir) = (plan.state.clone(), self.config.state_dir.clone());
            tokio::task::spawn_blocking(move || {
                let mut last = saved.lock().unwrap_or_else(|e| e.into_inner());
                // A later state was saved already: this one is stale.
                if *last > generation {
                    return;
                }
                *last = generation;
                if let Err(e) = state.save(&dir) {
                    tracing::error!(error = %e, "cannot save alerts.json; alerts may repeat after a restart");
                }
            });
            self.alerts = plan.state;
        }
        if !plan.send.is_empty() {
            // One delivery at a time, in the order planned: two collections close together
            // must not run the alert command twice at once (its output would interleave).
            let delivering = self.delivering.clone();
            tokio::spawn(async move {
                let _one = delivering.lock().await;
                for alert in &plan.send {
                    notifier.deliver(alert).await;
                }
            });
        }
        inv
    }

    /// The next instant an alert condition may start or needs repeating.
    /// The next instant an alert condition may start or one must be repeated.
    pub(crate) fn next_deadline(&self) -> Option<SystemTime> {
        self.next
    }

    /// Stops the metrics listener (shutdown).
    pub(crate) fn stop(&mut self) {
        if let Some(s) = self.server.take() {
            s.stop();
        }
    }
}

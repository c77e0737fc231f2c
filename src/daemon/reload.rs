//! SIGHUP: the configuration read again and judged by the rules `run` applies, and every
//! certificate of it evaluated, on a blocking thread; then taken as a whole, or refused as a
//! whole with the old one kept.

use std::collections::HashMap;
use std::time::SystemTime;

use super::{evaluation, After, Daemon, Event};
use crate::config::{self, Config, Diagnosis};
use crate::renew::Renewer;
use crate::status::{self, Evaluation};

/// A SIGHUP's configuration is being read; another SIGHUP came meanwhile.
#[derive(Default)]
pub(super) struct Reloading {
    running: bool,
    again: bool,
}

impl Reloading {
    pub(super) fn running(&self) -> bool {
        self.running
    }
}

/// A configuration (re)read and every certificate of it evaluated, on a blocking thread.
pub(super) struct Loaded {
    config: Config,
    pub(super) evals: HashMap<String, Evaluation>,
}

/// Certificates evaluated by one thread of [`evaluate_config`] at a time.
const CHUNK: usize = 256;

/// Evaluates every certificate of `config` with the failures this process saw (`seen`),
/// on at most as many threads as the machine has cores (4 at most), in chunks of
/// [`CHUNK`]. Blocking.
pub(super) fn evaluate_config(
    config: Config,
    renewer: &Renewer,
    seen: &HashMap<String, (u32, Option<SystemTime>)>,
) -> Loaded {
    let now = SystemTime::now();
    let certs = &config.certificates;
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 4)
        .min(certs.len().div_ceil(CHUNK));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let work = || {
        let mut out = Vec::new();
        loop {
            let start = next.fetch_add(CHUNK, std::sync::atomic::Ordering::Relaxed);
            let Some(chunk) = certs.get(start..(start + CHUNK).min(certs.len())) else {
                return out;
            };
            if chunk.is_empty() {
                return out;
            }
            out.extend(chunk.iter().map(|c| {
                let (f, l) = seen.get(&c.name).copied().unwrap_or((0, None));
                (
                    c.name.clone(),
                    evaluation(renewer, &config.cas, c, f, l, now),
                )
            }));
        }
    };
    let mut evals = HashMap::with_capacity(certs.len());
    std::thread::scope(|scope| {
        let helpers: Vec<_> = (1..threads).map(|_| scope.spawn(work)).collect();
        evals.extend(work());
        for h in helpers {
            // A panic in a helper is the caller's (a blocking task's) failure too.
            evals.extend(h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)));
        }
    });
    Loaded { config, evals }
}

impl Daemon {
    /// SIGHUP: re-read the configuration and the certificates' files on a blocking thread
    /// ([`Event::Reloaded`]; one at a time, a SIGHUP meanwhile reads again after it).
    pub(super) fn reload(&mut self) {
        if self.reload.running {
            self.reload.again = true;
            return;
        }
        self.reload.running = true;
        let path = self.config_path.clone();
        let renewer = self.renewer.clone();
        let seen = self.table.failures_seen();
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
    pub(super) fn apply_reload(
        &mut self,
        loaded: Result<(Loaded, Diagnosis), config::ConfigError>,
    ) {
        self.reload.running = false;
        match loaded {
            Err(e) => {
                for p in &e.problems {
                    tracing::error!("{p}");
                }
                tracing::error!("configuration not reloaded; keeping the previous one");
            }
            Ok((Loaded { config: new, evals }, diagnosis)) => {
                status::log_diagnosis(&diagnosis);
                self.table.set_not_renewable(diagnosis.not_renewable);
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
                let new_dirs = self.deployed.watch(&self.config);
                self.table.rebuild(&self.config.certificates, evals);
                // Files in directories watched only now were read before their watch: read
                // them again, so a change in between is not lost.
                let reread = self.table.with_files_in(&new_dirs);
                self.request_evaluations(reread, After::Files);
                self.governance.configure(&self.config);
                self.start_scan();
                self.refresh_governance();
                tracing::info!("configuration reloaded; {}", self.table.summary());
            }
        }
        super::systemd::reloaded();
        if std::mem::take(&mut self.reload.again) {
            self.reload();
        }
    }
}

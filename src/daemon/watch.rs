//! The daemon's inotify watches: the directories of the deployed files
//! ([`DeployedWatch`]: a change there re-reads the certificates that own the file) and the
//! directories under the discovery paths ([`DiscoveryWatch`]). Each has its own watcher, so
//! that neither replaces the other's watches. Events come back to the loop as
//! [`Event::Files`].

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use super::{DaemonError, Event};
use crate::config::Config;

/// At most this many directories under the discovery paths are watched (one inotify watch
/// each); beyond it, a warning, and changes there are seen at the next SIGHUP.
pub(crate) const MAX_DISCOVERY_WATCHES: usize = 8192;

/// A watcher whose events (reads excepted) go to the loop.
pub(super) fn new_watcher(
    events: &mpsc::UnboundedSender<Event>,
) -> Result<notify::RecommendedWatcher, DaemonError> {
    let tx = events.clone();
    notify::recommended_watcher(move |res: notify::Result<notify::Event>| match res {
        // Reads (ours included: evaluating a certificate opens its files) are not changes.
        Ok(ev) if matches!(ev.kind, EventKind::Access(_)) => {}
        Ok(ev) => {
            let _ = tx.send(Event::Files(ev.paths));
        }
        Err(e) => tracing::warn!(error = %e, "file watcher error"),
    })
    .map_err(DaemonError::Watch)
}

/// The deployed files: which certificates own each, and the watches on their directories.
pub(super) struct DeployedWatch {
    /// Deployed file → the certificates that own it.
    targets: HashMap<PathBuf, Vec<String>>,
    watched_dirs: HashSet<PathBuf>,
    watcher: notify::RecommendedWatcher,
}

impl DeployedWatch {
    pub(super) fn new(watcher: notify::RecommendedWatcher) -> DeployedWatch {
        DeployedWatch {
            targets: HashMap::new(),
            watched_dirs: HashSet::new(),
            watcher,
        }
    }

    /// The certificates that own `path`, if it is a deployed file.
    pub(super) fn owners(&self, path: &Path) -> Option<&[String]> {
        self.targets.get(path).map(Vec::as_slice)
    }

    /// Sets the deployed files' table and watches from `config`; returns the directories
    /// watched now that were not before (their files must be read after this).
    pub(super) fn watch(&mut self, config: &Config) -> HashSet<PathBuf> {
        self.targets.clear();
        for cert in &config.certificates {
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
        for gone in self.watched_dirs.difference(&dirs) {
            let _ = self.watcher.unwatch(gone);
        }
        for new in dirs.difference(&self.watched_dirs) {
            if let Err(e) = self.watcher.watch(new, RecursiveMode::NonRecursive) {
                tracing::warn!(dir = %new.display(), error = %e,
                    "cannot watch directory; changes to its certificates are noticed only at their deadline");
            }
        }
        let new = dirs.difference(&self.watched_dirs).cloned().collect();
        self.watched_dirs = dirs;
        new
    }
}

/// The discovery paths' watches: one non-recursive inotify watch per real directory the
/// scan walks (never one reached through a symlink), at most [`MAX_DISCOVERY_WATCHES`].
pub(super) struct DiscoveryWatch {
    watcher: Option<notify::RecommendedWatcher>,
    watched: HashSet<PathBuf>,
    /// At most this many watches ([`MAX_DISCOVERY_WATCHES`]; lower in tests).
    cap: usize,
    /// The cap was reached and said so (once until the next full scan).
    capped: bool,
}

impl DiscoveryWatch {
    pub(super) fn new(watcher: Option<notify::RecommendedWatcher>, cap: usize) -> DiscoveryWatch {
        DiscoveryWatch {
            watcher,
            watched: HashSet::new(),
            cap,
            capped: false,
        }
    }

    /// Called by the scan before it reads `dir`.
    pub(super) fn add(&mut self, dir: &Path) {
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

    pub(super) fn remove(&mut self, dir: &Path) {
        if self.watched.remove(dir) {
            if let Some(w) = self.watcher.as_mut() {
                // A deleted directory's watch is already gone.
                let _ = w.unwatch(dir);
            }
        }
    }

    pub(super) fn clear(&mut self) {
        for dir in std::mem::take(&mut self.watched) {
            if let Some(w) = self.watcher.as_mut() {
                let _ = w.unwatch(&dir);
            }
        }
        self.capped = false;
    }

    /// How many directories are watched now.
    pub(super) fn count(&self) -> usize {
        self.watched.len()
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
        let mut w = DiscoveryWatch::new(Some(watcher), 3);
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

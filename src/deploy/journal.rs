//! The swap journal: what makes replacing a certificate's file set all-or-nothing across a
//! crash or a power cut, and what lets a failed reload or proof put the old set back.
//!
//! One swap, for one certificate, goes through these steps; each is durable (fsynced file
//! and directory) before the next begins:
//!
//! 1. *stage* ([`super::stage()`]): every new file written in full to a temporary beside its
//!    target, with its final mode and owner.
//! 2. *backup*: every target that exists is hard-linked to a backup name beside it (same
//!    directory, so same filesystem; a link costs no copy and keeps the very inode the
//!    services read, mode and owner included).
//! 3. *journal `staged`*: `<state_dir>/journal/<name>.json` lists, per file, the target, its
//!    temporary and its backup (none when the target did not exist).
//! 4. *swap*: every temporary renamed onto its target.
//! 5. *journal `swapped`*: the new set is whole. The caller reloads the services and proves
//!    the new certificate is served, then either
//! 6. *finish*: the journal is removed — the commit point of the new set — then the
//!    backups; or
//! 7. *roll back*: journal `rolling-back`, every backup renamed onto its target (a target
//!    that had no old file is removed), leftover temporaries removed, journal removed.
//!
//! Invariants: every target always holds one complete file, old or new (rename(2) is
//! atomic); while a journal exists, every old file that is no longer at its target is at
//! its backup; a journal is only ever replaced atomically. So [`recover`], run at start
//! before anything else, can always finish the job: `staged` and `rolling-back` journals
//! are rolled back (restoring is idempotent, so a crash during recovery is recovered the
//! same way), and `swapped` journals are handed back to the caller as [`Swap`]s whose new
//! set still has to be reloaded and proven — which ends, as in a normal renewal, in finish
//! or roll back.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::stage::TEMP_MARKER;
use super::{parent_dir, Staged};
use crate::config::FileSet;
use crate::fsutil;

const VERSION: u32 = 1;

/// Where a swap stands, as written in its journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Phase {
    /// Temporaries and backups exist; targets may or may not have been replaced yet.
    Staged,
    /// Every target holds its new file; backups hold the old ones.
    Swapped,
    /// Putting the backups back.
    RollingBack,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    target: PathBuf,
    temp: PathBuf,
    /// Where the old file was linked; `None` when the target did not exist.
    backup: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    version: u32,
    cert: String,
    phase: Phase,
    /// Serial of the new certificate, for logs.
    serial: String,
    files: Vec<Entry>,
}

/// Why a swap could not be begun, ended or recovered. Every variant names the file it is
/// about; the journal is kept whenever a restart could still finish the job.
#[derive(Debug, thiserror::Error)]
pub(crate) enum JournalError {
    #[error("cannot keep the current {target} as a backup at {backup}: {source}")]
    Backup {
        target: PathBuf,
        backup: PathBuf,
        source: io::Error,
    },
    #[error("cannot write the swap journal {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("cannot remove the swap journal {path}: {source}")]
    Remove { path: PathBuf, source: io::Error },
    #[error("cannot read the swap journal {path}: {reason}")]
    Read { path: PathBuf, reason: Refused },
    #[error("cannot restore {target} from {backup}: {source}; the swap journal {journal} is kept and the next start tries again")]
    Restore {
        target: PathBuf,
        backup: PathBuf,
        journal: PathBuf,
        source: io::Error,
    },
    #[error("cannot flush directory {dir}: {source}")]
    SyncDir { dir: PathBuf, source: io::Error },
    #[error("{deploy}; previous files restored")]
    SwapFailed { deploy: super::DeployError },
    #[error("{deploy}; and the previous files could not all be restored: {restore}")]
    SwapAndRestoreFailed {
        deploy: super::DeployError,
        restore: Box<JournalError>,
    },
}

/// Why a journal on disk is not acted on by [`recover`]: it is left in place and reported.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Refused {
    /// The journal directory itself cannot be listed.
    #[error("{0}")]
    Directory(io::Error),
    /// Missing, not a regular file, over `fsutil::caps::STATE` bytes, or unreadable.
    #[error("{}", .0.reason())]
    Unreadable(fsutil::ReadError),
    #[error("not a swap journal ({0}); fix or remove it by hand")]
    NotAJournal(serde_json::Error),
    #[error("journal version {0} is not understood by this renewd (version {VERSION})")]
    Version(u32),
    #[error("journal names certificate {0:?}, not the one its file name says")]
    OtherCertificate(String),
    #[error(
        "certificate {0:?} is not configured; its journal is left alone (remove it by hand \
         once its files are as they should be)"
    )]
    NotConfigured(String),
    #[error("{} is not a configured file of certificate {cert:?}", .target.display())]
    ForeignTarget { target: PathBuf, cert: String },
    /// A temporary or backup that is not `.TARGETNAME.renewd-…` beside its target.
    #[error("{} is not a renewd temporary beside {}", .path.display(), .target.display())]
    ForeignTemporary { path: PathBuf, target: PathBuf },
}

/// A swap under way, backed by its journal. Dropping it leaves the journal in place, to be
/// dealt with by [`recover`] at the next start; call [`Swap::finish`] or
/// [`Swap::roll_back`] to end it.
#[derive(Debug)]
pub(crate) struct Swap {
    path: PathBuf,
    record: Record,
}

impl Swap {
    /// Backs up the targets of `staged`, writes the journal, renames the staged files into
    /// place and marks the journal `swapped`. If anything fails after the journal exists,
    /// the old set is put back before returning.
    pub(crate) fn begin(
        journal_dir: &Path,
        cert: &str,
        serial: &str,
        staged: Staged,
    ) -> Result<Swap, JournalError> {
        let path = journal_path(journal_dir, cert);
        let mut files = Vec::new();
        // Backups made so far, removed again if a later one fails: until the journal is
        // written nothing refers to them.
        let mut cleanup = Backups(Vec::new());
        for (kind, target, temp) in staged.files() {
            let backup = match fs::symlink_metadata(target) {
                Ok(meta) => {
                    if let Some(why) = crate::deploy::acl_dropped(kind, target) {
                        tracing::warn!(cert = %cert, target = %target.display(), "{cert}: {why}");
                    }
                    if meta.file_type().is_symlink() {
                        // rename(2) replaces the link itself: say so, since an administrator
                        // put it there (certbot's live/ layout, a shared path).
                        let to = fs::read_link(target)
                            .map(|t| t.display().to_string())
                            .unwrap_or_else(|e| format!("? ({e})"));
                        tracing::warn!(cert = %cert, target = %target.display(), link = %to,
                            "{cert}: {} is a symbolic link to {to}; it is replaced by a regular \
                             file and the file it points to is left as it was (point `files` at \
                             that file to have it updated instead)",
                            target.display());
                    }
                    let backup = backup_name(target);
                    // linkat(2) without AT_SYMLINK_FOLLOW: a symlink at the target is kept
                    // as a symlink, never followed.
                    fs::hard_link(target, &backup).map_err(|source| JournalError::Backup {
                        target: target.to_path_buf(),
                        backup: backup.clone(),
                        source,
                    })?;
                    cleanup.0.push(backup.clone());
                    Some(backup)
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                Err(source) => {
                    return Err(JournalError::Backup {
                        target: target.to_path_buf(),
                        backup: backup_name(target),
                        source,
                    })
                }
            };
            files.push(Entry {
                target: target.to_path_buf(),
                temp: temp.to_path_buf(),
                backup,
            });
        }
        sync_dirs(files.iter().map(|e| e.target.as_path()))?;
        let mut swap = Swap {
            path,
            record: Record {
                version: VERSION,
                cert: cert.to_string(),
                phase: Phase::Staged,
                serial: serial.to_string(),
                files,
            },
        };
        swap.write()?;
        cleanup.0.clear(); // the journal owns the backups now
        if let Err(deploy) = staged.commit() {
            return Err(match swap.roll_back() {
                Ok(()) => JournalError::SwapFailed { deploy },
                Err(restore) => JournalError::SwapAndRestoreFailed {
                    deploy,
                    restore: Box::new(restore),
                },
            });
        }
        swap.record.phase = Phase::Swapped;
        if let Err(e) = swap.write() {
            // The journal still says `staged`, which the next start would roll back: do it
            // now, so the files on disk agree with what is reported.
            swap.record.phase = Phase::Staged;
            if let Err(restore) = swap.roll_back() {
                tracing::error!(error = %restore, "cannot restore the previous files");
            }
            return Err(e);
        }
        Ok(swap)
    }

    /// The certificate this swap replaces the files of.
    pub(crate) fn cert(&self) -> &str {
        &self.record.cert
    }

    /// The new certificate's serial (lowercase hex).
    #[cfg(test)]
    pub(crate) fn serial(&self) -> &str {
        &self.record.serial
    }

    /// Where the swap stands.
    #[cfg(test)]
    pub(crate) fn phase(&self) -> Phase {
        self.record.phase
    }

    /// Keeps the new set: removes the journal (from then on the new set is final), then the
    /// backups. A backup that cannot be removed is only logged; the sweep at the next start
    /// removes it.
    pub(crate) fn finish(self) -> Result<(), JournalError> {
        self.remove_journal()?;
        let mut dirs = BTreeSet::new();
        for e in &self.record.files {
            if let Some(b) = &e.backup {
                if let Err(err) = fs::remove_file(b) {
                    if err.kind() != io::ErrorKind::NotFound {
                        tracing::warn!(path = %b.display(), error = %err, "cannot remove backup");
                    }
                }
                dirs.insert(parent_dir(b).to_path_buf());
            }
        }
        for d in dirs {
            if let Err(err) = fsutil::sync_dir(&d) {
                tracing::warn!(dir = %d.display(), error = %err, "cannot flush directory");
            }
        }
        Ok(())
    }

    /// Puts the old set back. Safe to repeat after a crash in the middle: every step is
    /// idempotent and the journal says `rolling-back` until the last one is done.
    pub(crate) fn roll_back(mut self) -> Result<(), JournalError> {
        if self.record.phase == Phase::Swapped {
            self.record.phase = Phase::RollingBack;
            self.write()?;
        }
        self.restore()?;
        self.remove_journal()
    }

    fn restore(&self) -> Result<(), JournalError> {
        for e in &self.record.files {
            match &e.backup {
                Some(backup) => match fs::rename(backup, &e.target) {
                    // rename(2) does nothing when both names are links to one inode (the
                    // target was never replaced): the backup name must go by hand.
                    Ok(()) => {
                        remove_if_present(backup).map_err(|source| JournalError::Restore {
                            target: e.target.clone(),
                            backup: backup.clone(),
                            journal: self.path.clone(),
                            source,
                        })?
                    }
                    // Already put back by an earlier, interrupted, restore.
                    Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                    Err(source) => {
                        return Err(JournalError::Restore {
                            target: e.target.clone(),
                            backup: backup.clone(),
                            journal: self.path.clone(),
                            source,
                        })
                    }
                },
                None => {
                    // No old file: the target is ours only if its temporary was renamed
                    // onto it, i.e. the temporary is gone.
                    if fs::symlink_metadata(&e.temp).is_err() {
                        remove_if_present(&e.target).map_err(|source| JournalError::Restore {
                            target: e.target.clone(),
                            backup: PathBuf::from("(none: the file did not exist before)"),
                            journal: self.path.clone(),
                            source,
                        })?;
                    }
                }
            }
            remove_if_present(&e.temp).map_err(|source| JournalError::Restore {
                target: e.target.clone(),
                backup: e.temp.clone(),
                journal: self.path.clone(),
                source,
            })?;
        }
        sync_dirs(self.record.files.iter().map(|e| e.target.as_path()))
    }

    fn write(&self) -> Result<(), JournalError> {
        let bytes = serde_json::to_vec_pretty(&self.record).map_err(|e| JournalError::Write {
            path: self.path.clone(),
            source: io::Error::other(e),
        })?;
        fsutil::write_atomic(&self.path, &bytes, 0o600).map_err(|source| JournalError::Write {
            path: self.path.clone(),
            source,
        })
    }

    fn remove_journal(&self) -> Result<(), JournalError> {
        let remove = |source| JournalError::Remove {
            path: self.path.clone(),
            source,
        };
        remove_if_present(&self.path).map_err(remove)?;
        fsutil::sync_dir(parent_dir(&self.path)).map_err(remove)
    }
}

/// What [`recover`] found.
#[derive(Debug, Default)]
pub struct Recovery {
    /// Certificates whose interrupted swap was rolled back: their old set is in place.
    pub(crate) rolled_back: Vec<String>,
    /// Swaps that had completed: the new set is in place and still has to be reloaded and
    /// proven, then finished or rolled back.
    pub(crate) pending: Vec<Swap>,
    /// Journals that could not be dealt with; each is left in place.
    pub(crate) errors: Vec<JournalError>,
}

impl Recovery {
    /// Whether `cert` has a journal on disk that could not be read or restored, so which
    /// temporaries and backups it names is not known.
    fn unknown(&self, cert: &str) -> bool {
        self.errors.iter().any(|e| match e {
            JournalError::Read { path, .. } | JournalError::Restore { journal: path, .. } => {
                path.file_stem().is_some_and(|s| s == cert)
            }
            _ => false,
        })
    }

    /// Removes the temporaries and backups an interrupted run left beside the files of each
    /// `(certificate, files)`, sparing those a pending swap's journal names (its backups are
    /// what a roll back restores) and every one beside a certificate whose journal could not
    /// be read. Returns, per directory, the paths removed or why it could not be swept.
    pub(crate) fn sweep<'a>(
        &self,
        sets: impl IntoIterator<Item = (&'a str, &'a FileSet)>,
    ) -> Vec<(PathBuf, io::Result<Vec<PathBuf>>)> {
        let named: HashSet<&Path> = self
            .pending
            .iter()
            .flat_map(|swap| swap.record.files.iter())
            .flat_map(|e| std::iter::once(e.temp.as_path()).chain(e.backup.as_deref()))
            .collect();
        let sets = sets
            .into_iter()
            .filter(|(cert, _)| !self.unknown(cert))
            .map(|(_, files)| files);
        super::stage::sweep_temporaries_of(sets, &named)
    }
}

/// The configured targets of every certificate: certificate name → its files' paths. A
/// journal is acted on only when it names a configured certificate and only that
/// certificate's targets.
pub type Configured = HashMap<String, HashSet<PathBuf>>;

/// Finishes or undoes, as the journals in `journal_dir` say, every swap a crash
/// interrupted. Run it before anything else touches the deployed files.
///
/// Only what renewd can prove it created is renamed or removed: a journal is refused (left
/// in place and reported in [`Recovery::errors`]) unless it is a regular file of at most
/// `fsutil::caps::STATE` bytes naming a certificate of `configured`, every target it names
/// is one of that certificate's configured files, and every temporary and backup it names
/// is `.TARGETNAME.renewd-…` beside its target. In the journal directory only unfinished
/// journal writes (`.NAME.json.tmp-…`) are removed.
pub fn recover(journal_dir: &Path, configured: &Configured) -> Recovery {
    let mut out = Recovery::default();
    let entries = match fs::read_dir(journal_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return out,
        Err(e) => {
            out.errors.push(JournalError::Read {
                path: journal_dir.to_path_buf(),
                reason: Refused::Directory(e),
            });
            return out;
        }
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for path in paths {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.starts_with('.') {
            // A journal write that a crash interrupted before its rename: never in effect.
            // Anything else is not renewd's and is left alone.
            if is_unfinished_write(&name) {
                let _ = fs::remove_file(&path);
            }
            continue;
        }
        if !name.ends_with(".json") {
            continue;
        }
        let record = match read_record(&path, configured) {
            Ok(r) => r,
            Err(reason) => {
                out.errors.push(JournalError::Read { path, reason });
                continue;
            }
        };
        let swap = Swap { path, record };
        match swap.record.phase {
            Phase::Swapped => out.pending.push(swap),
            Phase::Staged | Phase::RollingBack => {
                let cert = swap.cert().to_string();
                match swap.roll_back() {
                    Ok(()) => out.rolled_back.push(cert),
                    Err(e) => out.errors.push(e),
                }
            }
        }
    }
    out
}

/// `.NAME.json.tmp-DIGITS`, the temporary of `fsutil::write_atomic` for a journal.
fn is_unfinished_write(name: &str) -> bool {
    let Some(rest) = name.strip_prefix('.') else {
        return false;
    };
    let Some((stem, digits)) = rest.rsplit_once(".json.tmp-") else {
        return false;
    };
    !stem.is_empty() && !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

fn read_record(path: &Path, configured: &Configured) -> Result<Record, Refused> {
    let bytes = fsutil::read_regular(path, fsutil::caps::STATE, fsutil::Follow::No)
        .map_err(Refused::Unreadable)?;
    let record: Record = serde_json::from_slice(&bytes).map_err(Refused::NotAJournal)?;
    if record.version != VERSION {
        return Err(Refused::Version(record.version));
    }
    let expected = path.file_stem().map(|s| s.to_string_lossy().into_owned());
    if expected.as_deref() != Some(record.cert.as_str()) {
        return Err(Refused::OtherCertificate(record.cert));
    }
    let Some(targets) = configured.get(&record.cert) else {
        return Err(Refused::NotConfigured(record.cert));
    };
    for e in &record.files {
        // Only ever rename or remove a configured target of this certificate, and renewd's
        // own temporaries and backups beside it.
        if !targets.contains(&e.target) {
            return Err(Refused::ForeignTarget {
                target: e.target.clone(),
                cert: record.cert.clone(),
            });
        }
        let prefix = e
            .target
            .file_name()
            .map(|n| format!(".{}{TEMP_MARKER}", n.to_string_lossy()));
        for p in std::iter::once(&e.temp).chain(e.backup.iter()) {
            let own = p.file_name().is_some_and(|n| {
                let n = n.to_string_lossy();
                prefix
                    .as_deref()
                    .is_some_and(|pre| n.starts_with(pre) && n.len() > pre.len())
            }) && parent_dir(p) == parent_dir(&e.target);
            if !own {
                return Err(Refused::ForeignTemporary {
                    path: p.clone(),
                    target: e.target.clone(),
                });
            }
        }
    }
    Ok(record)
}

/// The journal of `cert` in `journal_dir`.
pub(crate) fn journal_path(journal_dir: &Path, cert: &str) -> PathBuf {
    journal_dir.join(format!("{cert}.json"))
}

/// A fresh backup name beside `target`; it carries the temporaries' marker, so a backup no
/// journal refers to (a crash before the journal was written) is swept like a temporary.
fn backup_name(target: &Path) -> PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    parent_dir(target).join(format!(
        ".{name}{TEMP_MARKER}old-{:016x}",
        rand::random::<u64>()
    ))
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn sync_dirs<'a>(targets: impl Iterator<Item = &'a Path>) -> Result<(), JournalError> {
    let dirs: BTreeSet<&Path> = targets.map(parent_dir).collect();
    for dir in dirs {
        fsutil::sync_dir(dir).map_err(|source| JournalError::SyncDir {
            dir: dir.to_path_buf(),
            source,
        })?;
    }
    Ok(())
}

/// Backups made before the journal was written, removed if the swap never starts.
struct Backups(Vec<PathBuf>);

impl Drop for Backups {
    fn drop(&mut self) {
        for b in &self.0 {
            let _ = fs::remove_file(b);
        }
    }
}

#[cfg(test)]
mod tests;

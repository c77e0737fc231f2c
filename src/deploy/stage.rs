//! Staging: writing each new file in full to a temporary beside its target, and sweeping
//! the temporaries a crash left behind.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::unistd::{Gid, Uid};

use super::{check_target_dir, parent_dir, render, DeployError, Material, Ownership};
use crate::config::{FileKind, FileSet};

/// Mode of the files that hold no private key: certificates are public.
const PUBLIC_MODE: u32 = 0o644;

/// The widest mode a key-bearing file may get: owner read/write, group read.
const WIDEST_KEY_MODE: u32 = 0o640;

/// The mode a temporary is created with, whatever it is to become: owner only. It is
/// widened to its final mode only once its owner and group are final, so a setgid
/// directory handing the new file its own group cannot open a key to that group even for
/// an instant.
const CREATE_MODE: u32 = 0o600;

/// Marks renewd's temporaries, so they can be recognised (and swept) after a crash.
pub(super) const TEMP_MARKER: &str = ".renewd-";

/// Dropping it without [`Staged::commit`] removes the temporaries, so the old files stay
/// exactly as they were.
#[derive(Debug)]
pub(crate) struct Staged {
    files: Vec<StagedFile>,
}

#[derive(Debug)]
struct StagedFile {
    kind: FileKind,
    target: PathBuf,
    /// `None` once renamed onto the target.
    temp: Option<PathBuf>,
}

/// Writes every file of the set to a temporary in its target's directory, with its final
/// mode (`key_mode` for files holding the key, 0644 for the others) and owner. Every
/// target directory must pass [`check_target_dir`] first. On any error the temporaries
/// written so far are removed and the targets are untouched.
pub(crate) fn stage(
    files: &FileSet,
    m: &Material,
    owner: &Ownership,
    key_mode: u32,
) -> Result<Staged, DeployError> {
    if key_mode & !WIDEST_KEY_MODE != 0 {
        return Err(DeployError::KeyModeTooWide(key_mode));
    }
    if m.chain_pem.is_empty() {
        return Err(DeployError::EmptyChain);
    }
    if let (Some(path), None) = (&files.pkcs12, &m.pkcs12) {
        return Err(DeployError::NoPkcs12(path.clone()));
    }
    let rendered = render(files, m);
    let mut seen = HashSet::new();
    let mut dirs: Vec<&Path> = Vec::new();
    for (_, target, _) in &rendered {
        if target.file_name().is_none() {
            return Err(DeployError::NotAFilePath(target.clone()));
        }
        if !seen.insert(target.clone()) {
            return Err(DeployError::DuplicateTarget(target.clone()));
        }
        let dir = parent_dir(target);
        if !dirs.contains(&dir) {
            check_target_dir(dir)?;
            dirs.push(dir);
        }
        // Found now rather than by a rename failing half-way through the swap.
        if fs::symlink_metadata(target).is_ok_and(|m| m.is_dir()) {
            return Err(DeployError::TargetIsDirectory(target.clone()));
        }
    }

    // Pushed file by file, so an early return drops `staged` and removes what was written.
    let mut staged = Staged { files: Vec::new() };
    for (kind, target, contents) in rendered {
        let mode = if kind.holds_key() {
            key_mode
        } else {
            PUBLIC_MODE
        };
        let temp = write_temporary(&target, &contents, mode, owner)?;
        staged.files.push(StagedFile {
            kind,
            target,
            temp: Some(temp),
        });
    }
    Ok(staged)
}

impl Staged {
    /// Each staged file as (kind, target, temporary): what a swap journal records so a
    /// restart can tell which temporaries belong to an interrupted swap.
    pub(crate) fn files(&self) -> impl Iterator<Item = (FileKind, &Path, &Path)> {
        self.files
            .iter()
            .filter_map(|f| f.temp.as_deref().map(|t| (f.kind, f.target.as_path(), t)))
    }

    /// Renames every temporary onto its target, then flushes each directory once so the
    /// renames survive a power cut. A rename that fails part-way leaves the earlier targets
    /// replaced (the error says how many): undoing that is the swap journal's job, since
    /// only it kept the old contents.
    pub(crate) fn commit(mut self) -> Result<(), DeployError> {
        let total = self.files.len();
        for i in 0..total {
            let file = &mut self.files[i];
            let Some(temp) = file.temp.as_deref() else {
                continue;
            };
            if let Err(source) = fs::rename(temp, &file.target) {
                let target = file.target.clone();
                // Make what was renamed durable before reporting; the rest is dropped.
                let _ = self.sync_dirs(i);
                return Err(DeployError::Rename {
                    target,
                    replaced: i,
                    total,
                    source,
                });
            }
            file.temp = None;
        }
        self.sync_dirs(total)
    }

    /// fsync, once each, the directories of the first `n` files.
    fn sync_dirs(&self, n: usize) -> Result<(), DeployError> {
        let mut done: Vec<&Path> = Vec::new();
        for file in &self.files[..n] {
            let dir = parent_dir(&file.target);
            if done.contains(&dir) {
                continue;
            }
            done.push(dir);
            crate::fsutil::sync_dir(dir).map_err(|source| DeployError::SyncDir {
                dir: dir.to_path_buf(),
                source,
            })?;
        }
        Ok(())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        for file in &mut self.files {
            if let Some(temp) = file.temp.take() {
                if let Err(e) = fs::remove_file(&temp) {
                    if e.kind() != io::ErrorKind::NotFound {
                        tracing::warn!(path = %temp.display(), "cannot remove temporary file: {e}");
                    }
                }
            }
        }
    }
}

/// Writes `contents` to a new temporary beside `target` and returns its path.
fn write_temporary(
    target: &Path,
    contents: &[u8],
    mode: u32,
    owner: &Ownership,
) -> Result<PathBuf, DeployError> {
    let Some(name) = target.file_name() else {
        return Err(DeployError::NotAFilePath(target.to_path_buf()));
    };
    let suffix = format!("{:016x}", rand::random::<u64>());
    let temp = parent_dir(target).join(format!(".{}{TEMP_MARKER}{suffix}", name.to_string_lossy()));
    let err = |action: &'static str, temp: &Path| {
        let target = target.to_path_buf();
        let temp = temp.to_path_buf();
        move |source| DeployError::Stage {
            action,
            target,
            temp,
            source,
        }
    };
    let mut file = create_exclusive(&temp, mode & CREATE_MODE).map_err(err("create", &temp))?;
    // From here on the file exists: remove it if anything else fails.
    let result = (|| {
        // Owner and group first, while only renewd's user can read the file; then the
        // final mode (which the umask filtered out of open(2)); then the contents.
        if owner.uid.is_some() || owner.gid.is_some() {
            std::os::unix::fs::fchown(
                &file,
                owner.uid.map(Uid::as_raw),
                owner.gid.map(Gid::as_raw),
            )
            .map_err(err("set the owner of", &temp))?;
        }
        file.set_permissions(Permissions::from_mode(mode))
            .map_err(err("set the mode of", &temp))?;
        file.write_all(contents).map_err(err("write", &temp))?;
        file.sync_all().map_err(err("flush", &temp))
    })();
    if let Err(e) = result {
        drop(file);
        let _ = fs::remove_file(&temp);
        return Err(e);
    }
    Ok(temp)
}

/// O_CREAT|O_EXCL|O_NOFOLLOW: whatever already sits at the name — a leftover, or a symlink
/// planted to redirect the write of a private key — makes this fail (EEXIST) instead of
/// being followed or reused, and a file that did not exist is a new inode that no hard link
/// shares. The umask can only narrow `mode`.
pub(super) fn create_exclusive(path: &Path, mode: u32) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(path)
}

/// Removes temporaries a crashed run left beside the targets of the file sets `sets`,
/// returning their paths, except those in `spare`. Run it only after the swap journal has
/// been replayed, sparing what a pending swap still needs ([`super::journal::Recovery::sweep`]).
///
/// Only names are removed (unlink(2) never follows a symlink), only in directories that
/// pass [`check_target_dir`] (an unsafe one is an error; a missing one has nothing to
/// sweep), and a directory that merely carries a temporary's name is left alone.
///
/// Each directory is checked and read once however many sets have files there (a host with 1,000 certificates in one directory
/// would otherwise read it 1,000 times). One result per directory, in no set order.
pub(crate) fn sweep_temporaries_of<'a>(
    sets: impl IntoIterator<Item = &'a FileSet>,
    spare: &HashSet<&Path>,
) -> Vec<(PathBuf, io::Result<Vec<PathBuf>>)> {
    // Directory → the names of the temporaries of its targets (".NAME.renewd-tmp.").
    let mut dirs: HashMap<&Path, HashSet<String>> = HashMap::new();
    for files in sets {
        for (_, target) in files.iter() {
            let Some(name) = target.file_name() else {
                continue;
            };
            dirs.entry(parent_dir(target))
                .or_default()
                .insert(format!(".{}{TEMP_MARKER}", name.to_string_lossy()));
        }
    }
    dirs.into_iter()
        .map(|(dir, prefixes)| (dir.to_path_buf(), sweep_dir(dir, &prefixes, spare)))
        .collect()
}

fn sweep_dir(
    dir: &Path,
    prefixes: &HashSet<String>,
    spare: &HashSet<&Path>,
) -> io::Result<Vec<PathBuf>> {
    match check_target_dir(dir) {
        Ok(()) => {}
        Err(DeployError::MissingDirectory { .. }) => return Ok(Vec::new()),
        Err(e) => return Err(io::Error::other(e)),
    }
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut removed = Vec::new();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        // A temporary is ".TARGET.renewd-SUFFIX": look up each prefix the name could have
        // (a target's own name may contain the marker too).
        let is_ours = name
            .match_indices(TEMP_MARKER)
            .any(|(i, _)| prefixes.contains(&name[..i + TEMP_MARKER.len()]));
        if !is_ours {
            continue;
        }
        let path = entry.path();
        if spare.contains(path.as_path()) {
            continue;
        }
        // The entry's own type, from the directory: a symlink is not followed.
        if entry.file_type()?.is_dir() {
            tracing::warn!(path = %path.display(),
                "a directory carries the name of a renewd temporary; left alone");
            continue;
        }
        match fs::remove_file(&path) {
            Ok(()) => removed.push(path),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(removed)
}

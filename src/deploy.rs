//! Putting a certificate's file set into place, and reading back what is in place.
//!
//! Every file is first written in full to a temporary beside its target, with its final mode
//! and owner fixed before the first byte lands, so a private key is never readable by anyone
//! it should not be, not even for an instant, and a full disk or a read-only mount is found
//! while the old files are still untouched. Only when every temporary is on disk are they
//! renamed over their targets. Staging and committing are separate steps ([`stage`] and
//! [`Staged::commit`]) so that a swap journal can be written between the two: that journal,
//! not this module, is what lets a restart after a crash finish or undo a half-done swap.
//!
//! Nothing is written into a directory that another user could write into, or could swap
//! for another one ([`check_target_dir`]): that is what makes working with path names
//! (rather than directory descriptors) safe here. Within such a directory, a name is never
//! opened for writing unless this process has just created it (`O_CREAT|O_EXCL|O_NOFOLLOW`),
//! so a symlink or hard link planted at a target or temporary name is replaced or refused,
//! never written through.

use std::collections::{HashMap, HashSet, VecDeque};
use std::ffi::OsString;
use std::fmt;
use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::unistd::{Gid, Group, Uid, User};

use crate::config::{Config, FileKind, FileSet, Problem};
use crate::fsutil::{steps, trusted_uid, Step};
use crate::x509::{self, CertInfo};

pub mod journal;

/// Mode of the files that hold no private key: certificates are public.
const PUBLIC_MODE: u32 = 0o644;

/// The widest mode a key-bearing file may get: owner read/write, group read.
const WIDEST_KEY_MODE: u32 = 0o640;

/// The mode a temporary is created with, whatever it is to become: owner only. It is
/// widened to its final mode only once its owner and group are final, so a setgid
/// directory handing the new file its own group cannot open a key to that group even for
/// an instant.
const CREATE_MODE: u32 = 0o600;

/// Symlinks followed while checking a target directory, at most (the kernel's own limit).
const MAX_SYMLINKS: usize = 40;

/// Deployed files larger than this are not certificates; refusing them keeps [`inspect`]
/// from reading a multi-gigabyte file someone put at a certificate's path.
const MAX_DEPLOYED_FILE: u64 = 1 << 20;

/// Marks renewd's temporaries, so they can be recognised (and swept) after a crash.
const TEMP_MARKER: &str = ".renewd-";

/// What gets deployed: a private key and the chain the CA returned for it.
pub struct Material {
    /// PEM of the private key.
    pub key_pem: String,
    /// The leaf first, then the intermediates; each one PEM block ending in "\n".
    pub chain_pem: Vec<String>,
}

impl fmt::Debug for Material {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Material")
            .field("key_pem", &"<redacted>")
            .field("chain_pem", &self.chain_pem)
            .finish()
    }
}

/// Who the deployed files belong to; `None` leaves that id as the daemon's own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ownership {
    pub uid: Option<Uid>,
    pub gid: Option<Gid>,
}

impl Ownership {
    /// Looks the names up in the user and group databases; a name that is not found but is
    /// a number is taken as a numeric id, as chown(1) does.
    pub fn resolve(user: Option<&str>, group: Option<&str>) -> Result<Ownership, DeployError> {
        let uid = match user {
            None => None,
            Some(name) => Some(match User::from_name(name) {
                Ok(Some(u)) => u.uid,
                Ok(None) => match name.parse::<u32>() {
                    Ok(n) => Uid::from_raw(n),
                    Err(_) => return Err(DeployError::UnknownUser(name.to_string())),
                },
                Err(e) => {
                    return Err(DeployError::AccountLookup {
                        name: name.to_string(),
                        source: e.into(),
                    })
                }
            }),
        };
        let gid = match group {
            None => None,
            Some(name) => Some(match Group::from_name(name) {
                Ok(Some(g)) => g.gid,
                Ok(None) => match name.parse::<u32>() {
                    Ok(n) => Gid::from_raw(n),
                    Err(_) => return Err(DeployError::UnknownGroup(name.to_string())),
                },
                Err(e) => {
                    return Err(DeployError::AccountLookup {
                        name: name.to_string(),
                        source: e.into(),
                    })
                }
            }),
        };
        Ok(Ownership { uid, gid })
    }
}

/// Why a file set could not be put in place.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("unknown user {0:?}: create it or change `user` in the configuration")]
    UnknownUser(String),
    #[error("unknown group {0:?}: create it or change `group` in the configuration")]
    UnknownGroup(String),
    #[error("cannot look up {name:?} in the user/group database: {source}")]
    AccountLookup { name: String, source: io::Error },
    #[error("key mode {0:04o} is wider than 0640; private keys must not be readable by others")]
    KeyModeTooWide(u32),
    #[error("nothing to deploy: the CA returned no certificate")]
    EmptyChain,
    #[error("{0} is not a file path")]
    NotAFilePath(PathBuf),
    #[error("{0} is configured for two files of the same certificate")]
    DuplicateTarget(PathBuf),
    #[error("{0} is a directory; renewd only replaces files")]
    TargetIsDirectory(PathBuf),
    #[error(
        "the directory {dir} does not exist ({missing} is missing); renewd creates no \
         directories: create it, owned by root and writable by nobody else, or fix `files`"
    )]
    MissingDirectory { dir: PathBuf, missing: PathBuf },
    #[error("the directory {dir} cannot be used: {path} is not a directory; fix `files`")]
    NotADirectory { dir: PathBuf, path: PathBuf },
    #[error("cannot inspect {path} on the way to the directory {dir}: {source}")]
    DirectoryLookup {
        dir: PathBuf,
        path: PathBuf,
        source: io::Error,
    },
    /// A directory another user could write into, or swap for one of their own.
    #[error("refusing to write into {dir}: {reason}")]
    UnsafeDirectory { dir: PathBuf, reason: String },
    #[error("cannot {action} {temp} (the new {target}): {source}{}", os_hint(.source))]
    Stage {
        action: &'static str,
        target: PathBuf,
        temp: PathBuf,
        source: io::Error,
    },
    #[error(
        "cannot move the new file into place at {target}: {source}{}; \
         {replaced} of {total} files of this certificate were already replaced",
        os_hint(.source)
    )]
    Rename {
        target: PathBuf,
        replaced: usize,
        total: usize,
        source: io::Error,
    },
    #[error("cannot flush directory {dir} to disk after replacing files in it: {source}")]
    SyncDir { dir: PathBuf, source: io::Error },
}

/// What an operating system error usually means for a deployment, and what to do.
fn os_hint(e: &io::Error) -> &'static str {
    match e.raw_os_error().map(Errno::from_raw) {
        Some(Errno::ENOSPC) => " (free some space on that filesystem)",
        Some(Errno::EDQUOT) => " (the disk quota of renewd's user there is used up)",
        Some(Errno::EROFS) => {
            " (that filesystem is read-only; under systemd, the unit's sandbox allows \
             writes only below its ReadWritePaths=)"
        }
        Some(Errno::EACCES | Errno::EPERM) => " (renewd's user may not write there)",
        Some(Errno::EEXIST) => {
            " (something already exists at that name: a leftover, or a planted link; \
             nothing was written through it)"
        }
        _ => "",
    }
}

/// The contents of each configured file: cert = leaf; chain = intermediates; fullchain =
/// leaf + intermediates; key = key; combined = key + fullchain (the order HAProxy reads).
pub fn render(files: &FileSet, m: &Material) -> Vec<(FileKind, PathBuf, Vec<u8>)> {
    let blocks: Vec<String> = m.chain_pem.iter().map(|b| with_newline(b)).collect();
    let key = with_newline(&m.key_pem);
    let leaf = blocks.first().cloned().unwrap_or_default();
    let intermediates = blocks.get(1..).unwrap_or_default().concat();
    let fullchain = blocks.concat();
    files
        .iter()
        .map(|(kind, path)| {
            let text = match kind {
                FileKind::Cert => leaf.clone(),
                FileKind::Chain => intermediates.clone(),
                FileKind::Fullchain => fullchain.clone(),
                FileKind::Key => key.clone(),
                FileKind::Combined => format!("{key}{fullchain}"),
            };
            (kind, path.to_path_buf(), text.into_bytes())
        })
        .collect()
}

/// Concatenated PEM blocks must each start on a line of their own.
fn with_newline(s: &str) -> String {
    if s.is_empty() || s.ends_with('\n') {
        s.to_string()
    } else {
        format!("{s}\n")
    }
}

/// Writes the whole file set: stage every file, then rename them all into place.
pub fn deploy(
    files: &FileSet,
    m: &Material,
    owner: &Ownership,
    key_mode: u32,
) -> Result<(), DeployError> {
    stage(files, m, owner, key_mode)?.commit()
}

/// A file set written to temporaries beside its targets, not yet renamed into place.
/// Dropping it without [`Staged::commit`] removes the temporaries, so the old files stay
/// exactly as they were.
#[derive(Debug)]
pub struct Staged {
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
pub fn stage(
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
    pub fn files(&self) -> impl Iterator<Item = (FileKind, &Path, &Path)> {
        self.files
            .iter()
            .filter_map(|f| f.temp.as_deref().map(|t| (f.kind, f.target.as_path(), t)))
    }

    /// Renames every temporary onto its target, then flushes each directory once so the
    /// renames survive a power cut. A rename that fails part-way leaves the earlier targets
    /// replaced (the error says how many): undoing that is the swap journal's job, since
    /// only it kept the old contents.
    pub fn commit(mut self) -> Result<(), DeployError> {
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

fn parent_dir(target: &Path) -> &Path {
    match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
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
fn create_exclusive(path: &Path, mode: u32) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(path)
}

/// Removes temporaries a crashed run left beside the targets of `files`, returning their
/// paths. Run it only after the swap journal has been replayed: an interrupted swap may
/// still need its temporaries.
///
/// Only names are removed (unlink(2) never follows a symlink), only in directories that
/// pass [`check_target_dir`] (an unsafe one is an error; a missing one has nothing to
/// sweep), and a directory that merely carries a temporary's name is left alone.
pub fn sweep_temporaries(files: &FileSet) -> io::Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    for (_, result) in sweep_temporaries_of([files]) {
        removed.extend(result?);
    }
    Ok(removed)
}

/// [`sweep_temporaries`] for many file sets at once, each directory checked and read once
/// however many sets have files there (a host with 1,000 certificates in one directory
/// would otherwise read it 1,000 times). One result per directory, in no set order.
pub fn sweep_temporaries_of<'a>(
    sets: impl IntoIterator<Item = &'a FileSet>,
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
        .map(|(dir, prefixes)| (dir.to_path_buf(), sweep_dir(dir, &prefixes)))
        .collect()
}

fn sweep_dir(dir: &Path, prefixes: &HashSet<String>) -> io::Result<Vec<PathBuf>> {
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

/// Checks that no user but root and renewd's own could put anything into `dir`, or
/// replace `dir` itself, before renewd writes private keys there:
///
/// * `dir` (after following symlinks) is owned by root or renewd's effective user, and is
///   writable by nobody else: not by every user (even with the sticky bit: /tmp-like
///   directories are refused), and by its group only when that group is root or renewd's
///   effective group;
/// * every directory on the way to it — each ancestor, and each directory traversed while
///   following a symlink — is owned by root or renewd's user, and is writable by nobody
///   else unless it has the sticky bit (as /tmp has), in which case what renewd goes
///   through next inside it must belong to root or renewd's user (the sticky bit keeps
///   others from renaming or removing it);
/// * every symlink on the way is followed, and judged by who may replace it.
///
/// Together these mean the names renewd opens, renames and removes under `dir` cannot be
/// redirected by anyone else between the check and the use. A missing directory is an
/// error too: renewd creates no directories. POSIX ACLs are not read (an ACL that grants
/// write shows as group write in the mode, and is judged as such).
pub fn check_target_dir(dir: &Path) -> Result<(), DeployError> {
    let (visited, last) = walk_to_dir(dir)?;
    let unsafe_dir = |reason: String| DeployError::UnsafeDirectory {
        dir: dir.to_path_buf(),
        reason,
    };

    // The directory itself first: it is the one the configuration names.
    let target = &visited[last].meta;
    if !trusted_uid(target.uid()) {
        return Err(unsafe_dir(format!(
            "it is owned by user {} ({}), who can change its permissions and put files or \
             symlinks in it; make root (or renewd's user) its owner: chown root {}",
            user_name(target.uid()),
            describe(target),
            dir.display()
        )));
    }
    match other_writers(target) {
        Some(Writers::Everyone) => {
            let sticky = if target.mode() & nix::libc::S_ISVTX != 0 {
                "; the sticky bit does not make it safe"
            } else {
                ""
            };
            return Err(unsafe_dir(format!(
                "every user can write in it ({}{sticky}), so anyone could plant files or \
                 symlinks beside the private keys; make it writable only by its owner: \
                 chmod go-w {}",
                describe(target),
                dir.display()
            )));
        }
        Some(Writers::Group(gid)) => {
            return Err(unsafe_dir(format!(
                "group {} can write in it ({}), and only group root or renewd's own group \
                 may, so its members could plant files or symlinks beside the private keys; \
                 remove the group's write permission (chmod g-w {}) or make its group root",
                group_name(gid),
                describe(target),
                dir.display()
            )));
        }
        None => {}
    }

    // Then everything on the way to it, from the root down.
    for (i, v) in visited.iter().enumerate() {
        if i != last && v.meta.is_dir() {
            if !trusted_uid(v.meta.uid()) {
                return Err(unsafe_dir(format!(
                    "{} on the way to it is owned by user {} ({}), who could move it away \
                     and put another directory or a symlink in its place; make root its \
                     owner (chown root {}) or use a directory elsewhere",
                    v.path.display(),
                    user_name(v.meta.uid()),
                    describe(&v.meta),
                    v.path.display()
                )));
            }
            if let Some(who) = other_writers(&v.meta) {
                if v.meta.mode() & nix::libc::S_ISVTX == 0 {
                    return Err(unsafe_dir(format!(
                        "{who} can write in {} on the way to it ({}), so could move it away \
                         and put another directory or a symlink in its place; remove that \
                         write permission (chmod go-w {}) or set the sticky bit \
                         (chmod +t {})",
                        v.path.display(),
                        describe(&v.meta),
                        v.path.display(),
                        v.path.display()
                    )));
                }
            }
        }
        // Inside a sticky directory others can write, only an entry's owner (or the
        // directory's) can rename or remove it.
        if let Some(parent) = v.parent.map(|p| &visited[p]) {
            if let Some(who) = other_writers(&parent.meta) {
                if !trusted_uid(v.meta.uid()) {
                    return Err(unsafe_dir(format!(
                        "{} on the way to it belongs to user {} and sits in {}, where {who} \
                         can write ({}), so that user could replace it; use a path that only \
                         root or renewd's user controls",
                        v.path.display(),
                        user_name(v.meta.uid()),
                        parent.path.display(),
                        describe(&parent.meta)
                    )));
                }
            }
        }
    }
    Ok(())
}

/// `renewd check`'s look at the directories files are deployed to: each must pass
/// [`check_target_dir`]. Missing directories are left to
/// [`Config::check_environment`], which reports them already.
pub fn check_directories(config: &Config) -> Vec<Problem> {
    let mut problems = Vec::new();
    for cert in &config.certificates {
        let mut seen: Vec<&Path> = Vec::new();
        for (kind, path) in cert.files.iter() {
            let dir = parent_dir(path);
            if seen.contains(&dir) {
                continue;
            }
            seen.push(dir);
            match check_target_dir(dir) {
                Ok(())
                | Err(DeployError::MissingDirectory { .. })
                | Err(DeployError::NotADirectory { .. })
                | Err(DeployError::DirectoryLookup { .. }) => {}
                Err(e) => problems.push(Problem::new(
                    cert.key_location(&format!("files.{kind}")).clone(),
                    format!("`files.{kind}`: {e}"),
                )),
            }
        }
    }
    problems
}

/// Why the deployed file at `path` carries access a renewal will drop: a POSIX access ACL
/// (`system.posix_acl_access`, as `setfacl -m` sets it), since the new file gets only the
/// configured owner, group and mode. `kind` chooses the advice. `None` when there is no file
/// or no ACL (or the file system keeps none).
pub fn acl_dropped(kind: FileKind, path: &Path) -> Option<String> {
    let acl = xattr::get_deref(path, "system.posix_acl_access").ok()??;
    if acl.is_empty() {
        return None;
    }
    let advice = match kind {
        FileKind::Key | FileKind::Combined => {
            "give readers access through `group` and `key_mode` (at most 0640) instead"
        }
        _ => "give readers access through `group` (the file is written 0644) instead",
    };
    Some(format!(
        "{} has a POSIX ACL (getfacl shows it); the next renewal replaces the file with a new \
         one without it; {advice}",
        path.display()
    ))
}

/// Files two configured targets would share although their paths differ: each target is
/// identified by its resolved directory (device and inode, symlinks followed) and its name,
/// so `/etc/tls/a.pem` and `/etc/tls-link/a.pem` through a symlinked directory, or two
/// spellings with `..`, are the same file. The loader already refuses identical paths;
/// this needs the file system, so `renewd check`, `renewd run` (at start, and on reload)
/// ask it. A directory that cannot be resolved is skipped (reported elsewhere).
pub fn clashing_targets(config: &Config) -> Vec<Problem> {
    use std::collections::hash_map::Entry;
    let mut problems = Vec::new();
    let mut seen: HashMap<(u64, u64, OsString), (String, FileKind, &Path)> = HashMap::new();
    for cert in &config.certificates {
        for (kind, path) in cert.files.iter() {
            let (Some(name), Ok(dir)) = (path.file_name(), fs::metadata(parent_dir(path))) else {
                continue;
            };
            match seen.entry((dir.dev(), dir.ino(), name.to_os_string())) {
                Entry::Vacant(v) => {
                    v.insert((cert.name.clone(), kind, path));
                }
                Entry::Occupied(o) => {
                    let (other, other_kind, other_path) = o.get();
                    problems.push(Problem::new(
                        cert.key_location(&format!("files.{kind}")).clone(),
                        format!(
                            "`files.{kind}` {} is the same file as {} (`files.{other_kind}` of \
                             certificate `{other}`) through a symlinked directory or another \
                             spelling; each file must be written by one certificate only",
                            path.display(),
                            other_path.display()
                        ),
                    ));
                }
            }
        }
    }
    problems
}

/// One thing passed through on the way to a target directory.
struct Visited {
    path: PathBuf,
    /// lstat(2): for a symlink, the link's own owner.
    meta: fs::Metadata,
    /// The directory it was found in (an index into the walk); `None` for `/`.
    parent: Option<usize>,
}

/// Resolves `dir` the way the kernel does, one name at a time, recording every directory
/// and symlink passed through. Returns them and the index of the directory reached.
fn walk_to_dir(dir: &Path) -> Result<(Vec<Visited>, usize), DeployError> {
    let lookup = |path: &Path, source: io::Error| DeployError::DirectoryLookup {
        dir: dir.to_path_buf(),
        path: path.to_path_buf(),
        source,
    };
    let absolute = if dir.is_absolute() {
        dir.to_path_buf()
    } else {
        let cwd = std::env::current_dir().map_err(|e| lookup(dir, e))?;
        cwd.join(dir)
    };
    let root = Path::new("/");
    let mut visited = vec![Visited {
        path: root.to_path_buf(),
        meta: fs::symlink_metadata(root).map_err(|e| lookup(root, e))?,
        parent: None,
    }];
    // The directories from `/` down to where the walk is now.
    let mut stack = vec![0usize];
    let mut pending: VecDeque<Step> = steps(&absolute).collect();
    let mut links = 0;
    while let Some(step) = pending.pop_front() {
        let name = match step {
            Step::Up => {
                if stack.len() > 1 {
                    stack.pop();
                }
                continue;
            }
            Step::Name(name) => name,
        };
        let parent = stack.last().copied().unwrap_or(0);
        let path = visited[parent].path.join(&name);
        let meta = match fs::symlink_metadata(&path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(DeployError::MissingDirectory {
                    dir: dir.to_path_buf(),
                    missing: path,
                })
            }
            Err(e) => return Err(lookup(&path, e)),
        };
        let kind = meta.file_type();
        visited.push(Visited {
            path: path.clone(),
            meta,
            parent: Some(parent),
        });
        if kind.is_dir() {
            stack.push(visited.len() - 1);
        } else if kind.is_symlink() {
            links += 1;
            if links > MAX_SYMLINKS {
                return Err(lookup(&path, io::Error::from(Errno::ELOOP)));
            }
            let target = fs::read_link(&path).map_err(|e| lookup(&path, e))?;
            if target.is_absolute() {
                stack.truncate(1);
            }
            for step in steps(&target).collect::<Vec<_>>().into_iter().rev() {
                pending.push_front(step);
            }
        } else {
            return Err(DeployError::NotADirectory {
                dir: dir.to_path_buf(),
                path,
            });
        }
    }
    let last = stack.last().copied().unwrap_or(0);
    Ok((visited, last))
}

/// Root's group and renewd's own: group write for these gives no one else a say.
fn trusted_gid(gid: u32) -> bool {
    gid == 0 || gid == Gid::effective().as_raw()
}

enum Writers {
    Everyone,
    Group(u32),
}

impl fmt::Display for Writers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Writers::Everyone => f.write_str("every user"),
            Writers::Group(gid) => write!(f, "group {}", group_name(*gid)),
        }
    }
}

/// Who besides its owner (and root) may create, rename or remove entries in a directory.
fn other_writers(meta: &fs::Metadata) -> Option<Writers> {
    if !meta.is_dir() {
        return None;
    }
    if meta.mode() & 0o002 != 0 {
        Some(Writers::Everyone)
    } else if meta.mode() & 0o020 != 0 && !trusted_gid(meta.gid()) {
        Some(Writers::Group(meta.gid()))
    } else {
        None
    }
}

/// "owner root, group staff, mode 2775"
fn describe(meta: &fs::Metadata) -> String {
    format!(
        "owner {}, group {}, mode {:04o}",
        user_name(meta.uid()),
        group_name(meta.gid()),
        meta.mode() & 0o7777
    )
}

fn user_name(uid: u32) -> String {
    match User::from_uid(Uid::from_raw(uid)) {
        Ok(Some(user)) => user.name,
        _ => uid.to_string(),
    }
}

fn group_name(gid: u32) -> String {
    match Group::from_gid(Gid::from_raw(gid)) {
        Ok(Some(group)) => group.name,
        _ => gid.to_string(),
    }
}

/// Why what is deployed now cannot be used as is (and so needs a renewal).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DeployedProblem {
    #[error("{} does not exist", .0.display())]
    Missing(PathBuf),
    #[error("{} cannot be read: {}", .0.display(), .1)]
    Unreadable(PathBuf, String),
    #[error("{} does not hold what it should: {}", .0.display(), .1)]
    Invalid(PathBuf, String),
    #[error("the private key in {} does not belong to the deployed certificate", .0.display())]
    KeyMismatch(PathBuf),
    #[error("{0}")]
    Inconsistent(String),
}

/// Reads what is deployed now and returns the leaf certificate if the set is usable:
/// every configured file present and readable, the leaf the same in the cert, fullchain
/// and combined files, the chain file equal to the intermediates of the fullchain, and the
/// key (in the key and combined files) belonging to the leaf.
pub fn inspect(files: &FileSet) -> Result<CertInfo, DeployedProblem> {
    // (path, whole chain) for each file that carries the leaf, in order of preference.
    let mut chains: Vec<(FileKind, PathBuf, Vec<Vec<u8>>)> = Vec::new();
    let mut intermediates: Option<(PathBuf, Vec<Vec<u8>>)> = None;
    let mut keys = Vec::new();

    for (kind, path) in files.iter() {
        let data = read_deployed(path)?;
        let invalid =
            |e: x509::X509Error| DeployedProblem::Invalid(path.to_path_buf(), e.to_string());
        match kind {
            FileKind::Cert | FileKind::Fullchain | FileKind::Combined => {
                let certs = x509::pem_certificates(&data).map_err(invalid)?;
                if kind == FileKind::Combined {
                    keys.push((
                        path.to_path_buf(),
                        x509::pem_private_key(&data).map_err(invalid)?,
                    ));
                }
                chains.push((kind, path.to_path_buf(), certs));
            }
            FileKind::Chain => {
                // A certificate issued straight from a root has no intermediates.
                let certs = if data.iter().all(u8::is_ascii_whitespace) {
                    Vec::new()
                } else {
                    x509::pem_certificates(&data).map_err(invalid)?
                };
                intermediates = Some((path.to_path_buf(), certs));
            }
            FileKind::Key => {
                keys.push((
                    path.to_path_buf(),
                    x509::pem_private_key(&data).map_err(invalid)?,
                ));
            }
        }
    }

    let rank = |k: FileKind| match k {
        FileKind::Fullchain => 0,
        FileKind::Cert => 1,
        _ => 2,
    };
    chains.sort_by_key(|(k, _, _)| rank(*k));
    let Some((_, leaf_path, leaf_chain)) = chains.first() else {
        return Err(DeployedProblem::Inconsistent(
            "no cert, fullchain or combined file is configured, so there is no certificate to check"
                .into(),
        ));
    };
    let leaf_der = &leaf_chain[0];
    for (_, path, chain) in &chains[1..] {
        if chain[0] != *leaf_der {
            return Err(DeployedProblem::Inconsistent(format!(
                "{} and {} hold different certificates",
                leaf_path.display(),
                path.display()
            )));
        }
    }
    if let Some((chain_path, certs)) = &intermediates {
        if let Some((_, full_path, full)) = chains.iter().find(|(k, _, _)| *k != FileKind::Cert) {
            if full[1..] != certs[..] {
                return Err(DeployedProblem::Inconsistent(format!(
                    "{} does not hold the intermediates that follow the certificate in {}",
                    chain_path.display(),
                    full_path.display()
                )));
            }
        }
    }

    let leaf = CertInfo::parse_der(leaf_der)
        .map_err(|e| DeployedProblem::Invalid(leaf_path.clone(), e.to_string()))?;
    for (path, key) in keys {
        if !key.matches(&leaf) {
            return Err(DeployedProblem::KeyMismatch(path));
        }
    }
    Ok(leaf)
}

/// Reads a deployed file without hanging on a FIFO or slurping a huge file.
///
/// A symlink at the path is followed (certbot's `live/` files are symlinks, and renewd
/// reads them until its first deployment replaces them), but only a regular file is ever
/// opened: opening a device node can have side effects.
fn read_deployed(path: &Path) -> Result<Vec<u8>, DeployedProblem> {
    use crate::fsutil::ReadError;
    crate::fsutil::read_regular(path, MAX_DEPLOYED_FILE, crate::fsutil::Follow::Yes).map_err(|e| {
        match e {
            ReadError::NotFound(_) => DeployedProblem::Missing(path.to_path_buf()),
            ReadError::Io { ref source, .. } => {
                DeployedProblem::Unreadable(path.to_path_buf(), source.to_string())
            }
            ReadError::TooLarge { max, .. } => DeployedProblem::Invalid(
                path.to_path_buf(),
                format!("larger than {max} bytes, too large for a certificate or key"),
            ),
            other => DeployedProblem::Invalid(path.to_path_buf(), other.reason()),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::KeyType;
    use crate::x509::PrivateKey;
    use std::os::unix::fs::MetadataExt;
    use std::sync::Mutex;

    /// The umask is per process; tests that depend on it or create files whose modes they
    /// check take this lock.
    static UMASK: Mutex<()> = Mutex::new(());

    /// Sets the umask back when dropped.
    struct Restore(nix::sys::stat::Mode);

    impl Drop for Restore {
        fn drop(&mut self) {
            nix::sys::stat::umask(self.0);
        }
    }

    fn lock() -> std::sync::MutexGuard<'static, ()> {
        UMASK.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A temporary directory only its owner can write, whatever the umask: deploying
    /// refuses directories others can write, and tempfile's default is 0777 & !umask.
    fn tempdir() -> tempfile::TempDir {
        tempfile::Builder::new()
            .permissions(Permissions::from_mode(0o700))
            .tempdir()
            .expect("tempdir")
    }

    /// mkdir, mode 0755 whatever the umask.
    fn mkdir(path: impl AsRef<Path>) {
        let path = path.as_ref();
        fs::create_dir(path).expect("mkdir");
        fs::set_permissions(path, Permissions::from_mode(0o755)).expect("chmod");
    }

    fn mkdir_all(path: impl AsRef<Path>) {
        let path = path.as_ref();
        if let Some(parent) = path.parent() {
            if !parent.exists() {
                mkdir_all(parent);
            }
        }
        mkdir(path);
    }

    struct Issued {
        key: PrivateKey,
        material: Material,
    }

    /// A leaf signed by a throwaway intermediate: a real two-certificate chain.
    fn issue(names: &[&str]) -> Issued {
        let ca_key = rcgen::KeyPair::generate().expect("ca key");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).expect("ca cert");
        let issuer = rcgen::Issuer::new(ca_params, ca_key);

        let key = PrivateKey::generate(KeyType::EcdsaP256).expect("key");
        let leaf_key = rcgen::KeyPair::from_pem(&key.to_pem()).expect("reload");
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let leaf = rcgen::CertificateParams::new(names)
            .expect("params")
            .signed_by(&leaf_key, &issuer)
            .expect("leaf");
        Issued {
            material: Material {
                key_pem: key.to_pem(),
                chain_pem: vec![leaf.pem(), ca_cert.pem()],
            },
            key,
        }
    }

    fn all_files(dir: &Path) -> FileSet {
        FileSet {
            cert: Some(dir.join("cert.pem")),
            chain: Some(dir.join("chain.pem")),
            fullchain: Some(dir.join("fullchain.pem")),
            key: Some(dir.join("key.pem")),
            combined: Some(dir.join("combined.pem")),
        }
    }

    fn mode(path: &Path) -> u32 {
        fs::symlink_metadata(path)
            .expect("stat")
            .permissions()
            .mode()
            & 0o7777
    }

    fn temporaries(dir: &Path) -> Vec<String> {
        fs::read_dir(dir)
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(TEMP_MARKER))
            .collect()
    }

    #[test]
    fn render_puts_each_part_in_its_file() {
        let dir = Path::new("/d");
        let m = Material {
            key_pem: "K\n".into(),
            chain_pem: vec!["L\n".into(), "I1\n".into(), "I2".into()],
        };
        let out = render(&all_files(dir), &m);
        let text: Vec<(FileKind, String)> = out
            .into_iter()
            .map(|(k, _, c)| (k, String::from_utf8(c).expect("utf8")))
            .collect();
        assert_eq!(
            text,
            vec![
                (FileKind::Cert, "L\n".into()),
                (FileKind::Chain, "I1\nI2\n".into()),
                (FileKind::Fullchain, "L\nI1\nI2\n".into()),
                (FileKind::Key, "K\n".into()),
                (FileKind::Combined, "K\nL\nI1\nI2\n".into()),
            ]
        );
        assert!(!format!("{m:?}").contains("K\\n"));
    }

    #[test]
    fn deploys_all_five_kinds_with_exact_modes_under_any_umask() {
        let _guard = lock();
        for umask in [0o000, 0o077] {
            // Made before the umask changes: under umask 0 it would be world-writable,
            // which deploying refuses.
            let dir = tempdir();
            let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(umask));
            // Put back even if an assertion fails, so other tests do not run under it.
            let restore = Restore(old);
            let files = all_files(dir.path());
            let issued = issue(&["example.org"]);

            for key_mode in [0o600, 0o640] {
                let staged = stage(&files, &issued.material, &Ownership::default(), key_mode)
                    .expect("stage");
                // Before any rename the temporaries already carry their final modes.
                for (kind, target, temp) in staged.files() {
                    let want = if kind.holds_key() { key_mode } else { 0o644 };
                    assert_eq!(mode(temp), want, "{kind:?} temp, umask {umask:o}");
                    assert_eq!(parent_dir(temp), parent_dir(target));
                    assert!(!target.exists() || key_mode == 0o640);
                }
                staged.commit().expect("commit");

                for (kind, path) in files.iter() {
                    let want = if kind.holds_key() { key_mode } else { 0o644 };
                    assert_eq!(mode(path), want, "{kind:?}, umask {umask:o}");
                }
                assert!(temporaries(dir.path()).is_empty());
            }
            drop(restore);

            let m = &issued.material;
            let read =
                |p: &Option<PathBuf>| fs::read_to_string(p.as_ref().expect("path")).expect("read");
            assert_eq!(read(&files.cert), m.chain_pem[0]);
            assert_eq!(read(&files.chain), m.chain_pem[1]);
            assert_eq!(read(&files.fullchain), m.chain_pem.concat());
            assert_eq!(read(&files.key), m.key_pem);
            assert_eq!(
                read(&files.combined),
                format!("{}{}", m.key_pem, m.chain_pem.concat())
            );

            let leaf = inspect(&files).expect("inspect");
            assert!(issued.key.matches(&leaf));
            assert_eq!(leaf.dns_names, vec!["example.org"]);
        }
    }

    #[test]
    fn key_mode_wider_than_0640_is_refused() {
        let dir = tempdir();
        let issued = issue(&["example.org"]);
        for bad in [0o644, 0o660, 0o604, 0o4600] {
            let err = deploy(
                &all_files(dir.path()),
                &issued.material,
                &Ownership::default(),
                bad,
            )
            .expect_err("wide mode");
            assert!(matches!(err, DeployError::KeyModeTooWide(m) if m == bad));
        }
        assert_eq!(fs::read_dir(dir.path()).expect("dir").count(), 0);
    }

    #[test]
    fn ownership_is_applied_before_contents() {
        let _guard = lock();
        if !Uid::effective().is_root() {
            eprintln!("skipped: chown needs root");
            return;
        }
        let dir = tempdir();
        let files = all_files(dir.path());
        let owner = Ownership::resolve(Some("65534"), Some("65533")).expect("numeric ids");
        let issued = issue(&["example.org"]);
        let staged = stage(&files, &issued.material, &owner, 0o640).expect("stage");
        for (_, _, temp) in staged.files() {
            let meta = fs::metadata(temp).expect("stat");
            assert_eq!((meta.uid(), meta.gid()), (65534, 65533));
        }
        staged.commit().expect("commit");
        let meta = fs::metadata(files.key.as_ref().expect("key")).expect("stat");
        assert_eq!(
            (meta.uid(), meta.gid(), meta.mode() & 0o777),
            (65534, 65533, 0o640)
        );
    }

    #[test]
    fn ownership_resolves_names_and_rejects_unknown_ones() {
        let root = Ownership::resolve(Some("root"), Some("root")).expect("root");
        assert_eq!(root.uid, Some(Uid::from_raw(0)));
        assert_eq!(root.gid, Some(Gid::from_raw(0)));
        assert_eq!(
            Ownership::resolve(None, None).expect("none"),
            Ownership::default()
        );
        let err = Ownership::resolve(Some("no-such-user-renewd"), None).expect_err("user");
        assert!(err.to_string().contains("no-such-user-renewd"), "{err}");
        let err = Ownership::resolve(None, Some("no-such-group-renewd")).expect_err("group");
        assert!(err.to_string().contains("no-such-group-renewd"), "{err}");
    }

    #[test]
    fn a_symlink_at_the_target_is_replaced_not_followed() {
        let _guard = lock();
        let dir = tempdir();
        let victim = dir.path().join("victim");
        fs::write(&victim, "victim").expect("victim");
        let victim_mode = mode(&victim);
        let key_path = dir.path().join("key.pem");
        std::os::unix::fs::symlink(&victim, &key_path).expect("symlink");
        let files = FileSet {
            cert: None,
            chain: None,
            fullchain: Some(dir.path().join("fullchain.pem")),
            key: Some(key_path.clone()),
            combined: None,
        };
        let issued = issue(&["example.org"]);
        deploy(&files, &issued.material, &Ownership::default(), 0o600).expect("deploy");
        assert!(fs::symlink_metadata(&key_path).expect("stat").is_file());
        assert_eq!(
            fs::read_to_string(&key_path).expect("key"),
            issued.material.key_pem
        );
        assert_eq!(fs::read_to_string(&victim).expect("victim"), "victim");
        assert_eq!(mode(&victim), victim_mode);
    }

    #[test]
    fn a_symlink_at_the_temporary_name_makes_creation_fail() {
        let dir = tempdir();
        let victim = dir.path().join("victim");
        fs::write(&victim, "victim").expect("victim");
        let temp = dir.path().join(".key.pem.renewd-0123456789abcdef");
        std::os::unix::fs::symlink(&victim, &temp).expect("symlink");
        let err = create_exclusive(&temp, 0o600).expect_err("planted symlink");
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read_to_string(&victim).expect("victim"), "victim");

        // A dangling symlink is the dangerous case: without O_EXCL, O_CREAT would create
        // the file it points to.
        let dangling = dir.path().join(".cert.pem.renewd-0123456789abcdef");
        let elsewhere = dir.path().join("created-through-symlink");
        std::os::unix::fs::symlink(&elsewhere, &dangling).expect("symlink");
        let err = create_exclusive(&dangling, 0o600).expect_err("dangling symlink");
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert!(!elsewhere.exists());
    }

    /// Tests run as root, which ignores directory permissions, so the failing file goes to
    /// /proc, where creating a file fails (ENOENT) for every user, yet /proc passes the
    /// directory check (root's, not writable). Its target comes last in the set, so three
    /// temporaries have already been written when staging fails. (ENOSPC, EROFS and EACCES
    /// part-way through are exercised with the real binary in tests/deploy_safety.rs.)
    #[test]
    fn failed_staging_leaves_old_files_and_no_temporaries() {
        let _guard = lock();
        let dir = tempdir();
        let files = FileSet {
            cert: Some(dir.path().join("cert.pem")),
            chain: None,
            fullchain: Some(dir.path().join("fullchain.pem")),
            key: Some(dir.path().join("key.pem")),
            combined: Some(PathBuf::from("/proc/renewd-test-combined.pem")),
        };
        let old = issue(&["old.example"]);
        let old_files = FileSet {
            combined: None,
            ..all_files(dir.path())
        };
        deploy(&old_files, &old.material, &Ownership::default(), 0o600).expect("old");
        let before: Vec<Vec<u8>> = old_files
            .iter()
            .map(|(_, p)| fs::read(p).expect("old file"))
            .collect();

        let new = issue(&["new.example"]);
        let err = deploy(&files, &new.material, &Ownership::default(), 0o600).expect_err("stage");
        assert!(matches!(err, DeployError::Stage { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("/proc/renewd-test-combined.pem"), "{msg}");
        assert!(
            msg.contains("/proc/.renewd-test-combined.pem.renewd-"),
            "{msg}"
        );
        assert!(msg.contains("No such file or directory"), "{msg}");

        let after: Vec<Vec<u8>> = old_files
            .iter()
            .map(|(_, p)| fs::read(p).expect("old file"))
            .collect();
        assert_eq!(before, after);
        assert!(
            temporaries(dir.path()).is_empty(),
            "{:?}",
            temporaries(dir.path())
        );
        assert!(inspect(&old_files).is_ok());
    }

    /// A regular file where a directory should be is found before anything is written.
    #[test]
    fn a_file_in_place_of_a_directory_is_found_before_writing() {
        let _guard = lock();
        let dir = tempdir();
        let not_a_dir = dir.path().join("plain-file");
        fs::write(&not_a_dir, "x").expect("plain file");
        let files = FileSet {
            combined: Some(not_a_dir.join("combined.pem")),
            ..all_files(dir.path())
        };
        let issued = issue(&["example.org"]);
        let err = deploy(&files, &issued.material, &Ownership::default(), 0o600)
            .expect_err("not a directory");
        assert!(
            matches!(&err, DeployError::NotADirectory { path, .. } if *path == not_a_dir),
            "{err:?}"
        );
        assert!(
            err.to_string().contains("plain-file is not a directory"),
            "{err}"
        );
        assert_eq!(fs::read_dir(dir.path()).expect("dir").count(), 1);
    }

    /// /proc refuses new files even to root: a second, different way staging can fail.
    #[test]
    fn staging_under_proc_fails_cleanly() {
        let files = FileSet {
            cert: Some(PathBuf::from("/proc/renewd-test-cert.pem")),
            chain: None,
            fullchain: None,
            key: None,
            combined: None,
        };
        let issued = issue(&["example.org"]);
        let err = deploy(&files, &issued.material, &Ownership::default(), 0o600).expect_err("proc");
        assert!(
            err.to_string().contains("/proc/renewd-test-cert.pem"),
            "{err}"
        );
    }

    #[test]
    fn dropping_a_staged_set_removes_its_temporaries() {
        let _guard = lock();
        let dir = tempdir();
        let files = all_files(dir.path());
        let issued = issue(&["example.org"]);
        let staged = stage(&files, &issued.material, &Ownership::default(), 0o600).expect("stage");
        assert_eq!(temporaries(dir.path()).len(), 5);
        drop(staged);
        assert_eq!(fs::read_dir(dir.path()).expect("dir").count(), 0);
    }

    #[test]
    fn stale_temporaries_are_swept() {
        let _guard = lock();
        let dir = tempdir();
        let files = all_files(dir.path());
        let issued = issue(&["example.org"]);
        let staged = stage(&files, &issued.material, &Ownership::default(), 0o600).expect("stage");
        std::mem::forget(staged); // as if the process had died here
        fs::write(dir.path().join(".unrelated"), "keep").expect("unrelated");
        let removed = sweep_temporaries(&files).expect("sweep");
        assert_eq!(removed.len(), 5);
        assert!(temporaries(dir.path()).is_empty());
        assert!(dir.path().join(".unrelated").exists());
    }

    #[test]
    fn a_failed_rename_says_how_far_it_got_and_cleans_up() {
        let _guard = lock();
        let dir = tempdir();
        let files = all_files(dir.path());
        let issued = issue(&["example.org"]);

        // A directory at a target is refused before anything is written...
        fs::create_dir(path(&files.combined)).expect("mkdir");
        let err = deploy(&files, &issued.material, &Ownership::default(), 0o600)
            .expect_err("directory target");
        assert!(matches!(err, DeployError::TargetIsDirectory(_)), "{err:?}");
        assert_eq!(fs::read_dir(dir.path()).expect("dir").count(), 1);
        fs::remove_dir(path(&files.combined)).expect("rmdir");

        // ...and one that appears after staging makes the rename fail part-way.
        let staged = stage(&files, &issued.material, &Ownership::default(), 0o600).expect("stage");
        fs::create_dir(path(&files.combined)).expect("mkdir");
        fs::write(path(&files.combined).join("inside"), "x").expect("fill");
        let err = staged.commit().expect_err("rename onto a directory");
        match &err {
            DeployError::Rename {
                target,
                replaced,
                total,
                ..
            } => {
                assert_eq!(*target, path(&files.combined));
                assert_eq!((*replaced, *total), (4, 5));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(err.to_string().contains("4 of 5"), "{err}");
        assert!(temporaries(dir.path()).is_empty());
        assert_eq!(
            fs::read_to_string(path(&files.key)).expect("key"),
            issued.material.key_pem
        );
    }

    #[test]
    fn duplicate_targets_and_empty_chains_are_refused() {
        let dir = tempdir();
        let issued = issue(&["example.org"]);
        let same = dir.path().join("same.pem");
        let files = FileSet {
            cert: Some(same.clone()),
            chain: None,
            fullchain: Some(same),
            key: None,
            combined: None,
        };
        assert!(matches!(
            deploy(&files, &issued.material, &Ownership::default(), 0o600),
            Err(DeployError::DuplicateTarget(_))
        ));
        let empty = Material {
            key_pem: issued.material.key_pem.clone(),
            chain_pem: Vec::new(),
        };
        assert!(matches!(
            deploy(&all_files(dir.path()), &empty, &Ownership::default(), 0o600),
            Err(DeployError::EmptyChain)
        ));
    }

    fn deployed(dir: &Path) -> (FileSet, Issued) {
        let files = all_files(dir);
        let issued = issue(&["example.org"]);
        deploy(&files, &issued.material, &Ownership::default(), 0o600).expect("deploy");
        (files, issued)
    }

    fn path(p: &Option<PathBuf>) -> PathBuf {
        p.clone().expect("configured")
    }

    #[test]
    fn inspect_reports_missing_and_unreadable_files() {
        let _guard = lock();
        let dir = tempdir();
        let (files, _) = deployed(dir.path());

        fs::remove_file(path(&files.chain)).expect("rm");
        assert_eq!(
            inspect(&files),
            Err(DeployedProblem::Missing(path(&files.chain)))
        );

        // A directory where a file should be is not mistaken for an empty file.
        fs::create_dir(path(&files.chain)).expect("mkdir");
        assert!(
            matches!(inspect(&files), Err(DeployedProblem::Invalid(p, _)) if p == path(&files.chain))
        );
        fs::remove_dir(path(&files.chain)).expect("rmdir");

        // A symlink loop cannot be opened at all.
        std::os::unix::fs::symlink(path(&files.chain), path(&files.chain)).expect("loop");
        let problem = inspect(&files).expect_err("loop");
        assert!(matches!(&problem, DeployedProblem::Unreadable(p, _) if *p == path(&files.chain)));
        assert!(
            problem.to_string().contains("chain.pem cannot be read"),
            "{problem}"
        );

        // A FIFO must not hang the check.
        fs::remove_file(path(&files.chain)).expect("rm");
        nix::unistd::mkfifo(
            &path(&files.chain),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .expect("mkfifo");
        assert!(matches!(inspect(&files), Err(DeployedProblem::Invalid(..))));
    }

    #[test]
    fn inspect_reports_invalid_contents() {
        let _guard = lock();
        let dir = tempdir();
        let (files, issued) = deployed(dir.path());
        let cases: Vec<(Option<PathBuf>, Vec<u8>)> = vec![
            (files.cert.clone(), b"garbage".to_vec()),
            (
                files.fullchain.clone(),
                b"-----BEGIN CERTIFICATE-----\nAAAA".to_vec(),
            ),
            (
                files.key.clone(),
                issued.material.chain_pem[0].clone().into_bytes(),
            ),
            (
                files.combined.clone(),
                issued.material.chain_pem.concat().into_bytes(),
            ),
            (files.chain.clone(), vec![0xff; 100]),
            (
                files.cert.clone(),
                vec![b'A'; (MAX_DEPLOYED_FILE + 1) as usize],
            ),
        ];
        for (p, contents) in cases {
            let p = path(&p);
            let good = fs::read(&p).expect("read");
            fs::write(&p, &contents).expect("write");
            let problem = inspect(&files).expect_err("invalid");
            assert!(
                matches!(&problem, DeployedProblem::Invalid(q, _) if *q == p),
                "{}: {problem:?}",
                p.display()
            );
            assert!(problem.to_string().contains(&*p.to_string_lossy()));
            fs::write(&p, good).expect("restore");
        }
        assert!(inspect(&files).is_ok());
    }

    #[test]
    fn inspect_reports_a_key_that_does_not_match() {
        let _guard = lock();
        let dir = tempdir();
        let (files, issued) = deployed(dir.path());
        let other = PrivateKey::generate(KeyType::EcdsaP256).expect("other");
        fs::write(path(&files.key), other.to_pem()).expect("write");
        assert_eq!(
            inspect(&files),
            Err(DeployedProblem::KeyMismatch(path(&files.key)))
        );
        fs::write(path(&files.key), &issued.material.key_pem).expect("restore");

        let combined = format!("{}{}", other.to_pem(), issued.material.chain_pem.concat());
        fs::write(path(&files.combined), combined).expect("write");
        let problem = inspect(&files).expect_err("mismatch");
        assert_eq!(problem, DeployedProblem::KeyMismatch(path(&files.combined)));
        assert!(problem.to_string().contains("does not belong"), "{problem}");
    }

    #[test]
    fn inspect_reports_files_that_disagree() {
        let _guard = lock();
        let dir = tempdir();
        let (files, issued) = deployed(dir.path());
        let other = issue(&["other.example"]);

        fs::write(path(&files.cert), &other.material.chain_pem[0]).expect("write");
        let problem = inspect(&files).expect_err("disagree");
        assert!(
            matches!(problem, DeployedProblem::Inconsistent(_)),
            "{problem:?}"
        );
        assert!(problem.to_string().contains("cert.pem"), "{problem}");
        fs::write(path(&files.cert), &issued.material.chain_pem[0]).expect("restore");

        fs::write(path(&files.chain), &other.material.chain_pem[1]).expect("write");
        let problem = inspect(&files).expect_err("chain");
        assert!(
            matches!(problem, DeployedProblem::Inconsistent(_)),
            "{problem:?}"
        );
        fs::write(path(&files.chain), &issued.material.chain_pem[1]).expect("restore");

        // Only a key configured: nothing to check the key against.
        let key_only = FileSet {
            cert: None,
            chain: None,
            fullchain: None,
            key: files.key.clone(),
            combined: None,
        };
        assert!(matches!(
            inspect(&key_only),
            Err(DeployedProblem::Inconsistent(_))
        ));
        assert!(inspect(&files).is_ok());
    }

    // --- directories, links, errors ------------------------------------------------------

    fn chmod(path: &Path, mode: u32) {
        fs::set_permissions(path, Permissions::from_mode(mode)).expect("chmod");
    }

    fn chown(path: &Path, uid: Option<u32>, gid: Option<u32>) {
        std::os::unix::fs::lchown(path, uid, gid).expect("lchown");
    }

    /// A uid and gid no test machine gives to renewd or root.
    const STRANGER: u32 = 4242;

    fn unsafe_reason(dir: &Path) -> String {
        match check_target_dir(dir) {
            Err(DeployError::UnsafeDirectory { dir: d, reason }) => {
                assert_eq!(d, dir);
                reason
            }
            other => panic!("{}: expected UnsafeDirectory, got {other:?}", dir.display()),
        }
    }

    #[test]
    fn directories_others_can_write_are_refused_before_anything_is_written() {
        let _guard = lock();
        let base = tempdir();
        let tls = base.path().join("tls");
        mkdir(&tls);
        let files = all_files(&tls);
        let issued = issue(&["example.org"]);
        let refused = |want: &[&str]| {
            let err = deploy(&files, &issued.material, &Ownership::default(), 0o600)
                .expect_err("unsafe directory");
            let msg = err.to_string();
            assert!(
                msg.starts_with(&format!("refusing to write into {}: ", tls.display())),
                "{msg}"
            );
            for w in want {
                assert!(msg.contains(w), "{w:?} not in {msg}");
            }
            assert_eq!(
                fs::read_dir(&tls).expect("dir").count(),
                0,
                "nothing written"
            );
        };

        chmod(&tls, 0o777);
        refused(&["every user can write in it", "mode 0777", "chmod go-w"]);
        chmod(&tls, 0o1777);
        refused(&["mode 1777", "the sticky bit does not make it safe"]);
        chmod(&tls, 0o755);
        check_target_dir(&tls).expect("0755, renewd's own");

        if !Uid::effective().is_root() {
            eprintln!("skipped the ownership cases: chown needs root");
            return;
        }
        chmod(&tls, 0o775);
        chown(&tls, None, Some(0));
        check_target_dir(&tls).expect("group root may write");
        chown(&tls, None, Some(STRANGER));
        refused(&[
            &format!("group {STRANGER} can write in it"),
            "chmod g-w",
            "mode 0775",
        ]);
        chmod(&tls, 0o2755);
        check_target_dir(&tls).expect("a group that cannot write is fine");
        chown(&tls, Some(STRANGER), Some(0));
        chmod(&tls, 0o755);
        refused(&[&format!("owned by user {STRANGER}"), "chown root"]);
        chown(&tls, Some(0), Some(0));
        deploy(&files, &issued.material, &Ownership::default(), 0o600).expect("safe again");
    }

    #[test]
    fn ancestors_that_others_could_swap_are_refused() {
        let _guard = lock();
        let base = tempdir();
        let shared = base.path().join("shared");
        let tls = shared.join("tls");
        mkdir_all(&tls);

        chmod(&shared, 0o777);
        let reason = unsafe_reason(&tls);
        assert!(reason.contains("every user can write in"), "{reason}");
        assert!(reason.contains(&*shared.to_string_lossy()), "{reason}");
        assert!(reason.contains("chmod +t"), "{reason}");

        // The sticky bit keeps others from moving `tls`, as long as it is not theirs.
        chmod(&shared, 0o1777);
        check_target_dir(&tls).expect("sticky ancestor, tls owned by root");
        // `..` and `.` are resolved like the kernel does.
        check_target_dir(&shared.join("tls/../tls/.")).expect("dots");

        if !Uid::effective().is_root() {
            eprintln!("skipped the ownership cases: chown needs root");
            return;
        }
        chown(&shared, Some(STRANGER), None);
        chmod(&shared, 0o755);
        let reason = unsafe_reason(&tls);
        assert!(
            reason.contains(&format!("owned by user {STRANGER}")),
            "{reason}"
        );
        assert!(reason.contains(&*shared.to_string_lossy()), "{reason}");
        chown(&shared, Some(0), None);
        chmod(&shared, 0o1777);

        // A symlink in a sticky, world-writable directory is as safe as its owner.
        let good = base.path().join("good");
        mkdir(&good);
        let link = shared.join("link");
        std::os::unix::fs::symlink(&good, &link).expect("symlink");
        check_target_dir(&link).expect("root's link");
        chown(&link, Some(STRANGER), None);
        let reason = unsafe_reason(&link);
        assert!(
            reason.contains(&format!("belongs to user {STRANGER}")),
            "{reason}"
        );
        assert!(reason.contains("mode 1777"), "{reason}");
    }

    #[test]
    fn symlinked_directories_are_judged_by_where_they_lead() {
        let _guard = lock();
        let base = tempdir();
        let open = base.path().join("open");
        mkdir(&open);
        chmod(&open, 0o777);
        let link = base.path().join("tls");
        std::os::unix::fs::symlink("open", &link).expect("symlink");
        let reason = unsafe_reason(&link);
        assert!(reason.contains("every user can write in it"), "{reason}");

        // Through a link, then below an open directory reached through it.
        mkdir(open.join("sub"));
        let reason = unsafe_reason(&link.join("sub"));
        assert!(reason.contains("chmod +t"), "{reason}");

        chmod(&open, 0o755);
        check_target_dir(&link).expect("safe target");
        check_target_dir(&link.join("sub")).expect("safe target");

        let looped = base.path().join("loop");
        std::os::unix::fs::symlink("loop", &looped).expect("symlink");
        let err = check_target_dir(&looped).expect_err("loop");
        assert!(
            matches!(err, DeployError::DirectoryLookup { .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("symbolic links"), "{err}");

        let missing = base.path().join("nope/tls");
        let err = check_target_dir(&missing).expect_err("missing");
        assert!(
            matches!(&err, DeployError::MissingDirectory { missing: m, .. } if *m == base.path().join("nope")),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(msg.contains("does not exist"), "{msg}");
        assert!(msg.contains("renewd creates no directories"), "{msg}");

        let dangling = base.path().join("dangling");
        std::os::unix::fs::symlink("gone", &dangling).expect("symlink");
        assert!(matches!(
            check_target_dir(&dangling),
            Err(DeployError::MissingDirectory { .. })
        ));
    }

    /// A key target hard-linked to a file elsewhere is replaced by a new inode: the other
    /// name keeps its contents.
    #[test]
    fn a_hard_link_at_the_target_is_replaced_not_written_through() {
        let _guard = lock();
        let base = tempdir();
        let tls = base.path().join("tls");
        mkdir(&tls);
        let victim = base.path().join("victim");
        fs::write(&victim, "victim").expect("victim");
        let files = all_files(&tls);
        fs::hard_link(&victim, path(&files.key)).expect("link");
        let issued = issue(&["example.org"]);
        deploy(&files, &issued.material, &Ownership::default(), 0o600).expect("deploy");
        assert_eq!(fs::read_to_string(&victim).expect("victim"), "victim");
        let (v, k) = (
            fs::metadata(&victim).expect("stat"),
            fs::metadata(path(&files.key)).expect("stat"),
        );
        assert_ne!(v.ino(), k.ino());
        assert_eq!(v.nlink(), 1);
        assert_eq!(
            fs::read_to_string(path(&files.key)).expect("key"),
            issued.material.key_pem
        );
    }

    /// Names like renewd's temporaries, planted in bulk (as symlinks to a victim, dangling
    /// symlinks, a directory): deploying still works, nothing is written through them, and
    /// sweeping removes the links themselves, never what they point to.
    #[test]
    fn a_directory_full_of_planted_links_is_harmless() {
        let _guard = lock();
        let base = tempdir();
        let tls = base.path().join("tls");
        mkdir(&tls);
        let victim = base.path().join("victim");
        fs::write(&victim, "victim").expect("victim");
        let elsewhere = base.path().join("elsewhere");
        mkdir(&elsewhere);
        let files = all_files(&tls);
        let mut planted = 0;
        for (_, target) in files.iter() {
            let name = target.file_name().expect("name").to_string_lossy();
            for i in 0..100 {
                let temp = tls.join(format!(
                    ".{name}{TEMP_MARKER}{:016x}",
                    rand::random::<u64>()
                ));
                if i % 2 == 0 {
                    std::os::unix::fs::symlink(&victim, &temp).expect("symlink");
                } else {
                    std::os::unix::fs::symlink(elsewhere.join(format!("{i}-{name}")), &temp)
                        .expect("dangling symlink");
                }
                planted += 1;
            }
        }
        let planted_dir = tls.join(format!(".key.pem{TEMP_MARKER}0000000000000000"));
        mkdir(&planted_dir);
        fs::write(planted_dir.join("inside"), "keep").expect("write");

        let issued = issue(&["example.org"]);
        deploy(&files, &issued.material, &Ownership::default(), 0o600).expect("deploy");
        assert!(inspect(&files).is_ok());
        assert_eq!(fs::read_to_string(&victim).expect("victim"), "victim");
        assert_eq!(fs::read_dir(&elsewhere).expect("dir").count(), 0);

        let removed = sweep_temporaries(&files).expect("sweep");
        assert_eq!(removed.len(), planted);
        assert!(removed
            .iter()
            .all(|p| fs::symlink_metadata(p).is_err() && p.parent() == Some(&*tls)));
        assert_eq!(fs::read_to_string(&victim).expect("victim"), "victim");
        assert_eq!(
            fs::read_to_string(planted_dir.join("inside")).expect("kept"),
            "keep"
        );
        assert!(inspect(&files).is_ok());
    }

    #[test]
    fn sweeping_refuses_a_directory_others_can_write() {
        let _guard = lock();
        let base = tempdir();
        let tls = base.path().join("tls");
        mkdir(&tls);
        let files = all_files(&tls);
        let leftover = tls.join(format!(".key.pem{TEMP_MARKER}0123456789abcdef"));
        fs::write(&leftover, "x").expect("leftover");
        chmod(&tls, 0o777);
        let err = sweep_temporaries(&files).expect_err("unsafe");
        assert!(err.to_string().contains("every user can write"), "{err}");
        assert!(leftover.exists());
        chmod(&tls, 0o755);
        assert_eq!(sweep_temporaries(&files).expect("sweep"), vec![leftover]);
        // A directory that does not exist has nothing to sweep.
        assert!(sweep_temporaries(&all_files(&base.path().join("gone")))
            .expect("missing")
            .is_empty());
    }

    #[test]
    fn staging_errors_name_both_files_the_reason_and_what_it_means() {
        let target = PathBuf::from("/etc/tls/www.key");
        let temp = PathBuf::from("/etc/tls/.www.key.renewd-0123456789abcdef");
        let cases = [
            (Errno::ENOSPC, "No space left on device", "free some space"),
            (Errno::EROFS, "Read-only file system", "ReadWritePaths="),
            (Errno::EACCES, "Permission denied", "may not write there"),
            (Errno::EDQUOT, "quota", "quota of renewd's user"),
            (
                Errno::EEXIST,
                "File exists",
                "nothing was written through it",
            ),
        ];
        for (errno, os, hint) in cases {
            let err = DeployError::Stage {
                action: "write",
                target: target.clone(),
                temp: temp.clone(),
                source: io::Error::from(errno),
            };
            let msg = err.to_string();
            for want in [
                &*target.to_string_lossy(),
                &*temp.to_string_lossy(),
                os,
                hint,
            ] {
                assert!(msg.contains(want), "{want:?} not in {msg}");
            }
        }
    }

    /// `inspect` follows a symlink at a target (certbot's `live/` files are symlinks) but
    /// opens nothing but regular files.
    #[test]
    fn inspect_does_not_open_device_nodes() {
        let _guard = lock();
        let dir = tempdir();
        let (files, _) = deployed(dir.path());
        fs::remove_file(path(&files.chain)).expect("rm");
        std::os::unix::fs::symlink("/dev/zero", path(&files.chain)).expect("symlink");
        let problem = inspect(&files).expect_err("device");
        assert!(
            matches!(&problem, DeployedProblem::Invalid(p, why) if *p == path(&files.chain) && why.ends_with("not a regular file")),
            "{problem:?}"
        );
    }
}

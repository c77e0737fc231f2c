//! Whether a directory is safe to write private keys into, and the other looks at the
//! file system a configuration needs before anything is deployed.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::unistd::{Gid, Group, Uid, User};

use super::{parent_dir, DeployError};
use crate::config::{Config, FileKind, Problem};
use crate::fsutil::{trusted_uid, Walk};

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
pub(crate) fn check_target_dir(dir: &Path) -> Result<(), DeployError> {
    check_dir_for(dir, "the private keys")
}

/// [`check_target_dir`] for a directory that holds `what` (in the reasons: "anyone could
/// plant files or symlinks beside WHAT"), such as a trust store's certificates.
pub(crate) fn check_dir_for(dir: &Path, what: &str) -> Result<(), DeployError> {
    let (visited, last) = walk_to_dir(dir)?;
    // The directory itself first: it is the one the configuration names; then everything
    // on the way to it, from the root down.
    let reason = unsafe_target(dir, &visited[last].meta, what)
        .or_else(|| (0..visited.len()).find_map(|i| unsafe_passage(&visited, i, i == last)));
    match reason {
        Some(reason) => Err(DeployError::UnsafeDirectory {
            dir: dir.to_path_buf(),
            reason,
        }),
        None => Ok(()),
    }
}

/// Why the target directory `dir` itself (its lstat `target`, after symlinks) is unsafe:
/// another owner, or others who may write in it.
fn unsafe_target(dir: &Path, target: &fs::Metadata, what: &str) -> Option<String> {
    if !trusted_uid(target.uid()) {
        return Some(format!(
            "it is owned by user {} ({}), who can change its permissions and put files or \
             symlinks in it; make root (or renewd's user) its owner: chown root {}",
            user_name(target.uid()),
            describe(target),
            dir.display()
        ));
    }
    match other_writers(target) {
        Some(Writers::Everyone) => {
            let sticky = if target.mode() & nix::libc::S_ISVTX != 0 {
                "; the sticky bit does not make it safe"
            } else {
                ""
            };
            Some(format!(
                "every user can write in it ({}{sticky}), so anyone could plant files or \
                 symlinks beside {what}; make it writable only by its owner: \
                 chmod go-w {}",
                describe(target),
                dir.display()
            ))
        }
        Some(Writers::Group(gid)) => Some(format!(
            "group {} can write in it ({}), and only group root or renewd's own group \
                 may, so its members could plant files or symlinks beside {what}; \
                 remove the group's write permission (chmod g-w {}) or make its group root",
            group_name(gid),
            describe(target),
            dir.display()
        )),
        None => None,
    }
}

/// Why `visited[i]`, passed through on the way to the target directory (`is_target` for
/// that directory itself), lets another user swap what renewd reaches.
fn unsafe_passage(visited: &[Visited], i: usize, is_target: bool) -> Option<String> {
    let v = &visited[i];
    if !is_target && v.meta.is_dir() {
        if !trusted_uid(v.meta.uid()) {
            return Some(format!(
                "{} on the way to it is owned by user {} ({}), who could move it away \
                 and put another directory or a symlink in its place; make root its \
                 owner (chown root {}) or use a directory elsewhere",
                v.path.display(),
                user_name(v.meta.uid()),
                describe(&v.meta),
                v.path.display()
            ));
        }
        if let Some(who) = other_writers(&v.meta) {
            if v.meta.mode() & nix::libc::S_ISVTX == 0 {
                return Some(format!(
                    "{who} can write in {} on the way to it ({}), so could move it away \
                     and put another directory or a symlink in its place; remove that \
                     write permission (chmod go-w {}) or set the sticky bit \
                     (chmod +t {})",
                    v.path.display(),
                    describe(&v.meta),
                    v.path.display(),
                    v.path.display()
                ));
            }
        }
    }
    // Inside a sticky directory others can write, only an entry's owner (or the
    // directory's) can rename or remove it.
    if let Some(parent) = v.parent.map(|p| &visited[p]) {
        if let Some(who) = other_writers(&parent.meta) {
            if !trusted_uid(v.meta.uid()) {
                return Some(format!(
                    "{} on the way to it belongs to user {} and sits in {}, where {who} \
                     can write ({}), so that user could replace it; use a path that only \
                     root or renewd's user controls",
                    v.path.display(),
                    user_name(v.meta.uid()),
                    parent.path.display(),
                    describe(&parent.meta)
                ));
            }
        }
    }
    None
}

/// `renewd check`'s look at the directories files are deployed to: each must pass
/// [`check_target_dir`]. Missing directories are left to
/// [`Config::check_environment`], which reports them already.
pub(crate) fn check_directories(config: &Config) -> Vec<Problem> {
    let mut problems = Vec::new();
    // Each directory is walked once, however many certificates have files in it; its
    // verdict is reported at each certificate's key.
    let mut verdicts: std::collections::HashMap<&Path, Option<String>> = Default::default();
    for cert in &config.certificates {
        let mut seen: Vec<&Path> = Vec::new();
        for (kind, path) in cert.files.iter() {
            let dir = parent_dir(path);
            if seen.contains(&dir) {
                continue;
            }
            seen.push(dir);
            let verdict = verdicts
                .entry(dir)
                .or_insert_with(|| match check_target_dir(dir) {
                    Ok(())
                    | Err(DeployError::MissingDirectory { .. })
                    | Err(DeployError::NotADirectory { .. })
                    | Err(DeployError::DirectoryLookup { .. }) => None,
                    Err(e) => Some(e.to_string()),
                });
            if let Some(e) = verdict {
                problems.push(Problem::new(
                    cert.key_location(&format!("files.{kind}")).clone(),
                    format!("`files.{kind}`: {e}"),
                ));
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
        FileKind::Key | FileKind::Combined | FileKind::Pkcs12 => {
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
    let mut walk = Walk::new(&absolute);
    while let Some(name) = walk.next_name(&mut stack) {
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
            walk.count_link()
                .map_err(|e| lookup(&path, io::Error::from(e)))?;
            let target = fs::read_link(&path).map_err(|e| lookup(&path, e))?;
            walk.splice(&target, &mut stack);
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

/// Who besides root and renewd's user can change the regular file `meta` describes: its
/// owner when that is another user, every user (mode o+w), or a group other than root's
/// and renewd's (g+w). `None` when nobody else can.
pub(crate) fn file_writers(meta: &fs::Metadata) -> Option<String> {
    if !trusted_uid(meta.uid()) {
        Some(format!(
            "user {} (its owner; {})",
            user_name(meta.uid()),
            describe(meta)
        ))
    } else if meta.mode() & 0o002 != 0 {
        Some(format!("every user ({})", describe(meta)))
    } else if meta.mode() & 0o020 != 0 && !trusted_gid(meta.gid()) {
        Some(format!(
            "group {} ({})",
            group_name(meta.gid()),
            describe(meta)
        ))
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

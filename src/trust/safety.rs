//! Whether a trust store can be believed before it is read: a store that a user other than
//! root and renewd's own can change holds whatever that user wants — and, through symlinks
//! swapped in, would make renewd read (and report on) files only root may read. Such a
//! store is reported as not trustworthy, naming who can write it, and is not read.
//!
//! "Who can write" is judged as for the directories private keys are deployed to
//! ([`crate::deploy::check_dir_for`]: every directory and symlink on the way, owners, group
//! and other write bits, the sticky bit) and, for a file, its own owner and mode
//! ([`crate::deploy::file_writers`]).

use std::path::{Path, PathBuf};

use crate::deploy::{check_dir_for, file_writers, DeployError};

/// What the reasons say could be planted beside.
const WHAT: &str = "the trust anchors";

/// Why `path` (an audited bundle or directory) is not trustworthy: a user other than root
/// and renewd's can write it, the directory it is named in, the directory of the file a
/// symlink leads to, or a directory or symlink on the way to any of them. `None` when only
/// root and renewd's user can change what it holds, or when it does not exist (the audit
/// reports that itself).
pub(crate) fn untrusted(path: &Path) -> Option<String> {
    let meta = std::fs::metadata(path).ok()?;
    if meta.is_dir() {
        return dir_problem(path).map(|why| format!("the directory: {why}"));
    }
    let mut dirs: Vec<PathBuf> = vec![parent(path).to_path_buf()];
    if let Ok(real) = std::fs::canonicalize(path) {
        if real != path {
            dirs.push(parent(&real).to_path_buf());
        }
    }
    for dir in &dirs {
        if let Some(why) = dir_problem(dir) {
            return Some(format!("its directory {}: {why}", dir.display()));
        }
    }
    file_writers(&meta).map(|who| format!("{who} can change it"))
}

/// Why the entry `entry` of the trust directory `dir` must not be followed, for the
/// audit's error list; `None` when it may be. A regular file or a symlink to a file in
/// `dir` itself may always; a symlink that leads out of `dir` only when the link belongs
/// to root or renewd's user and the file it reaches passes [`untrusted`] (so Debian's
/// `/etc/ssl/certs` links into `/usr/share/ca-certificates` are read, and a link to a file
/// another user controls is not).
pub(crate) fn refused_link(dir: &Path, entry: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let Ok(link) = std::fs::symlink_metadata(entry) else {
        return None;
    };
    if !link.file_type().is_symlink() {
        return None;
    }
    let target = match std::fs::canonicalize(entry) {
        Ok(t) => t,
        // Dangling links and loops are the reader's to report.
        Err(_) => return None,
    };
    let inside = std::fs::canonicalize(dir).is_ok_and(|d| parent(&target) == d);
    if inside {
        return None;
    }
    if !crate::fsutil::trusted_uid(link.uid()) {
        return Some(format!(
            "a symbolic link to {} outside the directory, owned by uid {}: not followed \
             (only root's or renewd's links out of a trust directory are)",
            target.display(),
            link.uid()
        ));
    }
    untrusted(&target).map(|why| {
        format!(
            "a symbolic link to {} outside the directory, which is not trustworthy ({why}): \
             not followed",
            target.display()
        )
    })
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("/"),
    }
}

/// Why others can change what `dir` holds, if they can.
fn dir_problem(dir: &Path) -> Option<String> {
    match check_dir_for(dir, WHAT) {
        Err(DeployError::UnsafeDirectory { reason, .. }) => Some(reason),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn chmod(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    /// A bundle writable by every user, a bundle in a directory every user can write, a
    /// directory every user can write, and a link out of a trust directory to a file in a
    /// directory others can write: each is named with who can write it; the same files
    /// made root's only are trusted. (The tests run as root or as renewd's user, both
    /// trusted; "others" are made with the mode bits.)
    #[test]
    fn paths_others_can_write_are_named_with_who() {
        let top = tempfile::tempdir().unwrap();
        chmod(top.path(), 0o755);
        let safe = top.path().join("safe");
        let open = top.path().join("open");
        std::fs::create_dir(&safe).unwrap();
        std::fs::create_dir(&open).unwrap();
        chmod(&safe, 0o755);
        chmod(&open, 0o777);
        let bundle = safe.join("ca.pem");
        std::fs::write(&bundle, "x").unwrap();
        chmod(&bundle, 0o644);
        assert_eq!(untrusted(&bundle), None);
        assert_eq!(untrusted(&safe), None);
        chmod(&bundle, 0o646);
        let why = untrusted(&bundle).expect("world-writable bundle");
        assert!(why.contains("every user"), "{why}");
        chmod(&bundle, 0o644);
        let planted = open.join("ca.pem");
        std::fs::write(&planted, "x").unwrap();
        let why = untrusted(&planted).expect("bundle in an open directory");
        assert!(why.contains("every user can write in it"), "{why}");
        assert!(why.contains(&open.display().to_string()), "{why}");
        let why = untrusted(&open).expect("open directory");
        assert!(why.contains("beside the trust anchors"), "{why}");
        let link = safe.join("out.pem");
        std::os::unix::fs::symlink(&planted, &link).unwrap();
        let why = refused_link(&safe, &link).expect("a link out to an open directory");
        assert!(why.contains("not followed"), "{why}");
        let why = untrusted(&link).expect("a link into an open directory");
        assert!(why.contains(&open.display().to_string()), "{why}");
        let inside = safe.join("in.pem");
        std::os::unix::fs::symlink(&bundle, &inside).unwrap();
        assert_eq!(refused_link(&safe, &inside), None);
    }
}

//! http-01 answers written into a web server's document root, so that whoever controls the
//! webroot cannot make renewd (often root) create or remove anything anywhere else.
//!
//! The webroot is reached one name at a time with `openat(2)`: a symlink on the way is
//! followed only when it sits in a directory no other user can write to (so only root or
//! renewd's user could have put it there); below the webroot, `.well-known` and
//! `acme-challenge` are opened with `O_NOFOLLOW|O_DIRECTORY`, and the answer is created with
//! `O_CREAT|O_EXCL|O_NOFOLLOW` in the opened directory and later removed with `unlinkat(2)`
//! relative to it. Unless the configuration trusts the webroot's owner (`trust_owner`), the
//! webroot and everything below it that renewd uses must belong to root or renewd's user and
//! be writable by no one else, and each directory on the way there must be too (unless sticky,
//! as `/tmp` is). Directories renewd creates get mode 0755 and answers 0644 by `fchmod(2)`,
//! whatever the umask (the unit's `UMask=0077` would otherwise hide them from the web server).

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::fs::{File, Metadata};
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, readlinkat, AtFlags, OFlag};
use nix::sys::stat::{fchmod, fstatat, mkdirat, Mode, SFlag};
use nix::unistd::{unlinkat, Gid, Uid, UnlinkatFlags};

use super::ChallengeError;
use crate::fsutil::{steps, trusted_uid, Step};

/// Symlinks followed while resolving a webroot, as the kernel's own limit.
const MAX_SYMLINKS: usize = 40;

/// An answer file in place; dropping it removes the file (by name, relative to the
/// directory that was opened when it was written).
pub(crate) struct WebrootAnswer {
    dir: File,
    name: String,
    path: PathBuf,
}

impl Drop for WebrootAnswer {
    fn drop(&mut self) {
        match unlinkat(&self.dir, self.name.as_str(), UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => {}
            Err(e) => tracing::warn!(path = %self.path.display(), error = %e,
                "cannot remove http-01 answer"),
        }
    }
}

/// Writes `answer` to `WEBROOT/.well-known/acme-challenge/TOKEN` (mode 0644, directories
/// created 0755). `token` must already be checked to be base64url.
///
/// Errors: [`ChallengeError::UnsafeWebroot`] when a user other than root or renewd's could
/// redirect the write (unless `trust_owner`), or when a symlink sits below the webroot;
/// [`ChallengeError::Webroot`] for the OS's refusals (missing webroot, EACCES, ENOSPC…).
pub(crate) fn write(
    webroot: &Path,
    trust_owner: bool,
    token: &str,
    answer: &str,
) -> Result<WebrootAnswer, ChallengeError> {
    let root = open_webroot(webroot, trust_owner)?;
    let well_known = sub_dir(webroot, &root, ".well-known", trust_owner, true)?
        .ok_or_else(|| missing(webroot, ".well-known"))?;
    let dir_path = webroot.join(".well-known/acme-challenge");
    let dir = sub_dir(webroot, &well_known, "acme-challenge", trust_owner, true)?
        .ok_or_else(|| missing(webroot, ".well-known/acme-challenge"))?;
    let path = dir_path.join(token);
    let err = |e: Errno| ChallengeError::Webroot {
        path: path.clone(),
        source: io::Error::from(e),
    };
    let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW;
    let mode = Mode::from_bits_truncate(0o644);
    let fd = match openat(&dir, token, flags | OFlag::O_CLOEXEC, mode) {
        // A leftover of an earlier attempt, or something planted: the name is removed (a
        // symlink itself, never what it points to) and created afresh.
        Err(Errno::EEXIST) => {
            match unlinkat(&dir, token, UnlinkatFlags::NoRemoveDir) {
                Ok(()) | Err(Errno::ENOENT) => {}
                Err(e) => return Err(err(e)),
            }
            openat(&dir, token, flags | OFlag::O_CLOEXEC, mode).map_err(err)?
        }
        other => other.map_err(err)?,
    };
    let answer_file = WebrootAnswer {
        dir,
        name: token.to_string(),
        path: path.clone(),
    };
    // The web server must read the answer, so it is world-readable (it is public by design),
    // whatever the umask.
    fchmod(&fd, mode).map_err(err)?;
    let mut f = File::from(fd);
    f.write_all(answer.as_bytes())
        .map_err(|source| ChallengeError::Webroot {
            path: path.clone(),
            source,
        })?;
    Ok(answer_file)
}

/// `renewd check`'s look at a webroot: the same walk and ownership rules as [`write`],
/// creating nothing (a missing `.well-known` is fine: renewd creates it).
pub(crate) fn check(webroot: &Path, trust_owner: bool) -> Result<(), ChallengeError> {
    let root = open_webroot(webroot, trust_owner)?;
    if let Some(well_known) = sub_dir(webroot, &root, ".well-known", trust_owner, false)? {
        sub_dir(webroot, &well_known, "acme-challenge", trust_owner, false)?;
    }
    Ok(())
}

fn missing(webroot: &Path, name: &str) -> ChallengeError {
    ChallengeError::Webroot {
        path: webroot.join(name),
        source: io::Error::from(Errno::ENOENT),
    }
}

fn unsafe_webroot(webroot: &Path, reason: String) -> ChallengeError {
    ChallengeError::UnsafeWebroot {
        webroot: webroot.to_path_buf(),
        reason,
    }
}

/// A directory opened on the way, with what fstat(2) said about it.
struct Opened {
    file: File,
    meta: Metadata,
    path: PathBuf,
}

fn open_dir_at(parent: &File, name: &OsStr) -> Result<File, Errno> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    openat(parent, name, flags, Mode::empty()).map(File::from)
}

/// Resolves `webroot` like the kernel, one name at a time from `/`, and returns the opened
/// directory. See the module documentation for the rules.
fn open_webroot(webroot: &Path, trust_owner: bool) -> Result<File, ChallengeError> {
    let io_err = |path: &Path, source: io::Error| ChallengeError::Webroot {
        path: path.to_path_buf(),
        source,
    };
    let root_path = Path::new("/");
    let root = File::open(root_path).map_err(|e| io_err(root_path, e))?;
    let meta = root.metadata().map_err(|e| io_err(root_path, e))?;
    let mut stack = vec![Opened {
        file: root,
        meta,
        path: root_path.to_path_buf(),
    }];
    let mut pending: VecDeque<Step> = steps(webroot).collect();
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
        let Some(parent) = stack.last() else {
            break;
        };
        let path = parent.path.join(&name);
        match open_dir_at(&parent.file, &name) {
            Ok(file) => {
                let meta = file.metadata().map_err(|e| io_err(&path, e))?;
                if !trust_owner {
                    check_passage(webroot, parent, &path, &meta)?;
                }
                stack.push(Opened { file, meta, path });
            }
            Err(Errno::ELOOP) | Err(Errno::ENOTDIR) => {
                let st = fstatat(&parent.file, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
                    .map_err(|e| io_err(&path, e.into()))?;
                if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFLNK {
                    return Err(io_err(&path, io::Error::from(Errno::ENOTDIR)));
                }
                // Whoever can replace the link chooses where renewd writes: its directory's
                // owner, and anyone else who may write there (unless the sticky bit keeps
                // them from a link of root's or renewd's).
                let who = if !trusted_uid(parent.meta.uid()) {
                    Some("its owner")
                } else {
                    other_writers(&parent.meta)
                };
                if let Some(who) = who {
                    let sticky = parent.meta.mode() & nix::libc::S_ISVTX != 0;
                    if who == "its owner" || !sticky || !trusted_uid(st.st_uid) {
                        return Err(unsafe_webroot(
                            webroot,
                            format!(
                                "the symlink {} on the way to it sits in {}, where {who} can \
                                 write, so another user could point it anywhere; name the \
                                 real directory in `webroot`",
                                path.display(),
                                parent.path.display()
                            ),
                        ));
                    }
                }
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(io_err(&path, io::Error::from(Errno::ELOOP)));
                }
                let target = readlinkat(&parent.file, name.as_os_str())
                    .map_err(|e| io_err(&path, e.into()))?;
                let target = PathBuf::from(target);
                if target.is_absolute() {
                    stack.truncate(1);
                }
                for step in steps(&target).collect::<Vec<_>>().into_iter().rev() {
                    pending.push_front(step);
                }
            }
            Err(e) => return Err(io_err(&path, e.into())),
        }
    }
    let Some(last) = stack.pop() else {
        return Err(io_err(webroot, io::Error::from(Errno::ENOENT)));
    };
    if !trust_owner {
        check_controlled(webroot, &last.path, &last.meta)?;
    }
    Ok(last.file)
}

/// A directory on the way to the webroot: owned by root or renewd's user and writable by
/// no one else unless sticky; inside a directory others can write, owned by root or
/// renewd's user.
fn check_passage(
    webroot: &Path,
    parent: &Opened,
    path: &Path,
    meta: &Metadata,
) -> Result<(), ChallengeError> {
    if let Some(who) = other_writers(&parent.meta) {
        if !trusted_uid(meta.uid()) {
            return Err(unsafe_webroot(
                webroot,
                format!(
                    "{} belongs to user {} and sits in {}, where {who} can write, so that \
                     user could replace it; set `trust_owner = true` in the challenge if that \
                     user may decide what the web server serves",
                    path.display(),
                    meta.uid(),
                    parent.path.display()
                ),
            ));
        }
    }
    if !trusted_uid(meta.uid()) {
        return Err(unsafe_webroot(
            webroot,
            format!(
                "{} on the way to it is owned by user {}, who could put another directory or \
                 a symlink in its place; set `trust_owner = true` in the challenge if that \
                 user may decide what the web server serves",
                path.display(),
                meta.uid()
            ),
        ));
    }
    if let Some(who) = other_writers(meta) {
        if meta.mode() & nix::libc::S_ISVTX == 0 {
            return Err(unsafe_webroot(
                webroot,
                format!(
                    "{who} can write in {} on the way to it (mode {:04o}), so could put \
                     another directory or a symlink in its place; chmod go-w {}, or set \
                     `trust_owner = true` in the challenge",
                    path.display(),
                    meta.mode() & 0o7777,
                    path.display()
                ),
            ));
        }
    }
    Ok(())
}

/// The webroot and the directories renewd uses below it: owned by root or renewd's user,
/// writable by no one else (a sticky bit does not help: others could plant names).
fn check_controlled(webroot: &Path, path: &Path, meta: &Metadata) -> Result<(), ChallengeError> {
    if !trusted_uid(meta.uid()) {
        return Err(unsafe_webroot(
            webroot,
            format!(
                "{} is owned by user {}, who could put a symlink where renewd writes the \
                 answer; set `trust_owner = true` in the challenge if that user may decide \
                 what the web server serves",
                path.display(),
                meta.uid()
            ),
        ));
    }
    if let Some(who) = other_writers(meta) {
        return Err(unsafe_webroot(
            webroot,
            format!(
                "{who} can write in {} (mode {:04o}); chmod go-w {}, or set \
                 `trust_owner = true` in the challenge if they may decide what the web \
                 server serves",
                path.display(),
                meta.mode() & 0o7777,
                path.display()
            ),
        ));
    }
    Ok(())
}

/// Opens (creating it 0755 when `create`) the directory `name` in `parent`, never through a
/// symlink. `None`: it does not exist and `create` is false.
fn sub_dir(
    webroot: &Path,
    parent: &File,
    name: &str,
    trust_owner: bool,
    create: bool,
) -> Result<Option<File>, ChallengeError> {
    let rel = if name == "acme-challenge" {
        ".well-known/acme-challenge"
    } else {
        name
    };
    let path = webroot.join(rel);
    let io_err = |e: Errno| ChallengeError::Webroot {
        path: path.clone(),
        source: io::Error::from(e),
    };
    let mode = Mode::from_bits_truncate(0o755);
    let created = if create {
        match mkdirat(parent, name, mode) {
            Ok(()) => true,
            Err(Errno::EEXIST) => false,
            Err(e) => return Err(io_err(e)),
        }
    } else {
        false
    };
    let dir = match open_dir_at(parent, OsStr::new(name)) {
        Ok(dir) => dir,
        Err(Errno::ENOENT) if !create => return Ok(None),
        Err(Errno::ELOOP | Errno::ENOTDIR) if is_symlink_at(parent, name) => {
            return Err(unsafe_webroot(
                webroot,
                format!(
                    "{} is a symlink; renewd follows no symlink inside a webroot (remove it)",
                    path.display()
                ),
            ))
        }
        Err(e) => return Err(io_err(e)),
    };
    let meta = dir.metadata().map_err(|source| ChallengeError::Webroot {
        path: path.clone(),
        source,
    })?;
    if created && meta.uid() == Uid::effective().as_raw() {
        // The web server must traverse it, whatever the umask.
        fchmod(&dir, mode).map_err(io_err)?;
    }
    if !trust_owner {
        check_controlled(webroot, &path, &meta)?;
    }
    Ok(Some(dir))
}

fn is_symlink_at(parent: &File, name: &str) -> bool {
    fstatat(parent, name, AtFlags::AT_SYMLINK_NOFOLLOW)
        .is_ok_and(|st| SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFLNK)
}

/// Who besides a directory's owner (and root) may create, rename or remove entries in it.
fn other_writers(meta: &Metadata) -> Option<&'static str> {
    if meta.mode() & 0o002 != 0 {
        Some("every user")
    } else if meta.mode() & 0o020 != 0 && meta.gid() != 0 && meta.gid() != Gid::effective().as_raw()
    {
        Some("its group")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::{symlink, PermissionsExt};

    const NOBODY: u32 = 65534;

    fn chmod(path: &Path, mode: u32) {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    /// A private parent (0755, ours) holding a webroot and a stand-in for `/etc/sudoers.d`.
    fn layout() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let top = tempfile::tempdir().unwrap();
        chmod(top.path(), 0o755);
        let www = top.path().join("www");
        let victim = top.path().join("sudoers.d");
        fs::create_dir(&www).unwrap();
        fs::create_dir(&victim).unwrap();
        chmod(&www, 0o755);
        chmod(&victim, 0o750);
        (top, www, victim)
    }

    fn entries(dir: &Path) -> Vec<String> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }

    fn unsafe_reason(r: Result<WebrootAnswer, ChallengeError>) -> String {
        match r {
            Err(ChallengeError::UnsafeWebroot { reason, .. }) => reason,
            Err(e) => panic!("expected a refusal, got {e}"),
            Ok(a) => panic!("expected a refusal, wrote {}", a.path.display()),
        }
    }

    #[test]
    fn answers_and_directories_are_readable_by_the_web_server_under_umask_0077() {
        let (_top, www, _) = layout();
        let old = nix::sys::stat::umask(Mode::from_bits_truncate(0o077));
        let written = write(&www, false, "tok", "tok.thumb");
        nix::sys::stat::umask(old);
        let answer = written.unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().mode() & 0o7777;
        assert_eq!(mode(&www.join(".well-known")), 0o755);
        assert_eq!(mode(&www.join(".well-known/acme-challenge")), 0o755);
        let file = www.join(".well-known/acme-challenge/tok");
        assert_eq!(mode(&file), 0o644);
        assert_eq!(fs::read_to_string(&file).unwrap(), "tok.thumb");
        drop(answer);
        assert!(!file.exists());
    }

    #[test]
    fn symlinks_below_the_webroot_are_never_followed() {
        for (link, trust_owner) in [
            (".well-known", false),
            (".well-known", true),
            (".well-known/acme-challenge", false),
            (".well-known/acme-challenge", true),
        ] {
            let (_top, www, victim) = layout();
            if link != ".well-known" {
                fs::create_dir(www.join(".well-known")).unwrap();
                chmod(&www.join(".well-known"), 0o755);
            }
            symlink(&victim, www.join(link)).unwrap();
            let reason = unsafe_reason(write(&www, trust_owner, "tok", "x"));
            assert!(reason.contains("is a symlink"), "{link}: {reason}");
            assert_eq!(entries(&victim), Vec::<String>::new(), "{link}");
            assert!(check(&www, trust_owner).is_err(), "check passed {link}");
        }
    }

    #[test]
    fn a_planted_answer_link_is_replaced_not_written_through() {
        let (_top, www, victim) = layout();
        let dir = www.join(".well-known/acme-challenge");
        fs::create_dir_all(&dir).unwrap();
        let target = victim.join("planted");
        fs::write(&target, "keep").unwrap();
        symlink(&target, dir.join("tok")).unwrap();
        let answer = write(&www, false, "tok", "tok.thumb").unwrap();
        assert_eq!(fs::read_to_string(&target).unwrap(), "keep");
        assert_eq!(fs::read_to_string(dir.join("tok")).unwrap(), "tok.thumb");
        drop(answer);
        assert_eq!(fs::read_to_string(&target).unwrap(), "keep");
    }

    #[test]
    fn a_webroot_another_user_controls_is_refused_unless_trusted() {
        if !Uid::effective().is_root() {
            eprintln!("skipped: needs root to chown (the integration tests run as root)");
            return;
        }
        let (_top, www, _) = layout();
        std::os::unix::fs::chown(&www, Some(NOBODY), None).unwrap();
        let reason = unsafe_reason(write(&www, false, "tok", "x"));
        assert!(reason.contains("trust_owner"), "{reason}");
        assert!(!www.join(".well-known").exists());
        assert!(check(&www, false).is_err());
        // Trusted: written, and what renewd creates is still renewd's, 0755.
        check(&www, true).unwrap();
        let answer = write(&www, true, "tok", "x").unwrap();
        drop(answer);
        // World-writable, or reached through a link in a directory another user controls.
        let (top, www, victim) = layout();
        chmod(&www, 0o777);
        assert!(unsafe_reason(write(&www, false, "tok", "x")).contains("every user"));
        let home = top.path().join("home");
        fs::create_dir(&home).unwrap();
        std::os::unix::fs::chown(&home, Some(NOBODY), None).unwrap();
        symlink(&victim, home.join("public")).unwrap();
        let reason = unsafe_reason(write(&home.join("public"), false, "tok", "x"));
        assert!(reason.contains("owned by user"), "{reason}");
        let reason = unsafe_reason(write(&home.join("public"), true, "tok", "x"));
        assert!(reason.contains("symlink"), "{reason}");
        assert_eq!(entries(&victim), Vec::<String>::new());
    }

    #[test]
    fn a_symlinked_webroot_in_a_trusted_directory_is_followed() {
        let (top, www, _) = layout();
        let link = top.path().join("html");
        symlink(&www, &link).unwrap();
        let answer = write(&link, false, "tok", "x").unwrap();
        assert!(www.join(".well-known/acme-challenge/tok").exists());
        drop(answer);
    }
}

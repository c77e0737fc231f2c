//! Small filesystem primitives: [`read_regular`], the one way renewd reads a file (every
//! configuration file, secret, trust bundle, state record, journal, pause file, deployed or
//! discovered certificate), atomic replacement of a private file, and directory creation
//! with a fixed mode.
//!
//! Certificate deployment has its own, stricter machinery for writing in `deploy`; the
//! writers here are for renewd's own bookkeeping, which only ever lives in the state
//! directory.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// Whether [`read_regular`] follows a symbolic link at the path's last component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Follow {
    /// Follow it (files an administrator names: configuration, secrets, trust roots,
    /// deployed certificates, which certbot keeps as symlinks).
    Yes,
    /// Refuse it (`O_NOFOLLOW`): renewd's own files in the state directory, which only
    /// renewd writes and which are never links.
    No,
}

/// Why [`read_regular`] read nothing. Every variant names the path.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    /// Nothing at the path (`ENOENT`).
    #[error("{0}: does not exist")]
    NotFound(PathBuf),
    /// A symlink at the path when [`Follow::No`] was asked.
    #[error("{0}: is a symbolic link, which is not followed here")]
    Symlink(PathBuf),
    /// A FIFO, a device, a socket or a directory: never read (a FIFO blocks, `/dev/zero`
    /// never ends).
    #[error("{path}: is {kind}, not a regular file")]
    NotRegular { path: PathBuf, kind: &'static str },
    /// Larger than the reader's cap, in bytes.
    #[error("{path}: larger than {max} bytes")]
    TooLarge { path: PathBuf, max: u64 },
    /// Any other OS error (permissions, I/O).
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

impl ReadError {
    /// True when nothing exists at the path.
    pub(crate) fn is_not_found(&self) -> bool {
        matches!(self, ReadError::NotFound(_))
    }

    /// The reason alone, without the path, for a caller whose message already names it.
    pub(crate) fn reason(&self) -> String {
        match self {
            ReadError::NotFound(_) => "does not exist".into(),
            ReadError::Symlink(_) => "is a symbolic link, which is not followed here".into(),
            ReadError::NotRegular { kind, .. } => format!("is {kind}, not a regular file"),
            ReadError::TooLarge { max, .. } => format!("larger than {max} bytes"),
            ReadError::Io { source, .. } => source.to_string(),
        }
    }

    /// As an `io::Error` carrying [`ReadError::reason`] (kind `NotFound` when nothing is
    /// there), for callers whose error type holds one beside the path.
    pub(crate) fn into_io(self) -> io::Error {
        match self {
            ReadError::Io { source, .. } => source,
            ReadError::NotFound(_) => io::Error::from(io::ErrorKind::NotFound),
            other => io::Error::new(io::ErrorKind::InvalidData, other.reason()),
        }
    }
}

/// Size caps of the files renewd reads, in bytes.
pub(crate) mod caps {
    /// A configuration file (main or `conf.d`).
    pub(crate) const CONFIG: u64 = 4 << 20;
    /// A secret (EAB HMAC key, TSIG key file, PKCS#12 password).
    pub(crate) const SECRET: u64 = 64 << 10;
    /// A PEM bundle of trust roots (the system bundle is about 200 KiB).
    pub(crate) const TRUST_ROOTS: u64 = 4 << 20;
    /// One of renewd's own state files (record, journal, account, pause, alerts.json).
    pub(crate) const STATE: u64 = 4 << 20;
    /// A certificate or key file (deployed, exception, discovered).
    pub(crate) const CERTIFICATE: u64 = 1 << 20;
}

/// What a file type is called in messages.
fn kind_of(ft: fs::FileType) -> &'static str {
    if ft.is_dir() {
        "a directory"
    } else if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_char_device() {
        "a character device"
    } else if ft.is_block_device() {
        "a block device"
    } else if ft.is_socket() {
        "a socket"
    } else if ft.is_symlink() {
        "a symbolic link"
    } else {
        "not a regular file"
    }
}

/// Opens `path` for reading without ever blocking or following what it must not: `O_RDONLY |
/// O_NONBLOCK | O_CLOEXEC` (plus `O_NOFOLLOW` with [`Follow::No`]), then checks the open
/// descriptor with `fstat`: only a regular file of at most `max` bytes is accepted. A FIFO
/// swapped in at the name opens at once (`O_NONBLOCK`) and is refused; so are devices.
/// Returns the open file and its size.
pub(crate) fn open_regular(
    path: &Path,
    max: u64,
    follow: Follow,
) -> Result<(File, u64), ReadError> {
    // Devices are not even opened when the name already shows one (opening some has side
    // effects); the fstat below is what makes the check race-free.
    let looked = match follow {
        Follow::Yes => fs::metadata(path),
        Follow::No => fs::symlink_metadata(path),
    };
    match looked {
        Ok(m) if m.file_type().is_symlink() => return Err(ReadError::Symlink(path.to_path_buf())),
        Ok(m) if !m.is_file() => {
            return Err(ReadError::NotRegular {
                path: path.to_path_buf(),
                kind: kind_of(m.file_type()),
            })
        }
        _ => {}
    }
    let mut flags = nix::libc::O_NONBLOCK | nix::libc::O_CLOEXEC | nix::libc::O_NOCTTY;
    if follow == Follow::No {
        flags |= nix::libc::O_NOFOLLOW;
    }
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(path)
        .map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => ReadError::NotFound(path.to_path_buf()),
            _ if follow == Follow::No && source.raw_os_error() == Some(nix::libc::ELOOP) => {
                ReadError::Symlink(path.to_path_buf())
            }
            _ => ReadError::Io {
                path: path.to_path_buf(),
                source,
            },
        })?;
    let meta = file.metadata().map_err(|source| ReadError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if !meta.is_file() {
        return Err(ReadError::NotRegular {
            path: path.to_path_buf(),
            kind: kind_of(meta.file_type()),
        });
    }
    if meta.len() > max {
        return Err(ReadError::TooLarge {
            path: path.to_path_buf(),
            max,
        });
    }
    Ok((file, meta.len()))
}

/// Reads the whole regular file at `path`, at most `max` bytes (see [`open_regular`] for
/// what is refused). A file that grows past `max` while it is read is refused too: at most
/// `max + 1` bytes are ever read, so memory stays bounded whatever is at the path.
pub(crate) fn read_regular(path: &Path, max: u64, follow: Follow) -> Result<Vec<u8>, ReadError> {
    let (file, len) = open_regular(path, max, follow)?;
    let mut data = Vec::with_capacity(len.min(max) as usize + 1);
    file.take(max.saturating_add(1))
        .read_to_end(&mut data)
        .map_err(|source| ReadError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    if data.len() as u64 > max {
        return Err(ReadError::TooLarge {
            path: path.to_path_buf(),
            max,
        });
    }
    Ok(data)
}

/// [`read_regular`] for a text file: the bytes must be UTF-8.
pub(crate) fn read_regular_string(
    path: &Path,
    max: u64,
    follow: Follow,
) -> Result<String, ReadError> {
    let bytes = read_regular(path, max, follow)?;
    String::from_utf8(bytes).map_err(|e| ReadError::Io {
        path: path.to_path_buf(),
        source: io::Error::new(io::ErrorKind::InvalidData, e.utf8_error()),
    })
}

/// Writes `bytes` to `path` atomically: a temporary file beside it, created with `mode` from
/// the start (never wider, whatever the umask), fsynced, renamed over `path`, and the
/// directory fsynced so the rename survives a power loss.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let file_name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        file_name.to_string_lossy(),
        rand::random::<u32>()
    ));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(libc_flags())
            .open(&tmp)?;
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn libc_flags() -> i32 {
    nix::fcntl::OFlag::O_NOFOLLOW.bits() | nix::fcntl::OFlag::O_CLOEXEC.bits()
}

/// fsyncs a directory so that renames and creations inside it are durable. The directory
/// is opened `O_DIRECTORY|O_NONBLOCK`: anything else swapped in at its name (a FIFO) is an
/// error at once, never waited on.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_DIRECTORY | nix::libc::O_NONBLOCK | nix::libc::O_CLOEXEC)
        .open(dir)?
        .sync_all()
}

/// Creates `dir` (and missing parents) and sets its mode to exactly `mode`, whatever the
/// umask: the directory is opened (`O_DIRECTORY|O_NOFOLLOW`, so a symlink at `dir` is
/// refused) and fchmod'ed. Parents it creates get `mode` too.
pub(crate) fn ensure_dir(dir: &Path, mode: u32) -> io::Result<()> {
    let mut missing = Vec::new();
    let mut at = Some(dir);
    while let Some(d) = at {
        if d.as_os_str().is_empty() || fs::symlink_metadata(d).is_ok() {
            break;
        }
        missing.push(d);
        at = d.parent();
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)?;
    // Those created here, then `dir` itself (created or not), get exactly `mode`.
    for d in missing.iter().rev().chain(std::iter::once(&dir)) {
        let handle = OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_DIRECTORY | nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
            .open(d)
            .map_err(|e| {
                if e.raw_os_error() == Some(nix::libc::ENOTDIR)
                    || e.raw_os_error() == Some(nix::libc::ELOOP)
                {
                    io::Error::other(format!("{} is not a directory", d.display()))
                } else {
                    e
                }
            })?;
        if handle.metadata()?.permissions().mode() & 0o7777 != mode {
            handle.set_permissions(fs::Permissions::from_mode(mode))?;
        }
    }
    Ok(())
}

/// One step of a path walked name by name (by `deploy`'s directory check and the webroot
/// walk): up to the parent, or into the named entry.
pub(crate) enum Step {
    Up,
    Name(OsString),
}

/// The steps of `path` from its root: `.` and the root itself are no steps.
pub(crate) fn steps(path: &Path) -> impl Iterator<Item = Step> + '_ {
    path.components().filter_map(|c| match c {
        Component::Normal(name) => Some(Step::Name(name.to_os_string())),
        Component::ParentDir => Some(Step::Up),
        Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
    })
}

/// Symlinks a [`Walk`] follows, at most (the kernel's own limit: ELOOP beyond).
pub(crate) const MAX_SYMLINKS: usize = 40;

/// A path resolved the way the kernel does, one name at a time from `/`, for walks that
/// judge every directory and symlink on the way (`deploy`'s directory check; the webroot
/// walk can use it too). The caller keeps the directories it has entered, `/` first; `..`
/// goes back up them (never above `/`), and a symlink's target is walked in its place.
pub(crate) struct Walk {
    pending: VecDeque<Step>,
    links: usize,
}

impl Walk {
    /// A walk of `path` (relative paths are walked from `/`: make them absolute first).
    pub(crate) fn new(path: &Path) -> Walk {
        Walk {
            pending: steps(path).collect(),
            links: 0,
        }
    }

    /// The next name to look up in the last of `entered`, after going up `entered` for each
    /// `..` before it; `None` once the path is used up.
    pub(crate) fn next_name<T>(&mut self, entered: &mut Vec<T>) -> Option<OsString> {
        while let Some(step) = self.pending.pop_front() {
            match step {
                Step::Up => {
                    if entered.len() > 1 {
                        entered.pop();
                    }
                }
                Step::Name(name) => return Some(name),
            }
        }
        None
    }

    /// Counts one more symlink met. Errors: `ELOOP` past [`MAX_SYMLINKS`].
    pub(crate) fn count_link(&mut self) -> Result<(), nix::errno::Errno> {
        self.links += 1;
        if self.links > MAX_SYMLINKS {
            return Err(nix::errno::Errno::ELOOP);
        }
        Ok(())
    }

    /// Walks a symlink's `target` next, in place of the link: from `/` (`entered` cut back
    /// to its root) when it is absolute, else from the link's directory.
    pub(crate) fn splice<T>(&mut self, target: &Path, entered: &mut Vec<T>) {
        if target.is_absolute() {
            entered.truncate(1);
        }
        for step in steps(target).collect::<Vec<_>>().into_iter().rev() {
            self.pending.push_front(step);
        }
    }
}

/// Root and renewd's own (effective) user: whoever else owns a directory, a socket's
/// directory or a server's process controls it.
pub(crate) fn trusted_uid(uid: u32) -> bool {
    uid == 0 || uid == nix::unistd::Uid::effective().as_raw()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// A FIFO (with no writer: a blocking open would wait for ever), a character device
    /// (`/dev/zero` never ends) directly and through a symlink, a directory, a file over
    /// the cap and a symlink under `Follow::No`: each is refused at once with its path,
    /// and nothing is read from it.
    #[test]
    fn read_regular_refuses_what_is_not_a_bounded_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let zero = dir.path().join("zero");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        let big = dir.path().join("big");
        fs::write(&big, vec![b'x'; 101]).unwrap();
        let small = dir.path().join("small");
        fs::write(&small, b"ok").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&small, &link).unwrap();

        let started = Instant::now();
        for (path, follow, want) in [
            (&fifo, Follow::Yes, "is a FIFO"),
            (&zero, Follow::Yes, "is a character device"),
            (&zero, Follow::No, "is a symbolic link"),
            (
                &PathBuf::from("/dev/zero"),
                Follow::No,
                "is a character device",
            ),
            (&dir.path().to_path_buf(), Follow::No, "is a directory"),
            (&big, Follow::Yes, "larger than 100 bytes"),
            (&link, Follow::No, "is a symbolic link"),
        ] {
            let err = read_regular(path, 100, follow).unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains(want), "{}: {msg}", path.display());
            assert!(msg.starts_with(&path.display().to_string()), "{msg}");
        }
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(read_regular(&dir.path().join("none"), 100, Follow::No)
            .unwrap_err()
            .is_not_found());
        assert_eq!(read_regular(&small, 100, Follow::No).unwrap(), b"ok");
        assert_eq!(read_regular(&link, 100, Follow::Yes).unwrap(), b"ok");
        assert_eq!(read_regular(&big, 101, Follow::No).unwrap().len(), 101);
    }

    /// Every file and directory renewd creates in its state directory has the mode renewd
    /// means, under umask 0077 (the unit's) and 0000. The umask is per process, so each
    /// runs in a child process (this test binary, running only
    /// [`modes_under_umask_child`]).
    #[test]
    fn modes_are_explicit_whatever_the_umask() {
        for umask in ["0077", "0000", "0777"] {
            let out = std::process::Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "fsutil::tests::modes_under_umask_child",
                    "--test-threads=1",
                    "--nocapture",
                ])
                .env("RENEWD_TEST_UMASK", umask)
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "umask {umask}: {text}");
            assert!(text.contains("modes checked"), "umask {umask}: {text}");
        }
    }

    /// The child of [`modes_are_explicit_whatever_the_umask`]; does nothing when run by
    /// itself.
    #[test]
    fn modes_under_umask_child() {
        let Ok(umask) = std::env::var("RENEWD_TEST_UMASK") else {
            return;
        };
        let umask = u32::from_str_radix(&umask, 8).unwrap();
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(umask));
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("state/deeper");
        let st = crate::state::StateDir::open(&root).unwrap();
        let _lock = st.try_lock().unwrap();
        st.save_cert("www", &crate::state::CertRecord::default())
            .unwrap();
        crate::inventory::alerts::AlertState::default()
            .save(&root)
            .unwrap();
        write_atomic(&st.account_path("le"), b"{}", 0o600).unwrap();
        write_atomic(&st.journal_dir().join("www.json"), b"{}", 0o600).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        for d in [
            dir.path().join("state"),
            root.clone(),
            root.join("accounts"),
            root.join("certs"),
            root.join("journal"),
        ] {
            assert_eq!(mode(&d), 0o700, "{}", d.display());
        }
        for f in [
            root.join("lock"),
            root.join("certs/www.json"),
            root.join("alerts.json"),
            st.account_path("le"),
            st.journal_dir().join("www.json"),
        ] {
            assert_eq!(mode(&f), 0o600, "{}", f.display());
        }
        println!("modes checked");
    }

    #[test]
    fn write_atomic_replaces_with_exact_mode() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.json");
        write_atomic(&p, b"one", 0o600).unwrap();
        write_atomic(&p, b"two", 0o600).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporaries left"
        );
    }
}

/// The identity of a file's contents as far as `stat` tells: device, inode, size,
/// modification and change times (ns). A replaced or rewritten file gets a new one: a
/// rename brings another inode, and any write sets the change time, which no user can set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct FileId {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileId {
    pub(crate) fn of(meta: &std::fs::Metadata) -> FileId {
        FileId {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }

    /// Device and inode only: the same file under two names.
    pub(crate) fn inode(&self) -> (u64, u64) {
        (self.dev, self.ino)
    }

    /// The identity of what `path` names (symbolic links followed), if it exists.
    pub(crate) fn of_path(path: &Path) -> Option<FileId> {
        std::fs::metadata(path).ok().map(|m| FileId::of(&m))
    }
}

//! The state directory: renewd's memory across restarts.
//!
//! Layout (all owned by root, directories 0700, files 0600):
//! - `lock`: held with `flock` by whichever process renews (the daemon for its whole life, or
//!   a one-shot `renew`/`run --once`), so two processes never renew the same certificate.
//! - `accounts/<ca>.json`: the ACME account credentials for each configured CA.
//! - `accounts/<ca>.pause`: a pause the CA asked for (rate limit, long Retry-After), kept
//!   across restarts (see `acme`).
//! - `certs/<name>.json`: per-certificate history: last result, failures, issuer, the CA's
//!   last ARI answer.
//! - `journal/<name>.json`: the swap journal of a file set being replaced (see
//!   `deploy::journal`); present only while a swap is under way or was interrupted.
//! - `alerts.json`: the alerts sent and still firing (see `inventory::alerts`).
//!
//! Only this module spells these names: everyone else asks [`StateDir`] (or, holding only
//! the configured `state_dir`, [`pause_path`] and [`alerts_path`]).
//!
//! Every file is replaced atomically, so a crash leaves the old or the new version.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::fsutil;
pub(crate) use crate::schedule::ari::AriRecord;
use crate::schedule::Failures;
pub(crate) use crate::schedule::{from_unix, unix, MAX_UNIX};

/// How many past attempts each certificate keeps.
const HISTORY_LEN: usize = 20;

/// Why the state directory cannot be opened, locked or written; each names the path.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// An operating-system error on `path`.
    #[error("state directory {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error(
        "state directory {0} is locked by another renewd process (a running daemon, or a one-shot \
         renew); try again when it has finished"
    )]
    /// Another process holds the lock (see [`StateDir::try_lock`]).
    Locked(PathBuf),
    #[error(
        "state directory {path} already exists with {found}; renewd keeps account keys there \
         and never changes the mode of a directory it did not create (it may be shared, like \
         /var/lib): if it is renewd's alone, `chmod 0700 {path}`, else point `state_dir` at \
         a directory of its own"
    )]
    /// An existing `state_dir` is not a directory of mode 0700 ([`check_existing`]).
    NotPrivate { path: PathBuf, found: String },
}

/// A time in a record beyond [`MAX_UNIX`]: the record is corrupt.
#[derive(Debug, thiserror::Error)]
#[error("`{field}` = {value} is beyond year 9999 ({MAX_UNIX} Unix seconds)")]
struct TimeOutOfRange {
    field: &'static str,
    value: u64,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.to_path_buf(),
        source,
    }
}

const ACCOUNTS: &str = "accounts";
const CERTS: &str = "certs";
const JOURNAL: &str = "journal";

/// `state_dir/accounts/CA.pause`: the pause CA `ca` asked for (rate limit, long
/// Retry-After), beside its account, so a later process does not contact it either.
pub fn pause_path(state_dir: &Path, ca: &str) -> PathBuf {
    state_dir.join(ACCOUNTS).join(format!("{ca}.pause"))
}

/// The files of one CA in the state directory, as `acme` needs them: its account
/// (`accounts/CA.json`) and its pause (`accounts/CA.pause`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CaFiles {
    pub(crate) account: PathBuf,
    pub(crate) pause: PathBuf,
}

/// `state_dir/alerts.json`: the alerts sent and still firing (`inventory::alerts`).
pub(crate) fn alerts_path(state_dir: &Path) -> PathBuf {
    state_dir.join("alerts.json")
}

/// `state_dir/revocation`: the revocation results and cached CRLs (`revocation::store`).
pub(crate) fn revocation_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("revocation")
}

/// Refuses an existing `state_dir` that is not a directory of mode 0700: opening it would
/// chmod it, and a directory shared with others (`/var/lib`, `/tmp`, a home) must not be
/// (`renewd check` and every command that opens the state directory use this). A missing
/// one is fine: renewd creates it 0700.
pub fn check_existing(root: &Path) -> Result<(), StateError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = match fs::symlink_metadata(root) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err(root)(e)),
    };
    let found = if meta.file_type().is_symlink() {
        // Followed like the kernel does; the directory it names is judged.
        match fs::metadata(root) {
            Ok(target) if target.is_dir() => target,
            _ => {
                return Err(StateError::NotPrivate {
                    path: root.to_path_buf(),
                    found: "a symlink to something that is not a directory".into(),
                })
            }
        }
    } else if meta.is_dir() {
        meta
    } else {
        return Err(StateError::NotPrivate {
            path: root.to_path_buf(),
            found: "something that is not a directory".into(),
        });
    };
    let mode = found.permissions().mode() & 0o7777;
    if mode != 0o700 {
        return Err(StateError::NotPrivate {
            path: root.to_path_buf(),
            found: format!("mode {mode:04o}"),
        });
    }
    Ok(())
}

/// An opened state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
    /// Serialises [`StateDir::update_cert`] within this process: the renewals, the ARI
    /// polls and revocations of one certificate may finish at the same time, and each
    /// changes a different part of the same record.
    records: std::sync::Arc<std::sync::Mutex<()>>,
}

/// Holds the state directory's lock until dropped.
#[derive(Debug)]
pub(crate) struct StateLock {
    _lock: Flock<File>,
}

impl StateDir {
    /// Opens (and creates, mode 0700) the state directory and its subdirectories. An
    /// existing `root` must already be a directory of mode 0700 ([`check_existing`]).
    pub fn open(root: &Path) -> Result<StateDir, StateError> {
        check_existing(root)?;
        for d in [
            root.to_path_buf(),
            root.join(ACCOUNTS),
            root.join(CERTS),
            root.join(JOURNAL),
        ] {
            fsutil::ensure_dir(&d, 0o700).map_err(io_err(&d))?;
        }
        Ok(StateDir {
            root: root.to_path_buf(),
            records: Default::default(),
        })
    }

    /// Opens the state directory for reading only: nothing is created. Used by `status` when no
    /// daemon runs, so that a mistyped `state_dir` does not leave directories behind.
    pub(crate) fn open_existing(root: &Path) -> StateDir {
        StateDir {
            root: root.to_path_buf(),
            records: Default::default(),
        }
    }

    /// Takes the exclusive lock without waiting.
    pub(crate) fn try_lock(&self) -> Result<StateLock, StateError> {
        let path = self.lock_path();
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK | nix::libc::O_CLOEXEC)
            .open(&path)
            .map_err(io_err(&path))?;
        let not_regular = |path: PathBuf| StateError::Io {
            path,
            source: io::Error::other("not a regular file"),
        };
        let meta = file.metadata().map_err(io_err(&path))?;
        if !meta.is_file() {
            return Err(not_regular(path));
        }
        // The mode renewd means, whatever the umask; set only when it differs, so a start
        // changes nothing in the state directory (not even the lock file's ctime).
        if std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o7777 != 0o600 {
            file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .map_err(io_err(&path))?;
        }
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(StateLock { _lock: lock }),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Err(StateError::Locked(self.root.clone())),
            Err((_, e)) => Err(StateError::Io {
                path,
                source: e.into(),
            }),
        }
    }

    /// True when some process holds the lock now.
    #[cfg(test)]
    fn is_locked(&self) -> bool {
        let path = self.lock_path();
        let Ok((file, _)) = fsutil::open_regular(&path, u64::MAX, fsutil::Follow::No) else {
            return false;
        };
        matches!(
            Flock::lock(file, FlockArg::LockSharedNonblock),
            Err((_, nix::errno::Errno::EWOULDBLOCK))
        )
    }

    /// `lock`, held by whichever process renews.
    fn lock_path(&self) -> PathBuf {
        self.root.join("lock")
    }

    /// Where the swap journals live (see `deploy::journal`).
    pub(crate) fn journal_dir(&self) -> PathBuf {
        self.root.join(JOURNAL)
    }

    /// `accounts/CA.json`: the ACME account of CA `ca`.
    pub(crate) fn account_path(&self, ca: &str) -> PathBuf {
        self.root.join(ACCOUNTS).join(format!("{ca}.json"))
    }

    /// The account and pause files of CA `ca`.
    pub(crate) fn ca_files(&self, ca: &str) -> CaFiles {
        CaFiles {
            account: self.account_path(ca),
            pause: pause_path(&self.root, ca),
        }
    }

    fn cert_path(&self, name: &str) -> PathBuf {
        self.root.join(CERTS).join(format!("{name}.json"))
    }

    /// The certificate's record; a missing record is an empty one. A corrupt record (not
    /// JSON of a record, or a time beyond [`MAX_UNIX`]) is moved aside (`.corrupt`) and
    /// replaced by an empty one, with a warning: bad bookkeeping must never stop renewals.
    /// A record that is not a regular file (a FIFO, a device, a symlink) or is larger than
    /// [`fsutil::caps::STATE`] is moved aside the same way; it is never read.
    pub fn load_cert(&self, name: &str) -> CertRecord {
        let path = self.cert_path(name);
        let move_aside = |why: &dyn std::fmt::Display| {
            tracing::warn!(cert = name, path = %path.display(), error = %why,
                "state record is corrupt; moving it aside and starting afresh");
            let _ = fs::rename(&path, path.with_extension("json.corrupt"));
            CertRecord::default()
        };
        match fsutil::read_regular(&path, fsutil::caps::STATE, fsutil::Follow::No) {
            Ok(bytes) => match serde_json::from_slice::<CertRecord>(&bytes) {
                Ok(rec) => match rec.check_times() {
                    Ok(()) => rec,
                    Err(why) => move_aside(&why),
                },
                Err(e) => move_aside(&e),
            },
            Err(e) if e.is_not_found() => CertRecord::default(),
            Err(
                e @ (fsutil::ReadError::NotRegular { .. }
                | fsutil::ReadError::Symlink(_)
                | fsutil::ReadError::TooLarge { .. }),
            ) => move_aside(&e),
            Err(e) => {
                tracing::warn!(cert = name, error = %e, "cannot read state record");
                CertRecord::default()
            }
        }
    }

    /// Reads the record of `name`, applies `change`, and writes it back, with no other
    /// update of a record by this process in between (a change computed from a record read
    /// earlier, e.g. before a network request, would undo what was recorded meanwhile).
    pub(crate) fn update_cert(
        &self,
        name: &str,
        change: impl FnOnce(&mut CertRecord),
    ) -> Result<(), StateError> {
        let _serial = self.records.lock().unwrap_or_else(|e| e.into_inner());
        let mut rec = self.load_cert(name);
        change(&mut rec);
        self.save_cert(name, &rec)
    }

    pub(crate) fn save_cert(&self, name: &str, rec: &CertRecord) -> Result<(), StateError> {
        let path = self.cert_path(name);
        let bytes = serde_json::to_vec_pretty(rec).map_err(|e| StateError::Io {
            path: path.clone(),
            source: io::Error::other(e),
        })?;
        fsutil::write_atomic(&path, &bytes, 0o600).map_err(io_err(&path))
    }
}

/// What renewd remembers about one certificate.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct CertRecord {
    /// Failures since the last success.
    pub(crate) consecutive_failures: u32,
    pub(crate) last_failure: Option<u64>,
    /// Not before this time (the CA's Retry-After).
    pub(crate) retry_after: Option<u64>,
    /// The CA that issued the deployed certificate.
    pub(crate) issued_by: Option<String>,
    pub(crate) serial: Option<String>,
    pub(crate) history: Vec<Attempt>,
    /// The CA's last ARI answer about the deployed certificate, if it was asked.
    pub(crate) ari: Option<AriRecord>,
    /// The deployed certificate was revoked (`renewd revoke`) or found revoked (OCSP, CRL
    /// or ARI): it is renewed at once
    /// with a fresh key. Keyed by serial, so it no longer applies once another is deployed.
    pub(crate) revoked: Option<RevokedRecord>,
    /// The [`deploy::set_digest`](crate::deploy::set_digest) of the files renewd last
    /// deployed (lowercase hex): while the deployed files still have it, reading them skips
    /// the checks renewd made before writing them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) deployed_sha256: Option<String>,
}

/// A deployed certificate found revoked.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct RevokedRecord {
    /// The revoked certificate's serial (lowercase hex, as `CertInfo::serial_hex`).
    pub(crate) serial: String,
    /// Where it was learnt: "ocsp", "crl", "ari", or "revoke" / "revoke (REASON)" for
    /// `renewd revoke`.
    pub(crate) source: String,
    /// When (Unix seconds).
    pub(crate) at: u64,
}

/// One renewal attempt, as shown by `status`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct Attempt {
    pub(crate) at: u64,
    pub(crate) ok: bool,
    pub(crate) message: String,
}

impl CertRecord {
    /// [`CertRecord::deployed_sha256`] as bytes (`None` when absent or not 64 hex digits).
    pub(crate) fn deployed_digest(&self) -> Option<crate::deploy::SetDigest> {
        let hex = self.deployed_sha256.as_deref()?;
        data_encoding::HEXLOWER
            .decode(hex.as_bytes())
            .ok()?
            .try_into()
            .ok()
    }

    /// Every time in the record is at most [`MAX_UNIX`]; the error names the field.
    fn check_times(&self) -> Result<(), TimeOutOfRange> {
        let mut times: Vec<(&str, u64)> = Vec::new();
        times.extend(self.last_failure.map(|t| ("last_failure", t)));
        times.extend(self.retry_after.map(|t| ("retry_after", t)));
        times.extend(self.history.iter().map(|a| ("history.at", a.at)));
        if let Some(ari) = &self.ari {
            times.push(("ari.next_poll", ari.next_poll));
            times.extend(ari.chosen.map(|t| ("ari.chosen", t)));
            if let Some((a, b)) = ari.window {
                times.push(("ari.window", a));
                times.push(("ari.window", b));
            }
        }
        match times.into_iter().find(|(_, t)| *t > MAX_UNIX) {
            Some((field, value)) => Err(TimeOutOfRange { field, value }),
            None => Ok(()),
        }
    }

    pub(crate) fn failures(&self) -> Failures {
        Failures {
            consecutive: self.consecutive_failures,
            last_failure: self.last_failure.map(from_unix),
            retry_after: self.retry_after.map(from_unix),
            last_renewed: self
                .history
                .iter()
                .rev()
                .find(|a| a.ok)
                .map(|a| from_unix(a.at)),
        }
    }

    pub(crate) fn last(&self) -> Option<&Attempt> {
        self.history.last()
    }

    pub(crate) fn record_success(
        &mut self,
        now: SystemTime,
        ca: &str,
        serial: &str,
        deployed: Option<&crate::deploy::SetDigest>,
        message: String,
    ) {
        self.deployed_sha256 = deployed.map(|d| data_encoding::HEXLOWER.encode(d));
        self.consecutive_failures = 0;
        self.last_failure = None;
        self.retry_after = None;
        self.issued_by = Some(ca.to_string());
        self.serial = Some(serial.to_string());
        // A revoked certificate is replaced: the mark concerned the one before.
        self.revoked = None;
        self.push(now, true, message);
    }

    pub(crate) fn record_failure(
        &mut self,
        now: SystemTime,
        retry_after: Option<SystemTime>,
        message: String,
    ) {
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        self.last_failure = Some(unix(now));
        self.retry_after = retry_after.map(unix);
        self.push(now, false, message);
    }

    fn push(&mut self, now: SystemTime, ok: bool, message: String) {
        self.history.push(Attempt {
            at: unix(now),
            ok,
            message,
        });
        if self.history.len() > HISTORY_LEN {
            let excess = self.history.len() - HISTORY_LEN;
            self.history.drain(..excess);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Found by `tests/it/fuzz.rs`: a record holding `u64::MAX` as a time panicked in
    /// `from_unix`; now it is the end of year 9999, and a century more still fits.
    #[test]
    fn out_of_range_times_in_a_record_are_clamped() {
        let t = from_unix(u64::MAX);
        assert_eq!(crate::text::rfc3339(t), "9999-12-31T23:59:59Z");
        let _ = t + Duration::from_secs(100 * 366 * 86_400);
        let rec = CertRecord {
            last_failure: Some(u64::MAX),
            retry_after: Some(u64::MAX),
            consecutive_failures: u32::MAX,
            ..CertRecord::default()
        };
        let f = rec.failures();
        assert_eq!(f.retry_after, Some(t));
    }

    #[test]
    fn records_round_trip_and_history_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let st = StateDir::open(&dir.path().join("state")).unwrap();
        let mut rec = st.load_cert("www");
        assert_eq!(rec, CertRecord::default());
        for i in 0..30 {
            rec.record_failure(from_unix(i), None, format!("fail {i}"));
        }
        rec.record_success(from_unix(100), "le", "abcd", None, "ok".into());
        st.save_cert("www", &rec).unwrap();
        let back = st.load_cert("www");
        assert_eq!(back, rec);
        assert_eq!(back.history.len(), HISTORY_LEN);
        assert_eq!(back.consecutive_failures, 0);
        assert_eq!(back.issued_by.as_deref(), Some("le"));
    }

    #[test]
    fn corrupt_record_is_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("state");
        let st = StateDir::open(&root).unwrap();
        fs::write(root.join("certs/www.json"), b"{not json").unwrap();
        assert_eq!(st.load_cert("www"), CertRecord::default());
        assert!(root.join("certs/www.json.corrupt").exists());
    }

    /// A time beyond year 9999 (here u64::MAX, which `UNIX_EPOCH + secs` cannot hold) is
    /// corruption: no panic, the record is moved aside; a FIFO or a link to `/dev/zero` at
    /// a record's name is moved aside unread, at once.
    #[test]
    fn out_of_range_times_and_non_files_are_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("state");
        let st = StateDir::open(&root).unwrap();
        for (field, json) in [
            ("retry_after", format!(r#"{{"retry_after": {}}}"#, u64::MAX)),
            (
                "last_failure",
                format!(r#"{{"last_failure": {}}}"#, MAX_UNIX + 1),
            ),
            (
                "ari.next_poll",
                format!(
                    r#"{{"ari": {{"serial": "01", "next_poll": {}}}}}"#,
                    u64::MAX
                ),
            ),
            (
                "history.at",
                format!(
                    r#"{{"history": [{{"at": {}, "ok": true, "message": ""}}]}}"#,
                    u64::MAX
                ),
            ),
        ] {
            let path = root.join("certs/www.json");
            fs::write(&path, &json).unwrap();
            let rec = st.load_cert("www");
            assert_eq!(rec, CertRecord::default(), "{field}");
            assert!(!path.exists(), "{field}");
            assert_eq!(
                fs::read_to_string(root.join("certs/www.json.corrupt")).unwrap(),
                json
            );
            // What the schedule does with a record's times cannot panic either.
            let _ = rec.failures();
        }
        assert_eq!(from_unix(u64::MAX), from_unix(MAX_UNIX));

        let fifo = root.join("certs/fifo.json");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        std::os::unix::fs::symlink("/dev/zero", root.join("certs/zero.json")).unwrap();
        let started = std::time::Instant::now();
        assert_eq!(st.load_cert("fifo"), CertRecord::default());
        assert_eq!(st.load_cert("zero"), CertRecord::default());
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(root.join("certs/fifo.json.corrupt").exists());
        assert!(fs::symlink_metadata(root.join("certs/zero.json.corrupt")).is_ok());
    }

    #[test]
    fn lock_is_exclusive() {
        let dir = tempfile::tempdir().unwrap();
        let st = StateDir::open(&dir.path().join("state")).unwrap();
        let l = st.try_lock().unwrap();
        assert!(st.is_locked());
        assert!(matches!(st.try_lock(), Err(StateError::Locked(_))));
        drop(l);
        assert!(!st.is_locked());
        st.try_lock().unwrap();
    }
}

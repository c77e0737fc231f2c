//! Putting a certificate's file set into place, and reading back what is in place.
//!
//! Every file is first written in full to a temporary beside its target, with its final mode
//! and owner fixed before the first byte lands, so a private key is never readable by anyone
//! it should not be, not even for an instant, and a full disk or a read-only mount is found
//! while the old files are still untouched. Only when every temporary is on disk are they
//! renamed over their targets. Staging and committing are separate steps ([`stage()`] and
//! [`Staged::commit`]) so that a swap journal can be written between the two: that journal,
//! not this module, is what lets a restart after a crash finish or undo a half-done swap.
//!
//! Nothing is written into a directory that another user could write into, or could swap
//! for another one ([`check_target_dir`]): that is what makes working with path names
//! (rather than directory descriptors) safe here. Within such a directory, a name is never
//! opened for writing unless this process has just created it (`O_CREAT|O_EXCL|O_NOFOLLOW`),
//! so a symlink or hard link planted at a target or temporary name is replaced or refused,
//! never written through.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::unistd::{Gid, Group, Uid, User};

mod deployed;
pub mod journal;
pub(crate) mod pkcs12;
mod render;
mod stage;
mod target_dir;

pub use deployed::{inspect, DeployedProblem};
pub(crate) use deployed::{inspect_known, set_digest, SetDigest};
pub(crate) use render::render;
pub(crate) use stage::{stage, Staged};
pub use target_dir::{acl_dropped, clashing_targets};
pub(crate) use target_dir::{check_dir_for, file_writers};
pub(crate) use target_dir::{check_directories, check_target_dir};

/// What gets deployed: a private key and the chain the CA returned for it.
pub struct Material {
    /// PEM of the private key.
    pub(crate) key_pem: String,
    /// The leaf first, then the intermediates; each one PEM block ending in "\n".
    pub(crate) chain_pem: Vec<String>,
    /// The `pkcs12` file's contents (DER, encrypted: [`pkcs12::encode`]), when one is
    /// configured; built before staging, since it needs the password file.
    pub(crate) pkcs12: Option<Vec<u8>>,
}

impl fmt::Debug for Material {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Material")
            .field("key_pem", &"<redacted>")
            .field("chain_pem", &self.chain_pem)
            .field("pkcs12", &self.pkcs12.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Who the deployed files belong to; `None` leaves that id as the daemon's own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Ownership {
    pub(crate) uid: Option<Uid>,
    pub(crate) gid: Option<Gid>,
}

impl Ownership {
    /// Looks the names up in the user and group databases; a name that is not found but is
    /// a number is taken as a numeric id, as chown(1) does.
    pub(crate) fn resolve(
        user: Option<&str>,
        group: Option<&str>,
    ) -> Result<Ownership, DeployError> {
        let uid = user
            .map(|name| {
                let found = User::from_name(name).map(|u| u.map(|u| u.uid));
                account_id(name, found, Uid::from_raw, DeployError::UnknownUser)
            })
            .transpose()?;
        let gid = group
            .map(|name| {
                let found = Group::from_name(name).map(|g| g.map(|g| g.gid));
                account_id(name, found, Gid::from_raw, DeployError::UnknownGroup)
            })
            .transpose()?;
        Ok(Ownership { uid, gid })
    }
}

/// The id a user or group database lookup of `name` found, else `name` read as a number,
/// else `unknown(name)`.
fn account_id<Id>(
    name: &str,
    found: nix::Result<Option<Id>>,
    from_raw: fn(u32) -> Id,
    unknown: fn(String) -> DeployError,
) -> Result<Id, DeployError> {
    match found {
        Ok(Some(id)) => Ok(id),
        Ok(None) => name
            .parse::<u32>()
            .map(from_raw)
            .map_err(|_| unknown(name.to_string())),
        Err(e) => Err(DeployError::AccountLookup {
            name: name.to_string(),
            source: e.into(),
        }),
    }
}

/// Why a file set could not be put in place.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DeployError {
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
    #[error("{0} is configured as `files.pkcs12` but no PKCS#12 archive was built (bug)")]
    NoPkcs12(PathBuf),
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

/// The directory `target` is in; `.` for a bare file name.
fn parent_dir(target: &Path) -> &Path {
    match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

#[cfg(test)]
pub(crate) mod tests;

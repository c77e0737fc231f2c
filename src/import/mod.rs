//! Moving to renewd from another ACME client: `renewd import certbot` reads certbot's
//! lineages ([`certbot`], through the configobj reader in [`configobj`]) and writes them as
//! renewd configuration ([`render`]): `[ca.NAME]` tables for the CAs not configured yet and
//! one `[[certificate]]` per lineage whose `files` are the lineage's `live/` paths, so the
//! services using them change nothing and the deployed certificates are adopted as they
//! are (renewed when due, like any other).
//!
//! The output is written atomically and never over an existing file unless asked
//! ([`write_new`]).

pub(crate) mod certbot;
pub(crate) mod configobj;
pub(crate) mod hooks;
pub(crate) mod render;
#[cfg(test)]
mod tests;

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The most lineages one import reads: a directory holding more is refused.
pub(crate) const MAX_LINEAGES: usize = 10_000;
/// The largest `regr.json` (an account's registration) or deploy-hook script read, in bytes.
pub(crate) const MAX_SMALL_FILE: u64 = 64 << 10;

/// The four files certbot keeps in `live/NAME/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LiveFiles {
    pub(crate) cert: PathBuf,
    pub(crate) chain: PathBuf,
    pub(crate) fullchain: PathBuf,
    pub(crate) privkey: PathBuf,
}

/// Why an import produced nothing.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ImportError {
    /// certbot's `renewal/` directory cannot be listed.
    #[error("{path}: cannot list certbot's renewal configurations: {source}")]
    List { path: PathBuf, source: io::Error },
    /// More renewal files than [`certbot::MAX_LINEAGES`].
    #[error("{path}: more than {max} renewal configurations; refusing to read them all")]
    TooMany { path: PathBuf, max: usize },
    /// Renewal files that cannot be read or are not configobj, one `FILE:LINE: message`
    /// each (one per line when displayed).
    #[error("{}", lines(.0))]
    Lineages(Vec<certbot::LineageError>),
    /// `renewal/` holds no `*.conf` file.
    #[error("{0}: no certbot lineage (renewal/*.conf) to import")]
    Nothing(PathBuf),
    /// The output file exists and `--force` was not given.
    #[error("{0}: already exists; choose another --output, or --force to replace it")]
    Exists(PathBuf),
    /// Writing the output failed; nothing was left at its path.
    #[error("{path}: cannot write: {source}")]
    Write { path: PathBuf, source: io::Error },
}

fn lines(errors: &[certbot::LineageError]) -> String {
    let all: Vec<String> = errors
        .iter()
        .map(|e| crate::text::escape(&e.to_string()).into_owned())
        .collect();
    all.join("\n")
}

/// Writes `text` to `path` as a new file with mode 0644: a temporary beside it (created
/// `O_EXCL|O_NOFOLLOW`, fsynced), then linked to `path` — which fails if anything is there
/// — or, with `replace`, renamed over it; the directory is fsynced. Either the whole file
/// is at `path` or nothing changed.
pub(crate) fn write_new(path: &Path, text: &str, replace: bool) -> Result<(), ImportError> {
    let failed = |source: io::Error| ImportError::Write {
        path: path.to_path_buf(),
        source,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| failed(io::Error::new(io::ErrorKind::InvalidInput, "no file name")))?;
    let tmp = dir.join(format!(
        ".{}.renewd-import-{}",
        name.to_string_lossy(),
        rand::random::<u32>()
    ));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
            .open(&tmp)?;
        f.set_permissions(std::fs::Permissions::from_mode(0o644))?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        if replace {
            std::fs::rename(&tmp, path)?;
        } else {
            std::fs::hard_link(&tmp, path)?;
            std::fs::remove_file(&tmp)?;
        }
        crate::fsutil::sync_dir(dir)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(if e.kind() == io::ErrorKind::AlreadyExists {
            ImportError::Exists(path.to_path_buf())
        } else {
            failed(e)
        });
    }
    Ok(())
}

#[cfg(test)]
mod write_tests {
    use super::*;

    #[test]
    fn an_existing_output_is_kept_unless_replacing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("certbot.toml");
        write_new(&out, "first\n", false).expect("new file");
        assert_eq!(
            std::fs::metadata(&out)
                .expect("written")
                .permissions()
                .mode()
                & 0o777,
            0o644
        );
        let e = write_new(&out, "second\n", false).unwrap_err();
        assert!(matches!(e, ImportError::Exists(_)), "{e}");
        assert_eq!(std::fs::read_to_string(&out).expect("read"), "first\n");
        write_new(&out, "third\n", true).expect("replaced");
        assert_eq!(std::fs::read_to_string(&out).expect("read"), "third\n");
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(left.len(), 1, "no temporary is left behind: {left:?}");
    }

    #[test]
    fn a_symlink_at_the_output_is_not_written_through() {
        let dir = tempfile::tempdir().expect("tempdir");
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "keep\n").expect("write");
        let out = dir.path().join("out.toml");
        std::os::unix::fs::symlink(&victim, &out).expect("symlink");
        assert!(matches!(
            write_new(&out, "x\n", false),
            Err(ImportError::Exists(_))
        ));
        write_new(&out, "x\n", true).expect("replaces the link itself");
        assert_eq!(std::fs::read_to_string(&victim).expect("read"), "keep\n");
    }
}

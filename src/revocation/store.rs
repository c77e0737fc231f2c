//! What renewd remembers about revocation between passes and restarts:
//! `state_dir/revocation/status.json` (one [`Entry`] a certificate, keyed by the SHA-256 of
//! its DER) and `state_dir/revocation/crl/` (the CRLs fetched, each under the SHA-256 of its
//! URL, read again while their nextUpdate has not passed). Written atomically, mode 0600.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{Entry, RevocationError};
use crate::fsutil;

/// The status file is never larger than this (about 2,000 bytes an entry: 100,000 entries).
const MAX_STATUS: u64 = 256 * 1024 * 1024;

/// `state_dir/revocation`.
pub(crate) fn dir(state_dir: &Path) -> PathBuf {
    crate::state::revocation_dir(state_dir)
}

/// The key of a certificate in the store: `sha256:` and the SHA-256 of its DER (`der`), in
/// lowercase hex. The certificate itself, not its issuer's name and serial: anyone can make
/// a certificate with the same issuer name and serial under a CA of their own, and its
/// answer must not stand for the real one's. Keys of older versions (`SERIAL ISSUER`) match
/// no certificate: those certificates are checked again, and the old entries dropped.
pub(crate) fn key(der: &[u8]) -> String {
    key_of_sha256(&crate::x509::sha256(der))
}

/// [`key`] of a certificate whose DER's SHA-256 is `digest`.
pub(crate) fn key_of_sha256(digest: &[u8; 32]) -> String {
    format!("sha256:{}", data_encoding::HEXLOWER.encode(digest))
}

/// Whether `k` is a key of this version ([`key`]).
fn is_current_key(k: &str) -> bool {
    k.strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Every certificate's last result.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Store {
    #[serde(default)]
    pub(crate) entries: BTreeMap<String, Entry>,
}

/// The daemon's copy of `status.json`, read again only when the file is not the one read
/// last time ([`fsutil::FileId`]: every writer replaces it by renaming a new file, so a
/// write is a new inode and a new change time). An inventory collection then reads nothing
/// when no revocation result changed.
#[derive(Debug, Default)]
pub(crate) struct Cached {
    read: Option<(Option<fsutil::FileId>, std::sync::Arc<Store>)>,
}

impl Cached {
    /// The store of `state_dir`, as [`Store::load`] reads it.
    pub(crate) fn get(&mut self, state_dir: &Path) -> std::sync::Arc<Store> {
        let id = fsutil::FileId::of_path(&dir(state_dir).join("status.json"));
        match &self.read {
            Some((seen, store)) if *seen == id && id.is_some() => store.clone(),
            _ => {
                let store = std::sync::Arc::new(Store::load(state_dir));
                self.read = Some((id, store.clone()));
                store
            }
        }
    }
}

impl Store {
    /// The store of `state_dir`; missing, unreadable or corrupt is empty (a warning for the
    /// last two): a lost cache means checking again, nothing worse.
    pub(crate) fn load(state_dir: &Path) -> Store {
        let path = dir(state_dir).join("status.json");
        match fsutil::read_regular(&path, MAX_STATUS, fsutil::Follow::No) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(path = %path.display(), error = %e,
                    "revocation status file is corrupt; checking every certificate again");
                Store::default()
            }),
            Err(e) if e.is_not_found() => Store::default(),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e,
                    "cannot read the revocation status file; checking every certificate again");
                Store::default()
            }
        }
    }

    /// Takes each result unless the store holds a newer one for the same certificate, and
    /// drops the entries of certificates expired for more than a week and those under an
    /// older version's key.
    pub(crate) fn merge(&mut self, results: &[(String, Entry)], now: u64) {
        for (k, e) in results {
            match self.entries.get(k) {
                Some(old) if old.checked_at > e.checked_at => {}
                _ => {
                    self.entries.insert(k.clone(), e.clone());
                }
            }
        }
        self.entries
            .retain(|k, e| is_current_key(k) && e.not_after.is_none_or(|na| na + 7 * 86_400 > now));
    }

    /// Merges `results` into the store on disk (read again first, so results another
    /// process wrote meanwhile are kept unless older) and writes it atomically. Entries of
    /// certificates expired for more than a week are dropped.
    pub(crate) fn merge_save(
        state_dir: &Path,
        results: &[(String, Entry)],
        now: u64,
    ) -> Result<Store, RevocationError> {
        let d = dir(state_dir);
        fsutil::ensure_dir(&d, 0o700).map_err(|source| RevocationError::State {
            path: d.clone(),
            source,
        })?;
        let mut store = Store::load(state_dir);
        store.merge(results, now);
        let path = d.join("status.json");
        let bytes = serde_json::to_vec_pretty(&store).map_err(|e| RevocationError::State {
            path: path.clone(),
            source: std::io::Error::other(e),
        })?;
        fsutil::write_atomic(&path, &bytes, 0o600)
            .map_err(|source| RevocationError::State { path, source })?;
        Ok(store)
    }
}

/// Where the CRL fetched from `url` is cached.
pub(crate) fn crl_path(state_dir: &Path, url: &str) -> PathBuf {
    let digest = crate::x509::sha256(url.as_bytes());
    dir(state_dir)
        .join("crl")
        .join(format!("{}.der", data_encoding::HEXLOWER.encode(&digest)))
}

/// The cached CRL of `url`, if there is one and it is readable (at most `max` bytes).
pub(crate) fn load_crl(state_dir: &Path, url: &str, max: u64) -> Option<Vec<u8>> {
    fsutil::read_regular(&crl_path(state_dir, url), max, fsutil::Follow::No).ok()
}

/// Caches `der`, the CRL fetched from `url` (atomically, mode 0600).
pub(crate) fn save_crl(state_dir: &Path, url: &str, der: &[u8]) -> Result<(), RevocationError> {
    let path = crl_path(state_dir, url);
    let parent = path.parent().unwrap_or(Path::new("."));
    fsutil::ensure_dir(parent, 0o700)
        .and_then(|()| fsutil::write_atomic(&path, der, 0o600))
        .map_err(|source| RevocationError::State { path, source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::revocation::{Source, Status};

    fn entry(checked_at: u64) -> Entry {
        Entry {
            status: Status::Good,
            source: Some(Source::Ocsp),
            checked_at,
            next_check: checked_at + 3600,
            detail: None,
            not_after: Some(10_000_000),
        }
    }

    #[test]
    fn merge_keeps_the_newer_result_and_survives_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let k = key(b"certificate one");
        Store::merge_save(dir.path(), &[(k.clone(), entry(200))], 100).unwrap();
        // An older result (another process's, finished later) does not replace it.
        let s = Store::merge_save(dir.path(), &[(k.clone(), entry(150))], 100).unwrap();
        assert_eq!(s.entries[&k].checked_at, 200);
        assert_eq!(Store::load(dir.path()), s);
        // Corrupt: empty, not an error.
        std::fs::write(dir.path().join("revocation/status.json"), b"{").unwrap();
        assert!(Store::load(dir.path()).entries.is_empty());
    }

    #[test]
    fn the_daemons_copy_is_read_again_only_when_the_file_changed_even_behind_its_back() {
        let dir = tempfile::tempdir().unwrap();
        let k = key(b"certificate three");
        let mut cached = Cached::default();
        assert!(cached.get(dir.path()).entries.is_empty());
        Store::merge_save(dir.path(), &[(k.clone(), entry(200))], 100).unwrap();
        let first = cached.get(dir.path());
        assert_eq!(first.entries[&k].checked_at, 200);
        // Unchanged: the same copy, nothing parsed.
        assert!(std::sync::Arc::ptr_eq(&first, &cached.get(dir.path())));
        // Rewritten in place behind its back, same size, modification time put back: the
        // change time still moves.
        let path = dir.path().join("revocation/status.json");
        let before = std::fs::metadata(&path).unwrap();
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("200", "201");
        std::fs::write(&path, &text).unwrap();
        std::fs::File::options()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_modified(before.modified().unwrap()))
            .unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), before.len());
        assert_eq!(cached.get(dir.path()).entries[&k].checked_at, 201);
    }

    #[test]
    fn entries_of_long_expired_certificates_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let k = key(b"certificate two");
        let s = Store::merge_save(dir.path(), &[(k, entry(1))], 10_000_000 + 8 * 86_400).unwrap();
        assert!(s.entries.is_empty());
    }

    #[test]
    fn an_old_status_file_keyed_by_serial_and_issuer_loads_and_its_entries_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("revocation")).unwrap();
        let old = serde_json::json!({"entries": {"0a CN=ca": entry(100)}});
        std::fs::write(
            dir.path().join("revocation/status.json"),
            serde_json::to_vec(&old).unwrap(),
        )
        .unwrap();
        let s = Store::load(dir.path());
        assert_eq!(s.entries.len(), 1, "read, not refused as corrupt");
        assert!(!s.entries.contains_key(&key(b"0a CN=ca")));
        let k = key(b"certificate");
        let s = Store::merge_save(dir.path(), &[(k.clone(), entry(200))], 100).unwrap();
        assert_eq!(s.entries.keys().collect::<Vec<_>>(), vec![&k]);
    }
}

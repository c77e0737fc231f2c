//! Revocation, enforced: whether each certificate renewd knows (managed, exception,
//! unmanaged) has been revoked, learnt from what the certificate itself names — its OCSP
//! responder ([`ocsp`], RFC 6960, from the Authority Information Access extension, RFC 5280
//! §4.2.2.1) and, when that gives no answer, its CRL distribution points ([`crl`], RFC 5280
//! §4.2.1.13 and §5). The issuer comes from the chain in the certificate's own files.
//!
//! A *pass* ([`pass`]) checks the certificates whose last result is due again, one request
//! at a time, each within [`TIMEOUT`] and a size cap; only `http://` URLs are used (RFC 5280
//! §4.2.1.13, RFC 6960 Appendix A.1). Rate limits: a result is not asked again before the
//! responder's nextUpdate (clamped to [`MIN_RECHECK`]..[`MAX_RECHECK`]), an unknown one not
//! within [`MIN_RECHECK`]; within a pass requests to one host start at least 50 ms apart, a
//! responder host that failed once is not asked again, and one CRL URL is fetched once (then
//! read from the cache until its nextUpdate). Results
//! are kept in the state directory ([`store`]), so a restart does not ask again. The daemon
//! runs a pass when the earliest `next_check` comes (a deadline of its select loop); `run
//! --once` and `inventory` run one for what is due. A managed certificate found revoked is
//! marked in its record (`state::RevokedRecord`), which makes it due at once
//! (`schedule::decide_revoked`) and renewed with a fresh key.

mod check;
pub(crate) mod crl;
mod forward;
pub(crate) mod ocsp;
pub(crate) mod store;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::inventory::{Inventory, Kind};
pub(crate) use crate::inventory::{RevocationSource as Source, RevocationStatus as Status};
use crate::text::rfc3339;
use check::Checker;
pub(crate) use store::Store;

/// The least time between two checks of one certificate, whatever the responder's
/// nextUpdate says; also the retry time of an unknown result.
pub(crate) const MIN_RECHECK: Duration = Duration::from_secs(3600);
/// The most time between two checks of one certificate.
pub(crate) const MAX_RECHECK: Duration = Duration::from_secs(86_400);
/// One exchange with a responder or CRL server, connection included.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(10);
/// The largest OCSP response read (a response for one certificate is a few KiB).
pub(crate) const MAX_OCSP_RESPONSE: u64 = 64 * 1024;
/// The largest CRL read or cached.
pub(crate) const MAX_CRL: u64 = 16 * 1024 * 1024;
/// Clock skew allowed against thisUpdate and nextUpdate.
pub(crate) const SKEW: Duration = Duration::from_secs(300);
/// TCP connection set-up.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why one exchange with a responder or CRL server failed.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum FetchError {
    #[error("{url}: not a URL: {why}")]
    Url { url: String, why: String },
    #[error("{url}: only http:// is used for OCSP and CRLs (RFC 5280 §4.2.1.13)")]
    NotHttp { url: String },
    /// The host did not answer earlier in this pass.
    #[error("{url}: not asked, {host} failed earlier in this pass")]
    HostFailed { url: String, host: String },
    #[error("{url}: {why}")]
    Request { url: String, why: String },
    #[error("{url}: no answer within {}s", TIMEOUT.as_secs())]
    Timeout { url: String },
    #[error("{url}: HTTP status {status}")]
    Status { url: String, status: u16 },
    #[error("{url}: the answer is larger than {max} bytes; refused")]
    TooLarge { url: String, max: u64 },
}

/// The last result for one certificate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Entry {
    pub(crate) status: Status,
    /// `None` when neither source answered.
    pub(crate) source: Option<Source>,
    /// When it was checked (Unix seconds).
    pub(crate) checked_at: u64,
    /// When it is to be checked again (Unix seconds).
    pub(crate) next_check: u64,
    /// Why unknown (what failed, per source), or when and why revoked.
    pub(crate) detail: Option<String>,
    /// The certificate's notAfter (Unix seconds): entries are dropped a week after it.
    pub(crate) not_after: Option<u64>,
}

/// Why a pass could not do its work (a single check's failures are results: unknown).
#[derive(Debug, thiserror::Error)]
pub(crate) enum RevocationError {
    /// The state directory's revocation files could not be written.
    #[error("{}: {source}", path.display())]
    State {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The HTTP client could not be set up (TLS or proxy settings).
    #[error("cannot set up the revocation client: {0}")]
    Client(String),
}

/// When a certificate is checked again after a result with `next_update` (the responder's
/// or CRL's; `None` when it gave none), checked at `now`: at nextUpdate, but not before
/// [`MIN_RECHECK`] nor after [`MAX_RECHECK`]. An unknown result is retried after
/// [`MIN_RECHECK`]; a revoked one stays revoked and is looked at again after [`MAX_RECHECK`].
pub(crate) fn next_check(
    status: Status,
    now: SystemTime,
    next_update: Option<SystemTime>,
) -> SystemTime {
    match status {
        Status::Unknown => now + MIN_RECHECK,
        Status::Revoked => now + MAX_RECHECK,
        Status::Good => next_update
            .unwrap_or(now + MAX_RECHECK)
            .clamp(now + MIN_RECHECK, now + MAX_RECHECK),
    }
}

/// One certificate to check: which, and where its files are.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Wanted {
    pub(crate) kind: Kind,
    /// The `[[certificate]]` name (managed only).
    pub(crate) name: Option<String>,
    /// The store key ([`store::key`]) of the certificate as the caller read it; the result
    /// is kept under the key of the certificate its files hold when checked.
    pub(crate) key: String,
    /// Its serial (lowercase hex).
    pub(crate) serial: String,
    /// The file holding the certificate (first), then every other file that may hold its
    /// chain.
    pub(crate) files: Vec<PathBuf>,
}

/// Every certificate of `inv` that can be checked (its certificate was read, and not from
/// a PKCS#12 bundle: [`PKCS12_NOT_CHECKED`]), with the files to read it and its chain from.
pub(crate) fn wanted(inv: &Inventory) -> Vec<Wanted> {
    inv.certificates
        .iter()
        .filter(|i| i.pkcs12_leaf.is_none())
        .filter_map(|i| {
            let (Some(serial), Some(key)) = (&i.serial, &i.fingerprint) else {
                return None;
            };
            let mut files: Vec<PathBuf> = i.cert_path.iter().cloned().collect();
            files.extend(
                i.paths
                    .iter()
                    .filter(|p| Some(*p) != i.cert_path.as_ref())
                    .cloned(),
            );
            (!files.is_empty()).then(|| Wanted {
                kind: i.kind,
                name: i.name.clone(),
                key: key.clone(),
                serial: serial.clone(),
                files,
            })
        })
        .collect()
}

/// The managed certificate `cert` as deployed (`info`, read from its files), to check.
pub(crate) fn wanted_managed(
    cert: &crate::config::CertConfig,
    info: &crate::x509::CertInfo,
) -> Wanted {
    use crate::config::FileKind;
    let first = [FileKind::Cert, FileKind::Fullchain, FileKind::Combined]
        .into_iter()
        .find_map(|k| cert.files.get(k).map(|p| p.to_path_buf()));
    let mut files: Vec<PathBuf> = first.iter().cloned().collect();
    files.extend(
        cert.files
            .iter()
            .map(|(_, p)| p.to_path_buf())
            .filter(|p| Some(p) != first.as_ref()),
    );
    Wanted {
        kind: Kind::Managed,
        name: Some(cert.name.clone()),
        key: store::key(&info.der),
        serial: info.serial_hex.clone(),
        files,
    }
}

/// Why a certificate found in a PKCS#12 bundle is not checked: reading it takes the
/// bundle's password (the inventory's `pkcs12_password_files`), and its issuer may not be in
/// the bundle; renewd checks the certificates of PEM and DER files.
pub(crate) const PKCS12_NOT_CHECKED: &str =
    "not checked: it is in a PKCS#12 bundle (renewd checks PEM and DER certificate files)";

/// Puts each certificate's last result into `inv` (`revocation`, its source, when checked,
/// why), found by the certificate itself ([`store::key`]); a certificate read but never
/// checked is `unknown` with no time, one in a PKCS#12 bundle `unknown` and never due.
pub(crate) fn annotate(inv: &mut Inventory, store: &Store) {
    for item in &mut inv.certificates {
        let Some(key) = &item.fingerprint else {
            continue;
        };
        if item.pkcs12_leaf.is_some() {
            item.revocation = Some(Status::Unknown);
            item.revocation_detail = Some(PKCS12_NOT_CHECKED.into());
            continue;
        }
        match store.entries.get(key) {
            Some(e) => {
                item.revocation = Some(e.status);
                item.revocation_source = e.source;
                item.revocation_checked_at = Some(rfc3339(crate::state::from_unix(e.checked_at)));
                item.revocation_detail = e.detail.clone();
                item.revocation_next_check = Some(e.next_check);
            }
            None => {
                item.revocation = Some(Status::Unknown);
                item.revocation_detail = Some("not checked yet".into());
                item.revocation_next_check = Some(0);
            }
        }
    }
}

/// The managed certificates of `wanted` that `store` holds as revoked: name, serial, source.
pub(crate) fn revoked_managed(wanted: &[Wanted], store: &Store) -> Vec<(String, String, Source)> {
    wanted
        .iter()
        .filter(|w| w.kind == Kind::Managed)
        .filter_map(|w| {
            let e = store.entries.get(&w.key)?;
            (e.status == Status::Revoked).then(|| {
                (
                    w.name.clone().unwrap_or_default(),
                    w.serial.clone(),
                    e.source.unwrap_or(Source::Ocsp),
                )
            })
        })
        .collect()
}

/// What `status` shows without the state lock: `rec` as if [`mark_revoked`] had run for the
/// deployed certificate `info` when `store` holds it as revoked (nothing is written).
pub(crate) fn overlay(
    rec: &mut crate::state::CertRecord,
    info: &crate::x509::CertInfo,
    store: &Store,
) {
    let Some(e) = store.entries.get(&store::key(&info.der)) else {
        return;
    };
    if e.status == Status::Revoked
        && rec
            .revoked
            .as_ref()
            .is_none_or(|r| r.serial != info.serial_hex)
    {
        rec.revoked = Some(crate::state::RevokedRecord {
            serial: info.serial_hex.clone(),
            source: e.source.map_or("?", Source::as_str).to_string(),
            at: e.checked_at,
        });
    }
}

/// Marks each managed certificate of `revoked` ([`revoked_managed`]) in its record at the
/// revoked serial (unless already so), so the schedule renews it at once with a fresh key.
/// Returns the names newly marked; failures to write are logged. Blocking; the caller holds
/// the state lock.
pub(crate) fn mark_revoked(
    state: &crate::state::StateDir,
    revoked: &[(String, String, Source)],
    now: SystemTime,
) -> Vec<String> {
    let mut marked = Vec::new();
    for (name, serial, source) in revoked {
        if state
            .load_cert(name)
            .revoked
            .is_some_and(|r| &r.serial == serial)
        {
            continue;
        }
        let record = crate::state::RevokedRecord {
            serial: serial.clone(),
            source: source.as_str().to_string(),
            at: crate::state::unix(now),
        };
        tracing::warn!(cert = %name, serial = %serial, source = source.as_str(),
            "{name}: the deployed certificate is revoked; renewing it at once with a new key");
        match state.update_cert(name, |r| r.revoked = Some(record)) {
            Ok(()) => marked.push(name.clone()),
            Err(e) => tracing::error!(cert = %name, error = %e, "cannot record the revocation"),
        }
    }
    marked
}

/// Checks every certificate of `wanted` whose result is due at `now`, and saves the
/// results into the store of `state_dir`; returns the store with them (one that cannot be
/// written is logged, and returned all the same). Errors: the HTTP client could not be set
/// up.
pub(crate) async fn pass(
    state_dir: &Path,
    wanted: Vec<Wanted>,
    now: SystemTime,
) -> Result<Store, RevocationError> {
    let dir = state_dir.to_path_buf();
    let store = {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || Store::load(&dir))
            .await
            .unwrap_or_default()
    };
    let now_s = crate::state::unix(now);
    let due: Vec<Wanted> = wanted
        .into_iter()
        .filter(|w| {
            store
                .entries
                .get(&w.key)
                .is_none_or(|e| e.next_check <= now_s)
        })
        .collect();
    if due.is_empty() {
        return Ok(store);
    }
    let checker = Checker::new(dir.clone())?;
    let mut results = Vec::new();
    for w in due {
        let (key, entry) = checker.check(&w).await;
        let path = w.files.first().map(|p| p.display().to_string());
        // The path is another user's choice of name, the detail a responder's words:
        // escaped, so neither can forge a log line.
        tracing::info!(path = %crate::text::escape(path.as_deref().unwrap_or("")),
            name = %crate::text::escape(w.name.as_deref().unwrap_or("")),
            serial = %w.serial, key = %key, status = entry.status.as_str(),
            source = entry.source.map_or("-", Source::as_str),
            detail = %crate::text::escape(entry.detail.as_deref().unwrap_or("")),
            "revocation checked");
        results.push((key, entry));
    }
    let mut kept = store;
    kept.merge(&results, now_s);
    let saved = tokio::task::spawn_blocking(move || Store::merge_save(&dir, &results, now_s)).await;
    let store = match saved {
        Ok(Ok(store)) => store,
        Ok(Err(e)) => {
            tracing::warn!(error = %e,
                "cannot save the revocation results; they are checked again next time");
            kept
        }
        Err(e) => {
            tracing::warn!(error = %e, "saving the revocation results failed");
            kept
        }
    };
    Ok(store)
}

/// `inventory`: a [`pass`] over what is due among `inv`'s certificates, then [`annotate`].
/// A client that cannot be set up is logged, and the last results shown.
pub(crate) async fn refresh(state_dir: &Path, inv: &mut Inventory, now: SystemTime) {
    match pass(state_dir, wanted(inv), now).await {
        Ok(store) => annotate(inv, &store),
        Err(e) => {
            tracing::error!(error = %e, "revocation not checked");
            let dir = state_dir.to_path_buf();
            let store = tokio::task::spawn_blocking(move || Store::load(&dir))
                .await
                .unwrap_or_default();
            annotate(inv, &store);
        }
    }
}

/// How the answer `body` fails to be DER, in words (never its bytes: a hostile server's
/// answer is not echoed into logs and `inventory`): "truncated" when its outer element
/// (a SEQUENCE) claims more bytes than came, "empty", else "not DER" (which also covers
/// DER of something else).
pub(crate) fn der_fault(body: &[u8]) -> &'static str {
    use der::{Decode, Reader};
    if body.is_empty() {
        return "empty";
    }
    // Both an OCSPResponse and a CRL are a SEQUENCE: anything else is not cut short.
    if body[0] != 0x30 {
        return "not DER";
    }
    let Ok(mut r) = der::SliceReader::new(body) else {
        return "not DER";
    };
    match der::Header::decode(&mut r) {
        Ok(h) if h.length > r.remaining_len() => "truncated",
        Err(e) if matches!(e.kind(), der::ErrorKind::Incomplete { .. }) => "truncated",
        _ => "not DER",
    }
}

/// What an OCSP response or a CRL says about one certificate, verified.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Answer {
    pub(crate) status: Status,
    pub(crate) this_update: SystemTime,
    pub(crate) next_update: Option<SystemTime>,
    pub(crate) revoked_at: Option<SystemTime>,
    /// The CRLReason, when given (RFC 5280 §5.3.1).
    pub(crate) reason: Option<String>,
}

/// An answer outside its validity (RFC 6960 §4.2.2.1, RFC 5280 §5.1.2.4–5).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub(crate) enum TimeError {
    #[error("thisUpdate {} is in the future", rfc3339(*.0))]
    Future(SystemTime),
    #[error("stale: its nextUpdate {} has passed", rfc3339(*.0))]
    Stale(SystemTime),
}

/// thisUpdate not in the future and nextUpdate not passed (with [`SKEW`]).
pub(crate) fn check_times(
    this_update: SystemTime,
    next_update: Option<SystemTime>,
    now: SystemTime,
) -> Result<(), TimeError> {
    if this_update > now + SKEW {
        return Err(TimeError::Future(this_update));
    }
    if let Some(n) = next_update.filter(|n| *n + SKEW < now) {
        return Err(TimeError::Stale(n));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: u64) -> SystemTime {
        crate::state::from_unix(s)
    }

    #[test]
    fn rechecks_follow_next_update_within_the_floor_and_ceiling() {
        let now = t(1_000_000);
        let at = |s, n: Option<u64>| crate::state::unix(next_check(s, now, n.map(t)));
        assert_eq!(at(Status::Good, Some(1_000_000 + 7200)), 1_000_000 + 7200);
        assert_eq!(at(Status::Good, Some(1_000_000 + 60)), 1_000_000 + 3600);
        assert_eq!(
            at(Status::Good, Some(1_000_000 + 7 * 86_400)),
            1_000_000 + 86_400
        );
        assert_eq!(at(Status::Good, None), 1_000_000 + 86_400);
        assert_eq!(
            at(Status::Unknown, Some(1_000_000 + 7200)),
            1_000_000 + 3600
        );
        assert_eq!(at(Status::Revoked, None), 1_000_000 + 86_400);
    }

    fn inventory_of(serial: &str) -> Inventory {
        let mut item = crate::inventory::Item::blank(Kind::Managed);
        item.name = Some("www".into());
        item.serial = Some(serial.into());
        item.issuer = Some("CN=ca".into());
        item.fingerprint = Some(store::key(serial.as_bytes()));
        item.paths = vec!["/tls/www.key".into(), "/tls/www.pem".into()];
        item.cert_path = Some("/tls/www.pem".into());
        Inventory {
            version: 1,
            generated_at: 0,
            certificates: vec![item],
            discovery: Default::default(),
            anchors: Vec::new(),
            anchors_next: None,
        }
    }

    #[test]
    fn the_inventory_shows_the_kept_result_and_a_never_checked_one_is_due_now() {
        let mut inv = inventory_of("0a");
        let w = wanted(&inv);
        assert_eq!(w.len(), 1);
        // The certificate's file first, then the others (its chain may be there).
        assert_eq!(
            w[0].files,
            vec![PathBuf::from("/tls/www.pem"), "/tls/www.key".into()]
        );
        annotate(&mut inv, &Store::default());
        let i = &inv.certificates[0];
        assert_eq!(
            (i.revocation, i.revocation_next_check),
            (Some(Status::Unknown), Some(0))
        );
        let mut store = Store::default();
        store.entries.insert(
            w[0].key.clone(),
            Entry {
                status: Status::Revoked,
                source: Some(Source::Crl),
                checked_at: 1_000_000,
                next_check: 1_086_400,
                detail: None,
                not_after: None,
            },
        );
        annotate(&mut inv, &store);
        let i = &inv.certificates[0];
        assert_eq!(i.revocation, Some(Status::Revoked));
        assert_eq!(i.revocation_source, Some(Source::Crl));
        assert_eq!(
            i.revocation_checked_at.as_deref(),
            Some("1970-01-12T13:46:40Z")
        );
        assert_eq!(i.revocation_next_check, Some(1_086_400));
        assert_eq!(
            revoked_managed(&w, &store),
            vec![("www".to_string(), "0a".to_string(), Source::Crl)]
        );
    }

    #[test]
    fn a_certificate_of_the_same_issuer_name_and_serial_does_not_share_its_result() {
        // The managed certificate and a planted one with the same serial and issuer name
        // (its own CA): two certificates, two results.
        let mut inv = inventory_of("0a");
        let mut planted = crate::inventory::Item::blank(Kind::Unmanaged);
        planted.serial = Some("0a".into());
        planted.issuer = Some("CN=ca".into());
        planted.fingerprint = Some(store::key(b"the planted certificate"));
        planted.paths = vec!["/scan/planted.pem".into()];
        inv.certificates.push(planted);
        let w = wanted(&inv);
        assert_eq!(w.len(), 2);
        assert_ne!(w[0].key, w[1].key);
        let mut store = Store::default();
        let revoked = Entry {
            status: Status::Revoked,
            source: Some(Source::Ocsp),
            checked_at: 1_000_000,
            next_check: 1_086_400,
            detail: None,
            not_after: None,
        };
        store.entries.insert(w[1].key.clone(), revoked);
        annotate(&mut inv, &store);
        assert_eq!(inv.certificates[0].revocation, Some(Status::Unknown));
        assert_eq!(inv.certificates[1].revocation, Some(Status::Revoked));
        assert!(revoked_managed(&w, &store).is_empty());
    }

    #[test]
    fn a_certificate_of_a_pkcs12_bundle_is_not_checked_and_says_so() {
        let mut inv = inventory_of("0b");
        inv.certificates[0].kind = Kind::Unmanaged;
        inv.certificates[0].pkcs12_leaf = Some(true);
        assert!(wanted(&inv).is_empty());
        annotate(&mut inv, &Store::default());
        let i = &inv.certificates[0];
        assert_eq!(i.revocation, Some(Status::Unknown));
        assert_eq!(i.revocation_detail.as_deref(), Some(PKCS12_NOT_CHECKED));
        // Never due: the daemon does not plan passes for it.
        assert_eq!(i.revocation_next_check, None);
    }

    #[test]
    fn undecodable_answers_are_described_without_their_bytes() {
        assert_eq!(der_fault(b""), "empty");
        // APPLICATION [19], primitive: what a hostile server sent the tester.
        assert_eq!(der_fault(&[0x53, 0x01, 0x00]), "not DER");
        assert_eq!(
            der_fault(&[0x30, 0x82, 0x10, 0x00, 0x30, 0x00]),
            "truncated"
        );
        assert_eq!(der_fault(&[0x30]), "truncated");
    }

    #[test]
    fn stale_and_future_answers_are_refused() {
        let now = t(1_000_000);
        assert!(check_times(t(999_000), Some(t(1_001_000)), now).is_ok());
        assert!(check_times(t(1_000_000 + 301), None, now)
            .unwrap_err()
            .to_string()
            .contains("future"));
        assert_eq!(
            check_times(t(900_000), Some(t(999_000)), now),
            Err(TimeError::Stale(t(999_000)))
        );
    }
}

//! One certificate's check, over HTTP: its chain read from its files, what it names (OCSP
//! responders, CRL distribution points), the exchanges (only `http://`, each within
//! [`TIMEOUT`] and a size cap, a host that failed not asked again in the same pass), and the
//! resulting [`Entry`].

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use x509_parser::extensions::{DistributionPointName, GeneralName, ParsedExtension};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::{
    crl, next_check, ocsp, store, Answer, Entry, FetchError, RevocationError, Source, Status,
    Wanted, CONNECT_TIMEOUT, MAX_CRL, MAX_OCSP_RESPONSE, TIMEOUT,
};
use crate::outbound::{Outbound, ProxySetting};
use crate::text::rfc3339;

/// Requests to one host within a pass start at least this far apart (20 a second at most):
/// a host with a thousand certificates' responder is not hammered.
const HOST_SPACING: Duration = Duration::from_millis(50);
/// Certificate files read for the chain.
const MAX_CERT_FILE: u64 = 1024 * 1024;
/// OCSP responders asked for one certificate, in the order it names them; the others are
/// reported as not tried. A CA names one (RFC 6960 §4.2.2.1 allows more, none of the
/// public CAs uses more than one); a second allows a fallback. A certificate naming dozens
/// of silent hosts would otherwise hold the pass for [`TIMEOUT`] each.
pub(crate) const MAX_OCSP_URLS: usize = 2;
/// CRL distribution points asked for one certificate (as [`MAX_OCSP_URLS`]): a CA names one,
/// sometimes an HTTP and an LDAP one of the same CRL.
pub(crate) const MAX_CRL_URLS: usize = 2;
/// All the exchanges of one certificate end within this (two full [`TIMEOUT`]s): what is
/// left is reported as not tried.
pub(crate) const CHECK_DEADLINE: Duration = Duration::from_secs(20);

/// Why a source gave no status for the certificate.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SourceError {
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error("{url}: {source}")]
    Ocsp {
        url: String,
        #[source]
        source: ocsp::OcspError,
    },
    #[error("{url}: {source}")]
    Crl {
        url: String,
        #[source]
        source: crl::CrlError,
    },
}

/// Why the certificate or its issuer could not be read from its files.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ChainError {
    #[error("{}: {why}", path.display())]
    Unreadable { path: PathBuf, why: String },
    #[error("no certificate in its files")]
    Empty,
    #[error("reading its files failed: {0}")]
    Aborted(String),
}

/// A certificate and its issuer, as read from its files.
struct Pair {
    leaf: Vec<u8>,
    issuer: Option<Vec<u8>>,
}

/// Reads the leaf (the first certificate of the first file) and, among every certificate of
/// the files, the one whose subject is the leaf's issuer and whose key verifies its
/// signature. Only the first file must be readable; the others may hold the chain.
/// Why the certificate file `path` is under another user's control, if it is: owned by a
/// user other than root and renewd's, writable by its group or everyone, or in a directory
/// others could put a file into ([`crate::deploy::check_target_dir`]'s rule).
fn controlled_by_others(path: &std::path::Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) => return Some(format!("{}: {e}", path.display())),
    };
    if !crate::fsutil::trusted_uid(meta.uid()) {
        return Some(format!("{} belongs to uid {}", path.display(), meta.uid()));
    }
    if meta.mode() & 0o022 != 0 && !(meta.mode() & 0o002 == 0 && meta.gid() == 0) {
        return Some(format!(
            "{} is writable by its group or everyone (mode {:o})",
            path.display(),
            meta.mode() & 0o7777
        ));
    }
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty())?;
    crate::deploy::check_target_dir(dir)
        .err()
        .map(|e| e.to_string())
}

fn read_pair(files: &[PathBuf]) -> Result<Pair, ChainError> {
    let mut all: Vec<Vec<u8>> = Vec::new();
    for (n, f) in files.iter().enumerate() {
        let unreadable = |why: String| ChainError::Unreadable {
            path: f.clone(),
            why,
        };
        let bytes = match crate::fsutil::read_regular(f, MAX_CERT_FILE, crate::fsutil::Follow::Yes)
        {
            Ok(b) => b,
            Err(e) if n == 0 => return Err(unreadable(e.reason())),
            Err(_) => continue,
        };
        let ders = if bytes.first() == Some(&0x30) {
            vec![bytes]
        } else {
            match crate::x509::pem_certificates(&bytes) {
                Ok(d) => d,
                Err(e) if n == 0 => return Err(unreadable(e.to_string())),
                Err(_) => continue,
            }
        };
        all.extend(ders);
    }
    let leaf = all.first().cloned().ok_or(ChainError::Empty)?;
    let issuer = all[1..]
        .iter()
        .find(|c| crate::x509::verify_issued_by(&leaf, c).is_ok())
        .cloned();
    Ok(Pair { leaf, issuer })
}

/// What the certificate names: its OCSP responders (AIA id-ad-ocsp, RFC 5280 §4.2.2.1) and
/// CRL distribution points (full names, RFC 5280 §4.2.1.13), as URLs.
pub(crate) fn locations(cert: &X509Certificate<'_>) -> (Vec<String>, Vec<String>) {
    let (mut ocsp, mut crls) = (Vec::new(), Vec::new());
    for ext in cert.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::AuthorityInfoAccess(aia) => {
                for ad in &aia.accessdescs {
                    if ad.access_method
                        == x509_parser::oid_registry::OID_PKIX_ACCESS_DESCRIPTOR_OCSP
                    {
                        if let GeneralName::URI(u) = &ad.access_location {
                            ocsp.push(u.to_string());
                        }
                    }
                }
            }
            ParsedExtension::CRLDistributionPoints(dps) => {
                for dp in dps.iter() {
                    if let Some(DistributionPointName::FullName(names)) = &dp.distribution_point {
                        for n in names {
                            if let GeneralName::URI(u) = n {
                                crls.push(u.to_string());
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }
    (ocsp, crls)
}

/// The HTTP side of a pass: one client, which hosts failed, the CRLs fetched.
pub(super) struct Checker {
    client: Outbound<Full<Bytes>>,
    /// `HTTP_PROXY` and `NO_PROXY`, for the `http://` requests.
    forward: super::forward::Forward,
    state_dir: PathBuf,
    /// Hosts that did not answer in this pass: not asked again in it.
    failed_hosts: Mutex<HashMap<String, FetchError>>,
    /// CRLs fetched in this pass, by URL (DER), or why not.
    crls: Mutex<BTreeMap<String, Result<Vec<u8>, FetchError>>>,
    /// When the last request to each host started, for [`HOST_SPACING`].
    last_request: Mutex<HashMap<String, tokio::time::Instant>>,
}

impl Checker {
    /// A client with the system's roots (for an `https://` proxy tunnel only: the URLs used
    /// are `http://`). Errors: TLS or proxy settings.
    pub(super) fn new(state_dir: PathBuf) -> Result<Checker, RevocationError> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in &crate::outbound::system_roots().certs {
            let _ = roots.add(cert.clone());
        }
        let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| RevocationError::Client(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let client = Outbound::new(
            tls,
            CONNECT_TIMEOUT,
            false,
            ProxySetting::Environment,
            Duration::from_secs(30),
        )
        .map_err(|e| RevocationError::Client(e.to_string()))?;
        Ok(Checker {
            client,
            forward: super::forward::Forward::from_env(),
            state_dir,
            failed_hosts: Default::default(),
            crls: Default::default(),
            last_request: Default::default(),
        })
    }

    /// One certificate's status: OCSP first, then the CRLs (at most [`MAX_OCSP_URLS`] and
    /// [`MAX_CRL_URLS`], all within [`CHECK_DEADLINE`]); unknown with every reason when
    /// neither answers. Returns it with the store key of the certificate its files hold
    /// (`w.key` when they cannot be read): the result is that certificate's, whatever the
    /// caller read before.
    pub(super) async fn check(&self, w: &Wanted) -> (String, Entry) {
        let pair = self.read(w).await;
        let key = match &pair {
            Ok(p) => store::key(&p.leaf),
            Err(_) => w.key.clone(),
        };
        (key, self.check_pair(w, pair).await)
    }

    async fn read(&self, w: &Wanted) -> Result<Pair, ChainError> {
        let files = w.files.clone();
        tokio::task::spawn_blocking(move || read_pair(&files))
            .await
            .unwrap_or_else(|e| Err(ChainError::Aborted(e.to_string())))
    }

    async fn check_pair(&self, w: &Wanted, pair: Result<Pair, ChainError>) -> Entry {
        let now = SystemTime::now();
        let unknown = |detail: String, not_after: Option<u64>| Entry {
            status: Status::Unknown,
            source: None,
            checked_at: crate::state::unix(now),
            next_check: crate::state::unix(next_check(Status::Unknown, now, None)),
            detail: Some(detail),
            not_after,
        };
        let pair = match pair {
            Ok(p) => p,
            Err(why) => return unknown(why.to_string(), None),
        };
        // The OCSP and CRL addresses come from the certificate: from a file another user
        // controls, they would be that user's choice of where root sends requests.
        let first = w.files.first().cloned();
        let others =
            tokio::task::spawn_blocking(move || first.and_then(|f| controlled_by_others(&f)))
                .await
                .unwrap_or_else(|e| Some(e.to_string()));
        if let Some(why) = others {
            let mut e = unknown(
                format!("not checked: {why}; renewd asks no address named in a file other users control"),
                None,
            );
            e.next_check = crate::state::unix(now + super::MAX_RECHECK);
            return e;
        }
        let Ok((_, leaf)) = X509Certificate::from_der(&pair.leaf) else {
            let path = w.files.first().map(|p| p.display().to_string());
            let mut e = unknown(
                format!(
                    "not checked: {} holds no PEM or DER certificate (a PKCS#12 bundle is not read here)",
                    path.unwrap_or_default()
                ),
                None,
            );
            e.next_check = crate::state::unix(now + super::MAX_RECHECK);
            return e;
        };
        let not_after = u64::try_from(leaf.validity().not_after.timestamp()).ok();
        let (ocsp_urls, crl_urls) = locations(&leaf);
        if ocsp_urls.is_empty() && crl_urls.is_empty() {
            // Nothing to ask, ever: the certificate cannot change, so it is not looked at
            // again (until it expires and its entry is dropped).
            let mut e = unknown("it names no OCSP responder and no CRL".into(), not_after);
            e.next_check = not_after.unwrap_or(u64::MAX).max(e.next_check);
            return e;
        }
        let Some(issuer) = &pair.issuer else {
            let why = format!(
                "its issuer (\"{}\") is not in its files, so no answer can be verified",
                leaf.issuer()
            );
            return unknown(why, not_after);
        };
        let deadline = tokio::time::Instant::now() + CHECK_DEADLINE;
        let mut why = Vec::new();
        let late = || tokio::time::Instant::now() >= deadline;
        for url in ocsp_urls.iter().take(MAX_OCSP_URLS) {
            if late() {
                why.push(format!("OCSP {url}: {}", out_of_time()));
                continue;
            }
            let asked = self.ocsp(url, &pair.leaf, issuer, now);
            match tokio::time::timeout_at(deadline, asked).await {
                Ok(Ok(a)) if a.status != Status::Unknown => {
                    return entry(a, Source::Ocsp, now, not_after)
                }
                Ok(Ok(_)) => why.push(format!("OCSP {url}: the responder does not know it")),
                Ok(Err(e)) => why.push(format!("OCSP {e}")),
                Err(_) => why.push(format!("OCSP {url}: {}", out_of_time())),
            }
        }
        for url in crl_urls.iter().take(MAX_CRL_URLS) {
            if late() {
                why.push(format!("CRL {url}: {}", out_of_time()));
                continue;
            }
            let asked = self.crl(url, &pair.leaf, issuer, now);
            match tokio::time::timeout_at(deadline, asked).await {
                Ok(Ok(a)) => return entry(a, Source::Crl, now, not_after),
                Ok(Err(e)) => why.push(format!("CRL {e}")),
                Err(_) => why.push(format!("CRL {url}: {}", out_of_time())),
            }
        }
        why.extend(not_tried("OCSP responder", ocsp_urls.len(), MAX_OCSP_URLS));
        why.extend(not_tried(
            "CRL distribution point",
            crl_urls.len(),
            MAX_CRL_URLS,
        ));
        unknown(why.join("; "), not_after)
    }

    async fn ocsp(
        &self,
        url: &str,
        leaf: &[u8],
        issuer: &[u8],
        now: SystemTime,
    ) -> Result<Answer, SourceError> {
        let failed = |source| SourceError::Ocsp {
            url: url.to_string(),
            source,
        };
        let (body, id) = ocsp::request(leaf, issuer).map_err(failed)?;
        let req = http::Request::post(url)
            .header(http::header::CONTENT_TYPE, "application/ocsp-request")
            .header(http::header::ACCEPT, "application/ocsp-response");
        let rsp = self
            .exchange(url, req, Bytes::from(body), MAX_OCSP_RESPONSE)
            .await?;
        ocsp::verify_response(&rsp, &id, issuer, now).map_err(failed)
    }

    async fn crl(
        &self,
        url: &str,
        leaf: &[u8],
        issuer: &[u8],
        now: SystemTime,
    ) -> Result<Answer, SourceError> {
        // The cache first: a CRL still current answers without a request.
        let (dir, u) = (self.state_dir.clone(), url.to_string());
        let cached = tokio::task::spawn_blocking(move || store::load_crl(&dir, &u, MAX_CRL))
            .await
            .ok()
            .flatten();
        if let Some(der) = cached {
            if let Ok(a) = crl::check(&der, leaf, issuer, now) {
                return Ok(a);
            }
        }
        let fetched = self
            .crls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(url)
            .cloned();
        let der = match fetched {
            Some(r) => r?,
            None => {
                let got = self
                    .exchange(url, http::Request::get(url), Bytes::new(), MAX_CRL)
                    .await;
                self.crls
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(url.into(), got.clone());
                got?
            }
        };
        let a = crl::check(&der, leaf, issuer, now).map_err(|source| SourceError::Crl {
            url: url.to_string(),
            source,
        })?;
        let (dir, u) = (self.state_dir.clone(), url.to_string());
        let saved = tokio::task::spawn_blocking(move || store::save_crl(&dir, &u, &der)).await;
        if let Ok(Err(e)) = saved {
            tracing::warn!(error = %e, "cannot cache the CRL; it is fetched again next time");
        }
        Ok(a)
    }

    /// Sends one request (only to an `http://` URL, not to a host that failed in this pass),
    /// within [`TIMEOUT`], reading at most `max` bytes of a 200 answer.
    async fn exchange(
        &self,
        url: &str,
        req: http::request::Builder,
        body: Bytes,
        max: u64,
    ) -> Result<Vec<u8>, FetchError> {
        let bad_url = |why: String| FetchError::Url {
            url: url.into(),
            why,
        };
        let uri: http::Uri = url
            .parse()
            .map_err(|e: http::uri::InvalidUri| bad_url(e.to_string()))?;
        if uri.scheme_str() != Some("http") {
            return Err(FetchError::NotHttp { url: url.into() });
        }
        let host = uri.authority().map(|a| a.to_string()).unwrap_or_default();
        let failed = self
            .failed_hosts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&host);
        if failed {
            return Err(FetchError::HostFailed {
                url: url.into(),
                host,
            });
        }
        self.pace(&host).await;
        let req = req
            .header(
                http::header::USER_AGENT,
                concat!("renewd/", env!("CARGO_PKG_VERSION")),
            )
            .body(Full::new(body))
            .map_err(|e| bad_url(e.to_string()))?;
        let result = match tokio::time::timeout(TIMEOUT, self.send(url, &uri, req, max)).await {
            Ok(r) => r,
            Err(_) => Err(FetchError::Timeout { url: url.into() }),
        };
        if let Err(e @ (FetchError::Request { .. } | FetchError::Timeout { .. })) = &result {
            self.failed_hosts
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(host, e.clone());
        }
        result
    }

    /// Waits until [`HOST_SPACING`] has passed since the last request to `host` started.
    async fn pace(&self, host: &str) {
        let now = tokio::time::Instant::now();
        let start = {
            let mut last = self.last_request.lock().unwrap_or_else(|e| e.into_inner());
            let start = last.get(host).map_or(now, |t| (*t + HOST_SPACING).max(now));
            last.insert(host.to_string(), start);
            start
        };
        tokio::time::sleep_until(start).await;
    }

    /// The request (directly, or through the `HTTP_PROXY` that applies to `uri`) and a 200
    /// answer's body, at most `max` bytes (a larger declared or sent body is refused).
    async fn send(
        &self,
        url: &str,
        uri: &http::Uri,
        req: http::Request<Full<Bytes>>,
        max: u64,
    ) -> Result<Vec<u8>, FetchError> {
        let rsp = match self.forward.proxy_for(uri) {
            Some(proxy) => super::forward::send(url, &proxy, req).await?,
            None => self
                .client
                .request(req)
                .await
                .map_err(|e| FetchError::Request {
                    url: url.into(),
                    why: e.to_string(),
                })?,
        };
        if rsp.status() != http::StatusCode::OK {
            return Err(FetchError::Status {
                url: url.into(),
                status: rsp.status().as_u16(),
            });
        }
        let too_large = FetchError::TooLarge {
            url: url.into(),
            max,
        };
        let declared = rsp
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|n| n > max) {
            return Err(too_large);
        }
        let limit = usize::try_from(max).unwrap_or(usize::MAX);
        match Limited::new(rsp.into_body(), limit).collect().await {
            Ok(b) => Ok(b.to_bytes().to_vec()),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large),
            Err(e) => Err(FetchError::Request {
                url: url.into(),
                why: e.to_string(),
            }),
        }
    }
}

/// Why an exchange stopped at [`CHECK_DEADLINE`] (or was not started: the deadline had
/// passed).
fn out_of_time() -> String {
    format!(
        "not tried or not finished: the {} s for this certificate ran out",
        CHECK_DEADLINE.as_secs()
    )
}

/// The note for the `named - max` URLs of one kind beyond the cap, if any.
fn not_tried(what: &str, named: usize, max: usize) -> Option<String> {
    (named > max).then(|| {
        format!(
            "{} more {what} URLs not tried (at most {max} are asked for one certificate)",
            named - max
        )
    })
}

/// The entry for a verified answer of `source`.
fn entry(a: Answer, source: Source, now: SystemTime, not_after: Option<u64>) -> Entry {
    let detail = match (a.status, a.revoked_at) {
        (Status::Revoked, Some(at)) => Some(format!(
            "revoked at {}{}",
            rfc3339(at),
            a.reason.map(|r| format!(" ({r})")).unwrap_or_default()
        )),
        _ => None,
    };
    Entry {
        status: a.status,
        source: Some(source),
        checked_at: crate::state::unix(now),
        next_check: crate::state::unix(next_check(a.status, now, a.next_update)),
        detail,
        not_after,
    }
}

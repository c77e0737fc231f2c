//! renewd's HTTP client for instant-acme ([`CaHttp`]), built once per CA and shared by
//! every request to it (account, orders, ARI, revocation, the directory read of `check`
//! and of the clock comparison), so that renewd sees every exchange with a CA whatever
//! instant-acme does with it:
//! - every request and every response body has a deadline (a CA that stalls must not hang
//!   a renewal forever), and a CA's `trust_roots` are *added* to the system's roots;
//! - transient failures (HTTP 5xx, connections refused or reset, deadlines, garbled bodies)
//!   are retried here, at most [`MAX_TRIES`] times per request, with exponential backoff
//!   and jitter — resending the same signed request is safe, because ACME nonces are
//!   single-use: a request the CA did process is refused as `badNonce`, and instant-acme
//!   signs it again with a fresh nonce;
//! - the CA's `Retry-After` (on 429 and 503) is honoured for *every* request to that CA,
//!   through its [`Gate`];
//! - `User-Agent` (RFC 8555 §6.1) names renewd, the `Date` header of each answer gives the
//!   offset of this host's clock ([`clock_offset`]), and an answer naming a URL that is not
//!   absolute is refused before instant-acme sees it.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::HeaderMap;
use http_body_util::{BodyExt, Full, Limited};
use instant_acme::{BodyWrapper, BytesResponse, HttpClient};
use rustls::pki_types::pem::PemObject as _;

use super::gate::{backoff, Gate, GateClosed, MAX_INLINE_WAIT};
use super::problem::{acme_message, classify, AcmeError, Verdict};
use crate::config::CaConfig;
use crate::outbound::{Outbound, ProxySetting};

/// Largest response body accepted from a CA (a certificate chain is a few KiB).
const MAX_BODY: usize = 1 << 20;
/// Sends of one request, at most, while the CA's answers are transient failures.
pub(crate) const MAX_TRIES: u32 = 4;
/// renewd's own product token.
const PRODUCT: &str = concat!("renewd/", env!("CARGO_PKG_VERSION"));

/// instant-acme's HTTP client interface, on hyper with rustls, deadlines, retries, the
/// CA's [`Gate`] and its proxy ([`crate::outbound`]). Clones share the connection pool and
/// the gate.
#[derive(Clone)]
pub(crate) struct CaHttp {
    client: Arc<Outbound<BodyWrapper<Bytes>>>,
    gate: Arc<Gate>,
    timeout: Duration,
}

impl CaHttp {
    /// The client for CA `config`: the system's roots plus its `trust_roots`, its `timeout`,
    /// its `proxy` (or the environment's). Errors name the CA and what is wrong: unreadable
    /// `trust_roots`, no trust root at all for an `https://` directory, an unusable proxy.
    pub(crate) fn new(config: &CaConfig, gate: Arc<Gate>) -> Result<CaHttp, AcmeError> {
        let ca_err = |message: String| AcmeError::Ca {
            ca: config.name.clone(),
            message,
        };
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| ca_err(e.to_string()))?
        .with_root_certificates(trust_roots(config)?)
        .with_no_client_auth();
        let client = Outbound::new(
            tls,
            config.timeout.min(Duration::from_secs(10)),
            true,
            ProxySetting::of(config.proxy.as_deref()),
            Duration::from_secs(30),
        )
        .map_err(|e| ca_err(e.to_string()))?;
        if let Ok(uri) = config.directory.parse::<http::Uri>() {
            match client.via(&uri) {
                Some(via) => {
                    tracing::debug!(ca = %config.name, proxy = %via, "requests to this CA go through a proxy")
                }
                None => tracing::debug!(ca = %config.name, "requests to this CA go directly"),
            }
        }
        Ok(CaHttp {
            client: Arc::new(client),
            gate,
            timeout: config.timeout,
        })
    }

    /// The gate every request of this client passes.
    pub(crate) fn gate(&self) -> &Arc<Gate> {
        &self.gate
    }

    /// Sends `req` as [`HttpClient::request`] does: through the gate, retried while the
    /// answers are transient, the answer checked before instant-acme sees it.
    async fn send(
        &self,
        req: http::Request<BodyWrapper<Bytes>>,
    ) -> Result<BytesResponse, instant_acme::Error> {
        let (mut parts, body) = req.into_parts();
        let ua = user_agent(parts.headers.get(http::header::USER_AGENT));
        parts.headers.insert(http::header::USER_AGENT, ua);
        // The body is in memory already (a JWS, or nothing): keep it to resend.
        let body = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let mut tries = 0;
        loop {
            tries += 1;
            admit(&self.gate)
                .await
                .map_err(|closed| instant_acme::Error::Other(Box::new(closed)))?;
            let outcome = self.exchange(&parts, &body).await;
            let now = SystemTime::now();
            if let Some((rparts, rbody)) = self.judge(outcome, &parts.uri, tries, now)? {
                if rparts.status.is_success() {
                    if let Some(why) = unusable_urls(&rparts.headers, &rbody) {
                        return Err(GaveUp::Unusable {
                            uri: parts.uri,
                            why,
                        }
                        .into());
                    }
                }
                return Ok(BytesResponse::from(http::Response::from_parts(
                    rparts,
                    Full::new(rbody),
                )));
            }
        }
    }

    /// One send of the request, its whole answer read within the CA's `timeout`.
    async fn exchange(
        &self,
        parts: &http::request::Parts,
        body: &Bytes,
    ) -> Result<(http::response::Parts, Bytes), ExchangeError> {
        let mut req = http::Request::new(BodyWrapper::from(body.to_vec()));
        *req.method_mut() = parts.method.clone();
        *req.uri_mut() = parts.uri.clone();
        *req.version_mut() = parts.version;
        *req.headers_mut() = parts.headers.clone();
        let exchange = async {
            let rsp = self.client.request(req).await?;
            let (parts, body) = rsp.into_parts();
            let body = Limited::new(body, MAX_BODY)
                .collect()
                .await
                .map_err(|e| ExchangeError::Body(e.to_string()))?
                .to_bytes();
            Ok((parts, body))
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .unwrap_or(Err(ExchangeError::Deadline(self.timeout)))
    }

    /// What to do with the `tries`th answer to a request for `uri`, received at `now`:
    /// `Ok(Some)` hands it to instant-acme, `Ok(None)` sends the request again (the gate
    /// says when), `Err` gives up.
    fn judge(
        &self,
        outcome: Result<(http::response::Parts, Bytes), ExchangeError>,
        uri: &http::Uri,
        tries: u32,
        now: SystemTime,
    ) -> Result<Option<(http::response::Parts, Bytes)>, instant_acme::Error> {
        let gate = &self.gate;
        let (verdict, answer) = match outcome {
            Ok((rparts, rbody)) => {
                note_clock(gate.ca(), &rparts.headers, now);
                let verdict = classify(rparts.status, &rparts.headers, &rbody, now);
                (verdict, Some((rparts, rbody)))
            }
            Err(e) => (Verdict::Transient(e.to_string()), None),
        };
        let last = tries >= MAX_TRIES;
        match verdict {
            Verdict::Answer => gate.answered(now),
            Verdict::BadNonce => {
                let quiet = gate.bad_nonce();
                if !quiet.is_zero() {
                    tracing::warn!(ca = %gate.ca(), uri = %uri, wait = ?quiet,
                        "the CA keeps rejecting nonces; slowing down");
                    gate.defer(now + quiet, "repeated badNonce answers".into(), now);
                }
            }
            Verdict::RetryAfter { until, why } => {
                let wait = until.duration_since(now).unwrap_or_default();
                gate.defer(until, why.clone(), now);
                if !last && wait <= MAX_INLINE_WAIT {
                    tracing::warn!(ca = %gate.ca(), uri = %uri, wait = ?wait, reason = %why,
                        "the CA asked to wait; retrying then");
                    return Ok(None);
                }
            }
            Verdict::Transient(why) => {
                let streak = gate.transient(&why, now);
                let wait = backoff(streak, rand::random::<f64>());
                gate.defer(now + wait, format!("a transient failure: {why}"), now);
                if !last && streak < MAX_TRIES {
                    tracing::warn!(ca = %gate.ca(), uri = %uri, error = %why, streak,
                        wait = ?wait, "transient failure; retrying");
                    return Ok(None);
                }
                return Err(GaveUp::Transient {
                    uri: uri.clone(),
                    why,
                    streak,
                }
                .into());
            }
        }
        match answer {
            Some(answer) => Ok(Some(answer)),
            None => Err(GaveUp::NoAnswer { uri: uri.clone() }.into()),
        }
    }
}

impl HttpClient for CaHttp {
    fn request(
        &self,
        req: http::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let this = self.clone();
        Box::pin(async move { this.send(req).await })
    }
}

/// Why one exchange with the CA got no complete answer (a transient failure).
#[derive(Debug, thiserror::Error)]
enum ExchangeError {
    #[error(transparent)]
    Send(#[from] crate::outbound::OutboundError),
    #[error("reading the response: {0}")]
    Body(String),
    #[error("no complete answer within {0:?}")]
    Deadline(Duration),
}

/// Why a request was given up, as instant-acme carries it (`Error::Other`).
#[derive(Debug, thiserror::Error)]
enum GaveUp {
    #[error("{uri}: {why} (gave up after {streak} tries)")]
    Transient {
        uri: http::Uri,
        why: String,
        streak: u32,
    },
    #[error("{uri}: no answer")]
    NoAnswer { uri: http::Uri },
    /// The answer names a URL instant-acme could not request ([`unusable_urls`]).
    #[error("{uri}: {why}")]
    Unusable { uri: http::Uri, why: String },
}

impl From<GaveUp> for instant_acme::Error {
    fn from(e: GaveUp) -> Self {
        instant_acme::Error::Other(Box::new(e))
    }
}

/// Waits for `gate` to open; refuses at once when it stays closed for longer than
/// [`MAX_INLINE_WAIT`].
pub(crate) async fn admit(gate: &Gate) -> Result<(), GateClosed> {
    loop {
        let wait = gate.wait(SystemTime::now())?;
        if wait.is_zero() {
            return Ok(());
        }
        tokio::time::sleep(wait).await;
    }
}

/// The trust roots for CA `config`: the system's plus its `trust_roots`.
fn trust_roots(config: &CaConfig) -> Result<rustls::RootCertStore, AcmeError> {
    if let Some(message) = crate::outbound::missing_system_roots(config) {
        return Err(AcmeError::NoTrustRoots { message });
    }
    let mut roots = rustls::RootCertStore::empty();
    for cert in &crate::outbound::system_roots().certs {
        let _ = roots.add(cert.clone());
    }
    let Some(path) = config.trust_roots.as_deref() else {
        return Ok(roots);
    };
    let bad = |message: String| AcmeError::TrustRoots {
        ca: config.name.clone(),
        path: path.to_path_buf(),
        message,
    };
    let pem = crate::fsutil::read_regular(
        path,
        crate::fsutil::caps::TRUST_ROOTS,
        crate::fsutil::Follow::Yes,
    )
    .map_err(|e| bad(e.reason()))?;
    let mut n = 0;
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| bad(format!("not a PEM certificate bundle: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| bad(format!("certificate rejected as a trust root: {e}")))?;
        n += 1;
    }
    if n == 0 {
        return Err(bad("no CERTIFICATE block found".into()));
    }
    Ok(roots)
}

/// renewd's `User-Agent` for every request to a CA (RFC 8555 §6.1): renewd's own product
/// token, then the ACME library's as it set it, e.g. `renewd/0.1.0 instant-acme/0.8.5`.
fn user_agent(library: Option<&http::HeaderValue>) -> http::HeaderValue {
    library
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && !v.starts_with("renewd/"))
        .and_then(|lib| http::HeaderValue::from_str(&format!("{PRODUCT} {lib}")).ok())
        .unwrap_or(http::HeaderValue::from_static(PRODUCT))
}

/// How far this host's clock is ahead of each CA's (negative: behind), from the `Date`
/// header of the CA's last answer, in seconds (the header's resolution).
static CLOCK_OFFSETS: std::sync::Mutex<std::collections::BTreeMap<String, i64>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

/// Records the offset between `now` (this host's clock) and the `Date` header of an answer
/// from CA `ca` (RFC 9110 §6.6.1), when it has a parseable one.
fn note_clock(ca: &str, headers: &HeaderMap, now: SystemTime) {
    let Some(date) = headers
        .get(http::header::DATE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok())
    else {
        return;
    };
    let offset = match now.duration_since(date) {
        Ok(ahead) => ahead.as_secs() as i64,
        Err(behind) => -(behind.duration().as_secs() as i64),
    };
    let mut offsets = CLOCK_OFFSETS.lock().unwrap_or_else(|e| e.into_inner());
    offsets.insert(ca.to_string(), offset);
}

/// How far this host's clock was ahead of CA `ca`'s at its last answer (negative: behind),
/// in seconds; `None` before any answer with a `Date` header.
pub(crate) fn clock_offset(ca: &str) -> Option<i64> {
    let offsets = CLOCK_OFFSETS.lock().unwrap_or_else(|e| e.into_inner());
    offsets.get(ca).copied()
}

/// Why the profiles a CA advertises could not be read (opaque outside the crate: `renewd
/// check` only shows it).
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct DirectoryError(#[from] DirectoryFailure);

impl From<AcmeError> for DirectoryError {
    fn from(e: AcmeError) -> Self {
        DirectoryError(DirectoryFailure::Client(e))
    }
}

/// What went wrong reading a CA's directory.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DirectoryFailure {
    /// The CA's client could not be built (trust roots, proxy).
    #[error(transparent)]
    Client(AcmeError),
    #[error("bad directory URL {url}: {message}")]
    BadUrl { url: String, message: String },
    /// The request failed (transport, deadline, the CA's pause).
    #[error("{message}")]
    Request { message: String },
    #[error("the directory {url} answered HTTP {status}")]
    Status {
        url: String,
        status: http::StatusCode,
    },
    #[error("cannot read the directory: {message}")]
    Body { message: String },
    #[error("the directory {url} is not JSON: {message}")]
    NotJson { url: String, message: String },
}

/// The profiles CA `config` advertises in its directory (`meta.profiles`), for `renewd check`:
/// one GET of the directory, no account needed, through the same client as every other
/// request (deadline, trust roots, and the CA's pause in `pause_file` respected).
pub async fn advertised_profiles(
    config: &CaConfig,
    pause_file: PathBuf,
) -> Result<Vec<String>, DirectoryError> {
    let gate = Arc::new(Gate::open(&config.name, pause_file, SystemTime::now()));
    let http = CaHttp::new(config, gate)?;
    directory_profiles(&http, &config.directory).await
}

/// One GET of the directory `url` through `http`: the names of its `meta.profiles`, sorted.
pub(crate) async fn directory_profiles(
    http: &CaHttp,
    url: &str,
) -> Result<Vec<String>, DirectoryError> {
    let dir = directory_json(http, url).await?;
    let mut names: Vec<String> = dir["meta"]["profiles"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    names.sort();
    Ok(names)
}

/// One GET of the directory `url` through `http`, as JSON (RFC 8555 §7.1.1).
pub(crate) async fn directory_json(
    http: &CaHttp,
    url: &str,
) -> Result<serde_json::Value, DirectoryError> {
    let req = http::Request::get(url)
        .header(http::header::USER_AGENT, PRODUCT)
        .body(BodyWrapper::default())
        .map_err(|e| DirectoryFailure::BadUrl {
            url: url.to_string(),
            message: e.to_string(),
        })?;
    let mut rsp = http
        .send(req)
        .await
        .map_err(|e| DirectoryFailure::Request {
            message: acme_message(&e),
        })?;
    if !rsp.parts.status.is_success() {
        return Err(DirectoryFailure::Status {
            url: url.to_string(),
            status: rsp.parts.status,
        }
        .into());
    }
    let body = rsp
        .body
        .into_bytes()
        .await
        .map_err(|e| DirectoryFailure::Body {
            message: e.to_string(),
        })?;
    Ok(
        serde_json::from_slice(&body).map_err(|e| DirectoryFailure::NotJson {
            url: url.to_string(),
            message: e.to_string(),
        })?,
    )
}

/// Members of ACME objects (RFC 8555 §7.1) whose string values renewd's ACME library turns
/// into requests.
const URL_MEMBERS: &[&str] = &[
    "newNonce",
    "newAccount",
    "newOrder",
    "newAuthz",
    "revokeCert",
    "keyChange",
    "renewalInfo",
    "orders",
    "authorizations",
    "finalize",
    "certificate",
    "url",
];

fn absolute(s: &str) -> bool {
    s.parse::<http::Uri>()
        .is_ok_and(|u| u.scheme().is_some() && u.authority().is_some())
}

/// Why a CA's answer cannot be used as it is: a URL the ACME library would request (a
/// member of [`URL_MEMBERS`], at any depth, or `Location`) that is not an absolute URL.
/// instant-acme treats building such a request as infallible and panics (found by
/// `tests/it/fuzz.rs`: a directory whose `newNonce` was `../../etc/passwd`), so renewd
/// refuses the answer before the library sees it.
fn unusable_urls(headers: &http::HeaderMap, body: &[u8]) -> Option<String> {
    if let Some(location) = headers.get(http::header::LOCATION) {
        if !location.to_str().is_ok_and(absolute) {
            return Some("the CA's answer has a Location that is not an absolute URL".into());
        }
    }
    let doc: serde_json::Value = serde_json::from_slice(body).ok()?;
    relative_url(&doc, 0)
}

/// The first member of [`URL_MEMBERS`] in `v` (at most 4 objects deep) that is not an
/// absolute URL, as a message.
fn relative_url(v: &serde_json::Value, depth: usize) -> Option<String> {
    let serde_json::Value::Object(map) = v else {
        if let serde_json::Value::Array(items) = v {
            return items.iter().find_map(|i| relative_url(i, depth + 1));
        }
        return None;
    };
    if depth > 4 {
        return None;
    }
    for (key, value) in map {
        if URL_MEMBERS.contains(&key.as_str()) {
            let bad = match value {
                serde_json::Value::String(s) => (!absolute(s)).then_some(s.as_str()),
                serde_json::Value::Array(items) => items
                    .iter()
                    .filter_map(|i| i.as_str())
                    .find(|s| !absolute(s)),
                _ => None,
            };
            if let Some(bad) = bad {
                let shown: String = bad.chars().take(80).collect();
                return Some(format!(
                    "the CA's answer gives `{key}` as {shown:?}, which is not an absolute URL"
                ));
            }
        }
        if let Some(why) = relative_url(value, depth + 1) {
            return Some(why);
        }
    }
    None
}

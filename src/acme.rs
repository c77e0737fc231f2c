//! Talking to ACME CAs (RFC 8555) through `instant-acme`: accounts kept in the state
//! directory, and the order → authorize → finalize → download pipeline.
//!
//! renewd brings its own HTTP client for instant-acme, because it sees every exchange with
//! a CA whatever instant-acme does with it:
//! - every request and every response body has a deadline (a CA that stalls must not hang
//!   a renewal forever), and a CA's `trust_roots` are *added* to the system's roots;
//! - transient failures (HTTP 5xx, connections refused or reset, deadlines, garbled bodies)
//!   are retried there, at most [`MAX_TRIES`] times per request, with exponential backoff
//!   and jitter — resending the same signed request is safe, because ACME nonces are
//!   single-use: a request the CA did process is refused as `badNonce`, and instant-acme
//!   signs it again with a fresh nonce;
//! - the CA's `Retry-After` (on 429 and 503) is honoured for *every* request to that CA,
//!   through one [`Gate`] per CA: nothing is sent before it. A wait longer than
//!   [`MAX_INLINE_WAIT`] fails the attempt instead, pauses the CA (every order on it, for
//!   every certificate, fails fast without contacting it), is remembered in the state
//!   directory across restarts, and reaches the certificate's record as its retry time.

use std::fs;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use std::sync::Mutex;
use std::time::SystemTime;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, BodyWrapper, BytesResponse, ChallengeType,
    HttpClient, Identifier, NewAccount, NewOrder, OrderStatus, RetryPolicy,
};
use rustls::pki_types::pem::PemObject as _;
use serde::{Deserialize, Serialize};

mod certkey;

use crate::challenge::{Answer, Provisioned, Responders};
use crate::config::{CaConfig, ChallengeConfig, Challenges};
use crate::fsutil;
use crate::outbound::{error_chain, Outbound, ProxySetting};

/// Largest response body accepted from a CA (a certificate chain is a few KiB).
const MAX_BODY: usize = 1 << 20;
/// How long to wait for the CA to validate an order and then to issue it.
const ORDER_TIMEOUT: Duration = Duration::from_secs(120);
/// Orders started for one issuance when the CA keeps rejecting nonces.
const ORDER_ATTEMPTS: u32 = 3;
/// Sends of one request, at most, while the CA's answers are transient failures.
pub const MAX_TRIES: u32 = 4;
/// The nominal wait after a request's first transient failure; doubled after each further
/// one, up to [`BACKOFF_MAX`]. The actual wait is random between half and all of it, so
/// many renewd instances spread out, yet none ever retries sooner than half the nominal
/// wait (1 s → 2 s → 4 s nominal for the [`MAX_TRIES`] sends).
pub const BACKOFF_BASE: Duration = Duration::from_secs(1);
pub const BACKOFF_MAX: Duration = Duration::from_secs(16);
/// The longest Retry-After waited for within one renewal attempt. A longer one fails the
/// attempt, pauses the CA and becomes the certificate's retry time.
pub const MAX_INLINE_WAIT: Duration = Duration::from_secs(60);
/// How long a CA that answered 429 without a Retry-After is left alone.
pub const DEFAULT_RATE_LIMIT_PAUSE: Duration = Duration::from_secs(3600);
/// The longest Retry-After renewd believes: a CA asking for a year is retried after a day
/// (and may say so again).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    #[error("CA {ca}: {message}")]
    Ca { ca: String, message: String },
    /// The CA asked renewd to stay away until `until` (rate limit, or a long Retry-After),
    /// or had asked so earlier and was not contacted.
    #[error("CA {ca}: {why}; renewd sends this CA nothing before {}", crate::state::rfc3339(*until))]
    Paused {
        ca: String,
        until: SystemTime,
        why: String,
    },
    #[error("CA {ca}: validation of {identifier} failed: {message}")]
    Validation {
        ca: String,
        identifier: String,
        message: String,
    },
    /// No trust root at all for a CA that needs one (see
    /// [`crate::outbound::missing_system_roots`]; the message names the CA).
    #[error("{message}")]
    NoTrustRoots { message: String },
    #[error("CA {ca}: cannot read trust_roots {path}: {message}")]
    TrustRoots {
        ca: String,
        path: PathBuf,
        message: String,
    },
    #[error("CA {ca}: account file {path}: {source}")]
    AccountFile {
        ca: String,
        path: PathBuf,
        source: io::Error,
    },
    #[error(transparent)]
    Challenge(#[from] crate::challenge::ChallengeError),
}

impl AcmeError {
    /// When the CA allows the next attempt, when it said (its Retry-After or rate limit).
    pub fn retry_after(&self) -> Option<SystemTime> {
        match self {
            AcmeError::Paused { until, .. } => Some(*until),
            _ => None,
        }
    }
}

// ---------------------------------------------------------------------------------------
// The gate: one per CA, shared by every request to it.

/// What renewd knows about one CA's willingness to be contacted, shared by every request
/// to it (every order, every certificate): no request leaves before `not_before`.
pub struct Gate {
    ca: String,
    /// Where a long pause is remembered across restarts (beside the account file).
    pause_file: PathBuf,
    state: Mutex<GateState>,
}

#[derive(Default)]
struct GateState {
    not_before: Option<SystemTime>,
    /// Why `not_before` is set, for the message of a request refused without contacting.
    why: String,
    /// Consecutive `badNonce` answers: the first is routine (a stale nonce), more are a
    /// CA in trouble and are spaced out.
    bad_nonces: u32,
    /// Consecutive transient failures, whichever request had them, and the last one. A
    /// request resent after a garbled answer the CA did process is refused as `badNonce`
    /// and signed again by instant-acme as a *new* request: counting per CA keeps such
    /// chains bounded.
    transient: u32,
    last_transient: String,
    last_transient_at: Option<SystemTime>,
    /// A pause is written to `pause_file`.
    persisted: bool,
}

/// A request refused by the gate, without contacting the CA.
#[derive(Debug)]
struct GateClosed {
    until: SystemTime,
    why: String,
}

impl std::fmt::Display for GateClosed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The caller's message says until when.
        write!(f, "not contacted: paused after {}", self.why)
    }
}

impl std::error::Error for GateClosed {}

#[derive(Serialize, Deserialize)]
struct StoredPause {
    /// Unix seconds.
    until: u64,
    why: String,
}

impl Gate {
    /// The gate of CA `ca`, starting paused when `pause_file` says so.
    fn open(ca: &str, pause_file: PathBuf) -> Gate {
        let mut state = GateState::default();
        let read = crate::fsutil::read_regular(
            &pause_file,
            crate::fsutil::caps::STATE,
            crate::fsutil::Follow::No,
        );
        match read {
            Err(e) if e.is_not_found() => {}
            Err(e) => tracing::warn!(ca = %ca, error = %e, "ignoring an unreadable pause file"),
            Ok(bytes) => match serde_json::from_slice::<StoredPause>(&bytes) {
                Ok(p) if p.until > crate::state::MAX_UNIX => {
                    tracing::warn!(ca = %ca, path = %pause_file.display(), until = p.until,
                        "ignoring a pause file whose time is beyond year 9999")
                }
                Ok(p) => {
                    let until = crate::state::from_unix(p.until);
                    if until > SystemTime::now() {
                        state.not_before = Some(until.min(SystemTime::now() + MAX_RETRY_AFTER));
                        state.why = p.why;
                        state.persisted = true;
                    }
                }
                Err(e) => tracing::warn!(ca = %ca, path = %pause_file.display(), error = %e,
                    "ignoring an unreadable pause file"),
            },
        }
        Gate {
            ca: ca.to_string(),
            pause_file,
            state: Mutex::new(state),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, GateState> {
        // A panic while holding this lock leaves plain data behind: keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The pause in force, if the CA must not be contacted for longer than
    /// [`MAX_INLINE_WAIT`].
    pub fn paused(&self) -> Option<(SystemTime, String)> {
        let st = self.lock();
        let until = st.not_before?;
        let wait = until.duration_since(SystemTime::now()).unwrap_or_default();
        (wait > MAX_INLINE_WAIT).then(|| (until, st.why.clone()))
    }

    /// Waits for the gate to open; refuses at once when it stays closed for longer than
    /// [`MAX_INLINE_WAIT`].
    async fn admit(&self) -> Result<(), GateClosed> {
        loop {
            let wait = {
                let st = self.lock();
                let Some(until) = st.not_before else {
                    return Ok(());
                };
                let wait = until.duration_since(SystemTime::now()).unwrap_or_default();
                if wait > MAX_INLINE_WAIT {
                    return Err(GateClosed {
                        until,
                        why: st.why.clone(),
                    });
                }
                wait
            };
            if wait.is_zero() {
                return Ok(());
            }
            tokio::time::sleep(wait).await;
        }
    }

    /// Nothing is sent before `until`.
    fn defer(&self, until: SystemTime, why: String) {
        let long = {
            let mut st = self.lock();
            if st.not_before.is_some_and(|t| t >= until) {
                return;
            }
            st.not_before = Some(until);
            st.why = why.clone();
            let long =
                until.duration_since(SystemTime::now()).unwrap_or_default() > MAX_INLINE_WAIT;
            st.persisted |= long;
            long
        };
        if long {
            tracing::warn!(ca = %self.ca, until = %crate::state::rfc3339(until), reason = %why,
                "pausing every request to this CA");
            let stored = StoredPause {
                until: crate::state::unix(until).saturating_add(1),
                why,
            };
            let written = serde_json::to_vec_pretty(&stored)
                .map_err(io::Error::other)
                .and_then(|b| fsutil::write_atomic(&self.pause_file, &b, 0o600));
            if let Err(e) = written {
                tracing::warn!(ca = %self.ca, path = %self.pause_file.display(), error = %e,
                    "cannot remember the pause across restarts");
            }
        }
    }

    /// A transient failure: returns how many in a row the CA has had.
    fn transient(&self, why: &str) -> u32 {
        let mut st = self.lock();
        let now = SystemTime::now();
        // A streak is one bad spell: failures a minute apart start a new one (each request
        // still has its own MAX_TRIES).
        if st
            .last_transient_at
            .is_some_and(|t| now.duration_since(t).unwrap_or_default() > MAX_INLINE_WAIT)
        {
            st.transient = 0;
        }
        st.last_transient_at = Some(now);
        st.transient = st.transient.saturating_add(1);
        st.last_transient = why.to_string();
        st.transient
    }

    /// The transient failures in a row so far, and the last one, if any.
    fn transient_streak(&self) -> Option<(u32, String)> {
        let st = self.lock();
        (st.transient > 0).then(|| (st.transient, st.last_transient.clone()))
    }

    /// The CA answered something usable (anything but `badNonce` and transient failures).
    fn answered(&self) {
        let forget = {
            let mut st = self.lock();
            st.bad_nonces = 0;
            st.transient = 0;
            let expired = st.not_before.is_none_or(|t| t <= SystemTime::now());
            let forget = expired && st.persisted;
            if forget {
                st.persisted = false;
            }
            forget
        };
        if forget {
            let _ = fs::remove_file(&self.pause_file);
        }
    }

    /// The CA answered `badNonce`: returns how long to keep quiet before the next request.
    fn bad_nonce(&self) -> Duration {
        let n = {
            let mut st = self.lock();
            st.bad_nonces = st.bad_nonces.saturating_add(1);
            st.bad_nonces
        };
        if n <= 1 {
            Duration::ZERO
        } else {
            backoff(n - 1, rand::random::<f64>())
        }
    }
}

/// The wait after the `n`th consecutive transient failure from a CA (1-based): nominally
/// [`BACKOFF_BASE`] doubled `n - 1` times, at most [`BACKOFF_MAX`]; `jitter` in `[0, 1)`
/// picks a point between half and all of it.
pub fn backoff(n: u32, jitter: f64) -> Duration {
    let exp = n.saturating_sub(1).min(16);
    let nominal = BACKOFF_BASE.saturating_mul(1u32 << exp).min(BACKOFF_MAX);
    nominal.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
}

/// A `Retry-After` value (delay-seconds or HTTP-date, RFC 9110 §10.2.3) as a moment,
/// clamped to `[now, now + MAX_RETRY_AFTER]`. `None` when absent or unreadable.
pub fn parse_retry_after(headers: &HeaderMap, now: SystemTime) -> Option<SystemTime> {
    let value = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    let at = match value.parse::<u64>() {
        Ok(secs) => now.checked_add(Duration::from_secs(secs.min(MAX_RETRY_AFTER.as_secs())))?,
        Err(_) => httpdate::parse_http_date(value).ok()?,
    };
    Some(at.clamp(now, now + MAX_RETRY_AFTER))
}

/// What one answer of a CA means for the request that got it.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// A usable answer: success, or a definitive refusal (an ACME problem other than those
    /// below) that instant-acme reports as is.
    Answer,
    /// `badNonce`: passed to instant-acme, which signs the request again with a fresh nonce.
    BadNonce,
    /// The CA asked not to be contacted before this moment (429, or 503 with Retry-After).
    RetryAfter { until: SystemTime, why: String },
    /// Worth retrying after a backoff: 500, 502, 503 (without Retry-After), 504, or a body
    /// that is not what it says it is.
    Transient(String),
}

/// The HTTP statuses worth resending after a backoff: the CA, or a gateway in front of it,
/// failed this time (RFC 9110 §15.6.1, .3, .4, .5). Any other status — 501 Not Implemented,
/// 505, a 4xx — is the CA's final word on the request, reported as it is and not resent.
const TRANSIENT_STATUSES: [StatusCode; 4] = [
    StatusCode::INTERNAL_SERVER_ERROR,
    StatusCode::BAD_GATEWAY,
    StatusCode::SERVICE_UNAVAILABLE,
    StatusCode::GATEWAY_TIMEOUT,
];

/// Classifies a complete answer of a CA. Connection failures and deadlines never get this
/// far: they are transient too.
pub fn classify(status: StatusCode, headers: &HeaderMap, body: &[u8], now: SystemTime) -> Verdict {
    let problem = || -> String {
        serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| {
                let detail = v.get("detail")?.as_str()?.to_string();
                Some(match v.get("type").and_then(|t| t.as_str()) {
                    Some(t) => format!(
                        ": {detail} ({})",
                        t.trim_start_matches("urn:ietf:params:acme:error:")
                    ),
                    None => format!(": {detail}"),
                })
            })
            .unwrap_or_default()
    };
    if status == StatusCode::TOO_MANY_REQUESTS {
        let until = parse_retry_after(headers, now).unwrap_or(now + DEFAULT_RATE_LIMIT_PAUSE);
        return Verdict::RetryAfter {
            until: until.max(now + Duration::from_secs(1)),
            why: format!("rate limited (HTTP 429{})", problem()),
        };
    }
    if status == StatusCode::SERVICE_UNAVAILABLE {
        if let Some(until) = parse_retry_after(headers, now) {
            return Verdict::RetryAfter {
                until,
                why: format!("unavailable (HTTP 503{})", problem()),
            };
        }
    }
    if TRANSIENT_STATUSES.contains(&status) {
        return Verdict::Transient(format!("HTTP {}{}", status.as_u16(), problem()));
    }
    if status == StatusCode::BAD_REQUEST
        && serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v.get("type")?.as_str().map(str::to_string))
            .as_deref()
            == Some("urn:ietf:params:acme:error:badNonce")
    {
        return Verdict::BadNonce;
    }
    let content_type = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if content_type.contains("json")
        && !body.is_empty()
        && serde_json::from_slice::<serde::de::IgnoredAny>(body).is_err()
    {
        return Verdict::Transient(format!(
            "HTTP {}: the body is not the JSON it claims to be",
            status.as_u16()
        ));
    }
    if status.is_success() && content_type.starts_with("application/pem-certificate-chain") {
        if let Err(e) = crate::x509::pem_certificates(body) {
            return Verdict::Transient(format!("the certificate download is garbled: {e}"));
        }
    }
    Verdict::Answer
}

fn is_order_not_ready(e: &instant_acme::Error) -> bool {
    matches!(e, instant_acme::Error::Api(p)
        if p.r#type.as_deref() == Some("urn:ietf:params:acme:error:orderNotReady"))
}

/// An error of instant-acme as renewd reports it: a request refused by the gate, or any
/// failure while the CA is paused, says until when.
fn ca_error(ca: &str, gate: &Gate, e: &instant_acme::Error) -> AcmeError {
    if is_bad_nonce(e) {
        if let Some((n, why)) = gate.transient_streak() {
            return AcmeError::Ca {
                ca: ca.to_string(),
                message: format!("{why} ({n} unusable answers in a row, then badNonce)"),
            };
        }
    }
    if let instant_acme::Error::Other(inner) = e {
        if let Some(closed) = inner.downcast_ref::<GateClosed>() {
            return AcmeError::Paused {
                ca: ca.to_string(),
                until: closed.until,
                why: closed.to_string(),
            };
        }
    }
    match gate.paused() {
        Some((until, _)) => AcmeError::Paused {
            ca: ca.to_string(),
            until,
            why: acme_message(e),
        },
        None => AcmeError::Ca {
            ca: ca.to_string(),
            message: acme_message(e),
        },
    }
}

/// A problem that is about the request rather than the name it concerns — a rate limit, a
/// rejected nonce, an account the CA does not know — which the callers handle as such.
fn refusal_is_about_the_request(p: &instant_acme::Problem) -> bool {
    matches!(
        p.r#type.as_deref(),
        Some(
            "urn:ietf:params:acme:error:rateLimited"
                | "urn:ietf:params:acme:error:badNonce"
                | "urn:ietf:params:acme:error:accountDoesNotExist"
                | "urn:ietf:params:acme:error:unauthorized"
        )
    ) || p.status == Some(429)
}

fn is_bad_nonce(e: &instant_acme::Error) -> bool {
    matches!(e, instant_acme::Error::Api(p)
        if p.r#type.as_deref() == Some("urn:ietf:params:acme:error:badNonce"))
}

/// A problem type meaning the CA does not know our account (any more): the CA was reset,
/// or the account was deactivated elsewhere.
fn account_is_gone(e: &instant_acme::Error) -> bool {
    matches!(e, instant_acme::Error::Api(p) if matches!(
        p.r#type.as_deref(),
        Some("urn:ietf:params:acme:error:accountDoesNotExist")
            | Some("urn:ietf:params:acme:error:unauthorized")
    ))
}

/// renewd's `User-Agent` for every request to a CA (RFC 8555 §6.1): renewd's own product
/// token, then the ACME library's as it set it, e.g. `renewd/0.1.0 instant-acme/0.8.5`.
fn user_agent(library: Option<&http::HeaderValue>) -> http::HeaderValue {
    let own = concat!("renewd/", env!("CARGO_PKG_VERSION"));
    library
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && !v.starts_with("renewd/"))
        .and_then(|lib| http::HeaderValue::from_str(&format!("{own} {lib}")).ok())
        .unwrap_or(http::HeaderValue::from_static(own))
}

/// instant-acme's HTTP client interface, on hyper with rustls, deadlines, retries, the
/// CA's [`Gate`] and its proxy ([`crate::outbound`]).
struct CaHttp {
    client: Arc<Outbound<BodyWrapper<Bytes>>>,
    gate: Arc<Gate>,
    timeout: Duration,
}

impl CaHttp {
    /// The client for CA `config`: the system's roots plus its `trust_roots`, its `timeout`,
    /// its `proxy` (or the environment's). Errors name the CA and what is wrong: unreadable
    /// `trust_roots`, no trust root at all for an `https://` directory, an unusable proxy.
    fn new(config: &CaConfig, gate: Arc<Gate>) -> Result<CaHttp, AcmeError> {
        let ca_err = |message: String| AcmeError::Ca {
            ca: config.name.clone(),
            message,
        };
        if let Some(message) = crate::outbound::missing_system_roots(config) {
            return Err(AcmeError::NoTrustRoots { message });
        }
        let mut roots = rustls::RootCertStore::empty();
        for cert in &crate::outbound::system_roots().certs {
            let _ = roots.add(cert.clone());
        }
        if let Some(path) = config.trust_roots.as_deref() {
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
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| ca_err(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let client = Outbound::new(
            tls,
            config.timeout.min(Duration::from_secs(10)),
            true,
            ProxySetting::of(config.proxy.as_deref()),
            Duration::from_secs(30),
        )
        .map_err(ca_err)?;
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
}

/// The pause in force for CA `name` (until when, and why) as recorded beside its account
/// file `account_path` (`NAME.pause`), read now; `None` when it may be contacted.
pub fn pause_of(name: &str, account_path: &Path) -> Option<(SystemTime, String)> {
    Gate::open(name, account_path.with_extension("pause")).paused()
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
pub fn clock_offset(ca: &str) -> Option<i64> {
    let offsets = CLOCK_OFFSETS.lock().unwrap_or_else(|e| e.into_inner());
    offsets.get(ca).copied()
}

/// The profiles CA `config` advertises in its directory (`meta.profiles`), for `renewd check`:
/// one GET of the directory, no account needed, through the same client as every other
/// request (deadline, trust roots, and the CA's pause in `pause_file` respected).
pub async fn advertised_profiles(
    config: &CaConfig,
    pause_file: PathBuf,
) -> Result<Vec<String>, String> {
    let gate = Arc::new(Gate::open(&config.name, pause_file));
    let http = CaHttp::new(config, gate).map_err(|e| e.to_string())?;
    let req = http::Request::get(&config.directory)
        .header(
            http::header::USER_AGENT,
            concat!("renewd/", env!("CARGO_PKG_VERSION")),
        )
        .body(BodyWrapper::default())
        .map_err(|e| format!("bad directory URL {}: {e}", config.directory))?;
    let mut rsp = http.request(req).await.map_err(|e| acme_message(&e))?;
    if !rsp.parts.status.is_success() {
        return Err(format!(
            "the directory {} answered HTTP {}",
            config.directory, rsp.parts.status
        ));
    }
    let body = rsp
        .body
        .into_bytes()
        .await
        .map_err(|e| format!("cannot read the directory: {e}"))?;
    let dir: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| format!("the directory {} is not JSON: {e}", config.directory))?;
    let mut names: Vec<String> = dir["meta"]["profiles"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    names.sort();
    Ok(names)
}

impl HttpClient for CaHttp {
    fn request(
        &self,
        req: http::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let client = self.client.clone();
        let gate = self.gate.clone();
        let timeout = self.timeout;
        Box::pin(async move {
            let (mut parts, body) = req.into_parts();
            let ua = user_agent(parts.headers.get(http::header::USER_AGENT));
            parts.headers.insert(http::header::USER_AGENT, ua);
            // The body is in memory already (a JWS, or nothing): keep it to resend.
            let body = body
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let uri = parts.uri.clone();
            let fail = |what: String| instant_acme::Error::Other(what.into());
            let mut tries = 0;
            loop {
                tries += 1;
                gate.admit()
                    .await
                    .map_err(|closed| instant_acme::Error::Other(Box::new(closed)))?;
                let mut req = http::Request::new(BodyWrapper::from(body.to_vec()));
                *req.method_mut() = parts.method.clone();
                *req.uri_mut() = parts.uri.clone();
                *req.version_mut() = parts.version;
                *req.headers_mut() = parts.headers.clone();
                let exchange = async {
                    let rsp = client.request(req).await?;
                    let (parts, body) = rsp.into_parts();
                    let body = Limited::new(body, MAX_BODY)
                        .collect()
                        .await
                        .map_err(|e| format!("reading the response: {e}"))?
                        .to_bytes();
                    Ok::<_, String>((parts, body))
                };
                let outcome = match tokio::time::timeout(timeout, exchange).await {
                    Err(_) => Err(format!("no complete answer within {timeout:?}")),
                    Ok(r) => r,
                };
                let now = SystemTime::now();
                if let Ok((rparts, _)) = &outcome {
                    note_clock(&gate.ca, &rparts.headers, now);
                }
                let (verdict, answer) = match outcome {
                    Ok((rparts, rbody)) => (
                        classify(rparts.status, &rparts.headers, &rbody, now),
                        Some((rparts, rbody)),
                    ),
                    Err(e) => (Verdict::Transient(e), None),
                };
                let last = tries >= MAX_TRIES;
                match verdict {
                    Verdict::Answer => gate.answered(),
                    Verdict::BadNonce => {
                        let quiet = gate.bad_nonce();
                        if !quiet.is_zero() {
                            tracing::warn!(ca = %gate.ca, uri = %uri, wait = ?quiet,
                                "the CA keeps rejecting nonces; slowing down");
                            gate.defer(now + quiet, "repeated badNonce answers".into());
                        }
                    }
                    Verdict::RetryAfter { until, why } => {
                        let wait = until.duration_since(now).unwrap_or_default();
                        gate.defer(until, why.clone());
                        if !last && wait <= MAX_INLINE_WAIT {
                            tracing::warn!(ca = %gate.ca, uri = %uri, wait = ?wait, reason = %why,
                                "the CA asked to wait; retrying then");
                            continue;
                        }
                    }
                    Verdict::Transient(why) => {
                        let streak = gate.transient(&why);
                        let wait = backoff(streak, rand::random::<f64>());
                        gate.defer(now + wait, format!("a transient failure: {why}"));
                        if !last && streak < MAX_TRIES {
                            tracing::warn!(ca = %gate.ca, uri = %uri, error = %why, streak,
                                wait = ?wait, "transient failure; retrying");
                            continue;
                        }
                        return Err(fail(format!("{uri}: {why} (gave up after {streak} tries)")));
                    }
                }
                let Some((rparts, rbody)) = answer else {
                    return Err(fail(format!("{uri}: no answer")));
                };
                if rparts.status.is_success() {
                    if let Some(why) = unusable_urls(&rparts.headers, &rbody) {
                        return Err(fail(format!("{uri}: {why}")));
                    }
                }
                return Ok(BytesResponse::from(http::Response::from_parts(
                    rparts,
                    Full::new(rbody),
                )));
            }
        })
    }
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

/// Why a CA's answer cannot be used as it is: a URL the ACME library would request (a
/// member of [`URL_MEMBERS`], at any depth, or `Location`) that is not an absolute URL.
/// instant-acme treats building such a request as infallible and panics (found by
/// `tests/fuzz.rs`: a directory whose `newNonce` was `../../etc/passwd`), so renewd
/// refuses the answer before the library sees it.
fn unusable_urls(headers: &http::HeaderMap, body: &[u8]) -> Option<String> {
    fn absolute(s: &str) -> bool {
        s.parse::<http::Uri>()
            .is_ok_and(|u| u.scheme().is_some() && u.authority().is_some())
    }
    fn walk(v: &serde_json::Value, depth: usize) -> Option<String> {
        let serde_json::Value::Object(map) = v else {
            if let serde_json::Value::Array(items) = v {
                return items.iter().find_map(|i| walk(i, depth + 1));
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
            if let Some(why) = walk(value, depth + 1) {
                return Some(why);
            }
        }
        None
    }
    if let Some(location) = headers.get(http::header::LOCATION) {
        if !location.to_str().is_ok_and(absolute) {
            return Some("the CA's answer has a Location that is not an absolute URL".into());
        }
    }
    let doc: serde_json::Value = serde_json::from_slice(body).ok()?;
    walk(&doc, 0)
}

/// The longest message renewd keeps from a CA's error (a problem's detail, a parser's
/// complaint quoting the body): a hostile answer of a megabyte otherwise went whole into
/// the log, the state record and `status` (found by `tests/fuzz.rs`).
const MAX_CA_MESSAGE: usize = 2048;

/// The account file: the credentials, and the directory they belong to, so that pointing a
/// CA name at another directory registers a new account instead of using a stranger's key.
#[derive(Serialize, Deserialize)]
struct StoredAccount {
    directory: String,
    credentials: AccountCredentials,
}

/// One configured CA with its account, ready to take orders.
pub struct Ca {
    name: String,
    config: CaConfig,
    account_path: PathBuf,
    account: tokio::sync::RwLock<Account>,
    gate: Arc<Gate>,
}

/// What to ask for in an order besides the names.
#[derive(Debug, Clone, Copy, Default)]
pub struct OrderOptions<'a> {
    /// The certificate this order replaces (ARI `replaces`), when the CA offers ARI.
    pub replaces: Option<&'a crate::x509::CertInfo>,
    /// The ACME profile to request; it must be one the CA's directory advertises.
    pub profile: Option<&'a str>,
    /// A dry run (`renew --dry-run`): create the order and prove every authorization, then
    /// stop before finalize and deactivate the authorizations (RFC 8555 §7.5.2), so the CA
    /// issues nothing and no duplicate-certificate limit is spent.
    pub dry_run: bool,
}

/// The CA's renewal information (RFC 9773) for one certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AriAnswer {
    pub start: SystemTime,
    pub end: SystemTime,
    pub explanation_url: Option<String>,
    /// The CA's Retry-After for the next request about this certificate.
    pub retry_after: Duration,
}

/// The ARI certificate identifier (AKI keyIdentifier . serial), when the certificate has an
/// AKI.
fn cert_id(cert: &crate::x509::CertInfo) -> Option<instant_acme::CertificateIdentifier<'static>> {
    use rustls::pki_types::Der;
    let aki = cert.authority_key_id.as_deref()?;
    Some(
        instant_acme::CertificateIdentifier::new(
            Der::from_slice(aki),
            Der::from_slice(&cert.serial_der),
        )
        .into_owned(),
    )
}

/// The RFC 5280 revocation reason names `renewd revoke --reason` accepts.
pub const REVOCATION_REASONS: &[&str] = &[
    "unspecified",
    "keyCompromise",
    "cACompromise",
    "affiliationChanged",
    "superseded",
    "cessationOfOperation",
    "certificateHold",
    "removeFromCRL",
    "privilegeWithdrawn",
    "aACompromise",
];

/// An RFC 5280 reason name (case-insensitive) as instant-acme's code.
pub fn revocation_reason(name: &str) -> Option<instant_acme::RevocationReason> {
    use instant_acme::RevocationReason as R;
    let all = [
        R::Unspecified,
        R::KeyCompromise,
        R::CaCompromise,
        R::AffiliationChanged,
        R::Superseded,
        R::CessationOfOperation,
        R::CertificateHold,
        R::RemoveFromCrl,
        R::PrivilegeWithdrawn,
        R::AaCompromise,
    ];
    REVOCATION_REASONS
        .iter()
        .zip(all)
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, r)| r)
}

/// The result of a completed order.
pub struct Issued {
    /// The chain as the CA sent it: leaf first, PEM.
    pub chain_pem: String,
    pub order_url: String,
}

/// How an order ended: a certificate, or (a dry run) authorizations proven and no
/// certificate asked for.
pub enum OrderOutcome {
    Issued(Issued),
    /// The order's authorizations were all proven; finalize was never sent.
    Rehearsed {
        order_url: String,
        /// Each authorization's identifier and its status after the deactivation attempt
        /// (`deactivated`, or `valid` where the CA refused to deactivate it).
        authorizations: Vec<(String, String)>,
    },
}

impl Ca {
    /// Loads this CA's account from `account_path`, or registers one (and stores it, 0600)
    /// when there is none or it belongs to another directory.
    ///
    /// A CA paused by an earlier answer (rate limit, long Retry-After; remembered beside the
    /// account file, `NAME.pause`) is not contacted: the error says until when.
    pub async fn open(config: &CaConfig, account_path: &Path) -> Result<Ca, AcmeError> {
        let gate = Arc::new(Gate::open(
            &config.name,
            account_path.with_extension("pause"),
        ));
        if let Some((until, why)) = gate.paused() {
            return Err(AcmeError::Paused {
                ca: config.name.clone(),
                until,
                why: format!("not contacted: paused after {why}"),
            });
        }
        let account = load_or_register(config, account_path, false, &gate).await?;
        Ok(Ca {
            name: config.name.clone(),
            config: config.clone(),
            account_path: account_path.to_path_buf(),
            account: tokio::sync::RwLock::new(account),
            gate,
        })
    }

    /// The pause in force for this CA, if any: until when, and why.
    pub fn paused(&self) -> Option<(SystemTime, String)> {
        self.gate.paused()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Revokes the certificate `der` for `reason`, signed with this CA's account key. When
    /// the CA refuses that as `unauthorized` (another account issued the certificate: the
    /// account file was replaced, or the certificate was adopted) and `key_pem`, the
    /// certificate's private key (PKCS#8 PEM), is given, the request is signed again with
    /// that key, which RFC 8555 §7.6 always accepts.
    pub async fn revoke(
        &self,
        der: &[u8],
        key_pem: Option<&str>,
        reason: Option<instant_acme::RevocationReason>,
    ) -> Result<(), AcmeError> {
        let account = self.account.read().await.clone();
        let cert = rustls::pki_types::CertificateDer::from(der.to_vec());
        let request = instant_acme::RevocationRequest {
            certificate: &cert,
            reason,
        };
        let e = match account.revoke(&request).await {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        let unauthorized = matches!(&e, instant_acme::Error::Api(p)
            if p.r#type.as_deref() == Some("urn:ietf:params:acme:error:unauthorized"));
        let (true, Some(key_pem)) = (unauthorized, key_pem) else {
            return Err(ca_error(&self.name, &self.gate, &e));
        };
        tracing::info!(ca = %self.name, error = %acme_message(&e),
            "the account may not revoke the certificate; signing with the certificate's own key (RFC 8555 7.6)");
        let http = CaHttp::new(&self.config, self.gate.clone())?;
        certkey::revoke(&http, &self.config.directory, key_pem, &request)
            .await
            .map_err(|why| AcmeError::Ca {
                ca: self.name.clone(),
                message: format!(
                    "revocation refused for the account ({}) and with the certificate's key ({why})",
                    acme_message(&e)
                ),
            })
    }

    /// Asks the CA's ARI when `cert` should be renewed. `Ok(None)` when the CA offers no
    /// `renewalInfo`; `Err` for a failed request or an unusable answer (a window that ends
    /// before it starts, no Retry-After, not JSON), which the caller treats as no advice.
    pub async fn renewal_info(
        &self,
        cert: &crate::x509::CertInfo,
    ) -> Result<Option<AriAnswer>, String> {
        let Some(id) = cert_id(cert) else {
            return Err("the certificate has no authority key identifier".into());
        };
        let account = self.account.read().await.clone();
        match account.renewal_info(&id).await {
            Ok((info, retry_after)) => {
                let start = SystemTime::from(info.suggested_window.start);
                let end = SystemTime::from(info.suggested_window.end);
                if end < start {
                    return Err(format!(
                        "the suggested window ends ({}) before it starts ({})",
                        crate::state::rfc3339(end),
                        crate::state::rfc3339(start)
                    ));
                }
                Ok(Some(AriAnswer {
                    start,
                    end,
                    explanation_url: info.explanation_url,
                    retry_after,
                }))
            }
            Err(instant_acme::Error::Unsupported(_)) => Ok(None),
            Err(e) => Err(ca_error(&self.name, &self.gate, &e).to_string()),
        }
    }

    /// Orders a certificate for `names` with the CSR `csr_der`, answering challenges through
    /// `responders` as `challenge` says for each name.
    ///
    /// When the CA no longer knows the account (it was reset, or the account deactivated),
    /// a new account is registered once and the order retried. An order that fails on a
    /// `badNonce` that outlived instant-acme's own retries is started again, up to
    /// [`ORDER_ATTEMPTS`] times: the CA rejected a nonce, not the request.
    pub async fn issue(
        &self,
        names: &[String],
        csr_der: &[u8],
        challenge: &Challenges,
        responders: &Responders,
        options: OrderOptions<'_>,
    ) -> Result<OrderOutcome, AcmeError> {
        let mut attempts = 0;
        let mut registered_again = false;
        loop {
            attempts += 1;
            let account = self.account.read().await.clone();
            match self
                .order(&account, names, csr_der, challenge, responders, options)
                .await
            {
                Err(OrderError::Acme(e)) if account_is_gone(&e) && !registered_again => {
                    tracing::warn!(ca = %self.name, error = %e,
                        "the CA does not know renewd's account; registering a new one");
                    let fresh =
                        load_or_register(&self.config, &self.account_path, true, &self.gate)
                            .await?;
                    *self.account.write().await = fresh;
                    registered_again = true;
                }
                // A badNonce that follows transient failures is the CA refusing a resent
                // request it had processed: not a reason to start over.
                Err(OrderError::Acme(e))
                    if is_bad_nonce(&e)
                        && attempts < ORDER_ATTEMPTS
                        && self.gate.transient_streak().is_none() =>
                {
                    tracing::warn!(ca = %self.name, error = %e, attempt = attempts,
                        "the CA rejected a nonce repeatedly; starting the order again");
                }
                other => return other.map_err(|e| self.describe(e)),
            }
        }
    }

    fn describe(&self, e: OrderError) -> AcmeError {
        match e {
            OrderError::Acme(e) => ca_error(&self.name, &self.gate, &e),
            OrderError::Validation {
                identifier,
                message,
            } => AcmeError::Validation {
                ca: self.name.clone(),
                identifier,
                message,
            },
            OrderError::Challenge(e) => AcmeError::Challenge(e),
            OrderError::Profile(message) => AcmeError::Ca {
                ca: self.name.clone(),
                message,
            },
        }
    }

    async fn order(
        &self,
        account: &Account,
        names: &[String],
        csr_der: &[u8],
        challenges: &Challenges,
        responders: &Responders,
        options: OrderOptions<'_>,
    ) -> Result<OrderOutcome, OrderError> {
        let identifiers: Vec<Identifier> = names.iter().map(|n| identifier(n)).collect();
        let new_order = || {
            let order = NewOrder::new(&identifiers);
            match options.profile {
                Some(p) => order.profile(p),
                None => order,
            }
        };
        if let Some(profile) = options.profile {
            let mut offered: Vec<&str> = account.profiles().map(|p| p.name).collect();
            offered.sort_unstable();
            if !offered.contains(&profile) {
                return Err(OrderError::Profile(if offered.is_empty() {
                    format!("profile {profile:?} is not offered: the CA advertises no profiles (remove `profile`)")
                } else {
                    format!(
                        "profile {profile:?} is not offered; the CA offers: {}",
                        offered.join(", ")
                    )
                }));
            }
        }
        let replaces = options.replaces.and_then(cert_id);
        let mut order = match replaces {
            Some(id) => match account.new_order(&new_order().replaces(id.clone())).await {
                Ok(order) => {
                    tracing::info!(ca = %self.name, replaces = %id, "the order replaces the deployed certificate (ARI)");
                    order
                }
                Err(e) => match ReplacesRefused::from_error(&e) {
                    // RFC 9773 §5 lets a CA refuse `replaces` (the certificate was already
                    // replaced by an order that was not deployed, or it forgot it) or ignore
                    // it; neither may stop the renewal: order again without it.
                    Some(why) => {
                        tracing::warn!(ca = %self.name, replaces = %id, error = %acme_message(&e),
                            "{why}; ordering again without `replaces`");
                        account.new_order(&new_order()).await?
                    }
                    None => return Err(e.into()),
                },
            },
            None => account.new_order(&new_order()).await?,
        };
        let order_url = order.url().to_string();
        tracing::info!(ca = %self.name, order = %order_url, names = %names.join(","), "order created");

        // Answers stay published until the order is decided, then are withdrawn whatever
        // happened (a dns-01 `clear` runs even when validation failed); if this future is
        // dropped instead, dropping them withdraws them.
        let mut published: Vec<Provisioned> = Vec::new();
        let validated = async {
            // First every answer is published, then (after DNS propagation) the CA is told
            // to look: a CA may check a wildcard and its base name's TXT record together.
            let mut propagation_wait = Duration::ZERO;
            let mut ready: Vec<(String, ChallengeType)> = Vec::new();
            let mut authzs = order.authorizations();
            while let Some(authz) = authzs.next().await {
                let mut authz = authz?;
                match authz.status {
                    AuthorizationStatus::Valid => continue,
                    AuthorizationStatus::Pending => {}
                    other => {
                        return Err(OrderError::Validation {
                            identifier: authz.identifier().to_string(),
                            message: format!("authorization is {other:?} before any challenge"),
                        })
                    }
                }
                let ident = authz.identifier().to_string();
                let Some(rule) = challenges.for_name(&ident) else {
                    return Err(OrderError::Validation {
                        identifier: ident,
                        message: "the CA asked about a name the configuration does not list".into(),
                    });
                };
                let wanted = challenge_type(&rule.config);
                let authz_url = authz.url().to_string();
                let Some(ch) = authz.challenge(wanted.clone()) else {
                    return Err(OrderError::Validation {
                        identifier: ident,
                        message: format!("the CA offers no {wanted:?} challenge for it"),
                    });
                };
                let key_auth = ch.key_authorization();
                let digest = key_auth.digest();
                let dns_value = key_auth.dns_value();
                let answer = Answer {
                    certificate: &challenges.certificate,
                    domains: &challenges.domains,
                    identifier: &ident,
                    token: &ch.token,
                    key_authorization: key_auth.as_str(),
                    digest: digest.as_ref(),
                    dns_value: &dns_value,
                };
                tracing::debug!(ca = %self.name, identifier = %ident,
                    challenge = rule.config.kind(), "answering challenge");
                published.push(
                    responders
                        .provision(&rule.config, &answer)
                        .await
                        .map_err(OrderError::Challenge)?,
                );
                if let ChallengeConfig::Dns01Hook {
                    propagation_wait: wait,
                    ..
                }
                | ChallengeConfig::Dns01Rfc2136 {
                    propagation_wait: wait,
                    ..
                } = &rule.config
                {
                    propagation_wait = propagation_wait.max(*wait);
                }
                ready.push((authz_url, wanted));
            }
            if !propagation_wait.is_zero() {
                tracing::info!(ca = %self.name, wait = ?propagation_wait,
                    "waiting for the dns-01 records to propagate");
                tokio::time::sleep(propagation_wait).await;
            }
            // The authorizations are cached by now: this second pass makes no request but
            // the challenges' own.
            let mut authzs = order.authorizations();
            while let Some(authz) = authzs.next().await {
                let mut authz = authz?;
                let Some((_, wanted)) = ready.iter().find(|(url, _)| url == authz.url()) else {
                    continue;
                };
                let ident = authz.identifier().to_string();
                if let Some(mut ch) = authz.challenge(wanted.clone()) {
                    // A CA may validate at once and refuse the request with a 4xx problem
                    // (Caddy's acme_server does): it is this identifier's failure. A server
                    // error stays the CA's.
                    match ch.set_ready().await {
                        Err(instant_acme::Error::Api(p))
                            if !refusal_is_about_the_request(&p)
                                && p.status.is_none_or(|s| (400..500).contains(&s)) =>
                        {
                            return Err(OrderError::Validation {
                                identifier: ident,
                                message: problem_message(&p),
                            });
                        }
                        r => r?,
                    }
                }
            }

            let retry = RetryPolicy::new()
                .initial_delay(Duration::from_millis(250))
                .backoff(1.5)
                .timeout(ORDER_TIMEOUT);
            match order.poll_ready(&retry).await {
                Ok(OrderStatus::Ready) => Ok(()),
                // The order failed: the challenges' problem documents say which name and why.
                Ok(_) => Err(self.validation_failure(&mut order, None).await),
                Err(instant_acme::Error::Api(p)) => {
                    Err(self.validation_failure(&mut order, Some(p)).await)
                }
                Err(e) => Err(e.into()),
            }
        }
        .await;
        for answer in published {
            answer.withdraw().await;
        }
        if options.dry_run {
            // Whether or not validation passed: leave no authorization usable behind.
            let authorizations = self.deactivate_all(&mut order).await;
            validated?;
            tracing::info!(ca = %self.name, order = %order_url,
                "dry run: every authorization proven; stopped before finalize, no certificate issued");
            return Ok(OrderOutcome::Rehearsed {
                order_url,
                authorizations,
            });
        }
        validated?;
        let retry = RetryPolicy::new()
            .initial_delay(Duration::from_millis(250))
            .backoff(1.5)
            .timeout(ORDER_TIMEOUT);
        if let Err(e) = order.finalize_csr(csr_der).await {
            // A finalize the CA processed but whose answer was lost is resent by CaHttp;
            // the CA then says the order is no longer ready. Carry on if it is under way.
            if !is_order_not_ready(&e) {
                return Err(e.into());
            }
            let status = order.refresh().await?.status;
            if !matches!(status, OrderStatus::Processing | OrderStatus::Valid) {
                return Err(e.into());
            }
            tracing::info!(ca = %self.name, order = %order_url,
                "the order was finalized by an earlier, unanswered request");
        }
        let chain_pem = order.poll_certificate(&retry).await?;
        tracing::info!(ca = %self.name, order = %order_url, "certificate issued");
        Ok(OrderOutcome::Issued(Issued {
            chain_pem,
            order_url,
        }))
    }

    /// Deactivates every pending or valid authorization of `order` (RFC 8555 §7.5.2), for a
    /// dry run: what the CA refuses is logged, not fatal (the order is never finalized
    /// anyway). Returns each authorization's identifier and final status, lower case.
    async fn deactivate_all(&self, order: &mut instant_acme::Order) -> Vec<(String, String)> {
        let order_url = order.url().to_string();
        let mut out = Vec::new();
        let mut authzs = order.authorizations();
        while let Some(authz) = authzs.next().await {
            let mut authz = match authz {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(ca = %self.name, order = %order_url, error = %acme_message(&e),
                        "dry run: cannot read an authorization to deactivate it");
                    continue;
                }
            };
            let ident = authz.identifier().to_string();
            // The cached state may predate validation: ask before deciding.
            if let Err(e) = authz.refresh().await {
                tracing::warn!(ca = %self.name, identifier = %ident, error = %acme_message(&e),
                    "dry run: cannot refresh the authorization");
            }
            if matches!(
                authz.status,
                AuthorizationStatus::Pending | AuthorizationStatus::Valid
            ) {
                match authz.deactivate().await {
                    Ok(_) => tracing::info!(ca = %self.name, identifier = %ident,
                        authorization = %authz.url(), "dry run: authorization deactivated"),
                    Err(e) => tracing::warn!(ca = %self.name, identifier = %ident,
                        authorization = %authz.url(), error = %acme_message(&e),
                        "dry run: the CA did not deactivate the authorization"),
                }
            }
            out.push((ident, format!("{:?}", authz.status).to_lowercase()));
        }
        out
    }

    /// Finds the CA's explanation of a failed validation in the challenges' problem documents,
    /// falling back to the order's own problem when no challenge carries one.
    async fn validation_failure(
        &self,
        order: &mut instant_acme::Order,
        order_problem: Option<instant_acme::Problem>,
    ) -> OrderError {
        let mut authzs = order.authorizations();
        while let Some(Ok(mut authz)) = authzs.next().await {
            if authz.refresh().await.is_err() {
                continue;
            }
            let ident = authz.identifier().to_string();
            for ch in &authz.challenges {
                if let Some(p) = &ch.error {
                    return OrderError::Validation {
                        identifier: ident,
                        message: problem_message(p),
                    };
                }
            }
            if authz.status != AuthorizationStatus::Valid {
                return OrderError::Validation {
                    identifier: ident,
                    message: format!("authorization ended {:?}", authz.status),
                };
            }
        }
        // No authorization says which name failed: the order's subproblems may (RFC 8555
        // §6.7.1).
        let named: Vec<String> = order_problem
            .iter()
            .flat_map(|p| &p.subproblems)
            .filter_map(|sub| match sub.identifier.as_ref()? {
                Identifier::Dns(name) => Some(name.clone()),
                Identifier::Ip(ip) => Some(ip.to_string()),
                _ => None,
            })
            .collect();
        OrderError::Validation {
            identifier: if named.is_empty() {
                "the order".into()
            } else {
                named.join(", ")
            },
            message: order_problem.as_ref().map_or_else(
                || "the CA declared the order invalid without saying why".into(),
                problem_message,
            ),
        }
    }
}

enum OrderError {
    Acme(instant_acme::Error),
    Profile(String),
    Validation { identifier: String, message: String },
    Challenge(crate::challenge::ChallengeError),
}

impl From<instant_acme::Error> for OrderError {
    fn from(e: instant_acme::Error) -> Self {
        OrderError::Acme(e)
    }
}

fn identifier(name: &str) -> Identifier {
    match name.parse() {
        Ok(ip) => Identifier::Ip(ip),
        Err(_) => Identifier::Dns(name.to_string()),
    }
}

/// Why a new order naming the certificate it replaces (RFC 9773 `replaces`) could not be
/// used, when the CA's answer says it refused or ignored the field rather than the order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReplacesRefused {
    /// The CA answered with a 4xx problem document (e.g. `alreadyReplaced`, `malformed`).
    Refused,
    /// The CA created the order but did not echo `replaces` in it, which instant-acme
    /// reports as an error; the order it created is abandoned (it expires unused).
    NotEchoed,
    /// The CA's directory has no `renewalInfo` (any more), so instant-acme will not send it.
    Unsupported,
}

impl ReplacesRefused {
    /// Sorts the error of a `new_order` call that carried `replaces`. `None`: the order
    /// failed for another reason (transport, rate limit), which ordering again without
    /// `replaces` would not cure.
    fn from_error(e: &instant_acme::Error) -> Option<ReplacesRefused> {
        match e {
            // Not a refusal of `replaces`: the caller handles these (wait, new nonce, new
            // account), and a second order would only be refused the same way.
            // `unauthorized` here may well be about `replaces` (Pebble: the account did not
            // order the certificate replaced, e.g. after a new account); were the account
            // gone, the order without `replaces` fails the same way and is handled as such.
            instant_acme::Error::Api(p)
                if refusal_is_about_the_request(p)
                    && p.r#type.as_deref() != Some("urn:ietf:params:acme:error:unauthorized") =>
            {
                None
            }
            // A refusal of the request's content (`malformed`, `alreadyReplaced`, …) may be
            // about `replaces`; a server error is not.
            instant_acme::Error::Api(p) if p.status.is_none_or(|s| (400..500).contains(&s)) => {
                Some(ReplacesRefused::Refused)
            }
            // instant-acme 0.8's only `Other` out of `new_order`: "replaces field mismatch".
            instant_acme::Error::Other(inner) if inner.to_string().contains("replaces") => {
                Some(ReplacesRefused::NotEchoed)
            }
            instant_acme::Error::Unsupported(_) => Some(ReplacesRefused::Unsupported),
            _ => None,
        }
    }
}

impl std::fmt::Display for ReplacesRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ReplacesRefused::Refused => {
                "the CA refused the order naming the certificate it replaces"
            }
            ReplacesRefused::NotEchoed => {
                "the CA created the order but ignored `replaces` (it did not echo it)"
            }
            ReplacesRefused::Unsupported => {
                "the CA no longer advertises renewalInfo, so `replaces` cannot be sent"
            }
        })
    }
}

fn challenge_type(c: &ChallengeConfig) -> ChallengeType {
    match c {
        ChallengeConfig::Http01Webroot { .. } | ChallengeConfig::Http01Listen { .. } => {
            ChallengeType::Http01
        }
        ChallengeConfig::Dns01Hook { .. } | ChallengeConfig::Dns01Rfc2136 { .. } => {
            ChallengeType::Dns01
        }
        ChallengeConfig::TlsAlpn01 { .. } => ChallengeType::TlsAlpn01,
    }
}

fn problem_message(p: &instant_acme::Problem) -> String {
    let mut s = p.detail.clone().unwrap_or_else(|| "no detail given".into());
    if let Some(t) = &p.r#type {
        s.push_str(&format!(
            " ({})",
            t.trim_start_matches("urn:ietf:params:acme:error:")
        ));
    }
    for sub in &p.subproblems {
        s.push_str(&format!("; {sub}"));
    }
    crate::text::bounded(s, MAX_CA_MESSAGE)
}

fn acme_message(e: &instant_acme::Error) -> String {
    match e {
        instant_acme::Error::Api(p) => problem_message(p),
        other => error_chain(other),
    }
}

/// The external account binding key, when the CA is configured with one: `eab_kid` and the
/// HMAC key read (base64url, as CAs hand them out; standard base64 accepted) from
/// `eab_hmac_key_file` or systemd's credentials directory. The key is never logged.
fn eab_key(config: &CaConfig) -> Result<Option<instant_acme::ExternalAccountKey>, AcmeError> {
    let (Some(kid), Some(path)) = (&config.eab_kid, config.eab_key_path()) else {
        return Ok(None);
    };
    let err = |message: String| AcmeError::Ca {
        ca: config.name.clone(),
        message,
    };
    let text = crate::fsutil::read_regular_string(
        &path,
        crate::fsutil::caps::SECRET,
        crate::fsutil::Follow::Yes,
    )
    .map_err(|e| err(format!("cannot read the EAB key: {e}")))?;
    let text = text.trim();
    let key = [
        data_encoding::BASE64URL_NOPAD,
        data_encoding::BASE64URL,
        data_encoding::BASE64,
        data_encoding::BASE64_NOPAD,
    ]
    .iter()
    .find_map(|enc| enc.decode(text.as_bytes()).ok())
    .filter(|k| !k.is_empty())
    .ok_or_else(|| {
        err(format!(
            "the EAB key in {} is not base64url (the CA's HMAC key, as it gave it)",
            path.display()
        ))
    })?;
    Ok(Some(instant_acme::ExternalAccountKey::new(
        kid.clone(),
        &key,
    )))
}

/// `renewd account`: what is known of a CA's stored account, and its maintenance. Each
/// works on the account file only when one exists: nothing here registers an account.
pub mod account {
    use super::*;

    async fn load(config: &CaConfig, path: &Path) -> Result<(Account, Arc<Gate>), AcmeError> {
        let gate = Arc::new(Gate::open(&config.name, path.with_extension("pause")));
        let err = |message: String| AcmeError::Ca {
            ca: config.name.clone(),
            message,
        };
        let read = crate::fsutil::read_regular(
            path,
            crate::fsutil::caps::STATE,
            crate::fsutil::Follow::No,
        )
        .map_err(crate::fsutil::ReadError::into_io);
        let bytes = match read {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(err(format!(
                    "no account yet ({} does not exist); one is registered at the first order",
                    path.display()
                )))
            }
            Err(source) => {
                return Err(AcmeError::AccountFile {
                    ca: config.name.clone(),
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        let stored: StoredAccount = serde_json::from_slice(&bytes).map_err(|e| {
            err(format!(
                "account file {} is unreadable: {e}",
                path.display()
            ))
        })?;
        if stored.directory != config.directory {
            return Err(err(format!(
                "the account in {} belongs to {}, not to this CA's directory",
                path.display(),
                stored.directory
            )));
        }
        let http = CaHttp::new(config, gate.clone())?;
        let account = Account::builder_with_http(Box::new(http))
            .from_credentials(stored.credentials)
            .await
            .map_err(|e| ca_error(&config.name, &gate, &e))?;
        Ok((account, gate))
    }

    /// The account's URL as stored in `path`, without asking the CA (`renewd account show`
    /// works offline and beside a running daemon). `Ok(None)`: no account yet.
    pub fn stored_id(config: &CaConfig, path: &Path) -> Result<Option<String>, AcmeError> {
        let err = |message: String| AcmeError::Ca {
            ca: config.name.clone(),
            message,
        };
        let bytes = match fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(AcmeError::AccountFile {
                    ca: config.name.clone(),
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        let stored: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
            err(format!(
                "account file {} is unreadable: {e}",
                path.display()
            ))
        })?;
        if stored["directory"].as_str() != Some(config.directory.as_str()) {
            return Err(err(format!(
                "the account in {} belongs to {}, not to this CA's directory",
                path.display(),
                stored["directory"]
            )));
        }
        match stored["credentials"]["id"].as_str() {
            Some(id) => Ok(Some(id.to_string())),
            None => Err(err(format!(
                "account file {} holds no account URL (credentials.id)",
                path.display()
            ))),
        }
    }

    /// Replaces the account key at the CA (RFC 8555 §7.3.5) and stores the new one; the
    /// old file is kept beside it (`.json.TIMESTAMP`). Returns the account URL.
    pub async fn rollover_key(config: &CaConfig, path: &Path) -> Result<String, AcmeError> {
        let (mut account, gate) = load(config, path).await?;
        let credentials = account
            .update_key()
            .await
            .map_err(|e| ca_error(&config.name, &gate, &e))?;
        let file_err = |source| AcmeError::AccountFile {
            ca: config.name.clone(),
            path: path.to_path_buf(),
            source,
        };
        let aside = path.with_extension(format!("json.{}", crate::state::unix(SystemTime::now())));
        fs::hard_link(path, &aside).map_err(file_err)?;
        let stored = StoredAccount {
            directory: config.directory.clone(),
            credentials,
        };
        let bytes =
            serde_json::to_vec_pretty(&stored).map_err(|e| file_err(io::Error::other(e)))?;
        fsutil::write_atomic(path, &bytes, 0o600).map_err(file_err)?;
        tracing::info!(ca = %config.name, account = %account.id(), "account key rolled over");
        Ok(account.id().to_string())
    }

    /// Deactivates the account at the CA; its file is renamed aside
    /// (`.json.deactivated-TIMESTAMP`), so the next order registers a new account.
    pub async fn deactivate(config: &CaConfig, path: &Path) -> Result<String, AcmeError> {
        let (account, gate) = load(config, path).await?;
        let id = account.id().to_string();
        account
            .deactivate()
            .await
            .map_err(|e| ca_error(&config.name, &gate, &e))?;
        let aside = path.with_extension(format!(
            "json.deactivated-{}",
            crate::state::unix(SystemTime::now())
        ));
        fs::rename(path, &aside).map_err(|source| AcmeError::AccountFile {
            ca: config.name.clone(),
            path: path.to_path_buf(),
            source,
        })?;
        tracing::warn!(ca = %config.name, account = %id, "account deactivated");
        Ok(id)
    }
}

async fn load_or_register(
    config: &CaConfig,
    path: &Path,
    force_new: bool,
    gate: &Arc<Gate>,
) -> Result<Account, AcmeError> {
    let ca = config.name.clone();
    let http = || CaHttp::new(config, gate.clone());
    let file_err = |source| AcmeError::AccountFile {
        ca: ca.clone(),
        path: path.to_path_buf(),
        source,
    };
    let ca_err = |e: instant_acme::Error| ca_error(&ca, gate, &e);

    if !force_new {
        match crate::fsutil::read_regular(
            path,
            crate::fsutil::caps::STATE,
            crate::fsutil::Follow::No,
        )
        .map_err(crate::fsutil::ReadError::into_io)
        {
            Ok(bytes) => match serde_json::from_slice::<StoredAccount>(&bytes) {
                Ok(stored) if stored.directory == config.directory => {
                    return Account::builder_with_http(Box::new(http()?))
                        .from_credentials(stored.credentials)
                        .await
                        .map_err(ca_err);
                }
                Ok(_) => {
                    tracing::info!(ca = %ca, "account belongs to another directory URL; registering a new one")
                }
                Err(e) => {
                    tracing::warn!(ca = %ca, path = %path.display(), error = %e,
                        "account file is unreadable; registering a new account")
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(file_err(e)),
        }
    }
    // Keep whatever was there: an account key is never thrown away.
    if path.exists() {
        let aside = path.with_extension(format!(
            "json.{}",
            crate::state::unix(std::time::SystemTime::now())
        ));
        fs::rename(path, &aside).map_err(file_err)?;
    }
    let contact: Vec<&str> = config.contact.iter().map(String::as_str).collect();
    let eab = eab_key(config)?;
    let (account, credentials) = Account::builder_with_http(Box::new(http()?))
        .create(
            &NewAccount {
                contact: &contact,
                terms_of_service_agreed: config.accept_terms,
                only_return_existing: false,
            },
            config.directory.clone(),
            eab.as_ref(),
        )
        .await
        .map_err(ca_err)?;
    let stored = StoredAccount {
        directory: config.directory.clone(),
        credentials,
    };
    let bytes = serde_json::to_vec_pretty(&stored).map_err(|e| file_err(io::Error::other(e)))?;
    fsutil::write_atomic(path, &bytes, 0o600).map_err(file_err)?;
    tracing::info!(ca = %ca, account = %account.id(), "ACME account registered");
    Ok(account)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).expect("header value"));
        }
        h
    }

    const JSON: (&str, &str) = ("content-type", "application/json");
    const PROBLEM: (&str, &str) = ("content-type", "application/problem+json");

    fn problem(kind: &str) -> Vec<u8> {
        format!(r#"{{"type":"urn:ietf:params:acme:error:{kind}","detail":"it says {kind}"}}"#)
            .into_bytes()
    }

    #[test]
    fn successes_and_definitive_refusals_are_answers() {
        let now = t(0);
        let ok = classify(
            StatusCode::OK,
            &headers(&[JSON]),
            br#"{"status":"valid"}"#,
            now,
        );
        assert_eq!(ok, Verdict::Answer);
        for kind in [
            "malformed",
            "unauthorized",
            "rejectedIdentifier",
            "caa",
            "orderNotReady",
        ] {
            let v = classify(
                StatusCode::FORBIDDEN,
                &headers(&[PROBLEM]),
                &problem(kind),
                now,
            );
            assert_eq!(v, Verdict::Answer, "{kind}");
        }
        let v = classify(
            StatusCode::BAD_REQUEST,
            &headers(&[PROBLEM]),
            &problem("malformed"),
            now,
        );
        assert_eq!(v, Verdict::Answer);
        // Server errors outside the retry list are final too.
        for code in [501, 505, 507, 511] {
            let v = classify(
                StatusCode::from_u16(code).expect("status"),
                &headers(&[PROBLEM]),
                &problem("serverInternal"),
                now,
            );
            assert_eq!(v, Verdict::Answer, "{code}");
        }
        // A HEAD for a nonce has no body at all.
        assert_eq!(
            classify(StatusCode::OK, &headers(&[JSON]), b"", now),
            Verdict::Answer
        );
    }

    #[test]
    fn bad_nonce_is_its_own_verdict() {
        let v = classify(
            StatusCode::BAD_REQUEST,
            &headers(&[PROBLEM]),
            &problem("badNonce"),
            t(0),
        );
        assert_eq!(v, Verdict::BadNonce);
    }

    #[test]
    fn server_errors_and_garbled_bodies_are_transient() {
        let now = t(0);
        let v = classify(
            StatusCode::INTERNAL_SERVER_ERROR,
            &headers(&[PROBLEM]),
            &problem("serverInternal"),
            now,
        );
        assert_eq!(
            v,
            Verdict::Transient("HTTP 500: it says serverInternal (serverInternal)".into())
        );
        let v = classify(StatusCode::BAD_GATEWAY, &HeaderMap::new(), b"<html>", now);
        assert_eq!(v, Verdict::Transient("HTTP 502".into()));
        // 503 without Retry-After is an ordinary transient failure.
        assert!(matches!(
            classify(StatusCode::SERVICE_UNAVAILABLE, &HeaderMap::new(), b"", now),
            Verdict::Transient(_)
        ));
        let v = classify(
            StatusCode::OK,
            &headers(&[JSON]),
            b"{\"status\": \"val\x00\xff",
            now,
        );
        assert!(
            matches!(v, Verdict::Transient(ref m) if m.contains("not the JSON")),
            "{v:?}"
        );
        let pem = ("content-type", "application/pem-certificate-chain");
        let v = classify(
            StatusCode::OK,
            &headers(&[pem]),
            b"-----BEGIN CERTIFICATE-----\nMIIB",
            now,
        );
        assert!(
            matches!(v, Verdict::Transient(ref m) if m.contains("garbled")),
            "{v:?}"
        );
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date_is_a_moment() {
        let now = t(0);
        let v = classify(
            StatusCode::TOO_MANY_REQUESTS,
            &headers(&[PROBLEM, ("retry-after", "120")]),
            &problem("rateLimited"),
            now,
        );
        assert_eq!(
            v,
            Verdict::RetryAfter {
                until: t(120),
                why: "rate limited (HTTP 429: it says rateLimited (rateLimited))".into()
            }
        );
        let date = httpdate::fmt_http_date(t(300));
        let v = classify(
            StatusCode::SERVICE_UNAVAILABLE,
            &headers(&[("retry-after", &date)]),
            b"",
            now,
        );
        assert_eq!(
            v,
            Verdict::RetryAfter {
                until: t(300),
                why: "unavailable (HTTP 503)".into()
            }
        );
    }

    #[test]
    fn retry_after_is_clamped_and_defaults_for_rate_limits() {
        let now = t(1000);
        // No Retry-After on a 429: an hour.
        let v = classify(StatusCode::TOO_MANY_REQUESTS, &HeaderMap::new(), b"", now);
        assert!(
            matches!(v, Verdict::RetryAfter { until, .. } if until == now + DEFAULT_RATE_LIMIT_PAUSE)
        );
        // A year is believed as a day.
        let h = headers(&[("retry-after", "31536000")]);
        assert_eq!(parse_retry_after(&h, now), Some(now + MAX_RETRY_AFTER));
        // A date in the past means now; garbage means nothing.
        let h = headers(&[("retry-after", "Sun, 06 Nov 1994 08:49:37 GMT")]);
        assert_eq!(parse_retry_after(&h, now), Some(now));
        let h = headers(&[("retry-after", "soon")]);
        assert_eq!(parse_retry_after(&h, now), None);
        // A 429 always waits at least a second.
        let v = classify(
            StatusCode::TOO_MANY_REQUESTS,
            &headers(&[("retry-after", "0")]),
            b"",
            now,
        );
        assert!(matches!(v, Verdict::RetryAfter { until, .. } if until == t(1001)));
    }

    #[test]
    fn backoff_doubles_with_jitter_between_half_and_all() {
        assert_eq!(backoff(1, 0.0), Duration::from_millis(500));
        assert_eq!(backoff(1, 1.0), Duration::from_secs(1));
        assert_eq!(backoff(2, 0.0), Duration::from_secs(1));
        assert_eq!(backoff(3, 0.5), Duration::from_secs(3));
        assert_eq!(backoff(40, 1.0), BACKOFF_MAX);
        for n in 1..10 {
            let (lo, hi) = (backoff(n, 0.0), backoff(n, 0.999));
            assert!(lo <= hi && hi <= lo * 2, "{n}: {lo:?} {hi:?}");
        }
    }

    #[tokio::test]
    async fn a_long_pause_closes_the_gate_and_survives_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("ca.pause");
        let gate = Gate::open("ca", file.clone());
        assert!(gate.paused().is_none());
        gate.admit().await.expect("open gate");

        let until = SystemTime::now() + Duration::from_secs(3600);
        gate.defer(until, "rate limited (HTTP 429)".into());
        let (when, why) = gate.paused().expect("paused");
        assert_eq!(when, until);
        assert_eq!(why, "rate limited (HTTP 429)");
        let closed = gate.admit().await.expect_err("fails fast");
        assert_eq!(
            closed.to_string(),
            "not contacted: paused after rate limited (HTTP 429)"
        );
        assert_eq!(closed.until, until);
        // A shorter wait never shortens the pause.
        gate.defer(SystemTime::now() + Duration::from_secs(5), "other".into());
        assert_eq!(gate.paused().map(|p| p.0), Some(until));

        // A new process reads the pause back.
        assert!(file.exists());
        let again = Gate::open("ca", file.clone());
        let (when, _) = again.paused().expect("still paused");
        assert!(when >= until && when <= until + Duration::from_secs(1));

        // An expired pause is forgotten at the next answer.
        let old = Gate::open("ca", file.clone());
        old.lock().not_before = Some(SystemTime::now() - Duration::from_secs(1));
        old.answered();
        assert!(!file.exists());
        // An unreadable pause file is ignored.
        fs::write(&file, b"{not json").expect("write");
        assert!(Gate::open("ca", file).paused().is_none());
    }

    #[tokio::test]
    async fn a_short_wait_delays_the_next_request() {
        let dir = tempfile::tempdir().expect("tempdir");
        let gate = Gate::open("ca", dir.path().join("ca.pause"));
        let start = std::time::Instant::now();
        gate.defer(
            SystemTime::now() + Duration::from_millis(300),
            "HTTP 500".into(),
        );
        assert!(gate.paused().is_none(), "a short wait is not a pause");
        gate.admit().await.expect("opens");
        assert!(start.elapsed() >= Duration::from_millis(290));
        assert!(!dir.path().join("ca.pause").exists(), "nothing persisted");
    }

    #[test]
    fn the_first_bad_nonce_is_free_later_ones_back_off() {
        let dir = tempfile::tempdir().expect("tempdir");
        let gate = Gate::open("ca", dir.path().join("ca.pause"));
        assert_eq!(gate.bad_nonce(), Duration::ZERO);
        assert!(gate.bad_nonce() >= Duration::from_millis(500));
        assert!(gate.bad_nonce() >= Duration::from_secs(1));
        gate.answered();
        assert_eq!(gate.bad_nonce(), Duration::ZERO);
    }
}

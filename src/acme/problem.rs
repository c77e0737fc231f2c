//! What a CA's answers mean: problem documents (RFC 8555 §6.7, RFC 9457), the
//! classification of every answer for the HTTP client ([`classify`], [`Verdict`]), and
//! [`AcmeError`], the errors of this module as callers act on them.

use std::io;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use http::{HeaderMap, StatusCode};
use instant_acme::Problem;

use super::gate::{Gate, GateClosed, DEFAULT_RATE_LIMIT_PAUSE, MAX_RETRY_AFTER};
use crate::outbound::error_chain;

/// ACME error types (RFC 8555 §6.7) renewd acts on.
pub(crate) mod urn {
    pub(crate) const BAD_NONCE: &str = "urn:ietf:params:acme:error:badNonce";
    pub(crate) const RATE_LIMITED: &str = "urn:ietf:params:acme:error:rateLimited";
    pub(crate) const ACCOUNT_DOES_NOT_EXIST: &str =
        "urn:ietf:params:acme:error:accountDoesNotExist";
    pub(crate) const UNAUTHORIZED: &str = "urn:ietf:params:acme:error:unauthorized";
    pub(crate) const ORDER_NOT_READY: &str = "urn:ietf:params:acme:error:orderNotReady";
    /// The prefix left out when a type is shown.
    pub(crate) const PREFIX: &str = "urn:ietf:params:acme:error:";
}

/// The longest message renewd keeps from a CA's error (a problem's detail, a parser's
/// complaint quoting the body): a hostile answer of a megabyte otherwise went whole into
/// the log, the state record and `status` (found by `tests/it/fuzz.rs`).
const MAX_CA_MESSAGE: usize = 2048;

/// Why talking to a CA failed, with what callers act on: the CA's Retry-After
/// ([`AcmeError::retry_after`]), its problem document (`Refused`), the file.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AcmeError {
    #[error("CA {ca}: {message}")]
    Ca { ca: String, message: String },
    /// The CA refused a request with this problem document.
    #[error("CA {ca}: {}", problem_message(problem))]
    Refused { ca: String, problem: Box<Problem> },
    /// The CA asked renewd to stay away until `until` (rate limit, or a long Retry-After),
    /// or had asked so earlier and was not contacted.
    #[error("CA {ca}: {why}; renewd sends this CA nothing before {}", crate::text::rfc3339(*until))]
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
    pub(crate) fn retry_after(&self) -> Option<SystemTime> {
        match self {
            AcmeError::Paused { until, .. } => Some(*until),
            _ => None,
        }
    }
}

/// What one answer of a CA means for the request that got it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Verdict {
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

/// A `Retry-After` value (delay-seconds or HTTP-date, RFC 9110 §10.2.3) as a moment,
/// clamped to `[now, now + MAX_RETRY_AFTER]`. `None` when absent or unreadable.
pub(crate) fn parse_retry_after(headers: &HeaderMap, now: SystemTime) -> Option<SystemTime> {
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

/// The `type` of the problem document `body`, if it is one.
fn body_type(body: &[u8]) -> Option<String> {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()?
        .get("type")?
        .as_str()
        .map(str::to_string)
}

/// `: DETAIL (TYPE)` of the problem document `body`, or nothing when it has no detail.
fn body_summary(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            let detail = v.get("detail")?.as_str()?.to_string();
            Some(match v.get("type").and_then(|t| t.as_str()) {
                Some(t) => format!(": {detail} ({})", t.trim_start_matches(urn::PREFIX)),
                None => format!(": {detail}"),
            })
        })
        .unwrap_or_default()
}

/// Classifies a complete answer of a CA. Connection failures and deadlines never get this
/// far: they are transient too.
pub(crate) fn classify(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    now: SystemTime,
) -> Verdict {
    if status == StatusCode::TOO_MANY_REQUESTS {
        let until = parse_retry_after(headers, now).unwrap_or(now + DEFAULT_RATE_LIMIT_PAUSE);
        return Verdict::RetryAfter {
            until: until.max(now + Duration::from_secs(1)),
            why: format!("rate limited (HTTP 429{})", body_summary(body)),
        };
    }
    if status == StatusCode::SERVICE_UNAVAILABLE {
        if let Some(until) = parse_retry_after(headers, now) {
            return Verdict::RetryAfter {
                until,
                why: format!("unavailable (HTTP 503{})", body_summary(body)),
            };
        }
    }
    if TRANSIENT_STATUSES.contains(&status) {
        return Verdict::Transient(format!("HTTP {}{}", status.as_u16(), body_summary(body)));
    }
    if status == StatusCode::BAD_REQUEST && body_type(body).as_deref() == Some(urn::BAD_NONCE) {
        return Verdict::BadNonce;
    }
    match garbled(status, headers, body) {
        Some(why) => Verdict::Transient(why),
        None => Verdict::Answer,
    }
}

/// Why a body is not what its `Content-Type` says: JSON that does not parse, a
/// certificate chain that is not PEM certificates.
fn garbled(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Option<String> {
    let content_type = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if content_type.contains("json")
        && !body.is_empty()
        && serde_json::from_slice::<serde::de::IgnoredAny>(body).is_err()
    {
        return Some(format!(
            "HTTP {}: the body is not the JSON it claims to be",
            status.as_u16()
        ));
    }
    if status.is_success() && content_type.starts_with("application/pem-certificate-chain") {
        if let Err(e) = crate::x509::pem_certificates(body) {
            return Some(format!("the certificate download is garbled: {e}"));
        }
    }
    None
}

/// Whether `e` is the CA's problem document of type `urn`.
pub(crate) fn is_problem(e: &instant_acme::Error, urn: &str) -> bool {
    matches!(e, instant_acme::Error::Api(p) if p.r#type.as_deref() == Some(urn))
}

/// A problem that is about the request rather than the name it concerns — a rate limit, a
/// rejected nonce, an account the CA does not know — which the callers handle as such.
pub(crate) fn refusal_is_about_the_request(p: &Problem) -> bool {
    matches!(
        p.r#type.as_deref(),
        Some(urn::RATE_LIMITED | urn::BAD_NONCE | urn::ACCOUNT_DOES_NOT_EXIST | urn::UNAUTHORIZED)
    ) || p.status == Some(429)
}

/// A refusal of the request's content (a 4xx problem, or one without a status), as
/// opposed to a server error.
pub(crate) fn is_client_error(p: &Problem) -> bool {
    p.status.is_none_or(|s| (400..500).contains(&s))
}

/// A problem type meaning the CA does not know our account (any more): the CA was reset,
/// or the account was deactivated elsewhere.
pub(crate) fn account_is_gone(e: &instant_acme::Error) -> bool {
    is_problem(e, urn::ACCOUNT_DOES_NOT_EXIST) || is_problem(e, urn::UNAUTHORIZED)
}

/// A problem document as renewd shows it: `DETAIL (TYPE); SUBPROBLEM…`, bounded.
pub(crate) fn problem_message(p: &Problem) -> String {
    let mut s = p.detail.clone().unwrap_or_else(|| "no detail given".into());
    if let Some(t) = &p.r#type {
        s.push_str(&format!(" ({})", t.trim_start_matches(urn::PREFIX)));
    }
    for sub in &p.subproblems {
        s.push_str(&format!("; {sub}"));
    }
    crate::text::bounded(s, MAX_CA_MESSAGE)
}

/// An error of instant-acme as renewd shows it.
pub(crate) fn acme_message(e: &instant_acme::Error) -> String {
    match e {
        instant_acme::Error::Api(p) => problem_message(p),
        other => error_chain(other),
    }
}

/// An error of instant-acme as renewd reports it: a request refused by the gate, or any
/// failure while the CA is paused at `now`, says until when.
pub(crate) fn ca_error(gate: &Gate, e: &instant_acme::Error, now: SystemTime) -> AcmeError {
    let ca = gate.ca().to_string();
    if is_problem(e, urn::BAD_NONCE) {
        if let Some((n, why)) = gate.transient_streak() {
            return AcmeError::Ca {
                ca,
                message: format!("{why} ({n} unusable answers in a row, then badNonce)"),
            };
        }
    }
    if let instant_acme::Error::Other(inner) = e {
        if let Some(closed) = inner.downcast_ref::<GateClosed>() {
            return AcmeError::Paused {
                ca,
                until: closed.until,
                why: closed.to_string(),
            };
        }
    }
    match (gate.paused(now), e) {
        (Some((until, _)), _) => AcmeError::Paused {
            ca,
            until,
            why: acme_message(e),
        },
        (None, instant_acme::Error::Api(p)) => AcmeError::Refused {
            ca,
            problem: Box::new(p.clone()),
        },
        (None, _) => AcmeError::Ca {
            ca,
            message: acme_message(e),
        },
    }
}

//! Alerts: which conditions hold for the inventory now ([`conditions`]), which of them to
//! send given what was sent before ([`plan`], pure, so it is tested without waiting), and
//! delivery to the `[alert] command` and `webhook` ([`Notifier`]).
//!
//! A condition alerts once when it starts, again every [`REPEAT`] while it persists, and
//! once more (`"status": "resolved"`) when it stops. What was sent lives in
//! `state_dir/alerts.json`, so a restart neither repeats nor forgets an alert.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde::{Deserialize, Serialize};

use super::{from_unix, unix, Item, Kind, SCHEMA_VERSION};
use crate::config::AlertConfig;
use crate::hooks::{self, Hook};
use crate::outbound::{Outbound, ProxySetting};

/// The `persist_record_expiring` alert starts this long before a dns-persist-01 record's
/// configured `persist_until` (and `renewd check` warns from then on).
pub(crate) const PERSIST_RECORD_LEAD: Duration = Duration::from_secs(30 * 86_400);
/// A condition that persists is alerted again after this long.
pub(crate) const REPEAT: Duration = Duration::from_secs(86_400);
/// The alert window is a third of the certificate's lifetime, at most this.
pub(crate) const MAX_WINDOW: Duration = Duration::from_secs(30 * 86_400);
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);
const WEBHOOK_ATTEMPTS: u32 = 3;

/// The alert document: piped to the command's stdin and POSTed to the webhook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Alert {
    pub(crate) version: u32,
    /// `firing` or `resolved`.
    pub(crate) status: String,
    /// `expiring`, `renewal_failing`, `review_overdue`, `rolled_back`,
    /// `ari_early_replacement`, `clock_skew`, `renew_before_too_long`,
    /// `persist_record_expiring` or `trust_anchor`.
    pub(crate) condition: String,
    /// `CONDITION:KIND:ID`, stable while the condition lasts; pairs a resolution with its
    /// alert.
    pub(crate) key: String,
    /// `warning` or `critical`.
    pub(crate) severity: String,
    pub(crate) kind: Kind,
    pub(crate) name: Option<String>,
    pub(crate) paths: Vec<PathBuf>,
    pub(crate) owner: Option<String>,
    pub(crate) service: Option<String>,
    pub(crate) not_after: Option<u64>,
    pub(crate) days_left: Option<i64>,
    pub(crate) review_by: Option<String>,
    pub(crate) message: String,
    /// Unix seconds: when renewd first saw the condition, and when this document was made.
    pub(crate) since: u64,
    pub(crate) sent_at: u64,
    pub(crate) host: String,
}

/// `state_dir/alerts.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct AlertState {
    #[serde(default)]
    pub(crate) active: BTreeMap<String, Sent>,
}

/// A firing condition as remembered: when it was first seen and last sent (Unix seconds),
/// and the document last sent for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Sent {
    pub(crate) first_seen: u64,
    pub(crate) last_sent: u64,
    pub(crate) alert: Alert,
}

impl AlertState {
    /// Where the alert state is kept.
    pub(crate) fn path(state_dir: &Path) -> PathBuf {
        crate::state::alerts_path(state_dir)
    }

    /// A missing or unreadable file is an empty state (logged by the caller's next save);
    /// so is one that is not a regular file, is larger than `fsutil::caps::STATE`, or holds
    /// a time beyond year 9999 (`state::MAX_UNIX`).
    pub(crate) fn load(state_dir: &Path) -> AlertState {
        let path = Self::path(state_dir);
        let read = crate::fsutil::read_regular(
            &path,
            crate::fsutil::caps::STATE,
            crate::fsutil::Follow::No,
        );
        match read {
            Ok(bytes) => match serde_json::from_slice::<AlertState>(&bytes) {
                Ok(st)
                    if st.active.values().all(|s| {
                        s.first_seen <= crate::state::MAX_UNIX
                            && s.last_sent <= crate::state::MAX_UNIX
                    }) =>
                {
                    st
                }
                Ok(_) => {
                    tracing::warn!(path = %path.display(),
                        "alerts.json holds a time beyond year 9999; starting afresh");
                    AlertState::default()
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e,
                        "alerts.json is not readable; starting afresh");
                    AlertState::default()
                }
            },
            Err(e) if e.is_not_found() => AlertState::default(),
            Err(e) => {
                tracing::warn!(error = %e, "alerts.json is not readable; starting afresh");
                AlertState::default()
            }
        }
    }

    /// Writes the state atomically, mode 0600. Errors: the write or rename.
    pub(crate) fn save(&self, state_dir: &Path) -> std::io::Result<()> {
        let bytes = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        crate::fsutil::write_atomic(&Self::path(state_dir), &bytes, 0o600)
    }

    /// The conditions firing for an inventory item.
    pub(crate) fn firing_for(&self, item: &Item) -> Vec<String> {
        let suffix = format!(":{}:{}", item.kind.as_str(), item.id());
        self.active
            .values()
            .filter(|s| s.alert.key.ends_with(&suffix))
            .map(|s| s.alert.condition.clone())
            .collect()
    }
}

/// The default alert window of a managed certificate (renewd renews it; the alert is
/// the safety net): a third of its lifetime, at most 30 days (30 days when the lifetime is
/// unknown).
pub(crate) fn window(not_before: Option<u64>, not_after: Option<u64>) -> Duration {
    match (not_before, not_after) {
        (Some(b), Some(a)) if a > b => Duration::from_secs((a - b) / 3).min(MAX_WINDOW),
        _ => MAX_WINDOW,
    }
}

/// How long before `notAfter` the `expiring` alert of `item` starts: its `alert_before`
/// (a fraction of the lifetime, or a duration) when configured; else, for a managed
/// certificate, [`window`]; for one a person renews (exception, unmanaged), 30 days in
/// absolute terms, so a short-lived certificate alerts for its whole remaining life.
pub(crate) fn lead_time(item: &Item) -> Duration {
    let lifetime = match (item.not_before, item.not_after) {
        (Some(b), Some(a)) if a > b => Some(Duration::from_secs(a - b)),
        _ => None,
    };
    match (item.alert_before, lifetime) {
        (Some(a), Some(l)) => a.margin(l),
        (Some(crate::config::RenewBefore::Duration(d)), None) => d,
        _ if item.kind == Kind::Managed => window(item.not_before, item.not_after),
        _ => MAX_WINDOW,
    }
}

/// A condition holding now.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Condition {
    pub(crate) key: String,
    pub(crate) condition: &'static str,
    pub(crate) severity: &'static str,
    pub(crate) message: String,
    pub(crate) item: Item,
}

/// The first instant after `review_by` (a `YYYY-MM-DD` date): midnight UTC of the next day.
pub(crate) fn review_deadline(review_by: &str) -> Option<u64> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    let date = time::Date::parse(review_by, &format).ok()?;
    let next = date.next_day()?;
    u64::try_from(next.midnight().assume_utc().unix_timestamp()).ok()
}

/// Every condition holding at `now`, and the earliest later instant at which one may
/// start (so the daemon sleeps until then, without polling).
pub(crate) fn conditions(items: &[Item], now: SystemTime) -> (Vec<Condition>, Option<SystemTime>) {
    let now_s = unix(now);
    let mut out = Vec::new();
    let mut next: Option<u64> = None;
    for item in items {
        let mut checks = Checks::new(item, now_s);
        if item.kind == Kind::Anchor {
            checks.trust_anchor();
            out.extend(checks.found);
            continue;
        }
        checks.expiring();
        checks.renewal_failing();
        checks.failed_for_a_person();
        checks.ari_early_replacement();
        if let (Kind::Managed, Some(w)) = (item.kind, &item.renew_before_warning) {
            checks.add(
                "renew_before_too_long",
                "warning",
                format!("{}: {w}", checks.label),
            );
        }
        checks.review_overdue();
        checks.persist_record_expiring();
        checks.revoked();
        out.extend(checks.found);
        next = match (next, checks.next) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    (out, next.map(from_unix))
}

/// The checks of one item at one instant: the conditions found to hold, in the order of
/// the checks, and the earliest later instant (Unix seconds) at which one may start.
struct Checks<'a> {
    item: &'a Item,
    /// "certificate NAME", or "KIND certificate ID" for one renewd does not manage.
    label: String,
    /// Unix seconds.
    now: u64,
    found: Vec<Condition>,
    next: Option<u64>,
}

impl<'a> Checks<'a> {
    fn new(item: &'a Item, now: u64) -> Checks<'a> {
        let label = match &item.name {
            Some(n) => format!("certificate {n}"),
            None => format!("{} certificate {}", item.kind.as_str(), item.id()),
        };
        Checks {
            item,
            label,
            now,
            found: Vec::new(),
            next: None,
        }
    }

    fn add(&mut self, condition: &'static str, severity: &'static str, message: String) {
        self.found.push(Condition {
            key: format!("{condition}:{}:{}", self.item.kind.as_str(), self.item.id()),
            condition,
            severity,
            message,
            item: self.item.clone(),
        })
    }

    /// Notes `t` (Unix seconds) as an instant a condition may start, if it is still ahead.
    fn later(&mut self, t: u64) {
        if t > self.now {
            self.next = Some(self.next.map_or(t, |n| n.min(t)));
        }
    }

    /// Expired, or within the lead time of its notAfter (critical for a certificate renewd
    /// does not renew, a warning for one it does).
    fn expiring(&mut self) {
        let (item, label) = (self.item, &self.label);
        let Some(na) = item.not_after else {
            return;
        };
        let start = na.saturating_sub(lead_time(item).as_secs());
        if self.now >= na {
            let message = format!("{label} expired at {}", rfc3339(na));
            self.add("expiring", "critical", message);
        } else if self.now >= start {
            let severity = if item.kind == Kind::Managed {
                "warning"
            } else {
                "critical"
            };
            let message = format!(
                "{label} expires at {} ({} day(s) left)",
                rfc3339(na),
                item.days_left.unwrap_or(0)
            );
            self.add("expiring", severity, message);
            self.later(na);
        } else {
            self.later(start);
        }
    }

    /// Renewals keep failing and less than a third of the margin before notAfter is left
    /// (or nothing usable is deployed, or there is no margin at all).
    fn renewal_failing(&mut self) {
        let (item, label) = (self.item, &self.label);
        let failures = item.consecutive_failures.unwrap_or(0);
        if item.kind != Kind::Managed || failures == 0 {
            return;
        }
        let why = item.last_failure.clone().unwrap_or_default();
        match (item.not_after, item.renew_at, &item.problem) {
            (Some(na), Some(from), None) if na > from => {
                let third = na - (na - from) / 3;
                if self.now >= third {
                    let message = format!(
                        "{label}: renewal has failed {failures} time(s) and less than a third \
                         of its margin is left: {why}"
                    );
                    self.add("renewal_failing", "critical", message);
                } else {
                    self.later(third);
                }
            }
            // Nothing usable deployed, or no margin at all: no margin is left.
            _ => {
                let message = format!(
                    "{label}: renewal has failed {failures} time(s) and no margin is left: {why}"
                );
                self.add("renewal_failing", "critical", message);
            }
        }
    }

    /// Last failures only a person can fix: the renewal refused to order because this
    /// host's clock disagrees with the CA's (see `renew::clock_problem`: fix NTP), or a new
    /// certificate was rolled back.
    fn failed_for_a_person(&mut self) {
        let (item, label) = (self.item, self.label.clone());
        let Some(why) = item
            .last_failure
            .as_ref()
            .filter(|_| item.kind == Kind::Managed)
        else {
            return;
        };
        if why.starts_with("the local clock is off by") {
            let message = format!("{label}: not renewed: {why}");
            self.add("clock_skew", "critical", message);
        }
        if why.contains("rolled back") {
            let message = format!("{label}: a new certificate was rolled back: {why}");
            self.add("rolled_back", "critical", message);
        }
    }

    /// The CA's ARI advice (RFC 9773), only when a person must act on it: the window moved
    /// earlier than the CA first advised, or ends before the `renew_before` point (the CA
    /// wants it replaced sooner than the user's policy would), or the CA explains itself. A
    /// normal window (Pebble's, Let's Encrypt's: around the 1/3 point) is not a signal.
    fn ari_early_replacement(&mut self) {
        let item = self.item;
        let (Kind::Managed, Some(start), Some(end)) =
            (item.kind, item.ari_window_start, item.ari_window_end)
        else {
            return;
        };
        let mut why = Vec::new();
        if let Some(first) = item.ari_first_start.filter(|f| start < *f) {
            why.push(format!(
                "the window moved earlier than the CA first advised (from {} to {})",
                rfc3339(first),
                rfc3339(start)
            ));
        }
        if let Some(from) = item.renew_at.filter(|f| end < *f) {
            why.push(format!(
                "the window ends at {}, before renew_before would renew it ({})",
                rfc3339(end),
                rfc3339(from)
            ));
        }
        if let Some(url) = &item.ari_explanation {
            why.push(format!("the CA explains: {url}"));
        }
        if !why.is_empty() {
            let message = format!(
                "{}: the CA asks for replacement from {} (ARI): {}",
                self.label,
                rfc3339(start),
                why.join("; ")
            );
            self.add("ari_early_replacement", "warning", message);
        }
    }

    /// A dns-persist-01 record's configured `persist_until` (draft-ietf-acme-dns-persist
    /// `persistUntil`) is within [`PERSIST_RECORD_LEAD`] or has passed: after it the CA
    /// ignores the record and renewals fail until a new one is published.
    fn persist_record_expiring(&mut self) {
        let Some(until) = self
            .item
            .persist_until
            .filter(|_| self.item.kind == Kind::Managed)
        else {
            return;
        };
        let start = until.saturating_sub(PERSIST_RECORD_LEAD.as_secs());
        if self.now >= start {
            let verb = if self.now >= until {
                "passed"
            } else {
                "passes"
            };
            let message = format!(
                "{}: the dns-persist-01 record's persistUntil {} {verb}; publish a new record \
                 (`renewd persist-record`) with a later `persist_until`",
                self.label,
                rfc3339(until)
            );
            self.add("persist_record_expiring", "warning", message);
        } else {
            self.later(start);
        }
    }

    /// A trust anchor the audit flagged (`renewd trust-audit`, `[trust]`): critical when it
    /// has expired, else a warning. Its next change is the daemon's audit's to say.
    fn trust_anchor(&mut self) {
        let item = self.item;
        let severity = if item.anchor_flags.contains(&"expired") {
            "critical"
        } else {
            "warning"
        };
        let message = format!(
            "trust anchor \"{}\" in {} is flagged {}: {}{}",
            item.subject.as_deref().unwrap_or(""),
            item.paths
                .first()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            item.anchor_flags.join(", "),
            item.reason.as_deref().unwrap_or(""),
            match &item.review_by {
                Some(r) => format!(" (its exception's review was due by {r})"),
                None => String::new(),
            }
        );
        self.add("trust_anchor", severity, message);
    }

    /// The certificate is revoked (OCSP or CRL said so: `crate::revocation`): critical
    /// whatever its kind — its clients may refuse it now. A managed one is being replaced.
    fn revoked(&mut self) {
        let item = self.item;
        if item.revocation != Some(super::RevocationStatus::Revoked) {
            return;
        }
        let mut message = format!(
            "{}: revoked (said by {}{})",
            self.label,
            item.revocation_source.map_or("?", |s| s.as_str()),
            item.revocation_checked_at
                .as_deref()
                .map(|t| format!(", checked {t}"))
                .unwrap_or_default()
        );
        if let Some(d) = &item.revocation_detail {
            message.push_str(&format!("; {d}"));
        }
        if item.kind == Kind::Managed {
            message.push_str("; renewd replaces it with a new certificate and key");
        }
        self.add("revoked", "critical", message);
    }

    /// The exception's `review_by` date has passed.
    fn review_overdue(&mut self) {
        let item = self.item;
        let Some(review_by) = &item.review_by else {
            return;
        };
        let Some(deadline) = review_deadline(review_by) else {
            return;
        };
        if self.now >= deadline {
            let message = format!("{}: exception review was due by {review_by}", self.label);
            self.add("review_overdue", "warning", message);
        } else {
            self.later(deadline);
        }
    }
}

/// What to send now and the state to keep afterwards.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Plan {
    pub(crate) send: Vec<Alert>,
    pub(crate) state: AlertState,
    /// When the alerts next need evaluating (a condition may start, or one to repeat).
    pub(crate) next: Option<SystemTime>,
}

/// Decides, from what was sent before, which alerts and resolutions to send for `items`.
/// Each key is planned once per pass, whatever produced it: when two items yield a
/// condition with the same key (the same anchor twice, a certificate listed twice), the
/// first is kept and the others are dropped, so one condition is one document.
pub(crate) fn plan(prev: &AlertState, items: &[Item], now: SystemTime, host: &str) -> Plan {
    let now_s = unix(now);
    let (current, mut next) = conditions(items, now);
    let mut state = AlertState::default();
    let mut send = Vec::new();
    for c in current {
        if state.active.contains_key(&c.key) {
            continue;
        }
        let i = &c.item;
        let (first_seen, last_sent) = match prev.active.get(&c.key) {
            Some(s) => (s.first_seen, Some(s.last_sent)),
            None => (now_s, None),
        };
        let alert = Alert {
            version: SCHEMA_VERSION,
            status: "firing".into(),
            condition: c.condition.into(),
            key: c.key.clone(),
            severity: c.severity.into(),
            kind: i.kind,
            name: i.name.clone(),
            paths: i.paths.clone(),
            owner: i.owner.clone(),
            service: i.service.clone(),
            not_after: i.not_after,
            days_left: i.days_left,
            review_by: i.review_by.clone(),
            message: c.message.clone(),
            since: first_seen,
            sent_at: now_s,
            host: host.to_string(),
        };
        let due = match last_sent {
            None => true,
            Some(t) => now_s >= t.saturating_add(REPEAT.as_secs()),
        };
        let sent = match prev.active.get(&c.key) {
            // Kept as it was, so an unchanged state is not rewritten.
            Some(s) if !due => s.clone(),
            _ => {
                send.push(alert.clone());
                Sent {
                    first_seen,
                    last_sent: now_s,
                    alert,
                }
            }
        };
        let repeat = from_unix(sent.last_sent.saturating_add(REPEAT.as_secs()));
        next = Some(next.map_or(repeat, |n| n.min(repeat)));
        state.active.insert(c.key, sent);
    }
    for (key, old) in &prev.active {
        if !state.active.contains_key(key) {
            let mut resolved = old.alert.clone();
            resolved.status = "resolved".into();
            resolved.message = format!("resolved: {}", old.alert.message);
            resolved.sent_at = now_s;
            resolved.host = host.to_string();
            send.push(resolved);
        }
    }
    Plan { send, state, next }
}

/// Delivers alert documents to the configured command and webhook.
#[derive(Clone)]
pub(crate) struct Notifier {
    config: AlertConfig,
    /// The webhook's client: the system's trust roots, `HTTPS_PROXY`/`NO_PROXY` honoured; or
    /// why there is none (an unusable `HTTPS_PROXY`), said at each webhook delivery while the
    /// command still gets its alerts.
    client: Arc<Result<Outbound<Full<Bytes>>, WebhookError>>,
}

/// Why the alert webhook could not be used, or did not take an alert (logged, never fatal:
/// the command still gets its alerts).
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum WebhookError {
    /// rustls refused its default protocol versions.
    #[error("{0}")]
    Tls(#[from] rustls::Error),
    /// The HTTPS client could not be built (an unusable `HTTPS_PROXY`, credentials never
    /// shown); said at each delivery.
    #[error("cannot send to the alert webhook: {0}")]
    Client(String),
    /// The request could not be built from the configured URL.
    #[error("{0}")]
    Request(String),
    /// Connecting, the proxy, TLS or HTTP failed.
    #[error("{0}")]
    Exchange(String),
    /// The webhook answered with a status other than 2xx (RFC 9110 §15.3).
    #[error("answered {0}")]
    Status(http::StatusCode),
    /// No answer within the per-attempt timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

impl Notifier {
    /// Errors: TLS set-up. An `HTTPS_PROXY` that is not `http://[user:pass@]host[:port]`
    /// fails each webhook delivery instead, saying so (credentials never shown).
    pub(crate) fn new(config: AlertConfig) -> Result<Notifier, WebhookError> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in &crate::outbound::system_roots().certs {
            let _ = roots.add(cert.clone());
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let client = Outbound::new(
            tls,
            WEBHOOK_TIMEOUT,
            false,
            ProxySetting::Environment,
            Duration::from_secs(90),
        )
        .map_err(|e| WebhookError::Client(e.to_string()));
        if let Err(e) = &client {
            tracing::error!(error = %e, "alert webhook unusable");
        }
        Ok(Notifier {
            config,
            client: Arc::new(client),
        })
    }

    /// Sends one alert to every configured channel; each failure is logged.
    pub(crate) async fn deliver(&self, alert: &Alert) {
        let json = match serde_json::to_vec(alert) {
            Ok(j) => j,
            Err(e) => {
                tracing::error!(error = %e, "cannot encode alert");
                return;
            }
        };
        // The message and key quote subjects and paths from files: escaped, so a newline
        // in a certificate's subject cannot forge a log line.
        let key = crate::text::escape(&alert.key);
        tracing::warn!(key = %key, status = %alert.status, "alert: {}",
            crate::text::escape(&alert.message));
        if let Some(argv) = &self.config.command {
            let hook = Hook {
                argv: argv.clone(),
                env: vec![
                    ("RENEWD_ALERT_STATUS".into(), alert.status.clone()),
                    ("RENEWD_ALERT_CONDITION".into(), alert.condition.clone()),
                ],
                timeout: COMMAND_TIMEOUT,
            };
            if let Err(e) = hooks::run_with_input(&hook, json.clone()).await {
                tracing::error!(key = %key, error = %crate::text::escape(&e.to_string()),
                    "alert command failed");
            }
        }
        if let Some(url) = &self.config.webhook {
            if let Err(e) = self.post(url, &json).await {
                tracing::error!(key = %key, url = %url, error = %e,
                    "alert webhook failed after {WEBHOOK_ATTEMPTS} attempts");
            }
        }
    }

    async fn post(&self, url: &str, json: &[u8]) -> Result<(), WebhookError> {
        let client = self.client.as_ref().as_ref().map_err(Clone::clone)?;
        let mut last = WebhookError::Timeout(WEBHOOK_TIMEOUT);
        for attempt in 0..WEBHOOK_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_secs(1 << (attempt - 1))).await;
            }
            let req = http::Request::post(url)
                .header(http::header::CONTENT_TYPE, "application/json")
                .header(
                    http::header::USER_AGENT,
                    concat!("renewd/", env!("CARGO_PKG_VERSION")),
                )
                .body(Full::new(Bytes::copy_from_slice(json)))
                .map_err(|e| WebhookError::Request(e.to_string()))?;
            let exchange = async {
                let rsp = client
                    .request(req)
                    .await
                    .map_err(|e| WebhookError::Exchange(e.to_string()))?;
                let status = rsp.status();
                let _ = rsp.into_body().collect().await;
                if status.is_success() {
                    Ok(())
                } else {
                    Err(WebhookError::Status(status))
                }
            };
            match tokio::time::timeout(WEBHOOK_TIMEOUT, exchange).await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(e)) => last = e,
                Err(_) => last = WebhookError::Timeout(WEBHOOK_TIMEOUT),
            }
        }
        Err(last)
    }
}

fn rfc3339(t: u64) -> String {
    crate::text::rfc3339(from_unix(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 86_400;

    fn unmanaged(path: &str, not_before: u64, not_after: u64, now: u64) -> Item {
        Item {
            paths: vec![PathBuf::from(path)],
            not_before: Some(not_before),
            not_after: Some(not_after),
            days_left: Some((not_after as i64 - now as i64) / DAY as i64),
            ..Item::blank(Kind::Unmanaged)
        }
    }

    #[test]
    fn a_persist_record_alerts_thirty_days_before_its_persist_until() {
        let t0 = 1_000 * DAY;
        let item = Item {
            name: Some("www".into()),
            persist_until: Some(t0 + 40 * DAY),
            ..Item::blank(Kind::Managed)
        };
        let (found, next) = conditions(std::slice::from_ref(&item), from_unix(t0));
        assert!(found.is_empty());
        assert_eq!(next, Some(from_unix(t0 + 10 * DAY)));
        let (found, _) = conditions(std::slice::from_ref(&item), from_unix(t0 + 10 * DAY));
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].condition, "persist_record_expiring");
        assert_eq!(found[0].severity, "warning");
        assert!(found[0].message.contains("passes"), "{}", found[0].message);
        let (found, _) = conditions(std::slice::from_ref(&item), from_unix(t0 + 41 * DAY));
        assert!(found[0].message.contains("passed"), "{}", found[0].message);
    }

    #[test]
    fn window_is_a_third_of_the_lifetime_capped_at_thirty_days() {
        assert_eq!(window(Some(0), Some(90 * DAY)), MAX_WINDOW);
        assert_eq!(
            window(Some(0), Some(30 * DAY)),
            Duration::from_secs(10 * DAY)
        );
        assert_eq!(window(None, Some(5)), MAX_WINDOW);
    }

    #[test]
    fn alerts_once_repeats_after_a_day_and_resolves() {
        let t0 = 1_000 * DAY;
        let item = unmanaged("/etc/ssl/a.pem", t0 - 85 * DAY, t0 + 5 * DAY, t0);
        let p1 = plan(
            &AlertState::default(),
            std::slice::from_ref(&item),
            from_unix(t0),
            "h",
        );
        assert_eq!(p1.send.len(), 1);
        assert_eq!(p1.send[0].condition, "expiring");
        assert_eq!(p1.send[0].status, "firing");
        assert_eq!(p1.next, Some(from_unix(t0 + DAY)));
        // An hour later: nothing new.
        let p2 = plan(
            &p1.state,
            std::slice::from_ref(&item),
            from_unix(t0 + 3600),
            "h",
        );
        assert!(p2.send.is_empty(), "{:?}", p2.send);
        // A day later: again, with the original `since`.
        let p3 = plan(
            &p2.state,
            std::slice::from_ref(&item),
            from_unix(t0 + DAY),
            "h",
        );
        assert_eq!(p3.send.len(), 1);
        assert_eq!(p3.send[0].since, t0);
        // The certificate was replaced: resolved, once.
        let fresh = unmanaged("/etc/ssl/a.pem", t0, t0 + 90 * DAY, t0 + DAY + 1);
        let p4 = plan(
            &p3.state,
            std::slice::from_ref(&fresh),
            from_unix(t0 + DAY + 1),
            "h",
        );
        assert_eq!(p4.send.len(), 1);
        assert_eq!(p4.send[0].status, "resolved");
        assert!(p4.state.active.is_empty());
        // Next relevant time: when the fresh one enters its window.
        assert_eq!(p4.next, Some(from_unix(t0 + 60 * DAY)));
        let p5 = plan(&p4.state, &[fresh], from_unix(t0 + DAY + 2), "h");
        assert!(p5.send.is_empty());
    }

    #[test]
    fn overdue_review_starts_the_day_after_review_by() {
        let mut item = unmanaged("/etc/legacy.pem", 0, u64::MAX / 4, 0);
        item.kind = Kind::Exception;
        item.review_by = Some("2026-03-01".into());
        let deadline = review_deadline("2026-03-01").expect("date");
        let (c, next) = conditions(std::slice::from_ref(&item), from_unix(deadline - 1));
        assert!(c.is_empty());
        assert_eq!(next, Some(from_unix(deadline)));
        let (c, _) = conditions(&[item], from_unix(deadline));
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].condition, "review_overdue");
    }

    #[test]
    fn failing_renewal_alerts_in_the_last_third_of_its_margin() {
        let mut item = unmanaged("/x", 0, 90 * DAY, 0);
        item.kind = Kind::Managed;
        item.name = Some("www".into());
        item.renew_at = Some(60 * DAY);
        item.consecutive_failures = Some(2);
        item.last_failure = Some("CA said no".into());
        let (c, next) = conditions(std::slice::from_ref(&item), from_unix(61 * DAY));
        assert!(c.iter().all(|c| c.condition != "renewal_failing"), "{c:?}");
        assert_eq!(next, Some(from_unix(80 * DAY)));
        let (c, _) = conditions(std::slice::from_ref(&item), from_unix(80 * DAY));
        assert!(c.iter().any(|c| c.condition == "renewal_failing"));
        item.last_failure = Some("reload failed; previous files rolled back".into());
        let (c, _) = conditions(&[item], from_unix(61 * DAY));
        assert!(c.iter().any(|c| c.condition == "rolled_back"));
    }

    #[test]
    fn ari_alerts_only_for_what_a_person_must_act_on() {
        let early = |item: &Item| -> Vec<String> {
            let (c, _) = conditions(std::slice::from_ref(item), from_unix(DAY));
            c.into_iter()
                .filter(|c| c.condition == "ari_early_replacement")
                .map(|c| c.message)
                .collect()
        };
        let mut item = unmanaged("/x", 0, 90 * DAY, 0);
        item.kind = Kind::Managed;
        item.name = Some("www".into());
        item.renew_at = Some(60 * DAY);
        // Pebble's normal window for a 90-day certificate: a day either side of the 1/3
        // point, so it starts before renew_before's point. Business as usual, no alert.
        item.ari_window_start = Some(59 * DAY);
        item.ari_window_end = Some(61 * DAY);
        item.ari_first_start = Some(59 * DAY);
        assert!(early(&item).is_empty(), "{:?}", early(&item));
        // The window moved earlier than first advised.
        item.ari_window_start = Some(DAY);
        let m = early(&item);
        assert_eq!(m.len(), 1);
        assert!(
            m[0].contains("moved earlier than the CA first advised"),
            "{m:?}"
        );
        // It ends before renew_before's point.
        item.ari_first_start = Some(DAY);
        item.ari_window_end = Some(2 * DAY);
        let m = early(&item);
        assert!(m[0].contains("before renew_before would renew it"), "{m:?}");
        // An explanation is always worth a look.
        item.ari_window_start = Some(59 * DAY);
        item.ari_window_end = Some(61 * DAY);
        item.ari_first_start = Some(59 * DAY);
        item.ari_explanation = Some("https://ca.example/incident".into());
        let m = early(&item);
        assert!(m[0].contains("https://ca.example/incident"), "{m:?}");
    }

    #[test]
    fn certificates_a_person_renews_get_lead_time_in_absolute_terms() {
        let t0 = 1_000 * DAY;
        let expiring = |item: &Item| {
            let (c, next) = conditions(std::slice::from_ref(item), from_unix(t0));
            (c.iter().any(|c| c.condition == "expiring"), next)
        };
        // A 5-day unmanaged certificate with 5 days left: its whole life is inside 30 days.
        let five = unmanaged("/etc/ssl/short.pem", t0, t0 + 5 * DAY, t0);
        assert!(expiring(&five).0);
        // Managed, the same certificate alerts only in its last third (renewd renews it).
        let mut managed = five.clone();
        managed.kind = Kind::Managed;
        managed.name = Some("short".into());
        assert_eq!(
            expiring(&managed),
            (false, Some(from_unix(t0 + 5 * DAY - 5 * DAY / 3)))
        );
        // alert_before, as a duration or a fraction.
        let mut item = unmanaged("/etc/ssl/a.pem", t0 - 10 * DAY, t0 + 80 * DAY, t0);
        item.alert_before = Some(crate::config::RenewBefore::Duration(Duration::from_secs(
            7 * DAY,
        )));
        assert_eq!(expiring(&item), (false, Some(from_unix(t0 + 73 * DAY))));
        item.alert_before = Some(crate::config::RenewBefore::Fraction(0.5));
        assert_eq!(expiring(&item), (false, Some(from_unix(t0 + 35 * DAY))));
        item.alert_before = None;
        assert_eq!(expiring(&item), (false, Some(from_unix(t0 + 50 * DAY))));
    }

    #[test]
    fn a_wrong_host_clock_alerts_as_clock_skew() {
        let mut item = unmanaged("/x", 0, 90 * DAY, 0);
        item.kind = Kind::Managed;
        item.name = Some("www".into());
        item.consecutive_failures = Some(1);
        item.last_failure = Some(crate::renew::clock_problem("le", Some(-1200)).expect("off"));
        let (c, _) = conditions(std::slice::from_ref(&item), from_unix(DAY));
        let skew: Vec<_> = c.iter().filter(|c| c.condition == "clock_skew").collect();
        assert_eq!(skew.len(), 1, "{c:?}");
        assert!(
            skew[0].message.contains("local clock is off by 20m"),
            "{c:?}"
        );
        item.last_failure = Some("CA said no".into());
        let (c, _) = conditions(&[item], from_unix(DAY));
        assert!(c.iter().all(|c| c.condition != "clock_skew"), "{c:?}");
    }

    #[test]
    fn a_clamped_renew_before_alerts() {
        let mut item = unmanaged("/x", 0, 6 * DAY, 0);
        item.kind = Kind::Managed;
        item.name = Some("short".into());
        item.renew_before_warning = Some("renew_before (30d) is longer".into());
        let (c, _) = conditions(&[item], from_unix(DAY));
        assert!(
            c.iter().any(|c| c.condition == "renew_before_too_long"),
            "{c:?}"
        );
    }

    /// The same condition key from several items (one anchor repeated in a bundle, before
    /// the audit merged them; a file listed twice) is one document per pass, not one per
    /// item, and one resolution when it stops.
    #[test]
    fn one_key_is_one_document_per_pass_whatever_produced_it() {
        let t0 = 1_000 * DAY;
        let mut anchor = Item::blank(Kind::Anchor);
        anchor.name = Some("/etc/ca.pem@sha256:00".into());
        anchor.paths = vec![PathBuf::from("/etc/ca.pem")];
        anchor.anchor_flags = vec!["expired"];
        let expiring = unmanaged("/etc/ssl/a.pem", t0 - 85 * DAY, t0 + 5 * DAY, t0);
        let mut items = vec![anchor.clone(); 500];
        items.extend(vec![expiring.clone(); 3]);
        let p1 = plan(&AlertState::default(), &items, from_unix(t0), "h");
        let keys: Vec<&str> = p1.send.iter().map(|a| a.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "trust_anchor:anchor:/etc/ca.pem@sha256:00",
                "expiring:unmanaged:/etc/ssl/a.pem"
            ]
        );
        assert_eq!(p1.state.active.len(), 2);
        let p2 = plan(&p1.state, &items, from_unix(t0 + 60), "h");
        assert!(p2.send.is_empty(), "{:?}", p2.send);
        let p3 = plan(&p2.state, &[], from_unix(t0 + 120), "h");
        assert_eq!(p3.send.len(), 2);
        assert!(p3.send.iter().all(|a| a.status == "resolved"));
    }
}

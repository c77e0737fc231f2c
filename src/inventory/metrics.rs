//! The Prometheus metrics of SPEC, kept in a `prometheus-client` registry and served on
//! `[metrics] listen` at `/metrics`, in the format the scraper asks for ([`Metrics::render`]):
//! OpenMetrics 1.0 when its `Accept` prefers `application/openmetrics-text`, else the classic
//! text format 0.0.4 (what `curl` and `promtool check metrics` read).
//!
//! Gauges describe the inventory as last evaluated (each family is rebuilt whole, so a
//! certificate that is gone disappears from the exposition); counters count since start.
//! Label values are names, paths and members of fixed sets — never counts or free text, so
//! the number of series stays that of the certificates.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Metric, Registry};

use super::{Inventory, Kind};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CertLabels {
    name: String,
    owner: String,
    service: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NextLabels {
    name: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    name: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NameLabels {
    name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CaLabels {
    ca: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InventoryLabels {
    path: String,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReviewLabels {
    path: String,
    owner: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AnchorLabels {
    path: String,
    fingerprint: String,
    flag: String,
}

/// renewd's metrics. Cloning shares them.
#[derive(Clone)]
pub(crate) struct Metrics {
    registry: Arc<Registry>,
    not_after: Family<CertLabels, Gauge>,
    next_renewal: Family<NextLabels, Gauge>,
    renewals: Family<ResultLabels, Counter>,
    failures: Family<NameLabels, Gauge>,
    reloads: Family<ReloadLabels, Counter>,
    inventory: Family<InventoryLabels, Gauge>,
    review_by: Family<ReviewLabels, Gauge>,
    last_success: Family<NameLabels, Gauge>,
    ca_paused: Family<CaLabels, Gauge>,
    build_info: Family<VersionLabels, Gauge>,
    trust_flagged: Family<AnchorLabels, Gauge>,
    revoked: Family<InventoryLabels, Gauge>,
}

/// Content type of the classic Prometheus text format.
pub(crate) const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Content type of OpenMetrics 1.0 text.
pub(crate) const OPENMETRICS_FORMAT: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The `reason` label of `renewd_certificate_next_renewal_seconds`: one of a fixed set, whatever
/// the details of the reason (paths, names, failure counts) — `schedule::Reason`'s kinds.
pub(crate) fn reason_label(reason: &str) -> &'static str {
    const KNOWN: &[(&str, &str)] = &[
        ("deployed set unusable", "deployed set unusable"),
        ("names not covered", "names not covered"),
        ("renew_before threshold", "renew_before threshold"),
        ("ARI window", "ARI window"),
        ("retry after", "retry"),
        ("revoked", "revoked"),
    ];
    KNOWN
        .iter()
        .find(|(prefix, _)| reason.starts_with(prefix))
        .map_or("other", |(_, label)| label)
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every family of SPEC registered, `renewd_build_info` set, and both `renewd_reloads`
    /// results at zero.
    pub(crate) fn new() -> Metrics {
        let mut r = Registry::default();
        let m = Metrics {
            registry: Arc::new(Registry::default()),
            not_after: Family::default(),
            next_renewal: Family::default(),
            renewals: Family::default(),
            failures: Family::default(),
            reloads: Family::default(),
            inventory: Family::default(),
            review_by: Family::default(),
            last_success: Family::default(),
            ca_paused: Family::default(),
            build_info: Family::default(),
            trust_flagged: Family::default(),
            revoked: Family::default(),
        };
        // Name, HELP and metric of each family, in the order of the exposition.
        // prometheus-client appends `_total` to counters.
        let families: [(&str, &str, Box<dyn Metric>); 12] = [
            (
                "renewd_certificate_not_after_seconds",
                "Expiry of each managed certificate, Unix seconds",
                Box::new(m.not_after.clone()),
            ),
            (
                "renewd_certificate_next_renewal_seconds",
                "When each managed certificate is next renewed, Unix seconds, and why",
                Box::new(m.next_renewal.clone()),
            ),
            (
                "renewd_renewals",
                "Renewals attempted, by certificate and result (success, failure)",
                Box::new(m.renewals.clone()),
            ),
            (
                "renewd_renewal_consecutive_failures",
                "Consecutive failed renewals of each managed certificate",
                Box::new(m.failures.clone()),
            ),
            (
                "renewd_reloads",
                "Reload commands run, by result (success, failure)",
                Box::new(m.reloads.clone()),
            ),
            (
                "renewd_inventory_not_after_seconds",
                "Expiry of every known certificate file, by kind (managed, exception, unmanaged)",
                Box::new(m.inventory.clone()),
            ),
            (
                "renewd_exception_review_by_seconds",
                "When each exception must be reviewed, Unix seconds",
                Box::new(m.review_by.clone()),
            ),
            (
                "renewd_certificate_last_success_seconds",
                "When each managed certificate was last renewed successfully, Unix seconds",
                Box::new(m.last_success.clone()),
            ),
            (
                "renewd_ca_paused",
                "1 while renewd sends a CA nothing (rate limit or long Retry-After), else 0",
                Box::new(m.ca_paused.clone()),
            ),
            (
                "renewd_build_info",
                "Always 1; the running renewd's version in the label",
                Box::new(m.build_info.clone()),
            ),
            (
                "renewd_trust_anchor_flagged",
                "1 for each flag of each flagged trust anchor ([trust]; acknowledged ones not listed)",
                Box::new(m.trust_flagged.clone()),
            ),
            (
                "renewd_certificate_revoked",
                "1 when a known certificate is revoked (OCSP or CRL), else 0, by path and kind",
                Box::new(m.revoked.clone()),
            ),
        ];
        for (name, help, metric) in families {
            r.register(name, help, Registered(metric));
        }
        m.build_info
            .get_or_create(&VersionLabels {
                version: env!("CARGO_PKG_VERSION").into(),
            })
            .set(1);
        // Both results exist from the start, so a rate() over them works before the first
        // reload.
        for ok in [true, false] {
            let _ = m
                .reloads
                .get_or_create(&ReloadLabels { result: result(ok) });
        }
        Metrics {
            registry: Arc::new(r),
            ..m
        }
    }

    /// `renewd_certificate_revoked` of one certificate: 1 revoked, 0 otherwise (good or
    /// unknown), at each file holding it; nothing when it could not be read.
    fn set_revoked(&self, i: &super::Item) {
        let Some(status) = i.revocation else {
            return;
        };
        let paths = match (&i.kind, &i.cert_path) {
            (Kind::Managed, Some(p)) => std::slice::from_ref(p),
            _ => &i.paths[..],
        };
        for p in paths {
            self.revoked
                .get_or_create(&InventoryLabels {
                    path: p.display().to_string(),
                    kind: i.kind.as_str().into(),
                })
                .set(i64::from(status == super::RevocationStatus::Revoked));
        }
    }

    /// Replaces the gauges with what `inv` says.
    pub(crate) fn update(&self, inv: &Inventory) {
        self.not_after.clear();
        self.next_renewal.clear();
        self.failures.clear();
        self.inventory.clear();
        self.review_by.clear();
        self.last_success.clear();
        self.trust_flagged.clear();
        for a in &inv.anchors {
            let fingerprint = a.name.as_deref().and_then(|n| n.rsplit('@').next());
            for flag in &a.anchor_flags {
                self.trust_flagged
                    .get_or_create(&AnchorLabels {
                        path: a
                            .paths
                            .first()
                            .map(|p| p.display().to_string())
                            .unwrap_or_default(),
                        fingerprint: fingerprint.unwrap_or_default().to_string(),
                        flag: flag.to_string(),
                    })
                    .set(1);
            }
        }
        self.revoked.clear();
        let secs = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        for i in &inv.certificates {
            self.set_revoked(i);
            if let Some(na) = i.not_after {
                // A managed certificate is listed at the file holding it (not its key).
                let paths = match (&i.kind, &i.cert_path) {
                    (Kind::Managed, Some(p)) => vec![p.display().to_string()],
                    _ => i.locations(),
                };
                for p in paths {
                    self.inventory
                        .get_or_create(&InventoryLabels {
                            path: p,
                            kind: i.kind.as_str().into(),
                        })
                        .set(secs(na));
                }
            }
            match i.kind {
                Kind::Managed => {
                    let name = i.name.clone().unwrap_or_default();
                    if let Some(na) = i.not_after {
                        self.not_after
                            .get_or_create(&CertLabels {
                                name: name.clone(),
                                owner: i.owner.clone().unwrap_or_default(),
                                service: i.service.clone().unwrap_or_default(),
                            })
                            .set(secs(na));
                    }
                    if let (Some(t), Some(reason)) = (i.next_renewal, &i.next_renewal_reason) {
                        self.next_renewal
                            .get_or_create(&NextLabels {
                                name: name.clone(),
                                reason: reason_label(reason).to_string(),
                            })
                            .set(secs(t));
                    }
                    if let Some(t) = i.last_success {
                        self.last_success
                            .get_or_create(&NameLabels { name: name.clone() })
                            .set(secs(t));
                    }
                    self.failures
                        .get_or_create(&NameLabels { name })
                        .set(i64::from(i.consecutive_failures.unwrap_or(0)));
                }
                Kind::Exception => {
                    if let Some(t) = i.review_by.as_deref().and_then(review_start) {
                        self.review_by
                            .get_or_create(&ReviewLabels {
                                path: i.id(),
                                owner: i.owner.clone().unwrap_or_default(),
                            })
                            .set(t);
                    }
                }
                Kind::Unmanaged | Kind::Anchor => {}
            }
        }
    }

    /// Counts one renewal attempt of certificate `name` (`renewd_renewals_total`).
    pub(crate) fn renewal(&self, name: &str, ok: bool) {
        self.renewals
            .get_or_create(&ResultLabels {
                name: name.into(),
                result: result(ok),
            })
            .inc();
    }

    /// Counts one reload command run (`renewd_reloads_total`).
    pub(crate) fn reload(&self, ok: bool) {
        self.reloads
            .get_or_create(&ReloadLabels { result: result(ok) })
            .inc();
    }

    /// Replaces `renewd_ca_paused` with one series per configured CA: `(name, paused)`.
    pub(crate) fn set_ca_paused<'a>(&self, cas: impl IntoIterator<Item = (&'a str, bool)>) {
        self.ca_paused.clear();
        for (ca, paused) in cas {
            self.ca_paused
                .get_or_create(&CaLabels { ca: ca.into() })
                .set(i64::from(paused));
        }
    }

    /// The OpenMetrics 1.0 text exposition.
    pub(crate) fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        out
    }

    /// The exposition for a scrape whose `Accept` header is `accept`: `(content type, body)`.
    /// OpenMetrics when the scraper prefers `application/openmetrics-text` (Prometheus
    /// does), else the classic text format 0.0.4 (no `Accept`, `text/plain`, `*/*`).
    pub(crate) fn render(&self, accept: Option<&str>) -> (&'static str, String) {
        let om = self.encode();
        if wants_openmetrics(accept) {
            (OPENMETRICS_FORMAT, om)
        } else {
            (TEXT_FORMAT, openmetrics_to_text(&om))
        }
    }
}

/// A family of the table in [`Metrics::new`], whatever its type.
#[derive(Debug)]
struct Registered(Box<dyn Metric>);

impl EncodeMetric for Registered {
    fn encode(&self, encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        self.0.encode(encoder)
    }

    fn metric_type(&self) -> MetricType {
        self.0.metric_type()
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Whether an `Accept` header value ranks `application/openmetrics-text` above the classic
/// `text/plain` (q-values of RFC 9110 §12.5.1; `*/*` and `text/*` count for text/plain).
fn wants_openmetrics(accept: Option<&str>) -> bool {
    let Some(accept) = accept else {
        return false;
    };
    let (mut om, mut text) = (0.0f32, 0.0f32);
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or("").to_ascii_lowercase();
        let q = parts
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
            .and_then(|(_, v)| v.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        match media.as_str() {
            "application/openmetrics-text" => om = om.max(q),
            "text/plain" | "text/*" | "*/*" => text = text.max(q),
            _ => {}
        }
    }
    om > 0.0 && om >= text
}

/// OpenMetrics text as the classic text format 0.0.4: no `# EOF` or `# UNIT` lines, and a
/// counter's `# HELP`/`# TYPE` name its samples (`renewd_reloads_total`, not
/// `renewd_reloads`); `_created` samples (none here) dropped.
fn openmetrics_to_text(om: &str) -> String {
    let mut counters: Vec<String> = Vec::new();
    for line in om.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let Some(name) = rest.strip_suffix(" counter") {
                counters.push(name.to_string());
            }
        }
    }
    let mut out = String::with_capacity(om.len());
    for line in om.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (*p, rest)));
        if let Some((prefix, rest)) = meta {
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            if counters.iter().any(|c| c == name) {
                out.push_str(&format!("{prefix}{name}_total {tail}\n"));
                continue;
            }
        } else {
            let name = line.split(['{', ' ']).next().unwrap_or("");
            if name.ends_with("_created")
                && counters
                    .iter()
                    .any(|c| name.strip_suffix("_created") == Some(c.as_str()))
            {
                continue;
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

fn result(ok: bool) -> String {
    if ok { "success" } else { "failure" }.into()
}

/// `review_by` as Unix seconds (its midnight UTC).
fn review_start(date: &str) -> Option<i64> {
    super::alerts::review_deadline(date).map(|t| t as i64 - 86_400)
}

/// The most `/metrics` connections served at once (Prometheus needs one per scrape), before
/// [`crate::serve::connection_cap`] bounds it by the descriptor limit.
const MAX_CONNECTIONS: usize = 32;
/// How long a client has to send its request head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a connection may live, from accept to close.
const LIFETIME: Duration = Duration::from_secs(30);

/// Why the `/metrics` listener could not start: bind(2) on `[metrics] listen` failed
/// (address in use, not this host's, a privileged port).
#[derive(Debug, thiserror::Error)]
#[error("cannot listen for metrics on {listen}: {source}")]
pub(crate) struct ListenError {
    pub(crate) listen: SocketAddr,
    source: std::io::Error,
}

/// A running `/metrics` listener; stops when dropped or [`MetricsServer::stop`]ped. One
/// request per connection, within the bounds of [`crate::serve`]: at most
/// [`MAX_CONNECTIONS`] at once, 10 s for the request head, 30 s in all.
pub(crate) struct MetricsServer {
    serving: crate::serve::Serving,
}

impl MetricsServer {
    /// Binds `listen` and serves `metrics` on it. Errors name the address.
    pub(crate) async fn start(
        listen: SocketAddr,
        metrics: Metrics,
    ) -> Result<MetricsServer, ListenError> {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|source| ListenError { listen, source })?;
        let addr = listener.local_addr().unwrap_or(listen);
        let limits = crate::serve::Limits {
            max_connections: crate::serve::connection_cap(MAX_CONNECTIONS),
            lifetime: Some(LIFETIME),
        };
        let serving = crate::serve::spawn(
            format!("metrics {addr}"),
            listener,
            limits,
            None,
            move |(stream, _peer), conn| serve_one(stream, conn, metrics.clone()),
        );
        tracing::info!(%addr, cap = limits.max_connections, "serving metrics on /metrics");
        Ok(MetricsServer { serving })
    }

    /// Stops accepting and cuts open connections, without waiting.
    pub(crate) fn stop(&self) {
        self.serving.stop();
    }
}

/// Answers one request on one connection.
async fn serve_one(stream: tokio::net::TcpStream, conn: crate::serve::Conn, metrics: Metrics) {
    let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        conn.started();
        let metrics = metrics.clone();
        async move {
            if req.uri().path() == "/metrics" {
                let accept = req
                    .headers()
                    .get(hyper::header::ACCEPT)
                    .and_then(|v| v.to_str().ok());
                let (content_type, body) = metrics.render(accept);
                hyper::Response::builder()
                    .header("content-type", content_type)
                    .body(Full::new(Bytes::from(body)))
            } else {
                hyper::Response::builder()
                    .status(404)
                    .body(Full::new(Bytes::from_static(b"see /metrics\n")))
            }
        }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .keep_alive(false)
        .serve_connection(TokioIo::new(stream), svc)
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::Reason;

    #[test]
    fn every_reason_has_a_fixed_label_without_its_details() {
        let cases = [
            (
                Reason::Unusable("/etc/x.pem: gone".into()),
                "deployed set unusable",
            ),
            (
                Reason::NamesChanged(vec!["a.test".into()]),
                "names not covered",
            ),
            (Reason::Threshold, "renew_before threshold"),
            (Reason::AriWindow, "ARI window"),
            (Reason::Retry { failures: 1 }, "retry"),
            (Reason::Retry { failures: 17 }, "retry"),
        ];
        for (reason, label) in cases {
            assert_eq!(reason_label(&reason.to_string()), label, "{reason}");
        }
        assert_eq!(reason_label("something new"), "other");
    }

    #[test]
    fn openmetrics_only_when_the_scraper_prefers_it() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert!(wants_openmetrics(Some(prometheus)));
        assert!(wants_openmetrics(Some("application/openmetrics-text")));
        assert!(!wants_openmetrics(None));
        assert!(!wants_openmetrics(Some("*/*")));
        assert!(!wants_openmetrics(Some("text/plain;version=0.0.4")));
        assert!(!wants_openmetrics(Some(
            "application/openmetrics-text;q=0.2,text/plain;q=0.9"
        )));
        assert!(!wants_openmetrics(Some("application/openmetrics-text;q=0")));
    }

    #[test]
    fn the_classic_text_names_counters_by_their_samples_and_has_no_eof() {
        let m = Metrics::new();
        m.renewal("www", true);
        let (ct, om) = m.render(Some("application/openmetrics-text"));
        assert_eq!(ct, OPENMETRICS_FORMAT);
        assert!(om.contains("# TYPE renewd_renewals counter\n"), "{om}");
        assert!(om.ends_with("# EOF\n"), "{om}");
        let (ct, text) = m.render(None);
        assert_eq!(ct, TEXT_FORMAT);
        assert!(
            text.contains("# TYPE renewd_renewals_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains("# HELP renewd_renewals_total Renewals"),
            "{text}"
        );
        assert!(
            text.contains("renewd_renewals_total{name=\"www\",result=\"success\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("# TYPE renewd_build_info gauge\n"), "{text}");
        assert!(!text.contains("# EOF"), "{text}");
    }
}

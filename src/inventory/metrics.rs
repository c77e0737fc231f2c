//! The Prometheus metrics of SPEC, kept in a `prometheus-client` registry and served as
//! text on `[metrics] listen` at `/metrics`.
//!
//! Gauges describe the inventory as last evaluated (each family is rebuilt whole, so a
//! certificate that is gone disappears from the exposition); counters count since start.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

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

/// renewd's metrics. Cloning shares them.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    not_after: Family<CertLabels, Gauge>,
    next_renewal: Family<NextLabels, Gauge>,
    renewals: Family<ResultLabels, Counter>,
    failures: Family<NameLabels, Gauge>,
    reloads: Family<ReloadLabels, Counter>,
    inventory: Family<InventoryLabels, Gauge>,
    review_by: Family<ReviewLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
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
        };
        // prometheus-client appends `_total` to counters.
        r.register(
            "renewd_certificate_not_after_seconds",
            "Expiry of each managed certificate, Unix seconds",
            m.not_after.clone(),
        );
        r.register(
            "renewd_certificate_next_renewal_seconds",
            "When each managed certificate is next renewed, Unix seconds, and why",
            m.next_renewal.clone(),
        );
        r.register(
            "renewd_renewals",
            "Renewals attempted, by certificate and result (success, failure)",
            m.renewals.clone(),
        );
        r.register(
            "renewd_renewal_consecutive_failures",
            "Consecutive failed renewals of each managed certificate",
            m.failures.clone(),
        );
        r.register(
            "renewd_reloads",
            "Reload commands run, by result (success, failure)",
            m.reloads.clone(),
        );
        r.register(
            "renewd_inventory_not_after_seconds",
            "Expiry of every known certificate file, by kind (managed, exception, unmanaged)",
            m.inventory.clone(),
        );
        r.register(
            "renewd_exception_review_by_seconds",
            "When each exception must be reviewed, Unix seconds",
            m.review_by.clone(),
        );
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

    /// Replaces the gauges with what `inv` says.
    pub fn update(&self, inv: &Inventory) {
        self.not_after.clear();
        self.next_renewal.clear();
        self.failures.clear();
        self.inventory.clear();
        self.review_by.clear();
        let secs = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        for i in &inv.certificates {
            if let Some(na) = i.not_after {
                // A managed certificate is listed at the file holding it (not its key).
                let paths = match (&i.kind, &i.cert_path) {
                    (Kind::Managed, Some(p)) => std::slice::from_ref(p),
                    _ => &i.paths[..],
                };
                for p in paths {
                    self.inventory
                        .get_or_create(&InventoryLabels {
                            path: p.display().to_string(),
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
                                // Without the details after a colon (paths, names):
                                // label values must stay few.
                                reason: reason.split(':').next().unwrap_or("").to_string(),
                            })
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
                Kind::Unmanaged => {}
            }
        }
    }

    pub fn renewal(&self, name: &str, ok: bool) {
        self.renewals
            .get_or_create(&ResultLabels {
                name: name.into(),
                result: result(ok),
            })
            .inc();
    }

    pub fn reload(&self, ok: bool) {
        self.reloads
            .get_or_create(&ReloadLabels { result: result(ok) })
            .inc();
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        out
    }
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

/// A running `/metrics` listener; stops when dropped or [`MetricsServer::stop`]ped. One
/// request per connection, within the bounds of [`crate::serve`]: at most
/// [`MAX_CONNECTIONS`] at once, 10 s for the request head, 30 s in all.
pub struct MetricsServer {
    serving: crate::serve::Serving,
    pub addr: SocketAddr,
}

impl MetricsServer {
    /// Binds `listen` and serves `metrics` on it. Errors name the address.
    pub async fn start(listen: SocketAddr, metrics: Metrics) -> Result<MetricsServer, String> {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| format!("cannot listen for metrics on {listen}: {e}"))?;
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
        Ok(MetricsServer { serving, addr })
    }

    /// Stops accepting and cuts open connections, without waiting.
    pub fn stop(&self) {
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
                hyper::Response::builder()
                    .header(
                        "content-type",
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )
                    .body(Full::new(Bytes::from(metrics.encode())))
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

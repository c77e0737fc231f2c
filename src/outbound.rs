//! renewd's outgoing HTTP(S) — to the CAs (`acme`) and to the alert webhook
//! (`inventory::alerts`): the system's trust roots, and the proxy a request goes through.
//!
//! Proxies: `HTTPS_PROXY` (or `https_proxy`) names an HTTP proxy for `https://` URLs, reached
//! with an HTTP CONNECT tunnel (the TLS session is end to end); `NO_PROXY` (or `no_proxy`)
//! lists hosts, domains (with their subdomains), IP addresses and networks that bypass it,
//! comma-separated, `*` for all (curl's rules). `http://` URLs never go through a proxy. A
//! CA's `proxy` key replaces the environment for that CA: a URL (`NO_PROXY` is then not
//! consulted), or `""` for a direct connection. Proxy credentials (`http://user:pass@host:port`)
//! are sent as `Proxy-Authorization: Basic` and never shown: every message names the proxy as
//! `http://host:port`.

use std::error::Error as StdError;
use std::sync::OnceLock;
use std::time::Duration;

use hyper::body::{Body, Incoming};
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::CertificateDer;

use crate::config;

/// The system's trust roots as rustls-native-certs finds them (`SSL_CERT_FILE`,
/// `SSL_CERT_DIR`, else the distribution's bundle), read once per process.
pub(crate) struct SystemRoots {
    pub(crate) certs: Vec<CertificateDer<'static>>,
    /// Why some could not be read, one line each (a missing bundle, an unreadable file).
    pub(crate) errors: Vec<String>,
}

/// The system's trust roots, loaded on first use.
pub(crate) fn system_roots() -> &'static SystemRoots {
    static ROOTS: OnceLock<SystemRoots> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        SystemRoots {
            certs: found.certs,
            errors: found.errors.iter().map(|e| e.to_string()).collect(),
        }
    })
}

/// What the system's trust store lacks for a CA whose `https://` directory has no
/// `trust_roots`: `None` when at least one system root loads (or the CA needs none), else
/// a message naming the CA and what to install.
pub(crate) fn missing_system_roots(ca: &config::CaConfig) -> Option<String> {
    let https = ca
        .directory
        .get(..8)
        .is_some_and(|s| s.eq_ignore_ascii_case("https://"));
    if !https || ca.trust_roots.is_some() {
        return None;
    }
    let roots = system_roots();
    let usable = roots.certs.iter().any(|c| {
        let mut store = rustls::RootCertStore::empty();
        store.add(c.clone()).is_ok()
    });
    if usable {
        return None;
    }
    let why = if roots.errors.is_empty() {
        "the system trust store holds no certificate".to_string()
    } else {
        format!(
            "the system trust store could not be read ({})",
            roots.errors.join("; ")
        )
    };
    Some(format!(
        "CA `{}`: no trust root can be loaded to check the HTTPS of its directory {}: {why}; \
         install the `ca-certificates` package (or point SSL_CERT_FILE at a PEM bundle), or \
         set `trust_roots` in [ca.{}] for a private ACME server",
        ca.name, ca.directory, ca.name
    ))
}

/// [`missing_system_roots`] for every CA of `cfg`, each at its `[ca.NAME]` header: what
/// `check` reports, and what keeps `run` from starting and SIGHUP from taking `cfg`.
pub(crate) fn trust_root_problems(cfg: &config::Config) -> Vec<config::Problem> {
    cfg.cas
        .values()
        .filter_map(|ca| {
            missing_system_roots(ca).map(|m| config::Problem::new(ca.location.clone(), m))
        })
        .collect()
}

/// Why an [`Outbound`] client could not be built, or a request through it failed. The
/// proxy is shown as `http://host:port (WHERE SET)`, never with its credentials.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum OutboundError {
    /// The proxy URL (set by `set_by`: the `proxy` key or an environment variable) is not
    /// `http://[user:pass@]host[:port]`.
    #[error("{set_by}: the proxy {why}")]
    ProxyUrl {
        set_by: &'static str,
        why: config::InvalidValue,
    },
    #[error("{set_by}: the proxy {shown} is not usable")]
    ProxyUnusable { set_by: &'static str, shown: String },
    /// The request failed: hyper's error with its causes, and the proxy it went through.
    #[error("{chain}{}", via.as_ref().map(|v| format!(" (through proxy {v})")).unwrap_or_default())]
    Request { chain: String, via: Option<String> },
}

/// Where a client's `https://` requests go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProxySetting<'a> {
    /// `HTTPS_PROXY`/`https_proxy`, with `NO_PROXY`/`no_proxy`.
    Environment,
    /// This proxy for every `https://` request (a CA's `proxy = "http://…"`).
    Url(&'a str),
    /// No proxy (a CA's `proxy = ""`).
    Direct,
}

impl<'a> ProxySetting<'a> {
    /// A CA's `proxy` key: absent → the environment, `""` → direct, else that URL.
    pub(crate) fn of(configured: Option<&'a str>) -> ProxySetting<'a> {
        match configured {
            None => ProxySetting::Environment,
            Some("") => ProxySetting::Direct,
            Some(url) => ProxySetting::Url(url),
        }
    }
}

/// The first non-empty value of the environment variables `names`, with its name.
fn env_first(names: &[&'static str]) -> Option<(&'static str, String)> {
    names.iter().find_map(|n| {
        std::env::var(n)
            .ok()
            .filter(|v| !v.trim().is_empty())
            .map(|v| (*n, v))
    })
}

/// A proxy in use: the tunnelling client and when it applies.
struct Proxied<B> {
    client: Client<hyper_rustls::HttpsConnector<Tunnel<HttpConnector>>, B>,
    /// Decides per URL (`NO_PROXY`); with a per-CA URL it matches every `https://` URL.
    matcher: Matcher,
    /// `http://host:port (HTTPS_PROXY)`: the proxy without credentials, and where it was set.
    shown: String,
}

/// An HTTP client (hyper, rustls) that sends each request directly or through the proxy its
/// [`ProxySetting`] selects for the request's URL.
pub(crate) struct Outbound<B> {
    direct: Client<hyper_rustls::HttpsConnector<HttpConnector>, B>,
    proxied: Option<Proxied<B>>,
}

impl<B> Outbound<B>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    /// A client using `tls`, connecting (TCP) within `connect_timeout`, with `http2` offered
    /// by ALPN when asked. Errors: a proxy URL (configured or from the environment) that is
    /// not `http://[user:pass@]host[:port]`, named by where it was set, credentials hidden.
    pub(crate) fn new(
        tls: rustls::ClientConfig,
        connect_timeout: Duration,
        http2: bool,
        setting: ProxySetting<'_>,
        pool_idle: Duration,
    ) -> Result<Outbound<B>, OutboundError> {
        fn connector<C>(
            tls: &rustls::ClientConfig,
            http2: bool,
            inner: C,
        ) -> hyper_rustls::HttpsConnector<C> {
            let b = hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(tls.clone())
                .https_or_http()
                .enable_http1();
            if http2 {
                b.enable_http2().wrap_connector(inner)
            } else {
                b.wrap_connector(inner)
            }
        }
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(connect_timeout));
        let build = || {
            let mut b = Client::builder(TokioExecutor::new());
            b.pool_idle_timeout(pool_idle);
            b
        };
        let direct = build().build(connector(&tls, http2, http.clone()));
        let chosen = match setting {
            ProxySetting::Direct => None,
            ProxySetting::Url(url) => Some(("the `proxy` key", url.to_string(), String::new())),
            ProxySetting::Environment => {
                env_first(&["HTTPS_PROXY", "https_proxy"]).map(|(var, url)| {
                    let no = env_first(&["NO_PROXY", "no_proxy"])
                        .map(|(_, v)| v)
                        .unwrap_or_default();
                    (var, url, no)
                })
            }
        };
        let proxied = match chosen {
            None => None,
            Some((source, url, no)) => {
                let shown =
                    config::check_proxy_url(&url).map_err(|why| OutboundError::ProxyUrl {
                        set_by: source,
                        why,
                    })?;
                // Matched alone (no NO_PROXY), a valid URL intercepts every https:// URL:
                // that gives the proxy's address and credentials.
                let intercept = Matcher::builder()
                    .https(url.as_str())
                    .build()
                    .intercept(&http::Uri::from_static("https://renewd.invalid/"))
                    .ok_or_else(|| OutboundError::ProxyUnusable {
                        set_by: source,
                        shown: shown.clone(),
                    })?;
                let mut tunnel = Tunnel::new(intercept.uri().clone(), http.clone());
                if let Some(auth) = intercept.basic_auth() {
                    tunnel = tunnel.with_auth(auth.clone());
                }
                Some(Proxied {
                    client: build().build(connector(&tls, http2, tunnel)),
                    matcher: Matcher::builder().https(url.as_str()).no(no).build(),
                    shown: format!("{shown} ({source})"),
                })
            }
        };
        Ok(Outbound { direct, proxied })
    }

    /// The proxy a request to `uri` goes through, as `http://host:port (WHERE SET)`, or
    /// `None` for a direct connection.
    pub(crate) fn via(&self, uri: &http::Uri) -> Option<&str> {
        self.proxied
            .as_ref()
            .filter(|p| p.matcher.intercept(uri).is_some())
            .map(|p| p.shown.as_str())
    }

    /// Sends `req` directly or through its proxy. The error is hyper's with its causes on
    /// one line, followed by `(through proxy http://host:port (WHERE SET))` when proxied.
    pub(crate) async fn request(
        &self,
        req: http::Request<B>,
    ) -> Result<http::Response<Incoming>, OutboundError> {
        let proxied = self
            .proxied
            .as_ref()
            .filter(|p| p.matcher.intercept(req.uri()).is_some());
        let result = match proxied {
            Some(p) => p.client.request(req).await,
            None => self.direct.request(req).await,
        };
        result.map_err(|e| OutboundError::Request {
            chain: error_chain(&e),
            via: proxied.map(|p| p.shown.clone()),
        })
    }
}

/// The error and its causes on one line: hyper's top-level errors ("client error
/// (Connect)") say little without them.
pub(crate) fn error_chain(e: &dyn StdError) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    // A hostile answer quoted whole in an error would flood the log and the state record
    // (found by tests/it/fuzz.rs): 2 KiB is more than any useful message.
    crate::text::bounded(s, 2048)
}

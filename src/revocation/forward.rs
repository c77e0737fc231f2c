//! `http://` OCSP and CRL requests through `HTTP_PROXY`/`http_proxy` (with
//! `NO_PROXY`/`no_proxy`; ignored when `REQUEST_METHOD` is set, as under CGI, where the
//! variable could come from a client's `Proxy:` header): the request goes to the proxy in
//! absolute form (RFC 9112 §3.2.2) with its `Proxy-Authorization`. `outbound` carries only
//! `https://` through a proxy (CONNECT); this is the plain-HTTP half, for revocation only.

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::client::proxy::matcher::{Intercept, Matcher};
use hyper_util::rt::TokioIo;

use super::{FetchError, CONNECT_TIMEOUT};

/// The proxy settings of the environment, read once a pass.
pub(super) struct Forward {
    matcher: Matcher,
}

impl Forward {
    pub(super) fn from_env() -> Forward {
        Forward {
            matcher: Matcher::from_env(),
        }
    }

    /// The proxy for `uri` (an `http://` URL), if one applies.
    pub(super) fn proxy_for(&self, uri: &http::Uri) -> Option<Intercept> {
        self.matcher.intercept(uri)
    }
}

/// `http://host:port` of the proxy, never its credentials.
pub(super) fn shown(proxy: &Intercept) -> String {
    let u = proxy.uri();
    format!(
        "http://{}:{}",
        u.host().unwrap_or("?"),
        u.port_u16().unwrap_or(80)
    )
}

/// Sends `req` (its URI absolute) through `proxy` on a connection of its own. The caller
/// bounds the whole exchange in time.
pub(super) async fn send(
    url: &str,
    proxy: &Intercept,
    mut req: http::Request<Full<Bytes>>,
) -> Result<http::Response<Incoming>, FetchError> {
    let via = shown(proxy);
    let failed = |why: String| FetchError::Request {
        url: url.into(),
        why: format!("{why} (through proxy {via})"),
    };
    let host = proxy
        .uri()
        .host()
        .unwrap_or_default()
        .trim_matches(['[', ']'])
        .to_string();
    let port = proxy.uri().port_u16().unwrap_or(80);
    let tcp = tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio::net::TcpStream::connect((host, port)),
    )
    .await
    .map_err(|_| {
        failed(format!(
            "no connection within {}s",
            CONNECT_TIMEOUT.as_secs()
        ))
    })?
    .map_err(|e| failed(e.to_string()))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| failed(crate::outbound::error_chain(&e)))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    // The target's Host, as a request in absolute form still carries it (RFC 9112 §3.2).
    if let Some(authority) = req.uri().authority().cloned() {
        if let Ok(v) = http::HeaderValue::from_str(authority.as_str()) {
            req.headers_mut().insert(http::header::HOST, v);
        }
    }
    if let Some(auth) = proxy.basic_auth() {
        req.headers_mut()
            .insert(http::header::PROXY_AUTHORIZATION, auth.clone());
    }
    sender
        .send_request(req)
        .await
        .map_err(|e| failed(crate::outbound::error_chain(&e)))
}

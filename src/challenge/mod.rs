//! Answering ACME challenges: http-01 through a webroot or renewd's own listener, dns-01
//! through a hook or RFC 2136 dynamic updates, and tls-alpn-01 through renewd's own TLS
//! listener.
//!
//! Provisioning returns a guard. [`Provisioned::withdraw`] takes the answer back and waits
//! for that (a dns-01 `clear` hook, a DNS delete); merely dropping the guard — an error
//! path, a cancelled renewal — withdraws it too, in a spawned task when that needs I/O.
//! The built-in listeners are shared: every certificate validating through the same
//! `listen` address registers its answers with one server, which binds when the first
//! answer arrives and closes when the last one is withdrawn, so renewd holds port 80 or 443
//! only while a validation is under way.

mod dns;
pub(crate) mod persist;
mod rfc2136;
mod shared;
mod tls_alpn;
mod webroot;

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpSocket;
use tokio::sync::watch;

use crate::config::ChallengeConfig;
use crate::hooks::HookError;

/// Where http-01 answers live under the webroot or the listener.
const WELL_KNOWN: &str = "/.well-known/acme-challenge/";

#[derive(Debug, thiserror::Error)]
pub(crate) enum ChallengeError {
    #[error("the CA sent a challenge token with characters outside base64url: {0:?}")]
    BadToken(String),
    #[error("cannot write the http-01 answer {path}: {source}")]
    Webroot { path: PathBuf, source: io::Error },
    #[error("refusing the http-01 webroot {webroot}: {reason}")]
    UnsafeWebroot { webroot: PathBuf, reason: String },
    #[error("cannot listen on {addr} for {kind}: {source}")]
    Listen {
        kind: &'static str,
        addr: SocketAddr,
        source: io::Error,
    },
    #[error("dns-01 hook `set {record}` failed: {source}")]
    DnsHook { record: String, source: HookError },
    #[error("cannot build the tls-alpn-01 certificate for {identifier}: {message}")]
    TlsAlpnCert { identifier: String, message: String },
    #[error("dns-01 through RFC 2136: {0}")]
    Rfc2136(#[from] rfc2136::Rfc2136Error),
    #[error(
        "dns-persist-01 record {record} is not usable: {problem}; publish it as \
         `{publish}` (`renewd persist-record` prints it)"
    )]
    PersistRecord {
        record: String,
        problem: String,
        publish: String,
    },
    #[error(
        "dns-persist-01 needs the CA's issuer domain name: set `issuer_domain_name` in \
         [ca.{ca}] (the CA's directory advertises no `meta.issuerDomainNames`)"
    )]
    NoIssuerDomainName { ca: String },
}

/// RFC 8555 §8.1: tokens are base64url. Anything else is hostile (a path, a header) and is
/// refused before it reaches a file name or a response.
fn check_token(token: &str) -> Result<(), ChallengeError> {
    let ok = !token.is_empty()
        && token.len() <= 256
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(ChallengeError::BadToken(token.chars().take(80).collect()))
    }
}

/// What the CA asked for one identifier, and for which certificate.
pub(crate) struct Answer<'a> {
    /// The certificate being ordered (`RENEWD_NAME` for dns-01 hooks).
    pub(crate) certificate: &'a str,
    /// All its names (`RENEWD_DOMAINS`, comma-separated).
    pub(crate) domains: &'a [String],
    /// The identifier as configured: `example.org`, `*.example.org` or an IP address.
    pub(crate) identifier: &'a str,
    pub(crate) token: &'a str,
    /// `token.thumbprint`: the http-01 answer.
    pub(crate) key_authorization: &'a str,
    /// SHA-256 of the key authorization: the tls-alpn-01 acmeIdentifier.
    pub(crate) digest: &'a [u8],
    /// base64url of `digest`: the dns-01 TXT value.
    pub(crate) dns_value: &'a str,
    /// The ACME account's URL: dns-account-01's label and dns-persist-01's `accounturi`.
    pub(crate) account_url: &'a str,
    /// The CA's issuer domain name (dns-persist-01 only; `None` when unknown).
    pub(crate) issuer_domain_name: Option<&'a str>,
    /// The name of the CA in the configuration, for messages.
    pub(crate) ca: &'a str,
}

/// The challenge answering machinery shared by every renewal of one process.
#[derive(Clone)]
pub(crate) struct Responders {
    /// The http-01 listeners: token → key authorization.
    http01: shared::SharedListeners<String>,
    tls_alpn01: tls_alpn::Listeners,
}

impl Default for Responders {
    fn default() -> Self {
        Responders {
            http01: shared::SharedListeners::new("http-01", serve),
            tls_alpn01: tls_alpn::Listeners::default(),
        }
    }
}

/// Listeners stopped (their last answer withdrawn) whose server task may still hold the
/// listening socket, by address. Binding the address again before that socket is closed
/// fails with EADDRINUSE, and a renewal starting as another finishes hits that window; so a
/// new listener on such an address waits for the old socket first.
#[derive(Default, Clone)]
pub(crate) struct Closing(Arc<Mutex<HashMap<SocketAddr, watch::Receiver<()>>>>);

impl Closing {
    /// A channel for one server task: it drops the sender once its socket is closed.
    pub(crate) fn channel() -> (watch::Sender<()>, watch::Receiver<()>) {
        watch::channel(())
    }

    pub(crate) fn insert(&self, addr: SocketAddr, closed: watch::Receiver<()>) {
        lock(&self.0).insert(addr, closed);
    }

    /// Waits until no stopped listener holds `addr`.
    async fn wait(&self, addr: SocketAddr) {
        let Some(mut closed) = lock(&self.0).get(&addr).cloned() else {
            return;
        };
        while closed.changed().await.is_ok() {}
        let mut map = lock(&self.0);
        if map.get(&addr).is_some_and(|rx| rx.has_changed().is_err()) {
            map.remove(&addr);
        }
    }

    fn knows(&self, addr: SocketAddr) -> bool {
        lock(&self.0).contains_key(&addr)
    }

    /// Runs `publish` (which binds `addr` when no listener serves it) once no stopped
    /// listener holds `addr`; when the bind still meets a socket being closed (another
    /// listener stopped meanwhile), waits for that one and tries again.
    async fn publish<T>(
        &self,
        addr: SocketAddr,
        mut publish: impl FnMut() -> Result<T, ChallengeError>,
    ) -> Result<T, ChallengeError> {
        let mut tries = 0;
        loop {
            self.wait(addr).await;
            match publish() {
                Err(ChallengeError::Listen { source, .. })
                    if source.kind() == io::ErrorKind::AddrInUse
                        && tries < 3
                        && self.knows(addr) =>
                {
                    tries += 1
                }
                other => return other,
            }
        }
    }
}

/// A provisioned answer; [`Provisioned::withdraw`] (or dropping it) withdraws the answer.
pub(crate) struct Provisioned {
    kind: ProvisionedKind,
}

enum ProvisionedKind {
    /// Already withdrawn.
    Done,
    File(webroot::WebrootAnswer),
    Token {
        responders: Responders,
        addr: SocketAddr,
        token: String,
    },
    TlsAlpn(tls_alpn::Registration),
    Dns(dns::Cleanup),
}

impl Provisioned {
    /// Withdraws the answer and waits until it is gone (a dns-01 record cleared). Failures
    /// are logged: a stale answer is harmless to the next validation, which uses a new token.
    pub(crate) async fn withdraw(mut self) {
        if matches!(self.kind, ProvisionedKind::Dns(_)) {
            if let ProvisionedKind::Dns(cleanup) =
                std::mem::replace(&mut self.kind, ProvisionedKind::Done)
            {
                cleanup.run().await;
            }
        }
        // Every other kind is withdrawn synchronously, by Drop.
    }
}

impl Drop for Provisioned {
    fn drop(&mut self) {
        match std::mem::replace(&mut self.kind, ProvisionedKind::Done) {
            ProvisionedKind::Done => {}
            // Removed relative to the directory it was written in.
            ProvisionedKind::File(answer) => drop(answer),
            ProvisionedKind::Token {
                responders,
                addr,
                token,
            } => responders.withdraw(addr, &token),
            ProvisionedKind::TlsAlpn(registration) => drop(registration),
            // Dropped without `withdraw`: an error path or a cancelled renewal. The record
            // is cleared all the same, in the background.
            ProvisionedKind::Dns(cleanup) => cleanup.spawn(),
        }
    }
}

impl Responders {
    /// Publishes the answer to `answer` the way `cfg` says.
    pub(crate) async fn provision(
        &self,
        cfg: &ChallengeConfig,
        answer: &Answer<'_>,
    ) -> Result<Provisioned, ChallengeError> {
        if let ChallengeConfig::DnsPersist01(persist) = cfg {
            // No token: the standing record answers; it is only looked at.
            let issuer =
                answer
                    .issuer_domain_name
                    .ok_or_else(|| ChallengeError::NoIssuerDomainName {
                        ca: answer.ca.to_string(),
                    })?;
            let expected = persist::Expected::new(
                answer.identifier,
                issuer,
                answer.account_url,
                persist.wildcard,
                persist.persist_until,
            );
            persist::preflight(persist.resolver, answer.identifier, &expected).await?;
            return Ok(Provisioned {
                kind: ProvisionedKind::Done,
            });
        }
        check_token(answer.token)?;
        let kind = match cfg {
            ChallengeConfig::Http01Webroot {
                webroot,
                trust_owner,
            } => ProvisionedKind::File(webroot::write(
                webroot,
                *trust_owner,
                answer.token,
                answer.key_authorization,
            )?),
            ChallengeConfig::Http01Listen { listen } => {
                self.http01
                    .publish(*listen, |tokens| {
                        tokens.insert(
                            answer.token.to_string(),
                            answer.key_authorization.to_string(),
                        );
                    })
                    .await?;
                ProvisionedKind::Token {
                    responders: self.clone(),
                    addr: *listen,
                    token: answer.token.to_string(),
                }
            }
            ChallengeConfig::Dns01Hook { hook, .. }
            | ChallengeConfig::DnsAccount01Hook { hook, .. } => {
                return dns::set_with_hook(hook, cfg.kind(), answer).await
            }
            ChallengeConfig::Dns01Rfc2136 {
                server,
                tsig_key_file,
                ..
            }
            | ChallengeConfig::DnsAccount01Rfc2136 {
                server,
                tsig_key_file,
                ..
            } => {
                return dns::set_with_rfc2136(*server, tsig_key_file.as_deref(), cfg.kind(), answer)
                    .await
            }
            // Answered above.
            ChallengeConfig::DnsPersist01(_) => ProvisionedKind::Done,
            ChallengeConfig::TlsAlpn01 { listen } => {
                ProvisionedKind::TlsAlpn(self.tls_alpn01.publish(*listen, answer).await?)
            }
        };
        Ok(Provisioned { kind })
    }

    fn withdraw(&self, addr: SocketAddr, token: &str) {
        self.http01.withdraw(addr, |tokens| {
            tokens.remove(token);
        });
    }

    /// Number of built-in listeners (http-01 and tls-alpn-01) open now (for tests).
    #[cfg(test)]
    pub(crate) fn open_listeners(&self) -> usize {
        self.http01.open() + self.tls_alpn01.open()
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub(crate) fn bind(addr: SocketAddr) -> io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(128)
}

/// The most connections one built-in listener (http-01 or tls-alpn-01) serves at once,
/// before [`crate::serve::connection_cap`] bounds it by the descriptor limit. A CA validates
/// from a few vantage points, a few times each.
pub(crate) const LISTENER_MAX_CONNECTIONS: usize = 128;
/// How long a client of a built-in listener has to send its request head (http-01) or
/// finish its handshake (tls-alpn-01).
pub(crate) const LISTENER_REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Longest a connection to a built-in listener may live, from accept to close.
pub(crate) const LISTENER_LIFETIME: std::time::Duration = std::time::Duration::from_secs(30);

/// The bounds of a built-in listener (see [`crate::serve`]).
pub(crate) fn listener_limits() -> crate::serve::Limits {
    crate::serve::Limits {
        max_connections: crate::serve::connection_cap(LISTENER_MAX_CONNECTIONS),
        lifetime: Some(LISTENER_LIFETIME),
    }
}

/// Serves the http-01 answers in `tokens` on `listener`, one request per connection.
fn serve(
    addr: SocketAddr,
    listener: tokio::net::TcpListener,
    tokens: Arc<Mutex<HashMap<String, String>>>,
    closed: watch::Sender<()>,
) -> crate::serve::Serving {
    crate::serve::spawn(
        format!("http-01 {addr}"),
        listener,
        listener_limits(),
        Some(closed),
        move |(stream, peer), conn: crate::serve::Conn| {
            let tokens = tokens.clone();
            async move {
                let svc = service_fn(move |req| {
                    conn.started();
                    answer(req, tokens.clone(), peer)
                });
                let _ = http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(LISTENER_REQUEST_TIMEOUT)
                    .keep_alive(false)
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            }
        },
    )
}

async fn answer(
    req: Request<hyper::body::Incoming>,
    tokens: Arc<Mutex<HashMap<String, String>>>,
    peer: SocketAddr,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let found = req
        .uri()
        .path()
        .strip_prefix(WELL_KNOWN)
        .and_then(|t| lock(&tokens).get(t).cloned());
    tracing::debug!(%peer, path = req.uri().path(), found = found.is_some(), "http-01 request");
    let rsp = match found {
        Some(body) => Response::builder()
            .header("content-type", "text/plain")
            .body(Full::new(Bytes::from(body))),
        None => Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(Full::new(Bytes::from_static(b"not found\n"))),
    };
    Ok(rsp.unwrap_or_else(|_| Response::new(Full::new(Bytes::new()))))
}

/// `renewd check`'s look at every http-01 webroot: the walk and ownership rules answers are
/// written under (see `webroot`). A webroot that does not exist is left to
/// [`crate::config::Config::check_environment`], which reports it already.
pub(crate) fn check_webroots(config: &crate::config::Config) -> Vec<crate::config::Problem> {
    let mut problems = Vec::new();
    for cert in &config.certificates {
        for rule in &cert.challenge.rules {
            if let ChallengeConfig::Http01Webroot {
                webroot,
                trust_owner,
            } = &rule.config
            {
                match webroot::check(webroot, *trust_owner) {
                    Ok(()) => {}
                    Err(ChallengeError::Webroot { source, .. })
                        if source.kind() == io::ErrorKind::NotFound
                            || source.raw_os_error() == Some(nix::libc::ENOTDIR) => {}
                    Err(e) => problems.push(crate::config::Problem::new(
                        cert.key_location(&format!("{}.webroot", rule.key)).clone(),
                        e.to_string(),
                    )),
                }
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn answer<'a>(token: &'a str, key_authorization: &'a str) -> Answer<'a> {
        Answer {
            certificate: "test",
            domains: &[],
            identifier: "example.test",
            token,
            key_authorization,
            digest: &[0; 32],
            dns_value: "x",
            account_url: "https://ca.test/acct/1",
            issuer_domain_name: None,
            ca: "test",
        }
    }

    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    /// A loopback address nothing listens on (bound, then released).
    fn free_loopback() -> SocketAddr {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    }

    #[test]
    fn hostile_tokens_are_refused() {
        for t in [
            "",
            "../../etc/passwd",
            "a/b",
            "a b",
            "x\r\nSet-Cookie: 1",
            "é",
        ] {
            assert!(check_token(t).is_err(), "{t:?}");
        }
        check_token("abc-DEF_123").unwrap();
    }

    #[tokio::test]
    async fn one_listener_serves_many_tokens_and_closes_when_idle() {
        let addr = free_loopback();
        let cfg = ChallengeConfig::Http01Listen { listen: addr };
        let r = Responders::default();
        let a = r
            .provision(&cfg, &answer("tokA", "tokA.thumb"))
            .await
            .unwrap();
        let b = r
            .provision(&cfg, &answer("tokB", "tokB.thumb"))
            .await
            .unwrap();
        assert_eq!(r.open_listeners(), 1);
        assert!(get(addr, "/.well-known/acme-challenge/tokA")
            .await
            .ends_with("tokA.thumb"));
        assert!(get(addr, "/.well-known/acme-challenge/tokB")
            .await
            .ends_with("tokB.thumb"));
        assert!(get(addr, "/.well-known/acme-challenge/nope")
            .await
            .starts_with("HTTP/1.1 404"));
        drop(a);
        assert!(get(addr, "/.well-known/acme-challenge/tokA")
            .await
            .starts_with("HTTP/1.1 404"));
        drop(b);
        assert_eq!(r.open_listeners(), 0);
        // The port is free again once the last answer is withdrawn.
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    }

    /// A renewal starting just as another's last answer is withdrawn: the stopped listener's
    /// task has not run yet (one-thread runtime), so its socket is still open; the new
    /// listener waits for it rather than failing with EADDRINUSE. Likewise for tls-alpn-01.
    #[tokio::test]
    async fn a_listener_stopped_and_needed_again_at_once_binds_again() {
        for cfg in [
            ChallengeConfig::Http01Listen {
                listen: free_loopback(),
            },
            ChallengeConfig::TlsAlpn01 {
                listen: free_loopback(),
            },
        ] {
            let r = Responders::default();
            for i in 0..20 {
                let token = format!("tok{i}");
                let p = r
                    .provision(&cfg, &answer(&token, "thumb"))
                    .await
                    .unwrap_or_else(|e| panic!("{cfg:?}, round {i}: {e}"));
                drop(p);
            }
            assert_eq!(r.open_listeners(), 0);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_validations_share_one_listener() {
        let addr = free_loopback();
        let r = Responders::default();
        let mut tasks = Vec::new();
        for i in 0..16 {
            let r = r.clone();
            tasks.push(tokio::spawn(async move {
                let cfg = ChallengeConfig::Http01Listen { listen: addr };
                let token = format!("tok{i}");
                r.provision(&cfg, &answer(&token, "answer")).await
            }));
        }
        let mut held = Vec::new();
        for t in tasks {
            held.push(
                t.await
                    .unwrap()
                    .expect("every concurrent provision succeeds"),
            );
        }
        assert_eq!(r.open_listeners(), 1);
        drop(held);
        assert_eq!(r.open_listeners(), 0);
    }

    #[tokio::test]
    async fn webroot_answer_is_written_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = ChallengeConfig::Http01Webroot {
            webroot: dir.path().to_path_buf(),
            trust_owner: false,
        };
        let r = Responders::default();
        let p = r
            .provision(&cfg, &answer("tok", "tok.thumb"))
            .await
            .unwrap();
        let file = dir.path().join(".well-known/acme-challenge/tok");
        assert_eq!(fs::read_to_string(&file).unwrap(), "tok.thumb");
        drop(p);
        assert!(!file.exists());
    }
}

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
pub mod rfc2136;
mod tls_alpn;

use std::collections::HashMap;
use std::convert::Infallible;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
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

pub use dns::record_name;
pub use tls_alpn::sni_name;

/// Where http-01 answers live under the webroot or the listener.
const WELL_KNOWN: &str = "/.well-known/acme-challenge/";

#[derive(Debug, thiserror::Error)]
pub enum ChallengeError {
    #[error("the CA sent a challenge token with characters outside base64url: {0:?}")]
    BadToken(String),
    #[error("cannot write the http-01 answer {path}: {source}")]
    Webroot { path: PathBuf, source: io::Error },
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
pub struct Answer<'a> {
    /// The certificate being ordered (`RENEWD_NAME` for dns-01 hooks).
    pub certificate: &'a str,
    /// All its names (`RENEWD_DOMAINS`, comma-separated).
    pub domains: &'a [String],
    /// The identifier as configured: `example.org`, `*.example.org` or an IP address.
    pub identifier: &'a str,
    pub token: &'a str,
    /// `token.thumbprint`: the http-01 answer.
    pub key_authorization: &'a str,
    /// SHA-256 of the key authorization: the tls-alpn-01 acmeIdentifier.
    pub digest: &'a [u8],
    /// base64url of `digest`: the dns-01 TXT value.
    pub dns_value: &'a str,
}

/// The challenge answering machinery shared by every renewal of one process.
#[derive(Default, Clone)]
pub struct Responders {
    http01: Arc<Mutex<HashMap<SocketAddr, Http01Listener>>>,
    http01_closing: Closing,
    tls_alpn01: tls_alpn::Listeners,
}

struct Http01Listener {
    tokens: Arc<Mutex<HashMap<String, String>>>,
    /// Dropping it stops the server task and cuts its connections.
    _serving: crate::serve::Serving,
    /// Closed once the server task has closed the listening socket.
    closed: watch::Receiver<()>,
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
pub struct Provisioned {
    kind: ProvisionedKind,
}

enum ProvisionedKind {
    /// Already withdrawn.
    Done,
    File(PathBuf),
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
    pub async fn withdraw(mut self) {
        if matches!(self.kind, ProvisionedKind::Dns(_)) {
            if let ProvisionedKind::Dns(cleanup) =
                std::mem::replace(&mut self.kind, ProvisionedKind::Done)
            {
                cleanup.run().await;
            }
        }
        // Every other kind is withdrawn synchronously, by Drop.
    }

    /// Whether this answer needs the DNS to propagate before the CA looks.
    pub fn is_dns(&self) -> bool {
        matches!(self.kind, ProvisionedKind::Dns(_))
    }
}

impl Drop for Provisioned {
    fn drop(&mut self) {
        match std::mem::replace(&mut self.kind, ProvisionedKind::Done) {
            ProvisionedKind::Done => {}
            ProvisionedKind::File(path) => {
                if let Err(e) = fs::remove_file(&path) {
                    if e.kind() != io::ErrorKind::NotFound {
                        tracing::warn!(path = %path.display(), error = %e,
                            "cannot remove http-01 answer");
                    }
                }
            }
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
    pub async fn provision(
        &self,
        cfg: &ChallengeConfig,
        answer: &Answer<'_>,
    ) -> Result<Provisioned, ChallengeError> {
        check_token(answer.token)?;
        let kind = match cfg {
            ChallengeConfig::Http01Webroot { webroot } => ProvisionedKind::File(write_webroot(
                webroot,
                answer.token,
                answer.key_authorization,
            )?),
            ChallengeConfig::Http01Listen { listen } => {
                self.http01_closing
                    .publish(*listen, || {
                        self.publish(*listen, answer.token, answer.key_authorization)
                    })
                    .await?;
                ProvisionedKind::Token {
                    responders: self.clone(),
                    addr: *listen,
                    token: answer.token.to_string(),
                }
            }
            ChallengeConfig::Dns01Hook { hook, .. } => {
                return dns::set_with_hook(hook, answer).await
            }
            ChallengeConfig::Dns01Rfc2136 {
                server,
                tsig_key_file,
                ..
            } => return dns::set_with_rfc2136(*server, tsig_key_file.as_deref(), answer).await,
            ChallengeConfig::TlsAlpn01 { listen } => {
                let listeners = &self.tls_alpn01;
                ProvisionedKind::TlsAlpn(
                    listeners
                        .closing()
                        .publish(*listen, || listeners.publish(*listen, answer))
                        .await?,
                )
            }
        };
        Ok(Provisioned { kind })
    }

    fn publish(&self, addr: SocketAddr, token: &str, answer: &str) -> Result<(), ChallengeError> {
        // Binding happens under the registry lock (bind and listen do not block), so two
        // renewals validating at once can never both try to bind the same address.
        let mut map = lock(&self.http01);
        if let Some(l) = map.get(&addr) {
            lock(&l.tokens).insert(token.to_string(), answer.to_string());
            return Ok(());
        }
        let listener = bind(addr).map_err(|source| ChallengeError::Listen {
            kind: "http-01",
            addr,
            source,
        })?;
        let tokens = Arc::new(Mutex::new(HashMap::new()));
        lock(&tokens).insert(token.to_string(), answer.to_string());
        let (closed_tx, closed) = Closing::channel();
        let serving = serve(addr, listener, tokens.clone(), closed_tx);
        tracing::debug!(%addr, "http-01 listener started");
        map.insert(
            addr,
            Http01Listener {
                tokens,
                _serving: serving,
                closed,
            },
        );
        Ok(())
    }

    fn withdraw(&self, addr: SocketAddr, token: &str) {
        let mut map = lock(&self.http01);
        let empty = match map.get(&addr) {
            Some(l) => {
                let mut tokens = lock(&l.tokens);
                tokens.remove(token);
                tokens.is_empty()
            }
            None => false,
        };
        if empty {
            if let Some(l) = map.remove(&addr) {
                self.http01_closing.insert(addr, l.closed.clone());
            }
            tracing::debug!(%addr, "http-01 listener stopped");
        }
    }

    /// Number of built-in listeners (http-01 and tls-alpn-01) open now (for tests and status).
    pub fn open_listeners(&self) -> usize {
        lock(&self.http01).len() + self.tls_alpn01.open()
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

fn write_webroot(webroot: &Path, token: &str, answer: &str) -> Result<PathBuf, ChallengeError> {
    let dir = webroot.join(".well-known/acme-challenge");
    let path = dir.join(token);
    let err = |source| ChallengeError::Webroot {
        path: path.clone(),
        source,
    };
    // The web server (another user, e.g. www-data) must read the answer, so the directories
    // renewd creates are 0755 and the answer 0644 (public by design) whatever the umask: the
    // shipped unit's UMask=0077 would otherwise make them 0700/0600, and the web server
    // would answer the CA 404. Directories that already exist keep their modes.
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(webroot)
        .map_err(err)?;
    for d in [webroot.join(".well-known"), dir] {
        match fs::DirBuilder::new().mode(0o755).create(&d) {
            Ok(()) => fs::set_permissions(&d, fs::Permissions::from_mode(0o755)).map_err(err)?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(err(e)),
        }
    }
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(&path)
        .map_err(err)?;
    f.set_permissions(fs::Permissions::from_mode(0o644))
        .map_err(err)?;
    f.write_all(answer.as_bytes()).map_err(err)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
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

    /// The webroot answer and the directories made for it are readable by the web server's
    /// user whatever renewd's umask (the shipped unit sets UMask=0077). The umask is
    /// process-wide, so the check runs in a child process of this test binary, started with
    /// umask 077 (see `webroot_answer_modes_in_child`).
    #[test]
    fn webroot_answer_is_world_readable_under_umask_077() {
        use std::os::unix::process::CommandExt;
        let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
        cmd.args([
            "--exact",
            "challenge::tests::webroot_answer_modes_in_child",
            "--nocapture",
        ])
        .env("RENEWD_UMASK_CHILD", "1");
        // SAFETY: umask(2) is async-signal-safe and touches nothing but the child.
        unsafe {
            cmd.pre_exec(|| {
                nix::libc::umask(0o077);
                Ok(())
            });
        }
        let out = cmd.output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains("1 passed"),
            "child under umask 077: {}\n{text}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The child half of `webroot_answer_is_world_readable_under_umask_077`; does nothing
    /// unless started by it.
    #[test]
    fn webroot_answer_modes_in_child() {
        if std::env::var_os("RENEWD_UMASK_CHILD").is_none() {
            return;
        }
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let dir = tempfile::tempdir().unwrap();
        let webroot = dir.path().join("www");
        fs::create_dir(&webroot).unwrap();
        fs::set_permissions(&webroot, fs::Permissions::from_mode(0o750)).unwrap();
        let path = write_webroot(&webroot, "tok", "tok.thumb").unwrap();
        assert_eq!(mode(&path), 0o644, "the answer");
        assert_eq!(mode(&webroot.join(".well-known")), 0o755);
        assert_eq!(mode(&webroot.join(".well-known/acme-challenge")), 0o755);
        assert_eq!(
            mode(&webroot),
            0o750,
            "an existing directory keeps its mode"
        );
    }
}

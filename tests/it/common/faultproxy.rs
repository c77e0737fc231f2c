//! A fault-injecting HTTPS reverse proxy in front of a harness [`Pebble`]: the CA as seen
//! through a bad network or a CA having a bad day.
//!
//! [`FaultProxy::start`] listens on 127.0.0.1 with its own TLS certificate (from a throwaway
//! CA written to [`FaultProxy::ca_pem_path`]: give it to renewd as the CA's `trust_roots`),
//! offers only `http/1.1` through ALPN, and forwards every request to Pebble, trusting
//! Pebble's TLS root. The `Host` header is forwarded unchanged: Pebble builds every URL it
//! sends (directory, `Location`, `Link`, order and authorization objects) from it, and checks
//! the `url` a client signed into each JWS against it, so renewd sees only the proxy's URLs.
//! Anything still naming Pebble's own address (none in Pebble 2.10, but a CA may) is
//! rewritten to the proxy's in the response's headers and body.
//!
//! Tests install [`Rule`]s at run time: a method and a path substring (Pebble's paths are
//! `/dir`, `/nonce-plz`, `/sign-me-up`, `/order-plz`, `/my-order/`, `/authZ/`, `/chalZ/`,
//! `/finalize-order/`, `/certZ/`, `/draft-ietf-acme-ari-03/renewalInfo/`), optionally for the
//! next N matching requests only, and an [`Action`]. The first matching rule with matches
//! left applies. Every request is logged ([`FaultProxy::log`]) with when it arrived and
//! ended, its status and the rule applied, from which [`FaultProxy::max_in_flight`] counts
//! the most requests to one path in flight at once.

use std::collections::VecDeque;
use std::fmt;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use super::{write_file, Pebble};

// ---------------------------------------------------------------------------
// Rules

/// What the proxy does with a request a [`Rule`] matches.
#[derive(Debug, Clone)]
pub enum Action {
    /// Answer `code` (500, 503, …) with an ACME `serverInternal` problem, and a
    /// `Retry-After` header when given (seconds or an HTTP-date, sent verbatim). Pebble
    /// never sees the request.
    Status {
        code: u16,
        retry_after: Option<String>,
    },
    /// Answer 429 with a `rateLimited` problem and the `Retry-After` given, if any.
    RateLimited { retry_after: Option<String> },
    /// Answer 400 `badNonce`, with a fresh nonce from Pebble in `Replay-Nonce` as RFC 8555
    /// requires. Pebble never sees the request.
    BadNonce,
    /// Reset the connection (SO_LINGER 0, close) without answering or forwarding.
    Reset,
    /// Forward the request (Pebble acts on it), then reset the connection instead of
    /// answering: the answer is lost.
    ResetAfterForward,
    /// Hold the request for `duration`, then forward it, or close the connection.
    Stall {
        duration: Duration,
        then: AfterStall,
    },
    /// Forward, then replace the answer's body by garbage of the same length. Like the two
    /// below, applies to a 2xx answer only: any other passes through unchanged (so a resent
    /// request's `badNonce` reaches the client as such).
    Garble,
    /// Forward, then send the headers (with the full `Content-Length`) and half the body,
    /// and close the connection.
    Truncate,
    /// Forward, then answer with this body instead of Pebble's (e.g. a certificate download
    /// replaced by another PEM chain).
    ReplaceBody(String),
    /// Forward, then remove this top-level member from the answer's JSON object (e.g.
    /// `replaces` from a new order: a CA that ignores a field RFC 9773 says to echo).
    StripField(String),
    /// Forward, then parse the answer's JSON body and set the value at `pointer` (RFC 6901;
    /// `""` is the whole document; a missing member of an object is added) to `value`
    /// before answering: a hostile CA's huge, wrongly typed or out-of-range fields
    /// (`tests/it/fuzz.rs`). A body that is not JSON passes through.
    EditJson {
        pointer: String,
        value: serde_json::Value,
    },
    /// For `/finalize-order/`: take the public key of the CSR the client sent, sign a
    /// certificate for it with the proxy's forging CA as [`Forge`] says, forward the real
    /// finalize (so the order completes), and answer the next certificate download
    /// (`/certZ/`) with the forged chain (leaf, then the forging CA) instead of Pebble's.
    Forge(Forge),
}

/// What a [`Action::Stall`] does once its time is up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterStall {
    Forward,
    Drop,
}

/// The certificate [`Action::Forge`] makes.
#[derive(Debug, Clone)]
pub struct Forge {
    /// The names; `None`: the CSR's own.
    pub names: Option<Vec<String>>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    /// Certify a fresh key instead of the CSR's.
    pub other_key: bool,
    /// Send, after the leaf, a CA certificate that did not sign it.
    pub break_chain: bool,
}

impl Forge {
    /// A certificate for the CSR's key and names, valid from an hour ago for a day, which
    /// chains to the forging CA sent with it: passes every check renewd makes.
    pub fn faithful() -> Forge {
        let now = SystemTime::now();
        Forge {
            names: None,
            not_before: now - Duration::from_secs(3600),
            not_after: now + Duration::from_secs(86400),
            other_key: false,
            break_chain: false,
        }
    }

    pub fn names(mut self, names: &[&str]) -> Forge {
        self.names = Some(names.iter().map(|s| s.to_string()).collect());
        self
    }

    /// Valid for a day, ended an hour ago.
    pub fn expired(mut self) -> Forge {
        let now = SystemTime::now();
        self.not_before = now - Duration::from_secs(25 * 3600);
        self.not_after = now - Duration::from_secs(3600);
        self
    }

    pub fn other_key(mut self) -> Forge {
        self.other_key = true;
        self
    }

    pub fn break_chain(mut self) -> Forge {
        self.break_chain = true;
        self
    }
}

impl Action {
    /// A problem document with HTTP status `code` and no Retry-After.
    pub fn status(code: u16) -> Action {
        Action::Status {
            code,
            retry_after: None,
        }
    }

    fn label(&self) -> String {
        match self {
            Action::Status { code, retry_after } => match retry_after {
                Some(ra) => format!("status {code} retry-after {ra}"),
                None => format!("status {code}"),
            },
            Action::RateLimited { retry_after } => match retry_after {
                Some(ra) => format!("429 retry-after {ra}"),
                None => "429".into(),
            },
            Action::BadNonce => "badNonce".into(),
            Action::Reset => "reset".into(),
            Action::ResetAfterForward => "reset after forward".into(),
            Action::Stall { duration, then } => format!("stall {duration:?} then {then:?}"),
            Action::Garble => "garble".into(),
            Action::Truncate => "truncate".into(),
            Action::ReplaceBody(_) => "replace body".into(),
            Action::StripField(f) => format!("strip {f:?}"),
            Action::EditJson { pointer, .. } => format!("edit json {pointer}"),
            Action::Forge(_) => "forge".into(),
        }
    }
}

/// Which requests an [`Action`] applies to.
#[derive(Debug, Clone)]
pub struct Rule {
    /// `None`: any method.
    pub method: Option<String>,
    /// A substring of the request's path.
    pub path: String,
    /// Matches left; `None`: every match.
    pub times: Option<usize>,
    pub action: Action,
}

impl Rule {
    pub fn new(method: &str, path: &str, action: Action) -> Rule {
        Rule {
            method: Some(method.to_string()),
            path: path.to_string(),
            times: None,
            action,
        }
    }

    pub fn any_method(path: &str, action: Action) -> Rule {
        Rule {
            method: None,
            path: path.to_string(),
            times: None,
            action,
        }
    }

    /// Only the next `n` matching requests.
    pub fn times(mut self, n: usize) -> Rule {
        self.times = Some(n);
        self
    }

    fn matches(&self, method: &str, path: &str) -> bool {
        self.times != Some(0)
            && self.method.as_deref().is_none_or(|m| m == method)
            && path.contains(&self.path)
    }
}

// ---------------------------------------------------------------------------
// The log

/// One request the proxy saw.
#[derive(Debug, Clone)]
pub struct LogEntry {
    /// When the request (head and body) had arrived.
    pub start: Instant,
    /// When its answer was written, or the connection closed without one.
    pub end: Instant,
    pub method: String,
    /// Path and query.
    pub path: String,
    /// The status sent; `None` when the connection was reset or closed instead.
    pub status: Option<u16>,
    /// The rule's action applied, if any.
    pub rule: Option<String>,
    /// The request's `User-Agent` header, if any.
    pub user_agent: Option<String>,
    /// The request's body as received.
    pub body: Vec<u8>,
}

impl LogEntry {
    /// The decoded JSON payload of a JWS-signed ACME request (e.g. a new-order's
    /// `identifiers` and `replaces`); `None` when the body is not one.
    pub fn jws_payload(&self) -> Option<serde_json::Value> {
        use base64::Engine;
        let jws: serde_json::Value = serde_json::from_slice(&self.body).ok()?;
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(jws["payload"].as_str()?)
            .ok()?;
        serde_json::from_slice(&payload).ok()
    }
}

impl fmt::Display for LogEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} -> {} ({:?}){}",
            self.method,
            self.path,
            self.status
                .map_or_else(|| "no answer".to_string(), |s| s.to_string()),
            self.end.duration_since(self.start),
            self.rule
                .as_ref()
                .map(|r| format!(" [{r}]"))
                .unwrap_or_default()
        )
    }
}

// ---------------------------------------------------------------------------
// The proxy

struct Shared {
    rules: Mutex<Vec<Rule>>,
    log: Mutex<Vec<LogEntry>>,
    /// Requests being answered and not logged yet.
    responding: AtomicUsize,
    /// Forged chains waiting for the next certificate download.
    forged: Mutex<VecDeque<String>>,
    forge_ca: Issuer<'static, KeyPair>,
    forge_ca_pem: String,
    /// Another CA, whose certificate a broken chain carries.
    stranger_ca_pem: String,
    upstream: String,
    own: String,
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
}

/// A running proxy; stops on drop.
pub struct FaultProxy {
    /// `https://127.0.0.1:PORT`
    pub base_url: String,
    /// `https://127.0.0.1:PORT/dir`: the directory renewd is given.
    pub directory_url: String,
    /// PEM of the CA that signed the proxy's TLS certificate: renewd's `trust_roots`.
    pub ca_pem_path: PathBuf,
    /// Pebble's base URL, `https://127.0.0.1:PORT`.
    pub upstream: String,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl FaultProxy {
    /// Starts a proxy in front of `pebble`; it answers when this returns.
    pub fn start(pebble: &Pebble) -> FaultProxy {
        let dir = tempfile::Builder::new()
            .prefix("renewd-faultproxy-")
            .tempdir()
            .expect("tempdir");
        let (tls_cert_pem, tls_key_pem, tls_ca_pem) = tls_identity();
        let ca_pem_path = dir.path().join("faultproxy-root.pem");
        write_file(&ca_pem_path, &tls_ca_pem);
        let (forge_ca, forge_ca_pem) = make_ca("renewd fault proxy forging CA");
        let (_, stranger_ca_pem) = make_ca("renewd fault proxy forging CA");

        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let base_url = format!("https://127.0.0.1:{port}");
        let upstream = pebble
            .directory_url
            .strip_suffix("/dir")
            .expect("pebble directory ends with /dir")
            .to_string();

        let client = upstream_client(&pebble.tls_root_path);
        let shared = Arc::new(Shared {
            rules: Mutex::new(Vec::new()),
            log: Mutex::new(Vec::new()),
            responding: AtomicUsize::new(0),
            forged: Mutex::new(VecDeque::new()),
            forge_ca,
            forge_ca_pem,
            stranger_ca_pem,
            upstream: upstream.clone(),
            own: base_url.clone(),
            client,
        });
        let acceptor = tls_acceptor(&tls_cert_pem, &tls_key_pem);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = {
            let shared = shared.clone();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("proxy runtime");
                rt.block_on(async move {
                    let listener =
                        tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                    let mut stop_rx = stop_rx;
                    loop {
                        tokio::select! {
                            _ = &mut stop_rx => break,
                            accepted = listener.accept() => {
                                let Ok((tcp, _)) = accepted else { continue };
                                let (shared, acceptor) = (shared.clone(), acceptor.clone());
                                tokio::spawn(async move {
                                    if let Ok(tls) = acceptor.accept(tcp).await {
                                        serve_connection(tls, shared).await;
                                    }
                                });
                            }
                        }
                    }
                });
                rt.shutdown_background();
            })
        };
        FaultProxy {
            directory_url: format!("{base_url}/dir"),
            base_url,
            ca_pem_path,
            upstream,
            shared,
            stop: Some(stop_tx),
            thread: Some(thread),
            _dir: dir,
        }
    }

    /// Adds a rule after those installed already.
    pub fn add_rule(&self, rule: Rule) {
        self.shared.rules.lock().unwrap().push(rule);
    }

    /// Removes every rule (and any forged chain still waiting).
    pub fn clear_rules(&self) {
        self.shared.rules.lock().unwrap().clear();
        self.shared.forged.lock().unwrap().clear();
    }

    /// Matches left of each rule, in order (`None`: unlimited).
    pub fn rules_left(&self) -> Vec<Option<usize>> {
        self.shared
            .rules
            .lock()
            .unwrap()
            .iter()
            .map(|r| r.times)
            .collect()
    }

    /// Every request answered (or dropped) so far, in the order they arrived. A request
    /// still held (a stall) appears once the proxy lets go of it.
    pub fn log(&self) -> Vec<LogEntry> {
        let deadline = Instant::now() + Duration::from_secs(2);
        while self.shared.responding.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        let mut log = self.shared.log.lock().unwrap().clone();
        log.sort_by_key(|e| e.start);
        log
    }

    /// The requests whose method is `method` (any when empty) and whose path contains
    /// `path`, in the order they arrived.
    pub fn requests(&self, method: &str, path: &str) -> Vec<LogEntry> {
        self.log()
            .into_iter()
            .filter(|e| (method.is_empty() || e.method == method) && e.path.contains(path))
            .collect()
    }

    /// The log as text, one line per request, for assertion messages.
    pub fn log_text(&self) -> String {
        let log = self.log();
        let Some(first) = log.first().map(|e| e.start) else {
            return "(no requests)\n".into();
        };
        log.iter()
            .map(|e| {
                format!(
                    "{:>8.3}s {e}\n",
                    e.start.duration_since(first).as_secs_f64()
                )
            })
            .collect()
    }

    /// The most requests whose path contains `path` that were in flight at the proxy at
    /// once (from arrival to the end of the answer).
    pub fn max_in_flight(&self, path: &str) -> usize {
        let mut events: Vec<(Instant, i32)> = Vec::new();
        for e in self.requests("", path) {
            events.push((e.start, 1));
            events.push((e.end, -1));
        }
        // At equal times, an end comes before a start: touching is not overlapping.
        events.sort_by_key(|&(t, d)| (t, d));
        let (mut now, mut max) = (0i32, 0i32);
        for (_, d) in events {
            now += d;
            max = max.max(now);
        }
        max as usize
    }

    /// One request through the proxy, as a client would send it (trusting
    /// [`FaultProxy::ca_pem_path`]): status, headers, body. 10 s timeout.
    pub fn request(&self, method: &str, path: &str) -> Result<ProxyResponse, String> {
        let url = format!("{}{path}", self.base_url);
        let root = self.ca_pem_path.clone();
        let method = method.to_string();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async move {
                let client = upstream_client(&root);
                let req = http::Request::builder()
                    .method(method.as_str())
                    .uri(&url)
                    .header("user-agent", "renewd-faultproxy-test")
                    .body(Full::new(Bytes::new()))
                    .map_err(|e| e.to_string())?;
                let rsp = tokio::time::timeout(Duration::from_secs(10), client.request(req))
                    .await
                    .map_err(|_| "timed out".to_string())?
                    .map_err(|e| format!("{e:?}"))?;
                let status = rsp.status().as_u16();
                let headers = rsp
                    .headers()
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.as_str().to_string(),
                            String::from_utf8_lossy(v.as_bytes()).into_owned(),
                        )
                    })
                    .collect();
                let body = rsp
                    .into_body()
                    .collect()
                    .await
                    .map_err(|e| format!("body: {e:?}"))?
                    .to_bytes();
                Ok(ProxyResponse {
                    status,
                    headers,
                    body: body.to_vec(),
                })
            })
        })
        .join()
        .map_err(|_| "client thread panicked".to_string())?
    }
}

/// What [`FaultProxy::request`] got.
#[derive(Debug, Clone)]
pub struct ProxyResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl ProxyResponse {
    pub fn header(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------------------
// Serving

struct Request {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// How a request is answered, once [`handle`] has decided.
enum Plan {
    Answer(Answer),
    /// The headers with the whole `Content-Length`, half the body, then the connection
    /// closed.
    Truncated(Answer),
    /// The connection reset without an answer.
    Reset,
    /// The connection closed without an answer.
    Close,
}

async fn serve_connection(tls: TlsStream<TcpStream>, shared: Arc<Shared>) {
    let mut conn = BufReader::new(tls);
    loop {
        let req = match read_request(&mut conn).await {
            Ok(Some(r)) => r,
            Ok(None) | Err(_) => return,
        };
        let start = Instant::now();
        let wants_close = req
            .headers
            .iter()
            .any(|(k, v)| k.eq_ignore_ascii_case("connection") && v.eq_ignore_ascii_case("close"));
        let rule = take_rule(&shared, &req);
        let label = rule.as_ref().map(Action::label);
        let (plan, label) = handle(&shared, &req, rule, label).await;
        // From the first byte of the answer until the request is logged, readers of the
        // log wait: a client that has its answer finds its request in the log.
        shared.responding.fetch_add(1, Ordering::SeqCst);
        let (status, close) = match plan {
            Plan::Answer(a) => (
                Some(a.status),
                write_answer(&mut conn, &a, None).await.is_err(),
            ),
            Plan::Truncated(a) => {
                let _ = write_answer(&mut conn, &a, Some(a.body.len() / 2)).await;
                (Some(a.status), true)
            }
            Plan::Reset => {
                reset(&mut conn);
                (None, true)
            }
            Plan::Close => (None, true),
        };
        shared.log.lock().unwrap().push(LogEntry {
            start,
            end: Instant::now(),
            method: req.method.clone(),
            path: req.target.clone(),
            status,
            rule: label,
            user_agent: req
                .headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("user-agent"))
                .map(|(_, v)| v.clone()),
            body: req.body.clone(),
        });
        shared.responding.fetch_sub(1, Ordering::SeqCst);
        if close || wants_close {
            return;
        }
    }
}

fn take_rule(shared: &Shared, req: &Request) -> Option<Action> {
    let mut rules = shared.rules.lock().unwrap();
    let rule = rules
        .iter_mut()
        .find(|r| r.matches(&req.method, &req.target))?;
    if let Some(n) = rule.times.as_mut() {
        *n -= 1;
    }
    Some(rule.action.clone())
}

async fn read_request(
    conn: &mut BufReader<TlsStream<TcpStream>>,
) -> std::io::Result<Option<Request>> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    let mut lines: Vec<String> = Vec::new();
    loop {
        let mut line = Vec::new();
        if conn.read_until(b'\n', &mut line).await? == 0 {
            return if lines.is_empty() {
                Ok(None)
            } else {
                Err(bad("eof in the head"))
            };
        }
        let line = String::from_utf8_lossy(&line)
            .trim_end_matches(['\r', '\n'])
            .to_string();
        if line.is_empty() {
            if lines.is_empty() {
                continue;
            }
            break;
        }
        lines.push(line);
        if lines.len() > 200 {
            return Err(bad("head too long"));
        }
    }
    let mut parts = lines[0].split_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return Err(bad("bad request line"));
    };
    let mut headers = Vec::new();
    let mut length = 0usize;
    for l in &lines[1..] {
        let Some((k, v)) = l.split_once(':') else {
            return Err(bad("bad header"));
        };
        let (k, v) = (k.trim().to_string(), v.trim().to_string());
        if k.eq_ignore_ascii_case("content-length") {
            length = v.parse().map_err(|_| bad("bad content-length"))?;
        }
        if k.eq_ignore_ascii_case("transfer-encoding") {
            return Err(bad("chunked requests are not supported"));
        }
        headers.push((k, v));
    }
    let mut body = vec![0; length];
    conn.read_exact(&mut body).await?;
    Ok(Some(Request {
        method: method.to_string(),
        target: target.to_string(),
        headers,
        body,
    }))
}

/// A complete answer, before it is written.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// Decides how to answer `req` (forwarding it to Pebble first when the action says so).
async fn handle(
    shared: &Shared,
    req: &Request,
    action: Option<Action>,
    mut label: Option<String>,
) -> (Plan, Option<String>) {
    let answer = match action {
        Some(Action::Status { code, retry_after }) => problem(
            code,
            "serverInternal",
            &format!("fault proxy: injected HTTP {code}"),
            retry_after.as_deref(),
        ),
        Some(Action::RateLimited { retry_after }) => problem(
            429,
            "rateLimited",
            "fault proxy: too many requests",
            retry_after.as_deref(),
        ),
        Some(Action::BadNonce) => {
            let mut a = problem(
                400,
                "badNonce",
                "fault proxy: JWS has an invalid anti-replay nonce",
                None,
            );
            if let Some(nonce) = fresh_nonce(shared, req).await {
                a.headers.push(("Replay-Nonce".into(), nonce));
            }
            a
        }
        Some(Action::Reset) => return (Plan::Reset, label),
        Some(Action::ResetAfterForward) => {
            let _ = forward(shared, req).await;
            return (Plan::Reset, label);
        }
        Some(Action::Stall { duration, then }) => {
            tokio::time::sleep(duration).await;
            if then == AfterStall::Drop {
                return (Plan::Close, label);
            }
            match forward(shared, req).await {
                Some(a) => a,
                None => return (Plan::Close, label),
            }
        }
        Some(
            edit @ (Action::Garble
            | Action::Truncate
            | Action::ReplaceBody(_)
            | Action::StripField(_)
            | Action::EditJson { .. }),
        ) => return edit_forwarded(shared, req, edit, label).await,
        Some(Action::Forge(forge)) => {
            match forge_from_finalize(shared, &req.body, &forge) {
                Ok(chain) => shared.forged.lock().unwrap().push_back(chain),
                Err(e) => label = Some(format!("forge failed: {e}")),
            }
            match forward(shared, req).await {
                Some(a) => a,
                None => return (Plan::Close, label),
            }
        }
        None => {
            let mut a = match forward(shared, req).await {
                Some(a) => a,
                None => return (Plan::Close, label),
            };
            if req.method == "POST" && req.target.contains("/certZ/") && a.status == 200 {
                if let Some(chain) = shared.forged.lock().unwrap().pop_front() {
                    a.body = chain.into_bytes();
                    label = Some("forged certificate".into());
                }
            }
            a
        }
    };
    (Plan::Answer(answer), label)
}

/// Forwards `req` and applies `edit` (an action that changes a successful answer) to
/// Pebble's answer if it is a 2xx; any other status passes through, said in the label.
async fn edit_forwarded(
    shared: &Shared,
    req: &Request,
    edit: Action,
    mut label: Option<String>,
) -> (Plan, Option<String>) {
    let mut a = match forward(shared, req).await {
        None => return (Plan::Close, label),
        Some(a) if !(200..300).contains(&a.status) => {
            label = label.map(|l| format!("{l} (passed a {} through)", a.status));
            return (Plan::Answer(a), label);
        }
        Some(a) => a,
    };
    match edit {
        Action::Garble => {
            let garbage = b"\xff\x00<garbage/>{{{";
            a.body = (0..a.body.len())
                .map(|i| garbage[i % garbage.len()])
                .collect();
        }
        Action::Truncate => return (Plan::Truncated(a), label),
        Action::ReplaceBody(body) => a.body = body.into_bytes(),
        Action::StripField(field) => match serde_json::from_slice::<serde_json::Value>(&a.body) {
            Ok(serde_json::Value::Object(mut obj)) => {
                if obj.remove(&field).is_none() {
                    label = label.map(|l| format!("{l} (absent)"));
                }
                a.body = serde_json::to_vec_pretty(&obj).expect("json");
            }
            _ => label = label.map(|l| format!("{l} (not a JSON object)")),
        },
        Action::EditJson { pointer, value } => {
            if let Ok(mut doc) = serde_json::from_slice::<serde_json::Value>(&a.body) {
                set_pointer(&mut doc, &pointer, value);
                a.body = serde_json::to_vec(&doc).unwrap_or_default();
            }
        }
        _ => unreachable!("not an edit of a forwarded answer"),
    }
    (Plan::Answer(a), label)
}

fn problem(code: u16, kind: &str, detail: &str, retry_after: Option<&str>) -> Answer {
    let body = serde_json::json!({
        "type": format!("urn:ietf:params:acme:error:{kind}"),
        "detail": detail,
        "status": code,
    });
    let mut headers = vec![(
        "Content-Type".to_string(),
        "application/problem+json".to_string(),
    )];
    if let Some(ra) = retry_after {
        headers.push(("Retry-After".into(), ra.to_string()));
    }
    Answer {
        status: code,
        headers,
        body: serde_json::to_vec_pretty(&body).expect("json"),
    }
}

/// Closes the connection with a TCP reset.
fn reset(conn: &mut BufReader<TlsStream<TcpStream>>) {
    let _ = conn.get_ref().get_ref().0.set_zero_linger();
}

const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "upgrade",
    "content-length",
];

/// Forwards `req` to Pebble; `None` when Pebble cannot be reached.
async fn forward(shared: &Shared, req: &Request) -> Option<Answer> {
    let mut builder = http::Request::builder()
        .method(req.method.as_str())
        .uri(format!("{}{}", shared.upstream, req.target));
    for (k, v) in &req.headers {
        if !HOP_BY_HOP.iter().any(|h| k.eq_ignore_ascii_case(h)) {
            builder = builder.header(k.as_str(), v.as_str());
        }
    }
    let upstream_req = builder
        .body(Full::new(Bytes::from(req.body.clone())))
        .ok()?;
    let rsp = tokio::time::timeout(Duration::from_secs(60), shared.client.request(upstream_req))
        .await
        .ok()?
        .ok()?;
    let status = rsp.status().as_u16();
    let headers: Vec<(String, String)> = rsp
        .headers()
        .iter()
        .filter(|(k, _)| !HOP_BY_HOP.contains(&k.as_str()))
        .map(|(k, v)| {
            let v = String::from_utf8_lossy(v.as_bytes()).replace(&shared.upstream, &shared.own);
            (k.as_str().to_string(), v)
        })
        .collect();
    let body = rsp.into_body().collect().await.ok()?.to_bytes();
    let body = match std::str::from_utf8(&body) {
        Ok(text) if text.contains(&shared.upstream) => {
            text.replace(&shared.upstream, &shared.own).into_bytes()
        }
        _ => body.to_vec(),
    };
    Some(Answer {
        status,
        headers,
        body,
    })
}

/// A nonce from Pebble for a `badNonce` answer.
async fn fresh_nonce(shared: &Shared, req: &Request) -> Option<String> {
    let probe = Request {
        method: "HEAD".into(),
        target: "/nonce-plz".into(),
        headers: req
            .headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("host") || k.eq_ignore_ascii_case("user-agent"))
            .cloned()
            .collect(),
        body: Vec::new(),
    };
    let a = forward(shared, &probe).await?;
    a.headers
        .into_iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("replay-nonce"))
        .map(|(_, v)| v)
}

/// Writes `a`; with `cut`, declares the whole length but sends only `cut` bytes of it.
async fn write_answer(
    conn: &mut BufReader<TlsStream<TcpStream>>,
    a: &Answer,
    cut: Option<usize>,
) -> std::io::Result<()> {
    let reason = http::StatusCode::from_u16(a.status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Unknown");
    let mut head = format!("HTTP/1.1 {} {reason}\r\n", a.status);
    for (k, v) in &a.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", a.body.len()));
    let w = conn.get_mut();
    w.write_all(head.as_bytes()).await?;
    w.write_all(&a.body[..cut.unwrap_or(a.body.len())]).await?;
    w.flush().await?;
    if cut.is_some() {
        w.shutdown().await?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Forging

/// The public key of a CSR, as rcgen needs it to certify it.
struct CsrKey {
    raw: Vec<u8>,
    alg: &'static rcgen::SignatureAlgorithm,
}

impl rcgen::PublicKeyData for CsrKey {
    fn der_bytes(&self) -> &[u8] {
        &self.raw
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        self.alg
    }
}

fn forge_from_finalize(shared: &Shared, jws: &[u8], forge: &Forge) -> Result<String, String> {
    use base64::Engine;
    use x509_parser::certification_request::X509CertificationRequest;
    use x509_parser::extensions::{GeneralName, ParsedExtension};
    use x509_parser::prelude::FromDer;

    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let jws: serde_json::Value =
        serde_json::from_slice(jws).map_err(|e| format!("finalize body: {e}"))?;
    let payload = b64
        .decode(jws["payload"].as_str().ok_or("no payload")?)
        .map_err(|e| format!("payload: {e}"))?;
    let payload: serde_json::Value =
        serde_json::from_slice(&payload).map_err(|e| format!("payload JSON: {e}"))?;
    let csr_der = b64
        .decode(payload["csr"].as_str().ok_or("no csr")?)
        .map_err(|e| format!("csr: {e}"))?;
    let (_, csr) = X509CertificationRequest::from_der(&csr_der).map_err(|e| format!("{e}"))?;
    let spki = &csr.certification_request_info.subject_pki;
    let alg_oid = spki.algorithm.algorithm.to_id_string();
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok())
        .map(|o| o.to_id_string());
    let alg: &'static rcgen::SignatureAlgorithm = match (alg_oid.as_str(), curve.as_deref()) {
        ("1.2.840.10045.2.1", Some("1.2.840.10045.3.1.7")) => &rcgen::PKCS_ECDSA_P256_SHA256,
        ("1.2.840.10045.2.1", Some("1.3.132.0.34")) => &rcgen::PKCS_ECDSA_P384_SHA384,
        ("1.2.840.113549.1.1.1", _) => &rcgen::PKCS_RSA_SHA256,
        other => return Err(format!("unsupported CSR key {other:?}")),
    };
    let mut csr_names = Vec::new();
    for ext in csr.requested_extensions().into_iter().flatten() {
        if let ParsedExtension::SubjectAlternativeName(san) = ext {
            for n in &san.general_names {
                match n {
                    GeneralName::DNSName(d) => csr_names.push(d.to_string()),
                    GeneralName::IPAddress(b) if b.len() == 4 => {
                        let ip: [u8; 4] = (*b).try_into().map_err(|_| "ip")?;
                        csr_names.push(std::net::Ipv4Addr::from(ip).to_string());
                    }
                    _ => {}
                }
            }
        }
    }
    let names = forge.names.clone().unwrap_or(csr_names);
    let mut params = CertificateParams::new(names).map_err(|e| e.to_string())?;
    params.distinguished_name = DistinguishedName::new();
    params.not_before = forge.not_before.into();
    params.not_after = forge.not_after.into();
    let leaf = if forge.other_key {
        let other = KeyPair::generate().map_err(|e| e.to_string())?;
        params.signed_by(&other, &shared.forge_ca)
    } else {
        let key = CsrKey {
            raw: spki.subject_public_key.data.to_vec(),
            alg,
        };
        params.signed_by(&key, &shared.forge_ca)
    }
    .map_err(|e| e.to_string())?;
    let intermediate = if forge.break_chain {
        &shared.stranger_ca_pem
    } else {
        &shared.forge_ca_pem
    };
    Ok(format!("{}{intermediate}", leaf.pem()))
}

// ---------------------------------------------------------------------------
// TLS

fn make_ca(cn: &str) -> (Issuer<'static, KeyPair>, String) {
    let key = KeyPair::generate().expect("CA key");
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.distinguished_name.push(DnType::CommonName, cn);
    let pem = params.self_signed(&key).expect("self-sign CA").pem();
    (Issuer::new(params, key), pem)
}

/// (cert PEM, key PEM, CA PEM) for 127.0.0.1 and localhost.
fn tls_identity() -> (String, String, String) {
    let (ca, ca_pem) = make_ca("renewd fault proxy TLS root");
    let key = KeyPair::generate().expect("leaf key");
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).expect("params");
    params
        .subject_alt_names
        .push(SanType::IpAddress(Ipv4Addr::LOCALHOST.into()));
    params.distinguished_name = DistinguishedName::new();
    let cert = params.signed_by(&key, &ca).expect("sign leaf");
    (cert.pem(), key.serialize_pem(), ca_pem)
}

fn tls_acceptor(cert_pem: &str, key_pem: &str) -> tokio_rustls::TlsAcceptor {
    use rustls::pki_types::pem::PemObject;
    let certs: Vec<_> = rustls::pki_types::CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .expect("cert PEM");
    let key =
        rustls::pki_types::PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).expect("key PEM");
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .expect("server config");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

/// An HTTP/1.1 client trusting only the PEM roots in `root`.
fn upstream_client(
    root: &std::path::Path,
) -> Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>> {
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(root).expect("read root");
    for cert in
        <rustls::pki_types::CertificateDer as rustls::pki_types::pem::PemObject>::pem_slice_iter(
            &pem,
        )
    {
        roots.add(cert.expect("root PEM")).expect("add root");
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .build();
    Client::builder(TokioExecutor::new()).build(connector)
}

/// Sets `doc[pointer]` to `value`, adding a missing last member of an object; a pointer
/// through something that is not there changes nothing.
fn set_pointer(doc: &mut serde_json::Value, pointer: &str, value: serde_json::Value) {
    if pointer.is_empty() {
        *doc = value;
        return;
    }
    let (parent, last) = pointer.rsplit_once('/').unwrap_or(("", pointer));
    let Some(target) = doc.pointer_mut(parent) else {
        return;
    };
    match target {
        serde_json::Value::Object(map) => {
            map.insert(last.replace("~1", "/").replace("~0", "~"), value);
        }
        serde_json::Value::Array(items) => {
            if let Some(slot) = last.parse::<usize>().ok().and_then(|i| items.get_mut(i)) {
                *slot = value;
            }
        }
        _ => {}
    }
}

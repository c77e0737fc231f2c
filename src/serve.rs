//! Serving a listening socket until cancelled: the one accept loop every listener of renewd
//! runs (`/metrics`, the built-in http-01 and tls-alpn-01 responders, the control socket).
//!
//! Anyone who can reach a listener can open connections and keep them idle, or trickle
//! bytes. Without bounds, a thousand of them take every file descriptor the process has: the
//! accept loop then spins on `EMFILE`, and renewals fail with "Too many open files". So every
//! listener gets:
//!
//! * a **connection cap** (a semaphore of [`Limits::max_connections`] permits). When it is
//!   full, the next connection is accepted and the *oldest connection still waiting for its
//!   request* is closed to make room (each handler says when its request has arrived:
//!   [`Conn::started`]). Neither textbook choice works against an idle flood: closing new
//!   connections at once, or leaving them in the kernel's backlog, both lock out every honest
//!   client (the CA validating, Prometheus scraping, root's `status`) until the flood's own
//!   connections time out, and the flood refills the slots at once. Closing the oldest idle
//!   one means a flood must open `max_connections` connections within an honest client's
//!   round trip to shut it out. Connections being answered are never closed to make room;
//!   when every slot is answering, the new connection waits (in hand) for a slot;
//! * **timeouts** set by each handler on reading its request (hyper's `header_read_timeout`,
//!   the TLS handshake, the control request line) and a **lifetime cap**
//!   ([`Limits::lifetime`]) from accept to close;
//! * an accept loop that, when the process or system is out of descriptors or memory
//!   (`EMFILE`, `ENFILE`, `ENOBUFS`, `ENOMEM`), sleeps (10 ms doubling to 1 s) instead of
//!   spinning, and drops nothing it has accepted;
//! * shutdown that waits for the connection tasks: [`Serving::stopped`] cancels the accept
//!   loop and every connection, and returns once all of them, and the listening socket, are
//!   gone (tokio-util's `CancellationToken` cancels them, its `TaskTracker` waits for them).
//!
//! The caps are sized from `RLIMIT_NOFILE` ([`connection_cap`]), and all listeners together
//! hold at most a quarter of it (beyond that a new connection is closed at once, whichever
//! listener it came to), so the listeners can never take more than a small share of the
//! descriptors renewals need
//! (connections to CAs, deployed files, hooks). [`raise_nofile_limit`] raises the soft limit
//! towards the hard one at start.

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// First pause of the accept loop after a resource-exhaustion error; doubled up to
/// [`MAX_BACKOFF`] while the errors last.
const MIN_BACKOFF: Duration = Duration::from_millis(10);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// A listener at its cap says so at most this often (with the count since it last said so).
const REPORT_EVERY: Duration = Duration::from_secs(60);

/// Each listener's cap is at most this share (1/N) of `RLIMIT_NOFILE`; renewd runs at most a
/// few listeners at once (metrics, control, one or two challenge responders), so together
/// they hold at most about a quarter of the descriptors and the rest stay for renewals.
const SHARE_OF_NOFILE: u64 = 16;

/// Bounds of one listener.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Most connections served at once. See the module documentation for what happens to
    /// the next one.
    pub(crate) max_connections: usize,
    /// Longest a connection may live, from accept to close; `None`: as long as its handler
    /// takes (the control socket, whose `renew` answers wait for the renewal; its request
    /// and its answer are each bounded by the handler).
    pub(crate) lifetime: Option<Duration>,
}

/// A listening socket the accept loop can take connections from.
pub(crate) trait Listener: Send + 'static {
    /// One accepted connection (with the peer's address, where there is one).
    type Stream: Send + 'static;
    /// Waits for the next connection.
    fn accept(&self) -> impl Future<Output = io::Result<Self::Stream>> + Send;
}

impl Listener for tokio::net::TcpListener {
    type Stream = (tokio::net::TcpStream, SocketAddr);
    fn accept(&self) -> impl Future<Output = io::Result<Self::Stream>> + Send {
        tokio::net::TcpListener::accept(self)
    }
}

impl Listener for tokio::net::UnixListener {
    type Stream = tokio::net::UnixStream;
    async fn accept(&self) -> io::Result<Self::Stream> {
        tokio::net::UnixListener::accept(self).await.map(|(s, _)| s)
    }
}

/// The connections of one listener still waiting for their request, oldest first: the ones
/// closed to make room when the cap is reached.
#[derive(Default)]
struct Waiting {
    next: AtomicU64,
    by_age: Mutex<BTreeMap<u64, CancellationToken>>,
}

impl Waiting {
    fn register(self: &Arc<Self>) -> Conn {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let evict = CancellationToken::new();
        lock(&self.by_age).insert(id, evict.clone());
        Conn(Arc::new(ConnInner {
            id,
            evict,
            waiting: self.clone(),
        }))
    }

    /// Closes the oldest connection still waiting for its request; false when there is none.
    fn evict_oldest(&self) -> bool {
        match lock(&self.by_age).pop_first() {
            Some((_, token)) => {
                token.cancel();
                true
            }
            None => false,
        }
    }
}

/// One accepted connection, as its handler sees it. Cloning shares it.
#[derive(Clone)]
pub(crate) struct Conn(Arc<ConnInner>);

struct ConnInner {
    id: u64,
    evict: CancellationToken,
    waiting: Arc<Waiting>,
}

impl Conn {
    /// The connection's request has arrived (a whole HTTP request head, a whole control
    /// request): from now on it is being answered, and is no longer closed to make room for
    /// a new connection.
    pub(crate) fn started(&self) {
        lock(&self.0.waiting.by_age).remove(&self.0.id);
    }
}

impl Drop for ConnInner {
    fn drop(&mut self) {
        lock(&self.waiting.by_age).remove(&self.id);
    }
}

/// A running listener. Dropping it, or [`Serving::stop`], stops it: the listening socket is
/// closed and every connection is cut.
pub(crate) struct Serving {
    cancel: CancellationToken,
    /// The accept loop and every connection task it spawned.
    tasks: TaskTracker,
}

impl Serving {
    /// Stops accepting and cuts every connection, without waiting.
    pub(crate) fn stop(&self) {
        self.cancel.cancel();
    }

    /// Stops, and returns once the listening socket is closed and every connection task has
    /// ended.
    pub(crate) async fn stopped(self) {
        self.cancel.cancel();
        self.tasks.wait().await;
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Serves `listener` until `stop` resolves, then stops it and returns once every connection
/// task has ended: [`spawn`] and [`Serving::stopped`] in one, for a caller that owns the
/// listener for its whole life.
pub(crate) async fn serve_until<L, H, F>(
    what: String,
    listener: L,
    limits: Limits,
    handler: H,
    stop: impl Future<Output = ()>,
) where
    L: Listener,
    H: Fn(L::Stream, Conn) -> F + Send + Sync + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let serving = spawn(what, listener, limits, None, handler);
    stop.await;
    serving.stopped().await;
}

/// Serves `listener` until stopped: each connection runs `handler(stream, conn)` in its own
/// task, within `limits`. `what` names the listener in logs (e.g. `metrics 127.0.0.1:9443`).
/// `closed`, if given, is dropped once the listening socket has been closed (see
/// `challenge::Closing`).
pub(crate) fn spawn<L, H, F>(
    what: String,
    listener: L,
    limits: Limits,
    closed: Option<watch::Sender<()>>,
    handler: H,
) -> Serving
where
    L: Listener,
    H: Fn(L::Stream, Conn) -> F + Send + Sync + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    spawn_within(what, listener, limits, all_listeners(), closed, handler)
}

/// The connections of every listener of the process together: at most 1/4 of the soft
/// `RLIMIT_NOFILE` (as it is when the first listener starts), however many listeners there
/// are (one per distinct challenge `listen` address).
fn all_listeners() -> Arc<Semaphore> {
    static ALL: std::sync::OnceLock<Arc<Semaphore>> = std::sync::OnceLock::new();
    ALL.get_or_init(|| {
        let soft = nofile_limit().map(|(soft, _)| soft).unwrap_or(1024);
        let share = usize::try_from(soft / 4).unwrap_or(usize::MAX);
        Arc::new(Semaphore::new(share.clamp(8, Semaphore::MAX_PERMITS)))
    })
    .clone()
}

/// [`spawn`], sharing `total` with other listeners instead of the process-wide budget.
fn spawn_within<L, H, F>(
    what: String,
    listener: L,
    limits: Limits,
    total: Arc<Semaphore>,
    closed: Option<watch::Sender<()>>,
    handler: H,
) -> Serving
where
    L: Listener,
    H: Fn(L::Stream, Conn) -> F + Send + Sync + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let cancel = CancellationToken::new();
    let tasks = TaskTracker::new();
    let acceptor = Acceptor {
        permits: Arc::new(Semaphore::new(limits.max_connections.max(1))),
        waiting: Arc::new(Waiting::default()),
        what,
        limits,
        total,
        cancel: cancel.clone(),
        tasks: tasks.clone(),
        backoff: MIN_BACKOFF,
        evicted: Throttled::default(),
        refused: Throttled::default(),
    };
    tasks.spawn(async move {
        acceptor.run(listener, handler).await;
        // The listening socket is closed (`run` consumed it): say so.
        drop(closed);
    });
    // No task is added once the accept loop and its connections have ended.
    tasks.close();
    Serving { cancel, tasks }
}

/// A warning said at most once per [`REPORT_EVERY`], with how many times it happened since.
#[derive(Default)]
struct Throttled {
    count: u64,
    last: Option<tokio::time::Instant>,
}

impl Throttled {
    /// Counts one occurrence; returns the count to report if it is time to say so.
    fn note(&mut self) -> Option<u64> {
        self.count += 1;
        if self.last.is_some_and(|t| t.elapsed() < REPORT_EVERY) {
            return None;
        }
        self.last = Some(tokio::time::Instant::now());
        Some(std::mem::take(&mut self.count))
    }
}

/// One listener's accept loop and its bookkeeping.
struct Acceptor {
    what: String,
    limits: Limits,
    /// This listener's connection slots ([`Limits::max_connections`]).
    permits: Arc<Semaphore>,
    /// Every listener's connections together.
    total: Arc<Semaphore>,
    waiting: Arc<Waiting>,
    cancel: CancellationToken,
    tasks: TaskTracker,
    backoff: Duration,
    evicted: Throttled,
    refused: Throttled,
}

/// Both permits a connection holds while it lives.
type Permits = (OwnedSemaphorePermit, OwnedSemaphorePermit);

impl Acceptor {
    /// Accepts until cancelled; each connection within a slot and the process-wide share
    /// runs in its own tracked task.
    async fn run<L, H, F>(mut self, mut listener: L, handler: H)
    where
        L: Listener,
        H: Fn(L::Stream, Conn) -> F + Send + Sync + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        while let Some(stream) = self.accept(&mut listener).await {
            let Some(slot) = self.slot().await else {
                break;
            };
            // Every listener together holds its whole share of descriptors (many
            // listeners, each at its cap): this connection is closed at once.
            let Some(share) = self.share() else {
                drop(stream);
                continue;
            };
            let conn = self.waiting.register();
            let evicted = conn.0.evict.clone();
            let served = handler(stream, conn);
            self.spawn_connection(served, evicted, (slot, share));
        }
    }

    /// The next connection; `None` once cancelled. When the process or the system is out of
    /// resources, pauses (doubling up to [`MAX_BACKOFF`]) instead of spinning.
    async fn accept<L: Listener>(&mut self, listener: &mut L) -> Option<L::Stream> {
        // `&mut`: a listener need only be `Send`, not `Sync`, to be held across the await.
        loop {
            let accepted = tokio::select! {
                biased;
                _ = self.cancel.cancelled() => return None,
                a = listener.accept() => a,
            };
            match accepted {
                Ok(stream) => {
                    self.backoff = MIN_BACKOFF;
                    return Some(stream);
                }
                Err(e) if out_of_resources(&e) => {
                    if self.backoff == MIN_BACKOFF {
                        tracing::warn!(listener = %self.what, error = %e,
                            "cannot accept a connection: out of resources; pausing the listener");
                    }
                    tokio::select! {
                        _ = self.cancel.cancelled() => return None,
                        _ = tokio::time::sleep(self.backoff) => {}
                    }
                    self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                }
                // The connection went away before it was accepted (ECONNABORTED and the
                // like): nothing to do but take the next one.
                Err(e) => tracing::debug!(listener = %self.what, error = %e, "accept failed"),
            }
        }
    }

    /// A slot for the connection just accepted: at the cap, the oldest connection still
    /// waiting for its request is closed to make room, and this one waits for a slot (in
    /// hand). `None` once cancelled.
    async fn slot(&mut self) -> Option<OwnedSemaphorePermit> {
        // At the cap, let the connection tasks just spawned run first: a burst of
        // connections is accepted faster than their handlers are polled, and one whose
        // request is already there must get to say so before anyone is chosen to be closed.
        if self.permits.available_permits() == 0 {
            tokio::task::yield_now().await;
        }
        if let Ok(permit) = self.permits.clone().try_acquire_owned() {
            return Some(permit);
        }
        if self.waiting.evict_oldest() {
            // One line per minute at most: a flood must not flood the journal too.
            if let Some(evicted) = self.evicted.note() {
                tracing::warn!(listener = %self.what, cap = self.limits.max_connections, evicted,
                    "connection cap reached: closing the oldest idle connections");
            }
        }
        tokio::select! {
            _ = self.cancel.cancelled() => None,
            p = self.permits.clone().acquire_owned() => p.ok(),
        }
    }

    /// A share of the process-wide budget, or `None` (said once a minute at most).
    fn share(&mut self) -> Option<OwnedSemaphorePermit> {
        match self.total.clone().try_acquire_owned() {
            Ok(permit) => Some(permit),
            Err(_) => {
                if let Some(refused) = self.refused.note() {
                    tracing::warn!(listener = %self.what, refused,
                        "all listeners together are at their share of open files: closing new \
                         connections at once");
                }
                None
            }
        }
    }

    /// Runs one connection's handler in a tracked task, until it ends, its lifetime is up,
    /// it is evicted, or the listener is cancelled.
    fn spawn_connection<F>(&self, served: F, evicted: CancellationToken, permits: Permits)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let cancel = self.cancel.clone();
        let lifetime = self.limits.lifetime;
        self.tasks.spawn(async move {
            let _permits = permits;
            let served = async move {
                match lifetime {
                    Some(limit) => {
                        let _ = tokio::time::timeout(limit, served).await;
                    }
                    None => served.await,
                }
            };
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = evicted.cancelled() => {}
                _ = served => {}
            }
        });
    }
}

/// Errors that say the process or the system is out of descriptors or memory: accepting
/// again at once would fail the same way.
fn out_of_resources(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(nix::libc::EMFILE | nix::libc::ENFILE | nix::libc::ENOBUFS | nix::libc::ENOMEM)
    )
}

/// The process's `RLIMIT_NOFILE` (soft, hard).
pub(crate) fn nofile_limit() -> io::Result<(u64, u64)> {
    use nix::sys::resource::{getrlimit, Resource};
    getrlimit(Resource::RLIMIT_NOFILE).map_err(io::Error::from)
}

/// The soft `RLIMIT_NOFILE` [`raise_nofile_limit`] aims for when the hard limit allows.
pub(crate) const NOFILE_TARGET: u64 = 65536;

/// Raises the soft `RLIMIT_NOFILE` towards the hard limit — the usual practice for a daemon
/// that holds many descriptors (systemd keeps the default soft limit at 1024 for programs
/// still using select(2), and expects the others to raise it themselves) — but no higher
/// than [`NOFILE_TARGET`]: reload commands inherit it, and some programs close every
/// descriptor number up to it before they exec. Never lowers it. Returns the soft limit now
/// in force; an error (a sandbox refusing setrlimit) leaves the limit as it was.
pub fn raise_nofile_limit() -> io::Result<u64> {
    use nix::sys::resource::{setrlimit, Resource};
    let (soft, hard) = nofile_limit()?;
    let wanted = hard.min(NOFILE_TARGET);
    if soft >= wanted {
        return Ok(soft);
    }
    setrlimit(Resource::RLIMIT_NOFILE, wanted, hard).map_err(io::Error::from)?;
    Ok(wanted)
}

/// The connection cap for a listener that wants at most `wanted`: no more than
/// 1/[`SHARE_OF_NOFILE`] of the soft `RLIMIT_NOFILE` (read now), and at least 4.
pub(crate) fn connection_cap(wanted: usize) -> usize {
    let soft = nofile_limit().map(|(soft, _)| soft).unwrap_or(1024);
    let share = usize::try_from(soft / SHARE_OF_NOFILE).unwrap_or(usize::MAX);
    wanted.min(share).max(4)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    /// A listener whose handler waits for one line, marks it started, and answers "ok".
    async fn line_server(limits: Limits) -> (Serving, SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let serving = spawn(
            "test".into(),
            listener,
            limits,
            None,
            |(mut stream, _): (TcpStream, SocketAddr), conn: Conn| async move {
                let mut byte = [0u8; 1];
                while stream.read(&mut byte).await.is_ok_and(|n| n == 1) {
                    if byte[0] == b'\n' {
                        conn.started();
                        let _ = stream.write_all(b"ok\n").await;
                        return;
                    }
                }
            },
        );
        (serving, addr)
    }

    async fn ask(addr: SocketAddr) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"hello\n").await.unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out).await;
        out
    }

    /// Reads until EOF or error: true when the server closed the connection.
    async fn closed_by_server(s: &mut TcpStream) -> bool {
        let mut buf = [0u8; 16];
        matches!(
            tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }

    #[tokio::test]
    async fn an_idle_flood_is_closed_oldest_first_and_an_honest_client_is_answered() {
        let (serving, addr) = line_server(Limits {
            max_connections: 8,
            lifetime: None,
        })
        .await;
        let mut idle = Vec::new();
        for _ in 0..8 {
            idle.push(TcpStream::connect(addr).await.unwrap());
        }
        // The cap is full of idle connections; an honest client still gets its answer.
        let answer = tokio::time::timeout(Duration::from_secs(10), ask(addr))
            .await
            .expect("answered while the cap is full of idle connections");
        assert_eq!(answer, "ok\n");
        // ... because the oldest idle connection was closed to make room.
        assert!(closed_by_server(&mut idle[0]).await);
        serving.stopped().await;
        for s in idle.iter_mut().skip(1) {
            assert!(closed_by_server(s).await, "stopping cuts every connection");
        }
    }

    #[tokio::test]
    async fn connections_being_answered_are_not_closed_to_make_room() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (release_tx, release_rx) = watch::channel(false);
        let serving = spawn(
            "test".into(),
            listener,
            Limits {
                max_connections: 2,
                lifetime: None,
            },
            None,
            move |(mut stream, _): (TcpStream, SocketAddr), conn: Conn| {
                let mut release = release_rx.clone();
                async move {
                    conn.started();
                    let _ = release.wait_for(|r| *r).await;
                    let _ = stream.write_all(b"done\n").await;
                }
            },
        );
        let mut busy = [
            TcpStream::connect(addr).await.unwrap(),
            TcpStream::connect(addr).await.unwrap(),
        ];
        let mut third = TcpStream::connect(addr).await.unwrap();
        release_tx.send(true).unwrap();
        for s in busy.iter_mut().chain(std::iter::once(&mut third)) {
            let mut out = String::new();
            tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut out))
                .await
                .expect("answered")
                .unwrap();
            assert_eq!(out, "done\n");
        }
        serving.stopped().await;
    }

    #[tokio::test]
    async fn the_lifetime_cap_closes_a_connection() {
        let (serving, addr) = line_server(Limits {
            max_connections: 8,
            lifetime: Some(Duration::from_millis(200)),
        })
        .await;
        let mut idle = TcpStream::connect(addr).await.unwrap();
        assert!(closed_by_server(&mut idle).await);
        serving.stopped().await;
    }

    /// A listening socket whose process is out of descriptors: every accept fails with
    /// EMFILE at once.
    struct OutOfDescriptors(Arc<AtomicU64>);

    impl Listener for OutOfDescriptors {
        type Stream = ();
        fn accept(&self) -> impl Future<Output = io::Result<()>> + Send {
            self.0.fetch_add(1, Ordering::Relaxed);
            std::future::ready(Err(io::Error::from_raw_os_error(nix::libc::EMFILE)))
        }
    }

    /// Out of descriptors, the accept loop sleeps (10 ms doubling to 1 s) instead of
    /// spinning: in half a second it tries a handful of times, not millions.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn out_of_descriptors_the_accept_loop_backs_off() {
        let calls = Arc::new(AtomicU64::new(0));
        let serving = spawn(
            "test".into(),
            OutOfDescriptors(calls.clone()),
            Limits {
                max_connections: 8,
                lifetime: None,
            },
            None,
            |(), _conn| async {},
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        let tries = calls.load(Ordering::Relaxed);
        // 10 + 20 + 40 + 80 + 160 ms: at most 6 tries by 500 ms, whatever the load.
        assert!((1..=6).contains(&tries), "{tries} accepts in 500 ms");
        serving.stopped().await;
    }

    /// However many listeners there are, together they hold no more than their shared
    /// budget: beyond it a new connection is closed at once.
    #[tokio::test]
    async fn all_listeners_together_stay_within_their_share() {
        let total = Arc::new(Semaphore::new(3));
        let limits = Limits {
            max_connections: 8,
            lifetime: None,
        };
        let mut servers = Vec::new();
        let mut addrs = Vec::new();
        for _ in 0..2 {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            addrs.push(listener.local_addr().unwrap());
            servers.push(spawn_within(
                "test".into(),
                listener,
                limits,
                total.clone(),
                None,
                |(mut stream, _): (TcpStream, SocketAddr), _conn: Conn| async move {
                    let mut buf = [0u8; 16];
                    let _ = stream.read(&mut buf).await;
                },
            ));
        }
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(TcpStream::connect(addrs[0]).await.unwrap());
        }
        // The three are being served (their permits taken) once the total is used up.
        tokio::time::timeout(Duration::from_secs(10), async {
            while total.available_permits() > 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("three connections served");
        let mut other = TcpStream::connect(addrs[1]).await.unwrap();
        assert!(closed_by_server(&mut other).await, "closed at once");
        drop(held.pop());
        // A slot of the total is free again: the other listener serves a new connection.
        tokio::time::timeout(Duration::from_secs(10), async {
            while total.available_permits() == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("a permit released");
        let mut again = TcpStream::connect(addrs[1]).await.unwrap();
        let mut buf = [0u8; 1];
        let still_open =
            tokio::time::timeout(Duration::from_millis(300), again.read(&mut buf)).await;
        assert!(still_open.is_err(), "served, not closed: {still_open:?}");
        for s in servers {
            s.stopped().await;
        }
    }

    #[test]
    fn exhaustion_errors_are_recognised() {
        for errno in [
            nix::libc::EMFILE,
            nix::libc::ENFILE,
            nix::libc::ENOBUFS,
            nix::libc::ENOMEM,
        ] {
            assert!(out_of_resources(&io::Error::from_raw_os_error(errno)));
        }
        assert!(!out_of_resources(&io::Error::from_raw_os_error(
            nix::libc::ECONNABORTED
        )));
    }

    #[test]
    fn caps_stay_a_small_share_of_the_descriptor_limit() {
        let (soft, _) = nofile_limit().unwrap();
        let cap = connection_cap(1_000_000);
        assert!(
            cap as u64 <= (soft / SHARE_OF_NOFILE).max(4),
            "{cap} of {soft}"
        );
        assert_eq!(connection_cap(2), 4);
    }
}

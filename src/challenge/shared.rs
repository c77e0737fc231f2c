//! The built-in listeners of one challenge type (http-01, tls-alpn-01), one per `listen`
//! address and shared by every certificate validating through it: bound (under the
//! registry lock, so two renewals never race to bind) when the first answer is published,
//! closed when the last one is withdrawn.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use super::{bind, lock, ChallengeError, Closing};

/// The answers one listener serves, by key (an http-01 token, a tls-alpn-01 SNI name).
pub(super) type Answers<V> = Arc<Mutex<HashMap<String, V>>>;

/// Starts serving `Answers` on a bound listener; drops the sender once its socket is closed.
pub(super) type Serve<V> =
    fn(SocketAddr, tokio::net::TcpListener, Answers<V>, watch::Sender<()>) -> crate::serve::Serving;

/// Every listener of one challenge type in the process.
pub(super) struct SharedListeners<V> {
    /// `http-01` or `tls-alpn-01`, for messages.
    kind: &'static str,
    serve: Serve<V>,
    inner: Arc<Mutex<HashMap<SocketAddr, Listener<V>>>>,
    /// The stopped listeners whose sockets may still be open.
    closing: Closing,
}

impl<V> Clone for SharedListeners<V> {
    fn clone(&self) -> Self {
        SharedListeners {
            kind: self.kind,
            serve: self.serve,
            inner: self.inner.clone(),
            closing: self.closing.clone(),
        }
    }
}

struct Listener<V> {
    answers: Answers<V>,
    /// Dropping it stops the server task and cuts its connections.
    _serving: crate::serve::Serving,
    /// Closed once the server task has closed the listening socket.
    closed: watch::Receiver<()>,
}

impl<V> SharedListeners<V> {
    pub(super) fn new(kind: &'static str, serve: Serve<V>) -> Self {
        SharedListeners {
            kind,
            serve,
            inner: Arc::default(),
            closing: Closing::default(),
        }
    }

    /// Adds an answer (`add`) to the listener on `addr`, bound and started first when none
    /// serves it, once no stopped listener holds `addr` (see [`Closing::publish`]).
    pub(super) async fn publish(
        &self,
        addr: SocketAddr,
        add: impl Fn(&mut HashMap<String, V>),
    ) -> Result<(), ChallengeError> {
        self.closing
            .publish(addr, || {
                let mut map = lock(&self.inner);
                let answers = match map.get(&addr) {
                    Some(l) => l.answers.clone(),
                    None => self.start(&mut map, addr)?,
                };
                add(&mut lock(&answers));
                Ok(())
            })
            .await
    }

    fn start(
        &self,
        map: &mut HashMap<SocketAddr, Listener<V>>,
        addr: SocketAddr,
    ) -> Result<Answers<V>, ChallengeError> {
        let listener = bind(addr).map_err(|source| ChallengeError::Listen {
            kind: self.kind,
            addr,
            source,
        })?;
        let answers: Answers<V> = Arc::default();
        let (closed_tx, closed) = Closing::channel();
        let serving = (self.serve)(addr, listener, answers.clone(), closed_tx);
        tracing::debug!(%addr, "{} listener started", self.kind);
        map.insert(
            addr,
            Listener {
                answers: answers.clone(),
                _serving: serving,
                closed,
            },
        );
        Ok(answers)
    }

    /// Takes an answer back (`remove`); the listener on `addr` stops when none is left.
    pub(super) fn withdraw(&self, addr: SocketAddr, remove: impl FnOnce(&mut HashMap<String, V>)) {
        let mut map = lock(&self.inner);
        let empty = match map.get(&addr) {
            Some(l) => {
                let mut answers = lock(&l.answers);
                remove(&mut answers);
                answers.is_empty()
            }
            None => false,
        };
        if empty {
            if let Some(l) = map.remove(&addr) {
                self.closing.insert(addr, l.closed.clone());
            }
            tracing::debug!(%addr, "{} listener stopped", self.kind);
        }
    }

    /// How many listeners are open now.
    #[cfg(test)]
    pub(super) fn open(&self) -> usize {
        lock(&self.inner).len()
    }
}

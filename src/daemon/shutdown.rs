//! How the daemon is asked to stop: SIGTERM or SIGINT. The loop waits on
//! [`Shutdown::requested`] beside its other events; once it fires, the loop stops taking
//! work, lets the renewals under way finish for at most [`SHUTDOWN_GRACE`], and returns.

use std::time::Duration;

use tokio::signal::unix::{signal, Signal, SignalKind};

/// How long a stopping daemon waits for renewals under way before abandoning them.
pub(super) const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// The stop signals, listened to from the daemon's start.
pub(super) struct Shutdown {
    term: Signal,
    int: Signal,
}

impl Shutdown {
    /// Starts listening for SIGTERM and SIGINT (their default action no longer applies).
    pub(super) fn listen() -> std::io::Result<Shutdown> {
        Ok(Shutdown {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// Resolves when a stop is asked.
    pub(super) async fn requested(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

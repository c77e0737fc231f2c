//! The state directory as one process works in it: opened, locked (one renewd at a time),
//! with the [`Renewer`] every batch of the process shares, and what a crash interrupted
//! recovered before anything looks at the deployed files. `run`, `run --once` and the
//! in-process `renew` and `revoke` all start this way.

use std::sync::Arc;

use crate::config::Config;
use crate::renew::{BatchReport, Renewer};
use crate::state::{StateDir, StateError, StateLock};

/// The state directory, held under its lock until dropped, and the process's renewer.
pub(crate) struct Session {
    pub(crate) state: StateDir,
    pub(crate) renewer: Arc<Renewer>,
    _lock: StateLock,
}

impl Session {
    /// Opens (creating it if needed) `config.state_dir` and takes its lock without waiting.
    /// Errors: the directory is unsafe or cannot be created, or another process holds the
    /// lock (a running daemon).
    pub(crate) fn open(config: &Config) -> Result<Session, StateError> {
        let state = StateDir::open(&config.state_dir)?;
        let lock = state.try_lock()?;
        let renewer = Arc::new(Renewer::new(state.clone(), config.max_concurrent_renewals));
        Ok(Session {
            state,
            renewer,
            _lock: lock,
        })
    }

    /// Finishes or undoes the swaps a crash interrupted (see [`Renewer::recover`]); to be
    /// called before anything else looks at the deployed files.
    pub(crate) async fn recover(&self, config: &Config) -> BatchReport {
        self.renewer.recover(&config.certificates).await
    }

    /// [`Session::open`], then [`Session::recover`].
    pub(crate) async fn open_recovered(
        config: &Config,
    ) -> Result<(Session, BatchReport), StateError> {
        let session = Session::open(config)?;
        let recovered = session.recover(config).await;
        Ok((session, recovered))
    }
}

//! The per-CA gate: one per CA, shared by every request to it (every order, every
//! certificate), so that nothing is sent before the CA's `Retry-After` (RFC 9110 §10.2.3)
//! or a backoff after transient failures. A pause longer than [`MAX_INLINE_WAIT`] is
//! remembered across restarts in the pause file the caller names (`state::CaFiles::pause`).
//!
//! The gate never reads the clock: every method that needs the time takes `now`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::fsutil;

/// The nominal wait after a request's first transient failure; doubled after each further
/// one, up to [`BACKOFF_MAX`]. The actual wait is random between half and all of it, so
/// many renewd instances spread out, yet none ever retries sooner than half the nominal
/// wait (1 s → 2 s → 4 s nominal for the [`super::http::MAX_TRIES`] sends).
pub(crate) const BACKOFF_BASE: Duration = Duration::from_secs(1);
/// The longest nominal backoff.
pub(crate) const BACKOFF_MAX: Duration = Duration::from_secs(16);
/// The longest Retry-After waited for within one renewal attempt. A longer one fails the
/// attempt, pauses the CA and becomes the certificate's retry time.
pub(crate) const MAX_INLINE_WAIT: Duration = Duration::from_secs(60);
/// How long a CA that answered 429 without a Retry-After is left alone.
pub(crate) const DEFAULT_RATE_LIMIT_PAUSE: Duration = Duration::from_secs(3600);
/// The longest Retry-After renewd believes: a CA asking for a year is retried after a day
/// (and may say so again).
pub(crate) const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// What renewd knows about one CA's willingness to be contacted, shared by every request
/// to it (every order, every certificate): no request leaves before `not_before`.
pub(crate) struct Gate {
    ca: String,
    /// Where a long pause is remembered across restarts (beside the account file).
    pause_file: PathBuf,
    state: Mutex<GateState>,
}

#[derive(Default)]
struct GateState {
    not_before: Option<SystemTime>,
    /// Why `not_before` is set, for the message of a request refused without contacting.
    why: String,
    /// Consecutive `badNonce` answers: the first is routine (a stale nonce), more are a
    /// CA in trouble and are spaced out.
    bad_nonces: u32,
    /// Consecutive transient failures, whichever request had them, and the last one. A
    /// request resent after a garbled answer the CA did process is refused as `badNonce`
    /// and signed again by instant-acme as a *new* request: counting per CA keeps such
    /// chains bounded.
    transient: u32,
    last_transient: String,
    last_transient_at: Option<SystemTime>,
    /// A pause is written to `pause_file`.
    persisted: bool,
}

/// A request refused by the gate, without contacting the CA.
#[derive(Debug, thiserror::Error)]
// The caller's message says until when.
#[error("not contacted: paused after {why}")]
pub(crate) struct GateClosed {
    pub(crate) until: SystemTime,
    pub(crate) why: String,
}

#[derive(Serialize, Deserialize)]
struct StoredPause {
    /// Unix seconds.
    until: u64,
    why: String,
}

/// The pause in force for CA `name` (until when, and why) as recorded beside its account
/// file `account_path` (`NAME.pause`), read now; `None` when it may be contacted.
pub(crate) fn pause_of(name: &str, pause_file: &Path) -> Option<(SystemTime, String)> {
    let now = SystemTime::now();
    Gate::open(name, pause_file.to_path_buf(), now).paused(now)
}

impl Gate {
    /// The gate of CA `ca`, starting paused when `pause_file` says so at `now`.
    pub(crate) fn open(ca: &str, pause_file: PathBuf, now: SystemTime) -> Gate {
        let mut state = GateState::default();
        if let Some(stored) = read_pause(ca, &pause_file) {
            let until = crate::state::from_unix(stored.until);
            if until > now {
                state.not_before = Some(until.min(now + MAX_RETRY_AFTER));
                state.why = stored.why;
                state.persisted = true;
            }
        }
        Gate {
            ca: ca.to_string(),
            pause_file,
            state: Mutex::new(state),
        }
    }

    /// The CA's name, for messages.
    pub(crate) fn ca(&self) -> &str {
        &self.ca
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, GateState> {
        // A panic while holding this lock leaves plain data behind: keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The pause in force at `now`, if the CA must not be contacted for longer than
    /// [`MAX_INLINE_WAIT`].
    pub(crate) fn paused(&self, now: SystemTime) -> Option<(SystemTime, String)> {
        let st = self.lock();
        let until = st.not_before?;
        let wait = until.duration_since(now).unwrap_or_default();
        (wait > MAX_INLINE_WAIT).then(|| (until, st.why.clone()))
    }

    /// How long a request must wait at `now` before it may be sent (zero: at once);
    /// refused when the gate stays closed for longer than [`MAX_INLINE_WAIT`].
    pub(crate) fn wait(&self, now: SystemTime) -> Result<Duration, GateClosed> {
        let st = self.lock();
        let Some(until) = st.not_before else {
            return Ok(Duration::ZERO);
        };
        let wait = until.duration_since(now).unwrap_or_default();
        if wait > MAX_INLINE_WAIT {
            return Err(GateClosed {
                until,
                why: st.why.clone(),
            });
        }
        Ok(wait)
    }

    /// Nothing is sent before `until`; a pause longer than [`MAX_INLINE_WAIT`] from `now`
    /// is written to the pause file.
    pub(crate) fn defer(&self, until: SystemTime, why: String, now: SystemTime) {
        let long = {
            let mut st = self.lock();
            if st.not_before.is_some_and(|t| t >= until) {
                return;
            }
            st.not_before = Some(until);
            st.why = why.clone();
            let long = until.duration_since(now).unwrap_or_default() > MAX_INLINE_WAIT;
            st.persisted |= long;
            long
        };
        if long {
            tracing::warn!(ca = %self.ca, until = %crate::text::rfc3339(until), reason = %why,
                "pausing every request to this CA");
            self.persist(until, why);
        }
    }

    fn persist(&self, until: SystemTime, why: String) {
        let stored = StoredPause {
            until: crate::state::unix(until).saturating_add(1),
            why,
        };
        let written = serde_json::to_vec_pretty(&stored)
            .map_err(io::Error::other)
            .and_then(|b| fsutil::write_atomic(&self.pause_file, &b, 0o600));
        if let Err(e) = written {
            tracing::warn!(ca = %self.ca, path = %self.pause_file.display(), error = %e,
                "cannot remember the pause across restarts");
        }
    }

    /// A transient failure at `now`: returns how many in a row the CA has had.
    pub(crate) fn transient(&self, why: &str, now: SystemTime) -> u32 {
        let mut st = self.lock();
        // A streak is one bad spell: failures a minute apart start a new one (each request
        // still has its own MAX_TRIES).
        if st
            .last_transient_at
            .is_some_and(|t| now.duration_since(t).unwrap_or_default() > MAX_INLINE_WAIT)
        {
            st.transient = 0;
        }
        st.last_transient_at = Some(now);
        st.transient = st.transient.saturating_add(1);
        st.last_transient = why.to_string();
        st.transient
    }

    /// The transient failures in a row so far, and the last one, if any.
    pub(crate) fn transient_streak(&self) -> Option<(u32, String)> {
        let st = self.lock();
        (st.transient > 0).then(|| (st.transient, st.last_transient.clone()))
    }

    /// The CA answered something usable at `now` (anything but `badNonce` and transient
    /// failures): the streaks end, and an expired pause is forgotten.
    pub(crate) fn answered(&self, now: SystemTime) {
        let forget = {
            let mut st = self.lock();
            st.bad_nonces = 0;
            st.transient = 0;
            let expired = st.not_before.is_none_or(|t| t <= now);
            let forget = expired && st.persisted;
            if forget {
                st.persisted = false;
            }
            forget
        };
        if forget {
            let _ = fs::remove_file(&self.pause_file);
        }
    }

    /// The CA answered `badNonce`: returns how long to keep quiet before the next request.
    pub(crate) fn bad_nonce(&self) -> Duration {
        let n = {
            let mut st = self.lock();
            st.bad_nonces = st.bad_nonces.saturating_add(1);
            st.bad_nonces
        };
        if n <= 1 {
            Duration::ZERO
        } else {
            backoff(n - 1, rand::random::<f64>())
        }
    }

    #[cfg(test)]
    pub(super) fn set_not_before(&self, t: SystemTime) {
        self.lock().not_before = Some(t);
    }
}

/// The pause stored in `pause_file`, if it is there and readable (anything else is
/// logged and ignored).
fn read_pause(ca: &str, pause_file: &Path) -> Option<StoredPause> {
    let bytes = match fsutil::read_regular(pause_file, fsutil::caps::STATE, fsutil::Follow::No) {
        Ok(bytes) => bytes,
        Err(e) if e.is_not_found() => return None,
        Err(e) => {
            tracing::warn!(ca = %ca, error = %e, "ignoring an unreadable pause file");
            return None;
        }
    };
    match serde_json::from_slice::<StoredPause>(&bytes) {
        Ok(p) if p.until > crate::state::MAX_UNIX => {
            tracing::warn!(ca = %ca, path = %pause_file.display(), until = p.until,
                "ignoring a pause file whose time is beyond year 9999");
            None
        }
        Ok(p) => Some(p),
        Err(e) => {
            tracing::warn!(ca = %ca, path = %pause_file.display(), error = %e,
                "ignoring an unreadable pause file");
            None
        }
    }
}

/// The wait after the `n`th consecutive transient failure from a CA (1-based): nominally
/// [`BACKOFF_BASE`] doubled `n - 1` times, at most [`BACKOFF_MAX`]; `jitter` in `[0, 1)`
/// picks a point between half and all of it.
pub(crate) fn backoff(n: u32, jitter: f64) -> Duration {
    let exp = n.saturating_sub(1).min(16);
    let nominal = BACKOFF_BASE.saturating_mul(1u32 << exp).min(BACKOFF_MAX);
    nominal.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
}

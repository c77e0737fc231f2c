//! What the daemon tells systemd when it supervises it (`NOTIFY_SOCKET`, sd_notify(3)):
//! READY=1, RELOADING=1 with MONOTONIC_USEC=, STOPPING=1, the one-line STATUS= (sent only
//! when it changes), and the watchdog pings the unit asks for (`WATCHDOG_USEC=`). Outside
//! systemd every call does nothing.

use std::time::Duration;

use sd_notify::NotifyState;

/// The daemon's side of the notify protocol.
pub(super) struct Systemd {
    /// The STATUS= line last sent.
    status: String,
    /// systemd's watchdog, when the unit asks for one: the loop's only periodic wake-up.
    watchdog: Option<tokio::time::Interval>,
}

impl Systemd {
    /// READY=1 with the first STATUS=; starts the watchdog's pings if the unit asks for them.
    pub(super) fn ready(status: String) -> Systemd {
        tell(&[NotifyState::Ready, NotifyState::Status(&status)]);
        let watchdog = sd_notify::watchdog_enabled().map(|timeout| {
            let every = (timeout / 2).max(Duration::from_secs(1));
            tracing::debug!(?every, "watchdog enabled");
            tokio::time::interval_at(tokio::time::Instant::now() + every, every)
        });
        Systemd { status, watchdog }
    }

    /// STATUS=, if `status` differs from the line last sent.
    pub(super) fn status(&mut self, status: String) {
        if status != self.status {
            self.status = status;
            tell(&[NotifyState::Status(&self.status)]);
        }
    }

    /// RELOADING=1 (SIGHUP); [`reloaded`] follows once the configuration is read.
    pub(super) fn reloading(&self) {
        let now = NotifyState::monotonic_usec_now();
        let mut states = vec![NotifyState::Reloading];
        states.extend(now.ok());
        tell(&states);
    }

    pub(super) fn stopping(&self) {
        tell(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
    }

    /// Resolves when the next watchdog ping is due (never without a watchdog); the caller
    /// then calls [`Systemd::ping`].
    pub(super) async fn watchdog_due(&mut self) {
        match self.watchdog.as_mut() {
            Some(w) => {
                w.tick().await;
            }
            None => std::future::pending().await,
        }
    }

    pub(super) fn ping(&self) {
        tell(&[NotifyState::Watchdog]);
    }
}

/// READY=1 after a reload, whether the configuration was taken or refused.
pub(super) fn reloaded() {
    tell(&[NotifyState::Ready]);
}

/// Tells systemd, when it supervises us, why `run` refuses to start: `STATUS=` with the first
/// problem (`FILE:LINE:COL: message`) and how many more there are, so `systemctl status
/// renewd` shows it beside the unit's failure (exit 78). `problems` is the refused
/// configuration's text, one problem per line. Does nothing outside systemd.
pub(crate) fn tell_config_refused(problems: &str) {
    let mut lines = problems.lines().filter(|l| !l.trim().is_empty());
    let first = lines.next().unwrap_or("the configuration cannot be used");
    let more = lines.count();
    let status = if more == 0 {
        format!("bad configuration: {first}")
    } else {
        format!("bad configuration: {first} (and {more} more: renewd check)")
    };
    tell(&[NotifyState::Status(&status)]);
}

/// Sends state to systemd when it supervises us (`NOTIFY_SOCKET`); otherwise does nothing.
fn tell(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

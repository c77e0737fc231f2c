//! The daemon's revocation checks (`crate::revocation`): the next check time is one of the
//! select loop's deadlines — the earliest `next_check` among the certificates of the last
//! inventory, now for one never checked. When it comes, one pass runs on a spawned task
//! (one at a time); it ends in [`Event::RevocationDone`] with the managed certificates it
//! newly found revoked, which are evaluated again (then due at once: reason "revoked") and
//! renewed, and the inventory is collected again (the `revoked` alert, the metric).

use std::time::SystemTime;

use super::{After, Daemon, Event};
use crate::inventory::Inventory;
use crate::revocation::{self, Wanted};

/// The certificates to check and when the next pass is due.
#[derive(Default)]
pub(super) struct Checks {
    wanted: Vec<Wanted>,
    next: Option<SystemTime>,
    running: bool,
}

impl Checks {
    /// When the next pass is due; none while one runs (its end plans the next).
    pub(super) fn next_deadline(&self) -> Option<SystemTime> {
        self.next.filter(|_| !self.running)
    }

    /// Takes the certificates of `inv` (annotated by `revocation::annotate`) and their next
    /// check times.
    pub(super) fn plan(&mut self, inv: &Inventory) {
        self.wanted = revocation::wanted(inv);
        self.next = inv
            .certificates
            .iter()
            .filter_map(|i| i.revocation_next_check)
            .min()
            .map(crate::state::from_unix);
    }
}

impl Daemon {
    /// Starts a pass if one is due at `now` and none runs.
    pub(super) fn start_revocation_checks(&mut self, now: SystemTime) {
        let checks = &mut self.governance.revocation;
        if checks.running || checks.next.is_none_or(|t| t > now) || checks.wanted.is_empty() {
            return;
        }
        checks.running = true;
        let wanted = checks.wanted.clone();
        let renewer = self.renewer.clone();
        let state_dir = self.config.state_dir.clone();
        let events = self.events.clone();
        tokio::spawn(async move {
            let marked = match revocation::pass(&state_dir, wanted.clone(), now).await {
                Ok(store) => {
                    let revoked = revocation::revoked_managed(&wanted, &store);
                    tokio::task::spawn_blocking(move || {
                        revocation::mark_revoked(renewer.state(), &revoked, SystemTime::now())
                    })
                    .await
                    .unwrap_or_default()
                }
                Err(e) => {
                    tracing::error!(error = %e, "revocation not checked");
                    Vec::new()
                }
            };
            let _ = events.send(Event::RevocationDone(marked));
        });
    }

    /// A pass ended: the certificates newly marked revoked are evaluated again (and renewed
    /// once due), and the inventory collected again with the results.
    pub(super) fn revocation_done(&mut self, marked: Vec<String>) {
        let checks = &mut self.governance.revocation;
        checks.running = false;
        // Until the collection below plans again: not before the floor.
        checks.next = Some(SystemTime::now() + revocation::MIN_RECHECK);
        if !marked.is_empty() {
            self.request_evaluations(marked, After::Ari);
        }
        self.refresh_governance();
    }
}

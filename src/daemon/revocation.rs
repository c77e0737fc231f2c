//! The daemon's revocation checks (`crate::revocation`): the next check time is one of the
//! select loop's deadlines — the earliest `next_check` among the certificates of the last
//! inventory, now for one never checked. When it comes, one pass runs on a spawned task
//! (one at a time); it ends in [`Event::RevocationDone`], and the inventory is collected
//! again with the results (the `revoked` alert, the metric). Each collected inventory that
//! shows a managed certificate revoked (found by this daemon's pass or by an `inventory`
//! command) has it marked in its record ([`Event::RevocationMarked`]), evaluated again —
//! then due at once, reason "revoked" — and renewed.

use std::time::{Duration, SystemTime};

use super::{After, Daemon, Event};
use crate::inventory::Inventory;
use crate::revocation::{self, Wanted};

/// Passes start at most this often, whatever the results say (a state directory that
/// cannot be written would otherwise leave every certificate due at once, again and again).
const PASS_SPACING: Duration = Duration::from_secs(60);

/// The certificates to check and when the next pass is due.
#[derive(Default)]
pub(super) struct Checks {
    wanted: Vec<Wanted>,
    next: Option<SystemTime>,
    running: bool,
    last_started: Option<SystemTime>,
}

impl Checks {
    /// When the next pass is due; none while one runs (its end plans the next).
    pub(super) fn next_deadline(&self) -> Option<SystemTime> {
        let next = self.next.filter(|_| !self.running)?;
        Some(match self.last_started {
            Some(t) => next.max(t + PASS_SPACING),
            None => next,
        })
    }

    /// A pass is under way.
    pub(super) fn running(&self) -> bool {
        self.running
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
        if checks.wanted.is_empty() || checks.next_deadline().is_none_or(|t| t > now) {
            return;
        }
        checks.running = true;
        checks.last_started = Some(now);
        let wanted = checks.wanted.clone();
        let state_dir = self.config.state_dir.clone();
        let events = self.events.clone();
        tokio::spawn(async move {
            if let Err(e) = revocation::pass(&state_dir, wanted, now).await {
                tracing::error!(error = %e, "revocation not checked");
            }
            let _ = events.send(Event::RevocationDone);
        });
    }

    /// A pass ended: the inventory is collected again with its results.
    pub(super) fn revocation_done(&mut self) {
        let checks = &mut self.governance.revocation;
        checks.running = false;
        // Until the collection below plans again: not before the floor.
        checks.next = Some(SystemTime::now() + revocation::MIN_RECHECK);
        self.trim_pending = true;
        self.refresh_governance();
    }

    /// Marks (on a blocking thread) the managed certificates that `inv` shows revoked and
    /// whose evaluation does not say so yet; those newly marked come back as
    /// [`Event::RevocationMarked`].
    pub(super) fn mark_revoked(&mut self, inv: &Inventory) {
        let revoked: Vec<(String, String, revocation::Source)> = inv
            .certificates
            .iter()
            .filter(|i| i.revocation == Some(revocation::Status::Revoked))
            .filter_map(|i| {
                let name = i.name.clone()?;
                let e = self.table.get(&name)?;
                if e.eval.decision.reason == crate::schedule::Reason::Revoked {
                    return None;
                }
                let source = i.revocation_source.unwrap_or(revocation::Source::Ocsp);
                Some((name, i.serial.clone()?, source))
            })
            .collect();
        if revoked.is_empty() {
            return;
        }
        let renewer = self.renewer.clone();
        let events = self.events.clone();
        tokio::spawn(async move {
            let marked = tokio::task::spawn_blocking(move || {
                revocation::mark_revoked(renewer.state(), &revoked, SystemTime::now())
            })
            .await
            .unwrap_or_default();
            if !marked.is_empty() {
                let _ = events.send(Event::RevocationMarked(marked));
            }
        });
    }

    /// Certificates newly marked revoked: evaluated again, then renewed once due (at once).
    pub(super) fn revocation_marked(&mut self, marked: Vec<String>) {
        self.request_evaluations(marked, After::Ari);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::{Item, Kind};

    #[test]
    fn the_deadline_is_the_earliest_check_spaced_and_none_while_a_pass_runs() {
        let at = crate::state::from_unix;
        let item = |next: u64| {
            let mut i = Item::blank(Kind::Unmanaged);
            i.paths = vec![format!("/scan/{next}.pem").into()];
            i.serial = Some(format!("{next:x}"));
            i.issuer = Some("CN=ca".into());
            i.revocation_next_check = Some(next);
            i
        };
        let inv = Inventory {
            version: 1,
            generated_at: 0,
            certificates: vec![item(5_000), item(2_000), item(9_000)],
            discovery: Default::default(),
            anchors: Vec::new(),
            anchors_next: None,
        };
        let mut checks = Checks::default();
        assert_eq!(checks.next_deadline(), None);
        checks.plan(&inv);
        assert_eq!(checks.next_deadline(), Some(at(2_000)));
        checks.running = true;
        assert_eq!(
            checks.next_deadline(),
            None,
            "the pass's end plans the next"
        );
        checks.running = false;
        // A pass started at 1,990: the next not before a minute later.
        checks.last_started = Some(at(1_990));
        assert_eq!(checks.next_deadline(), Some(at(2_050)));
    }
}

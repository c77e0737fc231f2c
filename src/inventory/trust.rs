//! The trust-store audit ([`crate::trust`]) against this inventory: the certificates that
//! may chain to a `[trust] paths` anchor are every file the inventory knows (managed files
//! but keys, exceptions, discovered files), and each flagged anchor becomes an item of kind
//! `anchor` for the alerts and metrics of the daemon's inventory pass.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::{Inventory, Item, Kind};
use crate::config::{Config, FileKind};
use crate::trust::{self, Audit, Cache, Report};

/// The files whose certificates count for `stale`.
fn chain_paths<'a>(config: &'a Config, inv: &'a Inventory) -> Vec<&'a Path> {
    let managed = config
        .certificates
        .iter()
        .flat_map(|c| c.files.iter())
        .filter(|(kind, _)| *kind != FileKind::Key)
        .map(|(_, p)| p);
    let others = inv
        .certificates
        .iter()
        .filter(|i| i.kind != Kind::Managed)
        .flat_map(|i| i.paths.iter().map(PathBuf::as_path));
    managed.chain(others).collect()
}

/// Audits `explicit` paths (else the system stores and `[trust] paths`) of `config` at
/// `now`, with the certificates of `inv` for `stale`.
pub(crate) fn audit(
    config: &Config,
    inv: &Inventory,
    explicit: &[PathBuf],
    cache: &mut Cache,
    now: SystemTime,
) -> Report {
    let mut audit = Audit::new(config, explicit);
    audit.chains = trust::read_chains(chain_paths(config, inv));
    audit.run(cache, now)
}

/// The daemon's audit, when `[trust]` is configured: the flagged anchors as items (for the
/// alerts and metrics), and the next instant the audit's verdict may change by itself.
pub(crate) fn daemon_pass(
    config: &Config,
    inv: &Inventory,
    cache: &mut Cache,
    now: SystemTime,
) -> (Vec<Item>, Option<SystemTime>) {
    let Some(t) = &config.trust else {
        return (Vec::new(), None);
    };
    let report = audit(config, inv, &[], cache, now);
    for e in &report.errors {
        tracing::warn!(error = %e, "trust audit: cannot read");
    }
    let next = trust::next_change(&report, t.expiring_within, super::unix(now) as i64)
        .and_then(|s| u64::try_from(s).ok())
        .map(super::from_unix);
    (items(&report), next)
}

/// One item of kind `anchor` for each flagged anchor: `name` is `PATH@sha256:…` (its
/// identity in alert keys), `problem` the flags, `reason` why.
pub(crate) fn items(report: &Report) -> Vec<Item> {
    report
        .anchors
        .iter()
        .filter(|a| a.flagged)
        .map(|a| {
            let mut item = Item::blank(Kind::Anchor);
            item.name = Some(format!("{}@{}", a.path.display(), a.fingerprint));
            item.paths = vec![a.path.clone()];
            item.subject = Some(a.subject.clone());
            item.issuer = Some(a.issuer.clone());
            item.not_before = u64::try_from(a.not_before).ok();
            item.not_after = u64::try_from(a.not_after).ok();
            item.days_left = Some(a.days_left);
            item.anchor_flags = a.flags.iter().map(|f| f.as_str()).collect();
            item.reason = Some(a.reasons.join("; "));
            if let Some(k) = &a.acknowledged {
                item.owner = Some(k.owner.clone());
                item.review_by = Some(k.review_by.clone());
            }
            item
        })
        .collect()
}

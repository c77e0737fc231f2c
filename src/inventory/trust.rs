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
    // A trust store under a discovery path is not a certificate chaining to itself.
    let audited: Vec<PathBuf> = audit.paths.iter().map(|(p, _)| p.clone()).collect();
    let chains = chain_paths(config, inv)
        .into_iter()
        .filter(|p| !audited.iter().any(|a| p.starts_with(a)));
    audit.chains = trust::read_chains(chains, cache);
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
    for e in cache.new_errors(&report.errors) {
        // Paths and names from the files: escaped, so they cannot forge a log line.
        tracing::warn!(error = %crate::text::escape(&e), "trust audit: cannot read");
    }
    let next = trust::next_change(&report, t.expiring_within, super::unix(now) as i64)
        .and_then(|s| u64::try_from(s).ok())
        .map(super::from_unix);
    (items(&report), next)
}

/// One item of kind `anchor` for each flagged anchor: `name` is `PATH@sha256:…` (its
/// identity in alert keys), `problem` the flags, `reason` why. Each name once (the audit
/// merges a certificate's copies in one path already).
pub(crate) fn items(report: &Report) -> Vec<Item> {
    let mut names = std::collections::HashSet::new();
    report
        .anchors
        .iter()
        .filter(|a| a.flagged)
        .filter(|a| names.insert((a.path.clone(), a.fingerprint.clone())))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trust::{AuditedAnchor, Flag};

    fn anchor(cn: &str, flags: &[Flag], flagged: bool) -> AuditedAnchor {
        AuditedAnchor {
            path: PathBuf::from("/etc/nginx/client-ca.pem"),
            file: PathBuf::from("/etc/nginx/client-ca.pem"),
            block: 1,
            copies: 1,
            subject: format!("CN={cn}"),
            issuer: format!("CN={cn}"),
            fingerprint: format!("sha256:{}", cn.repeat(64).get(..64).unwrap_or_default()),
            not_before: 0,
            not_after: 1_000,
            days_left: -1,
            key: "rsa-2048".into(),
            signature_algorithm: "sha1WithRSAEncryption".into(),
            flags: flags.to_vec(),
            reasons: flags.iter().map(|f| f.as_str().to_string()).collect(),
            flagged,
            acknowledged: None,
            mtls: true,
        }
    }

    #[test]
    fn each_flagged_anchor_alerts_critical_once_expired() {
        let report = Report {
            version: 1,
            generated_at: 0,
            expiring_within: 0,
            sources: Vec::new(),
            anchors: vec![
                anchor("a", &[Flag::Expired, Flag::Weak], true),
                anchor("b", &[Flag::Stale], true),
                anchor("c", &[Flag::Stale], false),
                anchor("d", &[], false),
            ],
            errors: Vec::new(),
            flagged: 2,
        };
        let items = items(&report);
        assert_eq!(
            items.len(),
            2,
            "acknowledged and clean anchors are not items"
        );
        let (found, _) = super::super::alerts::conditions(&items, super::super::from_unix(2_000));
        let got: Vec<(&str, &str, &str)> = found
            .iter()
            .map(|c| (c.condition, c.severity, c.key.as_str()))
            .collect();
        let key = |cn: &str| {
            format!(
                "trust_anchor:anchor:/etc/nginx/client-ca.pem@sha256:{}",
                cn.repeat(64)
            )
        };
        assert_eq!(
            got,
            [
                ("trust_anchor", "critical", key("a").as_str()),
                ("trust_anchor", "warning", key("b").as_str())
            ]
        );
        assert!(found[0].message.contains("is flagged expired, weak"));
    }
}

//! Answering `renew` and `revoke` requests: which certificates a request selects, which it
//! leaves alone and why, and one [`RenewResult`] per certificate. The same rules whether the
//! daemon answers (over the control socket) or the command works in process.

use std::time::SystemTime;

use crate::config::{CertConfig, Config};
use crate::control::RenewResult;
use crate::renew::BatchReport;
use crate::schedule::Deployed;
use crate::status::Evaluation;
use crate::text::rfc3339;

/// A request named certificates the configuration does not have.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("no certificate named {} in the configuration", .0.join(", "))]
pub(crate) struct UnknownCertificates(pub(crate) Vec<String>);

/// The results of a revoke: the batch's, each saying which serial was revoked.
pub(crate) fn revoked_results(serial: &str, report: &BatchReport) -> Vec<RenewResult> {
    results(Vec::new(), report, false)
        .into_iter()
        .map(|mut r| {
            r.message = format!("revoked serial {serial}; replacement: {}", r.message);
            r
        })
        .collect()
}

/// The certificates a renew request names; unknown names are an error listing them.
pub(crate) fn select<'a>(
    config: &'a Config,
    names: &[String],
    all: bool,
) -> Result<Vec<&'a CertConfig>, UnknownCertificates> {
    if all {
        return Ok(config.certificates.iter().map(|c| &**c).collect());
    }
    let unknown: Vec<String> = names
        .iter()
        .filter(|n| config.certificate(n).is_none())
        .cloned()
        .collect();
    if !unknown.is_empty() {
        return Err(UnknownCertificates(unknown));
    }
    Ok(names.iter().filter_map(|n| config.certificate(n)).collect())
}

/// Why a renew request leaves a certificate alone, if it does: failed when it cannot be
/// renewed as configured (even with `--force`), skipped when it is not due and there is no
/// `--force`.
pub(crate) fn refusal(
    name: &str,
    ev: &Evaluation,
    force: bool,
    now: SystemTime,
) -> Option<RenewResult> {
    if let Some(why) = &ev.not_renewable {
        return Some(RenewResult {
            name: name.to_string(),
            outcome: "failed".into(),
            message: format!("not renewable as configured: {why}"),
        });
    }
    if force || ev.decision.is_due(now) {
        return None;
    }
    Some(skip_result(
        name,
        ev,
        format!(
            "not due until {} ({}); use --force to renew anyway",
            rfc3339(ev.decision.at),
            ev.decision.reason
        ),
    ))
}

/// A certificate a renew request leaves alone: `skipped`, or `failed` (exit 1) when
/// nothing usable is deployed for it (backing off after failures), since then the user
/// has no certificate.
fn skip_result(name: &str, ev: &Evaluation, why: String) -> RenewResult {
    match &ev.deployed {
        Deployed::Unusable(problem) => RenewResult {
            name: name.to_string(),
            outcome: "failed".into(),
            message: format!("nothing usable is deployed ({problem}); {why}"),
        },
        Deployed::Valid { .. } => skip(name, why),
    }
}

/// A certificate a renew request leaves alone, `skipped`.
pub(crate) fn skip(name: &str, why: String) -> RenewResult {
    RenewResult {
        name: name.to_string(),
        outcome: "skipped".into(),
        message: why,
    }
}

/// One result per certificate of a renew request: the skipped ones, then the batch's.
pub(crate) fn results(
    mut out: Vec<RenewResult>,
    report: &BatchReport,
    dry_run: bool,
) -> Vec<RenewResult> {
    for c in &report.certificates {
        let failed_reload = report
            .reloads
            .iter()
            .find(|r| r.result.is_err() && r.certificates.contains(&c.name));
        out.push(match (&c.result, failed_reload) {
            (Err(e), _) => RenewResult {
                name: c.name.clone(),
                outcome: "failed".into(),
                message: e.to_string(),
            },
            (Ok(r), Some(reload)) => RenewResult {
                name: c.name.clone(),
                outcome: "failed".into(),
                message: format!(
                    "deployed serial {}, but reload {:?} failed: {}",
                    r.serial,
                    reload.argv,
                    reload
                        .result
                        .as_ref()
                        .err()
                        .map(ToString::to_string)
                        .unwrap_or_default()
                ),
            },
            (Ok(r), None) if dry_run => RenewResult {
                name: c.name.clone(),
                outcome: "dry-run-ok".into(),
                message: format!(
                    "order {} at CA {}: every authorization proven, then deactivated; \
                     not finalized, so no certificate was issued and nothing deployed",
                    r.order_url, r.ca
                ),
            },
            (Ok(r), None) => RenewResult {
                name: c.name.clone(),
                outcome: "renewed".into(),
                message: format!(
                    "serial {} from CA {}, valid until {}",
                    r.serial,
                    r.ca,
                    rfc3339(r.not_after),
                ),
            },
        });
    }
    out
}

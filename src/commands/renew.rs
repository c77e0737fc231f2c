//! `renewd renew` and `renewd revoke`: sent to the running daemon over the control socket,
//! or, when none runs, done in this process under the state directory's lock with the same
//! selection rules ([`crate::requests`]).

use std::path::Path;
use std::time::SystemTime;

use super::{known_names, load, CommandError, Outcome};
use crate::config::Config;
use crate::control::{self, RenewResult, Request, Response};
use crate::requests::{refusal, results, revoked_results, select};
use crate::session::Session;
use crate::status;
use crate::text::escape;

/// What `renewd renew` was asked.
#[derive(Debug, Clone, Default)]
pub struct RenewArgs {
    /// Renew even if not due.
    pub force: bool,
    /// Stop before finalize: nothing is issued or deployed.
    pub dry_run: bool,
    /// Every configured certificate (else `names`).
    pub all: bool,
    pub names: Vec<String>,
}

/// `renewd renew`: one line per certificate; [`Outcome::CertificateFailed`] when any failed.
pub async fn renew(arg: Option<&Path>, args: RenewArgs) -> Result<Outcome, CommandError> {
    let (_, cfg) = load(arg)?;
    known_names(&cfg, &args.names)?;
    let req = Request::Renew {
        names: args.names.clone(),
        all: args.all,
        force: args.force,
        dry_run: args.dry_run,
    };
    let results = match ask_daemon(&cfg, &req).await? {
        Some(results) => results,
        None => renew_in_process(&cfg, &args).await?,
    };
    Ok(report(&results))
}

/// `renewd revoke [--reason REASON] NAME`: revoke, then a replacement, reported as `renew`.
pub async fn revoke(
    arg: Option<&Path>,
    name: String,
    reason: Option<String>,
) -> Result<Outcome, CommandError> {
    let (_, cfg) = load(arg)?;
    known_names(&cfg, std::slice::from_ref(&name))?;
    let req = Request::Revoke {
        name: name.clone(),
        reason: reason.clone(),
    };
    let results = match ask_daemon(&cfg, &req).await? {
        Some(results) => results,
        None => revoke_in_process(&cfg, &name, reason.as_deref()).await?,
    };
    Ok(report(&results))
}

/// The running daemon's results for `req`; `None` when no daemon listens.
async fn ask_daemon(cfg: &Config, req: &Request) -> Result<Option<Vec<RenewResult>>, CommandError> {
    match control::request(&cfg.control_socket, req).await {
        Ok(Some(Response::Renew { results })) => Ok(Some(results)),
        Ok(Some(other)) => Err(super::unexpected(other)),
        Ok(None) => Ok(None),
        Err(e) => Err(CommandError::failed(e)),
    }
}

/// Prints one line per certificate; [`Outcome::CertificateFailed`] when any failed.
fn report(results: &[RenewResult]) -> Outcome {
    let mut failed = false;
    for r in results {
        println!("{}: {}: {}", escape(&r.name), r.outcome, escape(&r.message));
        failed |= r.failed();
    }
    if failed {
        Outcome::CertificateFailed
    } else {
        Outcome::Success
    }
}

/// `renewd renew` when no daemon runs: the same selection as the daemon's, done in this
/// process under the state directory's lock.
async fn renew_in_process(
    config: &Config,
    args: &RenewArgs,
) -> Result<Vec<RenewResult>, CommandError> {
    // The lock is held until `session` is dropped, at the end.
    let (session, _) = Session::open_recovered(config)
        .await
        .map_err(CommandError::failed)?;
    let (state, renewer) = (&session.state, &session.renewer);
    let selected = select(config, &args.names, args.all).map_err(CommandError::failed)?;
    let diagnosis = status::diagnose(config);
    let now = SystemTime::now();
    let mut skipped = Vec::new();
    let mut run = Vec::new();
    for cert in selected {
        let mut ev = status::evaluate(cert, &state.load_cert(&cert.name), &config.cas, now);
        ev.not_renewable = diagnosis.not_renewable.get(&cert.name).cloned();
        match refusal(&cert.name, &ev, args.force, now) {
            Some(result) => skipped.push(result),
            None => run.push(cert.clone()),
        }
    }
    let report = renewer.run_batch(run, &config.cas, args.dry_run).await;
    Ok(results(skipped, &report, args.dry_run))
}

/// `renewd revoke` when no daemon runs: revoke at the CA, then issue and deploy a
/// replacement through the normal pipeline, in this process under the state lock.
async fn revoke_in_process(
    config: &Config,
    name: &str,
    reason: Option<&str>,
) -> Result<Vec<RenewResult>, CommandError> {
    // The lock is held until `session` is dropped, at the end.
    let (session, _) = Session::open_recovered(config)
        .await
        .map_err(CommandError::failed)?;
    let renewer = &session.renewer;
    let cert = select(config, &[name.to_string()], false)
        .map_err(CommandError::failed)?
        .into_iter()
        .next()
        .cloned()
        .ok_or_else(|| CommandError::Failed(format!("no certificate named {name}")))?;
    if let Some(why) = status::diagnose(config).not_renewable.get(name) {
        return Err(CommandError::Failed(format!(
            "{name}: not revoked: no replacement could be deployed as configured: {why}"
        )));
    }
    let serial = renewer
        .revoke(&cert, &config.cas, reason)
        .await
        .map_err(CommandError::failed)?;
    let report = renewer.run_batch(vec![cert], &config.cas, false).await;
    Ok(revoked_results(&serial, &report))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(name: &str, outcome: &str) -> RenewResult {
        RenewResult {
            name: name.into(),
            outcome: outcome.into(),
            message: String::new(),
        }
    }

    #[test]
    fn one_failed_certificate_fails_the_command() {
        assert_eq!(report(&[]), Outcome::Success);
        let fine = [result("a", "renewed"), result("b", "skipped")];
        assert_eq!(report(&fine), Outcome::Success);
        let failed = [result("a", "renewed"), result("b", "failed")];
        assert_eq!(report(&failed), Outcome::CertificateFailed);
    }
}

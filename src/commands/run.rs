//! `renewd run`: the configuration judged as `check` judges it, then the daemon
//! ([`crate::daemon::run`]) or, with `--once`, one pass over every certificate.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::check::machine_refusals;
use super::{CommandError, Outcome};
use crate::config::{CertConfig, Config, Diagnosis};
use crate::control;
use crate::daemon;
use crate::schedule::Deployed;
use crate::session::Session;
use crate::state::CertRecord;
use crate::status;
use crate::text::escape;
use crate::text::rfc3339;

/// `renewd run [--once]`. The daemon checks its configuration itself (no
/// `ExecStartPre=renewd check`): systemd's RestartPreventExitStatus=78 only looks at the main
/// process, so a refused configuration must be the main process's exit 78 to leave the unit
/// failed; its first problem also goes to systemd as the STATUS= line, which `systemctl
/// status` keeps after the exit.
pub async fn run(arg: Option<&Path>, once: bool) -> Result<Outcome, CommandError> {
    let (path, cfg) = match super::load(arg) {
        Ok(loaded) => loaded,
        Err(e) => {
            if !once {
                daemon::tell_config_refused(&e.to_string());
            }
            return Err(e.into());
        }
    };
    // The rule `check` applies: errors refuse the configuration, warnings are logged
    // and stop only their certificates.
    // The control socket's directory too: an unsafe one refuses the daemon with exit 78
    // (a bad configuration, never restarted), not a failure systemd would retry.
    // What would damage the machine refuses the whole configuration.
    let refusals = machine_refusals(&cfg, !once);
    if !refusals.is_empty() {
        let text: String = refusals.iter().map(|p| format!("{p}\n")).collect();
        if !once {
            daemon::tell_config_refused(&text);
        }
        return Err(CommandError::Config(escape(&text).into_owned()));
    }
    let diagnosis = status::diagnose_with(&cfg, control::check_socket(&cfg));
    if let Some(e) = diagnosis.errors() {
        if !once {
            daemon::tell_config_refused(&e.to_string());
        }
        return Err(e.into());
    }
    if once {
        return match run_once(&cfg, &diagnosis).await? {
            true => Ok(Outcome::Success),
            false => Ok(Outcome::CertificateFailed),
        };
    }
    daemon::run(&path, cfg, diagnosis)
        .await
        .map_err(CommandError::failed)?;
    Ok(Outcome::Success)
}

/// `renewd run --once`: issues what is missing, renews what is due, then returns whether
/// every certificate is fine. `diagnosis` is [`status::diagnose`]'s verdict on `config`
/// (without errors): its certificates that cannot be renewed are not attempted, and are
/// not fine when they are due.
async fn run_once(config: &Config, diagnosis: &Diagnosis) -> Result<bool, CommandError> {
    status::log_diagnosis(diagnosis);
    // The lock is held until `session` is dropped, at the end.
    let (session, recovered) = Session::open_recovered(config)
        .await
        .map_err(CommandError::failed)?;
    let (state, renewer) = (&session.state, &session.renewer);
    let mut fine = recovered.all_ok();
    // A journal still there after recovery is a swap that could not be recovered (`recover`
    // logged why): that certificate's files are in doubt, so the pass has failed.
    let left = leftover_journals(&state.journal_dir());
    if !left.is_empty() {
        tracing::error!(journals = ?left,
            "interrupted swaps could not be recovered; their files are in doubt");
        fine = false;
    }
    // Each certificate's record and files are read once, for ARI and for the decision; a
    // set renewd deployed is recognised by its digest and not checked again.
    let certs = config.certificates.clone();
    let dir = state.clone();
    let (mut loaded, inspected): (Vec<CertRecord>, Vec<_>) =
        tokio::task::spawn_blocking(move || {
            certs
                .iter()
                .map(|c| {
                    let rec = dir.load_cert(&c.name);
                    let inspected = status::inspect_deployed(c, &rec);
                    (rec, inspected)
                })
                .unzip()
        })
        .await
        .map_err(|e| {
            CommandError::Failed(format!("reading the deployed certificates failed: {e}"))
        })?;
    // Every pass asks the CA's ARI afresh about each deployed certificate (the records come
    // back as the answers left them), unless none of its CAs is to be asked (`ari = false`):
    // those are not even handed over, which keeps a pass without ARI cheap.
    let asks_ari = |c: &CertConfig| {
        c.ca.iter()
            .any(|n| config.cas.get(n).is_some_and(|ca| ca.ari))
    };
    let asked = config
        .certificates
        .iter()
        .zip(&inspected)
        .filter(|(c, _)| asks_ari(c))
        .filter_map(|(c, i)| Some(((**c).clone(), Some(i.as_ref().ok()?.clone()))))
        .collect();
    // A record marked revoked now is read again.
    for name in check_revocation(config, state, &inspected).await {
        if let Some(i) = config.certificates.iter().position(|c| c.name == name) {
            loaded[i] = state.load_cert(&name);
        }
    }
    let mut records = renewer.refresh_ari_all(asked, &config.cas).await;
    let now = SystemTime::now();
    let mut due = Vec::new();
    for ((cert, inspected), loaded) in config.certificates.iter().zip(&inspected).zip(&mut loaded) {
        let rec = match records.remove(&cert.name) {
            Some(rec) => rec,
            None => {
                let mut rec = std::mem::take(loaded);
                if !asks_ari(cert) && rec.ari.as_ref().is_some_and(|a| a.window.is_some()) {
                    // Advice recorded before `ari = false` was set no longer counts: drop it,
                    // so no later process sends `replaces` or shows it.
                    rec.ari = None;
                    if let Err(e) = state.update_cert(&cert.name, |r| r.ari = None) {
                        tracing::warn!(cert = %cert.name, error = %e,
                            "cannot drop ARI advice recorded before ari = false");
                    }
                }
                rec
            }
        };
        let mut ev = status::evaluate_inspected(cert, &rec, &config.cas, now, inspected.as_ref());
        if let Some(w) = &ev.clamp_warning {
            tracing::warn!(cert = %cert.name, "{}: {w}", cert.name);
        }
        ev.not_renewable = diagnosis.not_renewable.get(&cert.name).cloned();
        if let (Some(why), true) = (&ev.not_renewable, ev.decision.is_due(now)) {
            tracing::error!(cert = %cert.name, reason = %ev.decision.reason, error = %why,
                "{}: due ({}) but not renewable as configured: {why}", cert.name, ev.decision.reason);
            fine = false;
        } else if ev.decision.is_due(now) {
            crate::logging::renewal_due(&cert.name, &ev.decision.reason);
            due.push((**cert).clone());
        } else if let Deployed::Unusable(why) = &ev.deployed {
            tracing::error!(cert = %cert.name, error = %why, retry_at = %rfc3339(ev.decision.at),
                "{}: not usable ({why}), and still backing off after earlier failures until {}",
                cert.name, rfc3339(ev.decision.at));
            fine = false;
        } else {
            tracing::info!(cert = %cert.name, next = %rfc3339(ev.decision.at),
                reason = %ev.decision.reason, "{}: not due until {} ({})",
                cert.name, rfc3339(ev.decision.at), ev.decision.reason);
        }
    }
    if due.is_empty() {
        tracing::info!("nothing due");
        return Ok(fine);
    }
    let report = renewer.run_batch(due, &config.cas, false).await;
    Ok(fine && report.all_ok())
}

/// Checks the revocation of the deployed certificates whose check is due: one found revoked
/// is marked in its record, so the pass's decision renews it at once. Returns the names of
/// the certificates whose records were marked.
async fn check_revocation(
    config: &Config,
    state: &crate::state::StateDir,
    inspected: &[Result<crate::x509::CertInfo, crate::deploy::DeployedProblem>],
) -> Vec<String> {
    let wanted: Vec<_> = config
        .certificates
        .iter()
        .zip(inspected)
        .filter_map(|(c, i)| Some(crate::revocation::wanted_managed(c, i.as_ref().ok()?)))
        .collect();
    match crate::revocation::pass(&config.state_dir, wanted.clone(), SystemTime::now()).await {
        Ok(store) => {
            let revoked = crate::revocation::revoked_managed(&wanted, &store);
            crate::revocation::mark_revoked(state, &revoked, SystemTime::now())
        }
        Err(e) => {
            tracing::error!(error = %e, "revocation not checked");
            Vec::new()
        }
    }
}

/// The swap journals in `dir` (`NAME.json`; renewd's own temporaries start with a dot).
/// A directory that cannot be read counts as one left over: nothing says it is clean.
fn leftover_journals(dir: &Path) -> Vec<PathBuf> {
    match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| {
                p.extension().is_some_and(|x| x == "json")
                    && !p
                        .file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            })
            .collect(),
        Err(e) => {
            tracing::error!(dir = %dir.display(), error = %e, "cannot read the swap journals");
            vec![dir.to_path_buf()]
        }
    }
}

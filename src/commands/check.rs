//! `renewd check [--strict]`: the configuration and every path and hook it names, judged
//! by the same rules `run` applies, each problem printed as `FILE:LINE:COL: message`.

use std::path::Path;

use super::{load, CommandError, Outcome};
use crate::config::{self, Config};
use crate::control;
use crate::text::escape;
use crate::{deploy, status};

/// What `run` refuses to start with, because it would damage the machine: a `state_dir`
/// that exists but is not renewd's private directory (it would be chmodded), something other
/// than a socket at `control_socket` (it would be replaced; only for the daemon, `serve`),
/// and two certificates writing one file through different paths. `check` reports the same.
pub(super) fn machine_refusals(cfg: &Config, serve: bool) -> Vec<config::Problem> {
    let mut problems = Vec::new();
    if let Err(e) = crate::state::check_existing(&cfg.state_dir) {
        problems.push(config::Problem::new(
            cfg.key_location("state_dir"),
            e.to_string(),
        ));
    }
    if serve {
        if let Err(e) = control::check_socket_path(&cfg.control_socket) {
            problems.push(config::Problem::new(
                cfg.key_location("control_socket"),
                e.to_string(),
            ));
        }
    }
    problems.extend(deploy::clashing_targets(cfg));
    problems
}

/// `renewd check [--strict]`: every problem, errors and warnings, as `FILE:LINE:COL:
/// [warning: ]message`; exit 78 on errors (or on warnings with `--strict`).
pub async fn check(arg: Option<&Path>, strict: bool) -> Result<Outcome, CommandError> {
    let (path, cfg) = load(arg)?;
    // The control socket's directory is judged here (and by the daemon when it binds):
    // an unsafe one is an error of the whole configuration. So is what would damage the
    // machine (refused by `run` as a whole, not certificate by certificate).
    let refusals = machine_refusals(&cfg, true);
    let mut extra = control::check_socket(&cfg);
    extra.extend(check_profiles(&cfg).await);
    extra.extend(super::persist::check_records(&cfg).await);
    let diagnosis = status::diagnose_with(&cfg, extra);
    for p in refusals.iter().chain(&diagnosis.problems) {
        // Paths in the messages may come from the file system (symlink targets).
        println!("{}", escape(&p.to_string()));
    }
    // A `renew_before` longer than 2/3 of the lifetime the CA gives (known from the deployed
    // certificate) is clamped by the schedule: a warning, though the certificate is renewed.
    let mut advisories = 0; // warnings that do not stop the certificate
    for cert in &cfg.certificates {
        if let Ok(info) = crate::deploy::inspect(&cert.files) {
            if let Some(w) =
                crate::schedule::clamp_warning(info.not_before, info.not_after, &cert.renew_before)
            {
                println!(
                    "{}: warning: certificate {}: {w}",
                    cert.key_location("renew_before"),
                    cert.name
                );
                advisories += 1;
            }
        }
    }
    // Access a renewal would drop: a POSIX ACL on a deployed file (renewed, though).
    for cert in &cfg.certificates {
        for (kind, path) in cert.files.iter() {
            if let Some(why) = crate::deploy::acl_dropped(kind, path) {
                println!(
                    "{}: warning: certificate {}: {why}",
                    cert.key_location(&format!("files.{kind}")),
                    cert.name
                );
                advisories += 1;
            }
        }
    }
    let warnings = diagnosis.warnings().count() + advisories;
    if diagnosis.has_errors() || !refusals.is_empty() || (strict && warnings > 0) {
        return Ok(Outcome::ConfigRefused);
    }
    let mut summary = format!(
        "{}: ok ({} certificate(s), {} CA(s), {} file(s) read)",
        path.display(),
        cfg.certificates.len(),
        cfg.cas.len(),
        cfg.sources.len()
    );
    if warnings > 0 {
        summary.push_str(&format!(
            "; {warnings} warning(s), {} certificate(s) not renewable as written",
            diagnosis.not_renewable.len()
        ));
    }
    println!("{summary}");
    Ok(Outcome::Success)
}

/// Every `profile` (of a CA, or of a certificate for each CA it may use) must be one the CA
/// advertises: each CA with a profile to check is asked for its directory once. A CA that
/// cannot be reached is a warning, not a problem: `check` must work offline.
async fn check_profiles(cfg: &Config) -> Vec<config::Problem> {
    let mut wanted: std::collections::BTreeMap<&str, Vec<(&str, config::Location, bool)>> =
        Default::default();
    for ca in cfg.cas.values() {
        if let Some(p) = &ca.profile {
            wanted
                .entry(&ca.name)
                .or_default()
                .push((p, ca.key_location("profile").clone(), true));
        }
    }
    for cert in &cfg.certificates {
        if let Some(p) = &cert.profile {
            for ca in &cert.ca {
                wanted.entry(ca).or_default().push((
                    p,
                    cert.key_location("profile").clone(),
                    false,
                ));
            }
        }
    }
    let mut problems = Vec::new();
    for (name, profiles) in wanted {
        let Some(ca) = cfg.cas.get(name) else {
            continue;
        };
        let pause = crate::state::pause_path(&cfg.state_dir, name);
        match crate::acme::advertised_profiles(ca, pause).await {
            Ok(offered) => {
                for (p, loc, of_ca) in profiles {
                    if !offered.iter().any(|o| o == p) {
                        let offers = if offered.is_empty() {
                            "it advertises no profiles (remove `profile`)".to_string()
                        } else {
                            format!("it offers: {}", offered.join(", "))
                        };
                        // At a certificate's `profile` this stops that certificate only
                        // (config::Config::diagnose); at a CA's, it is a warning: orders
                        // through that CA fail, saying so.
                        let message =
                            format!("CA {name} does not offer the profile {p:?}; {offers}");
                        problems.push(if of_ca {
                            config::Problem::warning(loc, message)
                        } else {
                            config::Problem::new(loc, message)
                        });
                    }
                }
            }
            Err(e) => eprintln!(
                "renewd: warning: cannot ask CA {name} which profiles it offers ({e}); \
                 the profile is checked at the first order"
            ),
        }
    }
    problems
}

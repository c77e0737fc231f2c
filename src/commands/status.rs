//! `renewd status` (the running daemon's view, else one computed from disk) and `renewd
//! inventory` (files only).

use std::path::Path;
use std::time::SystemTime;

use serde::Serialize;

use super::{known_names, load, CommandError, Outcome};
use crate::config::Config;
use crate::control::{self, Request, Response};
use crate::requests::select;
use crate::state::StateDir;
use crate::status::{self, StatusRow};

/// What `renewd status` was asked.
#[derive(Debug, Clone, Default)]
pub struct StatusArgs {
    /// Machine-readable output.
    pub json: bool,
    /// Only the configured names, one per line.
    pub list_names: bool,
    /// Only these certificates (all when empty).
    pub names: Vec<String>,
}

/// `renewd status [--json] [NAME...]`, or `--names`.
pub async fn status(arg: Option<&Path>, args: StatusArgs) -> Result<Outcome, CommandError> {
    let (_, cfg) = load(arg)?;
    if args.list_names {
        for c in &cfg.certificates {
            println!("{}", c.name);
        }
        return Ok(Outcome::Success);
    }
    known_names(&cfg, &args.names)?;
    let req = Request::Status {
        names: args.names.clone(),
    };
    let rows = match control::request(&cfg.control_socket, &req).await {
        Ok(Some(Response::Status { certificates })) => certificates,
        Ok(Some(other)) => return Err(super::unexpected(other)),
        Ok(None) => status_offline(&cfg, &args.names).map_err(CommandError::failed)?,
        Err(e) => return Err(CommandError::failed(e)),
    };
    if args.json {
        print_json(&rows)?;
    } else {
        print!("{}", status::render(&rows, SystemTime::now()));
    }
    Ok(Outcome::Success)
}

/// `renewd inventory [--json]`: read from the files, never from the daemon; the revocation
/// checks that are due are made now (`revocation::refresh`).
pub async fn inventory(arg: Option<&Path>, json: bool) -> Result<Outcome, CommandError> {
    let (_, cfg) = load(arg)?;
    let now = SystemTime::now();
    let mut inv = status::inventory_offline(&cfg, now);
    // What is due is checked now (results kept in the state directory for the next look).
    crate::revocation::refresh(&cfg.state_dir, &mut inv, now).await;
    if json {
        print_json(&inv)?;
    } else {
        print!("{}", crate::inventory::render(&inv, now));
    }
    Ok(Outcome::Success)
}

fn print_json(value: &impl Serialize) -> Result<(), CommandError> {
    let s = serde_json::to_string_pretty(value).map_err(CommandError::failed)?;
    println!("{s}");
    Ok(())
}

/// Status rows computed from disk, for `renewd status` when no daemon runs.
fn status_offline(
    config: &Config,
    names: &[String],
) -> Result<Vec<StatusRow>, crate::requests::UnknownCertificates> {
    let state = StateDir::open_existing(&config.state_dir);
    let now = SystemTime::now();
    let certs = if names.is_empty() {
        config.certificates.iter().map(|c| &**c).collect()
    } else {
        select(config, names, false)?
    };
    let diagnosis = status::diagnose(config);
    let revocation = crate::revocation::Store::load(&config.state_dir);
    Ok(certs
        .into_iter()
        .map(|c| {
            let mut rec = state.load_cert(&c.name);
            let inspected = status::inspect_deployed(c, &rec);
            // Found revoked by an `inventory` or the daemon: shown due at once ("revoked").
            if let Ok(info) = &inspected {
                crate::revocation::overlay(&mut rec, info, &revocation);
            }
            let mut ev = status::evaluate_inspected(c, &rec, &config.cas, now, inspected.as_ref());
            ev.not_renewable = diagnosis.not_renewable.get(&c.name).cloned();
            status::row(c, &rec, &ev, false)
        })
        .collect())
}

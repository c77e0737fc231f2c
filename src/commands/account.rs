//! `renewd account show|rollover-key|deactivate [--ca NAME]`: the stored ACME accounts
//! (RFC 8555 section 7.3), read, or changed at the CA under the state directory's lock.

use std::path::Path;

use super::{load, CommandError, Outcome};
use crate::config::{self, Config};
use crate::state::StateDir;

/// `renewd account OP [--ca NAME]`: prints what was done; an unknown `--ca` is a usage error.
pub async fn account(
    arg: Option<&Path>,
    op: &str,
    ca: Option<&str>,
) -> Result<Outcome, CommandError> {
    let (_, cfg) = load(arg)?;
    if let Some(name) = ca.filter(|n| !cfg.cas.contains_key(*n)) {
        let known: Vec<&str> = cfg.cas.keys().map(String::as_str).collect();
        return Err(CommandError::Usage(format!(
            "no CA named `{name}` in the configuration; configured: {}",
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        )));
    }
    let msg = run_op(&cfg, op, ca).await?;
    println!("{msg}");
    Ok(Outcome::Success)
}

/// `renewd account show|rollover-key|deactivate [--ca NAME]`, under the state lock (so
/// not while a daemon runs). `--ca` may be left out when one CA is configured.
async fn run_op(config: &Config, op: &str, ca: Option<&str>) -> Result<String, CommandError> {
    if op == "show" {
        return account_show(config, ca);
    }
    let ca = match ca {
        Some(name) => config.cas.get(name).ok_or_else(|| {
            CommandError::Failed(format!("no CA named {name} in the configuration"))
        })?,
        None if config.cas.len() == 1 => config
            .cas
            .values()
            .next()
            .ok_or_else(|| CommandError::failed("no CA"))?,
        None => {
            return Err(CommandError::Failed(format!(
                "several CAs are configured ({}); say which with --ca",
                config.cas.keys().cloned().collect::<Vec<_>>().join(", ")
            )))
        }
    };
    let state = StateDir::open(&config.state_dir).map_err(CommandError::failed)?;
    let _lock = state.try_lock().map_err(|e| {
        CommandError::Failed(format!("{e} (stop the daemon for account maintenance)"))
    })?;
    let files = state.ca_files(&ca.name);
    let path = &files.account;
    use crate::acme::account;
    let result = match op {
        "rollover-key" => account::rollover_key(ca, &files).await.map(|id| {
            format!(
                "CA {}: account {id}: new key stored in {}",
                ca.name,
                path.display()
            )
        }),
        "deactivate" => account::deactivate(ca, &files).await.map(|id| {
            format!(
                "CA {}: account {id} deactivated; the next order registers a new one",
                ca.name
            )
        }),
        other => {
            return Err(CommandError::Failed(format!(
                "unknown account operation {other}"
            )))
        }
    };
    result.map_err(CommandError::failed)
}

/// `renewd account show [--ca NAME]`: every configured CA's stored account (or that one's),
/// read from the state directory without asking the CA or taking the lock.
fn account_show(config: &Config, ca: Option<&str>) -> Result<String, CommandError> {
    let cas: Vec<&config::CaConfig> = match ca {
        Some(name) => vec![config.cas.get(name).ok_or_else(|| {
            CommandError::Failed(format!("no CA named {name} in the configuration"))
        })?],
        None => config.cas.values().collect(),
    };
    if cas.is_empty() {
        return Err(CommandError::failed("no CA is configured"));
    }
    let state = StateDir::open_existing(&config.state_dir);
    let mut out = Vec::new();
    for ca in cas {
        let path = state.account_path(&ca.name);
        out.push(
            match crate::acme::account::stored_id(ca, &path).map_err(CommandError::failed)? {
                Some(id) => format!(
                    "CA {}: account {id}\n  directory: {}\n  file: {}",
                    ca.name,
                    ca.directory,
                    path.display()
                ),
                None => format!(
                    "CA {}: no account yet ({} does not exist); one is registered at the first order",
                    ca.name,
                    path.display()
                ),
            },
        );
    }
    Ok(out.join("\n"))
}

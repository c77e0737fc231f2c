//! `renewd import certbot [--certbot-dir DIR] [--output FILE] [--force]`: certbot's
//! lineages as renewd configuration (see `crate::import`), printed or written to a new file,
//! with what could not be carried over and how to stop certbot said on standard error.

use std::path::{Path, PathBuf};

use super::{CommandError, Outcome};
use crate::config;
use crate::import::{self, certbot, render, ImportError};

/// What `renewd import certbot` was asked.
#[derive(Debug, Clone)]
pub struct ImportArgs {
    /// certbot's configuration directory (`/etc/letsencrypt`).
    pub certbot_dir: PathBuf,
    /// Where to write the configuration; `None` or `-`: standard output.
    pub output: Option<PathBuf>,
    /// Replace an existing output file.
    pub force: bool,
}

/// `renewd import certbot`: reads every lineage, renders it against the configuration
/// already at `--config` (its CAs are reused, its certificate names avoided; a missing file
/// is no configuration), writes the result and says on stderr what to do next. A malformed
/// renewal file is an error naming `FILE:LINE` (exit 78); nothing is written then. A
/// `--certbot-dir` without `renewal/` or without a lineage, or an existing `--output`
/// without `--force`, is a bad command line (exit 2); listing or writing failing otherwise
/// is exit 1.
pub async fn import_certbot(
    config_arg: Option<&Path>,
    args: ImportArgs,
) -> Result<Outcome, CommandError> {
    let output = args
        .output
        .filter(|p| p.as_os_str() != "-")
        .map(|p| absolute(&p));
    let existing = existing(config_arg, output.as_deref())?;
    // The live/ paths of the renewal files are checked against this, lexically.
    let certbot_dir = certbot::normal(&absolute(&args.certbot_dir)).unwrap_or(args.certbot_dir);
    let read = certbot::read_lineages(&certbot_dir).map_err(exit_code)?;
    let lineages = read.lineages;
    if lineages.is_empty() {
        for n in &read.skipped {
            eprintln!("renewd: {}", crate::text::escape(n));
        }
        return Err(exit_code(ImportError::Nothing(certbot_dir.join("renewal"))));
    }
    let mut rendered = render::render(&certbot_dir, &lineages, &existing);
    rendered.notes.splice(0..0, read.skipped);
    rendered
        .notes
        .extend(import::hooks::hook_dir_notes(&certbot_dir));
    match &output {
        Some(path) => import::write_new(path, &rendered.toml, args.force).map_err(exit_code)?,
        None => print!("{}", rendered.toml),
    }
    report(&lineages, &rendered.notes, output.as_deref());
    Ok(Outcome::Success)
}

/// The exit an import error means: certbot's files not what certbot writes, 78 (bad
/// configuration); `--certbot-dir` not certbot's directory or `--output` taken, 2 (a bad
/// command line); anything else (permissions, I/O), 1.
fn exit_code(e: ImportError) -> CommandError {
    match &e {
        ImportError::Lineages(_) => CommandError::Config(e.to_string()),
        ImportError::List { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            CommandError::Usage(format!("{e} (is --certbot-dir certbot's directory?)"))
        }
        ImportError::Nothing(_) | ImportError::Exists(_) => CommandError::Usage(e.to_string()),
        _ => CommandError::failed(e),
    }
}

/// What the configuration at `--config` (else `$RENEWD_CONFIG`, else the default path)
/// already has, leaving out what `output` itself holds (it is being replaced).
fn existing(
    config_arg: Option<&Path>,
    output: Option<&Path>,
) -> Result<render::Existing, CommandError> {
    let path = config::resolve_path(config_arg);
    if config_arg.is_none() && !path.exists() {
        return Ok(render::Existing::default());
    }
    let cfg = config::load(&path)?;
    let from_output = |file: &Path| output.is_some_and(|o| same_file(file, o));
    let mut e = render::Existing::default();
    for (name, ca) in &cfg.cas {
        if from_output(&ca.location.file) {
            continue;
        }
        e.cas
            .insert(ca.directory.trim_end_matches('/').to_string(), name.clone());
        e.ca_names.insert(name.clone());
    }
    for c in &cfg.certificates {
        if !from_output(&c.location.file) {
            e.cert_names.insert(c.name.clone());
            for (_, file) in c.files.iter() {
                e.files.insert(file.to_path_buf(), c.name.clone());
            }
        }
    }
    Ok(e)
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// The summary on standard error: what was imported, every note, and how to stop certbot.
fn report(lineages: &[certbot::Lineage], notes: &[String], output: Option<&Path>) {
    let to = output.map_or_else(
        || "standard output".to_string(),
        |p| p.display().to_string(),
    );
    eprintln!(
        "renewd: imported {} certbot lineage{} into {to}",
        lineages.len(),
        if lineages.len() == 1 { "" } else { "s" }
    );
    if !notes.is_empty() {
        eprintln!("Not carried over (edit the configuration if it matters):");
        for n in notes {
            eprintln!("  {}", crate::text::escape(n));
        }
    }
    eprintln!(
        "Next: `renewd check`, then stop certbot renewing the same certificates:\n  \
         systemctl disable --now certbot.timer   (systemd hosts)\n  \
         rm /etc/cron.d/certbot                  (cron hosts)\n\
         renewd keeps certbot's live/ paths; it replaces their symlinks with files when it renews,\n\
         leaving archive/ as it is."
    );
}

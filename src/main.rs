//! The `renewd` command: parses the command line, sets up logging, and maps outcomes to the
//! exit codes of SPEC (0 ok, 1 a certificate operation failed, 2 bad command line, 78 bad
//! configuration). Everything else lives in the library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use renewd::config::{self, Config};
use renewd::control::{self, Request, Response};
use renewd::text::escape;
use renewd::{daemon, deploy, logging, status};

mod completions;
mod manual;

const LONG_ABOUT: &str = "\
renewd keeps every configured certificate valid through ACME (RFC 8555): it renews each one \
before it is due (its renew_before threshold, or at once when a deployed file is missing, \
unreadable, or does not match its key or names), writes the new key and certificate files \
into place with their final modes, and runs the reload commands of the services using them.

FILES: /etc/renewd/renewd.toml, then /etc/renewd/conf.d/*.toml in name order (the \
configuration); /var/lib/renewd (state: ACME accounts, per-certificate history, lock); \
/run/renewd/control.sock (the running daemon's control socket, root only).

ENVIRONMENT: RENEWD_CONFIG overrides the configuration path; RUST_LOG sets the log filter \
(else the configuration's log_level, else info). Under systemd, logs go to the journal with \
the fields CERT=, CA=, ORDER= and ERROR= (journalctl CERT=NAME), and readiness, status \
and watchdog pings go to NOTIFY_SOCKET.

EXIT STATUS: 0 success; 1 a certificate operation failed; 2 bad command line (an unknown \
certificate name included); 78 bad configuration (each problem printed as FILE:LINE:COL: \
message). A problem that stops one certificate only is a warning (FILE:LINE:COL: warning: \
message): check exits 0 (78 with --strict), run and SIGHUP log it and renew every other \
certificate.

SIGNALS: SIGHUP re-reads the configuration (a configuration with errors is refused and the \
old one kept; warnings are judged again); SIGTERM and SIGINT stop after the renewals under \
way (at most 30 s).";

const EX_FAILED: u8 = 1;
const EX_USAGE: u8 = 2;
const EX_CONFIG: u8 = 78;

#[derive(Parser)]
#[command(
    name = "renewd",
    version,
    about = "Keeps this host's certificates valid through ACME",
    long_about = LONG_ABOUT,
    // Our own `help` subcommand, so that `renewd help --help` works too.
    disable_help_subcommand = true
)]
struct Cli {
    /// Main configuration file (default: $RENEWD_CONFIG, else /etc/renewd/renewd.toml);
    /// conf.d/*.toml beside it is read too. Accepted before or after the subcommand.
    #[arg(long, value_name = "PATH", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon in the foreground (systemd supervises it).
    Run {
        /// One pass over every certificate, then exit: 0 if all are fine, 1 if any failed.
        #[arg(long)]
        once: bool,
    },
    /// Validate the configuration and every path and hook it names: errors (the
    /// configuration cannot be used) exit 78; warnings (one certificate cannot be renewed as
    /// written) are printed and exit 0.
    Check {
        /// Warnings fail too (exit 78).
        #[arg(long)]
        strict: bool,
    },
    /// Show every managed certificate: expiry, next renewal and why, last result.
    Status {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// Print only the configured certificate names, one per line (shell completion).
        #[arg(long = "names", conflicts_with_all = ["json", "certs"])]
        list_names: bool,
        /// Only these certificates.
        #[arg(value_name = "NAME")]
        certs: Vec<String>,
    },
    /// Renew now, through the running daemon if there is one.
    Renew {
        /// Renew even if not due.
        #[arg(long)]
        force: bool,
        /// Create the order and prove its challenges, then stop before finalize: no
        /// certificate is issued, nothing is deployed.
        #[arg(long)]
        dry_run: bool,
        /// Every configured certificate.
        #[arg(long, conflicts_with = "names")]
        all: bool,
        /// Certificates to renew (or --all).
        #[arg(value_name = "NAME")]
        names: Vec<String>,
    },
    /// Every certificate on this host: managed, declared exceptions, and unmanaged ones
    /// found under the discovery paths, with owner, expiry and status. Reads files only.
    Inventory {
        /// Machine-readable output (schema in the README).
        #[arg(long)]
        json: bool,
    },
    /// Revoke a certificate at the CA, then issue, deploy and reload a replacement with a
    /// fresh key (through the running daemon if there is one).
    Revoke {
        /// The RFC 5280 reason.
        #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(renewd::acme::REVOCATION_REASONS))]
        reason: Option<String>,
        name: String,
    },
    /// ACME account maintenance. `show` reads the stored accounts only (every CA's, or
    /// --ca's); the others talk to the CA and need the state directory (not while a daemon
    /// runs).
    Account {
        #[arg(value_parser = ["show", "rollover-key", "deactivate"])]
        op: String,
        /// The CA (`[ca.NAME]`); needed by rollover-key and deactivate when several are
        /// configured.
        #[arg(long, value_name = "NAME")]
        ca: Option<String>,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
    /// Print the help of renewd or of a subcommand (`renewd help renew`).
    Help {
        /// The subcommand (and its subcommands).
        #[arg(value_name = "COMMAND")]
        command: Vec<String>,
    },
    /// Write the section-8 man pages (roff) into DIR; used to build the packages.
    #[command(hide = true)]
    Manpage { dir: PathBuf },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        Command::Completions { shell } => {
            print!("{}", completions::script(*shell, Cli::command()));
            return ExitCode::SUCCESS;
        }
        Command::Manpage { dir } => {
            return match manual::write_pages(Cli::command(), dir) {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => fail(&e.to_string()),
            };
        }
        Command::Help { command } => return help(command),
        Command::Renew {
            all: false, names, ..
        } if names.is_empty() => {
            let mut cmd = Cli::command();
            cmd.build();
            cmd.find_subcommand_mut("renew")
                .expect("renew is a subcommand")
                .error(
                    clap::error::ErrorKind::MissingRequiredArgument,
                    "name the certificates to renew, or --all for every configured one",
                )
                .exit();
        }
        _ => {}
    }
    logging::init();
    // Before any listener sizes its connection cap from it (see renewd::serve).
    match renewd::serve::raise_nofile_limit() {
        Ok(limit) => tracing::debug!(limit, "open file limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open file limit"),
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(8)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("renewd: cannot start the async runtime: {e}");
            return ExitCode::from(EX_FAILED);
        }
    };
    runtime.block_on(dispatch(cli.config.as_deref(), cli.command))
}

/// `renewd help [COMMAND...]`: the long help of the command named, exit 2 for an unknown one.
fn help(path: &[String]) -> ExitCode {
    let mut cmd = Cli::command();
    cmd.build();
    let mut target = &mut cmd;
    for name in path {
        match target.find_subcommand_mut(name) {
            Some(sub) => target = sub,
            None => {
                eprintln!("renewd: help: no subcommand `{name}` (see `renewd help`)");
                return ExitCode::from(EX_USAGE);
            }
        }
    }
    match target.print_long_help() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e.to_string()),
    }
}

/// Loads the configuration, printing every problem as `FILE:LINE:COL: message`.
fn load(arg: Option<&Path>) -> Result<(PathBuf, Config), ExitCode> {
    load_reporting(arg, false)
}

/// [`load`]; with `tell_systemd` a refused configuration's first problem also goes to
/// systemd as the STATUS= line (`renewd run` as the unit's main process: `systemctl status`
/// keeps it after the exit 78).
fn load_reporting(arg: Option<&Path>, tell_systemd: bool) -> Result<(PathBuf, Config), ExitCode> {
    let path = config::resolve_path(arg);
    match config::load(&path) {
        Ok(c) => {
            logging::set_level(c.log_level.as_deref());
            Ok((path, c))
        }
        Err(e) => {
            if tell_systemd {
                daemon::tell_config_refused(&e.to_string());
            }
            Err(config_error(&e))
        }
    }
}

fn config_error(e: &config::ConfigError) -> ExitCode {
    eprint!("{e}");
    if !e.to_string().ends_with('\n') {
        eprintln!();
    }
    ExitCode::from(EX_CONFIG)
}

/// Exit 2 (a bad command line) unless every one of `names` is a configured certificate;
/// checked before anything is created or asked.
fn known_names(cfg: &Config, names: &[String]) -> Result<(), ExitCode> {
    cfg.check_names(names).map_err(|message| {
        eprintln!("renewd: {message}");
        ExitCode::from(EX_USAGE)
    })
}

async fn dispatch(config: Option<&Path>, cmd: Command) -> ExitCode {
    let (path, cfg) = match cmd {
        Command::Completions { .. } | Command::Manpage { .. } | Command::Help { .. } => {
            return ExitCode::SUCCESS
        }
        Command::Check { strict } => return check(config, strict).await,
        // The daemon checks its configuration itself (no `ExecStartPre=renewd check`):
        // systemd's RestartPreventExitStatus=78 only looks at the main process, so a refused
        // configuration must be the main process's exit 78 to leave the unit failed.
        Command::Run { once: false } => match load_reporting(config, true) {
            Ok(c) => c,
            Err(code) => return code,
        },
        _ => match load(config) {
            Ok(c) => c,
            Err(code) => return code,
        },
    };
    match cmd {
        Command::Completions { .. }
        | Command::Manpage { .. }
        | Command::Help { .. }
        | Command::Check { .. } => ExitCode::SUCCESS,
        Command::Run { once } => {
            // The rule `check` applies: errors refuse the configuration, warnings are logged
            // and stop only their certificates.
            // The control socket's directory too: an unsafe one refuses the daemon with exit 78
            // (a bad configuration, never restarted), not a failure systemd would retry.
            // What would damage the machine refuses the whole configuration.
            let refusals = machine_refusals(&cfg, !once);
            if !refusals.is_empty() {
                let text: String = refusals.iter().map(|p| format!("{p}\n")).collect();
                eprint!("{}", escape(&text));
                if !once {
                    daemon::tell_config_refused(&text);
                }
                return ExitCode::from(EX_CONFIG);
            }
            let diagnosis = status::diagnose_with(&cfg, control::check_socket(&cfg));
            if let Some(e) = diagnosis.errors() {
                if !once {
                    daemon::tell_config_refused(&e.to_string());
                }
                return config_error(&e);
            }
            if once {
                match daemon::run_once(&cfg, &diagnosis).await {
                    Ok(true) => ExitCode::SUCCESS,
                    Ok(false) => ExitCode::from(EX_FAILED),
                    Err(e) => fail(&e),
                }
            } else {
                match daemon::run(&path, cfg, diagnosis).await {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => fail(&e),
                }
            }
        }
        Command::Status {
            json,
            list_names,
            certs: names,
        } => {
            if list_names {
                for c in &cfg.certificates {
                    println!("{}", c.name);
                }
                return ExitCode::SUCCESS;
            }
            if let Err(code) = known_names(&cfg, &names) {
                return code;
            }
            let rows = match control::request(
                &cfg.control_socket,
                &Request::Status {
                    names: names.clone(),
                },
            )
            .await
            {
                Ok(Some(Response::Status { certificates })) => certificates,
                Ok(Some(Response::Error { message })) => return fail(&message),
                Ok(Some(other)) => {
                    return fail(&format!("unexpected answer from the daemon: {other:?}"))
                }
                Ok(None) => match daemon::status_offline(&cfg, &names) {
                    Ok(rows) => rows,
                    Err(e) => return fail(&e),
                },
                Err(e) => return fail(&e),
            };
            if json {
                match serde_json::to_string_pretty(&rows) {
                    Ok(s) => println!("{s}"),
                    Err(e) => return fail(&e.to_string()),
                }
            } else {
                print!("{}", status::render(&rows, std::time::SystemTime::now()));
            }
            ExitCode::SUCCESS
        }
        Command::Inventory { json } => {
            let now = std::time::SystemTime::now();
            let inv = status::inventory_offline(&cfg, now);
            if json {
                match serde_json::to_string_pretty(&inv) {
                    Ok(s) => println!("{s}"),
                    Err(e) => return fail(&e.to_string()),
                }
            } else {
                print!("{}", renewd::inventory::render(&inv, now));
            }
            ExitCode::SUCCESS
        }
        Command::Account { op, ca } => {
            if let Some(name) = ca.as_deref().filter(|n| !cfg.cas.contains_key(*n)) {
                let known: Vec<&str> = cfg.cas.keys().map(String::as_str).collect();
                eprintln!(
                    "renewd: no CA named `{name}` in the configuration; configured: {}",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                );
                return ExitCode::from(EX_USAGE);
            }
            match daemon::account(&cfg, &op, ca.as_deref()).await {
                Ok(msg) => {
                    println!("{msg}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
            }
        }
        Command::Revoke { reason, name } => {
            if let Err(code) = known_names(&cfg, std::slice::from_ref(&name)) {
                return code;
            }
            let req = Request::Revoke {
                name: name.clone(),
                reason: reason.clone(),
            };
            let results = match control::request(&cfg.control_socket, &req).await {
                Ok(Some(Response::Renew { results })) => results,
                Ok(Some(Response::Error { message })) => return fail(&message),
                Ok(Some(other)) => {
                    return fail(&format!("unexpected answer from the daemon: {other:?}"))
                }
                Ok(None) => match daemon::revoke_in_process(&cfg, &name, reason.as_deref()).await {
                    Ok(r) => r,
                    Err(e) => return fail(&e),
                },
                Err(e) => return fail(&e),
            };
            report(&results)
        }
        Command::Renew {
            force,
            dry_run,
            all,
            names,
        } => {
            if let Err(code) = known_names(&cfg, &names) {
                return code;
            }
            let req = Request::Renew {
                names: names.clone(),
                all,
                force,
                dry_run,
            };
            let results = match control::request(&cfg.control_socket, &req).await {
                Ok(Some(Response::Renew { results })) => results,
                Ok(Some(Response::Error { message })) => return fail(&message),
                Ok(Some(other)) => {
                    return fail(&format!("unexpected answer from the daemon: {other:?}"))
                }
                Ok(None) => match daemon::renew_in_process(&cfg, &names, all, force, dry_run).await
                {
                    Ok(r) => r,
                    Err(e) => return fail(&e),
                },
                Err(e) => return fail(&e),
            };
            report(&results)
        }
    }
}

/// Prints one line per certificate; exit 1 when any failed.
fn report(results: &[control::RenewResult]) -> ExitCode {
    let mut failed = false;
    for r in results {
        println!("{}: {}: {}", escape(&r.name), r.outcome, escape(&r.message));
        failed |= r.failed();
    }
    if failed {
        ExitCode::from(EX_FAILED)
    } else {
        ExitCode::SUCCESS
    }
}

/// What `run` refuses to start with, because it would damage the machine: a `state_dir`
/// that exists but is not renewd's private directory (it would be chmodded), something other
/// than a socket at `control_socket` (it would be replaced; only for the daemon, `serve`),
/// and two certificates writing one file through different paths. `check` reports the same.
fn machine_refusals(cfg: &Config, serve: bool) -> Vec<config::Problem> {
    let mut problems = Vec::new();
    if let Err(e) = renewd::state::check_existing(&cfg.state_dir) {
        problems.push(config::Problem::new(
            cfg.key_location("state_dir"),
            e.to_string(),
        ));
    }
    if serve {
        if let Err(e) = control::check_socket_path(&cfg.control_socket) {
            problems.push(config::Problem::new(cfg.key_location("control_socket"), e));
        }
    }
    problems.extend(deploy::clashing_targets(cfg));
    problems
}

/// `renewd check [--strict]`: every problem, errors and warnings, as `FILE:LINE:COL:
/// [warning: ]message`; exit 78 on errors (or on warnings with `--strict`).
async fn check(arg: Option<&Path>, strict: bool) -> ExitCode {
    let (path, cfg) = match load(arg) {
        Ok(c) => c,
        Err(code) => return code,
    };
    // The control socket's directory is judged here (and by the daemon when it binds):
    // an unsafe one is an error of the whole configuration. So is what would damage the
    // machine (refused by `run` as a whole, not certificate by certificate).
    let refusals = machine_refusals(&cfg, true);
    let mut extra = control::check_socket(&cfg);
    extra.extend(check_profiles(&cfg).await);
    let diagnosis = status::diagnose_with(&cfg, extra);
    for p in refusals.iter().chain(&diagnosis.problems) {
        // Paths in the messages may come from the file system (symlink targets).
        println!("{}", escape(&p.to_string()));
    }
    // A `renew_before` longer than 2/3 of the lifetime the CA gives (known from the deployed
    // certificate) is clamped by the schedule: a warning, though the certificate is renewed.
    let mut advisories = 0; // warnings that do not stop the certificate
    for cert in &cfg.certificates {
        if let Ok(info) = renewd::deploy::inspect(&cert.files) {
            if let Some(w) =
                renewd::schedule::clamp_warning(info.not_before, info.not_after, &cert.renew_before)
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
            if let Some(why) = renewd::deploy::acl_dropped(kind, path) {
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
        return ExitCode::from(EX_CONFIG);
    }
    let mut summary = format!(
        "{}: ok ({} certificate(s), {} CA(s), {} file(s) read)",
        display(&path),
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
    ExitCode::SUCCESS
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
        let pause = renewd::state::pause_path(&cfg.state_dir, name);
        match renewd::acme::advertised_profiles(ca, pause).await {
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

fn display(p: &Path) -> String {
    p.display().to_string()
}

fn fail(message: &str) -> ExitCode {
    eprintln!("renewd: {message}");
    ExitCode::from(EX_FAILED)
}

//! The `renewd` command: parses the command line, sets up logging, and maps outcomes to the
//! exit codes of SPEC (0 ok, 1 a certificate operation failed, 2 bad command line, 78 bad
//! configuration). Everything else lives in the library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, CommandFactory, Parser, Subcommand};

use renewd::config::{self, Config};
use renewd::control::{self, Request, Response};
use renewd::text::escape;
use renewd::{daemon, deploy, logging, status};

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
structured fields, and readiness, status and watchdog pings go to NOTIFY_SOCKET.

EXIT STATUS: 0 success; 1 a certificate operation failed; 2 bad command line; 78 bad \
configuration (each problem printed as FILE:LINE:COL: message).

SIGNALS: SIGHUP re-reads the configuration (a configuration with errors is refused and the \
old one kept); SIGTERM and SIGINT stop after the renewals under way (at most 30 s).";

const EX_FAILED: u8 = 1;
const EX_CONFIG: u8 = 78;

#[derive(Parser)]
#[command(
    name = "renewd",
    version,
    about = "Keeps this host's certificates valid through ACME",
    long_about = LONG_ABOUT
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct ConfigArg {
    /// Main configuration file (default: $RENEWD_CONFIG, else /etc/renewd/renewd.toml);
    /// conf.d/*.toml beside it is read too.
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon in the foreground (systemd supervises it).
    Run {
        #[command(flatten)]
        config: ConfigArg,
        /// One pass over every certificate, then exit: 0 if all are fine, 1 if any failed.
        #[arg(long)]
        once: bool,
    },
    /// Validate the configuration and every path and hook it names; exit 0 or 78.
    Check {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Show every managed certificate: expiry, next renewal and why, last result.
    Status {
        #[command(flatten)]
        config: ConfigArg,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// Only these certificates.
        names: Vec<String>,
    },
    /// Renew now, through the running daemon if there is one.
    Renew {
        #[command(flatten)]
        config: ConfigArg,
        /// Renew even if not due.
        #[arg(long)]
        force: bool,
        /// Go through the CA's order and challenges but deploy nothing.
        #[arg(long)]
        dry_run: bool,
        /// Every configured certificate.
        #[arg(long, conflicts_with = "names")]
        all: bool,
        /// Certificates to renew.
        #[arg(required_unless_present = "all")]
        names: Vec<String>,
    },
    /// Every certificate on this host: managed, declared exceptions, and unmanaged ones
    /// found under the discovery paths, with owner, expiry and status. Reads files only.
    Inventory {
        #[command(flatten)]
        config: ConfigArg,
        /// Machine-readable output (schema in the README).
        #[arg(long)]
        json: bool,
    },
    /// Revoke a certificate at the CA, then issue, deploy and reload a replacement with a
    /// fresh key (through the running daemon if there is one).
    Revoke {
        #[command(flatten)]
        config: ConfigArg,
        /// The RFC 5280 reason.
        #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(renewd::acme::REVOCATION_REASONS))]
        reason: Option<String>,
        name: String,
    },
    /// ACME account maintenance (not while a daemon runs: it holds the state directory).
    Account {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(value_parser = ["show", "rollover-key", "deactivate"])]
        op: String,
        /// The CA (`[ca.NAME]`); needed when several are configured.
        #[arg(long, value_name = "NAME")]
        ca: Option<String>,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
    /// Print the man page (roff); used to build the packages.
    #[command(hide = true)]
    Manpage,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        Command::Completions { shell } => {
            clap_complete::generate(
                *shell,
                &mut Cli::command(),
                "renewd",
                &mut std::io::stdout(),
            );
            return ExitCode::SUCCESS;
        }
        Command::Manpage => {
            return match clap_mangen::Man::new(Cli::command())
                .section("8")
                .render(&mut std::io::stdout())
            {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(&e.to_string()),
            };
        }
        _ => {}
    }
    logging::init();
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
    runtime.block_on(dispatch(cli.command))
}

/// Loads the configuration, printing every problem as `FILE:LINE:COL: message`.
fn load(arg: &ConfigArg) -> Result<(PathBuf, Config), ExitCode> {
    let path = config::resolve_path(arg.config.as_deref());
    match config::load(&path) {
        Ok(c) => {
            logging::set_level(c.log_level.as_deref());
            Ok((path, c))
        }
        Err(e) => {
            eprint!("{e}");
            if !e.to_string().ends_with('\n') {
                eprintln!();
            }
            Err(ExitCode::from(EX_CONFIG))
        }
    }
}

async fn dispatch(cmd: Command) -> ExitCode {
    match cmd {
        Command::Completions { .. } | Command::Manpage => ExitCode::SUCCESS,
        Command::Check { config } => check(&config).await,
        Command::Run { config, once } => {
            let (path, cfg) = match load(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let refusals = machine_refusals(&cfg, !once);
            if !refusals.is_empty() {
                for p in &refusals {
                    eprintln!("{}", escape(&p.to_string()));
                }
                return ExitCode::from(EX_CONFIG);
            }
            if once {
                match daemon::run_once(&cfg).await {
                    Ok(true) => ExitCode::SUCCESS,
                    Ok(false) => ExitCode::from(EX_FAILED),
                    Err(e) => fail(&e),
                }
            } else {
                match daemon::run(&path, cfg).await {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => fail(&e),
                }
            }
        }
        Command::Status {
            config,
            json,
            names,
        } => {
            let (_, cfg) = match load(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
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
        Command::Inventory { config, json } => {
            let (_, cfg) = match load(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
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
        Command::Account { config, op, ca } => {
            let (_, cfg) = match load(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            match daemon::account(&cfg, &op, ca.as_deref()).await {
                Ok(msg) => {
                    println!("{msg}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
            }
        }
        Command::Revoke {
            config,
            reason,
            name,
        } => {
            let (_, cfg) = match load(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
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
            let mut failed = false;
            for r in &results {
                println!("{}: {}: {}", escape(&r.name), r.outcome, escape(&r.message));
                failed |= r.failed();
            }
            if failed {
                ExitCode::from(EX_FAILED)
            } else {
                ExitCode::SUCCESS
            }
        }
        Command::Renew {
            config,
            force,
            dry_run,
            all,
            names,
        } => {
            let (_, cfg) = match load(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
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
            let mut failed = false;
            for r in &results {
                println!("{}: {}: {}", escape(&r.name), r.outcome, escape(&r.message));
                failed |= r.failed();
            }
            if failed {
                ExitCode::from(EX_FAILED)
            } else {
                ExitCode::SUCCESS
            }
        }
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

async fn check(arg: &ConfigArg) -> ExitCode {
    let (path, cfg) = match load(arg) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let mut problems = cfg.check_environment();
    problems.extend(deploy::check_directories(&cfg));
    problems.extend(machine_refusals(&cfg, true));
    problems.extend(renewd::challenge::check_webroots(&cfg));
    problems.extend(check_profiles(&cfg).await);
    for p in &problems {
        // Paths in the messages may come from the file system (symlink targets).
        println!("{}", escape(&p.to_string()));
    }
    if problems.is_empty() {
        println!(
            "{}: ok ({} certificate(s), {} CA(s), {} file(s) read)",
            display(&path),
            cfg.certificates.len(),
            cfg.cas.len(),
            cfg.sources.len()
        );
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EX_CONFIG)
    }
}

/// Every `profile` (of a CA, or of a certificate for each CA it may use) must be one the CA
/// advertises: each CA with a profile to check is asked for its directory once. A CA that
/// cannot be reached is a warning, not a problem: `check` must work offline.
async fn check_profiles(cfg: &Config) -> Vec<config::Problem> {
    let mut wanted: std::collections::BTreeMap<&str, Vec<(&str, config::Location)>> =
        Default::default();
    for ca in cfg.cas.values() {
        if let Some(p) = &ca.profile {
            wanted
                .entry(&ca.name)
                .or_default()
                .push((p, ca.key_location("profile").clone()));
        }
    }
    for cert in &cfg.certificates {
        if let Some(p) = &cert.profile {
            for ca in &cert.ca {
                wanted
                    .entry(ca)
                    .or_default()
                    .push((p, cert.key_location("profile").clone()));
            }
        }
    }
    let mut problems = Vec::new();
    for (name, profiles) in wanted {
        let Some(ca) = cfg.cas.get(name) else {
            continue;
        };
        let pause = cfg.state_dir.join("accounts").join(format!("{name}.pause"));
        match renewd::acme::advertised_profiles(ca, pause).await {
            Ok(offered) => {
                for (p, loc) in profiles {
                    if !offered.iter().any(|o| o == p) {
                        let offers = if offered.is_empty() {
                            "it advertises no profiles (remove `profile`)".to_string()
                        } else {
                            format!("it offers: {}", offered.join(", "))
                        };
                        problems.push(config::Problem::new(
                            loc,
                            format!("CA {name} does not offer the profile {p:?}; {offers}"),
                        ));
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

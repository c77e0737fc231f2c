//! The `renewd` command: parses the command line, sets up logging, and maps outcomes to the
//! exit codes of SPEC (0 ok, 1 a certificate operation failed, 2 bad command line, 78 bad
//! configuration). Everything else lives in the library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use renewd::commands::{self, CommandError, ImportArgs, Outcome, RenewArgs, StatusArgs};
use renewd::logging;

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
    /// found under the discovery paths, with owner, expiry and status. Reads files, and
    /// asks the OCSP responders and CRLs the certificates name about those whose revocation
    /// check is due (the other results come from the state directory). Needs no daemon.
    Inventory {
        /// Machine-readable output (schema in the README).
        #[arg(long)]
        json: bool,
    },
    /// Audit the trust anchors of the system's stores and of `[trust] paths` (mTLS CA files).
    ///
    /// Every anchor of `[trust] paths` and of the system bundle and directory (without a
    /// `[trust]` table, or with `system = true`), or of the PATHs given, with subject, SHA-256 fingerprint, notAfter, key and signature
    /// algorithm, flagged expired, expiring (`[trust] expiring_within`, default 90d), weak
    /// (RSA under 2048 bits, MD5 or SHA-1 signature), duplicate (same certificate, or same
    /// subject and key, twice in one path) or, for `[trust] paths` only, stale (no
    /// certificate of the inventory chains to it). An `[[exception]]` with the anchor's
    /// `fingerprint` acknowledges it until its `review_by` date. Reads files only.
    ///
    /// Exit 0: nothing flagged; 1: an anchor flagged, or a path or PEM block unreadable
    /// (each said with its path and block number); 78: bad configuration.
    #[command(name = "trust-audit")]
    TrustAudit {
        /// Machine-readable output (schema in the README).
        #[arg(long)]
        json: bool,
        /// PEM/DER bundles or directories to audit instead of the defaults.
        #[arg(value_name = "PATH")]
        paths: Vec<PathBuf>,
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
    /// Write another ACME client's certificates as renewd configuration (certbot's
    /// lineages, keeping their live/ paths).
    ///
    /// `import certbot` reads every renewal/*.conf under --certbot-dir and writes one
    /// [[certificate]] each, keeping certbot's live/ paths: domains, key type, webroot or
    /// standalone challenge, deploy hooks as reload commands, the CA and its account contact.
    /// The certificates certbot deployed are adopted as they are and renewed when due. What
    /// cannot be carried over, and how to stop certbot's timer, is printed on standard error.
    /// Lineages whose live/ files are not <certbot-dir>/live/NAME/*.pem, whose name is not a
    /// renewd certificate name, or whose renewal file is a symlink are skipped with a note.
    ///
    /// Exit 0: written; 2: --certbot-dir holds no renewal/ or no lineage, or --output exists
    /// without --force; 78: a renewal file is unreadable or not configobj; 1: listing or
    /// writing failed otherwise.
    Import {
        /// The client whose certificates are imported.
        #[arg(value_parser = ["certbot"])]
        from: String,
        /// certbot's configuration directory.
        #[arg(long, value_name = "DIR", default_value = "/etc/letsencrypt")]
        certbot_dir: PathBuf,
        /// Write the configuration to FILE (e.g. /etc/renewd/conf.d/certbot.toml) instead of
        /// standard output (`-`). An existing FILE is kept unless --force.
        #[arg(long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Replace an existing --output file.
        #[arg(long)]
        force: bool,
    },
    /// Print the `_validation-persist` TXT records dns-persist-01 needs.
    ///
    /// One per line, zone-file style (`_validation-persist.DOMAIN. TXT "VALUE"`), from the
    /// stored ACME account (registered first when there is none, which needs the state
    /// directory's lock) and the CA's issuer domain name (`[ca.NAME] issuer_domain_name`,
    /// else the directory's `meta.issuerDomainNames`). Publish them once; renewals then
    /// change nothing in DNS.
    ///
    /// The issuer domain name is learnt before any account is registered. The CA gets 30
    /// seconds in all (directory and registration); then the command fails (exit 1). A
    /// `persist_until` already past is refused (exit 78).
    PersistRecord {
        /// Configured certificates, or domains of them (in any case, with or without a
        /// trailing dot, an internationalised name as written or in its xn-- form); every
        /// name each validates with dns-persist-01 is printed.
        #[arg(value_name = "NAME", required = true)]
        names: Vec<String>,
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
    exit_code(runtime.block_on(dispatch(cli.config.as_deref(), cli.command)))
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

async fn dispatch(config: Option<&Path>, cmd: Command) -> Result<Outcome, CommandError> {
    match cmd {
        Command::Completions { .. } | Command::Manpage { .. } | Command::Help { .. } => {
            Ok(Outcome::Success)
        }
        Command::Check { strict } => commands::check(config, strict).await,
        Command::Run { once } => commands::run(config, once).await,
        Command::Status {
            json,
            list_names,
            certs,
        } => {
            let args = StatusArgs {
                json,
                list_names,
                names: certs,
            };
            commands::status(config, args).await
        }
        Command::Inventory { json } => commands::inventory(config, json).await,
        Command::TrustAudit { json, paths } => {
            commands::trust_audit(config, commands::TrustAuditArgs { json, paths }).await
        }
        Command::Account { op, ca } => commands::account(config, &op, ca.as_deref()).await,
        Command::PersistRecord { names } => commands::persist_record(config, &names).await,
        Command::Revoke { reason, name } => commands::revoke(config, name, reason).await,
        Command::Import {
            from: _,
            certbot_dir,
            output,
            force,
        } => {
            let args = ImportArgs {
                certbot_dir,
                output,
                force,
            };
            commands::import_certbot(config, args).await
        }
        Command::Renew {
            force,
            dry_run,
            all,
            names,
        } => {
            let args = RenewArgs {
                force,
                dry_run,
                all,
                names,
            };
            commands::renew(config, args).await
        }
    }
}

/// The one map from outcomes and errors to the exit codes of SPEC.
fn exit_code(result: Result<Outcome, CommandError>) -> ExitCode {
    match result {
        Ok(Outcome::Success) => ExitCode::SUCCESS,
        Ok(Outcome::CertificateFailed) => ExitCode::from(EX_FAILED),
        Ok(Outcome::ConfigRefused) => ExitCode::from(EX_CONFIG),
        Err(CommandError::Usage(message)) => {
            eprintln!("renewd: {message}");
            ExitCode::from(EX_USAGE)
        }
        Err(CommandError::Config(problems)) => {
            eprint!("{problems}");
            if !problems.ends_with('\n') {
                eprintln!();
            }
            ExitCode::from(EX_CONFIG)
        }
        Err(CommandError::Failed(message)) => fail(&message),
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("renewd: {message}");
    ExitCode::from(EX_FAILED)
}

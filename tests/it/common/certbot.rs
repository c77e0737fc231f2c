//! certbot 5 (from PyPI, in the venv `scripts/fetch-test-deps.sh` makes under
//! `target/test-deps/certbot`) pointed at a test's own [`Pebble`]: it creates the real
//! lineages (`renewal/`, `live/` symlinks into `archive/`, `accounts/`) that
//! `renewd import certbot` reads.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::{last_lines, wait_bounded, Pebble};

/// How long one `certbot certonly` may take (it takes about 3 s against Pebble).
const CERTONLY_TIMEOUT: Duration = Duration::from_secs(60);

/// The `certbot` executable: `$RENEWD_CERTBOT_DIR/certbot`, else the venv's
/// `<crate>/target/test-deps/certbot/bin/certbot`.
pub fn certbot_bin() -> PathBuf {
    let dir = match std::env::var_os("RENEWD_CERTBOT_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-deps/certbot/bin"),
    };
    let bin = dir.join("certbot");
    assert!(
        bin.is_file(),
        "{} not found: run scripts/fetch-test-deps.sh (it installs certbot in a venv there), \
         or set RENEWD_CERTBOT_DIR to the directory holding certbot",
        bin.display()
    );
    bin
}

/// certbot's three directories under one root, talking to one Pebble.
pub struct Certbot {
    /// `--config-dir`: what certbot keeps (`renewal/`, `live/`, `archive/`, `accounts/`).
    pub config_dir: PathBuf,
    work_dir: PathBuf,
    logs_dir: PathBuf,
    server: String,
    ca_bundle: PathBuf,
}

impl Certbot {
    /// certbot with its directories under `root` (created), for `pebble`'s ACME directory.
    pub fn new(root: &Path, pebble: &Pebble) -> Certbot {
        let cb = Certbot {
            config_dir: root.join("letsencrypt"),
            work_dir: root.join("certbot-work"),
            logs_dir: root.join("certbot-logs"),
            server: pebble.directory_url.clone(),
            ca_bundle: pebble.tls_root_path.clone(),
        };
        for d in [&cb.config_dir, &cb.work_dir, &cb.logs_dir] {
            std::fs::create_dir_all(d).expect("mkdir certbot dir");
        }
        cb
    }

    /// `certbot certonly --cert-name NAME ARGS...` non-interactively against Pebble, with
    /// terms agreed and no email; panics with certbot's output when it fails.
    pub fn certonly(&self, name: &str, args: &[&str]) {
        let child = Command::new(certbot_bin())
            .arg("certonly")
            .arg("--config-dir")
            .arg(&self.config_dir)
            .arg("--work-dir")
            .arg(&self.work_dir)
            .arg("--logs-dir")
            .arg(&self.logs_dir)
            .args([
                "--non-interactive",
                "--agree-tos",
                "--register-unsafely-without-email",
            ])
            .args(["--server", &self.server, "--cert-name", name])
            .args(args)
            .env("REQUESTS_CA_BUNDLE", &self.ca_bundle)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn certbot");
        let out = wait_bounded(child, CERTONLY_TIMEOUT)
            .unwrap_or_else(|| panic!("certbot certonly {name} took over {CERTONLY_TIMEOUT:?}"));
        assert!(
            out.status.success(),
            "certbot certonly {name} {args:?} failed ({}):\n{}\n{}",
            out.status,
            last_lines(&String::from_utf8_lossy(&out.stdout), 20),
            last_lines(&String::from_utf8_lossy(&out.stderr), 40),
        );
    }

    /// `live/NAME/FILE`.
    pub fn live(&self, name: &str, file: &str) -> PathBuf {
        self.config_dir.join("live").join(name).join(file)
    }
}

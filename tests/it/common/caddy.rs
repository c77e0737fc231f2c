//! Caddy's ACME server (`acme_server`, Smallstep's ACME implementation inside Caddy) as a
//! second ACME server beside Pebble. `scripts/fetch-test-deps.sh` unpacks Debian unstable's
//! `caddy` package under `target/test-deps/caddy`, like Pebble.
//!
//! Caddy runs with its admin API off, its data (the CA's keys and certificates) in a
//! temporary directory, and `skip_install_trust`, so nothing touches the system trust store.
//! Its CA, `renewd`, issues both Caddy's own HTTPS certificate for 127.0.0.1 and the ACME
//! certificates; renewd gets the CA's root as `trust_roots`.
//!
//! Caddy validates http-01 on port 80 and tls-alpn-01 on port 443, resolving names through
//! the system resolver (its `resolvers` option serves dns-01 only): start it inside a
//! [`super::netns::PrivateNet`] and ask for IP identifiers (RFC 8738, `127.0.0.1`) for those
//! two challenges; dns-01 names resolve through the namespace's challtestsrv.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{http_request, wait_until, write_file};

/// The directory holding `caddy`: `$RENEWD_CADDY_DIR`, else
/// `<crate>/target/test-deps/caddy/usr/bin`.
pub fn caddy_bin() -> PathBuf {
    let dir = match std::env::var_os("RENEWD_CADDY_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-deps/caddy/usr/bin"),
    };
    let bin = dir.join("caddy");
    if !bin.is_file() {
        panic!(
            "{} not found: run scripts/fetch-test-deps.sh (or `bash scripts/test.sh`, which \
             runs it), or set RENEWD_CADDY_DIR to the directory holding caddy",
            bin.display()
        );
    }
    bin
}

/// The HTTPS port Caddy serves its ACME directory on, inside the test's namespace.
pub const CADDY_PORT: u16 = 8443;

/// A running Caddy with an `acme_server`, killed when dropped.
pub struct Caddy {
    child: Option<Child>,
    _dir: tempfile::TempDir,
    /// `https://127.0.0.1:8443/acme/renewd/directory`
    pub directory_url: String,
    /// The CA's root certificate: renewd's `trust_roots`, and the issued chains' anchor.
    pub root_pem_path: PathBuf,
    pub log_path: PathBuf,
}

impl Caddy {
    /// Starts Caddy issuing certificates valid for `lifetime` (at least 5 minutes: Caddy
    /// refuses less), returns once its directory answers over HTTPS. Call inside a
    /// [`super::netns::PrivateNet`] (it uses ports 8080 and 8443 of 127.0.0.1, and DNS on
    /// 127.0.0.1:53 for dns-01).
    pub fn start(lifetime: Duration) -> Caddy {
        let dir = tempfile::Builder::new()
            .prefix("renewd-caddy-")
            .tempdir()
            .expect("tempdir");
        let d = dir.path();
        let caddyfile = format!(
            r#"{{
	admin off
	debug
	skip_install_trust
	http_port 8080
	https_port {CADDY_PORT}
	storage file_system {data}
	pki {{
		ca renewd {{
			name "renewd interop CA"
		}}
	}}
}}
https://127.0.0.1:{CADDY_PORT} {{
	tls {{
		issuer internal {{
			ca renewd
		}}
	}}
	acme_server {{
		ca renewd
		lifetime {secs}s
		resolvers 127.0.0.1:53
		challenges http-01 tls-alpn-01 dns-01
	}}
}}
"#,
            data = d.join("data").display(),
            secs = lifetime.as_secs(),
        );
        write_file(d.join("Caddyfile"), caddyfile);
        let log_path = d.join("caddy.log");
        let log = File::create(&log_path).expect("create caddy.log");
        let child = Command::new(caddy_bin())
            .args(["run", "--adapter", "caddyfile", "--config"])
            .arg(d.join("Caddyfile"))
            .env("HOME", d)
            .env("XDG_DATA_HOME", d.join("xdg-data"))
            .env("XDG_CONFIG_HOME", d.join("xdg-config"))
            .current_dir(d)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn caddy: {e}"));
        let mut caddy = Caddy {
            child: Some(child),
            directory_url: format!("https://127.0.0.1:{CADDY_PORT}/acme/renewd/directory"),
            root_pem_path: d.join("data/pki/authorities/renewd/root.crt"),
            log_path,
            _dir: dir,
        };
        let (url, root) = (caddy.directory_url.clone(), caddy.root_pem_path.clone());
        wait_until(
            Duration::from_secs(30),
            "Caddy's ACME directory to answer over HTTPS",
            || {
                if let Some(Ok(Some(st))) = caddy.child.as_mut().map(Child::try_wait) {
                    panic!("caddy exited ({st}):\n{}", caddy.log());
                }
                root.is_file()
                    && http_request("GET", &url, None, Some(&root)).is_ok_and(|r| r.status == 200)
            },
        );
        caddy
    }

    /// Caddy's log so far (JSON lines, debug level).
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for Caddy {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

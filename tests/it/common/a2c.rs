//! acme2certifier (PyPI, `scripts/fetch-test-deps.sh` installs it in a venv under
//! `target/test-deps/acme2certifier`) as a second ACME server beside Pebble, with its
//! built-in OpenSSL CA handler and its own SQLite database, served by Python's `wsgiref`
//! on plain HTTP at 127.0.0.1 (renewd accepts `http://` for loopback directories).
//!
//! acme2certifier validates http-01 on port 80 and tls-alpn-01 on port 443 of the address a
//! name resolves to, through the DNS servers of its `dns_server_list`: start it inside a
//! [`super::netns::PrivateNet`], whose challtestsrv answers on 127.0.0.1:53.

use std::fs::{self, File};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{wait_until, write_file};

/// The venv holding acme2certifier: `$RENEWD_A2C_DIR`, else
/// `<crate>/target/test-deps/acme2certifier`.
pub fn a2c_venv() -> PathBuf {
    let dir = match std::env::var_os("RENEWD_A2C_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-deps/acme2certifier"),
    };
    if !dir.join("bin/python").is_file() {
        panic!(
            "{} not found: run scripts/fetch-test-deps.sh (or `bash scripts/test.sh`, which \
             runs it), or set RENEWD_A2C_DIR to a venv with acme2certifier installed",
            dir.join("bin/python").display()
        );
    }
    dir
}

/// How a test's acme2certifier behaves.
#[derive(Debug, Clone)]
pub struct A2cOptions {
    /// Lifetime of the certificates it issues, in days (`cert_validity_days`).
    pub validity_days: u32,
    /// ARI (`[Renewalinfo] renewal_force`): every certificate is due now.
    pub renewal_force: bool,
    /// A CA valid only this long (from [`Acme2certifier::start`]), with
    /// `cert_validity_adjust`: each certificate ends when the CA does. acme2certifier counts
    /// lifetimes in whole days, so this is how a test gets minutes-long certificates.
    pub ca_lifetime: Option<Duration>,
    /// External account binding required, with this (kid, base64url HMAC key).
    pub eab: Option<(String, String)>,
    /// Profiles advertised in the directory (`[Order] profiles`), name and description.
    pub profiles: Vec<(String, String)>,
}

impl Default for A2cOptions {
    fn default() -> Self {
        A2cOptions {
            validity_days: 30,
            renewal_force: false,
            ca_lifetime: None,
            eab: None,
            profiles: Vec::new(),
        }
    }
}

/// The port acme2certifier listens on, inside the test's private namespace.
pub const A2C_PORT: u16 = 8000;

/// A running acme2certifier on 127.0.0.1:[`A2C_PORT`], killed when dropped.
pub struct Acme2certifier {
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// `http://127.0.0.1:8000/directory`
    pub directory_url: String,
    pub log_path: PathBuf,
}

const LAUNCHER: &str = r#"import sys
from wsgiref.simple_server import make_server
from acme2certifier.share import acme2certifier_wsgi as app
srv = make_server(sys.argv[1], int(sys.argv[2]), app.application, handler_class=app.get_handler_cls())
print("acme2certifier listening", flush=True)
srv.serve_forever()
"#;

impl Acme2certifier {
    /// Writes a fresh issuing CA (openssl) and configuration, and starts the server; returns
    /// once its directory answers. Call inside a [`super::netns::PrivateNet`].
    pub fn start(opts: A2cOptions) -> Acme2certifier {
        let dir = tempfile::Builder::new()
            .prefix("renewd-a2c-")
            .tempdir()
            .expect("tempdir");
        let d = dir.path();
        fs::create_dir_all(d.join("certs")).expect("mkdir certs");
        if let Some(lifetime) = opts.ca_lifetime {
            short_lived_ca(d, lifetime);
        } else {
            long_lived_ca(d);
        }
        write_file(d.join("serve.py"), LAUNCHER);
        let mut a2c = Acme2certifier {
            child: None,
            directory_url: format!("http://127.0.0.1:{A2C_PORT}/directory"),
            log_path: d.join("a2c.log"),
            dir,
        };
        a2c.restart(opts);
        a2c
    }

    /// Stops the server (if running) and starts it again with `opts`; the CA, the database
    /// (accounts, orders, certificates) and the log are kept.
    pub fn restart(&mut self, opts: A2cOptions) {
        self.stop();
        let d = self.dir.path();
        let cfg = format!(
            r#"[DEFAULT]
debug: True
dns_server_list: ["127.0.0.1"]

[Nonce]
nonce_check_disable: False

[CAhandler]
handler_module: acme2certifier.cahandlers.openssl_ca_handler
issuing_ca_key: {d}/ca.key
issuing_ca_cert: {d}/ca.pem
issuing_ca_crl: {d}/crl.pem
cert_save_path: {d}/certs
ca_cert_chain_list: ["{d}/ca.pem"]
cert_validity_days: {days}
cert_validity_adjust: {adjust}

[DBhandler]
handler: wsgi
dbfile: {d}/a2c.db

[Certificate]
revocation_reason_check_disable: False

[Challenge]
challenge_validation_disable: False

[Order]
tnauthlist_support: False
{profiles}

[Renewalinfo]
renewal_force: {force}
{eab}"#,
            d = d.display(),
            days = opts.validity_days,
            force = if opts.renewal_force { "True" } else { "False" },
            adjust = if opts.ca_lifetime.is_some() {
                "True"
            } else {
                "False"
            },
            profiles = if opts.profiles.is_empty() {
                String::new()
            } else {
                let map: serde_json::Map<String, serde_json::Value> = opts
                    .profiles
                    .iter()
                    .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                    .collect();
                format!("profiles: {}", serde_json::Value::Object(map))
            },
            eab = match &opts.eab {
                None => String::new(),
                Some(_) => format!(
                    "\n[EABhandler]\neab_handler_module: acme2certifier.eabhandlers.json_handler\n\
                     key_file: {}/eab.json\n",
                    d.display()
                ),
            },
        );
        write_file(d.join("acme_srv.cfg"), cfg);
        if let Some((kid, key)) = &opts.eab {
            write_file(
                d.join("eab.json"),
                serde_json::json!({ kid: key }).to_string(),
            );
        }
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("open a2c.log");
        let child = Command::new(a2c_venv().join("bin/python"))
            .arg(d.join("serve.py"))
            .args(["127.0.0.1", &A2C_PORT.to_string()])
            .env("ACME_SRV_CONFIGFILE", d.join("acme_srv.cfg"))
            .current_dir(d)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn acme2certifier: {e}"));
        self.child = Some(child);
        wait_until(
            Duration::from_secs(30),
            "acme2certifier to listen on 127.0.0.1:8000",
            || {
                if let Some(Ok(Some(st))) = self.child.as_mut().map(Child::try_wait) {
                    panic!("acme2certifier exited ({st}):\n{}", self.log());
                }
                TcpStream::connect(("127.0.0.1", A2C_PORT)).is_ok()
            },
        );
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The server's log so far (its debug log and one line per request).
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The last `n` lines of its log, newest first: for a failure message.
    pub fn log_tail(&self, n: usize) -> String {
        super::last_lines(&self.log(), n)
    }
}

impl Drop for Acme2certifier {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A year-long P-256 CA (`ca.key`, `ca.pem` in `d`), made by openssl.
fn long_lived_ca(d: &Path) {
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:P-256", "-nodes", "-days", "365"])
        .args(["-subj", "/CN=renewd interop acme2certifier CA"])
        .args(["-addext", "basicConstraints=critical,CA:TRUE"])
        .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"])
        .args(["-addext", "subjectKeyIdentifier=hash"])
        .arg("-keyout")
        .arg(d.join("ca.key"))
        .arg("-out")
        .arg(d.join("ca.pem"))
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl req (the CA): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A P-256 CA valid from a minute ago for `lifetime` (`ca.key`, `ca.pem` in `d`), made by
/// rcgen (openssl's `req` takes whole days).
fn short_lived_ca(d: &Path, lifetime: Duration) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
    let key = KeyPair::generate().expect("CA key");
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.distinguished_name.push(
        DnType::CommonName,
        "renewd interop short-lived acme2certifier CA",
    );
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::minutes(1);
    params.not_after = now + lifetime;
    let cert = params.self_signed(&key).expect("self-sign CA");
    write_file(d.join("ca.pem"), cert.pem());
    write_file(d.join("ca.key"), key.serialize_pem());
}

//! A real nginx (Debian's package) serving TLS on a free loopback port, for the tests of
//! the post-reload proof (`verify`).
//!
//! Each [`Nginx`] is its own process tree with its own generated configuration, pid file,
//! lock file, logs and temporary directories, all under the directory the test gives it;
//! nothing of `/etc/nginx`, `/var/lib/nginx` or port 80 is used, and the distribution's
//! nginx service plays no part. nginx runs in the foreground (`daemon off`) as a child of the
//! test, in its own process group; drop stops it (SIGTERM, then SIGKILL to the group) and
//! reaps it.
//!
//! nginx comes from `scripts/fetch-test-deps.sh` (`apt-get install nginx`); `RENEWD_NGINX`
//! may name another binary.

use std::fmt::Write as _;
use std::fs;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use super::{cert_view, free_port, CertView};

/// How long [`Nginx::start`] waits for nginx to answer TLS.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// How long drop waits for nginx to stop after SIGTERM before killing its process group.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// The nginx binary: `$RENEWD_NGINX`, else `nginx` in `$PATH`, else the usual sbin paths
/// (a non-root `$PATH` often lacks `/usr/sbin`, where Debian installs it).
pub fn nginx_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("RENEWD_NGINX").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        assert!(
            is_executable(&path),
            "RENEWD_NGINX={} is not an executable file",
            path.display()
        );
        return path;
    }
    let from_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    let fallback = [
        "/usr/sbin",
        "/usr/local/sbin",
        "/sbin",
        "/usr/local/nginx/sbin",
    ];
    from_path
        .into_iter()
        .chain(fallback.iter().map(PathBuf::from))
        .map(|dir| dir.join("nginx"))
        .find(|p| is_executable(p))
        .unwrap_or_else(|| {
            panic!(
                "nginx not found (looked in $PATH and {}): run scripts/fetch-test-deps.sh \
                 (or `bash scripts/test.sh`, which runs it) to install Debian's nginx, or set \
                 RENEWD_NGINX to an nginx binary",
                fallback.join(", ")
            )
        })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// One `server` block: the names it answers to and its certificate (PEM, leaf first) and key.
#[derive(Debug, Clone)]
pub struct Site {
    /// `server_name` values; empty means `_` (matches nothing in particular).
    pub names: Vec<String>,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Site {
    pub fn new(names: &[&str], cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Site {
        Site {
            names: names.iter().map(|n| n.to_string()).collect(),
            cert: cert.into(),
            key: key.into(),
        }
    }
}

/// A running nginx. See the module documentation.
pub struct Nginx {
    dir: PathBuf,
    conf: PathBuf,
    error_log: PathBuf,
    port: u16,
    bin: PathBuf,
    child: Option<Child>,
}

impl Nginx {
    /// nginx serving `cert_path`/`key_path` (PEM) on 127.0.0.1:[`Nginx::port`] to every
    /// client, with `dir` (created if missing) for its configuration, pid file, logs and
    /// temporary files. Returns once it completes TLS handshakes.
    pub fn start(dir: &Path, cert_path: &Path, key_path: &Path) -> Nginx {
        Nginx::start_sites(
            dir,
            &[Site::new(&[], cert_path, key_path)],
            &["TLSv1.2", "TLSv1.3"],
        )
    }

    /// nginx with one `server` block per site on the same port, the first being the default
    /// (what a client without SNI, or with an unknown name, gets), speaking `protocols`
    /// (nginx's `ssl_protocols`, e.g. `["TLSv1.3"]`).
    pub fn start_sites(dir: &Path, sites: &[Site], protocols: &[&str]) -> Nginx {
        assert!(!sites.is_empty(), "nginx needs at least one site");
        fs::create_dir_all(dir.join("tmp"))
            .unwrap_or_else(|e| panic!("create {}: {e}", dir.join("tmp").display()));
        let bin = nginx_bin();
        // A port free a moment ago may be taken by the time nginx binds it: try another.
        let mut last_log = String::new();
        for _ in 0..3 {
            let port = free_port();
            let mut nginx = Nginx {
                dir: dir.to_path_buf(),
                conf: dir.join("nginx.conf"),
                error_log: dir.join("error.log"),
                port,
                bin: bin.clone(),
                child: None,
            };
            let _ = fs::remove_file(&nginx.error_log);
            fs::write(&nginx.conf, nginx.config_text(sites, protocols))
                .unwrap_or_else(|e| panic!("write {}: {e}", nginx.conf.display()));
            match nginx.spawn_and_wait() {
                Ok(()) => return nginx,
                Err(log) if log.contains("Address already in use") => last_log = log,
                Err(log) => panic!(
                    "nginx ({}) did not start serving TLS on 127.0.0.1:{port}:\n{log}\n\
                     --- nginx.conf ---\n{}",
                    nginx.bin.display(),
                    nginx.config()
                ),
            }
        }
        panic!("nginx could not bind a free port three times:\n{last_log}");
    }

    fn config_text(&self, sites: &[Site], protocols: &[&str]) -> String {
        let d = self.dir.display();
        // A root master switches its workers to `user`, by default a user that may not
        // exist or may not reach the test's files; as root, keep the workers root. A
        // non-root master cannot switch and ignores `user` with a warning, so leave it out.
        let user = if nix::unistd::geteuid().is_root() {
            "user root;\n"
        } else {
            ""
        };
        let mut text = format!(
            "# Generated by tests/it/common/nginx.rs\n\
             daemon off;\n\
             master_process on;\n\
             worker_processes 1;\n\
             {user}\
             pid {d}/nginx.pid;\n\
             lock_file {d}/nginx.lock;\n\
             error_log {d}/error.log info;\n\
             events {{ worker_connections 64; }}\n\
             http {{\n\
             \x20   access_log {d}/access.log;\n\
             \x20   client_body_temp_path {d}/tmp/body;\n\
             \x20   proxy_temp_path {d}/tmp/proxy;\n\
             \x20   fastcgi_temp_path {d}/tmp/fastcgi;\n\
             \x20   uwsgi_temp_path {d}/tmp/uwsgi;\n\
             \x20   scgi_temp_path {d}/tmp/scgi;\n\
             \x20   ssl_protocols {protocols};\n",
            protocols = protocols.join(" ")
        );
        for (i, site) in sites.iter().enumerate() {
            let names = if site.names.is_empty() {
                "_".to_string()
            } else {
                site.names.join(" ")
            };
            let _ = write!(
                text,
                "    server {{\n\
                 \x20       listen 127.0.0.1:{port} ssl{default};\n\
                 \x20       server_name {names};\n\
                 \x20       ssl_certificate {cert};\n\
                 \x20       ssl_certificate_key {key};\n\
                 \x20       return 200 \"{names}\\n\";\n\
                 \x20   }}\n",
                port = self.port,
                default = if i == 0 { " default_server" } else { "" },
                cert = site.cert.display(),
                key = site.key.display(),
            );
        }
        text.push_str("}\n");
        text
    }

    /// Starts the master; `Err(error log)` if it exits or does not answer TLS in time.
    fn spawn_and_wait(&mut self) -> Result<(), String> {
        let out = fs::File::create(self.dir.join("nginx.out"))
            .unwrap_or_else(|e| panic!("create nginx.out: {e}"));
        let err = out.try_clone().expect("clone nginx.out");
        let child = Command::new(&self.bin)
            .args(self.base_args())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.bin.display()));
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                return Err(format!("nginx exited ({status}):\n{}", self.logs()));
            }
            if fetch_leaf(self.port, None).is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.stop();
                return Err(format!(
                    "no TLS answer within {START_TIMEOUT:?}:\n{}",
                    self.logs()
                ));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// `-p DIR/ -e DIR/error.log -c DIR/nginx.conf`: no compiled-in path is used, not even
    /// for the error log nginx opens before it reads its configuration.
    fn base_args(&self) -> Vec<String> {
        vec![
            "-p".into(),
            format!("{}/", self.dir.display()),
            "-e".into(),
            self.error_log.display().to_string(),
            "-c".into(),
            self.conf.display().to_string(),
        ]
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`, as `verify.connect` would say.
    pub fn connect(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The argv a renewd `reload` entry uses to make this nginx re-read its configuration
    /// and certificates (`nginx … -s reload`: checks the configuration, signals the master,
    /// and returns before the new workers answer).
    pub fn reload_argv(&self) -> Vec<String> {
        let mut argv = vec![self.bin.display().to_string()];
        argv.extend(self.base_args());
        argv.extend(["-s".to_string(), "reload".to_string()]);
        argv
    }

    /// [`Nginx::reload_argv`] as a TOML array, for a renewd configuration's `reload`.
    pub fn reload_toml(&self) -> String {
        let quoted: Vec<String> = self
            .reload_argv()
            .iter()
            .map(|a| format!("\"{a}\""))
            .collect();
        format!("[{}]", quoted.join(", "))
    }

    /// Runs [`Nginx::reload_argv`]; panics with nginx's output unless it succeeds.
    pub fn reload(&self) {
        let argv = self.reload_argv();
        let out = Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run {argv:?}: {e}"));
        assert!(
            out.status.success(),
            "{argv:?} failed ({}):\n{}{}\n--- error.log ---\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.logs()
        );
    }

    /// The leaf certificate served to a client sending `server_name` as SNI (`None`: no
    /// SNI), read by the harness's own TLS client, independently of renewd's.
    pub fn served_cert(&self, server_name: Option<&str>) -> CertView {
        let der = fetch_leaf(self.port, server_name).unwrap_or_else(|e| {
            panic!(
                "no certificate from nginx on 127.0.0.1:{}: {e}\n{}",
                self.port,
                self.logs()
            )
        });
        cert_view(&der)
    }

    /// The serial (lowercase hex, as renewd spells it) served to clients without SNI.
    pub fn served_serial(&self) -> String {
        self.served_cert(None).serial_hex
    }

    /// Waits until nginx is done reloading and serves `der` to clients sending
    /// `server_name` (`None`: no SNI): its master has a single worker left (after a reload,
    /// old workers keep accepting connections until they have shut down) and that worker
    /// serves `der`. Panics with the logs after 15 s.
    pub fn wait_serving(&self, server_name: Option<&str>, der: &[u8]) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            // The same single worker before and after the handshake: it is the one that
            // answered, and no reload was under way.
            let workers = self.workers();
            let served = fetch_leaf(self.port, server_name);
            let settled = workers.len() == 1 && self.workers() == workers;
            let seen = match served {
                Ok(served) if served == der && settled => return,
                Ok(served) => format!(
                    "workers {workers:?}, serving serial {}",
                    cert_view(&served).serial_hex
                ),
                Err(e) => format!("workers {workers:?}, {e}"),
            };
            if Instant::now() >= deadline {
                panic!(
                    "nginx on 127.0.0.1:{} did not settle on the expected certificate \
                     (serial {}) within {START_TIMEOUT:?}; last: {seen}\n{}",
                    self.port,
                    cert_view(der).serial_hex,
                    self.logs()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// The pids of the master's children (its workers), from `/proc`.
    fn workers(&self) -> Vec<i32> {
        let Some(master) = self.child.as_ref().map(|c| c.id() as i32) else {
            return Vec::new();
        };
        let Ok(entries) = fs::read_dir("/proc") else {
            return Vec::new();
        };
        let mut pids: Vec<i32> = entries
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                // `/proc/PID/stat`: "PID (COMM) STATE PPID …"; COMM may contain anything, so
                // read after its closing parenthesis.
                fs::read_to_string(format!("/proc/{pid}/stat"))
                    .ok()
                    .and_then(|stat| {
                        let rest = &stat[stat.rfind(')')? + 1..];
                        rest.split_whitespace().nth(1)?.parse::<i32>().ok()
                    })
                    == Some(master)
            })
            .collect();
        pids.sort_unstable();
        pids
    }

    /// The generated configuration.
    pub fn config(&self) -> String {
        fs::read_to_string(&self.conf).unwrap_or_default()
    }

    /// nginx's error log and its stdout/stderr so far.
    pub fn logs(&self) -> String {
        let read = |name: &str| {
            fs::read(self.dir.join(name))
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default()
        };
        format!(
            "--- error.log ---\n{}--- stdout/stderr ---\n{}",
            read("error.log"),
            read("nginx.out")
        )
    }

    /// SIGTERM to the master (fast shutdown: it stops its workers), then SIGKILL to the
    /// whole process group if it has not exited within [`STOP_TIMEOUT`]; reaps the master.
    fn stop(&mut self) {
        use nix::sys::signal::{kill, killpg, Signal};
        use nix::unistd::Pid;
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = Pid::from_raw(child.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                // A master stopped by SIGTERM has stopped its workers first.
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        // The master is not reaped yet, so the group id is still ours.
        let _ = killpg(pid, Signal::SIGKILL);
        let _ = child.wait();
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One TLS handshake with 127.0.0.1:`port`, returning the leaf the server presents. Accepts
/// any certificate (the tests ask which one is served) but checks the handshake signature.
fn fetch_leaf(port: u16, server_name: Option<&str>) -> Result<Vec<u8>, String> {
    use rustls::pki_types::ServerName;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = Arc::new(AcceptAnyCert(provider.signature_verification_algorithms));
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    let name = ServerName::try_from(server_name.unwrap_or("127.0.0.1").to_string())
        .map_err(|e| e.to_string())?;
    let mut conn =
        rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| e.to_string())?;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut sock =
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    sock.set_write_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    while conn.is_handshaking() {
        conn.complete_io(&mut sock).map_err(|e| e.to_string())?;
    }
    let leaf = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.as_ref().to_vec())
        .ok_or_else(|| "no certificate presented".to_string())?;
    conn.send_close_notify();
    let _ = conn.complete_io(&mut sock);
    Ok(leaf)
}

#[derive(Debug)]
struct AcceptAnyCert(rustls::crypto::WebPkiSupportedAlgorithms);

impl rustls::client::danger::ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_schemes()
    }
}

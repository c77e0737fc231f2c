//! The integration-test harness: real Pebble (Let's Encrypt's test CA) with
//! `pebble-challtestsrv` as its DNS, a tiny real HTTP server for http-01
//! webroots, and helpers to read certificates and keys back.
//!
//! [`nginx`] runs a real nginx as a TLS service for the post-reload proof.
//!
//! Every test starts its own [`Pebble`] on free loopback ports; nothing is
//! shared between tests, so they run in parallel. The Pebble binaries come from
//! `scripts/fetch-test-deps.sh` (Debian unstable's `pebble` 2.10 package,
//! unpacked under `target/test-deps/pebble`); `scripts/test.sh` runs it and
//! points `RENEWD_PEBBLE_DIR` at them.
//!
//! A module of the one integration-test crate (`tests/it/main.rs`): its test modules use
//! `crate::common`. Tests that must not overlap with others take [`serial`]'s guards.

pub mod a2c;
pub mod acme_client;
pub mod bind;
pub mod caddy;
pub mod faultproxy;
pub mod netns;
pub mod nginx;
pub mod rig;
pub mod seed;
pub mod serial;

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long [`Pebble::start`] waits for the directory to answer.
const START_TIMEOUT: Duration = Duration::from_secs(15);
const POLL: Duration = Duration::from_millis(50);

// ---------------------------------------------------------------------------
// Locating things

/// The directory holding `pebble` and `pebble-challtestsrv`:
/// `$RENEWD_PEBBLE_DIR`, else `<crate>/target/test-deps/pebble/usr/bin`.
pub fn pebble_bin_dir() -> PathBuf {
    let dir = match std::env::var_os("RENEWD_PEBBLE_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-deps/pebble/usr/bin"),
    };
    for bin in ["pebble", "pebble-challtestsrv"] {
        if !dir.join(bin).is_file() {
            panic!(
                "{} not found: run scripts/fetch-test-deps.sh (or `bash scripts/test.sh`, \
                 which runs it), or set RENEWD_PEBBLE_DIR to the directory holding \
                 pebble and pebble-challtestsrv",
                dir.join(bin).display()
            );
        }
    }
    dir
}

/// The renewd binary Cargo built for this test run.
pub fn renewd_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_renewd"))
}

/// A loopback port, free for TCP and UDP a moment ago. Ports are never handed
/// out twice within one test process, so parallel tests do not race each other
/// for the same port. They are picked at random *below* the kernel's ephemeral
/// range (`net.ipv4.ip_local_port_range`), so the source port of some outgoing
/// connection cannot take one between now and when a server binds it.
pub fn free_port() -> u16 {
    static GIVEN: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let given = GIVEN.get_or_init(|| Mutex::new(HashSet::new()));
    let ephemeral_low = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    const LOW: u16 = 10000;
    let is_free = |port: u16| {
        TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
            && std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
    };
    for _ in 0..1000 {
        let port = if ephemeral_low > LOW + 1000 {
            rand::random_range(LOW..ephemeral_low)
        } else {
            // Odd kernel configuration: let the kernel choose.
            let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
            l.local_addr().expect("local_addr").port()
        };
        if is_free(port) && given.lock().unwrap().insert(port) {
            return port;
        }
    }
    panic!("no free loopback port found");
}

// ---------------------------------------------------------------------------
// Small file helpers

/// Write `contents` to `path`, creating parent directories.
pub fn write_file(path: impl AsRef<Path>, contents: impl AsRef<[u8]>) {
    let path = path.as_ref();
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).unwrap_or_else(|e| panic!("create {}: {e}", parent.display()));
    }
    fs::write(path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// Waits for `child` at most `limit`; kills it and returns `None` past it. Its output is
/// whatever it piped (empty for streams not piped).
pub fn wait_bounded(mut child: Child, limit: Duration) -> Option<std::process::Output> {
    let end = Instant::now() + limit;
    loop {
        if child.try_wait().expect("wait").is_some() {
            return Some(child.wait_with_output().expect("output"));
        }
        if Instant::now() >= end {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Seconds since the Unix epoch of `t`, as the state records and `status --json` give times.
pub fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).expect("after 1970").as_secs()
}

/// Now, in seconds since the Unix epoch ([`unix_secs`]).
pub fn now_secs() -> u64 {
    unix_secs(SystemTime::now())
}

/// The last `n` lines of `text`, newest first (for failure messages quoting a server's log).
pub fn last_lines(text: &str, n: usize) -> String {
    text.lines().rev().take(n).collect::<Vec<_>>().join("\n")
}

/// A temporary directory holding `subdirs` (relative paths, "" for itself), each mode 0755
/// whatever the umask: renewd refuses directories others can write.
pub fn tempdir_with(subdirs: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for d in subdirs {
        let p = dir.path().join(d);
        fs::create_dir_all(&p).expect("mkdir");
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    dir
}

/// Write an executable (0755) shell script. `#!/bin/sh` is prepended unless
/// the script starts with its own `#!` line.
pub fn write_exec(path: impl AsRef<Path>, script: &str) {
    let path = path.as_ref();
    let body = if script.starts_with("#!") {
        script.to_string()
    } else {
        format!("#!/bin/sh\n{script}")
    };
    write_file(path, body);
    fs::set_permissions(path, fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

/// Poll `f` every 50 ms until it returns true; panic with `what` after `timeout`.
pub fn wait_until(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        thread::sleep(POLL);
    }
}

// ---------------------------------------------------------------------------
// Certificates and keys

/// What tests usually need to know about a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertView {
    /// Lowercase hex, two digits a byte, no separators (e.g. `"0e1f0c..."`), as
    /// renewd and `openssl x509 -serial` show it.
    pub serial_hex: String,
    pub not_after: SystemTime,
    pub not_before: SystemTime,
    /// Subject alternative names: DNS names as written, IP addresses as text.
    pub names: Vec<String>,
    /// SubjectPublicKeyInfo, DER; compare with [`key_spki`].
    pub spki: Vec<u8>,
    /// This certificate alone, DER.
    pub der: Vec<u8>,
    /// The serial's content octets as encoded (with any leading 0x00), and
    /// the Authority Key Identifier's keyIdentifier: the two halves of an ARI
    /// certificate id (RFC 9773 §4.1, each base64url-encoded, joined by '.').
    pub serial_raw: Vec<u8>,
    pub aki: Option<Vec<u8>>,
}

impl CertView {
    /// The serial as Pebble logs it (`%x` of the number: no leading zero).
    pub fn pebble_serial(&self) -> String {
        let t = self.serial_hex.trim_start_matches('0');
        if t.is_empty() {
            "0".into()
        } else {
            t.into()
        }
    }
}

/// Every CERTIFICATE block in a PEM string, in order.
pub fn parse_certs_pem(pem: &str) -> Vec<CertView> {
    let mut out = Vec::new();
    for block in x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes()) {
        let block = block.unwrap_or_else(|e| panic!("bad PEM: {e}"));
        if block.label != "CERTIFICATE" {
            continue;
        }
        out.push(cert_view(&block.contents));
    }
    out
}

/// The first certificate in a PEM file (the leaf of a fullchain).
pub fn read_cert_pem(path: impl AsRef<Path>) -> CertView {
    let path = path.as_ref();
    read_certs_pem(path)
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no CERTIFICATE block in {}", path.display()))
}

/// Every certificate in a PEM file, in order.
pub fn read_certs_pem(path: impl AsRef<Path>) -> Vec<CertView> {
    let path = path.as_ref();
    let pem = fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    parse_certs_pem(&pem)
}

fn cert_view(der: &[u8]) -> CertView {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .unwrap_or_else(|e| panic!("bad certificate DER: {e}"));
    let to_time = |t: &x509_parser::time::ASN1Time| {
        let secs = t.timestamp();
        if secs >= 0 {
            UNIX_EPOCH + Duration::from_secs(secs as u64)
        } else {
            UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
        }
    };
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(d) => names.push(d.to_string()),
                GeneralName::IPAddress(b) => match b.len() {
                    4 => names.push(
                        std::net::Ipv4Addr::from(<[u8; 4]>::try_from(*b).unwrap()).to_string(),
                    ),
                    16 => names.push(
                        std::net::Ipv6Addr::from(<[u8; 16]>::try_from(*b).unwrap()).to_string(),
                    ),
                    _ => {}
                },
                _ => {}
            }
        }
    }
    let aki = cert
        .iter_extensions()
        .find_map(|ext| match ext.parsed_extension() {
            x509_parser::extensions::ParsedExtension::AuthorityKeyIdentifier(aki) => {
                aki.key_identifier.as_ref().map(|k| k.0.to_vec())
            }
            _ => None,
        });
    CertView {
        // Byte-wise, as `openssl x509 -serial` and renewd print it (a leading zero nibble
        // kept); Pebble's own log drops it, see `CertView::pebble_serial`.
        serial_hex: cert
            .tbs_certificate
            .serial
            .to_bytes_be()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
        not_after: to_time(&cert.validity().not_after),
        not_before: to_time(&cert.validity().not_before),
        names,
        spki: cert.tbs_certificate.subject_pki.raw.to_vec(),
        der: der.to_vec(),
        serial_raw: cert.tbs_certificate.raw_serial().to_vec(),
        aki,
    }
}

/// The SubjectPublicKeyInfo (DER) of a private key PEM file (PKCS#8
/// "PRIVATE KEY", SEC1 "EC PRIVATE KEY" or PKCS#1 "RSA PRIVATE KEY"; ECDSA
/// P-256/P-384/P-521, Ed25519 or RSA). Equals [`CertView::spki`] exactly when
/// the key belongs to the certificate.
pub fn key_spki(path: impl AsRef<Path>) -> Vec<u8> {
    use rcgen::PublicKeyData;
    let path = path.as_ref();
    let pem = fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let key = rcgen::KeyPair::from_pem(&pem).unwrap_or_else(|e| {
        panic!(
            "{} is not a private key rcgen can read: {e}",
            path.display()
        )
    });
    key.subject_public_key_info()
}

// ---------------------------------------------------------------------------
// A small blocking HTTP(S) client for talking to Pebble's and challtestsrv's
// management interfaces. Runs on its own thread with its own runtime, so it
// works from plain and from #[tokio::test] tests alike.

/// An HTTP response: status and body as text.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub body: String,
}

/// `method url` with an optional body. `https://` URLs are verified against
/// the PEM roots in `trust_root` (Pebble's HTTPS certificate is signed by the
/// harness's own CA, see [`Pebble::tls_root_path`]). 10 s timeout.
pub fn http_request(
    method: &str,
    url: &str,
    body: Option<Vec<u8>>,
    trust_root: Option<&Path>,
) -> Result<HttpResponse, String> {
    let method = method.to_string();
    let url = url.to_string();
    let root = trust_root.map(Path::to_path_buf);
    thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(async move {
            tokio::time::timeout(
                Duration::from_secs(10),
                http_request_async(&method, &url, body, root.as_deref()),
            )
            .await
            .map_err(|_| format!("{method} {url}: timed out"))?
        })
    })
    .join()
    .map_err(|_| "http client thread panicked".to_string())?
}

async fn http_request_async(
    method: &str,
    url: &str,
    body: Option<Vec<u8>>,
    trust_root: Option<&Path>,
) -> Result<HttpResponse, String> {
    use http_body_util::{BodyExt, Full};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;

    let mut roots = rustls::RootCertStore::empty();
    if let Some(path) = trust_root {
        let pem = fs::read(path).map_err(|e| format!("read {}: {e}", path.display()))?;
        for cert in
            <rustls::pki_types::CertificateDer as rustls::pki_types::pem::PemObject>::pem_slice_iter(
                &pem,
            )
        {
            let cert = cert.map_err(|e| format!("{}: {e}", path.display()))?;
            roots
                .add(cert)
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .build();
    let client: Client<_, Full<bytes::Bytes>> =
        Client::builder(TokioExecutor::new()).build(connector);
    // Pebble rejects requests without a User-Agent.
    let mut req = http::Request::builder()
        .method(method)
        .uri(url)
        .header("user-agent", "renewd-test-harness");
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let req = req
        .body(Full::new(bytes::Bytes::from(body.unwrap_or_default())))
        .map_err(|e| e.to_string())?;
    let resp = client
        .request(req)
        .await
        .map_err(|e| format!("{method} {url}: {e:?}"))?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("{method} {url}: reading body: {e}"))?
        .to_bytes();
    Ok(HttpResponse {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

// ---------------------------------------------------------------------------
// Pebble

/// How a test's Pebble behaves.
#[derive(Debug, Clone)]
pub struct PebbleOptions {
    /// Certificate lifetime, applied to every profile ("default" and
    /// "shortlived"): Pebble picks a random profile when an order names none.
    pub validity_secs: u64,
    /// `PEBBLE_WFE_NONCEREJECT`: `None` leaves Pebble's default on (5% of good
    /// nonces rejected as bad, to exercise clients' retries); `Some(0)` disables.
    pub nonce_reject_percent: Option<u8>,
    /// External account binding keys: (kid, base64url HMAC key). Non-empty
    /// makes EAB required.
    pub eab_keys: Vec<(String, String)>,
    /// Retry-After (seconds) Pebble sends on orders being processed.
    pub order_retry_after: u64,
    /// Retry-After (seconds) Pebble sends on pending authorizations.
    pub authz_retry_after: u64,
    /// `PEBBLE_AUTHZREUSE`: how often Pebble reuses a valid authorization for
    /// a new order instead of making the client validate again. `None` leaves
    /// Pebble's default (50%); `Some(0)` forces a fresh challenge every order.
    pub authz_reuse_percent: Option<u8>,
    /// Pebble's `-dnsserver`: `None` for the harness's challtestsrv, else another DNS
    /// server (e.g. a test's own BIND, [`bind::Bind`]) that Pebble resolves through.
    pub dns_server: Option<SocketAddr>,
    /// Per-profile certificate lifetimes (profile name, seconds), replacing
    /// `validity_secs` for the profiles named (a name not yet there adds a profile).
    pub profile_validity: Vec<(String, u64)>,
    /// `PEBBLE_ALTERNATE_ROOTS`: how many more roots (each with its own intermediate) Pebble
    /// makes; every certificate is then also offered under each as a `Link: rel="alternate"`
    /// chain, and `/roots/N`, `/intermediates/N` serve them.
    pub alternate_roots: u8,
}

impl Default for PebbleOptions {
    fn default() -> Self {
        PebbleOptions {
            validity_secs: 3600,
            nonce_reject_percent: None,
            eab_keys: Vec::new(),
            order_retry_after: 1,
            authz_retry_after: 1,
            authz_reuse_percent: None,
            dns_server: None,
            profile_validity: Vec::new(),
            alternate_roots: 0,
        }
    }
}

/// A running Pebble plus its challtestsrv, on free loopback ports, with all
/// files (config, TLS material, logs) in `dir`. Both processes are killed on
/// drop.
///
/// Names resolve through challtestsrv to 127.0.0.1 only (no AAAA), so any
/// name works for http-01 and tls-alpn-01 as long as something listens on
/// `http_port` / `tls_port`.
///
/// What Pebble 2.10 logs (to [`Pebble::log`]), one line each, all prefixed
/// `Pebble YYYY/MM/DD HH:MM:SS `; the constants on `Pebble` are substrings for
/// [`Pebble::count_log`]:
/// * every request, ACME or management, *before* it is handled (so a request
///   rejected for a bad nonce and retried counts twice):
///   `POST /order-plz -> calling handler()` per new-order request
///   ([`Pebble::NEW_ORDER_LOG`]), `POST /sign-me-up -> calling handler()` per
///   new-account request ([`Pebble::NEW_ACCOUNT_LOG`]), `GET /dir -> …`,
///   `HEAD /nonce-plz -> …`, `POST /finalize-order/ -> …`, `POST /certZ/ -> …`,
///   `GET /draft-ietf-acme-ari-03/renewalInfo/ -> …` (the harness's own
///   readiness check adds one `GET /dir` per start);
/// * an order actually created: `Added order "<id>" to the db`
///   ([`Pebble::ORDER_CREATED_LOG`]);
/// * a new account: `There are now <n> accounts in memory`;
/// * a challenge validated: `authz <id> set VALID by completed challenge <id>`;
///   each http-01 validation fetches the token 3 times (`Starting 3 validations.`);
/// * issuance: `Issued certificate serial <hex> for order <id>`
///   ([`Pebble::CERT_ISSUED_LOG`]; the serial is [`CertView::pebble_serial`]);
/// * a new order naming `replaces`: `ARI: order "<new id>" is a replacement of "<old order id>"`
///   ([`Pebble::REPLACEMENT_LOG`]).
///
/// The smoke test `tests/it/harness.rs` prints a whole issuance's log.
pub struct Pebble {
    pub dir: tempfile::TempDir,
    /// `https://127.0.0.1:PORT/dir`
    pub directory_url: String,
    /// `https://127.0.0.1:PORT`: /roots/0, /intermediates/0, /set-renewal-info/ …
    pub mgmt_url: String,
    /// Where Pebble's VA connects for http-01 (`http://<name>:<http_port>/`).
    pub http_port: u16,
    /// Where Pebble's VA connects for tls-alpn-01.
    pub tls_port: u16,
    /// challtestsrv's DNS (UDP and TCP): Pebble's resolver unless `PebbleOptions::dns_server` names another.
    pub dns_port: u16,
    /// `http://127.0.0.1:PORT`: challtestsrv's management API (/set-txt …).
    pub challtestsrv_mgmt: String,
    /// PEM of the CA that signed Pebble's own HTTPS certificate: what renewd's
    /// `trust_roots` must name. (Not the CA that issues ACME certificates: see
    /// [`Pebble::issuing_roots_pem`].)
    pub tls_root_path: PathBuf,
    pub config_path: PathBuf,
    pub log_path: PathBuf,
    pub challtestsrv_log_path: PathBuf,
    pub opts: PebbleOptions,
    pebble: Option<Child>,
    challtestsrv: Option<Child>,
}

impl Pebble {
    /// Logged once per new-order request (including ones then rejected).
    pub const NEW_ORDER_LOG: &'static str = "POST /order-plz -> calling handler()";
    /// Logged once per order Pebble actually created.
    pub const ORDER_CREATED_LOG: &'static str = "Added order \"";
    /// Logged once per new-account request (including `onlyReturnExisting` look-ups).
    pub const NEW_ACCOUNT_LOG: &'static str = "POST /sign-me-up -> calling handler()";
    /// Logged once per certificate issued, followed by its serial in hex.
    /// Logged once per account actually created (a request retried after a rejected
    /// nonce is counted once here, twice in [`Pebble::NEW_ACCOUNT_LOG`]).
    pub const ACCOUNT_CREATED_LOG: &'static str = " accounts in memory";
    pub const CERT_ISSUED_LOG: &'static str = "Issued certificate serial ";
    /// Logged when a new order names `replaces` (ARI).
    pub const REPLACEMENT_LOG: &'static str = "is a replacement of";

    /// Start challtestsrv and Pebble; returns once the directory answers over
    /// HTTPS (panics with both logs after 15 s or if either process dies).
    pub fn start(opts: PebbleOptions) -> Pebble {
        let bin = pebble_bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("renewd-pebble-")
            .tempdir()
            .expect("tempdir");
        let d = dir.path().to_path_buf();

        let (acme_port, mgmt_port) = (free_port(), free_port());
        let (http_port, tls_port) = (free_port(), free_port());
        let (dns_port, cts_mgmt_port) = (free_port(), free_port());

        // Pebble's own HTTPS certificate, from a throwaway CA.
        let tls_root_path = d.join("tls-root.pem");
        let (cert_pem, key_pem, root_pem) = make_localhost_cert();
        write_file(&tls_root_path, root_pem);
        write_file(d.join("tls-cert.pem"), cert_pem);
        write_file(d.join("tls-key.pem"), key_pem);

        let profile = |desc: &str| serde_json::json!({ "description": desc, "validityPeriod": opts.validity_secs });
        let mut profiles = serde_json::json!({
            "default": profile("default (renewd tests)"),
            "shortlived": profile("shortlived (renewd tests)"),
        });
        for (name, secs) in &opts.profile_validity {
            profiles[name] = serde_json::json!({ "description": name, "validityPeriod": secs });
        }
        let mac_keys: serde_json::Map<String, serde_json::Value> = opts
            .eab_keys
            .iter()
            .map(|(kid, key)| (kid.clone(), serde_json::Value::String(key.clone())))
            .collect();
        let config = serde_json::json!({ "pebble": {
            "listenAddress": format!("127.0.0.1:{acme_port}"),
            "managementListenAddress": format!("127.0.0.1:{mgmt_port}"),
            "certificate": d.join("tls-cert.pem"),
            "privateKey": d.join("tls-key.pem"),
            "httpPort": http_port,
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": !opts.eab_keys.is_empty(),
            "externalAccountMACKeys": mac_keys,
            "retryAfter": { "authz": opts.authz_retry_after, "order": opts.order_retry_after },
            "keyAlgorithm": "ecdsa",
            "profiles": profiles,
        }});
        let config_path = d.join("pebble-config.json");
        write_file(&config_path, serde_json::to_vec_pretty(&config).unwrap());

        let challtestsrv_log_path = d.join("challtestsrv.log");
        let cts_log = File::create(&challtestsrv_log_path).expect("create challtestsrv.log");
        let challtestsrv = Command::new(bin.join("pebble-challtestsrv"))
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .args(["-dnsserver", &format!("127.0.0.1:{dns_port}")])
            .args(["-management", &format!("127.0.0.1:{cts_mgmt_port}")])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", "", "-doh", ""])
            .stdin(Stdio::null())
            .stdout(cts_log.try_clone().unwrap())
            .stderr(cts_log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn pebble-challtestsrv: {e}"));

        let mut pebble = Pebble {
            directory_url: format!("https://127.0.0.1:{acme_port}/dir"),
            mgmt_url: format!("https://127.0.0.1:{mgmt_port}"),
            http_port,
            tls_port,
            dns_port,
            challtestsrv_mgmt: format!("http://127.0.0.1:{cts_mgmt_port}"),
            tls_root_path,
            config_path,
            log_path: d.join("pebble.log"),
            challtestsrv_log_path,
            opts,
            pebble: None,
            challtestsrv: Some(challtestsrv),
            dir,
        };
        pebble.wait_challtestsrv(cts_mgmt_port);
        pebble.spawn_pebble();
        pebble
    }

    fn wait_challtestsrv(&mut self, port: u16) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(Ok(Some(status))) = self.challtestsrv.as_mut().map(Child::try_wait) {
                panic!(
                    "pebble-challtestsrv exited ({status}) while starting:\n{}",
                    self.challtestsrv_log()
                );
            }
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "pebble-challtestsrv did not listen on 127.0.0.1:{port} within {START_TIMEOUT:?}:\n{}",
                    self.challtestsrv_log()
                );
            }
            thread::sleep(POLL);
        }
    }

    fn spawn_pebble(&mut self) {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("open pebble.log");
        let mut cmd = Command::new(pebble_bin_dir().join("pebble"));
        cmd.arg("-config")
            .arg(&self.config_path)
            .args([
                "-dnsserver",
                &match self.opts.dns_server {
                    Some(addr) => addr.to_string(),
                    None => format!("127.0.0.1:{}", self.dns_port),
                },
            ])
            .env("PEBBLE_VA_NOSLEEP", "1")
            // Pebble 2.10's in-memory store can deadlock under many concurrent new-orders
            // (a lock-order inversion between FindValidAuthorization and AddChallenge); with
            // one P the window does not open in practice (see scripts/lib/pebble.sh).
            .env("GOMAXPROCS", "1")
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        if let Some(p) = self.opts.nonce_reject_percent {
            cmd.env("PEBBLE_WFE_NONCEREJECT", p.to_string());
        }
        if let Some(p) = self.opts.authz_reuse_percent {
            cmd.env("PEBBLE_AUTHZREUSE", p.to_string());
        }
        if self.opts.alternate_roots > 0 {
            cmd.env(
                "PEBBLE_ALTERNATE_ROOTS",
                self.opts.alternate_roots.to_string(),
            );
        }
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn pebble: {e}"));
        self.pebble = Some(child);

        let deadline = Instant::now() + START_TIMEOUT;
        let mut last_err;
        loop {
            if let Some(Ok(Some(status))) = self.pebble.as_mut().map(Child::try_wait) {
                panic!("pebble exited ({status}) while starting:\n{}", self.log());
            }
            match http_request("GET", &self.directory_url, None, Some(&self.tls_root_path)) {
                Ok(r) if r.status == 200 && r.body.contains("newOrder") => return,
                Ok(r) => last_err = format!("HTTP {}: {}", r.status, r.body),
                Err(e) => last_err = e,
            }
            if Instant::now() >= deadline {
                panic!(
                    "pebble's directory {} did not answer within {START_TIMEOUT:?} (last: {last_err})\n\
                     --- pebble log ---\n{}\n--- challtestsrv log ---\n{}",
                    self.directory_url,
                    self.log(),
                    self.challtestsrv_log()
                );
            }
            thread::sleep(POLL);
        }
    }

    fn stop_pebble(&mut self) {
        if let Some(mut child) = self.pebble.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kill Pebble and start it again on the same ports and config. It
    /// forgets every account, order and certificate, and generates a new
    /// issuing CA (challtestsrv keeps running). The log is appended to, after
    /// a line `=== harness: pebble restarted ===`.
    pub fn restart(&mut self) {
        self.stop_pebble();
        let mut log = OpenOptions::new()
            .append(true)
            .open(&self.log_path)
            .expect("open pebble.log");
        let _ = writeln!(log, "=== harness: pebble restarted ===");
        drop(log);
        self.spawn_pebble();
    }

    /// Pebble's combined stdout and stderr so far (across restarts).
    pub fn log(&self) -> String {
        fs::read(&self.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// challtestsrv's combined stdout and stderr so far.
    pub fn challtestsrv_log(&self) -> String {
        fs::read(&self.challtestsrv_log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// How many times `needle` occurs in [`Pebble::log`], e.g.
    /// `count_log(Pebble::NEW_ORDER_LOG)` for the number of new-order requests.
    pub fn count_log(&self, needle: &str) -> usize {
        self.log().matches(needle).count()
    }

    /// GET a path on the management interface; panics unless 200.
    pub fn mgmt_get(&self, path: &str) -> String {
        let url = format!("{}{path}", self.mgmt_url);
        let r = http_request("GET", &url, None, Some(&self.tls_root_path))
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        assert_eq!(r.status, 200, "GET {url}: {}", r.body);
        r.body
    }

    /// The directory object.
    pub fn directory(&self) -> serde_json::Value {
        let r = http_request("GET", &self.directory_url, None, Some(&self.tls_root_path))
            .unwrap_or_else(|e| panic!("GET {}: {e}", self.directory_url));
        serde_json::from_str(&r.body)
            .unwrap_or_else(|e| panic!("directory is not JSON ({e}): {}", r.body))
    }

    /// PEM of Pebble's issuing root (`/roots/0`): what issued certificates
    /// chain to. Regenerated by every (re)start.
    pub fn issuing_roots_pem(&self) -> String {
        self.mgmt_get("/roots/0")
    }

    /// PEM of Pebble's intermediate (`/intermediates/0`), which signs leaves.
    pub fn issuing_intermediate_pem(&self) -> String {
        self.mgmt_get("/intermediates/0")
    }

    /// Make Pebble answer ARI for `cert_pem` (the leaf, PEM; Pebble keys the
    /// override by its serial) with `ari_response`, served back verbatim.
    ///
    /// Wire format (POST `{mgmt_url}/set-renewal-info/`):
    /// `{"certificate": "<leaf PEM>", "ariResponse": "<renewalInfo JSON as a string>"}`,
    /// e.g. ariResponse `{"suggestedWindow":{"start":"2025-01-01T00:00:00Z","end":"…"}}`.
    /// Pebble answers 200, 400 for a bad body, 404 for a serial it did not issue
    /// (since its last restart). GETs of the renewalInfo then return it with
    /// `Retry-After: 21600`.
    pub fn set_renewal_info(&self, cert_pem: &str, ari_response: &serde_json::Value) {
        let body = serde_json::json!({
            "certificate": cert_pem,
            "ariResponse": ari_response.to_string(),
        });
        let url = format!("{}/set-renewal-info/", self.mgmt_url);
        let r = http_request(
            "POST",
            &url,
            Some(body.to_string().into_bytes()),
            Some(&self.tls_root_path),
        )
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
        assert_eq!(r.status, 200, "POST {url}: {}", r.body);
    }

    /// [`Pebble::set_renewal_info`] with a suggested window `[start, end]`.
    pub fn set_renewal_window(&self, cert_pem: &str, start: SystemTime, end: SystemTime) {
        self.set_renewal_info(
            cert_pem,
            &serde_json::json!({
                "suggestedWindow": { "start": rfc3339(start), "end": rfc3339(end) }
            }),
        );
    }

    /// POST JSON to challtestsrv's management API; panics unless 200.
    /// E.g. `("/set-txt", {"host": "_acme-challenge.example.org.", "value": "…"})`,
    /// `("/clear-txt", {"host": …})`, `("/add-a", {"host": "x.", "addresses": ["127.0.0.1"]})`.
    pub fn challtestsrv_post(&self, path: &str, json: &serde_json::Value) {
        let url = format!("{}{path}", self.challtestsrv_mgmt);
        let r = http_request("POST", &url, Some(json.to_string().into_bytes()), None)
            .unwrap_or_else(|e| panic!("POST {url}: {e}"));
        assert_eq!(r.status, 200, "POST {url}: {}", r.body);
    }

    /// A script that can serve as a dns-01 hook (`HOOK set|clear RECORD VALUE`)
    /// by setting/clearing the TXT record in this Pebble's challtestsrv with curl.
    /// Written to `path` (0755). Needs `curl` (tests that use it should say so).
    pub fn write_dns_hook(&self, path: impl AsRef<Path>) {
        write_challtestsrv_hook(path, &self.challtestsrv_mgmt);
    }
}

/// A dns-01 hook script (`HOOK set|clear RECORD VALUE`) that sets or clears the TXT record
/// through the challtestsrv management API at `mgmt` (`http://HOST:PORT`) with curl, written
/// to `path` (0755).
pub fn write_challtestsrv_hook(path: impl AsRef<Path>, mgmt: &str) {
    let script = format!(
        r#"set -eu
case "$1" in
  set)   curl -fsS -X POST -d "{{\"host\":\"$2.\",\"value\":\"$3\"}}" {mgmt}/set-txt ;;
  clear) curl -fsS -X POST -d "{{\"host\":\"$2.\"}}" {mgmt}/clear-txt ;;
  *) echo "usage: $0 set|clear RECORD VALUE" >&2; exit 2 ;;
esac
"#
    );
    write_exec(path, &script);
}

impl Drop for Pebble {
    fn drop(&mut self) {
        self.stop_pebble();
        if let Some(mut child) = self.challtestsrv.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// RFC 3339 UTC, seconds precision (`2025-01-01T00:00:00Z`).
pub fn rfc3339(t: SystemTime) -> String {
    let t = time::OffsetDateTime::from(t)
        .replace_nanosecond(0)
        .expect("nanosecond 0");
    t.format(&time::format_description::well_known::Rfc3339)
        .expect("format RFC 3339")
}

/// (cert PEM, key PEM, CA PEM): a certificate for `localhost` and 127.0.0.1
/// signed by a fresh throwaway CA.
fn make_localhost_cert() -> (String, String, String) {
    use rcgen::{
        BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
        KeyUsagePurpose, SanType,
    };
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::default();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "renewd test harness TLS root");
    ca_params.distinguished_name = dn;
    let ca_cert = ca_params.self_signed(&ca_key).expect("self-sign CA");
    let issuer = Issuer::new(ca_params, ca_key);

    let key = KeyPair::generate().expect("leaf key");
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).expect("params");
    params
        .subject_alt_names
        .push(SanType::IpAddress(Ipv4Addr::LOCALHOST.into()));
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let cert = params.signed_by(&key, &issuer).expect("sign leaf");
    (cert.pem(), key.serialize_pem(), ca_cert.pem())
}

// ---------------------------------------------------------------------------
// A tiny static HTTP/1.1 file server (http-01 webroots)

/// Serves files under `root` over plain HTTP/1.1 on 127.0.0.1:`port`
/// (GET and HEAD; 404 for anything missing, 400 for paths with `..`).
/// Start it on [`Pebble::http_port`] so Pebble's VA fetches
/// `/.well-known/acme-challenge/<token>` from the webroot. Stops on drop.
pub struct StaticServer {
    pub port: u16,
    requests: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl StaticServer {
    /// Bind now (so the port is served when this returns) and serve in a thread.
    pub fn start(root: &Path, port: u16) -> StaticServer {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port))
            .unwrap_or_else(|e| panic!("StaticServer: bind 127.0.0.1:{port}: {e}"));
        listener.set_nonblocking(true).expect("set_nonblocking");
        let port = listener.local_addr().expect("local_addr").port();
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (stop, requests, root) = (stop.clone(), requests.clone(), root.to_path_buf());
            thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let (root, requests) = (root.clone(), requests.clone());
                            thread::spawn(move || serve_one(stream, &root, &requests));
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            thread::sleep(Duration::from_millis(5))
                        }
                        Err(_) => thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        };
        StaticServer {
            port,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    /// Request lines served so far (`"GET /path"`), in order.
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for StaticServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve_one(stream: TcpStream, root: &Path, requests: &Mutex<Vec<String>>) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut reader = BufReader::new(match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    });
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    // Skip headers.
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) if line == "\r\n" || line == "\n" => break,
            Ok(_) => {}
        }
    }
    let mut parts = request_line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    requests.lock().unwrap().push(format!("{method} {target}"));
    let path = target.split(['?', '#']).next().unwrap_or("");

    let (status, body): (&str, Vec<u8>) = if method != "GET" && method != "HEAD" {
        ("405 Method Not Allowed", b"method not allowed\n".to_vec())
    } else if !path.starts_with('/')
        || Path::new(path)
            .components()
            .any(|c| matches!(c, Component::ParentDir))
        || path.contains("..")
    {
        ("400 Bad Request", b"bad path\n".to_vec())
    } else {
        let file = root.join(path.trim_start_matches('/'));
        match fs::metadata(&file) {
            Ok(m) if m.is_file() => match fs::read(&file) {
                Ok(b) => ("200 OK", b),
                Err(_) => ("403 Forbidden", b"forbidden\n".to_vec()),
            },
            _ => ("404 Not Found", b"not found\n".to_vec()),
        }
    };
    let mut out = stream;
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = out.write_all(head.as_bytes());
    if method != "HEAD" {
        let _ = out.write_all(&body);
    }
    let _ = out.flush();
    // Drain anything left so the peer does not see a reset.
    let _ = out.shutdown(std::net::Shutdown::Write);
    let mut sink = [0u8; 512];
    let _ = reader.get_mut().read(&mut sink);
}

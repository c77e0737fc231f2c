//! The post-reload proof (`renewd::verify`) against real TLS services: Debian's nginx started
//! by the harness (`tests/it/common/nginx.rs`), serving certificates issued by a harness Pebble
//! through renewd or made with rcgen where the CA is not the point; plain TCP listeners
//! that do not speak TLS; and an in-process rustls server presenting a certificate whose key
//! it does not hold.

use crate::common;
use crate::common::rig;

use std::fs;
use std::future::Future;
use std::io::Write as _;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::nginx::{Nginx, Site};
use common::*;
use renewd::config::VerifyConfig;
use renewd::verify::{prove, served_leaf, Proven, VerifyError};
use rig::*;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn block_on<F: Future>(f: F) -> F::Output {
    runtime().block_on(f)
}

fn verify_cfg(connect: &str, server_name: &str) -> VerifyConfig {
    VerifyConfig {
        connect: connect.to_string(),
        server_name: server_name.to_string(),
        timeout: Duration::from_secs(30),
    }
}

/// A TCP relay on loopback to `target`, counting the connections it accepts; stops on drop.
struct CountingRelay {
    /// `127.0.0.1:PORT`, to connect to instead of the target.
    connect: String,
    accepted: Arc<std::sync::atomic::AtomicUsize>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl CountingRelay {
    fn start(target: &str) -> CountingRelay {
        use std::sync::atomic::Ordering::SeqCst;
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind relay");
        listener.set_nonblocking(true).expect("nonblocking");
        let connect = format!("127.0.0.1:{}", listener.local_addr().expect("addr").port());
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (target, count, done) = (target.to_string(), accepted.clone(), stop.clone());
        thread::spawn(move || {
            while !done.load(SeqCst) {
                let Ok((client, _)) = listener.accept() else {
                    thread::sleep(Duration::from_millis(5));
                    continue;
                };
                count.fetch_add(1, SeqCst);
                let _ = client.set_nonblocking(false);
                let Ok(server) = std::net::TcpStream::connect(&target) else {
                    continue;
                };
                for (mut from, mut to) in [
                    (
                        client.try_clone().expect("dup"),
                        server.try_clone().expect("dup"),
                    ),
                    (server, client),
                ] {
                    thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Write);
                    });
                }
            }
        });
        CountingRelay {
            connect,
            accepted,
            stop,
        }
    }

    fn connections(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for CountingRelay {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A certificate for `names` with a fresh P-256 key, self-signed: the proof does not care
/// who issued it. Written as `DIR/STEM.pem` and `DIR/STEM.key`.
struct TestCert {
    pem: PathBuf,
    key: PathBuf,
    view: CertView,
}

fn make_cert(dir: &Path, stem: &str, names: &[&str]) -> TestCert {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params =
        rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .expect("params");
    // Distinct serials without randomness: a counter, the top bit clear (positive).
    static NEXT_SERIAL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let n = NEXT_SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut serial = [0x5au8; 12];
    serial[4..].copy_from_slice(&n.to_be_bytes());
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
    let cert = params.self_signed(&key).expect("self-sign");
    let pem = dir.join(format!("{stem}.pem"));
    let key_path = dir.join(format!("{stem}.key"));
    write_file(&pem, cert.pem());
    write_file(&key_path, key.serialize_pem());
    TestCert {
        view: read_cert_pem(&pem),
        pem,
        key: key_path,
    }
}

/// Replaces `to`'s certificate and key with `from`'s the way a deployment does: each file
/// written beside its target and renamed into place.
fn swap_files(from: &TestCert, to_pem: &Path, to_key: &Path) {
    for (src, dst) in [(&from.pem, to_pem), (&from.key, to_key)] {
        let tmp = dst.with_extension("new");
        fs::copy(src, &tmp).expect("copy");
        fs::rename(&tmp, dst).expect("rename");
    }
}

fn expect_err(result: Result<Proven, VerifyError>) -> String {
    match result {
        Ok(p) => panic!("expected the proof to fail, it passed: {p:?}"),
        Err(e) => e.to_string(),
    }
}

// ---------------------------------------------------------------------------------------
// nginx

/// The whole story with real parts: renewd issues from Pebble, deploys, runs nginx's reload
/// command; the proof then sees nginx serve exactly the deployed leaf. Renewed again
/// (`renew --force`), the proof passes for the new leaf and fails for the old one.
#[test]
fn proof_passes_after_renewd_deploys_a_pebble_certificate_and_reloads_nginx() {
    let rig = Rig::new(PebbleOptions::default());
    // nginx needs files to start on: a placeholder for another name, which renewd replaces
    // at once (a deployed certificate that does not cover the names is renewed).
    let placeholder = make_cert(
        &rig.path("placeholder"),
        "placeholder",
        &["placeholder.test"],
    );
    fs::copy(&placeholder.pem, rig.fullchain("www")).expect("copy placeholder");
    fs::copy(&placeholder.key, rig.key("www")).expect("copy placeholder key");
    let nginx = Nginx::start(&rig.path("nginx"), &rig.fullchain("www"), &rig.key("www"));
    assert_eq!(nginx.served_serial(), placeholder.view.serial_hex);

    rig.write_config(&rig.cert(
        "www",
        &["www.test"],
        &format!(
            "reload = [{}]\nverify = {{ connect = \"{}\", server_name = \"www.test\", timeout = \"20s\" }}",
            nginx.reload_toml(),
            nginx.connect()
        ),
    ));
    rig.renewd_ok("run", &["--once"]);
    let first = read_cert_pem(rig.fullchain("www"));
    assert_ne!(first.serial_hex, placeholder.view.serial_hex);
    assert!(first.names.contains(&"www.test".to_string()));

    let cfg = verify_cfg(&nginx.connect(), "www.test");
    let proven = block_on(prove(
        &cfg,
        &first.der,
        &first.serial_hex,
        Duration::from_secs(20),
    ))
    .unwrap_or_else(|e| panic!("proof of the first certificate: {e}\n{}", nginx.logs()));
    assert_eq!(proven.addr.port(), nginx.port());
    // Proven as soon as one connection sees the new certificate; nginx's old worker may
    // still answer others for a moment while it shuts down.
    nginx.wait_serving(Some("www.test"), &first.der);

    rig.renewd_ok("renew", &["--force", "www"]);
    let second = read_cert_pem(rig.fullchain("www"));
    assert_ne!(second.serial_hex, first.serial_hex);
    block_on(prove(
        &cfg,
        &second.der,
        &second.serial_hex,
        Duration::from_secs(20),
    ))
    .unwrap_or_else(|e| panic!("proof of the renewed certificate: {e}\n{}", nginx.logs()));

    // Once the old worker is gone, the old certificate is no longer served, and the proof
    // for it says so.
    nginx.wait_serving(Some("www.test"), &second.der);
    let message = expect_err(block_on(prove(
        &cfg,
        &first.der,
        &first.serial_hex,
        Duration::ZERO,
    )));
    assert!(
        message.contains(&format!(
            "{} (SNI www.test) serves serial {}, expected {}",
            nginx.connect(),
            second.serial_hex,
            first.serial_hex
        )),
        "{message}"
    );
    assert!(message.contains("(after 1 attempt over "), "{message}");
}

#[test]
fn proof_fails_naming_the_address_and_both_serials_when_another_certificate_is_served() {
    // Timing-sensitive (the proof's time bound): no heavy test meanwhile.
    let _timing = common::serial::timing();
    let dir = tempfile::tempdir().expect("tempdir");
    let served = make_cert(dir.path(), "served", &["www.test"]);
    let expected = make_cert(dir.path(), "expected", &["www.test"]);
    let nginx = Nginx::start(&dir.path().join("nginx"), &served.pem, &served.key);
    let cfg = verify_cfg(&nginx.connect(), "www.test");

    let started = Instant::now();
    let err = block_on(prove(
        &cfg,
        &expected.view.der,
        &expected.view.serial_hex,
        Duration::from_millis(1500),
    ))
    .expect_err("another certificate is served");
    let elapsed = started.elapsed();
    let message = err.to_string();
    assert!(
        message.starts_with(&format!(
            "{} (SNI www.test) serves serial {}, expected {} (after ",
            nginx.connect(),
            served.view.serial_hex,
            expected.view.serial_hex
        )),
        "{message}"
    );
    let VerifyError::NotProven {
        attempts,
        elapsed: reported,
        ..
    } = err
    else {
        panic!("expected NotProven, got {err:?}");
    };
    assert!(attempts >= 3, "it retried within its time: {message}");
    assert!(reported >= Duration::from_millis(1500), "{message}");
    // Bounded: the proof gives up after its time (generous slack for a loaded machine).
    assert!(elapsed < Duration::from_secs(15), "took {elapsed:?}");
    // nginx still serves what it served: the proof changed nothing.
    assert_eq!(nginx.served_serial(), served.view.serial_hex);
}

/// The proof starts while the old certificate is still served; the files are swapped and
/// nginx reloaded a moment later (its reload returns before the new workers answer). The
/// proof must keep trying and pass.
#[test]
fn proof_retries_until_the_reloaded_nginx_serves_the_new_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let live_pem = dir.path().join("live.pem");
    let live_key = dir.path().join("live.key");
    let old = make_cert(dir.path(), "old", &["www.test"]);
    let new = make_cert(dir.path(), "new", &["www.test"]);
    swap_files(&old, &live_pem, &live_key);
    let nginx = Nginx::start(&dir.path().join("nginx"), &live_pem, &live_key);
    assert_eq!(nginx.served_serial(), old.view.serial_hex);

    let rt = runtime();
    // Through a relay that counts connections: a second one means the first attempt met
    // the old certificate and is over.
    let relay = CountingRelay::start(&nginx.connect());
    let cfg = verify_cfg(&relay.connect, "www.test");
    let (der, serial) = (new.view.der.clone(), new.view.serial_hex.clone());
    let started = Instant::now();
    let proof = rt.spawn(async move { prove(&cfg, &der, &serial, Duration::from_secs(20)).await });
    // The first attempt met the old certificate (a second one began), and the proof has
    // kept trying for the second the assertions below expect of it.
    wait_until(
        Duration::from_secs(10),
        "the proof's second attempt",
        || relay.connections() >= 2 && started.elapsed() >= Duration::from_secs(1),
    );
    assert!(
        !proof.is_finished(),
        "the old certificate cannot prove the new one"
    );
    swap_files(&new, &live_pem, &live_key);
    nginx.reload();
    let proven = rt
        .block_on(proof)
        .expect("proof task")
        .unwrap_or_else(|e| panic!("proof after the reload: {e}\n{}", nginx.logs()));
    assert!(proven.attempts >= 2, "{proven:?}");
    assert!(proven.elapsed >= Duration::from_secs(1), "{proven:?}");
    nginx.wait_serving(None, &new.view.der);
}

/// Two server blocks on one port: the SNI name picks the certificate. A `server_name` that
/// is an IP address sends no SNI, so nginx answers with its default server — not with the
/// block named after that address. TLS 1.2 only, so that path is proven against nginx too.
#[test]
fn sni_selects_the_server_block_and_an_ip_server_name_sends_none() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = make_cert(dir.path(), "a", &["a.test"]);
    let b = make_cert(dir.path(), "b", &["b.test"]);
    let by_ip = make_cert(dir.path(), "ip", &["127.0.0.1"]);
    let nginx = Nginx::start_sites(
        &dir.path().join("nginx"),
        &[
            Site::new(&["a.test"], &a.pem, &a.key),
            Site::new(&["b.test"], &b.pem, &b.key),
            Site::new(&["127.0.0.1"], &by_ip.pem, &by_ip.key),
        ],
        &["TLSv1.2"],
    );
    // The harness's own client agrees with the configuration.
    assert_eq!(nginx.served_cert(Some("b.test")).der, b.view.der);
    assert_eq!(nginx.served_cert(Some("127.0.0.1")).der, a.view.der);

    let within = Duration::from_secs(5);
    let cfg_a = verify_cfg(&nginx.connect(), "a.test");
    let cfg_b = verify_cfg(&nginx.connect(), "b.test");
    let cfg_ip = verify_cfg(&nginx.connect(), "127.0.0.1");
    block_on(prove(&cfg_a, &a.view.der, &a.view.serial_hex, within)).expect("a.test serves a");
    block_on(prove(&cfg_b, &b.view.der, &b.view.serial_hex, within)).expect("b.test serves b");
    block_on(prove(&cfg_ip, &a.view.der, &a.view.serial_hex, within))
        .expect("no SNI: the default server (a)");
    assert_eq!(
        block_on(served_leaf(&cfg_b, Duration::from_secs(5))).expect("served leaf"),
        b.view.der
    );

    let message = expect_err(block_on(prove(
        &cfg_b,
        &a.view.der,
        &a.view.serial_hex,
        Duration::ZERO,
    )));
    assert!(
        message.contains(&format!(
            "(SNI b.test) serves serial {}, expected {}",
            b.view.serial_hex, a.view.serial_hex
        )),
        "{message}"
    );
    let message = expect_err(block_on(prove(
        &cfg_ip,
        &by_ip.view.der,
        &by_ip.view.serial_hex,
        Duration::ZERO,
    )));
    assert!(
        message.contains(&format!(
            "(no SNI) serves serial {}, expected {}",
            a.view.serial_hex, by_ip.view.serial_hex
        )),
        "{message}"
    );
}

// ---------------------------------------------------------------------------------------
// Services that cannot prove anything

#[test]
fn a_refused_connection_is_named_with_its_address() {
    let port = free_port();
    let cfg = verify_cfg(&format!("127.0.0.1:{port}"), "www.test");
    let message = block_on(served_leaf(&cfg, Duration::from_secs(5)))
        .expect_err("nothing listens")
        .to_string();
    assert_eq!(
        message,
        format!("127.0.0.1:{port}: connection refused (is the service listening there?)")
    );
    // prove says the same, with how long it tried.
    let message = expect_err(block_on(prove(
        &cfg,
        b"irrelevant",
        "01",
        Duration::from_millis(300),
    )));
    assert!(
        message.starts_with(&format!("127.0.0.1:{port}: connection refused"))
            && message.contains(" attempts over "),
        "{message}"
    );
}

/// A TCP listener on a free loopback port that, to each of its first connections, writes
/// `greeting` (if any) and then holds the connection open; it lives 30 s at most.
fn plain_listener(greeting: Option<&'static [u8]>) -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    let port = listener.local_addr().expect("local_addr").port();
    thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().take(8) {
            let Ok(mut stream) = stream else { continue };
            if let Some(bytes) = greeting {
                let _ = stream.write_all(bytes);
            }
            held.push(stream);
        }
        thread::sleep(Duration::from_secs(30));
    });
    port
}

#[test]
fn a_port_that_does_not_speak_tls_is_named_clearly() {
    // A service that talks first, the way SSH or SMTP do.
    let port = plain_listener(Some(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n"));
    let cfg = verify_cfg(&format!("127.0.0.1:{port}"), "www.test");
    let message = block_on(served_leaf(&cfg, Duration::from_secs(5)))
        .expect_err("not TLS")
        .to_string();
    assert!(
        message.starts_with(&format!(
            "127.0.0.1:{port}: TLS handshake failed: the service does not speak TLS there"
        )),
        "{message}"
    );

    // A service that waits for the client to talk and never answers a ClientHello: the
    // handshake has its own deadline.
    let port = plain_listener(None);
    let cfg = verify_cfg(&format!("127.0.0.1:{port}"), "www.test");
    let message = block_on(served_leaf(&cfg, Duration::from_millis(500)))
        .expect_err("no answer")
        .to_string();
    assert_eq!(
        message,
        format!(
            "127.0.0.1:{port}: timed out in the TLS handshake after 0.5s (does this port \
             speak TLS?)"
        )
    );
}

/// A TLS server presenting `cert` while signing the handshake with `signing_key`.
#[derive(Debug)]
struct Presents(Arc<rustls::sign::CertifiedKey>);

impl rustls::server::ResolvesServerCert for Presents {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// Serves TLS (`version` only) on a free loopback port with `cert_der` as its certificate
/// and `key` as its signing key, for as long as the runtime lives.
async fn rustls_server(
    cert_der: Vec<u8>,
    key: &rcgen::KeyPair,
    version: &'static rustls::SupportedProtocolVersion,
) -> u16 {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let signing = provider
        .key_provider
        .load_private_key(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            key.serialize_der(),
        )))
        .expect("signing key");
    let certified = rustls::sign::CertifiedKey::new(vec![CertificateDer::from(cert_der)], signing);
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[version])
        .expect("protocol version")
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Presents(Arc::new(certified))));
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("bind");
    let port = listener.local_addr().expect("local_addr").port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(stream).await {
                    let _ = tokio::io::AsyncWriteExt::shutdown(&mut tls).await;
                }
            });
        }
    });
    port
}

/// The chain is not validated, but the handshake signature is: a server that replays a
/// certificate without its private key fails, over TLS 1.2 and 1.3 alike. The same server
/// with the right key passes (the test can tell the difference).
#[test]
fn a_service_without_the_private_key_cannot_pass() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = make_cert(dir.path(), "real", &["www.test"]);
    let right_key =
        rcgen::KeyPair::from_pem(&fs::read_to_string(&cert.key).expect("key")).expect("key");
    let wrong_key = rcgen::KeyPair::generate().expect("other key");
    block_on(async {
        for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
            let honest = rustls_server(cert.view.der.clone(), &right_key, version).await;
            let cfg = verify_cfg(&format!("127.0.0.1:{honest}"), "www.test");
            prove(&cfg, &cert.view.der, &cert.view.serial_hex, Duration::ZERO)
                .await
                .unwrap_or_else(|e| panic!("{version:?} with the right key: {e}"));

            let impostor = rustls_server(cert.view.der.clone(), &wrong_key, version).await;
            let cfg = verify_cfg(&format!("127.0.0.1:{impostor}"), "www.test");
            let message = expect_err(
                prove(&cfg, &cert.view.der, &cert.view.serial_hex, Duration::ZERO).await,
            );
            assert!(
                message.starts_with(&format!(
                    "127.0.0.1:{impostor}: TLS handshake failed: the handshake is not signed \
                     by the key of the certificate presented"
                )),
                "{version:?}: {message}"
            );
        }
    });
}

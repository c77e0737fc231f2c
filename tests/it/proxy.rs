//! Outgoing HTTPS through a proxy, and trust roots: `HTTPS_PROXY`/`NO_PROXY` and
//! `[ca.NAME] proxy` against a real HTTP CONNECT proxy on loopback (written here: a few
//! dozen lines that log each CONNECT and its `Proxy-Authorization`) in front of a real
//! Pebble; a machine with no trust root at all.

use crate::common;
use crate::common::rig;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use base64::Engine;
use common::*;
use rig::*;

/// One CONNECT the proxy received: `host:port`, and its `Proxy-Authorization` value.
#[derive(Debug, Clone)]
struct Connect {
    target: String,
    auth: Option<String>,
}

/// A minimal HTTP CONNECT proxy on 127.0.0.1: tunnels to the requested `host:port` when the
/// request carries `required_auth` (if any), else answers 407. Stops on drop.
struct ConnectProxy {
    port: u16,
    log: Arc<Mutex<Vec<Connect>>>,
    stop: Arc<AtomicBool>,
}

impl ConnectProxy {
    fn start(required_auth: Option<(&str, &str)>) -> ConnectProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let want = required_auth.map(|(u, p)| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
            )
        });
        let (log2, stop2) = (log.clone(), stop.clone());
        thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (log, want) = (log2.clone(), want.clone());
                thread::spawn(move || {
                    let _ = tunnel(conn, &log, want.as_deref());
                });
            }
        });
        ConnectProxy { port, log, stop }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn connects(&self) -> Vec<Connect> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for ConnectProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Serves one client connection: reads the CONNECT head, logs it, answers, then copies
/// bytes both ways until either side closes.
fn tunnel(client: TcpStream, log: &Mutex<Vec<Connect>>, want: Option<&str>) -> std::io::Result<()> {
    client.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(client.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let mut auth = None;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" {
            break;
        }
        if let Some((name, value)) = h.split_once(':') {
            if name.eq_ignore_ascii_case("proxy-authorization") {
                auth = Some(value.trim().to_string());
            }
        }
    }
    log.lock().unwrap().push(Connect {
        target: target.to_string(),
        auth: auth.clone(),
    });
    let mut client_w = client.try_clone()?;
    if method != "CONNECT" {
        return client_w.write_all(b"HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 0\r\n\r\n");
    }
    if want.is_some() && auth.as_deref() != want {
        return client_w.write_all(
            b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"t\"\r\ncontent-length: 0\r\n\r\n",
        );
    }
    let upstream = match TcpStream::connect(target) {
        Ok(u) => u,
        Err(_) => {
            return client_w.write_all(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n")
        }
    };
    client_w.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")?;
    client.set_read_timeout(None)?;
    // Whatever the client sent after the head is already in `reader`'s buffer.
    let buffered = reader.buffer().to_vec();
    let mut up_w = upstream.try_clone()?;
    up_w.write_all(&buffered)?;
    let mut up_r = upstream.try_clone()?;
    let down = thread::spawn(move || {
        let _ = std::io::copy(&mut up_r, &mut client_w);
        let _ = client_w.shutdown(Shutdown::Write);
    });
    let mut client_r = reader.into_inner();
    let _ = std::io::copy(&mut client_r, &mut up_w);
    let _ = up_w.shutdown(Shutdown::Write);
    let _ = down.join();
    let _ = upstream.shutdown(Shutdown::Both);
    let mut rest = Vec::new();
    let _ = client_r.read_to_end(&mut rest);
    Ok(())
}

/// `renewd SUB --config <rig's> ARGS...` with `env` set and every proxy variable of the test
/// process removed first.
fn renewd_env(rig: &Rig, sub: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(renewd_bin());
    cmd.arg(sub)
        .arg("--config")
        .arg(&rig.config_path)
        .args(args);
    for v in [
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
        "all_proxy",
        "NO_PROXY",
        "no_proxy",
    ] {
        cmd.env_remove(v);
    }
    let out = cmd
        .envs(env.iter().copied())
        .env("RUST_LOG", "renewd=debug,info")
        .stdin(Stdio::null())
        .output()
        .expect("run renewd");
    eprintln!(
        "--- renewd {sub} {args:?} {env:?}: {}\n--- stdout:\n{}--- stderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Pebble's `host:port`, as a CONNECT names it.
fn pebble_authority(rig: &Rig) -> String {
    let rest = rig
        .pebble
        .directory_url
        .strip_prefix("https://")
        .expect("https directory");
    rest.split('/').next().expect("authority").to_string()
}

/// A loopback port nothing listens on: a proxy that must not be used.
fn dead_proxy() -> String {
    format!("http://127.0.0.1:{}", free_port())
}

#[test]
fn https_proxy_carries_the_ca_traffic_with_its_credentials_and_no_proxy_bypasses_it() {
    let rig = Rig::new(PebbleOptions::default());
    rig.write_config(&rig.cert("www", &["www.test"], ""));
    let proxy = ConnectProxy::start(Some(("renewd", "s3cret")));
    let env_url = format!("http://renewd:s3cret@127.0.0.1:{}", proxy.port);

    let out = renewd_env(&rig, "run", &["--once"], &[("HTTPS_PROXY", &env_url)]);
    assert!(out.status.success(), "{}", text(&out));
    read_cert_pem(rig.fullchain("www"));
    let connects = proxy.connects();
    let pebble = pebble_authority(&rig);
    assert!(!connects.is_empty(), "nothing went through the proxy");
    for c in &connects {
        assert_eq!(c.target, pebble, "every CONNECT is to the CA: {connects:?}");
        assert_eq!(
            c.auth.as_deref(),
            Some("Basic cmVuZXdkOnMzY3JldA=="),
            "credentials from the URL: {connects:?}"
        );
    }
    assert!(
        !text(&out).contains("s3cret"),
        "the password is never logged"
    );

    // The lower-case variable too; NO_PROXY naming the CA's address bypasses the proxy.
    let before = proxy.connects().len();
    let out = renewd_env(
        &rig,
        "renew",
        &["--force", "www"],
        &[
            ("https_proxy", &env_url),
            ("NO_PROXY", "example.org, 127.0.0.1"),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        proxy.connects().len(),
        before,
        "NO_PROXY bypasses the proxy"
    );

    let out = renewd_env(
        &rig,
        "renew",
        &["--force", "www"],
        &[("https_proxy", &env_url)],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(proxy.connects().len() > before, "https_proxy is honoured");
}

#[test]
fn a_ca_proxy_key_overrides_the_environment_and_empty_means_direct() {
    let rig = Rig::new(PebbleOptions::default());
    let proxy = ConnectProxy::start(None);
    let cert = rig.cert("www", &["www.test"], "");
    let with_proxy = |value: &str| {
        let base = rig.base_config();
        let base = base.replace(
            "accept_terms = true\n",
            &format!("accept_terms = true\nproxy = \"{value}\"\n"),
        );
        std::fs::write(&rig.config_path, format!("{base}{cert}")).expect("write config");
    };
    let dead = dead_proxy();

    with_proxy(&proxy.url());
    let out = renewd_env(&rig, "run", &["--once"], &[("HTTPS_PROXY", &dead)]);
    assert!(out.status.success(), "{}", text(&out));
    let connects = proxy.connects();
    assert!(!connects.is_empty(), "the CA's proxy carried its traffic");
    assert!(connects.iter().all(|c| c.target == pebble_authority(&rig)));
    // NO_PROXY does not apply to a CA's own proxy: it was set for that CA.
    let before = connects.len();
    let out = renewd_env(
        &rig,
        "renew",
        &["--force", "www"],
        &[("NO_PROXY", "127.0.0.1")],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(proxy.connects().len() > before);

    // `proxy = ""`: direct, whatever HTTPS_PROXY says (it names a dead port here).
    with_proxy("");
    let before = proxy.connects().len();
    let out = renewd_env(
        &rig,
        "renew",
        &["--force", "www"],
        &[("HTTPS_PROXY", &dead)],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(proxy.connects().len(), before);
}

#[test]
fn a_failing_proxy_is_named_in_logs_and_status_without_its_password() {
    let rig = Rig::new(PebbleOptions::default());
    rig.write_config(&rig.cert("www", &["www.test"], ""));
    // The proxy wants other credentials: every CONNECT is answered 407.
    let proxy = ConnectProxy::start(Some(("renewd", "other")));
    let env_url = format!("http://renewd:s3cret@127.0.0.1:{}", proxy.port);

    let out = renewd_env(&rig, "run", &["--once"], &[("HTTPS_PROXY", &env_url)]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let shown = format!(
        "through proxy http://127.0.0.1:{} (HTTPS_PROXY)",
        proxy.port
    );
    let log = text(&out);
    assert!(log.contains(&shown), "the log names the proxy: {log}");
    assert!(log.contains("proxy authorization required"), "{log}");
    assert!(
        !log.contains("s3cret"),
        "the password is never logged: {log}"
    );
    assert!(!proxy.connects().is_empty());

    let status = renewd_env(&rig, "status", &["--json"], &[]);
    let status = text(&status);
    assert!(status.contains(&shown), "status names the proxy: {status}");
    assert!(!status.contains("s3cret"), "{status}");
}

#[test]
fn a_bad_proxy_setting_is_a_configuration_error_without_its_password() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("renewd.toml");
    let write = |proxy: &str| {
        std::fs::write(
            &cfg,
            format!(
                "state_dir = \"{d}/state\"\n[ca.le]\ndirectory = \"https://127.0.0.1:14000/dir\"\n\
                 accept_terms = true\nproxy = \"{proxy}\"\n",
                d = dir.path().display()
            ),
        )
        .expect("write config");
    };
    for bad in [
        "https://user:s3cret@proxy.example:3128",
        "socks5://proxy.example:1080",
        "proxy.example:3128",
        "http://proxy.example:3128/path",
    ] {
        write(bad);
        let out = Command::new(renewd_bin())
            .args(["check", "--config"])
            .arg(&cfg)
            .output()
            .expect("run renewd");
        let all = text(&out);
        assert_eq!(out.status.code(), Some(78), "{bad}: {all}");
        assert!(
            all.contains(":5:9: `proxy`"),
            "{bad}: FILE:LINE:COL in {all}"
        );
        assert!(!all.contains("s3cret"), "{all}");
    }
}

/// No trust root on the machine (rustls-native-certs reads only `SSL_CERT_FILE` when it is
/// set): a CA with an `https://` directory and no `trust_roots` stops `check` and `run`
/// with exit 78, naming the CA and what to install; `trust_roots` satisfies it.
#[test]
fn no_trust_root_refuses_to_start_and_names_the_ca() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("renewd.toml");
    let roots = dir.path().join("roots.pem");
    let empty = dir.path().join("no-such-bundle.pem");
    std::fs::write(&roots, rcgen_root_pem()).expect("write roots");
    let write = |extra: &str| {
        std::fs::write(
            &cfg,
            format!(
                "state_dir = \"{d}/state\"\n[ca.le]\ndirectory = \"https://127.0.0.1:14000/dir\"\n\
                 accept_terms = true\n{extra}",
                d = dir.path().display()
            ),
        )
        .expect("write config");
    };
    let run = |args: &[&str]| {
        Command::new(renewd_bin())
            .args(args)
            .arg("--config")
            .arg(&cfg)
            .env("SSL_CERT_FILE", &empty)
            .env_remove("SSL_CERT_DIR")
            .stdin(Stdio::null())
            .output()
            .expect("run renewd")
    };
    write("");
    for args in [&["check"][..], &["run", "--once"][..], &["run"][..]] {
        let out = run(args);
        let all = text(&out);
        assert_eq!(out.status.code(), Some(78), "{args:?}: {all}");
        assert!(
            all.contains(&format!("{}:2:1: CA `le`", cfg.display())),
            "{args:?}: FILE:LINE:COL and the CA: {all}"
        );
        assert!(all.contains("ca-certificates"), "{args:?}: {all}");
        assert!(all.contains("trust_roots"), "{args:?}: {all}");
    }
    write(&format!("trust_roots = \"{}\"\n", roots.display()));
    let out = run(&["check"]);
    assert!(!text(&out).contains("no trust root"), "{}", text(&out));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

/// A self-signed CA certificate in PEM (what a private ACME server's `trust_roots` holds).
fn rcgen_root_pem() -> String {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let key = rcgen::KeyPair::generate().expect("key");
    params.self_signed(&key).expect("self-signed").pem()
}

/// The alert webhook honours HTTPS_PROXY: an unmanaged certificate expiring in 5 days alerts
/// at start, and the webhook's POST leaves through a CONNECT to the webhook's address.
#[test]
fn the_alert_webhook_goes_through_https_proxy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let scan = root.join("scan");
    std::fs::create_dir_all(&scan).expect("mkdir");
    use std::os::unix::fs::PermissionsExt;
    for d in [root, scan.as_path()] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let mut params = rcgen::CertificateParams::new(vec!["old.test".to_string()]).expect("params");
    params.not_before = time::OffsetDateTime::from_unix_timestamp(now - 85 * 86_400).expect("nb");
    params.not_after = time::OffsetDateTime::from_unix_timestamp(now + 5 * 86_400).expect("na");
    let key = rcgen::KeyPair::generate().expect("key");
    let pem = params.self_signed(&key).expect("self-signed").pem();
    std::fs::write(scan.join("old.pem"), pem).expect("write cert");
    // The webhook's "server": accepts and closes (the proxy only has to reach it).
    let hook = TcpListener::bind("127.0.0.1:0").expect("bind hook");
    let hook_port = hook.local_addr().expect("addr").port();
    thread::spawn(move || {
        for c in hook.incoming().flatten() {
            drop(c);
        }
    });
    let cfg = root.join("renewd.toml");
    std::fs::write(
        &cfg,
        format!(
            "state_dir = \"{d}/state\"\ncontrol_socket = \"{d}/control.sock\"\n\n\
             [alert]\nwebhook = \"https://127.0.0.1:{hook_port}/hook\"\n\n\
             [discovery]\npaths = [\"{d}/scan\"]\n",
            d = root.display()
        ),
    )
    .expect("config");
    let proxy = ConnectProxy::start(Some(("renewd", "s3cret")));
    let log_path = root.join("daemon.log");
    let log = std::fs::File::create(&log_path).expect("log");
    let mut child = Command::new(renewd_bin())
        .args(["run", "--config"])
        .arg(&cfg)
        .env(
            "HTTPS_PROXY",
            format!("http://renewd:s3cret@127.0.0.1:{}", proxy.port),
        )
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .env("RUST_LOG", "renewd=debug")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("spawn renewd run");
    let target = format!("127.0.0.1:{hook_port}");
    wait_until(Duration::from_secs(20), "the webhook's CONNECT", || {
        proxy.connects().iter().any(|c| c.target == target)
    });
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = child.wait();
    let c = proxy.connects();
    assert!(
        c.iter()
            .all(|c| c.auth.as_deref() == Some("Basic cmVuZXdkOnMzY3JldA==")),
        "{c:?}"
    );
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(!log.contains("s3cret"), "{log}");
}

/// A daemon that started without trust roots (its only CA is a loopback http:// one) refuses
/// a SIGHUP configuration adding an https:// CA without `trust_roots`, naming it.
#[test]
fn sighup_refuses_a_ca_without_trust_roots() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("renewd.toml");
    let base = format!(
        "state_dir = \"{d}/state\"\ncontrol_socket = \"{d}/control.sock\"\n\
         [ca.local]\ndirectory = \"http://127.0.0.1:9/dir\"\naccept_terms = true\n",
        d = dir.path().display()
    );
    std::fs::write(&cfg, &base).expect("config");
    let log_path = dir.path().join("daemon.log");
    let log = std::fs::File::create(&log_path).expect("log");
    let mut child = Command::new(renewd_bin())
        .args(["run", "--config"])
        .arg(&cfg)
        .env("SSL_CERT_FILE", dir.path().join("no-such-bundle.pem"))
        .env_remove("SSL_CERT_DIR")
        .env("RUST_LOG", "renewd=info")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("spawn renewd run");
    let socket = dir.path().join("control.sock");
    wait_until(Duration::from_secs(15), "the control socket", || {
        std::os::unix::net::UnixStream::connect(&socket).is_ok()
    });
    std::fs::write(
        &cfg,
        format!(
            "{base}[ca.public]\ndirectory = \"https://acme.example/dir\"\naccept_terms = true\n"
        ),
    )
    .expect("config");
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).expect("SIGHUP");
    let read = || std::fs::read_to_string(&log_path).unwrap_or_default();
    wait_until(Duration::from_secs(15), "the refused reload", || {
        read().contains("configuration not reloaded")
    });
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let _ = child.wait();
    let log = read();
    assert!(log.contains("CA `public`"), "{log}");
    assert!(log.contains("ca-certificates"), "{log}");
    assert!(!log.contains("configuration reloaded"), "{log}");
}

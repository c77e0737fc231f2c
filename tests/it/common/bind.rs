//! A real BIND `named` for RFC 2136 tests: authoritative for one zone, accepting TXT
//! updates signed with a TSIG key made by `tsig-keygen`, on a free loopback port, with
//! every file (configuration, zone, journal, key, log) in its own temporary directory.
//! Killed on drop.
//!
//! `named` and `tsig-keygen` come from Debian's `bind9` and `bind9-utils`, which
//! `scripts/fetch-test-deps.sh` installs (without starting the system's named).

use std::fs;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, write_file};

/// The name of the TSIG key `named` accepts updates with.
pub const KEY_NAME: &str = "renewd-test-key";

fn find_program(name: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/usr/bin", "/sbin", "/bin"] {
        let p = Path::new(dir).join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "{name} not found: run scripts/fetch-test-deps.sh (or `bash scripts/test.sh`), which \
         installs Debian's bind9 and bind9-utils"
    );
}

pub struct Bind {
    /// named's configuration, zone, key and log; removed on drop.
    _dir: tempfile::TempDir,
    pub addr: SocketAddr,
    pub zone: String,
    /// The key file in BIND's format, as renewd's `tsig_key_file` reads it.
    pub key_file: PathBuf,
    pub log_path: PathBuf,
    child: Option<Child>,
}

impl Bind {
    /// Starts `named` authoritative for `zone` (e.g. `rfc.test`), allowing updates of TXT
    /// records anywhere in it signed with [`KEY_NAME`]; returns once it answers.
    pub fn start(zone: &str) -> Bind {
        Bind::start_with(zone, free_port(), "")
    }

    /// Like [`Bind::start`], on `port` (one reserved with `free_port` before, e.g. for a
    /// Pebble started first), with `records` (zone-file lines relative to the zone's origin)
    /// added to the zone.
    pub fn start_with(zone: &str, port: u16, records: &str) -> Bind {
        let dir = tempfile::Builder::new()
            .prefix("renewd-bind-")
            .tempdir()
            .expect("tempdir");
        let d = dir.path();
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));

        let key_file = d.join("tsig.key");
        let out = Command::new(find_program("tsig-keygen"))
            .args(["-a", "hmac-sha256", KEY_NAME])
            .output()
            .expect("run tsig-keygen");
        assert!(out.status.success(), "tsig-keygen: {out:?}");
        write_file(&key_file, &out.stdout);

        let zone_file = d.join(format!("{zone}.zone"));
        write_file(
            &zone_file,
            format!(
                "$TTL 60\n\
                 @ IN SOA ns.{zone}. hostmaster.{zone}. 1 3600 600 86400 60\n\
                 @ IN NS ns.{zone}.\n\
                 ns IN A 127.0.0.1\n\
                 @ IN A 127.0.0.1\n\
                 * IN A 127.0.0.1\n\
                 {records}"
            ),
        );
        let conf = d.join("named.conf");
        write_file(
            &conf,
            format!(
                r#"options {{
    directory "{d}";
    pid-file "{d}/named.pid";
    session-keyfile "{d}/session.key";
    managed-keys-directory "{d}";
    listen-on port {port} {{ 127.0.0.1; }};
    listen-on-v6 {{ none; }};
    recursion no;
    dnssec-validation no;
    notify no;
    allow-query {{ any; }};
}};
controls {{ }};
include "{key}";
zone "{zone}" {{
    type primary;
    file "{zone_file}";
    update-policy {{ grant {KEY_NAME} zonesub TXT; }};
}};
"#,
                d = d.display(),
                key = key_file.display(),
                zone_file = zone_file.display(),
            ),
        );
        let log_path = d.join("named.log");
        let log = fs::File::create(&log_path).expect("named.log");
        // -g: foreground, log to stderr, run as the invoking user (root in CI) so it can
        // write its journal in the temporary directory.
        let child = Command::new(find_program("named"))
            .args(["-g", "-4", "-c"])
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn named");
        let mut bind = Bind {
            _dir: dir,
            addr,
            zone: zone.to_string(),
            key_file,
            log_path,
            child: Some(child),
        };
        bind.wait_ready();
        bind
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("named exited ({status}) while starting:\n{}", self.log());
            }
            if self.log().contains("running") && self.soa_answers() {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "named did not answer on {} in time:\n{}",
                    self.addr,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A raw SOA query for the zone; true on any answer.
    fn soa_answers(&self) -> bool {
        let Ok(sock) = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)) else {
            return false;
        };
        let _ = sock.set_read_timeout(Some(Duration::from_millis(300)));
        let mut q = vec![0x12, 0x34, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in self.zone.split('.') {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.extend_from_slice(&[0, 0, 6, 0, 1]);
        if sock.send_to(&q, self.addr).is_err() {
            return false;
        }
        let mut buf = [0u8; 512];
        matches!(sock.recv_from(&mut buf), Ok((n, _)) if n >= 12 && buf[0] == 0x12)
    }

    /// named's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The TXT values at `name` (FQDN without the trailing dot), asked of named itself.
    pub fn txt(&self, name: &str) -> Vec<String> {
        use hickory_net::client::{Client, ClientHandle};
        use hickory_net::runtime::TokioRuntimeProvider;
        use hickory_net::udp::UdpClientStream;
        use hickory_proto::rr::{DNSClass, Name, RData, RecordType};
        let addr = self.addr;
        let name = Name::from_ascii(format!("{name}.")).expect("name");
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let stream =
                    UdpClientStream::builder(addr, TokioRuntimeProvider::default()).build();
                let (mut client, bg) = Client::<TokioRuntimeProvider>::from_sender(stream);
                tokio::spawn(bg);
                let rsp = client
                    .query(name, DNSClass::IN, RecordType::TXT)
                    .await
                    .expect("TXT query to named");
                rsp.answers
                    .iter()
                    .filter_map(|r| match &r.data {
                        RData::TXT(txt) => Some(txt.to_string()),
                        _ => None,
                    })
                    .collect::<Vec<String>>()
            })
        })
        .join()
        .expect("query thread")
    }
}

impl Drop for Bind {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

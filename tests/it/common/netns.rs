//! A private network namespace for one test, for ACME servers that insist on validating
//! http-01 on port 80 and tls-alpn-01 on port 443 of a name's address (Caddy's
//! `acme_server`, acme2certifier).
//!
//! [`PrivateNet::enter`] moves the calling test *thread* into a new network namespace
//! (`unshare(CLONE_NEWNET)` applies to the calling thread only, so tests running in other
//! threads are untouched) and brings its loopback up. Every process the thread starts
//! afterwards, and every socket it or a thread it spawns opens, lives in that namespace:
//! ports 53, 80 and 443 of 127.0.0.1 are the test's own, and nothing it starts is reachable
//! from the host. The namespace disappears with the last process in it.
//!
//! Names resolve through a `pebble-challtestsrv` on 127.0.0.1:53 inside the namespace, which
//! answers every name with 127.0.0.1 (no AAAA) and serves TXT records set through its
//! management API ([`PrivateNet::write_dns_hook`]). The servers are pointed at it by their
//! own configuration (acme2certifier's `dns_server_list`, Caddy's `resolvers`), so neither
//! the host's `/etc/hosts` nor its resolver is touched.

use std::fs::File;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{pebble_bin_dir, wait_until, write_challtestsrv_hook};

/// challtestsrv's management API inside the namespace.
pub const DNS_MGMT_PORT: u16 = 8055;

/// The calling thread's private network namespace and its DNS server.
pub struct PrivateNet {
    dns: Child,
    /// `http://127.0.0.1:8055`: challtestsrv's management API (`/set-txt`, `/clear-txt`).
    pub dns_mgmt: String,
    _dir: tempfile::TempDir,
}

impl PrivateNet {
    /// Moves this thread into a new network namespace with loopback up, and starts the DNS
    /// server on 127.0.0.1:53. Needs root (CAP_SYS_ADMIN) and `ip` (iproute2).
    pub fn enter() -> PrivateNet {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).unwrap_or_else(|e| {
            panic!("unshare(CLONE_NEWNET): {e} (the interop tests need root, as in CI)")
        });
        let st = Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .status()
            .unwrap_or_else(|e| panic!("run `ip link set lo up`: {e} (install iproute2)"));
        assert!(st.success(), "`ip link set lo up` failed: {st}");

        let dir = tempfile::Builder::new()
            .prefix("renewd-netns-")
            .tempdir()
            .expect("tempdir");
        let dns_log_path = dir.path().join("challtestsrv.log");
        let log = File::create(&dns_log_path).expect("create challtestsrv.log");
        let dns = Command::new(pebble_bin_dir().join("pebble-challtestsrv"))
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .args(["-dnsserver", "127.0.0.1:53"])
            .args(["-management", &format!("127.0.0.1:{DNS_MGMT_PORT}")])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", "", "-doh", ""])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn pebble-challtestsrv: {e}"));
        let net = PrivateNet {
            dns,
            dns_mgmt: format!("http://127.0.0.1:{DNS_MGMT_PORT}"),
            _dir: dir,
        };
        wait_until(
            Duration::from_secs(15),
            "challtestsrv's management port in the private namespace",
            || TcpStream::connect(("127.0.0.1", DNS_MGMT_PORT)).is_ok(),
        );
        net
    }

    /// A dns-01 hook script (`HOOK set|clear RECORD VALUE`) that sets or clears the TXT
    /// record in this namespace's challtestsrv with curl, written to `path` (0755).
    pub fn write_dns_hook(&self, path: impl AsRef<Path>) {
        write_challtestsrv_hook(path, &self.dns_mgmt);
    }
}

impl Drop for PrivateNet {
    fn drop(&mut self) {
        let _ = self.dns.kill();
        let _ = self.dns.wait();
    }
}

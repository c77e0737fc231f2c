//! The certificates this host's TLS listeners serve (`[discovery] listeners = true`).
//!
//! The listening TCP sockets come from `/proc/net/tcp` and `/proc/net/tcp6` (state `0A`,
//! LISTEN), which describe the network namespace renewd runs in. Each is connected to — on
//! loopback when it is bound to the wildcard address, else at its own address, which is
//! this host's — and asked for a TLS handshake, first without SNI, then with each name
//! renewd knows (managed domains, names of discovered certificates) as SNI (RFC 6066 §3).
//! Only the served leaf is kept: the chain is not judged (nothing is trusted or refused,
//! renewd only reads), but the handshake's signature is checked against the leaf's key,
//! as rustls does, so a certificate is listed only when the listener holds its key.
//!
//! Everything is bounded: [`PER_CONNECTION`] for connect and handshake together,
//! [`MAX_PORTS`] sockets, [`MAX_NAMES`] names per socket, [`CONCURRENCY`] connections at
//! once, and no connection started after [`BUDGET`]. A socket that does not answer TLS without SNI (a database, SSH, a listener that
//! accepts and stays silent) is skipped quietly after its first attempt.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection};

use crate::fsutil::{self, Follow};
use crate::x509::CertInfo;

/// Time for one connection: TCP connect and the TLS handshake together.
pub(crate) const PER_CONNECTION: Duration = Duration::from_secs(2);
/// Listening sockets probed at most (lowest ports first).
pub(crate) const MAX_PORTS: usize = 64;
/// SNI names tried per socket at most, besides the handshake without SNI.
pub(crate) const MAX_NAMES: usize = 16;
/// Connections in flight at once.
pub(crate) const CONCURRENCY: usize = 8;
/// The whole probe: no connection starts later (the sockets not reached are reported).
pub(crate) const BUDGET: Duration = Duration::from_secs(30);
/// `/proc/net/tcp*` read at most, in bytes (about 25,000 sockets).
const MAX_PROC_NET: u64 = 4 * 1024 * 1024;

/// A certificate a listener served.
#[derive(Debug, Clone)]
pub(crate) struct Served {
    /// The listening socket's address, as bound (`0.0.0.0:443`, `[::]:443`, `10.0.0.5:8443`).
    pub(crate) listener: SocketAddr,
    /// The SNI name it was served for; `None`: served without SNI.
    pub(crate) sni: Option<String>,
    pub(crate) leaf: CertInfo,
}

impl Served {
    /// Where it was found, as the inventory shows it: `listener:ADDR:PORT`, then
    /// ` sni=NAME` when it was served for a name.
    pub(crate) fn location(&self) -> String {
        match &self.sni {
            Some(name) => format!("listener:{} sni={name}", self.listener),
            None => format!("listener:{}", self.listener),
        }
    }
}

/// What a probe found: the certificates served, and what could not be looked at.
#[derive(Debug, Default)]
pub(crate) struct Probe {
    pub(crate) served: Vec<Served>,
    /// `/proc/net/tcp*` unreadable, or sockets left out by [`MAX_PORTS`].
    pub(crate) errors: Vec<String>,
}

/// Probes every listening TCP socket of this network namespace with the SNI `names`
/// (the first [`MAX_NAMES`] valid DNS names, wildcards left out). Takes at most
/// [`BUDGET`] + [`PER_CONNECTION`], and far less in practice: a socket that is not TLS
/// costs one attempt.
pub(crate) fn probe(names: &[String]) -> Probe {
    let mut out = Probe::default();
    let mut sockets = Vec::new();
    for (file, v6) in [("/proc/net/tcp", false), ("/proc/net/tcp6", true)] {
        match fsutil::read_regular_string(Path::new(file), MAX_PROC_NET, Follow::Yes) {
            Ok(text) => sockets.extend(parse_proc_net(&text, v6)),
            // No IPv6 in this kernel or namespace.
            Err(fsutil::ReadError::NotFound(_)) if v6 => {}
            Err(e) => out.errors.push(format!("listeners: {e}")),
        }
    }
    sockets.sort_by_key(|a| (a.port(), a.ip()));
    sockets.dedup();
    if sockets.len() > MAX_PORTS {
        out.errors.push(format!(
            "listeners: {} listening sockets, only the first {MAX_PORTS} (by port) probed",
            sockets.len()
        ));
        sockets.truncate(MAX_PORTS);
    }
    let Some(config) = client_config() else {
        out.errors
            .push("listeners: no TLS client could be set up".to_string());
        return out;
    };
    let deadline = Instant::now() + BUDGET;
    let (served, skipped) = probe_sockets(&sockets, &sni_names(names), &config, deadline);
    out.served = served;
    if skipped > 0 {
        out.errors.push(format!(
            "listeners: {skipped} listening socket(s) not probed: the probe stops starting \
             connections after {} s",
            BUDGET.as_secs()
        ));
    }
    out
}

/// The names usable as SNI: DNS names (RFC 6066 §3: no IP addresses, no wildcards),
/// lowercased, each once, at most [`MAX_NAMES`].
fn sni_names(names: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for n in names {
        let n = n.to_ascii_lowercase();
        if out.len() == MAX_NAMES {
            break;
        }
        if n.contains('*') || n.parse::<IpAddr>().is_ok() || out.contains(&n) {
            continue;
        }
        if ServerName::try_from(n.as_str()).is_ok() {
            out.push(n);
        }
    }
    out
}

/// Probes `sockets` with `names`, [`CONCURRENCY`] at a time, each connection within
/// [`PER_CONNECTION`], none started after `deadline`. Returns what was served and how many
/// sockets were not reached.
fn probe_sockets(
    sockets: &[SocketAddr],
    names: &[String],
    config: &Arc<ClientConfig>,
    deadline: Instant,
) -> (Vec<Served>, usize) {
    let next = AtomicUsize::new(0);
    let skipped = AtomicUsize::new(0);
    let served = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..CONCURRENCY.min(sockets.len()) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(bound) = sockets.get(i) else { break };
                if Instant::now() >= deadline {
                    skipped.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let found = probe_socket(*bound, names, config, deadline);
                served
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend(found);
            });
        }
    });
    let mut served = served.into_inner().unwrap_or_else(|e| e.into_inner());
    served.sort_by(|a, b| {
        (a.listener.port(), a.listener.ip(), &a.sni).cmp(&(
            b.listener.port(),
            b.listener.ip(),
            &b.sni,
        ))
    });
    (served, skipped.into_inner())
}

/// Every distinct certificate one socket serves, each with the first way it was reached
/// (no SNI first); no handshake is started after `deadline`.
fn probe_socket(
    bound: SocketAddr,
    names: &[String],
    config: &Arc<ClientConfig>,
    deadline: Instant,
) -> Vec<Served> {
    let timeout = PER_CONNECTION;
    let addr = connect_address(bound);
    let mut out: Vec<Served> = Vec::new();
    let mut keep = |sni: Option<&String>, der: Vec<u8>| {
        if out.iter().any(|s| s.leaf.der == der) {
            return;
        }
        if let Ok(leaf) = CertInfo::parse_der(&der) {
            out.push(Served {
                listener: bound,
                sni: sni.cloned(),
                leaf,
            });
        }
    };
    // Without SNI (an IP address as the server name sends none).
    match handshake(
        addr,
        ServerName::IpAddress(addr.ip().into()),
        config,
        timeout,
    ) {
        Attempt::Served(der) => keep(None, der),
        Attempt::Refused => {}
        Attempt::NotTls => return Vec::new(),
    }
    for name in names {
        if Instant::now() >= deadline {
            break;
        }
        let Ok(server_name) = ServerName::try_from(name.clone()) else {
            continue;
        };
        if let Attempt::Served(der) = handshake(addr, server_name, config, timeout) {
            keep(Some(name), der);
        }
    }
    out
}

/// Where to connect to reach a socket bound at `bound`: loopback of its family for the
/// wildcard address, else the address itself.
fn connect_address(bound: SocketAddr) -> SocketAddr {
    let ip = match bound.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, bound.port())
}

/// What one handshake gave.
#[derive(Debug)]
enum Attempt {
    /// The served leaf, DER.
    Served(Vec<u8>),
    /// The peer speaks TLS but refused this handshake (an alert, e.g. for an unknown SNI).
    Refused,
    /// No TLS there: refused connection, silence until the deadline, closed, or bytes that
    /// are not TLS.
    NotTls,
}

/// One TLS handshake with `addr`, within `timeout` in all (blocking sockets, each read and
/// write given what is left of it).
fn handshake(
    addr: SocketAddr,
    name: ServerName<'static>,
    config: &Arc<ClientConfig>,
    timeout: Duration,
) -> Attempt {
    let deadline = Instant::now() + timeout;
    let left = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
    };
    let Ok(mut sock) = TcpStream::connect_timeout(&addr, timeout) else {
        return Attempt::NotTls;
    };
    let Ok(mut conn) = ClientConnection::new(config.clone(), name) else {
        return Attempt::NotTls;
    };
    // rustls keeps the server's certificates once its handshake signature is verified
    // (RFC 8446 §4.4.3): a server that then refuses us (it wants a client certificate,
    // RFC 8446 §4.4.2) has still shown which certificate it serves.
    let served_or = |conn: &ClientConnection, otherwise: Attempt| match conn
        .peer_certificates()
        .and_then(|c| c.first())
    {
        Some(leaf) => Attempt::Served(leaf.as_ref().to_vec()),
        None => otherwise,
    };
    while conn.is_handshaking() {
        let Some(remaining) = left() else {
            return served_or(&conn, Attempt::NotTls);
        };
        if sock.set_read_timeout(Some(remaining)).is_err()
            || sock.set_write_timeout(Some(remaining)).is_err()
        {
            return Attempt::NotTls;
        }
        if conn.wants_write() {
            if conn.write_tls(&mut sock).is_err() {
                return served_or(&conn, Attempt::NotTls);
            }
            continue;
        }
        match conn.read_tls(&mut sock) {
            Ok(0) | Err(_) => return served_or(&conn, Attempt::NotTls),
            Ok(_) => {}
        }
        match conn.process_new_packets() {
            Ok(_) => {}
            Err(rustls::Error::AlertReceived(_)) => return served_or(&conn, Attempt::Refused),
            Err(_) => return served_or(&conn, Attempt::NotTls),
        }
    }
    // Say goodbye so the service logs no aborted handshake; never wait for an answer.
    conn.send_close_notify();
    let _ = conn.write_tls(&mut sock);
    served_or(&conn, Attempt::Refused)
}

/// The rustls client of the probe: TLS 1.2 and 1.3, any chain accepted.
fn client_config() -> Option<Arc<ClientConfig>> {
    crate::verify::any_chain_client_config().ok().map(Arc::new)
}

/// Parses `/proc/net/tcp` (`v6` false) or `/proc/net/tcp6`: the local address of each
/// socket in state `0A` (LISTEN). Addresses there are hex in the kernel's byte order
/// (each 32-bit word little-endian on the machines renewd runs on); lines that do not
/// parse are skipped.
fn parse_proc_net(text: &str, v6: bool) -> Vec<SocketAddr> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let local = fields.nth(1)?;
            let state = fields.nth(1)?;
            if state != "0A" {
                return None;
            }
            let (ip, port) = local.split_once(':')?;
            let port = u16::from_str_radix(port, 16).ok()?;
            let ip = if v6 { parse_v6(ip)? } else { parse_v4(ip)? };
            Some(SocketAddr::new(ip, port))
        })
        .collect()
}

fn parse_v4(hex: &str) -> Option<IpAddr> {
    let word = u32::from_str_radix(hex, 16)
        .ok()
        .filter(|_| hex.len() == 8)?;
    Some(IpAddr::V4(Ipv4Addr::from(word.to_ne_bytes())))
}

fn parse_v6(hex: &str) -> Option<IpAddr> {
    if hex.len() != 32 {
        return None;
    }
    let mut bytes = [0u8; 16];
    for (i, chunk) in bytes.chunks_mut(4).enumerate() {
        let word = u32::from_str_radix(hex.get(i * 8..i * 8 + 8)?, 16).ok()?;
        chunk.copy_from_slice(&word.to_ne_bytes());
    }
    let ip = Ipv6Addr::from(bytes);
    // A v4-mapped listener is reached over IPv4.
    Some(match ip.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(ip),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_lines_give_listening_sockets_only() {
        let v4 = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   \
            0: 00000000:01BB 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0\n   \
            1: 0100007F:20FB 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0 100 0 0 10 0\n   \
            2: 0100007F:A1B2 0100007F:01BB 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0 100 0 0 10 0\n";
        assert_eq!(
            parse_proc_net(v4, false),
            vec![
                "0.0.0.0:443".parse::<SocketAddr>().unwrap(),
                "127.0.0.1:8443".parse().unwrap()
            ]
        );
        let v6 = "  sl  local_address remote_address st\n   \
            0: 00000000000000000000000000000000:01BB 00000000000000000000000000000000:0000 0A 0\n   \
            1: 00000000000000000000000001000000:0050 00000000000000000000000000000000:0000 0A 0\n   \
            2: 0000000000000000FFFF00000100007F:1F90 00000000000000000000000000000000:0000 0A 0\n   \
            3: garbage\n";
        assert_eq!(
            parse_proc_net(v6, true),
            vec![
                "[::]:443".parse::<SocketAddr>().unwrap(),
                "[::1]:80".parse().unwrap(),
                "127.0.0.1:8080".parse().unwrap()
            ]
        );
    }

    #[test]
    fn wildcard_listeners_are_reached_on_loopback() {
        assert_eq!(
            connect_address("0.0.0.0:443".parse().unwrap()),
            "127.0.0.1:443".parse().unwrap()
        );
        assert_eq!(
            connect_address("[::]:443".parse().unwrap()),
            "[::1]:443".parse().unwrap()
        );
        assert_eq!(
            connect_address("10.1.2.3:443".parse().unwrap()),
            "10.1.2.3:443".parse().unwrap()
        );
    }

    /// A socket that accepts and never answers costs one handshake timeout, however many
    /// names there are; past the deadline nothing is started and the socket is counted.
    #[test]
    fn a_silent_socket_costs_one_timeout_and_the_budget_stops_the_probe() {
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = silent.local_addr().unwrap();
        let config = client_config().unwrap();
        let names: Vec<String> = (0..5).map(|i| format!("n{i}.test")).collect();
        let started = Instant::now();
        let (served, skipped) =
            probe_sockets(&[addr], &names, &config, started + Duration::from_secs(60));
        let took = started.elapsed();
        assert!(served.is_empty() && skipped == 0);
        assert!(
            took >= PER_CONNECTION && took < PER_CONNECTION * 2,
            "took {took:?}"
        );
        let (served, skipped) = probe_sockets(&[addr, addr], &names, &config, Instant::now());
        assert!(served.is_empty());
        assert_eq!(skipped, 2);
    }

    #[test]
    fn sni_names_leave_out_wildcards_addresses_and_repeats() {
        let names: Vec<String> = ["A.test", "a.test", "*.b.test", "192.0.2.1", "c.test"]
            .map(String::from)
            .into();
        assert_eq!(sni_names(&names), ["a.test", "c.test"]);
        let many: Vec<String> = (0..40).map(|i| format!("h{i}.test")).collect();
        assert_eq!(sni_names(&many).len(), MAX_NAMES);
    }
}

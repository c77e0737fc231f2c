//! The post-reload proof: after a reload, connect to the service the way a client would and
//! check that it serves the certificate renewd just deployed (`verify` in the configuration).
//!
//! The question is *which* certificate the service presents, not whether a browser would trust
//! it: the certificate may come from a private or test CA, and the host may not trust its own
//! CA. So the chain is not validated, but the handshake's signature is checked with the
//! presented leaf's public key — a service that does not hold that certificate's private key
//! cannot complete the handshake, so it cannot pass by replaying someone else's certificate.
//!
//! Services reload asynchronously (nginx's `-s reload` returns before the new workers
//! answer), so [`prove`] retries with short, growing pauses until the new certificate is
//! served or its time is up. The whole leaf is compared; serials only make the messages
//! readable.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::config::VerifyConfig;
use crate::x509::CertInfo;

/// The longest one connect, or one handshake, of [`prove`] may take. Shorter near the end of
/// its time, but never below [`MIN_STEP_TIMEOUT`], so the last attempt is a real one.
const MAX_STEP_TIMEOUT: Duration = Duration::from_secs(10);
const MIN_STEP_TIMEOUT: Duration = Duration::from_secs(1);
/// The pause after the first failed attempt; it doubles up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(100);
const MAX_PAUSE: Duration = Duration::from_secs(2);
/// How long to wait for the peer to take our close_notify before dropping the connection.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// Why the proof failed, or why a served certificate could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyError {
    /// `connect`'s host name did not resolve.
    Resolve { target: String, reason: String },
    /// No address of `connect` completed a TLS handshake; one entry per address tried.
    Unreachable {
        target: String,
        failures: Vec<(SocketAddr, Failure)>,
    },
    /// The service completed a handshake with another certificate than the expected one.
    WrongCertificate {
        addr: SocketAddr,
        /// The `server_name` sent as SNI; an IP address is sent as no SNI at all.
        server_name: String,
        served_serial: String,
        expected_serial: String,
    },
    /// [`prove`] ran out of time; `last` is what its last attempt saw.
    NotProven {
        attempts: u32,
        elapsed: Duration,
        last: Box<VerifyError>,
    },
    /// The TLS client could not be set up (a `server_name` rustls refuses, no usable
    /// protocol version): retrying would not help.
    Setup(String),
}

/// What went wrong with one address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    Refused,
    ConnectTimeout(Duration),
    Connect(String),
    HandshakeTimeout(Duration),
    /// The handshake failed; the text says how, with a hint where one helps.
    Handshake(String),
    NoCertificate,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Refused => f.write_str("connection refused (is the service listening there?)"),
            Failure::ConnectTimeout(d) => {
                write!(f, "timed out connecting after {}", seconds(*d))
            }
            Failure::Connect(e) => write!(f, "cannot connect: {e}"),
            Failure::HandshakeTimeout(d) => write!(
                f,
                "timed out in the TLS handshake after {} (does this port speak TLS?)",
                seconds(*d)
            ),
            Failure::Handshake(e) => write!(f, "TLS handshake failed: {e}"),
            Failure::NoCertificate => f.write_str("the service presented no certificate"),
        }
    }
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VerifyError::Resolve { target, reason } => {
                write!(f, "cannot resolve `{target}`: {reason}")
            }
            VerifyError::Unreachable { target, failures } => {
                if failures.is_empty() {
                    return write!(f, "{target}: no address to connect to");
                }
                for (i, (addr, failure)) in failures.iter().enumerate() {
                    if i > 0 {
                        f.write_str("; ")?;
                    }
                    if *target == addr.to_string() {
                        write!(f, "{addr}: {failure}")?;
                    } else {
                        write!(f, "{target} ({addr}): {failure}")?;
                    }
                }
                Ok(())
            }
            VerifyError::WrongCertificate {
                addr,
                server_name,
                served_serial,
                expected_serial,
            } => {
                write!(
                    f,
                    "{addr} ({}) serves serial {served_serial}, expected {expected_serial}",
                    sni_note(server_name)
                )?;
                if served_serial == expected_serial {
                    f.write_str(" (another certificate with the same serial)")?;
                }
                Ok(())
            }
            VerifyError::NotProven {
                attempts,
                elapsed,
                last,
            } => write!(
                f,
                "{last} (after {attempts} attempt{} over {})",
                if *attempts == 1 { "" } else { "s" },
                seconds(*elapsed)
            ),
            VerifyError::Setup(e) => write!(f, "cannot set up the TLS client: {e}"),
        }
    }
}

impl std::error::Error for VerifyError {}

/// A successful proof: where, and how long the service took to serve the new certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proven {
    pub addr: SocketAddr,
    pub attempts: u32,
    pub elapsed: Duration,
}

/// Connects to `cfg.connect` (every address it resolves to, in order, until one completes a
/// handshake), sends `cfg.server_name` as SNI, and returns the leaf certificate (DER) the
/// service presents. `timeout` bounds the name resolution, and each connect and each
/// handshake separately.
pub async fn served_leaf(cfg: &VerifyConfig, timeout: Duration) -> Result<Vec<u8>, VerifyError> {
    fetch(cfg, timeout).await.map(|(_, der)| der)
}

/// Proves that the service at `cfg.connect` serves `expected_leaf_der`: retries, with pauses
/// growing from 100 ms to 2 s, until the served leaf is exactly that certificate or `within`
/// has passed (the last attempt starts at `within` at the latest, and takes at most 10 s
/// per connect and per handshake). `expected_serial_hex` (as [`CertInfo::serial_hex`]) is only
/// for the messages. On failure the error says what the last attempt saw, and how many
/// attempts were made over how long.
pub async fn prove(
    cfg: &VerifyConfig,
    expected_leaf_der: &[u8],
    expected_serial_hex: &str,
    within: Duration,
) -> Result<Proven, VerifyError> {
    let start = Instant::now();
    let deadline = start + within;
    let mut pause = FIRST_PAUSE;
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let step = step_timeout(deadline.saturating_duration_since(Instant::now()));
        let seen = match fetch(cfg, step).await {
            Ok((addr, der)) if der == expected_leaf_der => {
                return Ok(Proven {
                    addr,
                    attempts,
                    elapsed: start.elapsed(),
                })
            }
            Ok((addr, der)) => VerifyError::WrongCertificate {
                addr,
                server_name: cfg.server_name.clone(),
                served_serial: serial_of(&der),
                expected_serial: expected_serial_hex.to_string(),
            },
            Err(e @ VerifyError::Setup(_)) => return Err(e),
            Err(e) => e,
        };
        tracing::debug!(
            connect = %cfg.connect,
            attempt = attempts,
            "proof not there yet: {seen}"
        );
        let now = Instant::now();
        if now >= deadline {
            return Err(VerifyError::NotProven {
                attempts,
                elapsed: now - start,
                last: Box::new(seen),
            });
        }
        tokio::time::sleep(pause.min(deadline - now)).await;
        pause = next_pause(pause);
    }
}

/// The deadline of one connect or handshake when `remaining` is left of the proof's time.
fn step_timeout(remaining: Duration) -> Duration {
    remaining.clamp(MIN_STEP_TIMEOUT, MAX_STEP_TIMEOUT)
}

fn next_pause(pause: Duration) -> Duration {
    (pause * 2).min(MAX_PAUSE)
}

/// The serial of a served certificate as [`CertInfo::serial_hex`] spells it.
fn serial_of(der: &[u8]) -> String {
    match CertInfo::parse_der(der) {
        Ok(cert) => cert.serial_hex,
        Err(e) => format!("? (a certificate renewd cannot read: {e})"),
    }
}

/// How the server name appears in messages: IP addresses are not sent as SNI.
fn sni_note(server_name: &str) -> String {
    if server_name.parse::<std::net::IpAddr>().is_ok() {
        "no SNI".to_string()
    } else {
        format!("SNI {server_name}")
    }
}

/// `2s`, `0.5s`, `1.25s`: seconds, without trailing zeros.
fn seconds(d: Duration) -> String {
    let text = format!("{:.2}", d.as_secs_f64());
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text}s")
}

async fn fetch(
    cfg: &VerifyConfig,
    timeout: Duration,
) -> Result<(SocketAddr, Vec<u8>), VerifyError> {
    let server_name = ServerName::try_from(cfg.server_name.clone())
        .map_err(|e| VerifyError::Setup(format!("server name `{}`: {e}", cfg.server_name)))?;
    let connector = connector()?;
    let addrs: Vec<SocketAddr> =
        match tokio::time::timeout(timeout, tokio::net::lookup_host(cfg.connect.as_str())).await {
            Err(_) => {
                return Err(VerifyError::Resolve {
                    target: cfg.connect.clone(),
                    reason: format!("no answer within {}", seconds(timeout)),
                })
            }
            Ok(Err(e)) => {
                return Err(VerifyError::Resolve {
                    target: cfg.connect.clone(),
                    reason: e.to_string(),
                })
            }
            Ok(Ok(addrs)) => addrs.collect(),
        };
    let mut failures = Vec::with_capacity(addrs.len());
    for addr in addrs {
        match handshake(&connector, addr, server_name.clone(), timeout).await {
            Ok(der) => return Ok((addr, der)),
            Err(failure) => failures.push((addr, failure)),
        }
    }
    Err(VerifyError::Unreachable {
        target: cfg.connect.clone(),
        failures,
    })
}

fn connector() -> Result<TlsConnector, VerifyError> {
    let config = any_chain_client_config().map_err(|e| VerifyError::Setup(e.to_string()))?;
    Ok(TlsConnector::from(Arc::new(config)))
}

/// A TLS 1.2 and 1.3 client (aws-lc-rs) that accepts any chain but checks the handshake's
/// signatures with the presented leaf's key: for asking a service which certificate it
/// serves (the post-reload proof, discovery of the host's listeners), never for trusting it.
/// Errors: rustls refusing the protocol versions (never with the default provider).
pub(crate) fn any_chain_client_config() -> Result<rustls::ClientConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = Arc::new(AnyChainVerifier {
        algorithms: provider.signature_verification_algorithms,
    });
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

async fn handshake(
    connector: &TlsConnector,
    addr: SocketAddr,
    server_name: ServerName<'static>,
    timeout: Duration,
) -> Result<Vec<u8>, Failure> {
    let tcp = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Err(_) => return Err(Failure::ConnectTimeout(timeout)),
        Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => return Err(Failure::Refused),
        Ok(Err(e)) => return Err(Failure::Connect(e.to_string())),
        Ok(Ok(tcp)) => tcp,
    };
    let mut tls = match tokio::time::timeout(timeout, connector.connect(server_name, tcp)).await {
        Err(_) => return Err(Failure::HandshakeTimeout(timeout)),
        Ok(Err(e)) => return Err(Failure::Handshake(describe_handshake_error(&e))),
        Ok(Ok(tls)) => tls,
    };
    let leaf = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|leaf| leaf.as_ref().to_vec());
    // Say goodbye properly so the service does not log an aborted handshake; never wait long.
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, tls.shutdown()).await;
    leaf.ok_or(Failure::NoCertificate)
}

/// The handshake error in words a sysadmin can act on.
fn describe_handshake_error(e: &io::Error) -> String {
    use rustls::{CertificateError, Error};
    let inner = e.get_ref().and_then(|i| i.downcast_ref::<Error>());
    match inner {
        Some(Error::InvalidMessage(_)) => {
            format!("the service does not speak TLS there ({e})")
        }
        Some(Error::InvalidCertificate(CertificateError::BadSignature)) => format!(
            "the handshake is not signed by the key of the certificate presented: the service \
             does not hold that certificate's private key ({e})"
        ),
        Some(Error::AlertReceived(alert)) => {
            format!("the service refused the handshake with the alert {alert:?}")
        }
        Some(other) => other.to_string(),
        None if e.kind() == io::ErrorKind::UnexpectedEof => {
            "the service closed the connection during the handshake (does this port speak \
             TLS?)"
                .to_string()
        }
        None => e.to_string(),
    }
}

/// Accepts any chain — the proof asks which certificate is served, not whether it is
/// trusted — but verifies the handshake's signatures with the presented leaf's key, as
/// rustls's own verifier does.
#[derive(Debug)]
struct AnyChainVerifier {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AnyChainVerifier {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("socket address")
    }

    #[test]
    fn pauses_grow_to_a_bound() {
        let mut pause = FIRST_PAUSE;
        let mut seen = vec![pause];
        for _ in 0..7 {
            pause = next_pause(pause);
            seen.push(pause);
        }
        let ms: Vec<u128> = seen.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [100, 200, 400, 800, 1600, 2000, 2000, 2000]);
    }

    #[test]
    fn each_step_has_a_real_deadline() {
        assert_eq!(step_timeout(Duration::ZERO), MIN_STEP_TIMEOUT);
        assert_eq!(step_timeout(Duration::from_secs(3)), Duration::from_secs(3));
        assert_eq!(step_timeout(Duration::from_secs(300)), MAX_STEP_TIMEOUT);
    }

    #[test]
    fn seconds_are_short() {
        assert_eq!(seconds(Duration::from_secs(2)), "2s");
        assert_eq!(seconds(Duration::from_millis(500)), "0.5s");
        assert_eq!(seconds(Duration::from_millis(1250)), "1.25s");
        assert_eq!(seconds(Duration::ZERO), "0s");
    }

    #[test]
    fn served_serial_is_spelled_like_cert_info() -> Result<(), Box<dyn std::error::Error>> {
        // A serial with its top bit set: DER pads it with a zero byte, which the message,
        // like CertInfo::serial_hex and `openssl x509 -serial`, leaves out.
        let key = rcgen::KeyPair::generate()?;
        let mut params = rcgen::CertificateParams::new(vec!["serial.test".to_string()])?;
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&[
            0xf1, 0xe2, 0xd3, 0xc4, 0xb5, 0xa6, 0x97, 0x88,
        ]));
        let cert = params.self_signed(&key)?;
        assert_eq!(serial_of(cert.der()), "f1e2d3c4b5a69788");
        assert_eq!(
            serial_of(cert.der()),
            CertInfo::parse_der(cert.der())?.serial_hex
        );
        assert!(serial_of(b"not a certificate").starts_with("? (a certificate renewd cannot read"));
        Ok(())
    }

    #[test]
    fn wrong_certificate_names_the_address_and_both_serials() {
        let err = VerifyError::NotProven {
            attempts: 7,
            elapsed: Duration::from_millis(2500),
            last: Box::new(VerifyError::WrongCertificate {
                addr: addr("127.0.0.1:443"),
                server_name: "example.org".into(),
                served_serial: "0a1b".into(),
                expected_serial: "2c3d".into(),
            }),
        };
        assert_eq!(
            err.to_string(),
            "127.0.0.1:443 (SNI example.org) serves serial 0a1b, expected 2c3d \
             (after 7 attempts over 2.5s)"
        );
        let same = VerifyError::WrongCertificate {
            addr: addr("[::1]:8443"),
            server_name: "::1".into(),
            served_serial: "01".into(),
            expected_serial: "01".into(),
        };
        assert_eq!(
            same.to_string(),
            "[::1]:8443 (no SNI) serves serial 01, expected 01 \
             (another certificate with the same serial)"
        );
    }

    #[test]
    fn unreachable_lists_every_address() {
        let one = VerifyError::Unreachable {
            target: "127.0.0.1:443".into(),
            failures: vec![(addr("127.0.0.1:443"), Failure::Refused)],
        };
        assert_eq!(
            one.to_string(),
            "127.0.0.1:443: connection refused (is the service listening there?)"
        );
        let two = VerifyError::NotProven {
            attempts: 1,
            elapsed: Duration::from_secs(1),
            last: Box::new(VerifyError::Unreachable {
                target: "localhost:443".into(),
                failures: vec![
                    (
                        addr("[::1]:443"),
                        Failure::HandshakeTimeout(Duration::from_secs(2)),
                    ),
                    (addr("127.0.0.1:443"), Failure::NoCertificate),
                ],
            }),
        };
        assert_eq!(
            two.to_string(),
            "localhost:443 ([::1]:443): timed out in the TLS handshake after 2s (does this \
             port speak TLS?); localhost:443 (127.0.0.1:443): the service presented no \
             certificate (after 1 attempt over 1s)"
        );
    }

    #[tokio::test]
    async fn an_unresolvable_name_says_so() {
        let cfg = VerifyConfig {
            connect: "renewd-no-such-host.invalid:443".into(),
            server_name: "example.org".into(),
            timeout: Duration::from_secs(1),
        };
        let err = served_leaf(&cfg, Duration::from_secs(5))
            .await
            .expect_err("an .invalid name does not resolve");
        assert!(
            err.to_string()
                .starts_with("cannot resolve `renewd-no-such-host.invalid:443`: "),
            "{err}"
        );
    }
}

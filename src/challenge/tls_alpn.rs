//! tls-alpn-01 (RFC 8737): a built-in TLS listener that answers the CA's `acme-tls/1`
//! handshakes with a self-signed certificate for the name being validated, carrying the
//! key authorization's SHA-256 in a critical acmeIdentifier extension.
//!
//! One listener per `listen` address is shared by every certificate validating through it,
//! keyed by SNI: it binds when the first answer is published and closes when the last is
//! withdrawn. IP identifiers (RFC 8738 §6) are looked up by their reverse-DNS name, which is
//! what the CA sends as SNI.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::sync::watch;

use super::shared::{Answers as SharedAnswers, SharedListeners};
use super::{lock, Answer, ChallengeError};

/// The ALPN protocol the CA offers, and the only one this listener speaks.
const ACME_TLS_1: &[u8] = b"acme-tls/1";

/// How long one handshake may take before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = super::LISTENER_REQUEST_TIMEOUT;

/// The SNI a CA sends to validate `identifier`: the name itself, or for an IP address its
/// reverse-DNS name (`4.3.2.1.in-addr.arpa`, nibbles under `ip6.arpa`; RFC 8738 §6).
pub(crate) fn sni_name(identifier: &str) -> String {
    match identifier.parse::<IpAddr>() {
        Ok(IpAddr::V4(v4)) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}.in-addr.arpa", o[3], o[2], o[1], o[0])
        }
        Ok(IpAddr::V6(v6)) => {
            let mut s = String::with_capacity(72);
            for byte in v6.octets().iter().rev() {
                s.push_str(&format!("{:x}.{:x}.", byte & 0xf, byte >> 4));
            }
            s.push_str("ip6.arpa");
            s
        }
        Err(_) => identifier.to_ascii_lowercase(),
    }
}

/// The answers of one listener: SNI name → (registration id, certificate). Several renewals
/// may validate the same name at once; the latest answer is served.
type Answers = SharedAnswers<Vec<(u64, Arc<CertifiedKey>)>>;

/// Every tls-alpn-01 listener of the process.
#[derive(Clone)]
pub(super) struct Listeners {
    shared: SharedListeners<Vec<(u64, Arc<CertifiedKey>)>>,
    next_id: Arc<AtomicU64>,
}

impl Default for Listeners {
    fn default() -> Self {
        Listeners {
            shared: SharedListeners::new("tls-alpn-01", serve),
            next_id: Arc::default(),
        }
    }
}

/// One published answer; dropping it withdraws the answer (and closes an idle listener).
pub(super) struct Registration {
    listeners: Listeners,
    addr: SocketAddr,
    sni: String,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.listeners.shared.withdraw(self.addr, |answers| {
            if let Some(list) = answers.get_mut(&self.sni) {
                list.retain(|(id, _)| *id != self.id);
                if list.is_empty() {
                    answers.remove(&self.sni);
                }
            }
        });
    }
}

impl Listeners {
    /// Publishes the certificate answering `answer` on the listener at `addr`.
    pub(super) async fn publish(
        &self,
        addr: SocketAddr,
        answer: &Answer<'_>,
    ) -> Result<Registration, ChallengeError> {
        let certified = Arc::new(challenge_certificate(answer.identifier, answer.digest)?);
        let sni = sni_name(answer.identifier);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.shared
            .publish(addr, |answers| {
                answers
                    .entry(sni.clone())
                    .or_default()
                    .push((id, certified.clone()))
            })
            .await?;
        Ok(Registration {
            listeners: self.clone(),
            addr,
            sni,
            id,
        })
    }

    #[cfg(test)]
    pub(super) fn open(&self) -> usize {
        self.shared.open()
    }
}

/// The self-signed RFC 8737 §3 certificate: the identifier as its only SAN, and the
/// acmeIdentifier extension (critical) holding the key authorization's SHA-256.
fn challenge_certificate(identifier: &str, digest: &[u8]) -> Result<CertifiedKey, ChallengeError> {
    let fail = |message: String| ChallengeError::TlsAlpnCert {
        identifier: identifier.to_string(),
        message,
    };
    let key = rcgen::KeyPair::generate().map_err(|e| fail(e.to_string()))?;
    // rcgen turns a string that parses as an IP address into an iPAddress SAN.
    let mut params = rcgen::CertificateParams::new(vec![identifier.to_string()])
        .map_err(|e| fail(e.to_string()))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let cert = params.self_signed(&key).map_err(|e| fail(e.to_string()))?;
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let signing = rustls::crypto::aws_lc_rs::sign::any_supported_type(&key_der)
        .map_err(|e| fail(e.to_string()))?;
    Ok(CertifiedKey::new(
        vec![CertificateDer::from(cert.der().to_vec())],
        signing,
    ))
}

/// Picks the answer by SNI, and only for handshakes that offer `acme-tls/1`.
struct Resolver {
    answers: Answers,
}

impl fmt::Debug for Resolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("tls-alpn-01 resolver")
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let acme = hello
            .alpn()
            .is_some_and(|mut protocols| protocols.any(|p| p == ACME_TLS_1));
        let sni = hello.server_name()?.to_ascii_lowercase();
        let found = if acme {
            lock(&self.answers)
                .get(&sni)
                .and_then(|list| list.last().map(|(_, c)| c.clone()))
        } else {
            None
        };
        tracing::debug!(%sni, acme, found = found.is_some(), "tls-alpn-01 handshake");
        found
    }
}

/// Serves the answers in `answers` on `listener`: a handshake per connection, within the
/// bounds of a built-in listener ([`super::listener_limits`]; the whole handshake has
/// [`HANDSHAKE_TIMEOUT`]). The ClientHello is the connection's request: until it has
/// arrived the connection is among those closed first to make room, after it the rest of the
/// handshake (the whole answer) is left to finish.
fn serve(
    addr: SocketAddr,
    listener: tokio::net::TcpListener,
    answers: Answers,
    closed: watch::Sender<()>,
) -> crate::serve::Serving {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = match rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
    {
        Ok(builder) => {
            let mut config = builder
                .with_no_client_auth()
                .with_cert_resolver(Arc::new(Resolver { answers }));
            config.alpn_protocols = vec![ACME_TLS_1.to_vec()];
            Some(Arc::new(config))
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot configure the tls-alpn-01 listener");
            None
        }
    };
    crate::serve::spawn(
        format!("tls-alpn-01 {addr}"),
        listener,
        super::listener_limits(),
        Some(closed),
        move |(stream, peer): (tokio::net::TcpStream, SocketAddr), conn: crate::serve::Conn| {
            let config = config.clone();
            async move {
                let Some(config) = config else { return };
                let handshake = async {
                    let hello = tokio_rustls::LazyConfigAcceptor::new(
                        rustls::server::Acceptor::default(),
                        stream,
                    )
                    .await?;
                    conn.started();
                    hello.into_stream(config).await
                };
                // The handshake is the whole answer; the CA closes the connection after it.
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
                    Ok(Ok(mut tls)) => {
                        use tokio::io::AsyncWriteExt;
                        let _ = tls.shutdown().await;
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "tls-alpn-01 handshake failed")
                    }
                    Err(_) => tracing::debug!(%peer, "tls-alpn-01 handshake timed out"),
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sni_names_for_ip_addresses_are_reverse_dns() {
        assert_eq!(sni_name("example.org"), "example.org");
        assert_eq!(sni_name("192.0.2.1"), "1.2.0.192.in-addr.arpa");
        assert_eq!(
            sni_name("2001:db8::1"),
            "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa"
        );
    }

    #[test]
    fn challenge_certificate_carries_the_critical_acme_identifier() {
        let digest = [7u8; 32];
        for identifier in ["example.org", "192.0.2.1"] {
            let certified = challenge_certificate(identifier, &digest).unwrap();
            let (_, cert) = x509_parser::parse_x509_certificate(&certified.cert[0]).unwrap();
            let ext = cert
                .extensions()
                .iter()
                .find(|e| e.oid.to_id_string() == "1.3.6.1.5.5.7.1.31")
                .expect("acmeIdentifier extension");
            assert!(ext.critical);
            // An OCTET STRING of 32 bytes.
            assert_eq!(&ext.value[..2], &[0x04, 0x20]);
            assert_eq!(&ext.value[2..], &digest);
            let san = cert.subject_alternative_name().unwrap().unwrap();
            assert_eq!(san.value.general_names.len(), 1);
        }
    }
}

//! Certificates and keys as renewd needs to see them: what a deployed certificate says
//! (serial, validity, names, public key), whether a private key belongs to it, and the
//! fresh keys and CSRs an order needs. Certificates are X.509 v3 as profiled by RFC 5280,
//! read from DER or from PEM (RFC 7468); CSRs are PKCS#10 (RFC 2986) as ACME's finalize
//! wants them (RFC 8555 §7.4).
//!
//! Everything read here comes from files an administrator (or an earlier, possibly
//! interrupted, run) left on disk, so every function returns an error a sysadmin can act on
//! instead of panicking on garbage.

use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    CertificateParams, DistinguishedName, KeyPair, PublicKeyData, RsaKeySize,
    PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384, PKCS_RSA_SHA256,
};
use rustls::pki_types::pem::{self, PemObject, SectionKind};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer, PrivateSec1KeyDer};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;
use x509_parser::x509::SubjectPublicKeyInfo;

use crate::config::KeyType;

/// Why a certificate or key could not be read or made.
#[derive(Debug, thiserror::Error)]
pub enum X509Error {
    #[error("no CERTIFICATE block found")]
    NoCertificate,
    #[error("malformed PEM: {0}")]
    Pem(String),
    #[error("certificate is not valid DER: {0}")]
    Der(String),
    #[error(
        "no private key block found (expected PRIVATE KEY, EC PRIVATE KEY or RSA PRIVATE KEY)"
    )]
    NoPrivateKey,
    #[error("{0} private key blocks found where exactly one is expected")]
    SeveralPrivateKeys(usize),
    #[error("the private key is encrypted; renewd needs an unencrypted key file protected by its mode and owner")]
    EncryptedKey,
    #[error("private key is not usable: {0}")]
    Key(String),
    #[error("cannot generate a {kind} key: {reason}")]
    KeyGeneration { kind: &'static str, reason: String },
    #[error("cannot build the certificate signing request: {0}")]
    Csr(String),
    #[error("{0}")]
    NotIssuedBy(String),
}

/// What renewd needs to know about one certificate, detached from the DER it came from so it
/// can be kept in state and passed between tasks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// The whole certificate, DER (RFC 5280 §4.1).
    pub der: Vec<u8>,
    /// Lowercase hex without separators or DER sign padding: one canonical spelling for
    /// logs, status output and comparing with the serial a service serves.
    pub serial_hex: String,
    /// The INTEGER content exactly as encoded (sign padding included): ARI's certificate
    /// identifier is built from these bytes.
    pub serial_der: Vec<u8>,
    /// The validity period, both ends inclusive (RFC 5280 §4.1.2.5).
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    /// SAN dNSName entries, lowercased (DNS names compare case-insensitively;
    /// RFC 5280 §4.2.1.6).
    pub dns_names: Vec<String>,
    /// SAN iPAddress entries (RFC 5280 §4.2.1.6).
    pub ip_addrs: Vec<IpAddr>,
    /// The subject and issuer distinguished names, RFC 4514 string form, for people.
    pub subject: String,
    pub issuer: String,
    /// SubjectPublicKeyInfo DER; compared with [`PrivateKey::spki_der`].
    pub spki_der: Vec<u8>,
    /// The authorityKeyIdentifier's keyIdentifier (RFC 5280 §4.2.1.1); also part of the
    /// ARI certificate identifier (RFC 9773 §4.1).
    pub authority_key_id: Option<Vec<u8>>,
}

impl CertInfo {
    /// Reads one DER certificate (RFC 5280 §4.1). Errors: [`X509Error::Der`] for bytes that
    /// are not one whole certificate (trailing bytes included).
    pub fn parse_der(der: &[u8]) -> Result<CertInfo, X509Error> {
        if der.is_empty() {
            return Err(X509Error::Der("empty input".into()));
        }
        let (rest, cert) =
            X509Certificate::from_der(der).map_err(|e| X509Error::Der(e.to_string()))?;
        if !rest.is_empty() {
            return Err(X509Error::Der(format!(
                "{} unexpected bytes after the certificate",
                rest.len()
            )));
        }

        let serial_der = cert.raw_serial().to_vec();
        let serial_hex = serial_to_hex(&serial_der);

        let validity = cert.validity();
        let not_before = unix_to_system_time(validity.not_before.timestamp());
        let not_after = unix_to_system_time(validity.not_after.timestamp());

        let mut dns_names = Vec::new();
        let mut ip_addrs = Vec::new();
        let san = cert
            .subject_alternative_name()
            .map_err(|e| X509Error::Der(format!("bad subjectAltName extension: {e}")))?;
        if let Some(san) = san {
            for name in &san.value.general_names {
                match name {
                    GeneralName::DNSName(n) => dns_names.push(n.to_ascii_lowercase()),
                    GeneralName::IPAddress(bytes) => {
                        if let Some(ip) = ip_from_bytes(bytes) {
                            ip_addrs.push(ip);
                        }
                    }
                    _ => {}
                }
            }
        }

        let mut authority_key_id = None;
        for ext in cert.iter_extensions() {
            if let ParsedExtension::AuthorityKeyIdentifier(aki) = ext.parsed_extension() {
                authority_key_id = aki.key_identifier.as_ref().map(|k| k.0.to_vec());
            }
        }

        Ok(CertInfo {
            der: der.to_vec(),
            serial_hex,
            serial_der,
            not_before,
            not_after,
            dns_names,
            ip_addrs,
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            spki_der: cert.public_key().raw.to_vec(),
            authority_key_id,
        })
    }

    /// True when every name is in the SANs. Comparison is literal: a wildcard SAN does not
    /// cover a concrete name, because renewd asks whether the certificate is the one the
    /// configuration describes, not whether a client would accept it.
    pub fn covers(&self, names: &[String]) -> bool {
        names.iter().all(|n| self.has_name(n))
    }

    /// The configured names the certificate lacks, in the order given: what a log line or an
    /// alert should quote when a deployed certificate no longer matches its configuration.
    pub fn missing_names(&self, names: &[String]) -> Vec<String> {
        names
            .iter()
            .filter(|n| !self.has_name(n))
            .cloned()
            .collect()
    }

    fn has_name(&self, name: &str) -> bool {
        match name.parse::<IpAddr>() {
            Ok(ip) => self.ip_addrs.contains(&ip),
            Err(_) => {
                let name = name.to_ascii_lowercase();
                self.dns_names.contains(&name)
            }
        }
    }

    /// notAfter − notBefore; zero for a certificate whose notAfter precedes its notBefore.
    pub fn lifetime(&self) -> Duration {
        self.not_after
            .duration_since(self.not_before)
            .unwrap_or(Duration::ZERO)
    }

    /// Whether `t` lies within the validity period; both bounds are inclusive, as in
    /// RFC 5280 §4.1.2.5.
    pub fn is_valid_at(&self, t: SystemTime) -> bool {
        self.not_before <= t && t <= self.not_after
    }
}

fn serial_to_hex(raw: &[u8]) -> String {
    let start = raw.iter().position(|b| *b != 0).unwrap_or(raw.len());
    let digits: String = raw[start..].iter().map(|b| format!("{b:02x}")).collect();
    if digits.is_empty() {
        "00".to_string()
    } else {
        digits
    }
}

fn unix_to_system_time(secs: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}

fn ip_from_bytes(b: &[u8]) -> Option<IpAddr> {
    match b.len() {
        4 => <[u8; 4]>::try_from(b).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(b).ok().map(IpAddr::from),
        _ => None,
    }
}

/// The PEM blocks renewd knows (certificates, keys, ...), in order; text between blocks and
/// blocks of other types are skipped, as OpenSSL does, so comments in a bundle are harmless.
fn pem_items(pem: &[u8]) -> Result<Vec<(SectionKind, Vec<u8>)>, X509Error> {
    <(SectionKind, Vec<u8>)>::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| X509Error::Pem(describe_pem_error(e)))
}

fn describe_pem_error(e: pem::Error) -> String {
    match e {
        pem::Error::MissingSectionEnd { end_marker } => format!(
            "a block has no END line (expected \"-----END{}-----\")",
            String::from_utf8_lossy(&end_marker)
        ),
        pem::Error::IllegalSectionStart { line } => format!(
            "bad BEGIN line {:?}",
            String::from_utf8_lossy(&line).trim_end()
        ),
        pem::Error::Base64Decode(msg) => format!("invalid base64 in a block: {msg}"),
        pem::Error::SectionTooLarge => "a block is larger than 256 MB".to_string(),
        other => other.to_string(),
    }
}

/// The DER of the first CERTIFICATE block of `pem`, decoded but not parsed; `None` when
/// there is none or the PEM is malformed.
pub(crate) fn first_pem_certificate(pem: &[u8]) -> Option<Vec<u8>> {
    pem_items(pem)
        .ok()?
        .into_iter()
        .find(|(kind, _)| *kind == SectionKind::Certificate)
        .map(|(_, der)| der)
}

/// Every CERTIFICATE block of a PEM bundle, in order; other blocks (keys) are ignored.
/// Each block must hold a parseable certificate, so a half-written file is caught here.
pub fn pem_certificates(pem: &[u8]) -> Result<Vec<Vec<u8>>, X509Error> {
    let mut certs = Vec::new();
    for (kind, der) in pem_items(pem)? {
        if kind == SectionKind::Certificate {
            let n = certs.len() + 1;
            match X509Certificate::from_der(&der) {
                Ok(([], _)) => certs.push(der),
                Ok((rest, _)) => {
                    return Err(X509Error::Der(format!(
                        "CERTIFICATE block {n}: {} unexpected bytes after the certificate",
                        rest.len()
                    )))
                }
                Err(e) => return Err(X509Error::Der(format!("CERTIFICATE block {n}: {e}"))),
            }
        }
    }
    if certs.is_empty() {
        return Err(X509Error::NoCertificate);
    }
    Ok(certs)
}

/// The common name of `der`'s issuer (the first CN attribute), `None` when it has none or
/// `der` is not a certificate. Used to pick a chain by its top issuer (RFC 8555 §7.4.2).
pub(crate) fn issuer_common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let cn = cert.issuer().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_string)
}

/// SHA-256 of `spki_der` (a DER SubjectPublicKeyInfo): the pin of HPKP (RFC 7469 §2.4,
/// base64 there) and of a DANE TLSA "3 1 1" record (RFC 6698 §2.1, hex there).
pub(crate) fn spki_sha256(spki_der: &[u8]) -> [u8; 32] {
    sha256(spki_der)
}

/// SHA-256 (FIPS 180-4) of `data`: the one digest of fingerprints, pins, labels and cache
/// names (aws-lc-rs, the crypto rustls uses here).
pub(crate) fn sha256(data: &[u8]) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data);
    let mut out = [0; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Checks that `cert` (DER) was issued by `issuer` (DER): the issuer named in `cert` is
/// `issuer`'s subject, and `cert`'s signature verifies with `issuer`'s public key.
///
/// This is the link check renewd applies between neighbours of the chain a CA sends; it is
/// not path validation to a trust anchor (renewd deploys what its CA sent, and the services
/// and their clients decide what they trust). Signatures are checked by x509-parser on
/// aws-lc-rs: ECDSA P-256/P-384, RSA PKCS#1 and PSS, Ed25519.
pub fn verify_issued_by(cert: &[u8], issuer: &[u8]) -> Result<(), X509Error> {
    let (_, cert) = X509Certificate::from_der(cert).map_err(|e| X509Error::Der(e.to_string()))?;
    let (_, issuer) =
        X509Certificate::from_der(issuer).map_err(|e| X509Error::Der(e.to_string()))?;
    if cert.issuer().as_raw() != issuer.subject().as_raw() {
        return Err(X509Error::NotIssuedBy(format!(
            "it names \"{}\" as its issuer, the next certificate is \"{}\"",
            cert.issuer(),
            issuer.subject()
        )));
    }
    cert.verify_signature(Some(issuer.public_key()))
        .map_err(|e| {
            X509Error::NotIssuedBy(format!(
                "its signature does not verify with the public key of \"{}\" ({e})",
                issuer.subject()
            ))
        })
}

/// The single private key block of a PEM text (PKCS#8 "PRIVATE KEY", SEC1 "EC PRIVATE KEY"
/// or PKCS#1 "RSA PRIVATE KEY"). More than one key is an error rather than a guess: a file
/// with two keys is not one renewd wrote, and picking one could deploy the wrong key.
pub fn pem_private_key(pem: &[u8]) -> Result<PrivateKey, X509Error> {
    let mut keys: Vec<PrivateKeyDer<'static>> = Vec::new();
    for (kind, der) in pem_items(pem)? {
        match kind {
            SectionKind::PrivateKey => keys.push(PrivatePkcs8KeyDer::from(der).into()),
            SectionKind::EcPrivateKey => keys.push(PrivateSec1KeyDer::from(der).into()),
            SectionKind::RsaPrivateKey => keys.push(PrivatePkcs1KeyDer::from(der).into()),
            _ => {}
        }
    }
    match keys.len() {
        0 => {
            let text = String::from_utf8_lossy(pem);
            if text.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----")
                || text.contains("Proc-Type: 4,ENCRYPTED")
            {
                Err(X509Error::EncryptedKey)
            } else {
                Err(X509Error::NoPrivateKey)
            }
        }
        1 => PrivateKey::from_der(&keys[0]),
        n => Err(X509Error::SeveralPrivateKeys(n)),
    }
}

/// A private key. Always held in PKCS#8 form, whatever form it was read in, so that
/// [`PrivateKey::to_pem`] writes one predictable format.
pub struct PrivateKey {
    pair: KeyPair,
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Only the public half: a key must never end up in a log line by way of `{:?}`.
        f.debug_struct("PrivateKey")
            .field("type", &self.describe())
            .finish_non_exhaustive()
    }
}

// DER encodings of the object identifiers needed to wrap SEC1 and PKCS#1 keys into PKCS#8.
const OID_RSA_ENCRYPTION: &[u8] = &[
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01,
];
const OID_EC_PUBLIC_KEY: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const OID_P384: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];
const OID_P521: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x23];
const DER_NULL: &[u8] = &[0x05, 0x00];

fn der_tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes
            .iter()
            .position(|b| *b != 0)
            .unwrap_or(bytes.len() - 1);
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

/// PKCS#8 PrivateKeyInfo around a PKCS#1 or SEC1 key (RFC 5208, RFC 5915 section 3).
fn wrap_pkcs8(algorithm: &[&[u8]], inner: &[u8]) -> Vec<u8> {
    let mut body = vec![0x02, 0x01, 0x00]; // version 0
    body.extend(der_tlv(0x30, &algorithm.concat()));
    body.extend(der_tlv(0x04, inner));
    der_tlv(0x30, &body)
}

impl PrivateKey {
    /// A fresh key of type `kt`. Errors: [`X509Error::KeyGeneration`].
    pub(crate) fn generate(kt: KeyType) -> Result<PrivateKey, X509Error> {
        let (kind, result) = match kt {
            KeyType::EcdsaP256 => ("ecdsa-p256", KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)),
            KeyType::EcdsaP384 => ("ecdsa-p384", KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384)),
            KeyType::Rsa2048 => (
                "rsa-2048",
                KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, RsaKeySize::_2048),
            ),
            KeyType::Rsa3072 => (
                "rsa-3072",
                KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, RsaKeySize::_3072),
            ),
            KeyType::Rsa4096 => (
                "rsa-4096",
                KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, RsaKeySize::_4096),
            ),
        };
        let pair = result.map_err(|e| X509Error::KeyGeneration {
            kind,
            reason: e.to_string(),
        })?;
        Ok(PrivateKey { pair })
    }

    fn from_der(key: &PrivateKeyDer<'_>) -> Result<PrivateKey, X509Error> {
        let pair = KeyPair::try_from(key).map_err(|e| {
            X509Error::Key(format!(
                "{e} (supported: ECDSA P-256, P-384, P-521 and RSA keys)"
            ))
        })?;
        let algorithm: Vec<&[u8]> = match key {
            PrivateKeyDer::Pkcs8(_) => return Ok(PrivateKey { pair }),
            PrivateKeyDer::Pkcs1(_) => vec![OID_RSA_ENCRYPTION, DER_NULL],
            PrivateKeyDer::Sec1(_) => {
                let alg = pair.algorithm();
                let curve = if alg == &PKCS_ECDSA_P256_SHA256 {
                    OID_P256
                } else if alg == &PKCS_ECDSA_P384_SHA384 {
                    OID_P384
                } else {
                    OID_P521
                };
                vec![OID_EC_PUBLIC_KEY, curve]
            }
            _ => return Err(X509Error::Key("unsupported private key encoding".into())),
        };
        let pkcs8 = wrap_pkcs8(&algorithm, key.secret_der());
        let wrapped = KeyPair::from_pkcs8_der_and_sign_algo(
            &PrivatePkcs8KeyDer::from(pkcs8),
            pair.algorithm(),
        )
        .map_err(|e| X509Error::Key(format!("cannot convert the key to PKCS#8: {e}")))?;
        if wrapped.der_bytes() != pair.der_bytes() {
            return Err(X509Error::Key(
                "the key changed when converted to PKCS#8".into(),
            ));
        }
        Ok(PrivateKey { pair: wrapped })
    }

    /// PKCS#8 PEM, the form every TLS server renewd feeds can read.
    pub(crate) fn to_pem(&self) -> String {
        self.pair.serialize_pem()
    }

    /// SubjectPublicKeyInfo DER. rcgen's raw public key for RSA is a bare RSAPublicKey, so
    /// this goes through the trait method that adds the AlgorithmIdentifier.
    pub(crate) fn spki_der(&self) -> Vec<u8> {
        self.pair.subject_public_key_info()
    }

    /// Whether `cert` was issued for this key. Falls back to comparing the public key bits
    /// when the SPKI bytes differ, so a CA that encodes the algorithm parameters differently
    /// (absent instead of NULL for RSA) does not make renewd believe its key is wrong.
    pub fn matches(&self, cert: &CertInfo) -> bool {
        let ours = self.spki_der();
        if ours == cert.spki_der {
            return true;
        }
        let (Ok((_, theirs)), Ok((_, ours))) = (
            SubjectPublicKeyInfo::from_der(&cert.spki_der),
            SubjectPublicKeyInfo::from_der(&ours),
        ) else {
            return false;
        };
        theirs.algorithm.algorithm == ours.algorithm.algorithm
            && theirs.subject_public_key.data == ours.subject_public_key.data
    }

    /// The configured key type this key corresponds to, so a change of `key_type` in the
    /// configuration can be noticed; `None` for keys renewd would not generate (P-521, odd
    /// RSA sizes).
    pub(crate) fn key_type(&self) -> Option<KeyType> {
        let alg = self.pair.algorithm();
        if alg == &PKCS_ECDSA_P256_SHA256 {
            return Some(KeyType::EcdsaP256);
        }
        if alg == &PKCS_ECDSA_P384_SHA384 {
            return Some(KeyType::EcdsaP384);
        }
        match self.rsa_bits()? {
            2048 => Some(KeyType::Rsa2048),
            3072 => Some(KeyType::Rsa3072),
            4096 => Some(KeyType::Rsa4096),
            _ => None,
        }
    }

    fn rsa_bits(&self) -> Option<usize> {
        let spki = self.spki_der();
        let (_, info) = SubjectPublicKeyInfo::from_der(&spki).ok()?;
        let PublicKey::RSA(rsa) = info.parsed().ok()? else {
            return None;
        };
        let start = rsa.modulus.iter().position(|b| *b != 0)?;
        let m = &rsa.modulus[start..];
        Some(m.len() * 8 - m[0].leading_zeros() as usize)
    }

    /// Human description for logs, e.g. "ecdsa-p256" or "rsa-2048".
    pub fn describe(&self) -> String {
        let alg = self.pair.algorithm();
        if alg == &PKCS_ECDSA_P256_SHA256 {
            "ecdsa-p256".into()
        } else if alg == &PKCS_ECDSA_P384_SHA384 {
            "ecdsa-p384".into()
        } else if let Some(bits) = self.rsa_bits() {
            format!("rsa-{bits}")
        } else {
            "ecdsa-p521".into()
        }
    }

    /// CSR (DER) with every name as a SAN (DNS or IP) and an empty subject: ACME CAs take the
    /// names from the SANs only, and a CN would just be one more place for them to disagree.
    #[cfg(test)]
    pub(crate) fn csr_der(&self, names: &[String]) -> Result<Vec<u8>, X509Error> {
        self.csr_der_with_cn(names, None)
    }

    /// [`PrivateKey::csr_der`] with `common_name` (one of `names`, at most 64 characters:
    /// RFC 5280 `ub-common-name`) as the subject's only attribute, for servers that take a
    /// client's identity from the subject CN (RFC 8555 §7.4 leaves the subject to the CA).
    pub(crate) fn csr_der_with_cn(
        &self,
        names: &[String],
        common_name: Option<&str>,
    ) -> Result<Vec<u8>, X509Error> {
        if names.is_empty() {
            return Err(X509Error::Csr("no names given".into()));
        }
        let mut params =
            CertificateParams::new(names.to_vec()).map_err(|e| X509Error::Csr(e.to_string()))?;
        params.distinguished_name = DistinguishedName::new();
        if let Some(cn) = common_name {
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, cn);
        }
        let csr = params
            .serialize_request(&self.pair)
            .map_err(|e| X509Error::Csr(e.to_string()))?;
        Ok(csr.der().to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::certification_request::X509CertificationRequest;

    fn all_key_types() -> Vec<(&'static str, KeyType)> {
        vec![
            ("ecdsa-p256", KeyType::EcdsaP256),
            ("ecdsa-p384", KeyType::EcdsaP384),
            ("rsa-2048", KeyType::Rsa2048),
            ("rsa-3072", KeyType::Rsa3072),
            ("rsa-4096", KeyType::Rsa4096),
        ]
    }

    fn self_signed(key: &PrivateKey, names: &[&str]) -> Vec<u8> {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let params = CertificateParams::new(names).expect("params");
        params
            .self_signed(&key.pair)
            .expect("self-signed")
            .der()
            .to_vec()
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn every_key_type_generates_and_matches_its_certificate() {
        for (label, kt) in all_key_types() {
            let key = PrivateKey::generate(kt).expect(label);
            let other = PrivateKey::generate(KeyType::EcdsaP256).expect("other");
            let cert = CertInfo::parse_der(&self_signed(&key, &["example.org"])).expect(label);
            assert_eq!(key.spki_der(), cert.spki_der, "{label}: SPKI bytes differ");
            assert!(key.matches(&cert), "{label}: own key does not match");
            assert!(!other.matches(&cert), "{label}: foreign key matches");
            assert_eq!(key.describe(), label);
            assert!(key.key_type().is_some(), "{label}");

            // A PKCS#8 round trip yields the same key.
            let pem = key.to_pem();
            assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"), "{label}");
            let back = pem_private_key(pem.as_bytes()).expect(label);
            assert!(back.matches(&cert), "{label}: reloaded key does not match");
        }
    }

    #[test]
    fn debug_does_not_print_key_material() {
        let key = PrivateKey::generate(KeyType::EcdsaP256).expect("key");
        let dbg = format!("{key:?}");
        assert_eq!(dbg, "PrivateKey { type: \"ecdsa-p256\", .. }");
    }

    // Made with `openssl ecparam -name prime256v1 -genkey -noout` (SEC1 with parameters).
    const SEC1_P256: &str = "-----BEGIN EC PRIVATE KEY-----
MHcCAQEEILkYS2Pz/J9AEA8r5wNmAI2Db9QFngcBoccuhU/KfoNUoAoGCCqGSM49
AwEHoUQDQgAEmTvBLsVeiRdjbVyhfTsf7g+p+d2NkFaXYbvJpmtYuT5O3tT1ux33
iPvgaJNzbpw8fSq5BrgrqJU4PPnRjNKARw==
-----END EC PRIVATE KEY-----
";

    #[test]
    fn sec1_and_pkcs1_keys_are_read_and_rewritten_as_pkcs8() {
        let key = pem_private_key(SEC1_P256.as_bytes()).expect("sec1");
        assert_eq!(key.describe(), "ecdsa-p256");
        let cert = CertInfo::parse_der(&self_signed(&key, &["a.example"])).expect("cert");
        let pem = key.to_pem();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        assert!(pem_private_key(pem.as_bytes())
            .expect("pkcs8")
            .matches(&cert));

        // PKCS#1: unwrap a generated PKCS#8 RSA key to its inner RSAPrivateKey.
        let rsa = PrivateKey::generate(KeyType::Rsa2048).expect("rsa");
        let pkcs8 = rsa.pair.serialize_der();
        let inner = pkcs8_inner(&pkcs8);
        let pkcs1_pem = pem_block("RSA PRIVATE KEY", inner);
        let back = pem_private_key(pkcs1_pem.as_bytes()).expect("pkcs1");
        assert_eq!(back.spki_der(), rsa.spki_der());
        assert_eq!(back.pair.serialize_der(), pkcs8);
    }

    fn pkcs8_inner(pkcs8: &[u8]) -> &[u8] {
        use x509_parser::der_parser::der::parse_der_sequence;
        let (_, seq) = parse_der_sequence(pkcs8).expect("pkcs8 sequence");
        let items = seq.as_sequence().expect("sequence");
        items[2].as_slice().expect("octet string")
    }

    /// PEM-encodes arbitrary (also deliberately broken) DER; the crate has no base64
    /// dependency of its own, and tests need to build blocks rcgen would refuse to make.
    pub(crate) fn pem_block(label: &str, der: &[u8]) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut b64 = String::new();
        for chunk in der.chunks(3) {
            let n = chunk.len();
            let v = (u32::from(chunk[0]) << 16)
                | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
                | u32::from(*chunk.get(2).unwrap_or(&0));
            for i in 0..4 {
                if i <= n {
                    b64.push(ALPHABET[((v >> (18 - 6 * i)) & 63) as usize] as char);
                } else {
                    b64.push('=');
                }
            }
        }
        let mut out = format!("-----BEGIN {label}-----\n");
        for line in b64.as_bytes().chunks(64) {
            out.push_str(std::str::from_utf8(line).expect("ascii"));
            out.push('\n');
        }
        out.push_str(&format!("-----END {label}-----\n"));
        out
    }

    #[test]
    fn covers_dns_case_wildcard_and_ip() {
        let key = PrivateKey::generate(KeyType::EcdsaP256).expect("key");
        let der = self_signed(
            &key,
            &[
                "Example.ORG",
                "*.wild.example.org",
                "192.0.2.7",
                "2001:db8::1",
            ],
        );
        let cert = CertInfo::parse_der(&der).expect("cert");
        assert_eq!(cert.dns_names, vec!["example.org", "*.wild.example.org"]);
        assert!(cert.covers(&strings(&["example.org", "EXAMPLE.org"])));
        assert!(cert.covers(&strings(&["*.wild.example.org"])));
        assert!(!cert.covers(&strings(&["a.wild.example.org"])));
        assert!(!cert.covers(&strings(&["*.example.org"])));
        assert!(cert.covers(&strings(&["192.0.2.7", "2001:db8:0::1"])));
        assert!(!cert.covers(&strings(&["192.0.2.8"])));
        // An IP address is not matched against dNSName entries.
        assert!(!cert.covers(&strings(&["example.org", "10.0.0.1"])));
        assert_eq!(
            cert.missing_names(&strings(&["example.org", "www.example.org", "10.0.0.1"])),
            strings(&["www.example.org", "10.0.0.1"])
        );
        assert!(cert.covers(&[]));
    }

    // Made with: openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes
    //   -keyout /dev/null -subj /CN=serial.test -set_serial 0x00f1e2d3c4b5a69788 -days 30
    //   -addext subjectAltName=DNS:serial.test
    // The serial's top bit is set, so DER pads it with a zero byte that serial_hex drops.
    const KNOWN_CERT: &str = "-----BEGIN CERTIFICATE-----
MIIBjTCCATSgAwIBAgIJAPHi08S1ppeIMAoGCCqGSM49BAMCMBYxFDASBgNVBAMM
C3NlcmlhbC50ZXN0MB4XDTI2MTEyMzA5MjkwMVoXDTI2MTIyMzA5MjkwMVowFjEU
MBIGA1UEAwwLc2VyaWFsLnRlc3QwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAATf
kPLttcpo+7TyXez969uODi5TGEvpAlw41Gnqjnl7ok4ApK6JQMRx1QHpggHG/lTm
0xo3ATIkZuwBIW4n5Zz+o2swaTAdBgNVHQ4EFgQUe7/2CVxxCHWACV1OmxU3eP5f
Wo0wHwYDVR0jBBgwFoAUe7/2CVxxCHWACV1OmxU3eP5fWo0wDwYDVR0TAQH/BAUw
AwEB/zAWBgNVHREEDzANggtzZXJpYWwudGVzdDAKBggqhkjOPQQDAgNHADBEAiA5
R2yAw6sfPkrTFFBdZfTO9lP31Uwrzc/T9hxElqWuSQIgVjZHWvAd953QOFwSbsQN
Lj8KdcZMGUWCajjpi5VJOVU=
-----END CERTIFICATE-----
";

    #[test]
    fn serial_and_fields_of_a_known_certificate() {
        let ders = pem_certificates(KNOWN_CERT.as_bytes()).expect("pem");
        assert_eq!(ders.len(), 1);
        let cert = CertInfo::parse_der(&ders[0]).expect("der");
        assert_eq!(cert.serial_hex, "f1e2d3c4b5a69788");
        assert_eq!(
            cert.serial_der,
            vec![0x00, 0xf1, 0xe2, 0xd3, 0xc4, 0xb5, 0xa6, 0x97, 0x88]
        );
        assert_eq!(cert.subject, "CN=serial.test");
        assert_eq!(cert.issuer, "CN=serial.test");
        assert_eq!(cert.dns_names, vec!["serial.test"]);
        assert_eq!(cert.lifetime(), Duration::from_secs(30 * 86400));
        assert!(cert.is_valid_at(cert.not_before));
        assert!(cert.is_valid_at(cert.not_after));
        assert!(!cert.is_valid_at(cert.not_after + Duration::from_secs(1)));
        assert!(!cert.is_valid_at(cert.not_before - Duration::from_secs(1)));
        // openssl adds an authority key identifier equal to the subject key identifier.
        assert_eq!(cert.authority_key_id.as_ref().map(Vec::len), Some(20));
    }

    #[test]
    fn bundles_keep_order_and_skip_keys() {
        let a = PrivateKey::generate(KeyType::EcdsaP256).expect("a");
        let b = PrivateKey::generate(KeyType::EcdsaP256).expect("b");
        let ca = self_signed(&a, &["a.example"]);
        let cb = self_signed(&b, &["b.example"]);
        let bundle = format!(
            "{}{}{}",
            a.to_pem(),
            pem_block("CERTIFICATE", &ca),
            pem_block("CERTIFICATE", &cb)
        );
        assert_eq!(
            pem_certificates(bundle.as_bytes()).expect("bundle"),
            vec![ca, cb]
        );
        // The combined file holds exactly one key, which is found.
        assert!(pem_private_key(bundle.as_bytes()).is_ok());
        let two_keys = format!("{}{}", a.to_pem(), b.to_pem());
        assert!(matches!(
            pem_private_key(two_keys.as_bytes()),
            Err(X509Error::SeveralPrivateKeys(2))
        ));
    }

    #[test]
    fn garbage_truncated_and_empty_inputs_are_errors() {
        assert!(matches!(
            pem_certificates(b""),
            Err(X509Error::NoCertificate)
        ));
        assert!(matches!(
            pem_certificates(b"hello world\n\x00\xff\xfe"),
            Err(X509Error::NoCertificate)
        ));
        assert!(matches!(
            pem_certificates(
                b"-----BEGIN CERTIFICATE-----\n!!!not base64!!!\n-----END CERTIFICATE-----\n"
            ),
            Err(X509Error::Pem(_))
        ));
        assert!(matches!(
            pem_certificates(b"-----BEGIN CERTIFICATE-----\nMIIB\n"),
            Err(X509Error::Pem(_))
        ));
        // Valid base64 that is not a certificate.
        assert!(matches!(
            pem_certificates(b"-----BEGIN CERTIFICATE-----\naGVsbG8=\n-----END CERTIFICATE-----\n"),
            Err(X509Error::Der(_))
        ));

        let key = PrivateKey::generate(KeyType::EcdsaP256).expect("key");
        let der = self_signed(&key, &["t.example"]);
        for cut in [0, 1, 2, 10, der.len() / 2, der.len() - 1] {
            assert!(
                CertInfo::parse_der(&der[..cut]).is_err(),
                "truncated to {cut} bytes"
            );
            let pem = pem_block("CERTIFICATE", &der[..cut]);
            assert!(pem_certificates(pem.as_bytes()).is_err(), "cut {cut}");
        }
        let mut trailing = der.clone();
        trailing.push(0);
        assert!(CertInfo::parse_der(&trailing).is_err());

        assert!(matches!(pem_private_key(b""), Err(X509Error::NoPrivateKey)));
        assert!(matches!(
            pem_private_key(b"-----BEGIN ENCRYPTED PRIVATE KEY-----\naGVsbG8=\n-----END ENCRYPTED PRIVATE KEY-----\n"),
            Err(X509Error::EncryptedKey)
        ));
        assert!(matches!(
            pem_private_key(b"-----BEGIN PRIVATE KEY-----\naGVsbG8=\n-----END PRIVATE KEY-----\n"),
            Err(X509Error::Key(_))
        ));
        let pem = key.to_pem();
        assert!(pem_private_key(&pem.as_bytes()[..pem.len() / 2]).is_err());
    }

    /// A CA (key, issuer) named `cn`, and its self-signed certificate's DER.
    fn test_ca(cn: &str) -> (rcgen::Issuer<'static, KeyPair>, Vec<u8>) {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("ca key");
        let mut params = CertificateParams::default();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let der = params.self_signed(&key).expect("ca cert").der().to_vec();
        (rcgen::Issuer::new(params, key), der)
    }

    fn leaf_by(issuer: &rcgen::Issuer<'static, KeyPair>) -> Vec<u8> {
        let key = PrivateKey::generate(KeyType::EcdsaP256).expect("leaf key");
        CertificateParams::new(strings(&["leaf.example"]))
            .expect("params")
            .signed_by(&key.pair, issuer)
            .expect("sign")
            .der()
            .to_vec()
    }

    #[test]
    fn issued_by_accepts_the_signer_and_refuses_others() {
        let (ca, ca_der) = test_ca("Test CA");
        let (other, other_der) = test_ca("Other CA");
        let leaf = leaf_by(&ca);
        verify_issued_by(&leaf, &ca_der).expect("signed by ca");
        verify_issued_by(&ca_der, &ca_der).expect("self-signed root");

        // Another CA entirely: names differ.
        let err = verify_issued_by(&leaf, &other_der).unwrap_err().to_string();
        assert!(err.contains("names \"CN=Test CA\" as its issuer"), "{err}");

        // Same name, another key: the name matches but the signature does not verify.
        let (impostor, impostor_der) = test_ca("Test CA");
        drop(impostor);
        let err = verify_issued_by(&leaf, &impostor_der)
            .unwrap_err()
            .to_string();
        assert!(err.contains("signature does not verify"), "{err}");

        // A flipped bit in the signature.
        let mut tampered = leaf.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(verify_issued_by(&tampered, &ca_der).is_err());
        // Garbage is an error, not a panic.
        assert!(verify_issued_by(b"junk", &ca_der).is_err());
        drop(other);
    }

    #[test]
    fn issued_by_works_for_rsa_signers() {
        let key = KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, RsaKeySize::_2048).expect("rsa");
        let mut params = CertificateParams::default();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "RSA CA");
        let ca_der = params.self_signed(&key).expect("ca").der().to_vec();
        let issuer = rcgen::Issuer::new(params, key);
        verify_issued_by(&leaf_by(&issuer), &ca_der).expect("rsa-signed leaf");
    }

    #[test]
    fn csr_carries_every_name_and_no_subject() {
        let key = PrivateKey::generate(KeyType::EcdsaP384).expect("key");
        let names = strings(&["example.org", "*.example.org", "192.0.2.1", "::1"]);
        let der = key.csr_der(&names).expect("csr");
        let (rest, csr) = X509CertificationRequest::from_der(&der).expect("parse csr");
        assert!(rest.is_empty());
        let info = &csr.certification_request_info;
        assert_eq!(info.subject.iter_attributes().count(), 0);
        assert_eq!(info.subject_pki.raw, key.spki_der().as_slice());
        let mut dns = Vec::new();
        let mut ips = Vec::new();
        for ext in csr.requested_extensions().into_iter().flatten() {
            if let ParsedExtension::SubjectAlternativeName(san) = ext {
                for n in &san.general_names {
                    match n {
                        GeneralName::DNSName(d) => dns.push(d.to_string()),
                        GeneralName::IPAddress(b) => ips.push(ip_from_bytes(b).expect("ip")),
                        _ => {}
                    }
                }
            }
        }
        assert_eq!(dns, strings(&["example.org", "*.example.org"]));
        assert_eq!(
            ips,
            vec![
                "192.0.2.1".parse::<IpAddr>().expect("v4"),
                "::1".parse::<IpAddr>().expect("v6")
            ]
        );
        assert!(key.csr_der(&[]).is_err());
    }
}

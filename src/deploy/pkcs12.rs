//! The `pkcs12` file kind: the private key, the leaf and the intermediates in one PKCS#12
//! archive (RFC 7292), for Java keystores and other software that reads no PEM.
//!
//! The archive is encrypted the modern way: PBES2 (RFC 8018 §6.2) with PBKDF2-HMAC-SHA256
//! and AES-256-CBC for the key and the certificates, and an HMAC-SHA256 integrity MAC
//! (RFC 7292 §5), [`ITERATIONS`] rounds each — what OpenSSL 3 writes by default, read by
//! OpenSSL 1.1.1+, Java 8u301+/11.0.12+ keytool and .NET. It is built before anything is
//! staged and then staged like every other file of the set (key mode, journal, rollback).
//!
//! The password comes from `pkcs12_password_file` (or the systemd credential of that name):
//! the file's first line, without its line ending, at most
//! [`crate::fsutil::caps::SECRET`] bytes read. It is never logged.

use std::path::{Path, PathBuf};

use p12_keystore::{
    Certificate, EncryptionAlgorithm, KeyStore, KeyStoreEntry, MacAlgorithm, PrivateKey,
    PrivateKeyChain,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer};
use sha2::Digest;

use super::Material;

/// PBKDF2 and MAC key-derivation rounds.
const ITERATIONS: u32 = 10_000;

/// Why the PKCS#12 archive of a certificate could not be made.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Pkcs12Error {
    #[error(
        "cannot read `pkcs12_password_file` {}: {reason}; the PKCS#12 file is not written \
         without its password",
        path.display()
    )]
    Password { path: PathBuf, reason: String },
    #[error("`pkcs12_password_file` {} is empty: write the password on its first line", .0.display())]
    EmptyPassword(PathBuf),
    #[error("`pkcs12_password_file` {} is not UTF-8 text", .0.display())]
    NotText(PathBuf),
    #[error("cannot build the PKCS#12 archive: {0}")]
    Encode(String),
}

/// A PKCS#12 password; its `Debug` shows nothing of it.
pub(crate) struct Password(String);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// Reads the password from `path`: its first line, without `\n` or `\r\n`.
pub(crate) fn read_password(path: &Path) -> Result<Password, Pkcs12Error> {
    let bytes = crate::fsutil::read_regular(
        path,
        crate::fsutil::caps::SECRET,
        crate::fsutil::Follow::Yes,
    )
    .map_err(|e| Pkcs12Error::Password {
        path: path.to_path_buf(),
        reason: e.reason().to_string(),
    })?;
    let text = String::from_utf8(bytes).map_err(|_| Pkcs12Error::NotText(path.to_path_buf()))?;
    let line = text.lines().next().unwrap_or_default();
    if line.is_empty() {
        return Err(Pkcs12Error::EmptyPassword(path.to_path_buf()));
    }
    Ok(Password(line.to_string()))
}

/// The PKCS#12 archive (DER) of `m`'s key and chain, the key's friendly name `alias`
/// (the certificate's name), encrypted under `password`.
pub(crate) fn encode(
    m: &Material,
    alias: &str,
    password: &Password,
) -> Result<Vec<u8>, Pkcs12Error> {
    let encode_err =
        |what: &str, e: &dyn std::fmt::Display| Pkcs12Error::Encode(format!("{what}: {e}"));
    let key_der = PrivatePkcs8KeyDer::from_pem_slice(m.key_pem.as_bytes())
        .map_err(|e| encode_err("the private key", &e))?;
    let key = PrivateKey::from_der(key_der.secret_pkcs8_der())
        .map_err(|e| encode_err("the private key", &e))?;
    let mut certs = Vec::with_capacity(m.chain_pem.len());
    for block in &m.chain_pem {
        let der = CertificateDer::from_pem_slice(block.as_bytes())
            .map_err(|e| encode_err("a certificate", &e))?;
        certs.push(Certificate::from_der(&der).map_err(|e| encode_err("a certificate", &e))?);
    }
    let Some(leaf) = certs.first() else {
        return Err(Pkcs12Error::Encode("no certificate".into()));
    };
    // The bag attribute tying the key to its certificate (RFC 7292 §4.2): any octets; a
    // digest of the leaf, as OpenSSL uses one of the certificate.
    let local_key_id = sha2::Sha256::digest(leaf.as_der()).to_vec();
    let mut store = KeyStore::new();
    store.add_entry(
        alias,
        KeyStoreEntry::PrivateKeyChain(PrivateKeyChain::new(local_key_id, key, certs)),
    );
    store
        .writer(&password.0)
        .encryption_algorithm(EncryptionAlgorithm::PbeWithHmacSha256AndAes256)
        .encryption_iterations(ITERATIONS)
        .mac_algorithm(MacAlgorithm::HmacSha256)
        .mac_iterations(ITERATIONS)
        .write()
        .map_err(|e| encode_err("encoding", &e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::KeyType;

    fn material() -> (Material, Vec<u8>) {
        let key = crate::x509::PrivateKey::generate(KeyType::EcdsaP256).expect("key");
        let pair = rcgen::KeyPair::from_pem(&key.to_pem()).expect("pair");
        let params = rcgen::CertificateParams::new(vec!["p12.test".into()]).expect("params");
        let cert = params.self_signed(&pair).expect("cert");
        let m = Material {
            key_pem: key.to_pem(),
            chain_pem: vec![cert.pem()],
            pkcs12: None,
        };
        (m, cert.der().to_vec())
    }

    #[test]
    fn the_archive_opens_with_its_password_only_and_holds_key_and_chain() {
        let (m, leaf) = material();
        let der = encode(&m, "www", &Password("s3cret".into())).expect("encode");
        let store = p12_keystore::KeyStore::from_pkcs12(
            &der,
            "s3cret",
            p12_keystore::Pkcs12ImportPolicy::Relaxed,
        )
        .expect("opens");
        let (alias, chain) = store.private_key_chain().expect("a key chain");
        assert_eq!(alias, "www");
        assert_eq!(chain.certs()[0].as_der(), leaf.as_slice());
        assert!(p12_keystore::KeyStore::from_pkcs12(
            &der,
            "wrong",
            p12_keystore::Pkcs12ImportPolicy::Relaxed
        )
        .is_err());
    }

    #[test]
    fn the_password_is_the_first_line_and_must_not_be_empty() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("p12.pass");
        std::fs::write(&path, "pa ss\r\nignored\n").expect("write");
        assert_eq!(read_password(&path).expect("password").0, "pa ss");
        std::fs::write(&path, "\n").expect("write");
        assert!(matches!(
            read_password(&path),
            Err(Pkcs12Error::EmptyPassword(_))
        ));
        let missing = dir.path().join("missing");
        let err = read_password(&missing).expect_err("missing");
        assert!(err.to_string().contains("missing"), "{err}");
    }
}

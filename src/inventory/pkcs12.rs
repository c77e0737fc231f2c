//! PKCS#12 bundles (RFC 7292: `.p12`, `.pfx`, Java keystores in PKCS#12 form) found by
//! discovery: every certificate inside, the one paired with the bundle's private key marked
//! as its leaf.
//!
//! A bundle is opened with the password from the first `[discovery]
//! pkcs12_password_files` entry whose glob matches its path, else with the empty password
//! (what `openssl pkcs12 -export -passout pass:` writes, and what a bundle without
//! integrity check or encryption needs). A bundle that cannot be opened is an error naming
//! why — a missing password file, a wrong password, a damaged file — never skipped.
//!
//! Private keys inside are decrypted by the PKCS#12 reader as a side effect of reading the
//! bundle; renewd only compares their `localKeyId` (RFC 7292 §4.2) with the certificates'
//! and drops them. They are never logged or stored.
//!
//! Before that, the key-derivation work the bundle asks for is added up from its DER and
//! a bundle asking for too much is refused unopened ([`super::pkcs12_budget`]): bundles
//! under the discovery paths may be written by anyone who can write there.

use std::path::{Path, PathBuf};

use crate::config::Pkcs12PasswordFile;
use crate::fsutil::{self, Follow, ReadError};
use crate::x509::CertInfo;

/// Largest password file read, in bytes.
const MAX_PASSWORD_FILE: u64 = 4096;

/// One certificate of a bundle.
#[derive(Debug, Clone)]
pub(crate) struct BundleCert {
    pub(crate) info: CertInfo,
    /// The bundle's end-entity certificate: the one whose `localKeyId` matches the private
    /// key's, or (no key IDs) the one that issued no other certificate of the bundle.
    pub(crate) leaf: bool,
}

/// Why a PKCS#12 bundle gave no certificates. The caller prefixes the bundle's path.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Pkcs12Error {
    /// Its integrity check (MAC, RFC 7292 §4) fails with the empty password.
    #[error(
        "PKCS#12 bundle protected by a password: name its password file in [discovery] \
         pkcs12_password_files"
    )]
    NeedsPassword,
    /// Its integrity check fails with the password from `file`.
    #[error("wrong PKCS#12 password (from {}) or a damaged bundle", .file.display())]
    WrongPassword { file: PathBuf },
    /// The password file named for it cannot be read.
    #[error("cannot read its PKCS#12 password file: {0}")]
    PasswordFile(#[source] ReadError),
    /// Not DER PKCS#12, an encryption this reader does not support, or contents that do
    /// not decrypt (a wrong password for a bundle without integrity check).
    #[error("not a PKCS#12 bundle renewd can read ({0})")]
    Unreadable(#[source] p12_keystore::error::Error),
    /// Refused before any key derivation: too large, too costly to open, or a scheme
    /// renewd does not spend CPU or memory on.
    #[error("PKCS#12 bundle not opened: {0}")]
    Refused(#[from] super::pkcs12_budget::WorkRefused),
    /// Opened, but holds no certificate.
    #[error("PKCS#12 bundle holds no certificate")]
    NoCertificate,
    /// A certificate inside does not parse (RFC 5280).
    #[error("certificate {index} of the PKCS#12 bundle does not parse: {source}")]
    BadCertificate {
        index: usize,
        #[source]
        source: crate::x509::X509Error,
    },
}

/// Whether `head`, a file's first bytes, looks like a DER PFX (RFC 7292 §4): a SEQUENCE
/// (definite or indefinite length) whose first element is `INTEGER 3`.
pub(crate) fn sniff(head: &[u8]) -> bool {
    if head.first() != Some(&0x30) {
        return false;
    }
    let inner = match head.get(1) {
        Some(n) if *n <= 0x80 => 2,
        Some(n @ 0x81..=0x84) => 2 + usize::from(n - 0x80),
        _ => return false,
    };
    head.get(inner..inner + 3) == Some(&[0x02, 0x01, 0x03][..])
}

/// Whether the file name says PKCS#12 (`.p12`, `.pfx`, any case).
pub(crate) fn named_like(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("p12") || e.eq_ignore_ascii_case("pfx"))
}

/// Every certificate of the bundle `der` read from `path`, in bundle order, opened with
/// the password `passwords` gives for `path` (see the module doc).
pub(crate) fn read_bundle(
    der: &[u8],
    path: &Path,
    passwords: &[Pkcs12PasswordFile],
) -> Result<Vec<BundleCert>, Pkcs12Error> {
    super::pkcs12_budget::check(der)?;
    let from = passwords.iter().find(|p| p.bundles.is_match(path));
    let password = match from {
        Some(p) => read_password(&p.password_file)?,
        None => String::new(),
    };
    let archive = match p12_keystore::Pkcs12Archive::from_pkcs12(der, &password) {
        Ok(a) => a,
        Err(p12_keystore::error::Error::MacError(_)) => {
            return Err(match from {
                Some(p) => Pkcs12Error::WrongPassword {
                    file: p.password_file.clone(),
                },
                None => Pkcs12Error::NeedsPassword,
            })
        }
        Err(e) => return Err(Pkcs12Error::Unreadable(e)),
    };
    let key_ids: Vec<&[u8]> = archive
        .keys
        .iter()
        .filter_map(|k| k.local_key_id.as_ref().map(|id| id.0.as_slice()))
        .collect();
    let mut certs = Vec::with_capacity(archive.certs.len());
    for (index, bag) in archive.certs.iter().enumerate() {
        let info = CertInfo::parse_der(bag.cert.as_der())
            .map_err(|source| Pkcs12Error::BadCertificate { index, source })?;
        let leaf = bag
            .local_key_id
            .as_deref()
            .is_some_and(|id| key_ids.contains(&id));
        certs.push(BundleCert { info, leaf });
    }
    if certs.is_empty() {
        return Err(Pkcs12Error::NoCertificate);
    }
    if !certs.iter().any(|c| c.leaf) {
        mark_end_of_chain(&mut certs);
    }
    Ok(certs)
}

/// Without key IDs: the leaf is the one certificate whose subject issued no other
/// certificate of the bundle (self-signed ones aside), if exactly one is.
fn mark_end_of_chain(certs: &mut [BundleCert]) {
    let issuers: Vec<String> = certs
        .iter()
        .filter(|c| c.info.subject != c.info.issuer)
        .map(|c| c.info.issuer.clone())
        .collect();
    let ends: Vec<usize> = (0..certs.len())
        .filter(|&i| !issuers.contains(&certs[i].info.subject))
        .collect();
    if let [only] = ends[..] {
        certs[only].leaf = true;
    }
}

/// The password in `file`: its content as UTF-8, one trailing `\n` or `\r\n` removed.
fn read_password(file: &Path) -> Result<String, Pkcs12Error> {
    let text = fsutil::read_regular_string(file, MAX_PASSWORD_FILE, Follow::Yes)
        .map_err(Pkcs12Error::PasswordFile)?;
    let trimmed = text
        .strip_suffix("\r\n")
        .or_else(|| text.strip_suffix('\n'))
        .unwrap_or(&text);
    Ok(trimmed.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffing_knows_a_pfx_from_a_certificate() {
        // PFX: SEQUENCE { INTEGER 3, ...
        assert!(sniff(&[0x30, 0x82, 0x0a, 0x10, 0x02, 0x01, 0x03, 0x30]));
        assert!(sniff(&[0x30, 0x80, 0x02, 0x01, 0x03, 0x30]));
        assert!(sniff(&[0x30, 0x45, 0x02, 0x01, 0x03, 0x30]));
        // A certificate: SEQUENCE { SEQUENCE ...; a PKCS#8 key: SEQUENCE { INTEGER 0.
        assert!(!sniff(&[0x30, 0x82, 0x01, 0x0a, 0x30, 0x81, 0xf0]));
        assert!(!sniff(&[0x30, 0x81, 0x87, 0x02, 0x01, 0x00, 0x30]));
        assert!(!sniff(b"-----BEGIN CERTIFICATE-----"));
        assert!(!sniff(&[0x30]));
        assert!(named_like(Path::new("/a/b.PFX")) && named_like(Path::new("/a/b.p12")));
        assert!(!named_like(Path::new("/a/p12")));
    }

    #[test]
    fn a_bundle_written_by_the_reader_crate_is_read_back_with_its_leaf() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["bundle.test".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let chain = p12_keystore::PrivateKeyChain::new(
            b"id-1".to_vec(),
            p12_keystore::PrivateKey::from_der(&key.serialize_der()).unwrap(),
            [p12_keystore::Certificate::from_der(cert.der()).unwrap()],
        );
        let mut store = p12_keystore::KeyStore::new();
        store.add_entry("a", p12_keystore::KeyStoreEntry::PrivateKeyChain(chain));
        let der = store.writer("s3cret").write().unwrap();
        assert!(sniff(&der));
        let path = Path::new("/srv/x.p12");
        assert!(matches!(
            read_bundle(&der, path, &[]),
            Err(Pkcs12Error::NeedsPassword)
        ));
        let dir = tempfile::tempdir().unwrap();
        let pass = dir.path().join("pass");
        std::fs::write(&pass, "s3cret\n").unwrap();
        let entry = |glob: &str| Pkcs12PasswordFile {
            bundles: crate::config::PathGlob::new(glob).unwrap(),
            password_file: pass.clone(),
            location: crate::config::Location::new("/t.toml", 1, 1),
        };
        let certs = read_bundle(&der, path, &[entry("/srv/*.p12")]).unwrap();
        assert_eq!(certs.len(), 1);
        assert!(certs[0].leaf);
        assert_eq!(certs[0].info.dns_names, ["bundle.test"]);
        std::fs::write(&pass, "wrong").unwrap();
        let err = read_bundle(&der, path, &[entry("/srv/**")]).unwrap_err();
        assert!(err.to_string().contains("wrong PKCS#12 password"), "{err}");
        let err = read_bundle(b"\x30\x03\x02\x01\x03", path, &[]).unwrap_err();
        assert!(matches!(err, Pkcs12Error::Unreadable(_)), "{err}");
    }

    /// `openssl pkcs12 -export` of a fresh self-signed leaf with `args`, password "pw".
    fn openssl_bundle(dir: &Path, name: &str, args: &[&str]) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["p12.test".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let pem = dir.join(format!("{name}.pem"));
        std::fs::write(&pem, format!("{}{}", key.serialize_pem(), cert.pem())).unwrap();
        let out = dir.join(format!("{name}.p12"));
        let status = std::process::Command::new("openssl")
            .args(["pkcs12", "-export", "-passout", "pass:pw", "-in"])
            .arg(&pem)
            .arg("-out")
            .arg(&out)
            .args(args)
            .status()
            .expect("run openssl");
        assert!(status.success(), "openssl pkcs12 -export {args:?}");
        std::fs::read(out).unwrap()
    }

    #[test]
    fn a_bundle_asking_for_too_much_work_is_refused_before_any_of_it() {
        let dir = tempfile::tempdir().unwrap();
        let pass = dir.path().join("pass");
        std::fs::write(&pass, "pw\n").unwrap();
        let passwords = [Pkcs12PasswordFile {
            bundles: crate::config::PathGlob::new("/srv/**").unwrap(),
            password_file: pass.clone(),
            location: crate::config::Location::new("/t.toml", 1, 1),
        }];
        let path = Path::new("/srv/app.p12");
        let normal = openssl_bundle(dir.path(), "normal", &[]);
        let certs = read_bundle(&normal, path, &passwords).unwrap();
        assert_eq!(certs[0].info.dns_names, ["p12.test"]);
        // Key, certificates and MAC at the reader's maximum of 1,000,000 each: 3,000,000.
        let costly = openssl_bundle(dir.path(), "costly", &["-iter", "1000000", "-maciter"]);
        let started = std::time::Instant::now();
        let err = read_bundle(&costly, path, &passwords).unwrap_err();
        assert!(
            started.elapsed() < std::time::Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        assert!(matches!(err, Pkcs12Error::Refused(_)), "{err}");
        assert!(
            err.to_string()
                .contains("not opened: it asks for 3000000 key-derivation iterations"),
            "{err}"
        );
    }
}

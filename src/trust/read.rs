//! Reading trust anchors: a bundle file (PEM blocks or one DER certificate) or a directory
//! of them, each anchor parsed once into the facts the audit needs. A bad PEM block is
//! reported with its file, block number and line and the rest of the file is still read;
//! files are read through `fsutil::read_regular` with the trust-roots size cap.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use x509_parser::objects::{oid2sn, oid_registry};
use x509_parser::prelude::{FromDer, ParsedExtension, X509Certificate};
use x509_parser::public_key::PublicKey;

use crate::fsutil::{self, Follow};
use crate::x509::sha256;

/// Most files read from one directory; a directory with more is read up to this many and
/// the rest reported (the system directory holds about 300 names).
pub(crate) const MAX_DIRECTORY_FILES: usize = 10_000;

/// Most anchors one audit reads (the system stores hold about 300); beyond, the rest of the
/// paths is not read and the audit says so. Bounds the memory of a directory of many large
/// bundles.
pub(crate) const MAX_ANCHORS: usize = 10_000;

/// One certificate read from a trust store (or from the inventory's chains, for `stale`).
#[derive(Debug, Clone)]
pub(crate) struct Anchor {
    /// The file it was read from (for a directory source, the file inside it).
    pub(crate) file: PathBuf,
    /// Its 1-based number among the PEM blocks of the file (1 for a DER file).
    pub(crate) block: usize,
    /// The DER encoding (RFC 5280 §4.1).
    pub(crate) der: Vec<u8>,
    /// SHA-256 of `der`.
    pub(crate) fingerprint: [u8; 32],
    /// The subject and issuer as RFC 4514 strings, and their DER encodings.
    pub(crate) subject: String,
    pub(crate) issuer: String,
    pub(crate) subject_raw: Vec<u8>,
    pub(crate) issuer_raw: Vec<u8>,
    /// Unix seconds.
    pub(crate) not_before: i64,
    pub(crate) not_after: i64,
    /// `rsa`, `ecdsa`, `ed25519`, `ed448`, `dsa`, or the algorithm's OID.
    pub(crate) key_type: String,
    /// The key's size in bits (RSA modulus, EC field, Ed25519 256); `None` when unknown.
    pub(crate) key_bits: Option<u32>,
    /// For ECDSA: `P-256`, `P-384`, `P-521`, else the curve's OID.
    pub(crate) curve: Option<String>,
    /// The signature algorithm's short name (`sha256WithRSAEncryption`) or OID.
    pub(crate) signature_algorithm: String,
    /// Whether that algorithm hashes with MD2, MD4, MD5 or SHA-1.
    pub(crate) weak_signature: bool,
    /// The SubjectPublicKeyInfo DER.
    pub(crate) spki: Vec<u8>,
    /// Subject and authority key identifiers (RFC 5280 §4.2.1.1–2).
    pub(crate) ski: Option<Vec<u8>>,
    pub(crate) aki: Option<Vec<u8>>,
}

/// What one file held: its anchors and what could not be read in it.
#[derive(Debug, Clone, Default)]
pub(crate) struct FileAnchors {
    pub(crate) anchors: Vec<Arc<Anchor>>,
    /// `PATH: block N (line L): why`, one per bad block.
    pub(crate) errors: Vec<String>,
}

/// Why a file was not read at all.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadAnchorsError {
    #[error(transparent)]
    Read(#[from] fsutil::ReadError),
    /// Neither a PEM CERTIFICATE block nor one DER certificate; `why` says what it is
    /// instead (empty, binary, text, an END line without its BEGIN).
    #[error("{path}: holds no certificate: {why}")]
    NoCertificate { path: PathBuf, why: String },
    /// PEM blocks, none of them a certificate (keys, CRLs): another kind of file, which a
    /// directory may hold beside its certificates.
    #[error("{path}: holds no certificate, only PEM {labels}")]
    OtherBlocks { path: PathBuf, labels: String },
    /// A PKCS#7 (CMS SignedData, RFC 5652 §5) bundle, as `.p7b`/`.p7c` files hold.
    #[error(
        "{0}: is a PKCS#7 bundle, which is not read as a trust store; extract its \
         certificates with `openssl pkcs7 -print_certs -in FILE -out FILE.pem`"
    )]
    Pkcs7(PathBuf),
}

/// Longest subject or issuer kept for display, in bytes (a name can be 60,000 characters).
pub(crate) const MAX_NAME: usize = 1_024;

/// The content octets of the OID id-signedData (1.2.840.113549.1.7.2, RFC 5652 §5.1), as
/// they open a DER PKCS#7 bundle.
const SIGNED_DATA_OID: &[u8] = &[
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02,
];

pub(crate) use crate::fsutil::FileId;

/// Parsed files by path and identity, so a daemon pass does not parse an unchanged system
/// bundle again. Entries for files no longer asked for are dropped by [`Cache::retain`].
#[derive(Debug, Default)]
pub(crate) struct Cache {
    files: HashMap<PathBuf, (FileId, Arc<FileAnchors>)>,
    used: HashSet<PathBuf>,
    /// The read errors of the last audit, so the daemon logs each once, not at every pass.
    reported: HashSet<String>,
}

impl Cache {
    /// The anchors of the file at `path`, from the cache while its identity is unchanged.
    /// Errors: the file cannot be read, or holds no certificate.
    pub(crate) fn file(&mut self, path: &Path) -> Result<Arc<FileAnchors>, ReadAnchorsError> {
        self.file_capped(path, fsutil::caps::TRUST_ROOTS)
    }

    /// [`Cache::file`] for a file of at most `cap` bytes.
    pub(crate) fn file_capped(
        &mut self,
        path: &Path,
        cap: u64,
    ) -> Result<Arc<FileAnchors>, ReadAnchorsError> {
        self.used.insert(path.to_path_buf());
        let id = FileId::of_path(path);
        if let (Some(id), Some((cached, anchors))) = (id, self.files.get(path)) {
            if *cached == id {
                return Ok(anchors.clone());
            }
        }
        let bytes = fsutil::read_regular(path, cap, Follow::Yes)?;
        let parsed = Arc::new(parse_file(path, &bytes)?);
        if let Some(id) = id {
            self.files.insert(path.to_path_buf(), (id, parsed.clone()));
        }
        Ok(parsed)
    }

    /// Those of `errors` not reported by the previous call (which `errors` replaces).
    pub(crate) fn new_errors(&mut self, errors: &[String]) -> Vec<String> {
        let fresh = errors
            .iter()
            .filter(|e| !self.reported.contains(*e))
            .cloned()
            .collect();
        self.reported = errors.iter().cloned().collect();
        fresh
    }

    /// Forgets every file not asked for since the last call.
    pub(crate) fn retain(&mut self) {
        let used = std::mem::take(&mut self.used);
        self.files.retain(|p, _| used.contains(p));
    }
}

/// The certificates of one file: every PEM `CERTIFICATE` (and OpenSSL `TRUSTED
/// CERTIFICATE`) block, or the whole file as one DER certificate when it has no PEM block.
/// Other blocks (keys, CRLs) are skipped. Errors: nothing usable at all.
pub(crate) fn parse_file(path: &Path, bytes: &[u8]) -> Result<FileAnchors, ReadAnchorsError> {
    let mut out = FileAnchors::default();
    let (blocks, stray_end) = pem_blocks(bytes);
    if blocks.is_empty() {
        return parse_unframed(path, bytes, stray_end);
    }
    let mut certificates = 0;
    let mut labels: Vec<&str> = Vec::new();
    for b in &blocks {
        let at = format!("{}: block {} (line {})", path.display(), b.number, b.line);
        let trusted = b.label.as_deref() == Some("TRUSTED CERTIFICATE");
        if !(trusted || b.label.as_deref() == Some("CERTIFICATE")) && b.problem.is_none() {
            let label = b.label.as_deref().unwrap_or("");
            if matches!(label, "PKCS7" | "PKCS #7 SIGNED DATA" | "CMS") {
                return Err(ReadAnchorsError::Pkcs7(path.to_path_buf()));
            }
            if !labels.contains(&label) {
                labels.push(label);
            }
            continue;
        }
        certificates += 1;
        let der = match (&b.problem, decode_base64(&b.body)) {
            (Some(why), _) => {
                out.errors.push(format!("{at}: {why}"));
                continue;
            }
            (None, Err(why)) => {
                out.errors.push(format!("{at}: {why}"));
                continue;
            }
            (None, Ok(der)) => der,
        };
        match parse_certificate(path, b.number, &der, trusted) {
            Ok(a) => out.anchors.push(Arc::new(a)),
            Err(why) => out.errors.push(format!("{at}: {why}")),
        }
    }
    if certificates == 0 {
        return Err(ReadAnchorsError::OtherBlocks {
            path: path.to_path_buf(),
            labels: labels
                .iter()
                .map(|l| crate::text::bounded(l.to_string(), 64))
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    Ok(out)
}

/// A file with no PEM block: one DER certificate, a DER PKCS#7 bundle, or nothing usable
/// (said how: empty, an END line without its BEGIN, not DER).
fn parse_unframed(
    path: &Path,
    bytes: &[u8],
    stray_end: Option<usize>,
) -> Result<FileAnchors, ReadAnchorsError> {
    let none = |why: String| ReadAnchorsError::NoCertificate {
        path: path.to_path_buf(),
        why,
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(none("the file is empty".into()));
    }
    if let Some(line) = stray_end {
        return Err(none(format!(
            "an END line (line {line}) without its BEGIN line"
        )));
    }
    if bytes.first() != Some(&0x30) {
        return Err(none(
            "no PEM CERTIFICATE block, and not a DER certificate (it does not start as one)".into(),
        ));
    }
    let head = &bytes[..bytes.len().min(24)];
    if head
        .windows(SIGNED_DATA_OID.len())
        .any(|w| w == SIGNED_DATA_OID)
    {
        return Err(ReadAnchorsError::Pkcs7(path.to_path_buf()));
    }
    let mut out = FileAnchors::default();
    match parse_certificate(path, 1, bytes, false) {
        Ok(a) => out.anchors.push(Arc::new(a)),
        Err(why) => out.errors.push(format!("{}: DER: {why}", path.display())),
    }
    Ok(out)
}

/// One PEM block as found: its label, base64 body, number and first line (1-based), or
/// what is wrong with its framing.
struct PemBlock {
    number: usize,
    line: usize,
    label: Option<String>,
    body: String,
    problem: Option<String>,
}

/// Splits PEM text into blocks by their BEGIN/END lines (RFC 7468 §2). Text between blocks
/// is ignored, as OpenSSL does; like OpenSSL (`PEM_read_bio`), a BEGIN or END line must
/// start at the line's first character (trailing white space is allowed). A block without
/// its END line is returned with a problem and the text after it is still searched for
/// blocks. Also returns the line (1-based) of the first END line met outside any block.
fn pem_blocks(bytes: &[u8]) -> (Vec<PemBlock>, Option<usize>) {
    let text = String::from_utf8_lossy(bytes);
    let mut blocks: Vec<PemBlock> = Vec::new();
    let mut open: Option<PemBlock> = None;
    let mut stray_end = None;
    for (n, raw) in text.split('\n').enumerate() {
        let line = raw.trim_end();
        if let Some(label) = line
            .strip_prefix("-----BEGIN ")
            .and_then(|l| l.strip_suffix("-----"))
        {
            if let Some(mut unfinished) = open.take() {
                unfinished.problem = Some(format!(
                    "no END line before the next BEGIN (line {})",
                    n + 1
                ));
                blocks.push(unfinished);
            }
            open = Some(PemBlock {
                number: blocks.len() + 1,
                line: n + 1,
                label: Some(label.to_string()),
                body: String::new(),
                problem: None,
            });
        } else if let Some(label) = line
            .strip_prefix("-----END ")
            .and_then(|l| l.strip_suffix("-----"))
        {
            if let Some(mut block) = open.take() {
                if block.label.as_deref() != Some(label) {
                    block.problem = Some(format!(
                        "BEGIN {} ends with END {label} (line {})",
                        block.label.as_deref().unwrap_or(""),
                        n + 1
                    ));
                }
                blocks.push(block);
            } else if stray_end.is_none() {
                stray_end = Some(n + 1);
            }
        } else if let Some(block) = open.as_mut() {
            if !line.contains(':') {
                block.body.push_str(line.trim_start());
            }
        }
    }
    if let Some(mut unfinished) = open {
        unfinished.problem = Some("no END line before the end of the file".into());
        blocks.push(unfinished);
    }
    (blocks, stray_end)
}

fn decode_base64(body: &str) -> Result<Vec<u8>, String> {
    data_encoding::BASE64
        .decode(body.as_bytes())
        .map_err(|e| format!("invalid base64: {e}"))
}

/// Content octets of the named-curve OIDs (RFC 5480 §2.1.1.1).
const CURVES: &[(&[u8], &str)] = &[
    (&[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07], "P-256"),
    (&[0x2b, 0x81, 0x04, 0x00, 0x22], "P-384"),
    (&[0x2b, 0x81, 0x04, 0x00, 0x23], "P-521"),
];

/// Signature algorithms hashing with MD2, MD4, MD5 or SHA-1 (RFC 3279 §2.2, RFC 8017
/// App. A.2.4, X9.62 ecdsa-with-SHA1, DSA with SHA-1, the OIW sha1WithRSA).
const WEAK_SIGNATURES: &[&str] = &[
    "1.2.840.113549.1.1.2",
    "1.2.840.113549.1.1.3",
    "1.2.840.113549.1.1.4",
    "1.2.840.113549.1.1.5",
    "1.2.840.10045.4.1",
    "1.2.840.10040.4.3",
    "1.3.14.3.2.29",
    "1.3.14.3.2.25",
    "1.3.14.3.2.3",
];

/// Parses one certificate. `trusted`: an OpenSSL TRUSTED CERTIFICATE, whose trust settings
/// follow the certificate (they are ignored; the fingerprint is of the certificate alone).
pub(crate) fn parse_certificate(
    file: &Path,
    block: usize,
    der: &[u8],
    trusted: bool,
) -> Result<Anchor, String> {
    let (rest, cert) = X509Certificate::from_der(der).map_err(|e| der_problem(&e))?;
    if !rest.is_empty() && !trusted {
        return Err(format!(
            "{} unexpected bytes after the certificate",
            rest.len()
        ));
    }
    let der = &der[..der.len() - rest.len()];
    let (key_type, key_bits, curve) = key_facts(&cert);
    let sig = &cert.signature_algorithm.algorithm;
    let sig_id = sig.to_id_string();
    let signature_algorithm = oid2sn(sig, oid_registry())
        .map(str::to_string)
        .unwrap_or_else(|_| sig_id.clone());
    let mut ski = None;
    let mut aki = None;
    for ext in cert.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(k) => ski = Some(k.0.to_vec()),
            ParsedExtension::AuthorityKeyIdentifier(a) => {
                aki = a.key_identifier.as_ref().map(|k| k.0.to_vec())
            }
            _ => {}
        }
    }
    Ok(Anchor {
        file: file.to_path_buf(),
        block,
        fingerprint: sha256(der),
        subject: crate::text::bounded(cert.subject().to_string(), MAX_NAME),
        issuer: crate::text::bounded(cert.issuer().to_string(), MAX_NAME),
        subject_raw: cert.subject().as_raw().to_vec(),
        issuer_raw: cert.issuer().as_raw().to_vec(),
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        key_type,
        key_bits,
        curve,
        weak_signature: WEAK_SIGNATURES.contains(&sig_id.as_str()) || pss_with_sha1(&cert),
        signature_algorithm,
        spki: cert.public_key().raw.to_vec(),
        ski,
        aki,
        der: der.to_vec(),
    })
}

/// Why bytes are not a certificate, in words: x509-parser's errors name parser internals
/// (`NomError(Eof)`, `Der(UnexpectedTag { .. })`).
fn der_problem(e: &x509_parser::nom::Err<x509_parser::error::X509Error>) -> String {
    use x509_parser::der_parser::error::{BerError, Error as DerError};
    use x509_parser::error::X509Error;
    use x509_parser::nom::error::ErrorKind;
    let inner = match e {
        x509_parser::nom::Err::Incomplete(_) => {
            return "truncated: the DER encoding ends before the certificate does".into()
        }
        x509_parser::nom::Err::Error(x) | x509_parser::nom::Err::Failure(x) => x,
    };
    match inner {
        X509Error::NomError(ErrorKind::Eof)
        | X509Error::Der(DerError::Incomplete(_))
        | X509Error::Der(BerError::InvalidLength) => {
            "truncated: the DER encoding ends before the certificate does".into()
        }
        X509Error::Der(DerError::UnexpectedTag { .. }) | X509Error::InvalidCertificate => {
            "not an X.509 certificate (RFC 5280 §4.1): its DER structure is something else".into()
        }
        X509Error::InvalidVersion => "not an X.509 certificate: an invalid version".into(),
        X509Error::InvalidDate => "an invalid validity date (RFC 5280 §4.1.2.5)".into(),
        X509Error::InvalidSerial => "an invalid serial number (RFC 5280 §4.1.2.2)".into(),
        X509Error::InvalidExtensions | X509Error::InvalidTbsCertificate => {
            "an invalid certificate body or extension (RFC 5280 §4.1.2)".into()
        }
        other => format!("not a valid X.509 certificate ({other})"),
    }
}

/// Whether the signature is RSASSA-PSS hashing with SHA-1, which is what PSS parameters
/// that name no hash mean (RFC 4055 §3.1).
fn pss_with_sha1(cert: &X509Certificate<'_>) -> bool {
    use x509_parser::signature_algorithm::SignatureAlgorithm;
    match SignatureAlgorithm::try_from(&cert.signature_algorithm) {
        Ok(SignatureAlgorithm::RSASSA_PSS(params)) => {
            params.hash_algorithm_oid().to_id_string() == "1.3.14.3.2.26"
        }
        _ => false,
    }
}

/// The key's type, size in bits and curve.
fn key_facts(cert: &X509Certificate<'_>) -> (String, Option<u32>, Option<String>) {
    let spki = cert.public_key();
    let alg = spki.algorithm.algorithm.to_id_string();
    match (alg.as_str(), spki.parsed()) {
        (_, Ok(PublicKey::RSA(rsa))) => ("rsa".into(), Some(bit_length(rsa.modulus)), None),
        (_, Ok(PublicKey::EC(ec))) => {
            let curve = spki.algorithm.parameters.as_ref().map(|p| {
                CURVES
                    .iter()
                    .find(|(oid, _)| *oid == p.data)
                    .map_or_else(|| format!("{:02x?}", p.data), |(_, n)| n.to_string())
            });
            let bits = u32::try_from(ec.key_size()).ok().filter(|b| *b > 0);
            ("ecdsa".into(), bits, curve)
        }
        ("1.3.101.112", _) => ("ed25519".into(), Some(256), None),
        ("1.3.101.113", _) => ("ed448".into(), Some(456), None),
        (_, Ok(PublicKey::DSA(y))) => ("dsa".into(), Some(bit_length(y)), None),
        _ => (alg, None, None),
    }
}

/// Bits of a big-endian unsigned integer, leading zeros not counted.
fn bit_length(n: &[u8]) -> u32 {
    let n = match n.iter().position(|b| *b != 0) {
        Some(i) => &n[i..],
        None => return 0,
    };
    (n.len() as u32) * 8 - n[0].leading_zeros()
}

/// The regular files directly in `dir` (symbolic links followed as
/// [`super::safety::refused_link`] allows), each inode once under its ordinary name when it
/// also has an OpenSSL hash-link name (`e015395b.0`), leaving out those whose inode is in
/// `skip` (files audited as sources of their own). Also returns, one line each, the entries
/// that are not read: a FIFO, socket or device, a dangling symlink or a symlink loop, a
/// symlink not followed, a file a user other than root and renewd's can change, and the
/// names beyond [`MAX_DIRECTORY_FILES`]. Subdirectories are
/// not entered and not reported. Errors: the directory cannot be listed.
pub(crate) fn directory_files(
    dir: &Path,
    skip: &HashSet<(u64, u64)>,
) -> std::io::Result<(Vec<PathBuf>, Vec<String>)> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    // Ordinary names first, so a file is listed under the name a person gave it.
    names.sort_by_key(|p| (is_hash_link_name(p), p.clone()));
    let mut seen: HashSet<(u64, u64)> = HashSet::new();
    let mut files = Vec::new();
    let mut errors = Vec::new();
    for path in names {
        let meta = match std::fs::metadata(&path) {
            Ok(m) => m,
            Err(e) => {
                errors.push(format!(
                    "{}: {}",
                    path.display(),
                    unreachable_entry(&path, &e)
                ));
                continue;
            }
        };
        if meta.is_dir() {
            continue;
        }
        if !meta.is_file() {
            errors.push(format!(
                "{}: {}, not a certificate file: not read",
                path.display(),
                file_type_name(&meta)
            ));
            continue;
        }
        if let Some(why) = super::safety::refused_link(dir, &path) {
            errors.push(format!("{}: {why}", path.display()));
            continue;
        }
        if let Some(who) = crate::deploy::file_writers(&meta) {
            errors.push(format!(
                "{}: not trustworthy, not read: {who} can change it",
                path.display()
            ));
            continue;
        }
        let id = FileId::of(&meta);
        if skip.contains(&id.inode()) || !seen.insert(id.inode()) {
            continue;
        }
        if files.len() == MAX_DIRECTORY_FILES {
            errors.push(format!(
                "{}: more than {MAX_DIRECTORY_FILES} files; only the first {MAX_DIRECTORY_FILES} \
                 by name were read",
                dir.display()
            ));
            break;
        }
        files.push(path);
    }
    Ok((files, errors))
}

/// Whether `path`'s name is an OpenSSL `c_rehash` link name: 8 hex digits, `.`, then a
/// number (`.r` and a number for a CRL).
fn is_hash_link_name(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    let Some((hash, n)) = name.split_once('.') else {
        return false;
    };
    let n = n.strip_prefix('r').unwrap_or(n);
    hash.len() == 8
        && hash.bytes().all(|b| b.is_ascii_hexdigit())
        && !n.is_empty()
        && n.bytes().all(|b| b.is_ascii_digit())
}

/// Why a directory entry cannot be reached: a dangling symlink, a loop, or the error.
fn unreachable_entry(path: &Path, e: &std::io::Error) -> String {
    let link = std::fs::read_link(path).ok();
    match (link, e.raw_os_error()) {
        (Some(t), _) if e.kind() == std::io::ErrorKind::NotFound => format!(
            "a symbolic link to {}, which does not exist: not read",
            t.display()
        ),
        (Some(_), Some(nix::libc::ELOOP)) => {
            "a symbolic link loop (too many levels of links): not read".into()
        }
        _ => format!("cannot be read: {e}"),
    }
}

/// "a FIFO", "a character device", ... for what is not a regular file or directory.
fn file_type_name(meta: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_blocks_are_numbered_and_do_not_stop_the_rest() {
        let text = "junk\n-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n\
                    -----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n\
                    -----BEGIN CERTIFICATE-----\nAAAA\n";
        let (blocks, _) = pem_blocks(text.as_bytes());
        assert_eq!(blocks.len(), 3);
        assert_eq!((blocks[0].number, blocks[0].line), (1, 2));
        assert_eq!((blocks[2].number, blocks[2].line), (3, 8));
        assert!(blocks[2]
            .problem
            .as_deref()
            .unwrap()
            .contains("no END line"));
        let parsed = parse_file(Path::new("/x.pem"), text.as_bytes()).unwrap();
        assert!(parsed.anchors.is_empty());
        assert_eq!(parsed.errors.len(), 2, "{:?}", parsed.errors);
        assert!(parsed.errors[0].starts_with("/x.pem: block 1 (line 2): invalid base64"));
        assert!(parsed.errors[1].starts_with("/x.pem: block 3 (line 8): no END line"));
    }

    #[test]
    fn a_file_without_certificates_is_an_error() {
        let e = parse_file(Path::new("/k.pem"), b"hello\n").unwrap_err();
        assert!(e.to_string().contains("holds no certificate"));
        let e = parse_file(Path::new("/e.pem"), b"\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "/e.pem: holds no certificate: the file is empty"
        );
        let e = parse_file(Path::new("/x.crt"), b"AAAA\n-----END CERTIFICATE-----\n").unwrap_err();
        assert!(
            e.to_string()
                .contains("END line (line 2) without its BEGIN"),
            "{e}"
        );
    }

    /// Made by `openssl req -x509 -newkey rsa:1024 -sha1 -sigopt rsa_padding_mode:pss`: PSS
    /// parameters naming SHA-1 only by default.
    #[test]
    fn pss_with_default_parameters_is_sha1_and_rsa_bits_are_counted() {
        let pem = include_bytes!("testdata/pss-sha1-rsa1024.pem");
        let f = parse_file(Path::new("/pss.pem"), pem).unwrap();
        let a = &f.anchors[0];
        assert!(a.weak_signature, "{}", a.signature_algorithm);
        assert_eq!((a.key_type.as_str(), a.key_bits), ("rsa", Some(1024)));
        assert_eq!(a.fingerprint, sha256(&a.der));
    }

    #[test]
    fn bit_length_ignores_leading_zeros() {
        assert_eq!(bit_length(&[0, 0x80, 0]), 16);
        assert_eq!(bit_length(&[0x7f, 0]), 15);
        assert_eq!(bit_length(&[0, 0]), 0);
    }
}

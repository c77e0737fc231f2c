//! Reading back what is deployed now, to tell whether it can be used as is.

use std::path::{Path, PathBuf};

use crate::config::{FileKind, FileSet};
use crate::x509::{self, CertInfo};

/// Deployed files larger than this are not certificates; refusing them keeps [`inspect`]
/// from reading a multi-gigabyte file someone put at a certificate's path.
pub(super) const MAX_DEPLOYED_FILE: u64 = crate::fsutil::caps::CERTIFICATE;

/// Why what is deployed now cannot be used as is (and so needs a renewal).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DeployedProblem {
    #[error("{} does not exist", .0.display())]
    Missing(PathBuf),
    #[error("{} cannot be read: {}", .0.display(), .1)]
    Unreadable(PathBuf, String),
    #[error("{} does not hold what it should: {}", .0.display(), .1)]
    Invalid(PathBuf, String),
    #[error("the private key in {} does not belong to the deployed certificate", .0.display())]
    KeyMismatch(PathBuf),
    #[error("{0}")]
    Inconsistent(String),
}

/// SHA-256 over a deployed set's contents ([`set_digest`]).
pub(crate) type SetDigest = [u8; 32];

/// SHA-256 over a set's contents, file by file in the set's order: the kind's name, the
/// length (8 bytes, big-endian) and the bytes. The same configured set with the same bytes
/// gives the same digest; any change of a byte, a length or a file's kind gives another.
pub(crate) fn set_digest<'a>(files: impl IntoIterator<Item = (FileKind, &'a [u8])>) -> SetDigest {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for (kind, data) in files {
        ctx.update(kind.as_str().as_bytes());
        ctx.update(&(data.len() as u64).to_be_bytes());
        ctx.update(data);
    }
    let mut out = [0; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// Reads what is deployed now and returns the leaf certificate if the set is usable:
/// every configured file present and readable, the leaf the same in the cert, fullchain
/// and combined files, the chain file equal to the intermediates of the fullchain, and the
/// key (in the key and combined files) belonging to the leaf.
pub fn inspect(files: &FileSet) -> Result<CertInfo, DeployedProblem> {
    inspect_known(files, None).map(|(leaf, _)| leaf)
}

/// [`inspect`], also returning the files' [`set_digest`]. When it equals `verified` (the
/// digest of a set renewd deployed, whose consistency it checked before writing it), the
/// checks between files are skipped — the key's parsing and its match with the leaf, the
/// leaf and chain comparisons, most of the cost — and only the leaf is parsed: equal
/// digests mean the same bytes, so the result cannot differ.
pub(crate) fn inspect_known(
    files: &FileSet,
    verified: Option<&SetDigest>,
) -> Result<(CertInfo, SetDigest), DeployedProblem> {
    let mut read = Vec::new();
    for (kind, path) in files.iter() {
        read.push((kind, path, read_deployed(path)?));
    }
    let digest = set_digest(read.iter().map(|(k, _, d)| (*k, &d[..])));
    if verified == Some(&digest) {
        if let Some(leaf) = verified_leaf(&read) {
            return Ok((leaf, digest));
        }
    }
    check_set(read).map(|leaf| (leaf, digest))
}

/// The leaf of a set already known consistent: the first certificate of its fullchain,
/// cert or combined file. `None` if it cannot be parsed after all (then the full checks
/// say why).
fn verified_leaf(read: &[(FileKind, &Path, Vec<u8>)]) -> Option<CertInfo> {
    [FileKind::Fullchain, FileKind::Cert, FileKind::Combined]
        .into_iter()
        .find_map(|want| read.iter().find(|(k, _, _)| *k == want))
        .and_then(|(_, _, data)| x509::first_pem_certificate(data))
        .and_then(|der| CertInfo::parse_der(&der).ok())
}

/// The checks between a set's files, read as `read` (kind, path, bytes).
fn check_set(read: Vec<(FileKind, &Path, Vec<u8>)>) -> Result<CertInfo, DeployedProblem> {
    // (path, whole chain) for each file that carries the leaf, in order of preference.
    let mut chains: Vec<(FileKind, PathBuf, Vec<Vec<u8>>)> = Vec::new();
    let mut intermediates: Option<(PathBuf, Vec<Vec<u8>>)> = None;
    let mut keys = Vec::new();

    for (kind, path, data) in read {
        let invalid =
            |e: x509::X509Error| DeployedProblem::Invalid(path.to_path_buf(), e.to_string());
        match kind {
            FileKind::Cert | FileKind::Fullchain | FileKind::Combined => {
                let certs = x509::pem_certificates(&data).map_err(invalid)?;
                if kind == FileKind::Combined {
                    keys.push((
                        path.to_path_buf(),
                        x509::pem_private_key(&data).map_err(invalid)?,
                    ));
                }
                chains.push((kind, path.to_path_buf(), certs));
            }
            FileKind::Chain => {
                // A certificate issued straight from a root has no intermediates.
                let certs = if data.iter().all(u8::is_ascii_whitespace) {
                    Vec::new()
                } else {
                    x509::pem_certificates(&data).map_err(invalid)?
                };
                intermediates = Some((path.to_path_buf(), certs));
            }
            // Encrypted: present and readable is all that can be checked without the
            // password; it is rewritten with the rest of the set at every renewal.
            FileKind::Pkcs12 => {}
            FileKind::Key => {
                keys.push((
                    path.to_path_buf(),
                    x509::pem_private_key(&data).map_err(invalid)?,
                ));
            }
        }
    }

    let rank = |k: FileKind| match k {
        FileKind::Fullchain => 0,
        FileKind::Cert => 1,
        _ => 2,
    };
    chains.sort_by_key(|(k, _, _)| rank(*k));
    let Some((_, leaf_path, leaf_chain)) = chains.first() else {
        return Err(DeployedProblem::Inconsistent(
            "no cert, fullchain or combined file is configured, so there is no certificate to check"
                .into(),
        ));
    };
    let leaf_der = &leaf_chain[0];
    for (_, path, chain) in &chains[1..] {
        if chain[0] != *leaf_der {
            return Err(DeployedProblem::Inconsistent(format!(
                "{} and {} hold different certificates",
                leaf_path.display(),
                path.display()
            )));
        }
    }
    if let Some((chain_path, certs)) = &intermediates {
        if let Some((_, full_path, full)) = chains.iter().find(|(k, _, _)| *k != FileKind::Cert) {
            if full[1..] != certs[..] {
                return Err(DeployedProblem::Inconsistent(format!(
                    "{} does not hold the intermediates that follow the certificate in {}",
                    chain_path.display(),
                    full_path.display()
                )));
            }
        }
    }

    let leaf = CertInfo::parse_der(leaf_der)
        .map_err(|e| DeployedProblem::Invalid(leaf_path.clone(), e.to_string()))?;
    for (path, key) in keys {
        if !key.matches(&leaf) {
            return Err(DeployedProblem::KeyMismatch(path));
        }
    }
    Ok(leaf)
}

/// Reads a deployed file without hanging on a FIFO or slurping a huge file.
///
/// A symlink at the path is followed (certbot's `live/` files are symlinks, and renewd
/// reads them until its first deployment replaces them), but only a regular file is ever
/// opened: opening a device node can have side effects.
fn read_deployed(path: &Path) -> Result<Vec<u8>, DeployedProblem> {
    use crate::fsutil::ReadError;
    crate::fsutil::read_regular(path, MAX_DEPLOYED_FILE, crate::fsutil::Follow::Yes).map_err(|e| {
        match e {
            ReadError::NotFound(_) => DeployedProblem::Missing(path.to_path_buf()),
            ReadError::Io { ref source, .. } => {
                DeployedProblem::Unreadable(path.to_path_buf(), source.to_string())
            }
            ReadError::TooLarge { max, .. } => DeployedProblem::Invalid(
                path.to_path_buf(),
                format!("larger than {max} bytes, too large for a certificate or key"),
            ),
            other => DeployedProblem::Invalid(path.to_path_buf(), other.reason()),
        }
    })
}

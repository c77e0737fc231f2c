//! Finding certificates on disk: the `[discovery]` scan, and reading the one file of a
//! managed certificate or an `[[exception]]`.
//!
//! Discovery trees can hold thousands of unrelated files (`/etc/ssl/certs` alone has a few
//! hundred), so each file is judged from its first bytes before it is read whole: only
//! something that looks like PEM with a CERTIFICATE block, or like a DER certificate, is
//! parsed. Files over [`MAX_FILE`] are skipped unread. Directory symlinks are never followed
//! (no loops, no escaping the tree); a file symlink is followed only when its target lies
//! inside one of the scanned roots, and then the certificate is listed under both names.

use std::collections::HashSet;
use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::x509::{self, CertInfo};

/// Larger files are not certificates (a full CA bundle is about 200 KiB).
pub const MAX_FILE: u64 = 1024 * 1024;
/// How much of a file is read to decide whether it could hold a certificate.
const SNIFF: usize = 4096;
/// Directory depth below a root at which the walk stops.
const MAX_DEPTH: usize = 32;

/// A certificate file: its first certificate (the leaf of a chain file) and how many
/// certificates the file holds.
#[derive(Debug, Clone)]
pub struct Found {
    pub path: PathBuf,
    pub leaf: CertInfo,
    pub certificates: usize,
}

/// What a scan saw.
#[derive(Debug, Default, Clone)]
pub struct Scan {
    pub found: Vec<Found>,
    /// Regular files looked at (sniffed), certificate or not.
    pub files_seen: usize,
    /// Directories or files that could not be read, one line each.
    pub errors: Vec<String>,
}

/// Walks `roots` and returns every certificate file not in `skip` (managed files and
/// exceptions are listed by the caller with what it knows about them).
pub fn scan(roots: &[PathBuf], skip: &HashSet<PathBuf>) -> Scan {
    let mut out = Scan::default();
    let canon_roots: Vec<PathBuf> = roots
        .iter()
        .map(|r| fs::canonicalize(r).unwrap_or_else(|_| r.clone()))
        .collect();
    let mut seen_dirs: HashSet<(u64, u64)> = HashSet::new();
    for root in roots {
        let mut stack = vec![(root.clone(), 0usize)];
        while let Some((dir, depth)) = stack.pop() {
            let meta = match fs::symlink_metadata(&dir) {
                Ok(m) => m,
                Err(e) => {
                    out.errors.push(format!("{}: {e}", dir.display()));
                    continue;
                }
            };
            // A root given as a file is scanned as one file.
            if meta.is_file() {
                visit_file(&dir, &meta, skip, &canon_roots, &mut out);
                continue;
            }
            if !meta.is_dir() || !seen_dirs.insert((meta.dev(), meta.ino())) {
                continue;
            }
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) => {
                    out.errors.push(format!("{}: {e}", dir.display()));
                    continue;
                }
            };
            for entry in entries.flatten() {
                let path = entry.path();
                let Ok(ft) = entry.file_type() else { continue };
                if ft.is_dir() {
                    if depth < MAX_DEPTH {
                        stack.push((path, depth + 1));
                    }
                } else if ft.is_file() || ft.is_symlink() {
                    let meta = match fs::symlink_metadata(&path) {
                        Ok(m) => m,
                        Err(_) => continue,
                    };
                    visit_file(&path, &meta, skip, &canon_roots, &mut out);
                }
            }
        }
    }
    out.found.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

fn visit_file(
    path: &Path,
    meta: &fs::Metadata,
    skip: &HashSet<PathBuf>,
    roots: &[PathBuf],
    out: &mut Scan,
) {
    if skip.contains(path) {
        return;
    }
    if meta.file_type().is_symlink() {
        // Follow only links to regular files inside the scanned trees.
        let Ok(target) = fs::canonicalize(path) else {
            return;
        };
        if !roots.iter().any(|r| target.starts_with(r)) || skip.contains(&target) {
            return;
        }
        match fs::metadata(&target) {
            Ok(m) if m.is_file() => {}
            _ => return,
        }
    }
    out.files_seen += 1;
    if let Ok(Some((leaf, certificates))) = read_certificates(path) {
        out.found.push(Found {
            path: path.to_path_buf(),
            leaf,
            certificates,
        });
    }
}

/// The first certificate of the file at `path` and how many it holds; `Ok(None)` when the
/// file does not look like a certificate at all (a key, a config file, a binary).
pub fn read_certificates(path: &Path) -> Result<Option<(CertInfo, usize)>, String> {
    let mut file = fs::File::open(path).map_err(|e| e.to_string())?;
    let meta = file.metadata().map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    if meta.len() > MAX_FILE {
        return Ok(None);
    }
    let mut head = vec![0u8; SNIFF.min(meta.len() as usize)];
    file.read_exact(&mut head).map_err(|e| e.to_string())?;
    let shape = sniff(&head);
    if shape == Shape::Other {
        return Ok(None);
    }
    let mut bytes = head;
    file.take(MAX_FILE)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    let ders = match shape {
        Shape::Pem => x509::pem_certificates(&bytes).map_err(|e| e.to_string())?,
        Shape::Der => vec![bytes],
        Shape::Other => return Ok(None),
    };
    let n = ders.len();
    let leaf = ders
        .first()
        .ok_or_else(|| "no certificate".to_string())
        .and_then(|d| CertInfo::parse_der(d).map_err(|e| e.to_string()))?;
    Ok(Some((leaf, n)))
}

/// [`read_certificates`] for a file that must hold a certificate (managed, exception).
pub fn read_certificate(path: &Path) -> Result<CertInfo, String> {
    match read_certificates(path) {
        Ok(Some((leaf, _))) => Ok(leaf),
        Ok(None) => Err(format!(
            "{}: holds no certificate (or is larger than {} KiB)",
            path.display(),
            MAX_FILE / 1024
        )),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Shape {
    Pem,
    Der,
    Other,
}

/// PEM: a CERTIFICATE block begins in the first bytes (text before it, such as `openssl x509
/// -text` output, is allowed; a file with only a key block is not a certificate). DER: an
/// outer SEQUENCE whose first element is again a SEQUENCE (tbsCertificate); a PKCS#8 or
/// PKCS#1 key starts with an INTEGER there instead.
fn sniff(head: &[u8]) -> Shape {
    if contains(head, b"-----BEGIN CERTIFICATE-----")
        || contains(head, b"-----BEGIN X509 CERTIFICATE-----")
    {
        return Shape::Pem;
    }
    if head.len() > 8 && head[0] == 0x30 {
        let inner = match head[1] {
            0x81 => 3,
            0x82 => 4,
            0x83 => 5,
            _ => return Shape::Other,
        };
        if head.get(inner) == Some(&0x30) {
            return Shape::Der;
        }
    }
    Shape::Other
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffing_tells_certificates_from_keys_and_text() {
        assert_eq!(sniff(b"-----BEGIN CERTIFICATE-----\nMII"), Shape::Pem);
        assert_eq!(
            sniff(b"Certificate:\n  Data: ...\n-----BEGIN CERTIFICATE-----\n"),
            Shape::Pem
        );
        assert_eq!(sniff(b"-----BEGIN PRIVATE KEY-----\nMII"), Shape::Other);
        assert_eq!(sniff(b"server {\n listen 443 ssl;\n}\n"), Shape::Other);
        // DER certificate: SEQUENCE { SEQUENCE ...
        assert_eq!(
            sniff(&[0x30, 0x82, 0x01, 0x0a, 0x30, 0x81, 0xf0, 0, 0, 0]),
            Shape::Der
        );
        // PKCS#8 key: SEQUENCE { INTEGER 0 ...
        assert_eq!(
            sniff(&[0x30, 0x81, 0x87, 0x02, 0x01, 0x00, 0x30, 0, 0, 0]),
            Shape::Other
        );
    }
}

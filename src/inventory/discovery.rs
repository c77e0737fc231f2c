//! Finding certificates on disk: the `[discovery]` scan, and reading the one file of a
//! managed certificate or an `[[exception]]`.
//!
//! Discovery trees can hold thousands of unrelated files (`/etc/ssl/certs` alone has a few
//! hundred), so each file is judged from its first bytes before it is read whole: only
//! something that looks like PEM with a CERTIFICATE block, or like a DER certificate, is
//! parsed. Files over [`MAX_FILE`] are skipped unread. Directory symlinks are never followed
//! (no loops, no escaping the tree); a file symlink is followed only when its target lies
//! inside one of the scanned roots, and then the certificate is listed under both names.
//! Every file is opened with `O_NONBLOCK` and checked on the open descriptor
//! (`fsutil::open_regular`), so a FIFO or a device swapped in at a name is refused at once,
//! never waited on.
//!
//! PKCS#12 bundles (by content, or named `.p12`/`.pfx`) are opened with the password the
//! configuration names for them ([`super::pkcs12`]); every certificate inside is found, and
//! a bundle that cannot be opened is reported with why.
//!
//! A [`Scan`] can be brought up to date for a few changed paths ([`Scan::update`]): only
//! those files and the subtrees of those directories are walked again. The walk reports
//! every real directory to its caller *before* reading it (the daemon watches it there, so
//! a file created between the watch and the read still arrives as an event).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::config::Pkcs12PasswordFile;
use crate::fsutil::{self, Follow, ReadError};
use crate::x509::{self, CertInfo};

use super::pkcs12;

/// Larger files are not certificates (a full CA bundle is about 200 KiB).
pub(crate) const MAX_FILE: u64 = 1024 * 1024;
/// How much of a file is read to decide whether it could hold a certificate.
const SNIFF: usize = 4096;
/// Directory depth below a root at which the walk stops.
const MAX_DEPTH: usize = 32;

/// A certificate file and its first certificate (the leaf of a chain file), or one
/// certificate of a PKCS#12 bundle.
#[derive(Debug, Clone)]
pub struct Found {
    pub(crate) path: PathBuf,
    pub(crate) leaf: CertInfo,
    /// In a PKCS#12 bundle: whether it is the bundle's leaf. `None`: a PEM or DER file.
    pub(crate) pkcs12_leaf: Option<bool>,
}

/// What a scan saw, kept per path so that it can be updated for a few changed paths.
#[derive(Debug, Default, Clone)]
pub struct Scan {
    /// Every regular file looked at (sniffed), with the certificates found in it: none,
    /// the leaf of a PEM or DER file, or every certificate of a PKCS#12 bundle.
    files: BTreeMap<PathBuf, Vec<Found>>,
    /// File symlinks followed, and the (canonical) file each points to.
    links: BTreeMap<PathBuf, PathBuf>,
    /// Every real directory walked (never one reached through a symlink).
    dirs: BTreeSet<PathBuf>,
    /// Directories or files that could not be read, one reason each.
    errors: BTreeMap<PathBuf, String>,
    /// The passwords of PKCS#12 bundles (`[discovery] pkcs12_password_files`).
    pkcs12_passwords: Vec<Pkcs12PasswordFile>,
    /// What the host's TLS listeners served, when `[discovery] listeners` is on.
    served: Vec<super::listeners::Served>,
    /// What the listener probe could not look at.
    served_errors: Vec<String>,
}

impl Scan {
    /// The certificate files found, in path order.
    pub fn found(&self) -> impl Iterator<Item = &Found> {
        self.files.values().flatten()
    }

    /// What the host's TLS listeners served (empty unless [`Scan::set_served`] was called).
    pub(crate) fn served(&self) -> &[super::listeners::Served] {
        &self.served
    }

    /// Keeps what the listener probe found and could not look at (kept across
    /// [`Scan::update`]s).
    pub(crate) fn set_served(
        &mut self,
        served: Vec<super::listeners::Served>,
        errors: Vec<String>,
    ) {
        self.served = served;
        self.served_errors = errors;
    }

    /// Regular files looked at (sniffed), certificate or not.
    pub fn files_seen(&self) -> usize {
        self.files.len()
    }

    /// What could not be read, one `PATH: reason` line each, in path order.
    pub(crate) fn errors(&self) -> Vec<String> {
        self.errors
            .iter()
            .map(|(p, e)| format!("{}: {e}", p.display()))
            .chain(self.served_errors.iter().cloned())
            .collect()
    }

    /// Every real directory the walk went into, in path order.
    #[cfg(test)]
    pub(crate) fn dirs(&self) -> impl Iterator<Item = &PathBuf> {
        self.dirs.iter()
    }

    /// Brings the scan up to date for `changed` paths (file events): each is forgotten with
    /// everything below it, then walked again if it still exists (a file is sniffed, a
    /// directory walked). File symlinks whose target lies under a changed path are looked
    /// at again too. Paths outside `roots` are ignored. `on_dir` is called as in [`scan`];
    /// directories no longer there are returned (to be unwatched).
    pub(crate) fn update(
        &mut self,
        roots: &[PathBuf],
        skip: &HashSet<PathBuf>,
        changed: &BTreeSet<PathBuf>,
        on_dir: &mut dyn FnMut(&Path),
    ) -> Vec<PathBuf> {
        let canon_roots = canonical_roots(roots);
        // A changed path under another changed directory is covered by that directory.
        let mut tops: Vec<&PathBuf> = Vec::new();
        for p in changed {
            if tops.last().is_some_and(|t| p.starts_with(t)) {
                continue;
            }
            tops.push(p);
        }
        let mut gone_dirs = Vec::new();
        let mut relinks = Vec::new();
        for p in tops {
            let Some((root, depth)) = roots
                .iter()
                .filter_map(|r| {
                    p.strip_prefix(r)
                        .ok()
                        .map(|rest| (r, rest.components().count()))
                })
                .next()
            else {
                continue;
            };
            let old_dirs = take_under(&mut self.dirs, p);
            take_under_map(&mut self.files, p);
            take_under_map(&mut self.errors, p);
            take_under_map(&mut self.links, p);
            // Links are kept with canonical targets; `p` may be gone, so its directory is
            // what is made canonical.
            let canon_p = p
                .parent()
                .and_then(|d| fs::canonicalize(d).ok())
                .zip(p.file_name())
                .map(|(d, n)| d.join(n));
            relinks.extend(
                self.links
                    .iter()
                    .filter(|(_, target)| {
                        target.starts_with(p)
                            || canon_p.as_ref().is_some_and(|c| target.starts_with(c))
                    })
                    .map(|(link, _)| link.clone()),
            );
            if p != root && p.parent().is_some_and(|d| !self.dirs.contains(d)) {
                // Its directory was not walked (too deep, or not there): nothing to see.
                gone_dirs.extend(old_dirs);
                continue;
            }
            self.walk(p, depth, skip, &canon_roots, on_dir);
            gone_dirs.extend(old_dirs.into_iter().filter(|d| !self.dirs.contains(d)));
        }
        for link in relinks {
            self.files.remove(&link);
            self.links.remove(&link);
            self.errors.remove(&link);
            if let Ok(meta) = fs::symlink_metadata(&link) {
                self.visit_file(&link, &meta, skip, &canon_roots);
            }
        }
        gone_dirs
    }

    /// Walks `start` (a root, or a path below one at `depth`).
    fn walk(
        &mut self,
        start: &Path,
        depth: usize,
        skip: &HashSet<PathBuf>,
        canon_roots: &[PathBuf],
        on_dir: &mut dyn FnMut(&Path),
    ) {
        let mut seen_dirs: HashSet<(u64, u64)> = HashSet::new();
        let mut stack = vec![(start.to_path_buf(), depth)];
        while let Some((dir, depth)) = stack.pop() {
            let meta = match fs::symlink_metadata(&dir) {
                Ok(m) => m,
                // Gone since it was listed or reported: nothing to see.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    self.errors.insert(dir, e.to_string());
                    continue;
                }
            };
            // A root given as a file (or a changed file) is looked at as one file.
            if !meta.is_dir() {
                if meta.is_file() || meta.file_type().is_symlink() {
                    self.visit_file(&dir, &meta, skip, canon_roots);
                }
                continue;
            }
            if depth > MAX_DEPTH || !seen_dirs.insert((meta.dev(), meta.ino())) {
                continue;
            }
            // Watched before it is read: a file created after this call is an event.
            on_dir(&dir);
            self.dirs.insert(dir.clone());
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) => {
                    self.errors.insert(dir, e.to_string());
                    continue;
                }
            };
            for entry in entries.flatten() {
                let path = entry.path();
                let Ok(ft) = entry.file_type() else { continue };
                if ft.is_dir() {
                    stack.push((path, depth + 1));
                } else if ft.is_file() || ft.is_symlink() {
                    let meta = match fs::symlink_metadata(&path) {
                        Ok(m) => m,
                        Err(_) => continue,
                    };
                    self.visit_file(&path, &meta, skip, canon_roots);
                }
            }
        }
    }

    fn visit_file(
        &mut self,
        path: &Path,
        meta: &fs::Metadata,
        skip: &HashSet<PathBuf>,
        roots: &[PathBuf],
    ) {
        if skip.contains(path) {
            return;
        }
        // A regular file is opened without following a symlink swapped in since the
        // listing; a link is followed only to a regular file inside the scanned trees, and
        // that file is then opened without following anything further.
        let open_at = if meta.file_type().is_symlink() {
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
            self.links.insert(path.to_path_buf(), target.clone());
            target
        } else if meta.is_file() {
            path.to_path_buf()
        } else {
            return;
        };
        let found = match read_found_at(&open_at, path, &self.pkcs12_passwords) {
            Ok(found) => found,
            // Swapped for something else since the listing: report it, read nothing.
            Err(FoundError::Read(e @ (ReadError::NotRegular { .. } | ReadError::Symlink(_)))) => {
                self.errors.insert(path.to_path_buf(), e.reason());
                return;
            }
            Err(FoundError::Read(_)) => Vec::new(),
            // A bundle that cannot be opened is reported, never silently skipped.
            Err(FoundError::Pkcs12(e)) => {
                self.errors.insert(path.to_path_buf(), e.to_string());
                Vec::new()
            }
        };
        self.files.insert(path.to_path_buf(), found);
    }
}

/// Removes and returns every element equal to `p` or below it.
fn take_under(set: &mut BTreeSet<PathBuf>, p: &Path) -> Vec<PathBuf> {
    let under: Vec<PathBuf> = set
        .range(p.to_path_buf()..)
        .take_while(|d| d.starts_with(p))
        .cloned()
        .collect();
    for d in &under {
        set.remove(d);
    }
    under
}

fn take_under_map<V>(map: &mut BTreeMap<PathBuf, V>, p: &Path) {
    let under: Vec<PathBuf> = map
        .range(p.to_path_buf()..)
        .take_while(|(k, _)| k.starts_with(p))
        .map(|(k, _)| k.clone())
        .collect();
    for k in under {
        map.remove(&k);
    }
}

fn canonical_roots(roots: &[PathBuf]) -> Vec<PathBuf> {
    roots
        .iter()
        .map(|r| fs::canonicalize(r).unwrap_or_else(|_| r.clone()))
        .collect()
}

/// Walks `roots` and returns every certificate file not in `skip` (managed files and
/// exceptions are listed by the caller with what it knows about them). `on_dir` is called
/// with every real directory before it is read (the daemon watches it).
pub fn scan(roots: &[PathBuf], skip: &HashSet<PathBuf>, on_dir: &mut dyn FnMut(&Path)) -> Scan {
    scan_with(roots, skip, &[], on_dir)
}

/// [`scan`], opening PKCS#12 bundles with the passwords of `pkcs12_passwords` (kept for
/// [`Scan::update`]).
pub(crate) fn scan_with(
    roots: &[PathBuf],
    skip: &HashSet<PathBuf>,
    pkcs12_passwords: &[Pkcs12PasswordFile],
    on_dir: &mut dyn FnMut(&Path),
) -> Scan {
    let mut out = Scan {
        pkcs12_passwords: pkcs12_passwords.to_vec(),
        ..Scan::default()
    };
    let canon_roots = canonical_roots(roots);
    for root in roots {
        out.walk(root, 0, skip, &canon_roots, on_dir);
    }
    out
}

/// The first certificate of `bytes` (read from `path`) as `shape` says; `None` for a
/// PKCS#12 bundle or something else.
fn leaf_of(path: &Path, shape: Shape, bytes: Vec<u8>) -> Result<Option<CertInfo>, ReadError> {
    let invalid = |message: String| ReadError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, message),
    };
    let ders = match shape {
        Shape::Pem => x509::pem_certificates(&bytes).map_err(|e| invalid(e.to_string()))?,
        Shape::Der => vec![bytes],
        Shape::Pkcs12 | Shape::Other => return Ok(None),
    };
    let leaf = ders
        .first()
        .ok_or_else(|| invalid("no certificate".to_string()))
        .and_then(|d| CertInfo::parse_der(d).map_err(|e| invalid(e.to_string())))?;
    Ok(Some(leaf))
}

/// Why a discovered file gave no certificate although it looked like one.
#[derive(Debug, thiserror::Error)]
enum FoundError {
    #[error(transparent)]
    Read(ReadError),
    #[error(transparent)]
    Pkcs12(pkcs12::Pkcs12Error),
}

/// The certificates discovery finds in the regular file at `open_at` (named `path`, a
/// symlink to it, in the scan): the leaf of a PEM or DER file, or every certificate of a
/// PKCS#12 bundle. A symlink at `open_at` is not followed.
fn read_found_at(
    open_at: &Path,
    path: &Path,
    passwords: &[Pkcs12PasswordFile],
) -> Result<Vec<Found>, FoundError> {
    let named_pkcs12 = pkcs12::named_like(path) || pkcs12::named_like(open_at);
    match read_shaped(open_at, Follow::No, named_pkcs12).map_err(FoundError::Read)? {
        Some((Shape::Pkcs12, bytes)) => Ok(pkcs12::read_bundle(&bytes, path, passwords)
            .map_err(FoundError::Pkcs12)?
            .into_iter()
            .map(|c| Found {
                path: path.to_path_buf(),
                leaf: c.info,
                pkcs12_leaf: Some(c.leaf),
            })
            .collect()),
        Some((shape, bytes)) => Ok(leaf_of(open_at, shape, bytes)
            .map_err(FoundError::Read)?
            .map(|leaf| Found {
                path: path.to_path_buf(),
                leaf,
                pkcs12_leaf: None,
            })
            .into_iter()
            .collect()),
        None => Ok(Vec::new()),
    }
}

/// The whole file at `path` and its [`Shape`], read only when its first bytes look like a
/// certificate or PKCS#12 bundle (or `named_pkcs12`: its name says PKCS#12); `None` when
/// they do not, or when it is larger than [`MAX_FILE`].
fn read_shaped(
    path: &Path,
    follow: Follow,
    named_pkcs12: bool,
) -> Result<Option<(Shape, Vec<u8>)>, ReadError> {
    let (file, len) = match fsutil::open_regular(path, MAX_FILE, follow) {
        Ok(f) => f,
        Err(ReadError::TooLarge { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    let io = |source| ReadError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut head = Vec::with_capacity(SNIFF);
    (&file)
        .take(SNIFF.min(len as usize) as u64)
        .read_to_end(&mut head)
        .map_err(io)?;
    let shape = match sniff(&head) {
        Shape::Other | Shape::Der if named_pkcs12 => Shape::Pkcs12,
        Shape::Other => return Ok(None),
        shape => shape,
    };
    let mut bytes = head;
    // At most MAX_FILE in all, however the file grows meanwhile.
    (&file)
        .take(MAX_FILE + 1 - bytes.len() as u64)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > MAX_FILE {
        return Ok(None);
    }
    Ok(Some((shape, bytes)))
}

/// Why a file that must hold a certificate (managed, exception) does not give one.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CertFileError {
    /// Not a certificate in PEM or DER (RFC 7468, RFC 5280), or larger than [`MAX_FILE`].
    #[error("{}: holds no certificate (or is larger than {} KiB)", .0.display(), MAX_FILE / 1024)]
    NoCertificate(PathBuf),
    /// Missing, not a regular file, unreadable, or a certificate that does not parse.
    #[error("{}: {}", .path.display(), .error.reason())]
    Unreadable { path: PathBuf, error: ReadError },
    /// A PKCS#12 bundle that cannot be opened (an exception's).
    #[error("{}: {error}", .path.display())]
    Pkcs12 {
        path: PathBuf,
        error: pkcs12::Pkcs12Error,
    },
}

/// The certificate of an `[[exception]]` at `path`: the leaf of a PEM or DER file, or of a
/// PKCS#12 bundle (opened with `passwords`, as discovery opens it). A symlink at `path`
/// is followed; only a regular file is read.
pub(crate) fn read_exception(
    path: &Path,
    passwords: &[Pkcs12PasswordFile],
) -> Result<CertInfo, CertFileError> {
    let unreadable = |error| CertFileError::Unreadable {
        path: path.to_path_buf(),
        error,
    };
    let found = match read_shaped(path, Follow::Yes, pkcs12::named_like(path)) {
        Ok(Some((Shape::Pkcs12, bytes))) => {
            let certs = pkcs12::read_bundle(&bytes, path, passwords).map_err(|error| {
                CertFileError::Pkcs12 {
                    path: path.to_path_buf(),
                    error,
                }
            })?;
            // The bundle's leaf, else its first certificate.
            let leaf = certs.iter().position(|c| c.leaf).unwrap_or(0);
            certs.into_iter().nth(leaf).map(|c| c.info)
        }
        Ok(Some((shape, bytes))) => leaf_of(path, shape, bytes).map_err(unreadable)?,
        Ok(None) => None,
        Err(error) => return Err(unreadable(error)),
    };
    found.ok_or_else(|| CertFileError::NoCertificate(path.to_path_buf()))
}

#[derive(Debug, PartialEq, Eq)]
enum Shape {
    Pem,
    Der,
    /// A DER PFX (RFC 7292 §4).
    Pkcs12,
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
    if pkcs12::sniff(head) {
        return Shape::Pkcs12;
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

    fn pem(name: &str) -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        rcgen::CertificateParams::new(vec![name.to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap()
            .pem()
    }

    fn names(scan: &Scan) -> Vec<String> {
        scan.found()
            .map(|f| {
                format!(
                    "{}={}",
                    f.path.file_name().unwrap().to_string_lossy(),
                    f.leaf.dns_names.join(",")
                )
            })
            .collect()
    }

    /// The walk reports real directories only (a symlink to a big tree adds none), before
    /// reading them; an update walks only what changed, and a FIFO swapped in at a
    /// certificate's name is reported, never waited on.
    #[test]
    fn scan_reports_real_directories_and_updates_only_what_changed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("scan");
        fs::create_dir_all(root.join("sub")).unwrap();
        fs::write(root.join("a.pem"), pem("a.test")).unwrap();
        fs::write(root.join("sub/b.pem"), pem("b.test")).unwrap();
        std::os::unix::fs::symlink("/usr", root.join("usr")).unwrap();
        std::os::unix::fs::symlink(root.join("a.pem"), root.join("sub/a-link.pem")).unwrap();
        let roots = vec![root.clone()];
        let skip = HashSet::new();
        let mut walked = Vec::new();
        let mut scan = scan(&roots, &skip, &mut |d| walked.push(d.to_path_buf()));
        walked.sort();
        assert_eq!(walked, vec![root.clone(), root.join("sub")]);
        assert_eq!(scan.dirs().count(), 2);
        assert_eq!(
            names(&scan),
            ["a.pem=a.test", "a-link.pem=a.test", "b.pem=b.test"]
        );

        // A new directory with a certificate, a replaced certificate (the link follows),
        // a removed one, and a FIFO at a certificate's name.
        fs::create_dir(root.join("new")).unwrap();
        fs::write(root.join("new/c.pem"), pem("c.test")).unwrap();
        fs::write(root.join("a.pem"), pem("a2.test")).unwrap();
        fs::remove_file(root.join("sub/b.pem")).unwrap();
        nix::unistd::mkfifo(
            &root.join("sub/b.pem"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        let changed: BTreeSet<PathBuf> = [
            root.join("new"),
            root.join("a.pem"),
            root.join("sub/b.pem"),
            root.join("elsewhere"),
        ]
        .into_iter()
        .chain([dir.path().join("outside")])
        .collect();
        let mut walked = Vec::new();
        let started = std::time::Instant::now();
        let gone = scan.update(&roots, &skip, &changed, &mut |d| {
            walked.push(d.to_path_buf())
        });
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        assert_eq!(
            walked,
            vec![root.join("new")],
            "only the new directory is walked"
        );
        assert!(gone.is_empty());
        assert_eq!(
            names(&scan),
            ["a.pem=a2.test", "c.pem=c.test", "a-link.pem=a2.test"]
        );
        // A FIFO found by the listing is not a file to look at.
        assert!(scan.errors().is_empty(), "{:?}", scan.errors());

        // The race: listed as a regular file, a FIFO by the time it is opened.
        let victim = root.join("sub/race.pem");
        fs::write(&victim, pem("race.test")).unwrap();
        let stale = fs::symlink_metadata(&victim).unwrap();
        fs::remove_file(&victim).unwrap();
        nix::unistd::mkfifo(&victim, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let canon = canonical_roots(&roots);
        scan.visit_file(&victim, &stale, &skip, &canon);
        assert_eq!(scan.errors().len(), 1, "{:?}", scan.errors());
        assert!(
            scan.errors()[0].contains("is a FIFO"),
            "{:?}",
            scan.errors()
        );

        // A removed directory is returned, to be unwatched.
        fs::remove_dir_all(root.join("new")).unwrap();
        let changed: BTreeSet<PathBuf> = [root.join("new")].into_iter().collect();
        let gone = scan.update(&roots, &skip, &changed, &mut |_| {});
        assert_eq!(gone, vec![root.join("new")]);
        assert_eq!(scan.dirs().count(), 2);
    }

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

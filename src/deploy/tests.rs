//! Tests of `deploy`: staging and committing, sweeping, the directory check, inspection.

use std::collections::HashSet;
use std::fs::{self, Permissions};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::deployed::MAX_DEPLOYED_FILE;
use super::stage::{create_exclusive, sweep_temporaries_of, TEMP_MARKER};
use super::*;
use crate::config::KeyType;
use crate::config::{FileKind, FileSet};
use crate::x509::PrivateKey;
use std::os::unix::fs::MetadataExt;
use std::sync::Mutex;

/// The umask is per process; tests that depend on it or create files whose modes they
/// check take this lock.
static UMASK: Mutex<()> = Mutex::new(());

/// Sets the umask back when dropped.
struct Restore(nix::sys::stat::Mode);

impl Drop for Restore {
    fn drop(&mut self) {
        nix::sys::stat::umask(self.0);
    }
}

fn lock() -> std::sync::MutexGuard<'static, ()> {
    UMASK.lock().unwrap_or_else(|e| e.into_inner())
}

/// A temporary directory only its owner can write, whatever the umask: deploying
/// refuses directories others can write, and tempfile's default is 0777 & !umask.
fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .permissions(Permissions::from_mode(0o700))
        .tempdir()
        .expect("tempdir")
}

/// mkdir, mode 0755 whatever the umask.
fn mkdir(path: impl AsRef<Path>) {
    let path = path.as_ref();
    fs::create_dir(path).expect("mkdir");
    fs::set_permissions(path, Permissions::from_mode(0o755)).expect("chmod");
}

fn mkdir_all(path: impl AsRef<Path>) {
    let path = path.as_ref();
    if let Some(parent) = path.parent() {
        if !parent.exists() {
            mkdir_all(parent);
        }
    }
    mkdir(path);
}

struct Issued {
    key: PrivateKey,
    material: Material,
}

/// A leaf signed by a throwaway intermediate: a real two-certificate chain.
fn issue(names: &[&str]) -> Issued {
    let ca_key = rcgen::KeyPair::generate().expect("ca key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).expect("ca cert");
    let issuer = rcgen::Issuer::new(ca_params, ca_key);

    let key = PrivateKey::generate(KeyType::EcdsaP256).expect("key");
    let leaf_key = rcgen::KeyPair::from_pem(&key.to_pem()).expect("reload");
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let leaf = rcgen::CertificateParams::new(names)
        .expect("params")
        .signed_by(&leaf_key, &issuer)
        .expect("leaf");
    Issued {
        material: Material {
            key_pem: key.to_pem(),
            chain_pem: vec![leaf.pem(), ca_cert.pem()],
            pkcs12: None,
        },
        key,
    }
}

/// Stages the whole file set, then renames it all into place.
fn deploy(
    files: &FileSet,
    m: &Material,
    owner: &Ownership,
    key_mode: u32,
) -> Result<(), DeployError> {
    stage(files, m, owner, key_mode)?.commit()
}

/// Removes the temporaries beside the targets of `files` ([`sweep_temporaries_of`] for one
/// set), returning their paths.
fn sweep_temporaries(files: &FileSet) -> io::Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    for (_, result) in sweep_temporaries_of([files], &HashSet::new()) {
        removed.extend(result?);
    }
    Ok(removed)
}

/// `base/tls`, mode 0755: a directory only its owner can write.
fn tls_in(base: &tempfile::TempDir) -> PathBuf {
    let tls = base.path().join("tls");
    mkdir(&tls);
    tls
}

/// `base/victim`, holding "victim": what a planted link points at, which must stay as is.
fn victim_in(base: &tempfile::TempDir) -> PathBuf {
    let victim = base.path().join("victim");
    fs::write(&victim, "victim").expect("victim");
    victim
}

/// Every kind of file, each under its usual name in `dir`.
pub(crate) fn all_files(dir: &Path) -> FileSet {
    FileSet {
        cert: Some(dir.join("cert.pem")),
        chain: Some(dir.join("chain.pem")),
        fullchain: Some(dir.join("fullchain.pem")),
        key: Some(dir.join("key.pem")),
        combined: Some(dir.join("combined.pem")),
        pkcs12: None,
    }
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path)
        .expect("stat")
        .permissions()
        .mode()
        & 0o7777
}

fn temporaries(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(TEMP_MARKER))
        .collect()
}

#[test]
fn render_puts_each_part_in_its_file() {
    let dir = Path::new("/d");
    let m = Material {
        key_pem: "K\n".into(),
        chain_pem: vec!["L\n".into(), "I1\n".into(), "I2".into()],
        pkcs12: None,
    };
    let out = render(&all_files(dir), &m);
    let text: Vec<(FileKind, String)> = out
        .into_iter()
        .map(|(k, _, c)| (k, String::from_utf8(c).expect("utf8")))
        .collect();
    assert_eq!(
        text,
        vec![
            (FileKind::Cert, "L\n".into()),
            (FileKind::Chain, "I1\nI2\n".into()),
            (FileKind::Fullchain, "L\nI1\nI2\n".into()),
            (FileKind::Key, "K\n".into()),
            (FileKind::Combined, "K\nL\nI1\nI2\n".into()),
        ]
    );
    assert!(!format!("{m:?}").contains("K\\n"));
}

#[test]
fn deploys_all_five_kinds_with_exact_modes_under_any_umask() {
    let _guard = lock();
    for umask in [0o000, 0o077] {
        // Made before the umask changes: under umask 0 it would be world-writable,
        // which deploying refuses.
        let dir = tempdir();
        let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(umask));
        // Put back even if an assertion fails, so other tests do not run under it.
        let restore = Restore(old);
        let files = all_files(dir.path());
        let issued = issue(&["example.org"]);

        for key_mode in [0o600, 0o640] {
            let staged =
                stage(&files, &issued.material, &Ownership::default(), key_mode).expect("stage");
            // Before any rename the temporaries already carry their final modes.
            for (kind, target, temp) in staged.files() {
                let want = if kind.holds_key() { key_mode } else { 0o644 };
                assert_eq!(mode(temp), want, "{kind:?} temp, umask {umask:o}");
                assert_eq!(parent_dir(temp), parent_dir(target));
                assert!(!target.exists() || key_mode == 0o640);
            }
            staged.commit().expect("commit");

            for (kind, path) in files.iter() {
                let want = if kind.holds_key() { key_mode } else { 0o644 };
                assert_eq!(mode(path), want, "{kind:?}, umask {umask:o}");
            }
            assert!(temporaries(dir.path()).is_empty());
        }
        drop(restore);

        let m = &issued.material;
        let read =
            |p: &Option<PathBuf>| fs::read_to_string(p.as_ref().expect("path")).expect("read");
        assert_eq!(read(&files.cert), m.chain_pem[0]);
        assert_eq!(read(&files.chain), m.chain_pem[1]);
        assert_eq!(read(&files.fullchain), m.chain_pem.concat());
        assert_eq!(read(&files.key), m.key_pem);
        assert_eq!(
            read(&files.combined),
            format!("{}{}", m.key_pem, m.chain_pem.concat())
        );

        let leaf = inspect(&files).expect("inspect");
        assert!(issued.key.matches(&leaf));
        assert_eq!(leaf.dns_names, vec!["example.org"]);
    }
}

#[test]
fn key_mode_wider_than_0640_is_refused() {
    let dir = tempdir();
    let issued = issue(&["example.org"]);
    for bad in [0o644, 0o660, 0o604, 0o4600] {
        let err = deploy(
            &all_files(dir.path()),
            &issued.material,
            &Ownership::default(),
            bad,
        )
        .expect_err("wide mode");
        assert!(matches!(err, DeployError::KeyModeTooWide(m) if m == bad));
    }
    assert_eq!(fs::read_dir(dir.path()).expect("dir").count(), 0);
}

#[test]
fn ownership_is_applied_before_contents() {
    let _guard = lock();
    if !Uid::effective().is_root() {
        eprintln!("skipped: chown needs root");
        return;
    }
    let dir = tempdir();
    let files = all_files(dir.path());
    let owner = Ownership::resolve(Some("65534"), Some("65533")).expect("numeric ids");
    let issued = issue(&["example.org"]);
    let staged = stage(&files, &issued.material, &owner, 0o640).expect("stage");
    for (_, _, temp) in staged.files() {
        let meta = fs::metadata(temp).expect("stat");
        assert_eq!((meta.uid(), meta.gid()), (65534, 65533));
    }
    staged.commit().expect("commit");
    let meta = fs::metadata(files.key.as_ref().expect("key")).expect("stat");
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o777),
        (65534, 65533, 0o640)
    );
}

#[test]
fn ownership_resolves_names_and_rejects_unknown_ones() {
    let root = Ownership::resolve(Some("root"), Some("root")).expect("root");
    assert_eq!(root.uid, Some(Uid::from_raw(0)));
    assert_eq!(root.gid, Some(Gid::from_raw(0)));
    assert_eq!(
        Ownership::resolve(None, None).expect("none"),
        Ownership::default()
    );
    let err = Ownership::resolve(Some("no-such-user-renewd"), None).expect_err("user");
    assert!(err.to_string().contains("no-such-user-renewd"), "{err}");
    let err = Ownership::resolve(None, Some("no-such-group-renewd")).expect_err("group");
    assert!(err.to_string().contains("no-such-group-renewd"), "{err}");
}

#[test]
fn a_symlink_at_the_target_is_replaced_not_followed() {
    let _guard = lock();
    let dir = tempdir();
    let victim = dir.path().join("victim");
    fs::write(&victim, "victim").expect("victim");
    let victim_mode = mode(&victim);
    let key_path = dir.path().join("key.pem");
    std::os::unix::fs::symlink(&victim, &key_path).expect("symlink");
    let files = FileSet {
        cert: None,
        chain: None,
        fullchain: Some(dir.path().join("fullchain.pem")),
        key: Some(key_path.clone()),
        combined: None,
        pkcs12: None,
    };
    let issued = issue(&["example.org"]);
    deploy(&files, &issued.material, &Ownership::default(), 0o600).expect("deploy");
    assert!(fs::symlink_metadata(&key_path).expect("stat").is_file());
    assert_eq!(
        fs::read_to_string(&key_path).expect("key"),
        issued.material.key_pem
    );
    assert_eq!(fs::read_to_string(&victim).expect("victim"), "victim");
    assert_eq!(mode(&victim), victim_mode);
}

#[test]
fn a_symlink_at_the_temporary_name_makes_creation_fail() {
    let dir = tempdir();
    let victim = dir.path().join("victim");
    fs::write(&victim, "victim").expect("victim");
    let temp = dir.path().join(".key.pem.renewd-0123456789abcdef");
    std::os::unix::fs::symlink(&victim, &temp).expect("symlink");
    let err = create_exclusive(&temp, 0o600).expect_err("planted symlink");
    assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
    assert_eq!(fs::read_to_string(&victim).expect("victim"), "victim");

    // A dangling symlink is the dangerous case: without O_EXCL, O_CREAT would create
    // the file it points to.
    let dangling = dir.path().join(".cert.pem.renewd-0123456789abcdef");
    let elsewhere = dir.path().join("created-through-symlink");
    std::os::unix::fs::symlink(&elsewhere, &dangling).expect("symlink");
    let err = create_exclusive(&dangling, 0o600).expect_err("dangling symlink");
    assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
    assert!(!elsewhere.exists());
}

/// Tests run as root, which ignores directory permissions, so the failing file goes to
/// /proc, where creating a file fails (ENOENT) for every user, yet /proc passes the
/// directory check (root's, not writable). Its target comes last in the set, so three
/// temporaries have already been written when staging fails. (ENOSPC, EROFS and EACCES
/// part-way through are exercised with the real binary in tests/it/deploy_safety.rs.)
#[test]
fn failed_staging_leaves_old_files_and_no_temporaries() {
    let _guard = lock();
    let dir = tempdir();
    let files = FileSet {
        cert: Some(dir.path().join("cert.pem")),
        chain: None,
        fullchain: Some(dir.path().join("fullchain.pem")),
        key: Some(dir.path().join("key.pem")),
        combined: Some(PathBuf::from("/proc/renewd-test-combined.pem")),
        pkcs12: None,
    };
    let old = issue(&["old.example"]);
    let old_files = FileSet {
        combined: None,
        ..all_files(dir.path())
    };
    deploy(&old_files, &old.material, &Ownership::default(), 0o600).expect("old");
    let before: Vec<Vec<u8>> = old_files
        .iter()
        .map(|(_, p)| fs::read(p).expect("old file"))
        .collect();

    let new = issue(&["new.example"]);
    let err = deploy(&files, &new.material, &Ownership::default(), 0o600).expect_err("stage");
    assert!(matches!(err, DeployError::Stage { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("/proc/renewd-test-combined.pem"), "{msg}");
    assert!(
        msg.contains("/proc/.renewd-test-combined.pem.renewd-"),
        "{msg}"
    );
    assert!(msg.contains("No such file or directory"), "{msg}");

    let after: Vec<Vec<u8>> = old_files
        .iter()
        .map(|(_, p)| fs::read(p).expect("old file"))
        .collect();
    assert_eq!(before, after);
    assert!(
        temporaries(dir.path()).is_empty(),
        "{:?}",
        temporaries(dir.path())
    );
    assert!(inspect(&old_files).is_ok());
}

/// A regular file where a directory should be is found before anything is written.
#[test]
fn a_file_in_place_of_a_directory_is_found_before_writing() {
    let _guard = lock();
    let dir = tempdir();
    let not_a_dir = dir.path().join("plain-file");
    fs::write(&not_a_dir, "x").expect("plain file");
    let files = FileSet {
        combined: Some(not_a_dir.join("combined.pem")),
        ..all_files(dir.path())
    };
    let issued = issue(&["example.org"]);
    let err = deploy(&files, &issued.material, &Ownership::default(), 0o600)
        .expect_err("not a directory");
    assert!(
        matches!(&err, DeployError::NotADirectory { path, .. } if *path == not_a_dir),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("plain-file is not a directory"),
        "{err}"
    );
    assert_eq!(fs::read_dir(dir.path()).expect("dir").count(), 1);
}

/// /proc refuses new files even to root: a second, different way staging can fail.
#[test]
fn staging_under_proc_fails_cleanly() {
    let files = FileSet {
        cert: Some(PathBuf::from("/proc/renewd-test-cert.pem")),
        chain: None,
        fullchain: None,
        key: None,
        combined: None,
        pkcs12: None,
    };
    let issued = issue(&["example.org"]);
    let err = deploy(&files, &issued.material, &Ownership::default(), 0o600).expect_err("proc");
    assert!(
        err.to_string().contains("/proc/renewd-test-cert.pem"),
        "{err}"
    );
}

#[test]
fn dropping_a_staged_set_removes_its_temporaries() {
    let _guard = lock();
    let dir = tempdir();
    let files = all_files(dir.path());
    let issued = issue(&["example.org"]);
    let staged = stage(&files, &issued.material, &Ownership::default(), 0o600).expect("stage");
    assert_eq!(temporaries(dir.path()).len(), 5);
    drop(staged);
    assert_eq!(fs::read_dir(dir.path()).expect("dir").count(), 0);
}

#[test]
fn stale_temporaries_are_swept() {
    let _guard = lock();
    let dir = tempdir();
    let files = all_files(dir.path());
    let issued = issue(&["example.org"]);
    let staged = stage(&files, &issued.material, &Ownership::default(), 0o600).expect("stage");
    std::mem::forget(staged); // as if the process had died here
    fs::write(dir.path().join(".unrelated"), "keep").expect("unrelated");
    let removed = sweep_temporaries(&files).expect("sweep");
    assert_eq!(removed.len(), 5);
    assert!(temporaries(dir.path()).is_empty());
    assert!(dir.path().join(".unrelated").exists());
}

#[test]
fn a_failed_rename_says_how_far_it_got_and_cleans_up() {
    let _guard = lock();
    let dir = tempdir();
    let files = all_files(dir.path());
    let issued = issue(&["example.org"]);

    // A directory at a target is refused before anything is written...
    fs::create_dir(path(&files.combined)).expect("mkdir");
    let err = deploy(&files, &issued.material, &Ownership::default(), 0o600)
        .expect_err("directory target");
    assert!(matches!(err, DeployError::TargetIsDirectory(_)), "{err:?}");
    assert_eq!(fs::read_dir(dir.path()).expect("dir").count(), 1);
    fs::remove_dir(path(&files.combined)).expect("rmdir");

    // ...and one that appears after staging makes the rename fail part-way.
    let staged = stage(&files, &issued.material, &Ownership::default(), 0o600).expect("stage");
    fs::create_dir(path(&files.combined)).expect("mkdir");
    fs::write(path(&files.combined).join("inside"), "x").expect("fill");
    let err = staged.commit().expect_err("rename onto a directory");
    match &err {
        DeployError::Rename {
            target,
            replaced,
            total,
            ..
        } => {
            assert_eq!(*target, path(&files.combined));
            assert_eq!((*replaced, *total), (4, 5));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(err.to_string().contains("4 of 5"), "{err}");
    assert!(temporaries(dir.path()).is_empty());
    assert_eq!(
        fs::read_to_string(path(&files.key)).expect("key"),
        issued.material.key_pem
    );
}

#[test]
fn duplicate_targets_and_empty_chains_are_refused() {
    let dir = tempdir();
    let issued = issue(&["example.org"]);
    let same = dir.path().join("same.pem");
    let files = FileSet {
        cert: Some(same.clone()),
        chain: None,
        fullchain: Some(same),
        key: None,
        combined: None,
        pkcs12: None,
    };
    assert!(matches!(
        deploy(&files, &issued.material, &Ownership::default(), 0o600),
        Err(DeployError::DuplicateTarget(_))
    ));
    let empty = Material {
        key_pem: issued.material.key_pem.clone(),
        chain_pem: Vec::new(),
        pkcs12: None,
    };
    assert!(matches!(
        deploy(&all_files(dir.path()), &empty, &Ownership::default(), 0o600),
        Err(DeployError::EmptyChain)
    ));
}

fn deployed(dir: &Path) -> (FileSet, Issued) {
    let files = all_files(dir);
    let issued = issue(&["example.org"]);
    deploy(&files, &issued.material, &Ownership::default(), 0o600).expect("deploy");
    (files, issued)
}

fn path(p: &Option<PathBuf>) -> PathBuf {
    p.clone().expect("configured")
}

#[test]
fn inspect_reports_missing_and_unreadable_files() {
    let _guard = lock();
    let dir = tempdir();
    let (files, _) = deployed(dir.path());

    fs::remove_file(path(&files.chain)).expect("rm");
    assert_eq!(
        inspect(&files),
        Err(DeployedProblem::Missing(path(&files.chain)))
    );

    // A directory where a file should be is not mistaken for an empty file.
    fs::create_dir(path(&files.chain)).expect("mkdir");
    assert!(
        matches!(inspect(&files), Err(DeployedProblem::Invalid(p, _)) if p == path(&files.chain))
    );
    fs::remove_dir(path(&files.chain)).expect("rmdir");

    // A symlink loop cannot be opened at all.
    std::os::unix::fs::symlink(path(&files.chain), path(&files.chain)).expect("loop");
    let problem = inspect(&files).expect_err("loop");
    assert!(matches!(&problem, DeployedProblem::Unreadable(p, _) if *p == path(&files.chain)));
    assert!(
        problem.to_string().contains("chain.pem cannot be read"),
        "{problem}"
    );

    // A FIFO must not hang the check.
    fs::remove_file(path(&files.chain)).expect("rm");
    nix::unistd::mkfifo(
        &path(&files.chain),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .expect("mkfifo");
    assert!(matches!(inspect(&files), Err(DeployedProblem::Invalid(..))));
}

#[test]
fn inspect_reports_invalid_contents() {
    let _guard = lock();
    let dir = tempdir();
    let (files, issued) = deployed(dir.path());
    let cases: Vec<(Option<PathBuf>, Vec<u8>)> = vec![
        (files.cert.clone(), b"garbage".to_vec()),
        (
            files.fullchain.clone(),
            b"-----BEGIN CERTIFICATE-----\nAAAA".to_vec(),
        ),
        (
            files.key.clone(),
            issued.material.chain_pem[0].clone().into_bytes(),
        ),
        (
            files.combined.clone(),
            issued.material.chain_pem.concat().into_bytes(),
        ),
        (files.chain.clone(), vec![0xff; 100]),
        (
            files.cert.clone(),
            vec![b'A'; (MAX_DEPLOYED_FILE + 1) as usize],
        ),
    ];
    for (p, contents) in cases {
        let p = path(&p);
        let good = fs::read(&p).expect("read");
        fs::write(&p, &contents).expect("write");
        let problem = inspect(&files).expect_err("invalid");
        assert!(
            matches!(&problem, DeployedProblem::Invalid(q, _) if *q == p),
            "{}: {problem:?}",
            p.display()
        );
        assert!(problem.to_string().contains(&*p.to_string_lossy()));
        fs::write(&p, good).expect("restore");
    }
    assert!(inspect(&files).is_ok());
}

#[test]
fn inspect_reports_a_key_that_does_not_match() {
    let _guard = lock();
    let dir = tempdir();
    let (files, issued) = deployed(dir.path());
    let other = PrivateKey::generate(KeyType::EcdsaP256).expect("other");
    fs::write(path(&files.key), other.to_pem()).expect("write");
    assert_eq!(
        inspect(&files),
        Err(DeployedProblem::KeyMismatch(path(&files.key)))
    );
    fs::write(path(&files.key), &issued.material.key_pem).expect("restore");

    let combined = format!("{}{}", other.to_pem(), issued.material.chain_pem.concat());
    fs::write(path(&files.combined), combined).expect("write");
    let problem = inspect(&files).expect_err("mismatch");
    assert_eq!(problem, DeployedProblem::KeyMismatch(path(&files.combined)));
    assert!(problem.to_string().contains("does not belong"), "{problem}");
}

#[test]
fn inspect_reports_files_that_disagree() {
    let _guard = lock();
    let dir = tempdir();
    let (files, issued) = deployed(dir.path());
    let other = issue(&["other.example"]);

    fs::write(path(&files.cert), &other.material.chain_pem[0]).expect("write");
    let problem = inspect(&files).expect_err("disagree");
    assert!(
        matches!(problem, DeployedProblem::Inconsistent(_)),
        "{problem:?}"
    );
    assert!(problem.to_string().contains("cert.pem"), "{problem}");
    fs::write(path(&files.cert), &issued.material.chain_pem[0]).expect("restore");

    fs::write(path(&files.chain), &other.material.chain_pem[1]).expect("write");
    let problem = inspect(&files).expect_err("chain");
    assert!(
        matches!(problem, DeployedProblem::Inconsistent(_)),
        "{problem:?}"
    );
    fs::write(path(&files.chain), &issued.material.chain_pem[1]).expect("restore");

    // Only a key configured: nothing to check the key against.
    let key_only = FileSet {
        cert: None,
        chain: None,
        fullchain: None,
        key: files.key.clone(),
        combined: None,
        pkcs12: None,
    };
    assert!(matches!(
        inspect(&key_only),
        Err(DeployedProblem::Inconsistent(_))
    ));
    assert!(inspect(&files).is_ok());
}

// --- directories, links, errors ------------------------------------------------------

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, Permissions::from_mode(mode)).expect("chmod");
}

fn chown(path: &Path, uid: Option<u32>, gid: Option<u32>) {
    std::os::unix::fs::lchown(path, uid, gid).expect("lchown");
}

/// A uid and gid no test machine gives to renewd or root.
const STRANGER: u32 = 4242;

fn unsafe_reason(dir: &Path) -> String {
    match check_target_dir(dir) {
        Err(DeployError::UnsafeDirectory { dir: d, reason }) => {
            assert_eq!(d, dir);
            reason
        }
        other => panic!("{}: expected UnsafeDirectory, got {other:?}", dir.display()),
    }
}

#[test]
fn directories_others_can_write_are_refused_before_anything_is_written() {
    let _guard = lock();
    let base = tempdir();
    let tls = tls_in(&base);
    let files = all_files(&tls);
    let issued = issue(&["example.org"]);
    let refused = |want: &[&str]| {
        let err = deploy(&files, &issued.material, &Ownership::default(), 0o600)
            .expect_err("unsafe directory");
        let msg = err.to_string();
        assert!(
            msg.starts_with(&format!("refusing to write into {}: ", tls.display())),
            "{msg}"
        );
        for w in want {
            assert!(msg.contains(w), "{w:?} not in {msg}");
        }
        assert_eq!(
            fs::read_dir(&tls).expect("dir").count(),
            0,
            "nothing written"
        );
    };

    chmod(&tls, 0o777);
    refused(&["every user can write in it", "mode 0777", "chmod go-w"]);
    chmod(&tls, 0o1777);
    refused(&["mode 1777", "the sticky bit does not make it safe"]);
    chmod(&tls, 0o755);
    check_target_dir(&tls).expect("0755, renewd's own");

    if !Uid::effective().is_root() {
        eprintln!("skipped the ownership cases: chown needs root");
        return;
    }
    chmod(&tls, 0o775);
    chown(&tls, None, Some(0));
    check_target_dir(&tls).expect("group root may write");
    chown(&tls, None, Some(STRANGER));
    refused(&[
        &format!("group {STRANGER} can write in it"),
        "chmod g-w",
        "mode 0775",
    ]);
    chmod(&tls, 0o2755);
    check_target_dir(&tls).expect("a group that cannot write is fine");
    chown(&tls, Some(STRANGER), Some(0));
    chmod(&tls, 0o755);
    refused(&[&format!("owned by user {STRANGER}"), "chown root"]);
    chown(&tls, Some(0), Some(0));
    deploy(&files, &issued.material, &Ownership::default(), 0o600).expect("safe again");
}

#[test]
fn ancestors_that_others_could_swap_are_refused() {
    let _guard = lock();
    let base = tempdir();
    let shared = base.path().join("shared");
    let tls = shared.join("tls");
    mkdir_all(&tls);

    chmod(&shared, 0o777);
    let reason = unsafe_reason(&tls);
    assert!(reason.contains("every user can write in"), "{reason}");
    assert!(reason.contains(&*shared.to_string_lossy()), "{reason}");
    assert!(reason.contains("chmod +t"), "{reason}");

    // The sticky bit keeps others from moving `tls`, as long as it is not theirs.
    chmod(&shared, 0o1777);
    check_target_dir(&tls).expect("sticky ancestor, tls owned by root");
    // `..` and `.` are resolved like the kernel does.
    check_target_dir(&shared.join("tls/../tls/.")).expect("dots");

    if !Uid::effective().is_root() {
        eprintln!("skipped the ownership cases: chown needs root");
        return;
    }
    chown(&shared, Some(STRANGER), None);
    chmod(&shared, 0o755);
    let reason = unsafe_reason(&tls);
    assert!(
        reason.contains(&format!("owned by user {STRANGER}")),
        "{reason}"
    );
    assert!(reason.contains(&*shared.to_string_lossy()), "{reason}");
    chown(&shared, Some(0), None);
    chmod(&shared, 0o1777);

    // A symlink in a sticky, world-writable directory is as safe as its owner.
    let good = base.path().join("good");
    mkdir(&good);
    let link = shared.join("link");
    std::os::unix::fs::symlink(&good, &link).expect("symlink");
    check_target_dir(&link).expect("root's link");
    chown(&link, Some(STRANGER), None);
    let reason = unsafe_reason(&link);
    assert!(
        reason.contains(&format!("belongs to user {STRANGER}")),
        "{reason}"
    );
    assert!(reason.contains("mode 1777"), "{reason}");
}

#[test]
fn symlinked_directories_are_judged_by_where_they_lead() {
    let _guard = lock();
    let base = tempdir();
    let open = base.path().join("open");
    mkdir(&open);
    chmod(&open, 0o777);
    let link = base.path().join("tls");
    std::os::unix::fs::symlink("open", &link).expect("symlink");
    let reason = unsafe_reason(&link);
    assert!(reason.contains("every user can write in it"), "{reason}");

    // Through a link, then below an open directory reached through it.
    mkdir(open.join("sub"));
    let reason = unsafe_reason(&link.join("sub"));
    assert!(reason.contains("chmod +t"), "{reason}");

    chmod(&open, 0o755);
    check_target_dir(&link).expect("safe target");
    check_target_dir(&link.join("sub")).expect("safe target");

    let looped = base.path().join("loop");
    std::os::unix::fs::symlink("loop", &looped).expect("symlink");
    let err = check_target_dir(&looped).expect_err("loop");
    assert!(
        matches!(err, DeployError::DirectoryLookup { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("symbolic links"), "{err}");

    let missing = base.path().join("nope/tls");
    let err = check_target_dir(&missing).expect_err("missing");
    assert!(
        matches!(&err, DeployError::MissingDirectory { missing: m, .. } if *m == base.path().join("nope")),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains("does not exist"), "{msg}");
    assert!(msg.contains("renewd creates no directories"), "{msg}");

    let dangling = base.path().join("dangling");
    std::os::unix::fs::symlink("gone", &dangling).expect("symlink");
    assert!(matches!(
        check_target_dir(&dangling),
        Err(DeployError::MissingDirectory { .. })
    ));
}

/// A key target hard-linked to a file elsewhere is replaced by a new inode: the other
/// name keeps its contents.
#[test]
fn a_hard_link_at_the_target_is_replaced_not_written_through() {
    let _guard = lock();
    let base = tempdir();
    let tls = tls_in(&base);
    let victim = victim_in(&base);
    let files = all_files(&tls);
    fs::hard_link(&victim, path(&files.key)).expect("link");
    let issued = issue(&["example.org"]);
    deploy(&files, &issued.material, &Ownership::default(), 0o600).expect("deploy");
    assert_eq!(fs::read_to_string(&victim).expect("victim"), "victim");
    let (v, k) = (
        fs::metadata(&victim).expect("stat"),
        fs::metadata(path(&files.key)).expect("stat"),
    );
    assert_ne!(v.ino(), k.ino());
    assert_eq!(v.nlink(), 1);
    assert_eq!(
        fs::read_to_string(path(&files.key)).expect("key"),
        issued.material.key_pem
    );
}

/// Names like renewd's temporaries, planted in bulk (as symlinks to a victim, dangling
/// symlinks, a directory): deploying still works, nothing is written through them, and
/// sweeping removes the links themselves, never what they point to.
#[test]
fn a_directory_full_of_planted_links_is_harmless() {
    let _guard = lock();
    let base = tempdir();
    let tls = tls_in(&base);
    let victim = victim_in(&base);
    let elsewhere = base.path().join("elsewhere");
    mkdir(&elsewhere);
    let files = all_files(&tls);
    let mut planted = 0;
    for (_, target) in files.iter() {
        let name = target.file_name().expect("name").to_string_lossy();
        for i in 0..100 {
            let temp = tls.join(format!(
                ".{name}{TEMP_MARKER}{:016x}",
                rand::random::<u64>()
            ));
            if i % 2 == 0 {
                std::os::unix::fs::symlink(&victim, &temp).expect("symlink");
            } else {
                std::os::unix::fs::symlink(elsewhere.join(format!("{i}-{name}")), &temp)
                    .expect("dangling symlink");
            }
            planted += 1;
        }
    }
    let planted_dir = tls.join(format!(".key.pem{TEMP_MARKER}0000000000000000"));
    mkdir(&planted_dir);
    fs::write(planted_dir.join("inside"), "keep").expect("write");

    let issued = issue(&["example.org"]);
    deploy(&files, &issued.material, &Ownership::default(), 0o600).expect("deploy");
    assert!(inspect(&files).is_ok());
    assert_eq!(fs::read_to_string(&victim).expect("victim"), "victim");
    assert_eq!(fs::read_dir(&elsewhere).expect("dir").count(), 0);

    let removed = sweep_temporaries(&files).expect("sweep");
    assert_eq!(removed.len(), planted);
    assert!(removed
        .iter()
        .all(|p| fs::symlink_metadata(p).is_err() && p.parent() == Some(&*tls)));
    assert_eq!(fs::read_to_string(&victim).expect("victim"), "victim");
    assert_eq!(
        fs::read_to_string(planted_dir.join("inside")).expect("kept"),
        "keep"
    );
    assert!(inspect(&files).is_ok());
}

#[test]
fn sweeping_refuses_a_directory_others_can_write() {
    let _guard = lock();
    let base = tempdir();
    let tls = tls_in(&base);
    let files = all_files(&tls);
    let leftover = tls.join(format!(".key.pem{TEMP_MARKER}0123456789abcdef"));
    fs::write(&leftover, "x").expect("leftover");
    chmod(&tls, 0o777);
    let err = sweep_temporaries(&files).expect_err("unsafe");
    assert!(err.to_string().contains("every user can write"), "{err}");
    assert!(leftover.exists());
    chmod(&tls, 0o755);
    assert_eq!(sweep_temporaries(&files).expect("sweep"), vec![leftover]);
    // A directory that does not exist has nothing to sweep.
    assert!(sweep_temporaries(&all_files(&base.path().join("gone")))
        .expect("missing")
        .is_empty());
}

#[test]
fn staging_errors_name_both_files_the_reason_and_what_it_means() {
    let target = PathBuf::from("/etc/tls/www.key");
    let temp = PathBuf::from("/etc/tls/.www.key.renewd-0123456789abcdef");
    let cases = [
        (Errno::ENOSPC, "No space left on device", "free some space"),
        (Errno::EROFS, "Read-only file system", "ReadWritePaths="),
        (Errno::EACCES, "Permission denied", "may not write there"),
        (Errno::EDQUOT, "quota", "quota of renewd's user"),
        (
            Errno::EEXIST,
            "File exists",
            "nothing was written through it",
        ),
    ];
    for (errno, os, hint) in cases {
        let err = DeployError::Stage {
            action: "write",
            target: target.clone(),
            temp: temp.clone(),
            source: io::Error::from(errno),
        };
        let msg = err.to_string();
        for want in [
            &*target.to_string_lossy(),
            &*temp.to_string_lossy(),
            os,
            hint,
        ] {
            assert!(msg.contains(want), "{want:?} not in {msg}");
        }
    }
}

/// `inspect` follows a symlink at a target (certbot's `live/` files are symlinks) but
/// opens nothing but regular files.
#[test]
fn inspect_does_not_open_device_nodes() {
    let _guard = lock();
    let dir = tempdir();
    let (files, _) = deployed(dir.path());
    fs::remove_file(path(&files.chain)).expect("rm");
    std::os::unix::fs::symlink("/dev/zero", path(&files.chain)).expect("symlink");
    let problem = inspect(&files).expect_err("device");
    assert!(
        matches!(&problem, DeployedProblem::Invalid(p, why) if *p == path(&files.chain) && why.ends_with("not a regular file")),
        "{problem:?}"
    );
}

// --- the digest of what renewd deployed ------------------------------------------------

#[test]
fn a_verified_digest_skips_the_checks_and_any_change_behind_its_back_is_still_caught() {
    let _guard = lock();
    let dir = tempdir();
    let (files, issued) = deployed(dir.path());
    let rendered = render(&files, &issued.material);
    let digest = set_digest(rendered.iter().map(|(k, _, d)| (*k, &d[..])));

    // The deployed bytes are the rendered ones: same digest, same leaf as the full checks.
    let (leaf, read) = inspect_known(&files, Some(&digest)).expect("verified");
    assert_eq!(read, digest);
    assert_eq!(leaf, inspect(&files).expect("full checks"));

    // Another key of the same size written over the key file, its mtime put back: the size
    // and the mtime say nothing changed, the bytes do.
    let key_path = path(&files.key);
    let before = fs::metadata(&key_path).expect("stat");
    let other = loop {
        let k = PrivateKey::generate(KeyType::EcdsaP256)
            .expect("other")
            .to_pem();
        if k.len() as u64 == before.len() {
            break k;
        }
    };
    fs::write(&key_path, &other).expect("write");
    fs::File::options()
        .write(true)
        .open(&key_path)
        .and_then(|f| f.set_modified(before.modified().expect("mtime")))
        .expect("set mtime");
    let after = fs::metadata(&key_path).expect("stat");
    assert_eq!(
        (after.len(), after.modified().ok(), after.ino()),
        (before.len(), before.modified().ok(), before.ino())
    );
    assert_eq!(
        inspect_known(&files, Some(&digest)).map(|(_, d)| d == digest),
        Err(DeployedProblem::KeyMismatch(key_path.clone()))
    );

    // A digest of other bytes is no shortcut either: the full checks run.
    fs::write(&key_path, &issued.material.key_pem).expect("restore");
    let wrong = [7u8; 32];
    let (_, read) = inspect_known(&files, Some(&wrong)).expect("full checks pass");
    assert_eq!(read, digest);
}

#[test]
fn the_set_digest_changes_with_any_byte_length_or_kind() {
    let base = set_digest([
        (FileKind::Fullchain, &b"abc"[..]),
        (FileKind::Key, &b"k"[..]),
    ]);
    for other in [
        set_digest([
            (FileKind::Fullchain, &b"abd"[..]),
            (FileKind::Key, &b"k"[..]),
        ]),
        set_digest([
            (FileKind::Fullchain, &b"ab"[..]),
            (FileKind::Key, &b"ck"[..]),
        ]),
        set_digest([(FileKind::Cert, &b"abc"[..]), (FileKind::Key, &b"k"[..])]),
        set_digest([(FileKind::Fullchain, &b"abc"[..])]),
    ] {
        assert_ne!(other, base);
    }
}

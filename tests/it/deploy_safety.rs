//! Safe writes, through the real `renewd` binary against a real Pebble: a full disk, a
//! read-only filesystem and a permission error part-way through staging leave the old set
//! byte for byte, with no temporaries and an error that names the file and the reason;
//! symlinks and hard links planted at targets are replaced, never written through;
//! directories others can write are refused by `run --once` and `check`; and, traced with
//! strace under umask 0 while another thread watches the directory, no key file ever
//! exists with a mode wider than `key_mode`.
//!
//! These tests need root, as CI and `scripts/test.sh` have: they mount tmpfs filesystems,
//! chown directories and run renewd as `nobody` with setpriv(1). Without root they fail
//! with a message saying so, rather than pass having checked nothing — except the full
//! disk test, which has a documented equivalent (see
//! [`a_full_disk_while_staging_leaves_the_old_set_and_no_temporaries`]).

use crate::common;
use crate::common::rig;

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::*;
use rand::Rng;
use rig::*;
use strace::{analyze, temp_of, Rules, Watcher};

mod strace;

const NOBODY: u32 = 65534;

/// Marks renewd's temporaries: `.NAME.renewd-<16 hex digits>` beside `NAME`.
const TEMP_MARKER: &str = ".renewd-";

fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

fn require_root(what: &str) {
    assert!(
        is_root(),
        "{what} needs root (to mount, chown and change user); CI and scripts/test.sh run \
         the tests as root"
    );
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

fn chown(path: &Path, uid: Option<u32>, gid: Option<u32>) {
    std::os::unix::fs::lchown(path, uid, gid)
        .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
}

fn mkdir(path: &Path) {
    fs::create_dir(path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
    chmod(path, 0o755);
}

/// Names in `dir` that look like renewd's temporaries.
fn temporaries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(TEMP_MARKER))
        .collect();
    names.sort();
    names
}

/// Every file's bytes, to compare before and after.
fn snapshot(paths: &[PathBuf]) -> Vec<(PathBuf, Vec<u8>, u32)> {
    paths
        .iter()
        .map(|p| {
            let bytes = fs::read(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
            (p.clone(), bytes, mode(p))
        })
        .collect()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Asserts a failed `renewd renew --force www` named `words`, and left the old set.
fn assert_failed_and_intact(
    out: &Output,
    words: &[&str],
    before: &[(PathBuf, Vec<u8>, u32)],
    dirs: &[&Path],
) {
    let all = text(out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(all.contains("www: failed: deployment failed"), "{all}");
    for w in words {
        assert!(all.contains(w), "{w:?} not in:\n{all}");
    }
    let paths: Vec<PathBuf> = before.iter().map(|(p, _, _)| p.clone()).collect();
    assert_eq!(
        snapshot(&paths),
        before,
        "the old set is byte-for-byte intact"
    );
    for dir in dirs {
        assert_eq!(temporaries(dir), Vec::<String>::new(), "{}", dir.display());
    }
}

// ---------------------------------------------------------------------------------------
// tmpfs

/// A tmpfs mounted by the test; unmounted (lazily) on drop.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// Mounts a `size` tmpfs at `dir`, mode 0755 (a tmpfs root is 1777 by default, which
    /// renewd refuses), with 4 KiB pages only so its free space can be measured in pages.
    /// `Err` when mounting is not permitted here.
    fn mount(dir: &Path, size: &str) -> Result<Tmpfs, String> {
        if !is_root() {
            return Err("not root".into());
        }
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={size},mode=0755,huge=never"))
            .arg("renewd-test")
            .arg(dir)
            .output()
            .expect("run mount(8)");
        if out.status.success() {
            return Ok(Tmpfs {
                dir: dir.to_path_buf(),
            });
        }
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        let lower = err.to_lowercase();
        if lower.contains("permission denied")
            || lower.contains("not permitted")
            || lower.contains("must be superuser")
        {
            Err(err)
        } else {
            panic!("mount -t tmpfs {}: {err}", dir.display());
        }
    }

    fn remount(&self, opts: &str) {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,{opts}")])
            .arg(&self.dir)
            .output()
            .expect("run mount(8)");
        assert!(
            out.status.success(),
            "remount {opts}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// Fills the filesystem holding `dir` with `dir/filler`, page by page, until it is full,
/// then frees exactly `pages` pages.
fn fill_leaving(dir: &Path, pages: u64) -> PathBuf {
    let filler = dir.join("filler");
    let mut f = fs::File::create(&filler).expect("filler");
    let page = [0x5a_u8; 4096];
    let mut len = 0u64;
    loop {
        match f.write(&page) {
            Ok(4096) => len += 4096,
            Ok(n) => panic!("a short write of {n} bytes: not a 4 KiB-page tmpfs?"),
            Err(e) if e.raw_os_error() == Some(nix::libc::ENOSPC) => break,
            Err(e) => panic!("filling {}: {e}", filler.display()),
        }
    }
    assert!(len >= pages * 4096, "the tmpfs was already full");
    f.set_len(len - pages * 4096).expect("truncate filler");
    f.sync_all().expect("sync");
    filler
}

// ---------------------------------------------------------------------------------------
// ENOSPC, EROFS, EACCES

/// Room for the first file, none for the second: renewd writes `www.pem`'s temporary,
/// then runs out of space writing `www.key`'s. The renewal fails naming the key's target,
/// its temporary and "No space left on device"; the old set is byte-for-byte intact and
/// no temporary is left; once space is freed the next renewal succeeds.
///
/// Where mounting a tmpfs is not permitted (not root, or EPERM in a container), the test
/// does not skip: it exercises the documented equivalent instead, a file size limit
/// (RLIMIT_FSIZE via `ulimit -f`, SIGXFSZ ignored) that makes renewd's first write fail
/// with EFBIG ("File too large") — the same failure path, on a different errno.
/// `RENEWD_TEST_NO_MOUNT=1` forces that path.
#[test]
fn a_full_disk_while_staging_leaves_the_old_set_and_no_temporaries() {
    let rig = Rig::new(PebbleOptions::default());
    rig.write_config(&rig.cert("www", &["www.test"], ""));
    let tls = rig.path("tls");
    let forced = std::env::var_os("RENEWD_TEST_NO_MOUNT").is_some_and(|v| v == "1");
    let tmpfs = if forced {
        Err("RENEWD_TEST_NO_MOUNT=1".to_string())
    } else {
        Tmpfs::mount(&tls, "128k")
    };
    rig.renewd_ok("run", &["--once"]);
    let set = [rig.fullchain("www"), rig.key("www")];
    let before = snapshot(&set);

    let Ok(_tmpfs) = tmpfs else {
        eprintln!(
            "mounting a tmpfs is not permitted here ({}): exercising the documented \
             equivalent, RLIMIT_FSIZE → EFBIG",
            tmpfs.err().unwrap_or_default().trim()
        );
        let out = run_renewd_with_prefix(
            &rig,
            &["sh", "-c", "trap '' XFSZ; ulimit -f 1; exec \"$0\" \"$@\""],
            &["renew", "--force", "www"],
        );
        assert_failed_and_intact(
            &out,
            &[
                "File too large",
                &tls.join(".www.pem.renewd-").to_string_lossy(),
            ],
            &before,
            &[&tls],
        );
        return;
    };

    let fullchain_len = before[0].1.len();
    assert!(
        fullchain_len < 4096,
        "the fullchain ({fullchain_len} bytes) must fit in the one free page"
    );
    let filler = fill_leaving(&tls, 1);
    let out = rig.renewd("renew", &["--force", "www"]);
    assert_failed_and_intact(
        &out,
        &[
            "No space left on device",
            &format!("cannot write {}", tls.join(".www.key.renewd-").display()),
            &format!("(the new {})", rig.key("www").display()),
            "free some space",
        ],
        &before,
        &[&tls],
    );

    fs::remove_file(filler).expect("rm filler");
    rig.renewd_ok("renew", &["--force", "www"]);
    assert_ne!(snapshot(&set), before, "renewed once there is room");
    assert_eq!(
        key_spki(rig.key("www")),
        read_cert_pem(rig.fullchain("www")).spki
    );
    assert!(temporaries(&tls).is_empty());
}

/// Runs `PREFIX... renewd ARGS... --config CFG` (e.g. under setpriv or a shell).
fn run_renewd_with_prefix(rig: &Rig, prefix: &[&str], args: &[&str]) -> Output {
    let out = Command::new(prefix[0])
        .args(&prefix[1..])
        .arg(renewd_bin())
        .args(args)
        .arg("--config")
        .arg(&rig.config_path)
        .env("RUST_LOG", "renewd=debug,info")
        .stdin(Stdio::null())
        .output()
        .expect("run renewd");
    eprintln!(
        "--- {prefix:?} renewd {args:?}: {}\n{}",
        out.status,
        text(&out)
    );
    out
}

/// The key lives on a tmpfs remounted read-only, the fullchain on the ordinary disk: the
/// fullchain's temporary is written, then creating the key's fails with EROFS; the error
/// names both paths and the reason, the fullchain's temporary is removed, and both old
/// files are untouched. Writable again, the next renewal succeeds.
#[test]
fn a_read_only_filesystem_while_staging_leaves_the_old_set() {
    require_root("mounting a tmpfs");
    let rig = Rig::new(PebbleOptions::default());
    let keys = rig.path("keys");
    mkdir(&keys);
    let key = keys.join("www.key");
    rig.write_config(&rig.cert("www", &["www.test"], "").replace(
        &rig.key("www").display().to_string(),
        &key.display().to_string(),
    ));
    let tmpfs = Tmpfs::mount(&keys, "128k").unwrap_or_else(|e| panic!("mount: {e}"));
    rig.renewd_ok("run", &["--once"]);
    let before = snapshot(&[rig.fullchain("www"), key.clone()]);

    tmpfs.remount("ro");
    let out = rig.renewd("renew", &["--force", "www"]);
    assert_failed_and_intact(
        &out,
        &[
            "Read-only file system",
            &format!("cannot create {}", keys.join(".www.key.renewd-").display()),
            &format!("(the new {})", key.display()),
            "ReadWritePaths=",
        ],
        &before,
        &[&rig.path("tls"), &keys],
    );

    tmpfs.remount("rw");
    rig.renewd_ok("renew", &["--force", "www"]);
    assert_eq!(key_spki(&key), read_cert_pem(rig.fullchain("www")).spki);
}

/// renewd running as an unprivileged user (`nobody`, through setpriv(1)), as a
/// non-root daemon would: the fullchain's directory is its own, the key's is root's.
/// The fullchain's temporary is written, creating the key's fails with EACCES, and the
/// old set stays as it was.
#[test]
fn permission_denied_while_staging_leaves_the_old_set() {
    require_root("running renewd as nobody");
    let rig = Rig::new(PebbleOptions::default());
    let (public, keys) = (rig.path("public"), rig.path("keys"));
    mkdir(&public);
    mkdir(&keys);
    let (fullchain, key) = (public.join("www.pem"), keys.join("www.key"));
    rig.write_config(
        &rig.cert("www", &["www.test"], "")
            .replace(
                &rig.fullchain("www").display().to_string(),
                &fullchain.display().to_string(),
            )
            .replace(
                &rig.key("www").display().to_string(),
                &key.display().to_string(),
            ),
    );
    rig.renewd_ok("run", &["--once"]);
    let before = snapshot(&[fullchain.clone(), key.clone()]);

    // Hand renewd's state and the public directory to nobody; let it read its way in.
    chown_tree(&rig.state_dir, NOBODY);
    chown(&public, Some(NOBODY), Some(NOBODY));
    chmod(rig.pebble.dir.path(), 0o755);
    chmod(&rig.pebble.tls_root_path, 0o644);
    chmod(&rig.config_path, 0o644);

    let out = run_renewd_with_prefix(
        &rig,
        &[
            "setpriv",
            &format!("--reuid={NOBODY}"),
            &format!("--regid={NOBODY}"),
            "--clear-groups",
            "--",
        ],
        &["renew", "--force", "www"],
    );
    assert_failed_and_intact(
        &out,
        &[
            "Permission denied",
            &format!("cannot create {}", keys.join(".www.key.renewd-").display()),
            &format!("(the new {})", key.display()),
            "renewd's user may not write there",
        ],
        &before,
        &[&public, &keys],
    );
    // The fullchain comes first in a set: it was staged (as nobody, in its own
    // directory) before the key failed, and its temporary was removed.
    let log = text(&out);
    assert!(
        !log.contains("www.pem.renewd-"),
        "the key failed, not the fullchain: {log}"
    );
}

fn chown_tree(path: &Path, uid: u32) {
    chown(path, Some(uid), Some(uid));
    if fs::symlink_metadata(path).expect("stat").is_dir() {
        for entry in fs::read_dir(path).expect("read_dir") {
            chown_tree(&entry.expect("entry").path(), uid);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Links planted in the target directory

/// The deployed key replaced by a symlink to a victim file outside the directory, the
/// fullchain by a hard link to another, and hundreds of links named like renewd's
/// temporaries planted beside them (pointing at the victim, or dangling into a directory
/// where a followed link would create a file). `run --once` sees an unusable set and
/// renews: the victims keep their bytes, modes and link counts, nothing appears where the
/// dangling links point, and the targets are new regular files.
#[test]
fn planted_symlinks_and_hard_links_are_replaced_never_written_through() {
    let rig = Rig::new(PebbleOptions::default());
    rig.write_config(&rig.cert("www", &["www.test"], ""));
    rig.renewd_ok("run", &["--once"]);
    let tls = rig.path("tls");

    let etc = rig.path("etc");
    mkdir(&etc);
    let (victim_key, victim_pem) = (etc.join("shadow"), etc.join("victim.pem"));
    fs::write(&victim_key, "root:secret\n").expect("victim");
    chmod(&victim_key, 0o640);
    fs::write(&victim_pem, "victim pem\n").expect("victim");
    let victims = snapshot(&[victim_key.clone(), victim_pem.clone()]);

    fs::remove_file(rig.key("www")).expect("rm key");
    std::os::unix::fs::symlink(&victim_key, rig.key("www")).expect("symlink");
    fs::remove_file(rig.fullchain("www")).expect("rm fullchain");
    fs::hard_link(&victim_pem, rig.fullchain("www")).expect("hard link");

    let landing = rig.path("landing");
    mkdir(&landing);
    let mut planted = Vec::new();
    let mut rng = common::seed::seeded_rng("RENEWD_TEST_SEED", "planted temporaries' names");
    for i in 0..200 {
        for name in ["www.key", "www.pem"] {
            let link = tls.join(format!(".{name}{TEMP_MARKER}{:016x}", rng.random::<u64>()));
            if i % 2 == 0 {
                std::os::unix::fs::symlink(&victim_key, &link).expect("symlink");
            } else {
                std::os::unix::fs::symlink(landing.join(format!("{i}-{name}")), &link)
                    .expect("symlink");
            }
            planted.push((link.clone(), fs::read_link(&link).expect("readlink")));
        }
    }

    let out = rig.renewd("run", &["--once"]);
    assert!(out.status.success(), "run --once: {}", out.status);
    // Replacing a link an administrator may have put there is said, with where it led.
    let log = String::from_utf8_lossy(&out.stderr);
    let said = format!(
        "www: {} is a symbolic link to {}; it is replaced by a regular file",
        rig.key("www").display(),
        victim_key.display()
    );
    assert!(log.contains(&said), "no `{said}` in:\n{log}");

    assert_eq!(
        snapshot(&[victim_key.clone(), victim_pem.clone()]),
        victims,
        "the victims are untouched"
    );
    assert_eq!(fs::metadata(&victim_pem).expect("stat").nlink(), 1);
    assert_eq!(fs::read_dir(&landing).expect("dir").count(), 0);
    for target in [rig.key("www"), rig.fullchain("www")] {
        let meta = fs::symlink_metadata(&target).expect("stat");
        assert!(meta.file_type().is_file(), "{}", target.display());
        assert_eq!(meta.nlink(), 1, "{}", target.display());
    }
    assert_eq!(mode(&rig.key("www")), 0o600);
    assert_eq!(
        key_spki(rig.key("www")),
        read_cert_pem(rig.fullchain("www")).spki
    );
    // Names carrying renewd's temporary marker are renewd's: the sweep at start unlinks
    // them (the names only — the victims above are untouched).
    for (link, _) in &planted {
        assert!(
            fs::symlink_metadata(link).is_err(),
            "{} swept",
            link.display()
        );
    }
    assert_eq!(temporaries(&tls), Vec::<String>::new(), "nothing left");
}

/// A POSIX ACL granting a service user read access to the deployed key is dropped when a
/// renewal replaces the file (the new key gets `user`, `group` and `key_mode` only): `check`
/// warns at the `files.key` entry, pointing at `group`/`key_mode`, and so does the deploy log.
#[test]
fn an_acl_a_renewal_drops_is_warned_by_check_and_the_deploy_log() {
    require_root("setfacl on a root-owned key");
    let rig = Rig::new(PebbleOptions::default());
    rig.write_config(&rig.cert("www", &["www.test"], ""));
    rig.renewd_ok("run", &["--once"]);
    let key = rig.key("www");
    let out = std::process::Command::new("setfacl")
        .args(["-m", "u:nobody:r"])
        .arg(&key)
        .output()
        .expect("setfacl (Debian package acl; scripts/fetch-test-deps.sh installs it)");
    assert!(out.status.success(), "setfacl: {out:?}");

    let out = rig.renewd("check", &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "a warning only: {stdout}");
    let line = stdout
        .lines()
        .find(|l| l.contains("POSIX ACL"))
        .unwrap_or_else(|| panic!("no ACL warning in:\n{stdout}"));
    assert!(line.contains(": warning: certificate www: "), "{line}");
    assert!(line.contains(&key.display().to_string()), "{line}");
    assert!(line.contains("`group` and `key_mode`"), "{line}");
    assert_eq!(rig.renewd("check", &["--strict"]).status.code(), Some(78));

    let out = rig.renewd("renew", &["--force", "www"]);
    assert!(out.status.success(), "renew --force: {}", out.status);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains(&format!("www: {} has a POSIX ACL", key.display())),
        "no ACL warning in the deploy log:\n{log}"
    );
    // The new key carries no ACL: what the warning said would happen.
    let acl = std::process::Command::new("getfacl")
        .args(["--omit-header", "--absolute-names"])
        .arg(&key)
        .output()
        .expect("getfacl");
    assert!(
        !String::from_utf8_lossy(&acl.stdout).contains("user:nobody"),
        "{acl:?}"
    );
}

// ---------------------------------------------------------------------------------------
// Directories others can write

/// A world-writable target directory (with or without the sticky bit) or one writable by
/// a group other than root's is refused by `renewd check` (exit 78, at the `files` entry)
/// and by `run --once`, before anything is written; fixed, it works.
#[test]
fn directories_others_can_write_are_refused_by_run_and_check() {
    require_root("chgrp to a group renewd is not in");
    let rig = Rig::new(PebbleOptions::default());
    rig.write_config(&rig.cert("www", &["www.test"], ""));
    let tls = rig.path("tls");
    let config = rig.config_path.display().to_string();
    let refusal = format!("refusing to write into {}: ", tls.display());

    chmod(&tls, 0o777);
    // Each stops this certificate only: warnings, which --strict turns into exit 78.
    assert_eq!(rig.renewd("check", &[]).status.code(), Some(0));
    let out = rig.renewd("check", &["--strict"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(78), "{stdout}");
    let line = stdout
        .lines()
        .find(|l| l.contains(&refusal))
        .unwrap_or_else(|| panic!("no refusal in:\n{stdout}"));
    assert!(line.starts_with(&format!("{config}:")), "{line}");
    assert!(line.contains(": `files.fullchain`: "), "{line}");
    assert!(line.contains("every user can write in it"), "{line}");
    assert!(line.contains("owner root, group root, mode 0777"), "{line}");
    assert!(
        line.contains(&format!("chmod go-w {}", tls.display())),
        "{line}"
    );

    let out = rig.renewd("run", &["--once"]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(all.contains(&refusal), "{all}");
    assert!(all.contains("mode 0777"), "{all}");
    assert_eq!(
        fs::read_dir(&tls).expect("dir").count(),
        0,
        "nothing written"
    );

    chmod(&tls, 0o1777);
    let out = rig.renewd("check", &["--strict"]);
    assert_eq!(out.status.code(), Some(78));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("mode 1777; the sticky bit does not make it safe"),
        "{stdout}"
    );

    chmod(&tls, 0o775);
    chown(&tls, None, Some(NOBODY));
    let out = rig.renewd("check", &["--strict"]);
    assert_eq!(out.status.code(), Some(78));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let group = nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(NOBODY))
        .ok()
        .flatten()
        .map_or_else(|| NOBODY.to_string(), |g| g.name);
    assert!(
        stdout.contains(&format!("group {group} can write in it")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("chmod g-w {}", tls.display())),
        "{stdout}"
    );

    chown(&tls, None, Some(0));
    rig.renewd_ok("check", &[]);
    rig.renewd_ok("renew", &["--force", "www"]);
    assert_eq!(
        key_spki(rig.key("www")),
        read_cert_pem(rig.fullchain("www")).spki
    );
}

// ---------------------------------------------------------------------------------------
// Settings that would do damage: refused by `check` and by `run`

/// Runs `renewd run` (the daemon) and waits at most `limit` for it to exit; a daemon that
/// starts instead is killed, and `None` says so.
fn run_daemon_expecting_exit(rig: &Rig, limit: std::time::Duration) -> Option<Output> {
    let child = Command::new(renewd_bin())
        .arg("run")
        .arg("--config")
        .arg(&rig.config_path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn renewd run");
    let out = wait_bounded(child, limit)?;
    eprintln!("--- renewd run: {}\n{}", out.status, text(&out));
    Some(out)
}

/// A regular file at `control_socket` and an existing directory shared with other things
/// (mode 0755, a file of someone else's in it) as `state_dir`: `check` reports both, and
/// neither `run` nor `run --once` starts (exit 78); the file keeps its bytes, the
/// directory its mode.
#[test]
fn a_file_at_control_socket_and_a_shared_state_dir_are_refused() {
    let rig = Rig::new(PebbleOptions::default());
    let socket_file = rig.path("notes.txt");
    fs::write(&socket_file, "precious").unwrap();
    let shared = rig.path("shared");
    mkdir(&shared);
    fs::write(shared.join("other-program.db"), "theirs").unwrap();
    let base = rig.base_config();
    let config = |state: &Path, socket: &Path| {
        let text = base
            .replace(
                &format!("state_dir = \"{}\"", rig.state_dir.display()),
                &format!("state_dir = \"{}\"", state.display()),
            )
            .replace(
                &format!("control_socket = \"{}\"", rig.socket.display()),
                &format!("control_socket = \"{}\"", socket.display()),
            );
        fs::write(&rig.config_path, text + &rig.cert("www", &["www.test"], "")).unwrap();
    };
    let limit = std::time::Duration::from_secs(30);

    config(&rig.state_dir, &socket_file);
    let out = rig.renewd("check", &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(78), "{stdout}");
    assert!(
        stdout.contains("is a regular file, not a socket"),
        "{stdout}"
    );
    let out = run_daemon_expecting_exit(&rig, limit).expect("the daemon started anyway");
    assert_eq!(out.status.code(), Some(78), "{}", text(&out));
    assert!(text(&out).contains("not a socket"), "{}", text(&out));
    assert_eq!(fs::read_to_string(&socket_file).unwrap(), "precious");

    config(&shared, &rig.socket);
    let out = rig.renewd("check", &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(78), "{stdout}");
    assert!(stdout.contains("already exists with mode 0755"), "{stdout}");
    for once in [true, false] {
        let out = if once {
            rig.renewd("run", &["--once"])
        } else {
            run_daemon_expecting_exit(&rig, limit).expect("the daemon started anyway")
        };
        assert_eq!(out.status.code(), Some(78), "{}", text(&out));
        assert_eq!(mode(&shared), 0o755, "the shared directory keeps its mode");
        assert!(!shared.join("accounts").exists(), "nothing created in it");
    }
    // Other commands that open the state directory refuse it too.
    let out = rig.renewd("renew", &["--force", "www"]);
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(mode(&shared), 0o755);

    // The daemon's own directory (created by it, or 0700) is fine.
    config(&rig.state_dir, &rig.socket);
    rig.renewd_ok("check", &[]);
}

/// Two certificates whose files are the same through a symlinked directory
/// (`tls/a.pem` and `tls-link/a.pem`): `check` reports it, `run --once` refuses to start,
/// and no certificate's files end up holding another's.
#[test]
fn two_certificates_writing_one_file_through_a_symlinked_directory_are_refused() {
    let rig = Rig::new(PebbleOptions::default());
    std::os::unix::fs::symlink(rig.path("tls"), rig.path("tls-link")).unwrap();
    let one = rig.cert("one", &["one.test"], "");
    let two = rig
        .cert("two", &["two.test"], "")
        .replace("tls/two.pem", "tls-link/one.pem")
        .replace("tls/two.key", "tls-link/one.key");
    rig.write_config(&format!("{one}{two}"));
    let out = rig.renewd("check", &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(78), "{stdout}");
    let clash = format!("is the same file as {}", rig.fullchain("one").display());
    assert!(stdout.contains(&clash), "{stdout}");
    assert!(stdout.contains("certificate `one`"), "{stdout}");
    let out = rig.renewd("run", &["--once"]);
    assert_eq!(out.status.code(), Some(78), "{}", text(&out));
    assert_eq!(
        fs::read_dir(rig.path("tls")).unwrap().count(),
        0,
        "nothing written"
    );
}

/// A swap journal that cannot be read is left in place and reported by recovery; `run
/// --once` must then exit 1, not 0: that certificate's files are in doubt.
#[test]
fn run_once_fails_when_an_interrupted_swap_cannot_be_recovered() {
    let rig = Rig::new(PebbleOptions::default());
    rig.write_config(&rig.cert("www", &["www.test"], ""));
    rig.renewd_ok("run", &["--once"]);
    let journal = rig.state_dir.join("journal/www.json");
    fs::write(&journal, "{ not a journal").unwrap();
    let out = rig.renewd("run", &["--once"]);
    let all = text(&out);
    assert!(all.contains("cannot recover an interrupted swap"), "{all}");
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(
        journal.exists(),
        "the unreadable journal is left for a person"
    );
}

// ---------------------------------------------------------------------------------------
// Modes, even transiently: strace, and a watcher

/// The system calls traced: how files are created, linked, renamed, chmodded, chowned and
/// written. fsync is traced so it can be slowed down (see below).
const TRACED: &str = "trace=openat,open,creat,chmod,fchmod,fchmodat,rename,renameat,renameat2,\
                      link,linkat,fchown,fchownat,chown,lchown,write,fsync";

/// Issues a certificate with all five file kinds, `key_mode = "0640"` and a group, running
/// the real renewd under strace with umask 0 while a watcher thread stats every file that
/// appears in the directory. The trace shows every file created there was created
/// `O_CREAT|O_EXCL|O_NOFOLLOW` with mode 0600, chowned, then chmodded to no wider than
/// `key_mode` (0644 only for public files) before its first byte, and renamed into place;
/// nothing ever opens a target for writing. Each fsync is delayed 100 ms by strace, so
/// the watcher gets to see the temporaries, and none it sees is wider than it should be.
#[test]
fn a_key_file_never_exists_with_a_wider_mode_even_transiently() {
    let rig = Rig::new(PebbleOptions::default());
    let tls = rig.path("tls");
    let t = tls.display();
    rig.write_config(&format!(
        r#"
[[certificate]]
name = "www"
domains = ["www.test"]
challenge = {{ type = "http-01", listen = "127.0.0.1:{port}" }}
files = {{ cert = "{t}/www.crt", chain = "{t}/www.chain", fullchain = "{t}/www.pem", key = "{t}/www.key", combined = "{t}/www.combined" }}
key_mode = "0640"
user = "root"
group = "{NOBODY}"
"#,
        port = rig.pebble.http_port,
    ));
    let watcher = Watcher::start(&tls);
    let trace = rig.path("strace.log");
    let out = traced(&trace, &rig, &["run", "--once"]);
    assert!(out.status.success(), "{}", text(&out));
    let seen = watcher.stop();

    let rules = Rules {
        dir: tls.clone(),
        key_names: vec!["www.key".into(), "www.combined".into()],
        key_mode: 0o640,
        chown_expected: true,
    };
    let log = fs::read_to_string(&trace).expect("trace");
    let report = analyze(&log, &rules);
    let in_dir: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(&*tls.to_string_lossy()))
        .collect();
    eprintln!("--- traced calls naming {t}:\n{}", in_dir.join("\n"));
    eprintln!("--- the watcher saw: {seen:?}");
    assert_eq!(report.violations, Vec::<String>::new());
    let mut created: Vec<(String, u32)> = report
        .created
        .iter()
        .map(|(p, m)| (temp_of(p).to_string(), *m))
        .collect();
    created.sort();
    assert_eq!(
        created,
        ["www.chain", "www.combined", "www.crt", "www.key", "www.pem"]
            .iter()
            .map(|n| (n.to_string(), 0o600))
            .collect::<Vec<_>>(),
        "one temporary per file, each created 0600"
    );
    assert_eq!(report.renamed.len(), 5, "{:?}", report.renamed);

    let violations = rules.judge_observations(&seen);
    assert_eq!(violations, Vec::<String>::new());
    // The watcher did see the key temporaries while they existed (so the check above had
    // something to judge). Whether it also caught the instant between creation at 0600 and
    // the fchmod is up to scheduling: the trace above proves that order, not the watcher.
    assert!(
        seen.iter()
            .any(|o| o.mode.is_some() && rules.holds_key(&o.path)),
        "the watcher never saw a key temporary: {seen:?}"
    );

    for (name, want) in [
        ("www.key", 0o640),
        ("www.combined", 0o640),
        ("www.pem", 0o644),
    ] {
        let meta = fs::metadata(tls.join(name)).expect("stat");
        assert_eq!(meta.mode() & 0o7777, want, "{name}");
        assert_eq!(meta.gid(), NOBODY, "{name}");
    }
}

/// The checks above can fail: a real process creating a key-named file the unsafe way
/// (`sh -c 'echo > …'`: O_CREAT|O_TRUNC, 0666 under umask 0) is caught by both the trace
/// analysis and the watcher; and synthetic traces show each rule firing.
#[test]
fn the_mode_checks_catch_a_wide_creation() {
    let dir = tempfile::Builder::new()
        .permissions(fs::Permissions::from_mode(0o700))
        .tempdir()
        .expect("tempdir");
    let tls = dir.path().join("tls");
    mkdir(&tls);
    let rules = Rules {
        dir: tls.clone(),
        key_names: vec!["www.key".into()],
        key_mode: 0o600,
        chown_expected: false,
    };
    a_real_wide_creation_is_caught(&rules, dir.path(), &tls);
    // Synthetic traces, one rule at a time.
    well_formed_and_split_traces_are_read(&rules, &tls);
    each_rule_fires(&rules, &tls);
    a_key_widened_before_its_chown_is_caught(rules, &tls);
}

/// `sh -c 'echo x > TEMP'` under strace with umask 0, in `tls`: the trace analysis and the
/// watcher both catch it.
fn a_real_wide_creation_is_caught(rules: &Rules, dir: &Path, tls: &Path) {
    let watcher = Watcher::start(tls);
    let trace = dir.join("strace.log");
    let temp = tls.join(".www.key.renewd-0123456789abcdef");
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "umask 0; exec strace -f -qq -s 0 -o '{}' -e '{TRACED}' sh -c \"echo x > '{}'\"",
            trace.display(),
            temp.display()
        ))
        .status()
        .expect("strace sh");
    assert!(status.success());
    let report = analyze(&fs::read_to_string(&trace).expect("trace"), rules);
    assert!(
        report
            .violations
            .iter()
            .any(|v| v.contains("without O_EXCL")),
        "{:?}",
        report.violations
    );
    assert!(
        report.violations.iter().any(|v| v.contains("mode 0666")),
        "{:?}",
        report.violations
    );
    // The watcher stats after the fact: wait for its first stat of the file.
    watcher.wait_seen(&temp);
    let seen = watcher.stop();
    let violations = rules.judge_observations(&seen);
    assert!(
        violations.iter().any(|v| v.contains("mode 0666")),
        "{violations:?} from {seen:?}"
    );
}

/// A trace of a safe write has no violation; a call split by another thread's is joined.
fn well_formed_and_split_traces_are_read(rules: &Rules, tls: &Path) {
    let d = tls.display();
    let good = format!(
        "10 openat(AT_FDCWD, \"{d}/.www.key.renewd-1\", O_WRONLY|O_CREAT|O_EXCL|O_NOFOLLOW|O_CLOEXEC, 0600) = 3\n\
         10 fchmod(3, 0600) = 0\n\
         10 write(3, \"\"..., 241) = 241\n\
         10 fsync(3) = 0 (DELAYED)\n\
         10 rename(\"{d}/.www.key.renewd-1\", \"{d}/www.key\") = 0\n"
    );
    let report = analyze(&good, rules);
    assert_eq!(report.violations, Vec::<String>::new());
    assert_eq!(report.created.len(), 1);
    assert_eq!(report.renamed.len(), 1);
    // Split by another thread's call, as strace -f prints it.
    let split = format!(
        "10 openat(AT_FDCWD, \"{d}/.www.key.renewd-2\", O_WRONLY|O_CREAT|O_EXCL|O_NOFOLLOW <unfinished ...>\n\
         11 write(2, \"\"..., 10) = 10\n\
         10 <... openat resumed>, 0640) = 4\n"
    );
    let report = analyze(&split, rules);
    assert!(
        report.violations.iter().any(|v| v.contains("mode 0640")),
        "{:?}",
        report.violations
    );
}

/// One synthetic trace per rule, each caught.
fn each_rule_fires(rules: &Rules, tls: &Path) {
    let d = tls.display();
    let cases = [
        (
            format!("1 openat(AT_FDCWD, \"{d}/.www.key.renewd-3\", O_WRONLY|O_CREAT|O_EXCL, 0600) = 3\n"),
            "without O_NOFOLLOW",
        ),
        (
            format!("1 creat(\"{d}/.www.key.renewd-3\", 0600) = 3\n"),
            "without O_EXCL",
        ),
        (
            format!("1 openat(AT_FDCWD, \"{d}/www.key\", O_WRONLY|O_CREAT|O_EXCL|O_NOFOLLOW, 0600) = 3\n"),
            "not a temporary",
        ),
        (
            format!("1 openat(AT_FDCWD, \"{d}/www.key\", O_WRONLY|O_TRUNC) = 3\n"),
            "opens an existing file for writing",
        ),
        (
            format!(
                "1 openat(AT_FDCWD, \"{d}/.www.key.renewd-4\", O_WRONLY|O_CREAT|O_EXCL|O_NOFOLLOW, 0600) = 5\n\
                 1 fchmod(5, 0644) = 0\n"
            ),
            "chmod",
        ),
        (
            format!("1 chmod(\"{d}/www.key\", 0644) = 0\n"),
            "chmod",
        ),
        (
            format!(
                "1 openat(AT_FDCWD, \"{d}/.www.pem.renewd-5\", O_WRONLY|O_CREAT|O_EXCL|O_NOFOLLOW, 0600) = 6\n\
                 1 write(6, \"\"..., 100) = 100\n"
            ),
            "before its final mode",
        ),
        (
            format!("1 rename(\"/elsewhere/x\", \"{d}/www.key\") = 0\n"),
            "renames",
        ),
        (
            format!("1 link(\"/elsewhere/x\", \"{d}/www.key\") = 0\n"),
            "links",
        ),
    ];
    for (trace, want) in cases {
        let report = analyze(&trace, rules);
        assert!(
            report.violations.iter().any(|v| v.contains(want)),
            "{want:?} not in {:?} for\n{trace}",
            report.violations
        );
    }
}

/// A key made group-readable before it is given its group is caught.
fn a_key_widened_before_its_chown_is_caught(rules: Rules, tls: &Path) {
    let d = tls.display();
    let widened_before_chown = format!(
        "1 openat(AT_FDCWD, \"{d}/.www.key.renewd-6\", O_WRONLY|O_CREAT|O_EXCL|O_NOFOLLOW, 0600) = 7\n\
         1 fchmod(7, 0640) = 0\n\
         1 fchown(7, 0, 65534) = 0\n"
    );
    let rules_640 = Rules {
        key_mode: 0o640,
        chown_expected: true,
        ..rules
    };
    let report = analyze(&widened_before_chown, &rules_640);
    assert!(
        report
            .violations
            .iter()
            .any(|v| v.contains("before its owner")),
        "{:?}",
        report.violations
    );
}

/// Runs `renewd ARGS --config CFG` under strace (umask 0), the trace in `trace`.
fn traced(trace: &Path, rig: &Rig, args: &[&str]) -> Output {
    let out = Command::new("sh")
        .arg("-c")
        .arg("umask 0; exec \"$@\"")
        .arg("sh")
        .args(["strace", "-f", "-qq", "-s", "0", "-o"])
        .arg(trace)
        .args(["-e", TRACED, "-e", "inject=fsync:delay_enter=100000", "--"])
        .arg(renewd_bin())
        .args(args)
        .arg("--config")
        .arg(&rig.config_path)
        .env("RUST_LOG", "renewd=debug,info")
        .stdin(Stdio::null())
        .output()
        .expect("run strace (scripts/fetch-test-deps.sh installs it)");
    eprintln!("--- strace renewd {args:?}: {}\n{}", out.status, text(&out));
    out
}

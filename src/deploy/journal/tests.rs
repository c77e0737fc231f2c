//! Tests of the swap journal: finish, roll back, and recovery from every crash point.

use super::*;
use crate::config::FileSet;
use crate::deploy::tests::all_files;
use crate::deploy::{stage, Material, Ownership};

struct Fixture {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    journal: PathBuf,
    files: FileSet,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("tls");
    let journal = tmp.path().join("journal");
    fs::create_dir(&dir).expect("mkdir");
    fs::create_dir(&journal).expect("mkdir");
    let files = all_files(&dir);
    Fixture {
        _tmp: tmp,
        dir,
        journal,
        files,
    }
}

fn configured(f: &Fixture) -> Configured {
    let targets = f.files.iter().map(|(_, p)| p.to_path_buf()).collect();
    Configured::from([("www".to_string(), targets)])
}

fn material(tag: &str) -> Material {
    Material {
        key_pem: format!("KEY {tag}\n"),
        chain_pem: vec![format!("LEAF {tag}\n"), format!("INTERMEDIATE {tag}\n")],
        pkcs12: None,
    }
}

/// The contents of every configured file, in order; `None` for a missing one.
fn contents(f: &Fixture) -> Vec<Option<String>> {
    f.files
        .iter()
        .map(|(_, p)| fs::read_to_string(p).ok())
        .collect()
}

fn expected(f: &Fixture, tag: &str) -> Vec<Option<String>> {
    super::super::render(&f.files, &material(tag))
        .into_iter()
        .map(|(_, _, b)| Some(String::from_utf8(b).expect("utf8")))
        .collect()
}

/// Names in the target directory other than the configured files.
fn leftovers(f: &Fixture) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(&f.dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    v.extend(
        fs::read_dir(&f.journal)
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned()),
    );
    v
}

fn deploy_old(f: &Fixture) {
    let staged = stage(&f.files, &material("old"), &Ownership::default(), 0o600).expect("stage");
    Swap::begin(&f.journal, "www", "01", staged)
        .expect("begin")
        .finish()
        .expect("finish");
    assert_eq!(contents(f), expected(f, "old"));
}

/// A journal of `cert` in `phase` over `files`, serial 02.
fn record(cert: &str, phase: Phase, files: Vec<Entry>) -> Record {
    Record {
        version: VERSION,
        cert: cert.into(),
        phase,
        serial: "02".into(),
        files,
    }
}

/// Writes `record` where the journal of its certificate goes, as a crash would leave it.
fn plant(f: &Fixture, record: &Record) -> PathBuf {
    let path = journal_path(&f.journal, &record.cert);
    fs::write(&path, serde_json::to_vec(record).expect("json")).expect("write");
    path
}

/// What a journal naming something that is not renewd's own temporary is refused with.
const NOT_OURS: &str = "not a renewd temporary";

/// A file at `dir/name` holding "precious", which recovery must not touch.
fn precious(f: &Fixture, name: &str) -> PathBuf {
    let victim = f.dir.join(name);
    fs::write(&victim, b"precious").expect("write");
    victim
}

/// Plants a journal of `cert` over `entry` and recovers: the journal must be refused,
/// with `why` in the message, and `victim` must still hold what it held.
fn assert_refused(f: &Fixture, cert: &str, phase: Phase, entry: Entry, why: &str, victim: &Path) {
    let path = plant(f, &record(cert, phase, vec![entry]));
    let r = recover(&f.journal, &configured(f));
    assert_eq!(r.errors.len(), 1, "{:?}", r.errors);
    assert!(r.errors[0].to_string().contains(why), "{}", r.errors[0]);
    assert!(r.unknown(cert) && r.rolled_back.is_empty());
    assert_eq!(fs::read(victim).expect("victim"), b"precious");
    fs::remove_file(&path).expect("remove");
}

#[test]
fn finish_keeps_the_new_set_and_leaves_nothing_behind() {
    let f = fixture();
    deploy_old(&f);
    let staged = stage(&f.files, &material("new"), &Ownership::default(), 0o600).expect("stage");
    let swap = Swap::begin(&f.journal, "www", "02", staged).expect("begin");
    assert_eq!(swap.phase(), Phase::Swapped);
    assert!(journal_path(&f.journal, "www").exists());
    assert_eq!(contents(&f), expected(&f, "new"));
    swap.finish().expect("finish");
    assert_eq!(contents(&f), expected(&f, "new"));
    assert_eq!(leftovers(&f), Vec::<String>::new());
}

#[test]
fn roll_back_restores_the_old_set_byte_for_byte() {
    let f = fixture();
    deploy_old(&f);
    let staged = stage(&f.files, &material("new"), &Ownership::default(), 0o600).expect("stage");
    Swap::begin(&f.journal, "www", "02", staged)
        .expect("begin")
        .roll_back()
        .expect("roll back");
    assert_eq!(contents(&f), expected(&f, "old"));
    assert_eq!(leftovers(&f), Vec::<String>::new());
}

#[test]
fn roll_back_of_a_first_deployment_removes_the_new_files() {
    let f = fixture();
    let staged = stage(&f.files, &material("new"), &Ownership::default(), 0o600).expect("stage");
    Swap::begin(&f.journal, "www", "02", staged)
        .expect("begin")
        .roll_back()
        .expect("roll back");
    assert_eq!(contents(&f), vec![None; 5]);
    assert_eq!(leftovers(&f), Vec::<String>::new());
}

/// Writes by hand the state a crash leaves: old set deployed, new set staged, backups
/// made, journal in `phase`, and the first `renamed` temporaries renamed into place.
fn crash_state(f: &Fixture, phase: Phase, renamed: usize) {
    let staged = stage(&f.files, &material("new"), &Ownership::default(), 0o600).expect("stage");
    let mut entries = Vec::new();
    for (_, target, temp) in staged.files() {
        let backup = backup_name(target);
        fs::hard_link(target, &backup).expect("link");
        entries.push(Entry {
            target: target.to_path_buf(),
            temp: temp.to_path_buf(),
            backup: Some(backup),
        });
    }
    std::mem::forget(staged); // a crash runs no destructor
    for e in entries.iter().take(renamed) {
        fs::rename(&e.temp, &e.target).expect("rename");
    }
    let swap = Swap {
        path: journal_path(&f.journal, "www"),
        record: record("www", phase, entries),
    };
    swap.write().expect("journal");
}

#[test]
fn recovery_rolls_back_a_swap_interrupted_at_every_step() {
    for renamed in 0..=5 {
        let f = fixture();
        deploy_old(&f);
        crash_state(&f, Phase::Staged, renamed);
        let r = recover(&f.journal, &configured(&f));
        assert_eq!(r.rolled_back, vec!["www".to_string()], "renamed {renamed}");
        assert!(r.pending.is_empty() && r.errors.is_empty());
        assert_eq!(contents(&f), expected(&f, "old"), "renamed {renamed}");
        assert_eq!(leftovers(&f), Vec::<String>::new(), "renamed {renamed}");
    }
}

#[test]
fn recovery_finishes_an_interrupted_roll_back() {
    for restored in 0..=5 {
        let f = fixture();
        deploy_old(&f);
        crash_state(&f, Phase::RollingBack, 5);
        // The crash came after `restored` backups were put back.
        let j = read_record(&journal_path(&f.journal, "www"), &configured(&f)).expect("journal");
        for e in j.files.iter().take(restored) {
            fs::rename(e.backup.as_ref().expect("backup"), &e.target).expect("restore");
        }
        let r = recover(&f.journal, &configured(&f));
        assert_eq!(r.rolled_back, vec!["www".to_string()]);
        assert_eq!(contents(&f), expected(&f, "old"), "restored {restored}");
        assert_eq!(leftovers(&f), Vec::<String>::new());
    }
}

#[test]
fn recovery_hands_back_a_completed_swap() {
    let f = fixture();
    deploy_old(&f);
    crash_state(&f, Phase::Swapped, 5);
    let mut r = recover(&f.journal, &configured(&f));
    assert!(r.rolled_back.is_empty() && r.errors.is_empty());
    assert!(r.pending.iter().any(|s| s.cert() == "www") && !r.unknown("www"));
    let swap = r.pending.pop().expect("pending swap");
    assert_eq!((swap.cert(), swap.serial()), ("www", "02"));
    assert_eq!(contents(&f), expected(&f, "new"));
    swap.roll_back().expect("roll back");
    assert_eq!(contents(&f), expected(&f, "old"));
    assert_eq!(leftovers(&f), Vec::<String>::new());
}

#[test]
fn a_corrupt_journal_is_kept_and_reported() {
    let f = fixture();
    let path = journal_path(&f.journal, "www");
    fs::write(&path, b"{not json").expect("write");
    let r = recover(&f.journal, &configured(&f));
    assert_eq!(r.errors.len(), 1);
    assert!(
        r.errors[0].to_string().contains("not a swap journal"),
        "{}",
        r.errors[0]
    );
    assert!(r.unknown("www"));
    assert!(path.exists());
}

#[test]
fn a_journal_naming_files_that_are_not_renewd_temporaries_is_refused() {
    let f = fixture();
    let victim = precious(&f, "victim");
    let entry = Entry {
        target: f.dir.join("cert.pem"),
        temp: f.dir.join(".cert.pem.renewd-0"),
        backup: Some(victim.clone()),
    };
    assert_refused(&f, "www", Phase::Staged, entry, NOT_OURS, &victim);
}

/// A journal that names a file outside the certificate's configured targets (here
/// with no backup, which a roll back would remove) or a certificate that is not
/// configured is refused: nothing is deleted.
#[test]
fn a_journal_naming_a_foreign_target_or_certificate_is_refused() {
    let f = fixture();
    let victim = precious(&f, "victim");
    for (cert, target, why) in [
        ("www", victim.clone(), "not a configured file"),
        ("other", f.dir.join("cert.pem"), "not configured"),
    ] {
        let entry = Entry {
            temp: f.dir.join(format!(
                ".{}.renewd-0",
                target.file_name().expect("name").to_string_lossy()
            )),
            target,
            backup: None,
        };
        assert_refused(&f, cert, Phase::RollingBack, entry, why, &victim);
    }
}

/// A temporary or backup must carry its own target's name: `.other.renewd-…` beside
/// `cert.pem` is not one of cert.pem's.
#[test]
fn a_temporary_of_another_name_is_refused() {
    let f = fixture();
    let victim = precious(&f, ".other.renewd-x");
    let entry = Entry {
        target: f.dir.join("cert.pem"),
        temp: victim.clone(),
        backup: None,
    };
    assert_refused(&f, "www", Phase::Staged, entry, NOT_OURS, &victim);
}

/// Only `.NAME.json.tmp-DIGITS` is renewd's in the journal directory; other dot files
/// are left alone.
#[test]
fn foreign_dot_files_in_the_journal_directory_are_kept() {
    let f = fixture();
    let foreign = f.journal.join(".keep-me");
    fs::write(&foreign, b"x").expect("write");
    let r = recover(&f.journal, &configured(&f));
    assert!(r.errors.is_empty());
    assert!(foreign.exists());
    assert!(is_unfinished_write(".www.json.tmp-1234"));
    assert!(!is_unfinished_write(".www.json.tmp-"));
    assert!(!is_unfinished_write(".json.tmp-12"));
    assert!(!is_unfinished_write(".www.json"));
}

#[test]
fn an_unfinished_journal_write_is_discarded() {
    let f = fixture();
    fs::write(f.journal.join(".www.json.tmp-1234"), b"{").expect("write");
    let r = recover(&f.journal, &configured(&f));
    assert!(r.errors.is_empty() && r.pending.is_empty() && r.rolled_back.is_empty());
    assert_eq!(leftovers(&f), Vec::<String>::new());
}

#[test]
fn a_symlink_target_is_backed_up_as_a_symlink() {
    let f = fixture();
    let elsewhere = f.dir.join("real-cert.pem");
    fs::write(&elsewhere, b"ELSEWHERE").expect("write");
    let cert = f.files.cert.clone().expect("cert");
    std::os::unix::fs::symlink(&elsewhere, &cert).expect("symlink");
    let staged = stage(&f.files, &material("new"), &Ownership::default(), 0o600).expect("stage");
    Swap::begin(&f.journal, "www", "02", staged)
        .expect("begin")
        .roll_back()
        .expect("roll back");
    assert!(fs::symlink_metadata(&cert)
        .expect("stat")
        .file_type()
        .is_symlink());
    assert_eq!(fs::read(&elsewhere).expect("read"), b"ELSEWHERE");
}

/// A stray backup of an earlier swap (a crash between that swap's commit and the removal of
/// its backups) lies beside a certificate whose next swap had completed when renewd was
/// killed: recovery removes the stray and spares what the journal still needs.
#[test]
fn recovery_sweeps_strays_beside_a_completed_swap_but_keeps_what_its_journal_names() {
    let f = fixture();
    deploy_old(&f);
    let stray = f
        .dir
        .join(format!(".cert.pem{TEMP_MARKER}old-00000000000000aa"));
    fs::write(&stray, "BACKUP OF AN EARLIER SWAP\n").expect("stray");
    crash_state(&f, Phase::Swapped, 5);
    let mut r = recover(&f.journal, &configured(&f));
    let swept = r.sweep([("www", &f.files)]);
    let removed: Vec<PathBuf> = swept
        .into_iter()
        .flat_map(|(_, r)| r.expect("sweep"))
        .collect();
    assert_eq!(removed, vec![stray.clone()]);
    assert!(!stray.exists());
    // The journal's own backups are still there: rolling back still restores the old set.
    let swap = r.pending.pop().expect("pending swap");
    swap.roll_back().expect("roll back");
    assert_eq!(contents(&f), expected(&f, "old"));
    assert_eq!(leftovers(&f), Vec::<String>::new());
}

/// A certificate whose journal could not be read keeps every temporary: nobody knows which
/// of them the journal names.
#[test]
fn recovery_sweeps_nothing_beside_a_certificate_with_an_unreadable_journal() {
    let f = fixture();
    deploy_old(&f);
    let stray = f
        .dir
        .join(format!(".cert.pem{TEMP_MARKER}old-00000000000000aa"));
    fs::write(&stray, "MAYBE NEEDED\n").expect("stray");
    fs::write(journal_path(&f.journal, "www"), "{ not json").expect("corrupt journal");
    let r = recover(&f.journal, &configured(&f));
    assert!(!r.errors.is_empty());
    let swept = r.sweep([("www", &f.files)]);
    assert!(swept.into_iter().all(|(_, r)| r.expect("sweep").is_empty()));
    assert!(stray.exists());
}

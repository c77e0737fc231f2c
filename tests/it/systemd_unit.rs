//! The systemd unit, checked offline with `systemd-analyze` (no running systemd needed):
//! it loads cleanly, its sandbox rates an exposure of at most 3.0, and it keeps the settings
//! the specification requires (Type=notify, watchdog, SIGHUP reload, the three directories,
//! no restart loop on a configuration error).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const UNIT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/renewd.service");
const INSTALLED_BINARY: &str = "/usr/bin/renewd";
const MAX_EXPOSURE: f64 = 3.0;

fn unit_text() -> String {
    std::fs::read_to_string(UNIT).unwrap_or_else(|e| panic!("reading {UNIT}: {e}"))
}

/// `systemd-analyze`, or a failure that says how to get it.
fn systemd_analyze() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/bin".into(), "/bin".into()])
        .map(|dir| dir.join("systemd-analyze"))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "systemd-analyze not found (PATH={}): install systemd (`apt-get install systemd` \
                 on Debian); scripts/fetch-test-deps.sh installs it with the other test \
                 dependencies",
                path.to_string_lossy()
            )
        })
}

fn analyze(args: &[&str]) -> Output {
    let program = systemd_analyze();
    Command::new(&program)
        .args(args)
        // Plain, uncoloured, untranslated output that parses the same everywhere.
        .env("SYSTEMD_COLORS", "0")
        .env("SYSTEMD_PAGER", "cat")
        .env("LC_ALL", "C.UTF-8")
        .output()
        .unwrap_or_else(|e| panic!("running {} {args:?}: {e}", program.display()))
}

fn describe(args: &[&str], out: &Output) -> String {
    format!(
        "systemd-analyze {}\nexit: {}\n--- stdout ---\n{}--- stderr ---\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    )
}

/// The unit with its `/usr/bin/renewd` commands pointed at the binary cargo built, written as
/// `renewd.service` in `dir`. `verify` insists that every command exists, and the test must
/// not install anything under /usr; nothing else in the unit changes.
fn unit_with_built_binary(dir: &Path) -> PathBuf {
    let text = unit_text();
    assert!(
        text.contains(INSTALLED_BINARY),
        "{UNIT} no longer runs {INSTALLED_BINARY}"
    );
    let built = env!("CARGO_BIN_EXE_renewd");
    // Quoted, with `%` escaped: a unit file would read either as syntax.
    let quoted = format!(
        "\"{}\"",
        built
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('%', "%%")
    );
    let path = dir.join("renewd.service");
    std::fs::write(&path, text.replace(INSTALLED_BINARY, &quoted))
        .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    path
}

#[test]
fn unit_verifies_without_warnings() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let unit = unit_with_built_binary(dir.path());
    let unit = unit.to_str().expect("UTF-8 path");
    // --man=no: Documentation=man:renewd(8) names the page the packages install, which this
    // machine need not have. --recursive-errors=no: judge this unit, not the host's others.
    let args = ["verify", "--man=no", "--recursive-errors=no", unit];
    let out = analyze(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "the unit does not verify cleanly:\n{}",
        describe(&args, &out)
    );
}

#[test]
fn unit_exposure_is_at_most_3() {
    let args = ["security", "--offline=true", "--no-pager", UNIT];
    let out = analyze(&args);
    let report = describe(&args, &out);
    assert!(out.status.success(), "security analysis failed:\n{report}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let exposure = stdout
        .lines()
        .find_map(|line| {
            let rest = line
                .split("Overall exposure level for renewd.service:")
                .nth(1)?;
            rest.split_whitespace().next()?.parse::<f64>().ok()
        })
        .unwrap_or_else(|| panic!("no \"Overall exposure level\" line:\n{report}"));
    assert!(
        exposure <= MAX_EXPOSURE,
        "exposure {exposure} is above {MAX_EXPOSURE}:\n{report}"
    );
}

/// `(section, key, value)` of every setting, comments and blank lines left out.
fn settings(text: &str) -> Vec<(String, String, String)> {
    let mut section = String::new();
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_string();
        } else if let Some((key, value)) = line.split_once('=') {
            out.push((
                section.clone(),
                key.trim().to_string(),
                value.trim().to_string(),
            ));
        }
    }
    out
}

#[test]
fn unit_has_the_settings_the_spec_requires() {
    let text = unit_text();
    let all = settings(&text);
    let service = |key: &str| -> Vec<&str> {
        all.iter()
            .filter(|(s, k, _)| s == "Service" && k == key)
            .map(|(_, _, v)| v.as_str())
            .collect()
    };
    let one = |key: &str| -> &str {
        match service(key).as_slice() {
            [value] => value,
            values => panic!("[Service] {key}= is set {} times: {values:?}", values.len()),
        }
    };

    assert_eq!(one("Type"), "notify");
    assert_eq!(one("NotifyAccess"), "main");
    let watchdog = one("WatchdogSec");
    assert!(
        !watchdog.is_empty() && !["0", "infinity", "off"].contains(&watchdog),
        "WatchdogSec={watchdog} turns the watchdog off"
    );
    assert_eq!(one("ExecStart"), "/usr/bin/renewd run");
    // RestartPreventExitStatus= sees only the main process: a failing ExecStartPre= restarts
    // forever, so `run` checks the configuration itself (exit 78).
    assert!(
        service("ExecStartPre").is_empty(),
        "ExecStartPre= defeats RestartPreventExitStatus=78"
    );
    let reload = one("ExecReload");
    assert!(
        reload.contains("kill") && reload.contains("-HUP") && reload.contains("$MAINPID"),
        "ExecReload={reload} does not send SIGHUP to the main process"
    );
    assert_eq!(one("Restart"), "on-failure");
    assert!(
        one("RestartPreventExitStatus")
            .split_whitespace()
            .any(|s| s == "78"),
        "RestartPreventExitStatus= lacks 78 (bad configuration)"
    );
    assert_eq!(one("StateDirectory"), "renewd");
    assert_eq!(one("StateDirectoryMode"), "0700");
    assert_eq!(one("RuntimeDirectory"), "renewd");
    assert_eq!(one("RuntimeDirectoryMode"), "0700");
    assert_eq!(one("ConfigurationDirectory"), "renewd");
    assert_eq!(one("UMask"), "0077");

    // Credentials are documented, not used: nothing needs one by default.
    assert!(
        service("LoadCredential").is_empty(),
        "LoadCredential= must stay commented out"
    );
    assert!(
        text.contains("#LoadCredential=eab.key:/etc/renewd/eab.key")
            && text.contains("/run/credentials/renewd.service/eab.key"),
        "the commented LoadCredential= example for the EAB key is gone"
    );
}

//! A renewd test rig on top of the Pebble harness: a temporary directory with renewd's
//! configuration, state directory and control socket pointed at one test's own Pebble, and
//! helpers to run the `renewd` binary (one-shot or as a daemon) against it.
//!
//! Test modules use it as `crate::common::rig`.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, SystemTime};

use crate::common::{renewd_bin, wait_until, Pebble, PebbleOptions};

pub struct Rig {
    pub pebble: Pebble,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub state_dir: PathBuf,
    pub socket: PathBuf,
}

impl Rig {
    pub fn new(opts: PebbleOptions) -> Rig {
        let pebble = Pebble::start(opts);
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().to_path_buf();
        fs::create_dir_all(root.join("tls")).expect("mkdir tls");
        // Explicit modes, whatever the umask: renewd refuses to deploy into a directory
        // (or below one) that others can write.
        for d in [root.clone(), root.join("tls")] {
            fs::set_permissions(&d, fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        Rig {
            pebble,
            config_path: root.join("renewd.toml"),
            state_dir: root.join("state"),
            socket: root.join("run/control.sock"),
            dir,
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// [`Rig::base_config`] with `[ca.pebble]` pointed at `proxy`: its directory URL and its
    /// TLS root as `trust_roots`.
    pub fn base_config_via(&self, proxy: &crate::common::faultproxy::FaultProxy) -> String {
        self.base_config()
            .replace(&self.pebble.directory_url, &proxy.directory_url)
            .replace(
                &self.pebble.tls_root_path.display().to_string(),
                &proxy.ca_pem_path.display().to_string(),
            )
    }

    /// The top of a configuration: state directory, socket, and `[ca.pebble]`.
    pub fn base_config(&self) -> String {
        format!(
            r#"state_dir = "{state}"
control_socket = "{socket}"

[ca.pebble]
directory = "{dir}"
contact = ["mailto:ops@example.org"]
accept_terms = true
trust_roots = "{roots}"
"#,
            state = self.state_dir.display(),
            socket = self.socket.display(),
            dir = self.pebble.directory_url,
            roots = self.pebble.tls_root_path.display(),
        )
    }

    /// A `[[certificate]]` validated by the built-in http-01 listener on Pebble's http port,
    /// deployed as `tls/NAME.pem` (fullchain) and `tls/NAME.key`, plus `extra` lines.
    pub fn cert(&self, name: &str, domains: &[&str], extra: &str) -> String {
        let listen = format!(
            r#"{{ type = "http-01", listen = "127.0.0.1:{}" }}"#,
            self.pebble.http_port
        );
        self.cert_with(name, domains, &listen, extra)
    }

    /// A `[[certificate]]` with the inline table `challenge`, deployed as `tls/NAME.pem`
    /// (fullchain) and `tls/NAME.key`, plus `extra` lines.
    pub fn cert_with(&self, name: &str, domains: &[&str], challenge: &str, extra: &str) -> String {
        let domains: Vec<String> = domains.iter().map(|d| format!("\"{d}\"")).collect();
        format!(
            r#"
[[certificate]]
name = "{name}"
domains = [{domains}]
owner = "ops@example.org"
challenge = {challenge}
files = {{ fullchain = "{fc}", key = "{key}" }}
{extra}
"#,
            domains = domains.join(", "),
            fc = self.fullchain(name).display(),
            key = self.key(name).display(),
        )
    }

    pub fn fullchain(&self, name: &str) -> PathBuf {
        self.path(&format!("tls/{name}.pem"))
    }

    pub fn key(&self, name: &str) -> PathBuf {
        self.path(&format!("tls/{name}.key"))
    }

    /// Writes the configuration: the base plus `body`.
    pub fn write_config(&self, body: &str) {
        fs::write(&self.config_path, format!("{}{body}", self.base_config()))
            .expect("write config");
    }

    /// Moves the record's attempts of `name` `secs` into the past, as if renewd had deployed
    /// the certificate that long ago: past the floor that keeps a certificate just deployed
    /// from being renewed again by schedule (an hour, or a third of its lifetime).
    pub fn backdate_last_success(&self, name: &str, secs: u64) {
        let path = self.state_dir.join(format!("certs/{name}.json"));
        let mut rec: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).expect("record")).expect("record JSON");
        for a in rec["history"].as_array_mut().expect("history") {
            let at = a["at"].as_u64().expect("at");
            a["at"] = serde_json::json!(at - secs);
        }
        std::fs::write(&path, serde_json::to_vec(&rec).expect("JSON")).expect("write record");
    }

    /// Runs `renewd SUBCOMMAND --config <rig's> ARGS...` to completion.
    pub fn renewd(&self, sub: &str, args: &[&str]) -> Output {
        let out = Command::new(renewd_bin())
            .arg(sub)
            .arg("--config")
            .arg(&self.config_path)
            .args(args)
            .env("RUST_LOG", "renewd=debug,info")
            .stdin(Stdio::null())
            .output()
            .expect("run renewd");
        eprintln!(
            "--- renewd {sub} {args:?}: {}\n--- stdout:\n{}--- stderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Like [`Rig::renewd`], asserting success.
    pub fn renewd_ok(&self, sub: &str, args: &[&str]) -> String {
        let out = self.renewd(sub, args);
        assert!(
            out.status.success(),
            "renewd {sub} {args:?} failed: {}",
            out.status
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// When `d`'s next timer fires once it is idle (`None`: never): a `status` request wakes
    /// its loop, and the `idle` line that follows is its state from then on
    /// ([`DaemonProc::wait_idle_after`]).
    pub fn idle_until(&self, d: &DaemonProc) -> Option<SystemTime> {
        let mark = d.log_mark();
        // Its exit status says how the certificates are; only the request matters here.
        let _ = self.renewd("status", &[]);
        d.wait_idle_after(mark)
    }

    /// Starts `renewd run` in the background, its log in `daemon.log`; waits until its control
    /// socket answers.
    pub fn spawn_daemon(&self) -> DaemonProc {
        self.spawn_daemon_with_env(&[])
    }

    /// [`Rig::spawn_daemon`] with extra environment variables (e.g. `NOTIFY_SOCKET`).
    pub fn spawn_daemon_with_env(&self, env: &[(&str, &str)]) -> DaemonProc {
        spawn_daemon(
            &self.config_path,
            &self.socket,
            self.path("daemon.log"),
            env,
        )
    }
}

/// Starts `renewd run --config CONFIG` in the background (`RUST_LOG=renewd=debug,info`, `env`
/// added), its output appended to `log_path`; waits until its control `socket` answers.
pub fn spawn_daemon(
    config: &Path,
    socket: &Path,
    log_path: PathBuf,
    env: &[(&str, &str)],
) -> DaemonProc {
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .expect("daemon log");
    let child = Command::new(renewd_bin())
        .arg("run")
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "renewd=debug,info")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("spawn renewd run");
    let d = DaemonProc {
        child: Some(child),
        log_path,
    };
    wait_until(
        Duration::from_secs(15),
        "the daemon's control socket",
        || std::os::unix::net::UnixStream::connect(socket).is_ok(),
    );
    d
}

/// A `renewd run` process, killed on drop.
pub struct DaemonProc {
    pub child: Option<Child>,
    pub log_path: PathBuf,
}

impl DaemonProc {
    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).unwrap_or(0)
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// It has not exited.
    pub fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().expect("try_wait").is_none())
    }

    /// How much the daemon has logged so far: a position for [`DaemonProc::wait_idle_after`].
    pub fn log_mark(&self) -> usize {
        self.log().len()
    }

    /// Waits (60 s at most) for the first `idle` line the daemon logs after `mark` and returns
    /// its `until`: when the daemon's next timer fires, `None` for `never`. The daemon logs
    /// that line each time its loop has nothing in flight (no batch, evaluation, ARI poll or
    /// debounce) and starts waiting, so "idle until T, and the CA saw nothing meanwhile"
    /// proves nothing more happens before T unless something from outside wakes it. A
    /// control request (`status`) after the mark makes the loop log its state afresh.
    pub fn wait_idle_after(&self, mark: usize) -> Option<SystemTime> {
        let mut found = None;
        wait_until(Duration::from_secs(60), "the daemon to log `idle`", || {
            let log = self.log();
            found = log.get(mark..).and_then(|tail| {
                tail.split_inclusive('\n')
                    .filter(|line| line.ends_with('\n'))
                    .find_map(idle_until)
            });
            found.is_some()
        });
        found.expect("found")
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig).expect("kill");
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        self.wait_exit()
    }

    /// Waits (bounded) for the daemon to exit, after a signal the test sent itself.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let mut status = None;
        wait_until(
            Duration::from_secs(40),
            "renewd to exit after SIGTERM",
            || {
                status = child.try_wait().expect("try_wait");
                status.is_some()
            },
        );
        status.expect("exited")
    }
}

impl Drop for DaemonProc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            eprintln!("--- daemon log:\n{}", self.log());
        }
    }
}

/// The `until` of the daemon's `idle` debug line (tracing's text format: `... DEBUG
/// renewd::daemon: idle until=2026-01-01T00:00:00Z`): `Some(None)` for `until=never`; `None`
/// if `line` is not that line.
fn idle_until(line: &str) -> Option<Option<SystemTime>> {
    let mut words = line.split_whitespace();
    words.find(|w| *w == "idle")?;
    let value = words
        .find_map(|w| w.strip_prefix("until="))?
        .trim_matches('"');
    if value == "never" {
        return Some(None);
    }
    let t = time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("idle line with an unreadable until ({e}): {line}"));
    Some(Some(t.into()))
}

/// Lines of a file, empty if it does not exist.
pub fn lines(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .map(|s| s.lines().map(str::to_string).collect())
        .unwrap_or_default()
}

/// The permission bits of a file.
pub fn mode(path: &Path) -> u32 {
    fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

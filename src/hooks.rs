//! Running the commands that make services pick up new certificates (reload hooks), and
//! merging the hooks of the certificates renewed in one batch so each command runs once.
//!
//! A hook is an argv, never a shell line, run with no stdin (alert commands: the alert on
//! stdin, `run_with_input`) in a process group of its own:
//! a hook that hangs is killed as a whole (its children too) when its time is up, and its
//! output ends up in the log line by line, without renewd holding more than a few KiB of it,
//! and at most [`MAX_LOGGED_PER_RUN`] of it per run: the rest is read (the hook never
//! blocks on a full pipe) and counted, and the log says how much was not logged.

use std::collections::HashSet;
use std::io;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How much of each output stream is kept for the outcome and error messages.
const TAIL_BYTES: usize = 4096;

/// Longer output lines are cut in the log, so one runaway line cannot flood the journal.
const MAX_LOG_LINE: usize = 1024;

/// At most this much of one run's output (both streams together, whole lines) reaches the
/// log; every child renewd runs goes through here (reload and dns-01 hooks, alert commands),
/// so a hook printing a gigabyte costs the journal 64 KiB and one line saying what was cut.
pub(crate) const MAX_LOGGED_PER_RUN: usize = 64 * 1024;

/// Between SIGTERM and SIGKILL for a hook that overran its timeout.
const KILL_GRACE: Duration = Duration::from_secs(5);

/// How long output is still collected after the hook exited. A hook that starts a daemon
/// which keeps the hook's stdout open would otherwise hold renewd until that daemon exits.
const OUTPUT_GRACE: Duration = Duration::from_secs(1);

/// One command to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hook {
    pub(crate) argv: Vec<String>,
    /// Added to renewd's own environment.
    pub(crate) env: Vec<(String, String)>,
    pub(crate) timeout: Duration,
}

/// What a hook that ran to completion did.
#[derive(Debug, Clone)]
pub(crate) struct HookOutcome {
    /// `None` if the hook was killed by a signal.
    pub(crate) status: Option<i32>,
    /// The last 4 KiB of each stream, decoded lossily. (Only the tests read stdout's: the
    /// lines themselves are logged as they come.)
    #[cfg_attr(not(test), expect(dead_code))]
    pub(crate) stdout_tail: String,
    pub(crate) stderr_tail: String,
    pub(crate) elapsed: Duration,
}

/// Why a hook did not succeed. `argv0` is the program as configured.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    /// The program could not be started (not found, not executable, empty command).
    #[error("cannot run {argv0:?}: {source}")]
    Spawn { argv0: String, source: io::Error },
    /// It ran and exited non-zero or was killed by a signal; the message ends with its
    /// last line of stderr.
    #[error("{argv0} {}{}", describe_status(*.status), last_line(.stderr_tail))]
    Failed {
        argv0: String,
        /// `None` if the hook was killed by a signal.
        status: Option<i32>,
        stderr_tail: String,
    },
    /// It outlived its timeout; its whole process group was killed.
    #[error("{argv0} did not finish within {after:?} and was killed with its process group")]
    TimedOut { argv0: String, after: Duration },
}

fn describe_status(status: Option<i32>) -> String {
    match status {
        Some(code) => format!("exited with status {code}"),
        None => "was killed by a signal".to_string(),
    }
}

/// The last non-empty stderr line, which is where commands put the reason they failed.
fn last_line(stderr: &str) -> String {
    match stderr.lines().rev().find(|l| !l.trim().is_empty()) {
        Some(line) => format!(": {}", line.trim()),
        None => String::new(),
    }
}

/// Runs the hook to completion or until its timeout, whichever comes first; a non-zero exit
/// is an error. If the returned future is dropped early (shutdown), the whole process group
/// is killed.
pub(crate) async fn run(hook: &Hook) -> Result<HookOutcome, HookError> {
    run_inner(hook, None).await
}

/// [`run`], with `input` on the hook's stdin instead of nothing (alert commands get the
/// alert document this way). A hook that does not read it all is not an error.
pub(crate) async fn run_with_input(hook: &Hook, input: Vec<u8>) -> Result<HookOutcome, HookError> {
    run_inner(hook, Some(input)).await
}

async fn run_inner(hook: &Hook, input: Option<Vec<u8>>) -> Result<HookOutcome, HookError> {
    let argv0 = hook.argv.first().cloned().unwrap_or_default();
    let Some((program, args)) = hook.argv.split_first() else {
        return Err(HookError::Spawn {
            argv0,
            source: io::Error::new(io::ErrorKind::InvalidInput, "empty command"),
        });
    };

    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        // systemd's channel is renewd's own: a hook must not report readiness or pet the
        // watchdog on renewd's behalf.
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        .envs(hook.env.iter().map(|(k, v)| (k, v)))
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let start = Instant::now();
    tracing::debug!(hook = %argv0, argv = ?hook.argv, "running hook");
    let mut child = cmd.spawn().map_err(|source| HookError::Spawn {
        argv0: argv0.clone(),
        source,
    })?;
    let mut group = GroupGuard(
        child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .map(Pid::from_raw),
    );

    if let (Some(mut stdin), Some(input)) = (child.stdin.take(), input) {
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            // EPIPE from a hook that ignores its input is fine.
            let _ = stdin.write_all(&input).await;
        });
    }
    let stdout = Arc::new(Mutex::new(Tail::default()));
    let stderr = Arc::new(Mutex::new(Tail::default()));
    let budget = Arc::new(LogBudget::default());
    let readers = [
        child
            .stdout
            .take()
            .map(|s| spawn_reader(s, argv0.clone(), "stdout", stdout.clone(), budget.clone())),
        child
            .stderr
            .take()
            .map(|s| spawn_reader(s, argv0.clone(), "stderr", stderr.clone(), budget.clone())),
    ];

    let status = match tokio::time::timeout_at(start + hook.timeout, child.wait()).await {
        Ok(Ok(status)) => status,
        Ok(Err(source)) => return Err(HookError::Spawn { argv0, source }),
        Err(_) => {
            tracing::warn!(hook = %argv0, timeout = ?hook.timeout, "hook timed out, killing it");
            group.terminate(&mut child).await;
            finish_readers(readers).await;
            budget.report(&argv0);
            return Err(HookError::TimedOut {
                argv0,
                after: hook.timeout,
            });
        }
    };
    // The hook itself is done; whatever it left running in its group (a service it
    // started, say) is not ours to kill.
    group.disarm();
    finish_readers(readers).await;
    budget.report(&argv0);

    let outcome = HookOutcome {
        status: status.code(),
        stdout_tail: take_tail(&stdout),
        stderr_tail: take_tail(&stderr),
        elapsed: start.elapsed(),
    };
    tracing::debug!(hook = %argv0, status = ?outcome.status, elapsed = ?outcome.elapsed, "hook finished");
    if status.success() {
        Ok(outcome)
    } else {
        Err(HookError::Failed {
            argv0,
            status: outcome.status,
            stderr_tail: outcome.stderr_tail,
        })
    }
}

/// The hook's process group, killed on drop unless disarmed.
struct GroupGuard(Option<Pid>);

impl GroupGuard {
    fn disarm(&mut self) {
        self.0 = None;
    }

    /// SIGTERM to the group, SIGKILL to whatever of it is left after [`KILL_GRACE`], and
    /// the hook reaped.
    async fn terminate(&mut self, child: &mut tokio::process::Child) {
        let Some(pgid) = self.0.take() else {
            return;
        };
        let _ = killpg(pgid, Signal::SIGTERM);
        let deadline = Instant::now() + KILL_GRACE;
        if tokio::time::timeout_at(deadline, child.wait())
            .await
            .is_ok()
        {
            // The leader is gone; give the rest of the group the rest of the grace.
            while Instant::now() < deadline {
                if killpg(pgid, None) == Err(Errno::ESRCH) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let _ = killpg(pgid, Signal::SIGKILL);
        let _ = child.wait().await;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.0 {
            let _ = killpg(pgid, Signal::SIGKILL);
        }
    }
}

async fn finish_readers(readers: [Option<JoinHandle<()>>; 2]) {
    let deadline = Instant::now() + OUTPUT_GRACE;
    for mut reader in readers.into_iter().flatten() {
        if tokio::time::timeout_at(deadline, &mut reader)
            .await
            .is_err()
        {
            reader.abort();
        }
    }
}

/// The last [`TAIL_BYTES`] of a stream.
#[derive(Default)]
struct Tail(Vec<u8>);

impl Tail {
    fn push(&mut self, data: &[u8]) {
        if data.len() >= TAIL_BYTES {
            self.0.clear();
            self.0.extend_from_slice(&data[data.len() - TAIL_BYTES..]);
            return;
        }
        self.0.extend_from_slice(data);
        if self.0.len() > TAIL_BYTES {
            let excess = self.0.len() - TAIL_BYTES;
            self.0.drain(..excess);
        }
    }
}

fn take_tail(tail: &Mutex<Tail>) -> String {
    let tail = tail.lock().unwrap_or_else(|e| e.into_inner());
    String::from_utf8_lossy(&tail.0).into_owned()
}

/// How much of one run's output was read and how much of it logged, shared by the readers
/// of its two streams.
#[derive(Default)]
struct LogBudget {
    read: AtomicU64,
    logged: AtomicU64,
}

impl LogBudget {
    /// Takes room for a line of `len` bytes (plus its newline); false once the run's
    /// [`MAX_LOGGED_PER_RUN`] is spent.
    fn take(&self, len: usize) -> bool {
        let len = len as u64 + 1;
        self.logged
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |logged| {
                (logged + len <= MAX_LOGGED_PER_RUN as u64).then_some(logged + len)
            })
            .is_ok()
    }

    /// Bytes read but not logged (over the cap, or cut from overlong lines).
    fn dropped(&self) -> u64 {
        let read = self.read.load(Ordering::Relaxed);
        read.saturating_sub(self.logged.load(Ordering::Relaxed))
    }

    /// Says in the log how much output was not logged, when the cap was reached.
    fn report(&self, argv0: &str) {
        let read = self.read.load(Ordering::Relaxed);
        if read > MAX_LOGGED_PER_RUN as u64 {
            tracing::warn!(hook = %argv0, output_bytes = read, dropped_bytes = self.dropped(),
                "hook output: {} of {read} bytes not logged (at most {} KiB per run are)",
                self.dropped(), MAX_LOGGED_PER_RUN / 1024);
        }
    }
}

fn spawn_reader(
    mut stream: impl AsyncRead + Unpin + Send + 'static,
    argv0: String,
    name: &'static str,
    tail: Arc<Mutex<Tail>>,
    budget: Arc<LogBudget>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut lines = LineSplitter::default();
        let mut buf = vec![0u8; 8192];
        let log = |line: &str| {
            if budget.take(line.len()) {
                tracing::info!(hook = %argv0, stream = name, "{line}");
            }
        };
        loop {
            match stream.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => {
                    budget.read.fetch_add(n as u64, Ordering::Relaxed);
                    tail.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(&buf[..n]);
                    lines.feed(&buf[..n], log);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::warn!(hook = %argv0, stream = name, "cannot read hook output: {e}");
                    break;
                }
            }
        }
        lines.finish(log);
    })
}

/// Cuts a byte stream into lines for logging, holding at most [`MAX_LOG_LINE`] bytes.
#[derive(Default)]
struct LineSplitter {
    line: Vec<u8>,
    truncated: bool,
}

impl LineSplitter {
    fn feed(&mut self, mut data: &[u8], mut emit: impl FnMut(&str)) {
        while !data.is_empty() {
            let (segment, ends_line) = match data.iter().position(|b| *b == b'\n') {
                Some(i) => (&data[..i], true),
                None => (data, false),
            };
            let room = MAX_LOG_LINE - self.line.len();
            if segment.len() > room {
                self.line.extend_from_slice(&segment[..room]);
                self.truncated = true;
            } else {
                self.line.extend_from_slice(segment);
            }
            if ends_line {
                self.emit(&mut emit);
                data = &data[segment.len() + 1..];
            } else {
                data = &[];
            }
        }
    }

    fn finish(&mut self, mut emit: impl FnMut(&str)) {
        if !self.line.is_empty() || self.truncated {
            self.emit(&mut emit);
        }
    }

    fn emit(&mut self, emit: &mut impl FnMut(&str)) {
        let text = String::from_utf8_lossy(&self.line);
        let text = text.trim_end_matches('\r');
        if self.truncated {
            emit(&format!("{text}… (line truncated)"));
        } else {
            emit(text);
        }
        self.line.clear();
        self.truncated = false;
    }
}

/// One certificate of a deployed batch: its name, its reload argv lists, and the variables
/// its hooks get.
pub(crate) type BatchEntry = (String, Vec<Vec<String>>, Vec<(String, String)>);

/// One hook per distinct argv (in first-seen order) for the certificates deployed in one
/// batch, so a service shared by many certificates is reloaded once. Each variable of a
/// merged hook holds the values of all the certificates using it, joined by a single space
/// in batch order; a certificate without the variable adds nothing to it. A certificate
/// whose variables lack `RENEWD_NAME` gets its name there, so the hook can always tell
/// which certificates it was run for.
pub(crate) fn coalesce(batch: &[BatchEntry], timeout: Duration) -> Vec<Hook> {
    let mut groups: Vec<(&Vec<String>, Vec<usize>)> = Vec::new();
    for (i, (_, argvs, _)) in batch.iter().enumerate() {
        for argv in argvs {
            match groups.iter_mut().find(|(a, _)| *a == argv) {
                Some((_, users)) => {
                    if !users.contains(&i) {
                        users.push(i);
                    }
                }
                None => groups.push((argv, vec![i])),
            }
        }
    }

    groups
        .into_iter()
        .map(|(argv, users)| {
            let mut env: Vec<(String, String)> = Vec::new();
            for i in users {
                let (name, _, vars) = &batch[i];
                let has_name = vars.iter().any(|(k, _)| k == "RENEWD_NAME");
                let own_name = ("RENEWD_NAME".to_string(), name.clone());
                let vars = (!has_name).then_some(&own_name).into_iter().chain(vars);
                let mut seen = HashSet::new();
                for (key, value) in vars {
                    if !seen.insert(key) {
                        continue;
                    }
                    match env.iter_mut().find(|(k, _)| k == key) {
                        Some((_, joined)) => {
                            joined.push(' ');
                            joined.push_str(value);
                        }
                        None => env.push((key.clone(), value.clone())),
                    }
                }
            }
            Hook {
                argv: argv.clone(),
                env,
                timeout,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sv(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn hook(argv: &[&str], timeout: Duration) -> Hook {
        Hook {
            argv: sv(argv),
            env: Vec::new(),
            timeout,
        }
    }

    /// Whether a process is gone: no /proc entry, or only an unreaped zombie (the test may
    /// run under a PID 1 that does not reap orphans).
    fn is_gone(pid: i32) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(stat) => stat
                .rsplit_once(") ")
                .is_some_and(|(_, rest)| rest.starts_with('Z') || rest.starts_with('X')),
        }
    }

    #[tokio::test]
    async fn hook_sees_its_environment_and_renewds() {
        let batch = vec![
            (
                "a".to_string(),
                vec![sv(&[
                    "sh",
                    "-c",
                    "echo \"$RENEWD_NAME|$RENEWD_CERT|${PATH:+path}\"",
                ])],
                vec![("RENEWD_CERT".to_string(), "/p/a.pem".to_string())],
            ),
            (
                "b".to_string(),
                vec![sv(&[
                    "sh",
                    "-c",
                    "echo \"$RENEWD_NAME|$RENEWD_CERT|${PATH:+path}\"",
                ])],
                vec![("RENEWD_CERT".to_string(), "/p/b.pem".to_string())],
            ),
        ];
        let hooks = coalesce(&batch, Duration::from_secs(10));
        assert_eq!(hooks.len(), 1);
        let outcome = run(&hooks[0]).await.expect("hook runs");
        assert_eq!(outcome.status, Some(0));
        assert_eq!(outcome.stdout_tail, "a b|/p/a.pem /p/b.pem|path\n");
        assert_eq!(outcome.stderr_tail, "");
    }

    #[tokio::test]
    async fn stdin_is_empty() {
        let outcome = run(&hook(&["sh", "-c", "wc -c"], Duration::from_secs(10)))
            .await
            .expect("runs");
        assert_eq!(outcome.stdout_tail.trim(), "0");
    }

    #[tokio::test]
    async fn failing_hook_reports_status_and_stderr() {
        let err = run(&hook(
            &[
                "sh",
                "-c",
                "echo partial; echo 'nginx: config test failed' >&2; exit 3",
            ],
            Duration::from_secs(10),
        ))
        .await
        .expect_err("fails");
        match &err {
            HookError::Failed {
                argv0,
                status,
                stderr_tail,
            } => {
                assert_eq!(argv0, "sh");
                assert_eq!(*status, Some(3));
                assert_eq!(stderr_tail, "nginx: config test failed\n");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(
            err.to_string(),
            "sh exited with status 3: nginx: config test failed"
        );
    }

    #[tokio::test]
    async fn hook_killed_by_a_signal_has_no_status() {
        let err = run(&hook(&["sh", "-c", "kill -9 $$"], Duration::from_secs(10)))
            .await
            .expect_err("killed");
        assert!(
            matches!(err, HookError::Failed { status: None, .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("killed by a signal"));
    }

    #[tokio::test]
    async fn missing_program_and_empty_argv_are_spawn_errors() {
        let err = run(&hook(&["/nonexistent/renewd-hook"], Duration::from_secs(1)))
            .await
            .expect_err("spawn");
        assert!(matches!(err, HookError::Spawn { .. }));
        assert!(
            err.to_string().contains("/nonexistent/renewd-hook"),
            "{err}"
        );
        let err = run(&hook(&[], Duration::from_secs(1)))
            .await
            .expect_err("empty");
        assert!(matches!(err, HookError::Spawn { .. }));
    }

    #[tokio::test]
    async fn timed_out_hook_is_killed_with_its_process_group() {
        assert_group_killed("").await;
    }

    /// SIGTERM is ignored by the whole group, so only the SIGKILL after the grace ends it.
    #[tokio::test]
    async fn a_hook_ignoring_sigterm_is_killed_after_the_grace() {
        assert_group_killed("trap '' TERM; ").await;
    }

    async fn assert_group_killed(prelude: &str) {
        let dir = tempfile::tempdir().expect("tempdir");
        let pids = dir.path().join("pids");
        let script = format!(
            "{prelude}sleep 30 & echo $$ $! > {}; sleep 30",
            pids.to_string_lossy()
        );
        let err = run(&hook(&["sh", "-c", &script], Duration::from_secs(1)))
            .await
            .expect_err("times out");
        assert!(
            matches!(&err, HookError::TimedOut { after, .. } if *after == Duration::from_secs(1)),
            "{err:?}"
        );
        let text = std::fs::read_to_string(&pids).expect("pids written");
        let pids: Vec<i32> = text
            .split_whitespace()
            .map(|p| p.parse().expect("pid"))
            .collect();
        assert_eq!(pids.len(), 2);
        // SIGKILL is sent to the group before `run` returns; a process dies when the kernel
        // next runs it, which on a busy machine can be a moment later.
        for pid in pids {
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while !is_gone(pid) && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            assert!(is_gone(pid), "process {pid} survived SIGKILL for 5 s");
        }
    }

    #[tokio::test]
    async fn a_background_child_holding_stdout_does_not_hold_the_hook() {
        let outcome = run(&hook(
            &["sh", "-c", "sleep 30 & echo $!; exit 0"],
            Duration::from_secs(20),
        ))
        .await
        .expect("hook succeeds");
        assert_eq!(outcome.status, Some(0));
        let pid: i32 = outcome.stdout_tail.trim().parse().expect("pid");
        // The leftover is not killed by run(); clean it up here.
        assert!(!is_gone(pid));
        let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
    }

    #[tokio::test]
    async fn output_tail_is_bounded() {
        let outcome = run(&hook(
            &[
                "sh",
                "-c",
                "i=0; while [ $i -lt 3000 ]; do echo line-$i; i=$((i+1)); done",
            ],
            Duration::from_secs(20),
        ))
        .await
        .expect("runs");
        assert_eq!(outcome.stdout_tail.len(), TAIL_BYTES);
        assert!(outcome.stdout_tail.ends_with("line-2998\nline-2999\n"));
    }

    #[test]
    fn tail_keeps_the_last_bytes() {
        let mut t = Tail::default();
        t.push(&[b'a'; 3000]);
        t.push(&[b'b'; 2000]);
        assert_eq!(t.0.len(), TAIL_BYTES);
        assert!(t.0.ends_with(&[b'b'; 2000]));
        t.push(&[b'c'; 10_000]);
        assert_eq!(t.0, vec![b'c'; TAIL_BYTES]);
    }

    #[test]
    fn lines_are_split_across_reads_and_truncated() {
        let mut out = Vec::new();
        let mut s = LineSplitter::default();
        s.feed(b"one\r\ntw", |l| out.push(l.to_string()));
        s.feed(b"o\n", |l| out.push(l.to_string()));
        s.feed(&[b'x'; MAX_LOG_LINE + 10], |l| out.push(l.to_string()));
        s.feed(b"yyy\nlast", |l| out.push(l.to_string()));
        s.finish(|l| out.push(l.to_string()));
        assert_eq!(out.len(), 4);
        assert_eq!(out[0], "one");
        assert_eq!(out[1], "two");
        assert_eq!(
            out[2],
            format!("{}… (line truncated)", "x".repeat(MAX_LOG_LINE))
        );
        assert_eq!(out[3], "last");
    }

    #[test]
    fn coalesce_merges_shared_commands_and_keeps_others_apart() {
        let reload_nginx = sv(&["systemctl", "reload", "nginx"]);
        let reload_haproxy = sv(&["systemctl", "reload", "haproxy"]);
        let env = |name: &str, cert: Option<&str>| {
            let mut v = vec![("RENEWD_NAME".to_string(), name.to_string())];
            if let Some(c) = cert {
                v.push(("RENEWD_CERT".to_string(), c.to_string()));
            }
            v
        };
        let batch = vec![
            (
                "a".to_string(),
                vec![reload_nginx.clone()],
                env("a", Some("/p/a.pem")),
            ),
            (
                "b".to_string(),
                vec![
                    reload_haproxy.clone(),
                    reload_nginx.clone(),
                    reload_nginx.clone(),
                ],
                env("b", None),
            ),
            (
                "c".to_string(),
                vec![reload_nginx.clone()],
                env("c", Some("/p/c.pem")),
            ),
            ("d".to_string(), vec![], env("d", Some("/p/d.pem"))),
        ];
        let hooks = coalesce(&batch, Duration::from_secs(7));
        assert_eq!(
            hooks,
            vec![
                Hook {
                    argv: reload_nginx,
                    env: vec![
                        ("RENEWD_NAME".to_string(), "a b c".to_string()),
                        ("RENEWD_CERT".to_string(), "/p/a.pem /p/c.pem".to_string()),
                    ],
                    timeout: Duration::from_secs(7),
                },
                Hook {
                    argv: reload_haproxy,
                    env: vec![("RENEWD_NAME".to_string(), "b".to_string())],
                    timeout: Duration::from_secs(7),
                },
            ]
        );
        assert!(coalesce(&[], Duration::from_secs(1)).is_empty());
    }

    #[test]
    fn coalesce_supplies_the_name_when_the_variables_lack_it() {
        let batch = vec![(
            "www".to_string(),
            vec![sv(&["true"])],
            vec![("RENEWD_SERIAL".to_string(), "0a".to_string())],
        )];
        let hooks = coalesce(&batch, Duration::from_secs(1));
        assert_eq!(
            hooks[0].env,
            vec![
                ("RENEWD_NAME".to_string(), "www".to_string()),
                ("RENEWD_SERIAL".to_string(), "0a".to_string()),
            ]
        );
    }
}

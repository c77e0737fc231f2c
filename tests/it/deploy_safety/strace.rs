//! Checks of how renewd creates files, from the outside: an strace log of its system calls
//! judged against [`Rules`] (created exclusively, never through a link, never wider than
//! its final mode, chowned before widened), and an inotify [`Watcher`] that stats every
//! file created in a directory while it exists.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::TEMP_MARKER;
use crate::common::wait_until;

/// The name a temporary stands for: `.www.key.renewd-0123` → `www.key`.
pub(super) fn temp_of(path: &Path) -> &str {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    match name.find(TEMP_MARKER) {
        Some(i) => name[..i].trim_start_matches('.'),
        None => name,
    }
}

/// What may be created in `dir`, and how.
pub(super) struct Rules {
    pub(super) dir: PathBuf,
    /// Target names (not paths) of the files that hold the key.
    pub(super) key_names: Vec<String>,
    pub(super) key_mode: u32,
    /// `user`/`group` configured: a key temporary must be chowned before it is widened.
    pub(super) chown_expected: bool,
}

impl Rules {
    fn in_dir(&self, path: &Path) -> bool {
        path.parent() == Some(&*self.dir)
    }

    pub(super) fn holds_key(&self, path: &Path) -> bool {
        self.key_names.iter().any(|k| k == temp_of(path))
    }

    /// The widest mode a file at `path` may ever have.
    fn widest(&self, path: &Path) -> u32 {
        if self.holds_key(path) {
            self.key_mode
        } else {
            0o644
        }
    }

    pub(super) fn judge_observations(&self, seen: &[Observation]) -> Vec<String> {
        seen.iter()
            .filter_map(|o| {
                let mode = o.mode?;
                (mode & !self.widest(&o.path) != 0).then(|| {
                    format!(
                        "the watcher saw {} with mode {mode:04o}, wider than {:04o}",
                        o.path.display(),
                        self.widest(&o.path)
                    )
                })
            })
            .collect()
    }
}

#[derive(Debug, Default)]
pub(super) struct Report {
    pub(super) violations: Vec<String>,
    /// Files created in the directory, with the mode given to open(2).
    pub(super) created: Vec<(PathBuf, u32)>,
    /// (from, to) of renames into the directory.
    pub(super) renamed: Vec<(PathBuf, PathBuf)>,
}

/// One system call of an strace log: `PID name(args) = result`.
struct Call<'a> {
    name: &'a str,
    args: &'a str,
    result: &'a str,
}

/// Joins calls strace split across lines (`<unfinished ...>` / `<... name resumed>`).
fn calls(log: &str) -> Vec<String> {
    let mut pending: HashMap<String, String> = HashMap::new();
    let mut out = Vec::new();
    for line in log.lines() {
        let Some((pid, rest)) = line.split_once(' ') else {
            continue;
        };
        let rest = rest.trim_start();
        if let Some(head) = rest.strip_suffix("<unfinished ...>") {
            pending.insert(pid.to_string(), head.trim_end().to_string());
        } else if let Some(after) = rest.strip_prefix("<... ") {
            let tail = after.split_once("resumed>").map(|(_, t)| t).unwrap_or("");
            let head = pending.remove(pid).unwrap_or_default();
            out.push(format!("{head}{tail}"));
        } else if !rest.starts_with("---") && !rest.starts_with("+++") {
            out.push(rest.to_string());
        }
    }
    out
}

fn parse_call(line: &str) -> Option<Call<'_>> {
    let open = line.find('(')?;
    let close = line.rfind(") = ")?;
    Some(Call {
        name: &line[..open],
        args: &line[open + 1..close],
        result: line[close + 4..].trim(),
    })
}

/// The quoted strings of an argument list, in order (renewd's paths need no unescaping).
fn quoted(args: &str) -> Vec<&str> {
    args.split('"').skip(1).step_by(2).collect()
}

/// The unquoted arguments after the last quoted one: flags and mode of an open.
fn after_quoted(args: &str) -> Vec<&str> {
    let tail = args.rsplit('"').next().unwrap_or("");
    tail.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}

fn octal(s: &str) -> Option<u32> {
    u32::from_str_radix(s.trim(), 8).ok()
}

/// A temporary renewd created in the directory, by its descriptor.
#[derive(Default)]
struct Temp {
    path: PathBuf,
    chowned: bool,
    chmodded: bool,
    written: bool,
}

/// An analysis under way: the report so far and the temporaries open by descriptor.
struct Analysis<'r> {
    rules: &'r Rules,
    report: Report,
    fds: HashMap<String, Temp>,
}

/// Checks an strace log of renewd against `rules`.
pub(super) fn analyze(log: &str, rules: &Rules) -> Report {
    let mut a = Analysis {
        rules,
        report: Report::default(),
        fds: HashMap::new(),
    };
    for line in calls(log) {
        let Some(call) = parse_call(&line) else {
            continue;
        };
        if call.result.starts_with("-1") {
            continue;
        }
        let found = match call.name {
            "open" | "openat" | "creat" => a.open(&call),
            "chmod" | "fchmodat" | "fchmod" => a.chmod(&call),
            "fchown" => a.fchown(&call),
            "write" => a.write(&call),
            "rename" | "renameat" | "renameat2" | "link" | "linkat" => a.rename_or_link(&call),
            _ => Vec::new(),
        };
        let said = found.into_iter().map(|v| format!("{v}: {line}"));
        a.report.violations.extend(said);
    }
    a.report
}

/// Each call's checks: the violations found, without the call.
impl Analysis<'_> {
    /// A file opened or created in the directory.
    fn open(&mut self, call: &Call) -> Vec<String> {
        let mut v = Vec::new();
        let Some(path) = quoted(call.args).first().map(PathBuf::from) else {
            return v;
        };
        if !self.rules.in_dir(&path) {
            // The descriptor now names something else.
            self.fds.remove(call.result);
            return v;
        }
        let rest = after_quoted(call.args);
        let (flags, mode) = if call.name == "creat" {
            ("O_CREAT|O_WRONLY|O_TRUNC", rest.first().copied())
        } else {
            (rest.first().copied().unwrap_or(""), rest.get(1).copied())
        };
        let has = |f: &str| flags.split('|').any(|x| x == f);
        if !has("O_CREAT") {
            if has("O_WRONLY") || has("O_RDWR") || has("O_TRUNC") || has("O_APPEND") {
                v.push(format!(
                    "opens an existing file for writing: {}",
                    path.display()
                ));
            }
            return v;
        }
        if !has("O_EXCL") {
            v.push(format!("creates {} without O_EXCL", path.display()));
        }
        if !has("O_NOFOLLOW") {
            v.push(format!("creates {} without O_NOFOLLOW", path.display()));
        }
        if !path.to_string_lossy().contains(TEMP_MARKER) {
            v.push(format!("creates {}, not a temporary", path.display()));
        }
        let mode = mode.and_then(octal).unwrap_or(0o7777);
        if mode & !self.rules.widest(&path) != 0 {
            v.push(format!(
                "creates {} with mode {mode:04o}, wider than {:04o}",
                path.display(),
                self.rules.widest(&path)
            ));
        }
        self.report.created.push((path.clone(), mode));
        self.fds.insert(
            call.result.to_string(),
            Temp {
                path,
                ..Temp::default()
            },
        );
        v
    }

    /// A mode set, on a path or on a temporary's descriptor.
    fn chmod(&mut self, call: &Call) -> Vec<String> {
        let mut v = Vec::new();
        let (path, mode) = if call.name == "fchmod" {
            let mut a = call.args.split(',');
            let fd = a.next().unwrap_or("").trim();
            let Some(temp) = self.fds.get_mut(fd) else {
                return v;
            };
            let mode = a.next().and_then(octal).unwrap_or(0o7777);
            if self.rules.chown_expected && !temp.chowned && mode & !0o600 != 0 {
                v.push(format!(
                    "widens {} to {mode:04o} before its owner is set",
                    temp.path.display()
                ));
            }
            temp.chmodded = true;
            (temp.path.clone(), mode)
        } else {
            let Some(path) = quoted(call.args).first().map(PathBuf::from) else {
                return v;
            };
            let mode = after_quoted(call.args)
                .first()
                .and_then(|m| octal(m))
                .unwrap_or(0o7777);
            (path, mode)
        };
        if self.rules.in_dir(&path) && mode & !self.rules.widest(&path) != 0 {
            v.push(format!(
                "chmod of {} to {mode:04o}, wider than {:04o}",
                path.display(),
                self.rules.widest(&path)
            ));
        }
        v
    }

    /// A temporary's owner set.
    fn fchown(&mut self, call: &Call) -> Vec<String> {
        let fd = call.args.split(',').next().unwrap_or("").trim();
        if let Some(temp) = self.fds.get_mut(fd) {
            temp.chowned = true;
        }
        Vec::new()
    }

    /// A temporary written: only once its final mode is set.
    fn write(&mut self, call: &Call) -> Vec<String> {
        let mut v = Vec::new();
        let fd = call.args.split(',').next().unwrap_or("").trim();
        if let Some(temp) = self.fds.get_mut(fd) {
            if !temp.written && !temp.chmodded {
                let path = temp.path.display().to_string();
                temp.written = true;
                v.push(format!("writes {path} before its final mode is set"));
            }
            temp.written = true;
        }
        v
    }

    /// A rename or hard link into the directory.
    fn rename_or_link(&mut self, call: &Call) -> Vec<String> {
        let mut v = Vec::new();
        let paths = quoted(call.args);
        let (Some(from), Some(to)) = (paths.first(), paths.get(1)) else {
            return v;
        };
        let (from, to) = (PathBuf::from(from), PathBuf::from(to));
        if !self.rules.in_dir(&to) {
            return v;
        }
        if call.name.starts_with("rename") {
            if !(self.rules.in_dir(&from) && from.to_string_lossy().contains(TEMP_MARKER)) {
                v.push(format!(
                    "renames {} (not a temporary beside it) onto {}",
                    from.display(),
                    to.display()
                ));
            }
            self.report.renamed.push((from, to));
        } else if !to.to_string_lossy().contains(TEMP_MARKER) {
            // A swap journal's backups are hard links named like temporaries.
            v.push(format!("links {} to {}", from.display(), to.display()));
        }
        v
    }
}

/// A mode a file in the watched directory was seen with (`None`: gone before its first
/// stat).
#[derive(Debug, Clone)]
pub(super) struct Observation {
    pub(super) path: PathBuf,
    pub(super) mode: Option<u32>,
}

/// Watches a directory with inotify; each file created there is lstat'ed at once, then
/// every millisecond until it is gone (renamed away), the watcher stops or 10 s have
/// passed; each mode it is seen with is recorded.
pub(super) struct Watcher {
    _watcher: notify::RecommendedWatcher,
    seen: Arc<Mutex<Vec<Observation>>>,
    pollers: Arc<Mutex<Vec<std::thread::JoinHandle<()>>>>,
    done: Arc<AtomicBool>,
}

impl Watcher {
    pub(super) fn start(dir: &Path) -> Watcher {
        use notify::Watcher as _;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let pollers = Arc::new(Mutex::new(Vec::new()));
        let done = Arc::new(AtomicBool::new(false));
        let (sink, threads, stop) = (seen.clone(), pollers.clone(), done.clone());
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                let Ok(event) = event else { return };
                if !matches!(event.kind, notify::EventKind::Create(_)) {
                    return;
                }
                for path in event.paths {
                    let (sink, stop) = (sink.clone(), stop.clone());
                    let poller = std::thread::spawn(move || poll_modes(path, &sink, &stop));
                    threads
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(poller);
                }
            })
            .expect("inotify watcher");
        watcher
            .watch(dir, notify::RecursiveMode::NonRecursive)
            .expect("watch");
        Watcher {
            _watcher: watcher,
            seen,
            pollers,
            done,
        }
    }

    /// Waits (10 s at most) until `path` has been stat'ed with a mode.
    pub(super) fn wait_seen(&self, path: &Path) {
        wait_until(
            std::time::Duration::from_secs(10),
            "the watcher to stat the file",
            || {
                self.seen
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .iter()
                    .any(|o| o.path == path && o.mode.is_some())
            },
        );
    }

    pub(super) fn stop(self) -> Vec<Observation> {
        drop(self._watcher);
        self.done.store(true, Ordering::SeqCst);
        let pollers = std::mem::take(&mut *self.pollers.lock().unwrap_or_else(|e| e.into_inner()));
        for poller in pollers {
            let _ = poller.join();
        }
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
        seen
    }
}

fn poll_modes(path: PathBuf, sink: &Mutex<Vec<Observation>>, done: &AtomicBool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut last = None;
    loop {
        let mode = fs::symlink_metadata(&path).ok().map(|m| m.mode() & 0o7777);
        if mode != last || last.is_none() {
            sink.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(Observation {
                    path: path.clone(),
                    mode,
                });
        }
        if mode.is_none() || done.load(Ordering::SeqCst) || std::time::Instant::now() > deadline {
            return;
        }
        last = mode;
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

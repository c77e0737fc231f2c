//! The control socket: how `renewd status` and `renewd renew` talk to a running daemon.
//!
//! One JSON request per connection, one JSON response, each a single line. The socket is
//! 0600 in a directory only root (or renewd's user) can write — the daemon refuses any other
//! ([`check_socket_dir`]), since whoever can write there could put a socket of their own in
//! its place — and both ends check the other's credentials: only root (or the daemon's own
//! user) may ask, and a client only believes a server run by root (or by its own user).
//! Requests are bounded in size and time, connections in number ([`crate::serve`]); a
//! malformed request gets an error response and never disturbs the daemon.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

use crate::status::StatusRow;

/// Largest request accepted, in bytes.
const MAX_REQUEST: u64 = 64 * 1024;
/// How long a client has to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client has to take the answer.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// The most control connections served at once, before [`crate::serve::connection_cap`]
/// bounds it by the descriptor limit.
const MAX_CONNECTIONS: usize = 32;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "op", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    Status {
        #[serde(default)]
        names: Vec<String>,
    },
    Renew {
        #[serde(default)]
        names: Vec<String>,
        #[serde(default)]
        all: bool,
        #[serde(default)]
        force: bool,
        #[serde(default)]
        dry_run: bool,
    },
    /// Revoke a certificate, then issue and deploy a replacement (answered like `Renew`).
    Revoke {
        name: String,
        #[serde(default)]
        reason: Option<String>,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum Response {
    Status { certificates: Vec<StatusRow> },
    Renew { results: Vec<RenewResult> },
    Error { message: String },
}

/// The outcome of a `renew` request for one certificate.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RenewResult {
    pub name: String,
    /// "renewed", "dry-run-ok", "skipped", "failed"
    pub outcome: String,
    pub message: String,
}

impl RenewResult {
    pub(crate) fn failed(&self) -> bool {
        self.outcome == "failed"
    }
}

/// Why the control socket could not be used, by a client or by the daemon binding it.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The socket exists but connecting failed for another reason than "nobody listens".
    #[error("cannot reach the daemon at {}: {source}", .path.display())]
    Unreachable { path: PathBuf, source: io::Error },
    /// Sending the request or reading the answer failed.
    #[error("control socket {}: {source}", .path.display())]
    Io { path: PathBuf, source: io::Error },
    /// The request could not be encoded.
    #[error("{0}")]
    Encode(serde_json::Error),
    /// The daemon's answer is not a [`Response`].
    #[error("the daemon's answer is not understood ({source}): {}", .answer.trim())]
    Answer {
        source: serde_json::Error,
        answer: String,
    },
    /// The socket is served by someone else than root or this user, or who serves it is
    /// unknown: its answer is not read.
    #[error("{message}")]
    Untrusted { path: PathBuf, message: String },
    /// The socket's path or directory is unsafe, or cannot be used: the message names it
    /// and the fix.
    #[error("{message}")]
    Unsafe { path: PathBuf, message: String },
    /// A daemon already listens there.
    #[error("another renewd daemon is already listening on {}", .0.display())]
    InUse(PathBuf),
    /// Creating the directory, removing a stale socket, binding or chmodding failed.
    #[error("cannot {action} {}: {source}", .path.display())]
    Bind {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

fn unsafe_at(path: &Path, message: String) -> ControlError {
    ControlError::Unsafe {
        path: path.to_path_buf(),
        message,
    }
}

/// A request received by the daemon, with the channel to answer it on.
pub type Incoming = (Request, oneshot::Sender<Response>);

/// Sends `req` to the daemon listening on `socket`. `Ok(None)` means no daemon is listening
/// there, so the caller may do the work itself. A socket served by anyone but root or this
/// process's effective user is an error (someone else put it there), and its answer is not
/// read.
pub(crate) async fn request(
    socket: &Path,
    req: &Request,
) -> Result<Option<Response>, ControlError> {
    let mut stream = match UnixStream::connect(socket).await {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None)
        }
        Err(source) => {
            return Err(ControlError::Unreachable {
                path: socket.to_path_buf(),
                source,
            })
        }
    };
    check_server(&stream, socket)?;
    let mut line = serde_json::to_vec(req).map_err(ControlError::Encode)?;
    line.push(b'\n');
    let io_error = |source| ControlError::Io {
        path: socket.to_path_buf(),
        source,
    };
    stream.write_all(&line).await.map_err(io_error)?;
    let mut reply = String::new();
    BufReader::new(stream)
        .read_line(&mut reply)
        .await
        .map_err(io_error)?;
    serde_json::from_str(&reply)
        .map(Some)
        .map_err(|source| ControlError::Answer {
            source,
            answer: reply,
        })
}

/// The server at the other end of `stream` must run as root or as this process's effective
/// user (SO_PEERCRED).
fn check_server(stream: &UnixStream, socket: &Path) -> Result<(), ControlError> {
    let untrusted = |message| ControlError::Untrusted {
        path: socket.to_path_buf(),
        message,
    };
    let peer = stream.peer_cred().map_err(|e| {
        untrusted(format!(
            "control socket {}: cannot learn who serves it: {e}",
            socket.display()
        ))
    })?;
    if crate::fsutil::trusted_uid(peer.uid()) {
        return Ok(());
    }
    Err(untrusted(format!(
        "the control socket {} is served by {} (pid {}), not by root: refusing to believe its \
         answer; another user may have put it there, so `control_socket` must be in a \
         directory only root can write (such as /run/renewd)",
        socket.display(),
        user_name(peer.uid()),
        peer.pid()
            .map(|p| p.to_string())
            .unwrap_or_else(|| "unknown".into()),
    )))
}

fn user_name(uid: u32) -> String {
    match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        Ok(Some(user)) => format!("user {} ({uid})", user.name),
        _ => format!("uid {uid}"),
    }
}

/// The directory of the control socket must be one nobody but root (or renewd's effective
/// user) controls: owned by one of them and writable by neither group nor others, with every
/// directory on the way to it as safe as a key directory's ([`crate::deploy::check_target_dir`]).
/// Otherwise another user could bind a socket of their own there first — the daemon would not
/// start, and `renewd status` would get their answer. The error names the directory and the
/// fix.
pub(crate) fn check_socket_dir(dir: &Path) -> Result<(), ControlError> {
    use std::os::unix::fs::MetadataExt;
    let shown = dir.display();
    let meta = std::fs::metadata(dir)
        .map_err(|e| unsafe_at(dir, format!("the control socket's directory {shown}: {e}")))?;
    if !meta.is_dir() {
        return Err(unsafe_at(
            dir,
            format!("the control socket's directory {shown} is not a directory"),
        ));
    }
    if !crate::fsutil::trusted_uid(meta.uid()) {
        return Err(unsafe_at(
            dir,
            format!(
                "the control socket's directory {shown} is owned by {}, who could put a socket of \
             their own there and answer `renewd status`; use a directory owned by root and \
             writable by nobody else, such as /run/renewd",
                user_name(meta.uid())
            ),
        ));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        let who = match (mode & 0o020 != 0, mode & 0o002 != 0) {
            (true, true) => "its group and every user",
            (true, false) => "its group",
            _ => "every user",
        };
        return Err(unsafe_at(
            dir,
            format!(
            "the control socket's directory {shown} is writable by {who} (mode {mode:04o}), so \
             another user could put a socket of their own there and answer `renewd status`; \
             make it writable only by its owner (chmod go-w {shown}) or use /run/renewd"
        ),
        ));
    }
    crate::deploy::check_target_dir(dir)
        .map_err(|e| unsafe_at(dir, format!("the control socket's directory: {e}")))
}

/// `renewd check`'s look at `control_socket`: its directory, when it exists, must pass
/// [`check_socket_dir`] (a missing one is created by the daemon, 0700).
pub(crate) fn check_socket(config: &crate::config::Config) -> Vec<crate::config::Problem> {
    let Some(dir) = config.control_socket.parent() else {
        return Vec::new();
    };
    if !dir.exists() {
        return Vec::new();
    }
    match check_socket_dir(dir) {
        Ok(()) => Vec::new(),
        Err(message) => vec![crate::config::Problem::new(
            config.key_location("control_socket"),
            format!("`control_socket`: {message}"),
        )],
    }
}

/// Refuses a `control_socket` path where something other than a socket exists: binding
/// removes what is there first (a stale socket of an earlier daemon), and a regular file,
/// directory or symlink at that name is not renewd's to remove. A missing path is fine.
pub(crate) fn check_socket_path(socket: &Path) -> Result<(), ControlError> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(socket) {
        Ok(meta) if meta.file_type().is_socket() => Ok(()),
        Ok(meta) => {
            let kind = if meta.file_type().is_symlink() {
                "a symlink"
            } else if meta.is_dir() {
                "a directory"
            } else if meta.is_file() {
                "a regular file"
            } else {
                "a special file"
            };
            Err(unsafe_at(
                socket,
                format!(
                    "control_socket {} is {kind}, not a socket; renewd would replace it with its \
                     socket: remove it yourself if it is not needed, or point `control_socket` \
                     at a path of its own",
                    socket.display()
                ),
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(unsafe_at(
            socket,
            format!("control_socket {}: {e}", socket.display()),
        )),
    }
}

/// Binds the control socket: creates its directory 0700 if it is missing, refuses a
/// directory others control ([`check_socket_dir`]) and anything but a socket at the path
/// ([`check_socket_path`]), removes a stale socket left by a crashed daemon, and creates the
/// socket 0600.
pub async fn bind(socket: &Path) -> Result<UnixListener, ControlError> {
    let failed = |action, path: &Path| {
        let path = path.to_path_buf();
        move |source| ControlError::Bind {
            action,
            path,
            source,
        }
    };
    check_socket_path(socket)?;
    if let Some(dir) = socket.parent() {
        if !dir.exists() {
            crate::fsutil::ensure_dir(dir, 0o700).map_err(failed("create", dir))?;
        }
        check_socket_dir(dir)?;
    }
    if socket.exists() {
        if UnixStream::connect(socket).await.is_ok() {
            return Err(ControlError::InUse(socket.to_path_buf()));
        }
        std::fs::remove_file(socket).map_err(failed("remove stale", socket))?;
    }
    // Bind under a restrictive umask so the socket is never connectable by others, even
    // for the instant before chmod.
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let bound = UnixListener::bind(socket);
    nix::sys::stat::umask(old);
    let listener = bound.map_err(failed("listen on", socket))?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))
        .map_err(failed("chmod", socket))?;
    Ok(listener)
}

/// Accepts connections until `stop` fires, handing each well-formed request to the daemon,
/// then cuts the connections still open and returns once they are gone. At most
/// [`MAX_CONNECTIONS`] are served at once (see [`crate::serve`]); a request must arrive
/// within 10 s and its answer be taken within 10 s.
pub async fn serve(
    listener: UnixListener,
    to_daemon: mpsc::Sender<Incoming>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let me = nix::unistd::geteuid().as_raw();
    let limits = crate::serve::Limits {
        max_connections: crate::serve::connection_cap(MAX_CONNECTIONS),
        // A `renew` answer waits for the renewal; the request and the answer are each
        // bounded by `handle`.
        lifetime: None,
    };
    let handler = move |stream, conn| {
        let to_daemon = to_daemon.clone();
        async move {
            if let Err(e) = handle(stream, to_daemon, me, conn).await {
                tracing::debug!(error = %e, "control connection ended");
            }
        }
    };
    let stopped = async move {
        let _ = stop.wait_for(|stopped| *stopped).await;
    };
    crate::serve::serve_until("control socket".into(), listener, limits, handler, stopped).await;
}

async fn handle(
    stream: UnixStream,
    to_daemon: mpsc::Sender<Incoming>,
    me: u32,
    conn: crate::serve::Conn,
) -> io::Result<()> {
    let peer = stream.peer_cred()?;
    let (read, mut write) = stream.into_split();
    // The request is read (bounded) even from a peer that will be refused, so that it gets
    // the refusal as an answer rather than a broken pipe.
    let request = read_request(read).await;
    conn.started();
    let response = if peer.uid() != 0 && peer.uid() != me {
        tracing::warn!(uid = peer.uid(), "control request refused: not root");
        Response::Error {
            message: "permission denied: only root may control renewd".into(),
        }
    } else {
        match request {
            Err(e) => Response::Error {
                message: e.to_string(),
            },
            Ok(req) => {
                let (tx, rx) = oneshot::channel();
                if to_daemon.send((req, tx)).await.is_err() {
                    Response::Error {
                        message: "the daemon is shutting down".into(),
                    }
                } else {
                    rx.await.unwrap_or(Response::Error {
                        message: "the daemon is shutting down".into(),
                    })
                }
            }
        }
    };
    let mut line = serde_json::to_vec(&response).map_err(io::Error::other)?;
    line.push(b'\n');
    tokio::time::timeout(WRITE_TIMEOUT, write.write_all(&line))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "answer not taken in time"))?
}

/// Why a request was not taken; the client gets the message as its answer.
#[derive(Debug, thiserror::Error)]
enum RequestError {
    #[error("request not received in time")]
    Timeout,
    #[error("cannot read request: {0}")]
    Read(io::Error),
    #[error("request too long or not terminated by a newline (limit {MAX_REQUEST} bytes)")]
    TooLong,
    #[error("malformed request: {0}")]
    Malformed(serde_json::Error),
}

async fn read_request(read: tokio::net::unix::OwnedReadHalf) -> Result<Request, RequestError> {
    let mut line = String::new();
    let mut limited = BufReader::new(read.take(MAX_REQUEST));
    match tokio::time::timeout(READ_TIMEOUT, limited.read_line(&mut line)).await {
        Err(_) => return Err(RequestError::Timeout),
        Ok(Err(e)) => return Err(RequestError::Read(e)),
        Ok(Ok(_)) => {}
    }
    if !line.ends_with('\n') {
        return Err(RequestError::TooLong);
    }
    serde_json::from_str(&line).map_err(RequestError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        let r = Request::Renew {
            names: vec!["www".into()],
            all: false,
            force: true,
            dry_run: false,
        };
        let s = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<Request>(&s).unwrap(), r);
        assert!(serde_json::from_str::<Request>(r#"{"op":"status","bogus":1}"#).is_err());
        assert!(serde_json::from_str::<Request>(r#"{"op":"rm -rf"}"#).is_err());
    }

    #[tokio::test]
    async fn malformed_requests_get_an_error_and_the_server_lives_on() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("c.sock");
        let listener = bind(&sock).await.unwrap();
        let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (tx, mut rx) = mpsc::channel::<Incoming>(4);
        let (_stop_tx, stop) = tokio::sync::watch::channel(false);
        tokio::spawn(serve(listener, tx, stop));
        tokio::spawn(async move {
            while let Some((_, reply)) = rx.recv().await {
                let _ = reply.send(Response::Status {
                    certificates: vec![],
                });
            }
        });
        for garbage in ["not json\n", "{\"op\":\"explode\"}\n", "\n"] {
            let mut s = UnixStream::connect(&sock).await.unwrap();
            s.write_all(garbage.as_bytes()).await.unwrap();
            let mut out = String::new();
            BufReader::new(s).read_line(&mut out).await.unwrap();
            let r: Response = serde_json::from_str(&out).unwrap();
            assert!(matches!(r, Response::Error { .. }), "{garbage:?} -> {out}");
        }
        let ok = request(&sock, &Request::Status { names: vec![] })
            .await
            .unwrap();
        assert_eq!(
            ok,
            Some(Response::Status {
                certificates: vec![]
            })
        );
        assert_eq!(
            request(
                &dir.path().join("none.sock"),
                &Request::Status { names: vec![] }
            )
            .await
            .unwrap(),
            None
        );
    }

    /// A socket directory another user could write, or owns, is refused with a message
    /// naming it; the daemon does not bind there.
    #[tokio::test]
    async fn a_socket_directory_others_control_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        std::fs::create_dir(&run).unwrap();
        let sock = run.join("c.sock");
        for (mode, says) in [
            (0o1777, "writable by its group and every user (mode 1777)"),
            (0o770, "writable by its group (mode 0770)"),
            (0o703, "writable by every user (mode 0703)"),
        ] {
            std::fs::set_permissions(&run, std::fs::Permissions::from_mode(mode)).unwrap();
            let Err(e) = bind(&sock).await else {
                panic!("{} bound", run.display())
            };
            let e = e.to_string();
            assert!(e.contains(&run.display().to_string()), "{e}");
            assert!(e.contains(says), "{e}");
            assert!(!sock.exists());
        }
        std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o755)).unwrap();
        if nix::unistd::geteuid().is_root() {
            std::os::unix::fs::chown(&run, Some(65534), None).unwrap();
            let Err(e) = bind(&sock).await else {
                panic!("{} bound", run.display())
            };
            assert!(e.to_string().contains("is owned by"), "{e}");
            std::os::unix::fs::chown(&run, Some(0), None).unwrap();
        }
        bind(&sock)
            .await
            .expect("a directory only its owner writes is fine");
    }
}

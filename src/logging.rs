//! Where logs go and how much of them: to the journal with structured fields (certificate
//! name, CA, order URL become `CERT=`, `CA=`, `ORDER=`) when systemd connected our stderr to
//! it, readable single-line text on stderr otherwise.
//!
//! The level comes from `RUST_LOG` when set (full filter syntax), else from the
//! configuration's `log_level` (which SIGHUP may change), else `info`.

use std::sync::OnceLock;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

static FILTER: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

/// Installs the global subscriber. Call once, first thing.
pub fn init() {
    let (filter, handle) = reload::Layer::new(filter_for(None));
    let journald = if stderr_is_journal() {
        match tracing_journald::layer() {
            Ok(layer) => Some(layer.with_syslog_identifier("renewd".to_string())),
            Err(e) => {
                eprintln!("renewd: cannot log to the journal ({e}); logging to stderr");
                None
            }
        }
    } else {
        None
    };
    let text = journald.is_none().then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .with_target(false)
            .compact()
    });
    tracing_subscriber::registry()
        .with(filter)
        .with(journald)
        .with(text)
        .init();
    let _ = FILTER.set(handle);
}

/// Applies the configuration's `log_level` (unless `RUST_LOG` is set, which wins).
pub fn set_level(level: Option<&str>) {
    if std::env::var_os("RUST_LOG").is_some() {
        return;
    }
    if let Some(handle) = FILTER.get() {
        let _ = handle.reload(filter_for(level));
    }
}

fn filter_for(level: Option<&str>) -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level.unwrap_or("info")))
}

/// systemd sets `JOURNAL_STREAM=DEV:INODE` for the stream it connected; it only applies when
/// our stderr is still that stream (not redirected by a wrapper).
fn stderr_is_journal() -> bool {
    let Ok(value) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = value.split_once(':') else {
        return false;
    };
    let Ok(st) = nix::sys::stat::fstat(std::io::stderr()) else {
        return false;
    };
    dev.parse::<u64>().ok() == Some(st.st_dev) && ino.parse::<u64>().ok() == Some(st.st_ino)
}

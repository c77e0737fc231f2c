//! Where logs go and how much of them: to the journal with structured fields when systemd
//! connected our stderr to it, readable single-line text on stderr otherwise.
//!
//! Journal fields are the event's field names upper-cased, without tracing-journald's
//! default `F_` prefix: `cert` → `CERT=`, `ca` → `CA=`, `order` → `ORDER=`, `error` →
//! `ERROR=`, so `journalctl CERT=www` finds a certificate's lines. Priorities follow syslog:
//! ERROR 3, WARN 4, INFO 6 (informational, not notice), DEBUG and TRACE 7. MESSAGE alone must
//! name the certificate and the reason (`journalctl -u renewd` shows nothing else): the
//! renewal lines are written by the functions below, which say so in one place.
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
            Ok(layer) => Some(journald(layer)),
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

/// renewd's settings of the journald layer: field names without prefix, INFO at
/// priority 6.
fn journald(layer: tracing_journald::Layer) -> tracing_journald::Layer {
    use tracing_journald::{Priority, PriorityMappings};
    layer
        .with_syslog_identifier("renewd".to_string())
        .with_field_prefix(None)
        .with_priority_mappings(PriorityMappings {
            error: Priority::Error,
            warn: Priority::Warning,
            info: Priority::Informational,
            debug: Priority::Debug,
            trace: Priority::Debug,
        })
}

/// Applies the configuration's `log_level` (unless `RUST_LOG` is set, which wins).
pub(crate) fn set_level(level: Option<&str>) {
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

// --- The renewal lines ------------------------------------------------------------------
//
// One function per outcome, so that each carries `CERT=` (and `CA=`, `ERROR=` where they
// apply) and a MESSAGE that alone names the certificate and the reason.

/// A certificate is due: `reason` is the schedule's (e.g. "renew_before reached").
pub(crate) fn renewal_due(cert: &str, reason: &dyn std::fmt::Display) {
    tracing::info!(cert = %cert, reason = %reason, "{cert}: renewal due: {reason}");
}

/// A renewal (or issuance) failed before anything was swapped.
pub(crate) fn renewal_failed(cert: &str, error: &str) {
    tracing::error!(cert = %cert, error = %error, "{cert}: renewal failed: {error}");
}

/// A new certificate is deployed, reloaded and proven. `not_after` as an HTTP date.
pub(crate) fn renewal_succeeded(cert: &str, ca: &str, serial: &str, not_after: &str) {
    tracing::info!(cert = %cert, ca = %ca, serial = %serial, not_after = %not_after,
        "{cert}: certificate renewed and deployed (serial {serial} from CA {ca}, valid until {not_after})");
}

/// A swapped certificate was rolled back; `error` says why and what was restored.
pub(crate) fn renewal_rolled_back(cert: &str, error: &str) {
    tracing::error!(cert = %cert, error = %error, "{cert}: renewal rolled back: {error}");
}

/// `--dry-run`: every authorization proven, the order left unfinalized: nothing issued or deployed.
pub(crate) fn dry_run_succeeded(cert: &str, ca: &str, order: &str) {
    tracing::info!(cert = %cert, ca = %ca, order = %order,
        "{cert}: dry run: every authorization proven at CA {ca}, order {order} not finalized: no certificate issued, nothing deployed");
}

/// `--dry-run` failed.
pub(crate) fn dry_run_failed(cert: &str, error: &str) {
    tracing::error!(cert = %cert, error = %error, "{cert}: dry run failed: {error}");
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};

    use tracing::field::{Field, Visit};
    use tracing_subscriber::layer::{Context, SubscriberExt};

    use super::*;

    /// One event: its level and fields.
    type Captured = (tracing::Level, BTreeMap<String, String>);

    /// Each event's fields, as the journald layer gets them (`message` becomes MESSAGE).
    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<Captured>>>);

    struct Fields<'a>(&'a mut BTreeMap<String, String>);

    impl Visit for Fields<'_> {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            self.0
                .insert(field.name().to_string(), format!("{value:?}"));
        }
        fn record_str(&mut self, field: &Field, value: &str) {
            self.0.insert(field.name().to_string(), value.to_string());
        }
    }

    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
        fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
            let mut fields = BTreeMap::new();
            event.record(&mut Fields(&mut fields));
            if let Ok(mut events) = self.0.lock() {
                events.push((*event.metadata().level(), fields));
            }
        }
    }

    fn capture(f: impl FnOnce()) -> Vec<Captured> {
        let capture = Capture::default();
        let subscriber = tracing_subscriber::registry().with(capture.clone());
        tracing::subscriber::with_default(subscriber, f);
        let events = capture.0.lock().expect("lock").clone();
        events
    }

    #[test]
    fn every_renewal_line_names_the_certificate_and_the_reason_in_its_message() {
        let reason = "CA pebble: urn:ietf:params:acme:error:connection: refused";
        type Case<'a> = (&'a str, &'a [&'a str], Box<dyn Fn()>);
        let cases: [Case; 6] = [
            (
                "due",
                &["www", "renew_before reached"],
                Box::new(|| renewal_due("www", &"renew_before reached")),
            ),
            (
                "failed",
                &["www", reason],
                Box::new(|| renewal_failed("www", reason)),
            ),
            (
                "rolled back",
                &["www", "proof failed: served serial 01"],
                Box::new(|| renewal_rolled_back("www", "proof failed: served serial 01")),
            ),
            (
                "renewed",
                &["www", "0a1b", "pebble", "Sat, 01 Jan 2028"],
                Box::new(|| {
                    renewal_succeeded("www", "pebble", "0a1b", "Sat, 01 Jan 2028 00:00:00 GMT")
                }),
            ),
            (
                "dry run",
                &[
                    "www",
                    "https://ca.test/order/1",
                    "pebble",
                    "no certificate issued",
                ],
                Box::new(|| dry_run_succeeded("www", "pebble", "https://ca.test/order/1")),
            ),
            (
                "dry run failed",
                &["www", reason],
                Box::new(|| dry_run_failed("www", reason)),
            ),
        ];
        for (what, words, log) in cases {
            let events = capture(log);
            assert_eq!(events.len(), 1, "{what}: one line");
            let (_, fields) = &events[0];
            let message = &fields["message"];
            for w in words {
                assert!(
                    message.contains(w),
                    "{what}: MESSAGE {message:?} lacks {w:?}"
                );
            }
            assert_eq!(
                fields.get("cert").map(String::as_str),
                Some("www"),
                "{what}: CERT="
            );
        }
        // The failures carry the reason as ERROR= too.
        let events = capture(|| renewal_failed("api", reason));
        assert_eq!(events[0].0, tracing::Level::ERROR);
        assert_eq!(events[0].1["error"], reason);
    }
}

//! The CA's renewal information (ARI, RFC 9773), decided: whether its advice applies to a
//! certificate, which moment of the suggested window renewd keeps, when it asks again, and
//! what the record keeps of an answer.
//!
//! Nothing here reads a clock, a file or the network: `renew::ari` asks the CA and stores
//! [`record`]'s result, `status` and the schedule read it back through [`advice`] and
//! [`poll_at`]. Every function takes *now* (and the random draw) as arguments.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::{deployed_ca, from_unix, unix};
use crate::config::CaConfig;

/// The shortest wait before asking the CA's ARI again, whatever its Retry-After says.
pub(crate) const ARI_POLL_MIN: Duration = Duration::from_secs(3600);
/// The longest wait before asking the CA's ARI again, whatever its Retry-After says; also
/// the wait after a CA that offers no renewalInfo (or is not to be asked).
pub(crate) const ARI_POLL_MAX: Duration = Duration::from_secs(24 * 3600);
/// The wait before asking again when the request failed or the answer was unusable.
pub(crate) const ARI_POLL_DEFAULT: Duration = Duration::from_secs(6 * 3600);

/// What the CA's ARI answer for the deployed certificate says, as the schedule needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AriAdvice {
    /// The moment chosen (once, uniformly at random) inside the suggested window.
    pub chosen: SystemTime,
}

/// What the CA's renewal information (RFC 9773) said about one certificate, and the moment
/// chosen in its window: kept in the certificate's record so the moment is stable across
/// restarts until the window changes.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub(crate) struct AriRecord {
    /// The certificate asked about (serial, lowercase hex).
    pub(crate) serial: String,
    /// The suggested window, Unix seconds; `None` when the answer was unusable or the request
    /// failed (then `error` says why and `renew_before` applies).
    pub(crate) window: Option<(u64, u64)>,
    /// The moment chosen inside the window, Unix seconds.
    pub(crate) chosen: Option<u64>,
    /// The start of the first window the CA gave for this certificate: a window that
    /// later starts earlier is a signal (an incident at the CA), not business as usual.
    pub(crate) first_start: Option<u64>,
    /// When to ask again (the CA's Retry-After, clamped), Unix seconds.
    pub(crate) next_poll: u64,
    pub(crate) explanation_url: Option<String>,
    pub(crate) error: Option<String>,
}

/// One ARI request's result, as [`record`] needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Answer {
    /// The CA suggested a window (RFC 9773 §4.2).
    Window {
        start: SystemTime,
        end: SystemTime,
        /// The CA's Retry-After for the next request about this certificate.
        retry_after: Duration,
        explanation_url: Option<String>,
    },
    /// The CA's directory has no renewalInfo resource.
    NotOffered,
    /// CA `ca` is configured with `ari = false`: it was not asked.
    Disabled { ca: String },
    /// The request failed or the answer was malformed; why.
    Failed(String),
}

/// Whether the CA's ARI applies to a certificate whose `ca` list is `ca` and whose deployed
/// certificate was issued by `issued_by`: the CA it is asked about ([`deployed_ca`]) must
/// not say `ari = false`. When it does not apply, recorded advice is ignored.
pub(crate) fn applies(
    ca: &[String],
    issued_by: Option<&str>,
    cas: &BTreeMap<String, CaConfig>,
) -> bool {
    deployed_ca(ca, issued_by)
        .and_then(|n| cas.get(n))
        .is_some_and(|c| c.ari)
}

/// How long to wait before the next ARI request, given the CA's Retry-After: clamped to
/// [`ARI_POLL_MIN`]..[`ARI_POLL_MAX`], [`ARI_POLL_DEFAULT`] when it said nothing usable.
pub(crate) fn ari_poll_delay(retry_after: Option<Duration>) -> Duration {
    retry_after.map_or(ARI_POLL_DEFAULT, |d| d.clamp(ARI_POLL_MIN, ARI_POLL_MAX))
}

/// A moment uniformly distributed in `[start, end]`, `r` in `[0, 1)`; `None` for a window
/// that ends before it starts (a malformed answer).
pub(crate) fn choose_in_window(start: SystemTime, end: SystemTime, r: f64) -> Option<SystemTime> {
    let width = end.duration_since(start).ok()?;
    Some(start + width.mul_f64(r.clamp(0.0, 1.0)))
}

/// The part of `rec` about the deployed certificate `serial`: an answer about another
/// certificate (the one replaced) says nothing about this one.
pub(crate) fn about<'a>(rec: Option<&'a AriRecord>, serial: &str) -> Option<&'a AriRecord> {
    rec.filter(|a| a.serial == serial)
}

/// The ARI advice for the deployed certificate `serial`, if the CA gave a usable one.
pub(crate) fn advice(rec: Option<&AriRecord>, serial: &str) -> Option<AriAdvice> {
    let ari = about(rec, serial)?;
    ari.window?;
    Some(AriAdvice {
        chosen: from_unix(ari.chosen?),
    })
}

/// When the CA's ARI must next be asked about the deployed certificate `serial`: now when
/// it never was (a new certificate), else when its last answer said.
pub(crate) fn poll_at(rec: Option<&AriRecord>, serial: &str, now: SystemTime) -> SystemTime {
    about(rec, serial).map_or(now, |a| from_unix(a.next_poll))
}

/// What the record keeps of `answer` about the deployed certificate `serial`, given at
/// `now`, the previous record `prev` (of any certificate) and `r` in `[0, 1)` (random in
/// production): the window; a moment chosen uniformly in it, kept while the window stays
/// the same (so restarts do not move it); the start of the first window given for this
/// certificate; and when to ask again ([`ari_poll_delay`]).
pub(crate) fn record(
    prev: Option<&AriRecord>,
    serial: &str,
    answer: Answer,
    now: SystemTime,
    r: f64,
) -> AriRecord {
    let prev = about(prev, serial);
    let without = |next: Duration, error: String| AriRecord {
        serial: serial.to_string(),
        first_start: prev.and_then(|p| p.first_start),
        next_poll: unix(now + next),
        error: Some(error),
        ..Default::default()
    };
    match answer {
        Answer::Window {
            start,
            end,
            retry_after,
            explanation_url,
        } => {
            let window = (unix(start), unix(end));
            let chosen = match prev {
                Some(p) if p.window == Some(window) && p.chosen.is_some() => p.chosen,
                _ => choose_in_window(start, end, r).map(unix),
            };
            let first_start = prev
                .and_then(|p| p.first_start.or(p.window.map(|w| w.0)))
                .unwrap_or(window.0);
            AriRecord {
                serial: serial.to_string(),
                window: Some(window),
                chosen,
                first_start: Some(first_start),
                next_poll: unix(now + ari_poll_delay(Some(retry_after))),
                explanation_url,
                error: None,
            }
        }
        Answer::NotOffered => without(ARI_POLL_MAX, "the CA offers no renewalInfo".into()),
        Answer::Disabled { ca } => without(
            ARI_POLL_MAX,
            format!("not asked: [ca.{ca}] sets ari = false"),
        ),
        Answer::Failed(why) => without(ari_poll_delay(None), why),
    }
}

/// Whether `new` says nothing `prev` did not: the same answer asked again before the
/// previous re-poll time (every `--once` pass asks). Then nothing is recorded, and no
/// state file is rewritten per certificate.
pub(crate) fn unchanged(prev: Option<&AriRecord>, new: &AriRecord, now: SystemTime) -> bool {
    about(prev, &new.serial).is_some_and(|p| {
        from_unix(p.next_poll) > now
            && AriRecord {
                next_poll: p.next_poll,
                ..new.clone()
            } == *p
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    fn window(start: u64, end: u64, retry_after: u64) -> Answer {
        Answer::Window {
            start: t(start),
            end: t(end),
            retry_after: Duration::from_secs(retry_after),
            explanation_url: None,
        }
    }

    #[test]
    fn ari_window_choice_and_poll_clamps() {
        assert_eq!(choose_in_window(t(100), t(200), 0.0), Some(t(100)));
        assert_eq!(choose_in_window(t(100), t(200), 0.5), Some(t(150)));
        assert_eq!(choose_in_window(t(200), t(100), 0.5), None);
        assert_eq!(ari_poll_delay(None), ARI_POLL_DEFAULT);
        assert_eq!(ari_poll_delay(Some(Duration::from_secs(5))), ARI_POLL_MIN);
        assert_eq!(
            ari_poll_delay(Some(Duration::from_secs(9 * 86400))),
            ARI_POLL_MAX
        );
        assert_eq!(
            ari_poll_delay(Some(Duration::from_secs(21600))),
            Duration::from_secs(21600)
        );
    }

    #[test]
    fn the_chosen_moment_stays_while_the_window_does() {
        let first = record(None, "01", window(100, 200, 5), t(0), 0.5);
        assert_eq!(first.chosen, Some(unix(t(150))));
        assert_eq!(first.first_start, Some(unix(t(100))));
        // Retry-After of 5 s is clamped to an hour.
        assert_eq!(first.next_poll, unix(t(3600)));
        assert_eq!(advice(Some(&first), "01").map(|a| a.chosen), Some(t(150)));
        assert_eq!(advice(Some(&first), "02"), None);

        let again = record(Some(&first), "01", window(100, 200, 5), t(10), 0.9);
        assert_eq!(again.chosen, first.chosen);
        assert!(unchanged(Some(&first), &again, t(10)));
        // After the re-poll time an identical answer is recorded again (a new next_poll).
        assert!(!unchanged(Some(&first), &again, t(3600)));

        // A new window gets a new moment; the first start is kept (an earlier start is an
        // incident at the CA).
        let moved = record(Some(&first), "01", window(50, 60, 5), t(20), 0.0);
        assert_eq!(moved.chosen, Some(unix(t(50))));
        assert_eq!(moved.first_start, Some(unix(t(100))));
        assert!(!unchanged(Some(&first), &moved, t(20)));

        // Another certificate starts afresh.
        let other = record(Some(&first), "02", window(50, 60, 5), t(20), 0.0);
        assert_eq!(other.first_start, Some(unix(t(50))));
    }

    #[test]
    fn no_usable_answer_keeps_the_first_start_and_says_why() {
        let first = record(None, "01", window(100, 200, 7200), t(0), 0.5);
        let failed = record(Some(&first), "01", Answer::Failed("boom".into()), t(0), 0.5);
        assert_eq!(failed.window, None);
        assert_eq!(failed.first_start, first.first_start);
        assert_eq!(failed.error.as_deref(), Some("boom"));
        assert_eq!(failed.next_poll, unix(t(0) + ARI_POLL_DEFAULT));
        assert_eq!(advice(Some(&failed), "01"), None);
        assert_eq!(poll_at(Some(&failed), "01", t(0)), t(0) + ARI_POLL_DEFAULT);
        assert_eq!(poll_at(Some(&failed), "02", t(5)), t(5));

        let none = record(None, "01", Answer::NotOffered, t(0), 0.5);
        assert_eq!(none.error.as_deref(), Some("the CA offers no renewalInfo"));
        assert_eq!(none.next_poll, unix(t(0) + ARI_POLL_MAX));
        let off = record(None, "01", Answer::Disabled { ca: "le".into() }, t(0), 0.5);
        assert_eq!(
            off.error.as_deref(),
            Some("not asked: [ca.le] sets ari = false")
        );
    }
}

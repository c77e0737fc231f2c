//! When to renew a certificate, and why: a pure decision over the deployed certificate's
//! state, the renewal policy, the failure history and the current time.
//!
//! Nothing here reads a clock or a file. The daemon, `--once` and `status` all call
//! [`decide`] with `now` as an argument, so every rule below is tested without sleeping.

use std::fmt;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::config::RenewBefore;

/// What the deployed files say, reduced to what the decision needs.
#[derive(Debug, Clone)]
pub enum Deployed {
    /// A usable certificate is in place.
    Valid {
        not_before: SystemTime,
        not_after: SystemTime,
        /// The configured names that the deployed certificate does not cover.
        missing_names: Vec<String>,
    },
    /// Nothing usable is in place: a file is missing, unreadable, invalid, or the key does not
    /// match. The string says which, for the log and `status`.
    Unusable(String),
}

/// Consecutive failures of the current renewal attempt series.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Failures {
    pub consecutive: u32,
    pub last_failure: Option<SystemTime>,
    /// The CA asked us not to come back before this moment (Retry-After, rate limits).
    pub retry_after: Option<SystemTime>,
}

/// Why a certificate is due at [`Decision::at`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "detail", rename_all = "kebab-case")]
pub enum Reason {
    /// The deployed set cannot be used; issue at once.
    Unusable(String),
    /// The deployed certificate lacks configured names.
    NamesChanged(Vec<String>),
    /// The `renew_before` threshold.
    Threshold,
    /// The moment chosen inside the CA's ARI suggested window (RFC 9773).
    AriWindow,
    /// An earlier attempt failed; this is the retry after backoff.
    Retry { failures: u32 },
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Unusable(why) => write!(f, "deployed set unusable: {why}"),
            Reason::NamesChanged(names) => write!(f, "names not covered: {}", names.join(", ")),
            Reason::Threshold => f.write_str("renew_before threshold"),
            Reason::AriWindow => f.write_str("ARI window"),
            Reason::Retry { failures } => write!(f, "retry after {failures} failure(s)"),
        }
    }
}

/// The next moment a certificate must be acted on, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub at: SystemTime,
    pub reason: Reason,
}

impl Decision {
    pub fn is_due(&self, now: SystemTime) -> bool {
        self.at <= now
    }
}

/// Longest pause between retries of a failing certificate, however many failures.
pub const MAX_BACKOFF: Duration = Duration::from_secs(6 * 3600);

/// Decides when `deployed` must next be renewed under `policy`.
///
/// `jitter` is a number in `[0, 1)` chosen by the caller (random in production, fixed in
/// tests); it spreads retries of many failing certificates so they do not hit the CA together.
pub fn decide(
    deployed: &Deployed,
    policy: &RenewBefore,
    failures: &Failures,
    now: SystemTime,
    jitter: f64,
) -> Decision {
    decide_with_ari(deployed, policy, None, failures, now, jitter)
}

/// What the CA's ARI answer for the deployed certificate says, as the schedule needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AriAdvice {
    /// The moment chosen (once, uniformly at random) inside the suggested window.
    pub chosen: SystemTime,
}

/// [`decide`], with the CA's ARI advice for the deployed certificate when the CA gave a
/// usable one. ARI replaces the `renew_before` threshold (never later than expiry); a
/// missing or malformed answer is `None`, and the threshold applies.
pub fn decide_with_ari(
    deployed: &Deployed,
    policy: &RenewBefore,
    ari: Option<&AriAdvice>,
    failures: &Failures,
    now: SystemTime,
    jitter: f64,
) -> Decision {
    let (wanted, reason, lifetime) = match deployed {
        Deployed::Unusable(why) => (now, Reason::Unusable(why.clone()), None),
        Deployed::Valid {
            missing_names,
            not_before,
            not_after,
        } if !missing_names.is_empty() => (
            now,
            Reason::NamesChanged(missing_names.clone()),
            Some(lifetime(*not_before, *not_after)),
        ),
        Deployed::Valid {
            not_before,
            not_after,
            ..
        } => match ari {
            Some(a) => (
                a.chosen.min(*not_after),
                Reason::AriWindow,
                Some(lifetime(*not_before, *not_after)),
            ),
            None => (
                threshold(*not_before, *not_after, policy),
                Reason::Threshold,
                Some(lifetime(*not_before, *not_after)),
            ),
        },
    };
    if failures.consecutive == 0 {
        return Decision { at: wanted, reason };
    }
    let last = failures.last_failure.unwrap_or(now);
    let mut at = last + backoff(failures.consecutive, lifetime, jitter);
    if let Some(ra) = failures.retry_after {
        at = at.max(ra);
    }
    // A failure never makes a renewal happen *earlier* than the policy wants it.
    let at = at.max(wanted);
    Decision {
        at,
        reason: if at == wanted {
            reason
        } else {
            Reason::Retry {
                failures: failures.consecutive,
            }
        },
    }
}

/// Consecutive failures after which the next CA of a certificate's `ca` list is tried.
pub const FAILURES_BEFORE_FALLBACK: u32 = 3;

/// Which of `n` configured CAs (in order) the next attempt uses after `consecutive`
/// failures: the first, then each next one after [`FAILURES_BEFORE_FALLBACK`] more failures,
/// staying on the last. A success resets the count, so the first is tried again at the next
/// renewal.
pub fn pick_ca(n: usize, consecutive: u32) -> usize {
    let step = (consecutive / FAILURES_BEFORE_FALLBACK) as usize;
    step.min(n.saturating_sub(1))
}

/// The shortest and longest wait before asking the CA's ARI again, whatever its
/// Retry-After says, and the wait when it says nothing usable (or the request failed).
pub const ARI_POLL_MIN: Duration = Duration::from_secs(3600);
pub const ARI_POLL_MAX: Duration = Duration::from_secs(24 * 3600);
pub const ARI_POLL_DEFAULT: Duration = Duration::from_secs(6 * 3600);

/// How long to wait before the next ARI request, given the CA's Retry-After.
pub fn ari_poll_delay(retry_after: Option<Duration>) -> Duration {
    retry_after.map_or(ARI_POLL_DEFAULT, |d| d.clamp(ARI_POLL_MIN, ARI_POLL_MAX))
}

/// A moment uniformly distributed in `[start, end]`, `r` in `[0, 1)`; `None` for a window
/// that ends before it starts (a malformed answer).
pub fn choose_in_window(start: SystemTime, end: SystemTime, r: f64) -> Option<SystemTime> {
    let width = end.duration_since(start).ok()?;
    Some(start + width.mul_f64(r.clamp(0.0, 1.0)))
}

/// When the `renew_before` policy says a certificate valid from `not_before` to `not_after`
/// is due.
pub fn threshold(
    not_before: SystemTime,
    not_after: SystemTime,
    policy: &RenewBefore,
) -> SystemTime {
    let margin = match policy {
        RenewBefore::Fraction(f) => lifetime(not_before, not_after).mul_f64(f.clamp(0.0, 1.0)),
        RenewBefore::Duration(d) => *d,
    };
    not_after
        .checked_sub(margin)
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

fn lifetime(not_before: SystemTime, not_after: SystemTime) -> Duration {
    not_after
        .duration_since(not_before)
        .unwrap_or(Duration::ZERO)
}

/// Exponential backoff after `n` consecutive failures: a base of one minute (less for
/// certificates that live less than two hours, so a 30-second certificate is retried within
/// its lifetime), doubled each time, capped at [`MAX_BACKOFF`], then spread by ±25% jitter.
pub fn backoff(n: u32, lifetime: Option<Duration>, jitter: f64) -> Duration {
    let base = match lifetime {
        Some(l) if l < Duration::from_secs(7200) => (l / 120).max(Duration::from_secs(1)),
        _ => Duration::from_secs(60),
    };
    let exp = n.saturating_sub(1).min(20);
    let raw = base.saturating_mul(1u32 << exp).min(MAX_BACKOFF);
    let factor = 0.75 + 0.5 * jitter.clamp(0.0, 1.0);
    raw.mul_f64(factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ari_replaces_the_threshold_and_never_passes_expiry() {
        let policy = RenewBefore::Fraction(1.0 / 3.0);
        let dep = valid(0, 90 * 86400);
        let early = AriAdvice {
            chosen: t(10 * 86400),
        };
        let d = decide_with_ari(&dep, &policy, Some(&early), &Failures::default(), t(0), 0.5);
        assert_eq!((d.at, d.reason.clone()), (t(10 * 86400), Reason::AriWindow));
        assert_eq!(d.reason.to_string(), "ARI window");
        let late = AriAdvice {
            chosen: t(100 * 86400),
        };
        let d = decide_with_ari(&dep, &policy, Some(&late), &Failures::default(), t(0), 0.5);
        assert_eq!(d.at, t(90 * 86400));
        let d = decide_with_ari(&dep, &policy, None, &Failures::default(), t(0), 0.5);
        assert_eq!((d.at, d.reason), (t(60 * 86400), Reason::Threshold));
        // An unusable deployment is due now whatever ARI says.
        let d = decide_with_ari(
            &Deployed::Unusable("gone".into()),
            &policy,
            Some(&late),
            &Failures::default(),
            t(5),
            0.5,
        );
        assert_eq!(d.at, t(5));
    }

    #[test]
    fn fallback_cas_take_over_after_three_failures_each() {
        assert_eq!(pick_ca(1, 0), 0);
        assert_eq!(pick_ca(1, 10), 0);
        assert_eq!(pick_ca(2, 2), 0);
        assert_eq!(pick_ca(2, 3), 1);
        assert_eq!(pick_ca(2, 30), 1);
        assert_eq!(pick_ca(3, 6), 2);
        assert_eq!(pick_ca(0, 6), 0);
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

    const DAY: Duration = Duration::from_secs(86400);

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    fn valid(nb: u64, na: u64) -> Deployed {
        Deployed::Valid {
            not_before: t(nb),
            not_after: t(na),
            missing_names: vec![],
        }
    }

    #[test]
    fn fraction_threshold_is_a_third_of_lifetime_before_expiry() {
        let d = decide(
            &valid(0, 90 * 86400),
            &RenewBefore::Fraction(1.0 / 3.0),
            &Failures::default(),
            t(10),
            0.5,
        );
        assert_eq!(d.reason, Reason::Threshold);
        assert_eq!(d.at, t(60 * 86400));
        assert!(!d.is_due(t(10)));
        assert!(d.is_due(t(60 * 86400)));
    }

    #[test]
    fn duration_threshold() {
        let d = decide(
            &valid(0, 90 * 86400),
            &RenewBefore::Duration(30 * DAY),
            &Failures::default(),
            t(0),
            0.0,
        );
        assert_eq!(d.at, t(60 * 86400));
    }

    #[test]
    fn duration_longer_than_lifetime_is_due_at_once() {
        let d = decide(
            &valid(0, 3600),
            &RenewBefore::Duration(30 * DAY),
            &Failures::default(),
            t(5),
            0.0,
        );
        assert!(d.is_due(t(5)));
    }

    #[test]
    fn thirty_second_certificate_renews_after_twenty_seconds() {
        let d = decide(
            &valid(0, 30),
            &RenewBefore::Fraction(1.0 / 3.0),
            &Failures::default(),
            t(1),
            0.0,
        );
        assert_eq!(d.at, t(20));
    }

    #[test]
    fn unusable_set_is_due_now() {
        let d = decide(
            &Deployed::Unusable("/x missing".into()),
            &RenewBefore::Fraction(0.3),
            &Failures::default(),
            t(7),
            0.0,
        );
        assert_eq!(d.at, t(7));
        assert!(matches!(d.reason, Reason::Unusable(_)));
    }

    #[test]
    fn names_changed_is_due_now() {
        let dep = Deployed::Valid {
            not_before: t(0),
            not_after: t(90 * 86400),
            missing_names: vec!["new.example".into()],
        };
        let d = decide(
            &dep,
            &RenewBefore::Fraction(0.3),
            &Failures::default(),
            t(100),
            0.0,
        );
        assert_eq!(d.at, t(100));
        assert_eq!(d.reason, Reason::NamesChanged(vec!["new.example".into()]));
    }

    #[test]
    fn failures_back_off_exponentially_and_never_exceed_the_cap() {
        let f = |n| Failures {
            consecutive: n,
            last_failure: Some(t(1000)),
            retry_after: None,
        };
        let dep = Deployed::Unusable("missing".into());
        let p = RenewBefore::Fraction(0.3);
        let d1 = decide(&dep, &p, &f(1), t(1000), 0.5);
        let d2 = decide(&dep, &p, &f(2), t(1000), 0.5);
        let d3 = decide(&dep, &p, &f(3), t(1000), 0.5);
        assert_eq!(d1.at, t(1060));
        assert_eq!(d2.at, t(1120));
        assert_eq!(d3.at, t(1240));
        assert_eq!(d3.reason, Reason::Retry { failures: 3 });
        let d50 = decide(&dep, &p, &f(50), t(1000), 0.999);
        assert!(d50.at <= t(1000) + MAX_BACKOFF.mul_f64(1.25));
    }

    #[test]
    fn jitter_spreads_between_three_quarters_and_five_quarters() {
        assert_eq!(backoff(1, None, 0.0), Duration::from_secs(45));
        assert_eq!(backoff(1, None, 1.0), Duration::from_secs(75));
    }

    #[test]
    fn short_lifetimes_get_short_backoff() {
        let b = backoff(1, Some(Duration::from_secs(30)), 0.5);
        assert_eq!(b, Duration::from_secs(1));
    }

    #[test]
    fn retry_after_from_the_ca_is_honoured() {
        let f = Failures {
            consecutive: 1,
            last_failure: Some(t(0)),
            retry_after: Some(t(5000)),
        };
        let d = decide(
            &Deployed::Unusable("x".into()),
            &RenewBefore::Fraction(0.3),
            &f,
            t(0),
            0.5,
        );
        assert_eq!(d.at, t(5000));
    }

    #[test]
    fn a_failure_never_brings_a_renewal_forward() {
        let f = Failures {
            consecutive: 1,
            last_failure: Some(t(0)),
            retry_after: None,
        };
        let d = decide(
            &valid(0, 90 * 86400),
            &RenewBefore::Fraction(1.0 / 3.0),
            &f,
            t(0),
            0.5,
        );
        assert_eq!(d.at, t(60 * 86400));
        assert_eq!(d.reason, Reason::Threshold);
    }
}

//! When to renew a certificate, and why: a pure decision over the deployed certificate's
//! state, the renewal policy, the failure history and the current time.
//!
//! Nothing here reads a clock or a file. The daemon, `--once` and `status` all call
//! [`decide_with_ari`] with `now` as an argument, so every rule below is tested without
//! sleeping. The CA's renewal information (ARI) is decided in [`ari`]; which CA of a
//! certificate's `ca` list an order uses, or the deployed certificate is asked about, here
//! ([`order_ca`], [`deployed_ca`]).

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::config::RenewBefore;

pub(crate) mod ari;

pub use ari::AriAdvice;
pub(crate) use ari::ARI_POLL_DEFAULT;

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

/// Consecutive failures of the current renewal attempt series, and when renewd last
/// deployed a certificate for this name (the start of the [`min_interval`] floor).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Failures {
    /// Failures in a row since the last success.
    pub consecutive: u32,
    /// When the last of them happened.
    pub last_failure: Option<SystemTime>,
    /// The CA asked us not to come back before this moment (Retry-After, rate limits).
    pub retry_after: Option<SystemTime>,
    /// When renewd last deployed a certificate for this name (the record's last success).
    pub last_renewed: Option<SystemTime>,
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
    /// The `renew_before` threshold, clamped to 2/3 of the lifetime the
    /// CA gave: the configured one would make a fresh certificate due at once.
    ThresholdClamped,
    /// The moment chosen inside the CA's ARI suggested window (RFC 9773), earlier than the
    /// `renew_before` point.
    AriWindow,
    /// The least time between two renewals of one certificate ([`min_interval`]) holds the
    /// renewal back: the threshold or the CA's window asked for it sooner.
    MinInterval,
    /// An earlier attempt failed; this is the retry after backoff.
    Retry { failures: u32 },
    /// The deployed certificate is revoked (OCSP, CRL or ARI said so): renewed at once, with
    /// a fresh key (RFC 5280 §3.3; a revoked certificate's key may be compromised).
    Revoked,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Unusable(why) => write!(f, "deployed set unusable: {why}"),
            Reason::NamesChanged(names) => write!(f, "names not covered: {}", names.join(", ")),
            Reason::Threshold => f.write_str("renew_before threshold"),
            Reason::ThresholdClamped => {
                f.write_str("renew_before threshold, clamped to 2/3 of the lifetime")
            }
            Reason::AriWindow => f.write_str("ARI window"),
            Reason::MinInterval => f.write_str("minimum interval since the last renewal"),
            Reason::Retry { failures } => write!(f, "retry after {failures} failure(s)"),
            Reason::Revoked => f.write_str("revoked"),
        }
    }
}

/// The next moment a certificate must be acted on, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// When (in the past when due now).
    pub at: SystemTime,
    /// Why.
    pub reason: Reason,
}

impl Decision {
    /// Whether the moment has come at `now`.
    pub fn is_due(&self, now: SystemTime) -> bool {
        self.at <= now
    }
}

/// Longest pause between retries of a failing certificate, however many failures.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(6 * 3600);

/// Decides when `deployed` must next be renewed under `policy`, with the CA's ARI advice
/// for the deployed certificate when the CA gave a usable one (a missing or malformed answer, or a CA with `ari = false`, is `None`).
///
/// A valid certificate is due at the earlier of the moment chosen in the CA's window and
/// the `renew_before` point ([`threshold`], clamped so that it never claims more than
/// 2/3 of the lifetime): ARI may bring a renewal forward, never leave
/// less margin than the user asked for. Either way it is never due before [`min_interval`]
/// has passed since renewd last deployed it, so a certificate
/// just deployed is never due again at once, whatever the configuration or the CA say.
/// An unusable set or missing names are due at once (failures aside: see [`backoff`]).
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
        } => {
            let life = lifetime(*not_before, *not_after);
            let (at, reason) = policy_point(*not_before, *not_after, policy, ari);
            // The floor counts from renewd's last deployment (notBefore is the CA's to
            // choose, and often backdated).
            match failures.last_renewed.map(|r| r + min_interval(life)) {
                Some(floor) if at < floor => (floor, Reason::MinInterval, Some(life)),
                _ => (at, reason, Some(life)),
            }
        }
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

/// The decision for a deployed certificate found revoked: due at once ([`Reason::Revoked`]),
/// or, after failed attempts, at the retry time [`backoff`] and the CA's Retry-After give —
/// never later than `usual`, the decision without the revocation. The [`min_interval`]
/// floor does not hold back a revoked certificate: it is unusable for its clients.
pub(crate) fn decide_revoked(
    usual: Decision,
    failures: &Failures,
    lifetime: Option<Duration>,
    now: SystemTime,
    jitter: f64,
) -> Decision {
    if failures.consecutive == 0 {
        return Decision {
            at: now,
            reason: Reason::Revoked,
        };
    }
    let last = failures.last_failure.unwrap_or(now);
    let mut at = last + backoff(failures.consecutive, lifetime, jitter);
    if let Some(ra) = failures.retry_after {
        at = at.max(ra);
    }
    if usual.at < at {
        return usual;
    }
    Decision {
        at,
        reason: Reason::Retry {
            failures: failures.consecutive,
        },
    }
}

/// The earlier of the ARI moment and the (clamped) `renew_before` point, and which decided.
fn policy_point(
    not_before: SystemTime,
    not_after: SystemTime,
    policy: &RenewBefore,
    ari: Option<&AriAdvice>,
) -> (SystemTime, Reason) {
    let by_policy = threshold(not_before, not_after, policy);
    let policy_reason = if clamped_margin(not_before, not_after, policy).is_some() {
        Reason::ThresholdClamped
    } else {
        Reason::Threshold
    };
    match ari {
        Some(a) if a.chosen < by_policy => (a.chosen, Reason::AriWindow),
        _ => (by_policy, policy_reason),
    }
}

/// The least time between two renewals of one certificate by schedule: an hour, or a third
/// of the certificate's lifetime when that is shorter (a 30-second test certificate).
pub(crate) const MIN_INTERVAL: Duration = Duration::from_secs(3600);

/// The floor between two scheduled renewals of a certificate that lives `lifetime`:
/// [`MIN_INTERVAL`], or a third of the lifetime when that is shorter.
pub(crate) fn min_interval(lifetime: Duration) -> Duration {
    MIN_INTERVAL.min(lifetime / 3)
}

/// When `policy` asks for more margin than 2/3 of the lifetime of a
/// certificate valid from `not_before` to `not_after`: the margin used instead. `None` when
/// the policy fits.
pub(crate) fn clamped_margin(
    not_before: SystemTime,
    not_after: SystemTime,
    policy: &RenewBefore,
) -> Option<Duration> {
    let life = lifetime(not_before, not_after);
    let max = max_margin(life);
    (policy_margin(life, policy) > max).then_some(max)
}

/// A sentence saying that `policy` is clamped for a certificate valid from `not_before` to
/// `not_after`, for the log, `status`, `check` and the `renew_before_too_long` alert; `None`
/// when it fits.
pub fn clamp_warning(
    not_before: SystemTime,
    not_after: SystemTime,
    policy: &RenewBefore,
) -> Option<String> {
    let used = clamped_margin(not_before, not_after, policy)?;
    let life = lifetime(not_before, not_after);
    Some(format!(
        "renew_before ({}) is longer than 2/3 of the certificate's lifetime ({}): renewing {} \
         before expiry instead",
        describe_policy(policy),
        human(life),
        human(used)
    ))
}

/// `"1/3"`-style or `"30d"`-style rendering of a policy, for messages.
fn describe_policy(policy: &RenewBefore) -> String {
    match policy {
        RenewBefore::Fraction(f) => format!("{f:.3} of the lifetime"),
        RenewBefore::Duration(d) => human(*d),
    }
}

/// A duration as `6d`, `36h`, `15m` or `20s`, rounded to the nearest whole unit (days from
/// two days up, hours from two hours, minutes from two minutes), for messages: a CA's
/// "90-day" certificate is often a second short of it.
pub(crate) fn human(d: Duration) -> String {
    let s = d.as_secs() + u64::from(d.subsec_nanos() >= 500_000_000);
    let round = |unit: u64| (s + unit / 2) / unit;
    if s >= 2 * 86_400 {
        format!("{}d", round(86_400))
    } else if s >= 2 * 3600 {
        format!("{}h", round(3600))
    } else if s >= 120 {
        format!("{}m", round(60))
    } else {
        format!("{s}s")
    }
}

/// 2/3 of `life`, exactly (no float rounding: `"20s"` for a 30-second
/// certificate fits).
fn max_margin(life: Duration) -> Duration {
    life * 2 / 3
}

fn policy_margin(life: Duration, policy: &RenewBefore) -> Duration {
    match policy {
        RenewBefore::Fraction(f) => life.mul_f64(f.clamp(0.0, 1.0)),
        RenewBefore::Duration(d) => *d,
    }
}

/// Consecutive failures after which the next CA of a certificate's `ca` list is tried.
pub(crate) const FAILURES_BEFORE_FALLBACK: u32 = 3;

/// Which of `n` configured CAs (in order) the next attempt uses after `consecutive`
/// failures: the first, then each next one after [`FAILURES_BEFORE_FALLBACK`] more failures,
/// staying on the last. A success resets the count, so the first is tried again at the next
/// renewal.
fn pick_ca(n: usize, consecutive: u32) -> usize {
    let step = (consecutive / FAILURES_BEFORE_FALLBACK) as usize;
    step.min(n.saturating_sub(1))
}

/// The CA of `ca` (a certificate's list, in order) the next order uses after `consecutive`
/// failures in a row ([`pick_ca`]); `None` when the list is empty.
pub(crate) fn order_ca(ca: &[String], consecutive: u32) -> Option<&str> {
    ca.get(pick_ca(ca.len(), consecutive)).map(String::as_str)
}

/// The CA a deployed certificate is asked about (ARI) and revoked at: the one that issued
/// it (`issued_by`) while it is still one of `ca`, else the first configured.
pub(crate) fn deployed_ca<'a>(ca: &'a [String], issued_by: Option<&str>) -> Option<&'a str> {
    ca.iter()
        .find(|n| Some(n.as_str()) == issued_by)
        .or_else(|| ca.first())
        .map(String::as_str)
}

/// Seconds since the Unix epoch, the form times take in state files and JSON output.
pub(crate) fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The latest time renewd reads from a file: 9999-12-31T23:59:59Z, in Unix seconds. Times
/// beyond it in a record are corruption (a record holding one is moved aside), and
/// [`from_unix`] clamps to it, so arithmetic on a time read from disk cannot overflow.
pub(crate) const MAX_UNIX: u64 = 253_402_300_799;

/// The instant `s` Unix seconds, clamped to [`MAX_UNIX`] (never panics).
pub(crate) fn from_unix(s: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(s.min(MAX_UNIX))
}

/// When the `renew_before` policy says a certificate valid from `not_before` to `not_after`
/// is due: `not_after` minus the policy's margin, the margin clamped to
/// 2/3 of the lifetime (see [`clamped_margin`]).
pub(crate) fn threshold(
    not_before: SystemTime,
    not_after: SystemTime,
    policy: &RenewBefore,
) -> SystemTime {
    let life = lifetime(not_before, not_after);
    let margin = policy_margin(life, policy).min(max_margin(life));
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
pub(crate) fn backoff(n: u32, lifetime: Option<Duration>, jitter: f64) -> Duration {
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

    /// Decides when `deployed` must next be renewed under `policy`.
    ///
    /// `jitter` is a number in `[0, 1)` chosen by the caller (random in production, fixed in
    /// tests); it spreads retries of many failing certificates so they do not hit the CA together.
    fn decide(
        deployed: &Deployed,
        policy: &RenewBefore,
        failures: &Failures,
        now: SystemTime,
        jitter: f64,
    ) -> Decision {
        decide_with_ari(deployed, policy, None, failures, now, jitter)
    }

    #[test]
    fn the_earlier_of_ari_and_the_threshold_decides_and_says_so() {
        let policy = RenewBefore::Fraction(1.0 / 3.0);
        let dep = valid(0, 90 * 86400);
        let early = AriAdvice {
            chosen: t(10 * 86400),
        };
        let d = decide_with_ari(&dep, &policy, Some(&early), &Failures::default(), t(0), 0.5);
        assert_eq!((d.at, d.reason.clone()), (t(10 * 86400), Reason::AriWindow));
        assert_eq!(d.reason.to_string(), "ARI window");
        // A window that runs to expiry (the moment chosen 50 minutes before it) never
        // leaves less margin than renew_before asked for.
        let late = AriAdvice {
            chosen: t(90 * 86400 - 3000),
        };
        let d = decide_with_ari(&dep, &policy, Some(&late), &Failures::default(), t(0), 0.5);
        assert_eq!((d.at, d.reason.clone()), (t(60 * 86400), Reason::Threshold));
        assert_eq!(d.reason.to_string(), "renew_before threshold");
        // The 2-day certificate of the issue: 16 hours before expiry, not 50 minutes.
        let two_days = valid(0, 2 * 86400);
        let d = decide_with_ari(
            &two_days,
            &policy,
            Some(&AriAdvice {
                chosen: t(2 * 86400 - 3000),
            }),
            &Failures::default(),
            t(0),
            0.5,
        );
        assert_eq!(d.at, t(2 * 86400 - 16 * 3600));
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
        let ca = ["a".to_string(), "b".to_string()];
        assert_eq!(order_ca(&ca, 2), Some("a"));
        assert_eq!(order_ca(&ca, 3), Some("b"));
        assert_eq!(order_ca(&[], 3), None);
    }

    #[test]
    fn the_deployed_certificate_is_asked_about_at_its_issuer_while_configured() {
        let ca = ["a".to_string(), "b".to_string()];
        assert_eq!(deployed_ca(&ca, Some("b")), Some("b"));
        assert_eq!(deployed_ca(&ca, Some("gone")), Some("a"));
        assert_eq!(deployed_ca(&ca, None), Some("a"));
        assert_eq!(deployed_ca(&[], Some("b")), None);
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
    fn a_threshold_longer_than_the_lifetime_is_clamped_never_due_at_once() {
        // 30 days before expiry for a one-hour certificate: clamped to 2/3 of it (40 min).
        let p = RenewBefore::Duration(30 * DAY);
        let d = decide(&valid(0, 3600), &p, &Failures::default(), t(5), 0.0);
        assert_eq!(
            (d.at, d.reason.clone()),
            (t(1200), Reason::ThresholdClamped)
        );
        assert!(!d.is_due(t(5)));
        assert_eq!(
            d.reason.to_string(),
            "renew_before threshold, clamped to 2/3 of the lifetime"
        );
        // 120 days for a 90-day certificate (a CA without ARI): renewed after 30 days.
        let p = RenewBefore::Duration(120 * DAY);
        let d = decide(&valid(0, 90 * 86400), &p, &Failures::default(), t(5), 0.0);
        assert_eq!(d.at, t(30 * 86400));
        assert_eq!(
            clamped_margin(t(0), t(90 * 86400), &p),
            Some(Duration::from_secs(60 * 86400))
        );
        let w =
            clamp_warning(t(0), t(6 * 86400), &RenewBefore::Duration(30 * DAY)).expect("warned");
        assert!(
            w.contains("renew_before (30d)") && w.contains("(6d)"),
            "{w}"
        );
        assert!(w.contains("renewing 4d before expiry"), "{w}");
        // What fits is left alone, 2/3 exactly included.
        assert_eq!(
            clamped_margin(t(0), t(30), &RenewBefore::Duration(Duration::from_secs(20))),
            None
        );
        assert_eq!(
            clamped_margin(t(0), t(90 * 86400), &RenewBefore::Duration(30 * DAY)),
            None
        );
        assert_eq!(
            clamp_warning(t(0), t(90 * 86400), &RenewBefore::Fraction(1.0 / 3.0)),
            None
        );
    }

    #[test]
    fn a_certificate_just_deployed_is_never_due_again_at_once() {
        // Whatever the CA's window says (here: long past), the floor holds: an hour after
        // renewd deployed it.
        let p = RenewBefore::Fraction(1.0 / 3.0);
        let past = AriAdvice { chosen: t(0) };
        let f = Failures {
            last_renewed: Some(t(100)),
            ..Failures::default()
        };
        let d = decide_with_ari(&valid(0, 90 * 86400), &p, Some(&past), &f, t(101), 0.0);
        assert_eq!((d.at, d.reason.clone()), (t(3700), Reason::MinInterval));
        // A third of the lifetime for short certificates.
        assert_eq!(
            min_interval(Duration::from_secs(30)),
            Duration::from_secs(10)
        );
        assert_eq!(min_interval(90 * DAY), MIN_INTERVAL);
        // A missing file is still re-issued at once.
        let d = decide_with_ari(
            &Deployed::Unusable("gone".into()),
            &p,
            Some(&past),
            &f,
            t(101),
            0.0,
        );
        assert_eq!(d.at, t(101));
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
    fn a_revoked_certificate_is_due_at_once_even_just_deployed_and_backs_off_on_failure() {
        let usual = Decision {
            at: t(60 * 86400),
            reason: Reason::MinInterval,
        };
        let none = Failures::default();
        let d = decide_revoked(usual.clone(), &none, None, t(100), 0.5);
        assert_eq!((d.at, d.reason), (t(100), Reason::Revoked));
        assert_eq!(Reason::Revoked.to_string(), "revoked");
        let failed = Failures {
            consecutive: 2,
            last_failure: Some(t(100)),
            ..Failures::default()
        };
        let d = decide_revoked(
            usual,
            &failed,
            Some(Duration::from_secs(90 * 86400)),
            t(101),
            0.5,
        );
        assert!(d.at > t(101), "{d:?}");
        assert_eq!(d.reason, Reason::Retry { failures: 2 });
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
            last_renewed: None,
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
            last_renewed: None,
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
            last_renewed: None,
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

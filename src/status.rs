//! What renewd knows about each managed certificate, in one place: the deployed files as
//! read now, the state record, and the schedule's decision. The daemon keeps these in memory;
//! `renewd status` without a daemon computes them from disk the same way.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::config::{CaConfig, CertConfig, Config, Diagnosis, FileKind};
use crate::deploy;
use crate::inventory::{self, Inventory};
use crate::schedule::{self, Decision, Deployed};
use crate::state::{self, CertRecord, StateDir};
use crate::text::rfc3339;
use crate::x509::CertInfo;

/// A managed certificate's deployed state and next action.
#[derive(Debug, Clone)]
pub struct Evaluation {
    pub(crate) deployed: Deployed,
    pub(crate) serial: Option<String>,
    /// SHA-256 of the deployed certificate's SubjectPublicKeyInfo ([`x509::spki_sha256`]).
    pub(crate) spki_sha256: Option<[u8; 32]>,
    pub(crate) decision: Decision,
    /// When the CA's ARI is next to be asked about the deployed certificate (none when
    /// nothing usable is deployed, or the CA is not to be asked: `ari = false`).
    pub(crate) ari_poll: Option<SystemTime>,
    /// The deployed certificate's not-after had passed when it was read.
    pub(crate) expired: bool,
    /// Why the certificate cannot be renewed as configured (from [`diagnose`]): no renewal
    /// of it starts, whatever `decision` says, until the configuration is read again.
    pub(crate) not_renewable: Option<String>,
    /// Whether the CA's ARI applies to the certificate (see [`schedule::ari::applies`]); when it does
    /// not, recorded advice is ignored.
    pub(crate) ari_enabled: bool,
    /// Why the configured `renew_before` is not used as written for the deployed certificate
    /// (see [`schedule::clamp_warning`]), for the log, `status` and alerts.
    pub(crate) clamp_warning: Option<String>,
    /// The deployed leaf as the inventory shows it (none when nothing usable is deployed),
    /// so the daemon's inventory reads no certificate file between evaluations.
    pub(crate) leaf: Option<Box<inventory::Leaf>>,
    /// What the inventory and alerts need of the state record, as read for this evaluation.
    pub(crate) record: RecordFacts,
}

/// The part of a certificate's state record the inventory shows, taken when its evaluation
/// is made: every write of a record is followed by a new evaluation (after a batch, an ARI
/// poll, a revocation found), so the daemon's inventory never reads the record itself.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct RecordFacts {
    pub(crate) consecutive_failures: u32,
    /// The last attempt's message, when it failed.
    pub(crate) last_failure: Option<String>,
    /// Unix seconds of the last successful renewal the history still holds.
    pub(crate) last_success: Option<u64>,
    /// The CA's last ARI answer about the deployed certificate, when ARI applies to it.
    pub(crate) ari: Option<Box<schedule::ari::AriRecord>>,
}

impl RecordFacts {
    /// `rec`'s facts for the deployed certificate `serial`; `ari_enabled` as in
    /// [`Evaluation::ari_enabled`].
    fn of(rec: &CertRecord, serial: Option<&str>, ari_enabled: bool) -> RecordFacts {
        RecordFacts {
            consecutive_failures: rec.consecutive_failures,
            last_failure: rec.last().filter(|a| !a.ok).map(|a| a.message.clone()),
            last_success: rec.history.iter().rev().find(|a| a.ok).map(|a| a.at),
            ari: serial
                .filter(|_| ari_enabled)
                .and_then(|s| schedule::ari::about(rec.ari.as_ref(), s))
                .map(|a| Box::new(a.clone())),
        }
    }
}

impl Evaluation {
    /// Whether a renewal should start now: due, and renewable as configured.
    pub(crate) fn should_renew(&self, now: SystemTime) -> bool {
        self.not_renewable.is_none() && self.decision.is_due(now)
    }
}

/// `check`'s look at the machine, as `run` and SIGHUP use it too: the configuration's own
/// checks ([`Config::check_environment`]) and the target directories'
/// ([`deploy::check_directories`]), sorted into errors and warnings by
/// [`Config::diagnose`]. Changes nothing.
pub(crate) fn diagnose(config: &Config) -> Diagnosis {
    diagnose_with(config, Vec::new())
}

/// [`diagnose`] with `extra` problems found elsewhere (`check` asks the CAs about profiles).
pub fn diagnose_with(config: &Config, extra: Vec<crate::config::Problem>) -> Diagnosis {
    let mut found = config.check_environment();
    // A CA that cannot be reached safely (no trust root at all) is an error of the whole
    // configuration, for check, run and SIGHUP alike.
    found.extend(crate::outbound::trust_root_problems(config));
    found.extend(deploy::check_directories(config));
    // A webroot others control stops its certificate (the answer would be refused).
    found.extend(crate::challenge::check_webroots(config));
    found.extend(extra);
    config.diagnose(found)
}

/// Logs what [`diagnose`] found (the daemon at start and on SIGHUP, `run --once`): each
/// warning as `FILE:LINE:COL: warning: message`, then one line per certificate that cannot
/// be renewed, with `CERT=` and `ERROR=`.
pub(crate) fn log_diagnosis(diagnosis: &Diagnosis) {
    for p in diagnosis.warnings() {
        tracing::warn!("{p}");
    }
    for (name, why) in &diagnosis.not_renewable {
        tracing::warn!(cert = %name, error = %why,
            "{name}: not renewable as configured, other certificates are renewed: {why}");
    }
}

/// Reads `cert`'s files and decides when it is next due; `cas` says whether ARI advice in
/// `rec` may be used.
pub fn evaluate(
    cert: &CertConfig,
    rec: &CertRecord,
    cas: &BTreeMap<String, CaConfig>,
    now: SystemTime,
) -> Evaluation {
    evaluate_inspected(cert, rec, cas, now, inspect_deployed(cert, rec).as_ref())
}

/// `cert`'s deployed files as [`deploy::inspect_known`] reads them, given the digest `rec`
/// holds of the set renewd last deployed (so that set is not checked again). Errors: why
/// the deployed set cannot be used.
pub(crate) fn inspect_deployed(
    cert: &CertConfig,
    rec: &CertRecord,
) -> Result<CertInfo, deploy::DeployedProblem> {
    let digest = rec.deployed_digest();
    deploy::inspect_known(&cert.files, digest.as_ref()).map(|(leaf, _)| leaf)
}

/// [`evaluate`] with `cert`'s files already read by [`deploy::inspect`].
pub(crate) fn evaluate_inspected(
    cert: &CertConfig,
    rec: &CertRecord,
    cas: &BTreeMap<String, CaConfig>,
    now: SystemTime,
    inspected: Result<&CertInfo, &deploy::DeployedProblem>,
) -> Evaluation {
    let (deployed, serial) = match inspected {
        Ok(info) => (
            Deployed::Valid {
                not_before: info.not_before,
                not_after: info.not_after,
                missing_names: info.missing_names(&cert.domains),
            },
            Some(info.serial_hex.clone()),
        ),
        Err(problem) => (Deployed::Unusable(problem.to_string()), None),
    };
    let expired = matches!(deployed, Deployed::Valid { not_after, .. } if not_after <= now);
    let ari_enabled = schedule::ari::applies(&cert.ca, rec.issued_by.as_deref(), cas);
    // Advice recorded before `ari = false` was set no longer counts.
    let ari = serial
        .as_deref()
        .filter(|_| ari_enabled)
        .and_then(|s| schedule::ari::advice(rec.ari.as_ref(), s));
    let clamp_warning = match &deployed {
        Deployed::Valid {
            not_before,
            not_after,
            ..
        } => schedule::clamp_warning(*not_before, *not_after, &cert.renew_before),
        Deployed::Unusable(_) => None,
    };
    // A CA that is not to be asked (`ari = false`) is never polled: nothing to record.
    let ari_poll = serial
        .as_deref()
        .filter(|_| ari_enabled)
        .map(|s| schedule::ari::poll_at(rec.ari.as_ref(), s, now));
    let decision = schedule::decide_with_ari(
        &deployed,
        &cert.renew_before,
        ari.as_ref(),
        &rec.failures(),
        now,
        stable_jitter(&cert.name, rec.consecutive_failures),
    );
    // Found revoked (OCSP, CRL or ARI): renewed at once, whatever the schedule said.
    let decision = match (&deployed, &rec.revoked, serial.as_deref()) {
        (
            Deployed::Valid {
                not_before,
                not_after,
                ..
            },
            Some(r),
            Some(s),
        ) if r.serial == s => schedule::decide_revoked(
            decision,
            &rec.failures(),
            not_after.duration_since(*not_before).ok(),
            now,
            stable_jitter(&cert.name, rec.consecutive_failures),
        ),
        _ => decision,
    };
    let record = RecordFacts::of(rec, serial.as_deref(), ari_enabled);
    Evaluation {
        deployed,
        serial,
        spki_sha256: inspected
            .ok()
            .map(|info| crate::x509::spki_sha256(&info.spki_der)),
        decision,
        ari_poll,
        expired,
        not_renewable: None,
        leaf: inspected
            .ok()
            .map(|info| Box::new(inventory::Leaf::of(info))),
        record,
        ari_enabled,
        clamp_warning,
    }
}

/// A jitter in `[0, 1)` that is stable for one certificate and failure count, so `status`
/// shows the same retry time the daemon will use, while different certificates spread out.
fn stable_jitter(name: &str, failures: u32) -> f64 {
    // FNV-1a: tiny, stable across releases (unlike std's hasher).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes().chain(failures.to_le_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// One row of `renewd status`; also the JSON output's element (stable field names).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StatusRow {
    pub name: String,
    pub domains: Vec<String>,
    pub owner: Option<String>,
    pub service: Option<String>,
    /// Unix seconds; absent when nothing usable is deployed.
    pub not_after: Option<u64>,
    /// The deployed certificate has expired (`not_after` is past).
    #[serde(default)]
    pub expired: bool,
    pub serial: Option<String>,
    /// SHA-256 of the deployed certificate's SubjectPublicKeyInfo, base64 (RFC 4648 §4):
    /// HPKP's `pin-sha256` (RFC 7469 §2.4). Absent when nothing usable is deployed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spki_sha256: Option<String>,
    /// The same digest in lowercase hex: the data of a DANE TLSA "3 1 1" record (RFC 6698
    /// §2.1: SPKI, SHA-256).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spki_sha256_hex: Option<String>,
    /// Why the deployed set cannot be used, if it cannot.
    pub problem: Option<String>,
    /// Unix seconds of the next renewal (in the past when due now).
    pub next_renewal: u64,
    pub next_renewal_reason: String,
    /// True while a renewal of this certificate is under way (daemon only).
    pub renewing: bool,
    pub issued_by: Option<String>,
    pub consecutive_failures: u32,
    pub last_attempt: Option<u64>,
    pub last_result: Option<String>,
    pub last_ok: Option<bool>,
    /// What the CA's ARI said about the deployed certificate, when it was asked.
    #[serde(default)]
    pub ari: Option<String>,
    /// Why renewd cannot renew this certificate as configured (`FILE:LINE:COL: message`,
    /// as `renewd check` prints it); absent when it can.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_renewable: Option<String>,
    /// Things a person should fix: a `renew_before` clamped to the lifetime, a state
    /// directory that cannot be written.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// `cert`'s row of `renewd status`, from its record `rec` and its evaluation `ev`;
/// `renewing` while a renewal of it is under way (daemon only).
pub fn row(cert: &CertConfig, rec: &CertRecord, ev: &Evaluation, renewing: bool) -> StatusRow {
    let (not_after, problem) = match &ev.deployed {
        Deployed::Valid { not_after, .. } => (Some(state::unix(*not_after)), None),
        Deployed::Unusable(why) => (None, Some(why.clone())),
    };
    let last = rec.last();
    StatusRow {
        name: cert.name.clone(),
        domains: cert.domains.clone(),
        owner: cert.owner.clone(),
        service: cert.service.clone(),
        not_after,
        expired: ev.expired,
        serial: ev.serial.clone(),
        spki_sha256: ev.spki_sha256.map(|d| data_encoding::BASE64.encode(&d)),
        spki_sha256_hex: ev.spki_sha256.map(|d| data_encoding::HEXLOWER.encode(&d)),
        problem,
        next_renewal: state::unix(ev.decision.at),
        next_renewal_reason: ev.decision.reason.to_string(),
        renewing,
        issued_by: rec.issued_by.clone(),
        consecutive_failures: rec.consecutive_failures,
        last_attempt: last.map(|a| a.at),
        last_result: last.map(|a| a.message.clone()),
        last_ok: last.map(|a| a.ok),
        ari: match ev.ari_enabled {
            true => ari_summary(rec, ev.serial.as_deref()),
            false => Some("not asked: the CA is configured with ari = false".into()),
        },
        not_renewable: ev.not_renewable.clone(),
        warnings: ev.clamp_warning.iter().cloned().collect(),
    }
}

/// What the inventory needs to know about a managed certificate.
pub(crate) fn managed(cert: &CertConfig, ev: &Evaluation) -> inventory::Managed {
    let (renew_at, problem) = match &ev.deployed {
        Deployed::Valid {
            not_before,
            not_after,
            ..
        } => (
            Some(schedule::threshold(
                *not_before,
                *not_after,
                &cert.renew_before,
            )),
            None,
        ),
        Deployed::Unusable(why) => (None, Some(why.clone())),
    };
    let problem = match (&ev.not_renewable, problem) {
        (Some(why), Some(p)) => Some(format!("{p}; not renewable: {why}")),
        (Some(why), None) => Some(format!("not renewable: {why}")),
        (None, p) => p,
    };
    let ari = ev.record.ari.as_deref();
    inventory::Managed {
        name: cert.name.clone(),
        paths: cert.files.iter().map(|(_, p)| p.to_path_buf()).collect(),
        cert_path: [FileKind::Cert, FileKind::Fullchain, FileKind::Combined]
            .into_iter()
            .find_map(|k| cert.files.get(k).map(|p| p.to_path_buf())),
        owner: cert.owner.clone(),
        service: cert.service.clone(),
        next_renewal: ev.decision.at,
        next_renewal_reason: ev.decision.reason.to_string(),
        renew_at,
        ari_window_start: ari.and_then(|a| a.window).map(|(s, _)| state::from_unix(s)),
        ari_window_end: ari.and_then(|a| a.window).map(|(_, e)| state::from_unix(e)),
        ari_first_start: ari.and_then(|a| a.first_start).map(state::from_unix),
        ari_explanation: ari.and_then(|a| a.explanation_url.clone()),
        renew_before_warning: ev.clamp_warning.clone(),
        alert_before: cert.alert_before,
        problem,
        consecutive_failures: ev.record.consecutive_failures,
        last_failure: ev.record.last_failure.clone(),
        last_success: ev.record.last_success.map(state::from_unix),
        leaf: ev.leaf.clone(),
        persist_until: cert
            .challenge
            .rules
            .iter()
            .filter_map(|r| match &r.config {
                crate::config::ChallengeConfig::DnsPersist01(p) => p.persist_until,
                _ => None,
            })
            .min()
            .map(|t| t.max(0) as u64),
    }
}

/// `renewd inventory`, from files alone: the configuration, the deployed files, the state
/// directory's records and alert state, and a discovery scan. No daemon is needed.
pub fn inventory_offline(config: &Config, now: SystemTime) -> Inventory {
    let state = StateDir::open_existing(&config.state_dir);
    let diagnosis = diagnose(config);
    let managed: Vec<inventory::Managed> = config
        .certificates
        .iter()
        .map(|c| {
            let rec = state.load_cert(&c.name);
            let mut ev = evaluate(c, &rec, &config.cas, now);
            ev.not_renewable = diagnosis.not_renewable.get(&c.name).cloned();
            managed(c, &ev)
        })
        .collect();
    let scan = inventory::discover(config);
    let mut inv = inventory::collect(config, &managed, &scan, now);
    if config.alert.is_some() {
        let alerts = inventory::alerts::AlertState::load(&config.state_dir);
        for item in &mut inv.certificates {
            item.alerts = alerts.firing_for(item);
        }
    }
    inv
}

/// One line about the CA's last ARI answer for the deployed certificate `serial`.
fn ari_summary(rec: &CertRecord, serial: Option<&str>) -> Option<String> {
    let ari = schedule::ari::about(rec.ari.as_ref(), serial?)?;
    let next = rfc3339(state::from_unix(ari.next_poll));
    let mut s = match (ari.window, &ari.error) {
        (Some((start, end)), _) => format!(
            "window {} .. {}, next check {next}",
            rfc3339(state::from_unix(start)),
            rfc3339(state::from_unix(end))
        ),
        (None, Some(e)) => format!("not used ({e}), next check {next}"),
        (None, None) => format!("not used, next check {next}"),
    };
    if let Some(url) = &ari.explanation_url {
        s.push_str(&format!(", explanation: {url}"));
    }
    Some(s)
}

/// The human table of `renewd status`.
pub fn render(rows: &[StatusRow], now: SystemTime) -> String {
    let mut out = String::new();
    for r in rows {
        let expiry = match (r.not_after, &r.problem) {
            (Some(na), _) if r.expired || state::from_unix(na) <= now => {
                format!("{} (EXPIRED)", rfc3339(state::from_unix(na)))
            }
            (Some(na), _) => rfc3339(state::from_unix(na)),
            (None, Some(p)) => format!("NOT DEPLOYED ({p})"),
            (None, None) => "-".into(),
        };
        let next = if let Some(why) = &r.not_renewable {
            format!("NOT RENEWABLE as configured ({why})")
        } else if r.renewing {
            "renewing now".to_string()
        } else if state::from_unix(r.next_renewal) <= now {
            format!("due now ({})", r.next_renewal_reason)
        } else {
            format!(
                "{} ({})",
                rfc3339(state::from_unix(r.next_renewal)),
                r.next_renewal_reason
            )
        };
        let last = match (&r.last_ok, &r.last_result, r.last_attempt) {
            (Some(ok), Some(msg), Some(at)) => format!(
                "{} at {}: {}",
                if *ok { "ok" } else { "FAILED" },
                rfc3339(state::from_unix(at)),
                msg
            ),
            _ => "never attempted".into(),
        };
        // Problems, CA messages and names come from outside: no value may carry a control
        // character (or a line of its own) to the terminal.
        let e = |s: &str| crate::text::escape(s).into_owned();
        let ari = r
            .ari
            .as_deref()
            .map(|a| format!("  ari:        {}\n", e(a)))
            .unwrap_or_default();
        let warnings: String = r
            .warnings
            .iter()
            .map(|w| format!("  warning:    {w}\n"))
            .collect();
        let pin = match (&r.spki_sha256, &r.spki_sha256_hex) {
            (Some(b64), Some(hex)) => {
                format!("  spki pin:   sha256/{} (TLSA 3 1 1 {})\n", e(b64), e(hex))
            }
            _ => String::new(),
        };
        let issuer = r
            .issued_by
            .as_deref()
            .map(|ca| format!("  issued by:  CA {}\n", e(ca)))
            .unwrap_or_default();
        let serial = r
            .serial
            .as_deref()
            .map(|s| format!("  serial:     {}\n", e(s)))
            .unwrap_or_default();
        out.push_str(&format!(
            "{}\n  domains:    {}\n  owner:      {}{}\n  not after:  {}\n{serial}{issuer}{pin}  next:       {}\n{ari}  last:       {}\n{warnings}",
            e(&r.name),
            e(&r.domains.join(", ")),
            e(r.owner.as_deref().unwrap_or("(none)")),
            r.service
                .as_deref()
                .map(|s| format!("  service: {}", e(s)))
                .unwrap_or_default(),
            e(&expiry),
            e(&next),
            e(&last)
        ));
    }
    if rows.is_empty() {
        out.push_str("no certificates configured\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CA's problem detail and a file name with terminal escapes and newlines (a failed
    /// renewal's message, an unusable file's problem) are shown escaped, one line each.
    #[test]
    fn the_table_escapes_control_characters() {
        let row = StatusRow {
            name: "www".into(),
            domains: vec!["www.test".into()],
            owner: None,
            service: None,
            not_after: None,
            serial: None,
            spki_sha256: None,
            spki_sha256_hex: None,
            expired: false,
            not_renewable: None,
            warnings: Vec::new(),
            problem: Some("/etc/tls/\x1b[2Jwww.pem does not exist".into()),
            next_renewal: 0,
            next_renewal_reason: "missing".into(),
            renewing: false,
            issued_by: Some("ca\x07".into()),
            consecutive_failures: 1,
            last_attempt: Some(0),
            last_result: Some("the CA said: bad\nwww\n  last:       ok".into()),
            last_ok: Some(false),
            ari: Some("\u{202e}window".into()),
        };
        let out = render(&[row], SystemTime::UNIX_EPOCH);
        assert!(
            !out.chars()
                .any(|c| (c.is_control() && c != '\n') || c == '\u{202e}'),
            "{out:?}"
        );
        assert_eq!(out.lines().count(), 8, "{out}");
        assert!(out.contains("\\x1b[2Jwww.pem"), "{out}");
        assert!(out.contains("bad\\nwww\\n  last:"), "{out}");
    }

    #[test]
    fn jitter_is_stable_and_in_range() {
        let a = stable_jitter("www", 1);
        assert_eq!(a, stable_jitter("www", 1));
        assert_ne!(a, stable_jitter("api", 1));
        for i in 0..1000 {
            let j = stable_jitter(&format!("c{i}"), i);
            assert!((0.0..1.0).contains(&j));
        }
    }
}

//! The trust-store audit: every anchor of the system's trust store and of the CA files
//! services verify their peers with (`[trust] paths`, mTLS), with what is wrong with it —
//! `expired`, `expiring`, `weak` (RSA under 2048 bits, an MD2/MD4/MD5 or SHA-1 signature),
//! `duplicate` (the same certificate, or the same subject and key, twice in one path) and,
//! for `[trust] paths` only, `stale` (no certificate the inventory knows chains to it).
//! An `[[exception]]` naming the anchor acknowledges it until its review date.
//!
//! This module reads files and calls `x509` and `fsutil`; what the inventory knows comes
//! in as parsed certificates ([`Audit::chains`]), so `inventory` calls it, never the reverse.

pub(crate) mod read;
pub(crate) mod safety;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::config::{AnchorException, Config, ExceptionConfig};
pub(crate) use read::{Anchor, Cache};

/// The version of the `renewd trust-audit --json` document.
pub(crate) const SCHEMA_VERSION: u32 = 1;

/// The system trust stores, audited when they exist: Debian's bundle and directory, then
/// RHEL's (`update-ca-trust`) bundle and anchors directory.
pub(crate) const SYSTEM_PATHS: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/ssl/certs",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/pki/ca-trust/source/anchors",
];

/// RSA keys shorter than this are `weak` (NIST SP 800-57 Part 1 Rev. 5, §5.6.1.1).
pub(crate) const MIN_RSA_BITS: u32 = 2048;

/// What is wrong with an anchor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Flag {
    /// Its notAfter has passed.
    Expired,
    /// Its notAfter is within `[trust] expiring_within`.
    Expiring,
    /// An RSA key under [`MIN_RSA_BITS`], or a signature made with MD2, MD4, MD5 or SHA-1.
    Weak,
    /// The same certificate more than once in the same path (merged into one anchor whose
    /// `copies` says how many), or the same subject and key as an earlier anchor of it.
    Duplicate,
    /// In a `[trust] paths` store, and no certificate of the inventory chains to it.
    Stale,
}

impl Flag {
    /// The name in JSON, metric labels and alerts.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Flag::Expired => "expired",
            Flag::Expiring => "expiring",
            Flag::Weak => "weak",
            Flag::Duplicate => "duplicate",
            Flag::Stale => "stale",
        }
    }
}

/// The person who keeps a flagged anchor on purpose (an `[[exception]]`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Acknowledged {
    pub(crate) owner: String,
    pub(crate) reason: String,
    /// `YYYY-MM-DD`.
    pub(crate) review_by: String,
    /// The review date has passed: the anchor is flagged again.
    pub(crate) overdue: bool,
}

/// One anchor as audited; the element of `renewd trust-audit --json`'s `anchors`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct AuditedAnchor {
    /// The audited path (bundle or directory) it was found under.
    pub(crate) path: PathBuf,
    /// The file holding it (the path itself for a bundle) and its PEM block number.
    pub(crate) file: PathBuf,
    pub(crate) block: usize,
    /// How many times this certificate is in the path (1, or more when `duplicate`).
    pub(crate) copies: usize,
    /// The subject and issuer as RFC 4514 strings, at most [`read::MAX_NAME`] bytes each.
    pub(crate) subject: String,
    pub(crate) issuer: String,
    /// `sha256:` and 64 lowercase hex digits.
    pub(crate) fingerprint: String,
    /// Unix seconds.
    pub(crate) not_before: i64,
    pub(crate) not_after: i64,
    /// Whole days until notAfter, rounded down; negative once expired.
    pub(crate) days_left: i64,
    /// `rsa-2048`, `ecdsa-p256`, `ed25519`, ...
    pub(crate) key: String,
    pub(crate) signature_algorithm: String,
    pub(crate) flags: Vec<Flag>,
    /// Why each flag is set, in the order of `flags`.
    pub(crate) reasons: Vec<String>,
    /// Whether it counts as flagged: it has flags, and no exception acknowledges it (or
    /// the exception's review date has passed).
    pub(crate) flagged: bool,
    pub(crate) acknowledged: Option<Acknowledged>,
    /// Whether the path is one of `[trust] paths` (the only anchors checked for `stale`).
    pub(crate) mtls: bool,
}

/// One audited path.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct SourceReport {
    pub(crate) path: PathBuf,
    /// `bundle`, `directory`, `missing`, or `untrusted` (a user other than root and
    /// renewd's can change it: not read, see [`safety::untrusted`]).
    pub(crate) kind: &'static str,
    pub(crate) mtls: bool,
    pub(crate) anchors: usize,
}

/// The whole audit: `renewd trust-audit --json` prints this.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Report {
    pub(crate) version: u32,
    /// Unix seconds.
    pub(crate) generated_at: u64,
    /// `[trust] expiring_within`, seconds.
    pub(crate) expiring_within: u64,
    pub(crate) sources: Vec<SourceReport>,
    pub(crate) anchors: Vec<AuditedAnchor>,
    /// What could not be read: a path, or a bad block as `PATH: block N (line L): why`.
    pub(crate) errors: Vec<String>,
    /// How many anchors are flagged (acknowledged ones not counted).
    pub(crate) flagged: usize,
}

/// What to audit and against what.
pub(crate) struct Audit<'a> {
    /// Each path to read, and whether it is one of `[trust] paths`.
    pub(crate) paths: Vec<(PathBuf, bool)>,
    pub(crate) expiring_within: Duration,
    pub(crate) anchor_exceptions: &'a [AnchorException],
    /// Certificate exceptions: one whose `path` is an anchor's file acknowledges it.
    pub(crate) exceptions: &'a [ExceptionConfig],
    /// Every certificate of the inventory's files (leaves and the chains beside them).
    pub(crate) chains: Vec<Arc<Anchor>>,
}

impl<'a> Audit<'a> {
    /// The paths of `config` to audit: `explicit` if any were named (each marked mTLS when
    /// it is in `[trust] paths`), else `[trust] paths` and the system stores that exist
    /// (without a `[trust]` table, or with `system = true`).
    pub(crate) fn new(config: &'a Config, explicit: &[PathBuf]) -> Audit<'a> {
        let trust_paths: Vec<PathBuf> = config
            .trust
            .as_ref()
            .map(|t| t.paths.clone())
            .unwrap_or_default();
        let mut paths: Vec<(PathBuf, bool)> = Vec::new();
        // Without `[trust]` the system stores are all there is to audit; with it, they are
        // audited only when asked (`system = true`): stock Debian's bundle holds dozens of
        // roots with SHA-1 self-signatures, which would be as many alerts in the daemon.
        let system = config.trust.as_ref().is_none_or(|t| t.system);
        if explicit.is_empty() {
            for p in SYSTEM_PATHS.iter().filter(|_| system).map(PathBuf::from) {
                if p.exists() && !trust_paths.contains(&p) {
                    paths.push((p, false));
                }
            }
            paths.extend(trust_paths.iter().map(|p| (p.clone(), true)));
        } else {
            for p in explicit {
                if !paths.iter().any(|(q, _)| q == p) {
                    paths.push((p.clone(), trust_paths.contains(p)));
                }
            }
        }
        Audit {
            paths,
            expiring_within: config
                .trust
                .as_ref()
                .map_or(crate::config::DEFAULT_TRUST_EXPIRING_WITHIN, |t| {
                    t.expiring_within
                }),
            anchor_exceptions: &config.anchor_exceptions,
            exceptions: &config.exceptions,
            chains: Vec::new(),
        }
    }

    /// Reads every path (through `cache`) and judges every anchor at `now`.
    pub(crate) fn run(&self, cache: &mut Cache, now: SystemTime) -> Report {
        let now_s = unix(now);
        let mut report = Report {
            version: SCHEMA_VERSION,
            generated_at: u64::try_from(now_s).unwrap_or(0),
            expiring_within: self.expiring_within.as_secs(),
            sources: Vec::new(),
            anchors: Vec::new(),
            errors: Vec::new(),
            flagged: 0,
        };
        // Files audited as paths of their own are not read again inside a directory.
        let own: HashSet<(u64, u64)> = self
            .paths
            .iter()
            .filter(|(p, _)| std::fs::metadata(p).is_ok_and(|m| m.is_file()))
            .filter_map(|(p, _)| read::FileId::of_path(p).map(|id| id.inode()))
            .collect();
        let mut found: Vec<(usize, Vec<Arc<Anchor>>)> = Vec::new();
        let mut budget = read::MAX_ANCHORS;
        for (path, mtls) in &self.paths {
            let (kind, mut anchors) = match safety::untrusted(path) {
                Some(why) => {
                    report.errors.push(format!(
                        "{}: not trustworthy, not read: {why}",
                        path.display()
                    ));
                    ("untrusted", Vec::new())
                }
                None => read_source(path, &own, budget, cache, &mut report.errors),
            };
            if anchors.len() > budget {
                report.errors.push(format!(
                    "{}: more than {} anchors in this audit; the rest was not audited",
                    path.display(),
                    read::MAX_ANCHORS
                ));
                anchors.truncate(budget);
            }
            budget -= anchors.len();
            report.sources.push(SourceReport {
                path: path.clone(),
                kind,
                mtls: *mtls,
                anchors: anchors.len(),
            });
            found.push((report.sources.len() - 1, anchors));
        }
        cache.retain();
        let used = self.used(&found);
        for (source, anchors) in &found {
            let (path, mtls) = (&self.paths[*source].0, self.paths[*source].1);
            for judged in self.judge_source(path, mtls, anchors, &used, now_s) {
                report.flagged += usize::from(judged.flagged);
                report.anchors.push(judged);
            }
        }
        report
    }

    /// The anchors of one audited path, judged: their own flags; `duplicate` for a
    /// certificate found more than once (one entry, its copies counted) or the same subject
    /// and key as an anchor before it; and `stale` for an mTLS path.
    fn judge_source(
        &self,
        path: &Path,
        mtls: bool,
        anchors: &[Arc<Anchor>],
        used: &HashSet<[u8; 32]>,
        now: i64,
    ) -> Vec<AuditedAnchor> {
        // Each certificate once, in the order first found, with the places of its copies.
        let mut unique: Vec<(&Anchor, Vec<&Anchor>)> = Vec::new();
        let mut index: HashMap<[u8; 32], usize> = HashMap::new();
        for a in anchors {
            match index.get(&a.fingerprint) {
                Some(&i) => unique[i].1.push(a),
                None => {
                    index.insert(a.fingerprint, unique.len());
                    unique.push((a, Vec::new()));
                }
            }
        }
        let mut out = Vec::with_capacity(unique.len());
        let mut seen_key: HashMap<(&[u8], &[u8]), &Anchor> = HashMap::new();
        for (a, copies) in unique {
            let mut judged = self.judge(path, a, now);
            judged.mtls = mtls;
            judged.copies = copies.len() + 1;
            if !copies.is_empty() {
                judged.flag(Flag::Duplicate, copies_text(a, &copies));
            } else if let Some(first) = seen_key.get(&(&a.subject_raw[..], &a.spki[..])) {
                let why = format!(
                    "the same subject and key as block {} of {}",
                    first.block,
                    first.file.display()
                );
                judged.flag(Flag::Duplicate, why);
            }
            seen_key.entry((&a.subject_raw, &a.spki)).or_insert(a);
            if mtls && !used.contains(&a.fingerprint) {
                let why = "no certificate in the inventory chains to it".to_string();
                judged.flag(Flag::Stale, why);
            }
            judged.settle();
            out.push(judged);
        }
        out
    }

    /// An anchor's own flags (expiry, strength) and its acknowledgement, if any.
    fn judge(&self, path: &Path, a: &Anchor, now: i64) -> AuditedAnchor {
        let mut out = AuditedAnchor {
            path: path.to_path_buf(),
            file: a.file.clone(),
            block: a.block,
            copies: 1,
            subject: a.subject.clone(),
            issuer: a.issuer.clone(),
            fingerprint: fingerprint_text(&a.fingerprint),
            not_before: a.not_before,
            not_after: a.not_after,
            days_left: (a.not_after - now).div_euclid(86_400),
            key: key_text(a),
            signature_algorithm: a.signature_algorithm.clone(),
            flags: Vec::new(),
            reasons: Vec::new(),
            flagged: false,
            acknowledged: self.acknowledgement(path, a, now),
            mtls: false,
        };
        let within = i64::try_from(self.expiring_within.as_secs()).unwrap_or(i64::MAX);
        if now >= a.not_after {
            out.flag(
                Flag::Expired,
                format!("expired at {}", rfc3339(a.not_after)),
            );
        } else if now >= a.not_after.saturating_sub(within) {
            out.flag(
                Flag::Expiring,
                format!(
                    "expires at {} ({} day(s) left)",
                    rfc3339(a.not_after),
                    out.days_left
                ),
            );
        }
        if a.key_type == "rsa" && a.key_bits.is_some_and(|b| b < MIN_RSA_BITS) {
            let bits = a.key_bits.unwrap_or(0);
            out.flag(
                Flag::Weak,
                format!("a {bits}-bit RSA key (under {MIN_RSA_BITS})"),
            );
        }
        if a.weak_signature {
            let note = if a.issuer_raw == a.subject_raw {
                " (a self-signature, which clients do not check)"
            } else {
                ""
            };
            out.flag(
                Flag::Weak,
                format!("signed with {}{note}", a.signature_algorithm),
            );
        }
        out
    }

    /// The exception acknowledging `a` found under `path`: an anchor exception with its
    /// fingerprint (and, if it names one, this path or file), else a certificate exception
    /// whose path is the anchor's file.
    fn acknowledgement(&self, path: &Path, a: &Anchor, now: i64) -> Option<Acknowledged> {
        let by_fingerprint = self.anchor_exceptions.iter().find(|x| {
            x.fingerprint == a.fingerprint
                && x.path.as_deref().is_none_or(|p| p == path || p == a.file)
        });
        let (owner, reason, review_by) = match by_fingerprint {
            Some(x) => (&x.owner, &x.reason, &x.review_by),
            None => {
                let x = self.exceptions.iter().find(|x| x.path == a.file)?;
                (&x.owner, &x.reason, &x.review_by)
            }
        };
        Some(Acknowledged {
            owner: owner.clone(),
            reason: reason.clone(),
            review_by: review_by.clone(),
            overdue: review_deadline(review_by).is_some_and(|d| now >= d),
        })
    }

    /// The fingerprints of the `[trust] paths` anchors some certificate of the inventory
    /// chains to: one it is, or that issued it, or that issued such an anchor in turn.
    fn used(&self, found: &[(usize, Vec<Arc<Anchor>>)]) -> HashSet<[u8; 32]> {
        let mtls: Vec<&Arc<Anchor>> = found
            .iter()
            .filter(|(s, _)| self.paths[*s].1)
            .flat_map(|(_, a)| a.iter())
            .collect();
        let mut used: HashSet<[u8; 32]> = HashSet::new();
        let mut frontier: Vec<&Anchor> = self.chains.iter().map(|c| &**c).collect();
        // Each round adds the anchors that issued something found in the round before.
        while !frontier.is_empty() {
            let mut next = Vec::new();
            for a in &mtls {
                if used.contains(&a.fingerprint) {
                    continue;
                }
                if frontier
                    .iter()
                    .any(|c| c.fingerprint == a.fingerprint || issued_by(c, a))
                {
                    used.insert(a.fingerprint);
                    next.push(&***a);
                }
            }
            frontier = next;
        }
        used
    }
}

impl AuditedAnchor {
    fn flag(&mut self, flag: Flag, reason: String) {
        self.flags.push(flag);
        self.reasons.push(reason);
    }

    /// Whether it counts as flagged, once every flag is known.
    fn settle(&mut self) {
        self.flagged =
            !self.flags.is_empty() && self.acknowledged.as_ref().is_none_or(|a| a.overdue);
    }
}

/// Whether `issuer` issued `cert` (RFC 5280 §6.1.3 (a)(4), §4.2.1.1): `cert`'s issuer name
/// is `issuer`'s subject, and its authority key identifier is `issuer`'s subject key
/// identifier when both are present, else its signature verifies with `issuer`'s key.
fn issued_by(cert: &Anchor, issuer: &Anchor) -> bool {
    if cert.issuer_raw != issuer.subject_raw || cert.fingerprint == issuer.fingerprint {
        return false;
    }
    match (&cert.aki, &issuer.ski) {
        (Some(aki), Some(ski)) => aki == ski,
        _ => crate::x509::verify_issued_by(&cert.der, &issuer.der).is_ok(),
    }
}

/// Reads one audited path: a file, or a directory's files (except those in `own`; no more
/// once over `budget` anchors).
fn read_source(
    path: &Path,
    own: &HashSet<(u64, u64)>,
    budget: usize,
    cache: &mut Cache,
    errors: &mut Vec<String>,
) -> (&'static str, Vec<Arc<Anchor>>) {
    let mut anchors = Vec::new();
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => {
            let (files, over) = match read::directory_files(path, own) {
                Ok(found) => found,
                Err(e) => {
                    errors.push(format!(
                        "{}: cannot list the directory: {e}",
                        path.display()
                    ));
                    return ("directory", anchors);
                }
            };
            errors.extend(over);
            for file in files {
                if anchors.len() > budget {
                    break;
                }
                match cache.file(&file) {
                    Ok(f) => {
                        anchors.extend(f.anchors.iter().cloned());
                        errors.extend(f.errors.iter().cloned());
                    }
                    // In a directory, a file of only other PEM blocks (a CRL beside its
                    // certificates, as `c_rehash` directories hold) is not an error; an
                    // empty, binary or PKCS#7 file is.
                    Err(read::ReadAnchorsError::OtherBlocks { .. }) => {}
                    Err(e) => errors.push(e.to_string()),
                }
            }
            ("directory", anchors)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            errors.push(format!("{}: does not exist", path.display()));
            ("missing", anchors)
        }
        _ => {
            match cache.file(path) {
                Ok(f) => {
                    anchors.extend(f.anchors.iter().cloned());
                    errors.extend(f.errors.iter().cloned());
                }
                Err(e) => errors.push(e.to_string()),
            }
            ("bundle", anchors)
        }
    }
}

/// Every certificate of the files at `paths` (PEM or DER; unreadable files and keys are
/// skipped: the inventory reports those), through `cache`.
pub(crate) fn read_chains<'p>(
    paths: impl IntoIterator<Item = &'p Path>,
    cache: &mut Cache,
) -> Vec<Arc<Anchor>> {
    let mut out = Vec::new();
    let mut seen: HashSet<&Path> = HashSet::new();
    for path in paths {
        if !seen.insert(path) {
            continue;
        }
        if let Ok(f) = cache.file_capped(path, crate::fsutil::caps::CERTIFICATE) {
            out.extend(f.anchors.iter().cloned());
        }
    }
    out
}

/// Why a certificate found `copies.len() + 1` times is `duplicate`: how many copies, and
/// where the first few are (a bundle can repeat one anchor thousands of times).
fn copies_text(first: &Anchor, copies: &[&Anchor]) -> String {
    const SHOWN: usize = 5;
    let places: Vec<String> = copies
        .iter()
        .take(SHOWN)
        .map(|c| {
            if c.file == first.file {
                format!("block {}", c.block)
            } else {
                format!("block {} of {}", c.block, c.file.display())
            }
        })
        .collect();
    let more = copies.len().saturating_sub(SHOWN);
    format!(
        "{} copies of the same certificate in this path (first block {} of {}; again at {}{})",
        copies.len() + 1,
        first.block,
        first.file.display(),
        places.join(", "),
        if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        }
    )
}

/// `sha256:` and lowercase hex.
pub(crate) fn fingerprint_text(fp: &[u8; 32]) -> String {
    format!("sha256:{}", data_encoding::HEXLOWER.encode(fp))
}

/// `rsa-2048`, `ecdsa-p256`, `ed25519`, or the type alone when the size is unknown.
fn key_text(a: &Anchor) -> String {
    match (&a.curve, a.key_bits) {
        (Some(c), _) => format!("{}-{}", a.key_type, c.to_lowercase().replace('-', "")),
        (None, Some(b)) if a.key_type == "rsa" || a.key_type == "dsa" => {
            format!("{}-{b}", a.key_type)
        }
        _ => a.key_type.clone(),
    }
}

/// The first instant after `review_by` (`YYYY-MM-DD`): midnight UTC of the next day.
fn review_deadline(review_by: &str) -> Option<i64> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    let date = time::Date::parse(review_by, &format).ok()?;
    Some(date.next_day()?.midnight().assume_utc().unix_timestamp())
}

/// The next instant (Unix seconds) after `now` at which an anchor of `report` may gain a
/// flag or lose its acknowledgement: its `expiring` start, its notAfter, a review date.
pub(crate) fn next_change(report: &Report, expiring_within: Duration, now: i64) -> Option<i64> {
    let within = i64::try_from(expiring_within.as_secs()).unwrap_or(i64::MAX);
    report
        .anchors
        .iter()
        .flat_map(|a| {
            let review = a
                .acknowledged
                .as_ref()
                .and_then(|k| review_deadline(&k.review_by));
            [
                Some(a.not_after.saturating_sub(within)),
                Some(a.not_after),
                review,
            ]
        })
        .flatten()
        .filter(|t| *t > now)
        .min()
}

fn unix(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

/// `2026-05-01T12:00:00Z`.
fn rfc3339(t: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| {
            d.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

    fn ca_params(cn: &str, days: i64) -> CertificateParams {
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
        p.distinguished_name.push(DnType::CommonName, cn);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let now = time::OffsetDateTime::now_utc();
        p.not_before = now - time::Duration::days(1);
        p.not_after = now + time::Duration::days(days);
        p
    }

    /// A bundle of root R, intermediate I (issued by R), R again, R re-issued (same subject
    /// and key, another validity) and an unrelated root X; a leaf issued by I is the only
    /// certificate of the inventory.
    #[test]
    fn stale_follows_the_chain_through_the_bundle_and_duplicates_are_flagged() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (rk, ik, xk, lk) = (
            KeyPair::generate().unwrap(),
            KeyPair::generate().unwrap(),
            KeyPair::generate().unwrap(),
            KeyPair::generate().unwrap(),
        );
        let rp = ca_params("R", 3650);
        let r = rp.self_signed(&rk).unwrap();
        let r_again = ca_params("R", 20).self_signed(&rk).unwrap();
        let i = ca_params("I", 1000)
            .signed_by(&ik, &Issuer::from_params(&rp, &rk))
            .unwrap();
        let x = ca_params("X", 3650).self_signed(&xk).unwrap();
        let ip = ca_params("I", 1000);
        let leaf = CertificateParams::new(vec!["a.test".to_string()])
            .unwrap()
            .signed_by(&lk, &Issuer::from_params(&ip, &ik))
            .unwrap();
        let bundle = dir.path().join("ca.pem");
        let text = [&r, &i, &r, &r_again, &x].map(|c| c.pem()).concat();
        std::fs::write(&bundle, text).unwrap();
        let leaf_path = dir.path().join("leaf.pem");
        std::fs::write(&leaf_path, leaf.pem()).unwrap();
        let audit = Audit {
            paths: vec![(bundle.clone(), true)],
            expiring_within: Duration::from_secs(30 * 86_400),
            anchor_exceptions: &[],
            exceptions: &[],
            chains: read_chains([leaf_path.as_path()], &mut Cache::default()),
        };
        let report = audit.run(&mut Cache::default(), SystemTime::now());
        let flags: Vec<Vec<&str>> = report
            .anchors
            .iter()
            .map(|a| a.flags.iter().map(|f| f.as_str()).collect())
            .collect();
        // R's second copy is merged into R (one entry, two copies), R-again is its own.
        assert_eq!(
            flags,
            [
                vec!["duplicate"],
                vec![],
                vec!["expiring", "duplicate"],
                vec!["stale"]
            ]
        );
        assert_eq!(report.anchors[0].copies, 2);
        assert!(
            report.anchors[0].reasons[0].starts_with("2 copies of the same certificate"),
            "{:?}",
            report.anchors[0].reasons
        );
        assert!(report.anchors[0].reasons[0].contains("again at block 3"));
        assert!(report.anchors[2].reasons[1].contains("same subject and key as block 1"));
        assert_eq!(report.flagged, 3);
        // The next change is R-again's expiry (20 days away, already `expiring`).
        let now = unix(SystemTime::now());
        let next = next_change(&report, audit.expiring_within, now).expect("next");
        assert_eq!(next, report.anchors[2].not_after);
    }

    #[test]
    fn review_deadline_is_the_next_midnight() {
        // 2027-03-02T00:00:00Z.
        assert_eq!(review_deadline("2027-03-01"), Some(1_803_945_600));
        assert_eq!(review_deadline("2027-02-30"), None);
    }
}

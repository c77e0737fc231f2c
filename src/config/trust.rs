//! `[trust]` (the mTLS trust stores to audit) and `[[exception]]` tables that acknowledge a
//! trust anchor by `fingerprint` instead of naming a certificate file.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use super::problem::{Location, Problem};
use super::schema::*;
use super::source::{Entry, Node, Section, Val};
use super::types::{AnchorException, TrustConfig, DEFAULT_TRUST_EXPIRING_WITHIN};

pub(super) const TRUST_KEYS: &[&str] = &["paths", "expiring_within", "system"];

/// Longest `expiring_within`: ten years, beyond any root's remaining life worth a warning.
const MAX_EXPIRING_WITHIN: Duration = Duration::from_secs(3_650 * 86_400);

/// `[trust]`: `paths` (absolute, each once) and `expiring_within` (a duration, 0s..10y).
pub(super) fn build_trust(
    section: &Section,
    locs: &mut BTreeMap<String, Location>,
    p: &mut Vec<Problem>,
) -> Option<TrustConfig> {
    let start = p.len();
    check_keys(&section.entries, TRUST_KEYS, "in [trust]", p);
    let expiring_within = match find(&section.entries, "expiring_within") {
        Some(e) => {
            locs.insert("trust.expiring_within".into(), e.node.loc.clone());
            as_duration(&e.key, &e.node, Duration::ZERO, MAX_EXPIRING_WITHIN, p)
                .unwrap_or(DEFAULT_TRUST_EXPIRING_WITHIN)
        }
        None => DEFAULT_TRUST_EXPIRING_WITHIN,
    };
    let system = match find(&section.entries, "system") {
        Some(e) => as_bool(&e.key, &e.node, p).unwrap_or(false),
        None => false,
    };
    let mut paths: Vec<PathBuf> = Vec::new();
    if let Some(e) = find(&section.entries, "paths") {
        locs.insert("trust.paths".into(), e.node.loc.clone());
        for (path, loc) in as_abs_path_list("paths", &e.node, p) {
            locs.insert(format!("trust.paths.{}", paths.len()), loc);
            paths.push(path);
        }
    }
    (p.len() == start).then_some(TrustConfig {
        paths,
        expiring_within,
        system,
    })
}

/// `renewd check`'s warning for each `[trust] paths` entry a user other than root and
/// renewd's can change (the audit reports it as not trustworthy and does not read it), at
/// the entry's FILE:LINE:COL.
pub(super) fn check_trust_paths(config: &super::Config, p: &mut Vec<Problem>) {
    for (i, path) in config.trust.iter().flat_map(|t| &t.paths).enumerate() {
        if let Some(why) = crate::trust::safety::untrusted(path) {
            let at = match config.key_locations.get(&format!("trust.paths.{i}")) {
                Some(loc) => loc.clone(),
                None => config.key_location("trust.paths"),
            };
            p.push(Problem::warning(
                at,
                format!(
                    "`{}` of `[trust] paths` is not trustworthy, so it is not audited: {why}",
                    path.display()
                ),
            ));
        }
    }
}

/// A key of an `[[exception]]` that acknowledges a trust anchor.
type AnchorKey = KeySpec<AnchorException>;

/// Every key of an anchor `[[exception]]`.
static ANCHOR_EXCEPTION_KEYS: &[AnchorKey] = &[
    AnchorKey::own("fingerprint", |x, e, _, p| {
        if let Some(s) = as_str(&e.key, &e.node, p) {
            if let Some(fp) = or_report(&e.node, parse_fingerprint(s), p) {
                x.fingerprint = fp;
            }
        }
    })
    .required(),
    AnchorKey::own("path", |x, e, _, p| {
        x.path = as_abs_path(&e.key, &e.node, p);
    }),
    AnchorKey::own("owner", |x, e, _, p| {
        x.owner = as_nonempty_str(&e.key, &e.node, p).unwrap_or_default()
    })
    .required(),
    AnchorKey::own("reason", |x, e, _, p| {
        x.reason = as_nonempty_str(&e.key, &e.node, p).unwrap_or_default()
    })
    .required(),
    AnchorKey::own("review_by", parse_review_by).required(),
];

impl Draft for AnchorException {}

/// `review_by`: see [`as_date`].
fn parse_review_by(x: &mut AnchorException, e: &Entry, _: &(), p: &mut Vec<Problem>) {
    if let Some(date) = as_date(&e.key, &e.node, p) {
        x.review_by = date;
    }
}

/// `sha256:` and 64 hex digits, upper or lower case, optionally in colon-separated pairs
/// (as `openssl x509 -fingerprint -sha256` prints them).
pub(super) fn parse_fingerprint(s: &str) -> Result<[u8; 32], String> {
    let hint = "write `sha256:` and the 64 hex digits of the anchor's SHA-256 fingerprint \
                (`renewd trust-audit` prints it)";
    let Some(hex) = s
        .strip_prefix("sha256:")
        .or_else(|| s.strip_prefix("SHA256:"))
    else {
        return Err(format!("`fingerprint` `{s}`: {hint}"));
    };
    let digits: String = hex.chars().filter(|c| *c != ':').collect();
    if !digits.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!("`fingerprint` `{s}` is not hexadecimal; {hint}"));
    }
    let count = format!(
        "`fingerprint` `{s}` has {} hex digits, a SHA-256 fingerprint has 64; {hint}",
        digits.len()
    );
    if digits.len() != 64 {
        return Err(count);
    }
    let bytes = data_encoding::HEXLOWER_PERMISSIVE
        .decode(digits.as_bytes())
        .map_err(|_| count.clone())?;
    <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| count)
}

/// Whether an `[[exception]]` table names a trust anchor (it has `fingerprint`).
pub(super) fn is_anchor_exception(node: &Node) -> bool {
    matches!(&node.val, Val::Table(entries) if find(entries, "fingerprint").is_some())
}

/// One anchor `[[exception]]`; `None` when anything about it is wrong (and `p` says what).
pub(super) fn build_anchor_exception(node: &Node, p: &mut Vec<Problem>) -> Option<AnchorException> {
    let Val::Table(entries) = &node.val else {
        return None;
    };
    let start = p.len();
    let context = "in an [[exception]] with `fingerprint` (a trust anchor)";
    check_keys(entries, &key_names(ANCHOR_EXCEPTION_KEYS), context, p);
    let mut exception = AnchorException {
        fingerprint: [0; 32],
        path: None,
        owner: String::new(),
        reason: String::new(),
        review_by: String::new(),
        location: node.loc.clone(),
    };
    parse_keys(ANCHOR_EXCEPTION_KEYS, entries, &mut exception, &(), p);
    let needs = |key: &str| format!("[[exception]] needs `{key}`");
    report_missing(ANCHOR_EXCEPTION_KEYS, entries, &node.loc, needs, p);
    (p.len() == start).then_some(exception)
}

/// Every anchor `[[exception]]` of `nodes`, but those for an anchor (and path) another one
/// acknowledges already.
pub(super) fn build_anchor_exceptions<'n>(
    nodes: impl Iterator<Item = &'n Node>,
    p: &mut Vec<Problem>,
) -> Vec<AnchorException> {
    let mut out: Vec<AnchorException> = Vec::new();
    for node in nodes {
        let Some(x) = build_anchor_exception(node, p) else {
            continue;
        };
        if let Some(first) = out
            .iter()
            .find(|o| o.fingerprint == x.fingerprint && o.path == x.path)
        {
            p.push(Problem::new(
                x.location.clone(),
                format!(
                    "an [[exception]] for this anchor is declared again here; first declared \
                     at {}",
                    first.location
                ),
            ));
            continue;
        }
        out.push(x);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::parse_fingerprint;

    #[test]
    fn fingerprints_are_read_with_or_without_colons() {
        let hex = "AB".repeat(32);
        assert_eq!(parse_fingerprint(&format!("sha256:{hex}")), Ok([0xab; 32]));
        let pairs = vec!["ab"; 32].join(":");
        assert_eq!(
            parse_fingerprint(&format!("sha256:{pairs}")),
            Ok([0xab; 32])
        );
        assert!(parse_fingerprint(&hex)
            .unwrap_err()
            .contains("write `sha256:`"));
        assert!(parse_fingerprint("sha256:abcd")
            .unwrap_err()
            .contains("has 4 hex digits"));
        assert!(parse_fingerprint(&format!("sha256:{}", "zz".repeat(32)))
            .unwrap_err()
            .contains("not hexadecimal"));
    }
}

//! dns-persist-01's two commands: `renewd persist-record NAME...` prints the
//! `_validation-persist` records to publish, and `renewd check` looks each configured one up
//! ([`check_records`]): missing, mismatched (another CA, another account, no wildcard
//! policy) or expiring soon, reported at the certificate's `challenge`.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use super::{load, CommandError, Outcome};
use crate::challenge::persist::{self, Expected, Verdict};
use crate::config::{self, CaConfig, CertConfig, ChallengeConfig, ChallengeRule, Config};
use crate::state::StateDir;

/// `check` warns when a record's `persistUntil` comes within this long; the daemon's
/// `persist_record_expiring` alert uses the same lead.
pub(crate) const EXPIRY_LEAD: Duration = crate::inventory::alerts::PERSIST_RECORD_LEAD;

/// One record a certificate needs: the name it validates, the rule, the CA.
struct Needed<'a> {
    cert: &'a CertConfig,
    rule: &'a ChallengeRule,
    persist: &'a config::PersistConfig,
    identifier: &'a str,
    ca: &'a CaConfig,
}

/// Every (name, CA) of `cert` validated with dns-persist-01, restricted to `only` when given.
fn needed<'a>(cfg: &'a Config, cert: &'a CertConfig, only: Option<&str>) -> Vec<Needed<'a>> {
    let mut out = Vec::new();
    for identifier in &cert.domains {
        if only.is_some_and(|d| d != identifier) {
            continue;
        }
        let Some(rule) = cert.challenge.for_name(identifier) else {
            continue;
        };
        let ChallengeConfig::DnsPersist01(persist) = &rule.config else {
            continue;
        };
        for ca in cert.ca.iter().filter_map(|name| cfg.cas.get(name)) {
            out.push(Needed {
                cert,
                rule,
                persist,
                identifier,
                ca,
            });
        }
    }
    out
}

/// `renewd persist-record NAME...`: NAME is a configured certificate (every name it
/// validates with dns-persist-01) or one of its domains. Prints `_validation-persist.DOMAIN.
/// TXT "VALUE"` lines, each once; an unknown NAME or one without dns-persist-01 is a usage
/// error (exit 2), a CA that cannot be asked or an account that cannot be registered a
/// failure (exit 1).
pub async fn persist_record(arg: Option<&Path>, names: &[String]) -> Result<Outcome, CommandError> {
    let (_, cfg) = load(arg)?;
    let mut wanted = Vec::new();
    for name in names {
        let found: Vec<Needed<'_>> = match cfg.certificates.iter().find(|c| &c.name == name) {
            Some(cert) => needed(&cfg, cert, None),
            None => cfg
                .certificates
                .iter()
                .flat_map(|cert| needed(&cfg, cert, Some(name)))
                .collect(),
        };
        if found.is_empty() {
            let known = cfg.certificates.iter().any(|c| &c.name == name)
                || cfg.certificates.iter().any(|c| c.domains.contains(name));
            return Err(CommandError::Usage(if known {
                format!("`{name}` is not validated with dns-persist-01 (see its `challenge`)")
            } else {
                format!("`{name}` is neither a configured certificate nor one of their domains")
            }));
        }
        wanted.extend(found);
    }
    let mut printed = BTreeSet::new();
    for n in &wanted {
        let account_url = account_url(&cfg, n.ca).await?;
        let issuer = issuer(&cfg, n.ca).await?;
        let line = expected(n, &issuer, &account_url).zone_line(n.identifier);
        if printed.insert(line.clone()) {
            println!("{line}");
        }
    }
    Ok(Outcome::Success)
}

/// The record expected for `n`: a wildcard name, or `policy = "wildcard"`, asks for
/// `policy=wildcard`.
fn expected<'a>(n: &Needed<'a>, issuer: &'a str, account_url: &'a str) -> Expected<'a> {
    Expected {
        issuer,
        account_url,
        wildcard: n.persist.wildcard || n.identifier.starts_with("*."),
        persist_until: n.persist.persist_until,
    }
}

/// The stored account's URL at `ca`; when there is none, one is registered (under the state
/// lock, so not while the daemon runs).
async fn account_url(cfg: &Config, ca: &CaConfig) -> Result<String, CommandError> {
    let path = StateDir::open_existing(&cfg.state_dir).account_path(&ca.name);
    if let Some(id) = crate::acme::account::stored_id(ca, &path).map_err(CommandError::failed)? {
        return Ok(id);
    }
    let state = StateDir::open(&cfg.state_dir).map_err(CommandError::failed)?;
    let _lock = state.try_lock().map_err(|e| {
        CommandError::Failed(format!(
            "no account with CA {} yet, and registering one needs the state directory: {e} \
             (the running daemon registers it at its first order; run persist-record again then)",
            ca.name
        ))
    })?;
    let opened = crate::acme::Ca::open(ca, &state.account_path(&ca.name))
        .await
        .map_err(CommandError::failed)?;
    Ok(opened.account_url().await)
}

/// The CA's issuer domain name (configured, else from its directory).
async fn issuer(cfg: &Config, ca: &CaConfig) -> Result<String, CommandError> {
    let pause = crate::state::pause_path(&cfg.state_dir, &ca.name);
    crate::acme::persist::issuer_domain_name(ca, pause)
        .await
        .map_err(CommandError::failed)
}

/// `renewd check`'s look at every dns-persist-01 record, read-only: each (record, CA) is
/// looked up once. A missing or mismatched record is an error at the certificate's
/// `challenge` (its renewal would fail); one expiring within [`EXPIRY_LEAD`], or no account
/// yet, a warning. A CA or resolver that cannot be asked is said on standard error: `check`
/// must work offline.
pub(super) async fn check_records(cfg: &Config) -> Vec<config::Problem> {
    let mut problems = Vec::new();
    let mut seen = BTreeSet::new();
    for cert in &cfg.certificates {
        for n in needed(cfg, cert, None) {
            let record = persist::record_name(n.identifier);
            if !seen.insert((cert.name.clone(), record.clone(), n.ca.name.clone())) {
                continue;
            }
            if let Some(p) = check_one(cfg, &n, &record).await {
                problems.push(p);
            }
        }
    }
    problems
}

/// One record of [`check_records`].
async fn check_one(cfg: &Config, n: &Needed<'_>, record: &str) -> Option<config::Problem> {
    let at = n.cert.key_location(&n.rule.key).clone();
    let label = format!(
        "certificate {}: dns-persist-01 record {record}",
        n.cert.name
    );
    let path = StateDir::open_existing(&cfg.state_dir).account_path(&n.ca.name);
    let account_url = match crate::acme::account::stored_id(n.ca, &path) {
        Ok(Some(id)) => id,
        Ok(None) => {
            return Some(config::Problem::warning(
                at,
                format!(
                    "{label}: no account with CA {} yet; `renewd persist-record {}` registers \
                     one and prints the record to publish",
                    n.ca.name, n.cert.name
                ),
            ))
        }
        Err(e) => return Some(config::Problem::warning(at, format!("{label}: {e}"))),
    };
    let issuer = match issuer(cfg, n.ca).await {
        Ok(issuer) => issuer,
        Err(e) => {
            eprintln!("renewd: warning: {label} not checked: {e}");
            return None;
        }
    };
    let found = match persist::resolver(n.persist.resolver) {
        Ok(server) => persist::lookup(server, record).await,
        Err(e) => Err(e),
    };
    let found = match found {
        Ok(found) => found,
        Err(e) => {
            eprintln!("renewd: warning: {label} not checked: {e}");
            return None;
        }
    };
    let expected = expected(n, &issuer, &account_url);
    judge(&label, at, &found, &expected, n, persist::unix_now())
}

/// The problem (if any) the values `found` make, at `now` (Unix seconds).
fn judge(
    label: &str,
    at: config::Location,
    found: &[String],
    expected: &Expected<'_>,
    n: &Needed<'_>,
    now: i64,
) -> Option<config::Problem> {
    let publish = expected.zone_line(n.identifier);
    match persist::judge(found, expected, now) {
        Verdict::Usable {
            persist_until: Some(until),
        } if until - now < EXPIRY_LEAD.as_secs() as i64 => Some(config::Problem::warning(
            at,
            format!(
                "{label}: persistUntil {} is less than {} days away; publish a new record \
                 before then: {publish}",
                crate::text::rfc3339(std::time::UNIX_EPOCH + Duration::from_secs(until as u64)),
                EXPIRY_LEAD.as_secs() / 86_400
            ),
        )),
        Verdict::Usable { .. } => None,
        Verdict::Missing => Some(config::Problem::new(
            at,
            format!("{label} is missing (CA {}); publish: {publish}", n.ca.name),
        )),
        Verdict::Mismatch(why) => Some(config::Problem::new(
            at,
            format!(
                "{label} does not authorize renewd's account at CA {}: {why}; publish: {publish}",
                n.ca.name
            ),
        )),
    }
}

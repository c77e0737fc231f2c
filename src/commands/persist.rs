//! dns-persist-01's two commands: `renewd persist-record NAME...` prints the
//! `_validation-persist` records to publish, and `renewd check` looks each configured one up
//! ([`check_records`]): missing, mismatched (another CA, another account, no wildcard
//! policy) or expiring soon, reported at the certificate's `challenge`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use super::{load, CommandError, Outcome};
use crate::acme::persist::IssuerNameError;
use crate::challenge::persist::{self, Expected, Verdict};
use crate::config::{self, CaConfig, CertConfig, ChallengeConfig, ChallengeRule, Config};
use crate::state::StateDir;
use crate::text::escape;

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

/// How long `renewd persist-record` waits for the CA in all (directory read and, when there
/// is no account yet, its registration) before giving up: an interactive command.
pub(crate) const PERSIST_RECORD_DEADLINE: Duration = Duration::from_secs(30);

/// How long `renewd check` waits for one CA's directory (its issuer domain name).
const CHECK_CA_DEADLINE: Duration = Duration::from_secs(15);

/// `renewd persist-record NAME...`: NAME is a configured certificate (every name it
/// validates with dns-persist-01) or one of its domains, compared as `domains` are (case, a
/// trailing dot, an internationalised name in its U-label or A-label form). Prints
/// `_validation-persist.DOMAIN. TXT "VALUE"` lines, each once. An unknown NAME or one
/// without dns-persist-01 is a usage error (exit 2); a `persist_until` already past a
/// configuration error (exit 78); a CA that cannot be asked within
/// [`PERSIST_RECORD_DEADLINE`], or an account that cannot be registered, a failure (exit 1).
/// The issuer domain name is learnt before any account is registered.
pub async fn persist_record(arg: Option<&Path>, names: &[String]) -> Result<Outcome, CommandError> {
    let (_, cfg) = load(arg)?;
    let mut wanted = Vec::new();
    for name in names {
        wanted.extend(wanted_for(&cfg, name)?);
    }
    refuse_passed(&wanted, persist::unix_now())?;
    let lines = tokio::time::timeout(PERSIST_RECORD_DEADLINE, zone_lines(&cfg, &wanted))
        .await
        .map_err(|_| {
            CommandError::Failed(format!(
                "no answer from the CA within {}s (persist-record's deadline): check the CA's \
                 `directory` and the network, then run it again",
                PERSIST_RECORD_DEADLINE.as_secs()
            ))
        })??;
    for line in lines {
        println!("{line}");
    }
    Ok(Outcome::Success)
}

/// The records `name` (a certificate's name, else one of their domains) asks for.
fn wanted_for<'a>(cfg: &'a Config, name: &str) -> Result<Vec<Needed<'a>>, CommandError> {
    if let Some(cert) = cfg.certificates.iter().find(|c| c.name == name) {
        let found = needed(cfg, cert, None);
        if found.is_empty() {
            return Err(CommandError::Usage(format!(
                "`{}` is not validated with dns-persist-01 (see its `challenge`)",
                escape(name)
            )));
        }
        return Ok(found);
    }
    let domain = normalize_domain(name).map_err(|why| {
        CommandError::Usage(format!(
            "`{}` is neither a configured certificate nor a valid domain: {why}",
            escape(name)
        ))
    })?;
    let found: Vec<Needed<'_>> = cfg
        .certificates
        .iter()
        .flat_map(|cert| needed(cfg, cert, Some(&domain)))
        .collect();
    if found.is_empty() {
        let known = cfg.certificates.iter().any(|c| c.domains.contains(&domain));
        return Err(CommandError::Usage(if known {
            format!("`{domain}` is not validated with dns-persist-01 (see its `challenge`)")
        } else {
            format!(
                "`{}` is neither a configured certificate nor one of their domains",
                escape(name)
            )
        }));
    }
    Ok(found)
}

/// `name` as `domains` hold it: an internationalised name in its A-label (`xn--`) form, then
/// lowercased, without a trailing dot (config's rules for `domains`).
fn normalize_domain(name: &str) -> Result<String, String> {
    let (prefix, base) = match name.strip_prefix("*.") {
        Some(base) => ("*.", base),
        None => ("", name),
    };
    let ascii = if base.is_ascii() {
        base.to_string()
    } else {
        idna::domain_to_ascii(base).map_err(|_| "not a valid internationalised name".to_string())?
    };
    config::normalize_identifier(&format!("{prefix}{ascii}")).map_err(|e| e.to_string())
}

/// A configured `persist_until` already past makes a record the CA ignores: refused, at
/// the challenge, before the CA is asked.
fn refuse_passed(wanted: &[Needed<'_>], now: i64) -> Result<(), CommandError> {
    let passed: BTreeSet<String> = wanted
        .iter()
        .filter_map(|n| {
            let until = n.persist.persist_until.filter(|t| *t <= now)?;
            Some(format!(
                "{}: certificate {}: `persist_until` {} has passed: the CA would ignore a record \
                 with it; set a later date",
                persist_until_location(n),
                n.cert.name,
                unix_rfc3339(until)
            ))
        })
        .collect();
    if passed.is_empty() {
        return Ok(());
    }
    Err(CommandError::Config(
        passed.into_iter().collect::<Vec<_>>().join("\n"),
    ))
}

/// Where `n`'s `persist_until` is written (its challenge when not found).
fn persist_until_location(n: &Needed<'_>) -> config::Location {
    n.cert
        .key_location(&format!("{}.persist_until", n.rule.key))
        .clone()
}

/// `t` (Unix seconds) as an RFC 3339 time.
fn unix_rfc3339(t: i64) -> String {
    crate::text::rfc3339(std::time::UNIX_EPOCH + Duration::from_secs(t.max(0) as u64))
}

/// The zone-file lines for `wanted`, each once: every CA's issuer domain name is learnt
/// first (a CA without one fails before any account is registered), then the accounts.
async fn zone_lines(cfg: &Config, wanted: &[Needed<'_>]) -> Result<Vec<String>, CommandError> {
    let mut issuers = BTreeMap::new();
    for n in wanted {
        if !issuers.contains_key(&n.ca.name) {
            let issuer = issuer(cfg, n.ca).await.map_err(CommandError::failed)?;
            issuers.insert(n.ca.name.clone(), issuer);
        }
    }
    let mut accounts = BTreeMap::new();
    for n in wanted {
        if !accounts.contains_key(&n.ca.name) {
            accounts.insert(n.ca.name.clone(), account_url(cfg, n.ca).await?);
        }
    }
    let mut printed = BTreeSet::new();
    let mut lines = Vec::new();
    for n in wanted {
        let line = expected(n, &issuers[&n.ca.name], &accounts[&n.ca.name]).zone_line(n.identifier);
        if printed.insert(line.clone()) {
            lines.push(line);
        }
    }
    Ok(lines)
}

/// The record expected for `n`: a wildcard name, or `policy = "wildcard"`, asks for
/// `policy=wildcard`.
fn expected<'a>(n: &Needed<'a>, issuer: &'a str, account_url: &'a str) -> Expected<'a> {
    Expected::new(
        n.identifier,
        issuer,
        account_url,
        n.persist.wildcard,
        n.persist.persist_until,
    )
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
    let opened = crate::acme::Ca::open(ca, &state.ca_files(&ca.name))
        .await
        .map_err(CommandError::failed)?;
    Ok(opened.account_url().await)
}

/// The CA's issuer domain name (configured, else from its directory).
async fn issuer(cfg: &Config, ca: &CaConfig) -> Result<String, IssuerNameError> {
    let pause = crate::state::pause_path(&cfg.state_dir, &ca.name);
    crate::acme::persist::issuer_domain_name(ca, pause).await
}

/// `renewd check`'s look at every dns-persist-01 record, read-only. From the configuration
/// alone: a `persist_until` past (an error at it: the certificate cannot be renewed as
/// written) or within [`EXPIRY_LEAD`] (a warning). Then each CA is asked its issuer domain
/// name once (one that advertises none, with no `issuer_domain_name`, is an error at the
/// certificate's `challenge`), each account read (none yet: an error there too, no record
/// can name it), and each (record, CA) looked up once, all lookups together within
/// [`persist::ALL_LOOKUPS_TIMEOUT`]: a missing or mismatched record is an error at the
/// `challenge`, one expiring within [`EXPIRY_LEAD`] a warning. A CA or resolver that cannot
/// be asked is said on standard error: `check` must work offline.
pub(super) async fn check_records(cfg: &Config) -> Vec<config::Problem> {
    let now = persist::unix_now();
    let mut all = Vec::new();
    let mut seen = BTreeSet::new();
    for cert in &cfg.certificates {
        for n in needed(cfg, cert, None) {
            let record = persist::record_name(n.identifier);
            if seen.insert((cert.name.clone(), record.clone(), n.ca.name.clone())) {
                all.push((n, record));
            }
        }
    }
    let mut problems = configured_until(&all, now);
    let mut issuers = BTreeMap::new();
    let mut planned = Vec::new();
    for (n, record) in &all {
        let label = format!(
            "certificate {}: dns-persist-01 record {record}",
            n.cert.name
        );
        let at = n.cert.key_location(&n.rule.key).clone();
        if !issuers.contains_key(&n.ca.name) {
            let found = tokio::time::timeout(CHECK_CA_DEADLINE, issuer(cfg, n.ca))
                .await
                .unwrap_or_else(|_| {
                    Err(IssuerNameError::Timeout {
                        ca: n.ca.name.clone(),
                        after: CHECK_CA_DEADLINE,
                    })
                });
            issuers.insert(n.ca.name.clone(), found);
        }
        let issuer = match &issuers[&n.ca.name] {
            Ok(issuer) => issuer.clone(),
            Err(e @ IssuerNameError::NotAdvertised { .. }) => {
                problems.push(config::Problem::new(at, format!("{label}: {e}")));
                continue;
            }
            Err(e) => {
                eprintln!("renewd: warning: {label} not checked: {e}");
                continue;
            }
        };
        match account_of(cfg, n, &label) {
            Ok(account_url) => planned.push((n, record, label, at, issuer, account_url)),
            Err(p) => problems.push(p),
        }
    }
    let mut queries = Vec::new();
    let mut lookups = Vec::new();
    for (n, record, label, at, issuer, account_url) in planned {
        match persist::resolver(n.persist.resolver) {
            Ok(server) => {
                queries.push((server, record.clone()));
                lookups.push((n, label, at, issuer, account_url));
            }
            Err(e) => eprintln!("renewd: warning: {label} not checked: {e}"),
        }
    }
    let results = persist::lookup_all(&queries, persist::ALL_LOOKUPS_TIMEOUT).await;
    for ((n, label, at, issuer, account_url), found) in lookups.into_iter().zip(results) {
        match found {
            Ok(found) => {
                let expected = expected(n, &issuer, &account_url);
                problems.extend(judge(&label, at, &found, &expected, n, now));
            }
            Err(e) => eprintln!("renewd: warning: {label} not checked: {e}"),
        }
    }
    problems
}

/// Problems of the configured `persist_until` alone, at it, once per challenge rule.
fn configured_until(all: &[(Needed<'_>, String)], now: i64) -> Vec<config::Problem> {
    let mut seen = BTreeSet::new();
    let mut problems = Vec::new();
    for (n, _) in all {
        let Some(until) = n.persist.persist_until else {
            continue;
        };
        if !seen.insert((n.cert.name.clone(), n.rule.key.clone())) {
            continue;
        }
        let at = persist_until_location(n);
        let what = format!(
            "certificate {}: `persist_until` {}",
            n.cert.name,
            unix_rfc3339(until)
        );
        if until <= now {
            problems.push(config::Problem::new(
                at,
                format!(
                    "{what} has passed: the CA ignores a record with it; set a later date and \
                     publish the record `renewd persist-record {}` prints then",
                    n.cert.name
                ),
            ));
        } else if until - now < EXPIRY_LEAD.as_secs() as i64 {
            problems.push(config::Problem::warning(
                at,
                format!(
                    "{what} is less than {} days away: set a later date and publish the record \
                     `renewd persist-record {}` prints then",
                    EXPIRY_LEAD.as_secs() / 86_400,
                    n.cert.name
                ),
            ));
        }
    }
    problems
}

/// The account URL `n`'s record must name; none yet (or an unreadable account file) is an
/// error at the certificate's `challenge`: no record can name an account that does not
/// exist, so the certificate cannot be renewed as written.
fn account_of(cfg: &Config, n: &Needed<'_>, label: &str) -> Result<String, config::Problem> {
    let at = n.cert.key_location(&n.rule.key).clone();
    let path = StateDir::open_existing(&cfg.state_dir).account_path(&n.ca.name);
    match crate::acme::account::stored_id(n.ca, &path) {
        Ok(Some(id)) => Ok(id),
        Ok(None) => Err(config::Problem::new(
            at,
            format!(
                "{label}: no account with CA {} yet, so no record names it; `renewd \
                 persist-record {}` registers one and prints the record to publish",
                n.ca.name, n.cert.name
            ),
        )),
        Err(e) => Err(config::Problem::new(at, format!("{label}: {e}"))),
    }
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
    let publish = publish_advice(expected, n.identifier, &n.cert.name, now);
    match persist::judge(found, expected, now) {
        Verdict::Usable {
            persist_until: Some(until),
        } if until - now < EXPIRY_LEAD.as_secs() as i64 => Some(config::Problem::warning(
            at,
            format!(
                "{label}: persistUntil {} is less than {} days away; {publish}",
                unix_rfc3339(until),
                EXPIRY_LEAD.as_secs() / 86_400
            ),
        )),
        Verdict::Usable { .. } => None,
        Verdict::Missing => Some(config::Problem::new(
            at,
            format!("{label} is missing (CA {}); {publish}", n.ca.name),
        )),
        Verdict::Mismatch(why) => Some(config::Problem::new(
            at,
            format!(
                "{label} does not authorize renewd's account at CA {}: {why}; {publish}",
                n.ca.name
            ),
        )),
    }
}

/// What to publish: the expected record, unless the configured `persist_until` is itself
/// past or within [`EXPIRY_LEAD`] (that record would be as dead, or soon): then a later
/// `persist_until` first.
fn publish_advice(expected: &Expected<'_>, identifier: &str, cert: &str, now: i64) -> String {
    match expected.persist_until {
        Some(until) if until - now < EXPIRY_LEAD.as_secs() as i64 => format!(
            "set a later `persist_until` (now {}), then publish the record `renewd \
             persist-record {}` prints",
            unix_rfc3339(until),
            cert
        ),
        _ => format!("publish: {}", expected.zone_line(identifier)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_domain_name_is_matched_as_domains_are_written() {
        for (written, normal) in [
            ("Mixed.Example.ORG", "mixed.example.org"),
            ("example.org.", "example.org"),
            ("bücher.example.net", "xn--bcher-kva.example.net"),
            ("XN--BCHER-KVA.example.net", "xn--bcher-kva.example.net"),
            ("*.Bücher.example.net", "*.xn--bcher-kva.example.net"),
        ] {
            assert_eq!(
                normalize_domain(written).as_deref(),
                Ok(normal),
                "{written}"
            );
        }
        assert!(normalize_domain("a..b").is_err());
    }

    #[test]
    fn the_advice_never_repeats_a_dead_or_dying_persist_until() {
        let now = 1_800_000_000;
        let with =
            |until: i64| Expected::new("example.org", "ca.test", "https://a/1", false, Some(until));
        for until in [now - 1, now + 86_400] {
            let advice = publish_advice(&with(until), "example.org", "www", now);
            assert!(
                advice.starts_with("set a later `persist_until`")
                    && advice.contains("renewd persist-record www")
                    && !advice.contains(&format!("persistUntil={until}")),
                "{advice}"
            );
        }
        let later = now + 90 * 86_400;
        assert_eq!(
            publish_advice(&with(later), "example.org", "www", now),
            format!("publish: {}", with(later).zone_line("example.org"))
        );
    }
}

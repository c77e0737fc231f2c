//! dns-persist-01 and dns-account-01 against a real Pebble 2.10.
//!
//! dns-persist-01: `renewd persist-record` prints the `_validation-persist` records, the test
//! publishes them at Pebble's challtestsrv (its DNS) through the management API, and `run
//! --once` issues a plain and a wildcard certificate with no DNS hook at all; before that,
//! `check` and the renewal itself name what is missing or wrong at `FILE:LINE:COL`.
//! dns-account-01: the account's `_LABEL._acme-challenge` record, through a hook that sets it
//! at challtestsrv, and through RFC 2136 updates to a real BIND.

use crate::common;
use crate::common::rig;

use common::*;
use rig::*;

/// Pebble 2.10's issuer domain name for dns-persist-01 (it advertises none in its
/// directory, so renewd is told).
const PEBBLE_ISSUER: &str = "pebble.letsencrypt.org";

fn fresh_authz() -> PebbleOptions {
    PebbleOptions {
        // Every order validates afresh: a reused authorization would skip the challenge.
        authz_reuse_percent: Some(0),
        ..Default::default()
    }
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Publishes `_validation-persist.DOMAIN. TXT "VALUE"` lines at challtestsrv.
fn publish(rig: &Rig, zone_lines: &str) {
    for line in zone_lines.lines() {
        let (host, value) = line
            .split_once(" TXT ")
            .unwrap_or_else(|| panic!("not a zone-file TXT line: {line}"));
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or_else(|| panic!("unquoted value: {line}"));
        rig.pebble.challtestsrv_post(
            "/set-txt",
            &serde_json::json!({ "host": host, "value": value }),
        );
    }
}

fn sorted_names(rig: &Rig, name: &str) -> Vec<String> {
    let leaf = read_cert_pem(rig.fullchain(name));
    assert_eq!(key_spki(rig.key(name)), leaf.spki, "the key matches");
    let mut names = leaf.names;
    names.sort();
    names
}

/// The `challenge` table of the tests' dns-persist-01 certificates: looked up at
/// challtestsrv, plus `extra` keys.
fn persist_challenge(rig: &Rig, extra: &str) -> String {
    format!(
        "{{ type = \"dns-persist-01\", resolver = \"127.0.0.1:{}\"{extra} }}",
        rig.pebble.dns_port
    )
}

/// The done-when of issue 17: persist-record's lines, published, are all a plain and a
/// wildcard certificate need. Before they are, a wildcard without `policy` is refused as a
/// configuration error, `check` reports the missing and the mismatched (other CA, other
/// account) records at the certificate's `challenge`, and `run --once` fails before asking
/// the CA to validate, naming the record to publish. Afterwards `account rollover-key`
/// keeps the records valid.
#[test]
fn persist_record_published_at_challtestsrv_issues_plain_and_wildcard_without_a_hook() {
    let rig = Rig::new(fresh_authz());
    let config = rig.config_path.display().to_string();
    let issuer = format!("issuer_domain_name = \"{PEBBLE_ISSUER}\"\n");
    wildcard_without_policy_is_a_config_error(&rig, &issuer);

    // Soon-expiring persist_until on the wildcard one: check warns.
    let soon = time::OffsetDateTime::now_utc().date() + time::Duration::days(10);
    rig.write_config(&format!(
        "{issuer}{}{}",
        rig.cert_with("plain", &["persist.test"], &persist_challenge(&rig, ""), ""),
        rig.cert_with(
            "wild",
            &["wild.persist.test", "*.wild.persist.test"],
            &persist_challenge(
                &rig,
                &format!(", policy = \"wildcard\", persist_until = \"{soon}\"")
            ),
            ""
        )
    ));
    let (records, account_url) = persist_record_registers_and_prints(&rig, soon);
    unpublished_and_mismatched_records_are_reported(&rig, &account_url);

    // Published as printed (beside other CAs' records, which are passed over): check is
    // happy but for the soon-expiring one, and run --once issues both.
    for host in ["persist.test", "wild.persist.test"] {
        rig.pebble.challtestsrv_post(
            "/clear-txt",
            &serde_json::json!({"host": format!("_validation-persist.{host}.")}),
        );
    }
    for i in 0..30 {
        rig.pebble.challtestsrv_post(
            "/set-txt",
            &serde_json::json!({"host": "_validation-persist.persist.test.",
                "value": format!("ca{i}.example; accounturi=https://ca{i}.example/acct/{}", "x".repeat(120))}),
        );
    }
    publish(&rig, &records);
    let out = rig.renewd("check", &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("{config}:23:13: warning: certificate wild: dns-persist-01 record _validation-persist.wild.persist.test: persistUntil ")),
        "{}",
        text(&out)
    );
    rig.renewd_ok("run", &["--once"]);
    assert_eq!(sorted_names(&rig, "plain"), ["persist.test"]);
    assert_eq!(
        sorted_names(&rig, "wild"),
        ["*.wild.persist.test", "wild.persist.test"]
    );
    assert!(
        rig.pebble.count_log("set VALID by completed challenge") >= 3,
        "Pebble validated every name:\n{}",
        rig.pebble.log()
    );

    // `account rollover-key` keeps the account URL: the same records, still accepted.
    rig.renewd_ok("account", &["rollover-key"]);
    assert_eq!(
        rig.renewd_ok("persist-record", &["plain", "*.wild.persist.test"]),
        records
    );
    let before = read_cert_pem(rig.fullchain("plain")).serial_hex;
    rig.renewd_ok("renew", &["--force", "plain"]);
    assert_ne!(read_cert_pem(rig.fullchain("plain")).serial_hex, before);
}

/// A wildcard without `policy = "wildcard"`: a configuration error at the domain.
fn wildcard_without_policy_is_a_config_error(rig: &Rig, issuer: &str) {
    rig.write_config(&format!(
        "{issuer}{}",
        rig.cert_with(
            "wild",
            &["wild.persist.test", "*.wild.persist.test"],
            &persist_challenge(rig, ""),
            ""
        )
    ));
    let out = rig.renewd("check", &[]);
    assert_eq!(out.status.code(), Some(78), "{}", text(&out));
    let needle = format!(
        "{}:13:33: wildcard `*.wild.persist.test` with dns-persist-01 needs `policy = \"wildcard\"`",
        rig.config_path.display()
    );
    assert!(text(&out).contains(&needle), "{needle}\n{}", text(&out));
}

/// With no account yet, `persist-record` registers one and prints one line per record (the
/// wildcard's with its policy and persistUntil): the lines, and the account URL in them.
fn persist_record_registers_and_prints(rig: &Rig, soon: time::Date) -> (String, String) {
    let records = rig.renewd_ok("persist-record", &["plain", "*.wild.persist.test"]);
    let lines: Vec<&str> = records.lines().collect();
    assert_eq!(lines.len(), 2, "{records}");
    let accounts = std::fs::read_dir(rig.state_dir.join("accounts"))
        .expect("accounts")
        .count();
    assert!(accounts >= 1, "an account was registered");
    let account_url = lines[0]
        .split("accounturi=")
        .nth(1)
        .and_then(|s| s.split(['"', ';']).next())
        .expect("accounturi")
        .to_string();
    assert_eq!(
        lines[0],
        format!(
            "_validation-persist.persist.test. TXT \"{PEBBLE_ISSUER}; accounturi={account_url}\""
        )
    );
    let until = soon.midnight().assume_utc().unix_timestamp();
    assert_eq!(
        lines[1],
        format!(
            "_validation-persist.wild.persist.test. TXT \"{PEBBLE_ISSUER}; accounturi={account_url}; policy=wildcard; persistUntil={until}\""
        )
    );
    (records, account_url)
}

/// Nothing published: check reports both records at their `challenge` (each certificate
/// cannot be renewed as written: a warning, 78 with --strict) and run --once fails fast.
/// Then another CA's record and another account's: check says which.
fn unpublished_and_mismatched_records_are_reported(rig: &Rig, account_url: &str) {
    let config = rig.config_path.display().to_string();
    let out = rig.renewd("check", &["--strict"]);
    assert_eq!(out.status.code(), Some(78), "{}", text(&out));
    for (line, name) in [(15, "persist.test"), (23, "wild.persist.test")] {
        let needle = format!("{config}:{line}:13: warning: certificate ");
        let found = text(&out).lines().any(|l| {
            l.starts_with(&needle)
                && l.contains(&format!("record _validation-persist.{name} is missing"))
        });
        assert!(found, "{needle} … {name} missing\n{}", text(&out));
    }
    let out = rig.renewd("run", &["--once"]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("dns-persist-01 record _validation-persist.persist.test is not usable: there is no TXT record; publish it as `_validation-persist.persist.test. TXT"),
        "{}",
        text(&out)
    );
    // Forget that failure's backoff, so the next `run --once` tries at once.
    for name in ["plain", "wild"] {
        std::fs::remove_file(rig.state_dir.join(format!("certs/{name}.json"))).expect("record");
    }

    rig.pebble.challtestsrv_post(
        "/set-txt",
        &serde_json::json!({"host": "_validation-persist.persist.test.",
            "value": format!("other-ca.example; accounturi={account_url}")}),
    );
    rig.pebble.challtestsrv_post(
        "/set-txt",
        &serde_json::json!({"host": "_validation-persist.wild.persist.test.",
            "value": format!("{PEBBLE_ISSUER}; accounturi=https://elsewhere.example/acct/9; policy=wildcard")}),
    );
    let out = rig.renewd("check", &["--strict"]);
    assert_eq!(out.status.code(), Some(78), "{}", text(&out));
    let t = text(&out);
    assert!(
        t.contains(&format!("{config}:15:13: warning: certificate plain: dns-persist-01 record _validation-persist.persist.test does not authorize renewd's account at CA pebble: the record names another CA (other-ca.example)")),
        "{t}"
    );
    assert!(
        t.contains(&format!("{config}:23:13: warning: certificate wild: dns-persist-01 record _validation-persist.wild.persist.test does not authorize renewd's account at CA pebble: accounturi is `https://elsewhere.example/acct/9`, another account")),
        "{t}"
    );
}

/// The record in a real authoritative server (BIND) beside 40 other CAs' records, more than
/// a UDP answer may carry: the look-up retries over TCP and finds it, and Pebble validates it
/// there.
#[test]
fn a_persist_record_among_many_at_bind_is_found_over_tcp() {
    let port = free_port();
    let rig = Rig::new(PebbleOptions {
        dns_server: Some(std::net::SocketAddr::from(([127, 0, 0, 1], port))),
        ..fresh_authz()
    });
    rig.write_config(&format!(
        "issuer_domain_name = \"{PEBBLE_ISSUER}\"\n{}",
        rig.cert_with(
            "auth",
            &["www.persist.test"],
            &format!("{{ type = \"dns-persist-01\", resolver = \"127.0.0.1:{port}\" }}"),
            ""
        )
    ));
    let record = rig.renewd_ok("persist-record", &["auth"]);
    let mut zone = String::new();
    for i in 0..40 {
        zone.push_str(&format!(
            "_validation-persist.www IN TXT \"ca{i}.example; accounturi=https://ca{i}.example/acct/{}\"\n",
            "x".repeat(120)
        ));
    }
    zone.push_str(&record.replace(" TXT ", " IN TXT "));
    let _bind = common::bind::Bind::start_with("persist.test", port, &zone);
    rig.renewd_ok("check", &["--strict"]);
    rig.renewd_ok("run", &["--once"]);
    assert_eq!(sorted_names(&rig, "auth"), ["www.persist.test"]);
}

/// The daemon alerts (`persist_record_expiring`, a warning) once the configured
/// `persist_until` is less than 30 days away, before the CA stops accepting the record.
#[test]
fn the_daemon_alerts_before_persist_until_passes() {
    let rig = Rig::new(PebbleOptions::default());
    let log = rig.path("alerts.log");
    let hook = rig.path("page.sh");
    write_exec(
        &hook,
        &format!("cat >> {log}\necho >> {log}\n", log = log.display()),
    );
    let soon = time::OffsetDateTime::now_utc().date() + time::Duration::days(5);
    rig.write_config(&format!(
        "issuer_domain_name = \"{PEBBLE_ISSUER}\"\n{}\n[alert]\ncommand = [\"{}\"]\n",
        rig.cert_with(
            "soon",
            &["soon.persist.test"],
            &format!(
                "{{ type = \"dns-persist-01\", resolver = \"127.0.0.1:{}\", persist_until = \"{soon}\" }}",
                rig.pebble.dns_port
            ),
            ""
        ),
        hook.display()
    ));
    let alerts = || -> Vec<serde_json::Value> {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    };
    let daemon = rig.spawn_daemon();
    wait_until(
        std::time::Duration::from_secs(20),
        "the persist_record_expiring alert",
        || {
            alerts()
                .iter()
                .any(|a| a["condition"] == "persist_record_expiring")
        },
    );
    let all = alerts();
    let alert = all
        .iter()
        .find(|a| a["condition"] == "persist_record_expiring")
        .expect("alert");
    assert_eq!(alert["severity"], "warning", "{alert}");
    assert_eq!(alert["name"], "soon", "{alert}");
    assert_eq!(
        alert["key"], "persist_record_expiring:managed:soon",
        "{alert}"
    );
    let until = soon.midnight().assume_utc();
    let until = until
        .format(&time::format_description::well_known::Rfc3339)
        .expect("format");
    assert!(
        alert["message"]
            .as_str()
            .is_some_and(|m| m.contains(&format!("persistUntil {until} passes"))),
        "{alert}\n{}",
        daemon.log()
    );
}

/// A NAME that is no certificate or domain, or one validated otherwise, is a usage error.
#[test]
fn persist_record_refuses_names_it_cannot_answer_for() {
    let rig = Rig::new(PebbleOptions::default());
    rig.write_config(&rig.cert("web", &["web.test"], ""));
    for (name, needle) in [
        (
            "nope",
            "`nope` is neither a configured certificate nor one of their domains",
        ),
        ("web", "`web` is not validated with dns-persist-01"),
        (
            "web.test",
            "`web.test` is not validated with dns-persist-01",
        ),
    ] {
        let out = rig.renewd("persist-record", &[name]);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        assert!(text(&out).contains(needle), "{}", text(&out));
    }
    assert!(
        !rig.state_dir.join("accounts").exists()
            || std::fs::read_dir(rig.state_dir.join("accounts"))
                .expect("accounts")
                .next()
                .is_none(),
        "no account registered for a refused command"
    );
}

/// dns-account-01 through a hook: the record is the account's own label under
/// `_acme-challenge`, given to the hook as its argument and as `RENEWD_RECORD`.
#[test]
fn dns_account_01_through_the_hook_uses_the_accounts_label() {
    let rig = Rig::new(fresh_authz());
    let inner = rig.path("challtestsrv-hook");
    rig.pebble.write_dns_hook(&inner);
    let log = rig.path("hook.log");
    let hook = rig.path("hook");
    write_exec(
        &hook,
        &format!(
            "echo \"$1 $2 $RENEWD_CHALLENGE $RENEWD_RECORD\" >> {log}\nexec {inner} \"$@\"\n",
            log = log.display(),
            inner = inner.display()
        ),
    );
    rig.write_config(&rig.cert_with(
        "acct",
        &["acct.test", "*.acct.test"],
        &format!(
            "{{ type = \"dns-account-01\", hook = [\"{}\"] }}",
            hook.display()
        ),
        "",
    ));
    rig.renewd_ok("check", &[]);
    rig.renewd_ok("run", &["--once"]);
    assert_eq!(sorted_names(&rig, "acct"), ["*.acct.test", "acct.test"]);
    let calls = lines(&log);
    // One set and one clear per identifier (more if an attempt was retried under load).
    let verb = |v: &str| calls.iter().filter(|c| c.starts_with(v)).count();
    assert!(
        verb("set ") >= 2 && verb("set ") == verb("clear ") && calls.len() == 2 * verb("set "),
        "a set and a clear for each name: {calls:#?}"
    );
    for call in &calls {
        let f: Vec<&str> = call.split(' ').collect();
        let label = f[1]
            .strip_prefix('_')
            .and_then(|r| r.strip_suffix("._acme-challenge.acct.test"))
            .unwrap_or_else(|| panic!("not an account label record: {call}"));
        assert_eq!(label.len(), 16, "{call}");
        assert!(
            label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b)),
            "{call}"
        );
        assert_eq!(f[2], "dns-account-01", "{call}");
        assert_eq!(f[3], f[1], "RENEWD_RECORD is the record: {call}");
    }
}

/// dns-account-01 through RFC 2136 with a real BIND: the signed update adds the value at the
/// account's label, Pebble resolves it there, and it is deleted afterwards.
#[test]
fn dns_account_01_through_rfc2136_with_bind() {
    let bind = common::bind::Bind::start("acct.test");
    let rig = Rig::new(PebbleOptions {
        dns_server: Some(bind.addr),
        ..fresh_authz()
    });
    rig.write_config(&rig.cert_with(
        "acct",
        &["www.acct.test"],
        &format!(
            "{{ type = \"dns-account-01\", rfc2136 = {{ server = \"{}\", tsig_key_file = \"{}\" }} }}",
            bind.addr,
            bind.key_file.display()
        ),
        "",
    ));
    rig.renewd_ok("check", &[]);
    let out = rig.renewd("run", &["--once"]);
    let bind_log = bind.log();
    assert!(out.status.success(), "named's log:\n{bind_log}");
    assert_eq!(sorted_names(&rig, "acct"), ["www.acct.test"]);
    let added = bind_log
        .lines()
        .find_map(|l| {
            let rest = l.split("adding an RR at '").nth(1)?;
            rest.split('\'').next().map(str::to_string)
        })
        .unwrap_or_else(|| panic!("no update added a record:\n{bind_log}"));
    assert!(
        added.starts_with('_') && added.ends_with("._acme-challenge.www.acct.test"),
        "{added}"
    );
    assert_eq!(bind.txt(&added), Vec::<String>::new(), "{added} is gone");
}

/// `persist-record` and `check` from the configuration alone, before any account exists:
/// NAME is matched as `domains` are (case, trailing dot, U-label or A-label); a
/// `persist_until` already past is refused at `FILE:LINE:COL` (exit 78) and reported by
/// `check` there; a CA that advertises no issuer domain name (Pebble) is found out before an
/// account is registered, and `check` reports it at the `challenge`; without an account,
/// `check` counts the certificate as not renewable as written.
#[test]
fn persist_record_and_check_judge_the_configuration_before_any_account() {
    let rig = Rig::new(PebbleOptions::default());
    let domains = ["mixed.example.org", "xn--bcher-kva.example.net"];
    let write = |issuer: &str, until: &str| {
        rig.write_config(&format!(
            "{issuer}{}",
            rig.cert_with(
                "idn",
                &domains,
                &persist_challenge(&rig, &format!(", persist_until = \"{until}\"")),
                ""
            )
        ));
    };
    write("", "2020-01-01");
    let config = std::fs::read_to_string(&rig.config_path).expect("config");
    let (line, col) = config
        .lines()
        .enumerate()
        .find_map(|(i, l)| l.find("\"2020-01-01\"").map(|c| (i + 1, c + 1)))
        .expect("persist_until in the config");
    let at = format!("{}:{line}:{col}: ", rig.config_path.display());
    for name in [
        "Mixed.Example.ORG",
        "mixed.example.org.",
        "bücher.example.net",
        "XN--BCHER-KVA.example.net",
    ] {
        let out = rig.renewd("persist-record", &[name]);
        assert_eq!(out.status.code(), Some(78), "{name}: {}", text(&out));
        let needle = format!(
            "{at}certificate idn: `persist_until` 2020-01-01T00:00:00Z has passed: the CA would \
             ignore a record with it"
        );
        assert!(text(&out).contains(&needle), "{needle}\n{}", text(&out));
    }
    let out = rig.renewd("check", &["--strict"]);
    assert_eq!(out.status.code(), Some(78), "{}", text(&out));
    let t = text(&out);
    assert!(
        t.contains(&format!(
            "{at}warning: certificate idn: `persist_until` 2020-01-01T00:00:00Z has passed"
        )),
        "{t}"
    );
    assert!(
        t.contains("advertises no usable `meta.issuerDomainNames`") && !t.contains("not checked"),
        "{t}"
    );

    // A later date: the missing issuer name fails persist-record before any registration.
    write("", "2099-01-01");
    let out = rig.renewd("persist-record", &["MIXED.example.org"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("advertises no usable `meta.issuerDomainNames`"),
        "{}",
        text(&out)
    );
    let accounts = rig.state_dir.join("accounts");
    assert!(
        !accounts.exists()
            || std::fs::read_dir(&accounts)
                .expect("accounts")
                .next()
                .is_none(),
        "no account registered"
    );

    // With the issuer name: no account yet is counted as what stops renewal.
    write(
        &format!("issuer_domain_name = \"{PEBBLE_ISSUER}\"\n"),
        "2099-01-01",
    );
    let out = rig.renewd("check", &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let t = text(&out);
    let noted = t.matches("no account with CA pebble yet").count();
    assert_eq!(noted, 2, "{t}");
    assert!(
        t.contains("2 warning(s), 1 certificate(s) not renewable as written"),
        "{t}"
    );
}

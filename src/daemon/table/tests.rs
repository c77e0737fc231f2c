//! The certificate table's rules, with the time passed in.

use std::time::Duration;

use super::*;
use crate::renew::{CertFailure, CertOutcome, ReloadOutcome, Renewed};
use crate::schedule::{Decision, Reason};

const NAMES: [&str; 3] = ["a", "b", "c"];

/// The configurations of certificates `a`, `b` and `c`, loaded from a file.
fn certs() -> Vec<std::sync::Arc<CertConfig>> {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut text = String::from(
        "[ca.le]\ndirectory = \"https://acme.example.org/directory\"\naccept_terms = true\n",
    );
    for name in NAMES {
        text.push_str(&format!(
            "\n[[certificate]]\nname = \"{name}\"\ndomains = [\"{name}.example.org\"]\n\
             challenge = {{ type = \"http-01\", webroot = \"/var/www/html\" }}\n\
             files = {{ fullchain = \"/etc/tls/{name}.pem\", key = \"/etc/tls/{name}.key\" }}\n"
        ));
    }
    let path = dir.path().join("renewd.toml");
    std::fs::write(&path, text).expect("write");
    match crate::config::load(&path) {
        Ok(config) => config.certificates,
        Err(e) => panic!("{e}"),
    }
}

fn eval(at: SystemTime, ari_poll: Option<SystemTime>) -> Evaluation {
    Evaluation {
        deployed: Deployed::Valid {
            not_before: at - Duration::from_secs(86400),
            not_after: at + Duration::from_secs(86400),
            missing_names: Vec::new(),
        },
        serial: None,
        spki_sha256: None,
        decision: Decision {
            at,
            reason: Reason::Threshold,
        },
        ari_poll,
        expired: false,
        not_renewable: None,
        ari_enabled: ari_poll.is_some(),
        clamp_warning: None,
        leaf: None,
        record: Default::default(),
    }
}

/// A table of `a`, `b`, `c` due at `now` plus the given offsets (seconds; negative: past).
fn table(now: SystemTime, offsets: [i64; 3], not_renewable: &[&str]) -> Table {
    let at = |o: i64| {
        if o < 0 {
            now - Duration::from_secs(o.unsigned_abs())
        } else {
            now + Duration::from_secs(o.unsigned_abs())
        }
    };
    let evals = NAMES
        .iter()
        .zip(offsets)
        .map(|(n, o)| (n.to_string(), eval(at(o), None)))
        .collect();
    let mut t = Table::new(
        not_renewable
            .iter()
            .map(|n| (n.to_string(), "no webroot".to_string()))
            .collect(),
    );
    t.rebuild(&certs(), evals);
    t
}

fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn due_are_those_past_their_deadline_with_nothing_under_way() {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
    let mut t = table(now, [-10, 100, 0], &[]);
    assert_eq!(t.due(now), names(&["a", "c"]));
    t.start_renewing(&names(&["a"]));
    assert_eq!(
        t.due(now),
        names(&["c"]),
        "a renewing certificate is not due again"
    );
    let _ = t.ask_evaluations(names(&["c"]));
    assert!(
        t.due(now).is_empty(),
        "nor is one whose files are being read"
    );
    assert_eq!(t.due(now + Duration::from_secs(100)), names(&["b"]));

    let t = table(now, [-10, 100, 0], &["a"]);
    assert_eq!(
        t.due(now),
        names(&["c"]),
        "nor one not renewable as configured"
    );
}

#[test]
fn the_next_deadline_is_the_earliest_of_certificates_nothing_is_under_way_for() {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
    let mut t = table(now, [300, 200, 100], &["c"]);
    // c cannot be renewed: it waits for SIGHUP, not for its deadline.
    assert_eq!(t.next_deadline(), Some(now + Duration::from_secs(200)));
    // An ARI re-poll time counts too.
    let poll = now + Duration::from_secs(50);
    t.rebuild(
        &certs(),
        HashMap::from([(
            "a".to_string(),
            eval(now + Duration::from_secs(300), Some(poll)),
        )]),
    );
    assert_eq!(t.next_deadline(), Some(poll));
    t.start_renewing(&names(&["a", "b"]));
    assert_eq!(t.next_deadline(), None);
    assert!(Table::default().next_deadline().is_none());
}

#[test]
fn an_older_evaluation_never_replaces_a_newer_one() {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
    let mut t = table(now, [100, 100, 100], &[]);
    let first = t.ask_evaluations(names(&["a"]));
    let second = t.ask_evaluations(names(&["a", "unknown"]));
    assert_eq!(
        (first.len(), second.len()),
        (1, 1),
        "unknown names are left out"
    );
    let (gen1, gen2) = (first[0].1, second[0].1);
    assert!(gen2 > gen1);
    assert!(t.in_flight());
    let newer = now + Duration::from_secs(7);
    let older = now + Duration::from_secs(9);
    t.apply_evaluations(
        vec![("a".into(), gen1, Some(eval(older, None)))],
        Asked::Files,
        now,
    );
    assert_eq!(t.get("a").map(|e| e.eval.decision.at), Some(older));
    assert!(t.in_flight(), "the newest asked for is not applied yet");
    assert!(t.due(older).is_empty());
    t.apply_evaluations(
        vec![("a".into(), gen2, Some(eval(newer, None)))],
        Asked::Files,
        now,
    );
    t.apply_evaluations(
        vec![("a".into(), gen1, Some(eval(older, None)))],
        Asked::Files,
        now,
    );
    assert_eq!(
        t.get("a").map(|e| e.eval.decision.at),
        Some(newer),
        "stale result dropped"
    );
    assert!(!t.in_flight());
    assert_eq!(t.due(newer), names(&["a"]));
}

#[test]
fn a_finished_batch_updates_its_entries() {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
    let mut t = table(now, [-1, -1, -1], &[]);
    assert_eq!(t.start_renewing(&names(&["a", "b", "c"])).len(), 3);
    assert!(t.status_line(now).contains("3 renewing"));
    let ok = |name: &str| CertOutcome {
        name: name.into(),
        result: Ok(Renewed {
            ca: "le".into(),
            serial: "01".into(),
            not_after: now + Duration::from_secs(90 * 86400),
            order_url: String::new(),
            deployed_sha256: None,
        }),
    };
    let report = BatchReport {
        certificates: vec![
            ok("a"),
            CertOutcome {
                name: "b".into(),
                result: Err(CertFailure::RolledBack("the CA said no".into())),
            },
            ok("c"),
        ],
        // c's reload failed: c counts as failed.
        reloads: vec![ReloadOutcome {
            argv: vec!["reload".into()],
            certificates: names(&["c"]),
            result: Err(std::sync::Arc::new(crate::hooks::HookError::Failed {
                argv0: "reload".into(),
                status: Some(1),
                stderr_tail: String::new(),
            })),
        }],
    };
    let counts = t.finish_batch(&report, false, now);
    assert_eq!(
        counts,
        vec![
            Count::Renewal("a".into(), true),
            Count::Renewal("b".into(), false),
            Count::Renewal("c".into(), false),
            Count::Reload(false),
        ]
    );
    let seen = |t: &Table, n: &str| {
        t.get(n)
            .map(|e| (e.renewing, e.failures_seen, e.last_failure_seen))
    };
    assert_eq!(seen(&t, "a"), Some((false, 0, None)));
    assert_eq!(seen(&t, "b"), Some((false, 1, Some(now))));
    assert_eq!(seen(&t, "c"), Some((false, 1, Some(now))));
    assert!(t.status_line(now).contains("2 failing"));

    // A dry run counts nothing and leaves the failures as they were.
    t.start_renewing(&names(&["b"]));
    let dry = BatchReport {
        certificates: vec![ok("b")],
        reloads: Vec::new(),
    };
    assert!(t.finish_batch(&dry, true, now).is_empty());
    assert_eq!(seen(&t, "b"), Some((false, 1, Some(now))));
}

#[test]
fn the_status_line_is_coarse() {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
    assert_eq!(relative(now, now), "now");
    assert_eq!(relative(now - Duration::from_secs(5), now), "now");
    assert_eq!(relative(now + Duration::from_secs(90), now), "in 90s");
    assert_eq!(relative(now + Duration::from_secs(3 * 86400), now), "in 3d");
    let t = table(now, [3600 * 5, 100, 200], &["b"]);
    assert_eq!(
        t.status_line(now),
        "3 certificates, next: c in 3m, 1 not renewable"
    );
}

#[test]
fn a_revoke_is_refused_while_renewing_or_not_renewable() {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
    let mut t = table(now, [100, 100, 100], &["c"]);
    assert_eq!(t.start_revoke("x"), Err(RevokeRefused::Unknown("x".into())));
    assert_eq!(t.start_revoke("a").map(|c| c.name), Ok("a".to_string()));
    assert!(t.get("a").is_some_and(|e| e.renewing));
    assert_eq!(
        t.start_revoke("a").map_err(|e| e.to_string()),
        Err("a: a renewal is under way; try again when it is done".to_string())
    );
    assert!(matches!(
        t.start_revoke("c"),
        Err(RevokeRefused::NotRenewable { .. })
    ));
}

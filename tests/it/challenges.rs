//! Every challenge type against a real Pebble: dns-01 through a hook (wildcards, the record
//! cleared also when validation fails), tls-alpn-01 through the built-in listener, IP
//! address identifiers, and one certificate mixing challenges per name.
//!
//! The dns-01 hook used here logs each call and then sets or clears the TXT record in the
//! test's pebble-challtestsrv (Pebble's DNS) with curl.

use crate::common;
use crate::common::rig;

use common::*;
use rig::*;

fn fresh_authz() -> PebbleOptions {
    PebbleOptions {
        // Every order validates afresh: a reused authorization would skip the challenge.
        authz_reuse_percent: Some(0),
        ..Default::default()
    }
}

/// A dns-01 hook that appends `ACTION RECORD VALUE NAME DOMAINS` to `log` and then runs
/// the harness's challtestsrv hook, unless `set_value` overrides the value it publishes.
fn logging_dns_hook(
    rig: &Rig,
    set_value: Option<&str>,
) -> (std::path::PathBuf, std::path::PathBuf) {
    let inner = rig.path("challtestsrv-hook");
    rig.pebble.write_dns_hook(&inner);
    let log = rig.path("dns-hook.log");
    let hook = rig.path("dns-hook");
    let value = match set_value {
        Some(v) => format!("\"{v}\""),
        None => "\"$3\"".to_string(),
    };
    write_exec(
        &hook,
        &format!(
            "echo \"$1 $2 $3 $RENEWD_NAME $RENEWD_DOMAINS\" >> {log}\n\
             if [ \"$1\" = set ]; then exec {inner} set \"$2\" {value}; fi\n\
             exec {inner} \"$@\"\n",
            log = log.display(),
            inner = inner.display(),
        ),
    );
    (hook, log)
}

fn cert_block(rig: &Rig, name: &str, domains: &[&str], challenge: &str) -> String {
    rig.cert_with(name, domains, challenge, "")
}

fn sorted_names(rig: &Rig, name: &str) -> Vec<String> {
    let leaf = read_cert_pem(rig.fullchain(name));
    assert_eq!(key_spki(rig.key(name)), leaf.spki, "the key matches");
    let mut names = leaf.names;
    names.sort();
    names
}

#[test]
fn wildcard_certificate_through_the_dns_hook_sets_then_clears_every_record() {
    let rig = Rig::new(fresh_authz());
    let (hook, log) = logging_dns_hook(&rig, None);
    rig.write_config(&cert_block(
        &rig,
        "wild",
        &["wild.test", "*.wild.test"],
        &format!(
            "{{ type = \"dns-01\", hook = [\"{}\"], propagation_wait = \"1s\" }}",
            hook.display()
        ),
    ));
    rig.renewd_ok("check", &[]);
    rig.renewd_ok("run", &["--once"]);

    assert_eq!(sorted_names(&rig, "wild"), ["*.wild.test", "wild.test"]);
    let calls = lines(&log);
    assert_eq!(calls.len(), 4, "two sets, two clears: {calls:#?}");
    let (sets, clears): (Vec<&String>, Vec<&String>) =
        calls.iter().partition(|c| c.starts_with("set "));
    assert_eq!(sets.len(), 2, "{calls:#?}");
    assert!(
        calls[..2].iter().all(|c| c.starts_with("set ")),
        "every record is set before any is cleared: {calls:#?}"
    );
    for call in &calls {
        let f: Vec<&str> = call.split(' ').collect();
        assert_eq!(f[1], "_acme-challenge.wild.test", "{call}");
        assert_eq!(f[2].len(), 43, "base64url SHA-256: {call}");
        assert_eq!(f[3], "wild", "RENEWD_NAME: {call}");
        assert_eq!(f[4], "wild.test,*.wild.test", "RENEWD_DOMAINS: {call}");
    }
    // Each value set is cleared with the same value.
    let mut set_values: Vec<&str> = sets.iter().map(|c| c.split(' ').nth(2).unwrap()).collect();
    let mut clear_values: Vec<&str> = clears
        .iter()
        .map(|c| c.split(' ').nth(2).unwrap())
        .collect();
    set_values.sort();
    clear_values.sort();
    assert_eq!(set_values, clear_values);
    assert_ne!(set_values[0], set_values[1], "one value per authorization");
}

#[test]
fn a_failed_dns_validation_clears_the_record_and_reports_the_cas_problem() {
    let rig = Rig::new(fresh_authz());
    // The hook publishes a wrong value: Pebble finds the record but not the answer.
    let (hook, log) = logging_dns_hook(&rig, Some("wrong-value"));
    rig.write_config(&cert_block(
        &rig,
        "bad",
        &["*.bad.test"],
        &format!("{{ type = \"dns-01\", hook = [\"{}\"] }}", hook.display()),
    ));
    let out = rig.renewd("run", &["--once"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("validation of *.bad.test failed"), "{err}");
    assert!(err.contains("unauthorized"), "the problem type: {err}");
    assert!(!rig.fullchain("bad").exists());

    let calls = lines(&log);
    assert_eq!(calls.len(), 2, "{calls:#?}");
    assert!(calls[0].starts_with("set _acme-challenge.bad.test "));
    assert!(calls[1].starts_with("clear _acme-challenge.bad.test "));
    assert_eq!(calls[0].split(' ').nth(2), calls[1].split(' ').nth(2));

    let json = rig.renewd_ok("status", &["--json"]);
    let rows: serde_json::Value = serde_json::from_str(&json).unwrap();
    let last = rows[0]["last_result"].as_str().unwrap();
    assert!(last.contains("*.bad.test"), "{last}");
    assert!(last.contains("unauthorized"), "{last}");
}

#[test]
fn a_failing_set_hook_is_cleared_and_reported() {
    let rig = Rig::new(fresh_authz());
    let log = rig.path("dns-hook.log");
    let hook = rig.path("dns-hook");
    write_exec(
        &hook,
        &format!(
            "echo \"$1 $2\" >> {}\n[ \"$1\" = clear ] || {{ echo 'zone is read-only' >&2; exit 3; }}\n",
            log.display()
        ),
    );
    rig.write_config(&cert_block(
        &rig,
        "ro",
        &["ro.test"],
        &format!("{{ type = \"dns-01\", hook = [\"{}\"] }}", hook.display()),
    ));
    let out = rig.renewd("run", &["--once"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("zone is read-only"), "{err}");
    assert_eq!(
        lines(&log),
        [
            "set _acme-challenge.ro.test",
            "clear _acme-challenge.ro.test"
        ]
    );
}

#[test]
fn tls_alpn01_certificate_through_the_built_in_listener() {
    let rig = Rig::new(fresh_authz());
    rig.write_config(&cert_block(
        &rig,
        "alpn",
        &["alpn.test", "www.alpn.test"],
        &format!(
            "{{ type = \"tls-alpn-01\", listen = \"127.0.0.1:{}\" }}",
            rig.pebble.tls_port
        ),
    ));
    rig.renewd_ok("run", &["--once"]);
    assert_eq!(sorted_names(&rig, "alpn"), ["alpn.test", "www.alpn.test"]);
    // The listener is gone once the order is decided.
    assert!(std::net::TcpStream::connect(("127.0.0.1", rig.pebble.tls_port)).is_err());
}

#[test]
fn ip_address_certificates_over_http01_and_tls_alpn01() {
    let rig = Rig::new(fresh_authz());
    let http = cert_block(
        &rig,
        "ip-http",
        &["127.0.0.1"],
        &format!(
            "{{ type = \"http-01\", listen = \"127.0.0.1:{}\" }}",
            rig.pebble.http_port
        ),
    );
    let alpn = cert_block(
        &rig,
        "ip-alpn",
        &["127.0.0.1", "ip.test"],
        &format!(
            "{{ type = \"tls-alpn-01\", listen = \"127.0.0.1:{}\" }}",
            rig.pebble.tls_port
        ),
    );
    rig.write_config(&format!("{http}{alpn}"));
    rig.renewd_ok("run", &["--once"]);
    assert_eq!(sorted_names(&rig, "ip-http"), ["127.0.0.1"]);
    assert_eq!(sorted_names(&rig, "ip-alpn"), ["127.0.0.1", "ip.test"]);
    // Coverage (IP SANs included) is checked: a second pass finds nothing to do.
    let before = rig.pebble.count_log(Pebble::ORDER_CREATED_LOG);
    rig.renewd_ok("run", &["--once"]);
    assert_eq!(rig.pebble.count_log(Pebble::ORDER_CREATED_LOG), before);
}

#[test]
fn one_certificate_mixing_challenges_per_name() {
    let rig = Rig::new(fresh_authz());
    let (hook, log) = logging_dns_hook(&rig, None);
    let challenge = format!(
        r#"{{ "*.mix.test" = {{ type = "dns-01", hook = ["{hook}"] }}, "mix.test" = {{ type = "http-01", listen = "127.0.0.1:{http}" }}, "*" = {{ type = "tls-alpn-01", listen = "127.0.0.1:{tls}" }} }}"#,
        hook = hook.display(),
        http = rig.pebble.http_port,
        tls = rig.pebble.tls_port,
    );
    rig.write_config(&cert_block(
        &rig,
        "mix",
        &["mix.test", "*.mix.test", "other.test", "127.0.0.1"],
        &challenge,
    ));
    rig.renewd_ok("check", &[]);
    let out = rig.renewd("run", &["--once"]);
    assert!(out.status.success());
    assert_eq!(
        sorted_names(&rig, "mix"),
        ["*.mix.test", "127.0.0.1", "mix.test", "other.test"]
    );
    // Each name was answered by its own entry's challenge...
    let err = String::from_utf8_lossy(&out.stderr);
    for (identifier, kind) in [
        ("*.mix.test", "dns-01"),
        ("mix.test", "http-01"),
        ("other.test", "tls-alpn-01"),
        ("127.0.0.1", "tls-alpn-01"),
    ] {
        assert!(
            err.contains(&format!(
                "answering challenge ca=pebble identifier={identifier} challenge=\"{kind}\""
            )),
            "{identifier} through {kind}: {err}"
        );
    }
    // ... and the CA looked there: the IP address by its reverse-DNS name (RFC 8738 §6).
    assert!(err.contains("tls-alpn-01 handshake sni=1.0.0.127.in-addr.arpa acme=true found=true"));
    assert!(err.contains("tls-alpn-01 handshake sni=other.test acme=true found=true"));
    assert!(err.contains("http-01 request"));
    // Only the wildcard went through DNS.
    let calls = lines(&log);
    assert_eq!(calls.len(), 2, "{calls:#?}");
    assert!(calls[0].starts_with("set _acme-challenge.mix.test "));
    assert!(calls[1].starts_with("clear _acme-challenge.mix.test "));
}

#[test]
fn check_rejects_a_wildcard_with_another_challenge_and_an_uncovered_name() {
    let rig = Rig::new(fresh_authz());
    let text = cert_block(
        &rig,
        "w",
        &["*.w.test", "x.test"],
        r#"{ "*.w.test" = { type = "http-01", listen = "127.0.0.1:80" } }"#,
    );
    rig.write_config(&text);
    let out = rig.renewd("check", &[]);
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    let config = rig.config_path.display().to_string();
    // The certificate block starts after the base configuration's lines.
    let line = rig.base_config().lines().count() + 4;
    assert!(
        err.contains(&format!(
            "{config}:{line}:12: wildcard `*.w.test` needs a dns-01 challenge, not http-01"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{config}:{line}:24: no entry of `challenge` covers `x.test`"
        )),
        "{err}"
    );
}

/// RFC 2136 against a real BIND: the zone is found by SOA lookup, the TXT values are added
/// with TSIG-signed updates, Pebble resolves them through that named, and they are deleted
/// afterwards. Then the key is taken from `$CREDENTIALS_DIRECTORY` instead, and a wrong key
/// is refused with the server's words.
#[test]
fn rfc2136_through_a_real_bind_with_tsig_leaves_no_record_behind() {
    let bind = common::bind::Bind::start("rfc.test");
    let rig = Rig::new(PebbleOptions {
        dns_server: Some(bind.addr),
        ..fresh_authz()
    });
    let challenge = |key: &str| {
        format!(
            "{{ type = \"dns-01\", rfc2136 = {{ server = \"{}\"{key} }} }}",
            bind.addr
        )
    };
    let with_file = format!(", tsig_key_file = \"{}\"", bind.key_file.display());
    rig.write_config(&cert_block(
        &rig,
        "rfc",
        &["rfc.test", "*.rfc.test", "www.sub.rfc.test"],
        &challenge(&with_file),
    ));
    rig.renewd_ok("check", &[]);
    let out = rig.renewd("run", &["--once"]);
    let bind_log = bind.log();
    assert!(out.status.success(), "named's log:\n{bind_log}");
    assert_eq!(
        sorted_names(&rig, "rfc"),
        ["*.rfc.test", "rfc.test", "www.sub.rfc.test"]
    );
    // named saw signed updates adding and then deleting each value.
    for record in [
        "_acme-challenge.rfc.test",
        "_acme-challenge.www.sub.rfc.test",
    ] {
        assert!(
            bind_log.contains(&format!("adding an RR at '{record}' TXT")),
            "{bind_log}"
        );
        assert!(
            bind_log.contains(&format!("deleting an RR at {record} TXT"))
                || bind_log.contains(&format!("deleting an RR at '{record}' TXT"))
                || bind_log.contains(&format!("deleting rrset at '{record}' TXT")),
            "{bind_log}"
        );
        assert_eq!(bind.txt(record), Vec::<String>::new(), "{record} is gone");
    }
    assert!(
        bind_log.contains(&format!("signer \"{}\"", common::bind::KEY_NAME))
            || bind_log.contains(common::bind::KEY_NAME),
        "{bind_log}"
    );
    // The secret never reaches renewd's output.
    let key_text = std::fs::read_to_string(&bind.key_file).unwrap();
    let secret = key_text
        .split('"')
        .nth(3)
        .expect("secret in tsig-keygen's output");
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!all.contains(secret));

    // The key through systemd's credentials directory.
    let creds = rig.path("credentials");
    std::fs::create_dir_all(&creds).unwrap();
    std::fs::copy(&bind.key_file, creds.join("tsig.key")).unwrap();
    rig.write_config(&cert_block(&rig, "rfc", &["cred.rfc.test"], &challenge("")));
    let out = std::process::Command::new(renewd_bin())
        .args(["renew", "--config"])
        .arg(&rig.config_path)
        .args(["--force", "rfc"])
        .env("CREDENTIALS_DIRECTORY", &creds)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\nnamed:\n{}",
        String::from_utf8_lossy(&out.stderr),
        bind.log()
    );
    assert_eq!(sorted_names(&rig, "rfc"), ["cred.rfc.test"]);
    assert_eq!(
        bind.txt("_acme-challenge.cred.rfc.test"),
        Vec::<String>::new()
    );

    // A key named right but with another secret: named refuses, renewd says so.
    let wrong = rig.path("wrong.key");
    write_file(
        &wrong,
        format!(
            "key \"{}\" {{ algorithm hmac-sha256; secret \"{}\"; }};\n",
            common::bind::KEY_NAME,
            "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
        ),
    );
    rig.write_config(&cert_block(
        &rig,
        "rfc",
        &["bad.rfc.test"],
        &challenge(&format!(", tsig_key_file = \"{}\"", wrong.display())),
    ));
    let out = rig.renewd("renew", &["--force", "rfc"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("dns-01 through RFC 2136"), "{err}");
    assert!(err.contains("failed TSIG verification"), "{err}");
    assert!(
        !err.contains("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="),
        "{err}"
    );
    assert_eq!(
        bind.txt("_acme-challenge.bad.rfc.test"),
        Vec::<String>::new()
    );
}

/// Runs `argv` as `nobody` (setpriv): the hostile owner of a webroot.
fn as_nobody(argv: &[&str]) {
    let status = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .args(argv)
        .status()
        .expect("run setpriv");
    assert!(status.success(), "as nobody: {argv:?}: {status}");
}

/// A webroot belonging to `nobody`, who plants a symlink at `.well-known` (then, with a
/// real `.well-known`, at `acme-challenge`) pointing to a stand-in for `/etc/sudoers.d`.
/// renewd, as root, must neither create the answer nor a directory there: without
/// `trust_owner` the webroot is refused for its owner (by `check` too), with it the
/// symlink is refused; the renewal fails and says why.
#[test]
fn a_symlink_planted_in_a_webroot_by_its_owner_is_never_written_through() {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "needs root (to run renewd as root and the attacker as nobody)"
    );
    let rig = Rig::new(fresh_authz());
    let victim = rig.path("sudoers.d");
    std::fs::create_dir(&victim).unwrap();
    let webroot = rig.path("www");
    std::fs::create_dir(&webroot).unwrap();
    std::os::unix::fs::chown(&webroot, Some(65534), Some(65534)).unwrap();
    let _server = StaticServer::start(&webroot, rig.pebble.http_port);
    let web = webroot.display().to_string();
    let link = format!("{web}/.well-known");
    as_nobody(&["ln", "-s", &victim.display().to_string(), &link]);
    let config = |trust: &str| {
        let cert = rig.cert("site", &["site.test"], "").replace(
            &format!("listen = \"127.0.0.1:{}\"", rig.pebble.http_port),
            &format!("webroot = \"{web}\"{trust}"),
        );
        rig.write_config(&cert);
    };
    let victim_entries = || std::fs::read_dir(&victim).unwrap().count();
    // Each attempt starts afresh, not held back by the previous failure's backoff.
    let run_once = || {
        let _ = std::fs::remove_dir_all(&rig.state_dir);
        rig.renewd("run", &["--once"])
    };

    config("");
    // It stops this certificate only: a warning, which --strict makes a failure.
    let out = rig.renewd("check", &["--strict"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(78), "check: {stdout}");
    assert!(stdout.contains("trust_owner"), "check says why: {stdout}");
    let out = rig.renewd("run", &["--once"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("refusing the http-01 webroot"), "{stderr}");
    assert_eq!(victim_entries(), 0, "nothing created through the link");

    config(", trust_owner = true");
    for (attempt, link) in [
        (".well-known", link.clone()),
        (
            "acme-challenge",
            format!("{web}/.well-known/acme-challenge"),
        ),
    ] {
        let out = run_once();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{attempt}");
        assert!(stderr.contains("is a symlink"), "{attempt}: {stderr}");
        assert_eq!(
            victim_entries(),
            0,
            "{attempt}: nothing created through the link"
        );
        if attempt == ".well-known" {
            as_nobody(&["rm", &link]);
            as_nobody(&["mkdir", "-m", "0755", &link]);
            as_nobody(&[
                "ln",
                "-s",
                &victim.display().to_string(),
                &format!("{link}/acme-challenge"),
            ]);
        }
    }

    // The link gone, the trusted webroot works, and the web server (not root) can read it.
    as_nobody(&["rm", &format!("{web}/.well-known/acme-challenge")]);
    assert!(run_once().status.success());
    assert!(rig.fullchain("site").exists());
    assert_eq!(victim_entries(), 0);
}

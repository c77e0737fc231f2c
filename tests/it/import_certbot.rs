//! `renewd import certbot` against lineages real certbot 5 made at the test's Pebble (one
//! `--webroot`, one `--standalone` with a `--deploy-hook`): the output passes `check`,
//! `run --once` renews nothing, `status` lists both with certbot's serials, and a forced
//! renewal deploys into certbot's `live/` paths (symlinks into `archive/`) without losing
//! anything in `archive/`. Plus the refusals: a malformed renewal file named by line, an
//! existing output kept without `--force`.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::common::certbot::Certbot;
use crate::common::rig::{mode, Rig};
use crate::common::{key_spki, read_cert_pem, renewd_bin, Pebble, PebbleOptions, StaticServer};

/// Every file in `dir` with its bytes (certbot's `archive/NAME/`).
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("list {}: {e}", dir.display()))
        .map(|e| {
            let e = e.expect("entry");
            let bytes = fs::read(e.path()).expect("read archive file");
            (e.file_name().to_string_lossy().into_owned(), bytes)
        })
        .collect()
}

/// `status --json`'s serial per certificate name.
fn serials(rig: &Rig) -> BTreeMap<String, String> {
    let out = rig.renewd_ok("status", &["--json"]);
    let rows: serde_json::Value = serde_json::from_str(&out).expect("status JSON");
    rows.as_array()
        .expect("status rows")
        .iter()
        .map(|r| {
            let name = r["name"].as_str().expect("name").to_string();
            (name, r["serial"].as_str().unwrap_or("(none)").to_string())
        })
        .collect()
}

/// Pebble for certbot: certificates as long-lived as real ones (nothing is due by any
/// measure), and no deliberate `badNonce` rejections — certbot retries one, not two in a
/// row, and certbot's retries are not what these tests are about.
fn certbot_pebble() -> PebbleOptions {
    PebbleOptions {
        validity_secs: 90 * 86_400,
        nonce_reject_percent: Some(0),
        ..PebbleOptions::default()
    }
}

#[test]
fn certbot_lineages_are_adopted_and_a_renewal_deploys_into_their_live_paths() {
    let rig = Rig::new(certbot_pebble());
    fs::set_permissions(rig.dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
    let cb = Certbot::new(rig.dir.path(), &rig.pebble);
    let port = rig.pebble.http_port.to_string();
    let hook_out = rig.path("deploy-hook.out");
    // Standalone first: certbot binds Pebble's http-01 port itself.
    let hook = format!("echo \"$RENEWED_LINEAGE\" >> {}", hook_out.display());
    cb.certonly(
        "standalone",
        &[
            "--standalone",
            "--http-01-address",
            "127.0.0.1",
            "--http-01-port",
            &port,
        ]
        .into_iter()
        .chain(["--key-type", "ecdsa", "--elliptic-curve", "secp384r1"])
        .chain(["-d", "s.test", "--deploy-hook", &hook])
        .collect::<Vec<_>>(),
    );
    let www = rig.path("www");
    fs::create_dir_all(&www).expect("mkdir www");
    {
        let _served = StaticServer::start(&www, rig.pebble.http_port);
        let www = www.display().to_string();
        cb.certonly(
            "webroot",
            &["--webroot", "-w", &www, "-d", "a.test", "-d", "www.a.test"]
                .into_iter()
                .chain(["--key-type", "rsa", "--rsa-key-size", "3072"])
                .chain(["--preferred-chain", "Pebble Root CA", "--reuse-key"])
                .collect::<Vec<_>>(),
        );
    }
    let certbot_serial = |name: &str| read_cert_pem(cb.live(name, "cert.pem")).serial_hex;
    let before: BTreeMap<String, String> = ["standalone", "webroot"]
        .into_iter()
        .map(|n| (n.to_string(), certbot_serial(n)))
        .collect();

    rig.write_config("");
    let conf_d = rig.path("conf.d");
    fs::create_dir_all(&conf_d).expect("mkdir conf.d");
    let output = conf_d.join("certbot.toml");
    let certbot_dir = cb.config_dir.display().to_string();
    let out_arg = output.display().to_string();
    let imported = rig.renewd(
        "import",
        &[
            "certbot",
            "--certbot-dir",
            &certbot_dir,
            "--output",
            &out_arg,
        ],
    );
    assert!(
        imported.status.success(),
        "import failed: {}",
        imported.status
    );
    let said = String::from_utf8_lossy(&imported.stderr);
    assert!(said.contains("imported 2 certbot lineages"), "{said}");
    assert!(
        said.contains("systemctl disable --now certbot.timer"),
        "{said}"
    );
    assert!(said.contains("/etc/cron.d/certbot"), "{said}");
    let toml = fs::read_to_string(&output).expect("output written");
    for want in [
        "key_type = \"ecdsa-p384\"",
        "key_type = \"rsa-3072\"",
        &format!("listen = \"127.0.0.1:{port}\""),
        &format!("webroot = \"{}\"", www.display()),
        "ca = [\"pebble\"]",
        "reuse_key = true",
        "preferred_chain = \"Pebble Root CA\"",
        "\"sh\", \"-c\"",
        &format!(
            "RENEWED_LINEAGE={}",
            cb.config_dir.join("live/standalone").display()
        ),
    ] {
        assert!(toml.contains(want), "no `{want}` in:\n{toml}");
    }

    let check = rig.renewd("check", &[]);
    assert!(check.status.success(), "check refused the import");
    let check_text =
        String::from_utf8_lossy(&check.stdout) + String::from_utf8_lossy(&check.stderr);
    assert!(
        check_text.contains("0 certificate(s) not renewable"),
        "{check_text}"
    );

    let issued = rig.pebble.count_log(Pebble::CERT_ISSUED_LOG);
    let orders = rig.pebble.count_log(Pebble::NEW_ORDER_LOG);
    rig.renewd_ok("run", &["--once"]);
    assert_eq!(
        rig.pebble.count_log(Pebble::NEW_ORDER_LOG),
        orders,
        "run --once ordered"
    );
    assert_eq!(rig.pebble.count_log(Pebble::CERT_ISSUED_LOG), issued);
    assert_eq!(serials(&rig), before, "status shows certbot's certificates");
    let table = rig.renewd_ok("status", &[]);
    for (name, serial) in &before {
        assert!(
            table.contains(&format!("{name}\n"))
                && table.contains(&format!("  serial:     {serial}\n")),
            "status names {name} with certbot's serial {serial}:\n{table}"
        );
    }
    for name in ["standalone", "webroot"] {
        assert!(
            fs::symlink_metadata(cb.live(name, "cert.pem"))
                .expect("live cert")
                .file_type()
                .is_symlink(),
            "run --once left certbot's {name} links alone"
        );
    }

    // A forced renewal replaces the links in live/ by the new files; archive/ stays whole.
    let archive = cb.config_dir.join("archive/standalone");
    let archived = snapshot(&archive);
    let renewed = rig.renewd("renew", &["--force", "standalone"]);
    assert!(
        renewed.status.success(),
        "renew --force: {}",
        renewed.status
    );
    let log = String::from_utf8_lossy(&renewed.stderr);
    let said = format!(
        "standalone: {} was certbot's link to ../../archive/standalone/privkey1.pem; it is \
         replaced by the new file",
        cb.live("standalone", "privkey.pem").display()
    );
    assert!(log.contains(&said), "no `{said}` in:\n{log}");
    assert_eq!(rig.pebble.count_log(Pebble::CERT_ISSUED_LOG), issued + 1);
    let leaf = read_cert_pem(cb.live("standalone", "cert.pem"));
    assert_ne!(
        leaf.serial_hex, before["standalone"],
        "a new certificate is deployed"
    );
    assert_eq!(read_cert_pem(cb.live("standalone", "fullchain.pem")), leaf);
    assert_eq!(key_spki(cb.live("standalone", "privkey.pem")), leaf.spki);
    assert_eq!(mode(&cb.live("standalone", "privkey.pem")), 0o600);
    for file in ["cert.pem", "chain.pem", "fullchain.pem", "privkey.pem"] {
        let meta = fs::symlink_metadata(cb.live("standalone", file)).expect("live file");
        assert!(
            meta.file_type().is_file(),
            "live/standalone/{file} is a regular file now"
        );
    }
    assert_eq!(snapshot(&archive), archived, "archive/ is untouched");
    let now = serials(&rig);
    assert_eq!(now["standalone"], leaf.serial_hex);
    assert_eq!(now["webroot"], before["webroot"]);
    // certbot ran the deploy hook once at issuance; renewd ran it again, with its variables.
    let lineage = cb.config_dir.join("live/standalone").display().to_string();
    let hook_lines = fs::read_to_string(&hook_out).expect("hook output");
    assert_eq!(hook_lines.lines().collect::<Vec<_>>(), [&lineage, &lineage]);
}

/// `renewd import certbot --config CFG ARGS...` with a minimal configuration beside `dir`.
fn import(dir: &Path, args: &[&str]) -> Output {
    let cfg = dir.join("renewd.toml");
    if !cfg.exists() {
        fs::write(&cfg, format!("state_dir = \"{}/state\"\n", dir.display())).expect("config");
    }
    let out = Command::new(renewd_bin())
        .args(["import", "certbot", "--config"])
        .arg(&cfg)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run renewd");
    eprintln!(
        "--- renewd import {args:?}: {}\n--- stdout:\n{}--- stderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A lineage by hand, as certbot writes it, whose certificate is not on disk (the domains
/// come from `[[webroot_map]]`).
fn fake_lineage(certbot: &Path, name: &str, extra: &str) {
    let live = certbot.join("live").join(name);
    let text = format!(
        "version = 5.8.0\narchive_dir = {a}\ncert = {l}/cert.pem\nprivkey = {l}/privkey.pem\n\
         chain = {l}/chain.pem\nfullchain = {l}/fullchain.pem\n{extra}\
         [renewalparams]\nauthenticator = webroot\nwebroot_path = /var/www/html,\n\
         server = https://127.0.0.1:9/dir\n[[webroot_map]]\n{name}.test = /var/www/html\n",
        a = certbot.join("archive").join(name).display(),
        l = live.display(),
    );
    crate::common::write_file(certbot.join("renewal").join(format!("{name}.conf")), text);
}

#[test]
fn a_malformed_renewal_file_is_named_by_line_and_nothing_is_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certbot = dir.path().join("letsencrypt");
    fake_lineage(&certbot, "good", "");
    fake_lineage(&certbot, "bad", "this line is not configobj\n");
    let output = dir.path().join("certbot.toml");
    let out = import(
        dir.path(),
        &[
            "--certbot-dir",
            &certbot.display().to_string(),
            "--output",
            &output.display().to_string(),
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(78),
        "a malformed certbot file is bad configuration"
    );
    let said = String::from_utf8_lossy(&out.stderr);
    let bad = certbot.join("renewal/bad.conf");
    assert!(
        said.contains(&format!("{}:7: expected `key = value`", bad.display())),
        "{said}"
    );
    assert!(
        !output.exists(),
        "nothing is written when a lineage cannot be read"
    );
}

#[test]
fn an_existing_output_is_kept_unless_forced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certbot = dir.path().join("letsencrypt");
    fake_lineage(&certbot, "one", "renew_before_expiry = 30 days\n");
    let output = dir.path().join("certbot.toml");
    fs::write(&output, "# mine\n").expect("write");
    let args = [
        "--certbot-dir",
        &certbot.display().to_string(),
        "--output",
        &output.display().to_string(),
    ];
    let out = import(dir.path(), &args);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a taken --output is a bad command line"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
    let missing = dir.path().join("no-such-dir").display().to_string();
    let out = import(dir.path(), &["--certbot-dir", &missing]);
    assert_eq!(out.status.code(), Some(2), "a wrong --certbot-dir too");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is --certbot-dir certbot's directory?"),
        "{out:?}"
    );
    assert_eq!(fs::read_to_string(&output).expect("read"), "# mine\n");

    let out = import(dir.path(), &[&args[..], &["--force"]].concat());
    assert!(out.status.success());
    let toml = fs::read_to_string(&output).expect("read");
    assert!(
        toml.contains("name = \"one\"") && toml.contains("renew_before = \"30d\""),
        "{toml}"
    );
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("domains taken from [[webroot_map]]"),
        "{said}"
    );
    // Standard output when no --output is given.
    let out = import(
        dir.path(),
        &["--certbot-dir", &certbot.display().to_string()],
    );
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), toml);
}

#[test]
fn manual_dns_hooks_carry_over_and_a_dns_plugin_becomes_a_stub_that_check_reports() {
    let rig = Rig::new(certbot_pebble());
    fs::set_permissions(rig.dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
    let cb = Certbot::new(rig.dir.path(), &rig.pebble);
    // certbot's manual plugin with an auth hook that publishes the TXT record at
    // challtestsrv (CERTBOT_DOMAIN, CERTBOT_VALIDATION: certbot's hook environment), and a
    // cleanup hook that logs what it was given.
    let auth = rig.path("certbot-auth");
    crate::common::write_exec(
        &auth,
        &format!(
            "set -eu\ncurl -fsS -X POST -d \"{{\\\"host\\\":\\\"_acme-challenge.$CERTBOT_DOMAIN.\\\",\
             \\\"value\\\":\\\"$CERTBOT_VALIDATION\\\"}}\" {}/set-txt\n",
            rig.pebble.challtestsrv_mgmt
        ),
    );
    let cleaned = rig.path("cleanup.out");
    let cleanup = format!("echo \"$CERTBOT_DOMAIN\" >> {}", cleaned.display());
    let auth_arg = auth.display().to_string();
    for (name, domain) in [("manual", "m.test"), ("plugin", "p.test")] {
        cb.certonly(
            name,
            &[
                "--manual",
                "--preferred-challenges",
                "dns",
                "--manual-auth-hook",
                &auth_arg,
            ]
            .into_iter()
            .chain(["--manual-cleanup-hook", &cleanup, "-d", domain])
            .collect::<Vec<_>>(),
        );
    }
    // What a DNS plugin writes instead (certbot-dns-cloudflare is not installed here).
    let conf = cb.config_dir.join("renewal/plugin.conf");
    let text = fs::read_to_string(&conf).expect("renewal conf");
    let text: Vec<String> = text
        .lines()
        .filter(|l| !l.starts_with("manual_"))
        .map(|l| match l {
            "authenticator = manual" => {
                "authenticator = dns-cloudflare\ndns_cloudflare_credentials = /root/cf.ini".into()
            }
            other => other.to_string(),
        })
        .collect();
    fs::write(&conf, text.join("\n") + "\n").expect("write conf");

    rig.write_config("");
    let output = rig.path("certbot.toml");
    let imported = rig.renewd(
        "import",
        &[
            "certbot",
            "--certbot-dir",
            &cb.config_dir.display().to_string(),
            "--output",
            &output.display().to_string(),
        ],
    );
    assert!(imported.status.success());
    let said = String::from_utf8_lossy(&imported.stderr);
    assert!(
        said.contains("the `dns-cloudflare` authenticator is not carried over"),
        "{said}"
    );
    assert!(
        said.contains("`dns_cloudflare_credentials` = `/root/cf.ini`"),
        "{said}"
    );
    assert!(
        !said.contains("manual_auth_hook"),
        "the manual hooks are carried: {said}"
    );
    let toml = fs::read_to_string(&output).expect("output");
    let stub = "/etc/renewd/hooks/plugin-dns-01";
    assert!(
        toml.contains(&format!("type = \"dns-01\", hook = [\"{stub}\"]")),
        "{toml}"
    );
    assert!(
        toml.contains(&format!("CERTBOT_AUTH_HOOK={}", auth.display())),
        "{toml}"
    );
    // Included from the main file, as conf.d would be.
    let main = fs::read_to_string(&rig.config_path).expect("config");
    let body = format!("{main}\n{toml}");
    fs::write(&rig.config_path, &body).expect("config");

    let check = rig.renewd("check", &[]);
    assert!(check.status.success(), "a stub is a warning, not an error");
    let text = String::from_utf8_lossy(&check.stdout) + String::from_utf8_lossy(&check.stderr);
    assert!(text.contains(stub), "check names the hook to write: {text}");
    assert!(text.contains("1 certificate(s) not renewable"), "{text}");

    // certbot's manual hooks answer renewd's dns-01 challenge as they answered certbot's.
    let before = read_cert_pem(cb.live("manual", "cert.pem")).serial_hex;
    let _ = fs::remove_file(&cleaned);
    rig.renewd_ok("renew", &["--force", "manual"]);
    assert_ne!(
        read_cert_pem(cb.live("manual", "cert.pem")).serial_hex,
        before
    );
    assert_eq!(
        fs::read_to_string(&cleaned).expect("cleanup ran"),
        "m.test\n"
    );

    // The stub filled in with a real dns-01 hook: renewable, and it renews.
    let hook = rig.path("dns-hook");
    rig.pebble.write_dns_hook(&hook);
    fs::write(
        &rig.config_path,
        body.replace(stub, &hook.display().to_string()),
    )
    .expect("config");
    let text = rig.renewd_ok("check", &[]);
    assert!(text.contains("0 certificate(s) not renewable"), "{text}");
    let before = read_cert_pem(cb.live("plugin", "cert.pem")).serial_hex;
    rig.renewd_ok("renew", &["--force", "plugin"]);
    assert_ne!(
        read_cert_pem(cb.live("plugin", "cert.pem")).serial_hex,
        before
    );
}

/// The red-team's files: a renewal file and a deploy hook named to end a `#` comment and
/// write configuration, `live/` paths at files root must not overwrite, a renewal file
/// linked to a secret. Each is skipped with a note; the output is exactly the good lineage,
/// and `renewd check` accepts it.
#[test]
fn hostile_certbot_files_are_skipped_and_the_output_is_exactly_the_good_lineage() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certbot = dir.path().join("letsencrypt");
    fake_lineage(&certbot, "good", "");
    fake_lineage(&certbot, "x\nreload = [[\"touch\",\"pwned2\"]]\n#", "");
    fake_lineage(&certbot, "preload", "");
    let preload = certbot.join("renewal/preload.conf");
    let text = fs::read_to_string(&preload).expect("read");
    let text = text
        .lines()
        .map(|l| match l.split_once(" = ") {
            Some(("fullchain", _)) => "fullchain = /etc/ld.so.preload".to_string(),
            Some(("privkey", _)) => "privkey = /root/.ssh/authorized_keys".to_string(),
            _ => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    fs::write(&preload, text + "\n").expect("write");
    let secret = dir.path().join("shadow");
    fs::write(&secret, "root:*:20228:0:99999:7:::\n").expect("write");
    std::os::unix::fs::symlink(&secret, certbot.join("renewal/zz.conf")).expect("symlink");
    let hooks = certbot.join("renewal-hooks/deploy");
    fs::create_dir_all(&hooks).expect("mkdir");
    let hook = hooks.join("h\n[[certificate]]\nname = \"evil\"\ndomains = [\"evil.test\"]\n#");
    fs::write(&hook, "#!/bin/sh\n").expect("write");
    fs::set_permissions(&hook, fs::Permissions::from_mode(0o755)).expect("chmod");

    let output = dir.path().join("certbot.toml");
    let out = import(
        dir.path(),
        &[
            "--certbot-dir",
            &certbot.display().to_string(),
            "--output",
            &output.display().to_string(),
        ],
    );
    assert!(out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        !said.contains("root:*"),
        "the secret is never echoed: {said}"
    );
    for note in [
        "zz.conf: skipped: a symbolic link".to_string(),
        "skipped: lineage name `x\\nreload = [[".to_string(),
        format!(
            "{}:6: skipped: `fullchain` is `/etc/ld.so.preload`",
            preload.display()
        ),
        "not carried over: its name holds control characters".to_string(),
    ] {
        assert!(said.contains(&note), "{note}\n{said}");
    }
    let toml = fs::read_to_string(&output).expect("output");
    let doc: toml::Table = toml.parse().expect("TOML");
    let certs = doc["certificate"].as_array().expect("certificates");
    assert_eq!(certs.len(), 1, "{toml}");
    let keys: std::collections::BTreeSet<&str> = certs[0]
        .as_table()
        .expect("table")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        ["ca", "challenge", "domains", "files", "key_type", "name"].into(),
        "no reload, nothing else: {toml}"
    );
    let top: std::collections::BTreeSet<&str> = doc.keys().map(String::as_str).collect();
    assert_eq!(top, ["ca", "certificate"].into(), "{toml}");
    assert_eq!(certs[0]["name"].as_str(), Some("good"));

    // renewd's own loader accepts it, with the one certificate.
    let cfg = dir.path().join("check.toml");
    fs::write(
        &cfg,
        format!("state_dir = \"{}/state\"\n{toml}", dir.path().display()),
    )
    .expect("write");
    let check = Command::new(renewd_bin())
        .args(["check", "--config"])
        .arg(&cfg)
        .stdin(Stdio::null())
        .output()
        .expect("run renewd check");
    let text = String::from_utf8_lossy(&check.stdout) + String::from_utf8_lossy(&check.stderr);
    assert!(check.status.success(), "{text}");
    assert!(!text.contains("evil"), "{text}");
}

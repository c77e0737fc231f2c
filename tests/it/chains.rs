//! Issue 17's chain and key options against a real Pebble: `preferred_chain` among the
//! alternate chains of `PEBBLE_ALTERNATE_ROOTS`, `reuse_key` across `renew --force` (and
//! a keyCompromise revocation), `common_name`, and the `pkcs12` file kind opened by openssl.

use crate::common;
use crate::common::rig;

use std::fs;
use std::os::unix::fs::MetadataExt;

use common::*;
use rig::*;

/// The common name of a certificate's issuer (`issuer = true`) or subject.
fn common_name(der: &[u8], issuer: bool) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).expect("certificate DER");
    let name = if issuer {
        cert.issuer()
    } else {
        cert.subject()
    };
    let cn = name.iter_common_name().next()?;
    Some(cn.as_str().expect("CN text").to_string())
}

/// The issuer common name of the topmost certificate of a deployed fullchain.
fn top_issuer(path: &std::path::Path) -> String {
    let chain = read_certs_pem(path);
    let top = chain.last().expect("a certificate");
    common_name(&top.der, true).expect("the top certificate's issuer has a CN")
}

fn quiet_pebble() -> PebbleOptions {
    PebbleOptions {
        nonce_reject_percent: Some(0),
        ..PebbleOptions::default()
    }
}

/// With one alternate root, each certificate is offered under two chains: `preferred_chain`
/// naming the alternate root deploys that chain; unset, or naming no root offered, the
/// default chain (the latter logged with the names offered).
#[test]
fn preferred_chain_deploys_the_alternate_and_unset_the_default() {
    let rig = Rig::new(PebbleOptions {
        alternate_roots: 1,
        ..quiet_pebble()
    });
    let default_root = parse_certs_pem(&rig.pebble.mgmt_get("/roots/0"));
    let alternate_root = parse_certs_pem(&rig.pebble.mgmt_get("/roots/1"));
    let default_cn = common_name(&default_root[0].der, false).expect("root CN");
    let alternate_cn = common_name(&alternate_root[0].der, false).expect("alternate root CN");
    assert_ne!(default_cn, alternate_cn);
    let config = [
        rig.cert(
            "alt",
            &["alt.test"],
            &format!("preferred_chain = \"{alternate_cn}\""),
        ),
        rig.cert("plain", &["plain.test"], ""),
        rig.cert(
            "nomatch",
            &["nomatch.test"],
            "preferred_chain = \"No Such Root\"",
        ),
    ]
    .concat();
    rig.write_config(&config);

    let out = rig.renewd("run", &["--once"]);
    assert!(out.status.success(), "run --once failed");
    let log = String::from_utf8_lossy(&out.stderr);

    assert_eq!(top_issuer(&rig.fullchain("alt")), alternate_cn);
    assert_eq!(top_issuer(&rig.fullchain("plain")), default_cn);
    assert_eq!(top_issuer(&rig.fullchain("nomatch")), default_cn);
    // The alternate chain is the same certificate, checked like any other chain.
    let alt = read_certs_pem(rig.fullchain("alt"));
    assert_eq!(key_spki(rig.key("alt")), alt[0].spki);
    assert!(
        log.contains("no chain's top issuer is \"No Such Root\"")
            && log.contains(&alternate_cn)
            && log.contains(&default_cn),
        "the fallback is logged with the names offered:\n{}",
        last_lines(&log, 40)
    );
}

/// (inode, mode, SPKI) of a deployed key file.
fn key_identity(path: &std::path::Path) -> (u64, u32, Vec<u8>) {
    let meta = fs::metadata(path).expect("key file");
    (meta.ino(), meta.mode() & 0o7777, key_spki(path))
}

/// `reuse_key = true` keeps the key file itself (inode, mode, key) across `renew --force`,
/// and `status --json` shows its SPKI pin; without it the key is new; a keyCompromise
/// revocation makes a new key even with `reuse_key`.
#[test]
fn reuse_key_keeps_the_key_file_and_key_compromise_replaces_it() {
    let rig = Rig::new(quiet_pebble());
    let config = [
        rig.cert(
            "kept",
            &["kept.test"],
            "reuse_key = true\nkey_mode = \"0640\"",
        ),
        rig.cert("fresh", &["fresh.test"], ""),
    ]
    .concat();
    rig.write_config(&config);
    rig.renewd_ok("run", &["--once"]);
    let kept = key_identity(&rig.key("kept"));
    let fresh = key_identity(&rig.key("fresh"));
    let first_serial = read_cert_pem(rig.fullchain("kept")).serial_hex;
    assert_eq!(kept.1, 0o640);

    let out = rig.renewd("renew", &["--force", "kept", "fresh"]);
    assert!(out.status.success(), "renew --force failed");
    let renewed = read_cert_pem(rig.fullchain("kept"));
    assert_ne!(
        renewed.serial_hex, first_serial,
        "a new certificate was deployed"
    );
    assert_eq!(
        key_identity(&rig.key("kept")),
        kept,
        "the reused key file is untouched"
    );
    assert_eq!(
        renewed.spki, kept.2,
        "the new certificate is for the same key"
    );
    assert_ne!(
        key_spki(rig.key("fresh")),
        fresh.2,
        "without reuse_key the key is new"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("reusing the deployed"));

    // The pin `status` shows is the SHA-256 of the certificate's SPKI.
    let status: serde_json::Value =
        serde_json::from_str(&rig.renewd_ok("status", &["--json"])).expect("status JSON");
    let row = status
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["name"] == "kept"))
        .unwrap_or_else(|| panic!("no row for kept: {status}"));
    let digest = spki_sha256_hex(&renewed.spki);
    assert_eq!(row["spki_sha256_hex"], digest.as_str(), "{row}");
    assert!(
        row["spki_sha256"].as_str().is_some_and(|b| b.len() == 44),
        "{row}"
    );

    let out = rig.renewd("revoke", &["kept", "--reason", "keyCompromise"]);
    assert!(out.status.success(), "revoke failed");
    let replaced = key_identity(&rig.key("kept"));
    assert_ne!(
        replaced.2, kept.2,
        "a revoked certificate's key is never reused"
    );
    assert_eq!(replaced.1, 0o640, "the new key has the configured mode");
    assert_eq!(read_cert_pem(rig.fullchain("kept")).spki, replaced.2);
}

/// SHA-256 of `der` in lowercase hex, by openssl (an outside opinion of the digest).
fn spki_sha256_hex(der: &[u8]) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new("openssl")
        .args(["dgst", "-sha256", "-r"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("openssl");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(der)
        .expect("write");
    let out = child.wait_with_output().expect("openssl dgst");
    let text = String::from_utf8(out.stdout).expect("utf-8");
    text.split_whitespace().next().expect("digest").to_string()
}

/// `common_name` goes into the CSR subject: the finalize request the CA received (seen
/// through the fault proxy, with no fault) carries a CSR whose subject CN is the second
/// name, normalized. (Pebble 2.10 never copies a CSR's CN into the certificate: its
/// profiles only promote the first name, so the CSR is where renewd's part is checked.)
/// A `common_name` that is none of `domains` is a configuration error at its position.
#[test]
fn common_name_is_the_csr_subject_and_must_be_a_domain() {
    let rig = Rig::new(quiet_pebble());
    let proxy = crate::common::faultproxy::FaultProxy::start(&rig.pebble);
    let cert = rig.cert(
        "mtls",
        &["a.mtls.test", "b.mtls.test"],
        "common_name = \"B.mtls.test\"",
    );
    fs::write(
        &rig.config_path,
        format!("{}{cert}", rig.base_config_via(&proxy)),
    )
    .expect("config");
    rig.renewd_ok("run", &["--once"]);
    let finalize = proxy.requests("POST", "/finalize-order/");
    let payload = finalize
        .iter()
        .find_map(|r| r.jws_payload())
        .expect("a finalize request with a payload");
    let csr = {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload["csr"].as_str().expect("csr"))
            .expect("base64url CSR")
    };
    use x509_parser::prelude::FromDer;
    let (_, req) = x509_parser::certification_request::X509CertificationRequest::from_der(&csr)
        .expect("CSR DER");
    let cns: Vec<&str> = req
        .certification_request_info
        .subject
        .iter_common_name()
        .map(|cn| cn.as_str().expect("CN text"))
        .collect();
    assert_eq!(cns, vec!["b.mtls.test"]);

    let stranger = rig.cert("other", &["c.mtls.test"], "common_name = \"d.mtls.test\"");
    rig.write_config(&stranger);
    let out = rig.renewd("check", &[]);
    assert_eq!(
        out.status.code(),
        Some(78),
        "check refuses the configuration"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    let at = format!("{}:", rig.config_path.display());
    assert!(
        err.lines().any(|l| l.starts_with(&at)
            && l.contains("`common_name` `d.mtls.test` must be one of `domains`")),
        "the error names FILE:LINE:COL:\n{err}"
    );
}

/// Runs openssl with `args`, asserting success; its stdout.
fn openssl(args: &[&str]) -> String {
    let out = std::process::Command::new("openssl")
        .args(args)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// The public key (PEM) of what `openssl pkcs12 -nodes` extracted from `p12`: the key's and
/// the certificate's.
fn pkcs12_public_keys(
    rig: &Rig,
    p12: &std::path::Path,
    pass: &std::path::Path,
) -> (String, String) {
    let p12 = p12.to_str().expect("utf-8");
    let passin = format!("file:{}", pass.display());
    let key = rig.path("p12-key.pem");
    let cert = rig.path("p12-cert.pem");
    let (key_s, cert_s) = (key.to_str().expect("utf-8"), cert.to_str().expect("utf-8"));
    openssl(&[
        "pkcs12", "-in", p12, "-passin", &passin, "-nocerts", "-nodes", "-out", key_s,
    ]);
    openssl(&[
        "pkcs12", "-in", p12, "-passin", &passin, "-clcerts", "-nokeys", "-out", cert_s,
    ]);
    (
        openssl(&["pkey", "-in", key_s, "-pubout"]),
        openssl(&["x509", "-in", cert_s, "-noout", "-pubkey"]),
    )
}

/// A `pkcs12` file that openssl opens with the password (and only with it), holding the
/// deployed key and certificate, written with the key's mode; a reload that fails after a
/// renewal puts the previous archive back with the rest of the set (one journaled swap); a
/// missing password file is a `check` problem naming it.
#[test]
fn pkcs12_opens_with_its_password_matches_the_key_and_rolls_back_with_the_set() {
    let rig = Rig::new(quiet_pebble());
    let pass = rig.path("p12.pass");
    write_file(&pass, "correct horse\n");
    let p12 = rig.path("tls/store.p12");
    let fail = rig.path("fail-next-reload");
    let reload = rig.path("reload.sh");
    write_exec(
        &reload,
        &format!(
            "if [ -e {f} ]; then rm {f}; exit 1; fi\n",
            f = fail.display()
        ),
    );
    let extra = format!(
        "key_mode = \"0640\"\npkcs12_password_file = \"{}\"\nreload = [[\"{}\"]]",
        pass.display(),
        reload.display()
    );
    let cert = rig.cert("java", &["java.test"], &extra).replace(
        "files = {",
        &format!("files = {{ pkcs12 = \"{}\",", p12.display()),
    );
    rig.write_config(&cert);
    rig.renewd_ok("run", &["--once"]);

    let (key_pub, cert_pub) = pkcs12_public_keys(&rig, &p12, &pass);
    assert_eq!(
        key_pub, cert_pub,
        "the archive's key belongs to its certificate"
    );
    let deployed_pub = openssl(&["pkey", "-in", rig.key("java").to_str().unwrap(), "-pubout"]);
    assert_eq!(key_pub, deployed_pub, "the archive holds the deployed key");
    assert_eq!(mode(&p12), 0o640, "the archive has the key's mode");
    let info = std::process::Command::new("openssl")
        .args([
            "pkcs12",
            "-in",
            p12.to_str().unwrap(),
            "-passin",
            "pass:wrong",
            "-noout",
        ])
        .output()
        .expect("openssl");
    assert!(!info.status.success(), "a wrong password does not open it");
    let info = std::process::Command::new("openssl")
        .args(["pkcs12", "-info", "-in", p12.to_str().unwrap(), "-noout"])
        .arg("-passin")
        .arg(format!("file:{}", pass.display()))
        .output()
        .expect("openssl");
    let info = String::from_utf8_lossy(&info.stderr);
    assert!(
        info.contains("PBES2") && info.contains("AES-256-CBC") && info.contains("sha256"),
        "PBES2 with AES-256-CBC and an HMAC-SHA256 MAC:\n{info}"
    );

    // A failing reload rolls the whole set back, the archive included.
    let before = (
        fs::read(&p12).unwrap(),
        fs::read(rig.fullchain("java")).unwrap(),
    );
    write_file(&fail, "");
    let out = rig.renewd("renew", &["--force", "java"]);
    assert!(!out.status.success(), "the renewal fails with its reload");
    assert_eq!(
        (
            fs::read(&p12).unwrap(),
            fs::read(rig.fullchain("java")).unwrap()
        ),
        before,
        "the previous archive and certificate are back"
    );

    // Like every problem of one certificate's machine side, a missing password file makes
    // that certificate not renewable (the others still are), named at FILE:LINE:COL.
    fs::remove_file(&pass).expect("rm password");
    let out = rig.renewd("check", &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    let at = format!("{}:", rig.config_path.display());
    assert!(
        text.lines().any(|l| l.starts_with(&at)
            && l.contains(&format!(
                "cannot read `pkcs12_password_file` `{}`",
                pass.display()
            ))),
        "check names the file at its position:\n{text}"
    );
    assert!(text.contains("1 certificate(s) not renewable"), "{text}");
}

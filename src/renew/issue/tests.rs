//! `check_issued` against real chains, and the PEM splitting under it.

use std::time::Duration;

use super::*;
use crate::config::KeyType;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

fn ca(cn: &str) -> (Issuer<'static, KeyPair>, String) {
    let key = KeyPair::generate().expect("ca key");
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, cn);
    let pem = params.self_signed(&key).expect("ca").pem();
    (Issuer::new(params, key), pem)
}

/// A leaf for `key` and `names`, signed by `issuer`, valid from an hour ago for a day.
fn leaf(key: &PrivateKey, names: &[&str], issuer: &Issuer<'static, KeyPair>) -> String {
    let spki_pem = key.to_pem();
    let pair = KeyPair::from_pem(&spki_pem).expect("key");
    let mut params =
        CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .expect("params");
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(1);
    params.signed_by(&pair, issuer).expect("leaf").pem()
}

fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn a_chain_that_chains_is_accepted_and_so_is_a_lone_leaf() {
    let key = PrivateKey::generate(KeyType::EcdsaP256).expect("key");
    let (inter, inter_pem) = ca("Intermediate");
    let leaf_pem = leaf(&key, &["a.test"], &inter);
    let (material, info) = check_issued(
        &format!("{leaf_pem}{inter_pem}"),
        &key,
        &names(&["a.test"]),
        SystemTime::now(),
    )
    .expect("chains");
    assert_eq!(material.chain_pem.len(), 2);
    assert_eq!(info.dns_names, vec!["a.test"]);
    check_issued(&leaf_pem, &key, &names(&["a.test"]), SystemTime::now())
        .expect("a lone leaf is accepted");
}

#[test]
fn a_chain_that_does_not_chain_is_refused() {
    let key = PrivateKey::generate(KeyType::EcdsaP256).expect("key");
    let (inter, _) = ca("Intermediate");
    let (_, stranger_pem) = ca("Stranger");
    let leaf_pem = leaf(&key, &["a.test"], &inter);
    let err = check_issued(
        &format!("{leaf_pem}{stranger_pem}"),
        &key,
        &names(&["a.test"]),
        SystemTime::now(),
    )
    .expect_err("must not chain")
    .to_string();
    assert!(
        err.starts_with("the certificate is not signed by the intermediate the CA sent"),
        "{err}"
    );

    // Same subject name, another key: caught by the signature.
    let (_, impostor_pem) = ca("Intermediate");
    let err = check_issued(
        &format!("{leaf_pem}{impostor_pem}"),
        &key,
        &names(&["a.test"]),
        SystemTime::now(),
    )
    .expect_err("impostor")
    .to_string();
    assert!(err.contains("signature does not verify"), "{err}");

    // A broken link further up.
    let (root, root_pem) = ca("Root");
    let _ = root;
    let (inter2, inter2_pem) = ca("Intermediate 2");
    let leaf2 = leaf(&key, &["a.test"], &inter2);
    let err = check_issued(
        &format!("{leaf2}{inter2_pem}{root_pem}"),
        &key,
        &names(&["a.test"]),
        SystemTime::now(),
    )
    .expect_err("intermediate not signed by root")
    .to_string();
    assert!(
        err.starts_with("chain certificate 1 is not signed"),
        "{err}"
    );
}

#[test]
fn other_key_missing_names_and_expiry_are_refused() {
    let key = PrivateKey::generate(KeyType::EcdsaP256).expect("key");
    let other = PrivateKey::generate(KeyType::EcdsaP256).expect("other");
    let (inter, inter_pem) = ca("Intermediate");
    let chain = |k: &PrivateKey, n: &[&str]| format!("{}{inter_pem}", leaf(k, n, &inter));
    let err = check_issued(
        &chain(&other, &["a.test"]),
        &key,
        &names(&["a.test"]),
        SystemTime::now(),
    )
    .expect_err("other key")
    .to_string();
    assert_eq!(err, "the certificate is for another key");
    let err = check_issued(
        &chain(&key, &["a.test"]),
        &key,
        &names(&["a.test", "b.test"]),
        SystemTime::now(),
    )
    .expect_err("names")
    .to_string();
    assert_eq!(err, "the certificate does not cover b.test");
    let later = SystemTime::now() + Duration::from_secs(3 * 86400);
    let err = check_issued(&chain(&key, &["a.test"]), &key, &names(&["a.test"]), later)
        .expect_err("expired")
        .to_string();
    assert!(err.starts_with("the certificate is not valid now"), "{err}");
}

#[test]
fn pem_blocks_split_and_normalise() {
    let pem = "junk\n-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\r\n\
               -----BEGIN CERTIFICATE-----\nBBBB\n-----END CERTIFICATE-----";
    let b = pem_blocks(pem);
    assert_eq!(b.len(), 2);
    assert!(b[0].ends_with("-----END CERTIFICATE-----\n"));
    assert!(b[1].contains("BBBB"));
}

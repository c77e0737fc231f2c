//! The tests' own ACME client steps (instant-acme), for the harness smoke tests that issue
//! without renewd: a fresh account, and http-01 answered from a webroot served by
//! [`super::StaticServer`].

use std::path::Path;

use instant_acme::{Account, ChallengeType, NewAccount, Order};

use super::write_file;

/// A new account at `directory_url`, its HTTPS trusted through the PEM roots at `root`:
/// terms of service agreed, no contact.
pub async fn new_account(root: &Path, directory_url: &str) -> Account {
    let (account, _) = Account::builder_with_root(root)
        .expect("ACME client")
        .create(
            &NewAccount {
                contact: &[],
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            directory_url.to_string(),
            None,
        )
        .await
        .expect("new account");
    account
}

/// Puts every authorization's http-01 key authorization under `webroot`
/// (`.well-known/acme-challenge/TOKEN`) and tells the CA it is ready.
pub async fn answer_http01(order: &mut Order, webroot: &Path) {
    let mut authzs = order.authorizations();
    while let Some(authz) = authzs.next().await {
        let mut authz = authz.expect("authorization");
        let mut ch = authz
            .challenge(ChallengeType::Http01)
            .expect("http-01 offered");
        write_file(
            webroot.join(".well-known/acme-challenge").join(&ch.token),
            ch.key_authorization().as_str(),
        );
        ch.set_ready().await.expect("challenge ready");
    }
}

/// Revokes `cert_der` at the CA of `directory_url` with the certificate's own key
/// (`key_pem`, PKCS#8 ECDSA P-256), not an account's (RFC 8555 §7.6: a JWS with `jwk`),
/// for `reason` (RFC 5280 §5.3.1). instant-acme signs only with account keys, so the JWS is
/// built here. Returns the CA's HTTP status and body. HTTPS trusted through `trust_root`.
pub fn revoke_with_certificate_key(
    directory_url: &str,
    trust_root: &Path,
    cert_der: &[u8],
    key_pem: &str,
    reason: u8,
) -> (u16, String) {
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
    use data_encoding::BASE64URL_NOPAD as B64;
    use rustls::pki_types::pem::PemObject;

    let der = rustls::pki_types::PrivatePkcs8KeyDer::from_pem_slice(key_pem.as_bytes())
        .expect("PKCS#8 key");
    let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der.secret_pkcs8_der())
        .expect("ECDSA P-256 key");
    let point = key.public_key().as_ref().to_vec();
    let jwk = serde_json::json!({
        "crv": "P-256", "kty": "EC",
        "x": B64.encode(&point[1..33]), "y": B64.encode(&point[33..]),
    });
    let dir = exchange("GET", directory_url, None, trust_root);
    let dir: serde_json::Value = serde_json::from_str(&dir.2).expect("directory JSON");
    let (new_nonce, revoke_url) = (
        dir["newNonce"].as_str().expect("newNonce"),
        dir["revokeCert"].as_str().expect("revokeCert"),
    );
    let payload = serde_json::json!({ "certificate": B64.encode(cert_der), "reason": reason });
    // Pebble rejects some good nonces on purpose (badNonce): a few attempts.
    let mut last = (0, String::new());
    for _ in 0..5 {
        let (_, headers, _) = exchange("HEAD", new_nonce, None, trust_root);
        let nonce = headers
            .get("replay-nonce")
            .and_then(|v| v.to_str().ok())
            .expect("Replay-Nonce")
            .to_string();
        let protected =
            serde_json::json!({ "alg": "ES256", "jwk": jwk, "nonce": nonce, "url": revoke_url });
        let protected = B64.encode(protected.to_string().as_bytes());
        let body = B64.encode(payload.to_string().as_bytes());
        let sig = key
            .sign(
                &SystemRandom::new(),
                format!("{protected}.{body}").as_bytes(),
            )
            .expect("sign");
        let jws = serde_json::json!({
            "protected": protected, "payload": body, "signature": B64.encode(sig.as_ref()),
        });
        let (status, _, text) = exchange(
            "POST",
            revoke_url,
            Some(jws.to_string().into_bytes()),
            trust_root,
        );
        last = (status, text);
        if !last.1.contains("badNonce") {
            break;
        }
    }
    last
}

/// One HTTP exchange (ACME POSTs as `application/jose+json`): status, headers, body.
fn exchange(
    method: &str,
    url: &str,
    body: Option<Vec<u8>>,
    trust_root: &Path,
) -> (u16, http::HeaderMap, String) {
    use http_body_util::{BodyExt, Full};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    use rustls::pki_types::pem::PemObject;

    let (method, url, root) = (
        method.to_string(),
        url.to_string(),
        trust_root.to_path_buf(),
    );
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let mut roots = rustls::RootCertStore::empty();
            let pem = std::fs::read(&root).expect("trust root");
            for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
                roots.add(cert.expect("PEM")).expect("root");
            }
            let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
                rustls::crypto::aws_lc_rs::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .expect("TLS")
            .with_root_certificates(roots)
            .with_no_client_auth();
            let connector = hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(tls)
                .https_or_http()
                .enable_http1()
                .build();
            let client: Client<_, Full<bytes::Bytes>> =
                Client::builder(TokioExecutor::new()).build(connector);
            let mut req = http::Request::builder()
                .method(method.as_str())
                .uri(&url)
                .header("user-agent", "renewd-test-harness");
            if body.is_some() {
                req = req.header("content-type", "application/jose+json");
            }
            let req = req
                .body(Full::new(bytes::Bytes::from(body.unwrap_or_default())))
                .expect("request");
            let rsp = tokio::time::timeout(std::time::Duration::from_secs(10), client.request(req))
                .await
                .expect("answer within 10 s")
                .expect("exchange");
            let (status, headers) = (rsp.status().as_u16(), rsp.headers().clone());
            let body = rsp.into_body().collect().await.expect("body").to_bytes();
            (status, headers, String::from_utf8_lossy(&body).into_owned())
        })
    })
    .join()
    .expect("client thread")
}

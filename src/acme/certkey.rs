//! Revocation signed with the certificate's own key (RFC 8555 §7.6), for a certificate that
//! another account issued: the CA refuses the account's request as `unauthorized`, but the
//! holder of the certificate's private key may always revoke it. instant-acme signs only
//! with an account key, so this builds the one JWS itself: `jwk` (not `kid`) in the protected
//! header, ES256/ES384 or RS256 as the key dictates (RFC 7518 §3.3, §3.4), sent through the
//! CA's usual client (deadline, retries, Gate).

use bytes::Bytes;
use data_encoding::BASE64URL_NOPAD;
use instant_acme::{BodyWrapper, HttpClient};
use rcgen::{KeyPair, PublicKeyData, SigningKey};

use super::problem::{acme_message, urn};

/// Why a revocation signed with the certificate's key failed: what to tell the user.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Failure {
    /// The certificate's key cannot sign an ACME request.
    #[error("{0}")]
    Key(String),
    /// The CA's directory, nonce or answer could not be used.
    #[error("{0}")]
    Exchange(String),
    /// The CA refused the revocation with this problem document.
    #[error("{}", super::problem::problem_message(.0))]
    Refused(Box<instant_acme::Problem>),
    /// The CA refused the revocation without a problem document.
    #[error("HTTP {0}")]
    Status(http::StatusCode),
    #[error("the CA kept rejecting the nonce (badNonce)")]
    BadNonces,
}

/// A key that signs JWS for RFC 8555 requests: its `alg`, its public JWK, and how its
/// signatures are laid out.
pub(super) struct JwsKey {
    pair: KeyPair,
    alg: &'static str,
    jwk: serde_json::Value,
    /// The account URL to name as `kid` instead of the `jwk` (RFC 8555 §6.2), when signing
    /// with an account key ([`JwsKey::with_kid`]).
    kid: Option<String>,
    /// ECDSA: the width of r and s in the raw JWS signature (rcgen signs in ASN.1 DER).
    ec_width: Option<usize>,
}

impl JwsKey {
    /// `pem`: one PKCS#8 private key (renewd's own format, see `x509::PrivateKey::to_pem`).
    fn from_pem(pem: &str) -> Result<JwsKey, Failure> {
        let pair =
            KeyPair::from_pem(pem).map_err(|e| Failure::Key(format!("cannot use the key: {e}")))?;
        JwsKey::from_pair(pair)
    }

    /// An account's key (PKCS#8 DER, as instant-acme stores it) signing as account `kid`.
    pub(super) fn with_kid(pkcs8_der: &[u8], kid: &str) -> Result<JwsKey, Failure> {
        let der = rustls::pki_types::PrivatePkcs8KeyDer::from(pkcs8_der);
        let pair = KeyPair::try_from(&der)
            .map_err(|e| Failure::Key(format!("cannot use the account key: {e}")))?;
        let mut key = JwsKey::from_pair(pair)?;
        key.kid = Some(kid.to_string());
        Ok(key)
    }

    fn from_pair(pair: KeyPair) -> Result<JwsKey, Failure> {
        let raw = pair.der_bytes().to_vec();
        let alg = pair.algorithm();
        let ec = |crv: &str, width: usize| -> Result<(serde_json::Value, usize), Failure> {
            // An uncompressed point: 0x04 || x || y.
            if raw.len() != 1 + 2 * width || raw[0] != 0x04 {
                return Err(Failure::Key(format!(
                    "unexpected {crv} public key encoding"
                )));
            }
            let jwk = serde_json::json!({
                "crv": crv,
                "kty": "EC",
                "x": BASE64URL_NOPAD.encode(&raw[1..1 + width]),
                "y": BASE64URL_NOPAD.encode(&raw[1 + width..]),
            });
            Ok((jwk, width))
        };
        let (alg_name, jwk, ec_width) = if alg == &rcgen::PKCS_ECDSA_P256_SHA256 {
            let (jwk, w) = ec("P-256", 32)?;
            ("ES256", jwk, Some(w))
        } else if alg == &rcgen::PKCS_ECDSA_P384_SHA384 {
            let (jwk, w) = ec("P-384", 48)?;
            ("ES384", jwk, Some(w))
        } else if alg == &rcgen::PKCS_RSA_SHA256 {
            // RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }
            let unexpected = || Failure::Key("unexpected RSA public key encoding".into());
            let ints = der_integers(&raw).ok_or_else(unexpected)?;
            let [n, e] = ints.as_slice() else {
                return Err(unexpected());
            };
            let jwk = serde_json::json!({
                "e": BASE64URL_NOPAD.encode(e),
                "kty": "RSA",
                "n": BASE64URL_NOPAD.encode(n),
            });
            ("RS256", jwk, None)
        } else {
            return Err(Failure::Key(
                "the key type cannot sign an ACME request (ECDSA P-256/P-384 or RSA)".into(),
            ));
        };
        Ok(JwsKey {
            pair,
            alg: alg_name,
            jwk,
            kid: None,
            ec_width,
        })
    }

    /// The flattened JWS (RFC 7515 §7.2.2) of `payload` for `url` with `nonce`.
    pub(super) fn sign(&self, url: &str, nonce: &str, payload: &[u8]) -> Result<Vec<u8>, Failure> {
        let mut protected = serde_json::json!({
            "alg": self.alg,
            "jwk": self.jwk,
            "nonce": nonce,
            "url": url,
        });
        if let Some(kid) = &self.kid {
            protected["kid"] = serde_json::json!(kid);
            protected.as_object_mut().map(|o| o.remove("jwk"));
        }
        let protected = BASE64URL_NOPAD.encode(protected.to_string().as_bytes());
        let payload = BASE64URL_NOPAD.encode(payload);
        let der = self
            .pair
            .sign(format!("{protected}.{payload}").as_bytes())
            .map_err(|e| Failure::Key(format!("cannot sign with the certificate's key: {e}")))?;
        let signature = match self.ec_width {
            None => der,
            Some(w) => ecdsa_raw(&der, w)
                .ok_or_else(|| Failure::Key("unexpected ECDSA signature encoding".into()))?,
        };
        Ok(serde_json::json!({
            "protected": protected,
            "payload": payload,
            "signature": BASE64URL_NOPAD.encode(&signature),
        })
        .to_string()
        .into_bytes())
    }
}

/// The contents of the INTEGERs of one DER SEQUENCE, leading zero octets removed.
fn der_integers(der: &[u8]) -> Option<Vec<&[u8]>> {
    fn tlv(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let (&tag, rest) = b.split_first()?;
        let (&first, rest) = rest.split_first()?;
        let (len, rest) = if first < 0x80 {
            (first as usize, rest)
        } else {
            let n = (first & 0x7f) as usize;
            if n == 0 || n > 4 || rest.len() < n {
                return None;
            }
            let len = rest[..n]
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | *b as usize);
            (len, &rest[n..])
        };
        (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
    }
    let (tag, mut body, _) = tlv(der)?;
    if tag != 0x30 {
        return None;
    }
    let mut out = Vec::new();
    while !body.is_empty() {
        let (tag, int, rest) = tlv(body)?;
        if tag != 0x02 {
            return None;
        }
        let skip = int.iter().take_while(|b| **b == 0).count();
        out.push(&int[skip.min(int.len().saturating_sub(1))..]);
        body = rest;
    }
    Some(out)
}

/// An ASN.1 ECDSA signature as the JWS `r || s`, each `width` octets (RFC 7518 §3.4).
fn ecdsa_raw(der: &[u8], width: usize) -> Option<Vec<u8>> {
    let ints = der_integers(der)?;
    let [r, s] = ints.as_slice() else {
        return None;
    };
    let mut out = vec![0u8; 2 * width];
    for (i, v) in [r, s].iter().enumerate() {
        if v.len() > width {
            return None;
        }
        out[i * width + width - v.len()..(i + 1) * width].copy_from_slice(v);
    }
    Some(out)
}

/// Revokes `request`'s certificate at the CA whose directory is `directory`, signing with
/// `key_pem` (the certificate's private key, PKCS#8 PEM). A `badNonce` is answered with a
/// fresh nonce, twice at most.
pub(crate) async fn revoke(
    http: &dyn HttpClient,
    directory: &str,
    key_pem: &str,
    request: &instant_acme::RevocationRequest<'_>,
) -> Result<(), Failure> {
    let key = JwsKey::from_pem(key_pem)?;
    let dir: serde_json::Value = serde_json::from_slice(
        &send(http, http::Method::GET, directory, None).await?.1,
    )
    .map_err(|e| Failure::Exchange(format!("the directory {directory} is not JSON: {e}")))?;
    let url_of = |name: &str| {
        dir[name]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| Failure::Exchange(format!("the directory {directory} has no {name}")))
    };
    let (revoke_url, nonce_url) = (url_of("revokeCert")?, url_of("newNonce")?);
    let payload = serde_json::to_vec(request).map_err(|e| Failure::Exchange(e.to_string()))?;
    let (head, _) = send(http, http::Method::HEAD, &nonce_url, None).await?;
    let mut nonce = replay_nonce(&head)
        .ok_or_else(|| Failure::Exchange("the CA sent no Replay-Nonce".into()))?;
    for _ in 0..3 {
        let jws = key.sign(&revoke_url, &nonce, &payload)?;
        let (parts, body) = send(http, http::Method::POST, &revoke_url, Some(jws)).await?;
        if parts.status.is_success() {
            return Ok(());
        }
        let problem: Option<instant_acme::Problem> = serde_json::from_slice(&body).ok();
        let is_bad_nonce = problem
            .as_ref()
            .is_some_and(|p| p.r#type.as_deref() == Some(urn::BAD_NONCE));
        match (is_bad_nonce, replay_nonce(&parts)) {
            (true, Some(fresh)) => nonce = fresh,
            _ => {
                return Err(match problem {
                    Some(p) => Failure::Refused(Box::new(p)),
                    None => Failure::Status(parts.status),
                })
            }
        }
    }
    Err(Failure::BadNonces)
}

pub(super) fn replay_nonce(parts: &http::response::Parts) -> Option<String> {
    parts
        .headers
        .get("replay-nonce")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

pub(super) async fn send(
    http: &dyn HttpClient,
    method: http::Method,
    url: &str,
    body: Option<Vec<u8>>,
) -> Result<(http::response::Parts, Bytes), Failure> {
    let mut req = http::Request::builder().method(method).uri(url);
    if body.is_some() {
        req = req.header(http::header::CONTENT_TYPE, "application/jose+json");
    }
    let req = req
        .body(body.map(BodyWrapper::from).unwrap_or_default())
        .map_err(|e| Failure::Exchange(format!("bad URL {url}: {e}")))?;
    let mut rsp = http
        .request(req)
        .await
        .map_err(|e| Failure::Exchange(acme_message(&e)))?;
    let parts = rsp.parts;
    let body = rsp
        .body
        .into_bytes()
        .await
        .map_err(|e| Failure::Exchange(format!("reading the answer of {url}: {e}")))?;
    Ok((parts, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ecdsa_der_signatures_become_fixed_width_r_and_s() {
        // r with a sign octet, s short: both padded to 32 octets.
        let mut der = vec![0x30, 0x26, 0x02, 0x21, 0x00];
        der.extend([0xff; 32]);
        der.extend([0x02, 0x01, 0x05]);
        let raw = ecdsa_raw(&der, 32).expect("raw");
        assert_eq!(raw.len(), 64);
        assert_eq!(&raw[..32], &[0xff; 32]);
        assert_eq!(raw[63], 5);
        assert!(raw[32..63].iter().all(|b| *b == 0));
        assert_eq!(ecdsa_raw(&[0x30, 0x02, 0x05, 0x00], 32), None);
    }

    #[test]
    fn jwks_for_each_key_type() {
        for (kt, alg, kty) in [
            (crate::config::KeyType::EcdsaP256, "ES256", "EC"),
            (crate::config::KeyType::EcdsaP384, "ES384", "EC"),
            (crate::config::KeyType::Rsa2048, "RS256", "RSA"),
        ] {
            let pem = crate::x509::PrivateKey::generate(kt).expect("key").to_pem();
            let key = JwsKey::from_pem(&pem).expect("jws key");
            assert_eq!(key.alg, alg);
            assert_eq!(key.jwk["kty"], kty);
            let jws = key.sign("https://ca/revoke", "n0nce", b"{}").expect("sign");
            let v: serde_json::Value = serde_json::from_slice(&jws).expect("json");
            let sig = BASE64URL_NOPAD
                .decode(v["signature"].as_str().expect("sig").as_bytes())
                .expect("b64");
            match alg {
                "ES256" => assert_eq!(sig.len(), 64),
                "ES384" => assert_eq!(sig.len(), 96),
                _ => assert_eq!(sig.len(), 256),
            }
        }
    }
}

//! OCSP (RFC 6960) for one certificate: the request (one `CertID` with SHA-1 hashes, as
//! responders expect, RFC 5019 §2.1.1; unsigned, no nonce, RFC 6960 §4.1) and the
//! verification of the response: a `basic` response (§4.2.1) whose `CertID` is ours, signed
//! by the issuer or by a responder certificate the issuer signed for `id-kp-OCSPSigning`
//! (§4.2.2.2), its thisUpdate not in the future and its nextUpdate not passed (§4.2.2.1).
//! ASN.1 through RustCrypto's `x509-ocsp`; signatures through x509-parser on aws-lc-rs.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use der::asn1::{Null, OctetString};
use der::{Decode, Encode, Reader};
use spki::AlgorithmIdentifierOwned;
use x509_ocsp::{
    BasicOcspResponse, CertId, CertStatus, OcspRequest, OcspResponse, OcspResponseStatus, Request,
    TbsRequest,
};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::{check_times, Answer, Status};

/// id-pkix-ocsp-basic (RFC 6960 §4.2.1).
const OCSP_BASIC: der::oid::ObjectIdentifier =
    der::oid::ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.1.1");
/// id-sha1 (RFC 3279 §2.2.1): the CertID hash every responder supports.
const SHA1: der::oid::ObjectIdentifier = der::oid::ObjectIdentifier::new_unwrap("1.3.14.3.2.26");

/// Why an OCSP exchange gave no usable answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OcspError {
    #[error("cannot build the request: {0}")]
    Request(String),
    /// The body does not decode; the words say how ([`super::der_fault`]), never what
    /// bytes it held.
    #[error("the answer is not an OCSP response (DER): {0}")]
    Malformed(&'static str),
    /// `responseStatus` other than successful (RFC 6960 §4.2.1).
    #[error("the responder answered {0}")]
    Refused(&'static str),
    #[error("the response is of type {0}, not id-pkix-ocsp-basic")]
    NotBasic(String),
    #[error("the response does not answer for this certificate")]
    NotForThis,
    /// Neither the issuer nor an authorized responder certificate signed it.
    #[error("the response signature does not verify with the issuer or a delegated responder it authorized: {0}")]
    Signature(String),
    #[error("the response is not current: {0}")]
    Time(#[from] super::TimeError),
}

/// The DER of an OCSP request for `leaf` (DER) issued by `issuer` (DER), and its `CertID`
/// to find the answer by.
pub(crate) fn request(leaf: &[u8], issuer: &[u8]) -> Result<(Vec<u8>, CertId), OcspError> {
    let bad = |e: der::Error| OcspError::Request(e.to_string());
    let leaf = x509_cert::Certificate::from_der(leaf).map_err(bad)?;
    let issuer = x509_cert::Certificate::from_der(issuer).map_err(bad)?;
    let name = issuer.tbs_certificate.subject.to_der().map_err(bad)?;
    let key = issuer
        .tbs_certificate
        .subject_public_key_info
        .subject_public_key
        .raw_bytes();
    let sha1 = |b: &[u8]| {
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, b)
            .as_ref()
            .to_vec()
    };
    let id = CertId {
        hash_algorithm: AlgorithmIdentifierOwned {
            oid: SHA1,
            parameters: Some(Null.into()),
        },
        issuer_name_hash: OctetString::new(sha1(&name)).map_err(bad)?,
        issuer_key_hash: OctetString::new(sha1(key)).map_err(bad)?,
        serial_number: leaf.tbs_certificate.serial_number.clone(),
    };
    let req = OcspRequest {
        tbs_request: TbsRequest {
            version: Default::default(),
            requestor_name: None,
            request_list: vec![Request {
                req_cert: id.clone(),
                single_request_extensions: None,
            }],
            request_extensions: None,
        },
        optional_signature: None,
    };
    Ok((req.to_der().map_err(bad)?, id))
}

/// Verifies the response `body` for `id` (from [`request`]) against `issuer` (DER) at
/// `now`, and says what it answers.
pub(crate) fn verify_response(
    body: &[u8],
    id: &CertId,
    issuer: &[u8],
    now: SystemTime,
) -> Result<Answer, OcspError> {
    let rsp =
        OcspResponse::from_der(body).map_err(|_| OcspError::Malformed(super::der_fault(body)))?;
    let refused = match rsp.response_status {
        OcspResponseStatus::Successful => None,
        OcspResponseStatus::MalformedRequest => Some("malformedRequest"),
        OcspResponseStatus::InternalError => Some("internalError"),
        OcspResponseStatus::TryLater => Some("tryLater"),
        OcspResponseStatus::SigRequired => Some("sigRequired"),
        OcspResponseStatus::Unauthorized => Some("unauthorized"),
    };
    if let Some(r) = refused {
        return Err(OcspError::Refused(r));
    }
    let bytes = rsp
        .response_bytes
        .ok_or(OcspError::Malformed("successful, without responseBytes"))?;
    if bytes.response_type != OCSP_BASIC {
        return Err(OcspError::NotBasic(bytes.response_type.to_string()));
    }
    let basic_der = bytes.response.as_bytes();
    let basic = BasicOcspResponse::from_der(basic_der)
        .map_err(|_| OcspError::Malformed(super::der_fault(basic_der)))?;
    verify_signature(basic_der, &basic, issuer, now)?;
    let single = basic
        .tbs_response_data
        .responses
        .iter()
        .find(|s| {
            s.cert_id.issuer_name_hash == id.issuer_name_hash
                && s.cert_id.issuer_key_hash == id.issuer_key_hash
                && s.cert_id.serial_number == id.serial_number
        })
        .ok_or(OcspError::NotForThis)?;
    let this_update = time(&single.this_update.0);
    let next_update = single.next_update.as_ref().map(|t| time(&t.0));
    check_times(this_update, next_update, now)?;
    let (status, revoked_at, reason) = match &single.cert_status {
        CertStatus::Good(_) => (Status::Good, None, None),
        CertStatus::Revoked(info) => (
            Status::Revoked,
            Some(time(&info.revocation_time.0)),
            info.revocation_reason.map(|r| format!("{r:?}")),
        ),
        CertStatus::Unknown(_) => (Status::Unknown, None, None),
    };
    Ok(Answer {
        status,
        this_update,
        next_update,
        revoked_at,
        reason,
    })
}

fn time(t: &der::asn1::GeneralizedTime) -> SystemTime {
    UNIX_EPOCH + t.to_unix_duration()
}

/// RFC 6960 §4.2.2.2: signed by the issuer itself, or by a certificate in the response that
/// the issuer signed, that carries id-kp-OCSPSigning and is valid at `now`.
fn verify_signature(
    basic_der: &[u8],
    basic: &BasicOcspResponse,
    issuer: &[u8],
    now: SystemTime,
) -> Result<(), OcspError> {
    // What failed to decode is said in words, never with the response's bytes.
    let sig = |what: &str| OcspError::Signature(format!("{what} does not decode"));
    // The signed bytes exactly as sent: the first element of the outer SEQUENCE.
    let tbs = {
        let mut r = der::SliceReader::new(basic_der).map_err(|_| sig("the signed data"))?;
        let _outer = der::Header::decode(&mut r).map_err(|_| sig("the signed data"))?;
        r.tlv_bytes().map_err(|_| sig("the signed data"))?
    };
    let alg_der = basic
        .signature_algorithm
        .to_der()
        .map_err(|_| sig("the signature algorithm"))?;
    let (_, alg) = x509_parser::x509::AlgorithmIdentifier::from_der(&alg_der)
        .map_err(|_| sig("the signature algorithm"))?;
    let signature = x509_parser::der_parser::asn1_rs::BitString::new(
        basic.signature.unused_bits(),
        basic.signature.raw_bytes(),
    );
    let (_, issuer_cert) =
        X509Certificate::from_der(issuer).map_err(|_| sig("the issuer's certificate"))?;
    let by = |key: &x509_parser::x509::SubjectPublicKeyInfo<'_>| {
        x509_parser::verify::verify_signature(key, &alg, &signature, tbs)
    };
    if by(issuer_cert.public_key()).is_ok() {
        return Ok(());
    }
    let mut why = vec![format!("not by the issuer \"{}\"", issuer_cert.subject())];
    for c in basic.certs.iter().flatten() {
        let der = c
            .to_der()
            .map_err(|_| sig("a certificate in the response"))?;
        let Ok((_, responder)) = X509Certificate::from_der(&der) else {
            continue;
        };
        let authorized = crate::x509::verify_issued_by(&der, issuer).is_ok()
            && responder
                .extended_key_usage()
                .ok()
                .flatten()
                .is_some_and(|eku| eku.value.ocsp_signing)
            && valid_at(&responder, now);
        if !authorized {
            why.push(format!(
                "\"{}\" is not a responder the issuer authorized (signed by it, id-kp-OCSPSigning, valid now)",
                responder.subject()
            ));
            continue;
        }
        if by(responder.public_key()).is_ok() {
            return Ok(());
        }
        why.push(format!("not by \"{}\"", responder.subject()));
    }
    Err(OcspError::Signature(why.join("; ")))
}

fn valid_at(cert: &X509Certificate<'_>, now: SystemTime) -> bool {
    let t = |a: x509_parser::time::ASN1Time| {
        UNIX_EPOCH + Duration::from_secs(a.timestamp().max(0) as u64)
    };
    let v = cert.validity();
    t(v.not_before) <= now + super::SKEW && now <= t(v.not_after) + super::SKEW
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> CertId {
        CertId {
            hash_algorithm: AlgorithmIdentifierOwned {
                oid: SHA1,
                parameters: Some(Null.into()),
            },
            issuer_name_hash: OctetString::new(vec![0; 20]).unwrap(),
            issuer_key_hash: OctetString::new(vec![0; 20]).unwrap(),
            serial_number: x509_cert::serial_number::SerialNumber::new(&[1]).unwrap(),
        }
    }

    #[test]
    fn an_answer_that_is_not_ocsp_is_said_so_without_echoing_it() {
        let now = SystemTime::now();
        let said = |body: &[u8]| {
            verify_response(body, &id(), b"", now)
                .unwrap_err()
                .to_string()
        };
        // APPLICATION [19] (primitive): the parser's words named the byte it got.
        let e = said(&[0x53, 0x01, 0x00]);
        assert_eq!(e, "the answer is not an OCSP response (DER): not DER");
        let e = said(b"<html>nope</html>");
        assert_eq!(e, "the answer is not an OCSP response (DER): not DER");
        // Cut short.
        let e = said(&[0x30, 0x82, 0x01, 0x00, 0x0a, 0x01, 0x00]);
        assert_eq!(e, "the answer is not an OCSP response (DER): truncated");
    }
}

//! CRLs (RFC 5280 §5) for one certificate: the CRL must be issued by the certificate's
//! issuer (its issuer name is the issuer's subject, its signature verifies with the
//! issuer's key, §6.3.3 (f)–(g)), be current (thisUpdate not in the future, nextUpdate not
//! passed, §5.1.2.4–5), and lists the certificate's serial or not (§5.1.2.6). Delta CRLs and
//! indirect CRLs (entries for other issuers) are not used: such an entry is never taken
//! for this certificate.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use x509_parser::prelude::{CertificateRevocationList, FromDer, X509Certificate};
use x509_parser::time::ASN1Time;

use super::{check_times, Answer, Status};

/// Why a CRL gives no answer for a certificate.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CrlError {
    /// The words say how ([`super::der_fault`]), never what bytes it held.
    #[error("the answer is not a CRL (DER): {0}")]
    Malformed(String),
    /// The certificate or its issuer (from its files) does not parse.
    #[error("the certificate or its issuer does not parse")]
    Certificate,
    #[error("issued by \"{crl}\", not by the certificate's issuer \"{issuer}\"")]
    OtherIssuer { crl: String, issuer: String },
    #[error("its signature does not verify with the issuer's key: {0}")]
    Signature(String),
    #[error("not current: {0}")]
    Time(#[from] super::TimeError),
}

fn time(t: ASN1Time) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(t.timestamp().max(0) as u64)
}

/// What the CRL `der` says about `leaf` (DER), verified against `issuer` (DER) at `now`.
pub(crate) fn check(
    der: &[u8],
    leaf: &[u8],
    issuer: &[u8],
    now: SystemTime,
) -> Result<Answer, CrlError> {
    let (rest, crl) = CertificateRevocationList::from_der(der)
        .map_err(|_| CrlError::Malformed(super::der_fault(der).into()))?;
    if !rest.is_empty() {
        return Err(CrlError::Malformed(format!(
            "{} bytes after it",
            rest.len()
        )));
    }
    let (_, issuer) = X509Certificate::from_der(issuer).map_err(|_| CrlError::Certificate)?;
    let (_, leaf) = X509Certificate::from_der(leaf).map_err(|_| CrlError::Certificate)?;
    if crl.issuer().as_raw() != issuer.subject().as_raw() {
        return Err(CrlError::OtherIssuer {
            crl: crl.issuer().to_string(),
            issuer: issuer.subject().to_string(),
        });
    }
    crl.verify_signature(issuer.public_key())
        .map_err(|e| CrlError::Signature(e.to_string()))?;
    let this_update = time(crl.last_update());
    let next_update = crl.next_update().map(time);
    check_times(this_update, next_update, now)?;
    let serial = strip(leaf.raw_serial());
    let entry = crl
        .iter_revoked_certificates()
        .find(|r| strip(r.raw_serial()) == serial);
    Ok(match entry {
        None => Answer {
            status: Status::Good,
            this_update,
            next_update,
            revoked_at: None,
            reason: None,
        },
        Some(r) => Answer {
            status: Status::Revoked,
            this_update,
            next_update,
            revoked_at: Some(time(r.revocation_date)),
            reason: r.reason_code().map(|(_, c)| c.to_string()),
        },
    })
}

/// An INTEGER's content without its sign padding, so `00 80` and `80` compare equal.
fn strip(b: &[u8]) -> &[u8] {
    let n = b.iter().take_while(|x| **x == 0).count();
    &b[n.min(b.len().saturating_sub(1))..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_compare_without_sign_padding() {
        assert_eq!(strip(&[0, 0x80, 1]), &[0x80, 1]);
        assert_eq!(strip(&[0]), &[0]);
        assert_eq!(strip(&[5]), &[5]);
    }

    #[test]
    fn garbage_is_refused_with_a_reason() {
        let e = check(b"not a crl", b"", b"", SystemTime::now()).unwrap_err();
        assert_eq!(e.to_string(), "the answer is not a CRL (DER): not DER");
        // A CRL cut short: said in words, no parser jargon, no byte of the answer.
        let e = check(&[0x30, 0x82, 0x01, 0x00, 0x30], b"", b"", SystemTime::now()).unwrap_err();
        assert_eq!(e.to_string(), "the answer is not a CRL (DER): truncated");
    }
}

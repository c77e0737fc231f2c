//! ACME Renewal Information (RFC 9773): the CA's suggested renewal window for a
//! certificate, asked by its certificate identifier (§4.1).

use std::time::{Duration, SystemTime};

use super::problem::{ca_error, AcmeError};
use super::Ca;

/// The CA's renewal information (RFC 9773 §4.2) for one certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AriAnswer {
    /// The suggested window's start.
    pub(crate) start: SystemTime,
    /// The suggested window's end.
    pub(crate) end: SystemTime,
    pub(crate) explanation_url: Option<String>,
    /// The CA's Retry-After for the next request about this certificate.
    pub(crate) retry_after: Duration,
}

/// Why the CA's renewal information could not be had; the caller treats it as no advice.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AriError {
    /// No ARI certificate identifier without an authority key identifier (RFC 9773 §4.1).
    #[error("the certificate has no authority key identifier")]
    NoAuthorityKeyId,
    #[error("the suggested window ends ({}) before it starts ({})",
        crate::text::rfc3339(*end), crate::text::rfc3339(*start))]
    WindowEndsBeforeStart { start: SystemTime, end: SystemTime },
    /// The request failed (with the CA's Retry-After, if it said).
    #[error(transparent)]
    Ca(#[from] AcmeError),
}

/// The ARI certificate identifier (RFC 9773 §4.1: AKI keyIdentifier . serial), when the
/// certificate has an AKI.
pub(crate) fn cert_id(
    cert: &crate::x509::CertInfo,
) -> Option<instant_acme::CertificateIdentifier<'static>> {
    use rustls::pki_types::Der;
    let aki = cert.authority_key_id.as_deref()?;
    Some(
        instant_acme::CertificateIdentifier::new(
            Der::from_slice(aki),
            Der::from_slice(&cert.serial_der),
        )
        .into_owned(),
    )
}

impl Ca {
    /// Asks the CA's ARI when `cert` should be renewed. `Ok(None)` when the CA offers no
    /// `renewalInfo`; `Err` for a failed request or an unusable answer (a window that ends
    /// before it starts, no Retry-After, not JSON), which the caller treats as no advice.
    pub(crate) async fn renewal_info(
        &self,
        cert: &crate::x509::CertInfo,
    ) -> Result<Option<AriAnswer>, AriError> {
        let id = cert_id(cert).ok_or(AriError::NoAuthorityKeyId)?;
        let account = self.account.read().await.clone();
        match account.renewal_info(&id).await {
            Ok((info, retry_after)) => {
                let start = SystemTime::from(info.suggested_window.start);
                let end = SystemTime::from(info.suggested_window.end);
                if end < start {
                    return Err(AriError::WindowEndsBeforeStart { start, end });
                }
                Ok(Some(AriAnswer {
                    start,
                    end,
                    explanation_url: info.explanation_url,
                    retry_after,
                }))
            }
            Err(instant_acme::Error::Unsupported(_)) => Ok(None),
            Err(e) => Err(ca_error(self.http.gate(), &e, SystemTime::now()).into()),
        }
    }
}

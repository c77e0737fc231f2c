//! Revocation (RFC 8555 §7.6): signed with the account key, or, when the CA refuses that
//! as `unauthorized`, with the certificate's own key ([`super::certkey`]).

use std::time::SystemTime;

use super::certkey;
use super::problem::{acme_message, ca_error, is_problem, urn, AcmeError};
use super::Ca;

/// The RFC 5280 revocation reason names `renewd revoke --reason` accepts.
pub const REVOCATION_REASONS: &[&str] = &[
    "unspecified",
    "keyCompromise",
    "cACompromise",
    "affiliationChanged",
    "superseded",
    "cessationOfOperation",
    "certificateHold",
    "removeFromCRL",
    "privilegeWithdrawn",
    "aACompromise",
];

/// An RFC 5280 reason name (case-insensitive) as instant-acme's code.
pub(crate) fn revocation_reason(name: &str) -> Option<instant_acme::RevocationReason> {
    use instant_acme::RevocationReason as R;
    let all = [
        R::Unspecified,
        R::KeyCompromise,
        R::CaCompromise,
        R::AffiliationChanged,
        R::Superseded,
        R::CessationOfOperation,
        R::CertificateHold,
        R::RemoveFromCrl,
        R::PrivilegeWithdrawn,
        R::AaCompromise,
    ];
    REVOCATION_REASONS
        .iter()
        .zip(all)
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, r)| r)
}

impl Ca {
    /// Revokes the certificate `der` for `reason`, signed with this CA's account key. When
    /// the CA refuses that as `unauthorized` (another account issued the certificate: the
    /// account file was replaced, or the certificate was adopted) and `key_pem`, the
    /// certificate's private key (PKCS#8 PEM), is given, the request is signed again with
    /// that key, which RFC 8555 §7.6 always accepts.
    pub(crate) async fn revoke(
        &self,
        der: &[u8],
        key_pem: Option<&str>,
        reason: Option<instant_acme::RevocationReason>,
    ) -> Result<(), AcmeError> {
        let account = self.account.read().await.clone();
        let cert = rustls::pki_types::CertificateDer::from(der.to_vec());
        let request = instant_acme::RevocationRequest {
            certificate: &cert,
            reason,
        };
        let e = match account.revoke(&request).await {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        let (true, Some(key_pem)) = (is_problem(&e, urn::UNAUTHORIZED), key_pem) else {
            return Err(ca_error(self.http.gate(), &e, SystemTime::now()));
        };
        tracing::info!(ca = %self.name, error = %acme_message(&e),
            "the account may not revoke the certificate; signing with the certificate's own key (RFC 8555 7.6)");
        certkey::revoke(&self.http, &self.config.directory, key_pem, &request)
            .await
            .map_err(|why| AcmeError::Ca {
                ca: self.name.clone(),
                message: format!(
                    "revocation refused for the account ({}) and with the certificate's key ({why})",
                    acme_message(&e)
                ),
            })
    }
}

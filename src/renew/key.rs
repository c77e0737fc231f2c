//! The private key a renewal orders with: a fresh one, or with `reuse_key = true` the key
//! already deployed (so TLSA/DANE "3 1 1" records and other pins of the key stay valid).
//! One function, [`fresh_key_needed`], decides; every reason to replace a reused key
//! (none deployed, another `key_type`, a revocation) is a case there.

use super::{RenewError, Renewer};
use crate::config::CertConfig;
use crate::x509::PrivateKey;

/// Why a renewal of a `reuse_key` certificate makes a new key (logged as the reason).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FreshKey {
    /// `reuse_key` is off: every renewal makes a new key (not logged).
    NotReused,
    /// No deployed key could be read (first issuance, a missing or unreadable file).
    NoDeployedKey,
    /// The deployed key is not of the configured `key_type`.
    KeyTypeChanged { deployed: String },
    /// The deployed certificate was revoked (`renewd revoke`: SPEC says its replacement has
    /// a fresh key, and keyCompromise must never keep it) or found revoked (OCSP, CRL, ARI):
    /// `state::RevokedRecord::source` says which.
    Revoked { source: String },
}

impl std::fmt::Display for FreshKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FreshKey::NotReused => f.write_str("reuse_key is off"),
            FreshKey::NoDeployedKey => f.write_str("no deployed private key could be read"),
            FreshKey::KeyTypeChanged { deployed } => {
                write!(
                    f,
                    "the deployed key is {deployed}, not the configured key_type"
                )
            }
            FreshKey::Revoked { source } => {
                write!(f, "the certificate was revoked (found by {source})")
            }
        }
    }
}

/// Whether `cert`'s next key must be new, and why; `None`: reuse `deployed`. `deployed` is
/// the key in its `key` (else `combined`) file, when readable; `owed` is a reason found
/// since its last issuance that rules the deployed key out (a revocation).
pub(crate) fn fresh_key_needed(
    cert: &CertConfig,
    deployed: Option<&PrivateKey>,
    owed: Option<FreshKey>,
) -> Option<FreshKey> {
    if !cert.reuse_key {
        return Some(FreshKey::NotReused);
    }
    if let Some(why) = owed {
        return Some(why);
    }
    let Some(key) = deployed else {
        return Some(FreshKey::NoDeployedKey);
    };
    if key.key_type() != Some(cert.key_type) {
        return Some(FreshKey::KeyTypeChanged {
            deployed: key.describe(),
        });
    }
    None
}

/// The key an order uses and its CSR.
pub(super) struct OrderKey {
    pub(super) key: PrivateKey,
    pub(super) csr: Vec<u8>,
    /// The deployed key, kept: its file is not rewritten by the swap.
    pub(super) reused: bool,
}

impl Renewer {
    /// The key for `cert`'s order ([`fresh_key_needed`]) and its CSR, with `common_name`
    /// in the subject when set. Key generation (RSA-4096 takes a while) and reading the
    /// deployed key stay off the async threads.
    pub(super) async fn order_key(&self, cert: &CertConfig) -> Result<OrderKey, RenewError> {
        // A revocation since the last issuance (`renewd revoke`, OCSP, CRL or ARI) rules
        // the deployed key out.
        let owed = self
            .record(&cert.name)
            .revoked
            .map(|r| FreshKey::Revoked { source: r.source });
        let files = cert.files.clone();
        let deployed = match cert.reuse_key {
            true => tokio::task::spawn_blocking(move || super::revoke::deployed_key(&files))
                .await
                .map_err(RenewError::KeyAborted)?,
            false => None,
        };
        let (key, reused) = match (fresh_key_needed(cert, deployed.as_ref(), owed), deployed) {
            (None, Some(key)) => (key, true),
            (why, _) => {
                let why = why.unwrap_or(FreshKey::NoDeployedKey);
                if why != FreshKey::NotReused {
                    tracing::info!(cert = %cert.name, "{}: making a new {} key: {why}",
                        cert.name, cert.key_type);
                }
                (generate(cert).await?, false)
            }
        };
        if reused {
            tracing::info!(cert = %cert.name, "{}: reusing the deployed {} key (reuse_key)",
                cert.name, key.describe());
        }
        let csr = key
            .csr_der_with_cn(&cert.domains, cert.common_name.as_deref())
            .map_err(RenewError::Csr)?;
        Ok(OrderKey { key, csr, reused })
    }
}

async fn generate(cert: &CertConfig) -> Result<PrivateKey, RenewError> {
    let key_type = cert.key_type;
    tokio::task::spawn_blocking(move || PrivateKey::generate(key_type))
        .await
        .map_err(RenewError::KeyAborted)?
        .map_err(|source| RenewError::Key { key_type, source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::KeyType;

    fn cert(extra: &str) -> CertConfig {
        let text = format!(
            "[ca.le]\ndirectory = \"https://acme.example.org/directory\"\naccept_terms = true\n\n\
             [[certificate]]\nname = \"www\"\ndomains = [\"example.org\"]\n\
             challenge = {{ type = \"http-01\", webroot = \"/var/www/html\" }}\n\
             files = {{ fullchain = \"/etc/tls/www.pem\", key = \"/etc/tls/www.key\" }}\n{extra}"
        );
        let config = crate::config::load_from_sources(&[("renewd.toml".into(), text)])
            .expect("configuration");
        (*config.certificates[0]).clone()
    }

    #[test]
    fn the_deployed_key_is_reused_only_when_nothing_rules_it_out() {
        let p256 = PrivateKey::generate(KeyType::EcdsaP256).expect("key");
        let reuse = cert("reuse_key = true\n");
        assert_eq!(fresh_key_needed(&reuse, Some(&p256), None), None);
        assert_eq!(
            fresh_key_needed(&cert(""), Some(&p256), None),
            Some(FreshKey::NotReused)
        );
        assert_eq!(
            fresh_key_needed(&reuse, None, None),
            Some(FreshKey::NoDeployedKey)
        );
        let rsa = cert("reuse_key = true\nkey_type = \"rsa-2048\"\n");
        assert_eq!(
            fresh_key_needed(&rsa, Some(&p256), None),
            Some(FreshKey::KeyTypeChanged {
                deployed: "ecdsa-p256".into()
            })
        );
        let revoked = FreshKey::Revoked {
            source: "revoke (keyCompromise)".into(),
        };
        assert_eq!(
            fresh_key_needed(&reuse, Some(&p256), Some(revoked.clone())),
            Some(revoked.clone())
        );
        assert_eq!(
            revoked.to_string(),
            "the certificate was revoked (found by revoke (keyCompromise))"
        );
    }
}

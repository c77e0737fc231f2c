//! Revoking the deployed certificate (RFC 8555 §7.6) at the CA that issued it; the
//! replacement is issued by the caller through [`Renewer::run_batch`].

use std::collections::BTreeMap;

use super::{inspect, RenewError, Renewer};
use crate::config::{CaConfig, CertConfig, FileSet};
use crate::schedule;

impl Renewer {
    /// Revokes `cert`'s deployed certificate at the CA that issued it (the first configured
    /// when unknown: [`schedule::deployed_ca`]), for `reason` (an RFC 5280 name); returns
    /// its serial.
    pub(crate) async fn revoke(
        &self,
        cert: &CertConfig,
        cas: &BTreeMap<String, CaConfig>,
        reason: Option<&str>,
    ) -> Result<String, RenewError> {
        let reason_name = reason;
        let reason = match reason {
            Some(r) => Some(
                crate::acme::revocation_reason(r)
                    .ok_or_else(|| RenewError::UnknownReason(r.to_string()))?,
            ),
            None => None,
        };
        let leaf = inspect(&cert.files)
            .await
            .map_err(RenewError::Task)?
            .map_err(RenewError::NothingToRevoke)?;
        let rec = self.record(&cert.name);
        let ca_name =
            schedule::deployed_ca(&cert.ca, rec.issued_by.as_deref()).ok_or(RenewError::NoCa)?;
        let ca_config = cas
            .get(ca_name)
            .ok_or_else(|| RenewError::CaNotConfigured(ca_name.to_string()))?;
        let ca = self.ca(ca_config).await?;
        // The deployed key, should the CA want the revocation signed with it (RFC 8555 §7.6).
        let files = cert.files.clone();
        let key_pem = tokio::task::spawn_blocking(move || deployed_key_pem(&files))
            .await
            .ok()
            .flatten();
        ca.revoke(&leaf.der, key_pem.as_deref(), reason).await?;
        // Whatever `reuse_key` says, the replacement of a revoked certificate has a new key.
        self.owe_fresh_key(
            &cert.name,
            super::key::FreshKey::Revoked {
                reason: reason_name.map(str::to_string),
            },
        );
        tracing::warn!(cert = %cert.name, ca = %ca_name, serial = %leaf.serial_hex,
            "{}: certificate revoked (serial {}, CA {ca_name}); issuing a replacement with a fresh key",
            cert.name, leaf.serial_hex);
        Ok(leaf.serial_hex)
    }
}

/// The deployed private key (the `key` file, else `combined`) as PKCS#8 PEM; `None` when it
/// cannot be read or parsed (`inspect` has checked it a moment before). A regular file only
/// (opened without blocking, so a FIFO swapped in cannot hang it), at most 1 MiB read.
fn deployed_key_pem(files: &FileSet) -> Option<String> {
    deployed_key(files).map(|k| k.to_pem())
}

/// The deployed private key (the `key` file, else `combined`), read as [`deployed_key_pem`]
/// says; `None` when there is none or it cannot be read or parsed.
pub(super) fn deployed_key(files: &FileSet) -> Option<crate::x509::PrivateKey> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let path = files.key.as_deref().or(files.combined.as_deref())?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path)
        .ok()?;
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    let mut pem = Vec::new();
    file.take(1 << 20).read_to_end(&mut pem).ok()?;
    crate::x509::pem_private_key(&pem).ok()
}

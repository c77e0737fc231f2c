//! One certificate's issuance, up to its swap: choose the CA, key → CSR → order → check
//! what the CA sent ([`check_issued`]) → stage the files and begin the swap. Reloading,
//! proving and finishing the swap are the batch's ([`super::settle`]).

use std::collections::BTreeMap;
use std::time::SystemTime;

use tracing::Instrument;

use super::{clock_problem, inspect, RenewError, Renewed, Renewer, CLOCK_SKEW};
use crate::acme::{Ca, OrderOutcome};
use crate::config::{CaConfig, CertConfig};
use crate::deploy::journal::Swap;
use crate::deploy::{self, Material, Ownership};
use crate::logging;
use crate::schedule;
use crate::state::CertRecord;
use crate::x509::{self, CertInfo, PrivateKey};

use super::IssuedError;

/// What [`Renewer::renew_one`] hands on: the issued certificate and, unless dry-run, its
/// swap (with the new leaf's DER, for the proof).
pub(super) struct Issued {
    pub(super) renewed: Renewed,
    pub(super) swap: Option<(Swap, Vec<u8>)>,
}

impl Renewer {
    /// Renews one certificate up to its swap. An issuance failure is recorded here; the
    /// outcome of a swap is recorded by [`Renewer::settle`], once reloaded and proven.
    pub(super) async fn renew_one(
        &self,
        cert: &CertConfig,
        cas: &BTreeMap<String, CaConfig>,
        dry_run: bool,
    ) -> Result<Issued, RenewError> {
        let now = SystemTime::now();
        // Every line of the order (CA=, ORDER=) carries the certificate too (CERT=).
        let result = self
            .issue_and_deploy(cert, cas, dry_run)
            .instrument(tracing::info_span!("renewal", cert = %cert.name))
            .await;
        match (&result, dry_run) {
            (Ok(r), true) => {
                logging::dry_run_succeeded(&cert.name, &r.renewed.ca, &r.renewed.order_url)
            }
            (Err(e), true) => logging::dry_run_failed(&cert.name, &e.to_string()),
            (Ok(_), false) => {}
            (Err(e), false) => {
                let message = e.to_string();
                logging::renewal_failed(&cert.name, &message);
                self.update(&cert.name, |r| {
                    r.record_failure(now, e.retry_after(), message)
                });
            }
        }
        result
    }

    async fn issue_and_deploy(
        &self,
        cert: &CertConfig,
        cas: &BTreeMap<String, CaConfig>,
        dry_run: bool,
    ) -> Result<Issued, RenewError> {
        let rec = self.record(&cert.name);
        let ca_config = order_ca(cert, &rec, cas)?;
        let ownership = Ownership::resolve(cert.user.as_deref(), cert.group.as_deref())
            .map_err(RenewError::Ownership)?;
        // A dry run never finalizes, so it needs neither key nor CSR.
        let key_csr = match dry_run {
            true => None,
            false => Some(self.order_key(cert).await?),
        };
        let ca = self.ca(ca_config).await?;
        check_clock(&ca).await?;
        let replaced = replaced(cert, &rec, ca_config).await;
        let options = crate::acme::OrderOptions {
            // A dry run's order is never finalized: it must not claim the deployed
            // certificate's replacement (a CA may hold that claim against the real one).
            replaces: replaced.as_ref().filter(|_| !dry_run),
            profile: cert.profile.as_deref().or(ca_config.profile.as_deref()),
            dry_run,
            preferred_chain: cert.preferred_chain.as_deref(),
        };
        let outcome = ca
            .issue(
                &cert.domains,
                key_csr.as_ref().map_or(&[][..], |k| k.csr.as_slice()),
                &cert.challenge,
                &self.responders,
                options,
            )
            .await?;
        let (issued, key) = match (outcome, key_csr) {
            (OrderOutcome::Issued(issued), Some(k)) => (issued, k),
            (OrderOutcome::Rehearsed { order_url, .. }, _) => {
                return Ok(Issued {
                    renewed: Renewed {
                        ca: ca.name().to_string(),
                        serial: String::new(),
                        not_after: SystemTime::UNIX_EPOCH,
                        order_url,
                        deployed_sha256: None,
                    },
                    swap: None,
                })
            }
            (OrderOutcome::Issued(_), None) => return Err(RenewError::DryRunFinalized),
        };
        let (material, leaf) = check_issued(
            &issued.chain_pem,
            &key.key,
            &cert.domains,
            SystemTime::now(),
        )
        .map_err(|source| RenewError::Unusable {
            ca: ca_config.name.clone(),
            order_url: issued.order_url.clone(),
            source,
        })?;
        let (swap, digest) = self
            .stage(cert, material, ownership, &leaf, key.reused)
            .await?;
        let mut renewed = renewed(&ca, &leaf, issued.order_url);
        renewed.deployed_sha256 = Some(digest);
        Ok(Issued {
            renewed,
            swap: Some((swap, leaf.der)),
        })
    }

    /// Writes the new files beside the old ones and begins the swap (its journal first).
    /// Also returns the [`deploy::set_digest`] of the whole configured set as rendered (a
    /// reused key as renewd writes it: if the file's bytes differ, the digest will not match
    /// and the set is checked in full when read).
    async fn stage(
        &self,
        cert: &CertConfig,
        material: Material,
        ownership: Ownership,
        leaf: &CertInfo,
        key_reused: bool,
    ) -> Result<(Swap, deploy::SetDigest), RenewError> {
        let all = cert.files.clone();
        let mut files = cert.files.clone();
        if key_reused {
            // `reuse_key`: the key file is left as it is (inode, mode, owner), outside the
            // swap; a `combined` file is rewritten with the same key.
            files.key = None;
        }
        let key_mode = cert.key_mode;
        let journal_dir = self.state.journal_dir();
        let name = cert.name.clone();
        let serial = leaf.serial_hex.clone();
        let pkcs12_password = cert
            .pkcs12_password_path()
            .filter(|_| files.pkcs12.is_some());
        let mut material = material;
        tokio::task::spawn_blocking(move || {
            if let Some(path) = pkcs12_password {
                let password = deploy::pkcs12::read_password(&path).map_err(RenewError::Pkcs12)?;
                let der = deploy::pkcs12::encode(&material, &name, &password)
                    .map_err(RenewError::Pkcs12)?;
                material.pkcs12 = Some(der);
            }
            let rendered = deploy::render(&all, &material);
            let digest = deploy::set_digest(rendered.iter().map(|(k, _, d)| (*k, &d[..])));
            let staged = deploy::stage(&files, &material, &ownership, key_mode)
                .map_err(RenewError::Stage)?;
            Swap::begin(&journal_dir, &name, &serial, staged)
                .map(|swap| (swap, digest))
                .map_err(RenewError::Journal)
        })
        .await
        .map_err(RenewError::DeployAborted)?
    }
}

/// This host's clock against the CA's, from a fresh answer (the directory): a wrong host clock
/// is not the CA's fault, and ordering would waste a certificate.
async fn check_clock(ca: &crate::acme::Ca) -> Result<(), RenewError> {
    let name = ca.name();
    if let Err(e) = ca.refresh_clock().await {
        tracing::debug!(ca = %name, error = %e, "cannot read the directory to compare clocks");
    }
    match clock_problem(name, crate::acme::clock_offset(name)) {
        Some(why) => Err(RenewError::ClockSkew(why)),
        None => Ok(()),
    }
}

/// The CA the next order of `cert` uses: the first, or a fallback after repeated
/// failures (`ca = ["first", "second"]`, [`schedule::order_ca`]).
fn order_ca<'a>(
    cert: &CertConfig,
    rec: &CertRecord,
    cas: &'a BTreeMap<String, CaConfig>,
) -> Result<&'a CaConfig, RenewError> {
    let failures = rec.consecutive_failures;
    let ca_name = schedule::order_ca(&cert.ca, failures).ok_or(RenewError::NoCa)?;
    if Some(ca_name) != cert.ca.first().map(String::as_str) {
        tracing::warn!(ca = %ca_name, failures,
            "{}: falling back to CA {ca_name} after {failures} failures in a row", cert.name);
    }
    cas.get(ca_name)
        .ok_or_else(|| RenewError::CaNotConfigured(ca_name.to_string()))
}

/// The deployed certificate, for `replaces`, when CA `ca_config` issued it and gave ARI
/// advice about it (`ari = false`: never, whatever advice was recorded before).
async fn replaced(cert: &CertConfig, rec: &CertRecord, ca_config: &CaConfig) -> Option<CertInfo> {
    if !ca_config.ari || rec.issued_by.as_deref() != Some(ca_config.name.as_str()) {
        return None;
    }
    let leaf = inspect(&cert.files).await.ok()?.ok()?;
    schedule::ari::advice(rec.ari.as_ref(), &leaf.serial_hex)?;
    Some(leaf)
}

fn renewed(ca: &Ca, leaf: &CertInfo, order_url: String) -> Renewed {
    Renewed {
        ca: ca.name().to_string(),
        serial: leaf.serial_hex.clone(),
        not_after: leaf.not_after,
        order_url,
        deployed_sha256: None,
    }
}

/// Checks a chain the CA sent before anything is written: it parses, its leaf matches our
/// key, covers every configured name, is valid now, and each certificate is signed by the
/// next one the CA sent (a chain of the leaf alone is accepted: some private CAs send no
/// intermediates). Returns what to deploy.
pub(crate) fn check_issued(
    chain_pem: &str,
    key: &PrivateKey,
    names: &[String],
    now: SystemTime,
) -> Result<(Material, CertInfo), IssuedError> {
    let blocks = pem_blocks(chain_pem);
    let ders = x509::pem_certificates(chain_pem.as_bytes()).map_err(IssuedError::Pem)?;
    if blocks.len() != ders.len() {
        return Err(IssuedError::MalformedBlocks);
    }
    let leaf = CertInfo::parse_der(&ders[0]).map_err(IssuedError::Leaf)?;
    for (index, der) in ders.iter().enumerate().skip(1) {
        CertInfo::parse_der(der).map_err(|source| IssuedError::Chain { index, source })?;
    }
    if !key.matches(&leaf) {
        return Err(IssuedError::OtherKey);
    }
    let missing = leaf.missing_names(names);
    if !missing.is_empty() {
        return Err(IssuedError::MissingNames(missing));
    }
    if leaf.not_after <= now || leaf.not_before > now + CLOCK_SKEW {
        return Err(IssuedError::NotValidNow {
            not_before: leaf.not_before,
            not_after: leaf.not_after,
        });
    }
    for (index, pair) in ders.windows(2).enumerate() {
        x509::verify_issued_by(&pair[0], &pair[1]).map_err(|source| match index {
            0 => IssuedError::NotSignedByIntermediate(source),
            _ => IssuedError::NotSignedByNext { index, source },
        })?;
    }
    Ok((
        Material {
            key_pem: key.to_pem(),
            chain_pem: blocks,
            pkcs12: None,
        },
        leaf,
    ))
}

/// The CERTIFICATE blocks of a PEM text, each ending with a newline.
fn pem_blocks(pem: &str) -> Vec<String> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let mut out = Vec::new();
    let mut rest = pem;
    while let Some(start) = rest.find(BEGIN) {
        let Some(len) = rest[start..].find(END) else {
            break;
        };
        let end = start + len + END.len();
        out.push(format!("{}\n", &rest[start..end]));
        rest = &rest[end..];
    }
    out
}

#[cfg(test)]
mod tests;

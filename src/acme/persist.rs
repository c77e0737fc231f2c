//! What dns-persist-01 (draft-ietf-acme-dns-persist) needs from a CA besides the order: its
//! issuer domain name, learnt without an order.
//!
//! instant-acme 0.8 drops a challenge object's `issuer-domain-names`, and `renewd
//! persist-record` must print the record before any order exists; so the name comes from
//! `[ca.NAME] issuer_domain_name` when set, else from the directory's
//! `meta.issuerDomainNames` (draft-ietf-acme-dns-persist-02 §3.2: every name listed there is
//! accepted by every dns-persist-01 challenge of the CA). Pebble 2.10 advertises none, so
//! its tests set `issuer_domain_name = "pebble.letsencrypt.org"`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use super::gate::Gate;
use super::http::{directory_json, CaHttp};
use super::{Ca, DirectoryError};
use crate::config::CaConfig;

/// Most names the draft lets a CA list (§3.1, §3.2).
const MAX_ISSUER_NAMES: usize = 10;

/// Why the issuer domain name is not known.
#[derive(Debug, thiserror::Error)]
pub(crate) enum IssuerNameError {
    #[error("CA {ca}: cannot read its directory: {source}")]
    Directory { ca: String, source: DirectoryError },
    #[error(
        "CA {ca} advertises no usable `meta.issuerDomainNames` in its directory \
         (draft-ietf-acme-dns-persist §3.2): set `issuer_domain_name` in [ca.{ca}] to the \
         name its documentation gives for dns-persist-01 records"
    )]
    NotAdvertised { ca: String },
    #[error("CA {ca}: no answer within {}s", .after.as_secs())]
    Timeout {
        ca: String,
        after: std::time::Duration,
    },
}

/// The issuer domain name to write in `config`'s dns-persist-01 records: the configured one,
/// else the first the directory advertises (one GET through a client like every other
/// request to this CA; its pause in `pause_file` is respected).
pub(crate) async fn issuer_domain_name(
    config: &CaConfig,
    pause_file: PathBuf,
) -> Result<String, IssuerNameError> {
    if let Some(name) = &config.issuer_domain_name {
        return Ok(name.clone());
    }
    let gate = Arc::new(Gate::open(&config.name, pause_file, SystemTime::now()));
    let http = CaHttp::new(config, gate).map_err(|e| IssuerNameError::Directory {
        ca: config.name.clone(),
        source: e.into(),
    })?;
    advertised(config, &http).await
}

/// The first conforming name of the directory's `meta.issuerDomainNames`.
async fn advertised(config: &CaConfig, http: &CaHttp) -> Result<String, IssuerNameError> {
    let dir = directory_json(http, &config.directory)
        .await
        .map_err(|source| IssuerNameError::Directory {
            ca: config.name.clone(),
            source,
        })?;
    first_conforming(&dir["meta"]["issuerDomainNames"]).ok_or_else(|| {
        IssuerNameError::NotAdvertised {
            ca: config.name.clone(),
        }
    })
}

/// The first name of a conforming `issuerDomainNames` array (1 to 10 lowercase names, no
/// trailing dot, at most 253 octets each); `None` for a missing or nonconforming one, which
/// the draft says to treat as unavailable.
fn first_conforming(names: &serde_json::Value) -> Option<String> {
    let names = names.as_array()?;
    if names.is_empty() || names.len() > MAX_ISSUER_NAMES {
        return None;
    }
    let conforming = |n: &serde_json::Value| {
        n.as_str().is_some_and(|s| {
            !s.is_empty()
                && s.len() <= 253
                && !s.ends_with('.')
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        })
    };
    if !names.iter().all(conforming) {
        return None;
    }
    names.first()?.as_str().map(str::to_string)
}

impl Ca {
    /// The URL of the account this CA is used with: dns-persist-01's `accounturi`.
    pub(crate) async fn account_url(&self) -> String {
        self.account.read().await.id().to_string()
    }

    /// The issuer domain name for this CA's dns-persist-01 records (see the module
    /// documentation); `None` (logged) when it cannot be learnt, which the challenge then
    /// reports.
    pub(crate) async fn issuer_domain_name(&self) -> Option<String> {
        if let Some(name) = &self.config.issuer_domain_name {
            return Some(name.clone());
        }
        match advertised(&self.config, &self.http).await {
            Ok(name) => Some(name),
            Err(e) => {
                tracing::warn!(ca = %self.name, error = %e, "no issuer domain name");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_a_conforming_directory_list_is_used() {
        assert_eq!(
            first_conforming(&json!(["ca.example", "other.example"])).as_deref(),
            Some("ca.example")
        );
        for bad in [
            json!([]),
            json!("ca.example"),
            json!(["CA.example"]),
            json!(["ca.example."]),
            json!(["ca.example", 3]),
            json!(vec!["a.example"; 11]),
            serde_json::Value::Null,
        ] {
            assert_eq!(first_conforming(&bad), None, "{bad}");
        }
    }
}

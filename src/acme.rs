//! Talking to ACME CAs (RFC 8555) through `instant-acme`, one file per RFC object:
//! - [`Ca`] (here): one configured CA, its account open, its HTTP client and gate built
//!   once and shared by everything sent to it;
//! - `account`: the account kept in the state directory (RFC 8555 §7.3): registration
//!   with external account binding, key rollover, deactivation;
//! - `order`: the order → authorizations → finalize → download pipeline (§7.4, §7.5);
//! - `renewal_info`: ACME Renewal Information (RFC 9773);
//! - `revocation` and `certkey`: revocation (§7.6), with the certificate's own key when
//!   the account may not;
//! - `http`: renewd's HTTP client for instant-acme (deadlines, retries, Retry-After,
//!   `User-Agent`, the CA's clock, unusable URLs);
//! - `gate`: the per-CA gate that holds every request back while the CA asked renewd to
//!   wait, remembered across restarts when long;
//! - `problem`: problem documents (§6.7), the classification of answers, [`AcmeError`].

use std::sync::Arc;
use std::time::SystemTime;

use instant_acme::Account;

pub(crate) mod account;
mod certkey;
mod chain;
mod gate;
mod http;
mod order;
pub(crate) mod persist;
mod problem;
mod renewal_info;
mod revocation;
#[cfg(test)]
mod tests;

pub(crate) use gate::pause_of;
pub(crate) use http::clock_offset;
pub use http::{advertised_profiles, DirectoryError};
pub(crate) use order::{OrderOptions, OrderOutcome};
pub(crate) use problem::AcmeError;
pub(crate) use revocation::revocation_reason;
pub use revocation::REVOCATION_REASONS;

use crate::state::CaFiles;
use account::load_or_register;
use gate::Gate;
use http::CaHttp;

/// One configured CA with its account, ready to take orders.
pub(crate) struct Ca {
    name: String,
    config: crate::config::CaConfig,
    files: CaFiles,
    account: tokio::sync::RwLock<Account>,
    /// The one client (and gate) for everything sent to this CA.
    http: CaHttp,
}

impl Ca {
    /// Loads this CA's account from `files.account`, or registers one (and stores it, 0600)
    /// when there is none or it belongs to another directory.
    ///
    /// A CA paused by an earlier answer (rate limit, long Retry-After; remembered in
    /// `files.pause`) is not contacted: the error says until when.
    pub(crate) async fn open(
        config: &crate::config::CaConfig,
        files: &CaFiles,
    ) -> Result<Ca, AcmeError> {
        let now = SystemTime::now();
        let gate = Arc::new(Gate::open(&config.name, files.pause.clone(), now));
        if let Some((until, why)) = gate.paused(now) {
            return Err(AcmeError::Paused {
                ca: config.name.clone(),
                until,
                why: format!("not contacted: paused after {why}"),
            });
        }
        let http = CaHttp::new(config, gate)?;
        let account = load_or_register(config, &files.account, false, &http).await?;
        Ok(Ca {
            name: config.name.clone(),
            config: config.clone(),
            files: files.clone(),
            account: tokio::sync::RwLock::new(account),
            http,
        })
    }

    /// The CA's name in the configuration.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Notes the CA's clock now ([`clock_offset`], from the `Date` header): one fresh GET of
    /// the directory through this CA's client, its body read but not needed.
    pub(crate) async fn refresh_clock(&self) -> Result<(), DirectoryError> {
        http::directory_json(&self.http, &self.config.directory)
            .await
            .map(drop)
    }

    /// Registers a new account (the CA forgot the one stored) and uses it from now on.
    async fn register_again(&self) -> Result<(), AcmeError> {
        let fresh = load_or_register(&self.config, &self.files.account, true, &self.http).await?;
        *self.account.write().await = fresh;
        Ok(())
    }
}

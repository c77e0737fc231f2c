//! The ACME account (RFC 8555 §7.3) kept in the state directory: loaded, or registered
//! (with external account binding, §7.3.4) when there is none; and `renewd account`'s
//! maintenance — what is stored, key rollover (§7.3.5), deactivation (§7.3.6). Nothing
//! but [`load_or_register`] registers an account.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use instant_acme::{Account, AccountCredentials, NewAccount};
use serde::{Deserialize, Serialize};

use super::gate::Gate;
use super::http::CaHttp;
use super::problem::{ca_error, AcmeError};
use crate::config::CaConfig;
use crate::fsutil;
use crate::state::CaFiles;

/// The account file: the credentials, and the directory they belong to, so that pointing a
/// CA name at another directory registers a new account instead of using a stranger's key.
#[derive(Serialize, Deserialize)]
struct StoredAccount {
    directory: String,
    credentials: AccountCredentials,
}

/// The account file `path` of CA `config`, and the errors about it.
struct AccountFile<'a> {
    config: &'a CaConfig,
    path: &'a Path,
}

impl AccountFile<'_> {
    fn io(&self, source: io::Error) -> AcmeError {
        AcmeError::AccountFile {
            ca: self.config.name.clone(),
            path: self.path.to_path_buf(),
            source,
        }
    }

    fn ca(&self, message: String) -> AcmeError {
        AcmeError::Ca {
            ca: self.config.name.clone(),
            message,
        }
    }

    fn unreadable(&self, e: serde_json::Error) -> AcmeError {
        self.ca(format!(
            "account file {} is unreadable: {e}",
            self.path.display()
        ))
    }

    fn foreign(&self, directory: impl std::fmt::Display) -> AcmeError {
        self.ca(format!(
            "the account in {} belongs to {directory}, not to this CA's directory",
            self.path.display()
        ))
    }

    /// The file's bytes; `Ok(None)` when there is none.
    fn read(&self) -> Result<Option<Vec<u8>>, AcmeError> {
        match fsutil::read_regular(self.path, fsutil::caps::STATE, fsutil::Follow::No)
            .map_err(fsutil::ReadError::into_io)
        {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io(e)),
        }
    }

    /// Where the file goes when it is replaced: `NAME.json.{tag}TIMESTAMP`, beside it.
    fn aside(&self, tag: &str) -> PathBuf {
        self.path.with_extension(format!(
            "json.{tag}{}",
            crate::state::unix(SystemTime::now())
        ))
    }

    /// Stores `credentials` (0600, atomically).
    fn write(&self, credentials: AccountCredentials) -> Result<(), AcmeError> {
        let stored = StoredAccount {
            directory: self.config.directory.clone(),
            credentials,
        };
        let bytes = serde_json::to_vec_pretty(&stored).map_err(|e| self.io(io::Error::other(e)))?;
        fsutil::write_atomic(self.path, &bytes, 0o600).map_err(|e| self.io(e))
    }
}

/// The account of CA `config` stored in `path`, through `http`; or, when there is none, it
/// belongs to another directory or `force_new` (the CA forgot it), a new one registered
/// and stored (0600). An account file replaced is kept beside (`.json.TIMESTAMP`).
pub(crate) async fn load_or_register(
    config: &CaConfig,
    path: &Path,
    force_new: bool,
    http: &CaHttp,
) -> Result<Account, AcmeError> {
    let ca = &config.name;
    let file = AccountFile { config, path };
    let ca_err = |e: instant_acme::Error| ca_error(http.gate(), &e, SystemTime::now());
    if !force_new {
        if let Some(bytes) = file.read()? {
            match serde_json::from_slice::<StoredAccount>(&bytes) {
                Ok(stored) if stored.directory == config.directory => {
                    return Account::builder_with_http(Box::new(http.clone()))
                        .from_credentials(stored.credentials)
                        .await
                        .map_err(ca_err);
                }
                Ok(_) => {
                    tracing::info!(ca = %ca, "account belongs to another directory URL; registering a new one")
                }
                Err(e) => {
                    tracing::warn!(ca = %ca, path = %path.display(), error = %e,
                        "account file is unreadable; registering a new account")
                }
            }
        }
    }
    // Keep whatever was there: an account key is never thrown away.
    if path.exists() {
        fs::rename(path, file.aside("")).map_err(|e| file.io(e))?;
    }
    let contact: Vec<&str> = config.contact.iter().map(String::as_str).collect();
    let eab = eab_key(config)?;
    let (account, credentials) = Account::builder_with_http(Box::new(http.clone()))
        .create(
            &NewAccount {
                contact: &contact,
                terms_of_service_agreed: config.accept_terms,
                only_return_existing: false,
            },
            config.directory.clone(),
            eab.as_ref(),
        )
        .await
        .map_err(ca_err)?;
    file.write(credentials)?;
    tracing::info!(ca = %ca, account = %account.id(), "ACME account registered");
    Ok(account)
}

/// The external account binding key (RFC 8555 §7.3.4), when the CA is configured with one:
/// `eab_kid` and the HMAC key read (base64url, as CAs hand them out; standard base64
/// accepted) from `eab_hmac_key_file` or systemd's credentials directory. The key is never
/// logged.
fn eab_key(config: &CaConfig) -> Result<Option<instant_acme::ExternalAccountKey>, AcmeError> {
    let (Some(kid), Some(path)) = (&config.eab_kid, config.eab_key_path()) else {
        return Ok(None);
    };
    let err = |message: String| AcmeError::Ca {
        ca: config.name.clone(),
        message,
    };
    let text = fsutil::read_regular_string(&path, fsutil::caps::SECRET, fsutil::Follow::Yes)
        .map_err(|e| err(format!("cannot read the EAB key: {e}")))?;
    let text = text.trim();
    let key = [
        data_encoding::BASE64URL_NOPAD,
        data_encoding::BASE64URL,
        data_encoding::BASE64,
        data_encoding::BASE64_NOPAD,
    ]
    .iter()
    .find_map(|enc| enc.decode(text.as_bytes()).ok())
    .filter(|k| !k.is_empty())
    .ok_or_else(|| {
        err(format!(
            "the EAB key in {} is not base64url (the CA's HMAC key, as it gave it)",
            path.display()
        ))
    })?;
    Ok(Some(instant_acme::ExternalAccountKey::new(
        kid.clone(),
        &key,
    )))
}

/// The stored account of CA `config` in `path`, for maintenance: an error when there is
/// none (nothing here registers one).
async fn load(config: &CaConfig, files: &CaFiles) -> Result<(Account, Arc<Gate>), AcmeError> {
    let path = files.account.as_path();
    let file = AccountFile { config, path };
    let Some(bytes) = file.read()? else {
        return Err(file.ca(format!(
            "no account yet ({} does not exist); one is registered at the first order",
            path.display()
        )));
    };
    let stored: StoredAccount = serde_json::from_slice(&bytes).map_err(|e| file.unreadable(e))?;
    if stored.directory != config.directory {
        return Err(file.foreign(&stored.directory));
    }
    let gate = Arc::new(Gate::open(
        &config.name,
        files.pause.clone(),
        SystemTime::now(),
    ));
    let http = CaHttp::new(config, gate.clone())?;
    let account = Account::builder_with_http(Box::new(http))
        .from_credentials(stored.credentials)
        .await
        .map_err(|e| ca_error(&gate, &e, SystemTime::now()))?;
    Ok((account, gate))
}

/// The account's URL as stored in `path`, without asking the CA (`renewd account show`
/// works offline and beside a running daemon). `Ok(None)`: no account yet.
pub(crate) fn stored_id(config: &CaConfig, path: &Path) -> Result<Option<String>, AcmeError> {
    let file = AccountFile { config, path };
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(file.io(source)),
    };
    let stored: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| file.unreadable(e))?;
    if stored["directory"].as_str() != Some(config.directory.as_str()) {
        return Err(file.foreign(&stored["directory"]));
    }
    match stored["credentials"]["id"].as_str() {
        Some(id) => Ok(Some(id.to_string())),
        None => Err(file.ca(format!(
            "account file {} holds no account URL (credentials.id)",
            path.display()
        ))),
    }
}

/// The stored account's private key (PKCS#8 DER), for a request instant-acme does not make
/// (POST-as-GET of an alternate chain, RFC 8555 §7.4.2). Errors name the file.
pub(super) fn stored_key(config: &CaConfig, path: &Path) -> Result<Vec<u8>, AcmeError> {
    let file = AccountFile { config, path };
    let Some(bytes) = file.read()? else {
        return Err(file.ca(format!("no account file at {}", path.display())));
    };
    let stored: StoredAccount = serde_json::from_slice(&bytes).map_err(|e| file.unreadable(e))?;
    if stored.directory != config.directory {
        return Err(file.foreign(&stored.directory));
    }
    Ok(stored.credentials.private_key().secret_pkcs8_der().to_vec())
}

/// Replaces the account key at the CA (RFC 8555 §7.3.5) and stores the new one; the
/// old file is kept beside it (`.json.TIMESTAMP`). Returns the account URL.
pub(crate) async fn rollover_key(config: &CaConfig, files: &CaFiles) -> Result<String, AcmeError> {
    let path = files.account.as_path();
    let file = AccountFile { config, path };
    let (mut account, gate) = load(config, files).await?;
    let credentials = account
        .update_key()
        .await
        .map_err(|e| ca_error(&gate, &e, SystemTime::now()))?;
    fs::hard_link(path, file.aside("")).map_err(|e| file.io(e))?;
    file.write(credentials)?;
    tracing::info!(ca = %config.name, account = %account.id(), "account key rolled over");
    Ok(account.id().to_string())
}

/// Deactivates the account at the CA (RFC 8555 §7.3.6); its file is renamed aside
/// (`.json.deactivated-TIMESTAMP`), so the next order registers a new account.
pub(crate) async fn deactivate(config: &CaConfig, files: &CaFiles) -> Result<String, AcmeError> {
    let path = files.account.as_path();
    let file = AccountFile { config, path };
    let (account, gate) = load(config, files).await?;
    let id = account.id().to_string();
    account
        .deactivate()
        .await
        .map_err(|e| ca_error(&gate, &e, SystemTime::now()))?;
    fs::rename(path, file.aside("deactivated-")).map_err(|e| file.io(e))?;
    tracing::warn!(ca = %config.name, account = %id, "account deactivated");
    Ok(id)
}

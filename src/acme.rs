//! Talking to ACME CAs (RFC 8555) through `instant-acme`: accounts kept in the state
//! directory, and the order → authorize → finalize → download pipeline.
//!
//! renewd brings its own HTTP client for instant-acme for two reasons: every request and
//! every response body has a deadline (a CA that stalls must not hang a renewal forever),
//! and a CA's `trust_roots` are *added* to the system's roots rather than replacing them.

use std::fs;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, BodyWrapper, BytesResponse, ChallengeType,
    HttpClient, Identifier, NewAccount, NewOrder, OrderStatus, RetryPolicy,
};
use serde::{Deserialize, Serialize};

use crate::challenge::{Answer, Provisioned, Responders};
use crate::config::{CaConfig, ChallengeConfig, Challenges};
use crate::fsutil;

/// Deadline for one HTTP exchange with a CA, headers and body.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest response body accepted from a CA (a certificate chain is a few KiB).
const MAX_BODY: usize = 1 << 20;
/// How long to wait for the CA to validate an order and then to issue it.
const ORDER_TIMEOUT: Duration = Duration::from_secs(120);
/// Orders started for one issuance when the CA keeps rejecting nonces.
const ORDER_ATTEMPTS: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    #[error("CA {ca}: {message}")]
    Ca { ca: String, message: String },
    #[error("CA {ca}: validation of {identifier} failed: {message}")]
    Validation {
        ca: String,
        identifier: String,
        message: String,
    },
    #[error("CA {ca}: cannot read trust_roots {path}: {message}")]
    TrustRoots {
        ca: String,
        path: PathBuf,
        message: String,
    },
    #[error("CA {ca}: account file {path}: {source}")]
    AccountFile {
        ca: String,
        path: PathBuf,
        source: io::Error,
    },
    #[error(transparent)]
    Challenge(#[from] crate::challenge::ChallengeError),
}

fn is_bad_nonce(e: &instant_acme::Error) -> bool {
    matches!(e, instant_acme::Error::Api(p)
        if p.r#type.as_deref() == Some("urn:ietf:params:acme:error:badNonce"))
}

/// A problem type meaning the CA does not know our account (any more): the CA was reset,
/// or the account was deactivated elsewhere.
fn account_is_gone(e: &instant_acme::Error) -> bool {
    matches!(e, instant_acme::Error::Api(p) if matches!(
        p.r#type.as_deref(),
        Some("urn:ietf:params:acme:error:accountDoesNotExist")
            | Some("urn:ietf:params:acme:error:unauthorized")
    ))
}

/// instant-acme's HTTP client interface, on hyper with rustls and deadlines.
struct CaHttp {
    client: HyperClient<hyper_rustls::HttpsConnector<HttpConnector>, BodyWrapper<Bytes>>,
}

impl CaHttp {
    fn new(extra_roots: Option<&Path>) -> Result<CaHttp, String> {
        let mut roots = rustls::RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        for cert in native.certs {
            let _ = roots.add(cert);
        }
        if let Some(path) = extra_roots {
            let pem = fs::read(path).map_err(|e| e.to_string())?;
            let mut n = 0;
            for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
                let cert = cert.map_err(|e| format!("not a PEM certificate bundle: {e}"))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("certificate rejected as a trust root: {e}"))?;
                n += 1;
            }
            if n == 0 {
                return Err("no CERTIFICATE block found".into());
            }
        }
        if roots.is_empty() {
            return Err("no trust roots: install ca-certificates or set trust_roots".into());
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(Duration::from_secs(10)));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let client = HyperClient::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Ok(CaHttp { client })
    }
}

impl HttpClient for CaHttp {
    fn request(
        &self,
        req: http::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let uri = req.uri().clone();
        let fut = self.client.request(req);
        Box::pin(async move {
            let fail = |what: String| instant_acme::Error::Other(what.into());
            let exchange = async {
                let rsp = fut
                    .await
                    .map_err(|e| fail(format!("{uri}: {}", error_chain(&e))))?;
                let (parts, body) = rsp.into_parts();
                let body = Limited::new(body, MAX_BODY)
                    .collect()
                    .await
                    .map_err(|e| fail(format!("{uri}: reading the response: {e}")))?
                    .to_bytes();
                Ok(BytesResponse::from(http::Response::from_parts(
                    parts,
                    Full::new(body),
                )))
            };
            tokio::time::timeout(REQUEST_TIMEOUT, exchange)
                .await
                .map_err(|_| {
                    fail(format!(
                        "{uri}: no complete answer within {REQUEST_TIMEOUT:?}"
                    ))
                })?
        })
    }
}

/// The error and its causes on one line: hyper's top-level errors ("client error
/// (Connect)") say little without them.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

/// The account file: the credentials, and the directory they belong to, so that pointing a
/// CA name at another directory registers a new account instead of using a stranger's key.
#[derive(Serialize, Deserialize)]
struct StoredAccount {
    directory: String,
    credentials: AccountCredentials,
}

/// One configured CA with its account, ready to take orders.
pub struct Ca {
    name: String,
    config: CaConfig,
    account_path: PathBuf,
    account: tokio::sync::RwLock<Account>,
}

/// The result of a completed order.
pub struct Issued {
    /// The chain as the CA sent it: leaf first, PEM.
    pub chain_pem: String,
    pub order_url: String,
}

impl Ca {
    /// Loads this CA's account from `account_path`, or registers one (and stores it, 0600)
    /// when there is none or it belongs to another directory.
    pub async fn open(config: &CaConfig, account_path: &Path) -> Result<Ca, AcmeError> {
        let account = load_or_register(config, account_path, false).await?;
        Ok(Ca {
            name: config.name.clone(),
            config: config.clone(),
            account_path: account_path.to_path_buf(),
            account: tokio::sync::RwLock::new(account),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Orders a certificate for `names` with the CSR `csr_der`, answering challenges through
    /// `responders` as `challenge` says for each name.
    ///
    /// When the CA no longer knows the account (it was reset, or the account deactivated),
    /// a new account is registered once and the order retried. An order that fails on a
    /// `badNonce` that outlived instant-acme's own retries is started again, up to
    /// [`ORDER_ATTEMPTS`] times: the CA rejected a nonce, not the request.
    pub async fn issue(
        &self,
        names: &[String],
        csr_der: &[u8],
        challenge: &Challenges,
        responders: &Responders,
    ) -> Result<Issued, AcmeError> {
        let mut attempts = 0;
        let mut registered_again = false;
        loop {
            attempts += 1;
            let account = self.account.read().await.clone();
            match self
                .order(&account, names, csr_der, challenge, responders)
                .await
            {
                Err(OrderError::Acme(e)) if account_is_gone(&e) && !registered_again => {
                    tracing::warn!(ca = %self.name, error = %e,
                        "the CA does not know renewd's account; registering a new one");
                    let fresh = load_or_register(&self.config, &self.account_path, true).await?;
                    *self.account.write().await = fresh;
                    registered_again = true;
                }
                Err(OrderError::Acme(e)) if is_bad_nonce(&e) && attempts < ORDER_ATTEMPTS => {
                    tracing::warn!(ca = %self.name, error = %e, attempt = attempts,
                        "the CA rejected a nonce repeatedly; starting the order again");
                }
                other => return other.map_err(|e| self.describe(e)),
            }
        }
    }

    fn describe(&self, e: OrderError) -> AcmeError {
        match e {
            OrderError::Acme(e) => AcmeError::Ca {
                ca: self.name.clone(),
                message: acme_message(&e),
            },
            OrderError::Validation {
                identifier,
                message,
            } => AcmeError::Validation {
                ca: self.name.clone(),
                identifier,
                message,
            },
            OrderError::Challenge(e) => AcmeError::Challenge(e),
        }
    }

    async fn order(
        &self,
        account: &Account,
        names: &[String],
        csr_der: &[u8],
        challenges: &Challenges,
        responders: &Responders,
    ) -> Result<Issued, OrderError> {
        let identifiers: Vec<Identifier> = names.iter().map(|n| identifier(n)).collect();
        let mut order = account.new_order(&NewOrder::new(&identifiers)).await?;
        let order_url = order.url().to_string();
        tracing::info!(ca = %self.name, order = %order_url, names = %names.join(","), "order created");

        // Answers stay published until the order is decided, then are withdrawn whatever
        // happened (a dns-01 `clear` runs even when validation failed); if this future is
        // dropped instead, dropping them withdraws them.
        let mut published: Vec<Provisioned> = Vec::new();
        let validated = async {
            // First every answer is published, then (after DNS propagation) the CA is told
            // to look: a CA may check a wildcard and its base name's TXT record together.
            let mut propagation_wait = Duration::ZERO;
            let mut ready: Vec<(String, ChallengeType)> = Vec::new();
            let mut authzs = order.authorizations();
            while let Some(authz) = authzs.next().await {
                let mut authz = authz?;
                match authz.status {
                    AuthorizationStatus::Valid => continue,
                    AuthorizationStatus::Pending => {}
                    other => {
                        return Err(OrderError::Validation {
                            identifier: authz.identifier().to_string(),
                            message: format!("authorization is {other:?} before any challenge"),
                        })
                    }
                }
                let ident = authz.identifier().to_string();
                let Some(rule) = challenges.for_name(&ident) else {
                    return Err(OrderError::Validation {
                        identifier: ident,
                        message: "the CA asked about a name the configuration does not list".into(),
                    });
                };
                let wanted = challenge_type(&rule.config);
                let authz_url = authz.url().to_string();
                let Some(ch) = authz.challenge(wanted.clone()) else {
                    return Err(OrderError::Validation {
                        identifier: ident,
                        message: format!("the CA offers no {wanted:?} challenge for it"),
                    });
                };
                let key_auth = ch.key_authorization();
                let digest = key_auth.digest();
                let dns_value = key_auth.dns_value();
                let answer = Answer {
                    certificate: &challenges.certificate,
                    domains: &challenges.domains,
                    identifier: &ident,
                    token: &ch.token,
                    key_authorization: key_auth.as_str(),
                    digest: digest.as_ref(),
                    dns_value: &dns_value,
                };
                tracing::debug!(ca = %self.name, identifier = %ident,
                    challenge = rule.config.kind(), "answering challenge");
                published.push(
                    responders
                        .provision(&rule.config, &answer)
                        .await
                        .map_err(OrderError::Challenge)?,
                );
                if let ChallengeConfig::Dns01Hook {
                    propagation_wait: wait,
                    ..
                }
                | ChallengeConfig::Dns01Rfc2136 {
                    propagation_wait: wait,
                    ..
                } = &rule.config
                {
                    propagation_wait = propagation_wait.max(*wait);
                }
                ready.push((authz_url, wanted));
            }
            if !propagation_wait.is_zero() {
                tracing::info!(ca = %self.name, wait = ?propagation_wait,
                    "waiting for the dns-01 records to propagate");
                tokio::time::sleep(propagation_wait).await;
            }
            // The authorizations are cached by now: this second pass makes no request but
            // the challenges' own.
            let mut authzs = order.authorizations();
            while let Some(authz) = authzs.next().await {
                let mut authz = authz?;
                let Some((_, wanted)) = ready.iter().find(|(url, _)| url == authz.url()) else {
                    continue;
                };
                if let Some(mut ch) = authz.challenge(wanted.clone()) {
                    ch.set_ready().await?;
                }
            }

            let retry = RetryPolicy::new()
                .initial_delay(Duration::from_millis(250))
                .backoff(1.5)
                .timeout(ORDER_TIMEOUT);
            match order.poll_ready(&retry).await {
                Ok(OrderStatus::Ready) => Ok(()),
                // The order failed: the challenges' problem documents say which name and why.
                Ok(_) => Err(self.validation_failure(&mut order, None).await),
                Err(instant_acme::Error::Api(p)) => {
                    Err(self.validation_failure(&mut order, Some(p)).await)
                }
                Err(e) => Err(e.into()),
            }
        }
        .await;
        for answer in published {
            answer.withdraw().await;
        }
        validated?;
        let retry = RetryPolicy::new()
            .initial_delay(Duration::from_millis(250))
            .backoff(1.5)
            .timeout(ORDER_TIMEOUT);
        order.finalize_csr(csr_der).await?;
        let chain_pem = order.poll_certificate(&retry).await?;
        tracing::info!(ca = %self.name, order = %order_url, "certificate issued");
        Ok(Issued {
            chain_pem,
            order_url,
        })
    }

    /// Finds the CA's explanation of a failed validation in the challenges' problem documents,
    /// falling back to the order's own problem when no challenge carries one.
    async fn validation_failure(
        &self,
        order: &mut instant_acme::Order,
        order_problem: Option<instant_acme::Problem>,
    ) -> OrderError {
        let mut authzs = order.authorizations();
        while let Some(Ok(mut authz)) = authzs.next().await {
            if authz.refresh().await.is_err() {
                continue;
            }
            let ident = authz.identifier().to_string();
            for ch in &authz.challenges {
                if let Some(p) = &ch.error {
                    return OrderError::Validation {
                        identifier: ident,
                        message: problem_message(p),
                    };
                }
            }
            if authz.status != AuthorizationStatus::Valid {
                return OrderError::Validation {
                    identifier: ident,
                    message: format!("authorization ended {:?}", authz.status),
                };
            }
        }
        OrderError::Validation {
            identifier: "the order".into(),
            message: order_problem.as_ref().map_or_else(
                || "the CA declared the order invalid without saying why".into(),
                problem_message,
            ),
        }
    }
}

enum OrderError {
    Acme(instant_acme::Error),
    Validation { identifier: String, message: String },
    Challenge(crate::challenge::ChallengeError),
}

impl From<instant_acme::Error> for OrderError {
    fn from(e: instant_acme::Error) -> Self {
        OrderError::Acme(e)
    }
}

fn identifier(name: &str) -> Identifier {
    match name.parse() {
        Ok(ip) => Identifier::Ip(ip),
        Err(_) => Identifier::Dns(name.to_string()),
    }
}

fn challenge_type(c: &ChallengeConfig) -> ChallengeType {
    match c {
        ChallengeConfig::Http01Webroot { .. } | ChallengeConfig::Http01Listen { .. } => {
            ChallengeType::Http01
        }
        ChallengeConfig::Dns01Hook { .. } | ChallengeConfig::Dns01Rfc2136 { .. } => {
            ChallengeType::Dns01
        }
        ChallengeConfig::TlsAlpn01 { .. } => ChallengeType::TlsAlpn01,
    }
}

fn problem_message(p: &instant_acme::Problem) -> String {
    let mut s = p.detail.clone().unwrap_or_else(|| "no detail given".into());
    if let Some(t) = &p.r#type {
        s.push_str(&format!(
            " ({})",
            t.trim_start_matches("urn:ietf:params:acme:error:")
        ));
    }
    for sub in &p.subproblems {
        s.push_str(&format!("; {sub}"));
    }
    s
}

fn acme_message(e: &instant_acme::Error) -> String {
    match e {
        instant_acme::Error::Api(p) => problem_message(p),
        other => error_chain(other),
    }
}

async fn load_or_register(
    config: &CaConfig,
    path: &Path,
    force_new: bool,
) -> Result<Account, AcmeError> {
    let ca = config.name.clone();
    let http = || {
        CaHttp::new(config.trust_roots.as_deref()).map_err(|message| AcmeError::TrustRoots {
            ca: ca.clone(),
            path: config.trust_roots.clone().unwrap_or_default(),
            message,
        })
    };
    let file_err = |source| AcmeError::AccountFile {
        ca: ca.clone(),
        path: path.to_path_buf(),
        source,
    };
    let ca_err = |e: instant_acme::Error| AcmeError::Ca {
        ca: ca.clone(),
        message: acme_message(&e),
    };

    if !force_new {
        match fs::read(path) {
            Ok(bytes) => match serde_json::from_slice::<StoredAccount>(&bytes) {
                Ok(stored) if stored.directory == config.directory => {
                    return Account::builder_with_http(Box::new(http()?))
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
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(file_err(e)),
        }
    }
    // Keep whatever was there: an account key is never thrown away.
    if path.exists() {
        let aside = path.with_extension(format!(
            "json.{}",
            crate::state::unix(std::time::SystemTime::now())
        ));
        fs::rename(path, &aside).map_err(file_err)?;
    }
    let contact: Vec<&str> = config.contact.iter().map(String::as_str).collect();
    let (account, credentials) = Account::builder_with_http(Box::new(http()?))
        .create(
            &NewAccount {
                contact: &contact,
                terms_of_service_agreed: config.accept_terms,
                only_return_existing: false,
            },
            config.directory.clone(),
            None,
        )
        .await
        .map_err(ca_err)?;
    let stored = StoredAccount {
        directory: config.directory.clone(),
        credentials,
    };
    let bytes = serde_json::to_vec_pretty(&stored).map_err(|e| file_err(io::Error::other(e)))?;
    fsutil::write_atomic(path, &bytes, 0o600).map_err(file_err)?;
    tracing::info!(ca = %ca, account = %account.id(), "ACME account registered");
    Ok(account)
}

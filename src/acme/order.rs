//! Ordering a certificate (RFC 8555 §7.4), one named step each: a new order (with the
//! profile and the certificate it replaces, RFC 9773 §5), its authorizations and their
//! challenges (§7.5, answered through [`Responders`]), finalize, and the certificate's
//! download. A dry run deactivates the authorizations instead of finalizing (§7.5.2).

use std::time::{Duration, SystemTime};

use instant_acme::{
    Account, AuthorizationStatus, ChallengeType, Identifier, NewOrder, Order, OrderStatus,
    RetryPolicy,
};

use super::problem::{
    account_is_gone, acme_message, ca_error, is_client_error, is_problem, problem_message,
    refusal_is_about_the_request, urn, AcmeError,
};
use super::renewal_info::cert_id;
use super::Ca;
use crate::challenge::{Answer, Provisioned, Responders};
use crate::config::{ChallengeConfig, Challenges};

/// How long to wait for the CA to validate an order and then to issue it.
const ORDER_TIMEOUT: Duration = Duration::from_secs(120);
/// Orders started for one issuance when the CA keeps rejecting nonces.
const ORDER_ATTEMPTS: u32 = 3;

/// What to ask for in an order besides the names.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct OrderOptions<'a> {
    /// The certificate this order replaces (ARI `replaces`), when the CA offers ARI.
    pub(crate) replaces: Option<&'a crate::x509::CertInfo>,
    /// The ACME profile to request; it must be one the CA's directory advertises.
    pub(crate) profile: Option<&'a str>,
    /// A dry run (`renew --dry-run`): create the order and prove every authorization, then
    /// stop before finalize and deactivate the authorizations (RFC 8555 §7.5.2), so the CA
    /// issues nothing and no duplicate-certificate limit is spent.
    pub(crate) dry_run: bool,
    /// `preferred_chain`: the issuer common name of the chain to deploy among the default
    /// and alternate chains (RFC 8555 §7.4.2; see `chain`).
    pub(crate) preferred_chain: Option<&'a str>,
}

/// The result of a completed order.
pub(crate) struct Issued {
    /// The chain as the CA sent it: leaf first, PEM.
    pub(crate) chain_pem: String,
    pub(crate) order_url: String,
}

/// How an order ended: a certificate, or (a dry run) authorizations proven and no
/// certificate asked for.
pub(crate) enum OrderOutcome {
    Issued(Issued),
    /// The order's authorizations were all proven and then deactivated (`valid` where the
    /// CA refused to); finalize was never sent.
    Rehearsed {
        order_url: String,
    },
}

/// Why one order failed, before it is reported as an [`AcmeError`].
enum OrderError {
    Acme(instant_acme::Error),
    /// The CA's order or offer rules the order out (its message).
    Ca(String),
    Validation {
        identifier: String,
        message: String,
    },
    Challenge(crate::challenge::ChallengeError),
}

impl From<instant_acme::Error> for OrderError {
    fn from(e: instant_acme::Error) -> Self {
        OrderError::Acme(e)
    }
}

/// An answer published for the CA to validate, and what the CA is then told to look at.
struct Published {
    answer: Provisioned,
    authorization_url: String,
    challenge: ChallengeType,
    /// How long the answer takes to be visible (dns-01 propagation).
    propagation_wait: Duration,
}

/// How the order's state is polled: every 250 ms at first, 1.5 times longer each time,
/// [`ORDER_TIMEOUT`] in all.
fn polling() -> RetryPolicy {
    RetryPolicy::new()
        .initial_delay(Duration::from_millis(250))
        .backoff(1.5)
        .timeout(ORDER_TIMEOUT)
}

impl Ca {
    /// Orders a certificate for `names` with the CSR `csr_der`, answering challenges through
    /// `responders` as `challenge` says for each name.
    ///
    /// When the CA no longer knows the account (it was reset, or the account deactivated),
    /// a new account is registered once and the order retried. An order that fails on a
    /// `badNonce` that outlived instant-acme's own retries is started again, up to
    /// [`ORDER_ATTEMPTS`] times: the CA rejected a nonce, not the request.
    pub(crate) async fn issue(
        &self,
        names: &[String],
        csr_der: &[u8],
        challenge: &Challenges,
        responders: &Responders,
        options: OrderOptions<'_>,
    ) -> Result<OrderOutcome, AcmeError> {
        let mut attempts = 0;
        let mut registered_again = false;
        loop {
            attempts += 1;
            let account = self.account.read().await.clone();
            match self
                .order(&account, names, csr_der, challenge, responders, options)
                .await
            {
                Err(OrderError::Acme(e)) if account_is_gone(&e) && !registered_again => {
                    tracing::warn!(ca = %self.name, error = %e,
                        "the CA does not know renewd's account; registering a new one");
                    self.register_again().await?;
                    registered_again = true;
                }
                // A badNonce that follows transient failures is the CA refusing a resent
                // request it had processed: not a reason to start over.
                Err(OrderError::Acme(e))
                    if is_problem(&e, urn::BAD_NONCE)
                        && attempts < ORDER_ATTEMPTS
                        && self.http.gate().transient_streak().is_none() =>
                {
                    tracing::warn!(ca = %self.name, error = %e, attempt = attempts,
                        "the CA rejected a nonce repeatedly; starting the order again");
                }
                other => return other.map_err(|e| self.describe(e)),
            }
        }
    }

    fn describe(&self, e: OrderError) -> AcmeError {
        match e {
            OrderError::Acme(e) => ca_error(self.http.gate(), &e, SystemTime::now()),
            OrderError::Validation {
                identifier,
                message,
            } => AcmeError::Validation {
                ca: self.name.clone(),
                identifier,
                message,
            },
            OrderError::Challenge(e) => AcmeError::Challenge(e),
            OrderError::Ca(message) => AcmeError::Ca {
                ca: self.name.clone(),
                message,
            },
        }
    }

    /// One order, from its creation to the certificate (or, a dry run, to its proven and
    /// deactivated authorizations).
    async fn order(
        &self,
        account: &Account,
        names: &[String],
        csr_der: &[u8],
        challenges: &Challenges,
        responders: &Responders,
        options: OrderOptions<'_>,
    ) -> Result<OrderOutcome, OrderError> {
        let mut order = self.new_order(account, names, options).await?;
        let order_url = order.url().to_string();
        tracing::info!(ca = %self.name, order = %order_url, names = %names.join(","), "order created");

        // Answers stay published until the order is decided, then are withdrawn whatever
        // happened (a dns-01 `clear` runs even when validation failed); if this future is
        // dropped instead, dropping them withdraws them.
        let mut published = Vec::new();
        let validated = self
            .authorize(
                &mut order,
                account.id(),
                challenges,
                responders,
                &mut published,
            )
            .await;
        for p in published {
            p.answer.withdraw().await;
        }
        if options.dry_run {
            // Whether or not validation passed: leave no authorization usable behind.
            self.deactivate_all(&mut order).await;
            validated?;
            tracing::info!(ca = %self.name, order = %order_url,
                "dry run: every authorization proven; stopped before finalize, no certificate issued");
            return Ok(OrderOutcome::Rehearsed { order_url });
        }
        validated?;
        self.finalize(&mut order, csr_der).await?;
        let mut chain_pem = order.poll_certificate(&polling()).await?;
        tracing::info!(ca = %self.name, order = %order_url, "certificate issued");
        if let (Some(preferred), Some(cert_url)) =
            (options.preferred_chain, order.state().certificate.clone())
        {
            chain_pem = self
                .preferred_chain(account.id(), &cert_url, chain_pem, preferred)
                .await;
        }
        Ok(OrderOutcome::Issued(Issued {
            chain_pem,
            order_url,
        }))
    }

    /// Creates the order (RFC 8555 §7.4) for `names`, with the profile asked for (refused
    /// here when the CA does not advertise it) and the certificate it replaces; a CA that
    /// refuses or ignores `replaces` gets the order again without it.
    async fn new_order(
        &self,
        account: &Account,
        names: &[String],
        options: OrderOptions<'_>,
    ) -> Result<Order, OrderError> {
        let identifiers: Vec<Identifier> = names.iter().map(|n| identifier(n)).collect();
        let new_order = || {
            let order = NewOrder::new(&identifiers);
            match options.profile {
                Some(p) => order.profile(p),
                None => order,
            }
        };
        if let Some(profile) = options.profile {
            check_profile(account, profile)?;
        }
        let Some(id) = options.replaces.and_then(cert_id) else {
            return Ok(account.new_order(&new_order()).await?);
        };
        match account.new_order(&new_order().replaces(id.clone())).await {
            Ok(order) => {
                tracing::info!(ca = %self.name, replaces = %id, "the order replaces the deployed certificate (ARI)");
                Ok(order)
            }
            Err(e) => match ReplacesRefused::from_error(&e) {
                // RFC 9773 §5 lets a CA refuse `replaces` (the certificate was already
                // replaced by an order that was not deployed, or it forgot it) or ignore
                // it; neither may stop the renewal: order again without it.
                Some(why) => {
                    tracing::warn!(ca = %self.name, replaces = %id, error = %acme_message(&e),
                        "{why}; ordering again without `replaces`");
                    Ok(account.new_order(&new_order()).await?)
                }
                None => Err(e.into()),
            },
        }
    }

    /// Proves every authorization of `order` (RFC 8555 §7.5): first every answer is
    /// published (into `published`, for the caller to withdraw), then, after DNS
    /// propagation, the CA is told to look (a CA may check a wildcard and its base name's
    /// TXT record together), then the order is polled until it is ready.
    async fn authorize(
        &self,
        order: &mut Order,
        account_url: &str,
        challenges: &Challenges,
        responders: &Responders,
        published: &mut Vec<Published>,
    ) -> Result<(), OrderError> {
        let state = order.state();
        // RFC 8555 §7.1.3: a pending order lists the authorizations to complete. With none,
        // nothing can make it ready: polling it would only wait for the order timeout.
        if state.status == OrderStatus::Pending && state.authorizations.is_empty() {
            return Err(OrderError::Ca(format!(
                "the order {} is pending but lists no authorizations (RFC 8555 §7.1.3)",
                order.url()
            )));
        }
        let mut authzs = order.authorizations();
        while let Some(authz) = authzs.next().await {
            let authz = authz?;
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
            published.push(
                self.publish(authz, account_url, challenges, responders)
                    .await?,
            );
        }
        let propagation_wait = published
            .iter()
            .map(|p| p.propagation_wait)
            .max()
            .unwrap_or_default();
        if !propagation_wait.is_zero() {
            tracing::info!(ca = %self.name, wait = ?propagation_wait,
                "waiting for the dns-01 records to propagate");
            tokio::time::sleep(propagation_wait).await;
        }
        self.respond(order, published).await?;
        match order.poll_ready(&polling()).await {
            Ok(OrderStatus::Ready) => Ok(()),
            // The order failed: the challenges' problem documents say which name and why.
            Ok(_) => Err(validation_failure(order, None).await),
            Err(instant_acme::Error::Api(p)) => Err(validation_failure(order, Some(p)).await),
            Err(e) => Err(e.into()),
        }
    }

    /// Publishes the answer to the challenge the configuration chose for the pending
    /// authorization `authz`.
    async fn publish(
        &self,
        mut authz: instant_acme::AuthorizationHandle<'_>,
        account_url: &str,
        challenges: &Challenges,
        responders: &Responders,
    ) -> Result<Published, OrderError> {
        let ident = authz.identifier().to_string();
        let Some(rule) = challenges.for_name(&ident) else {
            return Err(OrderError::Validation {
                identifier: ident,
                message: "the CA asked about a name the configuration does not list".into(),
            });
        };
        let wanted = challenge_type(&rule.config);
        let authorization_url = authz.url().to_string();
        let Some(ch) = authz.challenge(wanted.clone()) else {
            return Err(OrderError::Validation {
                identifier: ident,
                message: format!("the CA offers no {wanted:?} challenge for it"),
            });
        };
        let key_auth = ch.key_authorization();
        let digest = key_auth.digest();
        let dns_value = key_auth.dns_value();
        let issuer_domain_name = match &rule.config {
            ChallengeConfig::DnsPersist01(_) => self.issuer_domain_name().await,
            _ => None,
        };
        let answer = Answer {
            certificate: &challenges.certificate,
            domains: &challenges.domains,
            identifier: &ident,
            token: &ch.token,
            key_authorization: key_auth.as_str(),
            digest: digest.as_ref(),
            dns_value: &dns_value,
            account_url,
            issuer_domain_name: issuer_domain_name.as_deref(),
            ca: &self.name,
        };
        tracing::debug!(ca = %self.name, identifier = %ident,
            challenge = rule.config.kind(), "answering challenge");
        let answer = responders
            .provision(&rule.config, &answer)
            .await
            .map_err(OrderError::Challenge)?;
        let propagation_wait = rule.config.propagation_wait();
        Ok(Published {
            answer,
            authorization_url,
            challenge: wanted,
            propagation_wait,
        })
    }

    /// Tells the CA to validate each published answer (RFC 8555 §7.5.1). The
    /// authorizations are cached by now: this makes no request but the challenges' own.
    async fn respond(&self, order: &mut Order, published: &[Published]) -> Result<(), OrderError> {
        let mut authzs = order.authorizations();
        while let Some(authz) = authzs.next().await {
            let mut authz = authz?;
            let Some(p) = published
                .iter()
                .find(|p| p.authorization_url == authz.url())
            else {
                continue;
            };
            let ident = authz.identifier().to_string();
            let Some(mut ch) = authz.challenge(p.challenge.clone()) else {
                continue;
            };
            // A CA may validate at once and refuse the request with a 4xx problem (Caddy's
            // acme_server does): it is this identifier's failure. A server error stays the
            // CA's.
            match ch.set_ready().await {
                Err(instant_acme::Error::Api(p))
                    if !refusal_is_about_the_request(&p) && is_client_error(&p) =>
                {
                    return Err(OrderError::Validation {
                        identifier: ident,
                        message: problem_message(&p),
                    });
                }
                r => r?,
            }
        }
        Ok(())
    }

    /// Sends the CSR (RFC 8555 §7.4). A finalize the CA processed but whose answer was lost
    /// is resent by the HTTP client; the CA then says the order is no longer ready: that is
    /// fine when the order is under way.
    async fn finalize(&self, order: &mut Order, csr_der: &[u8]) -> Result<(), OrderError> {
        let Err(e) = order.finalize_csr(csr_der).await else {
            return Ok(());
        };
        if !is_problem(&e, urn::ORDER_NOT_READY) {
            return Err(e.into());
        }
        let status = order.refresh().await?.status;
        if !matches!(status, OrderStatus::Processing | OrderStatus::Valid) {
            return Err(e.into());
        }
        tracing::info!(ca = %self.name, order = %order.url(),
            "the order was finalized by an earlier, unanswered request");
        Ok(())
    }

    /// Deactivates every pending or valid authorization of `order` (RFC 8555 §7.5.2), for a
    /// dry run: what the CA refuses is logged, not fatal (the order is never finalized
    /// anyway).
    async fn deactivate_all(&self, order: &mut Order) {
        let order_url = order.url().to_string();
        let mut authzs = order.authorizations();
        while let Some(authz) = authzs.next().await {
            let mut authz = match authz {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(ca = %self.name, order = %order_url, error = %acme_message(&e),
                        "dry run: cannot read an authorization to deactivate it");
                    continue;
                }
            };
            let ident = authz.identifier().to_string();
            // The cached state may predate validation: ask before deciding.
            if let Err(e) = authz.refresh().await {
                tracing::warn!(ca = %self.name, identifier = %ident, error = %acme_message(&e),
                    "dry run: cannot refresh the authorization");
            }
            if matches!(
                authz.status,
                AuthorizationStatus::Pending | AuthorizationStatus::Valid
            ) {
                match authz.deactivate().await {
                    Ok(_) => tracing::info!(ca = %self.name, identifier = %ident,
                        authorization = %authz.url(), "dry run: authorization deactivated"),
                    Err(e) => tracing::warn!(ca = %self.name, identifier = %ident,
                        authorization = %authz.url(), error = %acme_message(&e),
                        "dry run: the CA did not deactivate the authorization"),
                }
            }
        }
    }
}

/// Refuses `profile` unless the CA's directory advertises it.
fn check_profile(account: &Account, profile: &str) -> Result<(), OrderError> {
    let mut offered: Vec<&str> = account.profiles().map(|p| p.name).collect();
    offered.sort_unstable();
    if offered.contains(&profile) {
        return Ok(());
    }
    Err(OrderError::Ca(if offered.is_empty() {
        format!(
            "profile {profile:?} is not offered: the CA advertises no profiles (remove `profile`)"
        )
    } else {
        format!(
            "profile {profile:?} is not offered; the CA offers: {}",
            offered.join(", ")
        )
    }))
}

/// Finds the CA's explanation of a failed validation in the challenges' problem documents,
/// falling back to the order's own problem when no challenge carries one.
async fn validation_failure(
    order: &mut Order,
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
    // No authorization says which name failed: the order's subproblems may (RFC 8555
    // §6.7.1).
    let named: Vec<String> = order_problem
        .iter()
        .flat_map(|p| &p.subproblems)
        .filter_map(|sub| match sub.identifier.as_ref()? {
            Identifier::Dns(name) => Some(name.clone()),
            Identifier::Ip(ip) => Some(ip.to_string()),
            _ => None,
        })
        .collect();
    OrderError::Validation {
        identifier: if named.is_empty() {
            "the order".into()
        } else {
            named.join(", ")
        },
        message: order_problem.as_ref().map_or_else(
            || "the CA declared the order invalid without saying why".into(),
            problem_message,
        ),
    }
}

/// The ACME identifier (RFC 8555 §9.7.7, RFC 8738) of a configured name.
fn identifier(name: &str) -> Identifier {
    match name.parse() {
        Ok(ip) => Identifier::Ip(ip),
        Err(_) => Identifier::Dns(name.to_string()),
    }
}

/// Why a new order naming the certificate it replaces (RFC 9773 `replaces`) could not be
/// used, when the CA's answer says it refused or ignored the field rather than the order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReplacesRefused {
    /// The CA answered with a 4xx problem document (e.g. `alreadyReplaced`, `malformed`).
    Refused,
    /// The CA created the order but did not echo `replaces` in it, which instant-acme
    /// reports as an error; the order it created is abandoned (it expires unused).
    NotEchoed,
    /// The CA's directory has no `renewalInfo` (any more), so instant-acme will not send it.
    Unsupported,
}

impl ReplacesRefused {
    /// Sorts the error of a `new_order` call that carried `replaces`. `None`: the order
    /// failed for another reason (transport, rate limit), which ordering again without
    /// `replaces` would not cure.
    fn from_error(e: &instant_acme::Error) -> Option<ReplacesRefused> {
        match e {
            // Not a refusal of `replaces`: the caller handles these (wait, new nonce, new
            // account), and a second order would only be refused the same way.
            // `unauthorized` here may well be about `replaces` (Pebble: the account did not
            // order the certificate replaced, e.g. after a new account); were the account
            // gone, the order without `replaces` fails the same way and is handled as such.
            instant_acme::Error::Api(p)
                if refusal_is_about_the_request(p)
                    && p.r#type.as_deref() != Some(urn::UNAUTHORIZED) =>
            {
                None
            }
            // A refusal of the request's content (`malformed`, `alreadyReplaced`, …) may be
            // about `replaces`; a server error is not.
            instant_acme::Error::Api(p) if is_client_error(p) => Some(ReplacesRefused::Refused),
            // instant-acme 0.8's only `Other` out of `new_order`: "replaces field mismatch".
            instant_acme::Error::Other(inner) if inner.to_string().contains("replaces") => {
                Some(ReplacesRefused::NotEchoed)
            }
            instant_acme::Error::Unsupported(_) => Some(ReplacesRefused::Unsupported),
            _ => None,
        }
    }
}

impl std::fmt::Display for ReplacesRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ReplacesRefused::Refused => {
                "the CA refused the order naming the certificate it replaces"
            }
            ReplacesRefused::NotEchoed => {
                "the CA created the order but ignored `replaces` (it did not echo it)"
            }
            ReplacesRefused::Unsupported => {
                "the CA no longer advertises renewalInfo, so `replaces` cannot be sent"
            }
        })
    }
}

/// The ACME challenge type (RFC 8555 §8, RFC 8737, draft-ietf-acme-dns-persist §3,
/// draft-ietf-acme-dns-account-label §3) a configured challenge answers.
fn challenge_type(c: &ChallengeConfig) -> ChallengeType {
    match c {
        ChallengeConfig::Http01Webroot { .. } | ChallengeConfig::Http01Listen { .. } => {
            ChallengeType::Http01
        }
        ChallengeConfig::Dns01Hook { .. } | ChallengeConfig::Dns01Rfc2136 { .. } => {
            ChallengeType::Dns01
        }
        ChallengeConfig::TlsAlpn01 { .. } => ChallengeType::TlsAlpn01,
        // instant-acme 0.8 knows neither draft type: their names go as they are.
        ChallengeConfig::DnsPersist01(_)
        | ChallengeConfig::DnsAccount01Hook { .. }
        | ChallengeConfig::DnsAccount01Rfc2136 { .. } => {
            ChallengeType::Unknown(c.kind().to_string())
        }
    }
}

//! The tests' own ACME client steps (instant-acme), for the harness smoke tests that issue
//! without renewd: a fresh account, and http-01 answered from a webroot served by
//! [`super::StaticServer`].

use std::path::Path;

use instant_acme::{Account, ChallengeType, NewAccount, Order};

use super::write_file;

/// A new account at `directory_url`, its HTTPS trusted through the PEM roots at `root`:
/// terms of service agreed, no contact.
pub async fn new_account(root: &Path, directory_url: &str) -> Account {
    let (account, _) = Account::builder_with_root(root)
        .expect("ACME client")
        .create(
            &NewAccount {
                contact: &[],
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            directory_url.to_string(),
            None,
        )
        .await
        .expect("new account");
    account
}

/// Puts every authorization's http-01 key authorization under `webroot`
/// (`.well-known/acme-challenge/TOKEN`) and tells the CA it is ready.
pub async fn answer_http01(order: &mut Order, webroot: &Path) {
    let mut authzs = order.authorizations();
    while let Some(authz) = authzs.next().await {
        let mut authz = authz.expect("authorization");
        let mut ch = authz
            .challenge(ChallengeType::Http01)
            .expect("http-01 offered");
        write_file(
            webroot.join(".well-known/acme-challenge").join(&ch.token),
            ch.key_authorization().as_str(),
        );
        ch.set_ready().await.expect("challenge ready");
    }
}

//! Alternate certificate chains (RFC 8555 §7.4.2) and `preferred_chain`: a CA may offer the
//! same certificate under several chains, each at a URL given in a `Link: <URL>;
//! rel="alternate"` header of the certificate's download. instant-acme returns only the
//! default chain and drops the headers, so when a certificate asks for a preferred chain
//! the certificate URL is fetched again here, POST-as-GET (§6.3) signed with the account's
//! key (`kid`), through the CA's usual client (deadlines, retries, size cap, gate), and so
//! is each alternate.
//!
//! The choice is certbot's `--preferred-chain` rule: the first chain, default first, whose
//! topmost certificate's issuer common name equals the name asked for; else the default
//! chain (logged at info with the names offered). An alternate that does not carry the same
//! leaf as the default is ignored (a CA sending another certificate is not an alternate).

use instant_acme::HttpClient;

use super::certkey::{replay_nonce, send, Failure, JwsKey};
use super::problem::{urn, AcmeError};
use super::Ca;
use crate::x509;

/// Alternates followed per certificate, at most: Let's Encrypt offers one, a CA offering
/// dozens is not helped by renewd downloading them all.
const MAX_ALTERNATES: usize = 8;

/// Sends of one POST-as-GET, at most, while the CA answers `badNonce`.
const NONCE_TRIES: usize = 3;

/// One chain the CA offered: its PEM (leaf first) and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OfferedChain {
    /// The certificate URL (the default chain) or an alternate's URL.
    pub(crate) url: String,
    /// PEM, leaf first, as the CA sent it.
    pub(crate) pem: String,
}

impl Ca {
    /// The chain to deploy for the certificate at `cert_url`, whose default chain is
    /// `default_pem`, when `preferred` (an issuer common name) is asked for. Any failure to
    /// fetch the alternates is logged and leaves the default chain: the certificate is
    /// issued and good, only the choice of chain is lost.
    pub(crate) async fn preferred_chain(
        &self,
        account_id: &str,
        cert_url: &str,
        default_pem: String,
        preferred: &str,
    ) -> String {
        let mut offered = vec![OfferedChain {
            url: cert_url.to_string(),
            pem: default_pem,
        }];
        match self.alternates(account_id, cert_url).await {
            Ok(alternates) => offered.extend(alternates),
            Err(e) => {
                tracing::warn!(ca = %self.name, error = %e,
                    "cannot fetch the alternate chains (RFC 8555 7.4.2); deploying the default chain");
            }
        }
        let (index, names) = select(&offered, preferred);
        match index {
            Some(0) => tracing::info!(ca = %self.name, preferred,
                "the default chain is the preferred chain (its top issuer is {preferred:?})"),
            Some(i) => tracing::info!(ca = %self.name, preferred, url = %offered[i].url,
                "deploying the alternate chain whose top issuer is {preferred:?}"),
            None => tracing::info!(ca = %self.name, preferred, offered = %names.join(", "),
                "no chain's top issuer is {preferred:?}; deploying the default chain (offered: {})",
                names.join(", ")),
        }
        offered.swap_remove(index.unwrap_or(0)).pem
    }

    /// Fetches the certificate URL again for its `Link: rel="alternate"` headers, then each
    /// alternate (at most [`MAX_ALTERNATES`]) whose leaf is the default chain's.
    async fn alternates(
        &self,
        account_id: &str,
        cert_url: &str,
    ) -> Result<Vec<OfferedChain>, AcmeError> {
        let key = super::account::stored_key(&self.config, &self.files.account)?;
        let key = JwsKey::with_kid(&key, account_id).map_err(|e| self.chain_error(e))?;
        let mut session = Session::start(&self.http, &self.config.directory)
            .await
            .map_err(|e| self.chain_error(e))?;
        let (headers, default) = session
            .post_as_get(&key, cert_url)
            .await
            .map_err(|e| self.chain_error(e))?;
        let default_leaf = first_certificate(&default);
        let mut out = Vec::new();
        for url in alternate_links(&headers).into_iter().take(MAX_ALTERNATES) {
            let (_, body) = session
                .post_as_get(&key, &url)
                .await
                .map_err(|e| self.chain_error(e))?;
            let pem = String::from_utf8_lossy(&body).into_owned();
            if default_leaf.is_none() || first_certificate(pem.as_bytes()) != default_leaf {
                tracing::warn!(ca = %self.name, url = %url,
                    "ignoring an alternate chain that does not carry the issued certificate");
                continue;
            }
            if let Err(e) = links_up(&pem) {
                tracing::warn!(ca = %self.name, url = %url, error = %e,
                    "ignoring an alternate chain whose certificates do not sign each other");
                continue;
            }
            out.push(OfferedChain { url, pem });
        }
        Ok(out)
    }

    fn chain_error(&self, e: Failure) -> AcmeError {
        AcmeError::Ca {
            ca: self.name.clone(),
            message: format!("fetching alternate chains: {e}"),
        }
    }
}

/// A nonce kept between the POST-as-GET requests of one download.
struct Session<'a> {
    http: &'a dyn HttpClient,
    nonce: String,
}

impl<'a> Session<'a> {
    /// A first nonce from the CA's `newNonce` (RFC 8555 §7.2).
    async fn start(http: &'a dyn HttpClient, directory: &str) -> Result<Session<'a>, Failure> {
        let (_, body) = send(http, http::Method::GET, directory, None).await?;
        let dir: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
            Failure::Exchange(format!("the directory {directory} is not JSON: {e}"))
        })?;
        let nonce_url = dir["newNonce"].as_str().ok_or_else(|| {
            Failure::Exchange(format!("the directory {directory} has no newNonce"))
        })?;
        let (head, _) = send(http, http::Method::HEAD, nonce_url, None).await?;
        let nonce = replay_nonce(&head)
            .ok_or_else(|| Failure::Exchange("the CA sent no Replay-Nonce".into()))?;
        Ok(Session { http, nonce })
    }

    /// POST-as-GET of `url` (an empty payload, RFC 8555 §6.3): the answer's headers and
    /// body (at most the CA client's body cap). A `badNonce` is answered with the fresh
    /// nonce, [`NONCE_TRIES`] sends at most.
    async fn post_as_get(
        &mut self,
        key: &JwsKey,
        url: &str,
    ) -> Result<(http::HeaderMap, bytes::Bytes), Failure> {
        for _ in 0..NONCE_TRIES {
            let jws = key.sign(url, &self.nonce, b"")?;
            let (parts, body) = send(self.http, http::Method::POST, url, Some(jws)).await?;
            let fresh = replay_nonce(&parts);
            if parts.status.is_success() {
                // The last request of a download needs no next nonce: a missing one only
                // fails the next request.
                self.nonce = fresh.unwrap_or_default();
                return Ok((parts.headers, body));
            }
            let problem: Option<instant_acme::Problem> = serde_json::from_slice(&body).ok();
            let bad_nonce = problem
                .as_ref()
                .is_some_and(|p| p.r#type.as_deref() == Some(urn::BAD_NONCE));
            match (bad_nonce, fresh) {
                (true, Some(fresh)) => self.nonce = fresh,
                _ => {
                    return Err(match problem {
                        Some(p) => Failure::Refused(Box::new(p)),
                        None => Failure::Status(parts.status),
                    })
                }
            }
        }
        Err(Failure::BadNonces)
    }
}

/// The URLs of the `Link` headers with `rel="alternate"` (RFC 8288 §3), in order.
pub(crate) fn alternate_links(headers: &http::HeaderMap) -> Vec<String> {
    let mut out = Vec::new();
    for value in headers.get_all(http::header::LINK) {
        let Ok(value) = value.to_str() else {
            continue;
        };
        for link in split_links(value) {
            let Some((target, params)) = parse_link(link) else {
                continue;
            };
            let alternate = params.iter().any(|(name, value)| {
                name.eq_ignore_ascii_case("rel")
                    && value
                        .split_ascii_whitespace()
                        .any(|r| r.eq_ignore_ascii_case("alternate"))
            });
            if alternate && !out.contains(&target) {
                out.push(target);
            }
        }
    }
    out
}

/// One header value's links, split at the commas outside `<...>` and quotes.
fn split_links(value: &str) -> Vec<&str> {
    let (mut out, mut start, mut in_uri, mut in_quote) = (Vec::new(), 0, false, false);
    for (i, c) in value.char_indices() {
        match c {
            '<' if !in_quote => in_uri = true,
            '>' if !in_quote => in_uri = false,
            '"' if !in_uri => in_quote = !in_quote,
            ',' if !in_uri && !in_quote => {
                out.push(&value[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&value[start..]);
    out
}

/// `<URI>; name=value; name="value"` → the URI and the parameters (values unquoted).
fn parse_link(link: &str) -> Option<(String, Vec<(String, String)>)> {
    let link = link.trim();
    let rest = link.strip_prefix('<')?;
    let end = rest.find('>')?;
    let target = rest[..end].trim().to_string();
    let params = rest[end + 1..]
        .split(';')
        .filter_map(|p| {
            let (name, value) = p.split_once('=')?;
            let value = value.trim().trim_matches('"');
            Some((name.trim().to_string(), value.to_string()))
        })
        .collect();
    Some((target, params))
}

/// The index of the first chain whose topmost certificate was issued by `preferred` (its
/// issuer's common name, compared exactly, as certbot does), and every chain's top issuer
/// name, for the log.
pub(crate) fn select(chains: &[OfferedChain], preferred: &str) -> (Option<usize>, Vec<String>) {
    let names: Vec<String> = chains
        .iter()
        .map(|c| top_issuer_cn(&c.pem).unwrap_or_else(|| "(no common name)".into()))
        .collect();
    let index = chains
        .iter()
        .position(|c| top_issuer_cn(&c.pem).as_deref() == Some(preferred));
    (index, names)
}

/// The issuer common name of the last certificate of a PEM chain.
pub(crate) fn top_issuer_cn(pem: &str) -> Option<String> {
    let ders = x509::pem_certificates(pem.as_bytes()).ok()?;
    x509::issuer_common_name(ders.last()?)
}

/// Each certificate of a PEM chain is signed by the next one, so a broken alternate is
/// passed over rather than chosen and then refused by the renewal's own check.
fn links_up(pem: &str) -> Result<(), x509::X509Error> {
    let ders = x509::pem_certificates(pem.as_bytes())?;
    for pair in ders.windows(2) {
        x509::verify_issued_by(&pair[0], &pair[1])?;
    }
    Ok(())
}

fn first_certificate(pem: &[u8]) -> Option<Vec<u8>> {
    x509::pem_certificates(pem).ok()?.into_iter().next()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        for v in values {
            h.append(http::header::LINK, v.parse().expect("header"));
        }
        h
    }

    /// A chain leaf → intermediate whose intermediate was issued by a root named `root_cn`.
    fn chain(root_cn: &str) -> String {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let root_key = KeyPair::generate().expect("key");
        let mut root = CertificateParams::new(Vec::<String>::new()).expect("params");
        root.distinguished_name.push(DnType::CommonName, root_cn);
        root.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let root_issuer = Issuer::new(root, root_key);
        let int_key = KeyPair::generate().expect("key");
        let mut int = CertificateParams::new(Vec::<String>::new()).expect("params");
        int.distinguished_name
            .push(DnType::CommonName, format!("{root_cn} intermediate"));
        int.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let int_cert = int.signed_by(&int_key, &root_issuer).expect("intermediate");
        let int_issuer = Issuer::new(int, int_key);
        let leaf_key = KeyPair::generate().expect("key");
        let leaf = CertificateParams::new(vec!["www.test".to_string()])
            .expect("params")
            .signed_by(&leaf_key, &int_issuer)
            .expect("leaf");
        format!("{}{}", leaf.pem(), int_cert.pem())
    }

    #[test]
    fn the_first_chain_whose_top_issuer_matches_is_chosen_else_none() {
        let offered: Vec<OfferedChain> = ["Root A", "Root B", "Root B"]
            .iter()
            .enumerate()
            .map(|(i, cn)| OfferedChain {
                url: format!("https://ca/cert/{i}"),
                pem: chain(cn),
            })
            .collect();
        assert!(links_up(&offered[0].pem).is_ok());
        assert_eq!(top_issuer_cn(&offered[1].pem).as_deref(), Some("Root B"));
        let (index, names) = select(&offered, "Root B");
        assert_eq!(index, Some(1));
        assert_eq!(names, ["Root A", "Root B", "Root B"]);
        assert_eq!(select(&offered, "Root A").0, Some(0));
        assert_eq!(select(&offered, "root b").0, None, "compared exactly");
        let broken = format!("{}{}", chain("Root A"), chain("Root B"));
        assert!(links_up(&broken).is_err());
    }

    #[test]
    fn alternate_links_are_read_from_every_link_header_and_list() {
        let h = headers(&[
            r#"<https://ca/dir>;rel="index""#,
            r#"<https://ca/cert/1/1>;rel="alternate", <https://ca/cert/1/2>; rel=alternate"#,
            r#"<https://ca/a,b>; title="x, y"; rel="up alternate""#,
            r#"<https://ca/cert/1/1>;rel="alternate""#,
        ]);
        assert_eq!(
            alternate_links(&h),
            vec![
                "https://ca/cert/1/1",
                "https://ca/cert/1/2",
                "https://ca/a,b"
            ]
        );
        assert!(alternate_links(&headers(&["garbage", "<unclosed; rel=alternate"])).is_empty());
    }
}

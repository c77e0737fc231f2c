//! dns-01 through RFC 2136 dynamic updates, signed with TSIG (RFC 8945), on hickory-dns.
//!
//! The zone to update is found by asking the configured server for the SOA of the record's
//! name: an authoritative server answers with the zone's SOA (in the authority section when
//! the name does not exist). The TXT value is added to the record's set (a wildcard and its
//! base name share one record) and afterwards that one value is deleted again.
//!
//! The key comes from a file in BIND's format (`key "name" { algorithm hmac-sha256; secret
//! "base64"; };`, as `tsig-keygen` writes it): `tsig_key_file`, or else
//! `$CREDENTIALS_DIRECTORY/tsig.key` when systemd passed one. The secret never appears in a
//! log line or an error message.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use hickory_net::client::{Client, ClientHandle};
use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::udp::UdpClientStream;
use hickory_net::NetError;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::tsig::TsigAlgorithm;
use hickory_proto::rr::rdata::TXT;
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType, TSigner};

/// Deadline for one DNS exchange.
const DNS_TIMEOUT: Duration = Duration::from_secs(10);
/// TTL of the challenge record: short, it lives for one validation.
const RECORD_TTL: u32 = 60;
/// Clock difference allowed between renewd and the DNS server (RFC 8945 recommends 300 s).
const TSIG_FUDGE: u16 = 300;
/// The credential name read from `$CREDENTIALS_DIRECTORY` when `tsig_key_file` is not set.
pub(crate) const CREDENTIAL_NAME: &str = "tsig.key";

#[derive(Debug, thiserror::Error)]
pub(crate) enum Rfc2136Error {
    #[error("TSIG key {path}: {reason}")]
    Key { path: PathBuf, reason: KeyError },
    #[error("DNS server {server}: {message}")]
    Server { server: SocketAddr, message: String },
    #[error("DNS server {server} refused to {action} {record}: {rcode}{hint}")]
    Refused {
        server: SocketAddr,
        action: &'static str,
        record: String,
        rcode: ResponseCode,
        hint: &'static str,
    },
}

/// What is wrong with a TSIG key file. The secret is never part of a message.
#[derive(Debug, thiserror::Error)]
pub(crate) enum KeyError {
    /// The file cannot be read (missing, not a regular file, too open, too big).
    #[error("{0}")]
    Unreadable(String),
    #[error("no `key` statement; {}", EXPECTED)]
    NoKeyStatement,
    #[error("the key has no name; {}", EXPECTED)]
    NoName,
    #[error("no `{{` after the key name; {}", EXPECTED)]
    NoBrace,
    #[error("key `{name}` has no `algorithm`")]
    NoAlgorithm { name: String },
    #[error(
        "key `{name}`: algorithm `{algorithm}` is not supported; use hmac-sha256, \
         hmac-sha384 or hmac-sha512"
    )]
    Algorithm { name: String, algorithm: String },
    #[error("key `{name}` has no `secret`")]
    NoSecret { name: String },
    #[error("key `{name}`: the secret is not valid base64")]
    NotBase64 { name: String },
    #[error("key `{name}`: the secret is empty")]
    EmptySecret { name: String },
}

/// The key file's format, for the messages about it.
const EXPECTED: &str =
    "expected `key \"NAME\" { algorithm hmac-sha256; secret \"BASE64\"; };` (as tsig-keygen writes it)";

/// A TSIG key: its name, algorithm and secret.
pub(crate) struct TsigKey {
    pub(crate) name: String,
    algorithm: TsigAlgorithm,
    secret: Vec<u8>,
}

impl fmt::Debug for TsigKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the secret.
        f.debug_struct("TsigKey")
            .field("name", &self.name)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

/// The key file to use: the configured one, else systemd's credential if there is one.
pub(crate) fn key_path(configured: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = configured {
        return Some(p.to_path_buf());
    }
    let dir = std::env::var_os("CREDENTIALS_DIRECTORY")?;
    let path = Path::new(&dir).join(CREDENTIAL_NAME);
    path.is_file().then_some(path)
}

/// Reads a key file in BIND's `key "name" { algorithm ...; secret "..."; };` format.
pub(crate) fn read_key(path: &Path) -> Result<TsigKey, Rfc2136Error> {
    let fail = |reason: KeyError| Rfc2136Error::Key {
        path: path.to_path_buf(),
        reason,
    };
    let text = crate::fsutil::read_regular_string(
        path,
        crate::fsutil::caps::SECRET,
        crate::fsutil::Follow::Yes,
    )
    .map_err(|e| fail(KeyError::Unreadable(e.reason())))?;
    parse_key(&text).map_err(fail)
}

/// BIND's configuration tokens: words, quoted strings, `{`, `}`, `;`; comments dropped.
fn tokens(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {}
            '#' => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut last = ' ';
                for c in chars.by_ref() {
                    if last == '*' && c == '/' {
                        break;
                    }
                    last = c;
                }
            }
            '{' | '}' | ';' => out.push(c.to_string()),
            '"' => {
                let mut s = String::new();
                for c in chars.by_ref() {
                    if c == '"' {
                        break;
                    }
                    s.push(c);
                }
                out.push(s);
            }
            c => {
                let mut s = c.to_string();
                while let Some(&n) = chars.peek() {
                    if n.is_whitespace() || matches!(n, '{' | '}' | ';' | '"') {
                        break;
                    }
                    s.push(n);
                    chars.next();
                }
                out.push(s);
            }
        }
    }
    out
}

fn parse_key(text: &str) -> Result<TsigKey, KeyError> {
    let t = tokens(text);
    let start = t
        .iter()
        .position(|w| w == "key")
        .ok_or(KeyError::NoKeyStatement)?;
    let name = t
        .get(start + 1)
        .filter(|n| !matches!(n.as_str(), "{" | "}" | ";"))
        .ok_or(KeyError::NoName)?
        .clone();
    if t.get(start + 2).map(String::as_str) != Some("{") {
        return Err(KeyError::NoBrace);
    }
    let mut algorithm = None;
    let mut secret = None;
    let mut i = start + 3;
    while let Some(word) = t.get(i) {
        match word.as_str() {
            "}" => break,
            "algorithm" => algorithm = t.get(i + 1).cloned(),
            "secret" => secret = t.get(i + 1).cloned(),
            _ => {}
        }
        // Skip to the end of the statement.
        while t.get(i).is_some_and(|w| w != ";" && w != "}") {
            i += 1;
        }
        if t.get(i).map(String::as_str) == Some(";") {
            i += 1;
        }
    }
    let Some(algorithm) = algorithm else {
        return Err(KeyError::NoAlgorithm { name });
    };
    let algorithm = match algorithm.to_ascii_lowercase().as_str() {
        "hmac-sha256" => TsigAlgorithm::HmacSha256,
        "hmac-sha384" => TsigAlgorithm::HmacSha384,
        "hmac-sha512" => TsigAlgorithm::HmacSha512,
        other => {
            return Err(KeyError::Algorithm {
                name,
                algorithm: other.to_string(),
            })
        }
    };
    let Some(secret) = secret else {
        return Err(KeyError::NoSecret { name });
    };
    let Ok(secret) = data_encoding::BASE64.decode(secret.as_bytes()) else {
        return Err(KeyError::NotBase64 { name });
    };
    if secret.is_empty() {
        return Err(KeyError::EmptySecret { name });
    }
    Ok(TsigKey {
        name,
        algorithm,
        secret,
    })
}

/// One TXT value added to (and later deleted from) `record` in `zone` on `server`.
#[derive(Clone)]
pub(crate) struct Update {
    server: SocketAddr,
    signer: Option<TSigner>,
    zone: Name,
    record: Name,
    value: String,
}

impl Update {
    /// Finds the zone of `record` (SOA lookup) for adding `value` to its TXT set.
    pub(crate) async fn prepare(
        server: SocketAddr,
        key: Option<&TsigKey>,
        record: &str,
        value: &str,
    ) -> Result<Update, Rfc2136Error> {
        let server_err = |message: String| Rfc2136Error::Server { server, message };
        let signer = key
            .map(|k| {
                let name = Name::from_ascii(&k.name)
                    .map_err(|e| server_err(format!("TSIG key name `{}`: {e}", k.name)))?;
                TSigner::new(k.secret.clone(), k.algorithm.clone(), name, TSIG_FUDGE)
                    .map_err(|e| server_err(format!("TSIG key `{}`: {e}", k.name)))
            })
            .transpose()?;
        let mut fqdn = Name::from_ascii(record)
            .map_err(|e| server_err(format!("bad record name {record}: {e}")))?;
        fqdn.set_fqdn(true);
        let mut client = connect(server, None).await?;
        let zone = find_zone(&mut client, server, &fqdn).await?;
        tracing::debug!(%server, %zone, record = %fqdn, "zone found by SOA lookup");
        Ok(Update {
            server,
            signer,
            zone,
            record: fqdn,
            value: value.to_string(),
        })
    }

    /// Adds the value to the record's TXT set.
    pub(crate) async fn add(&self) -> Result<(), Rfc2136Error> {
        self.send(true).await?;
        tracing::info!(server = %self.server, record = %self.record, zone = %self.zone,
            "dns-01 record added by RFC 2136 update");
        Ok(())
    }

    /// Deletes the value added by [`Update::set`] (only that value: another order's answer on
    /// the same name stays).
    pub(crate) async fn clear(&self) -> Result<(), Rfc2136Error> {
        self.send(false).await
    }

    pub(crate) fn record(&self) -> String {
        self.record.to_string()
    }

    async fn send(&self, add: bool) -> Result<(), Rfc2136Error> {
        let server = self.server;
        let mut client = connect(server, self.signer.clone()).await?;
        let rdata = RData::TXT(TXT::new(vec![self.value.clone()]));
        let mut rec = Record::from_rdata(self.record.clone(), RECORD_TTL, rdata);
        rec.dns_class = DNSClass::IN;
        let action = if add { "add" } else { "delete" };
        let rsp = if add {
            client.append(rec, self.zone.clone(), false).await
        } else {
            client.delete_by_rdata(rec, self.zone.clone()).await
        }
        .map_err(|e| {
            let why = if matches!(e, NetError::Timeout) {
                format!("no answer within {DNS_TIMEOUT:?}")
            } else if self.signer.is_some() {
                // hickory reports an answer failing TSIG verification (BADSIG, BADKEY: the
                // server rejected the key) only as a protocol error.
                format!(
                    "its answer failed TSIG verification: the server most likely rejected \
                     the key; check its name, algorithm and secret ({e})"
                )
            } else {
                e.to_string()
            };
            Rfc2136Error::Server {
                server,
                message: format!("{action} of a TXT value at {} failed: {why}", self.record),
            }
        })?;
        let rcode = rsp.metadata.response_code;
        if rcode != ResponseCode::NoError {
            let hint = match rcode {
                ResponseCode::Refused => {
                    " (does the zone allow updates with this key? `update-policy` or `allow-update`)"
                }
                ResponseCode::NotAuth => " (the key was not accepted, or the server is not authoritative)",
                _ => "",
            };
            return Err(Rfc2136Error::Refused {
                server,
                action,
                record: self.record.to_string(),
                rcode,
                hint,
            });
        }
        Ok(())
    }
}

/// A DNS client over UDP, one exchange at a time, answers awaited at most [`DNS_TIMEOUT`].
type DnsClient = Client<TokioRuntimeProvider>;

async fn connect(server: SocketAddr, signer: Option<TSigner>) -> Result<DnsClient, Rfc2136Error> {
    let stream = UdpClientStream::builder(server, TokioRuntimeProvider::default())
        .with_timeout(Some(DNS_TIMEOUT))
        .with_signer(signer)
        .build();
    let (client, background) = DnsClient::from_sender(stream);
    tokio::spawn(background);
    Ok(client)
}

/// The zone holding `name`: the owner of the SOA the server returns for it, walking up one
/// label at a time if a server returns none.
async fn find_zone(
    client: &mut DnsClient,
    server: SocketAddr,
    name: &Name,
) -> Result<Name, Rfc2136Error> {
    let mut candidate = name.clone();
    loop {
        let rsp = client
            .query(candidate.clone(), DNSClass::IN, RecordType::SOA)
            .await
            .map_err(|e| Rfc2136Error::Server {
                server,
                message: format!("SOA lookup for {candidate} failed: {e}"),
            })?;
        if let Some(soa) = rsp
            .answers
            .iter()
            .chain(&rsp.authorities)
            .find(|r| r.record_type() == RecordType::SOA)
        {
            if soa.name.zone_of(name) {
                return Ok(soa.name.clone());
            }
        }
        if rsp.metadata.response_code == ResponseCode::Refused {
            return Err(Rfc2136Error::Server {
                server,
                message: format!("refused the SOA lookup for {candidate}: is it authoritative?"),
            });
        }
        if candidate.is_root() {
            return Err(Rfc2136Error::Server {
                server,
                message: format!("no zone holding {name} found by SOA lookup"),
            });
        }
        candidate = candidate.base_name();
    }
}

impl FromStr for TsigKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        parse_key(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_key_files_parse() {
        let key: TsigKey = r#"
# made by tsig-keygen
key "renewd-key" {
	algorithm hmac-sha256;
	secret "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3I=";
};
"#
        .parse()
        .unwrap();
        assert_eq!(key.name, "renewd-key");
        assert_eq!(key.algorithm, TsigAlgorithm::HmacSha256);
        assert_eq!(key.secret, b"secret-secret-secret-secret-secr");
        let dbg = format!("{key:?}");
        assert!(!dbg.contains("c2Vj") && !dbg.contains("secret-"), "{dbg}");

        let key: TsigKey = "key k.example. { algorithm HMAC-SHA512; secret \"AAAA\"; }; // x"
            .parse()
            .unwrap();
        assert_eq!(key.name, "k.example.");
        assert_eq!(key.algorithm, TsigAlgorithm::HmacSha512);
    }

    #[test]
    fn bad_key_files_say_why_without_the_secret() {
        for (text, needle) in [
            ("", "no `key` statement"),
            ("key \"k\" { secret \"AAAA\"; };", "has no `algorithm`"),
            (
                "key \"k\" { algorithm hmac-md5; secret \"AAAA\"; };",
                "not supported",
            ),
            ("key \"k\" { algorithm hmac-sha256; };", "has no `secret`"),
            (
                "key \"k\" { algorithm hmac-sha256; secret \"not base64 SUPERSECRET!\"; };",
                "not valid base64",
            ),
        ] {
            let err = text.parse::<TsigKey>().err().unwrap().to_string();
            assert!(err.contains(needle), "{text}: {err}");
            assert!(!err.contains("SUPERSECRET"), "{err}");
        }
    }
}

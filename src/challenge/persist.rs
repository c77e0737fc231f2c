//! dns-persist-01 (draft-ietf-acme-dns-persist): the standing TXT record
//! `_validation-persist.DOMAIN`, published once by the operator and bound to the CA (its issuer
//! domain name) and to renewd's ACME account (`accounturi`). Nothing is provisioned at
//! renewal: renewd only looks the record up, read-only, so a missing or wrong one fails
//! before the CA is asked, with the record to publish in the message.
//!
//! The record's value is a CAA issue-value (RFC 8659 §4.2):
//! `ISSUER; accounturi=ACCOUNT_URL[; policy=wildcard][; persistUntil=UNIX_SECONDS]`, the form
//! Pebble 2.10 accepts (the draft's later revisions hash the account URL; Pebble and today's
//! CAs take the URL itself).
//!
//! Lookups go to the challenge's `resolver`, else the first `nameserver` of
//! `/etc/resolv.conf`, over UDP with a deadline; at most [`MAX_RECORDS`] values of at most
//! [`MAX_VALUE`] bytes are read.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use hickory_net::client::{Client, ClientHandle};
use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::tcp::TcpClientStream;
use hickory_proto::op::{Message, MessageType, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, RecordType};

/// The label the draft puts before the validated name (§2, "Validation Domain Name").
pub(crate) const LABEL: &str = "_validation-persist";
/// Deadline for one lookup (its UDP query and, for a truncated answer, its TCP one).
pub(crate) const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);
/// Deadline for every lookup `renewd check` makes, together.
pub(crate) const ALL_LOOKUPS_TIMEOUT: Duration = Duration::from_secs(10);
/// Lookups in flight at once in [`lookup_all`].
const LOOKUPS_AT_ONCE: usize = 8;
/// Largest UDP answer read (no EDNS is sent, so servers send at most 512 bytes).
const MAX_UDP_ANSWER: usize = 4096;
/// Values read from one record set; the rest are ignored.
pub(crate) const MAX_RECORDS: usize = 64;
/// Longest value considered (the longest URL plus parameters); longer ones are reported as
/// unusable.
pub(crate) const MAX_VALUE: usize = 2048;
/// Where the system's resolver is named.
const RESOLV_CONF: &str = "/etc/resolv.conf";

/// Why a record could not be looked up.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LookupError {
    #[error("no DNS resolver: {0} names no usable `nameserver` (set `resolver` in the challenge)")]
    NoResolver(&'static str),
    #[error("cannot read {path}: {reason}")]
    ResolvConf { path: &'static str, reason: String },
    #[error("TXT lookup of {name} at {server} failed: {failure}")]
    Failed {
        name: String,
        server: SocketAddr,
        failure: Failure,
    },
}

/// Why one query got no usable answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Failure {
    /// Nothing came back in time (the one message for every kind of silence).
    #[error("no answer within {0:?}")]
    NoAnswer(Duration),
    /// The OS was told nothing listens there (ICMP port unreachable, TCP reset).
    #[error("connection refused (no DNS server listens at that address and port)")]
    Refused,
    /// Anything else: the socket's or the server's own words.
    #[error("{0}")]
    Other(String),
}

impl Failure {
    /// An I/O error, connection refused said as such.
    fn io(e: std::io::Error) -> Failure {
        match e.kind() {
            std::io::ErrorKind::ConnectionRefused => Failure::Refused,
            std::io::ErrorKind::TimedOut => Failure::NoAnswer(LOOKUP_TIMEOUT),
            _ => Failure::Other(e.to_string()),
        }
    }

    /// A hickory error, its time-outs and refusals said as [`Failure::io`] does.
    fn net(e: impl std::fmt::Display) -> Failure {
        let text = e.to_string();
        let lower = text.to_ascii_lowercase();
        if lower.contains("connection refused") {
            Failure::Refused
        } else if lower.contains("timed out") || lower.contains("timeout") {
            Failure::NoAnswer(LOOKUP_TIMEOUT)
        } else {
            Failure::Other(text)
        }
    }
}

/// The record renewd expects for one name at one CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Expected<'a> {
    /// The CA's issuer domain name (lowercase, no trailing dot).
    pub(crate) issuer: &'a str,
    /// renewd's account URL at that CA.
    pub(crate) account_url: &'a str,
    /// Whether `policy=wildcard` is needed (and written).
    pub(crate) wildcard: bool,
    /// Whether the validated name is a `*.` wildcard (else `policy=wildcard` is needed only
    /// because the challenge's `policy = "wildcard"` asks for it).
    pub(crate) wildcard_name: bool,
    /// `persistUntil` to write, seconds since the Unix epoch.
    pub(crate) persist_until: Option<i64>,
}

impl<'a> Expected<'a> {
    /// The record expected for `identifier` at the CA `issuer` for `account_url`, with the
    /// challenge's `policy = "wildcard"` (`policy_wildcard`) and `persist_until` (Unix
    /// seconds): a wildcard name, or that policy, asks for `policy=wildcard`.
    pub(crate) fn new(
        identifier: &str,
        issuer: &'a str,
        account_url: &'a str,
        policy_wildcard: bool,
        persist_until: Option<i64>,
    ) -> Expected<'a> {
        let wildcard_name = identifier.starts_with("*.");
        Expected {
            issuer,
            account_url,
            wildcard: wildcard_name || policy_wildcard,
            wildcard_name,
            persist_until,
        }
    }

    /// The TXT value to publish (draft §4.1): `ISSUER; accounturi=URL[; policy=wildcard]
    /// [; persistUntil=SECONDS]`.
    pub(crate) fn value(&self) -> String {
        let mut v = format!("{}; accounturi={}", self.issuer, self.account_url);
        if self.wildcard {
            v.push_str("; policy=wildcard");
        }
        if let Some(t) = self.persist_until {
            v.push_str(&format!("; persistUntil={t}"));
        }
        v
    }

    /// The zone-file line `renewd persist-record` prints for `identifier`:
    /// `_validation-persist.DOMAIN. TXT "VALUE"`.
    pub(crate) fn zone_line(&self, identifier: &str) -> String {
        format!(
            "{}. TXT \"{}\"",
            record_name(identifier),
            zone_escape(&self.value())
        )
    }
}

/// `"` and `\` escaped as a zone file's character-string needs (RFC 1035 §5.1).
fn zone_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// The record that validates `identifier` (no trailing dot). A wildcard is validated at its
/// base name: `*.example.org` → `_validation-persist.example.org`.
pub(crate) fn record_name(identifier: &str) -> String {
    let base = identifier.strip_prefix("*.").unwrap_or(identifier);
    format!("{LABEL}.{}", base.to_ascii_lowercase())
}

/// One TXT value read as an issue-value (RFC 8659 §4.2): the issuer domain name and its
/// `tag=value` parameters (tags as written; compared without case).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IssueValue {
    pub(crate) issuer: String,
    pub(crate) parameters: Vec<(String, String)>,
}

impl IssueValue {
    /// Parses `value`; `None` when it is not an issue-value (no issuer, a parameter without
    /// `=`, an empty tag).
    pub(crate) fn parse(value: &str) -> Option<IssueValue> {
        let mut parts = value.split(';');
        let issuer = parts
            .next()?
            .trim()
            .trim_end_matches('.')
            .to_ascii_lowercase();
        if issuer.is_empty() || issuer.contains(char::is_whitespace) {
            return None;
        }
        let mut parameters = Vec::new();
        for part in parts {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            let (tag, val) = part.split_once('=')?;
            let tag = tag.trim();
            if tag.is_empty() || !tag.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return None;
            }
            parameters.push((tag.to_string(), val.trim().to_string()));
        }
        Some(IssueValue { issuer, parameters })
    }

    /// The value of parameter `tag` (compared without case).
    pub(crate) fn get(&self, tag: &str) -> Option<&str> {
        self.parameters
            .iter()
            .find(|(t, _)| t.eq_ignore_ascii_case(tag))
            .map(|(_, v)| v.as_str())
    }
}

/// What the published record set means for one expected record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// A record this CA accepts for this account; its `persistUntil`, if any.
    Usable { persist_until: Option<i64> },
    /// No TXT record at the name at all.
    Missing,
    /// Records exist, none usable: why (another CA, another account, no wildcard policy,
    /// `persistUntil` passed, unparsable).
    Mismatch(String),
}

/// Judges the TXT values `found` at one record name against `expected`, at `now` (seconds
/// since the Unix epoch).
pub(crate) fn judge(found: &[String], expected: &Expected<'_>, now: i64) -> Verdict {
    if found.is_empty() {
        return Verdict::Missing;
    }
    let mut reasons = Vec::new();
    let mut other_issuers = Vec::new();
    for value in found {
        let Some(parsed) = IssueValue::parse(value).filter(|_| value.len() <= MAX_VALUE) else {
            reasons.push(format!(
                "`{}` is not an issue-value",
                crate::text::escape(value)
            ));
            continue;
        };
        if parsed.issuer != expected.issuer {
            other_issuers.push(crate::text::escape(&parsed.issuer).into_owned());
            continue;
        }
        match usable(&parsed, expected, now) {
            Ok(persist_until) => return Verdict::Usable { persist_until },
            Err(why) => reasons.push(why),
        }
    }
    if reasons.is_empty() {
        return Verdict::Mismatch(format!(
            "the record names another CA ({}), not `{}`",
            other_issuers.join(", "),
            expected.issuer
        ));
    }
    Verdict::Mismatch(reasons.join("; "))
}

/// Whether a record naming the expected issuer is usable: its `persistUntil` if so.
fn usable(parsed: &IssueValue, expected: &Expected<'_>, now: i64) -> Result<Option<i64>, String> {
    match parsed.get("accounturi") {
        Some(uri) if uri == expected.account_url => {}
        Some(uri) => {
            return Err(format!(
                "accounturi is `{}`, another account than renewd's `{}`",
                crate::text::escape(uri),
                expected.account_url
            ))
        }
        None => return Err("the record has no accounturi".to_string()),
    }
    if expected.wildcard
        && !parsed
            .get("policy")
            .is_some_and(|p| p.eq_ignore_ascii_case("wildcard"))
    {
        return Err(if expected.wildcard_name {
            "the record lacks policy=wildcard, which a wildcard name needs".into()
        } else {
            "the record lacks policy=wildcard, which the challenge's `policy = \"wildcard\"` \
             asks for (remove that setting if the record should not cover names below it)"
                .into()
        });
    }
    let until = match parsed.get("persistUntil") {
        None => None,
        Some(t) => Some(t.parse::<i64>().map_err(|_| {
            format!(
                "persistUntil `{}` is not a Unix time",
                crate::text::escape(t)
            )
        })?),
    };
    if let Some(t) = until.filter(|t| *t <= now) {
        return Err(format!(
            "persistUntil {} has passed",
            crate::text::rfc3339(std::time::UNIX_EPOCH + Duration::from_secs(t.max(0) as u64))
        ));
    }
    Ok(until)
}

/// Now, in seconds since the Unix epoch (what `persistUntil` counts).
pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The DNS server to ask: `configured`, else the first `nameserver` of `/etc/resolv.conf`.
pub(crate) fn resolver(configured: Option<SocketAddr>) -> Result<SocketAddr, LookupError> {
    if let Some(server) = configured {
        return Ok(server);
    }
    let text = crate::fsutil::read_regular_string(
        Path::new(RESOLV_CONF),
        crate::fsutil::caps::CONFIG,
        crate::fsutil::Follow::Yes,
    )
    .map_err(|e| LookupError::ResolvConf {
        path: RESOLV_CONF,
        reason: e.reason(),
    })?;
    first_nameserver(&text).ok_or(LookupError::NoResolver(RESOLV_CONF))
}

/// The first `nameserver ADDRESS` line of a resolv.conf text (a zone index is dropped).
fn first_nameserver(text: &str) -> Option<SocketAddr> {
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("nameserver"))
        .filter_map(|rest| rest.split_whitespace().next())
        .filter_map(|addr| addr.split('%').next()?.parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .next()
}

/// The TXT values at `name` (each record's strings joined), asked of `server` with
/// recursion, over UDP and again over TCP when the answer is truncated (RFC 7766 §5), both
/// within [`LOOKUP_TIMEOUT`]; an empty list when the name or its TXT set does not exist.
pub(crate) async fn lookup(server: SocketAddr, name: &str) -> Result<Vec<String>, LookupError> {
    let fail = |failure: Failure| LookupError::Failed {
        name: name.to_string(),
        server,
        failure,
    };
    let qname =
        Name::from_ascii(format!("{name}.")).map_err(|e| fail(Failure::Other(e.to_string())))?;
    let rsp = tokio::time::timeout(LOOKUP_TIMEOUT, exchange(server, qname))
        .await
        .unwrap_or(Err(Failure::NoAnswer(LOOKUP_TIMEOUT)))
        .map_err(fail)?;
    match rsp.metadata.response_code {
        ResponseCode::NoError | ResponseCode::NXDomain => {}
        other => return Err(fail(Failure::Other(format!("the server answered {other}")))),
    }
    Ok(rsp
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::TXT(txt) => Some(
                txt.txt_data
                    .iter()
                    .map(|s| String::from_utf8_lossy(s))
                    .collect::<String>(),
            ),
            _ => None,
        })
        .take(MAX_RECORDS)
        .collect())
}

/// [`lookup`] of every `(server, name)` of `queries`, at most [`LOOKUPS_AT_ONCE`] at a time,
/// all within `deadline` together: one not answered by then fails with
/// [`Failure::NoAnswer`]. The results are in the order of `queries`.
pub(crate) async fn lookup_all(
    queries: &[(SocketAddr, String)],
    deadline: Duration,
) -> Vec<Result<Vec<String>, LookupError>> {
    let until = tokio::time::Instant::now() + deadline;
    let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(LOOKUPS_AT_ONCE));
    let mut tasks = tokio::task::JoinSet::new();
    for (i, (server, name)) in queries.iter().cloned().enumerate() {
        let permits = permits.clone();
        tasks.spawn(async move {
            let one = async {
                let _permit = permits.acquire().await;
                lookup(server, &name).await
            };
            let result = tokio::time::timeout_at(until, one).await;
            let result = result.unwrap_or(Err(LookupError::Failed {
                name,
                server,
                failure: Failure::NoAnswer(deadline),
            }));
            (i, result)
        });
    }
    let mut results: Vec<Option<Result<Vec<String>, LookupError>>> =
        queries.iter().map(|_| None).collect();
    while let Some(done) = tasks.join_next().await {
        if let Ok((i, result)) = done {
            results[i] = Some(result);
        }
    }
    results
        .into_iter()
        .zip(queries)
        .map(|(r, (server, name))| {
            r.unwrap_or_else(|| {
                Err(LookupError::Failed {
                    name: name.clone(),
                    server: *server,
                    failure: Failure::Other("the lookup task failed".into()),
                })
            })
        })
        .collect()
}

/// The UDP query, then the TCP one when the UDP answer is truncated.
async fn exchange(server: SocketAddr, qname: Name) -> Result<Message, Failure> {
    let rsp = udp_query(server, &qname).await?;
    if rsp.metadata.truncation {
        return tcp_query(server, qname).await;
    }
    Ok(rsp)
}

/// A recursive TXT query for `qname`.
fn request(qname: &Name) -> Message {
    let mut msg = Message::query();
    msg.metadata.recursion_desired = true;
    msg.add_query(Query::query(qname.clone(), RecordType::TXT));
    msg
}

/// One TXT query over a connected UDP socket, so that an ICMP port unreachable comes back
/// as "connection refused". Datagrams that are not the answer (another ID or question,
/// undecodable) are ignored; the caller bounds the time.
async fn udp_query(server: SocketAddr, qname: &Name) -> Result<Message, Failure> {
    let local: SocketAddr = if server.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = tokio::net::UdpSocket::bind(local)
        .await
        .map_err(Failure::io)?;
    socket.connect(server).await.map_err(Failure::io)?;
    let req = request(qname);
    let bytes = req.to_vec().map_err(|e| Failure::Other(e.to_string()))?;
    socket.send(&bytes).await.map_err(Failure::io)?;
    let mut buf = vec![0u8; MAX_UDP_ANSWER];
    loop {
        let n = socket.recv(&mut buf).await.map_err(Failure::io)?;
        let Ok(rsp) = Message::from_vec(&buf[..n]) else {
            continue;
        };
        if rsp.metadata.id == req.metadata.id
            && rsp.metadata.message_type == MessageType::Response
            && rsp.queries == req.queries
        {
            return Ok(rsp);
        }
    }
}

/// One TXT query over TCP (RFC 7766); the caller bounds the time.
async fn tcp_query(server: SocketAddr, qname: Name) -> Result<Message, Failure> {
    let provider = TokioRuntimeProvider::default();
    let (stream, handle) = TcpClientStream::new(server, None, Some(LOOKUP_TIMEOUT), provider);
    let stream = stream.await.map_err(Failure::net)?;
    let (mut client, bg) =
        Client::<TokioRuntimeProvider>::with_timeout(stream, handle, LOOKUP_TIMEOUT);
    let task = tokio::spawn(bg);
    let answer = client.query(qname, DNSClass::IN, RecordType::TXT).await;
    task.abort();
    answer.map(|rsp| rsp.into_message()).map_err(Failure::net)
}

/// The pre-flight look before the CA is told to validate: the record at `identifier`'s name
/// must be usable for `expected`; else the error says what is wrong and what to publish. A
/// lookup that fails (resolver down) is logged and left to the CA; a resolver that gave no
/// answer is not asked again for [`SILENT_FOR`], so an order of many names waits for it once
/// (at most [`LOOKUP_TIMEOUT`]), not once per name.
pub(super) async fn preflight(
    resolver_addr: Option<SocketAddr>,
    identifier: &str,
    expected: &Expected<'_>,
) -> Result<(), super::ChallengeError> {
    let name = record_name(identifier);
    let found = match resolver(resolver_addr) {
        Ok(server) if recently_silent(server) => {
            tracing::warn!(record = %name, %server,
                "the DNS resolver gave no answer a moment ago; not looking the dns-persist-01 \
                 record up, asking the CA to validate anyway");
            return Ok(());
        }
        Ok(server) => {
            let found = lookup(server, &name).await;
            if let Err(LookupError::Failed {
                failure: Failure::NoAnswer(_),
                ..
            }) = &found
            {
                mark_silent(server);
            }
            found
        }
        Err(e) => Err(e),
    };
    let found = match found {
        Ok(found) => found,
        Err(e) => {
            tracing::warn!(record = %name, error = %e,
                "cannot look the dns-persist-01 record up; asking the CA to validate anyway");
            return Ok(());
        }
    };
    let now = unix_now();
    match judge(&found, expected, now) {
        Verdict::Usable { .. } => {
            tracing::info!(record = %name, "dns-persist-01 record found");
            Ok(())
        }
        Verdict::Missing => Err(super::ChallengeError::PersistRecord {
            record: name,
            problem: "there is no TXT record".into(),
            publish: expected.zone_line(identifier),
        }),
        Verdict::Mismatch(problem) => Err(super::ChallengeError::PersistRecord {
            record: name,
            problem,
            publish: expected.zone_line(identifier),
        }),
    }
}

/// How long a resolver that gave no answer is not asked again by [`preflight`].
const SILENT_FOR: Duration = Duration::from_secs(60);

/// Resolvers that gave no answer, and when.
static SILENT: std::sync::Mutex<Vec<(SocketAddr, std::time::Instant)>> =
    std::sync::Mutex::new(Vec::new());

/// Whether `server` gave no answer within the last [`SILENT_FOR`].
fn recently_silent(server: SocketAddr) -> bool {
    let mut silent = SILENT.lock().unwrap_or_else(|e| e.into_inner());
    silent.retain(|(_, at)| at.elapsed() < SILENT_FOR);
    silent.iter().any(|(s, _)| *s == server)
}

/// Remembers that `server` gave no answer.
fn mark_silent(server: SocketAddr) {
    let mut silent = SILENT.lock().unwrap_or_else(|e| e.into_inner());
    silent.retain(|(s, at)| *s != server && at.elapsed() < SILENT_FOR);
    silent.push((server, std::time::Instant::now()));
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "https://ca.test/acme/acct/1";

    fn expected(wildcard: bool) -> Expected<'static> {
        Expected {
            issuer: "ca.test",
            account_url: URL,
            wildcard,
            wildcard_name: wildcard,
            persist_until: None,
        }
    }

    #[test]
    fn the_value_and_zone_line_are_the_drafts() {
        let mut e = expected(true);
        e.persist_until = Some(1_800_000_000);
        assert_eq!(
            e.zone_line("*.Example.org"),
            "_validation-persist.example.org. TXT \"ca.test; accounturi=https://ca.test/acme/acct/1; policy=wildcard; persistUntil=1800000000\""
        );
        assert_eq!(
            expected(false).value(),
            "ca.test; accounturi=https://ca.test/acme/acct/1"
        );
    }

    #[test]
    fn records_are_judged_by_issuer_account_policy_and_time() {
        let v = |s: &str| vec![s.to_string()];
        assert_eq!(judge(&[], &expected(false), 0), Verdict::Missing);
        assert_eq!(
            judge(&v(&expected(false).value()), &expected(false), 0),
            Verdict::Usable {
                persist_until: None
            }
        );
        // Case and spacing of the issuer and tags do not matter.
        assert!(matches!(
            judge(
                &v(&format!("CA.test ;AccountURI={URL};persistuntil=100")),
                &expected(false),
                50
            ),
            Verdict::Usable {
                persist_until: Some(100)
            }
        ));
        let mismatch = |found: &str, wildcard: bool, now: i64| match judge(
            &v(found),
            &expected(wildcard),
            now,
        ) {
            Verdict::Mismatch(why) => why,
            other => panic!("{found}: {other:?}"),
        };
        assert!(mismatch(&format!("other.ca; accounturi={URL}"), false, 0)
            .contains("another CA (other.ca)"));
        assert!(
            mismatch("ca.test; accounturi=https://ca.test/acme/acct/2", false, 0)
                .contains("another account")
        );
        assert!(
            mismatch(&format!("ca.test; accounturi={URL}"), true, 0).contains("policy=wildcard")
        );
        assert!(mismatch(
            &format!("ca.test; accounturi={URL}; persistUntil=100"),
            false,
            100
        )
        .contains("has passed"));
        assert!(mismatch("ca.test; accounturi", false, 0).contains("not an issue-value"));
        // One usable record among others is enough.
        let found = vec![
            "other.ca; accounturi=x".to_string(),
            format!("ca.test; accounturi={URL}; policy=wildcard"),
        ];
        assert!(matches!(
            judge(&found, &expected(true), 0),
            Verdict::Usable { .. }
        ));
    }

    #[test]
    fn the_first_nameserver_is_used() {
        let conf = "# comment\nsearch example.org\nnameserver fe80::1%eth0\nnameserver 10.0.0.2\n";
        assert_eq!(
            first_nameserver(conf),
            Some("[fe80::1]:53".parse().unwrap())
        );
        assert_eq!(first_nameserver("options ndots:2\n"), None);
    }

    #[test]
    fn a_missing_wildcard_policy_is_explained_by_what_asked_for_it() {
        let record = format!("ca.test; accounturi={URL}");
        let why = |identifier: &str| match judge(
            std::slice::from_ref(&record),
            &Expected::new(identifier, "ca.test", URL, true, None),
            0,
        ) {
            Verdict::Mismatch(why) => why,
            other => panic!("{identifier}: {other:?}"),
        };
        assert!(why("*.example.org").contains("which a wildcard name needs"));
        let plain = why("example.org");
        assert!(!plain.contains("wildcard name"), "{plain}");
        assert!(plain.contains("`policy = \"wildcard\"`"), "{plain}");
    }

    /// A UDP port with nothing behind it: bound, then closed.
    fn closed_udp_port() -> SocketAddr {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        socket.local_addr().expect("addr")
    }

    #[tokio::test]
    async fn a_closed_port_is_refused_at_once() {
        let server = closed_udp_port();
        let started = std::time::Instant::now();
        let e = lookup(server, "_validation-persist.example.org")
            .await
            .expect_err("nothing listens");
        assert!(matches!(
            e,
            LookupError::Failed {
                failure: Failure::Refused,
                ..
            }
        ));
        assert!(e.to_string().contains("connection refused"), "{e}");
        assert!(
            started.elapsed() < LOOKUP_TIMEOUT,
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn many_lookups_at_a_silent_resolver_share_one_deadline() {
        // Bound and never read: queries are swallowed without an answer or an ICMP error.
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let server = silent.local_addr().expect("addr");
        let queries: Vec<(SocketAddr, String)> = (0..12)
            .map(|i| (server, format!("_validation-persist.n{i}.example.org")))
            .collect();
        let deadline = Duration::from_millis(1500);
        let started = std::time::Instant::now();
        let results = lookup_all(&queries, deadline).await;
        let took = started.elapsed();
        assert!(took >= deadline && took < deadline * 2, "{took:?}");
        assert_eq!(results.len(), 12);
        for (r, (_, name)) in results.iter().zip(&queries) {
            let e = r.as_ref().expect_err("no answer");
            assert_eq!(
                e.to_string(),
                format!("TXT lookup of {name} at {server} failed: no answer within 1.5s")
            );
        }
    }

    #[tokio::test]
    async fn a_silent_resolver_is_waited_for_once_per_order_not_once_per_name() {
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let server = silent.local_addr().expect("addr");
        let expected = Expected::new("a.example.org", "ca.test", URL, false, None);
        let started = std::time::Instant::now();
        preflight(Some(server), "a.example.org", &expected)
            .await
            .expect("left to the CA");
        let first = started.elapsed();
        assert!(first >= LOOKUP_TIMEOUT, "{first:?}");
        let started = std::time::Instant::now();
        for name in ["b.example.org", "c.example.org", "d.example.org"] {
            preflight(Some(server), name, &expected)
                .await
                .expect("left to the CA");
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
    }
}

//! The data model: the typed configuration every other module reads, with `conf.d` merged
//! and `[defaults]` applied. Nothing here knows TOML.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::problem::Location;

pub(super) const DEFAULT_STATE_DIR: &str = "/var/lib/renewd";

pub(super) const DEFAULT_CONTROL_SOCKET: &str = "/run/renewd/control.sock";

pub(super) const DEFAULT_MAX_CONCURRENT: usize = 4;

/// The validated configuration, with `conf.d` merged and `[defaults]` applied.
#[derive(Debug, Clone)]
pub struct Config {
    pub state_dir: PathBuf,
    pub control_socket: PathBuf,
    pub max_concurrent_renewals: usize,
    /// One of [`LOG_LEVELS`]; `None` means the default, `info`.
    pub log_level: Option<String>,
    pub cas: BTreeMap<String, CaConfig>,
    /// In file order: the main file first, then `conf.d` in name order.
    pub certificates: Vec<Arc<CertConfig>>,
    pub metrics: Option<MetricsConfig>,
    pub alert: Option<AlertConfig>,
    pub exceptions: Vec<ExceptionConfig>,
    pub discovery: Option<DiscoveryConfig>,
    /// `[trust]`: the trust stores audited by `trust-audit` and the daemon.
    pub trust: Option<TrustConfig>,
    /// `[[exception]]` tables with `fingerprint`: trust anchors acknowledged by a person.
    pub anchor_exceptions: Vec<AnchorException>,
    /// The files read, in order.
    pub sources: Vec<PathBuf>,
    /// Where each top-level value was written: `state_dir`, `control_socket`,
    /// `max_concurrent_renewals`, the `metrics`, `alert` and `discovery` table headers,
    /// and `alert.command`, `alert.webhook`, `metrics.listen`, `discovery.paths`.
    pub key_locations: BTreeMap<String, Location>,
}

impl Default for Config {
    /// What an empty configuration file means: no CA, no certificate, default paths.
    fn default() -> Self {
        Config {
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
            control_socket: PathBuf::from(DEFAULT_CONTROL_SOCKET),
            max_concurrent_renewals: DEFAULT_MAX_CONCURRENT,
            log_level: None,
            cas: BTreeMap::new(),
            certificates: Vec::new(),
            metrics: None,
            alert: None,
            exceptions: Vec::new(),
            discovery: None,
            trust: None,
            anchor_exceptions: Vec::new(),
            sources: Vec::new(),
            key_locations: BTreeMap::new(),
        }
    }
}

/// One `[ca.NAME]` table.
#[derive(Debug, Clone, PartialEq)]
pub struct CaConfig {
    pub name: String,
    /// The ACME directory URL: `https://`, or `http://` for a loopback host only.
    pub directory: String,
    /// Each a `mailto:` URL.
    pub contact: Vec<String>,
    /// Always true once loaded: a CA whose terms are not accepted is a configuration error.
    pub accept_terms: bool,
    pub trust_roots: Option<PathBuf>,
    pub eab_kid: Option<String>,
    pub eab_hmac_key_file: Option<PathBuf>,
    pub profile: Option<String>,
    /// Deadline of one HTTP exchange with this CA, headers and body.
    pub timeout: Duration,
    /// Whether the CA's renewal information (ARI) is asked for; `ari = false` treats the CA
    /// as one whose directory offers none, so `renew_before` alone decides.
    pub ari: bool,
    /// `proxy`: `None` follows `HTTPS_PROXY`/`NO_PROXY`; `Some("")` connects directly;
    /// else an `http://[user:pass@]host[:port]` proxy for every request to this CA
    /// (checked by [`check_proxy_url`]).
    pub proxy: Option<String>,
    /// `issuer_domain_name`: the name this CA recognises in dns-persist-01 records
    /// (draft-ietf-acme-dns-persist §3.1), lowercase, no trailing dot. `None`: the first of
    /// the directory's `meta.issuerDomainNames` (§3.2).
    pub issuer_domain_name: Option<String>,
    /// The `[ca.NAME]` header.
    pub location: Location,
    /// Where each key's value was written.
    pub key_locations: BTreeMap<String, Location>,
}

impl CaConfig {
    /// Where the EAB HMAC key is read from: the file of the same name in systemd's
    /// `$CREDENTIALS_DIRECTORY` (`LoadCredential=`) when that exists, else
    /// `eab_hmac_key_file` itself.
    pub(crate) fn eab_key_path(&self) -> Option<PathBuf> {
        self.eab_hmac_key_file.as_deref().map(credential_or)
    }

    /// Where `key` was written, else the `[ca.NAME]` header.
    pub fn key_location(&self, key: &str) -> &Location {
        self.key_locations.get(key).unwrap_or(&self.location)
    }
}

/// A secret file's path as read: the file of the same name in systemd's
/// `$CREDENTIALS_DIRECTORY` (`LoadCredential=`) when that exists, else `configured`.
fn credential_or(configured: &Path) -> PathBuf {
    std::env::var_os("CREDENTIALS_DIRECTORY")
        .zip(configured.file_name())
        .map(|(dir, name)| Path::new(&dir).join(name))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| configured.to_path_buf())
}

/// One `[[certificate]]`, with `[defaults]` applied.
#[derive(Debug, Clone, PartialEq)]
pub struct CertConfig {
    pub name: String,
    /// Lowercased DNS names without a trailing dot, `*.` wildcards, and IP addresses in
    /// `IpAddr::to_string()` form; never empty, no duplicates.
    pub domains: Vec<String>,
    pub owner: Option<String>,
    pub service: Option<String>,
    /// In order of preference; every entry names a key of [`Config::cas`].
    pub ca: Vec<String>,
    pub key_type: KeyType,
    pub renew_before: RenewBefore,
    pub challenge: Challenges,
    pub files: FileSet,
    pub user: Option<String>,
    pub group: Option<String>,
    /// Never wider than 0o640.
    pub key_mode: u32,
    pub reload: Vec<Vec<String>>,
    pub reload_timeout: Duration,
    pub verify: Option<VerifyConfig>,
    pub profile: Option<String>,
    /// Lead time of the `expiring` alert; `None`: a third of the lifetime, at most 30 days.
    pub alert_before: Option<RenewBefore>,
    /// `preferred_chain`: the issuer common name the topmost certificate of the deployed
    /// chain should have, among the CA's default and alternate chains (RFC 8555 §7.4.2).
    pub preferred_chain: Option<String>,
    /// `reuse_key`: keep the deployed private key across renewals (TLSA/DANE pins).
    pub reuse_key: bool,
    /// `common_name`: the CSR subject's CN; always one of `domains`, at most 64 octets.
    pub common_name: Option<String>,
    /// `pkcs12_password_file`: the password of `files.pkcs12`; set whenever it is.
    pub pkcs12_password_file: Option<PathBuf>,
    /// The `[[certificate]]` header.
    pub location: Location,
    /// Where each key's value was written for this certificate, or in `[defaults]` when
    /// inherited. Besides the keys themselves: `domains.N`, `reload.N` (N from 0),
    /// `files.KIND`, `challenge.type`, `challenge.webroot`, `challenge.listen`,
    /// `challenge.hook`, `challenge.rfc2136.server`, `challenge.rfc2136.tsig_key_file`,
    /// `verify.connect`, `verify.server_name`, `verify.timeout`; for a per-name `challenge`
    /// table the same under each entry's [`ChallengeRule::key`] (`challenge."NAME".type` ...).
    /// Shared between clones (the daemon keeps several views of each certificate).
    pub key_locations: Arc<BTreeMap<String, Location>>,
}

impl CertConfig {
    /// Where the password of `files.pkcs12` is read from: the file of the same name in
    /// systemd's `$CREDENTIALS_DIRECTORY` (`LoadCredential=`) when that exists, else
    /// `pkcs12_password_file` itself (as [`CaConfig::eab_key_path`]).
    pub(crate) fn pkcs12_password_path(&self) -> Option<PathBuf> {
        self.pkcs12_password_file.as_deref().map(credential_or)
    }

    /// Where `key` was written; for a dotted key not recorded, where its parent was
    /// written; else the `[[certificate]]` header.
    pub fn key_location(&self, key: &str) -> &Location {
        let mut key = key;
        loop {
            if let Some(location) = self.key_locations.get(key) {
                return location;
            }
            match key.rsplit_once('.') {
                Some((parent, _)) => key = parent,
                None => return &self.location,
            }
        }
    }
}

/// The kind of private key to generate for a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyType {
    EcdsaP256,
    EcdsaP384,
    Rsa2048,
    Rsa3072,
    Rsa4096,
}

impl KeyType {
    pub(crate) const ALL: [KeyType; 5] = [
        KeyType::EcdsaP256,
        KeyType::EcdsaP384,
        KeyType::Rsa2048,
        KeyType::Rsa3072,
        KeyType::Rsa4096,
    ];

    /// The name used in the configuration, e.g. `ecdsa-p256`.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyType::EcdsaP256 => "ecdsa-p256",
            KeyType::EcdsaP384 => "ecdsa-p384",
            KeyType::Rsa2048 => "rsa-2048",
            KeyType::Rsa3072 => "rsa-3072",
            KeyType::Rsa4096 => "rsa-4096",
        }
    }

    /// The key type named `s` in the configuration's spelling.
    pub(crate) fn from_name(s: &str) -> Option<KeyType> {
        KeyType::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl RenewBefore {
    /// The margin this means for a certificate that lives `lifetime`.
    pub(crate) fn margin(&self, lifetime: Duration) -> Duration {
        match self {
            RenewBefore::Fraction(f) => lifetime.mul_f64(f.clamp(0.0, 1.0)),
            RenewBefore::Duration(d) => *d,
        }
    }
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// When to renew if the CA offers no ARI window (`renew_before`); also the lead time of
/// the `expiring` alert (`alert_before`): a fraction of the lifetime, or a duration, before
/// `notAfter`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RenewBefore {
    /// Renew when this fraction of the certificate's lifetime is left; `0 < f < 1`.
    Fraction(f64),
    /// Renew when this much time is left; never zero.
    Duration(Duration),
}

/// How the CA is to be convinced that we control the names.
#[derive(Debug, Clone, PartialEq)]
pub enum ChallengeConfig {
    /// Write the token under `webroot/.well-known/acme-challenge/`.
    Http01Webroot {
        webroot: PathBuf,
        /// `trust_owner`: the webroot may belong to (or be writable by) users other than
        /// root and renewd's; symlinks below it are refused all the same.
        trust_owner: bool,
    },
    /// Answer on a built-in HTTP server.
    Http01Listen { listen: SocketAddr },
    /// Run `hook set|clear RECORD VALUE`.
    Dns01Hook {
        hook: Vec<String>,
        propagation_wait: Duration,
    },
    /// Send RFC 2136 dynamic updates to `server`.
    Dns01Rfc2136 {
        server: SocketAddr,
        tsig_key_file: Option<PathBuf>,
        propagation_wait: Duration,
    },
    /// Answer on a built-in TLS server.
    TlsAlpn01 { listen: SocketAddr },
    /// dns-persist-01 (draft-ietf-acme-dns-persist): a standing `_validation-persist` TXT
    /// record the operator published once (`renewd persist-record`); nothing is provisioned.
    DnsPersist01(PersistConfig),
    /// dns-account-01 (draft-ietf-acme-dns-account-label): `hook set|clear RECORD VALUE` at
    /// the account's own label, `_<label>._acme-challenge.DOMAIN`.
    DnsAccount01Hook {
        hook: Vec<String>,
        propagation_wait: Duration,
    },
    /// dns-account-01 through RFC 2136 dynamic updates to `server`.
    DnsAccount01Rfc2136 {
        server: SocketAddr,
        tsig_key_file: Option<PathBuf>,
        propagation_wait: Duration,
    },
}

/// What a dns-persist-01 challenge table says: the record's parameters and where to look it
/// up.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PersistConfig {
    /// `policy = "wildcard"`: the record carries `policy=wildcard`, which a wildcard name
    /// (and, per the draft, names below the domain) needs.
    pub wildcard: bool,
    /// `persist_until`: the record's `persistUntil`, seconds since the Unix epoch (UTC);
    /// after it the CA ignores the record.
    pub persist_until: Option<i64>,
    /// `resolver`: the DNS server `check` and the pre-flight lookup ask (port 53 if not
    /// given); `None`: the first `nameserver` of `/etc/resolv.conf`.
    pub resolver: Option<SocketAddr>,
}

impl ChallengeConfig {
    /// The ACME challenge type: `http-01`, `dns-01`, `tls-alpn-01`, `dns-persist-01` or
    /// `dns-account-01`.
    pub fn kind(&self) -> &'static str {
        match self {
            ChallengeConfig::Http01Webroot { .. } | ChallengeConfig::Http01Listen { .. } => {
                "http-01"
            }
            ChallengeConfig::Dns01Hook { .. } | ChallengeConfig::Dns01Rfc2136 { .. } => "dns-01",
            ChallengeConfig::TlsAlpn01 { .. } => "tls-alpn-01",
            ChallengeConfig::DnsPersist01(_) => "dns-persist-01",
            ChallengeConfig::DnsAccount01Hook { .. }
            | ChallengeConfig::DnsAccount01Rfc2136 { .. } => "dns-account-01",
        }
    }

    pub(crate) fn is_dns01(&self) -> bool {
        self.kind() == "dns-01"
    }

    /// Whether the CA looks at DNS for this challenge (dns-01, dns-account-01,
    /// dns-persist-01): what a wildcard needs, and what an IP address cannot use.
    pub(crate) fn is_dns(&self) -> bool {
        self.is_dns01() || matches!(self.kind(), "dns-persist-01" | "dns-account-01")
    }

    /// How long a DNS answer takes to be visible after it is published (`propagation_wait`);
    /// zero for every other challenge.
    pub(crate) fn propagation_wait(&self) -> Duration {
        match self {
            ChallengeConfig::Dns01Hook {
                propagation_wait, ..
            }
            | ChallengeConfig::Dns01Rfc2136 {
                propagation_wait, ..
            }
            | ChallengeConfig::DnsAccount01Hook {
                propagation_wait, ..
            }
            | ChallengeConfig::DnsAccount01Rfc2136 {
                propagation_wait, ..
            } => *propagation_wait,
            _ => Duration::ZERO,
        }
    }
}

/// How each name of a certificate is validated: `challenge = { type = ... }` (one rule for
/// every name), or a table keyed by name pattern, `challenge = { "*.example.org" = { ... },
/// "example.org" = { ... } }`. Once loaded, every configured name has exactly one most
/// specific rule, and every rule serves at least one name.
#[derive(Debug, Clone, PartialEq)]
pub struct Challenges {
    /// The certificate's name (`RENEWD_NAME` for dns-01 hooks).
    pub certificate: String,
    /// The certificate's names (`RENEWD_DOMAINS` for dns-01 hooks).
    pub domains: Vec<String>,
    pub rules: Vec<ChallengeRule>,
}

/// One challenge and the names it validates.
#[derive(Debug, Clone, PartialEq)]
pub struct ChallengeRule {
    /// `None` for a single `challenge = { type = ... }`; else an exact name or IP address, a
    /// `*.example.org` pattern (that wildcard itself, and every name one label below
    /// `example.org`), or `*` (every name no other rule covers).
    pub pattern: Option<String>,
    pub config: ChallengeConfig,
    /// The prefix of this rule's keys in [`CertConfig::key_locations`]: `challenge`, or
    /// `challenge."PATTERN"`.
    pub key: String,
}

impl Challenges {
    /// The challenge that validates `name` (a configured name: `example.org`,
    /// `*.example.org`, an IP address), by the most specific rule covering it.
    pub(crate) fn for_name(&self, name: &str) -> Option<&ChallengeRule> {
        self.rules
            .iter()
            .filter_map(|r| pattern_rank(r.pattern.as_deref(), name).map(|rank| (rank, r)))
            .max_by_key(|(rank, _)| *rank)
            .map(|(_, r)| r)
    }
}

/// How specifically `pattern` covers `name`, or `None` when it does not: an exact name
/// beats a `*.` pattern, which beats `*`, which beats the single rule for everything.
pub(super) fn pattern_rank(pattern: Option<&str>, name: &str) -> Option<u8> {
    match pattern {
        None => Some(0),
        Some("*") => Some(1),
        Some(p) if p == name => Some(3),
        Some(p) => {
            let base = p.strip_prefix("*.")?;
            if name.parse::<IpAddr>().is_ok() {
                return None;
            }
            let (label, rest) = name.split_once('.')?;
            (label != "*" && rest == base).then_some(2)
        }
    }
}

/// The files a certificate is deployed to. Once loaded: all absolute, no two equal, at
/// least one holds the certificate and at least one holds the key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileSet {
    pub cert: Option<PathBuf>,
    pub chain: Option<PathBuf>,
    pub fullchain: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub combined: Option<PathBuf>,
    /// PKCS#12 (RFC 7292): key, leaf and intermediates, password-protected.
    pub pkcs12: Option<PathBuf>,
}

impl FileSet {
    /// The configured files, in the order of [`FileKind`].
    pub fn iter(&self) -> impl Iterator<Item = (FileKind, &Path)> {
        [
            (FileKind::Cert, &self.cert),
            (FileKind::Chain, &self.chain),
            (FileKind::Fullchain, &self.fullchain),
            (FileKind::Key, &self.key),
            (FileKind::Combined, &self.combined),
            (FileKind::Pkcs12, &self.pkcs12),
        ]
        .into_iter()
        .filter_map(|(kind, path)| path.as_deref().map(|p| (kind, p)))
    }

    pub fn get(&self, kind: FileKind) -> Option<&Path> {
        match kind {
            FileKind::Cert => self.cert.as_deref(),
            FileKind::Chain => self.chain.as_deref(),
            FileKind::Fullchain => self.fullchain.as_deref(),
            FileKind::Key => self.key.as_deref(),
            FileKind::Combined => self.combined.as_deref(),
            FileKind::Pkcs12 => self.pkcs12.as_deref(),
        }
    }

    pub(super) fn slot(&mut self, kind: FileKind) -> &mut Option<PathBuf> {
        match kind {
            FileKind::Cert => &mut self.cert,
            FileKind::Chain => &mut self.chain,
            FileKind::Fullchain => &mut self.fullchain,
            FileKind::Key => &mut self.key,
            FileKind::Combined => &mut self.combined,
            FileKind::Pkcs12 => &mut self.pkcs12,
        }
    }
}

/// What one deployed file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FileKind {
    /// The leaf certificate.
    Cert,
    /// The intermediates.
    Chain,
    /// Leaf and intermediates.
    Fullchain,
    /// The private key.
    Key,
    /// Private key, leaf and intermediates (HAProxy).
    Combined,
    /// Private key, leaf and intermediates in a PKCS#12 archive (RFC 7292) encrypted with
    /// PBES2 (PBKDF2-HMAC-SHA256, AES-256-CBC) under `pkcs12_password_file`, for Java and
    /// other keystore users.
    Pkcs12,
}

impl FileKind {
    pub(crate) const ALL: [FileKind; 6] = [
        FileKind::Cert,
        FileKind::Chain,
        FileKind::Fullchain,
        FileKind::Key,
        FileKind::Combined,
        FileKind::Pkcs12,
    ];

    /// Whether the file contains the private key (and so gets `key_mode`).
    pub fn holds_key(self) -> bool {
        matches!(self, FileKind::Key | FileKind::Combined | FileKind::Pkcs12)
    }

    /// The key in the `files` table.
    pub fn as_str(self) -> &'static str {
        match self {
            FileKind::Cert => "cert",
            FileKind::Chain => "chain",
            FileKind::Fullchain => "fullchain",
            FileKind::Key => "key",
            FileKind::Combined => "combined",
            FileKind::Pkcs12 => "pkcs12",
        }
    }

    pub(super) fn from_name(s: &str) -> Option<FileKind> {
        FileKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for FileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// After a reload, connect here and check that the new certificate is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyConfig {
    /// `host:port`.
    pub connect: String,
    /// The SNI name to send; an IP address means no SNI.
    pub server_name: String,
    /// How long the proof may retry until the new certificate is served (default 30s).
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsConfig {
    pub listen: SocketAddr,
}

/// At least one of the two is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertConfig {
    pub command: Option<Vec<String>>,
    pub webhook: Option<String>,
}

/// A certificate renewd cannot renew, tracked on purpose.
#[derive(Debug, Clone, PartialEq)]
pub struct ExceptionConfig {
    pub path: PathBuf,
    pub owner: String,
    pub reason: String,
    /// `YYYY-MM-DD`, a real calendar date.
    pub review_by: String,
    /// Lead time of the `expiring` alert (its own, else `[defaults]`'s); `None`: 30 days.
    pub alert_before: Option<RenewBefore>,
    /// The `[[exception]]` header.
    pub location: Location,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DiscoveryConfig {
    pub paths: Vec<PathBuf>,
    /// Lead time of the `expiring` alert for unmanaged certificates (its own, else
    /// `[defaults]`'s); `None`: 30 days.
    pub alert_before: Option<RenewBefore>,
    /// Whether the certificates served by this host's TLS listeners are discovered too.
    pub listeners: bool,
    /// Passwords of PKCS#12 bundles, first matching entry first (written order).
    pub pkcs12_password_files: Vec<super::discovery::Pkcs12PasswordFile>,
    /// `[[discovery.owner]]` rules, in written order (the first match wins).
    pub owners: Vec<super::discovery::OwnerRule>,
}

/// `[trust]`: the CA files services verify their peers with (mTLS), audited by
/// `renewd trust-audit` and by the daemon at each inventory pass.
#[derive(Debug, Clone, PartialEq)]
pub struct TrustConfig {
    /// Absolute paths of PEM/DER bundles or directories of them (nginx's
    /// `ssl_client_certificate`, PostgreSQL's `ssl_ca_file`, ...). Their anchors are also
    /// checked for `stale` (no certificate of the inventory chains to them).
    pub paths: Vec<PathBuf>,
    /// An anchor whose notAfter is closer than this is flagged `expiring`
    /// (default [`DEFAULT_TRUST_EXPIRING_WITHIN`]).
    pub expiring_within: Duration,
    /// Whether the system's stores (`/etc/ssl/certs`, `/etc/pki/...`) are audited too, by
    /// the daemon and by `trust-audit` without PATHs; default false (without a `[trust]`
    /// table, `trust-audit` reads the system stores).
    pub system: bool,
}

/// 90 days: replacing a trust anchor means handing a new CA file to every service and
/// every client certificate holder, which takes a change cycle or two; a quarter's notice
/// leaves room for that, where the 30 days of a leaf's alert would not.
pub const DEFAULT_TRUST_EXPIRING_WITHIN: Duration = Duration::from_secs(90 * 86_400);

/// An `[[exception]]` with `fingerprint`: a trust anchor a person keeps on purpose. It is
/// shown by the audit but not flagged until `review_by` has passed.
#[derive(Debug, Clone, PartialEq)]
pub struct AnchorException {
    /// SHA-256 of the anchor's DER encoding.
    pub fingerprint: [u8; 32],
    /// Only the anchor in this bundle or directory (as audited); `None`: wherever it is.
    pub path: Option<PathBuf>,
    pub owner: String,
    pub reason: String,
    /// `YYYY-MM-DD`, a real calendar date.
    pub review_by: String,
    /// The `[[exception]]` header.
    pub location: Location,
}

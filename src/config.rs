//! The configuration: the TOML schema of `renewd.toml` and its `conf.d/*.toml` drop-ins,
//! loading and merging them, and validating every value so that a mistake is reported as
//! `FILE:LINE:COL: message` pointing at what the user wrote, never as a failure later at
//! 3 a.m. when a renewal comes due.
//!
//! Parsing goes through `toml`'s span-preserving [`DeTable`] rather than serde derives:
//! the derive route stops at the first error and loses the positions of inherited
//! `[defaults]` values, while `renewd check` must list every problem with its place.
//! Everything other modules need is in the typed [`Config`]; nothing downstream sees TOML.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;
use std::fs;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// Where the configuration lives when neither `--config` nor `$RENEWD_CONFIG` says otherwise.
pub const DEFAULT_CONFIG: &str = "/etc/renewd/renewd.toml";

/// The environment variable that overrides [`DEFAULT_CONFIG`].
pub const CONFIG_ENV: &str = "RENEWD_CONFIG";

const DEFAULT_STATE_DIR: &str = "/var/lib/renewd";
const DEFAULT_CONTROL_SOCKET: &str = "/run/renewd/control.sock";
const DEFAULT_MAX_CONCURRENT: usize = 4;
const DEFAULT_KEY_MODE: u32 = 0o600;
/// The widest mode a private key may have: owner read/write, group read.
const MAX_KEY_MODE: u32 = 0o640;
const DEFAULT_RELOAD_TIMEOUT: Duration = Duration::from_secs(60);
const MIN_RELOAD_TIMEOUT: Duration = Duration::from_secs(1);
const MAX_RELOAD_TIMEOUT: Duration = Duration::from_secs(3600);
const MAX_PROPAGATION_WAIT: Duration = Duration::from_secs(3600);
/// How long the post-reload proof may retry before the renewal counts as failed.
const DEFAULT_VERIFY_TIMEOUT: Duration = Duration::from_secs(30);
const MIN_VERIFY_TIMEOUT: Duration = Duration::from_secs(1);
const MAX_VERIFY_TIMEOUT: Duration = Duration::from_secs(3600);
/// Deadline of one HTTP exchange with a CA (`[ca.NAME] timeout`).
pub const DEFAULT_CA_TIMEOUT: Duration = Duration::from_secs(30);
const MIN_CA_TIMEOUT: Duration = Duration::from_secs(1);
const MAX_CA_TIMEOUT: Duration = Duration::from_secs(300);
/// Longest duration accepted anywhere: far beyond any certificate lifetime, and small
/// enough that adding it to a timestamp can never overflow.
const MAX_DURATION_SECS: u64 = 36_500 * 86_400;
/// Used to find bare hook names when `$PATH` is unset (systemd's default).
const FALLBACK_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

const TOP_KEYS: &[&str] = &[
    "state_dir",
    "control_socket",
    "max_concurrent_renewals",
    "log_level",
    "metrics",
    "alert",
    "ca",
    "defaults",
    "certificate",
    "exception",
    "discovery",
];
const TOP_SCALAR_KEYS: &[&str] = &[
    "state_dir",
    "control_socket",
    "max_concurrent_renewals",
    "log_level",
];
/// What `log_level` may say; `RUST_LOG`, when set, takes precedence with its full syntax.
pub const LOG_LEVELS: &[&str] = &["error", "warn", "info", "debug", "trace"];
const CA_KEYS: &[&str] = &[
    "directory",
    "contact",
    "accept_terms",
    "trust_roots",
    "eab_kid",
    "eab_hmac_key_file",
    "profile",
    "timeout",
    "ari",
    "proxy",
];
const CERT_KEYS: &[&str] = &[
    "name",
    "domains",
    "owner",
    "service",
    "ca",
    "key_type",
    "renew_before",
    "challenge",
    "files",
    "user",
    "group",
    "key_mode",
    "reload",
    "reload_timeout",
    "verify",
    "profile",
    "alert_before",
];
const CHALLENGE_KEYS: &[&str] = &[
    "type",
    "webroot",
    "trust_owner",
    "listen",
    "hook",
    "rfc2136",
    "propagation_wait",
];
const CHALLENGE_TYPES: &[&str] = &["http-01", "dns-01", "tls-alpn-01"];
const RFC2136_KEYS: &[&str] = &["server", "tsig_key_file"];
const FILES_KEYS: &[&str] = &["cert", "chain", "fullchain", "key", "combined"];
const VERIFY_KEYS: &[&str] = &["connect", "server_name", "timeout"];
const VERIFY_REQUIRED_KEYS: &[&str] = &["connect", "server_name"];
const METRICS_KEYS: &[&str] = &["listen"];
const ALERT_KEYS: &[&str] = &["command", "webhook"];
/// The keys every `[[exception]]` needs; [`EXCEPTION_ALL_KEYS`] adds the optional ones.
const EXCEPTION_KEYS: &[&str] = &["path", "owner", "reason", "review_by"];
const EXCEPTION_ALL_KEYS: &[&str] = &["path", "owner", "reason", "review_by", "alert_before"];
const DISCOVERY_KEYS: &[&str] = &["paths", "alert_before"];
/// Keys a user might reach for to write a secret inline, and the key to use instead.
const SECRET_KEYS: &[(&str, &str)] = &[
    ("eab_hmac_key", "eab_hmac_key_file"),
    ("tsig_key", "tsig_key_file"),
];

// ---------------------------------------------------------------------------------------
// Public types
// ---------------------------------------------------------------------------------------

/// A position in a configuration file, 1-based; the column counts characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Location {
    /// Shared by every location in one file: a configuration with thousands of
    /// certificates keeps tens of thousands of these for its error messages.
    pub file: Arc<Path>,
    pub line: usize,
    pub col: usize,
}

impl Location {
    pub fn new(file: impl AsRef<Path>, line: usize, col: usize) -> Self {
        Location {
            file: Arc::from(file.as_ref()),
            line,
            col,
        }
    }

    /// The start of `file`: where problems about a file as a whole are reported.
    pub fn start_of(file: impl AsRef<Path>) -> Self {
        Location::new(file, 1, 1)
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.col)
    }
}

/// How bad a [`Problem`] is; the one rule `check`, `run` and SIGHUP share (see
/// [`Config::diagnose`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// The configuration cannot be used: `check` exits 78, `run` refuses to start (78),
    /// SIGHUP keeps the previous configuration.
    Error,
    /// One certificate (or one optional part, such as the alert command) cannot work as
    /// written; everything else can. Printed as `FILE:LINE:COL: warning: message`; `check`
    /// exits 0 (78 with `--strict`); the daemon logs it and renews every other certificate.
    Warning,
}

/// One thing wrong with the configuration (or with the machine it describes).
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub location: Location,
    pub message: String,
    pub severity: Severity,
}

impl Problem {
    /// An error: the configuration cannot be used as a whole.
    pub fn new(location: Location, message: impl Into<String>) -> Self {
        Problem {
            location,
            message: message.into(),
            severity: Severity::Error,
        }
    }

    /// A warning (see [`Severity::Warning`]).
    pub fn warning(location: Location, message: impl Into<String>) -> Self {
        Problem {
            severity: Severity::Warning,
            ..Problem::new(location, message)
        }
    }

    /// Whether this is a [`Severity::Warning`].
    pub fn is_warning(&self) -> bool {
        self.severity == Severity::Warning
    }
}

impl fmt::Display for Problem {
    /// `FILE:LINE:COL: message`, or `FILE:LINE:COL: warning: message`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.severity {
            Severity::Error => write!(f, "{}: {}", self.location, self.message),
            Severity::Warning => write!(f, "{}: warning: {}", self.location, self.message),
        }
    }
}

/// What [`Config::diagnose`] found: every problem with its final severity, and the
/// certificates that cannot be renewed as written, each with its reason.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Diagnosis {
    /// In file order (then line, then column), without repeats.
    pub problems: Vec<Problem>,
    /// Certificate name → why it cannot be renewed (`FILE:LINE:COL: message` of its first
    /// problem). The daemon starts no renewal of these; `status` and `inventory` show why.
    pub not_renewable: BTreeMap<String, String>,
}

impl Diagnosis {
    /// Whether any problem is an error (the configuration cannot be used).
    pub fn has_errors(&self) -> bool {
        self.problems.iter().any(|p| !p.is_warning())
    }

    /// The errors only, as a [`ConfigError`] (`None` when there are none).
    pub fn errors(&self) -> Option<ConfigError> {
        let problems: Vec<Problem> = self
            .problems
            .iter()
            .filter(|p| !p.is_warning())
            .cloned()
            .collect();
        (!problems.is_empty()).then_some(ConfigError { problems })
    }

    /// The warnings only.
    pub fn warnings(&self) -> impl Iterator<Item = &Problem> {
        self.problems.iter().filter(|p| p.is_warning())
    }
}

/// Every problem found while loading, in file order; never empty.
#[derive(Debug)]
pub struct ConfigError {
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

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
    pub certificates: Vec<CertConfig>,
    pub metrics: Option<MetricsConfig>,
    pub alert: Option<AlertConfig>,
    pub exceptions: Vec<ExceptionConfig>,
    pub discovery: Option<DiscoveryConfig>,
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
    /// The `[ca.NAME]` header.
    pub location: Location,
    /// Where each key's value was written.
    pub key_locations: BTreeMap<String, Location>,
}

impl CaConfig {
    /// Where the EAB HMAC key is read from: the file of the same name in systemd's
    /// `$CREDENTIALS_DIRECTORY` (`LoadCredential=`) when that exists, else
    /// `eab_hmac_key_file` itself.
    pub fn eab_key_path(&self) -> Option<PathBuf> {
        let configured = self.eab_hmac_key_file.as_ref()?;
        let credential = std::env::var_os("CREDENTIALS_DIRECTORY")
            .zip(configured.file_name())
            .map(|(dir, name)| Path::new(&dir).join(name))
            .filter(|p| p.is_file());
        Some(credential.unwrap_or_else(|| configured.clone()))
    }

    /// Where `key` was written, else the `[ca.NAME]` header.
    pub fn key_location(&self, key: &str) -> &Location {
        self.key_locations.get(key).unwrap_or(&self.location)
    }
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
    pub const ALL: [KeyType; 5] = [
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
    pub fn from_name(s: &str) -> Option<KeyType> {
        KeyType::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl RenewBefore {
    /// The margin this means for a certificate that lives `lifetime`.
    pub fn margin(&self, lifetime: Duration) -> Duration {
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
}

impl ChallengeConfig {
    /// The ACME challenge type: `http-01`, `dns-01` or `tls-alpn-01`.
    pub fn kind(&self) -> &'static str {
        match self {
            ChallengeConfig::Http01Webroot { .. } | ChallengeConfig::Http01Listen { .. } => {
                "http-01"
            }
            ChallengeConfig::Dns01Hook { .. } | ChallengeConfig::Dns01Rfc2136 { .. } => "dns-01",
            ChallengeConfig::TlsAlpn01 { .. } => "tls-alpn-01",
        }
    }

    pub fn is_dns01(&self) -> bool {
        self.kind() == "dns-01"
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
    pub fn for_name(&self, name: &str) -> Option<&ChallengeRule> {
        self.rules
            .iter()
            .filter_map(|r| pattern_rank(r.pattern.as_deref(), name).map(|rank| (rank, r)))
            .max_by_key(|(rank, _)| *rank)
            .map(|(_, r)| r)
    }
}

/// How specifically `pattern` covers `name`, or `None` when it does not: an exact name
/// beats a `*.` pattern, which beats `*`, which beats the single rule for everything.
fn pattern_rank(pattern: Option<&str>, name: &str) -> Option<u8> {
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
        }
    }

    fn slot(&mut self, kind: FileKind) -> &mut Option<PathBuf> {
        match kind {
            FileKind::Cert => &mut self.cert,
            FileKind::Chain => &mut self.chain,
            FileKind::Fullchain => &mut self.fullchain,
            FileKind::Key => &mut self.key,
            FileKind::Combined => &mut self.combined,
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
}

impl FileKind {
    pub const ALL: [FileKind; 5] = [
        FileKind::Cert,
        FileKind::Chain,
        FileKind::Fullchain,
        FileKind::Key,
        FileKind::Combined,
    ];

    /// Whether the file contains the private key (and so gets `key_mode`).
    pub fn holds_key(self) -> bool {
        matches!(self, FileKind::Key | FileKind::Combined)
    }

    /// The key in the `files` table.
    pub fn as_str(self) -> &'static str {
        match self {
            FileKind::Cert => "cert",
            FileKind::Chain => "chain",
            FileKind::Fullchain => "fullchain",
            FileKind::Key => "key",
            FileKind::Combined => "combined",
        }
    }

    fn from_name(s: &str) -> Option<FileKind> {
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
}

// ---------------------------------------------------------------------------------------
// Entry points
// ---------------------------------------------------------------------------------------

/// The `--config` value if given, else `$RENEWD_CONFIG` if set and not empty, else
/// [`DEFAULT_CONFIG`].
pub fn resolve_path(cli: Option<&Path>) -> PathBuf {
    resolve_path_with(cli, std::env::var_os(CONFIG_ENV))
}

fn resolve_path_with(cli: Option<&Path>, env: Option<std::ffi::OsString>) -> PathBuf {
    match (cli, env) {
        (Some(path), _) => path.to_path_buf(),
        (None, Some(value)) if !value.is_empty() => PathBuf::from(value),
        _ => PathBuf::from(DEFAULT_CONFIG),
    }
}

/// Reads `main`, then every `<dir of main>/conf.d/*.toml` in name order (a missing
/// `conf.d` is fine; hidden files are skipped), merges, validates and applies `[defaults]`.
pub fn load(main: &Path) -> Result<Config, ConfigError> {
    let text = match read_config_file(main) {
        Ok(text) => text,
        Err(e) => {
            return Err(ConfigError {
                problems: vec![Problem::new(
                    Location::start_of(main),
                    format!("cannot read configuration: {e}"),
                )],
            })
        }
    };
    let mut files = vec![(main.to_path_buf(), text)];
    let mut problems = Vec::new();
    let conf_d = conf_d_dir(main);
    for path in conf_d_files(&conf_d, &mut problems) {
        match read_config_file(&path) {
            Ok(text) => files.push((path, text)),
            Err(e) => problems.push(Problem::new(
                Location::start_of(&path),
                format!("cannot read configuration: {e}"),
            )),
        }
    }
    match load_from_sources(&files) {
        Ok(config) if problems.is_empty() => Ok(config),
        Ok(_) => Err(ConfigError { problems }),
        Err(mut e) => {
            e.problems.extend(problems);
            Err(e)
        }
    }
}

/// A configuration file's text: a regular file (a symlink to one is followed) of at most
/// `fsutil::caps::CONFIG` bytes, UTF-8; a FIFO or a device is refused without blocking.
/// The error is the reason alone (the caller's `FILE:LINE:COL` names the file).
fn read_config_file(path: &Path) -> Result<String, String> {
    crate::fsutil::read_regular_string(
        path,
        crate::fsutil::caps::CONFIG,
        crate::fsutil::Follow::Yes,
    )
    .map_err(|e| e.reason())
}

/// The drop-in directory that belongs to the main file `main`.
pub fn conf_d_dir(main: &Path) -> PathBuf {
    match main.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.join("conf.d"),
        _ => PathBuf::from("conf.d"),
    }
}

fn conf_d_files(dir: &Path, problems: &mut Vec<Problem>) -> Vec<PathBuf> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            problems.push(Problem::new(
                Location::start_of(dir),
                format!("cannot read configuration directory: {e}"),
            ));
            return Vec::new();
        }
    };
    let mut names = Vec::new();
    for entry in entries {
        match entry {
            Ok(entry) => {
                let name = entry.file_name();
                let text = name.to_string_lossy();
                if text.ends_with(".toml") && !text.starts_with('.') {
                    names.push(name);
                }
            }
            Err(e) => problems.push(Problem::new(
                Location::start_of(dir),
                format!("cannot read configuration directory: {e}"),
            )),
        }
    }
    names.sort();
    names.into_iter().map(|name| dir.join(name)).collect()
}

/// Parses configuration from memory: `files` is `[(path for messages, contents)]`, the
/// main file first, then the drop-ins in the order they apply.
pub fn load_from_sources(files: &[(PathBuf, String)]) -> Result<Config, ConfigError> {
    let sources: Vec<PathBuf> = files.iter().map(|(path, _)| path.clone()).collect();
    let mut problems = Vec::new();
    let mut raw = Raw::default();
    let mut syntax_ok = true;
    for (path, text) in files {
        let map = SourceMap::new(path, text);
        let (root, errors) = DeTable::parse_recoverable(text);
        if !errors.is_empty() {
            syntax_ok = false;
            let mut located: Vec<(Location, String)> = errors
                .iter()
                .map(|error| {
                    let location = error
                        .span()
                        .map(|span| map.location(span.start))
                        .unwrap_or_else(|| Location::start_of(path));
                    (location, error.message().trim().replace('\n', "; "))
                })
                .collect();
            located.sort_by_key(|(l, _)| (l.line, l.col));
            // The parser's recovery often reports a second error further along the same
            // line; only the first says what the user got wrong.
            located.dedup_by_key(|(l, _)| l.line);
            for (location, message) in located {
                problems.push(Problem::new(location, format!("invalid TOML: {message}")));
            }
            continue;
        }
        raw.merge(convert_table(root.get_ref(), &map), &mut problems);
    }
    // A file that does not parse would only produce misleading follow-on errors.
    if !syntax_ok {
        return Err(ConfigError {
            problems: finish(problems, &sources),
        });
    }
    let mut config = raw.build(&mut problems);
    config.sources = sources;
    problems.extend(config.unsupported());
    let problems = finish(problems, &config.sources);
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(ConfigError { problems })
    }
}

impl Config {
    /// The certificate called `name`.
    pub fn certificate(&self, name: &str) -> Option<&CertConfig> {
        self.certificates.iter().find(|c| c.name == name)
    }

    /// `Err` naming every one of `names` that is no configured certificate, each with the
    /// closest configured name when one is close (`no certificate named `wwww` (did you
    /// mean `www`?)`). The command line turns it into exit 2.
    pub fn check_names(&self, names: &[String]) -> Result<(), String> {
        let known: Vec<&str> = self.certificates.iter().map(|c| c.name.as_str()).collect();
        let unknown: Vec<String> = names
            .iter()
            .filter(|n| self.certificate(n).is_none())
            .map(|n| match suggest(n, &known) {
                Some(close) => format!("`{n}` (did you mean `{close}`?)"),
                None => format!("`{n}`"),
            })
            .collect();
        if unknown.is_empty() {
            return Ok(());
        }
        let listed = if known.is_empty() {
            "no certificate is configured".to_string()
        } else if known.len() <= 10 {
            format!("configured: {}", known.join(", "))
        } else {
            format!(
                "{} certificates are configured (renewd status --names)",
                known.len()
            )
        };
        Err(format!(
            "no certificate named {} in the configuration; {listed}",
            unknown.join(", ")
        ))
    }

    /// Where a top-level `key` was written, else the start of the main file.
    pub fn key_location(&self, key: &str) -> Location {
        match self.key_locations.get(key) {
            Some(location) => location.clone(),
            None => match self.sources.first() {
                Some(main) => Location::start_of(main),
                None => Location::start_of(DEFAULT_CONFIG),
            },
        }
    }

    /// `renewd check`'s look at the machine, changing nothing: every target file's
    /// directory exists, users and groups exist, hooks are executable, the webroot is a
    /// directory, CA trust roots and secret files are readable, and `state_dir` can be
    /// created. Each problem points at the value that names the missing thing.
    ///
    /// It also holds every certificate to account: one without an `owner` (its own or from
    /// `[defaults]`) is reported at its `[[certificate]]` header, as a warning that does not
    /// stop its renewal (the daemon keeps renewing while the owners are being filled in).
    ///
    /// Severities as written here are refined by [`Config::diagnose`], which `check`, `run`
    /// and SIGHUP all go through: problems of the CAs and the alert command are warnings,
    /// a `state_dir` that cannot be created is an error.
    pub fn check_environment(&self) -> Vec<Problem> {
        let mut p = Vec::new();
        for cert in &self.certificates {
            if cert.owner.is_none() {
                p.push(Problem::warning(
                    cert.location.clone(),
                    format!(
                        "certificate `{}` has no `owner`: say who answers for it, here or in \
                         [defaults] (e.g. owner = \"platform@example.org\")",
                        cert.name
                    ),
                ));
            }
        }
        if let Some(parent) = self.state_dir.parent() {
            if let Some(why) = not_a_directory(parent) {
                p.push(Problem::new(
                    self.key_location("state_dir"),
                    format!("the parent `{}` of `state_dir` {why}", parent.display()),
                ));
            }
        }
        for ca in self.cas.values() {
            if let Some(path) = &ca.trust_roots {
                let read = crate::fsutil::read_regular(
                    path,
                    crate::fsutil::caps::TRUST_ROOTS,
                    crate::fsutil::Follow::Yes,
                );
                match read {
                    Err(e) => p.push(Problem::warning(
                        ca.key_location("trust_roots").clone(),
                        format!(
                            "cannot read `trust_roots` `{}`: {}",
                            path.display(),
                            e.reason()
                        ),
                    )),
                    Ok(bytes) => {
                        if !contains(&bytes, b"-----BEGIN CERTIFICATE-----") {
                            p.push(Problem::warning(
                                ca.key_location("trust_roots").clone(),
                                format!(
                                    "`trust_roots` `{}` holds no PEM certificate \
                                     (no \"-----BEGIN CERTIFICATE-----\" line)",
                                    path.display()
                                ),
                            ));
                        }
                    }
                }
            }
            if let Some(path) = &ca.eab_key_path() {
                let mut found = Vec::new();
                check_secret_file(
                    "eab_hmac_key_file",
                    path,
                    ca.key_location("eab_hmac_key_file"),
                    &mut found,
                );
                // The CA cannot be used; its certificates' renewals fail saying so.
                p.extend(
                    found
                        .into_iter()
                        .map(|f| Problem::warning(f.location, f.message)),
                );
            }
        }
        for cert in &self.certificates {
            for (kind, path) in cert.files.iter() {
                let key = format!("files.{kind}");
                let parent = path.parent().unwrap_or(Path::new("/"));
                if let Some(why) = not_a_directory(parent) {
                    p.push(Problem::new(
                        cert.key_location(&key).clone(),
                        format!("the directory `{}` for `{key}` {why}", parent.display()),
                    ));
                }
            }
            if let Some(user) = &cert.user {
                match nix::unistd::User::from_name(user) {
                    // A number names a uid as it is (deploy::Ownership::resolve does the same).
                    Ok(Some(_)) => {}
                    Ok(None) if user.parse::<u32>().is_ok() => {}
                    Ok(None) => p.push(Problem::new(
                        cert.key_location("user").clone(),
                        format!("user `{user}` does not exist on this machine"),
                    )),
                    Err(e) => p.push(Problem::new(
                        cert.key_location("user").clone(),
                        format!("cannot look up user `{user}`: {e}"),
                    )),
                }
            }
            if let Some(group) = &cert.group {
                match nix::unistd::Group::from_name(group) {
                    Ok(Some(_)) => {}
                    Ok(None) if group.parse::<u32>().is_ok() => {}
                    Ok(None) => p.push(Problem::new(
                        cert.key_location("group").clone(),
                        format!("group `{group}` does not exist on this machine"),
                    )),
                    Err(e) => p.push(Problem::new(
                        cert.key_location("group").clone(),
                        format!("cannot look up group `{group}`: {e}"),
                    )),
                }
            }
            for (i, argv) in cert.reload.iter().enumerate() {
                if let Some(Err(why)) = argv.first().map(|cmd| check_executable(cmd)) {
                    p.push(Problem::new(
                        cert.key_location(&format!("reload.{i}")).clone(),
                        format!("reload command: {why}"),
                    ));
                }
            }
            for rule in &cert.challenge.rules {
                let at = |key: &str| cert.key_location(&format!("{}.{key}", rule.key)).clone();
                match &rule.config {
                    ChallengeConfig::Http01Webroot { webroot, .. } => {
                        if let Some(why) = not_a_directory(webroot) {
                            p.push(Problem::new(
                                at("webroot"),
                                format!("webroot `{}` {why}", webroot.display()),
                            ));
                        }
                    }
                    ChallengeConfig::Dns01Hook { hook, .. } => {
                        if let Some(Err(why)) = hook.first().map(|cmd| check_executable(cmd)) {
                            p.push(Problem::new(at("hook"), format!("dns-01 hook: {why}")));
                        }
                    }
                    ChallengeConfig::Dns01Rfc2136 {
                        tsig_key_file: Some(path),
                        ..
                    } => check_secret_file(
                        "tsig_key_file",
                        path,
                        &at("rfc2136.tsig_key_file"),
                        &mut p,
                    ),
                    _ => {}
                }
            }
        }
        if let Some(AlertConfig {
            command: Some(argv),
            ..
        }) = &self.alert
        {
            if let Some(Err(why)) = argv.first().map(|cmd| check_executable(cmd)) {
                p.push(Problem::warning(
                    self.key_location("alert.command"),
                    format!("alert command: {why}"),
                ));
            }
        }
        finish(p, &self.sources)
    }

    /// The one rule `check`, `run` and SIGHUP share, applied to `found` (what
    /// [`Config::check_environment`] and the other machine checks reported).
    ///
    /// A problem whose location is one of a certificate's values (its own, or a
    /// `[defaults]` value it inherits) stops that certificate only: it becomes a warning,
    /// and the certificate is *not renewable* with that problem as the reason — unless the
    /// problem was a warning already (advisory, like a missing `owner`), which changes
    /// nothing about renewing. Every other problem keeps its severity: an error means the
    /// configuration as a whole cannot be used (a `state_dir` that cannot be created).
    pub fn diagnose(&self, found: Vec<Problem>) -> Diagnosis {
        let mut owners: std::collections::HashMap<&Location, Vec<&str>> = Default::default();
        for cert in &self.certificates {
            let places: HashSet<&Location> = cert
                .key_locations
                .values()
                .chain([&cert.location])
                .collect();
            for place in places {
                owners.entry(place).or_default().push(&cert.name);
            }
        }
        let mut not_renewable = BTreeMap::new();
        let mut problems = Vec::with_capacity(found.len());
        for mut problem in found {
            if let (Severity::Error, Some(certs)) =
                (problem.severity, owners.get(&problem.location))
            {
                problem.severity = Severity::Warning;
                for name in certs {
                    not_renewable
                        .entry(name.to_string())
                        .or_insert_with(|| format!("{}: {}", problem.location, problem.message));
                }
            }
            problems.push(problem);
        }
        Diagnosis {
            problems: finish(problems, &self.sources),
            not_renewable,
        }
    }

    /// Configuration that parses but that this version of renewd cannot act on yet; [`load`]
    /// fails with these too. Every key of the specification is acted on now, so the list is
    /// empty: it is where a key parsed ahead of its feature belongs.
    pub fn unsupported(&self) -> Vec<Problem> {
        Vec::new()
    }
}

/// Sorts problems into file order (then line, then column) and drops repeats, which
/// arise when a bad `[defaults]` value is inherited by several certificates.
fn finish(mut problems: Vec<Problem>, sources: &[PathBuf]) -> Vec<Problem> {
    let rank = |file: &Path| {
        sources
            .iter()
            .position(|s| s == file)
            .unwrap_or(sources.len())
    };
    problems.sort_by_cached_key(|p| (rank(&p.location.file), p.location.line, p.location.col));
    let mut seen = HashSet::new();
    problems.retain(|p| seen.insert((p.location.clone(), p.message.clone())));
    problems
}

// ---------------------------------------------------------------------------------------
// Durations and other value syntaxes
// ---------------------------------------------------------------------------------------

/// Parses `90s`, `15m`, `36h`, `30d` and combinations such as `1h30m` (largest unit
/// first, each unit once). `0s` parses; each key decides whether zero is allowed.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    const HINT: &str = "write e.g. `90s`, `15m`, `36h`, `30d` or `1h30m`";
    if s.is_empty() {
        return Err(format!("empty duration; {HINT}"));
    }
    if s.starts_with('-') {
        return Err(format!("`{s}`: a duration cannot be negative"));
    }
    let mut total: u64 = 0;
    let mut rest = s;
    let mut last_rank = usize::MAX;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return match rest.chars().next() {
                Some(c) if !c.is_alphabetic() => {
                    Err(format!("unexpected `{c}` in duration `{s}`; {HINT}"))
                }
                _ => Err(format!("invalid duration `{s}`; {HINT}")),
            };
        }
        let (number, after) = rest.split_at(digits);
        if after.starts_with('.') {
            return Err(format!(
                "invalid duration `{s}`: use whole numbers, e.g. `1h30m` rather than `1.5h`"
            ));
        }
        let unit_len: usize = after
            .chars()
            .take_while(|c| c.is_alphabetic())
            .map(char::len_utf8)
            .sum();
        if unit_len == 0 {
            return match after.chars().next() {
                None => Err(format!("duration `{s}` has no unit; {HINT}")),
                Some(c) => Err(format!("unexpected `{c}` in duration `{s}`; {HINT}")),
            };
        }
        let (unit, after_unit) = after.split_at(unit_len);
        let (multiplier, rank) = match unit {
            "s" => (1, 0),
            "m" => (60, 1),
            "h" => (3_600, 2),
            "d" => (86_400, 3),
            _ => {
                return Err(format!(
                    "unknown unit `{unit}` in duration `{s}`; use s, m, h or d"
                ))
            }
        };
        if rank >= last_rank {
            return Err(format!(
                "invalid duration `{s}`: give each unit once, largest first, as in `1h30m`"
            ));
        }
        last_rank = rank;
        let too_large = || format!("duration `{s}` is too large (at most 36500d)");
        let n: u64 = number.parse().map_err(|_| too_large())?;
        total = n
            .checked_mul(multiplier)
            .and_then(|v| total.checked_add(v))
            .filter(|v| *v <= MAX_DURATION_SECS)
            .ok_or_else(too_large)?;
        rest = after_unit;
    }
    Ok(Duration::from_secs(total))
}

/// Formats a whole-second duration the way the configuration writes it, e.g. `1h30m`.
pub fn format_duration(d: Duration) -> String {
    let mut secs = d.as_secs();
    if secs == 0 {
        return "0s".to_string();
    }
    let mut out = String::new();
    for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
        if secs >= size {
            out.push_str(&format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    out
}

/// `renew_before` or `alert_before` (`key`) as a TOML value: a string, or a bare float.
fn margin_value(key: &str, node: &Node) -> Result<RenewBefore, String> {
    match &node.val {
        Val::Str(s) => parse_margin(key, s),
        Val::Float(v) => fraction(key, *v, &v.map(|v| v.to_string()).unwrap_or_default()),
        other => Err(format!(
            "`{key}` must be a fraction like \"1/3\" or a duration like \"30d\", found {}",
            other.kind()
        )),
    }
}

fn parse_margin(key: &str, value: &str) -> Result<RenewBefore, String> {
    let fraction_hint = "a fraction of the lifetime between 0 and 1 (\"1/3\", \"0.25\") \
                         or a duration (\"30d\")";
    if let Some((num, den)) = value.split_once('/') {
        let num: u32 = num
            .trim()
            .parse()
            .map_err(|_| format!("`{key}` must be {fraction_hint}, found `{value}`"))?;
        let den: u32 = den
            .trim()
            .parse()
            .map_err(|_| format!("`{key}` must be {fraction_hint}, found `{value}`"))?;
        if num == 0 || den == 0 || num >= den {
            return Err(format!(
                "`{key}` `{value}` must be a fraction between 0 and 1, such as \"1/3\""
            ));
        }
        return Ok(RenewBefore::Fraction(f64::from(num) / f64::from(den)));
    }
    if value.contains('.') && value.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return fraction(key, value.parse::<f64>().ok(), value);
    }
    match parse_duration(value) {
        Ok(d) if d.is_zero() => Err(format!("`{key}` must be longer than 0s")),
        Ok(d) => Ok(RenewBefore::Duration(d)),
        Err(e) => Err(format!("`{key}` must be {fraction_hint}: {e}")),
    }
}

fn fraction(key: &str, value: Option<f64>, written: &str) -> Result<RenewBefore, String> {
    match value {
        Some(f) if f.is_finite() && f > 0.0 && f < 1.0 => Ok(RenewBefore::Fraction(f)),
        _ => Err(format!(
            "`{key}` `{written}` must be a fraction between 0 and 1, such as \"1/3\""
        )),
    }
}

/// Parses a `key_mode`: an octal string like `"0640"` or a TOML octal integer `0o640`.
fn parse_key_mode(node: &Node) -> Result<u32, String> {
    let mode = match &node.val {
        Val::Str(s) => {
            let digits = s.strip_prefix("0o").unwrap_or(s);
            if !(3..=4).contains(&digits.len())
                || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b))
            {
                return Err(format!(
                    "`key_mode` must be an octal mode like \"0640\", found `{s}`"
                ));
            }
            u32::from_str_radix(digits, 8).map_err(|_| {
                format!("`key_mode` must be an octal mode like \"0640\", found `{s}`")
            })?
        }
        Val::Int(Some(v), 8) => u32::try_from(*v)
            .map_err(|_| "`key_mode` must be an octal mode like \"0640\"".to_string())?,
        Val::Int(..) => {
            return Err(
                "`key_mode` must be an octal mode written as a string, like \"0640\", \
                 found a decimal integer"
                    .to_string(),
            )
        }
        other => {
            return Err(format!(
                "`key_mode` must be a string like \"0640\", found {}",
                other.kind()
            ))
        }
    };
    if mode & !MAX_KEY_MODE != 0 {
        return Err(format!(
            "`key_mode` {mode:04o} is wider than 0640: a private key must never be \
             executable, writable by its group, or open to others"
        ));
    }
    Ok(mode)
}

/// Validates a certificate or CA name: it becomes a file name under `state_dir`.
fn check_ident(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 {
        return Err("must be 1 to 64 characters long".to_string());
    }
    if name == "." || name == ".." {
        return Err("must not be `.` or `..`".to_string());
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "may only contain a-z, 0-9, `.`, `_` and `-`, found `{c}`"
        ));
    }
    Ok(())
}

/// Normalizes one entry of `domains`: an IP address in canonical form, or a DNS name or
/// `*.` wildcard, lowercased, without a trailing dot.
fn normalize_identifier(written: &str) -> Result<String, String> {
    if let Ok(ip) = written.parse::<IpAddr>() {
        return Ok(ip.to_string());
    }
    if let Some(inner) = written.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
        if inner.parse::<IpAddr>().is_ok() {
            return Err(format!("write the IP address `{inner}` without brackets"));
        }
    }
    let lower = written.to_ascii_lowercase();
    let name = lower.strip_suffix('.').unwrap_or(&lower);
    if name.is_empty() {
        return Err("a domain must not be empty".to_string());
    }
    if !name.is_ascii() {
        return Err(format!(
            "`{written}` is not ASCII: write internationalised names in their punycode \
             (xn--) form"
        ));
    }
    let base = name.strip_prefix("*.").unwrap_or(name);
    if base.contains('*') {
        return Err(format!(
            "`{written}`: a wildcard must be the whole leftmost label, as in `*.example.org`"
        ));
    }
    if name.len() > 253 {
        return Err(format!("`{written}` is longer than 253 characters"));
    }
    let mut last = "";
    for label in base.split('.') {
        if label.is_empty() {
            return Err(format!("`{written}` has an empty label"));
        }
        if label.len() > 63 {
            return Err(format!("`{written}` has a label longer than 63 characters"));
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
        {
            return Err(format!(
                "`{written}` contains `{c}`: DNS names hold only letters, digits and `-`"
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!(
                "`{written}` has a label that starts or ends with `-`"
            ));
        }
        check_a_label(written, label)?;
        last = label;
    }
    if last.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "`{written}` is neither a valid IP address nor a DNS name"
        ));
    }
    Ok(name.to_string())
}

/// An `xn--` label (an IDNA A-label, RFC 5890 §2.3.2.1) must decode to a valid U-label: the
/// Punycode must decode and the result pass UTS #46 validation (what a CA checks before it
/// issues; a wrong one is refused at order time, after an account and a key were made).
fn check_a_label(written: &str, label: &str) -> Result<(), String> {
    if !label.starts_with("xn--") {
        return Ok(());
    }
    let (unicode, checked) = idna::domain_to_unicode(label);
    match checked {
        Ok(()) if !unicode.starts_with("xn--") => Ok(()),
        _ => Err(format!(
            "`{written}` has the label `{label}`, which is not valid punycode (an xn-- label \
             must encode a valid internationalised name, RFC 5891); write the name as the CA \
             and DNS know it, e.g. from `idn2 --lookup NAME`"
        )),
    }
}

/// `url` as a proxy renewd can use: `http://[user[:password]@]host[:port][/]` (an HTTP
/// proxy reached in clear, which tunnels TLS with CONNECT). Returns it as it may be shown —
/// `http://host:port`, credentials dropped — or why not (the URL in the reason is shown the
/// same way: a password never reaches a log).
pub fn check_proxy_url(url: &str) -> Result<String, String> {
    let shown = redact_url(url);
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(format!(
            "`{shown}` is not a URL; write e.g. `http://proxy.example.org:3128`"
        ));
    };
    if !scheme.eq_ignore_ascii_case("http") {
        return Err(format!(
            "`{shown}` must be an http:// URL: renewd reaches the proxy in clear and tunnels \
             TLS through it with CONNECT (https:// and socks proxies are not supported)"
        ));
    }
    let (authority, path) = match rest.find(['/', '?', '#']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    if !(path.is_empty() || path == "/") {
        return Err(format!("`{shown}` must have no path, query or fragment"));
    }
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host_port.is_empty()
        || host_port
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(format!("`{shown}` has no valid host"));
    }
    if url.parse::<http::Uri>().is_err() {
        return Err(format!("`{shown}` is not a valid URL"));
    }
    Ok(format!("http://{host_port}"))
}

/// `url` with any `user:password@` replaced by `***@`.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) => (format!("{s}://"), r),
        None => (String::new(), url),
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..end].rfind('@') {
        Some(at) => format!("{scheme}***@{}", &rest[at + 1..]),
        None => url.to_string(),
    }
}

/// Checks an `http(s)://` URL; plain `http://` only when `allow_http` or for loopback.
fn check_url(url: &str, allow_http: bool) -> Result<(), String> {
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("`{url}` contains whitespace"));
    }
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(format!(
            "`{url}` is not a URL; write e.g. `https://ca.example.org/directory`"
        ));
    };
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "https" && scheme != "http" {
        return Err(format!("`{url}` must be an https:// URL"));
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.contains('@') {
        return Err(format!("`{url}` must not contain a user name or password"));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        match v6.split_once(']') {
            Some((host, after)) => match after {
                "" => (host, None),
                _ => match after.strip_prefix(':') {
                    Some(port) => (host, Some(port)),
                    None => return Err(format!("`{url}` has an invalid host")),
                },
            },
            None => return Err(format!("`{url}` has an invalid host")),
        }
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(format!("`{url}` has no host"));
    }
    if let Some(port) = port {
        if port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(format!("`{url}` has an invalid port"));
        }
    }
    if scheme == "http" && !allow_http {
        let host = host.to_ascii_lowercase();
        if !matches!(host.as_str(), "localhost" | "127.0.0.1" | "::1") {
            return Err(format!(
                "`{url}` must use https:// (plain http:// is allowed only for 127.0.0.1, \
                 localhost and [::1])"
            ));
        }
    }
    Ok(())
}

/// Parses an address to listen on or send to; a bare IP gets `default_port` if given.
fn parse_socket_addr(s: &str, default_port: Option<u16>) -> Option<SocketAddr> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Some(addr);
    }
    let port = default_port?;
    let ip = s
        .strip_prefix('[')
        .and_then(|v| v.strip_suffix(']'))
        .unwrap_or(s);
    ip.parse::<IpAddr>()
        .ok()
        .map(|ip| SocketAddr::new(ip, port))
}

/// Checks `host:port` for `verify.connect`.
fn check_host_port(s: &str) -> Result<(), String> {
    if s.parse::<SocketAddr>().is_ok() {
        return Ok(());
    }
    let bad = || format!("`connect` must be `host:port`, like `127.0.0.1:443`, found `{s}`");
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    if port.parse::<u16>().map_or(true, |p| p == 0) || host.is_empty() || host.contains(':') {
        return Err(bad());
    }
    normalize_identifier(host)
        .ok()
        .filter(|h| !h.starts_with("*."))
        .map(|_| ())
        .ok_or_else(bad)
}

fn check_date(s: &str) -> Result<(), String> {
    let bad = || format!("`review_by` must be a date written YYYY-MM-DD, found `{s}`");
    let parts: Vec<&str> = s.split('-').collect();
    let [y, m, d] = parts.as_slice() else {
        return Err(bad());
    };
    if y.len() != 4 || m.len() != 2 || d.len() != 2 {
        return Err(bad());
    }
    let year: u32 = y.parse().map_err(|_| bad())?;
    let month: u32 = m.parse().map_err(|_| bad())?;
    let day: u32 = d.parse().map_err(|_| bad())?;
    let leap = year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400));
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return Err(format!("`review_by` `{s}` has no month {month}")),
    };
    if day == 0 || day > days {
        return Err(format!(
            "`review_by` `{s}` is not a date: that month has {days} days"
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Machine checks
// ---------------------------------------------------------------------------------------

fn not_a_directory(path: &Path) -> Option<String> {
    match fs::metadata(path) {
        Ok(m) if m.is_dir() => None,
        Ok(_) => Some("is not a directory".to_string()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Some("does not exist".to_string()),
        Err(e) => Some(format!("cannot be inspected: {e}")),
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn check_secret_file(key: &str, path: &Path, location: &Location, p: &mut Vec<Problem>) {
    match crate::fsutil::read_regular(
        path,
        crate::fsutil::caps::SECRET,
        crate::fsutil::Follow::Yes,
    ) {
        Err(e) => p.push(Problem::new(
            location.clone(),
            format!("cannot read `{key}` `{}`: {}", path.display(), e.reason()),
        )),
        Ok(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => p.push(Problem::new(
            location.clone(),
            format!("`{key}` `{}` is empty", path.display()),
        )),
        Ok(_) => {}
    }
}

/// `cmd` is an absolute path to an executable regular file, or a bare name that `$PATH`
/// resolves to one.
fn check_executable(cmd: &str) -> Result<(), String> {
    if cmd.contains('/') {
        let path = Path::new(cmd);
        if !path.is_absolute() {
            return Err(format!(
                "`{cmd}` must be an absolute path or a bare command name found in $PATH"
            ));
        }
        return executable_file(path);
    }
    let search = std::env::var_os("PATH").unwrap_or_else(|| FALLBACK_PATH.into());
    let found = std::env::split_paths(&search)
        .filter(|dir| dir.is_absolute())
        .any(|dir| executable_file(&dir.join(cmd)).is_ok());
    if found {
        Ok(())
    } else {
        Err(format!("`{cmd}` is not an executable found in $PATH"))
    }
}

fn executable_file(path: &Path) -> Result<(), String> {
    let meta = fs::metadata(path).map_err(|e| format!("`{}`: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("`{}` is not a regular file", path.display()));
    }
    if meta.permissions().mode() & 0o111 == 0 {
        return Err(format!("`{}` is not executable", path.display()));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The owned, positioned TOML tree
// ---------------------------------------------------------------------------------------

/// Turns byte offsets into 1-based line and character columns.
struct SourceMap<'a> {
    file: Arc<Path>,
    text: &'a str,
    line_starts: Vec<usize>,
}

impl<'a> SourceMap<'a> {
    fn new(file: &Path, text: &'a str) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        SourceMap {
            file: Arc::from(file),
            text,
            line_starts,
        }
    }

    fn location(&self, offset: usize) -> Location {
        let offset = offset.min(self.text.len());
        let line = match self.line_starts.binary_search(&offset) {
            Ok(i) => i,
            Err(i) => i.saturating_sub(1),
        };
        let start = self.line_starts.get(line).copied().unwrap_or(0);
        let col = self.text[start..]
            .char_indices()
            .take_while(|(i, _)| start + i < offset)
            .count()
            + 1;
        Location {
            file: self.file.clone(),
            line: line + 1,
            col,
        }
    }
}

#[derive(Debug, Clone)]
struct Node {
    loc: Location,
    val: Val,
}

#[derive(Debug, Clone)]
enum Val {
    Str(String),
    /// The value if it fits an `i64`, and the radix it was written in.
    Int(Option<i64>, u32),
    Float(Option<f64>),
    Bool(bool),
    Datetime(toml::value::Datetime),
    Array(Vec<Node>),
    /// Entries in the order they were written.
    Table(Vec<Entry>),
}

impl Val {
    fn kind(&self) -> &'static str {
        match self {
            Val::Str(_) => "a string",
            Val::Int(..) => "an integer",
            Val::Float(_) => "a float",
            Val::Bool(_) => "a boolean",
            Val::Datetime(_) => "a date-time",
            Val::Array(_) => "an array",
            Val::Table(_) => "a table",
        }
    }
}

#[derive(Debug, Clone)]
struct Entry {
    key: String,
    key_loc: Location,
    node: Node,
}

fn convert(value: &Spanned<DeValue<'_>>, map: &SourceMap<'_>) -> Node {
    let loc = map.location(value.span().start);
    let val = match value.get_ref() {
        DeValue::String(s) => Val::Str(s.to_string()),
        DeValue::Integer(i) => Val::Int(i64::from_str_radix(i.as_str(), i.radix()).ok(), i.radix()),
        DeValue::Float(f) => Val::Float(f.as_str().parse().ok()),
        DeValue::Boolean(b) => Val::Bool(*b),
        DeValue::Datetime(d) => Val::Datetime(*d),
        DeValue::Array(items) => Val::Array(items.iter().map(|v| convert(v, map)).collect()),
        DeValue::Table(table) => Val::Table(convert_table(table, map)),
    };
    Node { loc, val }
}

fn convert_table(table: &DeTable<'_>, map: &SourceMap<'_>) -> Vec<Entry> {
    let mut entries: Vec<Entry> = table
        .iter()
        .map(|(key, value)| Entry {
            key: key.get_ref().to_string(),
            key_loc: map.location(key.span().start),
            node: convert(value, map),
        })
        .collect();
    entries.sort_by_key(|e| (e.key_loc.line, e.key_loc.col));
    entries
}

// ---------------------------------------------------------------------------------------
// Merging files
// ---------------------------------------------------------------------------------------

/// A table whose keys may come from several files.
#[derive(Debug)]
struct Section {
    loc: Location,
    entries: Vec<Entry>,
}

/// All files merged, still untyped.
#[derive(Debug, Default)]
struct Raw {
    top: Vec<Entry>,
    sections: BTreeMap<&'static str, Section>,
    cas: Vec<Entry>,
    certificates: Vec<Node>,
    exceptions: Vec<Node>,
}

fn set_again(what: &str, here: &Location, first: &Location) -> Problem {
    Problem::new(
        here.clone(),
        format!("`{what}` is set again here; first set at {first}"),
    )
}

fn merge_list(name: &str, entry: Entry, list: &mut Vec<Node>, p: &mut Vec<Problem>) {
    match entry.node.val {
        Val::Array(items) => {
            for item in items {
                if matches!(item.val, Val::Table(_)) {
                    list.push(item);
                } else {
                    p.push(Problem::new(
                        item.loc,
                        format!(
                            "each `{name}` must be a table ([[{name}]]), found {}",
                            item.val.kind()
                        ),
                    ));
                }
            }
        }
        Val::Table(_) => p.push(Problem::new(
            entry.node.loc,
            format!("write [[{name}]] with double brackets: there can be several"),
        )),
        other => p.push(Problem::new(
            entry.node.loc,
            format!(
                "`{name}` must be an array of tables ([[{name}]]), found {}",
                other.kind()
            ),
        )),
    }
}

impl Raw {
    /// Adds one file's root table: tables merge key by key, `[[certificate]]` and
    /// `[[exception]]` append, and anything set twice is reported with both places.
    fn merge(&mut self, root: Vec<Entry>, p: &mut Vec<Problem>) {
        for entry in root {
            let section = ["metrics", "alert", "discovery", "defaults"]
                .into_iter()
                .find(|s| *s == entry.key);
            if let Some(name) = section {
                self.merge_section(name, entry, p);
            } else if entry.key == "ca" {
                self.merge_cas(entry, p);
            } else if entry.key == "certificate" {
                merge_list("certificate", entry, &mut self.certificates, p);
            } else if entry.key == "exception" {
                merge_list("exception", entry, &mut self.exceptions, p);
            } else {
                match self.top.iter().find(|e| e.key == entry.key) {
                    Some(first) => p.push(set_again(&entry.key, &entry.key_loc, &first.key_loc)),
                    None => self.top.push(entry),
                }
            }
        }
    }

    fn merge_section(&mut self, name: &'static str, entry: Entry, p: &mut Vec<Problem>) {
        let Val::Table(entries) = entry.node.val else {
            p.push(Problem::new(
                entry.node.loc,
                format!(
                    "`{name}` must be a table ([{name}]), found {}",
                    entry.node.val.kind()
                ),
            ));
            return;
        };
        let section = self.sections.entry(name).or_insert_with(|| Section {
            loc: entry.node.loc.clone(),
            entries: Vec::new(),
        });
        for inner in entries {
            match section.entries.iter().find(|e| e.key == inner.key) {
                Some(first) => p.push(set_again(
                    &format!("{name}.{}", inner.key),
                    &inner.key_loc,
                    &first.key_loc,
                )),
                None => section.entries.push(inner),
            }
        }
    }

    fn merge_cas(&mut self, entry: Entry, p: &mut Vec<Problem>) {
        let Val::Table(entries) = entry.node.val else {
            let mut message = format!(
                "`ca` at the top level must be a table of CAs ([ca.NAME]), found {}",
                entry.node.val.kind()
            );
            if matches!(entry.node.val, Val::Array(_)) {
                message.push_str(
                    "; to choose CAs for certificates, set `ca` in [defaults] or [[certificate]]",
                );
            }
            p.push(Problem::new(entry.node.loc, message));
            return;
        };
        for inner in entries {
            if !matches!(inner.node.val, Val::Table(_)) {
                p.push(Problem::new(
                    inner.key_loc.clone(),
                    format!(
                        "[ca] holds one table per CA, like [ca.letsencrypt]; `{}` is {}",
                        inner.key,
                        inner.node.val.kind()
                    ),
                ));
                continue;
            }
            match self.cas.iter().find(|e| e.key == inner.key) {
                Some(first) => p.push(Problem::new(
                    inner.node.loc.clone(),
                    format!(
                        "`[ca.{}]` is defined again here; first defined at {}",
                        inner.key, first.node.loc
                    ),
                )),
                None => self.cas.push(inner),
            }
        }
    }

    fn build(self, p: &mut Vec<Problem>) -> Config {
        let mut config = Config::default();
        check_keys(&self.top, TOP_KEYS, "at the top level", p);
        for entry in &self.top {
            let (key, node) = (entry.key.as_str(), &entry.node);
            match key {
                "state_dir" => {
                    if let Some(path) = as_abs_path(key, node, p) {
                        config.state_dir = path;
                    }
                }
                "control_socket" => {
                    if let Some(path) = as_file_path(key, node, p) {
                        config.control_socket = path;
                    }
                }
                "max_concurrent_renewals" => {
                    if let Some(n) = as_int(key, node, p) {
                        match usize::try_from(n) {
                            Ok(n) if (1..=1024).contains(&n) => config.max_concurrent_renewals = n,
                            _ => p.push(Problem::new(
                                node.loc.clone(),
                                format!("`{key}` must be between 1 and 1024, found {n}"),
                            )),
                        }
                    }
                }
                "log_level" => {
                    if let Some(level) = as_str(key, node, p) {
                        if LOG_LEVELS.contains(&level) {
                            config.log_level = Some(level.to_string());
                        } else {
                            p.push(Problem::new(
                                node.loc.clone(),
                                format!(
                                    "`log_level` must be one of {}, found {level:?} (RUST_LOG takes full filter directives)",
                                    LOG_LEVELS.join(", ")
                                ),
                            ));
                        }
                    }
                }
                _ => continue,
            }
            config
                .key_locations
                .insert(key.to_string(), node.loc.clone());
        }

        for entry in &self.cas {
            if let Some(ca) = build_ca(entry, p) {
                config.cas.insert(ca.name.clone(), ca);
            }
        }
        // Names count as defined even when their table has errors, so that a typo in a
        // CA does not also produce an error at every certificate that uses it.
        let ca_names: BTreeSet<String> = self.cas.iter().map(|e| e.key.clone()).collect();

        let defaults: &[Entry] = self
            .sections
            .get("defaults")
            .map_or(&[], |s| s.entries.as_slice());
        check_defaults(defaults, &ca_names, p);
        let mut names: BTreeMap<String, Location> = BTreeMap::new();
        let mut targets: BTreeMap<PathBuf, (String, Location)> = BTreeMap::new();
        for node in &self.certificates {
            let Some(cert) = build_certificate(node, defaults, &ca_names, p) else {
                continue;
            };
            let name_loc = cert.key_location("name").clone();
            if let Some(first) = names.get(&cert.name) {
                p.push(Problem::new(
                    name_loc,
                    format!(
                        "certificate name `{}` is used again here; first used at {first}",
                        cert.name
                    ),
                ));
                continue;
            }
            names.insert(cert.name.clone(), name_loc);
            let mut clash = false;
            for (kind, path) in cert.files.iter() {
                let here = cert.key_location(&format!("files.{kind}")).clone();
                if let Some((other, first)) = targets.get(path) {
                    p.push(Problem::new(
                        here,
                        format!(
                            "`{}` is also written by certificate `{other}` (set at {first})",
                            path.display()
                        ),
                    ));
                    clash = true;
                } else {
                    targets.insert(path.to_path_buf(), (cert.name.clone(), here));
                }
            }
            if !clash {
                config.certificates.push(cert);
            }
        }

        let mut exception_paths: BTreeMap<PathBuf, Location> = BTreeMap::new();
        for node in &self.exceptions {
            if let Some(exception) = build_exception(node, defaults, p) {
                if let Some(first) = exception_paths.get(&exception.path) {
                    p.push(Problem::new(
                        exception.location.clone(),
                        format!(
                            "an [[exception]] for `{}` is declared again here; first declared at {first}",
                            exception.path.display()
                        ),
                    ));
                    continue;
                }
                exception_paths.insert(exception.path.clone(), exception.location.clone());
                config.exceptions.push(exception);
            }
        }

        if let Some(section) = self.sections.get("metrics") {
            config
                .key_locations
                .insert("metrics".into(), section.loc.clone());
            config.metrics = build_metrics(section, &mut config.key_locations, p);
        }
        if let Some(section) = self.sections.get("alert") {
            config
                .key_locations
                .insert("alert".into(), section.loc.clone());
            config.alert = build_alert(section, &mut config.key_locations, p);
        }
        if let Some(section) = self.sections.get("discovery") {
            config
                .key_locations
                .insert("discovery".into(), section.loc.clone());
            config.discovery = build_discovery(section, defaults, &mut config.key_locations, p);
        }
        config
    }
}

// ---------------------------------------------------------------------------------------
// Generic value helpers
// ---------------------------------------------------------------------------------------

fn suggest<'k>(key: &str, known: &[&'k str]) -> Option<&'k str> {
    let key_len = key.chars().count();
    known
        .iter()
        .copied()
        .map(|k| (k, strsim::jaro_winkler(key, k), strsim::levenshtein(key, k)))
        .filter(|(_, jw, lev)| *jw >= 0.8 || (*lev <= 2 && *lev < key_len))
        .max_by(|a, b| a.1.total_cmp(&b.1).then(b.2.cmp(&a.2)))
        .map(|(k, _, _)| k)
}

/// Reports every key of `entries` that is not in `known`, suggesting the closest.
fn check_keys(entries: &[Entry], known: &[&str], context: &str, p: &mut Vec<Problem>) {
    for entry in entries {
        let key = entry.key.as_str();
        if known.contains(&key) {
            continue;
        }
        let mut message = format!("unknown key `{key}` {context}");
        if let Some((_, file_key)) = SECRET_KEYS.iter().find(|(secret, _)| *secret == key) {
            message.push_str(&format!(
                "; secrets are never written in the configuration: put it in a file \
                 (e.g. under /run/credentials/renewd.service/) and use `{file_key}`"
            ));
        } else if let Some(close) = suggest(key, known) {
            message.push_str(&format!("; did you mean `{close}`?"));
        } else if context != "at the top level" && TOP_SCALAR_KEYS.contains(&key) {
            message.push_str("; top-level keys must come before the first [table] header");
        } else if CERT_KEYS.contains(&key)
            && !matches!(context, "in [[certificate]]" | "in [defaults]")
        {
            message.push_str("; certificate keys belong in [[certificate]] or [defaults]");
        }
        p.push(Problem::new(entry.key_loc.clone(), message));
    }
}

fn wrong_type(key: &str, node: &Node, expected: &str, p: &mut Vec<Problem>) {
    p.push(Problem::new(
        node.loc.clone(),
        format!("`{key}` must be {expected}, found {}", node.val.kind()),
    ));
}

fn as_str<'n>(key: &str, node: &'n Node, p: &mut Vec<Problem>) -> Option<&'n str> {
    match &node.val {
        Val::Str(s) => Some(s),
        _ => {
            wrong_type(key, node, "a string", p);
            None
        }
    }
}

fn as_nonempty_str(key: &str, node: &Node, p: &mut Vec<Problem>) -> Option<String> {
    let s = as_str(key, node, p)?;
    if s.trim().is_empty() {
        p.push(Problem::new(
            node.loc.clone(),
            format!("`{key}` must not be empty"),
        ));
        return None;
    }
    Some(s.to_string())
}

fn as_bool(key: &str, node: &Node, p: &mut Vec<Problem>) -> Option<bool> {
    match node.val {
        Val::Bool(b) => Some(b),
        _ => {
            wrong_type(key, node, "a boolean (true or false)", p);
            None
        }
    }
}

fn as_int(key: &str, node: &Node, p: &mut Vec<Problem>) -> Option<i64> {
    match node.val {
        Val::Int(Some(n), _) => Some(n),
        Val::Int(None, _) => {
            p.push(Problem::new(
                node.loc.clone(),
                format!("`{key}` is too large"),
            ));
            None
        }
        _ => {
            wrong_type(key, node, "an integer", p);
            None
        }
    }
}

fn as_abs_path(key: &str, node: &Node, p: &mut Vec<Problem>) -> Option<PathBuf> {
    let s = as_str(key, node, p)?;
    let problem = if s.is_empty() {
        Some(format!("`{key}` must not be empty"))
    } else if s.contains('\0') {
        Some(format!("`{key}` must not contain a NUL character"))
    } else if !Path::new(s).is_absolute() {
        Some(format!("`{key}` must be an absolute path, found `{s}`"))
    } else {
        None
    };
    match problem {
        Some(message) => {
            p.push(Problem::new(node.loc.clone(), message));
            None
        }
        None => Some(PathBuf::from(s)),
    }
}

/// An absolute path that names a file (not `/`, not ending in `/` or `..`).
fn as_file_path(key: &str, node: &Node, p: &mut Vec<Problem>) -> Option<PathBuf> {
    let path = as_abs_path(key, node, p)?;
    let text = path.to_string_lossy();
    if path.file_name().is_none() || text.ends_with('/') || text.ends_with("/.") {
        p.push(Problem::new(
            node.loc.clone(),
            format!("`{key}` must name a file, found `{text}`"),
        ));
        return None;
    }
    Some(path)
}

/// An array of strings, each with its location.
fn as_str_list<'n>(
    key: &str,
    node: &'n Node,
    p: &mut Vec<Problem>,
) -> Option<Vec<(&'n str, &'n Location)>> {
    let Val::Array(items) = &node.val else {
        wrong_type(key, node, "an array of strings", p);
        return None;
    };
    let mut out = Vec::with_capacity(items.len());
    let mut ok = true;
    for item in items {
        match &item.val {
            Val::Str(s) => out.push((s.as_str(), &item.loc)),
            other => {
                p.push(Problem::new(
                    item.loc.clone(),
                    format!(
                        "each entry of `{key}` must be a string, found {}",
                        other.kind()
                    ),
                ));
                ok = false;
            }
        }
    }
    ok.then_some(out)
}

/// A command: a non-empty array of strings whose first is not empty. No shell.
fn as_argv(key: &str, node: &Node, p: &mut Vec<Problem>) -> Option<Vec<String>> {
    let list = as_str_list(key, node, p)?;
    let Some((first, first_loc)) = list.first() else {
        p.push(Problem::new(
            node.loc.clone(),
            format!("`{key}` must not be empty: give the command and its arguments"),
        ));
        return None;
    };
    if first.trim().is_empty() {
        p.push(Problem::new(
            (*first_loc).clone(),
            format!("the command in `{key}` must not be empty"),
        ));
        return None;
    }
    Some(list.into_iter().map(|(s, _)| s.to_string()).collect())
}

fn as_duration(
    key: &str,
    node: &Node,
    min: Duration,
    max: Duration,
    p: &mut Vec<Problem>,
) -> Option<Duration> {
    let Val::Str(s) = &node.val else {
        wrong_type(key, node, "a duration string like \"90s\"", p);
        return None;
    };
    let message = match parse_duration(s) {
        Err(e) => format!("`{key}`: {e}"),
        Ok(d) if d < min => format!("`{key}` must be at least {}", format_duration(min)),
        Ok(d) if d > max => format!("`{key}` must be at most {}", format_duration(max)),
        Ok(d) => return Some(d),
    };
    p.push(Problem::new(node.loc.clone(), message));
    None
}

fn as_socket_addr(
    key: &str,
    node: &Node,
    default_port: Option<u16>,
    p: &mut Vec<Problem>,
) -> Option<SocketAddr> {
    let s = as_str(key, node, p)?;
    let addr = parse_socket_addr(s, default_port);
    if addr.is_none() {
        p.push(Problem::new(
            node.loc.clone(),
            format!(
                "`{key}` must be an IP address and port, like `127.0.0.1:9443` or `[::]:80`, \
                 found `{s}`"
            ),
        ));
    }
    addr
}

fn as_table<'n>(
    key: &str,
    node: &'n Node,
    example: &str,
    p: &mut Vec<Problem>,
) -> Option<&'n [Entry]> {
    match &node.val {
        Val::Table(entries) => Some(entries),
        _ => {
            wrong_type(key, node, &format!("a table like {example}"), p);
            None
        }
    }
}

/// A user or group name as `getpwnam`/`getgrnam` take it.
fn as_account_name(key: &str, node: &Node, p: &mut Vec<Problem>) -> Option<String> {
    let s = as_nonempty_str(key, node, p)?;
    if s.chars()
        .any(|c| c.is_whitespace() || c == ':' || c.is_control())
    {
        p.push(Problem::new(
            node.loc.clone(),
            format!("`{key}` `{s}` is not a valid name"),
        ));
        return None;
    }
    Some(s)
}

fn find<'e>(entries: &'e [Entry], key: &str) -> Option<&'e Entry> {
    entries.iter().find(|e| e.key == key)
}

// ---------------------------------------------------------------------------------------
// Typed sections
// ---------------------------------------------------------------------------------------

fn build_ca(entry: &Entry, p: &mut Vec<Problem>) -> Option<CaConfig> {
    let start = p.len();
    let name = entry.key.as_str();
    let header = entry.node.loc.clone();
    if let Err(why) = check_ident(name) {
        p.push(Problem::new(
            entry.key_loc.clone(),
            format!("CA name `{name}` {why}"),
        ));
    }
    let Val::Table(entries) = &entry.node.val else {
        return None;
    };
    check_keys(entries, CA_KEYS, &format!("in [ca.{name}]"), p);
    let mut ca = CaConfig {
        name: name.to_string(),
        directory: String::new(),
        contact: Vec::new(),
        accept_terms: false,
        trust_roots: None,
        eab_kid: None,
        eab_hmac_key_file: None,
        profile: None,
        timeout: DEFAULT_CA_TIMEOUT,
        ari: true,
        proxy: None,
        location: header.clone(),
        key_locations: BTreeMap::new(),
    };
    for e in entries {
        let (key, node) = (e.key.as_str(), &e.node);
        match key {
            "directory" => {
                if let Some(url) = as_str(key, node, p) {
                    match check_url(url, false) {
                        Ok(()) => ca.directory = url.to_string(),
                        Err(why) => {
                            p.push(Problem::new(node.loc.clone(), format!("`directory` {why}")))
                        }
                    }
                }
            }
            "contact" => {
                for (contact, loc) in as_str_list(key, node, p).unwrap_or_default() {
                    match contact.strip_prefix("mailto:") {
                        Some(address)
                            if address.contains('@') && !address.contains(char::is_whitespace) =>
                        {
                            ca.contact.push(contact.to_string())
                        }
                        _ => p.push(Problem::new(
                            loc.clone(),
                            format!(
                                "each `contact` must be a mailto: URL like \
                                 \"mailto:ops@example.org\", found `{contact}`"
                            ),
                        )),
                    }
                }
            }
            "accept_terms" => match as_bool(key, node, p) {
                Some(true) => ca.accept_terms = true,
                Some(false) => p.push(Problem::new(
                    node.loc.clone(),
                    "`accept_terms` must be true: renewd cannot register an account with \
                     this CA unless you accept the CA's terms of service",
                )),
                None => {}
            },
            "trust_roots" => ca.trust_roots = as_file_path(key, node, p),
            "eab_kid" => ca.eab_kid = as_nonempty_str(key, node, p),
            "eab_hmac_key_file" => ca.eab_hmac_key_file = as_file_path(key, node, p),
            "profile" => ca.profile = as_nonempty_str(key, node, p),
            "timeout" => {
                if let Some(d) = as_duration(key, node, MIN_CA_TIMEOUT, MAX_CA_TIMEOUT, p) {
                    ca.timeout = d;
                }
            }
            "ari" => {
                if let Some(b) = as_bool(key, node, p) {
                    ca.ari = b;
                }
            }
            "proxy" => {
                if let Some(url) = as_str(key, node, p) {
                    match url {
                        "" => ca.proxy = Some(String::new()),
                        _ => match check_proxy_url(url) {
                            Ok(_) => ca.proxy = Some(url.to_string()),
                            Err(why) => p.push(Problem::new(
                                node.loc.clone(),
                                format!("`proxy` {why} (or \"\" to connect directly)"),
                            )),
                        },
                    }
                }
            }
            _ => continue,
        }
        ca.key_locations.insert(key.to_string(), node.loc.clone());
    }
    if find(entries, "directory").is_none() {
        p.push(Problem::new(
            header.clone(),
            format!("[ca.{name}] has no `directory` (the CA's ACME directory URL)"),
        ));
    }
    if find(entries, "accept_terms").is_none() {
        p.push(Problem::new(
            header,
            format!(
                "[ca.{name}] needs `accept_terms = true`: renewd cannot register an account \
                 unless you accept the CA's terms of service"
            ),
        ));
    }
    for (have, need) in [
        ("eab_kid", "eab_hmac_key_file"),
        ("eab_hmac_key_file", "eab_kid"),
    ] {
        if let (Some(e), None) = (find(entries, have), find(entries, need)) {
            p.push(Problem::new(
                e.key_loc.clone(),
                format!("`{have}` needs `{need}` too (external account binding)"),
            ));
        }
    }
    (p.len() == start).then_some(ca)
}

/// What one certificate's keys say, before the cross-key checks.
#[derive(Default)]
struct CertFields {
    name: Option<String>,
    domains: Option<Vec<String>>,
    owner: Option<String>,
    service: Option<String>,
    ca: Option<Vec<String>>,
    key_type: Option<KeyType>,
    renew_before: Option<RenewBefore>,
    challenge: Option<Vec<ChallengeRule>>,
    files: Option<FileSet>,
    user: Option<String>,
    group: Option<String>,
    key_mode: Option<u32>,
    reload: Option<Vec<Vec<String>>>,
    reload_timeout: Option<Duration>,
    verify: Option<VerifyConfig>,
    profile: Option<String>,
    alert_before: Option<RenewBefore>,
    locs: BTreeMap<String, Location>,
}

fn parse_cert_fields<'e>(
    entries: impl IntoIterator<Item = &'e Entry>,
    cas: &BTreeSet<String>,
    p: &mut Vec<Problem>,
) -> CertFields {
    let mut f = CertFields::default();
    for e in entries {
        let (key, node) = (e.key.as_str(), &e.node);
        if !CERT_KEYS.contains(&key) {
            continue;
        }
        f.locs.insert(key.to_string(), node.loc.clone());
        match key {
            "name" => {
                if let Some(name) = as_str(key, node, p) {
                    match check_ident(name) {
                        Ok(()) => f.name = Some(name.to_string()),
                        Err(why) => p.push(Problem::new(
                            node.loc.clone(),
                            format!("certificate name `{name}` {why}"),
                        )),
                    }
                }
            }
            "domains" => f.domains = parse_domains(node, &mut f.locs, p),
            "owner" => f.owner = as_nonempty_str(key, node, p),
            "service" => f.service = as_nonempty_str(key, node, p),
            "ca" => f.ca = parse_ca_refs(node, cas, p),
            "key_type" => {
                if let Some(s) = as_str(key, node, p) {
                    f.key_type = KeyType::from_name(s);
                    if f.key_type.is_none() {
                        let valid: Vec<&str> = KeyType::ALL.iter().map(|k| k.as_str()).collect();
                        p.push(Problem::new(
                            node.loc.clone(),
                            format!(
                                "unknown `key_type` `{s}`; valid types are {}",
                                valid.join(", ")
                            ),
                        ));
                    }
                }
            }
            "renew_before" => match margin_value(key, node) {
                Ok(r) => f.renew_before = Some(r),
                Err(why) => p.push(Problem::new(node.loc.clone(), why)),
            },
            "alert_before" => match margin_value(key, node) {
                Ok(r) => f.alert_before = Some(r),
                Err(why) => p.push(Problem::new(node.loc.clone(), why)),
            },
            "challenge" => f.challenge = parse_challenge(node, &mut f.locs, p),
            "files" => f.files = parse_files(node, &mut f.locs, p),
            "user" => f.user = as_account_name(key, node, p),
            "group" => f.group = as_account_name(key, node, p),
            "key_mode" => match parse_key_mode(node) {
                Ok(mode) => f.key_mode = Some(mode),
                Err(why) => p.push(Problem::new(node.loc.clone(), why)),
            },
            "reload" => f.reload = parse_reload(node, &mut f.locs, p),
            "reload_timeout" => {
                f.reload_timeout = as_duration(key, node, MIN_RELOAD_TIMEOUT, MAX_RELOAD_TIMEOUT, p)
            }
            "verify" => f.verify = parse_verify(node, &mut f.locs, p),
            "profile" => f.profile = as_nonempty_str(key, node, p),
            _ => {}
        }
    }
    f
}

fn parse_domains(
    node: &Node,
    locs: &mut BTreeMap<String, Location>,
    p: &mut Vec<Problem>,
) -> Option<Vec<String>> {
    let list = as_str_list("domains", node, p)?;
    if list.is_empty() {
        p.push(Problem::new(
            node.loc.clone(),
            "`domains` must list at least one name",
        ));
        return None;
    }
    let mut out: Vec<String> = Vec::with_capacity(list.len());
    let mut ok = true;
    for (written, loc) in list {
        match normalize_identifier(written) {
            Ok(domain) if out.contains(&domain) => {
                p.push(Problem::new(
                    loc.clone(),
                    format!("`{domain}` is listed twice in `domains`"),
                ));
                ok = false;
            }
            Ok(domain) => {
                locs.insert(format!("domains.{}", out.len()), loc.clone());
                out.push(domain);
            }
            Err(why) => {
                p.push(Problem::new(loc.clone(), why));
                ok = false;
            }
        }
    }
    ok.then_some(out)
}

fn parse_ca_refs(node: &Node, cas: &BTreeSet<String>, p: &mut Vec<Problem>) -> Option<Vec<String>> {
    if let Val::Str(name) = &node.val {
        p.push(Problem::new(
            node.loc.clone(),
            format!("`ca` must be an array of CA names, like [\"{name}\"], found a string"),
        ));
        return None;
    }
    let list = as_str_list("ca", node, p)?;
    if list.is_empty() {
        p.push(Problem::new(
            node.loc.clone(),
            "`ca` must name at least one CA",
        ));
        return None;
    }
    let known: Vec<&str> = cas.iter().map(String::as_str).collect();
    let mut out: Vec<String> = Vec::new();
    let mut ok = true;
    for (name, loc) in list {
        if !cas.contains(name) {
            let mut message = format!("`{name}` is not a defined CA");
            if let Some(close) = suggest(name, &known) {
                message.push_str(&format!("; did you mean `{close}`?"));
            } else if known.is_empty() {
                message.push_str(&format!("; define it in a [ca.{name}] table"));
            } else {
                message.push_str(&format!("; defined: {}", known.join(", ")));
            }
            p.push(Problem::new(loc.clone(), message));
            ok = false;
        } else if out.iter().any(|n| n == name) {
            p.push(Problem::new(
                loc.clone(),
                format!("`{name}` is listed twice in `ca`"),
            ));
            ok = false;
        } else {
            out.push(name.to_string());
        }
    }
    ok.then_some(out)
}

/// `challenge`: one challenge for every name (a table with a `type`), or a table of them
/// keyed by name pattern (every value a table, no `type` key).
fn parse_challenge(
    node: &Node,
    locs: &mut BTreeMap<String, Location>,
    p: &mut Vec<Problem>,
) -> Option<Vec<ChallengeRule>> {
    let entries = as_table(
        "challenge",
        node,
        "{ type = \"http-01\", webroot = \"/var/www/html\" }",
        p,
    )?;
    let per_name = !entries.is_empty()
        && find(entries, "type").is_none()
        && entries.iter().all(|e| matches!(e.node.val, Val::Table(_)));
    if !per_name {
        return parse_one_challenge(node, "challenge", locs, p).map(|config| {
            vec![ChallengeRule {
                pattern: None,
                config,
                key: "challenge".into(),
            }]
        });
    }
    let start = p.len();
    let mut rules: Vec<ChallengeRule> = Vec::new();
    for e in entries {
        let pattern = if e.key == "*" {
            Ok("*".to_string())
        } else {
            normalize_identifier(&e.key)
        };
        let pattern = match pattern {
            Ok(pattern) => pattern,
            Err(why) => {
                p.push(Problem::new(
                    e.key_loc.clone(),
                    format!(
                        "`challenge` keys are names a challenge covers (`example.org`, \
                         `*.example.org`, an IP address, or `*` for every other name): {why}"
                    ),
                ));
                continue;
            }
        };
        if rules
            .iter()
            .any(|r| r.pattern.as_deref() == Some(pattern.as_str()))
        {
            p.push(Problem::new(
                e.key_loc.clone(),
                format!("`{pattern}` has two entries in `challenge`"),
            ));
            continue;
        }
        let key = format!("challenge.\"{pattern}\"");
        locs.insert(key.clone(), e.key_loc.clone());
        if let Some(config) = parse_one_challenge(&e.node, &key, locs, p) {
            rules.push(ChallengeRule {
                pattern: Some(pattern),
                config,
                key,
            });
        }
    }
    (p.len() == start).then_some(rules)
}

/// One `{ type = ..., ... }` challenge table; its keys' places go into `locs` under `prefix`.
fn parse_one_challenge(
    node: &Node,
    prefix: &str,
    locs: &mut BTreeMap<String, Location>,
    p: &mut Vec<Problem>,
) -> Option<ChallengeConfig> {
    let entries = as_table(
        prefix,
        node,
        "{ type = \"http-01\", webroot = \"/var/www/html\" }",
        p,
    )?;
    let start = p.len();
    check_keys(entries, CHALLENGE_KEYS, &format!("in `{prefix}`"), p);
    for e in entries {
        if CHALLENGE_KEYS.contains(&e.key.as_str()) {
            locs.insert(format!("{prefix}.{}", e.key), e.node.loc.clone());
        }
    }
    let Some(type_entry) = find(entries, "type") else {
        p.push(Problem::new(
            node.loc.clone(),
            format!(
                "`{prefix}` needs a `type`: one of {}",
                CHALLENGE_TYPES.join(", ")
            ),
        ));
        return None;
    };
    let kind = as_str("type", &type_entry.node, p)?.to_ascii_lowercase();
    let allowed: &[&str] = match kind.as_str() {
        "http-01" => &["type", "webroot", "trust_owner", "listen"],
        "dns-01" => &["type", "hook", "rfc2136", "propagation_wait"],
        "tls-alpn-01" => &["type", "listen"],
        _ => {
            let mut message = format!(
                "unknown challenge type `{kind}`; valid types are {}",
                CHALLENGE_TYPES.join(", ")
            );
            if let Some(close) = suggest(&kind, CHALLENGE_TYPES) {
                message.push_str(&format!("; did you mean `{close}`?"));
            }
            p.push(Problem::new(type_entry.node.loc.clone(), message));
            return None;
        }
    };
    for e in entries {
        if CHALLENGE_KEYS.contains(&e.key.as_str()) && !allowed.contains(&e.key.as_str()) {
            p.push(Problem::new(
                e.key_loc.clone(),
                format!(
                    "`{}` does not apply to the {kind} challenge (its keys: {})",
                    e.key,
                    allowed.join(", ")
                ),
            ));
        }
    }
    let webroot = find(entries, "webroot");
    let listen = find(entries, "listen");
    let challenge = match kind.as_str() {
        "http-01" => match (webroot, listen) {
            (Some(w), None) => {
                let trust_owner = match find(entries, "trust_owner") {
                    Some(t) => as_bool("trust_owner", &t.node, p)?,
                    None => false,
                };
                as_abs_path("webroot", &w.node, p).map(|webroot| ChallengeConfig::Http01Webroot {
                    webroot,
                    trust_owner,
                })
            }
            (None, Some(l)) => as_socket_addr("listen", &l.node, None, p)
                .map(|listen| ChallengeConfig::Http01Listen { listen }),
            (Some(w), Some(l)) => {
                let second = if (w.key_loc.line, w.key_loc.col) > (l.key_loc.line, l.key_loc.col) {
                    w
                } else {
                    l
                };
                p.push(Problem::new(
                    second.key_loc.clone(),
                    "an http-01 challenge takes `webroot` or `listen`, not both",
                ));
                None
            }
            (None, None) => {
                p.push(Problem::new(
                    node.loc.clone(),
                    "an http-01 challenge needs `webroot` (a directory the web server serves) \
                     or `listen` (an address for renewd's own server)",
                ));
                None
            }
        },
        "tls-alpn-01" => match listen {
            Some(l) => as_socket_addr("listen", &l.node, None, p)
                .map(|listen| ChallengeConfig::TlsAlpn01 { listen }),
            None => {
                p.push(Problem::new(
                    node.loc.clone(),
                    "a tls-alpn-01 challenge needs `listen`, like `[::]:443`",
                ));
                None
            }
        },
        _ => {
            let wait = match find(entries, "propagation_wait") {
                Some(e) => as_duration(
                    "propagation_wait",
                    &e.node,
                    Duration::ZERO,
                    MAX_PROPAGATION_WAIT,
                    p,
                ),
                None => Some(Duration::ZERO),
            };
            match (find(entries, "hook"), find(entries, "rfc2136")) {
                (Some(h), None) => as_argv("hook", &h.node, p).and_then(|hook| {
                    wait.map(|propagation_wait| ChallengeConfig::Dns01Hook {
                        hook,
                        propagation_wait,
                    })
                }),
                (None, Some(r)) => {
                    parse_rfc2136(&r.node, prefix, locs, p).and_then(|(server, key)| {
                        wait.map(|propagation_wait| ChallengeConfig::Dns01Rfc2136 {
                            server,
                            tsig_key_file: key,
                            propagation_wait,
                        })
                    })
                }
                (Some(_), Some(r)) => {
                    p.push(Problem::new(
                        r.key_loc.clone(),
                        "a dns-01 challenge takes `hook` or `rfc2136`, not both",
                    ));
                    None
                }
                (None, None) => {
                    p.push(Problem::new(
                        node.loc.clone(),
                        "a dns-01 challenge needs `hook` (a command that sets the TXT record) \
                         or `rfc2136` (a DNS server that accepts dynamic updates)",
                    ));
                    None
                }
            }
        }
    };
    if p.len() > start {
        return None;
    }
    locs.insert(format!("{prefix}.type"), type_entry.node.loc.clone());
    challenge
}

fn parse_rfc2136(
    node: &Node,
    prefix: &str,
    locs: &mut BTreeMap<String, Location>,
    p: &mut Vec<Problem>,
) -> Option<(SocketAddr, Option<PathBuf>)> {
    let entries = as_table(
        "rfc2136",
        node,
        "{ server = \"10.0.0.53:53\", tsig_key_file = \"/etc/renewd/tsig.key\" }",
        p,
    )?;
    let start = p.len();
    check_keys(entries, RFC2136_KEYS, "in `rfc2136`", p);
    let mut server = None;
    let mut key_file = None;
    for e in entries {
        match e.key.as_str() {
            "server" => server = as_socket_addr("server", &e.node, Some(53), p),
            "tsig_key_file" => key_file = as_file_path("tsig_key_file", &e.node, p),
            _ => continue,
        }
        locs.insert(format!("{prefix}.rfc2136.{}", e.key), e.node.loc.clone());
    }
    if find(entries, "server").is_none() {
        p.push(Problem::new(
            node.loc.clone(),
            "`rfc2136` needs `server`, the DNS server to update, like `10.0.0.53:53`",
        ));
    }
    if p.len() > start {
        return None;
    }
    server.map(|server| (server, key_file))
}

fn parse_files(
    node: &Node,
    locs: &mut BTreeMap<String, Location>,
    p: &mut Vec<Problem>,
) -> Option<FileSet> {
    let entries = as_table(
        "files",
        node,
        "{ fullchain = \"/etc/nginx/tls/www.pem\", key = \"/etc/nginx/tls/www.key\" }",
        p,
    )?;
    let start = p.len();
    check_keys(entries, FILES_KEYS, "in `files`", p);
    let mut files = FileSet::default();
    let mut seen: Vec<(PathBuf, FileKind)> = Vec::new();
    for e in entries {
        let Some(kind) = FileKind::from_name(&e.key) else {
            continue;
        };
        let key = format!("files.{kind}");
        locs.insert(key.clone(), e.node.loc.clone());
        let Some(path) = as_file_path(kind.as_str(), &e.node, p) else {
            continue;
        };
        if let Some((_, other)) = seen.iter().find(|(seen_path, _)| *seen_path == path) {
            p.push(Problem::new(
                e.node.loc.clone(),
                format!("`{key}` is the same file as `files.{other}`"),
            ));
            continue;
        }
        seen.push((path.clone(), kind));
        *files.slot(kind) = Some(path);
    }
    if p.len() > start {
        return None;
    }
    if files.cert.is_none() && files.fullchain.is_none() && files.combined.is_none() {
        p.push(Problem::new(
            node.loc.clone(),
            "`files` needs somewhere to put the certificate: `cert`, `fullchain` or `combined`",
        ));
    }
    if files.key.is_none() && files.combined.is_none() {
        p.push(Problem::new(
            node.loc.clone(),
            "`files` needs somewhere to put the private key: `key` or `combined`",
        ));
    }
    (p.len() == start).then_some(files)
}

fn parse_reload(
    node: &Node,
    locs: &mut BTreeMap<String, Location>,
    p: &mut Vec<Problem>,
) -> Option<Vec<Vec<String>>> {
    let Val::Array(items) = &node.val else {
        wrong_type(
            "reload",
            node,
            "a list of commands, like [[\"systemctl\", \"reload\", \"nginx\"]]",
            p,
        );
        return None;
    };
    if !items.is_empty() && items.iter().all(|i| matches!(i.val, Val::Str(_))) {
        p.push(Problem::new(
            node.loc.clone(),
            "`reload` is a list of commands, each a list of arguments: write \
             [[\"systemctl\", \"reload\", \"nginx\"]] rather than [\"systemctl\", \"reload\", \"nginx\"]",
        ));
        return None;
    }
    let mut out = Vec::with_capacity(items.len());
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        match as_argv("reload", item, p) {
            Some(argv) => {
                locs.insert(format!("reload.{i}"), item.loc.clone());
                out.push(argv);
            }
            None => ok = false,
        }
    }
    ok.then_some(out)
}

fn parse_verify(
    node: &Node,
    locs: &mut BTreeMap<String, Location>,
    p: &mut Vec<Problem>,
) -> Option<VerifyConfig> {
    let entries = as_table(
        "verify",
        node,
        "{ connect = \"127.0.0.1:443\", server_name = \"example.org\" }",
        p,
    )?;
    let start = p.len();
    check_keys(entries, VERIFY_KEYS, "in `verify`", p);
    let mut connect = None;
    let mut server_name = None;
    let mut timeout = DEFAULT_VERIFY_TIMEOUT;
    for e in entries {
        match e.key.as_str() {
            "connect" => {
                if let Some(s) = as_str("connect", &e.node, p) {
                    match check_host_port(s) {
                        Ok(()) => connect = Some(s.to_string()),
                        Err(why) => p.push(Problem::new(e.node.loc.clone(), why)),
                    }
                }
            }
            "server_name" => {
                if let Some(s) = as_str("server_name", &e.node, p) {
                    match normalize_identifier(s) {
                        Ok(name) if !name.starts_with("*.") => server_name = Some(name),
                        Ok(_) => p.push(Problem::new(
                            e.node.loc.clone(),
                            "`server_name` must be a name the service answers to, not a wildcard",
                        )),
                        Err(why) => p.push(Problem::new(
                            e.node.loc.clone(),
                            format!("`server_name`: {why}"),
                        )),
                    }
                }
            }
            "timeout" => {
                if let Some(d) = as_duration(
                    "timeout",
                    &e.node,
                    MIN_VERIFY_TIMEOUT,
                    MAX_VERIFY_TIMEOUT,
                    p,
                ) {
                    timeout = d;
                }
            }
            _ => continue,
        }
        locs.insert(format!("verify.{}", e.key), e.node.loc.clone());
    }
    for key in VERIFY_REQUIRED_KEYS {
        if find(entries, key).is_none() {
            p.push(Problem::new(
                node.loc.clone(),
                format!("`verify` needs `{key}`"),
            ));
        }
    }
    if p.len() > start {
        return None;
    }
    Some(VerifyConfig {
        connect: connect?,
        server_name: server_name?,
        timeout,
    })
}

/// Validates `[defaults]` on its own, so its mistakes are reported even when no
/// certificate inherits them.
fn check_defaults(defaults: &[Entry], cas: &BTreeSet<String>, p: &mut Vec<Problem>) {
    for e in defaults {
        if e.key == "name" || e.key == "domains" {
            p.push(Problem::new(
                e.key_loc.clone(),
                format!(
                    "`{}` cannot be set in [defaults]: every [[certificate]] has its own",
                    e.key
                ),
            ));
        }
    }
    let allowed: Vec<&str> = CERT_KEYS
        .iter()
        .copied()
        .filter(|k| *k != "name" && *k != "domains")
        .collect();
    let others: Vec<Entry> = defaults
        .iter()
        .filter(|e| e.key != "name" && e.key != "domains")
        .cloned()
        .collect();
    check_keys(&others, &allowed, "in [defaults]", p);
    parse_cert_fields(others.iter(), cas, p);
}

fn build_certificate(
    node: &Node,
    defaults: &[Entry],
    cas: &BTreeSet<String>,
    p: &mut Vec<Problem>,
) -> Option<CertConfig> {
    let Val::Table(own) = &node.val else {
        return None;
    };
    let start = p.len();
    check_keys(own, CERT_KEYS, "in [[certificate]]", p);
    let inherited = defaults
        .iter()
        .filter(|d| d.key != "name" && d.key != "domains" && find(own, &d.key).is_none());
    let mut f = parse_cert_fields(own.iter().chain(inherited), cas, p);
    let written = |key: &str| f.locs.contains_key(key);
    let label = match &f.name {
        Some(name) => format!("certificate `{name}`"),
        None => "this certificate".to_string(),
    };
    if !written("name") {
        p.push(Problem::new(
            node.loc.clone(),
            "this [[certificate]] has no `name`",
        ));
    }
    if !written("domains") {
        p.push(Problem::new(
            node.loc.clone(),
            format!("{label} has no `domains`"),
        ));
    }
    for key in ["challenge", "files"] {
        if !written(key) {
            p.push(Problem::new(
                node.loc.clone(),
                format!("{label} has no `{key}`; set it here or in [defaults]"),
            ));
        }
    }
    if !written("ca") {
        match cas.len() {
            1 => f.ca = Some(cas.iter().cloned().collect()),
            0 => p.push(Problem::new(
                node.loc.clone(),
                format!("{label} has no CA: define one in a [ca.NAME] table"),
            )),
            _ => {
                let names: Vec<&str> = cas.iter().map(String::as_str).collect();
                p.push(Problem::new(
                    node.loc.clone(),
                    format!(
                        "{label} must choose its CA with `ca = [...]` (here or in [defaults]): \
                         several are defined ({})",
                        names.join(", ")
                    ),
                ));
            }
        }
    }
    if let (Some(domains), Some(rules), Some(name)) = (&f.domains, &f.challenge, &f.name) {
        let challenges = Challenges {
            certificate: name.clone(),
            domains: domains.clone(),
            rules: rules.clone(),
        };
        let mut used = vec![false; rules.len()];
        for (i, domain) in domains.iter().enumerate() {
            let Some(loc) = f.locs.get(&format!("domains.{i}")) else {
                continue;
            };
            let Some(rule) = challenges.for_name(domain) else {
                p.push(Problem::new(
                    loc.clone(),
                    format!(
                        "no entry of `challenge` covers `{domain}`: add one for it, or a \
                         `\"*\"` entry for every name not listed"
                    ),
                ));
                continue;
            };
            if let Some(n) = rules.iter().position(|r| r == rule) {
                used[n] = true;
            }
            let challenge = &rule.config;
            if domain.starts_with("*.") && !challenge.is_dns01() {
                p.push(Problem::new(
                    loc.clone(),
                    format!(
                        "wildcard `{domain}` needs a dns-01 challenge, not {}",
                        challenge.kind()
                    ),
                ));
            }
            if domain.parse::<IpAddr>().is_ok() && challenge.is_dns01() {
                p.push(Problem::new(
                    loc.clone(),
                    format!(
                        "IP address `{domain}` cannot be validated with dns-01; \
                         use http-01 or tls-alpn-01"
                    ),
                ));
            }
        }
        for (rule, used) in rules.iter().zip(used) {
            if let (Some(pattern), false) = (&rule.pattern, used) {
                if let Some(loc) = f.locs.get(&rule.key) {
                    p.push(Problem::new(
                        loc.clone(),
                        format!("the `challenge` entry `{pattern}` covers none of `domains`"),
                    ));
                }
            }
        }
    }
    if p.len() > start {
        return None;
    }
    let challenge = Challenges {
        certificate: f.name.clone()?,
        domains: f.domains.clone()?,
        rules: f.challenge?,
    };
    Some(CertConfig {
        name: f.name?,
        domains: f.domains?,
        owner: f.owner,
        service: f.service,
        ca: f.ca?,
        key_type: f.key_type.unwrap_or(KeyType::EcdsaP256),
        renew_before: f.renew_before.unwrap_or(RenewBefore::Fraction(1.0 / 3.0)),
        challenge,
        files: f.files?,
        user: f.user,
        group: f.group,
        key_mode: f.key_mode.unwrap_or(DEFAULT_KEY_MODE),
        reload: f.reload.unwrap_or_default(),
        reload_timeout: f.reload_timeout.unwrap_or(DEFAULT_RELOAD_TIMEOUT),
        verify: f.verify,
        profile: f.profile,
        alert_before: f.alert_before,
        location: node.loc.clone(),
        key_locations: Arc::new(f.locs),
    })
}

fn build_exception(
    node: &Node,
    defaults: &[Entry],
    p: &mut Vec<Problem>,
) -> Option<ExceptionConfig> {
    let Val::Table(entries) = &node.val else {
        return None;
    };
    let start = p.len();
    check_keys(entries, EXCEPTION_ALL_KEYS, "in [[exception]]", p);
    let alert_before = alert_before_of(entries, defaults, p);
    let mut path = None;
    let mut owner = None;
    let mut reason = None;
    let mut review_by = None;
    for e in entries {
        let (key, n) = (e.key.as_str(), &e.node);
        match key {
            "path" => path = as_file_path(key, n, p),
            "owner" => owner = as_nonempty_str(key, n, p),
            "reason" => reason = as_nonempty_str(key, n, p),
            "review_by" => {
                let date = match &n.val {
                    Val::Str(s) => Some(s.clone()),
                    Val::Datetime(d) if d.time.is_none() && d.offset.is_none() => d
                        .date
                        .map(|d| format!("{:04}-{:02}-{:02}", d.year, d.month, d.day)),
                    _ => None,
                };
                match date {
                    Some(date) => match check_date(&date) {
                        Ok(()) => review_by = Some(date),
                        Err(why) => p.push(Problem::new(n.loc.clone(), why)),
                    },
                    None => wrong_type(key, n, "a date like \"2027-03-01\"", p),
                }
            }
            _ => {}
        }
    }
    for key in EXCEPTION_KEYS {
        if find(entries, key).is_none() {
            p.push(Problem::new(
                node.loc.clone(),
                format!("[[exception]] needs `{key}`"),
            ));
        }
    }
    if p.len() > start {
        return None;
    }
    Some(ExceptionConfig {
        path: path?,
        owner: owner?,
        reason: reason?,
        review_by: review_by?,
        alert_before,
        location: node.loc.clone(),
    })
}

/// `alert_before` of an `[[exception]]` or `[discovery]` table, else of `[defaults]` (whose
/// mistakes are reported by its own check).
fn alert_before_of(
    entries: &[Entry],
    defaults: &[Entry],
    p: &mut Vec<Problem>,
) -> Option<RenewBefore> {
    if let Some(e) = find(entries, "alert_before") {
        return match margin_value("alert_before", &e.node) {
            Ok(r) => Some(r),
            Err(why) => {
                p.push(Problem::new(e.node.loc.clone(), why));
                None
            }
        };
    }
    find(defaults, "alert_before").and_then(|e| margin_value("alert_before", &e.node).ok())
}

fn build_metrics(
    section: &Section,
    locs: &mut BTreeMap<String, Location>,
    p: &mut Vec<Problem>,
) -> Option<MetricsConfig> {
    check_keys(&section.entries, METRICS_KEYS, "in [metrics]", p);
    let Some(e) = find(&section.entries, "listen") else {
        p.push(Problem::new(
            section.loc.clone(),
            "[metrics] needs `listen`, like \"127.0.0.1:9443\"",
        ));
        return None;
    };
    locs.insert("metrics.listen".into(), e.node.loc.clone());
    let listen = as_socket_addr("listen", &e.node, None, p)?;
    Some(MetricsConfig { listen })
}

fn build_alert(
    section: &Section,
    locs: &mut BTreeMap<String, Location>,
    p: &mut Vec<Problem>,
) -> Option<AlertConfig> {
    let start = p.len();
    check_keys(&section.entries, ALERT_KEYS, "in [alert]", p);
    let mut alert = AlertConfig {
        command: None,
        webhook: None,
    };
    for e in &section.entries {
        match e.key.as_str() {
            "command" => alert.command = as_argv("command", &e.node, p),
            "webhook" => {
                if let Some(url) = as_str("webhook", &e.node, p) {
                    match check_url(url, true) {
                        Ok(()) => alert.webhook = Some(url.to_string()),
                        Err(why) => {
                            p.push(Problem::new(e.node.loc.clone(), format!("`webhook` {why}")))
                        }
                    }
                }
            }
            _ => continue,
        }
        locs.insert(format!("alert.{}", e.key), e.node.loc.clone());
    }
    if find(&section.entries, "command").is_none() && find(&section.entries, "webhook").is_none() {
        p.push(Problem::new(
            section.loc.clone(),
            "[alert] needs `command`, `webhook` or both",
        ));
    }
    (p.len() == start).then_some(alert)
}

fn build_discovery(
    section: &Section,
    defaults: &[Entry],
    locs: &mut BTreeMap<String, Location>,
    p: &mut Vec<Problem>,
) -> Option<DiscoveryConfig> {
    let start = p.len();
    check_keys(&section.entries, DISCOVERY_KEYS, "in [discovery]", p);
    let alert_before = alert_before_of(&section.entries, defaults, p);
    let Some(e) = find(&section.entries, "paths") else {
        p.push(Problem::new(
            section.loc.clone(),
            "[discovery] needs `paths`, the directories to scan",
        ));
        return None;
    };
    locs.insert("discovery.paths".into(), e.node.loc.clone());
    let mut paths: Vec<PathBuf> = Vec::new();
    for (s, loc) in as_str_list("paths", &e.node, p).unwrap_or_default() {
        let path = PathBuf::from(s);
        if !path.is_absolute() {
            p.push(Problem::new(
                loc.clone(),
                format!("each of `paths` must be an absolute path, found `{s}`"),
            ));
        } else if paths.contains(&path) {
            p.push(Problem::new(
                loc.clone(),
                format!("`{s}` is listed twice in `paths`"),
            ));
        } else {
            paths.push(path);
        }
    }
    (p.len() == start).then_some(DiscoveryConfig {
        paths,
        alert_before,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xn_labels_must_be_valid_punycode() {
        // Valid A-labels (bücher.example, 例え.jp) pass, as written.
        for ok in [
            "xn--bcher-kva.example",
            "www.xn--r8jz45g.jp",
            "*.xn--bcher-kva.example",
        ] {
            assert_eq!(normalize_identifier(ok).as_deref(), Ok(ok), "{ok}");
        }
        // Punycode that does not decode, one that decodes to plain ASCII (never an A-label),
        // and a bare prefix.
        for (bad, label) in [
            ("www.xn--99999999999.example", "xn--99999999999"),
            ("xn--abc-.example", "xn--abc-"),
            ("xn--abc-9.example", "xn--abc-9"),
        ] {
            let e = normalize_identifier(bad).expect_err(bad);
            assert!(
                e.contains(&format!("`{label}`")) && e.contains("not valid punycode")
                    || e.contains("starts or ends with `-`"),
                "{bad}: {e}"
            );
        }
    }

    const MAIN: &str = "/etc/renewd/renewd.toml";
    const DROPIN: &str = "/etc/renewd/conf.d/10-api.toml";

    /// The SPEC's example, verbatim.
    const SPEC_EXAMPLE: &str = r#"state_dir = "/var/lib/renewd"              # accounts, per-certificate state, swap journal, lock
control_socket = "/run/renewd/control.sock"
max_concurrent_renewals = 4

[metrics]
listen = "127.0.0.1:9443"                  # Prometheus text exposition on /metrics; optional

[alert]                                    # optional; both may be set
command = ["/usr/local/bin/page-oncall"]   # argv, gets the alert as JSON on stdin
webhook = "https://alerts.example.org/hook" # POSTed the same JSON

[ca.letsencrypt]
directory = "https://acme-v02.api.letsencrypt.org/directory"
contact = ["mailto:ops@example.org"]
accept_terms = true
# trust_roots = "/etc/renewd/private-ca.pem" # extra roots for a private ACME server's HTTPS
# eab_kid = "kid-1"                          # external account binding
# eab_hmac_key_file = "/etc/renewd/eab.key"  # secrets come from files (or $CREDENTIALS_DIRECTORY), never inline
# profile = "shortlived"                     # ACME profile to request, if the CA offers it

[defaults]                                 # any [[certificate]] key but name and domains; a certificate overrides it
ca = ["letsencrypt"]                       # ordered: later entries are fallbacks when the first keeps failing
key_type = "ecdsa-p256"                    # ecdsa-p256 | ecdsa-p384 | rsa-2048 | rsa-3072 | rsa-4096
renew_before = "1/3"                       # fraction of lifetime left, or a duration ("30d", "36h")
owner = "platform@example.org"             # who answers for the certificate

[[certificate]]
name = "www"                               # unique; [a-z0-9._-]
domains = ["example.org", "www.example.org"]  # DNS names, wildcards (dns-01 only), IP addresses
service = "nginx"                          # what depends on it (inventory, alerts)
challenge = { type = "http-01", webroot = "/var/www/html" }
# challenge = { type = "http-01", listen = "[::]:80" }                      # built-in server
# challenge = { type = "dns-01", hook = ["/usr/local/bin/dns-txt"] }        # hook sets/clears the TXT record
# challenge = { type = "dns-01", rfc2136 = { server = "10.0.0.53:53", tsig_key_file = "/etc/renewd/tsig.key" } }
# challenge = { type = "tls-alpn-01", listen = "[::]:443" }
files = { fullchain = "/etc/nginx/tls/www.pem", key = "/etc/nginx/tls/www.key" }
# files keys: cert (leaf), chain (intermediates), fullchain, key, combined (key + fullchain, for HAProxy)
user = "root"
group = "ssl-cert"
key_mode = "0640"                          # never wider than 0640; default 0600
reload = [["systemctl", "reload", "nginx"]]  # argv lists, no shell; run once per batch even when many certificates share them
verify = { connect = "127.0.0.1:443", server_name = "example.org" }  # after reload, the service must serve the new certificate

[[exception]]                              # a certificate renewd cannot renew, tracked on purpose
path = "/etc/appliance/legacy.pem"
owner = "netops@example.org"
reason = "vendor appliance, manual import only"
review_by = "2027-03-01"

[discovery]
paths = ["/etc/ssl", "/etc/nginx"]          # scanned and watched for certificates nobody manages
"#;

    /// The SPEC example with the parts this version cannot act on commented out, so
    /// that line numbers stay the same.
    fn supported_example() -> String {
        const UNSUPPORTED_LINES: &[usize] = &[5, 6, 8, 9, 10, 44, 45, 46, 47, 48, 50, 51];
        SPEC_EXAMPLE
            .lines()
            .enumerate()
            .map(|(i, line)| {
                if UNSUPPORTED_LINES.contains(&(i + 1)) {
                    format!("# {line}\n")
                } else {
                    format!("{line}\n")
                }
            })
            .collect()
    }

    /// One CA and one certificate; tests append keys to the certificate at line 10.
    const BASE: &str = r#"[ca.le]
directory = "https://acme.example.org/directory"
accept_terms = true

[[certificate]]
name = "www"
domains = ["example.org", "www.example.org"]
challenge = { type = "http-01", webroot = "/var/www/html" }
files = { fullchain = "/etc/tls/www.pem", key = "/etc/tls/www.key" }
"#;

    fn with_cert(extra: &str) -> String {
        format!("{BASE}{extra}")
    }

    fn load_one(text: &str) -> Result<Config, ConfigError> {
        load_from_sources(&[(PathBuf::from(MAIN), text.to_string())])
    }

    fn load_ok(text: &str) -> Config {
        match load_one(text) {
            Ok(config) => config,
            Err(e) => panic!("expected the configuration to load, got:\n{e}"),
        }
    }

    fn problems_of(result: Result<Config, ConfigError>) -> Vec<String> {
        match result {
            Ok(_) => panic!("expected the configuration to be rejected"),
            Err(e) => e.problems.iter().map(ToString::to_string).collect(),
        }
    }

    fn problems(text: &str) -> Vec<String> {
        problems_of(load_one(text))
    }

    /// Asserts that `text` fails with exactly one problem, at `line:col` of the main
    /// file, whose message contains `needle`.
    fn assert_only(text: &str, line: usize, col: usize, needle: &str) {
        let found = problems(text);
        assert_eq!(found.len(), 1, "expected one problem, got {found:#?}");
        let prefix = format!("{MAIN}:{line}:{col}: ");
        assert!(
            found[0].starts_with(&prefix) && found[0].contains(needle),
            "expected `{prefix}…{needle}…`, got {found:#?}"
        );
    }

    fn assert_has(found: &[String], file: &str, line: usize, col: usize, needle: &str) {
        let prefix = format!("{file}:{line}:{col}: ");
        assert!(
            found
                .iter()
                .any(|p| p.starts_with(&prefix) && p.contains(needle)),
            "expected `{prefix}…{needle}…` in {found:#?}"
        );
    }

    fn loc(line: usize, col: usize) -> Location {
        Location::new(MAIN, line, col)
    }

    // --- whole files ------------------------------------------------------------------

    #[test]
    fn spec_example_without_unsupported_parts_loads() {
        let config = load_ok(&supported_example());
        assert_eq!(config.state_dir, Path::new("/var/lib/renewd"));
        assert_eq!(config.control_socket, Path::new("/run/renewd/control.sock"));
        assert_eq!(config.max_concurrent_renewals, 4);
        let ca = &config.cas["letsencrypt"];
        assert_eq!(
            ca.directory,
            "https://acme-v02.api.letsencrypt.org/directory"
        );
        assert_eq!(ca.contact, ["mailto:ops@example.org"]);
        assert!(ca.accept_terms);
        assert_eq!(ca.location, loc(12, 1));
        let www = config.certificate("www").expect("certificate www");
        assert_eq!(www.domains, ["example.org", "www.example.org"]);
        assert_eq!(www.ca, ["letsencrypt"]);
        assert_eq!(www.owner.as_deref(), Some("platform@example.org"));
        assert_eq!(www.service.as_deref(), Some("nginx"));
        assert_eq!(www.key_type, KeyType::EcdsaP256);
        assert_eq!(www.renew_before, RenewBefore::Fraction(1.0 / 3.0));
        assert_eq!(www.challenge.certificate, "www");
        assert_eq!(www.challenge.domains, www.domains);
        assert_eq!(www.challenge.rules.len(), 1);
        assert_eq!(www.challenge.rules[0].pattern, None);
        assert_eq!(
            www.challenge.rules[0].config,
            ChallengeConfig::Http01Webroot {
                webroot: "/var/www/html".into(),
                trust_owner: false,
            }
        );
        assert_eq!(
            www.files.iter().collect::<Vec<_>>(),
            [
                (FileKind::Fullchain, Path::new("/etc/nginx/tls/www.pem")),
                (FileKind::Key, Path::new("/etc/nginx/tls/www.key")),
            ]
        );
        assert_eq!(www.user.as_deref(), Some("root"));
        assert_eq!(www.group.as_deref(), Some("ssl-cert"));
        assert_eq!(www.key_mode, 0o640);
        assert_eq!(www.reload, [["systemctl", "reload", "nginx"]]);
        assert_eq!(www.reload_timeout, Duration::from_secs(60));
        assert_eq!(
            www.verify,
            Some(VerifyConfig {
                connect: "127.0.0.1:443".into(),
                server_name: "example.org".into(),
                timeout: Duration::from_secs(30),
            })
        );
        assert_eq!(www.location, loc(27, 1));
        assert_eq!(config.sources, [PathBuf::from(MAIN)]);
        assert!(config.metrics.is_none() && config.alert.is_none());
        assert!(config.exceptions.is_empty() && config.discovery.is_none());
    }

    #[test]
    fn spec_example_loads_its_governance_sections() {
        let config = load_ok(SPEC_EXAMPLE);
        assert_eq!(
            config.metrics.as_ref().map(|m| m.listen),
            Some("127.0.0.1:9443".parse().expect("addr"))
        );
        let alert = config.alert.as_ref().expect("[alert]");
        assert_eq!(
            alert.command.as_deref(),
            Some(&["/usr/local/bin/page-oncall".to_string()][..])
        );
        assert_eq!(
            alert.webhook.as_deref(),
            Some("https://alerts.example.org/hook")
        );
        assert_eq!(config.exceptions.len(), 1);
        assert_eq!(config.exceptions[0].owner, "netops@example.org");
        assert_eq!(config.exceptions[0].review_by, "2027-03-01");
        assert_eq!(config.exceptions[0].location, loc(44, 1));
        assert_eq!(
            config.discovery.as_ref().map(|d| d.paths.clone()),
            Some(vec![PathBuf::from("/etc/ssl"), PathBuf::from("/etc/nginx")])
        );
    }

    #[test]
    fn empty_file_gives_defaults() {
        let config = load_ok("");
        assert_eq!(config.state_dir, Path::new(DEFAULT_STATE_DIR));
        assert_eq!(config.control_socket, Path::new(DEFAULT_CONTROL_SOCKET));
        assert_eq!(config.max_concurrent_renewals, 4);
        assert!(config.cas.is_empty() && config.certificates.is_empty());
    }

    #[test]
    fn problems_display_one_per_line() {
        let e = load_one("state_dir = 1\ncontrol_socket = \"run\"\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "{MAIN}:1:13: `state_dir` must be a string, found an integer\n\
                 {MAIN}:2:18: `control_socket` must be an absolute path, found `run`"
            )
        );
    }

    // --- syntax and types -------------------------------------------------------------

    #[test]
    fn toml_syntax_error_has_position() {
        assert_only(
            "state_dir = \"/x\"\nmax_concurrent_renewals = = 4\n",
            2,
            27,
            "invalid TOML",
        );
    }

    #[test]
    fn toml_duplicate_key_in_one_file() {
        assert_only(
            "state_dir = \"/a\"\nstate_dir = \"/b\"\n",
            2,
            1,
            "duplicate key",
        );
    }

    #[test]
    fn column_counts_characters_not_bytes() {
        assert_only("# é\nowner = \"ü\"; x = 1\n", 2, 12, "invalid TOML");
    }

    #[test]
    fn wrong_type_names_both_types() {
        assert_only(
            "max_concurrent_renewals = \"4\"\n",
            1,
            27,
            "`max_concurrent_renewals` must be an integer, found a string",
        );
        assert_only(
            &with_cert("owner = [\"a\"]\n"),
            10,
            9,
            "`owner` must be a string, found an array",
        );
    }

    #[test]
    fn log_level_is_checked() {
        assert_eq!(
            load_ok("log_level = \"debug\"\n").log_level.as_deref(),
            Some("debug")
        );
        assert_eq!(load_ok("").log_level, None);
        assert_only(
            "log_level = \"loud\"\n",
            1,
            13,
            "must be one of error, warn",
        );
    }

    #[test]
    fn max_concurrent_renewals_range() {
        assert_only("max_concurrent_renewals = 0\n", 1, 27, "between 1 and 1024");
        assert_only(
            "max_concurrent_renewals = 1025\n",
            1,
            27,
            "between 1 and 1024",
        );
        assert_eq!(
            load_ok("max_concurrent_renewals = 1024\n").max_concurrent_renewals,
            1024
        );
    }

    #[test]
    fn single_bracket_certificate_is_explained() {
        assert_only(
            "[certificate]\nname = \"x\"\n",
            1,
            1,
            "write [[certificate]] with double brackets",
        );
    }

    // --- unknown keys -----------------------------------------------------------------

    #[test]
    fn unknown_key_in_certificate_suggests() {
        let found = problems(&with_cert("renew_befor = \"30d\"\n"));
        assert_eq!(
            found,
            [format!(
                "{MAIN}:10:1: unknown key `renew_befor` in [[certificate]]; did you mean `renew_before`?"
            )]
        );
    }

    #[test]
    fn unknown_keys_at_every_level() {
        let text = r#"stat_dir = "/x"
[ca.le]
directory = "https://acme.example.org/directory"
accept_terms = true
contacts = []
[defaults]
key_typ = "rsa-2048"
[[certificate]]
name = "www"
domains = ["example.org"]
challenge = { type = "http-01", webrot = "/srv" }
files = { fullchian = "/a", key = "/b" }
"#;
        let found = problems(text);
        assert_has(
            &found,
            MAIN,
            1,
            1,
            "unknown key `stat_dir` at the top level; did you mean `state_dir`?",
        );
        assert_has(
            &found,
            MAIN,
            5,
            1,
            "unknown key `contacts` in [ca.le]; did you mean `contact`?",
        );
        assert_has(
            &found,
            MAIN,
            7,
            1,
            "unknown key `key_typ` in [defaults]; did you mean `key_type`?",
        );
        assert_has(
            &found,
            MAIN,
            11,
            33,
            "unknown key `webrot` in `challenge`; did you mean `webroot`?",
        );
        assert_has(
            &found,
            MAIN,
            12,
            11,
            "unknown key `fullchian` in `files`; did you mean `fullchain`?",
        );
    }

    #[test]
    fn unknown_keys_in_optional_sections() {
        let text = "[metrics]\nlisten = \"127.0.0.1:9443\"\nport = 1\n[alert]\nwebhok = \"https://a.example/\"\n[discovery]\npath = []\n";
        let found = problems(text);
        assert_has(&found, MAIN, 3, 1, "unknown key `port` in [metrics]");
        assert_has(
            &found,
            MAIN,
            5,
            1,
            "unknown key `webhok` in [alert]; did you mean `webhook`?",
        );
        assert_has(
            &found,
            MAIN,
            7,
            1,
            "unknown key `path` in [discovery]; did you mean `paths`?",
        );
    }

    #[test]
    fn unknown_key_without_a_close_match_has_no_suggestion() {
        let found = problems(&with_cert("xyzzy = 1\n"));
        assert_eq!(
            found,
            [format!(
                "{MAIN}:10:1: unknown key `xyzzy` in [[certificate]]"
            )]
        );
    }

    #[test]
    fn inline_secrets_point_to_file_variant() {
        let text = r#"[ca.le]
directory = "https://acme.example.org/directory"
accept_terms = true
eab_hmac_key = "c2VjcmV0"
"#;
        assert_only(text, 4, 1, "use `eab_hmac_key_file`");
        let text = with_cert(
            "challenge = { type = \"dns-01\", rfc2136 = { server = \"10.0.0.53\", tsig_key = \"x\" } }\n",
        )
        .replace("challenge = { type = \"http-01\", webroot = \"/var/www/html\" }\n", "");
        let found = problems(&text);
        assert_has(&found, MAIN, 9, 66, "unknown key `tsig_key` in `rfc2136`");
        assert_has(&found, MAIN, 9, 66, "use `tsig_key_file`");
    }

    // --- conf.d merging ---------------------------------------------------------------

    const API_DROPIN: &str = r#"[[certificate]]
name = "api"
domains = ["api.example.org"]
challenge = { type = "http-01", listen = "[::]:80" }
files = { combined = "/etc/haproxy/api.pem" }
"#;

    #[test]
    fn conf_d_appends_certificates_in_order() {
        let config = load_from_sources(&[
            (MAIN.into(), BASE.to_string()),
            (DROPIN.into(), API_DROPIN.to_string()),
        ])
        .expect("loads");
        let names: Vec<&str> = config
            .certificates
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(names, ["www", "api"]);
        assert_eq!(config.sources, [PathBuf::from(MAIN), PathBuf::from(DROPIN)]);
        let api = config.certificate("api").expect("api");
        assert_eq!(api.location, Location::new(DROPIN, 1, 1));
        assert_eq!(api.ca, ["le"]);
        assert_eq!(
            api.challenge.rules[0].config,
            ChallengeConfig::Http01Listen {
                listen: "[::]:80".parse().expect("addr")
            }
        );
    }

    #[test]
    fn conf_d_key_set_twice_names_both_places() {
        let found = problems_of(load_from_sources(&[
            (
                MAIN.into(),
                "# main\n\nstate_dir = \"/var/lib/renewd\"\n".into(),
            ),
            (DROPIN.into(), "state_dir = \"/srv/renewd\"\n".into()),
        ]));
        assert_eq!(
            found,
            [format!(
                "{DROPIN}:1:1: `state_dir` is set again here; first set at {MAIN}:3:1"
            )]
        );
    }

    #[test]
    fn conf_d_ca_and_defaults_set_twice() {
        let found = problems_of(load_from_sources(&[
            (MAIN.into(), format!("{BASE}[defaults]\nowner = \"a\"\n")),
            (
                DROPIN.into(),
                "[defaults]\nowner = \"b\"\nservice = \"x\"\n[ca.le]\ndirectory = \"https://b.example/\"\naccept_terms = true\n".into(),
            ),
        ]));
        assert_eq!(found.len(), 2, "{found:#?}");
        assert_has(
            &found,
            DROPIN,
            2,
            1,
            &format!("`defaults.owner` is set again here; first set at {MAIN}:11:1"),
        );
        assert_has(
            &found,
            DROPIN,
            4,
            1,
            &format!("`[ca.le]` is defined again here; first defined at {MAIN}:1:1"),
        );
    }

    #[test]
    fn conf_d_tables_merge_disjoint_keys() {
        let config = load_from_sources(&[
            (MAIN.into(), format!("{BASE}[defaults]\nowner = \"a\"\n")),
            (
                DROPIN.into(),
                format!("[defaults]\nservice = \"web\"\n{API_DROPIN}"),
            ),
        ])
        .expect("loads");
        let api = config.certificate("api").expect("api");
        assert_eq!(api.owner.as_deref(), Some("a"));
        assert_eq!(api.service.as_deref(), Some("web"));
        assert_eq!(api.key_locations["service"], Location::new(DROPIN, 2, 11));
    }

    #[test]
    fn duplicate_certificate_name_across_files() {
        let dropin = API_DROPIN.replace("\"api\"", "\"www\"");
        let found = problems_of(load_from_sources(&[
            (MAIN.into(), BASE.to_string()),
            (DROPIN.into(), dropin),
        ]));
        assert_eq!(
            found,
            [format!(
                "{DROPIN}:2:8: certificate name `www` is used again here; first used at {MAIN}:6:8"
            )]
        );
    }

    #[test]
    fn same_file_written_by_two_certificates() {
        let dropin = API_DROPIN.replace("/etc/haproxy/api.pem", "/etc/tls/www.pem");
        let found = problems_of(load_from_sources(&[
            (MAIN.into(), BASE.to_string()),
            (DROPIN.into(), dropin),
        ]));
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_has(
            &found,
            DROPIN,
            5,
            22,
            "is also written by certificate `www`",
        );
    }

    // --- [defaults] -------------------------------------------------------------------

    #[test]
    fn defaults_are_inherited_and_overridden() {
        let text = r#"[ca.le]
directory = "https://acme.example.org/directory"
accept_terms = true
[defaults]
key_type = "rsa-2048"
renew_before = "30d"
challenge = { type = "http-01", webroot = "/var/www/html" }
reload = [["systemctl", "reload", "nginx"]]
[[certificate]]
name = "a"
domains = ["a.example.org"]
files = { cert = "/etc/tls/a.crt", key = "/etc/tls/a.key" }
[[certificate]]
name = "b"
domains = ["b.example.org"]
key_type = "ecdsa-p384"
reload = []
files = { cert = "/etc/tls/b.crt", key = "/etc/tls/b.key" }
"#;
        let config = load_ok(text);
        let a = config.certificate("a").expect("a");
        let b = config.certificate("b").expect("b");
        assert_eq!(a.key_type, KeyType::Rsa2048);
        assert_eq!(b.key_type, KeyType::EcdsaP384);
        assert_eq!(
            a.renew_before,
            RenewBefore::Duration(Duration::from_secs(30 * 86400))
        );
        assert_eq!(b.renew_before, a.renew_before);
        assert_eq!(a.reload, [["systemctl", "reload", "nginx"]]);
        assert!(b.reload.is_empty());
        assert_eq!(a.key_locations["challenge"], loc(7, 13));
        assert_eq!(a.key_locations["reload.0"], loc(8, 11));
        assert_eq!(b.key_locations["key_type"], loc(16, 12));
        assert_eq!(a.key_location("files.cert"), &loc(12, 18));
        assert_eq!(a.key_location("user"), &loc(9, 1));
    }

    #[test]
    fn defaults_reject_name_and_domains() {
        let found = problems(&format!(
            "{BASE}[defaults]\nname = \"x\"\ndomains = [\"a.example\"]\n"
        ));
        assert_eq!(found.len(), 2, "{found:#?}");
        assert_has(&found, MAIN, 11, 1, "`name` cannot be set in [defaults]");
        assert_has(&found, MAIN, 12, 1, "`domains` cannot be set in [defaults]");
    }

    #[test]
    fn bad_default_is_reported_once_even_when_inherited_twice() {
        let text = format!(
            "{BASE}[[certificate]]\nname = \"two\"\ndomains = [\"two.example\"]\nfiles = {{ combined = \"/etc/tls/two.pem\" }}\nchallenge = {{ type = \"http-01\", listen = \"0.0.0.0:80\" }}\n[defaults]\nkey_type = \"ed25519\"\n"
        );
        let found = problems(&text);
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_has(&found, MAIN, 16, 12, "unknown `key_type` `ed25519`; valid types are ecdsa-p256, ecdsa-p384, rsa-2048, rsa-3072, rsa-4096");
    }

    // --- certificates -----------------------------------------------------------------

    #[test]
    fn missing_required_keys_point_at_the_header() {
        let text = "[ca.le]\ndirectory = \"https://a.example/\"\naccept_terms = true\n\n[[certificate]]\nname = \"x\"\n";
        let found = problems(text);
        assert_eq!(found.len(), 3, "{found:#?}");
        assert_has(&found, MAIN, 5, 1, "certificate `x` has no `domains`");
        assert_has(
            &found,
            MAIN,
            5,
            1,
            "certificate `x` has no `challenge`; set it here or in [defaults]",
        );
        assert_has(&found, MAIN, 5, 1, "certificate `x` has no `files`");
    }

    #[test]
    fn certificate_name_rules() {
        let base = BASE.replace("name = \"www\"", "name = \"WWW\"");
        assert_only(
            &base,
            6,
            8,
            "certificate name `WWW` may only contain a-z, 0-9",
        );
        let base = BASE.replace("name = \"www\"", "name = \"..\"");
        assert_only(&base, 6, 8, "must not be `.` or `..`");
        let base = BASE.replace("name = \"www\"", "name = \"a.b_c-1\"");
        assert_eq!(load_ok(&base).certificates[0].name, "a.b_c-1");
    }

    #[test]
    fn domains_are_normalized() {
        let text = BASE.replace(
            "[\"example.org\", \"www.example.org\"]",
            "[\"Example.ORG.\", \"2001:DB8::0:1\", \"192.0.2.1\"]",
        );
        let config = load_ok(&text);
        assert_eq!(
            config.certificates[0].domains,
            ["example.org", "2001:db8::1", "192.0.2.1"]
        );
    }

    #[test]
    fn bad_domains_are_pinpointed() {
        let text = BASE.replace(
            "[\"example.org\", \"www.example.org\"]",
            "[\"example.org\", \"EXAMPLE.org\", \"-a.example\", \"a..b\", \"f*.example.org\", \"1.2.3\"]",
        );
        let found = problems(&text);
        assert_eq!(found.len(), 5, "{found:#?}");
        assert_has(
            &found,
            MAIN,
            7,
            27,
            "`example.org` is listed twice in `domains`",
        );
        assert_has(&found, MAIN, 7, 42, "starts or ends with `-`");
        assert_has(&found, MAIN, 7, 56, "empty label");
        assert_has(
            &found,
            MAIN,
            7,
            64,
            "a wildcard must be the whole leftmost label",
        );
        assert_has(
            &found,
            MAIN,
            7,
            82,
            "neither a valid IP address nor a DNS name",
        );
        assert_only(
            &BASE.replace("[\"example.org\", \"www.example.org\"]", "[]"),
            7,
            11,
            "at least one",
        );
    }

    #[test]
    fn wildcard_needs_dns01() {
        let text = BASE.replace("\"www.example.org\"", "\"*.example.org\"");
        assert_only(
            &text,
            7,
            27,
            "wildcard `*.example.org` needs a dns-01 challenge",
        );
    }

    #[test]
    fn wildcard_with_dns01_loads() {
        let text = BASE
            .replace("\"www.example.org\"", "\"*.example.org\"")
            .replace(
                "{ type = \"http-01\", webroot = \"/var/www/html\" }",
                "{ type = \"dns-01\", hook = [\"/usr/local/bin/dns-txt\"], propagation_wait = \"30s\" }",
            );
        let config = load_ok(&text);
        assert_eq!(
            config.certificates[0].domains,
            ["example.org", "*.example.org"]
        );
    }

    #[test]
    fn no_ca_at_all_is_an_error_at_the_certificate() {
        let text = BASE.replace(
            "[ca.le]\ndirectory = \"https://acme.example.org/directory\"\naccept_terms = true\n",
            "\n\n\n",
        );
        assert_only(
            &text,
            5,
            1,
            "certificate `www` has no CA: define one in a [ca.NAME] table",
        );
    }

    #[test]
    fn several_cas_need_an_explicit_choice() {
        let two = BASE.replace(
            "[[certificate]]",
            "[ca.other]\ndirectory = \"https://other.example/dir\"\naccept_terms = true\n[[certificate]]",
        );
        assert_only(&two, 8, 1, "must choose its CA with `ca = [...]`");
        let chosen = format!("{two}ca = [\"other\", \"le\"]\n");
        assert_eq!(load_ok(&chosen).certificates[0].ca, ["other", "le"]);
    }

    #[test]
    fn unknown_or_repeated_ca_reference() {
        assert_only(
            &with_cert("ca = [\"lee\"]\n"),
            10,
            7,
            "`lee` is not a defined CA; did you mean `le`?",
        );
        assert_only(
            &with_cert("ca = [\"le\", \"le\"]\n"),
            10,
            13,
            "`le` is listed twice in `ca`",
        );
        assert_only(
            &with_cert("ca = []\n"),
            10,
            6,
            "`ca` must name at least one CA",
        );
    }

    #[test]
    fn challenge_shapes() {
        let replace = |challenge: &str| {
            BASE.replace(
                "{ type = \"http-01\", webroot = \"/var/www/html\" }",
                challenge,
            )
        };
        assert_only(
            &replace("{ type = \"http-01\", webroot = \"/srv\", listen = \"[::]:80\" }"),
            8,
            51,
            "takes `webroot` or `listen`, not both",
        );
        assert_only(&replace("{ type = \"http-01\" }"), 8, 13, "needs `webroot`");
        assert_only(
            &replace("{ type = \"http01\", webroot = \"/srv\" }"),
            8,
            22,
            "unknown challenge type `http01`; valid types are http-01, dns-01, tls-alpn-01; did you mean `http-01`?",
        );
        assert_only(
            &replace("{ webroot = \"/srv\" }"),
            8,
            13,
            "`challenge` needs a `type`",
        );
        assert_only(
            &replace("{ type = \"http-01\", webroot = \"srv\" }"),
            8,
            43,
            "`webroot` must be an absolute path, found `srv`",
        );
        assert_only(
            &replace("{ type = \"http-01\", hook = [\"/x\"], webroot = \"/srv\" }"),
            8,
            33,
            "`hook` does not apply to the http-01 challenge",
        );
        assert_only(
            &replace("{ type = \"http-01\", listen = \"80\" }"),
            8,
            42,
            "must be an IP address and port",
        );
        assert_only(
            &replace("\"http-01\""),
            8,
            13,
            "`challenge` must be a table like",
        );
    }

    #[test]
    fn every_challenge_type_loads() {
        let hook = BASE.replace(
            "{ type = \"http-01\", webroot = \"/var/www/html\" }",
            "{ type = \"dns-01\", hook = [\"/usr/local/bin/dns-txt\"], propagation_wait = \"30s\" }",
        );
        let config = load_ok(&hook);
        assert_eq!(
            config.certificates[0].challenge.rules[0].config,
            ChallengeConfig::Dns01Hook {
                hook: vec!["/usr/local/bin/dns-txt".into()],
                propagation_wait: Duration::from_secs(30),
            }
        );
        let alpn = BASE.replace(
            "{ type = \"http-01\", webroot = \"/var/www/html\" }",
            "{ type = \"tls-alpn-01\", listen = \"[::]:443\" }",
        );
        let config = load_ok(&alpn);
        assert_eq!(
            config.certificates[0].challenge.rules[0].config,
            ChallengeConfig::TlsAlpn01 {
                listen: "[::]:443".parse().expect("addr")
            }
        );
        let text = BASE.replace(
            "{ type = \"http-01\", webroot = \"/var/www/html\" }",
            "{ type = \"dns-01\", rfc2136 = { server = \"10.0.0.53\", tsig_key_file = \"/etc/renewd/tsig.key\" } }",
        );
        let config = load_ok(&text);
        assert_eq!(
            config.certificates[0].challenge.rules[0].config,
            ChallengeConfig::Dns01Rfc2136 {
                server: "10.0.0.53:53".parse().expect("addr"),
                tsig_key_file: Some("/etc/renewd/tsig.key".into()),
                propagation_wait: Duration::ZERO,
            }
        );
    }

    fn per_name(challenge: &str, domains: &str) -> String {
        BASE.replace(
            "challenge = { type = \"http-01\", webroot = \"/var/www/html\" }",
            challenge,
        )
        .replace("[\"example.org\", \"www.example.org\"]", domains)
    }

    #[test]
    fn per_name_challenges_pick_the_most_specific_entry() {
        let text = per_name(
            r#"challenge = { "*.example.org" = { type = "dns-01", hook = ["/bin/true"] }, "example.org" = { type = "http-01", listen = "127.0.0.1:80" }, "*" = { type = "tls-alpn-01", listen = "127.0.0.1:443" } }"#,
            r#"["example.org", "*.example.org", "www.example.org", "other.test", "192.0.2.1"]"#,
        );
        let config = load_ok(&text);
        let c = &config.certificates[0].challenge;
        let kind = |name: &str| c.for_name(name).map(|r| r.config.kind());
        assert_eq!(kind("example.org"), Some("http-01"));
        assert_eq!(kind("*.example.org"), Some("dns-01"));
        assert_eq!(kind("www.example.org"), Some("dns-01"));
        assert_eq!(kind("a.www.example.org"), Some("tls-alpn-01"));
        assert_eq!(kind("other.test"), Some("tls-alpn-01"));
        assert_eq!(kind("192.0.2.1"), Some("tls-alpn-01"));
        assert_eq!(
            c.for_name("*.example.org").map(|r| r.key.as_str()),
            Some("challenge.\"*.example.org\"")
        );
    }

    #[test]
    fn per_name_challenge_errors_point_at_the_place() {
        // A name no entry covers.
        let text = per_name(
            r#"challenge = { "example.org" = { type = "http-01", listen = "127.0.0.1:80" } }"#,
            r#"["example.org", "www.example.org"]"#,
        );
        assert_only(
            &text,
            7,
            27,
            "no entry of `challenge` covers `www.example.org`",
        );
        // A wildcard through http-01 by its entry.
        let text = per_name(
            r#"challenge = { "*.example.org" = { type = "http-01", listen = "127.0.0.1:80" } }"#,
            r#"["*.example.org"]"#,
        );
        assert_only(
            &text,
            7,
            12,
            "wildcard `*.example.org` needs a dns-01 challenge, not http-01",
        );
        // An entry that covers nothing (a typo).
        let text = per_name(
            r#"challenge = { "example.org" = { type = "http-01", listen = "127.0.0.1:80" }, "exmaple.org" = { type = "http-01", listen = "127.0.0.1:80" } }"#,
            r#"["example.org"]"#,
        );
        assert_only(
            &text,
            8,
            78,
            "the `challenge` entry `exmaple.org` covers none of `domains`",
        );
        // A bad key, and a bad entry inside.
        let text = per_name(
            r#"challenge = { "exa mple.org" = { type = "http-01", listen = "127.0.0.1:80" }, "*" = { type = "http-01", lisen = "127.0.0.1:80" } }"#,
            r#"["example.org"]"#,
        );
        let found = problems(&text);
        assert_has(
            &found,
            MAIN,
            8,
            15,
            "`challenge` keys are names a challenge covers",
        );
        assert_has(
            &found,
            MAIN,
            8,
            105,
            "unknown key `lisen` in `challenge.\"*\"`; did you mean `listen`?",
        );
        // An IP through dns-01.
        let text = per_name(
            r#"challenge = { "192.0.2.1" = { type = "dns-01", hook = ["/bin/true"] } }"#,
            r#"["192.0.2.1"]"#,
        );
        assert_only(
            &text,
            7,
            12,
            "IP address `192.0.2.1` cannot be validated with dns-01",
        );
    }

    #[test]
    fn files_rules() {
        let replace = |files: &str| {
            BASE.replace(
                "{ fullchain = \"/etc/tls/www.pem\", key = \"/etc/tls/www.key\" }",
                files,
            )
        };
        assert_only(
            &replace("{ fullchain = \"/etc/tls/www.pem\" }"),
            9,
            9,
            "somewhere to put the private key",
        );
        assert_only(
            &replace("{ key = \"/etc/tls/www.key\", chain = \"/etc/tls/c.pem\" }"),
            9,
            9,
            "somewhere to put the certificate",
        );
        assert_only(
            &replace("{ cert = \"/etc/tls/a.pem\", key = \"/etc/tls//a.pem\" }"),
            9,
            42,
            "`files.key` is the same file as `files.cert`",
        );
        assert_only(
            &replace("{ combined = \"tls/a.pem\" }"),
            9,
            22,
            "`combined` must be an absolute path",
        );
        assert_only(
            &replace("{ combined = \"/etc/tls/\" }"),
            9,
            22,
            "`combined` must name a file",
        );
        let config = load_ok(&replace(
            "{ combined = \"/etc/haproxy/www.pem\", chain = \"/etc/tls/chain.pem\" }",
        ));
        let kinds: Vec<(FileKind, bool)> = config.certificates[0]
            .files
            .iter()
            .map(|(kind, _)| (kind, kind.holds_key()))
            .collect();
        assert_eq!(
            kinds,
            [(FileKind::Chain, false), (FileKind::Combined, true)]
        );
    }

    #[test]
    fn key_mode_validation() {
        let mode = |value: &str| load_one(&with_cert(&format!("key_mode = {value}\n")));
        assert_eq!(
            mode("\"0640\"").expect("0640").certificates[0].key_mode,
            0o640
        );
        assert_eq!(
            mode("\"0600\"").expect("0600").certificates[0].key_mode,
            0o600
        );
        assert_eq!(
            mode("\"440\"").expect("440").certificates[0].key_mode,
            0o440
        );
        assert_eq!(
            mode("0o640").expect("0o640").certificates[0].key_mode,
            0o640
        );
        assert_eq!(load_ok(BASE).certificates[0].key_mode, 0o600);
        for wide in ["\"0644\"", "\"0660\"", "\"0700\"", "\"0641\"", "\"4600\""] {
            let found = problems_of(mode(wide));
            assert_eq!(found.len(), 1, "{wide}: {found:#?}");
            assert_has(&found, MAIN, 10, 12, "is wider than 0640");
        }
        assert_only(
            &with_cert("key_mode = 640\n"),
            10,
            12,
            "written as a string",
        );
        assert_only(
            &with_cert("key_mode = \"rw-r-----\"\n"),
            10,
            12,
            "octal mode like \"0640\"",
        );
        assert_only(
            &with_cert("key_mode = \"0680\"\n"),
            10,
            12,
            "octal mode like \"0640\"",
        );
    }

    #[test]
    fn renew_before_forms() {
        let rb = |value: &str| load_one(&with_cert(&format!("renew_before = {value}\n")));
        let get = |value: &str| rb(value).expect(value).certificates[0].renew_before;
        assert_eq!(get("\"1/3\""), RenewBefore::Fraction(1.0 / 3.0));
        assert_eq!(get("\"0.25\""), RenewBefore::Fraction(0.25));
        assert_eq!(get("0.5"), RenewBefore::Fraction(0.5));
        assert_eq!(
            get("\"36h\""),
            RenewBefore::Duration(Duration::from_secs(36 * 3600))
        );
        for bad in ["\"3/3\"", "\"0/3\"", "\"1.5\"", "\"0s\"", "\"soon\"", "30"] {
            let found = problems_of(rb(bad));
            assert_eq!(found.len(), 1, "{bad}: {found:#?}");
            assert_has(&found, MAIN, 10, 16, "renew_before");
        }
    }

    #[test]
    fn alert_before_in_defaults_certificate_exception_and_discovery() {
        let d = |days: u64| RenewBefore::Duration(Duration::from_secs(days * 86400));
        let text = format!(
            "[defaults]\nalert_before = \"20d\"\n{}\n[[certificate]]\nname = \"api\"\n\
             domains = [\"api.example.org\"]\nca = [\"le\"]\n\
             challenge = {{ type = \"http-01\", webroot = \"/var/www/html\" }}\n\
             files = {{ fullchain = \"/etc/tls/api.pem\", key = \"/etc/tls/api.key\" }}\n\
             alert_before = \"1/2\"\n\
             [[exception]]\npath = \"/etc/a.pem\"\nowner = \"o\"\nreason = \"r\"\n\
             review_by = \"2027-01-01\"\nalert_before = \"45d\"\n\
             [[exception]]\npath = \"/etc/b.pem\"\nowner = \"o\"\nreason = \"r\"\n\
             review_by = \"2027-01-01\"\n[discovery]\npaths = [\"/etc/ssl\"]\n",
            BASE.replace("[[certificate]]\n", "[[certificate]]\nca = [\"le\"]\n")
        );
        let config = load_ok(&text);
        assert_eq!(config.certificates[0].alert_before, Some(d(20)));
        assert_eq!(
            config.certificates[1].alert_before,
            Some(RenewBefore::Fraction(0.5))
        );
        assert_eq!(config.exceptions[0].alert_before, Some(d(45)));
        assert_eq!(config.exceptions[1].alert_before, Some(d(20)));
        assert_eq!(
            config.discovery.as_ref().and_then(|d| d.alert_before),
            Some(d(20))
        );
        let found = problems(&with_cert("alert_before = \"soon\"\n"));
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_has(&found, MAIN, 10, 16, "`alert_before` must be");
    }

    #[test]
    fn reload_rules() {
        assert_only(
            &with_cert("reload = [\"systemctl\", \"reload\", \"nginx\"]\n"),
            10,
            10,
            "write [[\"systemctl\", \"reload\", \"nginx\"]]",
        );
        assert_only(
            &with_cert("reload = [[\"a\"], []]\n"),
            10,
            18,
            "`reload` must not be empty",
        );
        assert_only(
            &with_cert("reload = [[\"\", \"x\"]]\n"),
            10,
            12,
            "the command in `reload` must not be empty",
        );
        assert_only(
            &with_cert("reload = [[\"a\", 1]]\n"),
            10,
            17,
            "each entry of `reload` must be a string, found an integer",
        );
        let config = load_ok(&with_cert("reload = [[\"a\"], [\"b\", \"c\"]]\n"));
        assert_eq!(config.certificates[0].reload, [vec!["a"], vec!["b", "c"]]);
        assert_eq!(
            config.certificates[0].key_locations["reload.1"],
            loc(10, 18)
        );
    }

    #[test]
    fn reload_timeout_bounds() {
        assert_eq!(
            load_ok(BASE).certificates[0].reload_timeout,
            Duration::from_secs(60)
        );
        let config = load_ok(&with_cert("reload_timeout = \"2m30s\"\n"));
        assert_eq!(
            config.certificates[0].reload_timeout,
            Duration::from_secs(150)
        );
        assert_only(
            &with_cert("reload_timeout = \"0s\"\n"),
            10,
            18,
            "must be at least 1s",
        );
        assert_only(
            &with_cert("reload_timeout = \"2h\"\n"),
            10,
            18,
            "must be at most 1h",
        );
        assert_only(
            &with_cert("reload_timeout = 60\n"),
            10,
            18,
            "must be a duration string like \"90s\", found an integer",
        );
    }

    #[test]
    fn verify_is_supported_with_a_default_timeout() {
        let config = load_ok(&with_cert(
            "verify = { connect = \"127.0.0.1:443\", server_name = \"WWW.Example.org.\" }\n",
        ));
        let cert = &config.certificates[0];
        assert_eq!(
            cert.verify,
            Some(VerifyConfig {
                connect: "127.0.0.1:443".into(),
                server_name: "www.example.org".into(),
                timeout: Duration::from_secs(30),
            })
        );
        assert_eq!(cert.key_locations["verify"], loc(10, 10));
        assert_eq!(cert.key_locations["verify.connect"], loc(10, 22));
        assert_eq!(cert.key_locations["verify.server_name"], loc(10, 53));
        assert!(config.unsupported().is_empty());

        let config = load_ok(&with_cert(
            "[certificate.verify]\nconnect = \"localhost:8443\"\nserver_name = \"192.0.2.7\"\ntimeout = \"2m\"\n",
        ));
        let verify = config.certificates[0].verify.clone().expect("verify");
        assert_eq!(verify.connect, "localhost:8443");
        assert_eq!(verify.server_name, "192.0.2.7");
        assert_eq!(verify.timeout, Duration::from_secs(120));
        assert_eq!(
            config.certificates[0].key_locations["verify.timeout"],
            loc(13, 11)
        );
    }

    #[test]
    fn verify_inherits_from_defaults() {
        let text = BASE.replace(
            "[[certificate]]",
            "[defaults]\nverify = { connect = \"[::1]:443\", server_name = \"example.org\", timeout = \"5s\" }\n\n[[certificate]]",
        );
        let config = load_ok(&text);
        let cert = &config.certificates[0];
        let verify = cert.verify.clone().expect("inherited verify");
        assert_eq!(verify.connect, "[::1]:443");
        assert_eq!(verify.timeout, Duration::from_secs(5));
        assert_eq!(cert.key_locations["verify.timeout"], loc(6, 74));
    }

    #[test]
    fn verify_values_are_checked() {
        let verify = |inner: &str| with_cert(&format!("verify = {{ {inner} }}\n"));
        assert_only(
            &verify("connect = \"127.0.0.1:443\", server_name = \"example.org\", timeout = \"0s\""),
            10,
            78,
            "`timeout` must be at least 1s",
        );
        assert_only(
            &verify("connect = \"127.0.0.1:443\", server_name = \"example.org\", timeout = \"2h\""),
            10,
            78,
            "`timeout` must be at most 1h",
        );
        assert_only(
            &verify("connect = \"127.0.0.1:443\", server_name = \"example.org\", timeout = 30"),
            10,
            78,
            "`timeout` must be a duration string like \"90s\", found an integer",
        );
        assert_only(
            &verify("connect = \"127.0.0.1:443\", server_name = \"example.org\", timout = \"5s\""),
            10,
            68,
            "unknown key `timout` in `verify`; did you mean `timeout`?",
        );
        assert_only(
            &verify("connect = \"127.0.0.1\", server_name = \"example.org\""),
            10,
            22,
            "`connect` must be `host:port`, like `127.0.0.1:443`, found `127.0.0.1`",
        );
        assert_only(
            &verify("connect = \"127.0.0.1:443\", server_name = \"*.example.org\""),
            10,
            53,
            "`server_name` must be a name the service answers to, not a wildcard",
        );
        assert_only(
            &verify("connect = \"127.0.0.1:443\", timeout = \"5s\""),
            10,
            10,
            "`verify` needs `server_name`",
        );
        assert_only(
            &with_cert("verify = \"127.0.0.1:443\"\n"),
            10,
            10,
            "`verify` must be",
        );
    }

    // --- CAs --------------------------------------------------------------------------

    #[test]
    fn ca_timeout_defaults_and_bounds() {
        assert_eq!(load_ok(BASE).cas["le"].timeout, DEFAULT_CA_TIMEOUT);
        let text = BASE.replace(
            "accept_terms = true",
            "accept_terms = true\ntimeout = \"5s\"",
        );
        assert_eq!(load_ok(&text).cas["le"].timeout, Duration::from_secs(5));
        let text = BASE.replace(
            "accept_terms = true",
            "accept_terms = true\ntimeout = \"0s\"",
        );
        assert_only(&text, 4, 11, "must be at least 1s");
        let text = BASE.replace(
            "accept_terms = true",
            "accept_terms = true\ntimeout = \"1h\"",
        );
        assert_only(&text, 4, 11, "must be at most 5m");
    }

    #[test]
    fn ari_is_asked_unless_turned_off() {
        assert!(load_ok(BASE).cas["le"].ari);
        let text = BASE.replace("accept_terms = true", "accept_terms = true\nari = false");
        assert!(!load_ok(&text).cas["le"].ari);
        let text = BASE.replace("accept_terms = true", "accept_terms = true\nari = \"no\"");
        assert_only(&text, 4, 7, "`ari` must be");
    }

    #[test]
    fn accept_terms_must_be_true() {
        let text = BASE.replace("accept_terms = true", "accept_terms = false");
        assert_only(&text, 3, 16, "renewd cannot register an account");
        let text = BASE.replace("accept_terms = true", "");
        assert_only(&text, 1, 1, "[ca.le] needs `accept_terms = true`");
    }

    #[test]
    fn directory_must_be_https_except_loopback() {
        let dir = |url: &str| BASE.replace("https://acme.example.org/directory", url);
        assert_only(
            &dir("http://acme.example.org/directory"),
            2,
            13,
            "must use https://",
        );
        assert_only(&dir("acme.example.org"), 2, 13, "is not a URL");
        assert_only(
            &dir("https://user:pw@acme.example.org/"),
            2,
            13,
            "user name or password",
        );
        for ok in [
            "http://127.0.0.1:14000/dir",
            "http://localhost:14000/dir",
            "http://[::1]:14000/dir",
            "https://[2001:db8::1]/dir",
        ] {
            assert_eq!(load_ok(&dir(ok)).cas["le"].directory, ok);
        }
    }

    #[test]
    fn contact_must_be_mailto() {
        let text = BASE.replace(
            "accept_terms = true",
            "accept_terms = true\ncontact = [\"mailto:ops@example.org\", \"ops@example.org\"]",
        );
        assert_only(&text, 4, 38, "must be a mailto: URL");
    }

    #[test]
    fn eab_needs_both_halves_and_loads_with_both() {
        let text = BASE.replace(
            "accept_terms = true",
            "accept_terms = true\neab_kid = \"kid-1\"",
        );
        assert_only(&text, 4, 1, "`eab_kid` needs `eab_hmac_key_file` too");
        let text = BASE.replace(
            "accept_terms = true",
            "accept_terms = true\neab_kid = \"kid-1\"\neab_hmac_key_file = \"/etc/renewd/eab.key\"",
        );
        let config = load_ok(&text);
        let ca = config.cas.values().next().expect("a CA");
        assert_eq!(ca.eab_kid.as_deref(), Some("kid-1"));
        assert_eq!(
            ca.eab_hmac_key_file.as_deref(),
            Some(Path::new("/etc/renewd/eab.key"))
        );
    }

    #[test]
    fn ca_name_must_be_a_safe_file_name() {
        let text = BASE.replace("[ca.le]", "[ca.\"Let's Encrypt\"]");
        let found = problems(&text);
        assert_has(
            &found,
            MAIN,
            1,
            5,
            "CA name `Let's Encrypt` may only contain",
        );
    }

    // --- other sections ---------------------------------------------------------------

    #[test]
    fn exception_values_are_validated() {
        let text = "[[exception]]\npath = \"/etc/x.pem\"\nowner = \"a\"\nreason = \"b\"\nreview_by = \"2027-02-30\"\n[[exception]]\npath = \"/etc/y.pem\"\nowner = \"a\"\nreason = \"b\"\nreview_by = 2027-03-01\n";
        let found = problems(text);
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_has(&found, MAIN, 5, 13, "that month has 28 days");
    }

    #[test]
    fn alert_needs_something_to_do() {
        assert_has(
            &problems("[alert]\n"),
            MAIN,
            1,
            1,
            "[alert] needs `command`, `webhook` or both",
        );
    }

    // --- durations --------------------------------------------------------------------

    #[test]
    fn parse_duration_accepts_units_and_combinations() {
        let secs = |s: &str| parse_duration(s).map(|d| d.as_secs());
        assert_eq!(secs("90s"), Ok(90));
        assert_eq!(secs("15m"), Ok(900));
        assert_eq!(secs("36h"), Ok(129_600));
        assert_eq!(secs("30d"), Ok(2_592_000));
        assert_eq!(secs("1h30m"), Ok(5_400));
        assert_eq!(secs("1d2h3m4s"), Ok(93_784));
        assert_eq!(secs("0s"), Ok(0));
        assert_eq!(format_duration(Duration::from_secs(93_784)), "1d2h3m4s");
    }

    #[test]
    fn parse_duration_rejects_clearly() {
        let err = |s: &str| parse_duration(s).expect_err(s);
        assert!(err("").contains("empty duration"));
        assert!(err("-5m").contains("cannot be negative"));
        assert!(err("90").contains("has no unit"));
        assert!(err("5y").contains("unknown unit `y`"));
        assert!(err("1.5h").contains("whole numbers"));
        assert!(err("30m1h").contains("largest first"));
        assert!(err("1h1h").contains("largest first"));
        assert!(err("1h 30m").contains("unexpected ` `"));
        assert!(err("99999999999999999999s").contains("too large"));
        assert!(err("36501d").contains("too large"));
        assert!(err("h").contains("invalid duration"));
    }

    // --- loading from disk and the environment ----------------------------------------

    #[test]
    fn load_reads_conf_d_in_name_order() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let main = dir.path().join("renewd.toml");
        fs::write(&main, BASE)?;
        let conf_d = dir.path().join("conf.d");
        fs::create_dir(&conf_d)?;
        fs::write(conf_d.join("20-b.toml"), API_DROPIN.replace("api", "b"))?;
        fs::write(conf_d.join("10-a.toml"), API_DROPIN.replace("api", "a"))?;
        fs::write(conf_d.join(".hidden.toml"), "garbage = [")?;
        fs::write(conf_d.join("notes.txt"), "garbage = [")?;
        let config = load(&main)?;
        let names: Vec<&str> = config
            .certificates
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(names, ["www", "a", "b"]);
        assert_eq!(config.sources.len(), 3);
        assert_eq!(config.sources[1], conf_d.join("10-a.toml"));
        Ok(())
    }

    #[test]
    fn load_reports_a_missing_main_file_at_1_1() {
        let err = load(Path::new("/nonexistent/renewd.toml")).expect_err("missing");
        assert_eq!(err.problems.len(), 1);
        assert!(err.problems[0]
            .to_string()
            .starts_with("/nonexistent/renewd.toml:1:1: cannot read configuration: "));
    }

    #[test]
    fn load_without_conf_d_is_fine() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let main = dir.path().join("renewd.toml");
        fs::write(&main, "")?;
        assert_eq!(load(&main)?.sources, [main]);
        Ok(())
    }

    #[test]
    fn resolve_path_prefers_the_flag() {
        let flag = Some(Path::new("/tmp/x.toml"));
        assert_eq!(resolve_path(flag), Path::new("/tmp/x.toml"));
        let env = || Some(std::ffi::OsString::from("/srv/renewd.toml"));
        assert_eq!(resolve_path_with(flag, env()), Path::new("/tmp/x.toml"));
        assert_eq!(
            resolve_path_with(None, env()),
            Path::new("/srv/renewd.toml")
        );
        assert_eq!(
            resolve_path_with(None, Some("".into())),
            Path::new(DEFAULT_CONFIG)
        );
        assert_eq!(resolve_path_with(None, None), Path::new(DEFAULT_CONFIG));
    }

    // --- proxy URLs -----------------------------------------------------------------------

    #[test]
    fn proxy_urls_are_http_host_port_and_shown_without_credentials() {
        assert_eq!(
            check_proxy_url("http://proxy.example:3128").as_deref(),
            Ok("http://proxy.example:3128")
        );
        assert_eq!(
            check_proxy_url("HTTP://u:p%40ss@[::1]:8080/").as_deref(),
            Ok("http://[::1]:8080")
        );
        for bad in [
            "https://u:s3cret@proxy.example:3128",
            "socks5h://u:s3cret@proxy.example:1080",
            "u:s3cret@proxy.example:3128",
            "http://u:s3cret@proxy.example:3128/x",
            "http://u:s3cret@",
        ] {
            let why = check_proxy_url(bad).expect_err(bad);
            assert!(!why.contains("s3cret"), "{bad}: {why}");
            assert!(why.contains("***@"), "{bad}: {why}");
        }
        assert_eq!(redact_url("http://a:b@h:1/p@q"), "http://***@h:1/p@q");
        assert_eq!(redact_url("http://h:1"), "http://h:1");
    }

    // --- check_environment ------------------------------------------------------------

    #[test]
    fn check_environment_reports_the_machine() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let root = dir.path().display().to_string();
        let tls = dir.path().join("tls");
        fs::create_dir(&tls)?;
        let webroot = dir.path().join("www");
        fs::create_dir(&webroot)?;
        let script = dir.path().join("reload.sh");
        fs::write(&script, "#!/bin/sh\n")?;
        fs::set_permissions(&script, fs::Permissions::from_mode(0o644))?;
        let good = dir.path().join("good.sh");
        fs::write(&good, "#!/bin/sh\n")?;
        fs::set_permissions(&good, fs::Permissions::from_mode(0o755))?;
        let text = format!(
            r#"state_dir = "{root}/state/renewd"
[ca.le]
directory = "https://acme.example.org/directory"
accept_terms = true
trust_roots = "{root}/roots.pem"
[[certificate]]
name = "www"
domains = ["example.org"]
challenge = {{ type = "http-01", webroot = "{root}/www" }}
files = {{ fullchain = "{root}/tls/www.pem", key = "{root}/missing/www.key" }}
user = "renewd-no-such-user-4711"
group = "root"
reload = [["{root}/good.sh"], ["{root}/reload.sh", "x"], ["sh", "-c", "true"], ["renewd-no-such-cmd"], ["rel/x"]]
"#
        );
        let config = load_ok(&text);
        let found: Vec<String> = config
            .check_environment()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(found.len(), 8, "{found:#?}");
        assert_has(&found, MAIN, 6, 1, "certificate `www` has no `owner`");
        assert_has(&found, MAIN, 1, 13, "the parent");
        assert_has(&found, MAIN, 1, 13, "of `state_dir` does not exist");
        assert_has(&found, MAIN, 5, 15, "cannot read `trust_roots`");
        assert_has(
            &found,
            MAIN,
            10,
            45 + root.len(),
            "for `files.key` does not exist",
        );
        assert_has(
            &found,
            MAIN,
            11,
            8,
            "user `renewd-no-such-user-4711` does not exist",
        );
        assert_has(
            &found,
            MAIN,
            13,
            25 + root.len(),
            "reload.sh` is not executable",
        );
        assert_has(
            &found,
            MAIN,
            13,
            68 + 2 * root.len(),
            "`renewd-no-such-cmd` is not an executable found in $PATH",
        );
        assert_has(
            &found,
            MAIN,
            13,
            92 + 2 * root.len(),
            "`rel/x` must be an absolute path",
        );

        // Fix everything and the machine checks pass.
        fs::create_dir(dir.path().join("state"))?;
        fs::create_dir(dir.path().join("missing"))?;
        fs::write(
            dir.path().join("roots.pem"),
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        )?;
        fs::set_permissions(&script, fs::Permissions::from_mode(0o755))?;
        let text = text
            .replace("renewd-no-such-user-4711", "root")
            .replace(", [\"renewd-no-such-cmd\"], [\"rel/x\"]", "")
            .replace(
                "group = \"root\"",
                "group = \"root\"\nowner = \"ops@example.org\"",
            );
        let found = load_ok(&text).check_environment();
        assert!(found.is_empty(), "{found:#?}");
        Ok(())
    }

    #[test]
    fn check_environment_trust_roots_need_a_certificate() -> Result<(), Box<dyn std::error::Error>>
    {
        let dir = tempfile::tempdir()?;
        let roots = dir.path().join("roots.pem");
        fs::write(&roots, "not a certificate\n")?;
        let text = format!(
            "state_dir = \"{}/state\"\n[ca.le]\ndirectory = \"https://a.example/\"\naccept_terms = true\ntrust_roots = \"{}\"\n",
            dir.path().display(),
            roots.display()
        );
        let found: Vec<String> = load_ok(&text)
            .check_environment()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_has(&found, MAIN, 5, 15, "holds no PEM certificate");
        Ok(())
    }

    #[test]
    fn check_environment_webroot_must_exist() {
        let text = BASE.replace("/var/www/html", "/nonexistent/renewd-webroot");
        let found: Vec<String> = load_ok(&text)
            .check_environment()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_has(
            &found,
            MAIN,
            8,
            43,
            "webroot `/nonexistent/renewd-webroot` does not exist",
        );
    }

    /// Two certificates inheriting `[defaults] files`' directory, one with its own webroot.
    const DIAGNOSE: &str = r#"state_dir = "/var/lib/renewd"
[ca.le]
directory = "https://acme.example/dir"
accept_terms = true
[defaults]
owner = "ops@example.org"
files = { fullchain = "/srv/tls/shared.pem", key = "/srv/tls/shared.key" }
[[certificate]]
name = "a"
domains = ["a.example"]
challenge = { type = "http-01", webroot = "/var/www/a" }
files = { fullchain = "/srv/a/a.pem", key = "/srv/a/a.key" }
[[certificate]]
name = "b"
domains = ["b.example"]
challenge = { type = "http-01", listen = "[::]:80" }
[[certificate]]
name = "c"
domains = ["c.example"]
challenge = { type = "http-01", listen = "[::]:80" }
files = { fullchain = "/srv/c/c.pem", key = "/srv/c/c.key" }
"#;

    #[test]
    fn diagnose_makes_a_certificate_problem_a_warning_that_stops_only_its_certificates() {
        let cfg = load_from_sources(&[(PathBuf::from(MAIN), DIAGNOSE.to_string())])
            .expect("valid configuration");
        let a = cfg.certificate("a").expect("a");
        let b = cfg.certificate("b").expect("b");
        let c = cfg.certificate("c").expect("c");
        let found = vec![
            // At a's own value.
            Problem::new(
                a.key_location("challenge.webroot").clone(),
                "webroot missing",
            ),
            // At an inherited [defaults] value: b only (a and c have their own files).
            Problem::new(
                b.key_location("files.fullchain").clone(),
                "directory missing",
            ),
            // Advisory: c stays renewable.
            Problem::warning(c.location.clone(), "no owner"),
            // Not at a certificate: keeps its severity.
            Problem::new(cfg.key_location("state_dir"), "parent missing"),
            Problem::warning(cfg.cas["le"].key_location("directory").clone(), "CA file"),
        ];
        let d = cfg.diagnose(found);
        assert_eq!(
            d.not_renewable
                .keys()
                .map(String::as_str)
                .collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert!(d.not_renewable["a"].ends_with(": webroot missing"));
        assert!(d.not_renewable["b"].starts_with(&format!("{MAIN}:7:")));
        assert!(d.has_errors());
        let errors = d.errors().expect("errors");
        assert_eq!(errors.problems.len(), 1);
        assert_eq!(errors.problems[0].message, "parent missing");
        assert_eq!(d.warnings().count(), 4);
        let shown: Vec<String> = d.problems.iter().map(|p| p.to_string()).collect();
        assert!(
            shown.contains(&format!("{MAIN}:1:13: parent missing")),
            "{shown:?}"
        );
        assert!(
            shown.iter().any(|l| l.starts_with(&format!("{MAIN}:11:"))
                && l.ends_with(": warning: webroot missing")),
            "{shown:?}"
        );
        // Without the state_dir error the configuration is usable.
        let d = cfg.diagnose(vec![Problem::new(
            a.key_location("challenge.webroot").clone(),
            "webroot missing",
        )]);
        assert!(!d.has_errors() && d.errors().is_none());
    }

    #[test]
    fn unknown_certificate_names_get_the_closest_configured_one() {
        let cfg = load_from_sources(&[(PathBuf::from(MAIN), DIAGNOSE.to_string())])
            .expect("valid configuration");
        assert!(cfg.check_names(&["a".into(), "c".into()]).is_ok());
        let e = cfg
            .check_names(&["a".into(), "zzzzzz".into()])
            .expect_err("unknown");
        assert_eq!(
            e,
            "no certificate named `zzzzzz` in the configuration; configured: a, b, c"
        );
    }
}

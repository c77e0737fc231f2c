//! Lifecycle governance: every certificate on the host, not only the ones renewd renews.
//!
//! Three kinds: *managed* (a `[[certificate]]`), *exception* (an `[[exception]]`, tracked on
//! purpose but renewed by someone else) and *unmanaged* (found under `[discovery] paths` and
//! neither). [`collect`] builds the inventory from files alone — what the caller knows about
//! managed certificates comes in as [`Managed`] — so `renewd inventory` needs no daemon.
//! On top of it: [`alerts`] (conditions, de-duplication, delivery) and [`metrics`] (the
//! Prometheus exposition). This module calls only `x509` (and uses `config`'s types).

pub(crate) mod alerts;
pub mod discovery;
pub(crate) mod listeners;
pub(crate) mod live;
pub(crate) mod metrics;
pub(crate) mod owners;
pub(crate) mod pkcs12;
pub(crate) mod pkcs12_budget;
pub(crate) mod trust;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::x509::CertInfo;

pub(crate) use live::Live;

/// The version of the `renewd inventory --json` document and of alert documents.
pub(crate) const SCHEMA_VERSION: u32 = 1;

/// Whose a certificate is: renewd's (configured), a person's (an exception, with a review
/// date), or nobody's known (found by discovery).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Kind {
    Managed,
    Exception,
    Unmanaged,
    /// A flagged trust anchor (`renewd trust-audit`); never in `certificates`, only in
    /// alerts.
    Anchor,
}

impl Kind {
    /// The name in JSON, metric labels and alert keys: "managed", "exception", "unmanaged".
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Kind::Managed => "managed",
            Kind::Exception => "exception",
            Kind::Unmanaged => "unmanaged",
            Kind::Anchor => "anchor",
        }
    }
}

/// A certificate's revocation status (learnt by `crate::revocation`); `"good" | "revoked" | "unknown"` in JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RevocationStatus {
    /// The responder or the CRL says it is not revoked.
    Good,
    /// Revoked (RFC 5280 §5.3.1, RFC 6960 §2.2).
    Revoked,
    /// Nobody could say: no responder or CRL named, none reachable, an answer that did not
    /// verify, or the issuer missing from the certificate's files.
    Unknown,
}

impl RevocationStatus {
    /// "good", "revoked" or "unknown".
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            RevocationStatus::Good => "good",
            RevocationStatus::Revoked => "revoked",
            RevocationStatus::Unknown => "unknown",
        }
    }
}

/// Where a status was learnt; `"ocsp" | "crl"` in JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RevocationSource {
    /// An OCSP responder (RFC 6960).
    Ocsp,
    /// A CRL (RFC 5280 §5).
    Crl,
}

impl RevocationSource {
    /// "ocsp" or "crl".
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            RevocationSource::Ocsp => "ocsp",
            RevocationSource::Crl => "crl",
        }
    }
}

/// What the renewal side knows about one managed certificate (built by `status`).
#[derive(Debug, Clone)]
pub struct Managed {
    pub(crate) name: String,
    /// Every configured file.
    pub(crate) paths: Vec<PathBuf>,
    /// The configured file that holds the certificate (cert, fullchain or combined).
    pub(crate) cert_path: Option<PathBuf>,
    pub(crate) owner: Option<String>,
    pub(crate) service: Option<String>,
    pub(crate) next_renewal: SystemTime,
    pub(crate) next_renewal_reason: String,
    /// When `renew_before` says the deployed certificate is due (the start of its margin).
    pub(crate) renew_at: Option<SystemTime>,
    /// The start of the CA's ARI renewal window for the deployed certificate, if it gave one.
    pub(crate) ari_window_start: Option<SystemTime>,
    /// The end of that window.
    pub(crate) ari_window_end: Option<SystemTime>,
    /// The start of the first window the CA gave for the deployed certificate.
    pub(crate) ari_first_start: Option<SystemTime>,
    /// The `explanationURL` of the CA's answer, if it sent one.
    pub(crate) ari_explanation: Option<String>,
    /// Why `renew_before` is clamped for the deployed certificate, if it is.
    pub(crate) renew_before_warning: Option<String>,
    /// The configured `alert_before`, if any.
    pub(crate) alert_before: Option<crate::config::RenewBefore>,
    /// Why the deployed files cannot be used, if they cannot.
    pub(crate) problem: Option<String>,
    pub(crate) consecutive_failures: u32,
    /// The last attempt's message, when it failed.
    pub(crate) last_failure: Option<String>,
    /// When the last successful renewal ended, if the record's history still holds one.
    pub(crate) last_success: Option<SystemTime>,
    /// The earliest configured dns-persist-01 `persist_until`, Unix seconds.
    pub(crate) persist_until: Option<u64>,
    /// The deployed leaf, as read when the certificate was last evaluated (none when
    /// nothing usable is deployed).
    pub(crate) leaf: Option<Box<Leaf>>,
}

/// What the inventory shows of one certificate, kept instead of the parsed certificate
/// ([`CertInfo`], which holds the whole DER): about 200 bytes for a one-name certificate.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Leaf {
    /// Subject and issuer distinguished names, RFC 4514 string form.
    pub(crate) subject: String,
    pub(crate) issuer: String,
    /// Lowercase hex, as [`CertInfo::serial_hex`].
    pub(crate) serial: String,
    /// SHA-256 of the certificate's DER (RFC 5280 §4.1): its identity for revocation
    /// results and for matching what a listener serves.
    pub(crate) sha256: [u8; 32],
    /// The subjectAltName's DNS names, then its IP addresses.
    pub(crate) names: Vec<String>,
    pub(crate) not_before: SystemTime,
    pub(crate) not_after: SystemTime,
}

impl Leaf {
    pub(crate) fn of(info: &CertInfo) -> Leaf {
        Leaf {
            subject: info.subject.clone(),
            issuer: info.issuer.clone(),
            serial: info.serial_hex.clone(),
            sha256: crate::x509::sha256(&info.der),
            names: info
                .dns_names
                .iter()
                .cloned()
                .chain(info.ip_addrs.iter().map(|ip| ip.to_string()))
                .collect(),
            not_before: info.not_before,
            not_after: info.not_after,
        }
    }
}

/// One certificate of the inventory; the element of `renewd inventory --json`'s
/// `certificates` (field names are part of the documented schema).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Item {
    pub(crate) kind: Kind,
    /// The `[[certificate]]` name; managed only.
    pub(crate) name: Option<String>,
    /// Where the certificate is: a managed certificate's configured files, an exception's
    /// path, or every discovered file holding this same certificate.
    pub(crate) paths: Vec<PathBuf>,
    pub(crate) subject: Option<String>,
    /// DNS names and IP addresses of the subjectAltName extension.
    pub(crate) names: Vec<String>,
    pub(crate) issuer: Option<String>,
    pub(crate) serial: Option<String>,
    /// Unix seconds.
    pub(crate) not_before: Option<u64>,
    pub(crate) not_after: Option<u64>,
    /// Whole days until not_after, rounded down; negative once expired.
    pub(crate) days_left: Option<i64>,
    pub(crate) owner: Option<String>,
    pub(crate) service: Option<String>,
    /// Managed only: Unix seconds of the next renewal, and why.
    pub(crate) next_renewal: Option<u64>,
    pub(crate) next_renewal_reason: Option<String>,
    /// Managed only.
    pub(crate) consecutive_failures: Option<u32>,
    pub(crate) last_failure: Option<String>,
    /// Exception only: why renewd does not renew it, and the review date (`YYYY-MM-DD`).
    pub(crate) reason: Option<String>,
    pub(crate) review_by: Option<String>,
    /// Why the certificate could not be read, if it could not.
    pub(crate) problem: Option<String>,
    /// Alert conditions currently firing for it (from the daemon's alert state).
    #[serde(default)]
    pub(crate) alerts: Vec<String>,
    /// Its revocation status: "good", "revoked" or "unknown" (`crate::revocation`); none
    /// when the certificate could not be read.
    #[serde(default)]
    pub(crate) revocation: Option<RevocationStatus>,
    /// Where it was learnt: "ocsp" or "crl".
    #[serde(default)]
    pub(crate) revocation_source: Option<RevocationSource>,
    /// When it was checked (RFC 3339, UTC).
    #[serde(default)]
    pub(crate) revocation_checked_at: Option<String>,
    /// Why unknown (what failed), or when and why revoked.
    #[serde(default)]
    pub(crate) revocation_detail: Option<String>,
    /// Not serialized: when its revocation is next to be checked (Unix seconds; 0 when
    /// never checked), for the daemon's deadline.
    #[serde(skip)]
    pub(crate) revocation_next_check: Option<u64>,
    /// Not serialized: the SHA-256 of the certificate's DER (`crate::revocation::store::key`),
    /// which its revocation result is kept under.
    #[serde(skip)]
    pub(crate) fingerprint: Option<String>,
    /// The TLS listeners of this host that serve it (`[discovery] listeners`), each
    /// `listener:ADDR:PORT` (as bound), with ` sni=NAME` when it is served for that name.
    #[serde(default)]
    pub(crate) listeners: Vec<String>,
    /// Found in a PKCS#12 bundle: whether it is the bundle's leaf (paired with its key);
    /// `null` for a certificate not found in a bundle.
    #[serde(default)]
    pub(crate) pkcs12_leaf: Option<bool>,
    /// Not serialized: the addresses of `listeners`, for owner rules.
    #[serde(skip)]
    pub(crate) listener_addrs: Vec<SocketAddr>,
    /// Managed only, not serialized: start of the renewal margin, for alerts.
    #[serde(skip)]
    pub(crate) renew_at: Option<u64>,
    /// Managed only, not serialized: start of the CA's ARI window, for alerts.
    #[serde(skip)]
    pub(crate) ari_window_start: Option<u64>,
    /// Managed only, not serialized: end of the CA's ARI window, for alerts.
    #[serde(skip)]
    pub(crate) ari_window_end: Option<u64>,
    /// Managed only, not serialized: start of the first ARI window given for the deployed
    /// certificate, for alerts.
    #[serde(skip)]
    pub(crate) ari_first_start: Option<u64>,
    /// Managed only, not serialized: the CA's `explanationURL`, for alerts.
    #[serde(skip)]
    pub(crate) ari_explanation: Option<String>,
    /// Managed only, not serialized: why `renew_before` is clamped, for alerts.
    #[serde(skip)]
    pub(crate) renew_before_warning: Option<String>,
    /// Not serialized: the configured `alert_before` (of the certificate, exception or
    /// `[discovery]`), for the `expiring` alert's lead time.
    #[serde(skip)]
    pub(crate) alert_before: Option<crate::config::RenewBefore>,
    /// Managed only, not serialized: the configured file holding the certificate.
    #[serde(skip)]
    pub(crate) cert_path: Option<PathBuf>,
    /// Managed only, not serialized: Unix seconds of the last successful renewal, for
    /// `renewd_certificate_last_success_seconds`.
    #[serde(skip)]
    pub(crate) last_success: Option<u64>,
    /// Managed only, not serialized: the earliest configured dns-persist-01
    /// `persist_until` (Unix seconds), for the `persist_record_expiring` alert.
    #[serde(skip)]
    pub(crate) persist_until: Option<u64>,
    /// Anchor only, not serialized: its flags (`expired`, `weak`, ...), for alerts and
    /// `renewd_trust_anchor_flagged`.
    #[serde(skip)]
    pub(crate) anchor_flags: Vec<&'static str>,
}

impl Item {
    /// The stable identity used in alert keys and metric labels: the name of a managed
    /// certificate, else its first path (`PATH#SERIAL` for a certificate of a PKCS#12
    /// bundle other than its leaf, which shares the bundle's path), else its first
    /// listener.
    pub(crate) fn id(&self) -> String {
        match &self.name {
            Some(n) => n.clone(),
            None => self.locations().into_iter().next().unwrap_or_default(),
        }
    }

    /// Where it was found, one label value each (`renewd_inventory_not_after_seconds`):
    /// every path (`PATH#SERIAL` for a certificate of a PKCS#12 bundle other than its leaf),
    /// else every listener serving it.
    pub(crate) fn locations(&self) -> Vec<String> {
        let serial = match (self.pkcs12_leaf, &self.serial) {
            (Some(false), Some(serial)) => format!("#{serial}"),
            _ => String::new(),
        };
        match self.paths.is_empty() {
            false => self
                .paths
                .iter()
                .map(|p| format!("{}{serial}", p.display()))
                .collect(),
            true => self.listeners.clone(),
        }
    }

    /// An item of `kind` that knows nothing yet.
    pub(crate) fn blank(kind: Kind) -> Item {
        Item {
            kind,
            name: None,
            paths: Vec::new(),
            subject: None,
            names: Vec::new(),
            issuer: None,
            serial: None,
            not_before: None,
            not_after: None,
            days_left: None,
            owner: None,
            service: None,
            next_renewal: None,
            next_renewal_reason: None,
            consecutive_failures: None,
            last_failure: None,
            reason: None,
            review_by: None,
            problem: None,
            alerts: Vec::new(),
            revocation: None,
            revocation_source: None,
            revocation_checked_at: None,
            revocation_detail: None,
            revocation_next_check: None,
            fingerprint: None,
            listeners: Vec::new(),
            pkcs12_leaf: None,
            listener_addrs: Vec::new(),
            renew_at: None,
            ari_window_start: None,
            ari_window_end: None,
            ari_first_start: None,
            ari_explanation: None,
            renew_before_warning: None,
            alert_before: None,
            cert_path: None,
            last_success: None,
            persist_until: None,
            anchor_flags: Vec::new(),
        }
    }

    fn describe(&mut self, leaf: &Leaf, now: SystemTime) {
        self.subject = Some(leaf.subject.clone());
        self.issuer = Some(leaf.issuer.clone());
        self.serial = Some(leaf.serial.clone());
        self.fingerprint = Some(crate::revocation::store::key_of_sha256(&leaf.sha256));
        self.names = leaf.names.clone();
        self.not_before = Some(unix(leaf.not_before));
        self.not_after = Some(unix(leaf.not_after));
        self.days_left = Some(days_left(leaf.not_after, now));
    }
}

/// The whole inventory: `renewd inventory --json` prints this.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Inventory {
    pub(crate) version: u32,
    /// Unix seconds.
    pub(crate) generated_at: u64,
    /// Managed first (configuration order), then exceptions, then unmanaged by path.
    pub(crate) certificates: Vec<Item>,
    pub(crate) discovery: DiscoverySummary,
    /// Not serialized: the flagged trust anchors of the daemon's audit (`[trust]`), as
    /// items of kind `anchor`, and when that audit's verdict may next change by itself.
    #[serde(skip)]
    pub(crate) anchors: Vec<Item>,
    #[serde(skip)]
    pub(crate) anchors_next: Option<SystemTime>,
}

/// What discovery looked at; the `discovery` member of `renewd inventory --json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct DiscoverySummary {
    /// The configured `[discovery] paths`.
    pub(crate) paths: Vec<PathBuf>,
    /// Regular files looked at (sniffed), certificates or not.
    pub(crate) files_scanned: usize,
    /// Directories or files that could not be read.
    pub(crate) errors: Vec<String>,
}

/// Every path the inventory accounts for without discovery: managed files and exceptions.
pub(crate) fn known_paths(config: &Config) -> HashSet<PathBuf> {
    let mut known: HashSet<PathBuf> = config
        .certificates
        .iter()
        .flat_map(|c| c.files.iter().map(|(_, p)| p.to_path_buf()))
        .collect();
    known.extend(config.exceptions.iter().map(|e| e.path.clone()));
    known
}

/// Runs the discovery scan of `config` (nothing when there is no `[discovery]`): the
/// paths, then — with `listeners = true` — the host's TLS listeners, asked with the names
/// of the managed certificates and of what the paths held as SNI.
pub(crate) fn discover(config: &Config) -> discovery::Scan {
    discover_watching(config, &mut |_| {})
}

/// [`discover`], calling `on_dir` with every real directory before it is read (the daemon
/// watches it, as for [`discovery::scan`]).
pub(crate) fn discover_watching(config: &Config, on_dir: &mut dyn FnMut(&Path)) -> discovery::Scan {
    let Some(d) = &config.discovery else {
        return discovery::Scan::default();
    };
    let mut scan = discovery::scan_with(
        &d.paths,
        &known_paths(config),
        &d.pkcs12_password_files,
        on_dir,
    );
    if d.listeners {
        let names: Vec<String> = config
            .certificates
            .iter()
            .flat_map(|c| c.domains.iter().cloned())
            .chain(scan.found().flat_map(|f| f.leaf.dns_names.iter().cloned()))
            .collect();
        let probe = listeners::probe(&names);
        scan.set_served(probe.served, probe.errors);
    }
    scan
}

/// Builds the inventory from the managed certificates' state, the exceptions' files and a
/// discovery scan.
pub(crate) fn collect(
    config: &Config,
    managed: &[Managed],
    scan: &discovery::Scan,
    now: SystemTime,
) -> Inventory {
    let mut items = Vec::new();
    // The certificate of each managed item and exception, and its index in `items`: a
    // listener serving one of them is shown there, not as unmanaged.
    let mut covered: HashMap<[u8; 32], usize> = HashMap::new();
    for m in managed {
        let mut item = Item::blank(Kind::Managed);
        item.name = Some(m.name.clone());
        item.paths = m.paths.clone();
        item.owner = m.owner.clone();
        item.service = m.service.clone();
        item.next_renewal = Some(unix(m.next_renewal));
        item.next_renewal_reason = Some(m.next_renewal_reason.clone());
        item.consecutive_failures = Some(m.consecutive_failures);
        item.last_failure = m.last_failure.clone();
        item.renew_at = m.renew_at.map(unix);
        item.ari_window_start = m.ari_window_start.map(unix);
        item.ari_window_end = m.ari_window_end.map(unix);
        item.ari_first_start = m.ari_first_start.map(unix);
        item.ari_explanation = m.ari_explanation.clone();
        item.renew_before_warning = m.renew_before_warning.clone();
        item.alert_before = m.alert_before;
        item.cert_path = m.cert_path.clone();
        item.last_success = m.last_success.map(unix);
        item.persist_until = m.persist_until;
        item.problem = m.problem.clone();
        // As read at its last evaluation: the daemon re-evaluates a certificate whenever its
        // files change, so nothing is read here.
        if let (None, Some(leaf)) = (&m.problem, &m.leaf) {
            item.describe(leaf, now);
            covered.insert(leaf.sha256, items.len());
        }
        items.push(item);
    }
    for e in &config.exceptions {
        let mut item = Item::blank(Kind::Exception);
        item.paths = vec![e.path.clone()];
        item.owner = Some(e.owner.clone());
        item.reason = Some(e.reason.clone());
        item.review_by = Some(e.review_by.clone());
        item.alert_before = e.alert_before;
        let passwords = config
            .discovery
            .as_ref()
            .map_or(&[][..], |d| &d.pkcs12_password_files[..]);
        match discovery::read_exception(&e.path, passwords) {
            Ok(info) => {
                let leaf = Leaf::of(&info);
                item.describe(&leaf, now);
                covered.entry(leaf.sha256).or_insert(items.len());
            }
            Err(err) => item.problem = Some(err.to_string()),
        }
        items.push(item);
    }
    let mut unmanaged = unmanaged_items(config, scan, &covered, &mut items, now);
    if let Some(d) = &config.discovery {
        owners::apply(&d.owners, &mut unmanaged);
    }
    items.extend(unmanaged);
    Inventory {
        version: SCHEMA_VERSION,
        generated_at: unix(now),
        certificates: items,
        discovery: DiscoverySummary {
            paths: config
                .discovery
                .as_ref()
                .map(|d| d.paths.clone())
                .unwrap_or_default(),
            files_scanned: scan.files_seen(),
            errors: scan.errors(),
        },
        anchors: Vec::new(),
        anchors_next: None,
    }
}

/// One unmanaged item per distinct certificate found by discovery, listing every file
/// that holds it and every listener that serves it, in path order (those only served
/// last). A listener serving a managed certificate or an exception (`covered`: DER → index
/// in `items`) is added to that item instead.
fn unmanaged_items(
    config: &Config,
    scan: &discovery::Scan,
    covered: &HashMap<[u8; 32], usize>,
    items: &mut [Item],
    now: SystemTime,
) -> Vec<Item> {
    let mut unmanaged: BTreeMap<[u8; 32], Item> = BTreeMap::new();
    let alert_before = config.discovery.as_ref().and_then(|d| d.alert_before);
    fn entry<'a>(
        unmanaged: &'a mut BTreeMap<[u8; 32], Item>,
        leaf: &CertInfo,
        alert_before: Option<crate::config::RenewBefore>,
        now: SystemTime,
    ) -> &'a mut Item {
        let leaf = Leaf::of(leaf);
        unmanaged.entry(leaf.sha256).or_insert_with(|| {
            let mut item = Item::blank(Kind::Unmanaged);
            item.alert_before = alert_before;
            item.describe(&leaf, now);
            item
        })
    }
    for f in scan.found() {
        let item = entry(&mut unmanaged, &f.leaf, alert_before, now);
        item.paths.push(f.path.clone());
        item.pkcs12_leaf = item.pkcs12_leaf.or(f.pkcs12_leaf);
    }
    for s in scan.served() {
        let item = match covered.get(&crate::x509::sha256(&s.leaf.der)) {
            Some(&i) => &mut items[i],
            None => entry(&mut unmanaged, &s.leaf, alert_before, now),
        };
        item.listeners.push(s.location());
        item.listener_addrs.push(s.listener);
    }
    let mut unmanaged: Vec<Item> = unmanaged.into_values().collect();
    for item in &mut unmanaged {
        item.paths.sort();
        item.paths.dedup();
    }
    unmanaged.sort_by(|a, b| {
        (a.paths.is_empty(), &a.paths, &a.listeners).cmp(&(
            b.paths.is_empty(),
            &b.paths,
            &b.listeners,
        ))
    });
    unmanaged
}

/// The human table of `renewd inventory`: one row a certificate (columns padded to the
/// widest cell, the last one not), then what discovery scanned and could not read.
pub fn render(inv: &Inventory, now: SystemTime) -> String {
    let header = [
        "KIND",
        "CERTIFICATE",
        "NOT AFTER",
        "DAYS",
        "OWNER",
        "SERVICE",
        "REVOCATION",
        "NEXT / NOTE",
    ];
    let rows: Vec<[String; 8]> = inv.certificates.iter().map(|i| row(i, now)).collect();
    let mut widths = header.map(str::len);
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r.iter()) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = crate::text::table_line(&header, &widths);
    for r in &rows {
        out.push_str(&crate::text::table_line(r, &widths));
    }
    if rows.is_empty() {
        out.push_str("no certificates known\n");
    }
    if !inv.discovery.paths.is_empty() {
        out.push_str(&format!(
            "discovery: {} file(s) scanned under {}\n",
            inv.discovery.files_scanned,
            inv.discovery
                .paths
                .iter()
                .map(|p| crate::text::escape(&p.display().to_string()).into_owned())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    for e in &inv.discovery.errors {
        out.push_str(&format!("discovery: cannot read {e}\n"));
    }
    out
}

/// One certificate's cells in [`render`]'s table.
fn row(i: &Item, now: SystemTime) -> [String; 8] {
    let what = match &i.name {
        Some(n) => n.clone(),
        None => i
            .paths
            .iter()
            .map(|p| p.display().to_string())
            .chain(i.listeners.iter().cloned())
            .collect::<Vec<_>>()
            .join(", "),
    };
    let not_after = i
        .not_after
        .map(|t| date_time(from_unix(t)))
        .unwrap_or_else(|| "-".into());
    let days = i.days_left.map(|d| d.to_string()).unwrap_or("-".into());
    // File names, certificate names and problems come from outside: no cell may carry
    // a control character to the terminal.
    let cell = |s: &str| crate::text::escape(s).into_owned();
    [
        i.kind.as_str().to_string(),
        cell(&what),
        not_after,
        days,
        cell(i.owner.as_deref().unwrap_or("-")),
        cell(i.service.as_deref().unwrap_or("-")),
        revocation_cell(i),
        cell(&note(i, now)),
    ]
}

/// The REVOCATION cell: the status and its source (`revoked (ocsp)`), `-` when the
/// certificate could not be read.
fn revocation_cell(i: &Item) -> String {
    match (i.revocation, i.revocation_source) {
        (Some(status), Some(source)) => format!("{} ({})", status.as_str(), source.as_str()),
        (Some(status), None) => status.as_str().to_string(),
        (None, _) => "-".into(),
    }
}

/// The NEXT / NOTE cell: the problem, else the next renewal (managed), the review date and
/// reason (exception) or the names (unmanaged); firing alerts first.
fn note(i: &Item, now: SystemTime) -> String {
    let note = if let Some(p) = &i.problem {
        format!("PROBLEM: {p}")
    } else {
        match i.kind {
            Kind::Managed => match (i.next_renewal, &i.next_renewal_reason) {
                (Some(t), Some(r)) if from_unix(t) <= now => format!("due now ({r})"),
                (Some(t), Some(r)) => format!("{} ({r})", date_time(from_unix(t))),
                _ => "-".into(),
            },
            Kind::Exception => format!(
                "review by {}: {}",
                i.review_by.as_deref().unwrap_or("-"),
                i.reason.as_deref().unwrap_or("")
            ),
            Kind::Unmanaged => match i.pkcs12_leaf {
                Some(true) => format!("PKCS#12 leaf: {}", i.names.join(", ")),
                Some(false) => format!("PKCS#12 chain: {}", i.subject.as_deref().unwrap_or("-")),
                None => i.names.join(", "),
            },
            Kind::Anchor => i.reason.clone().unwrap_or_default(),
        }
    };
    if i.alerts.is_empty() {
        note
    } else {
        format!("ALERT {}; {note}", i.alerts.join(", "))
    }
}

/// `t` in Unix seconds; 0 for an instant before 1970.
pub(crate) fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The instant `s` Unix seconds, clamped to `state::MAX_UNIX` (never panics).
pub(crate) fn from_unix(s: u64) -> SystemTime {
    crate::state::from_unix(s)
}

fn days_left(not_after: SystemTime, now: SystemTime) -> i64 {
    match not_after.duration_since(now) {
        Ok(d) => (d.as_secs() / 86_400) as i64,
        Err(e) => -(e.duration().as_secs().div_ceil(86_400) as i64),
    }
}

/// `2026-05-01 12:00 UTC`.
fn date_time(t: SystemTime) -> String {
    let dt = time::OffsetDateTime::from(t);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02} UTC",
        dt.year(),
        u8::from(dt.month()),
        dt.day(),
        dt.hour(),
        dt.minute()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_left_rounds_down_and_goes_negative() {
        let now = from_unix(1_000_000);
        assert_eq!(days_left(from_unix(1_000_000 + 86_400 * 5 + 10), now), 5);
        assert_eq!(days_left(from_unix(1_000_000 + 86_399), now), 0);
        assert_eq!(days_left(from_unix(1_000_000 - 1), now), -1);
    }
}

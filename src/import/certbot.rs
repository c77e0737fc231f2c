//! certbot's lineages as renewd sees them: every `renewal/NAME.conf` under a certbot
//! configuration directory (default `/etc/letsencrypt`), read with [`super::configobj`] and
//! turned into a [`Lineage`] — the names its deployed certificate covers, key type, how its
//! challenges were answered, its deploy hooks and its `live/` files — plus what could not be
//! carried over, each note naming `FILE:LINE`.
//!
//! The `live/` files stay where they are (certbot keeps them as symlinks into `archive/`):
//! renewd reads them through the links and replaces the links by rename(2) when it renews,
//! so nothing in `archive/` is touched.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::configobj::{self, excerpt, Entry, Section, Value};
use super::hooks::{manual_dns_hook, reload_commands};
use super::{ImportError, LiveFiles, MAX_LINEAGES, MAX_SMALL_FILE};
use crate::config::KeyType;
use crate::fsutil::{self, caps, Follow};
use crate::x509;

/// The largest renewal configuration file read, in bytes (certbot's are under 2 KiB).
pub(crate) const MAX_CONF_BYTES: u64 = 64 << 10;
/// certbot's default ACME server.
pub(crate) const LETSENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";

/// One certbot lineage, ready to be written as a `[[certificate]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Lineage {
    /// The lineage's name: the renewal file's stem (`renewal/NAME.conf`), a renewd
    /// certificate name once lowercased.
    pub(crate) certbot_name: String,
    /// The renewal configuration file it was read from.
    pub(crate) conf: PathBuf,
    /// `live/NAME/{cert,chain,fullchain,privkey}.pem`, as the renewal file names them.
    pub(crate) files: LiveFiles,
    /// The names the deployed certificate covers (its SAN entries, DNS names then IP
    /// addresses), else the `[[webroot_map]]` keys.
    pub(crate) domains: Vec<String>,
    /// The deployed certificate's serial (lowercase hex) and notAfter, when it was readable.
    pub(crate) deployed: Option<(String, std::time::SystemTime)>,
    /// The ACME directory URL (`server`; certbot's default is Let's Encrypt's).
    pub(crate) server: String,
    /// The account's contact URLs from `accounts/…/ACCOUNT/regr.json`, when readable.
    pub(crate) contact: Vec<String>,
    pub(crate) key_type: KeyType,
    pub(crate) challenge: Challenge,
    /// Reload commands: argv and the comment written above it.
    pub(crate) reload: Vec<(Vec<String>, String)>,
    /// `renew_before_expiry` in renewd's duration syntax (`30d`).
    pub(crate) renew_before: Option<String>,
    /// `preferred_chain` (an issuer common name).
    pub(crate) preferred_chain: Option<String>,
    /// `required_profile` or `preferred_profile` (an ACME profile name).
    pub(crate) profile: Option<String>,
    /// `reuse_key = True`.
    pub(crate) reuse_key: bool,
    /// What could not be carried over, each as `FILE:LINE: what and why`.
    pub(crate) notes: Vec<String>,
}

/// How the lineage's challenges are answered under renewd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Challenge {
    /// `authenticator = webroot`: http-01 files under `root` (the webroot most of the
    /// names used), and under their own webroot for the `others` (`[[webroot_map]]`).
    Webroot {
        root: PathBuf,
        others: Vec<(String, PathBuf)>,
    },
    /// `authenticator = standalone`: renewd's built-in http-01 listener on this address.
    Listen(String),
    /// `authenticator = manual` for dns-01 with a `manual_auth_hook`: a dns-01 hook (argv)
    /// that runs certbot's auth and cleanup hooks with the variables certbot gave them.
    ManualDns(Vec<String>),
    /// An authenticator renewd cannot carry over (manual, DNS plugins, nginx, apache): a
    /// stub challenge that `renewd check` reports until someone fills it in. `plugin` is
    /// certbot's authenticator name.
    Stub { plugin: String, dns: bool },
}

/// Why one renewal file gave no lineage; each names the file (and the line when one is to
/// blame).
#[derive(Debug, thiserror::Error)]
pub(crate) enum LineageError {
    /// The file cannot be read (missing, too large, not regular, not UTF-8).
    #[error("{0}")]
    Read(#[from] fsutil::ReadError),
    /// Not configobj as certbot writes it.
    #[error("{path}:{}: {}", .source.line, .source.message)]
    Syntax {
        path: PathBuf,
        source: configobj::SyntaxError,
    },
    /// A renewal file that is a symbolic link: skipped, never read through (certbot
    /// writes regular files; a link could point anywhere, `/etc/shadow` included).
    #[error("{0}: skipped: a symbolic link (certbot writes renewal files as regular files; not followed)")]
    Symlink(PathBuf),
    /// A lineage name (the file's stem) that is not a renewd certificate name even
    /// lowercased: skipped.
    #[error(
        "{path}: skipped: lineage name `{name}` {why}; renewd certificate names are 1 to 64 \
         of a-z, 0-9, `.`, `_`, `-`"
    )]
    BadName {
        path: PathBuf,
        /// The name, escaped and cut ([`excerpt`]).
        name: String,
        why: crate::config::InvalidValue,
    },
    /// A `cert`/`chain`/`fullchain`/`privkey` line that is not
    /// `<certbot dir>/live/NAME/KEY.pem`: skipped, since renewd would write that path
    /// (as root) when it renews.
    #[error(
        "{path}:{line}: skipped: `{key}` is `{value}`, not {live}/NAME/{key}.pem (certbot \
         keeps a lineage's files only there; renewd would overwrite this path when it renews)"
    )]
    OutsideLive {
        path: PathBuf,
        line: usize,
        key: &'static str,
        /// The value, escaped and cut ([`excerpt`]).
        value: String,
        /// `<certbot dir>/live`.
        live: PathBuf,
    },
    /// One of the four `live/` file lines is missing.
    #[error(
        "{path}: no `{key}` line: certbot writes cert, chain, fullchain and privkey at the \
         top of every renewal file"
    )]
    NoFile { path: PathBuf, key: &'static str },
    /// Neither the deployed certificate nor a `[[webroot_map]]` says which names it covers.
    #[error(
        "{path}: the deployed certificate cannot be read ({source}), and no [[webroot_map]] \
         names the domains"
    )]
    NoDomains {
        path: PathBuf,
        source: DeployedError,
    },
}

impl LineageError {
    /// Whether the file is left out with a note rather than stopping the import: a
    /// symlinked renewal file, a name renewd cannot use, `live/` files elsewhere.
    pub(crate) fn is_skip(&self) -> bool {
        matches!(
            self,
            LineageError::Symlink(_)
                | LineageError::BadName { .. }
                | LineageError::OutsideLive { .. }
        )
    }
}

/// The lineages of a certbot directory, and the renewal files left out (one note each).
#[derive(Debug)]
pub(crate) struct Lineages {
    pub(crate) lineages: Vec<Lineage>,
    /// Why each skipped file was left out, as `FILE[:LINE]: skipped: …`.
    pub(crate) skipped: Vec<String>,
}

/// Why the deployed certificate of a lineage says nothing usable.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DeployedError {
    /// Neither `cert.pem` nor `fullchain.pem` can be read (through certbot's links).
    #[error("{0}")]
    Read(#[from] fsutil::ReadError),
    /// Not PEM certificates.
    #[error("{path}: {source}")]
    Invalid {
        path: PathBuf,
        source: x509::X509Error,
    },
    /// PEM without a certificate.
    #[error("{0}: holds no certificate")]
    Empty(PathBuf),
    /// A certificate without a DNS name or IP address in its SAN.
    #[error("{0}: the certificate names no DNS name or IP address")]
    NoNames(PathBuf),
}

/// Why the account's contact was not read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ContactError {
    /// An account id or server URL that would lead outside `accounts/`.
    #[error("the account `{account}` or server `{server}` is not a plain name")]
    NotPlain { account: String, server: String },
    /// `regr.json` cannot be read.
    #[error("{0}")]
    Read(#[from] fsutil::ReadError),
    /// `regr.json` is not JSON.
    #[error("{path}: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// Reads every `renewal/*.conf` under `dir` (absolute and lexically normal: the `live/`
/// paths are checked against it), in name order. A symlinked file, a lineage name renewd
/// cannot use or `live/` paths outside `dir/live/NAME/` are skipped with a note (see
/// [`LineageError::is_skip`]). Errors: `renewal/` cannot be listed, holds more than
/// [`MAX_LINEAGES`] files, or any file in it is unreadable or not configobj (every such
/// file is reported, as `FILE:LINE: message`).
pub(crate) fn read_lineages(dir: &Path) -> Result<Lineages, ImportError> {
    let renewal = dir.join("renewal");
    let listing = std::fs::read_dir(&renewal).map_err(|source| ImportError::List {
        path: renewal.clone(),
        source,
    })?;
    let mut confs = Vec::new();
    for entry in listing {
        let entry = entry.map_err(|source| ImportError::List {
            path: renewal.clone(),
            source,
        })?;
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "conf") {
            confs.push(path);
        }
        if confs.len() > MAX_LINEAGES {
            return Err(ImportError::TooMany {
                path: renewal,
                max: MAX_LINEAGES,
            });
        }
    }
    confs.sort();
    let mut lineages = Vec::new();
    let mut skipped = Vec::new();
    let mut problems = Vec::new();
    for conf in confs {
        match read_lineage(dir, &conf) {
            Ok(l) => lineages.push(l),
            Err(e) if e.is_skip() => skipped.push(crate::text::escape(&e.to_string()).into_owned()),
            Err(e) => problems.push(e),
        }
    }
    if problems.is_empty() {
        Ok(Lineages { lineages, skipped })
    } else {
        Err(ImportError::Lineages(problems))
    }
}

/// One renewal file, parsed and interpreted.
fn read_lineage(dir: &Path, conf: &Path) -> Result<Lineage, LineageError> {
    let shown = conf.display();
    let certbot_name = lineage_name(conf)?;
    let text = match fsutil::read_regular_string(conf, MAX_CONF_BYTES, Follow::No) {
        Err(fsutil::ReadError::Symlink(p)) => return Err(LineageError::Symlink(p)),
        read => read?,
    };
    let top = configobj::parse(&text).map_err(|source| LineageError::Syntax {
        path: conf.to_path_buf(),
        source,
    })?;
    let empty = Section::default();
    let params = top.section("renewalparams").map_or(&empty, |s| &s.section);
    let mut notes = Vec::new();
    let at = |e: &Entry| format!("{shown}:{}", e.line);
    let files = live_files(dir, &top, conf)?;
    let webroot_map: Vec<(String, String)> = params
        .section("webroot_map")
        .map(|m| {
            m.section
                .entries
                .iter()
                .map(|e| (e.key.to_lowercase(), e.value.as_text()))
                .collect()
        })
        .unwrap_or_default();
    let (domains, deployed) = match deployed_names(&files) {
        Ok((names, serial, not_after)) => (names, Some((serial, not_after))),
        Err(why) if !webroot_map.is_empty() => {
            notes.push(format!(
                "{shown}: the deployed certificate cannot be read ({why}); domains taken from \
                 [[webroot_map]]"
            ));
            (webroot_map.iter().map(|(d, _)| d.clone()).collect(), None)
        }
        Err(source) => {
            return Err(LineageError::NoDomains {
                path: conf.to_path_buf(),
                source,
            })
        }
    };
    let server = params
        .get("server")
        .map_or_else(|| LETSENCRYPT.to_string(), |e| e.value.as_text());
    let contact = params
        .get("account")
        .map(|e| account_contact(dir, &server, &e.value.as_text()))
        .transpose()
        .unwrap_or_else(|why| {
            notes.push(format!(
                "{shown}: the account's contact is not carried over: {why}"
            ));
            None
        })
        .filter(|c: &Vec<String>| !c.is_empty())
        .unwrap_or_else(|| cli_ini_email(dir));
    let contact = plain_contacts(contact, &shown.to_string(), &mut notes);
    let text_of = |k: &str, notes: &mut Vec<String>| string_param(params, k, &at, notes);
    let challenge = challenge(params, &webroot_map, &domains, &at, &mut notes);
    let preferred_chain = text_of("preferred_chain", &mut notes);
    let required_profile = text_of("required_profile", &mut notes);
    let preferred_profile = text_of("preferred_profile", &mut notes);
    let reuse_key = text_of("reuse_key", &mut notes).is_some_and(|v| v == "True");
    Ok(Lineage {
        certbot_name,
        conf: conf.to_path_buf(),
        key_type: key_type(params, &at, &mut notes),
        reload: reload_commands(dir, params, &files, &domains, &at, &mut notes),
        renew_before: renew_before(&top, &at, &mut notes),
        preferred_chain,
        profile: required_profile.or(preferred_profile),
        reuse_key,
        notes: {
            uncarried(&top, params, &challenge, &at, &mut notes);
            notes
        },
        challenge,
        files,
        domains,
        deployed,
        server,
        contact,
    })
}

/// The lineage's name: the renewal file's stem, when that lowercased is a renewd
/// certificate name ([`crate::config::check_ident`]); else the file is skipped.
fn lineage_name(conf: &Path) -> Result<String, LineageError> {
    let stem = conf.file_stem().unwrap_or_default();
    let lossy = stem.to_string_lossy();
    let lowered = lossy.to_lowercase();
    crate::config::check_ident(&lowered)
        .map(|()| lossy.to_string())
        .map_err(|why| LineageError::BadName {
            path: conf.to_path_buf(),
            name: excerpt(&lossy),
            why,
        })
}

/// The lineage's `live/` files (`cert`, `chain`, `fullchain`, `privkey` at the top of its
/// renewal file `conf`): each must be there, and be `DIR/live/NAME/KEY.pem` once lexically
/// normalised (`.` dropped, no `..`), all four in one `NAME`, as certbot writes them.
fn live_files(dir: &Path, top: &Section, conf: &Path) -> Result<LiveFiles, LineageError> {
    let live = dir.join("live");
    let mut lineage_dir: Option<PathBuf> = None;
    let mut file = |key: &'static str| {
        let Some(e) = top.get(key) else {
            return Err(LineageError::NoFile {
                path: conf.to_path_buf(),
                key,
            });
        };
        let written = e.value.as_text();
        let outside = || LineageError::OutsideLive {
            path: conf.to_path_buf(),
            line: e.line,
            key,
            value: configobj::excerpt_of(&written, 160),
            live: live.clone(),
        };
        let path = normal(Path::new(&written)).ok_or_else(outside)?;
        let parent = path.parent().filter(|p| p.parent() == Some(live.as_path()));
        let named = path.file_name() == Some(std::ffi::OsStr::new(&format!("{key}.pem")));
        match (parent, named, &lineage_dir) {
            (Some(p), true, None) => lineage_dir = Some(p.to_path_buf()),
            (Some(p), true, Some(d)) if p == d => {}
            _ => return Err(outside()),
        }
        Ok(path)
    };
    Ok(LiveFiles {
        cert: file("cert")?,
        chain: file("chain")?,
        fullchain: file("fullchain")?,
        privkey: file("privkey")?,
    })
}

/// `path` absolute and lexically normal: `.` components dropped; `None` when it is
/// relative or has a `..` component.
pub(crate) fn normal(path: &Path) -> Option<PathBuf> {
    use std::path::Component;
    if !path.is_absolute() {
        return None;
    }
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::RootDir | Component::Normal(_) => out.push(c),
            Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// The contact URLs that are plain `mailto:` addresses (no control characters, spaces,
/// quotes, `,`, `;`, `?` or `%`, one `@`, at most 254 characters); each other one is left
/// out with a note naming `shown` (the renewal file).
fn plain_contacts(contact: Vec<String>, shown: &str, notes: &mut Vec<String>) -> Vec<String> {
    let plain = |c: &str| {
        c.strip_prefix("mailto:").is_some_and(|addr| {
            let bad = |ch: char| {
                ch.is_control()
                    || ch.is_whitespace()
                    || matches!(ch, '"' | '\'' | '\\' | ',' | ';' | '?' | '%' | '<' | '>')
            };
            let parts: Vec<&str> = addr.split('@').collect();
            addr.len() <= 254
                && !addr.contains(bad)
                && parts.len() == 2
                && parts.iter().all(|p| !p.is_empty())
        })
    };
    let (kept, refused): (Vec<String>, Vec<String>) = contact.into_iter().partition(|c| plain(c));
    for c in refused {
        notes.push(format!(
            "{shown}: the account contact `{}` is not carried over: not a plain mailto: address",
            excerpt(&c)
        ));
    }
    kept
}

/// A string parameter certbot restores as a string (`preferred_chain`, the profiles,
/// `reuse_key`): `None` when absent, empty or `None`. A list (an unquoted comma) is not
/// carried over, with a note: certbot passed the list on as it was, and compared with a
/// name it never matches (for `preferred_chain`, certbot then took the CA's default chain).
fn string_param(
    params: &Section,
    key: &str,
    at: &dyn Fn(&Entry) -> String,
    notes: &mut Vec<String>,
) -> Option<String> {
    let e = params.get(key)?;
    match &e.value {
        Value::Str(v) if v.is_empty() || v == "None" => None,
        Value::Str(v) => Some(v.clone()),
        Value::List(items) => {
            notes.push(format!(
                "{}: `{key}` is a list ({}), not one value: certbot compared the whole list, \
                 which matches nothing (for preferred_chain it used the CA's default chain), so \
                 it is not carried over; quote the value in certbot's file if one name with a \
                 comma was meant",
                at(e),
                excerpt(&items.join(", "))
            ));
            None
        }
    }
}

/// `renew_before_expiry` (top level) as renewd's `renew_before`, noted when unreadable.
fn renew_before(
    top: &Section,
    at: &dyn Fn(&Entry) -> String,
    notes: &mut Vec<String>,
) -> Option<String> {
    let e = top.get("renew_before_expiry")?;
    let v = e.value.as_text();
    let d = certbot_interval(&v);
    if d.is_none() {
        notes.push(format!(
            "{}: renew_before_expiry `{}` is not a number of days, weeks or hours; \
             renewd's default (a third of the lifetime left) applies",
            at(e),
            excerpt(&v)
        ));
    }
    d
}

/// A note for every key renewd does not carry over (pre and post hooks, plugin settings,
/// the manual plugin's hooks unless they became the dns-01 hook).
fn uncarried(
    top: &Section,
    params: &Section,
    challenge: &Challenge,
    at: &dyn Fn(&Entry) -> String,
    notes: &mut Vec<String>,
) {
    for (section, entries) in [("", &top.entries), ("renewalparams", &params.entries)] {
        let hook_carried = |k: &str| {
            matches!(challenge, Challenge::ManualDns(_))
                && matches!(k, "manual_auth_hook" | "manual_cleanup_hook")
        };
        for e in entries
            .iter()
            .filter(|e| !carried(section, &e.key) && !hook_carried(&e.key))
        {
            let (key, value) = (excerpt(&e.key), excerpt(&e.value.as_text()));
            match challenge {
                Challenge::Listen(addr) if matches!(e.key.as_str(), "pre_hook" | "post_hook") => {
                    notes.push(format!(
                        "{}: `{key}` = `{value}` is not carried over: renewd runs no command \
                         around a renewal, and its built-in http-01 listener binds {addr} itself, \
                         so that port must be free whenever a renewal runs (certbot's hooks freed \
                         it). If a service holds it, use a webroot challenge that service serves, \
                         or have it proxy /.well-known/acme-challenge/ to a `listen` on another \
                         port",
                        at(e)
                    ));
                }
                _ => notes.push(format!(
                    "{}: `{key}` = `{value}` is not carried over (renewd has no such setting)",
                    at(e)
                )),
            }
        }
    }
}

/// Whether a key of the renewal file (`section` "" is the top level) is carried over or
/// has no meaning once renewd renews (certbot's own directories, versions, account id).
fn carried(section: &str, key: &str) -> bool {
    const TOP: &[&str] = &[
        "version",
        "archive_dir",
        "cert",
        "privkey",
        "chain",
        "fullchain",
        "renew_before_expiry",
    ];
    const PARAMS: &[&str] = &[
        "account",
        "server",
        "authenticator",
        "installer",
        "webroot_path",
        "key_type",
        "rsa_key_size",
        "elliptic_curve",
        "http01_port",
        "http01_address",
        "renew_hook",
        "preferred_chain",
        "preferred_profile",
        "required_profile",
        "reuse_key",
        "config_dir",
        "work_dir",
        "logs_dir",
        "manual_public_ip_logging_ok",
        "pref_challs",
        "strict_permissions",
    ];
    match section {
        "" => TOP.contains(&key),
        _ => PARAMS.contains(&key),
    }
}

/// The deployed certificate's names, serial and notAfter, read through certbot's symlinks
/// from `cert.pem` (else `fullchain.pem`).
fn deployed_names(
    files: &LiveFiles,
) -> Result<(Vec<String>, String, std::time::SystemTime), DeployedError> {
    let read = |path: &Path| -> Result<x509::CertInfo, DeployedError> {
        let pem = fsutil::read_regular(path, caps::CERTIFICATE, Follow::Yes)?;
        let invalid = |source| DeployedError::Invalid {
            path: path.to_path_buf(),
            source,
        };
        let ders = x509::pem_certificates(&pem).map_err(invalid)?;
        let first = ders
            .first()
            .ok_or_else(|| DeployedError::Empty(path.to_path_buf()))?;
        x509::CertInfo::parse_der(first).map_err(invalid)
    };
    let (path, info) = match read(&files.cert) {
        Ok(info) => (&files.cert, info),
        Err(_) => (&files.fullchain, read(&files.fullchain)?),
    };
    let mut names = info.dns_names.clone();
    names.extend(info.ip_addrs.iter().map(|ip| ip.to_string()));
    if names.is_empty() {
        return Err(DeployedError::NoNames(path.to_path_buf()));
    }
    Ok((names, info.serial_hex, info.not_after))
}

/// `key_type` with `rsa_key_size` or `elliptic_curve`, as renewd's key type; a size or
/// curve renewd does not generate is replaced by the nearest stronger one, with a note.
/// certbot before 2.0 wrote no `key_type` and made RSA keys.
fn key_type(params: &Section, at: &dyn Fn(&Entry) -> String, notes: &mut Vec<String>) -> KeyType {
    let get = |k: &str| params.get(k);
    let kind = get("key_type").map_or_else(|| "rsa".to_string(), |e| e.value.as_text());
    if kind == "ecdsa" {
        let curve = get("elliptic_curve").map_or_else(|| "secp256r1".into(), |e| e.value.as_text());
        return match curve.as_str() {
            "secp256r1" => KeyType::EcdsaP256,
            "secp384r1" => KeyType::EcdsaP384,
            other => {
                if let Some(e) = get("elliptic_curve") {
                    notes.push(format!(
                        "{}: elliptic_curve `{}` is not one renewd generates; ecdsa-p384 is used",
                        at(e),
                        excerpt(other)
                    ));
                }
                KeyType::EcdsaP384
            }
        };
    }
    if kind != "rsa" {
        if let Some(e) = get("key_type") {
            notes.push(format!(
                "{}: key_type `{}` is unknown; rsa-2048 is used",
                at(e),
                excerpt(&kind)
            ));
        }
    }
    let size = get("rsa_key_size").map_or_else(|| "2048".into(), |e| e.value.as_text());
    match size.parse::<u32>() {
        Ok(2048) => KeyType::Rsa2048,
        Ok(3072) => KeyType::Rsa3072,
        Ok(4096) => KeyType::Rsa4096,
        parsed => {
            let chosen = match parsed {
                Ok(n) if n < 2048 => KeyType::Rsa2048,
                Ok(n) if n < 3072 => KeyType::Rsa3072,
                _ => KeyType::Rsa4096,
            };
            if let Some(e) = get("rsa_key_size") {
                notes.push(format!(
                    "{}: rsa_key_size `{}` is not one renewd generates; {} is used",
                    at(e),
                    excerpt(&size),
                    chosen.as_str()
                ));
            }
            chosen
        }
    }
}

/// How the lineage's challenges are answered: the webroots (the most used one of
/// `[[webroot_map]]` for every name, the others per name), the standalone listener's
/// address, or a stub.
fn challenge(
    params: &Section,
    webroot_map: &[(String, String)],
    domains: &[String],
    at: &dyn Fn(&Entry) -> String,
    notes: &mut Vec<String>,
) -> Challenge {
    let Some(auth) = params.get("authenticator") else {
        return Challenge::Stub {
            plugin: "(none recorded)".into(),
            dns: false,
        };
    };
    let plugin = auth.value.as_text();
    match plugin.as_str() {
        "webroot" => {
            let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
            for d in domains {
                if let Some((_, root)) = webroot_map.iter().find(|(k, _)| k == d) {
                    *counts.entry(root.as_str()).or_default() += 1;
                }
            }
            let listed = params
                .get("webroot_path")
                .map(|e| e.value.as_list())
                .unwrap_or_default();
            let chosen = counts
                .iter()
                .max_by_key(|(_, n)| **n)
                .map(|(r, _)| r.to_string())
                .or_else(|| listed.first().cloned());
            let Some(root) = chosen else {
                notes.push(format!(
                    "{}: webroot authenticator without a webroot",
                    at(auth)
                ));
                return Challenge::Stub { plugin, dns: false };
            };
            let others = webroot_map
                .iter()
                .filter(|(d, r)| *r != root && domains.contains(d))
                .map(|(d, r)| (d.clone(), PathBuf::from(r)))
                .collect();
            Challenge::Webroot {
                root: PathBuf::from(root),
                others,
            }
        }
        "standalone" => {
            let text = |k: &str| {
                params
                    .get(k)
                    .map(|e| e.value.as_text())
                    .filter(|v| !v.is_empty())
            };
            let port = text("http01_port").unwrap_or_else(|| "80".into());
            let addr = match text("http01_address") {
                Some(a) if a.contains(':') => format!("[{a}]:{port}"),
                Some(a) => format!("{a}:{port}"),
                None => format!("[::]:{port}"),
            };
            Challenge::Listen(addr)
        }
        "manual" => match manual_dns_hook(params) {
            Some(argv) => Challenge::ManualDns(argv),
            None => Challenge::Stub { dns: true, plugin },
        },
        other => Challenge::Stub {
            dns: other.starts_with("dns"),
            plugin: other.to_string(),
        },
    }
}

/// The `email` of certbot's `cli.ini` (`DIR/cli.ini`, comma-separated addresses) as
/// `mailto:` URLs: certbot 1.x and later keep no contact in `regr.json`. Empty when there
/// is none or the file cannot be read.
fn cli_ini_email(dir: &Path) -> Vec<String> {
    let Ok(text) = fsutil::read_regular_string(&dir.join("cli.ini"), MAX_SMALL_FILE, Follow::Yes)
    else {
        return Vec::new();
    };
    text.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with(['#', ';']))
        .filter_map(|l| l.split_once('='))
        .find(|(k, _)| k.trim() == "email")
        .map(|(_, v)| {
            v.split(',')
                .map(str::trim)
                .filter(|m| m.contains('@') && !m.contains(char::is_whitespace))
                .map(|m| format!("mailto:{m}"))
                .collect()
        })
        .unwrap_or_default()
}

/// certbot's `renew_before_expiry` (`30 days`, `2 weeks`, `36 hours`) as renewd's duration.
fn certbot_interval(v: &str) -> Option<String> {
    let mut words = v.split_whitespace();
    let n: u64 = words.next()?.parse().ok()?;
    let unit = words.next().unwrap_or("days");
    if words.next().is_some() {
        return None;
    }
    match unit.trim_end_matches('s') {
        "day" | "d" => Some(format!("{n}d")),
        "week" | "w" => Some(format!("{}d", n.checked_mul(7)?)),
        "hour" | "h" => Some(format!("{n}h")),
        _ => None,
    }
}

/// The contact URLs of certbot's account `account` at `server`:
/// `accounts/HOST[:PORT]/PATH/ACCOUNT/regr.json`'s `body.contact` (empty when the account
/// was registered without an email).
fn account_contact(dir: &Path, server: &str, account: &str) -> Result<Vec<String>, ContactError> {
    let server_path = server
        .split_once("://")
        .map_or(server, |(_, rest)| rest)
        .trim_end_matches('/');
    if account.contains('/') || server_path.split('/').any(|c| c == "..") {
        return Err(ContactError::NotPlain {
            account: account.to_string(),
            server: server.to_string(),
        });
    }
    let path = dir
        .join("accounts")
        .join(server_path)
        .join(account)
        .join("regr.json");
    let bytes = fsutil::read_regular(&path, MAX_SMALL_FILE, Follow::Yes)?;
    let regr: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|source| ContactError::Json {
            path: path.clone(),
            source,
        })?;
    Ok(regr["body"]["contact"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|c| c.as_str())
                .filter(|c| c.starts_with("mailto:"))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_contact_comes_from_regr_json_else_cli_ini() {
        let dir = tempfile::tempdir().expect("tempdir");
        let acct = dir.path().join("accounts/acme.test/directory/abc");
        std::fs::create_dir_all(&acct).expect("mkdir");
        let server = "https://acme.test/directory";
        std::fs::write(
            acct.join("regr.json"),
            r#"{"body": {"contact": ["mailto:old@example.org"]}, "uri": "u"}"#,
        )
        .expect("write");
        assert_eq!(
            account_contact(dir.path(), server, "abc").expect("read"),
            ["mailto:old@example.org"]
        );
        std::fs::write(acct.join("regr.json"), r#"{"body": {}, "uri": "u"}"#).expect("write");
        assert!(account_contact(dir.path(), server, "abc")
            .expect("read")
            .is_empty());
        assert!(account_contact(dir.path(), server, "../x").is_err());
        assert!(cli_ini_email(dir.path()).is_empty());
        std::fs::write(
            dir.path().join("cli.ini"),
            "# Because we are using logrotate\nmax-log-backups = 0\nemail = ops@example.org, b@example.org\n",
        )
        .expect("write");
        assert_eq!(
            cli_ini_email(dir.path()),
            ["mailto:ops@example.org", "mailto:b@example.org"]
        );
    }

    #[test]
    fn fifos_and_oversized_renewal_files_are_refused_by_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let renewal = dir.path().join("renewal");
        std::fs::create_dir_all(&renewal).expect("mkdir");
        nix::unistd::mkfifo(
            &renewal.join("fifo.conf"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .expect("mkfifo");
        let big = "# padding\n".repeat(MAX_CONF_BYTES as usize / 10 + 1);
        std::fs::write(renewal.join("big.conf"), big).expect("write");
        std::fs::write(renewal.join("ignored.txt"), "not a lineage").expect("write");
        let Err(ImportError::Lineages(errors)) = read_lineages(dir.path()) else {
            panic!("every bad file is an error");
        };
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(text.len(), 2, "{text:?}");
        assert!(
            text[0].contains("big.conf: larger than 65536 bytes"),
            "{text:?}"
        );
        assert!(text[1].contains("fifo.conf: is a FIFO"), "{text:?}");
    }

    #[test]
    fn renew_before_expiry_reads_days_weeks_and_hours() {
        assert_eq!(certbot_interval("30 days").as_deref(), Some("30d"));
        assert_eq!(certbot_interval("2 weeks").as_deref(), Some("14d"));
        assert_eq!(certbot_interval("36 hours").as_deref(), Some("36h"));
        assert_eq!(certbot_interval("1 day").as_deref(), Some("1d"));
        assert_eq!(certbot_interval("soon"), None);
        assert_eq!(certbot_interval("3 fortnights"), None);
    }

    fn params(text: &str) -> Section {
        configobj::parse(text).expect("parses")
    }

    #[test]
    fn key_types_map_and_unsupported_sizes_are_noted() {
        let at = |e: &Entry| format!("f:{}", e.line);
        let mut notes = Vec::new();
        let cases = [
            ("key_type = ecdsa\n", KeyType::EcdsaP256),
            (
                "key_type = ecdsa\nelliptic_curve = secp384r1\n",
                KeyType::EcdsaP384,
            ),
            ("key_type = rsa\nrsa_key_size = 3072\n", KeyType::Rsa3072),
            ("rsa_key_size = 4096\n", KeyType::Rsa4096),
            ("", KeyType::Rsa2048),
        ];
        for (text, want) in cases {
            assert_eq!(key_type(&params(text), &at, &mut notes), want, "{text}");
        }
        assert!(notes.is_empty(), "{notes:?}");
        let got = key_type(
            &params("key_type = ecdsa\nelliptic_curve = secp521r1\n"),
            &at,
            &mut notes,
        );
        assert_eq!(got, KeyType::EcdsaP384);
        let got = key_type(&params("rsa_key_size = 2560\n"), &at, &mut notes);
        assert_eq!(got, KeyType::Rsa3072);
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(
            notes[0].starts_with("f:2: elliptic_curve `secp521r1`"),
            "{notes:?}"
        );
    }

    #[test]
    fn standalone_webroot_and_plugins_become_challenges() {
        let at = |e: &Entry| format!("f:{}", e.line);
        let mut notes = Vec::new();
        let domains = vec!["a.test".to_string(), "b.test".to_string()];
        let p = params("authenticator = standalone\nhttp01_port = 8080\nhttp01_address = ::1\n");
        assert_eq!(
            challenge(&p, &[], &domains, &at, &mut notes),
            Challenge::Listen("[::1]:8080".into())
        );
        let p = params("authenticator = standalone\n");
        assert_eq!(
            challenge(&p, &[], &domains, &at, &mut notes),
            Challenge::Listen("[::]:80".into())
        );
        let map = vec![
            ("a.test".to_string(), "/srv/a".to_string()),
            ("b.test".to_string(), "/srv/b".to_string()),
            ("c.test".to_string(), "/srv/a".to_string()),
        ];
        let p = params("authenticator = webroot\nwebroot_path = /srv/a, /srv/b\n");
        let domains3 = vec!["a.test".into(), "b.test".into(), "c.test".into()];
        assert_eq!(
            challenge(&p, &map, &domains3, &at, &mut notes),
            Challenge::Webroot {
                root: "/srv/a".into(),
                others: vec![("b.test".into(), "/srv/b".into())]
            }
        );
        assert!(notes.is_empty(), "{notes:?}");
        let p =
            params("authenticator = manual\npref_challs = dns-01,\nmanual_auth_hook = /bin/auth\n");
        let Challenge::ManualDns(argv) = challenge(&p, &[], &domains, &at, &mut notes) else {
            panic!("a manual dns-01 lineage with an auth hook keeps it");
        };
        assert_eq!(
            argv[..3],
            [
                "env",
                "CERTBOT_AUTH_HOOK=/bin/auth",
                "CERTBOT_CLEANUP_HOOK="
            ]
        );
        let p = params("authenticator = manual\npref_challs = http-01,\nmanual_auth_hook = /a\n");
        assert_eq!(
            challenge(&p, &[], &domains, &at, &mut notes),
            Challenge::Stub {
                plugin: "manual".into(),
                dns: true
            },
            "renewd has no http-01 hooks"
        );
        let p = params("authenticator = dns-cloudflare\n");
        assert_eq!(
            challenge(&p, &[], &domains, &at, &mut notes),
            Challenge::Stub {
                plugin: "dns-cloudflare".into(),
                dns: true
            }
        );
    }
}

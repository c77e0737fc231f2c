//! What `[discovery]` says beyond `paths`: `listeners`, `pkcs12_password_files` and the
//! `[[discovery.owner]]` rules, with the glob and match syntax they share.
//!
//! ```toml
//! [discovery]
//! paths = ["/etc/ssl", "/opt/app"]
//! listeners = true
//! pkcs12_password_files = { "/opt/app/keystore.p12" = "/etc/renewd/app-p12.pass",
//!                           "/opt/tomcat/**/*.pfx" = "/etc/renewd/tomcat-p12.pass" }
//!
//! [[discovery.owner]]
//! match = "/etc/postgresql/**"     # a path glob, "port:5432" or "listener:ADDR:PORT"
//! owner = "dba@example.org"
//! service = "postgresql"
//! ```

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use super::problem::{Location, Problem};
use super::schema::{as_bool, as_file_path, as_nonempty_str, as_str, check_keys, find};
use super::source::{Entry, Node, Val};

/// The keys of `[discovery]` read here (`paths` and `alert_before` are read by
/// `sections.rs`).
pub(super) const DISCOVERY_SOURCE_KEYS: &[&str] = &["listeners", "pkcs12_password_files", "owner"];

/// The keys of one `[[discovery.owner]]`.
const OWNER_KEYS: &[&str] = &["match", "owner", "service"];

/// Why a glob or an owner rule's `match` is not acceptable, in the words printed after
/// `FILE:LINE:COL: `.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidMatch(String);

/// An absolute path glob: `*`, `?`, `[abc]` and `{a,b}` match within one path component,
/// `**` matches any number of directories (`/etc/postgresql/**` is every file below
/// `/etc/postgresql`). A path without glob characters matches that path only.
#[derive(Debug, Clone)]
pub struct PathGlob {
    pattern: String,
    matcher: globset::GlobMatcher,
}

impl PathGlob {
    /// Compiles `pattern`. Errors: not absolute, or not a valid glob (an unclosed `[` or
    /// `{`, a `**` inside a component).
    pub fn new(pattern: &str) -> Result<PathGlob, InvalidMatch> {
        if !pattern.starts_with('/') {
            return Err(InvalidMatch(format!(
                "a path glob must be absolute, found `{pattern}`"
            )));
        }
        let glob = globset::GlobBuilder::new(pattern)
            .literal_separator(true)
            .backslash_escape(true)
            .build()
            .map_err(|e| InvalidMatch(format!("`{pattern}` is not a valid glob: {}", e.kind())))?;
        Ok(PathGlob {
            pattern: pattern.to_string(),
            matcher: glob.compile_matcher(),
        })
    }

    /// The glob as written.
    pub fn as_str(&self) -> &str {
        &self.pattern
    }

    /// Whether `path` (absolute, as discovery names it) matches.
    pub fn is_match(&self, path: &Path) -> bool {
        self.matcher.is_match(path)
    }
}

impl PartialEq for PathGlob {
    fn eq(&self, other: &Self) -> bool {
        self.pattern == other.pattern
    }
}

/// One entry of `pkcs12_password_files`: the PKCS#12 bundles a glob names, and the file
/// whose content (one trailing newline removed) is their password.
#[derive(Debug, Clone, PartialEq)]
pub struct Pkcs12PasswordFile {
    pub bundles: PathGlob,
    pub password_file: PathBuf,
    /// Where the entry's key was written.
    pub location: Location,
}

/// What an owner rule's `match` selects.
#[derive(Debug, Clone, PartialEq)]
pub enum OwnerMatch {
    /// A discovered file (PEM, DER or PKCS#12) whose path matches the glob.
    Path(PathGlob),
    /// A certificate served by a TLS listener: `port:N` is any address on port N;
    /// `listener:ADDR:PORT` takes an IPv4 address, `[IPv6]` or `*`, and a port or `*`.
    Listener {
        ip: Option<IpAddr>,
        port: Option<u16>,
    },
}

impl OwnerMatch {
    /// Parses a `match` value: an absolute path glob, `port:N` or `listener:ADDR:PORT`.
    pub fn parse(s: &str) -> Result<OwnerMatch, InvalidMatch> {
        if s.starts_with('/') {
            return PathGlob::new(s).map(OwnerMatch::Path);
        }
        let port = |p: &str| -> Result<Option<u16>, InvalidMatch> {
            if p == "*" {
                return Ok(None);
            }
            match p.parse::<u16>() {
                Ok(n) if n > 0 => Ok(Some(n)),
                _ => Err(InvalidMatch(format!(
                    "`{p}` in `{s}` is not a port (1-65535 or `*`)"
                ))),
            }
        };
        if let Some(p) = s.strip_prefix("port:") {
            return match port(p)? {
                Some(n) => Ok(OwnerMatch::Listener {
                    ip: None,
                    port: Some(n),
                }),
                None => Err(InvalidMatch(format!(
                    "`{s}`: `port:` takes a number; for any port write `listener:*:*`"
                ))),
            };
        }
        if let Some(rest) = s.strip_prefix("listener:") {
            let Some((addr, p)) = rest.rsplit_once(':') else {
                return Err(InvalidMatch(format!(
                    "`{s}` must be `listener:ADDR:PORT`, like `listener:*:443`"
                )));
            };
            let ip = match addr {
                "*" => None,
                a => {
                    let bare = a
                        .strip_prefix('[')
                        .and_then(|a| a.strip_suffix(']'))
                        .unwrap_or(a);
                    match bare.parse::<IpAddr>() {
                        Ok(ip) if ip.is_ipv6() == a.starts_with('[') => Some(ip),
                        _ => {
                            return Err(InvalidMatch(format!(
                                "`{a}` in `{s}` is not an IPv4 address, `[IPv6]` or `*`"
                            )))
                        }
                    }
                }
            };
            return Ok(OwnerMatch::Listener { ip, port: port(p)? });
        }
        Err(InvalidMatch(format!(
            "`match` must be an absolute path glob (\"/etc/postgresql/**\"), \"port:5432\" or \
             \"listener:ADDR:PORT\" (\"listener:*:443\"), found `{s}`"
        )))
    }
}

/// One `[[discovery.owner]]`: who answers for the discovered certificates it matches.
#[derive(Debug, Clone, PartialEq)]
pub struct OwnerRule {
    pub matches: OwnerMatch,
    pub owner: Option<String>,
    pub service: Option<String>,
    /// The rule's table.
    pub location: Location,
}

/// `renewd check`'s look at the password files of `pkcs12_password_files`: each can be
/// read, is not empty, and is not readable by every user. Warnings all (at the entry's
/// key): the bundles it opens are reported by discovery, nothing else is affected.
pub(super) fn check_password_files(files: &[Pkcs12PasswordFile], p: &mut Vec<Problem>) {
    use std::os::unix::fs::PermissionsExt;
    for f in files {
        let mut found = Vec::new();
        super::environment::check_secret_file(
            "the PKCS#12 password file",
            &f.password_file,
            &f.location,
            &mut found,
        );
        p.extend(
            found
                .into_iter()
                .map(|e| Problem::warning(e.location, e.message)),
        );
        if std::fs::metadata(&f.password_file).is_ok_and(|m| m.permissions().mode() & 0o004 != 0) {
            p.push(Problem::warning(
                f.location.clone(),
                format!(
                    "the PKCS#12 password file `{}` is readable by every user: chmod o-r it",
                    f.password_file.display()
                ),
            ));
        }
    }
}

/// `[discovery]`'s `listeners`, `pkcs12_password_files` and `owner` keys, parsed.
#[derive(Debug, Default)]
pub(super) struct Sources {
    pub(super) listeners: bool,
    pub(super) pkcs12_password_files: Vec<Pkcs12PasswordFile>,
    pub(super) owners: Vec<OwnerRule>,
}

/// Reads the keys of [`DISCOVERY_SOURCE_KEYS`] from `[discovery]`'s entries; each mistake
/// goes to `p` at its place.
pub(super) fn build_sources(entries: &[Entry], p: &mut Vec<Problem>) -> Sources {
    let mut sources = Sources::default();
    if let Some(e) = find(entries, "listeners") {
        sources.listeners = as_bool(&e.key, &e.node, p).unwrap_or(false);
    }
    if let Some(e) = find(entries, "pkcs12_password_files") {
        sources.pkcs12_password_files = password_files(&e.node, p);
    }
    if let Some(e) = find(entries, "owner") {
        sources.owners = owner_rules(&e.node, p);
    }
    sources
}

fn password_files(node: &Node, p: &mut Vec<Problem>) -> Vec<Pkcs12PasswordFile> {
    let Val::Table(entries) = &node.val else {
        p.push(Problem::new(
            node.loc.clone(),
            format!(
                "`pkcs12_password_files` must be a table from bundle path or glob to password \
                 file, like {{ \"/opt/app/keystore.p12\" = \"/etc/renewd/app.pass\" }}, found {}",
                node.val.kind()
            ),
        ));
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries {
        let bundles = match PathGlob::new(&e.key) {
            Ok(g) => Some(g),
            Err(why) => {
                p.push(Problem::new(
                    e.key_loc.clone(),
                    format!("in `pkcs12_password_files`: {why}"),
                ));
                None
            }
        };
        let file = as_file_path("the password file", &e.node, p);
        if let (Some(bundles), Some(password_file)) = (bundles, file) {
            out.push(Pkcs12PasswordFile {
                bundles,
                password_file,
                location: e.key_loc.clone(),
            });
        }
    }
    out
}

fn owner_rules(node: &Node, p: &mut Vec<Problem>) -> Vec<OwnerRule> {
    let Val::Array(items) = &node.val else {
        p.push(Problem::new(
            node.loc.clone(),
            "write owner rules as [[discovery.owner]] tables with `match`, `owner` and `service`",
        ));
        return Vec::new();
    };
    let mut rules = Vec::new();
    for item in items {
        let Val::Table(entries) = &item.val else {
            p.push(Problem::new(
                item.loc.clone(),
                format!(
                    "each owner rule must be a table ([[discovery.owner]]), found {}",
                    item.val.kind()
                ),
            ));
            continue;
        };
        if let Some(rule) = owner_rule(&item.loc, entries, p) {
            rules.push(rule);
        }
    }
    rules
}

/// One `[[discovery.owner]]`; `None` when anything about it is wrong.
fn owner_rule(loc: &Location, entries: &[Entry], p: &mut Vec<Problem>) -> Option<OwnerRule> {
    let start = p.len();
    check_keys(entries, OWNER_KEYS, "in [[discovery.owner]]", p);
    let matches = match find(entries, "match") {
        Some(e) => as_str(&e.key, &e.node, p).and_then(|s| match OwnerMatch::parse(s) {
            Ok(m) => Some(m),
            Err(why) => {
                p.push(Problem::new(e.node.loc.clone(), why.to_string()));
                None
            }
        }),
        None => {
            p.push(Problem::new(
                loc.clone(),
                "[[discovery.owner]] needs `match`: a path glob, \"port:N\" or \"listener:ADDR:PORT\"",
            ));
            None
        }
    };
    let text = |key: &str, p: &mut Vec<Problem>| {
        find(entries, key).and_then(|e| as_nonempty_str(&e.key, &e.node, p))
    };
    let owner = text("owner", p);
    let service = text("service", p);
    if find(entries, "owner").is_none() && find(entries, "service").is_none() {
        p.push(Problem::new(
            loc.clone(),
            "[[discovery.owner]] needs `owner`, `service` or both",
        ));
    }
    (p.len() == start).then_some(OwnerRule {
        matches: matches?,
        owner,
        service,
        location: loc.clone(),
    })
}

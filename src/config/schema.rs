//! The schema: every configuration key declared once, and the typed readers of values.
//!
//! A table of [`KeySpec`]s per kind of table (`[[certificate]]`, `[ca.NAME]`, the top
//! level) names each key, says where it may be written, and gives the function that parses
//! and stores its value. The known-key lists for unknown-key errors, the closest-key
//! suggestions, the per-key parsing and `[defaults]` inheritance all come from them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::build::TOP_KEYS;
use super::certificate::CERT_KEYS;
use std::collections::BTreeMap;

use super::problem::{Location, Problem};
use super::source::{Entry, Node, Val};
use super::value::{check_date, format_duration, parse_duration, parse_socket_addr};

/// Keys a user might reach for to write a secret inline, and the key to use instead.
pub(super) const SECRET_KEYS: &[(&str, &str)] = &[
    ("eab_hmac_key", "eab_hmac_key_file"),
    ("tsig_key", "tsig_key_file"),
];

/// Where a key may be written besides the table it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Scope {
    /// Only in its own table (a certificate's `name`, every key of a `[ca.NAME]`).
    Own,
    /// Also in `[defaults]`, from where every `[[certificate]]` that does not set it
    /// inherits it.
    Inheritable,
}

/// One configuration key: its name, where it may be written, and how its value is parsed
/// into `D` (the value being built for the table, e.g. a [`super::CertConfig`]) with the
/// help of `C` (what the parse needs to know besides the value, e.g. the defined CAs).
pub(super) struct KeySpec<D, C = ()> {
    pub(super) name: &'static str,
    pub(super) scope: Scope,
    /// Whether the table is incomplete without it (from `[defaults]` or its own).
    pub(super) required: bool,
    /// Stores the value of the entry in the draft, or reports why it cannot.
    pub(super) parse: Parser<D, C>,
}

impl<D, C> KeySpec<D, C> {
    /// A key only its own table may set.
    pub(super) const fn own(name: &'static str, parse: Parser<D, C>) -> Self {
        KeySpec {
            name,
            scope: Scope::Own,
            required: false,
            parse,
        }
    }

    /// A certificate key `[defaults]` may set too.
    pub(super) const fn inheritable(name: &'static str, parse: Parser<D, C>) -> Self {
        KeySpec {
            scope: Scope::Inheritable,
            ..KeySpec::own(name, parse)
        }
    }

    /// The same key, required.
    pub(super) const fn required(self) -> Self {
        KeySpec {
            required: true,
            ..self
        }
    }
}

/// How a key's value is parsed and stored in the draft `D`, with the help of `C`.
pub(super) type Parser<D, C> = fn(&mut D, &Entry, &C, &mut Vec<Problem>);

/// A value being built from a table; one that keeps where its keys were written (a
/// certificate, a CA, the top level) records each.
pub(super) trait Draft {
    fn written_at(&mut self, _key: &str, _at: &Location) {}
}

/// The names `table` declares, in its order (the order suggestions prefer on a tie).
pub(super) fn key_names<D, C>(table: &[KeySpec<D, C>]) -> Vec<&'static str> {
    table.iter().map(|k| k.name).collect()
}

/// The declaration of `key` in `table`.
pub(super) fn spec<'t, D, C>(table: &'t [KeySpec<D, C>], key: &str) -> Option<&'t KeySpec<D, C>> {
    table.iter().find(|k| k.name == key)
}

/// Parses every entry that `table` declares into `draft`, recording where it was written;
/// other entries are left to [`check_keys`].
pub(super) fn parse_keys<'e, D: Draft, C>(
    table: &[KeySpec<D, C>],
    entries: impl IntoIterator<Item = &'e Entry>,
    draft: &mut D,
    context: &C,
    p: &mut Vec<Problem>,
) {
    for entry in entries {
        if let Some(spec) = spec(table, &entry.key) {
            draft.written_at(&entry.key, &entry.node.loc);
            (spec.parse)(draft, entry, context, p);
        }
    }
}

pub(super) fn suggest<'k>(key: &str, known: &[&'k str]) -> Option<&'k str> {
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
pub(super) fn check_keys(entries: &[Entry], known: &[&str], context: &str, p: &mut Vec<Problem>) {
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
        } else if context != "at the top level" && spec(TOP_KEYS, key).is_some() {
            message.push_str("; top-level keys must come before the first [table] header");
        } else if spec(CERT_KEYS, key).is_some()
            && !matches!(context, "in [[certificate]]" | "in [defaults]")
        {
            message.push_str("; certificate keys belong in [[certificate]] or [defaults]");
        }
        p.push(Problem::new(entry.key_loc.clone(), message));
    }
}

pub(super) fn wrong_type(key: &str, node: &Node, expected: &str, p: &mut Vec<Problem>) {
    p.push(Problem::new(
        node.loc.clone(),
        format!("`{key}` must be {expected}, found {}", node.val.kind()),
    ));
}

pub(super) fn as_str<'n>(key: &str, node: &'n Node, p: &mut Vec<Problem>) -> Option<&'n str> {
    match &node.val {
        Val::Str(s) => Some(s),
        _ => {
            wrong_type(key, node, "a string", p);
            None
        }
    }
}

pub(super) fn as_nonempty_str(key: &str, node: &Node, p: &mut Vec<Problem>) -> Option<String> {
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

pub(super) fn as_bool(key: &str, node: &Node, p: &mut Vec<Problem>) -> Option<bool> {
    match node.val {
        Val::Bool(b) => Some(b),
        _ => {
            wrong_type(key, node, "a boolean (true or false)", p);
            None
        }
    }
}

pub(super) fn as_int(key: &str, node: &Node, p: &mut Vec<Problem>) -> Option<i64> {
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

pub(super) fn as_abs_path(key: &str, node: &Node, p: &mut Vec<Problem>) -> Option<PathBuf> {
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
pub(super) fn as_file_path(key: &str, node: &Node, p: &mut Vec<Problem>) -> Option<PathBuf> {
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
pub(super) fn as_str_list<'n>(
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
pub(super) fn as_argv(key: &str, node: &Node, p: &mut Vec<Problem>) -> Option<Vec<String>> {
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

pub(super) fn as_duration(
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

pub(super) fn as_socket_addr(
    key: &str,
    node: &Node,
    default_port: Option<u16>,
    p: &mut Vec<Problem>,
) -> Option<SocketAddr> {
    let s = as_str(key, node, p)?;
    let addr = parse_socket_addr(s, default_port).filter(|a| a.port() != 0);
    if addr.is_none() {
        let rule = match default_port {
            Some(port) => format!(
                "an IP address, alone (port {port}) or with a port other than 0, like \
                 `10.0.0.53`, `10.0.0.53:5353` or `[::1]:{port}`"
            ),
            None => "an IP address and a port other than 0, like `127.0.0.1:9443` or `[::]:80`"
                .to_string(),
        };
        p.push(Problem::new(
            node.loc.clone(),
            format!("`{key}` must be {rule}, found `{}`", crate::text::escape(s)),
        ));
    }
    addr
}

pub(super) fn as_table<'n>(
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

/// `paths`: a list of absolute paths, each once; each with where it was written.
pub(super) fn as_abs_path_list(
    key: &str,
    node: &Node,
    p: &mut Vec<Problem>,
) -> Vec<(PathBuf, Location)> {
    let mut paths: Vec<(PathBuf, Location)> = Vec::new();
    for (s, loc) in as_str_list(key, node, p).unwrap_or_default() {
        let path = PathBuf::from(s);
        if !path.is_absolute() || s.contains('\0') {
            p.push(Problem::new(
                loc.clone(),
                format!("each of `{key}` must be an absolute path, found `{s}`"),
            ));
        } else if paths.iter().any(|(q, _)| *q == path) {
            p.push(Problem::new(
                loc.clone(),
                format!("`{s}` is listed twice in `{key}`"),
            ));
        } else {
            paths.push((path, loc.clone()));
        }
    }
    paths
}

/// A calendar day (`review_by`): a `YYYY-MM-DD` string or a TOML local date, returned as
/// `YYYY-MM-DD`.
pub(super) fn as_date(key: &str, node: &Node, p: &mut Vec<Problem>) -> Option<String> {
    let date = match &node.val {
        Val::Str(s) => Some(s.clone()),
        Val::Datetime(d) if d.time.is_none() && d.offset.is_none() => d
            .date
            .map(|d| format!("{:04}-{:02}-{:02}", d.year, d.month, d.day)),
        _ => None,
    };
    match date {
        Some(date) => or_report(node, check_date(&date), p).map(|()| date),
        None => {
            wrong_type(key, node, "a date like \"2027-03-01\"", p);
            None
        }
    }
}

/// A user or group name as `getpwnam`/`getgrnam` take it.
pub(super) fn as_account_name(key: &str, node: &Node, p: &mut Vec<Problem>) -> Option<String> {
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

pub(super) fn find<'e>(entries: &'e [Entry], key: &str) -> Option<&'e Entry> {
    entries.iter().find(|e| e.key == key)
}

/// The value of `result`, or `None` with its error reported at `node`.
pub(super) fn or_report<T, E: Into<String>>(
    node: &Node,
    result: Result<T, E>,
    p: &mut Vec<Problem>,
) -> Option<T> {
    match result {
        Ok(value) => Some(value),
        Err(why) => {
            p.push(Problem::new(node.loc.clone(), why));
            None
        }
    }
}

/// Reports at `at` each required key of `table` that `entries` lacks, in table order.
pub(super) fn report_missing<D, C>(
    table: &[KeySpec<D, C>],
    entries: &[Entry],
    at: &Location,
    message: impl Fn(&str) -> String,
    p: &mut Vec<Problem>,
) {
    for key in table.iter().filter(|k| k.required) {
        if find(entries, key.name).is_none() {
            p.push(Problem::new(at.clone(), message(key.name)));
        }
    }
}

/// Records in `locs`, as `PREFIX.KEY`, where each key that `table` declares was written.
pub(super) fn record_locations<D, C>(
    table: &[KeySpec<D, C>],
    entries: &[Entry],
    prefix: &str,
    locs: &mut BTreeMap<String, Location>,
) {
    for e in entries.iter().filter(|e| spec(table, &e.key).is_some()) {
        locs.insert(format!("{prefix}.{}", e.key), e.node.loc.clone());
    }
}

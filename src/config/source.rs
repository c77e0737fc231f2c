//! The positioned TOML tree and the merging of files: each file becomes a tree of
//! [`Node`]s that remember where they were written, and [`Raw`] merges the main file and
//! its `conf.d` drop-ins, reporting anything set twice with both places.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::problem::{Location, Problem};

pub(super) fn conf_d_files(dir: &Path, problems: &mut Vec<Problem>) -> Vec<PathBuf> {
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

/// Turns byte offsets into 1-based line and character columns.
pub(super) struct SourceMap<'a> {
    pub(super) file: Arc<Path>,
    pub(super) text: &'a str,
    pub(super) line_starts: Vec<usize>,
}

impl<'a> SourceMap<'a> {
    pub(super) fn new(file: &Path, text: &'a str) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        SourceMap {
            file: Arc::from(file),
            text,
            line_starts,
        }
    }

    pub(super) fn location(&self, offset: usize) -> Location {
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
pub(super) struct Node {
    pub(super) loc: Location,
    pub(super) val: Val,
}

#[derive(Debug, Clone)]
pub(super) enum Val {
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
    pub(super) fn kind(&self) -> &'static str {
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
pub(super) struct Entry {
    pub(super) key: String,
    pub(super) key_loc: Location,
    pub(super) node: Node,
}

pub(super) fn convert(value: &Spanned<DeValue<'_>>, map: &SourceMap<'_>) -> Node {
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

pub(super) fn convert_table(table: &DeTable<'_>, map: &SourceMap<'_>) -> Vec<Entry> {
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

/// A table whose keys may come from several files.
#[derive(Debug)]
pub(super) struct Section {
    pub(super) loc: Location,
    pub(super) entries: Vec<Entry>,
}

/// All files merged, still untyped.
#[derive(Debug, Default)]
pub(super) struct Raw {
    pub(super) top: Vec<Entry>,
    pub(super) sections: BTreeMap<&'static str, Section>,
    pub(super) cas: Vec<Entry>,
    pub(super) certificates: Vec<Node>,
    pub(super) exceptions: Vec<Node>,
}

pub(super) fn set_again(what: &str, here: &Location, first: &Location) -> Problem {
    Problem::new(
        here.clone(),
        format!("`{what}` is set again here; first set at {first}"),
    )
}

pub(super) fn merge_list(name: &str, entry: Entry, list: &mut Vec<Node>, p: &mut Vec<Problem>) {
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
    pub(super) fn merge(&mut self, root: Vec<Entry>, p: &mut Vec<Problem>) {
        for entry in root {
            let section = ["metrics", "alert", "discovery", "defaults", "trust"]
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

    pub(super) fn merge_section(&mut self, name: &'static str, entry: Entry, p: &mut Vec<Problem>) {
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

    pub(super) fn merge_cas(&mut self, entry: Entry, p: &mut Vec<Problem>) {
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
}

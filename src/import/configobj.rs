//! A reader for the subset of Python's configobj format that certbot writes its renewal
//! configuration in (`/etc/letsencrypt/renewal/NAME.conf`): `key = value` lines, `#`
//! comments, `[section]` and nested `[[subsection]]` headers, values unquoted, in single or
//! double quotes, or comma-separated lists (a trailing comma makes a one-item list).
//!
//! Every entry keeps its line number so errors and notes can say `FILE:LINE`. Multi-line
//! (triple-quoted) values, which certbot never writes, are refused with a clear error.

/// One section: its own `key = value` entries in file order, then its subsections.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Section {
    /// The entries directly in this section, in file order.
    pub(crate) entries: Vec<Entry>,
    /// The subsections (`[name]` under the top level, `[[name]]` under a `[name]`).
    pub(crate) sections: Vec<Subsection>,
}

/// A named subsection and the line of its header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Subsection {
    pub(crate) name: String,
    /// 1-based line of the `[name]` header.
    pub(crate) line: usize,
    pub(crate) section: Section,
}

/// One `key = value` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) key: String,
    pub(crate) value: Value,
    /// 1-based line number.
    pub(crate) line: usize,
}

/// A value: one string, or a list (a comma appeared outside quotes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Value {
    Str(String),
    List(Vec<String>),
}

impl Value {
    /// The value as one string: a list's items joined with `, ` (how a list-valued key that
    /// should have been a string reads back to a person).
    pub(crate) fn as_text(&self) -> String {
        match self {
            Value::Str(s) => s.clone(),
            Value::List(items) => items.join(", "),
        }
    }

    /// The value as a list: a single string is a list of one (an empty string, none).
    pub(crate) fn as_list(&self) -> Vec<String> {
        match self {
            Value::Str(s) if s.is_empty() => Vec::new(),
            Value::Str(s) => vec![s.clone()],
            Value::List(items) => items.clone(),
        }
    }
}

impl Section {
    /// The entry for `key` in this section, if any.
    pub(crate) fn get(&self, key: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.key == key)
    }

    /// The subsection called `name`, if any.
    pub(crate) fn section(&self, name: &str) -> Option<&Subsection> {
        self.sections.iter().find(|s| s.name == name)
    }
}

/// Why a file is not configobj as certbot writes it; `line` is 1-based.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub(crate) struct SyntaxError {
    pub(crate) line: usize,
    pub(crate) message: String,
}

/// The most characters of a file's text an error or note quotes.
pub(crate) const EXCERPT_CHARS: usize = 40;

/// At most [`EXCERPT_CHARS`] characters of `s`, control characters escaped
/// ([`crate::text::escape`]), `…` when cut: how errors and notes quote a file's text, so a
/// file that is not what it claims (a link to `/etc/shadow`) is never echoed.
pub(crate) fn excerpt(s: &str) -> String {
    excerpt_of(s, EXCERPT_CHARS)
}

/// At most `max` characters of `s`, escaped, `…` when cut: [`excerpt`] for a value that is
/// a path, which is only useful whole (certbot's are under 100 characters).
pub(crate) fn excerpt_of(s: &str, max: usize) -> String {
    let cut: String = s.chars().take(max).collect();
    let more = if cut.len() < s.len() { "…" } else { "" };
    format!("{}{more}", crate::text::escape(&cut))
}

fn syntax(line: usize, message: impl Into<String>) -> SyntaxError {
    SyntaxError {
        line,
        message: message.into(),
    }
}

/// Parses the whole text. Errors: the first line that is not a comment, a section header
/// or `key = value`; a header nested more than one level below its parent; a key or a
/// section given twice in one section; a quoted value left open; a triple-quoted value.
pub(crate) fn parse(text: &str) -> Result<Section, SyntaxError> {
    let mut top = Section::default();
    // Where entries go: 0 the top level, 1 the last `[..]`, 2 the last `[[..]]` in it.
    let mut depth = 0usize;
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let s = raw.trim();
        if s.is_empty() || s.starts_with('#') {
            continue;
        }
        if s.starts_with('[') {
            let (level, name) = header(s).ok_or_else(|| {
                syntax(
                    line,
                    format!(
                        "malformed section header `{}` (expected `[name]` or `[[name]]`)",
                        excerpt(s)
                    ),
                )
            })?;
            if level > depth + 1 || level > 2 {
                return Err(syntax(
                    line,
                    format!(
                        "section `{}` is nested deeper than its parent allows",
                        excerpt(&name)
                    ),
                ));
            }
            let parent = current(&mut top, level - 1);
            if parent.section(&name).is_some() {
                return Err(syntax(
                    line,
                    format!("section `{}` appears twice", excerpt(&name)),
                ));
            }
            parent.sections.push(Subsection {
                name,
                line,
                section: Section::default(),
            });
            depth = level;
            continue;
        }
        let Some((key, value)) = s.split_once('=') else {
            return Err(syntax(
                line,
                format!(
                    "expected `key = value`, a `[section]` header or a `#` comment, found `{}`",
                    excerpt(s)
                ),
            ));
        };
        let key = key.trim();
        if key.is_empty() {
            return Err(syntax(line, "a `= value` line without a key"));
        }
        let value = parse_value(value, line)?;
        let section = current(&mut top, depth);
        if section.get(key).is_some() {
            return Err(syntax(
                line,
                format!("key `{}` appears twice in one section", excerpt(key)),
            ));
        }
        section.entries.push(Entry {
            key: key.to_string(),
            value,
            line,
        });
    }
    Ok(top)
}

/// The section entries at `depth` go into: the top level, or the last section header seen
/// at each level down to it.
fn current(top: &mut Section, depth: usize) -> &mut Section {
    let mut s = top;
    for _ in 0..depth {
        s = &mut s
            .sections
            .last_mut()
            .expect("a section header was seen at every level above")
            .section;
    }
    s
}

/// `[name]` → (1, name), `[[name]]` → (2, name); `None` when the brackets do not match.
fn header(s: &str) -> Option<(usize, String)> {
    let open = s.chars().take_while(|&c| c == '[').count();
    let inner = &s[open..];
    let inner = inner.split_once('#').map_or(inner, |(h, _)| h).trim_end();
    let close = inner.chars().rev().take_while(|&c| c == ']').count();
    if open != close || open == 0 {
        return None;
    }
    let name = inner[..inner.len() - close].trim();
    let name = name
        .strip_prefix('"')
        .and_then(|n| n.strip_suffix('"'))
        .unwrap_or(name);
    (!name.is_empty() && !name.contains(['[', ']'])).then(|| (open, name.to_string()))
}

/// A value after `=`: items separated by commas outside quotes, each unquoted (trimmed, up
/// to a `#` comment) or quoted with `"` or `'` (configobj's quoting has no escapes: it picks
/// the quote the value does not contain). `line` is for the error.
fn parse_value(raw: &str, line: usize) -> Result<Value, SyntaxError> {
    let s = raw.trim();
    if s.starts_with("\"\"\"") || s.starts_with("'''") {
        return Err(syntax(
            line,
            "multi-line (triple-quoted) values are not supported",
        ));
    }
    let mut items = Vec::new();
    let mut list = false;
    let mut rest = s;
    loop {
        rest = rest.trim_start();
        if rest.is_empty() || rest.starts_with('#') {
            break;
        }
        let item;
        if let Some(q) = rest.chars().next().filter(|c| *c == '"' || *c == '\'') {
            let body = &rest[1..];
            let end = body
                .find(q)
                .ok_or_else(|| syntax(line, format!("the value's {q} quote is never closed")))?;
            item = body[..end].to_string();
            rest = body[end + 1..].trim_start();
            if !(rest.is_empty() || rest.starts_with([',', '#'])) {
                return Err(syntax(
                    line,
                    format!("unexpected `{}` after a quoted value", excerpt(rest)),
                ));
            }
        } else {
            let end = rest.find([',', '#']).unwrap_or(rest.len());
            item = rest[..end].trim_end().to_string();
            rest = &rest[end..];
        }
        items.push(item);
        match rest.strip_prefix(',') {
            Some(after) => {
                list = true;
                rest = after;
            }
            None => break,
        }
    }
    if list {
        items.retain(|i| !i.is_empty());
        Ok(Value::List(items))
    } else {
        Ok(Value::Str(items.pop().unwrap_or_default()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CERTBOT_CONF: &str = "\
# renew_before_expiry = 30 days
version = 5.8.0
archive_dir = /etc/letsencrypt/archive/alpha
cert = /etc/letsencrypt/live/alpha/cert.pem
[renewalparams]
account = a449b8673a67d9f0737c39b7c0130c65
authenticator = webroot
webroot_path = /var/www/html,
renew_hook = \"systemctl reload nginx, then log\"
[[webroot_map]]
b.test = /srv/b
a.test = /var/www/html
";

    #[test]
    fn certbots_renewal_file_reads_with_sections_lists_and_lines() {
        let top = parse(CERTBOT_CONF).expect("parses");
        assert_eq!(
            top.get("archive_dir").map(|e| (&e.value, e.line)),
            Some((&Value::Str("/etc/letsencrypt/archive/alpha".into()), 3))
        );
        let params = &top.section("renewalparams").expect("renewalparams").section;
        assert_eq!(
            params.get("webroot_path").map(|e| e.value.clone()),
            Some(Value::List(vec!["/var/www/html".into()]))
        );
        assert_eq!(
            params.get("renew_hook").map(|e| e.value.clone()),
            Some(Value::Str("systemctl reload nginx, then log".into()))
        );
        let map = &params.section("webroot_map").expect("webroot_map");
        assert_eq!(map.line, 10);
        let pairs: Vec<(String, String)> = map
            .section
            .entries
            .iter()
            .map(|e| (e.key.clone(), e.value.as_text()))
            .collect();
        assert_eq!(
            pairs,
            [
                ("b.test".to_string(), "/srv/b".to_string()),
                ("a.test".to_string(), "/var/www/html".to_string())
            ]
        );
    }

    #[test]
    fn values_unquoted_quoted_lists_and_comments() {
        let v = |s: &str| parse_value(s, 1).expect(s);
        assert_eq!(v(" plain value # note"), Value::Str("plain value".into()));
        assert_eq!(v(""), Value::Str(String::new()));
        assert_eq!(v("'say \"hi\"'"), Value::Str("say \"hi\"".into()));
        assert_eq!(
            v("a, b, c"),
            Value::List(vec!["a".into(), "b".into(), "c".into()])
        );
        assert_eq!(v("a,"), Value::List(vec!["a".into()]));
        assert_eq!(v(","), Value::List(Vec::new()));
        assert_eq!(
            v("\"x, y\", z"),
            Value::List(vec!["x, y".into(), "z".into()])
        );
        assert!(parse_value("\"open", 1).is_err());
        assert!(parse_value("\"a\" b", 1).is_err());
        assert!(parse_value("'''multi", 1).is_err());
    }

    #[test]
    fn errors_quote_at_most_a_short_escaped_excerpt() {
        let shadow = "root:*:20228:0:99999:7:::\u{1b}[2J and a great deal more of the file\n";
        let e = parse(shadow).unwrap_err();
        assert!(!e.message.contains("great deal"), "{e}");
        assert!(e.message.contains("root:*:20228"), "{e}");
        assert!(
            e.message.contains("\\x1b") && !e.message.contains('\u{1b}'),
            "{e}"
        );
        let e = parse("[\u{7}aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n")
            .unwrap_err();
        assert!(
            !e.message.contains('\u{7}') && e.message.contains('…'),
            "{e}"
        );
        assert_eq!(excerpt("short"), "short");
    }

    #[test]
    fn malformed_files_name_the_line() {
        let e = parse("version = 1\n[renewalparams]\nthis is not configobj\n").unwrap_err();
        assert_eq!(e.line, 3);
        assert!(e.message.contains("expected `key = value`"), "{e}");
        let e = parse("[[webroot_map]]\na = b\n").unwrap_err();
        assert_eq!((e.line, e.message.contains("nested deeper")), (1, true));
        let e = parse("a = 1\na = 2\n").unwrap_err();
        assert_eq!(e.line, 2);
        let e = parse("[renewalparams\n").unwrap_err();
        assert!(e.message.contains("malformed section header"), "{e}");
        let e = parse("[a]\n[a]\n").unwrap_err();
        assert_eq!(e.line, 2);
    }
}

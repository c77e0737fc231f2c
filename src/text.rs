//! Text for people: names that come from the file system, certificates or a CA are shown
//! with their control characters escaped, so a file name or a subject cannot move the
//! cursor, clear the screen, recolour the terminal, forge a line of output or reorder
//! what is displayed (bidirectional overrides).

use std::time::SystemTime;

use std::borrow::Cow;
use std::fmt::Write;

/// `s` with every control character (C0 including newline and tab, DEL, C1) and every
/// Unicode bidirectional override or isolate written as a Rust-style escape: `\n`, `\t`,
/// `\r`, `\x1b`, `\u{202e}`. Anything else, backslashes included, is left as it is.
/// Borrowed when nothing needed escaping.
pub fn escape(s: &str) -> Cow<'_, str> {
    if !s.chars().any(needs_escape) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if needs_escape(c) && (c as u32) < 0x80 => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// `s` cut to at most `max` bytes (at a character boundary), saying how much was cut:
/// for messages that quote what came from outside (a CA's answer can be a megabyte, and an
/// error message quoting it goes to the log, the state record and `status`).
pub(crate) fn bounded(mut s: String, max: usize) -> String {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    let cut = s.len() - end;
    s.truncate(end);
    s.push_str(&format!("… ({cut} more bytes not shown)"));
    s
}

fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{061c}')
        || ('\u{202a}'..='\u{202e}').contains(&c)
        || ('\u{2066}'..='\u{2069}').contains(&c)
}

/// One line of a table: each cell but the last padded to its column's width (`widths`, in
/// characters), trailing blanks trimmed, ending in a newline.
pub(crate) fn table_line<S: AsRef<str>>(cells: &[S], widths: &[usize]) -> String {
    let mut s = String::new();
    for (n, (c, w)) in cells.iter().zip(widths.iter()).enumerate() {
        if n + 1 == cells.len() {
            s.push_str(c.as_ref());
        } else {
            s.push_str(&format!("{:<w$}  ", c.as_ref()));
        }
    }
    s.trim_end().to_string() + "\n"
}

/// RFC 3339 UTC with seconds precision (`2026-11-23T12:00:00Z`), for logs, messages and
/// `status`.
pub(crate) fn rfc3339(t: SystemTime) -> String {
    time::OffsetDateTime::from(t)
        .replace_nanosecond(0)
        .ok()
        .and_then(|d| {
            d.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| {
            format!(
                "@{}",
                t.duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs())
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_cuts_at_a_character_boundary_and_says_how_much() {
        assert_eq!(bounded("short".into(), 10), "short");
        assert_eq!(bounded("ééé".into(), 3), "é… (4 more bytes not shown)");
    }

    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        assert!(matches!(escape("www.example.org"), Cow::Borrowed(_)));
        assert_eq!(escape("héllo\\ wörld"), "héllo\\ wörld");
        assert_eq!(
            escape("a\x1b[2Jb\nc\td\re\x7f\u{85}\u{202e}f"),
            "a\\x1b[2Jb\\nc\\td\\re\\x7f\\u{85}\\u{202e}f"
        );
    }
}

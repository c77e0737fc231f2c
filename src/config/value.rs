//! The syntax of single values: durations, renewal margins, key modes, certificate and CA
//! names, DNS identifiers (with their punycode), URLs and proxy URLs, socket addresses and
//! dates. Each check says what is wrong in the words the user will read after
//! `FILE:LINE:COL:`.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::source::{Node, Val};
use super::types::RenewBefore;

/// Why a value is not acceptable, in the words printed after `FILE:LINE:COL: ` (the
/// caller knows the place).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct InvalidValue(String);

impl From<InvalidValue> for String {
    fn from(e: InvalidValue) -> String {
        e.0
    }
}

/// The widest mode a private key may have: owner read/write, group read.
pub(super) const MAX_KEY_MODE: u32 = 0o640;

/// Longest duration accepted anywhere: far beyond any certificate lifetime, and small
/// enough that adding it to a timestamp can never overflow.
pub(super) const MAX_DURATION_SECS: u64 = 36_500 * 86_400;

/// Parses `90s`, `15m`, `36h`, `30d` and combinations such as `1h30m` (largest unit
/// first, each unit once). `0s` parses; each key decides whether zero is allowed.
pub(super) fn parse_duration(s: &str) -> Result<Duration, InvalidValue> {
    const HINT: &str = "write e.g. `90s`, `15m`, `36h`, `30d` or `1h30m`";
    if s.is_empty() {
        return Err(InvalidValue(format!("empty duration; {HINT}")));
    }
    if s.starts_with('-') {
        return Err(InvalidValue(format!(
            "`{s}`: a duration cannot be negative"
        )));
    }
    let mut total: u64 = 0;
    let mut rest = s;
    let mut last_rank = usize::MAX;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return match rest.chars().next() {
                Some(c) if !c.is_alphabetic() => Err(InvalidValue(format!(
                    "unexpected `{c}` in duration `{s}`; {HINT}"
                ))),
                _ => Err(InvalidValue(format!("invalid duration `{s}`; {HINT}"))),
            };
        }
        let (number, after) = rest.split_at(digits);
        if after.starts_with('.') {
            return Err(InvalidValue(format!(
                "invalid duration `{s}`: use whole numbers, e.g. `1h30m` rather than `1.5h`"
            )));
        }
        let unit_len: usize = after
            .chars()
            .take_while(|c| c.is_alphabetic())
            .map(char::len_utf8)
            .sum();
        if unit_len == 0 {
            return match after.chars().next() {
                None => Err(InvalidValue(format!("duration `{s}` has no unit; {HINT}"))),
                Some(c) => Err(InvalidValue(format!(
                    "unexpected `{c}` in duration `{s}`; {HINT}"
                ))),
            };
        }
        let (unit, after_unit) = after.split_at(unit_len);
        let (multiplier, rank) = match unit {
            "s" => (1, 0),
            "m" => (60, 1),
            "h" => (3_600, 2),
            "d" => (86_400, 3),
            _ => {
                return Err(InvalidValue(format!(
                    "unknown unit `{unit}` in duration `{s}`; use s, m, h or d"
                )))
            }
        };
        if rank >= last_rank {
            return Err(InvalidValue(format!(
                "invalid duration `{s}`: give each unit once, largest first, as in `1h30m`"
            )));
        }
        last_rank = rank;
        let too_large = || InvalidValue(format!("duration `{s}` is too large (at most 36500d)"));
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
pub(super) fn format_duration(d: Duration) -> String {
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
pub(super) fn margin_value(key: &str, node: &Node) -> Result<RenewBefore, InvalidValue> {
    match &node.val {
        Val::Str(s) => parse_margin(key, s),
        Val::Float(v) => fraction(key, *v, &v.map(|v| v.to_string()).unwrap_or_default()),
        other => Err(InvalidValue(format!(
            "`{key}` must be a fraction like \"1/3\" or a duration like \"30d\", found {}",
            other.kind()
        ))),
    }
}

pub(super) fn parse_margin(key: &str, value: &str) -> Result<RenewBefore, InvalidValue> {
    let fraction_hint = "a fraction of the lifetime between 0 and 1 (\"1/3\", \"0.25\") \
                         or a duration (\"30d\")";
    if let Some((num, den)) = value.split_once('/') {
        let num: u32 = num.trim().parse().map_err(|_| {
            InvalidValue(format!("`{key}` must be {fraction_hint}, found `{value}`"))
        })?;
        let den: u32 = den.trim().parse().map_err(|_| {
            InvalidValue(format!("`{key}` must be {fraction_hint}, found `{value}`"))
        })?;
        if num == 0 || den == 0 || num >= den {
            return Err(InvalidValue(format!(
                "`{key}` `{value}` must be a fraction between 0 and 1, such as \"1/3\""
            )));
        }
        return Ok(RenewBefore::Fraction(f64::from(num) / f64::from(den)));
    }
    if value.contains('.') && value.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return fraction(key, value.parse::<f64>().ok(), value);
    }
    match parse_duration(value) {
        Ok(d) if d.is_zero() => Err(InvalidValue(format!("`{key}` must be longer than 0s"))),
        Ok(d) => Ok(RenewBefore::Duration(d)),
        Err(e) => Err(InvalidValue(format!(
            "`{key}` must be {fraction_hint}: {e}"
        ))),
    }
}

pub(super) fn fraction(
    key: &str,
    value: Option<f64>,
    written: &str,
) -> Result<RenewBefore, InvalidValue> {
    match value {
        Some(f) if f.is_finite() && f > 0.0 && f < 1.0 => Ok(RenewBefore::Fraction(f)),
        _ => Err(InvalidValue(format!(
            "`{key}` `{written}` must be a fraction between 0 and 1, such as \"1/3\""
        ))),
    }
}

/// Parses a `key_mode`: an octal string like `"0640"` or a TOML octal integer `0o640`.
pub(super) fn parse_key_mode(node: &Node) -> Result<u32, InvalidValue> {
    let mode = match &node.val {
        Val::Str(s) => {
            let digits = s.strip_prefix("0o").unwrap_or(s);
            if !(3..=4).contains(&digits.len())
                || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b))
            {
                return Err(InvalidValue(format!(
                    "`key_mode` must be an octal mode like \"0640\", found `{s}`"
                )));
            }
            u32::from_str_radix(digits, 8).map_err(|_| {
                InvalidValue(format!(
                    "`key_mode` must be an octal mode like \"0640\", found `{s}`"
                ))
            })?
        }
        Val::Int(Some(v), 8) => u32::try_from(*v).map_err(|_| {
            InvalidValue("`key_mode` must be an octal mode like \"0640\"".to_string())
        })?,
        Val::Int(..) => {
            return Err(InvalidValue(
                "`key_mode` must be an octal mode written as a string, like \"0640\", \
                 found a decimal integer"
                    .to_string(),
            ))
        }
        other => {
            return Err(InvalidValue(format!(
                "`key_mode` must be a string like \"0640\", found {}",
                other.kind()
            )))
        }
    };
    if mode & !MAX_KEY_MODE != 0 {
        return Err(InvalidValue(format!(
            "`key_mode` {mode:04o} is wider than 0640: a private key must never be \
             executable, writable by its group, or open to others"
        )));
    }
    Ok(mode)
}

/// Validates a certificate or CA name: it becomes a file name under `state_dir`.
pub(crate) fn check_ident(name: &str) -> Result<(), InvalidValue> {
    if name.is_empty() || name.len() > 64 {
        return Err(InvalidValue("must be 1 to 64 characters long".to_string()));
    }
    if name == "." || name == ".." {
        return Err(InvalidValue("must not be `.` or `..`".to_string()));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')))
    {
        return Err(InvalidValue(format!(
            "may only contain a-z, 0-9, `.`, `_` and `-`, found `{c}`"
        )));
    }
    Ok(())
}

/// Normalizes one entry of `domains`: an IP address in canonical form, or a DNS name or
/// `*.` wildcard, lowercased, without a trailing dot.
pub(crate) fn normalize_identifier(written: &str) -> Result<String, InvalidValue> {
    if let Ok(ip) = written.parse::<IpAddr>() {
        return Ok(ip.to_string());
    }
    if let Some(inner) = written.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
        if inner.parse::<IpAddr>().is_ok() {
            return Err(InvalidValue(format!(
                "write the IP address `{inner}` without brackets"
            )));
        }
    }
    let lower = written.to_ascii_lowercase();
    let name = lower.strip_suffix('.').unwrap_or(&lower);
    if name.is_empty() {
        return Err(InvalidValue("a domain must not be empty".to_string()));
    }
    if !name.is_ascii() {
        return Err(InvalidValue(format!(
            "`{written}` is not ASCII: write internationalised names in their punycode \
             (xn--) form"
        )));
    }
    let base = name.strip_prefix("*.").unwrap_or(name);
    if base.contains('*') {
        return Err(InvalidValue(format!(
            "`{written}`: a wildcard must be the whole leftmost label, as in `*.example.org`"
        )));
    }
    if name.len() > 253 {
        return Err(InvalidValue(format!(
            "`{written}` is longer than 253 characters"
        )));
    }
    let mut last = "";
    for label in base.split('.') {
        if label.is_empty() {
            return Err(InvalidValue(format!("`{written}` has an empty label")));
        }
        if label.len() > 63 {
            return Err(InvalidValue(format!(
                "`{written}` has a label longer than 63 characters"
            )));
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
        {
            return Err(InvalidValue(format!(
                "`{written}` contains `{c}`: DNS names hold only letters, digits and `-`"
            )));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(InvalidValue(format!(
                "`{written}` has a label that starts or ends with `-`"
            )));
        }
        check_a_label(written, label)?;
        last = label;
    }
    if last.bytes().all(|b| b.is_ascii_digit()) {
        return Err(InvalidValue(format!(
            "`{written}` is neither a valid IP address nor a DNS name"
        )));
    }
    Ok(name.to_string())
}

/// An `xn--` label (an IDNA A-label, RFC 5890 §2.3.2.1) must decode to a valid U-label: the
/// Punycode must decode and the result pass UTS #46 validation (what a CA checks before it
/// issues; a wrong one is refused at order time, after an account and a key were made).
pub(super) fn check_a_label(written: &str, label: &str) -> Result<(), InvalidValue> {
    if !label.starts_with("xn--") {
        return Ok(());
    }
    let (unicode, checked) = idna::domain_to_unicode(label);
    match checked {
        Ok(()) if !unicode.starts_with("xn--") => Ok(()),
        _ => Err(InvalidValue(format!(
            "`{written}` has the label `{label}`, which is not valid punycode (an xn-- label \
             must encode a valid internationalised name, RFC 5891); write the name as the CA \
             and DNS know it, e.g. from `idn2 --lookup NAME`"
        ))),
    }
}

/// `url` as a proxy renewd can use: `http://[user[:password]@]host[:port][/]` (an HTTP
/// proxy reached in clear, which tunnels TLS with CONNECT). Returns it as it may be shown —
/// `http://host:port`, credentials dropped — or why not (the URL in the reason is shown the
/// same way: a password never reaches a log).
pub(crate) fn check_proxy_url(url: &str) -> Result<String, InvalidValue> {
    let shown = redact_url(url);
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(InvalidValue(format!(
            "`{shown}` is not a URL; write e.g. `http://proxy.example.org:3128`"
        )));
    };
    if !scheme.eq_ignore_ascii_case("http") {
        return Err(InvalidValue(format!(
            "`{shown}` must be an http:// URL: renewd reaches the proxy in clear and tunnels \
             TLS through it with CONNECT (https:// and socks proxies are not supported)"
        )));
    }
    let (authority, path) = match rest.find(['/', '?', '#']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    if !(path.is_empty() || path == "/") {
        return Err(InvalidValue(format!(
            "`{shown}` must have no path, query or fragment"
        )));
    }
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host_port.is_empty()
        || host_port
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(InvalidValue(format!("`{shown}` has no valid host")));
    }
    if url.parse::<http::Uri>().is_err() {
        return Err(InvalidValue(format!("`{shown}` is not a valid URL")));
    }
    Ok(format!("http://{host_port}"))
}

/// `url` with any `user:password@` replaced by `***@`.
pub(super) fn redact_url(url: &str) -> String {
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
pub(super) fn check_url(url: &str, allow_http: bool) -> Result<(), InvalidValue> {
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(InvalidValue(format!("`{url}` contains whitespace")));
    }
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(InvalidValue(format!(
            "`{url}` is not a URL; write e.g. `https://ca.example.org/directory`"
        )));
    };
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "https" && scheme != "http" {
        return Err(InvalidValue(format!("`{url}` must be an https:// URL")));
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.contains('@') {
        return Err(InvalidValue(format!(
            "`{url}` must not contain a user name or password"
        )));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        match v6.split_once(']') {
            Some((host, after)) => match after {
                "" => (host, None),
                _ => match after.strip_prefix(':') {
                    Some(port) => (host, Some(port)),
                    None => return Err(InvalidValue(format!("`{url}` has an invalid host"))),
                },
            },
            None => return Err(InvalidValue(format!("`{url}` has an invalid host"))),
        }
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(InvalidValue(format!("`{url}` has no host")));
    }
    if let Some(port) = port {
        if port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(InvalidValue(format!("`{url}` has an invalid port")));
        }
    }
    if scheme == "http" && !allow_http {
        let host = host.to_ascii_lowercase();
        if !matches!(host.as_str(), "localhost" | "127.0.0.1" | "::1") {
            return Err(InvalidValue(format!(
                "`{url}` must use https:// (plain http:// is allowed only for 127.0.0.1, \
                 localhost and [::1])"
            )));
        }
    }
    Ok(())
}

/// Parses an address to listen on or send to; a bare IP gets `default_port` if given.
pub(super) fn parse_socket_addr(s: &str, default_port: Option<u16>) -> Option<SocketAddr> {
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
pub(super) fn check_host_port(s: &str) -> Result<(), InvalidValue> {
    if s.parse::<SocketAddr>().is_ok() {
        return Ok(());
    }
    let bad = || {
        InvalidValue(format!(
            "`connect` must be `host:port`, like `127.0.0.1:443`, found `{s}`"
        ))
    };
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

pub(super) fn check_date(s: &str) -> Result<(), InvalidValue> {
    let bad = || {
        InvalidValue(format!(
            "`review_by` must be a date written YYYY-MM-DD, found `{s}`"
        ))
    };
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
        _ => {
            return Err(InvalidValue(format!(
                "`review_by` `{s}` has no month {month}"
            )))
        }
    };
    if day == 0 || day > days {
        return Err(InvalidValue(format!(
            "`review_by` `{s}` is not a date: that month has {days} days"
        )));
    }
    Ok(())
}

//! Value syntax: punycode, durations, proxy URLs.

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
        let e = normalize_identifier(bad).expect_err(bad).to_string();
        assert!(
            e.contains(&format!("`{label}`")) && e.contains("not valid punycode")
                || e.contains("starts or ends with `-`"),
            "{bad}: {e}"
        );
    }
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
    let err = |s: &str| parse_duration(s).expect_err(s).to_string();
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
        let why = check_proxy_url(bad).expect_err(bad).to_string();
        assert!(!why.contains("s3cret"), "{bad}: {why}");
        assert!(why.contains("***@"), "{bad}: {why}");
    }
    assert_eq!(redact_url("http://a:b@h:1/p@q"), "http://***@h:1/p@q");
    assert_eq!(redact_url("http://h:1"), "http://h:1");
}

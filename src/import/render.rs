//! certbot's lineages written as renewd configuration (TOML, the keys of SPEC's
//! "Configuration"): a `[ca.NAME]` for each ACME server no configured CA already names, and
//! a commented `[[certificate]]` per lineage. Strings go through `toml`'s own encoder, so
//! any path or hook text is quoted correctly; text in a `#` comment goes through
//! [`comment`], so nothing read from certbot's files (a file name with a newline) can end
//! the comment and write a key of its own.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::certbot::{Challenge, Lineage, LETSENCRYPT};

/// What is already configured, so the output adds to it without clashing: CA names by
/// directory URL, and the certificate names in use.
#[derive(Debug, Clone, Default)]
pub(crate) struct Existing {
    /// Directory URL (without a trailing `/`) → the configured CA's name.
    pub(crate) cas: BTreeMap<String, String>,
    /// Every configured CA name.
    pub(crate) ca_names: BTreeSet<String>,
    /// Every configured certificate name.
    pub(crate) cert_names: BTreeSet<String>,
    /// Every file a configured certificate deploys, with the certificate's name: a lineage
    /// whose `live/` files are among them is managed already and left out.
    pub(crate) files: BTreeMap<PathBuf, String>,
}

/// The configuration text and what the person must know: names changed, settings not
/// carried over (from each lineage's notes), stubs to fill in.
#[derive(Debug, Clone)]
pub(crate) struct Rendered {
    pub(crate) toml: String,
    pub(crate) notes: Vec<String>,
}

/// Renders every lineage read from certbot's directory `certbot_dir`.
pub(crate) fn render(certbot_dir: &Path, lineages: &[Lineage], existing: &Existing) -> Rendered {
    let mut out = String::new();
    let mut notes = Vec::new();
    let _ = writeln!(
        out,
        "# certbot's lineages from {}, written by `renewd import certbot`.\n\
         # The certificates stay at certbot's live/ paths; renewd renews them when due.\n\
         # Stop certbot renewing them too: `systemctl disable --now certbot.timer` and\n\
         # remove /etc/cron.d/certbot (whichever this host has).",
        comment(&certbot_dir.display().to_string())
    );
    let mut cas = existing.cas.clone();
    let mut ca_names = existing.ca_names.clone();
    for l in lineages
        .iter()
        .filter(|l| managed_already(l, existing).is_none())
    {
        let key = l.server.trim_end_matches('/').to_string();
        if cas.contains_key(&key) {
            continue;
        }
        let name = unique(&ca_name(&l.server), &ca_names);
        ca_names.insert(name.clone());
        cas.insert(key, name.clone());
        let _ = writeln!(
            out,
            "\n[ca.{}]\ndirectory = {}",
            quote(&name),
            quote(&l.server)
        );
        if !l.contact.is_empty() {
            let _ = writeln!(out, "contact = {}", list(&l.contact));
        }
        let _ = writeln!(
            out,
            "accept_terms = true # certbot's account agreed to them"
        );
        if !l.server.starts_with("https://acme-") {
            let _ = writeln!(
                out,
                "# trust_roots = \"/path/to/ca.pem\" # if the CA's HTTPS certificate is not in the system's roots \
                 (certbot read REQUESTS_CA_BUNDLE)"
            );
        }
    }
    let mut names = existing.cert_names.clone();
    for l in lineages {
        if let Some(by) = managed_already(l, existing) {
            notes.push(format!(
                "{}: left out: its live/ files are already managed by certificate `{by}`",
                l.conf.display()
            ));
            continue;
        }
        let name = unique(&l.certbot_name.to_lowercase(), &names);
        if let Err(why) = crate::config::check_ident(&name) {
            notes.push(format!(
                "{}: left out: lineage `{}` clashes with a configured name, and `{name}` {why}",
                l.conf.display(),
                l.certbot_name
            ));
            continue;
        }
        if name != l.certbot_name {
            notes.push(format!(
                "{}: lineage `{}` is named `{name}` in renewd (names are unique)",
                l.conf.display(),
                l.certbot_name
            ));
        }
        names.insert(name.clone());
        let ca = &cas[l.server.trim_end_matches('/')];
        certificate(&mut out, &name, ca, l, &mut notes);
        notes.extend(l.notes.iter().cloned());
    }
    Rendered { toml: out, notes }
}

/// The configured certificate already deploying one of `l`'s `live/` files, if any.
fn managed_already<'a>(l: &Lineage, existing: &'a Existing) -> Option<&'a String> {
    let f = &l.files;
    [&f.cert, &f.chain, &f.fullchain, &f.privkey]
        .into_iter()
        .find_map(|p| existing.files.get(p))
}

/// One `[[certificate]]` table.
fn certificate(out: &mut String, name: &str, ca: &str, l: &Lineage, notes: &mut Vec<String>) {
    let _ = writeln!(
        out,
        "\n[[certificate]]\n# certbot lineage {}",
        comment(&l.conf.display().to_string())
    );
    if let Some((serial, not_after)) = &l.deployed {
        let _ = writeln!(
            out,
            "# deployed: serial {}, expires {} (adopted: renewed when due)",
            comment(serial),
            crate::text::rfc3339(*not_after)
        );
    }
    let _ = writeln!(out, "name = {}", quote(name));
    let _ = writeln!(out, "domains = {}", list(&l.domains));
    match l.contact.first().and_then(|c| c.strip_prefix("mailto:")) {
        Some(mail) => {
            let _ = writeln!(out, "owner = {} # certbot's account email", quote(mail));
        }
        None => {
            let _ = writeln!(out, "# owner = \"team@example.org\" # who answers for it");
        }
    }
    let _ = writeln!(out, "ca = {}", list(std::slice::from_ref(&ca.to_string())));
    let _ = writeln!(out, "key_type = {}", quote(l.key_type.as_str()));
    if let Some(d) = &l.renew_before {
        let _ = writeln!(
            out,
            "renew_before = {} # certbot's renew_before_expiry",
            quote(d)
        );
    }
    if let Some(p) = &l.profile {
        let _ = writeln!(out, "profile = {}", quote(p));
    }
    challenge(out, name, l, notes);
    let f = &l.files;
    let _ = writeln!(
        out,
        "files = {{ cert = {}, chain = {}, fullchain = {}, key = {} }}",
        quote(&f.cert.display().to_string()),
        quote(&f.chain.display().to_string()),
        quote(&f.fullchain.display().to_string()),
        quote(&f.privkey.display().to_string()),
    );
    if !l.reload.is_empty() {
        for (_, why) in &l.reload {
            let _ = writeln!(out, "# reload: {}", comment(why));
        }
        let argvs: Vec<String> = l.reload.iter().map(|(argv, _)| list(argv)).collect();
        let _ = writeln!(out, "reload = [{}]", argvs.join(", "));
    }
    if let Some(chain) = &l.preferred_chain {
        let _ = writeln!(
            out,
            "preferred_chain = {} # certbot's preferred_chain",
            quote(chain)
        );
    }
    if l.reuse_key {
        let _ = writeln!(
            out,
            "reuse_key = true # certbot's reuse_key: the deployed key is kept across renewals"
        );
    }
}

/// The `challenge` line of lineage `l`, certificate `name`: what certbot's authenticator
/// becomes (a stub, noted in `notes`, where none can be derived).
fn challenge(out: &mut String, name: &str, l: &Lineage, notes: &mut Vec<String>) {
    match &l.challenge {
        Challenge::Webroot { root, others } if others.is_empty() => {
            let _ = writeln!(out, "challenge = {}", webroot(root));
        }
        Challenge::Webroot { root, others } => {
            let _ = writeln!(out, "# certbot's [[webroot_map]]: one webroot per name");
            let mut tables: Vec<String> = others
                .iter()
                .map(|(d, r)| format!("{} = {}", quote(d), webroot(r)))
                .collect();
            tables.push(format!("\"*\" = {}", webroot(root)));
            let _ = writeln!(out, "challenge = {{ {} }}", tables.join(", "));
        }
        Challenge::Listen(addr) => {
            let _ = writeln!(
                out,
                "# certbot's standalone server: renewd's built-in http-01 listener\n\
                 challenge = {{ type = \"http-01\", listen = {} }}",
                quote(addr)
            );
        }
        Challenge::ManualDns(argv) => {
            let _ = writeln!(
                out,
                "# certbot's manual plugin: its manual_auth_hook and manual_cleanup_hook, run with\n\
                 # the CERTBOT_DOMAIN and CERTBOT_VALIDATION they had under certbot\n\
                 challenge = {{ type = \"dns-01\", hook = {} }}",
                list(argv)
            );
        }
        Challenge::Stub { plugin, dns } => {
            stub(out, name, plugin, *dns);
            notes.push(format!(
                "{}: the `{plugin}` authenticator is not carried over: fill in the challenge of \
                 certificate `{name}` (`renewd check` reports it until then)",
                l.conf.display()
            ));
        }
    }
}

/// The challenge renewd cannot derive: a dns-01 hook (or http-01 webroot) at a path
/// that does not exist yet, so `renewd check` reports this certificate as not renewable
/// until someone writes it, with the alternatives commented.
fn stub(out: &mut String, name: &str, plugin: &str, dns: bool) {
    let _ = writeln!(
        out,
        "# certbot answered challenges with its `{}` plugin, which renewd cannot carry over.",
        comment(plugin)
    );
    if dns {
        let hook = format!("/etc/renewd/hooks/{name}-dns-01");
        let _ = writeln!(
            out,
            "# Write {hook} (run as `HOOK set|clear RECORD VALUE`) or use RFC 2136:\n\
             # challenge = {{ type = \"dns-01\", rfc2136 = {{ server = \"192.0.2.53:53\", tsig_key_file = \"/etc/renewd/tsig.key\" }} }}\n\
             # `renewd check` reports this certificate until the hook exists.\n\
             challenge = {{ type = \"dns-01\", hook = [{}] }}",
            quote(&hook)
        );
    } else {
        let root = format!("/var/www/renewd-{name}");
        let _ = writeln!(
            out,
            "# Point webroot at a directory served as http://DOMAIN/.well-known/acme-challenge/\n\
             # (or use `listen` when nothing else serves port 80). `renewd check` reports this\n\
             # certificate until the directory exists.\n\
             challenge = {{ type = \"http-01\", webroot = {} }}",
            quote(&root)
        );
    }
}

/// An http-01 webroot challenge as an inline table.
fn webroot(root: &Path) -> String {
    format!(
        "{{ type = \"http-01\", webroot = {} }}",
        quote(&root.display().to_string())
    )
}

/// Text for a `#` comment: control characters (a newline above all) escaped, so it stays
/// one comment line ([`crate::text::escape`]). Every text from outside that a comment
/// shows goes through here.
fn comment(text: &str) -> std::borrow::Cow<'_, str> {
    crate::text::escape(text)
}

/// A TOML basic string on one line: `"` and `\\` escaped, and every control character
/// (`\\n`, `\\t`, `\\r`, else `\\uXXXX`), so a value never spans lines (TOML 1.0, "String").
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A TOML array of strings on one line.
fn list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|i| quote(i)).collect();
    format!("[{}]", quoted.join(", "))
}

/// `name`, or `name-2`, `name-3`, … : the first not in `taken`.
fn unique(name: &str, taken: &BTreeSet<String>) -> String {
    if !taken.contains(name) {
        return name.to_string();
    }
    (2..)
        .map(|n| format!("{name}-{n}"))
        .find(|c| !taken.contains(c))
        .expect("some suffix is free")
}

/// A host name as part of a CA name: lowercase, every character renewd does not allow in
/// names as `-`, at most 56 characters (64 with the `certbot-` prefix).
fn cert_name(lineage: &str) -> String {
    let mut s: String = lineage
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(56)
        .collect();
    if s.is_empty() || s == "." || s == ".." {
        s = "certbot".into();
    }
    s
}

/// A CA name for an ACME directory URL: `letsencrypt` and `letsencrypt-staging` for
/// Let's Encrypt's, else the host, made a name.
fn ca_name(server: &str) -> String {
    let trimmed = server.trim_end_matches('/');
    if trimmed == LETSENCRYPT {
        return "letsencrypt".into();
    }
    if trimmed == "https://acme-staging-v02.api.letsencrypt.org/directory" {
        return "letsencrypt-staging".into();
    }
    let host = trimmed
        .split_once("://")
        .map_or(trimmed, |(_, r)| r)
        .split(['/', ':'])
        .next()
        .unwrap_or_default();
    format!("certbot-{}", cert_name(host))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::KeyType;
    use crate::import::LiveFiles;

    fn lineage(name: &str, challenge: Challenge) -> Lineage {
        let live = format!("/etc/letsencrypt/live/{name}");
        Lineage {
            certbot_name: name.into(),
            conf: format!("/etc/letsencrypt/renewal/{name}.conf").into(),
            files: LiveFiles {
                cert: format!("{live}/cert.pem").into(),
                chain: format!("{live}/chain.pem").into(),
                fullchain: format!("{live}/fullchain.pem").into(),
                privkey: format!("{live}/privkey.pem").into(),
            },
            domains: vec!["example.org".into(), "www.example.org".into()],
            deployed: None,
            server: LETSENCRYPT.into(),
            contact: vec!["mailto:ops@example.org".into()],
            key_type: KeyType::EcdsaP256,
            challenge,
            reload: vec![(
                vec![
                    "sh".into(),
                    "-c".into(),
                    "systemctl reload \"nginx\"".into(),
                ],
                "certbot's deploy hook".into(),
            )],
            renew_before: Some("30d".into()),
            preferred_chain: Some("ISRG Root X1".into()),
            profile: None,
            reuse_key: false,
            notes: vec!["x.conf:3: `foo` = `bar` is not carried over".into()],
        }
    }

    #[test]
    fn lineages_become_certificates_that_parse_as_toml() {
        let lineages = [
            lineage(
                "Example.org",
                Challenge::Webroot {
                    root: "/var/www/html".into(),
                    others: Vec::new(),
                },
            ),
            lineage(
                "split",
                Challenge::Webroot {
                    root: "/var/www/html".into(),
                    others: vec![("www.example.org".into(), "/srv/www".into())],
                },
            ),
            lineage(
                "dns",
                Challenge::Stub {
                    plugin: "dns-cloudflare".into(),
                    dns: true,
                },
            ),
        ];
        let r = render(
            Path::new("/etc/letsencrypt"),
            &lineages,
            &Existing::default(),
        );
        let doc: toml::Table = r.toml.parse().unwrap_or_else(|e| panic!("{e}\n{}", r.toml));
        assert_eq!(
            doc["ca"]["letsencrypt"]["directory"].as_str(),
            Some(LETSENCRYPT)
        );
        let certs = doc["certificate"].as_array().expect("certificates");
        assert_eq!(certs[0]["name"].as_str(), Some("example.org"));
        assert_eq!(certs[0]["ca"].as_array().map(Vec::len), Some(1));
        assert_eq!(
            certs[0]["challenge"]["webroot"].as_str(),
            Some("/var/www/html")
        );
        assert_eq!(certs[0]["renew_before"].as_str(), Some("30d"));
        assert_eq!(
            certs[0]["files"]["fullchain"].as_str(),
            Some("/etc/letsencrypt/live/Example.org/fullchain.pem")
        );
        assert_eq!(
            certs[0]["reload"][0].as_array().map(|a| a.len()),
            Some(3),
            "{}",
            r.toml
        );
        assert_eq!(
            certs[1]["challenge"]["www.example.org"]["webroot"].as_str(),
            Some("/srv/www")
        );
        assert_eq!(
            certs[1]["challenge"]["*"]["webroot"].as_str(),
            Some("/var/www/html")
        );
        assert_eq!(certs[2]["challenge"]["type"].as_str(), Some("dns-01"));
        assert_eq!(certs[0]["preferred_chain"].as_str(), Some("ISRG Root X1"));
        assert!(r.toml.contains("systemctl disable --now certbot.timer"));
        assert!(
            r.notes.iter().any(|n| n.contains("named `example.org`")),
            "{:?}",
            r.notes
        );
        assert!(
            r.notes
                .iter()
                .any(|n| n.contains("`dns-cloudflare` authenticator")),
            "{:?}",
            r.notes
        );
        assert!(r.notes.iter().any(|n| n.contains("`foo`")), "{:?}", r.notes);
    }

    #[test]
    fn configured_cas_and_names_are_reused_or_avoided() {
        let mut existing = Existing::default();
        existing.cas.insert(LETSENCRYPT.into(), "le".into());
        existing.ca_names.insert("le".into());
        existing.cert_names.insert("www".into());
        let r = render(
            Path::new("/etc/letsencrypt"),
            &[lineage("www", Challenge::Listen("[::]:80".into()))],
            &existing,
        );
        let doc: toml::Table = r.toml.parse().expect("TOML");
        assert!(doc.get("ca").is_none(), "{}", r.toml);
        let cert = &doc["certificate"][0];
        assert_eq!(cert["name"].as_str(), Some("www-2"));
        assert_eq!(cert["ca"][0].as_str(), Some("le"));
        assert_eq!(cert["challenge"]["listen"].as_str(), Some("[::]:80"));

        existing
            .files
            .insert("/etc/letsencrypt/live/www/privkey.pem".into(), "www".into());
        let r = render(
            Path::new("/etc/letsencrypt"),
            &[lineage("www", Challenge::Listen("[::]:80".into()))],
            &existing,
        );
        let doc: toml::Table = r.toml.parse().expect("TOML");
        assert!(doc.get("certificate").is_none(), "{}", r.toml);
        assert!(
            r.notes
                .iter()
                .any(|n| n.contains("already managed by certificate `www`")),
            "{:?}",
            r.notes
        );
    }

    #[test]
    fn quoted_strings_stay_on_one_line_and_read_back_exactly() {
        for s in [
            "plain",
            "a\"b\\c",
            "x\ny\r\tz",
            "\u{7}\u{1b}[2J\u{7f}\u{85}",
            "é \u{2028}",
        ] {
            let q = quote(s);
            assert!(!q.contains('\n') && !q.contains('\r'), "{q}");
            let doc: toml::Table = format!("k = {q}")
                .parse()
                .unwrap_or_else(|e| panic!("{q}: {e}"));
            assert_eq!(doc["k"].as_str(), Some(s));
        }
    }

    #[test]
    fn ca_names_come_from_the_server() {
        assert_eq!(ca_name(LETSENCRYPT), "letsencrypt");
        assert_eq!(ca_name("https://127.0.0.1:14000/dir"), "certbot-127.0.0.1");
        assert_eq!(
            ca_name("https://acme.Example.com/directory/"),
            "certbot-acme.example.com"
        );
    }
}

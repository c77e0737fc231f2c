//! The import against hostile certbot directories: file names that try to end a `#`
//! comment, `live/` paths elsewhere, symlinked renewal files, contacts and list values that
//! are not what certbot writes. The output is read back with renewd's own loader.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::certbot::{read_lineages, Lineages};
use super::render::{render, Existing};

/// A lineage as certbot writes it under `dir`, named `name` (its renewal file is
/// `renewal/NAME.conf`), with `top` lines after the four `live/` ones (which `files`
/// overrides, as `key = value` lines) and `params` lines in `[renewalparams]`.
fn lineage(dir: &Path, name: &str, files: &str, params: &str) -> PathBuf {
    let live = dir.join("live").join(name);
    let mut text = format!(
        "version = 5.8.0\narchive_dir = {}\n",
        dir.join("archive").display()
    );
    for key in ["cert", "chain", "fullchain", "privkey"] {
        if !files.lines().any(|l| l.starts_with(&format!("{key} = "))) {
            text.push_str(&format!("{key} = {}/{key}.pem\n", live.display()));
        }
    }
    text.push_str(files);
    text.push_str(&format!(
        "[renewalparams]\nauthenticator = webroot\nwebroot_path = /var/www/html,\n\
         server = https://127.0.0.1:9/dir\n{params}[[webroot_map]]\na.test = /var/www/html\n"
    ));
    let conf = dir.join("renewal").join(format!("{name}.conf"));
    std::fs::create_dir_all(conf.parent().expect("renewal/")).expect("mkdir");
    std::fs::write(&conf, text).expect("write renewal file");
    conf
}

fn read(dir: &Path) -> Lineages {
    read_lineages(dir).unwrap_or_else(|e| panic!("{e}"))
}

/// The rendered text, loaded by renewd's configuration loader (after a `state_dir` line),
/// and as a TOML table.
fn load(dir: &Path, toml: &str) -> (crate::config::Config, toml::Table) {
    let main = dir.join("renewd.toml");
    let text = format!("state_dir = \"{}\"\n{toml}", dir.join("state").display());
    assert!(!text.contains("\"\"\""), "no multi-line string: {text}");
    std::fs::write(&main, &text).expect("write config");
    let cfg = crate::config::load(&main).unwrap_or_else(|e| panic!("{e}\n{toml}"));
    (cfg, toml.parse().expect("TOML"))
}

fn keys(t: &toml::Value) -> BTreeSet<String> {
    t.as_table().expect("table").keys().cloned().collect()
}

#[test]
fn file_names_cannot_end_a_comment_and_write_configuration() {
    let tmp = tempfile::tempdir().expect("tempdir");
    // certbot's directory named with control characters TOML forbids in a comment (a
    // newline there would break certbot's own renewal files): it is in every comment.
    let dir = &tmp.path().join("le\r\u{7}\u{1b}x");
    lineage(dir, "good", "", "");
    // The tester's renewal file name: a comment line, then a real `reload`.
    lineage(dir, "x\nreload = [[\"touch\",\"pwned2\"]]\n#", "", "");
    // And a deploy hook whose name is a whole [[certificate]].
    let hooks = dir.join("renewal-hooks/deploy");
    std::fs::create_dir_all(&hooks).expect("mkdir");
    let hook = hooks.join("h\n[[certificate]]\nname = \"evil\"\ndomains = [\"evil.test\"]\n#");
    // A hook named with quotes and a `#`: carried, and run by its exact name.
    let quoted = hooks.join("q\"# ] \\ x");
    for h in [&hook, &quoted] {
        std::fs::write(h, "#!/bin/sh\n").expect("write hook");
        std::fs::set_permissions(h, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }

    let read = read(dir);
    assert_eq!(read.lineages.len(), 1, "{:?}", read.skipped);
    assert_eq!(read.skipped.len(), 1, "{:?}", read.skipped);
    assert!(
        read.skipped[0].contains("skipped: lineage name `x\\nreload")
            && !read.skipped[0].contains('\n'),
        "{:?}",
        read.skipped
    );
    let r = render(dir, &read.lineages, &Existing::default());
    let (cfg, doc) = load(tmp.path(), &r.toml);
    assert_eq!(cfg.certificates.len(), 1, "{}", r.toml);
    assert!(
        read.lineages[0]
            .notes
            .iter()
            .any(|n| n.contains("not carried over: its name holds control characters")),
        "{:?}",
        read.lineages[0].notes
    );
    assert_eq!(cfg.certificates[0].name, "good");
    assert_eq!(
        cfg.certificates[0].files.iter().count(),
        4,
        "the four live/ files, in certbot's (oddly named) directory"
    );
    assert_eq!(
        keys(&toml::Value::Table(doc.clone())),
        ["ca", "certificate"].map(String::from).into(),
        "{}",
        r.toml
    );
    let cert = &doc["certificate"][0];
    assert_eq!(
        keys(cert),
        [
            "ca",
            "challenge",
            "domains",
            "files",
            "key_type",
            "name",
            "reload"
        ]
        .map(String::from)
        .into(),
        "{}",
        r.toml
    );
    let reload = cert["reload"].as_array().expect("reload");
    assert_eq!(reload.len(), 1, "{}", r.toml);
    assert_eq!(
        reload[0]
            .as_array()
            .and_then(|a| a.last())
            .and_then(|v| v.as_str()),
        Some(quoted.to_str().expect("UTF-8")),
        "the hook runs by its exact name"
    );
    for line in r.toml.lines() {
        assert!(
            line.starts_with('#')
                || line.is_empty()
                || line.starts_with('[')
                || line.contains(" = "),
            "every line is a comment, a header or a key: {line:?}\n{}",
            r.toml
        );
    }
}

#[test]
fn live_files_outside_certbots_live_directory_skip_the_lineage() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let live = dir.join("live");
    lineage(
        dir,
        "good",
        &format!("cert = {}/good/./cert.pem\n", live.display()),
        "",
    );
    let cases = [
        (
            "preload",
            "fullchain = /etc/ld.so.preload\n",
            6,
            "fullchain",
        ),
        (
            "ssh",
            "privkey = /root/.ssh/authorized_keys\n",
            6,
            "privkey",
        ),
        (
            "dotdot",
            &format!("cert = {}/dotdot/../../x/cert.pem\n", live.display()),
            6,
            "cert",
        ),
        ("relative", "chain = live/relative/chain.pem\n", 6, "chain"),
        (
            "renamed",
            &format!("chain = {}/renamed/fullchain.pem\n", live.display()),
            6,
            "chain",
        ),
        (
            "other",
            &format!("privkey = {}/good/privkey.pem\n", live.display()),
            6,
            "privkey",
        ),
        (
            "deep",
            &format!("cert = {}/deep/a/cert.pem\n", live.display()),
            6,
            "cert",
        ),
    ];
    for (name, line, _, _) in &cases {
        lineage(dir, name, line, "");
    }
    let read = read(dir);
    let names: Vec<&str> = read
        .lineages
        .iter()
        .map(|l| l.certbot_name.as_str())
        .collect();
    assert_eq!(names, ["good"], "{:?}", read.skipped);
    assert_eq!(
        read.lineages[0].files.cert,
        live.join("good/cert.pem"),
        "normalised"
    );
    for (name, _, line, key) in cases {
        let conf = dir.join("renewal").join(format!("{name}.conf"));
        let want = format!("{}:{line}: skipped: `{key}` is `", conf.display());
        assert!(
            read.skipped.iter().any(|n| n.starts_with(&want)),
            "{want}\n{:#?}",
            read.skipped
        );
    }
}

#[test]
fn a_symlinked_renewal_file_is_skipped_unread() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    lineage(dir, "good", "", "");
    let secret = dir.join("shadow");
    std::fs::write(&secret, "root:*:20228:0:99999:7:::\n").expect("write");
    let link = dir.join("renewal/zz.conf");
    std::os::unix::fs::symlink(&secret, &link).expect("symlink");
    let read = read(dir);
    assert_eq!(read.lineages.len(), 1);
    assert_eq!(
        read.skipped,
        [format!(
            "{}: skipped: a symbolic link (certbot writes renewal files as regular files; not followed)",
            link.display()
        )]
    );
}

#[test]
fn contacts_that_are_not_plain_mailto_addresses_are_left_out() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let acct = dir.join("accounts/127.0.0.1:9/dir/abc");
    std::fs::create_dir_all(&acct).expect("mkdir");
    std::fs::write(
        acct.join("regr.json"),
        r#"{"body": {"contact": ["mailto:a@x.test\nreload = [[\"id\"]]", "mailto:ok@x.test", "mailto:b@x.test?cc=c@x.test"]}}"#,
    )
    .expect("write");
    lineage(dir, "one", "", "account = abc\n");
    let read = read(dir);
    assert_eq!(read.lineages[0].contact, ["mailto:ok@x.test"]);
    let refused: Vec<&String> = read.lineages[0]
        .notes
        .iter()
        .filter(|n| n.contains("not a plain mailto: address"))
        .collect();
    assert_eq!(refused.len(), 2, "{:?}", read.lineages[0].notes);
    assert!(refused.iter().all(|n| !n.contains('\n')), "{refused:?}");
    let r = render(dir, &read.lineages, &Existing::default());
    let (cfg, _) = load(dir, &r.toml);
    assert_eq!(cfg.certificates.len(), 1);
}

#[test]
fn list_values_of_string_settings_are_noted_not_joined() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    lineage(
        dir,
        "one",
        "",
        "preferred_chain = ISRG Root X1, ISRG Root X2\nrequired_profile = tlsserver\n",
    );
    let read = read(dir);
    let l = &read.lineages[0];
    assert_eq!(l.preferred_chain, None);
    assert_eq!(l.profile.as_deref(), Some("tlsserver"));
    assert!(
        l.notes.iter().any(|n| n
            .contains("`preferred_chain` is a list (ISRG Root X1, ISRG Root X2), not one value")
            && n.contains("default chain")),
        "{:?}",
        l.notes
    );
}

#[test]
fn a_standalone_pre_hook_note_says_the_port_must_be_free() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let conf = lineage(dir, "one", "", "");
    let text = std::fs::read_to_string(&conf).expect("read").replace(
        "authenticator = webroot\n",
        "authenticator = standalone\npre_hook = systemctl stop haproxy\n",
    );
    std::fs::write(&conf, text).expect("write");
    let read = read(dir);
    let note = read.lineages[0]
        .notes
        .iter()
        .find(|n| n.contains("pre_hook"))
        .expect("a note for pre_hook");
    assert!(
        note.starts_with(&format!(
            "{}:9: `pre_hook` = `systemctl stop haproxy`",
            conf.display()
        )) && note.contains("binds [::]:80 itself")
            && note.contains("must be free whenever a renewal runs")
            && note.contains("webroot")
            && note.contains("`listen` on another port"),
        "{note}"
    );
}

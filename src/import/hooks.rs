//! certbot's hooks as renewd's commands: the deploy hook (`renew_hook`) and the executables
//! in `renewal-hooks/deploy/` become `reload` commands (a shell string through `sh -c`, with
//! certbot's `RENEWED_LINEAGE` and `RENEWED_DOMAINS` when the hook uses them); the manual
//! plugin's dns-01 hooks become a dns-01 `hook`; `renewal-hooks/pre/` and `post/` are
//! reported, since renewd has no such hooks.

use std::path::{Path, PathBuf};

use super::configobj::{Entry, Section};
use super::{LiveFiles, MAX_LINEAGES, MAX_SMALL_FILE};
use crate::fsutil::{self, Follow};

/// The reload commands: certbot's deploy hook (`renew_hook`), the executables in
/// `renewal-hooks/deploy/`, and the reload of the service an `installer` plugin configured.
pub(super) fn reload_commands(
    dir: &Path,
    params: &Section,
    files: &LiveFiles,
    domains: &[String],
    at: &dyn Fn(&Entry) -> String,
    notes: &mut Vec<String>,
) -> Vec<(Vec<String>, String)> {
    let mut reload = Vec::new();
    if let Some(e) = params.get("renew_hook") {
        let origin = format!("certbot's deploy hook ({})", at(e));
        reload.push(shell_hook(&e.value.as_text(), &origin, files, domains));
    }
    reload.extend(deploy_dir_hooks(dir, files, domains, notes));
    let Some(e) = params
        .get("installer")
        .filter(|e| e.value.as_text() != "None")
    else {
        return reload;
    };
    let plugin = e.value.as_text();
    let unit = match plugin.as_str() {
        "nginx" => "nginx",
        "apache" => "apache2",
        _ => {
            notes.push(format!(
                "{}: installer `{}` is not carried over: add the reload command of the \
                 service it configured",
                at(e),
                super::configobj::excerpt(&plugin)
            ));
            return reload;
        }
    };
    reload.push((
        vec!["systemctl".into(), "reload".into(), unit.into()],
        format!(
            "certbot's {plugin} installer reloaded {unit} after renewal ({})",
            at(e)
        ),
    ));
    reload
}

/// The script [`manual_dns_hook`] runs: renewd calls a dns-01 hook as `HOOK set|clear
/// RECORD VALUE` (RECORD `_acme-challenge.DOMAIN`); certbot ran its manual hooks through the
/// shell with `CERTBOT_DOMAIN`, `CERTBOT_VALIDATION`, `CERTBOT_ALL_DOMAINS` (comma-separated,
/// as `RENEWD_DOMAINS` is) and `CERTBOT_REMAINING_CHALLENGES` set.
const MANUAL_DNS_SCRIPT: &str = "d=\"${2#_acme-challenge.}\"; \
export CERTBOT_DOMAIN=\"$d\" CERTBOT_VALIDATION=\"$3\" CERTBOT_ALL_DOMAINS=\"$RENEWD_DOMAINS\" \
CERTBOT_REMAINING_CHALLENGES=0; \
case \"$1\" in set) exec sh -c \"$CERTBOT_AUTH_HOOK\" ;; \
clear) [ -n \"$CERTBOT_CLEANUP_HOOK\" ] || exit 0; exec sh -c \"$CERTBOT_CLEANUP_HOOK\" ;; \
*) echo \"usage: $0 set|clear RECORD VALUE\" >&2; exit 2 ;; esac";

/// certbot's manual plugin answering dns-01 (`pref_challs` names dns-01, or nothing else)
/// with a `manual_auth_hook`, as a renewd dns-01 hook argv: `env` carries the hooks, and
/// [`MANUAL_DNS_SCRIPT`] runs them as certbot did. `None` without an auth hook or for
/// http-01 (renewd has no http-01 hooks).
pub(super) fn manual_dns_hook(params: &Section) -> Option<Vec<String>> {
    let text = |k: &str| {
        params
            .get(k)
            .map(|e| e.value.as_text())
            .filter(|v| !v.is_empty() && v != "None")
    };
    let auth = text("manual_auth_hook")?;
    let prefs = params
        .get("pref_challs")
        .map(|e| e.value.as_list())
        .unwrap_or_default();
    if !prefs.iter().any(|p| p == "dns-01" || p == "dns") {
        return None;
    }
    Some(vec![
        "env".into(),
        format!("CERTBOT_AUTH_HOOK={auth}"),
        format!(
            "CERTBOT_CLEANUP_HOOK={}",
            text("manual_cleanup_hook").unwrap_or_default()
        ),
        "sh".into(),
        "-c".into(),
        MANUAL_DNS_SCRIPT.into(),
        "certbot-manual-hook".into(),
    ])
}

/// A shell string as a reload command: `["sh", "-c", HOOK]`, with certbot's
/// `RENEWED_LINEAGE` and `RENEWED_DOMAINS` set (through `env`) when the hook uses them.
fn shell_hook(
    hook: &str,
    origin: &str,
    files: &LiveFiles,
    domains: &[String],
) -> (Vec<String>, String) {
    let mut argv = Vec::new();
    let mut comment = format!("{origin}, a shell string: run through sh -c");
    if hook.contains("RENEWED_") {
        argv.extend(renewed_env(files, domains));
        comment.push_str(", with certbot's RENEWED_LINEAGE and RENEWED_DOMAINS");
    }
    argv.extend(["sh".to_string(), "-c".to_string(), hook.to_string()]);
    (argv, comment)
}

/// `env RENEWED_LINEAGE=DIR RENEWED_DOMAINS="NAME NAME"`: the variables certbot gave its
/// deploy hooks (the `live/` directory; the names, space-separated).
fn renewed_env(files: &LiveFiles, domains: &[String]) -> Vec<String> {
    let lineage = files
        .cert
        .parent()
        .map_or_else(String::new, |p| p.display().to_string());
    vec![
        "env".into(),
        format!("RENEWED_LINEAGE={lineage}"),
        format!("RENEWED_DOMAINS={}", domains.join(" ")),
    ]
}

/// Every executable in `renewal-hooks/deploy/`, in name order: certbot ran each after
/// every renewal of every lineage.
fn deploy_dir_hooks(
    dir: &Path,
    files: &LiveFiles,
    domains: &[String],
    notes: &mut Vec<String>,
) -> Vec<(Vec<String>, String)> {
    use std::os::unix::fs::PermissionsExt;
    let hooks_dir = dir.join("renewal-hooks/deploy");
    let Ok(listing) = std::fs::read_dir(&hooks_dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = listing.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    let mut out = Vec::new();
    for path in paths.into_iter().take(MAX_LINEAGES) {
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        if path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().contains(char::is_control))
        {
            notes.push(format!(
                "{}: not carried over: its name holds control characters (certbot would have \
                 run it; rename it and add it to `reload` if it should run after a renewal)",
                path.display()
            ));
            continue;
        }
        if meta.permissions().mode() & 0o111 == 0 {
            notes.push(format!(
                "{}: not carried over: not executable, so certbot never ran it either (make it \
                 executable and add it to `reload` if it should run after a renewal)",
                path.display()
            ));
            continue;
        }
        let uses_env = fsutil::read_regular(&path, MAX_SMALL_FILE, Follow::Yes)
            .map(|b| b.windows(8).any(|w| w == b"RENEWED_"))
            .unwrap_or_else(|e| {
                notes.push(format!(
                    "{}: cannot be read to look for RENEWED_ variables: {e}",
                    path.display()
                ));
                true
            });
        let mut argv = if uses_env {
            renewed_env(files, domains)
        } else {
            Vec::new()
        };
        argv.push(path.display().to_string());
        out.push((
            argv,
            format!("certbot ran {} after every renewal", path.display()),
        ));
    }
    out
}

/// A note for each file in `renewal-hooks/pre/` and `renewal-hooks/post/`: certbot ran
/// them around every renewal run; renewd has no such hooks (its reload commands run after a
/// deployment).
pub(crate) fn hook_dir_notes(dir: &Path) -> Vec<String> {
    let mut notes = Vec::new();
    for (kind, why) in [
        ("pre", "before every renewal run; renewd has no pre hooks: if it stopped a service to free port 80 for certbot's standalone server, that port must now be free whenever renewd's `listen` renews (use a webroot the service serves, or a `listen` on another port it proxies to)"),
        ("post", "after every renewal run; renewd runs `reload` commands after a deployment: add it there if it reloads a service"),
    ] {
        let Ok(listing) = std::fs::read_dir(dir.join("renewal-hooks").join(kind)) else {
            continue;
        };
        let mut paths: Vec<PathBuf> = listing.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        for p in paths.into_iter().take(MAX_LINEAGES) {
            notes.push(format!("{}: certbot ran it {why}", p.display()));
        }
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn executables_in_renewal_hooks_deploy_become_reload_commands() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let hooks = dir.path().join("renewal-hooks/deploy");
        std::fs::create_dir_all(&hooks).expect("mkdir");
        let write = |name: &str, body: &str, mode: u32| {
            let p = hooks.join(name);
            std::fs::write(&p, body).expect("write");
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
            p.display().to_string()
        };
        let reload = write("10-reload", "#!/bin/sh\nsystemctl reload nginx\n", 0o755);
        let copy = write(
            "20-copy",
            "#!/bin/sh\ncp \"$RENEWED_LINEAGE/fullchain.pem\" /x\n",
            0o755,
        );
        write("README", "not a hook\n", 0o644);
        let files = LiveFiles {
            cert: "/le/live/a/cert.pem".into(),
            chain: "/le/live/a/chain.pem".into(),
            fullchain: "/le/live/a/fullchain.pem".into(),
            privkey: "/le/live/a/privkey.pem".into(),
        };
        let mut notes = Vec::new();
        let got = deploy_dir_hooks(dir.path(), &files, &["a.test".into()], &mut notes);
        let argvs: Vec<Vec<String>> = got.into_iter().map(|(argv, _)| argv).collect();
        assert_eq!(
            argvs,
            [
                vec![reload],
                vec![
                    "env".into(),
                    "RENEWED_LINEAGE=/le/live/a".into(),
                    "RENEWED_DOMAINS=a.test".into(),
                    copy
                ]
            ]
        );
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(
            notes[0].contains("README: not carried over: not executable"),
            "{notes:?}"
        );
    }

    #[test]
    fn shell_hooks_run_through_sh_and_get_certbots_variables_when_they_use_them() {
        let files = LiveFiles {
            cert: "/etc/letsencrypt/live/a/cert.pem".into(),
            chain: "/etc/letsencrypt/live/a/chain.pem".into(),
            fullchain: "/etc/letsencrypt/live/a/fullchain.pem".into(),
            privkey: "/etc/letsencrypt/live/a/privkey.pem".into(),
        };
        let domains = vec!["a.test".to_string(), "b.test".to_string()];
        let (argv, _) = shell_hook(
            "systemctl reload nginx && echo ok",
            "hook",
            &files,
            &domains,
        );
        assert_eq!(argv, ["sh", "-c", "systemctl reload nginx && echo ok"]);
        let (argv, comment) = shell_hook(
            "cp $RENEWED_LINEAGE/fullchain.pem /x",
            "hook",
            &files,
            &domains,
        );
        assert_eq!(
            argv[..3],
            [
                "env",
                "RENEWED_LINEAGE=/etc/letsencrypt/live/a",
                "RENEWED_DOMAINS=a.test b.test"
            ]
        );
        assert_eq!(
            argv[argv.len() - 3..],
            ["sh", "-c", "cp $RENEWED_LINEAGE/fullchain.pem /x"]
        );
        assert!(comment.contains("RENEWED_LINEAGE"), "{comment}");
    }
}

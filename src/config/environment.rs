//! The look at the machine behind `renewd check`: directories, users and groups, hook
//! executables, trust roots and secret files. It changes nothing.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::problem::{finish, Location, Problem};
use super::types::{AlertConfig, CaConfig, CertConfig, ChallengeConfig, ChallengeRule, Config};

impl Config {
    /// `renewd check`'s look at the machine, changing nothing: every target file's
    /// directory exists, users and groups exist, hooks are executable, the webroot is a
    /// directory, CA trust roots and secret files are readable, and `state_dir` can be
    /// created. Each problem points at the value that names the missing thing.
    ///
    /// It also holds every certificate to account: one without an `owner` (its own or from
    /// `[defaults]`) is reported at its `[[certificate]]` header, as a warning that does not
    /// stop its renewal (the daemon keeps renewing while the owners are being filled in).
    ///
    /// Severities as written here are refined by [`Config::diagnose`], which `check`, `run`
    /// and SIGHUP all go through: problems of the CAs and the alert command are warnings,
    /// a `state_dir` that cannot be created is an error.
    pub(crate) fn check_environment(&self) -> Vec<Problem> {
        let mut p = Vec::new();
        for cert in &self.certificates {
            if cert.owner.is_none() {
                p.push(Problem::warning(
                    cert.location.clone(),
                    format!(
                        "certificate `{}` has no `owner`: say who answers for it, here or in \
                         [defaults] (e.g. owner = \"platform@example.org\")",
                        cert.name
                    ),
                ));
            }
        }
        if let Some(parent) = self.state_dir.parent() {
            if let Some(why) = not_a_directory(parent) {
                p.push(Problem::new(
                    self.key_location("state_dir"),
                    format!("the parent `{}` of `state_dir` {why}", parent.display()),
                ));
            }
        }
        for ca in self.cas.values() {
            check_ca(ca, &mut p);
        }
        for cert in &self.certificates {
            check_certificate(cert, &mut p);
        }
        if let Some(d) = &self.discovery {
            super::discovery::check_password_files(&d.pkcs12_password_files, &mut p);
        }
        if let Some(AlertConfig {
            command: Some(argv),
            ..
        }) = &self.alert
        {
            if let Some(Err(why)) = argv.first().map(|cmd| check_executable(cmd)) {
                p.push(Problem::warning(
                    self.key_location("alert.command"),
                    format!("alert command: {why}"),
                ));
            }
        }
        super::trust::check_trust_paths(self, &mut p);
        // A trust store that is not there is audited as missing; said here first.
        for path in self.trust.iter().flat_map(|t| &t.paths) {
            if let Err(e) = fs::metadata(path) {
                p.push(Problem::warning(
                    self.key_location("trust.paths"),
                    format!("`{}` of `[trust] paths`: {e}", path.display()),
                ));
            }
        }
        finish(p, &self.sources)
    }
}

/// A CA's trust roots hold a PEM certificate and its EAB key file can be read; warnings
/// all, as the CA's certificates' renewals fail saying so.
fn check_ca(ca: &CaConfig, p: &mut Vec<Problem>) {
    if let Some(path) = &ca.trust_roots {
        let read = crate::fsutil::read_regular(
            path,
            crate::fsutil::caps::TRUST_ROOTS,
            crate::fsutil::Follow::Yes,
        );
        match read {
            Err(e) => p.push(Problem::warning(
                ca.key_location("trust_roots").clone(),
                format!(
                    "cannot read `trust_roots` `{}`: {}",
                    path.display(),
                    e.reason()
                ),
            )),
            Ok(bytes) => {
                if !contains(&bytes, b"-----BEGIN CERTIFICATE-----") {
                    p.push(Problem::warning(
                        ca.key_location("trust_roots").clone(),
                        format!(
                            "`trust_roots` `{}` holds no PEM certificate \
                             (no \"-----BEGIN CERTIFICATE-----\" line)",
                            path.display()
                        ),
                    ));
                }
            }
        }
    }
    if let Some(path) = &ca.eab_key_path() {
        let mut found = Vec::new();
        check_secret_file(
            "eab_hmac_key_file",
            path,
            ca.key_location("eab_hmac_key_file"),
            &mut found,
        );
        // The CA cannot be used; its certificates' renewals fail saying so.
        p.extend(
            found
                .into_iter()
                .map(|f| Problem::warning(f.location, f.message)),
        );
    }
}

/// A certificate's target directories, user, group, reload commands and challenges.
fn check_certificate(cert: &CertConfig, p: &mut Vec<Problem>) {
    for (kind, path) in cert.files.iter() {
        let key = format!("files.{kind}");
        let parent = path.parent().unwrap_or(Path::new("/"));
        if let Some(why) = not_a_directory(parent) {
            p.push(Problem::new(
                cert.key_location(&key).clone(),
                format!("the directory `{}` for `{key}` {why}", parent.display()),
            ));
        }
    }
    let user = |name: &str| nix::unistd::User::from_name(name).map(|u| u.is_some());
    let group = |name: &str| nix::unistd::Group::from_name(name).map(|g| g.is_some());
    check_account(cert, "user", cert.user.as_deref(), user, p);
    check_account(cert, "group", cert.group.as_deref(), group, p);
    for (i, argv) in cert.reload.iter().enumerate() {
        if let Some(Err(why)) = argv.first().map(|cmd| check_executable(cmd)) {
            p.push(Problem::new(
                cert.key_location(&format!("reload.{i}")).clone(),
                format!("reload command: {why}"),
            ));
        }
    }
    for rule in &cert.challenge.rules {
        check_challenge(cert, rule, p);
    }
    if let (Some(_), Some(path)) = (&cert.files.pkcs12, cert.pkcs12_password_path()) {
        let at = cert.key_location("pkcs12_password_file");
        check_secret_file("pkcs12_password_file", &path, at, p);
    }
}

/// The `user` or `group` (`key`) `name` exists on this machine; a number names an id as it
/// is (deploy::Ownership::resolve does the same).
fn check_account(
    cert: &CertConfig,
    key: &str,
    name: Option<&str>,
    exists: impl Fn(&str) -> nix::Result<bool>,
    p: &mut Vec<Problem>,
) {
    let Some(name) = name else {
        return;
    };
    let found = exists(name);
    let message = match found {
        Ok(true) => return,
        Ok(false) if name.parse::<u32>().is_ok() => return,
        Ok(false) => format!("{key} `{name}` does not exist on this machine"),
        Err(e) => format!("cannot look up {key} `{name}`: {e}"),
    };
    p.push(Problem::new(cert.key_location(key).clone(), message));
}

/// What a challenge needs from the machine: its webroot, hook or TSIG key file.
fn check_challenge(cert: &CertConfig, rule: &ChallengeRule, p: &mut Vec<Problem>) {
    let at = |key: &str| cert.key_location(&format!("{}.{key}", rule.key)).clone();
    match &rule.config {
        ChallengeConfig::Http01Webroot { webroot, .. } => {
            if let Some(why) = not_a_directory(webroot) {
                p.push(Problem::new(
                    at("webroot"),
                    format!("webroot `{}` {why}", webroot.display()),
                ));
            }
        }
        ChallengeConfig::Dns01Hook { hook, .. }
        | ChallengeConfig::DnsAccount01Hook { hook, .. } => {
            if let Some(Err(why)) = hook.first().map(|cmd| check_executable(cmd)) {
                p.push(Problem::new(
                    at("hook"),
                    format!("{} hook: {why}", rule.config.kind()),
                ));
            }
        }
        ChallengeConfig::Dns01Rfc2136 {
            tsig_key_file: Some(path),
            ..
        }
        | ChallengeConfig::DnsAccount01Rfc2136 {
            tsig_key_file: Some(path),
            ..
        } => check_secret_file("tsig_key_file", path, &at("rfc2136.tsig_key_file"), p),
        _ => {}
    }
}

/// Used to find bare hook names when `$PATH` is unset (systemd's default).
pub(super) const FALLBACK_PATH: &str =
    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

pub(super) fn not_a_directory(path: &Path) -> Option<String> {
    match fs::metadata(path) {
        Ok(m) if m.is_dir() => None,
        Ok(_) => Some("is not a directory".to_string()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Some("does not exist".to_string()),
        Err(e) => Some(format!("cannot be inspected: {e}")),
    }
}

pub(super) fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

pub(super) fn check_secret_file(key: &str, path: &Path, location: &Location, p: &mut Vec<Problem>) {
    match crate::fsutil::read_regular(
        path,
        crate::fsutil::caps::SECRET,
        crate::fsutil::Follow::Yes,
    ) {
        Err(e) => p.push(Problem::new(
            location.clone(),
            format!("cannot read `{key}` `{}`: {}", path.display(), e.reason()),
        )),
        Ok(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => p.push(Problem::new(
            location.clone(),
            format!("`{key}` `{}` is empty", path.display()),
        )),
        Ok(_) => {}
    }
}

/// Why a hook or reload command cannot be run.
#[derive(Debug, thiserror::Error)]
pub(super) enum NotExecutable {
    #[error("`{0}` must be an absolute path or a bare command name found in $PATH")]
    RelativePath(String),
    #[error("`{0}` is not an executable found in $PATH")]
    NotInPath(String),
    #[error("`{}`: {source}", path.display())]
    Inspect { path: PathBuf, source: io::Error },
    #[error("`{}` is not a regular file", .0.display())]
    NotAFile(PathBuf),
    #[error("`{}` is not executable", .0.display())]
    NoExecuteBit(PathBuf),
}

/// `cmd` is an absolute path to an executable regular file, or a bare name that `$PATH`
/// resolves to one.
pub(super) fn check_executable(cmd: &str) -> Result<(), NotExecutable> {
    if cmd.contains('/') {
        let path = Path::new(cmd);
        if !path.is_absolute() {
            return Err(NotExecutable::RelativePath(cmd.to_string()));
        }
        return executable_file(path);
    }
    let search = std::env::var_os("PATH").unwrap_or_else(|| FALLBACK_PATH.into());
    let found = std::env::split_paths(&search)
        .filter(|dir| dir.is_absolute())
        .any(|dir| executable_file(&dir.join(cmd)).is_ok());
    if found {
        Ok(())
    } else {
        Err(NotExecutable::NotInPath(cmd.to_string()))
    }
}

fn executable_file(path: &Path) -> Result<(), NotExecutable> {
    let meta = fs::metadata(path).map_err(|source| NotExecutable::Inspect {
        path: path.to_path_buf(),
        source,
    })?;
    if !meta.is_file() {
        return Err(NotExecutable::NotAFile(path.to_path_buf()));
    }
    if meta.permissions().mode() & 0o111 == 0 {
        return Err(NotExecutable::NoExecuteBit(path.to_path_buf()));
    }
    Ok(())
}

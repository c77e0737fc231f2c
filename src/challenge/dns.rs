//! dns-01 (RFC 8555 §8.4): the TXT record `_acme-challenge.<domain>`, through a hook or
//! through RFC 2136 dynamic updates ([`super::rfc2136`]).
//!
//! The hook is run as `HOOK set RECORD VALUE` and, whatever happened next, as
//! `HOOK clear RECORD VALUE`. The clear is owned by a [`Cleanup`] created *before* the set
//! runs, so a set that fails half-way, a validation the CA refuses and a renewal cancelled
//! mid-flight all end with the record cleared. An RFC 2136 update is cleared the same way
//! once it has been accepted.

use std::time::Duration;

use crate::hooks::{self, Hook};

use super::{Answer, ChallengeError, Provisioned, ProvisionedKind};

/// How long one `set` or `clear` may take; a hook that hangs is killed with its process group.
const HOOK_TIMEOUT: Duration = Duration::from_secs(300);

/// The TXT record that answers dns-01 for `identifier`, without a trailing dot. A wildcard
/// is validated at its base name (RFC 8555 §8.4): `*.example.org` →
/// `_acme-challenge.example.org`.
pub(crate) fn record_name(identifier: &str) -> String {
    let base = identifier.strip_prefix("*.").unwrap_or(identifier);
    format!("_acme-challenge.{base}")
}

/// The TXT record that answers dns-01 or dns-account-01 (`kind`) for `identifier`.
/// dns-account-01 (draft-ietf-acme-dns-account-label §3.1) puts the account's own label
/// first: `_LABEL._acme-challenge.DOMAIN`, LABEL the lowercase base32 (no padding) of the
/// first 10 bytes of SHA-256 of the account URL.
pub(crate) fn record_for(kind: &str, identifier: &str, account_url: &str) -> String {
    let name = record_name(identifier);
    if kind != "dns-account-01" {
        return name;
    }
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, account_url.as_bytes());
    let label = data_encoding::BASE32_NOPAD
        .encode(&digest.as_ref()[..10])
        .to_ascii_lowercase();
    format!("_{label}.{name}")
}

/// Takes a dns-01 answer back; see the module documentation.
pub(super) struct Cleanup {
    record: String,
    action: Action,
}

enum Action {
    Hook(Hook),
    Rfc2136(super::rfc2136::Update),
}

impl Cleanup {
    /// Clears the record and waits for that; a failure is logged.
    pub(super) async fn run(self) {
        match &self.action {
            Action::Hook(hook) => match hooks::run(hook).await {
                Ok(_) => tracing::debug!(record = %self.record, "dns-01 record cleared"),
                Err(e) => tracing::warn!(record = %self.record, error = %e,
                    "dns-01 hook `clear` failed; the TXT record may be left behind"),
            },
            Action::Rfc2136(update) => match update.clear().await {
                Ok(()) => tracing::debug!(record = %self.record, "dns-01 record deleted"),
                Err(e) => tracing::warn!(record = %self.record, error = %e,
                    "RFC 2136 delete failed; the TXT record may be left behind"),
            },
        }
    }

    /// Clears the record in the background: for a guard dropped without being withdrawn.
    pub(super) fn spawn(self) {
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(self.run());
            }
            Err(_) => tracing::warn!(record = %self.record,
                "no runtime left to clear the dns-01 record; it may be left behind"),
        }
    }
}

/// Runs `hook set RECORD VALUE`; the guard returned runs the clear. On failure the clear has already run when this returns.
pub(super) async fn set_with_hook(
    hook: &[String],
    kind: &str,
    answer: &Answer<'_>,
) -> Result<Provisioned, ChallengeError> {
    let record = record_for(kind, answer.identifier, answer.account_url);
    let env = vec![
        ("RENEWD_NAME".to_string(), answer.certificate.to_string()),
        ("RENEWD_DOMAINS".to_string(), answer.domains.join(",")),
        ("RENEWD_CHALLENGE".to_string(), kind.to_string()),
        ("RENEWD_RECORD".to_string(), record.clone()),
    ];
    let command = |action: &str| Hook {
        argv: hook
            .iter()
            .cloned()
            .chain([
                action.to_string(),
                record.clone(),
                answer.dns_value.to_string(),
            ])
            .collect(),
        env: env.clone(),
        timeout: HOOK_TIMEOUT,
    };
    // Armed before the set runs: if this future is dropped while the hook runs, the guard's
    // drop clears whatever the hook managed to set.
    let guard = Provisioned {
        kind: ProvisionedKind::Dns(Cleanup {
            record: record.clone(),
            action: Action::Hook(command("clear")),
        }),
    };
    match hooks::run(&command("set")).await {
        Ok(_) => {
            tracing::info!(%record, "dns-01 record set by the hook");
            Ok(guard)
        }
        Err(source) => {
            guard.withdraw().await;
            Err(ChallengeError::DnsHook { record, source })
        }
    }
}

/// Adds the TXT value through an RFC 2136 update to `server`, signed with the TSIG key from
/// `key_file` (or systemd's credential); the guard returned deletes it again.
pub(super) async fn set_with_rfc2136(
    server: std::net::SocketAddr,
    key_file: Option<&std::path::Path>,
    kind: &str,
    answer: &Answer<'_>,
) -> Result<Provisioned, ChallengeError> {
    use super::rfc2136;
    let key = match rfc2136::key_path(key_file) {
        Some(path) => Some(rfc2136::read_key(&path)?),
        None => None,
    };
    let record = record_for(kind, answer.identifier, answer.account_url);
    let update = rfc2136::Update::prepare(server, key.as_ref(), &record, answer.dns_value).await?;
    // Armed before the add is sent: deleting a value that was never added is harmless.
    let guard = Provisioned {
        kind: ProvisionedKind::Dns(Cleanup {
            record: update.record(),
            action: Action::Rfc2136(update.clone()),
        }),
    };
    match update.add().await {
        Ok(()) => Ok(guard),
        Err(e) => {
            guard.withdraw().await;
            Err(e.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// draft-ietf-acme-dns-account-label §3.1's label, checked against base32 and SHA-256
    /// computed by hand: `printf %s URL | sha256sum`, first 10 bytes, base32, lowercase.
    #[test]
    fn dns_account_01_puts_the_accounts_label_first() {
        let url = "https://example.com/acme/acct/ExampleAccount";
        let name = record_for("dns-account-01", "*.www.example.org", url);
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, url.as_bytes());
        let label = data_encoding::BASE32_NOPAD
            .encode(&digest.as_ref()[..10])
            .to_ascii_lowercase();
        assert_eq!(label.len(), 16);
        assert_eq!(name, format!("_{label}._acme-challenge.www.example.org"));
        assert_eq!(
            record_for("dns-01", "*.www.example.org", url),
            "_acme-challenge.www.example.org"
        );
    }

    #[test]
    fn record_names() {
        assert_eq!(record_name("example.org"), "_acme-challenge.example.org");
        assert_eq!(record_name("*.example.org"), "_acme-challenge.example.org");
        assert_eq!(
            record_name("a.b.example.org"),
            "_acme-challenge.a.b.example.org"
        );
    }

    fn hook_script(dir: &std::path::Path, set_body: &str) -> (Vec<String>, std::path::PathBuf) {
        use std::os::unix::fs::PermissionsExt;
        let log = dir.join("calls");
        let path = dir.join("hook");
        std::fs::write(
            &path,
            format!(
                "#!/bin/sh\necho \"$1 $2 $3 $RENEWD_NAME\" >> {}\n[ \"$1\" = set ] && {{ {set_body} ; }}\nexit 0\n",
                log.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        (vec![path.display().to_string()], log)
    }

    fn answer() -> Answer<'static> {
        Answer {
            certificate: "www",
            domains: &[],
            identifier: "*.example.org",
            token: "tok",
            key_authorization: "tok.thumb",
            digest: &[0; 32],
            dns_value: "VALUE",
            account_url: "https://ca.test/acme/acct/1",
            issuer_domain_name: None,
            ca: "test",
        }
    }

    fn calls(log: &std::path::Path) -> Vec<String> {
        std::fs::read_to_string(log)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    async fn wait_for_calls(log: &std::path::Path, n: usize) -> Vec<String> {
        for _ in 0..100 {
            if calls(log).len() >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        calls(log)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_guard_dropped_without_withdraw_still_clears() {
        let dir = tempfile::tempdir().unwrap();
        let (hook, log) = hook_script(dir.path(), "true");
        let guard = set_with_hook(&hook, "dns-01", &answer()).await.unwrap();
        drop(guard);
        assert_eq!(
            wait_for_calls(&log, 2).await,
            [
                "set _acme-challenge.example.org VALUE www",
                "clear _acme-challenge.example.org VALUE www"
            ]
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_renewal_cancelled_while_the_set_runs_still_clears() {
        let dir = tempfile::tempdir().unwrap();
        let (hook, log) = hook_script(dir.path(), "sleep 30");
        let answer = answer();
        let set = set_with_hook(&hook, "dns-01", &answer);
        // The set hook is running (and sleeping) when the future is dropped.
        assert!(tokio::time::timeout(Duration::from_millis(500), set)
            .await
            .is_err());
        let found = wait_for_calls(&log, 2).await;
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[1].starts_with("clear _acme-challenge.example.org VALUE"));
    }

    #[tokio::test]
    async fn a_failed_set_is_cleared_before_the_error_returns() {
        let dir = tempfile::tempdir().unwrap();
        let (hook, log) = hook_script(dir.path(), "echo nope >&2; exit 4");
        let err = set_with_hook(&hook, "dns-01", &answer())
            .await
            .err()
            .unwrap();
        assert!(err.to_string().contains("nope"), "{err}");
        assert_eq!(calls(&log).len(), 2, "{:?}", calls(&log));
    }
}

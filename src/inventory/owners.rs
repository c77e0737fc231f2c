//! `[[discovery.owner]]` rules: who answers for what discovery finds.
//!
//! Each unmanaged certificate without an owner takes `owner` and `service` from the first
//! rule (in written order) that matches one of the places it was found: a path glob
//! matches a file holding it (PEM, DER or PKCS#12), `port:N` and `listener:ADDR:PORT`
//! match a listener serving it (ADDR as the socket is bound, as `inventory` shows it).
//! Managed certificates and exceptions keep what their own tables say.

use crate::config::{OwnerMatch, OwnerRule};

use super::{Item, Kind};

/// Gives each unmanaged item of `items` without an owner the owner and service of the
/// first rule of `rules` that matches it.
pub(crate) fn apply(rules: &[OwnerRule], items: &mut [Item]) {
    for item in items.iter_mut().filter(|i| i.kind == Kind::Unmanaged) {
        if item.owner.is_some() {
            continue;
        }
        if let Some(rule) = rules.iter().find(|r| matches(&r.matches, item)) {
            item.owner = rule.owner.clone();
            item.service = rule.service.clone();
        }
    }
}

/// Whether `m` matches one of the places `item` was found.
fn matches(m: &OwnerMatch, item: &Item) -> bool {
    match m {
        OwnerMatch::Path(glob) => item.paths.iter().any(|p| glob.is_match(p)),
        OwnerMatch::Listener { ip, port } => item
            .listener_addrs
            .iter()
            .any(|a| ip.is_none_or(|ip| ip == a.ip()) && port.is_none_or(|port| port == a.port())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Location, PathGlob};

    fn rule(m: &str, owner: &str) -> OwnerRule {
        OwnerRule {
            matches: OwnerMatch::parse(m).unwrap(),
            owner: Some(owner.to_string()),
            service: Some(format!("{owner}-svc")),
            location: Location::new("/t.toml", 1, 1),
        }
    }

    fn unmanaged(path: Option<&str>, listener: Option<&str>) -> Item {
        let mut item = Item::blank(Kind::Unmanaged);
        item.paths.extend(path.map(Into::into));
        item.listener_addrs
            .extend(listener.map(|l| l.parse::<std::net::SocketAddr>().unwrap()));
        item
    }

    #[test]
    fn the_first_matching_rule_names_the_owner() {
        let rules = [
            rule("/etc/postgresql/**", "dba"),
            rule("port:5432", "dba-port"),
            rule("listener:*:443", "web"),
            rule("listener:[::1]:*", "v6"),
            rule("/etc/**", "ops"),
        ];
        let mut items = vec![
            unmanaged(Some("/etc/postgresql/16/main/server.crt"), None),
            unmanaged(None, Some("0.0.0.0:5432")),
            unmanaged(None, Some("[::]:443")),
            unmanaged(None, Some("[::1]:8443")),
            unmanaged(Some("/etc/ssl/x.pem"), None),
            unmanaged(Some("/srv/x.pem"), Some("10.0.0.1:25")),
        ];
        let mut managed = Item::blank(Kind::Managed);
        managed.paths.push("/etc/postgresql/a.pem".into());
        items.push(managed);
        apply(&rules, &mut items);
        let owners: Vec<Option<&str>> = items.iter().map(|i| i.owner.as_deref()).collect();
        assert_eq!(
            owners,
            [
                Some("dba"),
                Some("dba-port"),
                Some("web"),
                Some("v6"),
                Some("ops"),
                None,
                None
            ]
        );
        assert_eq!(items[0].service.as_deref(), Some("dba-svc"));
        // `*` stays inside one directory; `**` crosses them.
        let glob = PathGlob::new("/etc/*.pem").unwrap();
        assert!(glob.is_match(std::path::Path::new("/etc/a.pem")));
        assert!(!glob.is_match(std::path::Path::new("/etc/ssl/a.pem")));
    }
}

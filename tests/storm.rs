//! A renewal storm: every certificate due at once, through the fault proxy in front of a
//! real Pebble. `max_concurrent_renewals` must hold, every certificate must be deployed,
//! and a reload command they share must run once for the batch.

mod common;
mod rig;

use std::fs;
use std::time::Duration;

use common::faultproxy::*;
use common::*;
use rig::*;

const CERTS: usize = 20;
const LIMIT: usize = 3;

#[test]
fn max_concurrent_renewals_holds_under_a_storm_and_the_shared_reload_runs_once() {
    let rig = Rig::new(PebbleOptions {
        nonce_reject_percent: Some(0),
        ..PebbleOptions::default()
    });
    let proxy = FaultProxy::start(&rig.pebble);
    let reload_log = rig.path("reload.log");
    let hook = rig.path("reload.sh");
    write_exec(
        &hook,
        &format!("echo \"$RENEWD_NAME\" >> {}\n", reload_log.display()),
    );
    let mut body = String::new();
    for i in 0..CERTS {
        body.push_str(&rig.cert(
            &format!("c{i:02}"),
            &[&format!("c{i:02}.test")],
            &format!("reload = [[\"{}\"]]", hook.display()),
        ));
    }
    let base = rig
        .base_config()
        .replace(&rig.pebble.directory_url, &proxy.directory_url)
        .replace(
            &rig.pebble.tls_root_path.display().to_string(),
            &proxy.ca_pem_path.display().to_string(),
        );
    fs::write(
        &rig.config_path,
        format!("max_concurrent_renewals = {LIMIT}\n{base}{body}"),
    )
    .unwrap();

    // Every new order is held a moment, so renewals under way overlap for certain.
    proxy.add_rule(Rule::new(
        "POST",
        "/order-plz",
        Action::Stall {
            duration: Duration::from_millis(1500),
            then: AfterStall::Forward,
        },
    ));
    rig.renewd_ok("run", &["--once"]);

    let log = proxy.log_text();
    assert_eq!(
        proxy.requests("POST", "/order-plz").len(),
        CERTS,
        "one order each\n{log}"
    );
    assert_eq!(
        proxy.max_in_flight("/order-plz"),
        LIMIT,
        "at most {LIMIT} renewals at once, and the storm reached that many\n{log}"
    );
    for i in 0..CERTS {
        let name = format!("c{i:02}");
        let leaf = read_cert_pem(rig.fullchain(&name));
        assert_eq!(leaf.names, vec![format!("{name}.test")]);
        assert_eq!(key_spki(rig.key(&name)), leaf.spki, "{name}");
    }
    let runs = lines(&reload_log);
    assert_eq!(runs.len(), 1, "the shared reload ran once: {runs:?}");
    let served: Vec<&str> = runs[0].split(' ').collect();
    assert_eq!(served.len(), CERTS, "it served every certificate: {runs:?}");
}

//! The discovery scan over 10,000 files: `cargo bench --bench discovery` (release profile).
//!
//! The tree mixes what `/etc` holds: 1,100 PEM certificate files (100 of them chains), 200 DER
//! certificates, 1,000 private keys, and 7,700 unrelated text files, in 100 directories.
//! Prints the best and median of several scans (warm page cache) and the first (cold-ish).

use std::collections::HashSet;
use std::fs;
use std::time::Instant;

use renewd::inventory::discovery;

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().to_path_buf();
    let mut certs = Vec::new();
    for i in 0..20 {
        let ck = rcgen::generate_simple_self_signed(vec![format!("host{i}.bench.test")])
            .expect("self-signed");
        certs.push((
            ck.cert.pem(),
            ck.cert.der().to_vec(),
            ck.signing_key.serialize_pem(),
        ));
    }
    let text = "# some configuration\nkey = value\n".repeat(40);
    let mut n = 0usize;
    for d in 0..100 {
        let sub = root.join(format!("d{d:03}"));
        fs::create_dir_all(&sub).expect("mkdir");
        for f in 0..100 {
            let (pem, der, key) = &certs[n % certs.len()];
            let path = sub.join(format!("f{f:03}"));
            match f {
                0..=9 => fs::write(path.with_extension("pem"), pem),
                10 => fs::write(path.with_extension("pem"), format!("{pem}{}", certs[0].0)),
                11..=12 => fs::write(path.with_extension("der"), der),
                13..=22 => fs::write(path.with_extension("key"), key),
                _ => fs::write(path.with_extension("conf"), &text),
            }
            .expect("write");
            n += 1;
        }
    }
    let skip = HashSet::new();
    let mut times = Vec::new();
    let mut found = 0;
    // `cargo bench` passes --bench; under `cargo test --all-targets` one scan is a smoke test.
    let rounds = if std::env::args().any(|a| a == "--bench") {
        7
    } else {
        1
    };
    for _ in 0..rounds {
        let t = Instant::now();
        let scan = discovery::scan(std::slice::from_ref(&root), &skip, &mut |_| {});
        times.push(t.elapsed());
        found = scan.found().count();
        assert_eq!(scan.files_seen(), 10_000);
    }
    let first = times[0];
    let mut sorted = times.clone();
    sorted.sort();
    println!(
        "discovery scan of {n} files ({found} certificate files): first {:?}, best {:?}, median {:?}",
        first, sorted[0], sorted[sorted.len() / 2]
    );
}

//! Criterion micro-benchmarks of two hot pure paths: `cargo bench --bench hot_paths`
//! (release profile; about a minute). One group or benchmark: `cargo bench --bench hot_paths
//! -- schedule`. Under `cargo test --all-targets` (or `cargo test --bench hot_paths`) each
//! benchmark runs once, as a smoke test.
//!
//! - "parse chain": what renewd does with a deployed fullchain (leaf + intermediate, the leaf
//!   an ECDSA P-256 key, the intermediate signed by a root CA, all made with rcgen):
//!   - `split+parse leaf`: [`x509::pem_certificates`] (PEM to DER, each block parsed once to
//!     check it) then [`CertInfo::parse_der`] of the leaf, in memory;
//!   - `inspect fullchain+key`: [`deploy::inspect`] of a fullchain and a key file in a
//!     temporary directory (warm page cache): reads both, splits the chain, parses the leaf,
//!     and checks that the key belongs to it;
//!   - `verify leaf signature`: [`x509::verify_issued_by`] of the leaf by the intermediate,
//!     the link check `renew::check_issued` applies to each chain a CA sends.
//! - "schedule 10,000 certificates": [`schedule::decide_with_ari`] for 10,000 certificates
//!   built once beforehand (most valid and far from their threshold, some with ARI advice,
//!   some with failures, a few unusable or missing a name), keeping the earliest decision
//!   as the daemon does to know when to wake up next.

use std::hint::black_box;
use std::time::{Duration, SystemTime};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, PKCS_ECDSA_P256_SHA256,
};

use renewd::config::{FileSet, RenewBefore};
use renewd::deploy;
use renewd::schedule::{self, AriAdvice, Decision, Deployed, Failures};
use renewd::x509::{self, CertInfo};

const DAY: Duration = Duration::from_secs(86400);

/// A leaf (ECDSA P-256) signed by an intermediate signed by a root: returns the fullchain
/// PEM (leaf then intermediate, as a CA sends it) and the leaf's private key PEM.
fn chain() -> (String, String) {
    let ca = |cn: &str| {
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, cn);
        params
    };
    let root_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("root key");
    let root_params = ca("Bench Root CA");
    root_params.self_signed(&root_key).expect("root cert");
    let root = Issuer::new(root_params, root_key);

    let int_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("intermediate key");
    let mut int_params = ca("Bench Intermediate CA");
    int_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    let int_cert = int_params
        .signed_by(&int_key, &root)
        .expect("intermediate cert");
    let intermediate = Issuer::new(int_params, int_key);

    let leaf_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("leaf key");
    let leaf_params =
        CertificateParams::new(vec!["www.bench.test".to_string(), "bench.test".to_string()])
            .expect("leaf params");
    let leaf = leaf_params
        .signed_by(&leaf_key, &intermediate)
        .expect("leaf cert");
    (
        format!("{}{}", leaf.pem(), int_cert.pem()),
        leaf_key.serialize_pem(),
    )
}

fn parse_chain(c: &mut Criterion) {
    let (fullchain, key) = chain();
    let dir = tempfile::tempdir().expect("tempdir");
    let files = FileSet {
        fullchain: Some(dir.path().join("fullchain.pem")),
        key: Some(dir.path().join("privkey.pem")),
        ..FileSet::default()
    };
    std::fs::write(files.fullchain.as_ref().expect("fullchain"), &fullchain).expect("write");
    std::fs::write(files.key.as_ref().expect("key"), &key).expect("write");
    // What is measured must work: a bench of an early error return would look fast.
    let ders = x509::pem_certificates(fullchain.as_bytes()).expect("chain");
    assert_eq!(ders.len(), 2);
    let leaf = deploy::inspect(&files).expect("inspect");
    assert_eq!(leaf.dns_names, ["www.bench.test", "bench.test"]);
    x509::verify_issued_by(&ders[0], &ders[1]).expect("leaf signed by the intermediate");

    let mut g = c.benchmark_group("parse chain");
    g.measurement_time(Duration::from_secs(4))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(50);
    g.bench_function("split+parse leaf", |b| {
        b.iter(|| {
            let ders = x509::pem_certificates(black_box(fullchain.as_bytes())).expect("chain");
            CertInfo::parse_der(&ders[0]).expect("leaf")
        })
    });
    g.bench_function("inspect fullchain+key", |b| {
        b.iter(|| deploy::inspect(black_box(&files)).expect("inspect"))
    });
    g.bench_function("verify leaf signature", |b| {
        b.iter(|| x509::verify_issued_by(black_box(&ders[0]), black_box(&ders[1])))
    });
    g.finish();
}

/// One certificate as the schedule sees it.
struct Entry {
    deployed: Deployed,
    policy: RenewBefore,
    ari: Option<AriAdvice>,
    failures: Failures,
    jitter: f64,
}

/// 10,000 certificates in a fixed mix, from a deterministic generator (splitmix64): per
/// 1,000, 880 valid with no ARI advice and no failures, 80 valid with ARI advice, 30 failing
/// (a third of them with a Retry-After), 5 unusable, 5 valid but missing a name. Lifetimes
/// of 90 days (most), 47 days and 6 days, issued up to a lifetime ago; `renew_before` 1/3
/// (most) or 30 days.
fn certificates(now: SystemTime) -> Vec<Entry> {
    let mut seed = 0x5eed_u64;
    let mut next = move || {
        seed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    (0..10_000)
        .map(|i| {
            let r = next();
            let lifetime = match r % 10 {
                0 => 6 * DAY,
                1 | 2 => 47 * DAY,
                _ => 90 * DAY,
            };
            // Issued between now and 2/3 of a lifetime ago: most are far from the threshold.
            let age = lifetime.mul_f64((r >> 8) as f64 / (1u64 << 56) as f64 * 2.0 / 3.0);
            let not_before = now - age;
            let not_after = not_before + lifetime;
            let policy = if r % 7 == 0 {
                RenewBefore::Duration(30 * DAY)
            } else {
                RenewBefore::Fraction(1.0 / 3.0)
            };
            let valid = |missing_names: Vec<String>| Deployed::Valid {
                not_before,
                not_after,
                missing_names,
            };
            let jitter = (next() >> 11) as f64 / (1u64 << 53) as f64;
            let mut e = Entry {
                deployed: valid(Vec::new()),
                policy,
                ari: None,
                failures: Failures::default(),
                jitter,
            };
            match i % 1000 {
                0..=879 => {}
                880..=959 => {
                    e.ari = Some(AriAdvice {
                        chosen: not_after - lifetime / 4 + Duration::from_secs(next() % 86400),
                    })
                }
                960..=989 => {
                    let n = 1 + (i % 12) as u32;
                    e.failures = Failures {
                        consecutive: n,
                        last_failure: Some(now - Duration::from_secs(next() % 3600)),
                        retry_after: (i % 3 == 0).then(|| now + Duration::from_secs(1800)),
                        last_renewed: None,
                    };
                }
                990..=994 => {
                    e.deployed = Deployed::Unusable(format!(
                        "/etc/ssl/bench/{i}/fullchain.pem does not exist"
                    ))
                }
                _ => e.deployed = valid(vec![format!("new{i}.bench.test")]),
            }
            e
        })
        .collect()
}

/// Every decision, and the earliest one: the daemon's next wake-up.
fn schedule_all(entries: &[Entry], now: SystemTime) -> Option<Decision> {
    entries
        .iter()
        .map(|e| {
            schedule::decide_with_ari(
                &e.deployed,
                &e.policy,
                e.ari.as_ref(),
                &e.failures,
                now,
                e.jitter,
            )
        })
        .min_by_key(|d| d.at)
}

fn schedule_10k(c: &mut Criterion) {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_750_000_000);
    let entries = certificates(now);
    let first = schedule_all(&entries, now).expect("decisions");
    // Unusable and renamed certificates are due now.
    assert!(first.is_due(now), "{first:?}");

    let mut g = c.benchmark_group("schedule 10,000 certificates");
    g.measurement_time(Duration::from_secs(4))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(50)
        .throughput(Throughput::Elements(entries.len() as u64));
    g.bench_function("decide_with_ari + earliest", |b| {
        b.iter(|| schedule_all(black_box(&entries), black_box(now)))
    });
    g.finish();
}

criterion_group!(benches, parse_chain, schedule_10k);
criterion_main!(benches);

//! Seeds for the tests' randomness: from an environment variable to replay a run, else the
//! clock; printed (libtest shows a test's output when it fails) so any run can be replayed.

use std::time::{SystemTime, UNIX_EPOCH};

use rand::SeedableRng;

/// The seed in `var`, else one from the clock.
pub fn seed(var: &str) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        })
}

/// A generator for `what`, seeded by [`seed`]`(var)`; the seed is printed with the variable
/// that replays it.
pub fn seeded_rng(var: &str, what: &str) -> rand::rngs::StdRng {
    let seed = seed(var);
    eprintln!("{what}: seed {seed} ({var}={seed})");
    rand::rngs::StdRng::seed_from_u64(seed)
}

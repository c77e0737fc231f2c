//! Tests that must not overlap with others, serialized explicitly: all integration tests
//! share one binary and run on its test threads side by side.
//!
//! A *heavy* test loads the machine (connection floods, SIGKILL loops, fuzzing for a time
//! budget): it runs alone among the guarded tests. A *timing* test asserts on how soon
//! something happens (watchdog pings, a proof's time bound): it may run beside other timing
//! tests, never beside a heavy one. Unguarded tests run beside anything, as they did when
//! each file was its own binary.

use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

static GUARD: RwLock<()> = RwLock::new(());

/// Held for the whole of a heavy test: no other heavy or timing test runs meanwhile.
pub fn heavy() -> RwLockWriteGuard<'static, ()> {
    // A failed test poisons the lock; the next test is not the worse for it.
    GUARD.write().unwrap_or_else(PoisonError::into_inner)
}

/// Held for the whole of a timing-sensitive test: no heavy test runs meanwhile.
pub fn timing() -> RwLockReadGuard<'static, ()> {
    GUARD.read().unwrap_or_else(PoisonError::into_inner)
}

//! renewd's integration tests: one test crate, so the shared harness ([`common`], with the
//! renewd rig in [`common::rig`]) compiles once. One module per area; a test's full name
//! is `MODULE::TEST` (`cargo test --test it interop::`). Tests that must not overlap with
//! others take [`common::serial`]'s guards.

mod common;

mod accounts;
mod ari;
mod ca_faults;
mod chains;
mod challenges;
mod cli;
mod config_errors;
mod crash_recovery;
mod daemon;
mod deploy_safety;
mod discovery_sources;
mod dns_persist;
mod faultproxy_harness;
mod fuzz;
mod harness;
mod hostile_files;
mod hostile_listeners;
mod import_certbot;
mod interop;
mod inventory;
mod issuance;
mod proxy;
mod revocation;
mod rollback;
mod storm;
mod systemd_notify;
mod systemd_unit;
mod trust_audit;
mod verify_proof;

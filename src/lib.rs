//! renewd: a host-resident ACME certificate renewal agent.
//!
//! The library does the work; `main.rs` only parses the command line and maps errors to exit
//! codes. See `ARCHITECTURE.md` for the bird's-eye view and the invariants.

pub mod acme;
pub(crate) mod challenge;
pub mod commands;
pub mod config;
pub mod control;
pub(crate) mod daemon;
pub mod deploy;
pub(crate) mod fsutil;
pub mod hooks;
pub mod inventory;
pub mod logging;
pub(crate) mod outbound;
pub(crate) mod renew;
pub(crate) mod requests;
pub mod schedule;
pub mod serve;
pub(crate) mod session;
pub mod state;
pub mod status;
pub mod text;
pub(crate) mod trust;
pub mod verify;
pub mod x509;

//! hubprobe: a connectivity probe for IoT devices that connect to a cloud hub.
//!
//! The library holds everything; `main.rs` only parses the command line, runs
//! and maps the verdict to an exit code. The layers (each importing only from
//! those below it) are described in `docs/architecture.md`.

#![deny(missing_docs)]

pub mod agent;
pub mod anchors;
pub mod auth;
pub mod check;
pub mod cli;
pub mod clock;
pub mod config;
pub mod diagnose;
pub mod dps;
pub mod exit;
pub mod fleet;
pub mod fsio;
pub mod model;
pub mod mtu;
pub mod net;
pub mod probe;
pub mod profile;
pub mod report;
pub mod settings;
pub mod tune;

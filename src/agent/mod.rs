//! `hubprobe agent`: periodic checks, the canary session, the spool, the uploader
//! and the Prometheus textfile.

pub mod bill;
pub mod config;
pub mod history;
pub mod identity;
pub mod machine;
pub mod run;
pub mod schedule;
pub mod session;
mod signals;
pub mod spool;
pub(crate) mod uploader;
pub mod wire;

//! `hubprobe agent`: periodic checks, the canary session, the spool, the uploader
//! and the Prometheus textfile.

pub mod history;

//! `hubprobe fleet`: aggregate reports from many devices, and tell a hub-side
//! incident from device-side trouble.
//!
//! - [`input`] streams reports from files, NDJSON (gzip too), directories and stdin,
//!   parsing on worker threads; memory stays flat whatever the number of reports.
//!   [`avro`] reads the Avro containers IoT Hub routing and Event Hubs Capture write.
//! - [`record`] parses one report into the few fields the summary needs.
//! - [`aggregate`] and [`incident`] are the pure accumulators; [`sketch`] the
//!   constant-memory percentile histogram; [`shared`] the types both accumulators use.
//! - [`summary`] is the output document (`hubprobe.fleet/1`), rendered by
//!   [`render_text`], JSON (serde) and [`html`].
//! - [`synth`] makes realistic fleets of reports with injected failure patterns.

pub mod aggregate;
pub mod avro;
pub mod explain;
pub mod html;
pub mod incident;
pub mod input;
pub mod record;
pub mod render_text;
pub mod shared;
pub mod sketch;
pub mod summary;
pub mod synth;

use std::path::PathBuf;

use serde::Serialize;

pub use input::{summarize, summarize_with_progress, NoProgress, Progress, ProgressState, Source};
pub use summary::FleetSummary;

/// The widest incident bucket: a year (a wider one is taken as this).
pub const MAX_BUCKET_S: u64 = 366 * 86_400;

/// How to summarize.
#[derive(Debug, Clone, Serialize)]
pub struct FleetOptions {
    /// Group by this label key (also summarized per value).
    pub by: Option<String>,
    /// The label that names a device's network (incident view).
    pub network_label: String,
    /// The label that names a device's site.
    pub site_label: String,
    /// Width of the incident view's time buckets, seconds.
    pub bucket_s: u64,
    /// Devices failing the same way in one bucket that make it stand out
    /// (default: 2 % of the devices seen, at least 5).
    pub incident_min_devices: Option<u64>,
    /// Distinct networks that make a window hub-side.
    pub incident_min_networks: u64,
    /// Parser threads.
    #[serde(skip)]
    pub threads: usize,
}

impl Default for FleetOptions {
    fn default() -> Self {
        FleetOptions {
            by: None,
            network_label: "network".into(),
            site_label: "site".into(),
            bucket_s: 300,
            incident_min_devices: None,
            incident_min_networks: 3,
            threads: 2,
        }
    }
}

impl FleetOptions {
    /// Bucket width in milliseconds (1 s to [`MAX_BUCKET_S`]).
    pub fn bucket_ms(&self) -> i64 {
        self.bucket_s.clamp(1, MAX_BUCKET_S) as i64 * 1000
    }
}

/// Strips the optional `label.` prefix of a label key given on the command line.
pub fn label_key(s: &str) -> String {
    s.strip_prefix("label.").unwrap_or(s).to_string()
}

/// Why a summary could not be made at all (bad lines are data, not errors).
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// An input path does not exist or cannot be read.
    #[error("cannot read {path}: {source}")]
    Input {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Every report was of a major schema version this build does not read.
    #[error("{0}")]
    UnknownSchema(String),
}

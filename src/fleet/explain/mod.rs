//! `hubprobe fleet explain`: names the cause of every disconnect in IoT Hub's own
//! `Connections` resource logs, as the 404104 troubleshooting guidance does, and —
//! given the devices' hubprobe reports — the precise cause the device measured.
//!
//! - [`reader`] reads the logs in every format Azure Monitor writes them.
//! - [`rules`] applies the guidance: cause 1 (a steady period: SAS token renewal or
//!   expiry), cause 3 (many devices at once on many masked IP prefixes, with
//!   500xxx: a hub transient, the fleet incident view's window logic), cause 2 (the
//!   rest, refined), and refused connects (401003) as their own class.
//! - [`join`] reads the agent's canary records and matches them to the hub's.
//! - [`text`] and [`html`] render the document (`hubprobe.explain/1`).

pub mod html;
pub mod join;
pub mod reader;
pub mod rules;
pub mod text;

use crate::fleet::input::Source;

pub use reader::ReadError;

/// The schema id of the document.
pub const SCHEMA_ID: &str = "hubprobe.explain/1";

/// The JSON Schema of the document.
pub const JSON_SCHEMA: &str = include_str!("../../../docs/explain.schema.json");

/// How to explain.
#[derive(Debug, Clone)]
pub struct ExplainOptions {
    /// Width of the many-devices window's buckets, seconds.
    pub bucket_s: u64,
    /// Devices disconnecting in one bucket that make it stand out (default 2 % of
    /// the devices seen, at least 5).
    pub min_devices: Option<u64>,
    /// Distinct masked IP prefixes that make a window hub-side.
    pub min_prefixes: u64,
    /// Largest clock difference between a hub record and a canary record that still
    /// matches, ms.
    pub tolerance_ms: i64,
    /// A reconnect within this is quick (token expiry: 401003 and back), ms.
    pub quick_reconnect_ms: i64,
    /// A device silent this long after its last disconnect, with the log going on,
    /// never reconnected, ms.
    pub never_after_ms: i64,
}

impl Default for ExplainOptions {
    fn default() -> Self {
        ExplainOptions {
            bucket_s: 300,
            min_devices: None,
            min_prefixes: 3,
            tolerance_ms: 120_000,
            quick_reconnect_ms: 60_000,
            never_after_ms: 15 * 60_000,
        }
    }
}

/// Reads the logs (and the reports) and explains.
pub fn explain(
    logs: &[Source],
    reports: &[Source],
    opts: &ExplainOptions,
) -> Result<rules::Explanation, ReadError> {
    let mut stats = reader::ReadStats::default();
    let mut acc = rules::Accumulator::default();
    reader::read_all(logs, &mut stats, &mut |r| acc.add(&r))?;
    let side = if reports.is_empty() {
        None
    } else {
        Some(join::read_reports(reports)?)
    };
    Ok(acc.finish(stats, side.as_ref(), opts))
}

/// Groups a count by thousands with spaces (`1 234`).
pub fn group(n: u64) -> String {
    let s = n.to_string();
    let mut o = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            o.push(' ');
        }
        o.push(c);
    }
    o
}

/// A duration in seconds for a person (`48m 0s`, `1h 5m`, `12 s`).
pub fn human_s(s: f64) -> String {
    let s = s.max(0.0).round() as u64;
    if s < 60 {
        format!("{s} s")
    } else if s < 3600 {
        format!("{}m {}s", s / 60, s % 60)
    } else {
        format!("{}h {}m", s / 3600, (s % 3600) / 60)
    }
}

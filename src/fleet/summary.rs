//! The fleet summary document (`hubprobe.fleet/1`): what `fleet summarize -o json`
//! prints and what the text and HTML renderers read.

use std::collections::BTreeMap;

use serde::Serialize;

use super::sketch::Percentiles;
use super::FleetOptions;

/// The JSON Schema of the summary document (`hubprobe fleet schema` prints it).
pub const JSON_SCHEMA: &str = include_str!("../../docs/fleet.schema.json");

/// Schema id of the summary document.
pub const FLEET_SCHEMA_ID: &str = "hubprobe.fleet/1";

/// The value shown for a report without the label asked for.
pub const NO_LABEL: &str = "(none)";

/// The last instant RFC 3339 can write with a four-digit year:
/// 9999-12-31T23:59:59.999Z.
pub const MAX_RFC3339_MS: i64 = 253_402_300_799_999;

/// RFC 3339 UTC (milliseconds) of Unix milliseconds, for any input: clamped to
/// [1970-01-01, 9999-12-31T23:59:59.999Z] (the formatter refuses anything later).
pub fn rfc3339_ms(ms: i64) -> String {
    let ms = ms.clamp(0, MAX_RFC3339_MS) as u64;
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_millis(t).to_string()
}

/// The whole summary.
#[derive(Debug, Clone, Serialize)]
pub struct FleetSummary {
    /// Always [`FLEET_SCHEMA_ID`].
    pub schema: String,
    /// What was read.
    pub input: InputSummary,
    /// Distinct devices.
    pub devices: u64,
    /// First and last report start.
    pub span: Option<Span>,
    /// The options used.
    pub options: FleetOptions,
    /// The whole fleet.
    pub overall: GroupSummary,
    /// One entry per value of the `--by` label.
    pub groups: Vec<GroupEntry>,
    /// Failures bucketed in time, and the windows flagged.
    pub incidents: IncidentView,
    /// Trouble that stays when the flagged windows are taken away, attributed like
    /// incidents are (a network, a site, or the devices themselves), most devices first.
    pub persistent: Vec<PersistentPattern>,
    /// Every device with its latest verdict and latest failure, worst first (the
    /// HTML page lists them; not in the JSON document, which stays small).
    #[serde(skip)]
    pub device_rows: Vec<DeviceRow>,
}

/// A failure or disconnect cause seen outside the flagged windows.
#[derive(Debug, Clone, Serialize)]
pub struct PersistentPattern {
    /// `disconnect:<cause>` or `check:<class>`.
    pub signature: String,
    /// Distinct devices showing it outside the windows.
    pub devices: u64,
    /// `network` or `site` (≥ 90 % of the devices there) or `devices` (spread out).
    pub scope: String,
    /// `key=value` of that network or site, when confined.
    pub confined_to: Option<String>,
    /// Devices by network, top 5.
    pub networks: Vec<LabelCount>,
    /// Devices by site, top 5.
    pub sites: Vec<LabelCount>,
    /// Endpoints it was seen on (checks).
    pub endpoints: Vec<String>,
    /// Median measured path idle timeout of the devices' network (tune reports), seconds.
    pub idle_timeout_s: Option<u64>,
    /// Most common recommended keep-alive on that network (tune reports), seconds.
    pub recommended_keepalive_s: Option<u64>,
    /// What to do.
    pub advice: String,
    /// One sentence for a person.
    pub summary: String,
    /// Up to 10 device names.
    pub example_devices: Vec<String>,
}

/// One device on the HTML page.
#[derive(Debug, Clone)]
pub struct DeviceRow {
    /// Device id.
    pub device: String,
    /// Verdict of its latest report.
    pub verdict: crate::model::Verdict,
    /// Start of its latest report.
    pub latest: String,
    /// Network label of its latest report.
    pub network: String,
    /// Site label of its latest report.
    pub site: String,
    /// Its latest failed phase: `endpoint/phase class`.
    pub last_failure: Option<String>,
    /// When that report started.
    pub last_failure_at: Option<String>,
}

/// What was read.
#[derive(Debug, Clone, Serialize)]
pub struct InputSummary {
    /// Files read.
    pub files: u64,
    /// Files found under directories but not read (not .json/.ndjson/.jsonl/.avro, optionally .gz, nor Avro without an extension).
    pub files_skipped: Vec<String>,
    /// Lines (NDJSON) or documents read, blank lines excluded.
    pub records: u64,
    /// Blank lines.
    pub blank_lines: u64,
    /// Reports counted (after dropping repeats).
    pub reports: u64,
    /// Repeated reports dropped (same id, same device).
    pub duplicates: u64,
    /// Lines that are not JSON or not complete reports.
    pub malformed: u64,
    /// JSON lines that are not hubprobe reports.
    pub foreign: u64,
    /// Reports of a major schema version this build does not read.
    pub unknown_schema: u64,
    /// The first problems, with file and line.
    pub problems: Vec<Problem>,
    /// Reports and disconnects whose time a device clock got wrong.
    pub implausible_times: ImplausibleTimes,
}

/// Times outside the believed window: counted (the reports are summarized), but
/// not put on the incident timeline nor in the span.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ImplausibleTimes {
    /// Start of the believed window (inclusive).
    pub from: String,
    /// End of the believed window (exclusive).
    pub to: String,
    /// Reports whose `started_at` lies outside it.
    pub reports: u64,
    /// Canary disconnects whose `at_unix_ms` lies outside it.
    pub disconnects: u64,
    /// Distinct devices with either.
    pub devices: u64,
    /// Up to 10 of them, by name.
    pub example_devices: Vec<String>,
}

/// One input line that was not used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// File (`-` for stdin).
    pub file: String,
    /// Line number (1-based; a document's first line; in Avro, the message number).
    pub line: u64,
    /// `malformed`, `foreign` or `unknown_schema`.
    pub kind: String,
    /// What is wrong.
    pub message: String,
}

/// First and last report start.
#[derive(Debug, Clone, Serialize)]
pub struct Span {
    /// Earliest `started_at`.
    pub from: String,
    /// Latest `started_at`.
    pub to: String,
}

/// One group of `--by`.
#[derive(Debug, Clone, Serialize)]
pub struct GroupEntry {
    /// The label key.
    pub label: String,
    /// Its value (`(none)` for reports without it).
    pub value: String,
    /// The summary of the reports with that value.
    pub summary: GroupSummary,
    /// The failure class on most of the group's devices outside the flagged
    /// incident windows (a hub incident that touched every group does not hide a
    /// group's own trouble).
    pub top_failure_outside_incidents: Option<ClassCount>,
}

/// A failure class and the devices with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClassCount {
    /// Class id.
    pub class: String,
    /// Distinct devices.
    pub devices: u64,
}

/// The summary of a set of reports.
#[derive(Debug, Clone, Serialize)]
pub struct GroupSummary {
    /// Reports.
    pub reports: u64,
    /// Distinct devices.
    pub devices: u64,
    /// Reports by kind (`check`, `tune`).
    pub kinds: BTreeMap<String, u64>,
    /// Devices by the verdict of their latest report.
    pub latest_verdicts: LatestVerdicts,
    /// Per endpoint and phase.
    pub phases: Vec<PhaseSummary>,
    /// Failure classes, most devices first.
    pub failure_classes: Vec<ClassSummary>,
    /// Trust anchors and unknown-CA failures.
    pub trust: TrustSummary,
    /// Device clock offsets (from the HTTPS `Date` header).
    pub clock: ClockSummary,
    /// Keep-alive recommendations and measured idle timeouts (tune reports).
    pub keepalive: KeepaliveSummary,
    /// Canary disconnects by cause.
    pub disconnects: Vec<CauseCount>,
}

/// Devices by the verdict of their latest report.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LatestVerdicts {
    /// OK.
    pub ok: u64,
    /// WARNING.
    pub warning: u64,
    /// CRITICAL.
    pub critical: u64,
    /// UNKNOWN.
    pub unknown: u64,
}

/// One endpoint's phase across reports.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseSummary {
    /// Endpoint name.
    pub endpoint: String,
    /// Phase name.
    pub phase: String,
    /// Runs that succeeded or failed (skips excluded).
    pub attempts: u64,
    /// Succeeded.
    pub ok: u64,
    /// Failed.
    pub failed: u64,
    /// Skipped (an earlier phase failed).
    pub skipped: u64,
    /// ok / attempts.
    pub success_share: Option<f64>,
    /// Duration percentiles of the successful runs, ms (±1 %, see `sketch`).
    pub duration_ms: Option<Percentiles>,
    /// Duration histogram of the successful runs: (from ms, to ms, count).
    #[serde(skip)]
    pub histogram: Vec<(f64, f64, u64)>,
}

/// One failure class.
#[derive(Debug, Clone, Serialize)]
pub struct ClassSummary {
    /// Class id.
    pub class: String,
    /// Distinct devices with at least one such failure.
    pub devices: u64,
    /// Failed phases of this class.
    pub reports: u64,
    /// Endpoints it was seen on.
    pub endpoints: Vec<String>,
    /// One affected device (the first by name).
    pub example_device: String,
    /// Set when every affected device is at one site (or on one network).
    pub confined_to: Option<String>,
    /// Affected devices by site (latest report), top 5.
    pub sites: Vec<LabelCount>,
    /// Affected devices by network (latest report), top 5.
    pub networks: Vec<LabelCount>,
}

/// Devices per label value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LabelCount {
    /// The label value.
    pub value: String,
    /// Devices.
    pub devices: u64,
}

/// Trust anchors.
#[derive(Debug, Clone, Serialize)]
pub struct TrustSummary {
    /// Anchors that validated a hub chain, with the devices that used them.
    pub anchors: Vec<AnchorCount>,
    /// Devices with at least one `tls.unknown_ca` failure.
    pub unknown_ca_devices: u64,
    /// Up to 20 of them, by name.
    pub unknown_ca_examples: Vec<String>,
}

/// One trust anchor.
#[derive(Debug, Clone, Serialize)]
pub struct AnchorCount {
    /// Anchor name.
    pub name: String,
    /// Devices.
    pub devices: u64,
}

/// Device clock offsets.
#[derive(Debug, Clone, Serialize)]
pub struct ClockSummary {
    /// Reports with a measured offset.
    pub reports: u64,
    /// Percentiles of |offset|, seconds.
    pub abs_offset_s: Option<Percentiles>,
    /// Devices with an |offset| above `warning_s` at least once.
    pub devices_over_warning: u64,
    /// The warning threshold, seconds.
    pub warning_s: f64,
}

/// Keep-alive figures from tune reports.
#[derive(Debug, Clone, Serialize)]
pub struct KeepaliveSummary {
    /// Tune reports.
    pub tune_reports: u64,
    /// Recommended keep-alive values, seconds.
    pub recommended_s: Vec<ValueCount>,
    /// Measured idle timeouts, rounded to seconds.
    pub idle_timeouts_s: Vec<ValueCount>,
    /// Percentiles of the measured idle timeouts, seconds.
    pub idle_timeout_s: Option<Percentiles>,
}

/// Reports per value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ValueCount {
    /// The value.
    pub value: u64,
    /// Reports.
    pub reports: u64,
}

/// Canary disconnects of one cause. A disconnect the agent reports again (with
/// the same `id`) once it is over counts once, in its latest version.
#[derive(Debug, Clone, Serialize)]
pub struct CauseCount {
    /// Cause id.
    pub cause: String,
    /// Disconnects.
    pub events: u64,
    /// Distinct devices.
    pub devices: u64,
    /// Of them, disconnects whose session was back (`reconnect_s` known).
    pub reconnected: u64,
    /// Percentiles of the time until the session was back, seconds.
    pub reconnect_s: Option<Percentiles>,
    /// Failed connection attempts before the sessions were back, summed.
    pub failed_attempts: u64,
}

/// The incident view.
#[derive(Debug, Clone, Serialize)]
pub struct IncidentView {
    /// Bucket width, seconds.
    pub bucket_s: u64,
    /// Devices failing the same way in one bucket that make it stand out.
    pub min_devices: u64,
    /// Distinct networks that make a window hub-side.
    pub min_networks: u64,
    /// Non-empty buckets: devices disconnecting and devices failing a check.
    pub timeline: Vec<TimelineBucket>,
    /// Windows where many devices failed the same way at once.
    pub windows: Vec<IncidentWindow>,
}

/// One time bucket.
#[derive(Debug, Clone, Serialize)]
pub struct TimelineBucket {
    /// Bucket start.
    pub start: String,
    /// Bucket start, Unix ms.
    pub start_ms: i64,
    /// Devices with a canary disconnect (token renewals excluded).
    pub disconnected_devices: u64,
    /// Devices with a failed check.
    pub failed_devices: u64,
    /// Checks (reports with endpoint results) started in the bucket.
    pub checks: u64,
    /// Of them, checks with a failed phase.
    pub failed_checks: u64,
    /// Devices per signature (`disconnect:<cause>`, `check:<class>`; token renewals
    /// excluded), by signature.
    #[serde(skip)]
    pub by_signature: Vec<(String, u64)>,
}

/// A flagged window.
#[derive(Debug, Clone, Serialize)]
pub struct IncidentWindow {
    /// Start.
    pub from: String,
    /// End (exclusive).
    pub to: String,
    /// `hub` (IoT Hub cause 3: many devices on different networks at once),
    /// `network` (cause 2: confined to one network or site) or `unclear`.
    pub likely_cause: String,
    /// The IoT Hub 404104 cause family (2 or 3), when one applies.
    pub iothub_cause: Option<u8>,
    /// What the devices had in common: `disconnect:<cause>` or `check:<class>`.
    pub signatures: Vec<String>,
    /// Distinct devices.
    pub devices: u64,
    /// Share of all devices seen.
    pub device_share: f64,
    /// Devices by network, most first.
    pub networks: Vec<LabelCount>,
    /// Devices by site, most first.
    pub sites: Vec<LabelCount>,
    /// Up to 10 device names.
    pub example_devices: Vec<String>,
    /// One sentence for a person.
    pub summary: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Any i64 formats (the formatter itself refuses years after 9999).
    #[test]
    fn every_time_formats() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(-1), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(i64::MIN), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(MAX_RFC3339_MS), "9999-12-31T23:59:59.999Z");
        assert_eq!(rfc3339_ms(MAX_RFC3339_MS + 1), "9999-12-31T23:59:59.999Z");
        assert_eq!(rfc3339_ms(i64::MAX), "9999-12-31T23:59:59.999Z");
        assert_eq!(rfc3339_ms(1_795_651_200_000), "2026-11-26T00:00:00.000Z");
    }
}

//! The 404104 guidance applied to the hub's Connections logs, per device and per
//! disconnect, and the document it makes (`hubprobe.explain/1`).
//!
//! Memory: a device costs its name and 24 bytes per connect or disconnect record
//! (strings are interned), whatever the size of the input records.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::Serialize;

use crate::fleet::incident::IncidentAcc;
use crate::fleet::record::{parse_time_ms, DisconnectObs};
use crate::fleet::shared::{IncidentContext, Interner};
use crate::fleet::summary::rfc3339_ms;
use crate::fleet::FleetOptions;
use crate::model::DisconnectCause;

use super::join::{self, DeviceSide, MatchQuality};
use super::reader::{BadRecord, HubRecord, Operation, ReadStats};
use super::{group, human_s, ExplainOptions, SCHEMA_ID};

const NONE: u32 = u32::MAX;
const OP_CONNECT: u8 = 0;
const OP_REFUSED: u8 = 1;
const OP_DISCONNECT: u8 = 2;

#[derive(Debug, Clone, Copy)]
struct Ev {
    t: i64,
    code: u32,
    ip: u32,
    proto: u32,
    op: u8,
}

#[derive(Debug, Default)]
struct Dev {
    events: Vec<Ev>,
    sdk: u32,
}

/// Collects the records.
#[derive(Debug, Default)]
pub struct Accumulator {
    index: HashMap<String, u32>,
    names: Vec<String>,
    devs: Vec<Dev>,
    ips: Interner,
    protos: Interner,
    sdks: Interner,
    errors_5xx: Vec<i64>,
    span: Option<(i64, i64)>,
}

/// SAS token defaults of the Azure IoT device SDKs: (name, token lifetime s, share
/// of the lifetime after which the SDK renews; on MQTT a renewal is a reconnect).
pub const SDK_TOKEN_DEFAULTS: [(&str, f64, f64); 4] = [
    ("Azure IoT C SDK: 1 h tokens renewed at 80 %", 3600.0, 0.80),
    (
        "Azure IoT .NET and Java SDKs: 1 h tokens renewed at 85 %",
        3600.0,
        0.85,
    ),
    (
        "Azure IoT Python SDK: 1 h tokens renewed 2 min before expiry",
        3600.0,
        58.0 / 60.0,
    ),
    (
        "Azure IoT Node.js SDK: 1 h tokens renewed 15 min before expiry",
        3600.0,
        0.75,
    ),
];

/// The grace the hub gives an expired token before it closes the connection, as
/// the guidance's example of 1 h tokens and a disconnect every 65 minutes shows.
pub const EXPIRY_GRACE_S: f64 = 300.0;

/// SDK versions this build knows to be old: (what the `sdkVersion` contains,
/// first version not old, name). Older than about two years at this release.
pub const OLD_SDKS: [(&str, (u32, u32, u32), &str); 5] = [
    ("iothubclient/", (1, 9, 0), "Azure IoT C SDK"),
    ("-py/", (2, 12, 0), "Azure IoT Python SDK"),
    ("iot-device-client/", (2, 0, 0), "Azure IoT Java SDK"),
    (
        "Microsoft.Azure.Devices.Client/",
        (1, 40, 0),
        "Azure IoT .NET SDK",
    ),
    ("azure-iot-device/", (1, 18, 0), "Azure IoT Node.js SDK"),
];

/// `Some((sdk name, first current version))` when `sdk_version` is known to be old.
pub fn old_sdk(sdk_version: &str) -> Option<(&'static str, String)> {
    for (key, min, name) in OLD_SDKS {
        let Some(i) = sdk_version.find(key) else {
            continue;
        };
        let rest = &sdk_version[i + key.len()..];
        let v: String = rest
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .collect();
        let mut parts = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
        let ver = (
            parts.next().unwrap_or(0),
            parts.next().unwrap_or(0),
            parts.next().unwrap_or(0),
        );
        if v.is_empty() {
            return None;
        }
        if ver < min {
            return Some((name, format!("{}.{}.{}", min.0, min.1, min.2)));
        }
        return None;
    }
    None
}

impl Accumulator {
    /// Adds one record.
    pub fn add(&mut self, r: &HubRecord) {
        let key = match &r.module_id {
            Some(m) => format!("{}/{}", r.device_id, m),
            None => r.device_id.clone(),
        };
        let n = self.names.len() as u32;
        let i = *self.index.entry(key.clone()).or_insert(n);
        if i == n {
            self.names.push(key);
            self.devs.push(Dev {
                events: Vec::new(),
                sdk: NONE,
            });
        }
        let code = r.code();
        if (500_000..600_000).contains(&code) {
            self.errors_5xx.push(r.time_ms);
        }
        let op = match (r.operation, code) {
            (Operation::Disconnect, _) => OP_DISCONNECT,
            (Operation::Connect, 0) => OP_CONNECT,
            (Operation::Connect, _) => OP_REFUSED,
        };
        let ip = r
            .masked_ip
            .as_deref()
            .map(|s| self.ips.id(s))
            .unwrap_or(NONE);
        let proto = r
            .protocol
            .as_deref()
            .map(|s| self.protos.id(s))
            .unwrap_or(NONE);
        let d = &mut self.devs[i as usize];
        if let Some(s) = r.sdk_version.as_deref() {
            d.sdk = self.sdks.id(s);
        }
        d.events.push(Ev {
            t: r.time_ms,
            code,
            ip,
            proto,
            op,
        });
        self.span = Some(match self.span {
            None => (r.time_ms, r.time_ms),
            Some((a, b)) => (a.min(r.time_ms), b.max(r.time_ms)),
        });
    }
}

/// The explanation document.
#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    /// Always [`SCHEMA_ID`].
    pub schema: String,
    /// What was read.
    pub input: InputSection,
    /// First and last record.
    pub span: Option<Span>,
    /// The thresholds used.
    pub options: OptionsSection,
    /// The fleet totals.
    pub totals: Totals,
    /// Windows where many devices disconnected at once.
    pub windows: Vec<Window>,
    /// Per device, most disconnects first.
    pub devices: Vec<DeviceExplanation>,
    /// Per disconnect, device by device (in the order of `devices`), each device's
    /// in time order; made as they are written.
    pub disconnects: Attributions,
    /// Connect attempts the hub refused (not followed by a quick reconnect), in the
    /// same order.
    pub refused_connects: Attributions,
    /// The join with the devices' reports (`--reports`).
    pub join: Option<JoinSection>,
}

/// What was read.
#[derive(Debug, Clone, Serialize)]
pub struct InputSection {
    /// Files read.
    pub files: u64,
    /// Connections records used.
    pub records: u64,
    /// Records of other categories or operations.
    pub foreign: u64,
    /// Records that could not be read.
    pub bad: u64,
    /// The first of them, with file and line.
    pub bad_records: Vec<BadRecord>,
    /// Files under directories that were not read.
    pub skipped_files: Vec<String>,
}

/// A time span.
#[derive(Debug, Clone, Serialize)]
pub struct Span {
    /// Start, RFC 3339.
    pub from: String,
    /// End, RFC 3339.
    pub to: String,
}

/// Thresholds.
#[derive(Debug, Clone, Serialize)]
pub struct OptionsSection {
    /// Window bucket, s.
    pub bucket_s: u64,
    /// Devices in one bucket that make a window.
    pub min_devices: u64,
    /// Masked IP prefixes that make a window hub-side.
    pub min_prefixes: u64,
    /// Clock tolerance of the join, s.
    pub tolerance_s: f64,
}

/// Fleet totals.
#[derive(Debug, Clone, Serialize)]
pub struct Totals {
    /// Devices in the log.
    pub devices: u64,
    /// Disconnects.
    pub disconnects: u64,
    /// Refused connects listed.
    pub refused_connects: u64,
    /// Disconnects by IoT Hub 404104 cause: `1`, `2`, `3`, `none`.
    pub by_cause: BTreeMap<String, u64>,
    /// Disconnects and refused connects by class.
    pub by_class: BTreeMap<String, u64>,
    /// Devices by dominant class.
    pub devices_by_class: BTreeMap<String, u64>,
    /// One sentence.
    pub summary: String,
}

/// A window of many devices disconnecting at once.
#[derive(Debug, Clone, Serialize)]
pub struct Window {
    /// Start.
    pub from: String,
    /// End (exclusive).
    pub to: String,
    /// Devices that disconnected in it.
    pub devices: u64,
    /// Distinct masked IP prefixes among them.
    pub prefixes: u64,
    /// The prefix with the most of them and its count.
    pub top_prefix: Option<(String, u64)>,
    /// 500xxx records from a bucket before to a bucket after.
    pub errors_500xxx: u64,
    /// `hub` (cause 3), `hub_without_500xxx`, `network` (one prefix) or `unclear`.
    pub likely_cause: String,
    /// 3 for a hub transient, 2 for a network, else null.
    pub iothub_cause: Option<u8>,
    /// One sentence.
    pub summary: String,
}

/// A steady period between disconnects.
#[derive(Debug, Clone, Serialize)]
pub struct Period {
    /// The median session lifetime (connect to disconnect), s.
    pub period_s: f64,
    /// The largest deviation of a fitting session from it, s.
    pub spread_s: f64,
    /// Sessions measured (a disconnect with the connect that began its session).
    pub intervals: u64,
    /// Of them, lasting the period within its tolerance.
    pub fitting: u64,
    /// `renewal` (the device reconnects to renew) or `expiry` (401003 seen: the
    /// token expired and the hub closed the connection).
    pub kind: String,
    /// The token lifetime it implies, s.
    pub token_lifetime_s: f64,
    /// The SDK default it matches, when one does.
    pub sdk_default: Option<String>,
}

/// One device.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceExplanation {
    /// `properties.deviceId`.
    pub device_id: String,
    /// `properties.moduleId`.
    pub module_id: Option<String>,
    /// The class of most of its disconnects (and refused connects).
    pub dominant_class: String,
    /// The IoT Hub 404104 cause of the dominant class (1, 2, 3) or null.
    pub iothub_cause: Option<u8>,
    /// Disconnects.
    pub disconnects: u64,
    /// Successful connects.
    pub connects: u64,
    /// Refused connects (all, quick reconnects included).
    pub refused_connects: u64,
    /// Attributions by class.
    pub classes: BTreeMap<String, u64>,
    /// Protocols seen.
    pub protocols: Vec<String>,
    /// `sdkVersion` (the last seen).
    pub sdk_version: Option<String>,
    /// Whether that version is known to be old.
    pub old_sdk: bool,
    /// Distinct masked IPs.
    pub masked_ips: u64,
    /// A steady period (cause 1).
    pub period: Option<Period>,
    /// The device did not connect again after its last disconnect.
    pub never_reconnected: bool,
    /// The device clock's offset from the hub's, s (with `--reports`).
    pub clock_offset_s: Option<f64>,
    /// One sentence.
    pub summary: String,
    /// The numbers behind it.
    pub evidence: Vec<String>,
    /// What to do, from the guidance.
    pub fix: String,
}

/// The device's own record of a disconnect.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceRecord {
    /// The record's id.
    pub id: String,
    /// When the device saw it (its clock).
    pub at: String,
    /// Device − hub, after the device's clock offset is taken out, s.
    pub residual_s: f64,
    /// How well they matched.
    pub quality: MatchQuality,
    /// The canary's cause.
    pub cause: String,
    /// The precise class (`idle_timeout`, `outage`, `token_renewal`, `tls_alert`,
    /// `session_takeover`, `network`).
    pub class: String,
    /// One sentence.
    pub summary: String,
    /// The numbers behind it.
    pub evidence: Vec<String>,
    /// What to do.
    pub fix: String,
}

/// What one disconnect (or refused connect) is attributed to.
#[derive(Debug, Clone, Serialize)]
pub struct Attribution {
    /// Device id.
    pub device_id: String,
    /// Module id.
    pub module_id: Option<String>,
    /// When the hub logged it.
    pub time: String,
    /// Unix ms of `time`.
    pub time_ms: i64,
    /// `resultType` (null for a clean disconnect).
    pub result_type: Option<String>,
    /// The class: `token_renewal`, `token_expired`, `hub_transient`, `network`,
    /// `roaming`, `never_reconnected`, `device_closed`, `credentials`,
    /// `connect_failed`.
    pub class: String,
    /// 1, 2, 3 or null.
    pub iothub_cause: Option<u8>,
    /// Seconds until the device was connected again.
    pub reconnect_s: Option<f64>,
    /// Masked IP before.
    pub masked_ip_before: Option<String>,
    /// Masked IP after.
    pub masked_ip_after: Option<String>,
    /// Protocol.
    pub protocol: Option<String>,
    /// The numbers behind it.
    pub evidence: Vec<String>,
    /// What to do, from the guidance.
    pub fix: Cow<'static, str>,
    /// The device's own record of it (with `--reports`).
    pub device_record: Option<DeviceRecord>,
}

/// A canary record the hub did not log.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceOnly {
    /// Device id.
    pub device_id: String,
    /// Record id.
    pub id: String,
    /// When (device clock).
    pub at: String,
    /// The cause.
    pub cause: String,
}

/// A hub disconnect of a reporting device that the device did not record.
#[derive(Debug, Clone, Serialize)]
pub struct HubOnly {
    /// Device id.
    pub device_id: String,
    /// When.
    pub time: String,
    /// Its class.
    pub class: String,
}

/// The join.
#[derive(Debug, Clone, Serialize)]
pub struct JoinSection {
    /// Reports read.
    pub reports: u64,
    /// Lines or messages that were not reports.
    pub unused: u64,
    /// Devices with canary records that are also in the hub log.
    pub devices_joined: u64,
    /// Hub disconnects matched to a device record.
    pub matched: u64,
    /// By quality.
    pub by_quality: BTreeMap<String, u64>,
    /// Hub disconnects of those devices that the device never recorded.
    pub hub_only: Vec<HubOnly>,
    /// Device records, within the log's span, that the hub never logged.
    pub device_only: Vec<DeviceOnly>,
}

const FIX_TOKEN: &str = "Expected with SAS tokens (cause 1): on MQTT a token renewal is a reconnect. Nothing to fix while the device reconnects at once; if 401003 shows, the device renewed too late: renew before expiry (the SDK does it; keep the device clock synced by NTP).";
const FIX_HUB: &str = "An IoT Hub transient (cause 3): nothing to change on the devices besides retrying with exponential back-off; check Azure Service Health and the hub's Resource Health, and open a support case if it repeats.";
const FIX_NETWORK: &str = "Network (cause 2): keep the connection alive with a keep-alive below the network's idle timeout, reconnect with back-off, and check the device's logs for the disconnect's cause (the hubprobe agent on the device names it).";
const FIX_ROAMING: &str = "The device changed networks (its masked IP changed): expected on moving or cellular devices; reconnect quickly with back-off, and prefer a stable uplink where the device does not move.";
const FIX_NEVER: &str = "The device never came back: check that it is powered and online, that its app retries connecting (with back-off) after a failure or crash, and its logs.";
const FIX_CLOSED: &str = "The device closed the connection itself (no error): expected on a restart or shutdown of its app; if unexpected, look at the app's logs.";
const FIX_CREDENTIALS: &str = "The hub refused the device's credentials (401003 IoTHubUnauthorized): check its SAS key, token or certificate, that the device is enabled in the hub, and the device's clock (a token from the future or the past is refused).";
const FIX_FAILED: &str =
    "The hub refused the connect: see the result type in the IoT Hub error reference.";
const FIX_OLD_SDK: &str = "Use the latest SDK";

fn class_cause(class: &str) -> Option<u8> {
    match class {
        "token_renewal" | "token_expired" => Some(1),
        "network" | "roaming" | "never_reconnected" => Some(2),
        "hub_transient" => Some(3),
        _ => None,
    }
}

fn class_fix(class: &str) -> &'static str {
    match class {
        "token_renewal" | "token_expired" => FIX_TOKEN,
        "hub_transient" => FIX_HUB,
        "roaming" => FIX_ROAMING,
        "never_reconnected" => FIX_NEVER,
        "device_closed" => FIX_CLOSED,
        "credentials" => FIX_CREDENTIALS,
        "connect_failed" => FIX_FAILED,
        _ => FIX_NETWORK,
    }
}

/// Tie-break order of classes for a device's dominant class.
const CLASS_ORDER: [&str; 9] = [
    "credentials",
    "token_expired",
    "token_renewal",
    "hub_transient",
    "never_reconnected",
    "roaming",
    "network",
    "connect_failed",
    "device_closed",
];

fn prefix(ip: &str) -> String {
    match ip.rfind(['.', ':']) {
        Some(i) => ip[..i].to_string(),
        None => ip.to_string(),
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Finds a steady period in the lifetimes of the sessions a device's disconnects
/// ended (seconds from the connect before, `None` when the log holds none). A token
/// renewal or expiry ends a session a fixed time after it began, whatever ended the
/// one before (a network drop restarts the token's clock): the lifetimes, not the
/// gaps between disconnects, are steady. Returns the period, spread, sessions
/// measured, sessions fitting and for each disconnect whether it fits.
fn periodic(lived: &[Option<f64>]) -> Option<(f64, f64, u64, u64, Vec<bool>)> {
    let iv: Vec<f64> = lived.iter().flatten().copied().collect();
    if iv.len() < 3 {
        return None;
    }
    let mut sorted = iv.clone();
    let p = median(&mut sorted);
    if p < 300.0 {
        return None;
    }
    let tol = (p * 0.05).max(30.0);
    let fits = |x: f64| (x - p).abs() <= tol;
    let fitting = iv.iter().filter(|x| fits(**x)).count();
    if fitting < 3 || (fitting as f64) < 0.6 * iv.len() as f64 {
        return None;
    }
    let spread = iv
        .iter()
        .filter(|x| fits(**x))
        .map(|x| (x - p).abs())
        .fold(0.0, f64::max);
    let marks = lived.iter().map(|l| l.is_some_and(fits)).collect();
    Some((p, spread, iv.len() as u64, fitting as u64, marks))
}

/// The token lifetime a period implies, and the SDK default it matches.
fn token_lifetime(p: f64, expiry: bool) -> (f64, Option<String>) {
    if expiry {
        let l = p - EXPIRY_GRACE_S;
        let m = ((l - 3600.0).abs() <= 0.05 * 3600.0).then(|| {
            "a 1 h token (the SDKs' default lifetime) not renewed in time: the hub closes the connection at expiry after a grace of about 5 min".to_string()
        });
        return (l, m);
    }
    let best = SDK_TOKEN_DEFAULTS
        .iter()
        .map(|(n, l, f)| (n, l, (p - l * f).abs() / (l * f)))
        .filter(|x| x.2 <= 0.03)
        .min_by(|a, b| a.2.total_cmp(&b.2));
    match best {
        Some((n, l, _)) => (*l, Some(n.to_string())),
        None => (p / 0.8, None),
    }
}

struct DevState<'a> {
    name: &'a str,
    dev: &'a Dev,
    period_marks: Vec<bool>,
}

impl Accumulator {
    /// Applies the rules.
    pub fn finish(
        mut self,
        stats: ReadStats,
        side: Option<&DeviceSide>,
        opts: &ExplainOptions,
    ) -> Explanation {
        for d in &mut self.devs {
            d.events.sort_by_key(|e| (e.t, e.op));
        }
        self.errors_5xx.sort_unstable();
        let (log_from, log_to) = self.span.unwrap_or((0, 0));
        let bucket_ms = (opts.bucket_s.clamp(1, crate::fleet::MAX_BUCKET_S) * 1000) as i64;
        let fleet_opts = FleetOptions {
            bucket_s: opts.bucket_s,
            incident_min_devices: opts.min_devices,
            incident_min_networks: opts.min_prefixes,
            ..FleetOptions::default()
        };

        // Pass 1: periods, 401003 with a quick reconnect.
        let mut states: Vec<DevState<'_>> = Vec::with_capacity(self.devs.len());
        let mut periods: Vec<Option<Period>> = Vec::with_capacity(self.devs.len());
        for (i, d) in self.devs.iter().enumerate() {
            let disc: Vec<usize> = (0..d.events.len())
                .filter(|&k| d.events[k].op == OP_DISCONNECT)
                .collect();
            // Each disconnect's session lifetime: since the last successful connect.
            let times: Vec<Option<f64>> = disc
                .iter()
                .map(|&k| {
                    let t = d.events[k].t;
                    d.events[..k]
                        .iter()
                        .rev()
                        .take_while(|x| x.op != OP_DISCONNECT)
                        .find(|x| x.op == OP_CONNECT)
                        .map(|c| (t - c.t) as f64 / 1000.0)
                })
                .collect();
            let mut marks = vec![false; d.events.len()];
            let mut period = None;
            if let Some((p, spread, n, fitting, m)) = periodic(&times) {
                let expiry = d.events.iter().any(|e| e.code == 401_003);
                let (life, sdk) = token_lifetime(p, expiry);
                for (j, &k) in disc.iter().enumerate() {
                    marks[k] = m[j];
                }
                period = Some(Period {
                    period_s: p,
                    spread_s: spread,
                    intervals: n,
                    fitting,
                    kind: if expiry { "expiry" } else { "renewal" }.into(),
                    token_lifetime_s: life,
                    sdk_default: sdk,
                });
            }
            periods.push(period);
            states.push(DevState {
                name: &self.names[i],
                dev: d,
                period_marks: marks,
            });
        }

        // Pass 2: windows over the disconnects that are not cause 1.
        let mut incidents = IncidentAcc::new(bucket_ms);
        let mut prefixes = Interner::default();
        let mut devices = Interner::default();
        for (i, s) in states.iter().enumerate() {
            devices.id(&format!("{i}:{}", s.name));
            for (k, e) in s.dev.events.iter().enumerate() {
                if e.op != OP_DISCONNECT || e.code == 0 || s.period_marks[k] {
                    continue;
                }
                let f = facts(s.dev, k);
                if f.saw_401003 {
                    continue;
                }
                let pfx = if f.ip_before == NONE {
                    "unknown".to_string()
                } else {
                    prefix(self.ips.name(f.ip_before))
                };
                let p = prefixes.id(&pfx);
                // The masked-IP prefix stands in for both the network and the site;
                // there is one group.
                incidents.add_disconnect(
                    i as u32,
                    (p, p, 0),
                    &DisconnectObs {
                        id_hash: None,
                        at_ms: e.t.max(0) as u64,
                        cause: DisconnectCause::ServerDisconnect,
                        reconnect_s: None,
                        failed_attempts: 0,
                    },
                );
            }
        }
        let ctx = IncidentContext {
            devices: &devices,
            labels: &prefixes,
            devices_total: self.devs.len() as u64,
            span_ms: self.span,
            opts: &fleet_opts,
        };
        let view = incidents.finish(&ctx);
        let mut windows = Vec::new();
        let mut win_ranges: Vec<(i64, i64, Option<u8>, String)> = Vec::new();
        for w in &view.windows {
            let from = parse_time_ms(&w.from).unwrap_or(0);
            let to = parse_time_ms(&w.to).unwrap_or(0);
            let lo = self.errors_5xx.partition_point(|t| *t < from - bucket_ms);
            let hi = self.errors_5xx.partition_point(|t| *t < to + bucket_ms);
            let errors = (hi - lo) as u64;
            let top = w.networks.first().map(|l| (l.value.clone(), l.devices));
            let (likely, cause, summary) = match w.iothub_cause {
                Some(3) if errors > 0 => (
                    "hub",
                    Some(3),
                    format!(
                        "{} devices on {} masked IP prefixes disconnected at once between {} and {}, with {} 500xxx errors around: an IoT Hub transient (404104 cause 3)",
                        w.devices, w.networks.len(), w.from, w.to, errors
                    ),
                ),
                Some(3) => (
                    "hub_without_500xxx",
                    None,
                    format!(
                        "{} devices on {} masked IP prefixes disconnected at once between {} and {}, but without 500xxx errors: likely the hub, not confirmed by its errors",
                        w.devices, w.networks.len(), w.from, w.to
                    ),
                ),
                Some(2) => (
                    "network",
                    Some(2),
                    format!(
                        "{} devices disconnected at once between {} and {}, {} of them behind {}: a network outage there (cause 2), not the hub",
                        w.devices,
                        w.from,
                        w.to,
                        top.as_ref().map(|t| t.1).unwrap_or(0),
                        top.as_ref().map(|t| t.0.as_str()).unwrap_or("?")
                    ),
                ),
                _ => (
                    "unclear",
                    None,
                    format!(
                        "{} devices on {} masked IP prefixes disconnected at once between {} and {}: too few prefixes to tell the hub from the network",
                        w.devices, w.networks.len(), w.from, w.to
                    ),
                ),
            };
            win_ranges.push((from, to, cause, summary.clone()));
            windows.push(Window {
                from: w.from.clone(),
                to: w.to.clone(),
                devices: w.devices,
                prefixes: w.networks.len() as u64,
                top_prefix: top,
                errors_500xxx: errors,
                likely_cause: likely.into(),
                iothub_cause: cause,
                summary,
            });
        }
        // The session marks are kept; the rest of a device's state is made again.
        let marks: Vec<Vec<bool>> = states.into_iter().map(|s| s.period_marks).collect();
        let mut src = Attributor {
            acc: self,
            marks,
            periods,
            win_ranges,
            log_to,
            quick_reconnect_ms: opts.quick_reconnect_ms,
            never_after_ms: opts.never_after_ms,
            records: HashMap::new(),
            order: Vec::new(),
        };

        // Pass 3: the devices, from their attributions (made, counted and dropped:
        // they are made again, lazily, as the document is written).
        let mut tally = Tally::default();
        let mut out_devices: Vec<(DeviceExplanation, u32)> = Vec::new();
        for i in 0..src.acc.devs.len() {
            let d = &src.acc.devs[i];
            let (device_id, module_id) = split_name(&src.acc.names[i]);
            let sdk = (d.sdk != NONE).then(|| src.acc.sdks.name(d.sdk).to_string());
            let old = sdk.as_deref().and_then(old_sdk);
            let (mine, mine_refused) = src.device(i);
            tally.add(&mine, &mine_refused);
            // The device.
            let mut classes: BTreeMap<String, u64> = BTreeMap::new();
            for a in mine.iter().chain(&mine_refused) {
                *classes.entry(a.class.clone()).or_default() += 1;
            }
            let dominant = CLASS_ORDER
                .iter()
                .copied()
                .max_by_key(|c| {
                    (
                        classes.get(*c).copied().unwrap_or(0),
                        std::cmp::Reverse(CLASS_ORDER.iter().position(|x| x == c)),
                    )
                })
                .filter(|c| classes.contains_key(*c))
                .unwrap_or("stable");
            let mut protocols: Vec<String> = d
                .events
                .iter()
                .filter(|e| e.proto != NONE)
                .map(|e| src.acc.protos.name(e.proto).to_string())
                .collect();
            protocols.sort();
            protocols.dedup();
            let mut ips: Vec<u32> = d
                .events
                .iter()
                .filter(|e| e.ip != NONE)
                .map(|e| e.ip)
                .collect();
            ips.sort_unstable();
            ips.dedup();
            let never = mine.last().is_some_and(|a| a.class == "never_reconnected");
            let n_disc = mine.len() as u64;
            let mut evidence = Vec::new();
            let period = src.periods[i].clone();
            if let Some(p) = &period {
                evidence.push(format!(
                    "{} of {} sessions ended {} (± {}) after they began (spread ± {})",
                    p.fitting,
                    p.intervals,
                    human_s(p.period_s),
                    human_s((p.period_s * 0.05).max(30.0)),
                    human_s(p.spread_s)
                ));
                evidence.push(format!(
                    "implied token lifetime {}{}",
                    human_s(p.token_lifetime_s),
                    p.sdk_default
                        .as_ref()
                        .map(|s| format!(": matches {s}"))
                        .unwrap_or_else(|| ": matches no SDK default this build knows".into())
                ));
            }
            let rc: Vec<f64> = mine.iter().filter_map(|a| a.reconnect_s).collect();
            if !rc.is_empty() {
                let mut rc2 = rc.clone();
                evidence.push(format!(
                    "median reconnect delay {}",
                    human_s(median(&mut rc2))
                ));
            }
            if ips.len() > 1 {
                evidence.push(format!("{} distinct masked IPs", ips.len()));
            }
            if let (Some((name, min)), Some(v)) = (&old, &sdk) {
                evidence.push(format!(
                    "sdkVersion {v} is an old {name} (older than {min})"
                ));
            }
            let cause = class_cause(dominant);
            let summary = device_summary(dominant, n_disc, period.as_ref(), &classes);
            let mut fix = if dominant == "stable" {
                "Nothing to fix.".to_string()
            } else {
                class_fix(dominant).to_string()
            };
            if let (Some((_, min)), Some(v)) = (&old, &sdk) {
                fix.push_str(&format!(" {FIX_OLD_SDK}: {v} is older than {min}."));
            }
            out_devices.push((
                DeviceExplanation {
                    device_id,
                    module_id,
                    dominant_class: dominant.into(),
                    iothub_cause: cause,
                    disconnects: n_disc,
                    connects: d.events.iter().filter(|e| e.op == OP_CONNECT).count() as u64,
                    refused_connects: d.events.iter().filter(|e| e.op == OP_REFUSED).count() as u64,
                    classes,
                    protocols,
                    sdk_version: sdk,
                    old_sdk: old.is_some(),
                    masked_ips: ips.len() as u64,
                    period,
                    never_reconnected: never,
                    clock_offset_s: None,
                    summary,
                    evidence,
                    fix,
                },
                i as u32,
            ));
        }

        // The join.
        let mut updates: Vec<((u32, u32), DeviceRecord)> = Vec::new();
        let join = side.map(|side| {
            let mut js = JoinSection {
                reports: side.reports,
                unused: side.unused,
                devices_joined: 0,
                matched: 0,
                by_quality: BTreeMap::new(),
                hub_only: Vec::new(),
                device_only: Vec::new(),
            };
            let mut offsets: HashMap<String, f64> = HashMap::new();
            let mut names: Vec<&String> = side.devices.keys().collect();
            names.sort();
            for name in names {
                let evs = &side.devices[name];
                let Some(&di) = src.acc.index.get(name.as_str()) else {
                    continue;
                };
                let mine = src.device(di as usize).0;
                js.devices_joined += 1;
                let hub_t: Vec<i64> = mine.iter().map(|a| a.time_ms).collect();
                let off = join::clock_offset_ms(&hub_t, evs, opts.tolerance_ms);
                offsets.insert(name.clone(), off as f64 / 1000.0);
                let mut used = vec![false; evs.len()];
                for (k, a) in mine.iter().enumerate() {
                    let t = a.time_ms;
                    let best = evs
                        .iter()
                        .enumerate()
                        .filter(|(j, _)| !used[*j])
                        .map(|(j, e)| (j, e.event.at_unix_ms as i64 - off - t))
                        .min_by_key(|(_, r)| r.abs());
                    match best.and_then(|(j, r)| {
                        MatchQuality::of(r, opts.tolerance_ms).map(|q| (j, r, q))
                    }) {
                        Some((j, r, q)) => {
                            used[j] = true;
                            let e = &evs[j];
                            let (class, summary, evidence, fix) = join::precise(e);
                            *js.by_quality
                                .entry(format!("{q:?}").to_lowercase())
                                .or_default() += 1;
                            js.matched += 1;
                            updates.push((
                                (di, k as u32),
                                DeviceRecord {
                                    id: e.event.id.clone(),
                                    at: e.event.at.clone(),
                                    residual_s: r as f64 / 1000.0,
                                    quality: q,
                                    cause: e.event.cause.as_str().into(),
                                    class: class.into(),
                                    summary,
                                    evidence,
                                    fix,
                                },
                            ));
                        }
                        None => js.hub_only.push(HubOnly {
                            device_id: name.clone(),
                            time: a.time.clone(),
                            class: a.class.clone(),
                        }),
                    }
                }
                for (j, e) in evs.iter().enumerate() {
                    let t = e.event.at_unix_ms as i64 - off;
                    if !used[j]
                        && t >= log_from - opts.tolerance_ms
                        && t <= log_to + opts.tolerance_ms
                    {
                        js.device_only.push(DeviceOnly {
                            device_id: name.clone(),
                            id: e.event.id.clone(),
                            at: e.event.at.clone(),
                            cause: e.event.cause.as_str().into(),
                        });
                    }
                }
            }
            for (dv, _) in &mut out_devices {
                let key = match &dv.module_id {
                    Some(m) => format!("{}/{m}", dv.device_id),
                    None => dv.device_id.clone(),
                };
                if let Some(o) = offsets.get(&key) {
                    dv.clock_offset_s = Some(*o);
                }
            }
            js
        });
        src.records.extend(updates);

        out_devices.sort_by(|a, b| {
            (b.0.disconnects + b.0.refused_connects)
                .cmp(&(a.0.disconnects + a.0.refused_connects))
                .then(a.0.device_id.cmp(&b.0.device_id))
                .then(a.0.module_id.cmp(&b.0.module_id))
        });
        src.order = out_devices.iter().map(|x| x.1).collect();
        let out_devices: Vec<DeviceExplanation> = out_devices.into_iter().map(|x| x.0).collect();
        let totals = totals(&out_devices, tally);
        let span = src.acc.span;
        let src = Arc::new(src);
        let disconnects = Attributions {
            src: Arc::clone(&src),
            refused: false,
        };
        let refused = Attributions { src, refused: true };
        let min_devices = view.min_devices;
        Explanation {
            schema: SCHEMA_ID.into(),
            input: InputSection {
                files: stats.files,
                records: stats.records,
                foreign: stats.foreign,
                bad: stats.bad,
                bad_records: stats.bad_records,
                skipped_files: stats.skipped_files,
            },
            span: span.map(|(a, b)| Span {
                from: rfc3339_ms(a),
                to: rfc3339_ms(b),
            }),
            options: OptionsSection {
                bucket_s: opts.bucket_s,
                min_devices,
                min_prefixes: opts.min_prefixes,
                tolerance_s: opts.tolerance_ms as f64 / 1000.0,
            },
            totals,
            windows,
            devices: out_devices,
            disconnects,
            refused_connects: refused,
            join,
        }
    }
}

/// Per disconnect facts.
struct Facts {
    next_connect: Option<usize>,
    saw_401003: bool,
    ip_before: u32,
}

/// The facts of the disconnect at `k`.
fn facts(d: &Dev, k: usize) -> Facts {
    let e = d.events[k];
    let mut saw = e.code == 401_003;
    let mut next = None;
    for (j, x) in d.events.iter().enumerate().skip(k + 1) {
        match x.op {
            OP_CONNECT => {
                next = Some(j);
                break;
            }
            OP_REFUSED if x.code == 401_003 => saw = true,
            OP_DISCONNECT => break,
            _ => {}
        }
    }
    let ip_before = if e.ip != NONE {
        e.ip
    } else {
        d.events[..k]
            .iter()
            .rev()
            .find(|x| x.op == OP_CONNECT && x.ip != NONE)
            .map(|x| x.ip)
            .unwrap_or(NONE)
    };
    Facts {
        next_connect: next,
        saw_401003: saw,
        ip_before,
    }
}

/// A device id and module id from a device key (`device/module`).
fn split_name(name: &str) -> (String, Option<String>) {
    match name.split_once('/') {
        Some((d, m)) => (d.to_string(), Some(m.to_string())),
        None => (name.to_string(), None),
    }
}

/// The fleet's counts of attributions, taken device by device.
#[derive(Debug, Default)]
struct Tally {
    by_cause: BTreeMap<String, u64>,
    by_class: BTreeMap<String, u64>,
    disconnects: u64,
    refused: u64,
    credentials: u64,
}

impl Tally {
    fn add(&mut self, disc: &[Attribution], refused: &[Attribution]) {
        for a in disc {
            let k = a
                .iothub_cause
                .map(|c| c.to_string())
                .unwrap_or("none".into());
            *self.by_cause.entry(k).or_default() += 1;
            *self.by_class.entry(a.class.clone()).or_default() += 1;
        }
        for a in refused {
            *self.by_class.entry(a.class.clone()).or_default() += 1;
            if a.class == "credentials" {
                self.credentials += 1;
            }
        }
        self.disconnects += disc.len() as u64;
        self.refused += refused.len() as u64;
    }
}

/// What the attributions are made from: the compact events (24 bytes each), the
/// rules' verdicts per device, and the device records of the join. Attributions
/// are made device by device when they are needed, so the document's memory does
/// not grow with the disconnects.
#[derive(Debug)]
pub struct Attributor {
    acc: Accumulator,
    marks: Vec<Vec<bool>>,
    periods: Vec<Option<Period>>,
    win_ranges: Vec<(i64, i64, Option<u8>, String)>,
    log_to: i64,
    quick_reconnect_ms: i64,
    never_after_ms: i64,
    /// (device, its n-th disconnect) → the device's own record of it.
    records: HashMap<(u32, u32), DeviceRecord>,
    /// The devices in the document's order.
    order: Vec<u32>,
}

impl Attributor {
    /// The disconnects and refused connects of device `i`, in time order.
    fn device(&self, i: usize) -> (Vec<Attribution>, Vec<Attribution>) {
        let d = &self.acc.devs[i];
        let (device_id, module_id) = split_name(&self.acc.names[i]);
        let sdk = (d.sdk != NONE).then(|| self.acc.sdks.name(d.sdk).to_string());
        let old = sdk.as_deref().and_then(old_sdk);
        let ip = |i: u32| (i != NONE).then(|| self.acc.ips.name(i).to_string());
        let proto = |i: u32| (i != NONE).then(|| self.acc.protos.name(i).to_string());
        let window_of = |t: i64| self.win_ranges.iter().find(|w| t >= w.0 && t < w.1);
        let mut disc: Vec<Attribution> = Vec::new();
        let mut refused: Vec<Attribution> = Vec::new();
        for (k, e) in d.events.iter().enumerate() {
            if e.op == OP_REFUSED {
                // Part of a token expiry when a connect follows quickly.
                let quick = d.events[k + 1..]
                    .iter()
                    .take_while(|x| x.op != OP_DISCONNECT)
                    .find(|x| x.op == OP_CONNECT)
                    .is_some_and(|x| x.t - e.t <= self.quick_reconnect_ms);
                if e.code == 401_003 && quick {
                    continue;
                }
                let class = if e.code == 401_003 {
                    "credentials"
                } else {
                    "connect_failed"
                };
                refused.push(Attribution {
                    device_id: device_id.clone(),
                    module_id: module_id.clone(),
                    time: rfc3339_ms(e.t),
                    time_ms: e.t,
                    result_type: Some(code_text(e.code)),
                    class: class.into(),
                    iothub_cause: None,
                    reconnect_s: None,
                    masked_ip_before: ip(e.ip),
                    masked_ip_after: None,
                    protocol: proto(e.proto),
                    evidence: vec![format!(
                        "connect refused with {} at {}",
                        code_text(e.code),
                        rfc3339_ms(e.t)
                    )],
                    fix: Cow::Borrowed(class_fix(class)),
                    device_record: None,
                });
                continue;
            }
            if e.op != OP_DISCONNECT {
                continue;
            }
            let f = facts(d, k);
            let next = f.next_connect.map(|j| d.events[j]);
            let reconnect_s = next.map(|n| (n.t - e.t) as f64 / 1000.0);
            let ip_after = next.map(|n| n.ip).unwrap_or(NONE);
            let mut evidence = Vec::new();
            let quick = reconnect_s.is_some_and(|r| r * 1000.0 <= self.quick_reconnect_ms as f64);
            let class: &str = if self.marks[i][k] {
                let p = self.periods[i].as_ref().expect("marks come with a period");
                evidence.push(format!(
                    "one of a steady series: a disconnect every {} (± {})",
                    human_s(p.period_s),
                    human_s(p.spread_s)
                ));
                if f.saw_401003 {
                    evidence.push("401003 IoTHubUnauthorized: the SAS token had expired".into());
                    "token_expired"
                } else {
                    "token_renewal"
                }
            } else if f.saw_401003 && quick {
                evidence.push(
                    "401003 IoTHubUnauthorized and a successful reconnect less than a minute later: the SAS token expired and was renewed".into(),
                );
                "token_expired"
            } else if let Some(w) = window_of(e.t).filter(|w| w.2 == Some(3) && e.code != 0) {
                evidence.push(w.3.clone());
                "hub_transient"
            } else if e.code == 0 {
                evidence.push("a clean disconnect: no error result".into());
                "device_closed"
            } else {
                if let Some(w) = window_of(e.t) {
                    evidence.push(w.3.clone());
                }
                if next.is_none() && self.log_to - e.t >= self.never_after_ms {
                    evidence.push(format!(
                        "never connected again: the log goes on for {} after it",
                        human_s((self.log_to - e.t) as f64 / 1000.0)
                    ));
                    "never_reconnected"
                } else if f.ip_before != NONE && ip_after != NONE && f.ip_before != ip_after {
                    evidence.push(format!(
                        "the masked IP changed from {} to {}: the device moved to another network (roaming)",
                        self.acc.ips.name(f.ip_before),
                        self.acc.ips.name(ip_after)
                    ));
                    "roaming"
                } else {
                    "network"
                }
            };
            let cause = class_cause(class);
            evidence.insert(
                0,
                format!(
                    "{} at {}",
                    if e.code == 0 {
                        "deviceDisconnect".to_string()
                    } else {
                        code_text(e.code)
                    },
                    rfc3339_ms(e.t)
                ),
            );
            match reconnect_s {
                Some(r) => evidence.push(format!("reconnected after {}", human_s(r))),
                None if class != "never_reconnected" => evidence.push(format!(
                    "not seen connecting again before the log ends ({} later)",
                    human_s((self.log_to - e.t) as f64 / 1000.0)
                )),
                None => {}
            }
            if let Some(p) = proto(e.proto).or_else(|| next.and_then(|n| proto(n.proto))) {
                evidence.push(format!("protocol {p}"));
            }
            let mut fix = Cow::Borrowed(class_fix(class));
            if let (Some((name, min)), Some(v), Some(2)) = (&old, &sdk, cause) {
                evidence.push(format!(
                    "sdkVersion {v} is an old {name} (older than {min})"
                ));
                fix = Cow::Owned(format!("{fix} {FIX_OLD_SDK}: {v} is older than {min}."));
            }
            disc.push(Attribution {
                device_id: device_id.clone(),
                module_id: module_id.clone(),
                time: rfc3339_ms(e.t),
                time_ms: e.t,
                result_type: (e.code != 0).then(|| code_text(e.code)),
                class: class.into(),
                iothub_cause: cause,
                reconnect_s,
                masked_ip_before: ip(f.ip_before),
                masked_ip_after: ip(ip_after),
                protocol: proto(e.proto).or_else(|| next.and_then(|n| proto(n.proto))),
                evidence,
                fix,
                device_record: None,
            });
        }
        for (n, a) in disc.iter_mut().enumerate() {
            if let Some(rec) = self.records.get(&(i as u32, n as u32)) {
                a.evidence.push(format!(
                    "the device recorded it ({} match, {:+.1} s): {}",
                    format!("{:?}", rec.quality).to_lowercase(),
                    rec.residual_s,
                    rec.summary
                ));
                a.fix = Cow::Owned(rec.fix.clone());
                a.device_record = Some(rec.clone());
            }
        }
        (disc, refused)
    }
}

/// The disconnects (or refused connects) of the document, made device by device
/// as they are read or written: devices in the document's order (most disconnects
/// first), each device's in time order.
#[derive(Debug, Clone)]
pub struct Attributions {
    src: Arc<Attributor>,
    refused: bool,
}

impl Attributions {
    /// The attributions, made one device at a time.
    pub fn iter(&self) -> impl Iterator<Item = Attribution> + '_ {
        self.src.order.iter().flat_map(move |&i| {
            let (d, r) = self.src.device(i as usize);
            if self.refused {
                r
            } else {
                d
            }
        })
    }
}

impl Serialize for Attributions {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

fn code_text(code: u32) -> String {
    if code == u32::MAX {
        "an unknown result".into()
    } else {
        code.to_string()
    }
}

fn device_summary(
    dominant: &str,
    n: u64,
    period: Option<&Period>,
    classes: &BTreeMap<String, u64>,
) -> String {
    let of = |c: &str| classes.get(c).copied().unwrap_or(0);
    match dominant {
        "token_renewal" | "token_expired" => {
            let p = period
                .map(|p| {
                    format!(
                        " every {} (± {}): a token lifetime of {}{}",
                        human_s(p.period_s),
                        human_s(p.spread_s),
                        human_s(p.token_lifetime_s),
                        p.sdk_default
                            .as_ref()
                            .map(|s| format!(", as {s}"))
                            .unwrap_or_default()
                    )
                })
                .unwrap_or_default();
            format!(
                "{} of {n} disconnects are SAS token {}{p} (cause 1)",
                of("token_renewal") + of("token_expired"),
                if dominant == "token_expired" {
                    "expiries"
                } else {
                    "renewals"
                }
            )
        }
        "hub_transient" => format!(
            "{} of {n} disconnects in a window when many devices dropped at once with 500xxx errors: an IoT Hub transient (cause 3)",
            of("hub_transient")
        ),
        "credentials" => format!(
            "{} connect attempts refused with 401003: the device's credentials (not a network problem)",
            of("credentials")
        ),
        "never_reconnected" => format!(
            "disconnected and never came back ({n} disconnects) (cause 2)"
        ),
        "roaming" => format!(
            "{} of {n} disconnects with a change of masked IP: the device roams between networks (cause 2)",
            of("roaming")
        ),
        "network" => format!("{} of {n} disconnects at random: the network (cause 2)", of("network")),
        "device_closed" => format!("{} of {n} disconnects closed by the device itself", of("device_closed")),
        "connect_failed" => format!("{} connect attempts refused", of("connect_failed")),
        _ => "no disconnects".into(),
    }
}

/// A share in whole percent; "< 1" for a share that is not zero but rounds to it.
fn pct(a: u64, b: u64) -> String {
    if b == 0 {
        return "0".into();
    }
    let p = ((a as f64 * 100.0) / b as f64).round() as u64;
    if p == 0 && a > 0 {
        "< 1".into()
    } else {
        p.to_string()
    }
}

fn totals(devs: &[DeviceExplanation], tally: Tally) -> Totals {
    let mut by_cause: BTreeMap<String, u64> = ["1", "2", "3", "none"]
        .iter()
        .map(|k| (k.to_string(), 0))
        .collect();
    for (k, v) in tally.by_cause {
        *by_cause.entry(k).or_default() += v;
    }
    let by_class = tally.by_class;
    let mut devices_by_class: BTreeMap<String, u64> = BTreeMap::new();
    for d in devs {
        *devices_by_class
            .entry(d.dominant_class.clone())
            .or_default() += 1;
    }
    let n = tally.disconnects;
    // What cause 1 devices have in common: the token lifetime and protocol most seen.
    let mut lifetimes: BTreeMap<(u64, String), u64> = BTreeMap::new();
    for d in devs.iter().filter(|d| d.iothub_cause == Some(1)) {
        if let Some(p) = &d.period {
            let l = ((p.token_lifetime_s / 60.0).round() as u64) * 60;
            *lifetimes
                .entry((l, d.protocols.first().cloned().unwrap_or_default()))
                .or_default() += 1;
        }
    }
    let c1_detail = lifetimes
        .iter()
        .max_by_key(|x| *x.1)
        .map(|((l, p), _)| {
            let proto = if p.is_empty() {
                String::new()
            } else {
                format!(" over {p}")
            };
            format!(" on devices with {} tokens{proto}", human_s(*l as f64))
        })
        .unwrap_or_default();
    let get = |k: &str| by_cause.get(k).copied().unwrap_or(0);
    let mut parts = Vec::new();
    if get("1") > 0 {
        parts.push(format!(
            "{} % cause 1 (SAS token){c1_detail}",
            pct(get("1"), n)
        ));
    }
    if get("2") > 0 {
        parts.push(format!("{} % cause 2 (network)", pct(get("2"), n)));
    }
    if get("3") > 0 {
        parts.push(format!("{} % cause 3 (hub transient)", pct(get("3"), n)));
    }
    if get("none") > 0 {
        parts.push(format!("{} % closed by the device", pct(get("none"), n)));
    }
    let mut summary = if n == 0 {
        "no disconnects".to_string()
    } else {
        format!("of {} disconnects: {}", group(n), parts.join(", "))
    };
    let cred = tally.credentials;
    if cred > 0 {
        summary.push_str(&format!(
            "; {} connect attempts refused with 401003 (credentials)",
            group(cred)
        ));
    }
    Totals {
        devices: devs.len() as u64,
        disconnects: n,
        refused_connects: tally.refused,
        by_cause,
        by_class,
        devices_by_class,
        summary,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_sdks_are_known() {
        assert!(old_sdk("iothubclient/1.2.8 (native; Linux; x86_64)").is_some());
        assert!(old_sdk("iothubclient/1.14.0 (native; Linux; x86_64)").is_none());
        assert!(old_sdk("azure-iot-device-iothub-py/2.1.0").is_some());
        assert!(old_sdk("something/0.1").is_none());
    }

    #[test]
    fn periods_match_sdk_defaults() {
        let (l, m) = token_lifetime(48.0 * 60.0, false);
        assert!((l - 3600.0).abs() < 1.0);
        assert!(m.unwrap().contains("C SDK"));
        let (l, m) = token_lifetime(65.0 * 60.0, true);
        assert!((l - 3600.0).abs() < 1.0);
        assert!(m.is_some());
    }

    #[test]
    fn steady_series_is_found_and_random_is_not() {
        let t: Vec<Option<f64>> = (0..10)
            .map(|i| Some(2880.0 + (i % 3) as f64 * 5.0))
            .collect();
        let (p, _, _, fitting, _) = periodic(&t).unwrap();
        assert!((p - 2885.0).abs() < 10.0);
        assert_eq!(fitting, 10);
        let r = [
            Some(400.0),
            Some(1600.0),
            Some(300.0),
            None,
            Some(2700.0),
            Some(4100.0),
        ];
        assert!(periodic(&r).is_none());
    }
}

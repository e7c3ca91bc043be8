//! The report: one versioned JSON document per run (`hubprobe.report/1`).
//! Changes within a major version are additive; the JSON Schema lives in
//! `docs/report.schema.json`.

use serde::{Deserialize, Serialize};

use super::canary::CanaryReport;
use super::class::FailureClass;
use super::finding::Finding;
use super::keepalive::KeepaliveReport;
use super::phase::{Phase, Status};
use super::result::PhaseResult;

/// The schema id of this report version.
pub const SCHEMA_ID: &str = "hubprobe.report/1";

/// The JSON Schema of the report, shipped with the binary (`hubprobe schema`).
pub const JSON_SCHEMA: &str = include_str!("../../docs/report.schema.json");

/// Overall and per-endpoint verdict, mapped to the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Everything worked.
    Ok,
    /// Something is degraded or will fail soon; the device can still connect.
    Warning,
    /// The device cannot connect the way it is set up.
    Critical,
    /// hubprobe could not tell (usage or internal error).
    Unknown,
}

impl Verdict {
    /// Upper-case name, as monitoring tools print it.
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Ok => "OK",
            Verdict::Warning => "WARNING",
            Verdict::Critical => "CRITICAL",
            Verdict::Unknown => "UNKNOWN",
        }
    }
}

/// A whole report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// Always [`SCHEMA_ID`].
    pub schema: String,
    /// Unique id of this run (fleet tooling drops repeats by it).
    pub id: String,
    /// What produced it: `check` or `tune`.
    pub kind: String,
    /// hubprobe version.
    pub hubprobe_version: String,
    /// Host name of the device.
    pub host: String,
    /// Start, RFC 3339 UTC.
    pub started_at: String,
    /// End, RFC 3339 UTC.
    pub finished_at: String,
    /// Wall time, milliseconds.
    pub duration_ms: f64,
    /// What was probed.
    pub target: Target,
    /// Overall verdict.
    pub verdict: Verdict,
    /// One entry per endpoint, in profile order.
    pub endpoints: Vec<EndpointReport>,
    /// What the results mean.
    pub findings: Vec<Finding>,
    /// The keep-alive tuner's measurements and recommendation (`kind: "tune"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keepalive: Option<KeepaliveReport>,
    /// The agent's canary MQTT session: disconnects and their diagnosis (agent only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanaryReport>,
    /// The clock verdict: every time source, the offset and what it breaks (checks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock: Option<super::clock::ClockReport>,
    /// The X.509 device certificate's validity by the device clock and true time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_certificate: Option<super::clock::DeviceCertHealth>,
    /// What the agent's traffic cost at the socket, per purpose (agent only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic: Option<super::traffic::TrafficReport>,
    /// Operator labels (site, firmware, network type …) for fleet grouping.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
    /// A DPS check's registration and the chained check of the assigned hub
    /// (`check --register` or `--assigned-hub`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioning: Option<ProvisioningReport>,
}

/// What was probed and how.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Target {
    /// The host connected to.
    pub host: String,
    /// The hub's host name when it differs (e.g. through a gateway).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hub_host: Option<String>,
    /// Profile name.
    pub profile: String,
    /// Device id, when an identity was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    /// Module id, for module identities.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module_id: Option<String>,
    /// How the device authenticates (`none`, `sas-key`, `sas-token`, `x509`, `password`).
    pub auth: String,
    /// DNS server asked, when not the system's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_server: Option<String>,
    /// Network interface bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// Local source address bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_ip: Option<String>,
    /// Per-phase timeout, milliseconds.
    pub timeout_ms: u64,
    /// Whole-run deadline, milliseconds.
    pub deadline_ms: u64,
    /// Trust store used for TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust: Option<serde_json::Value>,
    /// The SAS token the probe used or generated: when it expires (never the token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sas_token: Option<SasTokenInfo>,
    /// The proxy the run went through, or the one it bypassed (`NO_PROXY`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<ProxyInfo>,
}

/// What the report says of the proxy: which one and where the setting came from,
/// the password never (the URL is shown with `***` in its place).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyInfo {
    /// The proxy URL, its password redacted.
    pub url: String,
    /// `http`, `socks5` or `socks5h`.
    pub scheme: String,
    /// Where the setting came from: `--proxy`, `HTTPS_PROXY` (or the other variable
    /// read), `[proxy] url`.
    pub source: String,
    /// Whether credentials were configured (never the credentials).
    pub authenticated: bool,
    /// True when `NO_PROXY` matched the host and the run went direct.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub bypassed: bool,
    /// The `NO_PROXY` entry that matched, when bypassed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bypassed_by: Option<String>,
}

/// What the report may say of a SAS token: its scope and lifetime, never its value.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SasTokenInfo {
    /// Resource URI it is scoped to.
    pub resource: String,
    /// Expiry, RFC 3339 UTC.
    pub expires_at: String,
    /// Seconds from the check's start to expiry (negative: already expired).
    pub expires_in_s: i64,
    /// Lifetime when hubprobe generated it from a device key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_s: Option<u64>,
}

/// One endpoint's chain.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EndpointReport {
    /// Endpoint name from the profile (`mqtt-tls`).
    pub name: String,
    /// Protocol.
    pub protocol: Protocol,
    /// Transport.
    pub transport: Transport,
    /// Port.
    pub port: u16,
    /// Verdict of this endpoint: ok, or critical when a phase failed.
    pub verdict: Verdict,
    /// The phases in order.
    pub phases: Vec<PhaseResult>,
}

impl EndpointReport {
    /// The first failed phase, if any.
    pub fn failed_phase(&self) -> Option<&PhaseResult> {
        self.phases.iter().find(|p| p.status == Status::Failed)
    }
    /// The phase of this kind, if it is part of the chain.
    pub fn phase(&self, phase: Phase) -> Option<&PhaseResult> {
        self.phases.iter().find(|p| p.phase == phase)
    }
}

/// RFC 3339 UTC with milliseconds.
pub fn rfc3339(t: std::time::SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// RFC 3339 UTC of a Unix time, clamped to the years 1970–9999 that RFC 3339 can
/// express (a token may claim any expiry).
pub fn rfc3339_unix(secs: u64) -> String {
    const MAX: u64 = 253_402_300_799; // 9999-12-31T23:59:59Z
    humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs.min(MAX)),
    )
    .to_string()
}

/// A random id (UUID v4 form).
pub fn new_id() -> String {
    let mut b = [0u8; 16];
    if getrandom::fill(&mut b).is_err() {
        // No entropy source: fall back to time and pid, still unique enough per device.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        b[..16].copy_from_slice(&t.to_le_bytes());
        b[0] ^= std::process::id() as u8;
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// This machine's host name.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: buf is valid for buf.len() bytes; gethostname NUL-terminates on success.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// The application protocol spoken on an endpoint after the transport is up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    /// MQTT 3.1.1.
    Mqtt,
    /// AMQP 1.0 (protocol header exchange).
    Amqp,
    /// HTTP/1.1 over TLS or plain.
    Http,
}

/// How the bytes travel: plain TCP, TLS, WebSocket, or WebSocket over TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Transport {
    /// Plain TCP.
    Tcp,
    /// TLS over TCP.
    Tls,
    /// WebSocket over plain TCP.
    Ws,
    /// WebSocket over TLS.
    Wss,
}

impl Transport {
    /// Whether a TLS handshake is part of the chain.
    pub fn uses_tls(self) -> bool {
        matches!(self, Transport::Tls | Transport::Wss)
    }
    /// Whether a WebSocket upgrade is part of the chain.
    pub fn uses_websocket(self) -> bool {
        matches!(self, Transport::Ws | Transport::Wss)
    }
}

// ---- The provisioning section: The provisioning section of a report: what the Device Provisioning Service answered a registration (`check --register`), and the check of the hub it assigned (or the one given with `--assigned-hub`), chained into the same report: two targets, one verdict.
// (In this file because it nests a whole Report: the type is recursive.)

/// Where a registration ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RegistrationStatus {
    /// DPS assigned the device to a hub.
    Assigned,
    /// Still `assigning` when the run's deadline came.
    Assigning,
    /// DPS finished with `failed`.
    Failed,
    /// The enrollment is disabled.
    Disabled,
    /// DPS refused the request (an error status: 400, 401, 404, 412, 429, 5xx).
    Refused,
    /// The registration could not be carried out (no MQTT session to DPS, no answer,
    /// a malformed answer).
    Error,
    /// Not attempted (no `--register`; the hub check runs on `--assigned-hub`).
    NotAttempted,
}

/// The registration and the chained hub check.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProvisioningReport {
    /// The DPS id scope.
    pub id_scope: String,
    /// The registration id.
    pub registration_id: String,
    /// Whether the device key was derived from an enrollment group's key.
    #[serde(default)]
    pub enrollment_group: bool,
    /// The DPS endpoint the registration used (`mqtt-tls` ...), when it ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Where the registration ended.
    pub status: RegistrationStatus,
    /// The failure class, when it did not end assigned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<FailureClass>,
    /// What happened, in words (DPS's own error message quoted, bounded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The status of DPS's last answer (200, 202, 401 ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    /// DPS's error code (`401002`, `429001` ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<u64>,
    /// The operation id of the registration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation_id: Option<String>,
    /// The hub DPS assigned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assigned_hub: Option<String>,
    /// The device id on that hub.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    /// DPS's substatus (`initialAssignment`, `reprovisionedToNewHub` ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub substatus: Option<String>,
    /// The retry-after DPS gave last (seconds): with 429, when to try again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_s: Option<u64>,
    /// Operation-status polls sent after the 202.
    #[serde(default)]
    pub polls: u32,
    /// Wall time of the registration, milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<f64>,
    /// The check of the assigned hub with the same key or certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hub: Option<Box<Report>>,
}

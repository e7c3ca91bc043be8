//! The clock section of a report: every time source a check asked (SNTP, the
//! hub's HTTPS `Date`, a TLS validity error), the one verdict drawn from them and
//! what a wrong clock breaks; and the device identity's validity judged against
//! the device clock and the measured true time.

use serde::{Deserialize, Serialize};

/// How one SNTP query ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NtpStatus {
    /// A usable sample: offset and delay measured.
    Ok,
    /// No answer within the timeout (UDP 123 dropped, or the server is down).
    #[default]
    Timeout,
    /// ICMP port unreachable: nothing listens there, or a firewall rejects it.
    Refused,
    /// The local network cannot reach it (no route, bind failed).
    Unreachable,
    /// The name does not resolve.
    Unresolved,
    /// The server sent a Kiss-o'-Death (`kiss_code`): no time.
    KissOfDeath,
    /// The server's clock is unsynchronized (stratum 16, or leap indicator 3).
    Unsynchronized,
    /// The reply's origin timestamp is not this request's: spoofed or stale.
    WrongOrigin,
    /// Truncated, or the wrong mode or version.
    Malformed,
}

impl NtpStatus {
    /// The snake_case name used in the report.
    pub fn as_str(self) -> &'static str {
        match self {
            NtpStatus::Ok => "ok",
            NtpStatus::Timeout => "timeout",
            NtpStatus::Refused => "refused",
            NtpStatus::Unreachable => "unreachable",
            NtpStatus::Unresolved => "unresolved",
            NtpStatus::KissOfDeath => "kiss_of_death",
            NtpStatus::Unsynchronized => "unsynchronized",
            NtpStatus::WrongOrigin => "wrong_origin",
            NtpStatus::Malformed => "malformed",
        }
    }

    /// True when the network kept the probe from any answer (blocked or refused).
    pub fn is_blocked(self) -> bool {
        matches!(
            self,
            NtpStatus::Timeout
                | NtpStatus::Refused
                | NtpStatus::Unreachable
                | NtpStatus::Unresolved
        )
    }
}

/// One SNTP query.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NtpEvidence {
    /// The server as configured (`HOST[:PORT]`).
    pub server: String,
    /// The address that answered (or was asked last).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// How it ended.
    pub status: NtpStatus,
    /// True time minus device time, seconds (only when `status` is `ok`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset_s: Option<f64>,
    /// Round-trip delay, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_s: Option<f64>,
    /// Stratum of the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stratum: Option<u8>,
    /// Reference id: a clock name or kiss code (stratum 0/1), else an IPv4 address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference_id: Option<String>,
    /// Leap indicator (3 = unsynchronized).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leap: Option<u8>,
    /// NTP version of the reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u8>,
    /// Root delay of the server, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_delay_s: Option<f64>,
    /// Root dispersion of the server, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_dispersion_s: Option<f64>,
    /// The Kiss-o'-Death code (`RATE`, `DENY`, `RSTR` ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kiss_code: Option<String>,
    /// Why it is not a sample.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Time the query took, milliseconds.
    pub duration_ms: f64,
}

/// Where a clock reading came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClockSourceKind {
    /// An SNTP server.
    Ntp,
    /// The hub's HTTPS `Date` header.
    HttpsDate,
    /// A TLS certificate validity error (gives a bound, not a value).
    TlsValidity,
}

/// One reading of the device clock's offset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClockSource {
    /// Which kind of source.
    pub kind: ClockSourceKind,
    /// The server or endpoint it came from.
    pub origin: String,
    /// True time minus device time, seconds (for a TLS bound: the least offset
    /// that explains the error).
    pub offset_s: f64,
    /// ± seconds around `offset_s` (for a TLS bound: absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uncertainty_s: Option<f64>,
    /// True when `offset_s` is only a bound ("at least this far off").
    #[serde(default)]
    pub bound: bool,
}

/// The clock verdict's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClockState {
    /// Within the tolerance (10 s).
    Ok,
    /// The device clock is ahead of true time.
    Ahead,
    /// The device clock is behind true time.
    Behind,
    /// No source could tell.
    Unknown,
}

/// The one clock verdict of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClockReport {
    /// What the verdict says.
    pub state: ClockState,
    /// True time minus device time, seconds (positive: the device is behind).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset_s: Option<f64>,
    /// ± seconds around `offset_s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uncertainty_s: Option<f64>,
    /// The source the verdict rests on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<ClockSourceKind>,
    /// Every reading, best first.
    pub sources: Vec<ClockSource>,
    /// Every SNTP query, in the configured order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ntp: Vec<NtpEvidence>,
    /// What the offset breaks, in words (empty when the clock is fine).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub consequences: Vec<String>,
    /// The SAS token's seconds to expiry by true time (device clock: `target.sas_token`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sas_expires_in_true_s: Option<i64>,
}

/// The X.509 device certificate's health.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceCertHealth {
    /// Subject of the device certificate.
    pub subject: String,
    /// Issuer.
    pub issuer: String,
    /// SHA-256 of its DER, lowercase hex.
    pub sha256: String,
    /// Start of validity, RFC 3339 UTC.
    pub not_before: String,
    /// End of validity, RFC 3339 UTC.
    pub not_after: String,
    /// End of validity, Unix seconds.
    pub not_after_unix: i64,
    /// Days left by the device clock (negative: expired), two decimals.
    pub days_left_device: f64,
    /// Days left by the measured true time, when a clock source measured it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub days_left_true: Option<f64>,
    /// `valid`, `expiring`, `expired` or `not_yet_valid`, by the device clock.
    pub state_device: String,
    /// The same by true time, when measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_true: Option<String>,
    /// The private key matches the certificate (checked when it was loaded).
    pub key_matches: bool,
    /// Whether the certificate chains to the given device CA (`--device-ca`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chains_to_ca: Option<bool>,
    /// Why it does not chain, when it does not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain_error: Option<String>,
}

//! The agent's bill in a report: bytes sent and received at the socket per
//! purpose (checks, the canary's keep-alives, uploads, the periodic tune), TLS,
//! WebSocket and MQTT framing included, for the period the report covers and
//! since the agent started.

use serde::{Deserialize, Serialize};

/// Bytes in both directions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ByteCount {
    /// Bytes written to the socket.
    pub sent: u64,
    /// Bytes read from the socket.
    pub received: u64,
}

impl ByteCount {
    /// Nothing either way.
    pub fn is_zero(&self) -> bool {
        self.sent == 0 && self.received == 0
    }
}

/// Bytes per purpose.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurposeBytes {
    /// The periodic checks (DNS is not counted: UDP, outside the chain).
    pub checks: ByteCount,
    /// The canary session: connects, keep-alive pings, disconnects.
    pub canary: ByteCount,
    /// Report uploads: PUBLISH and PUBACK on the canary's session.
    pub uploads: ByteCount,
    /// The periodic tune (`[schedule] tune_interval`): its sessions, pings and idle
    /// waits. Absent when nothing was counted (the tune is off by default).
    #[serde(default, skip_serializing_if = "ByteCount::is_zero")]
    pub tune: ByteCount,
}

/// The `traffic` section of an agent report.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrafficReport {
    /// Seconds the `period` figures cover (since the previous report of this agent).
    pub period_s: f64,
    /// Counted since the previous report (for a check report, its own check).
    pub period: PurposeBytes,
    /// Counted since the agent started (Prometheus counters read these); left
    /// out of compact wire reports.
    #[serde(default)]
    pub since_start: PurposeBytes,
}

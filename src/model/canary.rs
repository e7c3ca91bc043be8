//! The canary section of an agent report: the disconnects of the agent's
//! long-lived MQTT session, their causes and what the history points to.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Why a canary session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DisconnectCause {
    /// A PINGREQ went unanswered within the PINGRESP timeout (keep-alive timeout:
    /// the path or the hub stopped answering).
    NoPingresp,
    /// The TCP connection was reset (RST).
    TcpReset,
    /// The peer closed the connection without an MQTT DISCONNECT.
    EofWithoutDisconnect,
    /// The peer sent a TLS alert.
    TlsAlert,
    /// The server sent an MQTT DISCONNECT.
    ServerDisconnect,
    /// The session was ended by the client to renew its SAS token (on MQTT a
    /// renewal is a reconnect).
    TokenRenewal,
    /// The SAS token had expired when the server closed the session.
    TokenExpired,
    /// The peer sent something that is not MQTT.
    ProtocolError,
    /// Any other I/O error on the session.
    IoError,
}

impl DisconnectCause {
    /// Every cause, in a stable order (metrics list them all).
    pub const ALL: [DisconnectCause; 9] = [
        DisconnectCause::NoPingresp,
        DisconnectCause::TcpReset,
        DisconnectCause::EofWithoutDisconnect,
        DisconnectCause::TlsAlert,
        DisconnectCause::ServerDisconnect,
        DisconnectCause::TokenRenewal,
        DisconnectCause::TokenExpired,
        DisconnectCause::ProtocolError,
        DisconnectCause::IoError,
    ];

    /// The snake_case id used in reports and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            DisconnectCause::NoPingresp => "no_pingresp",
            DisconnectCause::TcpReset => "tcp_reset",
            DisconnectCause::EofWithoutDisconnect => "eof_without_disconnect",
            DisconnectCause::TlsAlert => "tls_alert",
            DisconnectCause::ServerDisconnect => "server_disconnect",
            DisconnectCause::TokenRenewal => "token_renewal",
            DisconnectCause::TokenExpired => "token_expired",
            DisconnectCause::ProtocolError => "protocol_error",
            DisconnectCause::IoError => "io_error",
        }
    }
}

/// One disconnect of the canary session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DisconnectEvent {
    /// Stable id of this disconnect: the same in every report that carries it (a
    /// record first reported while the canary was still down is sent again once
    /// completed, under the same id, so consumers keep the latest version), unique
    /// across agent restarts (the history's own id and the disconnect's index).
    /// Empty only in records written before ids existed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    /// When the disconnect was detected, RFC 3339 UTC.
    pub at: String,
    /// Unix time of `at`, milliseconds (for arithmetic without parsing).
    pub at_unix_ms: u64,
    /// How long the session had been up, seconds.
    pub session_lived_s: f64,
    /// How long nothing had been received on the link before the failure showed,
    /// seconds (an idle-dropping NAT shows as a near-constant value here).
    pub idle_before_s: f64,
    /// The longest silence the session had survived before (a PINGREQ or PUBLISH
    /// sent after it was answered), seconds, as `idle_before_s` measures it: a
    /// session that survived the silence that preceded its end was not killed by
    /// an idle timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub longest_idle_survived_s: Option<f64>,
    /// The cause class.
    pub cause: DisconnectCause,
    /// The reason code of the server's DISCONNECT, when it sent one with a code
    /// (MQTT 5: 0x8E session taken over, 0x8B server shutting down, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason_code: Option<u8>,
    /// What was seen (error text, CONNACK code, alert); never a secret.
    pub detail: String,
    /// Seconds until the next session was up again (absent while still down).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconnect_s: Option<f64>,
    /// Failed connection attempts before the session was back.
    #[serde(default)]
    pub failed_attempts: u32,
    /// The class of the last failed attempt (`tcp.refused`, `mqtt.not_authorized` …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempt_class: Option<String>,
}

/// What the history points to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DiagnosisKind {
    /// Too few disconnects to say anything.
    Stable,
    /// Disconnects at a steady period close to the SAS token lifetime (cause 1).
    TokenRenewal,
    /// Disconnects after idle periods of a near-constant length: a NAT or firewall
    /// drops idle flows before the keep-alive refreshes them (cause 2).
    IdleTimeout,
    /// The network (cause 2) in another way than an idle timeout: irregular drops
    /// with outages, a middlebox cutting connections at a fixed age, or sessions
    /// that survived many idle periods and then lost their path state (NAT or
    /// firewall failover, state flush, route change). The summary says which.
    Network,
    /// Another client uses the device's identity: the server drops the canary's
    /// session each time the other one connects (a take-over fight).
    SessionTakeover,
    /// The server closed the sessions and its address then refused connections
    /// until it came back: the hub or broker restarted or refused (cause 3 when
    /// many devices drop at once).
    ServerRestart,
    /// Disconnects that fit none of the patterns.
    Unexplained,
}

impl DiagnosisKind {
    /// The snake_case id used in reports and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            DiagnosisKind::Stable => "stable",
            DiagnosisKind::TokenRenewal => "token_renewal",
            DiagnosisKind::IdleTimeout => "idle_timeout",
            DiagnosisKind::Network => "network",
            DiagnosisKind::SessionTakeover => "session_takeover",
            DiagnosisKind::ServerRestart => "server_restart",
            DiagnosisKind::Unexplained => "unexplained",
        }
    }
}

/// The diagnosis over the disconnect history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Diagnosis {
    /// The pattern found.
    pub kind: DiagnosisKind,
    /// The IoT Hub 404104 cause family it belongs to (1, 2 or 3), when one applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iothub_cause: Option<u8>,
    /// One sentence for a person.
    pub summary: String,
    /// The numbers behind it.
    pub evidence: Vec<String>,
}

/// The canary section of an agent report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CanaryReport {
    /// The endpoint the session runs on.
    pub endpoint: String,
    /// Keep-alive of the session, seconds.
    pub keepalive_s: u64,
    /// Whether the session was up when the report was made.
    pub connected: bool,
    /// Since when the current session is up, RFC 3339 UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connected_since: Option<String>,
    /// Sessions opened (history kept across agent restarts).
    pub sessions_total: u64,
    /// Disconnects recorded, by cause (every cause listed, zeros included).
    pub disconnects_total: BTreeMap<String, u64>,
    /// Disconnects since the previous report, oldest first.
    pub recent: Vec<DisconnectEvent>,
    /// What the whole kept history points to.
    pub diagnosis: Diagnosis,
    /// Failed connection attempts since the last session ended (0 when connected).
    #[serde(default)]
    pub connect_failures: u32,
    /// The last failed attempt: its class id and what was seen (a refused CONNACK
    /// shows here as `mqtt.not_authorized: …`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_error: Option<String>,
}

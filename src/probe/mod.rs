//! One module per handshake. Every probe returns a [`PhaseResult`]: a failure is
//! data (status, duration, evidence, class), never an `Err` that escapes.

pub mod amqp;
pub mod dns;
pub mod http;
pub mod mqtt;
pub mod stream;
pub mod tcp;
pub mod tls;
pub mod ws;

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::diagnose::FailureClass;

/// A handshake phase of an endpoint's chain, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Name resolution.
    Dns,
    /// TCP connect.
    Tcp,
    /// TLS handshake and certificate verification.
    Tls,
    /// HTTP upgrade to WebSocket.
    Websocket,
    /// MQTT CONNECT → CONNACK (and PINGREQ round trips).
    Mqtt,
    /// AMQP protocol header exchange.
    Amqp,
    /// One HTTP request/response.
    Http,
}

impl Phase {
    /// The name used in reports and text output.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Dns => "dns",
            Phase::Tcp => "tcp",
            Phase::Tls => "tls",
            Phase::Websocket => "websocket",
            Phase::Mqtt => "mqtt",
            Phase::Amqp => "amqp",
            Phase::Http => "http",
        }
    }
}

/// How a phase ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// The handshake succeeded.
    Ok,
    /// The handshake failed; `class` says how.
    Failed,
    /// Not run, because an earlier phase failed (or the deadline passed).
    Skipped,
}

/// The outcome of one phase: what a report shows for it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PhaseResult {
    /// Which phase.
    pub phase: Phase,
    /// How it ended.
    pub status: Status,
    /// Wall time of the phase in milliseconds (absent when skipped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<f64>,
    /// The failure class, set exactly when `status` is `failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<FailureClass>,
    /// Error detail for a failure, or the reason for a skip. Never holds a secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// What the phase saw (addresses, certificates, CONNACK ...), also on failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<serde_json::Value>,
}

impl PhaseResult {
    /// A successful phase.
    pub fn ok(phase: Phase, elapsed: Duration, evidence: impl Serialize) -> Self {
        PhaseResult {
            phase,
            status: Status::Ok,
            duration_ms: Some(ms(elapsed)),
            class: None,
            message: None,
            evidence: to_value(evidence),
        }
    }

    /// A failed phase with its class and a message (which must not hold secrets).
    pub fn failed(
        phase: Phase,
        elapsed: Duration,
        class: FailureClass,
        message: impl Into<String>,
        evidence: impl Serialize,
    ) -> Self {
        PhaseResult {
            phase,
            status: Status::Failed,
            duration_ms: Some(ms(elapsed)),
            class: Some(class),
            message: Some(message.into()),
            evidence: to_value(evidence),
        }
    }

    /// A phase that did not run, and why.
    pub fn skipped(phase: Phase, reason: impl Into<String>) -> Self {
        PhaseResult {
            phase,
            status: Status::Skipped,
            duration_ms: None,
            class: None,
            message: Some(reason.into()),
            evidence: None,
        }
    }

    /// True when the phase succeeded.
    pub fn is_ok(&self) -> bool {
        self.status == Status::Ok
    }
}

/// No evidence: serializes to nothing.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct NoEvidence;

fn to_value(evidence: impl Serialize) -> Option<serde_json::Value> {
    match serde_json::to_value(evidence) {
        Ok(serde_json::Value::Null) => None,
        Ok(v) => Some(v),
        Err(_) => None,
    }
}

/// Milliseconds with microsecond resolution.
pub fn ms(d: Duration) -> f64 {
    (d.as_micros() as f64) / 1000.0
}

/// Times a phase: started at construction, read with [`Stopwatch::elapsed`].
#[derive(Debug, Clone, Copy)]
pub struct Stopwatch(Instant);

impl Stopwatch {
    /// Starts timing now.
    pub fn start() -> Self {
        Stopwatch(Instant::now())
    }
    /// Time since start.
    pub fn elapsed(&self) -> Duration {
        self.0.elapsed()
    }
}

/// Classifies an I/O error seen on an established stream (after connect) into
/// the phase's `closed`/`reset`/`timeout` family. Returns `None` for other kinds.
pub fn stream_error_kind(err: &std::io::Error) -> Option<StreamFault> {
    use std::io::ErrorKind::*;
    match err.kind() {
        UnexpectedEof => Some(StreamFault::Closed),
        ConnectionReset | ConnectionAborted | BrokenPipe => Some(StreamFault::Reset),
        TimedOut | WouldBlock => Some(StreamFault::Timeout),
        _ => None,
    }
}

/// What went wrong on an established stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamFault {
    /// The peer closed the connection (EOF).
    Closed,
    /// The peer reset the connection (RST).
    Reset,
    /// Nothing arrived in time.
    Timeout,
}

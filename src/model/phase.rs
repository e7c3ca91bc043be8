//! The phases of an endpoint chain and how each can end.

use std::time::Duration;

use serde::{Deserialize, Serialize};

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
    /// The tunnel through a proxy: HTTP CONNECT or the SOCKS5 exchange (after TCP
    /// to the proxy, before TLS to the hub).
    Proxy,
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
            Phase::Proxy => "proxy",
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

/// Milliseconds with microsecond resolution.
pub fn ms(d: Duration) -> f64 {
    (d.as_micros() as f64) / 1000.0
}

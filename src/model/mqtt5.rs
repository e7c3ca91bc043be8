//! MQTT 5 in the report model: the protocol version a check speaks, the CONNACK
//! properties a v5 broker states its limits in, a server DISCONNECT's reason, and
//! the names and failure classes of the v5 reason codes.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::class::FailureClass;

/// The MQTT protocol version a check or the canary speaks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MqttVersion {
    /// MQTT 3.1.1 (protocol level 4).
    #[default]
    #[serde(rename = "3.1.1")]
    V311,
    /// MQTT 5 (protocol level 5).
    #[serde(rename = "5")]
    V5,
}

impl MqttVersion {
    /// As written on the command line and in reports: `3.1.1` or `5`.
    pub fn as_str(self) -> &'static str {
        match self {
            MqttVersion::V311 => "3.1.1",
            MqttVersion::V5 => "5",
        }
    }
}

impl fmt::Display for MqttVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for MqttVersion {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "3.1.1" | "311" | "4" => Ok(MqttVersion::V311),
            "5" | "5.0" => Ok(MqttVersion::V5),
            other => Err(format!(
                "unknown MQTT version {other:?}: expected 3.1.1 or 5"
            )),
        }
    }
}

/// The properties of an MQTT 5 CONNACK, each as the broker sent it (absent: not sent,
/// which in MQTT 5 means the protocol's default).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Mqtt5ConnackProperties {
    /// Server Keep Alive, seconds: the keep-alive the broker imposes instead of the client's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_keep_alive_s: Option<u16>,
    /// Assigned Client Identifier (the client sent an empty one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assigned_client_identifier: Option<String>,
    /// Reason String: the broker's human-readable reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason_string: Option<String>,
    /// Server Reference: the server to use instead (with 0x9C / 0x9D).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_reference: Option<String>,
    /// Maximum Packet Size the broker accepts, bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maximum_packet_size: Option<u32>,
    /// Receive Maximum: QoS 1/2 publications in flight the broker accepts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receive_maximum: Option<u16>,
    /// Topic Alias Maximum.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic_alias_maximum: Option<u16>,
    /// Maximum QoS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maximum_qos: Option<u8>,
    /// Retain Available.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retain_available: Option<bool>,
    /// Wildcard Subscription Available.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wildcard_subscription_available: Option<bool>,
    /// Shared Subscription Available.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared_subscription_available: Option<bool>,
    /// Subscription Identifiers Available.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription_identifiers_available: Option<bool>,
    /// Session Expiry Interval the broker grants, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_expiry_s: Option<u32>,
    /// Response Information.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_information: Option<String>,
    /// User Properties, in the order sent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub user_properties: Vec<(String, String)>,
}

/// A DISCONNECT the server sent (MQTT 5 only: 3.1.1 servers just close).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Mqtt5Disconnect {
    /// Reason code.
    pub code: u8,
    /// Its name.
    pub name: String,
    /// Reason String, if sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason_string: Option<String>,
    /// Server Reference, if sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_reference: Option<String>,
}

/// The MQTT 5 name of a CONNACK reason code (MQTT 5 spec 3.2.2.2).
pub fn connack_reason_name(code: u8) -> &'static str {
    match code {
        0x00 => "success",
        0x80 => "unspecified error",
        0x81 => "malformed packet",
        0x82 => "protocol error",
        0x83 => "implementation specific error",
        0x84 => "unsupported protocol version",
        0x85 => "client identifier not valid",
        0x86 => "bad user name or password",
        0x87 => "not authorized",
        0x88 => "server unavailable",
        0x89 => "server busy",
        0x8A => "banned",
        0x8C => "bad authentication method",
        0x90 => "topic name invalid",
        0x95 => "packet too large",
        0x97 => "quota exceeded",
        0x99 => "payload format invalid",
        0x9A => "retain not supported",
        0x9B => "QoS not supported",
        0x9C => "use another server",
        0x9D => "server moved",
        0x9F => "connection rate exceeded",
        _ => "unknown reason code",
    }
}

/// The failure class of a refusing MQTT 5 CONNACK: the 3.1.1 family where the code
/// means the same (0x86 is 3.1.1's 4, 0x87 its 5, 0x85 its 2, 0x88 its 3, 0x84 its 1).
pub fn connack_reason_class(code: u8) -> FailureClass {
    match code {
        0x84 => FailureClass::MqttProtocolVersion,
        0x85 => FailureClass::MqttIdentifierRejected,
        0x86 => FailureClass::MqttBadCredentials,
        0x87 => FailureClass::MqttNotAuthorized,
        0x88 => FailureClass::MqttServerUnavailable,
        0x89 => FailureClass::MqttServerBusy,
        0x8A => FailureClass::MqttBanned,
        0x8C => FailureClass::MqttBadAuthMethod,
        0x95 => FailureClass::MqttPacketTooLarge,
        0x97 | 0x9F => FailureClass::MqttQuotaExceeded,
        0x9C | 0x9D => FailureClass::MqttServerRedirect,
        0x81 | 0x82 => FailureClass::MqttProtocolError,
        _ => FailureClass::MqttRefused,
    }
}

/// The MQTT 5 name of a DISCONNECT reason code (MQTT 5 spec 3.14.2.1).
pub fn disconnect_reason_name(code: u8) -> &'static str {
    match code {
        0x00 => "normal disconnection",
        0x04 => "disconnect with will message",
        0x80 => "unspecified error",
        0x81 => "malformed packet",
        0x82 => "protocol error",
        0x83 => "implementation specific error",
        0x87 => "not authorized",
        0x89 => "server busy",
        0x8B => "server shutting down",
        0x8D => "keep alive timeout",
        0x8E => "session taken over",
        0x8F => "topic filter invalid",
        0x90 => "topic name invalid",
        0x93 => "receive maximum exceeded",
        0x94 => "topic alias invalid",
        0x95 => "packet too large",
        0x96 => "message rate too high",
        0x97 => "quota exceeded",
        0x98 => "administrative action",
        0x99 => "payload format invalid",
        0x9A => "retain not supported",
        0x9B => "QoS not supported",
        0x9C => "use another server",
        0x9D => "server moved",
        0x9E => "shared subscriptions not supported",
        0x9F => "connection rate exceeded",
        0xA0 => "maximum connect time",
        0xA1 => "subscription identifiers not supported",
        0xA2 => "wildcard subscriptions not supported",
        _ => "unknown reason code",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_and_print() {
        assert_eq!("3.1.1".parse::<MqttVersion>(), Ok(MqttVersion::V311));
        assert_eq!("5".parse::<MqttVersion>(), Ok(MqttVersion::V5));
        assert!("6"
            .parse::<MqttVersion>()
            .unwrap_err()
            .contains("3.1.1 or 5"));
        assert_eq!(serde_json::to_string(&MqttVersion::V5).unwrap(), "\"5\"");
    }

    #[test]
    fn v5_codes_join_the_311_families() {
        assert_eq!(connack_reason_class(0x86), FailureClass::MqttBadCredentials);
        assert_eq!(connack_reason_class(0x87), FailureClass::MqttNotAuthorized);
        assert_eq!(
            connack_reason_class(0x85),
            FailureClass::MqttIdentifierRejected
        );
        assert_eq!(
            connack_reason_class(0x88),
            FailureClass::MqttServerUnavailable
        );
        assert_eq!(
            connack_reason_class(0x84),
            FailureClass::MqttProtocolVersion
        );
        assert_eq!(connack_reason_class(0x9D), FailureClass::MqttServerRedirect);
        assert_eq!(connack_reason_class(0xFE), FailureClass::MqttRefused);
        assert_eq!(disconnect_reason_name(0x8E), "session taken over");
    }
}

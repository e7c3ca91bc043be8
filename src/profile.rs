//! Hub profiles: what endpoints a hub type has and what a healthy connection to it
//! looks like. Profiles are data (`probes/*.toml`), embedded at build time and also
//! loadable from a file, so a new hub type is a TOML file, not a code change.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::model::{Protocol, Transport};

/// The profiles shipped in the binary: (name, TOML text).
pub const BUILTIN: &[(&str, &str)] = &[
    (
        "azure-iot-hub",
        include_str!("../probes/azure-iot-hub.toml"),
    ),
    ("aws-iot-core", include_str!("../probes/aws-iot-core.toml")),
    ("mqtt-broker", include_str!("../probes/mqtt-broker.toml")),
    ("azure-dps", include_str!("../probes/azure-dps.toml")),
];

/// Why a profile could not be used. Each message names the profile and the problem.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// Neither a built-in name nor an existing file.
    #[error("unknown profile {0:?}: use one of {list} or a path to a .toml file", list = builtin_names().join(", "))]
    Unknown(String),
    /// The file could not be read.
    #[error(
        "cannot read profile file {path} ({}): {problem}",
        crate::settings::Setting::Profile
    )]
    Read {
        /// The file.
        path: String,
        /// Why (an OS message, not a regular file, too large; never content).
        problem: crate::fsio::InputFileError,
    },
    /// The TOML does not parse or has unknown/missing keys.
    #[error("invalid profile {origin}: {message}")]
    Parse {
        /// Built-in name or file path.
        origin: String,
        /// The parser's message (line and key).
        message: String,
    },
    /// The TOML parses but its values do not make sense.
    #[error("invalid profile {origin}: {message}")]
    Invalid {
        /// Built-in name or file path.
        origin: String,
        /// What is wrong.
        message: String,
    },
}

/// Longest parser message quoted in an error (a key or value may be huge).
const MAX_MESSAGE: usize = 300;

/// The TOML error as one short line: `line L, column C: what`, without the
/// source excerpt (which would echo a megabyte-long line, or control characters
/// from the file, to the terminal).
fn describe_toml_error(text: &str, e: &toml::de::Error) -> String {
    let what = one_line(e.message(), MAX_MESSAGE);
    match e.span() {
        Some(span) => {
            let before = &text.as_bytes()[..span.start.min(text.len())];
            let line = before.iter().filter(|b| **b == b'\n').count() + 1;
            let line_start = before
                .iter()
                .rposition(|b| *b == b'\n')
                .map_or(0, |i| i + 1);
            let column = String::from_utf8_lossy(&before[line_start..])
                .chars()
                .count()
                + 1;
            format!("line {line}, column {column}: {what}")
        }
        None => what,
    }
}

/// `s` on one line, control characters escaped, at most `max` characters.
fn one_line(s: &str, max: usize) -> String {
    let mut out = String::new();
    for (i, c) in s.trim().chars().enumerate() {
        if i == max {
            out.push('…');
            break;
        }
        if c == '\n' {
            out.push(' ');
        } else if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Names of the built-in profiles.
pub fn builtin_names() -> Vec<&'static str> {
    BUILTIN.iter().map(|(n, _)| *n).collect()
}

/// One endpoint of a hub.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    /// Stable name used on the command line and in reports (`mqtt-tls`).
    pub name: String,
    /// Protocol after the transport.
    pub protocol: Protocol,
    /// Transport.
    pub transport: Transport,
    /// TCP port.
    pub port: u16,
    /// HTTP path (WebSocket upgrade or HTTP request).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// ALPN protocol names offered in the TLS handshake.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alpn: Vec<String>,
}

/// MQTT identity templates and keep-alive limits.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttSettings {
    /// Client id template: `{device_id}`, `{host}`, `{username}`.
    pub client_id: String,
    /// User name template (same placeholders).
    pub username: String,
    /// Keep-alive the probe announces in CONNECT (and the usual SDK default).
    #[serde(with = "humantime_serde_compat")]
    pub keepalive: Duration,
    /// Smallest keep-alive the hub accepts.
    #[serde(
        default,
        with = "humantime_serde_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub keepalive_min: Option<Duration>,
    /// Largest useful keep-alive.
    #[serde(with = "humantime_serde_compat")]
    pub keepalive_max: Duration,
    /// MQTT version the probe speaks unless `--mqtt-version` says otherwise.
    ///
    /// Every built-in profile defaults to 3.1.1, on purpose: it is what the Azure IoT
    /// device SDKs speak (IoT Hub's MQTT 5 support is a preview with its own limits),
    /// every broker accepts it, and reports stay comparable with those of earlier
    /// versions. AWS IoT Device SDK v2 clients and mosquitto 2 speak MQTT 5, but a
    /// default that changes what a working fleet is probed with should follow field
    /// use of the v5 path, not precede it: check with `--mqtt-version 5` (or
    /// `[hub] mqtt_version = "5"`) to see the broker's CONNACK limits.
    #[serde(default, skip_serializing_if = "is_v311")]
    pub version: crate::model::MqttVersion,
}

fn is_v311(v: &crate::model::MqttVersion) -> bool {
    *v == crate::model::MqttVersion::V311
}

/// Trust anchors a healthy chain of this hub ends at (by subject common name).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustSettings {
    /// Roots the hub's certificates chain to today.
    #[serde(default)]
    pub expected_anchors: Vec<String>,
    /// Roots it used to chain to (still seen, being retired).
    #[serde(default)]
    pub legacy_anchors: Vec<String>,
    /// The same roots identified by key: `[[trust.anchors]]` with a name (for
    /// display), a role and the SubjectPublicKeyInfo SHA-256 or a certificate file.
    #[serde(default)]
    pub anchors: Vec<crate::anchors::AnchorPin>,
}

/// A hub profile.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Profile name.
    pub name: String,
    /// One line for humans.
    pub description: String,
    /// Host name suffixes that select this profile automatically.
    #[serde(default)]
    pub host_suffixes: Vec<String>,
    /// Whether IoT Hub style SAS tokens apply.
    #[serde(default)]
    pub sas_tokens: bool,
    /// The host checked when none is given (DPS's global device endpoint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_host: Option<String>,
    /// A provisioning service (DPS): its identity is an id scope and a registration
    /// id, and `check --register` follows it to the hub it assigns.
    #[serde(default)]
    pub provisioning: bool,
    /// MQTT settings.
    pub mqtt: MqttSettings,
    /// Trust anchors.
    #[serde(default)]
    pub trust: TrustSettings,
    /// Endpoints, in report order.
    pub endpoints: Vec<Endpoint>,
    /// SNTP servers the clock check asks by default (`--ntp-server` overrides).
    #[serde(default = "default_ntp_servers")]
    pub ntp_servers: Vec<String>,
    /// AMQP settings (the device's events address), for hubs that speak AMQP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amqp: Option<AmqpSettings>,
}

fn default_ntp_servers() -> Vec<String> {
    vec!["pool.ntp.org".into()]
}

/// AMQP settings of a hub.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmqpSettings {
    /// The address a device sends its events to, with `{device}` for the device id
    /// (`{id}/modules/{module}` for a module): IoT Hub's `/devices/{device}/messages/events`.
    /// The probe attaches a sender link there (and detaches) when it has an identity.
    pub events_address: String,
}

impl Profile {
    /// Loads a built-in profile by name, or a file when `spec` names one
    /// (contains a path separator or ends in `.toml`).
    pub fn load(spec: &str) -> Result<Profile, ProfileError> {
        if let Some((_, text)) = BUILTIN.iter().find(|(n, _)| *n == spec) {
            return Profile::parse(text, spec);
        }
        let looks_like_path = spec.contains('/') || spec.ends_with(".toml");
        if looks_like_path || Path::new(spec).is_file() {
            let text =
                crate::fsio::read_bounded_text(Path::new(spec), crate::fsio::InputKind::Profile)
                    .map_err(|problem| ProfileError::Read {
                        path: spec.to_string(),
                        problem,
                    })?;
            return Profile::parse(&text, spec);
        }
        Err(ProfileError::Unknown(spec.to_string()))
    }

    /// The built-in profile whose host suffix matches `host`, else `mqtt-broker`.
    pub fn for_host(host: &str) -> Profile {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        for (name, text) in BUILTIN {
            let p = Profile::parse(text, name).expect("built-in profiles are valid");
            if p.host_suffixes.iter().any(|s| host.ends_with(s.as_str())) {
                return p;
            }
        }
        Profile::load("mqtt-broker").expect("built-in profiles are valid")
    }

    /// Parses and validates profile TOML; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Profile, ProfileError> {
        let mut p: Profile = toml::from_str(text).map_err(|e| ProfileError::Parse {
            origin: origin.to_string(),
            message: describe_toml_error(text, &e),
        })?;
        // Anchors given by file are read relative to the profile file's folder.
        let base = Path::new(origin).parent().unwrap_or(Path::new("."));
        crate::anchors::resolve_pins(&mut p.trust.anchors, base).map_err(|message| {
            ProfileError::Invalid {
                origin: origin.to_string(),
                message: one_line(&message, MAX_MESSAGE),
            }
        })?;
        p.validate().map_err(|message| ProfileError::Invalid {
            origin: origin.to_string(),
            // A name quoted in the message may be megabytes long.
            message: one_line(&message, MAX_MESSAGE),
        })?;
        Ok(p)
    }

    fn validate(&self) -> Result<(), String> {
        if self.name.trim().is_empty() {
            return Err("name is empty".into());
        }
        if self.endpoints.is_empty() {
            return Err("no endpoints".into());
        }
        let mut seen = std::collections::HashSet::new();
        for e in &self.endpoints {
            if e.name.is_empty()
                || !e
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(format!(
                    "endpoint name {:?} must be letters, digits, '-' or '_'",
                    e.name
                ));
            }
            if !seen.insert(e.name.as_str()) {
                return Err(format!("endpoint {:?} appears twice", e.name));
            }
            if e.port == 0 {
                return Err(format!("endpoint {:?}: port 0", e.name));
            }
            if let Some(path) = &e.path {
                if !path.starts_with('/') {
                    return Err(format!("endpoint {:?}: path must start with '/'", e.name));
                }
            }
            if e.transport.uses_websocket()
                && !matches!(e.protocol, Protocol::Mqtt | Protocol::Amqp)
            {
                return Err(format!(
                    "endpoint {:?}: WebSocket transport is for MQTT and AMQP only",
                    e.name
                ));
            }
        }
        let m = &self.mqtt;
        if m.keepalive_max.as_secs() > u16::MAX as u64 {
            return Err("mqtt.keepalive_max is above MQTT's 65535 s".into());
        }
        if m.keepalive > m.keepalive_max {
            return Err("mqtt.keepalive is above mqtt.keepalive_max".into());
        }
        if let Some(min) = m.keepalive_min {
            if min > m.keepalive {
                return Err("mqtt.keepalive_min is above mqtt.keepalive".into());
            }
        }
        Ok(())
    }

    /// The endpoint with this name.
    pub fn endpoint(&self, name: &str) -> Option<&Endpoint> {
        self.endpoints.iter().find(|e| e.name == name)
    }
}

/// serde adapter: humantime strings ("30s", "4m") for `Duration`.
mod humantime_serde_compat {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!(
                "{text:?} is not a duration like \"30s\" or \"4m\": {e}"
            ))
        })
    }
}

/// serde adapter: optional humantime strings.
mod humantime_serde_opt {
    use std::time::Duration;

    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::humantime_serde_compat::serialize(d, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        super::humantime_serde_compat::deserialize(d).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_profile_loads() {
        for name in builtin_names() {
            let p = Profile::load(name).unwrap();
            assert_eq!(p.name, name);
            assert!(!p.endpoints.is_empty());
        }
    }

    #[test]
    fn azure_profile_has_the_iot_hub_facts() {
        let p = Profile::load("azure-iot-hub").unwrap();
        let names: Vec<_> = p.endpoints.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["mqtt-tls", "mqtt-ws", "amqps", "amqp-ws", "https"]);
        assert_eq!(p.endpoint("mqtt-tls").unwrap().port, 8883);
        let ws = p.endpoint("mqtt-ws").unwrap();
        assert_eq!(
            (ws.port, ws.path.as_deref()),
            (443, Some("/$iothub/websocket"))
        );
        assert_eq!(p.endpoint("amqps").unwrap().port, 5671);
        let aws = p.endpoint("amqp-ws").unwrap();
        assert_eq!(
            (aws.protocol, aws.transport, aws.port, aws.path.as_deref()),
            (
                Protocol::Amqp,
                Transport::Wss,
                443,
                Some("/$iothub/websocket")
            )
        );
        assert_eq!(
            p.amqp.as_ref().unwrap().events_address,
            "/devices/{device}/messages/events"
        );
        assert_eq!(p.mqtt.keepalive_max, Duration::from_secs(1177));
        assert!(p
            .trust
            .expected_anchors
            .iter()
            .any(|a| a == "DigiCert Global Root G2"));
        assert!(p
            .trust
            .legacy_anchors
            .iter()
            .any(|a| a == "Baltimore CyberTrust Root"));
    }

    #[test]
    fn aws_profile_has_alpn_and_keepalive_range() {
        let p = Profile::load("aws-iot-core").unwrap();
        let alpn = p.endpoint("mqtt-alpn").unwrap();
        assert_eq!(alpn.port, 443);
        assert_eq!(alpn.alpn, ["x-amzn-mqtt-ca"]);
        assert_eq!(p.mqtt.keepalive_min, Some(Duration::from_secs(30)));
        assert_eq!(p.mqtt.keepalive_max, Duration::from_secs(1200));
        assert!(p
            .trust
            .expected_anchors
            .iter()
            .any(|a| a == "Amazon Root CA 1"));
    }

    #[test]
    fn dps_profile_has_the_provisioning_facts() {
        let p = Profile::load("azure-dps").unwrap();
        assert!(p.provisioning && p.sas_tokens);
        assert_eq!(
            p.default_host.as_deref(),
            Some("global.azure-devices-provisioning.net")
        );
        let ports: Vec<_> = p
            .endpoints
            .iter()
            .map(|e| (e.name.as_str(), e.port))
            .collect();
        assert_eq!(
            ports,
            [
                ("mqtt-tls", 8883),
                ("mqtt-ws", 443),
                ("amqps", 5671),
                ("https", 443)
            ]
        );
        assert_eq!(
            p.mqtt.username,
            "{id_scope}/registrations/{device_id}/api-version=2019-03-31"
        );
        assert_eq!(
            Profile::for_host("global.azure-devices-provisioning.net").name,
            "azure-dps"
        );
    }

    #[test]
    fn host_suffix_selects_profile() {
        assert_eq!(
            Profile::for_host("myhub.azure-devices.net").name,
            "azure-iot-hub"
        );
        assert_eq!(
            Profile::for_host("abc-ats.iot.eu-west-1.amazonaws.com").name,
            "aws-iot-core"
        );
        assert_eq!(Profile::for_host("broker.example.test").name, "mqtt-broker");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_clear_errors() {
        let base = include_str!("../probes/mqtt-broker.toml");
        let typo = base.replace("keepalive_max", "keepalive_maxx");
        let err = Profile::parse(&typo, "typo.toml").unwrap_err().to_string();
        assert!(
            err.contains("typo.toml") && err.contains("keepalive_max"),
            "{err}"
        );

        let bad = base.replace("\"60s\"", "\"sixty\"");
        let err = Profile::parse(&bad, "bad.toml").unwrap_err().to_string();
        assert!(err.contains("sixty"), "{err}");

        let dup = format!("{base}\n[[endpoints]]\nname = \"mqtt\"\nprotocol = \"mqtt\"\ntransport = \"tcp\"\nport = 1\n");
        let err = Profile::parse(&dup, "dup.toml").unwrap_err().to_string();
        assert!(err.contains("appears twice"), "{err}");

        assert!(matches!(
            Profile::load("no-such-profile"),
            Err(ProfileError::Unknown(_))
        ));
        assert!(matches!(
            Profile::load("/nonexistent/p.toml"),
            Err(ProfileError::Read { .. })
        ));
    }
}

//! Device identity: IoT Hub connection strings, SAS tokens, and the secret wrapper
//! that keeps keys and signatures out of every report, log line and error message.

pub mod connection_string;
pub mod dps;
pub mod sas;

pub use connection_string::{ConnectionString, ConnectionStringError};
pub use sas::{generate_sas_token, SasToken};

use crate::model::{rfc3339_unix, SasTokenInfo};

/// A secret value (device key, SAS token, password). It has no `Display`, and its
/// `Debug` prints a placeholder, so it cannot leak through formatting by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The secret itself, for the one place that must send it (CONNECT, HMAC).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// How the probe authenticates its MQTT CONNECT.
#[derive(Debug, Clone)]
pub enum Credentials {
    /// No identity: a throw-away client id; a refusing CONNACK still proves reachability.
    None,
    /// A device key from a connection string; a SAS token is generated per connect.
    DeviceKey {
        /// Device id.
        device_id: String,
        /// Module id, for module identities.
        module_id: Option<String>,
        /// The base64 device key.
        key: Secret,
        /// Lifetime of generated tokens.
        ttl: std::time::Duration,
        /// A pinned expiry (Unix seconds) instead of now + ttl.
        expiry: Option<u64>,
    },
    /// A ready SAS token.
    SasToken {
        /// Device id (from the token's resource URI or given).
        device_id: String,
        /// The token.
        token: Secret,
    },
    /// X.509 client certificate (the TLS layer authenticates; MQTT sends no password).
    X509 {
        /// Device id.
        device_id: String,
    },
    /// A Device Provisioning Service registration: a DPS SAS token is generated per
    /// connect from the device's key (individual, or derived from the enrollment
    /// group's), or, without a key, the TLS client certificate authenticates.
    Dps {
        /// The DPS instance's id scope.
        id_scope: String,
        /// The registration id (also the MQTT client id).
        registration_id: String,
        /// The device's base64 key (already derived for a group); `None` for X.509.
        key: Option<Secret>,
        /// Whether the key was derived from an enrollment group's key.
        group: bool,
        /// Lifetime of generated tokens.
        ttl: std::time::Duration,
        /// A pinned expiry (Unix seconds) instead of now + ttl.
        expiry: Option<u64>,
    },
    /// Plain MQTT user name and password (generic brokers).
    Password {
        /// Device / client id.
        device_id: Option<String>,
        /// User name.
        username: String,
        /// Password.
        password: Secret,
    },
}

impl Credentials {
    /// How these credentials' SAS tokens age: the lifetime of generated tokens
    /// (renewable: a device key without a pinned expiry) and the fixed expiry (Unix
    /// seconds) of a given token or a pinned one.
    pub fn token_timing(&self) -> (Option<std::time::Duration>, Option<u64>) {
        match self {
            Credentials::DeviceKey {
                ttl, expiry: None, ..
            } => (Some(*ttl), None),
            Credentials::DeviceKey {
                expiry: Some(e), ..
            } => (None, Some(*e)),
            Credentials::Dps {
                key: Some(_),
                ttl,
                expiry: None,
                ..
            } => (Some(*ttl), None),
            Credentials::Dps {
                key: Some(_),
                expiry: Some(e),
                ..
            } => (None, Some(*e)),
            Credentials::SasToken { token, .. } => (
                None,
                sas::parse_sas_token(token.expose()).ok().map(|t| t.expiry),
            ),
            _ => (None, None),
        }
    }

    /// The SAS token a run started at `started` uses against `hub_host` (generated
    /// once, so every endpoint sends the same) and what a report may say about it.
    pub fn sas_for_run(
        &self,
        hub_host: &str,
        started: std::time::SystemTime,
    ) -> Option<(Secret, SasTokenInfo)> {
        let now = started
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let info = |resource: String, expiry: u64, ttl: Option<u64>| SasTokenInfo {
            resource,
            expires_at: rfc3339_unix(expiry),
            expires_in_s: (expiry as i128 - now as i128).clamp(i64::MIN as i128, i64::MAX as i128)
                as i64,
            ttl_s: ttl,
        };
        match self {
            Credentials::DeviceKey {
                device_id,
                module_id,
                key,
                ttl,
                expiry,
            } => {
                let resource = sas::resource_uri(hub_host, device_id, module_id.as_deref());
                let exp = expiry.unwrap_or_else(|| now.saturating_add(ttl.as_secs()));
                // The key was validated when the plan was built; a failure here cannot leak it.
                let token = sas::generate_sas_token(&resource, key, exp).ok()?;
                let ttl = exp.saturating_sub(now);
                Some((token.token, info(resource, exp, Some(ttl))))
            }
            Credentials::Dps {
                id_scope,
                registration_id,
                key: Some(key),
                ttl,
                expiry,
                ..
            } => {
                let exp = expiry.unwrap_or_else(|| now.saturating_add(ttl.as_secs()));
                // The key was validated when the plan was built; a failure here cannot leak it.
                let token =
                    dps::generate_dps_sas_token(id_scope, registration_id, key, exp).ok()?;
                let ttl = exp.saturating_sub(now);
                Some((token.token, info(token.resource, exp, Some(ttl))))
            }
            Credentials::SasToken { token, .. } => {
                let parsed = sas::parse_sas_token(token.expose()).ok()?;
                Some((token.clone(), info(parsed.resource, parsed.expiry, None)))
            }
            _ => None,
        }
    }

    /// The kind, as reports name it.
    pub fn kind(&self) -> &'static str {
        match self {
            Credentials::None => "none",
            Credentials::DeviceKey { .. } => "sas-key",
            Credentials::SasToken { .. } => "sas-token",
            Credentials::X509 { .. } => "x509",
            Credentials::Dps { key: Some(_), .. } => "sas-key",
            Credentials::Dps { key: None, .. } => "x509",
            Credentials::Password { .. } => "password",
        }
    }

    /// The device id, when there is an identity.
    pub fn device_id(&self) -> Option<&str> {
        match self {
            Credentials::None => None,
            Credentials::DeviceKey { device_id, .. }
            | Credentials::SasToken { device_id, .. }
            | Credentials::X509 { device_id } => Some(device_id),
            Credentials::Password { device_id, .. } => device_id.as_deref(),
            Credentials::Dps {
                registration_id, ..
            } => Some(registration_id),
        }
    }

    /// The module id, for module identities.
    pub fn module_id(&self) -> Option<&str> {
        match self {
            Credentials::DeviceKey { module_id, .. } => module_id.as_deref(),
            _ => None,
        }
    }

    /// The DPS id scope, for provisioning identities.
    pub fn id_scope(&self) -> Option<&str> {
        match self {
            Credentials::Dps { id_scope, .. } => Some(id_scope),
            _ => None,
        }
    }

    /// Every secret string these credentials hold, for leak checks and redaction.
    pub fn secrets(&self) -> Vec<&str> {
        match self {
            Credentials::DeviceKey { key, .. } => vec![key.expose()],
            Credentials::SasToken { token, .. } => vec![token.expose()],
            Credentials::Password { password, .. } => vec![password.expose()],
            Credentials::Dps { key: Some(k), .. } => vec![k.expose()],
            _ => vec![],
        }
    }
}

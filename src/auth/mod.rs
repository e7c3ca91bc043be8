//! Device identity: IoT Hub connection strings, SAS tokens, and the secret wrapper
//! that keeps keys and signatures out of every report, log line and error message.

pub mod connection_string;
pub mod sas;

pub use connection_string::{ConnectionString, ConnectionStringError};
pub use sas::{generate_sas_token, SasToken};

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
    /// The kind, as reports name it.
    pub fn kind(&self) -> &'static str {
        match self {
            Credentials::None => "none",
            Credentials::DeviceKey { .. } => "sas-key",
            Credentials::SasToken { .. } => "sas-token",
            Credentials::X509 { .. } => "x509",
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
        }
    }

    /// The module id, for module identities.
    pub fn module_id(&self) -> Option<&str> {
        match self {
            Credentials::DeviceKey { module_id, .. } => module_id.as_deref(),
            _ => None,
        }
    }

    /// Every secret string these credentials hold, for leak checks and redaction.
    pub fn secrets(&self) -> Vec<&str> {
        match self {
            Credentials::DeviceKey { key, .. } => vec![key.expose()],
            Credentials::SasToken { token, .. } => vec![token.expose()],
            Credentials::Password { password, .. } => vec![password.expose()],
            _ => vec![],
        }
    }
}

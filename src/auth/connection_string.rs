//! IoT Hub device connection strings (`HostName=...;DeviceId=...;SharedAccessKey=...`).
//! Errors name the offending key but never echo the string, which holds the device key.

use super::Secret;

/// A parsed device connection string.
#[derive(Debug, Clone)]
pub struct ConnectionString {
    /// The hub's host name.
    pub host_name: String,
    /// Device id.
    pub device_id: String,
    /// Module id (module identity strings).
    pub module_id: Option<String>,
    /// Edge gateway the device connects through, when set.
    pub gateway_host_name: Option<String>,
    /// The device's symmetric key (base64), absent for X.509 devices.
    pub shared_access_key: Option<Secret>,
    /// Named shared access policy (service-side strings; rare on devices).
    pub shared_access_key_name: Option<String>,
    /// `x509=true`: the device authenticates with a client certificate.
    pub x509: bool,
}

/// Why a connection string was refused. The text never contains the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectionStringError {
    /// The string is empty.
    #[error("malformed connection string: it is empty")]
    Empty,
    /// A part has no `=`.
    #[error("malformed connection string: part {0} is not Key=Value")]
    NotKeyValue(usize),
    /// A key appears twice.
    #[error("malformed connection string: {0} appears twice")]
    Duplicate(String),
    /// A key this tool does not know. Its text is not shown: a stray part may be the
    /// device key itself (a key with `=` padding parses as `key=value`).
    #[error("malformed connection string: part {0} has an unknown key (expected HostName, DeviceId, ModuleId, SharedAccessKey, SharedAccessKeyName, GatewayHostName, x509)")]
    UnknownKey(usize),
    /// A required key is missing.
    #[error("malformed connection string: {0} is missing")]
    Missing(&'static str),
    /// Neither a key nor x509=true.
    #[error("malformed connection string: it has neither SharedAccessKey nor x509=true")]
    NoCredential,
    /// The key is not valid base64.
    #[error("malformed connection string: SharedAccessKey is not valid base64")]
    KeyNotBase64,
    /// A value is not acceptable (e.g. an empty HostName).
    #[error("malformed connection string: {0} has an invalid value")]
    BadValue(&'static str),
}

impl std::str::FromStr for ConnectionString {
    type Err = ConnectionStringError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() {
            return Err(ConnectionStringError::Empty);
        }
        let mut host_name = None;
        let mut device_id = None;
        let mut module_id = None;
        let mut gateway = None;
        let mut key = None;
        let mut key_name = None;
        let mut x509 = None;
        for (i, part) in s.split(';').enumerate() {
            if part.trim().is_empty() {
                continue; // a trailing ';' is common
            }
            let (k, v) = part
                .split_once('=')
                .ok_or(ConnectionStringError::NotKeyValue(i + 1))?;
            let (k, v) = (k.trim(), v.trim().to_string());
            let slot = match k.to_ascii_lowercase().as_str() {
                "hostname" => &mut host_name,
                "deviceid" => &mut device_id,
                "moduleid" => &mut module_id,
                "gatewayhostname" => &mut gateway,
                "sharedaccesskey" => &mut key,
                "sharedaccesskeyname" => &mut key_name,
                "x509" => &mut x509,
                _ => return Err(ConnectionStringError::UnknownKey(i + 1)),
            };
            if slot.is_some() {
                return Err(ConnectionStringError::Duplicate(k.to_string()));
            }
            *slot = Some(v);
        }
        let host_name = host_name.ok_or(ConnectionStringError::Missing("HostName"))?;
        if host_name.is_empty() || host_name.contains(['/', ' ']) {
            return Err(ConnectionStringError::BadValue("HostName"));
        }
        let device_id = device_id.ok_or(ConnectionStringError::Missing("DeviceId"))?;
        if device_id.is_empty() {
            return Err(ConnectionStringError::BadValue("DeviceId"));
        }
        let x509 = match x509.as_deref().map(str::to_ascii_lowercase).as_deref() {
            None | Some("false") => false,
            Some("true") => true,
            Some(_) => return Err(ConnectionStringError::BadValue("x509")),
        };
        if let Some(k) = &key {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD
                .decode(k)
                .map_err(|_| ConnectionStringError::KeyNotBase64)?;
        }
        if key.is_none() && !x509 {
            return Err(ConnectionStringError::NoCredential);
        }
        Ok(ConnectionString {
            host_name,
            device_id,
            module_id: module_id.filter(|m| !m.is_empty()),
            gateway_host_name: gateway.filter(|g| !g.is_empty()),
            shared_access_key: key.map(Secret::new),
            shared_access_key_name: key_name,
            x509,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "c2VjcmV0LWtleS0xMjM0NTY3ODkwYWJjZGVmZ2hpams=";

    #[test]
    fn parses_a_device_string() {
        let cs: ConnectionString =
            format!("HostName=myhub.azure-devices.net;DeviceId=dev1;SharedAccessKey={KEY}")
                .parse()
                .unwrap();
        assert_eq!(cs.host_name, "myhub.azure-devices.net");
        assert_eq!(cs.device_id, "dev1");
        assert_eq!(cs.shared_access_key.unwrap().expose(), KEY);
        assert!(!cs.x509);
    }

    #[test]
    fn parses_module_gateway_and_x509() {
        let cs: ConnectionString =
            "HostName=h.azure-devices.net;DeviceId=d;ModuleId=m;GatewayHostName=edge.local;x509=true;"
                .parse()
                .unwrap();
        assert_eq!(cs.module_id.as_deref(), Some("m"));
        assert_eq!(cs.gateway_host_name.as_deref(), Some("edge.local"));
        assert!(cs.x509 && cs.shared_access_key.is_none());
    }

    #[test]
    fn errors_name_the_problem_and_never_the_key() {
        let cases = [
            ("", ConnectionStringError::Empty),
            (
                &format!("DeviceId=d;SharedAccessKey={KEY}") as &str,
                ConnectionStringError::Missing("HostName"),
            ),
            (
                &format!("HostName=h;SharedAccessKey={KEY}"),
                ConnectionStringError::Missing("DeviceId"),
            ),
            ("HostName=h;DeviceId=d", ConnectionStringError::NoCredential),
            (
                "HostName=h;DeviceId=d;SharedAccessKey=not*base64!",
                ConnectionStringError::KeyNotBase64,
            ),
            (
                &format!("HostName=h;DeviceId=d;SharedAccessKey={KEY};Bogus=1"),
                ConnectionStringError::UnknownKey(4),
            ),
            (
                &format!("HostName=h;DeviceId=d;{KEY}"),
                ConnectionStringError::UnknownKey(3),
            ),
            (
                &format!("HostName=h;HostName=i;DeviceId=d;SharedAccessKey={KEY}"),
                ConnectionStringError::Duplicate("HostName".into()),
            ),
            (
                "HostName=h;DeviceId=d;justtext",
                ConnectionStringError::NotKeyValue(3),
            ),
        ];
        for (input, want) in cases {
            let got = input.parse::<ConnectionString>().unwrap_err();
            assert_eq!(got, want, "{input}");
            let text = got.to_string();
            assert!(
                !text.contains(KEY) && !text.contains("not*base64"),
                "{text}"
            );
        }
    }

    #[test]
    fn debug_does_not_print_the_key() {
        let cs: ConnectionString = format!("HostName=h;DeviceId=d;SharedAccessKey={KEY}")
            .parse()
            .unwrap();
        assert!(!format!("{cs:?}").contains(KEY));
    }
}

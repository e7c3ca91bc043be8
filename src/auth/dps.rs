//! Device Provisioning Service identities: the id scope and registration id, the
//! device key derived from an enrollment group's key, and the DPS SAS token.
//!
//! The token is `SharedAccessSignature sr={resource}&sig={sig}&se={expiry}&skn=registration`
//! with resource `{idScope}/registrations/{registrationId}`, URL-encoded as the
//! Azure IoT device SDK for Python does (`urllib.parse.quote(uri, safe="")`: `/` is
//! `%2F`, a space `%20`), and sig = base64(HMAC-SHA256(base64decode(key),
//! encoded-resource + "\n" + expiry)), URL-encoded the same way.
//!
//! `skn=registration`: the DPS MQTT and HTTPS documentation says the token's policy
//! name "should be `registration`", and the C, embedded C, Node and .NET SDKs send
//! it; the Python SDK leaves it out. The key name is not part of what is signed, so
//! both forms carry the same signature and DPS accepts both; hubprobe sends the
//! documented form. `tests/dps_sas.rs` checks that the token equals the Python
//! SDK's with `&skn=registration` appended.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::sas::{SasError, SasToken};
use super::Secret;

/// The DPS API version hubprobe speaks (the Azure IoT device SDKs' default).
pub const API_VERSION: &str = "2019-03-31";

/// The global device endpoint of the public Azure cloud.
pub const GLOBAL_HOST: &str = "global.azure-devices-provisioning.net";

/// The key name DPS device tokens carry (see the module documentation).
pub const KEY_NAME: &str = "registration";

/// Longest registration id DPS accepts.
pub const MAX_REGISTRATION_ID: usize = 128;

/// Why a DPS identity is unusable. Messages never contain a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DpsIdError {
    /// The id scope is empty or not of DPS's form.
    #[error("id scope {0:?}: expected the DPS instance's id scope, like 0ne00000001 (letters and digits, at most 64)")]
    BadIdScope(String),
    /// The registration id is not of DPS's form.
    #[error("registration id {0:?}: DPS accepts at most 128 characters of letters, digits, '-', '.', '_' and ':', ending in a letter, digit or '-'")]
    BadRegistrationId(String),
}

/// Checks an id scope: 1–64 ASCII letters and digits (DPS's look like `0ne00ABCDEF`).
pub fn check_id_scope(scope: &str) -> Result<(), DpsIdError> {
    let ok =
        !scope.is_empty() && scope.len() <= 64 && scope.chars().all(|c| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(DpsIdError::BadIdScope(shorten(scope)))
    }
}

/// Checks a registration id as DPS documents it: at most 128 characters of letters
/// (case-insensitive), digits and `-` `.` `_` `:`, the last a letter, digit or `-`.
pub fn check_registration_id(id: &str) -> Result<(), DpsIdError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_REGISTRATION_ID
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | ':'))
        && id.ends_with(|c: char| c.is_ascii_alphanumeric() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(DpsIdError::BadRegistrationId(shorten(id)))
    }
}

/// A value quoted in an error: at most 80 characters, control characters escaped.
fn shorten(s: &str) -> String {
    let mut out: String = s.chars().take(80).flat_map(char::escape_default).collect();
    if s.chars().count() > 80 {
        out.push('…');
    }
    out
}

/// The resource a DPS device token is scoped to: `{idScope}/registrations/{registrationId}`.
pub fn resource(id_scope: &str, registration_id: &str) -> String {
    format!("{id_scope}/registrations/{registration_id}")
}

/// The MQTT user name of a DPS registration:
/// `{idScope}/registrations/{registrationId}/api-version=2019-03-31`.
pub fn mqtt_username(id_scope: &str, registration_id: &str) -> String {
    format!("{id_scope}/registrations/{registration_id}/api-version={API_VERSION}")
}

/// Derives a device's key from its enrollment group's key as the SDKs do:
/// base64(HMAC-SHA256(base64decode(group key), registration id)).
pub fn derive_device_key(group_key: &Secret, registration_id: &str) -> Result<Secret, SasError> {
    let key = decode_key(group_key)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes any key length");
    mac.update(registration_id.as_bytes());
    Ok(Secret::new(
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()),
    ))
}

fn decode_key(key: &Secret) -> Result<Vec<u8>, SasError> {
    base64::engine::general_purpose::STANDARD
        .decode(key.expose().trim())
        .map_err(|_| SasError::KeyNotBase64)
}

/// The DPS SAS token of `registration_id` in `id_scope`, signed with the device's
/// (individual or derived) `key`, expiring at `expiry` (Unix seconds).
pub fn generate_dps_sas_token(
    id_scope: &str,
    registration_id: &str,
    key: &Secret,
    expiry: u64,
) -> Result<SasToken, SasError> {
    let key_bytes = decode_key(key)?;
    let resource = resource(id_scope, registration_id);
    let encoded = quote(&resource);
    let mut mac = Hmac::<Sha256>::new_from_slice(&key_bytes).expect("HMAC takes any key length");
    mac.update(format!("{encoded}\n{expiry}").as_bytes());
    let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    let token = format!(
        "SharedAccessSignature sr={encoded}&sig={}&se={expiry}&skn={KEY_NAME}",
        quote(&sig)
    );
    Ok(SasToken {
        token: Secret::new(token),
        resource,
        expiry,
    })
}

/// URL-encodes like Python's `urllib.parse.quote(s, safe="")`: letters, digits and
/// `_.-~` stay, every other byte is `%XX` (a space is `%20`, not `+`).
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b'-' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "dGhpcy1pcy1hLWxhYi1kZXZpY2Uta2V5LTEyMzQ1Njc=";

    #[test]
    fn token_shape_and_resource() {
        let t = generate_dps_sas_token("0ne00000001", "dev1", &Secret::new(KEY), 1_900_000_000)
            .unwrap();
        assert_eq!(t.resource, "0ne00000001/registrations/dev1");
        let s = t.token.expose();
        assert!(
            s.starts_with("SharedAccessSignature sr=0ne00000001%2Fregistrations%2Fdev1&sig="),
            "{s}"
        );
        assert!(s.ends_with("&se=1900000000&skn=registration"), "{s}");
        // The token parses as any SAS token does (resource, expiry).
        let parsed = super::super::sas::parse_sas_token(s).unwrap();
        assert_eq!(parsed.resource, t.resource);
        assert_eq!(parsed.expiry, 1_900_000_000);
    }

    #[test]
    fn derived_keys_differ_per_device_and_are_keys() {
        let a = derive_device_key(&Secret::new(KEY), "dev1").unwrap();
        let b = derive_device_key(&Secret::new(KEY), "dev2").unwrap();
        assert_ne!(a, b);
        assert_eq!(decode_key(&a).unwrap().len(), 32);
        assert_eq!(
            derive_device_key(&Secret::new("not base64!"), "dev1").unwrap_err(),
            SasError::KeyNotBase64
        );
    }

    #[test]
    fn ids_are_checked_as_dps_does() {
        assert!(check_id_scope("0ne00000001").is_ok());
        assert!(check_id_scope("").is_err());
        assert!(check_id_scope("0ne/1").is_err());
        assert!(check_registration_id("dev-1.a_b:c").is_ok());
        assert!(check_registration_id("Dev1").is_ok());
        assert!(check_registration_id("dev1.").is_err());
        assert!(check_registration_id(&"a".repeat(129)).is_err());
        assert!(check_registration_id("a b").is_err());
        let e = check_registration_id(&"\n".repeat(200))
            .unwrap_err()
            .to_string();
        assert!(!e.contains('\n') && e.contains('…'), "{e}");
    }

    #[test]
    fn quote_matches_python() {
        assert_eq!(quote("a b/c+d=e"), "a%20b%2Fc%2Bd%3De");
        assert_eq!(quote("A-z_0.9~"), "A-z_0.9~");
    }
}

//! What the TLS phase reports: the evidence structs (serde, stable field names)
//! and the pure helpers that turn DER certificates into them.
//!
//! Kept apart from the I/O so that the report model can be read (and tested)
//! without a network: everything here is a plain function of bytes and time.

use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate, X509Name};

use crate::model::CertInfo;

/// Lowercase hex of bytes.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 0x0f) as usize] as char);
    }
    s
}

/// SHA-256 fingerprint of DER bytes, lowercase hex.
pub(crate) fn sha256_hex(der: &[u8]) -> String {
    hex(&Sha256::digest(der))
}

/// Seconds since the Unix epoch now (0 if the clock is before 1970).
pub(crate) fn unix_now() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(_) => 0,
    }
}

/// Formats Unix seconds as RFC 3339 UTC (`2025-01-31T12:00:00Z`).
///
/// Hand-rolled (Howard Hinnant's civil-from-days) so the crate needs no date
/// library for one format.
pub(crate) fn rfc3339(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{d:02}T{h:02}:{m:02}:{s:02}Z")
}

/// Days between `now` and `not_after` (Unix seconds), rounded to two decimals.
pub(crate) fn days_left(not_after: i64, now: i64) -> f64 {
    let days = (not_after - now) as f64 / 86_400.0;
    (days * 100.0).round() / 100.0
}

/// A parsed view of one certificate: the evidence plus the raw numbers the
/// classifier needs (validity as Unix seconds, issuer/subject DER).
#[derive(Debug, Clone, Default)]
pub(crate) struct ParsedCert {
    pub info: CertInfo,
    pub not_before: Option<i64>,
    pub not_after: Option<i64>,
    pub issuer_der: Vec<u8>,
    pub subject_der: Vec<u8>,
}

/// Parses one DER certificate into evidence; never fails (a parse error is
/// reported in `parse_error`).
pub(crate) fn parse_cert(der: &[u8]) -> ParsedCert {
    let sha256 = sha256_hex(der);
    match X509Certificate::from_der(der) {
        Ok((_, cert)) => {
            let nb = cert.validity().not_before.timestamp();
            let na = cert.validity().not_after.timestamp();
            ParsedCert {
                info: CertInfo {
                    subject: name_string(cert.subject()),
                    issuer: name_string(cert.issuer()),
                    sans: sans(&cert),
                    not_before: rfc3339(nb),
                    not_after: rfc3339(na),
                    sha256,
                    is_ca: cert.is_ca(),
                    serial: hex(cert.raw_serial()),
                    parse_error: None,
                },
                not_before: Some(nb),
                not_after: Some(na),
                issuer_der: cert.issuer().as_raw().to_vec(),
                subject_der: cert.subject().as_raw().to_vec(),
            }
        }
        Err(e) => ParsedCert {
            info: CertInfo {
                sha256,
                parse_error: Some(format!(
                    "cannot parse certificate: {}",
                    super::wording::x509_error(&e)
                )),
                ..CertInfo::default()
            },
            ..ParsedCert::default()
        },
    }
}

fn sans(cert: &X509Certificate<'_>) -> Vec<String> {
    let Ok(Some(ext)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    ext.value
        .general_names
        .iter()
        .filter_map(|gn| match gn {
            GeneralName::DNSName(n) => Some((*n).to_string()),
            GeneralName::IPAddress(b) => Some(format!("IP:{}", ip_string(b))),
            GeneralName::URI(u) => Some(format!("URI:{u}")),
            GeneralName::RFC822Name(e) => Some(format!("email:{e}")),
            _ => None,
        })
        .collect()
}

fn ip_string(b: &[u8]) -> String {
    if let Ok(a) = <[u8; 4]>::try_from(b) {
        std::net::Ipv4Addr::from(a).to_string()
    } else if let Ok(a) = <[u8; 16]>::try_from(b) {
        std::net::Ipv6Addr::from(a).to_string()
    } else {
        hex(b)
    }
}

/// The full distinguished name as text (`CN=..., O=...`).
pub(crate) fn name_string(name: &X509Name<'_>) -> String {
    name.to_string()
}

/// The short name used for trust-anchor matching: the first CN, else the first O,
/// else the full subject.
pub(crate) fn short_name(name: &X509Name<'_>) -> String {
    name.iter_common_name()
        .find_map(|a| a.as_str().ok().map(str::to_string))
        .or_else(|| {
            name.iter_organization()
                .find_map(|a| a.as_str().ok().map(str::to_string))
        })
        .unwrap_or_else(|| name.to_string())
}

/// Wraps the *contents* of a DER Name (as webpki `TrustAnchor::subject` stores
/// it) back into a full `SEQUENCE`, so x509-parser can read it.
pub(crate) fn wrap_name(contents: &[u8]) -> Vec<u8> {
    if contents.first() == Some(&0x30) {
        // Already a full SEQUENCE (RDN sets start with 0x31).
        return contents.to_vec();
    }
    let len = contents.len();
    let mut out = Vec::with_capacity(len + 6);
    out.push(0x30);
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(contents);
    out
}

/// Parses a full DER Name into (short name, full subject); `None` if unparseable.
pub(crate) fn parse_name(full_der: &[u8]) -> Option<(String, String)> {
    X509Name::from_der(full_der)
        .ok()
        .map(|(_, n)| (short_name(&n), name_string(&n)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_known_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59Z");
        assert_eq!(rfc3339(4_102_444_799), "2099-12-31T23:59:59Z");
    }

    #[test]
    fn days_left_rounds_and_goes_negative() {
        assert_eq!(days_left(86_400 * 10, 0), 10.0);
        assert_eq!(days_left(0, 86_400 * 3 / 2), -1.5);
    }

    #[test]
    fn hex_is_lowercase() {
        assert_eq!(hex(&[0x00, 0xAB, 0x0f]), "00ab0f");
    }

    #[test]
    fn wrap_name_short_and_long() {
        let short = vec![0x31, 0x00];
        assert_eq!(wrap_name(&short), vec![0x30, 0x02, 0x31, 0x00]);
        let long = vec![0x31; 200];
        let w = wrap_name(&long);
        assert_eq!(&w[..3], &[0x30, 0x81, 200]);
        assert_eq!(w.len(), 203);
        let full = vec![0x30, 0x00];
        assert_eq!(wrap_name(&full), full);
    }

    #[test]
    fn garbage_cert_is_reported_not_panicked() {
        let p = parse_cert(b"not a certificate");
        assert!(p.info.parse_error.is_some());
        assert_eq!(p.info.sha256.len(), 64);
    }
}

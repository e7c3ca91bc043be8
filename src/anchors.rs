//! Trust anchors matched by key: a profile pins the roots its hub chains to by
//! the SHA-256 of their SubjectPublicKeyInfo, with the name kept for display. The
//! TLS probe names the anchor that validated a chain; this module re-judges it by
//! key: expected, legacy, or an *impostor* — a root that carries a pinned name but
//! another key, as a TLS-inspecting proxy's root "DigiCert Global Root G2" would.
//! Names without a pin are still matched by name (profiles written before pins).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::model::{AnchorEvidence, EndpointReport, Evidence, Finding, Phase, Severity};

/// What a pinned root is to the hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnchorRole {
    /// The hub's certificates chain to it today.
    Expected,
    /// The hub used to chain to it (being retired).
    Legacy,
}

/// One root of a profile, by key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnchorPin {
    /// Display name (the root's subject CN).
    pub name: String,
    /// Expected or legacy.
    pub role: AnchorRole,
    /// SHA-256 of the SubjectPublicKeyInfo DER, hex (colons allowed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spki_sha256: Option<String>,
    /// A PEM or DER certificate file to take the key from (relative to the profile).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
}

/// SHA-256 hex of a DER `SEQUENCE` holding `contents` (webpki keeps the
/// SubjectPublicKeyInfo without its outer SEQUENCE).
pub fn spki_sha256_of_contents(contents: &[u8]) -> String {
    let len = contents.len();
    let mut der = Vec::with_capacity(len + 6);
    der.push(0x30);
    if len < 0x80 {
        der.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        der.push(0x80 | (bytes.len() - skip) as u8);
        der.extend_from_slice(&bytes[skip..]);
    }
    der.extend_from_slice(contents);
    sha256_hex(&der)
}

fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

/// SHA-256 hex of a certificate's SubjectPublicKeyInfo.
pub fn spki_sha256_of_cert(der: &[u8]) -> Result<String, String> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|_| "not a parseable certificate".to_string())?;
    Ok(sha256_hex(cert.tbs_certificate.subject_pki.raw))
}

fn normalize(hex: &str) -> Result<String, String> {
    let h: String = hex
        .chars()
        .filter(|c| *c != ':' && !c.is_whitespace())
        .collect::<String>()
        .to_ascii_lowercase();
    if h.len() != 64 || !h.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!(
            "spki_sha256 {hex:?} is not 64 hex digits (a SHA-256)"
        ));
    }
    Ok(h)
}

/// Checks every pin and reads the key of those given by `file` (relative to `base`).
pub fn resolve_pins(pins: &mut [AnchorPin], base: &Path) -> Result<(), String> {
    for p in pins.iter_mut() {
        if p.name.trim().is_empty() {
            return Err("[[trust.anchors]]: name is empty".into());
        }
        match (&p.spki_sha256, &p.file) {
            (Some(h), None) => p.spki_sha256 = Some(normalize(h)?),
            (None, Some(f)) => {
                let path = base.join(f);
                let bytes = crate::fsio::read_bounded(&path, crate::fsio::InputKind::CaBundle)
                    .map_err(|e| {
                        format!(
                            "[[trust.anchors]] {:?}: file {}: {e}",
                            p.name,
                            path.display()
                        )
                    })?;
                let first_pem = rustls_pemfile::certs(&mut bytes.as_slice())
                    .next()
                    .and_then(Result::ok)
                    .map(|c| c.as_ref().to_vec());
                let der = match first_pem {
                    Some(c) => c,
                    None if bytes.first() == Some(&0x30) => bytes,
                    None => {
                        return Err(format!(
                            "[[trust.anchors]] {:?}: file {} holds no certificate",
                            p.name,
                            path.display()
                        ))
                    }
                };
                p.spki_sha256 = Some(
                    spki_sha256_of_cert(&der)
                        .map_err(|e| format!("[[trust.anchors]] {:?}: {e}", p.name))?,
                );
            }
            _ => {
                return Err(format!(
                    "[[trust.anchors]] {:?}: give exactly one of spki_sha256 and file",
                    p.name
                ))
            }
        }
    }
    Ok(())
}

/// Re-judges an anchor by key against `pins` (no-op when there are none).
pub fn judge(a: &mut AnchorEvidence, pins: &[AnchorPin]) {
    let Some(key) = a.spki_sha256.as_deref() else {
        return;
    };
    if let Some(p) = pins.iter().find(|p| p.spki_sha256.as_deref() == Some(key)) {
        a.expected = p.role == AnchorRole::Expected;
        a.legacy = p.role == AnchorRole::Legacy;
        a.impostor = false;
    } else if pins
        .iter()
        .any(|p| p.name.trim().eq_ignore_ascii_case(a.name.trim()))
    {
        a.expected = false;
        a.legacy = false;
        a.impostor = true;
    }
}

/// Re-judges every TLS phase's anchor of `endpoints` by key.
pub fn judge_endpoints(endpoints: &mut [EndpointReport], pins: &[AnchorPin]) {
    if pins.is_empty() {
        return;
    }
    for e in endpoints {
        for p in e.phases.iter_mut().filter(|p| p.phase == Phase::Tls) {
            if let Some(Evidence::Tls(t)) = p.evidence.as_mut() {
                if let Some(a) = t.trust_anchor.as_mut() {
                    judge(a, pins);
                }
            }
        }
    }
}

/// One finding per impostor root, naming the endpoints whose chain ends at it.
pub fn findings(endpoints: &[EndpointReport], pins: &[AnchorPin]) -> Vec<Finding> {
    let mut by_anchor: std::collections::BTreeMap<(String, String), Vec<String>> =
        Default::default();
    for e in endpoints {
        let Some(a) = e
            .phase(Phase::Tls)
            .and_then(|p| p.evidence())
            .and_then(Evidence::tls)
            .and_then(|t| t.trust_anchor.as_ref())
            .filter(|a| a.impostor)
        else {
            continue;
        };
        by_anchor
            .entry((a.name.clone(), a.spki_sha256.clone().unwrap_or_default()))
            .or_default()
            .push(e.name.clone());
    }
    by_anchor
        .into_iter()
        .map(|((name, key), eps)| {
            let pinned: Vec<&str> = pins
                .iter()
                .filter(|p| p.name.trim().eq_ignore_ascii_case(name.trim()))
                .filter_map(|p| p.spki_sha256.as_deref())
                .collect();
            Finding {
                code: "trust_anchor_impostor".into(),
                severity: Severity::Warning,
                class: None,
                endpoints: eps,
                summary: format!(
                    "the chain ends at a root named '{name}' whose key (SPKI SHA-256 {key}) is not the real one ({})",
                    pinned.join(" or ")
                ),
                hint: "a TLS-inspecting proxy (or malware) re-signs the hub's certificates with its own root under a trusted name: devices that trust only the real roots fail, and the proxy sees the traffic. Exempt the hub's host names from TLS inspection".into(),
                iothub_error: None,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::tls::{TrustSource, TrustStore};

    /// Every pin of the built-in profiles is the key of the real root of that
    /// name, in the bundled (webpki-roots) or the system (ca-certificates) store.
    #[test]
    fn builtin_pins_are_the_real_roots_keys() {
        let bundled = TrustStore::load(TrustSource::Bundled, &[]).unwrap();
        let system = TrustStore::load(TrustSource::System, &[]).unwrap();
        for name in crate::profile::builtin_names() {
            let p = crate::profile::Profile::load(name).unwrap();
            for pin in &p.trust.anchors {
                let key = pin.spki_sha256.as_deref().unwrap();
                let same_name: Vec<_> = bundled
                    .anchors()
                    .iter()
                    .chain(system.anchors())
                    .filter(|a| a.name == pin.name)
                    .collect();
                assert!(
                    !same_name.is_empty(),
                    "{name}: no root named {:?} in webpki-roots or /etc/ssl/certs",
                    pin.name
                );
                for a in same_name {
                    assert_eq!(a.spki_sha256, key, "{name}: {:?} ({})", pin.name, a.origin);
                }
                // The names shown are the ones listed for display.
                let listed = match pin.role {
                    AnchorRole::Expected => &p.trust.expected_anchors,
                    AnchorRole::Legacy => &p.trust.legacy_anchors,
                };
                assert!(
                    listed.contains(&pin.name),
                    "{name}: {:?} not listed",
                    pin.name
                );
            }
        }
    }

    #[test]
    fn judged_by_key_not_name() {
        let pins = vec![AnchorPin {
            name: "DigiCert Global Root G2".into(),
            role: AnchorRole::Expected,
            spki_sha256: Some("aa".repeat(32)),
            file: None,
        }];
        let mut real = AnchorEvidence {
            name: "Renamed".into(),
            spki_sha256: Some("aa".repeat(32)),
            ..Default::default()
        };
        judge(&mut real, &pins);
        assert!(real.expected && !real.impostor);
        let mut fake = AnchorEvidence {
            name: "digicert global root g2".into(),
            spki_sha256: Some("bb".repeat(32)),
            expected: true,
            ..Default::default()
        };
        judge(&mut fake, &pins);
        assert!(!fake.expected && fake.impostor);
        let mut other = AnchorEvidence {
            name: "Lab Root".into(),
            spki_sha256: Some("cc".repeat(32)),
            ..Default::default()
        };
        judge(&mut other, &pins);
        assert!(!other.expected && !other.impostor);
    }

    #[test]
    fn bad_pins_are_clear_errors() {
        let mut p = vec![AnchorPin {
            name: "x".into(),
            role: AnchorRole::Expected,
            spki_sha256: Some("12".into()),
            file: None,
        }];
        assert!(resolve_pins(&mut p, Path::new("."))
            .unwrap_err()
            .contains("64 hex"));
        p[0].spki_sha256 = None;
        assert!(resolve_pins(&mut p, Path::new("."))
            .unwrap_err()
            .contains("exactly one"));
        p[0].file = Some("/nonexistent/root.pem".into());
        assert!(resolve_pins(&mut p, Path::new("."))
            .unwrap_err()
            .contains("/nonexistent/root.pem"));
    }
}

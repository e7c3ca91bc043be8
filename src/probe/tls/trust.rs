//! The trust store: which roots hubprobe trusts, and where each came from.
//!
//! A plain rustls `RootCertStore` forgets where an anchor came from and which
//! one validated a chain. When IoT Hub moved from Baltimore CyberTrust Root to
//! DigiCert Global Root G2, *which* root anchored the chain, and whether the
//! device's store had it, was the whole question; so every anchor here keeps its
//! name, subject and origin next to the webpki `TrustAnchor` used to verify.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rustls::pki_types::{CertificateDer, TrustAnchor};
use serde::Serialize;

use super::error::TlsSetupError;
use super::evidence::{parse_name, wrap_name};

pub use crate::settings::TrustSource;

/// What hubprobe remembers about one trust anchor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AnchorInfo {
    /// Short name: subject CN, else O, else the full subject. Compared with the
    /// profile's expected/legacy anchor names.
    pub name: String,
    /// Full subject distinguished name.
    pub subject: String,
    /// `system`, `bundled` or `ca-file:<path>`.
    pub origin: String,
    /// The subject Name as full DER (`SEQUENCE`), to match a chain's issuer.
    #[serde(skip)]
    pub subject_der: Vec<u8>,
    /// SHA-256 of the SubjectPublicKeyInfo (full DER), lowercase hex.
    pub spki_sha256: String,
}

impl AnchorInfo {
    /// True when this anchor's short name is one of `names` (case-insensitive).
    pub fn name_in(&self, names: &[String]) -> bool {
        names
            .iter()
            .any(|n| n.trim().eq_ignore_ascii_case(self.name.trim()))
    }
}

/// The trust anchors of one run, each with its provenance. Built once per run
/// and shared (`Arc`) by every TLS handshake.
#[derive(Debug, Clone)]
pub struct TrustStore {
    source: TrustSource,
    anchors: Vec<TrustAnchor<'static>>,
    info: Vec<AnchorInfo>,
    load_errors: Vec<String>,
}

impl TrustStore {
    /// Loads the anchors of `source` plus every file in `ca_files`.
    ///
    /// CA files come first, so when the same root is both in a CA file and in the
    /// system store, the report credits the file the user named. A CA file that
    /// is missing, unreadable or holds no certificate is an error naming the file.
    /// A system store that loads only partly keeps what loaded and records the
    /// errors (see [`TrustStore::load_errors`]); an empty store is not an error
    /// here (the handshake will then report `tls.unknown_ca` with "0 anchors").
    pub fn load(source: TrustSource, ca_files: &[PathBuf]) -> Result<TrustStore, TlsSetupError> {
        let mut store = TrustStore {
            source,
            anchors: Vec::new(),
            info: Vec::new(),
            load_errors: Vec::new(),
        };
        for path in ca_files {
            store.add_ca_file(path)?;
        }
        match source {
            TrustSource::System => store.add_system(),
            TrustSource::Bundled => {
                for ta in webpki_roots::TLS_SERVER_ROOTS {
                    store.push(ta.clone(), "bundled".to_string());
                }
            }
            TrustSource::None => {}
        }
        if store.is_empty() {
            tracing::warn!(source = %source, "trust store is empty: every server chain will be unknown_ca");
        }
        Ok(store)
    }

    fn add_system(&mut self) {
        let result = rustls_native_certs::load_native_certs();
        for err in &result.errors {
            tracing::warn!(error = %err, "error while loading the system trust store");
            self.load_errors.push(err.to_string());
        }
        for (i, der) in result.certs.iter().enumerate() {
            match webpki::anchor_from_trusted_cert(der) {
                Ok(ta) => self.push(ta.to_owned(), "system".to_string()),
                Err(e) => {
                    tracing::warn!(index = i, error = ?e, "skipping unusable system trust anchor");
                    self.load_errors.push(format!(
                        "system certificate #{i} unusable as anchor: {}",
                        super::wording::webpki_error(&e)
                    ));
                }
            }
        }
    }

    fn add_ca_file(&mut self, path: &Path) -> Result<(), TlsSetupError> {
        let certs = read_ca_file(path)?;
        let origin = format!("ca-file:{}", path.display());
        for (i, der) in certs.iter().enumerate() {
            let ta = webpki::anchor_from_trusted_cert(der).map_err(|e| {
                TlsSetupError::CaFileInvalid {
                    path: path.to_path_buf(),
                    reason: format!(
                        "certificate #{} is not usable as a trust anchor: {}",
                        i + 1,
                        super::wording::webpki_error(&e)
                    ),
                }
            })?;
            self.push(ta.to_owned(), origin.clone());
        }
        Ok(())
    }

    fn push(&mut self, ta: TrustAnchor<'static>, origin: String) {
        let subject_der = wrap_name(ta.subject.as_ref());
        let (name, subject) = parse_name(&subject_der).unwrap_or_else(|| {
            (
                "(unparseable subject)".into(),
                "(unparseable subject)".into(),
            )
        });
        let spki_sha256 =
            crate::anchors::spki_sha256_of_contents(ta.subject_public_key_info.as_ref());
        self.info.push(AnchorInfo {
            name,
            subject,
            origin,
            subject_der,
            spki_sha256,
        });
        self.anchors.push(ta);
    }

    /// Number of anchors.
    pub fn len(&self) -> usize {
        self.anchors.len()
    }

    /// True when there is no anchor at all (every chain will be unknown_ca).
    pub fn is_empty(&self) -> bool {
        self.anchors.is_empty()
    }

    /// The base source the store was built from.
    pub fn source(&self) -> TrustSource {
        self.source
    }

    /// Every anchor's name, subject and origin, in verification order.
    pub fn anchors(&self) -> &[AnchorInfo] {
        &self.info
    }

    /// Errors met while loading the system store (the store keeps what loaded).
    pub fn load_errors(&self) -> &[String] {
        &self.load_errors
    }

    /// For the report: `{"source", "total", "by_origin": {origin: count}, "load_errors"}`.
    pub fn summary(&self) -> serde_json::Value {
        let mut by_origin: BTreeMap<&str, usize> = BTreeMap::new();
        for a in &self.info {
            *by_origin.entry(a.origin.as_str()).or_default() += 1;
        }
        serde_json::json!({
            "source": self.source.as_str(),
            "total": self.len(),
            "by_origin": by_origin,
            "load_errors": self.load_errors,
        })
    }

    /// The webpki anchors, in the same order as [`TrustStore::anchors`].
    pub(crate) fn webpki_anchors(&self) -> &[TrustAnchor<'static>] {
        &self.anchors
    }

    /// The info of the anchor at `index` of [`TrustStore::webpki_anchors`].
    pub(crate) fn info_at(&self, index: usize) -> Option<&AnchorInfo> {
        self.info.get(index)
    }

    /// Anchors whose subject equals `name_der` (a full DER Name).
    pub(crate) fn with_subject<'a>(
        &'a self,
        name_der: &'a [u8],
    ) -> impl Iterator<Item = &'a AnchorInfo> + 'a {
        self.info.iter().filter(move |a| a.subject_der == name_der)
    }
}

/// Reads a CA file: PEM `CERTIFICATE` blocks (a bundle is fine) or one DER cert.
fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let bytes =
        crate::fsio::read_bounded(path, crate::fsio::InputKind::CaBundle).map_err(|problem| {
            TlsSetupError::CaFileRead {
                path: path.to_path_buf(),
                problem,
            }
        })?;
    let mut certs = Vec::new();
    for item in rustls_pemfile::read_all(&mut bytes.as_slice()) {
        match item {
            Ok(rustls_pemfile::Item::X509Certificate(der)) => certs.push(der),
            Ok(_) => {} // keys, CRLs ...: not anchors, ignored
            Err(e) => {
                return Err(TlsSetupError::CaFileInvalid {
                    path: path.to_path_buf(),
                    reason: super::wording::pem_error(&e),
                })
            }
        }
    }
    if certs.is_empty() && bytes.first() == Some(&0x30) {
        certs.push(CertificateDer::from(bytes));
    }
    if certs.is_empty() {
        return Err(TlsSetupError::CaFileNoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trust_source_parses() {
        assert_eq!("System".parse::<TrustSource>(), Ok(TrustSource::System));
        assert_eq!("bundled".parse::<TrustSource>(), Ok(TrustSource::Bundled));
        assert_eq!("none".parse::<TrustSource>(), Ok(TrustSource::None));
        assert!("x".parse::<TrustSource>().is_err());
    }

    #[test]
    fn bundled_store_has_named_anchors() {
        let s = TrustStore::load(TrustSource::Bundled, &[]).expect("bundled loads");
        assert!(s.len() > 50);
        assert!(s
            .anchors()
            .iter()
            .any(|a| a.name == "DigiCert Global Root G2" && a.origin == "bundled"));
        assert!(s.anchors().iter().all(|a| !a.subject_der.is_empty()));
        assert_eq!(s.summary()["by_origin"]["bundled"], s.len());
    }

    #[test]
    fn missing_ca_file_names_the_file() {
        let p = PathBuf::from("/nonexistent/hubprobe-test-ca.pem");
        let err = TrustStore::load(TrustSource::None, std::slice::from_ref(&p)).unwrap_err();
        assert!(err
            .to_string()
            .contains("/nonexistent/hubprobe-test-ca.pem"));
    }

    #[test]
    fn name_matching_is_case_insensitive() {
        let a = AnchorInfo {
            name: "DigiCert Global Root G2".into(),
            subject: String::new(),
            origin: "bundled".into(),
            subject_der: vec![],
            spki_sha256: String::new(),
        };
        assert!(a.name_in(&["digicert global root g2".into()]));
        assert!(!a.name_in(&["Baltimore CyberTrust Root".into()]));
    }
}

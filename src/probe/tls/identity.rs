//! The device's X.509 identity (client certificate + private key) for hubs that
//! authenticate devices by certificate.
//!
//! The key is parsed once, checked against the certificate, and from then on only
//! lives inside a rustls signing key: this type has no accessor for it, its
//! `Debug` shows the certificate only, and every load error is built from fixed
//! texts so no byte of the key file can reach a message or a log.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

use super::error::TlsSetupError;
use super::evidence::parse_cert;
use super::pem::PemProblem;
use crate::model::ClientCertEvidence;

/// A loaded client identity: certificate chain and signing key.
#[derive(Clone)]
pub struct ClientIdentity {
    certified: Arc<CertifiedKey>,
    subject: String,
    sha256: String,
}

impl fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientIdentity")
            .field("subject", &self.subject)
            .field("sha256", &self.sha256)
            .field("chain_len", &self.certified.cert.len())
            .finish_non_exhaustive()
    }
}

impl ClientIdentity {
    /// Loads a PEM certificate chain (leaf first) and a PEM private key
    /// (PKCS#8, PKCS#1 or SEC1), and checks that the key belongs to the leaf.
    ///
    /// Errors name the file and the problem, never the key's content.
    pub fn load(cert: &Path, key: &Path) -> Result<ClientIdentity, TlsSetupError> {
        let chain = read_cert_chain(cert)?;
        let key_der = read_private_key(key)?;
        let provider = rustls::crypto::ring::default_provider();
        let signing_key = provider
            .key_provider
            .load_private_key(key_der)
            .map_err(|_| TlsSetupError::KeyFileInvalid {
                path: key.to_path_buf(),
                reason:
                    "the key is corrupt or not a supported type (RSA, ECDSA P-256/P-384, Ed25519)",
            })?;
        let certified = CertifiedKey::new(chain, signing_key);
        match certified.keys_match() {
            Ok(()) => {}
            Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
            Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
                return Err(TlsSetupError::KeyMismatch {
                    cert: cert.to_path_buf(),
                    key: key.to_path_buf(),
                })
            }
            Err(e) => {
                return Err(TlsSetupError::CertFileInvalid {
                    path: cert.to_path_buf(),
                    reason: format!(
                        "the leaf certificate cannot be parsed: {}",
                        super::wording::rustls_error(&e)
                    ),
                })
            }
        }
        let leaf = parse_cert(certified.cert[0].as_ref());
        if let Some(err) = leaf.info.parse_error {
            return Err(TlsSetupError::CertFileInvalid {
                path: cert.to_path_buf(),
                reason: err,
            });
        }
        Ok(ClientIdentity {
            subject: leaf.info.subject,
            sha256: leaf.info.sha256,
            certified: Arc::new(certified),
        })
    }

    /// Subject distinguished name of the leaf certificate (for the report).
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// SHA-256 fingerprint of the leaf certificate, lowercase hex. IoT Hub's
    /// self-signed device authentication registers exactly this thumbprint.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// The leaf certificate's DER (for its validity in the clock verdict).
    pub fn leaf_der(&self) -> &[u8] {
        self.certified.cert[0].as_ref()
    }

    /// Number of certificates in the chain (leaf included).
    pub fn chain_len(&self) -> usize {
        self.certified.cert.len()
    }

    /// What the report shows about this identity.
    pub fn evidence(&self) -> ClientCertEvidence {
        ClientCertEvidence {
            subject: self.subject.clone(),
            sha256: self.sha256.clone(),
        }
    }

    /// The chain and signing key, for rustls.
    pub(crate) fn certified_key(&self) -> Arc<CertifiedKey> {
        Arc::clone(&self.certified)
    }
}

fn read_cert_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let path_buf = path.to_path_buf();
    super::pem::read_certificates(path).map_err(|p| match p {
        PemProblem::Read(problem) => TlsSetupError::CertFileRead {
            path: path_buf,
            problem,
        },
        PemProblem::NoCertificate => TlsSetupError::CertFileNoCertificate { path: path_buf },
        _ => TlsSetupError::CertFileInvalid {
            path: path_buf,
            reason: super::pem::MALFORMED.to_string(),
        },
    })
}

fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsSetupError> {
    let path_buf = path.to_path_buf();
    super::pem::read_private_key(path).map_err(|p| match p {
        PemProblem::Read(problem) => TlsSetupError::KeyFileRead {
            path: path_buf,
            problem,
        },
        PemProblem::EncryptedKey => TlsSetupError::KeyFileInvalid {
            path: path_buf,
            reason:
                "the key is encrypted (PKCS#8 with a passphrase); hubprobe needs an unencrypted key",
        },
        PemProblem::NoKey | PemProblem::NoCertificate => {
            TlsSetupError::KeyFileNoKey { path: path_buf }
        }
        PemProblem::Malformed => TlsSetupError::KeyFileInvalid {
            path: path_buf,
            reason: super::pem::MALFORMED,
        },
    })
}

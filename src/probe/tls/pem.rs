//! PEM files of certificates and private keys, read once for every caller (the
//! device identity, the reflector's server identity): bounded reads, and one
//! reason for each way a file can be unusable. Callers wrap the reason in their
//! own error with the option that named the file.

use std::path::Path;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::fsio::{read_bounded, InputFileError, InputKind};

/// Why a PEM file cannot be used. Never holds the file's content.
#[derive(Debug)]
pub enum PemProblem {
    /// It could not be read (missing, unreadable, not a regular file, too large).
    Read(InputFileError),
    /// Bad base64 or a missing END line.
    Malformed,
    /// No certificate in a certificate file.
    NoCertificate,
    /// No supported private key in a key file.
    NoKey,
    /// The key is encrypted (PKCS#8 with a passphrase).
    EncryptedKey,
}

/// What a malformed file is told.
pub const MALFORMED: &str = "malformed PEM (bad base64 or a missing END line)";

/// Every certificate of a PEM file, in file order (a combined PEM may also hold
/// the key; it is not read from here).
pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, PemProblem> {
    let bytes = read_bounded(path, InputKind::Pem).map_err(PemProblem::Read)?;
    let mut chain = Vec::new();
    for item in rustls_pemfile::read_all(&mut bytes.as_slice()) {
        match item {
            Ok(rustls_pemfile::Item::X509Certificate(der)) => chain.push(der),
            Ok(_) => {}
            Err(_) => return Err(PemProblem::Malformed),
        }
    }
    if chain.is_empty() {
        return Err(PemProblem::NoCertificate);
    }
    Ok(chain)
}

/// The first private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, PemProblem> {
    let bytes = read_bounded(path, InputKind::Pem).map_err(PemProblem::Read)?;
    for item in rustls_pemfile::read_all(&mut bytes.as_slice()) {
        match item {
            Ok(rustls_pemfile::Item::Pkcs8Key(k)) => return Ok(PrivateKeyDer::Pkcs8(k)),
            Ok(rustls_pemfile::Item::Pkcs1Key(k)) => return Ok(PrivateKeyDer::Pkcs1(k)),
            Ok(rustls_pemfile::Item::Sec1Key(k)) => return Ok(PrivateKeyDer::Sec1(k)),
            Ok(_) => {}
            Err(_) => return Err(PemProblem::Malformed),
        }
    }
    let encrypted = b"-----BEGIN ENCRYPTED PRIVATE KEY-----";
    if bytes.windows(encrypted.len()).any(|w| w == encrypted) {
        return Err(PemProblem::EncryptedKey);
    }
    Err(PemProblem::NoKey)
}

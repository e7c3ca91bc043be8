//! Errors of the TLS *setup* (loading trust anchors and the device identity).
//!
//! These are `Err`s because they mean hubprobe was given unusable input (a
//! missing CA file, a key that does not match its certificate), not that the
//! network misbehaved: probe outcomes are data, setup failures are errors.
//! Messages name the file and the problem and never contain key material.

use std::path::PathBuf;

use crate::fsio::InputFileError;

/// Why a trust store or client identity could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// A `--ca-file` could not be read (missing, unreadable, a directory).
    #[error("cannot read CA file {} ({}): {problem}", path.display(), crate::settings::Setting::CaFile)]
    CaFileRead {
        /// The file.
        path: PathBuf,
        /// Why (an OS message, not a regular file, too large; never content).
        problem: InputFileError,
    },
    /// A `--ca-file` holds no certificate (no PEM `CERTIFICATE` block, not DER).
    #[error("CA file {} contains no certificate (expected PEM 'BEGIN CERTIFICATE' blocks or one DER certificate)", path.display())]
    CaFileNoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// A `--ca-file` is malformed or holds a certificate unusable as trust anchor.
    #[error("CA file {} is invalid: {reason}", path.display())]
    CaFileInvalid {
        /// The file.
        path: PathBuf,
        /// What is wrong (public data only: this is a CA certificate file).
        reason: String,
    },
    /// The client certificate file could not be read.
    #[error("cannot read client certificate file {} ({}): {problem}", path.display(), crate::settings::Setting::Cert)]
    CertFileRead {
        /// The file.
        path: PathBuf,
        /// Why (an OS message, not a regular file, too large; never content).
        problem: InputFileError,
    },
    /// The client certificate file holds no PEM certificate.
    #[error("client certificate file {} contains no PEM certificate", path.display())]
    CertFileNoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The client certificate file is malformed.
    #[error("client certificate file {} is invalid: {reason}", path.display())]
    CertFileInvalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The private key file could not be read.
    #[error("cannot read private key file {} ({}): {problem}", path.display(), crate::settings::Setting::Key)]
    KeyFileRead {
        /// The file.
        path: PathBuf,
        /// Why (an OS message, not a regular file, too large; never content).
        problem: InputFileError,
    },
    /// The private key file holds no supported PEM private key.
    #[error("private key file {} contains no PEM private key (expected 'PRIVATE KEY' (PKCS#8), 'RSA PRIVATE KEY' (PKCS#1) or 'EC PRIVATE KEY' (SEC1))", path.display())]
    KeyFileNoKey {
        /// The file.
        path: PathBuf,
    },
    /// The private key file is malformed, encrypted or of an unsupported type.
    ///
    /// The reason is a fixed text chosen by hubprobe, never derived from the
    /// file's bytes, so it cannot carry key material.
    #[error("private key file {} is unusable: {reason}", path.display())]
    KeyFileInvalid {
        /// The file.
        path: PathBuf,
        /// A fixed description of the problem.
        reason: &'static str,
    },
    /// The private key does not belong to the certificate.
    #[error("private key {} does not match the certificate in {} (their public keys differ)", key.display(), cert.display())]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
}

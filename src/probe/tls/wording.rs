//! Plain words for the TLS libraries' errors. rustls, webpki and rustls-pemfile
//! describe many failures only by a Rust variant name (`TrailingData(SignedData)`,
//! `MaximumPathDepthExceeded`, `InvalidCharacter(33)`); users get a sentence (the
//! exact variant stays in the report's evidence, e.g. `tls.verify_error`).
//! Classification never reads these strings: it matches the typed errors.

use std::fmt::Debug;
use std::io;

use rustls::{InvalidMessage, PeerIncompatible};

/// A variant name as lower-case words: `MaximumPathDepthExceeded` →
/// "maximum path depth exceeded", `TrailingData(SignedData)` → "trailing data
/// (signed data)". For variants without a sentence of their own.
pub fn words(value: &dyn Debug) -> String {
    let full = format!("{value:?}");
    // A struct variant's fields (`CrlExpired { time: ... }`) are noise here.
    let debug = full.split(" {").next().unwrap_or_default();
    let mut out = String::with_capacity(debug.len() + 8);
    let mut prev: Option<char> = None;
    for c in debug.chars() {
        if c.is_ascii_uppercase() {
            if prev.is_some_and(|p| p.is_ascii_lowercase() || p.is_ascii_digit()) {
                out.push(' ');
            }
            out.push(c.to_ascii_lowercase());
        } else if c == '"' {
            // Debug quotes strings; the words read better without them.
        } else {
            out.push(c);
        }
        prev = Some(c);
    }
    out.replace("  ", " ")
}

/// A certificate-verification or certificate-parsing error from webpki, in words.
pub fn webpki_error(err: &webpki::Error) -> String {
    use webpki::Error as W;
    match err {
        W::BadDer => "it is not a well-formed DER certificate".to_string(),
        W::BadDerTime => "a date in it is malformed".to_string(),
        W::TrailingData(_) => "it has extra bytes after its end (malformed DER)".to_string(),
        W::CaUsedAsEndEntity => "a CA certificate is used as the server's certificate".to_string(),
        W::EndEntityUsedAsCa => {
            "a server (end-entity) certificate is used to sign another".to_string()
        }
        W::CertExpired { .. } => "a certificate has expired".to_string(),
        W::CertNotValidYet { .. } => "a certificate is not valid yet".to_string(),
        W::CertNotValidForName(_) => "the certificate is not valid for this name".to_string(),
        W::CertRevoked => "a certificate is revoked".to_string(),
        W::InvalidCertValidity => "its validity period is malformed (ends before it starts)".to_string(),
        W::InvalidSerialNumber => "its serial number is malformed".to_string(),
        W::InvalidSignatureForPublicKey => {
            "a signature in the chain does not verify with the issuer's key".to_string()
        }
        W::MaximumPathDepthExceeded => {
            "the chain is longer than hubprobe follows (more than 6 certificates)".to_string()
        }
        W::MaximumSignatureChecksExceeded | W::MaximumPathBuildCallsExceeded => {
            "building the chain took more signature checks than hubprobe allows (a huge or looping chain)".to_string()
        }
        W::MaximumNameConstraintComparisonsExceeded => {
            "checking the name constraints took more comparisons than allowed".to_string()
        }
        W::NameConstraintViolation => "a name violates a CA's name constraints".to_string(),
        W::PathLenConstraintViolated => {
            "the chain is longer than a CA's path length constraint allows".to_string()
        }
        W::RequiredEkuNotFoundContext(_) => {
            "the certificate is not allowed for TLS server authentication (extended key usage)"
                .to_string()
        }
        W::EmptyEkuExtension => "its extended key usage extension is empty".to_string(),
        W::SignatureAlgorithmMismatch => {
            "its signature algorithm fields disagree with each other".to_string()
        }
        W::UnknownIssuer => "its issuer is not a trusted root".to_string(),
        W::UnsupportedCertVersion => "it is not an X.509 version 3 certificate".to_string(),
        W::UnsupportedCriticalExtension => {
            "it has a critical extension hubprobe does not understand".to_string()
        }
        W::UnsupportedSignatureAlgorithmContext(_)
        | W::UnsupportedSignatureAlgorithmForPublicKeyContext(_) => {
            "it is signed with an algorithm hubprobe does not support".to_string()
        }
        W::ExtensionValueInvalid | W::MalformedExtensions => {
            "an extension in it is malformed".to_string()
        }
        W::MalformedDnsIdentifier | W::MalformedNameConstraint => {
            "a name in it is malformed".to_string()
        }
        W::UnsupportedNameType => "it uses a name type hubprobe does not support".to_string(),
        other => words(other),
    }
}

/// A malformed TLS message, in words.
pub fn invalid_message(m: &InvalidMessage) -> String {
    use InvalidMessage as M;
    match m {
        M::InvalidContentType => "the first bytes are not a TLS record".to_string(),
        M::UnknownProtocolVersion => "the record carries an unknown protocol version".to_string(),
        M::MessageTooLarge => "a TLS record is larger than TLS allows".to_string(),
        M::MessageTooShort => "a TLS message is cut short".to_string(),
        M::HandshakePayloadTooLarge | M::CertificatePayloadTooLarge => {
            "a handshake message is larger than 64 KiB".to_string()
        }
        M::MissingData(what) => format!("a {} is incomplete", words(what)),
        M::TrailingData(what) => format!("a {} has extra bytes at its end", words(what)),
        M::UnexpectedMessage(what) => format!("an unexpected {}", words(what)),
        M::InvalidCcs => "a malformed ChangeCipherSpec".to_string(),
        M::InvalidEmptyPayload => "an empty message where one is required".to_string(),
        M::InvalidServerName => "a malformed server name".to_string(),
        M::DuplicateExtension(_) => "an extension appears twice".to_string(),
        M::IllegalEmptyList(what) => format!("an empty {} list", words(what)),
        other => words(other),
    }
}

/// Missing common ground between the server and hubprobe, in words.
pub fn peer_incompatible(p: &PeerIncompatible) -> String {
    use PeerIncompatible as P;
    match p {
        P::NoCipherSuitesInCommon => "no cipher suite in common".to_string(),
        P::NoKxGroupsInCommon => "no key-exchange group in common".to_string(),
        P::NoSignatureSchemesInCommon => "no signature scheme in common".to_string(),
        P::ServerDoesNotSupportTls12Or13 => {
            "the server supports neither TLS 1.2 nor 1.3".to_string()
        }
        P::ServerTlsVersionIsDisabledByOurConfig => {
            "the server chose a TLS version this run does not offer".to_string()
        }
        P::SupportedVersionsExtensionRequired
        | P::Tls12NotOffered
        | P::Tls12NotOfferedOrEnabled => {
            "the server and hubprobe support no common TLS version".to_string()
        }
        other => words(other),
    }
}

/// A protocol violation by the server, in words (rustls names each of dozens of
/// violations by a variant).
pub fn peer_misbehaved(p: &rustls::PeerMisbehaved) -> String {
    words(p)
}

/// Any rustls error, in words (the typed parts through the functions above; rustls's
/// own text for the rest, which is already a sentence).
pub fn rustls_error(err: &rustls::Error) -> String {
    use rustls::Error as E;
    match err {
        E::InvalidMessage(m) => format!("malformed TLS message: {}", invalid_message(m)),
        E::PeerIncompatible(p) => format!("no common TLS parameters: {}", peer_incompatible(p)),
        E::PeerMisbehaved(p) => format!("TLS protocol violation: {}", peer_misbehaved(p)),
        E::InvalidCertificate(c) => format!("invalid certificate: {}", words(c)),
        E::InappropriateMessage { got_type, .. } => {
            format!("unexpected TLS message: {}", words(got_type))
        }
        E::InappropriateHandshakeMessage { got_type, .. } => {
            format!("unexpected TLS handshake message: {}", words(got_type))
        }
        other => other.to_string(),
    }
}

/// An X.509 parsing error from x509-parser (whose text is `Parsing Error:
/// Der(...)`), in words.
pub fn x509_error(err: &x509_parser::nom::Err<x509_parser::error::X509Error>) -> String {
    match err {
        x509_parser::nom::Err::Incomplete(_) => "the certificate is cut short".to_string(),
        x509_parser::nom::Err::Error(e) | x509_parser::nom::Err::Failure(e) => {
            format!("malformed X.509: {}", words(e))
        }
    }
}

/// A PEM parsing error from rustls-pemfile (an `io::Error` whose text is a Rust
/// variant for base64 problems), in words. Never quotes the file's bytes.
pub fn pem_error(err: &io::Error) -> String {
    let text = err.to_string();
    if let Some(byte) = text
        .strip_prefix("InvalidCharacter(")
        .and_then(|r| r.strip_suffix(')'))
        .and_then(|n| n.parse::<u8>().ok())
    {
        let shown = if byte.is_ascii_graphic() {
            format!("'{}' (byte {byte})", byte as char)
        } else {
            format!("byte {byte}")
        };
        return format!("bad base64: the character {shown} is not allowed in a PEM block");
    }
    if text.contains("InvalidTrailingPadding") {
        return "bad base64: wrong '=' padding at the end of a PEM block".to_string();
    }
    if text.starts_with("section end") {
        return "a PEM block has no END line".to_string();
    }
    if text.starts_with("illegal section start") {
        return "a malformed PEM BEGIN line".to_string();
    }
    if text.contains("SectionTooLarge") {
        return "a PEM block is too large".to_string();
    }
    "malformed PEM (bad base64 or a missing END line)".to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variant_names_become_words() {
        assert_eq!(
            words(&webpki::Error::MaximumPathDepthExceeded),
            "maximum path depth exceeded"
        );
        let m = InvalidMessage::TrailingData("ServerHelloPayload");
        assert_eq!(
            invalid_message(&m),
            "a server hello payload has extra bytes at its end"
        );
    }

    #[test]
    fn webpki_errors_are_sentences() {
        let e = webpki_error(&webpki::Error::TrailingData(webpki::DerTypeId::SignedData));
        assert!(e.starts_with("it has extra bytes"), "{e}");
        assert!(
            !e.contains("SignedData") && !e.contains("TrailingData"),
            "{e}"
        );
        let e = webpki_error(&webpki::Error::MaximumPathDepthExceeded);
        assert!(e.contains("longer than") && !e.contains("Maximum"), "{e}");
        // Variants without a sentence of their own still read as words.
        let e = webpki_error(&webpki::Error::CrlExpired {
            time: rustls::pki_types::UnixTime::since_unix_epoch(std::time::Duration::from_secs(1)),
            next_update: rustls::pki_types::UnixTime::since_unix_epoch(
                std::time::Duration::from_secs(0),
            ),
        });
        assert_eq!(e, "crl expired");
    }

    #[test]
    fn pem_errors_name_the_bad_character_not_a_variant() {
        let e = io::Error::new(io::ErrorKind::InvalidData, "InvalidCharacter(33)");
        let w = pem_error(&e);
        assert!(w.contains("'!'") && w.contains("base64"), "{w}");
        assert!(!w.contains("InvalidCharacter"), "{w}");
        let e = io::Error::new(io::ErrorKind::InvalidData, "InvalidCharacter(7)");
        assert!(pem_error(&e).contains("byte 7"));
    }
}

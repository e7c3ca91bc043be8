//! Unit tests of the pure parts: classification and naming.

use super::*;

fn ctx() -> Context {
    Context {
        server_name: "hub.example".into(),
        ..Context::default()
    }
}

#[test]
fn protocol_version_alert_and_incompatibility() {
    let (c, m) = classify_rustls(
        &rustls::Error::AlertReceived(AlertDescription::ProtocolVersion),
        &ctx(),
    );
    assert_eq!(c, FailureClass::TlsProtocolVersion);
    assert!(m.contains("protocol_version"), "{m}");
    let (c, _) = classify_rustls(
        &rustls::Error::PeerIncompatible(PeerIncompatible::ServerDoesNotSupportTls12Or13),
        &ctx(),
    );
    assert_eq!(c, FailureClass::TlsProtocolVersion);
    let (c, _) = classify_rustls(
        &rustls::Error::PeerIncompatible(PeerIncompatible::NoCipherSuitesInCommon),
        &ctx(),
    );
    assert_eq!(c, FailureClass::TlsHandshakeFailure);
}

#[test]
fn client_auth_alerts_name_the_problem() {
    let mut c = ctx();
    c.client_cert_requested = true;
    let (class, m) = classify_rustls(
        &rustls::Error::AlertReceived(AlertDescription::CertificateRequired),
        &c,
    );
    assert_eq!(class, FailureClass::TlsHandshakeFailure);
    assert!(
        m.contains("none was sent") && m.contains("certificate_required"),
        "{m}"
    );
    c.client_cert_sent = true;
    let (_, m) = classify_rustls(
        &rustls::Error::AlertReceived(AlertDescription::BadCertificate),
        &c,
    );
    assert!(
        m.contains("rejected the client certificate") && m.contains("bad_certificate"),
        "{m}"
    );
}

#[test]
fn garbage_is_not_tls_only_before_tls_was_seen() {
    let err = rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType);
    assert_eq!(classify_rustls(&err, &ctx()).0, FailureClass::TlsNotTls);
    let mut c = ctx();
    c.tls_seen = true;
    assert_eq!(
        classify_rustls(&err, &c).0,
        FailureClass::TlsHandshakeFailure
    );
}

#[test]
fn library_errors_reach_users_as_words_not_variant_names() {
    let raw = [
        "InvalidContentType",
        "MaximumPathDepthExceeded",
        "TrailingData(",
        "NoCipherSuitesInCommon",
        "BadDer",
    ];
    let messages = [
        classify_rustls(
            &rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType),
            &ctx(),
        )
        .1,
        classify_rustls(
            &rustls::Error::PeerIncompatible(PeerIncompatible::NoCipherSuitesInCommon),
            &ctx(),
        )
        .1,
        classify_rustls(
            &rustls::Error::InvalidMessage(rustls::InvalidMessage::TrailingData(
                "CertificatePayload",
            )),
            &ctx(),
        )
        .1,
        wording::webpki_error(&webpki::Error::MaximumPathDepthExceeded),
        wording::webpki_error(&webpki::Error::TrailingData(webpki::DerTypeId::SignedData)),
        wording::webpki_error(&webpki::Error::BadDer),
    ];
    for m in &messages {
        for r in raw {
            assert!(!m.contains(r), "{m:?} contains {r}");
        }
    }
}

#[test]
fn an_over_large_handshake_message_is_message_too_large_whenever_it_comes() {
    for m in [
        rustls::InvalidMessage::HandshakePayloadTooLarge,
        rustls::InvalidMessage::CertificatePayloadTooLarge,
    ] {
        for seen in [false, true] {
            let mut c = ctx();
            c.tls_seen = seen;
            let (class, msg) = classify_rustls(&rustls::Error::InvalidMessage(m), &c);
            assert_eq!(class, FailureClass::TlsMessageTooLarge, "{m:?} {seen}");
            assert!(msg.contains("64 KiB"), "{msg}");
        }
    }
}

#[test]
fn io_errors_use_kind_and_inner_rustls_error() {
    let eof = io::Error::new(io::ErrorKind::UnexpectedEof, "tls handshake eof");
    assert_eq!(classify_io(&eof, &ctx()).0, FailureClass::TlsClosed);
    let rst = io::Error::from(io::ErrorKind::ConnectionReset);
    assert_eq!(classify_io(&rst, &ctx()).0, FailureClass::TlsReset);
    let wrapped = io::Error::new(
        io::ErrorKind::InvalidData,
        rustls::Error::AlertReceived(AlertDescription::ProtocolVersion),
    );
    assert_eq!(
        classify_io(&wrapped, &ctx()).0,
        FailureClass::TlsProtocolVersion
    );
    let other = io::Error::other("weird");
    assert_eq!(
        classify_io(&other, &ctx()).0,
        FailureClass::TlsHandshakeFailure
    );
}

#[test]
fn verify_errors_classify_by_type() {
    let trust = TrustStore::load(TrustSource::None, &[]).expect("empty store");
    let t = rustls::pki_types::UnixTime::since_unix_epoch(Duration::from_secs(1_700_000_000));
    let cases = [
        (webpki::Error::UnknownIssuer, FailureClass::TlsUnknownCa),
        (
            webpki::Error::CertExpired {
                time: t,
                not_after: t,
            },
            FailureClass::TlsExpired,
        ),
        (
            webpki::Error::CertNotValidYet {
                time: t,
                not_before: t,
            },
            FailureClass::TlsNotYetValid,
        ),
        (webpki::Error::BadDer, FailureClass::TlsHandshakeFailure),
    ];
    for (err, want) in cases {
        let (got, msg) = classify_verify(&err, &[], &trust, "hub.example");
        assert_eq!(got, want, "{err:?}: {msg}");
        assert!(!msg.is_empty());
    }
    assert_eq!(
        webpki_error_name(&webpki::Error::UnknownIssuer),
        "UnknownIssuer"
    );
    assert_eq!(
        webpki_error_name(&webpki::Error::CertExpired {
            time: t,
            not_after: t
        }),
        "CertExpired"
    );
}

#[test]
fn names() {
    assert_eq!(
        alert_name(AlertDescription::CertificateRequired),
        "certificate_required"
    );
    assert_eq!(alert_name(AlertDescription::UnknownCA), "unknown_ca");
    assert_eq!(version_name(ProtocolVersion::TLSv1_3), "TLSv1.3");
    assert_eq!(
        suite_name(rustls::CipherSuite::TLS13_AES_256_GCM_SHA384),
        "TLS13_AES_256_GCM_SHA384"
    );
}

#[test]
fn server_names() {
    assert!(matches!(
        parse_server_name("127.0.0.1"),
        Ok(ServerName::IpAddress(_))
    ));
    assert!(matches!(
        parse_server_name("[::1]"),
        Ok(ServerName::IpAddress(_))
    ));
    assert!(matches!(
        parse_server_name("hub.azure-devices.net"),
        Ok(ServerName::DnsName(_))
    ));
    assert!(parse_server_name("not a name").is_err());
}

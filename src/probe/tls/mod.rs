//! TLS phase: the handshake to the hub, its certificate verification and the
//! evidence an operator needs when it fails.
//!
//! The probe verifies the server itself (module `verify`) instead of using the
//! stock rustls verifier, because the question after "did TLS work?" is "which
//! root anchored the chain, and is it the one the hub moved to?" (IoT Hub's
//! 2023 move from Baltimore CyberTrust Root to DigiCert Global Root G2 broke
//! devices whose store lacked G2). Failures are classified where they are seen:
//! from the typed webpki error for verification, from the typed `rustls::Error`
//! (alerts, malformed records) for the handshake, and from the `io::ErrorKind`
//! for closes and resets — never from error strings.
//!
//! Entry points: build a [`TrustStore`] (and optionally a [`ClientIdentity`])
//! once per run, then call [`handshake`] on each connected stream.

mod error;
mod evidence;
mod identity;
pub mod pem;
mod trust;
mod verify;
mod wording;

use std::fmt;
use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::Resumption;
use rustls::pki_types::ServerName;
use rustls::{AlertDescription, ClientConfig, InvalidMessage, PeerIncompatible, ProtocolVersion};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::{stream_error_kind, Stopwatch, StreamFault};
use crate::model::{AnchorEvidence, FailureClass, Phase, PhaseResult, TlsEvidence};

pub use error::TlsSetupError;
pub use identity::ClientIdentity;
pub use trust::{AnchorInfo, TrustSource, TrustStore};

use evidence::{days_left, parse_cert, unix_now, ParsedCert};
use verify::{lock, Record, RecordingResolver, RecordingVerifier, SharedRecord, TicketObserver};

/// What one TLS handshake should do.
#[derive(Debug, Clone)]
pub struct TlsOptions {
    /// The hub's host name (or an IP literal): sent as SNI and verified against
    /// the certificate's SANs. An IP literal is verified against IP SANs and no
    /// SNI is sent.
    pub server_name: String,
    /// ALPN protocols to offer, in preference order (e.g. `x-amzn-mqtt-ca` for
    /// AWS IoT on 443); empty offers none.
    pub alpn: Vec<String>,
    /// Bound on the whole phase (handshake plus the TLS 1.3 client-auth check).
    pub timeout: Duration,
    /// Anchor names the hub profile expects (e.g. `DigiCert Global Root G2`);
    /// matched case-insensitively against the anchor's CN (or O).
    pub expected_anchors: Vec<String>,
    /// Anchor names the hub used to chain to (e.g. `Baltimore CyberTrust Root`),
    /// reported so a fleet can see who still validates through them.
    pub legacy_anchors: Vec<String>,
    /// The device certificate to present when the server asks for one.
    pub client_identity: Option<Arc<ClientIdentity>>,
}

impl TlsOptions {
    /// Options for `server_name` with a 10 s timeout and nothing else set.
    pub fn new(server_name: impl Into<String>) -> Self {
        TlsOptions {
            server_name: server_name.into(),
            alpn: Vec::new(),
            timeout: Duration::from_secs(10),
            expected_anchors: Vec::new(),
            legacy_anchors: Vec::new(),
            client_identity: None,
        }
    }
}

/// Which TLS versions the client offers. [`handshake`] offers both; the
/// restricted variants exist to test (and, later, to probe) what a server refuses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TlsVersions {
    /// TLS 1.3 and TLS 1.2 (the default, what device SDKs do).
    #[default]
    Any,
    /// TLS 1.2 only.
    Tls12Only,
    /// TLS 1.3 only.
    Tls13Only,
}

impl TlsVersions {
    fn protocol_versions(self) -> &'static [&'static rustls::SupportedProtocolVersion] {
        static ANY: &[&rustls::SupportedProtocolVersion] =
            &[&rustls::version::TLS13, &rustls::version::TLS12];
        static V12: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS12];
        static V13: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];
        match self {
            TlsVersions::Any => ANY,
            TlsVersions::Tls12Only => V12,
            TlsVersions::Tls13Only => V13,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            TlsVersions::Any => "TLSv1.3, TLSv1.2",
            TlsVersions::Tls12Only => "TLSv1.2",
            TlsVersions::Tls13Only => "TLSv1.3",
        }
    }
}

/// The phase result, plus the established stream when the handshake succeeded
/// (the next phase, MQTT/WebSocket/AMQP, runs over it).
pub struct TlsOutcome<S> {
    /// Status, duration, class, message and [`TlsEvidence`] (as JSON).
    pub result: PhaseResult,
    /// The TLS stream, `Some` exactly when `result` is ok.
    pub stream: Option<TlsStream<S>>,
}

impl<S> fmt::Debug for TlsOutcome<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsOutcome")
            .field("result", &self.result)
            .field("stream", &self.stream.as_ref().map(|_| "TlsStream"))
            .finish()
    }
}

/// Runs the TLS handshake over `stream` and reports it as a [`PhaseResult`].
///
/// Never returns an error and never panics: every failure is a classified
/// result with the evidence gathered so far. The whole phase is bounded by
/// `opts.timeout`.
///
/// TLS 1.3 and client certificates: in TLS 1.3 the client finishes its side of
/// the handshake before the server has looked at the client certificate, so a
/// rejection (`certificate_required`, `bad_certificate` ...) arrives only after
/// the handshake "succeeded". When the server asked for a client certificate
/// over TLS 1.3, the probe therefore keeps reading for a short while
/// (2 × handshake time, between 250 ms and 2 s, within the timeout), without
/// consuming application data: a fatal alert makes the phase fail
/// (`tls.handshake_failure`), a session ticket or application data confirms
/// acceptance at once, and silence is taken as acceptance (noted in
/// `evidence.post_handshake`). A server that rejects silently after that window
/// is seen by the next phase instead.
pub async fn handshake<S>(stream: S, opts: &TlsOptions, trust: &Arc<TrustStore>) -> TlsOutcome<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    handshake_with_versions(stream, opts, trust, TlsVersions::Any).await
}

/// [`handshake`] offering only `versions` (for protocol-version probing and tests).
pub async fn handshake_with_versions<S>(
    stream: S,
    opts: &TlsOptions,
    trust: &Arc<TrustStore>,
    versions: TlsVersions,
) -> TlsOutcome<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let sw = Stopwatch::start();
    let record: SharedRecord = Arc::default();
    let mut ev = TlsEvidence {
        server_name: opts.server_name.clone(),
        alpn_offered: opts.alpn.clone(),
        ..TlsEvidence::default()
    };
    let fail = |class: FailureClass, message: String, ev: &TlsEvidence| TlsOutcome {
        result: PhaseResult::failed(Phase::Tls, sw.elapsed(), class, message, ev),
        stream: None,
    };

    let server_name = match parse_server_name(&opts.server_name) {
        Ok(n) => n,
        Err(msg) => return fail(FailureClass::TlsHandshakeFailure, msg, &ev),
    };
    let config = match client_config(opts, trust, versions, &record) {
        Ok(c) => c,
        Err(e) => {
            return fail(
                FailureClass::TlsHandshakeFailure,
                format!("cannot configure TLS: {e}"),
                &ev,
            )
        }
    };
    let connector = TlsConnector::from(Arc::new(config));
    let outcome = tokio::time::timeout(opts.timeout, connector.connect(server_name, stream)).await;

    let chain: Vec<ParsedCert> = lock(&record)
        .chain
        .iter()
        .map(|c| parse_cert(c.as_ref()))
        .collect();
    fill_from_record(&mut ev, &lock(&record), &chain, trust, opts);
    let ctx = Context::new(&lock(&record), opts, versions, false);

    let mut tls = match outcome {
        Err(_elapsed) => {
            let detail = if chain.is_empty() {
                "the server did not answer the ClientHello (no TLS server, or a stalled one)"
            } else {
                "the server sent its certificate chain, then stalled"
            };
            let msg = format!(
                "no TLS handshake within {} ms: {detail}",
                opts.timeout.as_millis()
            );
            return fail(FailureClass::TlsTimeout, msg, &ev);
        }
        Ok(Err(err)) => {
            let verify_error = lock(&record).verify_error.clone();
            let (class, msg) = match verify_error {
                Some(verr) => {
                    ev.verify_error = Some(webpki_error_name(&verr));
                    classify_verify(&verr, &chain, trust, &opts.server_name)
                }
                None => classify_io(&err, &ctx),
            };
            return fail(class, msg, &ev);
        }
        Ok(Ok(tls)) => tls,
    };

    {
        let conn = tls.get_ref().1;
        ev.version = conn.protocol_version().map(version_name);
        ev.cipher_suite = conn
            .negotiated_cipher_suite()
            .map(|s| suite_name(s.suite()));
        ev.alpn = conn
            .alpn_protocol()
            .map(|p| String::from_utf8_lossy(p).into_owned());
    }

    let tls13 = tls.get_ref().1.protocol_version() == Some(ProtocolVersion::TLSv1_3);
    if tls13 && lock(&record).client_cert_requested {
        let spent = sw.elapsed();
        let wait = (spent * 2)
            .clamp(Duration::from_millis(250), Duration::from_secs(2))
            .min(opts.timeout.saturating_sub(spent));
        let verdict = await_client_auth_verdict(&mut tls, &record, wait).await;
        let ctx = Context::new(&lock(&record), opts, versions, true);
        fill_from_record(&mut ev, &lock(&record), &chain, trust, opts);
        match verdict {
            Verdict::Accepted(note) => ev.post_handshake = Some(note),
            Verdict::Rejected(err) => {
                let (class, msg) = classify_rustls(&err, &ctx);
                ev.post_handshake =
                    Some("the server sent a fatal alert after the handshake".into());
                return fail(class, msg, &ev);
            }
            Verdict::Io(err) => {
                let (class, msg) = classify_io(&err, &ctx);
                ev.post_handshake = Some("the connection failed right after the handshake".into());
                return fail(class, msg, &ev);
            }
        }
    }

    tracing::debug!(
        server_name = %opts.server_name,
        version = ?ev.version,
        anchor = ?ev.trust_anchor.as_ref().map(|a| &a.name),
        "TLS handshake ok"
    );
    TlsOutcome {
        result: PhaseResult::ok(Phase::Tls, sw.elapsed(), &ev),
        stream: Some(tls),
    }
}

/// Parses the server name: an IP literal (brackets allowed) or a DNS name.
fn parse_server_name(name: &str) -> Result<ServerName<'static>, String> {
    let t = name.trim();
    let unbracketed = t
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or(t);
    if let Ok(ip) = unbracketed.parse::<IpAddr>() {
        return Ok(ServerName::IpAddress(ip.into()));
    }
    ServerName::try_from(t)
        .map(|n| n.to_owned())
        .map_err(|_| format!("'{name}' is not a valid DNS name or IP address for TLS"))
}

fn client_config(
    opts: &TlsOptions,
    trust: &Arc<TrustStore>,
    versions: TlsVersions,
    record: &SharedRecord,
) -> Result<ClientConfig, rustls::Error> {
    let provider = rustls::crypto::ring::default_provider();
    let algs = provider.signature_verification_algorithms;
    let verifier = RecordingVerifier::new(Arc::clone(trust), Arc::clone(record), algs);
    let resolver = RecordingResolver::new(opts.client_identity.clone(), Arc::clone(record));
    let mut config = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(versions.protocol_versions())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = opts.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    config.resumption = Resumption::store(Arc::new(TicketObserver::new(Arc::clone(record))));
    Ok(config)
}

/// Copies what the verifier and resolver saw into the evidence.
fn fill_from_record(
    ev: &mut TlsEvidence,
    rec: &Record,
    chain: &[ParsedCert],
    trust: &TrustStore,
    opts: &TlsOptions,
) {
    ev.chain = chain.iter().map(|c| c.info.clone()).collect();
    ev.leaf_days_left = chain
        .first()
        .and_then(|c| c.not_after)
        .map(|na| days_left(na, unix_now()));
    ev.trust_anchor = rec
        .anchor_index
        .and_then(|i| trust.info_at(i))
        .map(|a| AnchorEvidence {
            name: a.name.clone(),
            subject: a.subject.clone(),
            origin: a.origin.clone(),
            expected: a.name_in(&opts.expected_anchors),
            legacy: a.name_in(&opts.legacy_anchors),
            spki_sha256: Some(a.spki_sha256.clone()),
            impostor: false,
        });
    ev.client_certificate_requested = rec.client_cert_requested;
    ev.client_ca_hints = rec.client_ca_hints.clone();
    ev.client_certificate = match (&opts.client_identity, rec.client_cert_sent) {
        (Some(id), true) => Some(id.evidence()),
        _ => None,
    };
}

/// What the classifier needs to know about the handshake besides the error.
#[derive(Debug, Clone, Default)]
struct Context {
    /// The server's Certificate message was seen (so the peer speaks TLS).
    tls_seen: bool,
    client_cert_requested: bool,
    client_cert_sent: bool,
    alpn_offered: Vec<String>,
    versions: TlsVersions,
    server_name: String,
    /// The error came after the handshake completed (TLS 1.3 client-auth check).
    after_handshake: bool,
}

impl Context {
    fn new(rec: &Record, opts: &TlsOptions, versions: TlsVersions, after_handshake: bool) -> Self {
        Context {
            tls_seen: !rec.chain.is_empty() || after_handshake,
            client_cert_requested: rec.client_cert_requested,
            client_cert_sent: rec.client_cert_sent,
            alpn_offered: opts.alpn.clone(),
            versions,
            server_name: opts.server_name.clone(),
            after_handshake,
        }
    }
}

/// Classifies a failed certificate verification from the typed webpki error.
fn classify_verify(
    err: &webpki::Error,
    chain: &[ParsedCert],
    trust: &TrustStore,
    server_name: &str,
) -> (FailureClass, String) {
    use webpki::Error as W;
    match err {
        W::UnknownIssuer => (FailureClass::TlsUnknownCa, unknown_ca_message(chain, trust)),
        W::CertExpired { time, not_after } => {
            let device = time.as_secs() as i64;
            let which = chain
                .iter()
                .enumerate()
                .find(|(_, c)| c.not_after.is_some_and(|na| na < device));
            let msg = match which {
                Some((i, c)) => format!(
                    "{} '{}' expired at {} ({:.1} days ago by the device clock, {})",
                    position(i, chain.len()),
                    c.info.subject,
                    c.info.not_after,
                    -days_left(c.not_after.unwrap_or(device), device),
                    evidence::rfc3339(device),
                ),
                None => format!(
                    "a certificate in the chain expired at {} (device clock {})",
                    evidence::rfc3339(not_after.as_secs() as i64),
                    evidence::rfc3339(device)
                ),
            };
            (FailureClass::TlsExpired, msg)
        }
        W::CertNotValidYet { time, not_before } => {
            let device = time.as_secs() as i64;
            let which = chain
                .iter()
                .enumerate()
                .find(|(_, c)| c.not_before.is_some_and(|nb| nb > device));
            let (what, from) = match which {
                Some((i, c)) => (
                    format!("{} '{}'", position(i, chain.len()), c.info.subject),
                    c.info.not_before.clone(),
                ),
                None => (
                    "a certificate in the chain".to_string(),
                    evidence::rfc3339(not_before.as_secs() as i64),
                ),
            };
            (
                FailureClass::TlsNotYetValid,
                format!(
                    "{what} is valid only from {from}, but the device clock says {}: the device clock is probably behind (no NTP yet?)",
                    evidence::rfc3339(device)
                ),
            )
        }
        W::CertNotValidForName(ctx) => {
            // Prefer the SANs as parsed for the evidence (plain names, `IP:` ...);
            // webpki's list is the fallback when the leaf could not be parsed.
            let names = match chain.first() {
                Some(leaf) if leaf.info.parse_error.is_none() => leaf.info.sans.join(", "),
                _ => ctx.presented.join(", "),
            };
            (
                FailureClass::TlsHostnameMismatch,
                format!("the server certificate is for [{names}], not for '{server_name}'"),
            )
        }
        other => (
            FailureClass::TlsHandshakeFailure,
            format!(
                "server certificate rejected: {}",
                wording::webpki_error(other)
            ),
        ),
    }
}

fn position(i: usize, len: usize) -> &'static str {
    if i == 0 {
        "the server certificate"
    } else if i + 1 == len {
        "the last certificate of the chain"
    } else {
        "an intermediate certificate"
    }
}

fn unknown_ca_message(chain: &[ParsedCert], trust: &TrustStore) -> String {
    let n = trust.len();
    let Some(top) = chain.last() else {
        return format!("the chain does not lead to a trusted root ({n} anchors)");
    };
    let mut msg = if chain.len() == 1
        && !top.subject_der.is_empty()
        && top.subject_der == top.issuer_der
    {
        format!(
            "the server certificate is self-signed ('{}') and is not in the trust store ({n} anchors)",
            top.info.subject
        )
    } else {
        format!(
            "chain ends at issuer '{}' which is not in the trust store ({n} anchors)",
            top.info.issuer
        )
    };
    if let Some(same) = trust.with_subject(&top.issuer_der).next() {
        msg.push_str(&format!(
            "; an anchor with that name exists ({}) but its key does not match the chain (a re-issued root, or a different CA with the same name)",
            same.origin
        ));
    }
    msg
}

/// Classifies an I/O error from the handshake (or the post-handshake check).
fn classify_io(err: &io::Error, ctx: &Context) -> (FailureClass, String) {
    if let Some(tls_err) = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
    {
        return classify_rustls(tls_err, ctx);
    }
    let stage = if ctx.after_handshake {
        "right after the handshake (it had asked for a client certificate; it probably rejected it)"
    } else if ctx.tls_seen {
        "during the handshake, after sending its certificate"
    } else {
        "before answering the ClientHello (not a TLS port, or the server refused the name/SNI)"
    };
    match stream_error_kind(err) {
        Some(StreamFault::Closed) => (
            FailureClass::TlsClosed,
            format!("the server closed the connection {stage}"),
        ),
        Some(StreamFault::Reset) => (
            FailureClass::TlsReset,
            format!("the connection was reset {stage}"),
        ),
        Some(StreamFault::Timeout) => (
            FailureClass::TlsTimeout,
            format!("the connection timed out {stage}"),
        ),
        None => (
            FailureClass::TlsHandshakeFailure,
            format!("I/O error during the TLS handshake: {err}"),
        ),
    }
}

/// Classifies a typed rustls error (alerts, incompatibilities, malformed input).
fn classify_rustls(err: &rustls::Error, ctx: &Context) -> (FailureClass, String) {
    use rustls::Error as E;
    match err {
        E::AlertReceived(AlertDescription::ProtocolVersion) => (
            FailureClass::TlsProtocolVersion,
            format!(
                "the server refused every TLS version we offered ({}): alert protocol_version",
                ctx.versions.describe()
            ),
        ),
        E::AlertReceived(alert) => (FailureClass::TlsHandshakeFailure, alert_message(*alert, ctx)),
        E::PeerIncompatible(p) if is_version_incompatibility(p) => (
            FailureClass::TlsProtocolVersion,
            format!(
                "no common TLS version (we offered {}): {}",
                ctx.versions.describe(),
                wording::peer_incompatible(p)
            ),
        ),
        E::PeerIncompatible(p) => (
            FailureClass::TlsHandshakeFailure,
            format!(
                "the server and hubprobe have no common TLS parameters: {}",
                wording::peer_incompatible(p)
            ),
        ),
        // Decided before "not TLS": a message too large to accept is TLS, just
        // more of it than a client takes (a leaf with 10 000 names).
        E::InvalidMessage(
            InvalidMessage::HandshakePayloadTooLarge | InvalidMessage::CertificatePayloadTooLarge,
        ) => (
            FailureClass::TlsMessageTooLarge,
            "the server sent a TLS handshake message larger than 64 KiB, more than hubprobe (like most TLS clients) accepts: most likely its certificate chain is too large (thousands of names, or a very long chain)".to_string(),
        ),
        E::InvalidMessage(m) if !ctx.tls_seen => (
            FailureClass::TlsNotTls,
            format!("the server answered with something that is not TLS ({}); is this port serving plain TCP/HTTP?", wording::invalid_message(m)),
        ),
        E::InappropriateMessage { got_type, .. } if !ctx.tls_seen => (
            FailureClass::TlsNotTls,
            format!("the server's first message is not a TLS handshake (got a {} record)", wording::words(got_type)),
        ),
        E::InvalidMessage(m) => (
            FailureClass::TlsHandshakeFailure,
            format!(
                "malformed TLS message from the server: {}",
                wording::invalid_message(m)
            ),
        ),
        E::NoCertificatesPresented => (
            FailureClass::TlsHandshakeFailure,
            "the server presented no certificate".to_string(),
        ),
        E::PeerMisbehaved(p) => (
            FailureClass::TlsHandshakeFailure,
            format!(
                "the server violated the TLS protocol: {}",
                wording::peer_misbehaved(p)
            ),
        ),
        other => (
            FailureClass::TlsHandshakeFailure,
            format!("TLS handshake failed: {}", wording::rustls_error(other)),
        ),
    }
}

fn is_version_incompatibility(p: &PeerIncompatible) -> bool {
    matches!(
        p,
        PeerIncompatible::ServerDoesNotSupportTls12Or13
            | PeerIncompatible::ServerTlsVersionIsDisabledByOurConfig
            | PeerIncompatible::SupportedVersionsExtensionRequired
            | PeerIncompatible::Tls12NotOffered
            | PeerIncompatible::Tls12NotOfferedOrEnabled
    )
}

/// The message for a fatal alert received from the server.
fn alert_message(alert: AlertDescription, ctx: &Context) -> String {
    use AlertDescription as A;
    let name = alert_name(alert);
    let client_auth_alert = matches!(
        alert,
        A::BadCertificate
            | A::CertificateRequired
            | A::UnknownCA
            | A::CertificateUnknown
            | A::UnsupportedCertificate
            | A::CertificateRevoked
            | A::CertificateExpired
            | A::AccessDenied
            | A::DecryptError
            | A::HandshakeFailure
    );
    if ctx.client_cert_requested && client_auth_alert {
        return if ctx.client_cert_sent {
            format!("the server rejected the client certificate: alert {name}")
        } else {
            format!("the server requires a client certificate and none was sent: alert {name}")
        };
    }
    match alert {
        A::NoApplicationProtocol => format!(
            "the server supports none of the offered ALPN protocols [{}]: alert {name}",
            ctx.alpn_offered.join(", ")
        ),
        A::UnrecognisedName => format!(
            "the server does not serve the name '{}' (SNI): alert {name}",
            ctx.server_name
        ),
        A::HandshakeFailure | A::InsufficientSecurity => format!(
            "the server aborted the handshake (no common cipher suite, group or signature scheme?): alert {name}"
        ),
        _ => format!("the server aborted the handshake: alert {name}"),
    }
}

/// The RFC 8446 name of an alert (`bad_certificate`, `certificate_required` ...).
fn alert_name(alert: AlertDescription) -> String {
    use AlertDescription as A;
    let s = match alert {
        A::CloseNotify => "close_notify",
        A::UnexpectedMessage => "unexpected_message",
        A::BadRecordMac => "bad_record_mac",
        A::DecryptionFailed => "decryption_failed",
        A::RecordOverflow => "record_overflow",
        A::DecompressionFailure => "decompression_failure",
        A::HandshakeFailure => "handshake_failure",
        A::NoCertificate => "no_certificate",
        A::BadCertificate => "bad_certificate",
        A::UnsupportedCertificate => "unsupported_certificate",
        A::CertificateRevoked => "certificate_revoked",
        A::CertificateExpired => "certificate_expired",
        A::CertificateUnknown => "certificate_unknown",
        A::IllegalParameter => "illegal_parameter",
        A::UnknownCA => "unknown_ca",
        A::AccessDenied => "access_denied",
        A::DecodeError => "decode_error",
        A::DecryptError => "decrypt_error",
        A::ExportRestriction => "export_restriction",
        A::ProtocolVersion => "protocol_version",
        A::InsufficientSecurity => "insufficient_security",
        A::InternalError => "internal_error",
        A::InappropriateFallback => "inappropriate_fallback",
        A::UserCanceled => "user_canceled",
        A::NoRenegotiation => "no_renegotiation",
        A::MissingExtension => "missing_extension",
        A::UnsupportedExtension => "unsupported_extension",
        A::CertificateUnobtainable => "certificate_unobtainable",
        A::UnrecognisedName => "unrecognized_name",
        A::BadCertificateStatusResponse => "bad_certificate_status_response",
        A::BadCertificateHashValue => "bad_certificate_hash_value",
        A::UnknownPSKIdentity => "unknown_psk_identity",
        A::CertificateRequired => "certificate_required",
        A::NoApplicationProtocol => "no_application_protocol",
        A::EncryptedClientHelloRequired => "encrypted_client_hello_required",
        other => return format!("{other:?}"),
    };
    s.to_string()
}

/// A short name for a webpki error (`UnknownIssuer`, `CertExpired` ...), for
/// `evidence.verify_error`; classification uses the typed value, not this.
fn webpki_error_name(err: &webpki::Error) -> String {
    let debug = format!("{err:?}");
    debug
        .split(['(', '{', ' '])
        .next()
        .unwrap_or_default()
        .to_string()
}

fn version_name(v: ProtocolVersion) -> String {
    match v {
        ProtocolVersion::TLSv1_3 => "TLSv1.3".to_string(),
        ProtocolVersion::TLSv1_2 => "TLSv1.2".to_string(),
        other => format!("{other:?}"),
    }
}

fn suite_name(s: rustls::CipherSuite) -> String {
    s.as_str()
        .map(str::to_string)
        .unwrap_or_else(|| format!("{s:?}"))
}

/// How the TLS 1.3 client-authentication check ended.
#[derive(Debug)]
enum Verdict {
    /// No rejection seen; the note says why we believe it was accepted.
    Accepted(String),
    /// The server sent a fatal alert (or something rustls rejects).
    Rejected(rustls::Error),
    /// The connection closed or failed.
    Io(io::Error),
}

/// After a TLS 1.3 handshake in which the server requested a client
/// certificate, reads TLS records for up to `wait` to catch a rejection alert.
///
/// Records are fed to rustls directly (`read_tls` + `process_new_packets`), so
/// application data the server may send stays buffered in the connection and
/// is returned by the next read of the `TlsStream`: nothing is lost.
async fn await_client_auth_verdict<S>(
    tls: &mut TlsStream<S>,
    record: &SharedRecord,
    wait: Duration,
) -> Verdict
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if wait.is_zero() {
        return Verdict::Accepted("no time left to wait for a client-auth verdict".into());
    }
    let deadline = tokio::time::Instant::now() + wait;
    let mut buf = vec![0u8; 8192];
    // Bounded: each round either reads bytes or ends; 256 rounds is far more
    // records than a server sends between Finished and its first tickets.
    for _ in 0..256 {
        if lock(record).tickets > 0 {
            return Verdict::Accepted(
                "session ticket received after our Finished: the server accepted the client authentication".into(),
            );
        }
        let (io, conn) = tls.get_mut();
        let n = match tokio::time::timeout_at(deadline, io.read(&mut buf)).await {
            Err(_) => {
                return Verdict::Accepted(format!(
                    "no alert within {} ms after the handshake: client authentication taken as accepted",
                    wait.as_millis()
                ))
            }
            Ok(Ok(0)) => return Verdict::Io(io::ErrorKind::UnexpectedEof.into()),
            Ok(Ok(n)) => n,
            Ok(Err(e)) => return Verdict::Io(e),
        };
        let mut data = &buf[..n];
        while !data.is_empty() {
            match conn.read_tls(&mut data) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => return Verdict::Io(e),
            }
            match conn.process_new_packets() {
                Err(e) => return Verdict::Rejected(e),
                Ok(state) if state.plaintext_bytes_to_read() > 0 => {
                    return Verdict::Accepted(
                        "the server sent application data: client authentication accepted".into(),
                    )
                }
                Ok(state) if state.peer_has_closed() => {
                    return Verdict::Io(io::ErrorKind::UnexpectedEof.into())
                }
                Ok(_) => {}
            }
        }
    }
    Verdict::Accepted("many records and no alert: client authentication taken as accepted".into())
}

#[cfg(test)]
mod tests;

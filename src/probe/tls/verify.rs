//! The recording certificate verifier and its companions.
//!
//! rustls's own `WebPkiServerVerifier` answers only "valid or not" and turns the
//! webpki error into a rustls error. The probe needs more: the chain the server
//! presented, the *typed* webpki error (to classify without string matching) and
//! *which* trust anchor validated the chain. So this verifier calls
//! rustls-webpki directly (`EndEntityCert::verify_for_usage` returns the
//! `VerifiedPath` and thus the anchor) and writes what it saw into a per-
//! handshake [`Record`]. Handshake signatures are delegated to rustls with the
//! ring provider's algorithms, exactly as the stock verifier does.
//!
//! The client-certificate resolver and the session store in this module are
//! recorders too: they tell the probe whether the server asked for a client
//! certificate, whether one was sent, and whether a TLS 1.3 session ticket
//! arrived (which, after client authentication, means the server accepted it).

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ClientSessionStore, ResolvesClientCert};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, DigitallySignedStruct, NamedGroup, OtherError, SignatureScheme};

use super::evidence::parse_name;
use super::identity::ClientIdentity;
use super::trust::TrustStore;

/// What one handshake's verifier, resolver and session store observed.
#[derive(Debug, Default)]
pub(crate) struct Record {
    /// The presented chain, leaf first (empty until the Certificate message).
    pub chain: Vec<CertificateDer<'static>>,
    /// The webpki error when chain or name verification failed.
    pub verify_error: Option<webpki::Error>,
    /// Index (into `TrustStore::webpki_anchors`) of the anchor that validated the chain.
    pub anchor_index: Option<usize>,
    /// The server sent a CertificateRequest.
    pub client_cert_requested: bool,
    /// CA names the server listed in its CertificateRequest.
    pub client_ca_hints: Vec<String>,
    /// A client certificate was offered to rustls for sending.
    pub client_cert_sent: bool,
    /// TLS 1.3 NewSessionTicket messages received.
    pub tickets: usize,
}

/// A [`Record`] shared between the rustls callbacks and the probe.
pub(crate) type SharedRecord = Arc<Mutex<Record>>;

/// Locks the record; a poisoned lock is still read (the data is plain facts).
pub(crate) fn lock(record: &SharedRecord) -> MutexGuard<'_, Record> {
    record.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Verifies the server chain with rustls-webpki against the [`TrustStore`] and
/// records the chain, the typed error and the matched anchor.
#[derive(Debug)]
pub(crate) struct RecordingVerifier {
    trust: Arc<TrustStore>,
    record: SharedRecord,
    algs: WebPkiSupportedAlgorithms,
}

impl RecordingVerifier {
    pub(crate) fn new(
        trust: Arc<TrustStore>,
        record: SharedRecord,
        algs: WebPkiSupportedAlgorithms,
    ) -> Self {
        RecordingVerifier {
            trust,
            record,
            algs,
        }
    }

    fn fail(&self, err: webpki::Error) -> rustls::Error {
        let mapped = to_rustls_error(&err);
        lock(&self.record).verify_error = Some(err);
        mapped
    }
}

impl ServerCertVerifier for RecordingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        {
            let mut rec = lock(&self.record);
            rec.chain = std::iter::once(end_entity)
                .chain(intermediates)
                .map(|c| c.clone().into_owned())
                .collect();
        }
        let ee = webpki::EndEntityCert::try_from(end_entity).map_err(|e| self.fail(e))?;
        let anchors = self.trust.webpki_anchors();
        let path = ee
            .verify_for_usage(
                self.algs.all,
                anchors,
                intermediates,
                now,
                webpki::KeyUsage::server_auth(),
                None,
                None,
            )
            .map_err(|e| self.fail(e))?;
        let used = path.anchor();
        let index = anchors
            .iter()
            .position(|a| std::ptr::eq(a, used))
            .or_else(|| {
                anchors.iter().position(|a| {
                    a.subject == used.subject
                        && a.subject_public_key_info == used.subject_public_key_info
                })
            });
        lock(&self.record).anchor_index = index;
        ee.verify_is_valid_for_subject_name(server_name)
            .map_err(|e| self.fail(e))?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// The rustls error (and so the alert sent to the server) for a webpki error,
/// mirroring what rustls's own verifier would send.
fn to_rustls_error(err: &webpki::Error) -> rustls::Error {
    use webpki::Error as W;
    let ce = match err {
        W::UnknownIssuer => CertificateError::UnknownIssuer,
        W::CertExpired { time, not_after } => CertificateError::ExpiredContext {
            time: *time,
            not_after: *not_after,
        },
        W::CertNotValidYet { time, not_before } => CertificateError::NotValidYetContext {
            time: *time,
            not_before: *not_before,
        },
        W::CertNotValidForName(ctx) => CertificateError::NotValidForNameContext {
            expected: ctx.expected.clone(),
            presented: ctx.presented.clone(),
        },
        W::CertRevoked => CertificateError::Revoked,
        W::BadDer | W::BadDerTime => CertificateError::BadEncoding,
        W::InvalidSignatureForPublicKey => CertificateError::BadSignature,
        other => CertificateError::Other(OtherError(Arc::new(other.clone()))),
    };
    rustls::Error::InvalidCertificate(ce)
}

/// Offers the device identity (if any) when the server asks for a client
/// certificate, and records the request, the server's CA hints and whether a
/// certificate was offered.
#[derive(Debug)]
pub(crate) struct RecordingResolver {
    identity: Option<Arc<ClientIdentity>>,
    record: SharedRecord,
}

impl RecordingResolver {
    pub(crate) fn new(identity: Option<Arc<ClientIdentity>>, record: SharedRecord) -> Self {
        RecordingResolver { identity, record }
    }
}

impl ResolvesClientCert for RecordingResolver {
    fn resolve(
        &self,
        root_hint_subjects: &[&[u8]],
        sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        let mut rec = lock(&self.record);
        rec.client_cert_requested = true;
        rec.client_ca_hints = root_hint_subjects
            .iter()
            .take(32)
            .map(|der| {
                parse_name(der)
                    .or_else(|| parse_name(&super::evidence::wrap_name(der)))
                    .map(|(_, full)| full)
                    .unwrap_or_else(|| "(unparseable name)".to_string())
            })
            .collect();
        let key = self.identity.as_ref()?.certified_key();
        // rustls sends an empty Certificate when the key cannot sign with any
        // scheme the server accepts; record only what will really be sent.
        let usable = key.key.choose_scheme(sigschemes).is_some();
        rec.client_cert_sent = usable;
        usable.then_some(key)
    }

    fn has_certs(&self) -> bool {
        self.identity.is_some()
    }
}

/// A session store that keeps nothing (a probe must not resume: every run
/// measures a full handshake) but counts TLS 1.3 tickets received.
#[derive(Debug)]
pub(crate) struct TicketObserver {
    record: SharedRecord,
}

impl TicketObserver {
    pub(crate) fn new(record: SharedRecord) -> Self {
        TicketObserver { record }
    }
}

impl ClientSessionStore for TicketObserver {
    fn set_kx_hint(&self, _: ServerName<'static>, _: NamedGroup) {}

    fn kx_hint(&self, _: &ServerName<'_>) -> Option<NamedGroup> {
        None
    }

    fn set_tls12_session(
        &self,
        _: ServerName<'static>,
        _: rustls::client::Tls12ClientSessionValue,
    ) {
    }

    fn tls12_session(&self, _: &ServerName<'_>) -> Option<rustls::client::Tls12ClientSessionValue> {
        None
    }

    fn remove_tls12_session(&self, _: &ServerName<'static>) {}

    fn insert_tls13_ticket(
        &self,
        _: ServerName<'static>,
        _: rustls::client::Tls13ClientSessionValue,
    ) {
        lock(&self.record).tickets += 1;
    }

    fn take_tls13_ticket(
        &self,
        _: &ServerName<'static>,
    ) -> Option<rustls::client::Tls13ClientSessionValue> {
        None
    }
}

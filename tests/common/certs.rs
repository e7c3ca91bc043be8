//! A throw-away PKI for the lab, generated with rcgen into a temporary directory.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    date_time_ymd, BasicConstraints, Certificate, CertificateParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tempfile::TempDir;

/// The hub-like host name every good server certificate is issued for.
pub const HUB_HOST: &str = "hub.hubprobe.test";
/// The only name in the wrong-name certificate.
pub const WRONG_HOST: &str = "other.example.test";
/// Common name of the root the tests trust.
pub const TEST_CA_CN: &str = "hubprobe Test Root CA";
/// Common name of the root the tests never trust.
pub const OTHER_CA_CN: &str = "hubprobe Other CA";
/// Common name of the device client certificate.
pub const DEVICE_CN: &str = "dev1";
/// The expired certificate is valid 2020-01-01 .. `EXPIRED_NOT_AFTER` (y, m, d).
pub const EXPIRED_NOT_AFTER: (i32, u8, u8) = (2021, 1, 1);
/// The not-yet-valid certificate starts at `NOT_YET_VALID_NOT_BEFORE` (y, m, d).
pub const NOT_YET_VALID_NOT_BEFORE: (i32, u8, u8) = (2090, 1, 1);

/// One certificate with its key: PEM files on disk and DER in memory.
#[derive(Clone, Debug)]
pub struct Identity {
    /// PEM file with the certificate alone.
    pub cert_pem: PathBuf,
    /// PEM file with the PKCS#8 private key.
    pub key_pem: PathBuf,
    /// PEM file with the certificate followed by its issuer (for leaves), or
    /// the certificate alone (for roots).
    pub fullchain_pem: PathBuf,
    /// The certificate, DER.
    pub cert_der: CertificateDer<'static>,
    /// The issuer certificate, DER (the certificate itself for a root).
    pub issuer_der: CertificateDer<'static>,
    key_pkcs8: Vec<u8>,
}

impl Identity {
    /// The private key, DER (PKCS#8), ready for rustls.
    pub fn key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_pkcs8.clone()))
    }

    /// The private key as raw PKCS#8 bytes.
    pub fn key_pkcs8_der(&self) -> &[u8] {
        &self.key_pkcs8
    }

    /// The certificate as PEM text.
    pub fn cert_pem_text(&self) -> String {
        fs::read_to_string(&self.cert_pem).expect("read cert PEM")
    }

    /// The private key as PEM text.
    pub fn key_pem_text(&self) -> String {
        fs::read_to_string(&self.key_pem).expect("read key PEM")
    }
}

struct Issuer {
    cert: Certificate,
    key: KeyPair,
}

/// The lab's PKI. Cheap to clone (the directory is shared and removed when
/// the last clone is dropped).
///
/// All keys are ECDSA P-256. Good certificates are valid 2000-01-01 ..
/// 2099-12-31.
#[derive(Clone)]
pub struct Certs {
    dir: Arc<TempDir>,
    issuer: Arc<Issuer>,
    /// The test root CA (CN [`TEST_CA_CN`]); `ca.cert_pem` is the trust anchor file.
    pub ca: Identity,
    /// A second root (CN [`OTHER_CA_CN`]) that tests never trust.
    pub other_ca: Identity,
    /// Good server certificate: SANs hub.hubprobe.test, localhost, IP 127.0.0.1.
    pub server: Identity,
    /// Same names, expired (2020-01-01 .. 2021-01-01).
    pub expired: Identity,
    /// Same names, not valid before 2090-01-01.
    pub not_yet_valid: Identity,
    /// Valid, trusted, but only for other.example.test.
    pub wrong_name: Identity,
    /// Same names as `server`, issued by the untrusted other CA.
    pub other_ca_server: Identity,
    /// Device client certificate (CN [`DEVICE_CN`]) issued by the test CA.
    pub client: Identity,
}

fn server_names() -> Vec<String> {
    vec![
        HUB_HOST.to_string(),
        "localhost".to_string(),
        "127.0.0.1".to_string(),
    ]
}

fn ca_params(cn: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn.push(DnType::OrganizationName, "hubprobe tests");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = date_time_ymd(2000, 1, 1);
    params.not_after = date_time_ymd(2099, 12, 31);
    params
}

fn leaf_params(cn: &str, names: Vec<String>, client: bool) -> CertificateParams {
    let mut params = CertificateParams::new(names).expect("valid SAN list");
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![if client {
        ExtendedKeyUsagePurpose::ClientAuth
    } else {
        ExtendedKeyUsagePurpose::ServerAuth
    }];
    params.use_authority_key_identifier_extension = true;
    params.not_before = date_time_ymd(2000, 1, 1);
    params.not_after = date_time_ymd(2099, 12, 31);
    params
}

fn write_identity(
    dir: &Path,
    stem: &str,
    cert: &Certificate,
    key: &KeyPair,
    issuer: Option<&Certificate>,
) -> Identity {
    let cert_pem = dir.join(format!("{stem}.crt.pem"));
    let key_pem = dir.join(format!("{stem}.key.pem"));
    let fullchain_pem = dir.join(format!("{stem}.fullchain.pem"));
    fs::write(&cert_pem, cert.pem()).expect("write cert PEM");
    fs::write(&key_pem, key.serialize_pem()).expect("write key PEM");
    let mut chain = cert.pem();
    if let Some(issuer) = issuer {
        chain.push_str(&issuer.pem());
    }
    fs::write(&fullchain_pem, chain).expect("write chain PEM");
    Identity {
        cert_pem,
        key_pem,
        fullchain_pem,
        cert_der: cert.der().clone(),
        issuer_der: issuer.unwrap_or(cert).der().clone(),
        key_pkcs8: key.serialize_der(),
    }
}

fn issue(
    dir: &Path,
    stem: &str,
    params: CertificateParams,
    issuer_cert: &Certificate,
    issuer_key: &KeyPair,
) -> Identity {
    let key = KeyPair::generate().expect("generate key");
    let cert = params
        .signed_by(&key, issuer_cert, issuer_key)
        .unwrap_or_else(|e| panic!("sign {stem}: {e}"));
    write_identity(dir, stem, &cert, &key, Some(issuer_cert))
}

/// The ring provider, explicitly (never rely on a process-wide default).
pub fn ring_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl Certs {
    /// Generates the whole PKI into a fresh temporary directory.
    pub fn generate() -> Certs {
        let dir = tempfile::Builder::new()
            .prefix("hubprobe-certs-")
            .tempdir()
            .expect("create temp dir for certificates");
        let d = dir.path();

        let ca_key = KeyPair::generate().expect("generate CA key");
        let ca_cert = ca_params(TEST_CA_CN)
            .self_signed(&ca_key)
            .expect("self-sign test CA");
        let ca = write_identity(d, "ca", &ca_cert, &ca_key, None);

        let other_key = KeyPair::generate().expect("generate other CA key");
        let other_cert = ca_params(OTHER_CA_CN)
            .self_signed(&other_key)
            .expect("self-sign other CA");
        let other_ca = write_identity(d, "other-ca", &other_cert, &other_key, None);

        let server = issue(
            d,
            "server",
            leaf_params(HUB_HOST, server_names(), false),
            &ca_cert,
            &ca_key,
        );

        let mut p = leaf_params(HUB_HOST, server_names(), false);
        p.not_before = date_time_ymd(2020, 1, 1);
        let (y, m, dd) = EXPIRED_NOT_AFTER;
        p.not_after = date_time_ymd(y, m, dd);
        let expired = issue(d, "expired", p, &ca_cert, &ca_key);

        let mut p = leaf_params(HUB_HOST, server_names(), false);
        let (y, m, dd) = NOT_YET_VALID_NOT_BEFORE;
        p.not_before = date_time_ymd(y, m, dd);
        p.not_after = date_time_ymd(2099, 12, 31);
        let not_yet_valid = issue(d, "not-yet-valid", p, &ca_cert, &ca_key);

        let wrong_name = issue(
            d,
            "wrong-name",
            leaf_params(WRONG_HOST, vec![WRONG_HOST.to_string()], false),
            &ca_cert,
            &ca_key,
        );

        let other_ca_server = issue(
            d,
            "other-ca-server",
            leaf_params(HUB_HOST, server_names(), false),
            &other_cert,
            &other_key,
        );

        let client = issue(
            d,
            "client-dev1",
            leaf_params(DEVICE_CN, vec![], true),
            &ca_cert,
            &ca_key,
        );

        Certs {
            dir: Arc::new(dir),
            issuer: Arc::new(Issuer {
                cert: ca_cert,
                key: ca_key,
            }),
            ca,
            other_ca,
            server,
            expired,
            not_yet_valid,
            wrong_name,
            other_ca_server,
            client,
        }
    }

    /// The directory holding all PEM files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Path of the trust-anchor file (test CA only).
    pub fn ca_pem(&self) -> &Path {
        &self.ca.cert_pem
    }

    /// Issues one more certificate from the test CA (files `<stem>.*.pem`).
    /// Start from e.g. `CertificateParams::new(vec![HUB_HOST.into()])`.
    pub fn issue(&self, stem: &str, params: CertificateParams) -> Identity {
        issue(
            self.dir(),
            stem,
            params,
            &self.issuer.cert,
            &self.issuer.key,
        )
    }

    /// A root CA named `cn` with a fresh key (a look-alike of a real root when `cn`
    /// is a real root's name) and a server certificate for the lab's names issued
    /// by it: (root, server).
    pub fn look_alike_root(&self, stem: &str, cn: &str) -> (Identity, Identity) {
        let key = KeyPair::generate().expect("generate look-alike root key");
        let cert = ca_params(cn)
            .self_signed(&key)
            .expect("self-sign look-alike root");
        let root = write_identity(self.dir(), &format!("{stem}-root"), &cert, &key, None);
        let server = issue(
            self.dir(),
            &format!("{stem}-server"),
            leaf_params(HUB_HOST, server_names(), false),
            &cert,
            &key,
        );
        (root, server)
    }

    /// A root store holding the test CA only.
    pub fn root_store(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.cert_der.clone()).expect("add test CA");
        roots
    }

    /// A client config trusting only the test CA, no client certificate.
    pub fn client_config(&self) -> Arc<ClientConfig> {
        Arc::new(
            ClientConfig::builder_with_provider(ring_provider())
                .with_safe_default_protocol_versions()
                .expect("protocol versions")
                .with_root_certificates(self.root_store())
                .with_no_client_auth(),
        )
    }

    /// A client config trusting only the test CA, presenting the device
    /// certificate (for the `mtls` listener).
    pub fn client_config_with_device_cert(&self) -> Arc<ClientConfig> {
        Arc::new(
            ClientConfig::builder_with_provider(ring_provider())
                .with_safe_default_protocol_versions()
                .expect("protocol versions")
                .with_root_certificates(self.root_store())
                .with_client_auth_cert(
                    vec![self.client.cert_der.clone(), self.ca.cert_der.clone()],
                    self.client.key_der(),
                )
                .expect("client auth cert"),
        )
    }

    /// A server config presenting `id` (plus its issuer), no client auth.
    pub fn server_config(&self, id: &Identity) -> Arc<ServerConfig> {
        Arc::new(
            ServerConfig::builder_with_provider(ring_provider())
                .with_safe_default_protocol_versions()
                .expect("protocol versions")
                .with_no_client_auth()
                .with_single_cert(
                    vec![id.cert_der.clone(), id.issuer_der.clone()],
                    id.key_der(),
                )
                .expect("server cert"),
        )
    }
}

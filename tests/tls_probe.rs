//! TLS phase against real peers on loopback: in-process rustls servers with
//! certificates generated here (rcgen), and fault servers (silent, closing,
//! resetting, garbage, stalling). Every server binds 127.0.0.1 port 0, every
//! wait has a timeout and every loop a bound.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hubprobe::model::FailureClass;
use hubprobe::model::TlsEvidence;
use hubprobe::model::{PhaseResult, Status};
use hubprobe::probe::tls::{
    handshake, handshake_with_versions, ClientIdentity, TlsOptions, TlsSetupError, TlsVersions,
    TrustSource, TrustStore,
};
use rcgen::{
    date_time_ymd, BasicConstraints, Certificate, CertificateParams, DnType, IsCa, KeyPair,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, SupportedProtocolVersion};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::timeout;

const SERVER_NAME: &str = "hub.hubprobe.test";
const ROOT_CN: &str = "hubprobe Test Root CA";
/// Upper bound for any single wait in these tests.
const STEP: Duration = Duration::from_secs(10);
const DAY: i64 = 86_400;

// ---------------------------------------------------------------- PKI

/// A key pair and its certificate (a CA or a leaf).
struct Issued {
    cert: Certificate,
    key: KeyPair,
}

impl Issued {
    fn der(&self) -> CertificateDer<'static> {
        self.cert.der().clone()
    }
    fn key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.serialize_der()))
    }
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Sets validity from Unix seconds (without naming the `time` crate).
fn set_validity(p: &mut CertificateParams, not_before: i64, not_after: i64) {
    let epoch = date_time_ymd(1970, 1, 1);
    p.not_before = epoch + Duration::from_secs(not_before.max(0) as u64);
    p.not_after = epoch + Duration::from_secs(not_after.max(0) as u64);
}

fn ca(cn: &str, issuer: Option<&Issued>) -> Issued {
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
    p.distinguished_name.push(DnType::CommonName, cn);
    p.distinguished_name
        .push(DnType::OrganizationName, "hubprobe tests");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let now = now_unix();
    set_validity(&mut p, now - 30 * DAY, now + 3650 * DAY);
    let key = KeyPair::generate().expect("key");
    let cert = match issuer {
        None => p.self_signed(&key),
        Some(i) => p.signed_by(&key, &i.cert, &i.key),
    }
    .expect("ca cert");
    Issued { cert, key }
}

/// A leaf for `names`, valid from `nb` to `na` (Unix seconds), signed by `issuer`.
fn leaf(cn: &str, names: &[&str], issuer: &Issued, nb: i64, na: i64) -> Issued {
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let mut p = CertificateParams::new(names).expect("params");
    p.distinguished_name.push(DnType::CommonName, cn);
    set_validity(&mut p, nb, na);
    let key = KeyPair::generate().expect("key");
    let cert = p.signed_by(&key, &issuer.cert, &issuer.key).expect("leaf");
    Issued { cert, key }
}

/// The test PKI: root → intermediate → hub leaf, plus the broken variants.
struct Pki {
    root: Issued,
    inter: Issued,
    good: Issued,
    expired: Issued,
    not_yet: Issued,
    wrong_name: Issued,
    ip: Issued,
    other_root: Issued,
    foreign: Issued,
    client: Issued,
    foreign_client: Issued,
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let now = now_unix();
        let root = ca(ROOT_CN, None);
        let inter = ca("hubprobe Test Intermediate", Some(&root));
        let good = leaf(
            SERVER_NAME,
            &[SERVER_NAME],
            &inter,
            now - DAY,
            now + 90 * DAY,
        );
        let expired = leaf(
            SERVER_NAME,
            &[SERVER_NAME],
            &inter,
            now - 400 * DAY,
            now - 10 * DAY,
        );
        let not_yet = leaf(
            SERVER_NAME,
            &[SERVER_NAME],
            &inter,
            now + 30 * DAY,
            now + 400 * DAY,
        );
        let wrong_name = leaf(
            "other.hubprobe.test",
            &["other.hubprobe.test"],
            &inter,
            now - DAY,
            now + 90 * DAY,
        );
        let ip = leaf(
            "loopback",
            &["127.0.0.1"],
            &inter,
            now - DAY,
            now + 90 * DAY,
        );
        let other_root = ca("Other Root", None);
        let foreign = leaf(
            SERVER_NAME,
            &[SERVER_NAME],
            &other_root,
            now - DAY,
            now + 90 * DAY,
        );
        let client = leaf("device-001", &[], &root, now - DAY, now + 365 * DAY);
        let foreign_client = leaf("device-999", &[], &other_root, now - DAY, now + 365 * DAY);
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = Pki {
            root,
            inter,
            good,
            expired,
            not_yet,
            wrong_name,
            ip,
            other_root,
            foreign,
            client,
            foreign_client,
            dir,
        };
        std::fs::write(pki.path("root.pem"), pki.root.cert.pem()).expect("write root");
        std::fs::write(pki.path("client.pem"), pki.client.cert.pem()).expect("write");
        std::fs::write(pki.path("client.key"), pki.client.key.serialize_pem()).expect("write");
        std::fs::write(
            pki.path("foreign-client.pem"),
            pki.foreign_client.cert.pem(),
        )
        .expect("write");
        std::fs::write(
            pki.path("foreign-client.key"),
            pki.foreign_client.key.serialize_pem(),
        )
        .expect("write");
        pki
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Trust store with only the test root (`--ca-file`).
    fn trust(&self) -> Arc<TrustStore> {
        Arc::new(
            TrustStore::load(TrustSource::None, &[self.path("root.pem")]).expect("trust store"),
        )
    }

    /// Server chain: leaf + intermediate (the root is not sent, as on real hubs).
    fn chain(&self, leaf: &Issued) -> Vec<CertificateDer<'static>> {
        vec![leaf.der(), self.inter.der()]
    }

    fn identity(&self) -> Arc<ClientIdentity> {
        Arc::new(
            ClientIdentity::load(&self.path("client.pem"), &self.path("client.key"))
                .expect("client identity"),
        )
    }
}

// ---------------------------------------------------------------- servers

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

static BOTH: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];
static ONLY12: &[&SupportedProtocolVersion] = &[&rustls::version::TLS12];
static ONLY13: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13];

struct ServerSpec<'a> {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    versions: &'a [&'static SupportedProtocolVersion],
    client_ca: Option<&'a Issued>,
    alpn: &'a [&'a str],
}

fn server_config(spec: ServerSpec<'_>) -> Arc<ServerConfig> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(spec.versions)
        .expect("versions");
    let builder = match spec.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            roots.add(ca.der()).expect("client ca");
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .expect("client verifier");
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut cfg = builder
        .with_single_cert(spec.chain, spec.key)
        .expect("server cert");
    cfg.alpn_protocols = spec.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Arc::new(cfg)
}

async fn listener() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = l.local_addr().expect("addr");
    (l, addr)
}

/// A TLS server for one connection: handshake, then echo up to 4 bytes once.
async fn tls_server(cfg: Arc<ServerConfig>) -> (SocketAddr, JoinHandle<()>) {
    let (l, addr) = listener().await;
    let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
    let task = tokio::spawn(async move {
        let Ok(Ok((tcp, _))) = timeout(STEP, l.accept()).await else {
            return;
        };
        let Ok(Ok(mut tls)) = timeout(STEP, acceptor.accept(tcp)).await else {
            return;
        };
        let mut buf = [0u8; 4];
        if let Ok(Ok(())) = timeout(STEP, tls.read_exact(&mut buf))
            .await
            .map(|r| r.map(|_| ()))
        {
            let _ = timeout(STEP, tls.write_all(&buf)).await;
            let _ = timeout(STEP, tls.flush()).await;
        }
        // Keep the connection until the client is done (bounded).
        let _ = timeout(STEP, tls.read(&mut buf)).await;
    });
    (addr, task)
}

/// What a fault server does after accepting (and, where noted, reading the ClientHello).
#[derive(Clone, Copy)]
enum Fault {
    /// Accept and never send anything.
    Silent,
    /// Read the ClientHello, then close cleanly (FIN).
    CloseAfterHello,
    /// Read the ClientHello, then reset (RST via SO_LINGER 0).
    ResetAfterHello,
    /// Read the ClientHello, then answer with these bytes.
    Send(&'static [u8]),
}

async fn fault_server(fault: Fault) -> (SocketAddr, JoinHandle<()>) {
    let (l, addr) = listener().await;
    let task = tokio::spawn(async move {
        let Ok(Ok((mut tcp, _))) = timeout(STEP, l.accept()).await else {
            return;
        };
        let mut buf = vec![0u8; 16 * 1024];
        match fault {
            Fault::Silent => {
                let _ = timeout(STEP, async {
                    // Drain whatever arrives, answer nothing; bounded by STEP.
                    for _ in 0..64 {
                        match tcp.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(_) => {}
                        }
                    }
                })
                .await;
            }
            Fault::CloseAfterHello => {
                let _ = timeout(STEP, tcp.read(&mut buf)).await;
                let _ = tcp.shutdown().await;
                let _ = timeout(STEP, tcp.read(&mut buf)).await;
            }
            Fault::ResetAfterHello => {
                let _ = timeout(STEP, tcp.read(&mut buf)).await;
                let _ = socket2::SockRef::from(&tcp).set_linger(Some(Duration::ZERO));
                drop(tcp);
            }
            Fault::Send(bytes) => {
                let _ = timeout(STEP, tcp.read(&mut buf)).await;
                let _ = tcp.write_all(bytes).await;
                let _ = timeout(STEP, tcp.read(&mut buf)).await;
            }
        }
    });
    (addr, task)
}

/// A proxy in front of a TLS 1.2 server that relays the server's first flight
/// (ServerHello, Certificate, ...) and then swallows everything the server
/// sends: the client verifies the chain and waits forever for Finished.
async fn stall_after_first_flight(upstream: SocketAddr) -> (SocketAddr, JoinHandle<()>) {
    let (l, addr) = listener().await;
    let task = tokio::spawn(async move {
        let Ok(Ok((client, _))) = timeout(STEP, l.accept()).await else {
            return;
        };
        let Ok(Ok(server)) = timeout(STEP, TcpStream::connect(upstream)).await else {
            return;
        };
        let (mut cr, mut cw) = client.into_split();
        let (mut sr, mut sw) = server.into_split();
        let _ = timeout(STEP, async move {
            let mut cbuf = vec![0u8; 16 * 1024];
            let mut sbuf = vec![0u8; 16 * 1024];
            let mut client_chunks = 0u32;
            for _ in 0..256 {
                tokio::select! {
                    r = cr.read(&mut cbuf) => match r {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            client_chunks += 1;
                            if sw.write_all(&cbuf[..n]).await.is_err() { break; }
                        }
                    },
                    r = sr.read(&mut sbuf) => match r {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            // Only the answer to the ClientHello gets through.
                            if client_chunks <= 1 && cw.write_all(&sbuf[..n]).await.is_err() {
                                break;
                            }
                        }
                    },
                }
            }
        })
        .await;
    });
    (addr, task)
}

// ---------------------------------------------------------------- client side

fn opts(server_name: &str) -> TlsOptions {
    TlsOptions {
        server_name: server_name.to_string(),
        alpn: Vec::new(),
        timeout: Duration::from_secs(5),
        expected_anchors: vec![ROOT_CN.to_string()],
        legacy_anchors: vec!["Baltimore CyberTrust Root".to_string()],
        client_identity: None,
    }
}

async fn connect(addr: SocketAddr) -> TcpStream {
    timeout(STEP, TcpStream::connect(addr))
        .await
        .expect("connect in time")
        .expect("connect to loopback")
}

fn evidence(r: &PhaseResult) -> TlsEvidence {
    r.evidence()
        .and_then(hubprobe::model::Evidence::tls)
        .expect("TLS evidence present")
        .clone()
}

#[track_caller]
fn assert_failed(r: &PhaseResult, class: FailureClass) {
    assert_eq!(r.status, Status::Failed, "{r:#?}");
    assert_eq!(r.class, Some(class), "{r:#?}");
    assert!(
        r.message.as_deref().is_some_and(|m| !m.is_empty()),
        "{r:#?}"
    );
    eprintln!("{class}: {}", r.message.as_deref().unwrap_or_default());
}

/// Runs the probe against a server presenting `leaf` (+ intermediate).
async fn probe_leaf(pki: &Pki, leaf: &Issued, server_name: &str) -> PhaseResult {
    let cfg = server_config(ServerSpec {
        chain: pki.chain(leaf),
        key: leaf.key_der(),
        versions: BOTH,
        client_ca: None,
        alpn: &[],
    });
    let (addr, server) = tls_server(cfg).await;
    let out = handshake(connect(addr).await, &opts(server_name), &pki.trust()).await;
    server.abort();
    out.result
}

// ---------------------------------------------------------------- tests: success

#[tokio::test]
async fn ok_with_ca_file_reports_chain_anchor_alpn() {
    let pki = Pki::new();
    let cfg = server_config(ServerSpec {
        chain: pki.chain(&pki.good),
        key: pki.good.key_der(),
        versions: BOTH,
        client_ca: None,
        alpn: &["mqtt"],
    });
    let (addr, server) = tls_server(cfg).await;
    let mut o = opts(SERVER_NAME);
    o.alpn = vec!["x-unknown".into(), "mqtt".into()];
    let out = handshake(connect(addr).await, &o, &pki.trust()).await;
    let r = &out.result;
    assert!(r.is_ok(), "{r:#?}");
    let ev = evidence(r);
    println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
    assert_eq!(ev.version.as_deref(), Some("TLSv1.3"));
    assert!(
        ev.cipher_suite
            .as_deref()
            .is_some_and(|c| c.starts_with("TLS13_")),
        "{ev:?}"
    );
    assert_eq!(ev.alpn.as_deref(), Some("mqtt"));
    assert_eq!(ev.alpn_offered, vec!["x-unknown", "mqtt"]);
    assert_eq!(ev.chain.len(), 2);
    assert!(ev.chain[0].subject.contains(SERVER_NAME));
    assert_eq!(ev.chain[0].sans, vec![SERVER_NAME]);
    assert!(!ev.chain[0].is_ca && ev.chain[1].is_ca);
    assert_eq!(ev.chain[0].sha256.len(), 64);
    assert!(ev.chain[0].not_after.ends_with('Z'));
    let anchor = ev.trust_anchor.expect("anchor reported");
    assert_eq!(anchor.name, ROOT_CN);
    assert!(anchor.origin.starts_with("ca-file:"), "{}", anchor.origin);
    assert!(anchor.expected && !anchor.legacy);
    let days = ev.leaf_days_left.expect("days left");
    assert!((89.0..=90.5).contains(&days), "{days}");
    assert!(ev.client_certificate.is_none() && !ev.client_certificate_requested);
    assert!(ev.verify_error.is_none());
    // Raw JSON: trust_anchor is an object, client_certificate explicit null.
    let json = serde_json::to_value(r.evidence.as_ref().expect("evidence")).unwrap();
    assert!(json["client_certificate"].is_null());
    assert_eq!(json["trust_anchor"]["name"], ROOT_CN);

    // The stream works.
    let mut tls = out.stream.expect("stream on success");
    timeout(STEP, tls.write_all(b"ping"))
        .await
        .expect("in time")
        .expect("write");
    let mut buf = [0u8; 4];
    timeout(STEP, tls.read_exact(&mut buf))
        .await
        .expect("in time")
        .expect("read");
    assert_eq!(&buf, b"ping");
    server.abort();
}

#[tokio::test]
async fn ok_over_tls12_reports_version_and_suite() {
    let pki = Pki::new();
    let cfg = server_config(ServerSpec {
        chain: pki.chain(&pki.good),
        key: pki.good.key_der(),
        versions: ONLY12,
        client_ca: None,
        alpn: &[],
    });
    let (addr, server) = tls_server(cfg).await;
    let out = handshake(connect(addr).await, &opts(SERVER_NAME), &pki.trust()).await;
    assert!(out.result.is_ok(), "{:#?}", out.result);
    let ev = evidence(&out.result);
    assert_eq!(ev.version.as_deref(), Some("TLSv1.2"));
    assert!(
        ev.cipher_suite
            .as_deref()
            .is_some_and(|c| c.starts_with("TLS_ECDHE_")),
        "{ev:?}"
    );
    assert!(ev.alpn.is_none());
    server.abort();
}

#[tokio::test]
async fn ok_with_ip_server_name_against_ip_san() {
    let pki = Pki::new();
    let r = probe_leaf(&pki, &pki.ip, "127.0.0.1").await;
    assert!(r.is_ok(), "{r:#?}");
    assert_eq!(evidence(&r).chain[0].sans, vec!["IP:127.0.0.1"]);
}

#[tokio::test]
async fn anchor_not_expected_and_legacy_flags() {
    let pki = Pki::new();
    let cfg = server_config(ServerSpec {
        chain: pki.chain(&pki.good),
        key: pki.good.key_der(),
        versions: BOTH,
        client_ca: None,
        alpn: &[],
    });
    let (addr, server) = tls_server(cfg).await;
    let mut o = opts(SERVER_NAME);
    o.expected_anchors = vec!["DigiCert Global Root G2".into()];
    o.legacy_anchors = vec![ROOT_CN.to_ascii_uppercase()];
    let out = handshake(connect(addr).await, &o, &pki.trust()).await;
    let anchor = evidence(&out.result).trust_anchor.expect("anchor");
    assert!(!anchor.expected && anchor.legacy, "{anchor:?}");
    server.abort();
}

// ---------------------------------------------------------------- tests: verification

#[tokio::test]
async fn unknown_ca() {
    let pki = Pki::new();
    // The foreign leaf is signed directly by "Other Root"; send it with that root.
    let cfg = server_config(ServerSpec {
        chain: vec![pki.foreign.der(), pki.other_root.der()],
        key: pki.foreign.key_der(),
        versions: BOTH,
        client_ca: None,
        alpn: &[],
    });
    let (addr, server) = tls_server(cfg).await;
    let out = handshake(connect(addr).await, &opts(SERVER_NAME), &pki.trust()).await;
    let r = &out.result;
    assert_failed(r, FailureClass::TlsUnknownCa);
    assert!(out.stream.is_none());
    let msg = r.message.as_deref().unwrap_or_default();
    assert!(
        msg.contains("CN=Other Root") && msg.contains("(1 anchors)"),
        "{msg}"
    );
    let ev = evidence(r);
    assert_eq!(ev.chain.len(), 2);
    assert_eq!(ev.verify_error.as_deref(), Some("UnknownIssuer"));
    assert!(ev.trust_anchor.is_none());
    eprintln!("{}", serde_json::to_string_pretty(r).unwrap_or_default());
    server.abort();
}

/// `check` runs endpoints on spawned tasks: the handshake future must be `Send`.
#[allow(dead_code)]
fn handshake_future_is_send(s: TcpStream, o: &TlsOptions, t: &Arc<TrustStore>) {
    fn is_send<T: Send>(_: &T) {}
    let f = handshake(s, o, t);
    is_send(&f);
}

#[tokio::test]
async fn expired() {
    let pki = Pki::new();
    let r = probe_leaf(&pki, &pki.expired, SERVER_NAME).await;
    assert_failed(&r, FailureClass::TlsExpired);
    let ev = evidence(&r);
    assert!(ev.leaf_days_left.is_some_and(|d| d < -9.0), "{ev:?}");
    assert_eq!(ev.verify_error.as_deref(), Some("CertExpired"));
    assert!(r
        .message
        .as_deref()
        .unwrap_or_default()
        .contains("expired at"));
}

#[tokio::test]
async fn not_yet_valid() {
    let pki = Pki::new();
    let r = probe_leaf(&pki, &pki.not_yet, SERVER_NAME).await;
    assert_failed(&r, FailureClass::TlsNotYetValid);
    assert!(evidence(&r).leaf_days_left.is_some_and(|d| d > 300.0));
}

#[tokio::test]
async fn hostname_mismatch() {
    let pki = Pki::new();
    let r = probe_leaf(&pki, &pki.wrong_name, SERVER_NAME).await;
    assert_failed(&r, FailureClass::TlsHostnameMismatch);
    let msg = r.message.as_deref().unwrap_or_default();
    assert!(
        msg.contains("other.hubprobe.test") && msg.contains(SERVER_NAME),
        "{msg}"
    );
    // The chain itself was valid: the anchor is known even though the name is wrong.
    assert_eq!(
        evidence(&r).trust_anchor.map(|a| a.name).as_deref(),
        Some(ROOT_CN)
    );
}

#[tokio::test]
async fn ip_server_name_without_ip_san_is_a_mismatch() {
    let pki = Pki::new();
    let r = probe_leaf(&pki, &pki.good, "127.0.0.1").await;
    assert_failed(&r, FailureClass::TlsHostnameMismatch);
}

// ---------------------------------------------------------------- tests: faults

#[tokio::test]
async fn silent_server_times_out_promptly() {
    let pki = Pki::new();
    let (addr, server) = fault_server(Fault::Silent).await;
    let mut o = opts(SERVER_NAME);
    o.timeout = Duration::from_millis(500);
    let started = std::time::Instant::now();
    let out = timeout(STEP, handshake(connect(addr).await, &o, &pki.trust()))
        .await
        .expect("handshake returns by itself");
    let took = started.elapsed();
    assert_failed(&out.result, FailureClass::TlsTimeout);
    assert!(took < Duration::from_millis(500 + 1500), "{took:?}");
    assert!(took >= Duration::from_millis(450), "{took:?}");
    server.abort();
}

#[tokio::test]
async fn server_stalling_after_its_certificate_times_out() {
    let pki = Pki::new();
    let cfg = server_config(ServerSpec {
        chain: pki.chain(&pki.good),
        key: pki.good.key_der(),
        versions: ONLY12,
        client_ca: None,
        alpn: &[],
    });
    let (upstream, server) = tls_server(cfg).await;
    let (addr, proxy) = stall_after_first_flight(upstream).await;
    let mut o = opts(SERVER_NAME);
    o.timeout = Duration::from_millis(800);
    let out = handshake(connect(addr).await, &o, &pki.trust()).await;
    assert_failed(&out.result, FailureClass::TlsTimeout);
    let msg = out.result.message.as_deref().unwrap_or_default();
    assert!(msg.contains("certificate chain, then stalled"), "{msg}");
    assert_eq!(evidence(&out.result).chain.len(), 2);
    proxy.abort();
    server.abort();
}

#[tokio::test]
async fn server_closing_after_client_hello_is_closed() {
    let pki = Pki::new();
    let (addr, server) = fault_server(Fault::CloseAfterHello).await;
    let out = handshake(connect(addr).await, &opts(SERVER_NAME), &pki.trust()).await;
    assert_failed(&out.result, FailureClass::TlsClosed);
    server.abort();
}

#[tokio::test]
async fn server_resetting_is_reset() {
    let pki = Pki::new();
    let (addr, server) = fault_server(Fault::ResetAfterHello).await;
    let out = handshake(connect(addr).await, &opts(SERVER_NAME), &pki.trust()).await;
    assert_failed(&out.result, FailureClass::TlsReset);
    server.abort();
}

#[tokio::test]
async fn http_answer_is_not_tls() {
    let pki = Pki::new();
    let (addr, server) = fault_server(Fault::Send(b"HTTP/1.1 400 Bad Request\r\n\r\n")).await;
    let out = handshake(connect(addr).await, &opts(SERVER_NAME), &pki.trust()).await;
    assert_failed(&out.result, FailureClass::TlsNotTls);
    server.abort();
}

/// Fixed pseudo-random bytes (xorshift), so the test is reproducible.
fn noise() -> &'static [u8] {
    static NOISE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    NOISE.get_or_init(|| {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut v: Vec<u8> = (0..512)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32) as u8
            })
            .collect();
        // A first byte in 0x14..=0x18 would be a TLS content type and the
        // client would wait for a record instead of rejecting at once.
        if (0x14..=0x18).contains(&v[0]) {
            v[0] = 0xA5;
        }
        v
    })
}

#[tokio::test]
async fn random_bytes_are_not_tls() {
    let pki = Pki::new();
    let (addr, server) = fault_server(Fault::Send(noise())).await;
    let out = handshake(connect(addr).await, &opts(SERVER_NAME), &pki.trust()).await;
    assert_failed(&out.result, FailureClass::TlsNotTls);
    server.abort();
}

/// A leaf whose Certificate message is far above 64 KiB is reported as such, in
/// TLS 1.3 (encrypted Certificate) and TLS 1.2 (plain), never as "not TLS".
#[tokio::test]
async fn a_certificate_message_over_64_kib_is_message_too_large_not_not_tls() {
    let pki = Pki::new();
    let now = now_unix();
    let mut names: Vec<String> = vec![SERVER_NAME.to_string()];
    names.extend((0..10_000).map(|i| format!("device-{i:05}.sans.hubprobe.test")));
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let big = leaf(SERVER_NAME, &names, &pki.inter, now - DAY, now + 90 * DAY);
    assert!(big.der().len() > 64 * 1024, "{} bytes", big.der().len());
    // rustls's `with_single_cert` parses the leaf (webpki refuses one this large),
    // so the server is given the certified key as is.
    let signing = provider()
        .key_provider
        .load_private_key(big.key_der())
        .expect("signing key");
    let certified = Arc::new(rustls::sign::CertifiedKey::new(pki.chain(&big), signing));
    for versions in [ONLY13, ONLY12] {
        let cfg = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(versions)
            .expect("versions")
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(
                certified.clone(),
            )));
        let (addr, server) = tls_server(Arc::new(cfg)).await;
        let out = handshake(connect(addr).await, &opts(SERVER_NAME), &pki.trust()).await;
        assert_failed(&out.result, FailureClass::TlsMessageTooLarge);
        let msg = out.result.message.clone().unwrap_or_default();
        assert!(
            msg.contains("64 KiB") && msg.contains("certificate"),
            "{msg}"
        );
        assert!(!msg.contains("plain TCP"), "{msg}");
        server.abort();
    }
}

// ---------------------------------------------------------------- tests: versions

#[tokio::test]
async fn tls12_only_server_and_tls13_only_client_is_protocol_version() {
    let pki = Pki::new();
    let cfg = server_config(ServerSpec {
        chain: pki.chain(&pki.good),
        key: pki.good.key_der(),
        versions: ONLY12,
        client_ca: None,
        alpn: &[],
    });
    let (addr, server) = tls_server(cfg).await;
    let out = handshake_with_versions(
        connect(addr).await,
        &opts(SERVER_NAME),
        &pki.trust(),
        TlsVersions::Tls13Only,
    )
    .await;
    assert_failed(&out.result, FailureClass::TlsProtocolVersion);
    server.abort();
}

#[tokio::test]
async fn tls13_only_server_and_tls12_only_client_is_protocol_version() {
    let pki = Pki::new();
    let cfg = server_config(ServerSpec {
        chain: pki.chain(&pki.good),
        key: pki.good.key_der(),
        versions: ONLY13,
        client_ca: None,
        alpn: &[],
    });
    let (addr, server) = tls_server(cfg).await;
    let out = handshake_with_versions(
        connect(addr).await,
        &opts(SERVER_NAME),
        &pki.trust(),
        TlsVersions::Tls12Only,
    )
    .await;
    assert_failed(&out.result, FailureClass::TlsProtocolVersion);
    server.abort();
}

// ---------------------------------------------------------------- tests: client certificates

async fn probe_client_auth(
    pki: &Pki,
    versions: &'static [&'static SupportedProtocolVersion],
    identity: Option<Arc<ClientIdentity>>,
) -> (PhaseResult, bool) {
    let cfg = server_config(ServerSpec {
        chain: pki.chain(&pki.good),
        key: pki.good.key_der(),
        versions,
        client_ca: Some(&pki.root),
        alpn: &[],
    });
    let (addr, server) = tls_server(cfg).await;
    let mut o = opts(SERVER_NAME);
    o.client_identity = identity;
    let out = handshake(connect(addr).await, &o, &pki.trust()).await;
    server.abort();
    (out.result, out.stream.is_some())
}

#[tokio::test]
async fn client_cert_required_none_sent_tls13() {
    let pki = Pki::new();
    let (r, stream) = probe_client_auth(&pki, ONLY13, None).await;
    assert_failed(&r, FailureClass::TlsHandshakeFailure);
    assert!(!stream);
    let msg = r.message.as_deref().unwrap_or_default();
    assert!(
        msg.contains("none was sent") && msg.contains("certificate_required"),
        "{msg}"
    );
    let ev = evidence(&r);
    assert!(ev.client_certificate_requested && ev.client_certificate.is_none());
    assert_eq!(ev.client_ca_hints.len(), 1);
    assert!(
        ev.client_ca_hints[0].contains(ROOT_CN),
        "{:?}",
        ev.client_ca_hints
    );
    // The server certificate was fine; the anchor is still reported.
    assert!(ev.trust_anchor.is_some());
}

#[tokio::test]
async fn client_cert_required_none_sent_tls12() {
    let pki = Pki::new();
    let (r, _) = probe_client_auth(&pki, ONLY12, None).await;
    assert_failed(&r, FailureClass::TlsHandshakeFailure);
    let msg = r.message.as_deref().unwrap_or_default();
    assert!(msg.contains("none was sent"), "{msg}");
}

#[tokio::test]
async fn client_cert_accepted_tls13_and_tls12() {
    let pki = Pki::new();
    let id = pki.identity();
    for versions in [ONLY13, ONLY12] {
        let (r, stream) = probe_client_auth(&pki, versions, Some(Arc::clone(&id))).await;
        assert!(r.is_ok(), "{r:#?}");
        assert!(stream);
        let ev = evidence(&r);
        let cc = ev.client_certificate.expect("client certificate reported");
        assert_eq!(cc.subject, id.subject());
        assert_eq!(cc.sha256, id.sha256());
        assert!(cc.subject.contains("device-001"));
        if versions == ONLY13 {
            // Accepted on the session ticket, not by waiting out the window.
            let note = ev.post_handshake.unwrap_or_default();
            assert!(note.contains("session ticket"), "{note}");
        }
    }
}

#[tokio::test]
async fn client_cert_from_unknown_ca_is_rejected() {
    let pki = Pki::new();
    let id = Arc::new(
        ClientIdentity::load(
            &pki.path("foreign-client.pem"),
            &pki.path("foreign-client.key"),
        )
        .expect("identity"),
    );
    for versions in [ONLY13, ONLY12] {
        let (r, stream) = probe_client_auth(&pki, versions, Some(Arc::clone(&id))).await;
        assert_failed(&r, FailureClass::TlsHandshakeFailure);
        assert!(!stream);
        let msg = r.message.as_deref().unwrap_or_default();
        assert!(msg.contains("rejected the client certificate"), "{msg}");
        let ev = evidence(&r);
        assert!(ev.client_certificate.is_some());
        if versions == ONLY13 {
            // TLS 1.3: the rejection arrives after the client's handshake is done.
            let note = ev.post_handshake.unwrap_or_default();
            assert!(note.contains("fatal alert after the handshake"), "{note}");
        }
    }
}

// ---------------------------------------------------------------- tests: setup

#[test]
fn system_trust_store_loads() {
    let store = TrustStore::load(TrustSource::System, &[]).expect("system store loads");
    let summary = store.summary();
    eprintln!("system store: {summary}");
    assert_eq!(summary["source"], "system");
    assert_eq!(summary["total"], store.len());
    assert_eq!(store.is_empty(), store.anchors().is_empty());
    if !store.is_empty() {
        assert_eq!(summary["by_origin"]["system"], store.len());
        assert!(store
            .anchors()
            .iter()
            .all(|a| a.origin == "system" && !a.name.is_empty()));
    }
}

#[test]
fn trust_store_summary_counts_origins() {
    let pki = Pki::new();
    let two = pki.path("two.pem");
    std::fs::write(
        &two,
        format!("{}{}", pki.root.cert.pem(), pki.other_root.cert.pem()),
    )
    .expect("write");
    let store = TrustStore::load(TrustSource::Bundled, &[pki.path("root.pem"), two.clone()])
        .expect("store");
    let s = store.summary();
    assert_eq!(
        s["by_origin"][format!("ca-file:{}", pki.path("root.pem").display())],
        1
    );
    assert_eq!(s["by_origin"][format!("ca-file:{}", two.display())], 2);
    assert!(s["by_origin"]["bundled"].as_u64().unwrap_or(0) > 50);
    assert_eq!(store.anchors()[0].name, ROOT_CN);
    assert_eq!(store.anchors()[2].name, "Other Root");
}

#[test]
fn ca_file_errors_name_the_file() {
    let pki = Pki::new();
    let missing = pki.path("missing.pem");
    let empty = pki.path("empty.pem");
    std::fs::write(&empty, "no certificates here\n").expect("write");
    for (path, want) in [
        (&missing, "cannot read CA file"),
        (&empty, "contains no certificate"),
    ] {
        let err =
            TrustStore::load(TrustSource::None, std::slice::from_ref(path)).expect_err("must fail");
        let text = err.to_string();
        assert!(
            text.contains(&path.display().to_string()) && text.contains(want),
            "{text}"
        );
    }
    // A DER file is accepted too.
    let der = pki.path("root.der");
    std::fs::write(&der, pki.root.cert.der().as_ref()).expect("write");
    let store = TrustStore::load(TrustSource::None, &[der]).expect("der ca file");
    assert_eq!(store.len(), 1);
}

#[test]
fn client_identity_reports_subject_and_fingerprint() {
    let pki = Pki::new();
    let id = pki.identity();
    assert!(id.subject().contains("CN=device-001"), "{}", id.subject());
    assert_eq!(id.sha256().len(), 64);
    assert_eq!(id.chain_len(), 1);
    let debug = format!("{id:?}");
    assert!(!debug.contains("PRIVATE"), "{debug}");
}

/// The base64 lines of a PEM document (the secret part of a key file).
fn pem_body_lines(pem: &str) -> Vec<String> {
    pem.lines()
        .filter(|l| !l.starts_with("-----") && l.len() >= 16)
        .map(str::to_string)
        .collect()
}

#[track_caller]
fn assert_no_key_material(err: &TlsSetupError, key_pem: &str) {
    let shown = format!("{err} {err:?}");
    for line in pem_body_lines(key_pem) {
        assert!(!shown.contains(&line), "key material leaked: {shown}");
        assert!(!shown.contains(&line[..16]), "key material leaked: {shown}");
    }
}

#[test]
fn client_identity_errors_never_contain_key_material() {
    let pki = Pki::new();
    let key_pem = pki.client.key.serialize_pem();
    let other_key_pem = pki.foreign_client.key.serialize_pem();
    let cert = pki.path("client.pem");
    let key = pki.path("client.key");
    let w = |name: &str, content: &str| -> PathBuf {
        let p = pki.path(name);
        std::fs::write(&p, content).expect("write");
        p
    };
    // A corrupted key: valid PEM framing, base64 body with a flipped character.
    let mut corrupt = key_pem.clone();
    if let Some(pos) = corrupt.find("\n").map(|p| p + 10) {
        corrupt.replace_range(pos..pos + 4, "AAAA");
    }
    let corrupt_key = w("corrupt.key", &corrupt);
    // Broken base64 inside the key PEM.
    let bad_b64 = w("badb64.key", &key_pem.replacen('M', "*", 3));
    // The key where the certificate should be, and vice versa.
    let key_as_cert = w("key-as-cert.pem", &key_pem);
    let cert_as_key = w("cert-as-key.key", &pki.client.cert.pem());
    // A key that belongs to another certificate.
    let other_key = w("other.key", &other_key_pem);
    // An encrypted key marker.
    let encrypted = w(
        "enc.key",
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIFHDBOBgkqhkiG9w0BBQ0wQTApBgkqhkiG9w0BBQwwHAQI\n-----END ENCRYPTED PRIVATE KEY-----\n",
    );
    // A key PEM with its END line missing.
    let truncated = w(
        "trunc.key",
        key_pem.split("-----END").next().unwrap_or_default(),
    );
    let cases: Vec<(&Path, &Path, &str)> = vec![
        (&cert, &corrupt_key, &corrupt),
        (&cert, &bad_b64, &key_pem),
        (&key_as_cert, &key, &key_pem),
        (&cert, &cert_as_key, &key_pem),
        (&cert, &other_key, &other_key_pem),
        (
            &cert,
            &encrypted,
            "MIIFHDBOBgkqhkiG9w0BBQ0wQTApBgkqhkiG9w0BBQwwHAQI",
        ),
        (&cert, &truncated, &key_pem),
        (&cert, Path::new("/nonexistent/hubprobe.key"), &key_pem),
    ];
    for (c, k, secret) in cases {
        let err = ClientIdentity::load(c, k).expect_err("must fail");
        let text = err.to_string();
        // Names the file at fault.
        assert!(
            text.contains(&k.display().to_string()) || text.contains(&c.display().to_string()),
            "{text}"
        );
        assert_no_key_material(&err, secret);
        assert_no_key_material(&err, &key_pem);
    }
    // The mismatched key is reported as such.
    let err = ClientIdentity::load(&cert, &other_key).expect_err("mismatch");
    assert!(matches!(err, TlsSetupError::KeyMismatch { .. }), "{err}");
}

/// TLS 1.3 client auth against a server that sends no session tickets: the
/// probe must not lose application data the server sends first, and must
/// accept after its short wait when the server stays silent.
#[tokio::test]
async fn client_auth_check_keeps_server_data_and_accepts_silence() {
    let pki = Pki::new();
    for greeting in [Some(&b"hello"[..]), None] {
        let cfg = server_config(ServerSpec {
            chain: pki.chain(&pki.good),
            key: pki.good.key_der(),
            versions: ONLY13,
            client_ca: Some(&pki.root),
            alpn: &[],
        });
        let mut cfg = Arc::try_unwrap(cfg).unwrap_or_else(|a| (*a).clone());
        cfg.send_tls13_tickets = 0;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
        let (l, addr) = listener().await;
        let server = tokio::spawn(async move {
            let Ok(Ok((tcp, _))) = timeout(STEP, l.accept()).await else {
                return;
            };
            let Ok(Ok(mut tls)) = timeout(STEP, acceptor.accept(tcp)).await else {
                return;
            };
            if let Some(g) = greeting {
                let _ = timeout(STEP, tls.write_all(g)).await;
                let _ = timeout(STEP, tls.flush()).await;
            }
            let mut buf = [0u8; 16];
            let _ = timeout(STEP, tls.read(&mut buf)).await;
        });
        let mut o = opts(SERVER_NAME);
        o.client_identity = Some(pki.identity());
        let out = handshake(connect(addr).await, &o, &pki.trust()).await;
        assert!(out.result.is_ok(), "{:#?}", out.result);
        let note = evidence(&out.result).post_handshake.unwrap_or_default();
        let mut tls = out.stream.expect("stream");
        match greeting {
            Some(g) => {
                assert!(note.contains("application data"), "{note}");
                let mut buf = vec![0u8; g.len()];
                timeout(STEP, tls.read_exact(&mut buf))
                    .await
                    .expect("in time")
                    .expect("greeting still readable");
                assert_eq!(buf, g);
            }
            None => assert!(note.contains("no alert within"), "{note}"),
        }
        server.abort();
    }
}

//! Self-test of the integration-test lab (tests/common): every peer really
//! behaves as the lab says, before other tests rely on it.

mod common;

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use rustls::CertificateError;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

const SHORT: Duration = Duration::from_millis(500);

fn users() -> Vec<(String, String)> {
    vec![
        (hub_username(DEVICE_CN), hub_password(DEVICE_CN)),
        (hub_username("dev2"), hub_password("dev2")),
    ]
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

struct CertFacts {
    subject_cn: String,
    issuer_cn: String,
    not_before: i64,
    not_after: i64,
    dns_names: Vec<String>,
    ips: Vec<IpAddr>,
    is_ca: bool,
}

fn facts(der: &[u8]) -> CertFacts {
    let (_, cert) = X509Certificate::from_der(der).expect("parse certificate");
    let cn = |name: &x509_parser::x509::X509Name| {
        name.iter_common_name()
            .next()
            .and_then(|c| c.as_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let mut dns_names = Vec::new();
    let mut ips = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(n) => dns_names.push(n.to_string()),
                GeneralName::IPAddress(b) if b.len() == 4 => {
                    ips.push(IpAddr::from([b[0], b[1], b[2], b[3]]))
                }
                _ => {}
            }
        }
    }
    CertFacts {
        subject_cn: cn(cert.subject()),
        issuer_cn: cn(cert.issuer()),
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        dns_names,
        ips,
        is_ca: cert.is_ca(),
    }
}

fn hub_names() -> Vec<String> {
    vec![HUB_HOST.to_string(), "localhost".to_string()]
}

/// The rustls error inside an io::Error from tokio-rustls.
fn rustls_error(e: &io::Error) -> Option<&rustls::Error> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
}

/// Local addresses of sockets listening on TCP `port` (from /proc/net/tcp{,6}).
fn listening_on(port: u16) -> Vec<String> {
    let mut found = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() < 4 || cols[3] != "0A" {
                continue; // not LISTEN
            }
            if let Some((addr, p)) = cols[1].split_once(':') {
                if u16::from_str_radix(p, 16).ok() == Some(port) {
                    found.push(addr.to_string());
                }
            }
        }
    }
    found
}

#[test]
fn certs_match_their_description() {
    let c = Certs::generate();
    let now = now_unix();

    let ca = facts(&c.ca.cert_der);
    assert_eq!(ca.subject_cn, TEST_CA_CN);
    assert_eq!(ca.issuer_cn, TEST_CA_CN);
    assert!(ca.is_ca);
    let other = facts(&c.other_ca.cert_der);
    assert_eq!(other.subject_cn, OTHER_CA_CN);
    assert!(other.is_ca);

    for (what, id) in [
        ("server", &c.server),
        ("expired", &c.expired),
        ("not_yet_valid", &c.not_yet_valid),
        ("other_ca_server", &c.other_ca_server),
    ] {
        let f = facts(&id.cert_der);
        assert_eq!(f.dns_names, hub_names(), "{what} DNS SANs");
        assert_eq!(
            f.ips,
            vec![IpAddr::from(Ipv4Addr::LOCALHOST)],
            "{what} IP SANs"
        );
        assert!(!f.is_ca, "{what} is not a CA");
    }
    let server = facts(&c.server.cert_der);
    assert_eq!(server.issuer_cn, TEST_CA_CN);
    assert!(server.not_before < now && now < server.not_after);

    let expired = facts(&c.expired.cert_der);
    assert!(expired.not_after < now, "expired cert must be expired");
    assert_eq!(expired.issuer_cn, TEST_CA_CN);
    let notyet = facts(&c.not_yet_valid.cert_der);
    assert!(
        notyet.not_before > now,
        "not-yet-valid cert must start later"
    );
    let wrong = facts(&c.wrong_name.cert_der);
    assert_eq!(wrong.dns_names, vec![WRONG_HOST.to_string()]);
    assert!(wrong.ips.is_empty());
    assert_eq!(wrong.issuer_cn, TEST_CA_CN);
    assert_eq!(facts(&c.other_ca_server.cert_der).issuer_cn, OTHER_CA_CN);

    let dev = facts(&c.client.cert_der);
    assert_eq!(dev.subject_cn, DEVICE_CN);
    assert_eq!(dev.issuer_cn, TEST_CA_CN);

    for id in [&c.ca, &c.server, &c.client, &c.expired] {
        assert!(id
            .cert_pem_text()
            .starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(id.key_pem_text().contains("PRIVATE KEY-----"));
        assert!(id.fullchain_pem.is_file());
    }
    assert!(c.ca_pem().starts_with(c.dir()));
}

#[tokio::test]
async fn mosquitto_tls_listener_checks_user_and_password() {
    let m = Mosquitto::start(&users());
    let certs = m.certs().clone();
    let addr = m.addr("tls");

    let user = hub_username(DEVICE_CN);
    let pass = hub_password(DEVICE_CN);
    assert!(pass.len() > 100 && pass.contains(' '), "SAS-shaped: {pass}");

    let mut s = tls_connect(addr, HUB_HOST, certs.client_config())
        .await
        .expect("TLS to the hub listener with the test CA as root");
    let code = mqtt_connect(&mut s, DEVICE_CN, Some((&user, &pass)), STEP)
        .await
        .unwrap_or_else(|e| panic!("CONNECT: {e}\n{}", m.log()));
    assert_eq!(code, 0, "right user/password accepted\n{}", m.log());

    // mosquitto 2.0.11 answers a wrong password with CONNACK 5 (not
    // authorised), not 4 (bad user name or password).
    let mut s = tls_connect(addr, HUB_HOST, certs.client_config())
        .await
        .expect("TLS");
    let code = mqtt_connect(
        &mut s,
        DEVICE_CN,
        Some((&user, "SharedAccessSignature sr=x&sig=bad&se=1")),
        STEP,
    )
    .await
    .expect("CONNACK for a wrong password");
    assert_eq!(code, 5, "wrong password");

    // Another device's password for this user: also 5.
    let mut s = tls_connect(addr, HUB_HOST, certs.client_config())
        .await
        .expect("TLS");
    let code = mqtt_connect(
        &mut s,
        DEVICE_CN,
        Some((&user, &hub_password("dev2"))),
        STEP,
    )
    .await
    .expect("CONNACK");
    assert_eq!(code, 5, "other device's password");

    // No credentials on a non-anonymous listener: also 5.
    let mut s = tls_connect(addr, HUB_HOST, certs.client_config())
        .await
        .expect("TLS");
    let code = mqtt_connect(&mut s, DEVICE_CN, None, STEP)
        .await
        .expect("CONNACK");
    assert_eq!(code, 5, "anonymous on the hub listener");

    // The second user works too (several users in one password file).
    let mut s = tls_connect(addr, "localhost", certs.client_config())
        .await
        .expect("TLS with SNI localhost");
    let code = mqtt_connect(
        &mut s,
        "dev2",
        Some((&hub_username("dev2"), &hub_password("dev2"))),
        STEP,
    )
    .await
    .expect("CONNACK");
    assert_eq!(code, 0);

    let log = m.log();
    assert!(
        log.contains("api-version=2021-04-12"),
        "log_type all shows the user:\n{log}"
    );
}

#[tokio::test]
async fn mosquitto_binds_loopback_only_and_restarts() {
    let mut m = Mosquitto::start(&users());
    assert_eq!(m.ports().len(), LISTENERS.len());
    for &(name, port) in m.ports() {
        let on = listening_on(port);
        // 0100007F = 127.0.0.1 in /proc/net/tcp's little-endian hex.
        assert_eq!(
            on,
            vec!["0100007F".to_string()],
            "listener {name} (port {port})"
        );
    }

    let mut s = TcpStream::connect(m.addr("plain"))
        .await
        .expect("TCP plain");
    assert_eq!(
        mqtt_connect(&mut s, "anon", None, STEP)
            .await
            .expect("CONNACK"),
        0
    );

    let mut s = tls_connect(m.addr("tls_anon"), HUB_HOST, m.certs().client_config())
        .await
        .expect("TLS tls_anon");
    assert_eq!(
        mqtt_connect(&mut s, "anon", None, STEP)
            .await
            .expect("CONNACK"),
        0
    );

    m.stop();
    assert!(!m.is_running());
    let err = TcpStream::connect(m.addr("plain"))
        .await
        .expect_err("stopped");
    assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);

    m.start_again();
    assert!(m.is_running());
    let mut s = TcpStream::connect(m.addr("plain"))
        .await
        .expect("TCP plain again");
    assert_eq!(
        mqtt_connect(&mut s, "anon", None, STEP)
            .await
            .expect("CONNACK"),
        0
    );
}

#[tokio::test]
async fn mosquitto_wss_listener_upgrades_and_speaks_mqtt() {
    let m = Mosquitto::start(&users());
    let mut s = tls_connect(m.addr("wss"), HUB_HOST, m.certs().client_config())
        .await
        .expect("TLS to wss");
    s.write_all(ws_upgrade_request(HUB_HOST, "/mqtt").as_bytes())
        .await
        .expect("send upgrade");
    let head = read_http_head(&mut s, STEP)
        .await
        .expect("HTTP response head");
    assert!(head.starts_with("HTTP/1.1 101"), "upgrade refused:\n{head}");
    let lower = head.to_ascii_lowercase();
    assert!(lower.contains("sec-websocket-protocol: mqtt"), "{head}");
    assert!(
        lower.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "RFC 6455 accept key:\n{head}"
    );

    let connect = mqtt_connect_packet(
        DEVICE_CN,
        Some((&hub_username(DEVICE_CN), &hub_password(DEVICE_CN))),
    );
    s.write_all(&ws_binary_frame(&connect))
        .await
        .expect("send CONNECT frame");
    let (opcode, payload) = ws_read_frame(&mut s, STEP).await.expect("CONNACK frame");
    assert_eq!(opcode, 2, "binary frame");
    assert_eq!(
        parse_connack(&payload).expect("CONNACK"),
        Some(0),
        "\n{}",
        m.log()
    );
}

#[tokio::test]
async fn mosquitto_mtls_listener_takes_a_device_certificate() {
    let m = Mosquitto::start(&users());
    let certs = m.certs();
    let mut s = tls_connect(
        m.addr("mtls"),
        HUB_HOST,
        certs.client_config_with_device_cert(),
    )
    .await
    .expect("mTLS handshake");
    // IoT-Hub style: user name present, no password; mosquitto replaces the
    // user name by the certificate CN (use_identity_as_username).
    let code = mqtt_connect(&mut s, DEVICE_CN, None, STEP)
        .await
        .expect("CONNACK");
    assert_eq!(code, 0, "\n{}", m.log());
    assert!(
        m.log().contains("u'dev1'"),
        "CN used as user name:\n{}",
        m.log()
    );

    // IoT-Hub x509 style: the hub user name, no password (rumqttc omits an
    // empty password). mosquitto ignores the sent name in favour of the CN.
    let mut s = tls_connect(
        m.addr("mtls"),
        HUB_HOST,
        certs.client_config_with_device_cert(),
    )
    .await
    .expect("mTLS handshake");
    let code = mqtt_connect(
        &mut s,
        DEVICE_CN,
        Some((&hub_username(DEVICE_CN), "")),
        STEP,
    )
    .await
    .expect("CONNACK");
    assert_eq!(code, 0, "\n{}", m.log());

    // Without a client certificate: refused (TLS 1.3 reports it after the
    // client's handshake finished, so it may surface on the first read).
    let outcome = async {
        let mut s = tls_connect(m.addr("mtls"), HUB_HOST, certs.client_config()).await?;
        mqtt_connect(&mut s, DEVICE_CN, None, STEP).await
    }
    .await;
    assert!(
        outcome.is_err(),
        "no client cert must fail, got {outcome:?}"
    );
}

#[tokio::test]
async fn mosquitto_bad_cert_listeners_present_their_bad_certs() {
    let m = Mosquitto::start(&users());
    let now = now_unix();
    for name in ["tls_expired", "tls_notyet", "tls_wrongname", "tls_otherca"] {
        let s = tls_connect_insecure(m.addr(name), HUB_HOST)
            .await
            .unwrap_or_else(|e| panic!("{name}: insecure TLS: {e}"));
        let der = peer_certificate(&s).expect("server certificate");
        let f = facts(&der);
        match name {
            "tls_expired" => assert!(f.not_after < now, "{name}: notAfter {}", f.not_after),
            "tls_notyet" => assert!(f.not_before > now, "{name}: notBefore {}", f.not_before),
            "tls_wrongname" => assert_eq!(f.dns_names, vec![WRONG_HOST.to_string()]),
            _ => assert_eq!(f.issuer_cn, OTHER_CA_CN),
        }

        let err = tls_connect(m.addr(name), HUB_HOST, m.certs().client_config())
            .await
            .expect_err("verification against the test CA must fail");
        let cert_err = match rustls_error(&err) {
            Some(rustls::Error::InvalidCertificate(c)) => c.clone(),
            other => panic!("{name}: expected a certificate error, got {other:?} ({err})"),
        };
        let ok = match name {
            "tls_expired" => matches!(
                cert_err,
                CertificateError::Expired | CertificateError::ExpiredContext { .. }
            ),
            "tls_notyet" => matches!(
                cert_err,
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. }
            ),
            "tls_wrongname" => matches!(
                cert_err,
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }
            ),
            _ => matches!(cert_err, CertificateError::UnknownIssuer),
        };
        assert!(ok, "{name}: unexpected {cert_err:?}");
    }
    // The good listener verifies for every SAN.
    for sni in [HUB_HOST, "localhost", "127.0.0.1"] {
        tls_connect(m.addr("tls_anon"), sni, m.certs().client_config())
            .await
            .unwrap_or_else(|e| panic!("good cert for {sni}: {e}"));
    }
}

#[test]
fn dnsmasq_serves_the_test_zone() {
    let dns = Dns::start();
    let server = dns.addr();
    assert_eq!(server.ip(), IpAddr::from(Ipv4Addr::LOCALHOST));
    let t = Duration::from_secs(2);

    let r = dns_query(server, HUB_HOST, QTYPE_A, t).expect("A hub");
    assert_eq!(r.rcode, 0);
    assert_eq!(r.addresses(), vec![IpAddr::from(Ipv4Addr::LOCALHOST)]);
    assert_eq!(r.answers[0].ttl, 60);
    assert_eq!(r.question, Some((HUB_HOST.to_string(), QTYPE_A)));

    let r = dns_query_tcp(server, HUB_HOST, QTYPE_A, t).expect("A hub over TCP");
    assert_eq!(r.addresses(), vec![IpAddr::from(Ipv4Addr::LOCALHOST)]);

    let r = dns_query(server, "alias.hubprobe.test", QTYPE_A, t).expect("A alias");
    assert_eq!(r.rcode, 0);
    assert_eq!(r.answers[0].data, RData::Cname(HUB_HOST.to_string()));
    assert_eq!(r.addresses(), vec![IpAddr::from(Ipv4Addr::LOCALHOST)]);

    let r = dns_query(server, "v6.hubprobe.test", QTYPE_AAAA, t).expect("AAAA v6");
    assert_eq!(r.addresses(), vec![IpAddr::from(Ipv6Addr::LOCALHOST)]);
    let r = dns_query(server, "v6.hubprobe.test", QTYPE_A, t).expect("A v6");
    assert_eq!((r.rcode, r.answers.len()), (0, 0), "NODATA");

    let r = dns_query(server, "dual.hubprobe.test", QTYPE_A, t).expect("A dual");
    assert_eq!(r.addresses(), vec![IpAddr::from(Ipv4Addr::LOCALHOST)]);
    let r = dns_query(server, "dual.hubprobe.test", QTYPE_AAAA, t).expect("AAAA dual");
    assert_eq!(r.addresses(), vec![IpAddr::from(Ipv6Addr::LOCALHOST)]);

    let r = dns_query(server, "nope.hubprobe.test", QTYPE_A, t).expect("A nope");
    assert_eq!(r.rcode, 3, "NXDOMAIN");

    assert!(
        dns.log().contains("query[A] hub.hubprobe.test"),
        "{}",
        dns.log()
    );
}

#[tokio::test]
async fn tcp_fault_servers_behave_as_named() {
    // refused
    let err = TcpStream::connect(refused_port())
        .await
        .expect_err("refused");
    assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);

    // silent: connects, swallows, never answers
    let srv = silent();
    let mut s = TcpStream::connect(srv.addr())
        .await
        .expect("connect silent");
    s.write_all(b"hello").await.expect("write");
    let mut buf = [0u8; 16];
    let r = tokio::time::timeout(SHORT, s.read(&mut buf)).await;
    assert!(r.is_err(), "silent server answered: {r:?}");
    assert_eq!(srv.accepted(), 1);

    // reset: RST
    let srv = reset();
    // The RST may arrive before connect() returns (then connect itself reports it)
    // or after (then the first read does).
    let kind = match TcpStream::connect(srv.addr()).await {
        Err(e) => e.kind(),
        Ok(mut s) => tokio::time::timeout(STEP, s.read(&mut buf))
            .await
            .expect("bounded")
            .expect_err("reset")
            .kind(),
    };
    assert_eq!(kind, io::ErrorKind::ConnectionReset);

    // reset after the first bytes
    let srv = reset_after_read();
    let mut s = TcpStream::connect(srv.addr()).await.expect("connect");
    s.write_all(b"\x16\x03\x01").await.expect("write");
    let r = tokio::time::timeout(STEP, s.read(&mut buf))
        .await
        .expect("bounded");
    assert_eq!(r.expect_err("reset").kind(), io::ErrorKind::ConnectionReset);

    // garbage: the bytes, then FIN
    let srv = garbage(b"HTTP/1.0 400 nope\r\n\r\n".to_vec());
    let mut s = TcpStream::connect(srv.addr())
        .await
        .expect("connect garbage");
    let started = Instant::now();
    let mut got = Vec::new();
    tokio::time::timeout(STEP, s.read_to_end(&mut got))
        .await
        .expect("garbage server closes within its linger")
        .expect("read");
    assert_eq!(got, b"HTTP/1.0 400 nope\r\n\r\n");
    assert!(started.elapsed() < STEP);

    // closes: EOF right away
    let srv = closes();
    let mut s = TcpStream::connect(srv.addr())
        .await
        .expect("connect closes");
    let n = tokio::time::timeout(STEP, s.read(&mut buf))
        .await
        .expect("bounded")
        .expect("clean EOF");
    assert_eq!(n, 0);
}

#[tokio::test]
async fn tls_fault_servers_behave_as_named() {
    let certs = Certs::generate();

    // Silent after the handshake: no CONNACK.
    let srv = tls_then(&certs, TlsThen::Silent);
    let mut s = tls_connect(srv.addr(), HUB_HOST, certs.client_config())
        .await
        .expect("handshake");
    let err = mqtt_connect(&mut s, "d", None, SHORT)
        .await
        .expect_err("no CONNACK");
    assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    assert_eq!(srv.handshakes(), 1);

    // Garbage after the handshake.
    let srv = tls_then(&certs, TlsThen::Garbage(b"\xff\xfenot mqtt".to_vec()));
    let mut s = tls_connect(srv.addr(), HUB_HOST, certs.client_config())
        .await
        .expect("handshake");
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(STEP, s.read(&mut buf))
        .await
        .expect("bounded")
        .expect("read garbage");
    assert_eq!(&buf[..n], b"\xff\xfenot mqtt");

    // Close after the handshake.
    let srv = tls_then(&certs, TlsThen::Close);
    let mut s = tls_connect(srv.addr(), HUB_HOST, certs.client_config())
        .await
        .expect("handshake");
    let err = mqtt_connect(&mut s, "d", None, STEP)
        .await
        .expect_err("closed");
    assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "{err}");

    // CONNACK with a chosen code; the CONNECT is recorded.
    for code in [0u8, 3, 4, 5] {
        let srv = tls_then(&certs, TlsThen::Connack(code));
        let mut s = tls_connect(srv.addr(), HUB_HOST, certs.client_config())
            .await
            .expect("handshake");
        let got = mqtt_connect(&mut s, DEVICE_CN, Some(("u/s?x=1", "p w&d")), STEP)
            .await
            .expect("CONNACK");
        assert_eq!(got, code);
        let seen = srv.connects();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].client_id, DEVICE_CN);
        assert_eq!(seen[0].username.as_deref(), Some("u/s?x=1"));
        assert_eq!(seen[0].password.as_deref(), Some("p w&d"));
        assert_eq!(seen[0].keep_alive, 30);
    }

    // Serving a bad identity works too.
    let srv = tls_then_with(&certs, &certs.expired, TlsThen::Close);
    let err = tls_connect(srv.addr(), HUB_HOST, certs.client_config())
        .await
        .expect_err("expired");
    assert!(matches!(
        rustls_error(&err),
        Some(rustls::Error::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. }
        ))
    ));
}

#[test]
fn dns_fault_servers_behave_as_named() {
    for rcode in [2u8, 5] {
        let srv = dns_rcode(rcode);
        let r = dns_query(srv.addr(), HUB_HOST, QTYPE_A, Duration::from_secs(2)).expect("reply");
        assert_eq!(r.rcode, rcode);
        assert!(r.answers.is_empty());
        assert_eq!(r.question, Some((HUB_HOST.to_string(), QTYPE_A)));
        assert_ne!(r.flags & 0x8000, 0, "QR set");
        assert_eq!(srv.accepted(), 1);
    }
    let srv = dns_silent();
    let err = dns_query(srv.addr(), HUB_HOST, QTYPE_A, SHORT).expect_err("silence");
    assert!(
        matches!(
            err.kind(),
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
        ),
        "{err:?}"
    );
    assert_eq!(srv.accepted(), 1);
}

#[test]
fn netns_black_hole_times_out_instead_of_refusing() {
    let ns = Netns::new();
    let ports = free_ports(2);
    let (holed, open) = (ports[0], ports[1]);
    ns.blackhole_tcp(holed);
    assert!(ns.nft_list().contains("hubprobe_blackhole"));

    let connect = |port: u16| {
        let script = format!("exec 3<>/dev/tcp/127.0.0.1/{port}");
        ns.exec(
            &["timeout", "2", "bash", "-c", &script],
            Duration::from_secs(6),
        )
    };
    // Control: nothing listens inside the namespace, so a refusal, at once.
    let e = connect(open);
    assert_eq!(e.status.code(), Some(1), "{e:?}");
    assert!(e.stderr.contains("Connection refused"), "{e:?}");
    assert!(e.elapsed < Duration::from_secs(1), "{e:?}");
    // Black hole: no answer to the SYN; `timeout` kills it (exit 124).
    let e = connect(holed);
    assert!(!e.timed_out, "our own bound must not be hit: {e:?}");
    assert_eq!(e.status.code(), Some(124), "{e:?}");
    assert!(e.elapsed >= Duration::from_millis(1900), "{e:?}");

    // The same from inside the test process (setns on a helper thread).
    let (refused, holed_result) = ns.run(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let to = |p: u16| SocketAddr::from((Ipv4Addr::LOCALHOST, p));
            let refused =
                tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(to(open)))
                    .await
                    .map(|r| r.map_err(|e| e.kind()).map(|_| ()));
            let holed = tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(to(holed)))
                .await
                .map(|r| r.map_err(|e| e.kind()).map(|_| ()));
            (refused, holed)
        })
    });
    assert_eq!(refused, Ok(Err(io::ErrorKind::ConnectionRefused)));
    assert!(holed_result.is_err(), "timed out: {holed_result:?}");
}

#[test]
fn mosquitto_failure_to_start_panics_with_its_log() {
    let mut m = Mosquitto::start(&[]);
    m.stop();
    // Someone takes the plain listener's port while the broker is down.
    let squatter = std::net::TcpListener::bind(m.addr("plain")).expect("take the port");
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| m.start_again()));
    drop(squatter);
    let payload = result.expect_err("start_again must panic when a port is taken");
    let msg = payload
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(msg.contains("did not start again"), "{msg}");
    assert!(
        msg.contains("Address already in use"),
        "log included: {msg}"
    );
    assert!(!m.is_running());
}

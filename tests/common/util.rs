//! Small helpers shared by the lab and by tests: free ports, bounded waits,
//! a TLS client, a hand-rolled MQTT CONNECT / CONNACK exchange and the bits of
//! WebSocket framing needed to talk MQTT over WSS.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream as StdTcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rumqttc::mqttbytes::v4::{Connect, Packet};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::certs::ring_provider;

/// Default bound for one lab step (connect, handshake, one exchange).
pub const STEP: Duration = Duration::from_secs(5);

/// A port on 127.0.0.1 that was free a moment ago (see [`free_ports`]).
pub fn free_port() -> u16 {
    free_ports(1)[0]
}

/// Lab ports come from below the kernel's ephemeral range (32768–60999 by default):
/// an outgoing connection of any test can take an ephemeral port as its local port
/// at any time, so a listener that is stopped and started again (a broker outage)
/// on an ephemeral port can find it taken; below the range only another listener
/// can take it, and every lab listener checks before it uses one.
const LAB_PORTS: std::ops::Range<u16> = 20_000..32_000;

/// `n` distinct ports on 127.0.0.1 that were free a moment ago, from [`LAB_PORTS`]:
/// candidates start at a place that differs per process and per call, and each is
/// held open (TCP) until all are picked, so they are distinct and free.
pub fn free_ports(n: usize) -> Vec<u16> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static CALLS: AtomicU32 = AtomicU32::new(0);
    let span = u32::from(LAB_PORTS.end - LAB_PORTS.start);
    let call = CALLS.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let mut next =
        (std::process::id().wrapping_mul(7919) ^ nanos ^ call.wrapping_mul(104_729)) % span;
    let mut held: Vec<TcpListener> = Vec::with_capacity(n);
    for _ in 0..span {
        if held.len() == n {
            break;
        }
        let port = LAB_PORTS.start + next as u16;
        next = (next + 1) % span;
        if let Ok(l) = TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)) {
            held.push(l);
        }
    }
    assert_eq!(held.len(), n, "no {n} free lab ports in {LAB_PORTS:?}");
    held.iter()
        .map(|l| l.local_addr().expect("local addr").port())
        .collect()
}

/// Polls (bounded by `timeout`) until `addr` accepts a TCP connection.
pub fn wait_for_tcp(addr: SocketAddr, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    for _ in 0..10_000 {
        if StdTcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Path of a program, looked up in the usual sbin/bin directories and then
/// `$PATH` (sbin is often missing from a non-login `$PATH`).
pub fn find_program(name: &str) -> Option<PathBuf> {
    let fixed = [
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
        "/usr/local/sbin",
        "/usr/local/bin",
    ];
    let from_env: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    fixed
        .iter()
        .map(PathBuf::from)
        .chain(from_env)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn timed_out(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, format!("{what} timed out"))
}

/// TCP connect + TLS handshake to `addr`, verifying against `config` with
/// `server_name` as SNI / expected name. Each step bounded by [`STEP`].
pub async fn tls_connect(
    addr: SocketAddr,
    server_name: &str,
    config: Arc<ClientConfig>,
) -> io::Result<TlsStream<TcpStream>> {
    let tcp = tokio::time::timeout(STEP, TcpStream::connect(addr))
        .await
        .map_err(|_| timed_out("TCP connect"))??;
    let name = ServerName::try_from(server_name.to_string())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    tokio::time::timeout(STEP, TlsConnector::from(config).connect(name, tcp))
        .await
        .map_err(|_| timed_out("TLS handshake"))?
}

/// Accepts any server certificate: for inspecting what a server presents.
#[derive(Debug)]
pub struct AcceptAnyCert;

impl ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        ring_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Like [`tls_connect`] but accepts whatever certificate the server sends.
pub async fn tls_connect_insecure(
    addr: SocketAddr,
    server_name: &str,
) -> io::Result<TlsStream<TcpStream>> {
    let config = ClientConfig::builder_with_provider(ring_provider())
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyCert))
        .with_no_client_auth();
    tls_connect(addr, server_name, Arc::new(config)).await
}

/// The end-entity certificate the server presented.
pub fn peer_certificate(stream: &TlsStream<TcpStream>) -> Option<CertificateDer<'static>> {
    stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.clone().into_owned())
}

/// An MQTT 3.1.1 CONNECT packet (clean session, keep-alive 30 s).
pub fn mqtt_connect_packet(client_id: &str, login: Option<(&str, &str)>) -> Vec<u8> {
    let mut connect = Connect::new(client_id);
    connect.keep_alive = 30;
    if let Some((user, pass)) = login {
        connect.set_login(user, pass);
    }
    let mut buf = BytesMut::new();
    connect.write(&mut buf).expect("encode CONNECT");
    buf.to_vec()
}

/// Decodes a CONNACK from `bytes`; `Ok(None)` if more bytes are needed.
pub fn parse_connack(bytes: &[u8]) -> io::Result<Option<u8>> {
    let mut buf = BytesMut::from(bytes);
    match Packet::read(&mut buf, 1024) {
        Ok(Packet::ConnAck(ack)) => Ok(Some(ack.code as u8)),
        Ok(other) => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("expected CONNACK, got {other:?}"),
        )),
        Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => Ok(None),
        Err(e) => Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string())),
    }
}

/// Sends CONNECT on `stream` and waits (bounded by `wait`) for the CONNACK;
/// returns its return code (0 = accepted). A closed stream before CONNACK is
/// `UnexpectedEof`, no answer in time is `TimedOut`.
pub async fn mqtt_connect<S>(
    stream: &mut S,
    client_id: &str,
    login: Option<(&str, &str)>,
    wait: Duration,
) -> io::Result<u8>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    stream
        .write_all(&mqtt_connect_packet(client_id, login))
        .await?;
    stream.flush().await?;
    let exchange = async {
        let mut got = Vec::new();
        let mut chunk = [0u8; 256];
        for _ in 0..64 {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("closed before CONNACK after {} bytes", got.len()),
                ));
            }
            got.extend_from_slice(&chunk[..n]);
            if let Some(code) = parse_connack(&got)? {
                return Ok(code);
            }
        }
        Err(io::Error::new(io::ErrorKind::InvalidData, "no CONNACK"))
    };
    tokio::time::timeout(wait, exchange)
        .await
        .map_err(|_| timed_out("waiting for CONNACK"))?
}

/// A WebSocket upgrade request (subprotocol `mqtt`), as MQTT-over-WSS clients
/// send it.
pub fn ws_upgrade_request(host: &str, path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\n\
         Host: {host}\r\n\
         Upgrade: websocket\r\n\
         Connection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: mqtt\r\n\
         \r\n"
    )
}

/// Reads an HTTP response head (up to the blank line), bounded by `wait` and 16 KiB.
pub async fn read_http_head<S>(stream: &mut S, wait: Duration) -> io::Result<String>
where
    S: AsyncRead + Unpin,
{
    let read = async {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while head.len() < 16 * 1024 {
            if stream.read(&mut byte).await? == 0 {
                break;
            }
            head.push(byte[0]);
            if head.ends_with(b"\r\n\r\n") {
                break;
            }
        }
        Ok(String::from_utf8_lossy(&head).into_owned())
    };
    tokio::time::timeout(wait, read)
        .await
        .map_err(|_| timed_out("reading HTTP head"))?
}

/// A masked client-to-server WebSocket binary frame carrying `payload`.
pub fn ws_binary_frame(payload: &[u8]) -> Vec<u8> {
    let mask = [0x37u8, 0xfa, 0x21, 0x3d];
    let mut frame = vec![0x82];
    let len = payload.len();
    if len < 126 {
        frame.push(0x80 | len as u8);
    } else if len <= 0xffff {
        frame.push(0x80 | 126);
        frame.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        frame.push(0x80 | 127);
        frame.extend_from_slice(&(len as u64).to_be_bytes());
    }
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

/// Reads one WebSocket frame (bounded by `wait`, payload at most 1 MiB);
/// returns (opcode, unmasked payload).
pub async fn ws_read_frame<S>(stream: &mut S, wait: Duration) -> io::Result<(u8, Vec<u8>)>
where
    S: AsyncRead + Unpin,
{
    let read = async {
        let mut h = [0u8; 2];
        stream.read_exact(&mut h).await?;
        let opcode = h[0] & 0x0f;
        let masked = h[1] & 0x80 != 0;
        let mut len = u64::from(h[1] & 0x7f);
        if len == 126 {
            let mut b = [0u8; 2];
            stream.read_exact(&mut b).await?;
            len = u64::from(u16::from_be_bytes(b));
        } else if len == 127 {
            let mut b = [0u8; 8];
            stream.read_exact(&mut b).await?;
            len = u64::from_be_bytes(b);
        }
        if len > 1 << 20 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "frame too large",
            ));
        }
        let mut mask = [0u8; 4];
        if masked {
            stream.read_exact(&mut mask).await?;
        }
        let mut payload = vec![0u8; len as usize];
        stream.read_exact(&mut payload).await?;
        if masked {
            payload
                .iter_mut()
                .enumerate()
                .for_each(|(i, b)| *b ^= mask[i % 4]);
        }
        Ok((opcode, payload))
    };
    tokio::time::timeout(wait, read)
        .await
        .map_err(|_| timed_out("reading WebSocket frame"))?
}

//! In-process fault servers: peers that misbehave on purpose.
//!
//! Each server runs on its own thread with its own single-threaded tokio
//! runtime, so it works the same from sync tests and from `#[tokio::test]`
//! (of either flavour). It binds 127.0.0.1:0 before the constructor returns,
//! and stops on drop: the runtime is dropped, which cancels every connection
//! task and closes its socket. Each server also gives up by itself after
//! [`MAX_LIFETIME`], accepts at most [`MAX_ACCEPTS`] connections and holds a
//! connection at most [`MAX_HOLD`].

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener as StdTcpListener, UdpSocket};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::BytesMut;
use rumqttc::mqttbytes::v4::Packet;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio_rustls::TlsAcceptor;

use super::certs::{Certs, Identity};

/// A fault server gives up by itself after this long.
pub const MAX_LIFETIME: Duration = Duration::from_secs(300);
/// A fault server accepts at most this many connections / datagrams.
pub const MAX_ACCEPTS: usize = 1_000;
/// A fault server holds one connection at most this long.
pub const MAX_HOLD: Duration = Duration::from_secs(120);
/// `garbage` / `TlsThen::Garbage` keep the connection this long after writing.
pub const GARBAGE_LINGER: Duration = Duration::from_secs(2);

/// What a [`tls_then`] server does once the TLS handshake is done.
#[derive(Clone, Debug)]
pub enum TlsThen {
    /// Reads and discards; never sends anything (no CONNACK).
    Silent,
    /// Writes these bytes as application data, keeps the connection a little, closes.
    Garbage(Vec<u8>),
    /// Sends close_notify and closes.
    Close,
    /// Reads one MQTT CONNECT (rumqttc v4 codec), answers CONNACK with this
    /// return code, then answers PINGREQ with PINGRESP until the client leaves.
    /// Any code 0..=255 is sent as is.
    Connack(u8),
    /// Like `Garbage`, with `{date}` in the bytes replaced by this moment's HTTP
    /// date on each connection (an HTTPS peer whose `Date` keeps time).
    HttpNow(String),
    /// Like `Connack(0)`, but every PINGRESP comes this late (a stalling path or server).
    SlowPings(Duration),
}

/// A CONNECT a [`TlsThen::Connack`] server received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeenConnect {
    pub client_id: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub keep_alive: u16,
    pub clean_session: bool,
}

#[derive(Default)]
struct Shared {
    accepted: AtomicUsize,
    handshakes: AtomicUsize,
    connects: Mutex<Vec<SeenConnect>>,
}

/// A running fault server; stops on drop.
pub struct FaultServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl FaultServer {
    /// `127.0.0.1:<port>` it listens on (TCP, or UDP for the DNS faults).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// TCP connections accepted (or, for DNS faults, datagrams received).
    pub fn accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// TLS handshakes completed ([`tls_then`] only).
    pub fn handshakes(&self) -> usize {
        self.shared.handshakes.load(Ordering::SeqCst)
    }

    /// CONNECT packets received ([`TlsThen::Connack`] only).
    pub fn connects(&self) -> Vec<SeenConnect> {
        self.shared.connects.lock().expect("lock").clone()
    }
}

impl Drop for FaultServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Runs `serve` on a dedicated thread + current-thread runtime until the
/// returned server is dropped or [`MAX_LIFETIME`] passes.
fn spawn_server<F, Fut>(name: &str, addr: SocketAddr, serve: F) -> FaultServer
where
    F: FnOnce(Arc<Shared>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let shared = Arc::new(Shared::default());
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let s = shared.clone();
    let thread = std::thread::Builder::new()
        .name(format!("fault-{name}"))
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("fault server runtime");
            rt.block_on(async move {
                tokio::select! {
                    _ = stop_rx => {}
                    _ = serve(s) => {}
                    _ = tokio::time::sleep(MAX_LIFETIME) => {}
                }
            });
            // Dropping the runtime cancels all connection tasks (closing their sockets).
            rt.shutdown_timeout(Duration::from_secs(1));
        })
        .expect("spawn fault server thread");
    FaultServer {
        addr,
        shared,
        stop: Some(stop_tx),
        thread: Some(thread),
    }
}

fn bind_tcp() -> (StdTcpListener, SocketAddr) {
    let l =
        StdTcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
    l.set_nonblocking(true).expect("nonblocking");
    let addr = l.local_addr().expect("local addr");
    (l, addr)
}

/// Accept loop: for each connection (up to [`MAX_ACCEPTS`]) spawns `handle`.
fn tcp_server<H, Fut>(name: &str, handle: H) -> FaultServer
where
    H: Fn(TcpStream, Arc<Shared>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (listener, addr) = bind_tcp();
    spawn_server(name, addr, move |shared| async move {
        let listener = TcpListener::from_std(listener).expect("tokio listener");
        for _ in 0..MAX_ACCEPTS {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            shared.accepted.fetch_add(1, Ordering::SeqCst);
            // Reply at once, as a hub does, instead of waiting on the client's delayed ACK.
            let _ = stream.set_nodelay(true);
            let fut = handle(stream, shared.clone());
            tokio::spawn(fut);
        }
        // Keep the listener open (connections queue, none accepted) until stopped.
        std::future::pending::<()>().await;
    })
}

/// Reads and discards until EOF, error, or `limit`.
async fn drain<S: AsyncRead + Unpin>(s: &mut S, limit: Duration) {
    let _ = tokio::time::timeout(limit, async {
        let mut buf = [0u8; 4096];
        for _ in 0..1_000_000 {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
}

/// A 127.0.0.1 port with nothing listening (bound, read, closed: connecting
/// gets "connection refused" unless something grabs it meanwhile).
pub fn refused_port() -> SocketAddr {
    let (l, addr) = bind_tcp();
    drop(l);
    addr
}

/// Accepts TCP, reads everything, never answers, holds the connection
/// (until drop or [`MAX_HOLD`]).
pub fn silent() -> FaultServer {
    tcp_server("silent", |mut s, _| async move {
        drain(&mut s, MAX_HOLD).await;
    })
}

fn set_zero_linger(s: &TcpStream) {
    socket2::SockRef::from(s)
        .set_linger(Some(Duration::ZERO))
        .expect("SO_LINGER 0");
}

/// Accepts, then closes with SO_LINGER 0: the client gets a TCP RST.
pub fn reset() -> FaultServer {
    tcp_server("reset", |s, _| async move {
        set_zero_linger(&s);
        drop(s);
    })
}

/// Accepts, waits for the client's first bytes (e.g. a TLS ClientHello or an
/// MQTT CONNECT; at most 10 s), then resets (RST).
pub fn reset_after_read() -> FaultServer {
    tcp_server("reset-after-read", |mut s, _| async move {
        let mut buf = [0u8; 4096];
        let _ = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await;
        set_zero_linger(&s);
        drop(s);
    })
}

/// Accepts, writes `bytes`, keeps the connection [`GARBAGE_LINGER`] (or
/// until the client closes), then closes (FIN).
pub fn garbage(bytes: impl Into<Vec<u8>>) -> FaultServer {
    let bytes: Arc<Vec<u8>> = Arc::new(bytes.into());
    tcp_server("garbage", move |mut s, _| {
        let bytes = bytes.clone();
        async move {
            let _ = s.write_all(&bytes).await;
            let _ = s.flush().await;
            drain(&mut s, GARBAGE_LINGER).await;
            let _ = s.shutdown().await;
        }
    })
}

/// Accepts and closes at once (FIN, not RST).
pub fn closes() -> FaultServer {
    tcp_server("closes", |mut s, _| async move {
        let _ = s.shutdown().await;
        drop(s);
    })
}

/// A TLS server presenting the good server certificate of `certs`, then
/// behaving as `then`.
pub fn tls_then(certs: &Certs, then: TlsThen) -> FaultServer {
    tls_then_with(certs, &certs.server, then)
}

/// Like [`tls_then`] but presenting `identity` (e.g. `certs.expired`).
pub fn tls_then_with(certs: &Certs, identity: &Identity, then: TlsThen) -> FaultServer {
    let acceptor = TlsAcceptor::from(certs.server_config(identity));
    tcp_server("tls", move |tcp, shared| {
        let acceptor = acceptor.clone();
        let then = then.clone();
        async move {
            let hs = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await;
            let Ok(Ok(mut tls)) = hs else {
                return;
            };
            shared.handshakes.fetch_add(1, Ordering::SeqCst);
            match then {
                TlsThen::Silent => drain(&mut tls, MAX_HOLD).await,
                TlsThen::Garbage(_) | TlsThen::HttpNow(_) => {
                    let bytes = match then {
                        TlsThen::HttpNow(t) => t
                            .replace(
                                "{date}",
                                &httpdate::fmt_http_date(std::time::SystemTime::now()),
                            )
                            .into_bytes(),
                        TlsThen::Garbage(b) => b,
                        _ => unreachable!(),
                    };
                    let _ = tls.write_all(&bytes).await;
                    let _ = tls.flush().await;
                    drain(&mut tls, GARBAGE_LINGER).await;
                    let _ = tls.shutdown().await;
                }
                TlsThen::Close => {
                    let _ = tls.shutdown().await;
                }
                TlsThen::Connack(code) => {
                    let _ = tokio::time::timeout(
                        MAX_HOLD,
                        serve_mqtt(&mut tls, code, Duration::ZERO, &shared),
                    )
                    .await;
                    let _ = tls.shutdown().await;
                }
                TlsThen::SlowPings(delay) => {
                    let _ = tokio::time::timeout(MAX_HOLD, serve_mqtt(&mut tls, 0, delay, &shared))
                        .await;
                    let _ = tls.shutdown().await;
                }
            }
        }
    })
}

/// Minimal MQTT 3.1.1 server side: CONNECT -> CONNACK(code), then PINGREQ ->
/// PINGRESP, until DISCONNECT / EOF / a decode error.
async fn serve_mqtt<S>(s: &mut S, code: u8, ping_delay: Duration, shared: &Shared) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf = BytesMut::with_capacity(4096);
    let mut connected = false;
    for _ in 0..10_000 {
        match Packet::read(&mut buf, 64 * 1024) {
            Ok(Packet::Connect(c)) if !connected => {
                connected = true;
                shared.connects.lock().expect("lock").push(SeenConnect {
                    client_id: c.client_id.clone(),
                    username: c.login.as_ref().map(|l| l.username.clone()),
                    password: c.login.as_ref().map(|l| l.password.clone()),
                    keep_alive: c.keep_alive,
                    clean_session: c.clean_session,
                });
                s.write_all(&[0x20, 0x02, 0x00, code]).await?;
                s.flush().await?;
                if code != 0 {
                    return Ok(());
                }
            }
            Ok(Packet::PingReq) if connected => {
                tokio::time::sleep(ping_delay).await;
                s.write_all(&[0xd0, 0x00]).await?;
                s.flush().await?;
            }
            Ok(Packet::Disconnect) => return Ok(()),
            Ok(_) if connected => {}
            Ok(_) => return Ok(()), // anything but CONNECT first: hang up
            Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => {
                if s.read_buf(&mut buf).await? == 0 {
                    return Ok(());
                }
            }
            Err(_) => return Ok(()),
        }
    }
    Ok(())
}

fn bind_udp() -> (UdpSocket, SocketAddr) {
    let s = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0)).expect("bind UDP");
    s.set_nonblocking(true).expect("nonblocking");
    let addr = s.local_addr().expect("local addr");
    (s, addr)
}

/// The bytes of the question section (name + type + class) starting at 12.
fn question_len(q: &[u8]) -> Option<usize> {
    let mut pos = 12;
    for _ in 0..128 {
        let len = *q.get(pos)? as usize;
        if len == 0 {
            let end = pos + 1 + 4;
            return (end <= q.len()).then_some(end - 12);
        }
        if len & 0xc0 != 0 {
            return None;
        }
        pos += 1 + len;
    }
    None
}

/// A reply to `query` with `rcode`: same ID, opcode and RD; QR and RA set;
/// the question copied; no records.
pub fn rcode_reply(query: &[u8], rcode: u8) -> Option<Vec<u8>> {
    if query.len() < 12 {
        return None;
    }
    let qlen = if u16::from_be_bytes([query[4], query[5]]) >= 1 {
        question_len(query)?
    } else {
        0
    };
    let mut r = Vec::with_capacity(12 + qlen);
    r.extend_from_slice(&query[0..2]);
    let opcode_rd = query[2] & 0x79; // opcode bits + RD
    r.push(0x80 | opcode_rd);
    r.push(0x80 | (rcode & 0x0f)); // RA + rcode
    r.extend_from_slice(&(u16::from(qlen > 0)).to_be_bytes());
    r.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    r.extend_from_slice(&query[12..12 + qlen]);
    Some(r)
}

/// A UDP DNS server answering every query with `rcode` (2 = SERVFAIL,
/// 5 = REFUSED, ...), ID and question copied.
pub fn dns_rcode(rcode: u8) -> FaultServer {
    let (sock, addr) = bind_udp();
    spawn_server("dns-rcode", addr, move |shared| async move {
        let sock = tokio::net::UdpSocket::from_std(sock).expect("tokio UDP");
        let mut buf = [0u8; 4096];
        for _ in 0..MAX_ACCEPTS {
            let Ok((n, peer)) = sock.recv_from(&mut buf).await else {
                continue;
            };
            shared.accepted.fetch_add(1, Ordering::SeqCst);
            if let Some(reply) = rcode_reply(&buf[..n], rcode) {
                let _ = sock.send_to(&reply, peer).await;
            }
        }
        std::future::pending::<()>().await;
    })
}

/// A UDP DNS server that receives queries and never answers.
pub fn dns_silent() -> FaultServer {
    let (sock, addr) = bind_udp();
    spawn_server("dns-silent", addr, move |shared| async move {
        let sock = tokio::net::UdpSocket::from_std(sock).expect("tokio UDP");
        let mut buf = [0u8; 4096];
        for _ in 0..MAX_ACCEPTS {
            if sock.recv_from(&mut buf).await.is_ok() {
                shared.accepted.fetch_add(1, Ordering::SeqCst);
            }
        }
        std::future::pending::<()>().await;
    })
}

//! Reflector tests on loopback: the real server against the real client, and
//! hand-written fake servers for the outcomes a healthy loopback cannot
//! produce (no PING, one-way, reset).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::client::connect_for_test;
use super::protocol::{LineReader, MAX_LINE};
use super::*;
use crate::probe::tls::{TlsOptions, TrustSource, TrustStore};
use crate::tune::IdleOutcome;

const STEP: Duration = Duration::from_secs(5);
const GRACE: Duration = Duration::from_millis(400);

/// A running reflector on 127.0.0.1; stops (and is awaited) on `stop`.
struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start(cfg: ReflectorConfig, tls: Option<Arc<rustls::ServerConfig>>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, tls, cfg, async {
            let _ = rx.await;
        }));
        Server {
            addr,
            stop: Some(tx),
            task,
        }
    }

    async fn plain() -> Server {
        Server::start(ReflectorConfig::default(), None).await
    }

    fn target(&self) -> ReflectorTarget {
        ReflectorTarget::plain(self.addr)
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(STEP, &mut self.task)
            .await
            .expect("serve returns promptly after shutdown")
            .expect("serve task")
            .expect("serve result");
    }
}

/// Sends `request` on a fresh raw connection and returns everything the server
/// sends until it closes (bounded by STEP).
async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    read_to_close(&mut s).await
}

async fn read_to_close(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 512];
    let read = async {
        for _ in 0..1000 {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(STEP, read)
        .await
        .expect("server closes in time");
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads one line from a raw stream (bounded by STEP).
async fn line(s: &mut TcpStream, r: &mut LineReader) -> String {
    tokio::time::timeout(STEP, r.read_line(s))
        .await
        .expect("line in time")
        .unwrap_or_else(|e| panic!("read line: {e:?}"))
}

/// A fake reflector that accepts one connection, answers `OK <nonce>` to the
/// IDLE request, then hands the stream and the nonce to `then`.
async fn fake<F, Fut>(then: F) -> (SocketAddr, JoinHandle<()>)
where
    F: FnOnce(TcpStream, LineReader, String) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (mut s, _) = tokio::time::timeout(STEP, listener.accept())
            .await
            .expect("client connects")
            .unwrap();
        let mut r = LineReader::new();
        let req = line(&mut s, &mut r).await;
        let nonce = req.rsplit(' ').next().unwrap().to_string();
        assert!(req.starts_with("HPR1 IDLE "), "{req}");
        s.write_all(format!("OK {nonce}\n").as_bytes())
            .await
            .unwrap();
        then(s, r, nonce).await;
    });
    (addr, task)
}

fn reset(s: TcpStream) {
    socket2::SockRef::from(&s)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(s);
}

#[tokio::test]
async fn survives_a_short_idle() {
    let server = Server::plain().await;
    let idle = Duration::from_millis(300);
    let t = Instant::now();
    let out = probe_idle(&server.target(), idle, GRACE, STEP).await;
    assert_eq!(out, IdleOutcome::Survived);
    assert!(t.elapsed() >= idle, "returned before the idle was up");
    assert!(t.elapsed() < idle + GRACE * 2, "{:?}", t.elapsed());
    server.stop().await;
}

#[tokio::test]
async fn zero_idle_survives() {
    let server = Server::plain().await;
    let out = probe_idle(&server.target(), Duration::ZERO, GRACE, STEP).await;
    assert_eq!(out, IdleOutcome::Survived);
    server.stop().await;
}

#[tokio::test]
async fn probe_socket_has_keepalive_off() {
    let server = Server::plain().await;
    let keepalive = connect_for_test(&server.target(), STEP).await.unwrap();
    assert!(!keepalive, "SO_KEEPALIVE must be off on probe sockets");
    server.stop().await;
}

#[tokio::test]
async fn no_ping_and_no_answer_up_is_a_silent_drop() {
    // OK, then read forever and never answer: the UP must be sent after
    // idle + grace, and the probe must give up after one more grace.
    let (up_tx, up_rx) = oneshot::channel::<(String, Duration)>();
    let started = Instant::now();
    let (addr, task) = fake(move |mut s, mut r, _nonce| async move {
        let up = line(&mut s, &mut r).await;
        let _ = up_tx.send((up, started.elapsed()));
        let mut sink = [0u8; 64];
        let _ = tokio::time::timeout(STEP, s.read(&mut sink)).await;
    })
    .await;
    let idle = Duration::from_millis(200);
    let out = probe_idle(&ReflectorTarget::plain(addr), idle, GRACE, STEP).await;
    let spent = started.elapsed();
    assert_eq!(out, IdleOutcome::SilentDrop);
    let (up, at) = up_rx.await.expect("the client sent UP");
    assert!(up.starts_with("UP "), "{up}");
    assert!(at >= idle + GRACE, "UP sent too early: {at:?}");
    assert!(spent >= idle + GRACE * 2, "gave up too early: {spent:?}");
    assert!(
        spent < idle + GRACE * 2 + Duration::from_secs(1),
        "{spent:?}"
    );
    task.abort();
}

#[tokio::test]
async fn no_ping_but_upok_is_one_way() {
    let (addr, task) = fake(|mut s, mut r, nonce| async move {
        let up = line(&mut s, &mut r).await;
        assert_eq!(up, format!("UP {nonce}"));
        s.write_all(b"UPOK\n").await.unwrap();
        let _ = read_to_close(&mut s).await;
    })
    .await;
    let out = probe_idle(
        &ReflectorTarget::plain(addr),
        Duration::from_millis(100),
        GRACE,
        STEP,
    )
    .await;
    assert_eq!(out, IdleOutcome::OneWay);
    task.await.unwrap();
}

#[tokio::test]
async fn ping_only_after_up_is_one_way() {
    let (addr, task) = fake(|mut s, mut r, nonce| async move {
        let _up = line(&mut s, &mut r).await;
        s.write_all(format!("PING {nonce}\n").as_bytes())
            .await
            .unwrap();
        let _ = read_to_close(&mut s).await;
    })
    .await;
    let out = probe_idle(
        &ReflectorTarget::plain(addr),
        Duration::from_millis(100),
        GRACE,
        STEP,
    )
    .await;
    assert_eq!(out, IdleOutcome::OneWay);
    task.await.unwrap();
}

#[tokio::test]
async fn reset_after_up_is_reset() {
    let (addr, task) = fake(|mut s, mut r, _nonce| async move {
        let _up = line(&mut s, &mut r).await;
        reset(s);
    })
    .await;
    let out = probe_idle(
        &ReflectorTarget::plain(addr),
        Duration::from_millis(100),
        GRACE,
        STEP,
    )
    .await;
    assert_eq!(out, IdleOutcome::Reset);
    task.await.unwrap();
}

#[tokio::test]
async fn reset_during_the_idle_is_reset() {
    let (addr, task) = fake(|s, _r, _nonce| async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        reset(s);
    })
    .await;
    let out = probe_idle(
        &ReflectorTarget::plain(addr),
        Duration::from_millis(500),
        GRACE,
        STEP,
    )
    .await;
    assert_eq!(out, IdleOutcome::Reset);
    task.await.unwrap();
}

#[tokio::test]
async fn reflector_closing_during_the_idle_is_an_error() {
    let (addr, task) = fake(|s, _r, _nonce| async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(s);
    })
    .await;
    let out = probe_idle(
        &ReflectorTarget::plain(addr),
        Duration::from_millis(500),
        GRACE,
        STEP,
    )
    .await;
    match out {
        IdleOutcome::Error(msg) => assert!(msg.contains("closed"), "{msg}"),
        other => panic!("expected Error, got {other:?}"),
    }
    task.await.unwrap();
}

#[tokio::test]
async fn early_ping_is_a_protocol_error() {
    let (addr, task) = fake(|mut s, _r, nonce| async move {
        s.write_all(format!("PING {nonce}\n").as_bytes())
            .await
            .unwrap();
        let _ = read_to_close(&mut s).await;
    })
    .await;
    let out = probe_idle(
        &ReflectorTarget::plain(addr),
        Duration::from_secs(3),
        GRACE,
        STEP,
    )
    .await;
    match out {
        IdleOutcome::Error(msg) => assert!(msg.contains("before the idle"), "{msg}"),
        other => panic!("expected Error, got {other:?}"),
    }
    task.await.unwrap();
}

#[tokio::test]
async fn missing_bye_after_pong_is_a_silent_drop() {
    let (addr, task) = fake(|mut s, mut r, nonce| async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        s.write_all(format!("PING {nonce}\n").as_bytes())
            .await
            .unwrap();
        let pong = line(&mut s, &mut r).await;
        assert_eq!(pong, format!("PONG {nonce}"));
        let _ = read_to_close(&mut s).await;
    })
    .await;
    let out = probe_idle(
        &ReflectorTarget::plain(addr),
        Duration::from_millis(100),
        GRACE,
        STEP,
    )
    .await;
    assert_eq!(out, IdleOutcome::SilentDrop);
    task.await.unwrap();
}

#[tokio::test]
async fn silent_server_is_an_error_bounded_by_the_connect_timeout() {
    // Accepts (the kernel does) but never answers the request.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let t = Instant::now();
    let out = probe_idle(
        &ReflectorTarget::plain(addr),
        Duration::from_secs(60),
        Duration::from_secs(60),
        Duration::from_millis(300),
    )
    .await;
    assert!(
        matches!(&out, IdleOutcome::Error(m) if m.contains("no OK")),
        "{out:?}"
    );
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    drop(listener);
}

#[tokio::test]
async fn refused_connect_is_an_error() {
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let out = probe_idle(
        &ReflectorTarget::plain(addr),
        Duration::from_secs(1),
        GRACE,
        STEP,
    )
    .await;
    assert!(
        matches!(&out, IdleOutcome::Error(m) if m.contains("TCP connect")),
        "{out:?}"
    );
    assert!(EchoSession::open(&ReflectorTarget::plain(addr), STEP)
        .await
        .is_err());
}

#[tokio::test]
async fn garbage_gets_err_and_close() {
    let server = Server::plain().await;
    let cases: [(&[u8], &str); 7] = [
        (
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
            "ERR not an HPR1 request\n",
        ),
        (b"HPR2 IDLE 1 n\n", "ERR unsupported protocol version HPR2"),
        (
            b"HPR1 IDLE 10\n",
            "ERR usage: HPR1 IDLE <idle_ms> <nonce>\n",
        ),
        (b"HPR1 IDLE 10 bad/nonce\n", "ERR bad nonce"),
        (b"HPR1 FLY n\n", "ERR unknown command FLY"),
        (
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\n",
            "ERR request is not ASCII text\n",
        ),
        (&[b'A'; 4096], "ERR line too long (at most 128 bytes)\n"),
    ];
    for (request, want) in cases {
        let got = raw_exchange(server.addr, request).await;
        assert!(got.starts_with(want), "{request:?}: got {got:?}");
        assert_eq!(got.lines().count(), 1, "{got:?}");
    }
    // The server is still fine afterwards.
    let out = probe_idle(&server.target(), Duration::ZERO, GRACE, STEP).await;
    assert_eq!(out, IdleOutcome::Survived);
    server.stop().await;
}

#[tokio::test]
async fn talking_during_the_idle_and_wrong_nonces_are_refused() {
    let server = Server::plain().await;

    let mut s = TcpStream::connect(server.addr).await.unwrap();
    s.write_all(b"HPR1 IDLE 5000 n1\n").await.unwrap();
    let mut r = LineReader::new();
    assert_eq!(line(&mut s, &mut r).await, "OK n1");
    s.write_all(b"PONG n1\n").await.unwrap();
    let rest = read_to_close(&mut s).await;
    assert_eq!(rest, "ERR unexpected data during the idle period\n");

    let mut s = TcpStream::connect(server.addr).await.unwrap();
    s.write_all(b"HPR1 IDLE 0 n2\n").await.unwrap();
    let mut r = LineReader::new();
    assert_eq!(line(&mut s, &mut r).await, "OK n2");
    assert_eq!(line(&mut s, &mut r).await, "PING n2");
    s.write_all(b"PONG other\n").await.unwrap();
    assert!(read_to_close(&mut s).await.starts_with("ERR nonce"));

    // UP is answered with UPOK.
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    s.write_all(b"HPR1 IDLE 0 n3\n").await.unwrap();
    let mut r = LineReader::new();
    assert_eq!(line(&mut s, &mut r).await, "OK n3");
    assert_eq!(line(&mut s, &mut r).await, "PING n3");
    s.write_all(b"UP n3\n").await.unwrap();
    assert_eq!(read_to_close(&mut s).await, "UPOK\n");
    server.stop().await;
}

#[tokio::test]
async fn idle_above_the_maximum_is_refused() {
    let cfg = ReflectorConfig {
        max_idle: Duration::from_secs(1),
        ..ReflectorConfig::default()
    };
    let server = Server::start(cfg, None).await;
    let out = probe_idle(&server.target(), Duration::from_secs(2), GRACE, STEP).await;
    match out {
        IdleOutcome::Error(msg) => {
            assert!(msg.contains("ERR idle too long"), "{msg}");
            assert!(msg.contains("1000 ms"), "{msg}");
        }
        other => panic!("expected Error, got {other:?}"),
    }
    server.stop().await;
}

#[tokio::test]
async fn request_timeout_closes_a_silent_client() {
    let cfg = ReflectorConfig {
        request_timeout: Duration::from_millis(200),
        ..ReflectorConfig::default()
    };
    let server = Server::start(cfg, None).await;
    let t = Instant::now();
    let got = raw_exchange(server.addr, b"").await;
    assert_eq!(got, "ERR timeout: no request within 200 ms\n");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    // A partial line does not extend it.
    let got = raw_exchange(server.addr, b"HPR1 EC").await;
    assert!(got.starts_with("ERR timeout"), "{got}");
    server.stop().await;
}

#[tokio::test]
async fn reply_timeout_resets_after_an_unanswered_ping() {
    let cfg = ReflectorConfig {
        reply_timeout: Duration::from_millis(200),
        ..ReflectorConfig::default()
    };
    let server = Server::start(cfg, None).await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    s.write_all(b"HPR1 IDLE 0 n\n").await.unwrap();
    let mut r = LineReader::new();
    assert_eq!(line(&mut s, &mut r).await, "OK n");
    assert_eq!(line(&mut s, &mut r).await, "PING n");
    let t = Instant::now();
    let mut buf = [0u8; 16];
    let res = tokio::time::timeout(STEP, s.read(&mut buf)).await.unwrap();
    assert!(
        matches!(&res, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
        "{res:?}"
    );
    assert!(t.elapsed() < Duration::from_secs(2));
    server.stop().await;
}

#[tokio::test]
async fn connection_limit_answers_busy_and_recovers() {
    let cfg = ReflectorConfig {
        max_connections: 2,
        ..ReflectorConfig::default()
    };
    let server = Server::start(cfg, None).await;
    let mut a = EchoSession::open(&server.target(), STEP).await.unwrap();
    let mut b = EchoSession::open(&server.target(), STEP).await.unwrap();
    assert!(a.echo(STEP).await.is_some());
    assert!(b.echo(STEP).await.is_some());
    let got = raw_exchange(server.addr, b"HPR1 ECHO x\n").await;
    assert!(got.starts_with("ERR busy"), "{got:?}");
    let out = probe_idle(&server.target(), Duration::ZERO, GRACE, STEP).await;
    assert!(
        matches!(&out, IdleOutcome::Error(m) if m.contains("ERR busy")),
        "{out:?}"
    );
    drop(a);
    // The slot frees once the server has seen the close (bounded wait).
    let mut freed = false;
    for _ in 0..50 {
        let mut c = EchoSession::open(&server.target(), STEP).await.unwrap();
        if c.echo(Duration::from_millis(500)).await.is_some() {
            freed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(freed, "slot never freed");
    assert!(b.echo(STEP).await.is_some());
    server.stop().await;
}

/// A raw connection from `source` (any 127/8 address is local on loopback).
async fn connect_from(source: &str, addr: SocketAddr) -> TcpStream {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(format!("{source}:0").parse().unwrap()).unwrap();
    tokio::time::timeout(STEP, sock.connect(addr))
        .await
        .expect("connect in time")
        .unwrap()
}

#[tokio::test]
async fn one_address_holding_idles_cannot_lock_other_clients_out() {
    let cfg = ReflectorConfig {
        max_connections: 64,
        max_per_address: 16,
        ..ReflectorConfig::default()
    };
    let server = Server::start(cfg, None).await;
    // 127.0.0.1 fills its share with long idles (the server holds each).
    let mut held = Vec::new();
    for i in 0..16 {
        let mut s = connect_from("127.0.0.1", server.addr).await;
        s.write_all(format!("HPR1 IDLE 3600000 n{i}\n").as_bytes())
            .await
            .unwrap();
        let mut r = LineReader::new();
        assert_eq!(line(&mut s, &mut r).await, format!("OK n{i}"));
        held.push(s);
    }
    // More from the same address are turned away with the busy answer...
    for _ in 0..8 {
        let mut s = connect_from("127.0.0.1", server.addr).await;
        let _ = s.write_all(b"HPR1 IDLE 3600000 more\n").await;
        let got = read_to_close(&mut s).await;
        assert!(
            got.starts_with("ERR busy: too many connections from your address (at most 16)"),
            "{got:?}"
        );
    }
    // ... while another address is still served, IDLE and ECHO alike.
    for i in 0..4 {
        let mut s = connect_from("127.0.0.2", server.addr).await;
        s.write_all(format!("HPR1 ECHO e{i}\n").as_bytes())
            .await
            .unwrap();
        let mut r = LineReader::new();
        assert_eq!(line(&mut s, &mut r).await, format!("ECHO e{i}"));
    }
    let mut other = connect_from("127.0.0.2", server.addr).await;
    other.write_all(b"HPR1 IDLE 0 z\n").await.unwrap();
    let mut r = LineReader::new();
    assert_eq!(line(&mut other, &mut r).await, "OK z");
    assert_eq!(line(&mut other, &mut r).await, "PING z");
    // A closed connection gives its slot back to its address (bounded wait).
    drop(held.pop());
    let mut freed = false;
    for _ in 0..50 {
        let mut s = connect_from("127.0.0.1", server.addr).await;
        let _ = s.write_all(b"HPR1 ECHO back\n").await;
        let mut r = LineReader::new();
        if let Ok(Ok(l)) = tokio::time::timeout(STEP, r.read_line(&mut s)).await {
            if l == "ECHO back" {
                freed = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(freed, "the slot never came back");
    drop(held);
    server.stop().await;
}

#[test]
fn sources_are_counted_per_ipv4_address_and_per_ipv6_64() {
    use std::net::IpAddr;
    let key = |s: &str| server::source_key_for_test(s.parse::<IpAddr>().unwrap());
    assert_eq!(key("192.0.2.7"), key("::ffff:192.0.2.7"));
    assert_ne!(key("192.0.2.7"), key("192.0.2.8"));
    assert_eq!(key("2001:db8:1:2::1"), key("2001:db8:1:2:ffff::9"));
    assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_concurrent_probes_all_survive() {
    let server = Server::plain().await;
    let target = server.target();
    let mut tasks = Vec::new();
    for i in 0..200u64 {
        let target = target.clone();
        tasks.push(tokio::spawn(async move {
            let idle = Duration::from_millis(100 + (i % 5) * 50);
            probe_idle(&target, idle, Duration::from_secs(2), STEP).await
        }));
    }
    let t = Instant::now();
    for task in tasks {
        assert_eq!(task.await.unwrap(), IdleOutcome::Survived);
    }
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    server.stop().await;
}

#[tokio::test]
async fn echo_session_measures_round_trips() {
    let server = Server::plain().await;
    let mut session = EchoSession::open(&server.target(), STEP).await.unwrap();
    for _ in 0..20 {
        let rtt = session.echo(STEP).await.expect("answer on loopback");
        assert!(rtt < Duration::from_secs(1));
    }
    assert!(!session.is_closed());
    // An IDLE may follow echoes on the same connection; pipelined echoes are
    // answered in order.
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    s.write_all(b"HPR1 ECHO a\nHPR1 ECHO b\nHPR1 IDLE 0 c\n")
        .await
        .unwrap();
    let mut r = LineReader::new();
    assert_eq!(line(&mut s, &mut r).await, "ECHO a");
    assert_eq!(line(&mut s, &mut r).await, "ECHO b");
    assert_eq!(line(&mut s, &mut r).await, "OK c");
    assert_eq!(line(&mut s, &mut r).await, "PING c");
    s.write_all(b"PONG c\n").await.unwrap();
    assert_eq!(line(&mut s, &mut r).await, "BYE");
    server.stop().await;
}

#[tokio::test]
async fn echo_times_out_and_skips_stale_answers() {
    // A fake that answers every ECHO 300 ms late.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut r = LineReader::new();
        for _ in 0..2 {
            let req = line(&mut s, &mut r).await;
            let nonce = req.rsplit(' ').next().unwrap().to_string();
            tokio::time::sleep(Duration::from_millis(300)).await;
            s.write_all(format!("ECHO {nonce}\n").as_bytes())
                .await
                .unwrap();
        }
        let _ = read_to_close(&mut s).await;
    });
    let mut session = EchoSession::open(&ReflectorTarget::plain(addr), STEP)
        .await
        .unwrap();
    let t = Instant::now();
    assert_eq!(session.echo(Duration::from_millis(100)).await, None);
    assert!(t.elapsed() < Duration::from_millis(250));
    // The first answer arrives during the second echo and must be skipped.
    let rtt = session.echo(Duration::from_secs(2)).await.expect("answer");
    assert!(rtt >= Duration::from_millis(250), "{rtt:?}");
    assert!(!session.is_closed());
    drop(session);
    task.await.unwrap();
}

#[tokio::test]
async fn echo_session_notices_a_closed_server() {
    let server = Server::plain().await;
    let mut session = EchoSession::open(&server.target(), STEP).await.unwrap();
    assert!(session.echo(STEP).await.is_some());
    server.stop().await;
    assert_eq!(session.echo(STEP).await, None);
    assert!(session.is_closed());
    assert!(session.closed_reason().is_some());
}

#[tokio::test]
async fn shutdown_stops_the_server_and_closes_connections() {
    let server = Server::plain().await;
    let addr = server.addr;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"HPR1 IDLE 60000 n\n").await.unwrap();
    let mut r = LineReader::new();
    assert_eq!(line(&mut s, &mut r).await, "OK n");
    server.stop().await;
    let rest = read_to_close(&mut s).await;
    assert_eq!(rest, "");
    assert!(TcpStream::connect(addr).await.is_err(), "still listening");
}

#[tokio::test]
async fn invalid_config_is_rejected() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let cfg = ReflectorConfig {
        max_connections: 0,
        ..ReflectorConfig::default()
    };
    let err = serve(listener, None, cfg, std::future::pending())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let cfg = ReflectorConfig {
        max_per_address: 0,
        ..ReflectorConfig::default()
    };
    let err = serve(listener, None, cfg, std::future::pending())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
}

// ---- TLS ----

struct Pki {
    _dir: tempfile::TempDir,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    other_key: PathBuf,
}

const NAME: &str = "reflector.hubprobe.test";

fn pki() -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let dir = tempfile::tempdir().unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::default();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "reflector test CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec![NAME.to_string()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, NAME);
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    let write = |name: &str, text: String| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    Pki {
        ca: write("ca.pem", ca.pem()),
        cert: write("cert.pem", format!("{}{}", cert.pem(), ca.pem())),
        key: write("key.pem", key.serialize_pem()),
        other_key: write("other.pem", KeyPair::generate().unwrap().serialize_pem()),
        _dir: dir,
    }
}

fn tls_target(addr: SocketAddr, ca: &Path) -> ReflectorTarget {
    let trust = TrustStore::load(TrustSource::None, &[ca.to_path_buf()]).unwrap();
    let mut opts = TlsOptions::new(NAME);
    opts.timeout = STEP;
    ReflectorTarget::tls(addr, opts, Arc::new(trust))
}

#[tokio::test]
async fn tls_reflector_survives_and_echoes() {
    let pki = pki();
    let tls = server_tls_config(&pki.cert, &pki.key).unwrap();
    let server = Server::start(ReflectorConfig::default(), Some(tls)).await;
    let target = tls_target(server.addr, &pki.ca);
    let out = probe_idle(&target, Duration::from_millis(200), GRACE, STEP).await;
    assert_eq!(out, IdleOutcome::Survived);
    let mut session = EchoSession::open(&target, STEP).await.unwrap();
    for _ in 0..5 {
        assert!(session.echo(STEP).await.is_some());
    }
    server.stop().await;
}

#[tokio::test]
async fn tls_with_an_untrusted_certificate_is_an_error() {
    let pki = pki();
    let other = self::pki();
    let tls = server_tls_config(&pki.cert, &pki.key).unwrap();
    let server = Server::start(ReflectorConfig::default(), Some(tls)).await;
    let target = tls_target(server.addr, &other.ca);
    let out = probe_idle(&target, Duration::ZERO, GRACE, STEP).await;
    match out {
        IdleOutcome::Error(msg) => {
            assert!(msg.contains("TLS handshake"), "{msg}");
            // Both test CAs share a name, so the verifier finds the wrong
            // anchor and reports its signature check.
            assert!(msg.contains("(tls."), "{msg}");
        }
        other => panic!("expected Error, got {other:?}"),
    }
    // A plain client against the TLS reflector gets nothing usable either.
    let out = probe_idle(
        &ReflectorTarget::plain(server.addr),
        Duration::ZERO,
        GRACE,
        Duration::from_millis(500),
    )
    .await;
    assert!(matches!(out, IdleOutcome::Error(_)), "{out:?}");
    server.stop().await;
}

#[test]
fn tls_config_errors_name_the_file_and_never_the_key() {
    let pki = pki();
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    let err = server_tls_config(&missing, &pki.key).unwrap_err();
    assert!(matches!(err, ReflectorTlsError::CertRead { .. }));
    assert!(err.to_string().contains("missing.pem"), "{err}");

    let err = server_tls_config(&pki.cert, &missing).unwrap_err();
    assert!(matches!(err, ReflectorTlsError::KeyRead { .. }));

    let err = server_tls_config(&pki.key, &pki.key).unwrap_err();
    assert!(
        matches!(err, ReflectorTlsError::CertMissing { .. }),
        "{err}"
    );

    let err = server_tls_config(&pki.cert, &pki.cert).unwrap_err();
    assert!(matches!(err, ReflectorTlsError::KeyMissing { .. }), "{err}");

    let err = server_tls_config(&pki.cert, &pki.other_key).unwrap_err();
    assert!(
        matches!(err, ReflectorTlsError::KeyMismatch { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("other.pem"), "{err}");

    // A PEM key block whose content is not a key: the error must not carry
    // any of it.
    let secret = "U0VDUkVUS0VZTUFURVJJQUxTRUNSRVRLRVlNQVRFUklBTA==";
    let bogus = dir.path().join("bogus.pem");
    std::fs::write(
        &bogus,
        format!("-----BEGIN PRIVATE KEY-----\n{secret}\n-----END PRIVATE KEY-----\n"),
    )
    .unwrap();
    let err = server_tls_config(&pki.cert, &bogus).unwrap_err();
    assert!(matches!(err, ReflectorTlsError::KeyInvalid { .. }), "{err}");
    let text = format!("{err} {err:?}");
    assert!(!text.contains(secret) && !text.contains("SECRET"), "{text}");
    assert!(text.contains("bogus.pem"), "{text}");

    let enc = dir.path().join("enc.pem");
    std::fs::write(
        &enc,
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
    )
    .unwrap();
    let err = server_tls_config(&pki.cert, &enc).unwrap_err();
    assert!(err.to_string().contains("encrypted"), "{err}");
}

#[test]
fn line_cap_matches_the_documented_limit() {
    assert_eq!(MAX_LINE, 128);
    assert_eq!(VERSION, "HPR1");
}

#[tokio::test]
async fn absurd_durations_are_refused_not_panicked_on() {
    let server = Server::plain().await;
    let out = probe_idle(&server.target(), Duration::MAX, Duration::MAX, STEP).await;
    assert!(
        matches!(&out, IdleOutcome::Error(m) if m.contains("at most")),
        "{out:?}"
    );
    let mut session = EchoSession::open(&server.target(), STEP).await.unwrap();
    assert!(session.echo(Duration::MAX).await.is_some());
    server.stop().await;

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let cfg = ReflectorConfig {
        reply_timeout: Duration::MAX,
        ..ReflectorConfig::default()
    };
    let err = serve(listener, None, cfg, std::future::pending())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
}

#[tokio::test]
async fn reset_under_tls_is_still_reset() {
    // A TLS fake: handshake, OK, then a TCP reset during the idle. The reset
    // must surface through the TLS layer as a reset, not as a TLS error.
    let pki = pki();
    let acceptor = tokio_rustls::TlsAcceptor::from(server_tls_config(&pki.cert, &pki.key).unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut tls = acceptor.accept(tcp).await.unwrap();
        let mut r = LineReader::new();
        let req = tokio::time::timeout(STEP, r.read_line(&mut tls))
            .await
            .unwrap()
            .unwrap();
        let nonce = req.rsplit(' ').next().unwrap().to_string();
        tls.write_all(format!("OK {nonce}\n").as_bytes())
            .await
            .unwrap();
        tls.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (tcp, _) = tls.into_inner();
        reset(tcp);
    });
    let out = probe_idle(
        &tls_target(addr, &pki.ca),
        Duration::from_millis(500),
        GRACE,
        STEP,
    )
    .await;
    assert_eq!(out, IdleOutcome::Reset);
    task.await.unwrap();
}

//! TCP phase: connect to every resolved address at once (IPv6 and IPv4 each
//! reported), each bounded by the phase timeout, optionally bound to an interface
//! (SO_BINDTODEVICE) or a source address. The first connection that succeeds carries
//! the later phases; the others are closed.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use futures_util::StreamExt;
use socket2::{Domain, Socket, Type};
use tokio::net::{TcpSocket, TcpStream};

use super::Stopwatch;
use crate::model::{ms, Attempt, FailureClass, Phase, PhaseResult, TcpEvidence};

/// Most addresses tried per family, so a name with many records stays bounded.
pub const MAX_ADDRESSES_PER_FAMILY: usize = 4;

/// After the first connection, how long the other attempts may still finish and be
/// recorded before they are abandoned.
pub const CONNECTED_GRACE: Duration = Duration::from_millis(100);

/// How to connect.
#[derive(Debug, Clone, Default)]
pub struct TcpOptions {
    /// Per-connect timeout.
    pub timeout: Duration,
    /// Bind to this network interface (SO_BINDTODEVICE; needs CAP_NET_RAW).
    pub interface: Option<String>,
    /// Bind to this local address before connecting.
    pub source_ip: Option<IpAddr>,
    /// Clamp the MSS advertised in the SYN (TCP_MAXSEG before connect), so the
    /// server sends segments of at most this many bytes of payload: the path-MTU
    /// probe uses it to show a handshake that stalls at full size works when smaller.
    pub mss: Option<u32>,
}

/// The TCP phase's result and, on success, the connected stream.
pub struct TcpOutcome {
    /// Phase result.
    pub result: PhaseResult,
    /// The stream the later phases use.
    pub stream: Option<TcpStream>,
}

/// Connects to `port` on every address (bounded per family) concurrently.
pub async fn connect(addresses: &[IpAddr], port: u16, opts: &TcpOptions) -> TcpOutcome {
    let clock = Stopwatch::start();
    let mut chosen: Vec<IpAddr> = Vec::new();
    for want_v6 in [true, false] {
        chosen.extend(
            addresses
                .iter()
                .filter(|a| a.is_ipv6() == want_v6)
                .take(MAX_ADDRESSES_PER_FAMILY),
        );
    }
    // All addresses at once; the phase ends at the first connection (plus a short
    // grace so near-simultaneous answers are still recorded), so a black-holed address
    // of one family does not stall the device's working path.
    let mut pending: futures_util::stream::FuturesUnordered<_> = chosen
        .iter()
        .enumerate()
        .map(|(i, ip)| async move { (i, attempt(SocketAddr::new(*ip, port), opts).await) })
        .collect();
    let mut results: Vec<Option<AttemptResult>> = chosen.iter().map(|_| None).collect();
    let mut connected_after: Option<Duration> = None;
    loop {
        let next = match connected_after {
            None => pending.next().await,
            Some(_) => match tokio::time::timeout(CONNECTED_GRACE, pending.next()).await {
                Ok(n) => n,
                Err(_) => break,
            },
        };
        let Some((i, r)) = next else { break };
        if matches!(r, AttemptResult::Connected(..)) && connected_after.is_none() {
            connected_after = Some(clock.elapsed());
        }
        results[i] = Some(r);
    }
    drop(pending);
    let results = results.into_iter().map(|r| {
        r.unwrap_or_else(|| {
            AttemptResult::Skipped("abandoned: another address connected first".to_string())
        })
    });

    let mut evidence = TcpEvidence {
        port,
        remote_address: None,
        local_address: None,
        interface: opts.interface.clone(),
        attempts: Vec::new(),
    };
    let mut best: Option<(Duration, TcpStream)> = None;
    let mut failures: Vec<(FailureClass, String, bool)> = Vec::new();
    for (addr, result) in chosen.iter().zip(results) {
        let family = if addr.is_ipv6() { "ipv6" } else { "ipv4" };
        let (a, stream) = match result {
            AttemptResult::Connected(stream, took) => {
                let local = stream.local_addr().ok().map(|a| a.to_string());
                let a = Attempt {
                    address: SocketAddr::new(*addr, port).to_string(),
                    family: family.into(),
                    status: "ok".into(),
                    duration_ms: Some(ms(took)),
                    class: None,
                    message: None,
                    local_address: local,
                };
                (a, Some((took, stream)))
            }
            AttemptResult::Failed(class, message, took) => {
                failures.push((class, message.clone(), addr.is_ipv4()));
                let a = Attempt {
                    address: SocketAddr::new(*addr, port).to_string(),
                    family: family.into(),
                    status: "failed".into(),
                    duration_ms: Some(ms(took)),
                    class: Some(class),
                    message: Some(message),
                    local_address: None,
                };
                (a, None)
            }
            AttemptResult::Skipped(message) => {
                let a = Attempt {
                    address: SocketAddr::new(*addr, port).to_string(),
                    family: family.into(),
                    status: "skipped".into(),
                    duration_ms: None,
                    class: None,
                    message: Some(message),
                    local_address: None,
                };
                (a, None)
            }
        };
        evidence.attempts.push(a);
        if let Some((took, stream)) = stream {
            // Prefer the fastest connection; the others are dropped (closed).
            if best.as_ref().is_none_or(|(t, _)| took < *t) {
                best = Some((took, stream));
            }
        }
    }

    match best {
        Some((_, stream)) => {
            evidence.remote_address = stream.peer_addr().ok().map(|a| a.to_string());
            evidence.local_address = stream.local_addr().ok().map(|a| a.to_string());
            // The phase took as long as the device waited for its first connection.
            let took = connected_after.unwrap_or_else(|| clock.elapsed());
            TcpOutcome {
                result: PhaseResult::ok(Phase::Tcp, took, &evidence),
                stream: Some(stream),
            }
        }
        None => {
            let elapsed = clock.elapsed();
            let (class, message) = pick_failure(&failures).unwrap_or((
                FailureClass::TcpError,
                "no address to connect to (the source address family fits none)".into(),
            ));
            TcpOutcome {
                result: PhaseResult::failed(Phase::Tcp, elapsed, class, message, &evidence),
                stream: None,
            }
        }
    }
}

/// The failure that best explains why no address worked: an IPv4 failure over an
/// IPv6 one (IPv6 is often simply absent), then by how telling the class is.
fn pick_failure(failures: &[(FailureClass, String, bool)]) -> Option<(FailureClass, String)> {
    fn rank(c: FailureClass) -> u8 {
        match c {
            FailureClass::TcpTimeout => 0,
            FailureClass::TcpRefused => 1,
            FailureClass::TcpReset => 2,
            FailureClass::TcpPermission => 3,
            FailureClass::TcpUnreachable => 4,
            _ => 5,
        }
    }
    failures
        .iter()
        .min_by_key(|(c, _, v4)| (!*v4, rank(*c)))
        .map(|(c, m, _)| (*c, m.clone()))
}

enum AttemptResult {
    Connected(TcpStream, Duration),
    Failed(FailureClass, String, Duration),
    Skipped(String),
}

async fn attempt(addr: SocketAddr, opts: &TcpOptions) -> AttemptResult {
    if let Some(src) = opts.source_ip {
        if src.is_ipv4() != addr.is_ipv4() {
            return AttemptResult::Skipped(format!("source address {src} is of the other family"));
        }
    }
    let clock = Stopwatch::start();
    let socket = match prepare(addr, opts) {
        Ok(s) => s,
        Err((class, message)) => return AttemptResult::Failed(class, message, clock.elapsed()),
    };
    match tokio::time::timeout(opts.timeout, socket.connect(addr)).await {
        Ok(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            AttemptResult::Connected(stream, clock.elapsed())
        }
        Ok(Err(e)) => {
            let (class, _) = classify_connect_error(&e);
            AttemptResult::Failed(class, format!("connect to {addr}: {e}"), clock.elapsed())
        }
        Err(_) => AttemptResult::Failed(
            FailureClass::TcpTimeout,
            format!(
                "connect to {addr}: no answer to SYN within {} (black-holed or filtered)",
                humantime::format_duration(opts.timeout)
            ),
            clock.elapsed(),
        ),
    }
}

fn prepare(addr: SocketAddr, opts: &TcpOptions) -> Result<TcpSocket, (FailureClass, String)> {
    let domain = if addr.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let fail = |what: &str, e: io::Error| {
        let class = match e.kind() {
            io::ErrorKind::PermissionDenied => FailureClass::TcpPermission,
            _ => FailureClass::TcpError,
        };
        (class, format!("{what}: {e}"))
    };
    let socket = Socket::new(domain, Type::STREAM, Some(socket2::Protocol::TCP))
        .map_err(|e| fail("cannot create socket", e))?;
    socket
        .set_nonblocking(true)
        .map_err(|e| fail("cannot set non-blocking", e))?;
    if let Some(iface) = &opts.interface {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        socket
            .bind_device(Some(iface.as_bytes()))
            .map_err(|e| fail(&format!("cannot bind to interface {iface:?}"), e))?;
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        return Err((
            FailureClass::TcpError,
            format!("binding to interface {iface:?} needs Linux"),
        ));
    }
    if let Some(mss) = opts.mss {
        socket
            .set_mss(mss)
            .map_err(|e| fail(&format!("cannot clamp the MSS to {mss}"), e))?;
    }
    if let Some(src) = opts.source_ip {
        socket
            .bind(&SocketAddr::new(src, 0).into())
            .map_err(|e| fail(&format!("cannot bind source address {src}"), e))?;
    }
    let std_stream: std::net::TcpStream = socket.into();
    Ok(TcpSocket::from_std_stream(std_stream))
}

/// Classifies a failed connect at the boundary, from the OS error.
pub fn classify_connect_error(e: &io::Error) -> (FailureClass, &'static str) {
    use io::ErrorKind as K;
    match e.kind() {
        K::ConnectionRefused => (
            FailureClass::TcpRefused,
            "refused (nothing listens, or a firewall rejects)",
        ),
        K::TimedOut => (FailureClass::TcpTimeout, "timed out in the kernel"),
        K::ConnectionReset | K::ConnectionAborted => {
            (FailureClass::TcpReset, "reset while connecting")
        }
        K::PermissionDenied => (
            FailureClass::TcpPermission,
            "forbidden by the local system (firewall or policy)",
        ),
        K::HostUnreachable | K::NetworkUnreachable | K::AddrNotAvailable => {
            (FailureClass::TcpUnreachable, "unreachable (no route)")
        }
        _ => match e.raw_os_error() {
            Some(libc::EHOSTUNREACH) | Some(libc::ENETUNREACH) | Some(libc::EADDRNOTAVAIL) => {
                (FailureClass::TcpUnreachable, "unreachable (no route)")
            }
            Some(libc::EPERM) | Some(libc::EACCES) => (
                FailureClass::TcpPermission,
                "forbidden by the local system (firewall or policy)",
            ),
            _ => (FailureClass::TcpError, "failed"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_errors_map_to_classes() {
        let cases = [
            (libc::ECONNREFUSED, FailureClass::TcpRefused),
            (libc::ETIMEDOUT, FailureClass::TcpTimeout),
            (libc::EHOSTUNREACH, FailureClass::TcpUnreachable),
            (libc::ENETUNREACH, FailureClass::TcpUnreachable),
            (libc::ECONNRESET, FailureClass::TcpReset),
            (libc::EPERM, FailureClass::TcpPermission),
            (libc::EACCES, FailureClass::TcpPermission),
        ];
        for (errno, want) in cases {
            assert_eq!(
                classify_connect_error(&io::Error::from_raw_os_error(errno)).0,
                want,
                "errno {errno}"
            );
        }
    }

    #[test]
    fn ipv4_failure_explains_more_than_ipv6() {
        let f = vec![
            (FailureClass::TcpUnreachable, "v6".to_string(), false),
            (FailureClass::TcpRefused, "v4".to_string(), true),
        ];
        assert_eq!(pick_failure(&f).unwrap().0, FailureClass::TcpRefused);
    }

    #[tokio::test]
    async fn a_clamped_mss_is_what_the_server_may_send() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        // What the server side of each connection may put in one segment.
        let mut server_mss = Vec::new();
        for mss in [Some(600), None] {
            let opts = TcpOptions {
                timeout: Duration::from_secs(3),
                mss,
                ..Default::default()
            };
            let out = connect(&[lo], port, &opts).await;
            assert!(out.result.is_ok(), "{:?}", out.result);
            let (accepted, _) = listener.accept().unwrap();
            server_mss.push(socket2::SockRef::from(&accepted).mss().unwrap());
        }
        // Less the TCP options (timestamps) the kernel accounts for.
        assert!(
            server_mss[0] <= 600 && server_mss[0] >= 500,
            "{server_mss:?}"
        );
        // Unclamped, loopback's MTU allows far more.
        assert!(server_mss[1] > 1000, "{server_mss:?}");
    }

    #[tokio::test]
    async fn refused_and_connected_on_loopback() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let open = listener.local_addr().unwrap().port();
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let opts = TcpOptions {
            timeout: Duration::from_secs(3),
            ..Default::default()
        };
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let ok = connect(&[lo], open, &opts).await;
        assert!(ok.result.is_ok() && ok.stream.is_some());
        let refused = connect(&[lo], closed, &opts).await;
        assert_eq!(refused.result.class, Some(FailureClass::TcpRefused));
    }
}

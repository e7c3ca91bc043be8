//! The tuner's side of the reflector: one idle probe ([`probe_idle`]) and an
//! echo session for RTT samples ([`EchoSession`]).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpSocket;
use tokio::time::{timeout, timeout_at, Instant};

use super::protocol::{parse_reply, send_line, Conn, LineError, LineReader, Reply, VERSION};
use crate::probe::tls::{handshake, TlsOptions, TrustStore};
use crate::tune::IdleOutcome;

/// Most lines the client reads while waiting for one particular answer
/// (stale `ECHO` answers to earlier, timed-out requests are skipped).
const MAX_LINES_PER_WAIT: usize = 1024;

/// Longest any single duration argument may be (idle, grace, timeouts):
/// longer values are refused rather than overflowing a deadline.
pub const MAX_PROBE_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);

/// Where the reflector is and how to reach it.
#[derive(Debug, Clone)]
pub struct ReflectorTarget {
    /// The reflector's address.
    pub addr: SocketAddr,
    /// TLS settings when the reflector runs with `--cert/--key`; `None` for
    /// plain TCP.
    pub tls: Option<ReflectorTls>,
    /// The proxy to tunnel through (its own idle timers are then what is measured).
    pub proxy: Option<Arc<crate::net::proxy::ProxyConfig>>,
}

/// TLS settings for talking to a reflector.
#[derive(Debug, Clone)]
pub struct ReflectorTls {
    /// Server name (SNI and certificate name check) and handshake timeout
    /// (`options.timeout` bounds the handshake).
    pub options: TlsOptions,
    /// The anchors the reflector's certificate must chain to.
    pub trust: Arc<TrustStore>,
}

impl ReflectorTarget {
    /// A plain-TCP reflector at `addr`.
    pub fn plain(addr: SocketAddr) -> Self {
        ReflectorTarget {
            addr,
            tls: None,
            proxy: None,
        }
    }

    /// A TLS reflector at `addr`, verified with `options` against `trust`.
    pub fn tls(addr: SocketAddr, options: TlsOptions, trust: Arc<TrustStore>) -> Self {
        ReflectorTarget {
            addr,
            tls: Some(ReflectorTls { options, trust }),
            proxy: None,
        }
    }

    /// The same target reached through `proxy` (HTTP CONNECT or SOCKS5 to the
    /// reflector's address).
    pub fn with_proxy(mut self, proxy: Option<Arc<crate::net::proxy::ProxyConfig>>) -> Self {
        self.proxy = proxy;
        self
    }

    /// Upper bound on connecting to this target (TCP connect, TLS handshake).
    fn setup_bound(&self, connect_timeout: Duration) -> Duration {
        connect_timeout
            + self
                .tls
                .as_ref()
                .map_or(Duration::ZERO, |t| t.options.timeout)
    }
}

/// A random nonce: 16 hex digits.
fn nonce() -> String {
    let mut b = [0u8; 8];
    if getrandom::fill(&mut b).is_err() {
        // No OS randomness: fall back to the clock (the nonce only has to
        // tell this connection's lines apart, it is not a secret).
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        b = (t.as_nanos() as u64).to_be_bytes();
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Opens a connection: TCP (keep-alive off, Nagle off) and, when configured,
/// the TLS handshake. Bounded by `connect_timeout` plus the TLS timeout.
async fn connect(target: &ReflectorTarget, connect_timeout: Duration) -> io::Result<Conn> {
    let addr = target.addr;
    if let Some(p) = &target.proxy {
        let stream = via_proxy(p, addr, connect_timeout).await?;
        return finish_connect(target, stream).await;
    }
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    // Off is the kernel default; make sure, since keep-alive probes would
    // refresh the very NAT state being measured.
    socket.set_keepalive(false)?;
    let stream = match timeout(connect_timeout, socket.connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            return Err(io::Error::new(
                e.kind(),
                format!("TCP connect to reflector {addr} failed: {e}"),
            ))
        }
        Err(_) => {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "TCP connect to reflector {addr}: no answer within {} ms",
                    connect_timeout.as_millis()
                ),
            ))
        }
    };
    finish_connect(target, stream).await
}

/// TCP to the proxy, then the tunnel to the reflector's address, within
/// `connect_timeout` each.
async fn via_proxy(
    p: &crate::net::proxy::ProxyConfig,
    addr: SocketAddr,
    connect_timeout: Duration,
) -> io::Result<tokio::net::TcpStream> {
    let proxy = format!("{}:{}", p.host, p.port);
    let connected = timeout(connect_timeout, async {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((p.host.as_str(), p.port))
            .await?
            .take(8)
            .collect();
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
        for a in addrs {
            let socket = match a {
                SocketAddr::V4(_) => TcpSocket::new_v4()?,
                SocketAddr::V6(_) => TcpSocket::new_v6()?,
            };
            socket.set_keepalive(false)?;
            match socket.connect(a).await {
                Ok(s) => return Ok(s),
                Err(e) => last = e,
            }
        }
        Err(last)
    })
    .await;
    let stream = match connected {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            return Err(io::Error::new(
                e.kind(),
                format!("TCP connect to the proxy {proxy} failed: {e}"),
            ))
        }
        Err(_) => {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "TCP connect to the proxy {proxy}: no answer within {} ms",
                    connect_timeout.as_millis()
                ),
            ))
        }
    };
    let out = crate::net::proxy::tunnel(
        crate::net::meter::Metered::new(stream),
        p,
        crate::net::proxy::TunnelTarget::Address(addr),
        connect_timeout,
    )
    .await;
    match out.stream {
        Some(s) => Ok(s.into_inner()),
        None => Err(io::Error::other(format!(
            "the proxy tunnel to reflector {addr} failed ({}): {}",
            out.result.class.map_or_else(String::new, |c| c.to_string()),
            out.result.message.unwrap_or_default()
        ))),
    }
}

/// Nagle off and, when configured, the TLS handshake over `stream`.
async fn finish_connect(
    target: &ReflectorTarget,
    stream: tokio::net::TcpStream,
) -> io::Result<Conn> {
    let addr = target.addr;
    stream.set_nodelay(true)?;
    let Some(tls) = &target.tls else {
        return Ok(Conn::Plain(stream));
    };
    let outcome = handshake(stream, &tls.options, &tls.trust).await;
    match outcome.stream {
        Some(s) => Ok(Conn::Tls(Box::new(tokio_rustls::TlsStream::Client(s)))),
        None => {
            let class = outcome
                .result
                .class
                .map_or_else(|| "tls".to_string(), |c| c.to_string());
            let msg = outcome.result.message.unwrap_or_default();
            Err(io::Error::other(format!(
                "TLS handshake with reflector {addr} failed ({class}): {msg}"
            )))
        }
    }
}

/// Whether an I/O error means the connection was reset (RST).
fn is_reset(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    )
}

/// Leaves a connection idle for `idle` and reports what the path did to it.
///
/// Steps (see the module documentation for the wire format): connect (TCP
/// keep-alive off) and optionally TLS; send `HPR1 IDLE`; wait for `OK`; then
/// send nothing and wait for the server's `PING` until `idle + grace` after
/// the `OK`:
/// - `PING` arrives → answer `PONG`, wait up to `grace` for `BYE` →
///   [`IdleOutcome::Survived`]. (If the `BYE` never comes, the byte up was
///   lost after the idle: [`IdleOutcome::SilentDrop`].)
/// - no `PING` → send `UP` and wait up to `grace`: `UPOK` (or a late `PING`)
///   → [`IdleOutcome::OneWay`]; nothing → [`IdleOutcome::SilentDrop`].
/// - a TCP reset at any point after the `OK` → [`IdleOutcome::Reset`].
/// - anything failing before the idle starts (connect, TLS, `ERR`, a garbled
///   reply), the reflector closing the connection, or a protocol error →
///   [`IdleOutcome::Error`] with the reason.
///
/// Bounded: at most `connect_timeout` (TCP) + the TLS timeout + `connect_timeout`
/// (request → `OK`) + `idle` + 2 × `grace`. `grace` must stay well below the
/// reflector's reply timeout (120 s by default).
pub async fn probe_idle(
    target: &ReflectorTarget,
    idle: Duration,
    grace: Duration,
    connect_timeout: Duration,
) -> IdleOutcome {
    let tls_timeout = target
        .tls
        .as_ref()
        .map_or(Duration::ZERO, |t| t.options.timeout);
    if [idle, grace, connect_timeout, tls_timeout]
        .iter()
        .any(|d| *d > MAX_PROBE_DURATION)
    {
        return IdleOutcome::Error(format!(
            "idle, grace and timeouts must each be at most {} s",
            MAX_PROBE_DURATION.as_secs()
        ));
    }
    let bound = target.setup_bound(connect_timeout) + connect_timeout + idle + grace * 2;
    // The steps below are bounded one by one; this outer bound is a backstop.
    let outcome = match timeout(
        bound + Duration::from_millis(500),
        probe_idle_inner(target, idle, grace, connect_timeout),
    )
    .await
    {
        Ok(o) => o,
        Err(_) => IdleOutcome::Error(format!(
            "idle probe exceeded its bound of {} ms",
            bound.as_millis()
        )),
    };
    tracing::debug!(reflector = %target.addr, idle_ms = idle.as_millis() as u64, ?outcome, "idle probe done");
    outcome
}

async fn probe_idle_inner(
    target: &ReflectorTarget,
    idle: Duration,
    grace: Duration,
    connect_timeout: Duration,
) -> IdleOutcome {
    let mut conn = match connect(target, connect_timeout).await {
        Ok(c) => c,
        Err(e) => return IdleOutcome::Error(e.to_string()),
    };
    let nonce = nonce();
    let mut reader = LineReader::new();

    // Request → OK, bounded by connect_timeout.
    let request = format!("{VERSION} IDLE {} {nonce}", idle.as_millis());
    let setup = async {
        send_line(&mut conn, &request)
            .await
            .map_err(|e| format!("sending the IDLE request failed: {e}"))?;
        let line = reader
            .read_line(&mut conn)
            .await
            .map_err(|e| describe_line_error(&e, "waiting for OK"))?;
        match parse_reply(&line) {
            Some(Reply::Ok(n)) if n == nonce => Ok(()),
            Some(Reply::Err(reason)) => Err(format!("the reflector refused: ERR {reason}")),
            _ => Err(format!("expected OK {nonce}, got {}", quote(&line))),
        }
    };
    match timeout(connect_timeout, setup).await {
        Ok(Ok(())) => {}
        Ok(Err(msg)) => {
            conn.abort();
            return IdleOutcome::Error(msg);
        }
        Err(_) => {
            conn.abort();
            return IdleOutcome::Error(format!(
                "no OK from the reflector within {} ms",
                connect_timeout.as_millis()
            ));
        }
    }

    // The idle period: send nothing, wait for PING.
    let started = Instant::now();
    match timeout_at(started + idle + grace, reader.read_line(&mut conn)).await {
        Err(_) => {} // no PING in time
        Ok(Ok(line)) => match parse_reply(&line) {
            Some(Reply::Ping(n)) if n == nonce => {
                let slack = (idle / 10).max(Duration::from_secs(1));
                if started.elapsed() + slack < idle {
                    // A PING well before the idle is up would make the probe
                    // meaningless: the reflector broke the protocol. (Some
                    // slack: the OK may have been delayed on the way.)
                    conn.abort();
                    return IdleOutcome::Error(format!(
                        "the reflector sent PING after {} ms, before the idle of {} ms was up",
                        started.elapsed().as_millis(),
                        idle.as_millis()
                    ));
                }
                return finish_survived(conn, reader, &nonce, grace).await;
            }
            _ => {
                conn.abort();
                return IdleOutcome::Error(format!(
                    "expected PING {nonce} after the idle, got {}",
                    quote(&line)
                ));
            }
        },
        Ok(Err(LineError::Io(e))) if is_reset(&e) => return IdleOutcome::Reset,
        // Through a proxy, an in-order close during the idle is the proxy's idle
        // timer ending the tunnel (the reflector itself never closes first).
        Ok(Err(LineError::Eof)) if target.proxy.is_some() => return IdleOutcome::Closed,
        Ok(Err(e)) => {
            conn.abort();
            return IdleOutcome::Error(describe_line_error(&e, "during the idle period"));
        }
    }

    // No PING by idle + grace: test upstream.
    match timeout(grace, send_line(&mut conn, &format!("UP {nonce}"))).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) if is_reset(&e) => return IdleOutcome::Reset,
        Ok(Err(e)) => {
            conn.abort();
            return IdleOutcome::Error(format!("sending UP failed: {e}"));
        }
        Err(_) => {
            conn.abort();
            return IdleOutcome::SilentDrop;
        }
    }
    let deadline = Instant::now() + grace;
    let mut late_ping = false;
    for _ in 0..MAX_LINES_PER_WAIT {
        match timeout_at(deadline, reader.read_line(&mut conn)).await {
            Err(_) => break,
            Ok(Ok(line)) => match parse_reply(&line) {
                Some(Reply::UpOk) => {
                    conn.abort();
                    return IdleOutcome::OneWay;
                }
                // The PING came only after our byte up: downstream was broken
                // until upstream traffic revived the flow.
                Some(Reply::Ping(n)) if n == nonce => late_ping = true,
                _ => {
                    conn.abort();
                    return IdleOutcome::Error(format!(
                        "expected UPOK after UP, got {}",
                        quote(&line)
                    ));
                }
            },
            Ok(Err(LineError::Io(e))) if is_reset(&e) => return IdleOutcome::Reset,
            Ok(Err(e)) => {
                conn.abort();
                return IdleOutcome::Error(describe_line_error(&e, "waiting for UPOK"));
            }
        }
    }
    conn.abort();
    if late_ping {
        IdleOutcome::OneWay
    } else {
        IdleOutcome::SilentDrop
    }
}

/// PING arrived: answer PONG and wait for BYE.
async fn finish_survived(
    mut conn: Conn,
    mut reader: LineReader,
    nonce: &str,
    grace: Duration,
) -> IdleOutcome {
    let exchange = async {
        send_line(&mut conn, &format!("PONG {nonce}"))
            .await
            .map_err(LineError::Io)?;
        reader.read_line(&mut conn).await
    };
    match timeout(grace, exchange).await {
        Ok(Ok(line)) if parse_reply(&line) == Some(Reply::Bye) => IdleOutcome::Survived,
        Ok(Ok(line)) => {
            conn.abort();
            IdleOutcome::Error(format!("expected BYE after PONG, got {}", quote(&line)))
        }
        Ok(Err(LineError::Io(e))) if is_reset(&e) => IdleOutcome::Reset,
        Ok(Err(e)) => {
            conn.abort();
            IdleOutcome::Error(describe_line_error(&e, "waiting for BYE"))
        }
        // Down worked (PING arrived) but the PONG up was never answered.
        Err(_) => {
            conn.abort();
            IdleOutcome::SilentDrop
        }
    }
}

fn describe_line_error(e: &LineError, when: &str) -> String {
    match e {
        LineError::Eof => format!("the reflector closed the connection {when}"),
        LineError::TooLong => format!("the reflector sent an over-long line {when}"),
        LineError::NotText => format!("the reflector sent a non-text line {when}"),
        LineError::Io(e) => format!("connection failed {when}: {e}"),
    }
}

/// A peer's line, quoted and sanitized for a message.
fn quote(line: &str) -> String {
    format!("\"{}\"", super::protocol::sanitize(line, 64))
}

/// An open connection for RTT samples: each [`EchoSession::echo`] sends one
/// `HPR1 ECHO <nonce>` and times the matching answer.
///
/// Answers that arrive after their request timed out are recognised by their
/// nonce and skipped, so a late answer is never taken for the current one.
pub struct EchoSession {
    conn: Conn,
    reader: LineReader,
    prefix: String,
    seq: u64,
    closed: Option<String>,
}

impl std::fmt::Debug for EchoSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EchoSession")
            .field("peer", &self.conn.tcp().peer_addr().ok())
            .field("sent", &self.seq)
            .field("closed", &self.closed)
            .finish()
    }
}

impl EchoSession {
    /// Connects (TCP keep-alive off; TLS when the target says so). Bounded by
    /// `connect_timeout` plus the TLS timeout. Errors say which step failed.
    pub async fn open(target: &ReflectorTarget, connect_timeout: Duration) -> io::Result<Self> {
        let conn = connect(target, connect_timeout).await?;
        Ok(EchoSession {
            conn,
            reader: LineReader::new(),
            prefix: nonce(),
            seq: 0,
            closed: None,
        })
    }

    /// One round trip: the time from sending the request to reading its
    /// answer, or `None` when no answer came within `timeout` (lost, delayed
    /// or the session is closed; see [`EchoSession::closed_reason`]).
    pub async fn echo(&mut self, timeout: Duration) -> Option<Duration> {
        if self.closed.is_some() {
            return None;
        }
        self.seq += 1;
        let nonce = format!("{}-{}", self.prefix, self.seq);
        let started = Instant::now();
        let deadline = started + timeout.min(MAX_PROBE_DURATION);
        match timeout_at(
            deadline,
            send_line(&mut self.conn, &format!("{VERSION} ECHO {nonce}")),
        )
        .await
        {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                self.closed = Some(format!("sending ECHO failed: {e}"));
                return None;
            }
            Err(_) => {
                // A write cut short may have left half a line on the stream.
                self.closed = Some("sending ECHO timed out".into());
                return None;
            }
        }
        for _ in 0..MAX_LINES_PER_WAIT {
            let line = match timeout_at(deadline, self.reader.read_line(&mut self.conn)).await {
                Err(_) => return None,
                Ok(Ok(line)) => line,
                Ok(Err(e)) => {
                    self.closed = Some(describe_line_error(&e, "in the echo session"));
                    return None;
                }
            };
            match parse_reply(&line) {
                Some(Reply::Echo(n)) if n == nonce => return Some(started.elapsed()),
                Some(Reply::Echo(n)) if self.is_stale(&n) => continue,
                _ => {
                    self.closed = Some(format!("unexpected line {}", quote(&line)));
                    return None;
                }
            }
        }
        None
    }

    /// Whether `n` answers one of this session's earlier requests.
    fn is_stale(&self, n: &str) -> bool {
        n.strip_prefix(&self.prefix)
            .and_then(|rest| rest.strip_prefix('-'))
            .and_then(|seq| seq.parse::<u64>().ok())
            .is_some_and(|seq| seq < self.seq)
    }

    /// Why the session stopped working, once it has (EOF, reset, protocol
    /// error); `None` while it is usable.
    pub fn closed_reason(&self) -> Option<&str> {
        self.closed.as_deref()
    }

    /// Whether the session stopped working; every further echo returns `None`.
    pub fn is_closed(&self) -> bool {
        self.closed.is_some()
    }

    /// The socket's local address (e.g. to find the flow in a NAT table).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.conn.tcp().local_addr()
    }
}

#[cfg(test)]
pub(super) async fn connect_for_test(
    target: &ReflectorTarget,
    connect_timeout: Duration,
) -> io::Result<bool> {
    let conn = connect(target, connect_timeout).await?;
    socket2::SockRef::from(conn.tcp()).keepalive()
}

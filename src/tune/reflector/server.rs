//! The reflector server: accepts connections (plain TCP or TLS), answers
//! `HPR1` requests, and keeps itself safe to leave running unattended.

use crate::probe::tls::pem::PemProblem;
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::ServerConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::timeout;
use tokio_rustls::TlsAcceptor;

use super::protocol::{
    parse_after_ping, parse_request, send_line, AfterPing, Conn, LineError, LineReader, Request,
    MAX_LINE,
};

/// Most requests one connection may make (ECHO lines, then possibly one IDLE).
pub const MAX_REQUESTS_PER_CONNECTION: u32 = 100_000;

/// Upper limit for every duration in [`ReflectorConfig`].
const MAX_DURATION: Duration = Duration::from_secs(30 * 24 * 3600);

/// Longest the server spends closing a connection gracefully (flushing the
/// last line, TLS close_notify, draining what the client still sends).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// Pause after an accept error that is not about one connection (out of file
/// descriptors, out of memory), so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Default of [`ReflectorConfig::max_per_address`]: twice the widest ladder a
/// `hubprobe tune` opens by default (128), a quarter of the default
/// `max_connections`.
pub const DEFAULT_MAX_PER_ADDRESS: usize = 256;

/// Connections open per source (see [`source_key`]); a slot is given back when
/// its [`AddressSlot`] drops.
#[derive(Default)]
struct PerAddress {
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection's place in its source's count.
struct AddressSlot {
    table: Arc<PerAddress>,
    key: IpAddr,
}

impl PerAddress {
    /// A slot for `peer`, or `None` when its source already has `max` open.
    fn acquire(table: &Arc<PerAddress>, peer: IpAddr, max: usize) -> Option<AddressSlot> {
        let key = source_key(peer);
        let mut open = table.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(key).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(AddressSlot {
            table: Arc::clone(table),
            key,
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = self.table.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// What counts as one source: an IPv4 address (also when it arrives IPv4-mapped
/// on a dual-stack listener), or an IPv6 /64 (one host can hold a whole /64).
fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(std::net::Ipv6Addr::from(bits))
            }
        },
    }
}

/// [`source_key`] for the module's tests.
#[cfg(test)]
pub(super) fn source_key_for_test(ip: IpAddr) -> IpAddr {
    source_key(ip)
}

/// The server's limits. [`ReflectorConfig::default`] suits a reflector left
/// running near a hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReflectorConfig {
    /// Most connections served at once; one more is answered `ERR busy` (plain
    /// TCP) or closed (TLS) right after accept. Default 1024.
    pub max_connections: usize,
    /// Most connections served at once from one source address (IPv6: one /64,
    /// what one host or site usually holds), so that one client holding long
    /// `IDLE`s cannot lock every other client out; one more is turned away like
    /// one over `max_connections`. Default [`DEFAULT_MAX_PER_ADDRESS`].
    pub max_per_address: usize,
    /// Longest idle period a client may ask for; longer requests get `ERR idle
    /// too long`. Also the longest gap allowed between two `ECHO` requests on
    /// one connection. Default 2 h (RFC 5382's minimum NAT timeout is 2 h 4 min,
    /// and no hub keep-alive is longer).
    pub max_idle: Duration,
    /// Bound on the TLS handshake and on the wait for the first request line
    /// after accept; also bounds each write. Default 10 s.
    pub request_timeout: Duration,
    /// How long the server waits, after sending `PING`, for the client's `PONG`
    /// or `UP`; then it resets the connection. Must be longer than any client's
    /// grace (the tuner's grace is seconds). Default 120 s.
    pub reply_timeout: Duration,
}

impl Default for ReflectorConfig {
    fn default() -> Self {
        ReflectorConfig {
            max_connections: 1024,
            max_per_address: DEFAULT_MAX_PER_ADDRESS,
            max_idle: Duration::from_secs(2 * 3600),
            request_timeout: Duration::from_secs(10),
            reply_timeout: Duration::from_secs(120),
        }
    }
}

impl ReflectorConfig {
    fn validate(&self) -> io::Result<()> {
        let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidInput, what.to_string());
        if self.max_connections == 0 {
            return Err(invalid("reflector: max_connections must be at least 1"));
        }
        if self.max_per_address == 0 {
            return Err(invalid("reflector: max_per_address must be at least 1"));
        }
        if self.max_connections > Semaphore::MAX_PERMITS {
            return Err(invalid("reflector: max_connections is too large"));
        }
        if self.request_timeout.is_zero() || self.reply_timeout.is_zero() {
            return Err(invalid(
                "reflector: request_timeout and reply_timeout must be positive",
            ));
        }
        if [self.max_idle, self.request_timeout, self.reply_timeout]
            .iter()
            .any(|d| *d > MAX_DURATION)
        {
            return Err(invalid(
                "reflector: max_idle, request_timeout and reply_timeout must each be at most 30 days",
            ));
        }
        Ok(())
    }
}

/// Serves `HPR1` on `listener` until `shutdown` completes, then closes every
/// open connection and returns.
///
/// With `tls` set, every connection starts with a TLS handshake (bounded by
/// `request_timeout`). Each connection runs in its own task; at most
/// `cfg.max_connections` at once. The server never panics on input: a bad
/// request is answered `ERR <reason>` and the connection closed.
///
/// Errors: only an invalid `cfg` (`InvalidInput`). Accept errors are logged
/// and retried (after a short pause when they are not about one connection,
/// e.g. out of file descriptors).
pub async fn serve<F>(
    listener: TcpListener,
    tls: Option<Arc<ServerConfig>>,
    cfg: ReflectorConfig,
    shutdown: F,
) -> io::Result<()>
where
    F: Future<Output = ()>,
{
    cfg.validate()?;
    let cfg = Arc::new(cfg);
    let acceptor = tls.map(TlsAcceptor::from);
    let permits = Arc::new(Semaphore::new(cfg.max_connections));
    let per_address = Arc::new(PerAddress::default());
    let mut tasks: JoinSet<()> = JoinSet::new();
    tracing::info!(
        listen = ?listener.local_addr().ok(),
        tls = acceptor.is_some(),
        max_connections = cfg.max_connections,
        max_per_address = cfg.max_per_address,
        max_idle_ms = cfg.max_idle.as_millis() as u64,
        "reflector listening"
    );
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                if let Err(e) = done {
                    if e.is_panic() {
                        tracing::error!("reflector connection task panicked");
                    }
                }
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    match PerAddress::acquire(&per_address, peer.ip(), cfg.max_per_address) {
                        None => busy(stream, peer, acceptor.is_some(), Busy::Address(cfg.max_per_address)),
                        Some(slot) => match Arc::clone(&permits).try_acquire_owned() {
                            Ok(permit) => {
                                tasks.spawn(connection(stream, peer, acceptor.clone(), Arc::clone(&cfg), (permit, slot)));
                            }
                            Err(_) => busy(stream, peer, acceptor.is_some(), Busy::Server),
                        },
                    }
                }
                Err(e) => match e.kind() {
                    io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionRefused
                    | io::ErrorKind::Interrupted
                    | io::ErrorKind::WouldBlock => {}
                    _ => {
                        tracing::warn!(error = %e, "reflector: accept failed; pausing");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                    }
                },
            },
        }
    }
    tracing::info!(open = tasks.len(), "reflector shutting down");
    tasks.shutdown().await;
    Ok(())
}

/// Which limit turned a connection away.
enum Busy {
    /// `max_connections`.
    Server,
    /// `max_per_address` (the limit).
    Address(usize),
}

/// Turns away a connection over a limit without spending a task on it: a
/// plain-TCP client gets `ERR busy: ...` (a non-blocking write into an empty send
/// buffer), a TLS client just sees the close.
fn busy(stream: TcpStream, peer: SocketAddr, tls: bool, why: Busy) {
    let line = match why {
        Busy::Server => {
            tracing::debug!(%peer, "reflector: connection limit reached; refusing");
            "ERR busy: too many connections, try again later\n".to_string()
        }
        Busy::Address(max) => {
            tracing::debug!(%peer, max, "reflector: per-address limit reached; refusing");
            format!("ERR busy: too many connections from your address (at most {max}), try again later\n")
        }
    };
    if !tls {
        let _ = stream.try_write(line.as_bytes());
    }
}

/// How a connection ends.
enum End {
    /// Flush, close politely (FIN / close_notify), drain briefly.
    Graceful,
    /// Reset at once (the path or the peer is gone; nothing to flush).
    Abort,
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    acceptor: Option<TlsAcceptor>,
    cfg: Arc<ReflectorConfig>,
    _slots: (OwnedSemaphorePermit, AddressSlot),
) {
    let _ = stream.set_nodelay(true);
    // Keep-alive probes would refresh the very NAT state being measured.
    let _ = socket2::SockRef::from(&stream).set_keepalive(false);
    let conn = match acceptor {
        None => Conn::Plain(stream),
        Some(acceptor) => match timeout(cfg.request_timeout, acceptor.accept(stream)).await {
            Ok(Ok(tls)) => Conn::Tls(Box::new(tokio_rustls::TlsStream::Server(tls))),
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "reflector: TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "reflector: TLS handshake timed out");
                return;
            }
        },
    };
    let mut session = Session {
        conn,
        reader: LineReader::new(),
        cfg,
        peer,
    };
    let end = session.run().await;
    match end {
        End::Graceful => close_gracefully(session.conn).await,
        End::Abort => session.conn.abort(),
    }
}

/// Shuts down the write side (TLS close_notify, FIN), then reads and discards
/// what the client still sends until it closes, so that unread input does not
/// turn the close into a reset that could destroy the last line we sent.
/// Bounded by [`CLOSE_TIMEOUT`] and 64 KiB.
async fn close_gracefully(mut conn: Conn) {
    let _ = timeout(CLOSE_TIMEOUT, async {
        let _ = conn.shutdown().await;
        let mut sink = [0u8; 1024];
        for _ in 0..64 {
            match conn.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
}

struct Session {
    conn: Conn,
    reader: LineReader,
    cfg: Arc<ReflectorConfig>,
    peer: SocketAddr,
}

impl Session {
    async fn run(&mut self) -> End {
        let mut wait = self.cfg.request_timeout;
        for _ in 0..MAX_REQUESTS_PER_CONNECTION {
            let line = match timeout(wait, self.reader.read_line(&mut self.conn)).await {
                Err(_) => {
                    let ms = wait.as_millis();
                    return self
                        .refuse(&format!("timeout: no request within {ms} ms"))
                        .await;
                }
                Ok(Err(LineError::Eof)) => return End::Graceful,
                Ok(Err(LineError::TooLong)) => {
                    return self
                        .refuse(&format!("line too long (at most {MAX_LINE} bytes)"))
                        .await
                }
                Ok(Err(LineError::NotText)) => {
                    return self.refuse("request is not ASCII text").await
                }
                Ok(Err(LineError::Io(e))) => {
                    tracing::debug!(peer = %self.peer, error = %e, "reflector: read failed");
                    return End::Abort;
                }
                Ok(Ok(line)) => line,
            };
            match parse_request(&line, self.cfg.max_idle) {
                Err(reason) => return self.refuse(&reason).await,
                Ok(Request::Echo { nonce }) => {
                    if !self.send(&format!("ECHO {nonce}")).await {
                        return End::Abort;
                    }
                    wait = self.cfg.max_idle.max(self.cfg.request_timeout);
                }
                Ok(Request::Idle { idle, nonce }) => return self.idle(idle, &nonce).await,
            }
        }
        self.refuse("too many requests on one connection").await
    }

    /// The IDLE exchange: OK, silence, PING, then PONG → BYE or UP → UPOK.
    async fn idle(&mut self, idle: Duration, nonce: &str) -> End {
        if !self.send(&format!("OK {nonce}")).await {
            return End::Abort;
        }
        tracing::debug!(peer = %self.peer, idle_ms = idle.as_millis() as u64, "reflector: idle starts");
        // Silence. Reading meanwhile notices a client that goes away (EOF /
        // reset) or breaks the protocol by talking.
        tokio::select! {
            () = tokio::time::sleep(idle) => {}
            got = self.reader.read_line(&mut self.conn) => {
                return match got {
                    Ok(_) => self.refuse("unexpected data during the idle period").await,
                    Err(LineError::Eof) => End::Graceful,
                    Err(LineError::TooLong | LineError::NotText) => {
                        self.refuse("unexpected data during the idle period").await
                    }
                    Err(LineError::Io(_)) => End::Abort,
                };
            }
        }
        if !self.send(&format!("PING {nonce}")).await {
            return End::Abort;
        }
        let reply = self.reader.read_line(&mut self.conn);
        let line = match timeout(self.cfg.reply_timeout, reply).await {
            // No answer: the path is gone (or the client gave up). Reset so no
            // retransmission state lingers.
            Err(_) => return End::Abort,
            Ok(Err(LineError::Eof)) => return End::Graceful,
            Ok(Err(LineError::Io(_))) => return End::Abort,
            Ok(Err(LineError::TooLong | LineError::NotText)) => {
                return self.refuse("expected PONG or UP").await
            }
            Ok(Ok(line)) => line,
        };
        match parse_after_ping(&line) {
            Some(AfterPing::Pong(n)) if n == nonce => {
                self.send("BYE").await;
                End::Graceful
            }
            Some(AfterPing::Up(n)) if n == nonce => {
                self.send("UPOK").await;
                End::Graceful
            }
            Some(_) => self.refuse("nonce does not match this connection's").await,
            None => self.refuse("expected PONG <nonce> or UP <nonce>").await,
        }
    }

    /// Sends one line, bounded by `request_timeout`; false when it failed.
    async fn send(&mut self, line: &str) -> bool {
        match timeout(self.cfg.request_timeout, send_line(&mut self.conn, line)).await {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                tracing::debug!(peer = %self.peer, error = %e, "reflector: write failed");
                false
            }
            Err(_) => {
                tracing::debug!(peer = %self.peer, "reflector: write timed out");
                false
            }
        }
    }

    /// Answers `ERR <reason>` and asks for a graceful close.
    async fn refuse(&mut self, reason: &str) -> End {
        tracing::debug!(peer = %self.peer, reason, "reflector: refusing");
        if self.send(&format!("ERR {reason}")).await {
            End::Graceful
        } else {
            End::Abort
        }
    }
}

/// Why [`server_tls_config`] failed. Messages name the file and the problem,
/// never any byte of the key.
#[derive(Debug, thiserror::Error)]
pub enum ReflectorTlsError {
    /// The certificate file could not be read.
    #[error("cannot read reflector certificate file {} (--cert): {problem}", path.display())]
    CertRead {
        /// The file.
        path: PathBuf,
        /// Why (an OS message, not a regular file, too large; never content).
        problem: crate::fsio::InputFileError,
    },
    /// The certificate file holds no PEM certificate.
    #[error("reflector certificate file {} contains no PEM certificate ('BEGIN CERTIFICATE')", path.display())]
    CertMissing {
        /// The file.
        path: PathBuf,
    },
    /// The certificate file is malformed or its leaf cannot be parsed.
    #[error("reflector certificate file {} is invalid: {reason}", path.display())]
    CertInvalid {
        /// The file.
        path: PathBuf,
        /// A fixed description of the problem.
        reason: &'static str,
    },
    /// The key file could not be read.
    #[error("cannot read reflector private key file {} (--key): {problem}", path.display())]
    KeyRead {
        /// The file.
        path: PathBuf,
        /// Why (an OS message, not a regular file, too large; never content).
        problem: crate::fsio::InputFileError,
    },
    /// The key file holds no supported PEM private key.
    #[error("reflector private key file {} contains no PEM private key (expected 'PRIVATE KEY', 'RSA PRIVATE KEY' or 'EC PRIVATE KEY')", path.display())]
    KeyMissing {
        /// The file.
        path: PathBuf,
    },
    /// The key is malformed, encrypted or of an unsupported type.
    #[error("reflector private key file {} is unusable: {reason}", path.display())]
    KeyInvalid {
        /// The file.
        path: PathBuf,
        /// A fixed description of the problem, never derived from the file.
        reason: &'static str,
    },
    /// The key does not belong to the certificate.
    #[error("reflector private key {} does not match the certificate in {} (their public keys differ)", key.display(), cert.display())]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
}

/// Builds the reflector's TLS server configuration from a PEM certificate
/// chain (leaf first) and a PEM private key (PKCS#8, PKCS#1 or SEC1), with the
/// ring provider set explicitly (never a process-wide default). TLS 1.3 and
/// 1.2, no client authentication, no ALPN.
///
/// Errors name the file and the problem and never contain key material.
pub fn server_tls_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, ReflectorTlsError> {
    let chain = read_chain(cert)?;
    let key_der = read_key(key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let signing_key = provider
        .key_provider
        .load_private_key(key_der)
        .map_err(|_| ReflectorTlsError::KeyInvalid {
            path: key.to_path_buf(),
            reason: "the key is corrupt or not a supported type (RSA, ECDSA P-256/P-384, Ed25519)",
        })?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            return Err(ReflectorTlsError::KeyMismatch {
                cert: cert.to_path_buf(),
                key: key.to_path_buf(),
            })
        }
        Err(_) => {
            return Err(ReflectorTlsError::CertInvalid {
                path: cert.to_path_buf(),
                reason: "the leaf certificate cannot be parsed",
            })
        }
    }
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|_| ReflectorTlsError::CertInvalid {
            path: cert.to_path_buf(),
            reason: "no usable TLS protocol version with the ring provider",
        })?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(certified)));
    Ok(Arc::new(config))
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, ReflectorTlsError> {
    let path_buf = path.to_path_buf();
    crate::probe::tls::pem::read_certificates(path).map_err(|p| match p {
        PemProblem::Read(problem) => ReflectorTlsError::CertRead {
            path: path_buf,
            problem,
        },
        PemProblem::NoCertificate => ReflectorTlsError::CertMissing { path: path_buf },
        _ => ReflectorTlsError::CertInvalid {
            path: path_buf,
            reason: crate::probe::tls::pem::MALFORMED,
        },
    })
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, ReflectorTlsError> {
    let path_buf = path.to_path_buf();
    crate::probe::tls::pem::read_private_key(path).map_err(|p| match p {
        PemProblem::Read(problem) => ReflectorTlsError::KeyRead {
            path: path_buf,
            problem,
        },
        PemProblem::EncryptedKey => ReflectorTlsError::KeyInvalid {
            path: path_buf,
            reason: "the key is encrypted; the reflector needs an unencrypted key",
        },
        PemProblem::NoKey | PemProblem::NoCertificate => {
            ReflectorTlsError::KeyMissing { path: path_buf }
        }
        PemProblem::Malformed => ReflectorTlsError::KeyInvalid {
            path: path_buf,
            reason: crate::probe::tls::pem::MALFORMED,
        },
    })
}

//! The bill: bytes sent and received at the socket, counted per purpose.
//!
//! [`Metered`] wraps the TCP stream under every other layer of a chain (TLS,
//! WebSocket, MQTT), so what it counts is what the socket carried: TLS records,
//! WebSocket frames and MQTT packets with all their framing (not the TCP/IP
//! headers the kernel adds; [`ip_overhead`] estimates those). Which [`Tally`] a
//! connection counts into is the one in scope when its TCP hop ran
//! ([`scope`]): the agent runs its checks in the checks' scope and its session
//! task in the canary's, and a connection opened outside any scope is not
//! counted. The counters are atomics, read at any time without stopping the
//! connection.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes one purpose sent and received, counted as they pass the socket.
#[derive(Debug, Default)]
pub struct Tally {
    sent: AtomicU64,
    received: AtomicU64,
}

/// A reading of a [`Tally`] (or a difference of two).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bytes {
    /// Bytes written to the socket.
    pub sent: u64,
    /// Bytes read from the socket.
    pub received: u64,
}

impl Bytes {
    /// What was counted between `earlier` and `self` (zero if the counter went back).
    pub fn since(self, earlier: Bytes) -> Bytes {
        Bytes {
            sent: self.sent.saturating_sub(earlier.sent),
            received: self.received.saturating_sub(earlier.received),
        }
    }

    /// Both directions.
    pub fn total(self) -> u64 {
        self.sent.saturating_add(self.received)
    }
}

impl Tally {
    /// A new tally at zero, shared.
    pub fn shared() -> Arc<Tally> {
        Arc::new(Tally::default())
    }

    /// The counts so far.
    pub fn read(&self) -> Bytes {
        Bytes {
            sent: self.sent.load(Ordering::Relaxed),
            received: self.received.load(Ordering::Relaxed),
        }
    }

    /// Counts `n` bytes sent.
    pub fn add_sent(&self, n: u64) {
        self.sent.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts `n` bytes received.
    pub fn add_received(&self, n: u64) {
        self.received.fetch_add(n, Ordering::Relaxed);
    }
}

tokio::task_local! {
    static CURRENT: Arc<Tally>;
}

/// Runs `fut` with `tally` in scope: every chain whose TCP hop runs within it
/// counts into `tally` for the connection's whole life.
pub async fn scope<F: Future>(tally: Arc<Tally>, fut: F) -> F::Output {
    CURRENT.scope(tally, fut).await
}

/// The tally in scope, if any.
pub fn current() -> Option<Arc<Tally>> {
    CURRENT.try_with(Arc::clone).ok()
}

/// A stream that counts the bytes passing through it into a [`Tally`] (or passes
/// them uncounted without one). It dereferences to the stream it wraps.
#[derive(Debug)]
pub struct Metered<S> {
    inner: S,
    tally: Option<Arc<Tally>>,
}

impl<S> Metered<S> {
    /// Wraps `inner`, counting into the tally in scope (see [`scope`]).
    pub fn new(inner: S) -> Metered<S> {
        Metered {
            inner,
            tally: current(),
        }
    }

    /// Wraps `inner`, counting into `tally`.
    pub fn with(inner: S, tally: Option<Arc<Tally>>) -> Metered<S> {
        Metered { inner, tally }
    }

    /// The tally it counts into.
    pub fn tally(&self) -> Option<&Arc<Tally>> {
        self.tally.as_ref()
    }

    /// The wrapped stream.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S> From<S> for Metered<S> {
    fn from(inner: S) -> Metered<S> {
        Metered::new(inner)
    }
}

impl<S> std::ops::Deref for Metered<S> {
    type Target = S;
    fn deref(&self) -> &S {
        &self.inner
    }
}

impl<S> std::ops::DerefMut for Metered<S> {
    fn deref_mut(&mut self) -> &mut S {
        &mut self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Metered<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let (Poll::Ready(Ok(())), Some(t)) = (&r, &this.tally) {
            t.add_received((buf.filled().len() - before) as u64);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Metered<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, data);
        if let (Poll::Ready(Ok(n)), Some(t)) = (&r, &this.tally) {
            t.add_sent(*n as u64);
        }
        r
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if let (Poll::Ready(Ok(n)), Some(t)) = (&r, &this.tally) {
            t.add_sent(*n as u64);
        }
        r
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// IPv4 (20) + TCP (20) + timestamps option (12): the header bytes of one
/// segment, as the keep-alive tuner counts them.
pub const SEGMENT_HEADER: u64 = 52;

/// A typical TCP maximum segment size on cellular paths (1500-byte MTU).
pub const TYPICAL_MSS: u64 = 1448;

/// An estimate of the TCP/IP header bytes under `payload` bytes carried in
/// `messages` separate writes: one segment per started MSS of each message, and a
/// pure ACK back for each segment (delayed ACKs would halve that; this errs high).
pub fn ip_overhead(payload: u64, messages: u64) -> u64 {
    if messages == 0 {
        return 0;
    }
    let per = payload.div_ceil(messages).max(1);
    let segments = messages * per.div_ceil(TYPICAL_MSS);
    segments * SEGMENT_HEADER * 2
}

/// TLS 1.3 record overhead: header 5, content type 1, AEAD tag 16.
pub const TLS_RECORD: u64 = 22;

/// Bytes at the socket of one QoS 1 upload of a `body`-byte report to a topic of
/// `topic_len` bytes: PUBLISH (fixed header ≤ 5, topic 2 + len, packet id 2, body)
/// and PUBACK (4), each in TLS records (one per 16 kB) when `tls`.
pub fn publish_socket_bytes(body: u64, topic_len: u64, tls: bool) -> u64 {
    let publish = 5 + 2 + topic_len + 2 + body;
    let records = if tls {
        TLS_RECORD * (publish.div_ceil(16_384) + 1)
    } else {
        0
    };
    publish + 4 + records
}

/// A routine agent report on the wire in the compact form, body bytes: what the
/// lab's two-endpoint reports measure (README, "Benchmarks"), for cost figures
/// made before any report exists.
pub const TYPICAL_COMPACT_REPORT: u64 = 1_300;

/// Bytes a day, TCP/IP headers included (as the keep-alive figures count them),
/// of uploading a `body`-byte report every `interval` over TLS.
pub fn upload_bytes_per_day(body: u64, interval: std::time::Duration) -> u64 {
    let per_day = 86_400.0 / interval.as_secs_f64().max(0.001);
    // An IoT Hub device-to-cloud topic with its properties is ~150 bytes.
    let socket = publish_socket_bytes(body, 150, true);
    let n = per_day.round() as u64;
    n * socket + ip_overhead(n * socket, n * 2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn counts_both_directions_into_the_tally_in_scope() {
        let tally = Tally::shared();
        let (a, mut b) = tokio::io::duplex(64);
        let mut m = scope(tally.clone(), async { Metered::new(a) }).await;
        m.write_all(b"hello").await.unwrap();
        let mut got = [0u8; 5];
        b.read_exact(&mut got).await.unwrap();
        b.write_all(b"0123456789").await.unwrap();
        let mut back = [0u8; 10];
        m.read_exact(&mut back).await.unwrap();
        assert_eq!(
            tally.read(),
            Bytes {
                sent: 5,
                received: 10
            }
        );
    }

    #[tokio::test]
    async fn outside_a_scope_nothing_is_counted() {
        let (a, _b) = tokio::io::duplex(64);
        let mut m = Metered::new(a);
        assert!(m.tally().is_none());
        m.write_all(b"x").await.unwrap();
    }

    #[test]
    fn differences_never_go_negative() {
        let a = Bytes {
            sent: 10,
            received: 3,
        };
        let b = Bytes {
            sent: 4,
            received: 5,
        };
        assert_eq!(
            a.since(b),
            Bytes {
                sent: 6,
                received: 0
            }
        );
        assert_eq!(a.total(), 13);
    }

    #[test]
    fn publish_framing_adds_up() {
        // 5 + 2 + 10 + 2 + 100 + 4, and two TLS records.
        assert_eq!(publish_socket_bytes(100, 10, false), 123);
        assert_eq!(publish_socket_bytes(100, 10, true), 123 + 44);
        // 288 uploads a day of a 1300-byte report: 288 × 1507 + 576 × 104.
        let d = upload_bytes_per_day(1_300, std::time::Duration::from_secs(300));
        assert_eq!(d, 288 * 1_507 + 576 * 104);
    }

    #[test]
    fn ip_overhead_counts_segments_and_their_acks() {
        // One 2-byte message: one segment and its ACK.
        assert_eq!(ip_overhead(2, 1), 104);
        // 3000 bytes in one write: three segments, three ACKs.
        assert_eq!(ip_overhead(3000, 1), 3 * 104);
        assert_eq!(ip_overhead(0, 0), 0);
    }
}

//! The byte stream the protocol phases run on: plain TCP or TLS over TCP, and on
//! top of it, for WebSocket endpoints, a WebSocket carrying binary frames.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::WebSocketStream;

use crate::net::meter::Metered;

/// Plain TCP, or TLS over TCP with the TLS stream type `T` (client side for the
/// probes, client or server side for the reflector). `P` is the plain stream: the
/// probes' is a [`Metered`] TCP stream (the bill counts every byte under TLS).
pub enum MaybeTls<T, P = TcpStream> {
    /// Plain TCP.
    Plain(P),
    /// TLS over TCP.
    Tls(Box<T>),
}

/// The TCP stream under a probe's chain, counted at the socket.
pub type Tcp = Metered<TcpStream>;

/// A probe's stream: plain TCP or client-side TLS over TCP.
pub type Stream = MaybeTls<TlsStream<Tcp>, Tcp>;

impl<T: AsyncRead + Unpin, P: AsyncRead + Unpin> AsyncRead for MaybeTls<T, P> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_read(cx, buf),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl<T: AsyncWrite + Unpin, P: AsyncWrite + Unpin> AsyncWrite for MaybeTls<T, P> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_write(cx, data),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, data),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_flush(cx),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_shutdown(cx),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// What a protocol phase talks over: a byte stream or a WebSocket.
pub enum Link {
    /// Bytes straight on the stream.
    Stream(Stream),
    /// Bytes in WebSocket binary frames.
    Ws(Box<WebSocketStream<Stream>>),
}

impl Link {
    /// Sends bytes (one binary frame on a WebSocket).
    pub async fn send(&mut self, data: &[u8]) -> io::Result<()> {
        match self {
            Link::Stream(s) => {
                s.write_all(data).await?;
                s.flush().await
            }
            Link::Ws(ws) => ws
                .send(Message::binary(data.to_vec()))
                .await
                .map_err(ws_to_io),
        }
    }

    /// Appends what arrives next to `buf`; `Ok(0)` means the peer closed.
    pub async fn recv(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        match self {
            Link::Stream(s) => {
                let mut chunk = [0u8; 4096];
                let n = s.read(&mut chunk).await?;
                buf.extend_from_slice(&chunk[..n]);
                Ok(n)
            }
            Link::Ws(ws) => loop {
                match ws.next().await {
                    None => return Ok(0),
                    Some(Err(e)) => return Err(ws_to_io(e)),
                    Some(Ok(Message::Binary(b))) => {
                        if b.is_empty() {
                            continue;
                        }
                        buf.extend_from_slice(&b);
                        return Ok(b.len());
                    }
                    Some(Ok(Message::Close(_))) => return Ok(0),
                    Some(Ok(Message::Text(_))) => {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "text frame on an MQTT WebSocket",
                        ))
                    }
                    // Ping/Pong are answered by tungstenite itself.
                    Some(Ok(_)) => continue,
                }
            },
        }
    }

    /// Closes politely, bounded by the caller's timeout.
    pub async fn close(&mut self) {
        match self {
            Link::Stream(s) => {
                let _ = s.shutdown().await;
            }
            Link::Ws(ws) => {
                let _ = ws.send(Message::Close(None)).await;
                let _ = SinkExt::close(ws.as_mut()).await;
            }
        }
    }
}

/// Maps a WebSocket error to the I/O error it stands for, so callers classify once.
pub fn ws_to_io(e: tungstenite::Error) -> io::Error {
    use tungstenite::error::ProtocolError;
    match e {
        tungstenite::Error::Io(e) => e,
        tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => {
            io::Error::new(io::ErrorKind::UnexpectedEof, "WebSocket closed")
        }
        tungstenite::Error::Protocol(ProtocolError::ResetWithoutClosingHandshake) => {
            io::Error::new(
                io::ErrorKind::ConnectionReset,
                "WebSocket reset without closing handshake",
            )
        }
        other => io::Error::new(io::ErrorKind::InvalidData, other.to_string()),
    }
}

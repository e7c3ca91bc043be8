//! A WebSocket as a byte stream: binary frames in, binary frames out, so a protocol
//! library that wants `AsyncRead + AsyncWrite` (AMQP 1.0 over WebSocket, subprotocol
//! `AMQPWSB10`) runs over the WebSocket the connection chain already upgraded.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::{Sink, Stream as _};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::stream::{ws_to_io, Stream};

/// The chain's WebSocket read and written as bytes. Each write is one binary frame;
/// reads return the payload of binary frames in order (ping/pong are answered by
/// the WebSocket layer, a close frame reads as end of stream, a text frame is an error).
pub struct WsIo {
    ws: Box<WebSocketStream<Stream>>,
    pending: bytes::Bytes,
    closed: bool,
}

impl WsIo {
    /// Wraps the chain's WebSocket.
    pub fn new(ws: Box<WebSocketStream<Stream>>) -> Self {
        WsIo {
            ws,
            pending: bytes::Bytes::new(),
            closed: false,
        }
    }
}

impl AsyncRead for WsIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.pending.is_empty() {
                let n = this.pending.len().min(buf.remaining());
                buf.put_slice(&this.pending.split_to(n));
                return Poll::Ready(Ok(()));
            }
            if this.closed {
                return Poll::Ready(Ok(()));
            }
            match Pin::new(this.ws.as_mut()).poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) | Poll::Ready(Some(Ok(Message::Close(_)))) => {
                    this.closed = true;
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(ws_to_io(e))),
                Poll::Ready(Some(Ok(Message::Binary(b)))) => this.pending = b,
                Poll::Ready(Some(Ok(Message::Text(_)))) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "text frame on a binary WebSocket",
                    )))
                }
                Poll::Ready(Some(Ok(_))) => continue,
            }
        }
    }
}

impl AsyncWrite for WsIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let mut ws = Pin::new(this.ws.as_mut());
        match ws.as_mut().poll_ready(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(ws_to_io(e))),
            Poll::Ready(Ok(())) => {}
        }
        ws.start_send(Message::binary(data.to_vec()))
            .map_err(ws_to_io)?;
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.get_mut().ws.as_mut())
            .poll_flush(cx)
            .map_err(ws_to_io)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.get_mut().ws.as_mut())
            .poll_close(cx)
            .map_err(ws_to_io)
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::{SinkExt, StreamExt};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn bytes_cross_as_binary_frames_and_a_close_reads_as_the_end() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
            // Echo the first binary frame in two frames, with a ping between.
            let Some(Ok(Message::Binary(b))) = ws.next().await else {
                panic!("expected a binary frame");
            };
            let (a, c) = b.split_at(2);
            ws.send(Message::binary(a.to_vec())).await.unwrap();
            ws.send(Message::Ping(Vec::new().into())).await.unwrap();
            ws.send(Message::binary(c.to_vec())).await.unwrap();
            ws.send(Message::Close(None)).await.unwrap();
            // Let the client's close answer arrive.
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), ws.next()).await;
        });
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (ws, _) =
            tokio_tungstenite::client_async(format!("ws://{addr}/"), Stream::Plain(tcp.into()))
                .await
                .unwrap();
        let mut io = WsIo::new(Box::new(ws));
        io.write_all(b"hello").await.unwrap();
        io.flush().await.unwrap();
        let mut got = Vec::new();
        let read =
            tokio::time::timeout(std::time::Duration::from_secs(5), io.read_to_end(&mut got))
                .await
                .expect("bounded")
                .unwrap();
        assert_eq!(read, 5);
        assert_eq!(got, b"hello");
        server.await.unwrap();
    }
}

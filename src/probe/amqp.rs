//! AMQP phase: the AMQP 1.0 protocol header exchange. The client sends the SASL
//! header (`AMQP 3 1 0 0`, as IoT Hub expects); a server that speaks AMQP answers with
//! a protocol header of its own. That proves the AMQP layer without authenticating.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{stream_error_kind, Stopwatch, StreamFault};
use crate::model::{AmqpEvidence, FailureClass, Phase, PhaseResult};

/// The SASL protocol header: "AMQP", protocol id 3, version 1.0.0.
pub const SASL_HEADER: [u8; 8] = *b"AMQP\x03\x01\x00\x00";

/// Sends the SASL header and reads the server's.
pub async fn probe<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    timeout: Duration,
) -> PhaseResult {
    let clock = Stopwatch::start();
    let mut ev = AmqpEvidence {
        sent: describe(&SASL_HEADER),
        received: None,
    };
    let exchange = async {
        stream.write_all(&SASL_HEADER).await?;
        stream.flush().await?;
        let mut got = [0u8; 8];
        let mut n = 0;
        while n < got.len() {
            let k = stream.read(&mut got[n..]).await?;
            if k == 0 {
                break;
            }
            n += k;
        }
        Ok::<_, std::io::Error>((got, n))
    };
    match tokio::time::timeout(timeout, exchange).await {
        Err(_) => PhaseResult::failed(
            Phase::Amqp,
            clock.elapsed(),
            FailureClass::AmqpTimeout,
            format!(
                "no AMQP header within {}",
                humantime::format_duration(timeout)
            ),
            &ev,
        ),
        Ok(Err(e)) => {
            let class = match stream_error_kind(&e) {
                Some(StreamFault::Timeout) => FailureClass::AmqpTimeout,
                Some(_) => FailureClass::AmqpClosed,
                None => FailureClass::AmqpProtocolError,
            };
            PhaseResult::failed(
                Phase::Amqp,
                clock.elapsed(),
                class,
                format!("AMQP header exchange: {e}"),
                &ev,
            )
        }
        Ok(Ok((_, 0))) => PhaseResult::failed(
            Phase::Amqp,
            clock.elapsed(),
            FailureClass::AmqpClosed,
            "the server closed the connection without an AMQP header",
            &ev,
        ),
        Ok(Ok((got, n))) if n == 8 && &got[..4] == b"AMQP" => {
            ev.received = Some(describe(&got));
            PhaseResult::ok(Phase::Amqp, clock.elapsed(), &ev)
        }
        Ok(Ok((got, n))) => {
            let shown: Vec<String> = got[..n].iter().map(|b| format!("{b:02x}")).collect();
            ev.received = Some(shown.join(" "));
            PhaseResult::failed(
                Phase::Amqp,
                clock.elapsed(),
                FailureClass::AmqpProtocolError,
                format!(
                    "the server answered {} that is not an AMQP header",
                    ev.received.as_deref().unwrap_or("")
                ),
                &ev,
            )
        }
    }
}

fn describe(h: &[u8; 8]) -> String {
    format!("AMQP {} {}.{}.{}", h[4], h[5], h[6], h[7])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn header_exchange_and_garbage() {
        let (mut client, mut server) = tokio::io::duplex(64);
        let srv = tokio::spawn(async move {
            let mut h = [0u8; 8];
            server.read_exact(&mut h).await.unwrap();
            server.write_all(&h).await.unwrap();
        });
        let r = probe(&mut client, Duration::from_secs(2)).await;
        srv.await.unwrap();
        assert!(r.is_ok(), "{r:?}");

        let (mut client, mut server) = tokio::io::duplex(64);
        tokio::spawn(async move {
            let mut h = [0u8; 8];
            server.read_exact(&mut h).await.unwrap();
            server.write_all(b"HTTP/1.1").await.unwrap();
        });
        let r = probe(&mut client, Duration::from_secs(2)).await;
        assert_eq!(r.class, Some(FailureClass::AmqpProtocolError));
    }
}

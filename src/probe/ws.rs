//! WebSocket phase: the HTTP upgrade to a WebSocket with subprotocol `mqtt`, as IoT
//! Hub's MQTT-over-WebSocket endpoint (`wss://{hub}:443/$iothub/websocket`) expects.

use std::time::Duration;

use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, http};
use tokio_tungstenite::WebSocketStream;

use super::stream::{ws_to_io, Stream};
use super::{stream_error_kind, Stopwatch, StreamFault};
use crate::model::{FailureClass, Phase, PhaseResult, WsEvidence};

/// The upgrade's result and the WebSocket on success.
pub struct WsOutcome {
    /// Phase result.
    pub result: PhaseResult,
    /// The WebSocket.
    pub socket: Option<WebSocketStream<Stream>>,
}

/// Upgrades `stream` to a WebSocket at `path` on `host:port` with subprotocol `mqtt`.
pub async fn upgrade(
    stream: Stream,
    host: &str,
    port: u16,
    path: &str,
    tls: bool,
    timeout: Duration,
) -> WsOutcome {
    upgrade_with(stream, host, port, path, tls, "mqtt", timeout).await
}

/// Upgrades `stream` to a WebSocket at `path` on `host:port`, asking for
/// `subprotocol` (`mqtt`, or `AMQPWSB10` for AMQP over WebSocket).
pub async fn upgrade_with(
    stream: Stream,
    host: &str,
    port: u16,
    path: &str,
    tls: bool,
    subprotocol: &str,
    timeout: Duration,
) -> WsOutcome {
    let clock = Stopwatch::start();
    let scheme = if tls { "wss" } else { "ws" };
    let host_part = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    let url = format!("{scheme}://{host_part}:{port}{path}");
    let mut evidence = WsEvidence {
        url: url.clone(),
        status: None,
        subprotocol: None,
        server: None,
    };
    let mut request = match url.as_str().into_client_request() {
        Ok(r) => r,
        Err(e) => {
            return WsOutcome {
                result: PhaseResult::failed(
                    Phase::Websocket,
                    clock.elapsed(),
                    FailureClass::WebsocketProtocolError,
                    format!("cannot build the upgrade request for {url}: {e}"),
                    &evidence,
                ),
                socket: None,
            }
        }
    };
    let Ok(protocol) = http::HeaderValue::from_str(subprotocol) else {
        return WsOutcome {
            result: PhaseResult::failed(
                Phase::Websocket,
                clock.elapsed(),
                FailureClass::WebsocketProtocolError,
                format!("invalid WebSocket subprotocol {subprotocol:?}"),
                &evidence,
            ),
            socket: None,
        };
    };
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", protocol);

    let fail = |class, message: String, evidence: &WsEvidence| WsOutcome {
        result: PhaseResult::failed(Phase::Websocket, clock.elapsed(), class, message, evidence),
        socket: None,
    };
    match tokio::time::timeout(timeout, tokio_tungstenite::client_async(request, stream)).await {
        Err(_) => fail(
            FailureClass::WebsocketTimeout,
            format!(
                "no upgrade answer within {}",
                humantime::format_duration(timeout)
            ),
            &evidence,
        ),
        Ok(Ok((socket, response))) => {
            evidence.status = Some(response.status().as_u16());
            evidence.subprotocol = header(&response, "sec-websocket-protocol");
            evidence.server = header(&response, "server");
            WsOutcome {
                result: PhaseResult::ok(Phase::Websocket, clock.elapsed(), &evidence),
                socket: Some(socket),
            }
        }
        Ok(Err(tungstenite::Error::Http(response))) => {
            let status = response.status();
            evidence.status = Some(status.as_u16());
            evidence.server = header(&response, "server");
            fail(
                FailureClass::WebsocketRejected,
                format!("the server refused the upgrade with HTTP {status} (a proxy, or no WebSocket endpoint at {path})"),
                &evidence,
            )
        }
        Ok(Err(e)) => {
            let io = ws_to_io(e);
            let class = match stream_error_kind(&io) {
                Some(StreamFault::Closed) | Some(StreamFault::Reset) => {
                    FailureClass::WebsocketClosed
                }
                Some(StreamFault::Timeout) => FailureClass::WebsocketTimeout,
                None => FailureClass::WebsocketProtocolError,
            };
            fail(class, format!("WebSocket upgrade failed: {io}"), &evidence)
        }
    }
}

fn header<T>(response: &http::Response<T>, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.chars().take(200).collect())
}

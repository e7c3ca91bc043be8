//! AMQP phase: an AMQP 1.0 connection as a device SDK opens it, over the stream the
//! connection chain built (TLS over TCP, or a WebSocket with subprotocol `AMQPWSB10`).
//!
//! Steps: the SASL layer (ANONYMOUS, or PLAIN with a user name and password), open,
//! begin; with a SAS identity the claims-based-security `put-token` on the `$cbs`
//! node (IoT Hub's way: SASL ANONYMOUS, then the token); then a sender link attached
//! to the device's events address, detached, the session ended and the connection
//! closed. Every step is timed and recorded in [`AmqpEvidence::steps`].
//!
//! The protocol is `fe2o3-amqp` (and its CBS client). It does not expose what the
//! server offered, so the bytes the server sends are also copied (bounded) by a
//! [`Tap`] and read back with the same crate's type codec: the SASL mechanisms
//! offered, the SASL outcome, and the server's open frame (container id and
//! properties). Only the server's bytes are copied: the SASL PLAIN response and the
//! SAS token the probe sends never are, and the crate is built without its logging
//! features, so neither reaches a log.

use std::borrow::Cow;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use fe2o3_amqp::connection::OpenError;
use fe2o3_amqp::link::SenderAttachError;
use fe2o3_amqp::sasl_profile::SaslProfile;
use fe2o3_amqp::session::BeginError;
use fe2o3_amqp::{Connection, Sender, Session};
use fe2o3_amqp_cbs::client::CbsClient;
use fe2o3_amqp_cbs::token::CbsToken;
use fe2o3_amqp_types::definitions;
use fe2o3_amqp_types::sasl::{SaslCode, SaslMechanisms, SaslOutcome};
use serde_amqp::primitives::Symbol;
use serde_amqp::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::Instant;

use super::stream::Link;
use super::ws_io::WsIo;
use super::{stream_error_kind, Stopwatch, StreamFault};
use crate::auth::Secret;
use crate::model::{AmqpEvidence, AmqpStep, FailureClass, Phase, PhaseResult};

/// The SASL protocol header: "AMQP", protocol id 3, version 1.0.0.
pub const SASL_HEADER: [u8; 8] = *b"AMQP\x03\x01\x00\x00";

/// The WebSocket subprotocol of AMQP over WebSocket (IoT Hub, Service Bus).
pub const WS_SUBPROTOCOL: &str = "AMQPWSB10";

/// The token type IoT Hub's CBS node expects for a SAS token.
pub const SAS_TOKEN_TYPE: &str = "servicebus.windows.net:sastoken";

/// Most of the server's bytes kept for the evidence (its SASL frames and open frame
/// come first and are small).
const TAP_LIMIT: usize = 16 * 1024;

/// The AMQP protocol header without SASL: "AMQP", protocol id 0, version 1.0.0.
pub const AMQP_HEADER: [u8; 8] = *b"AMQP\x00\x01\x00\x00";

/// How the probe authenticates.
#[derive(Debug, Clone)]
pub enum AmqpAuth {
    /// No SASL layer: the TLS client certificate is the identity (X.509 devices; the
    /// SDKs open AMQP directly after TLS).
    TlsClientCertificate,
    /// SASL ANONYMOUS and nothing else (reachability and open only).
    Anonymous,
    /// SASL PLAIN.
    Plain {
        /// User name.
        username: String,
        /// Password (never in evidence or logs).
        password: Secret,
    },
    /// SASL ANONYMOUS, then a CBS put-token of a SAS token for `audience`.
    Cbs {
        /// The token's resource URI (`{hub}/devices/{id}`), also the put-token name.
        audience: String,
        /// The SAS token (never in evidence or logs).
        token: Secret,
    },
}

impl AmqpAuth {
    fn mechanism(&self) -> Option<&'static str> {
        match self {
            AmqpAuth::TlsClientCertificate => None,
            AmqpAuth::Plain { .. } => Some("PLAIN"),
            _ => Some("ANONYMOUS"),
        }
    }
}

/// What the AMQP phase does.
#[derive(Debug, Clone)]
pub struct AmqpOptions {
    /// The `hostname` of the open frame (the hub's host name).
    pub hostname: String,
    /// The probe's container id.
    pub container_id: String,
    /// How to authenticate.
    pub auth: AmqpAuth,
    /// Attach a sender link here (the device's events address), when set.
    pub events_address: Option<String>,
    /// Bound on the whole exchange.
    pub timeout: Duration,
    /// Why authentication is not tested, for the evidence (e.g. the identity is in use).
    pub note: Option<String>,
}

/// A stream that copies the first [`TAP_LIMIT`] bytes it reads into a shared buffer.
pub struct Tap<S> {
    inner: S,
    seen: Arc<Mutex<Vec<u8>>>,
}

impl<S> std::fmt::Debug for Tap<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tap")
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tap<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            let got = &buf.filled()[before..];
            if let Ok(mut seen) = this.seen.lock() {
                let room = TAP_LIMIT.saturating_sub(seen.len());
                seen.extend_from_slice(&got[..got.len().min(room)]);
            }
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tap<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, data)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Runs the AMQP exchange over the chain's link (a byte stream or a WebSocket).
pub async fn probe_link(link: Link, opts: &AmqpOptions) -> PhaseResult {
    match link {
        Link::Stream(s) => probe_session(s, opts).await,
        Link::Ws(ws) => probe_session(WsIo::new(ws), opts).await,
    }
}

/// A failed step: its class and message, and the server's error if it sent one.
struct StepFailure {
    class: FailureClass,
    message: String,
    error: Option<definitions::Error>,
    /// A CBS answer's status code and description.
    cbs: Option<(u16, Option<String>)>,
}

impl StepFailure {
    fn new(class: FailureClass, message: impl Into<String>) -> Self {
        StepFailure {
            class,
            message: message.into(),
            error: None,
            cbs: None,
        }
    }
    fn remote(step: &str, e: definitions::Error) -> Self {
        let condition = condition_name(&e.condition);
        StepFailure {
            class: class_of_condition(&condition),
            message: format!(
                "{step}: the server refused with {condition}{}",
                e.description
                    .as_deref()
                    .map(|d| format!(": {}", one_line(d)))
                    .unwrap_or_default()
            ),
            error: Some(e),
            cbs: None,
        }
    }
}

/// Runs the AMQP exchange over `stream` (owned: the protocol engine runs as a task).
pub async fn probe_session<S>(stream: S, opts: &AmqpOptions) -> PhaseResult
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let clock = Stopwatch::start();
    let deadline = Instant::now() + opts.timeout;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let tap = Tap {
        inner: stream,
        seen: seen.clone(),
    };
    let mut ev = AmqpEvidence {
        sent: describe(match opts.auth {
            AmqpAuth::TlsClientCertificate => &AMQP_HEADER,
            _ => &SASL_HEADER,
        }),
        sasl_mechanism: opts.auth.mechanism().map(str::to_string),
        note: opts.note.clone(),
        ..Default::default()
    };
    let mut result = exchange(tap, opts, deadline, &mut ev).await;
    read_back(&seen, &mut ev);
    // The library refuses a mechanism the server does not offer before SASL init:
    // that is the server refusing the credentials' mechanism.
    if let (Err(f), Some(mechanism)) = (&mut result, opts.auth.mechanism()) {
        if !ev.sasl_mechanisms.is_empty()
            && ev.sasl_outcome.is_none()
            && !ev.sasl_mechanisms.iter().any(|m| m == mechanism)
        {
            f.class = FailureClass::AmqpAuthFailed;
            f.message = format!(
                "the server offers the SASL mechanisms {} but not {mechanism}",
                ev.sasl_mechanisms.join(", ")
            );
        }
    }
    match result {
        Ok(()) => PhaseResult::ok(Phase::Amqp, clock.elapsed(), &ev),
        Err(f) => {
            if let Some(e) = &f.error {
                ev.error_condition = Some(condition_name(&e.condition));
                ev.error_description = e.description.as_deref().map(one_line);
            }
            let message = match (&ev.received, f.class) {
                // Say what answered when it is not an AMQP server.
                (None, FailureClass::AmqpClosed) => {
                    "the server closed the connection without an AMQP header".to_string()
                }
                _ => f.message,
            };
            PhaseResult::failed(Phase::Amqp, clock.elapsed(), f.class, message, &ev)
        }
    }
}

/// Records one step and passes its result on.
fn step<T>(ev: &mut AmqpEvidence, name: &str, started: Instant, r: &Result<T, StepFailure>) {
    ev.steps.push(AmqpStep {
        step: name.into(),
        outcome: if r.is_ok() { "ok" } else { "failed" }.into(),
        ms: crate::model::ms(started.elapsed()),
    });
}

async fn bounded<T>(
    deadline: Instant,
    what: &str,
    fut: impl std::future::Future<Output = Result<T, StepFailure>>,
) -> Result<T, StepFailure> {
    match tokio::time::timeout_at(deadline, fut).await {
        Ok(r) => r,
        Err(_) => Err(StepFailure::new(
            FailureClass::AmqpTimeout,
            format!("{what}: no answer in time"),
        )),
    }
}

async fn exchange<S>(
    tap: Tap<S>,
    opts: &AmqpOptions,
    deadline: Instant,
    ev: &mut AmqpEvidence,
) -> Result<(), StepFailure>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    // SASL and open: one call of the library.
    let profile = match &opts.auth {
        AmqpAuth::TlsClientCertificate => None,
        AmqpAuth::Plain { username, password } => Some(SaslProfile::Plain {
            username: username.clone(),
            password: password.expose().to_string(),
        }),
        _ => Some(SaslProfile::Anonymous),
    };
    let t = Instant::now();
    let opened = bounded(deadline, "SASL and open", async {
        let builder = Connection::builder()
            .container_id(opts.container_id.clone())
            .hostname(opts.hostname.as_str());
        match profile {
            Some(p) => builder.sasl_profile(p).open_with_stream(tap).await,
            None => builder.open_with_stream(tap).await,
        }
        .map_err(open_failure)
    })
    .await;
    step(ev, "open", t, &opened);
    let mut connection = opened?;

    let t = Instant::now();
    let begun = bounded(deadline, "begin", async {
        Session::begin(&mut connection).await.map_err(begin_failure)
    })
    .await;
    step(ev, "begin", t, &begun);
    let mut session = begun?;

    if let AmqpAuth::Cbs { audience, token } = &opts.auth {
        ev.cbs_audience = Some(audience.clone());
        let t = Instant::now();
        let put = bounded(deadline, "CBS put-token", async {
            let mut cbs = CbsClient::attach(&mut session).await.map_err(|e| match e {
                fe2o3_amqp_management::error::AttachError::Sender(
                    SenderAttachError::RemoteClosedWithError(e),
                ) => StepFailure::remote("CBS attach", e),
                other => StepFailure::new(
                    FailureClass::AmqpRefused,
                    format!("CBS attach to $cbs: {other}"),
                ),
            })?;
            let token = CbsToken::new(Cow::Borrowed(token.expose()), SAS_TOKEN_TYPE, None);
            let r = cbs.put_token(audience.as_str(), token).await;
            let _ = cbs.close().await;
            match r {
                Ok(()) => Ok(202),
                // The CBS client takes only 202 as success; some nodes answer 200.
                Err(fe2o3_amqp_management::error::Error::Status(s)) if s.code.0.get() == 200 => {
                    Ok(200)
                }
                Err(e) => Err(put_token_failure(e)),
            }
        })
        .await;
        match &put {
            Ok(code) => ev.cbs_status = Some(*code),
            Err(f) => {
                if let Some((code, description)) = &f.cbs {
                    ev.cbs_status = Some(*code);
                    ev.cbs_description = description.clone();
                }
            }
        }
        step(ev, "put-token", t, &put);
        put?;
    }

    if let Some(address) = &opts.events_address {
        ev.address = Some(address.clone());
        let t = Instant::now();
        let attached = bounded(deadline, "attach", async {
            Sender::attach(&mut session, "hubprobe-events", address.as_str())
                .await
                .map_err(|e| match e {
                    SenderAttachError::RemoteClosedWithError(e)
                    | SenderAttachError::SessionStopped(
                        fe2o3_amqp::link::SessionStopReason::RemoteEndedWithError(e),
                    ) => StepFailure::remote(&format!("attach to {address}"), e),
                    other => StepFailure::new(
                        FailureClass::AmqpRefused,
                        format!("attach to {address}: {other}"),
                    ),
                })
        })
        .await;
        step(ev, "attach", t, &attached);
        let sender = attached?;
        let t = Instant::now();
        let detached = bounded(deadline, "detach", async {
            // Detach without closing: RabbitMQ's AMQP 1.0 plugin answers a closing
            // detach with a non-closing one, which the library takes as illegal.
            sender.detach().await.map(|_| ()).map_err(|(_, e)| {
                StepFailure::new(FailureClass::AmqpRefused, format!("detach: {e}"))
            })
        })
        .await;
        step(ev, "detach", t, &detached);
        detached?;
    }

    // What the phase proves (the login, the token, the link) is done: ending the
    // session and closing the connection are courtesy. A peer that is slow to
    // answer them gets a short bound and leaves a failed step in the evidence,
    // not a failed phase.
    let teardown = deadline.min(Instant::now() + TEARDOWN);
    let t = Instant::now();
    let ended = bounded(teardown, "end", async {
        session
            .end()
            .await
            .map_err(|e| StepFailure::new(FailureClass::AmqpRefused, format!("end: {e}")))
    })
    .await;
    step(ev, "end", t, &ended);
    if ended.is_err() {
        return Ok(());
    }
    let t = Instant::now();
    let closed = bounded(teardown, "close", async {
        connection
            .close()
            .await
            .map_err(|e| StepFailure::new(FailureClass::AmqpRefused, format!("close: {e}")))
    })
    .await;
    step(ev, "close", t, &closed);
    Ok(())
}

/// Bound on ending the session and closing the connection once the checks passed.
const TEARDOWN: std::time::Duration = std::time::Duration::from_secs(2);

fn put_token_failure(e: fe2o3_amqp_management::error::Error) -> StepFailure {
    use fe2o3_amqp_management::error::Error as M;
    match e {
        M::Status(s) => {
            let code = s.code.0.get();
            let class = match code {
                401 | 403 => FailureClass::AmqpNotAuthorized,
                404 => FailureClass::AmqpNotFound,
                429 | 503 => FailureClass::AmqpServerBusy,
                _ => FailureClass::AmqpRefused,
            };
            let description = s.description.as_deref().map(one_line);
            let message = match &description {
                Some(d) => format!("CBS put-token: status {code}: {d}"),
                None => format!("CBS put-token: status {code}"),
            };
            let mut f = StepFailure::new(class, message);
            f.cbs = Some((code, description));
            f
        }
        M::NotAccepted(outcome) => match outcome {
            fe2o3_amqp_types::messaging::Outcome::Rejected(r) => match r.error {
                Some(e) => StepFailure::remote("CBS put-token", e),
                None => StepFailure::new(
                    FailureClass::AmqpRefused,
                    "CBS put-token: the request was rejected",
                ),
            },
            other => StepFailure::new(
                FailureClass::AmqpRefused,
                format!("CBS put-token: the request was not accepted ({other:?})"),
            ),
        },
        M::Recv(fe2o3_amqp::link::RecvError::LinkStateError(
            fe2o3_amqp::link::LinkStateError::RemoteClosedWithError(e),
        )) => StepFailure::remote("CBS put-token", e),
        other => StepFailure::new(
            FailureClass::AmqpRefused,
            format!("CBS put-token: {}", one_line(&other.to_string())),
        ),
    }
}

fn open_failure(e: OpenError) -> StepFailure {
    match e {
        OpenError::Io(e) => io_failure("SASL and open", &e),
        OpenError::SaslError { code, .. } => {
            let (class, name) = sasl_code(code);
            StepFailure::new(
                class,
                format!("SASL outcome {name}: the server refused the authentication"),
            )
        }
        OpenError::ProtocolHeaderMismatch(got) => {
            let shown: Vec<String> = got.iter().take(16).map(|b| format!("{b:02x}")).collect();
            StepFailure::new(
                FailureClass::AmqpProtocolError,
                format!(
                    "the server answered {} that is not an AMQP header",
                    shown.join(" ")
                ),
            )
        }
        OpenError::RemoteClosedWithError(e) => StepFailure::remote("open", e),
        OpenError::RemoteClosed => StepFailure::new(
            FailureClass::AmqpClosed,
            "open: the server closed the connection",
        ),
        OpenError::DecodeError(m) => StepFailure::new(
            FailureClass::AmqpProtocolError,
            format!("open: cannot decode the server's frames: {}", one_line(&m)),
        ),
        OpenError::TransportError(e) => transport_failure("open", e),
        other => StepFailure::new(
            FailureClass::AmqpProtocolError,
            format!("open: {}", one_line(&other.to_string())),
        ),
    }
}

fn begin_failure(e: BeginError) -> StepFailure {
    match e {
        BeginError::RemoteEndedWithError(e) => StepFailure::remote("begin", e),
        other => StepFailure::new(FailureClass::AmqpRefused, format!("begin: {other}")),
    }
}

fn transport_failure(what: &str, e: fe2o3_amqp::transport::Error) -> StepFailure {
    match e {
        fe2o3_amqp::transport::Error::Io(e) => io_failure(what, &e),
        other => StepFailure::new(
            FailureClass::AmqpProtocolError,
            format!("{what}: {}", one_line(&other.to_string())),
        ),
    }
}

fn io_failure(what: &str, e: &std::io::Error) -> StepFailure {
    let class = match stream_error_kind(e) {
        Some(StreamFault::Timeout) => FailureClass::AmqpTimeout,
        Some(_) => FailureClass::AmqpClosed,
        None if e.kind() == std::io::ErrorKind::UnexpectedEof => FailureClass::AmqpClosed,
        None => FailureClass::AmqpProtocolError,
    };
    StepFailure::new(class, format!("{what}: {e}"))
}

fn sasl_code(code: SaslCode) -> (FailureClass, &'static str) {
    match code {
        SaslCode::Ok => (FailureClass::AmqpRefused, "ok"),
        SaslCode::Auth => (FailureClass::AmqpAuthFailed, "auth"),
        SaslCode::Sys => (FailureClass::AmqpSaslError, "sys"),
        SaslCode::SysPerm => (FailureClass::AmqpSaslError, "sys-perm"),
        SaslCode::SysTemp => (FailureClass::AmqpSaslError, "sys-temp"),
    }
}

/// The class of a server's error condition.
pub fn class_of_condition(condition: &str) -> FailureClass {
    match condition {
        "amqp:unauthorized-access" => FailureClass::AmqpNotAuthorized,
        "amqp:not-found" => FailureClass::AmqpNotFound,
        "amqp:resource-limit-exceeded" | "com.microsoft:server-busy" => {
            FailureClass::AmqpServerBusy
        }
        _ => FailureClass::AmqpRefused,
    }
}

fn condition_name(c: &definitions::ErrorCondition) -> String {
    serde_amqp::to_vec(c)
        .ok()
        .and_then(|b| serde_amqp::from_slice::<Symbol>(&b).ok())
        .map(|s| one_line(&s.0))
        .unwrap_or_else(|| "an unknown condition".into())
}

/// Reads the server's SASL frames and open frame back from the tapped bytes.
fn read_back(seen: &Mutex<Vec<u8>>, ev: &mut AmqpEvidence) {
    let Ok(bytes) = seen.lock() else { return };
    let mut rest: &[u8] = &bytes;
    while rest.len() >= 8 {
        if &rest[..4] == b"AMQP" {
            let header: [u8; 8] = rest[..8].try_into().unwrap_or_default();
            if header[4] == 3 || ev.received.is_none() {
                ev.received = Some(describe(&header));
            }
            rest = &rest[8..];
            continue;
        }
        let size = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let doff = rest[4] as usize * 4;
        if size < 8 || doff < 8 || doff > size || size > rest.len() {
            break;
        }
        let body = &rest[doff..size];
        match rest[5] {
            // SASL frames
            1 => {
                if let Ok(m) = serde_amqp::from_slice::<SaslMechanisms>(body) {
                    ev.sasl_mechanisms = m
                        .sasl_server_mechanisms
                        .0
                        .iter()
                        .map(|s| one_line(&s.0))
                        .collect();
                } else if let Ok(o) = serde_amqp::from_slice::<SaslOutcome>(body) {
                    ev.sasl_outcome = Some(sasl_code(o.code).1.to_string());
                }
            }
            // AMQP frames: only the first open is of interest.
            0 if !body.is_empty() && ev.container_id.is_none() => {
                if let Ok(open) =
                    serde_amqp::from_slice::<fe2o3_amqp_types::performatives::Open>(body)
                {
                    ev.container_id = Some(one_line(&open.container_id));
                    if let Some(props) = open.properties {
                        for (k, v) in props.iter().take(32) {
                            ev.properties.insert(one_line(&k.0), value_text(v));
                        }
                    }
                }
            }
            _ => {}
        }
        rest = &rest[size..];
    }
}

fn value_text(v: &Value) -> String {
    let s = match v {
        Value::String(s) => s.clone(),
        Value::Symbol(s) => s.0.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Ubyte(n) => n.to_string(),
        Value::Ushort(n) => n.to_string(),
        Value::Uint(n) => n.to_string(),
        Value::Ulong(n) => n.to_string(),
        Value::Byte(n) => n.to_string(),
        Value::Short(n) => n.to_string(),
        Value::Int(n) => n.to_string(),
        Value::Long(n) => n.to_string(),
        other => format!("{other:?}"),
    };
    one_line(&s)
}

/// `s` on one line, control characters escaped, at most 200 characters.
fn one_line(s: &str) -> String {
    let mut out = String::new();
    for (i, c) in s.trim().chars().enumerate() {
        if i == 200 {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Sends the SASL header and reads the server's: the header exchange alone, for
/// callers that only need to know an AMQP server answers.
pub async fn probe<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    timeout: Duration,
) -> PhaseResult {
    let clock = Stopwatch::start();
    let mut ev = AmqpEvidence {
        sent: describe(&SASL_HEADER),
        ..Default::default()
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

    fn opts() -> AmqpOptions {
        AmqpOptions {
            hostname: "hub.example".into(),
            container_id: "dev1".into(),
            auth: AmqpAuth::Anonymous,
            events_address: None,
            timeout: Duration::from_secs(5),
            note: None,
        }
    }

    #[tokio::test]
    async fn a_non_amqp_answer_is_a_protocol_error_with_the_bytes() {
        let (client, mut server) = tokio::io::duplex(256);
        tokio::spawn(async move {
            let mut h = [0u8; 8];
            server.read_exact(&mut h).await.unwrap();
            server.write_all(b"HTTP/1.1 400 Bad\r\n\r\n").await.unwrap();
        });
        let r = probe_session(client, &opts()).await;
        assert_eq!(r.class, Some(FailureClass::AmqpProtocolError), "{r:?}");
        assert!(
            r.message.as_deref().unwrap().contains("48 54 54 50"),
            "{r:?}"
        );
    }

    #[tokio::test]
    async fn a_server_that_closes_after_its_header_is_closed() {
        let (client, mut server) = tokio::io::duplex(256);
        tokio::spawn(async move {
            let mut h = [0u8; 8];
            server.read_exact(&mut h).await.unwrap();
            server.write_all(&SASL_HEADER).await.unwrap();
        });
        let r = probe_session(client, &opts()).await;
        assert_eq!(r.class, Some(FailureClass::AmqpClosed), "{r:?}");
        let ev = r.evidence.as_ref().and_then(|e| e.amqp()).cloned().unwrap();
        assert_eq!(ev.received.as_deref(), Some("AMQP 3 1.0.0"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_server_times_out() {
        let (client, _server) = tokio::io::duplex(256);
        let r = probe_session(client, &opts()).await;
        assert_eq!(r.class, Some(FailureClass::AmqpTimeout), "{r:?}");
    }

    #[test]
    fn conditions_map_to_classes() {
        assert_eq!(
            class_of_condition("amqp:unauthorized-access"),
            FailureClass::AmqpNotAuthorized
        );
        assert_eq!(
            class_of_condition("amqp:not-found"),
            FailureClass::AmqpNotFound
        );
        assert_eq!(
            class_of_condition("com.microsoft:server-busy"),
            FailureClass::AmqpServerBusy
        );
        assert_eq!(class_of_condition("x:y"), FailureClass::AmqpRefused);
    }
}

//! MQTT phase: MQTT 3.1.1 CONNECT → CONNACK over the link the earlier phases built,
//! then a few PINGREQ → PINGRESP round trips and a clean DISCONNECT. Packets are
//! encoded and decoded with rumqttc's codec; the CONNECT (which carries the SAS token
//! or password) is never logged or Debug-printed.

use std::io;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use rumqttc::mqttbytes::v4::{ConnectReturnCode, Packet};
use rumqttc::mqttbytes::{Error as CodecError, Protocol};
use tokio::time::Instant;

use super::stream::Link;
use super::{stream_error_kind, Stopwatch, StreamFault};
use crate::auth::Secret;
use crate::model::{ms, ConnackEvidence, FailureClass, MqttEvidence, Phase, PhaseResult};

/// Largest packet accepted from the server (CONNACK and PINGRESP are tiny).
const MAX_PACKET: usize = 64 * 1024;

/// What to send.
#[derive(Clone)]
pub struct MqttOptions {
    /// Client id.
    pub client_id: String,
    /// User name (not secret: for IoT Hub `{host}/{device}/?api-version=...`).
    pub username: Option<String>,
    /// Password (SAS token or broker password).
    pub password: Option<Secret>,
    /// Keep-alive announced in CONNECT, seconds.
    pub keep_alive: u16,
    /// How the identity authenticates (`sas-key`, `sas-token`, `x509`, `password`, `none`).
    pub auth: &'static str,
    /// PINGREQ round trips after an accepted CONNACK.
    pub pings: u32,
    /// Bound on the whole phase: CONNECT, CONNACK, every ping and the DISCONNECT.
    pub timeout: Duration,
}

/// Runs CONNECT → CONNACK (→ pings → DISCONNECT) on `link`.
pub async fn probe(link: &mut Link, opts: &MqttOptions) -> PhaseResult {
    let clock = Stopwatch::start();
    let fail = |class: FailureClass, msg: String, ev: &MqttEvidence| {
        PhaseResult::failed(Phase::Mqtt, clock.elapsed(), class, msg, ev)
    };
    let mut ev = MqttEvidence {
        client_id: opts.client_id.clone(),
        username: opts.username.clone(),
        auth: opts.auth.to_string(),
        auth_tested: opts.auth != "none",
        keep_alive_s: opts.keep_alive,
        connack: None,
        connack_ms: None,
        ping_rtts_ms: Vec::new(),
        disconnect_sent: false,
        note: None,
    };

    let connect = match encode_connect(opts) {
        Ok(b) => b,
        Err(e) => {
            return fail(
                FailureClass::MqttProtocolError,
                format!("cannot encode CONNECT: {e}"),
                &ev,
            )
        }
    };
    let mut buf = BytesMut::with_capacity(256);
    let sent = Instant::now();
    // One deadline for the whole phase: every send, read and ping counts against it.
    let phase_deadline = sent + opts.timeout;
    if let Err((class, msg)) = send_by(link, &connect, phase_deadline, "sending CONNECT").await {
        return fail(class, msg, &ev);
    }

    let connack = match read_packet(link, &mut buf, phase_deadline, Expect::ConnAck).await {
        Ok(Packet::ConnAck(c)) => c,
        Ok(other) => {
            let msg = format!("expected CONNACK, got {}", packet_name(&other));
            return fail(FailureClass::MqttProtocolError, msg, &ev);
        }
        Err(f) => {
            let (class, msg) = f.classify("CONNACK", opts.timeout);
            return fail(class, msg, &ev);
        }
    };
    ev.connack_ms = Some(ms(sent.elapsed()));
    let code = connack.code;
    ev.connack = Some(ConnackEvidence {
        code: code as u8,
        name: connack_name(code).to_string(),
        session_present: connack.session_present,
    });

    if code != ConnectReturnCode::Success {
        let class = connack_class(code);
        let throwaway = opts.auth == "none";
        // A throw-away identity is expected to be refused: the refusal proves the
        // MQTT layer works end to end, it does not test this device's credentials.
        let proves_reachability = matches!(
            code,
            ConnectReturnCode::BadClientId
                | ConnectReturnCode::BadUserNamePassword
                | ConnectReturnCode::NotAuthorized
        );
        if throwaway && proves_reachability {
            ev.note = Some(format!(
                "reachable, authentication not tested (a throw-away identity was refused: {})",
                connack_name(code)
            ));
            return PhaseResult::ok(Phase::Mqtt, clock.elapsed(), &ev);
        }
        let msg = format!(
            "CONNACK refused the connection: {} (code {})",
            connack_name(code),
            code as u8
        );
        return fail(class, msg, &ev);
    }
    if opts.auth == "none" {
        ev.note = Some("reachable; the server accepts anonymous connections".into());
    }

    for i in 0..opts.pings {
        let start = Instant::now();
        let ping = [0xC0u8, 0x00];
        if let Err((class, msg)) = send_by(link, &ping, phase_deadline, "sending PINGREQ").await {
            return fail(class, msg, &ev);
        }
        match read_packet(link, &mut buf, phase_deadline, Expect::PingResp).await {
            Ok(Packet::PingResp) => ev.ping_rtts_ms.push(ms(start.elapsed())),
            Ok(other) => {
                let msg = format!(
                    "expected PINGRESP {} of {}, got {}",
                    i + 1,
                    opts.pings,
                    packet_name(&other)
                );
                return fail(FailureClass::MqttProtocolError, msg, &ev);
            }
            Err(f) => {
                let (class, msg) = f.classify("PINGRESP", opts.timeout);
                return fail(class, msg, &ev);
            }
        }
    }

    let disconnect = [0xE0u8, 0x00];
    // A polite goodbye, but never past the phase deadline nor longer than 2 s.
    let goodbye = phase_deadline.min(Instant::now() + Duration::from_secs(2));
    if let Ok(Ok(())) = tokio::time::timeout_at(goodbye, link.send(&disconnect)).await {
        ev.disconnect_sent = true;
    }
    let _ = tokio::time::timeout_at(goodbye, link.close()).await;
    PhaseResult::ok(Phase::Mqtt, clock.elapsed(), &ev)
}

/// Why a CONNECT could not be encoded.
#[derive(Debug, thiserror::Error)]
enum EncodeError {
    /// A string longer than MQTT's 16-bit length prefix (the codec would wrap
    /// the length and send a malformed packet). Names the field, never the value.
    #[error("the {field} is {len} bytes, above MQTT's limit of 65535 bytes per string")]
    StringTooLong {
        /// Which field.
        field: &'static str,
        /// Its length.
        len: usize,
    },
    /// The codec refused.
    #[error("{0}")]
    Codec(CodecError),
}

fn encode_connect(opts: &MqttOptions) -> Result<BytesMut, EncodeError> {
    let max = u16::MAX as usize;
    let fields = [
        ("client id", opts.client_id.len()),
        ("user name", opts.username.as_deref().map_or(0, str::len)),
        (
            "password",
            opts.password.as_ref().map_or(0, |p| p.expose().len()),
        ),
    ];
    if let Some((field, len)) = fields.into_iter().find(|(_, len)| *len > max) {
        return Err(EncodeError::StringTooLong { field, len });
    }
    let mut connect = rumqttc::mqttbytes::v4::Connect::new(opts.client_id.clone());
    connect.protocol = Protocol::V4;
    connect.keep_alive = opts.keep_alive;
    connect.clean_session = true;
    match (&opts.username, &opts.password) {
        (Some(u), Some(p)) => {
            connect.set_login(u.clone(), p.expose());
        }
        (Some(u), None) => {
            connect.set_login(u.clone(), "");
        }
        (None, Some(p)) => {
            connect.set_login("", p.expose());
        }
        (None, None) => {}
    }
    let mut buf = BytesMut::with_capacity(connect.size() + 8);
    connect.write(&mut buf).map_err(EncodeError::Codec)?;
    Ok(buf)
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expect {
    ConnAck,
    PingResp,
}

/// Why no packet was read.
pub(crate) enum ReadFail {
    Io(io::Error),
    Timeout { unparsed: usize },
    Closed { unparsed: usize },
    Garbage(String),
}

impl ReadFail {
    pub(crate) fn classify(&self, waiting_for: &str, timeout: Duration) -> (FailureClass, String) {
        match self {
            ReadFail::Io(e) => classify_io(e, &format!("waiting for {waiting_for}")),
            ReadFail::Timeout { unparsed: 0 } => (
                FailureClass::MqttTimeout,
                format!("no {waiting_for} within the phase timeout ({})", humantime::format_duration(timeout)),
            ),
            ReadFail::Timeout { unparsed } => (
                FailureClass::MqttProtocolError,
                format!("{unparsed} bytes arrived that are not a complete MQTT packet, then nothing (waiting for {waiting_for})"),
            ),
            ReadFail::Closed { unparsed: 0 } => (
                FailureClass::MqttClosed,
                format!("the server closed the connection before {waiting_for}"),
            ),
            ReadFail::Closed { unparsed } => (
                FailureClass::MqttProtocolError,
                format!("the server sent {unparsed} bytes that are not MQTT, then closed"),
            ),
            ReadFail::Garbage(m) => (FailureClass::MqttProtocolError, m.clone()),
        }
    }
}

pub(crate) async fn read_packet(
    link: &mut Link,
    buf: &mut BytesMut,
    deadline: Instant,
    expect: Expect,
) -> Result<Packet, ReadFail> {
    // Bounded: every turn either parses, fails, or waits on the deadline.
    loop {
        if let Some(&first) = buf.first() {
            let ptype = first >> 4;
            // MQTT 3.1.1: the first packet from the server must be CONNACK (type 2).
            let plausible = match expect {
                Expect::ConnAck => ptype == 2,
                Expect::PingResp => (1..=14).contains(&ptype),
            };
            if !plausible {
                return Err(ReadFail::Garbage(format!(
                    "the server sent bytes that are not an MQTT {} ({}): not an MQTT server, or a proxy in the way",
                    if expect == Expect::ConnAck { "CONNACK" } else { "packet" },
                    hex_prefix(buf)
                )));
            }
            match Packet::read(buf, MAX_PACKET) {
                Ok(p) => return Ok(p),
                Err(CodecError::InsufficientBytes(_)) => {}
                Err(e) => {
                    let head = hex_prefix(buf);
                    buf.advance(buf.len());
                    return Err(ReadFail::Garbage(format!(
                        "malformed MQTT packet ({e}): {head}"
                    )));
                }
            }
        }
        match tokio::time::timeout_at(deadline, link.recv(buf)).await {
            Err(_) => {
                return Err(ReadFail::Timeout {
                    unparsed: buf.len(),
                })
            }
            Ok(Ok(0)) => {
                return Err(ReadFail::Closed {
                    unparsed: buf.len(),
                })
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                if e.kind() == io::ErrorKind::UnexpectedEof {
                    return Err(ReadFail::Closed {
                        unparsed: buf.len(),
                    });
                }
                return Err(ReadFail::Io(e));
            }
        }
    }
}

fn hex_prefix(buf: &[u8]) -> String {
    let shown: Vec<String> = buf.iter().take(16).map(|b| format!("{b:02x}")).collect();
    let printable: String = buf
        .iter()
        .take(16)
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                b as char
            } else {
                '.'
            }
        })
        .collect();
    format!("first bytes {} {:?}", shown.join(" "), printable)
}

/// Sends `bytes` by `deadline`; a failure is classified as the MQTT phase sees it.
pub(crate) async fn send_by(
    link: &mut Link,
    bytes: &[u8],
    deadline: Instant,
    doing: &str,
) -> Result<(), (FailureClass, String)> {
    match tokio::time::timeout_at(deadline, link.send(bytes)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(classify_io(&e, doing)),
        Err(_) => Err((FailureClass::MqttTimeout, format!("{doing} timed out"))),
    }
}

fn classify_io(e: &io::Error, doing: &str) -> (FailureClass, String) {
    let class = match stream_error_kind(e) {
        Some(StreamFault::Closed) => FailureClass::MqttClosed,
        Some(StreamFault::Reset) => FailureClass::MqttReset,
        Some(StreamFault::Timeout) => FailureClass::MqttTimeout,
        None => FailureClass::MqttProtocolError,
    };
    (class, format!("{doing}: {e}"))
}

/// The failure class of a refusing CONNACK.
pub fn connack_class(code: ConnectReturnCode) -> FailureClass {
    match code {
        ConnectReturnCode::RefusedProtocolVersion => FailureClass::MqttProtocolVersion,
        ConnectReturnCode::BadClientId => FailureClass::MqttIdentifierRejected,
        ConnectReturnCode::ServiceUnavailable => FailureClass::MqttServerUnavailable,
        ConnectReturnCode::BadUserNamePassword => FailureClass::MqttBadCredentials,
        ConnectReturnCode::NotAuthorized | ConnectReturnCode::Success => {
            FailureClass::MqttNotAuthorized
        }
    }
}

/// The MQTT 3.1.1 name of a CONNACK code.
pub fn connack_name(code: ConnectReturnCode) -> &'static str {
    match code {
        ConnectReturnCode::Success => "accepted",
        ConnectReturnCode::RefusedProtocolVersion => "unacceptable protocol version",
        ConnectReturnCode::BadClientId => "identifier rejected",
        ConnectReturnCode::ServiceUnavailable => "server unavailable",
        ConnectReturnCode::BadUserNamePassword => "bad user name or password",
        ConnectReturnCode::NotAuthorized => "not authorized",
    }
}

fn packet_name(p: &Packet) -> &'static str {
    match p {
        Packet::Connect(_) => "CONNECT",
        Packet::ConnAck(_) => "CONNACK",
        Packet::Publish(_) => "PUBLISH",
        Packet::PubAck(_) => "PUBACK",
        Packet::PubRec(_) => "PUBREC",
        Packet::PubRel(_) => "PUBREL",
        Packet::PubComp(_) => "PUBCOMP",
        Packet::Subscribe(_) => "SUBSCRIBE",
        Packet::SubAck(_) => "SUBACK",
        Packet::Unsubscribe(_) => "UNSUBSCRIBE",
        Packet::UnsubAck(_) => "UNSUBACK",
        Packet::PingReq => "PINGREQ",
        Packet::PingResp => "PINGRESP",
        Packet::Disconnect => "DISCONNECT",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connack_codes_map_to_classes() {
        assert_eq!(
            connack_class(ConnectReturnCode::BadUserNamePassword),
            FailureClass::MqttBadCredentials
        );
        assert_eq!(
            connack_class(ConnectReturnCode::NotAuthorized),
            FailureClass::MqttNotAuthorized
        );
        assert_eq!(
            connack_class(ConnectReturnCode::BadClientId),
            FailureClass::MqttIdentifierRejected
        );
        assert_eq!(
            connack_class(ConnectReturnCode::ServiceUnavailable),
            FailureClass::MqttServerUnavailable
        );
        assert_eq!(
            connack_class(ConnectReturnCode::RefusedProtocolVersion),
            FailureClass::MqttProtocolVersion
        );
    }

    #[test]
    fn connect_carries_the_password() {
        let opts = MqttOptions {
            client_id: "dev1".into(),
            username: Some("h/dev1/?api-version=2021-04-12".into()),
            password: Some(Secret::new("SharedAccessSignature sr=x&sig=SECRETSIG&se=1")),
            keep_alive: 60,
            auth: "sas-token",
            pings: 1,
            timeout: Duration::from_secs(1),
        };
        let bytes = encode_connect(&opts).unwrap();
        assert_eq!(bytes[0], 0x10);
        assert!(bytes.windows(9).any(|w| w == b"SECRETSIG"));
    }

    #[test]
    fn an_over_long_string_is_an_error_never_a_wrapped_length() {
        let base = MqttOptions {
            client_id: "dev1".into(),
            username: Some("u".into()),
            password: Some(Secret::new("p")),
            keep_alive: 60,
            auth: "password",
            pings: 0,
            timeout: Duration::from_secs(1),
        };
        let long = "x".repeat(70_000);
        let mut a = base.clone();
        a.client_id = long.clone();
        let mut b = base.clone();
        b.username = Some(long.clone());
        let mut c = base.clone();
        c.password = Some(Secret::new(format!("SECRET{long}")));
        for (opts, field, len) in [
            (a, "client id", "70000"),
            (b, "user name", "70000"),
            (c, "password", "70006"),
        ] {
            let e = encode_connect(&opts).unwrap_err().to_string();
            assert!(e.contains(field) && e.contains(len), "{e}");
            assert!(!e.contains("SECRET") && !e.contains("xxx"), "{e}");
        }
        // The limit itself is fine: 65535 bytes encode with their true length.
        let mut edge = base.clone();
        edge.client_id = "y".repeat(65_535);
        let bytes = encode_connect(&edge).unwrap();
        let at = bytes.windows(2).position(|w| w == [0xFF, 0xFF]).unwrap();
        assert_eq!(bytes[at + 2], b'y');
    }
}

/// A long-lived MQTT session (CONNECT accepted), for measurements that ping on
/// demand: the tuner's RTT samples and its hub-only idle probes.
pub struct Session {
    link: Link,
    buf: BytesMut,
}

/// Why a ping got no PINGRESP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PingFailure {
    /// Its class (`mqtt.timeout`, `mqtt.reset`, `mqtt.closed`, ...).
    pub class: FailureClass,
    /// What happened.
    pub message: String,
}

impl Session {
    /// Sends CONNECT with `opts` and requires an accepted CONNACK within `opts.timeout`.
    pub async fn connect(mut link: Link, opts: &MqttOptions) -> Result<Session, PingFailure> {
        let fail = |class, message: String| PingFailure { class, message };
        let connect = encode_connect(opts).map_err(|e| {
            fail(
                FailureClass::MqttProtocolError,
                format!("cannot encode CONNECT: {e}"),
            )
        })?;
        let deadline = Instant::now() + opts.timeout;
        send_by(&mut link, &connect, deadline, "sending CONNECT")
            .await
            .map_err(|(class, msg)| fail(class, msg))?;
        let mut buf = BytesMut::with_capacity(256);
        match read_packet(&mut link, &mut buf, deadline, Expect::ConnAck).await {
            Ok(Packet::ConnAck(c)) if c.code == ConnectReturnCode::Success => {
                Ok(Session { link, buf })
            }
            Ok(Packet::ConnAck(c)) => Err(fail(
                connack_class(c.code),
                format!(
                    "CONNACK refused the connection: {} (code {})",
                    connack_name(c.code),
                    c.code as u8
                ),
            )),
            Ok(other) => Err(fail(
                FailureClass::MqttProtocolError,
                format!("expected CONNACK, got {}", packet_name(&other)),
            )),
            Err(f) => {
                let (class, msg) = f.classify("CONNACK", opts.timeout);
                Err(fail(class, msg))
            }
        }
    }

    /// The link and what was read past the CONNACK, for callers that drive the
    /// session themselves (the agent's canary).
    pub fn into_parts(self) -> (Link, BytesMut) {
        (self.link, self.buf)
    }

    /// One PINGREQ → PINGRESP round trip, bounded by `timeout`; its RTT.
    pub async fn ping(&mut self, timeout: Duration) -> Result<Duration, PingFailure> {
        let start = Instant::now();
        let deadline = start + timeout;
        send_by(&mut self.link, &[0xC0, 0x00], deadline, "sending PINGREQ")
            .await
            .map_err(|(class, message)| PingFailure { class, message })?;
        match read_packet(&mut self.link, &mut self.buf, deadline, Expect::PingResp).await {
            Ok(Packet::PingResp) => Ok(start.elapsed()),
            Ok(other) => Err(PingFailure {
                class: FailureClass::MqttProtocolError,
                message: format!("expected PINGRESP, got {}", packet_name(&other)),
            }),
            Err(f) => {
                let (class, message) = f.classify("PINGRESP", timeout);
                Err(PingFailure { class, message })
            }
        }
    }

    /// Sends DISCONNECT and closes, bounded by `timeout`.
    pub async fn close(mut self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, async {
            let _ = self.link.send(&[0xE0, 0x00]).await;
            self.link.close().await;
        })
        .await;
    }
}

//! MQTT phase: MQTT 3.1.1 or MQTT 5 CONNECT → CONNACK over the link the earlier phases
//! built, then a few PINGREQ → PINGRESP round trips and a clean DISCONNECT. Packets are
//! encoded and decoded with rumqttc's codecs (`mqttbytes::v4` and `v5::mqttbytes::v5`);
//! the CONNECT (which carries the SAS token or password) is never logged or
//! Debug-printed. With MQTT 5 the CONNACK's reason code and properties (the broker's
//! limits: Server Keep Alive, Maximum Packet Size, ...) become evidence, and a server
//! DISCONNECT's reason code names why the server closed.

use std::io;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use rumqttc::mqttbytes::v4::{ConnectReturnCode, Packet};
use rumqttc::mqttbytes::{Error as CodecError, Protocol};
use rumqttc::v5::mqttbytes::v5 as m5;
use rumqttc::v5::mqttbytes::Error as Codec5Error;
use tokio::time::Instant;

use super::stream::Link;
use super::{stream_error_kind, Stopwatch, StreamFault};
use crate::auth::Secret;
use crate::model::mqtt5::{connack_reason_class, connack_reason_name, disconnect_reason_name};
use crate::model::{
    ms, ConnackEvidence, FailureClass, Mqtt5ConnackProperties, Mqtt5Disconnect, MqttEvidence,
    MqttVersion, Phase, PhaseResult,
};

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
    /// The MQTT version of the CONNECT.
    pub version: MqttVersion,
}

/// Receive Maximum announced in an MQTT 5 CONNECT (what device SDKs typically allow in flight).
pub const V5_RECEIVE_MAXIMUM: u16 = 100;

/// A CONNACK, whatever the version.
struct Connack {
    /// 3.1.1 return code or MQTT 5 reason code.
    code: u8,
    name: &'static str,
    accepted: bool,
    session_present: bool,
    class: FailureClass,
    /// A refusal of the identity (client id, credentials): with a throw-away identity it
    /// proves the MQTT layer works.
    identity_refused: bool,
    properties: Option<Mqtt5ConnackProperties>,
}

/// A packet from the server, whatever the version.
enum Incoming {
    ConnAck(Connack),
    PingResp,
    /// MQTT 5 DISCONNECT with its reason.
    Disconnect(Mqtt5Disconnect),
    Other(&'static str),
}

impl Incoming {
    fn name(&self) -> &'static str {
        match self {
            Incoming::ConnAck(_) => "CONNACK",
            Incoming::PingResp => "PINGRESP",
            Incoming::Disconnect(_) => "DISCONNECT",
            Incoming::Other(n) => n,
        }
    }
}

fn from_v4(p: Packet) -> Incoming {
    match p {
        Packet::ConnAck(c) => Incoming::ConnAck(Connack {
            code: c.code as u8,
            name: connack_name(c.code),
            accepted: c.code == ConnectReturnCode::Success,
            session_present: c.session_present,
            class: connack_class(c.code),
            identity_refused: matches!(
                c.code,
                ConnectReturnCode::BadClientId
                    | ConnectReturnCode::BadUserNamePassword
                    | ConnectReturnCode::NotAuthorized
            ),
            properties: None,
        }),
        Packet::PingResp => Incoming::PingResp,
        other => Incoming::Other(packet_name(&other)),
    }
}

/// The MQTT 5 reason code of rumqttc's CONNACK code.
fn v5_code(c: m5::ConnectReturnCode) -> u8 {
    use m5::ConnectReturnCode as C;
    match c {
        C::Success => 0x00,
        C::UnspecifiedError => 0x80,
        C::MalformedPacket => 0x81,
        C::ProtocolError => 0x82,
        C::ImplementationSpecificError => 0x83,
        C::UnsupportedProtocolVersion | C::RefusedProtocolVersion => 0x84,
        C::ClientIdentifierNotValid | C::BadClientId => 0x85,
        C::BadUserNamePassword => 0x86,
        C::NotAuthorized => 0x87,
        C::ServerUnavailable | C::ServiceUnavailable => 0x88,
        C::ServerBusy => 0x89,
        C::Banned => 0x8A,
        C::BadAuthenticationMethod => 0x8C,
        C::TopicNameInvalid => 0x90,
        C::PacketTooLarge => 0x95,
        C::QuotaExceeded => 0x97,
        C::PayloadFormatInvalid => 0x99,
        C::RetainNotSupported => 0x9A,
        C::QoSNotSupported => 0x9B,
        C::UseAnotherServer => 0x9C,
        C::ServerMoved => 0x9D,
        C::ConnectionRateExceeded => 0x9F,
    }
}

fn v5_connack(code: u8, session_present: bool, p: Option<m5::ConnAckProperties>) -> Connack {
    let flag = |v: Option<u8>| v.map(|b| b != 0);
    Connack {
        code,
        name: connack_reason_name(code),
        accepted: code == 0,
        session_present,
        class: connack_reason_class(code),
        identity_refused: matches!(code, 0x85..=0x87),
        properties: Some(p.map_or_else(Mqtt5ConnackProperties::default, |p| {
            Mqtt5ConnackProperties {
                server_keep_alive_s: p.server_keep_alive,
                assigned_client_identifier: p.assigned_client_identifier,
                reason_string: p.reason_string,
                server_reference: p.server_reference,
                maximum_packet_size: p.max_packet_size,
                receive_maximum: p.receive_max,
                topic_alias_maximum: p.topic_alias_max,
                maximum_qos: p.max_qos,
                retain_available: flag(p.retain_available),
                wildcard_subscription_available: flag(p.wildcard_subscription_available),
                shared_subscription_available: flag(p.shared_subscription_available),
                subscription_identifiers_available: flag(p.subscription_identifiers_available),
                session_expiry_s: p.session_expiry_interval,
                response_information: p.response_information,
                user_properties: p.user_properties,
            }
        })),
    }
}

fn v5_disconnect(d: m5::Disconnect) -> Mqtt5Disconnect {
    let code = d.reason_code as u8;
    let (reason_string, server_reference) = d
        .properties
        .map(|p| (p.reason_string, p.server_reference))
        .unwrap_or_default();
    Mqtt5Disconnect {
        code,
        name: disconnect_reason_name(code).to_string(),
        reason_string,
        server_reference,
    }
}

fn from_v5(p: m5::Packet) -> Incoming {
    use m5::Packet as P;
    match p {
        P::ConnAck(c) => {
            Incoming::ConnAck(v5_connack(v5_code(c.code), c.session_present, c.properties))
        }
        P::PingResp(_) => Incoming::PingResp,
        P::Disconnect(d) => Incoming::Disconnect(v5_disconnect(d)),
        P::Auth(_) => Incoming::Other("AUTH"),
        P::Connect(..) => Incoming::Other("CONNECT"),
        P::Publish(_) => Incoming::Other("PUBLISH"),
        P::PubAck(_) => Incoming::Other("PUBACK"),
        P::PingReq(_) => Incoming::Other("PINGREQ"),
        P::Subscribe(_) => Incoming::Other("SUBSCRIBE"),
        P::SubAck(_) => Incoming::Other("SUBACK"),
        P::PubRec(_) => Incoming::Other("PUBREC"),
        P::PubRel(_) => Incoming::Other("PUBREL"),
        P::PubComp(_) => Incoming::Other("PUBCOMP"),
        P::Unsubscribe(_) => Incoming::Other("UNSUBSCRIBE"),
        P::UnsubAck(_) => Incoming::Other("UNSUBACK"),
    }
}

/// One line naming a server DISCONNECT.
fn disconnect_message(d: &Mqtt5Disconnect, waiting_for: &str) -> String {
    let mut m = format!(
        "the server sent DISCONNECT instead of {waiting_for}: {} (reason 0x{:02X})",
        d.name, d.code
    );
    if let Some(r) = &d.reason_string {
        m.push_str(&format!(", reason string {r:?}"));
    }
    if let Some(r) = &d.server_reference {
        m.push_str(&format!(", server reference {r:?}"));
    }
    m
}

/// The failure class of a server DISCONNECT reason code.
pub fn disconnect_class(code: u8) -> FailureClass {
    match code {
        0x87 => FailureClass::MqttNotAuthorized,
        0x89 => FailureClass::MqttServerBusy,
        0x8B => FailureClass::MqttServerUnavailable,
        0x95 => FailureClass::MqttPacketTooLarge,
        0x96 | 0x97 | 0x9F => FailureClass::MqttQuotaExceeded,
        0x9C | 0x9D => FailureClass::MqttServerRedirect,
        0x81 | 0x82 => FailureClass::MqttProtocolError,
        _ => FailureClass::MqttClosed,
    }
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
        mqtt_version: Some(opts.version),
        connack_properties: None,
        server_disconnect: None,
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

    let connack = match read_packet(
        link,
        &mut buf,
        phase_deadline,
        Expect::ConnAck,
        opts.version,
    )
    .await
    {
        Ok(Incoming::ConnAck(c)) => c,
        Ok(Incoming::Disconnect(d)) => {
            let msg = disconnect_message(&d, "CONNACK");
            let class = disconnect_class(d.code);
            ev.server_disconnect = Some(d);
            return fail(class, msg, &ev);
        }
        Ok(other) => {
            let msg = format!("expected CONNACK, got {}", other.name());
            return fail(FailureClass::MqttProtocolError, msg, &ev);
        }
        Err(f) => {
            let (class, msg) = f.classify("CONNACK", opts.timeout);
            return fail(class, msg, &ev);
        }
    };
    ev.connack_ms = Some(ms(sent.elapsed()));
    ev.connack = Some(ConnackEvidence {
        code: connack.code,
        name: connack.name.to_string(),
        session_present: connack.session_present,
    });
    ev.connack_properties = connack.properties.clone();

    if !connack.accepted {
        let throwaway = opts.auth == "none";
        // A throw-away identity is expected to be refused: the refusal proves the
        // MQTT layer works end to end, it does not test this device's credentials.
        if throwaway && connack.identity_refused {
            ev.note = Some(format!(
                "reachable, authentication not tested (a throw-away identity was refused: {})",
                connack.name
            ));
            return PhaseResult::ok(Phase::Mqtt, clock.elapsed(), &ev);
        }
        let msg = refusal_message(&connack, opts.version);
        return fail(connack.class, msg, &ev);
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
        match read_packet(
            link,
            &mut buf,
            phase_deadline,
            Expect::PingResp,
            opts.version,
        )
        .await
        {
            Ok(Incoming::PingResp) => ev.ping_rtts_ms.push(ms(start.elapsed())),
            Ok(Incoming::Disconnect(d)) => {
                let msg = disconnect_message(&d, "PINGRESP");
                let class = disconnect_class(d.code);
                ev.server_disconnect = Some(d);
                return fail(class, msg, &ev);
            }
            Ok(other) => {
                let msg = format!(
                    "expected PINGRESP {} of {}, got {}",
                    i + 1,
                    opts.pings,
                    other.name()
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

/// One line naming a refusing CONNACK (and, MQTT 5, its Reason String and Server Reference).
fn refusal_message(c: &Connack, version: MqttVersion) -> String {
    match version {
        MqttVersion::V311 => format!(
            "CONNACK refused the connection: {} (code {})",
            c.name, c.code
        ),
        MqttVersion::V5 => {
            let mut m = format!(
                "CONNACK refused the connection: {} (reason 0x{:02X})",
                c.name, c.code
            );
            if let Some(p) = &c.properties {
                if let Some(r) = &p.reason_string {
                    m.push_str(&format!(", reason string {r:?}"));
                }
                if let Some(r) = &p.server_reference {
                    m.push_str(&format!(", server reference {r:?}"));
                }
            }
            m
        }
    }
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
    /// The MQTT 5 codec refused.
    #[error("{0}")]
    Codec5(Codec5Error),
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
    if opts.version == MqttVersion::V5 {
        return encode_connect_v5(opts);
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

/// An MQTT 5 CONNECT with the properties a device SDK sends: a clean start with
/// Session Expiry 0, a Receive Maximum, the largest packet it accepts, and a request
/// for problem information (so refusals carry a Reason String).
fn encode_connect_v5(opts: &MqttOptions) -> Result<BytesMut, EncodeError> {
    let props = m5::ConnectProperties {
        session_expiry_interval: Some(0),
        receive_maximum: Some(V5_RECEIVE_MAXIMUM),
        max_packet_size: Some(MAX_PACKET as u32),
        topic_alias_max: None,
        request_response_info: None,
        request_problem_info: Some(1),
        user_properties: Vec::new(),
        authentication_method: None,
        authentication_data: None,
    };
    let connect = m5::Connect {
        keep_alive: opts.keep_alive,
        client_id: opts.client_id.clone(),
        clean_start: true,
        properties: Some(props),
    };
    let login = match (&opts.username, &opts.password) {
        (None, None) => None,
        (u, p) => Some(m5::Login::new(
            u.clone().unwrap_or_default(),
            p.as_ref()
                .map(|p| p.expose().to_string())
                .unwrap_or_default(),
        )),
    };
    let mut buf = BytesMut::with_capacity(connect.size(&None, &login) + 8);
    connect
        .write(&None, &login, &mut buf)
        .map_err(EncodeError::Codec5)?;
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

async fn read_packet(
    link: &mut Link,
    buf: &mut BytesMut,
    deadline: Instant,
    expect: Expect,
    version: MqttVersion,
) -> Result<Incoming, ReadFail> {
    read_with(link, buf, deadline, expect, version, |buf| {
        if version == MqttVersion::V5 {
            read_v5(buf).map_err(|e| format!("malformed MQTT 5 packet ({e})"))
        } else {
            read_v4(buf).map(|p| p.map(from_v4))
        }
    })
    .await
}

/// Reads one MQTT 3.1.1 packet as rumqttc decodes it (SUBACK and PUBLISH
/// included), for exchanges beyond CONNECT and PINGREQ (the DPS registration).
pub(crate) async fn read_packet_v4(
    link: &mut Link,
    buf: &mut BytesMut,
    deadline: Instant,
    expect: Expect,
) -> Result<Packet, ReadFail> {
    read_with(link, buf, deadline, expect, MqttVersion::V311, read_v4).await
}

fn read_v4(buf: &mut BytesMut) -> Result<Option<Packet>, String> {
    match Packet::read(buf, MAX_PACKET) {
        Ok(p) => Ok(Some(p)),
        Err(CodecError::InsufficientBytes(_)) => Ok(None),
        Err(e) => Err(format!("malformed MQTT packet ({e})")),
    }
}

/// The read loop: checks the first byte is plausible, parses what arrived with
/// `parse` (`Ok(None)`: incomplete), else waits for more until `deadline`.
async fn read_with<T>(
    link: &mut Link,
    buf: &mut BytesMut,
    deadline: Instant,
    expect: Expect,
    version: MqttVersion,
    mut parse: impl FnMut(&mut BytesMut) -> Result<Option<T>, String>,
) -> Result<T, ReadFail> {
    // Bounded: every turn either parses, fails, or waits on the deadline.
    loop {
        if let Some(&first) = buf.first() {
            let ptype = first >> 4;
            // MQTT 3.1.1: the first packet from the server must be CONNACK (type 2);
            // MQTT 5 servers may send DISCONNECT (type 14) instead.
            let plausible = match expect {
                Expect::ConnAck => ptype == 2 || (version == MqttVersion::V5 && ptype == 14),
                Expect::PingResp => (1..=14).contains(&ptype),
            };
            if !plausible {
                return Err(ReadFail::Garbage(format!(
                    "the server sent bytes that are not an MQTT {} ({}): not an MQTT server, or a proxy in the way",
                    if expect == Expect::ConnAck { "CONNACK" } else { "packet" },
                    hex_prefix(buf)
                )));
            }
            match parse(buf) {
                Ok(Some(p)) => return Ok(p),
                Ok(None) => {}
                Err(m) => {
                    let head = hex_prefix(buf);
                    buf.advance(buf.len());
                    return Err(ReadFail::Garbage(format!("{m}: {head}")));
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

/// One MQTT 5 packet from `buf`, `None` while incomplete. A reason code rumqttc does
/// not know (a CONNACK or DISCONNECT from a newer or odd server) is still read: the
/// code is the evidence, whatever its name.
fn read_v5(buf: &mut BytesMut) -> Result<Option<Incoming>, Codec5Error> {
    let probe = buf.clone();
    match m5::Packet::read(buf, Some(MAX_PACKET as u32)) {
        Ok(p) => Ok(Some(from_v5(p))),
        Err(Codec5Error::InsufficientBytes(_)) => Ok(None),
        Err(Codec5Error::InvalidConnectReturnCode(code))
        | Err(Codec5Error::InvalidReason(code)) => {
            // The fixed header was complete (the codec read the code): drop the packet.
            let (len, header) = remaining_length(&probe).ok_or(Codec5Error::MalformedPacket)?;
            buf.clear();
            buf.extend_from_slice(&probe[(header + len).min(probe.len())..]);
            Ok(Some(if probe[0] >> 4 == 2 {
                Incoming::ConnAck(v5_connack(
                    code,
                    probe.get(header).is_some_and(|f| f & 1 == 1),
                    None,
                ))
            } else {
                Incoming::Disconnect(Mqtt5Disconnect {
                    code,
                    name: disconnect_reason_name(code).to_string(),
                    reason_string: None,
                    server_reference: None,
                })
            }))
        }
        Err(e) => Err(e),
    }
}

/// The remaining length of the packet at the start of `b` and the fixed header's size.
fn remaining_length(b: &[u8]) -> Option<(usize, usize)> {
    let mut len = 0usize;
    for (i, &byte) in b.iter().enumerate().skip(1).take(4) {
        len |= ((byte & 0x7F) as usize) << (7 * (i - 1));
        if byte & 0x80 == 0 {
            return Some((len, i + 1));
        }
    }
    None
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
            version: MqttVersion::V311,
        };
        let bytes = encode_connect(&opts).unwrap();
        assert_eq!(bytes[0], 0x10);
        assert!(bytes.windows(9).any(|w| w == b"SECRETSIG"));
    }

    #[test]
    fn a_v5_connect_carries_the_sdk_properties_and_reads_back() {
        let opts = MqttOptions {
            client_id: "dev1".into(),
            username: Some("user".into()),
            password: Some(Secret::new("SECRETPW")),
            keep_alive: 300,
            auth: "password",
            pings: 0,
            timeout: Duration::from_secs(1),
            version: MqttVersion::V5,
        };
        let mut bytes = encode_connect(&opts).unwrap();
        assert!(bytes.windows(5).any(|w| w == b"MQTT\x05"));
        match m5::Packet::read(&mut bytes, None).unwrap() {
            m5::Packet::Connect(c, _, login) => {
                assert_eq!(c.keep_alive, 300);
                assert!(c.clean_start);
                let p = c.properties.unwrap();
                assert_eq!(p.session_expiry_interval, Some(0));
                assert_eq!(p.receive_maximum, Some(V5_RECEIVE_MAXIMUM));
                assert_eq!(p.max_packet_size, Some(MAX_PACKET as u32));
                assert_eq!(p.request_problem_info, Some(1));
                let l = login.unwrap();
                assert_eq!(
                    (l.username.as_str(), l.password.as_str()),
                    ("user", "SECRETPW")
                );
            }
            _ => panic!("not a CONNECT"),
        }
    }

    #[test]
    fn an_unknown_v5_reason_code_is_still_evidence() {
        // CONNACK, remaining length 3, flags 0, reason 0xA7 (unassigned), no properties.
        let mut buf = BytesMut::from(&[0x20u8, 0x03, 0x00, 0xA7, 0x00, 0xD0, 0x00][..]);
        match read_v5(&mut buf).unwrap() {
            Some(Incoming::ConnAck(c)) => {
                assert_eq!(c.code, 0xA7);
                assert!(!c.accepted);
                assert_eq!(c.class, FailureClass::MqttRefused);
            }
            _ => panic!("not a CONNACK"),
        }
        // What follows the packet stays in the buffer (a PINGRESP here).
        assert_eq!(&buf[..], &[0xD0, 0x00]);
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
            version: MqttVersion::V311,
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
    version: MqttVersion,
    properties: Option<Mqtt5ConnackProperties>,
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
        match read_packet(&mut link, &mut buf, deadline, Expect::ConnAck, opts.version).await {
            Ok(Incoming::ConnAck(c)) if c.accepted => Ok(Session {
                link,
                buf,
                version: opts.version,
                properties: c.properties,
            }),
            Ok(Incoming::ConnAck(c)) => Err(fail(c.class, refusal_message(&c, opts.version))),
            Ok(Incoming::Disconnect(d)) => Err(fail(
                disconnect_class(d.code),
                disconnect_message(&d, "CONNACK"),
            )),
            Ok(other) => Err(fail(
                FailureClass::MqttProtocolError,
                format!("expected CONNACK, got {}", other.name()),
            )),
            Err(f) => {
                let (class, msg) = f.classify("CONNACK", opts.timeout);
                Err(fail(class, msg))
            }
        }
    }

    /// MQTT 5: the accepted CONNACK's properties (the broker's limits); `None` with 3.1.1.
    pub fn connack_properties(&self) -> Option<&Mqtt5ConnackProperties> {
        self.properties.as_ref()
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
        match read_packet(
            &mut self.link,
            &mut self.buf,
            deadline,
            Expect::PingResp,
            self.version,
        )
        .await
        {
            Ok(Incoming::PingResp) => Ok(start.elapsed()),
            Ok(Incoming::Disconnect(d)) => Err(PingFailure {
                class: disconnect_class(d.code),
                message: disconnect_message(&d, "PINGRESP"),
            }),
            Ok(other) => Err(PingFailure {
                class: FailureClass::MqttProtocolError,
                message: format!("expected PINGRESP, got {}", other.name()),
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

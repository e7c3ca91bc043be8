//! The canary session's protocol state, without I/O (the shape of rumqttc's
//! `MqttState` and of the tuner): events go in — bytes received, the peer's close,
//! an I/O error already classified where it was seen, a timer, a write done, a
//! publish to make, a stop — and actions come out — bytes to send, a timer to arm,
//! a publish acknowledged or failed, close the link, the session's end with its
//! cause. [`super::session`] is the thin async driver that performs them.
//!
//! [`Reconnects`] is the back-off between sessions: a session that dies young
//! counts like a failed attempt, so a server that accepts CONNECT and then drops
//! the session cannot make the canary reconnect in a tight loop.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use rumqttc::mqttbytes::v4::{Packet, PubAck, Publish};
use rumqttc::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5 as m5;
use tokio::time::Instant;

use super::history::{DisconnectCause, REASON_SESSION_TAKEN_OVER};
use super::schedule::backoff;

/// Largest packet accepted from the server.
pub const MAX_PACKET: usize = 256 * 1024;
/// Fraction of the token lifetime after which the session renews its token.
pub const RENEW_AT: f64 = 0.8;
/// The MQTT DISCONNECT packet (no reason code).
pub const DISCONNECT: [u8; 2] = [0xE0, 0x00];
/// The MQTT PINGREQ packet.
pub const PINGREQ: [u8; 2] = [0xC0, 0x00];
/// A write larger than this (bytes) fills a full-size segment even on a path
/// whose MTU is IPv6's minimum (1280): a PINGRESP or PUBACK that never comes after
/// one is named a possible path-MTU stall in the disconnect's detail.
pub const LARGE_WRITE: usize = 1200;

/// What the machine needs to know about the session.
#[derive(Debug, Clone)]
pub struct MachineConfig {
    /// Keep-alive: a PINGREQ goes out after this long without sending.
    pub keepalive: Duration,
    /// How long a PINGRESP (or a PUBACK) may take.
    pub ping_timeout: Duration,
    /// Lifetime of the renewable SAS token the session connected with.
    pub token_lifetime: Option<Duration>,
    /// Fixed expiry (Unix seconds) of a token that cannot be renewed.
    pub token_expiry_unix: Option<u64>,
    /// The MQTT version the session was connected with (its PUBLISH and PUBACK
    /// carry MQTT 5 reason codes and properties when it is 5).
    pub version: crate::model::MqttVersion,
}

/// What a write carries (the driver picks its timeout and words its errors).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sending {
    /// A PINGREQ.
    PingReq,
    /// The uploader's PUBLISH with this packet id.
    Publish(u16),
    /// A PUBACK for a message the server pushed.
    PubAck,
    /// The DISCONNECT before a planned close (its errors do not matter).
    Farewell,
}

impl Sending {
    /// What was being done, for error details.
    pub fn doing(self) -> &'static str {
        match self {
            Sending::PingReq => "sending PINGREQ",
            Sending::Publish(_) => "sending PUBLISH",
            Sending::PubAck => "acknowledging a message",
            Sending::Farewell => "sending DISCONNECT",
        }
    }
}

/// How a session ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Ended {
    /// The agent is stopping (not a disconnect).
    Stopped,
    /// A disconnect to record.
    Disconnect(Disconnect),
}

/// A disconnect as the machine saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct Disconnect {
    /// The cause class.
    pub cause: DisconnectCause,
    /// What was seen; never a secret.
    pub detail: String,
    /// The silence the path had to survive before the exchange that failed.
    pub idle_before: Duration,
    /// The longest silence the session survived before (an answered exchange).
    pub longest_idle_survived: Duration,
    /// The reason code of the server's DISCONNECT, when it had one.
    pub reason_code: Option<u8>,
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Write these bytes.
    Send {
        /// The encoded packet.
        bytes: Vec<u8>,
        /// What it is.
        what: Sending,
    },
    /// Wake the machine (`on_timer`) at this instant; replaces any earlier timer.
    ArmTimer(Instant),
    /// The publish with this packet id was acknowledged.
    PublishAcked(u16),
    /// The publish with this packet id failed (the session ended first).
    PublishFailed(u16, String),
    /// Close the link (after any sends before it).
    Close,
    /// The session is over; nothing follows.
    End(Ended),
}

/// One connected session's protocol state.
#[derive(Debug)]
pub struct SessionMachine {
    cfg: MachineConfig,
    buf: BytesMut,
    last_rx: Instant,
    last_tx: Instant,
    /// A PINGREQ in flight: when it was sent and the silence before it.
    ping: Option<(Instant, Duration)>,
    /// Publishes in flight by packet id: when each was sent and the silence before.
    inflight: HashMap<u16, (Instant, Duration)>,
    next_pkid: u16,
    renew_at: Option<Instant>,
    longest_survived: Duration,
    actions: VecDeque<Action>,
    done: bool,
    armed: Option<Instant>,
    /// The last write larger than [`LARGE_WRITE`]: when, and how many bytes.
    large_tx: Option<(Instant, usize)>,
}

impl SessionMachine {
    /// A session whose CONNACK arrived at `now`.
    pub fn new(cfg: MachineConfig, now: Instant) -> SessionMachine {
        let renew_at = cfg.token_lifetime.map(|l| now + l.mul_f64(RENEW_AT));
        let mut m = SessionMachine {
            cfg,
            buf: BytesMut::new(),
            last_rx: now,
            last_tx: now,
            ping: None,
            inflight: HashMap::new(),
            next_pkid: 1,
            renew_at,
            longest_survived: Duration::ZERO,
            actions: VecDeque::new(),
            done: false,
            armed: None,
            large_tx: None,
        };
        m.arm();
        m
    }

    /// The next action to perform, if any.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Whether the session has ended (the `End` action was produced).
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Whether a new publish can be taken now (one at a time, like the uploader).
    pub fn can_publish(&self) -> bool {
        !self.done && self.inflight.is_empty()
    }

    fn keepalive(&self) -> Duration {
        self.cfg.keepalive.max(Duration::from_secs(1))
    }

    /// The silence before an exchange starting at `now`.
    fn silence(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.last_rx)
    }

    /// The silence the path had survived before the failure showed: before the
    /// exchange in flight, else up to now.
    fn idle_before(&self, now: Instant) -> Duration {
        let pending = self
            .ping
            .iter()
            .map(|(_, s)| *s)
            .chain(self.inflight.values().map(|(_, s)| *s))
            .max();
        pending.unwrap_or_else(|| self.silence(now))
    }

    fn end(&mut self, cause: DisconnectCause, detail: String, reason: Option<u8>, now: Instant) {
        if self.done {
            return;
        }
        let d = Disconnect {
            cause,
            detail: detail.clone(),
            idle_before: self.idle_before(now),
            longest_idle_survived: self.longest_survived,
            reason_code: reason,
        };
        self.finish(Ended::Disconnect(d), &detail);
    }

    fn finish(&mut self, ended: Ended, why: &str) {
        let mut ids: Vec<u16> = self.inflight.drain().map(|(k, _)| k).collect();
        ids.sort_unstable();
        for id in ids {
            self.actions.push_back(Action::PublishFailed(
                id,
                format!("the session ended: {why}"),
            ));
        }
        self.ping = None;
        self.done = true;
        self.actions.push_back(Action::End(ended));
    }

    /// A planned close: DISCONNECT, close, then the end.
    fn close_with(&mut self, ended: Ended, why: &str) {
        self.actions.push_back(Action::Send {
            bytes: DISCONNECT.to_vec(),
            what: Sending::Farewell,
        });
        self.actions.push_back(Action::Close);
        self.finish(ended, why);
    }

    /// When nothing has come back since a large write, the timeout may be a path-MTU
    /// stall (the large segment is dropped without ICMP, and TCP holds everything
    /// after it): said in the detail, as a possibility only; the cause stays.
    fn mtu_stall_note(&self) -> String {
        match self.large_tx {
            Some((at, len)) if at >= self.last_rx => format!(
                "; nothing came back since a {len}-byte write: possibly a path-MTU stall (large packets dropped without ICMP; `hubprobe check --mtu-probe` tests the path)"
            ),
            _ => String::new(),
        }
    }

    /// The earliest deadline: PINGREQ due, PINGRESP or PUBACK overdue, renewal.
    fn deadline(&self) -> Option<Instant> {
        if self.done {
            return None;
        }
        let ping = match self.ping {
            Some((sent, _)) => sent + self.cfg.ping_timeout,
            None => self.last_tx + self.keepalive(),
        };
        let puback = self
            .inflight
            .values()
            .map(|(t, _)| *t + self.cfg.ping_timeout)
            .min();
        [Some(ping), puback, self.renew_at]
            .into_iter()
            .flatten()
            .min()
    }

    fn arm(&mut self) {
        let d = self.deadline();
        if d != self.armed {
            self.armed = d;
            if let Some(at) = d {
                self.actions.push_back(Action::ArmTimer(at));
            }
        }
    }

    /// Bytes received from the server (the CONNACK's leftovers first).
    pub fn on_bytes(&mut self, data: &[u8], now: Instant) {
        if self.done {
            return;
        }
        if !data.is_empty() {
            self.last_rx = now;
        }
        self.buf.extend_from_slice(data);
        while !self.done {
            match parse_one(&mut self.buf, self.cfg.version) {
                Ok(None) => break,
                Ok(Some(p)) => self.on_packet(p, now),
                Err(detail) => self.end(DisconnectCause::ProtocolError, detail, None, now),
            }
        }
        self.arm();
    }

    fn on_packet(&mut self, p: Incoming, now: Instant) {
        match p {
            Incoming::Packet(Packet::PingResp) => {
                if let Some((_, silence)) = self.ping.take() {
                    self.longest_survived = self.longest_survived.max(silence);
                }
            }
            Incoming::Packet(Packet::PubAck(ack)) => {
                if let Some((_, silence)) = self.inflight.remove(&ack.pkid) {
                    self.longest_survived = self.longest_survived.max(silence);
                    self.actions.push_back(Action::PublishAcked(ack.pkid));
                }
            }
            Incoming::Disconnect(reason) => {
                let detail = match reason {
                    Some(r) => format!(
                        "the server sent DISCONNECT with reason 0x{r:02X} ({})",
                        reason_name(r)
                    ),
                    None => "the server sent DISCONNECT".into(),
                };
                self.end(DisconnectCause::ServerDisconnect, detail, reason, now);
            }
            Incoming::Packet(Packet::Publish(p)) => {
                // Nothing is subscribed; acknowledge what a hub pushes anyway (QoS 1
                // cloud-to-device messages would be redelivered forever).
                if p.qos == QoS::AtLeastOnce {
                    let mut out = BytesMut::new();
                    if PubAck::new(p.pkid).write(&mut out).is_ok() {
                        self.send(out.to_vec(), Sending::PubAck, now);
                    }
                }
            }
            Incoming::Packet(
                p @ (Packet::Connect(..)
                | Packet::Subscribe(_)
                | Packet::Unsubscribe(_)
                | Packet::PingReq
                | Packet::ConnAck(_)),
            ) => {
                let name = match p {
                    Packet::Connect(..) => "CONNECT",
                    Packet::Subscribe(_) => "SUBSCRIBE",
                    Packet::Unsubscribe(_) => "UNSUBSCRIBE",
                    Packet::PingReq => "PINGREQ",
                    _ => "a second CONNACK",
                };
                self.end(
                    DisconnectCause::ProtocolError,
                    format!("the server sent {name}, which a server never sends on a session"),
                    None,
                    now,
                );
            }
            Incoming::Packet(_) => {}
        }
    }

    fn send(&mut self, bytes: Vec<u8>, what: Sending, now: Instant) {
        self.last_tx = now;
        if bytes.len() > LARGE_WRITE {
            self.large_tx = Some((now, bytes.len()));
        }
        self.actions.push_back(Action::Send { bytes, what });
    }

    /// The server closed the connection (EOF). `now_unix` tells whether a fixed
    /// token had expired by then.
    pub fn on_eof(&mut self, now: Instant, now_unix: u64) {
        if !self.buf.is_empty() {
            let detail = not_mqtt(
                &mut self.buf,
                "the connection closed in the middle of a packet",
            );
            self.end(DisconnectCause::ProtocolError, detail, None, now);
            return;
        }
        let (cause, detail) = match self.cfg.token_expiry_unix {
            Some(exp) if now_unix + 5 >= exp => (
                DisconnectCause::TokenExpired,
                format!(
                    "the server closed the connection; the SAS token expired at {}",
                    crate::model::rfc3339_unix(exp)
                ),
            ),
            _ => (
                DisconnectCause::EofWithoutDisconnect,
                "the server closed the connection without an MQTT DISCONNECT".into(),
            ),
        };
        self.end(cause, detail, None, now);
    }

    /// An I/O error on the link, classified by the driver where it was seen.
    pub fn on_error(&mut self, cause: DisconnectCause, detail: String, now: Instant) {
        // A write that timed out after a large one may be a path-MTU stall too.
        let detail = match cause {
            DisconnectCause::NoPingresp => format!("{detail}{}", self.mtu_stall_note()),
            _ => detail,
        };
        self.end(cause, detail, None, now);
    }

    /// A write finished.
    pub fn on_write_done(&mut self, what: Sending, now: Instant) {
        let _ = what;
        if !self.done {
            self.last_tx = self.last_tx.max(now);
            self.arm();
        }
    }

    /// The armed timer fired (or any wake-up): acts on every deadline passed.
    pub fn on_timer(&mut self, now: Instant) {
        if self.done {
            return;
        }
        self.armed = None;
        if let Some((sent, _)) = self.ping {
            if now >= sent + self.cfg.ping_timeout {
                let detail = format!(
                    "no PINGRESP within {}{}",
                    humantime::format_duration(self.cfg.ping_timeout),
                    self.mtu_stall_note()
                );
                self.end(DisconnectCause::NoPingresp, detail, None, now);
                return;
            }
        }
        if self
            .inflight
            .values()
            .any(|(t, _)| now >= *t + self.cfg.ping_timeout)
        {
            let detail = format!(
                "no PUBACK within {}{}",
                humantime::format_duration(self.cfg.ping_timeout),
                self.mtu_stall_note()
            );
            self.end(DisconnectCause::NoPingresp, detail, None, now);
            return;
        }
        if self.renew_at.is_some_and(|r| now >= r) {
            let lifetime = self.cfg.token_lifetime.unwrap_or_default();
            let detail = format!(
                "renewing the SAS token at {:.0} % of its {} lifetime (a reconnect on MQTT)",
                RENEW_AT * 100.0,
                humantime::format_duration(lifetime)
            );
            let d = Disconnect {
                cause: DisconnectCause::TokenRenewal,
                detail: detail.clone(),
                idle_before: self.silence(now),
                longest_idle_survived: self.longest_survived,
                reason_code: None,
            };
            self.close_with(Ended::Disconnect(d), &detail);
            return;
        }
        if self.ping.is_none() && now >= self.last_tx + self.keepalive() {
            self.ping = Some((now, self.silence(now)));
            self.send(PINGREQ.to_vec(), Sending::PingReq, now);
        }
        self.arm();
    }

    /// A QoS 1 publish to make; its packet id (answered later by `PublishAcked`
    /// or `PublishFailed`), or why it cannot be made.
    pub fn publish(
        &mut self,
        topic: String,
        payload: Vec<u8>,
        now: Instant,
    ) -> Result<u16, String> {
        if self.done {
            return Err("the session has ended".into());
        }
        let pkid = self.next_pkid;
        self.next_pkid = self.next_pkid.checked_add(1).unwrap_or(1);
        let mut out = BytesMut::new();
        if self.cfg.version == crate::model::MqttVersion::V5 {
            let mut p = m5::Publish::new(topic, m5qos(QoS::AtLeastOnce), payload, None);
            p.pkid = pkid;
            p.write(&mut out)
                .map_err(|e| format!("cannot encode PUBLISH: {e}"))?;
        } else {
            let mut p = Publish::new(topic, QoS::AtLeastOnce, payload);
            p.pkid = pkid;
            p.write(&mut out)
                .map_err(|e| format!("cannot encode PUBLISH: {e}"))?;
        }
        let silence = self.silence(now);
        self.inflight.insert(pkid, (now, silence));
        self.send(out.to_vec(), Sending::Publish(pkid), now);
        self.arm();
        Ok(pkid)
    }

    /// The agent stops: DISCONNECT, close; not a disconnect to record.
    pub fn stop(&mut self) {
        if !self.done {
            self.close_with(Ended::Stopped, "the agent is stopping");
        }
    }
}

/// A packet from the server, with DISCONNECT read by hand (rumqttc's 3.1.1 codec
/// has no reason code, and an MQTT 5 server sends one).
#[derive(Debug)]
enum Incoming {
    Packet(Packet),
    Disconnect(Option<u8>),
}

/// One packet from the buffer, if a whole one is there; an error (and the buffer
/// dropped) when the bytes are not MQTT.
fn parse_one(
    buf: &mut BytesMut,
    version: crate::model::MqttVersion,
) -> Result<Option<Incoming>, String> {
    if buf.is_empty() {
        return Ok(None);
    }
    if buf[0] == 0xE0 {
        // Remaining length: a variable-length integer of up to 4 bytes.
        let mut len: usize = 0;
        let mut i = 1;
        loop {
            let Some(&b) = buf.get(i) else {
                return Ok(None);
            };
            len |= usize::from(b & 0x7F) << (7 * (i - 1));
            i += 1;
            if b & 0x80 == 0 {
                break;
            }
            if i > 4 {
                return Err(not_mqtt(buf, "malformed remaining length"));
            }
        }
        if len > MAX_PACKET {
            return Err(not_mqtt(buf, "DISCONNECT larger than the packet limit"));
        }
        if buf.len() < i + len {
            return Ok(None);
        }
        let reason = (len > 0).then(|| buf[i]);
        buf.advance(i + len);
        return Ok(Some(Incoming::Disconnect(reason)));
    }
    // Fixed-header flags other than PUBLISH's are fixed by the protocol: anything
    // else is not MQTT (text, TLS records, noise), and waiting for the length it
    // seems to announce would only delay saying so.
    let (kind, flags) = (buf[0] >> 4, buf[0] & 0x0F);
    let expected = match kind {
        3 => flags,
        6 | 8 | 10 => 0b0010,
        _ => 0,
    };
    if kind == 0 || flags != expected {
        return Err(not_mqtt(buf, "reserved packet type or flags"));
    }
    if version == crate::model::MqttVersion::V5 {
        return match m5::Packet::read(buf, Some(MAX_PACKET as u32)) {
            Ok(p) => Ok(Some(Incoming::Packet(from_v5(p)))),
            Err(rumqttc::v5::mqttbytes::Error::InsufficientBytes(_)) => Ok(None),
            Err(e) => Err(not_mqtt(buf, &e.to_string())),
        };
    }
    match Packet::read(buf, MAX_PACKET) {
        Ok(p) => Ok(Some(Incoming::Packet(p))),
        Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => Ok(None),
        Err(e) => Err(not_mqtt(buf, &e.to_string())),
    }
}

fn m5qos(q: QoS) -> rumqttc::v5::mqttbytes::QoS {
    match q {
        QoS::AtMostOnce => rumqttc::v5::mqttbytes::QoS::AtMostOnce,
        QoS::AtLeastOnce => rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
        QoS::ExactlyOnce => rumqttc::v5::mqttbytes::QoS::ExactlyOnce,
    }
}

/// An MQTT 5 packet as the session's 3.1.1 view of it: the machine acts on packet
/// ids, QoS and types, which mean the same in both versions (DISCONNECT is read by
/// hand before, with its reason code).
fn from_v5(p: m5::Packet) -> Packet {
    use rumqttc::mqttbytes::v4 as m4;
    match p {
        m5::Packet::PingResp(_) => Packet::PingResp,
        m5::Packet::PingReq(_) => Packet::PingReq,
        m5::Packet::PubAck(a) => Packet::PubAck(PubAck::new(a.pkid)),
        m5::Packet::Publish(p) => {
            let qos = match p.qos {
                rumqttc::v5::mqttbytes::QoS::AtMostOnce => QoS::AtMostOnce,
                rumqttc::v5::mqttbytes::QoS::AtLeastOnce => QoS::AtLeastOnce,
                rumqttc::v5::mqttbytes::QoS::ExactlyOnce => QoS::ExactlyOnce,
            };
            let mut q = Publish::new(String::from_utf8_lossy(&p.topic), qos, p.payload);
            q.pkid = p.pkid;
            q.dup = p.dup;
            q.retain = p.retain;
            Packet::Publish(q)
        }
        m5::Packet::ConnAck(_) => {
            Packet::ConnAck(m4::ConnAck::new(m4::ConnectReturnCode::Success, false))
        }
        m5::Packet::Connect(..) => Packet::Connect(m4::Connect::new(String::new())),
        m5::Packet::Subscribe(_) => Packet::Subscribe(m4::Subscribe::new("", QoS::AtMostOnce)),
        m5::Packet::Unsubscribe(_) => Packet::Unsubscribe(m4::Unsubscribe::new("")),
        // The rest needs nothing from a session that subscribes to nothing.
        _ => Packet::PubRel(m4::PubRel::new(0)),
    }
}

fn not_mqtt(buf: &mut BytesMut, why: &str) -> String {
    let n = buf.len().min(16);
    let head: String = buf[..n].iter().map(|b| format!("{b:02x}")).collect();
    buf.clear();
    format!("the server sent something that is not MQTT ({why}): {head}")
}

/// The name of an MQTT 5 DISCONNECT reason code, a take-over said in full.
pub fn reason_name(code: u8) -> &'static str {
    match code {
        REASON_SESSION_TAKEN_OVER => {
            "session taken over: another client connected with this client id"
        }
        _ => crate::model::mqtt5::disconnect_reason_name(code),
    }
}

/// The back-off between sessions and attempts. A failed attempt and a session
/// that ended before it lived `stable_after` both lengthen the wait; only a
/// session that lived that long (or one the canary ended itself to renew its
/// token) resets it.
#[derive(Debug, Clone)]
pub struct Reconnects {
    min: Duration,
    max: Duration,
    stable_after: Duration,
    streak: u32,
}

impl Reconnects {
    /// Doubling from `min` to `max`; sessions count as established after `stable_after`.
    pub fn new(min: Duration, max: Duration, stable_after: Duration) -> Reconnects {
        Reconnects {
            min,
            max,
            stable_after,
            streak: 0,
        }
    }

    /// Failed attempts and young sessions in a row.
    pub fn streak(&self) -> u32 {
        self.streak
    }

    fn next(&mut self, u: f64) -> Duration {
        let d = backoff(self.streak, self.min, self.max, u);
        self.streak = self.streak.saturating_add(1);
        d
    }

    /// The wait after a failed connection attempt (`u` uniform in [0, 1)).
    pub fn attempt_failed(&mut self, u: f64) -> Duration {
        self.next(u)
    }

    /// The wait after a session that lived `lived` and ended with `cause`.
    pub fn session_ended(&mut self, lived: Duration, cause: DisconnectCause, u: f64) -> Duration {
        if cause == DisconnectCause::TokenRenewal {
            // Planned, and the session was fine: reconnect at once.
            self.streak = 0;
            return Duration::ZERO;
        }
        if lived >= self.stable_after {
            self.streak = 0;
        }
        self.next(u)
    }
}

#[cfg(test)]
mod tests;

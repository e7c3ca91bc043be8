//! The canary: one long-lived MQTT session with the device's keep-alive, the way the
//! device's own SDK keeps it. It pings when the keep-alive says so, renews its SAS
//! token at 80 % of the lifetime (on MQTT a renewal is a reconnect, as in the Azure
//! IoT SDKs), carries the uploader's QoS 1 publishes, and records every disconnect
//! with its cause, classified where the I/O error is seen. Reconnects back off
//! exponentially with jitter.
//!
//! It uses rumqttc's packet codec over hubprobe's own links (not rumqttc's event
//! loop) so that a reset, an EOF without DISCONNECT, a TLS alert and a missing
//! PINGRESP stay distinguishable, and the TLS verification is the probe's own.
//!
//! A hub allows one connection per identity. The session holds the identity lock
//! (`CheckPlan::identity_share`) while it connects and while it is connected; a check that finds it live
//! does not CONNECT with the identity (the canary's state stands in for it), and a
//! reconnect waits while a check holds it.

use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Buf, BytesMut};
use rumqttc::mqttbytes::v4::{Packet, PubAck, Publish};
use rumqttc::mqttbytes::QoS;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::history::{
    diagnose, CanaryReport, DiagnosisContext, DisconnectCause, DisconnectEvent, History,
};
use super::schedule::{backoff, random_unit};
use crate::check::{open_link, session_options, token_timing, CheckPlan};
use crate::probe::dns::{self, DnsOptions};
use crate::probe::mqtt::Session;
use crate::probe::stream::Link;
use crate::probe::{stream_error_kind, StreamFault};
use crate::profile::Endpoint;

/// Largest packet accepted from the server.
const MAX_PACKET: usize = 256 * 1024;
/// Fraction of the token lifetime after which the session renews its token.
pub const RENEW_AT: f64 = 0.8;

/// How the session behaves.
#[derive(Debug, Clone)]
pub struct SessionSettings {
    /// The endpoint it runs on.
    pub endpoint: Endpoint,
    /// Keep-alive (announced in CONNECT and used to schedule PINGREQs).
    pub keepalive: Duration,
    /// How long a PINGRESP (or a PUBACK) may take.
    pub ping_timeout: Duration,
    /// First reconnect delay.
    pub reconnect_min: Duration,
    /// Longest reconnect delay.
    pub reconnect_max: Duration,
    /// Disconnects kept.
    pub history_keep: usize,
    /// Where the history is saved (survives restarts).
    pub history_file: Option<PathBuf>,
}

/// What the rest of the agent sees of the session.
#[derive(Debug, Default)]
pub struct CanaryState {
    /// The kept history.
    pub history: History,
    /// Since when the current session is up.
    pub connected_since: Option<SystemTime>,
    /// Failed connection attempts since the last session ended.
    pub connect_failures: u32,
    /// The last failed attempt, one line (a class id and what was seen).
    pub connect_error: Option<String>,
}

/// One QoS 1 publish the uploader wants acknowledged.
pub struct PublishRequest {
    /// Topic.
    pub topic: String,
    /// Payload.
    pub payload: Vec<u8>,
    /// Answered with `Ok` on PUBACK, `Err` if the session ended first.
    pub done: oneshot::Sender<Result<(), String>>,
}

/// Shared state plus the publish channel.
#[derive(Clone)]
pub struct SessionHandle {
    /// The state.
    pub state: Arc<Mutex<CanaryState>>,
    /// Where publishes go.
    pub publish: mpsc::Sender<PublishRequest>,
}

impl SessionHandle {
    /// Publishes one message with QoS 1 and waits for its PUBACK, at most `timeout`.
    pub async fn publish(
        &self,
        topic: String,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        let req = PublishRequest {
            topic,
            payload,
            done: tx,
        };
        let sent = tokio::time::timeout(timeout, self.publish.send(req)).await;
        match sent {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err("the session has stopped".into()),
            Err(_) => return Err("no session to publish on".into()),
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err("the session ended before the PUBACK".into()),
            Err(_) => Err("no PUBACK in time".into()),
        }
    }

    /// Whether a session is up.
    pub fn connected(&self) -> bool {
        lock(&self.state).connected_since.is_some()
    }

    /// The canary section of a report: the disconnects since the previous report
    /// and the diagnosis over the kept history. Marks those disconnects reported.
    pub fn report(&self, settings: &SessionSettings, plan: &CheckPlan) -> CanaryReport {
        let mut st = lock(&self.state);
        let recent = st.history.take_unreported();
        let events: Vec<DisconnectEvent> = st.history.events.iter().cloned().collect();
        let (lifetime, _) = token_timing(plan);
        let diagnosis = diagnose(
            &events,
            DiagnosisContext {
                token_lifetime_s: lifetime.map(|l| l.as_secs_f64()),
                keepalive_s: settings.keepalive.as_secs_f64(),
            },
        );
        let report = CanaryReport {
            endpoint: settings.endpoint.name.clone(),
            keepalive_s: settings.keepalive.as_secs(),
            connected: st.connected_since.is_some(),
            connected_since: st.connected_since.map(crate::model::rfc3339),
            sessions_total: st.history.sessions_total,
            disconnects_total: st.history.totals(),
            recent,
            diagnosis,
            connect_failures: st.connect_failures,
            connect_error: st.connect_error.clone(),
        };
        save_history(settings, &st.history);
        report
    }
}

fn lock(m: &Mutex<CanaryState>) -> std::sync::MutexGuard<'_, CanaryState> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Loads the saved history (an unreadable or corrupt file starts a new one, logged).
pub fn load_history(file: Option<&PathBuf>) -> History {
    let Some(path) = file else {
        return History::default();
    };
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            tracing::warn!(file = %path.display(), "canary history unreadable, starting a new one: {e}");
            History::default()
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => History::default(),
        Err(e) => {
            tracing::warn!(file = %path.display(), "cannot read the canary history: {e}");
            History::default()
        }
    }
}

fn save_history(settings: &SessionSettings, history: &History) {
    let Some(path) = &settings.history_file else {
        return;
    };
    let result = serde_json::to_vec(history)
        .map_err(io::Error::other)
        .and_then(|json| crate::fsio::write_atomic(path, &json));
    if let Err(e) = result {
        tracing::error!(file = %path.display(), "cannot save the canary history: {e}");
    }
}

/// Starts nothing: builds the handle and the receiving end for [`run`].
pub fn channel(history: History) -> (SessionHandle, mpsc::Receiver<PublishRequest>) {
    let (tx, rx) = mpsc::channel(1);
    let state = CanaryState {
        history,
        ..CanaryState::default()
    };
    (
        SessionHandle {
            state: Arc::new(Mutex::new(state)),
            publish: tx,
        },
        rx,
    )
}

/// How a session ended.
enum Ended {
    /// The agent is stopping (not a disconnect).
    Stopped,
    /// A disconnect to record.
    Disconnect {
        cause: DisconnectCause,
        detail: String,
        idle_before: Duration,
    },
}

/// Runs sessions until `stop` turns true: connect (with back-off), hold, record
/// each disconnect, reconnect.
pub async fn run(
    plan: Arc<CheckPlan>,
    settings: SessionSettings,
    handle: SessionHandle,
    mut publishes: mpsc::Receiver<PublishRequest>,
    mut stop: watch::Receiver<bool>,
) {
    let identity = plan.identity_share.clone();
    // Set when this run recorded a disconnect that is not yet followed by a session.
    let mut down_since: Option<Instant> = None;
    let mut failures: u32 = 0;
    let mut last_class: Option<String> = None;
    loop {
        if *stop.borrow() {
            return;
        }
        // Take the identity (waits while a check uses it).
        let guard = match &identity {
            Some(m) => {
                tokio::select! {
                    g = m.lock.clone().lock_owned() => Some(g),
                    _ = stop.changed() => return,
                }
            }
            None => None,
        };
        let attempt = tokio::select! {
            r = connect(&plan, &settings) => r,
            _ = stop.changed() => return,
        };
        let (link, buf) = match attempt {
            Ok(parts) => parts,
            Err(why) => {
                drop(guard);
                failures += 1;
                let class = why.split(':').next().unwrap_or("").to_string();
                last_class = Some(class);
                {
                    let mut st = lock(&handle.state);
                    st.connect_failures = failures;
                    st.connect_error = Some(why.clone());
                }
                tracing::info!(endpoint = %settings.endpoint.name, "canary: connect failed: {why}");
                let wait = backoff(
                    failures - 1,
                    settings.reconnect_min,
                    settings.reconnect_max,
                    random_unit(),
                );
                tokio::select! {
                    _ = tokio::time::sleep(wait) => continue,
                    _ = stop.changed() => return,
                }
            }
        };
        let since = SystemTime::now();
        let started = Instant::now();
        {
            let mut st = lock(&handle.state);
            match down_since.take() {
                Some(t) => {
                    st.history
                        .reconnected(t.elapsed().as_secs_f64(), failures, last_class.take())
                }
                None => st.history.sessions_total += 1,
            }
            st.connected_since = Some(since);
            st.connect_failures = 0;
            st.connect_error = None;
            save_history(&settings, &st.history);
        }
        failures = 0;
        last_class = None;
        if let Some(share) = &identity {
            share.set_live_canary(Some(settings.endpoint.name.clone()));
        }
        tracing::info!(endpoint = %settings.endpoint.name, "canary: session up");

        let ended = hold(&plan, &settings, link, buf, &mut publishes, &mut stop).await;
        if let Some(share) = &identity {
            share.set_live_canary(None);
        }
        drop(guard);
        let mut st = lock(&handle.state);
        st.connected_since = None;
        match ended {
            Ended::Stopped => return,
            Ended::Disconnect {
                cause,
                detail,
                idle_before,
            } => {
                let now = SystemTime::now();
                let event = DisconnectEvent {
                    at: crate::model::rfc3339(now),
                    at_unix_ms: now
                        .duration_since(UNIX_EPOCH)
                        .unwrap_or_default()
                        .as_millis() as u64,
                    session_lived_s: started.elapsed().as_secs_f64(),
                    idle_before_s: idle_before.as_secs_f64(),
                    cause,
                    detail: detail.clone(),
                    reconnect_s: None,
                    failed_attempts: 0,
                    last_attempt_class: None,
                };
                tracing::info!(endpoint = %settings.endpoint.name, cause = cause.as_str(), "canary: disconnected: {detail}");
                st.history.record(event, settings.history_keep);
                save_history(&settings, &st.history);
                down_since = Some(Instant::now());
            }
        }
    }
}

/// DNS, transport and CONNECT/CONNACK for one attempt; the error is one line
/// starting with the failure class id.
async fn connect(plan: &CheckPlan, settings: &SessionSettings) -> Result<(Link, BytesMut), String> {
    let dns = dns::resolve(
        &plan.host,
        &DnsOptions {
            server: plan.dns_server,
            timeout: plan.timeout,
        },
    )
    .await;
    if dns.addresses.is_empty() {
        return Err(format!(
            "{}: {}",
            dns.result.class.map(|c| c.id()).unwrap_or("dns.failed"),
            dns.result.message.as_deref().unwrap_or("no address")
        ));
    }
    let link = open_link(plan, &settings.endpoint, &dns.addresses, plan.timeout)
        .await
        .map_err(|f| f.to_string())?;
    let opts = session_options(plan, settings.keepalive, plan.timeout);
    match Session::connect(link, &opts).await {
        Ok(s) => Ok(s.into_parts()),
        Err(f) => Err(format!("{}: {}", f.class.id(), f.message)),
    }
}

/// Holds one session until it ends.
async fn hold(
    plan: &CheckPlan,
    settings: &SessionSettings,
    mut link: Link,
    mut buf: BytesMut,
    publishes: &mut mpsc::Receiver<PublishRequest>,
    stop: &mut watch::Receiver<bool>,
) -> Ended {
    let keepalive = settings.keepalive.max(Duration::from_secs(1));
    let (lifetime, fixed_expiry) = token_timing(plan);
    let connected = Instant::now();
    let renew_at = lifetime.map(|l| connected + l.mul_f64(RENEW_AT));
    let mut last_rx = connected;
    let mut last_tx = connected;
    let mut ping_sent: Option<Instant> = None;
    let mut inflight: HashMap<u16, (Instant, oneshot::Sender<Result<(), String>>)> = HashMap::new();
    let mut next_pkid: u16 = 1;
    let far = connected + Duration::from_secs(100 * 365 * 86_400);

    let end = |cause, detail: String, idle_before| Ended::Disconnect {
        cause,
        detail,
        idle_before,
    };
    // The silence the path had to survive before the exchange that failed.
    let idle = |ping_sent: Option<Instant>, last_rx: Instant| match ping_sent {
        Some(p) => p.saturating_duration_since(last_rx),
        None => Instant::now().saturating_duration_since(last_rx),
    };

    loop {
        // Anything already buffered (a CONNACK may arrive with more behind it).
        loop {
            match parse_one(&mut buf) {
                Ok(None) => break,
                Ok(Some(Packet::PingResp)) => ping_sent = None,
                Ok(Some(Packet::PubAck(ack))) => {
                    if let Some((_, done)) = inflight.remove(&ack.pkid) {
                        let _ = done.send(Ok(()));
                    }
                }
                Ok(Some(Packet::Disconnect)) => {
                    return end(
                        DisconnectCause::ServerDisconnect,
                        "the server sent DISCONNECT".into(),
                        idle(ping_sent, last_rx),
                    )
                }
                Ok(Some(Packet::Publish(p))) => {
                    // Nothing is subscribed; acknowledge what a hub pushes anyway
                    // (QoS 1 cloud-to-device messages would be redelivered forever).
                    if p.qos == QoS::AtLeastOnce {
                        let mut out = BytesMut::new();
                        if PubAck::new(p.pkid).write(&mut out).is_ok() {
                            if let Err(e) = send(&mut link, &out, settings.ping_timeout).await {
                                let (cause, detail) = classify(&e, "acknowledging a message");
                                return end(cause, detail, idle(ping_sent, last_rx));
                            }
                            last_tx = Instant::now();
                        }
                    }
                }
                Ok(Some(_)) => {}
                Err(detail) => {
                    return end(
                        DisconnectCause::ProtocolError,
                        detail,
                        idle(ping_sent, last_rx),
                    )
                }
            }
        }
        let next_ping = last_tx + keepalive;
        let ping_deadline = ping_sent.map(|t| t + settings.ping_timeout);
        let puback_deadline = inflight
            .values()
            .map(|(t, _)| *t + settings.ping_timeout)
            .min();
        tokio::select! {
            biased;
            _ = stop.changed() => {
                let _ = send(&mut link, &[0xE0, 0x00], Duration::from_secs(2)).await;
                let _ = tokio::time::timeout(Duration::from_secs(2), link.close()).await;
                return Ended::Stopped;
            }
            r = link.recv(&mut buf) => match r {
                Ok(0) => {
                    let now_unix = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
                    let (cause, detail) = match fixed_expiry {
                        Some(exp) if now_unix + 5 >= exp => (
                            DisconnectCause::TokenExpired,
                            format!("the server closed the connection; the SAS token expired at {}", crate::model::rfc3339_unix(exp)),
                        ),
                        _ => (
                            DisconnectCause::EofWithoutDisconnect,
                            "the server closed the connection without an MQTT DISCONNECT".into(),
                        ),
                    };
                    return end(cause, detail, idle(ping_sent, last_rx));
                }
                Ok(_) => last_rx = Instant::now(),
                Err(e) => {
                    let (cause, detail) = classify(&e, "reading");
                    return end(cause, detail, idle(ping_sent, last_rx));
                }
            },
            _ = tokio::time::sleep_until(ping_deadline.unwrap_or(far)), if ping_sent.is_some() => {
                return end(
                    DisconnectCause::NoPingresp,
                    format!("no PINGRESP within {}", humantime::format_duration(settings.ping_timeout)),
                    idle(ping_sent, last_rx),
                );
            }
            _ = tokio::time::sleep_until(puback_deadline.unwrap_or(far)), if puback_deadline.is_some() => {
                return end(
                    DisconnectCause::NoPingresp,
                    format!("no PUBACK within {}", humantime::format_duration(settings.ping_timeout)),
                    idle(ping_sent, last_rx),
                );
            }
            _ = tokio::time::sleep_until(next_ping), if ping_sent.is_none() => {
                if let Err(e) = send(&mut link, &[0xC0, 0x00], settings.ping_timeout).await {
                    let (cause, detail) = classify(&e, "sending PINGREQ");
                    return end(cause, detail, Instant::now().saturating_duration_since(last_rx));
                }
                let now = Instant::now();
                ping_sent = Some(now);
                last_tx = now;
            }
            _ = tokio::time::sleep_until(renew_at.unwrap_or(far)), if renew_at.is_some() => {
                let _ = send(&mut link, &[0xE0, 0x00], Duration::from_secs(2)).await;
                let _ = tokio::time::timeout(Duration::from_secs(2), link.close()).await;
                return end(
                    DisconnectCause::TokenRenewal,
                    format!(
                        "renewing the SAS token at {:.0} % of its {} lifetime (a reconnect on MQTT)",
                        RENEW_AT * 100.0,
                        humantime::format_duration(lifetime.unwrap_or_default())
                    ),
                    Instant::now().saturating_duration_since(last_rx),
                );
            }
            req = publishes.recv(), if inflight.is_empty() => {
                let Some(req) = req else {
                    // The agent dropped the uploader: keep the session, no more publishes.
                    std::future::pending::<()>().await;
                    unreachable!();
                };
                let pkid = next_pkid;
                next_pkid = next_pkid.checked_add(1).unwrap_or(1);
                let mut p = Publish::new(req.topic, QoS::AtLeastOnce, req.payload);
                p.pkid = pkid;
                let mut out = BytesMut::new();
                if let Err(e) = p.write(&mut out) {
                    let _ = req.done.send(Err(format!("cannot encode PUBLISH: {e}")));
                    continue;
                }
                if let Err(e) = send(&mut link, &out, settings.ping_timeout).await {
                    let (cause, detail) = classify(&e, "sending PUBLISH");
                    let _ = req.done.send(Err(detail.clone()));
                    return end(cause, detail, Instant::now().saturating_duration_since(last_rx));
                }
                let now = Instant::now();
                last_tx = now;
                inflight.insert(pkid, (now, req.done));
            }
        }
    }
}

async fn send(link: &mut Link, bytes: &[u8], timeout: Duration) -> io::Result<()> {
    match tokio::time::timeout(timeout, link.send(bytes)).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "send timed out")),
    }
}

/// One packet from the buffer, if a whole one is there.
fn parse_one(buf: &mut BytesMut) -> Result<Option<Packet>, String> {
    if buf.is_empty() {
        return Ok(None);
    }
    match Packet::read(buf, MAX_PACKET) {
        Ok(p) => Ok(Some(p)),
        Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => Ok(None),
        Err(e) => {
            let n = buf.len().min(16);
            let head: String = buf[..n].iter().map(|b| format!("{b:02x}")).collect();
            buf.advance(buf.len());
            Err(format!(
                "the server sent something that is not MQTT ({e}): {head}"
            ))
        }
    }
}

/// The disconnect cause of an I/O error on the session, seen where it happened.
fn classify(e: &io::Error, doing: &str) -> (DisconnectCause, String) {
    if let Some(alert) = tls_alert(e) {
        return (
            DisconnectCause::TlsAlert,
            format!("{doing}: the server sent TLS alert {alert}"),
        );
    }
    let cause = match stream_error_kind(e) {
        Some(StreamFault::Reset) => DisconnectCause::TcpReset,
        Some(StreamFault::Closed) => DisconnectCause::EofWithoutDisconnect,
        Some(StreamFault::Timeout) => DisconnectCause::NoPingresp,
        None => match e.kind() {
            io::ErrorKind::InvalidData => DisconnectCause::ProtocolError,
            _ => DisconnectCause::IoError,
        },
    };
    (cause, format!("{doing}: {e}"))
}

/// The alert, when the error is a TLS alert received from the peer.
fn tls_alert(e: &io::Error) -> Option<String> {
    let inner = e.get_ref()?;
    match inner.downcast_ref::<rustls::Error>()? {
        rustls::Error::AlertReceived(a) => Some(format!("{a:?}")),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_at_the_boundary() {
        let reset = io::Error::new(io::ErrorKind::ConnectionReset, "reset");
        assert_eq!(classify(&reset, "x").0, DisconnectCause::TcpReset);
        let eof = io::Error::new(io::ErrorKind::UnexpectedEof, "eof");
        assert_eq!(classify(&eof, "x").0, DisconnectCause::EofWithoutDisconnect);
        let alert = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRevoked),
        );
        let (c, m) = classify(&alert, "reading");
        assert_eq!(c, DisconnectCause::TlsAlert);
        assert!(m.contains("CertificateRevoked"), "{m}");
        let other = io::Error::other("odd");
        assert_eq!(classify(&other, "x").0, DisconnectCause::IoError);
    }

    #[test]
    fn packets_are_parsed_whole_or_waited_for() {
        let mut b = BytesMut::from(&[0xD0u8][..]);
        assert!(matches!(parse_one(&mut b), Ok(None)));
        b.extend_from_slice(&[0x00, 0x40, 0x02, 0x00, 0x07]);
        assert!(matches!(parse_one(&mut b), Ok(Some(Packet::PingResp))));
        match parse_one(&mut b) {
            Ok(Some(Packet::PubAck(a))) => assert_eq!(a.pkid, 7),
            other => panic!("{other:?}"),
        }
        // Packet type 0 is reserved: not MQTT.
        let mut junk = BytesMut::from(&[0x00u8, 0x02, 0x00, 0x00][..]);
        assert!(parse_one(&mut junk).is_err());
        assert!(junk.is_empty());
    }
}

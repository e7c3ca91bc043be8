//! The canary: one long-lived MQTT session with the device's keep-alive, the way the
//! device's own SDK keeps it. It pings when the keep-alive says so, renews its SAS
//! token at 80 % of the lifetime (on MQTT a renewal is a reconnect, as in the Azure
//! IoT SDKs), carries the uploader's QoS 1 publishes, and records every disconnect
//! with its cause, classified where the I/O error is seen. Reconnects back off
//! exponentially with jitter, and a session that dies young counts like a failed
//! attempt ([`Reconnects`]).
//!
//! The protocol lives in [`SessionMachine`] (no I/O); this module is its thin async
//! driver: it connects, feeds the machine bytes, timers and classified errors, and
//! performs the actions it returns. History writes are paced ([`HISTORY_SAVE_GAP`]),
//! and the last is made when the session task ends.
//!
//! It uses rumqttc's packet codec over hubprobe's own links (not rumqttc's event
//! loop) so that a reset, an EOF without DISCONNECT, a TLS alert and a missing
//! PINGRESP stay distinguishable, and the TLS verification is the probe's own.
//!
//! A hub allows one connection per identity. The session holds the identity lock
//! (`SessionSettings::identity`, the same one the checks see as `CheckPlan::identity_share`) while it connects and while it is connected, never
//! while it waits to reconnect; a check that finds it live does not CONNECT with the
//! identity (the canary's state stands in for it), and a reconnect waits while a
//! check holds it.

use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::history::{
    diagnose, CanaryReport, DiagnosisContext, DisconnectCause, DisconnectEvent, History,
};
use super::machine::{Action, Ended, MachineConfig, Reconnects, Sending, SessionMachine};
use super::schedule::random_unit;
use crate::check::{open_session, token_timing, CheckPlan};
use crate::model::{FailureClass, Phase};
use crate::net::ChainFailure;
use crate::probe::mqtt::Session;
use crate::probe::stream::Link;
use crate::probe::{stream_error_kind, StreamFault};
use crate::profile::Endpoint;

pub use super::machine::RENEW_AT;

/// The history file is written at once when a disconnect is recorded or completed,
/// up to [`HISTORY_SAVE_BURST`] writes in a row; past that (a storm of disconnects
/// must not become a storm of fsyncs) once per this gap. Lesser changes (a failed
/// attempt counted, records marked reported) wait for the next write. The last
/// change is written when the session task ends.
pub const HISTORY_SAVE_GAP: Duration = Duration::from_secs(5);
/// History writes allowed in a burst before they are paced by [`HISTORY_SAVE_GAP`].
pub const HISTORY_SAVE_BURST: u32 = 10;

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
    /// How long a session must live before its end resets the back-off.
    pub stable_after: Duration,
    /// Where the history is saved (survives restarts).
    pub history_file: Option<PathBuf>,
    /// The device identity shared with the agent's checks (`None`: not shared).
    pub identity: Option<Arc<crate::agent::identity::IdentityShare>>,
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
    /// Whether the history changed since it was last saved, and when that was.
    save: SaveGate,
}

/// Bounds the history writes (a token bucket): at most [`HISTORY_SAVE_BURST`] in a
/// row, then one per [`HISTORY_SAVE_GAP`]; so over any window W at most
/// BURST + W / GAP + 1, unless forced.
#[derive(Debug, Default)]
struct SaveGate {
    dirty: bool,
    /// Writes not yet paid back, as time (one gap per write).
    debt: Duration,
    at: Option<Instant>,
}

impl SaveGate {
    /// Whether a write may happen now (and counts it if so).
    fn take(&mut self, now: Instant) -> bool {
        if let Some(at) = self.at {
            self.debt = self.debt.saturating_sub(now.saturating_duration_since(at));
        }
        self.at = Some(now);
        if self.debt + HISTORY_SAVE_GAP <= HISTORY_SAVE_GAP * HISTORY_SAVE_BURST {
            self.debt += HISTORY_SAVE_GAP;
            true
        } else {
            false
        }
    }
}

impl CanaryState {
    /// A disconnect recorded or completed: saved now, unless the writes are being paced.
    fn changed(&mut self, settings: &SessionSettings) {
        self.save.dirty = true;
        self.flush(settings, false);
    }

    /// A lesser change: saved with the next write.
    fn touched(&mut self) {
        self.save.dirty = true;
    }

    /// Saves a changed history: now if `force`, else if the pacing allows.
    fn flush(&mut self, settings: &SessionSettings, force: bool) {
        if !self.save.dirty {
            return;
        }
        if force || self.save.take(Instant::now()) {
            save_history(settings, &self.history);
            self.save.dirty = false;
        }
    }
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
                via_proxy: plan.active_proxy().is_some(),
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
        if !report.recent.is_empty() {
            st.touched();
        }
        report
    }
}

fn lock(m: &Mutex<CanaryState>) -> std::sync::MutexGuard<'_, CanaryState> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Loads the saved history (an unreadable or corrupt file starts a new one, logged).
pub fn load_history(file: Option<&PathBuf>) -> History {
    let Some(path) = file else {
        return History::new();
    };
    let mut h = match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            tracing::warn!(file = %path.display(), "canary history unreadable, starting a new one: {e}");
            History::new()
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => History::new(),
        Err(e) => {
            tracing::warn!(file = %path.display(), "cannot read the canary history: {e}");
            History::new()
        }
    };
    h.ensure_id();
    h
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

/// Runs sessions until `stop` turns true: connect (with back-off), hold, record
/// each disconnect, reconnect. The history is saved last, whatever stopped it.
pub async fn run(
    plan: Arc<CheckPlan>,
    settings: SessionSettings,
    handle: SessionHandle,
    mut publishes: mpsc::Receiver<PublishRequest>,
    mut stop: watch::Receiver<bool>,
) {
    drive(&plan, &settings, &handle, &mut publishes, &mut stop).await;
    lock(&handle.state).flush(&settings, true);
}

/// Waits `wait` (saving the history when due); false if the agent stops first.
async fn pause(
    wait: Duration,
    settings: &SessionSettings,
    handle: &SessionHandle,
    stop: &mut watch::Receiver<bool>,
    flush: &mut tokio::time::Interval,
) -> bool {
    let until = Instant::now() + wait;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(until) => return true,
            _ = stop.changed() => return false,
            _ = flush.tick() => lock(&handle.state).flush(settings, false),
        }
    }
}

async fn drive(
    plan: &CheckPlan,
    settings: &SessionSettings,
    handle: &SessionHandle,
    publishes: &mut mpsc::Receiver<PublishRequest>,
    stop: &mut watch::Receiver<bool>,
) {
    let identity = settings.identity.clone();
    let mut reconnects = Reconnects::new(
        settings.reconnect_min,
        settings.reconnect_max,
        settings.stable_after,
    );
    // Set when this run recorded a disconnect that is not yet followed by a session.
    let mut down_since: Option<Instant> = None;
    let mut failures: u32 = 0;
    let mut flush = tokio::time::interval(HISTORY_SAVE_GAP);
    flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
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
            r = connect(plan, settings) => r,
            _ = stop.changed() => return,
        };
        let (link, buf) = match attempt {
            Ok(parts) => parts,
            Err(why) => {
                drop(guard);
                failures += 1;
                let class = why.class.id();
                {
                    let mut st = lock(&handle.state);
                    st.connect_failures = failures;
                    st.connect_error = Some(why.to_string());
                    if down_since.is_some() {
                        st.history.attempt_failed(class);
                        st.touched();
                    }
                }
                let wait = reconnects.attempt_failed(random_unit());
                tracing::info!(
                    endpoint = %settings.endpoint.name,
                    "canary: connect failed: {why}; next attempt in {}",
                    humantime::format_duration(round_ms(wait))
                );
                if !pause(wait, settings, handle, stop, &mut flush).await {
                    return;
                }
                continue;
            }
        };
        let since = SystemTime::now();
        let started = Instant::now();
        {
            let mut st = lock(&handle.state);
            match down_since.take() {
                Some(t) => st.history.reconnected(t.elapsed().as_secs_f64()),
                None => st.history.sessions_total += 1,
            }
            st.connected_since = Some(since);
            st.connect_failures = 0;
            st.connect_error = None;
            st.changed(settings);
        }
        failures = 0;
        if let Some(share) = &identity {
            share.set_live_canary(Some(settings.endpoint.name.clone()));
        }
        tracing::info!(endpoint = %settings.endpoint.name, "canary: session up");

        let ended = hold(
            plan,
            settings,
            handle,
            (link, buf),
            publishes,
            stop,
            &mut flush,
        )
        .await;
        if let Some(share) = &identity {
            share.set_live_canary(None);
        }
        drop(guard);
        let d = {
            let mut st = lock(&handle.state);
            st.connected_since = None;
            let Ended::Disconnect(d) = ended else {
                return;
            };
            let now = SystemTime::now();
            let event = DisconnectEvent {
                id: String::new(),
                at: crate::model::rfc3339(now),
                at_unix_ms: now
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_millis() as u64,
                session_lived_s: started.elapsed().as_secs_f64(),
                idle_before_s: d.idle_before.as_secs_f64(),
                longest_idle_survived_s: Some(d.longest_idle_survived.as_secs_f64()),
                cause: d.cause,
                reason_code: d.reason_code,
                detail: d.detail.clone(),
                reconnect_s: None,
                failed_attempts: 0,
                last_attempt_class: None,
            };
            st.history.record(event, settings.history_keep);
            st.changed(settings);
            d
        };
        down_since = Some(Instant::now());
        let lived = started.elapsed();
        let wait = reconnects.session_ended(lived, d.cause, random_unit());
        tracing::info!(
            endpoint = %settings.endpoint.name,
            cause = d.cause.as_str(),
            "canary: disconnected after {}: {}{}",
            humantime::format_duration(round_ms(lived)),
            d.detail,
            if wait.is_zero() {
                String::new()
            } else {
                format!("; reconnecting in {}", humantime::format_duration(round_ms(wait)))
            }
        );
        if reconnects.streak() > 1 && lived < settings.stable_after {
            tracing::warn!(
                endpoint = %settings.endpoint.name,
                "canary: {} sessions or attempts in a row failed or ended within {}: backing off",
                reconnects.streak(),
                humantime::format_duration(settings.stable_after)
            );
        }
        if !pause(wait, settings, handle, stop, &mut flush).await {
            return;
        }
    }
}

fn round_ms(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis() as u64)
}

/// DNS, transport and CONNECT/CONNACK for one attempt; the error names the phase
/// that failed and its class.
async fn connect(
    plan: &CheckPlan,
    settings: &SessionSettings,
) -> Result<(Link, BytesMut), ChainFailure> {
    let dns = crate::check::resolve_first_hop(plan, plan.timeout).await;
    if dns.addresses.is_empty() {
        return Err(ChainFailure {
            phase: Phase::Dns,
            class: dns.result.class.unwrap_or(FailureClass::DnsError),
            message: dns.result.message.unwrap_or_else(|| "no address".into()),
        });
    }
    open_session(plan, &settings.endpoint, &dns.addresses, settings.keepalive)
        .await
        .map(Session::into_parts)
}

/// Holds one session until it ends: the thin driver of [`SessionMachine`].
async fn hold(
    plan: &CheckPlan,
    settings: &SessionSettings,
    handle: &SessionHandle,
    (mut link, leftover): (Link, BytesMut),
    publishes: &mut mpsc::Receiver<PublishRequest>,
    stop: &mut watch::Receiver<bool>,
    flush: &mut tokio::time::Interval,
) -> Ended {
    let (lifetime, fixed_expiry) = token_timing(plan);
    let cfg = MachineConfig {
        keepalive: settings.keepalive,
        ping_timeout: settings.ping_timeout,
        token_lifetime: lifetime,
        token_expiry_unix: fixed_expiry,
        version: plan.profile.mqtt.version,
    };
    let mut m = SessionMachine::new(cfg, Instant::now());
    m.on_bytes(&leftover, Instant::now());
    let mut waiting: HashMap<u16, oneshot::Sender<Result<(), String>>> = HashMap::new();
    let mut timer = Instant::now() + Duration::from_secs(86_400);
    let mut buf = BytesMut::with_capacity(8192);
    let mut publishes_open = true;
    loop {
        while let Some(action) = m.poll_action() {
            match action {
                Action::Send { bytes, what } => {
                    let limit = match what {
                        Sending::Farewell => Duration::from_secs(2),
                        _ => settings.ping_timeout,
                    };
                    match send(&mut link, &bytes, limit).await {
                        Ok(()) => m.on_write_done(what, Instant::now()),
                        Err(_) if what == Sending::Farewell => {}
                        Err(e) => {
                            let (cause, detail) = classify(&e, what.doing());
                            m.on_error(cause, detail, Instant::now());
                        }
                    }
                }
                Action::ArmTimer(at) => timer = at,
                Action::PublishAcked(id) => {
                    if let Some(done) = waiting.remove(&id) {
                        let _ = done.send(Ok(()));
                    }
                }
                Action::PublishFailed(id, why) => {
                    if let Some(done) = waiting.remove(&id) {
                        let _ = done.send(Err(why));
                    }
                }
                Action::Close => {
                    let _ = tokio::time::timeout(Duration::from_secs(2), link.close()).await;
                }
                Action::End(ended) => {
                    for (_, done) in waiting.drain() {
                        let _ = done.send(Err("the session ended before the PUBACK".into()));
                    }
                    return ended;
                }
            }
        }
        tokio::select! {
            biased;
            _ = stop.changed() => m.stop(),
            r = link.recv(&mut buf) => {
                let now = Instant::now();
                match r {
                    Ok(0) => {
                        let unix = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
                        m.on_eof(now, unix);
                    }
                    Ok(_) => {
                        let data = buf.split();
                        m.on_bytes(&data, now);
                    }
                    Err(e) => {
                        let (cause, detail) = classify(&e, "reading");
                        m.on_error(cause, detail, now);
                    }
                }
            }
            _ = tokio::time::sleep_until(timer) => m.on_timer(Instant::now()),
            req = publishes.recv(), if publishes_open && m.can_publish() => match req {
                // The agent dropped the uploader: keep the session, no more publishes.
                None => publishes_open = false,
                Some(req) => match m.publish(req.topic, req.payload, Instant::now()) {
                    Ok(id) => {
                        waiting.insert(id, req.done);
                    }
                    Err(e) => {
                        let _ = req.done.send(Err(e));
                    }
                },
            },
            _ = flush.tick() => lock(&handle.state).flush(settings, false),
        }
    }
}

async fn send(link: &mut Link, bytes: &[u8], timeout: Duration) -> io::Result<()> {
    match tokio::time::timeout(timeout, link.send(bytes)).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "send timed out")),
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

    #[tokio::test(start_paused = true)]
    async fn history_writes_come_in_a_burst_then_paced() {
        let mut g = SaveGate::default();
        let now = Instant::now();
        let burst = (0..100).filter(|_| g.take(now)).count();
        assert_eq!(burst as u32, HISTORY_SAVE_BURST);
        // Then one per gap, whatever is asked.
        let mut paced = 0;
        for _ in 0..60 {
            tokio::time::advance(Duration::from_secs(1)).await;
            paced += (0..10).filter(|_| g.take(Instant::now())).count();
        }
        assert_eq!(paced as u64, 60 / HISTORY_SAVE_GAP.as_secs());
        // A quiet spell refills the burst.
        tokio::time::advance(HISTORY_SAVE_GAP * 20).await;
        let burst = (0..100).filter(|_| g.take(Instant::now())).count();
        assert_eq!(burst as u32, HISTORY_SAVE_BURST);
    }

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
}

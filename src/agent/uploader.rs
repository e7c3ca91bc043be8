//! The uploader: reports not yet delivered go out over the canary's MQTT session
//! with QoS 1, oldest first, one at a time, at most `rate` per second; each is
//! marked delivered only after its PUBACK (at-least-once). It runs as a background
//! task beside the checks and, after the last cycle, as a bounded drain.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{watch, Notify};

use super::bill::AgentMeter;
use super::session::SessionHandle;
use super::spool::Spool;
use super::wire::{self, Encoding, WireState};

/// The spool, shared by the main loop (which writes) and the uploader (which
/// delivers); `None` while it cannot be opened.
pub(crate) type SharedSpool = Arc<Mutex<Option<Spool>>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Uploads spooled reports over one session.
pub(crate) struct Uploader {
    handle: SessionHandle,
    spool: SharedSpool,
    topic: String,
    gap: Duration,
    timeout: Duration,
    wire: Option<WireUpload>,
    meter: Option<Arc<AgentMeter>>,
}

/// What a wire report carried in full: chains and sections.
type Sent = (Vec<wire::SentChain>, Vec<wire::SentSection>);

/// How reports go on the wire: compact or as spooled, and their encoding.
#[derive(Clone)]
pub(crate) struct WireUpload {
    /// Compact (chains delivered before as references) or the spooled report as is.
    pub(crate) compact: bool,
    /// The body's encoding.
    pub(crate) encoding: Encoding,
    /// The chains delivered in full, and the file they are kept in.
    pub(crate) state: Arc<Mutex<WireState>>,
    /// The state file (`None`: kept in memory only).
    pub(crate) path: Option<std::path::PathBuf>,
}

impl WireUpload {
    /// The body to publish for a spooled report, and the chains it carries in full.
    fn prepare(&self, spooled: Vec<u8>) -> (Vec<u8>, Sent) {
        let compacted = if self.compact {
            match serde_json::from_slice::<crate::model::Report>(&spooled) {
                Ok(r) => {
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap_or_default()
                        .as_secs();
                    Some((wire::compact(&r, &lock(&self.state), now), now))
                }
                Err(e) => {
                    tracing::warn!(
                        "a spooled report is not readable as a report ({e}); sent as is"
                    );
                    None
                }
            }
        } else {
            None
        };
        let (json, full) = match compacted {
            Some((c, now)) => match serde_json::to_value(&c.report) {
                Ok(mut v) => {
                    let sections = wire::compact_json(&mut v, &lock(&self.state), now);
                    match serde_json::to_vec(&v) {
                        Ok(j) => (j, (c.full, sections)),
                        Err(_) => (spooled, Sent::default()),
                    }
                }
                Err(_) => (spooled, Sent::default()),
            },
            None => (spooled, Sent::default()),
        };
        match wire::encode_bytes(&json, self.encoding) {
            Ok(body) => (body, full),
            Err(e) => {
                tracing::warn!("cannot compress a report ({e}); sent as JSON");
                (json, full)
            }
        }
    }

    /// After the PUBACK: the chains sent in full are known to the hub now.
    fn delivered(&self, full: &Sent) {
        if full.0.is_empty() && full.1.is_empty() {
            return;
        }
        let mut state = lock(&self.state);
        state.delivered(&full.0);
        state.delivered_sections(&full.1);
        if let Some(p) = &self.path {
            if let Err(e) = state.save(p) {
                tracing::warn!(file = %p.display(), "cannot keep the delivered chains (a restart sends them again): {e}");
            }
        }
    }
}

impl Uploader {
    /// An uploader publishing over `handle`'s session to `topic`, at most one
    /// report per `gap`, each publish bounded by `timeout`.
    pub(crate) fn new(
        handle: SessionHandle,
        spool: SharedSpool,
        topic: String,
        gap: Duration,
        timeout: Duration,
    ) -> Uploader {
        Uploader {
            handle,
            spool,
            topic,
            gap,
            timeout,
            wire: None,
            meter: None,
        }
    }

    /// Publishes compact (or encoded) wire reports.
    pub(crate) fn with_wire(mut self, wire: WireUpload) -> Uploader {
        self.wire = Some(wire);
        self
    }

    /// Counts each publish's bytes at the session's socket as uploads.
    pub(crate) fn with_meter(mut self, meter: Arc<AgentMeter>) -> Uploader {
        self.meter = Some(meter);
        self
    }

    /// Uploads until `stop` turns true, woken by `new_report` (or every second).
    async fn run(self, new_report: Arc<Notify>, mut stop: watch::Receiver<bool>) {
        loop {
            if *stop.borrow() {
                return;
            }
            let progressed = self.upload_pending(&mut stop).await;
            if *stop.borrow() {
                return;
            }
            // Wait for a new report, or retry after a while when the session is down.
            let retry = if progressed {
                Duration::from_millis(10)
            } else {
                Duration::from_secs(1)
            };
            tokio::select! {
                _ = new_report.notified() => {}
                _ = tokio::time::sleep(retry) => {}
                _ = stop.changed() => return,
            }
        }
    }

    /// Uploads what is pending; whether anything was delivered and more may follow.
    async fn upload_pending(&self, stop: &mut watch::Receiver<bool>) -> bool {
        if !self.handle.connected() {
            return false;
        }
        let pending = match lock(&self.spool).as_ref().map(Spool::pending) {
            Some(Ok(p)) => p,
            Some(Err(e)) => {
                tracing::error!("cannot list the spool: {e}");
                return false;
            }
            None => return false,
        };
        let mut delivered_any = false;
        for entry in pending.into_iter().take(100) {
            let payload = match std::fs::read(&entry.path) {
                Ok(b) => b,
                // Pruned meanwhile.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    tracing::error!(file = %entry.path.display(), "cannot read a spooled report: {e}");
                    continue;
                }
            };
            let topic = if self.topic.contains("$.ct=") {
                // IoT Hub: the report id as message id, so consumers can drop repeats.
                format!("{}&$.mid={}", self.topic, entry.id)
            } else {
                self.topic.clone()
            };
            let (payload, full) = match &self.wire {
                Some(w) => w.prepare(payload),
                None => (payload, Sent::default()),
            };
            let before = self.meter.as_ref().map(|m| m.session.read());
            // Not interrupted by a stop: a clean stop finishes the publish in flight
            // (bounded by the timeout), so its report is marked delivered, not resent.
            let sent = self.handle.publish(topic, payload, self.timeout).await;
            if let (Some(m), Some(before)) = (&self.meter, before) {
                // The bytes of the PUBLISH and its PUBACK, framing and all.
                let d = m.session.read().since(before);
                m.uploads.add_sent(d.sent);
                m.uploads.add_received(d.received);
            }
            match sent {
                Ok(()) => {
                    if let Some(w) = &self.wire {
                        w.delivered(&full);
                    }
                    if let Some(s) = lock(&self.spool).as_ref() {
                        if let Err(e) = s.mark_delivered(&entry) {
                            tracing::warn!(id = %entry.id, "delivered, but cannot mark it so (it may be sent again): {e}");
                        }
                    }
                    tracing::info!(id = %entry.id, "report uploaded");
                    delivered_any = true;
                }
                Err(e) => {
                    tracing::info!(id = %entry.id, "upload deferred: {e}");
                    return false;
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(self.gap) => {}
                _ = stop.changed() => return false,
            }
        }
        delivered_any
    }
}

/// The background uploader and the way to stop it. There is one at a time: it
/// holds one session's handle, so a new session (reload, tune) means a new one.
pub(crate) struct UploaderTask {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl UploaderTask {
    /// Starts `up` in the background (nothing, without an uploader).
    pub(crate) fn spawn(up: Option<Uploader>, new_report: &Arc<Notify>) -> UploaderTask {
        let (stop, stop_rx) = watch::channel(false);
        let task = match up {
            Some(up) => tokio::spawn(up.run(new_report.clone(), stop_rx)),
            None => tokio::spawn(async {}),
        };
        UploaderTask { stop, task }
    }

    /// Stops it: a publish in flight finishes (bounded by its timeout), waited for
    /// at most 5 s.
    pub(crate) async fn stop(self) {
        let _ = self.stop.send(true);
        if !self.task.is_finished() {
            let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
        }
    }

    /// Stops it and starts `up` in its place.
    pub(crate) async fn restart(
        self,
        up: Option<Uploader>,
        new_report: &Arc<Notify>,
    ) -> UploaderTask {
        self.stop().await;
        UploaderTask::spawn(up, new_report)
    }
}

/// After the last cycle: uploads what is pending, bounded by `timeout`, or until
/// `interrupted` completes (a stop signal).
pub(crate) async fn drain(
    up: Option<Uploader>,
    spool: &SharedSpool,
    timeout: Duration,
    interrupted: impl Future<Output = ()>,
) {
    let Some(up) = up else {
        return;
    };
    let (_tx, mut never) = watch::channel(false);
    let work = async {
        loop {
            let left = lock(spool)
                .as_ref()
                .and_then(|s| s.pending().ok())
                .map(|p| p.len())
                .unwrap_or(0);
            if left == 0 {
                return;
            }
            if !up.upload_pending(&mut never).await {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    tokio::select! {
        _ = work => {}
        _ = tokio::time::sleep(timeout) => {
            tracing::warn!("reports still undelivered after {}; they stay in the spool", humantime::format_duration(timeout));
        }
        _ = interrupted => {}
    }
}

//! The agent's main loop: checks on a jittered schedule (and an optional periodic
//! tune), each report spooled, appended to the NDJSON log, rendered into the
//! Prometheus textfile and handed to the uploader; the canary session runs beside
//! it. SIGTERM/SIGINT stop cleanly (an in-flight check is abandoned and nothing of
//! it is written; a write in progress completes, atomically); SIGHUP reloads the
//! configuration (an invalid file is logged and the old one kept).
//!
//! Nothing here returns an error once the agent runs: a full disk, an unwritable
//! directory or an unreachable hub is a log line, and the agent goes on.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{watch, Notify};

use super::config::{AgentConfig, AgentConfigError, UploadTo};
use super::schedule::{first_delay, next_delay, random_unit};
use super::session::{self, SessionHandle, SessionSettings};
use super::spool::{Ndjson, Retention, Spool};
use crate::check::CheckPlan;
use crate::config::EnvCredentials;
use crate::exit::ExitCode;
use crate::profile::Protocol;
use crate::report::Report;
use crate::tune::run::KeepaliveReport;

/// How the agent was started (the command line over the file).
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// The configuration file.
    pub config: PathBuf,
    /// State directory (canary history; the spool's default parent).
    pub state_dir: PathBuf,
    /// Spool directory override.
    pub spool_dir: Option<PathBuf>,
    /// Interval override.
    pub interval: Option<Duration>,
    /// Spread override.
    pub spread: Option<Duration>,
    /// Textfile override.
    pub textfile: Option<PathBuf>,
    /// Extra labels (over the file's).
    pub labels: Vec<(String, String)>,
    /// One cycle, then drain the uploads and exit with the check's exit code.
    pub once: bool,
    /// Stop after this many checks (then drain the uploads).
    pub cycles: Option<u64>,
    /// How long the final upload drain may take.
    pub drain_timeout: Duration,
}

/// Everything derived from one version of the configuration.
struct Loaded {
    cfg: AgentConfig,
    plan: Arc<CheckPlan>,
    session: Option<SessionSettings>,
    spool_dir: PathBuf,
    textfile: Option<PathBuf>,
}

/// Loads and validates the configuration, applying the command-line overrides.
pub fn load(opts: &AgentOptions) -> Result<AgentConfig, AgentConfigError> {
    let mut cfg = AgentConfig::load(&opts.config)?;
    if let Some(i) = opts.interval {
        cfg.schedule.interval = i;
        if opts.spread.is_none() && cfg.schedule.spread > i / 2 {
            cfg.schedule.spread = i / 2;
        }
    }
    if let Some(s) = opts.spread {
        cfg.schedule.spread = s;
    }
    if let Some(d) = &opts.spool_dir {
        cfg.spool.dir = Some(d.clone());
    }
    if let Some(t) = &opts.textfile {
        cfg.prometheus.textfile = Some(t.clone());
    }
    for (k, v) in &opts.labels {
        cfg.labels.insert(k.clone(), v.clone());
    }
    cfg.validate(&opts.config)?;
    Ok(cfg)
}

fn prepare(
    opts: &AgentOptions,
    cfg: AgentConfig,
    identity: Arc<crate::check::IdentityShare>,
) -> Result<Loaded, AgentConfigError> {
    let mut plan = cfg.plan(&opts.config, EnvCredentials::from_process())?;
    plan.identity_share = Some(identity);
    let wants_session = !opts.once && cfg.canary.enabled || cfg.upload.enabled;
    let session = if wants_session {
        let ep = match &cfg.canary.endpoint {
            Some(name) => plan.endpoints.iter().find(|e| &e.name == name).cloned(),
            None => plan
                .endpoints
                .iter()
                .find(|e| e.protocol == Protocol::Mqtt)
                .cloned(),
        };
        let Some(endpoint) = ep else {
            return Err(AgentConfigError::Invalid {
                path: opts.config.clone(),
                key: "[canary] endpoint".into(),
                message: "the canary and the uploader need an MQTT endpoint among [hub] endpoints"
                    .into(),
            });
        };
        if endpoint.protocol != Protocol::Mqtt {
            return Err(AgentConfigError::Invalid {
                path: opts.config.clone(),
                key: "[canary] endpoint".into(),
                message: format!("{} is not an MQTT endpoint", endpoint.name),
            });
        }
        Some(SessionSettings {
            endpoint,
            keepalive: plan.keep_alive,
            ping_timeout: cfg.canary.ping_timeout,
            reconnect_min: cfg.canary.reconnect_min,
            reconnect_max: cfg.canary.reconnect_max,
            history_keep: cfg.canary.history,
            stable_after: cfg.canary.stable_after,
            history_file: Some(opts.state_dir.join("canary-history.json")),
        })
    } else {
        None
    };
    let spool_dir = cfg
        .spool
        .dir
        .clone()
        .unwrap_or_else(|| opts.state_dir.join("spool"));
    let textfile = cfg.prometheus.textfile.clone();
    Ok(Loaded {
        cfg,
        plan: Arc::new(plan),
        session,
        spool_dir,
        textfile,
    })
}

/// A running session task and the way to stop it.
struct RunningSession {
    handle: SessionHandle,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    settings: SessionSettings,
}

impl RunningSession {
    fn start(
        plan: Arc<CheckPlan>,
        settings: SessionSettings,
        state: Option<Arc<Mutex<session::CanaryState>>>,
    ) -> RunningSession {
        let (mut handle, rx) =
            session::channel(session::load_history(settings.history_file.as_ref()));
        if let Some(state) = state {
            handle.state = state;
        }
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(session::run(
            plan,
            settings.clone(),
            handle.clone(),
            rx,
            stop_rx,
        ));
        RunningSession {
            handle,
            stop,
            task,
            settings,
        }
    }

    /// Closes the session (planned: not a disconnect) and waits for the task.
    async fn shutdown(self) -> Arc<Mutex<session::CanaryState>> {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
        self.handle.state
    }
}

/// Runs the agent until stopped (or for `--once` / `--cycles`). The exit code is
/// the last check's for `--once`, else OK.
pub async fn run(opts: AgentOptions, cfg: AgentConfig) -> Result<ExitCode, AgentConfigError> {
    if let Err(e) = std::fs::create_dir_all(&opts.state_dir) {
        tracing::error!(
            state_dir = %opts.state_dir.display(),
            "cannot create the state directory: {e}; the canary history is not kept"
        );
    }
    let identity = Arc::new(crate::check::IdentityShare::default());
    let mut loaded = prepare(&opts, cfg, identity.clone())?;
    let mut spool = open_spool(&loaded);
    // With --once the session only carries the upload: it starts after the check,
    // which therefore runs its own MQTT phase with the identity.
    let mut session = if opts.once {
        None
    } else {
        loaded
            .session
            .clone()
            .map(|s| RunningSession::start(loaded.plan.clone(), s, None))
    };
    let new_report = Arc::new(Notify::new());
    let (up_stop_tx, up_stop) = watch::channel(false);
    let mut uploader = spawn_uploader(&loaded, &spool, &session, &new_report, up_stop.clone());

    let mut signals = Signals::new();
    let mut cycles_done: u64 = 0;
    let mut last_code = ExitCode::Ok;
    let mut last_keepalive: Option<KeepaliveReport> = None;
    let mut last_tune: Option<Instant> = None;
    let mut delay = if opts.once {
        Duration::ZERO
    } else {
        first_delay(loaded.cfg.schedule.spread, random_unit())
    };
    tracing::info!(
        config = %opts.config.display(),
        host = %loaded.plan.host,
        interval = %humantime::format_duration(loaded.cfg.schedule.interval),
        spool = %loaded.spool_dir.display(),
        "agent started"
    );
    'cycles: loop {
        // Wait for the next check (or a signal).
        let wake = tokio::time::Instant::now() + delay;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(wake) => break,
                sig = signals.next() => match sig {
                    Signal::Stop => break 'cycles,
                    Signal::Reload => {
                        match reload(&opts, &identity, &mut loaded, &mut session, &mut spool).await {
                            Ok(()) => {
                                let _ = up_stop_tx.send(true);
                                let _ = tokio::time::timeout(Duration::from_secs(5), uploader).await;
                                let _ = up_stop_tx.send(false);
                                uploader = spawn_uploader(&loaded, &spool, &session, &new_report, up_stop.clone());
                            }
                            Err(e) => tracing::error!("reload refused, keeping the running configuration: {e}"),
                        }
                    }
                },
            }
        }

        // The check, abandoned (nothing written) if a stop signal comes first.
        let check = crate::check::run(&loaded.plan);
        let mut report = tokio::select! {
            r = check => r,
            sig = signals.next_stop() => { let _ = sig; break 'cycles; }
        };
        if let Some(s) = &session {
            // The upload's session is the canary too: whenever a session runs, the
            // report says how it fares (and a check that left its MQTT phase to it
            // points here).
            if !opts.once {
                report.canary = Some(s.handle.report(&s.settings, &loaded.plan));
            }
        }
        last_code = report.verdict.exit_code();
        emit(&loaded, &spool, &report, last_keepalive.as_ref());
        new_report.notify_one();
        cycles_done += 1;

        // The periodic tune (the canary steps aside: a hub allows one session per identity).
        if let Some(every) = loaded.cfg.schedule.tune_interval {
            if !opts.once && last_tune.is_none_or(|t| t.elapsed() >= every) {
                last_tune = Some(Instant::now());
                let state = match session.take() {
                    Some(s) => Some(s.shutdown().await),
                    None => None,
                };
                let tuned = tokio::select! {
                    r = tune_once(&loaded) => Some(r),
                    _ = signals.next_stop() => None,
                };
                session = loaded
                    .session
                    .clone()
                    .map(|s| RunningSession::start(loaded.plan.clone(), s, state));
                let Some(tuned) = tuned else { break 'cycles };
                if let Some(k) = &tuned.keepalive {
                    last_keepalive = Some(k.clone());
                }
                emit(&loaded, &spool, &tuned, last_keepalive.as_ref());
                new_report.notify_one();
                // The uploader holds the old session's handle: give it the new one.
                let _ = up_stop_tx.send(true);
                let _ = tokio::time::timeout(Duration::from_secs(5), uploader).await;
                let _ = up_stop_tx.send(false);
                uploader = spawn_uploader(&loaded, &spool, &session, &new_report, up_stop.clone());
            }
        }

        if opts.once || opts.cycles.is_some_and(|n| cycles_done >= n) {
            // One uploader at a time: the background one stops, the drain takes over.
            let _ = up_stop_tx.send(true);
            let _ = tokio::time::timeout(Duration::from_secs(5), &mut uploader).await;
            if opts.once {
                session = loaded
                    .session
                    .clone()
                    .map(|s| RunningSession::start(loaded.plan.clone(), s, None));
            }
            drain(&loaded, &spool, &session, opts.drain_timeout, &mut signals).await;
            break;
        }
        delay = next_delay(
            loaded.cfg.schedule.interval,
            loaded.cfg.schedule.spread,
            random_unit(),
        );
    }
    let _ = up_stop_tx.send(true);
    if !uploader.is_finished() {
        let _ = tokio::time::timeout(Duration::from_secs(5), uploader).await;
    }
    if let Some(s) = session {
        s.shutdown().await;
    }
    tracing::info!(checks = cycles_done, "agent stopped");
    Ok(if opts.once { last_code } else { ExitCode::Ok })
}

fn open_spool(loaded: &Loaded) -> Arc<Mutex<Option<Spool>>> {
    let retention = retention(&loaded.cfg);
    let spool = match Spool::open(&loaded.spool_dir, retention) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::error!(
                spool = %loaded.spool_dir.display(),
                "cannot open the spool: {e}; reports are not kept until it can be (retried every cycle)"
            );
            None
        }
    };
    Arc::new(Mutex::new(spool))
}

fn retention(cfg: &AgentConfig) -> Retention {
    Retention {
        max_reports: cfg.spool.max_reports,
        max_age: cfg.spool.max_age,
        max_bytes: cfg.spool.max_bytes,
    }
}

async fn reload(
    opts: &AgentOptions,
    identity: &Arc<crate::check::IdentityShare>,
    loaded: &mut Loaded,
    session: &mut Option<RunningSession>,
    spool: &mut Arc<Mutex<Option<Spool>>>,
) -> Result<(), AgentConfigError> {
    let cfg = load(opts)?;
    let fresh = prepare(opts, cfg, identity.clone())?;
    let state = match session.take() {
        Some(s) => Some(s.shutdown().await),
        None => None,
    };
    *session = fresh
        .session
        .clone()
        .map(|s| RunningSession::start(fresh.plan.clone(), s, state));
    if fresh.spool_dir != loaded.spool_dir {
        *spool = open_spool(&fresh);
    } else if let Some(s) = lock(spool).as_mut() {
        s.set_retention(retention(&fresh.cfg));
    }
    *loaded = fresh;
    tracing::info!(config = %opts.config.display(), "configuration reloaded");
    Ok(())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Writes one report everywhere it goes; every failure is a log line.
fn emit(
    loaded: &Loaded,
    spool: &Arc<Mutex<Option<Spool>>>,
    report: &Report,
    keepalive: Option<&KeepaliveReport>,
) {
    let json = match serde_json::to_string(report) {
        Ok(j) => j,
        Err(e) => {
            tracing::error!("cannot serialize report {}: {e}", report.id);
            return;
        }
    };
    {
        let mut guard = lock(spool);
        if guard.is_none() {
            // Retry a spool that could not be opened (the disk may be back).
            if let Ok(s) = Spool::open(&loaded.spool_dir, retention(&loaded.cfg)) {
                tracing::info!(spool = %loaded.spool_dir.display(), "spool available again");
                *guard = Some(s);
            }
        }
        match guard.as_mut() {
            Some(s) => {
                match s.write(&report.id, json.as_bytes()) {
                    Ok(_) => {
                        tracing::info!(id = %report.id, kind = %report.kind, verdict = report.verdict.label(), "report spooled")
                    }
                    Err(e) => tracing::error!(
                        spool = %s.dir().display(),
                        "cannot write report {} to the spool: {e}; the agent keeps running",
                        report.id
                    ),
                }
                match s.prune(SystemTime::now()) {
                    Ok(p) if p.undelivered > 0 => tracing::warn!(
                        "spool retention removed {} undelivered report(s) (limits: [spool] max_reports / max_age / max_bytes)",
                        p.undelivered
                    ),
                    Ok(_) => {}
                    Err(e) => tracing::error!("spool retention failed: {e}"),
                }
            }
            None => tracing::error!(
                spool = %loaded.spool_dir.display(),
                "spool unavailable: report {} not kept",
                report.id
            ),
        }
    }
    if let Some(path) = &loaded.cfg.ndjson.path {
        let log = Ndjson::new(path, loaded.cfg.ndjson.max_bytes, loaded.cfg.ndjson.keep);
        if let Err(e) = log.append(&json) {
            tracing::error!(file = %path.display(), "cannot append to the NDJSON log: {e}");
        }
    }
    if let Some(path) = &loaded.textfile {
        if report.kind == "check" {
            let text = crate::report::prometheus::render(report, keepalive);
            if let Err(e) = crate::report::prometheus::write_textfile(path, &text) {
                tracing::error!(file = %path.display(), "cannot write the Prometheus textfile: {e}");
            }
        }
    }
}

async fn tune_once(loaded: &Loaded) -> Report {
    use crate::tune::run::{tune, Mode, NoProgress, TuneSettings};
    let settings = TuneSettings {
        mode: Mode::Hub,
        samples: loaded.cfg.schedule.tune_samples,
        sample_interval: Duration::from_secs(1),
        min_idle: Duration::from_secs(5),
        max_idle: loaded.plan.profile.mqtt.keepalive_max,
        max_connections: 1,
        detect_within: None,
        operator_floor: None,
        discovery: false,
    };
    let mut report = tune(&loaded.plan, &settings, &NoProgress).await;
    report.labels = loaded.plan.labels.clone();
    report
}

/// The uploader: oldest undelivered report first, one at a time, each marked
/// delivered only after its PUBACK; rate-limited.
fn spawn_uploader(
    loaded: &Loaded,
    spool: &Arc<Mutex<Option<Spool>>>,
    session: &Option<RunningSession>,
    new_report: &Arc<Notify>,
    stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let (Some(s), true) = (session, loaded.cfg.upload.enabled) else {
        return tokio::spawn(async {});
    };
    let up = Uploader {
        handle: s.handle.clone(),
        spool: spool.clone(),
        topic: upload_topic(loaded),
        gap: Duration::from_secs_f64(1.0 / loaded.cfg.upload.rate),
        timeout: loaded.plan.timeout.max(s.settings.ping_timeout),
    };
    tokio::spawn(up.run(new_report.clone(), stop))
}

/// The topic reports are published to.
fn upload_topic(loaded: &Loaded) -> String {
    let plan = &loaded.plan;
    let device = plan
        .credentials
        .device_id()
        .map(str::to_string)
        .unwrap_or_else(crate::report::hostname);
    match loaded.cfg.upload.to {
        UploadTo::Hub => {
            let base = match plan.credentials.module_id() {
                Some(m) => format!("devices/{device}/modules/{m}/messages/events/"),
                None => format!("devices/{device}/messages/events/"),
            };
            // IoT Hub system and application properties in the topic: JSON, UTF-8,
            // and marks that say this is a hubprobe report.
            format!(
                "{base}$.ct=application%2Fjson&$.ce=utf-8&hubprobe=report&schema=hubprobe.report%2F1"
            )
        }
        UploadTo::Topic => loaded
            .cfg
            .upload
            .topic
            .clone()
            .unwrap_or_default()
            .replace("{device_id}", &device)
            .replace("{host}", &crate::report::hostname()),
    }
}

struct Uploader {
    handle: SessionHandle,
    spool: Arc<Mutex<Option<Spool>>>,
    topic: String,
    gap: Duration,
    timeout: Duration,
}

impl Uploader {
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
            // Not interrupted by a stop: a clean stop finishes the publish in flight
            // (bounded by the timeout), so its report is marked delivered, not resent.
            let sent = self.handle.publish(topic, payload, self.timeout).await;
            match sent {
                Ok(()) => {
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

/// After the last cycle: upload what is pending, bounded by `timeout`.
async fn drain(
    loaded: &Loaded,
    spool: &Arc<Mutex<Option<Spool>>>,
    session: &Option<RunningSession>,
    timeout: Duration,
    signals: &mut Signals,
) {
    let (Some(s), true) = (session, loaded.cfg.upload.enabled) else {
        return;
    };
    let up = Uploader {
        handle: s.handle.clone(),
        spool: spool.clone(),
        topic: upload_topic(loaded),
        gap: Duration::from_secs_f64(1.0 / loaded.cfg.upload.rate),
        timeout: loaded.plan.timeout,
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
        _ = signals.next_stop() => {}
    }
}

enum Signal {
    Stop,
    Reload,
}

struct Signals {
    term: Option<tokio::signal::unix::Signal>,
    int: Option<tokio::signal::unix::Signal>,
    hup: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn new() -> Signals {
        use tokio::signal::unix::{signal, SignalKind};
        Signals {
            term: signal(SignalKind::terminate()).ok(),
            int: signal(SignalKind::interrupt()).ok(),
            hup: signal(SignalKind::hangup()).ok(),
        }
    }

    async fn next(&mut self) -> Signal {
        async fn recv(s: &mut Option<tokio::signal::unix::Signal>) {
            match s {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            _ = recv(&mut self.term) => { tracing::info!("SIGTERM: stopping"); Signal::Stop }
            _ = recv(&mut self.int) => { tracing::info!("SIGINT: stopping"); Signal::Stop }
            _ = recv(&mut self.hup) => { tracing::info!("SIGHUP: reloading the configuration"); Signal::Reload }
        }
    }

    /// The next stop signal (a reload during a check waits for the check).
    async fn next_stop(&mut self) -> Signal {
        loop {
            if let Signal::Stop = self.next().await {
                return Signal::Stop;
            }
            tracing::info!("reload deferred until the running check ends");
        }
    }
}

/// The state directory: `--state-dir` / `HUBPROBE_STATE_DIR`, else systemd's
/// `STATE_DIRECTORY`, else `/var/lib/hubprobe`.
pub fn default_state_dir() -> PathBuf {
    std::env::var_os("STATE_DIRECTORY")
        .map(|v| {
            // systemd may list several, colon-separated: the first is ours.
            let s = v.to_string_lossy().into_owned();
            PathBuf::from(s.split(':').next().unwrap_or("/var/lib/hubprobe"))
        })
        .unwrap_or_else(|| Path::new("/var/lib/hubprobe").to_path_buf())
}

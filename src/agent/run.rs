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

use super::bill::AgentMeter;
use super::config::{AgentConfig, AgentConfigError};
use super::schedule::{first_delay, next_delay, random_unit};
use super::session::{self, SessionHandle, SessionSettings};
use super::signals::{Signal, Signals};
use super::spool::{Ndjson, Retention, Spool};
use super::uploader::{drain, SharedSpool, Uploader, UploaderTask, WireUpload};
use super::wire::WireState;
use crate::check::CheckPlan;
use crate::config::EnvCredentials;
use crate::exit::ExitCode;
use crate::model::Protocol;
use crate::model::Report;
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
    /// The bill's counters and the chains delivered in full (kept across reloads).
    meter: Arc<AgentMeter>,
    wire: Arc<Mutex<WireState>>,
    wire_path: PathBuf,
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
    identity: Arc<crate::agent::identity::IdentityShare>,
) -> Result<Loaded, AgentConfigError> {
    let mut plan = cfg.plan(&opts.config, EnvCredentials::from_process())?;
    plan.identity_share = Some(identity.clone());
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
            identity: Some(identity),
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
    let wire_path = super::wire::state_path(&opts.state_dir);
    Ok(Loaded {
        cfg,
        plan: Arc::new(plan),
        session,
        spool_dir,
        textfile,
        meter: AgentMeter::shared(),
        wire: Arc::new(Mutex::new(WireState::load(&wire_path))),
        wire_path,
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
        meter: &AgentMeter,
    ) -> RunningSession {
        let (mut handle, rx) =
            session::channel(session::load_history(settings.history_file.as_ref()));
        if let Some(state) = state {
            handle.state = state;
        }
        let (stop, stop_rx) = watch::channel(false);
        // The session's connections count into the session's tally.
        let task = tokio::spawn(crate::net::meter::scope(
            meter.session.clone(),
            session::run(plan, settings.clone(), handle.clone(), rx, stop_rx),
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
    let identity = Arc::new(crate::agent::identity::IdentityShare::default());
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
            .map(|s| RunningSession::start(loaded.plan.clone(), s, None, &loaded.meter))
    };
    let new_report = Arc::new(Notify::new());
    let mut uploader = UploaderTask::spawn(uploader(&loaded, &spool, &session, false), &new_report);

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
                            // The uploader holds the old session's handle: give it the new one.
                            Ok(()) => uploader = uploader.restart(self::uploader(&loaded, &spool, &session, false), &new_report).await,
                            Err(e) => tracing::error!("reload refused, keeping the running configuration: {e}"),
                        }
                    }
                },
            }
        }

        // The check, abandoned (nothing written) if a stop signal comes first.
        let check =
            crate::net::meter::scope(loaded.meter.checks.clone(), crate::check::run(&loaded.plan));
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
        report.traffic = Some(loaded.meter.report());
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
                    r = crate::net::meter::scope(loaded.meter.tune.clone(), tune_once(&loaded)) => Some(r),
                    _ = signals.next_stop() => None,
                };
                session = loaded
                    .session
                    .clone()
                    .map(|s| RunningSession::start(loaded.plan.clone(), s, state, &loaded.meter));
                let Some(mut tuned) = tuned else {
                    break 'cycles;
                };
                // Its own bill: the period since the check report is the tune's.
                tuned.traffic = Some(loaded.meter.report());
                if let Some(k) = &tuned.keepalive {
                    last_keepalive = Some(k.clone());
                }
                emit(&loaded, &spool, &tuned, last_keepalive.as_ref());
                new_report.notify_one();
                // The uploader holds the old session's handle: give it the new one.
                uploader = uploader
                    .restart(
                        self::uploader(&loaded, &spool, &session, false),
                        &new_report,
                    )
                    .await;
            }
        }

        if opts.once || opts.cycles.is_some_and(|n| cycles_done >= n) {
            // One uploader at a time: the background one stops (an idle one stands in
            // for it until the end), the drain takes over.
            std::mem::replace(&mut uploader, UploaderTask::spawn(None, &new_report))
                .stop()
                .await;
            if opts.once {
                session = loaded
                    .session
                    .clone()
                    .map(|s| RunningSession::start(loaded.plan.clone(), s, None, &loaded.meter));
            }
            let stop = async {
                signals.next_stop().await;
            };
            drain(
                self::uploader(&loaded, &spool, &session, true),
                &spool,
                opts.drain_timeout,
                stop,
            )
            .await;
            break;
        }
        delay = next_delay(
            loaded.cfg.schedule.interval,
            loaded.cfg.schedule.spread,
            random_unit(),
        );
    }
    uploader.stop().await;
    if let Some(s) = session {
        s.shutdown().await;
    }
    tracing::info!(checks = cycles_done, "agent stopped");
    Ok(if opts.once { last_code } else { ExitCode::Ok })
}

/// The uploader for this configuration and session (none when uploads are off or
/// no session runs). The drain's publishes wait the phase timeout only.
fn uploader(
    loaded: &Loaded,
    spool: &SharedSpool,
    session: &Option<RunningSession>,
    drain: bool,
) -> Option<Uploader> {
    let (Some(s), true) = (session, loaded.cfg.upload.enabled) else {
        return None;
    };
    let timeout = if drain {
        loaded.plan.timeout
    } else {
        loaded.plan.timeout.max(s.settings.ping_timeout)
    };
    Some(
        Uploader::new(
            s.handle.clone(),
            spool.clone(),
            loaded.cfg.upload.topic(&loaded.plan),
            Duration::from_secs_f64(1.0 / loaded.cfg.upload.rate),
            timeout,
        )
        .with_wire(WireUpload {
            compact: loaded.cfg.upload.compact,
            encoding: loaded.cfg.upload.encoding,
            state: loaded.wire.clone(),
            path: Some(loaded.wire_path.clone()),
        })
        .with_meter(loaded.meter.clone()),
    )
}

fn open_spool(loaded: &Loaded) -> SharedSpool {
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
    identity: &Arc<crate::agent::identity::IdentityShare>,
    loaded: &mut Loaded,
    session: &mut Option<RunningSession>,
    spool: &mut SharedSpool,
) -> Result<(), AgentConfigError> {
    let cfg = load(opts)?;
    let mut fresh = prepare(opts, cfg, identity.clone())?;
    // The bill and the delivered chains go on across a reload.
    fresh.meter = loaded.meter.clone();
    fresh.wire = loaded.wire.clone();
    let state = match session.take() {
        Some(s) => Some(s.shutdown().await),
        None => None,
    };
    *session = fresh
        .session
        .clone()
        .map(|s| RunningSession::start(fresh.plan.clone(), s, state, &fresh.meter));
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
    spool: &SharedSpool,
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

//! The tuner's thin async driver: it feeds the pure parts (statistics, discovery
//! state machines, recommendation) with measurements from the network and turns the
//! outcome into a report (`kind: "tune"`, with a `keepalive` section).
//!
//! Order of work: a check of the MQTT endpoint used (so a broken path is classified
//! like any check), RTT samples at Poisson-distributed times, idle-timeout discovery
//! (reflector ladder, or hub-only search one session at a time), recommendation.

pub use crate::model::keepalive::KeepaliveReport;

use std::time::{Duration, SystemTime};

use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use tokio::time::Instant;

use crate::check::{self, CheckPlan};
use crate::diagnose;
use crate::model::Phase;
use crate::model::Protocol;
use crate::model::{FailureClass, Finding, Severity};
use crate::model::{Report, Verdict};
use crate::net::ChainFailure;
use crate::probe::mqtt::Session;
use crate::profile::Endpoint;
use crate::report;
use crate::tune::discovery::{
    Discovery, HubSearch, HubSearchConfig, Ladder, LadderConfig, LadderDecision,
};
use crate::tune::recommend::{self, IdleBounds, Inputs, LinkStats};
use crate::tune::reflector::{probe_idle, EchoSession, ReflectorTarget};
use crate::tune::stats::{self, Sample, StabilityConfig};
use crate::tune::IdleOutcome;

/// How the tuner measures.
#[derive(Debug, Clone)]
pub enum Mode {
    /// Through a `hubprobe reflect` server: RTT echoes and the parallel ladder.
    Reflector {
        /// Where it is.
        target: ReflectorTarget,
        /// As the user named it (for the report).
        name: String,
    },
    /// Through the hub itself: MQTT PINGREQ samples and one idle session at a time.
    Hub,
}

/// What to measure and how long to try.
#[derive(Debug, Clone)]
pub struct TuneSettings {
    /// Reflector or hub-only.
    pub mode: Mode,
    /// RTT samples to take.
    pub samples: u32,
    /// Mean time between samples (exponential gaps: Poisson sampling, RFC 2330).
    pub sample_interval: Duration,
    /// Shortest idle time tried.
    pub min_idle: Duration,
    /// Longest idle time tried.
    pub max_idle: Duration,
    /// Most reflector connections at once.
    pub max_connections: usize,
    /// The operator's dead-link detection target.
    pub detect_within: Option<Duration>,
    /// The operator's shortest allowed keep-alive.
    pub operator_floor: Option<Duration>,
    /// Run idle-timeout discovery (else: stability only).
    pub discovery: bool,
}

/// Receives progress; the binary draws a bar on a terminal, tests ignore it.
pub trait Progress {
    /// `stage` is "check", "sampling" or "discovery"; `done`/`total` in the stage's units.
    fn update(&self, stage: &str, done: u64, total: u64, note: &str);
}

/// Progress that goes nowhere.
pub struct NoProgress;

impl Progress for NoProgress {
    fn update(&self, _: &str, _: u64, _: u64, _: &str) {}
}

/// Gaps between samples with mean `mean`: exponential, from a small xorshift
/// generator (seeded from the OS), so the schedule cannot lock onto a periodic
/// pattern of the network (Poisson sampling).
pub struct PoissonGaps {
    state: u64,
    mean: Duration,
}

impl PoissonGaps {
    /// A schedule with mean gap `mean`; `seed` 0 picks one from the OS.
    pub fn new(mean: Duration, seed: u64) -> Self {
        let mut state = seed;
        if state == 0 {
            let mut b = [0u8; 8];
            let _ = getrandom::fill(&mut b);
            state = u64::from_le_bytes(b) | 1;
        }
        PoissonGaps { state, mean }
    }

    /// The next gap.
    pub fn next_gap(&mut self) -> Duration {
        // xorshift64*
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        let x = self.state.wrapping_mul(0x2545_F491_4F6C_DD1D);
        let u = ((x >> 11) as f64 + 0.5) / (1u64 << 53) as f64; // (0, 1)
        self.mean.mul_f64(-u.ln()).min(self.mean * 10)
    }
}

/// The MQTT endpoint the tuner works with: the first MQTT endpoint of the plan.
pub fn mqtt_endpoint(plan: &CheckPlan) -> Option<&Endpoint> {
    plan.endpoints.iter().find(|e| e.protocol == Protocol::Mqtt)
}

/// Runs the tuner and builds its report. Never fails: failures are data.
pub async fn tune(plan: &CheckPlan, settings: &TuneSettings, progress: &dyn Progress) -> Report {
    let started = SystemTime::now();
    let clock = Instant::now();
    let mut findings: Vec<Finding> = Vec::new();

    // 1. A check of the endpoint: is the hub reachable at all, and how.
    progress.update("check", 0, 1, "checking the hub");
    let mut check_plan_endpoints = plan.endpoints.clone();
    check_plan_endpoints.retain(|e| e.protocol == Protocol::Mqtt);
    check_plan_endpoints.truncate(1);
    let endpoint = check_plan_endpoints.first().cloned();
    let check_report = match &endpoint {
        Some(_) => {
            let sub = CheckPlan {
                endpoints: check_plan_endpoints,
                pings: 0,
                deadline: plan.timeout * 6,
                ..plan.clone()
            };
            Some(check::run(&sub).await)
        }
        None => None,
    };
    progress.update("check", 1, 1, "");

    let mut report = match check_report {
        Some(r) => r,
        None => {
            let mut r = check::run(&CheckPlan {
                endpoints: vec![],
                ..plan.clone()
            })
            .await;
            r.verdict = Verdict::Unknown;
            r
        }
    };
    report.kind = "tune".into();
    report.id = report::new_id();
    report.started_at = report::rfc3339(started);
    let hub_ok = report
        .endpoints
        .first()
        .is_some_and(|e| e.failed_phase().is_none());
    let endpoint_name = endpoint
        .as_ref()
        .map(|e| e.name.clone())
        .unwrap_or_default();

    let hub_needed = matches!(settings.mode, Mode::Hub);
    if endpoint.is_none() || (hub_needed && !hub_ok) {
        // Without the hub there is nothing to measure in hub-only mode.
        findings.push(Finding {
            code: "tune_not_possible".into(),
            severity: Severity::Critical,
            class: None,
            endpoints: vec![endpoint_name.clone()],
            summary: if endpoint.is_none() {
                "the profile has no MQTT endpoint to tune".into()
            } else {
                "the hub's MQTT endpoint does not work, so hub-only tuning cannot measure (see the check above)".into()
            },
            hint: "fix what the check reports first, or tune through a reflector (--reflector)".into(),
            iothub_error: None,
        });
        report.findings.extend(findings);
        report.verdict = Verdict::Critical;
        return finish(report, clock);
    }
    let endpoint = endpoint.expect("checked above");

    // 2. Stability sampling.
    let addresses = resolve(plan).await;
    let samples = sample(plan, settings, &endpoint, &addresses, progress).await;
    let stability = stats::summarize(&samples, &StabilityConfig::default());

    // 3. Idle-timeout discovery.
    let link = LinkStats::from_stability(&stability);
    let grace = recommend::pingresp_timeout(Some(&link))
        .clamp(Duration::from_secs(2), Duration::from_secs(10));
    let (discovery, discovery_ms) = if settings.discovery {
        let t0 = Instant::now();
        let d = match &settings.mode {
            Mode::Reflector { target, .. } => {
                ladder(target, settings, grace, plan.timeout, progress).await
            }
            Mode::Hub => hub_search(plan, settings, &endpoint, &addresses, grace, progress).await,
        };
        (Some(d), Some(crate::model::ms(t0.elapsed())))
    } else {
        (None, None)
    };

    // 4. The recommendation. An MQTT 5 broker states its Server Keep Alive in CONNACK.
    let server_keep_alive = match &settings.mode {
        Mode::Hub if plan.profile.mqtt.version == crate::model::MqttVersion::V5 => {
            server_keep_alive(plan, &endpoint, &addresses).await
        }
        _ => None,
    };
    let inputs = Inputs {
        idle_timeout: discovery.as_ref().and_then(IdleBounds::from_discovery),
        stability: (stability.samples > 0).then_some(link),
        keepalive_min: plan.profile.mqtt.keepalive_min,
        keepalive_max: plan.profile.mqtt.keepalive_max,
        detect_within: settings.detect_within,
        operator_floor: settings.operator_floor,
        tls: endpoint.transport.uses_tls(),
        server_keep_alive,
    };
    let recommendation = recommend::recommend(&inputs);

    if discovery.as_ref().is_some_and(|d| d.inconsistent) {
        findings.push(Finding {
            code: "path_nondeterministic".into(),
            severity: Severity::Warning,
            class: None,
            endpoints: vec![endpoint_name.clone()],
            summary: "a longer idle flow survived after a shorter one was dropped: the path's idle timeout is not deterministic (load-dependent NAT, several paths)".into(),
            hint: "treat the recommendation as a lower-confidence estimate; repeat the measurement at other times of day".into(),
            iothub_error: None,
        });
    }
    for conflict in &recommendation.conflicts {
        findings.push(Finding {
            code: "keepalive_conflict".into(),
            severity: Severity::Warning,
            class: None,
            endpoints: vec![endpoint_name.clone()],
            summary: conflict.clone(),
            hint: "the operator rule and the path disagree: expect silent drops (404104) unless the path's idle timeout can be raised".into(),
            iothub_error: Some("404104 DeviceConnectionClosedRemotely (cause 2: NAT/keep-alive)".into()),
        });
    }
    if stability.samples > 0 && stability.answered == 0 {
        findings.push(Finding {
            code: "no_rtt_samples".into(),
            severity: Severity::Critical,
            class: Some(FailureClass::MqttTimeout),
            endpoints: vec![endpoint_name.clone()],
            summary: "no RTT sample was answered".into(),
            hint: "the path lost every probe; the recommendation rests on defaults".into(),
            iothub_error: None,
        });
    }

    report.keepalive = Some(KeepaliveReport {
        mode: match settings.mode {
            Mode::Reflector { .. } => "reflector".into(),
            Mode::Hub => "hub".into(),
        },
        reflector: match &settings.mode {
            Mode::Reflector { name, .. } => Some(name.clone()),
            Mode::Hub => None,
        },
        endpoint: endpoint_name,
        sample_interval_ms: settings.sample_interval.as_millis() as u64,
        stability,
        discovery,
        discovery_ms,
        recommendation,
    });
    report.findings.extend(findings);
    report.verdict = diagnose::verdict(&report.endpoints, &report.findings);
    if !hub_ok && report.verdict < Verdict::Warning {
        report.verdict = Verdict::Warning;
    }
    finish(report, clock)
}

fn finish(mut report: Report, clock: Instant) -> Report {
    report.finished_at = report::rfc3339(SystemTime::now());
    report.duration_ms = crate::model::ms(clock.elapsed());
    report
}

async fn resolve(plan: &CheckPlan) -> Vec<std::net::IpAddr> {
    check::resolve_first_hop(plan, plan.timeout).await.addresses
}

/// RTT samples at Poisson times over one connection (reopened after a loss, so a
/// late answer is never mistaken for the next one's).
async fn sample(
    plan: &CheckPlan,
    settings: &TuneSettings,
    endpoint: &Endpoint,
    addresses: &[std::net::IpAddr],
    progress: &dyn Progress,
) -> Vec<Sample> {
    enum Conn {
        Echo(EchoSession),
        Mqtt(Session),
    }
    let per_sample = plan.timeout.min(Duration::from_secs(5));
    let start = Instant::now();
    let mut gaps = PoissonGaps::new(settings.sample_interval, 0);
    let mut conn: Option<Conn> = None;
    let mut last_activity = Instant::now();
    let mut out = Vec::with_capacity(settings.samples as usize);
    let mut next_at = Instant::now();
    for i in 0..settings.samples {
        progress.update("sampling", i as u64, settings.samples as u64, "RTT samples");
        tokio::time::sleep_until(next_at).await;
        next_at = Instant::now() + gaps.next_gap();
        if conn.is_none() {
            conn = match &settings.mode {
                Mode::Reflector { target, .. } => EchoSession::open(target, plan.timeout)
                    .await
                    .ok()
                    .map(Conn::Echo),
                Mode::Hub => {
                    open_session(plan, endpoint, addresses, plan.profile.mqtt.keepalive_max)
                        .await
                        .ok()
                        .map(Conn::Mqtt)
                }
            };
            last_activity = Instant::now();
        }
        let at_ms = crate::model::ms(start.elapsed());
        let idle_before_ms = crate::model::ms(last_activity.elapsed());
        let rtt = match conn.as_mut() {
            None => None,
            Some(Conn::Echo(s)) => s.echo(per_sample).await,
            Some(Conn::Mqtt(s)) => s.ping(per_sample).await.ok(),
        };
        last_activity = Instant::now();
        if rtt.is_none() {
            if let Some(Conn::Mqtt(s)) = conn.take() {
                s.close(Duration::from_millis(200)).await;
            }
        }
        out.push(Sample {
            at_ms,
            rtt_ms: rtt.map(crate::model::ms),
            idle_before_ms,
        });
    }
    if let Some(Conn::Mqtt(s)) = conn {
        s.close(Duration::from_secs(1)).await;
    }
    progress.update(
        "sampling",
        settings.samples as u64,
        settings.samples as u64,
        "",
    );
    out
}

/// The Server Keep Alive of an MQTT 5 broker's CONNACK to a session that asks for
/// the profile's largest keep-alive (`None`: not stated, or no session).
async fn server_keep_alive(
    plan: &CheckPlan,
    endpoint: &Endpoint,
    addresses: &[std::net::IpAddr],
) -> Option<Duration> {
    let s = open_session(plan, endpoint, addresses, plan.profile.mqtt.keepalive_max)
        .await
        .ok()?;
    let ska = s
        .connack_properties()
        .and_then(|p| p.server_keep_alive_s)
        .map(|v| Duration::from_secs(u64::from(v)));
    s.close(plan.timeout).await;
    ska
}

async fn open_session(
    plan: &CheckPlan,
    endpoint: &Endpoint,
    addresses: &[std::net::IpAddr],
    keep_alive: Duration,
) -> Result<Session, ChainFailure> {
    check::open_session(plan, endpoint, addresses, keep_alive).await
}

/// Reflector mode: the ladder's connections all at once, refinements as asked,
/// stopping as soon as the state machine is done (outstanding probes are abandoned).
async fn ladder(
    target: &ReflectorTarget,
    settings: &TuneSettings,
    grace: Duration,
    connect_timeout: Duration,
    progress: &dyn Progress,
) -> Discovery {
    let cfg = LadderConfig {
        min_idle: settings.min_idle,
        max_idle: settings.max_idle,
        max_connections: settings.max_connections,
        ..LadderConfig::default()
    };
    let mut ladder = Ladder::new(cfg);
    let mut running = FuturesUnordered::new();
    let launch = |idle: Duration| async move {
        (idle, probe_idle(target, idle, grace, connect_timeout).await)
    };
    for idle in ladder.round1() {
        running.push(launch(idle));
    }
    let started = Instant::now();
    let expected = settings.max_idle.as_secs().max(1);
    // Bounded: every probe is bounded, and refinements are limited in count by the ladder.
    loop {
        match ladder.decision() {
            LadderDecision::Done(d) => return d,
            LadderDecision::Refine(idles) => {
                for idle in idles {
                    running.push(launch(idle));
                }
            }
            LadderDecision::Wait => {}
        }
        let Some((idle, outcome)) = running.next().await else {
            return ladder.discovery();
        };
        ladder.on_result(idle, outcome);
        let d = ladder.discovery();
        let note = match (d.longest_survived(), d.shortest_failed()) {
            (_, Some(f)) => format!("first drop after {} s idle", f.as_secs()),
            (Some(s), None) => format!("idle {} s survived", s.as_secs()),
            _ => String::new(),
        };
        progress.update(
            "discovery",
            started.elapsed().as_secs().min(expected),
            expected,
            &note,
        );
    }
}

/// Hub-only mode: one MQTT session at a time with the keep-alive at the cap; stay
/// idle, send PINGREQ, see whether PINGRESP comes back.
async fn hub_search(
    plan: &CheckPlan,
    settings: &TuneSettings,
    endpoint: &Endpoint,
    addresses: &[std::net::IpAddr],
    grace: Duration,
    progress: &dyn Progress,
) -> Discovery {
    let cfg = HubSearchConfig {
        min_idle: settings.min_idle,
        max_idle: settings.max_idle,
        ..HubSearchConfig::default()
    };
    let mut search = HubSearch::new(cfg);
    // The hub must not end the session itself while it idles: announce the cap
    // (IoT Hub allows 1.5 × keep-alive of silence).
    let keep_alive = plan.profile.mqtt.keepalive_max.max(settings.max_idle);
    let started = Instant::now();
    while let Some(idle) = search.next_probe() {
        progress.update(
            "discovery",
            started.elapsed().as_secs(),
            started.elapsed().as_secs() + idle.as_secs(),
            &format!("one session idle for {} s", idle.as_secs()),
        );
        let outcome = match open_session(plan, endpoint, addresses, keep_alive).await {
            Err(e) => IdleOutcome::Error(e.to_string()),
            Ok(mut session) => {
                tokio::time::sleep(idle).await;
                let outcome = match session.ping(grace).await {
                    Ok(_) => IdleOutcome::Survived,
                    Err(f) => match f.class {
                        FailureClass::MqttTimeout => IdleOutcome::SilentDrop,
                        FailureClass::MqttReset => IdleOutcome::Reset,
                        // Through a proxy an in-order close of the idle session is the
                        // proxy ending its tunnel (squid's read_timeout); directly, a
                        // broker closing it is no verdict on the path.
                        FailureClass::MqttClosed if plan.active_proxy().is_some() => {
                            IdleOutcome::Closed
                        }
                        _ => IdleOutcome::Error(format!("{}: {}", f.class, f.message)),
                    },
                };
                session.close(Duration::from_millis(500)).await;
                outcome
            }
        };
        search.on_result(idle, outcome);
    }
    search.result()
}

/// Whether a report's MQTT phase passed (for callers that want to say so).
pub fn mqtt_ok(report: &Report) -> bool {
    report
        .endpoints
        .iter()
        .any(|e| e.phase(Phase::Mqtt).is_some_and(|p| p.is_ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poisson_gaps_have_the_asked_mean_and_are_bounded() {
        let mut g = PoissonGaps::new(Duration::from_millis(1000), 42);
        let n = 20_000;
        let gaps: Vec<f64> = (0..n).map(|_| g.next_gap().as_secs_f64()).collect();
        let mean = gaps.iter().sum::<f64>() / n as f64;
        assert!((mean - 1.0).abs() < 0.05, "mean {mean}");
        assert!(gaps.iter().all(|g| *g > 0.0 && *g <= 10.0));
        // Exponential: about 1/e of the gaps exceed the mean.
        let above = gaps.iter().filter(|g| **g > 1.0).count() as f64 / n as f64;
        assert!((above - (-1.0f64).exp()).abs() < 0.02, "{above}");
    }
}

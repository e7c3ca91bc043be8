//! The keep-alive section of a `tune` report: the link's stability figures, the
//! idle-timeout discovery and the recommendation, as the tuner's pure cores
//! compute them (their logic lives in `tune/`; the shapes live here).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One probe: when it was sent, what came back and how long the connection had been
/// idle before it. Why: the time drives loss bursts and outages, the idle time
/// sorts the sample into the warm or the cold group.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Send time, milliseconds since the start of the measurement.
    pub at_ms: f64,
    /// Round-trip time in milliseconds; `None` when no answer came back (lost).
    pub rtt_ms: Option<f64>,
    /// How long the connection was idle before this probe, milliseconds.
    pub idle_before_ms: f64,
}

/// How to read the samples. Why: what counts as "cold" or as an "outage" depends on
/// the schedule of the measurement, and the RTO floor differs between RFC 6298 and
/// real stacks.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StabilityConfig {
    /// A sample taken after at least this much idle time is "cold".
    pub cold_after_ms: f64,
    /// Consecutive losses spanning at least this long are an outage.
    pub outage_min_ms: f64,
    /// The RTO floor: RFC 6298 (2.4) says 1000 ms; Linux uses 200 ms.
    pub min_rto_ms: f64,
    /// Clock granularity G of RFC 6298 (2.2), milliseconds.
    pub granularity_ms: f64,
}

/// The RFC 6298 estimator state after the last sample. Why: the RTO is how long one
/// lost segment (a PINGREQ) delays things before TCP retransmits it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Rto {
    /// Smoothed round-trip time, milliseconds.
    pub srtt_ms: f64,
    /// Round-trip time variation, milliseconds.
    pub rttvar_ms: f64,
    /// Retransmission timeout, milliseconds (within `[min_rto, 60 s]`).
    pub rto_ms: f64,
}

/// The 50th, 95th and 99th percentiles of a set of values, milliseconds. Why: the
/// tail (p99), not the mean, decides how long to wait for an answer.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    /// Median.
    pub p50_ms: f64,
    /// 95th percentile.
    pub p95_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
}

/// Runs of consecutive lost samples. Why: 2 % loss spread evenly is harmless to MQTT,
/// 2 % in long bursts means the link goes away for a while.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LossBursts {
    /// How many runs of one or more consecutive lost samples.
    pub count: usize,
    /// The longest run, in samples.
    pub longest_samples: usize,
}

/// A period in which nothing got through. Why: an outage longer than the keep-alive is
/// one of the three cause families of IoT Hub's 404104 DeviceConnectionClosedRemotely.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Outage {
    /// When the link was last known good: the send time of the last answered sample
    /// before the losses (the first lost sample's send time if none was answered
    /// before), milliseconds since the start.
    pub start_ms: f64,
    /// From `start_ms` to the send time of the first answered sample after the losses
    /// (or, when still ongoing, to the send time of the last lost sample), ms.
    pub length_ms: f64,
    /// True when no sample was answered after it: the link was still down at the end.
    pub ongoing: bool,
}

/// Figures of one group of samples (warm or cold). Why: a report shows both groups
/// side by side; the recommendation takes its RTO from the warm group and its
/// PINGRESP timeout from the cold tail.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct GroupStats {
    /// Samples in the group.
    pub samples: usize,
    /// Of them answered.
    pub answered: usize,
    /// Of them lost.
    pub lost: usize,
    /// `lost / samples` (0..=1); absent when the group is empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_rate: Option<f64>,
    /// Smallest round-trip time, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtt_min_ms: Option<f64>,
    /// Mean round-trip time, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtt_mean_ms: Option<f64>,
    /// Largest round-trip time, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtt_max_ms: Option<f64>,
    /// Round-trip time percentiles (nearest rank).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtt_percentiles: Option<Percentiles>,
    /// RFC 5481 packet delay variation percentiles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pdv: Option<Percentiles>,
    /// RFC 6298 estimator over the group's answered samples in send order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rto: Option<Rto>,
    /// RFC 3550 jitter over the group's consecutive answered samples, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter_ms: Option<f64>,
}

/// The whole stability picture of a measurement. Why: the `stability` part of the
/// keep-alive section of the report, and the input of the recommendation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stability {
    /// All samples.
    pub samples: usize,
    /// Of them answered.
    pub answered: usize,
    /// Of them lost.
    pub lost: usize,
    /// `lost / samples` (0..=1); absent when there were no samples.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_rate: Option<f64>,
    /// From the first to the last send time, ms.
    pub span_ms: f64,
    /// Runs of consecutive losses (warm and cold together, in send order).
    pub loss_bursts: LossBursts,
    /// Outages (see [`Outage`]), in time order.
    pub outages: Vec<Outage>,
    /// Samples taken less than `config.cold_after_ms` after the previous traffic.
    pub warm: GroupStats,
    /// Samples taken after at least `config.cold_after_ms` of idle time.
    pub cold: GroupStats,
    /// How the samples were read.
    pub config: StabilityConfig,
}

/// How the path dropped a flow. Why: a silent drop (the NAT forgot the flow) is fixed
/// with a shorter keep-alive; a reset says a middlebox actively cut it; one-way means
/// cloud-to-device traffic breaks while the device can still send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DropKind {
    /// Nothing arrived either way.
    SilentDrop,
    /// A TCP reset came back.
    Reset,
    /// Downstream broke, upstream still works.
    OneWay,
    /// The path closed the idle connection in order (FIN): a proxy's idle timer
    /// (squid `read_timeout`) ends its tunnel so.
    Closed,
}

/// What a discovery found. Why: the `idle_timeout` part of the report's keep-alive
/// section, and the input of the recommendation (see
/// [`crate::tune::recommend::IdleBounds::from_discovery`]).
///
/// The bracket is (longest survived, shortest failed]: the path's idle timeout T is
/// above the first and at most the second.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Discovery {
    /// The longest idle time that survived **below** the shortest failure (so the
    /// lower end of the bracket even on an inconsistent path), ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub longest_survived_ms: Option<u64>,
    /// The shortest idle time after which the flow was gone, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shortest_failed_ms: Option<u64>,
    /// The midpoint of the bracket, ms; absent without both ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimate_ms: Option<u64>,
    /// Relative width of the bracket, (failed − survived) / failed (1.0 when nothing
    /// survived below the failure); absent without a failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precision: Option<f64>,
    /// Set when nothing dropped: every flow survived up to this idle time, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_drop_up_to_ms: Option<u64>,
    /// The kind of most drops (ties go to the kind of the shortest failure).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drop_kind: Option<DropKind>,
    /// Every kind of drop seen.
    pub drop_kinds_seen: Vec<DropKind>,
    /// True when a flow survived an idle time at or above one that failed: the path is
    /// not deterministic (several NATs, load balancing, loss), so the bracket is less
    /// trustworthy.
    pub inconsistent: bool,
    /// How many probes failed for their own reasons (no verdict on the path).
    pub errors: usize,
    /// Every result, sorted by idle time (equal idles in arrival order).
    pub results: Vec<IdleResult>,
    /// Reflector mode: rounds of connections started (1 + refinements). Hub-only
    /// mode: probes run (each one is a round of its own).
    pub rounds: u32,
}

/// How sure the recommendation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Confidence {
    /// Inconsistent path, no idle-timeout measurement, or a lossy/outage-prone link.
    Low,
    /// Some of what "high" needs is missing.
    Medium,
    /// Idle timeout measured with a tight bracket (or no drop up to the cap) on a
    /// consistent path, ≥ 20 stability samples, loss < 1 %, no outage.
    High,
}

/// Which limit a value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LimitKind {
    /// Below the path's idle timeout with room for one retransmission.
    #[serde(rename = "k_nat")]
    Nat,
    /// The conservative cap on a lossy or outage-prone link.
    #[serde(rename = "lossy_link")]
    LossyLink,
    /// Fast enough to notice a dead link within the operator's wish.
    #[serde(rename = "k_detect")]
    Detect,
    /// The profile's largest useful keep-alive.
    #[serde(rename = "k_cap")]
    Cap,
    /// The profile's smallest allowed keep-alive.
    #[serde(rename = "keepalive_min")]
    KeepaliveMin,
    /// The operator's floor.
    #[serde(rename = "operator_floor")]
    OperatorFloor,
    /// The broker's MQTT 5 Server Keep Alive (its CONNACK imposes it).
    #[serde(rename = "server_keep_alive")]
    ServerKeepAlive,
}

/// One limit considered, with its value and why it has that value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limit {
    /// Which limit.
    pub kind: LimitKind,
    /// Its value in whole seconds (upper limits rounded down, floors up).
    pub value_s: u64,
    /// Why, as a sentence.
    pub reason: String,
}

/// The range a device draws its keep-alive from. Why: a fleet that boots together and
/// pings in lockstep hits the hub (and the cell) in waves; a per-device random value
/// in [0.9 K, K] spreads the pings without ever exceeding K.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spread {
    /// Lower end, seconds (never below a floor that applied).
    pub min_s: u64,
    /// Upper end (= the keep-alive), seconds.
    pub max_s: u64,
}

/// The recommendation. Why: the `recommendation` part of the report's keep-alive
/// section and the text summary's last lines.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recommendation {
    /// MQTT keep-alive, whole seconds.
    pub keepalive_s: u64,
    /// How long to wait for a PINGRESP before declaring the connection dead, seconds.
    pub pingresp_timeout_s: u64,
    /// TCP_USER_TIMEOUT, seconds: keep-alive + PINGRESP timeout, so the kernel gives
    /// up on unacknowledged data when MQTT would.
    pub tcp_user_timeout_s: u64,
    /// Per-device random keep-alive range.
    pub spread: Spread,
    /// Bytes on the wire per keep-alive round (see [`bytes_per_round`]).
    pub bytes_per_round: u64,
    /// Bytes per day spent on keep-alives at `keepalive_s`.
    pub bytes_per_day: u64,
    /// How sure this is.
    pub confidence: Confidence,
    /// The limit that decided the keep-alive.
    pub binding: LimitKind,
    /// Every limit considered.
    pub limits: Vec<Limit>,
    /// Plain sentences: why this value; the first names the binding limit.
    pub reasons: Vec<String>,
    /// Conflicts between limits (e.g. a floor above the NAT-safe value).
    pub conflicts: Vec<String>,
}

/// What happened to one connection left idle for a while.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "detail")]
pub enum IdleOutcome {
    /// The byte sent down after the idle period arrived and was echoed: the path kept the flow.
    Survived,
    /// Nothing arrived either way: the path forgot the flow and drops its packets silently.
    SilentDrop,
    /// The path answered with a TCP reset: it forgot the flow and says so.
    Reset,
    /// The byte sent down never arrived, but the client's byte up was answered: the
    /// downstream direction (cloud-to-device) broke while upstream still works.
    OneWay,
    /// The idle connection was closed in order (FIN) from the far side: through a
    /// proxy, the proxy's own idle timer ended the tunnel.
    Closed,
    /// The probe itself failed (could not connect, protocol error): no verdict on the path.
    Error(String),
}

/// One idle probe's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdleResult {
    /// How long the connection was left idle.
    #[serde(rename = "idle_ms", with = "duration_ms")]
    pub idle: Duration,
    /// What happened.
    pub outcome: IdleOutcome,
}

/// The `keepalive` section of a tune report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeepaliveReport {
    /// `reflector` or `hub`.
    pub mode: String,
    /// The reflector as named, in reflector mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reflector: Option<String>,
    /// The hub endpoint the samples (hub mode) and the recommendation are for.
    pub endpoint: String,
    /// Mean sampling interval asked for, milliseconds.
    pub sample_interval_ms: u64,
    /// Stability figures.
    pub stability: Stability,
    /// Idle-timeout discovery, when it ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discovery: Option<Discovery>,
    /// Wall time of the discovery, milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discovery_ms: Option<f64>,
    /// The recommendation.
    pub recommendation: Recommendation,
}

/// serde adapter: a `Duration` as integer milliseconds (`idle_ms` style fields).
pub mod duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Serializes as whole milliseconds.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }

    /// Deserializes from whole milliseconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

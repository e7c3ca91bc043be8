//! The keep-alive recommendation: a pure function from what the tuner measured (the
//! path's idle timeout, the link's stability) and what the operator and the hub
//! allow, to a keep-alive with its PINGRESP timeout, TCP_USER_TIMEOUT, fleet spread,
//! data cost, confidence, and the reasons and conflicts behind it.
//!
//! Why: vendors ship one keep-alive for every network (Node 180 s, Java 230 s, C 240 s,
//! .NET 300 s, Python 60 s). Longer than the path's idle timeout and the connection is
//! silently dropped (IoT Hub logs 404104 DeviceConnectionClosedRemotely); much shorter
//! and it wastes battery and data. This module turns measurements into one number and
//! says which limit decided it.
//!
//! K = min(K_nat, K_lossy, K_detect, K_cap), then raised to the profile minimum and the
//! operator floor (conflicts reported, never hidden). All arithmetic is in seconds.

pub use crate::model::keepalive::{Confidence, Limit, LimitKind, Recommendation, Spread};

use std::time::Duration;

use super::discovery::Discovery;
use super::stats::Stability;

/// K_nat keeps 5 % below the longest idle time that survived (the timeout is somewhere
/// above it; NAT timers are not exact) before subtracting one RTO.
pub const NAT_MARGIN: f64 = 0.95;
/// The RTO assumed when none was measured (RFC 6298's floor).
pub const DEFAULT_RTO: Duration = Duration::from_secs(1);
/// Shortest PINGRESP timeout: below this a cellular radio waking up (RRC promotion,
/// up to ~2 s) would count as a dead link.
pub const PINGRESP_MIN: Duration = Duration::from_secs(2);
/// Longest PINGRESP timeout: beyond this waiting helps nobody, the link is gone.
pub const PINGRESP_MAX: Duration = Duration::from_secs(30);
/// PINGRESP timeout when no round-trip time was measured: several cellular wake-ups
/// plus a retransmission, well inside the clamp.
pub const PINGRESP_DEFAULT: Duration = Duration::from_secs(10);
/// A loss rate at or above this makes a link "lossy".
pub const LOSSY_LOSS_RATE: f64 = 0.02;
/// The keep-alive cap on a lossy or outage-prone link: 2 min keeps a dead connection
/// unnoticed for at most ~2.5 min (K + PINGRESP timeout) and stays below every common
/// NAT timeout (Azure LB 240 s, AWS NLB 350 s), whatever the NAT measurement says.
pub const LOSSY_CAP: Duration = Duration::from_secs(120);
/// MQTT's keep-alive field is a 16-bit number of seconds.
pub const MQTT_KEEPALIVE_MAX_S: u64 = 65_535;
/// Stability samples needed for high confidence.
pub const HIGH_CONFIDENCE_SAMPLES: usize = 20;
/// Loss rate below which the link counts as clean for high confidence.
pub const HIGH_CONFIDENCE_MAX_LOSS: f64 = 0.01;
/// A bracket at most this wide (relative) counts as a tight measurement.
pub const TIGHT_PRECISION: f64 = 0.10;
/// IPv4 (20) + TCP (20) + TCP timestamps option (12) header bytes per segment.
pub const TCP_IP_HEADER_BYTES: u64 = 52;
/// MQTT PINGREQ and PINGRESP are two bytes each (fixed header, zero length).
pub const MQTT_PING_BYTES: u64 = 2;
/// TLS 1.3 record overhead: 5-byte header + 1 inner content type + 16-byte AEAD tag.
pub const TLS13_RECORD_OVERHEAD_BYTES: u64 = 22;

/// What discovery established about the path's idle timeout. Why a type of its own:
/// the recommendation needs only the bounds, and a caller may get them elsewhere
/// (a previous report, a configured known value).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IdleBounds {
    /// The longest idle time known to be safe (survived); zero if none.
    pub lower_ok: Duration,
    /// The shortest idle time after which the flow was gone, if any.
    pub upper_fail: Option<Duration>,
    /// When nothing dropped: every idle time up to this survived.
    pub no_drop_up_to: Option<Duration>,
    /// The path is not deterministic (a longer idle survived a shorter failure).
    pub inconsistent: bool,
}

impl IdleBounds {
    /// The bounds a [`Discovery`] found; `None` when it found nothing (no verdict at
    /// all, e.g. every probe errored).
    pub fn from_discovery(d: &Discovery) -> Option<IdleBounds> {
        match (d.shortest_failed(), d.no_drop_up_to()) {
            (Some(f), _) => Some(IdleBounds {
                lower_ok: d.longest_survived().unwrap_or_default(),
                upper_fail: Some(f),
                no_drop_up_to: None,
                inconsistent: d.inconsistent,
            }),
            (None, Some(x)) => Some(IdleBounds {
                lower_ok: x,
                upper_fail: None,
                no_drop_up_to: Some(x),
                inconsistent: d.inconsistent,
            }),
            (None, None) => None,
        }
    }
}

/// The stability figures the recommendation uses. Why a type of its own: it names
/// exactly what matters (and lets tests state it directly).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LinkStats {
    /// RTO of the warm samples (the cold ones when there are no warm ones).
    pub rto: Option<Duration>,
    /// p99 round-trip time of the cold samples (after idle, like a PINGREQ).
    pub cold_p99_rtt: Option<Duration>,
    /// p99 round-trip time of the warm samples (stands in when no cold ones).
    pub warm_p99_rtt: Option<Duration>,
    /// Fraction of samples lost (0..=1).
    pub loss_rate: f64,
    /// Number of outages.
    pub outages: usize,
    /// The longest outage.
    pub longest_outage: Option<Duration>,
    /// Number of samples.
    pub samples: usize,
}

fn dur_ms(ms: f64) -> Option<Duration> {
    (ms.is_finite() && ms >= 0.0).then(|| Duration::from_secs_f64(ms / 1000.0))
}

impl LinkStats {
    /// The figures of a [`Stability`] summary.
    pub fn from_stability(s: &Stability) -> LinkStats {
        LinkStats {
            rto: s.warm.rto.or(s.cold.rto).and_then(|r| dur_ms(r.rto_ms)),
            cold_p99_rtt: s.cold.rtt_percentiles.and_then(|p| dur_ms(p.p99_ms)),
            warm_p99_rtt: s.warm.rtt_percentiles.and_then(|p| dur_ms(p.p99_ms)),
            loss_rate: s.loss_rate.unwrap_or(0.0),
            outages: s.outages.len(),
            longest_outage: s
                .outages
                .iter()
                .map(|o| o.length_ms)
                .max_by(f64::total_cmp)
                .and_then(dur_ms),
            samples: s.samples,
        }
    }

    /// Whether the link loses packets or goes dark often enough that a long
    /// keep-alive would leave dead connections unnoticed.
    pub fn lossy(&self) -> bool {
        self.loss_rate >= LOSSY_LOSS_RATE || self.outages > 0
    }
}

/// Everything the recommendation depends on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Inputs {
    /// The path's idle timeout, if discovery ran and found anything.
    pub idle_timeout: Option<IdleBounds>,
    /// The link's stability, if it was sampled.
    pub stability: Option<LinkStats>,
    /// The profile's smallest allowed keep-alive (AWS IoT Core: 30 s).
    pub keepalive_min: Option<Duration>,
    /// The profile's cap: 1177 s IoT Hub, 1200 s AWS IoT Core.
    pub keepalive_max: Duration,
    /// The operator wants a dead link noticed within this.
    pub detect_within: Option<Duration>,
    /// The operator's rule for the shortest keep-alive (e.g. a carrier that allows a
    /// ping at most every 5 min).
    pub operator_floor: Option<Duration>,
    /// Whether MQTT runs over TLS (adds record overhead to every ping).
    pub tls: bool,
    /// The broker's MQTT 5 Server Keep Alive, if its CONNACK stated one: a cap, since
    /// the broker drops a session that stays silent longer whatever the device asked.
    pub server_keep_alive: Option<Duration>,
}

impl LimitKind {
    /// How sentences name the limit.
    pub fn label(self) -> &'static str {
        match self {
            LimitKind::Nat => "the NAT-safe limit (K_nat)",
            LimitKind::LossyLink => "the lossy-link cap",
            LimitKind::Detect => "the detection limit (K_detect)",
            LimitKind::Cap => "the profile cap (K_cap)",
            LimitKind::KeepaliveMin => "the profile minimum",
            LimitKind::OperatorFloor => "the operator floor",
            LimitKind::ServerKeepAlive => "the broker's Server Keep Alive",
        }
    }

    fn is_floor(self) -> bool {
        matches!(self, LimitKind::KeepaliveMin | LimitKind::OperatorFloor)
    }
}

/// Bytes on the wire for one keep-alive round: PINGREQ and PINGRESP segments, each
/// `52` TCP/IP header bytes + `2` MQTT bytes (+ `22` TLS 1.3 record bytes with TLS),
/// plus one pure ACK (52 bytes) for each. With TLS: 2·76 + 2·52 = 256 bytes; without:
/// 2·54 + 2·52 = 212 bytes. Link-layer framing and radio wake-ups are not counted
/// (on cellular the energy of a wake-up matters more than the bytes).
pub fn bytes_per_round(tls: bool) -> u64 {
    let tls_overhead = if tls { TLS13_RECORD_OVERHEAD_BYTES } else { 0 };
    let segment = TCP_IP_HEADER_BYTES + MQTT_PING_BYTES + tls_overhead;
    2 * segment + 2 * TCP_IP_HEADER_BYTES
}

/// Bytes per day for keep-alive `k_s` seconds: 86 400 / K rounds × [`bytes_per_round`],
/// rounded to the nearest byte (e.g. K = 210 s with TLS: 411.43 × 256 = 105 326).
pub fn bytes_per_day(k_s: u64, tls: bool) -> u64 {
    (86_400.0 / k_s.max(1) as f64 * bytes_per_round(tls) as f64).round() as u64
}

/// The PINGRESP timeout: clamp(max(2 × cold p99 RTT, RTO), 2 s, 30 s) in whole
/// seconds (rounded up). Why: a PINGREQ after a keep-alive's idle period is a cold
/// probe, so the cold tail sets the wait; twice the p99 leaves room for one
/// unusually slow answer, and the RTO for one retransmission. Without cold samples
/// the warm p99 stands in; without any RTT, 10 s.
pub fn pingresp_timeout(stats: Option<&LinkStats>) -> Duration {
    let rto = stats.and_then(|s| s.rto).unwrap_or(DEFAULT_RTO);
    let base = match stats.and_then(|s| s.cold_p99_rtt.or(s.warm_p99_rtt)) {
        Some(p99) => (p99 * 2).max(rto),
        None => PINGRESP_DEFAULT.max(rto),
    };
    let secs = base.clamp(PINGRESP_MIN, PINGRESP_MAX).as_secs_f64().ceil();
    Duration::from_secs(secs as u64)
}

/// Seconds for a sentence: one decimal below 100 s (short NAT timeouts need it to
/// tell 9.5 from 10.4), whole seconds above.
fn show_s(s: f64) -> String {
    if s < 100.0 {
        format!("{s:.1}")
    } else {
        format!("{s:.0}")
    }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Whole seconds, rounded down, at least 1 (for upper limits).
fn floor_s(x: f64) -> u64 {
    if x.is_finite() {
        (x.floor() as u64).max(1)
    } else {
        1
    }
}

/// Whole seconds, rounded up (for floors).
fn ceil_s(d: Duration) -> u64 {
    (d.as_secs_f64().ceil() as u64).max(1)
}

/// The recommendation for these inputs. See the module docs for the rule; the
/// constants of this module document every number it uses.
pub fn recommend(inputs: &Inputs) -> Recommendation {
    let stats = inputs.stability.as_ref();
    let rto = stats.and_then(|s| s.rto).unwrap_or(DEFAULT_RTO);
    let rto_known = stats.and_then(|s| s.rto).is_some();
    let pingresp = pingresp_timeout(stats);
    let pingresp_s = pingresp.as_secs();

    let mut limits: Vec<Limit> = Vec::new();
    let mut reasons: Vec<String> = Vec::new();
    let mut conflicts: Vec<String> = Vec::new();
    let rto_text = if rto_known {
        format!("one RTO ({:.1} s, measured)", secs(rto))
    } else {
        format!("one RTO ({:.0} s, assumed: not measured)", secs(rto))
    };

    // K_nat.
    let cap_s = floor_s(secs(inputs.keepalive_max)).min(MQTT_KEEPALIVE_MAX_S);
    match inputs.idle_timeout {
        Some(b) => {
            let lower = secs(b.lower_ok);
            let k = floor_s(NAT_MARGIN * lower - secs(rto));
            match b.upper_fail {
                Some(f) => {
                    limits.push(Limit {
                        kind: LimitKind::Nat,
                        value_s: k,
                        reason: format!(
                            "the path dropped a flow left idle for {} s and kept one idle for {} s; \
                             95 % of {} s minus {rto_text} leaves room for a lost PINGREQ to be \
                             retransmitted before the NAT forgets the flow",
                            show_s(secs(f)),
                            show_s(lower),
                            show_s(lower)
                        ),
                    });
                    reasons.push(format!(
                        "The path drops idle flows after {}–{} s{}.",
                        show_s(if lower < 100.0 { lower } else { lower.floor() }),
                        show_s(secs(f)),
                        if b.inconsistent {
                            " (not consistently)"
                        } else {
                            ""
                        }
                    ));
                }
                None => {
                    let x = b.no_drop_up_to.unwrap_or(b.lower_ok);
                    if floor_s(secs(x)) >= cap_s {
                        reasons.push(format!(
                            "No idle drop up to {:.0} s: the path does not limit the keep-alive below the profile cap.",
                            secs(x)
                        ));
                    } else {
                        limits.push(Limit {
                            kind: LimitKind::Nat,
                            value_s: k,
                            reason: format!(
                                "no idle drop up to {:.0} s, but longer idle times were not tried; \
                                 95 % of it minus {rto_text} stays within what was verified",
                                secs(x)
                            ),
                        });
                        reasons.push(format!(
                            "No idle drop up to {:.0} s; longer idle times were not tried.",
                            secs(x)
                        ));
                    }
                }
            }
            if b.inconsistent {
                reasons.push(
                    "The path is not deterministic: a longer idle time survived after a shorter one \
                     dropped (several NATs, load balancing or loss); the bounds use the shortest failure."
                        .to_string(),
                );
            }
        }
        None => reasons.push(
            "The path's idle timeout was not measured, so no NAT limit could be applied."
                .to_string(),
        ),
    }

    // Lossy link: never longer than LOSSY_CAP just because the NAT would allow it.
    if let Some(s) = stats.filter(|s| s.lossy()) {
        let what = if s.outages > 0 {
            format!(
                "{:.1} % loss and {} outage(s){}",
                100.0 * s.loss_rate,
                s.outages,
                s.longest_outage
                    .map(|o| format!(", the longest {:.0} s", secs(o)))
                    .unwrap_or_default()
            )
        } else {
            format!("{:.1} % loss", 100.0 * s.loss_rate)
        };
        limits.push(Limit {
            kind: LimitKind::LossyLink,
            value_s: floor_s(secs(LOSSY_CAP)),
            reason: format!(
                "the link showed {what}; on such a link a long keep-alive leaves dead connections \
                 undetected for long, so the keep-alive is capped at {} s however long the NAT allows",
                LOSSY_CAP.as_secs()
            ),
        });
        reasons.push(format!(
            "The link is lossy ({what}): the keep-alive is not lengthened just because the NAT allows it. \
             IoT Hub logs 404104 DeviceConnectionClosedRemotely when the network drops a connection, \
             and with a long keep-alive such dead connections stay unnoticed for long; at most {} s keeps \
             detection within about {} s.",
            LOSSY_CAP.as_secs(),
            LOSSY_CAP.as_secs() + pingresp_s
        ));
    }

    // K_detect.
    if let Some(d) = inputs.detect_within {
        let k = floor_s(secs(d) - secs(pingresp));
        if d <= pingresp {
            conflicts.push(format!(
                "A dead link cannot be noticed within {:.0} s: the PINGRESP timeout alone is {} s; \
                 the keep-alive is set to the 1 s minimum and detection takes about {} s.",
                secs(d),
                pingresp_s,
                1 + pingresp_s
            ));
        }
        limits.push(Limit {
            kind: LimitKind::Detect,
            value_s: k,
            reason: format!(
                "a dead link is noticed after keep-alive + PINGRESP timeout; to notice it within \
                 {:.0} s the keep-alive is at most {:.0} − {} s",
                secs(d),
                secs(d),
                pingresp_s
            ),
        });
    }

    // K_cap.
    limits.push(Limit {
        kind: LimitKind::Cap,
        value_s: cap_s,
        reason: format!(
            "the profile's largest useful keep-alive is {:.0} s",
            secs(inputs.keepalive_max)
        ),
    });

    // The broker's Server Keep Alive (MQTT 5; 0 means the broker needs no pings).
    if let Some(ska) = inputs.server_keep_alive.filter(|d| !d.is_zero()) {
        limits.push(Limit {
            kind: LimitKind::ServerKeepAlive,
            value_s: floor_s(secs(ska)),
            reason: format!(
                "the broker's MQTT 5 CONNACK states a Server Keep Alive of {:.0} s: it expects a packet at least that often whatever keep-alive the device asks for",
                secs(ska)
            ),
        });
    }

    // K = the smallest upper limit (ties: the first in the order above).
    let (mut binding, mut k) = limits.iter().fold((LimitKind::Cap, u64::MAX), |(b, v), l| {
        if l.value_s < v {
            (l.kind, l.value_s)
        } else {
            (b, v)
        }
    });
    let upper_limits: Vec<Limit> = limits.clone();

    // Floors: the profile minimum, then the operator's floor.
    let mut floor_applied = 0u64;
    for (kind, floor, what) in [
        (
            LimitKind::KeepaliveMin,
            inputs.keepalive_min,
            "the profile's smallest allowed keep-alive",
        ),
        (
            LimitKind::OperatorFloor,
            inputs.operator_floor,
            "the operator's rule for the shortest keep-alive",
        ),
    ] {
        let Some(floor) = floor else { continue };
        let f = ceil_s(floor);
        limits.push(Limit {
            kind,
            value_s: f,
            reason: format!("{what} is {f} s"),
        });
        floor_applied = floor_applied.max(f.min(cap_s));
        if f <= k {
            continue;
        }
        for l in upper_limits.iter().filter(|l| l.value_s < f) {
            conflicts.push(conflict_sentence(kind, f, l, inputs, pingresp_s));
        }
        if f > cap_s {
            k = cap_s;
            binding = LimitKind::Cap;
        } else {
            k = f;
            binding = kind;
        }
    }

    let binding_limit = limits
        .iter()
        .find(|l| l.kind == binding)
        .cloned()
        .unwrap_or_else(|| Limit {
            kind: binding,
            value_s: k,
            reason: String::new(),
        });
    reasons.insert(
        0,
        format!(
            "Keep-alive {k} s is set by {}: {}.",
            binding.label(),
            binding_limit.reason
        ),
    );
    reasons.push(format!(
        "PINGRESP timeout {pingresp_s} s: {}.",
        match stats.and_then(|s| s.cold_p99_rtt.map(|p| ("cold", p)).or(s.warm_p99_rtt.map(|p| ("warm", p)))) {
            Some((group, p99)) => format!(
                "twice the {group} p99 round-trip time ({:.0} ms) or one RTO, whichever is longer, within 2–30 s",
                p99.as_secs_f64() * 1000.0
            ),
            None => "no round-trip time was measured, so a default of 10 s".to_string(),
        }
    ));
    reasons.push(format!(
        "TCP_USER_TIMEOUT {} s = keep-alive + PINGRESP timeout, so the kernel gives up on unacknowledged data when MQTT does.",
        k + pingresp_s
    ));

    let spread_min = ((0.9 * k as f64).ceil() as u64)
        .max(floor_applied)
        .min(k)
        .max(1);
    reasons.push(if spread_min < k {
        format!(
            "Each device should draw its keep-alive at random from {spread_min}–{k} s so a fleet does not ping in lockstep."
        )
    } else {
        format!(
            "No room for a per-device spread below {k} s ({}): devices of a fleet may ping in lockstep.",
            if floor_applied >= k { "a floor applies" } else { "too short to spread in whole seconds" }
        )
    });
    let per_round = bytes_per_round(inputs.tls);
    let per_day = bytes_per_day(k, inputs.tls);
    reasons.push(format!(
        "Keep-alives cost about {per_day} bytes a day ({per_round} bytes per round{}, {:.0} rounds).",
        if inputs.tls { " with TLS 1.3" } else { "" },
        86_400.0 / k as f64
    ));
    // Beside it, what the agent's uploads cost (compact reports at its default
    // interval), so the keep-alive is not tuned for bytes that uploads dwarf.
    let interval = std::time::Duration::from_secs(300);
    let uploads = crate::net::meter::upload_bytes_per_day(
        crate::net::meter::TYPICAL_COMPACT_REPORT,
        interval,
    );
    reasons.push(format!(
        "Uploads cost about {uploads} bytes a day beside that (a compact {} B report every {} with TCP/IP headers, the agent's default; `agent --check-config` says it for a configuration).",
        crate::net::meter::TYPICAL_COMPACT_REPORT,
        humantime::format_duration(interval)
    ));

    let (confidence, why) = confidence(inputs, cap_s);
    reasons.push(format!(
        "Confidence {}: {why}.",
        match confidence {
            Confidence::High => "high",
            Confidence::Medium => "medium",
            Confidence::Low => "low",
        }
    ));

    Recommendation {
        keepalive_s: k,
        pingresp_timeout_s: pingresp_s,
        tcp_user_timeout_s: k + pingresp_s,
        spread: Spread {
            min_s: spread_min,
            max_s: k,
        },
        bytes_per_round: per_round,
        bytes_per_day: per_day,
        confidence,
        binding,
        limits,
        reasons,
        conflicts,
    }
}

/// Says what raising the keep-alive to floor `f` costs with respect to upper limit `l`.
fn conflict_sentence(
    floor: LimitKind,
    f: u64,
    l: &Limit,
    inputs: &Inputs,
    pingresp_s: u64,
) -> String {
    let name = if floor == LimitKind::KeepaliveMin {
        "The profile's minimum keep-alive"
    } else {
        "The operator floor"
    };
    let consequence = match l.kind {
        LimitKind::Nat => {
            let drop = inputs
                .idle_timeout
                .and_then(|b| b.upper_fail.or(b.no_drop_up_to))
                .map(|d| format!("the path drops flows idle for {:.0} s, so ", secs(d)))
                .unwrap_or_default();
            format!(
                "{drop}the connection can be silently dropped between pings (IoT Hub then logs 404104 \
                 DeviceConnectionClosedRemotely)"
            )
        }
        LimitKind::LossyLink => format!(
            "on this lossy link a dead connection may stay unnoticed for up to {} s",
            f + pingresp_s
        ),
        LimitKind::Detect => format!(
            "a dead link is noticed only after up to {} s",
            f + pingresp_s
        ),
        LimitKind::ServerKeepAlive => {
            "the broker would end the session for keep-alive timeout (MQTT 5 DISCONNECT 0x8D); the keep-alive stays at the broker's value and the floor is not met".to_string()
        }
        LimitKind::Cap => {
            "the hub would cut the connection; the keep-alive stays at the cap and the floor is not met"
                .to_string()
        }
        LimitKind::KeepaliveMin | LimitKind::OperatorFloor => String::new(),
    };
    debug_assert!(!l.kind.is_floor());
    format!(
        "{name} of {f} s is above {} of {} s: {consequence}.",
        l.kind.label(),
        l.value_s
    )
}

/// The confidence and the evidence behind it (one clause).
fn confidence(inputs: &Inputs, cap_s: u64) -> (Confidence, String) {
    let b = inputs.idle_timeout;
    let s = inputs.stability;
    let mut missing: Vec<String> = Vec::new();
    let mut low: Vec<String> = Vec::new();
    match b {
        None => low.push("the idle timeout was not measured".into()),
        Some(b) => {
            if b.inconsistent {
                low.push("the path is not deterministic".into());
            }
            let tight = match b.upper_fail {
                Some(f) => {
                    let fs = secs(f);
                    fs > 0.0
                        && !b.lower_ok.is_zero()
                        && (fs - secs(b.lower_ok)) / fs <= TIGHT_PRECISION
                }
                None => b.no_drop_up_to.is_some_and(|x| floor_s(secs(x)) >= cap_s),
            };
            if !tight {
                missing.push("the idle-timeout bracket is wide or stops below the cap".into());
            }
        }
    }
    match s {
        None => missing.push("the link's stability was not sampled".into()),
        Some(s) => {
            if s.lossy() {
                low.push(format!(
                    "the link is lossy or had outages ({:.1} % loss, {} outage(s))",
                    100.0 * s.loss_rate,
                    s.outages
                ));
            } else if s.loss_rate >= HIGH_CONFIDENCE_MAX_LOSS {
                missing.push(format!("{:.1} % loss", 100.0 * s.loss_rate));
            }
            if s.samples < HIGH_CONFIDENCE_SAMPLES {
                missing.push(format!(
                    "only {} stability samples (≥ {HIGH_CONFIDENCE_SAMPLES} wanted)",
                    s.samples
                ));
            }
        }
    }
    if !low.is_empty() {
        low.extend(missing);
        (Confidence::Low, low.join("; "))
    } else if !missing.is_empty() {
        (Confidence::Medium, missing.join("; "))
    } else {
        (
            Confidence::High,
            "idle timeout measured with a tight bracket on a consistent path, enough stability samples, loss under 1 %"
                .into(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tune::{IdleOutcome, IdleResult};

    const SEC: Duration = Duration::from_secs(1);

    fn clean_stats() -> LinkStats {
        LinkStats {
            rto: Some(Duration::from_millis(1000)),
            cold_p99_rtt: Some(Duration::from_millis(1800)),
            warm_p99_rtt: Some(Duration::from_millis(120)),
            loss_rate: 0.0,
            outages: 0,
            longest_outage: None,
            samples: 60,
        }
    }

    fn nat(lower_s: f64, upper_s: u64) -> IdleBounds {
        IdleBounds {
            lower_ok: Duration::from_secs_f64(lower_s),
            upper_fail: Some(Duration::from_secs(upper_s)),
            no_drop_up_to: None,
            inconsistent: false,
        }
    }

    fn no_drop(up_to_s: u64) -> IdleBounds {
        IdleBounds {
            lower_ok: Duration::from_secs(up_to_s),
            upper_fail: None,
            no_drop_up_to: Some(Duration::from_secs(up_to_s)),
            inconsistent: false,
        }
    }

    fn iot_hub(idle: Option<IdleBounds>, stats: Option<LinkStats>) -> Inputs {
        Inputs {
            idle_timeout: idle,
            stability: stats,
            keepalive_min: None,
            keepalive_max: 1177 * SEC,
            detect_within: None,
            operator_floor: None,
            tls: true,
            server_keep_alive: None,
        }
    }

    #[test]
    fn iot_hub_cap_binds_when_no_nat_up_to_cap() {
        let r = recommend(&iot_hub(Some(no_drop(1300)), Some(clean_stats())));
        assert_eq!(r.keepalive_s, 1177);
        assert_eq!(r.binding, LimitKind::Cap);
        assert_eq!(r.confidence, Confidence::High);
        // PINGRESP: max(2 × 1.8 s, 1 s) = 3.6 s → 4 s; TCP_USER_TIMEOUT 1181 s.
        assert_eq!(r.pingresp_timeout_s, 4);
        assert_eq!(r.tcp_user_timeout_s, 1181);
        assert_eq!(
            r.spread,
            Spread {
                min_s: 1060,
                max_s: 1177
            }
        );
        assert!(r.conflicts.is_empty());
        // ... unless detection says otherwise: within 300 s → 300 − 4 = 296 s.
        let mut i = iot_hub(Some(no_drop(1300)), Some(clean_stats()));
        i.detect_within = Some(300 * SEC);
        let r = recommend(&i);
        assert_eq!(r.keepalive_s, 296);
        assert_eq!(r.binding, LimitKind::Detect);
        assert!(r.reasons[0].contains("K_detect"), "{}", r.reasons[0]);
    }

    #[test]
    fn nat_at_240_s_gives_k_below_240_and_at_least_200() {
        // The reflector ladder's bracket around T = 240 s: (228.6 s, 240 s].
        // K_nat = 0.95 × 228.6 − 1 = 216.17 → 216 s.
        let r = recommend(&iot_hub(Some(nat(228.6, 240)), Some(clean_stats())));
        assert_eq!(r.keepalive_s, 216);
        assert!(r.keepalive_s < 240 && r.keepalive_s >= 200);
        assert_eq!(r.binding, LimitKind::Nat);
        assert_eq!(r.confidence, Confidence::High);
        assert!(r.reasons[0].contains("K_nat"), "{}", r.reasons[0]);
        assert!(r.reasons.iter().any(|s| s.contains("228–240 s")));
        // A silent test of the unmeasured RTO: 0.95 × 228.6 − 1 (default) is the same here.
        let r2 = recommend(&iot_hub(Some(nat(228.6, 240)), None));
        assert_eq!(r2.keepalive_s, 216);
        assert_eq!(r2.confidence, Confidence::Medium);
        assert_eq!(r2.pingresp_timeout_s, 10);
    }

    #[test]
    fn loss_never_lengthens() {
        let lossy = LinkStats {
            loss_rate: 0.05,
            ..clean_stats()
        };
        for idle in [
            Some(nat(228.6, 240)),
            Some(no_drop(1300)),
            Some(nat(20.0, 21)),
            None,
        ] {
            let clean = recommend(&iot_hub(idle, Some(clean_stats())));
            let bad = recommend(&iot_hub(idle, Some(lossy)));
            assert!(bad.keepalive_s <= clean.keepalive_s, "{idle:?}");
            assert!(bad.keepalive_s <= 120);
            assert_eq!(bad.confidence, Confidence::Low);
            assert!(bad.reasons.iter().any(|s| s.contains("404104")));
        }
        // With no NAT limit the lossy cap is what binds, and the first reason says so.
        let bad = recommend(&iot_hub(Some(no_drop(1300)), Some(lossy)));
        assert_eq!((bad.keepalive_s, bad.binding), (120, LimitKind::LossyLink));
        assert!(bad.reasons[0].contains("lossy-link cap"));
        // An outage alone (no loss rate to speak of) counts too.
        let outage = LinkStats {
            loss_rate: 0.001,
            outages: 1,
            longest_outage: Some(40 * SEC),
            ..clean_stats()
        };
        let r = recommend(&iot_hub(Some(no_drop(1300)), Some(outage)));
        assert_eq!(r.keepalive_s, 120);
        assert!(r.reasons.iter().any(|s| s.contains("outage")));
    }

    #[test]
    fn operator_floor_conflict_is_reported() {
        let mut i = iot_hub(Some(nat(228.6, 240)), Some(clean_stats()));
        i.operator_floor = Some(300 * SEC);
        let r = recommend(&i);
        assert_eq!(r.keepalive_s, 300);
        assert_eq!(r.binding, LimitKind::OperatorFloor);
        assert_eq!(r.conflicts.len(), 1);
        assert!(r.conflicts[0].contains("300 s") && r.conflicts[0].contains("K_nat"));
        assert!(r.conflicts[0].contains("404104"));
        assert!(r.reasons[0].contains("operator floor"));
        // The spread never goes below the floor.
        assert_eq!(
            r.spread,
            Spread {
                min_s: 300,
                max_s: 300
            }
        );
        assert!(r
            .reasons
            .iter()
            .any(|s| s.contains("No room for a per-device spread")));
        // A floor below K changes nothing and conflicts with nothing.
        i.operator_floor = Some(60 * SEC);
        let r = recommend(&i);
        assert_eq!((r.keepalive_s, r.binding), (216, LimitKind::Nat));
        assert!(r.conflicts.is_empty());
        assert_eq!(r.spread.min_s, 195);
        // A floor above the cap: the cap holds and the conflict says the floor is not met.
        i.operator_floor = Some(2000 * SEC);
        let r = recommend(&i);
        assert_eq!((r.keepalive_s, r.binding), (1177, LimitKind::Cap));
        assert!(r.conflicts.iter().any(|c| c.contains("floor is not met")));
    }

    #[test]
    fn aws_minimum_30_s_respected() {
        // A NAT at 25 s: K_nat = 0.95 × 24 − 1 = 21.8 → 21 s, raised to AWS's 30 s.
        let i = Inputs {
            idle_timeout: Some(nat(24.0, 25)),
            stability: Some(clean_stats()),
            keepalive_min: Some(30 * SEC),
            keepalive_max: 1200 * SEC,
            detect_within: None,
            operator_floor: None,
            tls: true,
            server_keep_alive: None,
        };
        let r = recommend(&i);
        assert_eq!(r.keepalive_s, 30);
        assert_eq!(r.binding, LimitKind::KeepaliveMin);
        assert!(r
            .conflicts
            .iter()
            .any(|c| c.contains("K_nat") && c.contains("30 s")));
        assert_eq!(r.spread.min_s, 30);
        // A tight detection wish is also overruled by the minimum, and said so.
        let i = Inputs {
            idle_timeout: Some(no_drop(1300)),
            detect_within: Some(20 * SEC),
            ..i
        };
        let r = recommend(&i);
        assert_eq!(r.keepalive_s, 30);
        assert!(r.conflicts.iter().any(|c| c.contains("K_detect")));
        // Without such limits AWS's 1200 s cap binds.
        let i = Inputs {
            detect_within: None,
            ..i
        };
        assert_eq!(recommend(&i).keepalive_s, 1200);
    }

    #[test]
    fn a_server_keep_alive_caps_the_recommendation_and_is_named() {
        let i = Inputs {
            server_keep_alive: Some(60 * SEC),
            ..iot_hub(Some(no_drop(1300)), Some(clean_stats()))
        };
        let r = recommend(&i);
        assert_eq!(r.keepalive_s, 60);
        assert_eq!(r.binding, LimitKind::ServerKeepAlive);
        assert!(r.limits.iter().any(|l| l.kind == LimitKind::ServerKeepAlive
            && l.reason.contains("Server Keep Alive of 60 s")));
        // Above the other limits it does not bind; 0 (no keep-alive needed) is no cap.
        for ska in [5000, 0] {
            let i = Inputs {
                server_keep_alive: Some(ska * SEC),
                ..iot_hub(Some(no_drop(1300)), Some(clean_stats()))
            };
            assert_ne!(recommend(&i).binding, LimitKind::ServerKeepAlive);
        }
    }

    #[test]
    fn bytes_per_day_arithmetic() {
        // TLS: PINGREQ 52 + 2 + 22 = 76, PINGRESP 76, two ACKs 2 × 52 = 104 → 256 bytes.
        assert_eq!(bytes_per_round(true), 256);
        // Plain: 54 + 54 + 104 = 212 bytes.
        assert_eq!(bytes_per_round(false), 212);
        // K = 210 s: 86 400 / 210 = 411.43 rounds; × 256 = 105 325.7 → 105 326;
        // × 212 = 87 222.9 → 87 223.
        assert_eq!(bytes_per_day(210, true), 105_326);
        assert_eq!(bytes_per_day(210, false), 87_223);
        // K = 60 s: 1440 rounds × 256 = 368 640.
        assert_eq!(bytes_per_day(60, true), 368_640);
        let mut i = iot_hub(None, None);
        i.keepalive_max = 210 * SEC;
        let r = recommend(&i);
        assert_eq!((r.keepalive_s, r.bytes_per_day), (210, 105_326));
    }

    #[test]
    fn pingresp_timeout_clamps() {
        let s = |cold_ms: u64, rto_ms: u64| LinkStats {
            rto: Some(Duration::from_millis(rto_ms)),
            cold_p99_rtt: Some(Duration::from_millis(cold_ms)),
            ..LinkStats::default()
        };
        assert_eq!(pingresp_timeout(Some(&s(100, 1000))), 2 * SEC); // max(0.2, 1) → 2 s floor
        assert_eq!(pingresp_timeout(Some(&s(5200, 1000))), 11 * SEC); // 10.4 → 11
        assert_eq!(pingresp_timeout(Some(&s(40_000, 1000))), 30 * SEC); // clamp 30
        assert_eq!(pingresp_timeout(Some(&s(100, 4500))), 5 * SEC); // the RTO wins: 4.5 → 5
        assert_eq!(pingresp_timeout(None), 10 * SEC);
    }

    #[test]
    fn confidence_levels() {
        let inconsistent = IdleBounds {
            inconsistent: true,
            ..nat(228.6, 240)
        };
        assert_eq!(
            recommend(&iot_hub(Some(inconsistent), Some(clean_stats()))).confidence,
            Confidence::Low
        );
        assert_eq!(
            recommend(&iot_hub(None, Some(clean_stats()))).confidence,
            Confidence::Low
        );
        let few = LinkStats {
            samples: 10,
            ..clean_stats()
        };
        assert_eq!(
            recommend(&iot_hub(Some(nat(228.6, 240)), Some(few))).confidence,
            Confidence::Medium
        );
        // A wide bracket (hub-only search stopped early): medium.
        assert_eq!(
            recommend(&iot_hub(Some(nat(160.0, 240)), Some(clean_stats()))).confidence,
            Confidence::Medium
        );
        // No drop up to 600 s only: the verified range limits K and confidence is medium.
        let r = recommend(&iot_hub(Some(no_drop(600)), Some(clean_stats())));
        assert_eq!((r.keepalive_s, r.binding), (569, LimitKind::Nat));
        assert_eq!(r.confidence, Confidence::Medium);
    }

    #[test]
    fn detect_within_shorter_than_pingresp_is_a_conflict() {
        let mut i = iot_hub(Some(no_drop(1300)), Some(clean_stats()));
        i.detect_within = Some(3 * SEC);
        let r = recommend(&i);
        assert_eq!(r.keepalive_s, 1);
        assert!(!r.conflicts.is_empty());
    }

    #[test]
    fn from_discovery_and_stability() {
        let d = Discovery::from_results(
            &[
                IdleResult {
                    idle: 228 * SEC,
                    outcome: IdleOutcome::Survived,
                },
                IdleResult {
                    idle: 240 * SEC,
                    outcome: IdleOutcome::SilentDrop,
                },
            ],
            1,
        );
        let b = IdleBounds::from_discovery(&d).unwrap();
        assert_eq!((b.lower_ok, b.upper_fail), (228 * SEC, Some(240 * SEC)));
        let none = Discovery::from_results(
            &[IdleResult {
                idle: SEC,
                outcome: IdleOutcome::Error("x".into()),
            }],
            1,
        );
        assert_eq!(IdleBounds::from_discovery(&none), None);

        use crate::tune::stats::{summarize, Sample, StabilityConfig};
        let samples: Vec<Sample> = (0..30)
            .map(|i| Sample {
                at_ms: i as f64 * 1000.0,
                rtt_ms: Some(if i % 2 == 0 { 80.0 } else { 1500.0 }),
                idle_before_ms: if i % 2 == 0 { 500.0 } else { 20_000.0 },
            })
            .collect();
        let st = summarize(&samples, &StabilityConfig::default());
        let ls = LinkStats::from_stability(&st);
        assert_eq!(ls.samples, 30);
        assert_eq!(ls.cold_p99_rtt, Some(Duration::from_millis(1500)));
        assert_eq!(ls.warm_p99_rtt, Some(Duration::from_millis(80)));
        assert_eq!(ls.rto, Some(SEC)); // warm RTO at the RFC 6298 floor
        let r = recommend(&iot_hub(Some(b), Some(ls)));
        // K_nat = 0.95 × 228 − 1 = 215.6 → 215; PINGRESP = 2 × 1.5 = 3 s.
        assert_eq!((r.keepalive_s, r.pingresp_timeout_s), (215, 3));
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["binding"], "k_nat");
        assert_eq!(json["confidence"], "high");
        assert_eq!(json["spread"]["min_s"], 194);
    }
}

//! What monitoring costs a metered device: the agent's byte counters per purpose
//! (read into every report's `traffic` section and the Prometheus counters), and
//! the estimate `agent --check-config` prints of what a configuration will cost
//! per day.
//!
//! The counters are [`Tally`]s at the socket (`net::meter`): the checks run in the
//! checks' tally, the canary session in the session's, the periodic tune in its
//! own. Uploads share the canary's session; the uploader moves the bytes that passed the session's socket between
//! a PUBLISH and its PUBACK into the uploads' tally, so `canary` is the session's
//! bytes less the uploads' (a keep-alive ping that happens to fall inside a
//! publish's round trip is counted as upload: a few dozen bytes, rarely).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::model::{ByteCount, Protocol, PurposeBytes, TrafficReport, Transport};
use crate::net::meter::{ip_overhead, Bytes, Tally};

/// The agent's counters, shared by the main loop, the session and the uploader.
#[derive(Debug)]
pub struct AgentMeter {
    /// The periodic checks.
    pub checks: Arc<Tally>,
    /// Everything on the canary's session (uploads included).
    pub session: Arc<Tally>,
    /// The uploads' part of the session.
    pub uploads: Arc<Tally>,
    /// The periodic tune.
    pub tune: Arc<Tally>,
    last: Mutex<(Instant, PurposeBytes)>,
}

impl Default for AgentMeter {
    fn default() -> Self {
        AgentMeter {
            checks: Tally::shared(),
            session: Tally::shared(),
            uploads: Tally::shared(),
            tune: Tally::shared(),
            last: Mutex::new((Instant::now(), PurposeBytes::default())),
        }
    }
}

fn count(b: Bytes) -> ByteCount {
    ByteCount {
        sent: b.sent,
        received: b.received,
    }
}

fn minus(a: ByteCount, b: ByteCount) -> ByteCount {
    ByteCount {
        sent: a.sent.saturating_sub(b.sent),
        received: a.received.saturating_sub(b.received),
    }
}

impl AgentMeter {
    /// A new meter at zero.
    pub fn shared() -> Arc<AgentMeter> {
        Arc::new(AgentMeter::default())
    }

    /// The counts since the agent started.
    pub fn totals(&self) -> PurposeBytes {
        let uploads = count(self.uploads.read());
        PurposeBytes {
            checks: count(self.checks.read()),
            canary: minus(count(self.session.read()), uploads),
            uploads,
            tune: count(self.tune.read()),
        }
    }

    /// The `traffic` section of the next report: since the previous one, and
    /// since the start.
    pub fn report(&self) -> TrafficReport {
        let now = self.totals();
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let period_s = (last.0.elapsed().as_millis() as f64 / 1000.0 * 1000.0).round() / 1000.0;
        let period = PurposeBytes {
            checks: minus(now.checks, last.1.checks),
            canary: minus(now.canary, last.1.canary),
            uploads: minus(now.uploads, last.1.uploads),
            tune: minus(now.tune, last.1.tune),
        };
        *last = (Instant::now(), now);
        TrafficReport {
            period_s,
            period,
            since_start: now,
        }
    }
}

/// One line of the estimate: bytes a day at the socket and with TCP/IP headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CostLine {
    /// What it is for.
    pub what: &'static str,
    /// How it was reckoned.
    pub how: String,
    /// Bytes a day through the socket (both directions).
    pub socket_per_day: u64,
    /// The same with an estimate of the TCP/IP headers (what a metered link bills).
    pub wire_per_day: u64,
}

use crate::net::meter::{publish_socket_bytes, TLS_RECORD};

/// Bytes at the socket of one check of an endpoint, both directions, when no
/// measurement is at hand: a TLS 1.3 handshake with a ~4.5 kB server chain (an
/// IoT Hub's: leaf and DigiCert intermediate) is ~6.5 kB; MQTT CONNECT with a SAS
/// token and CONNACK, a PINGREQ round and DISCONNECT ~0.5 kB; a WebSocket upgrade
/// ~0.6 kB; an HTTPS request and answer ~1 kB; the AMQP header exchange 16 bytes.
pub fn check_estimate(protocol: Protocol, transport: Transport) -> u64 {
    let mut b = 0;
    if transport.uses_tls() {
        b += 6_500;
    }
    if transport.uses_websocket() {
        b += 600;
    }
    b + match protocol {
        Protocol::Mqtt => 500,
        Protocol::Http => 1_000,
        Protocol::Amqp => 16,
    }
}

/// What the estimate starts from.
#[derive(Debug, Clone)]
pub struct CostInputs {
    /// Check interval.
    pub interval: Duration,
    /// Endpoints checked, with what one check of each costs at the socket.
    pub checks: Vec<(String, u64)>,
    /// Whether the per-check figures were measured (a previous report's) or
    /// estimated.
    pub checks_measured: bool,
    /// Endpoints a check connects to (the TCP/IP headers go by connections, also
    /// when `checks` holds one measured figure for all of them).
    pub endpoints: u64,
    /// The canary's keep-alive, when the canary runs.
    pub keepalive: Option<Duration>,
    /// Whether the canary's session runs over TLS.
    pub canary_tls: bool,
    /// Uploads: the bytes of one routine report on the wire (compact, encoded),
    /// and of a report with every chain in full (sent at least daily).
    pub upload: Option<(u64, u64)>,
    /// Topic length (the PUBLISH header carries it).
    pub topic_len: u64,
    /// The periodic tune: how often, what one run costs at the socket, and
    /// whether that was measured (the newest spooled tune report's) or estimated.
    pub tune: Option<(Duration, u64, bool)>,
}

/// Bytes at the socket of one periodic tune run when none was measured: the
/// agent's tune opens one session (a TLS handshake and CONNECT, as a check's
/// MQTT endpoint: [`check_estimate`]), takes `samples` RTT pings, then probes
/// idle times with about ten more (one per step of the idle search).
pub fn tune_estimate(samples: u32, tls: bool) -> u64 {
    let round = 2 * (2 + if tls { TLS_RECORD } else { 0 });
    let transport = if tls { Transport::Tls } else { Transport::Tcp };
    check_estimate(Protocol::Mqtt, transport) + (samples as u64 + 10) * round
}

/// The estimate per day: checks, keep-alive pings, uploads.
pub fn estimate(i: &CostInputs) -> Vec<CostLine> {
    let per_day = |every: Duration| 86_400.0 / every.as_secs_f64().max(0.001);
    let checks_a_day = per_day(i.interval);
    let mut lines = Vec::new();
    let per_check: u64 = i.checks.iter().map(|(_, b)| b).sum();
    let socket = (per_check as f64 * checks_a_day).round() as u64;
    // A check is a handful of flights per endpoint: ~10 segments each way (the
    // bench measured 17–18 a connection on loopback, where a certificate chain
    // fits one segment; a 1500-byte MTU needs a few more).
    let segments = (i.endpoints as f64 * 20.0 * checks_a_day).round() as u64;
    lines.push(CostLine {
        what: "checks",
        how: format!(
            "{:.0} a day × {} B ({}; {})",
            checks_a_day,
            per_check,
            i.checks
                .iter()
                .map(|(n, b)| format!("{n} {b} B"))
                .collect::<Vec<_>>()
                .join(", "),
            if i.checks_measured {
                "measured by the last check"
            } else {
                "estimated"
            }
        ),
        socket_per_day: socket,
        wire_per_day: socket + segments * crate::net::meter::SEGMENT_HEADER,
    });
    if let Some(k) = i.keepalive {
        let rounds = per_day(k);
        let tls = if i.canary_tls { TLS_RECORD } else { 0 };
        let round = 2 * (2 + tls);
        let socket = (rounds * round as f64).round() as u64;
        let wire = crate::tune::recommend::bytes_per_day(k.as_secs().max(1), i.canary_tls);
        lines.push(CostLine {
            what: "keep-alive pings",
            how: format!(
                "{rounds:.0} rounds a day at {} (PINGREQ + PINGRESP, {round} B)",
                humantime::format_duration(k)
            ),
            socket_per_day: socket,
            wire_per_day: wire,
        });
    }
    if let Some((every, run, measured)) = i.tune {
        let runs = per_day(every);
        let socket = (runs * run as f64).round() as u64;
        // One session a run: ~10 segments each way for its set-up, one per ping.
        let segments = (runs * 20.0).round() as u64;
        lines.push(CostLine {
            what: "tune",
            how: format!(
                "{runs:.1} runs a day × {run} B ({})",
                if measured {
                    "measured by the last tune"
                } else {
                    "estimated"
                }
            ),
            socket_per_day: socket,
            wire_per_day: socket + segments * crate::net::meter::SEGMENT_HEADER,
        });
    }
    if let Some((routine, full)) = i.upload {
        let framing = |body: u64| publish_socket_bytes(body, i.topic_len, i.canary_tls);
        let reports = checks_a_day;
        let daily_full = full.saturating_sub(routine);
        let socket = (reports * framing(routine) as f64).round() as u64 + daily_full;
        let wire = socket + ip_overhead(socket, reports.round() as u64 * 2);
        lines.push(CostLine {
            what: "uploads",
            how: format!(
                "{reports:.0} reports a day × {} B on the wire ({routine} B body), full chains once a day (+{daily_full} B)",
                framing(routine)
            ),
            socket_per_day: socket,
            wire_per_day: wire,
        });
    }
    lines
}

/// Renders the estimate as `agent --check-config` prints it.
pub fn render(lines: &[CostLine]) -> String {
    let kb = |b: u64| format!("{:.1} kB", b as f64 / 1000.0);
    let mut out = String::from("estimated traffic per day (socket bytes; with TCP/IP headers):\n");
    let (mut s, mut w) = (0, 0);
    for l in lines {
        out.push_str(&format!(
            "  {:<17} {:>10}  ({:>10})  {}\n",
            l.what,
            kb(l.socket_per_day),
            kb(l.wire_per_day),
            l.how
        ));
        s += l.socket_per_day;
        w += l.wire_per_day;
    }
    out.push_str(&format!(
        "  {:<17} {:>10}  ({:>10})  about {:.1} MB a month\n",
        "total",
        kb(s),
        kb(w),
        w as f64 * 30.0 / 1e6
    ));
    out
}

/// The newest check report in a spool directory (pending or delivered), read
/// without opening the spool (nothing is created or changed).
pub fn newest_spooled_check(spool_dir: &std::path::Path) -> Option<crate::model::Report> {
    newest_spooled(spool_dir, "check")
}

/// The newest report of `kind` (`check`, `tune`) in a spool directory, read
/// without opening the spool (nothing is created or changed).
pub fn newest_spooled(spool_dir: &std::path::Path, kind: &str) -> Option<crate::model::Report> {
    let mut names: Vec<(String, std::path::PathBuf)> = Vec::new();
    for dir in [spool_dir.to_path_buf(), spool_dir.join("delivered")] {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten().take(100_000) {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".json") && !name.starts_with('.') {
                names.push((name, e.path()));
            }
        }
    }
    // Names start with the zero-padded write sequence: newest last.
    names.sort();
    for (_, path) in names.iter().rev().take(20) {
        let Ok(bytes) = std::fs::read(path) else {
            continue;
        };
        if let Ok(r) = serde_json::from_slice::<crate::model::Report>(&bytes) {
            if r.kind == kind {
                return Some(r);
            }
        }
    }
    None
}

/// The body sizes of `report` on the wire: routine (every chain a reference) and
/// with every chain in full.
pub fn wire_sizes(report: &crate::model::Report, encoding: super::wire::Encoding) -> (u64, u64) {
    use super::wire::{compact, compact_json, encode_bytes, WireState};
    let body = |r: &crate::model::Report, state: &WireState, now: u64| {
        let mut v = serde_json::to_value(r).unwrap_or_default();
        let sections = compact_json(&mut v, state, now);
        (serde_json::to_vec(&v).unwrap_or_default(), sections)
    };
    let first = compact(report, &WireState::default(), 0);
    let (full_json, sections) = body(&first.report, &WireState::default(), 0);
    let mut state = WireState::default();
    state.delivered(&first.full);
    state.delivered_sections(&sections);
    let routine = compact(report, &state, 1);
    let (routine_json, _) = body(&routine.report, &state, 1);
    let size = |b: &[u8]| {
        encode_bytes(b, encoding)
            .map(|b| b.len() as u64)
            .unwrap_or(0)
    };
    (size(&routine_json), size(&full_json))
}

/// The estimate's inputs for a configuration: measured figures from the newest
/// spooled check when there is one (its `traffic` and its size on the wire), else
/// the per-endpoint estimates of [`check_estimate`] and a typical report size.
pub fn inputs_for(
    cfg: &super::config::AgentConfig,
    plan: &crate::check::CheckPlan,
    spool_dir: &std::path::Path,
) -> CostInputs {
    let last = newest_spooled_check(spool_dir);
    let measured = last
        .as_ref()
        .and_then(|r| r.traffic.as_ref())
        .map(|t| t.period.checks.sent + t.period.checks.received)
        .filter(|b| *b > 0);
    let checks = match measured {
        Some(b) => vec![("all endpoints".to_string(), b)],
        None => plan
            .endpoints
            .iter()
            .map(|e| (e.name.clone(), check_estimate(e.protocol, e.transport)))
            .collect(),
    };
    let canary_ep = cfg
        .canary
        .endpoint
        .as_ref()
        .and_then(|n| plan.endpoints.iter().find(|e| &e.name == n))
        .or_else(|| plan.endpoints.iter().find(|e| e.protocol == Protocol::Mqtt));
    let canary_tls = canary_ep.is_some_and(|e| e.transport.uses_tls());
    let upload = cfg.upload.enabled.then(|| match &last {
        Some(r) => {
            let (routine, full) = wire_sizes(r, cfg.upload.encoding);
            if cfg.upload.compact {
                (routine, full)
            } else {
                (full, full)
            }
        }
        None => {
            // No report yet: the sizes measured for the lab's reports (README,
            // "Benchmarks"), per endpoint.
            let n = plan.endpoints.len() as u64;
            let tls = plan
                .endpoints
                .iter()
                .filter(|e| e.transport.uses_tls())
                .count() as u64;
            let routine = 700 + 350 * n;
            let full = routine + 1_500 * tls;
            let gz = |b: u64| match cfg.upload.encoding {
                super::wire::Encoding::Identity => b,
                super::wire::Encoding::Gzip => b * 2 / 5,
            };
            if cfg.upload.compact {
                (gz(routine), gz(full))
            } else {
                (gz(full), gz(full))
            }
        }
    });
    CostInputs {
        interval: cfg.schedule.interval,
        checks,
        checks_measured: measured.is_some(),
        endpoints: plan.endpoints.len() as u64,
        keepalive: (cfg.canary.enabled || cfg.upload.enabled).then_some(plan.keep_alive),
        canary_tls,
        upload,
        topic_len: {
            let t = cfg.upload.topic(plan);
            // Hub topics get `&$.mid=<report id>` appended.
            t.len() as u64 + if t.contains("$.ct=") { 43 } else { 0 }
        },
        tune: cfg.schedule.tune_interval.map(|every| {
            let measured = newest_spooled(spool_dir, "tune")
                .and_then(|r| r.traffic)
                .map(|t| t.period.tune.sent + t.period.tune.received)
                .filter(|b| *b > 0);
            match measured {
                Some(b) => (every, b, true),
                None => (
                    every,
                    tune_estimate(cfg.schedule.tune_samples, canary_tls),
                    false,
                ),
            }
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canary_is_the_session_less_the_uploads_and_periods_are_differences() {
        let m = AgentMeter::default();
        m.checks.add_sent(100);
        m.session.add_sent(50);
        m.session.add_received(30);
        m.uploads.add_sent(20);
        m.uploads.add_received(4);
        let r = m.report();
        assert_eq!(r.period.checks.sent, 100);
        assert_eq!(
            r.period.canary,
            ByteCount {
                sent: 30,
                received: 26
            }
        );
        assert_eq!(r.period.uploads.received, 4);
        m.checks.add_received(7);
        let r = m.report();
        assert_eq!(
            r.period.checks,
            ByteCount {
                sent: 0,
                received: 7
            }
        );
        assert_eq!(
            r.since_start.checks,
            ByteCount {
                sent: 100,
                received: 7
            }
        );
    }

    #[test]
    fn the_estimate_adds_up() {
        let i = CostInputs {
            interval: Duration::from_secs(300),
            checks: vec![("mqtt-tls".into(), 7_000)],
            checks_measured: false,
            endpoints: 1,
            keepalive: Some(Duration::from_secs(240)),
            canary_tls: true,
            upload: Some((1_000, 3_000)),
            topic_len: 50,
            tune: None,
        };
        let lines = estimate(&i);
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0].socket_per_day, 288 * 7_000);
        // 288 checks × 20 segments × 52 B of headers.
        assert_eq!(lines[0].wire_per_day, 288 * 7_000 + 288 * 20 * 52);
        // 360 rounds × 2 × (2 + 22).
        assert_eq!(lines[1].socket_per_day, 360 * 48);
        assert_eq!(
            lines[1].wire_per_day,
            crate::tune::recommend::bytes_per_day(240, true)
        );
        // 288 × (5 + 2 + 50 + 2 + 1000 + 4 + 2·22) + 2000.
        assert_eq!(lines[2].socket_per_day, 288 * 1_107 + 2_000);
        assert!(lines.iter().all(|l| l.wire_per_day > l.socket_per_day));
        let text = render(&lines);
        assert!(text.contains("uploads") && text.contains("total"), "{text}");
        assert!(
            !text.contains("tune"),
            "no tune line when the tune is off: {text}"
        );

        // A tune every 6 h of 9 000 B: 4 runs a day, its own line before the uploads.
        let with_tune = CostInputs {
            tune: Some((Duration::from_secs(6 * 3600), 9_000, true)),
            ..i
        };
        let lines = estimate(&with_tune);
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[2].what, "tune");
        assert_eq!(lines[2].socket_per_day, 36_000);
        assert!(lines[2].how.contains("measured"), "{}", lines[2].how);
    }

    #[test]
    fn the_tune_is_counted_apart_and_only_when_it_ran() {
        let m = AgentMeter::default();
        m.checks.add_sent(10);
        let r = m.report();
        assert!(r.period.tune.is_zero());
        // Absent from the JSON while nothing was counted (reports stay as they were).
        let json = serde_json::to_value(r.period).unwrap();
        assert!(json.get("tune").is_none(), "{json}");
        m.tune.add_sent(700);
        m.tune.add_received(900);
        let r = m.report();
        assert_eq!(
            r.period.tune,
            ByteCount {
                sent: 700,
                received: 900
            }
        );
        assert_eq!(r.period.checks.sent, 0);
        let json = serde_json::to_value(r.period).unwrap();
        assert_eq!(json["tune"]["received"], 900);
        // The estimate without a measurement: one session and the pings.
        assert!(tune_estimate(10, true) > check_estimate(Protocol::Mqtt, Transport::Tls));
        assert!(tune_estimate(20, true) > tune_estimate(10, true));
    }
}

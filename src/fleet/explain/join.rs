//! The devices' side: canary disconnect records from hubprobe agent reports (report
//! files, NDJSON, gzip, directories, the agent's spool, IoT Hub routing output as
//! JSON lines or Avro), kept per device by record id (the latest version wins), and
//! matched to the hub's disconnects within a clock tolerance.

use std::collections::HashMap;
use std::io::BufRead;

use serde::Deserialize;

use crate::fleet::avro;
use crate::fleet::input::Source;
use crate::model::{DiagnosisKind, DisconnectCause, DisconnectEvent};

use super::reader::{self, ReadError};

/// One canary disconnect as the device saw it.
#[derive(Debug, Clone)]
pub struct CanaryEvent {
    /// The record.
    pub event: DisconnectEvent,
    /// The canary's keep-alive, seconds.
    pub keepalive_s: u64,
    /// What the device's history pointed to when the report was made.
    pub diagnosis: DiagnosisKind,
    /// The diagnosis's evidence.
    pub diagnosis_evidence: Vec<String>,
}

/// Canary records by device id, oldest first.
#[derive(Debug, Default)]
pub struct DeviceSide {
    /// Device → records.
    pub devices: HashMap<String, Vec<CanaryEvent>>,
    /// Reports read.
    pub reports: u64,
    /// Lines or messages that were not hubprobe reports with a canary section.
    pub unused: u64,
    /// Device → the diagnosis of its latest report (the whole kept history's).
    latest: HashMap<String, (String, DiagnosisKind, Vec<String>)>,
}

#[derive(Deserialize)]
struct TargetLite {
    #[serde(default)]
    device_id: Option<String>,
    #[serde(default)]
    module_id: Option<String>,
}

#[derive(Deserialize)]
struct CanaryLite {
    keepalive_s: u64,
    #[serde(default)]
    recent: Vec<DisconnectEvent>,
    diagnosis: crate::model::Diagnosis,
}

#[derive(Deserialize)]
struct ReportLite {
    schema: String,
    host: String,
    #[serde(default)]
    finished_at: String,
    target: TargetLite,
    #[serde(default)]
    canary: Option<CanaryLite>,
}

impl DeviceSide {
    fn add(&mut self, bytes: &[u8]) -> bool {
        let Ok(r) = serde_json::from_slice::<ReportLite>(reader_strip(bytes)) else {
            return false;
        };
        if !r.schema.starts_with(crate::fleet::record::SCHEMA_FAMILY) {
            return false;
        }
        self.reports += 1;
        let Some(c) = r.canary else {
            return true;
        };
        // Keyed as the hub log's devices are: `device` or `device/module`.
        let dev = match (r.target.device_id, r.target.module_id) {
            (Some(d), Some(m)) => format!("{d}/{m}"),
            (Some(d), None) => d,
            (None, _) => r.host,
        };
        let newer = self
            .latest
            .get(&dev)
            .is_none_or(|(at, _, _)| *at <= r.finished_at);
        if newer {
            self.latest.insert(
                dev.clone(),
                (
                    r.finished_at.clone(),
                    c.diagnosis.kind,
                    c.diagnosis.evidence.clone(),
                ),
            );
        }
        let list = self.devices.entry(dev).or_default();
        for e in c.recent {
            let ev = CanaryEvent {
                event: e,
                keepalive_s: c.keepalive_s,
                diagnosis: c.diagnosis.kind,
                diagnosis_evidence: c.diagnosis.evidence.clone(),
            };
            // The same record again (completed later): the latest version wins.
            if !ev.event.id.is_empty() {
                if let Some(old) = list.iter_mut().find(|o| o.event.id == ev.event.id) {
                    *old = ev;
                    continue;
                }
            }
            list.push(ev);
        }
        true
    }

    /// Sorts every device's records by time.
    pub fn finish(&mut self) {
        for (d, v) in self.devices.iter_mut() {
            v.sort_by_key(|e| e.event.at_unix_ms);
            // What the whole history points to names each of its records.
            if let Some((_, kind, evidence)) = self.latest.get(d) {
                for e in v.iter_mut() {
                    e.diagnosis = *kind;
                    e.diagnosis_evidence = evidence.clone();
                }
            }
        }
    }
}

fn reader_strip(b: &[u8]) -> &[u8] {
    crate::fleet::shared::strip_bom(b).trim_ascii()
}

/// A routed message line: its body, base64 or JSON.
fn routed_body(v: &serde_json::Value) -> Option<Vec<u8>> {
    let body = v.get("Body")?;
    match body {
        serde_json::Value::String(s) => {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD
                .decode(s.as_bytes())
                .ok()
        }
        other => Some(other.to_string().into_bytes()),
    }
}

fn inflate(b: Vec<u8>) -> Vec<u8> {
    if !b.starts_with(&[0x1f, 0x8b]) {
        return b;
    }
    let mut out = Vec::new();
    let lim = crate::fleet::shared::MAX_DOCUMENT_BYTES as u64;
    let _ = std::io::Read::read_to_end(
        &mut std::io::Read::take(flate2::read::MultiGzDecoder::new(&b[..]), lim),
        &mut out,
    );
    out
}

/// Reads the reports under `sources`.
pub fn read_reports(sources: &[Source]) -> Result<DeviceSide, ReadError> {
    let mut side = DeviceSide::default();
    let mut skipped = Vec::new();
    let mut inputs = Vec::new();
    for s in sources {
        match s {
            Source::Path(p) if p.is_dir() => {
                let mut found = Vec::new();
                let mut sk = Vec::new();
                for f in reader::expand(std::slice::from_ref(s), &mut sk)? {
                    found.push(f);
                }
                // Report directories also hold Avro blobs and .spool files.
                for f in sk {
                    let p = std::path::PathBuf::from(&f);
                    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                    if crate::fleet::input::is_report_file(&p) || name.ends_with(".spool") {
                        found.push(Source::Path(p));
                    } else {
                        skipped.push(f);
                    }
                }
                inputs.extend(found);
            }
            other => inputs.push(other.clone()),
        }
    }
    for s in &inputs {
        let (_, mut r) = reader::open(s)?;
        let is_avro = r
            .fill_buf()
            .map(|b| b.starts_with(avro::MAGIC))
            .unwrap_or(false);
        if is_avro {
            match avro::Container::open(r) {
                Ok(mut c) => loop {
                    match c.next_message() {
                        Ok(Some(m)) => {
                            let used =
                                m.is_report() && m.body.is_some_and(|b| side.add(&inflate(b)));
                            if !used {
                                side.unused += 1;
                            }
                        }
                        Ok(None) => break,
                        Err(_) => {
                            side.unused += 1;
                            break;
                        }
                    }
                },
                Err(_) => side.unused += 1,
            }
            continue;
        }
        documents(r, &mut |doc| {
            if side.add(doc) {
                return;
            }
            let used = serde_json::from_slice::<serde_json::Value>(doc)
                .ok()
                .and_then(|v| routed_body(&v))
                .is_some_and(|b| side.add(&inflate(b)));
            if !used {
                side.unused += 1;
            }
        });
    }
    side.finish();
    Ok(side)
}

/// Cuts a stream into JSON documents: one per line, or pretty-printed over lines.
fn documents(mut r: Box<dyn BufRead + Send>, each: &mut dyn FnMut(&[u8])) {
    let mut doc: Vec<u8> = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        match r.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        if line.len() > reader::MAX_LINE_BYTES {
            doc.clear();
            continue;
        }
        if doc.is_empty() && line.trim_ascii().is_empty() {
            continue;
        }
        if doc.is_empty() && serde_json::from_slice::<serde::de::IgnoredAny>(&line).is_ok() {
            each(&line);
            continue;
        }
        if line.first() == Some(&b'{') && !doc.is_empty() {
            doc.clear();
        }
        doc.extend_from_slice(&line);
        if doc.len() > crate::fleet::shared::MAX_DOCUMENT_BYTES {
            doc.clear();
            continue;
        }
        if line.first() == Some(&b'}') {
            match serde_json::from_slice::<serde::de::IgnoredAny>(&doc) {
                Ok(_) => {
                    each(&doc);
                    doc.clear();
                }
                Err(e) if e.is_eof() => {}
                Err(_) => doc.clear(),
            }
        }
    }
}

/// How close two records are in time after the clock offset is taken out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MatchQuality {
    /// Within 5 s.
    Exact,
    /// Within 30 s.
    Close,
    /// Within the tolerance.
    Loose,
}

impl MatchQuality {
    /// From the residual difference, ms.
    pub fn of(residual_ms: i64, tolerance_ms: i64) -> Option<MatchQuality> {
        let d = residual_ms.abs();
        if d <= 5_000 {
            Some(MatchQuality::Exact)
        } else if d <= 30_000 {
            Some(MatchQuality::Close)
        } else if d <= tolerance_ms {
            Some(MatchQuality::Loose)
        } else {
            None
        }
    }
}

/// The device clock's offset from the hub's for one device (device − hub, ms).
///
/// Every difference between a hub disconnect and a canary record within
/// `tolerance_ms` is a candidate; the one under which the most hub disconnects find
/// a record within 2 s (then 5 s, then 30 s, then the smallest residuals) wins, and is
/// refined to the median difference of those close pairs. Taking each record's
/// nearest neighbour instead is wrong for regular disconnects (an idle-dropping NAT
/// every few seconds): with an offset longer than half the period the neighbour is
/// the next disconnect. 0 when no pair is within the tolerance.
pub fn clock_offset_ms(hub: &[i64], dev: &[CanaryEvent], tolerance_ms: i64) -> i64 {
    let mut d: Vec<i64> = dev.iter().map(|e| e.event.at_unix_ms as i64).collect();
    d.sort_unstable();
    let mut candidates: Vec<i64> = Vec::new();
    for &t in hub {
        let lo = d.partition_point(|x| *x < t - tolerance_ms);
        for &x in d[lo..].iter().take_while(|x| **x <= t + tolerance_ms) {
            candidates.push(x - t);
        }
    }
    if candidates.is_empty() {
        return 0;
    }
    candidates.sort_unstable();
    candidates.dedup_by(|a, b| (*a - *b).abs() < 250);
    // Bounded work whatever the fleet: at most 2 048 candidates, evenly spaced.
    if candidates.len() > 2048 {
        let step = candidates.len() as f64 / 2048.0;
        candidates = (0..2048)
            .map(|k| candidates[(k as f64 * step) as usize])
            .collect();
    }
    let residuals = |off: i64| -> Vec<i64> {
        hub.iter()
            .filter_map(|&t| {
                let want = t + off;
                let k = d.partition_point(|x| *x < want);
                [k.checked_sub(1), Some(k)]
                    .into_iter()
                    .flatten()
                    .filter_map(|k| d.get(k))
                    .map(|x| x - want)
                    .min_by_key(|r| r.abs())
            })
            .collect()
    };
    let score = |off: i64| {
        let r = residuals(off);
        let tight = r.iter().filter(|x| x.abs() <= 2_000).count();
        let exact = r.iter().filter(|x| x.abs() <= 5_000).count();
        let close = r.iter().filter(|x| x.abs() <= 30_000).count();
        let spread: i64 = r
            .iter()
            .filter(|x| x.abs() <= 30_000)
            .map(|x| x.abs())
            .sum();
        (
            tight,
            exact,
            close,
            std::cmp::Reverse(spread),
            std::cmp::Reverse(off.abs()),
        )
    };
    let best = candidates
        .iter()
        .copied()
        .max_by_key(|o| score(*o))
        .unwrap_or(0);
    let mut close: Vec<i64> = residuals(best)
        .into_iter()
        .filter(|x| x.abs() <= 5_000)
        .map(|x| best + x)
        .collect();
    if close.is_empty() {
        return best;
    }
    close.sort_unstable();
    close[close.len() / 2]
}

/// The precise cause a canary record names: (class, summary, evidence, fix).
pub fn precise(e: &CanaryEvent) -> (&'static str, String, Vec<String>, String) {
    let d = &e.event;
    let mut ev = vec![format!(
        "the device's canary saw {} at {} ({})",
        d.cause.as_str(),
        d.at,
        d.detail
    )];
    if let Some(r) = d.reconnect_s {
        ev.push(format!(
            "back after {r:.1} s and {} failed attempt(s)",
            d.failed_attempts
        ));
    }
    let takeover = d.reason_code == Some(0x8E) || e.diagnosis == DiagnosisKind::SessionTakeover;
    if takeover
        && matches!(
            d.cause,
            DisconnectCause::ServerDisconnect
                | DisconnectCause::EofWithoutDisconnect
                | DisconnectCause::TcpReset
        )
    {
        return (
            "session_takeover",
            "another client connected with the same identity and the hub dropped this session: hubprobe's canary and your app share an identity".into(),
            ev,
            "Give the canary its own identity (a module identity or a second device), or stop the other client: one identity, one connection.".into(),
        );
    }
    match d.cause {
        DisconnectCause::TokenRenewal | DisconnectCause::TokenExpired => (
            "token_renewal",
            format!(
                "the device's SAS token {} (IoT Hub 404104 cause 1)",
                if d.cause == DisconnectCause::TokenExpired {
                    "expired"
                } else {
                    "was renewed, and on MQTT a renewal is a reconnect"
                }
            ),
            ev,
            "Expected with SAS tokens: renew before expiry (the SDK does) and keep the clock synced.".into(),
        ),
        DisconnectCause::TlsAlert => (
            "tls_alert",
            format!("the TLS session was ended by an alert: {}", d.detail),
            ev,
            "Check the device's TLS stack, its clock and the middleboxes on the path (a TLS-inspecting proxy sends alerts).".into(),
        ),
        _ if e.diagnosis == DiagnosisKind::IdleTimeout => {
            // The silence that killed the session bounds the path's idle timeout from
            // above; the longest silence survived, when known, from below.
            let t = d.idle_before_s;
            let survived = d.longest_idle_survived_s.filter(|s| *s > 0.0 && *s < t);
            let ka = match survived {
                Some(s) => s * 0.9,
                None => t * 2.0 / 3.0,
            };
            let ka = if ka >= 30.0 {
                (ka / 10.0).floor() * 10.0
            } else {
                ka.floor().max(1.0)
            };
            let range = match survived {
                Some(s) => format!("between {s:.0} s and {t:.0} s"),
                None => format!("under {t:.0} s"),
            };
            ev.push(format!(
                "silent for {t:.1} s before the drop with a keep-alive of {} s; the history's diagnosis: idle_timeout",
                e.keepalive_s
            ));
            ev.extend(e.diagnosis_evidence.iter().take(3).cloned());
            (
                "idle_timeout",
                format!(
                    "a NAT or firewall on the device's path drops flows idle for {range}, before the keep-alive of {} s refreshes them (cause 2)",
                    e.keepalive_s
                ),
                ev,
                format!(
                    "Set the MQTT keep-alive to {ka:.0} s or less (below the path's idle timeout, {range}; `hubprobe tune` measures it), or raise the NAT's idle timeout."
                ),
            )
        }
        _ if d.reconnect_s.is_some_and(|r| r >= 30.0) || d.failed_attempts > 0 => {
            let r = d.reconnect_s.unwrap_or(0.0);
            (
                "outage",
                format!("the device's network was out for {r:.0} s ({} failed attempts) (cause 2)", d.failed_attempts),
                ev,
                "A network outage at the device: check its link (signal, Wi-Fi, cellular) and keep reconnecting with back-off.".into(),
            )
        }
        _ => (
            "network",
            format!("the device saw the connection end with {} (cause 2)", d.cause.as_str()),
            ev,
            "Check the network path of the device; keep-alive below the path's idle timeout, reconnect with back-off.".into(),
        ),
    }
}

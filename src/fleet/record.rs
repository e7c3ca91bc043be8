//! One input line → one [`Observation`]: only the fields the fleet summary needs,
//! parsed with borrowed strings (no `serde_json::Value` per line), and the
//! classification of lines that are not reports (malformed, foreign, newer schema).

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::Deserialize;

use crate::model::DisconnectCause;
use crate::model::Verdict;
use crate::model::{Phase, Status};

/// The schema family and the major version this build understands.
pub const SCHEMA_FAMILY: &str = "hubprobe.report/";
/// The major version understood.
pub const SCHEMA_MAJOR: u32 = 1;
/// Arrays and objects nested deeper than this make a line malformed. Both JSON
/// parsers recurse per level (the fast one without a limit of its own when it skips
/// a field), so a hostile line could exhaust a parser thread's stack; a report
/// nests about eight levels.
pub const MAX_NESTING: usize = 128;

#[derive(Deserialize)]
struct Lite<'a> {
    #[serde(borrow)]
    schema: Cow<'a, str>,
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    host: Cow<'a, str>,
    #[serde(borrow)]
    started_at: Cow<'a, str>,
    #[serde(borrow)]
    target: LiteTarget<'a>,
    verdict: Verdict,
    #[serde(borrow, default)]
    endpoints: Vec<LiteEndpoint<'a>>,
    #[serde(borrow, default)]
    labels: BTreeMap<Text<'a>, Text<'a>>,
    #[serde(default)]
    keepalive: Option<LiteKeepalive>,
    #[serde(borrow, default)]
    canary: Option<LiteCanary<'a>>,
}

/// A string borrowed from the input unless it has escapes (a bare `Cow` inside a
/// map would always be copied).
#[derive(Deserialize, PartialEq, Eq, PartialOrd, Ord)]
struct Text<'a>(#[serde(borrow)] Cow<'a, str>);

#[derive(Deserialize)]
struct LiteTarget<'a> {
    #[serde(borrow, default)]
    device_id: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct LiteEndpoint<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(borrow, default)]
    phases: Vec<LitePhase<'a>>,
}

#[derive(Deserialize)]
struct LitePhase<'a> {
    phase: Phase,
    status: Status,
    #[serde(default)]
    duration_ms: Option<f64>,
    #[serde(borrow, default)]
    class: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    evidence: Option<LiteEvidence<'a>>,
}

#[derive(Deserialize)]
struct LiteEvidence<'a> {
    #[serde(borrow, default)]
    trust_anchor: Option<LiteAnchor<'a>>,
    #[serde(default)]
    clock_offset_s: Option<f64>,
}

#[derive(Deserialize)]
struct LiteAnchor<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
}

#[derive(Deserialize)]
struct LiteKeepalive {
    recommendation: LiteRecommendation,
    #[serde(default)]
    discovery: Option<LiteDiscovery>,
}

#[derive(Deserialize)]
struct LiteRecommendation {
    keepalive_s: u64,
}

#[derive(Deserialize)]
struct LiteDiscovery {
    #[serde(default)]
    estimate_ms: Option<u64>,
}

#[derive(Deserialize)]
struct LiteCanary<'a> {
    #[serde(borrow, default)]
    recent: Vec<LiteDisconnect<'a>>,
}

#[derive(Deserialize)]
struct LiteDisconnect<'a> {
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    at_unix_ms: u64,
    cause: DisconnectCause,
    #[serde(default)]
    reconnect_s: Option<f64>,
    #[serde(default)]
    failed_attempts: u32,
}

#[derive(Deserialize)]
struct SchemaOnly<'a> {
    #[serde(borrow, default)]
    schema: Option<Cow<'a, str>>,
}

/// What the summary keeps of one report.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// A hash of the report id (repeats are dropped by it).
    pub id_hash: u64,
    /// Device identity: `target.device_id`, else `host`.
    pub device: String,
    /// `check`, `tune` …
    pub kind: String,
    /// `started_at` as Unix milliseconds.
    pub started_ms: i64,
    /// Overall verdict.
    pub verdict: Verdict,
    /// Operator labels.
    pub labels: Vec<(String, String)>,
    /// Endpoint names, in report order ([`PhaseObs::endpoint`] indexes this).
    pub endpoints: Vec<String>,
    /// Every phase that ran or was skipped.
    pub phases: Vec<PhaseObs>,
    /// Names of the trust anchors that validated a chain (each once).
    pub anchors: Vec<String>,
    /// Recommended keep-alive (tune reports), seconds.
    pub keepalive_s: Option<u64>,
    /// Measured idle timeout (tune reports with a discovery), milliseconds.
    pub idle_timeout_ms: Option<u64>,
    /// Canary disconnects the report carries.
    pub disconnects: Vec<DisconnectObs>,
}

/// One canary disconnect record (`canary.recent[]`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DisconnectObs {
    /// Hash of the record's `id` (stable per disconnect of a device; a later report
    /// repeats the record with the same id once it is complete). `None` from agents
    /// that do not write one: such a record is counted as it comes.
    pub id_hash: Option<u64>,
    /// When it was detected, Unix ms.
    pub at_ms: u64,
    /// The cause class.
    pub cause: DisconnectCause,
    /// Seconds until the session was back (absent while still down).
    pub reconnect_s: Option<f64>,
    /// Failed attempts before the session was back.
    pub failed_attempts: u32,
}

/// One phase of one endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct PhaseObs {
    /// Index into [`Observation::endpoints`].
    pub endpoint: u8,
    /// Which phase.
    pub phase: Phase,
    /// How it ended.
    pub status: Status,
    /// Duration, milliseconds.
    pub duration_ms: Option<f64>,
    /// Failure class id.
    pub class: Option<String>,
    /// Server clock minus device clock, seconds (HTTPS `Date`).
    pub clock_offset_s: Option<f64>,
}

/// Why a line is not a usable report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// Not JSON, or a hubprobe report missing required fields.
    Malformed(String),
    /// Valid JSON that is not a hubprobe report (no or another `schema`).
    Foreign(String),
    /// A hubprobe report of a major version this build does not understand.
    UnknownMajor(String),
}

impl Rejection {
    /// The kind as a stable word: `malformed`, `foreign`, `unknown_schema`.
    pub fn kind(&self) -> &'static str {
        match self {
            Rejection::Malformed(_) => "malformed",
            Rejection::Foreign(_) => "foreign",
            Rejection::UnknownMajor(_) => "unknown_schema",
        }
    }
    /// The explanation.
    pub fn message(&self) -> &str {
        match self {
            Rejection::Malformed(m) | Rejection::Foreign(m) | Rejection::UnknownMajor(m) => m,
        }
    }
}

/// A 64-bit hash of a report id, never 0 (0 marks an empty slot).
pub fn id_hash(id: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    id.hash(&mut h);
    h.finish() | 1
}

/// Parses one JSON report (a line or a whole document), keeping every label.
pub fn parse(bytes: &[u8]) -> Result<Observation, Rejection> {
    parse_keeping(bytes, None)
}

/// Parses one report, keeping only the labels named in `keep` (all when `None`).
pub fn parse_keeping(bytes: &[u8], keep: Option<&[String]>) -> Result<Observation, Rejection> {
    let bytes = super::input::strip_bom(bytes);
    if nests_deeper_than(bytes, MAX_NESTING) {
        return Err(Rejection::Malformed(format!(
            "not JSON this reader accepts: arrays or objects nested deeper than {MAX_NESTING} levels"
        )));
    }
    // sonic-rs skips the fields the summary does not need (certificate chains and
    // other evidence are most of a report) with SIMD; serde_json words the errors.
    match sonic_rs::from_slice::<Lite<'_>>(bytes) {
        Ok(lite) => {
            check_schema(Some(&lite.schema))?;
            observation(lite, keep)
        }
        Err(_) => {
            let e = match serde_json::from_slice::<Lite<'_>>(bytes) {
                Err(e) => e.to_string(),
                Ok(_) => "rejected by the fast parser".to_string(),
            };
            // Slow path only for lines that are not reports: say which kind.
            match serde_json::from_slice::<SchemaOnly<'_>>(bytes) {
                Err(_) => Err(Rejection::Malformed(format!("not JSON: {e}"))),
                Ok(s) => {
                    check_schema(s.schema.as_deref())?;
                    Err(Rejection::Malformed(format!("not a complete report: {e}")))
                }
            }
        }
    }
}

/// True when `[`/`{` nest deeper than `limit` outside strings. Whatever the bytes
/// (unbalanced, truncated, not UTF-8), it answers without recursion.
pub fn nests_deeper_than(bytes: &[u8], limit: usize) -> bool {
    // Cheap bound first: fewer openers than the limit cannot nest deeper, which is
    // every report; only a line with many openers is walked byte by byte.
    if openers(bytes) <= limit {
        return false;
    }
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in bytes {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// Bytes that are `[` or `{` (0x5B, 0x7B: the bytes x with x | 0x20 == 0x7B), in
/// a loop the compiler vectorizes (several GB/s per core, in the parse's hot path).
fn openers(bytes: &[u8]) -> usize {
    bytes
        .chunks(255)
        .map(|c| {
            c.iter()
                .fold(0u8, |n, &x| n.wrapping_add(((x | 0x20) == 0x7B) as u8)) as usize
        })
        .sum()
}

fn check_schema(schema: Option<&str>) -> Result<(), Rejection> {
    let Some(schema) = schema else {
        return Err(Rejection::Foreign(
            "no \"schema\" field: not a hubprobe report".into(),
        ));
    };
    let Some(version) = schema.strip_prefix(SCHEMA_FAMILY) else {
        return Err(Rejection::Foreign(format!(
            "schema {schema:?} is not a hubprobe report"
        )));
    };
    let major = version.split('.').next().unwrap_or("");
    match major.parse::<u32>() {
        Ok(SCHEMA_MAJOR) => Ok(()),
        _ => Err(Rejection::UnknownMajor(format!(
            "schema {schema:?} is not understood by this hubprobe (it reads {SCHEMA_FAMILY}{SCHEMA_MAJOR}); upgrade hubprobe to summarize these reports"
        ))),
    }
}

fn observation(lite: Lite<'_>, keep: Option<&[String]>) -> Result<Observation, Rejection> {
    let started_ms = parse_time_ms(&lite.started_at).ok_or_else(|| {
        Rejection::Malformed(format!("started_at {:?} is not RFC 3339", lite.started_at))
    })?;
    let mut phases = Vec::with_capacity(20);
    let mut endpoints = Vec::with_capacity(lite.endpoints.len());
    let mut anchors: Vec<String> = Vec::new();
    for (i, ep) in lite.endpoints.iter().enumerate().take(u8::MAX as usize) {
        endpoints.push(ep.name.to_string());
        for p in &ep.phases {
            let mut clock = None;
            if let Some(ev) = &p.evidence {
                clock = ev.clock_offset_s;
                if let Some(a) = &ev.trust_anchor {
                    if !anchors.iter().any(|x| *x == a.name) {
                        anchors.push(a.name.to_string());
                    }
                }
            }
            phases.push(PhaseObs {
                endpoint: i as u8,
                phase: p.phase,
                status: p.status,
                duration_ms: p.duration_ms,
                class: p.class.as_ref().map(|c| c.to_string()),
                clock_offset_s: clock,
            });
        }
    }
    let device = match &lite.target.device_id {
        Some(d) if !d.is_empty() => d.to_string(),
        _ => lite.host.to_string(),
    };
    Ok(Observation {
        id_hash: id_hash(&lite.id),
        device,
        kind: lite.kind.into_owned(),
        started_ms,
        verdict: lite.verdict,
        labels: lite
            .labels
            .into_iter()
            .filter(|(k, _)| keep.is_none_or(|keep| keep.iter().any(|x| *x == k.0)))
            .map(|(k, v)| (k.0.into_owned(), v.0.into_owned()))
            .collect(),
        endpoints,
        phases,
        anchors,
        keepalive_s: lite
            .keepalive
            .as_ref()
            .map(|k| k.recommendation.keepalive_s),
        idle_timeout_ms: lite
            .keepalive
            .as_ref()
            .and_then(|k| k.discovery.as_ref())
            .and_then(|d| d.estimate_ms),
        disconnects: lite
            .canary
            .map(|c| {
                c.recent
                    .iter()
                    .map(|d| DisconnectObs {
                        id_hash: d.id.as_deref().filter(|i| !i.is_empty()).map(id_hash),
                        at_ms: d.at_unix_ms,
                        cause: d.cause,
                        // Not a number of seconds (negative): not known.
                        reconnect_s: d.reconnect_s.filter(|r| r.is_finite() && *r >= 0.0),
                        failed_attempts: d.failed_attempts,
                    })
                    .collect()
            })
            .unwrap_or_default(),
    })
}

/// RFC 3339 → Unix milliseconds (`None` when unparsable).
pub fn parse_time_ms(s: &str) -> Option<i64> {
    let t = humantime::parse_rfc3339_weak(s.trim_end_matches('Z')).ok()?;
    let ms = match t.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => d.as_millis() as i64,
        Err(e) => -(e.duration().as_millis() as i64),
    };
    Some(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_to_unix_ms() {
        assert_eq!(parse_time_ms("1970-01-01T00:00:01.250Z"), Some(1250));
        assert_eq!(
            parse_time_ms("2026-11-26T00:00:00Z"),
            Some(1_795_651_200_000)
        );
        assert_eq!(parse_time_ms("yesterday"), None);
    }

    #[test]
    fn openers_are_counted_whatever_the_length() {
        for n in [0usize, 1, 254, 255, 256, 1000] {
            let s = "[{x]}".repeat(n);
            assert_eq!(openers(s.as_bytes()), 2 * n);
        }
        let all: Vec<u8> = (0..=255u8).collect();
        assert_eq!(openers(&all), 2);
    }

    #[test]
    fn nesting_is_measured_outside_strings() {
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert!(!nests_deeper_than(deep(128).as_bytes(), 128));
        assert!(nests_deeper_than(deep(129).as_bytes(), 128));
        // Brackets inside strings (escaped quotes too) do not count.
        let s = format!("{{\"a\":\"\\\"{}\"}}", "[".repeat(500));
        assert!(!nests_deeper_than(s.as_bytes(), 128), "{s}");
        // Unbalanced and truncated input is answered, not recursed into.
        assert!(nests_deeper_than("{".repeat(200).as_bytes(), 128));
        assert!(!nests_deeper_than("]".repeat(200).as_bytes(), 128));
        for n in [129, 10_000, 100_000] {
            let e = parse(deep(n).as_bytes()).unwrap_err();
            assert!(matches!(e, Rejection::Malformed(_)), "{e:?}");
            assert!(e.message().contains("nested deeper"), "{}", e.message());
        }
    }

    #[test]
    fn lines_are_classified() {
        assert!(matches!(parse(b"{not json"), Err(Rejection::Malformed(_))));
        assert!(matches!(
            parse(b"{\"hello\":1}"),
            Err(Rejection::Foreign(_))
        ));
        assert!(matches!(
            parse(b"{\"schema\":\"other/1\"}"),
            Err(Rejection::Foreign(_))
        ));
        let e = parse(b"{\"schema\":\"hubprobe.report/2\",\"id\":\"x\"}").unwrap_err();
        assert!(matches!(e, Rejection::UnknownMajor(_)));
        assert!(e.message().contains("upgrade hubprobe"), "{}", e.message());
        assert!(matches!(
            parse(b"{\"schema\":\"hubprobe.report/1\",\"id\":\"x\"}"),
            Err(Rejection::Malformed(_))
        ));
    }
}

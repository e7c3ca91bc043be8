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
    /// A compact wire report's unchanged endpoint: its phases' durations, in
    /// phase order (`null`: none), instead of each phase's `duration_ms`.
    #[serde(default)]
    durations_ms: Vec<Option<f64>>,
    /// A compact wire report's unchanged endpoint: the names of the trust
    /// anchors its left-out evidence named (each once per report).
    #[serde(borrow, default)]
    trust_anchors: Vec<Cow<'a, str>>,
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

/// A string of an [`Observation`]: a range of its [`Observation::text`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TextRef {
    start: u32,
    end: u32,
}

/// What the summary keeps of one report.
///
/// Its strings are kept end to end in one buffer ([`Observation::text`]) and
/// referred to by range ([`TextRef`], read with [`Observation::str`]): one
/// allocation for all of them instead of one each, on the parse's hot path.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// A hash of the report id (repeats are dropped by it).
    pub id_hash: u64,
    /// The strings of the report, end to end.
    pub text: String,
    /// Device identity: `target.device_id`, else `host`.
    pub device: TextRef,
    /// `check`, `tune` …
    pub kind: TextRef,
    /// `started_at` as Unix milliseconds.
    pub started_ms: i64,
    /// Overall verdict.
    pub verdict: Verdict,
    /// Operator labels.
    pub labels: Vec<(TextRef, TextRef)>,
    /// Endpoint names, in report order ([`PhaseObs::endpoint`] indexes this).
    pub endpoints: Vec<TextRef>,
    /// Every phase that ran or was skipped.
    pub phases: Vec<PhaseObs>,
    /// Names of the trust anchors that validated a chain (each once).
    pub anchors: Vec<TextRef>,
    /// Recommended keep-alive (tune reports), seconds.
    pub keepalive_s: Option<u64>,
    /// Measured idle timeout (tune reports with a discovery), milliseconds.
    pub idle_timeout_ms: Option<u64>,
    /// Canary disconnects the report carries.
    pub disconnects: Vec<DisconnectObs>,
}

impl Observation {
    /// A report with no strings, labels, endpoints or tune figures yet.
    pub fn new(id_hash: u64, started_ms: i64, verdict: Verdict) -> Observation {
        Observation {
            id_hash,
            text: String::new(),
            device: TextRef::default(),
            kind: TextRef::default(),
            started_ms,
            verdict,
            labels: Vec::new(),
            endpoints: Vec::new(),
            phases: Vec::new(),
            anchors: Vec::new(),
            keepalive_s: None,
            idle_timeout_ms: None,
            disconnects: Vec::new(),
        }
    }
    /// Appends a string to [`Observation::text`] and refers to it.
    pub fn push_text(&mut self, s: &str) -> TextRef {
        let start = self.text.len();
        self.text.push_str(s);
        // A report is at most a few MiB (the line or document caps): within u32.
        TextRef {
            start: start as u32,
            end: self.text.len() as u32,
        }
    }
    /// The string `t` refers to.
    pub fn str(&self, t: TextRef) -> &str {
        self.text
            .get(t.start as usize..t.end as usize)
            .unwrap_or_default()
    }
    /// The device identity.
    pub fn device(&self) -> &str {
        self.str(self.device)
    }
    /// The report kind.
    pub fn kind(&self) -> &str {
        self.str(self.kind)
    }
    /// The name of endpoint `i`, `?` when there is none.
    pub fn endpoint(&self, i: u8) -> &str {
        self.endpoints
            .get(i as usize)
            .map(|t| self.str(*t))
            .unwrap_or("?")
    }
    /// The value of label `key`.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| self.str(*k) == key)
            .map(|(_, v)| self.str(*v))
    }
    /// The failure class of a phase.
    pub fn class(&self, p: &PhaseObs) -> Option<&str> {
        p.class.map(|c| self.str(c))
    }
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
    /// Failure class id ([`Observation::class`]).
    pub class: Option<TextRef>,
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

/// Why a hub message is foreign.
pub const NOT_MARKED: &str =
    "a message without the hubprobe=report property: not a hubprobe report";

/// Parses the body of a hub message (Avro input, or a routed JSON line): gzip
/// when it starts so, and cross-checked with the device the hub saw.
pub fn parse_message(
    body: &[u8],
    hub_device: Option<&str>,
    keep: Option<&[String]>,
) -> Result<Observation, Rejection> {
    let inflated;
    let body = if body.starts_with(&[0x1f, 0x8b]) {
        let limit = super::shared::MAX_DOCUMENT_BYTES;
        let mut out = Vec::new();
        let read = std::io::Read::read_to_end(
            &mut std::io::Read::take(flate2::read::MultiGzDecoder::new(body), limit as u64 + 1),
            &mut out,
        );
        if let Err(e) = read {
            return Err(Rejection::Malformed(format!("gzip body: {e}")));
        }
        if out.len() > limit {
            return Err(Rejection::Malformed(format!(
                "gzip body inflates past {} MiB",
                limit >> 20
            )));
        }
        inflated = out;
        &inflated[..]
    } else {
        body
    };
    let o = parse_report(body, keep, false)?;
    match hub_device {
        Some(d) if !d.is_empty() && d != o.device() => Err(Rejection::Malformed(format!(
            "the hub received this report from device {d:?}, but it is the report of {:?}",
            o.device()
        ))),
        _ => Ok(o),
    }
}

/// A line as IoT Hub routing writes it to storage in JSON encoding.
#[derive(Deserialize)]
struct Routed<'a> {
    #[serde(rename = "Properties", default)]
    properties: BTreeMap<Text<'a>, serde_json::Value>,
    #[serde(rename = "SystemProperties", default)]
    system: BTreeMap<Text<'a>, serde_json::Value>,
    #[serde(rename = "Body", borrow)]
    body: Option<&'a serde_json::value::RawValue>,
}

/// A routed message line (`EnqueuedTimeUtc`, `Properties`, `SystemProperties`,
/// `Body`): `None` when the line is not one.
fn routed(bytes: &[u8], keep: Option<&[String]>) -> Option<Result<Observation, Rejection>> {
    memchr::memmem::find(bytes, b"\"SystemProperties\"")?;
    let r: Routed<'_> = serde_json::from_slice(bytes).ok()?;
    let text = |m: &BTreeMap<Text<'_>, serde_json::Value>, k: &str| {
        m.iter()
            .find(|(key, _)| key.0 == k)
            .and_then(|(_, v)| v.as_str().map(str::to_string))
    };
    if text(&r.properties, "hubprobe").as_deref() != Some("report") {
        return Some(Err(Rejection::Foreign(NOT_MARKED.into())));
    }
    let device = super::avro::DEVICE_KEYS
        .iter()
        .find_map(|k| text(&r.system, k));
    let Some(body) = r.body else {
        return Some(Err(Rejection::Malformed(
            "a hubprobe message without a body".into(),
        )));
    };
    let raw = body.get().as_bytes();
    // A JSON body is written as JSON; any other as base64 of its bytes.
    let decoded;
    let body: &[u8] = if raw.starts_with(b"\"") {
        let s: String = match serde_json::from_str(body.get()) {
            Ok(s) => s,
            Err(e) => return Some(Err(Rejection::Malformed(format!("body: {e}")))),
        };
        use base64::Engine;
        match base64::engine::general_purpose::STANDARD.decode(s.as_bytes()) {
            Ok(b) => {
                decoded = b;
                &decoded
            }
            Err(e) => {
                return Some(Err(Rejection::Malformed(format!(
                    "body is neither JSON nor base64: {e}"
                ))))
            }
        }
    } else {
        raw
    };
    Some(parse_message(body, device.as_deref(), keep))
}

/// Parses one report, keeping only the labels named in `keep` (all when `None`).
pub fn parse_keeping(bytes: &[u8], keep: Option<&[String]>) -> Result<Observation, Rejection> {
    parse_report(bytes, keep, true)
}

fn parse_report(
    bytes: &[u8],
    keep: Option<&[String]>,
    envelopes: bool,
) -> Result<Observation, Rejection> {
    let bytes = super::shared::strip_bom(bytes);
    if nests_deeper_than(bytes, MAX_NESTING) {
        return Err(Rejection::Malformed(format!(
            "not JSON this reader accepts: arrays or objects nested deeper than {MAX_NESTING} levels"
        )));
    }
    if let Some(e) = bad_unicode_escape(bytes) {
        return Err(Rejection::Malformed(format!("not JSON: {e}")));
    }
    // sonic-rs skips the fields the summary does not need (certificate chains and
    // other evidence are most of a report) with SIMD; serde_json words the errors.
    match sonic_rs::from_slice::<Lite<'_>>(bytes) {
        Ok(lite) => {
            check_schema(Some(&lite.schema))?;
            observation(lite, keep)
        }
        Err(_) => {
            // Slow path only for lines that are not reports: a routed message, or
            // say which kind.
            if envelopes {
                if let Some(r) = routed(bytes, keep) {
                    return r;
                }
            }
            let e = match serde_json::from_slice::<Lite<'_>>(bytes) {
                Err(e) => e.to_string(),
                Ok(_) => "rejected by the fast parser".to_string(),
            };
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

/// A `\\u` escape that is not JSON, worded, if the line has one: without four
/// hex digits after it, or half of a UTF-16 surrogate pair without the other
/// half (serde_json rejects those too; RFC 8259 leaves them unpredictable).
///
/// sonic-rs's validating skip (the fields the summary does not keep) steps over
/// the four bytes after a `\\u` without looking at them, so `"\\uzzzz"` in the
/// evidence would pass; this finds it. A line without a backslash (most reports)
/// costs one `memchr`.
fn bad_unicode_escape(bytes: &[u8]) -> Option<String> {
    // The code unit of the `\\u` escape whose `u` is at `at`.
    let unit = |at: usize| -> Option<u16> {
        let hex = std::str::from_utf8(bytes.get(at + 1..at + 5)?).ok()?;
        if !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        u16::from_str_radix(hex, 16).ok()
    };
    let worded = |what: &str, at: usize| {
        // serde_json words it (with the line and column) when it can.
        match serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
            Err(e) => e.to_string(),
            Ok(_) => format!("{what} at byte {at}"),
        }
    };
    let mut i = memchr::memchr(b'\\', bytes)?;
    loop {
        // A run of backslashes: an odd one's last escapes the byte after it.
        let run = bytes[i..].iter().take_while(|&&c| c == b'\\').count();
        let mut after = i + run;
        if run % 2 == 1 && bytes.get(after) == Some(&b'u') {
            let Some(u) = unit(after) else {
                return Some(worded("a \\u escape without four hex digits", after));
            };
            after += 5;
            match u {
                0xD800..=0xDBFF => {
                    let low = (bytes.get(after..after + 2) == Some(b"\\u"))
                        .then(|| unit(after + 1))
                        .flatten();
                    if !low.is_some_and(|l| (0xDC00..=0xDFFF).contains(&l)) {
                        return Some(worded("a lone UTF-16 surrogate in a \\u escape", after));
                    }
                    after += 6;
                }
                0xDC00..=0xDFFF => {
                    return Some(worded("a lone UTF-16 surrogate in a \\u escape", after));
                }
                _ => {}
            }
        }
        i = after + memchr::memchr(b'\\', bytes.get(after..)?)?;
    }
}

/// True when `[`/`{` nest deeper than `limit` outside strings. Whatever the bytes
/// (unbalanced, truncated, not UTF-8), it answers without recursion.
///
/// A backslash escapes the byte after it, inside a string or not: outside one it
/// is not JSON, and the parser stops there before it nests any deeper.
pub fn nests_deeper_than(bytes: &[u8], limit: usize) -> bool {
    // Every line is read here before it is parsed, 64 bytes at a time as bit
    // masks (quotes, backslashes, openers, closers): the strings are found with a
    // prefix XOR of the unescaped quotes (the way simdjson finds them), and the
    // depth moves by the block's counts unless the block could cross the limit or
    // close more than is open; then its brackets are walked in order. The masks
    // come from AVX2 where the processor has it (half the instructions of the
    // portable 128-bit ones, and a POPCNT instruction for the counts).
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("popcnt") {
        // SAFETY: the processor has AVX2 and POPCNT.
        return unsafe { x86::nests_deeper_than(bytes, limit) };
    }
    scan_blocks(bytes, limit, portable_masks)
}

/// The bit masks of one 64-byte block: bit i for byte i.
#[derive(Clone, Copy)]
struct Masks {
    quote: u64,
    backslash: u64,
    /// `[` and `{`.
    open: u64,
    /// `]` and `}`.
    close: u64,
}

fn portable_masks(b: &[u8; 64]) -> Masks {
    use sonic_simd::{u8x64, Mask, Simd};
    // SAFETY: `b` is 64 readable bytes, what an unaligned load of a u8x64 reads.
    let v = unsafe { u8x64::loadu(b.as_ptr()) };
    let is = |c: u8| v.eq(&u8x64::splat(c));
    Masks {
        quote: is(b'"').bitmask(),
        backslash: is(b'\\').bitmask(),
        open: (is(b'[') | is(b'{')).bitmask(),
        close: (is(b']') | is(b'}')).bitmask(),
    }
}

/// The walk over the blocks, with the masks from `masks`; inlined into the
/// caller so that it is compiled with the caller's instruction set.
#[inline(always)]
fn scan_blocks(bytes: &[u8], limit: usize, masks: impl Fn(&[u8; 64]) -> Masks) -> bool {
    let mut scan = Scan {
        depth: 0,
        limit,
        escaped: 0,
        in_string: 0,
    };
    let mut blocks = bytes.chunks_exact(64);
    for b in &mut blocks {
        if scan.block(masks(b.try_into().expect("64 bytes"))) {
            return true;
        }
    }
    let rest = blocks.remainder();
    if rest.is_empty() {
        return false;
    }
    let mut last = [b' '; 64];
    last[..rest.len()].copy_from_slice(rest);
    scan.block(masks(&last))
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::{
        __m256i, _mm256_cmpeq_epi8, _mm256_loadu_si256, _mm256_movemask_epi8, _mm256_or_si256,
        _mm256_set1_epi8,
    };

    use super::{scan_blocks, Masks};

    /// `[` | 0x20 is `{` and `]` | 0x20 is `}`, and no other byte ORs to either:
    /// one comparison finds both openers, one both closers.
    const CASE: u8 = 0x20;

    /// [`super::nests_deeper_than`] with AVX2 masks and POPCNT counts.
    ///
    /// # Safety
    /// The processor must have AVX2 and POPCNT.
    #[target_feature(enable = "avx2,popcnt")]
    pub(super) unsafe fn nests_deeper_than(bytes: &[u8], limit: usize) -> bool {
        // SAFETY: this function runs only where AVX2 is (its own contract).
        scan_blocks(bytes, limit, |b| unsafe { masks(b) })
    }

    /// # Safety
    /// The processor must have AVX2.
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn masks(b: &[u8; 64]) -> Masks {
        // SAFETY: `b` is 64 readable bytes: two unaligned 32-byte loads.
        let (lo, hi) = unsafe {
            (
                _mm256_loadu_si256(b.as_ptr().cast::<__m256i>()),
                _mm256_loadu_si256(b.as_ptr().add(32).cast::<__m256i>()),
            )
        };
        let case = _mm256_set1_epi8(CASE as i8);
        let (flo, fhi) = (_mm256_or_si256(lo, case), _mm256_or_si256(hi, case));
        // A macro, not a closure: a closure would not be compiled for AVX2.
        macro_rules! eq {
            ($lo:expr, $hi:expr, $c:expr) => {{
                let c = _mm256_set1_epi8($c as i8);
                let l = _mm256_movemask_epi8(_mm256_cmpeq_epi8($lo, c)) as u32;
                let h = _mm256_movemask_epi8(_mm256_cmpeq_epi8($hi, c)) as u32;
                u64::from(l) | (u64::from(h) << 32)
            }};
        }
        Masks {
            quote: eq!(lo, hi, b'"'),
            backslash: eq!(lo, hi, b'\\'),
            open: eq!(flo, fhi, b'{'),
            close: eq!(flo, fhi, b'}'),
        }
    }
}

struct Scan {
    depth: usize,
    limit: usize,
    /// Bit 0: the next block's first byte is escaped.
    escaped: u64,
    /// All ones when the next block starts inside a string.
    in_string: u64,
}

impl Scan {
    /// Moves over one block; true once the depth passes the limit.
    #[inline(always)]
    fn block(&mut self, m: Masks) -> bool {
        let escaped = self.escapes(m.backslash);
        let strings = prefix_xor(m.quote & !escaped) ^ self.in_string;
        self.in_string = ((strings as i64) >> 63) as u64;
        let open = m.open & !strings & !escaped;
        let close = m.close & !strings & !escaped;
        let (opens, closes) = (open.count_ones() as usize, close.count_ones() as usize);
        if self.depth + opens <= self.limit && closes <= self.depth {
            self.depth = self.depth + opens - closes;
            return false;
        }
        let mut brackets = open | close;
        while brackets != 0 {
            let bit = brackets & brackets.wrapping_neg();
            if open & bit != 0 {
                self.depth += 1;
                if self.depth > self.limit {
                    return true;
                }
            } else {
                self.depth = self.depth.saturating_sub(1);
            }
            brackets ^= bit;
        }
        false
    }

    /// The bytes escaped by a backslash (the odd-length runs' next bytes),
    /// carrying a run across blocks.
    #[inline(always)]
    fn escapes(&mut self, backslash: u64) -> u64 {
        const EVEN: u64 = 0x5555_5555_5555_5555;
        let backslash = backslash & !self.escaped;
        let follows = (backslash << 1) | self.escaped;
        let odd_starts = backslash & !EVEN & !follows;
        let (even_starts, carry) = odd_starts.overflowing_add(backslash);
        self.escaped = u64::from(carry);
        (EVEN ^ (even_starts << 1)) & follows
    }
}

/// Bit i of the result: the XOR of bits 0..=i.
#[inline(always)]
fn prefix_xor(mut x: u64) -> u64 {
    x ^= x << 1;
    x ^= x << 2;
    x ^= x << 4;
    x ^= x << 8;
    x ^= x << 16;
    x ^= x << 32;
    x
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
    let phases_total: usize = lite.endpoints.iter().map(|e| e.phases.len()).sum();
    let mut o = Observation::new(id_hash(&lite.id), started_ms, lite.verdict);
    o.text.reserve(256);
    o.phases.reserve_exact(phases_total);
    o.endpoints.reserve_exact(lite.endpoints.len());
    o.device = match &lite.target.device_id {
        Some(d) if !d.is_empty() => o.push_text(d),
        _ => o.push_text(&lite.host),
    };
    o.kind = o.push_text(&lite.kind);
    for (k, v) in &lite.labels {
        if keep.is_none_or(|keep| keep.iter().any(|x| *x == k.0)) {
            let k = o.push_text(&k.0);
            let v = o.push_text(&v.0);
            o.labels.push((k, v));
        }
    }
    let mut anchors: Vec<&str> = Vec::new();
    for (i, ep) in lite.endpoints.iter().enumerate().take(u8::MAX as usize) {
        let name = o.push_text(&ep.name);
        o.endpoints.push(name);
        for (j, p) in ep.phases.iter().enumerate() {
            let mut clock = None;
            if let Some(ev) = &p.evidence {
                clock = ev.clock_offset_s;
                if let Some(a) = &ev.trust_anchor {
                    if !anchors.contains(&&*a.name) {
                        anchors.push(&a.name);
                    }
                }
            }
            let class = p.class.as_ref().map(|c| o.push_text(c));
            o.phases.push(PhaseObs {
                endpoint: i as u8,
                phase: p.phase,
                status: p.status,
                duration_ms: p
                    .duration_ms
                    .or_else(|| ep.durations_ms.get(j).copied().flatten()),
                class,
                clock_offset_s: clock,
            });
        }
        for a in &ep.trust_anchors {
            if !anchors.contains(&&**a) {
                anchors.push(a);
            }
        }
    }
    o.anchors = anchors.into_iter().map(|a| o.push_text(a)).collect();
    o.keepalive_s = lite
        .keepalive
        .as_ref()
        .map(|k| k.recommendation.keepalive_s);
    o.idle_timeout_ms = lite
        .keepalive
        .as_ref()
        .and_then(|k| k.discovery.as_ref())
        .and_then(|d| d.estimate_ms);
    o.disconnects = lite
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
        .unwrap_or_default();
    Ok(o)
}

/// RFC 3339 → Unix milliseconds (`None` when unparsable): any year 0000–9999
/// (before 1970 is negative), fractions of a second (kept to the millisecond),
/// `Z` or a `±hh:mm` offset; a space for the `T` and no zone (UTC) are accepted too.
pub fn parse_time_ms(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |from: usize, to: usize| -> Option<i64> {
        let d = b.get(from..to)?;
        d.iter()
            .all(u8::is_ascii_digit)
            .then(|| d.iter().fold(0i64, |n, c| n * 10 + (c - b'0') as i64))
    };
    let sep = |i: usize, c: &[u8]| b.get(i).is_some_and(|x| c.contains(x));
    let (year, month, day) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (hour, minute, second) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
    if !(sep(4, b"-") && sep(7, b"-") && sep(10, b"Tt ") && sep(13, b":") && sep(16, b":")) {
        return None;
    }
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut i = 19;
    let mut frac_ms = 0i64;
    if b.get(i) == Some(&b'.') {
        let start = i + 1;
        i = start;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            if i - start < 3 {
                frac_ms = frac_ms * 10 + (b[i] - b'0') as i64;
            }
            i += 1;
        }
        if i == start {
            return None;
        }
        for _ in (i - start)..3 {
            frac_ms *= 10;
        }
    }
    let offset_min = match b.get(i..)? {
        [] | [b'Z'] | [b'z'] => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let (h, m) = (num(i + 1, i + 3)?, num(i + 4, i + 6)?);
            if h > 23 || m > 59 {
                return None;
            }
            if *sign == b'+' {
                h * 60 + m
            } else {
                -(h * 60 + m)
            }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = ((days * 24 + hour) * 60 + minute - offset_min) * 60 + second;
    Some(secs * 1000 + frac_ms)
}

fn leap(y: i64) -> bool {
    y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_to_unix_ms() {
        let ok = [
            ("1970-01-01T00:00:01.250Z", 1250),
            ("2026-11-26T00:00:00Z", 1_795_651_200_000),
            ("2026-11-26T02:00:00+02:00", 1_795_651_200_000),
            ("2026-11-25T22:30:00-01:30", 1_795_651_200_000),
            ("2026-11-26 00:00:00", 1_795_651_200_000),
            ("2026-11-26t00:00:00.123456789z", 1_795_651_200_123),
            ("2026-11-26T00:00:00.5Z", 1_795_651_200_500),
            ("1969-12-31T23:59:59Z", -1000),
            ("0000-01-01T00:00:00Z", -62_167_219_200_000),
            ("9999-12-31T23:59:59.999Z", 253_402_300_799_999),
            ("2024-02-29T00:00:00Z", 1_709_164_800_000),
        ];
        for (s, ms) in ok {
            assert_eq!(parse_time_ms(s), Some(ms), "{s}");
        }
        for s in [
            "yesterday",
            "",
            "2023-02-29T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-11-26T24:00:00Z",
            "2026-11-26T00:00:00.Z",
            "2026-11-26T00:00:00+2:00",
            "2026-11-26T00:00:00+02:60",
            "2026-11-26T00:00:00Zjunk",
            "+2026-11-26T00:00:00Z",
            "2026-11-26",
            "２026-11-26T00:00:00Z",
        ] {
            assert_eq!(parse_time_ms(s), None, "{s}");
        }
    }

    /// Every instant written by the summary's formatter reads back the same.
    #[test]
    fn formatted_times_read_back() {
        let mut x: u64 = 0x1234_5678;
        for _ in 0..2000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let ms = (x >> 16) as i64 % (crate::fleet::summary::MAX_RFC3339_MS + 1);
            let s = crate::fleet::summary::rfc3339_ms(ms);
            assert_eq!(parse_time_ms(&s), Some(ms), "{s}");
        }
    }

    /// The byte-by-byte reading of [`nests_deeper_than`].
    fn nests_deeper_bytewise(bytes: &[u8], limit: usize) -> bool {
        let (mut depth, mut i, mut in_string) = (0usize, 0usize, false);
        while i < bytes.len() {
            match (bytes[i], in_string) {
                (b'\\', _) => i += 1,
                (b'"', _) => in_string = !in_string,
                (b'[' | b'{', false) => {
                    depth += 1;
                    if depth > limit {
                        return true;
                    }
                }
                (b']' | b'}', false) => depth = depth.saturating_sub(1),
                _ => {}
            }
            i += 1;
        }
        false
    }

    #[test]
    fn the_block_scan_reads_nesting_as_the_bytewise_walk_does() {
        // Random lines over the bytes that matter, of lengths around the
        // 64-byte blocks, against small limits so that both answers occur.
        let alphabet = b"[]{}\"\\\\x ";
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut answers = [0usize; 2];
        for _ in 0..20_000 {
            let len = (next() % 300) as usize;
            let line: Vec<u8> = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            for limit in [0, 1, 3, 8] {
                let want = nests_deeper_bytewise(&line, limit);
                assert_eq!(
                    nests_deeper_than(&line, limit),
                    want,
                    "limit {limit}: {}",
                    String::from_utf8_lossy(&line)
                );
                // The portable masks too, where the processor's own are used above.
                assert_eq!(
                    scan_blocks(&line, limit, portable_masks),
                    want,
                    "portable, limit {limit}: {}",
                    String::from_utf8_lossy(&line)
                );
                answers[usize::from(want)] += 1;
            }
        }
        assert!(answers.iter().all(|&n| n > 1000), "{answers:?}");
        // Runs of backslashes and strings that cross block edges.
        for run in 0..140 {
            for at in [0usize, 1, 62, 63, 64, 65, 127, 128] {
                let mut line = vec![b'x'; at];
                line.push(b'"');
                line.extend(std::iter::repeat_n(b'\\', run));
                line.extend(b"\"[[[[".iter());
                for limit in [2, 3, 4] {
                    let want = nests_deeper_bytewise(&line, limit);
                    assert_eq!(
                        nests_deeper_than(&line, limit),
                        want,
                        "run {run} at {at} limit {limit}"
                    );
                    assert_eq!(
                        scan_blocks(&line, limit, portable_masks),
                        want,
                        "portable: run {run} at {at} limit {limit}"
                    );
                }
            }
        }
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
        // Brackets inside strings do not count, escaped quotes do not end them,
        // and an escape at the very end reads nothing past the line.
        let quoted = format!("[\"{}\\\"{}\"]", "[".repeat(300), "{".repeat(300));
        assert!(!nests_deeper_than(quoted.as_bytes(), 128), "{quoted}");
        let after = format!("[\"a\\\\\"{}", "[".repeat(200));
        assert!(nests_deeper_than(after.as_bytes(), 128), "{after}");
        assert!(!nests_deeper_than(
            format!("{}\"abc\\", "[{".repeat(64)).as_bytes(),
            128
        ));
        assert!(!nests_deeper_than(
            format!("{}\"\\", "[{".repeat(64)).as_bytes(),
            128
        ));
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

#[cfg(test)]
mod strictness {
    use super::*;

    /// Real report lines (the synthetic fleet's, every kind and pattern), with
    /// one byte run inserted, replaced or cut at a random place (most often next
    /// to a bracket, colon or comma): whatever serde_json does not read as JSON is
    /// never a report here. Bounded: 6 000 mutations.
    #[test]
    fn mutated_reports_that_are_not_json_are_never_reports() {
        let cfg = crate::fleet::synth::SynthConfig {
            devices: 12,
            duration: std::time::Duration::from_secs(3 * 3600),
            ..Default::default()
        }
        .with_all_patterns();
        let mut lines: Vec<Vec<u8>> = Vec::new();
        crate::fleet::synth::generate(&cfg, |r| {
            if lines.len() < 300 {
                lines.push(serde_json::to_vec(r).expect("a report serializes"));
            }
        });
        assert!(lines.len() >= 100, "{}", lines.len());
        let specials: &[&[u8]] = &[
            b"\x01",
            b"\x1f",
            b"\t",
            b"\n",
            b"\\",
            b"\\u12",
            b"\\uzzzz",
            b"\\x",
            b"\"",
            b",",
            b"]",
            b"}",
            b"{",
            b"[",
            b":",
            b"\xff",
            b"\xc3",
            b"\xe2\x82",
            b"\xc0\x80",
            b"01",
            b"-",
            b"1e",
            b".5",
            b"1.",
            b"tru",
            b"nul",
            b"NaN",
            b"Infinity",
            b"\x00",
            b" ",
            b"+1",
            b"-a",
            b"0x1",
            b"1e+",
            b"\"\"",
            b"[]",
            b"{}",
            b"null",
            b"\x0c",
            b"\x7f",
            b",,",
            b"00",
            b"1 2",
            b"\\ud800\\u0041",
        ];
        let mut rng = crate::fleet::synth::Rng::new(7);
        let (mut checked, mut invalid) = (0, 0);
        for _ in 0..6_000 {
            let line = &lines[(rng.next_u64() % lines.len() as u64) as usize];
            let mut v = line.clone();
            let mut at = (rng.next_u64() % v.len() as u64) as usize;
            if rng.next_u64() % 4 != 0 {
                while at < v.len() && !b",:{}[]".contains(&v[at]) {
                    at += 1;
                }
                at = (at + (rng.next_u64() % 2) as usize).min(v.len());
            }
            let sp = specials[(rng.next_u64() % specials.len() as u64) as usize];
            match rng.next_u64() % 3 {
                0 => drop(v.splice(at..at, sp.iter().copied())),
                1 => {
                    let end = (at + sp.len()).min(v.len());
                    drop(v.splice(at..end, sp.iter().copied()));
                }
                _ => v.truncate(at),
            }
            checked += 1;
            match serde_json::from_slice::<serde_json::Value>(&v) {
                Ok(_) => continue,
                // `1e+999` is JSON's grammar, past f64's range: a limit of
                // serde_json's own (RFC 8259 allows it) that the reader need not share.
                Err(e) if e.to_string().starts_with("number out of range") => continue,
                Err(_) => {}
            }
            invalid += 1;
            if let Ok(o) = parse(&v) {
                let near = &v[at.saturating_sub(40)..(at + 40).min(v.len())];
                panic!(
                    "not JSON, but read as the report of {:?}: {:?} at byte {at}, near {:?}",
                    o.device(),
                    String::from_utf8_lossy(sp),
                    String::from_utf8_lossy(near)
                );
            }
        }
        assert!(invalid > checked / 3, "{invalid} of {checked}");
    }
}

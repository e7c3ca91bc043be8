//! Reads IoT Hub resource logs of category `Connections` in every shape Azure Monitor
//! writes them: storage archives (one JSON record per line, `properties` a JSON
//! string, or an object in older exports), pretty-printed concatenated records,
//! Event Hubs documents (`{"records": [...]}`), and Log Analytics `AzureDiagnostics`
//! exports (a JSON array of rows, the query API's `{"tables": [...]}`, or CSV with
//! the columns flattened as `deviceId_s` …). Gzip is detected by its magic bytes,
//! directories are read recursively in name order, `-` is stdin.
//!
//! Input is streamed: a line at a time, a record at a time, and one document (a
//! pretty-printed record, an Event Hubs batch) is held at most, capped at
//! [`MAX_DOCUMENT_BYTES`]. A record that cannot be read is counted with its file and
//! line and skipped, never fatal; records of other categories are counted as foreign.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::fleet::input::Source;
use crate::fleet::record::parse_time_ms;
use crate::fleet::shared::{strip_bom, MAX_DOCUMENT_BYTES};

/// A longer line is rejected (and skipped) instead of buffered.
pub const MAX_LINE_BYTES: usize = 16 << 20;
/// Bad records listed one by one (all are counted).
pub const MAX_LISTED_BAD: usize = 100;

/// What a Connections record says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// `deviceConnect`.
    Connect,
    /// `deviceDisconnect`.
    Disconnect,
}

/// One Connections record, normalized over the formats.
#[derive(Debug, Clone, PartialEq)]
pub struct HubRecord {
    /// `time`, Unix ms.
    pub time_ms: i64,
    /// `operationName`.
    pub operation: Operation,
    /// `resultType` (`404104`, `401003`, `500008` …); `None` for a success.
    pub result_type: Option<String>,
    /// `resultDescription` (`DeviceConnectionClosedRemotely` …).
    pub result_description: Option<String>,
    /// `properties.deviceId`.
    pub device_id: String,
    /// `properties.moduleId`.
    pub module_id: Option<String>,
    /// `properties.protocol` (`Mqtt`, `Amqp`, `MqttWs` …).
    pub protocol: Option<String>,
    /// `properties.authType` (a JSON text in the logs).
    pub auth_type: Option<String>,
    /// `properties.maskedIpAddress` (`203.0.113.XXX`).
    pub masked_ip: Option<String>,
    /// `properties.statusCode`.
    pub status_code: Option<String>,
    /// `properties.errorMessage`.
    pub error_message: Option<String>,
    /// `properties.sdkVersion`.
    pub sdk_version: Option<String>,
}

impl HubRecord {
    /// The numeric result type (0 for a success, `u32::MAX` for a non-numeric one).
    pub fn code(&self) -> u32 {
        match self.result_type.as_deref() {
            None => 0,
            Some(s) => s.trim().parse().unwrap_or(u32::MAX),
        }
    }
}

/// A record that could not be used.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BadRecord {
    /// The file (`-` for stdin).
    pub file: String,
    /// The line it starts on (1-based).
    pub line: u64,
    /// `malformed` or `truncated` or `too_long`.
    pub kind: String,
    /// What is wrong (never the record's content beyond a field name).
    pub message: String,
}

/// Counts of what was read.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ReadStats {
    /// Files read.
    pub files: u64,
    /// Records of category Connections used.
    pub records: u64,
    /// Records of other categories or operations (not an error).
    pub foreign: u64,
    /// Records that could not be read.
    pub bad: u64,
    /// The first [`MAX_LISTED_BAD`] of them.
    pub bad_records: Vec<BadRecord>,
    /// Files under directories that were not read (not a log's name).
    pub skipped_files: Vec<String>,
}

impl ReadStats {
    fn bad(&mut self, file: &str, line: u64, kind: &str, message: String) {
        self.bad += 1;
        if self.bad_records.len() < MAX_LISTED_BAD {
            self.bad_records.push(BadRecord {
                file: file.to_string(),
                line,
                kind: kind.into(),
                message,
            });
        }
    }
}

/// Why the logs could not be read at all.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// An input path does not exist or cannot be read.
    #[error("cannot read {path}: {source}")]
    Input {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Files taken under a directory: `.json`, `.jsonl`, `.ndjson`, `.csv`, `.log`, each
/// optionally `.gz` (storage archives are named `PT1H.json`).
pub fn is_log_file(p: &Path) -> bool {
    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let name = name.strip_suffix(".gz").unwrap_or(name);
    [".json", ".jsonl", ".ndjson", ".csv", ".log"]
        .iter()
        .any(|ext| name.ends_with(ext))
}

/// Expands directories (sorted, recursively; symlinked directories not followed).
pub fn expand(sources: &[Source], skipped: &mut Vec<String>) -> Result<Vec<Source>, ReadError> {
    crate::fleet::input::expand_with(sources, is_log_file, skipped)
        .map_err(|(path, source)| ReadError::Input { path, source })
}

/// Opens a source, inflating gzip (detected by its magic bytes).
pub fn open(s: &Source) -> Result<(String, Box<dyn BufRead + Send>), ReadError> {
    let (name, raw): (String, Box<dyn Read + Send>) = match s {
        Source::Stdin => ("-".into(), Box::new(std::io::stdin())),
        Source::Path(p) => (
            p.display().to_string(),
            Box::new(File::open(p).map_err(|e| ReadError::Input {
                path: p.clone(),
                source: e,
            })?),
        ),
    };
    let mut r = BufReader::with_capacity(1 << 16, raw);
    let gz = r
        .fill_buf()
        .map(|b| b.starts_with(&[0x1f, 0x8b]))
        .unwrap_or(false);
    if gz {
        Ok((
            name,
            Box::new(BufReader::with_capacity(
                1 << 16,
                flate2::bufread::MultiGzDecoder::new(r),
            )),
        ))
    } else {
        Ok((name, Box::new(r)))
    }
}

/// Reads every record of every source, calling `each` in input order.
pub fn read_all(
    sources: &[Source],
    stats: &mut ReadStats,
    each: &mut dyn FnMut(HubRecord),
) -> Result<(), ReadError> {
    let inputs = expand(sources, &mut stats.skipped_files)?;
    for s in &inputs {
        let (name, r) = open(s)?;
        stats.files += 1;
        let csv = name.ends_with(".csv") || name.ends_with(".csv.gz");
        read_one(&name, r, csv, stats, each);
    }
    Ok(())
}

/// Reads one stream (JSON in any of the shapes, or CSV when `csv` or when its first
/// line is not JSON but a header naming a time column).
pub fn read_one(
    name: &str,
    mut r: Box<dyn BufRead + Send>,
    csv: bool,
    stats: &mut ReadStats,
    each: &mut dyn FnMut(HubRecord),
) {
    let looks_csv = csv || {
        let head = r.fill_buf().unwrap_or(&[]);
        let head = strip_bom(head);
        let first = head.iter().find(|b| !b.is_ascii_whitespace());
        let line_end = memchr::memchr(b'\n', head).unwrap_or(head.len());
        let line = String::from_utf8_lossy(&head[..line_end]).to_ascii_lowercase();
        !matches!(first, Some(b'{') | Some(b'[') | None)
            && line.contains(',')
            && (line.contains("time") || line.contains("operationname"))
    };
    if looks_csv {
        read_csv(name, r, stats, each);
    } else {
        read_json(name, r, stats, each);
    }
}

enum Line {
    Data,
    TooLong,
    Eof,
}

fn read_line_capped(r: &mut dyn BufRead, buf: &mut Vec<u8>) -> std::io::Result<Line> {
    buf.clear();
    let mut too_long = false;
    loop {
        let avail = match r.fill_buf() {
            Ok(a) => a,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if avail.is_empty() {
            return Ok(if too_long {
                Line::TooLong
            } else if buf.is_empty() {
                Line::Eof
            } else {
                Line::Data
            });
        }
        let (used, done) = match memchr::memchr(b'\n', avail) {
            Some(i) => (i + 1, true),
            None => (avail.len(), false),
        };
        if !too_long {
            if buf.len() + used > MAX_LINE_BYTES {
                too_long = true;
                buf.clear();
            } else {
                buf.extend_from_slice(&avail[..used]);
            }
        }
        r.consume(used);
        if done {
            return Ok(if too_long { Line::TooLong } else { Line::Data });
        }
    }
}

fn read_json(
    name: &str,
    mut r: Box<dyn BufRead + Send>,
    stats: &mut ReadStats,
    each: &mut dyn FnMut(HubRecord),
) {
    let mut line = Vec::new();
    let mut doc: Vec<u8> = Vec::new();
    let mut doc_line = 0u64;
    let mut skipping = false;
    let mut n = 0u64;
    loop {
        let got = match read_line_capped(&mut r, &mut line) {
            Ok(g) => g,
            Err(e) => {
                stats.bad(name, n + 1, "truncated", format!("read error: {e}"));
                break;
            }
        };
        let l = match got {
            Line::Eof => break,
            Line::TooLong => {
                n += 1;
                stats.bad(
                    name,
                    n,
                    "too_long",
                    format!("a line longer than {} MiB", MAX_LINE_BYTES >> 20),
                );
                continue;
            }
            Line::Data => {
                n += 1;
                if n == 1 {
                    strip_bom(&line)
                } else {
                    &line[..]
                }
            }
        };
        let trimmed = l.trim_ascii();
        let col0_open = matches!(l.first(), Some(b'{') | Some(b'['));
        if doc.is_empty() {
            if trimmed.is_empty() {
                continue;
            }
            if skipping && !col0_open {
                continue;
            }
            skipping = false;
            if !matches!(trimmed.first(), Some(b'{') | Some(b'[')) {
                stats.bad(
                    name,
                    n,
                    "malformed",
                    "not JSON (a record starts with {)".into(),
                );
                skipping = true;
                continue;
            }
            match serde_json::from_slice::<Value>(trimmed) {
                Ok(v) => document(name, n, v, stats, each),
                Err(e) if e.is_eof() => {
                    doc.extend_from_slice(l);
                    doc_line = n;
                }
                Err(e) => stats.bad(name, n, "malformed", format!("not JSON: {e}")),
            }
            continue;
        }
        // Inside a multi-line document.
        if col0_open {
            // A new record begins: the one buffered never ended.
            stats.bad(
                name,
                doc_line,
                "truncated",
                "a record that never ends (truncated)".into(),
            );
            doc.clear();
            match serde_json::from_slice::<Value>(trimmed) {
                Ok(v) => document(name, n, v, stats, each),
                Err(e) if e.is_eof() => {
                    doc.extend_from_slice(l);
                    doc_line = n;
                }
                Err(e) => stats.bad(name, n, "malformed", format!("not JSON: {e}")),
            }
            continue;
        }
        if doc.len() + l.len() > MAX_DOCUMENT_BYTES {
            stats.bad(
                name,
                doc_line,
                "too_long",
                format!(
                    "a document larger than {} MiB (split it, or export CSV)",
                    MAX_DOCUMENT_BYTES >> 20
                ),
            );
            doc.clear();
            skipping = true;
            continue;
        }
        doc.extend_from_slice(l);
        if matches!(l.first(), Some(b'}') | Some(b']')) {
            match serde_json::from_slice::<Value>(&doc) {
                Ok(v) => {
                    document(name, doc_line, v, stats, each);
                    doc.clear();
                }
                Err(e) if e.is_eof() => {}
                Err(e) => {
                    stats.bad(name, doc_line, "malformed", format!("not JSON: {e}"));
                    doc.clear();
                }
            }
        }
    }
    if !doc.is_empty() {
        stats.bad(
            name,
            doc_line,
            "truncated",
            "the input ends inside a record (truncated)".into(),
        );
    }
}

/// One JSON document: a record, `{"records": [...]}`, an array of records, or the
/// Log Analytics query API's `{"tables": [{"columns": [...], "rows": [...]}]}`.
fn document(
    name: &str,
    line: u64,
    v: Value,
    stats: &mut ReadStats,
    each: &mut dyn FnMut(HubRecord),
) {
    match v {
        Value::Array(items) => {
            for (i, it) in items.into_iter().enumerate() {
                element(name, line, Some(i), it, stats, each);
            }
        }
        Value::Object(mut m) => {
            if let Some(Value::Array(items)) = take_key(&mut m, "records") {
                for (i, it) in items.into_iter().enumerate() {
                    element(name, line, Some(i), it, stats, each);
                }
            } else if let Some(Value::Array(tables)) = take_key(&mut m, "tables") {
                for t in tables {
                    table(name, line, t, stats, each);
                }
            } else {
                element(name, line, None, Value::Object(m), stats, each);
            }
        }
        _ => stats.bad(
            name,
            line,
            "malformed",
            "a JSON value that is not a record".into(),
        ),
    }
}

fn take_key(m: &mut Map<String, Value>, key: &str) -> Option<Value> {
    let k = m.keys().find(|k| k.eq_ignore_ascii_case(key))?.clone();
    m.remove(&k)
}

fn table(name: &str, line: u64, t: Value, stats: &mut ReadStats, each: &mut dyn FnMut(HubRecord)) {
    let Value::Object(mut t) = t else {
        stats.bad(
            name,
            line,
            "malformed",
            "a table that is not an object".into(),
        );
        return;
    };
    let cols: Vec<String> = match take_key(&mut t, "columns") {
        Some(Value::Array(c)) => c
            .iter()
            .map(|c| match c {
                Value::Object(o) => o
                    .get("name")
                    .or_else(|| o.get("ColumnName"))
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                Value::String(s) => s.clone(),
                _ => String::new(),
            })
            .collect(),
        _ => {
            stats.bad(name, line, "malformed", "a table without columns".into());
            return;
        }
    };
    let Some(Value::Array(rows)) = take_key(&mut t, "rows") else {
        return;
    };
    for (i, row) in rows.into_iter().enumerate() {
        let Value::Array(cells) = row else {
            stats.bad(name, line, "malformed", format!("row {i} is not an array"));
            continue;
        };
        let m: Map<String, Value> = cols.iter().cloned().zip(cells).collect();
        element(name, line, Some(i), Value::Object(m), stats, each);
    }
}

fn element(
    name: &str,
    line: u64,
    index: Option<usize>,
    v: Value,
    stats: &mut ReadStats,
    each: &mut dyn FnMut(HubRecord),
) {
    let at = |m: String| match index {
        Some(i) => format!("record {i} of the document: {m}"),
        None => m,
    };
    let Value::Object(m) = v else {
        stats.bad(
            name,
            line,
            "malformed",
            at("a record that is not an object".into()),
        );
        return;
    };
    match normalize(&m) {
        Ok(Some(r)) => {
            stats.records += 1;
            each(r)
        }
        Ok(None) => stats.foreign += 1,
        Err(e) => stats.bad(name, line, "malformed", at(e)),
    }
}

fn read_csv(
    name: &str,
    r: Box<dyn BufRead + Send>,
    stats: &mut ReadStats,
    each: &mut dyn FnMut(HubRecord),
) {
    let mut rd = csv::ReaderBuilder::new()
        .flexible(true)
        .has_headers(true)
        .from_reader(r);
    let headers: Vec<String> = match rd.headers() {
        Ok(h) => h
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let s = if i == 0 {
                    s.trim_start_matches('\u{feff}')
                } else {
                    s
                };
                let s = s.trim();
                s.strip_suffix("[UTC]").unwrap_or(s).trim().to_string()
            })
            .collect(),
        Err(e) => {
            stats.bad(name, 1, "malformed", format!("not CSV: {e}"));
            return;
        }
    };
    let mut rec = csv::StringRecord::new();
    loop {
        match rd.read_record(&mut rec) {
            Ok(false) => break,
            Ok(true) => {
                let line = rec.position().map(|p| p.line()).unwrap_or(0);
                let m: Map<String, Value> = headers
                    .iter()
                    .zip(rec.iter())
                    .filter(|(_, v)| !v.is_empty())
                    .map(|(k, v)| (k.clone(), Value::String(v.to_string())))
                    .collect();
                match normalize(&m) {
                    Ok(Some(r)) => {
                        stats.records += 1;
                        each(r)
                    }
                    Ok(None) => stats.foreign += 1,
                    Err(e) => stats.bad(name, line, "malformed", e),
                }
            }
            Err(e) => {
                let line = e.position().map(|p| p.line()).unwrap_or(0);
                let fatal = matches!(e.kind(), csv::ErrorKind::Io(_));
                stats.bad(name, line, "malformed", format!("not CSV: {e}"));
                if fatal {
                    break;
                }
            }
        }
    }
}

fn get<'a>(m: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    m.get(key).or_else(|| {
        m.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.trim().is_empty() && s != "null" => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Object(_) | Value::Array(_) => Some(v.to_string()),
        _ => None,
    }
}

/// A field of the record: in `properties`, or flattened at the top (Log Analytics
/// writes `deviceId_s`).
fn field(
    top: &Map<String, Value>,
    props: Option<&Map<String, Value>>,
    key: &str,
) -> Option<String> {
    if let Some(v) = props.and_then(|p| get(p, key)).and_then(text) {
        return Some(v);
    }
    get(top, key)
        .or_else(|| get(top, &format!("{key}_s")))
        .or_else(|| get(top, &format!("{key}_d")))
        .or_else(|| get(top, &format!("properties_{key}_s")))
        .and_then(text)
}

/// `M/D/YYYY, h:mm:ss[.fff] AM|PM` (the Azure portal's CSV export).
fn parse_us_time(s: &str) -> Option<i64> {
    let (date, rest) = s.split_once(',')?;
    let mut d = date.trim().split('/');
    let (mo, da, y): (u32, u32, u32) = (
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
    );
    let rest = rest.trim();
    let (clock, ampm) = rest.rsplit_once(' ')?;
    let mut c = clock.split(':');
    let mut h: u32 = c.next()?.parse().ok()?;
    let mi: u32 = c.next()?.parse().ok()?;
    let sec = c.next()?;
    let pm = ampm.eq_ignore_ascii_case("PM");
    if !pm && !ampm.eq_ignore_ascii_case("AM") || h == 0 || h > 12 {
        return None;
    }
    if h == 12 {
        h = 0;
    }
    if pm {
        h += 12;
    }
    parse_time_ms(&format!("{y:04}-{mo:02}-{da:02}T{h:02}:{mi:02}:{sec:0>2}Z"))
}

fn parse_time(s: &str) -> Option<i64> {
    let s = s.trim();
    parse_time_ms(s).or_else(|| parse_us_time(s))
}

/// A Connections record, `None` for a record of another category or operation.
pub fn normalize(m: &Map<String, Value>) -> Result<Option<HubRecord>, String> {
    if let Some(cat) = get(m, "category").and_then(text) {
        if !cat.eq_ignore_ascii_case("Connections") {
            return Ok(None);
        }
    }
    let Some(op) = get(m, "operationName").and_then(text) else {
        return Err("no operationName".into());
    };
    let operation = if op.eq_ignore_ascii_case("deviceConnect") {
        Operation::Connect
    } else if op.eq_ignore_ascii_case("deviceDisconnect") {
        Operation::Disconnect
    } else {
        return Ok(None);
    };
    let props_owned;
    let props: Option<&Map<String, Value>> = match get(m, "properties")
        .or_else(|| get(m, "properties_s"))
    {
        Some(Value::Object(o)) => Some(o),
        Some(Value::String(s)) if !s.trim().is_empty() => match serde_json::from_str::<Value>(s) {
            Ok(Value::Object(o)) => {
                props_owned = o;
                Some(&props_owned)
            }
            _ => return Err("properties is a string but not a JSON object".into()),
        },
        Some(Value::Null) | None | Some(Value::String(_)) => None,
        Some(_) => return Err("properties is neither an object nor a JSON string".into()),
    };
    let Some(time) = get(m, "time")
        .or_else(|| get(m, "TimeGenerated"))
        .and_then(text)
    else {
        return Err("no time".into());
    };
    let Some(time_ms) = parse_time(&time) else {
        return Err("time is not a date and time (RFC 3339)".into());
    };
    if !crate::fleet::shared::plausible_ms(time_ms) {
        return Err("time is outside 2000–2099: not a log time".into());
    }
    let Some(device_id) = field(m, props, "deviceId") else {
        return Err("no properties.deviceId".into());
    };
    let result_type = get(m, "resultType")
        .and_then(text)
        .filter(|s| !matches!(s.as_str(), "0" | "200" | "Success" | "success"));
    Ok(Some(HubRecord {
        time_ms,
        operation,
        result_type,
        result_description: get(m, "resultDescription").and_then(text),
        device_id,
        module_id: field(m, props, "moduleId"),
        protocol: field(m, props, "protocol"),
        auth_type: field(m, props, "authType"),
        masked_ip: field(m, props, "maskedIpAddress"),
        status_code: field(m, props, "statusCode"),
        error_message: field(m, props, "errorMessage"),
        sdk_version: field(m, props, "sdkVersion"),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> (Vec<HubRecord>, ReadStats) {
        let mut out = Vec::new();
        let mut st = ReadStats::default();
        read_one(
            "t",
            Box::new(std::io::Cursor::new(text.as_bytes().to_vec())),
            false,
            &mut st,
            &mut |r| out.push(r),
        );
        (out, st)
    }

    #[test]
    fn portal_times_parse() {
        assert_eq!(
            parse_us_time("12/2/2026, 5:16:38.123 AM"),
            parse_time_ms("2026-12-02T05:16:38.123Z")
        );
        assert_eq!(
            parse_us_time("12/2/2026, 12:00:00 PM"),
            parse_time_ms("2026-12-02T12:00:00Z")
        );
        assert_eq!(parse_us_time("13/40/2026, 1:00:00 XM"), None);
    }

    #[test]
    fn pretty_records_and_truncation() {
        let rec = r#"{
  "time": "2026-12-02T05:00:00Z",
  "category": "Connections",
  "operationName": "deviceConnect",
  "properties": {"deviceId": "d1"}
}"#;
        let text = format!("{rec}\n{{\n  \"time\": \"x\",\n{rec}\n{}", &rec[..20]);
        let (out, st) = read(&text);
        assert_eq!(out.len(), 2);
        assert_eq!(st.bad, 2, "{:?}", st.bad_records);
        assert_eq!(st.bad_records[0].line, 7);
        assert_eq!(st.bad_records[1].line, 15);
    }
}

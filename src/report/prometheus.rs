//! The Prometheus view of a report: the text exposition format (version 0.0.4) that
//! node_exporter's textfile collector reads and `-o prometheus` prints.
//!
//! Names follow blackbox_exporter's style (`probe_*` there, `hubprobe_*` here): base
//! units (seconds, Unix timestamps in seconds), `_total` only on counters, `_info`
//! gauges of value 1 carrying strings as labels. Every family is listed in
//! [`METRICS`] and documented in `docs/metrics.md`.
//!
//! Rendering is pure: a function of the report (and the latest keep-alive tuning),
//! never of the clock. Samples carry no timestamps (the textfile collector rejects
//! them); the report's finish time is a metric of its own. Label values come from
//! the network (certificate subjects, DNS names) and are escaped; a series that would
//! repeat a label set already written is dropped, so the output stays valid whatever
//! the report holds.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::path::Path;

use serde_json::Value;

use crate::model::keepalive::{Confidence, GroupStats};
use crate::model::{
    CanaryReport, DisconnectCause, DnsEvidence, EndpointReport, Evidence, FamilyStatus,
    KeepaliveReport, Phase, Report, Severity, Status, TlsEvidence, Verdict,
};

/// The Content-Type of this format, for an HTTP server that would serve it.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A Prometheus metric type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricType {
    /// A value that can go up and down.
    Gauge,
    /// A value that only goes up (reset on restart); names end in `_total`.
    Counter,
}

impl MetricType {
    fn as_str(self) -> &'static str {
        match self {
            MetricType::Gauge => "gauge",
            MetricType::Counter => "counter",
        }
    }
}

/// One metric family hubprobe writes: its name, type, labels and HELP text.
#[derive(Debug, Clone, Copy)]
pub struct MetricDef {
    /// Full metric name.
    pub name: &'static str,
    /// Gauge or counter.
    pub kind: MetricType,
    /// Label names, in the order they are written.
    pub labels: &'static [&'static str],
    /// The HELP line.
    pub help: &'static str,
}

macro_rules! metrics {
    ($( $(#[$doc:meta])* $id:ident = $name:literal, $kind:ident, [$($l:literal),*], $help:literal; )*) => {
        $( $(#[$doc])* const $id: MetricDef = MetricDef {
            name: $name,
            kind: MetricType::$kind,
            labels: &[$($l),*],
            help: $help,
        }; )*
        /// Every family [`render`] may write, in output order.
        pub const METRICS: &[MetricDef] = &[$($id),*];
    };
}

metrics! {
    INFO = "hubprobe_info", Gauge, ["kind", "version", "host", "target", "profile", "auth", "device_id", "module_id", "label_*"],
        "Constant 1; the run's context as labels (operator labels are prefixed label_).";
    SUCCESS = "hubprobe_success", Gauge, [],
        "1 when the verdict is OK or WARNING (the device can connect), 0 when CRITICAL or UNKNOWN.";
    VERDICT = "hubprobe_verdict_code", Gauge, [],
        "The verdict as its exit code: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.";
    DURATION = "hubprobe_duration_seconds", Gauge, [],
        "Wall time of the run in seconds.";
    FINISHED = "hubprobe_finished_timestamp_seconds", Gauge, [],
        "When the run finished, Unix time in seconds.";
    ENDPOINT_INFO = "hubprobe_endpoint_info", Gauge, ["endpoint", "protocol", "transport", "port"],
        "Constant 1 per endpoint probed: its protocol, transport and port.";
    ENDPOINT_SUCCESS = "hubprobe_endpoint_success", Gauge, ["endpoint"],
        "1 when every phase of the endpoint's chain succeeded, else 0.";
    PHASE_DURATION = "hubprobe_phase_duration_seconds", Gauge, ["endpoint", "phase"],
        "Duration of a phase that ran (succeeded or failed), in seconds.";
    PHASE_SUCCESS = "hubprobe_phase_success", Gauge, ["endpoint", "phase"],
        "1 when the phase succeeded, 0 when it failed (skipped phases are absent).";
    PHASE_FAILURE = "hubprobe_phase_failure_info", Gauge, ["endpoint", "phase", "class"],
        "Constant 1 for a failed phase; class is the failure class id (docs/failure-classes.md).";
    DNS_ANSWERS = "hubprobe_dns_answer_records", Gauge, ["endpoint", "family"],
        "Address records in the DNS answer, per family (a, aaaa).";
    DNS_SUCCESS = "hubprobe_dns_lookup_success", Gauge, ["endpoint", "family"],
        "1 when the family's query found addresses, else 0.";
    TLS_VERSION = "hubprobe_tls_version_info", Gauge, ["endpoint", "version", "cipher_suite"],
        "Constant 1; the negotiated TLS version and cipher suite.";
    TLS_LEAF_EXPIRY = "hubprobe_tls_leaf_not_after_timestamp_seconds", Gauge, ["endpoint"],
        "NotAfter of the server's leaf certificate, Unix time in seconds.";
    TLS_CHAIN_EXPIRY = "hubprobe_tls_chain_earliest_not_after_timestamp_seconds", Gauge, ["endpoint"],
        "Earliest NotAfter of the certificates the server presented, Unix time in seconds.";
    TLS_LEAF_INFO = "hubprobe_tls_leaf_info", Gauge, ["endpoint", "subject", "issuer", "serial", "fingerprint_sha256"],
        "Constant 1; the server's leaf certificate.";
    TLS_ANCHOR = "hubprobe_tls_trust_anchor_info", Gauge, ["endpoint", "anchor", "subject", "origin", "expected", "legacy"],
        "Constant 1; the trust anchor that validated the chain, and whether the profile expects it or calls it legacy.";
    MQTT_CONNACK = "hubprobe_mqtt_connack_code", Gauge, ["endpoint"],
        "The MQTT CONNACK return code (0 accepted).";
    CLOCK_OFFSET = "hubprobe_clock_offset_seconds", Gauge, ["endpoint"],
        "Server clock (HTTP Date) minus device clock, seconds (1 s resolution).";
    SAS_EXPIRY = "hubprobe_sas_token_expiry_timestamp_seconds", Gauge, [],
        "Expiry of the SAS token the run used, Unix time in seconds.";
    CLOCK_VERDICT_OFFSET = "hubprobe_clock_verdict_offset_seconds", Gauge, ["source"],
        "The clock verdict: true time minus device time, seconds (positive: the device is behind); source is the reading it rests on (ntp, https_date, tls_validity).";
    CLOCK_VERDICT_UNCERTAINTY = "hubprobe_clock_verdict_uncertainty_seconds", Gauge, [],
        "Uncertainty (plus or minus) of the clock verdict's offset, seconds.";
    CLOCK_SOURCE_OFFSET = "hubprobe_clock_source_offset_seconds", Gauge, ["source", "origin"],
        "True time minus device time per clock source (origin: NTP server or endpoint), seconds; a tls_validity source is a bound.";
    NTP_REACHABLE = "hubprobe_ntp_reachable", Gauge, ["server", "status"],
        "1 when the SNTP server answered (any reply, even untrusted), 0 when blocked, refused or unresolved; status is how the query ended.";
    DEVICE_CERT_EXPIRY = "hubprobe_device_cert_not_after_timestamp_seconds", Gauge, ["subject"],
        "NotAfter of the X.509 device certificate, Unix time in seconds.";
    TLS_ANCHOR_IMPOSTOR = "hubprobe_tls_trust_anchor_impostor", Gauge, ["endpoint", "anchor"],
        "1 when the chain ends at a root with a name the profile pins but another key (a TLS-inspecting proxy), else 0.";
    FINDINGS = "hubprobe_findings", Gauge, ["severity"],
        "Findings of the run by severity (every severity listed).";
    FINDINGS_BY_CODE = "hubprobe_findings_by_code", Gauge, ["code", "severity"],
        "Findings of the run by code (a failure class id or a cross-endpoint code).";
    TRAFFIC_BYTES = "hubprobe_agent_traffic_bytes_total", Counter, ["purpose", "direction"],
        "Bytes the agent sent and received at the socket since it started (TLS, WebSocket and MQTT framing included), by purpose: checks, canary, uploads, tune.";
    CANARY_UP = "hubprobe_canary_up", Gauge, ["endpoint"],
        "1 when the canary MQTT session was up at report time, else 0.";
    CANARY_KEEPALIVE = "hubprobe_canary_keepalive_seconds", Gauge, ["endpoint"],
        "Keep-alive of the canary session, seconds.";
    CANARY_SINCE = "hubprobe_canary_connected_since_timestamp_seconds", Gauge, ["endpoint"],
        "Since when the current canary session is up, Unix time in seconds.";
    CANARY_SESSIONS = "hubprobe_canary_sessions_total", Counter, ["endpoint"],
        "Canary sessions opened (kept across agent restarts).";
    CANARY_CONNECT_FAILURES = "hubprobe_canary_connect_failures", Gauge, ["endpoint"],
        "Failed canary connection attempts since the last session ended (0 while connected).";
    CANARY_CONNECT_ERROR = "hubprobe_canary_connect_error_info", Gauge, ["endpoint", "class"],
        "Constant 1 while canary connections fail; class of the last failed attempt (mqtt.not_authorized, tcp.timeout ...).";
    CANARY_DISCONNECTS = "hubprobe_canary_disconnects_total", Counter, ["endpoint", "cause"],
        "Canary disconnects by cause (every cause listed).";
    CANARY_DIAGNOSIS = "hubprobe_canary_diagnosis_info", Gauge, ["endpoint", "kind", "iothub_cause"],
        "Constant 1; what the disconnect history points to (iothub_cause: 404104 cause family 1 or 2, or empty).";
    KA_INFO = "hubprobe_keepalive_info", Gauge, ["endpoint", "mode", "reflector", "confidence", "binding"],
        "Constant 1; how the keep-alive recommendation was measured and which limit decided it.";
    KA_RECOMMENDED = "hubprobe_keepalive_recommended_seconds", Gauge, ["endpoint"],
        "Recommended MQTT keep-alive, seconds.";
    KA_SPREAD_MIN = "hubprobe_keepalive_spread_min_seconds", Gauge, ["endpoint"],
        "Lower end of the per-device random keep-alive range (the upper end is the recommendation), seconds.";
    KA_PINGRESP = "hubprobe_keepalive_pingresp_timeout_seconds", Gauge, ["endpoint"],
        "Recommended PINGRESP timeout, seconds.";
    KA_TCP_USER_TIMEOUT = "hubprobe_keepalive_tcp_user_timeout_seconds", Gauge, ["endpoint"],
        "Recommended TCP_USER_TIMEOUT, seconds.";
    KA_CONFIDENCE = "hubprobe_keepalive_confidence", Gauge, ["endpoint"],
        "Confidence of the recommendation: 0 low, 1 medium, 2 high.";
    KA_LIMIT = "hubprobe_keepalive_limit_seconds", Gauge, ["endpoint", "limit"],
        "Every limit the recommendation considered (k_nat, lossy_link, k_detect, k_cap, keepalive_min, operator_floor), seconds.";
    KA_BYTES = "hubprobe_keepalive_bytes_per_day", Gauge, ["endpoint"],
        "Bytes per day spent on keep-alive rounds at the recommended keep-alive.";
    IDLE_TIMEOUT = "hubprobe_path_idle_timeout_seconds", Gauge, ["endpoint"],
        "Measured idle timeout of the network path (midpoint of the bracket), seconds.";
    IDLE_SURVIVED = "hubprobe_path_idle_survived_seconds", Gauge, ["endpoint"],
        "Longest idle time a flow survived below the shortest failure (lower end of the bracket), seconds.";
    IDLE_FAILED = "hubprobe_path_idle_failed_seconds", Gauge, ["endpoint"],
        "Shortest idle time after which a flow was gone (upper end of the bracket), seconds.";
    IDLE_NO_DROP = "hubprobe_path_idle_no_drop_up_to_seconds", Gauge, ["endpoint"],
        "Nothing dropped: every flow survived idle times up to this, seconds.";
    IDLE_INCONSISTENT = "hubprobe_path_idle_inconsistent", Gauge, ["endpoint"],
        "1 when a flow survived an idle time at or above one that failed (a non-deterministic path).";
    IDLE_DROP = "hubprobe_path_idle_drop_info", Gauge, ["endpoint", "kind"],
        "Constant 1; how the path dropped idle flows (silent_drop, reset, one_way, closed).";
    LINK_PROBES = "hubprobe_link_probes", Gauge, ["endpoint", "result"],
        "Stability samples of the tuner by result (answered, lost).";
    LINK_LOSS = "hubprobe_link_loss_ratio", Gauge, ["endpoint"],
        "Lost samples / samples (0..1).";
    LINK_RTT = "hubprobe_link_rtt_seconds", Gauge, ["endpoint", "group", "percentile"],
        "Round-trip time percentiles of the samples (percentile 50, 95, 99; group warm or cold), seconds.";
    LINK_SRTT = "hubprobe_link_srtt_seconds", Gauge, ["endpoint", "group"],
        "RFC 6298 smoothed RTT over the group's samples, seconds.";
    LINK_RTO = "hubprobe_link_rto_seconds", Gauge, ["endpoint", "group"],
        "RFC 6298 retransmission timeout over the group's samples, seconds.";
    LINK_OUTAGES = "hubprobe_link_outages", Gauge, ["endpoint"],
        "Outages seen while sampling (nothing got through).";
    LINK_LONGEST_OUTAGE = "hubprobe_link_longest_outage_seconds", Gauge, ["endpoint"],
        "Length of the longest outage, seconds.";
}

/// Renders the report as Prometheus text exposition. The keep-alive families come
/// from `report.keepalive` when the report has one (a `tune` report), else from
/// `keepalive` (the agent passes its latest tuning there); without either they are
/// absent.
pub fn render(report: &Report, keepalive: Option<&KeepaliveReport>) -> String {
    let mut out = Exposition::default();
    run_metrics(&mut out, report);
    for e in &report.endpoints {
        endpoint_metrics(&mut out, e);
    }
    if let Some(t) = report
        .target
        .sas_token
        .as_ref()
        .and_then(|s| unix_seconds(&s.expires_at))
    {
        out.add(&SAS_EXPIRY, &[], t);
    }
    clock_metrics(&mut out, report);
    finding_metrics(&mut out, report);
    if let Some(c) = &report.canary {
        canary_metrics(&mut out, c);
    }
    if let Some(t) = &report.traffic {
        traffic_metrics(&mut out, t);
    }
    if let Some(k) = report.keepalive.as_ref().or(keepalive) {
        keepalive_metrics(&mut out, k);
    }
    out.finish()
}

/// The clock verdict, its sources, SNTP reachability, the device certificate and
/// impostor anchors.
fn clock_metrics(out: &mut Exposition, r: &Report) {
    if let Some(c) = &r.clock {
        if let (Some(off), Some(src)) = (c.offset_s, c.source) {
            out.add(&CLOCK_VERDICT_OFFSET, &[("source", &serde_name(&src))], off);
            if let Some(u) = c.uncertainty_s {
                out.add(&CLOCK_VERDICT_UNCERTAINTY, &[], u);
            }
        }
        for s in &c.sources {
            out.add(
                &CLOCK_SOURCE_OFFSET,
                &[("source", &serde_name(&s.kind)), ("origin", &s.origin)],
                s.offset_s,
            );
        }
        for n in &c.ntp {
            out.add(
                &NTP_REACHABLE,
                &[("server", &n.server), ("status", n.status.as_str())],
                bool_value(!n.status.is_blocked()),
            );
        }
    }
    if let Some(d) = &r.device_certificate {
        out.add(
            &DEVICE_CERT_EXPIRY,
            &[("subject", &d.subject)],
            d.not_after_unix as f64,
        );
    }
    for e in &r.endpoints {
        if let Some(a) = evidence(e, Phase::Tls)
            .and_then(Evidence::tls)
            .and_then(|t| t.trust_anchor.as_ref())
            .filter(|a| a.spki_sha256.is_some())
        {
            out.add(
                &TLS_ANCHOR_IMPOSTOR,
                &[("endpoint", &e.name), ("anchor", &a.name)],
                bool_value(a.impostor),
            );
        }
    }
}

/// Writes `text` to `path` atomically, as node_exporter's textfile collector needs
/// (it may read at any moment): a temporary file in the same directory (named so the
/// collector, which reads `*.prom`, ignores it) is written, synced and renamed over
/// `path`, then the directory is synced. On error the temporary file is removed and
/// `path` is left as it was.
pub fn write_textfile(path: &Path, text: &str) -> std::io::Result<()> {
    crate::fsio::write_atomic(path, text.as_bytes())
}

/// A valid Prometheus label name for an operator label key: every character outside
/// `[a-zA-Z0-9_]` becomes `_`, prefixed with `label_` (so it cannot collide with
/// hubprobe's own labels or start with a digit or the reserved `__`).
pub fn label_name(key: &str) -> String {
    let mut s = String::with_capacity(key.len() + 6);
    s.push_str("label_");
    s.extend(key.chars().map(|c| {
        if c.is_ascii_alphanumeric() || c == '_' {
            c
        } else {
            '_'
        }
    }));
    s
}

/// Escapes a label value: backslash, double quote and line feed, as the format asks.
pub fn escape_label_value(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

/// A sample value: Go's float syntax for the special values, else Rust's shortest
/// round-trip decimal.
fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

/// Unix seconds of an RFC 3339 UTC time as the report writes them; `None` when it
/// does not parse (e.g. before 1970).
fn unix_seconds(rfc3339: &str) -> Option<f64> {
    let t = humantime::parse_rfc3339_weak(rfc3339).ok()?;
    t.duration_since(std::time::UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs_f64())
}

fn bool_value(b: bool) -> f64 {
    if b {
        1.0
    } else {
        0.0
    }
}

fn works(v: Verdict) -> bool {
    matches!(v, Verdict::Ok | Verdict::Warning)
}

/// The exposition being built: each family written once with its HELP and TYPE and
/// all of its samples together.
#[derive(Default)]
struct Exposition {
    families: Vec<Family>,
}

struct Family {
    def: &'static MetricDef,
    samples: Vec<String>,
    seen: HashSet<String>,
}

impl Exposition {
    /// Adds one sample. Labels are `(name, value)`; a repeated label set of the same
    /// family is dropped (first wins).
    fn add(&mut self, def: &'static MetricDef, labels: &[(&str, &str)], value: f64) {
        let mut set = String::new();
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                set.push(',');
            }
            let _ = write!(set, "{k}=\"{}\"", escape_label_value(v));
        }
        let idx = match self.families.iter().position(|f| f.def.name == def.name) {
            Some(i) => i,
            None => {
                self.families.push(Family {
                    def,
                    samples: Vec::new(),
                    seen: HashSet::new(),
                });
                self.families.len() - 1
            }
        };
        let fam = &mut self.families[idx];
        if !fam.seen.insert(set.clone()) {
            return;
        }
        let line = if set.is_empty() {
            format!("{} {}", def.name, format_value(value))
        } else {
            format!("{}{{{set}}} {}", def.name, format_value(value))
        };
        fam.samples.push(line);
    }

    /// The text, families in [`METRICS`] order.
    fn finish(mut self) -> String {
        let rank = |name: &str| METRICS.iter().position(|m| m.name == name);
        self.families.sort_by_key(|f| rank(f.def.name));
        let mut out = String::new();
        for f in self.families {
            let _ = writeln!(out, "# HELP {} {}", f.def.name, f.def.help);
            let _ = writeln!(out, "# TYPE {} {}", f.def.name, f.def.kind.as_str());
            for s in f.samples {
                out.push_str(&s);
                out.push('\n');
            }
        }
        out
    }
}

fn run_metrics(out: &mut Exposition, r: &Report) {
    let t = &r.target;
    let mut labels: Vec<(String, String)> = vec![
        ("kind".into(), r.kind.clone()),
        ("version".into(), r.hubprobe_version.clone()),
        ("host".into(), r.host.clone()),
        ("target".into(), t.host.clone()),
        ("profile".into(), t.profile.clone()),
        ("auth".into(), t.auth.clone()),
    ];
    if let Some(d) = &t.device_id {
        labels.push(("device_id".into(), d.clone()));
    }
    if let Some(m) = &t.module_id {
        labels.push(("module_id".into(), m.clone()));
    }
    for (k, v) in &r.labels {
        let base = label_name(k);
        // Two keys may sanitise to the same name (`a.b`, `a-b`): number the later ones.
        let mut name = base.clone();
        let mut n = 2;
        while labels.iter().any(|(l, _)| *l == name) {
            name = format!("{base}_{n}");
            n += 1;
        }
        labels.push((name, v.clone()));
    }
    let refs: Vec<(&str, &str)> = labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    out.add(&INFO, &refs, 1.0);
    out.add(&SUCCESS, &[], bool_value(works(r.verdict)));
    out.add(&VERDICT, &[], f64::from(r.verdict.exit_code().code()));
    out.add(&DURATION, &[], r.duration_ms / 1000.0);
    if let Some(t) = unix_seconds(&r.finished_at) {
        out.add(&FINISHED, &[], t);
    }
}

/// The serde name of a unit enum (`mqtt`, `tls` …).
fn serde_name<T: serde::Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(Value::String(s)) => s,
        _ => String::new(),
    }
}

fn endpoint_metrics(out: &mut Exposition, e: &EndpointReport) {
    let ep = e.name.as_str();
    let port = e.port.to_string();
    out.add(
        &ENDPOINT_INFO,
        &[
            ("endpoint", ep),
            ("protocol", &serde_name(&e.protocol)),
            ("transport", &serde_name(&e.transport)),
            ("port", &port),
        ],
        1.0,
    );
    out.add(
        &ENDPOINT_SUCCESS,
        &[("endpoint", ep)],
        bool_value(works(e.verdict)),
    );
    for p in &e.phases {
        let phase = p.phase.as_str();
        if p.status == Status::Skipped {
            continue;
        }
        if let Some(ms) = p.duration_ms {
            out.add(
                &PHASE_DURATION,
                &[("endpoint", ep), ("phase", phase)],
                ms / 1000.0,
            );
        }
        out.add(
            &PHASE_SUCCESS,
            &[("endpoint", ep), ("phase", phase)],
            bool_value(p.status == Status::Ok),
        );
        if p.status == Status::Failed {
            let class = p.class.map(|c| c.id()).unwrap_or("unknown");
            out.add(
                &PHASE_FAILURE,
                &[("endpoint", ep), ("phase", phase), ("class", class)],
                1.0,
            );
        }
    }
    if let Some(ev) = evidence(e, Phase::Dns).and_then(Evidence::dns) {
        dns_metrics(out, ep, ev);
    }
    if let Some(ev) = evidence(e, Phase::Tls).and_then(Evidence::tls) {
        tls_metrics(out, ep, ev);
    }
    if let Some(connack) = evidence(e, Phase::Mqtt)
        .and_then(Evidence::mqtt)
        .and_then(|m| m.connack.as_ref())
    {
        out.add(&MQTT_CONNACK, &[("endpoint", ep)], f64::from(connack.code));
    }
    if let Some(off) = evidence(e, Phase::Http)
        .and_then(Evidence::http)
        .and_then(|h| h.clock_offset_s)
    {
        out.add(&CLOCK_OFFSET, &[("endpoint", ep)], off);
    }
}

fn evidence(e: &EndpointReport, phase: Phase) -> Option<&Evidence> {
    e.phase(phase).and_then(|p| p.evidence())
}

fn dns_metrics(out: &mut Exposition, ep: &str, ev: &DnsEvidence) {
    for (family, f) in [("a", &ev.a), ("aaaa", &ev.aaaa)] {
        let Some(f) = f else {
            continue;
        };
        let labels = [("endpoint", ep), ("family", family)];
        out.add(&DNS_ANSWERS, &labels, f.records.len() as f64);
        out.add(
            &DNS_SUCCESS,
            &labels,
            bool_value(f.status == FamilyStatus::Ok),
        );
    }
}

fn tls_metrics(out: &mut Exposition, ep: &str, ev: &TlsEvidence) {
    if let Some(version) = &ev.version {
        out.add(
            &TLS_VERSION,
            &[
                ("endpoint", ep),
                ("version", version),
                ("cipher_suite", ev.cipher_suite.as_deref().unwrap_or("")),
            ],
            1.0,
        );
    }
    if let Some(leaf) = ev.chain.first() {
        if let Some(t) = unix_seconds(&leaf.not_after) {
            out.add(&TLS_LEAF_EXPIRY, &[("endpoint", ep)], t);
        }
        out.add(
            &TLS_LEAF_INFO,
            &[
                ("endpoint", ep),
                ("subject", &leaf.subject),
                ("issuer", &leaf.issuer),
                ("serial", &leaf.serial),
                ("fingerprint_sha256", &leaf.sha256),
            ],
            1.0,
        );
    }
    let earliest = ev
        .chain
        .iter()
        .filter_map(|c| unix_seconds(&c.not_after))
        .min_by(f64::total_cmp);
    if let Some(t) = earliest {
        out.add(&TLS_CHAIN_EXPIRY, &[("endpoint", ep)], t);
    }
    if let Some(a) = &ev.trust_anchor {
        let flag = |b: bool| if b { "true" } else { "false" };
        out.add(
            &TLS_ANCHOR,
            &[
                ("endpoint", ep),
                ("anchor", &a.name),
                ("subject", &a.subject),
                ("origin", &a.origin),
                ("expected", flag(a.expected)),
                ("legacy", flag(a.legacy)),
            ],
            1.0,
        );
    }
}

fn finding_metrics(out: &mut Exposition, r: &Report) {
    for sev in [Severity::Critical, Severity::Warning, Severity::Info] {
        let n = r.findings.iter().filter(|f| f.severity == sev).count();
        out.add(&FINDINGS, &[("severity", &serde_name(&sev))], n as f64);
    }
    let mut by_code: std::collections::BTreeMap<(&str, Severity), usize> = Default::default();
    for f in &r.findings {
        *by_code.entry((f.code.as_str(), f.severity)).or_default() += 1;
    }
    for ((code, sev), n) in by_code {
        out.add(
            &FINDINGS_BY_CODE,
            &[("code", code), ("severity", &serde_name(&sev))],
            n as f64,
        );
    }
}

fn traffic_metrics(out: &mut Exposition, t: &crate::model::TrafficReport) {
    let s = &t.since_start;
    for (purpose, b) in [
        ("checks", s.checks),
        ("canary", s.canary),
        ("uploads", s.uploads),
        ("tune", s.tune),
    ] {
        for (direction, n) in [("sent", b.sent), ("received", b.received)] {
            out.add(
                &TRAFFIC_BYTES,
                &[("purpose", purpose), ("direction", direction)],
                n as f64,
            );
        }
    }
}

fn canary_metrics(out: &mut Exposition, c: &CanaryReport) {
    let ep = [("endpoint", c.endpoint.as_str())];
    out.add(&CANARY_UP, &ep, bool_value(c.connected));
    out.add(&CANARY_KEEPALIVE, &ep, c.keepalive_s as f64);
    if let Some(t) = c.connected_since.as_deref().and_then(unix_seconds) {
        out.add(&CANARY_SINCE, &ep, t);
    }
    out.add(&CANARY_SESSIONS, &ep, c.sessions_total as f64);
    out.add(&CANARY_CONNECT_FAILURES, &ep, f64::from(c.connect_failures));
    if let Some(e) = &c.connect_error {
        // Only the class id: the message may be long and varies per attempt.
        let class = e.split(':').next().unwrap_or("").trim();
        out.add(
            &CANARY_CONNECT_ERROR,
            &[("endpoint", c.endpoint.as_str()), ("class", class)],
            1.0,
        );
    }
    // Every known cause, zeros included (so rate() sees the series from the start),
    // then any cause a newer history may hold.
    for cause in DisconnectCause::ALL {
        let n = c
            .disconnects_total
            .get(cause.as_str())
            .copied()
            .unwrap_or(0);
        out.add(
            &CANARY_DISCONNECTS,
            &[("endpoint", &c.endpoint), ("cause", cause.as_str())],
            n as f64,
        );
    }
    for (cause, n) in &c.disconnects_total {
        out.add(
            &CANARY_DISCONNECTS,
            &[("endpoint", &c.endpoint), ("cause", cause)],
            *n as f64,
        );
    }
    let kind = c.diagnosis.kind.as_str();
    let cause = c
        .diagnosis
        .iothub_cause
        .map(|n| n.to_string())
        .unwrap_or_default();
    out.add(
        &CANARY_DIAGNOSIS,
        &[
            ("endpoint", &c.endpoint),
            ("kind", kind),
            ("iothub_cause", &cause),
        ],
        1.0,
    );
}

fn keepalive_metrics(out: &mut Exposition, k: &KeepaliveReport) {
    let ep = [("endpoint", k.endpoint.as_str())];
    let rec = &k.recommendation;
    out.add(
        &KA_INFO,
        &[
            ("endpoint", &k.endpoint),
            ("mode", &k.mode),
            ("reflector", k.reflector.as_deref().unwrap_or("")),
            ("confidence", &serde_name(&rec.confidence)),
            ("binding", &serde_name(&rec.binding)),
        ],
        1.0,
    );
    out.add(&KA_RECOMMENDED, &ep, rec.keepalive_s as f64);
    out.add(&KA_SPREAD_MIN, &ep, rec.spread.min_s as f64);
    out.add(&KA_PINGRESP, &ep, rec.pingresp_timeout_s as f64);
    out.add(&KA_TCP_USER_TIMEOUT, &ep, rec.tcp_user_timeout_s as f64);
    let confidence = match rec.confidence {
        Confidence::Low => 0.0,
        Confidence::Medium => 1.0,
        Confidence::High => 2.0,
    };
    out.add(&KA_CONFIDENCE, &ep, confidence);
    for l in &rec.limits {
        out.add(
            &KA_LIMIT,
            &[("endpoint", &k.endpoint), ("limit", &serde_name(&l.kind))],
            l.value_s as f64,
        );
    }
    out.add(&KA_BYTES, &ep, rec.bytes_per_day as f64);

    if let Some(d) = &k.discovery {
        let secs = |ms: Option<u64>| ms.map(|v| v as f64 / 1000.0);
        if let Some(v) = secs(d.estimate_ms) {
            out.add(&IDLE_TIMEOUT, &ep, v);
        }
        if let Some(v) = secs(d.longest_survived_ms) {
            out.add(&IDLE_SURVIVED, &ep, v);
        }
        if let Some(v) = secs(d.shortest_failed_ms) {
            out.add(&IDLE_FAILED, &ep, v);
        }
        if let Some(v) = secs(d.no_drop_up_to_ms) {
            out.add(&IDLE_NO_DROP, &ep, v);
        }
        out.add(&IDLE_INCONSISTENT, &ep, bool_value(d.inconsistent));
        if let Some(kind) = d.drop_kind {
            out.add(
                &IDLE_DROP,
                &[("endpoint", &k.endpoint), ("kind", &serde_name(&kind))],
                1.0,
            );
        }
    }

    let s = &k.stability;
    out.add(
        &LINK_PROBES,
        &[("endpoint", &k.endpoint), ("result", "answered")],
        s.answered as f64,
    );
    out.add(
        &LINK_PROBES,
        &[("endpoint", &k.endpoint), ("result", "lost")],
        s.lost as f64,
    );
    if let Some(loss) = s.loss_rate {
        out.add(&LINK_LOSS, &ep, loss);
    }
    for (group, g) in [("warm", &s.warm), ("cold", &s.cold)] {
        group_metrics(out, &k.endpoint, group, g);
    }
    out.add(&LINK_OUTAGES, &ep, s.outages.len() as f64);
    if let Some(longest) = s.outages.iter().map(|o| o.length_ms).max_by(f64::total_cmp) {
        out.add(&LINK_LONGEST_OUTAGE, &ep, longest / 1000.0);
    }
}

fn group_metrics(out: &mut Exposition, ep: &str, group: &str, g: &GroupStats) {
    if let Some(p) = &g.rtt_percentiles {
        for (q, ms) in [("50", p.p50_ms), ("95", p.p95_ms), ("99", p.p99_ms)] {
            out.add(
                &LINK_RTT,
                &[("endpoint", ep), ("group", group), ("percentile", q)],
                ms / 1000.0,
            );
        }
    }
    if let Some(rto) = &g.rto {
        let labels = [("endpoint", ep), ("group", group)];
        out.add(&LINK_SRTT, &labels, rto.srtt_ms / 1000.0);
        out.add(&LINK_RTO, &labels, rto.rto_ms / 1000.0);
    }
}

#[cfg(test)]
mod tests;

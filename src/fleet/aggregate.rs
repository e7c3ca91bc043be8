//! The accumulators of the fleet summary: pure, fed one [`Observation`] at a time,
//! memory bounded by the number of devices (and labels, endpoints, classes), never
//! by the number of reports.

use std::collections::{BTreeMap, BTreeSet};

use crate::diagnose::CLOCK_OFFSET_WARNING_S;
use crate::model::DisconnectCause;
use crate::model::Verdict;
use crate::model::{Phase, Status};

use super::incident::{IncidentAcc, Members, Signature};
use super::record::{DisconnectObs, Observation, Rejection};
use super::shared::{
    plausible_ms, IncidentContext, IntMap, IntSet, Interner, PLAUSIBLE_FROM_MS, PLAUSIBLE_TO_MS,
};
use super::sketch::LogHistogram;
use super::summary::*;
use super::FleetOptions;

/// How many recent report ids are remembered per device to drop repeats (a
/// store-and-forward upload repeats a report soon after the first copy).
pub const DEDUP_IDS_PER_DEVICE: usize = 32;

/// The phases in chain order (index = position in per-endpoint arrays).
pub const PHASES: [Phase; 7] = [
    Phase::Dns,
    Phase::Tcp,
    Phase::Tls,
    Phase::Websocket,
    Phase::Mqtt,
    Phase::Amqp,
    Phase::Http,
];

fn phase_index(p: Phase) -> usize {
    PHASES.iter().position(|x| *x == p).unwrap_or(0)
}

/// What is kept per device.
#[derive(Debug, Clone)]
struct DeviceState {
    /// The latest report's time is believable.
    latest_plausible: bool,
    latest_ms: i64,
    latest_verdict: Verdict,
    /// Group (by `--by`) of the latest report.
    latest_group: u32,
    network: u32,
    site: u32,
    /// The latest report with a failed phase: (started, `endpoint/phase class`).
    last_failure: Option<(i64, u32)>,
    recent: [u64; DEDUP_IDS_PER_DEVICE],
    filled: usize,
    next: usize,
}

#[derive(Debug, Default, Clone)]
struct PhaseAcc {
    ok: u64,
    failed: u64,
    skipped: u64,
    durations: Option<Box<LogHistogram>>,
}

#[derive(Debug, Default, Clone)]
struct ClassAcc {
    reports: u64,
    devices: IntSet<u32>,
    endpoints: BTreeSet<String>,
}

/// The per-group accumulator (the whole fleet is one group too).
#[derive(Debug, Default)]
struct GroupAcc {
    reports: u64,
    kinds: BTreeMap<String, u64>,
    devices: IntSet<u32>,
    endpoints: BTreeMap<String, [PhaseAcc; 7]>,
    classes: BTreeMap<String, ClassAcc>,
    anchors: BTreeMap<String, IntSet<u32>>,
    unknown_ca: IntSet<u32>,
    clock: LogHistogram,
    clock_off: IntSet<u32>,
    tune_reports: u64,
    keepalive: BTreeMap<u64, u64>,
    idle: BTreeMap<u64, u64>,
    idle_hist: LogHistogram,
    disconnects: BTreeMap<DisconnectCause, DisconnectAcc>,
}

/// Canary disconnects of one cause.
#[derive(Debug, Default)]
struct DisconnectAcc {
    events: u64,
    devices: IntSet<u32>,
    reconnect: Option<Box<LogHistogram>>,
    failed_attempts: u64,
}

impl GroupAcc {
    fn add(&mut self, dev: u32, o: &Observation) {
        self.reports += 1;
        match self.kinds.get_mut(o.kind()) {
            Some(n) => *n += 1,
            None => {
                self.kinds.insert(o.kind().to_string(), 1);
            }
        }
        self.devices.insert(dev);
        for (ei, name) in o.endpoints.iter().enumerate() {
            let name = o.str(*name);
            let eps = match self.endpoints.get_mut(name) {
                Some(e) => e,
                None => self.endpoints.entry(name.to_string()).or_default(),
            };
            for p in o.phases.iter().filter(|p| p.endpoint as usize == ei) {
                let acc = &mut eps[phase_index(p.phase)];
                match p.status {
                    Status::Ok => {
                        acc.ok += 1;
                        if let Some(d) = p.duration_ms {
                            acc.durations.get_or_insert_with(Default::default).add(d);
                        }
                    }
                    Status::Failed => acc.failed += 1,
                    Status::Skipped => acc.skipped += 1,
                }
                if let (Some(c), Status::Failed) = (o.class(p), p.status) {
                    let ca = match self.classes.get_mut(c) {
                        Some(ca) => ca,
                        None => self.classes.entry(c.to_string()).or_default(),
                    };
                    ca.reports += 1;
                    ca.devices.insert(dev);
                    if !ca.endpoints.contains(name) {
                        ca.endpoints.insert(name.to_string());
                    }
                    if c == "tls.unknown_ca" {
                        self.unknown_ca.insert(dev);
                    }
                }
                if let Some(off) = p.clock_offset_s {
                    self.clock.add(off.abs());
                    if off.abs() > CLOCK_OFFSET_WARNING_S {
                        self.clock_off.insert(dev);
                    }
                }
            }
        }
        for a in &o.anchors {
            let a = o.str(*a);
            match self.anchors.get_mut(a) {
                Some(s) => {
                    s.insert(dev);
                }
                None => {
                    self.anchors.insert(a.to_string(), IntSet::from_iter([dev]));
                }
            }
        }
        if let Some(k) = o.keepalive_s {
            self.tune_reports += 1;
            *self.keepalive.entry(k).or_default() += 1;
        }
        if let Some(ms) = o.idle_timeout_ms {
            *self.idle.entry(ms.saturating_add(500) / 1000).or_default() += 1;
            self.idle_hist.add(ms as f64 / 1000.0);
        }
    }

    fn add_disconnect(&mut self, dev: u32, d: &DisconnectObs) {
        let e = self.disconnects.entry(d.cause).or_default();
        e.events += 1;
        e.devices.insert(dev);
        if let Some(r) = d.reconnect_s {
            e.reconnect.get_or_insert_with(Default::default).add(r);
        }
        e.failed_attempts += d.failed_attempts as u64;
    }
}

/// The latest version seen of a disconnect record that has an id.
#[derive(Debug, Clone, Copy)]
struct PendingDisconnect {
    /// `started_at` of the report that carried this version.
    report_ms: i64,
    group: u32,
    network: u32,
    site: u32,
    d: DisconnectObs,
}

impl PendingDisconnect {
    /// True when `self` is a later version than `other`: from a later report;
    /// from the same instant, the completed one.
    fn supersedes(&self, other: &PendingDisconnect) -> bool {
        (
            self.report_ms,
            self.d.reconnect_s.is_some(),
            self.d.failed_attempts,
        ) > (
            other.report_ms,
            other.d.reconnect_s.is_some(),
            other.d.failed_attempts,
        )
    }
}

/// Times outside the believed window, and whose.
#[derive(Debug, Default)]
struct ImplausibleAcc {
    reports: u64,
    disconnects: u64,
    devices: IntSet<u32>,
}

/// Input counters and the first problems seen.
#[derive(Debug, Default)]
pub struct InputStats {
    /// Files read.
    pub files: u64,
    /// Files under a directory that were not read (not .json/.ndjson/.jsonl/.avro[.gz], nor Avro without an extension).
    pub files_skipped: Vec<String>,
    /// Lines (or documents) read.
    pub records: u64,
    /// Blank lines.
    pub blank: u64,
    /// Problems by kind.
    pub problem_counts: BTreeMap<&'static str, u64>,
    /// The first problems by (file, line), with their order key.
    problems: Vec<((u32, u64), Problem)>,
}

/// Tune figures of one network: recommended keep-alive (s → reports), measured
/// idle timeouts (s → reports).
type NetTune = (BTreeMap<u64, u64>, BTreeMap<u64, u64>);

/// How many problems are listed one by one.
pub const PROBLEMS_LISTED: usize = 20;

/// The whole fleet aggregation.
pub struct Aggregator {
    opts: FleetOptions,
    devices: Interner,
    states: Vec<DeviceState>,
    labels: Interner,
    groups: Interner,
    total: GroupAcc,
    by_group: Vec<GroupAcc>,
    incidents: IncidentAcc,
    /// Disconnect records with an id, by (device, id hash): the latest version.
    pending: IntMap<(u32, u64), PendingDisconnect>,
    implausible: ImplausibleAcc,
    /// `endpoint/phase class` strings of the devices' latest failures.
    failures: Interner,
    /// Per network: recommended keep-alive (s → reports) and measured idle timeouts (s → reports).
    net_tune: IntMap<u32, NetTune>,
    /// Input counters.
    pub input: InputStats,
    reports: u64,
    /// Reports with a believable `started_at`.
    plausible_reports: u64,
    duplicates: u64,
    first_ms: i64,
    last_ms: i64,
    /// A buffer for the text of a latest failure.
    scratch: String,
}

impl Aggregator {
    /// An empty aggregation.
    pub fn new(opts: FleetOptions) -> Aggregator {
        let mut labels = Interner::default();
        labels.id(NO_LABEL);
        Aggregator {
            incidents: IncidentAcc::new(opts.bucket_ms()),
            opts,
            devices: Interner::default(),
            states: Vec::new(),
            labels,
            groups: Interner::default(),
            total: GroupAcc::default(),
            by_group: Vec::new(),
            pending: IntMap::default(),
            implausible: ImplausibleAcc::default(),
            failures: Interner::default(),
            net_tune: IntMap::default(),
            input: InputStats::default(),
            reports: 0,
            plausible_reports: 0,
            duplicates: 0,
            first_ms: i64::MAX,
            last_ms: i64::MIN,
            scratch: String::new(),
        }
    }

    fn label<'a>(o: &'a Observation, key: &str) -> &'a str {
        o.label(key).unwrap_or(NO_LABEL)
    }

    /// Reports counted so far (repeats dropped).
    pub fn reports(&self) -> u64 {
        self.reports
    }

    /// Records a line that is not a usable report.
    pub fn reject(&mut self, file_index: u32, file: &str, line: u64, r: Rejection) {
        *self.input.problem_counts.entry(r.kind()).or_default() += 1;
        let key = (file_index, line);
        let list = &mut self.input.problems;
        if list.len() >= PROBLEMS_LISTED && list.last().is_some_and(|(k, _)| *k < key) {
            return;
        }
        list.push((
            key,
            Problem {
                file: file.to_string(),
                line,
                kind: r.kind().to_string(),
                message: r.message().to_string(),
            },
        ));
        // Keep the first ones by position, whatever order the parser threads finish in.
        list.sort_by_key(|(k, _)| *k);
        list.truncate(PROBLEMS_LISTED);
    }

    /// Adds one report (a repeat of a recent id of the same device is counted and dropped).
    pub fn add(&mut self, o: &Observation) {
        let h = o.id_hash;
        let network = self.labels.id(Self::label(o, &self.opts.network_label));
        let site = self.labels.id(Self::label(o, &self.opts.site_label));
        let group = match &self.opts.by {
            Some(key) => self.groups.id(Self::label(o, key)),
            None => 0,
        };
        let before = self.devices.len();
        let dev = self.devices.id(o.device());
        if self.devices.len() > before {
            self.states.push(DeviceState {
                latest_plausible: false,
                latest_ms: i64::MIN,
                latest_verdict: o.verdict,
                latest_group: group,
                network,
                site,
                last_failure: None,
                recent: [0; DEDUP_IDS_PER_DEVICE],
                filled: 0,
                next: 0,
            });
        }
        let st = &mut self.states[dev as usize];
        if st.recent[..st.filled].contains(&h) {
            self.duplicates += 1;
            return;
        }
        st.recent[st.next] = h;
        st.next = (st.next + 1) % DEDUP_IDS_PER_DEVICE;
        st.filled = (st.filled + 1).min(DEDUP_IDS_PER_DEVICE);
        let plausible = plausible_ms(o.started_ms);
        // Latest report per device (a believable time beats one from a clock gone
        // wrong); ties go to the greater verdict so the result does not depend on
        // the input order.
        if (plausible, o.started_ms, o.verdict)
            > (st.latest_plausible, st.latest_ms, st.latest_verdict)
        {
            st.latest_plausible = plausible;
            st.latest_ms = o.started_ms;
            st.latest_verdict = o.verdict;
            st.latest_group = group;
            st.network = network;
            st.site = site;
        }
        if st.last_failure.is_none_or(|(ms, _)| o.started_ms >= ms) {
            if let Some(p) = o.phases.iter().find(|p| p.status == Status::Failed) {
                // Written into a buffer kept for it: no allocation per report.
                let text = &mut self.scratch;
                text.clear();
                text.push_str(o.endpoint(p.endpoint));
                text.push('/');
                text.push_str(p.phase.as_str());
                text.push(' ');
                text.push_str(o.class(p).unwrap_or("failed"));
                st.last_failure = Some((o.started_ms, self.failures.id(text)));
            }
        }
        if o.keepalive_s.is_some() || o.idle_timeout_ms.is_some() {
            let t = self.net_tune.entry(network).or_default();
            if let Some(k) = o.keepalive_s {
                *t.0.entry(k).or_default() += 1;
            }
            if let Some(ms) = o.idle_timeout_ms {
                *t.1.entry((ms + 500) / 1000).or_default() += 1;
            }
        }
        self.reports += 1;
        if plausible {
            self.plausible_reports += 1;
            self.first_ms = self.first_ms.min(o.started_ms);
            self.last_ms = self.last_ms.max(o.started_ms);
            self.incidents.add_check(dev, (network, site, group), o);
        } else {
            self.implausible.reports += 1;
            self.implausible.devices.insert(dev);
        }
        self.total.add(dev, o);
        if self.opts.by.is_some() {
            while self.by_group.len() <= group as usize {
                self.by_group.push(GroupAcc::default());
            }
            self.by_group[group as usize].add(dev, o);
        }
        for d in &o.disconnects {
            let p = PendingDisconnect {
                report_ms: o.started_ms,
                group,
                network,
                site,
                d: *d,
            };
            match d.id_hash {
                // From an older agent: no later version can come.
                None => self.add_disconnect(dev, &p),
                Some(id) => match self.pending.get_mut(&(dev, id)) {
                    Some(old) => {
                        if p.supersedes(old) {
                            *old = p;
                        }
                    }
                    None => {
                        self.pending.insert((dev, id), p);
                    }
                },
            }
        }
    }

    /// Counts one disconnect (in its final version).
    fn add_disconnect(&mut self, dev: u32, p: &PendingDisconnect) {
        self.total.add_disconnect(dev, &p.d);
        if self.opts.by.is_some() {
            while self.by_group.len() <= p.group as usize {
                self.by_group.push(GroupAcc::default());
            }
            self.by_group[p.group as usize].add_disconnect(dev, &p.d);
        }
        if i64::try_from(p.d.at_ms).is_ok_and(plausible_ms) {
            self.incidents
                .add_disconnect(dev, (p.network, p.site, p.group), &p.d);
        } else {
            self.implausible.disconnects += 1;
            self.implausible.devices.insert(dev);
        }
    }

    /// The summary.
    pub fn finish(mut self) -> FleetSummary {
        for ((dev, _), p) in std::mem::take(&mut self.pending) {
            self.add_disconnect(dev, &p);
        }
        let span = (self.plausible_reports > 0).then(|| Span {
            from: rfc3339_ms(self.first_ms),
            to: rfc3339_ms(self.last_ms),
        });
        let overall = self.group_summary(&self.total, None);
        let mut groups = Vec::new();
        if let Some(key) = &self.opts.by {
            for (i, acc) in self.by_group.iter().enumerate() {
                groups.push(GroupEntry {
                    label: key.clone(),
                    value: self.groups.name(i as u32).to_string(),
                    summary: self.group_summary(acc, Some(i as u32)),
                    top_failure_outside_incidents: None,
                });
            }
        }
        let incidents = self.incidents.finish(&IncidentContext {
            devices: &self.devices,
            labels: &self.labels,
            devices_total: self.devices.len() as u64,
            span_ms: (self.plausible_reports > 0).then_some((self.first_ms, self.last_ms)),
            opts: &self.opts,
        });
        let outside = self.incidents.outside_windows();
        if self.opts.by.is_some() {
            for (i, g) in groups.iter_mut().enumerate() {
                g.top_failure_outside_incidents = top_class_of_group(&outside, i as u32);
            }
            groups.sort_by(|a, b| a.value.cmp(&b.value));
        }
        let persistent = self.persistent(&outside, incidents.min_devices);
        let device_rows = self.device_rows();
        let mut problems = self.input.problem_counts.clone();
        for k in ["malformed", "foreign", "unknown_schema"] {
            problems.entry(k).or_default();
        }
        FleetSummary {
            schema: FLEET_SCHEMA_ID.into(),
            input: InputSummary {
                files: self.input.files,
                files_skipped: self.input.files_skipped.clone(),
                records: self.input.records,
                blank_lines: self.input.blank,
                reports: self.reports,
                duplicates: self.duplicates,
                malformed: problems["malformed"],
                foreign: problems["foreign"],
                unknown_schema: problems["unknown_schema"],
                problems: self.input.problems.iter().map(|(_, p)| p.clone()).collect(),
                implausible_times: ImplausibleTimes {
                    from: rfc3339_ms(PLAUSIBLE_FROM_MS),
                    to: rfc3339_ms(PLAUSIBLE_TO_MS),
                    reports: self.implausible.reports,
                    disconnects: self.implausible.disconnects,
                    devices: self.implausible.devices.len() as u64,
                    example_devices: self.examples(&self.implausible.devices, 10),
                },
            },
            devices: self.devices.len() as u64,
            span,
            options: self.opts.clone(),
            overall,
            groups,
            incidents,
            persistent,
            device_rows,
        }
    }

    /// Every device, worst first: critical, warning, unknown, ok; then the most
    /// recent failure first; then by name.
    fn device_rows(&self) -> Vec<DeviceRow> {
        let rank = |v: Verdict| match v {
            Verdict::Critical => 0,
            Verdict::Warning => 1,
            Verdict::Unknown => 2,
            Verdict::Ok => 3,
        };
        let mut idx: Vec<usize> = (0..self.states.len()).collect();
        idx.sort_by(|&a, &b| {
            let (sa, sb) = (&self.states[a], &self.states[b]);
            rank(sa.latest_verdict)
                .cmp(&rank(sb.latest_verdict))
                .then(
                    sb.last_failure
                        .map(|f| f.0)
                        .cmp(&sa.last_failure.map(|f| f.0)),
                )
                .then(self.devices.name(a as u32).cmp(self.devices.name(b as u32)))
        });
        idx.into_iter()
            .map(|i| {
                let st = &self.states[i];
                DeviceRow {
                    device: self.devices.name(i as u32).to_string(),
                    verdict: st.latest_verdict,
                    latest: rfc3339_ms(st.latest_ms),
                    network: self.labels.name(st.network).to_string(),
                    site: self.labels.name(st.site).to_string(),
                    last_failure: st
                        .last_failure
                        .map(|(_, f)| self.failures.name(f).to_string()),
                    last_failure_at: st.last_failure.map(|(ms, _)| rfc3339_ms(ms)),
                }
            })
            .collect()
    }

    /// The signatures seen outside the flagged windows on at least `min_devices`
    /// devices, attributed to a network, a site or the devices themselves.
    fn persistent(
        &self,
        outside: &[(Signature, Members)],
        min_devices: u64,
    ) -> Vec<PersistentPattern> {
        let mut out = Vec::new();
        for (sig, members) in outside {
            let n = members.len() as u64;
            if n < min_devices.max(1) {
                continue;
            }
            let count = |pick: fn(&(u32, u32, u32)) -> u32| -> Vec<LabelCount> {
                let mut m: IntMap<u32, u64> = IntMap::default();
                for v in members.values() {
                    *m.entry(pick(v)).or_default() += 1;
                }
                let mut v: Vec<LabelCount> = m
                    .into_iter()
                    .map(|(k, c)| LabelCount {
                        value: self.labels.name(k).to_string(),
                        devices: c,
                    })
                    .collect();
                v.sort_by(|a, b| b.devices.cmp(&a.devices).then(a.value.cmp(&b.value)));
                v
            };
            let networks = count(|v| v.0);
            let sites = count(|v| v.1);
            fn confined(l: &[LabelCount], n: u64) -> Option<&LabelCount> {
                l.first().filter(|x| {
                    x.value != NO_LABEL
                        && x.devices as f64 >= super::incident::CONFINED_SHARE * n as f64
                })
            }
            // The network first: a NAT or carrier is narrower than a site.
            let (scope, confined_to, net_id) = if let Some(top) = confined(&networks, n) {
                let id = members
                    .values()
                    .find(|v| self.labels.name(v.0) == top.value)
                    .map(|v| v.0);
                (
                    "network",
                    Some(format!("{}={}", self.opts.network_label, top.value)),
                    id,
                )
            } else if let Some(top) = confined(&sites, n) {
                (
                    "site",
                    Some(format!("{}={}", self.opts.site_label, top.value)),
                    None,
                )
            } else {
                ("devices", None, None)
            };
            let tune = net_id.and_then(|id| self.net_tune.get(&id));
            let idle_timeout_s = tune.and_then(|t| median_of(&t.1));
            let recommended_keepalive_s = tune.and_then(|t| {
                t.0.iter()
                    .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
                    .map(|(k, _)| *k)
            });
            let where_ = match &confined_to {
                Some(c) if scope == "network" => format!("on {c}"),
                Some(c) => format!("at {c}"),
                None => format!("on {} networks at {} sites", networks.len(), sites.len()),
            };
            let (endpoints, summary, advice) = match sig {
                Signature::Disconnect(cause) => {
                    let idle_cause = matches!(
                        cause,
                        DisconnectCause::NoPingresp
                            | DisconnectCause::TcpReset
                            | DisconnectCause::EofWithoutDisconnect
                    );
                    let advice = match (scope, idle_timeout_s, recommended_keepalive_s) {
                        ("network", Some(_), Some(rec)) if idle_cause => format!(
                            "keep-alive too long for that NAT; tell them {rec} s"
                        ),
                        ("network", _, _) | ("site", _, _) => {
                            "that network drops the sessions; run `hubprobe tune` on one of its devices to measure its idle timeout".to_string()
                        }
                        _ => "spread over the fleet: look at one device's canary diagnosis".to_string(),
                    };
                    let what = match idle_timeout_s {
                        Some(t) if idle_cause && scope == "network" => {
                            format!("disconnect after {t} s idle ({})", cause.as_str())
                        }
                        _ => format!("disconnect again and again ({})", cause.as_str()),
                    };
                    (
                        Vec::new(),
                        format!("{n} devices {where_} {what}: {advice}"),
                        advice,
                    )
                }
                Signature::Check(class) => {
                    let endpoints: Vec<String> = self
                        .total
                        .classes
                        .get(&**class)
                        .map(|c| c.endpoints.iter().cloned().collect())
                        .unwrap_or_default();
                    let hint = crate::model::FailureClass::from_id(class)
                        .map(|c| crate::model::explain(c).hint.to_string())
                        .unwrap_or_else(|| {
                            "run `hubprobe check` on one of them for the hint".into()
                        });
                    let advice = match scope {
                        "network" | "site" => format!("only there, so likely that {scope}: {hint}"),
                        _ => format!("on devices everywhere, so likely the devices: {hint}"),
                    };
                    let on = if endpoints.is_empty() {
                        String::new()
                    } else {
                        format!(" on {}", endpoints.join(", "))
                    };
                    (
                        endpoints,
                        format!("{n} devices {where_} fail {class}{on}: {advice}"),
                        advice,
                    )
                }
            };
            let mut examples: Vec<&str> = members.keys().map(|d| self.devices.name(*d)).collect();
            examples.sort_unstable();
            out.push(PersistentPattern {
                signature: sig.label(),
                devices: n,
                scope: scope.into(),
                confined_to,
                networks: networks.into_iter().take(5).collect(),
                sites: sites.into_iter().take(5).collect(),
                endpoints,
                idle_timeout_s,
                recommended_keepalive_s,
                advice,
                summary,
                example_devices: examples.into_iter().take(10).map(str::to_string).collect(),
            });
        }
        out.sort_by(|a, b| {
            b.devices
                .cmp(&a.devices)
                .then(a.signature.cmp(&b.signature))
        });
        out
    }

    fn example(&self, set: &IntSet<u32>) -> Option<String> {
        set.iter()
            .map(|&d| self.devices.name(d))
            .min()
            .map(str::to_string)
    }

    fn examples(&self, set: &IntSet<u32>, n: usize) -> Vec<String> {
        let mut v: Vec<&str> = set.iter().map(|&d| self.devices.name(d)).collect();
        v.sort_unstable();
        v.into_iter().take(n).map(str::to_string).collect()
    }

    /// Devices of a set counted by a label of their latest report, most first.
    fn spread(&self, set: &IntSet<u32>, site: bool) -> Vec<LabelCount> {
        let mut m: IntMap<u32, u64> = IntMap::default();
        for &d in set {
            let st = &self.states[d as usize];
            *m.entry(if site { st.site } else { st.network })
                .or_default() += 1;
        }
        let mut v: Vec<LabelCount> = m
            .into_iter()
            .map(|(k, n)| LabelCount {
                value: self.labels.name(k).to_string(),
                devices: n,
            })
            .collect();
        v.sort_by(|a, b| b.devices.cmp(&a.devices).then(a.value.cmp(&b.value)));
        v
    }

    fn group_summary(&self, g: &GroupAcc, group: Option<u32>) -> GroupSummary {
        let mut latest = LatestVerdicts::default();
        for &d in &g.devices {
            let st = &self.states[d as usize];
            if group.is_some_and(|gi| gi != st.latest_group) {
                continue;
            }
            match st.latest_verdict {
                Verdict::Ok => latest.ok += 1,
                Verdict::Warning => latest.warning += 1,
                Verdict::Critical => latest.critical += 1,
                Verdict::Unknown => latest.unknown += 1,
            }
        }
        let mut phases = Vec::new();
        for (ep, accs) in &g.endpoints {
            for (i, a) in accs.iter().enumerate() {
                if a.ok + a.failed + a.skipped == 0 {
                    continue;
                }
                let attempts = a.ok + a.failed;
                let pct = a.durations.as_ref().and_then(|h| h.percentiles());
                phases.push(PhaseSummary {
                    endpoint: ep.clone(),
                    phase: PHASES[i].as_str().to_string(),
                    attempts,
                    ok: a.ok,
                    failed: a.failed,
                    skipped: a.skipped,
                    success_share: (attempts > 0).then(|| a.ok as f64 / attempts as f64),
                    duration_ms: pct,
                    histogram: a
                        .durations
                        .as_ref()
                        .map(|h| h.buckets())
                        .unwrap_or_default(),
                });
            }
        }
        let mut classes: Vec<ClassSummary> = g
            .classes
            .iter()
            .map(|(c, a)| {
                let sites = self.spread(&a.devices, true);
                let networks = self.spread(&a.devices, false);
                let confined_to = if sites.len() == 1 && sites[0].value != NO_LABEL {
                    Some(format!("{}={}", self.opts.site_label, sites[0].value))
                } else if networks.len() == 1 && networks[0].value != NO_LABEL {
                    Some(format!("{}={}", self.opts.network_label, networks[0].value))
                } else {
                    None
                };
                ClassSummary {
                    class: c.clone(),
                    devices: a.devices.len() as u64,
                    reports: a.reports,
                    endpoints: a.endpoints.iter().cloned().collect(),
                    example_device: self.example(&a.devices).unwrap_or_default(),
                    confined_to,
                    sites: sites.into_iter().take(5).collect(),
                    networks: networks.into_iter().take(5).collect(),
                }
            })
            .collect();
        classes.sort_by(|a, b| b.devices.cmp(&a.devices).then(a.class.cmp(&b.class)));
        let mut anchors: Vec<AnchorCount> = g
            .anchors
            .iter()
            .map(|(n, s)| AnchorCount {
                name: n.clone(),
                devices: s.len() as u64,
            })
            .collect();
        anchors.sort_by(|a, b| b.devices.cmp(&a.devices).then(a.name.cmp(&b.name)));
        GroupSummary {
            reports: g.reports,
            devices: g.devices.len() as u64,
            kinds: g.kinds.clone(),
            latest_verdicts: latest,
            phases,
            failure_classes: classes,
            trust: TrustSummary {
                anchors,
                unknown_ca_devices: g.unknown_ca.len() as u64,
                unknown_ca_examples: self.examples(&g.unknown_ca, 20),
            },
            clock: ClockSummary {
                reports: g.clock.count(),
                abs_offset_s: g.clock.percentiles(),
                devices_over_warning: g.clock_off.len() as u64,
                warning_s: CLOCK_OFFSET_WARNING_S,
            },
            keepalive: KeepaliveSummary {
                tune_reports: g.tune_reports,
                recommended_s: value_counts(&g.keepalive),
                idle_timeouts_s: value_counts(&g.idle),
                idle_timeout_s: g.idle_hist.percentiles(),
            },
            disconnects: g
                .disconnects
                .iter()
                .map(|(c, a)| CauseCount {
                    cause: c.as_str().to_string(),
                    events: a.events,
                    devices: a.devices.len() as u64,
                    reconnected: a.reconnect.as_ref().map_or(0, |h| h.count()),
                    reconnect_s: a.reconnect.as_ref().and_then(|h| h.percentiles()),
                    failed_attempts: a.failed_attempts,
                })
                .collect(),
        }
    }
}

/// Counts by value, in value order.
/// The median value of a value → count map.
fn median_of(m: &BTreeMap<u64, u64>) -> Option<u64> {
    let total: u64 = m.values().sum();
    let mut seen = 0;
    for (v, c) in m {
        seen += c;
        if seen * 2 > total {
            return Some(*v);
        }
    }
    None
}

/// The check failure class on most devices of group `group` outside the windows.
fn top_class_of_group(outside: &[(Signature, Members)], group: u32) -> Option<ClassCount> {
    outside
        .iter()
        .filter_map(|(sig, m)| match sig {
            Signature::Check(c) => {
                let n = m.values().filter(|v| v.2 == group).count() as u64;
                (n > 0).then(|| ClassCount {
                    class: c.to_string(),
                    devices: n,
                })
            }
            Signature::Disconnect(_) => None,
        })
        .min_by(|a, b| b.devices.cmp(&a.devices).then(a.class.cmp(&b.class)))
}

fn value_counts(m: &BTreeMap<u64, u64>) -> Vec<ValueCount> {
    m.iter()
        .map(|(k, n)| ValueCount {
            value: *k,
            reports: *n,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::record::PhaseObs;

    /// 2026-11-26T00:00:00Z: test times are offsets from here.
    const BASE_MS: i64 = 1_795_651_200_000;

    fn obs(id: &str, device: &str, at_ms: i64, net: &str, class: Option<&str>) -> Observation {
        let verdict = if class.is_some() {
            Verdict::Critical
        } else {
            Verdict::Ok
        };
        let mut o = Observation::new(crate::fleet::record::id_hash(id), BASE_MS + at_ms, verdict);
        o.device = o.push_text(device);
        o.kind = o.push_text("check");
        let l = [
            (o.push_text("network"), o.push_text(net)),
            (o.push_text("site"), o.push_text(&format!("site-{net}"))),
        ];
        o.labels = l.to_vec();
        o.endpoints = vec![o.push_text("mqtt-tls")];
        let class = class.map(|c| o.push_text(c));
        o.phases = vec![PhaseObs {
            endpoint: 0,
            phase: Phase::Tcp,
            status: if class.is_some() {
                Status::Failed
            } else {
                Status::Ok
            },
            duration_ms: Some(20.0),
            class,
            clock_offset_s: None,
        }];
        o
    }

    #[test]
    fn repeats_are_dropped_and_the_latest_report_counts() {
        let mut a = Aggregator::new(FleetOptions::default());
        a.add(&obs("r1", "d1", 1_000, "n", Some("tcp.timeout")));
        a.add(&obs("r1", "d1", 1_000, "n", Some("tcp.timeout")));
        a.add(&obs("r2", "d1", 5_000, "n", None));
        a.add(&obs("r0", "d1", 500, "n", Some("tcp.timeout"))); // older, arrives late
        let s = a.finish();
        assert_eq!(s.input.reports, 3);
        assert_eq!(s.input.duplicates, 1);
        assert_eq!(s.overall.latest_verdicts.ok, 1);
        assert_eq!(s.overall.latest_verdicts.critical, 0);
        let c = &s.overall.failure_classes[0];
        assert_eq!((c.devices, c.reports), (1, 2));
        let p = &s.overall.phases[0];
        assert_eq!((p.attempts, p.ok, p.failed), (3, 1, 2));
    }

    fn fleet(wave: impl Fn(usize) -> &'static str) -> FleetSummary {
        // 40 devices on 4 networks, a check every 10 min for 10 h; at 5 h the
        // devices picked by `wave` fail at once.
        let mut a = Aggregator::new(FleetOptions::default());
        let nets = ["a", "b", "c", "d"];
        let mut n = 0;
        for slot in 0..60i64 {
            for d in 0..40usize {
                let at = slot * 600_000 + d as i64 * 1000;
                let class = (slot == 30 && !wave(d).is_empty()).then(|| wave(d));
                n += 1;
                a.add(&obs(
                    &format!("r{n}"),
                    &format!("d{d}"),
                    at,
                    nets[d % 4],
                    class,
                ));
            }
        }
        a.finish()
    }

    #[test]
    fn a_wave_across_networks_is_the_hub() {
        let s = fleet(|_| "mqtt.server_unavailable");
        let w = &s.incidents.windows;
        assert_eq!(w.len(), 1, "{w:#?}");
        assert_eq!(w[0].likely_cause, "hub");
        assert_eq!(w[0].devices, 40);
        assert_eq!(w[0].networks.len(), 4);
    }

    #[test]
    fn a_wave_on_one_network_is_that_network() {
        let s = fleet(|d| if d % 4 == 1 { "tcp.timeout" } else { "" });
        let w = &s.incidents.windows;
        assert_eq!(w.len(), 1, "{w:#?}");
        assert_eq!(w[0].likely_cause, "network");
        assert_eq!(w[0].iothub_cause, Some(2));
        assert_eq!(w[0].networks[0].value, "b");
    }

    #[test]
    fn a_persistent_failure_is_no_incident() {
        let mut a = Aggregator::new(FleetOptions::default());
        for slot in 0..60i64 {
            for d in 0..40usize {
                let class = (d < 12).then_some("tls.unknown_ca");
                a.add(&obs(
                    &format!("r{slot}-{d}"),
                    &format!("d{d}"),
                    slot * 600_000 + d as i64 * 1000,
                    ["a", "b", "c", "d"][d % 4],
                    class,
                ));
            }
        }
        let s = a.finish();
        assert!(s.incidents.windows.is_empty(), "{:#?}", s.incidents.windows);
        assert_eq!(s.overall.trust.unknown_ca_devices, 12);
    }
}

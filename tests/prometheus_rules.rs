//! The shipped Prometheus rules (packaging/prometheus/hubprobe.rules.yml) pass
//! `promtool check rules`, and `promtool test rules` proves, on series taken from real
//! lab outputs, which alerts fire and which do not and what the recording rules
//! compute:
//!
//! - real `hubprobe check -o prometheus` runs against the lab (mosquitto over TLS and
//!   WebSocket, dnsmasq, an in-process HTTPS peer): healthy devices, a blocked MQTT
//!   port with WebSocket working, a device that reaches nothing, an expired server
//!   certificate, a legacy and an unexpected trust anchor, an HTTPS Date ten minutes
//!   off the device clock;
//! - real agents' textfiles, read as they rewrite them: a steady canary session, one
//!   taken over five times (eof_without_disconnect), one renewing 3 s SAS tokens
//!   (token_renewal); and, through the namespace NAT that forgets idle flows after
//!   3 s, a canary whose 5 s keep-alive is above it (idle_timeout) beside one whose
//!   2 s keep-alive is not.
//!
//! Each textfile's samples become promtool `input_series` of one device
//! (`instance`), snapshot after snapshot on promtool's clock; the expected labels
//! are read from the same samples, the expected annotations rendered from the
//! rules' own templates. Every alert of the file is asserted in every scenario: an
//! empty list means it must not fire. A control shows promtool fails a wrong
//! expectation. Real tools: promtool (Debian prometheus), mosquitto, dnsmasq,
//! nftables/conntrack/iproute2 for the NAT; a missing one fails the test.

mod common;
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{agent_lab, Dns, Mosquitto, Nat, TlsThen, HUB_HOST, TEST_CA_CN};
use hubprobe::auth::sas::{generate_sas_token, resource_uri};
use hubprobe::auth::Secret;
use support::run_with_env;

const DEVICE_KEY: &str = agent_lab::LAB_DEVICE_KEY;
const EXPIRY: u64 = 4_102_444_800; // 2100-01-01
/// promtool's clock: one sample a minute, this many minutes, alerts checked at EVAL.
const MINUTES: usize = 120;
const EVAL: usize = 90;
/// Agent snapshots start here on promtool's clock (one a minute), so that every
/// change lies inside the hour before EVAL and a 30 min `for:` has elapsed by EVAL.
const SNAPSHOT_START: usize = 35;
const MAX_SNAPSHOTS: usize = 20;
const JOB: &str = "node";

fn rules_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/prometheus/hubprobe.rules.yml")
}

fn promtool() -> PathBuf {
    common::find_program("promtool")
        .expect("promtool is not installed: scripts/test.sh installs the Debian package prometheus")
}

/// Runs promtool with `args` (bounded); returns (exit code, stdout + stderr).
fn run_promtool(args: &[&str]) -> (i32, String) {
    let mut child = Command::new(promtool())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn promtool");
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if start.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("promtool {args:?} did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut text = String::new();
    let _ = child.stdout.take().unwrap().read_to_string(&mut text);
    let _ = child.stderr.take().unwrap().read_to_string(&mut text);
    (status.code().unwrap_or(-1), text)
}

// ---------------------------------------------------------------------------
// Samples of a textfile, and a device's timeline of them.

/// A sample's series as written (`name{a="b",…}` or `name`) → value.
type Samples = BTreeMap<String, f64>;

fn parse_samples(text: &str) -> Samples {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').expect("a sample line");
            let value = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v.parse().unwrap_or_else(|e| panic!("{l:?}: {e}")),
            };
            (series.to_string(), value)
        })
        .collect()
}

/// The metric name and the (unescaped) labels of a series as written.
fn split_series(series: &str) -> (String, BTreeMap<String, String>) {
    let Some((name, rest)) = series.split_once('{') else {
        return (series.to_string(), BTreeMap::new());
    };
    let body = rest.strip_suffix('}').expect("series ends in }");
    let mut labels = BTreeMap::new();
    let mut chars = body.chars().peekable();
    loop {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        assert_eq!(chars.next(), Some('"'), "{series}");
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(other) => value.push(other),
                    None => break,
                },
                '"' => break,
                c => value.push(c),
            }
        }
        labels.insert(key.trim_start_matches(',').to_string(), value);
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
    (name.to_string(), labels)
}

/// The series with this device's target labels added (as a scrape of its
/// node_exporter would), in the exposition's escaping, which PromQL shares.
fn with_target(series: &str, instance: &str) -> String {
    let target = format!(r#"instance="{instance}",job="{JOB}""#);
    match series.split_once('{') {
        Some((name, rest)) => format!("{name}{{{target},{rest}"),
        None => format!("{series}{{{target}}}"),
    }
}

/// One device: its textfile's samples, snapshot by snapshot. Snapshot 0 covers
/// promtool's clock up to `start`; snapshot j is at minute `start + j`; the last is
/// held to the end.
struct Device {
    instance: String,
    snapshots: Vec<Samples>,
    start: usize,
}

impl Device {
    fn once(instance: &str, samples: Samples) -> Device {
        Device {
            instance: instance.to_string(),
            snapshots: vec![samples],
            start: 0,
        }
    }

    fn timeline(instance: &str, snapshots: Vec<Samples>) -> Device {
        assert!(!snapshots.is_empty());
        Device {
            instance: instance.to_string(),
            snapshots: thin(snapshots, MAX_SNAPSHOTS),
            start: SNAPSHOT_START,
        }
    }

    fn at(&self, minute: usize) -> &Samples {
        let j = minute.saturating_sub(self.start);
        &self.snapshots[j.min(self.snapshots.len() - 1)]
    }

    fn last(&self) -> &Samples {
        self.snapshots.last().unwrap()
    }

    /// The promtool input series: one sample a minute, `_` where the series is absent.
    fn input_series(&self) -> Vec<(String, String)> {
        let names: BTreeSet<&String> = self.snapshots.iter().flat_map(|s| s.keys()).collect();
        names
            .into_iter()
            .map(|series| {
                let values: Vec<Option<f64>> = (0..=MINUTES)
                    .map(|m| self.at(m).get(series).copied())
                    .collect();
                (
                    with_target(series, &self.instance),
                    promtool_values(&values),
                )
            })
            .collect()
    }

    /// The labels (target labels included) of the series named `metric` whose labels
    /// match `filter`, in the latest snapshot.
    fn series_labels(
        &self,
        metric: &str,
        filter: &[(&str, &str)],
    ) -> Vec<BTreeMap<String, String>> {
        self.last()
            .keys()
            .map(|s| split_series(s))
            .filter(|(name, labels)| {
                name == metric
                    && filter
                        .iter()
                        .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, mut labels)| {
                labels.insert("instance".into(), self.instance.clone());
                labels.insert("job".into(), JOB.into());
                labels
            })
            .collect()
    }

    fn target_labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("instance".to_string(), self.instance.clone()),
            ("job".to_string(), JOB.to_string()),
        ])
    }
}

/// At most `max` snapshots: the first, the last and evenly spaced ones between
/// (counters stay monotonic).
fn thin(snapshots: Vec<Samples>, max: usize) -> Vec<Samples> {
    let n = snapshots.len();
    if n <= max {
        return snapshots;
    }
    let keep: BTreeSet<usize> = (0..max).map(|i| i * (n - 1) / (max - 1)).collect();
    snapshots
        .into_iter()
        .enumerate()
        .filter(|(i, _)| keep.contains(i))
        .map(|(_, s)| s)
        .collect()
}

/// promtool's value notation: runs of one value as `v+0xN`, absent samples as `_`.
fn promtool_values(values: &[Option<f64>]) -> String {
    let mut out = Vec::new();
    let mut i = 0;
    while i < values.len() {
        let mut j = i;
        while j + 1 < values.len() && values[j + 1] == values[i] {
            j += 1;
        }
        match values[i] {
            Some(v) => out.push(format!("{}+0x{}", fmt(v), j - i)),
            None => out.extend(std::iter::repeat_n("_".to_string(), j - i + 1)),
        }
        i = j + 1;
    }
    out.join(" ")
}

/// A float as Prometheus and promtool read it back exactly.
fn fmt(v: f64) -> String {
    if v.is_infinite() {
        return if v > 0.0 { "Inf".into() } else { "-Inf".into() };
    }
    format!("{v}")
}

// ---------------------------------------------------------------------------
// The rules file: alert names and annotation templates.

struct Alert {
    name: String,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
}

/// Reads the alerting rules of the shipped file. The file keeps one layout (as
/// promtool accepts it): `- alert: NAME`, a `labels:` and an `annotations:` map whose
/// values are JSON-style double-quoted strings or `|` blocks.
fn alerts_of_rules_file() -> Vec<Alert> {
    let text = std::fs::read_to_string(rules_path()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let indent = |l: &str| l.len() - l.trim_start().len();
    let mut alerts: Vec<Alert> = Vec::new();
    let mut section: Option<(&str, usize)> = None;
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let trimmed = line.trim();
        if let Some(name) = trimmed.strip_prefix("- alert: ") {
            alerts.push(Alert {
                name: name.to_string(),
                labels: BTreeMap::new(),
                annotations: BTreeMap::new(),
            });
            section = None;
        } else if trimmed.starts_with("- record: ") {
            section = None;
        } else if trimmed == "labels:" || trimmed == "annotations:" {
            section = Some((
                if trimmed == "labels:" {
                    "labels"
                } else {
                    "annotations"
                },
                indent(line),
            ));
        } else if let Some((which, at)) = section {
            if !trimmed.is_empty() && indent(line) <= at {
                section = None;
                continue;
            }
            if let Some((key, value)) = trimmed.split_once(": ") {
                let value = if value == "|" {
                    // A literal block: the deeper-indented lines, one final newline.
                    let block_indent = indent(lines[i + 1]);
                    let mut block = String::new();
                    while i + 1 < lines.len()
                        && (lines[i + 1].trim().is_empty() || indent(lines[i + 1]) >= block_indent)
                    {
                        i += 1;
                        block.push_str(lines[i].get(block_indent..).unwrap_or(""));
                        block.push('\n');
                    }
                    format!("{}\n", block.trim_end_matches('\n'))
                } else if value.starts_with('"') {
                    serde_json::from_str::<String>(value)
                        .unwrap_or_else(|e| panic!("{key}: {value}: {e}"))
                } else {
                    value.to_string()
                };
                let alert = alerts.last_mut().expect("labels inside an alert");
                if which == "labels" {
                    alert.labels.insert(key.to_string(), value);
                } else {
                    alert.annotations.insert(key.to_string(), value);
                }
            }
        }
        i += 1;
    }
    assert!(alerts.len() >= 8, "alerts found: {}", alerts.len());
    for a in &alerts {
        assert!(
            ["summary", "description", "runbook"]
                .iter()
                .all(|k| a.annotations.contains_key(*k)),
            "{}: summary, description and runbook annotations",
            a.name
        );
        assert!(a.labels.contains_key("severity"), "{}: severity", a.name);
    }
    alerts
}

/// Renders an annotation template the way Prometheus does for `{{ $labels.NAME }}`,
/// the only template form the rules use (anything else fails here).
fn render(template: &str, labels: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(at) = rest.find("{{") {
        out.push_str(&rest[..at]);
        let end = rest[at..].find("}}").expect("unclosed {{") + at;
        let expr = rest[at + 2..end].trim();
        let name = expr
            .strip_prefix("$labels.")
            .unwrap_or_else(|| panic!("the rules use only {{{{ $labels.NAME }}}}, not {expr:?}"));
        out.push_str(labels.get(name).map(String::as_str).unwrap_or(""));
        rest = &rest[end + 2..];
    }
    out.push_str(rest);
    out
}

// ---------------------------------------------------------------------------
// The promtool test file.

/// A sample an expression must give at EVAL: `name` is the metric name in the
/// result (empty when the expression drops it).
struct Record {
    expr: String,
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A firing alert the scenario expects: the alert's name and the labels of the
/// series it comes from (the rule's labels are added).
struct Expect {
    alert: &'static str,
    labels: BTreeMap<String, String>,
}

fn yaml(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

fn yaml_map(m: &BTreeMap<String, String>) -> String {
    let items: Vec<String> = m
        .iter()
        .map(|(k, v)| format!("{}: {}", yaml(k), yaml(v)))
        .collect();
    format!("{{{}}}", items.join(", "))
}

/// Writes a promtool test file for `devices` in which every alert of the rules file
/// is checked at EVAL: exactly the `expected` ones fire, with their labels and
/// rendered annotations; and the expressions of `records` give exactly their samples.
fn promtool_test(
    dir: &Path,
    name: &str,
    devices: &[Device],
    expected: &[Expect],
    records: &[Record],
) -> PathBuf {
    let alerts = alerts_of_rules_file();
    for e in expected {
        assert!(
            alerts.iter().any(|a| a.name == e.alert),
            "no alert {} in the rules",
            e.alert
        );
    }
    let mut y = String::new();
    y.push_str(&format!(
        "rule_files:\n  - {}\nevaluation_interval: 1m\ntests:\n  - name: {}\n    interval: 1m\n    input_series:\n",
        yaml(rules_path().to_str().unwrap()),
        yaml(name)
    ));
    for d in devices {
        for (series, values) in d.input_series() {
            y.push_str(&format!(
                "      - series: {}\n        values: {}\n",
                yaml(&series),
                yaml(&values)
            ));
        }
    }
    y.push_str("    alert_rule_test:\n");
    for a in &alerts {
        y.push_str(&format!(
            "      - eval_time: {EVAL}m\n        alertname: {}\n        exp_alerts:",
            yaml(&a.name)
        ));
        let mine: Vec<&Expect> = expected.iter().filter(|e| e.alert == a.name).collect();
        if mine.is_empty() {
            y.push_str(" []\n");
            continue;
        }
        y.push('\n');
        for e in mine {
            let mut labels = e.labels.clone();
            labels.extend(a.labels.clone());
            let annotations: BTreeMap<String, String> = a
                .annotations
                .iter()
                .map(|(k, t)| (k.clone(), render(t, &labels)))
                .collect();
            y.push_str(&format!(
                "          - exp_labels: {}\n            exp_annotations: {}\n",
                yaml_map(&labels),
                yaml_map(&annotations)
            ));
        }
    }
    if !records.is_empty() {
        y.push_str("    promql_expr_test:\n");
        let mut by_expr: BTreeMap<&str, Vec<&Record>> = BTreeMap::new();
        for r in records {
            by_expr.entry(&r.expr).or_default().push(r);
        }
        for (expr, samples) in by_expr {
            y.push_str(&format!(
                "      - expr: {}\n        eval_time: {EVAL}m\n        exp_samples:\n",
                yaml(expr)
            ));
            for Record {
                name,
                labels,
                value,
                ..
            } in samples
            {
                let inner: Vec<String> = labels
                    .iter()
                    .map(|(k, v)| format!("{k}={}", serde_json::to_string(v).unwrap()))
                    .collect();
                y.push_str(&format!(
                    "          - labels: {}\n            value: {}\n",
                    yaml(&format!("{name}{{{}}}", inner.join(","))),
                    fmt(*value)
                ));
            }
        }
    }
    let path = dir.join(format!("{name}.test.yml"));
    std::fs::write(&path, &y).unwrap();
    path
}

fn assert_promtool_passes(test_file: &Path) {
    let (code, out) = run_promtool(&["test", "rules", test_file.to_str().unwrap()]);
    assert!(
        code == 0 && out.contains("SUCCESS"),
        "promtool test rules (exit {code}):\n{out}\n--- test file {} ---",
        test_file.display()
    );
}

// ---------------------------------------------------------------------------
// Real lab outputs.

fn lab_token(device: &str) -> String {
    let resource = resource_uri(HUB_HOST, device, None);
    generate_sas_token(&resource, &Secret::new(DEVICE_KEY), EXPIRY)
        .unwrap()
        .token
        .expose()
        .to_string()
}

/// The lab hub for checks: mosquitto, dnsmasq, HTTPS peers answering with a Date.
struct CheckLab {
    broker: Mosquitto,
    dns: Dns,
    https_now: common::FaultServer,
    https_behind: common::FaultServer,
    dir: tempfile::TempDir,
}

fn https_peer(certs: &common::Certs, date: std::time::SystemTime) -> common::FaultServer {
    let date = httpdate::fmt_http_date(date);
    common::tls_then(
        certs,
        TlsThen::Garbage(
            format!("HTTP/1.1 404 Not Found\r\nDate: {date}\r\nServer: lab\r\nContent-Length: 0\r\n\r\n")
                .into_bytes(),
        ),
    )
}

impl CheckLab {
    fn start() -> CheckLab {
        let users = [(common::hub_username("dev1"), lab_token("dev1"))];
        let broker = Mosquitto::start(&users);
        let certs = broker.certs().clone();
        let now = std::time::SystemTime::now();
        CheckLab {
            dns: Dns::start(),
            https_now: https_peer(&certs, now),
            // The hub's clock ten minutes behind the device's: the device is ahead.
            https_behind: https_peer(&certs, now - Duration::from_secs(600)),
            broker,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// The lab profile with other trust expectations, as a file.
    fn profile_with_trust(&self, name: &str, expected: &[&str], legacy: &[&str]) -> String {
        let base = std::fs::read_to_string(support::lab_profile()).unwrap();
        let quote = |l: &[&str]| {
            l.iter()
                .map(|s| format!("{s:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let text = base
            .replace(
                &format!(r#"expected_anchors = ["{TEST_CA_CN}"]"#),
                &format!("expected_anchors = [{}]", quote(expected)),
            )
            .replace(
                r#"legacy_anchors = ["hubprobe Legacy Root CA"]"#,
                &format!("legacy_anchors = [{}]", quote(legacy)),
            );
        assert_ne!(text, base, "the lab profile's [trust] changed form");
        let path = self.dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }

    /// `hubprobe check -o prometheus` of `endpoints` (name=port pairs), with the
    /// labels `site` and `network`; returns the samples and the exit code.
    fn check(
        &self,
        profile: &str,
        endpoints: &[(&str, u16)],
        site: &str,
        network: &str,
    ) -> (i32, Samples) {
        let names: Vec<&str> = endpoints.iter().map(|(n, _)| *n).collect();
        let ports: Vec<String> = endpoints.iter().map(|(n, p)| format!("{n}={p}")).collect();
        let cs = format!("HostName={HUB_HOST};DeviceId=dev1;SharedAccessKey={DEVICE_KEY}");
        let (dns, ca) = (
            self.dns.addr().to_string(),
            self.broker.certs().ca_pem().display().to_string(),
        );
        let (expiry, site, network) = (
            EXPIRY.to_string(),
            format!("site={site}"),
            format!("network={network}"),
        );
        let out = run_with_env(
            &[
                "check",
                HUB_HOST,
                "--profile",
                profile,
                "--endpoint",
                &names.join(","),
                "--port",
                &ports.join(","),
                "--dns-server",
                &dns,
                "--trust",
                "none",
                "--ca-file",
                &ca,
                "--timeout",
                "5s",
                "--sas-expiry",
                &expiry,
                "--label",
                &site,
                "--label",
                &network,
                "-o",
                "prometheus",
            ],
            &[("IOTHUB_DEVICE_CONNECTION_STRING", &cs)],
            Duration::from_secs(60),
        );
        assert!(
            out.stdout.contains("hubprobe_success"),
            "no metrics: {}",
            out.all_output()
        );
        (out.code, parse_samples(&out.stdout))
    }
}

/// A device's expected alert from the series `metric` matching `filter` (one
/// expectation per matching series; at least one must match).
fn expect(
    alert: &'static str,
    device: &Device,
    metric: &str,
    filter: &[(&str, &str)],
) -> Vec<Expect> {
    let found = device.series_labels(metric, filter);
    assert!(
        !found.is_empty(),
        "{}: no {metric}{filter:?} in {:#?}",
        device.instance,
        device.last().keys()
    );
    found
        .into_iter()
        .map(|labels| Expect { alert, labels })
        .collect()
}

/// An alert on the device as a whole (only its target labels).
fn expect_device(alert: &'static str, device: &Device) -> Expect {
    Expect {
        alert,
        labels: device.target_labels(),
    }
}

/// The recording rules' values, computed from the same samples: per endpoint, per
/// endpoint and phase, per site and per network, and the fleet's share.
fn expected_records(devices: &[Device]) -> Vec<Record> {
    type Key = BTreeMap<String, String>;
    let mut acc: BTreeMap<(String, Key), (f64, f64)> = BTreeMap::new();
    let mut add = |record: &str, key: Key, v: f64| {
        let e = acc.entry((record.to_string(), key)).or_insert((0.0, 0.0));
        e.0 += v;
        e.1 += 1.0;
    };
    for d in devices {
        let s = d.at(EVAL);
        let info = s
            .keys()
            .map(|k| split_series(k))
            .find(|(n, _)| n == "hubprobe_info")
            .map(|(_, l)| l)
            .expect("hubprobe_info");
        let site = info.get("label_site").cloned().unwrap_or_default();
        let network = info.get("label_network").cloned().unwrap_or_default();
        for (series, v) in s {
            let (name, labels) = split_series(series);
            let l = |k: &str| labels.get(k).cloned().unwrap();
            match name.as_str() {
                "hubprobe_success" => add("hubprobe:success:ratio", Key::new(), *v),
                "hubprobe_endpoint_success" => {
                    let ep = l("endpoint");
                    add(
                        "endpoint:hubprobe_endpoint_success:ratio",
                        Key::from([("endpoint".into(), ep.clone())]),
                        *v,
                    );
                    add(
                        "label_site_endpoint:hubprobe_endpoint_success:ratio",
                        Key::from([
                            ("endpoint".into(), ep.clone()),
                            ("label_site".into(), site.clone()),
                        ]),
                        *v,
                    );
                    add(
                        "label_network_endpoint:hubprobe_endpoint_success:ratio",
                        Key::from([
                            ("endpoint".into(), ep),
                            ("label_network".into(), network.clone()),
                        ]),
                        *v,
                    );
                }
                "hubprobe_phase_success" => {
                    let (ep, ph) = (l("endpoint"), l("phase"));
                    add(
                        "endpoint_phase:hubprobe_phase_success:ratio",
                        Key::from([
                            ("endpoint".into(), ep.clone()),
                            ("phase".into(), ph.clone()),
                        ]),
                        *v,
                    );
                    add(
                        "label_site_endpoint_phase:hubprobe_phase_success:ratio",
                        Key::from([
                            ("endpoint".into(), ep.clone()),
                            ("phase".into(), ph.clone()),
                            ("label_site".into(), site.clone()),
                        ]),
                        *v,
                    );
                    add(
                        "label_network_endpoint_phase:hubprobe_phase_success:ratio",
                        Key::from([
                            ("endpoint".into(), ep),
                            ("phase".into(), ph),
                            ("label_network".into(), network.clone()),
                        ]),
                        *v,
                    );
                }
                _ => {}
            }
        }
    }
    acc.into_iter()
        .map(|((record, labels), (sum, count))| Record {
            expr: record.clone(),
            name: record,
            labels,
            value: sum / count,
        })
        .collect()
}

#[test]
fn rules_pass_promtool_check() {
    let (code, out) = run_promtool(&["check", "rules", rules_path().to_str().unwrap()]);
    assert!(
        code == 0 && out.contains("SUCCESS"),
        "promtool check rules:\n{out}"
    );
    let alerts = alerts_of_rules_file();
    let names: BTreeSet<&str> = alerts.iter().map(|a| a.name.as_str()).collect();
    for must in [
        "HubprobeHubUnreachable",
        "HubprobeOnlyWebSocketWorks",
        "HubprobeCertificateExpiring",
        "HubprobeLegacyTrustAnchor",
        "HubprobeUnexpectedTrustAnchor",
        "HubprobeClockOffset",
        "HubprobeCanaryDisconnectsAboveNormal",
        "HubprobeKeepaliveAboveIdleTimeout",
        "HubprobeSasTokenRenewalReconnects",
    ] {
        assert!(names.contains(must), "{must} missing: {names:?}");
    }
    // Every metric a rule reads is one the exporter documents.
    let text = std::fs::read_to_string(rules_path()).unwrap();
    let metrics =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/metrics.md"))
            .unwrap();
    let mut used = BTreeSet::new();
    for word in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':')) {
        let word = word.trim_end_matches(':');
        if word.starts_with("hubprobe_") {
            used.insert(word.to_string());
        }
    }
    assert!(used.len() >= 10, "{used:?}");
    for m in &used {
        assert!(
            metrics.contains(&format!("`{m}`")),
            "the rules read {m}, which docs/metrics.md does not list"
        );
    }
}

#[test]
fn check_alerts_fire_exactly_where_the_lab_fails_and_records_match() {
    let lab = CheckLab::start();
    let profile = support::lab_profile();
    let (tls, wss, expired) = (
        lab.broker.port("tls"),
        lab.broker.port("wss"),
        lab.broker.port("tls_expired"),
    );
    let closed = common::refused_port().port();
    let (https_now, https_behind) = (lab.https_now.port(), lab.https_behind.port());
    let all_ok = [("mqtt-tls", tls), ("mqtt-ws", wss), ("https", https_now)];

    let mut devices = Vec::new();
    let mut run = |instance: &str, profile: &str, endpoints: &[(&str, u16)], site, net, code| {
        let (got, samples) = lab.check(profile, endpoints, site, net);
        assert_eq!(got, code, "{instance}: exit code; samples: {samples:#?}");
        devices.push(Device::once(instance, samples));
    };
    run("healthy-1", &profile, &all_ok, "berlin", "fiber", 0);
    run("healthy-2", &profile, &all_ok, "paris", "lte", 0);
    run(
        "ws-only",
        &profile,
        &[("mqtt-tls", closed), ("mqtt-ws", wss)],
        "paris",
        "lte",
        1,
    );
    run(
        "down",
        &profile,
        &[("mqtt-tls", closed), ("mqtt-ws", closed)],
        "berlin",
        "lte",
        2,
    );
    run(
        "expired",
        &profile,
        &[("mqtt-tls", expired), ("mqtt-ws", wss)],
        "berlin",
        "fiber",
        1,
    );
    let legacy = lab.profile_with_trust("legacy", &[], &[TEST_CA_CN]);
    run(
        "legacy",
        &legacy,
        &[("mqtt-tls", tls), ("mqtt-ws", wss)],
        "paris",
        "fiber",
        1,
    );
    let unexpected = lab.profile_with_trust("unexpected", &["Another Root CA"], &[]);
    run(
        "unexpected",
        &unexpected,
        &[("mqtt-tls", tls)],
        "paris",
        "fiber",
        1,
    );
    run(
        "clock",
        &profile,
        &[("mqtt-tls", tls), ("https", https_behind)],
        "berlin",
        "fiber",
        1,
    );
    let d = |name: &str| devices.iter().find(|d| d.instance == name).unwrap();

    // The runs are what the scenario says (read from the exporter's own output).
    assert_eq!(d("down").last()["hubprobe_verdict_code"], 2.0);
    let offset = d("clock").last()[r#"hubprobe_clock_offset_seconds{endpoint="https"}"#];
    assert!((-660.0..=-540.0).contains(&offset), "clock offset {offset}");
    let healthy_offset =
        d("healthy-1").last()[r#"hubprobe_clock_offset_seconds{endpoint="https"}"#];
    assert!(healthy_offset.abs() < 30.0, "{healthy_offset}");

    let mut expected = vec![expect_device("HubprobeHubUnreachable", d("down"))];
    expected.extend(expect(
        "HubprobeOnlyWebSocketWorks",
        d("ws-only"),
        "hubprobe_findings_by_code",
        &[("code", "port_blocked_use_alternative")],
    ));
    expected.extend(expect(
        "HubprobeCertificateExpiring",
        d("expired"),
        "hubprobe_tls_chain_earliest_not_after_timestamp_seconds",
        &[("endpoint", "mqtt-tls")],
    ));
    expected.extend(expect(
        "HubprobeLegacyTrustAnchor",
        d("legacy"),
        "hubprobe_tls_trust_anchor_info",
        &[("legacy", "true")],
    ));
    expected.extend(expect(
        "HubprobeUnexpectedTrustAnchor",
        d("unexpected"),
        "hubprobe_tls_trust_anchor_info",
        &[("expected", "false")],
    ));
    expected.extend(expect(
        "HubprobeClockOffset",
        d("clock"),
        "hubprobe_clock_offset_seconds",
        &[("endpoint", "https")],
    ));
    assert_eq!(
        expected
            .iter()
            .filter(|e| e.alert == "HubprobeLegacyTrustAnchor")
            .count(),
        2,
        "both MQTT endpoints of the legacy device"
    );

    let records = expected_records(&devices);
    assert!(
        records
            .iter()
            .any(|r| r.name == "endpoint:hubprobe_endpoint_success:ratio"
                && r.labels["endpoint"] == "mqtt-tls"
                && r.value > 0.0
                && r.value < 1.0),
        "a share strictly between 0 and 1"
    );
    let dir = tempfile::tempdir().unwrap();
    let file = promtool_test(dir.path(), "checks", &devices, &expected, &records);
    assert_promtool_passes(&file);

    // The control: the same file expecting one alert too many fails.
    let mut wrong = expected;
    wrong.push(expect_device("HubprobeHubUnreachable", d("healthy-1")));
    let file = promtool_test(dir.path(), "control", &devices, &wrong, &records);
    let (code, out) = run_promtool(&["test", "rules", file.to_str().unwrap()]);
    assert_ne!(code, 0, "promtool must refuse a wrong expectation:\n{out}");
    assert!(out.contains("HubprobeHubUnreachable"), "{out}");
}

// ---------------------------------------------------------------------------
// Agents: canary sessions.

/// A running agent writing its textfile; killed when dropped.
struct Agent {
    child: Child,
    dir: PathBuf,
}

impl Agent {
    fn spawn(mut cmd: Command, config: &Path, dir: &Path) -> Agent {
        cmd.args(["agent", "--config"])
            .arg(config)
            .arg("--state-dir")
            .arg(dir.join("state"))
            // No clock check against a public NTP server from the lab.
            .env("HUBPROBE_NTP_SERVER", "none")
            .env_remove("IOTHUB_DEVICE_CONNECTION_STRING")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("agent.log")).unwrap());
        Agent {
            child: cmd.spawn().expect("spawn hubprobe agent"),
            dir: dir.to_path_buf(),
        }
    }

    fn textfile(&self) -> PathBuf {
        self.dir.join("hubprobe.prom")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default()
    }

    /// The next textfile the agent writes (different from `previous`), bounded.
    fn next_snapshot(&self, previous: Option<&str>, limit: Duration) -> String {
        let end = Instant::now() + limit;
        loop {
            if let Ok(text) = std::fs::read_to_string(self.textfile()) {
                if previous != Some(text.as_str()) && text.contains("hubprobe_canary_up") {
                    return text;
                }
            }
            assert!(
                Instant::now() < end,
                "no new textfile within {limit:?}\n--- agent log ---\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Snapshots until `done` holds for one (bounded in time and count).
    fn snapshots_until(
        &self,
        what: &str,
        limit: Duration,
        done: impl Fn(&Samples) -> bool,
    ) -> Vec<Samples> {
        let end = Instant::now() + limit;
        let mut texts: Vec<String> = Vec::new();
        loop {
            let text = self.next_snapshot(texts.last().map(String::as_str), limit);
            let samples = parse_samples(&text);
            texts.push(text);
            if done(&samples) {
                return texts.iter().map(|t| parse_samples(t)).collect();
            }
            assert!(
                Instant::now() < end && texts.len() < 500,
                "timed out waiting for {what}\n--- agent log ---\n{}\n--- last textfile ---\n{}",
                self.log(),
                texts.last().unwrap()
            );
        }
    }

    fn stop(mut self) -> String {
        // SAFETY: kill(2) on our own child.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let end = Instant::now() + Duration::from_secs(15);
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < end, "agent did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
        let log = self.log();
        assert!(!log.contains(DEVICE_KEY), "the device key leaked");
        log
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn canary_up(s: &Samples) -> bool {
    s.iter()
        .any(|(k, v)| k.starts_with("hubprobe_canary_up{") && *v == 1.0)
}

fn disconnects(s: &Samples, cause: &str) -> f64 {
    s.iter()
        .filter(|(k, _)| {
            k.starts_with("hubprobe_canary_disconnects_total{")
                && k.contains(&format!(r#"cause="{cause}""#))
        })
        .map(|(_, v)| *v)
        .sum()
}

fn diagnosis(s: &Samples, kind: &str) -> bool {
    s.keys().any(|k| {
        k.starts_with("hubprobe_canary_diagnosis_info{") && k.contains(&format!(r#"kind="{kind}""#))
    })
}

/// An agent configuration for the lab hub: canary on, a check every second, the
/// textfile in `dir`.
fn lab_agent(dns: &Dns, broker: &Mosquitto, dir: &Path, identity_extra: &str, site: &str) -> Agent {
    let cs = agent_lab::write_connection_string(dir);
    let text = format!(
        r#"{hub}[identity]
connection_string_file = "{cs}"
{identity_extra}
[schedule]
interval = "1s"
spread = "0s"
deadline = "8s"
[canary]
ping_timeout = "1s"
reconnect_min = "200ms"
reconnect_max = "1s"
[spool]
dir = "{spool}"
[prometheus]
textfile = "{prom}"
[labels]
site = "{site}"
"#,
        hub = agent_lab::hub_section(dns.addr(), broker.certs().ca_pem(), broker.port("tls_anon")),
        cs = cs.display(),
        spool = dir.join("spool").display(),
        prom = dir.join("hubprobe.prom").display(),
    );
    let cfg = dir.join("config.toml");
    std::fs::write(&cfg, text).unwrap();
    Agent::spawn(Command::new(support::bin()), &cfg, dir)
}

/// Connects with `client_id` on the broker's plain listener and leaves: the broker
/// drops the older session with that id (MQTT 3.1.1: no DISCONNECT to it).
fn take_over(addr: SocketAddr, client_id: &str) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut out = bytes::BytesMut::new();
    rumqttc::mqttbytes::v4::Connect::new(client_id)
        .write(&mut out)
        .unwrap();
    s.write_all(&out).unwrap();
    let mut connack = [0u8; 4];
    s.read_exact(&mut connack).unwrap();
    assert_eq!(connack, [0x20, 0x02, 0x00, 0x00]);
    s.write_all(&[0xE0, 0x00]).unwrap();
}

#[test]
fn canary_alerts_fire_for_a_flapping_session_and_short_tokens_only() {
    let broker = Mosquitto::start(&[]);
    let dns = Dns::start();
    let limit = Duration::from_secs(60);

    // Steady: a connected canary for a few textfiles.
    let dir_steady = tempfile::tempdir().unwrap();
    let steady = lab_agent(&dns, &broker, dir_steady.path(), "", "berlin");
    let first = steady.snapshots_until("a connected canary", limit, canary_up);
    let mut snaps = vec![first.last().unwrap().clone()];
    for _ in 0..5 {
        let prev = std::fs::read_to_string(steady.textfile()).unwrap();
        snaps.push(parse_samples(&steady.next_snapshot(Some(&prev), limit)));
    }
    steady.stop();
    let steady = Device::timeline("steady", snaps);

    // Flapping: five take-overs, a snapshot after each disconnect was counted.
    let dir_flap = tempfile::tempdir().unwrap();
    let flap = lab_agent(&dns, &broker, dir_flap.path(), "", "paris");
    let first = flap.snapshots_until("a connected canary", limit, canary_up);
    let mut snaps = vec![first.last().unwrap().clone()];
    assert_eq!(disconnects(&snaps[0], "eof_without_disconnect"), 0.0);
    for n in 1..=5 {
        take_over(broker.addr("plain"), "dev1");
        let s = flap.snapshots_until("a counted take-over", limit, |s| {
            disconnects(s, "eof_without_disconnect") >= f64::from(n) && canary_up(s)
        });
        snaps.push(s.last().unwrap().clone());
    }
    flap.stop();
    let flapping = Device::timeline("flapping", snaps);

    // Renewing: 3 s tokens, renewed at 80 %: a reconnect every 2.4 s.
    let dir_renew = tempfile::tempdir().unwrap();
    let renew = lab_agent(&dns, &broker, dir_renew.path(), "sas_ttl = \"3s\"", "paris");
    let first = renew.snapshots_until("a connected canary", limit, canary_up);
    let mut snaps = vec![first.last().unwrap().clone()];
    snaps.extend(
        renew.snapshots_until("the token-renewal diagnosis", limit, |s| {
            diagnosis(s, "token_renewal")
        }),
    );
    renew.stop();
    let renewing = Device::timeline("renewing", snaps);

    // What the exporter says about them.
    assert!(disconnects(renewing.last(), "token_renewal") >= 3.0);
    assert_eq!(
        disconnects(renewing.snapshots.first().unwrap(), "token_renewal"),
        0.0
    );
    for d in [&steady, &renewing] {
        let unplanned: f64 = d
            .last()
            .iter()
            .filter(|(k, _)| {
                k.starts_with("hubprobe_canary_disconnects_total{") && !k.contains("token_renewal")
            })
            .map(|(_, v)| v)
            .sum();
        // None expected; a stray one (a reconnect racing a renewal) would still keep
        // the hour's increase (at most ~1.02 x the count) under the alert's 3.
        assert!(
            unplanned <= 2.0,
            "{}: {unplanned} unplanned disconnects",
            d.instance
        );
    }
    assert!(disconnects(flapping.last(), "eof_without_disconnect") >= 5.0);

    let mut expected = vec![expect_device(
        "HubprobeCanaryDisconnectsAboveNormal",
        &flapping,
    )];
    expected.extend(expect(
        "HubprobeSasTokenRenewalReconnects",
        &renewing,
        "hubprobe_canary_diagnosis_info",
        &[("kind", "token_renewal")],
    ));
    // The unplanned-disconnect record: the flapping device's five take-overs (and
    // more, as increase() extrapolates to the window), none for the others.
    let records: Vec<Record> = [(&steady, 0.0), (&flapping, 1.0), (&renewing, 0.0)]
        .iter()
        .map(|(d, v)| Record {
            expr: "instance:hubprobe_canary_unplanned_disconnects:increase1h > bool 4".into(),
            name: String::new(),
            labels: d.target_labels(),
            value: *v,
        })
        .collect();
    let devices = [steady, flapping, renewing];
    let dir = tempfile::tempdir().unwrap();
    let file = promtool_test(dir.path(), "canary", &devices, &expected, &records);
    assert_promtool_passes(&file);
}

/// The agent in the NAT's client namespace, mosquitto in its server namespace.
fn nat_agent(nat: &Nat, dir: &Path, keepalive: &str) -> Agent {
    let text = format!(
        r#"[hub]
host = "{server}"
profile = "mqtt-broker"
endpoints = ["mqtt"]
ports = {{ mqtt = 1883 }}
timeout = "1s"
keepalive = "{keepalive}"
[schedule]
interval = "1s"
spread = "0s"
deadline = "5s"
[canary]
ping_timeout = "1s"
reconnect_min = "500ms"
reconnect_max = "1s"
[spool]
dir = "{spool}"
[prometheus]
textfile = "{prom}"
"#,
        server = nat.server_addr(),
        spool = dir.join("spool").display(),
        prom = dir.join("hubprobe.prom").display(),
    );
    let cfg = dir.join("config.toml");
    std::fs::write(&cfg, text).unwrap();
    Agent::spawn(nat.client_ns().command(support::bin()), &cfg, dir)
}

#[test]
fn keepalive_alert_fires_where_the_nat_forgets_idle_flows_first() {
    // The NAT forgets idle flows after 3 s.
    let nat = Nat::new(Duration::from_secs(3));
    let _hub = nat.start_mosquitto(1883);
    let limit = Duration::from_secs(90);

    // A 5 s keep-alive: every session dies idle; the canary diagnoses idle_timeout.
    let dir_above = tempfile::tempdir().unwrap();
    let above = nat_agent(&nat, dir_above.path(), "5s");
    let mut snaps = vec![above
        .snapshots_until("a connected canary", limit, canary_up)
        .pop()
        .unwrap()];
    snaps.extend(
        above.snapshots_until("the idle-timeout diagnosis", limit, |s| {
            diagnosis(s, "idle_timeout")
        }),
    );
    above.stop();
    let above = Device::timeline("keepalive-5s", snaps);

    // A 2 s keep-alive through the same NAT: the session holds.
    let dir_below = tempfile::tempdir().unwrap();
    let below = nat_agent(&nat, dir_below.path(), "2s");
    let mut snaps = vec![below
        .snapshots_until("a connected canary", limit, canary_up)
        .pop()
        .unwrap()];
    // About three NAT timeouts' worth of textfiles.
    for _ in 0..10 {
        let prev = std::fs::read_to_string(below.textfile()).unwrap();
        snaps.push(parse_samples(&below.next_snapshot(Some(&prev), limit)));
    }
    below.stop();
    let below = Device::timeline("keepalive-2s", snaps);
    let lost: f64 = below
        .last()
        .iter()
        .filter(|(k, _)| k.starts_with("hubprobe_canary_disconnects_total{"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(lost, 0.0, "the 2 s keep-alive keeps the flow alive");
    let ka = |d: &Device| {
        d.last()
            .iter()
            .find(|(k, _)| k.starts_with("hubprobe_canary_keepalive_seconds{"))
            .map(|(_, v)| *v)
            .unwrap()
    };
    assert_eq!((ka(&above), ka(&below)), (5.0, 2.0));

    let expected = expect(
        "HubprobeKeepaliveAboveIdleTimeout",
        &above,
        "hubprobe_canary_diagnosis_info",
        &[("kind", "idle_timeout")],
    );
    let dir = tempfile::tempdir().unwrap();
    let file = promtool_test(dir.path(), "nat", &[above, below], &expected, &[]);
    assert_promtool_passes(&file);
}

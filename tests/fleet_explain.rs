//! `hubprobe fleet explain`: IoT Hub Connections logs in every format Azure Monitor
//! writes, generated here after the published schema (the field names and shapes of
//! the public examples: no real hub is reachable), with every 404104 pattern of the
//! guidance injected — each found exactly, nothing else; joined with real agent
//! reports from the lab (canary disconnects caused for real) across a clock offset;
//! malformed, truncated and foreign records counted with file and line.

mod common;
mod support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{agent_lab, Dns, Mosquitto};
use serde_json::{json, Map, Value};

/// 2026-11-30T00:00:00Z.
const T0: i64 = 1_764_460_800_000;
const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;
const RESOURCE: &str = "/SUBSCRIPTIONS/00000000-0000-0000-0000-000000000000/RESOURCEGROUPS/LAB/PROVIDERS/MICROSOFT.DEVICES/IOTHUBS/LAB-HUB";
const SDK_NEW: &str = "iothubclient/1.14.0 (native; Linux; x86_64)";
const SDK_OLD: &str = "iothubclient/1.2.8 (native; Linux; x86_64)";

// ---------------------------------------------------------------------------
// The generator: records as Azure Monitor writes them for category Connections.

#[derive(Clone, Debug)]
struct Rec {
    t: i64,
    op: &'static str,
    result: Option<(&'static str, &'static str)>,
    device: String,
    module: Option<String>,
    protocol: &'static str,
    ip: String,
    sdk: &'static str,
}

fn rfc3339(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_millis(ms as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

impl Rec {
    fn properties(&self) -> Map<String, Value> {
        let mut p = Map::new();
        p.insert("deviceId".into(), json!(self.device));
        if let Some(m) = &self.module {
            p.insert("moduleId".into(), json!(m));
        }
        p.insert("protocol".into(), json!(self.protocol));
        p.insert(
            "authType".into(),
            json!("{\"scope\":\"device\",\"type\":\"sas\",\"issuer\":\"iothub\",\"acceptingIpFilterRule\":null}"),
        );
        p.insert("maskedIpAddress".into(), json!(self.ip));
        if self.op == "deviceConnect" {
            p.insert("sdkVersion".into(), json!(self.sdk));
        }
        if let Some((code, desc)) = self.result {
            p.insert("statusCode".into(), json!(&code[..3]));
            p.insert("errorMessage".into(), json!(desc));
        }
        p
    }

    /// A resource log record; `properties` a JSON string (storage, Event Hubs) or an
    /// object (older exports).
    fn resource_log(&self, props_as_string: bool) -> Value {
        let props = Value::Object(self.properties());
        let mut r = json!({
            "time": rfc3339(self.t),
            "resourceId": RESOURCE,
            "operationName": self.op,
            "category": "Connections",
            "level": if self.result.is_some() { "Error" } else { "Information" },
            "properties": if props_as_string { Value::String(props.to_string()) } else { props },
            "location": "westeurope",
        });
        if let Some((code, desc)) = self.result {
            r["resultType"] = json!(code);
            r["resultDescription"] = json!(desc);
        }
        r
    }

    /// An `AzureDiagnostics` row as Log Analytics exports it (properties flattened
    /// into typed columns).
    fn azure_diagnostics(&self) -> BTreeMap<&'static str, String> {
        let mut m = BTreeMap::new();
        m.insert("TenantId", "11111111-1111-1111-1111-111111111111".into());
        m.insert("TimeGenerated", rfc3339(self.t));
        m.insert("ResourceId", RESOURCE.into());
        m.insert("Category", "Connections".into());
        m.insert("ResourceGroup", "LAB".into());
        m.insert("ResourceProvider", "MICROSOFT.DEVICES".into());
        m.insert("Resource", "LAB-HUB".into());
        m.insert("ResourceType", "IOTHUBS".into());
        m.insert("OperationName", self.op.into());
        m.insert(
            "Level",
            if self.result.is_some() {
                "Error"
            } else {
                "Information"
            }
            .into(),
        );
        m.insert("ResultType", self.result.map(|r| r.0).unwrap_or("").into());
        m.insert(
            "ResultDescription",
            self.result.map(|r| r.1).unwrap_or("").into(),
        );
        m.insert("deviceId_s", self.device.clone());
        m.insert("moduleId_s", self.module.clone().unwrap_or_default());
        m.insert("protocol_s", self.protocol.into());
        m.insert("maskedIpAddress_s", self.ip.clone());
        m.insert(
            "sdkVersion_s",
            if self.op == "deviceConnect" {
                self.sdk
            } else {
                ""
            }
            .into(),
        );
        m.insert(
            "statusCode_s",
            self.result
                .map(|r| r.0[..3].to_string())
                .unwrap_or_default(),
        );
        m.insert("Type", "AzureDiagnostics".into());
        m
    }
}

const R404104: Option<(&str, &str)> = Some(("404104", "DeviceConnectionClosedRemotely"));
const R401003: Option<(&str, &str)> = Some(("401003", "IoTHubUnauthorized"));
const R500001: Option<(&str, &str)> = Some(("500001", "ServerError"));

/// What a fleet is expected to show.
#[derive(Default)]
struct Truth {
    /// Device → dominant class.
    dominant: BTreeMap<String, &'static str>,
    /// (device, time) → class of each disconnect.
    disconnects: BTreeMap<(String, i64), &'static str>,
    /// (device, time) of refused connects listed.
    refused: Vec<(String, i64)>,
}

struct Gen {
    recs: Vec<Rec>,
    truth: Truth,
}

impl Gen {
    fn rec(
        &mut self,
        t: i64,
        op: &'static str,
        result: Option<(&'static str, &'static str)>,
        dev: &str,
        ip: &str,
        sdk: &'static str,
    ) {
        self.recs.push(Rec {
            t,
            op,
            result,
            device: dev.into(),
            module: None,
            protocol: "Mqtt",
            ip: ip.into(),
            sdk,
        });
    }
    fn connect(&mut self, t: i64, dev: &str, ip: &str, sdk: &'static str) {
        self.rec(t, "deviceConnect", None, dev, ip, sdk);
    }
    fn drop_(
        &mut self,
        t: i64,
        dev: &str,
        ip: &str,
        result: Option<(&'static str, &'static str)>,
        class: &'static str,
    ) {
        self.rec(t, "deviceDisconnect", result, dev, ip, SDK_NEW);
        self.truth.disconnects.insert((dev.into(), t), class);
    }
}

/// Six hours of a fleet with every pattern of the guidance.
fn fleet() -> Gen {
    let mut g = Gen {
        recs: Vec::new(),
        truth: Truth::default(),
    };
    let end = T0 + 6 * HOUR;
    // Cause 1, renewal: 1 h tokens renewed at 80 % (a reconnect every 48 min).
    for i in 0..6 {
        let dev = format!("tok-{i:02}");
        let ip = format!("198.51.{}.XXX", 10 + i);
        let mut t = T0 + i * 3 * MIN;
        g.connect(t, &dev, &ip, SDK_NEW);
        let mut k = 0;
        loop {
            t += 48 * MIN + [0, 9_000, -12_000, 4_000][k % 4];
            if t >= end {
                break;
            }
            g.drop_(t, &dev, &ip, R404104, "token_renewal");
            t += 2_000;
            g.connect(t, &dev, &ip, SDK_NEW);
            k += 1;
        }
        g.truth.dominant.insert(dev, "token_renewal");
    }
    // Cause 1, expiry: not renewed; the hub closes at expiry + grace (every 65 min),
    // the next connect with the stale token is refused (401003), then a renewed one
    // succeeds 20 s later.
    for i in 0..3 {
        let dev = format!("exp-{i:02}");
        let ip = format!("198.51.{}.XXX", 30 + i);
        let mut t = T0 + i * 7 * MIN;
        g.connect(t, &dev, &ip, SDK_NEW);
        loop {
            t += 65 * MIN;
            if t >= end {
                break;
            }
            g.drop_(t, &dev, &ip, R404104, "token_expired");
            g.rec(t + 2_000, "deviceConnect", R401003, &dev, &ip, SDK_NEW);
            t += 22_000;
            g.connect(t, &dev, &ip, SDK_NEW);
        }
        g.truth.dominant.insert(dev, "token_expired");
    }
    // Cause 3: 30 devices on 10 prefixes drop within two minutes at 03:00, with
    // 500xxx among them; back 30–90 s later.
    let wave = T0 + 3 * HOUR + 60_000;
    for i in 0..30 {
        let dev = format!("hub-{i:02}");
        let ip = format!("203.0.{}.XXX", 100 + i % 10);
        g.connect(T0 + 5 * MIN + i * 1_000, &dev, &ip, SDK_NEW);
        let t = wave + i * 3_000;
        let r = if i % 4 == 0 { R500001 } else { R404104 };
        g.drop_(t, &dev, &ip, r, "hub_transient");
        g.connect(t + 30_000 + i * 2_000, &dev, &ip, SDK_NEW);
        g.truth.dominant.insert(dev, "hub_transient");
    }
    // Cause 2, random: irregular drops, quick reconnects on the same IP.
    let random: [&[i64]; 5] = [
        &[23, 71, 149, 290],
        &[41, 95, 118, 260, 333],
        &[17, 133, 215],
        &[58, 101, 244, 301],
        &[12, 88, 230, 270],
    ];
    for (i, mins) in random.iter().enumerate() {
        let dev = format!("net-{i:02}");
        let ip = format!("192.0.{}.XXX", 2 + i);
        g.connect(T0 + MIN, &dev, &ip, SDK_NEW);
        for (k, m) in mins.iter().enumerate() {
            let t = T0 + m * MIN + i as i64 * 7_000;
            g.drop_(t, &dev, &ip, R404104, "network");
            g.connect(t + 5_000 + k as i64 * 9_000, &dev, &ip, SDK_NEW);
        }
        g.truth.dominant.insert(dev, "network");
    }
    // Cause 2, roaming: a new masked IP at every reconnect.
    for i in 0..2 {
        let dev = format!("roam-{i:02}");
        let ips = [
            "100.64.1.XXX",
            "10.20.30.XXX",
            "100.64.7.XXX",
            "172.16.9.XXX",
        ];
        g.connect(T0 + 2 * MIN, &dev, ips[0], SDK_NEW);
        for (k, m) in [37i64, 122, 251].iter().enumerate() {
            let t = T0 + m * MIN + i * 11_000;
            g.drop_(t, &dev, ips[k], R404104, "roaming");
            g.connect(t + 14_000, &dev, ips[k + 1], SDK_NEW);
        }
        g.truth.dominant.insert(dev, "roaming");
    }
    // Cause 2 with an old SDK.
    g.connect(T0 + 3 * MIN, "old-00", "192.0.20.XXX", SDK_OLD);
    for m in [66i64, 199] {
        let t = T0 + m * MIN;
        g.rec(
            t,
            "deviceDisconnect",
            R404104,
            "old-00",
            "192.0.20.XXX",
            SDK_OLD,
        );
        g.truth.disconnects.insert(("old-00".into(), t), "network");
        g.connect(t + 8_000, "old-00", "192.0.20.XXX", SDK_OLD);
    }
    g.truth.dominant.insert("old-00".into(), "network");
    // Devices that never come back.
    for i in 0..2 {
        let dev = format!("gone-{i:02}");
        let ip = format!("192.0.{}.XXX", 40 + i);
        g.connect(T0 + 4 * MIN, &dev, &ip, SDK_NEW);
        g.drop_(
            T0 + 80 * MIN + i * 60_000,
            &dev,
            &ip,
            R404104,
            "never_reconnected",
        );
        g.truth.dominant.insert(dev, "never_reconnected");
    }
    // Credentials: every connect refused with 401003.
    for k in 0..12 {
        let t = T0 + 9 * MIN + k * 10 * MIN;
        g.rec(
            t,
            "deviceConnect",
            R401003,
            "cred-00",
            "192.0.50.XXX",
            SDK_NEW,
        );
        g.truth.refused.push(("cred-00".into(), t));
    }
    g.truth.dominant.insert("cred-00".into(), "credentials");
    // A device that closes its connection itself (a clean disconnect).
    g.connect(T0 + 6 * MIN, "clean-00", "192.0.60.XXX", SDK_NEW);
    g.drop_(
        T0 + 150 * MIN,
        "clean-00",
        "192.0.60.XXX",
        None,
        "device_closed",
    );
    g.connect(T0 + 152 * MIN, "clean-00", "192.0.60.XXX", SDK_NEW);
    g.truth.dominant.insert("clean-00".into(), "device_closed");
    // A module identity with random drops.
    g.recs.push(Rec {
        t: T0 + 7 * MIN,
        op: "deviceConnect",
        result: None,
        device: "gw-00".into(),
        module: Some("edgeAgent".into()),
        protocol: "Amqp",
        ip: "192.0.70.XXX".into(),
        sdk: SDK_NEW,
    });
    for m in [44i64, 187] {
        let t = T0 + m * MIN;
        g.recs.push(Rec {
            t,
            op: "deviceDisconnect",
            result: R404104,
            device: "gw-00".into(),
            module: Some("edgeAgent".into()),
            protocol: "Amqp",
            ip: "192.0.70.XXX".into(),
            sdk: SDK_NEW,
        });
        g.recs.push(Rec {
            t: t + 3_000,
            op: "deviceConnect",
            result: None,
            device: "gw-00".into(),
            module: Some("edgeAgent".into()),
            protocol: "Amqp",
            ip: "192.0.70.XXX".into(),
            sdk: SDK_NEW,
        });
        g.truth.disconnects.insert(("gw-00".into(), t), "network");
    }
    g.truth.dominant.insert("gw-00/edgeAgent".into(), "network");
    // Stable devices: connected all along.
    for i in 0..20 {
        let dev = format!("ok-{i:02}");
        g.connect(T0 + i * 10_000, &dev, &format!("198.18.{i}.XXX"), SDK_NEW);
        g.truth.dominant.insert(dev, "stable");
    }
    // The last record of the log, so that its end is known.
    g.connect(end, "ok-00", "198.18.0.XXX", SDK_NEW);
    g.recs.sort_by_key(|r| r.t);
    g
}

/// Foreign records (other categories) mixed into a resource log.
fn foreign_records() -> Vec<Value> {
    vec![
        json!({"time": rfc3339(T0 + MIN), "resourceId": RESOURCE, "operationName": "ingress", "category": "Routes", "level": "Error", "resultType": "0", "properties": "{\"endpointName\":\"events\"}"}),
        json!({"time": rfc3339(T0 + 2 * MIN), "resourceId": RESOURCE, "operationName": "c2dSend", "category": "C2DCommands", "level": "Information", "properties": "{\"deviceId\":\"tok-00\"}"}),
    ]
}

/// The formats.
#[derive(Clone, Copy, Debug)]
enum Format {
    StorageLines,
    StorageObjects,
    Pretty,
    EventHubs,
    LogAnalyticsJson,
    LogAnalyticsApi,
    LogAnalyticsCsv,
}

fn write(g: &Gen, f: Format, path: &Path, foreign: bool) {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let extra = if foreign {
        foreign_records()
    } else {
        Vec::new()
    };
    match f {
        Format::StorageLines | Format::StorageObjects => {
            for r in &g.recs {
                let v = r.resource_log(matches!(f, Format::StorageLines));
                writeln!(out, "{v}").unwrap();
            }
            for v in &extra {
                writeln!(out, "{v}").unwrap();
            }
        }
        Format::Pretty => {
            for r in &g.recs {
                writeln!(
                    out,
                    "{}",
                    serde_json::to_string_pretty(&r.resource_log(true)).unwrap()
                )
                .unwrap();
            }
            for v in &extra {
                writeln!(out, "{}", serde_json::to_string_pretty(v).unwrap()).unwrap();
            }
        }
        Format::EventHubs => {
            let mut all: Vec<Value> = g.recs.iter().map(|r| r.resource_log(true)).collect();
            all.extend(extra);
            for (i, batch) in all.chunks(37).enumerate() {
                let doc = json!({ "records": batch });
                if i % 2 == 0 {
                    writeln!(out, "{doc}").unwrap();
                } else {
                    writeln!(out, "{}", serde_json::to_string_pretty(&doc).unwrap()).unwrap();
                }
            }
        }
        Format::LogAnalyticsJson => {
            let rows: Vec<Value> = g
                .recs
                .iter()
                .map(|r| serde_json::to_value(r.azure_diagnostics()).unwrap())
                .collect();
            serde_json::to_writer_pretty(&mut out, &rows).unwrap();
        }
        Format::LogAnalyticsApi => {
            let cols: Vec<&str> = g.recs[0].azure_diagnostics().keys().copied().collect();
            let rows: Vec<Vec<String>> = g
                .recs
                .iter()
                .map(|r| r.azure_diagnostics().into_values().collect())
                .collect();
            let doc = json!({"tables": [{"name": "PrimaryResult",
                "columns": cols.iter().map(|c| json!({"name": c, "type": "string"})).collect::<Vec<_>>(),
                "rows": rows}]});
            serde_json::to_writer(&mut out, &doc).unwrap();
        }
        Format::LogAnalyticsCsv => {
            let mut w = csv::Writer::from_writer(out);
            let cols: Vec<String> = g.recs[0]
                .azure_diagnostics()
                .keys()
                .map(|c| {
                    if *c == "TimeGenerated" {
                        "TimeGenerated [UTC]".to_string()
                    } else {
                        c.to_string()
                    }
                })
                .collect();
            w.write_record(&cols).unwrap();
            for r in &g.recs {
                w.write_record(r.azure_diagnostics().values()).unwrap();
            }
            w.flush().unwrap();
            return;
        }
    }
    out.flush().unwrap();
}

// ---------------------------------------------------------------------------
// Running and checking.

fn validator() -> &'static jsonschema::Validator {
    static V: std::sync::OnceLock<jsonschema::Validator> = std::sync::OnceLock::new();
    V.get_or_init(|| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/explain.schema.json");
        let schema: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        jsonschema::options()
            .build(&schema)
            .expect("the shipped schema compiles")
    })
}

fn assert_valid(v: &Value) {
    let errors: Vec<String> = validator()
        .iter_errors(v)
        .take(20)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect();
    assert!(
        errors.is_empty(),
        "the explanation violates docs/explain.schema.json:\n{}",
        errors.join("\n")
    );
}

fn explain(args: &[&str]) -> (i32, Value, String) {
    let mut a = vec!["fleet", "explain"];
    a.extend_from_slice(args);
    a.extend_from_slice(&["-o", "json"]);
    let run = support::run_with_env(&a, &[], Duration::from_secs(120));
    let v: Value = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): code {}\n{}", run.code, run.all_output()));
    assert_valid(&v);
    (run.code, v, run.stderr)
}

fn device_key(d: &Value) -> String {
    match d["module_id"].as_str() {
        Some(m) => format!("{}/{m}", d["device_id"].as_str().unwrap()),
        None => d["device_id"].as_str().unwrap().to_string(),
    }
}

/// Every device and disconnect is named exactly as injected, and nothing else.
fn assert_truth(v: &Value, g: &Gen) {
    let t = &g.truth;
    let got: BTreeMap<String, String> = v["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                device_key(d),
                d["dominant_class"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want: BTreeMap<String, String> = t
        .dominant
        .iter()
        .map(|(k, v)| (k.clone(), v.to_string()))
        .collect();
    assert_eq!(got, want, "dominant class per device");
    let got: BTreeMap<(String, i64), String> = v["disconnects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                (
                    a["device_id"].as_str().unwrap().to_string(),
                    a["time_ms"].as_i64().unwrap(),
                ),
                a["class"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want: BTreeMap<(String, i64), String> = t
        .disconnects
        .iter()
        .map(|(k, v)| (k.clone(), v.to_string()))
        .collect();
    for (k, w) in &want {
        assert_eq!(got.get(k), Some(w), "disconnect {k:?}");
    }
    assert_eq!(got.len(), want.len(), "every disconnect, and no other");
    let refused: Vec<(String, i64)> = v["refused_connects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            assert_eq!(a["class"], "credentials");
            (
                a["device_id"].as_str().unwrap().to_string(),
                a["time_ms"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        refused, t.refused,
        "refused connects: only the credentials device's"
    );
    // The causes per device.
    for d in v["devices"].as_array().unwrap() {
        let want = match d["dominant_class"].as_str().unwrap() {
            "token_renewal" | "token_expired" => json!(1),
            "network" | "roaming" | "never_reconnected" => json!(2),
            "hub_transient" => json!(3),
            _ => Value::Null,
        };
        assert_eq!(d["iothub_cause"], want, "{d:#}");
    }
    // Exactly one window, hub-side, at the wave.
    let w = v["windows"].as_array().unwrap();
    assert_eq!(w.len(), 1, "{w:#?}");
    assert_eq!(w[0]["likely_cause"], "hub");
    assert_eq!(w[0]["iothub_cause"], 3);
    assert_eq!(w[0]["devices"], 30);
    assert_eq!(w[0]["prefixes"], 10);
    assert!(w[0]["errors_500xxx"].as_u64().unwrap() >= 8);
}

fn dev<'a>(v: &'a Value, id: &str) -> &'a Value {
    v["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| device_key(d) == id)
        .unwrap_or_else(|| panic!("no device {id}"))
}

#[test]
fn every_format_names_every_pattern_exactly() {
    let g = fleet();
    let dir = tempfile::tempdir().unwrap();
    for (f, name) in [
        (Format::StorageLines, "PT1H.json"),
        (Format::StorageObjects, "old-export.json"),
        (Format::Pretty, "pretty.json"),
        (Format::EventHubs, "eventhubs.json"),
        (Format::LogAnalyticsJson, "la-rows.json"),
        (Format::LogAnalyticsApi, "la-api.json"),
        (Format::LogAnalyticsCsv, "la-export.csv"),
    ] {
        let p = dir.path().join(name);
        write(&g, f, &p, true);
        let (code, v, stderr) = explain(&[p.to_str().unwrap()]);
        assert_eq!(code, 0, "{f:?}: {stderr}");
        assert_eq!(v["input"]["bad"], 0, "{f:?}: {:#}", v["input"]);
        assert_eq!(
            v["input"]["records"].as_u64().unwrap(),
            g.recs.len() as u64,
            "{f:?}"
        );
        assert_truth(&v, &g);
        if matches!(f, Format::StorageLines) {
            assert_eq!(v["input"]["foreign"], 2);
            // The numbers behind cause 1.
            let p = &dev(&v, "tok-00")["period"];
            let period = p["period_s"].as_f64().unwrap();
            assert!((period - 2880.0).abs() < 15.0, "{p:#}");
            assert!(p["spread_s"].as_f64().unwrap() <= 25.0, "{p:#}");
            assert_eq!(p["kind"], "renewal");
            assert!((p["token_lifetime_s"].as_f64().unwrap() - 3600.0).abs() < 1.0);
            assert!(p["sdk_default"]
                .as_str()
                .unwrap()
                .contains("C SDK: 1 h tokens renewed at 80 %"));
            let p = &dev(&v, "exp-00")["period"];
            assert_eq!(p["kind"], "expiry");
            assert!(
                (p["token_lifetime_s"].as_f64().unwrap() - 3600.0).abs() < 15.0,
                "{p:#}"
            );
            // Refinements of cause 2.
            let old = dev(&v, "old-00");
            assert_eq!(old["old_sdk"], true);
            assert!(old["fix"].as_str().unwrap().contains("Use the latest SDK"));
            assert_eq!(dev(&v, "net-00")["old_sdk"], false);
            let roam = v["disconnects"]
                .as_array()
                .unwrap()
                .iter()
                .find(|a| a["device_id"] == "roam-00")
                .unwrap();
            assert_eq!(roam["masked_ip_before"], "100.64.1.XXX");
            assert_eq!(roam["masked_ip_after"], "10.20.30.XXX");
            assert!((roam["reconnect_s"].as_f64().unwrap() - 14.0).abs() < 0.01);
            assert_eq!(dev(&v, "gone-00")["never_reconnected"], true);
            assert_eq!(dev(&v, "gw-00/edgeAgent")["protocols"], json!(["Amqp"]));
            // The fleet totals sentence.
            let s = v["totals"]["summary"].as_str().unwrap();
            assert!(
                s.starts_with(&format!("of {} disconnects: ", g.truth.disconnects.len())),
                "{s}"
            );
            assert!(
                s.contains("cause 1 (SAS token) on devices with 1h 0m tokens over Mqtt"),
                "{s}"
            );
            assert!(s.contains("cause 3 (hub transient)"), "{s}");
            assert!(s.contains("12 connect attempts refused with 401003"), "{s}");
        }
    }
    // A directory of gzip-compressed archives.
    let d2 = dir
        .path()
        .join("insights-logs-connections/y=2026/m=11/d=30");
    std::fs::create_dir_all(&d2).unwrap();
    let plain = dir.path().join("PT1H.json");
    let mut gz = flate2::write::GzEncoder::new(
        std::fs::File::create(d2.join("PT1H.json.gz")).unwrap(),
        flate2::Compression::fast(),
    );
    gz.write_all(&std::fs::read(&plain).unwrap()).unwrap();
    gz.finish().unwrap();
    std::fs::write(d2.join("README.txt"), "not a log").unwrap();
    let (code, v, _) = explain(&[dir
        .path()
        .join("insights-logs-connections")
        .to_str()
        .unwrap()]);
    assert_eq!(code, 0);
    assert_truth(&v, &g);
    assert_eq!(v["input"]["skipped_files"].as_array().unwrap().len(), 1);
}

#[test]
fn text_and_html_name_the_causes_and_the_fixes() {
    let g = fleet();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("PT1H.json");
    write(&g, Format::StorageLines, &p, false);
    let html = dir.path().join("explain.html");
    let run = support::run(&[
        "fleet",
        "explain",
        p.to_str().unwrap(),
        "--html",
        html.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 0, "{}", run.all_output());
    let t = &run.stdout;
    assert!(t.contains("tok-00: token_renewal (cause 1)"), "{t}");
    assert!(t.contains("hub-00: hub_transient (cause 3)"), "{t}");
    assert!(t.contains("roam-00: roaming (cause 2)"), "{t}");
    assert!(t.contains("cred-00: credentials (no 404104 cause)"), "{t}");
    assert!(
        t.contains("[hub] 30 devices on 10 masked IP prefixes"),
        "{t}"
    );
    assert!(t.contains("Use the latest SDK"), "{t}");
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.starts_with("<!DOCTYPE html>"));
    assert!(page.contains("<svg id=\"causes\""));
    assert!(page.contains("<table id=\"devices\">"));
    assert!(page.contains("hub-00"));
    assert!(!page.contains("<script"));
}

#[test]
fn malformed_truncated_and_foreign_records_are_counted_with_their_line() {
    let g = fleet();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("mixed.json");
    let mut lines: Vec<String> = g
        .recs
        .iter()
        .map(|r| r.resource_log(true).to_string())
        .collect();
    // Line 3: not JSON; 5: properties not JSON; 7: no time; 9: a time that is not one;
    // 11: an array of numbers; after the end, a pretty record cut in the middle.
    lines.insert(2, "this is not json".into());
    lines.insert(4, r#"{"time":"2026-11-30T00:00:00Z","operationName":"deviceConnect","category":"Connections","properties":"{not json"}"#.into());
    lines.insert(6, r#"{"operationName":"deviceConnect","category":"Connections","properties":"{\"deviceId\":\"x\"}"}"#.into());
    lines.insert(8, r#"{"time":"yesterday","operationName":"deviceConnect","category":"Connections","properties":"{\"deviceId\":\"x\"}"}"#.into());
    lines.insert(10, "[1, 2, 3]".into());
    for v in foreign_records() {
        lines.push(v.to_string());
    }
    // Last full line: a time no log has.
    lines.push(r#"{"time":"1900-01-01T00:00:00Z","operationName":"deviceConnect","category":"Connections","properties":"{\"deviceId\":\"x\"}"}"#.into());
    let pretty = serde_json::to_string_pretty(&g.recs[0].resource_log(true)).unwrap();
    let cut = &pretty[..pretty.len() / 2];
    let text = format!("{}\n{cut}\n", lines.join("\n"));
    std::fs::write(&p, text).unwrap();
    let (code, v, stderr) = explain(&[p.to_str().unwrap()]);
    assert_eq!(code, 1, "bad records are a warning: {stderr}");
    assert!(stderr.contains("could not be read"), "{stderr}");
    let bad = v["input"]["bad_records"].as_array().unwrap();
    let got: Vec<(u64, &str)> = bad
        .iter()
        .map(|b| (b["line"].as_u64().unwrap(), b["kind"].as_str().unwrap()))
        .collect();
    let n = lines.len() as u64;
    assert_eq!(
        got,
        vec![
            (3, "malformed"),
            (5, "malformed"),
            (7, "malformed"),
            (9, "malformed"),
            (11, "malformed"),
            (11, "malformed"),
            (11, "malformed"),
            (n, "malformed"),
            (n + 1, "truncated")
        ],
        "{bad:#?}"
    );
    assert_eq!(v["input"]["foreign"], 2);
    // The good records still explain the fleet exactly.
    assert_truth(&v, &g);
    // Nothing of a record's content is echoed beyond what is wrong with it.
    assert!(!serde_json::to_string(bad).unwrap().contains("not json\""));
    // A missing path is one clear error, exit 3.
    let run = support::run(&[
        "fleet",
        "explain",
        dir.path().join("nope").to_str().unwrap(),
    ]);
    assert_eq!(run.code, 3, "{}", run.all_output());
    assert!(run.stderr.contains("cannot read"), "{}", run.stderr);
    // Binary garbage and an empty file: counted, never a panic.
    let junk = dir.path().join("junk.json");
    std::fs::write(&junk, [0u8, 159, 146, 150, b'\n', b'{', b'\n']).unwrap();
    let (code, v, _) = explain(&[junk.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert_eq!(v["input"]["bad"], 2, "{:#}", v["input"]);
    let empty = dir.path().join("empty.json");
    std::fs::write(&empty, "").unwrap();
    let (code, v, _) = explain(&[empty.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert_eq!(v["totals"]["disconnects"], 0);
}

// ---------------------------------------------------------------------------
// Joined with real agent reports from the lab.

struct Agent {
    child: Child,
    dir: PathBuf,
}

impl Agent {
    fn reports(&self) -> Vec<Value> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(self.dir.join("spool"))
            .map(|rd| {
                rd.map(|e| e.unwrap().path())
                    .filter(|p| p.extension().is_some_and(|x| x == "json"))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
            .iter()
            .filter_map(|p| serde_json::from_str(&std::fs::read_to_string(p).ok()?).ok())
            .collect()
    }

    fn wait(&self, limit: Duration, what: &str, f: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let end = Instant::now() + limit;
        loop {
            let r = self.reports();
            if f(&r) {
                return r;
            }
            assert!(
                Instant::now() < end,
                "timed out waiting for {what}\n{}",
                std::fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Connects with `client_id` and leaves: the broker drops the older session with
/// that id (MQTT 3.1.1: no DISCONNECT to it), as IoT Hub does.
fn take_over(addr: SocketAddr, client_id: &str) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
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

fn eof_total(r: &[Value]) -> u64 {
    r.last()
        .and_then(|r| r["canary"]["disconnects_total"]["eof_without_disconnect"].as_u64())
        .unwrap_or(0)
}

/// The canary records of `reports` as a consumer keeps them (the latest version per
/// id), and the device key the reports name.
fn canary_events(reports: &[Value]) -> (String, Vec<Value>) {
    let mut events: Vec<Value> = Vec::new();
    for r in reports {
        for e in r["canary"]["recent"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            match events.iter_mut().find(|o| o["id"] == e["id"]) {
                Some(o) => *o = e,
                None => events.push(e),
            }
        }
    }
    let last = reports.last().expect("reports");
    let dev = last["target"]["device_id"]
        .as_str()
        .unwrap_or_else(|| last["host"].as_str().unwrap())
        .to_string();
    (dev, events)
}

#[test]
fn joined_with_an_idle_dropping_nat_names_the_timeout_and_the_keepalive() {
    // The NAT forgets idle flows after 3 s; the canary's keep-alive is 5 s.
    let nat = common::Nat::new(Duration::from_secs(3));
    let _hub = nat.start_mosquitto(1883);
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.toml");
    std::fs::write(
        &cfg,
        format!(
            "[hub]\nhost = \"{}\"\nprofile = \"mqtt-broker\"\nendpoints = [\"mqtt\"]\nports = {{ mqtt = 1883 }}\ntimeout = \"1s\"\nkeepalive = \"5s\"\n[schedule]\ninterval = \"4s\"\nspread = \"0s\"\ndeadline = \"5s\"\n[canary]\nping_timeout = \"1s\"\nreconnect_min = \"500ms\"\nreconnect_max = \"1s\"\n[spool]\ndir = \"{}\"\n",
            nat.server_addr(),
            dir.path().join("spool").display()
        ),
    )
    .unwrap();
    let child = nat
        .client_ns()
        .command(support::bin())
        .args(["agent", "--config"])
        .arg(&cfg)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("agent.log")).unwrap())
        .spawn()
        .expect("spawn hubprobe agent in the NAT's client namespace");
    let agent = Agent {
        child,
        dir: dir.path().to_path_buf(),
    };
    let reports = agent.wait(Duration::from_secs(60), "the idle-timeout diagnosis", |r| {
        r.last().is_some_and(|r| {
            r["canary"]["diagnosis"]["kind"] == "idle_timeout"
                && r["canary"]["recent"]
                    .as_array()
                    .is_some_and(|v| v.iter().all(|e| e["reconnect_s"].is_number()))
        })
    });
    drop(agent);
    let (device, events) = canary_events(&reports);
    assert!(events.len() >= 3, "{events:#?}");
    // The hub's clock 25 s ahead of the device's this time.
    const OFFSET: i64 = -25_000;
    let mut g = Gen {
        recs: Vec::new(),
        truth: Truth::default(),
    };
    let first = events[0]["at_unix_ms"].as_i64().unwrap() - OFFSET;
    g.connect(first - 10 * MIN, &device, "192.0.2.XXX", SDK_NEW);
    for (i, e) in events.iter().enumerate() {
        // The hub notices a dead connection later than the device: 1–3 s.
        let t = e["at_unix_ms"].as_i64().unwrap() - OFFSET + 1_000 + (i as i64 % 3) * 1_000;
        g.drop_(t, &device, "192.0.2.XXX", R404104, "network");
        let back = (e["reconnect_s"].as_f64().unwrap_or(1.0) * 1000.0) as i64;
        g.connect(t + back.max(100), &device, "192.0.2.XXX", SDK_NEW);
    }
    g.recs.sort_by_key(|r| r.t);
    let log = dir.path().join("hub.json");
    write(&g, Format::Pretty, &log, false);
    let spool = dir.path().join("spool");
    let (code, v, stderr) = explain(&[log.to_str().unwrap(), "--reports", spool.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        v["join"]["matched"].as_u64().unwrap(),
        events.len() as u64,
        "{:#}",
        v["join"]
    );
    assert!(v["join"]["hub_only"].as_array().unwrap().is_empty());
    assert!(v["join"]["device_only"].as_array().unwrap().is_empty());
    let off = dev(&v, &device)["clock_offset_s"].as_f64().unwrap();
    assert!((off - -27.0).abs() < 2.5, "clock offset {off}");
    for a in v["disconnects"].as_array().unwrap() {
        let r = &a["device_record"];
        assert_eq!(r["class"], "idle_timeout", "{a:#}");
        assert_eq!(r["cause"], "no_pingresp", "{a:#}");
        let s = r["summary"].as_str().unwrap();
        assert!(s.contains("keep-alive of 5 s"), "{s}");
        // The silence that killed the session (about 5 s) bounds the timeout; the
        // keep-alive to use is below it.
        let fix = r["fix"].as_str().unwrap();
        let ka: f64 = fix
            .strip_prefix("Set the MQTT keep-alive to ")
            .and_then(|f| f.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{fix}"));
        assert!((1.0..5.0).contains(&ka), "{fix}");
        assert!(a["fix"] == r["fix"]);
    }
}

#[test]
fn joined_with_real_agent_reports_across_a_clock_offset() {
    let broker = Mosquitto::start(&[]);
    let dns = Dns::start();
    let dir = tempfile::tempdir().unwrap();
    let cs = agent_lab::write_connection_string(dir.path());
    let cfg = dir.path().join("config.toml");
    std::fs::write(
        &cfg,
        format!(
            "{}[identity]\nconnection_string_file = \"{}\"\n[schedule]\ninterval = \"1s\"\nspread = \"0s\"\ndeadline = \"8s\"\n[canary]\nping_timeout = \"1s\"\nreconnect_min = \"200ms\"\nreconnect_max = \"1s\"\n[spool]\ndir = \"{}\"\n",
            agent_lab::hub_section(dns.addr(), broker.certs().ca_pem(), broker.port("tls_anon")),
            cs.display(),
            dir.path().join("spool").display()
        ),
    )
    .unwrap();
    let child = Command::new(support::bin())
        .args(["agent", "--config"])
        .arg(&cfg)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .env_remove("IOTHUB_DEVICE_CONNECTION_STRING")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("agent.log")).unwrap())
        .spawn()
        .expect("spawn hubprobe agent");
    let agent = Agent {
        child,
        dir: dir.path().to_path_buf(),
    };
    agent.wait(Duration::from_secs(30), "a connected canary", |r| {
        r.iter().any(|r| r["canary"]["connected"] == true)
    });
    // Another client with the same identity takes the session over, again and again.
    for k in 1..=5u64 {
        agent.wait(Duration::from_secs(30), "the canary back", |r| {
            r.last().is_some_and(|r| r["canary"]["connected"] == true) && eof_total(r) >= k - 1
        });
        // Irregular seconds between take-overs, as between an app's restarts: at a
        // regular spacing a shift by one record would match as well as the truth.
        std::thread::sleep(Duration::from_secs([2, 6, 3, 8, 4][(k - 1) as usize]));
        take_over(broker.addr("plain"), "dev1");
        agent.wait(Duration::from_secs(30), "the take-over recorded", |r| {
            eof_total(r) >= k
        });
    }
    let reports = agent.wait(Duration::from_secs(30), "the take-over diagnosis", |r| {
        r.last().is_some_and(|r| {
            r["canary"]["diagnosis"]["kind"] == "session_takeover"
                && r["canary"]["connected"] == true
        })
    });
    drop(agent);
    // The canary's records as a consumer keeps them (latest version per id).
    let mut events: Vec<Value> = Vec::new();
    for r in &reports {
        for e in r["canary"]["recent"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            match events.iter_mut().find(|o| o["id"] == e["id"]) {
                Some(o) => *o = e,
                None => events.push(e),
            }
        }
    }
    assert!(events.len() >= 5, "{events:#?}");
    // The hub's log of the same disconnects: its clock 40 s behind the device's and a
    // little jitter; one disconnect the hub logged that the device never saw, and the
    // last of the device's that the hub log leaves out.
    const OFFSET: i64 = 40_000;
    let mut g = Gen {
        recs: Vec::new(),
        truth: Truth::default(),
    };
    let first = events[0]["at_unix_ms"].as_i64().unwrap() - OFFSET;
    g.connect(first - 20 * MIN, "dev1", "127.0.0.XXX", SDK_NEW);
    g.drop_(first - 10 * MIN, "dev1", "127.0.0.XXX", R404104, "network");
    g.connect(first - 10 * MIN + 1_000, "dev1", "127.0.0.XXX", SDK_NEW);
    let kept = events.len() - 1;
    for (i, e) in events[..kept].iter().enumerate() {
        let t = e["at_unix_ms"].as_i64().unwrap() - OFFSET - [100, -200, 250, 0, -150][i % 5];
        g.drop_(t, "dev1", "127.0.0.XXX", R404104, "network");
        let back = (e["reconnect_s"].as_f64().unwrap_or(1.0) * 1000.0) as i64;
        g.connect(t + back.max(100), "dev1", "127.0.0.XXX", SDK_NEW);
    }
    let last = events[kept]["at_unix_ms"].as_i64().unwrap() - OFFSET;
    // The other client's connects, and the log going on a little past the last one.
    g.connect(last + 5 * MIN, "other-device", "127.0.0.XXX", SDK_NEW);
    g.recs.sort_by_key(|r| r.t);
    let log = dir.path().join("hub.json");
    write(&g, Format::StorageLines, &log, false);
    let spool = dir.path().join("spool");
    let (code, v, stderr) = explain(&[log.to_str().unwrap(), "--reports", spool.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    let j = &v["join"];
    assert_eq!(j["devices_joined"], 1, "{j:#}");
    assert_eq!(j["matched"].as_u64().unwrap(), kept as u64, "{j:#}");
    let off = dev(&v, "dev1")["clock_offset_s"].as_f64().unwrap();
    assert!((off - 40.0).abs() < 2.0, "clock offset {off}");
    let matched: Vec<&Value> = v["disconnects"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["device_record"].is_object())
        .collect();
    assert_eq!(matched.len(), kept);
    for a in &matched {
        let r = &a["device_record"];
        assert_eq!(r["cause"], "eof_without_disconnect", "{a:#}");
        assert_eq!(r["class"], "session_takeover", "{a:#}");
        assert!(r["summary"]
            .as_str()
            .unwrap()
            .contains("hubprobe's canary and your app share an identity"));
        assert!(
            matches!(r["quality"].as_str().unwrap(), "exact" | "close"),
            "{a:#}"
        );
        assert!(r["residual_s"].as_f64().unwrap().abs() < 5.0, "{a:#}");
        assert!(a["fix"].as_str().unwrap().contains("own identity"));
    }
    let hub_only = j["hub_only"].as_array().unwrap();
    assert_eq!(hub_only.len(), 1, "{j:#}");
    assert_eq!(hub_only[0]["time"], rfc3339(first - 10 * MIN));
    let device_only = j["device_only"].as_array().unwrap();
    assert_eq!(device_only.len(), 1, "{j:#}");
    assert_eq!(device_only[0]["id"], events[kept]["id"]);
    // No secret from the reports reaches the output.
    let text = serde_json::to_string(&v).unwrap();
    assert!(!text.contains(agent_lab::LAB_DEVICE_KEY));
    assert!(!text.contains("sig="));
}

// ---------------------------------------------------------------------------
// A large log: a day of 10 000 devices, streamed, memory bounded.

/// Writes a day of `devices` devices as a storage archive: every twentieth renews its
/// token every `renew_min` minutes, every fiftieth drops three times at random, the
/// rest stay connected. Returns the records written.
fn write_day(path: &Path, devices: u64, renew_min: i64) -> u64 {
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path).unwrap());
    let mut n = 0u64;
    let end = T0 + 24 * HOUR;
    // The records written directly (the same shape as `Rec::resource_log`, without
    // building a JSON tree per record: a debug build generates it in a second).
    let mut put = |t: i64, op: &str, result: Option<&str>, dev: &str, ip: &str| {
        let res = match result {
            Some(code) => format!(
                r#""resultType":"{code}","resultDescription":"DeviceConnectionClosedRemotely","level":"Error","#
            ),
            None => r#""level":"Information","#.to_string(),
        };
        writeln!(
            out,
            r#"{{"time":"{}","resourceId":"{RESOURCE}","operationName":"{op}","category":"Connections",{res}"properties":"{{\"deviceId\":\"{dev}\",\"protocol\":\"Mqtt\",\"authType\":null,\"maskedIpAddress\":\"{ip}\",\"sdkVersion\":\"{SDK_NEW}\"}}","location":"westeurope"}}"#,
            rfc3339(t)
        )
        .unwrap();
        n += 1;
    };
    for i in 0..devices {
        let dev = format!("dev-{i:05}");
        let ip = format!("10.{}.{}.XXX", i / 250 % 250, i % 250);
        let mut t = T0 + (i as i64 * 997) % HOUR;
        put(t, "deviceConnect", None, &dev, &ip);
        if i % 20 == 0 {
            loop {
                t += renew_min * MIN + (i as i64 % 7) * 1_000;
                if t >= end {
                    break;
                }
                put(t, "deviceDisconnect", Some("404104"), &dev, &ip);
                put(t + 2_000, "deviceConnect", None, &dev, &ip);
            }
        } else if i % 50 == 1 {
            for m in [97i64, 431, 1_013] {
                let t = T0 + m * MIN + (i as i64 * 7_919) % (20 * MIN);
                put(t, "deviceDisconnect", Some("404104"), &dev, &ip);
                put(t + 9_000, "deviceConnect", None, &dev, &ip);
            }
        }
    }
    put(end, "deviceConnect", None, "dev-00000", "10.0.0.XXX");
    out.flush().unwrap();
    n
}

/// Runs `hubprobe` to completion with stdout into a file; its exit code and peak
/// resident set (KiB), from wait4(2). Linux keeps a process's high-water mark across
/// exec, so a child spawned from this (multi-threaded, busy) test process would
/// measure this process's peak too: a small Python process forks and waits for it.
fn run_measured(args: &[&str], stdout: &Path) -> (i32, i64) {
    const RUNNER: &str = r#"
import os, sys
out = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
null = os.open(os.devnull, os.O_RDWR)
pid = os.fork()
if pid == 0:
    os.dup2(null, 0)
    os.dup2(out, 1)
    os.dup2(null, 2)
    os.execv(sys.argv[2], sys.argv[2:])
_, status, ru = os.wait4(pid, 0)
print(os.waitstatus_to_exitcode(status), ru.ru_maxrss)
"#;
    let bin = support::bin();
    let out = Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(RUNNER)
        .arg(stdout)
        .arg(bin)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("/usr/bin/python3 is needed to measure the peak RSS (apt install python3)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut it = text.split_whitespace().map(|x| x.parse::<i64>().unwrap());
    (it.next().unwrap() as i32, it.next().unwrap())
}

/// Checks the document of a day of 10 000 devices renewing every `renew_min`
/// minutes (`records` written); its disconnects.
fn check_day(out: &Path, records: u64, renew_min: i64) -> u64 {
    let v: Value =
        serde_json::from_reader(std::io::BufReader::new(std::fs::File::open(out).unwrap()))
            .unwrap();
    assert_eq!(v["input"]["records"].as_u64().unwrap(), records);
    let by = &v["totals"]["devices_by_class"];
    assert_eq!(by["token_renewal"], 500, "{renew_min} min: {by:#}");
    assert_eq!(by["network"], 200, "{by:#}");
    assert_eq!(by["stable"], 9_300, "{by:#}");
    assert!(v["windows"].as_array().unwrap().is_empty());
    let disconnects = v["totals"]["disconnects"].as_u64().unwrap();
    // Every disconnect is in the document, device by device.
    let listed = v["disconnects"].as_array().unwrap();
    assert_eq!(listed.len() as u64, disconnects);
    let renewals = listed
        .iter()
        .filter(|a| a["class"] == "token_renewal")
        .count() as u64;
    assert_eq!(renewals, disconnects - 600, "200 devices drop 3 times each");
    disconnects
}

/// This process's peak resident set, KiB (shown beside the measures: they do not
/// include it).
fn own_peak_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn a_day_of_ten_thousand_devices_in_bounded_memory() {
    // The records are streamed and the attributions are made as they are written:
    // memory follows the devices (their explanation) and, per disconnect, only the
    // compact events kept (24 bytes each for the disconnect and its reconnect, in
    // vectors that may have doubled), not the size of the log, of its records or of
    // the output document (~1.4 KiB per disconnect).
    let dir = tempfile::tempdir().unwrap();
    let mut runs = Vec::new();
    for renew_min in [48i64, 12] {
        let log = dir.path().join(format!("PT24H-{renew_min}.json"));
        let records = write_day(&log, 10_000, renew_min);
        let size = std::fs::metadata(&log).unwrap().len();
        let out = dir.path().join(format!("out-{renew_min}.json"));
        let parent_kib = own_peak_kib();
        let (code, rss_kib) = run_measured(
            &["fleet", "explain", log.to_str().unwrap(), "-o", "json"],
            &out,
        );
        assert_eq!(code, 0);
        std::fs::remove_file(&log).unwrap();
        runs.push((renew_min, records, size, out, parent_kib, rss_kib));
    }
    let mut measured = Vec::new();
    for (renew_min, records, size, out, parent_kib, rss_kib) in runs {
        let disconnects = check_day(&out, records, renew_min);
        eprintln!(
            "a day of 10 000 devices renewing every {renew_min} min: {records} records, {:.0} MiB of log, {disconnects} disconnects, peak RSS {:.0} MiB (the test process's own {:.0} MiB)",
            size as f64 / 1048576.0,
            rss_kib as f64 / 1024.0,
            parent_kib as f64 / 1024.0
        );
        measured.push((disconnects, rss_kib));
    }
    let [(light, light_kib), (heavy, heavy_kib)] = measured[..] else {
        unreachable!()
    };
    assert!(heavy > light * 3, "{heavy} vs {light} disconnects");
    let per_disconnect = 160u64;
    for (disconnects, kib) in [(light, light_kib), (heavy, heavy_kib)] {
        let bound = (32 << 20) + 1024 * 10_000 + per_disconnect * disconnects;
        assert!(
            (kib as u64) * 1024 < bound,
            "peak RSS {kib} KiB for {disconnects} disconnects (bound {bound} bytes)"
        );
    }
    // Four times the disconnects cost little more: the growth stays within the
    // compact per-disconnect constant (and 4 MiB of allocator slack).
    let growth = (heavy_kib - light_kib).max(0) as u64 * 1024;
    let allowed = (4 << 20) + per_disconnect * (heavy - light);
    assert!(
        growth < allowed,
        "peak RSS grew {growth} bytes for {} more disconnects (allowed {allowed})",
        heavy - light
    );
}

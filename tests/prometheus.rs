//! `-o prometheus` end to end: real `hubprobe check` and `hubprobe tune` runs against
//! the lab (mosquitto, dnsmasq), their output checked by `promtool check metrics`
//! (Debian `prometheus`) and compared figure by figure with the JSON report of the
//! same run; then written with `write_textfile` into the directory of a real
//! node_exporter (Debian `prometheus-node-exporter`, textfile collector only, on a
//! free loopback port) and scraped over HTTP.

mod common;
mod support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Dns, Mosquitto, HUB_HOST, TEST_CA_CN};
use hubprobe::auth::sas::{generate_sas_token, resource_uri};
use hubprobe::auth::Secret;
use hubprobe::model::Report;
use hubprobe::model::{CanaryReport, Diagnosis, DiagnosisKind};
use hubprobe::report::prometheus::{render, write_textfile};
use serde_json::Value;
use support::{lab_profile, run_with_env};

const DEVICE_KEY: &str = "dGhpcy1pcy1hLWxhYi1kZXZpY2Uta2V5LTEyMzQ1Njc=";
const EXPIRY: u64 = 4_102_444_800; // 2100-01-01
/// A label value with a quote and a backslash (the CLI refuses control characters).
const HOSTILE_LABEL: &str = r#"berlin "3" \ lab"#;

fn lab_token(device: &str) -> String {
    let resource = resource_uri(HUB_HOST, device, None);
    generate_sas_token(&resource, &Secret::new(DEVICE_KEY), EXPIRY)
        .unwrap()
        .token
        .expose()
        .to_string()
}

/// Runs `promtool check metrics` on `text` (bounded); panics with its output unless
/// it finds the text valid and lint-clean.
fn promtool_check(text: &str) {
    let promtool = common::find_program("promtool")
        .expect("promtool (Debian package prometheus) is not installed");
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn promtool");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .expect("feed promtool");
    let out = wait_output(child, Duration::from_secs(30));
    assert!(
        out.0.success() && out.1.trim().is_empty(),
        "promtool check metrics: {:?}\n{}\n--- input ---\n{text}",
        out.0,
        out.1
    );
}

/// Waits (bounded) for a child and returns its status and combined output.
fn wait_output(mut child: Child, limit: Duration) -> (std::process::ExitStatus, String) {
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("child did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut text = String::new();
    if let Some(mut o) = child.stdout.take() {
        let _ = o.read_to_string(&mut text);
    }
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut text);
    }
    (status, text)
}

/// The samples of an exposition: series (name and labels as written) → value.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap();
            (series.to_string(), value.parse().unwrap())
        })
        .collect()
}

/// Equal within a relative 1e-9 (and an absolute 1e-12): a metric and the report's
/// field went through different unit conversions (ms / 1000 here, Duration there),
/// so exact equality of their floats would be luck.
macro_rules! assert_close {
    ($a:expr, $b:expr $(,)?) => {
        assert_close!($a, $b, "")
    };
    ($a:expr, $b:expr, $($msg:tt)+) => {{
        let (a, b): (f64, f64) = ($a, $b);
        assert!(
            (a - b).abs() <= 1e-12_f64.max(1e-9 * a.abs().max(b.abs())),
            "{a} != {b}: {}",
            format!($($msg)+)
        );
    }};
}

fn get(m: &BTreeMap<String, f64>, series: &str) -> f64 {
    *m.get(series)
        .unwrap_or_else(|| panic!("no series {series} among {:#?}", m.keys()))
}

fn unix(rfc3339: &str) -> f64 {
    humantime::parse_rfc3339_weak(rfc3339)
        .unwrap()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn not_after(der: &[u8]) -> f64 {
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    cert.validity().not_after.timestamp() as f64
}

fn sha256_hex(der: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The lab hub: mosquitto (TLS and WebSocket/TLS with the device's token) and dnsmasq.
struct Lab {
    broker: Mosquitto,
    dns: Dns,
    dir: tempfile::TempDir,
}

impl Lab {
    fn start() -> Lab {
        let users = [(common::hub_username("dev1"), lab_token("dev1"))];
        Lab {
            broker: Mosquitto::start(&users),
            dns: Dns::start(),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// `hubprobe check -o prometheus` of the MQTT endpoints with `ports`, also writing
    /// the JSON report of the same run; returns (exit code, metrics text, JSON).
    fn check(&self, ports: &str) -> (i32, String, Value) {
        let report_file = self.dir.path().join("report.json");
        let _ = std::fs::remove_file(&report_file);
        let dns = self.dns.addr().to_string();
        let ca = self.broker.certs().ca_pem().display().to_string();
        let cs = format!("HostName={HUB_HOST};DeviceId=dev1;SharedAccessKey={DEVICE_KEY}");
        let label = format!("site={HOSTILE_LABEL}");
        let expiry = EXPIRY.to_string();
        let profile = lab_profile();
        let report = report_file.display().to_string();
        let out = run_with_env(
            &[
                "check",
                HUB_HOST,
                "--profile",
                &profile,
                "--endpoint",
                "mqtt-tls,mqtt-ws",
                "--dns-server",
                &dns,
                "--trust",
                "none",
                "--ca-file",
                &ca,
                "--port",
                ports,
                "--timeout",
                "5s",
                "--sas-expiry",
                &expiry,
                "--label",
                &label,
                "--label",
                "net.type=lte",
                "-o",
                "prometheus",
                "--report-file",
                &report,
            ],
            &[("IOTHUB_DEVICE_CONNECTION_STRING", &cs)],
            Duration::from_secs(60),
        );
        let json: Value = serde_json::from_str(
            &std::fs::read_to_string(&report_file)
                .unwrap_or_else(|e| panic!("no JSON report ({e}): {}", out.all_output())),
        )
        .unwrap();
        support::assert_valid(&json);
        (out.code, out.stdout, json)
    }

    fn ports(&self, tls: &str) -> String {
        format!(
            "mqtt-tls={},mqtt-ws={}",
            self.broker.port(tls),
            self.broker.port("wss")
        )
    }
}

/// Every phase duration of the JSON report appears with the same value, and only
/// phases that ran have one.
fn assert_phase_durations_match(m: &BTreeMap<String, f64>, json: &Value) {
    let mut seen = 0;
    for e in json["endpoints"].as_array().unwrap() {
        let ep = e["name"].as_str().unwrap();
        for p in e["phases"].as_array().unwrap() {
            let series = format!(
                r#"hubprobe_phase_duration_seconds{{endpoint="{ep}",phase="{}"}}"#,
                p["phase"].as_str().unwrap()
            );
            match p["duration_ms"].as_f64() {
                Some(ms) => {
                    assert_close!(get(m, &series), ms / 1000.0, "{series}");
                    seen += 1;
                }
                None => assert!(!m.contains_key(&series), "{series} was skipped"),
            }
        }
    }
    assert!(seen >= 2, "{json:#}");
}

#[test]
fn check_all_ok_matches_the_json_report_and_the_lab_certificates() {
    let lab = Lab::start();
    let (code, text, json) = lab.check(&lab.ports("tls"));
    assert_eq!(code, 0, "{text}\n{json:#}");
    promtool_check(&text);
    let m = samples(&text);

    assert_close!(get(&m, "hubprobe_success"), 1.0);
    assert_close!(get(&m, "hubprobe_verdict_code"), 0.0);
    assert_close!(
        get(&m, "hubprobe_duration_seconds"),
        json["duration_ms"].as_f64().unwrap() / 1000.0
    );
    assert_close!(
        get(&m, "hubprobe_finished_timestamp_seconds"),
        unix(json["finished_at"].as_str().unwrap())
    );
    assert_close!(
        get(&m, "hubprobe_sas_token_expiry_timestamp_seconds"),
        EXPIRY as f64
    );
    assert_phase_durations_match(&m, &json);

    let server = &lab.broker.certs().server;
    let leaf_expiry = not_after(&server.cert_der);
    let fingerprint = sha256_hex(&server.cert_der);
    for ep in ["mqtt-tls", "mqtt-ws"] {
        let e = format!(r#"{{endpoint="{ep}"}}"#);
        assert_close!(get(&m, &format!("hubprobe_endpoint_success{e}")), 1.0);
        assert_close!(get(&m, &format!("hubprobe_mqtt_connack_code{e}")), 0.0);
        assert_close!(
            get(
                &m,
                &format!("hubprobe_tls_leaf_not_after_timestamp_seconds{e}")
            ),
            leaf_expiry,
            "the lab's server certificate"
        );
        let tls = &support::phase(&json, ep, "tls")["evidence"];
        let origin = tls["trust_anchor"]["origin"].as_str().unwrap();
        assert!(origin.starts_with("ca-file:"), "{origin}");
        assert_close!(
            get(
                &m,
                &format!(
                    r#"hubprobe_tls_trust_anchor_info{{endpoint="{ep}",anchor="{TEST_CA_CN}",subject="{}",origin="{origin}",expected="true",legacy="false"}}"#,
                    tls["trust_anchor"]["subject"].as_str().unwrap()
                )
            ),
            1.0
        );
        assert!(
            text.contains(&format!(r#"fingerprint_sha256="{fingerprint}""#)),
            "{text}"
        );
        assert_close!(
            get(
                &m,
                &format!(
                    r#"hubprobe_tls_version_info{{endpoint="{ep}",version="{}",cipher_suite="{}"}}"#,
                    tls["version"].as_str().unwrap(),
                    tls["cipher_suite"].as_str().unwrap()
                )
            ),
            1.0
        );
        let dns = &support::phase(&json, ep, "dns")["evidence"];
        assert_close!(
            get(
                &m,
                &format!(r#"hubprobe_dns_answer_records{{endpoint="{ep}",family="a"}}"#)
            ),
            dns["a"]["records"].as_array().unwrap().len() as f64
        );
        assert_close!(
            get(
                &m,
                &format!(r#"hubprobe_dns_lookup_success{{endpoint="{ep}",family="a"}}"#)
            ),
            1.0
        );
    }
    // The operator's labels, escaped, on the info metric.
    let info = text
        .lines()
        .find(|l| l.starts_with("hubprobe_info{"))
        .unwrap();
    assert!(
        info.contains(r#"label_site="berlin \"3\" \\ lab""#),
        "{info}"
    );
    assert!(info.contains(r#"label_net_type="lte""#), "{info}");
    assert!(info.contains(r#"device_id="dev1""#), "{info}");
    assert_close!(get(&m, r#"hubprobe_findings{severity="critical"}"#), 0.0);
}

#[test]
fn check_of_a_refused_port_is_valid_and_says_which_phase_failed() {
    let lab = Lab::start();
    let refused = common::refused_port().port();
    let ports = format!("mqtt-tls={refused},mqtt-ws={refused}");
    let (code, text, json) = lab.check(&ports);
    assert_eq!(code, 2, "{text}");
    promtool_check(&text);
    let m = samples(&text);
    assert_close!(get(&m, "hubprobe_success"), 0.0);
    assert_close!(get(&m, "hubprobe_verdict_code"), 2.0);
    assert_phase_durations_match(&m, &json);
    for ep in ["mqtt-tls", "mqtt-ws"] {
        assert_close!(
            get(
                &m,
                &format!(r#"hubprobe_endpoint_success{{endpoint="{ep}"}}"#)
            ),
            0.0
        );
        assert_close!(
            get(
                &m,
                &format!(
                    r#"hubprobe_phase_failure_info{{endpoint="{ep}",phase="tcp",class="tcp.refused"}}"#
                )
            ),
            1.0
        );
        assert_close!(
            get(
                &m,
                &format!(r#"hubprobe_phase_success{{endpoint="{ep}",phase="tcp"}}"#)
            ),
            0.0
        );
    }
    assert!(!text.contains("hubprobe_tls_"), "TLS never ran: {text}");
    assert!(get(&m, r#"hubprobe_findings{severity="critical"}"#) >= 1.0);
}

#[test]
fn check_with_a_foreign_ca_reports_the_leaf_but_no_trust_anchor() {
    let lab = Lab::start();
    let (code, text, json) = lab.check(&lab.ports("tls_otherca"));
    assert_eq!(code, 1, "mqtt-ws still works: WARNING\n{text}");
    promtool_check(&text);
    let m = samples(&text);
    assert_phase_durations_match(&m, &json);
    assert_close!(
        get(
            &m,
            r#"hubprobe_phase_failure_info{endpoint="mqtt-tls",phase="tls",class="tls.unknown_ca"}"#
        ),
        1.0
    );
    assert_close!(
        get(
            &m,
            r#"hubprobe_tls_leaf_not_after_timestamp_seconds{endpoint="mqtt-tls"}"#
        ),
        not_after(&lab.broker.certs().other_ca_server.cert_der),
        "the chain was received even though it was not trusted"
    );
    assert!(
        !text.contains(r#"hubprobe_tls_trust_anchor_info{endpoint="mqtt-tls""#),
        "{text}"
    );
    assert!(text.contains(r#"hubprobe_tls_trust_anchor_info{endpoint="mqtt-ws""#));
    assert_close!(get(&m, "hubprobe_success"), 1.0, "WARNING still connects");
    assert_close!(get(&m, "hubprobe_verdict_code"), 1.0);
}

/// `hubprobe tune` in hub mode against the loopback broker, `-o prometheus` with the
/// JSON report of the same run.
fn tune_run(broker: &Mosquitto, dir: &Path) -> (String, Value) {
    let report_file = dir.join("tune.json");
    let port = format!("mqtt={}", broker.port("plain"));
    let report = report_file.display().to_string();
    let out = run_with_env(
        &[
            "tune",
            "127.0.0.1",
            "--profile",
            "mqtt-broker",
            "--endpoint",
            "mqtt",
            "--port",
            &port,
            "--samples",
            "10",
            "--sample-interval",
            "20ms",
            "--min-idle",
            "1s",
            "--max-idle",
            "2s",
            "-o",
            "prometheus",
            "--report-file",
            &report,
        ],
        &[],
        Duration::from_secs(120),
    );
    assert_eq!(out.code, 0, "{}", out.all_output());
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(&report_file).unwrap()).unwrap();
    support::assert_valid(&json);
    (out.stdout, json)
}

fn canary() -> CanaryReport {
    let mut totals: BTreeMap<String, u64> = BTreeMap::new();
    totals.insert("no_pingresp".into(), 3);
    totals.insert("tcp_reset".into(), 1);
    CanaryReport {
        endpoint: "mqtt".into(),
        keepalive_s: 60,
        connected: false,
        connected_since: None,
        sessions_total: 5,
        disconnects_total: totals,
        recent: vec![],
        diagnosis: Diagnosis {
            kind: DiagnosisKind::IdleTimeout,
            iothub_cause: Some(2),
            summary: "drops after ~240 s idle".into(),
            evidence: vec![],
        },
        connect_failures: 3,
        connect_error: Some("tcp.timeout: connect to 192.0.2.1:8883: no answer to SYN".into()),
    }
}

#[test]
fn tune_keepalive_and_a_canary_section_are_valid_and_match_the_report() {
    let broker = Mosquitto::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let (text, json) = tune_run(&broker, dir.path());
    promtool_check(&text);
    let m = samples(&text);
    let k = &json["keepalive"];
    let e = r#"{endpoint="mqtt"}"#;
    let rec = &k["recommendation"];
    assert_close!(
        get(&m, &format!("hubprobe_keepalive_recommended_seconds{e}")),
        rec["keepalive_s"].as_f64().unwrap()
    );
    assert_close!(
        get(
            &m,
            &format!("hubprobe_keepalive_pingresp_timeout_seconds{e}")
        ),
        rec["pingresp_timeout_s"].as_f64().unwrap()
    );
    assert_close!(
        get(
            &m,
            r#"hubprobe_link_probes{endpoint="mqtt",result="answered"}"#
        ),
        k["stability"]["answered"].as_f64().unwrap()
    );
    // 10 samples were asked for: answered + lost (a loaded machine may lose one).
    assert_close!(
        get(
            &m,
            r#"hubprobe_link_probes{endpoint="mqtt",result="answered"}"#
        ) + get(&m, r#"hubprobe_link_probes{endpoint="mqtt",result="lost"}"#),
        10.0
    );
    assert_close!(
        get(&m, &format!("hubprobe_path_idle_no_drop_up_to_seconds{e}")),
        k["discovery"]["no_drop_up_to_ms"].as_f64().unwrap() / 1000.0
    );
    assert_close!(
        get(
            &m,
            r#"hubprobe_link_srtt_seconds{endpoint="mqtt",group="warm"}"#
        ),
        k["stability"]["warm"]["rto"]["srtt_ms"].as_f64().unwrap() / 1000.0
    );
    let info = format!(
        r#"hubprobe_keepalive_info{{endpoint="mqtt",mode="hub",reflector="",confidence="{}",binding="{}"}}"#,
        rec["confidence"].as_str().unwrap(),
        rec["binding"].as_str().unwrap()
    );
    assert_close!(get(&m, &info), 1.0);

    // The agent's view: the same report with a canary section, rendered by the library.
    let mut report: Report = serde_json::from_value(json.clone()).unwrap();
    report.canary = Some(canary());
    let text = render(&report, None);
    promtool_check(&text);
    let m = samples(&text);
    assert_close!(get(&m, &format!("hubprobe_canary_up{e}")), 0.0);
    assert_close!(get(&m, &format!("hubprobe_canary_sessions_total{e}")), 5.0);
    assert_close!(
        get(&m, &format!("hubprobe_canary_connect_failures{e}")),
        3.0
    );
    assert_close!(
        get(
            &m,
            r#"hubprobe_canary_connect_error_info{endpoint="mqtt",class="tcp.timeout"}"#
        ),
        1.0
    );
    assert_close!(
        get(
            &m,
            r#"hubprobe_canary_disconnects_total{endpoint="mqtt",cause="no_pingresp"}"#
        ),
        3.0
    );
    assert_close!(
        get(
            &m,
            r#"hubprobe_canary_disconnects_total{endpoint="mqtt",cause="token_expired"}"#
        ),
        0.0
    );
    assert!(text.contains("# TYPE hubprobe_canary_disconnects_total counter\n"));

    // A check report carries no keep-alive section: the agent passes its latest tuning.
    let mut check = report.clone();
    check.kind = "check".into();
    let tuned = check.keepalive.take().unwrap();
    assert!(!render(&check, None).contains("hubprobe_keepalive_"));
    let with = render(&check, Some(&tuned));
    promtool_check(&with);
    assert_close!(
        get(
            &samples(&with),
            &format!("hubprobe_keepalive_recommended_seconds{e}")
        ),
        rec["keepalive_s"].as_f64().unwrap()
    );
}

/// A report whose strings hold everything the network could send: quotes,
/// backslashes, newlines, tabs and carriage returns, non-ASCII.
fn hostile_report(base: &Report) -> Report {
    let mut r = base.clone();
    let evil = "a\"b\\c\nd\te\rf ü ✓ {x=\"y\"} # HELP";
    r.host = evil.into();
    r.target.host = evil.into();
    r.labels.insert("site".into(), evil.into());
    r.labels.insert("we.ird-key".into(), "v".into());
    if let Some(e) = r.endpoints.first_mut() {
        e.name = format!("ep {evil}");
    }
    if let Some(c) = &mut r.canary {
        c.endpoint = evil.into();
    }
    r
}

#[test]
fn hostile_strings_stay_inside_their_label_values() {
    let broker = Mosquitto::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let (_, json) = tune_run(&broker, dir.path());
    let mut base: Report = serde_json::from_value(json).unwrap();
    base.canary = Some(canary());
    let text = render(&hostile_report(&base), None);
    promtool_check(&text);
    for line in text.lines() {
        assert!(
            line.starts_with("# HELP hubprobe_")
                || line.starts_with("# TYPE hubprobe_")
                || line.starts_with("hubprobe_"),
            "{line:?}"
        );
    }
    assert!(text.contains(r#"label_site="a\"b\\c\nd"#), "{text}");
    assert!(text.contains(r#"label_we_ird_key="v""#), "{text}");
    assert!(text.contains(r#"hubprobe_endpoint_success{endpoint="ep a\"b\\c\nd"#));
}

/// node_exporter with only the textfile collector, on a free loopback port; killed
/// on drop.
struct NodeExporter {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl NodeExporter {
    fn start() -> NodeExporter {
        let program = common::find_program("prometheus-node-exporter")
            .expect("prometheus-node-exporter (Debian package) is not installed");
        let dir = tempfile::tempdir().unwrap();
        let port = common::free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let log = std::fs::File::create(dir.path().join("node-exporter.log")).unwrap();
        let textfiles = dir.path().join("textfile");
        std::fs::create_dir(&textfiles).unwrap();
        let child = Command::new(program)
            .arg("--collector.disable-defaults")
            .arg("--collector.textfile")
            .arg(format!(
                "--collector.textfile.directory={}",
                textfiles.display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn prometheus-node-exporter");
        let mut ne = NodeExporter { child, addr, dir };
        if !common::wait_for_tcp(addr, Duration::from_secs(15)) {
            let _ = ne.child.kill();
            panic!("node_exporter did not listen on {addr}:\n{}", ne.log());
        }
        ne
    }

    fn textfile_dir(&self) -> PathBuf {
        self.dir.path().join("textfile")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("node-exporter.log")).unwrap_or_default()
    }

    /// GET /metrics with a tiny HTTP/1.0 client (bounded by socket timeouts).
    fn scrape(&self) -> String {
        let mut s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\nAccept: text/plain\r\n\r\n")
            .unwrap();
        let mut buf = Vec::new();
        s.take(64 << 20).read_to_end(&mut buf).unwrap();
        let text = String::from_utf8(buf).expect("UTF-8 response");
        let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP response");
        assert!(
            head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
            "{head}"
        );
        body.to_string()
    }
}

impl Drop for NodeExporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn node_exporter_scrapes_the_textfile_without_error() {
    let lab = Lab::start();
    let (code, _, json) = lab.check(&lab.ports("tls"));
    assert_eq!(code, 0);
    let mut report: Report = serde_json::from_value(json).unwrap();
    report.canary = Some(canary());
    let text = render(&hostile_report(&report), None);

    let ne = NodeExporter::start();
    let path = ne.textfile_dir().join("hubprobe.prom");
    write_textfile(&path, &text).unwrap();
    let body = ne.scrape();
    assert!(
        body.lines().any(|l| l == "node_textfile_scrape_error 0"),
        "{body}\n{}",
        ne.log()
    );
    for family in [
        "hubprobe_info",
        "hubprobe_success",
        "hubprobe_phase_duration_seconds",
        "hubprobe_tls_leaf_not_after_timestamp_seconds",
        "hubprobe_tls_trust_anchor_info",
        "hubprobe_dns_answer_records",
        "hubprobe_canary_disconnects_total",
    ] {
        assert!(
            body.contains(&format!("# TYPE {family} ")),
            "{family} missing:\n{body}"
        );
    }
    assert!(body.contains("# TYPE hubprobe_canary_disconnects_total counter"));
    // node_exporter parsed the escaped value and wrote it back the same way.
    assert!(body.contains(r#"label_site="a\"b\\c\nd"#), "{body}");
    assert!(body.contains(r#"node_textfile_mtime_seconds{file=""#));
    let scraped = samples(
        &body
            .lines()
            .filter(|l| l.starts_with("hubprobe_success") || l.starts_with("hubprobe_verdict"))
            .collect::<Vec<_>>()
            .join("\n"),
    );
    assert_close!(get(&scraped, "hubprobe_success"), 1.0);

    // The file is replaced whole: the next scrape sees the new report.
    report.verdict = hubprobe::model::Verdict::Critical;
    write_textfile(&path, &render(&report, None)).unwrap();
    let body = ne.scrape();
    assert!(body.lines().any(|l| l == "node_textfile_scrape_error 0"));
    assert!(
        body.lines().any(|l| l == "hubprobe_verdict_code 2"),
        "{body}"
    );
    assert!(body.lines().any(|l| l == "hubprobe_success 0"), "{body}");
    let files: Vec<_> = std::fs::read_dir(ne.textfile_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(files, ["hubprobe.prom"], "no temporary file left");
}

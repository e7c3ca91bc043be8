//! Benchmark: time to render one report as Prometheus text, and to write it with
//! `write_textfile` (temporary file, fsync, rename). The report is a real one: a full
//! `hubprobe check` of the lab hub (four endpoints) plus the keep-alive section of a
//! real `hubprobe tune` on loopback and a canary section.
//!
//!     cargo bench --bench prometheus       # figures for the README
//!
//! Under `cargo test --all-targets` it runs a few iterations, as a smoke test.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Dns, Mosquitto, TlsThen, HUB_HOST};
use hubprobe::model::Report;
use hubprobe::model::{CanaryReport, Diagnosis, DiagnosisKind};
use hubprobe::report::prometheus::{render, write_textfile};

const DEVICE_KEY: &str = "dGhpcy1pcy1hLWxhYi1kZXZpY2Uta2V5LTEyMzQ1Njc=";
const EXPIRY: u64 = 4_102_444_800;

/// Runs hubprobe (bounded) and parses its JSON report from stdout.
fn report(args: &[&str], env: &[(&str, &str)]) -> Report {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hubprobe"));
    cmd.args(args)
        .env("NO_COLOR", "1")
        .env("HUBPROBE_NTP_SERVER", "none")
        .env_remove("RUST_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn hubprobe");
    let mut out = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut out, &mut s);
        s
    });
    let start = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if start.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("hubprobe {args:?} did not finish");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    serde_json::from_str(&reader.join().unwrap()).expect("a JSON report")
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let (renders, writes) = if benching { (20_000, 200) } else { (10, 3) };

    let resource = format!("{HUB_HOST}/devices/dev1");
    let token = hubprobe::auth::generate_sas_token(
        &resource,
        &hubprobe::auth::Secret::new(DEVICE_KEY),
        EXPIRY,
    )
    .unwrap()
    .token
    .expose()
    .to_string();
    let broker = Mosquitto::start(&[(common::hub_username("dev1"), token)]);
    let certs = broker.certs().clone();
    let dns = Dns::start();
    let amqp = common::tls_then(&certs, TlsThen::Garbage(b"AMQP\x03\x01\x00\x00".to_vec()));
    let date = httpdate::fmt_http_date(std::time::SystemTime::now());
    let https = common::tls_then(
        &certs,
        TlsThen::Garbage(
            format!("HTTP/1.1 404 Not Found\r\nDate: {date}\r\nContent-Length: 0\r\n\r\n")
                .into_bytes(),
        ),
    );
    let profile = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/lab-hub.toml");
    let dns_addr = dns.addr().to_string();
    let ca = certs.ca_pem().display().to_string();
    let ports = format!(
        "mqtt-tls={},mqtt-ws={},amqps={},https={}",
        broker.port("tls"),
        broker.port("wss"),
        amqp.port(),
        https.port()
    );
    let expiry = EXPIRY.to_string();
    let cs = format!("HostName={HUB_HOST};DeviceId=dev1;SharedAccessKey={DEVICE_KEY}");
    let mut check = report(
        &[
            "check",
            HUB_HOST,
            "--profile",
            profile,
            "--dns-server",
            &dns_addr,
            "--trust",
            "none",
            "--ca-file",
            &ca,
            "--port",
            &ports,
            "--sas-expiry",
            &expiry,
            "--label",
            "site=bench",
            "-o",
            "json",
        ],
        &[("IOTHUB_DEVICE_CONNECTION_STRING", &cs)],
    );
    assert_eq!(check.endpoints.len(), 4);
    let plain = format!("mqtt={}", broker.port("plain"));
    let tune = report(
        &[
            "tune",
            "127.0.0.1",
            "--profile",
            "mqtt-broker",
            "--endpoint",
            "mqtt",
            "--port",
            &plain,
            "--samples",
            "10",
            "--sample-interval",
            "20ms",
            "--no-discovery",
            "-o",
            "json",
        ],
        &[],
    );
    let keepalive = tune.keepalive.expect("a keep-alive section");
    let mut totals = BTreeMap::new();
    totals.insert("no_pingresp".to_string(), 3);
    check.canary = Some(CanaryReport {
        endpoint: "mqtt-tls".into(),
        keepalive_s: 240,
        connected: true,
        connected_since: Some(check.started_at.clone()),
        sessions_total: 4,
        disconnects_total: totals,
        recent: vec![],
        diagnosis: Diagnosis {
            kind: DiagnosisKind::Stable,
            iothub_cause: None,
            summary: "stable".into(),
            evidence: vec![],
        },
        connect_failures: 0,
        connect_error: None,
    });

    let text = render(&check, Some(&keepalive));
    let series = text.lines().filter(|l| !l.starts_with('#')).count();
    let mut times = Vec::with_capacity(renders);
    for _ in 0..renders {
        let t = Instant::now();
        let out = render(&check, Some(&keepalive));
        times.push(t.elapsed());
        assert_eq!(out.len(), text.len());
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hubprobe.prom");
    let mut write_times = Vec::with_capacity(writes);
    for _ in 0..writes {
        let t = Instant::now();
        write_textfile(&path, &text).unwrap();
        write_times.push(t.elapsed());
    }
    println!(
        "prometheus: report with 4 endpoints + keep-alive + canary → {} bytes, {} series",
        text.len(),
        series
    );
    println!(
        "render: median {:.1} µs over {renders} renders",
        median(times).as_secs_f64() * 1e6
    );
    println!(
        "write_textfile (fsync + rename in {}): median {:.3} ms over {writes} writes",
        dir.path().display(),
        median(write_times).as_secs_f64() * 1e3
    );
}

//! Benchmark: wall time and peak RSS of one full `hubprobe check` (all four endpoints
//! of the lab hub: MQTT/TLS and MQTT/WebSocket on mosquitto, AMQP and HTTPS peers)
//! against the local lab, over many runs of the release binary; then one MQTT/TLS
//! endpoint (CONNECT, 3 pings, DISCONNECT) beside `mosquitto_pub` (CONNECT, PUBLISH,
//! DISCONNECT) on the same mosquitto TLS listener with the same identity, the two
//! alternated run by run.
//!
//!     cargo bench --bench check            # 30 runs each, figures for the README
//!
//! Under `cargo test --all-targets` it runs once, as a smoke test of the benchmark.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{Dns, Mosquitto, TlsThen, HUB_HOST};

const DEVICE_KEY: &str = "dGhpcy1pcy1hLWxhYi1kZXZpY2Uta2V5LTEyMzQ1Njc=";
const EXPIRY: u64 = 4_102_444_800;

struct Sample {
    wall: Duration,
    max_rss_kib: i64,
    code: i32,
}

/// Runs hubprobe and reaps it with wait4 (not `Child::wait`) to read its peak RSS.
fn measure(args: &[String], env: &[(&str, &str)]) -> (Sample, String) {
    measure_program(env!("CARGO_BIN_EXE_hubprobe"), args, env)
}

/// Runs `program` and reaps it with wait4 to read its peak RSS.
#[allow(clippy::zombie_processes)]
fn measure_program(program: &str, args: &[String], env: &[(&str, &str)]) -> (Sample, String) {
    let mut cmd = std::process::Command::new(program);
    cmd.args(args)
        .env("NO_COLOR", "1")
        .env("HUBPROBE_NTP_SERVER", "none")
        .env_remove("RUST_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let start = Instant::now();
    let child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn hubprobe");
    let pid = child.id() as libc::pid_t;
    let mut stdout = child.stdout.expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut s);
        s
    });
    let mut status = 0;
    // SAFETY: zeroed rusage is a valid out-parameter for wait4.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: pid is our child, status and usage are valid pointers.
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(rc, pid, "wait4");
    let wall = start.elapsed();
    let out = reader.join().unwrap();
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    (
        Sample {
            wall,
            max_rss_kib: usage.ru_maxrss,
            code,
        },
        out,
    )
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let runs = if benching { 30 } else { 1 };

    let token = lab_token();
    let broker = Mosquitto::start(&[(common::hub_username("dev1"), token)]);
    let certs = broker.certs().clone();
    let dns = Dns::start();
    let amqp = common::amqp::CbsPeer::start(common::amqp::CbsMode::Accept, Some(&certs));
    let date = httpdate::fmt_http_date(std::time::SystemTime::now());
    let https = common::tls_then(
        &certs,
        TlsThen::Garbage(
            format!("HTTP/1.1 404 Not Found\r\nDate: {date}\r\nContent-Length: 0\r\n\r\n")
                .into_bytes(),
        ),
    );
    let profile = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/lab-hub.toml");
    let args: Vec<String> = [
        "check",
        HUB_HOST,
        "--profile",
        profile,
        "--dns-server",
        &dns.addr().to_string(),
        "--trust",
        "none",
        "--ca-file",
        &certs.ca_pem().display().to_string(),
        "--port",
        &format!(
            "mqtt-tls={},mqtt-ws={},amqps={},https={}",
            broker.port("tls"),
            broker.port("wss"),
            amqp.addr.port(),
            https.port()
        ),
        "--sas-expiry",
        &EXPIRY.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let cs = format!("HostName={HUB_HOST};DeviceId=dev1;SharedAccessKey={DEVICE_KEY}");
    let env = [("IOTHUB_DEVICE_CONNECTION_STRING", cs.as_str())];

    let (first, text) = measure(&args, &env);
    assert_eq!(first.code, 0, "the lab check must pass:\n{text}");
    if benching {
        println!("sample text output:\n{text}");
    }

    let mut json_args = args.clone();
    json_args.extend(["-o".to_string(), "json".to_string()]);
    let mut samples = Vec::new();
    let mut slowest: Option<(Duration, String)> = None;
    for _ in 0..runs {
        let (s, out) = measure(&json_args, &env);
        assert_eq!(s.code, 0, "{out}");
        if slowest.as_ref().is_none_or(|(w, _)| s.wall > *w) {
            slowest = Some((s.wall, out));
        }
        samples.push(s);
    }
    if let Some((wall, out)) = slowest.filter(|_| benching) {
        let report: serde_json::Value = serde_json::from_str(&out).expect("JSON report");
        let mut phases: Vec<(f64, String)> = Vec::new();
        for e in report["endpoints"].as_array().unwrap() {
            for p in e["phases"].as_array().unwrap() {
                let ms = p["duration_ms"].as_f64().unwrap_or(0.0);
                phases.push((
                    ms,
                    format!(
                        "{}/{}",
                        e["name"].as_str().unwrap(),
                        p["phase"].as_str().unwrap()
                    ),
                ));
            }
        }
        phases.sort_by(|a, b| b.0.total_cmp(&a.0));
        let top: Vec<String> = phases
            .iter()
            .take(3)
            .map(|(ms, n)| format!("{n} {ms:.1} ms"))
            .collect();
        println!(
            "slowest run {:.1} ms; its slowest phases: {}",
            wall.as_secs_f64() * 1000.0,
            top.join(", ")
        );
    }
    let mut walls: Vec<Duration> = samples.iter().map(|s| s.wall).collect();
    walls.sort();
    let rss_max = samples.iter().map(|s| s.max_rss_kib).max().unwrap_or(0);
    let rss_min = samples.iter().map(|s| s.max_rss_kib).min().unwrap_or(0);
    println!(
        "check, 4 endpoints, {} runs: wall p50 {:.1} ms, p90 {:.1} ms, max {:.1} ms; peak RSS {:.1}-{:.1} MiB",
        runs,
        percentile(&walls, 0.5).as_secs_f64() * 1000.0,
        percentile(&walls, 0.9).as_secs_f64() * 1000.0,
        walls.last().unwrap().as_secs_f64() * 1000.0,
        rss_min as f64 / 1024.0,
        rss_max as f64 / 1024.0,
    );

    beside_mosquitto_pub(&broker, runs, &env);
}

/// The SAS token of the lab's device `dev1`, pinned to [`EXPIRY`] (the broker's password).
fn lab_token() -> String {
    let resource = format!("{HUB_HOST}/devices/dev1");
    hubprobe::auth::generate_sas_token(&resource, &hubprobe::auth::Secret::new(DEVICE_KEY), EXPIRY)
        .unwrap()
        .token
        .expose()
        .to_string()
}

fn p50_ms(samples: &[Sample]) -> f64 {
    let mut walls: Vec<Duration> = samples.iter().map(|s| s.wall).collect();
    walls.sort();
    percentile(&walls, 0.5).as_secs_f64() * 1000.0
}

fn p50_rss_mib(samples: &[Sample]) -> f64 {
    let mut rss: Vec<i64> = samples.iter().map(|s| s.max_rss_kib).collect();
    rss.sort();
    rss[(rss.len() - 1) / 2] as f64 / 1024.0
}

/// One MQTT/TLS endpoint by hubprobe beside mosquitto_pub, alternated.
fn beside_mosquitto_pub(broker: &Mosquitto, runs: usize, env: &[(&str, &str)]) {
    let mosquitto_pub = common::find_program("mosquitto_pub")
        .unwrap_or_else(|| panic!("mosquitto_pub not found: apt-get install mosquitto-clients"));
    let port = broker.port("tls").to_string();
    let ca = broker.certs().ca_pem().display().to_string();
    let profile = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/lab-hub.toml");
    let hubprobe: Vec<String> = [
        "check",
        "127.0.0.1",
        "--profile",
        profile,
        "--endpoint",
        "mqtt-tls",
        "--port",
        &format!("mqtt-tls={port}"),
        "--trust",
        "none",
        "--ca-file",
        &ca,
        "--sas-expiry",
        &EXPIRY.to_string(),
        "--pings",
        "3",
        "-o",
        "json",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let token = lab_token();
    let pub_args: Vec<String> = [
        "-h",
        "127.0.0.1",
        "-p",
        &port,
        "--cafile",
        &ca,
        "-i",
        "dev1",
        "-u",
        &common::hub_username("dev1"),
        "-P",
        &token,
        "-t",
        "devices/dev1/messages/events/",
        "-m",
        "x",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let (s, out) = measure(&hubprobe, env);
        assert_eq!(s.code, 0, "hubprobe against the TLS listener:\n{out}");
        a.push(s);
        let (s, out) = measure_program(&mosquitto_pub.display().to_string(), &pub_args, &[]);
        assert_eq!(s.code, 0, "mosquitto_pub against the TLS listener:\n{out}");
        b.push(s);
    }
    let (wa, wb, ra, rb) = (p50_ms(&a), p50_ms(&b), p50_rss_mib(&a), p50_rss_mib(&b));
    println!(
        "one MQTT/TLS endpoint, {runs} runs each, alternated: hubprobe check (3 pings) wall p50 {wa:.1} ms, peak RSS p50 {ra:.1} MiB; \
         mosquitto_pub wall p50 {wb:.1} ms, peak RSS p50 {rb:.1} MiB; ratio wall {:.2}x, RSS {:.2}x",
        wa / wb,
        ra / rb
    );
}

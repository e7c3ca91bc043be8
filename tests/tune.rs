//! `hubprobe tune` and `hubprobe reflect` end to end on loopback: a real reflector
//! process and the real mosquitto broker. (Idle drops need a NAT: see tune_nat.rs.)

mod common;
mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::Mosquitto;
use support::{finding, run};

/// `hubprobe reflect` as a child process on a free loopback port, killed on drop.
struct Reflector {
    child: Child,
    port: u16,
}

impl Reflector {
    fn start(extra: &[&str]) -> Reflector {
        let port = common::free_port();
        let child = Command::new(support::bin())
            .args(["reflect", "--listen", &format!("127.0.0.1:{port}")])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn hubprobe reflect");
        let addr = format!("127.0.0.1:{port}").parse().unwrap();
        assert!(
            common::wait_for_tcp(addr, Duration::from_secs(10)),
            "reflector did not come up"
        );
        Reflector { child, port }
    }
}

impl Drop for Reflector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn reflector_mode_on_loopback_reports_no_drop_and_a_recommendation() {
    let broker = Mosquitto::start(&[]);
    let reflector = Reflector::start(&[]);
    let port = format!("mqtt={}", broker.port("plain"));
    let refl = format!("127.0.0.1:{}", reflector.port);
    let start = Instant::now();
    let out = run(&[
        "tune",
        "127.0.0.1",
        "--profile",
        "mqtt-broker",
        "--endpoint",
        "mqtt",
        "--port",
        &port,
        "--reflector",
        &refl,
        "--samples",
        "20",
        "--sample-interval",
        "20ms",
        "--min-idle",
        "1s",
        "--max-idle",
        "3s",
        "-o",
        "json",
    ]);
    let report = out.report();
    assert_eq!(out.code, 0, "{}", out.all_output());
    assert!(start.elapsed() < Duration::from_secs(30));
    assert_eq!(report["kind"], "tune");
    let k = &report["keepalive"];
    assert_eq!(k["mode"], "reflector");
    assert_eq!(k["stability"]["samples"], 20);
    assert_eq!(k["stability"]["answered"], 20, "loopback loses nothing");
    assert!(k["stability"]["warm"]["rto"]["srtt_ms"].as_f64().unwrap() < 50.0);
    assert_eq!(k["discovery"]["no_drop_up_to_ms"], 3000);
    assert!(
        k["discovery"]["results"].as_array().unwrap().len() > 10,
        "the ladder ran in parallel"
    );
    let rec = &k["recommendation"];
    assert!(
        rec["keepalive_s"].as_u64().unwrap() <= 3,
        "never above what was verified: {rec:#}"
    );
    assert_eq!(rec["binding"], "k_nat");
}

#[test]
fn hub_mode_samples_with_mqtt_pings_and_searches_one_session_at_a_time() {
    let broker = Mosquitto::start(&[]);
    let port = format!("mqtt={}", broker.port("plain"));
    let out = run(&[
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
        "json",
    ]);
    let report = out.report();
    assert_eq!(out.code, 0, "{}", out.all_output());
    let k = &report["keepalive"];
    assert_eq!(k["mode"], "hub");
    assert_eq!(k["stability"]["answered"], 10);
    let results = k["discovery"]["results"].as_array().unwrap();
    assert!(!results.is_empty());
    assert!(
        results.iter().all(|r| r["outcome"]["kind"] == "survived"),
        "{results:?}"
    );
    // Sessions were sequential: the broker saw at least one connection per probe.
    let log = broker.log();
    assert!(
        log.matches("New client connected").count() >= results.len(),
        "{log}"
    );
}

#[test]
fn stability_only_without_discovery_keeps_the_profile_cap() {
    let broker = Mosquitto::start(&[]);
    let reflector = Reflector::start(&[]);
    let refl = format!("127.0.0.1:{}", reflector.port);
    let out = run(&[
        "tune",
        "127.0.0.1",
        "--profile",
        "aws-iot-core",
        "--endpoint",
        "mqtt-tls",
        "--port",
        &format!("mqtt-tls={}", broker.port("tls_anon")),
        "--trust",
        "none",
        "--ca-file",
        broker.certs().ca_pem().to_str().unwrap(),
        "--reflector",
        &refl,
        "--samples",
        "25",
        "--sample-interval",
        "10ms",
        "--no-discovery",
        "-o",
        "json",
    ]);
    let report = out.report();
    assert!(out.code <= 1, "{}", out.all_output());
    let rec = &report["keepalive"]["recommendation"];
    assert!(report["keepalive"].get("discovery").is_none());
    assert_eq!(
        rec["keepalive_s"], 1200,
        "AWS IoT Core's cap binds: {rec:#}"
    );
    assert_eq!(rec["binding"], "k_cap");
}

#[test]
fn hub_mode_with_an_unreachable_hub_is_critical() {
    let refused = common::refused_port();
    let port = format!("mqtt={}", refused.port());
    let out = run(&[
        "tune",
        "127.0.0.1",
        "--profile",
        "mqtt-broker",
        "--endpoint",
        "mqtt",
        "--port",
        &port,
        "--timeout",
        "2s",
        "-o",
        "json",
    ]);
    let report = out.report();
    assert_eq!(out.code, 2, "{}", out.all_output());
    assert!(finding(&report, "tune_not_possible").is_some());
    assert!(finding(&report, "tcp.refused").is_some());
}

#[test]
fn reflect_and_tune_refuse_bad_input() {
    let out = run(&[
        "reflect",
        "--listen",
        "127.0.0.1:0",
        "--cert",
        "/nonexistent/c.pem",
        "--key",
        "/nonexistent/k.pem",
    ]);
    assert_eq!(out.code, 3, "{}", out.all_output());
    assert!(out.stderr.contains("/nonexistent/c.pem"), "{}", out.stderr);
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let out = run(&["reflect", "--listen", &addr]);
    assert_eq!(out.code, 3, "{}", out.all_output());
    assert!(out.stderr.contains("cannot listen"), "{}", out.stderr);
    let out = run(&["tune", "127.0.0.1", "--reflector", "nohostport"]);
    assert_eq!(out.code, 3);
    assert!(out.stderr.contains("HOST:PORT"), "{}", out.stderr);
    let out = run(&["tune", "127.0.0.1", "--min-idle", "10s", "--max-idle", "5s"]);
    assert_eq!(out.code, 3);
    let out = run(&[
        "tune",
        "127.0.0.1",
        "--profile",
        "azure-iot-hub",
        "--endpoint",
        "https",
    ]);
    assert_eq!(out.code, 3);
    assert!(out.stderr.contains("no MQTT endpoint"), "{}", out.stderr);
}

#[test]
fn reflector_over_tls_is_verified_against_the_given_ca() {
    let broker = Mosquitto::start(&[]);
    let certs = broker.certs();
    let cert = certs.server.cert_pem.to_str().unwrap().to_string();
    let key = certs.server.key_pem.to_str().unwrap().to_string();
    let reflector = Reflector::start(&["--cert", &cert, "--key", &key]);
    let port = format!("mqtt={}", broker.port("plain"));
    let refl = format!("localhost:{}", reflector.port);
    let ca = certs.ca_pem().to_str().unwrap().to_string();
    let args = |trust_ca: bool| {
        let mut a = vec![
            "tune",
            "127.0.0.1",
            "--profile",
            "mqtt-broker",
            "--endpoint",
            "mqtt",
            "--port",
            &port,
            "--reflector",
            &refl,
            "--reflector-tls",
            "--samples",
            "5",
            "--sample-interval",
            "10ms",
            "--min-idle",
            "1s",
            "--max-idle",
            "2s",
            "--timeout",
            "2s",
            "-o",
            "json",
            "--trust",
            "none",
        ];
        if trust_ca {
            a.extend(["--ca-file", ca.as_str()]);
        }
        a.into_iter().map(str::to_string).collect::<Vec<_>>()
    };
    let ok = run(&args(true).iter().map(String::as_str).collect::<Vec<_>>());
    let report = ok.report();
    assert_eq!(ok.code, 0, "{}", ok.all_output());
    assert_eq!(report["keepalive"]["stability"]["answered"], 5);
    assert_eq!(report["keepalive"]["discovery"]["no_drop_up_to_ms"], 2000);

    // Without the reflector's CA nothing can be measured through it: every sample is
    // lost and every idle probe is an error, never a fake survival.
    let bad = run(&args(false).iter().map(String::as_str).collect::<Vec<_>>());
    let report = bad.report();
    assert_eq!(
        report["keepalive"]["stability"]["answered"],
        0,
        "{}",
        bad.all_output()
    );
    let results = report["keepalive"]["discovery"]["results"]
        .as_array()
        .unwrap();
    assert!(
        results.iter().all(|r| r["outcome"]["kind"] == "error"),
        "{results:?}"
    );
    assert!(finding(&report, "no_rtt_samples").is_some());
    assert_eq!(bad.code, 2);
}

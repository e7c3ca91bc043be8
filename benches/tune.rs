//! Benchmark: idle-timeout discovery wall time as a multiple of the true idle
//! timeout T, in reflector mode and hub-only mode, at two values of T, through the
//! namespace NAT of the tests (client ⇄ router with a conntrack timeout T ⇄ server).
//!
//!     cargo bench --bench tune        # T = 10 s and 30 s, both modes (~6 min)
//!
//! Under `cargo test --all-targets` it runs once with T = 3 s in reflector mode, as a
//! smoke test of the benchmark itself.

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{InNs, Nat};

fn start_peers(nat: &Nat) -> (InNs, InNs) {
    (
        nat.start_mosquitto(1883),
        nat.start_reflector(env!("CARGO_BIN_EXE_hubprobe"), 7883),
    )
}

fn measure(t_s: u64, reflector_mode: bool) -> String {
    let nat = Nat::new(Duration::from_secs(t_s));
    let _peers = start_peers(&nat);
    let host = nat.server_addr().to_string();
    let refl = format!("{host}:7883");
    let max_idle = format!("{}s", t_s * 3);
    let mut cmd = nat.client_ns().command(env!("CARGO_BIN_EXE_hubprobe"));
    cmd.args([
        "tune",
        &host,
        "--profile",
        "mqtt-broker",
        "--endpoint",
        "mqtt",
        "--timeout",
        "2s",
        "--samples",
        "10",
        "--sample-interval",
        "50ms",
        "--min-idle",
        "2s",
        "--max-idle",
        &max_idle,
        "-o",
        "json",
    ]);
    if reflector_mode {
        cmd.args(["--reflector", &refl]);
    }
    let start = Instant::now();
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .expect("run hubprobe tune");
    let wall = start.elapsed();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    let k = &report["keepalive"];
    let d_ms = k["discovery_ms"].as_f64().unwrap();
    let est = k["discovery"]["estimate_ms"].as_f64().unwrap_or(f64::NAN) / 1000.0;
    let t = t_s as f64;
    format!(
        "{:<9} T = {t_s:>3} s: discovery {:>6.1} s = {:.2} × T (whole run {:.1} s); estimate {est:.2} s ({:+.1} %), keep-alive {} s",
        if reflector_mode { "reflector" } else { "hub-only" },
        d_ms / 1000.0,
        d_ms / 1000.0 / t,
        wall.as_secs_f64(),
        (est - t) / t * 100.0,
        k["recommendation"]["keepalive_s"]
    )
}

fn sample_text(t_s: u64) -> String {
    let nat = Nat::new(Duration::from_secs(t_s));
    let _peers = start_peers(&nat);
    let host = nat.server_addr().to_string();
    let refl = format!("{host}:7883");
    let out = nat
        .client_ns()
        .command(env!("CARGO_BIN_EXE_hubprobe"))
        .args([
            "tune",
            &host,
            "--profile",
            "mqtt-broker",
            "--endpoint",
            "mqtt",
            "--timeout",
            "2s",
            "--samples",
            "60",
            "--sample-interval",
            "200ms",
            "--min-idle",
            "2s",
            "--max-idle",
            "30s",
            "--reflector",
            &refl,
        ])
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .expect("run hubprobe tune");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    if std::env::var_os("HUBPROBE_BENCH_SAMPLE").is_some() {
        // The text view of one reflector-mode run at T = 10 s, for the README.
        println!("{}", sample_text(10));
        return;
    }
    if !benching {
        println!("{}", measure(3, true));
        return;
    }
    for t in [10, 30] {
        println!("{}", measure(t, true));
        println!("{}", measure(t, false));
    }
}

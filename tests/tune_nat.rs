//! `hubprobe tune` through a real NAT: client ⇄ router ⇄ server network namespaces,
//! the router masquerading with nftables and forgetting idle TCP flows after a known
//! conntrack timeout T. The reflector (`hubprobe reflect`) and the hub stand-in
//! (mosquitto) run in the server namespace; `hubprobe tune` runs in the client one.

mod common;
mod support;

use std::process::Command;
use std::time::Duration;

use common::{InNs, Nat};
use serde_json::Value;
use support::{run_cmd, Run};

const MQTT_PORT: u16 = 1883;
const REFLECT_PORT: u16 = 7883;

fn reflector(nat: &Nat) -> InNs {
    nat.start_reflector(support::bin(), REFLECT_PORT)
}

fn mosquitto(nat: &Nat) -> InNs {
    nat.start_mosquitto(MQTT_PORT)
}

/// `hubprobe tune` in the client namespace against the server's mosquitto.
fn tune(nat: &Nat, extra: &[&str], limit: Duration) -> Run {
    let host = nat.server_addr().to_string();
    let port = format!("mqtt={MQTT_PORT}");
    let mut cmd: Command = nat.client_ns().command(support::bin());
    cmd.args([
        "tune",
        &host,
        "--profile",
        "mqtt-broker",
        "--endpoint",
        "mqtt",
        "--port",
        &port,
        "--timeout",
        "1s",
        "-o",
        "json",
    ]);
    cmd.args(extra);
    run_cmd(&mut cmd, &[], limit)
}

fn discovery_bracket(k: &Value) -> (f64, f64, f64) {
    let d = &k["discovery"];
    let ok = d["longest_survived_ms"].as_f64().unwrap_or(0.0) / 1000.0;
    let fail = d["shortest_failed_ms"].as_f64().expect("a drop was found") / 1000.0;
    let est = d["estimate_ms"].as_f64().expect("an estimate") / 1000.0;
    (ok, fail, est)
}

#[test]
fn reflector_mode_finds_the_nat_idle_timeout() {
    let t = 8.0;
    let nat = Nat::new(Duration::from_secs(8));
    let _hub = mosquitto(&nat);
    let _refl = reflector(&nat);
    let refl = format!("{}:{REFLECT_PORT}", nat.server_addr());
    let out = tune(
        &nat,
        &[
            "--reflector",
            &refl,
            "--samples",
            "20",
            "--sample-interval",
            "50ms",
            "--min-idle",
            "2s",
            "--max-idle",
            "20s",
        ],
        Duration::from_secs(120),
    );
    let report = out.report();
    assert!(out.code <= 1, "{}", out.all_output());
    let k = &report["keepalive"];
    let (ok, fail, est) = discovery_bracket(k);
    assert!(
        ok < t + 0.5 && fail > t - 0.5,
        "bracket ({ok}, {fail}] must contain T = {t}"
    );
    assert!(
        (est - t).abs() <= 0.1 * t,
        "estimate {est} s within ±10 % of T = {t} s"
    );
    assert_eq!(k["discovery"]["drop_kind"], "silent_drop");
    assert_eq!(k["discovery"]["inconsistent"], false);
    let keepalive = k["recommendation"]["keepalive_s"].as_f64().unwrap();
    assert!(
        keepalive < t && keepalive >= 1.0,
        "keep-alive {keepalive} s below T = {t} s"
    );
    assert_eq!(k["recommendation"]["binding"], "k_nat");
}

#[test]
fn hub_only_mode_finds_the_nat_idle_timeout_through_mosquitto() {
    let t = 6.0;
    let nat = Nat::new(Duration::from_secs(6));
    let _hub = mosquitto(&nat);
    let out = tune(
        &nat,
        &[
            "--samples",
            "10",
            "--sample-interval",
            "50ms",
            "--min-idle",
            "2s",
            "--max-idle",
            "12s",
        ],
        Duration::from_secs(240),
    );
    let report = out.report();
    assert!(out.code <= 1, "{}", out.all_output());
    let k = &report["keepalive"];
    assert_eq!(k["mode"], "hub");
    let (ok, fail, est) = discovery_bracket(k);
    assert!(
        ok < t + 0.5 && fail > t - 0.5,
        "bracket ({ok}, {fail}] must contain T = {t}"
    );
    assert!(
        (est - t).abs() <= 0.1 * t,
        "estimate {est} s within ±10 % of T = {t} s"
    );
    let keepalive = k["recommendation"]["keepalive_s"].as_f64().unwrap();
    assert!(keepalive < t, "keep-alive {keepalive} s below T = {t} s");
}

#[test]
fn loss_and_an_outage_show_in_the_figures_and_shorten_the_keepalive() {
    // A NAT that keeps flows long enough not to matter here; the impairments do.
    let nat = Nat::new(Duration::from_secs(600));
    let _hub = mosquitto(&nat);
    let _refl = reflector(&nat);
    let refl = format!("{}:{REFLECT_PORT}", nat.server_addr());
    let args = [
        "--reflector",
        refl.as_str(),
        "--samples",
        "60",
        "--sample-interval",
        "100ms",
        "--no-discovery",
    ];

    let clean = tune(&nat, &args, Duration::from_secs(120));
    let clean_report = clean.report();
    let clean_k = &clean_report["keepalive"];
    assert_eq!(clean_k["stability"]["lost"], 0, "{}", clean.all_output());
    let clean_keepalive = clean_k["recommendation"]["keepalive_s"].as_u64().unwrap();

    // Random loss: 40 % of forwarded packets. Over TCP a lost packet is retransmitted,
    // so a sample counts as lost only when its answer misses the 1 s sample timeout;
    // at 25 % that is only 2–4 samples in 60 (measured), at 40 % 16–39.
    nat.set_loss(40);
    let lossy = tune(&nat, &args, Duration::from_secs(180));
    nat.set_loss(0);
    let lossy_report = lossy.report();
    let lossy_k = &lossy_report["keepalive"];
    assert!(
        lossy_k["stability"]["lost"].as_u64().unwrap() > 0,
        "{}",
        lossy.all_output()
    );
    assert!(lossy_k["stability"]["loss_rate"].as_f64().unwrap() > 0.0);
    let lossy_keepalive = lossy_k["recommendation"]["keepalive_s"].as_u64().unwrap();
    assert!(
        lossy_keepalive < clean_keepalive,
        "loss must shorten: {lossy_keepalive} vs {clean_keepalive}"
    );
    assert!(lossy_keepalive <= 120);
    assert_eq!(lossy_k["recommendation"]["binding"], "lossy_link");

    // An outage: everything dropped for a known window in the middle of sampling.
    let switch = std::thread::scope(|s| {
        let handle = s.spawn(|| tune(&nat, &args, Duration::from_secs(180)));
        std::thread::sleep(Duration::from_millis(1500));
        nat.outage(true);
        std::thread::sleep(Duration::from_secs(7));
        nat.outage(false);
        handle.join().unwrap()
    });
    let outage_report = switch.report();
    let k = &outage_report["keepalive"];
    let outages = k["stability"]["outages"].as_array().unwrap();
    assert!(
        !outages.is_empty(),
        "the 7 s outage is seen: {:#}",
        k["stability"]
    );
    let longest = outages
        .iter()
        .map(|o| o["length_ms"].as_f64().unwrap())
        .fold(0.0, f64::max);
    assert!(longest >= 5000.0, "outage length {longest} ms");
    assert!(k["recommendation"]["keepalive_s"].as_u64().unwrap() < clean_keepalive);
}

//! Benchmark: the size of an agent report on the wire, full and compact (chains
//! and unchanged evidence by reference), as JSON and gzip, for the Azure profile's
//! endpoints (all five, and the four without amqp-ws) and for two of them
//! (mqtt-tls, mqtt-ws); and what the default configuration's uploads cost a day
//! either way. The reports are the fleet
//! synthesizer's Azure-profile checks (IoT Hub's real two-certificate chain layout,
//! DigiCert Global Root G2), with a canary and a traffic section as the agent adds.
//!
//!     cargo bench --bench wire       # figures for the README
//!
//! Under `cargo test --all-targets` it runs once, as a smoke test.

use std::time::Duration;

use hubprobe::agent::bill::wire_sizes;
use hubprobe::agent::wire::Encoding;
use hubprobe::fleet::synth::{generate, SynthConfig};
use hubprobe::model::{ByteCount, PurposeBytes, Report, TrafficReport, Verdict};
use hubprobe::net::meter::upload_bytes_per_day;

fn sample() -> Report {
    let cfg = SynthConfig {
        devices: 4,
        sites: 1,
        duration: Duration::from_secs(3600),
        ..SynthConfig::default()
    };
    let mut found = None;
    generate(&cfg, |r| {
        if found.is_none()
            && r.kind == "check"
            && r.verdict == Verdict::Ok
            && r.endpoints.len() >= 4
        {
            found = Some(r.clone());
        }
    });
    let mut r = found.expect("an OK four-endpoint check among the synthetic reports");
    // Figures of the size a real five-minute period has (five-digit check
    // bytes, four-digit canary and upload bytes), so the section is not
    // flattered by zeros.
    let count = |sent, received| ByteCount { sent, received };
    r.traffic = Some(TrafficReport {
        period_s: 300.0,
        period: PurposeBytes {
            checks: count(14_317, 25_906),
            canary: count(1_248, 1_196),
            uploads: count(2_541, 1_204),
            tune: ByteCount::default(),
        },
        ..TrafficReport::default()
    });
    r
}

fn line(name: &str, r: &Report) {
    let full = serde_json::to_vec(r).unwrap().len() as u64;
    let (routine, first) = wire_sizes(r, Encoding::Identity);
    let (routine_gz, first_gz) = wire_sizes(r, Encoding::Gzip);
    let every = Duration::from_secs(300);
    println!(
        "{name:<26} full {full:>6} B | wire first {first:>6} B, routine {routine:>5} B | gzip first {first_gz:>5} B, routine {routine_gz:>5} B | uploads/day at 5 min: full {:>7} B, compact {:>7} B, compact+gzip {:>7} B",
        upload_bytes_per_day(full, every),
        upload_bytes_per_day(routine, every) + first.saturating_sub(routine),
        upload_bytes_per_day(routine_gz, every) + first_gz.saturating_sub(routine_gz),
    );
}

fn main() {
    let all = sample();
    // The profile's four endpoints before AMQP over WebSocket joined it, and two.
    let mut four = all.clone();
    four.endpoints.retain(|e| e.name != "amqp-ws");
    let mut two = all.clone();
    two.endpoints
        .retain(|e| e.name == "mqtt-tls" || e.name == "mqtt-ws");
    line(
        &format!("Azure profile, {} endpoints", all.endpoints.len()),
        &all,
    );
    line(
        &format!("Azure, {} without amqp-ws", four.endpoints.len()),
        &four,
    );
    line("mqtt-tls + mqtt-ws", &two);
}

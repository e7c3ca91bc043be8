//! `hubprobe fleet`: the summary and the incident view find exactly the failure
//! patterns injected into synthetic fleets (built from the real report types, and
//! validated against the schema), and the input side streams every kind of input,
//! counting and listing every line it cannot use.

mod support;

use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use hubprobe::fleet::synth::{generate, SynthConfig, Truth};
use hubprobe::fleet::{summarize, FleetOptions, FleetSummary, Source};
use serde_json::Value;

fn synth(cfg: &SynthConfig, dir: &std::path::Path, name: &str) -> (Truth, std::path::PathBuf) {
    let path = dir.join(name);
    let mut out = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    let mut n = 0u64;
    let truth = generate(cfg, |r| {
        let line = serde_json::to_string(r).unwrap();
        // Every tune report and a sample of the checks must satisfy the schema.
        if n % 97 == 0 || r.kind == "tune" && n % 7 == 0 {
            support::assert_valid(&serde_json::from_str::<Value>(&line).unwrap());
        }
        n += 1;
        writeln!(out, "{line}").unwrap();
    });
    out.flush().unwrap();
    (truth, path)
}

fn summary_of(path: &std::path::Path, opts: FleetOptions) -> FleetSummary {
    summarize(&[Source::Path(path.to_path_buf())], opts).unwrap()
}

fn classes(s: &hubprobe::fleet::summary::GroupSummary) -> BTreeSet<String> {
    s.failure_classes.iter().map(|c| c.class.clone()).collect()
}

#[test]
fn finds_exactly_the_injected_patterns() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = SynthConfig {
        repeat_share: 0.02,
        ..SynthConfig::default()
    }
    .with_all_patterns();
    let (truth, path) = synth(&cfg, dir.path(), "fleet.ndjson");
    assert!(truth.repeats > 0);
    let s = summary_of(
        &path,
        FleetOptions {
            by: Some("site".into()),
            ..FleetOptions::default()
        },
    );
    let g = &s.overall;
    assert_eq!(s.devices, cfg.devices as u64);
    assert_eq!(s.input.duplicates, truth.repeats);
    assert_eq!(s.input.reports, truth.lines - truth.repeats);
    assert_eq!(
        s.input.malformed + s.input.foreign + s.input.unknown_schema,
        0
    );

    // Failure classes: the firewall, the missing root, the hub incident; nothing else.
    assert_eq!(
        classes(g),
        BTreeSet::from([
            "mqtt.server_unavailable".to_string(),
            "tcp.timeout".to_string(),
            "tls.unknown_ca".to_string()
        ])
    );
    let class = |id: &str| g.failure_classes.iter().find(|c| c.class == id).unwrap();
    let fw = class("tcp.timeout");
    assert_eq!(fw.devices, truth.firewalled.len() as u64);
    assert_eq!(fw.confined_to.as_deref(), Some("site=site-02"));
    assert_eq!(fw.endpoints, vec!["amqps", "mqtt-tls"]);
    assert!(truth.firewalled.contains(&fw.example_device));
    assert_eq!(
        class("mqtt.server_unavailable").devices,
        truth.incident_check_failures.len() as u64
    );
    assert!(class("mqtt.server_unavailable").confined_to.is_none());
    // Ranked by devices affected.
    assert_eq!(g.failure_classes[0].class, "mqtt.server_unavailable");

    // Trust: exactly the devices without the root failed with unknown_ca.
    assert_eq!(g.trust.unknown_ca_devices, truth.missing_ca.len() as u64);
    let got: BTreeSet<String> = g.trust.unknown_ca_examples.iter().cloned().collect();
    assert_eq!(got, truth.missing_ca);
    assert_eq!(g.trust.anchors.len(), 1);
    assert_eq!(g.trust.anchors[0].name, "DigiCert Global Root G2");
    assert_eq!(
        g.trust.anchors[0].devices,
        (cfg.devices - truth.missing_ca.len()) as u64
    );

    // Keep-alive: only the NAT's devices measured an idle timeout, of 240 s, and
    // were told to ping below it.
    let idle = &g.keepalive.idle_timeouts_s;
    assert_eq!(idle.len(), 1, "{idle:?}");
    assert_eq!(idle[0].value, 240);
    assert_eq!(idle[0].reports, truth.nat.len() as u64);
    let below: u64 = g
        .keepalive
        .recommended_s
        .iter()
        .filter(|v| v.value < 240)
        .map(|v| v.reports)
        .sum();
    assert_eq!(below, truth.nat.len() as u64);
    let nopr = g
        .disconnects
        .iter()
        .find(|c| c.cause == "no_pingresp")
        .unwrap();
    assert_eq!(nopr.devices, truth.nat.len() as u64);

    // Incidents: exactly the hub incident, flagged hub-side.
    let w = &s.incidents.windows;
    assert_eq!(w.len(), 1, "{w:#?}");
    let w = &w[0];
    assert_eq!(w.likely_cause, "hub", "{w:#?}");
    assert_eq!(w.iothub_cause, Some(3));
    let (a, b) = truth.hub_incident_ms.unwrap();
    let from = hubprobe::fleet::record::parse_time_ms(&w.from).unwrap();
    let to = hubprobe::fleet::record::parse_time_ms(&w.to).unwrap();
    let bucket = 300_000;
    assert!(from <= a && from > a - bucket, "{} vs {a}", w.from);
    assert!(to >= b && to <= b + 2 * bucket, "{} vs {b}", w.to);
    assert!(w.networks.len() >= 3);
    assert!(w
        .signatures
        .contains(&"check:mqtt.server_unavailable".to_string()));

    // Grouped by site: the firewall shows at site-02 only.
    assert_eq!(s.groups.len(), cfg.sites);
    for e in &s.groups {
        let has = classes(&e.summary).contains("tcp.timeout");
        assert_eq!(has, e.value == "site-02", "{}", e.value);
        assert_eq!(e.label, "site");
    }
}

#[test]
fn a_healthy_fleet_has_no_findings() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = SynthConfig {
        seed: 9,
        ..SynthConfig::default()
    };
    let (truth, path) = synth(&cfg, dir.path(), "fleet.ndjson");
    let s = summary_of(&path, FleetOptions::default());
    assert_eq!(s.input.reports, truth.lines);
    assert!(s.overall.failure_classes.is_empty());
    assert!(s.incidents.windows.is_empty(), "{:#?}", s.incidents.windows);
    assert_eq!(s.overall.trust.unknown_ca_devices, 0);
    assert!(s.overall.keepalive.idle_timeouts_s.is_empty());
    assert_eq!(s.overall.latest_verdicts.ok, cfg.devices as u64);
    for p in &s.overall.phases {
        assert_eq!(p.success_share, Some(1.0), "{p:?}");
    }
}

#[test]
fn a_site_outage_is_the_network_not_the_hub() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = SynthConfig {
        seed: 3,
        site_outage: Some((
            3,
            Duration::from_secs(5 * 3600),
            Duration::from_secs(40 * 60),
        )),
        ..SynthConfig::default()
    };
    let (truth, path) = synth(&cfg, dir.path(), "fleet.ndjson");
    let s = summary_of(&path, FleetOptions::default());
    assert_eq!(
        classes(&s.overall),
        BTreeSet::from(["dns.timeout".to_string()])
    );
    assert_eq!(
        s.overall.failure_classes[0].confined_to.as_deref(),
        Some("site=site-03")
    );
    let w = &s.incidents.windows;
    assert_eq!(w.len(), 1, "{w:#?}");
    assert_eq!(w[0].likely_cause, "network", "{:#?}", w[0]);
    assert_eq!(w[0].iothub_cause, Some(2));
    assert_eq!(w[0].sites.len(), 1);
    assert_eq!(w[0].sites[0].value, "site-03");
    let (a, _) = truth.site_outage_ms.unwrap();
    let from = hubprobe::fleet::record::parse_time_ms(&w[0].from).unwrap();
    assert!(from <= a && from > a - 300_000);
}

fn run_stdin(args: &[&str], stdin: &[u8]) -> support::Run {
    let mut cmd = Command::new(support::bin());
    cmd.args(args).stdin(Stdio::piped());
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("fleet summarize did not finish in 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    support::Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        elapsed: Duration::ZERO,
    }
}

#[test]
fn every_input_kind_is_read_and_every_bad_line_is_counted_with_its_place() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = SynthConfig {
        devices: 20,
        duration: Duration::from_secs(3600),
        ..SynthConfig::default()
    };
    let mut lines = Vec::new();
    generate(&cfg, |r| lines.push(serde_json::to_string(r).unwrap()));
    assert_eq!(lines.len(), 20 + 80);
    let root = dir.path().join("reports");
    std::fs::create_dir_all(root.join("a/deeper")).unwrap();
    // A pretty-printed report file (what --report-file writes), two documents in another.
    let v: Value = serde_json::from_str(&lines[0]).unwrap();
    std::fs::write(
        root.join("a/deeper/one.json"),
        serde_json::to_string_pretty(&v).unwrap(),
    )
    .unwrap();
    let v1: Value = serde_json::from_str(&lines[1]).unwrap();
    let v2: Value = serde_json::from_str(&lines[2]).unwrap();
    std::fs::write(
        root.join("a/two.json"),
        format!(
            "{}\n{}\n",
            serde_json::to_string_pretty(&v1).unwrap(),
            serde_json::to_string_pretty(&v2).unwrap()
        ),
    )
    .unwrap();
    // Gzip NDJSON with a repeat of its first line.
    {
        let f = std::fs::File::create(root.join("b.ndjson.gz")).unwrap();
        let mut gz = flate2::write::GzEncoder::new(f, flate2::Compression::default());
        for l in &lines[3..60] {
            writeln!(gz, "{l}").unwrap();
        }
        writeln!(gz, "{}", lines[3]).unwrap();
        gz.finish().unwrap();
    }
    // Plain NDJSON with a bad line, a foreign line, a newer schema and a blank line.
    let mut newer: Value = serde_json::from_str(&lines[60]).unwrap();
    newer["schema"] = "hubprobe.report/2".into();
    let c = format!(
        "{}\n{{\"truncated\": \n{}\n{{\"hello\":\"world\"}}\n{}\n\n{}",
        lines[61], lines[62], newer, lines[63]
    );
    std::fs::write(root.join("c.ndjson"), c).unwrap();
    std::fs::write(root.join("notes.txt"), "not a report").unwrap();
    // The rest on stdin.
    let stdin = lines[64..].join("\n") + "\n";

    let out = run_stdin(
        &[
            "fleet",
            "summarize",
            root.to_str().unwrap(),
            "-",
            "-o",
            "json",
        ],
        stdin.as_bytes(),
    );
    assert_eq!(out.code, 1, "{}", out.all_output());
    let s: Value = serde_json::from_str(&out.stdout).unwrap();
    let i = &s["input"];
    assert_eq!(i["files"], 5, "{i:#}");
    assert_eq!(i["reports"], 100 - 1, "{i:#}"); // all but the newer-schema one
    assert_eq!(i["duplicates"], 1);
    assert_eq!(i["malformed"], 1);
    assert_eq!(i["foreign"], 1);
    assert_eq!(i["unknown_schema"], 1);
    assert_eq!(i["blank_lines"], 1);
    assert_eq!(s["devices"], 20);
    let skipped = i["files_skipped"].as_array().unwrap();
    assert_eq!(skipped.len(), 1);
    assert!(skipped[0].as_str().unwrap().ends_with("notes.txt"));
    let problems = i["problems"].as_array().unwrap();
    let c_path = root.join("c.ndjson").display().to_string();
    let at: Vec<(String, u64, String)> = problems
        .iter()
        .map(|p| {
            (
                p["file"].as_str().unwrap().to_string(),
                p["line"].as_u64().unwrap(),
                p["kind"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        at,
        vec![
            (c_path.clone(), 2, "malformed".to_string()),
            (c_path.clone(), 4, "foreign".to_string()),
            (c_path, 5, "unknown_schema".to_string()),
        ]
    );
    assert!(problems[2]["message"]
        .as_str()
        .unwrap()
        .contains("hubprobe.report/2"));
    assert!(
        out.stderr.contains("3 input lines were not used"),
        "{}",
        out.stderr
    );

    // Text output says the same.
    let out = run_stdin(
        &["fleet", "summarize", root.to_str().unwrap(), "-"],
        stdin.as_bytes(),
    );
    assert_eq!(out.code, 1);
    assert!(
        out.stdout.contains("c.ndjson:2: malformed"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("20 devices, 99 reports"),
        "{}",
        out.stdout
    );
}

#[test]
fn a_newer_major_schema_is_refused_and_a_missing_path_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("v2.ndjson");
    std::fs::write(
        &p,
        "{\"schema\":\"hubprobe.report/2\",\"id\":\"a\",\"something\":\"new\"}\n",
    )
    .unwrap();
    let out = support::run(&["fleet", "summarize", p.to_str().unwrap()]);
    assert_eq!(out.code, 3, "{}", out.all_output());
    assert!(out.stderr.contains("hubprobe.report/2"), "{}", out.stderr);
    assert!(out.stderr.contains("upgrade hubprobe"), "{}", out.stderr);
    assert!(out.stdout.is_empty());

    let missing = dir.path().join("nope");
    let out = support::run(&["fleet", "summarize", missing.to_str().unwrap()]);
    assert_eq!(out.code, 3, "{}", out.all_output());
    assert!(out.stderr.contains("cannot read"), "{}", out.stderr);
}

#[test]
fn one_and_two_parser_threads_agree() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = SynthConfig {
        devices: 60,
        seed: 5,
        ..SynthConfig::default()
    }
    .with_all_patterns();
    let (_, path) = synth(&cfg, dir.path(), "f.ndjson");
    let one = summary_of(
        &path,
        FleetOptions {
            threads: 1,
            ..FleetOptions::default()
        },
    );
    let two = summary_of(
        &path,
        FleetOptions {
            threads: 2,
            ..FleetOptions::default()
        },
    );
    assert_eq!(
        serde_json::to_value(&one).unwrap(),
        serde_json::to_value(&two).unwrap()
    );
}

#[test]
fn synth_cli_writes_gzip_that_summarize_reads() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("f.ndjson.gz");
    let out = support::run(&[
        "fleet",
        "synth",
        "--devices",
        "30",
        "--duration",
        "2h",
        "--patterns",
        "-O",
        p.to_str().unwrap(),
    ]);
    assert_eq!(out.code, 0, "{}", out.all_output());
    let out = support::run(&["fleet", "summarize", p.to_str().unwrap(), "-o", "json"]);
    assert_eq!(out.code, 0, "{}", out.all_output());
    let s: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(s["devices"], 30);
    assert_eq!(s["input"]["reports"], 30 + 30 * 8);
    assert_eq!(s["schema"], "hubprobe.fleet/1");
}

/// A canary report carrying disconnect records (`canary.recent[]`).
fn canary_report(id: &str, device: &str, started_at: &str, recent: Value) -> String {
    serde_json::json!({
        "schema": "hubprobe.report/1", "id": id, "kind": "check", "host": device,
        "started_at": started_at, "target": {"device_id": device}, "verdict": "ok",
        "endpoints": [], "labels": {"network": "net-1", "site": "site-1"},
        "canary": {"recent": recent}
    })
    .to_string()
}

/// The agent writes a disconnect record while the session is still down, and the
/// same record (same `id`) completed in a later report: it counts once, in its
/// latest version, whatever the order the reports arrive in; records without an id
/// (older agents) count as they come.
#[test]
fn a_disconnect_reported_open_then_completed_counts_once_with_its_outage() {
    let at = 1_795_690_800_000u64; // 2026-11-26T10:20:00Z
    let open = serde_json::json!({"id": "d1-7", "at": "2026-11-26T10:20:00Z", "at_unix_ms": at,
        "session_lived_s": 600.0, "idle_before_s": 30.0, "cause": "io_error", "detail": "reset",
        "failed_attempts": 0});
    let mut done = open.clone();
    done["reconnect_s"] = serde_json::json!(95.5);
    done["failed_attempts"] = serde_json::json!(4);
    let other = serde_json::json!({"id": "d1-8", "at_unix_ms": at + 600_000, "cause": "no_pingresp",
        "reconnect_s": 2.0, "failed_attempts": 0});
    let legacy = serde_json::json!({"at_unix_ms": at, "cause": "tcp_reset", "reconnect_s": 10.0});
    let lines = [
        canary_report(
            "r1",
            "d1",
            "2026-11-26T10:25:00Z",
            serde_json::json!([open]),
        ),
        canary_report(
            "r2",
            "d1",
            "2026-11-26T10:40:00Z",
            serde_json::json!([done, other]),
        ),
        // Still listed by the next report, complete.
        canary_report(
            "r3",
            "d1",
            "2026-11-26T10:55:00Z",
            serde_json::json!([other]),
        ),
        // Another device with the same record id is another disconnect.
        canary_report(
            "r4",
            "d2",
            "2026-11-26T10:25:00Z",
            serde_json::json!([open]),
        ),
        // An older agent: no id, so the repeat counts twice (as before).
        canary_report(
            "r5",
            "d3",
            "2026-11-26T10:25:00Z",
            serde_json::json!([legacy]),
        ),
        canary_report(
            "r6",
            "d3",
            "2026-11-26T10:40:00Z",
            serde_json::json!([legacy]),
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    // In order, and with the completed version first: the same summary.
    let orders: [&[usize]; 2] = [&[0, 1, 2, 3, 4, 5], &[2, 1, 5, 0, 4, 3]];
    for order in orders {
        let path = dir.path().join("canary.ndjson");
        let text: Vec<&str> = order.iter().map(|&i| lines[i].as_str()).collect();
        std::fs::write(&path, text.join("\n")).unwrap();
        let s = summary_of(&path, FleetOptions::default());
        assert_eq!(s.input.reports, 6);
        let cause = |c: &str| {
            s.overall
                .disconnects
                .iter()
                .find(|x| x.cause == c)
                .unwrap_or_else(|| panic!("no {c}: {:#?}", s.overall.disconnects))
        };
        let io = cause("io_error");
        assert_eq!((io.events, io.devices), (2, 2), "{order:?}: {io:#?}");
        // d1's completed version (95.5 s after 4 failed attempts); d2's never completed.
        assert_eq!(io.reconnected, 1, "{order:?}");
        assert_eq!(io.failed_attempts, 4, "{order:?}");
        let p = io.reconnect_s.unwrap();
        assert!((p.p50 - 95.5).abs() <= 95.5 * 0.01, "{p:?}");
        let np = cause("no_pingresp");
        assert_eq!((np.events, np.reconnected), (1, 1), "{order:?}");
        let tr = cause("tcp_reset");
        assert_eq!(
            (tr.events, tr.devices, tr.reconnected),
            (2, 1, 2),
            "{order:?}"
        );
        // The timeline counts each device once in the disconnect's bucket.
        let b = s
            .incidents
            .timeline
            .iter()
            .find(|b| b.start_ms == at as i64)
            .unwrap();
        assert_eq!(b.disconnected_devices, 3, "{order:?}");
    }
    // The text summary shows the outage lengths.
    let path = dir.path().join("canary.ndjson");
    let run = support::run(&["fleet", "summarize", path.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout
            .contains("io_error 2 (2 devices, back after p50 9"),
        "{}",
        run.stdout
    );
}

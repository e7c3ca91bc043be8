//! The ClickHouse SQL in packaging/clickhouse/ gives the same numbers as
//! `hubprobe fleet summarize` on the same reports: run for real in chDB
//! (ClickHouse's engine in-process, PyPI `chdb`, installed by scripts/test.sh into
//! target/fleet-venv or the Python named by HUBPROBE_FLEET_PYTHON). Counts and
//! shares must be equal; percentiles within the summary histogram's 1 % bound.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use hubprobe::fleet::synth::{generate, SynthConfig};
use hubprobe::fleet::{summarize, FleetOptions, Source};
use serde_json::Value;

fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("HUBPROBE_FLEET_PYTHON") {
        return PathBuf::from(p);
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/fleet-venv/bin/python");
    assert!(
        p.exists(),
        "{} is missing: scripts/test.sh creates it (python3 -m venv + pip install chdb duckdb), or set HUBPROBE_FLEET_PYTHON",
        p.display()
    );
    p
}

/// Runs the SQL in chDB over `data`; bounded to 5 minutes.
fn clickhouse(data: &Path) -> Value {
    clickhouse_each(&[data]).remove(0)
}

/// Runs the SQL in chDB over each file in turn, in one interpreter (starting chDB
/// is most of a small run's time); bounded to 5 minutes.
fn clickhouse_each(data: &[&Path]) -> Vec<Value> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut child = Command::new(python())
        .arg(root.join("scripts/fleet_chdb.py"))
        .arg(root.join("packaging/clickhouse"))
        .args(data)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python runs");
    // Drain stdout while waiting (a full pipe would stall the script).
    let mut stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stdout, &mut b);
        b
    });
    let deadline = Instant::now() + Duration::from_secs(300);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("chDB did not finish within 5 minutes");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let stdout = reader.join().unwrap();
    assert!(
        out.status.success(),
        "chDB failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&stdout).expect("chDB prints JSON");
    if data.len() == 1 {
        return vec![v];
    }
    let all = v
        .as_array()
        .expect("chDB prints one result per file")
        .clone();
    assert_eq!(all.len(), data.len(), "one result per file");
    all
}

fn u(v: &Value) -> u64 {
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or_else(|| panic!("not a count: {v}"))
}

fn f(v: &Value) -> f64 {
    v.as_f64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or_else(|| panic!("not a number: {v}"))
}

fn close(got: f64, want: f64, what: &str) {
    let tol = want.abs() * hubprobe::fleet::sketch::RELATIVE_ERROR + 1e-3;
    assert!(
        (got - want).abs() <= tol,
        "{what}: summary {got} vs ClickHouse {want}"
    );
}

/// Canary reports of a newer agent: each disconnect record has an `id`, is written
/// open (still down) and repeated completed by later reports, which arrive out of
/// order; plus a device whose clock says 2200 and one that says 1990.
fn lifecycle_reports() -> Vec<String> {
    let report = |id: String, dev: &str, at: &str, recent: Value| {
        serde_json::json!({
            "schema": "hubprobe.report/1", "id": id, "kind": "check", "host": dev,
            "started_at": at, "target": {"device_id": dev}, "verdict": "ok",
            "endpoints": [], "labels": {"network": "net-z", "site": "site-z"},
            "canary": {"recent": recent}
        })
        .to_string()
    };
    let mut out = Vec::new();
    for d in 0..3u64 {
        let dev = format!("lifecycle-{d}");
        let at = 1_795_665_600_000 + d * 60_000; // 2026-11-26T04:00Z on
        let open = serde_json::json!({"id": "x-1", "at_unix_ms": at, "cause": "io_error"});
        let mut done = open.clone();
        done["reconnect_s"] = serde_json::json!(40.0 + 25.0 * d as f64);
        done["failed_attempts"] = serde_json::json!(4);
        let second = serde_json::json!({"id": "x-2", "at_unix_ms": at + 900_000,
            "cause": "no_pingresp", "reconnect_s": 1.5, "failed_attempts": 0});
        // The completed version first in the input, the open one last.
        out.push(report(
            format!("{dev}-b"),
            &dev,
            "2026-11-26T04:30:00Z",
            serde_json::json!([done, second]),
        ));
        out.push(report(
            format!("{dev}-c"),
            &dev,
            "2026-11-26T04:45:00Z",
            serde_json::json!([second]),
        ));
        out.push(report(
            format!("{dev}-a"),
            &dev,
            "2026-11-26T04:10:00Z",
            serde_json::json!([open]),
        ));
    }
    let late = serde_json::json!([{"id": "y-1", "at_unix_ms": 7_258_118_400_000u64, "cause": "tcp_reset"}]);
    out.push(report(
        "future".into(),
        "clock-2200",
        "2200-01-01T00:00:00Z",
        late,
    ));
    out.push(report(
        "past".into(),
        "clock-1990",
        "1990-01-01T00:00:00Z",
        serde_json::json!([]),
    ));
    out
}

#[test]
fn clickhouse_sql_and_fleet_summarize_agree() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("fleet.ndjson");
    let cfg = SynthConfig {
        devices: 120,
        duration: Duration::from_secs(8 * 3600),
        repeat_share: 0.03,
        seed: 11,
        ..SynthConfig::default()
    }
    .with_all_patterns();
    {
        use std::io::Write;
        let mut out = std::io::BufWriter::new(std::fs::File::create(&data).unwrap());
        generate(&cfg, |r| {
            serde_json::to_writer(&mut out, r).unwrap();
            out.write_all(b"\n").unwrap();
        });
        for line in lifecycle_reports() {
            writeln!(out, "{line}").unwrap();
        }
        out.flush().unwrap();
    }
    let s = summarize(&[Source::Path(data.clone())], FleetOptions::default()).unwrap();
    let ch = clickhouse(&data);
    let g = &s.overall;

    let t = &ch["totals"][0];
    assert_eq!(u(&t["reports"]), s.input.reports);
    assert_eq!(u(&t["devices"]), s.devices);
    assert_eq!(u(&t["duplicates"]), s.input.duplicates);
    assert!(s.input.duplicates > 0);

    for row in ch["kinds"].as_array().unwrap() {
        assert_eq!(
            u(&row["reports"]),
            g.kinds[row["kind"].as_str().unwrap()],
            "{row}"
        );
    }
    assert_eq!(ch["kinds"].as_array().unwrap().len(), g.kinds.len());

    let lv = &g.latest_verdicts;
    for row in ch["latest_verdicts"].as_array().unwrap() {
        let want = match row["verdict"].as_str().unwrap() {
            "ok" => lv.ok,
            "warning" => lv.warning,
            "critical" => lv.critical,
            _ => lv.unknown,
        };
        assert_eq!(u(&row["devices"]), want, "{row}");
    }

    let phases = ch["phases"].as_array().unwrap();
    assert_eq!(phases.len(), g.phases.len());
    for row in phases {
        let p = g
            .phases
            .iter()
            .find(|p| p.endpoint == row["endpoint"] && p.phase == row["phase"])
            .unwrap_or_else(|| panic!("no {row} in the summary"));
        let what = format!("{} {}", p.endpoint, p.phase);
        assert_eq!(u(&row["attempts"]), p.attempts, "{what}");
        assert_eq!(u(&row["ok"]), p.ok, "{what}");
        assert_eq!(u(&row["failed"]), p.failed, "{what}");
        assert_eq!(u(&row["skipped"]), p.skipped, "{what}");
        // Both are ok/attempts of equal counts; only the last printed digit may differ.
        assert!(
            (f(&row["success_share"]) - p.success_share.unwrap()).abs() < 1e-12,
            "{what}"
        );
        let d = p.duration_ms.unwrap();
        close(d.p50, f(&row["p50_ms"]), &format!("{what} p50"));
        close(d.p90, f(&row["p90_ms"]), &format!("{what} p90"));
        close(d.p99, f(&row["p99_ms"]), &format!("{what} p99"));
    }

    let classes = ch["failure_classes"].as_array().unwrap();
    assert_eq!(classes.len(), g.failure_classes.len());
    assert_eq!(classes.len(), 3);
    for (row, c) in classes.iter().zip(&g.failure_classes) {
        assert_eq!(row["class"], c.class.as_str());
        assert_eq!(u(&row["devices"]), c.devices, "{}", c.class);
        assert_eq!(u(&row["reports"]), c.reports, "{}", c.class);
        assert_eq!(row["example_device"], c.example_device.as_str());
    }

    let anchors = ch["trust_anchors"].as_array().unwrap();
    assert_eq!(anchors.len(), g.trust.anchors.len());
    for (row, a) in anchors.iter().zip(&g.trust.anchors) {
        assert_eq!(row["name"], a.name.as_str());
        assert_eq!(u(&row["devices"]), a.devices);
    }
    assert_eq!(
        u(&ch["unknown_ca"][0]["devices"]),
        g.trust.unknown_ca_devices
    );
    assert!(g.trust.unknown_ca_devices > 0);

    let clock = &ch["clock"][0];
    assert_eq!(u(&clock["reports"]), g.clock.reports);
    let cp = g.clock.abs_offset_s.unwrap();
    close(cp.p50, f(&clock["p50_s"]), "clock p50");
    close(cp.p90, f(&clock["p90_s"]), "clock p90");
    close(cp.p99, f(&clock["p99_s"]), "clock p99");
    assert_eq!(
        u(&clock["devices_over_warning"]),
        g.clock.devices_over_warning
    );

    let pairs = |name: &str| -> Vec<(u64, u64)> {
        ch[name]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (u(&r["value"]), u(&r["reports"])))
            .collect()
    };
    let mine = |v: &[hubprobe::fleet::summary::ValueCount]| -> Vec<(u64, u64)> {
        v.iter().map(|x| (x.value, x.reports)).collect()
    };
    assert_eq!(
        pairs("keepalive_recommended"),
        mine(&g.keepalive.recommended_s)
    );
    assert_eq!(pairs("idle_timeouts"), mine(&g.keepalive.idle_timeouts_s));
    assert!(!g.keepalive.idle_timeouts_s.is_empty());

    let disc = ch["disconnects"].as_array().unwrap();
    assert_eq!(disc.len(), g.disconnects.len());
    for row in disc {
        let c = g
            .disconnects
            .iter()
            .find(|c| c.cause == row["cause"])
            .unwrap();
        assert_eq!(u(&row["events"]), c.events, "{}", c.cause);
        assert_eq!(u(&row["devices"]), c.devices, "{}", c.cause);
        assert_eq!(u(&row["reconnected"]), c.reconnected, "{}", c.cause);
        assert_eq!(u(&row["failed_attempts"]), c.failed_attempts, "{}", c.cause);
        if let Some(p) = c.reconnect_s {
            close(
                p.p50,
                f(&row["reconnect_p50_s"]),
                &format!("{} p50", c.cause),
            );
            close(
                p.p90,
                f(&row["reconnect_p90_s"]),
                &format!("{} p90", c.cause),
            );
            close(
                p.p99,
                f(&row["reconnect_p99_s"]),
                &format!("{} p99", c.cause),
            );
        }
    }
    // The records with ids were counted once each, in their completed version.
    let io = g
        .disconnects
        .iter()
        .find(|c| c.cause == "io_error")
        .unwrap();
    assert!(io.failed_attempts >= 3 * 4, "{io:?}");
    let it = &ch["implausible_times"][0];
    assert_eq!(u(&it["reports"]), s.input.implausible_times.reports);
    assert_eq!(u(&it["disconnects"]), s.input.implausible_times.disconnects);
    assert_eq!(s.input.implausible_times.reports, 2);
    assert_eq!(s.input.implausible_times.disconnects, 1);

    same_windows(&ch, &s, "the fleet with every pattern");
    assert_eq!(s.incidents.windows.len(), 1, "{:?}", s.incidents.windows);

    // `--by site`: the same groups, latest verdicts, success shares and top failure
    // outside the incident windows.
    let by = summarize(
        &[Source::Path(data.clone())],
        FleetOptions {
            by: Some("site".into()),
            ..FleetOptions::default()
        },
    )
    .unwrap();
    same_groups(&ch, &by);

    let tl = ch["timeline"].as_array().unwrap();
    assert_eq!(tl.len(), s.incidents.timeline.len());
    for (row, b) in tl.iter().zip(&s.incidents.timeline) {
        assert_eq!(u(&row["bucket_ms"]) as i64, b.start_ms);
        assert_eq!(
            u(&row["disconnected_devices"]),
            b.disconnected_devices,
            "{}",
            b.start
        );
        assert_eq!(u(&row["failed_devices"]), b.failed_devices, "{}", b.start);
        assert_eq!(u(&row["checks"]), b.checks, "{}", b.start);
        assert_eq!(u(&row["failed_checks"]), b.failed_checks, "{}", b.start);
    }
}

/// The flagged windows of the SQL are the summary's: bounds, cause, signatures, devices.
fn same_windows(ch: &Value, s: &hubprobe::fleet::FleetSummary, what: &str) {
    let rows = ch["incident_windows"].as_array().unwrap();
    let mine = &s.incidents.windows;
    assert_eq!(rows.len(), mine.len(), "{what}: {rows:#?} vs {mine:#?}");
    for (row, w) in rows.iter().zip(mine) {
        let from = hubprobe::fleet::record::parse_time_ms(&w.from).unwrap();
        let to = hubprobe::fleet::record::parse_time_ms(&w.to).unwrap();
        assert_eq!(u(&row["from_ms"]) as i64, from, "{what}: {row}");
        assert_eq!(u(&row["to_ms"]) as i64, to, "{what}: {row}");
        assert_eq!(
            row["likely_cause"],
            w.likely_cause.as_str(),
            "{what}: {row}"
        );
        assert_eq!(u(&row["devices"]), w.devices, "{what}: {row}");
        assert_eq!(
            u(&row["networks"]),
            w.networks.len() as u64,
            "{what}: {row}"
        );
        let mut sigs: Vec<&str> = row["signatures"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap())
            .collect();
        let mut want: Vec<&str> = w.signatures.iter().map(String::as_str).collect();
        sigs.sort_unstable();
        want.sort_unstable();
        assert_eq!(sigs, want, "{what}: {row}");
    }
}

/// The `--by site` queries give the summary's groups.
fn same_groups(ch: &Value, by: &hubprobe::fleet::FleetSummary) {
    let rows = ch["groups_by_site"].as_array().unwrap();
    assert_eq!(rows.len(), by.groups.len());
    assert!(rows.len() > 2);
    for (row, g) in rows.iter().zip(&by.groups) {
        assert_eq!(row["value"], g.value.as_str());
        assert_eq!(u(&row["reports"]), g.summary.reports, "{row}");
        assert_eq!(u(&row["devices"]), g.summary.devices, "{row}");
        let lv = &g.summary.latest_verdicts;
        assert_eq!(
            [
                u(&row["ok"]),
                u(&row["warning"]),
                u(&row["critical"]),
                u(&row["unknown"])
            ],
            [lv.ok, lv.warning, lv.critical, lv.unknown],
            "{row}"
        );
    }
    let phases = ch["group_phases_by_site"].as_array().unwrap();
    let n: usize = by.groups.iter().map(|g| g.summary.phases.len()).sum();
    assert_eq!(phases.len(), n);
    for row in phases {
        let g = by.groups.iter().find(|g| g.value == row["value"]).unwrap();
        let p = g
            .summary
            .phases
            .iter()
            .find(|p| p.endpoint == row["endpoint"] && p.phase == row["phase"])
            .unwrap_or_else(|| panic!("no {row}"));
        assert_eq!(u(&row["attempts"]), p.attempts, "{row}");
        assert_eq!(u(&row["ok"]), p.ok, "{row}");
    }
    let top = ch["group_top_failure_outside_incidents_by_site"]
        .as_array()
        .unwrap();
    for g in &by.groups {
        let row = top.iter().find(|r| r["value"] == g.value.as_str());
        match (&g.top_failure_outside_incidents, row) {
            (None, None) => {}
            (Some(c), Some(row)) => {
                assert_eq!(row["class"], c.class.as_str(), "{}", g.value);
                assert_eq!(u(&row["devices"]), c.devices, "{}", g.value);
            }
            (a, b) => panic!("{}: summary {a:?} vs ClickHouse {b:?}", g.value),
        }
    }
    // The firewalled site stands out despite the hub incident.
    assert!(top
        .iter()
        .any(|r| r["class"] == "tcp.timeout" && u(&r["devices"]) > 0));
}

/// Other window shapes (a site outage beside a hub incident, a smaller fleet whose
/// windows are near the 5-device floor) and the Avro files IoT Hub routing writes,
/// loaded natively by ClickHouse with load-avro.sql: the same windows as hubprobe.
#[test]
fn clickhouse_flags_the_same_windows_from_ndjson_and_avro() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("outage.ndjson");
    let cfg = SynthConfig {
        devices: 90,
        sites: 6,
        duration: Duration::from_secs(6 * 3600),
        seed: 23,
        site_outage: Some((
            1,
            Duration::from_secs(2 * 3600),
            Duration::from_secs(30 * 60),
        )),
        ..SynthConfig::default()
    }
    .with_all_patterns();
    {
        use std::io::Write;
        let mut out = std::io::BufWriter::new(std::fs::File::create(&data).unwrap());
        generate(&cfg, |r| {
            serde_json::to_writer(&mut out, r).unwrap();
            out.write_all(b"\n").unwrap();
        });
        out.flush().unwrap();
    }
    let s = summarize(&[Source::Path(data.clone())], FleetOptions::default()).unwrap();
    let causes: Vec<&str> = s
        .incidents
        .windows
        .iter()
        .map(|w| w.likely_cause.as_str())
        .collect();
    assert!(
        causes.contains(&"hub") && causes.contains(&"network"),
        "{causes:?}"
    );

    // The same reports as IoT Hub routing writes them (with foreign messages), and
    // again with gzip bodies, which ClickHouse cannot inflate: counted, left out.
    // chDB runs once over the three files.
    let avro = dir.path().join("routing.avro");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let write = |out: &Path, extra: &[&str]| -> Value {
        let mut cmd = Command::new(python());
        cmd.arg(root.join("scripts/fleet_avro.py"))
            .arg(&data)
            .arg(out)
            .args(["--foreign-every", "9", "--codec", "deflate"])
            .args(extra);
        let run = support::run_cmd(&mut cmd, &[], Duration::from_secs(120));
        assert_eq!(run.code, 0, "fleet_avro.py: {}", run.stderr);
        serde_json::from_str(&run.stdout).unwrap()
    };
    let counts = write(&avro, &[]);
    let gz = dir.path().join("routing-gzip.avro");
    let gz_counts = write(&gz, &["--gzip-every", "5", "--wrong-device-every", "11"]);
    let mut chs = clickhouse_each(&[&data, &avro, &gz]).into_iter();
    let (ch_ndjson, ch_avro, ch_gz) = (
        chs.next().unwrap(),
        chs.next().unwrap(),
        chs.next().unwrap(),
    );
    same_windows(&ch_ndjson, &s, "a site outage and a hub incident");

    let from_avro = summarize(&[Source::Path(avro.clone())], FleetOptions::default()).unwrap();
    assert_eq!(from_avro.input.reports, s.input.reports);
    assert_eq!(from_avro.input.foreign, u(&counts["foreign"]));
    let ch = ch_avro;
    assert_eq!(u(&ch["totals"][0]["reports"]), from_avro.input.reports);
    assert_eq!(u(&ch["avro_skipped"][0]["foreign"]), u(&counts["foreign"]));
    assert_eq!(u(&ch["avro_skipped"][0]["gzip"]), 0);
    same_windows(&ch, &from_avro, "Avro from IoT Hub routing");

    let counts = gz_counts;
    let ch = ch_gz;
    let skipped = &ch["avro_skipped"][0];
    assert_eq!(u(&skipped["gzip"]), u(&counts["gzip"]));
    assert_eq!(u(&skipped["foreign"]), u(&counts["foreign"]));
    assert!(u(&skipped["wrong_device"]) > 0);
    let loaded = u(&ch["totals"][0]["reports"]);
    assert_eq!(
        loaded + u(&skipped["gzip"]) + u(&skipped["wrong_device"]),
        u(&counts["reports"])
    );
}

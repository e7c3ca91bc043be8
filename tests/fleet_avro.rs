//! `fleet summarize` reads the reports where IoT Hub puts them: Avro object
//! container files as IoT Hub routing to storage and Event Hubs Capture write them,
//! written here by an independent implementation (PyPI `fastavro`, in the venv
//! scripts/test.sh makes) from real hubprobe reports, and the JSON lines routing
//! writes when the body is JSON. Gzip bodies, foreign messages, a device id that
//! does not match the report, a truncated file, files in directories (with no
//! extension, as routing names them), gzip and stdin.

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use hubprobe::fleet::synth::{generate, SynthConfig};
use hubprobe::fleet::{summarize, FleetOptions, FleetSummary, Source};
use serde_json::{json, Value};

fn python() -> PathBuf {
    let p = std::env::var_os("HUBPROBE_FLEET_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("target/fleet-venv/bin/python")
        });
    let ok = Command::new(&p)
        .args(["-c", "import fastavro"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "{} cannot import fastavro: scripts/test.sh installs it in target/fleet-venv (or set HUBPROBE_FLEET_PYTHON)",
        p.display()
    );
    p
}

/// Runs scripts/fleet_avro.py; returns its counts.
fn write_avro(reports: &Path, out: &Path, args: &[&str]) -> Value {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut cmd = Command::new(python());
    cmd.arg(root.join("scripts/fleet_avro.py"))
        .arg(reports)
        .arg(out)
        .args(args);
    let run = support::run_cmd(&mut cmd, &[], Duration::from_secs(120));
    assert_eq!(run.code, 0, "fleet_avro.py: {}", run.stderr);
    serde_json::from_str(&run.stdout).unwrap()
}

/// Records fastavro can read from a (possibly truncated) file.
fn readable_records(path: &Path) -> u64 {
    let script = "import sys, fastavro\nn = 0\ntry:\n    for _ in fastavro.reader(open(sys.argv[1], 'rb')):\n        n += 1\nexcept Exception:\n    pass\nprint(n)";
    let mut cmd = Command::new(python());
    cmd.args(["-c", script]).arg(path);
    let run = support::run_cmd(&mut cmd, &[], Duration::from_secs(60));
    assert_eq!(run.code, 0, "{}", run.stderr);
    run.stdout.trim().parse().unwrap()
}

struct Fleet {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    ndjson: PathBuf,
    lines: Vec<String>,
    baseline: FleetSummary,
}

fn fleet() -> Fleet {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let cfg = SynthConfig {
        devices: 40,
        duration: Duration::from_secs(5 * 3600),
        seed: 5,
        ..SynthConfig::default()
    }
    .with_all_patterns();
    let mut lines = Vec::new();
    generate(&cfg, |r| lines.push(serde_json::to_string(r).unwrap()));
    let ndjson = path.join("fleet.ndjson");
    std::fs::write(&ndjson, lines.join("\n") + "\n").unwrap();
    let baseline = summarize(&[Source::Path(ndjson.clone())], FleetOptions::default()).unwrap();
    assert!(baseline.input.reports > 500);
    Fleet {
        _dir: dir,
        dir: path,
        ndjson,
        lines,
        baseline,
    }
}

/// The same reports give the same summary, whatever carried them.
fn assert_same_fleet(s: &FleetSummary, base: &FleetSummary, what: &str) {
    let v = |x: &FleetSummary| {
        let mut v = serde_json::to_value(x).unwrap();
        v.as_object_mut().unwrap().remove("input");
        v
    };
    assert_eq!(v(s), v(base), "{what}");
}

fn run_json(args: &[&str]) -> (i32, Value) {
    let mut all = vec!["fleet", "summarize"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", "json"]);
    let run = support::run_with_env(&all, &[], Duration::from_secs(120));
    let v = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("{args:?}: {e}\n{}", run.stderr));
    (run.code, v)
}

#[test]
fn iot_hub_routing_avro_with_gzip_bodies_and_foreign_messages() {
    let f = fleet();
    let n = f.baseline.input.reports;
    let avro = f.dir.join("routing.avro");
    let counts = write_avro(
        &f.ndjson,
        &avro,
        &["--gzip-every", "3", "--foreign-every", "10"],
    );
    assert_eq!(counts["reports"], n);
    assert!(counts["gzip"].as_u64().unwrap() > 100);
    let foreign = counts["foreign"].as_u64().unwrap();
    let s = summarize(&[Source::Path(avro.clone())], FleetOptions::default()).unwrap();
    assert_eq!(s.input.reports, n);
    assert_eq!(s.input.records, n + foreign);
    assert_eq!((s.input.foreign, s.input.malformed), (foreign, 0));
    // Foreign messages are listed at their place in the file (the message number).
    assert_eq!(s.input.problems[0].line, 2, "{:?}", s.input.problems[0]);
    assert!(s.input.problems[0].message.contains("hubprobe=report"));
    assert_same_fleet(&s, &f.baseline, "routing Avro");

    // The binary: exit 1 (foreign messages were not used), the same numbers.
    let (code, v) = run_json(&[avro.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert_eq!(v["input"]["reports"], n);
    assert_eq!(v["input"]["foreign"], foreign);
}

#[test]
fn event_hubs_capture_avro_deflate_and_the_device_cross_check() {
    let f = fleet();
    let n = f.baseline.input.reports;
    let avro = f.dir.join("capture.avro");
    let counts = write_avro(
        &f.ndjson,
        &avro,
        &[
            "--capture",
            "--codec",
            "deflate",
            "--gzip-every",
            "2",
            "--wrong-device-every",
            "25",
        ],
    );
    let wrong = counts["wrong_device"].as_u64().unwrap();
    assert!(wrong > 10);
    let s = summarize(&[Source::Path(avro)], FleetOptions::default()).unwrap();
    assert_eq!(s.input.reports, n - wrong);
    assert_eq!(s.input.malformed, wrong);
    assert_eq!(s.input.foreign, 0);
    let p = &s.input.problems[0];
    assert_eq!(p.line, 25, "{p:?}");
    assert!(
        p.message.contains("\"someone-else\"") && p.message.contains("report of"),
        "{p:?}"
    );
    // Every problem names its message's position, across blocks read together.
    assert!(s.input.problems.len() > 1, "{:?}", s.input.problems);
    for p in &s.input.problems {
        assert_eq!(p.line % 25, 0, "{p:?}");
    }
}

#[test]
fn avro_in_directories_gzip_and_stdin_is_found_by_content() {
    let f = fleet();
    let n = f.baseline.input.reports;
    // IoT Hub routing names its blobs by hub, partition and time, with no extension.
    let tree = f.dir.join("hub/0/2026/11/26");
    std::fs::create_dir_all(&tree).unwrap();
    let blob = tree.join("10");
    write_avro(&f.ndjson, &blob, &["--gzip-every", "4"]);
    // Another file without an extension that is not Avro is skipped, not read.
    std::fs::write(tree.join("11"), "not avro").unwrap();
    let (code, v) = run_json(&[f.dir.join("hub").to_str().unwrap()]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["input"]["reports"], n);
    assert_eq!(v["input"]["files"], 1);
    assert_eq!(v["input"]["files_skipped"].as_array().unwrap().len(), 1);

    // Gzip-compressed Avro, as a file and on stdin.
    let gz = f.dir.join("blob.avro.gz");
    let mut enc = flate2::write::GzEncoder::new(
        std::fs::File::create(&gz).unwrap(),
        flate2::Compression::fast(),
    );
    enc.write_all(&std::fs::read(&blob).unwrap()).unwrap();
    enc.finish().unwrap();
    let s = summarize(&[Source::Path(gz.clone())], FleetOptions::default()).unwrap();
    assert_eq!(s.input.reports, n);
    assert_same_fleet(&s, &f.baseline, "gzip Avro");
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!(
            "exec \"$0\" fleet summarize - -o json < '{}'",
            blob.display()
        ))
        .arg(support::bin());
    let run = support::run_cmd(&mut cmd, &[], Duration::from_secs(120));
    assert_eq!(run.code, 0, "{}", run.stderr);
    let v: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(v["input"]["reports"], n);
}

#[test]
fn a_truncated_avro_file_keeps_every_good_block() {
    let f = fleet();
    let avro = f.dir.join("routing.avro");
    write_avro(
        &f.ndjson,
        &avro,
        &["--gzip-every", "5", "--block-records", "40"],
    );
    let bytes = std::fs::read(&avro).unwrap();
    let after = f.dir.join("after.avro");
    std::fs::copy(&avro, &after).unwrap();
    for cut in [bytes.len() * 3 / 5, bytes.len() - 1, 40] {
        let cut_path = f.dir.join("cut.avro");
        std::fs::write(&cut_path, &bytes[..cut]).unwrap();
        let good = readable_records(&cut_path);
        let s = summarize(
            &[Source::Path(cut_path.clone()), Source::Path(after.clone())],
            FleetOptions::default(),
        )
        .unwrap();
        let whole = summarize(&[Source::Path(after.clone())], FleetOptions::default()).unwrap();
        // Every message fastavro reads before the cut is read here too, then one
        // problem says where the file broke.
        assert_eq!(s.input.malformed, 1, "{cut}");
        let cut_problems: Vec<_> = s
            .input
            .problems
            .iter()
            .filter(|p| p.file.ends_with("cut.avro") && p.kind == "malformed")
            .collect();
        assert_eq!(cut_problems.len(), 1, "{cut}: {:?}", s.input.problems);
        assert!(
            cut_problems[0].message.contains("truncated"),
            "{cut}: {:?}",
            cut_problems[0]
        );
        assert_eq!(cut_problems[0].line, good + 1, "{cut}");
        assert_eq!(
            s.input.records - whole.input.records,
            good + 1,
            "{cut}: the messages before the cut and the cut itself"
        );
        // The next file is read whole.
        assert!(s.input.reports >= whole.input.reports);
    }
}

#[test]
fn json_lines_as_iot_hub_routing_writes_them() {
    let f = fleet();
    let n = f.baseline.input.reports;
    let mut out = String::new();
    let mut foreign = 0;
    for (i, line) in f.lines.iter().enumerate() {
        let r: Value = serde_json::from_str(line).unwrap();
        let device = r["target"]["device_id"]
            .as_str()
            .or(r["host"].as_str())
            .unwrap()
            .to_string();
        let mut env = json!({
            "EnqueuedTimeUtc": r["started_at"],
            "Properties": {"hubprobe": "report", "schema": "hubprobe.report/1"},
            "SystemProperties": {"connectionDeviceId": device, "contentType": "application/json",
                                 "contentEncoding": "utf-8", "enqueuedTime": r["started_at"]},
        });
        // A JSON body is written as JSON; a gzip one as base64 of its bytes.
        env["Body"] = if i % 3 == 0 {
            use base64::Engine;
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            enc.write_all(line.as_bytes()).unwrap();
            json!(base64::engine::general_purpose::STANDARD.encode(enc.finish().unwrap()))
        } else {
            r
        };
        out.push_str(&env.to_string());
        out.push('\n');
        if i % 11 == 0 {
            let other = json!({"EnqueuedTimeUtc": "2026-11-26T00:00:00Z", "Properties": {},
                "SystemProperties": {"connectionDeviceId": "thermo-1"}, "Body": {"t": 21.5}});
            out.push_str(&other.to_string());
            out.push('\n');
            foreign += 1;
        }
    }
    let path = f.dir.join("routed.json");
    std::fs::write(&path, out).unwrap();
    let s = summarize(&[Source::Path(path)], FleetOptions::default()).unwrap();
    assert_eq!(s.input.reports, n);
    assert_eq!((s.input.foreign, s.input.malformed), (foreign, 0));
    assert_same_fleet(&s, &f.baseline, "routed JSON lines");
}

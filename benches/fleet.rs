//! Benchmark: `hubprobe fleet summarize` over a large NDJSON file of synthetic
//! reports (default 1 000 000; 10 000 devices checking every 15 min, every failure
//! pattern injected), beside DuckDB (PyPI `duckdb`, in target/fleet-venv) and `jq`
//! computing the same per-endpoint, per-phase success shares on the same file, in
//! one run. Prints reports per second and peak RSS of each (wait4), and checks the
//! three agree. A tenth of the file is summarized too, to show that hubprobe's
//! memory does not grow with the number of reports. The files are read through once
//! before the runs, so every tool reads from the page cache.
//!
//!     cargo bench --bench fleet                     # 1 000 000 reports (~9 GB in target/fleet-bench)
//!     FLEET_BENCH_REPORTS=200000 cargo bench --bench fleet
//!
//! Under `cargo test --all-targets` it runs once on 2 000 reports, as a smoke test.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hubprobe::fleet::synth::{generate, SynthConfig};
use serde_json::Value;

struct Sample {
    wall: Duration,
    max_rss_kib: i64,
    stdout: String,
}

/// Runs a command, reaping it with wait4 to read its own peak RSS.
#[allow(clippy::zombie_processes)]
fn measure(cmd: &mut Command) -> Sample {
    let start = Instant::now();
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
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
    let stdout = reader.join().unwrap();
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) <= 1,
        "{cmd:?} failed ({status})"
    );
    Sample {
        wall,
        max_rss_kib: usage.ru_maxrss,
        stdout,
    }
}

/// Writes `reports` synthetic reports (large files are generated once and reused).
fn fleet_file(dir: &Path, reports: u64, devices: usize) -> PathBuf {
    let path = dir.join(format!("fleet-{reports}-{devices}.ndjson"));
    if path.exists() && reports >= 100_000 {
        return path;
    }
    let tmp = dir.join(format!(".fleet-{reports}-{devices}.tmp"));
    // Checks per device so that the total (plus one tune report each) is `reports`.
    let checks = (reports / devices as u64).saturating_sub(1).max(1);
    let cfg = SynthConfig {
        devices,
        sites: 50,
        duration: Duration::from_secs(checks * 900),
        seed: 42,
        ..SynthConfig::default()
    }
    .with_all_patterns();
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&tmp).unwrap());
    let t = Instant::now();
    let truth = generate(&cfg, |r| {
        serde_json::to_writer(&mut out, r).unwrap();
        out.write_all(b"\n").unwrap();
    });
    out.flush().unwrap();
    drop(out);
    std::fs::rename(&tmp, &path).unwrap();
    eprintln!(
        "generated {} reports in {:.1} s: {}",
        truth.lines,
        t.elapsed().as_secs_f64(),
        path.display()
    );
    path
}

/// The same reports as the Avro containers IoT Hub routing writes to storage (no
/// codec) and Event Hubs Capture writes (deflate), by an independent writer
/// (PyPI fastavro: scripts/fleet_avro.py); large files are written once and reused.
fn avro_file(python: &Path, ndjson: &Path, capture: bool, reports: u64) -> PathBuf {
    let path = ndjson.with_extension(if capture {
        "capture.avro"
    } else {
        "routing.avro"
    });
    if path.exists() && reports >= 100_000 {
        return path;
    }
    let tmp = path.with_extension("avro.tmp");
    let t = Instant::now();
    let mut cmd = Command::new(python);
    cmd.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/fleet_avro.py"))
        .arg(ndjson)
        .arg(&tmp)
        .args(["--block-records", "1000"]);
    if capture {
        cmd.args(["--capture", "--codec", "deflate"]);
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::rename(&tmp, &path).unwrap();
    eprintln!(
        "wrote {} in {:.1} s",
        path.display(),
        t.elapsed().as_secs_f64()
    );
    path
}

type Shares = BTreeMap<(String, String), (u64, u64)>;

fn hubprobe_shares(json: &str) -> (Shares, u64) {
    let v: Value = serde_json::from_str(json).expect("summary JSON");
    let mut m = Shares::new();
    for p in v["overall"]["phases"].as_array().unwrap() {
        m.insert(
            (
                p["endpoint"].as_str().unwrap().into(),
                p["phase"].as_str().unwrap().into(),
            ),
            (p["attempts"].as_u64().unwrap(), p["ok"].as_u64().unwrap()),
        );
    }
    (m, v["input"]["reports"].as_u64().unwrap())
}

fn duckdb_shares(json: &str) -> Shares {
    let v: Value = serde_json::from_str(json).expect("duckdb JSON");
    v.as_array()
        .unwrap()
        .iter()
        .filter(|r| r[2].as_u64().unwrap() > 0)
        .map(|r| {
            (
                (r[0].as_str().unwrap().into(), r[1].as_str().unwrap().into()),
                (r[2].as_u64().unwrap(), r[3].as_u64().unwrap()),
            )
        })
        .collect()
}

const JQ: &str = r#"reduce (inputs | .endpoints[] | .name as $e | .phases[] | select(.status != "skipped") | [$e, .phase, .status]) as $k ({}; .[$k[0] + "/" + $k[1]][$k[2]] += 1)"#;

fn jq_shares(json: &str) -> Shares {
    let v: Value = serde_json::from_str(json).expect("jq JSON");
    v.as_object()
        .unwrap()
        .iter()
        .map(|(k, c)| {
            let (e, p) = k.split_once('/').unwrap();
            let ok = c["ok"].as_u64().unwrap_or(0);
            let failed = c["failed"].as_u64().unwrap_or(0);
            ((e.to_string(), p.to_string()), (ok + failed, ok))
        })
        .collect()
}

fn row(name: &str, s: &Sample, reports: u64) {
    println!(
        "| {name} | {:.1} s | {:.0} | {:.1} MiB |",
        s.wall.as_secs_f64(),
        reports as f64 / s.wall.as_secs_f64(),
        s.max_rss_kib as f64 / 1024.0
    );
}

fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let reports: u64 = if benching {
        std::env::var("FLEET_BENCH_REPORTS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(1_000_000)
    } else {
        2_000
    };
    let devices = if benching { 10_000 } else { 100 };
    let dir = match std::env::var_os("FLEET_BENCH_DIR") {
        Some(d) => PathBuf::from(d),
        None => root.join("target/fleet-bench"),
    };
    std::fs::create_dir_all(&dir).unwrap();
    let big = fleet_file(&dir, reports, devices);
    let small = fleet_file(&dir, reports / 10, devices);
    let python = std::env::var_os("HUBPROBE_FLEET_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/fleet-venv/bin/python"));
    let routing = avro_file(&python, &big, false, reports);
    let capture = avro_file(&python, &big, true, reports);
    let size = std::fs::metadata(&big).unwrap().len();
    // Every tool reads the file from the page cache: read it through once first (a
    // cold first run would measure the disk, not the tool).
    let t = Instant::now();
    for f in [&big, &small, &routing, &capture] {
        let mut file = std::fs::File::open(f).unwrap();
        std::io::copy(&mut file, &mut std::io::sink()).unwrap();
    }
    eprintln!("page cache warmed in {:.1} s", t.elapsed().as_secs_f64());

    let hp = |file: &Path, threads: &str| {
        measure(
            Command::new(env!("CARGO_BIN_EXE_hubprobe"))
                .args(["fleet", "summarize", "-o", "json", "--threads", threads])
                .arg(file),
        )
    };
    let h2 = hp(&big, "2");
    let (shares, counted) = hubprobe_shares(&h2.stdout);
    let h1 = hp(&big, "1");
    let h_small = hp(&small, "2");
    let (_, counted_small) = hubprobe_shares(&h_small.stdout);
    let duck = measure(
        Command::new(&python)
            .arg(root.join("scripts/fleet_duckdb.py"))
            .arg(&big)
            .arg("2"),
    );
    let jq = measure(Command::new("jq").args(["-n", "-c", JQ]).arg(&big));
    let h_routing = hp(&routing, "2");
    let h_capture = hp(&capture, "2");
    for (name, s) in [("routing Avro", &h_routing), ("Capture Avro", &h_capture)] {
        let (avro_shares, n) = hubprobe_shares(&s.stdout);
        assert_eq!(n, counted, "{name}: not the same reports");
        assert_eq!(avro_shares, shares, "{name}: not the same shares");
    }

    assert_eq!(duckdb_shares(&duck.stdout), shares, "DuckDB disagrees");
    assert_eq!(jq_shares(&jq.stdout), shares, "jq disagrees");

    println!(
        "\nfleet summarize: {counted} reports, {:.2} GB of NDJSON, {devices} devices; success shares agree across the three\n",
        size as f64 / 1e9
    );
    println!("| tool | wall | reports/s | peak RSS |\n|---|---|---|---|");
    row("hubprobe fleet summarize (2 threads)", &h2, counted);
    row("hubprobe fleet summarize (1 thread)", &h1, counted);
    row(
        &format!("hubprobe, a tenth of the file ({counted_small} reports)"),
        &h_small,
        counted_small,
    );
    row(
        "DuckDB read_ndjson, success shares only (2 threads)",
        &duck,
        counted,
    );
    row("jq reduce, success shares only", &jq, counted);
    println!("\nThe same reports as Avro (written by fastavro):\n");
    println!("| input | size | wall | reports/s | peak RSS |\n|---|---|---|---|---|");
    for (name, file, s) in [
        ("NDJSON", &big, &h2),
        ("IoT Hub routing Avro, no codec", &routing, &h_routing),
        ("Event Hubs Capture Avro, deflate", &capture, &h_capture),
    ] {
        println!(
            "| {name} | {:.2} GB | {:.1} s | {:.0} | {:.1} MiB |",
            std::fs::metadata(file).unwrap().len() as f64 / 1e9,
            s.wall.as_secs_f64(),
            counted as f64 / s.wall.as_secs_f64(),
            s.max_rss_kib as f64 / 1024.0
        );
    }
}

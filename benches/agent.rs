//! Benchmark of `hubprobe agent` against the local lab (mosquitto + dnsmasq):
//!
//! 1. idle: the agent as deployed (5 min interval, canary on with a 240 s keep-alive,
//!    upload on) — RSS and CPU sampled from /proc over a window (10 min);
//! 2. cycle: peak RSS (wait4) of an agent doing back-to-back cycles;
//! 3. spool: reports/s written to the spool (atomic: temp file, fsync, rename, fsync);
//! 4. upload: reports/s the uploader delivers from a pre-filled spool (QoS 1, each
//!    PUBACK awaited and the delivery made durable before the next).
//!
//! Run:
//!
//!     cargo bench --bench agent                               # figures for the README
//!     HUBPROBE_BENCH_IDLE=60s cargo bench --bench agent       # shorter idle window
//!
//! Under `cargo test --all-targets` it runs small, as a smoke test of the benchmark.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{agent_lab, Dns, Mosquitto};
use hubprobe::agent::spool::{Retention, Spool};

struct Lab {
    broker: Mosquitto,
    dns: Dns,
    dir: tempfile::TempDir,
}

impl Lab {
    fn config(&self, name: &str, interval: &str, rate: u32) -> PathBuf {
        let d = self.dir.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        let cs = agent_lab::write_connection_string(&d);
        let text = format!(
            r#"{hub}[identity]
connection_string_file = "{cs}"
[schedule]
interval = "{interval}"
spread = "0s"
[spool]
dir = "{dir}/spool"
max_reports = 100000
max_bytes = "1GiB"
[ndjson]
path = "{dir}/reports.ndjson"
[prometheus]
textfile = "{dir}/hubprobe.prom"
[upload]
enabled = true
to = "topic"
topic = "bench/{{device_id}}"
rate = {rate}
"#,
            hub = agent_lab::hub_section(
                self.dns.addr(),
                self.broker.certs().ca_pem(),
                self.broker.port("tls_anon")
            ),
            cs = cs.display(),
            dir = d.display(),
        );
        let p = d.join("config.toml");
        std::fs::write(&p, text).unwrap();
        p
    }
}

fn agent_cmd(config: &Path) -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_hubprobe"));
    c.args(["agent", "--config"])
        .arg(config)
        .arg("--state-dir")
        .arg(config.parent().unwrap().join("state"))
        .env("RUST_LOG", "off")
        .env("HUBPROBE_NTP_SERVER", "none")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    c
}

/// (VmRSS KiB, VmHWM KiB) of a process.
fn rss(pid: u32) -> (u64, u64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let get = |k: &str| {
        s.lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (get("VmRSS:"), get("VmHWM:"))
}

/// User + system CPU time of a process, seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are 14 and 15.
    let rest = s.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz
}

fn parse_window() -> Option<Duration> {
    std::env::var("HUBPROBE_BENCH_IDLE")
        .ok()
        .and_then(|v| humantime::parse_duration(&v).ok())
}

fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let lab = Lab {
        broker: Mosquitto::start(&[]),
        dns: Dns::start(),
        dir: tempfile::tempdir().unwrap(),
    };

    // 1. Idle.
    let window = parse_window().unwrap_or(if benching {
        Duration::from_secs(600)
    } else {
        Duration::from_secs(3)
    });
    let cfg = lab.config("idle", "5m", 5);
    let mut child = agent_cmd(&cfg).spawn().expect("spawn agent");
    let pid = child.id();
    // Past start-up (first check after up to the spread, canary connect).
    std::thread::sleep(Duration::from_secs(2));
    let cpu0 = cpu_seconds(pid);
    let t0 = Instant::now();
    let (mut lo, mut hi) = (u64::MAX, 0u64);
    while t0.elapsed() < window {
        let (r, _) = rss(pid);
        lo = lo.min(r);
        hi = hi.max(r);
        std::thread::sleep(Duration::from_millis(500));
    }
    let cpu = cpu_seconds(pid) - cpu0;
    let wall = t0.elapsed().as_secs_f64();
    let (_, hwm) = rss(pid);
    let _ = child.kill();
    let _ = child.wait();
    println!(
        "idle   {:.0} s: RSS {:.1}–{:.1} MiB (peak {:.1} MiB), CPU {:.3} s = {:.4} % of one core",
        wall,
        lo as f64 / 1024.0,
        hi as f64 / 1024.0,
        hwm as f64 / 1024.0,
        cpu,
        cpu / wall * 100.0
    );

    // 2. Cycles back to back: peak RSS.
    let cycles = if benching { 50 } else { 3 };
    let cfg = lab.config("cycles", "100ms", 1000);
    let mut child = agent_cmd(&cfg)
        .args(["--cycles", &cycles.to_string()])
        .spawn()
        .expect("spawn agent");
    let pid = child.id();
    let t0 = Instant::now();
    let mut peak = 0;
    while child.try_wait().unwrap().is_none() {
        peak = peak.max(rss(pid).1);
        assert!(
            t0.elapsed() < Duration::from_secs(300),
            "cycles never ended"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    println!(
        "cycle  {cycles} back-to-back checks in {:.1} s: peak RSS {:.1} MiB",
        t0.elapsed().as_secs_f64(),
        peak as f64 / 1024.0
    );
    // A real report to copy.
    let spool_dir = cfg.parent().unwrap().join("spool");
    let sample = std::fs::read_dir(spool_dir.join("delivered"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .next()
        .expect("a delivered report");
    let sample: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(sample).unwrap()).unwrap();

    // 3. Spool writes.
    let n = if benching { 2000 } else { 50 };
    let cfg = lab.config("upload", "1h", 1000);
    let dir = cfg.parent().unwrap().join("spool");
    let mut spool = Spool::open(
        &dir,
        Retention {
            max_reports: 1_000_000,
            max_age: Duration::from_secs(86_400),
            max_bytes: 1 << 40,
        },
    )
    .unwrap();
    let t0 = Instant::now();
    let mut bytes = 0usize;
    for _ in 0..n {
        let mut r = sample.clone();
        let id = hubprobe::model::new_id();
        r["id"] = id.clone().into();
        let json = serde_json::to_vec(&r).unwrap();
        bytes += json.len();
        spool.write(&id, &json).unwrap();
        spool.prune(std::time::SystemTime::now()).unwrap();
    }
    let dt = t0.elapsed().as_secs_f64();
    println!(
        "spool  {n} reports of {:.1} KiB written (each fsynced) and pruned in {dt:.2} s: {:.0} reports/s",
        bytes as f64 / n as f64 / 1024.0,
        n as f64 / dt
    );

    // 4. Upload of the backlog (plus the one check the run makes).
    let t0 = Instant::now();
    let status = agent_cmd(&cfg)
        .args(["--cycles", "1", "--drain-timeout", "10m"])
        .status()
        .expect("run agent");
    let dt = t0.elapsed().as_secs_f64();
    assert!(status.success(), "{status}");
    let delivered = std::fs::read_dir(dir.join("delivered")).unwrap().count();
    let pending = std::fs::read_dir(&dir)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().is_file())
        .count();
    assert_eq!(pending, 0, "everything delivered");
    println!(
        "upload {delivered} reports delivered (QoS 1, PUBACK each, durable mark) in {dt:.2} s: {:.0} reports/s",
        delivered as f64 / dt
    );
}

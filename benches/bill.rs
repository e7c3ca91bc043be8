//! Benchmark: what the agent's default configuration costs a metered device a day,
//! measured at the socket over an accelerated hour, with compact wire reports and
//! with full ones.
//!
//! The lab hub has four endpoints (mosquitto for mqtt-tls and mqtt-ws, a Qpid
//! Proton CBS node for amqps, an in-process HTTPS peer), names resolved by dnsmasq,
//! a subscriber reading back what the agent publishes. The agent runs the default
//! configuration with its clock sixty times faster: a check every 5 s instead of
//! 5 min, the canary's keep-alive 4 s instead of 240 s, upload on. Twelve cycles of
//! it are an hour of the real configuration: 12 checks, 12 uploads, 15 keep-alive
//! rounds. Only the byte counts matter, and they do not depend on the clock.
//!
//! Every byte is counted twice, independently: by nftables counters on the lab's
//! ports (every IP packet each way: DNS, checks, canary, uploads), and by the agent
//! itself (its reports' `traffic` section). The hour is counted in the steady state,
//! from the arrival of one upload to the arrival of the twelfth after it; what
//! happens once a day (the canary's session set-up, the report with every chain in
//! full) is measured on its own and added once.
//!
//!     cargo bench --bench bill       # about 3 minutes; figures for the README
//!
//! Under `cargo test --all-targets` it runs three cycles of each, as a smoke test.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::subscriber::{Received, Subscriber};
use common::{hub_password, hub_username, Dns, Mosquitto, TlsThen, HUB_HOST};
use serde_json::Value;

/// Packets and bytes each way on the lab's ports, from nftables counters.
#[derive(Debug, Clone, Copy, Default)]
struct Seen {
    up_packets: u64,
    up_bytes: u64,
    down_packets: u64,
    down_bytes: u64,
    dns_bytes: u64,
}

impl std::ops::Sub for Seen {
    type Output = Seen;
    fn sub(self, o: Seen) -> Seen {
        Seen {
            up_packets: self.up_packets - o.up_packets,
            up_bytes: self.up_bytes - o.up_bytes,
            down_packets: self.down_packets - o.down_packets,
            down_bytes: self.down_bytes - o.down_bytes,
            dns_bytes: self.dns_bytes - o.dns_bytes,
        }
    }
}

impl Seen {
    /// IP bytes both ways.
    fn ip(&self) -> u64 {
        self.up_bytes + self.down_bytes
    }
    /// TCP payload both ways: each packet less its IPv4 (20) and TCP headers (20 and
    /// the 12 bytes of the timestamp option Linux puts on every segment; a SYN's
    /// options are 8 bytes longer, a few per connection). DNS is left out.
    fn tcp_payload(&self) -> u64 {
        (self.ip() - self.dns_bytes).saturating_sub((self.up_packets + self.down_packets) * 52)
    }
}

/// An nftables table counting the lab's traffic, deleted on drop.
struct Counters {
    table: String,
}

fn nft(args: &[&str]) -> String {
    let out = Command::new("nft")
        .args(args)
        .output()
        .expect("nft (nftables) is needed: the bench counts bytes with it");
    assert!(
        out.status.success(),
        "nft {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Counters {
    /// Counts TCP to and from `tcp` ports, UDP to and from `udp` (DNS), on output
    /// (loopback: every packet passes it once).
    fn start(tcp: &[u16], udp: u16) -> Counters {
        let table = format!("hubprobe_bill_{}", std::process::id());
        let ports = tcp
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let rules = format!(
            "table inet {table} {{\n chain out {{\n  type filter hook output priority 0; policy accept;\n  \
             tcp dport {{ {ports} }} counter comment \"up\"\n  \
             tcp sport {{ {ports} }} counter comment \"down\"\n  \
             udp dport {udp} counter comment \"dns\"\n  \
             udp sport {udp} counter comment \"dns\"\n }}\n}}\n"
        );
        let file = std::env::temp_dir().join(format!("{table}.nft"));
        std::fs::write(&file, rules).unwrap();
        nft(&["-f", file.to_str().unwrap()]);
        let _ = std::fs::remove_file(&file);
        Counters { table }
    }

    fn read(&self) -> Seen {
        let v: Value = serde_json::from_str(&nft(&["-j", "list", "table", "inet", &self.table]))
            .expect("nft -j JSON");
        let mut s = Seen::default();
        for item in v["nftables"].as_array().unwrap() {
            let rule = &item["rule"];
            let Some(comment) = rule["comment"].as_str() else {
                continue;
            };
            let counter = rule["expr"]
                .as_array()
                .unwrap()
                .iter()
                .find_map(|e| e.get("counter"))
                .expect("a counter");
            let (p, b) = (
                counter["packets"].as_u64().unwrap(),
                counter["bytes"].as_u64().unwrap(),
            );
            match comment {
                "up" => (s.up_packets, s.up_bytes) = (p, b),
                "down" => (s.down_packets, s.down_bytes) = (p, b),
                _ => {
                    s.dns_bytes += b;
                    // DNS packets are in the totals too (their headers are UDP's).
                    s.up_bytes += b;
                }
            }
        }
        s
    }
}

impl Drop for Counters {
    fn drop(&mut self) {
        let _ = Command::new("nft")
            .args(["delete", "table", "inet", &self.table])
            .status();
    }
}

struct Lab {
    broker: Mosquitto,
    dns: Dns,
    amqp: common::amqp::CbsPeer,
    https: common::FaultServer,
    dir: tempfile::TempDir,
}

/// The clock of the run: real durations divided by this.
const SPEEDUP: u64 = 60;

impl Lab {
    fn start() -> Lab {
        let broker = Mosquitto::start(&[(hub_username("dev1"), hub_password("dev1"))]);
        let certs = broker.certs().clone();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), hub_password("dev1")).unwrap();
        Lab {
            dns: Dns::start(),
            amqp: common::amqp::CbsPeer::start(common::amqp::CbsMode::Accept, Some(&certs)),
            https: common::tls_then(
                &certs,
                // A fresh Date each time (the agent reads the clock from it).
                TlsThen::HttpNow(
                    "HTTP/1.1 404 Not Found\r\nDate: {date}\r\nServer: lab\r\nContent-Length: 0\r\n\r\n".into(),
                ),
            ),
            broker,
            dir,
        }
    }

    fn tcp_ports(&self) -> Vec<u16> {
        vec![
            self.broker.port("tls"),
            self.broker.port("wss"),
            self.amqp.addr.port(),
            self.https.port(),
        ]
    }

    /// The default configuration (four endpoints, canary on, upload on, compact
    /// reports) with `interval` and `keepalive`; `upload` is appended to `[upload]`.
    fn config(&self, name: &str, interval: Duration, keepalive: Duration, upload: &str) -> PathBuf {
        let d = self.dir.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        let profile = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lab-hub.toml");
        let text = format!(
            r#"[hub]
host = "{HUB_HOST}"
profile = "{profile}"
endpoints = ["mqtt-tls", "mqtt-ws", "amqps", "https"]
ports = {{ mqtt-tls = {tls}, mqtt-ws = {wss}, amqps = {amqps}, https = {https} }}
dns_server = "{dns}"
trust = "none"
ca_file = "{ca}"
timeout = "3s"
keepalive = "{keepalive}s"
[identity]
sas_token_file = "{token}"
device_id = "dev1"
[schedule]
interval = "{interval}ms"
spread = "0s"
[spool]
dir = "{dir}/spool"
[prometheus]
textfile = "{dir}/hubprobe.prom"
[upload]
enabled = true
{upload}
"#,
            profile = profile.display(),
            tls = self.broker.port("tls"),
            wss = self.broker.port("wss"),
            amqps = self.amqp.addr.port(),
            https = self.https.port(),
            dns = self.dns.addr(),
            ca = self.broker.certs().ca_pem().display(),
            token = self.dir.path().join("token").display(),
            keepalive = keepalive.as_secs(),
            interval = interval.as_millis(),
            dir = d.display(),
        );
        let p = d.join("agent.toml");
        std::fs::write(&p, text).unwrap();
        p
    }
}

struct Agent(Child);

impl Agent {
    fn spawn(config: &Path) -> Agent {
        let dir = config.parent().unwrap();
        Agent(
            Command::new(env!("CARGO_BIN_EXE_hubprobe"))
                .args(["agent", "--config"])
                .arg(config)
                .arg("--state-dir")
                .arg(dir.join("state"))
                // No clock check against a public NTP server from the lab.
                .env("HUBPROBE_NTP_SERVER", "none")
                .env_remove("RUST_LOG")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.join("agent.log")).unwrap())
                .spawn()
                .expect("spawn hubprobe agent"),
        )
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.0.id() as libc::pid_t, libc::SIGTERM);
        }
        let end = Instant::now() + Duration::from_secs(20);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The agent's report carried by an upload (gunzipped when it says gzip).
fn report_of(m: &Received) -> Value {
    let mut body = m.payload.clone();
    if body.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&body[..]), &mut out)
            .expect("a gzip upload");
        body = out;
    }
    serde_json::from_slice(&body).expect("an upload is a JSON report")
}

/// What one run measured.
struct Run {
    /// nftables, steady state, over `cycles` cycles.
    hour: Seen,
    /// The agent's own counts over the same cycles (its reports' `period`s).
    agent_hour: [u64; 3],
    /// Payload bytes of the uploads in the window, and their number.
    upload_payloads: (u64, usize),
    /// The first upload's payload (every chain in full) and the median of the others.
    first_payload: usize,
    routine_payload: usize,
    /// Bytes until the second upload arrived (the canary's set-up, the first check,
    /// the first report in full), by nftables.
    start_up: Seen,
}

/// A report's `traffic.period` (compact reports keep it): checks, canary, uploads.
fn period(r: &Value) -> [u64; 3] {
    let t = &r["traffic"]["period"];
    let both =
        |p: &str| t[p]["sent"].as_u64().unwrap_or(0) + t[p]["received"].as_u64().unwrap_or(0);
    [both("checks"), both("canary"), both("uploads")]
}

fn run(
    lab: &Lab,
    name: &str,
    upload: &str,
    cycles: usize,
    interval: Duration,
    keepalive: Duration,
) -> Run {
    let cfg = lab.config(name, interval, keepalive, upload);
    let sub = Subscriber::start(
        lab.broker.addr("plain"),
        &format!("bill-{name}"),
        "devices/#",
    );
    let counters = Counters::start(&lab.tcp_ports(), lab.dns.addr().port());
    let zero = counters.read();
    let agent = Agent::spawn(&cfg);
    let limit = interval * (cycles as u32 + 4) + Duration::from_secs(60);
    // The window opens when upload 2 arrives and closes when upload 2 + cycles does.
    let open = sub.wait_for(2, limit);
    assert!(
        open.len() >= 2,
        "{name}: fewer than two uploads; see {}",
        cfg.parent().unwrap().join("agent.log").display()
    );
    let at_open = counters.read();
    let got = sub.wait_for(2 + cycles, limit);
    let at_close = counters.read();
    drop(agent);
    assert!(
        got.len() >= 2 + cycles,
        "{name}: {} uploads in {limit:?}",
        got.len()
    );
    // Each report's `period` runs from the previous report to it: those of the
    // reports made within the window.
    let mut agent_hour = [0u64; 3];
    for m in &got[2..2 + cycles] {
        for (sum, n) in agent_hour.iter_mut().zip(period(&report_of(m))) {
            *sum += n;
        }
    }
    if let Ok(dump) = std::env::var("HUBPROBE_BENCH_DUMP") {
        std::fs::write(format!("{dump}-{name}.json"), &got[2].payload).unwrap();
        std::fs::write(format!("{dump}-{name}-next.json"), &got[3].payload).unwrap();
    }
    let window = &got[2..2 + cycles];
    let mut routine: Vec<usize> = got[1..2 + cycles].iter().map(|m| m.payload.len()).collect();
    routine.sort();
    Run {
        hour: at_close - at_open,
        agent_hour,
        upload_payloads: (
            window
                .iter()
                .map(|m| (m.payload.len() + m.topic.len()) as u64)
                .sum(),
            window.len(),
        ),
        first_payload: got[0].payload.len(),
        routine_payload: routine[routine.len() / 2],
        start_up: at_open - zero,
    }
}

fn kb(b: f64) -> String {
    format!("{:.1} kB", b / 1000.0)
}

fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    // An hour of the default configuration (5 min, 240 s keep-alive) sixty times faster;
    // the smoke test runs three cycles at 1 s.
    let (cycles, interval, keepalive) = if benching {
        (
            12,
            Duration::from_secs(300 / SPEEDUP),
            Duration::from_secs(240 / SPEEDUP),
        )
    } else {
        (3, Duration::from_secs(1), Duration::from_secs(1))
    };
    let lab = Lab::start();
    let compact = run(&lab, "compact", "", cycles, interval, keepalive);
    let full = run(&lab, "full", "compact = false", cycles, interval, keepalive);
    let gzip = run(
        &lab,
        "gzip",
        "encoding = \"gzip\"",
        cycles,
        interval,
        keepalive,
    );

    // The estimate `agent --check-config` prints for the real configuration, from the
    // compact run's spool (its measured check).
    let real = lab.config(
        "compact",
        Duration::from_secs(300),
        Duration::from_secs(240),
        "",
    );
    let out = Command::new(env!("CARGO_BIN_EXE_hubprobe"))
        .args(["agent", "--check-config", "--config"])
        .arg(&real)
        .arg("--state-dir")
        .arg(real.parent().unwrap().join("state"))
        .env("HUBPROBE_NTP_SERVER", "none")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let estimate = String::from_utf8_lossy(&out.stdout).into_owned();

    // Per day: 24 steady hours, plus what happens once (the canary's session set-up
    // and the first report in full are in `start_up`; the steady hours already hold
    // routine reports, so the full report's extra is added once).
    let scale = 288.0 / cycles as f64; // cycles in a day / cycles measured
    if !benching {
        println!("\n(smoke test: three cycles at 1 s; the per-day figures mean nothing here)");
    }
    println!("\nagent traffic, default configuration at {SPEEDUP}x (4 endpoints, check every {interval:?}, keep-alive {keepalive:?}, upload on), {cycles} cycles in the steady state:\n");
    println!("| reports on the wire | upload payload (first, routine) | IP bytes, {cycles} cycles (of which DNS) | TCP payload | the agent's count (checks / canary / uploads) | per day, IP bytes | per day, TCP payload |");
    println!("|---|---|---|---|---|---|---|");
    for (name, r) in [
        ("compact", &compact),
        ("compact + gzip", &gzip),
        ("full", &full),
    ] {
        let extra = (r.first_payload.saturating_sub(r.routine_payload)) as f64;
        let day_ip = r.hour.ip() as f64 * scale + extra;
        let day_payload = r.hour.tcp_payload() as f64 * scale + extra;
        println!(
            "| {name} | {} B, {} B | {} ({}) | {} | {} / {} / {} | {} | {} |",
            r.first_payload,
            r.routine_payload,
            kb(r.hour.ip() as f64),
            kb(r.hour.dns_bytes as f64),
            kb(r.hour.tcp_payload() as f64),
            kb(r.agent_hour[0] as f64),
            kb(r.agent_hour[1] as f64),
            kb(r.agent_hour[2] as f64),
            kb(day_ip),
            kb(day_payload),
        );
        eprintln!(
            "{name}: start-up until the second upload {} IP bytes; uploads in the window {} B of payload and topic in {} messages",
            r.start_up.ip(),
            r.upload_payloads.0,
            r.upload_payloads.1
        );
        // The agent's count and the counters' agree within framing: what the agent
        // counts is TCP payload (TLS records included), so at most what the
        // counters saw, and not much less.
        let counted: u64 = r.agent_hour.iter().sum();
        assert!(
            counted <= r.hour.tcp_payload() + 2_000 && counted * 10 >= r.hour.tcp_payload() * 8,
            "{name}: the agent counted {counted} B, nftables saw {} B of TCP payload",
            r.hour.tcp_payload()
        );
    }
    println!("\n`agent --check-config` for the real configuration (5 min, 240 s), from the compact run's last check:\n\n{estimate}");
}

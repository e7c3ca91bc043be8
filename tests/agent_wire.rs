//! Compact wire reports and the bill, against real peers: mosquitto as the hub
//! (MQTT over TLS and over WebSocket/TLS, persistent, so a subscriber misses
//! nothing across a broker restart), dnsmasq for its name, a subscriber reading
//! back what the agent publishes, and counting TCP relays in front of the broker
//! that see every byte the agent's sockets carry.
//!
//! - the first report carries the chains in full, the next ones references; a new
//!   certificate on the broker brings the full chain back; a restarted agent does
//!   not resend a chain it delivered (its state file);
//! - `fleet summarize` over the subscriber's messages equals it over the spool;
//! - the bill: the check's bytes equal what the relay carried, the agent's totals
//!   are bounded by what the relays saw, the uploads' bytes by the payloads.

mod common;
mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use common::subscriber::{Received, Subscriber};
use common::{hub_password, hub_username, Dns, Mosquitto, HUB_HOST};
use serde_json::Value;
use support::{assert_valid, run_with_env};

/// A TCP relay to `target` that counts the bytes each way (over all connections).
struct Relay {
    addr: SocketAddr,
    up: Arc<AtomicU64>,
    down: Arc<AtomicU64>,
    open: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Relay {
    fn start(target: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the relay");
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(AtomicU64::new(0));
        let down = Arc::new(AtomicU64::new(0));
        let open = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (u, d, o, s) = (up.clone(), down.clone(), open.clone(), stop.clone());
        std::thread::spawn(move || {
            // Bounded: at most 10 000 connections (a test makes a few dozen).
            for conn in listener.incoming().take(10_000) {
                if s.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = conn else { continue };
                let Ok(server) = TcpStream::connect_timeout(&target, Duration::from_secs(2)) else {
                    continue; // the broker is away: the client sees a close
                };
                o.fetch_add(2, Ordering::SeqCst);
                for (from, to, n) in [
                    (
                        client.try_clone().unwrap(),
                        server.try_clone().unwrap(),
                        u.clone(),
                    ),
                    (server, client, d.clone()),
                ] {
                    let o = o.clone();
                    std::thread::spawn(move || {
                        pump(from, to, &n);
                        o.fetch_sub(1, Ordering::SeqCst);
                    });
                }
            }
        });
        Relay {
            addr,
            up,
            down,
            open,
            stop,
        }
    }

    fn port(&self) -> u16 {
        self.addr.port()
    }

    /// (client → broker, broker → client) bytes so far.
    fn counts(&self) -> (u64, u64) {
        (
            self.up.load(Ordering::SeqCst),
            self.down.load(Ordering::SeqCst),
        )
    }

    /// Waits (bounded) until no relayed connection is open.
    fn wait_idle(&self, limit: Duration) {
        let end = Instant::now() + limit;
        while self.open.load(Ordering::SeqCst) > 0 {
            assert!(Instant::now() < end, "relayed connections stayed open");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, n: &AtomicU64) {
    let _ = from.set_read_timeout(Some(Duration::from_secs(120)));
    let mut buf = [0u8; 16384];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(k) => {
                n.fetch_add(k as u64, Ordering::SeqCst);
                if to.write_all(&buf[..k]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}

struct Lab {
    broker: Mosquitto,
    dns: Dns,
    tls: Relay,
    wss: Relay,
    dir: tempfile::TempDir,
}

impl Lab {
    fn start() -> Lab {
        let broker = Mosquitto::start_persistent(&[(hub_username("dev1"), hub_password("dev1"))]);
        let dir = tempfile::tempdir().unwrap();
        // A SAS-token-shaped password the broker's password file holds.
        std::fs::write(dir.path().join("token"), hub_password("dev1")).unwrap();
        Lab {
            tls: Relay::start(broker.addr("tls")),
            wss: Relay::start(broker.addr("wss")),
            broker,
            dns: Dns::start(),
            dir,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Two endpoints (mqtt-tls, mqtt-ws) through the relays, checks every second,
    /// uploads to the hub topic; `upload` is appended to `[upload]`.
    fn config(&self, upload: &str) -> PathBuf {
        let profile = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lab-hub.toml");
        let text = format!(
            r#"[hub]
host = "{HUB_HOST}"
profile = "{profile}"
endpoints = ["mqtt-tls", "mqtt-ws"]
ports = {{ mqtt-tls = {tls}, mqtt-ws = {wss} }}
dns_server = "{dns}"
trust = "none"
ca_file = "{ca}"
timeout = "3s"
[identity]
sas_token_file = "{token}"
device_id = "dev1"
[schedule]
interval = "1s"
spread = "0s"
deadline = "10s"
[canary]
endpoint = "mqtt-tls"
ping_timeout = "3s"
reconnect_min = "200ms"
reconnect_max = "1s"
[spool]
dir = "{spool}"
[prometheus]
textfile = "{prom}"
[upload]
enabled = true
rate = 100
{upload}
"#,
            profile = profile.display(),
            tls = self.tls.port(),
            wss = self.wss.port(),
            dns = self.dns.addr(),
            ca = self.broker.certs().ca_pem().display(),
            token = self.path("token").display(),
            spool = self.path("spool").display(),
            prom = self.path("hubprobe.prom").display(),
        );
        let p = self.path("config.toml");
        std::fs::write(&p, text).unwrap();
        p
    }

    /// The agent with state directory `state` (each test its own: the wire state
    /// is what a test looks at).
    fn spawn_agent(&self, config: &Path, state: &str) -> AgentChild {
        AgentChild(
            Command::new(support::bin())
                .args(["agent", "--config"])
                .arg(config)
                .arg("--state-dir")
                .arg(self.path(state))
                // No clock check against a public NTP server from the lab.
                .env("HUBPROBE_NTP_SERVER", "none")
                .env_remove("IOTHUB_DEVICE_CONNECTION_STRING")
                .env_remove("RUST_LOG")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(self.path("agent.log"))
                        .unwrap(),
                )
                .spawn()
                .expect("spawn hubprobe agent"),
        )
    }

    /// Gives the broker a new server certificate (same CA, new key) and restarts it.
    fn new_server_certificate(&mut self) {
        let mut params = rcgen::CertificateParams::new(vec![
            HUB_HOST.to_string(),
            "localhost".to_string(),
            "127.0.0.1".to_string(),
        ])
        .unwrap();
        params.is_ca = rcgen::IsCa::ExplicitNoCa;
        let fresh = self.broker.certs().issue("server-renewed", params);
        let server = self.broker.certs().server.clone();
        std::fs::copy(&fresh.cert_pem, &server.cert_pem).unwrap();
        std::fs::copy(&fresh.key_pem, &server.key_pem).unwrap();
        self.broker.stop();
        self.broker.start_again();
    }
}

/// The agent's process, killed when dropped.
struct AgentChild(Child);

impl AgentChild {
    /// SIGTERM and a bounded wait: the exit code.
    fn stop(&mut self) -> i32 {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.0.id() as libc::pid_t, libc::SIGTERM);
        }
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(s) = self.0.try_wait().unwrap() {
                return s.code().unwrap_or(-1);
            }
            assert!(Instant::now() < end, "the agent did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for AgentChild {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn wait_until(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The TLS phase's evidence of endpoint `name`.
fn tls<'a>(report: &'a Value, name: &str) -> &'a Value {
    &support::phase(report, name, "tls")["evidence"]
}

/// (chain length on the wire, chain_ref.sha256) of endpoint `name`'s TLS phase
/// (`(0, "")` when its evidence went by reference).
fn chain_of(report: &Value, name: &str) -> (usize, String) {
    let t = tls(report, name);
    (
        t["chain"].as_array().map(Vec::len).unwrap_or(0),
        t["chain_ref"]["sha256"].as_str().unwrap_or("").to_string(),
    )
}

/// Whether endpoint `name` of `report` goes by reference to the evidence it had
/// in `full` (the report that delivered it in full): no TLS evidence, the same
/// `evidence_ref`.
fn refers_to(report: &Value, full: &Value, name: &str) -> bool {
    let r = support::endpoint(report, name)["evidence_ref"].as_str();
    tls(report, name).is_null()
        && r.is_some()
        && r == support::endpoint(full, name)["evidence_ref"].as_str()
}

/// The first check report with an mqtt-tls endpoint from message `from` on
/// (`full` names what it should refer to, for the message on a timeout).
fn next_referring(sub: &Subscriber, from: usize, full: &Value, limit: Duration) -> (usize, Value) {
    let end = Instant::now() + limit;
    loop {
        let got = sub.received();
        for (i, m) in got.iter().enumerate().skip(from) {
            let r = parsed(m);
            let has_tls = r["endpoints"]
                .as_array()
                .is_some_and(|e| e.iter().any(|e| e["name"] == "mqtt-tls"));
            if r["kind"] == "check" && has_tls {
                return (i, r);
            }
        }
        assert!(
            Instant::now() < end,
            "no check report after message {from} (expected one referring to {})",
            support::endpoint(full, "mqtt-tls")["evidence_ref"]
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn parsed(m: &Received) -> Value {
    let r: Value = serde_json::from_slice(&m.payload).unwrap_or_else(|e| {
        panic!(
            "a published report is not JSON ({e}): {}",
            String::from_utf8_lossy(&m.payload)
        )
    });
    assert_valid(&r);
    r
}

/// Reports in the spool (pending and delivered), by file name (write order).
fn spooled(dir: &Path) -> Vec<(String, Value)> {
    for _ in 0..20 {
        let mut v = Vec::new();
        let mut moved = false;
        for sub in [dir.to_path_buf(), dir.join("delivered")] {
            let Ok(rd) = std::fs::read_dir(&sub) else {
                continue;
            };
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if !name.ends_with(".json") || name.starts_with('.') {
                    continue;
                }
                match std::fs::read_to_string(e.path()) {
                    Ok(t) => v.push((name, serde_json::from_str(&t).unwrap())),
                    Err(_) => moved = true,
                }
            }
        }
        if !moved {
            v.sort_by(|a, b| a.0.cmp(&b.0));
            return v;
        }
    }
    panic!("the spool kept changing under the listing");
}

/// The first message after index `from` that is a check report with a TLS chain
/// for mqtt-tls (a report made while the broker was away has none).
fn next_with_chain(sub: &Subscriber, from: usize, limit: Duration) -> (usize, Value) {
    let end = Instant::now() + limit;
    loop {
        let got = sub.received();
        for (i, m) in got.iter().enumerate().skip(from) {
            let r = parsed(m);
            if !chain_of(&r, "mqtt-tls").1.is_empty() {
                return (i, r);
            }
        }
        assert!(
            Instant::now() < end,
            "no report with a chain after message {from}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn summarize(file: &Path) -> Value {
    let out = run_with_env(
        &["fleet", "summarize", file.to_str().unwrap(), "-o", "json"],
        &[],
        Duration::from_secs(30),
    );
    assert_eq!(out.code, 0, "{}", out.all_output());
    let mut s: Value = serde_json::from_str(&out.stdout).unwrap();
    // What the input was (file names, byte counts) differs; what it says must not.
    let reports = s["input"]["reports"].clone();
    s["input"] = serde_json::json!({ "reports": reports });
    s
}

fn sum_traffic(t: &Value, dir: &str) -> u64 {
    ["checks", "canary", "uploads"]
        .iter()
        .map(|p| t["since_start"][p][dir].as_u64().unwrap())
        .sum()
}

/// One lab for the file (the broker restarts in it).
fn lab() -> &'static std::sync::Mutex<Lab> {
    static LAB: OnceLock<std::sync::Mutex<Lab>> = OnceLock::new();
    LAB.get_or_init(|| std::sync::Mutex::new(Lab::start()))
}

#[test]
fn chains_go_in_full_once_then_as_references_and_come_back_when_they_change() {
    let mut lab = lab().lock().unwrap_or_else(|p| p.into_inner());
    let sub = Subscriber::start(lab.broker.addr("plain"), "reader-wire", "devices/#");
    let cfg = lab.config("");
    let mut agent = lab.spawn_agent(&cfg, "state-chains");

    // The first report: the chain in full (mqtt-tls), and the same chain on
    // mqtt-ws by reference (one server certificate behind both listeners).
    let (first_i, first) = next_with_chain(&sub, 0, Duration::from_secs(30));
    let (n, sha) = chain_of(&first, "mqtt-tls");
    assert!(n >= 1, "the first report must carry the chain: {first:#}");
    assert_eq!(
        tls(&first, "mqtt-tls")["chain_ref"]["sha256"]
            .as_str()
            .map(str::len),
        Some(64)
    );
    assert_eq!(chain_of(&first, "mqtt-ws"), (0, sha.clone()));
    let r = &tls(&first, "mqtt-tls")["chain_ref"];
    assert_eq!(
        r["leaf_not_after"],
        tls(&first, "mqtt-tls")["chain"][0]["not_after"]
    );
    // Trust anchor and expiry stay beside a reference: fleet tooling reads those.
    assert!(tls(&first, "mqtt-ws")["trust_anchor"]["name"].is_string());
    assert!(tls(&first, "mqtt-ws")["leaf_days_left"].is_number());

    // The next ones: references only, and much smaller.
    let got = sub.wait_for(first_i + 3, Duration::from_secs(30));
    assert!(got.len() >= first_i + 3, "too few uploads: {}", got.len());
    let ws_ref = support::endpoint(&first, "mqtt-ws")["evidence_ref"].clone();
    assert!(ws_ref.is_string(), "{first:#}");
    for m in &got[first_i + 1..first_i + 3] {
        let r = parsed(m);
        assert!(refers_to(&r, &first, "mqtt-tls"), "{r:#}");
        // Unchanged evidence goes by its reference; what fleet tooling reads of
        // it stays beside: each trust anchor once per report (mqtt-ws shares
        // mqtt-tls's).
        assert!(tls(&r, "mqtt-ws").is_null(), "{r:#}");
        assert!(tls(&r, "mqtt-tls").is_null(), "{r:#}");
        assert_eq!(support::endpoint(&r, "mqtt-ws")["evidence_ref"], ws_ref);
        let tls_ep = support::endpoint(&r, "mqtt-tls");
        assert_eq!(
            tls_ep["trust_anchors"],
            serde_json::json!([tls(&first, "mqtt-tls")["trust_anchor"]["name"]]),
            "{r:#}"
        );
        assert!(support::endpoint(&r, "mqtt-ws")
            .get("trust_anchors")
            .is_none());
        assert!(
            m.payload.len() < got[first_i].payload.len(),
            "a routine report ({} B) is not smaller than the first ({} B)",
            m.payload.len(),
            got[first_i].payload.len()
        );
        // The spool keeps the full report.
        let spool = spooled(&lab.path("spool"));
        let full = spool
            .iter()
            .find(|(_, s)| s["id"] == r["id"])
            .map(|(_, s)| s.clone())
            .expect("the uploaded report is in the spool");
        assert!(!tls(&full, "mqtt-ws")["chain"]
            .as_array()
            .unwrap()
            .is_empty());
        assert!(full.get("traffic").is_some());
        // The canary goes by reference only when it has nothing new (no
        // disconnect records); its reference is always there.
        if let Some(c) = full.get("canary") {
            assert!(r["canary_ref"].is_string(), "{r:#}");
            if r.get("canary").is_none() {
                assert_eq!(c["recent"], serde_json::json!([]), "{full:#}");
            }
        }
        // Every phase status and duration the fleet tools read is on the wire
        // as spooled (compared as text: the same figure printed the same way).
        for name in ["mqtt-tls", "mqtt-ws"] {
            let keep = |r: &Value| -> String {
                let phases = support::endpoint(r, name)["phases"].as_array().unwrap();
                let v: Vec<Value> = phases
                    .iter()
                    .map(|p| {
                        serde_json::json!([
                            p["phase"],
                            p["status"],
                            p["duration_ms"],
                            p.get("class")
                        ])
                    })
                    .collect();
                Value::Array(v).to_string()
            };
            assert_eq!(keep(&r), keep(&full), "{name}");
        }
        if std::env::var_os("HUBPROBE_SHOW_WIRE").is_some() {
            eprintln!("{}", String::from_utf8_lossy(&m.payload));
        }
        eprintln!(
            "routine report on the wire: {} B (spooled in full: {} B)",
            m.payload.len(),
            serde_json::to_vec(&full).unwrap().len()
        );
    }

    // A new certificate on the broker: the next report with a chain carries it in full.
    lab.new_server_certificate();
    let seen = sub.received().len();
    let (i, renewed) = next_with_chain(&sub, seen, Duration::from_secs(40));
    let (n, sha2) = chain_of(&renewed, "mqtt-tls");
    assert_ne!(sha2, sha, "the chain changed");
    assert!(n >= 1, "a changed chain must go in full: {renewed:#}");
    let (_, after) = next_referring(&sub, i + 1, &renewed, Duration::from_secs(30));
    assert!(refers_to(&after, &renewed, "mqtt-tls"), "{after:#}");

    // A restart keeps what was delivered (the state file): no chain sent again.
    assert_eq!(agent.stop(), 0);
    let state: Value = serde_json::from_slice(
        &std::fs::read(lab.path("state-chains").join("wire-state.json"))
            .expect("the wire state file"),
    )
    .unwrap();
    assert!(
        state["chains"].as_object().unwrap().contains_key(&sha2),
        "{state:#}"
    );
    let seen = sub.received().len();
    let mut agent = lab.spawn_agent(&cfg, "state-chains");
    let (_, restarted) = next_referring(&sub, seen, &renewed, Duration::from_secs(30));
    assert!(refers_to(&restarted, &renewed, "mqtt-tls"), "{restarted:#}");
    assert!(tls(&restarted, "mqtt-ws").is_null(), "{restarted:#}");
    // One more spooled report after it (so its upload is in a report's bill).
    let spooled_before = spooled(&lab.path("spool")).len();
    wait_until(Duration::from_secs(20), "one more report", || {
        spooled(&lab.path("spool")).len() > spooled_before + 1
    });
    assert_eq!(agent.stop(), 0);

    // fleet summarize over what the hub got equals it over the full reports.
    std::thread::sleep(Duration::from_millis(500));
    let got = sub.received();
    let ids: std::collections::BTreeSet<String> = got
        .iter()
        .map(|m| parsed(m)["id"].as_str().unwrap().to_string())
        .collect();
    let wire_file = lab.path("wire.ndjson");
    let mut w = std::fs::File::create(&wire_file).unwrap();
    for m in &got {
        w.write_all(&m.payload).unwrap();
        w.write_all(b"\n").unwrap();
    }
    let spool_file = lab.path("spool.ndjson");
    let mut s = std::fs::File::create(&spool_file).unwrap();
    let mut matched = 0;
    for (_, r) in spooled(&lab.path("spool")) {
        if ids.contains(r["id"].as_str().unwrap()) {
            s.write_all(serde_json::to_string(&r).unwrap().as_bytes())
                .unwrap();
            s.write_all(b"\n").unwrap();
            matched += 1;
        }
    }
    assert_eq!(matched, ids.len(), "every uploaded report is in the spool");
    let (a, b) = (summarize(&wire_file), summarize(&spool_file));
    assert_eq!(a, b, "fleet summarize differs between wire and spool");
    assert_eq!(a["input"]["reports"], ids.len() as u64);
}

#[test]
fn the_bill_matches_what_the_sockets_carried() {
    let lab = lab().lock().unwrap_or_else(|p| p.into_inner());
    let cfg = lab.config("");

    // One check in this process, in a tally of its own: exactly what the relays
    // carried up; down, the relay may also carry a TLS close the client no longer
    // read (a few dozen bytes per connection).
    let plan = hubprobe::agent::config::AgentConfig::load(&cfg)
        .unwrap()
        .plan(&cfg, hubprobe::config::EnvCredentials::default())
        .unwrap();
    lab.tls.wait_idle(Duration::from_secs(20));
    lab.wss.wait_idle(Duration::from_secs(20));
    let before = (lab.tls.counts(), lab.wss.counts());
    let tally = hubprobe::net::meter::Tally::shared();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let report = runtime.block_on(hubprobe::net::meter::scope(
        tally.clone(),
        hubprobe::check::run(&plan),
    ));
    assert_eq!(
        report.verdict,
        hubprobe::model::Verdict::Ok,
        "{}",
        serde_json::to_string_pretty(&report).unwrap()
    );
    lab.tls.wait_idle(Duration::from_secs(20));
    lab.wss.wait_idle(Duration::from_secs(20));
    let after = (lab.tls.counts(), lab.wss.counts());
    let up = (after.0 .0 - before.0 .0) + (after.1 .0 - before.1 .0);
    let down = (after.0 .1 - before.0 .1) + (after.1 .1 - before.1 .1);
    let counted = tally.read();
    eprintln!("one check: counted {counted:?}, relays saw up {up} down {down}");
    assert!(counted.sent > 500 && counted.received > 500, "{counted:?}");
    assert_eq!(counted.sent, up, "bytes sent vs what the relays carried up");
    assert!(
        counted.received <= down && down <= counted.received + 2 * 64,
        "bytes received {} vs what the relays carried down {down}",
        counted.received
    );

    // The agent: what its last report says it sent and received since the start
    // is at most what the relays saw meanwhile (the report is made before the
    // agent stops); the uploads' bytes are the payloads the subscriber got, plus
    // framing per message.
    let sub = Subscriber::start(lab.broker.addr("plain"), "reader-bill", "devices/#");
    lab.tls.wait_idle(Duration::from_secs(20));
    lab.wss.wait_idle(Duration::from_secs(20));
    let before = (lab.tls.counts(), lab.wss.counts());
    let spooled_before = spooled(&lab.path("spool")).len();
    let mut agent = lab.spawn_agent(&cfg, "state-bill");
    let got = sub.wait_for(3, Duration::from_secs(30));
    assert!(got.len() >= 3, "too few uploads");
    let now = spooled(&lab.path("spool")).len();
    wait_until(Duration::from_secs(20), "a report after 3 uploads", || {
        spooled(&lab.path("spool")).len() > now
    });
    let spool = spooled(&lab.path("spool"));
    let last = spool.last().unwrap().1.clone();
    assert_eq!(agent.stop(), 0);
    lab.tls.wait_idle(Duration::from_secs(20));
    lab.wss.wait_idle(Duration::from_secs(20));
    let after = (lab.tls.counts(), lab.wss.counts());
    let up = (after.0 .0 - before.0 .0) + (after.1 .0 - before.1 .0);
    let down = (after.0 .1 - before.0 .1) + (after.1 .1 - before.1 .1);
    let t = &last["traffic"];
    eprintln!("agent: last report {t}, relays saw up {up} down {down}");
    assert!(spool.len() > spooled_before);
    let (sent, received) = (sum_traffic(t, "sent"), sum_traffic(t, "received"));
    assert!(sent > 0 && sent <= up, "sent {sent} vs relays {up}");
    assert!(
        received > 0 && received <= down,
        "received {received} vs relays {down}"
    );
    assert!(t["since_start"]["canary"]["sent"].as_u64().unwrap() > 0);
    // Uploads: k messages delivered before the report, k ≥ the 3 received before
    // it was made; each PUBLISH is its payload, topic and at most 120 bytes of
    // MQTT and TLS framing.
    let uploads = t["since_start"]["uploads"]["sent"].as_u64().unwrap();
    let all = sub.received();
    let fits = (3..=all.len()).any(|k| {
        let body: u64 = all[..k]
            .iter()
            .map(|m| (m.payload.len() + m.topic.len()) as u64)
            .sum();
        body <= uploads && uploads <= body + 120 * k as u64
    });
    assert!(
        fits,
        "uploads sent {uploads} B fit no prefix of the {} payloads received",
        all.len()
    );
    // The same figures as Prometheus counters.
    let prom = std::fs::read_to_string(lab.path("hubprobe.prom")).unwrap();
    assert!(
        prom.contains("hubprobe_agent_traffic_bytes_total{purpose=\"uploads\",direction=\"sent\"}"),
        "{prom}"
    );
}

#[test]
fn check_config_prints_the_cost_per_day() {
    let lab = lab().lock().unwrap_or_else(|p| p.into_inner());
    let cfg = lab.config("encoding = \"gzip\"");
    let out = run_with_env(
        &[
            "agent",
            "--config",
            cfg.to_str().unwrap(),
            "--state-dir",
            lab.path("state-cc").to_str().unwrap(),
            "--check-config",
        ],
        &[],
        Duration::from_secs(30),
    );
    assert_eq!(out.code, 0, "{}", out.all_output());
    for line in ["checks", "keep-alive pings", "uploads", "total"] {
        assert!(out.stdout.contains(line), "{line}: {}", out.stdout);
    }
    // 86 400 checks a day at a 1 s interval.
    assert!(out.stdout.contains("86400 a day"), "{}", out.stdout);
    // A bad encoding is one clear error naming the key.
    let bad = lab.config("encoding = \"brotli\"");
    let out = run_with_env(
        &["agent", "--config", bad.to_str().unwrap(), "--check-config"],
        &[],
        Duration::from_secs(30),
    );
    assert_eq!(out.code, 3, "{}", out.all_output());
    assert!(
        out.all_output().contains("encoding"),
        "{}",
        out.all_output()
    );
}

#[test]
fn gzip_uploads_say_so_and_fleet_reads_them() {
    let lab = lab().lock().unwrap_or_else(|p| p.into_inner());
    let sub = Subscriber::start(lab.broker.addr("plain"), "reader-gzip", "devices/#");
    let cfg = lab.config("encoding = \"gzip\"");
    let mut agent = lab.spawn_agent(&cfg, "state-gzip");
    let got = sub.wait_for(2, Duration::from_secs(30));
    assert!(got.len() >= 2);
    assert_eq!(agent.stop(), 0);
    let file = lab.path("gzip.ndjson");
    let mut ids = std::collections::BTreeSet::new();
    for m in &got {
        assert!(m.topic.contains("$.ce=gzip"), "{}", m.topic);
        assert_eq!(&m.payload[..2], &[0x1f, 0x8b], "a gzip body");
        let mut json = Vec::new();
        flate2::read::GzDecoder::new(&m.payload[..])
            .read_to_end(&mut json)
            .unwrap();
        let r: Value = serde_json::from_slice(&json).unwrap();
        assert_valid(&r);
        ids.insert(r["id"].as_str().unwrap().to_string());
        eprintln!(
            "gzip body {} B for {} B of JSON",
            m.payload.len(),
            json.len()
        );
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&file)
            .unwrap();
        f.write_all(&json).unwrap();
        f.write_all(b"\n").unwrap();
    }
    let s = summarize(&file);
    assert_eq!(s["input"]["reports"], ids.len() as u64);
}

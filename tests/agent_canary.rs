//! The agent's canary session: every way a session ends, caused for real and
//! classified, and the diagnosis over the history — token renewal (404104 cause 1),
//! an idle-dropping NAT (cause 2, through the namespace NAT) and outages (cause 2).
//! The history survives an agent restart.

mod common;
mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{agent_lab, Dns, Mosquitto, Nat, TlsThen, HUB_HOST};
use hubprobe::auth::sas::{generate_sas_token, resource_uri};
use hubprobe::auth::Secret;
use serde_json::Value;
use support::assert_valid;

const DEVICE_KEY: &str = agent_lab::LAB_DEVICE_KEY;

/// An agent configuration for the lab hub name on `port`, canary on, no upload.
fn lab_config(dir: &Path, dns: &Dns, ca: &Path, port: u16, hub: &str, identity: &str) -> PathBuf {
    let text = format!(
        r#"{hub_section}{hub}
[identity]
{identity}
[schedule]
interval = "1s"
spread = "0s"
deadline = "8s"
[canary]
ping_timeout = "1s"
reconnect_min = "200ms"
reconnect_max = "1s"
[spool]
dir = "{spool}"
"#,
        hub_section = agent_lab::hub_section(dns.addr(), ca, port),
        spool = dir.join("spool").display(),
    );
    let p = dir.join("config.toml");
    std::fs::write(&p, text).unwrap();
    p
}

fn key_identity(dir: &Path, extra: &str) -> String {
    let cs = agent_lab::write_connection_string(dir);
    format!("connection_string_file = \"{}\"\n{extra}", cs.display())
}

struct Agent {
    child: Child,
    dir: PathBuf,
}

impl Agent {
    fn spawn(cmd: Command, config: &Path, dir: &Path) -> Agent {
        let mut cmd = cmd;
        cmd.args(["agent", "--config"])
            .arg(config)
            .arg("--state-dir")
            .arg(dir.join("state"))
            .env_remove("IOTHUB_DEVICE_CONNECTION_STRING")
            .env_remove("RUST_LOG")
            .env("HUBPROBE_NTP_SERVER", "none")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("agent.log")).unwrap());
        Agent {
            child: cmd.spawn().expect("spawn hubprobe agent"),
            dir: dir.to_path_buf(),
        }
    }

    fn local(config: &Path, dir: &Path) -> Agent {
        Self::spawn(Command::new(support::bin()), config, dir)
    }

    /// Every spooled report, oldest first, validated.
    fn reports(&self) -> Vec<Value> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(self.dir.join("spool"))
            .map(|rd| {
                rd.map(|e| e.unwrap().path())
                    .filter(|p| p.extension().is_some_and(|x| x == "json"))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
            .iter()
            .map(|p| {
                let r: Value = serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
                assert_valid(&r);
                r
            })
            .collect()
    }

    /// Every disconnect record the reports carried, as sent (each report: those
    /// since the previous, and the completed versions of records sent while the
    /// canary was down).
    fn disconnect_versions(&self) -> Vec<Value> {
        self.reports()
            .iter()
            .flat_map(|r| {
                r["canary"]["recent"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .collect()
    }

    /// The disconnects the reports carried, as a consumer keeps them: one per id
    /// (the latest version), in the order they first came.
    fn disconnects(&self) -> Vec<Value> {
        let mut out: Vec<Value> = Vec::new();
        for e in self.disconnect_versions() {
            let id = e["id"].as_str().expect("every disconnect has an id");
            match out.iter_mut().find(|o| o["id"] == id) {
                Some(o) => *o = e,
                None => out.push(e),
            }
        }
        out
    }

    /// The saved history file.
    fn history(&self) -> Value {
        serde_json::from_str(
            &std::fs::read_to_string(self.dir.join("state/canary-history.json"))
                .unwrap_or_else(|e| panic!("no history file: {e}\n{}", self.log())),
        )
        .unwrap()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default()
    }

    /// Waits (bounded) until `f` holds for the reports.
    /// Waits (bounded) for a report whose canary counted `n` disconnects of `cause`
    /// and whose diagnosis is past `stable`.
    fn wait_for_diagnosis(&self, limit: Duration, cause: &str, n: u64) -> Vec<Value> {
        let what = format!("a diagnosis over {n} {cause} disconnects");
        self.wait(limit, &what, |r| {
            r.last().is_some_and(|r| {
                r["canary"]["disconnects_total"][cause]
                    .as_u64()
                    .unwrap_or(0)
                    >= n
                    && r["canary"]["diagnosis"]["kind"] != "stable"
            })
        })
    }

    fn wait(&self, limit: Duration, what: &str, f: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let end = Instant::now() + limit;
        loop {
            let r = self.reports();
            if f(&r) {
                return r;
            }
            assert!(
                Instant::now() < end,
                "timed out waiting for {what}\n--- agent log ---\n{}\n--- last report canary ---\n{:#}",
                self.log(),
                r.last().map(|r| r["canary"].clone()).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn stop(mut self) -> String {
        // SAFETY: kill(2) on our own child.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let end = Instant::now() + Duration::from_secs(15);
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < end, "agent did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
        let log = self.log();
        assert!(!log.contains(DEVICE_KEY), "the device key leaked");
        assert!(!log.contains("sig="), "a SAS signature leaked");
        log
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn causes(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["cause"].as_str().unwrap().to_string())
        .collect()
}

/// Connects with `client_id` on the broker's plain listener and leaves: the broker
/// drops the older session with that id (MQTT 3.1.1: no DISCONNECT to it).
fn take_over(addr: SocketAddr, client_id: &str) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut out = bytes::BytesMut::new();
    let c = rumqttc::mqttbytes::v4::Connect::new(client_id);
    c.write(&mut out).unwrap();
    s.write_all(&out).unwrap();
    let mut connack = [0u8; 4];
    s.read_exact(&mut connack).unwrap();
    assert_eq!(connack, [0x20, 0x02, 0x00, 0x00]);
    s.write_all(&[0xE0, 0x00]).unwrap();
}

#[test]
fn takeover_is_eof_without_disconnect_and_history_survives_restart() {
    let broker = Mosquitto::start(&[]);
    let dns = Dns::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = lab_config(
        dir.path(),
        &dns,
        broker.certs().ca_pem(),
        broker.port("tls_anon"),
        "",
        &key_identity(dir.path(), ""),
    );
    let agent = Agent::local(&cfg, dir.path());
    agent.wait(Duration::from_secs(20), "a connected canary", |r| {
        r.iter().any(|r| r["canary"]["connected"] == true)
    });
    take_over(broker.addr("plain"), "dev1");
    let reports = agent.wait(
        Duration::from_secs(20),
        "the disconnect and the reconnect",
        |_| {
            let d = agent.history();
            d["events"]
                .as_array()
                .is_some_and(|e| e.iter().any(|e| e["reconnect_s"].is_number()))
        },
    );
    let _ = reports;
    let ev = agent.history()["events"][0].clone();
    assert_eq!(ev["cause"], "eof_without_disconnect", "{ev:#}");
    assert!(ev["session_lived_s"].as_f64().unwrap() > 0.0);
    assert!(ev["reconnect_s"].as_f64().unwrap() < 5.0, "{ev:#}");
    // The report after it says so too, once.
    agent.wait(
        Duration::from_secs(10),
        "the disconnect in a report",
        |_| causes(&agent.disconnects()) == ["eof_without_disconnect"],
    );
    agent.stop();

    // Restart: totals and sessions carry on from the saved history.
    let agent = Agent::local(&cfg, dir.path());
    let before = agent.reports().len();
    let r = agent.wait(Duration::from_secs(20), "a report of the new run", |r| {
        r.len() > before + 1 && r.last().unwrap()["canary"]["connected"] == true
    });
    let c = &r.last().unwrap()["canary"];
    assert_eq!(c["disconnects_total"]["eof_without_disconnect"], 1, "{c:#}");
    assert!(c["sessions_total"].as_u64().unwrap() >= 3, "{c:#}");
    // Reported once: not again after the restart.
    assert_eq!(causes(&agent.disconnects()), ["eof_without_disconnect"]);
    agent.stop();
}

#[test]
fn server_disconnect_and_missing_pingresp() {
    let certs = common::Certs::generate();
    let dns = Dns::start();
    // A server that accepts, then sends DISCONNECT right after the CONNACK.
    let bye = common::tls_then(
        &certs,
        TlsThen::Garbage(vec![0x20, 0x02, 0x00, 0x00, 0xE0, 0x00]),
    );
    let dir = tempfile::tempdir().unwrap();
    let cfg = lab_config(
        dir.path(),
        &dns,
        certs.ca_pem(),
        bye.port(),
        "",
        &key_identity(dir.path(), ""),
    );
    let agent = Agent::local(&cfg, dir.path());
    agent.wait(Duration::from_secs(20), "server_disconnect", |_| {
        causes(&agent.disconnects())
            .iter()
            .any(|c| c == "server_disconnect")
    });
    agent.stop();

    // A server whose PINGRESPs come 10 s late: keep-alive 2 s, PINGRESP timeout 1 s.
    let slow = common::tls_then(&certs, TlsThen::SlowPings(Duration::from_secs(10)));
    let dir = tempfile::tempdir().unwrap();
    let cfg = lab_config(
        dir.path(),
        &dns,
        certs.ca_pem(),
        slow.port(),
        "keepalive = \"2s\"",
        &key_identity(dir.path(), ""),
    );
    let agent = Agent::local(&cfg, dir.path());
    agent.wait(Duration::from_secs(30), "no_pingresp", |_| {
        causes(&agent.disconnects())
            .iter()
            .any(|c| c == "no_pingresp")
    });
    let ev = agent
        .disconnects()
        .into_iter()
        .find(|e| e["cause"] == "no_pingresp")
        .unwrap();
    let idle = ev["idle_before_s"].as_f64().unwrap();
    assert!(
        (1.8..=2.6).contains(&idle),
        "the silence before the ping was the keep-alive: {ev:#}"
    );
    assert!(ev["detail"].as_str().unwrap().contains("PINGRESP"));
    agent.stop();
}

#[test]
fn refused_connect_is_reported_with_its_class() {
    // The password listener knows no user: every CONNECT is refused (CONNACK 5).
    let broker = Mosquitto::start(&[]);
    let dns = Dns::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = lab_config(
        dir.path(),
        &dns,
        broker.certs().ca_pem(),
        broker.port("tls"),
        "",
        &key_identity(dir.path(), ""),
    );
    let agent = Agent::local(&cfg, dir.path());
    let r = agent.wait(Duration::from_secs(20), "a refused canary", |r| {
        r.iter()
            .any(|r| r["canary"]["connect_failures"].as_u64().unwrap_or(0) >= 2)
    });
    let last = r
        .iter()
        .rev()
        .find(|r| r["canary"]["connect_failures"].as_u64().unwrap_or(0) >= 2)
        .unwrap();
    let c = &last["canary"];
    assert_eq!(c["connected"], false);
    assert!(
        c["connect_error"]
            .as_str()
            .unwrap()
            .starts_with("mqtt.not_authorized"),
        "{c:#}"
    );
    // The check itself ran the MQTT phase (the canary held no session) and says why.
    assert_eq!(last["verdict"], "critical");
    let log = agent.stop();
    assert!(!log.contains("SharedAccessSignature"), "{log}");
}

#[test]
fn token_renewals_at_a_steady_period_are_cause_1_and_expiry_is_named() {
    let broker = Mosquitto::start(&[]);
    let dns = Dns::start();
    let dir = tempfile::tempdir().unwrap();
    // Tokens of 3 s, renewed at 80 %: a reconnect every 2.4 s.
    let cfg = lab_config(
        dir.path(),
        &dns,
        broker.certs().ca_pem(),
        broker.port("tls_anon"),
        "",
        &key_identity(dir.path(), "sas_ttl = \"3s\""),
    );
    let agent = Agent::local(&cfg, dir.path());
    let r = agent.wait(
        Duration::from_secs(40),
        "the token-renewal diagnosis",
        |r| {
            r.last()
                .is_some_and(|r| r["canary"]["diagnosis"]["kind"] == "token_renewal")
        },
    );
    let c = &r.last().unwrap()["canary"];
    assert_eq!(c["diagnosis"]["iothub_cause"], 1, "{c:#}");
    assert!(c["disconnects_total"]["token_renewal"].as_u64().unwrap() >= 3);
    let lived: Vec<f64> = agent
        .disconnects()
        .iter()
        .map(|e| e["session_lived_s"].as_f64().unwrap())
        .collect();
    assert!(lived.iter().all(|l| (2.2..3.0).contains(l)), "{lived:?}");
    agent.stop();

    // A fixed token that expires in 3 s; the hub (here: a take-over after expiry)
    // closes the session: token_expired.
    let dir = tempfile::tempdir().unwrap();
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3;
    let token = generate_sas_token(
        &resource_uri(HUB_HOST, "dev1", None),
        &Secret::new(DEVICE_KEY),
        exp,
    )
    .unwrap();
    let tf = dir.path().join("token");
    std::fs::write(&tf, token.token.expose()).unwrap();
    let cfg = lab_config(
        dir.path(),
        &dns,
        broker.certs().ca_pem(),
        broker.port("tls_anon"),
        "",
        &format!("sas_token_file = \"{}\"", tf.display()),
    );
    let agent = Agent::local(&cfg, dir.path());
    agent.wait(Duration::from_secs(20), "a connected canary", |r| {
        r.iter().any(|r| r["canary"]["connected"] == true)
    });
    std::thread::sleep(Duration::from_secs(4));
    take_over(broker.addr("plain"), "dev1");
    agent.wait(Duration::from_secs(20), "token_expired", |_| {
        causes(&agent.disconnects())
            .iter()
            .any(|c| c == "token_expired")
    });
    let log = agent.stop();
    assert!(!log.contains(token.token.expose()), "the token leaked");
}

/// The agent in the client namespace, mosquitto in the server namespace.
fn nat_agent(nat: &Nat, dir: &Path, keepalive: &str, interval: &str) -> Agent {
    let text = format!(
        r#"[hub]
host = "{server}"
profile = "mqtt-broker"
endpoints = ["mqtt"]
ports = {{ mqtt = 1883 }}
timeout = "1s"
keepalive = "{keepalive}"
[schedule]
interval = "{interval}"
spread = "0s"
deadline = "5s"
[canary]
ping_timeout = "1s"
reconnect_min = "500ms"
reconnect_max = "1s"
[spool]
dir = "{spool}"
"#,
        server = nat.server_addr(),
        spool = dir.join("spool").display(),
    );
    let cfg = dir.join("config.toml");
    std::fs::write(&cfg, text).unwrap();
    Agent::spawn(nat.client_ns().command(support::bin()), &cfg, dir)
}

#[test]
fn idle_dropping_nat_is_cause_2_with_the_idle_period() {
    // The NAT forgets idle flows after 3 s; the canary's keep-alive is 5 s.
    let nat = Nat::new(Duration::from_secs(3));
    let _hub = nat.start_mosquitto(1883);
    let dir = tempfile::tempdir().unwrap();
    let agent = nat_agent(&nat, dir.path(), "5s", "4s");
    let r = agent.wait(Duration::from_secs(60), "the idle-timeout diagnosis", |r| {
        r.last()
            .is_some_and(|r| r["canary"]["diagnosis"]["kind"] == "idle_timeout")
    });
    let d = &r.last().unwrap()["canary"]["diagnosis"];
    assert_eq!(d["iothub_cause"], 2, "{d:#}");
    let events = agent.history()["events"].as_array().unwrap().clone();
    assert!(events.len() >= 3);
    for e in &events {
        assert_eq!(e["cause"], "no_pingresp", "silent drop: {e:#}");
        let idle = e["idle_before_s"].as_f64().unwrap();
        assert!((4.5..=5.8).contains(&idle), "{e:#}");
    }
    agent.stop();

    // The same NAT answering forgotten flows with a reset: tcp_reset.
    nat.reset_on_invalid(true);
    let dir = tempfile::tempdir().unwrap();
    let agent = nat_agent(&nat, dir.path(), "5s", "4s");
    agent.wait(Duration::from_secs(40), "tcp_reset", |_| {
        causes(&agent.disconnects())
            .iter()
            .any(|c| c == "tcp_reset")
    });
    agent.stop();
}

#[test]
fn irregular_outages_are_the_network() {
    // A NAT that keeps idle flows long; outages of a few seconds at irregular times.
    let nat = Nat::new(Duration::from_secs(600));
    let _hub = nat.start_mosquitto(1883);
    let dir = tempfile::tempdir().unwrap();
    let agent = nat_agent(&nat, dir.path(), "1s", "2s");
    agent.wait(Duration::from_secs(20), "a connected canary", |r| {
        r.iter().any(|r| r["canary"]["connected"] == true)
    });
    for (up, down) in [(2.0, 4.0), (7.0, 3.0), (1.0, 5.0), (4.0, 3.0)] {
        std::thread::sleep(Duration::from_secs_f64(up));
        nat.outage(true);
        std::thread::sleep(Duration::from_secs_f64(down));
        nat.outage(false);
    }
    let r = agent.wait(Duration::from_secs(30), "the network diagnosis", |r| {
        r.last()
            .is_some_and(|r| r["canary"]["diagnosis"]["kind"] == "network")
    });
    let d = &r.last().unwrap()["canary"]["diagnosis"];
    assert_eq!(d["iothub_cause"], 2, "{d:#}");
    let events = agent.history()["events"].as_array().unwrap().clone();
    // Four outages; a session that dies young counts toward the back-off, so on a
    // loaded machine two outages can fall into one time down: at least two records.
    assert!(events.len() >= 2, "{events:#?}");
    assert!(
        events
            .iter()
            .any(|e| e["failed_attempts"].as_u64().unwrap_or(0) > 0),
        "{events:#?}"
    );
    agent.stop();
}

/// A TCP relay in front of `upstream` that, when told to, flips the last byte of the
/// next client → server chunk (inside a TLS record's authentication tag) on a
/// connection older than 1.5 s: the canary's, not a check's short ones.
struct Corrupter {
    port: u16,
    corrupt: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Corrupter {
    fn start(upstream: SocketAddr) -> Corrupter {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let corrupt = Arc::new(AtomicBool::new(false));
        let flag = corrupt.clone();
        std::thread::spawn(move || {
            // Bounded: at most 50 connections over the test's life.
            for conn in listener.incoming().take(50) {
                let Ok(client) = conn else { return };
                let Ok(server) = TcpStream::connect(upstream) else {
                    return;
                };
                let flag = flag.clone();
                let (mut c_read, mut s_write) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap());
                let (mut s_read, mut c_write) = (server, client);
                let opened = Instant::now();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16384];
                    while let Ok(n) = c_read.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        if opened.elapsed() > Duration::from_millis(1500)
                            && flag.swap(false, Ordering::SeqCst)
                        {
                            buf[n - 1] ^= 0xff;
                        }
                        if s_write.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = s_write.shutdown(std::net::Shutdown::Write);
                });
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16384];
                    while let Ok(n) = s_read.read(&mut buf) {
                        if n == 0 || c_write.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = c_write.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        Corrupter { port, corrupt }
    }
}

#[test]
fn a_tls_alert_from_the_broker_is_named() {
    // mosquitto (OpenSSL) answers a record that fails authentication with a fatal
    // bad_record_mac alert before it closes: a real TLS alert on a live session.
    let broker = Mosquitto::start(&[]);
    let dns = Dns::start();
    let relay = Corrupter::start(broker.addr("tls_anon"));
    let dir = tempfile::tempdir().unwrap();
    let cfg = lab_config(
        dir.path(),
        &dns,
        broker.certs().ca_pem(),
        relay.port,
        "keepalive = \"2s\"",
        &key_identity(dir.path(), ""),
    );
    let agent = Agent::local(&cfg, dir.path());
    agent.wait(Duration::from_secs(20), "a connected canary", |r| {
        r.iter().any(|r| r["canary"]["connected"] == true)
    });
    // The next thing the canary sends (its PINGREQ, within 2 s) is corrupted; a
    // session younger than 1.5 s is left alone, so allow a second try.
    let mut seen = false;
    for _ in 0..2 {
        relay
            .corrupt
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let end = Instant::now() + Duration::from_secs(6);
        while Instant::now() < end {
            if causes(&agent.disconnects())
                .iter()
                .any(|c| c == "tls_alert")
            {
                seen = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        if seen {
            break;
        }
    }
    assert!(
        seen,
        "no tls_alert\n{}\n{:#?}",
        agent.log(),
        agent.disconnects()
    );
    let ev = agent
        .disconnects()
        .into_iter()
        .find(|e| e["cause"] == "tls_alert")
        .unwrap();
    assert!(
        ev["detail"].as_str().unwrap().contains("BadRecordMac"),
        "{ev:#}"
    );
    agent.stop();
}

// ---------------------------------------------------------------------------
// Sessions that die young: a server that accepts CONNECT and then drops the
// session, and a take-over fight with another client using the same identity.
// The back-off must bound the connections, the history writes must be bounded,
// and the checks must keep their schedule.

/// How a [`DropServer`] ends each session after its CONNACK.
#[derive(Clone, Copy, Debug)]
enum DropStyle {
    /// An MQTT DISCONNECT, then close.
    Disconnect,
    /// A DISCONNECT with an odd MQTT 5 reason code (0x42, not defined).
    OddReason,
    /// Close without DISCONNECT (FIN).
    Eof,
    /// A TCP reset.
    Reset,
    /// Bytes that are not MQTT.
    Garbage,
    /// A PUBLISH announcing 100 MB.
    HugePublish,
}

/// A plain-TCP MQTT server that answers every CONNECT with CONNACK 0 and then
/// drops the session in its style; it notes when each connection came.
struct DropServer {
    addr: SocketAddr,
    accepted: std::sync::Arc<std::sync::Mutex<Vec<Instant>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl DropServer {
    fn start(style: DropStyle) -> DropServer {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::{Arc, Mutex};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen, halt) = (accepted.clone(), stop.clone());
        std::thread::spawn(move || {
            // Bounded: 2 minutes, 20 000 connections.
            let end = Instant::now() + Duration::from_secs(120);
            let mut n = 0;
            while Instant::now() < end && n < 20_000 && !halt.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((s, _)) => {
                        n += 1;
                        seen.lock().unwrap().push(Instant::now());
                        std::thread::spawn(move || serve_then_drop(s, style));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        DropServer {
            addr,
            accepted,
            stop,
        }
    }

    /// Connections accepted in [from, to).
    fn accepted_between(&self, from: Instant, to: Instant) -> usize {
        self.accepted
            .lock()
            .unwrap()
            .iter()
            .filter(|t| **t >= from && **t < to)
            .count()
    }
}

impl Drop for DropServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

fn serve_then_drop(mut s: TcpStream, style: DropStyle) {
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    // The CONNECT (one read is enough for its small size on loopback).
    let mut buf = [0u8; 1024];
    if !matches!(s.read(&mut buf), Ok(n) if n > 0) {
        return;
    }
    let tail: Vec<u8> = match style {
        DropStyle::Disconnect => vec![0xE0, 0x00],
        DropStyle::OddReason => vec![0xE0, 0x01, 0x42],
        DropStyle::Eof | DropStyle::Reset => vec![],
        DropStyle::Garbage => b"HTTP/1.1 400 Bad Request\r\n\r\n".to_vec(),
        DropStyle::HugePublish => vec![0x30, 0x80, 0xDA, 0xC4, 0x09, 0x00, 0x01, b't'],
    };
    let mut out = vec![0x20, 0x02, 0x00, 0x00];
    out.extend_from_slice(&tail);
    if s.write_all(&out).is_err() {
        return;
    }
    if let DropStyle::Reset = style {
        let _ = socket_linger_zero(&s);
    } else {
        let _ = s.shutdown(std::net::Shutdown::Write);
        // Let the client read it all before the close.
        let _ = s.read(&mut buf);
    }
}

/// SO_LINGER 0: the close sends a reset.
fn socket_linger_zero(s: &TcpStream) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on a socket we own with a correctly sized struct.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &l as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Counts renames into a directory (the atomic writes of a file in it).
struct RenameWatch {
    fd: i32,
}

impl RenameWatch {
    fn new(dir: &Path) -> RenameWatch {
        let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: plain inotify calls; the fd is closed on drop.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        assert!(
            fd >= 0,
            "inotify_init1: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: as above; `c` is a valid C string.
        // Both halves of each rename: the kernel merges an event with the one queued
        // just before it when they are alike (mask, name), so renames onto one name
        // would count once; the temporary names between them keep them apart.
        let wd = unsafe {
            libc::inotify_add_watch(fd, c.as_ptr(), libc::IN_MOVED_TO | libc::IN_MOVED_FROM)
        };
        assert!(
            wd >= 0,
            "inotify_add_watch: {}",
            std::io::Error::last_os_error()
        );
        RenameWatch { fd }
    }

    /// Renames onto `name` since the last call.
    fn take(&self, name: &str) -> usize {
        let mut count = 0;
        let mut buf = [0u8; 8192];
        // Bounded: the queue holds at most 16 384 events.
        for _ in 0..10_000 {
            // SAFETY: reading into our own buffer.
            let n = unsafe { libc::read(self.fd, buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                break;
            }
            let mut off = 0usize;
            let hdr = std::mem::size_of::<libc::inotify_event>();
            while off + hdr <= n as usize {
                let mask = u32::from_ne_bytes(buf[off + 4..off + 8].try_into().unwrap());
                let len = u32::from_ne_bytes(buf[off + 12..off + 16].try_into().unwrap()) as usize;
                let raw = &buf[off + hdr..off + hdr + len];
                let end = raw.iter().position(|b| *b == 0).unwrap_or(len);
                if mask & libc::IN_MOVED_TO != 0 && &raw[..end] == name.as_bytes() {
                    count += 1;
                }
                off += hdr + len;
            }
        }
        count
    }
}

impl Drop for RenameWatch {
    fn drop(&mut self) {
        // SAFETY: our own fd.
        unsafe {
            libc::close(self.fd);
        }
    }
}

/// An agent configuration for a plain MQTT broker at `addr` (no identity).
fn plain_config(dir: &Path, addr: SocketAddr, interval: &str) -> PathBuf {
    let text = format!(
        r#"[hub]
host = "{ip}"
profile = "mqtt-broker"
endpoints = ["mqtt"]
ports = {{ mqtt = {port} }}
timeout = "2s"
[schedule]
interval = "{interval}"
spread = "0s"
deadline = "8s"
[canary]
ping_timeout = "1s"
reconnect_min = "200ms"
reconnect_max = "1s"
[spool]
dir = "{spool}"
"#,
        ip = addr.ip(),
        port = addr.port(),
        spool = dir.join("spool").display(),
    );
    let p = dir.join("config.toml");
    std::fs::write(&p, text).unwrap();
    p
}

/// Reports (check and other) spooled so far.
fn report_count(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("spool"))
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
                .count()
        })
        .unwrap_or(0)
}

/// The window every storm test measures over, the check interval in it, and the
/// bounds: the canary's back-off (200 ms doubling to 1 s, half of it fixed) allows
/// about 3 + W / 0.5 s connections, the checks W / interval more; the history is
/// written at most 10 times in a burst, then once per 5 s.
const STORM_WINDOW: Duration = Duration::from_secs(12);
const STORM_INTERVAL_S: u64 = 2;
const STORM_MAX_CONNECTIONS: usize = 50;
/// The most history writes the pacing allows over `window` (a burst of 10, then one
/// per 5 s).
fn max_history_writes(window: Duration) -> usize {
    10 + window.as_secs() as usize / 5 + 1
}
const STORM_MIN_CHECKS: usize = 12 / 2 / 2;

#[test]
fn a_server_that_drops_every_session_is_met_with_back_off() {
    let styles = [
        (DropStyle::Disconnect, "server_disconnect"),
        (DropStyle::OddReason, "server_disconnect"),
        (DropStyle::Eof, "eof_without_disconnect"),
        (DropStyle::Reset, "tcp_reset"),
        (DropStyle::Garbage, "protocol_error"),
        (DropStyle::HugePublish, "protocol_error"),
    ];
    // Every style at once (each its own server and agent), measured over one window.
    let runs: Vec<_> = styles
        .iter()
        .map(|(style, cause)| {
            let server = DropServer::start(*style);
            let dir = tempfile::tempdir().unwrap();
            std::fs::create_dir_all(dir.path().join("state")).unwrap();
            let watch = RenameWatch::new(&dir.path().join("state"));
            let cfg = plain_config(dir.path(), server.addr, &format!("{STORM_INTERVAL_S}s"));
            let agent = Agent::local(&cfg, dir.path());
            (*style, *cause, server, dir, watch, agent)
        })
        .collect();
    // Let them start (the first connections and the first back-off steps).
    std::thread::sleep(Duration::from_secs(3));
    let from = Instant::now();
    let before: Vec<(usize, usize)> = runs
        .iter()
        .map(|(_, _, _, dir, watch, _)| {
            (report_count(dir.path()), watch.take("canary-history.json"))
        })
        .collect();
    std::thread::sleep(STORM_WINDOW);
    let to = Instant::now();
    for ((style, cause, server, dir, watch, agent), (reports0, _)) in runs.into_iter().zip(before) {
        let connections = server.accepted_between(from, to);
        let writes = watch.take("canary-history.json");
        let checks = report_count(dir.path()) - reports0;
        let log = agent.log();
        eprintln!(
            "{style:?}: {connections} connections, {writes} history writes, {checks} reports in {STORM_WINDOW:?}"
        );
        assert!(
            connections >= 3,
            "{style:?}: the canary kept trying: {connections} connections\n{log}"
        );
        assert!(
            connections <= STORM_MAX_CONNECTIONS,
            "{style:?}: {connections} connections in {STORM_WINDOW:?}: the back-off does not hold\n{log}"
        );
        assert!(
            writes <= max_history_writes(to - from),
            "{style:?}: the history was written {writes} times in {STORM_WINDOW:?}"
        );
        assert!(
            checks >= STORM_MIN_CHECKS,
            "{style:?}: only {checks} reports in {STORM_WINDOW:?} at a {STORM_INTERVAL_S} s interval\n{log}"
        );
        let seen = causes(&agent.disconnects());
        assert!(
            seen.iter().any(|c| c == cause),
            "{style:?}: expected {cause} among {seen:?}"
        );
        let events = agent.disconnects();
        if let DropStyle::OddReason = style {
            let e = events.iter().find(|e| e["reason_code"] == 0x42).unwrap();
            assert!(e["detail"].as_str().unwrap().contains("0x42"), "{e:#}");
        }
        // Every record has its own id.
        let ids: std::collections::BTreeSet<&str> =
            events.iter().map(|e| e["id"].as_str().unwrap()).collect();
        assert!(!ids.is_empty());
        assert!(
            log.contains("backing off"),
            "{style:?}: the log says nothing of the back-off\n{log}"
        );
        agent.stop();
    }
}

/// A TCP relay in front of `upstream` that notes when each connection came.
struct CountingRelay {
    port: u16,
    accepted: std::sync::Arc<std::sync::Mutex<Vec<Instant>>>,
}

impl CountingRelay {
    fn start(upstream: SocketAddr) -> CountingRelay {
        use std::sync::{Arc, Mutex};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let seen = accepted.clone();
        std::thread::spawn(move || {
            // Bounded: at most 2 000 connections over the test's life.
            for conn in listener.incoming().take(2_000) {
                let Ok(client) = conn else { return };
                seen.lock().unwrap().push(Instant::now());
                let Ok(server) = TcpStream::connect(upstream) else {
                    return;
                };
                let (mut c_read, mut s_write) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap());
                let (mut s_read, mut c_write) = (server, client);
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c_read, &mut s_write);
                    let _ = s_write.shutdown(std::net::Shutdown::Both);
                });
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut s_read, &mut c_write);
                    let _ = c_write.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        CountingRelay { port, accepted }
    }

    fn accepted_between(&self, from: Instant, to: Instant) -> usize {
        self.accepted
            .lock()
            .unwrap()
            .iter()
            .filter(|t| **t >= from && **t < to)
            .count()
    }
}

/// The device's "own application": connects with `client_id`, stays until the
/// broker drops it (another connection took the id), waits `pause`, connects again
/// — until `until`, at most `max` times. Returns how often it was dropped.
fn fight(addr: SocketAddr, client_id: &str, pause: Duration, until: Instant, max: usize) -> usize {
    let mut dropped = 0;
    for _ in 0..max {
        if Instant::now() >= until {
            break;
        }
        let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
            std::thread::sleep(pause);
            continue;
        };
        let mut out = bytes::BytesMut::new();
        let mut c = rumqttc::mqttbytes::v4::Connect::new(client_id);
        c.keep_alive = 60;
        c.write(&mut out).unwrap();
        if s.write_all(&out).is_err() {
            continue;
        }
        let mut connack = [0u8; 4];
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        if s.read_exact(&mut connack).is_err() || connack != [0x20, 0x02, 0x00, 0x00] {
            std::thread::sleep(pause);
            continue;
        }
        // Held until the broker closes it (taken over) or the fight is over.
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut b = [0u8; 64];
        loop {
            match s.read(&mut b) {
                Ok(0) => {
                    dropped += 1;
                    break;
                }
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    if Instant::now() >= until {
                        let _ = s.write_all(&[0xE0, 0x00]);
                        return dropped;
                    }
                }
                Err(_) => {
                    dropped += 1;
                    break;
                }
            }
        }
        std::thread::sleep(pause);
    }
    dropped
}

#[test]
fn a_takeover_fight_is_bounded_and_named() {
    let broker = Mosquitto::start(&[]);
    let dns = Dns::start();
    let relay = CountingRelay::start(broker.addr("tls_anon"));
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("state")).unwrap();
    let watch = RenameWatch::new(&dir.path().join("state"));
    let cfg = lab_config(
        dir.path(),
        &dns,
        broker.certs().ca_pem(),
        relay.port,
        "",
        &key_identity(dir.path(), ""),
    );
    // The lab configuration checks every second; this test every 2 s.
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "interval = \"1s\"",
        &format!("interval = \"{STORM_INTERVAL_S}s\""),
    );
    std::fs::write(&cfg, text).unwrap();
    let agent = Agent::local(&cfg, dir.path());
    agent.wait(Duration::from_secs(20), "a connected canary", |r| {
        r.iter().any(|r| r["canary"]["connected"] == true)
    });
    // The other client fights for the identity over a fixed window.
    let from = Instant::now();
    let until = from + STORM_WINDOW;
    let plain = broker.addr("plain");
    let fighter =
        std::thread::spawn(move || fight(plain, "dev1", Duration::from_millis(100), until, 2_000));
    let reports0 = report_count(dir.path());
    watch.take("canary-history.json");
    let dropped = fighter.join().unwrap();
    let to = Instant::now();
    let connections = relay.accepted_between(from, to);
    let writes = watch.take("canary-history.json");
    let checks = report_count(dir.path()) - reports0;
    let log = agent.log();
    eprintln!(
        "take-over fight: the other client dropped {dropped} times; {connections} connections, {writes} history writes, {checks} reports in {STORM_WINDOW:?}"
    );
    assert!(
        dropped >= 2,
        "the fight did happen: dropped {dropped}\n{log}"
    );
    assert!(
        connections <= STORM_MAX_CONNECTIONS,
        "{connections} connections in {STORM_WINDOW:?}: the canary fights without pause\n{log}"
    );
    assert!(
        writes <= max_history_writes(to - from),
        "the history was written {writes} times in {STORM_WINDOW:?}"
    );
    assert!(
        checks >= STORM_MIN_CHECKS,
        "only {checks} reports in {STORM_WINDOW:?}\n{log}"
    );
    // The canary section names the take-over.
    let r = agent.wait(Duration::from_secs(20), "the take-over diagnosis", |r| {
        r.last()
            .is_some_and(|r| r["canary"]["diagnosis"]["kind"] == "session_takeover")
    });
    let d = &r.last().unwrap()["canary"]["diagnosis"];
    assert!(
        d["summary"]
            .as_str()
            .unwrap()
            .contains("another client uses this identity"),
        "{d:#}"
    );
    assert!(
        causes(&agent.disconnects())
            .iter()
            .all(|c| c == "eof_without_disconnect"),
        "{:?}",
        causes(&agent.disconnects())
    );
    agent.stop();
}

// ---------------------------------------------------------------------------
// The diagnosis on real sessions: what the recorded causes say, not the timing alone.

/// What an [`AgeRelay`] does to a connection once it reaches its age.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Cut {
    /// A TCP reset to the client (SO_LINGER 0, close).
    Reset,
    /// Nothing passes any more, both ways, and nothing says so (lost path state).
    Blackhole,
}

/// A TCP relay in front of `upstream` that cuts every connection reaching the
/// next age of `ages` (taken in turn, only by connections still open after
/// [`AGE_CLAIM`], so the short connections of the checks do not use them up).
struct AgeRelay {
    port: u16,
}

/// Connections older than this take the next age.
const AGE_CLAIM: Duration = Duration::from_millis(1500);

impl AgeRelay {
    fn start(upstream: SocketAddr, ages: Vec<Duration>, cut: Cut) -> AgeRelay {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        use std::sync::Arc;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let next = Arc::new(AtomicUsize::new(0));
        let ages = Arc::new(ages);
        std::thread::spawn(move || {
            // Bounded: at most 300 connections, each cut or closed within 60 s.
            for conn in listener.incoming().take(300) {
                let Ok(client) = conn else { return };
                let Ok(server) = TcpStream::connect(upstream) else {
                    return;
                };
                let opened = Instant::now();
                let closed = Arc::new(AtomicBool::new(false));
                let cutting = Arc::new(AtomicBool::new(false));
                for s in [&client, &server] {
                    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
                }
                let pump = |mut from: TcpStream, mut to: TcpStream| {
                    let (closed, cutting) = (closed.clone(), cutting.clone());
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16384];
                        let end = Instant::now() + Duration::from_secs(60);
                        while Instant::now() < end && !closed.load(Ordering::SeqCst) {
                            match from.read(&mut buf) {
                                Ok(0) => break,
                                Ok(n) => {
                                    if cutting.load(Ordering::SeqCst) {
                                        if cut == Cut::Reset {
                                            break;
                                        }
                                        continue; // black hole: swallowed
                                    }
                                    if to.write_all(&buf[..n]).is_err() {
                                        break;
                                    }
                                }
                                Err(e)
                                    if matches!(
                                        e.kind(),
                                        std::io::ErrorKind::WouldBlock
                                            | std::io::ErrorKind::TimedOut
                                    ) =>
                                {
                                    if cutting.load(Ordering::SeqCst) && cut == Cut::Reset {
                                        break;
                                    }
                                }
                                Err(_) => break,
                            }
                        }
                        // A black hole says nothing to the client, not even that the
                        // server gave up on the silent flow: only the client's own
                        // close (or the time limit) ends it.
                        if !(cutting.load(Ordering::SeqCst) && cut == Cut::Blackhole)
                            || Instant::now() >= end
                        {
                            closed.store(true, Ordering::SeqCst);
                        }
                    })
                };
                let c2s = pump(client.try_clone().unwrap(), server.try_clone().unwrap());
                let s2c = pump(server.try_clone().unwrap(), client.try_clone().unwrap());
                let (next, ages, closed, cutting) =
                    (next.clone(), ages.clone(), closed.clone(), cutting.clone());
                std::thread::spawn(move || {
                    std::thread::sleep(AGE_CLAIM);
                    if closed.load(Ordering::SeqCst) {
                        return;
                    }
                    let age = ages[next.fetch_add(1, Ordering::SeqCst) % ages.len()];
                    std::thread::sleep(age.saturating_sub(opened.elapsed()));
                    if cut == Cut::Reset {
                        let _ = socket_linger_zero(&client);
                    }
                    cutting.store(true, Ordering::SeqCst);
                    let _ = c2s.join();
                    let _ = s2c.join();
                    // Every handle of both sockets closes here: with SO_LINGER 0, a reset.
                    drop(client);
                    drop(server);
                });
            }
        });
        AgeRelay { port }
    }
}

/// A lab configuration for the relay at `port`, keep-alive 1 s, with `sas_ttl`.
fn relay_config(dir: &Path, dns: &Dns, broker: &Mosquitto, port: u16, sas_ttl: &str) -> PathBuf {
    lab_config(
        dir,
        dns,
        broker.certs().ca_pem(),
        port,
        "keepalive = \"1s\"",
        &key_identity(dir, &format!("sas_ttl = \"{sas_ttl}\"")),
    )
}

#[test]
fn resets_at_a_fixed_age_near_the_token_lifetime_are_the_network() {
    // Issue "Hostile inputs" 9: a middlebox resets every connection at 2.5 s; the
    // tokens live 4 s (renewed at 3.2 s): lifetime/TTL = 0.63, but the canary
    // recorded resets, not renewals.
    let broker = Mosquitto::start(&[]);
    let dns = Dns::start();
    let relay = AgeRelay::start(
        broker.addr("tls_anon"),
        vec![Duration::from_millis(2500)],
        Cut::Reset,
    );
    let dir = tempfile::tempdir().unwrap();
    let cfg = relay_config(dir.path(), &dns, &broker, relay.port, "4s");
    let agent = Agent::local(&cfg, dir.path());
    let r = agent.wait_for_diagnosis(Duration::from_secs(60), "tcp_reset", 3);
    let c = &r.last().unwrap()["canary"];
    let d = &c["diagnosis"];
    assert_eq!(d["kind"], "network", "{c:#}");
    assert_eq!(d["iothub_cause"], 2, "{d:#}");
    assert!(
        d["summary"].as_str().unwrap().contains("fixed age"),
        "{d:#}"
    );
    assert_eq!(c["disconnects_total"]["token_renewal"], 0, "{c:#}");
    agent.stop();
}

#[test]
fn sessions_that_survived_many_idle_periods_lost_their_path_state() {
    // Issue "Hostile inputs" 10: keep-alive 1 s; after 3.5-9 s (irregular) the
    // path silently loses the flow, a new connection works at once. Every session
    // had survived many 1 s silences: not an idle timeout, no keep-alive advice.
    let broker = Mosquitto::start(&[]);
    let dns = Dns::start();
    let ages = [3.5, 7.0, 4.5, 9.0, 5.5]
        .iter()
        .map(|s| Duration::from_secs_f64(*s))
        .collect();
    let relay = AgeRelay::start(broker.addr("tls_anon"), ages, Cut::Blackhole);
    let dir = tempfile::tempdir().unwrap();
    let cfg = relay_config(dir.path(), &dns, &broker, relay.port, "1h");
    let agent = Agent::local(&cfg, dir.path());
    let r = agent.wait_for_diagnosis(Duration::from_secs(90), "no_pingresp", 3);
    let c = &r.last().unwrap()["canary"];
    let d = &c["diagnosis"];
    assert_eq!(d["kind"], "network", "{c:#}");
    assert_eq!(d["iothub_cause"], 2, "{d:#}");
    let summary = d["summary"].as_str().unwrap();
    assert!(summary.contains("lost its state"), "{d:#}");
    assert!(!summary.contains("lower the keep-alive"), "{d:#}");
    for e in agent.disconnects() {
        assert_eq!(e["cause"], "no_pingresp", "{e:#}");
        let survived = e["longest_idle_survived_s"].as_f64().unwrap();
        let idle = e["idle_before_s"].as_f64().unwrap();
        assert!(survived >= 0.9 * idle, "{e:#}");
    }
    agent.stop();
}

#[test]
fn a_broker_restart_is_the_server_and_the_record_is_completed_later() {
    // Issue "Hostile inputs" 11 and 12: the broker goes away (EOF without
    // DISCONNECT), its port refuses connections until it is back.
    let mut broker = Mosquitto::start(&[]);
    let dns = Dns::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = lab_config(
        dir.path(),
        &dns,
        broker.certs().ca_pem(),
        broker.port("tls_anon"),
        "",
        &key_identity(dir.path(), ""),
    );
    let agent = Agent::local(&cfg, dir.path());
    agent.wait(Duration::from_secs(20), "a connected canary", |r| {
        r.iter().any(|r| r["canary"]["connected"] == true)
    });
    broker.stop();
    // Reported while still down: no reconnect_s yet, the attempts so far (none yet
    // if the report came right after the disconnect).
    agent.wait(
        Duration::from_secs(30),
        "the open record in a report",
        |_| {
            agent
                .disconnect_versions()
                .iter()
                .any(|e| e["reconnect_s"].is_null())
        },
    );
    let open = agent
        .disconnect_versions()
        .into_iter()
        .find(|e| e["reconnect_s"].is_null())
        .unwrap();
    assert_eq!(open["cause"], "eof_without_disconnect", "{open:#}");
    if open["failed_attempts"].as_u64().unwrap_or(0) > 0 {
        assert_eq!(open["last_attempt_class"], "tcp.refused", "{open:#}");
    }
    // Down a while longer: more refused attempts than the open record counted.
    std::thread::sleep(Duration::from_secs(3));
    broker.start_again();
    // Completed, under the same id, in a later report.
    let r = agent.wait(Duration::from_secs(30), "the completed record", |_| {
        agent
            .disconnect_versions()
            .iter()
            .any(|e| e["id"] == open["id"] && e["reconnect_s"].is_number())
    });
    let done = agent
        .disconnect_versions()
        .into_iter()
        .find(|e| e["id"] == open["id"] && e["reconnect_s"].is_number())
        .unwrap();
    assert!(
        done["failed_attempts"].as_u64().unwrap() > open["failed_attempts"].as_u64().unwrap(),
        "{done:#}"
    );
    assert_eq!(done["last_attempt_class"], "tcp.refused", "{done:#}");
    assert!(done["reconnect_s"].as_f64().unwrap() > 0.0);
    assert_eq!(done["at"], open["at"], "the same disconnect");
    // Two versions of that record, no more.
    let versions = agent
        .disconnect_versions()
        .iter()
        .filter(|e| e["id"] == open["id"])
        .count();
    assert_eq!(versions, 2, "{:#?}", agent.disconnect_versions());
    // The report that completed it says the server restarted, not the network.
    let last = r
        .iter()
        .rev()
        .find(|r| {
            r["canary"]["recent"]
                .as_array()
                .is_some_and(|v| v.iter().any(|e| e["id"] == open["id"]))
        })
        .unwrap();
    let d = &last["canary"]["diagnosis"];
    assert_eq!(d["kind"], "server_restart", "{d:#}");
    assert_eq!(d["iothub_cause"], 3, "{d:#}");
    assert!(
        !d["summary"]
            .as_str()
            .unwrap()
            .contains("device's network ("),
        "{d:#}"
    );
    agent.stop();
}

/// The lab's own check: the rename counter sees every rename.
#[test]
fn rename_watch_counts_renames() {
    let dir = tempfile::tempdir().unwrap();
    let w = RenameWatch::new(dir.path());
    for i in 0..5 {
        let tmp = dir.path().join(format!(".x.tmp-{i}"));
        std::fs::write(&tmp, b"x").unwrap();
        std::fs::rename(&tmp, dir.path().join("x.json")).unwrap();
    }
    assert_eq!(w.take("x.json"), 5);
    assert_eq!(w.take("x.json"), 0);
}

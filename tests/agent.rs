//! `hubprobe agent` against real peers: mosquitto as the hub (TLS, a device key,
//! SAS tokens), dnsmasq for its name, a subscriber reading back what the agent
//! uploads. Cycles, spool, NDJSON, textfile, store-and-forward through a broker
//! outage, kill -9 mid-cycle, retention, an unwritable spool, signals, config errors.

mod common;
mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::subscriber::Subscriber;
use common::{agent_lab, Dns, Mosquitto, HUB_HOST};
use serde_json::Value;
use support::{assert_valid, run_with_env};

/// The lab device's key: never printed by hubprobe.
const DEVICE_KEY: &str = agent_lab::LAB_DEVICE_KEY;

struct Lab {
    broker: Mosquitto,
    dns: Dns,
    dir: tempfile::TempDir,
}

impl Lab {
    fn start() -> Lab {
        Self::with(Mosquitto::start(&[]))
    }

    fn persistent() -> Lab {
        Self::with(Mosquitto::start_persistent(&[]))
    }

    fn with(broker: Mosquitto) -> Lab {
        let dir = tempfile::tempdir().unwrap();
        agent_lab::write_connection_string(dir.path());
        Lab {
            broker,
            dns: Dns::start(),
            dir,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn spool(&self) -> PathBuf {
        self.path("spool")
    }

    /// A configuration for the lab hub's anonymous TLS listener (any SAS token is
    /// accepted there, so generated tokens with short lifetimes work), with
    /// `overrides` appended to the named sections.
    fn config(&self, sections: &[(&str, &str)]) -> PathBuf {
        let extra = |name: &str| {
            sections
                .iter()
                .filter(|(s, _)| *s == name)
                .map(|(_, body)| format!("{body}\n"))
                .collect::<String>()
        };
        let text = format!(
            r#"{hub_section}{hub}
[identity]
connection_string_file = "{cs}"
{identity}
[schedule]
interval = "1s"
spread = "0s"
deadline = "10s"
{schedule}
[canary]
ping_timeout = "2s"
reconnect_min = "200ms"
reconnect_max = "1s"
{canary}
[spool]
dir = "{spool}"
{spool_extra}
[ndjson]
path = "{ndjson}"
[prometheus]
textfile = "{prom}"
[upload]
enabled = true
rate = 100
{upload}
[labels]
site = "lab"
"#,
            hub_section = agent_lab::hub_section(
                self.dns.addr(),
                self.broker.certs().ca_pem(),
                self.broker.port("tls_anon")
            ),
            cs = self.path("connection-string").display(),
            spool = self.spool().display(),
            ndjson = self.path("reports.ndjson").display(),
            prom = self.path("hubprobe.prom").display(),
            hub = extra("hub"),
            identity = extra("identity"),
            schedule = extra("schedule"),
            canary = extra("canary"),
            spool_extra = extra("spool"),
            upload = extra("upload"),
        );
        let p = self.path("config.toml");
        std::fs::write(&p, text).unwrap();
        p
    }

    fn subscriber(&self, id: &str) -> Subscriber {
        Subscriber::start(self.broker.addr("plain"), id, "devices/#")
    }

    fn agent(&self, config: &Path, extra: &[&str], limit: Duration) -> support::Run {
        let state = self.path("state");
        let mut args = vec![
            "agent",
            "--config",
            config.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        run_with_env(&args, &[], limit)
    }

    fn spawn_agent(&self, config: &Path, extra: &[&str]) -> AgentChild {
        AgentChild(
            Command::new(support::bin())
                .args(["agent", "--config"])
                .arg(config)
                .arg("--state-dir")
                .arg(self.path("state"))
                .args(extra)
                .env_remove("IOTHUB_DEVICE_CONNECTION_STRING")
                .env_remove("RUST_LOG")
                .env("HUBPROBE_NTP_SERVER", "none")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(self.path("agent.log")).unwrap())
                .spawn()
                .expect("spawn hubprobe agent"),
        )
    }
}

/// The agent's process, killed when dropped: a test that fails before it stops the
/// agent leaves no agent running behind it.
struct AgentChild(Child);

impl std::ops::Deref for AgentChild {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for AgentChild {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
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

/// Spooled reports (pending and delivered), oldest first, each parsed and checked
/// against the schema.
fn spooled(dir: &Path) -> Vec<(String, bool, Value)> {
    // The uploader may move a report into delivered/ while it is listed: list again.
    for _ in 0..20 {
        if let Some(v) = try_spooled(dir) {
            return v;
        }
    }
    panic!("the spool kept changing under the listing");
}

/// One listing, or `None` when a file moved away in the middle of it.
fn try_spooled(dir: &Path) -> Option<Vec<(String, bool, Value)>> {
    let mut v = Vec::new();
    for (sub, delivered) in [(dir.to_path_buf(), false), (dir.join("delivered"), true)] {
        let Ok(rd) = std::fs::read_dir(&sub) else {
            continue;
        };
        for e in rd {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.ends_with(".json") {
                continue;
            }
            let text = match std::fs::read_to_string(e.path()) {
                Ok(t) => t,
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => return None,
                Err(err) => panic!("cannot read spool file {name}: {err}"),
            };
            let report: Value = serde_json::from_str(&text)
                .unwrap_or_else(|err| panic!("corrupt spool file {name}: {err}\n{text}"));
            assert_valid(&report);
            v.push((name, delivered, report));
        }
    }
    v.sort_by(|a, b| a.0.cmp(&b.0));
    Some(v)
}

fn ids_of(reports: &[(String, bool, Value)]) -> Vec<String> {
    reports
        .iter()
        .map(|(_, _, r)| r["id"].as_str().unwrap().to_string())
        .collect()
}

fn wait_until(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn sigterm(child: &Child) {
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
}

fn wait_exit(child: &mut Child, limit: Duration) -> i32 {
    let end = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s.code().unwrap_or(-1);
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the agent did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn cycles_spool_ndjson_textfile_and_upload() {
    let lab = Lab::start();
    let sub = lab.subscriber("reader-1");
    let cfg = lab.config(&[]);
    let out = lab.agent(&cfg, &["--cycles", "3"], Duration::from_secs(60));
    assert_eq!(out.code, 0, "{}", out.all_output());
    assert!(
        !out.all_output().contains(DEVICE_KEY),
        "the device key leaked"
    );
    assert!(!out.all_output().contains("sig="), "a SAS signature leaked");

    // Three checks, all delivered (the run drains uploads before it ends).
    let reports = spooled(&lab.spool());
    assert_eq!(reports.len(), 3, "{reports:?}");
    assert!(reports.iter().all(|(_, delivered, _)| *delivered));
    for (_, _, r) in &reports {
        assert_eq!(r["kind"], "check");
        assert_eq!(r["verdict"], "ok", "{r:#}");
        assert_eq!(r["labels"]["site"], "lab");
        assert_eq!(r["target"]["device_id"], "dev1");
        let c = &r["canary"];
        assert_eq!(c["endpoint"], "mqtt-tls");
        assert_eq!(c["keepalive_s"], 240);
    }
    // By the last check the canary had long been connected.
    let last = &reports[2].2;
    assert_eq!(last["canary"]["connected"], true, "{:#}", last["canary"]);
    assert!(last["canary"]["sessions_total"].as_u64().unwrap() >= 1);

    // The same reports, once each, in order, on the hub's device-to-cloud topic.
    let got = sub.wait_for(3, Duration::from_secs(10));
    let ids = ids_of(&reports);
    let got_ids: Vec<String> = got
        .iter()
        .map(|m| {
            let r: Value = serde_json::from_slice(&m.payload).unwrap();
            assert_valid(&r);
            assert!(
                m.topic
                    .starts_with("devices/dev1/messages/events/$.ct=application%2Fjson"),
                "{}",
                m.topic
            );
            assert!(m.topic.contains("hubprobe=report"), "{}", m.topic);
            let id = r["id"].as_str().unwrap().to_string();
            assert!(m.topic.ends_with(&format!("$.mid={id}")), "{}", m.topic);
            id
        })
        .collect();
    assert_eq!(got_ids, ids);

    // NDJSON: one line per report, same ids.
    let nd = std::fs::read_to_string(lab.path("reports.ndjson")).unwrap();
    let nd_ids: Vec<String> = nd
        .lines()
        .map(|l| {
            let r: Value = serde_json::from_str(l).unwrap();
            r["id"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(nd_ids, ids);

    // The textfile holds the last check's metrics with the canary's, is valid for
    // promtool, and was replaced whole each cycle (no temporary left).
    let prom = std::fs::read_to_string(lab.path("hubprobe.prom")).unwrap();
    assert!(prom.contains("\nhubprobe_success 1\n"), "{prom}");
    assert!(prom.contains("hubprobe_canary_up 1"), "{prom}");
    assert!(
        prom.contains(
            "hubprobe_canary_disconnects_total{endpoint=\"mqtt-tls\",cause=\"no_pingresp\"} 0"
        ),
        "{prom}"
    );
    assert!(prom.contains("label_site=\"lab\""), "{prom}");
    // It is the last check's.
    let finished = humantime::parse_rfc3339(reports[2].2["finished_at"].as_str().unwrap())
        .unwrap()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let exported: f64 = prom
        .lines()
        .find_map(|l| l.strip_prefix("hubprobe_finished_timestamp_seconds "))
        .expect("hubprobe_finished_timestamp_seconds")
        .parse()
        .unwrap();
    assert!(
        (exported - finished).abs() < 0.01,
        "{exported} vs {finished}"
    );
    let promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(lab.path("hubprobe.prom")).unwrap())
        .output()
        .expect("promtool (Debian package prometheus)");
    assert!(
        promtool.status.success(),
        "{}{}",
        String::from_utf8_lossy(&promtool.stdout),
        String::from_utf8_lossy(&promtool.stderr)
    );

    let leftovers: Vec<_> = std::fs::read_dir(lab.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn check_config_validates_and_names_the_key() {
    let lab = Lab::start();
    let cfg = lab.config(&[]);
    let ok = lab.agent(&cfg, &["--check-config"], Duration::from_secs(20));
    assert_eq!(ok.code, 0, "{}", ok.all_output());
    assert!(ok.stdout.contains("valid"));

    let bad = lab.path("bad.toml");
    std::fs::write(
        &bad,
        std::fs::read_to_string(&cfg)
            .unwrap()
            .replace("interval = \"1s\"", "intervall = \"1s\""),
    )
    .unwrap();
    let out = lab.agent(&bad, &["--check-config"], Duration::from_secs(20));
    assert_eq!(out.code, 3, "{}", out.all_output());
    assert!(
        out.stderr.contains("[schedule] intervall") && out.stderr.contains("unknown field"),
        "{}",
        out.stderr
    );
    assert_eq!(
        out.stderr.trim().lines().count(),
        1,
        "one clear line: {}",
        out.stderr
    );

    // A connection string file with a malformed key: named, the key not echoed.
    std::fs::write(
        lab.path("connection-string"),
        format!("HostName={HUB_HOST};DeviceId=dev1;SharedAccessKey=not*base64{DEVICE_KEY}"),
    )
    .unwrap();
    let out = lab.agent(&cfg, &["--check-config"], Duration::from_secs(20));
    assert_eq!(out.code, 3, "{}", out.all_output());
    assert!(
        !out.all_output().contains(DEVICE_KEY),
        "{}",
        out.all_output()
    );

    // A missing file.
    let out = lab.agent(
        &lab.path("nope.toml"),
        &["--check-config"],
        Duration::from_secs(20),
    );
    assert_eq!(out.code, 3);
    assert!(out.stderr.contains("cannot read config"), "{}", out.stderr);
    // Not a panic anywhere.
    assert!(!out.stderr.contains("panicked"));
}

#[test]
fn broker_outage_then_every_report_arrives_once_in_order() {
    let mut lab = Lab::persistent();
    let sub = lab.subscriber("reader-outage");
    let cfg = lab.config(&[]);
    let mut agent = lab.spawn_agent(&cfg, &[]);
    // Up: the first reports go out.
    wait_until(Duration::from_secs(20), "2 uploads", || {
        sub.received().len() >= 2
    });
    // Down: checks fail and are spooled, nothing can be delivered.
    lab.broker.stop();
    let before = spooled(&lab.spool()).len();
    wait_until(
        Duration::from_secs(30),
        "3 reports during the outage",
        || {
            spooled(&lab.spool()).iter().filter(|(_, d, _)| !d).count() >= 3
                && spooled(&lab.spool()).len() >= before + 3
        },
    );
    let during: Vec<String> = spooled(&lab.spool())
        .iter()
        .filter(|(_, d, r)| !d && r["verdict"] == "critical")
        .map(|(_, _, r)| r["id"].as_str().unwrap().to_string())
        .collect();
    assert!(
        during.len() >= 3,
        "checks during the outage fail: {during:?}"
    );
    // Up again: the backlog drains.
    lab.broker.start_again();
    wait_until(Duration::from_secs(40), "the backlog to drain", || {
        let s = spooled(&lab.spool());
        s.iter().filter(|(_, d, _)| !d).count() <= 1
            && during
                .iter()
                .all(|id| sub.received().iter().any(|m| m.topic.contains(id.as_str())))
    });
    sigterm(&agent);
    assert_eq!(wait_exit(&mut agent, Duration::from_secs(15)), 0);

    // Every delivered report arrived, in spool order, none twice.
    let reports = spooled(&lab.spool());
    let delivered: Vec<String> = reports
        .iter()
        .filter(|(_, d, _)| *d)
        .map(|(_, _, r)| r["id"].as_str().unwrap().to_string())
        .collect();
    let got: Vec<String> = sub
        .received()
        .iter()
        .map(|m| {
            let r: Value = serde_json::from_slice(&m.payload).unwrap();
            r["id"].as_str().unwrap().to_string()
        })
        .collect();
    let unique: BTreeSet<&String> = got.iter().collect();
    assert_eq!(unique.len(), got.len(), "a report arrived twice: {got:?}");
    assert_eq!(got, delivered, "arrival order = spool order");
    for id in &during {
        assert!(got.contains(id), "outage report {id} never arrived");
    }
}

#[test]
fn kill_9_mid_cycle_loses_nothing_and_leaves_no_corrupt_file() {
    let lab = Lab::start();
    let sub = lab.subscriber("reader-kill");
    let cfg = lab.config(&[]);
    let mut agent = lab.spawn_agent(&cfg, &[]);
    wait_until(Duration::from_secs(20), "3 reports", || {
        spooled(&lab.spool()).len() >= 3
    });
    // Kill while it works (checks every second, uploads right after each).
    std::thread::sleep(Duration::from_millis(1300));
    agent.kill().unwrap();
    agent.wait().unwrap();
    let after_kill = spooled(&lab.spool()); // parses and validates every file
    assert!(after_kill.len() >= 3);

    // Restart: it carries on with what is pending, and everything is delivered.
    let out = lab.agent(&cfg, &["--cycles", "2"], Duration::from_secs(60));
    assert_eq!(out.code, 0, "{}", out.all_output());
    let all = spooled(&lab.spool());
    assert!(all.iter().all(|(_, d, _)| *d), "all delivered: {all:?}");
    assert_eq!(all.len(), after_kill.len() + 2);
    let got: BTreeSet<String> = sub
        .wait_for(all.len(), Duration::from_secs(10))
        .iter()
        .map(|m| {
            let r: Value = serde_json::from_slice(&m.payload).unwrap();
            r["id"].as_str().unwrap().to_string()
        })
        .collect();
    let want: BTreeSet<String> = ids_of(&all).into_iter().collect();
    assert_eq!(got, want, "every report reached the broker");
    // At most the one in flight at the kill may have been sent twice.
    let n = sub.received().len();
    assert!(n <= all.len() + 1, "{n} messages for {} reports", all.len());
    // No temporary files survive the restart.
    let tmp: Vec<_> = std::fs::read_dir(lab.spool())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(tmp.is_empty(), "{tmp:?}");
}

#[test]
fn retention_keeps_the_spool_under_its_byte_limit() {
    let lab = Lab::start();
    // No upload: nothing is ever delivered, so retention must drop undelivered ones.
    let cfg = lab.config(&[
        ("spool", "max_bytes = \"64KiB\"\nmax_reports = 1000"),
        ("upload", "# upload off below"),
    ]);
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("enabled = true\nrate", "enabled = false\nrate");
    std::fs::write(&cfg, text).unwrap();
    // Reports are a few KiB each: 40 cycles pass 64 KiB several times over.
    let out = lab.agent(
        &cfg,
        &["--cycles", "40", "--interval", "100ms"],
        Duration::from_secs(120),
    );
    assert_eq!(out.code, 0, "{}", out.all_output());
    let reports = spooled(&lab.spool());
    let bytes: u64 = std::fs::read_dir(lab.spool())
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum();
    assert!(bytes <= 64 * 1024, "{bytes} bytes in the spool");
    assert!(
        reports.len() < 40,
        "retention removed some: {}",
        reports.len()
    );
    assert!(out.stderr.contains("retention removed"), "{}", out.stderr);
    // The newest ones are kept.
    let nd = std::fs::read_to_string(lab.path("reports.ndjson")).unwrap();
    let last_id = serde_json::from_str::<Value>(nd.lines().last().unwrap()).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(ids_of(&reports).last().unwrap(), &last_id);
}

#[test]
fn read_only_spool_is_logged_and_the_agent_keeps_running() {
    let lab = Lab::start();
    let cfg = lab.config(&[]);
    let spool = lab.spool();
    std::fs::create_dir_all(spool.join("delivered")).unwrap();
    // A read-only bind mount: root ignores permission bits, not a read-only mount.
    let ro = Command::new("mount")
        .args(["--bind", "-o", "ro"])
        .arg(&spool)
        .arg(&spool)
        .status()
        .expect("mount");
    assert!(ro.success(), "cannot bind-mount the spool read-only");
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(spool.clone());
    let out = lab.agent(&cfg, &["--cycles", "2"], Duration::from_secs(60));
    assert_eq!(out.code, 0, "{}", out.all_output());
    assert!(
        out.stderr.contains("cannot write report") && out.stderr.contains("keeps running"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("panicked"));
    // The other outputs still work.
    assert_eq!(
        std::fs::read_to_string(lab.path("reports.ndjson"))
            .unwrap()
            .lines()
            .count(),
        2
    );
    assert!(lab.path("hubprobe.prom").exists());
}

#[test]
fn sighup_reloads_and_sigterm_stops_cleanly() {
    let lab = Lab::start();
    let cfg = lab.config(&[]);
    let mut agent = lab.spawn_agent(&cfg, &[]);
    wait_until(Duration::from_secs(20), "a report", || {
        !spooled(&lab.spool()).is_empty()
    });
    // A broken file on SIGHUP is refused and the agent keeps the running one.
    let good = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, good.replace("[labels]", "[labels]\nbogus key = 1")).unwrap();
    unsafe {
        libc::kill(agent.id() as i32, libc::SIGHUP);
    }
    std::thread::sleep(Duration::from_millis(1500));
    assert!(agent.try_wait().unwrap().is_none(), "still running");
    // A good new file: its labels show in later reports.
    std::fs::write(&cfg, good.replace("site = \"lab\"", "site = \"reloaded\"")).unwrap();
    unsafe {
        libc::kill(agent.id() as i32, libc::SIGHUP);
    }
    wait_until(
        Duration::from_secs(20),
        "a report with the new label",
        || {
            spooled(&lab.spool())
                .iter()
                .any(|(_, _, r)| r["labels"]["site"] == "reloaded")
        },
    );
    sigterm(&agent);
    assert_eq!(wait_exit(&mut agent, Duration::from_secs(15)), 0);
    let log = std::fs::read_to_string(lab.path("agent.log")).unwrap();
    assert!(log.contains("reload refused"), "{log}");
    assert!(log.contains("configuration reloaded"), "{log}");
    assert!(log.contains("agent stopped"), "{log}");
    assert!(!log.contains(DEVICE_KEY));
    // Every file in the spool is whole.
    spooled(&lab.spool());
}

#[test]
fn once_exits_with_the_check_code_and_uploads_to_a_topic() {
    let lab = Lab::start();
    let sub = Subscriber::start(lab.broker.addr("plain"), "reader-once", "fleet/#");
    let cfg = lab.config(&[(
        "upload",
        "to = \"topic\"\ntopic = \"fleet/{device_id}/reports\"",
    )]);
    let out = lab.agent(&cfg, &["--once"], Duration::from_secs(60));
    assert_eq!(out.code, 0, "{}", out.all_output());
    let got = sub.wait_for(1, Duration::from_secs(10));
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].topic, "fleet/dev1/reports");
    let r: Value = serde_json::from_slice(&got[0].payload).unwrap();
    assert_valid(&r);
    // --once keeps no canary: the report has no canary section.
    assert!(r.get("canary").is_none(), "{r:#}");
    // ... and the check ran its own MQTT phase with the identity.
    let mqtt = support::phase(&r, "mqtt-tls", "mqtt");
    assert_eq!(mqtt["status"], "ok", "{mqtt:#}");

    // A hub that refuses TCP: CRITICAL, exit 2, the report still spooled.
    let refused = common::refused_port();
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        &format!("mqtt-tls = {}", lab.broker.port("tls_anon")),
        &format!("mqtt-tls = {}", refused.port()),
    );
    std::fs::write(&cfg, text).unwrap();
    let out = lab.agent(
        &cfg,
        &["--once", "--drain-timeout", "2s"],
        Duration::from_secs(60),
    );
    assert_eq!(out.code, 2, "{}", out.all_output());
    let reports = spooled(&lab.spool());
    assert_eq!(reports.len(), 2);
    assert_eq!(reports[1].2["verdict"], "critical");
    assert!(!reports[1].1, "undelivered: the hub is unreachable");
}

#[test]
fn periodic_tune_reports_a_keepalive_and_the_canary_steps_aside() {
    let lab = Lab::start();
    let cfg = lab.config(&[("schedule", "tune_interval = \"1s\"\ntune_samples = 3")]);
    let out = lab.agent(&cfg, &["--cycles", "2"], Duration::from_secs(120));
    assert_eq!(out.code, 0, "{}", out.all_output());
    let reports = spooled(&lab.spool());
    let kinds: Vec<&str> = reports
        .iter()
        .map(|(_, _, r)| r["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["check", "tune", "check", "tune"], "{kinds:?}");
    for (_, delivered, r) in &reports {
        assert!(delivered);
        if r["kind"] == "tune" {
            let k = &r["keepalive"];
            assert!(
                k["recommendation"]["keepalive_s"].as_u64().unwrap() > 0,
                "{k:#}"
            );
            assert_eq!(r["labels"]["site"], "lab");
            // The tune's bytes are its own purpose in its own report's bill: at
            // least one TLS handshake and CONNECT plus the samples' pings.
            let tune = &r["traffic"]["period"]["tune"];
            assert!(
                tune["sent"].as_u64().unwrap() > 300 && tune["received"].as_u64().unwrap() > 1000,
                "{:#}",
                r["traffic"]
            );
            assert!(
                r["traffic"]["period"]["checks"]["sent"].as_u64() == Some(0),
                "the tune's period holds no check: {:#}",
                r["traffic"]
            );
        } else {
            // A check report's period holds no tune bytes (the field is absent).
            assert!(
                r["traffic"]["period"].get("tune").is_none(),
                "{:#}",
                r["traffic"]
            );
        }
    }
    // `--check-config` prices the tune from the last one measured.
    let out = lab.agent(&cfg, &["--check-config"], Duration::from_secs(30));
    assert_eq!(out.code, 0, "{}", out.all_output());
    let line = out
        .stdout
        .lines()
        .find(|l| l.trim_start().starts_with("tune "))
        .unwrap_or_else(|| panic!("no tune line: {}", out.stdout));
    assert!(
        line.contains("86400.0 runs a day") && line.contains("measured by the last tune"),
        "{line}"
    );
    // The canary closed for the tune on purpose: that is not a disconnect.
    let last_check = &reports[2].2;
    let totals = last_check["canary"]["disconnects_total"]
        .as_object()
        .unwrap();
    assert!(
        totals.values().all(|v| v == 0),
        "{:#}",
        last_check["canary"]
    );
}

#[test]
fn no_secret_in_logs_reports_or_state_even_at_trace() {
    let lab = Lab::start();
    let cfg = lab.config(&[]);
    let state = lab.path("state");
    let out = run_with_env(
        &[
            "agent",
            "--config",
            cfg.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
            "--cycles",
            "2",
        ],
        &[("RUST_LOG", "trace")],
        Duration::from_secs(60),
    );
    assert_eq!(
        out.code,
        0,
        "{}",
        out.stderr.chars().take(4000).collect::<String>()
    );
    assert!(out.stderr.len() > 1000, "trace logging is on");
    // Everything the agent wrote: its output, the spool, the NDJSON, the state.
    let mut everything = out.all_output();
    for dir in [lab.spool(), lab.spool().join("delivered"), state] {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_file() {
                everything.push_str(&std::fs::read_to_string(p).unwrap());
            }
        }
    }
    everything.push_str(&std::fs::read_to_string(lab.path("reports.ndjson")).unwrap());
    assert!(!everything.contains(DEVICE_KEY), "the device key leaked");
    assert!(!everything.contains("sig="), "a SAS signature leaked");
    assert!(
        !everything.contains("SharedAccessSignature sr="),
        "a SAS token leaked"
    );
}

#[test]
fn fleet_summarize_reads_what_the_agent_wrote() {
    // The agent's own NDJSON (checks with canary sections, one disconnect caused by a
    // take-over) is what fleet tooling gathers: summarize it.
    let lab = Lab::start();
    let cfg = lab.config(&[]);
    let mut agent = lab.spawn_agent(&cfg, &[]);
    wait_until(Duration::from_secs(20), "a connected canary", || {
        spooled(&lab.spool())
            .iter()
            .any(|(_, _, r)| r["canary"]["connected"] == true)
    });
    // Another client with the device's id: the broker drops the canary's session.
    let kicker = Subscriber::start(lab.broker.addr("plain"), "dev1", "nothing/#");
    drop(kicker);
    wait_until(
        Duration::from_secs(20),
        "the disconnect in a report",
        || {
            spooled(&lab.spool()).iter().any(|(_, _, r)| {
                r["canary"]["recent"]
                    .as_array()
                    .is_some_and(|a| !a.is_empty())
            })
        },
    );
    sigterm(&agent);
    assert_eq!(wait_exit(&mut agent, Duration::from_secs(15)), 0);
    let n = spooled(&lab.spool()).len() as u64;

    let nd = lab.path("reports.ndjson");
    let out = run_with_env(
        &["fleet", "summarize", nd.to_str().unwrap(), "-o", "json"],
        &[],
        Duration::from_secs(30),
    );
    assert_eq!(out.code, 0, "{}", out.all_output());
    let s: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(s["input"]["reports"], n, "{:#}", s["input"]);
    assert_eq!(s["devices"], 1);
    let causes = s["overall"]["disconnects"].as_array().unwrap();
    let eof: Vec<&Value> = causes
        .iter()
        .filter(|c| c["cause"] == "eof_without_disconnect")
        .collect();
    assert_eq!(eof.len(), 1, "{causes:#?}");
    assert!(eof[0]["events"].as_u64().unwrap() >= 1, "{causes:#?}");
    assert_eq!(eof[0]["devices"], 1);
}

/// Report-like JSON of about `n` bytes.
fn report_json(i: usize, n: usize) -> Vec<u8> {
    format!("{{\"id\":\"r-{i}\",\"pad\":\"{}\"}}", "x".repeat(n)).into_bytes()
}

/// Names in the spool and its delivered/ directory.
fn spool_names(dir: &Path) -> Vec<String> {
    [dir.to_path_buf(), dir.join("delivered")]
        .iter()
        .flat_map(|d| std::fs::read_dir(d).unwrap())
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "delivered")
        .collect()
}

#[test]
fn a_full_disk_evicts_delivered_reports_and_loses_no_new_one() {
    use hubprobe::agent::spool::{Retention, Spool};
    let fs = agent_lab::Tmpfs::mount("256k");
    let dir = fs.path().join("spool");
    // A byte limit the file system cannot hold: only ENOSPC stops the writes.
    let retention = Retention {
        max_reports: 100_000,
        max_age: Duration::from_secs(86_400),
        max_bytes: 1 << 30,
    };
    let mut spool = Spool::open(&dir, retention).unwrap();
    // Five reports that are never delivered must survive everything below.
    let kept: Vec<_> = (0..5)
        .map(|i| {
            spool
                .write(&format!("keep-{i}"), &report_json(i, 3000))
                .unwrap()
        })
        .collect();
    // 400 cycles of ~3 KB reports (each takes a 4 KiB page): 256 KiB fills many
    // times over; each one is delivered after it is written.
    for i in 0..400 {
        let e = spool
            .write(&format!("r-{i}"), &report_json(i, 3000))
            .unwrap_or_else(|err| panic!("cycle {i}: the new report was lost: {err}"));
        spool.prune(std::time::SystemTime::now()).unwrap();
        spool.mark_delivered(&e).unwrap();
    }
    let evicted = spool.evicted_for_space();
    assert!(evicted.delivered > 100, "the disk did fill: {evicted:?}");
    assert_eq!(
        evicted.undelivered, 0,
        "an undelivered report went while delivered ones could: {evicted:?}"
    );
    for e in &kept {
        assert!(e.path.exists(), "{} was removed", e.id);
    }
    // Nothing torn, no temporary file left.
    for name in spool_names(&dir) {
        assert!(!name.starts_with('.'), "a temporary file was left: {name}");
    }
    for e in spool.all().unwrap() {
        serde_json::from_slice::<Value>(&std::fs::read(&e.path).unwrap()).unwrap();
    }

    // Nothing delivered any more: the oldest undelivered make room for the new.
    for i in 0..100 {
        spool
            .write(&format!("u-{i}"), &report_json(i, 3000))
            .unwrap_or_else(|err| panic!("undelivered cycle {i}: {err}"));
    }
    let evicted = spool.evicted_for_space();
    assert!(evicted.undelivered > 0, "{evicted:?}");
    let pending: Vec<String> = spool.pending().unwrap().into_iter().map(|e| e.id).collect();
    assert_eq!(pending.last().unwrap(), "u-99");
    assert!(
        !pending.contains(&"keep-0".to_string()),
        "the oldest went first"
    );
    for name in spool_names(&dir) {
        assert!(!name.starts_with('.'), "a temporary file was left: {name}");
    }
    // A report that cannot fit even in an empty file system is refused whole.
    let err = spool
        .write("huge", &report_json(0, 400 * 1024))
        .unwrap_err();
    assert!(hubprobe::agent::spool::is_out_of_space(&err), "{err}");
    assert!(!spool_names(&dir).iter().any(|n| n.contains("huge")));
}

#[test]
fn the_agent_on_a_full_disk_keeps_writing_and_uploading() {
    let lab = Lab::start();
    let fs = agent_lab::Tmpfs::mount("96k");
    let spool = fs.path().join("spool");
    let cfg = lab.config(&[("spool", "max_bytes = \"1GiB\"\nmax_reports = 100000")]);
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        &format!("dir = \"{}\"", lab.spool().display()),
        &format!("dir = \"{}\"", spool.display()),
    );
    std::fs::write(&cfg, text).unwrap();
    let sub = lab.subscriber("reader-full-disk");
    // Reports are a few KiB: 40 of them fill 96 KiB several times over.
    let out = lab.agent(
        &cfg,
        &["--cycles", "40", "--interval", "100ms"],
        Duration::from_secs(120),
    );
    assert_eq!(out.code, 0, "{}", out.all_output());
    assert!(
        !out.stderr.contains("cannot write report"),
        "a report was lost to the full disk: {}",
        out.stderr
    );
    assert!(
        out.stderr.contains("the file system is full"),
        "the disk never filled: {}",
        out.stderr
    );
    assert_eq!(
        out.stderr.matches("report spooled").count(),
        40,
        "{}",
        out.stderr
    );
    // Every report the agent made reached the broker.
    let nd = std::fs::read_to_string(lab.path("reports.ndjson")).unwrap();
    let made: Vec<String> = nd
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(made.len(), 40);
    wait_until(Duration::from_secs(20), "every report uploaded", || {
        made.iter()
            .all(|id| sub.received().iter().any(|m| m.topic.contains(id.as_str())))
    });
    for name in spool_names(&spool) {
        assert!(!name.starts_with('.'), "a temporary file was left: {name}");
    }
}

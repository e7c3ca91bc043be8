//! The agent through squid, configured by its `[proxy]` section: the checks and
//! the canary go through the proxy (the namespace drops every direct SYN from the
//! agent to the broker), squid's short `read_timeout` closes the canary's idle
//! tunnel before each keep-alive, and the canary records and diagnoses those closes.

mod common;
mod support;

use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::proxies::{self, SquidConfig};
use common::{Mosquitto, Netns};
use serde_json::Value;

struct Agent {
    child: Child,
    dir: PathBuf,
}

impl Agent {
    fn reports(&self) -> Vec<Value> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(self.dir.join("spool"))
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "json"))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
            .iter()
            .filter_map(|p| serde_json::from_str::<Value>(&std::fs::read_to_string(p).ok()?).ok())
            .inspect(support::assert_valid)
            .collect()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default()
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
                "timed out waiting for {what}\n--- agent log ---\n{}\n--- last canary ---\n{:#}",
                self.log(),
                r.last().map(|r| r["canary"].clone()).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_agent_checks_and_holds_its_canary_through_squid() {
    let ns = Netns::new();
    let (broker, squid) = ns.run(|| {
        let broker = Mosquitto::start(&[]);
        let squid = proxies::squid(&SquidConfig {
            connect_ports: vec![broker.port("plain")],
            users: vec![("agent".into(), "Ag3nt-proxy-pw".into())],
            hosts: vec![],
            read_timeout: Some(Duration::from_secs(2)),
        });
        (broker, squid)
    });
    let ports: Vec<String> = broker.ports().iter().map(|(_, p)| p.to_string()).collect();
    ns.nft(&format!(
        "add table inet hp_proxy\n\
         add chain inet hp_proxy output {{ type filter hook output priority 0; policy accept; }}\n\
         add rule inet hp_proxy output meta skuid 0 ip daddr 127.0.0.1 tcp dport {{ {} }} tcp flags & (syn | ack) == syn drop\n",
        ports.join(", ")
    ));
    let dir = tempfile::tempdir().unwrap();
    let pwfile = dir.path().join("proxy-password");
    std::fs::write(&pwfile, "Ag3nt-proxy-pw\n").unwrap();
    let config = format!(
        r#"[hub]
host = "127.0.0.1"
profile = "mqtt-broker"
endpoints = ["mqtt"]
ports = {{ mqtt = {plain} }}
timeout = "2s"
keepalive = "4s"
[schedule]
interval = "2s"
spread = "0s"
deadline = "6s"
[canary]
ping_timeout = "1s"
reconnect_min = "200ms"
reconnect_max = "500ms"
[spool]
dir = "{spool}"
[proxy]
url = "http://agent@127.0.0.1:{sq}"
password_file = "{pw}"
"#,
        plain = broker.port("plain"),
        spool = dir.path().join("spool").display(),
        sq = squid.port(),
        pw = pwfile.display(),
    );
    let cfg = dir.path().join("config.toml");
    std::fs::write(&cfg, config).unwrap();
    let mut cmd = ns.command(support::bin());
    cmd.args(["agent", "--config"])
        .arg(&cfg)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .env("RUST_LOG", "trace")
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy")
        .env_remove("ALL_PROXY")
        .env_remove("all_proxy")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("agent.log")).unwrap());
    let agent = Agent {
        child: cmd.spawn().expect("spawn hubprobe agent"),
        dir: dir.path().to_path_buf(),
    };

    // The checks go through the proxy.
    let r = agent.wait(Duration::from_secs(40), "a check through the proxy", |r| {
        r.iter().any(|r| {
            r["endpoints"][0]["phases"].as_array().is_some_and(|p| {
                p.iter()
                    .any(|p| p["phase"] == "proxy" && p["status"] == "ok")
            })
        })
    });
    let last = r.last().unwrap();
    assert_eq!(last["target"]["proxy"]["source"], "[proxy] url");
    assert_eq!(
        last["target"]["proxy"]["url"],
        format!("http://agent:***@127.0.0.1:{}", squid.port())
    );

    // squid closes the canary's idle tunnel after 2 s, before the 4 s keep-alive:
    // the canary records the closes and diagnoses an idle timeout.
    let r = agent.wait(Duration::from_secs(60), "the idle-timeout diagnosis", |r| {
        r.last()
            .is_some_and(|r| r["canary"]["diagnosis"]["kind"] == "idle_timeout")
    });
    let c = &r.last().unwrap()["canary"];
    let closes = c["disconnects_total"]["eof_without_disconnect"]
        .as_u64()
        .unwrap_or(0);
    assert!(closes >= 2, "{c:#}");
    assert!(
        squid.wait_log(
            &format!("CONNECT 127.0.0.1:{}", broker.port("plain")),
            Duration::from_secs(10)
        ),
        "{}",
        squid.access_log()
    );
    let log = agent.log();
    assert!(
        !log.contains("Ag3nt-proxy-pw"),
        "the proxy password leaked into the log"
    );
    for r in agent.reports() {
        assert!(!r.to_string().contains("Ag3nt-proxy-pw"));
    }
}

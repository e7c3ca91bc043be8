//! `hubprobe tune` through squid with a short `read_timeout`: squid closes idle
//! tunnels on its own timer, and both the hub-only search and the reflector
//! ladder must report that as the path's idle timeout. The namespace drops every
//! direct SYN from hubprobe to the broker and the reflector, so the sessions went
//! through squid.

mod common;
mod support;

use std::process::{Child, Stdio};
use std::time::Duration;

use common::proxies::{self, SquidConfig};
use common::{Mosquitto, Netns};

const READ_TIMEOUT: Duration = Duration::from_secs(3);

struct Reflector(Child);

impl Drop for Reflector {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn drop_direct(ns: &Netns, ports: &[u16]) {
    let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
    ns.nft(&format!(
        "add table inet hp_proxy\n\
         add chain inet hp_proxy output {{ type filter hook output priority 0; policy accept; }}\n\
         add rule inet hp_proxy output meta skuid 0 ip daddr 127.0.0.1 tcp dport {{ {} }} tcp flags & (syn | ack) == syn drop\n",
        ports.join(", ")
    ));
}

fn tune(ns: &Netns, args: &[&str]) -> serde_json::Value {
    let mut cmd = ns.command(support::bin());
    cmd.args(args);
    let out = support::run_cmd(&mut cmd, &[], Duration::from_secs(120));
    let report = out.report();
    assert!(out.code <= 1, "{}", out.all_output());
    report
}

fn assert_finds_the_read_timeout(k: &serde_json::Value) {
    let d = &k["discovery"];
    let failed = d["shortest_failed_ms"]
        .as_u64()
        .unwrap_or_else(|| panic!("no idle drop found through squid: {k:#}"));
    let survived = d["longest_survived_ms"].as_u64().unwrap_or(0);
    let rt = READ_TIMEOUT.as_millis() as u64;
    // squid's timer: a tunnel idle longer than read_timeout (checked about once a
    // second) is closed; one idle clearly shorter survives.
    assert!(failed > survived, "{d:#}");
    assert!(
        failed <= 3 * rt,
        "the drop was found near squid's read_timeout: {d:#}"
    );
    assert!(survived < 2 * rt, "{d:#}");
}

#[test]
fn tune_through_squid_finds_its_tunnel_idle_timeout() {
    let ns = Netns::new();
    let refl_port = common::free_port();
    let (broker, squid) = ns.run(|| {
        let broker = Mosquitto::start(&[]);
        let squid = proxies::squid(&SquidConfig {
            connect_ports: vec![broker.port("plain"), refl_port],
            users: vec![],
            hosts: vec![],
            read_timeout: Some(READ_TIMEOUT),
        });
        (broker, squid)
    });
    let reflector = Reflector(
        ns.command(support::bin())
            .args(["reflect", "--listen", &format!("127.0.0.1:{refl_port}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn hubprobe reflect"),
    );
    let mut ports: Vec<u16> = broker.ports().iter().map(|(_, p)| *p).collect();
    ports.push(refl_port);
    drop_direct(&ns, &ports);
    let proxy = format!("http://127.0.0.1:{}", squid.port());
    let port = format!("mqtt={}", broker.port("plain"));
    let common_args = [
        "tune",
        "127.0.0.1",
        "--profile",
        "mqtt-broker",
        "--endpoint",
        "mqtt",
        "--port",
        &port,
        "--proxy",
        &proxy,
        "--samples",
        "3",
        "--sample-interval",
        "20ms",
        "--min-idle",
        "1s",
        "--max-idle",
        "9s",
        "--timeout",
        "5s",
        "-o",
        "json",
    ];

    // Hub-only mode: MQTT sessions held idle through the tunnel.
    let r = tune(&ns, &common_args);
    assert_eq!(r["target"]["proxy"]["url"], proxy);
    let k = &r["keepalive"];
    assert_eq!(k["mode"], "hub");
    assert_finds_the_read_timeout(k);
    assert!(
        squid.wait_log(
            &format!("127.0.0.1:{}", broker.port("plain")),
            Duration::from_secs(10)
        ),
        "{}",
        squid.access_log()
    );

    // Reflector mode: the ladder's connections go through the same proxy.
    let refl = format!("127.0.0.1:{refl_port}");
    common::wait_listening(&ns, refl_port);
    let mut args: Vec<&str> = common_args.to_vec();
    args.extend(["--reflector", &refl]);
    let r = tune(&ns, &args);
    let k = &r["keepalive"];
    assert_eq!(k["mode"], "reflector");
    assert_finds_the_read_timeout(k);
    assert!(
        squid.wait_log(&format!("CONNECT {refl}"), Duration::from_secs(10)),
        "{}",
        squid.access_log()
    );
    drop(reflector);
}

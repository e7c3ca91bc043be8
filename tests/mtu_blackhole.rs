//! Path-MTU black holes, on a real path: client ⇄ router ⇄ server network
//! namespaces (the NAT lab, plus routed IPv6 beside it). The router drops every
//! packet longer than N bytes and sends no ICMP (`meta length > N drop` in its
//! forward hook); mosquitto in the server namespace serves MQTT over TLS with a
//! certificate whose TLS flight (a hundred long SANs, about 5 kB) exceeds N. The
//! check must name the black hole with the largest working MSS near N - 40 (IPv4)
//! or N - 60 (IPv6), claim nothing on the same path without the rule, and keep a
//! plain stall after the ClientHello a `tls.timeout` without an MTU claim.
//!
//! The namespaces' veths send one segment per packet (`gso_max_segs 1`): with
//! TSO a server's burst crosses the router as one large GSO packet, which the
//! length rule would drop whatever the MSS.

mod common;
mod support;

use std::net::{IpAddr, Ipv6Addr};
use std::process::Command;
use std::time::Duration;

use common::{Certs, InNs, Nat, Netns};
use serde_json::Value;
use support::{run_cmd, Run};

const PORT4: u16 = 8883;
const PORT6: u16 = 8884;
const CLIENT6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x6d74, 0, 0, 0, 0, 0, 2);
const ROUTER6_IN: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x6d74, 0, 0, 0, 0, 0, 1);
const ROUTER6_OUT: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x6d75, 0, 0, 0, 0, 0, 1);
const SERVER6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x6d75, 0, 0, 0, 0, 0, 2);

struct Lab {
    nat: Nat,
    _broker: InNs,
    ca: std::path::PathBuf,
    _certs: Certs,
}

fn run_ok(ns: &Netns, args: &[&str]) {
    let e = ns.exec(args, Duration::from_secs(10));
    assert!(
        e.status.success() && !e.timed_out,
        "in {}: {args:?} failed: {}",
        ns.name(),
        e.stderr.trim()
    );
}

/// The NAT lab with routed IPv6 beside it, one segment per packet, and mosquitto
/// serving a large certificate flight on both families.
fn lab() -> Lab {
    let nat = Nat::new(Duration::from_secs(600));
    let (c, r, s) = (nat.client_ns(), nat.router_ns(), nat.server_ns());
    for (ns, dev, addr) in [
        (c, "c0", format!("{CLIENT6}/64")),
        (r, "r0", format!("{ROUTER6_IN}/64")),
        (r, "r1", format!("{ROUTER6_OUT}/64")),
        (s, "s0", format!("{SERVER6}/64")),
    ] {
        run_ok(ns, &["ip", "-6", "addr", "add", &addr, "dev", dev, "nodad"]);
    }
    run_ok(
        c,
        &[
            "ip",
            "-6",
            "route",
            "add",
            "default",
            "via",
            &ROUTER6_IN.to_string(),
        ],
    );
    run_ok(
        s,
        &[
            "ip",
            "-6",
            "route",
            "add",
            "fd00:6d74::/64",
            "via",
            &ROUTER6_OUT.to_string(),
        ],
    );
    run_ok(r, &["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]);
    // Until duplicate address detection has passed on the link-local addresses,
    // neighbour discovery can fail and the first SYNs get lost: wait it out
    // (bounded; DAD takes about a second).
    for ns in [c, r, s] {
        let mut settled = false;
        for _ in 0..100 {
            let e = ns.exec(
                &["ip", "-6", "addr", "show", "tentative"],
                Duration::from_secs(5),
            );
            if e.status.success() && e.stdout.trim().is_empty() {
                settled = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(settled, "IPv6 addresses in {} stay tentative", ns.name());
    }
    for (ns, dev) in [(c, "c0"), (r, "r0"), (r, "r1"), (s, "s0")] {
        run_ok(ns, &["ip", "link", "set", "dev", dev, "gso_max_segs", "1"]);
    }
    // The server's kernel must not find the black hole by itself (it is off by
    // default; make the lab say so).
    run_ok(s, &["sysctl", "-qw", "net.ipv4.tcp_mtu_probing=0"]);

    let certs = Certs::generate();
    let mut names: Vec<String> = vec![nat.server_addr().to_string(), SERVER6.to_string()];
    names.extend((0..100).map(|i| format!("device-gateway-{i:03}.large-flight.hubprobe.test")));
    let mut params = rcgen::CertificateParams::new(names).expect("SANs");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let id = certs.issue("large-flight", params);
    let flight = std::fs::read(&id.fullchain_pem).unwrap().len();
    assert!(
        flight > 5000,
        "the chain must make a large flight: {flight} B of PEM"
    );
    let broker = nat.start_mosquitto_tls(
        &[(nat.server_addr(), PORT4), (IpAddr::V6(SERVER6), PORT6)],
        &id.fullchain_pem,
        &id.key_pem,
    );
    Lab {
        ca: certs.ca_pem().to_path_buf(),
        _certs: certs,
        nat,
        _broker: broker,
    }
}

impl Lab {
    /// Drops, in the router, every forwarded IPv4 packet longer than `n4` and every
    /// IPv6 packet longer than `n6` bytes; no ICMP is sent.
    fn drop_longer_than(&self, n4: u32, n6: u32) {
        self.nat.router_ns().nft(&format!(
            "table inet hubprobe_mtu {{\n chain forward {{\n  type filter hook forward priority -10; policy accept;\n  \
             meta nfproto ipv4 meta length > {n4} counter drop\n  meta nfproto ipv6 meta length > {n6} counter drop\n }}\n}}\n"
        ));
    }

    /// Drops every server → client TCP packet that carries data (a SYN-ACK is 60
    /// bytes, a bare ACK 52): the ClientHello arrives, nothing comes back.
    fn stall_after_client_hello(&self) {
        self.nat.router_ns().nft(&format!(
            "table inet hubprobe_stall {{\n chain forward {{\n  type filter hook forward priority -10; policy accept;\n  \
             tcp sport {{ {PORT4}, {PORT6} }} meta length > 64 counter drop\n }}\n}}\n"
        ));
    }

    fn check(&self, host: IpAddr, port: u16, extra: &[&str]) -> Run {
        let port = format!("mqtt-tls={port}");
        let host = host.to_string();
        let mut cmd: Command = self.nat.client_ns().command(support::bin());
        cmd.args([
            "check",
            &host,
            "--profile",
            "mqtt-broker",
            "--endpoint",
            "mqtt-tls",
            "--port",
            &port,
            "--trust",
            "none",
            "--ca-file",
            self.ca.to_str().unwrap(),
            "--timeout",
            "2s",
            "--deadline",
            "90s",
            "--pings",
            "0",
        ]);
        cmd.args(extra);
        run_cmd(&mut cmd, &[], Duration::from_secs(150))
    }
}

fn tls_phase(report: &Value) -> &Value {
    report["endpoints"][0]["phases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["phase"] == "tls")
        .expect("a TLS phase")
}

fn mtu_findings(report: &Value) -> Vec<&Value> {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["code"].as_str().unwrap().contains("mtu"))
        .collect()
}

fn attempts(mtu: &Value) -> Vec<(Option<u64>, bool, String)> {
    mtu["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["mss"].as_u64(),
                a["clamped"].as_bool().unwrap(),
                a["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Asserts a named black hole whose largest working MSS is within 3 % below
/// `want` (N minus the IP and TCP headers), with the route's facts and the fix.
fn assert_black_hole(out: &Run, want: u64, overhead: u64) {
    let report = out.report();
    assert_eq!(out.code, 2, "{}", out.all_output());
    let tls = tls_phase(&report);
    assert_eq!(tls["status"], "failed", "{tls:#}");
    assert_eq!(tls["class"], "tls.mtu_black_hole", "{tls:#}");
    let mtu = &tls["evidence"]["mtu"];
    assert_eq!(mtu["trigger"], "tls_timeout");
    assert_eq!(mtu["black_hole"], true);
    assert_eq!(mtu["cut_short"], false, "{mtu:#}");
    let lwm = mtu["largest_working_mss"].as_u64().unwrap();
    let sfm = mtu["smallest_failing_mss"].as_u64().unwrap();
    assert!(
        lwm <= want && sfm > want,
        "bracket [{lwm}, {sfm}) must hold {want}: {mtu:#}"
    );
    assert!(
        (want - lwm) * 100 <= want * 3,
        "largest working MSS {lwm} within 3 % of {want}"
    );
    // The kernel never learned of the smaller link: no ICMP came back.
    assert_eq!(mtu["interface"], "c0");
    assert_eq!(mtu["interface_mtu"], 1500);
    assert_eq!(mtu["path_mtu"], 1500);
    let tries = attempts(mtu);
    assert_eq!(
        tries[0],
        (Some(1500 - overhead), false, "failed".into()),
        "{tries:?}"
    );
    assert_eq!(mtu["attempts"][0]["class"], "tls.timeout");
    assert!(
        tries
            .iter()
            .any(|(m, c, s)| *c && s == "ok" && *m == Some(lwm)),
        "{tries:?}"
    );
    let msg = tls["message"].as_str().unwrap();
    assert!(
        msg.contains(&format!("largest MSS that works is {lwm}")),
        "{msg}"
    );
    let found = mtu_findings(&report);
    assert_eq!(found.len(), 1, "{:#}", report["findings"]);
    let hint = found[0]["hint"].as_str().unwrap();
    for want_in_hint in [
        "maxseg size set rt mtu",
        "ICMP type 3 code 4",
        "ICMPv6 type 2",
        "IoT Hub cannot fix",
        &format!("ip link set dev c0 mtu {}", lwm + overhead),
    ] {
        assert!(
            hint.contains(want_in_hint),
            "{want_in_hint:?} not in {hint}"
        );
    }
    // Within the run's deadline.
    assert!(
        report["duration_ms"].as_f64().unwrap()
            <= report["target"]["deadline_ms"].as_f64().unwrap() + 1000.0,
        "{}",
        report["duration_ms"]
    );
}

#[test]
fn an_ipv4_black_hole_is_named_with_the_largest_working_mss_and_the_fix() {
    let lab = lab();
    let n = 1000;
    lab.drop_longer_than(n, 1500);
    let out = lab.check(lab.nat.server_addr(), PORT4, &["-o", "json"]);
    assert_black_hole(&out, n as u64 - 40, 40);

    // The text report says it too (and, with -v, the tries).
    let text = lab.check(lab.nat.server_addr(), PORT4, &["-v", "--no-color"]);
    assert_eq!(text.code, 2, "{}", text.all_output());
    for want in ["tls.mtu_black_hole", "MTU probe to", "largest working MSS"] {
        assert!(
            text.stdout.contains(want),
            "{want:?} missing:\n{}",
            text.stdout
        );
    }
    println!("{}", text.stdout);
}

#[test]
fn an_ipv6_black_hole_is_named_too() {
    let lab = lab();
    // Above 1200 + 60: the first rung works and the search runs up from it.
    let n = 1300;
    lab.drop_longer_than(1500, n);
    let out = lab.check(IpAddr::V6(SERVER6), PORT6, &["-o", "json"]);
    assert_black_hole(&out, n as u64 - 60, 60);
}

#[test]
fn the_same_path_without_the_drop_raises_no_mtu_finding() {
    let lab = lab();
    for (host, port, full) in [
        (lab.nat.server_addr(), PORT4, 1460),
        (IpAddr::V6(SERVER6), PORT6, 1440),
    ] {
        let out = lab.check(host, port, &["--mtu-probe", "-o", "json"]);
        let report = out.report();
        assert_eq!(out.code, 0, "{}", out.all_output());
        let tls = tls_phase(&report);
        assert_eq!(tls["status"], "ok");
        let mtu = &tls["evidence"]["mtu"];
        assert_eq!(mtu["trigger"], "requested", "{tls:#}");
        assert_eq!(mtu["black_hole"], false);
        assert_eq!(
            attempts(mtu),
            [
                (Some(full), false, "ok".to_string()),
                (Some(1200), true, "ok".to_string())
            ]
        );
        assert!(mtu_findings(&report).is_empty(), "{:#}", report["findings"]);
        assert_eq!(report["endpoints"][0]["verdict"], "ok");
    }
}

#[test]
fn a_stall_after_the_client_hello_stays_a_timeout_without_an_mtu_claim() {
    let lab = lab();
    lab.stall_after_client_hello();
    let out = lab.check(lab.nat.server_addr(), PORT4, &["-o", "json"]);
    let report = out.report();
    assert_eq!(out.code, 2, "{}", out.all_output());
    let tls = tls_phase(&report);
    assert_eq!(tls["class"], "tls.timeout", "{tls:#}");
    let mtu = &tls["evidence"]["mtu"];
    assert_eq!(mtu["black_hole"], false);
    assert_eq!(
        attempts(mtu)
            .iter()
            .filter(|(_, c, _)| *c)
            .cloned()
            .collect::<Vec<_>>(),
        [
            (Some(1200), true, "failed".to_string()),
            (Some(536), true, "failed".to_string())
        ]
    );
    assert!(mtu_findings(&report).is_empty(), "{:#}", report["findings"]);
    let msg = tls["message"].as_str().unwrap();
    assert!(msg.contains("not a path-MTU black hole"), "{msg}");
    let finding = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["code"] == "tls.timeout")
        .unwrap();
    let hint = finding["hint"].as_str().unwrap();
    assert!(hint.contains("not a path-MTU black hole"), "{hint}");
    assert!(!hint.contains("MTU/fragmentation"), "{hint}");
}

#[test]
fn the_agent_reports_the_black_hole_in_its_periodic_check() {
    let lab = lab();
    lab.drop_longer_than(1000, 1500);
    let dir = tempfile::tempdir().unwrap();
    let cs = common::agent_lab::write_connection_string(dir.path());
    let spool = dir.path().join("spool");
    let profile =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lab-hub.toml");
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[hub]\nhost = \"{host}\"\nprofile = \"{profile}\"\nendpoints = [\"mqtt-tls\"]\n\
             ports = {{ mqtt-tls = {PORT4} }}\ntrust = \"none\"\nca_file = \"{ca}\"\ntimeout = \"2s\"\n\
             [identity]\nconnection_string_file = \"{cs}\"\n\
             [schedule]\ninterval = \"1s\"\nspread = \"0s\"\ndeadline = \"60s\"\n\
             [canary]\nping_timeout = \"2s\"\nreconnect_min = \"200ms\"\nreconnect_max = \"1s\"\n\
             [spool]\ndir = \"{spool}\"\n[upload]\nenabled = false\n",
            host = lab.nat.server_addr(),
            profile = profile.display(),
            ca = lab.ca.display(),
            cs = cs.display(),
            spool = spool.display(),
        ),
    )
    .unwrap();
    let state = dir.path().join("state");
    let mut cmd: Command = lab.nat.client_ns().command(support::bin());
    cmd.args(["agent", "--config"])
        .arg(&config)
        .arg("--state-dir")
        .arg(&state)
        .args(["--cycles", "1"]);
    let out = run_cmd(&mut cmd, &[], Duration::from_secs(150));
    assert_eq!(out.code, 0, "{}", out.all_output());
    let reports: Vec<Value> = std::fs::read_dir(&spool)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap())
        .collect();
    assert_eq!(reports.len(), 1, "{reports:#?}");
    let report = &reports[0];
    support::assert_valid(report);
    let tls = tls_phase(report);
    assert_eq!(tls["class"], "tls.mtu_black_hole", "{tls:#}");
    let lwm = tls["evidence"]["mtu"]["largest_working_mss"]
        .as_u64()
        .unwrap();
    assert!((931..=960).contains(&lwm), "{lwm}");
    assert_eq!(mtu_findings(report).len(), 1, "{:#}", report["findings"]);
}

//! The AMQP phase against real AMQP 1.0 peers: RabbitMQ (its `rabbitmq_amqp1_0`
//! plugin) for SASL PLAIN and ANONYMOUS, open, begin, attach, a refused login and a
//! refused attach; a CBS node scripted with Apache Qpid Proton for put-token accepted
//! and refused; websockify in front of both for AMQP over WebSocket (subprotocol
//! `AMQPWSB10`). The hub's name is answered by dnsmasq; TLS uses the lab's CA.
//! Secrets (the SASL password, the SAS token) never appear in any output, even at
//! `RUST_LOG=trace -vv`.

mod common;
mod support;

use std::net::SocketAddr;
use std::time::Duration;

use common::amqp::{CbsMode, CbsPeer, RabbitMq, WsBridge, RABBIT_PASSWORD, RABBIT_USER};
use common::{Certs, Dns, HUB_HOST};
use hubprobe::auth::sas::{generate_sas_token, resource_uri};
use hubprobe::auth::Secret;
use serde_json::Value;
use support::{phase, run_with_env};

/// A device key for the lab (base64 of 32 bytes).
const DEVICE_KEY: &str = "dGhpcy1pcy1hLWxhYi1kZXZpY2Uta2V5LTEyMzQ1Njc=";

/// A lab profile with one AMQP endpoint of `transport` and the events address.
fn profile(dir: &std::path::Path, transport: &str, events: &str) -> String {
    let path = dir.join(format!("amqp-{transport}.toml"));
    let ws_path = if transport == "wss" {
        "path = \"/$iothub/websocket\"\n"
    } else {
        ""
    };
    std::fs::write(
        &path,
        format!(
            r#"name = "amqp-lab"
description = "AMQP lab"
host_suffixes = []
sas_tokens = true

[mqtt]
client_id = "{{device_id}}"
username = "{{host}}/{{device_id}}/?api-version=2021-04-12"
keepalive = "240s"
keepalive_max = "1177s"

[amqp]
events_address = "{events}"

[trust]
expected_anchors = ["hubprobe Test Root CA"]

[[endpoints]]
name = "amqp"
protocol = "amqp"
transport = "{transport}"
port = 5671
{ws_path}"#
        ),
    )
    .unwrap();
    path.display().to_string()
}

struct Check {
    dns: Dns,
    dir: tempfile::TempDir,
}

impl Check {
    fn new() -> Check {
        Check {
            dns: Dns::start(),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// Runs `hubprobe check` of the lab hub's one AMQP endpoint at `addr`.
    fn run(
        &self,
        certs: &Certs,
        transport: &str,
        events: &str,
        addr: SocketAddr,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> support::Run {
        let profile = profile(self.dir.path(), transport, events);
        let dns = self.dns.addr().to_string();
        let ca = certs.ca_pem().display().to_string();
        let port = format!("amqp={}", addr.port());
        let mut args = vec![
            "check",
            HUB_HOST,
            "--profile",
            &profile,
            "--dns-server",
            &dns,
            "--trust",
            "none",
            "--ca-file",
            &ca,
            "--port",
            &port,
            "--timeout",
            "10s",
        ];
        args.extend_from_slice(extra);
        run_with_env(&args, env, Duration::from_secs(60))
    }

    /// Runs the check as RabbitMQ's user with SASL PLAIN (the password from a
    /// file) and device id `device1`, JSON out.
    fn run_plain(
        &self,
        certs: &Certs,
        transport: &str,
        events: &str,
        addr: SocketAddr,
    ) -> support::Run {
        let pw = self.password_file();
        let args = [
            "--username",
            RABBIT_USER,
            "--password-file",
            &pw,
            "--device-id",
            "device1",
            "-o",
            "json",
        ];
        self.run(certs, transport, events, addr, &args, &[])
    }

    fn password_file(&self) -> String {
        let p = self.dir.path().join("password");
        std::fs::write(&p, RABBIT_PASSWORD).unwrap();
        p.display().to_string()
    }
}

fn amqp(report: &Value) -> &Value {
    phase(report, "amqp", "amqp")
}

/// The steps that prove something (open, begin, put-token, attach, detach) with
/// their outcomes. Ending the session and closing the connection are courtesy:
/// the probe bounds them short and a slow answer there is no failure, so they are
/// checked apart ([`teardown_named`]).
fn steps(ph: &Value) -> Vec<(String, String)> {
    ph["evidence"]["steps"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|s| !matches!(s["step"].as_str(), Some("end" | "close")))
                .map(|s| {
                    (
                        s["step"].as_str().unwrap_or("").to_string(),
                        s["outcome"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The phase that passed ended its session (whatever the peer answered).
fn teardown_named(ph: &Value) {
    let names: Vec<&str> = ph["evidence"]["steps"]
        .as_array()
        .map(|a| a.iter().filter_map(|s| s["step"].as_str()).collect())
        .unwrap_or_default();
    assert!(names.contains(&"end"), "no end step: {ph}");
}

fn all_ok(names: &[&str]) -> Vec<(String, String)> {
    names
        .iter()
        .map(|n| (n.to_string(), "ok".to_string()))
        .collect()
}

const RABBIT_EVENTS: &str = "/topic/devices.{device}.events";

#[test]
fn sasl_plain_over_tls_to_rabbitmq_opens_begins_and_attaches() {
    let rabbit = RabbitMq::shared();
    let check = Check::new();
    let out = check.run_plain(&rabbit.certs, "tls", RABBIT_EVENTS, rabbit.amqps);
    let report = out.report();
    assert_eq!(out.code, 0, "{}", out.all_output());
    let ph = amqp(&report);
    assert_eq!(ph["status"], "ok", "{ph}");
    let ev = &ph["evidence"];
    assert_eq!(ev["sasl_mechanism"], "PLAIN");
    assert_eq!(ev["sasl_outcome"], "ok");
    let offered: Vec<&str> = ev["sasl_mechanisms"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(offered.contains(&"PLAIN"), "{offered:?}");
    assert!(
        ev["container_id"].as_str().is_some_and(|c| !c.is_empty()),
        "{ev}"
    );
    assert_eq!(ev["properties"]["product"], "RabbitMQ", "{ev}");
    assert_eq!(ev["address"], "/topic/devices.device1.events");
    assert_eq!(steps(ph), all_ok(&["open", "begin", "attach", "detach"]));
    teardown_named(ph);
}

#[test]
fn a_wrong_password_is_a_refused_sasl_login_and_never_printed() {
    let rabbit = RabbitMq::shared();
    let check = Check::new();
    let p = check.dir.path().join("wrong");
    let wrong = "not-the-lab-password-Zx81";
    std::fs::write(&p, wrong).unwrap();
    let pw = p.display().to_string();
    let out = check.run(
        &rabbit.certs,
        "tls",
        RABBIT_EVENTS,
        rabbit.amqps,
        &[
            "--username",
            RABBIT_USER,
            "--password-file",
            &pw,
            "-vv",
            "-o",
            "json",
        ],
        &[("RUST_LOG", "trace")],
    );
    assert_eq!(out.code, 2, "{}", out.all_output());
    let report = out.report();
    let ph = amqp(&report);
    assert_eq!(ph["class"], "amqp.auth_failed", "{ph}");
    assert_eq!(ph["evidence"]["sasl_outcome"], "auth", "{ph}");
    assert_eq!(steps(ph), vec![("open".into(), "failed".into())]);
    assert!(
        report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["code"] == "amqp.auth_failed"),
        "{report}"
    );
    let all = out.all_output();
    assert!(!all.contains(wrong), "the password leaked:\n{all}");
}

#[test]
fn sasl_anonymous_without_an_identity_opens_rabbitmq() {
    let rabbit = RabbitMq::shared();
    let check = Check::new();
    let out = check.run(
        &rabbit.certs,
        "tls",
        RABBIT_EVENTS,
        rabbit.amqps,
        &["-o", "json"],
        &[],
    );
    let report = out.report();
    assert_eq!(out.code, 0, "{}", out.all_output());
    let ph = amqp(&report);
    assert_eq!(ph["evidence"]["sasl_mechanism"], "ANONYMOUS");
    assert_eq!(ph["evidence"]["sasl_outcome"], "ok");
    // No device identity: nothing to attach for.
    assert_eq!(steps(ph), all_ok(&["open", "begin"]));
    teardown_named(ph);
}

#[test]
fn a_refused_attach_names_the_servers_error_condition() {
    let rabbit = RabbitMq::shared();
    let check = Check::new();
    let out = check.run_plain(
        &rabbit.certs,
        "tls",
        "/exchange/no-such-exchange-{device}/x",
        rabbit.amqps,
    );
    assert_eq!(out.code, 2, "{}", out.all_output());
    let report = out.report();
    let ph = amqp(&report);
    assert_eq!(ph["class"], "amqp.not_found", "{ph}");
    assert_eq!(ph["evidence"]["error_condition"], "amqp:not-found", "{ph}");
    assert!(
        ph["message"]
            .as_str()
            .unwrap()
            .contains("/exchange/no-such-exchange-device1/x"),
        "{ph}"
    );
    let s = steps(ph);
    assert_eq!(
        s.last().unwrap(),
        &("attach".to_string(), "failed".to_string())
    );
}

#[test]
fn sasl_plain_over_websocket_through_websockify_to_rabbitmq() {
    let rabbit = RabbitMq::shared();
    let bridge = WsBridge::start(&rabbit.certs, rabbit.amqp);
    let check = Check::new();
    let out = check.run_plain(&rabbit.certs, "wss", RABBIT_EVENTS, bridge.addr);
    let report = out.report();
    assert_eq!(out.code, 0, "{}", out.all_output());
    let ws = phase(&report, "amqp", "websocket");
    assert_eq!(ws["status"], "ok", "{ws}");
    assert_eq!(ws["evidence"]["subprotocol"], "AMQPWSB10", "{ws}");
    let ph = amqp(&report);
    assert_eq!(ph["evidence"]["sasl_outcome"], "ok");
    assert_eq!(steps(ph), all_ok(&["open", "begin", "attach", "detach"]));
    teardown_named(ph);
}

fn lab_token(device: &str) -> String {
    let resource = resource_uri(HUB_HOST, device, None);
    generate_sas_token(&resource, &Secret::new(DEVICE_KEY), 4_102_444_800)
        .unwrap()
        .token
        .expose()
        .to_string()
}

/// The signature part of a SAS token: what must never be printed.
fn signature(token: &str) -> String {
    let sig = token
        .split('&')
        .find_map(|p| p.strip_prefix("sig="))
        .expect("a sig= part");
    assert!(sig.len() > 20, "{token}");
    sig.to_string()
}

const HUB_EVENTS: &str = "/devices/{device}/messages/events";

#[test]
fn cbs_put_token_accepted_over_tls_then_the_events_link_attaches() {
    let certs = Certs::generate();
    let cbs = CbsPeer::start(CbsMode::Accept, Some(&certs));
    let check = Check::new();
    let token = lab_token("dev1");
    let out = check.run(
        &certs,
        "tls",
        HUB_EVENTS,
        cbs.addr,
        &["-vv", "-o", "json"],
        &[("HUBPROBE_SAS_TOKEN", &token), ("RUST_LOG", "trace")],
    );
    let report = out.report();
    assert_eq!(out.code, 0, "{}", out.all_output());
    let ph = amqp(&report);
    let ev = &ph["evidence"];
    assert_eq!(ev["sasl_mechanism"], "ANONYMOUS");
    assert_eq!(ev["sasl_mechanisms"], serde_json::json!(["ANONYMOUS"]));
    assert_eq!(ev["cbs_status"], 202, "{ev}");
    assert_eq!(ev["cbs_audience"], format!("{HUB_HOST}/devices/dev1"));
    assert_eq!(ev["container_id"], "lab-cbs");
    assert_eq!(ev["properties"]["product"], "hubprobe-lab-cbs");
    assert_eq!(ev["address"], "/devices/dev1/messages/events");
    assert_eq!(
        steps(ph),
        all_ok(&["open", "begin", "put-token", "attach", "detach"])
    );
    teardown_named(ph);
    let all = out.all_output();
    assert!(
        !all.contains(&signature(&token)),
        "the SAS signature leaked:\n{all}"
    );
}

#[test]
fn cbs_put_token_refused_with_401_is_not_authorized() {
    let certs = Certs::generate();
    let cbs = CbsPeer::start(CbsMode::Refuse, Some(&certs));
    let check = Check::new();
    let cs = format!("HostName={HUB_HOST};DeviceId=dev1;SharedAccessKey={DEVICE_KEY}");
    let out = check.run(
        &certs,
        "tls",
        HUB_EVENTS,
        cbs.addr,
        &["-vv", "-o", "json"],
        &[
            ("IOTHUB_DEVICE_CONNECTION_STRING", &cs),
            ("RUST_LOG", "trace"),
        ],
    );
    assert_eq!(out.code, 2, "{}", out.all_output());
    let report = out.report();
    let ph = amqp(&report);
    assert_eq!(ph["class"], "amqp.not_authorized", "{ph}");
    assert_eq!(ph["evidence"]["cbs_status"], 401, "{ph}");
    assert_eq!(
        ph["evidence"]["cbs_description"],
        "Unauthorized: the token was refused"
    );
    assert_eq!(
        steps(ph).last().unwrap(),
        &("put-token".to_string(), "failed".to_string())
    );
    let f = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["code"] == "amqp.not_authorized")
        .unwrap_or_else(|| panic!("{report}"));
    assert!(f.to_string().contains("401003"), "{f}");
    let all = out.all_output();
    assert!(!all.contains(DEVICE_KEY), "the device key leaked:\n{all}");
    // The generated token's signature is not known here; no `sig=` value may show.
    assert!(!all.contains("sig="), "a SAS signature leaked:\n{all}");
}

#[test]
fn cbs_over_websocket_through_websockify() {
    let certs = Certs::generate();
    let cbs = CbsPeer::start(CbsMode::Accept, None);
    let bridge = WsBridge::start(&certs, cbs.addr);
    let check = Check::new();
    let token = lab_token("dev1");
    let out = check.run(
        &certs,
        "wss",
        HUB_EVENTS,
        bridge.addr,
        &["-o", "json"],
        &[("HUBPROBE_SAS_TOKEN", &token)],
    );
    let report = out.report();
    assert_eq!(out.code, 0, "{}", out.all_output());
    let ph = amqp(&report);
    assert_eq!(ph["evidence"]["cbs_status"], 202);
    assert_eq!(
        steps(ph),
        all_ok(&["open", "begin", "put-token", "attach", "detach"])
    );
    teardown_named(ph);
    assert!(!out.all_output().contains(&signature(&token)));
}

#[test]
fn sasl_plain_to_a_node_that_offers_only_anonymous_is_refused_at_sasl() {
    let certs = Certs::generate();
    let cbs = CbsPeer::start(CbsMode::Accept, Some(&certs));
    let check = Check::new();
    let pw = check.dir.path().join("pw");
    std::fs::write(&pw, "x").unwrap();
    let pw = pw.display().to_string();
    let out = check.run(
        &certs,
        "tls",
        HUB_EVENTS,
        cbs.addr,
        &[
            "--username",
            "u",
            "--password-file",
            &pw,
            "--device-id",
            "dev1",
            "-o",
            "json",
        ],
        &[],
    );
    let report = out.report();
    let ph = amqp(&report);
    // The Proton node allows ANONYMOUS only: PLAIN is refused at SASL.
    assert_eq!(ph["class"], "amqp.auth_failed", "{ph}");
    assert_eq!(
        ph["evidence"]["sasl_mechanisms"],
        serde_json::json!(["ANONYMOUS"])
    );
}

#[test]
fn an_x509_identity_opens_amqp_without_sasl_and_attaches() {
    // The SDKs open AMQP straight after TLS with a client certificate: no SASL layer.
    // RabbitMQ takes such a connection as its default AMQP 1.0 user.
    let rabbit = RabbitMq::shared();
    let check = Check::new();
    let cert = rabbit.certs.client.cert_pem.display().to_string();
    let key = rabbit.certs.client.key_pem.display().to_string();
    let out = check.run(
        &rabbit.certs,
        "tls",
        RABBIT_EVENTS,
        rabbit.amqps,
        &["--cert", &cert, "--key", &key, "-o", "json"],
        &[],
    );
    let report = out.report();
    assert_eq!(out.code, 0, "{}", out.all_output());
    let ph = amqp(&report);
    let ev = &ph["evidence"];
    assert_eq!(ev["sent"], "AMQP 0 1.0.0", "{ev}");
    assert_eq!(ev["received"], "AMQP 0 1.0.0", "{ev}");
    assert!(ev.get("sasl_mechanism").is_none(), "{ev}");
    assert_eq!(ev["properties"]["product"], "RabbitMQ", "{ev}");
    let s = steps(ph);
    assert_eq!(s.first().unwrap(), &("open".to_string(), "ok".to_string()));
    assert!(
        s.contains(&("attach".to_string(), "ok".to_string())),
        "{s:?}"
    );
}

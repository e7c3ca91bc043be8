//! The Device Provisioning Service path end to end: mosquitto as DPS (the password
//! of the DPS user name is the DPS SAS token hubprobe must generate) and as the hub
//! DPS assigns (the lab hub), dnsmasq answering their name, and an in-process
//! responder that speaks the documented DPS MQTT topics through the broker: it
//! subscribes to `$dps/registrations/PUT/#` and `.../GET/#` on the broker's plain
//! listener and answers on `$dps/registrations/res/{status}/?$rid=..&retry-after=..`.
//! Each test has its own broker (DPS replies go to every subscriber of `res/#`).

mod common;
mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Dns, Mosquitto, HUB_HOST};
use hubprobe::auth::dps::{derive_device_key, generate_dps_sas_token, mqtt_username};
use hubprobe::auth::sas::{generate_sas_token, resource_uri};
use hubprobe::auth::Secret;
use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
use serde_json::{json, Value};
use support::{finding, run_with_env, Run};

const KEY: &str = "dGhpcy1pcy1hLWxhYi1kZXZpY2Uta2V5LTEyMzQ1Njc=";
const GROUP_KEY: &str = "Z3JvdXAta2V5LW9mLXRoZS1sYWItZW5yb2xsbWVudC0xMjM0NTY3ODkwYWJjZGVmZ2hpams=";
const SCOPE: &str = "0ne0000a1b2";
const EXPIRY: u64 = 4_102_444_800; // 2100-01-01

/// What the responder answers a registration.
#[derive(Clone, Copy, Debug)]
enum Scenario {
    /// 202 assigning (retry-after 1), then 200 assigned to the lab hub.
    Assign,
    /// An error status with an error code, and retry-after when given.
    Status(u16, u64, Option<u64>),
    /// 202 assigning (retry-after 1), forever.
    NeverAssigned,
    /// 202, then 200 with status disabled.
    Disabled,
    /// 200 with a body that is not DPS's JSON.
    Garbage,
}

/// What the responder saw.
#[derive(Default, Debug)]
struct Seen {
    registers: Vec<Value>,
    polls: Vec<String>,
}

struct Lab {
    broker: Mosquitto,
    dns: Dns,
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
    responder: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.responder.take() {
            let _ = t.join();
        }
    }
}

fn dps_token(reg: &str, key: &Secret) -> String {
    generate_dps_sas_token(SCOPE, reg, key, EXPIRY)
        .unwrap()
        .token
        .expose()
        .to_string()
}

fn hub_token(device: &str, key: &Secret) -> String {
    generate_sas_token(&resource_uri(HUB_HOST, device, None), key, EXPIRY)
        .unwrap()
        .token
        .expose()
        .to_string()
}

impl Lab {
    /// The broker with the DPS and hub users of `dev1` (individual key) and
    /// `member-7` (derived from the group key), and the responder playing `scenario`.
    fn start(scenario: Scenario) -> Lab {
        let key = Secret::new(KEY);
        let derived = derive_device_key(&Secret::new(GROUP_KEY), "member-7").unwrap();
        let users = [
            (mqtt_username(SCOPE, "dev1"), dps_token("dev1", &key)),
            (common::hub_username("dev1"), hub_token("dev1", &key)),
            (
                mqtt_username(SCOPE, "member-7"),
                dps_token("member-7", &derived),
            ),
            (
                common::hub_username("member-7"),
                hub_token("member-7", &derived),
            ),
        ];
        let broker = Mosquitto::start(&users);
        let seen = Arc::new(Mutex::new(Seen::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let responder = responder(broker.port("plain"), scenario, seen.clone(), stop.clone());
        Lab {
            broker,
            dns: Dns::start(),
            seen,
            stop,
            responder: Some(responder),
        }
    }

    /// `check` of the lab DPS by name, trusting only the lab CA, with `extra`.
    fn check(&self, extra: &[&str], env: &[(&str, &str)]) -> Run {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let ports = format!(
            "mqtt-tls={},mqtt-ws={}",
            self.broker.port("tls"),
            self.broker.port("wss")
        );
        let hub_port = format!("mqtt-tls={}", self.broker.port("tls"));
        let dps_profile = root.join("tests/fixtures/lab-dps.toml");
        let hub_profile = root.join("tests/fixtures/lab-hub.toml");
        let dns = self.dns.addr().to_string();
        let ca = self.broker.certs().ca_pem().display().to_string();
        let expiry = EXPIRY.to_string();
        let mut args = vec![
            "check",
            HUB_HOST,
            "--profile",
            dps_profile.to_str().unwrap(),
            "--id-scope",
            SCOPE,
            "--dns-server",
            &dns,
            "--trust",
            "none",
            "--ca-file",
            &ca,
            "--port",
            &ports,
            "--sas-expiry",
            &expiry,
            "--timeout",
            "5s",
            "--pings",
            "0",
            "--hub-profile",
            hub_profile.to_str().unwrap(),
            "--hub-endpoint",
            "mqtt-tls",
            "--hub-port",
            &hub_port,
        ];
        if !extra.contains(&"-o") {
            args.extend(["-o", "json"]);
        }
        args.extend_from_slice(extra);
        let mut env = env.to_vec();
        if !env.iter().any(|(k, _)| *k == "PROVISIONING_SYMMETRIC_KEY") {
            env.push(("PROVISIONING_SYMMETRIC_KEY", KEY));
        }
        let out = run_with_env(&args, &env, Duration::from_secs(60));
        for secret in [KEY, GROUP_KEY] {
            assert!(
                !out.all_output().contains(secret),
                "a key leaked:\n{}",
                out.all_output()
            );
        }
        out
    }
}

/// The DPS responder: answers registrations and polls per `scenario`. Bounded: it
/// stops when told, after 120 s, or when its connection fails.
fn responder(
    port: u16,
    scenario: Scenario,
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        let mut opts = MqttOptions::new("dps-responder", "127.0.0.1", port);
        opts.set_keep_alive(Duration::from_secs(30));
        let (client, mut conn) = Client::new(opts, 64);
        client
            .subscribe("$dps/registrations/PUT/#", QoS::AtLeastOnce)
            .unwrap();
        client
            .subscribe("$dps/registrations/GET/#", QoS::AtLeastOnce)
            .unwrap();
        let started = Instant::now();
        let mut subacks = 0;
        let mut ready = Some(ready_tx);
        while !stop.load(Ordering::SeqCst) && started.elapsed() < Duration::from_secs(120) {
            let event = match conn.recv_timeout(Duration::from_millis(200)) {
                Ok(Ok(e)) => e,
                Ok(Err(_)) => break,
                Err(_) => continue,
            };
            let p = match event {
                Event::Incoming(Packet::SubAck(_)) => {
                    subacks += 1;
                    if subacks == 2 {
                        if let Some(tx) = ready.take() {
                            let _ = tx.send(());
                        }
                    }
                    continue;
                }
                Event::Incoming(Packet::Publish(p)) => p,
                _ => continue,
            };
            let rid = p
                .topic
                .split("$rid=")
                .nth(1)
                .map(|r| r.split('&').next().unwrap_or("").to_string())
                .unwrap_or_default();
            let register = p
                .topic
                .starts_with("$dps/registrations/PUT/iotdps-register/");
            {
                let mut s = seen.lock().unwrap();
                if register {
                    s.registers
                        .push(serde_json::from_slice(&p.payload).unwrap_or(Value::Null));
                } else {
                    s.polls.push(p.topic.clone());
                }
            }
            let reg_id = seen
                .lock()
                .unwrap()
                .registers
                .last()
                .and_then(|v| v["registrationId"].as_str().map(str::to_string));
            let reg_id = reg_id.unwrap_or_default();
            let assigning = (
                202,
                Some(1),
                json!({"operationId": "4.lab.op1", "status": "assigning"}),
            );
            let (status, retry, body) = match scenario {
                Scenario::Assign if register => assigning,
                Scenario::Assign => (
                    200,
                    None,
                    json!({"operationId": "4.lab.op1", "status": "assigned", "registrationState": {
                        "registrationId": reg_id, "assignedHub": HUB_HOST, "deviceId": reg_id,
                        "status": "assigned", "substatus": "initialAssignment"}}),
                ),
                Scenario::NeverAssigned => assigning,
                Scenario::Disabled if register => assigning,
                Scenario::Disabled => (
                    200,
                    None,
                    json!({"operationId": "4.lab.op1", "status": "disabled", "registrationState": {
                        "registrationId": reg_id, "status": "disabled"}}),
                ),
                Scenario::Garbage => (200, None, json!("<html>proxy says hello</html>")),
                Scenario::Status(status, code, retry) => (
                    status,
                    retry,
                    json!({"errorCode": code, "trackingId": "lab", "message": format!("lab says {status}"), "timestampUtc": "2026-01-01T00:00:00Z"}),
                ),
            };
            let topic = match retry {
                Some(r) => format!("$dps/registrations/res/{status}/?$rid={rid}&retry-after={r}"),
                None => format!("$dps/registrations/res/{status}/?$rid={rid}"),
            };
            let _ = client.try_publish(topic, QoS::AtLeastOnce, false, body.to_string());
        }
        let _ = client.disconnect();
    });
    ready_rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the DPS responder did not subscribe within 20 s");
    handle
}

#[test]
fn registration_202_then_assigned_chains_the_hub_check() {
    let lab = Lab::start(Scenario::Assign);
    let out = lab.check(&["--register", "--registration-id", "dev1"], &[]);
    let r = out.report();
    assert_eq!(out.code, 0, "{}", out.all_output());
    assert_eq!(r["verdict"], "ok");
    let p = &r["provisioning"];
    assert_eq!(p["status"], "assigned", "{p:#}");
    assert_eq!(p["assigned_hub"], HUB_HOST);
    assert_eq!(p["device_id"], "dev1");
    assert_eq!(p["operation_id"], "4.lab.op1");
    assert_eq!(p["substatus"], "initialAssignment");
    assert_eq!(p["http_status"], 200);
    assert!(p["polls"].as_u64().unwrap() >= 1, "{p:#}");
    // The hub check ran, as the assigned device, with the same key.
    let hub = &p["hub"];
    assert_eq!(hub["target"]["host"], HUB_HOST);
    assert_eq!(hub["target"]["device_id"], "dev1");
    assert_eq!(hub["verdict"], "ok", "{hub:#}");
    let mqtt = hub["endpoints"][0]["phases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|ph| ph["phase"] == "mqtt")
        .unwrap();
    assert_eq!(mqtt["status"], "ok", "{mqtt:#}");
    assert!(finding(&r, "dps_assigned").is_some());
    // DPS saw one registration of this device and its polls with the operation id.
    let seen = lab.seen.lock().unwrap();
    assert_eq!(seen.registers, [json!({"registrationId": "dev1"})]);
    assert!(!seen.polls.is_empty());
    assert!(seen.polls.iter().all(|t| t
        .starts_with("$dps/registrations/GET/iotdps-get-operationstatus/?$rid=")
        && t.ends_with("&operationId=4.lab.op1")));
}

#[test]
fn an_enrollment_group_key_is_derived_for_dps_and_the_hub() {
    let lab = Lab::start(Scenario::Assign);
    let out = lab.check(
        &["--register", "--enrollment-group"],
        &[
            ("PROVISIONING_REGISTRATION_ID", "member-7"),
            ("PROVISIONING_SYMMETRIC_KEY", GROUP_KEY),
        ],
    );
    let r = out.report();
    assert_eq!(out.code, 0, "{}", out.all_output());
    assert_eq!(r["provisioning"]["enrollment_group"], true);
    assert_eq!(r["provisioning"]["hub"]["target"]["device_id"], "member-7");
    assert_eq!(r["provisioning"]["hub"]["verdict"], "ok");
    // The text report shows both targets.
    let out = lab.check(
        &["--register", "--enrollment-group", "-o", "text"],
        &[
            ("PROVISIONING_REGISTRATION_ID", "member-7"),
            ("PROVISIONING_SYMMETRIC_KEY", GROUP_KEY),
        ],
    );
    assert_eq!(out.code, 0, "{}", out.all_output());
    assert!(
        out.stdout.contains("registration: assigned"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains(&format!("assigned hub {HUB_HOST} as device member-7")),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("hub check"), "{}", out.stdout);
}

#[test]
fn the_default_check_connects_with_the_dps_identity_and_registers_nothing() {
    let lab = Lab::start(Scenario::Assign);
    let out = lab.check(&["--registration-id", "dev1"], &[]);
    let r = out.report();
    assert_eq!(out.code, 0, "{}", out.all_output());
    assert!(r.get("provisioning").is_none());
    assert_eq!(r["target"]["device_id"], "dev1");
    assert_eq!(
        r["target"]["sas_token"]["resource"],
        format!("{SCOPE}/registrations/dev1")
    );
    for ep in r["endpoints"].as_array().unwrap() {
        assert_eq!(ep["verdict"], "ok", "{ep:#}");
    }
    // A wrong key: CONNACK refused, with DPS's meaning.
    let wrong = "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXktMTI=";
    let out = lab.check(
        &["--registration-id", "dev1"],
        &[("PROVISIONING_SYMMETRIC_KEY", wrong)],
    );
    let r = out.report();
    assert_eq!(out.code, 2, "{}", out.all_output());
    assert!(!out.all_output().contains(wrong));
    let f = finding(&r, "mqtt.not_authorized").expect("not authorized finding");
    assert!(f["hint"].as_str().unwrap().contains("DPS"), "{f:#}");
    assert!(f.get("iothub_error").is_none(), "{f:#}");
    std::thread::sleep(Duration::from_millis(300));
    let seen = lab.seen.lock().unwrap();
    assert!(
        seen.registers.is_empty() && seen.polls.is_empty(),
        "{seen:?}"
    );
}

fn refused(status: u16, code: u64, retry: Option<u64>, class: &str) -> Value {
    let lab = Lab::start(Scenario::Status(status, code, retry));
    let out = lab.check(&["--register", "--registration-id", "dev1"], &[]);
    let r = out.report();
    assert_eq!(out.code, 2, "{}", out.all_output());
    assert_eq!(r["verdict"], "critical");
    let p = &r["provisioning"];
    assert_eq!(p["status"], "refused", "{p:#}");
    assert_eq!(p["class"], class);
    assert_eq!(p["http_status"], status);
    assert_eq!(p["error_code"], code);
    assert!(p.get("hub").is_none());
    assert!(p["message"]
        .as_str()
        .unwrap()
        .contains(&format!("lab says {status}")));
    let f = finding(&r, class).unwrap_or_else(|| panic!("no {class} finding: {r:#}"));
    assert_eq!(f["severity"], "critical");
    f.clone()
}

#[test]
fn registration_errors_are_classified() {
    refused(401, 401002, None, "dps.unauthorized");
    refused(404, 404201, None, "dps.enrollment_not_found");
    refused(412, 412001, None, "dps.precondition_failed");
    refused(503, 503001, None, "dps.server_error");
}

#[test]
fn a_throttled_device_is_told_when_to_retry() {
    let f = refused(429, 429001, Some(17), "dps.throttled");
    assert!(
        f["hint"].as_str().unwrap().contains("retry after 17 s"),
        "{f:#}"
    );
}

#[test]
fn a_device_never_assigned_is_bounded_by_the_deadline() {
    let lab = Lab::start(Scenario::NeverAssigned);
    let started = Instant::now();
    let out = lab.check(
        &[
            "--register",
            "--registration-id",
            "dev1",
            "--deadline",
            "6s",
        ],
        &[],
    );
    let r = out.report();
    assert_eq!(out.code, 2, "{}", out.all_output());
    let p = &r["provisioning"];
    assert_eq!(p["status"], "assigning", "{p:#}");
    assert_eq!(p["class"], "dps.timeout");
    assert!(p["polls"].as_u64().unwrap() >= 1, "{p:#}");
    assert!(finding(&r, "dps.timeout").is_some());
    // Bounded: the 60 s limit of the run is far away (no timing assertion beyond it).
    assert!(started.elapsed() < Duration::from_secs(60));
}

#[test]
fn a_disabled_enrollment_is_named() {
    let lab = Lab::start(Scenario::Disabled);
    let out = lab.check(&["--register", "--registration-id", "dev1"], &[]);
    let r = out.report();
    assert_eq!(out.code, 2, "{}", out.all_output());
    assert_eq!(r["provisioning"]["status"], "disabled");
    assert_eq!(r["provisioning"]["class"], "dps.disabled");
    assert!(finding(&r, "dps.disabled").is_some());
}

#[test]
fn dps_works_but_the_assigned_hub_does_not() {
    let lab = Lab::start(Scenario::Assign);
    let closed = common::refused_port();
    let port = format!("mqtt-tls={}", closed.port());
    let out = lab.check(
        &[
            "--register",
            "--registration-id",
            "dev1",
            "--hub-port",
            &port,
        ],
        &[],
    );
    let r = out.report();
    assert_eq!(out.code, 2, "{}", out.all_output());
    assert_eq!(r["provisioning"]["status"], "assigned");
    assert_eq!(r["provisioning"]["hub"]["verdict"], "critical");
    let f = finding(&r, "dps_ok_hub_unreachable").expect("finding");
    assert_eq!(f["severity"], "critical");
}

#[test]
fn the_hub_works_but_dps_does_not() {
    let lab = Lab::start(Scenario::Assign);
    // DPS's ports are closed; the last assigned hub is checked, side-effect free.
    let closed = common::refused_port();
    let ports = format!("mqtt-tls={0},mqtt-ws={0}", closed.port());
    let out = lab.check(
        &[
            "--registration-id",
            "dev1",
            "--port",
            &ports,
            "--assigned-hub",
            HUB_HOST,
        ],
        &[],
    );
    let r = out.report();
    assert_eq!(out.code, 2, "{}", out.all_output());
    assert_eq!(r["provisioning"]["status"], "not_attempted");
    assert_eq!(r["provisioning"]["hub"]["verdict"], "ok");
    let f = finding(&r, "hub_ok_dps_unreachable").expect("finding");
    assert_eq!(f["severity"], "warning");
    let seen = lab.seen.lock().unwrap();
    assert!(seen.registers.is_empty(), "{seen:?}");
}

#[test]
fn bad_dps_settings_are_one_clear_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let bad_key_file = dir.path().join("key");
    let bad_key = "not base64, a secret nonetheless";
    std::fs::write(&bad_key_file, bad_key).unwrap();
    let bad_key_path = bad_key_file.to_str().unwrap();
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (
            vec!["check", "--registration-id", "dev1"],
            vec![],
            "--id-scope",
        ),
        (
            vec!["check", "--id-scope", "0ne/1", "--registration-id", "dev1"],
            vec![("PROVISIONING_SYMMETRIC_KEY", KEY)],
            "id scope",
        ),
        (
            vec!["check", "--id-scope", SCOPE, "--registration-id", "dev 1"],
            vec![("PROVISIONING_SYMMETRIC_KEY", KEY)],
            "registration id",
        ),
        (
            vec!["check", "--id-scope", SCOPE],
            vec![("PROVISIONING_SYMMETRIC_KEY", KEY)],
            "--registration-id",
        ),
        (
            vec!["check", "--id-scope", SCOPE, "--registration-id", "dev1"],
            vec![],
            "PROVISIONING_SYMMETRIC_KEY",
        ),
        (
            vec![
                "check",
                "--id-scope",
                SCOPE,
                "--registration-id",
                "dev1",
                "--enrollment-group",
            ],
            vec![],
            "enrollment group",
        ),
        (
            vec![
                "check",
                "--id-scope",
                SCOPE,
                "--registration-id",
                "dev1",
                "--symmetric-key-file",
                bad_key_path,
            ],
            vec![],
            "not valid base64",
        ),
        (
            vec![
                "check",
                "--id-scope",
                SCOPE,
                "--registration-id",
                "dev1",
                "--connection-string",
                "HostName=h;DeviceId=d;SharedAccessKey=eA==",
            ],
            vec![],
            "DPS identity",
        ),
        (vec!["check", HUB_HOST, "--register"], vec![], "--id-scope"),
        (
            vec![
                "check",
                "--id-scope",
                SCOPE,
                "--registration-id",
                "dev1",
                "--register",
                "--hub-port",
                "mqtt-tls=x",
            ],
            vec![("PROVISIONING_SYMMETRIC_KEY", KEY)],
            "--hub-port",
        ),
        (
            vec![
                "check",
                "--id-scope",
                SCOPE,
                "--registration-id",
                "dev1",
                "--assigned-hub",
                "bad host!",
            ],
            vec![("PROVISIONING_SYMMETRIC_KEY", KEY)],
            "--assigned-hub",
        ),
        (vec!["sas-token", "--enrollment-group"], vec![], "--dps"),
    ];
    for (args, env, want) in cases {
        let out = run_with_env(&args, &env, Duration::from_secs(30));
        assert_eq!(out.code, 3, "{args:?}: {}", out.all_output());
        assert!(out.stdout.is_empty(), "{args:?}: {}", out.stdout);
        assert!(out.stderr.contains(want), "{args:?}: {}", out.stderr);
        assert_eq!(
            out.stderr.trim().lines().count(),
            1,
            "{args:?}: {}",
            out.stderr
        );
        for secret in [KEY, bad_key] {
            assert!(!out.stderr.contains(secret), "{args:?}: {}", out.stderr);
        }
    }
}

#[test]
fn without_a_host_the_dps_profile_checks_the_global_endpoint() {
    // Nothing is sent: the deadline has passed before DNS; the report names the host.
    let out = run_with_env(
        &[
            "check",
            "--id-scope",
            SCOPE,
            "--registration-id",
            "dev1",
            "--deadline",
            "1ms",
            "-o",
            "json",
        ],
        &[("PROVISIONING_SYMMETRIC_KEY", KEY)],
        Duration::from_secs(30),
    );
    let r = out.report();
    assert_eq!(
        r["target"]["host"],
        "global.azure-devices-provisioning.net",
        "{}",
        out.all_output()
    );
    assert_eq!(r["target"]["profile"], "azure-dps");
    assert_eq!(r["target"]["auth"], "sas-key");
}

#[test]
fn a_reply_that_is_not_dps_is_a_protocol_error() {
    let lab = Lab::start(Scenario::Garbage);
    let out = lab.check(&["--register", "--registration-id", "dev1"], &[]);
    let r = out.report();
    assert_eq!(out.code, 2, "{}", out.all_output());
    assert_eq!(r["provisioning"]["status"], "error");
    assert_eq!(r["provisioning"]["class"], "dps.protocol_error");
    assert!(r["provisioning"].get("hub").is_none());
}

#[test]
fn an_x509_device_registers_with_its_certificate() {
    let lab = Lab::start(Scenario::Assign);
    let certs = lab.broker.certs();
    let cert = certs.client.cert_pem.display().to_string();
    let key = certs.client.key_pem.display().to_string();
    let mtls = format!("mqtt-tls={}", lab.broker.port("mtls"));
    // No --registration-id: the certificate's CN (dev1) is the registration id.
    let out = lab.check(
        &[
            "--register",
            "--cert",
            &cert,
            "--key",
            &key,
            "--endpoint",
            "mqtt-tls",
            "--port",
            &mtls,
            "--hub-port",
            &mtls,
        ],
        &[],
    );
    let r = out.report();
    assert_eq!(out.code, 0, "{}", out.all_output());
    assert_eq!(r["target"]["auth"], "x509");
    assert_eq!(r["target"]["device_id"], "dev1");
    assert!(r["target"].get("sas_token").is_none());
    assert_eq!(r["provisioning"]["status"], "assigned");
    let hub = &r["provisioning"]["hub"];
    assert_eq!(hub["target"]["auth"], "x509");
    assert_eq!(hub["verdict"], "ok", "{hub:#}");
    let seen = lab.seen.lock().unwrap();
    assert_eq!(seen.registers, [json!({"registrationId": "dev1"})]);
}

//! `hubprobe check` end to end against real peers: the mosquitto broker as the hub
//! (TLS, WebSocket/TLS, client certificates, a password file), dnsmasq answering the
//! hub's name, a Qpid Proton CBS node as the AMQP peer and an in-process HTTPS peer. Every JSON report is validated
//! against the shipped schema.

mod common;
mod support;

use std::time::Duration;

use common::{Dns, Mosquitto, TlsThen, HUB_HOST, TEST_CA_CN};
use hubprobe::auth::sas::{generate_sas_token, resource_uri};
use hubprobe::auth::Secret;
use support::{finding, lab_profile, outcome, phase, run, run_with_env};

/// A device key for the lab (base64 of 32 bytes).
const DEVICE_KEY: &str = "dGhpcy1pcy1hLWxhYi1kZXZpY2Uta2V5LTEyMzQ1Njc=";
/// The pinned SAS expiry the lab's password file is made for.
const EXPIRY: u64 = 4_102_444_800; // 2100-01-01

fn lab_token(device: &str) -> String {
    let resource = resource_uri(HUB_HOST, device, None);
    generate_sas_token(&resource, &Secret::new(DEVICE_KEY), EXPIRY)
        .unwrap()
        .token
        .expose()
        .to_string()
}

fn connection_string(device: &str) -> String {
    format!("HostName={HUB_HOST};DeviceId={device};SharedAccessKey={DEVICE_KEY}")
}

struct Lab {
    broker: Mosquitto,
    dns: Dns,
    amqp: common::amqp::CbsPeer,
    https: common::FaultServer,
}

impl Lab {
    fn start() -> Lab {
        let users = [(common::hub_username("dev1"), lab_token("dev1"))];
        let broker = Mosquitto::start(&users);
        let certs = broker.certs().clone();
        let date = httpdate::fmt_http_date(std::time::SystemTime::now());
        Lab {
            dns: Dns::start(),
            amqp: common::amqp::CbsPeer::start(common::amqp::CbsMode::Accept, Some(&certs)),
            https: common::tls_then(
                &certs,
                TlsThen::Garbage(format!("HTTP/1.1 404 Not Found\r\nDate: {date}\r\nServer: lab\r\nContent-Length: 0\r\n\r\n").into_bytes()),
            ),
            broker,
        }
    }

    fn dns(&self) -> String {
        self.dns.addr().to_string()
    }

    fn ca(&self) -> String {
        self.broker.certs().ca_pem().display().to_string()
    }

    fn ports(&self) -> String {
        format!(
            "mqtt-tls={},mqtt-ws={},amqps={},https={}",
            self.broker.port("tls"),
            self.broker.port("wss"),
            self.amqp.addr.port(),
            self.https.port()
        )
    }

    /// Arguments for a check of the lab hub by name, trusting only the lab CA.
    fn args(&self) -> Vec<String> {
        vec![
            "check".into(),
            "--profile".into(),
            lab_profile(),
            "--dns-server".into(),
            self.dns(),
            "--trust".into(),
            "none".into(),
            "--ca-file".into(),
            self.ca(),
            "--port".into(),
            self.ports(),
            "--timeout".into(),
            "5s".into(),
        ]
    }
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn all_phases_ok_with_the_device_key_over_tls_and_websocket() {
    let lab = Lab::start();
    let mut args = lab.args();
    args.extend([
        HUB_HOST.into(),
        "--sas-expiry".into(),
        EXPIRY.to_string(),
        "-o".into(),
        "json".into(),
    ]);
    let cs = connection_string("dev1");
    let out = run_with_env(
        &strs(&args),
        &[("IOTHUB_DEVICE_CONNECTION_STRING", &cs)],
        Duration::from_secs(60),
    );
    let report = out.report();
    assert_eq!(out.code, 0, "{}", out.all_output());
    assert_eq!(report["schema"], "hubprobe.report/1");
    assert_eq!(report["verdict"], "ok");
    assert_eq!(report["target"]["device_id"], "dev1");
    assert_eq!(report["target"]["auth"], "sas-key");

    for (ep, phases) in [
        ("mqtt-tls", &["dns", "tcp", "tls", "mqtt"][..]),
        ("mqtt-ws", &["dns", "tcp", "tls", "websocket", "mqtt"][..]),
        ("amqps", &["dns", "tcp", "tls", "amqp"][..]),
        ("https", &["dns", "tcp", "tls", "http"][..]),
    ] {
        let got: Vec<&str> = support::endpoint(&report, ep)["phases"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["phase"].as_str().unwrap())
            .collect();
        assert_eq!(got, phases, "{ep}");
        for ph in phases {
            let p = phase(&report, ep, ph);
            assert_eq!(p["status"], "ok", "{ep}/{ph}: {p:#}");
            assert!(p["duration_ms"].as_f64().unwrap() >= 0.0);
        }
    }

    let dns = &phase(&report, "mqtt-tls", "dns")["evidence"];
    assert_eq!(dns["addresses"][0], "127.0.0.1");
    assert_eq!(dns["servers"][0], lab.dns());
    assert_eq!(dns["a"]["records"][0]["ttl"], 60);

    let tls = &phase(&report, "mqtt-tls", "tls")["evidence"];
    assert_eq!(tls["trust_anchor"]["name"], TEST_CA_CN);
    assert_eq!(tls["trust_anchor"]["expected"], true);
    assert!(tls["trust_anchor"]["origin"]
        .as_str()
        .unwrap()
        .starts_with("ca-file"));
    assert_eq!(tls["chain"][0]["sans"][0], HUB_HOST);
    assert!(tls["leaf_days_left"].as_f64().unwrap() > 365.0);
    assert!(tls["version"].as_str().unwrap().starts_with("TLSv1."));

    for ep in ["mqtt-tls", "mqtt-ws"] {
        let mqtt = &phase(&report, ep, "mqtt")["evidence"];
        assert_eq!(mqtt["connack"]["code"], 0, "{ep}");
        assert_eq!(mqtt["auth_tested"], true);
        assert_eq!(mqtt["username"], common::hub_username("dev1"));
        assert_eq!(mqtt["ping_rtts_ms"].as_array().unwrap().len(), 3);
        assert_eq!(mqtt["disconnect_sent"], true);
    }
    assert_eq!(
        phase(&report, "mqtt-ws", "websocket")["evidence"]["status"],
        101
    );
    assert_eq!(
        phase(&report, "mqtt-ws", "websocket")["evidence"]["subprotocol"],
        "mqtt"
    );
    assert_eq!(
        phase(&report, "amqps", "amqp")["evidence"]["received"],
        "AMQP 3 1.0.0"
    );
    // The device key's SAS token went into a CBS put-token, then the events link.
    let amqp = &phase(&report, "amqps", "amqp")["evidence"];
    assert_eq!(amqp["cbs_status"], 202, "{amqp}");
    assert_eq!(amqp["address"], "/devices/dev1/messages/events", "{amqp}");
    let http = &phase(&report, "https", "http")["evidence"];
    assert_eq!(http["status"], 404);
    assert!(http["clock_offset_s"].as_f64().unwrap().abs() < 5.0);

    // The token's lifetime is reported, never the token.
    assert_eq!(
        report["target"]["sas_token"]["resource"],
        format!("{HUB_HOST}/devices/dev1")
    );
    assert!(
        finding(&report, "sas_token_lifetime").is_none(),
        "a token valid until 2100 causes no periodic reconnect"
    );
    let token = lab_token("dev1");
    let sig = token
        .split("sig=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap();
    assert!(!out.all_output().contains(sig));
    assert!(!out.all_output().contains(DEVICE_KEY));
}

#[test]
fn text_output_shows_every_phase_with_marks_and_times() {
    let lab = Lab::start();
    let mut args = lab.args();
    args.extend([
        HUB_HOST.into(),
        "--endpoint".into(),
        "mqtt-tls,mqtt-ws".into(),
    ]);
    let out = run(&strs(&args));
    assert_eq!(out.code, 0, "{}", out.all_output());
    let lines: Vec<&str> = out.stdout.lines().collect();
    for ph in ["dns", "tcp", "tls", "websocket", "mqtt"] {
        assert!(
            lines
                .iter()
                .any(|l| l.trim_start().starts_with(&format!("✓ {ph}")) && l.contains(" ms")),
            "no ✓ line for {ph}:\n{}",
            out.stdout
        );
    }
    assert!(
        out.stdout.contains("reachable, authentication not tested"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("verdict: OK"));
    assert!(!out.stdout.contains("\x1b["), "NO_COLOR is set: no colour");
}

#[test]
fn wrong_key_is_refused_and_explained() {
    let lab = Lab::start();
    // All four endpoints: AMQP and HTTPS answer without authenticating, yet a refused
    // identity is CRITICAL.
    let mut args = lab.args();
    args.extend([HUB_HOST.into(), "-o".into(), "json".into()]);
    let wrong = "HostName=hub.hubprobe.test;DeviceId=dev1;SharedAccessKey=d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXk=";
    let out = run_with_env(
        &strs(&args),
        &[("IOTHUB_DEVICE_CONNECTION_STRING", wrong)],
        Duration::from_secs(60),
    );
    let report = out.report();
    assert_eq!(out.code, 2, "{}", out.all_output());
    // mosquitto answers a bad password with CONNACK 5.
    assert_eq!(
        outcome(&report, "mqtt-tls", "mqtt"),
        ("failed".into(), "mqtt.not_authorized".into())
    );
    assert_eq!(
        outcome(&report, "mqtt-ws", "mqtt"),
        ("failed".into(), "mqtt.not_authorized".into())
    );
    let f = finding(&report, "mqtt.not_authorized").expect("finding");
    assert_eq!(f["severity"], "critical");
    assert!(f["iothub_error"].as_str().unwrap().starts_with("401003"));
    assert!(report["target"]["sas_token"]["ttl_s"].as_u64().unwrap() <= 3600);
    assert!(finding(&report, "sas_token_lifetime").is_some());
    assert!(!out.all_output().contains("d3Jvbmcta2V5"));
}

#[test]
fn no_credentials_proves_reachability_without_testing_auth() {
    let lab = Lab::start();
    let mut args = lab.args();
    args.extend([
        HUB_HOST.into(),
        "--endpoint".into(),
        "mqtt-tls".into(),
        "-o".into(),
        "json".into(),
    ]);
    let out = run(&strs(&args));
    let report = out.report();
    assert_eq!(out.code, 0, "{}", out.all_output());
    let mqtt = phase(&report, "mqtt-tls", "mqtt");
    assert_eq!(mqtt["status"], "ok");
    assert_eq!(mqtt["evidence"]["auth_tested"], false);
    assert_eq!(mqtt["evidence"]["connack"]["code"], 5);
    assert!(mqtt["evidence"]["note"]
        .as_str()
        .unwrap()
        .contains("authentication not tested"));
    assert!(mqtt["evidence"]["client_id"]
        .as_str()
        .unwrap()
        .starts_with("hubprobe-"));
    assert_eq!(
        finding(&report, "auth_not_tested").unwrap()["severity"],
        "info"
    );
}

#[test]
fn ready_sas_token_is_accepted() {
    let lab = Lab::start();
    let mut args = lab.args();
    args.extend([
        HUB_HOST.into(),
        "--endpoint".into(),
        "mqtt-tls".into(),
        "-o".into(),
        "json".into(),
    ]);
    let token = lab_token("dev1");
    let out = run_with_env(
        &strs(&args),
        &[("HUBPROBE_SAS_TOKEN", &token)],
        Duration::from_secs(60),
    );
    let report = out.report();
    assert_eq!(out.code, 0, "{}", out.all_output());
    assert_eq!(report["target"]["auth"], "sas-token");
    assert_eq!(report["target"]["device_id"], "dev1");
    assert_eq!(
        phase(&report, "mqtt-tls", "mqtt")["evidence"]["connack"]["code"],
        0
    );
    assert!(!out.all_output().contains(
        token
            .split("sig=")
            .nth(1)
            .unwrap()
            .split('&')
            .next()
            .unwrap()
    ));
}

#[test]
fn x509_device_identity_is_accepted_and_required() {
    let lab = Lab::start();
    let certs = lab.broker.certs();
    let base = |extra: &[&str]| {
        let mut a: Vec<String> = vec![
            "check".into(),
            HUB_HOST.into(),
            "--profile".into(),
            "mqtt-broker".into(),
            "--endpoint".into(),
            "mqtt-tls".into(),
            "--port".into(),
            format!("mqtt-tls={}", lab.broker.port("mtls")),
            "--dns-server".into(),
            lab.dns(),
            "--trust".into(),
            "none".into(),
            "--ca-file".into(),
            lab.ca(),
            "--timeout".into(),
            "5s".into(),
            "-o".into(),
            "json".into(),
        ];
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let cert = certs.client.cert_pem.display().to_string();
    let key = certs.client.key_pem.display().to_string();
    let out = run(&strs(&base(&["--cert", &cert, "--key", &key])));
    let report = out.report();
    assert_eq!(out.code, 0, "{}", out.all_output());
    assert_eq!(report["target"]["auth"], "x509");
    assert_eq!(report["target"]["device_id"], "dev1");
    let tls = &phase(&report, "mqtt-tls", "tls")["evidence"];
    assert_eq!(tls["client_certificate_requested"], true);
    assert!(tls["client_certificate"]["subject"]
        .as_str()
        .unwrap()
        .contains("dev1"));
    assert_eq!(
        phase(&report, "mqtt-tls", "mqtt")["evidence"]["connack"]["code"],
        0
    );
    let key_pem = std::fs::read_to_string(&certs.client.key_pem).unwrap();
    let key_body: String = key_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    assert!(!out.all_output().contains(&key_body[..40]));

    // Without the certificate the broker refuses the handshake.
    let out = run(&strs(&base(&[])));
    let report = out.report();
    assert_eq!(out.code, 2, "{}", out.all_output());
    let (status, class) = outcome(&report, "mqtt-tls", "tls");
    assert_eq!(status, "failed");
    assert_eq!(class, "tls.handshake_failure", "{report:#}");
}

#[test]
fn blocked_mqtt_port_with_working_websocket_recommends_websocket() {
    let lab = Lab::start();
    let refused = common::refused_port();
    let args = vec![
        "check".to_string(),
        HUB_HOST.into(),
        "--profile".into(),
        lab_profile(),
        "--dns-server".into(),
        lab.dns(),
        "--trust".into(),
        "none".into(),
        "--ca-file".into(),
        lab.ca(),
        "--endpoint".into(),
        "mqtt-tls,mqtt-ws".into(),
        "--port".into(),
        format!(
            "mqtt-tls={},mqtt-ws={}",
            refused.port(),
            lab.broker.port("wss")
        ),
        "-o".into(),
        "json".into(),
    ];
    let out = run(&strs(&args));
    let report = out.report();
    assert_eq!(out.code, 1, "{}", out.all_output());
    assert_eq!(report["verdict"], "warning");
    assert_eq!(
        outcome(&report, "mqtt-tls", "tcp"),
        ("failed".into(), "tcp.refused".into())
    );
    assert_eq!(outcome(&report, "mqtt-tls", "tls").0, "skipped");
    assert_eq!(outcome(&report, "mqtt-tls", "mqtt").0, "skipped");
    let f = finding(&report, "port_blocked_use_alternative").expect("websocket recommendation");
    assert!(
        f["hint"].as_str().unwrap().contains("MQTT over WebSocket"),
        "{f:#}"
    );
}

#[test]
fn hub_name_from_the_connection_string_and_alias_cname() {
    let lab = Lab::start();
    // No HOST argument: it comes from the connection string; the alias resolves via CNAME.
    let args = vec![
        "check".to_string(),
        "--profile".into(),
        lab_profile(),
        "--dns-server".into(),
        lab.dns(),
        "--trust".into(),
        "none".into(),
        "--ca-file".into(),
        lab.ca(),
        "--endpoint".into(),
        "mqtt-tls".into(),
        "--port".into(),
        format!("mqtt-tls={}", lab.broker.port("tls")),
        "--sas-expiry".into(),
        EXPIRY.to_string(),
        "-o".into(),
        "json".into(),
    ];
    let out = run_with_env(
        &strs(&args),
        &[(
            "IOTHUB_DEVICE_CONNECTION_STRING",
            &connection_string("dev1"),
        )],
        Duration::from_secs(60),
    );
    let report = out.report();
    assert_eq!(out.code, 0, "{}", out.all_output());
    assert_eq!(report["target"]["host"], HUB_HOST);

    let mut args = lab.args();
    args.extend([
        "alias.hubprobe.test".into(),
        "--endpoint".into(),
        "mqtt-tls".into(),
        "-o".into(),
        "json".into(),
    ]);
    let out = run(&strs(&args));
    let report = out.report();
    let dns = &phase(&report, "mqtt-tls", "dns")["evidence"];
    assert_eq!(dns["cname_chain"][0], HUB_HOST);
    // The certificate is for hub.hubprobe.test, not the alias.
    assert_eq!(
        outcome(&report, "mqtt-tls", "tls"),
        ("failed".into(), "tls.hostname_mismatch".into())
    );
}

#[test]
fn secrets_never_appear_in_any_output_or_log() {
    let lab = Lab::start();
    let token = lab_token("dev1");
    let sig_encoded = token
        .split("sig=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap()
        .to_string();
    let sig_decoded = sig_encoded
        .replace("%2B", "+")
        .replace("%2F", "/")
        .replace("%3D", "=");
    let forbidden = [
        DEVICE_KEY.to_string(),
        sig_encoded,
        sig_decoded,
        "sig=".to_string(),
    ];
    let cs = connection_string("dev1");
    let base = {
        let mut a = lab.args();
        a.extend([
            HUB_HOST.into(),
            "--endpoint".into(),
            "mqtt-tls,mqtt-ws".into(),
            "--sas-expiry".into(),
            EXPIRY.to_string(),
        ]);
        a
    };
    let env_cs = [
        ("IOTHUB_DEVICE_CONNECTION_STRING", cs.as_str()),
        ("RUST_LOG", "trace"),
    ];
    let env_token = [
        ("HUBPROBE_SAS_TOKEN", token.as_str()),
        ("RUST_LOG", "trace"),
    ];
    for (extra, env) in [
        (&["-vv"][..], &env_cs[..]),
        (&["-o", "json"][..], &env_cs[..]),
        (&["-vv"][..], &env_token[..]),
        (&["-o", "json"][..], &env_token[..]),
    ] {
        let mut args = base.clone();
        args.extend(extra.iter().map(|s| s.to_string()));
        let out = run_with_env(&strs(&args), env, Duration::from_secs(60));
        assert_eq!(out.code, 0, "{}", out.all_output());
        assert!(
            out.stderr.len() > 1000,
            "RUST_LOG=trace produced logs to search: {}",
            out.stderr.len()
        );
        for secret in &forbidden {
            assert!(
                !out.all_output().contains(secret.as_str()),
                "{secret:?} leaked with {extra:?}"
            );
        }
    }
    // The same with a wrong key, where errors are printed.
    let wrong_key = "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXk=";
    let wrong = format!("HostName={HUB_HOST};DeviceId=dev1;SharedAccessKey={wrong_key}");
    let wrong_token = generate_sas_token(
        &resource_uri(HUB_HOST, "dev1", None),
        &Secret::new(wrong_key),
        EXPIRY,
    )
    .unwrap()
    .token
    .expose()
    .to_string();
    let wrong_sig = wrong_token
        .split("sig=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap()
        .to_string();
    let mut args = base.clone();
    args.push("-vv".into());
    let out = run_with_env(
        &strs(&args),
        &[
            ("IOTHUB_DEVICE_CONNECTION_STRING", &wrong),
            ("RUST_LOG", "trace"),
        ],
        Duration::from_secs(60),
    );
    assert_eq!(out.code, 2);
    for secret in [&wrong_key[..40], wrong_sig.as_str(), "sig="] {
        assert!(!out.all_output().contains(secret), "{secret:?} leaked");
    }
}

#[test]
fn broker_passwords_and_private_keys_never_appear() {
    let lab = Lab::start();
    let certs = lab.broker.certs();
    let password = "pw-Secret-4711-do-not-print";
    let dir = tempfile::tempdir().unwrap();
    let pw_file = dir.path().join("pw");
    std::fs::write(&pw_file, password).unwrap();
    let key_pem = std::fs::read_to_string(&certs.client.key_pem).unwrap();
    let key_body: String = key_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let ports = format!("mqtt-tls={}", lab.broker.port("tls"));
    let mtls = format!("mqtt-tls={}", lab.broker.port("mtls"));
    let (dns, ca) = (lab.dns(), lab.ca());
    let cert = certs.client.cert_pem.display().to_string();
    let key = certs.client.key_pem.display().to_string();
    let pw_path = pw_file.to_str().unwrap().to_string();
    let common_args = [
        "--profile",
        "mqtt-broker",
        "--endpoint",
        "mqtt-tls",
        "--dns-server",
        &dns,
        "--trust",
        "none",
        "--ca-file",
        &ca,
    ];
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>);
    let runs: Vec<Case> = vec![
        // a password from the environment, refused by the broker (not in its file)
        (
            vec![
                "check",
                HUB_HOST,
                "--port",
                &ports,
                "--username",
                "someone",
                "-vv",
            ],
            vec![("HUBPROBE_MQTT_PASSWORD", password), ("RUST_LOG", "trace")],
        ),
        // a password from a file
        (
            vec![
                "check",
                HUB_HOST,
                "--port",
                &ports,
                "--username",
                "someone",
                "--password-file",
                &pw_path,
                "-vv",
            ],
            vec![("RUST_LOG", "trace")],
        ),
        // the device's private key, accepted; as text and as JSON
        (
            vec![
                "check", HUB_HOST, "--port", &mtls, "--cert", &cert, "--key", &key, "-vv",
            ],
            vec![("RUST_LOG", "trace")],
        ),
        (
            vec![
                "check", HUB_HOST, "--port", &mtls, "--cert", &cert, "--key", &key, "-o", "json",
            ],
            vec![("RUST_LOG", "trace")],
        ),
    ];
    for (mut args, env) in runs {
        args.extend_from_slice(&common_args);
        let out = run_with_env(&args, &env, Duration::from_secs(60));
        assert!(out.code == 0 || out.code == 2, "{}", out.all_output());
        assert!(out.stderr.len() > 1000, "trace logs were produced");
        let all = out.all_output();
        assert!(!all.contains(password), "the password leaked: {args:?}");
        for chunk in key_body.as_bytes().chunks(24) {
            let chunk = std::str::from_utf8(chunk).unwrap();
            assert!(
                !all.contains(chunk),
                "private key material leaked: {args:?}"
            );
        }
    }
}

//! Every fault the field produces, each against a real peer (mosquitto with bad
//! certificates, dnsmasq, a namespace whose nftables drops SYNs, in-process fault
//! servers): named with the right class, and finished within its timeout.

mod common;
mod support;

use std::time::Duration;

use common::{Dns, Mosquitto, Netns, TlsThen, HUB_HOST};
use support::{finding, outcome, run, run_cmd, Run};

/// Runs `check` of one MQTT/TLS endpoint on `port` of the lab hub name.
fn check_tls(dns: &Dns, ca: &str, port: u16, extra: &[&str]) -> Run {
    let ports = format!("mqtt-tls={port}");
    let dns = dns.addr().to_string();
    let mut args = vec![
        "check",
        HUB_HOST,
        "--profile",
        "mqtt-broker",
        "--endpoint",
        "mqtt-tls",
        "--port",
        &ports,
        "--dns-server",
        &dns,
        "--trust",
        "none",
        "--ca-file",
        ca,
        "-o",
        "json",
    ];
    if !extra.contains(&"--timeout") {
        args.extend(["--timeout", "2s"]);
    }
    args.extend_from_slice(extra);
    run(&args)
}

fn assert_class(out: &Run, ph: &str, class: &str) -> serde_json::Value {
    let report = out.report();
    assert_eq!(
        outcome(&report, "mqtt-tls", ph),
        ("failed".to_string(), class.to_string()),
        "{}",
        out.all_output()
    );
    assert_eq!(
        out.code,
        2,
        "a single failing endpoint is CRITICAL: {}",
        out.all_output()
    );
    report
}

#[test]
fn bad_certificates_from_mosquitto_are_classified() {
    let broker = Mosquitto::start(&[]);
    let dns = Dns::start();
    let ca = broker.certs().ca_pem().display().to_string();

    let report = assert_class(
        &check_tls(&dns, &ca, broker.port("tls_expired"), &[]),
        "tls",
        "tls.expired",
    );
    assert!(
        report["endpoints"][0]["phases"][2]["evidence"]["leaf_days_left"]
            .as_f64()
            .unwrap()
            < 0.0
    );
    assert_eq!(outcome(&report, "mqtt-tls", "mqtt").0, "skipped");

    let report = assert_class(
        &check_tls(&dns, &ca, broker.port("tls_notyet"), &[]),
        "tls",
        "tls.not_yet_valid",
    );
    let f = finding(&report, "tls.not_yet_valid").unwrap();
    assert!(
        f["hint"].as_str().unwrap().contains("clock is behind"),
        "{f:#}"
    );

    assert_class(
        &check_tls(&dns, &ca, broker.port("tls_wrongname"), &[]),
        "tls",
        "tls.hostname_mismatch",
    );

    let report = assert_class(
        &check_tls(&dns, &ca, broker.port("tls_otherca"), &[]),
        "tls",
        "tls.unknown_ca",
    );
    let chain = &report["endpoints"][0]["phases"][2]["evidence"]["chain"];
    assert!(
        chain[0]["issuer"]
            .as_str()
            .unwrap()
            .contains(common::OTHER_CA_CN),
        "{chain:#}"
    );
}

#[test]
fn missing_root_names_the_roots_the_hub_uses() {
    // The 2023 IoT Hub root migration case: the device's store lacks the hub's root.
    let broker = Mosquitto::start(&[]);
    let dns = Dns::start();
    let ports = format!("mqtt-tls={}", broker.port("tls_anon"));
    let dns_addr = dns.addr().to_string();
    let out = run(&[
        "check",
        HUB_HOST,
        "--profile",
        "azure-iot-hub",
        "--endpoint",
        "mqtt-tls",
        "--port",
        &ports,
        "--dns-server",
        &dns_addr,
        "--trust",
        "bundled",
        "-o",
        "json",
    ]);
    let report = out.report();
    assert_eq!(
        outcome(&report, "mqtt-tls", "tls"),
        ("failed".into(), "tls.unknown_ca".into())
    );
    let hint = finding(&report, "tls.unknown_ca").unwrap()["hint"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(hint.contains("DigiCert Global Root G2"), "{hint}");
    assert!(hint.contains("Baltimore CyberTrust Root"), "{hint}");
}

#[test]
fn tls_faults_from_in_process_servers() {
    let certs = common::Certs::generate();
    let dns = Dns::start();
    let ca = certs.ca_pem().display().to_string();

    let silent = common::silent();
    let out = check_tls(&dns, &ca, silent.port(), &["--timeout", "1s"]);
    assert_class(&out, "tls", "tls.timeout");
    assert!(
        out.elapsed < Duration::from_secs(8),
        "bounded by the 1 s phase timeout: {:?}",
        out.elapsed
    );

    let garbage =
        common::garbage(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n".to_vec());
    assert_class(
        &check_tls(&dns, &ca, garbage.port(), &[]),
        "tls",
        "tls.not_tls",
    );

    let reset = common::reset_after_read();
    assert_class(&check_tls(&dns, &ca, reset.port(), &[]), "tls", "tls.reset");

    let refused = common::refused_port();
    assert_class(
        &check_tls(&dns, &ca, refused.port(), &[]),
        "tcp",
        "tcp.refused",
    );
}

#[test]
fn mqtt_faults_after_a_good_tls_handshake() {
    let certs = common::Certs::generate();
    let dns = Dns::start();
    let ca = certs.ca_pem().display().to_string();

    let no_connack = common::tls_then(&certs, TlsThen::Silent);
    let out = check_tls(&dns, &ca, no_connack.port(), &["--timeout", "1s"]);
    let report = assert_class(&out, "mqtt", "mqtt.timeout");
    assert_eq!(outcome(&report, "mqtt-tls", "tls").0, "ok");
    assert!(out.elapsed < Duration::from_secs(8), "{:?}", out.elapsed);

    let garbage = common::tls_then(
        &certs,
        TlsThen::Garbage(b"\xff\xfe garbage garbage".to_vec()),
    );
    assert_class(
        &check_tls(&dns, &ca, garbage.port(), &[]),
        "mqtt",
        "mqtt.protocol_error",
    );

    let closes = common::tls_then(&certs, TlsThen::Close);
    assert_class(
        &check_tls(&dns, &ca, closes.port(), &[]),
        "mqtt",
        "mqtt.closed",
    );
}

#[test]
fn every_refusing_connack_code_is_classified() {
    let certs = common::Certs::generate();
    let dns = Dns::start();
    let ca = certs.ca_pem().display().to_string();
    for (code, class) in [
        (1u8, "mqtt.protocol_version"),
        (2, "mqtt.identifier_rejected"),
        (3, "mqtt.server_unavailable"),
        (4, "mqtt.bad_credentials"),
        (5, "mqtt.not_authorized"),
    ] {
        let server = common::tls_then(&certs, TlsThen::Connack(code));
        let out = check_tls(
            &dns,
            &ca,
            server.port(),
            &["--username", "probe", "--device-id", "dev7"],
        );
        assert_class(&out, "mqtt", class);
        let seen = server.connects();
        assert_eq!(seen.len(), 1, "one CONNECT per check");
        assert_eq!(seen[0].client_id, "dev7");
        assert_eq!(seen[0].username.as_deref(), Some("probe"));
    }
}

#[test]
fn dns_faults() {
    let dns = Dns::start();
    let dns_addr = dns.addr().to_string();
    let base = |host: &str, server: &str| {
        run(&[
            "check",
            host,
            "--profile",
            "mqtt-broker",
            "--endpoint",
            "mqtt-tls",
            "--dns-server",
            server,
            "--timeout",
            "1s",
            "-o",
            "json",
        ])
    };
    let out = base("nope.hubprobe.test", &dns_addr);
    let report = assert_class(&out, "dns", "dns.nxdomain");
    assert_eq!(outcome(&report, "mqtt-tls", "tcp").0, "skipped");

    let servfail = common::dns_rcode(2);
    assert_class(
        &base(HUB_HOST, &servfail.addr().to_string()),
        "dns",
        "dns.servfail",
    );

    let refused = common::dns_rcode(5);
    assert_class(
        &base(HUB_HOST, &refused.addr().to_string()),
        "dns",
        "dns.refused",
    );

    let silent = common::dns_silent();
    let out = base(HUB_HOST, &silent.addr().to_string());
    assert_class(&out, "dns", "dns.timeout");
    assert!(out.elapsed < Duration::from_secs(8), "{:?}", out.elapsed);
}

#[test]
fn syn_black_hole_in_a_namespace_is_a_tcp_timeout() {
    // Inside a namespace of our own: nftables drops SYNs to the port, so the connect
    // gets no answer at all, as behind a firewall that silently drops.
    let ns = Netns::new();
    let port = 18883u16;
    ns.blackhole_tcp(port);
    let ports = format!("mqtt-tls={port}");
    let mut cmd = ns.command(support::bin());
    cmd.args([
        "check",
        "127.0.0.1",
        "--profile",
        "mqtt-broker",
        "--endpoint",
        "mqtt-tls",
        "--port",
        &ports,
        "--timeout",
        "1s",
        "-o",
        "json",
    ]);
    let out = run_cmd(&mut cmd, &[], Duration::from_secs(30));
    let report = assert_class(&out, "tcp", "tcp.timeout");
    let msg = support::phase(&report, "mqtt-tls", "tcp")["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(msg.contains("black-holed"), "{msg}");
    assert!(out.elapsed < Duration::from_secs(8), "{:?}", out.elapsed);
}

#[test]
fn the_deadline_bounds_the_whole_run() {
    let certs = common::Certs::generate();
    let dns = Dns::start();
    let ca = certs.ca_pem().display().to_string();
    let silent = common::silent();
    let out = check_tls(
        &dns,
        &ca,
        silent.port(),
        &["--timeout", "30s", "--deadline", "1500ms"],
    );
    assert_class(&out, "tls", "tls.timeout");
    assert!(
        out.elapsed < Duration::from_secs(5),
        "deadline 1.5 s, phase timeout 30 s: {:?}",
        out.elapsed
    );
}

#[test]
fn slow_pings_cannot_stretch_the_mqtt_phase_past_its_timeout_or_the_deadline() {
    let certs = common::Certs::generate();
    let dns = Dns::start();
    let ca = certs.ca_pem().display().to_string();
    let slow = common::tls_then(&certs, TlsThen::SlowPings(Duration::from_millis(900)));
    // 20 pings of 0.9 s each would take 18 s; the phase has 1 s and the run 2 s.
    let out = check_tls(
        &dns,
        &ca,
        slow.port(),
        &["--timeout", "1s", "--deadline", "2s", "--pings", "20"],
    );
    let report = assert_class(&out, "mqtt", "mqtt.timeout");
    let mqtt = support::phase(&report, "mqtt-tls", "mqtt");
    assert!(
        mqtt["message"].as_str().unwrap().contains("PINGRESP"),
        "{mqtt:#}"
    );
    assert!(mqtt["duration_ms"].as_f64().unwrap() < 1500.0, "{mqtt:#}");
    assert!(out.elapsed < Duration::from_secs(5), "{:?}", out.elapsed);
}

//! `fleet summarize` on reports the real binary wrote: `hubprobe check` against the
//! lab hub (mosquitto over TLS and WebSocket/TLS, dnsmasq, AMQP and HTTPS peers),
//! one device trusting the lab's root CA and one with only the bundled Mozilla roots
//! (so its TLS fails with unknown_ca), each with its labels, mixed into a directory
//! with synthetic reports.

mod common;
mod support;

use std::time::Duration;

use common::{Dns, Mosquitto, TlsThen, HUB_HOST, TEST_CA_CN};
use hubprobe::auth::sas::{generate_sas_token, resource_uri};
use hubprobe::auth::Secret;
use serde_json::Value;

const DEVICE_KEY: &str = "dGhpcy1pcy1hLWxhYi1kZXZpY2Uta2V5LTEyMzQ1Njc=";
const EXPIRY: u64 = 4_102_444_800;

#[test]
fn real_check_reports_are_summarized_with_their_anchor_labels_and_failures() {
    let token = generate_sas_token(
        &resource_uri(HUB_HOST, "dev1", None),
        &Secret::new(DEVICE_KEY),
        EXPIRY,
    )
    .unwrap()
    .token
    .expose()
    .to_string();
    let broker = Mosquitto::start(&[(common::hub_username("dev1"), token)]);
    let certs = broker.certs().clone();
    let dns = Dns::start();
    let amqp = common::amqp::CbsPeer::start(common::amqp::CbsMode::Accept, Some(&certs));
    let date = httpdate::fmt_http_date(std::time::SystemTime::now());
    let https = common::tls_then(
        &certs,
        TlsThen::Garbage(
            format!("HTTP/1.1 404 Not Found\r\nDate: {date}\r\nContent-Length: 0\r\n\r\n")
                .into_bytes(),
        ),
    );
    let dir = tempfile::tempdir().unwrap();
    let reports = dir.path().join("reports");
    std::fs::create_dir(&reports).unwrap();
    let ports = format!(
        "mqtt-tls={},mqtt-ws={},amqps={},https={}",
        broker.port("tls"),
        broker.port("wss"),
        amqp.addr.port(),
        https.port()
    );
    let ca = certs.ca_pem().display().to_string();
    let dns_addr = dns.addr().to_string();
    let profile = support::lab_profile();
    for (device, site, trust) in [("dev1", "lab-a", "none"), ("dev2", "lab-b", "bundled")] {
        let file = reports.join(format!("{device}.json"));
        let mut args = vec![
            "check",
            HUB_HOST,
            "--profile",
            &profile,
            "--dns-server",
            &dns_addr,
            "--port",
            &ports,
            "--timeout",
            "5s",
            "--sas-expiry",
            "4102444800",
            "--trust",
            trust,
            "--report-file",
            file.to_str().unwrap(),
            "--label",
        ];
        let site_label = format!("site={site}");
        args.push(&site_label);
        args.extend(["--label", "network=loopback"]);
        if trust == "none" {
            args.extend(["--ca-file", &ca]);
        }
        let cs = format!("HostName={HUB_HOST};DeviceId={device};SharedAccessKey={DEVICE_KEY}");
        let out = support::run_with_env(
            &args,
            &[("IOTHUB_DEVICE_CONNECTION_STRING", &cs)],
            Duration::from_secs(60),
        );
        assert!(out.code == 0 || out.code == 2, "{}", out.all_output());
        let written: Value =
            serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        support::assert_valid(&written);
    }

    let out = support::run(&[
        "fleet",
        "summarize",
        reports.to_str().unwrap(),
        "--by",
        "label.site",
        "-o",
        "json",
    ]);
    assert_eq!(out.code, 0, "{}", out.all_output());
    let s: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(s["input"]["files"], 2);
    assert_eq!(s["input"]["reports"], 2);
    assert_eq!(s["devices"], 2);
    let g = &s["overall"];
    assert_eq!(g["latest_verdicts"]["ok"], 1, "{g:#}");
    assert_eq!(g["latest_verdicts"]["critical"], 1, "{g:#}");
    assert_eq!(g["trust"]["anchors"][0]["name"], TEST_CA_CN);
    assert_eq!(g["trust"]["anchors"][0]["devices"], 1);
    assert_eq!(g["trust"]["unknown_ca_devices"], 1);
    assert_eq!(g["trust"]["unknown_ca_examples"][0], "dev2");
    let classes = g["failure_classes"].as_array().unwrap();
    assert_eq!(classes.len(), 1, "{classes:#?}");
    assert_eq!(classes[0]["class"], "tls.unknown_ca");
    assert_eq!(classes[0]["confined_to"], "site=lab-b");
    assert_eq!(classes[0]["endpoints"].as_array().unwrap().len(), 4);
    let tls = g["phases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["endpoint"] == "mqtt-tls" && p["phase"] == "tls")
        .unwrap();
    assert_eq!(tls["attempts"], 2);
    assert_eq!(tls["ok"], 1);
    assert_eq!(tls["success_share"], 0.5);
    // The HTTPS Date header gave dev1's clock offset.
    assert_eq!(g["clock"]["reports"], 1);
    assert!(g["clock"]["abs_offset_s"]["p50"].as_f64().unwrap() < 5.0);
    let groups = s["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 2);
    assert_eq!(groups[0]["value"], "lab-a");
    assert_eq!(
        groups[0]["summary"]["failure_classes"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    assert_eq!(groups[1]["value"], "lab-b");
}

//! `hubprobe check --mqtt-version 5` against real peers: mosquitto 2 with
//! `max_keepalive` and `max_packet_size` (it states both in its CONNACK to v5
//! clients) and a password listener, and an in-process fault server for the reason
//! codes mosquitto does not send (0x9C with a Server Reference, 0x89, 0x97).

mod common;
mod support;

use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rumqttc::v5::mqttbytes::v5::{ConnAck, ConnAckProperties, ConnectReturnCode};
use serde_json::Value;
use support::{finding, outcome, phase, run, Run};

/// The broker's cap on keep-alives (sent to v5 clients as Server Keep Alive).
const MAX_KEEPALIVE: u16 = 60;
/// The broker's largest packet (sent to v5 clients as Maximum Packet Size).
const MAX_PACKET: u32 = 4096;
const USER: &str = "meter-7";
const PASSWORD: &str = "S3CRET-broker-pass";

/// mosquitto with an anonymous listener and a password listener, killed on drop.
struct Broker {
    child: Child,
    anon: u16,
    passwd: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_passwords(path: &Path) {
    let tool = common::util::find_program("mosquitto_passwd")
        .unwrap_or_else(|| panic!("mosquitto_passwd not installed: apt-get install mosquitto"));
    fs::write(path, "").unwrap();
    let out = Command::new(tool)
        .arg("-b")
        .arg(path)
        .arg(USER)
        .arg(PASSWORD)
        .stdin(Stdio::null())
        .output()
        .expect("run mosquitto_passwd");
    assert!(out.status.success(), "mosquitto_passwd failed: {out:?}");
}

fn start_broker() -> Broker {
    let bin = common::util::find_program("mosquitto")
        .unwrap_or_else(|| panic!("mosquitto not installed: apt-get install mosquitto"));
    let dir = tempfile::Builder::new()
        .prefix("hubprobe-mqtt5-")
        .tempdir()
        .unwrap();
    let pw = dir.path().join("passwd");
    write_passwords(&pw);
    let mut last = String::new();
    for _attempt in 0..3 {
        let ports = common::util::free_ports(2);
        let conf = format!(
            "per_listener_settings true\nuser root\npersistence false\nlog_dest stderr\n\
             log_type all\nmax_keepalive {MAX_KEEPALIVE}\nmax_packet_size {MAX_PACKET}\n\
             listener {} 127.0.0.1\nallow_anonymous true\n\
             listener {} 127.0.0.1\npassword_file {}\nallow_anonymous false\n",
            ports[0],
            ports[1],
            pw.display()
        );
        let conf_path = dir.path().join("mosquitto.conf");
        fs::write(&conf_path, conf).unwrap();
        let log = fs::File::create(dir.path().join("log")).unwrap();
        let mut child = Command::new(&bin)
            .arg("-c")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn mosquitto");
        let ready = ports.iter().all(|&p| {
            common::util::wait_for_tcp(
                SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, p)),
                Duration::from_secs(10),
            )
        });
        if ready {
            return Broker {
                child,
                anon: ports[0],
                passwd: ports[1],
                _dir: dir,
            };
        }
        let _ = child.kill();
        let _ = child.wait();
        last = fs::read_to_string(dir.path().join("log")).unwrap_or_default();
    }
    panic!("mosquitto did not start: {last}");
}

fn broker() -> &'static Broker {
    static B: OnceLock<Broker> = OnceLock::new();
    B.get_or_init(start_broker)
}

fn check(port: u16, extra: &[&str]) -> Run {
    let ports = format!("mqtt={port}");
    let mut args = vec![
        "check",
        "127.0.0.1",
        "--profile",
        "mqtt-broker",
        "--endpoint",
        "mqtt",
        "--port",
        &ports,
        "--timeout",
        "5s",
        "-o",
        "json",
    ];
    args.extend_from_slice(extra);
    run(&args)
}

fn mqtt_evidence(report: &Value) -> Value {
    phase(report, "mqtt", "mqtt")["evidence"].clone()
}

#[test]
fn mosquitto_states_its_keep_alive_and_packet_size_to_a_v5_client() {
    let b = broker();
    let out = check(b.anon, &["--mqtt-version", "5", "--keepalive", "300s"]);
    let report = out.report();
    let ev = mqtt_evidence(&report);
    assert_eq!(ev["mqtt_version"], "5", "{}", out.all_output());
    assert_eq!(ev["connack"]["code"], 0, "{ev}");
    assert_eq!(ev["connack"]["name"], "success", "{ev}");
    let props = &ev["connack_properties"];
    assert_eq!(props["server_keep_alive_s"], MAX_KEEPALIVE, "{ev}");
    assert_eq!(props["maximum_packet_size"], MAX_PACKET, "{ev}");
    let ka = finding(&report, "mqtt5_server_keep_alive").expect("keep-alive finding");
    let text = format!("{} {}", ka["summary"], ka["hint"]);
    assert!(
        text.contains("keep-alive of 300 s with 60 s") && text.contains("keep-alive to 60 s"),
        "{text}"
    );
    let mp = finding(&report, "mqtt5_maximum_packet_size").expect("packet size finding");
    assert!(
        mp["summary"]
            .as_str()
            .unwrap()
            .contains("Maximum Packet Size 4096: reports larger than 4096"),
        "{mp}"
    );
    assert_eq!(out.code, 1, "a keep-alive override is a warning");
    // Pings still work after a v5 CONNACK.
    assert!(!ev["ping_rtts_ms"].as_array().unwrap().is_empty(), "{ev}");
}

#[test]
fn a_keep_alive_within_the_cap_is_not_overridden_and_311_stays_the_default() {
    let b = broker();
    let out = check(b.anon, &["--mqtt-version", "5", "--keepalive", "60s"]);
    let report = out.report();
    assert!(
        finding(&report, "mqtt5_server_keep_alive").is_none(),
        "{report}"
    );

    let out = check(b.anon, &["--keepalive", "300s"]);
    let report = out.report();
    let ev = mqtt_evidence(&report);
    assert_eq!(ev["mqtt_version"], "3.1.1", "{ev}");
    assert!(ev.get("connack_properties").is_none(), "{ev}");
    assert!(finding(&report, "mqtt5_server_keep_alive").is_none());
    assert_eq!(out.code, 0, "{}", out.all_output());
}

#[test]
fn the_password_listener_refuses_with_v5_reason_codes() {
    let b = broker();
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good");
    let bad = dir.path().join("bad");
    fs::write(&good, PASSWORD).unwrap();
    fs::write(&bad, "wrong-S3CRET-guess").unwrap();
    let good = good.to_str().unwrap();
    let bad = bad.to_str().unwrap();

    let ok = check(
        b.passwd,
        &[
            "--mqtt-version",
            "5",
            "--username",
            USER,
            "--password-file",
            good,
        ],
    );
    let report = ok.report();
    assert_eq!(
        mqtt_evidence(&report)["connack"]["code"],
        0,
        "{}",
        ok.all_output()
    );
    assert!(!ok.all_output().contains(PASSWORD));

    let refused = check(
        b.passwd,
        &[
            "--mqtt-version",
            "5",
            "--username",
            USER,
            "--password-file",
            bad,
        ],
    );
    let report = refused.report();
    let (status, class) = outcome(&report, "mqtt", "mqtt");
    let code = mqtt_evidence(&report)["connack"]["code"].as_u64().unwrap();
    assert_eq!(status, "failed");
    match code {
        0x86 => assert_eq!(class, "mqtt.bad_credentials"),
        0x87 => assert_eq!(class, "mqtt.not_authorized"),
        other => panic!("unexpected reason 0x{other:02X}: {}", refused.all_output()),
    }
    assert_eq!(refused.code, 2);
    assert!(!refused.all_output().contains("wrong-S3CRET-guess"));
}

/// A one-shot MQTT 5 server answering every CONNECT with `connack`.
fn fault_server(connack: ConnAck) -> (u16, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut bytes = BytesMut::new();
    connack.write(&mut bytes).unwrap();
    let h = std::thread::spawn(move || {
        listener.set_nonblocking(false).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let (mut s, _): (TcpStream, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0u8; 1024];
        let n = s.read(&mut buf).unwrap_or(0);
        // An MQTT 5 CONNECT: type 1, protocol name MQTT, level 5.
        assert!(n > 9 && buf[0] == 0x10, "not a CONNECT: {:?}", &buf[..n]);
        assert!(buf[..n].windows(5).any(|w| w == b"MQTT\x05"), "not MQTT 5");
        s.write_all(&bytes).unwrap();
        // Bounded: wait for the client to go, at most until the deadline.
        while Instant::now() < deadline {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    });
    (port, h)
}

fn refusal(code: ConnectReturnCode, reference: Option<&str>, reason: &str) -> ConnAck {
    ConnAck {
        session_present: false,
        code,
        properties: Some(ConnAckProperties {
            session_expiry_interval: None,
            receive_max: None,
            max_qos: None,
            retain_available: None,
            max_packet_size: None,
            assigned_client_identifier: None,
            topic_alias_max: None,
            reason_string: Some(reason.into()),
            user_properties: vec![("region".into(), "eu-west".into())],
            wildcard_subscription_available: None,
            subscription_identifiers_available: None,
            shared_subscription_available: None,
            server_keep_alive: None,
            response_information: None,
            server_reference: reference.map(str::to_string),
            authentication_method: None,
            authentication_data: None,
        }),
    }
}

#[test]
fn use_another_server_names_the_server_reference() {
    let (port, h) = fault_server(refusal(
        ConnectReturnCode::UseAnotherServer,
        Some("mqtt-b.example.test:8883"),
        "draining",
    ));
    let out = check(port, &["--mqtt-version", "5", "--username", "u"]);
    h.join().unwrap();
    let report = out.report();
    assert_eq!(
        outcome(&report, "mqtt", "mqtt"),
        ("failed".into(), "mqtt.server_redirect".into()),
        "{}",
        out.all_output()
    );
    let ev = mqtt_evidence(&report);
    assert_eq!(ev["connack"]["code"], 0x9C);
    assert_eq!(ev["connack"]["name"], "use another server");
    assert_eq!(
        ev["connack_properties"]["server_reference"],
        "mqtt-b.example.test:8883"
    );
    assert_eq!(ev["connack_properties"]["reason_string"], "draining");
    assert_eq!(
        ev["connack_properties"]["user_properties"],
        serde_json::json!([["region", "eu-west"]])
    );
    let f = finding(&report, "mqtt5_server_redirect").expect("redirect finding");
    assert!(
        f["summary"]
            .as_str()
            .unwrap()
            .contains("the broker redirects to another server: \"mqtt-b.example.test:8883\""),
        "{f}"
    );
    assert_eq!(out.code, 2);
}

#[test]
fn server_busy_and_quota_exceeded_have_their_classes() {
    for (code, num, class) in [
        (ConnectReturnCode::ServerBusy, 0x89, "mqtt.server_busy"),
        (
            ConnectReturnCode::QuotaExceeded,
            0x97,
            "mqtt.quota_exceeded",
        ),
        (ConnectReturnCode::ServerMoved, 0x9D, "mqtt.server_redirect"),
    ] {
        let (port, h) = fault_server(refusal(code, None, "try later"));
        let out = check(port, &["--mqtt-version", "5", "--username", "u"]);
        h.join().unwrap();
        let report = out.report();
        assert_eq!(
            outcome(&report, "mqtt", "mqtt"),
            ("failed".into(), class.into()),
            "{}",
            out.all_output()
        );
        let ev = mqtt_evidence(&report);
        assert_eq!(ev["connack"]["code"], num);
        let msg = phase(&report, "mqtt", "mqtt")["message"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            msg.contains(&format!("0x{num:02X}")) && msg.contains("try later"),
            "{msg}"
        );
        assert_eq!(out.code, 2);
    }
}

fn v5_options(client_id: &str) -> hubprobe::probe::mqtt::MqttOptions {
    hubprobe::probe::mqtt::MqttOptions {
        client_id: client_id.into(),
        username: None,
        password: None,
        keep_alive: 30,
        auth: "none",
        pings: 0,
        timeout: Duration::from_secs(10),
        version: hubprobe::model::MqttVersion::V5,
    }
}

async fn v5_session(port: u16, client_id: &str) -> hubprobe::probe::mqtt::Session {
    use hubprobe::probe::stream::{Link, MaybeTls};
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to mosquitto");
    let link = Link::Stream(MaybeTls::Plain(tcp.into()));
    hubprobe::probe::mqtt::Session::connect(link, &v5_options(client_id))
        .await
        .unwrap_or_else(|f| panic!("v5 CONNECT refused: {f:?}"))
}

fn v5_machine() -> hubprobe::agent::machine::SessionMachine {
    use hubprobe::agent::machine::{MachineConfig, SessionMachine};
    SessionMachine::new(
        MachineConfig {
            keepalive: Duration::from_secs(30),
            ping_timeout: Duration::from_secs(10),
            token_lifetime: None,
            token_expiry_unix: None,
            version: hubprobe::model::MqttVersion::V5,
        },
        tokio::time::Instant::now(),
    )
}

/// Feeds what the server sends on `link` to the canary's machine until the session ends.
async fn hold_until_end(
    mut link: hubprobe::probe::stream::Link,
    leftover: BytesMut,
) -> hubprobe::agent::machine::Disconnect {
    use hubprobe::agent::machine::{Action, Ended};
    use tokio::time::Instant as TInstant;
    let mut m = v5_machine();
    m.on_bytes(&leftover, TInstant::now());
    let mut buf = BytesMut::new();
    let deadline = TInstant::now() + Duration::from_secs(15);
    for _ in 0..100 {
        buf.clear();
        let n = match tokio::time::timeout_at(deadline, link.recv(&mut buf)).await {
            Ok(Ok(n)) => n,
            Ok(Err(e)) => panic!("read: {e}"),
            Err(_) => panic!("the session did not end within 15 s"),
        };
        if n == 0 {
            m.on_eof(TInstant::now(), 0);
        } else {
            m.on_bytes(&buf[..], TInstant::now());
        }
        while let Some(a) = m.poll_action() {
            match a {
                Action::End(Ended::Disconnect(d)) => return d,
                Action::End(other) => panic!("expected a disconnect, got {other:?}"),
                _ => {}
            }
        }
    }
    panic!("the session did not end after 100 reads");
}

/// Debian's mosquitto 2.0.11 closes a v5 session that another client takes over
/// without sending DISCONNECT 0x8E (its log says "already connected, closing old
/// connection"): the canary records what it saw, an EOF without DISCONNECT.
#[tokio::test]
async fn a_take_over_by_mosquitto_ends_the_v5_canary_session() {
    use hubprobe::agent::history::DisconnectCause;
    let b = broker();
    let first = v5_session(b.anon, "canary-takeover").await;
    assert_eq!(
        first
            .connack_properties()
            .and_then(|p| p.server_keep_alive_s),
        None,
        "a keep-alive of 30 s is within the broker's cap"
    );
    let (link, leftover) = first.into_parts();
    let second = v5_session(b.anon, "canary-takeover").await;
    let d = hold_until_end(link, leftover).await;
    assert!(
        matches!(
            (d.cause, d.reason_code),
            (DisconnectCause::EofWithoutDisconnect, None)
                | (DisconnectCause::ServerDisconnect, Some(0x8E))
        ),
        "{d:?}"
    );
    second.close(Duration::from_secs(2)).await;
}

/// A v5 server that accepts CONNECT, then sends `after` (a DISCONNECT with a reason).
fn v5_server_then(after: Vec<u8>) -> (u16, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let h = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0u8; 1024];
        let n = s.read(&mut buf).unwrap_or(0);
        assert!(n > 9 && buf[0] == 0x10, "not a CONNECT");
        // CONNACK success, Server Keep Alive 20 s.
        s.write_all(&[0x20, 0x06, 0x00, 0x00, 0x03, 0x13, 0x00, 0x14])
            .unwrap();
        std::thread::sleep(Duration::from_millis(50));
        s.write_all(&after).unwrap();
        let _ = s.read(&mut buf);
    });
    (port, h)
}

#[tokio::test]
async fn v5_disconnect_reason_codes_become_the_canary_s_disconnect_cause() {
    use hubprobe::agent::history::DisconnectCause;
    for (code, name) in [
        (0x8Eu8, "session taken over"),
        (0x8D, "keep alive timeout"),
        (0x98, "administrative action"),
        (0x8B, "server shutting down"),
    ] {
        // DISCONNECT, reason, properties: Reason String "lab".
        let after = vec![0xE0, 0x08, code, 0x06, 0x1F, 0x00, 0x03, b'l', b'a', b'b'];
        let (port, h) = v5_server_then(after);
        let s = v5_session(port, "canary-reason").await;
        assert_eq!(
            s.connack_properties().and_then(|p| p.server_keep_alive_s),
            Some(20)
        );
        let (link, leftover) = s.into_parts();
        let d = hold_until_end(link, leftover).await;
        assert_eq!(d.cause, DisconnectCause::ServerDisconnect, "{d:?}");
        assert_eq!(d.reason_code, Some(code), "{d:?}");
        assert!(d.detail.contains(name), "{d:?}");
        h.join().unwrap();
    }
}

#[test]
fn the_tuner_caps_the_keep_alive_at_the_server_keep_alive() {
    let b = broker();
    let port = format!("mqtt={}", b.anon);
    let out = run(&[
        "tune",
        "127.0.0.1",
        "--profile",
        "mqtt-broker",
        "--endpoint",
        "mqtt",
        "--port",
        &port,
        "--mqtt-version",
        "5",
        "--samples",
        "3",
        "--sample-interval",
        "20ms",
        "--no-discovery",
        "-o",
        "json",
    ]);
    let report = out.report();
    let rec = &report["keepalive"]["recommendation"];
    assert_eq!(
        rec["binding"],
        "server_keep_alive",
        "{rec:#}\n{}",
        out.all_output()
    );
    assert!(
        rec["keepalive_s"].as_u64().unwrap() <= u64::from(MAX_KEEPALIVE),
        "{rec:#}"
    );
    let limit = rec["limits"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["kind"] == "server_keep_alive")
        .expect("the Server Keep Alive is a named limit");
    assert_eq!(limit["value_s"], MAX_KEEPALIVE);
    assert!(limit["reason"]
        .as_str()
        .unwrap()
        .contains("Server Keep Alive of 60 s"));
}

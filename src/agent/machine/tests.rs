//! The canary's state machine driven directly, on tokio's paused clock.

use std::time::Duration;

use tokio::time::{advance, Instant};

use super::*;

const KA: Duration = Duration::from_secs(60);
const PT: Duration = Duration::from_secs(5);

fn cfg(token: Option<Duration>) -> MachineConfig {
    MachineConfig {
        keepalive: KA,
        ping_timeout: PT,
        token_lifetime: token,
        token_expiry_unix: None,
        version: crate::model::MqttVersion::V311,
    }
}

fn drain(m: &mut SessionMachine) -> Vec<Action> {
    std::iter::from_fn(|| m.poll_action()).collect()
}

/// Performs the sends (all succeed at once); returns the actions.
fn run(m: &mut SessionMachine) -> Vec<Action> {
    let actions = drain(m);
    for a in &actions {
        if let Action::Send { what, .. } = a {
            m.on_write_done(*what, Instant::now());
        }
    }
    let mut all = actions;
    all.extend(drain(m));
    all
}

fn timer(actions: &[Action]) -> Option<Instant> {
    actions.iter().rev().find_map(|a| match a {
        Action::ArmTimer(t) => Some(*t),
        _ => None,
    })
}

fn ended(actions: &[Action]) -> Option<&Ended> {
    actions.iter().find_map(|a| match a {
        Action::End(e) => Some(e),
        _ => None,
    })
}

fn disconnect(actions: &[Action]) -> &Disconnect {
    match ended(actions) {
        Some(Ended::Disconnect(d)) => d,
        other => panic!("no disconnect: {other:?} in {actions:?}"),
    }
}

fn sent(actions: &[Action]) -> Vec<Sending> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send { what, .. } => Some(*what),
            _ => None,
        })
        .collect()
}

/// Lets one keep-alive period pass and runs what the timer asks (the PINGREQ).
async fn keep_alive_passes(m: &mut SessionMachine) {
    advance(KA).await;
    m.on_timer(Instant::now());
    run(m);
}

#[tokio::test(start_paused = true)]
async fn pings_on_the_keepalive_and_a_pingresp_keeps_it_going() {
    let t0 = Instant::now();
    let mut m = SessionMachine::new(cfg(None), t0);
    assert_eq!(timer(&run(&mut m)), Some(t0 + KA));
    // Early wake-ups do nothing.
    advance(Duration::from_secs(30)).await;
    m.on_timer(Instant::now());
    assert!(sent(&run(&mut m)).is_empty());
    advance(Duration::from_secs(30)).await;
    m.on_timer(Instant::now());
    let a = run(&mut m);
    assert_eq!(sent(&a), [Sending::PingReq]);
    assert_eq!(timer(&a), Some(t0 + KA + PT), "{a:?}");
    advance(Duration::from_millis(100)).await;
    m.on_bytes(&[0xD0, 0x00], Instant::now());
    let a = run(&mut m);
    assert_eq!(timer(&a), Some(t0 + KA + KA), "{a:?}");
    assert!(ended(&a).is_none());
    // The next ping after another keep-alive; its answer again in two pieces.
    advance(KA).await;
    m.on_timer(Instant::now());
    assert_eq!(sent(&run(&mut m)), [Sending::PingReq]);
    m.on_bytes(&[0xD0], Instant::now());
    m.on_bytes(&[0x00], Instant::now());
    assert!(ended(&run(&mut m)).is_none());
    assert!(!m.is_done());
}

#[tokio::test(start_paused = true)]
async fn no_pingresp_ends_with_the_silence_before_the_ping() {
    let t0 = Instant::now();
    let mut m = SessionMachine::new(cfg(None), t0);
    run(&mut m);
    keep_alive_passes(&mut m).await;
    advance(PT).await;
    m.on_timer(Instant::now());
    let a = run(&mut m);
    let d = disconnect(&a);
    assert_eq!(d.cause, DisconnectCause::NoPingresp);
    assert!(d.detail.contains("PINGRESP"), "{}", d.detail);
    assert_eq!(d.idle_before, KA);
    assert_eq!(d.longest_idle_survived, Duration::ZERO);
    assert!(m.is_done());
    // Nothing more comes out of a finished session.
    m.on_timer(Instant::now());
    m.on_bytes(&[0xD0, 0x00], Instant::now());
    assert!(drain(&mut m).is_empty());
}

#[tokio::test(start_paused = true)]
async fn an_answered_silence_is_remembered() {
    let t0 = Instant::now();
    let mut m = SessionMachine::new(cfg(None), t0);
    run(&mut m);
    keep_alive_passes(&mut m).await;
    m.on_bytes(&[0xD0, 0x00], Instant::now());
    run(&mut m);
    advance(Duration::from_secs(10)).await;
    m.on_error(
        DisconnectCause::TcpReset,
        "reading: reset".into(),
        Instant::now(),
    );
    let a = run(&mut m);
    let d = disconnect(&a);
    assert_eq!(d.cause, DisconnectCause::TcpReset);
    assert_eq!(d.longest_idle_survived, KA);
    assert_eq!(d.idle_before, Duration::from_secs(10));
}

#[tokio::test(start_paused = true)]
async fn server_disconnect_with_and_without_a_reason_code() {
    let mut m = SessionMachine::new(cfg(None), Instant::now());
    m.on_bytes(&[0xE0, 0x00], Instant::now());
    let a = run(&mut m);
    let d = disconnect(&a);
    assert_eq!(d.cause, DisconnectCause::ServerDisconnect);
    assert_eq!(d.reason_code, None);

    // MQTT 5 style, with a reason code and properties, split across reads.
    let mut m = SessionMachine::new(cfg(None), Instant::now());
    m.on_bytes(&[0xE0, 0x02], Instant::now());
    assert!(ended(&run(&mut m)).is_none());
    m.on_bytes(&[0x8E, 0x00], Instant::now());
    let a = run(&mut m);
    let d = disconnect(&a);
    assert_eq!(d.reason_code, Some(0x8E));
    assert!(d.detail.contains("taken over"), "{}", d.detail);

    // An odd code is named as such.
    let mut m = SessionMachine::new(cfg(None), Instant::now());
    m.on_bytes(&[0xE0, 0x01, 0x42], Instant::now());
    let a = run(&mut m);
    assert!(disconnect(&a).detail.contains("0x42"));
}

#[tokio::test(start_paused = true)]
async fn garbage_huge_packets_and_client_packets_are_protocol_errors() {
    for bytes in [
        vec![0x00u8, 0x02, 0x00, 0x00],
        vec![0x30, 0xFF, 0xFF, 0xFF, 0x7F],
        vec![0xE0, 0xFF, 0xFF, 0xFF, 0xFF, 0x01],
        vec![0xC0, 0x00],
        vec![0x20, 0x02, 0x00, 0x00],
        b"HTTP/1.1 400 Bad Request\r\n".to_vec(),
        vec![0x41, 0x02, 0x00, 0x01],
    ] {
        let mut m = SessionMachine::new(cfg(None), Instant::now());
        m.on_bytes(&bytes, Instant::now());
        let a = run(&mut m);
        let d = disconnect(&a);
        assert_eq!(
            d.cause,
            DisconnectCause::ProtocolError,
            "{bytes:02x?}: {d:?}"
        );
    }
    // A packet cut short is waited for, not an error; a close in its middle is.
    let mut m = SessionMachine::new(cfg(None), Instant::now());
    m.on_bytes(&[0x30, 0x05, 0x00], Instant::now());
    assert!(ended(&run(&mut m)).is_none());
    m.on_eof(Instant::now(), 0);
    let a = run(&mut m);
    let d = disconnect(&a);
    assert_eq!(d.cause, DisconnectCause::ProtocolError);
    assert!(d.detail.contains("300500"), "{}", d.detail);
}

#[tokio::test(start_paused = true)]
async fn renews_the_token_at_80_percent() {
    let t0 = Instant::now();
    let life = Duration::from_secs(100);
    let mut m = SessionMachine::new(cfg(Some(life)), t0);
    assert_eq!(timer(&run(&mut m)), Some(t0 + KA));
    keep_alive_passes(&mut m).await;
    m.on_bytes(&[0xD0, 0x00], Instant::now());
    let a = run(&mut m);
    assert_eq!(timer(&a), Some(t0 + Duration::from_secs(80)), "{a:?}");
    advance(Duration::from_secs(20)).await;
    m.on_timer(Instant::now());
    let a = drain(&mut m);
    assert_eq!(sent(&a), [Sending::Farewell]);
    assert!(a.contains(&Action::Close));
    let d = disconnect(&a);
    assert_eq!(d.cause, DisconnectCause::TokenRenewal);
    assert!(d.detail.contains("80 %"), "{}", d.detail);
}

#[tokio::test(start_paused = true)]
async fn publishes_are_acknowledged_or_fail_when_the_session_ends() {
    let t0 = Instant::now();
    let mut m = SessionMachine::new(cfg(None), t0);
    run(&mut m);
    assert!(m.can_publish());
    let id = m.publish("t".into(), b"x".to_vec(), t0).unwrap();
    assert!(!m.can_publish());
    let a = run(&mut m);
    assert_eq!(sent(&a), [Sending::Publish(id)]);
    assert_eq!(timer(&a), Some(t0 + PT));
    m.on_bytes(&[0x40, 0x02, 0x00, id as u8], Instant::now());
    assert!(run(&mut m).contains(&Action::PublishAcked(id)));
    assert!(m.can_publish());
    // A second one the server never acknowledges.
    let id = m
        .publish("t".into(), b"y".to_vec(), Instant::now())
        .unwrap();
    run(&mut m);
    advance(PT).await;
    m.on_timer(Instant::now());
    let a = run(&mut m);
    assert!(a
        .iter()
        .any(|x| matches!(x, Action::PublishFailed(i, _) if *i == id)));
    assert!(disconnect(&a).detail.contains("PUBACK"));
}

#[tokio::test(start_paused = true)]
async fn a_qos1_message_from_the_server_is_acknowledged() {
    let mut m = SessionMachine::new(cfg(None), Instant::now());
    run(&mut m);
    let mut out = BytesMut::new();
    let mut p = Publish::new("c2d", QoS::AtLeastOnce, b"hi".to_vec());
    p.pkid = 9;
    p.write(&mut out).unwrap();
    m.on_bytes(&out, Instant::now());
    let a = run(&mut m);
    let acks: Vec<_> = a
        .iter()
        .filter_map(|x| match x {
            Action::Send {
                bytes,
                what: Sending::PubAck,
            } => Some(bytes.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(acks, [vec![0x40, 0x02, 0x00, 0x09]]);
}

#[tokio::test(start_paused = true)]
async fn eof_after_a_fixed_token_expired_is_token_expired() {
    let mut c = cfg(None);
    c.token_expiry_unix = Some(1_000);
    let mut m = SessionMachine::new(c.clone(), Instant::now());
    m.on_eof(Instant::now(), 1_001);
    assert_eq!(
        disconnect(&run(&mut m)).cause,
        DisconnectCause::TokenExpired
    );
    let mut m = SessionMachine::new(c, Instant::now());
    m.on_eof(Instant::now(), 500);
    assert_eq!(
        disconnect(&run(&mut m)).cause,
        DisconnectCause::EofWithoutDisconnect
    );
}

#[tokio::test(start_paused = true)]
async fn stop_says_disconnect_and_is_not_a_disconnect() {
    let mut m = SessionMachine::new(cfg(None), Instant::now());
    run(&mut m);
    m.stop();
    let a = drain(&mut m);
    assert_eq!(sent(&a), [Sending::Farewell]);
    assert_eq!(ended(&a), Some(&Ended::Stopped));
}

#[test]
fn young_sessions_count_toward_the_back_off() {
    let min = Duration::from_millis(200);
    let max = Duration::from_secs(10);
    let stable = Duration::from_secs(60);
    let mut r = Reconnects::new(min, max, stable);
    let young = Duration::from_millis(5);
    // A server that drops every session at once: the wait doubles to the cap.
    let waits: Vec<Duration> = (0..12)
        .map(|_| r.session_ended(young, DisconnectCause::ServerDisconnect, 1.0))
        .collect();
    assert_eq!(waits[0], min);
    assert_eq!(waits[1], min * 2);
    assert_eq!(waits[2], min * 4);
    assert_eq!(*waits.last().unwrap(), max);
    assert!(waits.windows(2).all(|w| w[1] >= w[0]));
    // Failed attempts carry on from there.
    assert_eq!(r.attempt_failed(1.0), max);
    // A session that lived long enough resets it.
    assert_eq!(r.session_ended(stable, DisconnectCause::TcpReset, 1.0), min);
    assert_eq!(r.streak(), 1);
    // A renewal reconnects at once and resets it too.
    r.session_ended(young, DisconnectCause::EofWithoutDisconnect, 1.0);
    assert_eq!(
        r.session_ended(young, DisconnectCause::TokenRenewal, 1.0),
        Duration::ZERO
    );
    assert_eq!(r.streak(), 0);
    // The jitter keeps at least half of the wait.
    let mut r = Reconnects::new(min, max, stable);
    for _ in 0..5 {
        r.session_ended(young, DisconnectCause::TcpReset, 0.0);
    }
    assert_eq!(
        r.session_ended(young, DisconnectCause::TcpReset, 0.0),
        min * 32 / 2
    );
}

#[tokio::test(start_paused = true)]
async fn a_storm_of_young_sessions_is_bounded_by_the_back_off() {
    // Drive sessions that the server drops right after CONNACK for a fixed window
    // on the paused clock: the number of connections is what the back-off allows.
    let min = Duration::from_millis(200);
    let max = Duration::from_secs(1);
    let mut r = Reconnects::new(min, max, Duration::from_secs(60));
    let window = Duration::from_secs(12);
    let start = Instant::now();
    let mut connections = 0u32;
    while Instant::now() < start + window {
        connections += 1;
        let mut m = SessionMachine::new(cfg(None), Instant::now());
        m.on_bytes(&[0xE0, 0x00], Instant::now());
        let a = run(&mut m);
        let d = disconnect(&a).clone();
        advance(Duration::from_millis(1)).await;
        let wait = r.session_ended(Duration::from_millis(1), d.cause, 0.0);
        advance(wait).await;
    }
    // 200 ms, 400 ms, 800 ms halves, then at least 500 ms each: well under 40.
    assert!(connections <= 30, "{connections}");
    assert!(connections >= 5, "{connections}");
}

#[tokio::test(start_paused = true)]
async fn a_puback_timeout_after_a_large_write_is_named_a_possible_mtu_stall() {
    let t0 = Instant::now();
    let mut m = SessionMachine::new(cfg(None), t0);
    run(&mut m);
    // A small publish that is answered, then a large one that never is.
    let id = m.publish("t".into(), vec![b'x'; 100], t0).unwrap();
    run(&mut m);
    m.on_bytes(&[0x40, 0x02, 0x00, id as u8], Instant::now());
    run(&mut m);
    advance(Duration::from_millis(10)).await;
    m.publish("t".into(), vec![b'r'; 8000], Instant::now())
        .unwrap();
    run(&mut m);
    advance(PT).await;
    m.on_timer(Instant::now());
    let d = disconnect(&run(&mut m)).clone();
    assert_eq!(d.cause, DisconnectCause::NoPingresp);
    assert!(d.detail.contains("no PUBACK"), "{}", d.detail);
    assert!(
        d.detail.contains("possibly a path-MTU stall"),
        "{}",
        d.detail
    );
    assert!(d.detail.contains("-byte write"), "{}", d.detail);

    // Small writes only: a PUBACK timeout claims nothing about the MTU.
    let mut m = SessionMachine::new(cfg(None), Instant::now());
    run(&mut m);
    m.publish("t".into(), vec![b'x'; 100], Instant::now())
        .unwrap();
    run(&mut m);
    advance(PT).await;
    m.on_timer(Instant::now());
    let d = disconnect(&run(&mut m)).clone();
    assert!(!d.detail.contains("MTU"), "{}", d.detail);
}

#[tokio::test(start_paused = true)]
async fn a_large_write_that_was_answered_claims_nothing() {
    let t0 = Instant::now();
    let mut m = SessionMachine::new(cfg(None), t0);
    run(&mut m);
    let id = m.publish("t".into(), vec![b'r'; 8000], t0).unwrap();
    run(&mut m);
    advance(Duration::from_millis(10)).await;
    m.on_bytes(&[0x40, 0x02, 0x00, id as u8], Instant::now());
    run(&mut m);
    // Then the keep-alive PINGREQ goes unanswered.
    keep_alive_passes(&mut m).await;
    advance(PT).await;
    m.on_timer(Instant::now());
    let d = disconnect(&run(&mut m)).clone();
    assert!(d.detail.contains("no PINGRESP"), "{}", d.detail);
    assert!(!d.detail.contains("MTU"), "{}", d.detail);
}

#[tokio::test(start_paused = true)]
async fn a_large_write_that_times_out_is_named_a_possible_mtu_stall() {
    let t0 = Instant::now();
    let mut m = SessionMachine::new(cfg(None), t0);
    run(&mut m);
    advance(Duration::from_millis(10)).await;
    m.publish("t".into(), vec![b'r'; 8000], Instant::now())
        .unwrap();
    // The driver's write of it times out (the send buffer never drains).
    drain(&mut m);
    m.on_error(
        DisconnectCause::NoPingresp,
        "sending PUBLISH: send timed out".into(),
        Instant::now(),
    );
    let d = disconnect(&drain(&mut m)).clone();
    assert!(
        d.detail.contains("possibly a path-MTU stall"),
        "{}",
        d.detail
    );
    // A reset is a reset, whatever was written before.
    let mut m = SessionMachine::new(cfg(None), Instant::now());
    run(&mut m);
    advance(Duration::from_millis(10)).await;
    m.publish("t".into(), vec![b'r'; 8000], Instant::now())
        .unwrap();
    drain(&mut m);
    m.on_error(DisconnectCause::TcpReset, "reset".into(), Instant::now());
    let d = disconnect(&drain(&mut m)).clone();
    assert!(!d.detail.contains("MTU"), "{}", d.detail);
}

#[tokio::test(start_paused = true)]
async fn an_mqtt5_session_publishes_with_properties_and_reads_v5_pubacks() {
    let t0 = Instant::now();
    let mut c = cfg(None);
    c.version = crate::model::MqttVersion::V5;
    let mut m = SessionMachine::new(c, t0);
    run(&mut m);
    let id = m.publish("t".into(), b"x".to_vec(), t0).unwrap();
    let bytes = drain(&mut m)
        .into_iter()
        .find_map(|a| match a {
            Action::Send { bytes, .. } => Some(bytes),
            _ => None,
        })
        .unwrap();
    // PUBLISH QoS 1: topic "t", packet id, an empty property length, payload "x".
    assert_eq!(
        bytes,
        [0x32, 0x07, 0x00, 0x01, b't', 0x00, id as u8, 0x00, b'x']
    );
    // A v5 PUBACK with reason 0x10 (no matching subscribers) and a Reason String.
    m.on_bytes(
        &[
            0x40, 0x09, 0x00, id as u8, 0x10, 0x05, 0x1F, 0x00, 0x02, b'n', b'o',
        ],
        Instant::now(),
    );
    assert!(run(&mut m).contains(&Action::PublishAcked(id)));
    // A v5 DISCONNECT 0x98 ends it with its reason.
    m.on_bytes(&[0xE0, 0x02, 0x98, 0x00], Instant::now());
    let a = run(&mut m);
    let d = disconnect(&a);
    assert_eq!(d.reason_code, Some(0x98));
    assert!(d.detail.contains("administrative action"), "{}", d.detail);
}

//! The TCP phase inside a network namespace of the test's own: a black-holed IPv6
//! address next to a working IPv4 one must not stall the phase, and both are reported.

mod common;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use common::Netns;
use hubprobe::probe::tcp::{connect, TcpOptions};

#[test]
fn a_black_holed_address_does_not_stall_a_working_one() {
    let ns = Netns::new();
    let port = 18884u16;
    ns.nft(&format!(
        "add table inet t\n\
         add chain inet t output {{ type filter hook output priority 0; policy accept; }}\n\
         add rule inet t output ip6 daddr ::1 tcp dport {port} tcp flags & (syn | ack) == syn drop\n"
    ));
    let (ok, took, stalled) = ns.run(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
                .await
                .unwrap();
            let addrs: Vec<IpAddr> = vec!["::1".parse().unwrap(), "127.0.0.1".parse().unwrap()];
            let opts = TcpOptions {
                timeout: Duration::from_secs(5),
                ..Default::default()
            };
            let start = Instant::now();
            let out = connect(&addrs, port, &opts).await;
            let took = start.elapsed();
            drop(listener);
            let stalled = connect(
                &addrs[..1],
                port,
                &TcpOptions {
                    timeout: Duration::from_millis(500),
                    ..Default::default()
                },
            )
            .await;
            (out.result, took, stalled.result)
        })
    });
    assert!(ok.is_ok(), "{ok:?}");
    assert!(
        took < Duration::from_secs(3),
        "the IPv4 connection ends the phase, not the 5 s timeout: {took:?}"
    );
    let ev = serde_json::to_value(ok.evidence.unwrap()).unwrap();
    assert_eq!(ev["remote_address"], format!("127.0.0.1:{port}"));
    let attempts = ev["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[0]["family"], "ipv6");
    assert_eq!(attempts[0]["status"], "skipped");
    assert!(attempts[0]["message"]
        .as_str()
        .unwrap()
        .contains("abandoned"));
    assert_eq!(attempts[1]["status"], "ok");
    assert!(ok.duration_ms.unwrap() < 1000.0);
    // Alone, the black-holed address is a timeout.
    assert_eq!(stalled.class.map(|c| c.id()), Some("tcp.timeout"));
}

#[test]
fn icmp_unreachable_from_a_firewall_is_tcp_unreachable() {
    // A firewall that rejects with ICMP host-unreachable / net-unreachable, in a
    // namespace of our own.
    let ns = Netns::new();
    ns.nft(
        "add table inet t\n\
         add chain inet t output { type filter hook output priority 0; policy accept; }\n\
         add rule inet t output tcp dport 20001 reject with icmp type host-unreachable\n\
         add rule inet t output tcp dport 20002 reject with icmp type net-unreachable\n\
         add rule inet t output tcp dport 20003 reject with tcp reset\n",
    );
    let classes = ns.run(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let lo: Vec<IpAddr> = vec!["127.0.0.1".parse().unwrap()];
            let opts = TcpOptions {
                timeout: Duration::from_secs(3),
                ..Default::default()
            };
            let mut out = Vec::new();
            for port in [20001u16, 20002, 20003] {
                out.push(connect(&lo, port, &opts).await.result.class.map(|c| c.id()));
            }
            out
        })
    });
    assert_eq!(
        classes,
        [
            Some("tcp.unreachable"),
            Some("tcp.unreachable"),
            Some("tcp.refused")
        ]
    );
}

#[test]
fn source_address_and_interface_binding() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let lo: Vec<IpAddr> = vec!["127.0.0.1".parse().unwrap()];
        let opts = TcpOptions {
            timeout: Duration::from_secs(3),
            interface: Some("lo".into()),
            source_ip: Some("127.0.0.2".parse().unwrap()),
            mss: None,
        };
        let out = connect(&lo, port, &opts).await;
        assert!(out.result.is_ok(), "{:?}", out.result);
        let ev = serde_json::to_value(out.result.evidence.unwrap()).unwrap();
        assert!(
            ev["local_address"]
                .as_str()
                .unwrap()
                .starts_with("127.0.0.2:"),
            "{ev:#}"
        );
        assert_eq!(ev["interface"], "lo");

        // A source address of the other family fits no target: said plainly.
        let v6_source = TcpOptions {
            source_ip: Some("::1".parse().unwrap()),
            ..opts.clone()
        };
        let out = connect(&lo, port, &v6_source).await;
        assert_eq!(out.result.class.map(|c| c.id()), Some("tcp.error"));
        assert!(out
            .result
            .message
            .unwrap()
            .contains("source address family"));
        drop(listener);
    });
}

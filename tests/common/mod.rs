//! The integration-test lab: real peers on loopback or inside network
//! namespaces the test creates itself (see DESIGN.md, "Testing").
//!
//! * [`Certs`] — a throw-away PKI made with rcgen (test root CA, good / expired /
//!   not-yet-valid / wrong-name / foreign-CA server certificates, a device client
//!   certificate), written as PEM files into a temporary directory.
//! * [`Mosquitto`] — the real broker as the hub stand-in, one listener per scenario.
//! * [`Dns`] — dnsmasq serving the `hubprobe.test` zone on a loopback port.
//! * fault servers ([`refused_port`], [`silent`], [`reset`], [`garbage`],
//!   [`closes`], [`tls_then`], [`dns_rcode`], [`dns_silent`]) — in-process peers
//!   that misbehave on purpose.
//! * [`Netns`] — a private network namespace with nftables, e.g. to black-hole SYNs.
//! * [`Nat`] — a real NAT: client ⇄ router ⇄ server namespaces, masquerade,
//!   a known conntrack idle timeout, loss and outages on demand.
//! * small client helpers ([`tls_connect`], [`mqtt_connect`], [`dns_query`], ...)
//!   for tests that need to talk to the lab directly.
//!
//! Rules the lab keeps: everything binds 127.0.0.1 (or lives in a namespace it
//! made), ports are picked free at run time, every loop is bounded in count and
//! time, and a missing peer program is a panic, never a skip.
//!
//! Every test file does `mod common;` and uses a different subset, hence the
//! `allow(dead_code)`.
#![allow(dead_code)]
#![allow(unused_imports)]

pub mod agent_lab;
pub mod amqp;
pub mod certs;
pub mod dns;
pub mod faults;
pub mod mosquitto;
pub mod nat;
pub mod netns;
pub mod proxies;
pub mod subscriber;
pub mod util;

pub use certs::{
    ring_provider, Certs, Identity, DEVICE_CN, EXPIRED_NOT_AFTER, HUB_HOST,
    NOT_YET_VALID_NOT_BEFORE, OTHER_CA_CN, TEST_CA_CN, WRONG_HOST,
};
pub use dns::{
    build_dns_query, dns_query, dns_query_tcp, parse_dns_reply, Dns, DnsRecord, DnsReply, RData,
    QTYPE_A, QTYPE_AAAA, QTYPE_CNAME, ZONE,
};
pub use faults::{
    closes, dns_rcode, dns_silent, garbage, refused_port, reset, reset_after_read, silent,
    tls_then, tls_then_with, FaultServer, SeenConnect, TlsThen,
};
pub use mosquitto::{hub_password, hub_username, Mosquitto, API_VERSION, LISTENERS};
pub use nat::{
    join_within, parse_conntrack_line, spawn_in, wait_listening, CtEntry, InNs, Nat,
    TimeoutMechanism, NAT_TABLE,
};
pub use netns::{Exec, Netns};
pub use util::{
    find_program, free_port, free_ports, mqtt_connect, mqtt_connect_packet, parse_connack,
    peer_certificate, read_http_head, tls_connect, tls_connect_insecure, wait_for_tcp,
    ws_binary_frame, ws_read_frame, ws_upgrade_request, AcceptAnyCert, STEP,
};

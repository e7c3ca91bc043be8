//! The DNS phase against real peers on loopback: a dnsmasq serving a test zone,
//! in-process UDP fault servers (SERVFAIL, REFUSED, silence) and the system
//! hosts file. Traffic goes only to 127.0.0.1; dnsmasq is required (a missing
//! binary fails the tests, it does not skip them).

use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hubprobe::model::FailureClass;
use hubprobe::model::Status;
use hubprobe::model::{DnsEvidence, DnsSource, FamilyStatus};
use hubprobe::probe::dns::{resolve, DnsOptions, DnsOutcome};

const ZONE_HOST: &str = "hub.hubprobe.test";
const TIMEOUT: Duration = Duration::from_secs(2);

// ---------------------------------------------------------------- helpers

/// Finds dnsmasq or fails the test: CI installs it, so absence is a failure.
fn dnsmasq_binary() -> PathBuf {
    let mut candidates = vec![PathBuf::from("/usr/sbin/dnsmasq")];
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|dir| dir.join("dnsmasq")));
    }
    candidates
        .into_iter()
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("dnsmasq not found (/usr/sbin/dnsmasq or PATH): install the Debian package `dnsmasq`")
        })
}

/// A loopback port free for both UDP and TCP at the time of the call.
fn free_loopback_port() -> u16 {
    for _ in 0..50 {
        let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind udp on loopback");
        let port = udp.local_addr().expect("local addr").port();
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return port;
        }
    }
    panic!("no loopback port free for both UDP and TCP after 50 tries");
}

/// A minimal DNS query (RD set) for `name`/`qtype`, for the readiness probe.
fn build_query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut q = Vec::with_capacity(64);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes());
    q
}

/// dnsmasq serving the `hubprobe.test` zone on 127.0.0.1:`port`, killed on drop.
struct Dnsmasq {
    child: Child,
    addr: SocketAddr,
}

impl Dnsmasq {
    /// Starts dnsmasq and waits (bounded) until it answers. Retries on a fresh
    /// port when it exits early (another process may have taken the port).
    fn start() -> Dnsmasq {
        let binary = dnsmasq_binary();
        let mut last_error = String::new();
        for _ in 0..5 {
            let port = free_loopback_port();
            match Self::try_start(&binary, port) {
                Ok(d) => return d,
                Err(e) => last_error = e,
            }
        }
        panic!("dnsmasq did not start after 5 attempts: {last_error}");
    }

    fn try_start(binary: &Path, port: u16) -> Result<Dnsmasq, String> {
        let mut child = Command::new(binary)
            .args([
                "--keep-in-foreground",
                &format!("--port={port}"),
                "--listen-address=127.0.0.1",
                "--bind-interfaces",
                "--no-resolv",
                "--no-hosts",
                "--conf-file=/dev/null",
                "--pid-file=",
                "--user=root",
                "--log-facility=-",
                "--local=/hubprobe.test/",
                "--local-ttl=60",
                "--host-record=hub.hubprobe.test,127.0.0.1",
                "--cname=alias.hubprobe.test,hub.hubprobe.test",
                "--txt-record=txtonly.hubprobe.test,x",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("spawning {}: {e}", binary.display()))?;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let probe = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind probe socket");
        probe
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("set read timeout");
        for attempt in 0..50u16 {
            if let Ok(Some(status)) = child.try_wait() {
                let mut stderr = String::new();
                if let Some(mut pipe) = child.stderr.take() {
                    let _ = pipe.read_to_string(&mut stderr);
                }
                return Err(format!("dnsmasq exited ({status}): {}", stderr.trim()));
            }
            let id = 0x4000 + attempt;
            let _ = probe.send_to(&build_query(id, ZONE_HOST, 1), addr);
            let mut buf = [0u8; 512];
            if let Ok((n, from)) = probe.recv_from(&mut buf) {
                if from == addr && n >= 2 && buf[..2] == id.to_be_bytes() {
                    return Ok(Dnsmasq { child, addr });
                }
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        Err(format!("dnsmasq on {addr} did not answer within 50 probes"))
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a fault server does with each query.
#[derive(Clone, Copy)]
enum Fault {
    /// Answer with this RCODE and no records.
    Rcode(u8),
    /// Read the query and never answer.
    Silent,
}

const RCODE_SERVFAIL: u8 = 2;
const RCODE_REFUSED: u8 = 5;

/// The end of the question section, or `None` for a malformed query.
fn question_end(query: &[u8]) -> Option<usize> {
    if query.len() < 12 || u16::from_be_bytes([query[4], query[5]]) != 1 {
        return None;
    }
    let mut i = 12;
    for _ in 0..128 {
        let len = *query.get(i)? as usize;
        if len == 0 {
            let end = i + 1 + 4;
            return (end <= query.len()).then_some(end);
        }
        if len & 0xC0 != 0 {
            return None;
        }
        i += 1 + len;
    }
    None
}

/// A response that copies the ID, opcode, RD and question, sets QR and RA and
/// carries `rcode` with empty answer, authority and additional sections.
fn reply_with_rcode(query: &[u8], rcode: u8) -> Option<Vec<u8>> {
    let end = question_end(query)?;
    let mut r = Vec::with_capacity(end);
    r.extend_from_slice(&query[..2]);
    r.push(0x80 | (query[2] & 0x79));
    r.push(0x80 | (rcode & 0x0F));
    r.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
    r.extend_from_slice(&query[12..end]);
    Some(r)
}

/// An in-process UDP DNS server on 127.0.0.1 that misbehaves; stopped on drop.
struct FaultServer {
    addr: SocketAddr,
    queries: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultServer {
    async fn start(fault: Fault) -> FaultServer {
        let socket = tokio::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind fault server on loopback");
        let addr = socket.local_addr().expect("local addr");
        let queries = Arc::new(AtomicUsize::new(0));
        let counter = queries.clone();
        let task = tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            // Bounded: a test sends a handful of queries.
            for _ in 0..1000 {
                let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
                    continue;
                };
                counter.fetch_add(1, Ordering::SeqCst);
                if let Fault::Rcode(rcode) = fault {
                    if let Some(reply) = reply_with_rcode(&buf[..n], rcode) {
                        let _ = socket.send_to(&reply, peer).await;
                    }
                }
            }
        });
        FaultServer {
            addr,
            queries,
            task,
        }
    }
}

impl Drop for FaultServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn opts(server: SocketAddr) -> DnsOptions {
    DnsOptions {
        server: Some(server),
        timeout: TIMEOUT,
    }
}

fn evidence(out: &DnsOutcome) -> DnsEvidence {
    out.result
        .evidence()
        .and_then(hubprobe::model::Evidence::dns)
        .expect("dns evidence present")
        .clone()
}

const LOCALHOST_V4: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

// ---------------------------------------------------------------- dnsmasq

#[tokio::test]
async fn dnsmasq_hub_name_resolves_with_ttl_and_server() {
    let dns = Dnsmasq::start();
    let out = resolve(ZONE_HOST, &opts(dns.addr)).await;
    assert_eq!(out.result.status, Status::Ok, "{:?}", out.result);
    assert_eq!(out.addresses, vec![LOCALHOST_V4]);

    let ev = evidence(&out);
    assert_eq!(ev.query, ZONE_HOST);
    assert!(!ev.literal);
    assert_eq!(ev.source, DnsSource::Dns);
    assert_eq!(ev.servers, vec![dns.addr.to_string()]);
    assert!(ev.cname_chain.is_empty());
    assert_eq!(ev.addresses, vec![LOCALHOST_V4]);

    let a = ev.a.expect("A evidence");
    assert_eq!(a.status, FamilyStatus::Ok);
    assert_eq!(a.records.len(), 1);
    assert_eq!(a.records[0].address, LOCALHOST_V4);
    assert_eq!(a.records[0].ttl, 60);

    // The name exists without AAAA: normal, not a phase failure.
    let aaaa = ev.aaaa.expect("AAAA evidence");
    assert_eq!(aaaa.status, FamilyStatus::Failed);
    assert_eq!(aaaa.class, Some(FailureClass::DnsNoRecords));
    assert!(aaaa.records.is_empty());

    let json = serde_json::to_value(&out.result).unwrap();
    assert_eq!(json["phase"], "dns");
    assert_eq!(json["evidence"]["a"]["records"][0]["address"], "127.0.0.1");
    assert_eq!(json["evidence"]["aaaa"]["class"], "dns.no_records");
}

#[tokio::test]
async fn dnsmasq_alias_shows_cname_chain() {
    let dns = Dnsmasq::start();
    let out = resolve("alias.hubprobe.test", &opts(dns.addr)).await;
    assert_eq!(out.result.status, Status::Ok, "{:?}", out.result);
    assert_eq!(out.addresses, vec![LOCALHOST_V4]);
    let ev = evidence(&out);
    assert_eq!(ev.cname_chain, vec![ZONE_HOST.to_string()]);
    assert_eq!(ev.a.expect("A evidence").records[0].address, LOCALHOST_V4);
}

#[tokio::test]
async fn dnsmasq_unknown_name_is_nxdomain() {
    let dns = Dnsmasq::start();
    let out = resolve("nope.hubprobe.test", &opts(dns.addr)).await;
    assert_eq!(out.result.status, Status::Failed);
    assert_eq!(out.result.class, Some(FailureClass::DnsNxdomain));
    assert!(out.addresses.is_empty());
    let message = out.result.message.clone().expect("message");
    assert_eq!(
        message,
        format!(
            "NXDOMAIN from {} for nope.hubprobe.test (A, AAAA)",
            dns.addr
        )
    );
    let ev = evidence(&out);
    for family in [ev.a.expect("A"), ev.aaaa.expect("AAAA")] {
        assert_eq!(family.status, FamilyStatus::Failed);
        assert_eq!(family.class, Some(FailureClass::DnsNxdomain));
    }
}

#[tokio::test]
async fn dnsmasq_txt_only_name_is_no_records() {
    let dns = Dnsmasq::start();
    let out = resolve("txtonly.hubprobe.test", &opts(dns.addr)).await;
    assert_eq!(out.result.status, Status::Failed);
    assert_eq!(out.result.class, Some(FailureClass::DnsNoRecords));
    assert!(out.addresses.is_empty());
    let ev = evidence(&out);
    assert_eq!(ev.a.expect("A").class, Some(FailureClass::DnsNoRecords));
    assert_eq!(
        ev.aaaa.expect("AAAA").class,
        Some(FailureClass::DnsNoRecords)
    );
}

// ---------------------------------------------------------------- fault servers

#[tokio::test]
async fn servfail_server_is_servfail() {
    let server = FaultServer::start(Fault::Rcode(RCODE_SERVFAIL)).await;
    let out = resolve("hub.fault.test", &opts(server.addr)).await;
    assert_eq!(out.result.status, Status::Failed);
    assert_eq!(out.result.class, Some(FailureClass::DnsServfail));
    assert_eq!(
        out.result.message.as_deref(),
        Some(format!("SERVFAIL from {} for hub.fault.test (A, AAAA)", server.addr).as_str())
    );
    assert!(
        server.queries.load(Ordering::SeqCst) >= 2,
        "both families asked"
    );
}

#[tokio::test]
async fn refused_server_is_refused() {
    let server = FaultServer::start(Fault::Rcode(RCODE_REFUSED)).await;
    let out = resolve("hub.fault.test", &opts(server.addr)).await;
    assert_eq!(out.result.status, Status::Failed);
    assert_eq!(out.result.class, Some(FailureClass::DnsRefused));
    let ev = evidence(&out);
    assert_eq!(ev.servers, vec![server.addr.to_string()]);
    assert_eq!(ev.a.expect("A").class, Some(FailureClass::DnsRefused));
    assert_eq!(ev.aaaa.expect("AAAA").class, Some(FailureClass::DnsRefused));
}

#[tokio::test]
async fn silent_server_times_out_and_phase_never_hangs() {
    let server = FaultServer::start(Fault::Silent).await;
    let timeout = Duration::from_secs(1);
    let started = Instant::now();
    let out = resolve(
        "hub.fault.test",
        &DnsOptions {
            server: Some(server.addr),
            timeout,
        },
    )
    .await;
    let elapsed = started.elapsed();
    // A correctness bound ("never hangs"), not a speed benchmark.
    assert!(
        elapsed < timeout * 2 + Duration::from_secs(1),
        "phase took {elapsed:?} with a {timeout:?} timeout"
    );
    assert_eq!(out.result.status, Status::Failed);
    assert_eq!(out.result.class, Some(FailureClass::DnsTimeout));
    let ev = evidence(&out);
    assert_eq!(ev.a.expect("A").class, Some(FailureClass::DnsTimeout));
    assert_eq!(ev.aaaa.expect("AAAA").class, Some(FailureClass::DnsTimeout));
    assert!(
        server.queries.load(Ordering::SeqCst) >= 2,
        "both families asked"
    );
}

#[tokio::test]
async fn a_closed_server_port_is_unreachable_not_a_timeout() {
    // Nothing listens on this UDP port: the kernel answers with ICMP port
    // unreachable. With a long timeout, a probe that waited it out would report
    // dns.timeout; the refusal is seen at once and classified as what it is.
    let port = free_loopback_port();
    let out = resolve(
        "hub.closed.test",
        &DnsOptions {
            server: Some(SocketAddr::from((Ipv4Addr::LOCALHOST, port))),
            timeout: Duration::from_secs(30),
        },
    )
    .await;
    assert_eq!(out.result.status, Status::Failed);
    assert_eq!(
        out.result.class,
        Some(FailureClass::DnsUnreachable),
        "{:?}",
        out.result.message
    );
    let msg = out.result.message.unwrap();
    assert!(msg.contains(&format!("127.0.0.1:{port}")), "{msg}");
}

// ---------------------------------------------------------------- system configuration

/// The addresses /etc/hosts gives `localhost`; fails when there are none, since
/// resolving would then send a query to the system's (non-loopback) name server.
fn hosts_file_localhost() -> Vec<IpAddr> {
    let text = std::fs::read_to_string("/etc/hosts").expect("read /etc/hosts");
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("");
        let mut fields = line.split_whitespace();
        let Some(ip) = fields.next().and_then(|f| f.parse::<IpAddr>().ok()) else {
            continue;
        };
        if fields.any(|name| name.eq_ignore_ascii_case("localhost")) && !out.contains(&ip) {
            out.push(ip);
        }
    }
    assert!(
        !out.is_empty(),
        "/etc/hosts has no localhost entry; this test needs one"
    );
    out
}

#[tokio::test]
async fn localhost_resolves_from_hosts_file() {
    let mut expected = hosts_file_localhost();
    let out = resolve(
        "localhost",
        &DnsOptions {
            server: None,
            timeout: TIMEOUT,
        },
    )
    .await;
    assert_eq!(out.result.status, Status::Ok, "{:?}", out.result);
    let ev = evidence(&out);
    assert_eq!(ev.source, DnsSource::Hosts);
    assert!(ev.servers.is_empty(), "no server asked: {:?}", ev.servers);
    let mut got = out.addresses.clone();
    got.sort();
    expected.sort();
    assert_eq!(got, expected);
}

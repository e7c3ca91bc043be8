//! dnsmasq as a real DNS server for the `hubprobe.test` zone, plus a tiny
//! hand-rolled DNS client (query builder / reply parser) for checks.
//!
//! Zone served:
//! * `hub.hubprobe.test`   A 127.0.0.1, TTL 60
//! * `alias.hubprobe.test` CNAME hub.hubprobe.test (TTL 60)
//! * `v6.hubprobe.test`    AAAA ::1 only (A query: NOERROR, no answer)
//! * `dual.hubprobe.test`  A 127.0.0.1 and AAAA ::1
//! * any other name in the zone: NXDOMAIN (`--local=/hubprobe.test/`)
//! * names outside the zone: REFUSED (no upstream servers)

use std::fs;
use std::io::{self, Read, Write};
use std::net::{
    Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream as StdTcpStream, UdpSocket,
};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::util::find_program;

/// The test zone.
pub const ZONE: &str = "hubprobe.test";
/// Record types.
pub const QTYPE_A: u16 = 1;
pub const QTYPE_CNAME: u16 = 5;
pub const QTYPE_AAAA: u16 = 28;

const START_ATTEMPTS: usize = 4;
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// dnsmasq on 127.0.0.1:<free port> (UDP and TCP), killed on drop.
pub struct Dns {
    child: Option<Child>,
    addr: SocketAddr,
    dir: TempDir,
    log_path: PathBuf,
}

/// A port free on 127.0.0.1 for both UDP and TCP a moment ago.
fn free_udp_tcp_port() -> u16 {
    for _ in 0..50 {
        let udp = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0)).expect("bind UDP");
        let port = udp.local_addr().expect("local addr").port();
        if TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)).is_ok() {
            return port;
        }
    }
    panic!("no port free for both UDP and TCP on 127.0.0.1 after 50 tries");
}

impl Dns {
    /// Starts dnsmasq serving the default zone.
    pub fn start() -> Dns {
        Self::start_with(&[])
    }

    /// Starts dnsmasq with extra command-line options appended (e.g.
    /// `"--host-record=slow.hubprobe.test,127.0.0.2,5"`).
    pub fn start_with(extra_args: &[&str]) -> Dns {
        let bin = find_program("dnsmasq")
            .unwrap_or_else(|| panic!("dnsmasq not installed: apt-get install dnsmasq-base"));
        let dir = tempfile::Builder::new()
            .prefix("hubprobe-dns-")
            .tempdir()
            .expect("create temp dir for dnsmasq");
        let log_path = dir.path().join("dnsmasq.log");
        let mut last_error = String::new();
        for _ in 0..START_ATTEMPTS {
            let port = free_udp_tcp_port();
            let addr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port));
            let log = fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log_path)
                .expect("open dnsmasq log");
            let offset = log.metadata().map(|m| m.len()).unwrap_or(0);
            let child = Command::new(&bin)
                .args([
                    "--keep-in-foreground",
                    "--no-resolv",
                    "--no-hosts",
                    "--conf-file=/dev/null",
                    "--pid-file=",
                    "--bind-interfaces",
                    "--listen-address=127.0.0.1",
                    &format!("--port={port}"),
                    "--local=/hubprobe.test/",
                    "--host-record=hub.hubprobe.test,127.0.0.1,60",
                    "--cname=alias.hubprobe.test,hub.hubprobe.test,60",
                    "--host-record=v6.hubprobe.test,::1,60",
                    "--host-record=dual.hubprobe.test,127.0.0.1,::1,60",
                    "--log-queries",
                    "--log-facility=-",
                ])
                .args(extra_args)
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("clone log"))
                .stderr(log)
                .spawn();
            let mut child = match child {
                Ok(c) => c,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    panic!("dnsmasq not installed: apt-get install dnsmasq-base ({e})")
                }
                Err(e) => panic!("spawn {}: {e}", bin.display()),
            };
            match wait_ready(&mut child, addr) {
                Ok(()) => {
                    return Dns {
                        child: Some(child),
                        addr,
                        dir,
                        log_path,
                    }
                }
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    last_error = format!("{e}\n{}", read_from(&log_path, offset));
                    let in_use = last_error.contains("Address already in use")
                        || last_error.contains("Address in use");
                    if !in_use {
                        break;
                    }
                }
            }
        }
        panic!(
            "dnsmasq did not start: {last_error}\n--- log {} ---\n{}",
            log_path.display(),
            read_from(&log_path, 0)
        );
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `127.0.0.1:<port>`, UDP and TCP.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// dnsmasq's log (`--log-queries`).
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The log so far.
    pub fn log(&self) -> String {
        read_from(&self.log_path, 0)
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        self.kill();
    }
}

fn wait_ready(child: &mut Child, addr: SocketAddr) -> Result<(), String> {
    let deadline = Instant::now() + READY_TIMEOUT;
    for attempt in 0..500u16 {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("dnsmasq exited during start-up ({status})"));
        }
        let probe = dns_query_with_id(
            addr,
            "hub.hubprobe.test",
            QTYPE_A,
            Duration::from_millis(200),
            0x4000 | attempt,
        );
        if matches!(probe, Ok(ref r) if r.rcode == 0 && !r.answers.is_empty()) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(format!("dnsmasq not answering within {READY_TIMEOUT:?}"))
}

fn read_from(path: &Path, offset: u64) -> String {
    let bytes = fs::read(path).unwrap_or_default();
    let start = (offset as usize).min(bytes.len());
    String::from_utf8_lossy(&bytes[start..]).into_owned()
}

/// Record data in a reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RData {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Cname(String),
    Other(u16, Vec<u8>),
}

/// One answer record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsRecord {
    pub name: String,
    pub rtype: u16,
    pub ttl: u32,
    pub data: RData,
}

/// A decoded reply: header fields and the answer section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsReply {
    pub id: u16,
    pub flags: u16,
    pub rcode: u8,
    pub question: Option<(String, u16)>,
    pub answers: Vec<DnsRecord>,
}

impl DnsReply {
    /// Addresses (A and AAAA) in the answer section.
    pub fn addresses(&self) -> Vec<std::net::IpAddr> {
        self.answers
            .iter()
            .filter_map(|r| match r.data {
                RData::A(a) => Some(a.into()),
                RData::Aaaa(a) => Some(a.into()),
                _ => None,
            })
            .collect()
    }
}

/// A standard query (RD set) for `name`/`qtype`, class IN.
pub fn build_dns_query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut q = Vec::with_capacity(32 + name.len());
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&0x0100u16.to_be_bytes()); // RD
    q.extend_from_slice(&1u16.to_be_bytes()); // QDCOUNT
    q.extend_from_slice(&[0, 0, 0, 0, 0, 0]); // AN, NS, AR
    for label in name.trim_end_matches('.').split('.') {
        assert!(
            !label.is_empty() && label.len() < 64,
            "bad label in {name:?}"
        );
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes()); // IN
    q
}

fn err(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_string())
}

/// Reads a (possibly compressed) name at `pos`; returns it and the offset
/// just past it in the original position.
fn read_name(buf: &[u8], mut pos: usize) -> io::Result<(String, usize)> {
    let mut labels: Vec<String> = Vec::new();
    let mut end = None;
    for _ in 0..128 {
        let len = *buf.get(pos).ok_or_else(|| err("name runs past end"))? as usize;
        if len & 0xc0 == 0xc0 {
            let lo = *buf.get(pos + 1).ok_or_else(|| err("bad pointer"))? as usize;
            end.get_or_insert(pos + 2);
            pos = ((len & 0x3f) << 8) | lo;
            continue;
        }
        if len == 0 {
            return Ok((labels.join("."), end.unwrap_or(pos + 1)));
        }
        let label = buf
            .get(pos + 1..pos + 1 + len)
            .ok_or_else(|| err("label runs past end"))?;
        labels.push(String::from_utf8_lossy(label).into_owned());
        pos += 1 + len;
    }
    Err(err("name too long or pointer loop"))
}

fn u16_at(buf: &[u8], pos: usize) -> io::Result<u16> {
    buf.get(pos..pos + 2)
        .map(|b| u16::from_be_bytes([b[0], b[1]]))
        .ok_or_else(|| err("truncated"))
}

/// Decodes a reply (header, first question, answer section).
pub fn parse_dns_reply(buf: &[u8]) -> io::Result<DnsReply> {
    if buf.len() < 12 {
        return Err(err("shorter than a DNS header"));
    }
    let id = u16_at(buf, 0)?;
    let flags = u16_at(buf, 2)?;
    let qd = u16_at(buf, 4)?;
    let an = u16_at(buf, 6)?;
    let mut pos = 12;
    let mut question = None;
    for i in 0..qd.min(16) {
        let (name, next) = read_name(buf, pos)?;
        let qtype = u16_at(buf, next)?;
        if i == 0 {
            question = Some((name, qtype));
        }
        pos = next + 4;
    }
    let mut answers = Vec::new();
    for _ in 0..an.min(64) {
        let (name, next) = read_name(buf, pos)?;
        let rtype = u16_at(buf, next)?;
        let ttl = buf
            .get(next + 4..next + 8)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or_else(|| err("truncated TTL"))?;
        let rdlen = u16_at(buf, next + 8)? as usize;
        let rstart = next + 10;
        let rdata = buf
            .get(rstart..rstart + rdlen)
            .ok_or_else(|| err("truncated RDATA"))?;
        let data = match (rtype, rdlen) {
            (QTYPE_A, 4) => RData::A(Ipv4Addr::new(rdata[0], rdata[1], rdata[2], rdata[3])),
            (QTYPE_AAAA, 16) => {
                let mut o = [0u8; 16];
                o.copy_from_slice(rdata);
                RData::Aaaa(Ipv6Addr::from(o))
            }
            (QTYPE_CNAME, _) => RData::Cname(read_name(buf, rstart)?.0),
            _ => RData::Other(rtype, rdata.to_vec()),
        };
        answers.push(DnsRecord {
            name,
            rtype,
            ttl,
            data,
        });
        pos = rstart + rdlen;
    }
    Ok(DnsReply {
        id,
        flags,
        rcode: (flags & 0x000f) as u8,
        question,
        answers,
    })
}

fn dns_query_with_id(
    server: SocketAddr,
    name: &str,
    qtype: u16,
    timeout: Duration,
    id: u16,
) -> io::Result<DnsReply> {
    let sock = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0))?;
    sock.set_read_timeout(Some(timeout))?;
    sock.connect(server)?;
    sock.send(&build_dns_query(id, name, qtype))?;
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 4096];
    for _ in 0..16 {
        let n = sock.recv(&mut buf)?;
        if let Ok(reply) = parse_dns_reply(&buf[..n]) {
            if reply.id == id {
                return Ok(reply);
            }
        }
        if Instant::now() >= deadline {
            break;
        }
    }
    Err(io::Error::new(
        io::ErrorKind::TimedOut,
        "no matching DNS reply",
    ))
}

/// One UDP query to `server` (blocking, bounded by `timeout`).
pub fn dns_query(
    server: SocketAddr,
    name: &str,
    qtype: u16,
    timeout: Duration,
) -> io::Result<DnsReply> {
    let id = (std::process::id() as u16) ^ (qtype << 3) ^ (name.len() as u16);
    dns_query_with_id(server, name, qtype, timeout, id)
}

/// One TCP query to `server` (blocking, bounded by `timeout` per step).
pub fn dns_query_tcp(
    server: SocketAddr,
    name: &str,
    qtype: u16,
    timeout: Duration,
) -> io::Result<DnsReply> {
    let mut s = StdTcpStream::connect_timeout(&server, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let q = build_dns_query(0x5151, name, qtype);
    let mut msg = (q.len() as u16).to_be_bytes().to_vec();
    msg.extend_from_slice(&q);
    s.write_all(&msg)?;
    let mut len = [0u8; 2];
    s.read_exact(&mut len)?;
    let mut reply = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut reply)?;
    parse_dns_reply(&reply)
}

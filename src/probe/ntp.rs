//! The SNTP probe (RFC 4330 client mode on RFC 5905 packets, UDP 123): one
//! request per server address, the reply checked (mode, version, the origin
//! timestamp echoed back as a spoofing guard) and classified: a usable sample, a
//! Kiss-o'-Death (`RATE`, `DENY`, `RSTR` ...), an unsynchronized server (stratum 0
//! or 16, leap indicator 3), a malformed reply, no answer, or refused.
//!
//! The 48-byte packet codec is written here rather than taken from a crate: the
//! SNTP client crates return an offset or an error, while the report needs every
//! field of a reply it does *not* trust (stratum, reference id, leap, the kiss
//! code) as evidence, and the probe binds to the check's source address.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::net::UdpSocket;

use crate::model::{ms, NtpEvidence, NtpStatus};

/// Seconds from the NTP era 0 epoch (1900-01-01) to the Unix epoch.
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;
/// Length of an SNTP packet without extensions or MAC.
pub const PACKET_LEN: usize = 48;
/// The default NTP port.
pub const NTP_PORT: u16 = 123;

/// An NTP timestamp: seconds and 2^-32 fractions since 1900.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NtpTimestamp(pub u64);

impl NtpTimestamp {
    /// The timestamp of a system time (era 0; valid until 2036).
    pub fn from_system(t: SystemTime) -> Self {
        let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
        let secs = d.as_secs().wrapping_add(NTP_UNIX_OFFSET) & 0xffff_ffff;
        let frac = ((d.subsec_nanos() as u64) << 32) / 1_000_000_000;
        NtpTimestamp((secs << 32) | frac)
    }

    /// Seconds since the Unix epoch, as a float (era 0, or era 1 for the small
    /// values after the 2036 wrap).
    pub fn unix_seconds(self) -> f64 {
        let secs = self.0 >> 32;
        let frac = (self.0 & 0xffff_ffff) as f64 / 4_294_967_296.0;
        // Era 1 starts in 2036: small second counts belong to it.
        let secs = if secs < NTP_UNIX_OFFSET {
            secs + (1u64 << 32)
        } else {
            secs
        };
        (secs - NTP_UNIX_OFFSET) as f64 + frac
    }
}

/// Seconds since the Unix epoch of a system time, as a float (negative before it).
pub fn unix_f64(t: SystemTime) -> f64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

/// The fields of a server's reply this probe reads.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Packet {
    /// Leap indicator (0..=3; 3 = clock unsynchronized).
    pub leap: u8,
    /// Version number.
    pub version: u8,
    /// Mode (3 client, 4 server).
    pub mode: u8,
    /// Stratum (0 = unspecified / Kiss-o'-Death, 16 = unsynchronized).
    pub stratum: u8,
    /// Reference id (a kiss code at stratum 0, a clock name at stratum 1).
    pub reference_id: [u8; 4],
    /// Root delay, seconds.
    pub root_delay_s: f64,
    /// Root dispersion, seconds.
    pub root_dispersion_s: f64,
    /// Origin timestamp (the client's transmit timestamp, echoed).
    pub origin: NtpTimestamp,
    /// When the request arrived at the server.
    pub receive: NtpTimestamp,
    /// When the reply left the server.
    pub transmit: NtpTimestamp,
}

/// A client-mode request (version 4) whose transmit timestamp is `t1`.
pub fn request(t1: NtpTimestamp) -> [u8; PACKET_LEN] {
    let mut p = [0u8; PACKET_LEN];
    p[0] = (4 << 3) | 3; // LI 0, VN 4, mode 3 (client)
    p[40..48].copy_from_slice(&t1.0.to_be_bytes());
    p
}

fn short_format(b: &[u8]) -> f64 {
    let v = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    (v >> 16) as f64 + (v & 0xffff) as f64 / 65_536.0
}

fn ts(b: &[u8]) -> NtpTimestamp {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    NtpTimestamp(u64::from_be_bytes(a))
}

/// Decodes a reply; `None` when it is shorter than an SNTP packet.
pub fn decode(bytes: &[u8]) -> Option<Packet> {
    if bytes.len() < PACKET_LEN {
        return None;
    }
    Some(Packet {
        leap: bytes[0] >> 6,
        version: (bytes[0] >> 3) & 7,
        mode: bytes[0] & 7,
        stratum: bytes[1],
        reference_id: [bytes[12], bytes[13], bytes[14], bytes[15]],
        root_delay_s: short_format(&bytes[4..8]),
        root_dispersion_s: short_format(&bytes[8..12]),
        origin: ts(&bytes[24..32]),
        receive: ts(&bytes[32..40]),
        transmit: ts(&bytes[40..48]),
    })
}

/// The reference id as the report shows it: four ASCII letters for a kiss code or
/// a stratum-1 clock (`GPS`, `LOCL`), a dotted IPv4 address (or an IPv6 hash) above.
pub fn reference_id_text(stratum: u8, id: [u8; 4]) -> String {
    if stratum <= 1 {
        let s: String = id
            .iter()
            .take_while(|b| **b != 0)
            .map(|b| {
                if b.is_ascii_graphic() {
                    *b as char
                } else {
                    '?'
                }
            })
            .collect();
        s
    } else {
        format!("{}.{}.{}.{}", id[0], id[1], id[2], id[3])
    }
}

/// Judges a decoded-or-not reply to the request sent at `t1` (device clock) and
/// received at `t4`: fills status, offset and delay of `ev`.
///
/// Offset and delay are RFC 5905's: θ = ((T2 − T1) + (T3 − T4)) / 2,
/// δ = (T4 − T1) − (T3 − T2); the offset is true time minus device time.
pub fn judge(ev: &mut NtpEvidence, bytes: &[u8], t1: NtpTimestamp, t1_unix: f64, t4_unix: f64) {
    let Some(p) = decode(bytes) else {
        ev.status = NtpStatus::Malformed;
        ev.message = Some(format!(
            "the reply is {} bytes, shorter than an SNTP packet ({PACKET_LEN})",
            bytes.len()
        ));
        return;
    };
    ev.stratum = Some(p.stratum);
    ev.leap = Some(p.leap);
    ev.version = Some(p.version);
    ev.reference_id = Some(reference_id_text(p.stratum, p.reference_id));
    ev.root_delay_s = Some(round6(p.root_delay_s));
    ev.root_dispersion_s = Some(round6(p.root_dispersion_s));
    if p.mode != 4 {
        ev.status = NtpStatus::Malformed;
        ev.message = Some(format!(
            "the reply has mode {} (a server answers with mode 4)",
            p.mode
        ));
        return;
    }
    if !(1..=4).contains(&p.version) {
        ev.status = NtpStatus::Malformed;
        ev.message = Some(format!("the reply has version {}", p.version));
        return;
    }
    if p.origin != t1 {
        ev.status = NtpStatus::WrongOrigin;
        ev.message = Some(
            "the reply's origin timestamp is not the request's transmit timestamp: not an answer to this request (spoofed or stale), ignored"
                .into(),
        );
        return;
    }
    if p.stratum == 0 {
        let code = reference_id_text(0, p.reference_id);
        ev.status = NtpStatus::KissOfDeath;
        ev.message = Some(match code.as_str() {
            "RATE" => "Kiss-o'-Death RATE: the server asks this client to poll less often".into(),
            "DENY" => "Kiss-o'-Death DENY: the server refuses this client access".into(),
            "RSTR" => "Kiss-o'-Death RSTR: the server restricts this client's access".into(),
            other => format!("Kiss-o'-Death {other:?}: the server sent no time"),
        });
        ev.kiss_code = Some(code);
        return;
    }
    if p.stratum >= 16 || p.leap == 3 {
        ev.status = NtpStatus::Unsynchronized;
        ev.message = Some(if p.leap == 3 {
            format!(
                "the server's clock is unsynchronized (leap indicator 3, stratum {})",
                p.stratum
            )
        } else {
            format!(
                "the server's clock is unsynchronized (stratum {})",
                p.stratum
            )
        });
        return;
    }
    if p.transmit.0 == 0 {
        ev.status = NtpStatus::Malformed;
        ev.message = Some("the reply's transmit timestamp is zero".into());
        return;
    }
    let t2 = p.receive.unix_seconds();
    let t3 = p.transmit.unix_seconds();
    let offset = ((t2 - t1_unix) + (t3 - t4_unix)) / 2.0;
    let delay = ((t4_unix - t1_unix) - (t3 - t2)).max(0.0);
    ev.status = NtpStatus::Ok;
    ev.offset_s = Some(round6(offset));
    ev.delay_s = Some(round6(delay));
    ev.message = None;
}

fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

/// What the probe needs besides the server.
#[derive(Debug, Clone)]
pub struct NtpOptions {
    /// The whole query's bound (DNS and every address).
    pub timeout: Duration,
    /// Local address to bind to.
    pub source_ip: Option<IpAddr>,
}

/// Splits `HOST[:PORT]` (`[v6]:port` for IPv6 with a port); the port defaults to 123.
pub fn parse_server(s: &str) -> Result<(String, u16), String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty NTP server".into());
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok((ip.to_string(), NTP_PORT));
    }
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Ok((sa.ip().to_string(), sa.port()));
    }
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => {
            let port: u16 = p
                .parse()
                .map_err(|_| format!("{s:?}: the port must be a number 1-65535"))?;
            if port == 0 {
                return Err(format!("{s:?}: the port must be a number 1-65535"));
            }
            (h, port)
        }
        _ => (s, NTP_PORT),
    };
    let ok = !host.is_empty()
        && host.len() <= 253
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_');
    if !ok {
        return Err(format!("{s:?}: expected HOST[:PORT]"));
    }
    Ok((host.to_string(), port))
}

/// Queries `server` (`HOST[:PORT]`) once per address until one answers with a
/// usable sample, all within `opts.timeout`. Never fails: failures are evidence.
pub async fn query(server: &str, opts: &NtpOptions) -> NtpEvidence {
    let started = std::time::Instant::now();
    let deadline = tokio::time::Instant::now() + opts.timeout;
    let mut ev = NtpEvidence {
        server: server.to_string(),
        ..NtpEvidence::default()
    };
    let (host, port) = match parse_server(server) {
        Ok(hp) => hp,
        Err(m) => {
            ev.status = NtpStatus::Unresolved;
            ev.message = Some(m);
            return finish(ev, started);
        }
    };
    let addrs: Vec<SocketAddr> =
        match tokio::time::timeout_at(deadline, tokio::net::lookup_host((host.as_str(), port)))
            .await
        {
            Ok(Ok(a)) => a.take(4).collect(),
            Ok(Err(e)) => {
                ev.status = NtpStatus::Unresolved;
                ev.message = Some(format!("cannot resolve {host}: {e}"));
                return finish(ev, started);
            }
            Err(_) => {
                ev.status = NtpStatus::Timeout;
                ev.message = Some(format!("resolving {host} took longer than the NTP timeout"));
                return finish(ev, started);
            }
        };
    if addrs.is_empty() {
        ev.status = NtpStatus::Unresolved;
        ev.message = Some(format!("{host} has no address"));
        return finish(ev, started);
    }
    let per_addr = opts.timeout / addrs.len() as u32;
    for (i, addr) in addrs.iter().enumerate() {
        let mut attempt = ev.clone();
        attempt.address = Some(addr.to_string());
        let until = if i + 1 == addrs.len() {
            deadline
        } else {
            (tokio::time::Instant::now() + per_addr).min(deadline)
        };
        exchange(&mut attempt, *addr, opts.source_ip, until).await;
        let done = attempt.status == NtpStatus::Ok;
        ev = attempt;
        if done || tokio::time::Instant::now() >= deadline {
            break;
        }
    }
    finish(ev, started)
}

fn finish(mut ev: NtpEvidence, started: std::time::Instant) -> NtpEvidence {
    ev.duration_ms = ms(started.elapsed());
    ev
}

async fn exchange(
    ev: &mut NtpEvidence,
    addr: SocketAddr,
    source: Option<IpAddr>,
    until: tokio::time::Instant,
) {
    let bind: SocketAddr = match (source, addr) {
        (Some(ip), _) => SocketAddr::new(ip, 0),
        (None, SocketAddr::V4(_)) => "0.0.0.0:0".parse().expect("literal"),
        (None, SocketAddr::V6(_)) => "[::]:0".parse().expect("literal"),
    };
    let sock = match UdpSocket::bind(bind).await {
        Ok(s) => s,
        Err(e) => {
            ev.status = NtpStatus::Unreachable;
            ev.message = Some(format!("cannot bind a UDP socket to {bind}: {e}"));
            return;
        }
    };
    // A connected socket receives only from the server and reports its ICMP port
    // unreachable as ECONNREFUSED.
    if let Err(e) = sock.connect(addr).await {
        ev.status = NtpStatus::Unreachable;
        ev.message = Some(format!("cannot reach {addr}: {e}"));
        return;
    }
    let now = SystemTime::now();
    let t1 = NtpTimestamp::from_system(now);
    if let Err(e) = sock.send(&request(t1)).await {
        set_io_error(ev, addr, &e);
        return;
    }
    let t1_unix = unix_f64(now);
    let mut buf = [0u8; 512];
    // A stray datagram with the wrong origin is judged and then waited past: a
    // spoofer must not be able to end the query early with garbage.
    let mut last_bad: Option<NtpEvidence> = None;
    for _ in 0..8 {
        match tokio::time::timeout_at(until, sock.recv(&mut buf)).await {
            Ok(Ok(n)) => {
                let t4_unix = unix_f64(SystemTime::now());
                let mut judged = ev.clone();
                judge(&mut judged, &buf[..n], t1, t1_unix, t4_unix);
                if judged.status == NtpStatus::WrongOrigin || judged.status == NtpStatus::Malformed
                {
                    last_bad = Some(judged);
                    continue;
                }
                *ev = judged;
                return;
            }
            Ok(Err(e)) => {
                set_io_error(ev, addr, &e);
                return;
            }
            Err(_) => break,
        }
    }
    match last_bad {
        Some(bad) => *ev = bad,
        None => {
            ev.status = NtpStatus::Timeout;
            ev.message = Some(format!(
                "no answer from {addr} (UDP {}): NTP is blocked on the path, or the server is down",
                addr.port()
            ));
        }
    }
}

fn set_io_error(ev: &mut NtpEvidence, addr: SocketAddr, e: &std::io::Error) {
    if e.kind() == std::io::ErrorKind::ConnectionRefused {
        ev.status = NtpStatus::Refused;
        ev.message = Some(format!(
            "{addr} refused UDP {} (ICMP port unreachable): no NTP server there, or a firewall rejects it",
            addr.port()
        ));
    } else if e.raw_os_error() == Some(libc::EPERM) {
        ev.status = NtpStatus::Unreachable;
        ev.message = Some(format!(
            "a local firewall rule drops UDP {} to {addr} (sending was not permitted)",
            addr.port()
        ));
    } else {
        ev.status = NtpStatus::Unreachable;
        ev.message = Some(format!("cannot reach {addr}: {e}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(t1: NtpTimestamp, t2: SystemTime, t3: SystemTime, stratum: u8, leap: u8) -> Vec<u8> {
        let mut p = vec![0u8; PACKET_LEN];
        p[0] = (leap << 6) | (4 << 3) | 4;
        p[1] = stratum;
        p[12..16].copy_from_slice(b"LOCL");
        p[24..32].copy_from_slice(&t1.0.to_be_bytes());
        p[32..40].copy_from_slice(&NtpTimestamp::from_system(t2).0.to_be_bytes());
        p[40..48].copy_from_slice(&NtpTimestamp::from_system(t3).0.to_be_bytes());
        p
    }

    #[test]
    fn timestamps_round_trip_to_unix_seconds() {
        let t = UNIX_EPOCH + Duration::from_millis(1_764_000_000_250);
        let back = NtpTimestamp::from_system(t).unix_seconds();
        assert!((back - 1_764_000_000.25).abs() < 1e-6, "{back}");
    }

    #[test]
    fn offset_and_delay_follow_rfc_5905() {
        let t1s = UNIX_EPOCH + Duration::from_secs(1_764_000_000);
        let t1 = NtpTimestamp::from_system(t1s);
        // Server 360 s ahead; 10 ms each way, 2 ms in the server.
        let t2 = t1s + Duration::from_millis(360_010);
        let t3 = t1s + Duration::from_millis(360_012);
        let t4 = unix_f64(t1s) + 0.022;
        let mut ev = NtpEvidence::default();
        judge(&mut ev, &reply(t1, t2, t3, 2, 0), t1, unix_f64(t1s), t4);
        assert_eq!(ev.status, NtpStatus::Ok);
        assert!((ev.offset_s.unwrap() - 360.0).abs() < 1e-3, "{ev:?}");
        assert!((ev.delay_s.unwrap() - 0.020).abs() < 1e-3, "{ev:?}");
    }

    #[test]
    fn faults_are_classified_not_trusted() {
        let now = SystemTime::now();
        let t1 = NtpTimestamp::from_system(now);
        let u = unix_f64(now);
        let mut kod = reply(t1, now, now, 0, 3);
        kod[12..16].copy_from_slice(b"RATE");
        let cases: Vec<(Vec<u8>, NtpStatus)> = vec![
            (kod, NtpStatus::KissOfDeath),
            (reply(t1, now, now, 16, 0), NtpStatus::Unsynchronized),
            (reply(t1, now, now, 3, 3), NtpStatus::Unsynchronized),
            (
                reply(NtpTimestamp(t1.0 ^ 1), now, now, 2, 0),
                NtpStatus::WrongOrigin,
            ),
            (
                reply(t1, now, now, 2, 0)[..47].to_vec(),
                NtpStatus::Malformed,
            ),
        ];
        for (bytes, want) in cases {
            let mut ev = NtpEvidence::default();
            judge(&mut ev, &bytes, t1, u, u);
            assert_eq!(ev.status, want, "{ev:?}");
            assert!(ev.offset_s.is_none(), "{ev:?}");
            assert!(ev.message.is_some());
        }
    }

    #[test]
    fn server_forms() {
        assert_eq!(
            parse_server("time.windows.com").unwrap(),
            ("time.windows.com".into(), 123)
        );
        assert_eq!(
            parse_server("127.0.0.1:1234").unwrap(),
            ("127.0.0.1".into(), 1234)
        );
        assert_eq!(parse_server("[::1]:5").unwrap(), ("::1".into(), 5));
        assert_eq!(parse_server("::1").unwrap(), ("::1".into(), 123));
        assert!(parse_server("a b").is_err());
        assert!(parse_server("host:0").is_err());
        assert!(parse_server("host:x").is_err());
        assert!(parse_server("").is_err());
    }
}

//! The path-MTU probe: proves (or rules out) a path-MTU black hole behind a TLS
//! handshake that stalls.
//!
//! A link on the path with a smaller MTU (a tunnel, a VPN, a cellular APN) drops
//! the server's full-size segments; the ICMP "fragmentation needed" / "packet too
//! big" that would make the server send smaller ones is filtered, so the ClientHello
//! passes and the certificate flight never arrives. The probe re-runs TCP + TLS to
//! the same address with the MSS the device advertises clamped (TCP_MAXSEG before
//! connect: the server then sends smaller segments): first a short ladder
//! ([`LADDER`]), then, once a clamped handshake completes, a bisection between the
//! largest MSS that works and the smallest that stalls ([`MssSearch`], pure, no
//! sockets). The driver ([`probe`]) runs each try through the one connection chain
//! (`net::open` with `ChainSpec::mss`), bounded by the phase timeout and the run's
//! deadline, and reads what the kernel knows of the route (`probe::route`).

use std::net::IpAddr;
use std::time::Duration;

use tokio::time::Instant;

use crate::model::{ms, FailureClass, MssAttempt, MtuEvidence, MtuTrigger, Transport};
use crate::net::{self, Budget, ChainSpec, ChainStop};
use crate::probe::route;

/// The clamped MSS values tried first, largest first: 1200 fits most tunnels
/// (IPv6's minimum MTU is 1280), 536 is the IPv4 default MSS every path must carry.
pub const LADDER: [u32; 2] = [1200, 536];

/// Most bisection steps after the ladder (each one costs a handshake, and a
/// stalled one its whole timeout).
pub const MAX_SEARCH_STEPS: u32 = 7;

/// The bisection stops once the bracket is this narrow (bytes) or narrower than
/// 1/64 of the largest working MSS (about 1.5 %).
pub const MIN_PRECISION: u32 = 8;

/// Shortest bound on a bisection step; a step otherwise gets four times the
/// slowest clamped handshake that completed (never more than the phase timeout).
pub const MIN_STEP_TIMEOUT: Duration = Duration::from_secs(1);

/// Decides which MSS to try next from the outcomes so far. Pure: fed outcomes,
/// it never touches a socket.
#[derive(Debug, Clone)]
pub struct MssSearch {
    full_ok: bool,
    full_mss: Option<u32>,
    tried: Vec<(u32, bool)>,
    largest_ok: Option<u32>,
    smallest_failed: Option<u32>,
    steps: u32,
}

impl MssSearch {
    /// A search after the full-size handshake, which advertised `full_mss` (when
    /// known) and completed (`full_ok`) or stalled.
    pub fn new(full_mss: Option<u32>, full_ok: bool) -> Self {
        MssSearch {
            full_ok,
            full_mss,
            tried: Vec::new(),
            largest_ok: None,
            smallest_failed: (!full_ok).then_some(full_mss).flatten(),
            steps: 0,
        }
    }

    /// The next MSS to try, or `None` when the search is over.
    pub fn next(&self) -> Option<u32> {
        match self.largest_ok {
            // The ladder, until a rung completes.
            None => LADDER.iter().copied().find(|r| {
                self.full_mss.is_none_or(|f| *r < f)
                    && self.smallest_failed.is_none_or(|h| *r < h)
                    && !self.tried.iter().any(|(m, _)| m == r)
            }),
            Some(lo) => {
                // A path that carries full-size segments has nothing to search.
                let hi = self.smallest_failed.filter(|_| !self.full_ok)?;
                let precision = MIN_PRECISION.max(lo / 64);
                (self.steps < MAX_SEARCH_STEPS && hi > lo && hi - lo > precision)
                    .then_some(lo + (hi - lo) / 2)
            }
        }
    }

    /// Records the outcome of a try: `ok` when the handshake completed.
    pub fn record(&mut self, mss: u32, ok: bool) {
        if self.largest_ok.is_some() {
            self.steps += 1;
        }
        self.tried.push((mss, ok));
        if ok {
            self.largest_ok = Some(self.largest_ok.map_or(mss, |l| l.max(mss)));
        } else {
            self.smallest_failed = Some(self.smallest_failed.map_or(mss, |h| h.min(mss)));
        }
    }

    /// The largest clamped MSS whose handshake completed.
    pub fn largest_working(&self) -> Option<u32> {
        self.largest_ok
    }

    /// The smallest MSS whose handshake stalled (the full one included).
    pub fn smallest_failing(&self) -> Option<u32> {
        self.smallest_failed
    }

    /// True exactly when the full-size handshake stalled and a clamped one
    /// completed: the evidence of a path-MTU black hole.
    pub fn black_hole(&self) -> bool {
        !self.full_ok && self.largest_ok.is_some()
    }
}

/// Whether a TLS failure still proves the server's certificate flight arrived
/// (verification ran on it), so the handshake got past the large packets.
pub fn flight_arrived(class: FailureClass) -> bool {
    matches!(
        class,
        FailureClass::TlsUnknownCa
            | FailureClass::TlsExpired
            | FailureClass::TlsNotYetValid
            | FailureClass::TlsHostnameMismatch
    )
}

/// How the check's own, full-size handshake went.
#[derive(Debug, Clone, Copy)]
pub struct FullAttempt {
    /// It completed.
    pub ok: bool,
    /// Its class, when it failed.
    pub class: Option<FailureClass>,
    /// TCP + TLS time.
    pub took: Duration,
}

/// Runs the probe against `address` with `spec`'s TCP and TLS hops (a WebSocket
/// hop is not needed to carry the certificate flight), each try bounded by
/// `timeout` and the `deadline_at`.
pub async fn probe(
    spec: &ChainSpec,
    address: IpAddr,
    trigger: MtuTrigger,
    full: FullAttempt,
    timeout: Duration,
    deadline_at: Option<Instant>,
) -> MtuEvidence {
    let overhead = route::tcp_ip_overhead(address);
    let before = route::facts(address, spec.interface.as_deref(), spec.source_ip);
    let full_mss = before
        .path_mtu
        .or(before.interface_mtu)
        .and_then(|m| m.checked_sub(overhead));
    let mut search = MssSearch::new(full_mss, full.ok);
    let mut attempts = vec![MssAttempt {
        mss: full_mss,
        clamped: false,
        status: if full.ok { "ok" } else { "failed" }.into(),
        class: full.class,
        duration_ms: ms(full.took),
        timeout_ms: ms(timeout),
    }];
    let mut spec = spec.clone();
    spec.transport = match spec.transport {
        Transport::Ws | Transport::Tcp => Transport::Tcp,
        Transport::Tls | Transport::Wss => Transport::Tls,
    };
    let mut slowest_ok: Option<Duration> = None;
    let mut cut_short = false;
    // Bounded: the ladder plus the search steps (and one spare).
    for _ in 0..(LADDER.len() as u32 + MAX_SEARCH_STEPS + 1) {
        let Some(mss) = search.next() else { break };
        let per_try = match (search.largest_working(), slowest_ok) {
            (Some(_), Some(slow)) => (slow * 4).max(MIN_STEP_TIMEOUT).min(timeout),
            _ => timeout,
        };
        let budget = Budget {
            per_hop: per_try,
            deadline_at,
        };
        if budget.next().is_none() {
            cut_short = true;
            break;
        }
        spec.mss = Some(mss);
        let started = Instant::now();
        let outcome = net::open(&[address], &spec, &budget).await;
        let took = started.elapsed();
        let (ok, class) = match outcome.link {
            Ok(mut link) => {
                link.close().await;
                (true, None)
            }
            Err(ChainStop::Deadline(_)) => {
                cut_short = true;
                break;
            }
            Err(ChainStop::Failed(_, f)) => (flight_arrived(f.class), Some(f.class)),
        };
        // A try cut by the deadline proves nothing either way.
        if !ok && deadline_at.is_some_and(|d| Instant::now() + Duration::from_millis(5) >= d) {
            cut_short = true;
            break;
        }
        if ok {
            slowest_ok = Some(slowest_ok.map_or(took, |s| s.max(took)));
        }
        search.record(mss, ok);
        attempts.push(MssAttempt {
            mss: Some(mss),
            clamped: true,
            status: if ok { "ok" } else { "failed" }.into(),
            class,
            duration_ms: ms(took),
            timeout_ms: ms(per_try),
        });
    }
    let after = route::facts(address, spec.interface.as_deref(), spec.source_ip);
    MtuEvidence {
        trigger,
        address,
        interface: after.interface.or(before.interface),
        interface_mtu: after.interface_mtu.or(before.interface_mtu),
        path_mtu: after.path_mtu.or(before.path_mtu),
        attempts,
        largest_working_mss: search.largest_working(),
        smallest_failing_mss: search.smallest_failing(),
        black_hole: search.black_hole(),
        cut_short,
    }
}

/// One line on what the probe showed, for the TLS phase's message.
pub fn summary(ev: &MtuEvidence) -> String {
    let clamped: Vec<String> = ev
        .attempts
        .iter()
        .filter(|a| a.clamped)
        .map(|a| format!("{} {}", a.mss.unwrap_or(0), a.status))
        .collect();
    let tried = if clamped.is_empty() {
        "no retry with a smaller MSS fit in the deadline".to_string()
    } else {
        format!("retries with a clamped MSS: {}", clamped.join(", "))
    };
    let pmtu = match (ev.path_mtu, ev.interface_mtu) {
        (Some(p), Some(i)) => format!("; the kernel's path MTU is {p} (interface MTU {i})"),
        (Some(p), None) => format!("; the kernel's path MTU is {p}"),
        _ => String::new(),
    };
    if ev.black_hole {
        let lwm = ev.largest_working_mss.unwrap_or(0);
        let overhead = route::tcp_ip_overhead(ev.address);
        format!(
            "the handshake stalls at full size{} but completes with a smaller MSS ({tried}); the largest MSS that works is {lwm}: packets above about {} bytes are dropped on the path and no ICMP comes back{pmtu}",
            ev.attempts
                .first()
                .and_then(|a| a.mss)
                .map(|m| format!(" (MSS {m})"))
                .unwrap_or_default(),
            lwm + overhead,
        )
    } else if ev.attempts.first().is_some_and(|a| a.status == "ok") {
        format!("the full-size handshake works ({tried}): no path-MTU black hole{pmtu}")
    } else if clamped.is_empty() {
        format!("{tried}, so a path-MTU black hole is not ruled out")
    } else {
        format!("{tried}: a smaller MSS does not help, so this is not a path-MTU black hole{pmtu}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the search against a path that carries MSS up to `limit` (None: all).
    fn run(full_mss: Option<u32>, limit: Option<u32>) -> (MssSearch, Vec<u32>) {
        let full_ok = match (full_mss, limit) {
            (Some(f), Some(l)) => f <= l,
            _ => limit.is_none(),
        };
        let mut s = MssSearch::new(full_mss, full_ok);
        let mut tried = Vec::new();
        for _ in 0..32 {
            let Some(m) = s.next() else { break };
            tried.push(m);
            s.record(m, limit.is_none_or(|l| m <= l));
        }
        (s, tried)
    }

    #[test]
    fn a_black_hole_below_1200_is_bracketed_within_a_few_percent() {
        for limit in [560u32, 700, 960, 1100, 1199] {
            let (s, tried) = run(Some(1460), Some(limit));
            assert!(s.black_hole(), "{limit}");
            let lo = s.largest_working().unwrap();
            let hi = s.smallest_failing().unwrap();
            assert!(lo <= limit && hi > limit, "{limit}: ({lo}, {hi}]");
            assert!(
                (limit - lo) * 100 <= limit * 3,
                "{limit}: {lo} not within 3 %"
            );
            assert_eq!(&tried[..2], &[1200, 536], "{tried:?}");
            assert!(tried.len() <= LADDER.len() + MAX_SEARCH_STEPS as usize);
        }
    }

    #[test]
    fn a_black_hole_above_1200_is_searched_up_to_the_full_mss() {
        let (s, tried) = run(Some(1460), Some(1400));
        assert_eq!(tried[0], 1200);
        assert!(!tried.contains(&536), "{tried:?}");
        let lo = s.largest_working().unwrap();
        assert!(lo <= 1400 && 1400 - lo <= 1400 / 50, "{lo}");
        assert!(s.black_hole());
    }

    #[test]
    fn a_stall_that_no_mss_fixes_is_no_black_hole() {
        let (s, tried) = run(Some(1460), Some(0));
        assert_eq!(tried, [1200, 536]);
        assert!(!s.black_hole());
        assert_eq!(s.largest_working(), None);
    }

    #[test]
    fn a_working_path_tries_one_rung_and_claims_nothing() {
        let (s, tried) = run(Some(1460), None);
        assert_eq!(tried, [1200]);
        assert!(!s.black_hole());
        assert_eq!(s.smallest_failing(), None);
    }

    #[test]
    fn rungs_at_or_above_the_full_mss_are_skipped() {
        // A 1240-byte link (MSS 1200): only 536 is below it.
        let (s, tried) = run(Some(1200), Some(1000));
        assert_eq!(tried[0], 536);
        assert!(s.black_hole());
        let lo = s.largest_working().unwrap();
        assert!(lo <= 1000 && 1000 - lo <= 30, "{lo}");
    }

    #[test]
    fn an_unknown_full_mss_still_finds_the_black_hole_without_bisecting() {
        let (s, tried) = run(None, Some(700));
        // Without a known full MSS, every rung is tried; nothing bounds a bisection
        // from above but the failing 1200.
        assert_eq!(&tried[..2], &[1200, 536]);
        let mut full_failed = MssSearch::new(None, false);
        full_failed.record(1200, false);
        full_failed.record(536, true);
        assert!(full_failed.black_hole());
        let _ = s;
    }

    #[test]
    fn verification_failures_prove_the_flight_arrived() {
        assert!(flight_arrived(FailureClass::TlsUnknownCa));
        assert!(!flight_arrived(FailureClass::TlsTimeout));
        assert!(!flight_arrived(FailureClass::TcpTimeout));
    }

    fn evidence(black_hole: bool, full_ok: bool, clamped: &[(u32, bool)]) -> MtuEvidence {
        let mut attempts = vec![MssAttempt {
            mss: Some(1460),
            clamped: false,
            status: if full_ok { "ok" } else { "failed" }.into(),
            class: (!full_ok).then_some(FailureClass::TlsTimeout),
            duration_ms: 1.0,
            timeout_ms: 1.0,
        }];
        attempts.extend(clamped.iter().map(|(m, ok)| MssAttempt {
            mss: Some(*m),
            clamped: true,
            status: if *ok { "ok" } else { "failed" }.into(),
            class: None,
            duration_ms: 1.0,
            timeout_ms: 1.0,
        }));
        MtuEvidence {
            trigger: MtuTrigger::TlsTimeout,
            address: "10.0.0.1".parse().unwrap(),
            interface: Some("eth0".into()),
            interface_mtu: Some(1500),
            path_mtu: Some(1500),
            attempts,
            largest_working_mss: black_hole.then_some(956),
            smallest_failing_mss: Some(961),
            black_hole,
            cut_short: false,
        }
    }

    #[test]
    fn the_summary_claims_mtu_only_with_evidence() {
        let s = summary(&evidence(true, false, &[(1200, false), (536, true)]));
        assert!(s.contains("largest MSS that works is 956"), "{s}");
        assert!(s.contains("about 996 bytes"), "{s}");
        assert!(s.contains("path MTU is 1500"), "{s}");
        let s = summary(&evidence(false, false, &[(1200, false), (536, false)]));
        assert!(s.contains("not a path-MTU black hole"), "{s}");
        let s = summary(&evidence(false, false, &[]));
        assert!(s.contains("not ruled out"), "{s}");
        let s = summary(&evidence(false, true, &[(1200, true)]));
        assert!(s.contains("no path-MTU black hole"), "{s}");
    }
}

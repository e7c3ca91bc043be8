//! One connection chain: TCP → TLS → WebSocket, built once for every caller.
//!
//! An endpoint's transport is a list of [`Hop`]s; [`open`] runs them in order,
//! each bounded by a [`Budget`] and timed as a phase of its own, and stops at the
//! first that fails with a typed [`ChainFailure`] (`{phase, class, message}`).
//! The check keeps every hop's [`PhaseResult`] for its report; the tuner and the
//! agent's canary keep the [`Link`] and, on failure, the class — no caller
//! rebuilds the chain or parses an error string. A new kind of hop (a proxy) is
//! one variant of [`Hop`] and one arm of [`open`].

pub mod meter;
pub mod proxy;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::model::{FailureClass, Phase, PhaseResult, Transport};
use crate::probe::stream::{Link, Stream};
use crate::probe::tcp::{self, TcpOptions};
use crate::probe::tls::{self, ClientIdentity, TlsOptions, TrustStore};
use crate::probe::ws;

/// One hop of a chain, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hop {
    /// TCP connect to the endpoint's addresses.
    Tcp,
    /// TLS handshake and certificate verification.
    Tls,
    /// HTTP upgrade to a WebSocket.
    WebSocket,
    /// The tunnel through a proxy (HTTP CONNECT or SOCKS5), after TCP to the proxy.
    Proxy,
}

impl Hop {
    /// The report phase this hop is timed as.
    pub fn phase(self) -> Phase {
        match self {
            Hop::Tcp => Phase::Tcp,
            Hop::Tls => Phase::Tls,
            Hop::WebSocket => Phase::Websocket,
            Hop::Proxy => Phase::Proxy,
        }
    }

    /// What a skipped later phase says when this hop failed.
    pub fn failed_reason(self) -> &'static str {
        match self {
            Hop::Tcp => "TCP failed",
            Hop::Tls => "TLS failed",
            Hop::WebSocket => "the WebSocket upgrade failed",
            Hop::Proxy => "the proxy tunnel failed",
        }
    }
}

/// The TLS hop's settings.
#[derive(Clone)]
pub struct TlsHop {
    /// ALPN protocols to offer.
    pub alpn: Vec<String>,
    /// Anchor names the profile expects.
    pub expected_anchors: Vec<String>,
    /// Anchor names the profile knows as legacy.
    pub legacy_anchors: Vec<String>,
    /// The device certificate, when the identity is X.509.
    pub client_identity: Option<Arc<ClientIdentity>>,
    /// The run's trust anchors.
    pub trust: Arc<TrustStore>,
}

/// How to reach one endpoint: everything its hops need.
#[derive(Clone)]
pub struct ChainSpec {
    /// The host name sent as SNI and as the WebSocket `Host`.
    pub host: String,
    /// The endpoint's port.
    pub port: u16,
    /// The transport (which hops run).
    pub transport: Transport,
    /// The WebSocket path (for `ws`/`wss` transports).
    pub ws_path: String,
    /// The WebSocket subprotocol asked for (`mqtt`; `AMQPWSB10` for AMQP).
    pub ws_subprotocol: String,
    /// Interface to bind to.
    pub interface: Option<String>,
    /// Local address to bind to.
    pub source_ip: Option<IpAddr>,
    /// TLS settings (used when the transport has TLS).
    pub tls: TlsHop,
    /// Clamp the MSS the TCP hop advertises (TCP_MAXSEG before connect); `None`
    /// leaves it to the kernel (the interface MTU). The path-MTU probe sets it.
    pub mss: Option<u32>,
    /// The proxy to tunnel through: the TCP hop connects to it and the proxy hop
    /// asks it for the hub. With `http://` and `socks5h://` the addresses given to
    /// [`open`] are the proxy's (the proxy resolves the hub); with `socks5://` they
    /// are the hub's, and the proxy's own name is resolved by the TCP hop.
    pub proxy: Option<Arc<proxy::ProxyConfig>>,
}

impl ChainSpec {
    /// The hops of this chain, in order.
    pub fn hops(&self) -> Vec<Hop> {
        let mut hops = vec![Hop::Tcp];
        if self.proxy.is_some() {
            hops.push(Hop::Proxy);
        }
        if self.transport.uses_tls() {
            hops.push(Hop::Tls);
        }
        if self.transport.uses_websocket() {
            hops.push(Hop::WebSocket);
        }
        hops
    }
}

/// The time each hop may take: the per-hop timeout, cut to what is left of a
/// deadline when there is one.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// Bound on one hop.
    pub per_hop: Duration,
    /// The run's deadline, if any.
    pub deadline_at: Option<Instant>,
}

impl Budget {
    /// Each hop bounded by `per_hop`, no deadline.
    pub fn per_hop(per_hop: Duration) -> Self {
        Budget {
            per_hop,
            deadline_at: None,
        }
    }

    /// The time the next hop may take; `None` once the deadline has passed.
    pub fn next(&self) -> Option<Duration> {
        match self.deadline_at {
            None => Some(self.per_hop),
            Some(at) => {
                let left = at.saturating_duration_since(Instant::now());
                (left > Duration::from_millis(1)).then(|| self.per_hop.min(left))
            }
        }
    }
}

/// Why a chain stopped before its protocol: the hop's phase, its class and what
/// was seen (never a secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainFailure {
    /// The phase that failed.
    pub phase: Phase,
    /// Its class.
    pub class: FailureClass,
    /// What was seen.
    pub message: String,
}

impl std::fmt::Display for ChainFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.class, self.message)
    }
}

impl std::error::Error for ChainFailure {}

/// Why [`open`] stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainStop {
    /// A hop failed.
    Failed(Hop, ChainFailure),
    /// The deadline passed before this hop could start.
    Deadline(Hop),
}

/// What [`open`] did: every hop's phase result, and the link or why there is none.
pub struct ChainOutcome {
    /// The results of the hops that ran, in order.
    pub phases: Vec<PhaseResult>,
    /// The link up to the protocol, or why the chain stopped.
    pub link: Result<Link, ChainStop>,
}

impl ChainOutcome {
    /// The link, or the failure as one typed value (a deadline counts as a timeout
    /// of the hop that could not start).
    pub fn into_link(self) -> Result<Link, ChainFailure> {
        match self.link {
            Ok(l) => Ok(l),
            Err(ChainStop::Failed(_, f)) => Err(f),
            Err(ChainStop::Deadline(hop)) => Err(ChainFailure {
                phase: hop.phase(),
                class: timeout_class(hop),
                message: "the deadline passed before this step".into(),
            }),
        }
    }
}

fn timeout_class(hop: Hop) -> FailureClass {
    match hop {
        Hop::Tcp => FailureClass::TcpTimeout,
        Hop::Tls => FailureClass::TlsTimeout,
        Hop::WebSocket => FailureClass::WebsocketTimeout,
        Hop::Proxy => FailureClass::ProxyTimeout,
    }
}

/// What one hop left behind: the stream so far.
enum Partial {
    Nothing,
    Stream(Stream),
    Link(Link),
}

/// Runs the chain's hops over `addresses`, each within `budget`.
pub async fn open(addresses: &[IpAddr], spec: &ChainSpec, budget: &Budget) -> ChainOutcome {
    let mut phases = Vec::new();
    let mut partial = Partial::Nothing;
    for hop in spec.hops() {
        let Some(timeout) = budget.next() else {
            return ChainOutcome {
                phases,
                link: Err(ChainStop::Deadline(hop)),
            };
        };
        let (result, next) = run_hop(hop, partial, addresses, spec, timeout).await;
        let failure = failure_of(&result);
        phases.push(result);
        match (next, failure) {
            (Some(p), None) => partial = p,
            (_, failure) => {
                let failure = failure.unwrap_or_else(|| ChainFailure {
                    phase: hop.phase(),
                    class: timeout_class(hop),
                    message: "the step gave no connection".into(),
                });
                return ChainOutcome {
                    phases,
                    link: Err(ChainStop::Failed(hop, failure)),
                };
            }
        }
    }
    let link = match partial {
        Partial::Link(l) => Ok(l),
        Partial::Stream(s) => Ok(Link::Stream(s)),
        // A chain always has a TCP hop.
        Partial::Nothing => Err(ChainStop::Deadline(Hop::Tcp)),
    };
    ChainOutcome { phases, link }
}

fn failure_of(r: &PhaseResult) -> Option<ChainFailure> {
    if r.is_ok() {
        return None;
    }
    Some(ChainFailure {
        phase: r.phase,
        class: r.class.unwrap_or(FailureClass::TcpError),
        message: r.message.clone().unwrap_or_default(),
    })
}

async fn run_hop(
    hop: Hop,
    partial: Partial,
    addresses: &[IpAddr],
    spec: &ChainSpec,
    timeout: Duration,
) -> (PhaseResult, Option<Partial>) {
    match (hop, partial) {
        (Hop::Tcp, _) if spec.proxy.is_some() => {
            let opts = TcpOptions {
                timeout,
                interface: spec.interface.clone(),
                source_ip: spec.source_ip,
                mss: spec.mss,
            };
            let p = spec.proxy.as_deref().expect("guarded");
            let out = proxy_tcp(p, addresses, &opts).await;
            let next = out
                .stream
                .filter(|_| out.result.is_ok())
                .map(|s| Partial::Stream(Stream::Plain(meter::Metered::new(s))));
            (out.result, next)
        }
        (Hop::Proxy, Partial::Stream(Stream::Plain(tcp))) => {
            let p = spec.proxy.as_deref().expect("a proxy hop has a proxy");
            let target = if p.scheme.proxy_resolves() {
                proxy::TunnelTarget::Name(spec.host.clone(), spec.port)
            } else {
                // socks5://: the device resolved the hub; the first address goes to the proxy.
                match addresses.first() {
                    Some(a) => {
                        proxy::TunnelTarget::Address(std::net::SocketAddr::new(*a, spec.port))
                    }
                    None => proxy::TunnelTarget::Name(spec.host.clone(), spec.port),
                }
            };
            let out = proxy::tunnel(tcp, p, target, timeout).await;
            let next = out
                .stream
                .filter(|_| out.result.is_ok())
                .map(|s| Partial::Stream(Stream::Plain(s)));
            (out.result, next)
        }
        (Hop::Tcp, _) => {
            let opts = TcpOptions {
                timeout,
                interface: spec.interface.clone(),
                source_ip: spec.source_ip,
                mss: spec.mss,
            };
            let out = tcp::connect(addresses, spec.port, &opts).await;
            let next = out
                .stream
                .filter(|_| out.result.is_ok())
                .map(|s| Partial::Stream(Stream::Plain(meter::Metered::new(s))));
            (out.result, next)
        }
        (Hop::Tls, Partial::Stream(Stream::Plain(tcp))) => {
            let opts = TlsOptions {
                server_name: spec.host.clone(),
                alpn: spec.tls.alpn.clone(),
                timeout,
                expected_anchors: spec.tls.expected_anchors.clone(),
                legacy_anchors: spec.tls.legacy_anchors.clone(),
                client_identity: spec.tls.client_identity.clone(),
            };
            let out = tls::handshake(tcp, &opts, &spec.tls.trust).await;
            let next = out
                .stream
                .filter(|_| out.result.is_ok())
                .map(|s| Partial::Stream(Stream::Tls(Box::new(s))));
            (out.result, next)
        }
        (Hop::WebSocket, Partial::Stream(stream)) => {
            let out = ws::upgrade_with(
                stream,
                &spec.host,
                spec.port,
                &spec.ws_path,
                spec.transport.uses_tls(),
                &spec.ws_subprotocol,
                timeout,
            )
            .await;
            let next = out
                .socket
                .filter(|_| out.result.is_ok())
                .map(|s| Partial::Link(Link::Ws(Box::new(s))));
            (out.result, next)
        }
        (hop, _) => (
            PhaseResult::skipped(
                hop.phase(),
                "skipped: the chain has no stream for this step",
            ),
            None,
        ),
    }
}

/// TCP to the proxy: to `addresses` (the DNS phase resolved the proxy) or, with
/// `socks5://`, to the proxy's own address (its literal, or its name resolved by
/// the system within the timeout). A failure names the proxy, not the hub.
async fn proxy_tcp(
    p: &proxy::ProxyConfig,
    addresses: &[IpAddr],
    opts: &TcpOptions,
) -> tcp::TcpOutcome {
    let clock = tokio::time::Instant::now();
    let resolved: Vec<IpAddr>;
    let to: &[IpAddr] = if p.scheme.proxy_resolves() {
        addresses
    } else if let Ok(ip) = p.host.parse::<IpAddr>() {
        resolved = vec![ip];
        &resolved
    } else {
        let looked = tokio::time::timeout(
            opts.timeout,
            tokio::net::lookup_host((p.host.as_str(), p.port)),
        )
        .await;
        resolved = match looked {
            Ok(Ok(it)) => it.map(|a| a.ip()).take(8).collect(),
            _ => Vec::new(),
        };
        if resolved.is_empty() {
            return tcp::TcpOutcome {
                result: PhaseResult::failed(
                    Phase::Tcp,
                    clock.elapsed(),
                    FailureClass::TcpError,
                    format!("proxy {}: its name did not resolve", p.host),
                    crate::model::NoEvidence,
                ),
                stream: None,
            };
        }
        &resolved
    };
    let left = opts.timeout.saturating_sub(clock.elapsed());
    let opts = TcpOptions {
        timeout: left.max(Duration::from_millis(1)),
        ..opts.clone()
    };
    let mut out = tcp::connect(to, p.port, &opts).await;
    if !out.result.is_ok() {
        let said = out.result.message.clone().unwrap_or_default();
        out.result.message = Some(format!("proxy {}:{}: {said}", p.host, p.port));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(transport: Transport) -> ChainSpec {
        ChainSpec {
            host: "hub.example".into(),
            port: 1,
            transport,
            ws_path: "/".into(),
            ws_subprotocol: "mqtt".into(),
            interface: None,
            source_ip: None,
            mss: None,
            proxy: None,
            tls: TlsHop {
                alpn: vec![],
                expected_anchors: vec![],
                legacy_anchors: vec![],
                client_identity: None,
                trust: Arc::new(
                    TrustStore::load(crate::probe::tls::TrustSource::None, &[]).unwrap(),
                ),
            },
        }
    }

    #[test]
    fn hops_follow_the_transport() {
        assert_eq!(spec(Transport::Tcp).hops(), vec![Hop::Tcp]);
        assert_eq!(spec(Transport::Tls).hops(), vec![Hop::Tcp, Hop::Tls]);
        assert_eq!(spec(Transport::Ws).hops(), vec![Hop::Tcp, Hop::WebSocket]);
        assert_eq!(
            spec(Transport::Wss).hops(),
            vec![Hop::Tcp, Hop::Tls, Hop::WebSocket]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_passed_deadline_stops_before_the_first_hop() {
        let budget = Budget {
            per_hop: Duration::from_secs(5),
            deadline_at: Some(Instant::now()),
        };
        tokio::time::advance(Duration::from_millis(10)).await;
        let out = open(
            &["127.0.0.1".parse().unwrap()],
            &spec(Transport::Tls),
            &budget,
        )
        .await;
        assert!(out.phases.is_empty());
        assert!(matches!(out.link, Err(ChainStop::Deadline(Hop::Tcp))));
        let f = out.into_link().err().unwrap();
        assert_eq!((f.phase, f.class), (Phase::Tcp, FailureClass::TcpTimeout));
    }

    #[test]
    fn the_budget_is_cut_to_the_deadline() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async {
            let b = Budget {
                per_hop: Duration::from_secs(10),
                deadline_at: Some(Instant::now() + Duration::from_secs(3)),
            };
            assert_eq!(b.next(), Some(Duration::from_secs(3)));
            assert_eq!(
                Budget::per_hop(Duration::from_secs(2)).next(),
                Some(Duration::from_secs(2))
            );
        });
    }

    #[tokio::test]
    async fn a_refused_port_fails_at_tcp_with_its_class() {
        // Bind then drop: the port is closed on loopback.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let mut s = spec(Transport::Wss);
        s.port = port;
        let out = open(
            &["127.0.0.1".parse().unwrap()],
            &s,
            &Budget::per_hop(Duration::from_secs(5)),
        )
        .await;
        assert_eq!(out.phases.len(), 1);
        match out.link {
            Err(ChainStop::Failed(Hop::Tcp, f)) => {
                assert_eq!(f.class, FailureClass::TcpRefused);
                assert_eq!(f.phase, Phase::Tcp);
            }
            other => panic!("expected a TCP failure, got {:?}", other.err()),
        }
    }
}

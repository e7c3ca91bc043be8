//! The reflector through a real NAT (three network namespaces made by the
//! test, see `common::nat`): the reflector server runs in the `server`
//! namespace, the idle probes and echo sessions in the `client` namespace,
//! and the `router` namespace forgets idle TCP flows after T.
//!
//! All traffic stays inside 10.200.N.0/24 between namespaces these tests
//! create. Every wait is bounded; a missing `ip`, `nft` or `conntrack` fails.

mod common;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{join_within, parse_conntrack_line, spawn_in, Certs, Nat, TimeoutMechanism, HUB_HOST};
use hubprobe::probe::tls::{TlsOptions, TrustSource, TrustStore};
use hubprobe::tune::reflector::{
    probe_idle, serve, server_tls_config, EchoSession, ReflectorConfig, ReflectorTarget,
};
use hubprobe::tune::IdleOutcome;
use tokio::sync::oneshot;

/// The NAT's idle timeout in the idle-probe tests.
const T: Duration = Duration::from_secs(6);
/// The probes' grace.
const GRACE: Duration = Duration::from_secs(2);
const CONNECT: Duration = Duration::from_secs(3);

/// The crate's reflector, serving in the server namespace on a thread of its
/// own; stopped (and joined, bounded) on drop. Declare it after the `Nat` so
/// it is dropped first.
struct Reflector {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl Reflector {
    fn start(nat: &Nat, tls: Option<Arc<rustls::ServerConfig>>) -> Reflector {
        let ip = nat.server_addr();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let thread = spawn_in(nat.server_ns(), move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind(SocketAddr::new(ip, 0)).await?;
                let _ = addr_tx.send(listener.local_addr()?);
                let cfg = ReflectorConfig {
                    reply_timeout: Duration::from_secs(30),
                    ..ReflectorConfig::default()
                };
                serve(listener, tls, cfg, async {
                    let _ = stop_rx.await;
                })
                .await
            })
        });
        let addr = addr_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the reflector starts listening in the server namespace");
        Reflector {
            addr,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    fn plain(nat: &Nat) -> Reflector {
        Reflector::start(nat, None)
    }

    fn target(&self) -> ReflectorTarget {
        ReflectorTarget::plain(self.addr)
    }
}

impl Drop for Reflector {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let result = join_within(thread, Duration::from_secs(10), "reflector shutdown");
            if !std::thread::panicking() {
                result.expect("reflector served without error");
            }
        }
    }
}

/// Runs `make()`'s future on a fresh runtime in the client namespace, waiting
/// for it (bounded by the future itself).
fn in_client<R, F, Fut>(nat: &Nat, make: F) -> R
where
    F: FnOnce() -> Fut + Send,
    Fut: Future<Output = R>,
    R: Send,
{
    nat.client_ns().run(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(make())
    })
}

/// Starts `make()`'s future on a thread in the client namespace without
/// waiting (for checks on the router while a probe is idle).
fn spawn_client<R, F, Fut>(nat: &Nat, make: F) -> JoinHandle<R>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = R>,
    R: Send + 'static,
{
    spawn_in(nat.client_ns(), move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(make())
    })
}

/// Polls the router (bounded by `limit`) until it holds an ESTABLISHED entry
/// for a flow from the client to `port`, and returns it.
fn wait_for_flow(nat: &Nat, port: u16, limit: Duration) -> common::CtEntry {
    let deadline = Instant::now() + limit;
    for _ in 0..1000 {
        if let Some(e) = nat
            .flows_to(port)
            .into_iter()
            .find(|e| e.state == "ESTABLISHED")
        {
            return e;
        }
        assert!(
            Instant::now() < deadline,
            "no ESTABLISHED flow to port {port} in the router within {limit:?}: {:?}",
            nat.conntrack_tcp()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    unreachable!("bounded by the deadline")
}

/// The flow entry proves the NAT is real: the client's flow, masqueraded to the
/// router's outside address, with the configured idle timeout ticking.
fn assert_nat_entry(nat: &Nat, e: &common::CtEntry, port: u16) {
    assert_eq!(e.orig_src, nat.client_addr(), "{e:?}");
    assert_eq!(e.orig_dst, nat.server_addr(), "{e:?}");
    assert_eq!(e.orig_dport, port, "{e:?}");
    assert_eq!(e.reply_src, nat.server_addr(), "{e:?}");
    assert_eq!(
        e.reply_dst,
        nat.masquerade_addr(),
        "the server must answer the router (masquerade): {e:?}"
    );
    let t = nat.idle_timeout();
    assert!(
        e.timeout <= t && e.timeout + Duration::from_secs(3) >= t,
        "the flow's remaining timeout {:?} is not the configured {t:?} (minus the \
         time since its last packet); the kernel default would be 432000 s: {e:?}",
        e.timeout
    );
}

#[test]
fn the_lab_sets_the_timeout_with_a_ct_timeout_object() {
    let nat = Nat::new(T);
    // This kernel supports the object; should that change, the lab falls back
    // to the per-namespace sysctl and this test says so.
    assert_eq!(nat.timeout_mechanism(), TimeoutMechanism::CtTimeoutObject);
    let rules = nat.router_ns().nft_list();
    assert!(rules.contains("established : 6"), "{rules}");
    assert!(rules.contains("ct state invalid drop"), "{rules}");
    assert!(rules.contains("masquerade"), "{rules}");

    let line = "tcp      6 5 ESTABLISHED src=10.200.250.2 dst=10.200.250.66 sport=59066 \
                dport=7000 src=10.200.250.66 dst=10.200.250.65 sport=7000 dport=59066 \
                [ASSURED] mark=0 use=1";
    let e = parse_conntrack_line(line).unwrap();
    assert_eq!(
        (e.state.as_str(), e.timeout, e.orig_dport, e.reply_dport),
        ("ESTABLISHED", Duration::from_secs(5), 7000, 59066)
    );
    assert!(e.assured);
    assert!(parse_conntrack_line("conntrack v1.4.7: 1 flow entries").is_none());
}

#[test]
fn idle_below_the_nat_timeout_survives() {
    let started = Instant::now();
    let nat = Nat::new(T);
    let reflector = Reflector::plain(&nat);
    let target = reflector.target();
    let idle = Duration::from_secs(3);
    let probe = spawn_client(&nat, move || async move {
        probe_idle(&target, idle, GRACE, CONNECT).await
    });
    std::thread::sleep(Duration::from_millis(800));
    let entry = wait_for_flow(&nat, reflector.addr.port(), Duration::from_secs(2));
    assert_nat_entry(&nat, &entry, reflector.addr.port());
    assert!(entry.assured, "{entry:?}");
    let out = join_within(probe, idle + GRACE * 2 + CONNECT * 2, "idle probe");
    assert_eq!(out, IdleOutcome::Survived);
    eprintln!(
        "survived through the NAT; test took {:?}",
        started.elapsed()
    );
}

#[test]
fn idle_above_the_nat_timeout_is_a_silent_drop() {
    let started = Instant::now();
    let nat = Nat::new(T);
    let reflector = Reflector::plain(&nat);
    let port = reflector.addr.port();
    let target = reflector.target();
    let idle = Duration::from_secs(9);
    let t0 = Instant::now();
    let probe = spawn_client(&nat, move || async move {
        probe_idle(&target, idle, GRACE, CONNECT).await
    });
    std::thread::sleep(Duration::from_millis(800));
    let entry = wait_for_flow(&nat, port, Duration::from_secs(2));
    assert_nat_entry(&nat, &entry, port);
    // T + 1.5 s after the OK, the router has forgotten the flow.
    std::thread::sleep(
        (t0 + T + Duration::from_millis(1500)).saturating_duration_since(Instant::now()),
    );
    let left: Vec<_> = nat
        .flows_to(port)
        .into_iter()
        .filter(|e| e.state == "ESTABLISHED")
        .collect();
    assert!(
        left.is_empty(),
        "the NAT still holds the idle flow: {left:?}"
    );
    let out = join_within(probe, idle + GRACE * 2 + CONNECT * 2, "idle probe");
    assert_eq!(out, IdleOutcome::SilentDrop);
    let took = t0.elapsed();
    assert!(took >= idle + GRACE * 2, "{took:?}");
    eprintln!(
        "silent drop through the NAT; test took {:?}",
        started.elapsed()
    );
}

#[test]
fn forgotten_flow_answered_with_reset_is_reset() {
    let started = Instant::now();
    let nat = Nat::new(T);
    nat.reset_on_invalid(true);
    let reflector = Reflector::plain(&nat);
    let target = reflector.target();
    let idle = Duration::from_secs(9);
    let out = in_client(&nat, move || async move {
        probe_idle(&target, idle, GRACE, CONNECT).await
    });
    assert_eq!(out, IdleOutcome::Reset);
    assert!(nat.router_ns().nft_list().contains("reject with tcp reset"));
    eprintln!("reset through the NAT; test took {:?}", started.elapsed());
}

#[test]
fn a_ladder_of_parallel_probes_brackets_the_nat_timeout() {
    let started = Instant::now();
    let nat = Nat::new(T);
    let reflector = Reflector::plain(&nat);
    let target = reflector.target();
    let ladder = [2u64, 4, 8, 10];
    let outcomes = in_client(&nat, move || async move {
        let mut tasks = Vec::new();
        for secs in ladder {
            let target = target.clone();
            tasks.push(tokio::spawn(async move {
                probe_idle(&target, Duration::from_secs(secs), GRACE, CONNECT).await
            }));
        }
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.expect("probe task"));
        }
        out
    });
    assert_eq!(
        outcomes,
        vec![
            IdleOutcome::Survived,
            IdleOutcome::Survived,
            IdleOutcome::SilentDrop,
            IdleOutcome::SilentDrop
        ],
        "idles {ladder:?} s against T = {T:?}"
    );
    eprintln!("ladder through the NAT; test took {:?}", started.elapsed());
}

#[test]
fn tls_reflector_through_the_nat() {
    let started = Instant::now();
    let certs = Certs::generate();
    let nat = Nat::new(T);
    let tls = server_tls_config(&certs.server.fullchain_pem, &certs.server.key_pem)
        .expect("server TLS config");
    let reflector = Reflector::start(&nat, Some(tls));
    let trust = TrustStore::load(TrustSource::None, &[certs.ca_pem().to_path_buf()]).unwrap();
    let mut opts = TlsOptions::new(HUB_HOST);
    opts.timeout = CONNECT;
    let target = ReflectorTarget::tls(reflector.addr, opts, Arc::new(trust));
    let (out, rtts) = in_client(&nat, move || async move {
        let out = probe_idle(&target, Duration::from_secs(2), GRACE, CONNECT).await;
        let mut session = EchoSession::open(&target, CONNECT)
            .await
            .expect("echo session");
        let mut rtts = Vec::new();
        for _ in 0..5 {
            rtts.push(session.echo(Duration::from_secs(2)).await);
        }
        (out, rtts)
    });
    assert_eq!(out, IdleOutcome::Survived);
    assert!(rtts.iter().all(Option::is_some), "{rtts:?}");
    eprintln!("TLS through the NAT; test took {:?}", started.elapsed());
}

// The echo session's socket belongs to the runtime that opened it, so each of
// these tests runs on one client runtime and switches the router's
// impairments from there (nft runs in the router namespace via `ip netns
// exec`, whichever namespace the calling thread is in).

#[test]
fn loss_loses_some_echo_samples() {
    let started = Instant::now();
    let nat = Nat::new(Duration::from_secs(60));
    let reflector = Reflector::plain(&nat);
    let target = reflector.target();
    let nat_ref = &nat;
    let (baseline, samples, drops, closed, recovered) = in_client(&nat, move || async move {
        let mut session = EchoSession::open(&target, CONNECT)
            .await
            .expect("echo session");
        let mut baseline = 0;
        for _ in 0..10 {
            baseline += usize::from(session.echo(Duration::from_secs(1)).await.is_some());
        }

        nat_ref.set_loss(30);
        let mut samples = Vec::new();
        for _ in 0..40 {
            samples.push(session.echo(Duration::from_millis(150)).await);
        }
        let drops = nat_ref.impairment_drops();
        let closed = session.closed_reason().map(str::to_string);

        nat_ref.set_loss(0);
        let mut recovered = false;
        for _ in 0..10 {
            if session.echo(Duration::from_secs(2)).await.is_some() {
                recovered = true;
                break;
            }
        }
        (baseline, samples, drops, closed, recovered)
    });
    assert_eq!(baseline, 10, "echoes must all come back before loss is on");
    let answered = samples.iter().filter(|s| s.is_some()).count();
    let lost = samples.len() - answered;
    eprintln!(
        "30 % loss: {answered} answered, {lost} lost of {}; {drops} packets dropped by the router",
        samples.len()
    );
    assert!(closed.is_none(), "the session broke: {closed:?}");
    assert!(lost >= 1, "30 % loss lost no sample: {samples:?}");
    assert!(answered >= 1, "30 % loss lost every sample: {samples:?}");
    assert!(drops >= 1, "the loss rule dropped nothing");
    assert!(
        recovered,
        "echoes did not come back after loss was switched off"
    );
    eprintln!("loss through the NAT; test took {:?}", started.elapsed());
}

#[test]
fn outage_stops_echoes_until_it_ends() {
    let started = Instant::now();
    let nat = Nat::new(Duration::from_secs(60));
    let reflector = Reflector::plain(&nat);
    let target = reflector.target();
    let nat_ref = &nat;
    let (before, during, drops, back_after, closed) = in_client(&nat, move || async move {
        let mut session = EchoSession::open(&target, CONNECT)
            .await
            .expect("echo session");
        let before = session.echo(Duration::from_secs(1)).await;

        nat_ref.outage(true);
        let mut during = Vec::new();
        for _ in 0..3 {
            during.push(session.echo(Duration::from_millis(500)).await);
        }
        let drops = nat_ref.impairment_drops();

        nat_ref.outage(false);
        let t = Instant::now();
        let mut back_after = None;
        for _ in 0..10 {
            if session.echo(Duration::from_millis(1500)).await.is_some() {
                back_after = Some(t.elapsed());
                break;
            }
        }
        let closed = session.closed_reason().map(str::to_string);
        (before, during, drops, back_after, closed)
    });
    assert!(before.is_some(), "echo before the outage");
    assert!(
        during.iter().all(Option::is_none),
        "echo during the outage: {during:?}"
    );
    assert!(drops >= 1, "the outage rule dropped nothing");
    let back_after =
        back_after.unwrap_or_else(|| panic!("no echo after the outage ended (closed: {closed:?})"));
    eprintln!(
        "echo back {back_after:?} after the outage ended; test took {:?}",
        started.elapsed()
    );
}

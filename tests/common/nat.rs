//! A real NAT made of three network namespaces the test creates itself:
//!
//! ```text
//!  client ns                router ns                         server ns
//!  c0 10.200.N.2/26 ── r0 10.200.N.1/26 | r1 10.200.N.65/26 ── s0 10.200.N.66/26
//!  default via .1           ip_forward=1, nftables:           (no route back to
//!                           masquerade out of r1,              the client subnet:
//!                           ct timeout established = T,        only NATed traffic
//!                           ct state invalid → drop            can be answered)
//! ```
//!
//! The router forgets an idle TCP flow after `T` (conntrack's established
//! timeout), and from then on the flow's packets are `ct state invalid` (with
//! `nf_conntrack_tcp_loose=0` a mid-stream packet cannot re-create the entry)
//! and are dropped — silently, like Azure's load balancer or a carrier NAT — or,
//! after [`Nat::reset_on_invalid`], answered with a TCP reset. The drop rule
//! sits in the `forward` hook (client → server packets and de-NATed server →
//! client packets) and in `input`: once the entry is gone, a server packet is
//! addressed to the router's own masquerade address and is no longer
//! forwarded, so without the `input` rule the router's own stack would answer
//! it with a reset.
//!
//! How `T` is set: an nftables `ct timeout` object (`policy = { established: T }`)
//! attached to every new TCP flow in `prerouting` (needs
//! `CONFIG_NF_CONNTRACK_TIMEOUT`; works on the 6.x kernels this was built on).
//! Should the kernel refuse the object, the lab falls back to the router
//! namespace's `net.netfilter.nf_conntrack_tcp_timeout_established` sysctl,
//! which is per network namespace (checked: setting it in the router leaves
//! the host's value alone). [`Nat::timeout_mechanism`] says which one is in
//! use. Either way `conntrack -L` in the router shows the remaining timeout
//! (≤ T) on the flow: see [`Nat::conntrack_tcp`].
//!
//! `N` differs per `Nat` (pid and a counter) so addresses are unique on the
//! host; interface names live only inside the namespaces (the veths are created
//! directly in them), so parallel tests never collide. Everything is deleted
//! on drop (deleting a namespace deletes its veth end, and with it the pair).
//!
//! Impairments, all nftables rules in the router's `forward` path:
//! [`Nat::set_loss`] (`numgen random mod 100 < p drop`), [`Nat::outage`]
//! (drop everything forwarded). Missing `ip`, `nft` or `conntrack` is a panic
//! with the package to install, never a skip.

use std::fs::File;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::netns::Netns;
use super::util::find_program;

static NEXT_NET: AtomicU32 = AtomicU32::new(0);

/// The nftables table the lab owns in the router namespace.
pub const NAT_TABLE: &str = "hubprobe_nat";

/// Bound on every command the lab runs.
const CMD_TIMEOUT: Duration = Duration::from_secs(10);

/// How the router's established-TCP timeout was set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutMechanism {
    /// An nftables `ct timeout` object applied to each new TCP flow.
    CtTimeoutObject,
    /// The router namespace's `nf_conntrack_tcp_timeout_established` sysctl.
    Sysctl,
}

/// One conntrack entry (`conntrack -L -p tcp` line) of the router.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CtEntry {
    /// TCP state (`ESTABLISHED`, `TIME_WAIT` ...).
    pub state: String,
    /// Remaining lifetime, whole seconds as conntrack prints it.
    pub timeout: Duration,
    /// Original direction (as the client sent it).
    pub orig_src: IpAddr,
    pub orig_dst: IpAddr,
    pub orig_sport: u16,
    pub orig_dport: u16,
    /// Reply direction (as the server answers: to the masquerade address).
    pub reply_src: IpAddr,
    pub reply_dst: IpAddr,
    pub reply_sport: u16,
    pub reply_dport: u16,
    /// `[ASSURED]`: traffic was seen both ways.
    pub assured: bool,
}

#[derive(Debug, Default, Clone, Copy)]
struct Impair {
    loss_percent: u8,
    outage: bool,
}

/// The client ⇄ router ⇄ server lab. See the module documentation.
pub struct Nat {
    client: Netns,
    router: Netns,
    server: Netns,
    net: u8,
    idle_timeout: Duration,
    mechanism: TimeoutMechanism,
    impair: Mutex<Impair>,
}

fn require(program: &str, package: &str) {
    assert!(
        find_program(program).is_some(),
        "{program} is not installed, and the NAT lab needs it: apt-get install {package} \
         (this test never skips)"
    );
}

impl Nat {
    /// Builds the three namespaces and the NAT, with the router forgetting an
    /// idle established TCP flow after `idle_timeout` (whole seconds, ≥ 1 s).
    /// Panics with the reason if anything fails (needs root).
    pub fn new(idle_timeout: Duration) -> Nat {
        require("ip", "iproute2");
        require("nft", "nftables");
        require("conntrack", "conntrack");
        let secs = idle_timeout.as_secs();
        assert!(
            secs >= 1 && idle_timeout.subsec_nanos() == 0,
            "the NAT timeout must be whole seconds (conntrack's granularity), got {idle_timeout:?}"
        );
        let n = NEXT_NET.fetch_add(1, Ordering::SeqCst);
        let net = ((std::process::id().wrapping_mul(7).wrapping_add(n)) % 250 + 1) as u8;

        let client = Netns::new();
        let router = Netns::new();
        let server = Netns::new();

        // veth pairs created from inside the router namespace, with the far end
        // placed straight into its namespace: no name ever exists on the host.
        run_ok(
            &router,
            &[
                "ip",
                "link",
                "add",
                "name",
                "r0",
                "type",
                "veth",
                "peer",
                "name",
                "c0",
                "netns",
                client.name(),
            ],
        );
        run_ok(
            &router,
            &[
                "ip",
                "link",
                "add",
                "name",
                "r1",
                "type",
                "veth",
                "peer",
                "name",
                "s0",
                "netns",
                server.name(),
            ],
        );
        let a = |host: u8| format!("10.200.{net}.{host}/26");
        for (ns, dev, addr) in [
            (&client, "c0", a(2)),
            (&router, "r0", a(1)),
            (&router, "r1", a(65)),
            (&server, "s0", a(66)),
        ] {
            run_ok(ns, &["ip", "addr", "add", &addr, "dev", dev]);
            run_ok(ns, &["ip", "link", "set", dev, "up"]);
        }
        run_ok(
            &client,
            &[
                "ip",
                "route",
                "add",
                "default",
                "via",
                &format!("10.200.{net}.1"),
            ],
        );

        sysctl_set(&router, "net/ipv4/ip_forward", "1");
        sysctl_set(&router, "net/netfilter/nf_conntrack_tcp_loose", "0");

        let mut nat = Nat {
            client,
            router,
            server,
            net,
            idle_timeout,
            mechanism: TimeoutMechanism::CtTimeoutObject,
            impair: Mutex::new(Impair::default()),
        };
        match nft_try(&nat.router, &nat.ruleset(true)) {
            Ok(()) => {}
            Err(why) => {
                eprintln!(
                    "NAT lab: nftables refused the ct timeout object ({}); using the \
                     router namespace's nf_conntrack_tcp_timeout_established sysctl",
                    why.trim()
                );
                sysctl_set(
                    &nat.router,
                    "net/netfilter/nf_conntrack_tcp_timeout_established",
                    &secs.to_string(),
                );
                nat.router.nft(&nat.ruleset(false));
                nat.mechanism = TimeoutMechanism::Sysctl;
            }
        }
        // Read back what the kernel holds, so a lab that is not what it
        // claims fails here rather than in a confusing probe result.
        assert_eq!(sysctl_get(&nat.router, "net/ipv4/ip_forward"), "1");
        assert_eq!(
            sysctl_get(&nat.router, "net/netfilter/nf_conntrack_tcp_loose"),
            "0"
        );
        let rules = nat.router.nft_list();
        assert!(rules.contains("masquerade"), "ruleset not loaded:\n{rules}");
        if nat.mechanism == TimeoutMechanism::CtTimeoutObject {
            assert!(
                rules.contains(&format!("established : {secs}")),
                "ct timeout policy not loaded:\n{rules}"
            );
        }
        nat
    }

    fn ruleset(&self, ct_timeout_object: bool) -> String {
        let t = self.idle_timeout.as_secs();
        let (object, apply) = if ct_timeout_object {
            (
                format!(
                    "ct timeout idle_flows {{ protocol tcp; l3proto ip; policy = {{ established: {t} }}; }}"
                ),
                "meta l4proto tcp ct state new ct timeout set \"idle_flows\"".to_string(),
            )
        } else {
            (String::new(), String::new())
        };
        format!(
            "table ip {NAT_TABLE} {{\n\
             {object}\n\
             chain impair {{\n}}\n\
             chain invalid {{\n ct state invalid drop\n}}\n\
             chain filter_prerouting {{\n type filter hook prerouting priority filter; policy accept;\n {apply}\n}}\n\
             chain filter_forward {{\n type filter hook forward priority filter; policy accept;\n jump impair\n jump invalid\n}}\n\
             chain filter_input {{\n type filter hook input priority filter; policy accept;\n jump invalid\n}}\n\
             chain nat_postrouting {{\n type nat hook postrouting priority srcnat; policy accept;\n oifname \"r1\" masquerade\n}}\n\
             }}\n"
        )
    }

    /// The client namespace (default route via the router).
    pub fn client_ns(&self) -> &Netns {
        &self.client
    }

    /// The router namespace (forwarding, NAT, conntrack, impairments).
    pub fn router_ns(&self) -> &Netns {
        &self.router
    }

    /// The server namespace (no route to the client: only NATed traffic works).
    pub fn server_ns(&self) -> &Netns {
        &self.server
    }

    /// The server's address (bind the server here, connect the client here).
    pub fn server_addr(&self) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 200, self.net, 66))
    }

    /// The client's own address.
    pub fn client_addr(&self) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 200, self.net, 2))
    }

    /// The router's outside address: what the server sees as the client's.
    pub fn masquerade_addr(&self) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 200, self.net, 65))
    }

    /// The configured idle timeout T.
    pub fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }

    /// How T was set.
    pub fn timeout_mechanism(&self) -> TimeoutMechanism {
        self.mechanism
    }

    /// Packets of forgotten flows: `true` answers TCP ones with a reset
    /// (`reject with tcp reset`), `false` drops them silently (the default).
    pub fn reset_on_invalid(&self, on: bool) {
        let action = if on {
            "add rule ip hubprobe_nat invalid ct state invalid meta l4proto tcp reject with tcp reset\n"
        } else {
            ""
        };
        self.router.nft(&format!(
            "flush chain ip {NAT_TABLE} invalid\n{action}add rule ip {NAT_TABLE} invalid ct state invalid drop\n"
        ));
    }

    /// Drops `percent` % of forwarded packets (both directions) at random;
    /// 0 switches loss off.
    pub fn set_loss(&self, percent: u8) {
        assert!(percent <= 100, "loss {percent} % > 100 %");
        let mut imp = self.impair.lock().unwrap();
        imp.loss_percent = percent;
        self.load_impair(*imp);
    }

    /// While on, every forwarded packet is dropped (a link outage); off restores.
    pub fn outage(&self, on: bool) {
        let mut imp = self.impair.lock().unwrap();
        imp.outage = on;
        self.load_impair(*imp);
    }

    fn load_impair(&self, imp: Impair) {
        let mut rules = format!("flush chain ip {NAT_TABLE} impair\n");
        if imp.outage {
            rules.push_str(&format!("add rule ip {NAT_TABLE} impair counter drop\n"));
        }
        if imp.loss_percent > 0 {
            rules.push_str(&format!(
                "add rule ip {NAT_TABLE} impair numgen random mod 100 < {} counter drop\n",
                imp.loss_percent
            ));
        }
        self.router.nft(&rules);
    }

    /// Packets dropped by the current impairment rules (their counters; they
    /// restart whenever [`Nat::set_loss`] or [`Nat::outage`] is called).
    pub fn impairment_drops(&self) -> u64 {
        let e = self.router.exec(
            &["nft", "list", "chain", "ip", NAT_TABLE, "impair"],
            CMD_TIMEOUT,
        );
        assert!(e.status.success(), "nft list chain failed: {}", e.stderr);
        let words: Vec<&str> = e.stdout.split_whitespace().collect();
        words
            .windows(2)
            .filter(|w| w[0] == "packets")
            .filter_map(|w| w[1].parse::<u64>().ok())
            .sum()
    }

    /// The router's TCP conntrack table (`conntrack -L -p tcp`).
    pub fn conntrack_tcp(&self) -> Vec<CtEntry> {
        let e = self
            .router
            .exec(&["conntrack", "-L", "-p", "tcp"], CMD_TIMEOUT);
        assert!(
            e.status.success() && !e.timed_out,
            "conntrack -L in the router failed ({}): {}",
            e.status,
            e.stderr
        );
        e.stdout.lines().filter_map(parse_conntrack_line).collect()
    }

    /// The router's entries for TCP flows from the client to `port` on the server.
    pub fn flows_to(&self, port: u16) -> Vec<CtEntry> {
        let (client, server) = (self.client_addr(), self.server_addr());
        self.conntrack_tcp()
            .into_iter()
            .filter(|c| c.orig_src == client && c.orig_dst == server && c.orig_dport == port)
            .collect()
    }
}

/// Parses one `conntrack -L` line such as
/// `tcp 6 5 ESTABLISHED src=.. dst=.. sport=.. dport=.. src=.. dst=.. sport=.. dport=.. [ASSURED] mark=0 use=1`.
pub fn parse_conntrack_line(line: &str) -> Option<CtEntry> {
    let words: Vec<&str> = line.split_whitespace().collect();
    if words.len() < 5 || words[0] != "tcp" {
        return None;
    }
    let timeout = Duration::from_secs(words[2].parse().ok()?);
    let state = words[3].to_string();
    let get = |key: &str, nth: usize| -> Option<&str> {
        words
            .iter()
            .filter_map(|w| w.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
            .nth(nth)
    };
    Some(CtEntry {
        state,
        timeout,
        orig_src: get("src", 0)?.parse().ok()?,
        orig_dst: get("dst", 0)?.parse().ok()?,
        orig_sport: get("sport", 0)?.parse().ok()?,
        orig_dport: get("dport", 0)?.parse().ok()?,
        reply_src: get("src", 1)?.parse().ok()?,
        reply_dst: get("dst", 1)?.parse().ok()?,
        reply_sport: get("sport", 1)?.parse().ok()?,
        reply_dport: get("dport", 1)?.parse().ok()?,
        assured: words.contains(&"[ASSURED]"),
    })
}

/// Runs a command inside `ns`, panicking with its output unless it succeeds.
fn run_ok(ns: &Netns, args: &[&str]) {
    let e = ns.exec(args, CMD_TIMEOUT);
    assert!(
        e.status.success() && !e.timed_out,
        "in {}: {args:?} failed ({}): {}",
        ns.name(),
        e.status,
        e.stderr.trim()
    );
}

/// Writes a sysctl of `ns` (`key` like `net/ipv4/ip_forward`) from a thread
/// inside it: `/proc/sys/net` shows the namespace of the thread that opens it.
fn sysctl_set(ns: &Netns, key: &str, value: &str) {
    let path = format!("/proc/sys/{key}");
    let value = value.to_string();
    ns.run(move || {
        std::fs::write(&path, value.as_bytes())
            .unwrap_or_else(|e| panic!("write {path} in the namespace: {e}"))
    });
}

/// Reads a sysctl of `ns` through a separate process in it (an independent
/// check of what [`sysctl_set`] did).
fn sysctl_get(ns: &Netns, key: &str) -> String {
    let path = format!("/proc/sys/{key}");
    let e = ns.exec(&["cat", &path], CMD_TIMEOUT);
    assert!(
        e.status.success(),
        "cat {path} in {}: {}",
        ns.name(),
        e.stderr
    );
    e.stdout.trim().to_string()
}

/// `nft -f -` inside `ns`, returning nft's complaint instead of panicking.
fn nft_try(ns: &Netns, ruleset: &str) -> Result<(), String> {
    let nft = find_program("nft").expect("nft checked in Nat::new");
    let mut child = ns
        .command(nft.to_str().expect("utf-8 path"))
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run nft: {e}"))?;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(ruleset.as_bytes())
        .map_err(|e| format!("write ruleset: {e}"))?;
    let deadline = Instant::now() + CMD_TIMEOUT;
    for _ in 0..100_000 {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            let out = child.wait_with_output().map_err(|e| e.to_string())?;
            return if status.success() {
                Ok(())
            } else {
                Err(String::from_utf8_lossy(&out.stderr).into_owned())
            };
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err("nft timed out".into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Err("nft did not finish".into())
}

/// Runs `f` on a new, detached thread that has entered `ns` (unlike
/// [`Netns::run`], which waits for `f`). Use it for servers that must keep
/// running while the test does other things; stop them before the namespace
/// is dropped.
pub fn spawn_in<R, F>(ns: &Netns, f: F) -> JoinHandle<R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    let file =
        File::open(ns.path()).unwrap_or_else(|e| panic!("open {}: {e}", ns.path().display()));
    std::thread::spawn(move || {
        // SAFETY: setns(2) on a valid namespace fd; affects only this thread.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns failed: {}", std::io::Error::last_os_error());
        drop(file);
        f()
    })
}

/// Joins `handle`, waiting at most `limit`; panics if the thread is still
/// running then (or panicked).
pub fn join_within<R>(handle: JoinHandle<R>, limit: Duration, what: &str) -> R {
    let deadline = Instant::now() + limit;
    for _ in 0..1_000_000 {
        if handle.is_finished() {
            return handle
                .join()
                .unwrap_or_else(|e| std::panic::resume_unwind(e));
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not finish within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("{what} did not finish");
}

/// A program started inside a namespace (`ip netns exec` execs it, so killing the
/// child kills the program), killed on drop; keeps its config directory alive.
pub struct InNs {
    child: std::process::Child,
    _dir: Option<tempfile::TempDir>,
}

impl Drop for InNs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits (bounded: 100 × 50 ms) until something listens on TCP `port` in `ns`.
pub fn wait_listening(ns: &Netns, port: u16) {
    for _ in 0..100 {
        let out = ns
            .command("ss")
            .args(["-Htln", &format!("sport = :{port}")])
            .output()
            .expect("ss (iproute2)");
        if !String::from_utf8_lossy(&out.stdout).trim().is_empty() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("nothing listens on port {port} in {}", ns.name());
}

impl Nat {
    /// Starts mosquitto in the server namespace on `port` of the server address
    /// (anonymous, replies without Nagle delay).
    pub fn start_mosquitto(&self, port: u16) -> InNs {
        let bin =
            find_program("mosquitto").expect("mosquitto not installed: apt-get install mosquitto");
        let dir = tempfile::tempdir().expect("temp dir");
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} {}\nallow_anonymous true\nset_tcp_nodelay true\nuser root\n\
                 persistence false\nlog_dest stderr\n",
                self.server_addr()
            ),
        )
        .expect("write mosquitto.conf");
        let child = self
            .server_ns()
            .command(bin.to_str().expect("UTF-8 path"))
            .args(["-c", conf.to_str().expect("UTF-8 path")])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start mosquitto in the server namespace");
        let started = InNs {
            child,
            _dir: Some(dir),
        };
        wait_listening(self.server_ns(), port);
        started
    }

    /// Starts mosquitto in the server namespace with one anonymous MQTT-over-TLS
    /// listener per `(address, port)`, serving `certfile` / `keyfile` (PEM).
    pub fn start_mosquitto_tls(
        &self,
        listeners: &[(IpAddr, u16)],
        certfile: &std::path::Path,
        keyfile: &std::path::Path,
    ) -> InNs {
        let bin =
            find_program("mosquitto").expect("mosquitto not installed: apt-get install mosquitto");
        let dir = tempfile::tempdir().expect("temp dir");
        let conf = dir.path().join("mosquitto.conf");
        let mut text = String::from(
            "per_listener_settings true\nuser root\npersistence false\nlog_dest stderr\n\
             set_tcp_nodelay true\n",
        );
        for (addr, port) in listeners {
            let domain = if addr.is_ipv6() { "ipv6" } else { "ipv4" };
            text.push_str(&format!(
                "listener {port} {addr}\nsocket_domain {domain}\nallow_anonymous true\n\
                 certfile {}\nkeyfile {}\n",
                certfile.display(),
                keyfile.display()
            ));
        }
        std::fs::write(&conf, text).expect("write mosquitto.conf");
        let child = self
            .server_ns()
            .command(bin.to_str().expect("UTF-8 path"))
            .args(["-c", conf.to_str().expect("UTF-8 path")])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start mosquitto in the server namespace");
        let started = InNs {
            child,
            _dir: Some(dir),
        };
        for (_, port) in listeners {
            wait_listening(self.server_ns(), *port);
        }
        started
    }

    /// Starts `hubprobe reflect` (the binary at `bin`) in the server namespace on
    /// `port` of the server address.
    pub fn start_reflector(&self, bin: &str, port: u16) -> InNs {
        let child = self
            .server_ns()
            .command(bin)
            .args([
                "reflect",
                "--listen",
                &format!("{}:{port}", self.server_addr()),
            ])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start hubprobe reflect in the server namespace");
        let started = InNs { child, _dir: None };
        wait_listening(self.server_ns(), port);
        started
    }
}

//! A private network namespace for a test, with nftables inside it.
//!
//! The namespace has only its own loopback (brought up), so nothing inside it
//! can reach anything outside unless a test wires it (veth etc.) itself.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::util::find_program;

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// Outcome of [`Netns::exec`].
#[derive(Debug)]
pub struct Exec {
    /// Exit status (after our kill, if it timed out).
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    /// True if the lab killed it at the deadline.
    pub timed_out: bool,
    pub elapsed: Duration,
}

/// `hp-<pid>-<n>`, deleted on drop.
pub struct Netns {
    name: String,
    ip: PathBuf,
}

fn ip_bin() -> PathBuf {
    find_program("ip").unwrap_or_else(|| panic!("ip not installed: apt-get install iproute2"))
}

fn run_checked(cmd: &mut Command, what: &str) -> std::process::Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"))
}

impl Netns {
    /// Creates the namespace and brings `lo` up in it. Panics with the reason
    /// if that fails (it needs root / CAP_SYS_ADMIN).
    pub fn new() -> Netns {
        let ip = ip_bin();
        let name = format!(
            "hp-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        let mut out = run_checked(
            Command::new(&ip).args(["netns", "add", &name]),
            "ip netns add",
        );
        if !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("exists") {
            // A stale namespace from an earlier run with the same pid.
            let _ = run_checked(
                Command::new(&ip).args(["netns", "del", &name]),
                "ip netns del",
            );
            out = run_checked(
                Command::new(&ip).args(["netns", "add", &name]),
                "ip netns add",
            );
        }
        assert!(
            out.status.success(),
            "`ip netns add {name}` failed ({}): {} -- network-namespace tests need root \
             (CAP_SYS_ADMIN); run them as root (CI does)",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        let ns = Netns { name, ip };
        let up = run_checked(
            Command::new(&ns.ip).args(["-n", &ns.name, "link", "set", "lo", "up"]),
            "ip link set lo up",
        );
        assert!(
            up.status.success(),
            "bringing lo up in {} failed: {}",
            ns.name,
            String::from_utf8_lossy(&up.stderr)
        );
        ns
    }

    /// The namespace name (`hp-<pid>-<n>`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/run/netns/<name>`.
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// A `Command` running `program` inside the namespace (`ip netns exec`).
    /// The caller bounds it (or use [`Netns::exec`]).
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new(&self.ip);
        c.args(["netns", "exec", &self.name, program]);
        // A hubprobe started here never asks a public NTP server (a test that wants
        // the clock check names its server with --ntp-server).
        c.env("HUBPROBE_NTP_SERVER", "none");
        c
    }

    /// Runs `args` inside the namespace, killing it after `timeout`.
    pub fn exec(&self, args: &[&str], timeout: Duration) -> Exec {
        assert!(!args.is_empty(), "exec needs a program");
        let started = Instant::now();
        let mut child = self
            .command(args[0])
            .args(&args[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("ip netns exec {} {args:?}: {e}", self.name));
        let mut so = child.stdout.take().expect("stdout");
        let mut se = child.stderr.take().expect("stderr");
        let t_out = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = so.read_to_string(&mut s);
            s
        });
        let t_err = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = se.read_to_string(&mut s);
            s
        });
        let deadline = started + timeout;
        let mut timed_out = false;
        let mut status = None;
        for _ in 0..1_000_000 {
            if let Ok(Some(s)) = child.try_wait() {
                status = Some(s);
                break;
            }
            if Instant::now() >= deadline {
                timed_out = true;
                let _ = child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let status = match status {
            Some(s) => s,
            None => child.wait().expect("wait for exec child"),
        };
        Exec {
            status,
            stdout: t_out.join().unwrap_or_default(),
            stderr: t_err.join().unwrap_or_default(),
            timed_out,
            elapsed: started.elapsed(),
        }
    }

    /// Loads an nftables ruleset inside the namespace (`nft -f -`); panics
    /// with nft's message if it is rejected.
    pub fn nft(&self, ruleset: &str) {
        let nft = find_program("nft")
            .unwrap_or_else(|| panic!("nft not installed: apt-get install nftables"));
        let mut child = Command::new(&self.ip)
            .args(["netns", "exec", &self.name])
            .arg(&nft)
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("run nft in {}: {e}", self.name));
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(ruleset.as_bytes())
            .expect("write ruleset");
        let out = child.wait_with_output().expect("wait for nft");
        assert!(
            out.status.success(),
            "nft -f - in {} failed ({}): {}\n--- ruleset ---\n{ruleset}",
            self.name,
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The current ruleset inside the namespace (`nft list ruleset`).
    pub fn nft_list(&self) -> String {
        let e = self.exec(&["nft", "list", "ruleset"], Duration::from_secs(5));
        e.stdout
    }

    /// Black-holes TCP to 127.0.0.1:`port` and [::1]:`port` inside the
    /// namespace: SYNs are dropped on output, so a connect times out instead
    /// of being refused. Can be called for several ports.
    pub fn blackhole_tcp(&self, port: u16) {
        self.nft(&format!(
            "add table inet hubprobe_blackhole\n\
             add chain inet hubprobe_blackhole output \
             {{ type filter hook output priority 0; policy accept; }}\n\
             add rule inet hubprobe_blackhole output \
             ip daddr 127.0.0.1 tcp dport {port} tcp flags & (syn | ack) == syn drop\n\
             add rule inet hubprobe_blackhole output \
             ip6 daddr ::1 tcp dport {port} tcp flags & (syn | ack) == syn drop\n"
        ));
    }

    /// Runs `f` on a fresh thread that has entered the namespace (setns), so
    /// every socket `f` creates lives there. Build a tokio runtime inside `f`
    /// for async code. Panics in `f` propagate.
    pub fn run<R, F>(&self, f: F) -> R
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        let file = File::open(self.path())
            .unwrap_or_else(|e| panic!("open {}: {e}", self.path().display()));
        std::thread::scope(|scope| {
            let handle = scope.spawn(move || {
                // SAFETY: setns(2) on a valid namespace fd; affects only this thread.
                let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(
                    rc,
                    0,
                    "setns into {:?} failed: {}",
                    file,
                    std::io::Error::last_os_error()
                );
                drop(file);
                f()
            });
            handle
                .join()
                .unwrap_or_else(|e| std::panic::resume_unwind(e))
        })
    }
}

impl Default for Netns {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new(&self.ip)
            .args(["netns", "del", &self.name])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

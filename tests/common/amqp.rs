//! AMQP 1.0 peers of the lab.
//!
//! * [`RabbitMq`] — one real RabbitMQ node (Debian `rabbitmq-server`, its
//!   `rabbitmq_amqp1_0` plugin) per test binary, on free loopback ports, in a
//!   temporary directory with its own Erlang cookie and its own `epmd`; plain AMQP
//!   and AMQP over TLS with the lab's server certificate; SASL PLAIN for
//!   [`RABBIT_USER`] and ANONYMOUS (mapped to that user). It starts once (it takes
//!   some seconds) and stops when the test process exits.
//! * [`CbsPeer`] — a claims-based-security node scripted with Apache Qpid Proton
//!   (`tests/support/cbs_peer.py`, Debian `python3-qpid-proton`, run with
//!   /usr/bin/python3): put-token accepted (202) or refused (401), the device's
//!   events address attachable only after an accepted token.
//! * [`WsBridge`] — websockify (Debian) in front of either, serving WebSocket over
//!   TLS and answering the subprotocol `AMQPWSB10` (`tests/support/ws_bridge.py`).
//!
//! A missing program is a panic, never a skip.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::certs::Certs;
use super::util::{find_program, free_ports, wait_for_tcp};

/// The RabbitMQ user (SASL PLAIN, and what ANONYMOUS maps to).
pub const RABBIT_USER: &str = "device1";
/// Its password.
pub const RABBIT_PASSWORD: &str = "lab-rabbit-pass-7Hq2";

/// Start-up bound for the broker (an Erlang VM on a loaded 2-core machine).
const RABBIT_START: Duration = Duration::from_secs(90);

/// The shared RabbitMQ node.
pub struct RabbitMq {
    /// Plain AMQP (0-9-1 and 1.0 on one port).
    pub amqp: SocketAddr,
    /// AMQP over TLS.
    pub amqps: SocketAddr,
    /// The lab PKI whose server certificate the TLS listener uses.
    pub certs: Certs,
    /// The node's directory (logs under `log/`).
    pub dir: PathBuf,
}

struct Children {
    server: u32,
    epmd: u32,
    dir: PathBuf,
}

static CHILDREN: OnceLock<Children> = OnceLock::new();

extern "C" fn stop_rabbit() {
    let Some(c) = CHILDREN.get() else { return };
    // SIGTERM to the start script runs its trap: a graceful stop of the VM.
    unsafe {
        libc::kill(c.server as i32, libc::SIGTERM);
    }
    // Its keeper thread reaps it; signal 0 fails once it is gone.
    let deadline = Instant::now() + Duration::from_secs(20);
    for _ in 0..400 {
        let gone = unsafe { libc::kill(c.server as i32, 0) } != 0;
        if gone || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    unsafe {
        libc::kill(c.epmd as i32, libc::SIGTERM);
    }
    let _ = std::fs::remove_dir_all(&c.dir);
}

/// The children die with the thread that spawned them (PR_SET_PDEATHSIG), so each
/// is spawned from a thread that waits for it (and so lives as long as it does).
/// Returns its process id.
fn spawn_kept(mut cmd: Command) -> u32 {
    use std::os::unix::process::CommandExt;
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || match cmd.spawn() {
        Ok(mut child) => {
            let _ = tx.send(Ok(child.id()));
            let _ = child.wait();
        }
        Err(e) => {
            let _ = tx.send(Err(e));
        }
    });
    rx.recv()
        .expect("spawner thread")
        .expect("spawn a lab peer")
}

impl RabbitMq {
    /// The test binary's node, started on first use.
    pub fn shared() -> &'static RabbitMq {
        static NODE: OnceLock<RabbitMq> = OnceLock::new();
        NODE.get_or_init(RabbitMq::start)
    }

    fn start() -> RabbitMq {
        let server_script = Path::new("/usr/lib/rabbitmq/bin/rabbitmq-server");
        assert!(
            server_script.is_file(),
            "rabbitmq-server is not installed (Debian package rabbitmq-server, see scripts/test.sh)"
        );
        let epmd_bin = find_program("epmd")
            .expect("epmd not found (Debian package erlang-base, a dependency of rabbitmq-server)");
        let certs = Certs::generate();
        let dir = std::env::temp_dir().join(format!("hubprobe-rabbit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for sub in ["home", "mnesia", "log"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        let cookie = dir.join("home/.erlang.cookie");
        std::fs::write(&cookie, format!("hubprobe-lab-{}", std::process::id())).unwrap();
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&cookie, std::fs::Permissions::from_mode(0o400)).unwrap();
        }
        let ports = free_ports(4);
        let (amqp, amqps, dist, epmd_port) = (ports[0], ports[1], ports[2], ports[3]);
        let conf = dir.join("rabbitmq.conf");
        std::fs::write(
            &conf,
            format!(
                "listeners.tcp.default = 127.0.0.1:{amqp}\n\
                 listeners.ssl.default = 127.0.0.1:{amqps}\n\
                 ssl_options.cacertfile = {ca}\n\
                 ssl_options.certfile = {cert}\n\
                 ssl_options.keyfile = {key}\n\
                 ssl_options.verify = verify_none\n\
                 ssl_options.fail_if_no_peer_cert = false\n\
                 loopback_users = none\n\
                 default_user = {RABBIT_USER}\n\
                 default_pass = {RABBIT_PASSWORD}\n\
                 amqp1_0.default_user = {RABBIT_USER}\n\
                 log.console = false\n\
                 log.file.level = info\n",
                ca = certs.ca_pem().display(),
                cert = certs.server.cert_pem.display(),
                key = certs.server.key_pem.display(),
            ),
        )
        .unwrap();
        let plugins = dir.join("enabled_plugins");
        std::fs::write(&plugins, "[rabbitmq_amqp1_0].\n").unwrap();

        let mut epmd = Command::new(epmd_bin);
        epmd.args(["-port", &epmd_port.to_string()])
            .env("ERL_EPMD_ADDRESS", "127.0.0.1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let epmd = spawn_kept(epmd);
        assert!(
            wait_for_tcp(
                SocketAddr::from(([127, 0, 0, 1], epmd_port)),
                Duration::from_secs(20)
            ),
            "epmd did not listen on port {epmd_port}"
        );

        let out = std::fs::File::create(dir.join("server.out")).unwrap();
        let mut server = Command::new(server_script);
        server
            .env("HOME", dir.join("home"))
            .env(
                "RABBITMQ_NODENAME",
                format!("hubprobe{}@localhost", std::process::id()),
            )
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", amqp.to_string())
            .env("RABBITMQ_DIST_PORT", dist.to_string())
            .env("ERL_EPMD_PORT", epmd_port.to_string())
            .env("ERL_EPMD_ADDRESS", "127.0.0.1")
            .env(
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS",
                "-kernel inet_dist_use_interface {127,0,0,1}",
            )
            .env("RABBITMQ_MNESIA_BASE", dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", dir.join("log"))
            .env("RABBITMQ_CONFIG_FILE", &conf)
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", &plugins)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        let server = spawn_kept(server);
        let _ = CHILDREN.set(Children {
            server,
            epmd,
            dir: dir.clone(),
        });
        unsafe {
            libc::atexit(stop_rabbit);
        }
        let node = RabbitMq {
            amqp: SocketAddr::from(([127, 0, 0, 1], amqp)),
            amqps: SocketAddr::from(([127, 0, 0, 1], amqps)),
            certs,
            dir,
        };
        // The TLS listener opens last, after the plugins.
        let up = wait_for_tcp(node.amqps, RABBIT_START) && wait_for_tcp(node.amqp, RABBIT_START);
        assert!(
            up,
            "RabbitMQ did not listen within {RABBIT_START:?}; its output:\n{}",
            std::fs::read_to_string(node.dir.join("server.out")).unwrap_or_default()
        );
        node
    }
}

fn support(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/support")
        .join(name)
}

fn python() -> PathBuf {
    let p = PathBuf::from("/usr/bin/python3");
    assert!(p.is_file(), "/usr/bin/python3 is missing (Debian python3)");
    p
}

/// A process killed (by its id) and reaped on drop.
struct Owned(Child);

impl Drop for Owned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits (bounded) for a peer to write its port to `file`.
fn port_from(file: &Path, child: &mut Child, what: &str) -> u16 {
    let deadline = Instant::now() + Duration::from_secs(30);
    for _ in 0..3000 {
        if let Ok(s) = std::fs::read_to_string(file) {
            if let Ok(p) = s.trim().parse() {
                return p;
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited ({status}) before listening");
        }
        assert!(Instant::now() < deadline, "{what} did not listen in time");
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("{what} did not listen in time")
}

/// What the CBS node answers to put-token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CbsMode {
    /// 202 for a SAS token.
    Accept,
    /// 401 always.
    Refuse,
}

/// The Proton CBS node.
pub struct CbsPeer {
    _child: Owned,
    _dir: tempfile::TempDir,
    /// Its address.
    pub addr: SocketAddr,
}

impl CbsPeer {
    /// Starts the node in `mode`, over TLS with the lab's server certificate when
    /// `tls` is given.
    pub fn start(mode: CbsMode, tls: Option<&Certs>) -> CbsPeer {
        let dir = tempfile::tempdir().unwrap();
        let port_file = dir.path().join("port");
        let mut cmd = Command::new(python());
        cmd.arg(support("cbs_peer.py"))
            .arg(&port_file)
            .arg(match mode {
                CbsMode::Accept => "accept",
                CbsMode::Refuse => "refuse",
            });
        if let Some(c) = tls {
            cmd.arg(&c.server.fullchain_pem).arg(&c.server.key_pem);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the Proton CBS peer");
        let port = port_from(
            &port_file,
            &mut child,
            "the Proton CBS peer (python3-qpid-proton)",
        );
        CbsPeer {
            _child: Owned(child),
            _dir: dir,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }
}

/// websockify in front of an AMQP peer: WebSocket over TLS, subprotocol `AMQPWSB10`.
pub struct WsBridge {
    _child: Owned,
    /// Its address.
    pub addr: SocketAddr,
}

impl WsBridge {
    /// Serves `wss://` with the lab's server certificate, forwarding to `target`.
    pub fn start(certs: &Certs, target: SocketAddr) -> WsBridge {
        let port = free_ports(1)[0];
        let child = Command::new(python())
            .arg(support("ws_bridge.py"))
            .arg(port.to_string())
            .arg(target.to_string())
            .arg(&certs.server.fullchain_pem)
            .arg(&certs.server.key_pem)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start websockify");
        let child = Owned(child);
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        assert!(
            wait_for_tcp(addr, Duration::from_secs(30)),
            "websockify (Debian websockify) did not listen on {addr}"
        );
        WsBridge {
            _child: child,
            addr,
        }
    }
}

//! The real mosquitto broker as the hub stand-in.
//!
//! Quirks of Debian's mosquitto 2.0.11 that this file works around:
//! * A `protocol websockets` listener (libwebsockets 4.1) ignores the bind
//!   address and listens on `*` (all interfaces, v4+v6) unless the listener
//!   also says `socket_domain ipv4`; with it, it binds 127.0.0.1 only. Every
//!   listener here says `socket_domain ipv4`.
//! * mosquitto refuses to start when it has only websockets listeners ("Unable
//!   to start any listening sockets"); not an issue here (plain MQTT listeners
//!   exist too), but keep it in mind when trimming the config.
//! * Started as root, mosquitto drops privileges to user `mosquitto`, which
//!   cannot read the private temp dir; the config says `user root` (ignored
//!   when not started as root).
//! * A wrong password (or none, on a listener with `allow_anonymous false`)
//!   gets CONNACK return code 5 (not authorised), never 4 (bad user name or
//!   password).

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream as StdTcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::certs::{Certs, HUB_HOST};
use super::util::{find_program, free_ports};

/// `api-version` used in hub-style user names.
pub const API_VERSION: &str = "2021-04-12";

/// Listener names, in the order their ports are allocated.
///
/// * `tls` — the hub stand-in (like IoT Hub's 8883): good cert, password file, no anonymous.
/// * `wss` — MQTT over WebSockets over TLS, good cert, password file, no anonymous.
/// * `plain` — plain MQTT, anonymous allowed.
/// * `tls_anon` — TLS with the good cert, anonymous allowed.
/// * `tls_expired`, `tls_wrongname`, `tls_otherca`, `tls_notyet` — TLS serving the
///   bad certificates of [`Certs`], anonymous allowed.
/// * `mtls` — TLS requiring a client certificate from the test CA; the
///   certificate CN becomes the user name (`use_identity_as_username`).
pub const LISTENERS: [&str; 9] = [
    "tls",
    "wss",
    "plain",
    "tls_anon",
    "tls_expired",
    "tls_wrongname",
    "tls_otherca",
    "tls_notyet",
    "mtls",
];

const READY_TIMEOUT: Duration = Duration::from_secs(10);
const STOP_TIMEOUT: Duration = Duration::from_secs(3);
const START_ATTEMPTS: usize = 4;

/// IoT-Hub-style MQTT user name: `hub.hubprobe.test/<device>/?api-version=2021-04-12`.
pub fn hub_username(device: &str) -> String {
    format!("{HUB_HOST}/{device}/?api-version={API_VERSION}")
}

/// A SAS-token-shaped password for `device` (spaces, `/`, `%`, `&`, `=`; about
/// 150 characters). Not a real signature: mosquitto only compares strings.
pub fn hub_password(device: &str) -> String {
    format!(
        "SharedAccessSignature sr={HUB_HOST}%2Fdevices%2F{device}\
         &sig=q3ZfL0p%2Bk8Vx2mN7rT4wYb6cH1sJ9dE5gA0uI%2FoPzW%3D&se=4102444800"
    )
}

/// A running mosquitto with the lab's listeners, killed on drop.
pub struct Mosquitto {
    certs: Certs,
    dir: TempDir,
    bin: PathBuf,
    conf_path: PathBuf,
    log_path: PathBuf,
    passwd_path: PathBuf,
    ports: Vec<(&'static str, u16)>,
    child: Option<Child>,
    persistent: bool,
}

fn mosquitto_bin() -> PathBuf {
    find_program("mosquitto").unwrap_or_else(|| {
        panic!("mosquitto not installed: apt-get install mosquitto (looked in sbin/bin dirs and $PATH)")
    })
}

fn write_password_file(path: &Path, users: &[(String, String)]) {
    File::create(path).expect("create password file");
    if users.is_empty() {
        return;
    }
    let tool = find_program("mosquitto_passwd")
        .unwrap_or_else(|| panic!("mosquitto_passwd not installed: apt-get install mosquitto"));
    for (user, pass) in users {
        assert!(
            !user.is_empty() && !user.contains([':', '\n', '\r']),
            "mosquitto user names cannot be empty or contain ':' or newlines: {user:?}"
        );
        assert!(
            !pass.contains(['\n', '\r']),
            "mosquitto passwords cannot contain newlines (user {user:?})"
        );
        let out = Command::new(&tool)
            .arg("-b")
            .arg(path)
            .arg(user)
            .arg(pass)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", tool.display()));
        assert!(
            out.status.success(),
            "mosquitto_passwd -b failed for user {user:?}: {}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let written = fs::read_to_string(path).expect("read password file");
    assert_eq!(
        written.lines().filter(|l| !l.trim().is_empty()).count(),
        users.len(),
        "password file has an unexpected number of entries:\n{written}"
    );
}

/// Whether a start-up failure was a port taken by someone else meanwhile
/// (the small race of picking free ports); then a retry makes sense.
fn port_clash(log: &str) -> bool {
    log.contains("Address already in use") || log.contains("Unable to create websockets listener")
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("temp paths are UTF-8")
}

fn read_from(path: &Path, offset: u64) -> String {
    let mut text = String::new();
    if let Ok(mut f) = File::open(path) {
        if f.seek(SeekFrom::Start(offset)).is_ok() {
            let mut bytes = Vec::new();
            let _ = f.read_to_end(&mut bytes);
            text = String::from_utf8_lossy(&bytes).into_owned();
        }
    }
    text
}

impl Mosquitto {
    /// Starts the broker with a freshly generated PKI (see [`Mosquitto::certs`])
    /// and the given user name / password pairs for the `tls` and `wss`
    /// listeners. Panics (with the broker log) if it does not come up.
    pub fn start(users: &[(String, String)]) -> Mosquitto {
        Self::start_with_certs(&Certs::generate(), users)
    }

    /// Like [`Mosquitto::start`] but serving certificates from `certs`.
    /// [`Mosquitto::start`] with persistence on (in its temp dir): sessions and
    /// queued QoS 1 messages of `clean_session = false` clients survive
    /// [`Mosquitto::stop`] / [`Mosquitto::start_again`].
    pub fn start_persistent(users: &[(String, String)]) -> Mosquitto {
        Self::start_inner(&Certs::generate(), users, true)
    }

    pub fn start_with_certs(certs: &Certs, users: &[(String, String)]) -> Mosquitto {
        Self::start_inner(certs, users, false)
    }

    fn start_inner(certs: &Certs, users: &[(String, String)], persistent: bool) -> Mosquitto {
        let bin = mosquitto_bin();
        let dir = tempfile::Builder::new()
            .prefix("hubprobe-mosquitto-")
            .tempdir()
            .expect("create temp dir for mosquitto");
        let passwd_path = dir.path().join("passwd");
        write_password_file(&passwd_path, users);
        let mut m = Mosquitto {
            certs: certs.clone(),
            conf_path: dir.path().join("mosquitto.conf"),
            log_path: dir.path().join("mosquitto.log"),
            passwd_path,
            dir,
            bin,
            ports: Vec::new(),
            child: None,
            persistent,
        };
        let mut last_error = String::new();
        for attempt in 1..=START_ATTEMPTS {
            let ports = free_ports(LISTENERS.len());
            m.ports = LISTENERS.iter().copied().zip(ports).collect();
            fs::write(&m.conf_path, m.config()).expect("write mosquitto.conf");
            match m.spawn_and_wait() {
                Ok(()) => return m,
                Err(e) if port_clash(&e) && attempt < START_ATTEMPTS => {
                    last_error = e;
                }
                Err(e) => {
                    last_error = e;
                    break;
                }
            }
        }
        panic!(
            "mosquitto did not start: {last_error}\n--- config {} ---\n{}\n--- log {} ---\n{}",
            m.conf_path.display(),
            fs::read_to_string(&m.conf_path).unwrap_or_default(),
            m.log_path.display(),
            m.log()
        );
    }

    fn config(&self) -> String {
        let c = &self.certs;
        let passwd = path_str(&self.passwd_path);
        let tls = |id: &super::certs::Identity| {
            format!(
                "certfile {}\nkeyfile {}\n",
                path_str(&id.cert_pem),
                path_str(&id.key_pem)
            )
        };
        let mut conf = format!(
            "# generated by the hubprobe test lab (tests/common/mosquitto.rs)\n\
             per_listener_settings true\n\
             user root\n\
             persistence {}\n\
             log_dest stderr\n\
             log_type all\n\
             log_timestamp true\n\
             connection_messages true\n\
             # Answer without waiting for the client's delayed ACK (IoT Hub does too);\n\
             # mosquitto's default (Nagle on) adds ~40 ms to every small reply.\n\
             set_tcp_nodelay true\n",
            if self.persistent { "true" } else { "false" },
        );
        if self.persistent {
            conf.push_str(&format!(
                "persistence_location {}/\n",
                path_str(self.dir.path())
            ));
        }
        for &(name, port) in &self.ports {
            conf.push_str(&format!(
                "\n# {name}\nlistener {port} 127.0.0.1\nsocket_domain ipv4\n"
            ));
            let body = match name {
                "tls" => format!(
                    "{}password_file {passwd}\nallow_anonymous false\n",
                    tls(&c.server)
                ),
                "wss" => format!(
                    "protocol websockets\n{}password_file {passwd}\nallow_anonymous false\n",
                    tls(&c.server)
                ),
                "plain" => "allow_anonymous true\n".to_string(),
                "tls_anon" => format!("{}allow_anonymous true\n", tls(&c.server)),
                "tls_expired" => format!("{}allow_anonymous true\n", tls(&c.expired)),
                "tls_wrongname" => format!("{}allow_anonymous true\n", tls(&c.wrong_name)),
                "tls_otherca" => format!("{}allow_anonymous true\n", tls(&c.other_ca_server)),
                "tls_notyet" => format!("{}allow_anonymous true\n", tls(&c.not_yet_valid)),
                "mtls" => format!(
                    "{}cafile {}\nrequire_certificate true\nuse_identity_as_username true\n\
                     allow_anonymous false\n",
                    tls(&c.server),
                    path_str(&c.ca.cert_pem)
                ),
                other => unreachable!("unknown listener {other}"),
            };
            conf.push_str(&body);
        }
        conf
    }

    /// Spawns the broker on the current config and waits (bounded) until it
    /// logs "running" and every listener port accepts TCP.
    fn spawn_and_wait(&mut self) -> Result<(), String> {
        assert!(self.child.is_none(), "mosquitto is already running");
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .map_err(|e| format!("open log: {e}"))?;
        let offset = log.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = writeln!(
            log,
            "=== hubprobe lab: {} -c {} (ports {:?}) ===",
            self.bin.display(),
            self.conf_path.display(),
            self.ports
        );
        let out = log.try_clone().map_err(|e| format!("clone log: {e}"))?;
        let child = Command::new(&self.bin)
            .arg("-c")
            .arg(&self.conf_path)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(log)
            .spawn();
        let child = match child {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                panic!("mosquitto not installed: apt-get install mosquitto ({e})")
            }
            Err(e) => return Err(format!("spawn {}: {e}", self.bin.display())),
        };
        self.child = Some(child);

        let deadline = Instant::now() + READY_TIMEOUT;
        let mut pending: BTreeSet<u16> = self.ports.iter().map(|&(_, p)| p).collect();
        for _ in 0..2_000 {
            let child = self.child.as_mut().expect("child");
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Err(format!(
                    "mosquitto exited during start-up ({status}): {}",
                    read_from(&self.log_path, offset)
                ));
            }
            if read_from(&self.log_path, offset).contains(" running") {
                pending.retain(|&port| {
                    let addr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port));
                    StdTcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err()
                });
                if pending.is_empty() {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.stop();
        Err(format!(
            "not ready within {READY_TIMEOUT:?} (ports not accepting: {pending:?}): {}",
            read_from(&self.log_path, offset)
        ))
    }

    /// The port of listener `name` (one of [`LISTENERS`]). Panics on an unknown name.
    pub fn port(&self, name: &str) -> u16 {
        self.ports
            .iter()
            .find(|(n, _)| *n == name)
            .map(|&(_, p)| p)
            .unwrap_or_else(|| panic!("no mosquitto listener named {name:?}; have {LISTENERS:?}"))
    }

    /// `127.0.0.1:<port>` of listener `name`.
    pub fn addr(&self, name: &str) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, self.port(name)))
    }

    /// All (listener, port) pairs.
    pub fn ports(&self) -> &[(&'static str, u16)] {
        &self.ports
    }

    /// The PKI the broker serves (trust `certs().ca`).
    pub fn certs(&self) -> &Certs {
        &self.certs
    }

    /// The broker log (`log_type all`; every start is appended).
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The whole broker log so far.
    pub fn log(&self) -> String {
        read_from(&self.log_path, 0)
    }

    /// The generated mosquitto.conf.
    pub fn conf_path(&self) -> &Path {
        &self.conf_path
    }

    /// The broker's working directory (config, password file, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Process id while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Whether the broker process is alive.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Stops the broker (SIGTERM, then SIGKILL after 3 s) and reaps it. The
    /// ports stay reserved in the config for [`Mosquitto::start_again`].
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(None) = child.try_wait() {
            if let Ok(pid) = libc::pid_t::try_from(child.id()) {
                // SAFETY: plain kill(2) on our own child's pid (not yet reaped).
                unsafe {
                    libc::kill(pid, libc::SIGTERM);
                }
            }
            let deadline = Instant::now() + STOP_TIMEOUT;
            for _ in 0..1_000 {
                if !matches!(child.try_wait(), Ok(None)) || Instant::now() >= deadline {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Starts the broker again after [`Mosquitto::stop`], same config and ports.
    /// Panics (with the log) if a port was taken meanwhile or it does not come up.
    pub fn start_again(&mut self) {
        let mut last = String::new();
        for _ in 0..START_ATTEMPTS {
            match self.spawn_and_wait() {
                Ok(()) => return,
                Err(e) if port_clash(&e) => {
                    last = e;
                    std::thread::sleep(Duration::from_millis(300));
                }
                Err(e) => {
                    last = e;
                    break;
                }
            }
        }
        panic!(
            "mosquitto did not start again: {last}\n--- log {} ---\n{}",
            self.log_path.display(),
            self.log()
        );
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.stop();
    }
}

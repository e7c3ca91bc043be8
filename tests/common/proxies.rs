//! Real proxies for the lab: squid (HTTP CONNECT with `basic_ncsa_auth`),
//! tinyproxy (a second HTTP proxy) and dante (`danted`, SOCKS5 with and without
//! user name/password). Each runs in the foreground with a config, password file
//! and logs written into its own temporary directory, on a free 127.0.0.1 port,
//! and is stopped on drop. Start them on a [`super::Netns::run`] thread to put
//! them in that namespace. A missing program is a panic, never a skip.

use std::fs;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::util::{find_program, free_port, wait_for_tcp};

const READY: Duration = Duration::from_secs(20);

fn program(name: &str, package: &str) -> PathBuf {
    find_program(name).unwrap_or_else(|| {
        panic!("`{name}` is not installed: install the Debian package `{package}` (scripts/test.sh does)")
    })
}

fn world_dir(prefix: &str) -> TempDir {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("temp dir");
    // The proxies drop privileges (proxy, nobody): they must write their logs here.
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777)).unwrap();
    dir
}

/// A proxy process and its directory.
pub struct ProxyProc {
    child: Child,
    dir: TempDir,
    port: u16,
    access_log: PathBuf,
    name: &'static str,
}

impl ProxyProc {
    /// Its address (127.0.0.1:port).
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }
    /// Its directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
    /// What its access (or connect) log holds now.
    pub fn access_log(&self) -> String {
        fs::read_to_string(&self.access_log).unwrap_or_default()
    }
    /// Polls (bounded) until the access log contains `needle`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        let until = Instant::now() + timeout;
        while Instant::now() < until {
            if self.access_log().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    fn wait_ready(mut self) -> Self {
        if !wait_for_tcp(self.addr(), READY) {
            let _ = self.child.kill();
            let logs: Vec<String> = fs::read_dir(self.dir.path())
                .into_iter()
                .flatten()
                .flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
                .map(|e| {
                    format!(
                        "--- {} ---\n{}",
                        e.path().display(),
                        fs::read_to_string(e.path()).unwrap_or_default()
                    )
                })
                .collect();
            panic!(
                "{} did not listen on {}:\n{}",
                self.name,
                self.addr(),
                logs.join("\n")
            );
        }
        self
    }
}

impl Drop for ProxyProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How a squid is set up.
pub struct SquidConfig {
    /// Ports CONNECT may go to (the rest get 403).
    pub connect_ports: Vec<u16>,
    /// `user:password` pairs; empty means no authentication.
    pub users: Vec<(String, String)>,
    /// Host names squid resolves from its own hosts file (`name` → 127.0.0.1).
    pub hosts: Vec<String>,
    /// squid's `read_timeout` (idle tunnels are closed after it).
    pub read_timeout: Option<Duration>,
}

/// Starts squid with `cfg`.
pub fn squid(cfg: &SquidConfig) -> ProxyProc {
    let bin = program("squid", "squid");
    let dir = world_dir("hubprobe-squid-");
    let d = dir.path();
    let port = free_port();
    let mut hosts = String::from("127.0.0.1 localhost\n");
    for h in &cfg.hosts {
        hosts.push_str(&format!("127.0.0.1 {h}\n"));
    }
    fs::write(d.join("hosts"), hosts).unwrap();
    let mut conf = format!(
        "http_port 127.0.0.1:{port}\n\
         pid_filename {d}/squid.pid\n\
         cache_effective_user proxy\n\
         coredump_dir {d}\n\
         access_log stdio:{d}/access.log\n\
         cache_log {d}/cache.log\n\
         cache_store_log none\n\
         cache deny all\n\
         hosts_file {d}/hosts\n\
         dns_nameservers 127.0.0.1\n\
         shutdown_lifetime 0 seconds\n\
         acl SSL_ports port {ports}\n\
         acl CONNECT method CONNECT\n\
         http_access deny CONNECT !SSL_ports\n",
        d = d.display(),
        ports = cfg
            .connect_ports
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(" ")
    );
    if let Some(t) = cfg.read_timeout {
        conf.push_str(&format!("read_timeout {} seconds\n", t.as_secs().max(1)));
    }
    if cfg.users.is_empty() {
        conf.push_str("http_access allow all\n");
    } else {
        let mut htpasswd = String::new();
        for (u, p) in &cfg.users {
            let out = Command::new("openssl")
                .args(["passwd", "-apr1", p])
                .output()
                .expect("openssl passwd");
            assert!(out.status.success(), "openssl passwd failed");
            htpasswd.push_str(&format!(
                "{u}:{}\n",
                String::from_utf8_lossy(&out.stdout).trim()
            ));
        }
        fs::write(d.join("htpasswd"), htpasswd).unwrap();
        fs::set_permissions(d.join("htpasswd"), fs::Permissions::from_mode(0o644)).unwrap();
        conf.push_str(&format!(
            "auth_param basic program /usr/lib/squid/basic_ncsa_auth {d}/htpasswd\n\
             auth_param basic realm hubprobe-lab\n\
             acl authed proxy_auth REQUIRED\n\
             http_access allow authed\n\
             http_access deny all\n",
            d = d.display()
        ));
    }
    fs::write(d.join("squid.conf"), conf).unwrap();
    let child = Command::new(bin)
        .args(["-N", "-f"])
        .arg(d.join("squid.conf"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(d.join("stderr.log")).unwrap())
        .spawn()
        .expect("spawn squid");
    ProxyProc {
        child,
        access_log: d.join("access.log"),
        dir,
        port,
        name: "squid",
    }
    .wait_ready()
}

/// Starts tinyproxy allowing CONNECT to `connect_ports`.
pub fn tinyproxy(connect_ports: &[u16]) -> ProxyProc {
    let bin = program("tinyproxy", "tinyproxy");
    let dir = world_dir("hubprobe-tinyproxy-");
    let d = dir.path();
    let port = free_port();
    let mut conf = format!(
        "User nobody\nGroup nogroup\nPort {port}\nListen 127.0.0.1\nTimeout 30\n\
         LogFile \"{d}/tinyproxy.log\"\nLogLevel Connect\nPidFile \"{d}/tinyproxy.pid\"\n\
         MaxClients 20\nAllow 127.0.0.1\nViaProxyName \"hubprobe-lab\"\n",
        d = d.display()
    );
    for p in connect_ports {
        conf.push_str(&format!("ConnectPort {p}\n"));
    }
    fs::write(d.join("tinyproxy.conf"), conf).unwrap();
    let child = Command::new(bin)
        .arg("-d")
        .arg("-c")
        .arg(d.join("tinyproxy.conf"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(d.join("stderr.log")).unwrap())
        .spawn()
        .expect("spawn tinyproxy");
    ProxyProc {
        child,
        access_log: d.join("tinyproxy.log"),
        dir,
        port,
        name: "tinyproxy",
    }
    .wait_ready()
}

/// A system user for dante's `socksmethod: username`, removed on drop.
pub struct SystemUser {
    /// Its name.
    pub name: String,
}

impl SystemUser {
    /// Creates a user with a unique name and `password`.
    pub fn create(password: &str) -> SystemUser {
        let name = format!("hps{}{}", std::process::id() % 100_000, rand_suffix());
        let out = Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                &name,
            ])
            .output()
            .expect("useradd");
        assert!(
            out.status.success(),
            "useradd {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut chpasswd = Command::new("chpasswd")
            .stdin(Stdio::piped())
            .spawn()
            .expect("chpasswd");
        use std::io::Write;
        chpasswd
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{name}:{password}\n").as_bytes())
            .unwrap();
        assert!(chpasswd.wait().unwrap().success(), "chpasswd failed");
        SystemUser { name }
    }
}

fn rand_suffix() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() % 10_000)
        .unwrap_or(0)
}

impl Drop for SystemUser {
    fn drop(&mut self) {
        let _ = Command::new("userdel")
            .arg(&self.name)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Starts danted; `username` switches `socksmethod` to `username`; connects to
/// `blocked_ports` on 127.0.0.1 are refused by a `socks block` rule.
pub fn dante(username: bool, blocked_ports: &[u16]) -> ProxyProc {
    let bin = program("danted", "dante-server");
    let dir = world_dir("hubprobe-dante-");
    let d = dir.path();
    let port = free_port();
    let mut conf = format!(
        "logoutput: {d}/danted.log\n\
         internal: 127.0.0.1 port = {port}\n\
         external: 127.0.0.1\n\
         clientmethod: none\n\
         socksmethod: {method}\n\
         user.privileged: root\n\
         user.unprivileged: nobody\n\
         client pass {{ from: 0.0.0.0/0 to: 0.0.0.0/0 log: error }}\n",
        d = d.display(),
        method = if username { "username" } else { "none" }
    );
    for p in blocked_ports {
        conf.push_str(&format!(
            "socks block {{ from: 0.0.0.0/0 to: 127.0.0.1/32 port = {p} log: connect error }}\n"
        ));
    }
    conf.push_str(
        "socks pass {\n from: 0.0.0.0/0 to: 0.0.0.0/0\n log: connect disconnect error\n command: connect\n}\n",
    );
    fs::write(d.join("danted.conf"), conf).unwrap();
    let child = Command::new(bin)
        .arg("-f")
        .arg(d.join("danted.conf"))
        .arg("-p")
        .arg(d.join("danted.pid"))
        .arg("-N")
        .arg("1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(d.join("stderr.log")).unwrap())
        .spawn()
        .expect("spawn danted");
    ProxyProc {
        child,
        access_log: d.join("danted.log"),
        dir,
        port,
        name: "danted",
    }
    .wait_ready()
}

//! The proxy hop: HTTP CONNECT (RFC 9110 §9.3.6) and SOCKS5 (RFC 1928, with RFC
//! 1929 user name/password), and the proxy setting itself — its URL, where it came
//! from (`--proxy`, the environment as curl reads it, the agent's `[proxy]`), the
//! `NO_PROXY` match and the password, which never leaves this module unredacted.
//!
//! The hop runs on the TCP stream to the proxy and hands back the same stream,
//! tunnelled to the hub; its phase is `proxy`, timed like the others, with every
//! failure named by a `proxy.*` class and the proxy's answer as evidence.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use base64::Engine;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::meter::Metered;

use crate::auth::Secret;
use crate::model::{FailureClass, Phase, PhaseResult, ProxyEvidence, ProxyInfo};
use crate::probe::Stopwatch;

/// The largest CONNECT answer head read (status line and headers).
pub const MAX_RESPONSE_HEAD: usize = 16 * 1024;

/// The environment variables read for the proxy, in curl's order for an
/// `https://` destination (lower case first).
pub const PROXY_VARS: [&str; 4] = ["https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"];
/// The environment variables read for the exceptions, lower case first.
pub const NO_PROXY_VARS: [&str; 2] = ["no_proxy", "NO_PROXY"];
/// The environment variable that holds the proxy password when the URL has none.
pub const PASSWORD_VAR: &str = "HUBPROBE_PROXY_PASSWORD";

/// The proxy protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyScheme {
    /// HTTP CONNECT; the proxy resolves the hub's name.
    Http,
    /// SOCKS5; the device resolves the hub's name and sends an address.
    Socks5,
    /// SOCKS5; the proxy resolves the hub's name.
    Socks5h,
}

impl ProxyScheme {
    /// The URL scheme.
    pub fn as_str(self) -> &'static str {
        match self {
            ProxyScheme::Http => "http",
            ProxyScheme::Socks5 => "socks5",
            ProxyScheme::Socks5h => "socks5h",
        }
    }

    /// Whether the proxy resolves the hub's name (then the DNS phase resolves the
    /// proxy's name instead).
    pub fn proxy_resolves(self) -> bool {
        !matches!(self, ProxyScheme::Socks5)
    }
}

/// A proxy setting that cannot be used; the message never holds the password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyConfigError {
    /// The URL could not be read.
    #[error("proxy URL {url:?}: {reason}")]
    BadUrl {
        /// The URL, password redacted.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// The password file could not be read.
    #[error("proxy password file {path:?}: {reason}")]
    PasswordFile {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
}

/// One proxy: where it is, how to speak to it, as whom, and where the setting came from.
#[derive(Clone)]
pub struct ProxyConfig {
    /// The protocol.
    pub scheme: ProxyScheme,
    /// Its host (a name or an IP literal, without brackets).
    pub host: String,
    /// Its port.
    pub port: u16,
    /// The proxy user, when it authenticates.
    pub username: Option<String>,
    /// The proxy password (never printed).
    pub password: Option<Secret>,
    /// Where the setting came from: `--proxy`, `HTTPS_PROXY` ..., `[proxy] url`.
    pub source: String,
}

impl std::fmt::Debug for ProxyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ProxyConfig({} from {})",
            self.redacted_url(),
            self.source
        )
    }
}

/// Replaces the password of a proxy URL as given (even a malformed one) by `***`.
pub fn redact_url(raw: &str) -> String {
    let (scheme, rest) = match raw.find("://") {
        Some(i) => (&raw[..i + 3], &raw[i + 3..]),
        None => ("", raw),
    };
    let Some(at) = rest.rfind('@') else {
        return raw.to_string();
    };
    let (userinfo, host) = rest.split_at(at);
    match userinfo.find(':') {
        Some(c) => format!("{scheme}{}:***{host}", &userinfo[..c]),
        None => raw.to_string(),
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

impl ProxyConfig {
    /// Parses `scheme://[user[:password]@]host[:port][/]` (no scheme means
    /// `http://`, the port defaults to 1080 as in curl). `source` says where the
    /// URL came from.
    pub fn parse(raw: &str, source: &str) -> Result<Self, ProxyConfigError> {
        let bad = |reason: &str| ProxyConfigError::BadUrl {
            url: redact_url(raw),
            reason: reason.to_string(),
        };
        let raw_t = raw.trim();
        if raw_t.is_empty() {
            return Err(bad("empty"));
        }
        if raw_t.len() > 2048 || raw_t.chars().any(char::is_control) {
            return Err(bad("too long or holds control characters"));
        }
        let (scheme, rest) = match raw_t.find("://") {
            Some(i) => (raw_t[..i].to_ascii_lowercase(), &raw_t[i + 3..]),
            None => ("http".to_string(), raw_t),
        };
        let scheme = match scheme.as_str() {
            "http" => ProxyScheme::Http,
            "socks5" => ProxyScheme::Socks5,
            "socks5h" => ProxyScheme::Socks5h,
            "https" => {
                return Err(bad(
                    "https:// proxies (TLS to the proxy) are not supported; use http:// (the tunnel to the hub is TLS anyway)",
                ))
            }
            "socks4" | "socks4a" => return Err(bad("SOCKS4 is not supported; use socks5:// or socks5h://")),
            _ => return Err(bad("the scheme must be http://, socks5:// or socks5h://")),
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#']) {
            return Err(bad("a proxy URL has no path, query or fragment"));
        }
        let (userinfo, hostport) = match rest.rfind('@') {
            Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
            None => (None, rest),
        };
        let (username, password) = match userinfo {
            None => (None, None),
            Some(u) => {
                let (user, pass) = match u.split_once(':') {
                    Some((a, b)) => (a, Some(b)),
                    None => (u, None),
                };
                let user =
                    percent_decode(user).ok_or_else(|| bad("bad %-escape in the user name"))?;
                let pass = pass
                    .map(|p| percent_decode(p).ok_or_else(|| bad("bad %-escape in the password")))
                    .transpose()?;
                if user.is_empty() {
                    return Err(bad("the user name is empty"));
                }
                if user.len() > 255 || pass.as_ref().is_some_and(|p| p.len() > 255) {
                    return Err(bad("the user name and password must be at most 255 bytes"));
                }
                (Some(user), pass.map(Secret::new))
            }
        };
        let (host, port) = if let Some(h) = hostport.strip_prefix('[') {
            let (h, after) = h
                .split_once(']')
                .ok_or_else(|| bad("unclosed '[' in the host"))?;
            h.parse::<std::net::Ipv6Addr>()
                .map_err(|_| bad("the bracketed host is not an IPv6 address"))?;
            let port = match after {
                "" => None,
                p => Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| bad("junk after the IPv6 address"))?,
                ),
            };
            (h.to_string(), port)
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (hostport.to_string(), None),
            }
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        if host.contains(':') && !hostport.starts_with('[') {
            return Err(bad("write an IPv6 address in brackets: [2001:db8::1]:3128"));
        }
        if !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'))
        {
            return Err(bad("the host holds characters a host name cannot"));
        }
        let port = match port {
            None => 1080,
            Some(p) => match p.parse::<u16>() {
                Ok(p) if p > 0 => p,
                _ => return Err(bad("the port must be 1-65535")),
            },
        };
        Ok(ProxyConfig {
            scheme,
            host: host.to_ascii_lowercase(),
            port,
            username,
            password,
            source: source.to_string(),
        })
    }

    /// The URL with the password shown as `***`.
    pub fn redacted_url(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let auth = match (&self.username, &self.password) {
            (Some(u), Some(_)) => format!("{u}:***@"),
            (Some(u), None) => format!("{u}@"),
            _ => String::new(),
        };
        format!("{}://{auth}{host}:{}", self.scheme.as_str(), self.port)
    }

    /// What the report says of this proxy.
    pub fn info(&self) -> ProxyInfo {
        ProxyInfo {
            url: self.redacted_url(),
            scheme: self.scheme.as_str().into(),
            source: self.source.clone(),
            authenticated: self.username.is_some(),
            bypassed: false,
            bypassed_by: None,
        }
    }

    /// Sets the password when the URL has a user but none: from `file` (first line)
    /// or else from `env_password` (`HUBPROBE_PROXY_PASSWORD`).
    pub fn fill_password(
        &mut self,
        file: Option<&std::path::Path>,
        env_password: Option<Secret>,
    ) -> Result<(), ProxyConfigError> {
        if self.username.is_none() || self.password.is_some() {
            return Ok(());
        }
        if let Some(path) = file {
            let text = crate::fsio::read_bounded_text(path, crate::fsio::InputKind::Secret)
                .map_err(|e| ProxyConfigError::PasswordFile {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                })?;
            let first = text.lines().next().unwrap_or("").to_string();
            self.password = Some(Secret::new(first));
            return Ok(());
        }
        self.password = env_password;
        Ok(())
    }
}

/// The proxy of a run: the setting, and whether `NO_PROXY` sent this host direct.
#[derive(Debug, Clone)]
pub struct ProxyPlan {
    /// The proxy.
    pub config: std::sync::Arc<ProxyConfig>,
    /// The `NO_PROXY` entry that matched the host: the run goes direct.
    pub bypassed_by: Option<String>,
}

impl ProxyPlan {
    /// The proxy to go through, unless bypassed.
    pub fn active(&self) -> Option<&std::sync::Arc<ProxyConfig>> {
        self.bypassed_by.is_none().then_some(&self.config)
    }

    /// What the report says.
    pub fn info(&self) -> ProxyInfo {
        let mut i = self.config.info();
        i.bypassed = self.bypassed_by.is_some();
        i.bypassed_by = self.bypassed_by.clone();
        i
    }
}

/// The entry of a `NO_PROXY` list that matches `host`, as curl matches it: `*`
/// matches everything; a name matches itself and its subdomains (a leading dot is
/// ignored); an IP address matches itself; `ADDR/BITS` matches IP hosts in that
/// network. Names are not resolved to match CIDR entries (curl does not either).
pub fn no_proxy_match(list: &str, host: &str) -> Option<String> {
    let host = host
        .trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_ascii_lowercase();
    let host_ip = host.parse::<IpAddr>().ok();
    for raw in list.split([',', ' ']) {
        let entry = raw.trim();
        if entry.is_empty() {
            continue;
        }
        if entry == "*" {
            return Some(entry.to_string());
        }
        let e = entry.to_ascii_lowercase();
        if let Some((net, bits)) = e.split_once('/') {
            let (Ok(net), Ok(bits), Some(ip)) =
                (net.parse::<IpAddr>(), bits.parse::<u8>(), host_ip)
            else {
                continue;
            };
            if in_network(ip, net, bits) {
                return Some(entry.to_string());
            }
            continue;
        }
        let e = e.trim_start_matches('[').trim_end_matches(']');
        if let (Ok(eip), Some(ip)) = (e.parse::<IpAddr>(), host_ip) {
            if eip == ip {
                return Some(entry.to_string());
            }
            continue;
        }
        // A name, possibly with a port (ignored) or a leading dot.
        let name = e.trim_start_matches('.');
        let name = match name.rsplit_once(':') {
            Some((n, p)) if p.chars().all(|c| c.is_ascii_digit()) => n,
            _ => name,
        };
        let name = name.trim_end_matches('.');
        if name.is_empty() || host_ip.is_some() {
            continue;
        }
        if host == name || host.ends_with(&format!(".{name}")) {
            return Some(entry.to_string());
        }
    }
    None
}

fn in_network(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) if bits <= 32 => {
            let mask = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - bits)
            };
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) if bits <= 128 => {
            let mask = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - bits)
            };
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// Where the proxy setting comes from, before the environment is consulted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyChoice {
    /// Read the environment (curl's variables).
    FromEnvironment,
    /// `--proxy none` / `[proxy] url = "none"`: go direct, ignore the environment.
    Direct,
    /// This URL, from this setting.
    Url {
        /// The URL as given.
        url: String,
        /// Where it came from (`--proxy`, `[proxy] url`).
        source: String,
    },
}

/// Picks the run's proxy for `host`: the explicit choice, else the first set
/// variable of [`PROXY_VARS`]; `NO_PROXY` (from `no_proxy`, then the variables)
/// applies to all of them, as in curl. `env` reads one variable.
pub fn select(
    choice: &ProxyChoice,
    no_proxy: Option<&str>,
    host: &str,
    password_file: Option<&std::path::Path>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<ProxyPlan>, ProxyConfigError> {
    let (url, source) = match choice {
        ProxyChoice::Direct => return Ok(None),
        ProxyChoice::Url { url, source } => (url.clone(), source.clone()),
        ProxyChoice::FromEnvironment => {
            let Some((var, url)) = PROXY_VARS
                .iter()
                .find_map(|v| env(v).filter(|u| !u.trim().is_empty()).map(|u| (*v, u)))
            else {
                return Ok(None);
            };
            (url, var.to_string())
        }
    };
    let mut config = ProxyConfig::parse(&url, &source).map_err(|e| match (choice, e) {
        (ProxyChoice::FromEnvironment, ProxyConfigError::BadUrl { url, reason }) => {
            ProxyConfigError::BadUrl {
                url,
                reason: format!("{reason} (set in {source}; --proxy none ignores it)"),
            }
        }
        (_, e) => e,
    })?;
    config.fill_password(password_file, env(PASSWORD_VAR).map(Secret::new))?;
    let no_proxy = no_proxy
        .map(str::to_string)
        .or_else(|| NO_PROXY_VARS.iter().find_map(|v| env(v)));
    let bypassed_by = no_proxy.and_then(|l| no_proxy_match(&l, host));
    Ok(Some(ProxyPlan {
        config: std::sync::Arc::new(config),
        bypassed_by,
    }))
}

/// Where the tunnel goes: the hub's name (the proxy resolves it) or an address
/// the device resolved (`socks5://`).
#[derive(Debug, Clone)]
pub enum TunnelTarget {
    /// The name and port.
    Name(String, u16),
    /// The address.
    Address(SocketAddr),
}

impl std::fmt::Display for TunnelTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TunnelTarget::Name(h, p) if h.contains(':') => write!(f, "[{h}]:{p}"),
            TunnelTarget::Name(h, p) => write!(f, "{h}:{p}"),
            TunnelTarget::Address(a) => write!(f, "{a}"),
        }
    }
}

/// What the proxy hop did: its phase result and, on success, the tunnelled stream.
pub struct ProxyOutcome {
    /// The `proxy` phase.
    pub result: PhaseResult,
    /// The stream to the proxy, now tunnelled to the target.
    pub stream: Option<Metered<TcpStream>>,
}

/// Opens the tunnel over `tcp` (connected to the proxy), within `timeout`.
pub async fn tunnel(
    mut tcp: Metered<TcpStream>,
    proxy: &ProxyConfig,
    target: TunnelTarget,
    timeout: Duration,
) -> ProxyOutcome {
    let clock = Stopwatch::start();
    let mut ev = ProxyEvidence {
        scheme: proxy.scheme.as_str().into(),
        proxy_address: tcp.peer_addr().ok().map(|a| a.to_string()),
        target: target.to_string(),
        resolved_by: if matches!(target, TunnelTarget::Name(..)) {
            "proxy".into()
        } else {
            "device".into()
        },
        auth_sent: proxy.username.is_some(),
        ..Default::default()
    };
    let name = format!(
        "proxy {}",
        ev.proxy_address.as_deref().unwrap_or(&proxy.host)
    );
    let done = match proxy.scheme {
        ProxyScheme::Http => {
            tokio::time::timeout(timeout, async {
                http_connect(&mut tcp, proxy, &target, &mut ev)
                    .await
                    .map(|()| tcp)
            })
            .await
        }
        ProxyScheme::Socks5 | ProxyScheme::Socks5h => {
            tokio::time::timeout(timeout, socks5(tcp, proxy, &target, &mut ev)).await
        }
    };
    match done {
        Ok(Ok(tcp)) => ProxyOutcome {
            result: PhaseResult::ok(Phase::Proxy, clock.elapsed(), ev),
            stream: Some(tcp),
        },
        Ok(Err((class, message))) => ProxyOutcome {
            result: PhaseResult::failed(
                Phase::Proxy,
                clock.elapsed(),
                class,
                format!("{name}: {message}"),
                ev,
            ),
            stream: None,
        },
        Err(_) => ProxyOutcome {
            result: PhaseResult::failed(
                Phase::Proxy,
                clock.elapsed(),
                FailureClass::ProxyTimeout,
                format!(
                    "{name}: no answer to the {} request within {}{}",
                    if proxy.scheme == ProxyScheme::Http {
                        "CONNECT"
                    } else {
                        "SOCKS5"
                    },
                    humantime::format_duration(timeout),
                    if proxy.scheme == ProxyScheme::Http {
                        ""
                    } else {
                        " (an HTTP proxy on this port would also wait silently: check the URL's scheme)"
                    }
                ),
                ev,
            ),
            stream: None,
        },
    }
}

type HopError = (FailureClass, String);

/// The CONNECT request. Written by hand: it is one request line and three
/// headers, and no maintained client crate sends CONNECT over a stream it does
/// not own while exposing the proxy's answer headers for evidence.
fn connect_request(proxy: &ProxyConfig, target: &TunnelTarget) -> (String, String) {
    let authority = target.to_string();
    let line = format!("CONNECT {authority} HTTP/1.1");
    let mut req = format!(
        "{line}\r\nHost: {authority}\r\nUser-Agent: hubprobe/{}\r\nProxy-Connection: Keep-Alive\r\n",
        env!("CARGO_PKG_VERSION")
    );
    if let Some(user) = &proxy.username {
        let pass = proxy.password.as_ref().map(Secret::expose).unwrap_or("");
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
        req.push_str(&format!("Proxy-Authorization: Basic {token}\r\n"));
    }
    req.push_str("\r\n");
    (line, req)
}

async fn http_connect(
    tcp: &mut Metered<TcpStream>,
    proxy: &ProxyConfig,
    target: &TunnelTarget,
    ev: &mut ProxyEvidence,
) -> Result<(), HopError> {
    let (line, req) = connect_request(proxy, target);
    ev.request_line = Some(line);
    tcp.write_all(req.as_bytes())
        .await
        .map_err(|e| io_error("sending CONNECT", &e))?;
    // Read byte by byte up to the end of the head: whatever follows belongs to the
    // tunnel (the hub's first bytes) and must stay in the socket.
    let mut head = Vec::with_capacity(512);
    let mut byte = [0u8; 1];
    loop {
        let n = tcp
            .read(&mut byte)
            .await
            .map_err(|e| io_error("reading the CONNECT answer", &e))?;
        if n == 0 {
            return Err((
                FailureClass::ProxyProtocolError,
                if head.is_empty() {
                    "the proxy closed the connection without answering the CONNECT request (not an HTTP proxy?)".into()
                } else {
                    format!(
                        "the proxy closed the connection in the middle of its answer after {} bytes",
                        head.len()
                    )
                },
            ));
        }
        head.push(byte[0]);
        if head.ends_with(b"\r\n\r\n") || head.ends_with(b"\n\n") {
            break;
        }
        if head.len() >= MAX_RESPONSE_HEAD {
            return Err((
                FailureClass::ProxyProtocolError,
                format!("the answer's head is longer than {MAX_RESPONSE_HEAD} bytes"),
            ));
        }
        if head.len() == 5 && !head.starts_with(b"HTTP/") {
            return Err((
                FailureClass::ProxyProtocolError,
                format!(
                    "the answer does not start like HTTP ({}): not an HTTP proxy",
                    printable(&head)
                ),
            ));
        }
    }
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(&head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) | Err(_) => {
            return Err((
                FailureClass::ProxyProtocolError,
                format!(
                    "malformed HTTP answer: {}",
                    printable(&head[..head.len().min(80)])
                ),
            ))
        }
    }
    let status = resp.code.unwrap_or(0);
    ev.status = Some(status);
    ev.reason = resp.reason.map(|r| clip(r, 200));
    for h in resp.headers.iter() {
        let value = clip(&String::from_utf8_lossy(h.value), 200);
        match h.name.to_ascii_lowercase().as_str() {
            "server" => ev.server = Some(value),
            "via" => ev.via = Some(value),
            "proxy-agent" => ev.proxy_agent = Some(value),
            "proxy-authenticate" => {
                let scheme = value.split_whitespace().next().unwrap_or("").to_string();
                if !scheme.is_empty()
                    && !ev.auth_schemes.contains(&scheme)
                    && ev.auth_schemes.len() < 8
                {
                    ev.auth_schemes.push(scheme);
                }
            }
            _ => {}
        }
    }
    let said = format!(
        "CONNECT {} answered {status} {}",
        ev.target,
        ev.reason.as_deref().unwrap_or("")
    );
    let said = said.trim_end().to_string();
    if (200..300).contains(&status) {
        return Ok(());
    }
    let basic_offered = ev
        .auth_schemes
        .iter()
        .any(|s| s.eq_ignore_ascii_case("basic"));
    let err = match status {
        407 if !ev.auth_schemes.is_empty() && !basic_offered => (
            FailureClass::ProxyAuthUnsupported,
            format!(
                "{said}: the proxy asks for {} authentication, which hubprobe (and the device SDKs) do not speak; only Basic is supported",
                ev.auth_schemes.join(", ")
            ),
        ),
        407 if ev.auth_sent => (
            FailureClass::ProxyAuthRequired,
            format!("{said}: the proxy refused the credentials of user {:?}", proxy.username.as_deref().unwrap_or("")),
        ),
        407 => (
            FailureClass::ProxyAuthRequired,
            format!("{said}: the proxy needs credentials and none were given"),
        ),
        403 => (
            FailureClass::ProxyForbidden,
            format!("{said}: the proxy's rules do not allow a tunnel to this host and port"),
        ),
        502..=504 => (
            FailureClass::ProxyTargetUnreachable,
            format!("{said}: the proxy could not reach the hub"),
        ),
        // tinyproxy answers a failed connect to the destination with 500 "Unable to connect".
        500 if ev
            .reason
            .as_deref()
            .is_some_and(|r| r.to_ascii_lowercase().contains("connect")) =>
        {
            (
                FailureClass::ProxyTargetUnreachable,
                format!("{said}: the proxy could not reach the hub"),
            )
        }
        _ => (FailureClass::ProxyRejected, said),
    };
    Err(err)
}

async fn socks5(
    tcp: Metered<TcpStream>,
    proxy: &ProxyConfig,
    target: &TunnelTarget,
    ev: &mut ProxyEvidence,
) -> Result<Metered<TcpStream>, HopError> {
    use tokio_socks::tcp::Socks5Stream;
    use tokio_socks::TargetAddr;
    let addr: TargetAddr<'_> = match target {
        TunnelTarget::Name(h, p) => TargetAddr::Domain(h.as_str().into(), *p),
        TunnelTarget::Address(a) => TargetAddr::Ip(*a),
    };
    let out = match &proxy.username {
        Some(user) => {
            ev.socks_method = Some("username".into());
            let pass = proxy.password.as_ref().map(Secret::expose).unwrap_or("");
            Socks5Stream::connect_with_password_and_socket(tcp, addr, user, pass).await
        }
        None => {
            ev.socks_method = Some("none".into());
            Socks5Stream::connect_with_socket(tcp, addr).await
        }
    };
    match out {
        Ok(s) => {
            ev.socks_reply = Some(0);
            Ok(s.into_inner())
        }
        Err(e) => {
            use tokio_socks::Error as E;
            let reply = match &e {
                E::GeneralSocksServerFailure => Some(1),
                E::ConnectionNotAllowedByRuleset => Some(2),
                E::NetworkUnreachable => Some(3),
                E::HostUnreachable => Some(4),
                E::ConnectionRefused => Some(5),
                E::TtlExpired => Some(6),
                E::CommandNotSupported => Some(7),
                E::AddressTypeNotSupported => Some(8),
                _ => None,
            };
            ev.socks_reply = reply;
            let t = &ev.target;
            Err(match e {
                E::NoAcceptableAuthMethods => (
                    FailureClass::ProxyAuthRequired,
                    if ev.auth_sent {
                        "the SOCKS5 proxy accepts none of the offered authentication methods (user name/password)".into()
                    } else {
                        "the SOCKS5 proxy requires authentication (no acceptable method without credentials)".into()
                    },
                ),
                E::PasswordAuthFailure(code) => (
                    FailureClass::ProxyAuthRequired,
                    format!(
                        "the SOCKS5 proxy refused the user name/password of {:?} (status {code})",
                        proxy.username.as_deref().unwrap_or("")
                    ),
                ),
                E::UnknownAuthMethod => (
                    FailureClass::ProxyAuthUnsupported,
                    "the SOCKS5 proxy chose an authentication method hubprobe does not speak (GSSAPI?)".into(),
                ),
                E::ConnectionNotAllowedByRuleset => (
                    FailureClass::ProxyForbidden,
                    format!("SOCKS5 CONNECT {t}: reply 2, connection not allowed by the proxy's ruleset"),
                ),
                E::NetworkUnreachable | E::HostUnreachable | E::ConnectionRefused | E::TtlExpired => (
                    FailureClass::ProxyTargetUnreachable,
                    format!("SOCKS5 CONNECT {t}: reply {}, {e} (the proxy could not reach the hub)", reply.unwrap_or(0)),
                ),
                E::GeneralSocksServerFailure | E::CommandNotSupported | E::AddressTypeNotSupported | E::UnknownError => (
                    FailureClass::ProxyRejected,
                    format!("SOCKS5 CONNECT {t}: {e}"),
                ),
                E::Io(io) => io_error("in the SOCKS5 exchange", &io),
                E::InvalidAuthValues(what) => (
                    FailureClass::ProxyAuthRequired,
                    format!("the credentials cannot be sent over SOCKS5: {what}"),
                ),
                other => (
                    FailureClass::ProxyProtocolError,
                    format!("the answer is not SOCKS5 ({other}): not a SOCKS5 proxy?"),
                ),
            })
        }
    }
}

fn io_error(doing: &str, e: &std::io::Error) -> HopError {
    use std::io::ErrorKind::*;
    let what = match e.kind() {
        UnexpectedEof => "the proxy closed the connection",
        ConnectionReset | ConnectionAborted | BrokenPipe => "the proxy reset the connection",
        _ => "I/O error",
    };
    (
        FailureClass::ProxyProtocolError,
        format!("{what} {doing} ({})", e.kind()),
    )
}

fn clip(s: &str, max: usize) -> String {
    let s: String = s.chars().filter(|c| !c.is_control()).collect();
    if s.len() <= max {
        s
    } else {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &s[..end])
    }
}

fn printable(b: &[u8]) -> String {
    let s: String = b
        .iter()
        .map(|&c| {
            if c.is_ascii_graphic() || c == b' ' {
                c as char
            } else {
                '.'
            }
        })
        .collect();
    format!("{s:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_as_curl_reads_them() {
        let p = ProxyConfig::parse("http://proxy.corp:3128", "--proxy").unwrap();
        assert_eq!(
            (p.scheme, p.host.as_str(), p.port),
            (ProxyScheme::Http, "proxy.corp", 3128)
        );
        let p = ProxyConfig::parse("proxy.corp", "HTTPS_PROXY").unwrap();
        assert_eq!((p.scheme, p.port), (ProxyScheme::Http, 1080));
        let p = ProxyConfig::parse("socks5h://u%40x:p%3Aw@[::1]:1080/", "x").unwrap();
        assert_eq!(p.scheme, ProxyScheme::Socks5h);
        assert_eq!(p.host, "::1");
        assert_eq!(p.username.as_deref(), Some("u@x"));
        assert_eq!(p.password.as_ref().unwrap().expose(), "p:w");
        assert_eq!(p.redacted_url(), "socks5h://u@x:***@[::1]:1080");
        for bad in [
            "",
            "ftp://x:1",
            "https://x:1",
            "http://x:0",
            "http://x:99999",
            "http://x/path",
            "http://:1",
            "http://::1:80",
            "http://u:secretpw@x:abc",
        ] {
            let e = ProxyConfig::parse(bad, "--proxy").unwrap_err().to_string();
            assert!(!e.contains("secretpw"), "{e}");
        }
    }

    #[test]
    fn redaction_hides_the_password_of_any_url() {
        assert_eq!(redact_url("http://u:pw@h:1"), "http://u:***@h:1");
        assert_eq!(redact_url("u:p@w@h"), "u:***@h");
        assert_eq!(redact_url("http://h:1"), "http://h:1");
    }

    #[test]
    fn no_proxy_matches_suffixes_ips_and_networks() {
        let l = "localhost, .corp.example,10.0.0.0/8 ,::1,example.org:443";
        assert_eq!(
            no_proxy_match(l, "hub.corp.example").as_deref(),
            Some(".corp.example")
        );
        assert_eq!(
            no_proxy_match(l, "corp.example").as_deref(),
            Some(".corp.example")
        );
        assert_eq!(no_proxy_match(l, "xcorp.example"), None);
        assert_eq!(no_proxy_match(l, "10.1.2.3").as_deref(), Some("10.0.0.0/8"));
        assert_eq!(no_proxy_match(l, "11.1.2.3"), None);
        assert_eq!(no_proxy_match(l, "[::1]").as_deref(), Some("::1"));
        assert_eq!(
            no_proxy_match(l, "a.example.org").as_deref(),
            Some("example.org:443")
        );
        assert_eq!(no_proxy_match("*", "anything").as_deref(), Some("*"));
        assert_eq!(
            no_proxy_match("2001:db8::/32", "2001:db8::5").as_deref(),
            Some("2001:db8::/32")
        );
        assert_eq!(no_proxy_match("10.0.0.0/8", "ten.example"), None);
        assert_eq!(no_proxy_match("", "x"), None);
    }

    #[test]
    fn the_environment_is_read_in_curls_order_and_none_ignores_it() {
        let env = |v: &str| match v {
            "HTTPS_PROXY" => Some("http://user@p1:3128".to_string()),
            "ALL_PROXY" => Some("socks5://p2:1080".to_string()),
            "NO_PROXY" => Some("other.example".to_string()),
            PASSWORD_VAR => Some("pw-from-env".to_string()),
            _ => None,
        };
        let p = select(
            &ProxyChoice::FromEnvironment,
            None,
            "hub.example",
            None,
            &env,
        )
        .unwrap()
        .unwrap();
        assert_eq!(p.config.source, "HTTPS_PROXY");
        assert_eq!(p.config.password.as_ref().unwrap().expose(), "pw-from-env");
        assert!(p.active().is_some());
        assert_eq!(p.info().url, "http://user:***@p1:3128");
        let p = select(
            &ProxyChoice::FromEnvironment,
            None,
            "a.other.example",
            None,
            &env,
        )
        .unwrap()
        .unwrap();
        assert_eq!(p.bypassed_by.as_deref(), Some("other.example"));
        assert!(p.active().is_none());
        assert!(
            select(&ProxyChoice::Direct, None, "hub.example", None, &env)
                .unwrap()
                .is_none()
        );
        assert!(
            select(&ProxyChoice::FromEnvironment, None, "h", None, &|_| None)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn the_connect_request_carries_basic_auth() {
        let p = ProxyConfig::parse("http://alice:s3cret@p:3128", "x").unwrap();
        let (line, req) = connect_request(&p, &TunnelTarget::Name("hub.example".into(), 443));
        assert_eq!(line, "CONNECT hub.example:443 HTTP/1.1");
        assert!(req.contains("Host: hub.example:443\r\n"));
        assert!(req.contains("Proxy-Authorization: Basic YWxpY2U6czNjcmV0\r\n"));
        assert!(req.ends_with("\r\n\r\n"));
    }
}

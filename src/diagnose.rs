//! Failure classes and what they mean: each class maps to a plain hint and,
//! where it applies, to the IoT Hub error it explains. Findings across the
//! endpoints of one check (e.g. 8883 blocked but 443 open) are derived here too.

use serde::{Deserialize, Serialize};

macro_rules! classes {
    ($( $(#[$doc:meta])* $variant:ident => $id:literal ),* $(,)?) => {
        /// A failure class: `phase.reason`, stable across versions (reports use the id).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum FailureClass {
            $( $(#[$doc])* $variant, )*
        }

        impl FailureClass {
            /// Every class, in catalogue order.
            pub const ALL: &'static [FailureClass] = &[$(FailureClass::$variant),*];

            /// The stable id, e.g. `tcp.timeout`.
            pub fn id(self) -> &'static str {
                match self { $(FailureClass::$variant => $id,)* }
            }

            /// Parses a stable id.
            pub fn from_id(id: &str) -> Option<Self> {
                match id { $($id => Some(FailureClass::$variant),)* _ => None }
            }
        }
    };
}

classes! {
    /// The name does not exist (NXDOMAIN).
    DnsNxdomain => "dns.nxdomain",
    /// The DNS server failed to answer (SERVFAIL).
    DnsServfail => "dns.servfail",
    /// The DNS server refused the query (REFUSED).
    DnsRefused => "dns.refused",
    /// The name exists but has no A/AAAA records.
    DnsNoRecords => "dns.no_records",
    /// No DNS answer in time.
    DnsTimeout => "dns.timeout",
    /// No name server is configured.
    DnsNoNameservers => "dns.no_nameservers",
    /// Another DNS failure (I/O, malformed answer).
    DnsError => "dns.error",
    /// The port actively refused the connection (RST to SYN).
    TcpRefused => "tcp.refused",
    /// No answer to SYN in time: black-holed or filtered.
    TcpTimeout => "tcp.timeout",
    /// Network or host unreachable (no route, ICMP unreachable).
    TcpUnreachable => "tcp.unreachable",
    /// The connection was reset while connecting.
    TcpReset => "tcp.reset",
    /// The local system forbade the connection (firewall EPERM/EACCES, interface binding).
    TcpPermission => "tcp.permission",
    /// Another TCP failure.
    TcpError => "tcp.error",
    /// The server's chain does not lead to a trusted root.
    TlsUnknownCa => "tls.unknown_ca",
    /// A certificate in the chain has expired (or the device clock is ahead).
    TlsExpired => "tls.expired",
    /// A certificate is not valid yet: the device clock is behind.
    TlsNotYetValid => "tls.not_yet_valid",
    /// The certificate is not valid for the hub's name.
    TlsHostnameMismatch => "tls.hostname_mismatch",
    /// No common TLS protocol version.
    TlsProtocolVersion => "tls.protocol_version",
    /// The handshake failed (alert from the server, no common cipher, rejected client certificate).
    TlsHandshakeFailure => "tls.handshake_failure",
    /// The server answered with something that is not TLS.
    TlsNotTls => "tls.not_tls",
    /// The connection closed during the handshake.
    TlsClosed => "tls.closed",
    /// The connection was reset during the handshake.
    TlsReset => "tls.reset",
    /// The handshake did not finish in time.
    TlsTimeout => "tls.timeout",
    /// The server refused the WebSocket upgrade (HTTP status other than 101).
    WebsocketRejected => "websocket.rejected",
    /// The upgrade did not finish in time.
    WebsocketTimeout => "websocket.timeout",
    /// The connection closed or reset during the upgrade.
    WebsocketClosed => "websocket.closed",
    /// The server's upgrade answer was malformed.
    WebsocketProtocolError => "websocket.protocol_error",
    /// CONNACK 4: bad user name or password (SAS token).
    MqttBadCredentials => "mqtt.bad_credentials",
    /// CONNACK 5: not authorized.
    MqttNotAuthorized => "mqtt.not_authorized",
    /// CONNACK 2: client identifier rejected.
    MqttIdentifierRejected => "mqtt.identifier_rejected",
    /// CONNACK 3: server unavailable.
    MqttServerUnavailable => "mqtt.server_unavailable",
    /// CONNACK 1: unacceptable protocol version.
    MqttProtocolVersion => "mqtt.protocol_version",
    /// No CONNACK (or PINGRESP) in time.
    MqttTimeout => "mqtt.timeout",
    /// The server closed the connection before answering.
    MqttClosed => "mqtt.closed",
    /// The server reset the connection.
    MqttReset => "mqtt.reset",
    /// The server sent something that is not a valid MQTT answer.
    MqttProtocolError => "mqtt.protocol_error",
    /// No AMQP protocol header in time.
    AmqpTimeout => "amqp.timeout",
    /// The connection closed or reset before the AMQP header.
    AmqpClosed => "amqp.closed",
    /// The server answered with something that is not an AMQP header.
    AmqpProtocolError => "amqp.protocol_error",
    /// No HTTP response in time.
    HttpTimeout => "http.timeout",
    /// The connection closed or reset before the HTTP response.
    HttpClosed => "http.closed",
    /// The server's answer is not HTTP.
    HttpProtocolError => "http.protocol_error",
    /// The server answered with a 5xx status.
    HttpServerError => "http.server_error",
}

impl Serialize for FailureClass {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.id())
    }
}

impl<'de> Deserialize<'de> for FailureClass {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        FailureClass::from_id(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown failure class {s:?}")))
    }
}

impl std::fmt::Display for FailureClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.id())
    }
}

/// What a class means and what to do, in plain words.
#[derive(Debug, Clone, Copy)]
pub struct Explanation {
    /// What most likely happened.
    pub meaning: &'static str,
    /// What to do.
    pub hint: &'static str,
    /// The IoT Hub error this explains, when it applies.
    pub iothub_error: Option<&'static str>,
}

/// For faults that cut connections: when they hit established sessions, IoT Hub logs them so.
const E404104: Option<&str> =
    Some("404104 DeviceConnectionClosedRemotely (cause 2, the network path, when it cuts established connections)");
const E401003: Option<&str> = Some("401003 IoTHubUnauthorized");

/// The meaning and hint of a failure class.
pub fn explain(class: FailureClass) -> Explanation {
    use FailureClass::*;
    let (meaning, hint, iothub_error) = match class {
        DnsNxdomain => ("the hub name does not exist in DNS", "check the host name (typo, deleted hub, wrong region) and the DNS server the device uses", None),
        DnsServfail => ("the DNS server failed to resolve the name", "the resolver or an upstream server is broken or blocked; try another DNS server with --dns-server", None),
        DnsRefused => ("the DNS server refused to answer", "the device uses a resolver that does not serve it (ACL); fix the DNS configuration", None),
        DnsNoRecords => ("the name exists but has no address", "the DNS zone is incomplete (no A/AAAA record) or a split-horizon DNS hides it", None),
        DnsTimeout => ("no DNS answer in time", "UDP/TCP port 53 to the resolver is blocked or the resolver is down; check /etc/resolv.conf", None),
        DnsNoNameservers => ("no DNS server is configured", "configure a resolver (/etc/resolv.conf, DHCP) or give --dns-server", None),
        DnsError => ("DNS resolution failed", "see the message; compare with another resolver via --dns-server", None),
        TcpRefused => ("the port is closed or a firewall rejects the connection", "open the outbound port on the firewall; if only the MQTT port is blocked, use MQTT over WebSocket on 443", None),
        TcpTimeout => ("SYN packets go unanswered: a firewall silently drops them", "allow the outbound port on the firewall/proxy; if only 8883 is blocked use MQTT over WebSocket on 443", None),
        TcpUnreachable => ("no route to the hub's address", "check the default route, the interface and IPv6 connectivity", None),
        TcpReset => ("the connection was reset while connecting", "a firewall or proxy resets the connection; allow the destination", E404104),
        TcpPermission => ("the local system forbade the connection", "a local firewall rule or security policy blocks it; --interface needs CAP_NET_RAW", None),
        TcpError => ("the TCP connection failed", "see the message", None),
        TlsUnknownCa => ("the server's certificate chain does not lead to a root this device trusts", "install the hub's root CA in the device trust store (IoT Hub moved to DigiCert Global Root G2 in 2023) or pass it with --ca-file; a TLS-inspecting proxy also causes this", None),
        TlsExpired => ("a certificate in the chain has expired, or the device clock is ahead", "check the device clock (NTP); if the clock is right, the server's certificate is expired", None),
        TlsNotYetValid => ("a certificate is not valid yet: the device clock is behind", "the device clock is behind: fix time sync (NTP, RTC battery) before TLS can work", None),
        TlsHostnameMismatch => ("the certificate is not for this host name", "connect with the hub's real name (not an IP or alias), or a proxy/captive portal answers instead of the hub", None),
        TlsProtocolVersion => ("client and server share no TLS version", "the hub requires TLS 1.2 or newer; update the device's TLS stack", None),
        TlsHandshakeFailure => ("the TLS handshake failed", "see the message: a rejected client certificate, no common cipher, or a middlebox", None),
        TlsNotTls => ("the server answered with something that is not TLS", "a proxy, captive portal or a non-TLS service answers on this port", None),
        TlsClosed => ("the connection closed during the TLS handshake", "a firewall doing deep packet inspection or SNI filtering drops the handshake", E404104),
        TlsReset => ("the connection was reset during the TLS handshake", "a firewall doing deep packet inspection or SNI filtering resets the handshake", E404104),
        TlsTimeout => ("the TLS handshake did not finish in time", "a middlebox swallows the handshake (SNI filtering, MTU/fragmentation problems)", None),
        WebsocketRejected => ("the WebSocket upgrade was refused", "a proxy does not allow WebSocket upgrades, or the path is wrong", None),
        WebsocketTimeout => ("the WebSocket upgrade did not finish in time", "a proxy holds the upgrade request", None),
        WebsocketClosed => ("the connection closed during the WebSocket upgrade", "a proxy or firewall drops WebSocket upgrades", None),
        WebsocketProtocolError => ("the WebSocket upgrade answer was malformed", "something other than the hub answers on this port", None),
        MqttBadCredentials => ("the hub refused the credentials (bad user name or password / SAS token)", "check the device key, the SAS token's expiry and the device clock; regenerate the token", E401003),
        MqttNotAuthorized => ("the hub refused the identity: not authorized", "check that the device is registered and enabled and that the key or certificate belongs to it", E401003),
        MqttIdentifierRejected => ("the hub rejected the client id", "the client id must equal the device id (IoT Hub) and be allowed by the broker", None),
        MqttServerUnavailable => ("the hub said it is unavailable", "a hub-side problem (IoT Hub 500xxx); retry with backoff and check the hub's health", Some("500xxx (hub-side errors)")),
        MqttProtocolVersion => ("the server does not accept MQTT 3.1.1", "the server needs another MQTT version", None),
        MqttTimeout => ("no MQTT answer in time (CONNACK or PINGRESP)", "the server does not speak MQTT on this port, or is overloaded; a PINGRESP timeout after CONNACK means the path or the server stalls", None),
        MqttClosed => ("the server closed the connection without answering", "the server dropped the CONNECT: unknown device, wrong user name form, or a hub-side limit", E404104),
        MqttReset => ("the server reset the connection", "a firewall or the server reset the MQTT session", E404104),
        MqttProtocolError => ("the server's answer is not MQTT", "something other than an MQTT broker answers on this port (a proxy?)", None),
        AmqpTimeout => ("no AMQP answer in time", "the AMQP endpoint does not answer; use MQTT or HTTPS", None),
        AmqpClosed => ("the connection closed before the AMQP header", "a firewall or proxy drops AMQP on this port", None),
        AmqpProtocolError => ("the answer is not AMQP", "something other than an AMQP server answers on this port", None),
        HttpTimeout => ("no HTTP answer in time", "a proxy holds the request", None),
        HttpClosed => ("the connection closed before the HTTP answer", "a proxy or firewall drops HTTPS requests to the hub", None),
        HttpProtocolError => ("the answer is not HTTP", "something other than a web server answers on this port", None),
        HttpServerError => ("the server answered with a 5xx error", "a hub-side or proxy error; retry later and check the hub's health", Some("500xxx (hub-side errors)")),
    };
    Explanation {
        meaning,
        hint,
        iothub_error,
    }
}

/// The failure-class catalogue as a Markdown table (docs/failure-classes.md holds
/// exactly this; `hubprobe classes` prints it).
pub fn catalogue_markdown() -> String {
    let mut out =
        String::from("| class | what it means | what to do | IoT Hub error |\n|---|---|---|---|\n");
    for c in FailureClass::ALL {
        let e = explain(*c);
        out.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            c.id(),
            e.meaning,
            e.hint,
            e.iothub_error.unwrap_or("")
        ));
    }
    out
}

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// The device cannot connect this way.
    Critical,
    /// Degraded, or will break soon.
    Warning,
    /// Worth knowing.
    Info,
}

/// One conclusion drawn from the results, with its evidence.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Finding {
    /// Stable code: a failure class id, or a cross-endpoint code (`port_blocked_use_websocket` ...).
    pub code: String,
    /// How serious.
    pub severity: Severity,
    /// The failure class, when the finding is about one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<FailureClass>,
    /// Endpoints it concerns.
    pub endpoints: Vec<String>,
    /// What happened.
    pub summary: String,
    /// What to do.
    pub hint: String,
    /// The IoT Hub error it explains.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iothub_error: Option<String>,
}

/// What the findings need to know beyond the endpoint results.
pub struct Context<'a> {
    /// The hub profile (trust anchors it expects).
    pub profile: &'a crate::profile::Profile,
    /// How the probe authenticated (`none`, `sas-key`, ...).
    pub auth: &'a str,
    /// The SAS token's lifetime, when one was used.
    pub sas_token: Option<&'a crate::report::SasTokenInfo>,
}

/// A leaf certificate closer than this to expiry is a warning.
pub const LEAF_EXPIRY_WARNING_DAYS: f64 = 30.0;
/// A clock further off than this (seconds) is a warning.
pub const CLOCK_OFFSET_WARNING_S: f64 = 60.0;

/// Draws the findings from the endpoint results.
pub fn findings(endpoints: &[crate::report::EndpointReport], ctx: &Context<'_>) -> Vec<Finding> {
    use crate::probe::Phase;
    use crate::profile::{Protocol, Transport};

    let mut out = Vec::new();
    // No endpoint works: every failure is then critical.
    let all_failed = !endpoints.is_empty() && !endpoints.iter().any(works);

    // 1. One finding per failure class, naming every endpoint it hit.
    let mut by_class: std::collections::BTreeMap<
        FailureClass,
        Vec<&crate::report::EndpointReport>,
    > = Default::default();
    for e in endpoints {
        if let Some(p) = e.failed_phase() {
            if let Some(c) = p.class {
                by_class.entry(c).or_default().push(e);
            }
        }
    }
    for (class, eps) in &by_class {
        let ex = explain(*class);
        let first = eps[0]
            .failed_phase()
            .and_then(|p| p.message.clone())
            .unwrap_or_default();
        let mut hint = ex.hint.to_string();
        if *class == FailureClass::TlsUnknownCa && !ctx.profile.trust.expected_anchors.is_empty() {
            hint.push_str(&format!(
                ". {} certificates chain to: {}",
                ctx.profile.description,
                ctx.profile.trust.expected_anchors.join(", ")
            ));
            if !ctx.profile.trust.legacy_anchors.is_empty() {
                hint.push_str(&format!(
                    " (legacy: {})",
                    ctx.profile.trust.legacy_anchors.join(", ")
                ));
            }
        }
        out.push(Finding {
            code: class.id().to_string(),
            // The device's identity refused is fatal even if unauthenticated
            // endpoints (AMQP header, HTTPS) answer.
            severity: if all_failed || is_auth_failure(*class) {
                Severity::Critical
            } else {
                Severity::Warning
            },
            class: Some(*class),
            endpoints: eps.iter().map(|e| e.name.clone()).collect(),
            summary: format!("{}: {first}", ex.meaning),
            hint,
            iothub_error: ex.iothub_error.map(str::to_string),
        });
    }

    // 2. The MQTT port is blocked but another MQTT endpoint (WebSocket/443) works.
    let path_blocked = |c: FailureClass| {
        matches!(
            c,
            FailureClass::TcpTimeout
                | FailureClass::TcpRefused
                | FailureClass::TcpReset
                | FailureClass::TlsClosed
                | FailureClass::TlsReset
                | FailureClass::TlsTimeout
        )
    };
    let mqtt_ok: Vec<_> = endpoints
        .iter()
        .filter(|e| e.protocol == Protocol::Mqtt && e.failed_phase().is_none())
        .collect();
    for e in endpoints.iter().filter(|e| e.protocol == Protocol::Mqtt) {
        let Some(class) = e.failed_phase().and_then(|p| p.class) else {
            continue;
        };
        if !path_blocked(class) {
            continue;
        }
        // Only recommend an alternative at least as protected as the blocked endpoint.
        let alt = mqtt_ok
            .iter()
            .find(|a| a.port != e.port && (a.transport.uses_tls() || !e.transport.uses_tls()));
        if let Some(alt) = alt {
            let how = if alt.transport == Transport::Wss || alt.transport == Transport::Ws {
                "MQTT over WebSocket".to_string()
            } else {
                format!("the {} endpoint", alt.name)
            };
            out.push(Finding {
                code: "port_blocked_use_alternative".into(),
                severity: Severity::Warning,
                class: Some(class),
                endpoints: vec![e.name.clone(), alt.name.clone()],
                summary: format!(
                    "port {} ({}) is blocked ({class}) but {} on port {} works",
                    e.port, e.name, alt.name, alt.port
                ),
                hint: format!(
                    "use {how} (port {}), or open port {} outbound on the firewall",
                    alt.port, e.port
                ),
                iothub_error: None,
            });
        }
    }

    // 3. Evidence on working phases: trust anchors, expiry, clock, address families, auth.
    let mut seen_anchor = std::collections::BTreeSet::new();
    for e in endpoints {
        if let Some(tls) = e
            .phase(Phase::Tls)
            .filter(|p| p.is_ok())
            .and_then(|p| p.evidence.as_ref())
        {
            if let Some(days) = tls.get("leaf_days_left").and_then(|v| v.as_f64()) {
                if days < LEAF_EXPIRY_WARNING_DAYS {
                    out.push(Finding {
                        code: "tls_leaf_expiring".into(),
                        severity: Severity::Warning,
                        class: None,
                        endpoints: vec![e.name.clone()],
                        summary: format!("the server certificate expires in {days:.0} days"),
                        hint: "the hub operator must renew the certificate; devices with a pinned certificate will fail".into(),
                        iothub_error: None,
                    });
                }
            }
            let anchor = tls.get("trust_anchor").filter(|a| !a.is_null());
            if let Some(anchor) = anchor {
                let name = anchor
                    .get("name")
                    .and_then(|v| v.as_str())
                    .unwrap_or("?")
                    .to_string();
                let legacy = anchor
                    .get("legacy")
                    .and_then(|v| v.as_bool())
                    .unwrap_or(false);
                let expected = anchor
                    .get("expected")
                    .and_then(|v| v.as_bool())
                    .unwrap_or(false);
                let first_time = seen_anchor.insert(name.clone());
                if first_time && legacy {
                    out.push(Finding {
                        code: "trust_anchor_legacy".into(),
                        severity: Severity::Warning,
                        class: None,
                        endpoints: vec![e.name.clone()],
                        summary: format!("the chain ends at the legacy root '{name}'"),
                        hint: format!(
                            "add the current roots ({}) to the device trust store before the legacy root is retired",
                            ctx.profile.trust.expected_anchors.join(", ")
                        ),
                        iothub_error: None,
                    });
                } else if first_time
                    && !legacy
                    && !expected
                    && !ctx.profile.trust.expected_anchors.is_empty()
                {
                    out.push(Finding {
                        code: "trust_anchor_unexpected".into(),
                        severity: Severity::Warning,
                        class: None,
                        endpoints: vec![e.name.clone()],
                        summary: format!(
                            "the chain ends at '{name}', not at a root {} uses ({})",
                            ctx.profile.description,
                            ctx.profile.trust.expected_anchors.join(", ")
                        ),
                        hint: "a TLS-inspecting proxy re-signs the hub's certificate, or the target is not the hub; devices that only trust the hub's roots will fail".into(),
                        iothub_error: None,
                    });
                }
            }
        }
        if let Some(off) = e
            .phase(Phase::Http)
            .and_then(|p| p.evidence.as_ref())
            .and_then(|ev| ev.get("clock_offset_s"))
            .and_then(|v| v.as_f64())
        {
            if off.abs() > CLOCK_OFFSET_WARNING_S {
                let dir = if off > 0.0 { "behind" } else { "ahead of" };
                out.push(Finding {
                    code: "clock_offset".into(),
                    severity: Severity::Warning,
                    class: None,
                    endpoints: vec![e.name.clone()],
                    summary: format!("the device clock is {:.0} s {dir} the server's", off.abs()),
                    hint: "fix time sync (NTP); a wrong clock breaks certificate checks and SAS token validity".into(),
                    iothub_error: None,
                });
            }
        }
        if let Some(tcp) = e
            .phase(Phase::Tcp)
            .filter(|p| p.is_ok())
            .and_then(|p| p.evidence.as_ref())
        {
            let failed: Vec<String> = tcp
                .get("attempts")
                .and_then(|a| a.as_array())
                .into_iter()
                .flatten()
                .filter(|a| a.get("status").and_then(|s| s.as_str()) == Some("failed"))
                .map(|a| {
                    format!(
                        "{} ({})",
                        a.get("address").and_then(|s| s.as_str()).unwrap_or("?"),
                        a.get("class").and_then(|s| s.as_str()).unwrap_or("?")
                    )
                })
                .collect();
            if !failed.is_empty() {
                out.push(Finding {
                    code: "address_failing".into(),
                    severity: Severity::Info,
                    class: None,
                    endpoints: vec![e.name.clone()],
                    summary: format!("some of the hub's addresses fail: {}", failed.join(", ")),
                    hint: "clients that try these first (often IPv6) stall until their connect timeout".into(),
                    iothub_error: None,
                });
            }
        }
    }
    // Same address failures repeat per endpoint on the same host: keep them, they name the port.

    let auth_untested: Vec<String> = endpoints
        .iter()
        .filter(|e| {
            e.phase(Phase::Mqtt)
                .filter(|p| p.is_ok())
                .and_then(|p| p.evidence.as_ref())
                .and_then(|ev| ev.get("auth_tested"))
                .and_then(|v| v.as_bool())
                == Some(false)
        })
        .map(|e| e.name.clone())
        .collect();
    if !auth_untested.is_empty() && ctx.auth == "none" {
        out.push(Finding {
            code: "auth_not_tested".into(),
            severity: Severity::Info,
            class: None,
            endpoints: auth_untested,
            summary: "MQTT is reachable end to end; authentication was not tested (no device credentials given)".into(),
            hint: "set IOTHUB_DEVICE_CONNECTION_STRING (or --sas-token, --cert/--key) to test the device's own identity".into(),
            iothub_error: None,
        });
    }

    if let Some(sas) = ctx.sas_token {
        if sas.expires_in_s <= 0 {
            out.push(Finding {
                code: "sas_token_expired".into(),
                severity: Severity::Critical,
                class: None,
                endpoints: vec![],
                summary: format!("the SAS token expired at {}", sas.expires_at),
                hint: "generate a new token (hubprobe sas-token); if it should still be valid, the device clock is wrong".into(),
                iothub_error: E401003.map(str::to_string),
            });
        } else if sas.expires_in_s < 300 {
            out.push(Finding {
                code: "sas_token_expiring".into(),
                severity: Severity::Warning,
                class: None,
                endpoints: vec![],
                summary: format!("the SAS token expires in {} s", sas.expires_in_s),
                hint: "the hub closes the connection when the token expires; renew it earlier"
                    .into(),
                iothub_error: Some(
                    "404104 DeviceConnectionClosedRemotely (cause 1: SAS token expiry)".into(),
                ),
            });
        }
        // Only a token hubprobe generated has a known lifetime; a ready token only says
        // how long it has left.
        let lifetime = sas.ttl_s.unwrap_or(0);
        if lifetime > 0 && lifetime <= 24 * 3600 {
            let renew = lifetime as f64 * 0.8 / 60.0;
            out.push(Finding {
                code: "sas_token_lifetime".into(),
                severity: Severity::Info,
                class: None,
                endpoints: vec![],
                summary: format!(
                    "SAS tokens live {}: an SDK that renews at 80 % reconnects over MQTT about every {renew:.0} min",
                    humantime::format_duration(std::time::Duration::from_secs(lifetime))
                ),
                hint: "each renewal is a disconnect that IoT Hub logs as 404104; periodic 404104 at that period is token renewal, not the network".into(),
                iothub_error: Some("404104 DeviceConnectionClosedRemotely (cause: SAS token renewal)".into()),
            });
        }
    }
    out
}

/// An endpoint whose every phase passed.
fn works(e: &crate::report::EndpointReport) -> bool {
    !e.phases.is_empty() && e.phases.iter().all(|p| p.is_ok())
}

/// Classes that mean the hub refused the device's identity.
pub fn is_auth_failure(class: FailureClass) -> bool {
    matches!(
        class,
        FailureClass::MqttBadCredentials
            | FailureClass::MqttNotAuthorized
            | FailureClass::MqttIdentifierRejected
    )
}

/// The overall verdict from the endpoints and findings.
pub fn verdict(
    endpoints: &[crate::report::EndpointReport],
    findings: &[Finding],
) -> crate::report::Verdict {
    use crate::report::Verdict;
    if endpoints.is_empty() {
        return Verdict::Unknown;
    }
    let mut v = Verdict::Ok;
    let any_failed = endpoints.iter().any(|e| e.failed_phase().is_some());
    if any_failed && !endpoints.iter().any(works) {
        v = Verdict::Critical;
    } else if any_failed {
        v = Verdict::Warning;
    }
    if v == Verdict::Ok && endpoints.iter().any(|e| e.verdict == Verdict::Unknown) {
        // A chain that never ran (deadline before it started) proves nothing; a
        // failure elsewhere still says more than "unknown".
        v = Verdict::Unknown;
    }
    for f in findings {
        let fv = match f.severity {
            Severity::Critical => Verdict::Critical,
            Severity::Warning => Verdict::Warning,
            Severity::Info => Verdict::Ok,
        };
        v = v.max(fv);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for c in FailureClass::ALL {
            assert!(seen.insert(c.id()), "duplicate {}", c.id());
            assert_eq!(FailureClass::from_id(c.id()), Some(*c));
            let (phase, reason) = c.id().split_once('.').unwrap();
            assert!(!phase.is_empty() && !reason.is_empty());
            let ex = explain(*c);
            assert!(!ex.meaning.is_empty() && !ex.hint.is_empty());
        }
    }

    #[test]
    fn the_classes_the_issue_names_exist() {
        for id in [
            "dns.nxdomain",
            "dns.servfail",
            "dns.refused",
            "dns.no_records",
            "dns.timeout",
            "dns.no_nameservers",
            "tcp.refused",
            "tcp.timeout",
            "tcp.unreachable",
            "tcp.reset",
            "tcp.permission",
            "tls.unknown_ca",
            "tls.expired",
            "tls.not_yet_valid",
            "tls.hostname_mismatch",
            "tls.protocol_version",
            "tls.handshake_failure",
            "tls.closed",
            "tls.timeout",
            "mqtt.bad_credentials",
            "mqtt.not_authorized",
            "mqtt.identifier_rejected",
            "mqtt.server_unavailable",
            "mqtt.protocol_version",
            "mqtt.timeout",
            "mqtt.closed",
        ] {
            assert!(FailureClass::from_id(id).is_some(), "{id}");
        }
    }

    #[test]
    fn docs_hold_the_current_catalogue() {
        let doc = include_str!("../docs/failure-classes.md");
        assert!(
            doc.contains(&catalogue_markdown()),
            "docs/failure-classes.md is stale: regenerate its table with `hubprobe classes`"
        );
    }

    #[test]
    fn iothub_errors_where_they_apply() {
        assert!(explain(FailureClass::MqttBadCredentials)
            .iothub_error
            .unwrap()
            .starts_with("401003"));
        assert!(explain(FailureClass::TcpReset)
            .iothub_error
            .unwrap()
            .starts_with("404104"));
        assert!(explain(FailureClass::MqttServerUnavailable)
            .iothub_error
            .unwrap()
            .starts_with("500"));
        assert!(explain(FailureClass::TlsNotYetValid)
            .hint
            .contains("clock is behind"));
    }

    mod findings {
        use super::super::*;
        use crate::probe::{Phase, PhaseResult};
        use crate::profile::{Profile, Protocol, Transport};
        use crate::report::{EndpointReport, SasTokenInfo, Verdict};
        use serde_json::json;
        use std::time::Duration;

        fn ok(phase: Phase, ev: serde_json::Value) -> PhaseResult {
            PhaseResult::ok(phase, Duration::from_millis(1), ev)
        }

        fn failed(phase: Phase, class: FailureClass) -> PhaseResult {
            PhaseResult::failed(phase, Duration::from_millis(1), class, "detail", json!({}))
        }

        fn endpoint(
            name: &str,
            transport: Transport,
            port: u16,
            phases: Vec<PhaseResult>,
        ) -> EndpointReport {
            let failed = phases
                .iter()
                .any(|p| p.status == crate::probe::Status::Failed);
            EndpointReport {
                name: name.into(),
                protocol: Protocol::Mqtt,
                transport,
                port,
                verdict: if failed {
                    Verdict::Critical
                } else {
                    Verdict::Ok
                },
                phases,
            }
        }

        fn mqtt_ok(
            name: &str,
            transport: Transport,
            port: u16,
            tls_ev: serde_json::Value,
        ) -> EndpointReport {
            endpoint(
                name,
                transport,
                port,
                vec![
                    ok(Phase::Dns, json!({})),
                    ok(Phase::Tcp, json!({"attempts": []})),
                    ok(Phase::Tls, tls_ev),
                    ok(Phase::Mqtt, json!({"auth_tested": true})),
                ],
            )
        }

        fn blocked(
            name: &str,
            transport: Transport,
            port: u16,
            class: FailureClass,
        ) -> EndpointReport {
            endpoint(
                name,
                transport,
                port,
                vec![ok(Phase::Dns, json!({})), failed(Phase::Tcp, class)],
            )
        }

        fn run(
            eps: &[EndpointReport],
            auth: &str,
            sas: Option<&SasTokenInfo>,
        ) -> (Vec<Finding>, Verdict) {
            let profile = Profile::load("azure-iot-hub").unwrap();
            let ctx = Context {
                profile: &profile,
                auth,
                sas_token: sas,
            };
            let f = findings(eps, &ctx);
            let v = verdict(eps, &f);
            (f, v)
        }

        fn codes(f: &[Finding]) -> Vec<&str> {
            f.iter().map(|f| f.code.as_str()).collect()
        }

        fn good_anchor() -> serde_json::Value {
            json!({"trust_anchor": {"name": "DigiCert Global Root G2", "expected": true, "legacy": false}, "leaf_days_left": 200.0})
        }

        #[test]
        fn everything_ok_is_ok() {
            let eps = [mqtt_ok("mqtt-tls", Transport::Tls, 8883, good_anchor())];
            let (f, v) = run(&eps, "sas-key", None);
            assert!(f.is_empty(), "{f:?}");
            assert_eq!(v, Verdict::Ok);
        }

        #[test]
        fn all_endpoints_failing_is_critical() {
            let eps = [
                blocked("mqtt-tls", Transport::Tls, 8883, FailureClass::TcpTimeout),
                blocked("mqtt-ws", Transport::Wss, 443, FailureClass::TcpTimeout),
            ];
            let (f, v) = run(&eps, "none", None);
            assert_eq!(codes(&f), ["tcp.timeout"]);
            assert_eq!(f[0].severity, Severity::Critical);
            assert_eq!(f[0].endpoints, ["mqtt-tls", "mqtt-ws"]);
            assert_eq!(v, Verdict::Critical);
        }

        #[test]
        fn blocked_8883_with_websocket_open_recommends_websocket() {
            let eps = [
                blocked("mqtt-tls", Transport::Tls, 8883, FailureClass::TcpTimeout),
                mqtt_ok("mqtt-ws", Transport::Wss, 443, good_anchor()),
            ];
            let (f, v) = run(&eps, "sas-key", None);
            assert_eq!(codes(&f), ["tcp.timeout", "port_blocked_use_alternative"]);
            assert!(f[1].hint.contains("MQTT over WebSocket"));
            assert_eq!(f[0].severity, Severity::Warning);
            assert_eq!(v, Verdict::Warning);
        }

        #[test]
        fn plaintext_is_never_recommended_for_a_blocked_tls_port() {
            let plain = endpoint(
                "mqtt",
                Transport::Tcp,
                1883,
                vec![
                    ok(Phase::Dns, json!({})),
                    ok(Phase::Tcp, json!({})),
                    ok(Phase::Mqtt, json!({})),
                ],
            );
            let eps = [
                blocked("mqtt-tls", Transport::Tls, 8883, FailureClass::TcpRefused),
                plain,
            ];
            let (f, _) = run(&eps, "none", None);
            assert!(
                !codes(&f).contains(&"port_blocked_use_alternative"),
                "{f:?}"
            );
        }

        #[test]
        fn not_a_path_problem_gets_no_alternative() {
            let eps = [
                endpoint(
                    "mqtt-tls",
                    Transport::Tls,
                    8883,
                    vec![
                        ok(Phase::Dns, json!({})),
                        failed(Phase::Tls, FailureClass::TlsUnknownCa),
                    ],
                ),
                mqtt_ok("mqtt-ws", Transport::Wss, 443, good_anchor()),
            ];
            let (f, _) = run(&eps, "none", None);
            assert!(!codes(&f).contains(&"port_blocked_use_alternative"));
            let hint = &f.iter().find(|f| f.code == "tls.unknown_ca").unwrap().hint;
            assert!(
                hint.contains("DigiCert Global Root G2") && hint.contains("Baltimore"),
                "{hint}"
            );
        }

        #[test]
        fn anchors_expiry_and_clock() {
            let legacy = json!({"trust_anchor": {"name": "Baltimore CyberTrust Root", "expected": false, "legacy": true}, "leaf_days_left": 10.0});
            // https shares mqtt-tls's anchor: the anchor finding comes once, the clock one still comes.
            let proxy = json!({"trust_anchor": {"name": "Contoso Inspection CA", "expected": false, "legacy": false}, "leaf_days_left": 300.0});
            let mut https = mqtt_ok("https", Transport::Tls, 443, legacy.clone());
            https.phases[3] = ok(Phase::Http, json!({"clock_offset_s": -300.0}));
            let eps = [
                mqtt_ok("mqtt-tls", Transport::Tls, 8883, legacy),
                mqtt_ok("mqtt-ws", Transport::Wss, 443, proxy),
                https,
            ];
            let (f, v) = run(&eps, "sas-key", None);
            let c = codes(&f);
            for want in [
                "tls_leaf_expiring",
                "trust_anchor_legacy",
                "trust_anchor_unexpected",
                "clock_offset",
            ] {
                assert!(c.contains(&want), "{want} missing from {c:?}");
            }
            assert_eq!(
                c.iter().filter(|c| **c == "trust_anchor_legacy").count(),
                1,
                "{c:?}"
            );
            let clock = f.iter().find(|f| f.code == "clock_offset").unwrap();
            assert!(
                clock.summary.contains("300 s ahead of"),
                "{}",
                clock.summary
            );
            assert_eq!(v, Verdict::Warning);
        }

        #[test]
        fn sas_token_lifetime_and_expiry() {
            let eps = [mqtt_ok("mqtt-tls", Transport::Tls, 8883, good_anchor())];
            let hour = SasTokenInfo {
                resource: "h/devices/d".into(),
                expires_at: "x".into(),
                expires_in_s: 3600,
                ttl_s: Some(3600),
            };
            let (f, v) = run(&eps, "sas-key", Some(&hour));
            let life = f.iter().find(|f| f.code == "sas_token_lifetime").unwrap();
            assert!(life.summary.contains("48 min"), "{}", life.summary);
            assert!(life.iothub_error.as_deref().unwrap().starts_with("404104"));
            assert_eq!(v, Verdict::Ok);

            let expired = SasTokenInfo {
                resource: "h/devices/d".into(),
                expires_at: "x".into(),
                expires_in_s: -5,
                ttl_s: None,
            };
            let (f, v) = run(&eps, "sas-token", Some(&expired));
            assert!(codes(&f).contains(&"sas_token_expired"));
            assert_eq!(v, Verdict::Critical);
        }

        #[test]
        fn auth_not_tested_only_without_credentials() {
            let mut ep = mqtt_ok("mqtt-tls", Transport::Tls, 8883, good_anchor());
            ep.phases[3] = ok(Phase::Mqtt, json!({"auth_tested": false}));
            let (f, v) = run(std::slice::from_ref(&ep), "none", None);
            assert_eq!(codes(&f), ["auth_not_tested"]);
            assert_eq!(v, Verdict::Ok);
        }

        #[test]
        fn refused_identity_is_critical_even_if_other_endpoints_answer() {
            let eps = [
                endpoint(
                    "mqtt-tls",
                    Transport::Tls,
                    8883,
                    vec![
                        ok(Phase::Dns, json!({})),
                        failed(Phase::Mqtt, FailureClass::MqttNotAuthorized),
                    ],
                ),
                mqtt_ok("https", Transport::Tls, 443, good_anchor()),
            ];
            let (f, v) = run(&eps, "sas-key", None);
            assert_eq!(f[0].severity, Severity::Critical);
            assert_eq!(v, Verdict::Critical);
        }

        #[test]
        fn a_failure_outranks_a_chain_that_never_ran() {
            let mut skipped = endpoint(
                "mqtt-ws",
                Transport::Wss,
                443,
                vec![PhaseResult::skipped(Phase::Dns, "deadline")],
            );
            skipped.verdict = Verdict::Unknown;
            let eps = [
                blocked("mqtt-tls", Transport::Tls, 8883, FailureClass::TcpTimeout),
                skipped,
            ];
            let (_, v) = run(&eps, "none", None);
            assert_eq!(v, Verdict::Critical);
        }

        #[test]
        fn a_chain_that_never_ran_is_unknown() {
            let mut ep = endpoint(
                "mqtt-tls",
                Transport::Tls,
                8883,
                vec![PhaseResult::skipped(Phase::Dns, "deadline")],
            );
            ep.verdict = Verdict::Unknown;
            let (_, v) = run(&[ep], "none", None);
            assert_eq!(v, Verdict::Unknown);
        }
    }
}

//! Failure classes and their catalogue: each class is a stable id (`phase.reason`)
//! with what it means, what to do and, where it applies, the IoT Hub error it explains.

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
    /// The DNS server's port is closed or its host unreachable (ICMP unreachable).
    DnsUnreachable => "dns.unreachable",
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
    /// A TLS handshake message from the server is larger than the client accepts
    /// (64 KiB): usually a certificate chain with thousands of names.
    TlsMessageTooLarge => "tls.message_too_large",
    /// The connection closed during the handshake.
    TlsClosed => "tls.closed",
    /// The connection was reset during the handshake.
    TlsReset => "tls.reset",
    /// The handshake did not finish in time.
    TlsTimeout => "tls.timeout",
    /// The full-size handshake stalled but one with a clamped MSS completed: a
    /// path-MTU black hole (large packets dropped, no ICMP back).
    TlsMtuBlackHole => "tls.mtu_black_hole",
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
    /// MQTT 5 CONNACK 0x89: the server is busy.
    MqttServerBusy => "mqtt.server_busy",
    /// MQTT 5 CONNACK 0x8A: the client is banned.
    MqttBanned => "mqtt.banned",
    /// MQTT 5 CONNACK 0x8C: bad authentication method.
    MqttBadAuthMethod => "mqtt.bad_auth_method",
    /// MQTT 5 CONNACK 0x95: the CONNECT is larger than the server accepts.
    MqttPacketTooLarge => "mqtt.packet_too_large",
    /// MQTT 5 CONNACK 0x97 quota exceeded or 0x9F connection rate exceeded.
    MqttQuotaExceeded => "mqtt.quota_exceeded",
    /// MQTT 5 CONNACK 0x9C use another server or 0x9D server moved (with a Server Reference).
    MqttServerRedirect => "mqtt.server_redirect",
    /// MQTT 5 CONNACK with another refusing reason code (0x80 unspecified, 0x83 implementation specific, ...).
    MqttRefused => "mqtt.refused",
    /// No AMQP protocol header in time.
    AmqpTimeout => "amqp.timeout",
    /// The connection closed or reset before the AMQP header.
    AmqpClosed => "amqp.closed",
    /// The server answered with something that is not an AMQP header.
    AmqpProtocolError => "amqp.protocol_error",
    /// SASL outcome `auth`: the server refused the SASL credentials (PLAIN user name
    /// or password, or a mechanism it does not allow).
    AmqpAuthFailed => "amqp.auth_failed",
    /// SASL outcome `sys`, `sys-perm` or `sys-temp`: the server could not authenticate.
    AmqpSaslError => "amqp.sasl_error",
    /// CBS put-token status 401 or error `amqp:unauthorized-access`: the token or identity is refused.
    AmqpNotAuthorized => "amqp.not_authorized",
    /// CBS put-token status 404 or error `amqp:not-found`: no such node, device or address.
    AmqpNotFound => "amqp.not_found",
    /// CBS status 503 or `amqp:resource-limit-exceeded` / `com.microsoft:server-busy`.
    AmqpServerBusy => "amqp.server_busy",
    /// The server refused open, begin, put-token or attach with another error.
    AmqpRefused => "amqp.refused",
    /// No HTTP response in time.
    HttpTimeout => "http.timeout",
    /// The connection closed or reset before the HTTP response.
    HttpClosed => "http.closed",
    /// The server's answer is not HTTP.
    HttpProtocolError => "http.protocol_error",
    /// The server answered with a 5xx status.
    HttpServerError => "http.server_error",
    /// The proxy wants credentials (HTTP 407, SOCKS5 authentication refused).
    ProxyAuthRequired => "proxy.auth_required",
    /// The proxy asks for an authentication scheme hubprobe does not speak (NTLM, Negotiate ...).
    ProxyAuthUnsupported => "proxy.auth_unsupported",
    /// The proxy's rules refuse this destination or port (HTTP 403, SOCKS5 reply 2).
    ProxyForbidden => "proxy.forbidden",
    /// The proxy could not reach the hub (HTTP 502/503/504, SOCKS5 replies 3, 4, 5, 6).
    ProxyTargetUnreachable => "proxy.target_unreachable",
    /// The proxy did not answer the CONNECT or SOCKS exchange in time.
    ProxyTimeout => "proxy.timeout",
    /// The server at the proxy's address is not a proxy of that kind (or closed the exchange).
    ProxyProtocolError => "proxy.protocol_error",
    /// The proxy refused the tunnel for another reason (another HTTP status, SOCKS5 general failure).
    ProxyRejected => "proxy.rejected",
    /// DPS answered the registration with 400: the request is malformed.
    DpsBadRequest => "dps.bad_request",
    /// DPS answered the registration with 401: the device's key or certificate is refused.
    DpsUnauthorized => "dps.unauthorized",
    /// DPS answered the registration with 404: no enrollment for this registration id.
    DpsEnrollmentNotFound => "dps.enrollment_not_found",
    /// DPS answered the registration with 412: a precondition (the enrollment's etag) failed.
    DpsPreconditionFailed => "dps.precondition_failed",
    /// DPS answered the registration with 429: the device or the DPS instance is throttled.
    DpsThrottled => "dps.throttled",
    /// DPS answered the registration with a 5xx status.
    DpsServerError => "dps.server_error",
    /// DPS finished the registration with status `failed`.
    DpsAssignmentFailed => "dps.assignment_failed",
    /// DPS finished the registration with status `disabled`: the enrollment is disabled.
    DpsDisabled => "dps.disabled",
    /// The registration was not finished by the run's deadline (no answer, or still `assigning`).
    DpsTimeout => "dps.timeout",
    /// DPS's answer is not the documented registration reply.
    DpsProtocolError => "dps.protocol_error",
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
pub const E404104: Option<&str> =
    Some("404104 DeviceConnectionClosedRemotely (cause 2, the network path, when it cuts established connections)");
/// The IoT Hub error of a refused identity.
pub const E401003: Option<&str> = Some("401003 IoTHubUnauthorized");

/// The meaning and hint of a failure class.
pub fn explain(class: FailureClass) -> Explanation {
    use FailureClass::*;
    let (meaning, hint, iothub_error) = match class {
        DnsNxdomain => ("the hub name does not exist in DNS", "check the host name (typo, deleted hub, wrong region) and the DNS server the device uses", None),
        DnsServfail => ("the DNS server failed to resolve the name", "the resolver or an upstream server is broken or blocked; try another DNS server with --dns-server", None),
        DnsRefused => ("the DNS server refused to answer", "the device uses a resolver that does not serve it (ACL); fix the DNS configuration", None),
        DnsNoRecords => ("the name exists but has no address", "the DNS zone is incomplete (no A/AAAA record) or a split-horizon DNS hides it", None),
        DnsTimeout => ("no DNS answer in time", "UDP/TCP port 53 to the resolver is blocked or the resolver is down; check /etc/resolv.conf", None),
        DnsUnreachable => ("nothing answers DNS at the server's address and port", "no DNS server runs there (ICMP port unreachable): check the resolver's address and port and that it is running", None),
        DnsNoNameservers => ("no DNS server is configured", "configure a resolver (/etc/resolv.conf, DHCP) or give --dns-server", None),
        DnsError => ("DNS resolution failed", "see the message; compare with another resolver via --dns-server", None),
        TcpRefused => ("the port is closed or a firewall rejects the connection", "open the outbound port on the firewall", None),
        TcpTimeout => ("SYN packets go unanswered: a firewall silently drops them", "allow the outbound port on the firewall/proxy", None),
        TcpUnreachable => ("no route to the hub's address", "check the default route, the interface and IPv6 connectivity", None),
        TcpReset => ("the connection was reset while connecting", "a firewall or proxy resets the connection; allow the destination", E404104),
        TcpPermission => ("the local system forbade the connection", "a local firewall rule or security policy blocks it; --interface needs CAP_NET_RAW", None),
        TcpError => ("the TCP connection failed", "see the message", None),
        TlsUnknownCa => ("the server's certificate chain does not lead to a root this device trusts", "install the server's root CA in the device trust store or pass it with --ca-file; a TLS-inspecting proxy also causes this", None),
        TlsExpired => ("a certificate in the chain has expired, or the device clock is ahead", "check the device clock (NTP); if the clock is right, the server's certificate is expired", None),
        TlsNotYetValid => ("a certificate is not valid yet: the device clock is behind", "the device clock is behind: fix time sync (NTP, RTC battery) before TLS can work", None),
        TlsHostnameMismatch => ("the certificate is not for this host name", "connect with the hub's real name (not an IP or alias), or a proxy/captive portal answers instead of the hub", None),
        TlsProtocolVersion => ("client and server share no TLS version", "the hub requires TLS 1.2 or newer; update the device's TLS stack", None),
        TlsHandshakeFailure => ("the TLS handshake failed", "see the message: a rejected client certificate, no common cipher, or a middlebox", None),
        TlsNotTls => ("the server answered with something that is not TLS", "a proxy, captive portal or a non-TLS service answers on this port", None),
        TlsMessageTooLarge => ("the server sent a TLS handshake message larger than 64 KiB (the limit of rustls and of most TLS clients): usually its certificate chain, with thousands of names or many certificates", "the server's certificate is the problem, not the network: issue a certificate with fewer subject alternative names (split it across several certificates or use a wildcard) or send a shorter chain", None),
        TlsClosed => ("the connection closed during the TLS handshake", "a firewall doing deep packet inspection or SNI filtering drops the handshake", E404104),
        TlsReset => ("the connection was reset during the TLS handshake", "a firewall doing deep packet inspection or SNI filtering resets the handshake", E404104),
        TlsTimeout => ("the TLS handshake did not finish in time", "a middlebox swallows the handshake (SNI filtering) or the server stalls; the TLS evidence's `mtu` section says whether a retry with a small MSS was tried (when it was and it stalled too, the path MTU is not the cause)", None),
        TlsMtuBlackHole => ("a path-MTU black hole: a link on the path (tunnel, VPN, cellular APN) has a smaller MTU and the ICMP that would say so is filtered", "on the device or its router, lower the interface MTU to the largest working MSS plus 40 (IPv4) or 60 (IPv6), or clamp the MSS on the router (nftables: `tcp flags syn tcp option maxseg size set rt mtu`); or let ICMP type 3 code 4 (IPv4) and ICMPv6 type 2 (packet too big) through the firewalls on the path. IoT Hub cannot fix this: the drop is on the device's path", None),
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
        MqttServerBusy => ("the broker is busy (MQTT 5 reason 0x89)", "a broker-side overload; retry with backoff and check the broker's health", Some("503003 (throttling)")),
        MqttBanned => ("the broker has banned this client (MQTT 5 reason 0x8A)", "the broker operator blocked this client id, user or address; ask them to lift the ban", None),
        MqttBadAuthMethod => ("the broker does not support the authentication method (MQTT 5 reason 0x8C)", "use an authentication method the broker supports (user name and password, or a client certificate)", None),
        MqttPacketTooLarge => ("the CONNECT is larger than the broker accepts (MQTT 5 reason 0x95)", "shorten the user name, password or client id, or raise the broker's maximum packet size", None),
        MqttQuotaExceeded => ("the broker refused the connection: a quota or connection rate is exceeded (MQTT 5 reason 0x97 / 0x9F)", "connect less often (back off between reconnects) or raise the quota on the broker or hub", Some("403002 IoTHubQuotaExceeded")),
        MqttServerRedirect => ("the broker redirects to another server (MQTT 5 reason 0x9C use another server / 0x9D server moved)", "connect to the server named in the CONNACK's Server Reference (the evidence's connack_properties.server_reference) and update the device's configuration", None),
        MqttRefused => ("the broker refused the connection with an MQTT 5 reason code", "see the reason code, its name and the broker's Reason String in the evidence", None),
        AmqpTimeout => ("no AMQP answer in time", "the AMQP endpoint does not answer; use MQTT or HTTPS", None),
        AmqpClosed => ("the connection closed before the AMQP header", "a firewall or proxy drops AMQP on this port", None),
        AmqpProtocolError => ("the answer is not AMQP", "something other than an AMQP server answers on this port", None),
        AmqpAuthFailed => ("the AMQP server refused the SASL credentials", "check the user name and password (SASL PLAIN), or that the server allows the mechanism used (ANONYMOUS for claims-based security); the evidence lists the mechanisms it offers", E401003),
        AmqpSaslError => ("the AMQP server could not authenticate (SASL system error)", "a server-side problem; retry later and check the server's health", None),
        AmqpNotAuthorized => ("the AMQP server refused the token or identity (CBS put-token 401 / unauthorized-access)", "check the device key, the SAS token's expiry and audience, and the device clock; regenerate the token", E401003),
        AmqpNotFound => ("the AMQP server has no such node, device or address", "check the device id and that the device is registered; the evidence names the address", Some("404001 DeviceNotFound")),
        AmqpServerBusy => ("the AMQP server is busy or a quota is exceeded", "retry with backoff; check the hub's quota and throttling limits", Some("403002 IoTHubQuotaExceeded / 503003 PartitionNotFound (throttling and quota)")),
        AmqpRefused => ("the AMQP server refused a step (open, begin, put-token or attach)", "see the error condition and description in the evidence", None),
        HttpTimeout => ("no HTTP answer in time", "a proxy holds the request", None),
        HttpClosed => ("the connection closed before the HTTP answer", "a proxy or firewall drops HTTPS requests to the hub", None),
        HttpProtocolError => ("the answer is not HTTP", "something other than a web server answers on this port", None),
        HttpServerError => ("the server answered with a 5xx error", "a hub-side or proxy error; retry later and check the hub's health", Some("500xxx (hub-side errors)")),
        ProxyAuthRequired => ("the proxy refused the tunnel without valid credentials (HTTP 407, or SOCKS5 user name/password refused)", "give the proxy user in the URL (http://user@proxy:3128) and the password in HUBPROBE_PROXY_PASSWORD or [proxy] password_file; configure the same credentials in the device SDK's proxy options", Some("the SDK reports a connection error or timeout, never reaching the hub (no IoT Hub error code)")),
        ProxyAuthUnsupported => ("the proxy asks for an authentication scheme hubprobe does not speak (NTLM, Negotiate/Kerberos, Digest): the device SDKs speak only Basic", "ask the proxy's administrators for a Basic-auth or unauthenticated rule for the device (or an allow-list by source address); NTLM and Negotiate proxies need a local helper proxy (cntlm) on the device", None),
        ProxyForbidden => ("the proxy's rules refuse this destination or port (HTTP 403, SOCKS5 'not allowed by ruleset')", "most proxies allow CONNECT to 443 only (squid's SSL_ports): use MQTT or AMQP over WebSocket on 443, or ask for 8883/5671 to the hub to be allowed", None),
        ProxyTargetUnreachable => ("the proxy could not reach the hub (HTTP 502/503/504, SOCKS5 host/network unreachable or connection refused)", "the proxy's own outbound path to the hub fails: check its DNS and firewall for the hub's name and port; the status and the proxy's message are in the evidence", None),
        ProxyTimeout => ("the proxy did not answer the tunnel request in time", "the proxy accepts connections but holds the request (overloaded, or waiting on its own connect to the hub): check the proxy and its path to the hub", None),
        ProxyProtocolError => ("the server at the proxy's address does not speak the proxy protocol configured (not an HTTP proxy, not SOCKS5), or closed the exchange", "check the proxy URL's scheme (http:// vs socks5://) and port", None),
        ProxyRejected => ("the proxy refused the tunnel for another reason", "see the status and message in the evidence; the proxy's own log has the reason", None),
        DpsBadRequest => ("DPS refused the registration request as malformed (400)", "check the registration id (letters, digits, '-', '.', '_', ':') and the custom payload; update the device SDK", Some("400xxx (DPS: bad request)")),
        DpsUnauthorized => ("DPS refused the device's credential (401)", "check the id scope, the registration id and the key (an enrollment group's key needs --enrollment-group: the device key is derived from it), the token's expiry and the device clock; for X.509, that the certificate chains to the enrollment's CA", Some("401002 (DPS: unauthorized)")),
        DpsEnrollmentNotFound => ("DPS has no enrollment for this registration id (404)", "create an individual enrollment for the registration id, or an enrollment group its key or certificate belongs to; check the id scope (another DPS instance?)", Some("404xxx (DPS: enrollment not found)")),
        DpsPreconditionFailed => ("DPS refused the registration: a precondition failed (412)", "the enrollment changed meanwhile (etag mismatch); retry the registration", Some("412xxx (DPS: precondition failed)")),
        DpsThrottled => ("DPS throttled the registration (429)", "the device (or the DPS instance) registers too often: wait the retry-after the report gives before registering again, and give the device a backoff; re-registering on every boot is the usual cause", Some("429001 (DPS: throttled)")),
        DpsServerError => ("DPS answered with a server error (5xx)", "a DPS-side problem: retry with backoff and check the Azure status page for DPS in the region", Some("500xxx (DPS: server error)")),
        DpsAssignmentFailed => ("DPS could not assign the device to a hub (status failed)", "see the error DPS gave: the allocation policy found no linked hub, a custom allocation function failed, or the hub refused the device; check the enrollment's linked hubs", None),
        DpsDisabled => ("the device's enrollment is disabled in DPS", "enable the enrollment (or the enrollment group) in DPS, or the device will never be assigned a hub", None),
        DpsTimeout => ("DPS did not finish the registration by the run's deadline", "DPS kept the registration in 'assigning' or did not answer: retry with a longer --deadline; if it stays so, check the allocation policy and the linked hubs", None),
        DpsProtocolError => ("DPS's answer is not the documented registration reply", "something other than DPS answers (a proxy?), or the DPS API changed; see the message", None),
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

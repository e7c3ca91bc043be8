//! Typed evidence per phase: what each handshake saw, also on failure.
//!
//! Each struct serializes exactly as the report's `evidence` object of its phase.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::class::FailureClass;
use super::phase::Phase;

/// Where the addresses came from, so a report can tell a DNS answer from a
/// hosts-file override or a configured IP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DnsSource {
    /// Name servers were asked (or the resolver answered a special-use name itself).
    Dns,
    /// The hosts file held the name; no query was sent.
    Hosts,
    /// The host was an IP literal; no query was sent.
    Literal,
}

/// Outcome of one address family's query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FamilyStatus {
    /// At least one address of this family was found.
    Ok,
    /// None was found; `class` says why.
    Failed,
}

/// One address record, with the TTL that tells how long the device may keep
/// using it (a short TTL explains addresses changing between runs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressRecord {
    /// The address.
    pub address: IpAddr,
    /// TTL in seconds as received; 0 for hosts-file entries, which have none.
    pub ttl: u32,
}

/// What one family (A or AAAA) saw. Kept per family because "IPv6 broken, IPv4
/// fine" is a common and important finding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FamilyEvidence {
    /// `ok` or `failed`.
    pub status: FamilyStatus,
    /// Wall time of this family's query in milliseconds.
    pub duration_ms: f64,
    /// Why no address was found (set exactly when failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<FailureClass>,
    /// Failure detail (set exactly when failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The address records found.
    #[serde(default)]
    pub records: Vec<AddressRecord>,
}

/// Evidence of the DNS phase, stored in [`PhaseResult::evidence`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DnsEvidence {
    /// The host name as given.
    pub query: String,
    /// True when the host was an IP literal and nothing was resolved.
    pub literal: bool,
    /// Where the answer came from.
    pub source: DnsSource,
    /// The servers asked (`ip:port`): the explicit server, or the configured ones
    /// for the system configuration. Empty when no query was sent.
    pub servers: Vec<String>,
    /// The CNAME targets followed, in order (without the trailing dot); empty when
    /// the name had no alias.
    pub cname_chain: Vec<String>,
    /// The A query (absent for literals and names that could not be queried).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub a: Option<FamilyEvidence>,
    /// The AAAA query (absent for literals and names that could not be queried).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aaaa: Option<FamilyEvidence>,
    /// The addresses handed to the next phase (same as [`DnsOutcome::addresses`]).
    pub addresses: Vec<IpAddr>,
    /// Through an `http://` or `socks5h://` proxy, the hub name left to the proxy
    /// to resolve (`query` is then the proxy's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub left_to_proxy: Option<String>,
}

/// One connect attempt to one address.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    /// Remote address.
    pub address: String,
    /// `ipv4` or `ipv6`.
    pub family: String,
    /// `ok` or `failed` (`skipped` when the source address family does not fit).
    pub status: String,
    /// Time to connect or to fail, milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<f64>,
    /// Local address of the connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_address: Option<String>,
    /// Why this address failed (absent when it connected).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<FailureClass>,
    /// The OS error of this address (absent when it connected).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Evidence of the TCP phase.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TcpEvidence {
    /// Port connected to.
    pub port: u16,
    /// The connection the later phases use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_address: Option<String>,
    /// Its local address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_address: Option<String>,
    /// Interface bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// Every address tried.
    pub attempts: Vec<Attempt>,
}

/// Evidence of the upgrade.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WsEvidence {
    /// The URL requested.
    pub url: String,
    /// HTTP status of the answer (101 on success).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Subprotocol the server chose.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subprotocol: Option<String>,
    /// `Server` header, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
}

/// Evidence of the proxy phase: the tunnel request and the proxy's answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProxyEvidence {
    /// `http` (CONNECT), `socks5` (the device resolves the hub) or `socks5h` (the proxy does).
    pub scheme: String,
    /// The proxy connected to (`ip:port`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_address: Option<String>,
    /// The destination asked for (`host:port`, or `ip:port` with `socks5`).
    pub target: String,
    /// Who resolved the hub's name: `proxy` or `device`.
    pub resolved_by: String,
    /// The HTTP request line sent (`CONNECT host:port HTTP/1.1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_line: Option<String>,
    /// The HTTP status of the answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// The HTTP reason phrase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The proxy's `Server` header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// The proxy's `Via` header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
    /// The proxy's `Proxy-Agent` header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_agent: Option<String>,
    /// The authentication schemes a 407 asked for (`Proxy-Authenticate`), e.g. `Basic`, `NTLM`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub auth_schemes: Vec<String>,
    /// Whether credentials were sent (never the credentials).
    pub auth_sent: bool,
    /// The SOCKS5 reply code (0 succeeded, 2 not allowed by ruleset, 5 refused ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socks_reply: Option<u8>,
    /// The SOCKS5 authentication method used (`none`, `username`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socks_method: Option<String>,
}

/// Evidence of the MQTT phase.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MqttEvidence {
    /// Client id sent.
    pub client_id: String,
    /// User name sent (never the password).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// How the identity authenticates.
    pub auth: String,
    /// Whether authentication was really tested (false with a throw-away identity).
    pub auth_tested: bool,
    /// Keep-alive announced, seconds.
    pub keep_alive_s: u16,
    /// CONNACK received, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connack: Option<ConnackEvidence>,
    /// Time from CONNECT sent to CONNACK received.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connack_ms: Option<f64>,
    /// PINGREQ → PINGRESP round-trip times.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ping_rtts_ms: Vec<f64>,
    /// Whether a DISCONNECT was sent at the end.
    pub disconnect_sent: bool,
    /// One line for humans ("reachable, authentication not tested").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The MQTT version spoken (absent in reports of versions before MQTT 5 support: 3.1.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mqtt_version: Option<super::mqtt5::MqttVersion>,
    /// MQTT 5: the CONNACK's properties (the broker's limits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connack_properties: Option<super::mqtt5::Mqtt5ConnackProperties>,
    /// MQTT 5: a DISCONNECT the server sent, with its reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_disconnect: Option<super::mqtt5::Mqtt5Disconnect>,
}

/// A CONNACK.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConnackEvidence {
    /// Return code (0 accepted, 1–5 refused; MQTT 5: the reason code, 0x80 and up refused).
    pub code: u8,
    /// Its name.
    pub name: String,
    /// Session present flag.
    pub session_present: bool,
}

/// Evidence of the header exchange.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AmqpEvidence {
    /// Header sent, e.g. `AMQP 3 1.0.0`.
    pub sent: String,
    /// Header received.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub received: Option<String>,
    /// The SASL mechanisms the server offered, in its order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sasl_mechanisms: Vec<String>,
    /// The mechanism the probe used (`ANONYMOUS`, `PLAIN`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sasl_mechanism: Option<String>,
    /// The SASL outcome: `ok`, `auth`, `sys`, `sys-perm`, `sys-temp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sasl_outcome: Option<String>,
    /// The server's container id (its open frame).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    /// The server's connection properties (its open frame), values as text.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub properties: std::collections::BTreeMap<String, String>,
    /// Each step of the exchange in order and how it ended.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<AmqpStep>,
    /// The error condition the server sent (e.g. `amqp:unauthorized-access`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_condition: Option<String>,
    /// The description that came with the error condition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_description: Option<String>,
    /// The CBS put-token answer's status code (202 accepted, 401 ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cbs_status: Option<u16>,
    /// The CBS put-token answer's status description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cbs_description: Option<String>,
    /// The CBS audience the token was put for (the resource URI; never the token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cbs_audience: Option<String>,
    /// The address the sender link attached to (the device's events address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Why authentication was not tested, when it was not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// One step of an AMQP exchange: `sasl`, `open`, `begin`, `put-token`, `attach`,
/// `detach`, `end`, `close`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AmqpStep {
    /// The step.
    pub step: String,
    /// `ok` or `failed`.
    pub outcome: String,
    /// Time the step took, in milliseconds.
    pub ms: f64,
}

/// Evidence of the request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HttpEvidence {
    /// Request line sent.
    pub request: String,
    /// Status code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Status line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_line: Option<String>,
    /// `Server` header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// `Date` header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date: Option<String>,
    /// Server clock minus device clock, seconds (1 s resolution of `Date`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_offset_s: Option<f64>,
}

/// Everything the TLS phase saw, on success and (as far as it got) on failure.
///
/// Field names are part of the report schema; add fields, never rename them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TlsEvidence {
    /// The name sent as SNI and verified against the certificate.
    pub server_name: String,
    /// The ALPN protocols the client offered, in preference order.
    pub alpn_offered: Vec<String>,
    /// The ALPN protocol the server chose, if any.
    pub alpn: Option<String>,
    /// The negotiated protocol version (`TLSv1.3`, `TLSv1.2`); known only after a
    /// completed handshake.
    pub version: Option<String>,
    /// The negotiated cipher suite (e.g. `TLS13_AES_256_GCM_SHA384`); known only
    /// after a completed handshake.
    pub cipher_suite: Option<String>,
    /// The certificate chain the server presented, leaf first, in the order sent.
    /// Empty in a compact wire report that refers to it by `chain_ref` instead.
    #[serde(default)]
    pub chain: Vec<CertInfo>,
    /// In a compact wire report: the chain left out because the device delivered
    /// it before (its fingerprints, and what fleet tooling reads of it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain_ref: Option<ChainRef>,
    /// The trust anchor that validated the chain; `null` when verification did
    /// not get that far or failed.
    pub trust_anchor: Option<AnchorEvidence>,
    /// Days until the leaf's notAfter (negative once expired), two decimals.
    pub leaf_days_left: Option<f64>,
    /// Whether the server asked for a client certificate (CertificateRequest).
    #[serde(default)]
    pub client_certificate_requested: bool,
    /// The CA names the server listed as acceptable for client certificates.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub client_ca_hints: Vec<String>,
    /// The client certificate that was sent, if one was.
    pub client_certificate: Option<ClientCertEvidence>,
    /// Short name of the certificate verification error, on verify failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify_error: Option<String>,
    /// What the TLS 1.3 post-handshake check concluded, when it ran (only when the
    /// server requested a client certificate; see [`super::handshake`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_handshake: Option<String>,
    /// The path-MTU probe: the handshake re-run with a clamped MSS, when it ran
    /// (after a `tls.timeout`, or on request with `--mtu-probe`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<MtuEvidence>,
}

/// Why the path-MTU probe ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MtuTrigger {
    /// The full-size handshake timed out.
    TlsTimeout,
    /// `--mtu-probe` asked for it on every endpoint.
    Requested,
}

/// One TCP + TLS handshake of the path-MTU probe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MssAttempt {
    /// The MSS advertised (for the unclamped attempt: what the kernel advertises,
    /// the path MTU minus the IP and TCP headers; absent when unknown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mss: Option<u32>,
    /// False for the check's own full-size handshake, true for the clamped re-runs.
    pub clamped: bool,
    /// `ok` when TCP and TLS completed, else `failed`.
    pub status: String,
    /// Why it failed (`tcp.*` or `tls.*`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<FailureClass>,
    /// Time for TCP + TLS, milliseconds.
    pub duration_ms: f64,
    /// The bound it had, milliseconds.
    pub timeout_ms: f64,
}

/// What the path-MTU probe found: TCP + TLS re-run with the MSS clamped (TCP_MAXSEG
/// before connect) to the same address, and the route's MTU as the kernel knows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MtuEvidence {
    /// Why it ran.
    pub trigger: MtuTrigger,
    /// The address re-connected to (the one the check's TCP phase used).
    pub address: IpAddr,
    /// The local interface of the route, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// That interface's MTU, bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface_mtu: Option<u32>,
    /// The kernel's path MTU for the route (IP_MTU / IPV6_MTU), bytes, read after
    /// the attempts: equal to the interface MTU while no ICMP "fragmentation
    /// needed" / "packet too big" arrived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_mtu: Option<u32>,
    /// Every handshake, the check's own first, in the order run.
    pub attempts: Vec<MssAttempt>,
    /// The largest MSS whose handshake completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub largest_working_mss: Option<u32>,
    /// The smallest MSS whose handshake stalled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smallest_failing_mss: Option<u32>,
    /// True exactly when the full-size handshake stalled and a clamped one completed:
    /// packets above some size are dropped on the path without ICMP.
    pub black_hole: bool,
    /// True when the search stopped early (the run's deadline) rather than at its
    /// precision or step bound.
    pub cut_short: bool,
}

/// A certificate chain by reference: what a compact wire report carries instead
/// of a chain the device already delivered in full (see `agent::wire`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainRef {
    /// SHA-256 of the chain: of the certificates' `sha256` values, lowercase
    /// hex, leaf first, each followed by a newline.
    pub sha256: String,
    /// Each certificate's `sha256` (of its DER), leaf first (left out beside an
    /// evidence the device delivered before).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certs: Vec<String>,
    /// Number of certificates.
    pub len: usize,
    /// The leaf's subject, when the chain has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leaf_subject: Option<String>,
    /// The leaf's notAfter, RFC 3339 UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leaf_not_after: Option<String>,
    /// The last certificate's issuer (the root the chain leads to).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_issuer: Option<String>,
}

/// One certificate of the presented chain, as a fleet operator needs to see it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CertInfo {
    /// Subject distinguished name (`CN=..., O=...`).
    pub subject: String,
    /// Issuer distinguished name.
    pub issuer: String,
    /// Subject alternative names: DNS names as is, IP addresses as `IP:<addr>`,
    /// URIs as `URI:<uri>`, e-mail as `email:<addr>`.
    pub sans: Vec<String>,
    /// Start of validity, RFC 3339 UTC.
    pub not_before: String,
    /// End of validity, RFC 3339 UTC.
    pub not_after: String,
    /// SHA-256 of the DER encoding, lowercase hex.
    pub sha256: String,
    /// True when basicConstraints says CA.
    pub is_ca: bool,
    /// Serial number, lowercase hex without separators.
    pub serial: String,
    /// Set when x509-parser could not parse the certificate (the other fields
    /// except `sha256` are then empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parse_error: Option<String>,
}

/// Which trust anchor validated the chain, and whether it is the one the hub
/// profile expects (e.g. DigiCert Global Root G2) or a legacy one (Baltimore).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AnchorEvidence {
    /// Short name: subject CN, else O, else the full subject.
    pub name: String,
    /// Full subject distinguished name.
    pub subject: String,
    /// Where the anchor came from: `system`, `bundled` or `ca-file:<path>`.
    pub origin: String,
    /// True when `name` is in the options' `expected_anchors`.
    pub expected: bool,
    /// True when `name` is in the options' `legacy_anchors`.
    pub legacy: bool,
    /// SHA-256 of the anchor's SubjectPublicKeyInfo (DER), lowercase hex: what the
    /// profile's anchors are matched by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spki_sha256: Option<String>,
    /// True when the anchor has the name of one the profile pins but another key
    /// (a TLS-inspecting proxy's root, or a look-alike).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub impostor: bool,
}

/// The client certificate sent during the handshake (never the key).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClientCertEvidence {
    /// Subject distinguished name of the leaf.
    pub subject: String,
    /// SHA-256 of the leaf's DER, lowercase hex.
    pub sha256: String,
}

/// What one phase saw, typed: one variant per phase. Serialized untagged, exactly as
/// the phase's `evidence` object (the `phase` beside it says which variant it is).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Evidence {
    /// The DNS phase.
    Dns(DnsEvidence),
    /// The TCP phase.
    Tcp(TcpEvidence),
    /// The TLS phase.
    Tls(Box<TlsEvidence>),
    /// The WebSocket upgrade.
    Websocket(WsEvidence),
    /// The MQTT exchange.
    Mqtt(MqttEvidence),
    /// The AMQP exchange.
    Amqp(AmqpEvidence),
    /// The HTTP request.
    Http(HttpEvidence),
    /// The proxy tunnel.
    Proxy(ProxyEvidence),
}

impl Evidence {
    /// Reads the evidence object of `phase` from its JSON form.
    pub fn from_value(phase: Phase, v: serde_json::Value) -> Result<Self, serde_json::Error> {
        Ok(match phase {
            Phase::Dns => Evidence::Dns(serde_json::from_value(v)?),
            Phase::Tcp => Evidence::Tcp(serde_json::from_value(v)?),
            Phase::Tls => Evidence::Tls(Box::new(serde_json::from_value(v)?)),
            Phase::Websocket => Evidence::Websocket(serde_json::from_value(v)?),
            Phase::Mqtt => Evidence::Mqtt(serde_json::from_value(v)?),
            Phase::Amqp => Evidence::Amqp(serde_json::from_value(v)?),
            Phase::Http => Evidence::Http(serde_json::from_value(v)?),
            Phase::Proxy => Evidence::Proxy(serde_json::from_value(v)?),
        })
    }
}

macro_rules! evidence_from {
    ($($ty:ty => $variant:ident $(($wrap:path))?),* $(,)?) => {$(
        impl From<$ty> for Evidence {
            fn from(e: $ty) -> Self {
                Evidence::$variant($($wrap)?(e))
            }
        }
        impl From<$ty> for Option<Evidence> {
            fn from(e: $ty) -> Self {
                Some(Evidence::from(e))
            }
        }
        impl From<&$ty> for Option<Evidence> {
            fn from(e: &$ty) -> Self {
                Some(Evidence::from(e.clone()))
            }
        }
    )*};
}

evidence_from! {
    DnsEvidence => Dns,
    TcpEvidence => Tcp,
    TlsEvidence => Tls(Box::new),
    WsEvidence => Websocket,
    MqttEvidence => Mqtt,
    AmqpEvidence => Amqp,
    HttpEvidence => Http,
    ProxyEvidence => Proxy,
}

impl Evidence {
    /// The DNS evidence, when this is the DNS phase's.
    pub fn dns(&self) -> Option<&DnsEvidence> {
        match self {
            Evidence::Dns(e) => Some(e),
            _ => None,
        }
    }
    /// The TCP evidence, when this is the TCP phase's.
    pub fn tcp(&self) -> Option<&TcpEvidence> {
        match self {
            Evidence::Tcp(e) => Some(e),
            _ => None,
        }
    }
    /// The TLS evidence, when this is the TLS phase's.
    pub fn tls(&self) -> Option<&TlsEvidence> {
        match self {
            Evidence::Tls(e) => Some(e),
            _ => None,
        }
    }
    /// The WebSocket evidence, when this is the upgrade's.
    pub fn websocket(&self) -> Option<&WsEvidence> {
        match self {
            Evidence::Websocket(e) => Some(e),
            _ => None,
        }
    }
    /// The MQTT evidence, when this is the MQTT phase's.
    pub fn mqtt(&self) -> Option<&MqttEvidence> {
        match self {
            Evidence::Mqtt(e) => Some(e),
            _ => None,
        }
    }
    /// The AMQP evidence, when this is the AMQP phase's.
    pub fn amqp(&self) -> Option<&AmqpEvidence> {
        match self {
            Evidence::Amqp(e) => Some(e),
            _ => None,
        }
    }
    /// The HTTP evidence, when this is the HTTP phase's.
    pub fn http(&self) -> Option<&HttpEvidence> {
        match self {
            Evidence::Http(e) => Some(e),
            _ => None,
        }
    }
    /// The proxy evidence, when this is the proxy phase's.
    pub fn proxy(&self) -> Option<&ProxyEvidence> {
        match self {
            Evidence::Proxy(e) => Some(e),
            _ => None,
        }
    }
}

//! DNS phase: turns the hub's host name into addresses, the way the device would,
//! and records how (which servers, CNAME chain, TTLs, per-family outcome).
//!
//! This module owns the first phase of every endpoint's chain. It answers "is it
//! DNS?" with a class taken from the typed resolver error at this boundary
//! (response code, timeout, I/O), never from an error message.
//!
//! Behaviour, in order:
//! - An IP literal (`192.0.2.1`, `2001:db8::1`, `[2001:db8::1]`) needs no query: the
//!   phase is `ok` with `source: "literal"`.
//! - With an explicit server ([`DnsOptions::server`]) exactly that server is asked
//!   (UDP, TCP when the answer is truncated); the hosts file is not consulted.
//! - Without one, the system configuration is used like the C library does: a name
//!   found in the hosts file is answered from it (no query is sent), otherwise the
//!   name servers and search list of `/etc/resolv.conf` are used. No usable
//!   configuration is `dns.no_nameservers`.
//! - A and AAAA are asked concurrently, each bounded by [`DnsOptions::timeout`], on
//!   a fresh resolver with its cache disabled, so every run measures the network and
//!   not a previous run. Both families are always reported.
//!
//! Names under `localhost.` that are not in the hosts file are answered by the
//! resolver itself (RFC 6761, no query sent); they are reported with `source: "dns"`.
//!
//! Must be called within a Tokio runtime (the resolver spawns its I/O tasks there).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::op::{Query, ResponseCode};
use hickory_resolver::proto::rr::{Name, RData, RecordType};
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::proto::ProtoErrorKind;
use hickory_resolver::{Hosts, ResolveError, ResolveErrorKind, Resolver, TokioResolver};

use super::Stopwatch;
use crate::model::{
    ms, AddressRecord, DnsEvidence, DnsSource, FailureClass, FamilyEvidence, FamilyStatus, Phase,
    PhaseResult,
};

/// How to resolve: which server to ask and how long to wait.
#[derive(Debug, Clone)]
pub struct DnsOptions {
    /// Ask exactly this server (e.g. to compare the device's resolver with a known
    /// one); `None` uses the system configuration, hosts file included.
    pub server: Option<SocketAddr>,
    /// Deadline of each family's query; the whole phase ends within about this
    /// time because A and AAAA run concurrently.
    pub timeout: Duration,
}

/// The DNS phase's result and the addresses the later phases connect to.
#[derive(Debug, Clone)]
pub struct DnsOutcome {
    /// What the report shows; its evidence is a [`DnsEvidence`].
    pub result: PhaseResult,
    /// Every address found, deduplicated, AAAA records first then A records (in
    /// answer order). Callers try them all concurrently, so the order is only
    /// a stable presentation, not a preference.
    pub addresses: Vec<IpAddr>,
}

/// Resolves `host` to its addresses. Never fails: a failure is a `failed` phase
/// with a `dns.*` class, so the report shows DNS trouble as data.
pub async fn resolve(host: &str, opts: &DnsOptions) -> DnsOutcome {
    let upstream = match opts.server {
        Some(addr) => Upstream::Server(addr),
        None => Upstream::System {
            // A missing hosts file is not an error: the C library treats it as empty.
            hosts: Arc::new(Hosts::from_system().unwrap_or_default()),
            conf: SystemConf::Lazy,
        },
    };
    resolve_with(host, opts.timeout, upstream).await
}

/// Which servers to ask; the system variant is injectable for tests.
enum Upstream {
    Server(SocketAddr),
    System { hosts: Arc<Hosts>, conf: SystemConf },
}

/// The system resolver configuration, read only when the hosts file did not answer.
enum SystemConf {
    Lazy,
    #[cfg_attr(not(test), allow(dead_code))]
    Given(Box<Result<(ResolverConfig, ResolverOpts), ResolveError>>),
}

impl SystemConf {
    fn load(self) -> Result<(ResolverConfig, ResolverOpts), ResolveError> {
        match self {
            SystemConf::Lazy => hickory_resolver::system_conf::read_system_conf(),
            SystemConf::Given(conf) => *conf,
        }
    }
}

/// The address family of one query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    A,
    Aaaa,
}

impl Family {
    fn record_type(self) -> RecordType {
        match self {
            Family::A => RecordType::A,
            Family::Aaaa => RecordType::AAAA,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Family::A => "A",
            Family::Aaaa => "AAAA",
        }
    }
}

/// One family's outcome plus the CNAME targets its answer held.
struct FamilyResult {
    evidence: FamilyEvidence,
    cnames: Vec<String>,
}

async fn resolve_with(host: &str, timeout: Duration, upstream: Upstream) -> DnsOutcome {
    let sw = Stopwatch::start();

    if let Some(ip) = parse_literal(host) {
        let evidence = DnsEvidence {
            query: host.to_string(),
            literal: true,
            source: DnsSource::Literal,
            servers: Vec::new(),
            cname_chain: Vec::new(),
            a: None,
            aaaa: None,
            addresses: vec![ip],
            left_to_proxy: None,
        };
        return DnsOutcome {
            result: PhaseResult::ok(Phase::Dns, sw.elapsed(), evidence),
            addresses: vec![ip],
        };
    }

    let mut evidence = DnsEvidence {
        query: host.to_string(),
        literal: false,
        source: DnsSource::Dns,
        servers: Vec::new(),
        cname_chain: Vec::new(),
        a: None,
        aaaa: None,
        addresses: Vec::new(),
        left_to_proxy: None,
    };

    let name = match parse_name(host) {
        Ok(name) => name,
        Err(message) => {
            return failed_outcome(sw, FailureClass::DnsError, message, evidence);
        }
    };

    let (config, base_opts) = match upstream {
        Upstream::Server(addr) => {
            let servers = vec![
                NameServerConfig::new(addr, Protocol::Udp),
                NameServerConfig::new(addr, Protocol::Tcp),
            ];
            (
                ResolverConfig::from_parts(None, Vec::new(), servers),
                ResolverOpts::default(),
            )
        }
        Upstream::System { hosts, conf } => {
            if let Some((a, aaaa)) = from_hosts(&hosts, &name, host) {
                evidence.source = DnsSource::Hosts;
                return finish(sw, evidence, a, aaaa);
            }
            match conf.load() {
                Ok(conf) => conf,
                Err(err) => {
                    let message = format!(
                        "no name servers: cannot use the system resolver configuration ({})",
                        error_detail(&err)
                    );
                    return failed_outcome(sw, FailureClass::DnsNoNameservers, message, evidence);
                }
            }
        }
    };

    evidence.servers = server_list(&config);
    if evidence.servers.is_empty() {
        let message = format!("no name servers configured to resolve {host}");
        return failed_outcome(sw, FailureClass::DnsNoNameservers, message, evidence);
    }
    let servers = describe_servers(&evidence.servers);

    let udp_servers: Vec<SocketAddr> = config
        .name_servers()
        .iter()
        .filter(|ns| ns.protocol == Protocol::Udp)
        .map(|ns| ns.socket_addr)
        .take(MAX_REACHABILITY_PROBES)
        .collect();
    let resolver = build_resolver(config, base_opts, timeout);
    let lookups = async {
        tokio::join!(
            lookup_family(&resolver, &name, host, Family::A, timeout, &servers),
            lookup_family(&resolver, &name, host, Family::Aaaa, timeout, &servers),
        )
    };
    // A closed port on the server answers with ICMP port unreachable, which the
    // resolver's unconnected sockets never see: it would wait out the timeout and
    // call it one. A connected socket sees the refusal at once.
    tokio::select! {
        (a, aaaa) = lookups => finish(sw, evidence, a, aaaa),
        Some(message) = all_refuse(&udp_servers, &name, timeout) => {
            failed_outcome(sw, FailureClass::DnsUnreachable, message, evidence)
        }
    }
}

/// Servers probed for a closed port (the first few configured).
const MAX_REACHABILITY_PROBES: usize = 3;

/// `Some(why)` when every server in `servers` refuses a query on a connected UDP
/// socket (ICMP port or host unreachable); `None` as soon as that is not so (one
/// answers, stays silent until `timeout`, or cannot be asked).
async fn all_refuse(servers: &[SocketAddr], name: &Name, timeout: Duration) -> Option<String> {
    if servers.is_empty() {
        return None;
    }
    let probes = servers.iter().map(|s| refuses(*s, name, timeout));
    let results = futures_util::future::join_all(probes).await;
    let refused: Vec<String> = results.into_iter().collect::<Option<Vec<_>>>()?;
    Some(format!(
        "nothing answers DNS on {}: {} (the port is closed or the host unreachable)",
        servers
            .iter()
            .map(SocketAddr::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        refused.join("; ")
    ))
}

/// `Some(error)` when `server` refuses one A query for `name` on a connected socket.
async fn refuses(server: SocketAddr, name: &Name, timeout: Duration) -> Option<String> {
    use hickory_resolver::proto::op::Message;

    let bind: SocketAddr = if server.is_ipv6() {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    };
    let sock = tokio::net::UdpSocket::bind(bind).await.ok()?;
    sock.connect(server).await.ok()?;
    let mut id = [0u8; 2];
    let _ = getrandom::fill(&mut id);
    let mut msg = Message::new();
    msg.set_id(u16::from_le_bytes(id));
    msg.set_recursion_desired(true);
    msg.add_query(Query::query(name.clone(), RecordType::A));
    let bytes = msg.to_vec().ok()?;
    let refused = |e: &std::io::Error| {
        matches!(
            e.kind(),
            std::io::ErrorKind::ConnectionRefused
                | std::io::ErrorKind::HostUnreachable
                | std::io::ErrorKind::NetworkUnreachable
        )
    };
    if let Err(e) = sock.send(&bytes).await {
        return refused(&e).then(|| format!("{server}: {e}"));
    }
    let mut buf = [0u8; 512];
    match tokio::time::timeout(timeout, sock.recv(&mut buf)).await {
        Ok(Err(e)) if refused(&e) => Some(format!("{server}: {e}")),
        _ => None,
    }
}

/// Accepts `192.0.2.1`, `2001:db8::1` and `[2001:db8::1]`: hub settings often
/// carry bracketed IPv6 from URLs.
fn parse_literal(host: &str) -> Option<IpAddr> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Some(ip);
    }
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .and_then(|inner| inner.parse::<IpAddr>().ok())
}

fn parse_name(host: &str) -> Result<Name, String> {
    if host.is_empty() || host == "." {
        return Err("empty host name".to_string());
    }
    Name::from_utf8(host).map_err(|e| format!("invalid host name {host:?}: {e}"))
}

/// A fresh resolver per call: no cache (each run must measure the network), no
/// hosts file (handled before, so the source is known), and a bounded retry.
fn build_resolver(
    config: ResolverConfig,
    base_opts: ResolverOpts,
    timeout: Duration,
) -> TokioResolver {
    let mut builder = Resolver::builder_with_config(config, TokioConnectionProvider::default())
        .with_options(base_opts);
    let opts = builder.options_mut();
    opts.timeout = timeout;
    // One retry, which only matters after a fast failure (e.g. a TCP reset on a
    // truncated answer): the per-family deadline in `lookup_family` cuts a slow
    // retry off, so the phase still ends within about `timeout`.
    opts.attempts = 1;
    opts.cache_size = 0;
    opts.use_hosts_file = ResolveHosts::Never;
    opts.preserve_intermediates = true;
    opts.validate = false;
    opts.positive_min_ttl = None;
    opts.positive_max_ttl = None;
    opts.negative_min_ttl = None;
    opts.negative_max_ttl = None;
    builder.build()
}

/// `ip:port` of each configured server, once (the configuration lists UDP and
/// TCP separately).
fn server_list(config: &ResolverConfig) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for ns in config.name_servers() {
        let s = ns.socket_addr.to_string();
        if !out.contains(&s) {
            out.push(s);
        }
    }
    out
}

/// The servers as a message fragment: `127.0.0.1:53`, or the list for several.
fn describe_servers(servers: &[String]) -> String {
    match servers {
        [] => "no name server".to_string(),
        [one] => one.clone(),
        many => format!("the system name servers ({})", many.join(", ")),
    }
}

/// Answers from the hosts file when it holds the name in either family, like the
/// C library's `files` source: the name is then not sent to DNS at all.
fn from_hosts(hosts: &Hosts, name: &Name, host: &str) -> Option<(FamilyResult, FamilyResult)> {
    let sw = Stopwatch::start();
    let records = |family: Family| {
        hosts
            .lookup_static_host(&Query::query(name.clone(), family.record_type()))
            .map(|lookup| addresses_of(lookup.records(), family, false).0)
            .unwrap_or_default()
    };
    let (a, aaaa) = (records(Family::A), records(Family::Aaaa));
    if a.is_empty() && aaaa.is_empty() {
        return None;
    }
    let elapsed = sw.elapsed();
    let result = |family: Family, records: Vec<AddressRecord>| {
        if records.is_empty() {
            family_failed(
                elapsed,
                FailureClass::DnsNoRecords,
                format!("no {} entry in the hosts file for {host}", family.label()),
            )
        } else {
            family_ok(elapsed, records, Vec::new())
        }
    };
    Some((result(Family::A, a), result(Family::Aaaa, aaaa)))
}

/// Address records of `family` and CNAME targets, in answer order, deduplicated.
fn addresses_of(
    records: &[hickory_resolver::proto::rr::Record],
    family: Family,
    keep_ttl: bool,
) -> (Vec<AddressRecord>, Vec<String>) {
    let mut out: Vec<AddressRecord> = Vec::new();
    let mut cnames: Vec<String> = Vec::new();
    for record in records {
        let address = match (family, record.data()) {
            (Family::A, RData::A(a)) => IpAddr::V4(a.0),
            (Family::Aaaa, RData::AAAA(aaaa)) => IpAddr::V6(aaaa.0),
            (_, RData::CNAME(target)) => {
                let target = display_name(&target.0);
                if !cnames.contains(&target) {
                    cnames.push(target);
                }
                continue;
            }
            _ => continue,
        };
        if out.iter().all(|r| r.address != address) {
            out.push(AddressRecord {
                address,
                ttl: if keep_ttl { record.ttl() } else { 0 },
            });
        }
    }
    (out, cnames)
}

fn display_name(name: &Name) -> String {
    let s = name.to_string();
    match s.strip_suffix('.') {
        Some(stripped) if !stripped.is_empty() => stripped.to_string(),
        _ => s,
    }
}

async fn lookup_family(
    resolver: &TokioResolver,
    name: &Name,
    host: &str,
    family: Family,
    timeout: Duration,
    servers: &str,
) -> FamilyResult {
    let sw = Stopwatch::start();
    // The resolver has its own per-request timeout; this is the backstop that
    // also bounds retries, search-list names and several configured servers.
    let result =
        tokio::time::timeout(timeout, resolver.lookup(name.clone(), family.record_type())).await;
    let elapsed = sw.elapsed();
    match result {
        Err(_elapsed) => family_failed(
            elapsed,
            FailureClass::DnsTimeout,
            timeout_message(servers, timeout, host),
        ),
        Ok(Err(err)) => {
            let (class, message) = classify_error(&err, host, servers, timeout);
            family_failed(elapsed, class, message)
        }
        Ok(Ok(lookup)) => {
            let (records, cnames) = addresses_of(lookup.records(), family, true);
            if records.is_empty() {
                family_failed(
                    elapsed,
                    FailureClass::DnsNoRecords,
                    format!(
                        "answer from {servers} for {host} holds no {} record",
                        family.label()
                    ),
                )
            } else {
                family_ok(elapsed, records, cnames)
            }
        }
    }
}

fn timeout_message(servers: &str, timeout: Duration, host: &str) -> String {
    format!(
        "no answer from {servers} within {} for {host}",
        humantime::format_duration(timeout)
    )
}

/// Classifies a resolver error by its type (response code, timeout, I/O kind).
/// The message is short and names the server and the name.
fn classify_error(
    err: &ResolveError,
    host: &str,
    servers: &str,
    timeout: Duration,
) -> (FailureClass, String) {
    let proto = match err.kind() {
        ResolveErrorKind::Proto(proto) => proto,
        _ => {
            return (
                FailureClass::DnsError,
                format!("resolving {host} via {servers} failed: {err}"),
            )
        }
    };
    match proto.kind() {
        ProtoErrorKind::NoRecordsFound { response_code, .. } => {
            let code = *response_code;
            let class = response_code_class(code);
            let message = match code {
                ResponseCode::NoError => {
                    format!("no records (NOERROR, empty answer) from {servers} for {host}")
                }
                ResponseCode::NXDomain | ResponseCode::ServFail | ResponseCode::Refused => {
                    format!("{} from {servers} for {host}", rcode_mnemonic(code))
                }
                other => format!(
                    "response code {} ({}) from {servers} for {host}",
                    u16::from(other),
                    other
                ),
            };
            (class, message)
        }
        ProtoErrorKind::Timeout => (
            FailureClass::DnsTimeout,
            timeout_message(servers, timeout, host),
        ),
        ProtoErrorKind::NoConnections => (
            FailureClass::DnsNoNameservers,
            format!("no name server connection available to resolve {host}"),
        ),
        ProtoErrorKind::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => (
            FailureClass::DnsTimeout,
            timeout_message(servers, timeout, host),
        ),
        ProtoErrorKind::Io(io) => (
            FailureClass::DnsError,
            format!("I/O error talking to {servers} for {host}: {io}"),
        ),
        _ => (
            FailureClass::DnsError,
            format!("DNS error from {servers} for {host}: {proto}"),
        ),
    }
}

/// The class a response code stands for.
fn response_code_class(code: ResponseCode) -> FailureClass {
    match code {
        ResponseCode::NXDomain => FailureClass::DnsNxdomain,
        ResponseCode::ServFail => FailureClass::DnsServfail,
        ResponseCode::Refused => FailureClass::DnsRefused,
        ResponseCode::NoError => FailureClass::DnsNoRecords,
        _ => FailureClass::DnsError,
    }
}

fn rcode_mnemonic(code: ResponseCode) -> &'static str {
    match code {
        ResponseCode::NoError => "NOERROR",
        ResponseCode::NXDomain => "NXDOMAIN",
        ResponseCode::ServFail => "SERVFAIL",
        ResponseCode::Refused => "REFUSED",
        _ => "error",
    }
}

/// The detail of a configuration error, without the "proto error:" wrapper.
fn error_detail(err: &ResolveError) -> String {
    match err.proto().map(|p| p.kind()) {
        Some(ProtoErrorKind::Io(io)) => io.to_string(),
        Some(_) => err.proto().map(|p| p.to_string()).unwrap_or_default(),
        None => err.to_string(),
    }
}

fn family_ok(elapsed: Duration, records: Vec<AddressRecord>, cnames: Vec<String>) -> FamilyResult {
    FamilyResult {
        evidence: FamilyEvidence {
            status: FamilyStatus::Ok,
            duration_ms: ms(elapsed),
            class: None,
            message: None,
            records,
        },
        cnames,
    }
}

fn family_failed(elapsed: Duration, class: FailureClass, message: String) -> FamilyResult {
    FamilyResult {
        evidence: FamilyEvidence {
            status: FamilyStatus::Failed,
            duration_ms: ms(elapsed),
            class: Some(class),
            message: Some(message),
            records: Vec::new(),
        },
        cnames: Vec::new(),
    }
}

fn failed_outcome(
    sw: Stopwatch,
    class: FailureClass,
    message: String,
    evidence: DnsEvidence,
) -> DnsOutcome {
    tracing::debug!(query = %evidence.query, %class, %message, "dns phase failed");
    DnsOutcome {
        result: PhaseResult::failed(Phase::Dns, sw.elapsed(), class, message, evidence),
        addresses: Vec::new(),
    }
}

/// Combines the two families into the phase result.
fn finish(
    sw: Stopwatch,
    mut evidence: DnsEvidence,
    a: FamilyResult,
    aaaa: FamilyResult,
) -> DnsOutcome {
    let mut addresses: Vec<IpAddr> = Vec::new();
    for record in aaaa.evidence.records.iter().chain(&a.evidence.records) {
        if !addresses.contains(&record.address) {
            addresses.push(record.address);
        }
    }
    let mut chain = a.cnames;
    for name in aaaa.cnames {
        if !chain.contains(&name) {
            chain.push(name);
        }
    }
    evidence.cname_chain = chain;
    evidence.addresses = addresses.clone();

    let failure = phase_failure(&a.evidence, &aaaa.evidence);
    evidence.a = Some(a.evidence);
    evidence.aaaa = Some(aaaa.evidence);

    match failure {
        None => {
            tracing::debug!(query = %evidence.query, ?addresses, "dns phase ok");
            DnsOutcome {
                result: PhaseResult::ok(Phase::Dns, sw.elapsed(), evidence),
                addresses,
            }
        }
        Some((class, message)) => failed_outcome(sw, class, message, evidence),
    }
}

/// Rank of a family's failure class when both failed: the lower, the more it
/// explains. A definite answer (the name does not exist) beats a server
/// failure, which beats silence; "no records" is last because it is the normal
/// outcome for one family (e.g. no AAAA) and only decisive when both have it.
fn class_rank(class: FailureClass) -> u8 {
    match class {
        FailureClass::DnsNxdomain => 0,
        FailureClass::DnsServfail => 1,
        FailureClass::DnsRefused => 2,
        FailureClass::DnsTimeout => 3,
        FailureClass::DnsNoNameservers => 4,
        FailureClass::DnsNoRecords => 6,
        _ => 5,
    }
}

/// The phase's class and message from the two families, or `None` when at least
/// one address was found (one failed family alone does not fail the phase).
fn phase_failure(a: &FamilyEvidence, aaaa: &FamilyEvidence) -> Option<(FailureClass, String)> {
    if !a.records.is_empty() || !aaaa.records.is_empty() {
        return None;
    }
    let entry = |f: &FamilyEvidence, family: Family| {
        (
            f.class.unwrap_or(FailureClass::DnsNoRecords),
            f.message
                .clone()
                .unwrap_or_else(|| "no address records".to_string()),
            family.label(),
        )
    };
    let mut both = [entry(a, Family::A), entry(aaaa, Family::Aaaa)];
    // Stable: on equal rank A stays first.
    both.sort_by_key(|(class, _, _)| class_rank(*class));
    let [(class, message, label), (other_class, other_message, other_label)] = both;
    let message = if class == other_class && message == other_message {
        format!("{message} ({label}, {other_label})")
    } else {
        format!("{message} ({label}); {other_message} ({other_label})")
    };
    Some((class, message))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Status;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn failed(class: FailureClass, message: &str) -> FamilyEvidence {
        FamilyEvidence {
            status: FamilyStatus::Failed,
            duration_ms: 1.0,
            class: Some(class),
            message: Some(message.to_string()),
            records: Vec::new(),
        }
    }

    fn ok(address: IpAddr) -> FamilyEvidence {
        FamilyEvidence {
            status: FamilyStatus::Ok,
            duration_ms: 1.0,
            class: None,
            message: None,
            records: vec![AddressRecord { address, ttl: 60 }],
        }
    }

    fn evidence_of(outcome: &DnsOutcome) -> DnsEvidence {
        outcome
            .result
            .evidence()
            .and_then(crate::model::Evidence::dns)
            .expect("DNS evidence present")
            .clone()
    }

    #[test]
    fn one_family_with_records_is_enough() {
        let a = ok(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let aaaa = failed(FailureClass::DnsNoRecords, "none");
        assert!(phase_failure(&a, &aaaa).is_none());
        let a = failed(FailureClass::DnsTimeout, "slow");
        let aaaa = ok(IpAddr::V6(Ipv6Addr::LOCALHOST));
        assert!(phase_failure(&a, &aaaa).is_none());
    }

    #[test]
    fn precedence_follows_the_documented_order() {
        use FailureClass::*;
        let order = [
            DnsNxdomain,
            DnsServfail,
            DnsRefused,
            DnsTimeout,
            DnsNoNameservers,
            DnsError,
            DnsNoRecords,
        ];
        for (i, &better) in order.iter().enumerate() {
            for &worse in &order[i..] {
                for swap in [false, true] {
                    let (a, aaaa) = if swap {
                        (failed(worse, "w"), failed(better, "b"))
                    } else {
                        (failed(better, "b"), failed(worse, "w"))
                    };
                    let (class, _) = phase_failure(&a, &aaaa).expect("both failed");
                    assert_eq!(class, better, "{better} vs {worse} (swapped: {swap})");
                }
            }
        }
    }

    #[test]
    fn no_data_in_both_families_is_no_records() {
        let msg = "no records (NOERROR, empty answer) from 127.0.0.1:53 for x.test";
        let (class, message) = phase_failure(
            &failed(FailureClass::DnsNoRecords, msg),
            &failed(FailureClass::DnsNoRecords, msg),
        )
        .expect("failed");
        assert_eq!(class, FailureClass::DnsNoRecords);
        assert_eq!(message, format!("{msg} (A, AAAA)"));
    }

    #[test]
    fn differing_failures_are_both_in_the_message() {
        let (class, message) = phase_failure(
            &failed(FailureClass::DnsTimeout, "no answer"),
            &failed(FailureClass::DnsServfail, "SERVFAIL"),
        )
        .expect("failed");
        assert_eq!(class, FailureClass::DnsServfail);
        assert_eq!(message, "SERVFAIL (AAAA); no answer (A)");
    }

    #[test]
    fn response_codes_map_to_classes() {
        assert_eq!(
            response_code_class(ResponseCode::NXDomain),
            FailureClass::DnsNxdomain
        );
        assert_eq!(
            response_code_class(ResponseCode::ServFail),
            FailureClass::DnsServfail
        );
        assert_eq!(
            response_code_class(ResponseCode::Refused),
            FailureClass::DnsRefused
        );
        assert_eq!(
            response_code_class(ResponseCode::NoError),
            FailureClass::DnsNoRecords
        );
        assert_eq!(
            response_code_class(ResponseCode::NotImp),
            FailureClass::DnsError
        );
    }

    #[test]
    fn typed_errors_are_classified() {
        let t = Duration::from_secs(2);
        let timeout = ResolveError::from(hickory_resolver::proto::ProtoError::from(
            ProtoErrorKind::Timeout,
        ));
        let (class, message) = classify_error(&timeout, "h.test", "127.0.0.1:53", t);
        assert_eq!(class, FailureClass::DnsTimeout);
        assert_eq!(message, "no answer from 127.0.0.1:53 within 2s for h.test");

        let none = ResolveError::from(hickory_resolver::proto::ProtoError::from(
            ProtoErrorKind::NoConnections,
        ));
        assert_eq!(
            classify_error(&none, "h.test", "x", t).0,
            FailureClass::DnsNoNameservers
        );

        let nx = ResolveError::from(hickory_resolver::proto::ProtoError::from(
            ProtoErrorKind::NoRecordsFound {
                query: Box::new(Query::query(
                    Name::from_utf8("h.test").unwrap(),
                    RecordType::A,
                )),
                soa: None,
                ns: None,
                negative_ttl: None,
                response_code: ResponseCode::NXDomain,
                trusted: true,
                authorities: None,
            },
        ));
        let (class, message) = classify_error(&nx, "h.test", "127.0.0.1:5353", t);
        assert_eq!(class, FailureClass::DnsNxdomain);
        assert_eq!(message, "NXDOMAIN from 127.0.0.1:5353 for h.test");

        let io = ResolveError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert_eq!(
            classify_error(&io, "h.test", "x", t).0,
            FailureClass::DnsError
        );
        let io = ResolveError::from(std::io::Error::from(std::io::ErrorKind::TimedOut));
        assert_eq!(
            classify_error(&io, "h.test", "x", t).0,
            FailureClass::DnsTimeout
        );

        let msg = ResolveError::from("something else");
        assert_eq!(
            classify_error(&msg, "h.test", "x", t).0,
            FailureClass::DnsError
        );
    }

    #[test]
    fn literals_are_recognised() {
        assert_eq!(
            parse_literal("192.0.2.7"),
            Some("192.0.2.7".parse().unwrap())
        );
        assert_eq!(
            parse_literal("2001:db8::1"),
            Some("2001:db8::1".parse().unwrap())
        );
        assert_eq!(
            parse_literal("[2001:db8::1]"),
            Some("2001:db8::1".parse().unwrap())
        );
        assert_eq!(
            parse_literal("[192.0.2.7]"),
            Some("192.0.2.7".parse().unwrap())
        );
        assert_eq!(parse_literal("hub.example.test"), None);
        assert_eq!(parse_literal("[2001:db8::1"), None);
        assert_eq!(parse_literal("2001:db8::1]"), None);
        assert_eq!(parse_literal(""), None);
    }

    #[tokio::test]
    async fn ip_literal_needs_no_query() {
        // A literal must return before any I/O; were a query sent anyway, it would
        // go to the loopback discard port and fail the duration assertion.
        let opts = DnsOptions {
            server: Some("127.0.0.1:9".parse().unwrap()),
            timeout: Duration::from_secs(5),
        };
        for (host, ip) in [
            ("127.0.0.1", "127.0.0.1"),
            ("::1", "::1"),
            ("[::1]", "::1"),
            ("[2001:db8::5]", "2001:db8::5"),
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            let out = resolve(host, &opts).await;
            assert_eq!(out.result.status, Status::Ok, "{host}");
            assert_eq!(out.addresses, vec![ip]);
            assert!(out.result.duration_ms.unwrap() < 100.0);
            let ev = evidence_of(&out);
            assert!(ev.literal);
            assert_eq!(ev.source, DnsSource::Literal);
            assert_eq!(ev.query, host);
            assert_eq!(ev.addresses, vec![ip]);
            assert!(ev.servers.is_empty());
            assert!(ev.a.is_none() && ev.aaaa.is_none());
            let json = serde_json::to_value(&out.result).unwrap();
            assert_eq!(json["evidence"]["literal"], serde_json::json!(true));
            assert_eq!(json["evidence"]["source"], serde_json::json!("literal"));
        }
    }

    #[tokio::test]
    async fn invalid_names_are_dns_errors() {
        let opts = DnsOptions {
            server: Some("127.0.0.1:9".parse().unwrap()),
            timeout: Duration::from_secs(5),
        };
        for host in ["", ".", "a..b"] {
            let out = resolve(host, &opts).await;
            assert_eq!(out.result.status, Status::Failed, "{host:?}");
            assert_eq!(out.result.class, Some(FailureClass::DnsError), "{host:?}");
            assert!(out.addresses.is_empty());
        }
    }

    fn hosts_from(text: &str) -> Arc<Hosts> {
        let mut hosts = Hosts::default();
        hosts.read_hosts_conf(text.as_bytes()).unwrap();
        Arc::new(hosts)
    }

    fn no_system_conf() -> SystemConf {
        SystemConf::Given(Box::new(hickory_resolver::system_conf::parse_resolv_conf(
            "# no nameserver line\n",
        )))
    }

    #[tokio::test]
    async fn hosts_file_answers_before_dns() {
        let upstream = Upstream::System {
            hosts: hosts_from("127.0.0.9 hub.hosts.test\n::9 hub.hosts.test\n10.0.0.1 other\n"),
            conf: no_system_conf(),
        };
        let out = resolve_with("hub.hosts.test", Duration::from_secs(1), upstream).await;
        assert_eq!(out.result.status, Status::Ok);
        let ev = evidence_of(&out);
        assert_eq!(ev.source, DnsSource::Hosts);
        assert!(ev.servers.is_empty());
        assert_eq!(
            out.addresses,
            vec![
                "::9".parse::<IpAddr>().unwrap(),
                "127.0.0.9".parse().unwrap()
            ]
        );
        assert_eq!(ev.a.unwrap().records[0].ttl, 0);
    }

    #[tokio::test]
    async fn hosts_file_with_one_family_reports_the_other_as_no_records() {
        let upstream = Upstream::System {
            hosts: hosts_from("127.0.0.9 v4only.hosts.test\n"),
            conf: no_system_conf(),
        };
        let out = resolve_with("v4only.hosts.test", Duration::from_secs(1), upstream).await;
        assert_eq!(out.result.status, Status::Ok);
        let ev = evidence_of(&out);
        let aaaa = ev.aaaa.unwrap();
        assert_eq!(aaaa.status, FamilyStatus::Failed);
        assert_eq!(aaaa.class, Some(FailureClass::DnsNoRecords));
        assert_eq!(out.addresses, vec!["127.0.0.9".parse::<IpAddr>().unwrap()]);
    }

    #[tokio::test]
    async fn no_nameservers_in_system_config() {
        let upstream = Upstream::System {
            hosts: hosts_from("127.0.0.9 other.hosts.test\n"),
            conf: no_system_conf(),
        };
        let out = resolve_with("hub.example.test", Duration::from_secs(1), upstream).await;
        assert_eq!(out.result.status, Status::Failed);
        assert_eq!(out.result.class, Some(FailureClass::DnsNoNameservers));
        let message = out.result.message.unwrap();
        assert!(message.contains("no nameservers found"), "{message}");
        assert!(out.addresses.is_empty());
    }

    #[test]
    fn evidence_round_trips_through_json() {
        let ev = DnsEvidence {
            query: "hub.example.test".into(),
            literal: false,
            source: DnsSource::Dns,
            servers: vec!["127.0.0.1:53".into()],
            cname_chain: vec!["edge.example.test".into()],
            a: Some(ok(IpAddr::V4(Ipv4Addr::LOCALHOST))),
            aaaa: Some(failed(FailureClass::DnsNoRecords, "none")),
            addresses: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
            left_to_proxy: None,
        };
        let json = serde_json::to_value(&ev).unwrap();
        assert_eq!(json["a"]["records"][0]["address"], "127.0.0.1");
        assert_eq!(json["aaaa"]["class"], "dns.no_records");
        assert_eq!(json["aaaa"]["status"], "failed");
        assert!(json["a"].get("class").is_none());
        let back: DnsEvidence = serde_json::from_value(json).unwrap();
        assert_eq!(back, ev);
    }
}

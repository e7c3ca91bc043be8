//! The check runner: resolves the hub once, then runs every endpoint's chain
//! (TCP → TLS → WebSocket → protocol) concurrently. Within a chain a failed phase
//! makes the later ones `skipped` with the reason. Each phase is bounded by the
//! per-phase timeout and by what is left of the run's deadline, so nothing hangs on
//! a black-holed packet. After a `tls.timeout` (and, with `--mtu-probe`, on every TLS
//! endpoint) the path-MTU probe (`crate::mtu`) re-runs TCP + TLS with a clamped MSS
//! and files what it found under the TLS phase's evidence.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::auth::{Credentials, Secret};
use crate::diagnose;
use crate::model::Protocol;
use crate::model::{EndpointReport, Report, SasTokenInfo, Target, Verdict};
use crate::model::{Evidence, FailureClass, MtuTrigger, Phase, PhaseResult};
use crate::mtu;
use crate::net::{self, Budget, ChainFailure, ChainSpec, ChainStop, TlsHop};
use crate::probe::dns::{self, DnsOptions};
use crate::probe::mqtt::{self, MqttOptions};
use crate::probe::stream::Link;
use crate::probe::tls::{ClientIdentity, TrustStore};
use crate::probe::{amqp, http};
use crate::profile::{Endpoint, Profile};
use crate::report;

/// Everything a check needs, resolved from the command line and profile.
#[derive(Clone)]
pub struct CheckPlan {
    /// The hub profile.
    pub profile: Profile,
    /// Host to connect to (the hub, or a gateway).
    pub host: String,
    /// The hub's host name for MQTT user names and SAS resources (usually `host`).
    pub hub_host: String,
    /// Endpoints to probe, ports already overridden.
    pub endpoints: Vec<Endpoint>,
    /// DNS server to ask instead of the system's.
    pub dns_server: Option<std::net::SocketAddr>,
    /// Interface to bind to.
    pub interface: Option<String>,
    /// Source address to bind to.
    pub source_ip: Option<std::net::IpAddr>,
    /// Trust anchors.
    pub trust: Arc<TrustStore>,
    /// X.509 device identity.
    pub client_identity: Option<Arc<ClientIdentity>>,
    /// MQTT credentials.
    pub credentials: Credentials,
    /// Keep-alive announced in CONNECT.
    pub keep_alive: Duration,
    /// PINGREQ round trips after an accepted CONNACK.
    pub pings: u32,
    /// Per-phase timeout.
    pub timeout: Duration,
    /// Whole-run deadline.
    pub deadline: Duration,
    /// Operator labels copied into the report.
    pub labels: std::collections::BTreeMap<String, String>,
    /// The agent's identity, shared by its canary session and its checks.
    pub identity_share: Option<Arc<dyn IdentityArbiter>>,
    /// Run the path-MTU probe on every TLS endpoint, not only after a `tls.timeout`.
    pub mtu_probe: bool,
    /// The proxy setting (`--proxy`, the environment, `[proxy]`), and whether
    /// `NO_PROXY` sent this host direct.
    pub proxy: Option<crate::net::proxy::ProxyPlan>,
    /// SNTP servers to measure the clock against (`HOST[:PORT]`); empty: none.
    pub ntp_servers: Vec<String>,
    /// Bound on the SNTP queries (they run beside the endpoints).
    pub ntp_timeout: Duration,
}

/// Who may use the device identity on MQTT. A hub allows one connection per
/// identity: in the agent, the canary session holds the identity while it connects
/// and while it is connected; a check that finds the canary live does not CONNECT
/// with the identity (the hub would drop the canary), and one that takes the
/// identity keeps it for its whole run. The agent implements this
/// (`agent::identity::IdentityShare`); a plain `hubprobe check` has none.
pub trait IdentityArbiter: Send + Sync {
    /// Takes the identity for a whole run, if nobody holds it now.
    fn try_take(&self) -> Option<tokio::sync::OwnedMutexGuard<()>>;
    /// The endpoint of the canary's live session, if there is one.
    fn live_canary(&self) -> Option<String>;
}

/// What a check does about the shared identity.
enum Share {
    /// Not in the agent, or the check holds the lock (released when the run ends).
    Own {
        _guard: Option<tokio::sync::OwnedMutexGuard<()>>,
    },
    /// The canary's live session on this endpoint stands in for the MQTT phase.
    Canary(String),
}

/// Takes the shared identity for the run, or finds the canary's live session;
/// polls (bounded by the deadline) while the canary is between the two.
async fn take_share(plan: &CheckPlan, deadline_at: Instant) -> Share {
    let Some(share) = &plan.identity_share else {
        return Share::Own { _guard: None };
    };
    loop {
        if let Some(g) = share.try_take() {
            return Share::Own { _guard: Some(g) };
        }
        if let Some(ep) = share.live_canary() {
            return Share::Canary(ep);
        }
        // The canary is connecting: its attempt is bounded by the phase timeouts.
        if Instant::now() + Duration::from_millis(20) >= deadline_at {
            return Share::Own { _guard: None };
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs the check and builds the report. Never fails: failures are data.
pub async fn run(plan: &CheckPlan) -> Report {
    let started = SystemTime::now();
    let clock = Instant::now();
    // config caps the deadline; saturate anyway rather than overflow the clock.
    let deadline_at = clock
        .checked_add(plan.deadline)
        .unwrap_or(clock + Duration::from_secs(86_400));

    let sas = sas_for_run(plan, started);
    // SNTP runs beside DNS and the endpoints, bounded by its own timeout.
    let ntp_task = {
        let servers = plan.ntp_servers.clone();
        let opts = crate::probe::ntp::NtpOptions {
            timeout: plan.ntp_timeout.min(plan.deadline),
            source_ip: plan.source_ip,
        };
        tokio::spawn(async move {
            let queries = servers.iter().map(|s| crate::probe::ntp::query(s, &opts));
            futures_util::future::join_all(queries).await
        })
    };
    let dns_result = if let Some(budget) = budget(plan.timeout, deadline_at) {
        Some(resolve_first_hop(plan, budget).await)
    } else {
        None
    };

    // A hub allows one MQTT connection per device identity: a second CONNECT with the
    // same client id makes it drop the first (see run_endpoint).
    let identity_lock = tokio::sync::Mutex::new(());
    // In the agent, the canary session holds the identity while it is connected: then
    // the chains stop before CONNECT. Otherwise the check keeps the identity for the
    // whole run, so the canary does not reconnect in the middle of it.
    let share = take_share(plan, deadline_at).await;
    let canary = match &share {
        Share::Canary(ep) => Some(ep.as_str()),
        Share::Own { .. } => None,
    };
    let chains = plan.endpoints.iter().map(|e| {
        run_endpoint(
            plan,
            e,
            dns_result.as_ref(),
            sas.as_ref().map(|s| &s.0),
            deadline_at,
            &identity_lock,
            canary,
        )
    });
    let mut endpoints: Vec<EndpointReport> = futures_util::future::join_all(chains).await;
    // Anchors are judged by key where the profile pins them.
    crate::anchors::judge_endpoints(&mut endpoints, &plan.profile.trust.anchors);

    let sas_info = sas.map(|s| s.1);
    let proxy_info = plan.proxy.as_ref().map(|p| p.info());
    let ctx = diagnose::Context {
        profile: &plan.profile,
        auth: plan.credentials.kind(),
        sas_token: sas_info.as_ref(),
        dns_server: plan.dns_server,
        proxy: proxy_info.as_ref(),
    };
    let mut findings = diagnose::findings(&endpoints, &ctx);
    if let Some(f) = environment_proxy_finding(plan, &endpoints, deadline_at).await {
        findings.push(f);
    }
    let ntp = ntp_task.await.unwrap_or_default();
    let clock_inputs = crate::clock::ClockInputs {
        device_now_unix: crate::probe::ntp::unix_f64(started),
        sas_token: sas_info.as_ref(),
        sas_tokens: plan.profile.sas_tokens,
    };
    let clock_report = crate::clock::verdict(ntp, &endpoints, &clock_inputs);
    let true_offset = clock_report
        .sources
        .iter()
        .find(|s| !s.bound && Some(s.kind) == clock_report.source)
        .map(|s| s.offset_s);
    let device_cert = plan.client_identity.as_ref().and_then(|id| {
        crate::clock::device_cert_health(id.leaf_der(), clock_inputs.device_now_unix, true_offset)
    });
    // The clock verdict replaces the per-endpoint `Date` finding of diagnose.
    findings.retain(|f| f.code != "clock_offset");
    // An impostor root gets its own finding instead of "unexpected anchor".
    let impostors = crate::anchors::findings(&endpoints, &plan.profile.trust.anchors);
    if !impostors.is_empty() {
        findings.retain(|f| f.code != "trust_anchor_unexpected");
        findings.extend(impostors);
    }
    findings.extend(crate::clock::findings(
        &clock_report,
        device_cert.as_ref(),
        &clock_inputs,
    ));
    let verdict = diagnose::verdict(&endpoints, &findings);
    let finished = SystemTime::now();

    Report {
        schema: report::SCHEMA_ID.to_string(),
        id: report::new_id(),
        kind: "check".into(),
        hubprobe_version: env!("CARGO_PKG_VERSION").into(),
        host: report::hostname(),
        started_at: report::rfc3339(started),
        finished_at: report::rfc3339(finished),
        duration_ms: crate::model::ms(clock.elapsed()),
        target: Target {
            host: plan.host.clone(),
            hub_host: (plan.hub_host != plan.host).then(|| plan.hub_host.clone()),
            profile: plan.profile.name.clone(),
            device_id: plan.credentials.device_id().map(str::to_string),
            module_id: plan.credentials.module_id().map(str::to_string),
            auth: plan.credentials.kind().into(),
            dns_server: plan.dns_server.map(|s| s.to_string()),
            interface: plan.interface.clone(),
            source_ip: plan.source_ip.map(|s| s.to_string()),
            timeout_ms: plan.timeout.as_millis() as u64,
            deadline_ms: plan.deadline.as_millis() as u64,
            trust: Some(plan.trust.summary()),
            sas_token: sas_info,
            proxy: plan.proxy.as_ref().map(|p| p.info()),
        },
        verdict,
        endpoints,
        findings,
        keepalive: None,
        canary: None,
        clock: Some(clock_report),
        device_certificate: device_cert,
        traffic: None,
        labels: plan.labels.clone(),
        provisioning: None,
    }
}

/// With a proxy read from the environment, tries the direct path: a TCP connect
/// to the hub on each endpoint's port (bounded by the timeout and the deadline),
/// and says whether the proxy was needed.
async fn environment_proxy_finding(
    plan: &CheckPlan,
    endpoints: &[EndpointReport],
    deadline_at: Instant,
) -> Option<crate::model::Finding> {
    let proxy = plan.active_proxy()?;
    if !crate::net::proxy::PROXY_VARS.contains(&proxy.source.as_str()) {
        return None;
    }
    let t = budget(plan.timeout, deadline_at)?;
    let opts = DnsOptions {
        server: plan.dns_server,
        timeout: t,
    };
    let hub = dns::resolve(&plan.host, &opts).await;
    if hub.addresses.is_empty() {
        return None;
    }
    let mut seen = std::collections::BTreeSet::new();
    let probes = plan
        .endpoints
        .iter()
        .filter(|e| seen.insert(e.port))
        .map(|e| {
            let hub = &hub.addresses;
            async move {
                let t = budget(plan.timeout, deadline_at).unwrap_or(Duration::from_millis(1));
                let opts = crate::probe::tcp::TcpOptions {
                    timeout: t,
                    interface: plan.interface.clone(),
                    source_ip: plan.source_ip,
                    mss: None,
                };
                let out = crate::probe::tcp::connect(hub, e.port, &opts).await;
                diagnose::proxy::DirectProbe {
                    endpoint: e.name.clone(),
                    port: e.port,
                    connected: out.result.is_ok(),
                }
            }
        });
    let direct = futures_util::future::join_all(probes).await;
    // Every endpoint on a port the direct probe reached counts as reached.
    let direct: Vec<_> = plan
        .endpoints
        .iter()
        .filter_map(|e| {
            direct
                .iter()
                .find(|d| d.port == e.port)
                .map(|d| diagnose::proxy::DirectProbe {
                    endpoint: e.name.clone(),
                    port: e.port,
                    connected: d.connected,
                })
        })
        .collect();
    diagnose::proxy::environment_finding(endpoints, &plan.proxy.as_ref()?.info(), &direct)
}

/// The time a phase may take: the per-phase timeout or what is left of the
/// deadline, whichever is shorter; `None` once the deadline has passed.
fn budget(timeout: Duration, deadline_at: Instant) -> Option<Duration> {
    let left = deadline_at.saturating_duration_since(Instant::now());
    (left > Duration::from_millis(1)).then(|| timeout.min(left))
}

/// How the plan's SAS tokens age (see [`Credentials::token_timing`]).
pub fn token_timing(plan: &CheckPlan) -> (Option<Duration>, Option<u64>) {
    plan.credentials.token_timing()
}

fn sas_for_run(plan: &CheckPlan, started: SystemTime) -> Option<(Secret, SasTokenInfo)> {
    plan.credentials.sas_for_run(&plan.hub_host, started)
}

async fn run_endpoint(
    plan: &CheckPlan,
    ep: &Endpoint,
    dns_outcome: Option<&dns::DnsOutcome>,
    sas_token: Option<&Secret>,
    deadline_at: Instant,
    identity_lock: &tokio::sync::Mutex<()>,
    canary: Option<&str>,
) -> EndpointReport {
    let mut chain = Chain::new(ep);
    let proxied = plan.active_proxy().is_some();
    if proxied {
        chain.planned.insert(2, Phase::Proxy);
    }
    let Some(dns_outcome) = dns_outcome else {
        chain.skip_rest("the run's deadline passed before DNS");
        return chain.finish(ep);
    };
    chain.push(dns_outcome.result.clone());
    if !dns_outcome.result.is_ok() {
        chain.skip_rest("DNS failed");
        return chain.finish(ep);
    }

    // A hub allows one connection per device identity, so MQTT endpoints that use the
    // device's own identity take turns, whole chain at a time: a connection never sits
    // idle waiting for its turn (a hub or proxy might drop it, and the report would
    // blame the path). The wait is bounded by the run's deadline.
    let uses_identity =
        ep.protocol == Protocol::Mqtt && !matches!(plan.credentials, Credentials::None);
    let delegated = uses_identity && canary.is_some();
    // An AMQP connection authenticated as the device (CBS put-token, PLAIN, X.509)
    // counts as the device's one connection too: it takes its turn, and while the
    // agent's canary holds the identity it opens anonymously (SASL and open only).
    let amqp_identity =
        ep.protocol == Protocol::Amqp && !matches!(plan.credentials, Credentials::None);
    let amqp_delegated = amqp_identity && canary.is_some();
    let turn = match (ep.protocol, &plan.credentials) {
        (Protocol::Mqtt, Credentials::None) | (Protocol::Http, _) => None,
        (Protocol::Amqp, _) if !amqp_identity || amqp_delegated => None,
        (Protocol::Mqtt, _) if delegated => None,
        (Protocol::Mqtt | Protocol::Amqp, _) => {
            match tokio::time::timeout_at(deadline_at, identity_lock.lock()).await {
                Ok(guard) => Some(guard),
                Err(_) => {
                    chain.skip_rest(
                        "the run's deadline passed while another endpoint used the device identity",
                    );
                    return chain.finish(ep);
                }
            }
        }
    };

    // TCP → TLS → WebSocket
    let hops = Budget {
        per_hop: plan.timeout,
        deadline_at: Some(deadline_at),
    };
    let opened = net::open(&dns_outcome.addresses, &plan.chain_spec(ep), &hops).await;
    for r in opened.phases {
        chain.push(r);
    }
    let link = match opened.link {
        Ok(link) => link,
        Err(ChainStop::Failed(hop, _)) => {
            // Through a proxy the TCP hop ends at the proxy: the path MTU to the hub
            // is not this device's to probe.
            if chain.tls_class() == Some(FailureClass::TlsTimeout) && !proxied {
                // The MTU probe needs no device identity: let the next endpoint go.
                drop(turn);
                chain
                    .mtu_probe(plan, ep, MtuTrigger::TlsTimeout, deadline_at)
                    .await;
            }
            chain.skip_rest(hop.failed_reason());
            return chain.finish(ep);
        }
        Err(ChainStop::Deadline(_)) => {
            chain.skip_rest("the run's deadline passed");
            return chain.finish(ep);
        }
    };

    // Protocol
    let Some(t) = budget(plan.timeout, deadline_at) else {
        chain.skip_rest("the run's deadline passed");
        return chain.finish(ep);
    };
    let result = match (ep.protocol, link) {
        (Protocol::Mqtt, mut link) if delegated => {
            link.close().await;
            chain.delegated = true;
            PhaseResult::skipped(
                Phase::Mqtt,
                format!(
                    "skipped: the agent's canary session is connected with this identity on {} (a hub allows one connection per identity); its state is in the report's canary section",
                    canary.unwrap_or("?")
                ),
            )
        }
        (Protocol::Mqtt, mut link) => {
            let opts = mqtt_options(plan, sas_token, t);
            mqtt::probe(&mut link, &opts).await
        }
        (Protocol::Amqp, link) => {
            let mut opts = amqp_options(plan, sas_token, t);
            if amqp_delegated {
                opts.auth = amqp::AmqpAuth::Anonymous;
                opts.events_address = None;
                opts.note = Some(format!(
                    "authentication not tested: the agent's canary session is connected with this identity on {} (a hub allows one connection per identity)",
                    canary.unwrap_or("?")
                ));
            }
            amqp::probe_link(link, &opts).await
        }
        (Protocol::Http, Link::Stream(mut s)) => {
            http::probe(&mut s, &plan.host, ep.path.as_deref().unwrap_or("/"), t).await
        }
        // Profiles refuse WebSocket for non-MQTT endpoints; keep the chain honest anyway.
        (_, Link::Ws(_)) => PhaseResult::skipped(
            protocol_phase(ep.protocol),
            "WebSocket transport is for MQTT only",
        ),
    };
    chain.push(result);
    if plan.mtu_probe && ep.transport.uses_tls() && !proxied {
        drop(turn);
        chain
            .mtu_probe(plan, ep, MtuTrigger::Requested, deadline_at)
            .await;
    }
    chain.finish(ep)
}

fn protocol_phase(p: Protocol) -> Phase {
    match p {
        Protocol::Mqtt => Phase::Mqtt,
        Protocol::Amqp => Phase::Amqp,
        Protocol::Http => Phase::Http,
    }
}

/// The MQTT identity for this run from the profile's templates.
/// The AMQP phase's options: SASL PLAIN with a user name and password, claims-based
/// security (ANONYMOUS, then put-token) with a SAS identity, no SASL layer with an
/// X.509 identity (the TLS client certificate authenticates), ANONYMOUS otherwise; the
/// device's events address when the identity names a device.
fn amqp_options(
    plan: &CheckPlan,
    sas_token: Option<&Secret>,
    timeout: Duration,
) -> amqp::AmqpOptions {
    let creds = &plan.credentials;
    let device = match (creds.device_id(), creds.module_id()) {
        (Some(d), Some(m)) => Some(format!("{d}/modules/{m}")),
        (Some(d), None) => Some(d.to_string()),
        _ => None,
    };
    let auth = match (creds, sas_token, &device) {
        (
            Credentials::Password {
                username, password, ..
            },
            _,
            _,
        ) => amqp::AmqpAuth::Plain {
            username: username.clone(),
            password: password.clone(),
        },
        (Credentials::DeviceKey { .. } | Credentials::SasToken { .. }, Some(token), Some(d)) => {
            amqp::AmqpAuth::Cbs {
                audience: format!("{}/devices/{d}", plan.hub_host),
                token: token.clone(),
            }
        }
        (Credentials::X509 { .. }, _, _) => amqp::AmqpAuth::TlsClientCertificate,
        _ => amqp::AmqpAuth::Anonymous,
    };
    let events_address = device.as_deref().and_then(|d| {
        plan.profile
            .amqp
            .as_ref()
            .map(|a| a.events_address.replace("{device}", d))
    });
    amqp::AmqpOptions {
        hostname: plan.hub_host.clone(),
        container_id: device.unwrap_or_else(|| format!("hubprobe-{}", &report::new_id()[..8])),
        auth,
        events_address,
        timeout,
        note: None,
    }
}

fn mqtt_options(plan: &CheckPlan, sas_token: Option<&Secret>, timeout: Duration) -> MqttOptions {
    let creds = &plan.credentials;
    let throwaway;
    let device_id = match creds.device_id() {
        Some(d) => d,
        None => {
            throwaway = format!("hubprobe-{}", &report::new_id()[..8]);
            &throwaway
        }
    };
    let client_id_base = match creds.module_id() {
        Some(m) => format!("{device_id}/{m}"),
        None => device_id.to_string(),
    };
    let username_given = match creds {
        Credentials::Password { username, .. } => Some(username.as_str()),
        _ => None,
    };
    let fill = |tpl: &str| {
        tpl.replace("{id_scope}", creds.id_scope().unwrap_or(""))
            .replace("{host}", &plan.hub_host)
            .replace("{device_id}", &client_id_base)
            .replace("{username}", username_given.unwrap_or(""))
    };
    let client_id = fill(&plan.profile.mqtt.client_id);
    let username = match username_given {
        Some(u) if !plan.profile.mqtt.username.contains("{username}") => Some(u.to_string()),
        _ => Some(fill(&plan.profile.mqtt.username)).filter(|u| !u.is_empty()),
    };
    let password = match creds {
        Credentials::DeviceKey { .. } | Credentials::SasToken { .. } => sas_token.cloned(),
        Credentials::Dps { key: Some(_), .. } => sas_token.cloned(),
        Credentials::Password { password, .. } => Some(password.clone()),
        _ => None,
    };
    MqttOptions {
        client_id,
        username,
        password,
        keep_alive: plan.keep_alive.as_secs().min(u16::MAX as u64) as u16,
        auth: creds.kind(),
        pings: plan.pings,
        timeout,
        version: plan.profile.mqtt.version,
    }
}

/// The phases of one endpoint as they complete, with the skip bookkeeping.
struct Chain {
    phases: Vec<PhaseResult>,
    planned: Vec<Phase>,
    /// The MQTT phase was left to the agent's connected canary session.
    delegated: bool,
}

impl Chain {
    fn new(ep: &Endpoint) -> Self {
        let mut planned = vec![Phase::Dns, Phase::Tcp];
        if ep.transport.uses_tls() {
            planned.push(Phase::Tls);
        }
        if ep.transport.uses_websocket() {
            planned.push(Phase::Websocket);
        }
        planned.push(protocol_phase(ep.protocol));
        Chain {
            phases: Vec::new(),
            planned,
            delegated: false,
        }
    }

    fn push(&mut self, r: PhaseResult) {
        self.phases.push(r);
    }

    /// The class of the TLS phase, when it failed.
    fn tls_class(&self) -> Option<FailureClass> {
        self.phases
            .iter()
            .find(|p| p.phase == Phase::Tls)
            .and_then(|p| p.class)
    }

    /// Runs the path-MTU probe to the address the TCP phase used and files its
    /// evidence under the TLS phase; a proven black hole turns a `tls.timeout` into
    /// `tls.mtu_black_hole`, and a timeout the probe does not explain says so.
    async fn mtu_probe(
        &mut self,
        plan: &CheckPlan,
        ep: &Endpoint,
        trigger: MtuTrigger,
        deadline_at: Instant,
    ) {
        let address = self
            .phases
            .iter()
            .find(|p| p.phase == Phase::Tcp)
            .and_then(|p| p.evidence())
            .and_then(Evidence::tcp)
            .and_then(|t| t.remote_address.as_deref())
            .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
            .map(|a| a.ip());
        let Some(address) = address else { return };
        let took: Duration = self
            .phases
            .iter()
            .filter(|p| matches!(p.phase, Phase::Tcp | Phase::Tls))
            .filter_map(|p| p.duration_ms)
            .map(|m| Duration::from_secs_f64(m.max(0.0) / 1000.0))
            .sum();
        let Some(tls) = self.phases.iter_mut().find(|p| p.phase == Phase::Tls) else {
            return;
        };
        let full = mtu::FullAttempt {
            ok: tls.is_ok(),
            class: tls.class,
            took,
        };
        let ev = mtu::probe(
            &plan.chain_spec(ep),
            address,
            trigger,
            full,
            plan.timeout,
            Some(deadline_at),
        )
        .await;
        if !tls.is_ok() {
            let said = tls.message.clone().unwrap_or_default();
            if ev.black_hole {
                // The full-size attempt's own class stays in `evidence.mtu.attempts[0]`.
                tls.class = Some(FailureClass::TlsMtuBlackHole);
                tls.message = Some(mtu::summary(&ev));
            } else {
                tls.message = Some(format!("{said}; {}", mtu::summary(&ev)));
            }
        }
        if let Some(Evidence::Tls(t)) = tls.evidence.as_mut() {
            t.mtu = Some(ev);
        } else {
            tls.evidence = Some(Evidence::from(crate::model::TlsEvidence {
                mtu: Some(ev),
                ..Default::default()
            }));
        }
    }

    fn skip_rest(&mut self, reason: &str) {
        for p in self.planned.clone().into_iter().skip(self.phases.len()) {
            self.phases
                .push(PhaseResult::skipped(p, format!("skipped: {reason}")));
        }
    }

    fn finish(self, ep: &Endpoint) -> EndpointReport {
        let failed = self
            .phases
            .iter()
            .any(|p| p.status == crate::model::Status::Failed);
        // A protocol phase left to the agent's connected canary counts as fine.
        let delegated = self.delegated;
        let all_skipped_or_ok = !failed
            && self
                .phases
                .iter()
                .all(|p| p.is_ok() || (delegated && p.phase == Phase::Mqtt));
        EndpointReport {
            name: ep.name.clone(),
            protocol: ep.protocol,
            transport: ep.transport,
            port: ep.port,
            verdict: if failed {
                Verdict::Critical
            } else if all_skipped_or_ok {
                Verdict::Ok
            } else {
                Verdict::Unknown
            },
            phases: self.phases,
        }
    }
}

/// The DNS phase of a run: the hub's name, or — through an `http://` or
/// `socks5h://` proxy, which resolves the hub itself — the proxy's name, the hub
/// name noted as left to the proxy. Its addresses are what [`net::open`] wants for
/// [`CheckPlan::chain_spec`]. The check, the tuner and the canary all resolve so.
pub async fn resolve_first_hop(plan: &CheckPlan, timeout: Duration) -> dns::DnsOutcome {
    let opts = DnsOptions {
        server: plan.dns_server,
        timeout,
    };
    match plan.active_proxy() {
        Some(p) if p.scheme.proxy_resolves() => {
            let mut out = dns::resolve(&p.host, &opts).await;
            if let Some(Evidence::Dns(d)) = out.result.evidence.as_mut() {
                d.left_to_proxy = Some(plan.host.clone());
            }
            if let Some(m) = out.result.message.as_mut() {
                *m = format!("the proxy's name {}: {m}", p.host);
            }
            out
        }
        _ => dns::resolve(&plan.host, &opts).await,
    }
}

impl CheckPlan {
    /// The proxy the chains go through (none when unset or bypassed by `NO_PROXY`).
    pub fn active_proxy(&self) -> Option<&Arc<crate::net::proxy::ProxyConfig>> {
        self.proxy.as_ref().and_then(|p| p.active())
    }

    /// The connection chain of `ep` (TCP → TLS → WebSocket as its transport says).
    pub fn chain_spec(&self, ep: &Endpoint) -> ChainSpec {
        ChainSpec {
            host: self.host.clone(),
            port: ep.port,
            transport: ep.transport,
            ws_path: ep.path.clone().unwrap_or_else(|| "/".into()),
            ws_subprotocol: match ep.protocol {
                Protocol::Amqp => crate::probe::amqp::WS_SUBPROTOCOL.into(),
                _ => "mqtt".into(),
            },
            interface: self.interface.clone(),
            source_ip: self.source_ip,
            mss: None,
            proxy: self.proxy.as_ref().and_then(|p| p.active().cloned()),
            tls: TlsHop {
                alpn: ep.alpn.clone(),
                expected_anchors: self.profile.trust.expected_anchors.clone(),
                legacy_anchors: self.profile.trust.legacy_anchors.clone(),
                client_identity: self.client_identity.clone(),
                trust: self.trust.clone(),
            },
        }
    }
}

/// Builds an endpoint's transport up to its protocol (TCP → TLS → WebSocket), each
/// step bounded by `timeout`, for sessions that outlive a check (the tuner's, the
/// canary's). The error names the failing step's phase and class.
pub async fn open_link(
    plan: &CheckPlan,
    ep: &Endpoint,
    addresses: &[std::net::IpAddr],
    timeout: Duration,
) -> Result<Link, ChainFailure> {
    net::open(addresses, &plan.chain_spec(ep), &Budget::per_hop(timeout))
        .await
        .into_link()
}

/// Opens a long MQTT session with the plan's identity on `ep` (the tuner's hub
/// mode, the agent's canary): the chain, then CONNECT → CONNACK. The error names
/// the failing phase and its class.
pub async fn open_session(
    plan: &CheckPlan,
    ep: &Endpoint,
    addresses: &[std::net::IpAddr],
    keep_alive: Duration,
) -> Result<mqtt::Session, ChainFailure> {
    let link = open_link(plan, ep, addresses, plan.timeout).await?;
    let opts = session_options(plan, keep_alive, plan.timeout);
    mqtt::Session::connect(link, &opts)
        .await
        .map_err(|f| ChainFailure {
            phase: Phase::Mqtt,
            class: f.class,
            message: f.message,
        })
}

/// MQTT options for a long session with the device identity of `plan` and the
/// given keep-alive (a fresh SAS token is generated per session).
pub fn session_options(plan: &CheckPlan, keep_alive: Duration, timeout: Duration) -> MqttOptions {
    let sas = sas_for_run(plan, SystemTime::now());
    let mut opts = mqtt_options(plan, sas.as_ref().map(|s| &s.0), timeout);
    opts.keep_alive = keep_alive.as_secs().clamp(1, u16::MAX as u64) as u16;
    opts.pings = 0;
    opts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Status;
    use crate::probe::tls::TrustSource;

    fn plan(credentials: Credentials) -> CheckPlan {
        let profile = Profile::load("azure-iot-hub").unwrap();
        CheckPlan {
            endpoints: profile.endpoints.clone(),
            profile,
            host: "gw.example.test".into(),
            hub_host: "hub.example.test".into(),
            dns_server: None,
            interface: None,
            source_ip: None,
            trust: Arc::new(TrustStore::load(TrustSource::None, &[]).unwrap()),
            client_identity: None,
            credentials,
            keep_alive: Duration::from_secs(240),
            pings: 2,
            timeout: Duration::from_secs(5),
            deadline: Duration::from_secs(30),
            labels: Default::default(),
            identity_share: None,
            mtu_probe: false,
            proxy: None,
            ntp_servers: vec![],
            ntp_timeout: Duration::from_secs(1),
        }
    }

    fn device_key() -> Credentials {
        Credentials::DeviceKey {
            device_id: "dev1".into(),
            module_id: Some("mod1".into()),
            key: Secret::new("dGhpcy1pcy1hLWxhYi1kZXZpY2Uta2V5LTEyMzQ1Njc="),
            ttl: Duration::from_secs(3600),
            expiry: Some(4_102_444_800),
        }
    }

    #[test]
    fn mqtt_identity_follows_the_profile_templates() {
        let p = plan(device_key());
        let (token, info) = sas_for_run(&p, SystemTime::now()).unwrap();
        assert_eq!(info.resource, "hub.example.test/devices/dev1/modules/mod1");
        let o = mqtt_options(&p, Some(&token), Duration::from_secs(3));
        assert_eq!(o.client_id, "dev1/mod1");
        // The hub's name, not the gateway connected to, goes into the user name.
        assert_eq!(
            o.username.as_deref(),
            Some("hub.example.test/dev1/mod1/?api-version=2021-04-12")
        );
        assert!(o
            .password
            .as_ref()
            .unwrap()
            .expose()
            .contains("se=4102444800"));
        assert_eq!((o.keep_alive, o.pings, o.auth), (240, 2, "sas-key"));
    }

    #[test]
    fn no_identity_gets_a_throwaway_client_id_and_no_password() {
        let p = plan(Credentials::None);
        let o = mqtt_options(&p, None, Duration::from_secs(3));
        assert!(o.client_id.starts_with("hubprobe-") && o.client_id.len() == 17);
        assert!(o.password.is_none());
        // Two runs never share a throw-away id (a hub would drop the first).
        assert_ne!(
            mqtt_options(&p, None, Duration::from_secs(3)).client_id,
            o.client_id
        );
    }

    #[test]
    fn a_failed_hop_skips_the_rest_of_the_chain_with_its_reason() {
        let p = plan(Credentials::None);
        let wss = p.endpoints.iter().find(|e| e.name == "mqtt-ws").unwrap();
        let mut chain = Chain::new(wss);
        chain.push(PhaseResult::ok(
            Phase::Dns,
            Duration::ZERO,
            crate::model::NoEvidence,
        ));
        chain.push(PhaseResult::failed(
            Phase::Tcp,
            Duration::ZERO,
            crate::model::FailureClass::TcpRefused,
            "refused",
            crate::model::NoEvidence,
        ));
        chain.skip_rest(crate::net::Hop::Tcp.failed_reason());
        let r = chain.finish(wss);
        let phases: Vec<_> = r.phases.iter().map(|p| (p.phase, p.status)).collect();
        assert_eq!(
            phases,
            [
                (Phase::Dns, Status::Ok),
                (Phase::Tcp, Status::Failed),
                (Phase::Tls, Status::Skipped),
                (Phase::Websocket, Status::Skipped),
                (Phase::Mqtt, Status::Skipped),
            ]
        );
        assert_eq!(r.phases[4].message.as_deref(), Some("skipped: TCP failed"));
        assert_eq!(r.verdict, Verdict::Critical);
    }

    #[test]
    fn an_mqtt_phase_left_to_the_canary_counts_as_fine() {
        let p = plan(device_key());
        let tls = p.endpoints.iter().find(|e| e.name == "mqtt-tls").unwrap();
        let mut chain = Chain::new(tls);
        for phase in [Phase::Dns, Phase::Tcp, Phase::Tls] {
            chain.push(PhaseResult::ok(
                phase,
                Duration::ZERO,
                crate::model::NoEvidence,
            ));
        }
        chain.delegated = true;
        chain.push(PhaseResult::skipped(Phase::Mqtt, "left to the canary"));
        assert_eq!(chain.finish(tls).verdict, Verdict::Ok);
    }

    #[tokio::test]
    async fn a_run_past_its_deadline_sends_nothing_and_says_so() {
        let mut p = plan(Credentials::None);
        p.deadline = Duration::ZERO;
        let report = run(&p).await;
        assert_eq!(report.verdict, Verdict::Unknown);
        assert_eq!(report.endpoints.len(), p.endpoints.len());
        for e in &report.endpoints {
            assert!(
                e.phases.iter().all(|ph| ph.status == Status::Skipped),
                "{e:?}"
            );
            assert!(e.phases[0]
                .message
                .as_deref()
                .unwrap()
                .contains("deadline passed before DNS"));
        }
    }
}

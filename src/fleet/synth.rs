//! Realistic fleets of reports for tests and benchmarks (`hubprobe fleet synth`).
//!
//! Reports are built from the real report types (and the real findings, verdict,
//! keep-alive statistics and recommendation code), so they stay true to the model
//! and validate against the schema. A fleet has devices at sites, each on its
//! site's wired network or on one of two cellular carriers, checking every
//! `interval` and tuning once; canary sessions renew their SAS token every 48 min
//! and now and then drop on a reset. Failure patterns are injected on request and
//! their ground truth is returned with the reports, so tests can check that the
//! summary finds exactly them.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::model::FailureClass;
use crate::model::{AnchorEvidence, CertInfo, TlsEvidence};
use crate::model::{CanaryReport, Diagnosis, DiagnosisKind, DisconnectCause, DisconnectEvent};
use crate::model::{EndpointReport, Report, Target, Verdict, SCHEMA_ID};
use crate::model::{Phase, PhaseResult};
use crate::model::{Protocol, Transport};
use crate::profile::Profile;

/// What to generate.
#[derive(Debug, Clone)]
pub struct SynthConfig {
    /// Devices.
    pub devices: usize,
    /// Sites.
    pub sites: usize,
    /// Length of the period covered.
    pub duration: Duration,
    /// Check period of every device.
    pub interval: Duration,
    /// Start, Unix ms.
    pub start_ms: i64,
    /// Random seed.
    pub seed: u64,
    /// Share of reports uploaded twice (store-and-forward repeats).
    pub repeat_share: f64,
    /// The site whose wired network blocks ports 8883 and 5671.
    pub firewall_site: Option<usize>,
    /// Devices whose trust store lacks the hub's root (every `n`-th device, offset 5).
    pub missing_ca_every: Option<usize>,
    /// A hub-side incident: (offset from start, length).
    pub hub_incident: Option<(Duration, Duration)>,
    /// A site whose network goes down: (site, offset from start, length).
    pub site_outage: Option<(usize, Duration, Duration)>,
    /// The `cell-b` carrier's NAT drops idle flows after this long.
    pub nat_idle_timeout: Option<Duration>,
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            devices: 200,
            sites: 8,
            duration: Duration::from_secs(12 * 3600),
            interval: Duration::from_secs(900),
            start_ms: 1_795_651_200_000, // 2026-11-26T00:00:00Z
            seed: 1,
            repeat_share: 0.0,
            firewall_site: None,
            missing_ca_every: None,
            hub_incident: None,
            site_outage: None,
            nat_idle_timeout: None,
        }
    }
}

impl SynthConfig {
    /// Every pattern of the issue: a site behind a firewall blocking 8883, devices
    /// missing the root CA, a fleet-wide hub incident, a NAT dropping idle flows
    /// after 240 s.
    pub fn with_all_patterns(mut self) -> Self {
        self.firewall_site = Some(2 % self.sites.max(1));
        self.missing_ca_every = Some(17);
        self.hub_incident = Some((self.duration.mul_f64(0.55), Duration::from_secs(20 * 60)));
        self.nat_idle_timeout = Some(Duration::from_secs(240));
        self
    }
}

/// The injected patterns, as generated.
#[derive(Debug, Clone, Default)]
pub struct Truth {
    /// Devices behind the firewall.
    pub firewalled: BTreeSet<String>,
    /// Devices lacking the root CA.
    pub missing_ca: BTreeSet<String>,
    /// Devices behind the idle-dropping NAT.
    pub nat: BTreeSet<String>,
    /// The hub incident, Unix ms [from, to).
    pub hub_incident_ms: Option<(i64, i64)>,
    /// The site outage, Unix ms [from, to).
    pub site_outage_ms: Option<(i64, i64)>,
    /// Devices whose check failed during the hub incident.
    pub incident_check_failures: BTreeSet<String>,
    /// Reports generated (repeats included).
    pub lines: u64,
    /// Repeats among them.
    pub repeats: u64,
}

/// splitmix64: small, fast, deterministic.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeded generator.
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Log-normal-ish latency around `median` ms.
    fn latency(&mut self, median: f64) -> f64 {
        let u = self.f64().max(1e-9);
        let z = (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * self.f64()).cos();
        ((median * (0.35 * z).exp()) * 1000.0).round() / 1000.0
    }
    fn id(&mut self) -> String {
        let a = self.next_u64();
        let b = self.next_u64();
        format!(
            "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            b >> 52,
            b & 0xffff_ffff_ffff
        )
    }
}

/// One device of the fleet.
#[derive(Debug, Clone)]
pub struct Device {
    /// Device id.
    pub id: String,
    /// Site label.
    pub site: String,
    /// Network label.
    pub network: String,
    /// `wired` or `cellular`.
    pub network_type: String,
    /// Firmware label.
    pub firmware: String,
    firewalled: bool,
    missing_ca: bool,
    nat: bool,
    site_index: usize,
    offset_ms: i64,
}

/// The devices of a config.
pub fn devices(cfg: &SynthConfig) -> Vec<Device> {
    let mut rng = Rng::new(cfg.seed.wrapping_add(7));
    let sites = cfg.sites.max(1);
    (0..cfg.devices)
        .map(|i| {
            let site_index = i % sites;
            let site = format!("site-{site_index:02}");
            // A quarter of each site's devices are cellular, on two carriers.
            let k = (i / sites) % 8;
            let cellular = k == 3 || k == 7;
            let network = if cellular {
                if k == 3 { "cell-a" } else { "cell-b" }.to_string()
            } else {
                format!("wired-{site}")
            };
            let nat = cfg.nat_idle_timeout.is_some() && network == "cell-b";
            Device {
                id: format!("dev-{i:05}"),
                firewalled: !cellular && cfg.firewall_site == Some(site_index),
                missing_ca: cfg
                    .missing_ca_every
                    .is_some_and(|n| n > 0 && i % n == 5 % n),
                nat,
                network_type: if cellular { "cellular" } else { "wired" }.into(),
                firmware: ["1.4.2", "1.5.0"][i % 2].into(),
                site,
                network,
                site_index,
                offset_ms: (rng.f64() * cfg.interval.as_millis() as f64) as i64,
            }
        })
        .collect()
}

fn rfc(ms: i64) -> String {
    super::summary::rfc3339_ms(ms)
}

fn cert(subject: &str, issuer: &str, sans: &[&str], rng: &mut Rng, ca: bool) -> CertInfo {
    CertInfo {
        subject: subject.into(),
        issuer: issuer.into(),
        sans: sans.iter().map(|s| s.to_string()).collect(),
        not_before: "2026-03-01T00:00:00Z".into(),
        not_after: "2027-02-28T23:59:59Z".into(),
        sha256: format!(
            "{:016x}{:016x}{:016x}{:016x}",
            rng.next_u64(),
            rng.next_u64(),
            rng.next_u64(),
            rng.next_u64()
        ),
        is_ca: ca,
        serial: format!("{:016x}{:08x}", rng.next_u64(), rng.next_u64() >> 32),
        parse_error: None,
    }
}

const HUB: &str = "fleet-hub.azure-devices.net";

/// Context of one generated check.
struct CheckCtx<'a> {
    dev: &'a Device,
    at_ms: i64,
    hub_down: bool,
    site_down: bool,
}

fn endpoint_report(
    name: &str,
    port: u16,
    protocol: Protocol,
    transport: Transport,
    c: &CheckCtx<'_>,
    rng: &mut Rng,
) -> EndpointReport {
    let cellular = c.dev.network_type == "cellular";
    let rtt = if cellular { 85.0 } else { 18.0 };
    let mut phases = Vec::new();
    let mut failed = false;
    let push = |phases: &mut Vec<PhaseResult>, failed: &mut bool, p: PhaseResult| {
        if *failed {
            phases.push(PhaseResult::skipped(p.phase, "an earlier phase failed"));
        } else {
            *failed = p.status == crate::model::Status::Failed;
            phases.push(p);
        }
    };
    let ms = |v: f64| Duration::from_secs_f64(v / 1000.0);
    // DNS
    let dns_ev = crate::model::DnsEvidence {
        query: HUB.into(),
        literal: false,
        source: crate::model::DnsSource::Dns,
        servers: vec!["10.0.0.53:53".into()],
        cname_chain: vec!["ihsu-prod-am3-015.cloudapp.net".into()],
        a: None,
        aaaa: None,
        addresses: if c.site_down {
            vec![]
        } else {
            vec![std::net::IpAddr::from([20, 50, 1, 10])]
        },
        left_to_proxy: None,
    };
    let dns = if c.site_down {
        PhaseResult::failed(
            Phase::Dns,
            ms(5000.0),
            FailureClass::DnsTimeout,
            "no answer from 10.0.0.53:53 within 5s",
            &dns_ev,
        )
    } else {
        PhaseResult::ok(Phase::Dns, ms(rng.latency(rtt * 0.6)), &dns_ev)
    };
    push(&mut phases, &mut failed, dns);
    // TCP
    let blocked = c.dev.firewalled && (port == 8883 || port == 5671);
    let tcp_ms = if blocked { 10_000.0 } else { rng.latency(rtt) };
    let tcp_ev = crate::model::TcpEvidence {
        port,
        remote_address: (!blocked).then(|| format!("20.50.1.10:{port}")),
        local_address: (!blocked).then(|| "10.1.2.3:51000".to_string()),
        interface: None,
        attempts: vec![crate::model::Attempt {
            address: format!("20.50.1.10:{port}"),
            family: "ipv4".into(),
            status: if blocked { "failed" } else { "ok" }.into(),
            duration_ms: Some(tcp_ms),
            class: blocked.then_some(FailureClass::TcpTimeout),
            message: blocked.then(|| "connect timed out".to_string()),
            local_address: (!blocked).then(|| "10.1.2.3:51000".to_string()),
        }],
    };
    let tcp = if blocked {
        PhaseResult::failed(
            Phase::Tcp,
            ms(tcp_ms),
            FailureClass::TcpTimeout,
            format!("no answer to SYN from 20.50.1.10:{port} within 10s"),
            &tcp_ev,
        )
    } else {
        PhaseResult::ok(Phase::Tcp, ms(tcp_ms), &tcp_ev)
    };
    push(&mut phases, &mut failed, tcp);
    // TLS
    let mut tls_ev = TlsEvidence {
        server_name: HUB.into(),
        alpn_offered: if protocol == Protocol::Mqtt && transport == Transport::Tls {
            vec!["x-amzn-mqtt-ca".into()]
        } else {
            vec![]
        },
        chain: vec![
            cert(
                "CN=*.azure-devices.net",
                "CN=Microsoft Azure RSA TLS Issuing CA 03, O=Microsoft Corporation, C=US",
                &[
                    "*.azure-devices.net",
                    "*.amqpws.azure-devices.net",
                    "*.su.management-azure-devices.net",
                ],
                rng,
                false,
            ),
            cert(
                "CN=Microsoft Azure RSA TLS Issuing CA 03, O=Microsoft Corporation, C=US",
                "CN=DigiCert Global Root G2, OU=www.digicert.com, O=DigiCert Inc, C=US",
                &[],
                rng,
                true,
            ),
        ],
        ..TlsEvidence::default()
    };
    let tls = if c.dev.missing_ca {
        tls_ev.verify_error = Some("UnknownIssuer".into());
        PhaseResult::failed(Phase::Tls, ms(rng.latency(rtt * 2.0)), FailureClass::TlsUnknownCa, "chain ends at issuer 'DigiCert Global Root G2' which is not in the trust store (128 anchors)", &tls_ev)
    } else {
        tls_ev.version = Some("TLSv1.2".into());
        tls_ev.cipher_suite = Some("TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384".into());
        tls_ev.leaf_days_left = Some(94.5);
        tls_ev.trust_anchor = Some(AnchorEvidence {
            name: "DigiCert Global Root G2".into(),
            subject: "CN=DigiCert Global Root G2, OU=www.digicert.com, O=DigiCert Inc, C=US".into(),
            origin: "system".into(),
            expected: true,
            legacy: false,
            ..Default::default()
        });
        PhaseResult::ok(Phase::Tls, ms(rng.latency(rtt * 2.2)), &tls_ev)
    };
    push(&mut phases, &mut failed, tls);
    if transport == Transport::Wss {
        let ws = PhaseResult::ok(
            Phase::Websocket,
            ms(rng.latency(rtt)),
            crate::model::WsEvidence {
                url: format!("wss://{HUB}/$iothub/websocket"),
                status: Some(101),
                subprotocol: Some("mqtt".into()),
                server: None,
            },
        );
        push(&mut phases, &mut failed, ws);
    }
    match protocol {
        Protocol::Mqtt => {
            let connack_ms = rng.latency(rtt * 1.5);
            let ev = crate::model::MqttEvidence {
                client_id: c.dev.id.clone(),
                username: Some(format!("{HUB}/{}/?api-version=2021-04-12", c.dev.id)),
                auth: "sas-key".into(),
                auth_tested: true,
                keep_alive_s: 240,
                connack: Some(crate::model::ConnackEvidence {
                    code: if c.hub_down { 3 } else { 0 },
                    name: if c.hub_down {
                        "server unavailable"
                    } else {
                        "accepted"
                    }
                    .into(),
                    session_present: false,
                }),
                connack_ms: Some(connack_ms),
                ping_rtts_ms: if c.hub_down {
                    vec![]
                } else {
                    vec![rng.latency(rtt), rng.latency(rtt), rng.latency(rtt)]
                },
                disconnect_sent: !c.hub_down,
                note: None,
                ..Default::default()
            };
            let p = if c.hub_down {
                PhaseResult::failed(
                    Phase::Mqtt,
                    ms(connack_ms),
                    FailureClass::MqttServerUnavailable,
                    "CONNACK 3: server unavailable",
                    &ev,
                )
            } else {
                PhaseResult::ok(Phase::Mqtt, ms(connack_ms + rtt * 3.0), &ev)
            };
            push(&mut phases, &mut failed, p);
        }
        Protocol::Amqp => {
            let p = PhaseResult::ok(
                Phase::Amqp,
                ms(rng.latency(rtt)),
                crate::model::AmqpEvidence {
                    sent: "AMQP 3 1.0.0".into(),
                    received: Some("AMQP 3 1.0.0".into()),
                    ..Default::default()
                },
            );
            push(&mut phases, &mut failed, p);
        }
        Protocol::Http => {
            let off = (rng.f64() - 0.5) * 0.8;
            let ev = crate::model::HttpEvidence {
                request: "GET / HTTP/1.1".into(),
                status: Some(404),
                status_line: Some("HTTP/1.1 404 Not Found".into()),
                server: Some("Microsoft-HTTPAPI/2.0".into()),
                date: Some(httpdate::fmt_http_date(
                    std::time::UNIX_EPOCH + Duration::from_millis(c.at_ms.max(0) as u64),
                )),
                clock_offset_s: Some((off * 1000.0).round() / 1000.0),
            };
            let p = PhaseResult::ok(Phase::Http, ms(rng.latency(rtt * 1.2)), &ev);
            push(&mut phases, &mut failed, p);
        }
    }
    EndpointReport {
        name: name.into(),
        protocol,
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

fn base_report(dev: &Device, kind: &str, at_ms: i64, dur_ms: f64, rng: &mut Rng) -> Report {
    let mut labels = BTreeMap::new();
    labels.insert("site".to_string(), dev.site.clone());
    labels.insert("network".to_string(), dev.network.clone());
    labels.insert("network_type".to_string(), dev.network_type.clone());
    labels.insert("firmware".to_string(), dev.firmware.clone());
    Report {
        schema: SCHEMA_ID.into(),
        id: rng.id(),
        kind: kind.into(),
        hubprobe_version: env!("CARGO_PKG_VERSION").into(),
        host: format!("{}-host", dev.id),
        started_at: rfc(at_ms),
        finished_at: rfc(at_ms + dur_ms as i64),
        duration_ms: dur_ms,
        target: Target {
            host: HUB.into(),
            hub_host: None,
            profile: "azure-iot-hub".into(),
            device_id: Some(dev.id.clone()),
            module_id: None,
            auth: "sas-key".into(),
            dns_server: None,
            interface: None,
            source_ip: None,
            timeout_ms: 10_000,
            deadline_ms: 60_000,
            trust: None,
            sas_token: None,
            proxy: None,
        },
        verdict: Verdict::Ok,
        endpoints: Vec::new(),
        findings: Vec::new(),
        keepalive: None,
        canary: None,
        clock: None,
        device_certificate: None,
        traffic: None,
        labels,
        provisioning: None,
    }
}

/// The tune report of a device.
fn tune_report(cfg: &SynthConfig, dev: &Device, at_ms: i64, rng: &mut Rng) -> Report {
    use crate::tune::discovery::Discovery;
    use crate::tune::recommend::{recommend, IdleBounds, Inputs, LinkStats};
    use crate::tune::stats::{summarize, Sample, StabilityConfig};
    use crate::tune::{IdleOutcome, IdleResult};
    let rtt = if dev.network_type == "cellular" {
        85.0
    } else {
        18.0
    };
    let samples: Vec<Sample> = (0..40)
        .map(|i| Sample {
            at_ms: i as f64 * 2000.0,
            rtt_ms: Some(rng.latency(rtt)),
            idle_before_ms: if i % 5 == 0 { 15_000.0 } else { 2000.0 },
        })
        .collect();
    let stability = summarize(&samples, &StabilityConfig::default());
    let nat = cfg.nat_idle_timeout.filter(|_| dev.nat);
    let results: Vec<IdleResult> = [60u64, 120, 180, 235, 245, 300, 600, 1200]
        .iter()
        .map(|&s| IdleResult {
            idle: Duration::from_secs(s),
            outcome: match nat {
                Some(t) if Duration::from_secs(s) > t => IdleOutcome::SilentDrop,
                _ => IdleOutcome::Survived,
            },
        })
        .collect();
    let discovery = Discovery::from_results(&results, 1);
    let rec = recommend(&Inputs {
        idle_timeout: IdleBounds::from_discovery(&discovery),
        stability: Some(LinkStats::from_stability(&stability)),
        keepalive_min: None,
        keepalive_max: Duration::from_secs(1177),
        detect_within: None,
        operator_floor: None,
        tls: true,
        server_keep_alive: None,
    });
    let mut r = base_report(dev, "tune", at_ms, 1_300_000.0, rng);
    r.endpoints = Vec::new();
    r.keepalive = Some(crate::tune::run::KeepaliveReport {
        mode: "reflector".into(),
        reflector: Some("reflector.example.net:7000".into()),
        endpoint: "mqtt-tls".into(),
        sample_interval_ms: 2000,
        stability,
        discovery: Some(discovery),
        discovery_ms: Some(1_250_000.0),
        recommendation: rec,
    });
    r
}

/// Generates the fleet's reports in time order, calling `emit` for each line
/// (repeats included); returns the ground truth.
pub fn generate(cfg: &SynthConfig, mut emit: impl FnMut(&Report)) -> Truth {
    let profile = Profile::load("azure-iot-hub").expect("built-in profile");
    let devs = devices(cfg);
    let mut rng = Rng::new(cfg.seed);
    let mut truth = Truth::default();
    for d in &devs {
        if d.firewalled {
            truth.firewalled.insert(d.id.clone());
        }
        if d.missing_ca {
            truth.missing_ca.insert(d.id.clone());
        }
        if d.nat {
            truth.nat.insert(d.id.clone());
        }
    }
    let start = cfg.start_ms;
    let end = start + cfg.duration.as_millis() as i64;
    let hub = cfg.hub_incident.map(|(o, l)| {
        (
            start + o.as_millis() as i64,
            start + (o + l).as_millis() as i64,
        )
    });
    let outage = cfg.site_outage.map(|(s, o, l)| {
        (
            s,
            start + o.as_millis() as i64,
            start + (o + l).as_millis() as i64,
        )
    });
    truth.hub_incident_ms = hub;
    truth.site_outage_ms = outage.map(|(_, a, b)| (a, b));
    let interval = cfg.interval.as_millis() as i64;
    // Per device: the time of the last canary event accounted, the next token renewal.
    let mut last_report: Vec<i64> = devs.iter().map(|_| start).collect();
    let mut next_renewal: Vec<i64> = devs
        .iter()
        .map(|d| start + d.offset_ms * 3 % (48 * 60_000))
        .collect();
    let mut sessions: Vec<u64> = devs.iter().map(|_| 1).collect();
    let mut totals: Vec<BTreeMap<String, u64>> = devs
        .iter()
        .map(|_| {
            DisconnectCause::ALL
                .iter()
                .map(|c| (c.as_str().to_string(), 0))
                .collect()
        })
        .collect();
    let mut emit_one = |r: &Report, rng: &mut Rng, truth: &mut Truth| {
        emit(r);
        truth.lines += 1;
        if cfg.repeat_share > 0.0 && rng.f64() < cfg.repeat_share {
            emit(r);
            truth.lines += 1;
            truth.repeats += 1;
        }
    };
    // Tune reports first: one per device at the start.
    for d in &devs {
        let r = tune_report(cfg, d, start + d.offset_ms / 10, &mut rng);
        emit_one(&r, &mut rng, &mut truth);
    }
    let mut slot = start;
    while slot < end {
        for (i, d) in devs.iter().enumerate() {
            let at = slot + d.offset_ms;
            if at >= end {
                continue;
            }
            let hub_down = hub.is_some_and(|(a, b)| at >= a && at < b);
            let site_down = outage.is_some_and(|(s, a, b)| {
                s == d.site_index && !d.network.starts_with("cell") && at >= a && at < b
            });
            let c = CheckCtx {
                dev: d,
                at_ms: at,
                hub_down,
                site_down,
            };
            let mut endpoints = Vec::new();
            for ep in &profile.endpoints {
                endpoints.push(endpoint_report(
                    &ep.name,
                    ep.port,
                    ep.protocol,
                    ep.transport,
                    &c,
                    &mut rng,
                ));
            }
            // Canary disconnects since the previous report.
            let mut recent = Vec::new();
            let from = last_report[i];
            let mut event = |t: i64, cause: DisconnectCause, idle: f64, detail: &str| {
                recent.push(DisconnectEvent {
                    id: format!("synth-{i}-{t}"),
                    longest_idle_survived_s: None,
                    reason_code: None,
                    at: rfc(t),
                    at_unix_ms: t as u64,
                    session_lived_s: 600.0,
                    idle_before_s: idle,
                    cause,
                    detail: detail.into(),
                    reconnect_s: Some(1.2),
                    failed_attempts: 0,
                    last_attempt_class: None,
                });
            };
            while next_renewal[i] < at {
                if next_renewal[i] >= from {
                    event(
                        next_renewal[i],
                        DisconnectCause::TokenRenewal,
                        3.0,
                        "SAS token renewal at 80 % of its 1 h lifetime",
                    );
                }
                next_renewal[i] += 48 * 60_000;
            }
            if let (true, Some(t)) = (d.nat, cfg.nat_idle_timeout) {
                // Keep-alive 300 s > the NAT's idle timeout: every session dies after
                // the first idle period, detected when the PINGRESP does not come.
                let period = 300_000 + 30_000 + 1_200;
                let mut t0 = from + (d.offset_ms % period);
                while t0 < at {
                    event(
                        t0,
                        DisconnectCause::NoPingresp,
                        300.0 + 30.0 + (t.as_secs_f64() * 0.0),
                        "no PINGRESP within 30 s",
                    );
                    t0 += period;
                }
            }
            if let Some((a, b)) = hub {
                let t = a + (d.offset_ms % 120_000);
                if t >= from && t < at && t < b {
                    event(
                        t,
                        DisconnectCause::EofWithoutDisconnect,
                        12.0,
                        "connection closed without MQTT DISCONNECT",
                    );
                }
            }
            if let Some((s, a, _)) = outage {
                let t = a + (d.offset_ms % 60_000);
                if s == d.site_index && !d.network.starts_with("cell") && t >= from && t < at {
                    event(
                        t,
                        DisconnectCause::NoPingresp,
                        270.0,
                        "no PINGRESP within 30 s",
                    );
                }
            }
            if rng.f64() < 0.01 {
                let t = from + ((at - from) as f64 * rng.f64()) as i64;
                event(
                    t,
                    DisconnectCause::TcpReset,
                    40.0,
                    "connection reset by peer",
                );
            }
            recent.sort_by_key(|e| e.at_unix_ms);
            for e in &recent {
                *totals[i].entry(e.cause.as_str().to_string()).or_default() += 1;
            }
            sessions[i] += recent.len() as u64;
            last_report[i] = at;
            if hub_down
                && endpoints.iter().any(|e| {
                    e.verdict != Verdict::Ok
                        && e.protocol == Protocol::Mqtt
                        && e.phases
                            .iter()
                            .any(|p| p.class == Some(FailureClass::MqttServerUnavailable))
                })
            {
                truth.incident_check_failures.insert(d.id.clone());
            }
            let mut r = base_report(d, "check", at, 900.0 + rng.f64() * 400.0, &mut rng);
            let ctx = crate::diagnose::Context {
                profile: &profile,
                auth: "sas-key",
                sas_token: None,
                dns_server: None,
                proxy: None,
            };
            r.findings = crate::diagnose::findings(&endpoints, &ctx);
            r.verdict = crate::diagnose::verdict(&endpoints, &r.findings);
            r.endpoints = endpoints;
            r.canary = Some(CanaryReport {
                endpoint: "mqtt-tls".into(),
                keepalive_s: if d.nat { 300 } else { 240 },
                connected: !hub_down,
                connected_since: Some(rfc(at - 60_000)),
                sessions_total: sessions[i],
                disconnects_total: totals[i].clone(),
                recent,
                diagnosis: Diagnosis {
                    kind: if d.nat {
                        DiagnosisKind::IdleTimeout
                    } else {
                        DiagnosisKind::TokenRenewal
                    },
                    iothub_cause: Some(if d.nat { 2 } else { 1 }),
                    summary: if d.nat {
                        "disconnects after ~330 s idle: a NAT or firewall drops idle flows".into()
                    } else {
                        "disconnects every ~48 min: SAS token renewal".into()
                    },
                    evidence: vec![],
                },
                connect_failures: if hub_down { 1 } else { 0 },
                connect_error: hub_down.then(|| {
                    "mqtt.server_unavailable: CONNACK refused the connection: server unavailable (code 3)"
                        .to_string()
                }),
            });
            emit_one(&r, &mut rng, &mut truth);
        }
        slot += interval;
    }
    truth
}

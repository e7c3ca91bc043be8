//! The Device Provisioning Service path: the side-effect-free check of DPS's
//! endpoints (the plain check with the DPS identity), then, on request, the MQTT
//! registration (`check --register`, which changes DPS state) and a full check of the
//! hub DPS assigned, with the same key or certificate, chained into the same report.
//!
//! The registration speaks the documented DPS MQTT topics: subscribe
//! `$dps/registrations/res/#`, publish `$dps/registrations/PUT/iotdps-register/?$rid=N`
//! with `{"registrationId": ...}`, then, while DPS answers 202 (`assigning`), poll
//! `$dps/registrations/GET/iotdps-get-operationstatus/?$rid=N&operationId=...` after
//! each `retry-after`, until `assigned`, `failed` or `disabled`, an error status, or
//! the run's deadline. The replies arrive on `$dps/registrations/res/{status}/?$rid=N[&retry-after=S]`.
//! Packets are encoded and decoded with rumqttc's MQTT 3.1.1 codec.

use std::time::{Duration, SystemTime};

use bytes::BytesMut;
use rumqttc::mqttbytes::v4::{Packet, PubAck, Publish, Subscribe};
use rumqttc::mqttbytes::QoS;
use serde::Deserialize;
use tokio::time::Instant;

use crate::auth::Credentials;
use crate::check::{self, CheckPlan};
use crate::model::{
    explain, EndpointReport, FailureClass, Finding, ProvisioningReport, RegistrationStatus, Report,
    Severity, Verdict,
};
use crate::probe::dns::{self, DnsOptions};
use crate::probe::mqtt::{read_packet_v4, send_by, Expect};
use crate::probe::stream::Link;
use crate::profile::{Endpoint, Profile};

/// The response topic filter DPS replies on.
pub const RESPONSE_FILTER: &str = "$dps/registrations/res/#";
/// The wait between polls when DPS gives no retry-after (the SDKs' default is 2-3 s).
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(3);
/// Most packets read in one registration (a broker flooding the session cannot loop it).
const MAX_PACKETS: usize = 1_000;
/// Most characters of DPS's own messages quoted in a report.
const MAX_QUOTE: usize = 300;

/// Why the assigned hub's target could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum HubTargetError {
    /// The hub profile could not be loaded.
    #[error("--hub-profile: {0}")]
    Profile(#[from] crate::profile::ProfileError),
    /// A malformed `--hub-port`.
    #[error("--hub-port {0:?}: expected ENDPOINT=PORT with PORT in 1-65535, e.g. mqtt-tls=18883")]
    BadPort(String),
    /// An endpoint the hub profile does not have.
    #[error("{option}: no endpoint {name:?} in profile {profile} (it has: {known})")]
    UnknownEndpoint {
        /// The option.
        option: &'static str,
        /// The name.
        name: String,
        /// The profile.
        profile: String,
        /// Its endpoints.
        known: String,
    },
    /// A malformed `--assigned-hub`.
    #[error("--assigned-hub {0:?} is not a valid host name")]
    BadHost(String),
    /// `--register` or `--assigned-hub` on a profile that is not a provisioning service.
    #[error(
        "--register and --assigned-hub are for a DPS check: give --id-scope (profile azure-dps)"
    )]
    NotDps,
}

/// How the assigned hub is checked: its profile and endpoints.
#[derive(Debug, Clone)]
pub struct HubTarget {
    /// The hub's profile (default `azure-iot-hub`).
    pub profile: Profile,
    /// Its endpoints to check, ports overridden.
    pub endpoints: Vec<Endpoint>,
}

impl HubTarget {
    /// The hub profile `spec` (default `azure-iot-hub`) with `--hub-port` overrides
    /// and the `--hub-endpoint` selection.
    pub fn new(
        spec: Option<&str>,
        endpoints: &[String],
        ports: &[String],
    ) -> Result<HubTarget, HubTargetError> {
        let mut profile = Profile::load(spec.unwrap_or("azure-iot-hub"))?;
        let known = |p: &Profile| {
            p.endpoints
                .iter()
                .map(|e| e.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        for spec in ports {
            let (name, port) = spec
                .split_once('=')
                .ok_or_else(|| HubTargetError::BadPort(spec.clone()))?;
            let port: u16 = port
                .trim()
                .parse()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| HubTargetError::BadPort(spec.clone()))?;
            let list = known(&profile);
            let pname = profile.name.clone();
            let ep = profile
                .endpoints
                .iter_mut()
                .find(|e| e.name == name.trim())
                .ok_or_else(|| HubTargetError::UnknownEndpoint {
                    option: "--hub-port",
                    name: name.trim().to_string(),
                    profile: pname,
                    known: list,
                })?;
            ep.port = port;
        }
        let chosen = if endpoints.is_empty() {
            profile.endpoints.clone()
        } else {
            let mut out: Vec<Endpoint> = Vec::new();
            for name in endpoints {
                let ep = profile.endpoint(name.trim()).ok_or_else(|| {
                    HubTargetError::UnknownEndpoint {
                        option: "--hub-endpoint",
                        name: name.trim().to_string(),
                        profile: profile.name.clone(),
                        known: known(&profile),
                    }
                })?;
                if !out.iter().any(|e| e.name == ep.name) {
                    out.push(ep.clone());
                }
            }
            out
        };
        Ok(HubTarget {
            profile,
            endpoints: chosen,
        })
    }
}

/// What a DPS check does beyond the plain check.
#[derive(Debug, Clone)]
pub struct ProvisionOptions {
    /// Register with DPS (changes DPS state) and check the hub it assigns.
    pub register: bool,
    /// Check this hub (the one the device was last assigned) when DPS assigns none.
    pub assigned_hub: Option<String>,
    /// How the hub is checked.
    pub hub: HubTarget,
}

impl ProvisionOptions {
    /// Checks the options against the plan: they need a DPS identity, and a
    /// `--assigned-hub` must be a host name.
    pub fn validate(&self, plan: &CheckPlan) -> Result<(), HubTargetError> {
        if (self.register || self.assigned_hub.is_some())
            && !matches!(plan.credentials, Credentials::Dps { .. })
        {
            return Err(HubTargetError::NotDps);
        }
        if let Some(h) = &self.assigned_hub {
            if !valid_host(h) {
                return Err(HubTargetError::BadHost(h.clone()));
            }
        }
        Ok(())
    }
}

/// A host name as DPS hands them out: 1-253 characters of labels of letters,
/// digits, `-` and `_`.
fn valid_host(h: &str) -> bool {
    let h = h.trim_end_matches('.');
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
}

/// Runs the DPS check, then (with `register`) the registration and (when a hub is
/// known) the hub check; one report, one verdict.
pub async fn run(plan: &CheckPlan, opts: &ProvisionOptions) -> Report {
    let clock = Instant::now();
    let deadline_at = clock
        .checked_add(plan.deadline)
        .unwrap_or(clock + Duration::from_secs(86_400));
    let mut report = check::run(plan).await;
    let Credentials::Dps {
        id_scope,
        registration_id,
        group,
        ..
    } = &plan.credentials
    else {
        return report;
    };
    if !opts.register && opts.assigned_hub.is_none() {
        return report;
    }
    let mut prov = ProvisioningReport {
        id_scope: id_scope.clone(),
        registration_id: registration_id.clone(),
        enrollment_group: *group,
        endpoint: None,
        status: RegistrationStatus::NotAttempted,
        class: None,
        message: None,
        http_status: None,
        error_code: None,
        operation_id: None,
        assigned_hub: None,
        device_id: None,
        substatus: None,
        retry_after_s: None,
        polls: 0,
        duration_ms: None,
        hub: None,
    };
    if opts.register {
        register(plan, &report.endpoints, deadline_at, &mut prov).await;
    }
    let hub_host = match (&prov.assigned_hub, &opts.assigned_hub) {
        (Some(h), _) if prov.status == RegistrationStatus::Assigned => Some(h.clone()),
        (_, Some(h)) => Some(h.trim_end_matches('.').to_ascii_lowercase()),
        _ => None,
    };
    if let Some(host) = hub_host {
        let device_id = prov
            .device_id
            .clone()
            .filter(|_| prov.status == RegistrationStatus::Assigned)
            .unwrap_or_else(|| registration_id.clone());
        let left = deadline_at.saturating_duration_since(Instant::now());
        let hub_plan = hub_plan(plan, &opts.hub, host, device_id, left);
        prov.hub = Some(Box::new(check::run(&hub_plan).await));
    }
    let findings = findings(report.verdict, &prov);
    report.findings.extend(findings);
    report.verdict = chained_verdict(&report, &prov);
    report.finished_at = crate::report::rfc3339(SystemTime::now());
    report.duration_ms = crate::model::ms(clock.elapsed());
    report.provisioning = Some(prov);
    report
}

/// The hub check's plan: the DPS plan's network settings and trust, the hub's
/// profile and endpoints, and the same key (or certificate) as a hub identity.
fn hub_plan(
    plan: &CheckPlan,
    hub: &HubTarget,
    host: String,
    device_id: String,
    deadline: Duration,
) -> CheckPlan {
    let mut p = plan.clone();
    p.profile = hub.profile.clone();
    p.endpoints = hub.endpoints.clone();
    p.keep_alive = hub.profile.mqtt.keepalive;
    p.host = host.clone();
    p.hub_host = host;
    p.deadline = deadline;
    p.identity_share = None;
    p.credentials = match &plan.credentials {
        Credentials::Dps {
            key: Some(key),
            ttl,
            expiry,
            ..
        } => Credentials::DeviceKey {
            device_id,
            module_id: None,
            key: key.clone(),
            ttl: *ttl,
            expiry: *expiry,
        },
        _ => Credentials::X509 { device_id },
    };
    p
}

/// The verdict of both targets: the worst of the DPS check, the registration, the
/// hub check and the findings.
fn chained_verdict(report: &Report, prov: &ProvisioningReport) -> Verdict {
    let registration = match prov.status {
        RegistrationStatus::Assigned | RegistrationStatus::NotAttempted => Verdict::Ok,
        _ => Verdict::Critical,
    };
    let hub = prov.hub.as_ref().map_or(Verdict::Ok, |h| h.verdict);
    let from_findings = report
        .findings
        .iter()
        .map(|f| match f.severity {
            Severity::Critical => Verdict::Critical,
            Severity::Warning => Verdict::Warning,
            Severity::Info => Verdict::Ok,
        })
        .max()
        .unwrap_or(Verdict::Ok);
    report.verdict.max(registration).max(hub).max(from_findings)
}

/// The findings of the registration and of the two targets together.
pub fn findings(dps_verdict: Verdict, prov: &ProvisioningReport) -> Vec<Finding> {
    let mut out = Vec::new();
    let ep: Vec<String> = prov.endpoint.iter().cloned().collect();
    if let Some(class) = prov.class {
        let e = explain(class);
        let hint = match (class, prov.retry_after_s) {
            (FailureClass::DpsThrottled, Some(s)) => format!(
                "DPS asks to retry after {s} s: do not register again before then. {}",
                e.hint
            ),
            _ => e.hint.to_string(),
        };
        out.push(Finding {
            code: class.id().to_string(),
            severity: Severity::Critical,
            class: Some(class),
            endpoints: ep.clone(),
            summary: prov
                .message
                .clone()
                .unwrap_or_else(|| e.meaning.to_string()),
            hint,
            iothub_error: e.iothub_error.map(str::to_string),
        });
    }
    if let Some(hub) = &prov.hub {
        let hub_ok = hub.verdict == Verdict::Ok || hub.verdict == Verdict::Warning;
        // DPS "works" when its endpoints do and the registration, if any, went through.
        let dps_ok = (dps_verdict == Verdict::Ok || dps_verdict == Verdict::Warning)
            && matches!(
                prov.status,
                RegistrationStatus::Assigned | RegistrationStatus::NotAttempted
            );
        let assigned = prov.status == RegistrationStatus::Assigned;
        if dps_ok && !hub_ok {
            out.push(Finding {
                code: "dps_ok_hub_unreachable".into(),
                severity: Severity::Critical,
                class: None,
                endpoints: ep.clone(),
                summary: format!(
                    "DPS works{}, but the device cannot connect to the hub {}: provisioning succeeds and the device still stays offline",
                    if assigned { " and assigned the device" } else { "" },
                    hub.target.host
                ),
                hint: "see the hub check in `provisioning.hub`: the path to the hub (its own host name and ports) is blocked or its identity is refused, while DPS's is fine".into(),
                iothub_error: None,
            });
        } else if !dps_ok && hub_ok {
            out.push(Finding {
                code: "hub_ok_dps_unreachable".into(),
                severity: Severity::Warning,
                class: None,
                endpoints: Vec::new(),
                summary: format!(
                    "the hub {} works but DPS does not: the device runs as long as it keeps its assignment, and stays offline the next time it provisions (a reset, a reprovisioning policy)",
                    hub.target.host
                ),
                hint: "fix the path to DPS (its host name, global.azure-devices-provisioning.net by default, and ports) before the device needs to provision again".into(),
                iothub_error: None,
            });
        } else if assigned && hub_ok {
            out.push(Finding {
                code: "dps_assigned".into(),
                severity: Severity::Info,
                class: None,
                endpoints: ep,
                summary: format!(
                    "DPS assigned the device to {} as {}, and the device connects there",
                    hub.target.host,
                    hub.target.device_id.as_deref().unwrap_or("?")
                ),
                hint: "nothing to do".into(),
                iothub_error: None,
            });
        }
    }
    out
}

/// The MQTT endpoint the registration uses: the first MQTT endpoint of the DPS
/// check whose every phase passed.
fn registration_endpoint<'a>(
    plan: &'a CheckPlan,
    checked: &[EndpointReport],
) -> Option<&'a Endpoint> {
    checked
        .iter()
        .filter(|e| e.protocol == crate::model::Protocol::Mqtt)
        .filter(|e| !e.phases.is_empty() && e.phases.iter().all(|p| p.is_ok()))
        .find_map(|e| plan.endpoints.iter().find(|p| p.name == e.name))
}

/// Registers with DPS on an endpoint that passed the check, filling `prov`.
async fn register(
    plan: &CheckPlan,
    checked: &[EndpointReport],
    deadline_at: Instant,
    prov: &mut ProvisioningReport,
) {
    let started = Instant::now();
    let Some(ep) = registration_endpoint(plan, checked) else {
        prov.status = RegistrationStatus::Error;
        prov.message = Some(
            "not attempted: no MQTT endpoint of DPS accepted the device's CONNECT (see the endpoints above)"
                .into(),
        );
        return;
    };
    prov.endpoint = Some(ep.name.clone());
    let outcome = tokio::time::timeout_at(deadline_at, async {
        let addresses = dns::resolve(
            &plan.host,
            &DnsOptions {
                server: plan.dns_server,
                timeout: plan.timeout,
            },
        )
        .await
        .addresses;
        match check::open_session(plan, ep, &addresses, plan.keep_alive).await {
            Ok(s) => Ok(s.into_parts()),
            Err(f) => Err((f.class, format!("{}: {}", f.phase.as_str(), f.message))),
        }
    })
    .await;
    let (mut link, mut buf) = match outcome {
        Ok(Ok(parts)) => parts,
        Ok(Err((class, message))) => {
            prov.status = RegistrationStatus::Error;
            prov.class = Some(class);
            prov.message = Some(format!(
                "no MQTT session to DPS for the registration: {message}"
            ));
            return;
        }
        Err(_) => {
            prov.status = RegistrationStatus::Error;
            prov.class = Some(FailureClass::DpsTimeout);
            prov.message = Some(
                "the run's deadline passed while connecting to DPS for the registration".into(),
            );
            return;
        }
    };
    let registration_id = prov.registration_id.clone();
    exchange(&mut link, &mut buf, &registration_id, deadline_at, prov).await;
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = link.send(&[0xE0, 0x00]).await;
        link.close().await;
    })
    .await;
    prov.duration_ms = Some(crate::model::ms(started.elapsed()));
}

/// What the registration exchange is waiting for.
enum Wait {
    /// The SUBACK of the response subscription.
    SubAck,
    /// The reply to request `rid`.
    Reply(u32),
}

/// The registration exchange on a connected session, bounded by `deadline_at` and
/// [`MAX_PACKETS`].
async fn exchange(
    link: &mut Link,
    buf: &mut BytesMut,
    registration_id: &str,
    deadline_at: Instant,
    prov: &mut ProvisioningReport,
) {
    let fail = |prov: &mut ProvisioningReport, status, class, message: String| {
        prov.status = status;
        prov.class = Some(class);
        prov.message = Some(message);
    };
    let mut sub = Subscribe::new(RESPONSE_FILTER, QoS::AtLeastOnce);
    sub.pkid = 1;
    let mut out = BytesMut::new();
    if sub.write(&mut out).is_err() {
        return fail(
            prov,
            RegistrationStatus::Error,
            FailureClass::DpsProtocolError,
            "cannot encode SUBSCRIBE".into(),
        );
    }
    if let Err((class, m)) = send_by(link, &out, deadline_at, "sending SUBSCRIBE").await {
        return fail(prov, RegistrationStatus::Error, class, m);
    }
    let mut wait = Wait::SubAck;
    let mut rid: u32 = 0;
    let mut pkid: u16 = 1;
    let mut assigning = false;
    for _ in 0..MAX_PACKETS {
        let packet = match read_packet_v4(link, buf, deadline_at, Expect::PingResp).await {
            Ok(p) => p,
            Err(f) => {
                let (class, message) = f.classify("DPS's reply", Duration::ZERO);
                if class == FailureClass::MqttTimeout {
                    let message = if assigning {
                        format!(
                            "DPS still said 'assigning' after {} operation-status polls when the run's deadline came",
                            prov.polls
                        )
                    } else {
                        "no reply from DPS to the registration request by the run's deadline".into()
                    };
                    let status = if assigning {
                        RegistrationStatus::Assigning
                    } else {
                        RegistrationStatus::Error
                    };
                    return fail(prov, status, FailureClass::DpsTimeout, message);
                }
                return fail(
                    prov,
                    RegistrationStatus::Error,
                    class,
                    format!("waiting for DPS's reply: {message}"),
                );
            }
        };
        let publish = match (packet, &wait) {
            (Packet::SubAck(ack), Wait::SubAck) => {
                if ack
                    .return_codes
                    .iter()
                    .any(|c| matches!(c, rumqttc::mqttbytes::v4::SubscribeReasonCode::Failure))
                {
                    return fail(
                        prov,
                        RegistrationStatus::Error,
                        FailureClass::DpsProtocolError,
                        format!("DPS refused the subscription to {RESPONSE_FILTER}"),
                    );
                }
                rid += 1;
                pkid = pkid.wrapping_add(1).max(1);
                let body = serde_json::json!({ "registrationId": registration_id }).to_string();
                let topic = format!("$dps/registrations/PUT/iotdps-register/?$rid={rid}");
                if let Err((class, m)) =
                    send_publish(link, &topic, body.into_bytes(), pkid, deadline_at).await
                {
                    return fail(prov, RegistrationStatus::Error, class, m);
                }
                wait = Wait::Reply(rid);
                continue;
            }
            (Packet::Publish(p), _) => p,
            _ => continue,
        };
        if publish.qos != QoS::AtMostOnce {
            let mut ack = BytesMut::new();
            if PubAck::new(publish.pkid).write(&mut ack).is_ok() {
                let _ = send_by(link, &ack, deadline_at, "sending PUBACK").await;
            }
        }
        let Wait::Reply(want) = wait else { continue };
        let Some(topic) = parse_response_topic(&publish.topic) else {
            continue;
        };
        if topic.rid.as_deref() != Some(want.to_string().as_str()) {
            continue;
        }
        prov.http_status = Some(topic.status);
        if topic.retry_after.is_some() {
            prov.retry_after_s = topic.retry_after;
        }
        match interpret(topic.status, &publish.payload) {
            Reply::Assigning { operation_id } => {
                assigning = true;
                if operation_id.is_some() {
                    prov.operation_id = operation_id;
                }
                let Some(op) = prov.operation_id.clone() else {
                    return fail(
                        prov,
                        RegistrationStatus::Error,
                        FailureClass::DpsProtocolError,
                        format!(
                            "DPS answered {} 'assigning' without an operationId",
                            topic.status
                        ),
                    );
                };
                let wait_for = topic
                    .retry_after
                    .map(Duration::from_secs)
                    .unwrap_or(DEFAULT_RETRY_AFTER);
                let next = Instant::now() + wait_for;
                if next >= deadline_at {
                    let message = format!(
                        "DPS still said 'assigning' after {} operation-status polls; the next poll (retry-after {} s) would come after the run's deadline",
                        prov.polls,
                        wait_for.as_secs()
                    );
                    return fail(
                        prov,
                        RegistrationStatus::Assigning,
                        FailureClass::DpsTimeout,
                        message,
                    );
                }
                tokio::time::sleep_until(next).await;
                rid += 1;
                pkid = pkid.wrapping_add(1).max(1);
                prov.polls += 1;
                let topic = format!(
                    "$dps/registrations/GET/iotdps-get-operationstatus/?$rid={rid}&operationId={}",
                    crate::auth::dps::quote(&op)
                );
                if let Err((class, m)) =
                    send_publish(link, &topic, Vec::new(), pkid, deadline_at).await
                {
                    return fail(prov, RegistrationStatus::Error, class, m);
                }
                wait = Wait::Reply(rid);
            }
            Reply::Done(state) => {
                prov.operation_id = state.operation_id.or(prov.operation_id.take());
                prov.device_id = state.device_id;
                prov.substatus = state.substatus;
                match state.status.as_str() {
                    "assigned" => match state.assigned_hub {
                        Some(hub) if valid_host(&hub) => {
                            prov.status = RegistrationStatus::Assigned;
                            prov.assigned_hub =
                                Some(hub.trim_end_matches('.').to_ascii_lowercase());
                            if prov.device_id.is_none() {
                                prov.device_id = Some(registration_id.to_string());
                            }
                        }
                        Some(hub) => {
                            return fail(
                                prov,
                                RegistrationStatus::Error,
                                FailureClass::DpsProtocolError,
                                format!(
                                    "DPS assigned a hub whose name is not a host name: {:?}",
                                    quote_bounded(&hub)
                                ),
                            );
                        }
                        None => {
                            return fail(
                                prov,
                                RegistrationStatus::Error,
                                FailureClass::DpsProtocolError,
                                "DPS said 'assigned' without an assignedHub".into(),
                            );
                        }
                    },
                    "failed" => {
                        prov.error_code = state.error_code;
                        let said = state
                            .error_message
                            .map(|m| format!(": {}", quote_bounded(&m)))
                            .unwrap_or_default();
                        return fail(
                            prov,
                            RegistrationStatus::Failed,
                            FailureClass::DpsAssignmentFailed,
                            format!(
                                "DPS could not assign the device (status failed{}){said}",
                                state
                                    .error_code
                                    .map(|c| format!(", error {c}"))
                                    .unwrap_or_default()
                            ),
                        );
                    }
                    "disabled" => {
                        return fail(
                            prov,
                            RegistrationStatus::Disabled,
                            FailureClass::DpsDisabled,
                            "DPS says the device's enrollment is disabled".into(),
                        );
                    }
                    other => {
                        return fail(
                            prov,
                            RegistrationStatus::Error,
                            FailureClass::DpsProtocolError,
                            format!(
                                "DPS finished with an unknown status {:?}",
                                quote_bounded(other)
                            ),
                        );
                    }
                }
                return;
            }
            Reply::Error {
                class,
                error_code,
                message,
            } => {
                prov.error_code = error_code;
                let said = message
                    .map(|m| format!(": {}", quote_bounded(&m)))
                    .unwrap_or_default();
                let retry = match (class, prov.retry_after_s) {
                    (FailureClass::DpsThrottled, Some(s)) => format!(" (retry after {s} s)"),
                    _ => String::new(),
                };
                let status = if class == FailureClass::DpsProtocolError {
                    RegistrationStatus::Error
                } else {
                    RegistrationStatus::Refused
                };
                return fail(
                    prov,
                    status,
                    class,
                    format!(
                        "DPS answered {}{}{retry}{said}",
                        topic.status,
                        error_code
                            .map(|c| format!(" (error {c})"))
                            .unwrap_or_default()
                    ),
                );
            }
        }
    }
    fail(
        prov,
        RegistrationStatus::Error,
        FailureClass::DpsProtocolError,
        format!("no registration result within {MAX_PACKETS} packets"),
    );
}

async fn send_publish(
    link: &mut Link,
    topic: &str,
    payload: Vec<u8>,
    pkid: u16,
    deadline_at: Instant,
) -> Result<(), (FailureClass, String)> {
    let mut p = Publish::new(topic, QoS::AtLeastOnce, payload);
    p.pkid = pkid;
    let mut out = BytesMut::new();
    p.write(&mut out).map_err(|e| {
        (
            FailureClass::DpsProtocolError,
            format!("cannot encode PUBLISH: {e}"),
        )
    })?;
    send_by(link, &out, deadline_at, "publishing to DPS").await
}

/// A DPS response topic: `$dps/registrations/res/{status}/?$rid=..&retry-after=..`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseTopic {
    /// The HTTP-like status.
    pub status: u16,
    /// The request id it answers.
    pub rid: Option<String>,
    /// Seconds to wait before the next request.
    pub retry_after: Option<u64>,
}

/// Parses a DPS response topic; `None` for any other topic.
pub fn parse_response_topic(topic: &str) -> Option<ResponseTopic> {
    let rest = topic.strip_prefix("$dps/registrations/res/")?;
    let (status, query) = rest.split_once('/').unwrap_or((rest, ""));
    let status: u16 = status.parse().ok()?;
    let query = query.strip_prefix('?').unwrap_or(query);
    let mut rid = None;
    let mut retry_after = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "$rid" => rid = Some(v.to_string()),
            "retry-after" => retry_after = v.parse().ok(),
            _ => {}
        }
    }
    Some(ResponseTopic {
        status,
        rid,
        retry_after,
    })
}

/// The outcome a registration state says.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Finished {
    /// `assigned`, `failed`, `disabled` ...
    pub status: String,
    /// The operation id.
    pub operation_id: Option<String>,
    /// The hub assigned.
    pub assigned_hub: Option<String>,
    /// The device id on it.
    pub device_id: Option<String>,
    /// DPS's substatus.
    pub substatus: Option<String>,
    /// DPS's error code (status failed).
    pub error_code: Option<u64>,
    /// DPS's error message (status failed).
    pub error_message: Option<String>,
}

/// What a DPS reply says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Still assigning: poll again after the retry-after.
    Assigning {
        /// The operation to poll.
        operation_id: Option<String>,
    },
    /// A final registration state.
    Done(Finished),
    /// An error status, classified.
    Error {
        /// Its class.
        class: FailureClass,
        /// DPS's error code.
        error_code: Option<u64>,
        /// DPS's message.
        message: Option<String>,
    },
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Body {
    operation_id: Option<String>,
    status: Option<String>,
    registration_state: Option<State>,
    error_code: Option<u64>,
    message: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct State {
    assigned_hub: Option<String>,
    device_id: Option<String>,
    status: Option<String>,
    substatus: Option<String>,
    error_code: Option<u64>,
    error_message: Option<String>,
}

/// The class of a DPS error status.
pub fn status_class(status: u16) -> FailureClass {
    match status {
        400 => FailureClass::DpsBadRequest,
        401 | 403 => FailureClass::DpsUnauthorized,
        404 => FailureClass::DpsEnrollmentNotFound,
        412 => FailureClass::DpsPreconditionFailed,
        429 => FailureClass::DpsThrottled,
        500..=599 => FailureClass::DpsServerError,
        _ => FailureClass::DpsProtocolError,
    }
}

/// Interprets a reply of `status` with its JSON `payload`.
pub fn interpret(status: u16, payload: &[u8]) -> Reply {
    let body: Option<Body> = serde_json::from_slice(payload).ok();
    match status {
        200 | 202 => {
            let Some(body) = body else {
                return Reply::Error {
                    class: FailureClass::DpsProtocolError,
                    error_code: None,
                    message: Some(format!("the {status} reply is not the documented JSON")),
                };
            };
            let state = body.registration_state.unwrap_or_default();
            let status_word = state
                .status
                .clone()
                .or(body.status.clone())
                .unwrap_or_default();
            if status == 202 || status_word == "assigning" || status_word == "unassigned" {
                return Reply::Assigning {
                    operation_id: body.operation_id,
                };
            }
            Reply::Done(Finished {
                status: status_word,
                operation_id: body.operation_id,
                assigned_hub: state.assigned_hub,
                device_id: state.device_id,
                substatus: state.substatus,
                error_code: state.error_code,
                error_message: state.error_message,
            })
        }
        _ => {
            let body = body.unwrap_or_default();
            Reply::Error {
                class: status_class(status),
                error_code: body.error_code,
                message: body.message,
            }
        }
    }
}

/// A text from DPS, bounded and without control characters, for a report.
fn quote_bounded(s: &str) -> String {
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i == MAX_QUOTE {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_topics() {
        assert_eq!(
            parse_response_topic("$dps/registrations/res/202/?$rid=3&retry-after=2"),
            Some(ResponseTopic {
                status: 202,
                rid: Some("3".into()),
                retry_after: Some(2)
            })
        );
        assert_eq!(
            parse_response_topic("$dps/registrations/res/200/?$rid=1").map(|t| t.status),
            Some(200)
        );
        assert_eq!(
            parse_response_topic("$dps/registrations/res/abc/?$rid=1"),
            None
        );
        assert_eq!(parse_response_topic("devices/x/messages"), None);
    }

    #[test]
    fn replies_are_classified() {
        let assigning = br#"{"operationId":"4.abc","status":"assigning"}"#;
        assert_eq!(
            interpret(202, assigning),
            Reply::Assigning {
                operation_id: Some("4.abc".into())
            }
        );
        let assigned = br#"{"operationId":"4.abc","status":"assigned","registrationState":{"registrationId":"dev1","assignedHub":"hub.azure-devices.net","deviceId":"dev1","status":"assigned","substatus":"initialAssignment"}}"#;
        let Reply::Done(f) = interpret(200, assigned) else {
            panic!()
        };
        assert_eq!(f.status, "assigned");
        assert_eq!(f.assigned_hub.as_deref(), Some("hub.azure-devices.net"));
        assert_eq!(f.substatus.as_deref(), Some("initialAssignment"));
        for (status, class) in [
            (400, FailureClass::DpsBadRequest),
            (401, FailureClass::DpsUnauthorized),
            (404, FailureClass::DpsEnrollmentNotFound),
            (412, FailureClass::DpsPreconditionFailed),
            (429, FailureClass::DpsThrottled),
            (503, FailureClass::DpsServerError),
            (302, FailureClass::DpsProtocolError),
        ] {
            let r = interpret(status, br#"{"errorCode":429001,"message":"x"}"#);
            assert!(
                matches!(r, Reply::Error { class: c, .. } if c == class),
                "{status}"
            );
        }
        assert!(matches!(
            interpret(200, b"not json"),
            Reply::Error {
                class: FailureClass::DpsProtocolError,
                ..
            }
        ));
    }

    #[test]
    fn findings_name_the_broken_target() {
        let hub = |v: Verdict| {
            let mut r: Report = serde_json::from_str(include_str!(
                "../../tests/fixtures/check-before-typed-model.json"
            ))
            .unwrap();
            r.verdict = v;
            Box::new(r)
        };
        let mut prov = ProvisioningReport {
            id_scope: "0ne1".into(),
            registration_id: "dev1".into(),
            enrollment_group: false,
            endpoint: Some("mqtt-tls".into()),
            status: RegistrationStatus::Assigned,
            class: None,
            message: None,
            http_status: Some(200),
            error_code: None,
            operation_id: None,
            assigned_hub: Some("hub".into()),
            device_id: Some("dev1".into()),
            substatus: None,
            retry_after_s: None,
            polls: 1,
            duration_ms: None,
            hub: Some(hub(Verdict::Critical)),
        };
        let codes = |f: Vec<Finding>| f.into_iter().map(|f| f.code).collect::<Vec<_>>();
        assert_eq!(
            codes(findings(Verdict::Ok, &prov)),
            ["dps_ok_hub_unreachable"]
        );
        prov.hub = Some(hub(Verdict::Ok));
        assert_eq!(codes(findings(Verdict::Ok, &prov)), ["dps_assigned"]);
        assert_eq!(
            codes(findings(Verdict::Critical, &prov)),
            ["hub_ok_dps_unreachable"]
        );
        // A refused registration is not "DPS works", whatever its endpoints did.
        prov.status = RegistrationStatus::Refused;
        prov.class = Some(FailureClass::DpsUnauthorized);
        assert_eq!(
            codes(findings(Verdict::Ok, &prov)),
            ["dps.unauthorized", "hub_ok_dps_unreachable"]
        );
        prov.class = None;
        prov.hub = None;
        prov.status = RegistrationStatus::Refused;
        prov.class = Some(FailureClass::DpsThrottled);
        prov.retry_after_s = Some(7);
        let f = findings(Verdict::Ok, &prov);
        assert_eq!(f[0].code, "dps.throttled");
        assert!(f[0].hint.contains("retry after 7 s"), "{}", f[0].hint);
    }
}

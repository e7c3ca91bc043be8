//! Failure classes and what they mean: each class maps to a plain hint and,
//! where it applies, to the IoT Hub error it explains. Findings across the
//! endpoints of one check (e.g. 8883 blocked but 443 open) are derived here too.

pub mod proxy;

use crate::model::class::E401003;

mod mqtt5;
use crate::model::{explain, Evidence, FailureClass, Finding, Severity};

/// What the findings need to know beyond the endpoint results.
pub struct Context<'a> {
    /// The hub profile (trust anchors it expects).
    pub profile: &'a crate::profile::Profile,
    /// How the probe authenticated (`none`, `sas-key`, ...).
    pub auth: &'a str,
    /// The SAS token's lifetime, when one was used.
    pub sas_token: Option<&'a crate::model::SasTokenInfo>,
    /// The DNS server given instead of the system's, if any.
    pub dns_server: Option<std::net::SocketAddr>,
    /// The proxy of the run, if one was set.
    pub proxy: Option<&'a crate::model::ProxyInfo>,
}

/// The hint of `class` as it applies to this profile and setup: the catalogue's
/// words, with what only some hubs have (a WebSocket endpoint, SAS tokens, an
/// explicit DNS server) added or replaced.
pub fn hint_for(class: FailureClass, ctx: &Context<'_>) -> String {
    use crate::model::{Protocol, Transport};
    let base = explain(class).hint;
    let ws = ctx.profile.endpoints.iter().find(|e| {
        e.protocol == Protocol::Mqtt && matches!(e.transport, Transport::Ws | Transport::Wss)
    });
    match class {
        FailureClass::TcpRefused
        | FailureClass::TcpTimeout
        | FailureClass::TcpUnreachable
        | FailureClass::TcpReset
            if ctx.proxy.is_some_and(|p| !p.bypassed) =>
        {
            format!(
                "the TCP connection to the proxy {} (from {}) failed, not one to the hub: check the proxy's address, port and that it runs, or the firewall between the device and the proxy",
                ctx.proxy.map_or("", |p| p.url.as_str()),
                ctx.proxy.map_or("", |p| p.source.as_str())
            )
        }
        FailureClass::TcpRefused | FailureClass::TcpTimeout => match ws {
            Some(ws) => format!(
                "{base}; if only the MQTT port is blocked, use MQTT over WebSocket on {}",
                ws.port
            ),
            None => base.to_string(),
        },
        FailureClass::DnsTimeout | FailureClass::DnsUnreachable => match ctx.dns_server {
            Some(server) => format!(
                "the DNS server given with --dns-server ({server}) does not answer: check its address and port ({}), that it runs, and that UDP/TCP to that port is allowed",
                server.port()
            ),
            None => base.to_string(),
        },
        FailureClass::MqttNotAuthorized | FailureClass::MqttBadCredentials
            if ctx.profile.provisioning =>
        {
            "DPS refused the registration's credential: check the id scope and registration id, the device's key (an enrollment group's key needs --enrollment-group: the device key is derived from it), the token's expiry and the device clock; for X.509, that the certificate chains to the enrollment's CA. A disabled or missing enrollment shows only with --register".into()
        }
        FailureClass::MqttBadCredentials if !ctx.profile.sas_tokens => {
            "check the user name and password (or the client certificate) the broker expects".into()
        }
        _ => base.to_string(),
    }
}

/// The IoT Hub error a class explains, on profiles of IoT Hub (SAS-token hubs) only.
fn iothub_error_for(class: FailureClass, ctx: &Context<'_>) -> Option<String> {
    // IoT Hub's error codes do not apply to DPS's MQTT endpoint, except its own.
    if ctx.profile.provisioning && !class.id().starts_with("dps.") {
        return None;
    }
    ctx.profile
        .sas_tokens
        .then(|| explain(class).iothub_error.map(str::to_string))
        .flatten()
}

/// A leaf certificate closer than this to expiry is a warning.
pub const LEAF_EXPIRY_WARNING_DAYS: f64 = 30.0;
/// A clock further off than this (seconds) is a warning.
pub const CLOCK_OFFSET_WARNING_S: f64 = 60.0;

/// Draws the findings from the endpoint results.
pub fn findings(endpoints: &[crate::model::EndpointReport], ctx: &Context<'_>) -> Vec<Finding> {
    use crate::model::Phase;
    use crate::model::{Protocol, Transport};

    let mut out = Vec::new();
    // No endpoint works: every failure is then critical.
    let all_failed = !endpoints.is_empty() && !endpoints.iter().any(works);

    // 1. One finding per failure class, naming every endpoint it hit.
    let mut by_class: std::collections::BTreeMap<FailureClass, Vec<&crate::model::EndpointReport>> =
        Default::default();
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
        let mut hint = hint_for(*class, ctx);
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
        if let Some(extra) = mtu_hint(*class, eps[0]) {
            hint.push_str(&extra);
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
            iothub_error: iothub_error_for(*class, ctx),
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
            .and_then(|p| p.evidence())
            .and_then(Evidence::tls)
        {
            if let Some(days) = tls.leaf_days_left {
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
            if let Some(anchor) = &tls.trust_anchor {
                let name = anchor.name.clone();
                let (legacy, expected) = (anchor.legacy, anchor.expected);
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
            .and_then(|p| p.evidence())
            .and_then(Evidence::http)
            .and_then(|h| h.clock_offset_s)
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
            .and_then(|p| p.evidence())
            .and_then(Evidence::tcp)
        {
            let failed: Vec<String> = tcp
                .attempts
                .iter()
                .filter(|a| a.status == "failed")
                .map(|a| {
                    format!(
                        "{} ({})",
                        a.address,
                        a.class.map(FailureClass::id).unwrap_or("?")
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
                .and_then(|p| p.evidence())
                .and_then(Evidence::mqtt)
                .map(|m| m.auth_tested)
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
            hint: if ctx.profile.sas_tokens {
                "set IOTHUB_DEVICE_CONNECTION_STRING (or --sas-token, --cert/--key) to test the device's own identity".into()
            } else {
                "give the device's credentials (--username with --password-file or HUBPROBE_MQTT_PASSWORD, or --cert/--key) to test its own identity".into()
            },
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
            let renew = renewal_period(lifetime);
            out.push(Finding {
                code: "sas_token_lifetime".into(),
                severity: Severity::Info,
                class: None,
                endpoints: vec![],
                summary: format!(
                    "SAS tokens live {}: an SDK that renews at 80 % reconnects over MQTT about every {renew}",
                    humantime::format_duration(std::time::Duration::from_secs(lifetime))
                ),
                hint: "each renewal is a disconnect that IoT Hub logs as 404104; periodic 404104 at that period is token renewal, not the network".into(),
                iothub_error: Some("404104 DeviceConnectionClosedRemotely (cause: SAS token renewal)".into()),
            });
        }
    }
    out.extend(proxy::findings(endpoints, ctx.proxy));
    // 5. MQTT 5: the limits the broker states in CONNACK, and its redirects.
    out.extend(mqtt5::findings(endpoints));
    out
}

/// How often an SDK that renews at 80 % of a token's `lifetime_s` reconnects, in a
/// unit that fits: seconds under 2 minutes (tenths under 10 s), minutes under 2
/// hours, else hours.
fn renewal_period(lifetime_s: u64) -> String {
    // Tenths of a second, in integers: no float rounding decides the unit.
    let tenths = lifetime_s.saturating_mul(8);
    if tenths < 100 {
        format!("{}.{} s", tenths / 10, tenths % 10)
    } else if tenths < 1_200 {
        format!("{} s", (tenths + 5) / 10)
    } else if tenths < 72_000 {
        format!("{} min", (tenths + 300) / 600)
    } else {
        let h10 = (tenths + 1_800) / 3_600;
        format!("{}.{} h", h10 / 10, h10 % 10)
    }
}

/// What the path-MTU probe adds to the hint of a TLS stall: the MTU that fits,
/// for a proven black hole; whether a smaller MSS was tried, for a timeout.
fn mtu_hint(class: FailureClass, e: &crate::model::EndpointReport) -> Option<String> {
    use crate::model::Phase;
    if !matches!(
        class,
        FailureClass::TlsMtuBlackHole | FailureClass::TlsTimeout
    ) {
        return None;
    }
    let mtu = e
        .phase(Phase::Tls)
        .and_then(|p| p.evidence())
        .and_then(Evidence::tls)
        .and_then(|t| t.mtu.as_ref());
    let Some(m) = mtu else {
        return Some(". No retry with a smaller MSS ran, so a path-MTU black hole is neither shown nor ruled out".into());
    };
    if m.black_hole {
        let lwm = m.largest_working_mss?;
        let overhead = if m.address.is_ipv6() { 60 } else { 40 };
        let dev = m.interface.as_deref().unwrap_or("<interface>");
        return Some(format!(
            ". Here the largest working MSS is {lwm}: an MTU of {} fits (e.g. `ip link set dev {dev} mtu {}`), or clamp the MSS to {lwm}",
            lwm + overhead,
            lwm + overhead
        ));
    }
    let clamped: Vec<String> = m
        .attempts
        .iter()
        .filter(|a| a.clamped)
        .filter_map(|a| a.mss.map(|v| v.to_string()))
        .collect();
    if clamped.is_empty() {
        Some(". No retry with a smaller MSS fit in the deadline, so a path-MTU black hole is neither shown nor ruled out".into())
    } else {
        Some(format!(
            ". Retries with MSS {} stalled too: not a path-MTU black hole",
            clamped.join(", ")
        ))
    }
}

/// An endpoint whose every phase passed.
fn works(e: &crate::model::EndpointReport) -> bool {
    !e.phases.is_empty() && e.phases.iter().all(|p| p.is_ok())
}

/// Classes that mean the hub refused the device's identity.
pub fn is_auth_failure(class: FailureClass) -> bool {
    matches!(
        class,
        FailureClass::MqttBadCredentials
            | FailureClass::MqttNotAuthorized
            | FailureClass::MqttIdentifierRejected
            | FailureClass::AmqpAuthFailed
            | FailureClass::AmqpNotAuthorized
    )
}

/// The overall verdict from the endpoints and findings.
pub fn verdict(
    endpoints: &[crate::model::EndpointReport],
    findings: &[Finding],
) -> crate::model::Verdict {
    use crate::model::Verdict;
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
            doc.contains(&crate::model::catalogue_markdown()),
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
        use crate::model::{EndpointReport, SasTokenInfo, Verdict};
        use crate::model::{NoEvidence, Phase, PhaseResult};
        use crate::model::{Protocol, Transport};
        use crate::profile::Profile;
        use serde_json::json;
        use std::time::Duration;

        /// Typed evidence of `phase` with the given fields set over the defaults
        /// (`{}`: no evidence).
        fn typed(phase: Phase, fields: serde_json::Value) -> Option<Evidence> {
            use crate::model::{HttpEvidence, MqttEvidence, TcpEvidence, TlsEvidence};
            if fields == json!({}) {
                return None;
            }
            let mut base = match phase {
                Phase::Tcp => serde_json::to_value(TcpEvidence::default()),
                Phase::Tls => serde_json::to_value(TlsEvidence::default()),
                Phase::Mqtt => serde_json::to_value(MqttEvidence::default()),
                Phase::Http => serde_json::to_value(HttpEvidence::default()),
                _ => Ok(json!({})),
            }
            .unwrap();
            for (k, v) in fields.as_object().unwrap() {
                base[k] = v.clone();
            }
            Some(Evidence::from_value(phase, base).unwrap())
        }

        fn ok(phase: Phase, ev: serde_json::Value) -> PhaseResult {
            PhaseResult::ok(phase, Duration::from_millis(1), typed(phase, ev))
        }

        fn failed(phase: Phase, class: FailureClass) -> PhaseResult {
            PhaseResult::failed(phase, Duration::from_millis(1), class, "detail", NoEvidence)
        }

        fn endpoint(
            name: &str,
            transport: Transport,
            port: u16,
            phases: Vec<PhaseResult>,
        ) -> EndpointReport {
            let failed = phases
                .iter()
                .any(|p| p.status == crate::model::Status::Failed);
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
                dns_server: None,
                proxy: None,
            };
            let f = findings(eps, &ctx);
            let v = verdict(eps, &f);
            (f, v)
        }

        fn codes(f: &[Finding]) -> Vec<&str> {
            f.iter().map(|f| f.code.as_str()).collect()
        }

        fn good_anchor() -> serde_json::Value {
            json!({"trust_anchor": {"name": "DigiCert Global Root G2", "subject": "", "origin": "system", "expected": true, "legacy": false}, "leaf_days_left": 200.0})
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
            let legacy = json!({"trust_anchor": {"name": "Baltimore CyberTrust Root", "subject": "", "origin": "system", "expected": false, "legacy": true}, "leaf_days_left": 10.0});
            // https shares mqtt-tls's anchor: the anchor finding comes once, the clock one still comes.
            let proxy = json!({"trust_anchor": {"name": "Contoso Inspection CA", "subject": "", "origin": "system", "expected": false, "legacy": false}, "leaf_days_left": 300.0});
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
            for (ttl, said) in [
                (1, "about every 0.8 s"),
                (10, "about every 8.0 s"),
                (30, "about every 24 s"),
                (60, "about every 48 s"),
                (149, "about every 119 s"),
                (150, "about every 2 min"),
                (600, "about every 8 min"),
                (86_400, "about every 19.2 h"),
            ] {
                let short = SasTokenInfo {
                    ttl_s: Some(ttl),
                    expires_in_s: ttl as i64,
                    ..hour.clone()
                };
                let (f, _) = run(&eps, "sas-key", Some(&short));
                let life = f.iter().find(|f| f.code == "sas_token_lifetime").unwrap();
                assert!(life.summary.contains(said), "{ttl}: {}", life.summary);
                assert!(!life.summary.contains("every 0 "), "{}", life.summary);
            }
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

        fn findings_on(profile: &str, eps: &[EndpointReport], dns: Option<&str>) -> Vec<Finding> {
            let profile = Profile::load(profile).unwrap();
            let ctx = Context {
                profile: &profile,
                auth: "none",
                sas_token: None,
                dns_server: dns.map(|d| d.parse().unwrap()),
                proxy: None,
            };
            findings(eps, &ctx)
        }

        #[test]
        fn hints_follow_the_profile() {
            let mut plain = mqtt_ok("mqtt", Transport::Tls, 1883, good_anchor());
            plain.phases[3] = ok(Phase::Mqtt, json!({"auth_tested": false}));
            let eps = [
                blocked("mqtt-tls", Transport::Tls, 8883, FailureClass::TcpRefused),
                plain,
            ];
            // A generic broker has no WebSocket endpoint and no IoT Hub errors.
            let f = findings_on("mqtt-broker", &eps, None);
            let refused = f.iter().find(|f| f.code == "tcp.refused").unwrap();
            assert!(!refused.hint.contains("WebSocket"), "{}", refused.hint);
            assert!(f.iter().all(|f| f.iothub_error.is_none()), "{f:?}");
            let auth = f.iter().find(|f| f.code == "auth_not_tested").unwrap();
            assert!(
                !auth.hint.contains("IOTHUB_DEVICE_CONNECTION_STRING"),
                "{}",
                auth.hint
            );
            assert!(auth.hint.contains("--username"), "{}", auth.hint);
            // IoT Hub has MQTT over WebSocket on 443 and names its connection string.
            let f = findings_on("azure-iot-hub", &eps, None);
            let refused = f.iter().find(|f| f.code == "tcp.refused").unwrap();
            assert!(
                refused.hint.contains("WebSocket on 443"),
                "{}",
                refused.hint
            );
            let auth = f.iter().find(|f| f.code == "auth_not_tested").unwrap();
            assert!(
                auth.hint.contains("IOTHUB_DEVICE_CONNECTION_STRING"),
                "{}",
                auth.hint
            );
        }

        #[test]
        fn a_given_dns_server_is_named_in_the_hint() {
            let dns_failed = |class| {
                endpoint(
                    "mqtt-tls",
                    Transport::Tls,
                    8883,
                    vec![failed(Phase::Dns, class)],
                )
            };
            for class in [FailureClass::DnsTimeout, FailureClass::DnsUnreachable] {
                let f = findings_on("mqtt-broker", &[dns_failed(class)], Some("127.0.0.1:5300"));
                let hint = &f[0].hint;
                assert!(hint.contains("127.0.0.1:5300"), "{hint}");
                assert!(
                    !hint.contains("resolv.conf") && !hint.contains("port 53 "),
                    "{hint}"
                );
                let f = findings_on("mqtt-broker", &[dns_failed(class)], None);
                assert!(!f[0].hint.contains("--dns-server ("), "{}", f[0].hint);
            }
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

        fn tls_stalled(class: FailureClass, mtu: Option<serde_json::Value>) -> EndpointReport {
            let mut ev = json!({});
            if let Some(m) = mtu {
                ev = json!({ "mtu": m });
            }
            let tls = PhaseResult::failed(
                Phase::Tls,
                Duration::from_millis(1),
                class,
                "detail",
                typed(Phase::Tls, ev),
            );
            endpoint(
                "mqtt-tls",
                Transport::Tls,
                8883,
                vec![ok(Phase::Dns, json!({})), ok(Phase::Tcp, json!({})), tls],
            )
        }

        fn mtu_ev(black_hole: bool, clamped: &[(u32, &str)]) -> serde_json::Value {
            let mut attempts = vec![
                json!({"mss": 1460, "clamped": false, "status": "failed", "class": "tls.timeout", "duration_ms": 1.0, "timeout_ms": 1.0}),
            ];
            for (m, st) in clamped {
                attempts.push(json!({"mss": m, "clamped": true, "status": st, "duration_ms": 1.0, "timeout_ms": 1.0}));
            }
            let mut v = json!({"trigger": "tls_timeout", "address": "10.0.0.1", "interface": "wwan0", "interface_mtu": 1500, "path_mtu": 1500, "attempts": attempts, "black_hole": black_hole, "cut_short": false});
            if black_hole {
                v["largest_working_mss"] = json!(1360);
                v["smallest_failing_mss"] = json!(1370);
            }
            v
        }

        #[test]
        fn a_proven_black_hole_gets_the_mtu_that_fits_and_the_fix() {
            let eps = [tls_stalled(
                FailureClass::TlsMtuBlackHole,
                Some(mtu_ev(true, &[(1200, "ok")])),
            )];
            let (f, v) = run(&eps, "none", None);
            assert_eq!(codes(&f), ["tls.mtu_black_hole"]);
            assert_eq!(v, Verdict::Critical);
            let hint = &f[0].hint;
            for want in [
                "ip link set dev wwan0 mtu 1400",
                "maxseg size set rt mtu",
                "ICMP type 3 code 4",
                "ICMPv6 type 2",
                "IoT Hub cannot fix",
            ] {
                assert!(hint.contains(want), "{want:?} not in {hint}");
            }
        }

        #[test]
        fn a_timeout_claims_no_mtu_problem_without_evidence() {
            // The probe ran and a smaller MSS did not help.
            let eps = [tls_stalled(
                FailureClass::TlsTimeout,
                Some(mtu_ev(false, &[(1200, "failed"), (536, "failed")])),
            )];
            let (f, _) = run(&eps, "none", None);
            assert_eq!(codes(&f), ["tls.timeout"]);
            assert!(
                f[0].hint
                    .contains("MSS 1200, 536 stalled too: not a path-MTU black hole"),
                "{}",
                f[0].hint
            );
            // It did not run: nothing claimed either way.
            let eps = [tls_stalled(FailureClass::TlsTimeout, None)];
            let (f, _) = run(&eps, "none", None);
            let hint = &f[0].hint;
            assert!(hint.contains("neither shown nor ruled out"), "{hint}");
            assert!(!hint.contains("MTU/fragmentation"), "{hint}");
            assert!(!explain(FailureClass::TlsTimeout).hint.contains("MTU/"));
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

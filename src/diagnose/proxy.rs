//! Findings about the proxy, across the endpoints of one check: only 443 passes
//! the proxy, the proxy itself cannot be reached, a TLS-inspecting proxy, and a
//! proxy from the environment compared with the direct path.

use crate::model::{EndpointReport, FailureClass, Finding, Phase, ProxyInfo, Severity};

/// Whether `e` went through a proxy (its chain has a proxy phase that ran).
fn proxied(e: &EndpointReport) -> bool {
    e.phase(Phase::Proxy)
        .is_some_and(|p| p.status != crate::model::Status::Skipped)
}

fn works(e: &EndpointReport) -> bool {
    !e.phases.is_empty() && e.phases.iter().all(|p| p.is_ok())
}

/// The proxy findings of a check through `proxy`.
pub fn findings(endpoints: &[EndpointReport], proxy: Option<&ProxyInfo>) -> Vec<Finding> {
    let mut out = Vec::new();
    let Some(proxy) = proxy.filter(|p| !p.bypassed) else {
        return out;
    };
    let url = &proxy.url;
    // TCP to the proxy failed everywhere: the proxy itself is unreachable.
    let tcp_failed: Vec<&EndpointReport> = endpoints
        .iter()
        .filter(|e| e.failed_phase().is_some_and(|p| p.phase == Phase::Tcp))
        .collect();
    if !endpoints.is_empty() && tcp_failed.len() == endpoints.len() {
        out.push(Finding {
            code: "proxy_unreachable".into(),
            severity: Severity::Critical,
            class: tcp_failed[0].failed_phase().and_then(|p| p.class),
            endpoints: tcp_failed.iter().map(|e| e.name.clone()).collect(),
            summary: format!(
                "the proxy {url} (from {}) cannot be reached: the TCP connection to the proxy itself fails, the hub was never asked for",
                proxy.source
            ),
            hint: format!(
                "check the proxy's address and port and that it runs; if this network needs no proxy, remove it ({}) or use --proxy none",
                proxy.source
            ),
            iothub_error: None,
        });
    }
    // Only 443 passes the proxy: forbidden ports next to a working one on 443.
    let forbidden: Vec<&EndpointReport> = endpoints
        .iter()
        .filter(|e| {
            e.failed_phase()
                .is_some_and(|p| p.class == Some(FailureClass::ProxyForbidden))
        })
        .collect();
    let ok_443: Vec<&EndpointReport> = endpoints
        .iter()
        .filter(|e| proxied(e) && works(e))
        .collect();
    if !forbidden.is_empty() && forbidden.iter().all(|e| e.port != 443) {
        let ports: Vec<String> = forbidden.iter().map(|e| e.port.to_string()).collect();
        let working = if ok_443.is_empty() {
            "nothing through it works yet".to_string()
        } else {
            format!(
                "through it {} works",
                ok_443
                    .iter()
                    .map(|e| format!("{} on {}", e.name, e.port))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        out.push(Finding {
            code: "proxy_only_443".into(),
            severity: if ok_443.is_empty() {
                Severity::Critical
            } else {
                Severity::Warning
            },
            class: Some(FailureClass::ProxyForbidden),
            endpoints: forbidden.iter().map(|e| e.name.clone()).collect(),
            summary: format!(
                "the proxy {url} refuses tunnels to port {} ({working})",
                ports.join(", ")
            ),
            hint: "through the proxy only 443 works: use MQTT over WebSocket (or AMQP over WebSocket) on 443 and configure the SDK's proxy options (the SDKs reach IoT Hub through a proxy only over WebSocket), or ask for the hub's ports to be allowed in the proxy".into(),
            iothub_error: None,
        });
    }
    // A TLS-inspecting proxy: the hub's chain, seen through the tunnel, ends at an
    // unexpected root.
    let inspected: Vec<&EndpointReport> = endpoints
        .iter()
        .filter(|e| proxied(e))
        .filter(|e| {
            e.failed_phase().is_some_and(|p| {
                p.phase == Phase::Tls
                    && matches!(
                        p.class,
                        Some(FailureClass::TlsUnknownCa | FailureClass::TlsHostnameMismatch)
                    )
            })
        })
        .collect();
    if !inspected.is_empty() {
        out.push(Finding {
            code: "proxy_tls_inspection".into(),
            severity: Severity::Critical,
            class: inspected[0].failed_phase().and_then(|p| p.class),
            endpoints: inspected.iter().map(|e| e.name.clone()).collect(),
            summary: format!(
                "through the proxy {url} the hub's certificate chain does not lead to a trusted root: the proxy inspects TLS (it re-signs the hub's certificate with its own CA)"
            ),
            hint: "ask for the hub's host name to be excluded from TLS inspection (IoT Hub and DPS pin their roots, and X.509 device authentication cannot pass an inspecting proxy); trusting the proxy's CA on the device works for SAS authentication only".into(),
            iothub_error: None,
        });
    }
    out
}

/// What a direct TCP connect to the hub's port found, for a proxy taken from the
/// environment.
#[derive(Debug, Clone)]
pub struct DirectProbe {
    /// The endpoint.
    pub endpoint: String,
    /// The port.
    pub port: u16,
    /// Whether the direct TCP connect succeeded.
    pub connected: bool,
}

/// The finding on a proxy read from the environment, compared with the direct
/// path: the proxy fails where the direct path works, or both work.
pub fn environment_finding(
    endpoints: &[EndpointReport],
    proxy: &ProxyInfo,
    direct: &[DirectProbe],
) -> Option<Finding> {
    let direct_ok: Vec<&DirectProbe> = direct.iter().filter(|d| d.connected).collect();
    if direct_ok.is_empty() {
        return None;
    }
    let failed_via_proxy: Vec<&EndpointReport> = endpoints
        .iter()
        .filter(|e| {
            e.failed_phase()
                .is_some_and(|p| matches!(p.phase, Phase::Tcp | Phase::Proxy))
                && direct_ok.iter().any(|d| d.endpoint == e.name)
        })
        .collect();
    let ports: Vec<String> = direct_ok.iter().map(|d| d.port.to_string()).collect();
    if !failed_via_proxy.is_empty() {
        Some(Finding {
            code: "proxy_from_environment_fails_direct_works".into(),
            severity: Severity::Warning,
            class: None,
            endpoints: failed_via_proxy.iter().map(|e| e.name.clone()).collect(),
            summary: format!(
                "the proxy {} set in {} fails, but the hub answers directly on port {}",
                proxy.url,
                proxy.source,
                ports.join(", ")
            ),
            hint: format!(
                "this network does not need the proxy for the hub: unset {} or add the hub to NO_PROXY (or run with --proxy none); device SDKs that read the variable fail the same way",
                proxy.source
            ),
            iothub_error: None,
        })
    } else {
        Some(Finding {
            code: "proxy_from_environment_direct_works_too".into(),
            severity: Severity::Info,
            class: None,
            endpoints: direct_ok.iter().map(|d| d.endpoint.clone()).collect(),
            summary: format!(
                "the run used the proxy {} from {}, but the hub also answers directly on port {}",
                proxy.url,
                proxy.source,
                ports.join(", ")
            ),
            hint: "the device's SDK connects directly unless its proxy options are set (most SDKs do not read HTTPS_PROXY): both paths work here, so either setting is fine; `--proxy none` shows the direct path's full report".into(),
            iothub_error: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{NoEvidence, PhaseResult, Protocol, Transport, Verdict};
    use std::time::Duration;

    fn ep(name: &str, port: u16, failed: Option<(Phase, FailureClass)>) -> EndpointReport {
        let ms = Duration::from_millis(1);
        let mut phases = vec![
            PhaseResult::ok(Phase::Dns, ms, NoEvidence),
            PhaseResult::ok(Phase::Tcp, ms, NoEvidence),
        ];
        match failed {
            Some((Phase::Proxy, c)) => {
                phases.push(PhaseResult::failed(Phase::Proxy, ms, c, "x", NoEvidence))
            }
            Some((ph, c)) => {
                phases.push(PhaseResult::ok(Phase::Proxy, ms, NoEvidence));
                phases.push(PhaseResult::failed(ph, ms, c, "x", NoEvidence));
            }
            None => {
                phases.push(PhaseResult::ok(Phase::Proxy, ms, NoEvidence));
                phases.push(PhaseResult::ok(Phase::Tls, ms, NoEvidence));
            }
        }
        EndpointReport {
            name: name.into(),
            protocol: Protocol::Mqtt,
            transport: Transport::Tls,
            port,
            verdict: Verdict::Ok,
            phases,
        }
    }

    fn info() -> ProxyInfo {
        ProxyInfo {
            url: "http://u:***@p:3128".into(),
            scheme: "http".into(),
            source: "HTTPS_PROXY".into(),
            authenticated: true,
            bypassed: false,
            bypassed_by: None,
        }
    }

    #[test]
    fn only_443_through_the_proxy_points_at_websocket() {
        let eps = [
            ep(
                "mqtt-tls",
                8883,
                Some((Phase::Proxy, FailureClass::ProxyForbidden)),
            ),
            ep(
                "amqps",
                5671,
                Some((Phase::Proxy, FailureClass::ProxyForbidden)),
            ),
            ep("mqtt-ws", 443, None),
        ];
        let f = findings(&eps, Some(&info()));
        let f = f.iter().find(|f| f.code == "proxy_only_443").unwrap();
        assert_eq!(f.severity, Severity::Warning);
        assert_eq!(f.endpoints, ["mqtt-tls", "amqps"]);
        assert!(f.summary.contains("8883, 5671"), "{}", f.summary);
        assert!(f.hint.contains("MQTT over WebSocket"));
        // Bypassed by NO_PROXY: no proxy findings.
        let mut bypassed = info();
        bypassed.bypassed = true;
        assert!(findings(&eps, Some(&bypassed)).is_empty());
    }

    #[test]
    fn an_unknown_root_through_the_proxy_is_tls_inspection() {
        let eps = [ep(
            "mqtt-tls",
            443,
            Some((Phase::Tls, FailureClass::TlsUnknownCa)),
        )];
        let f = findings(&eps, Some(&info()));
        assert!(f.iter().any(|f| f.code == "proxy_tls_inspection"), "{f:?}");
        assert!(findings(&eps, None).is_empty());
    }

    #[test]
    fn the_environment_proxy_against_the_direct_path() {
        let eps = [ep(
            "mqtt-tls",
            8883,
            Some((Phase::Proxy, FailureClass::ProxyForbidden)),
        )];
        let direct = [DirectProbe {
            endpoint: "mqtt-tls".into(),
            port: 8883,
            connected: true,
        }];
        let f = environment_finding(&eps, &info(), &direct).unwrap();
        assert_eq!(f.code, "proxy_from_environment_fails_direct_works");
        assert!(f.hint.contains("HTTPS_PROXY"));
        let ok = [ep("mqtt-tls", 8883, None)];
        let f = environment_finding(&ok, &info(), &direct).unwrap();
        assert_eq!(f.severity, Severity::Info);
        let blocked = [DirectProbe {
            connected: false,
            ..direct[0].clone()
        }];
        assert!(environment_finding(&eps, &info(), &blocked).is_none());
    }
}

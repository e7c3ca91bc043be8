//! Findings from MQTT 5 evidence: the limits a broker states in its CONNACK
//! (Server Keep Alive, Maximum Packet Size) and its redirects (0x9C / 0x9D with a
//! Server Reference), which MQTT 3.1.1 leaves silent.

use crate::model::{EndpointReport, Evidence, FailureClass, Finding, Phase, Severity};

/// The MQTT 5 findings of `endpoints`, one per fact and endpoint.
pub fn findings(endpoints: &[EndpointReport]) -> Vec<Finding> {
    let mut out = Vec::new();
    for e in endpoints {
        let Some(ev) = e
            .phase(Phase::Mqtt)
            .and_then(|p| p.evidence())
            .and_then(Evidence::mqtt)
        else {
            continue;
        };
        let props = ev.connack_properties.as_ref();
        if let Some(ka) = props.and_then(|p| p.server_keep_alive_s) {
            if ka != ev.keep_alive_s {
                out.push(Finding {
                    code: "mqtt5_server_keep_alive".into(),
                    severity: Severity::Warning,
                    class: None,
                    endpoints: vec![e.name.clone()],
                    summary: format!(
                        "the broker overrides your keep-alive of {} s with {ka} s (MQTT 5 Server Keep Alive)",
                        ev.keep_alive_s
                    ),
                    hint: format!(
                        "set the device's keep-alive to {ka} s: a device that keeps pinging at its own interval while the broker expects {ka} s is dropped for keep-alive timeout"
                    ),
                    iothub_error: Some("404104 DeviceConnectionClosedRemotely".into()),
                });
            }
        }
        if let Some(max) = props.and_then(|p| p.maximum_packet_size) {
            out.push(Finding {
                code: "mqtt5_maximum_packet_size".into(),
                severity: Severity::Info,
                class: None,
                endpoints: vec![e.name.clone()],
                summary: format!(
                    "Maximum Packet Size {max}: reports larger than {max} bytes are refused"
                ),
                hint: format!(
                    "keep each PUBLISH (topic, properties and payload) under {max} bytes, or split larger reports"
                ),
                iothub_error: None,
            });
        }
        let reference = props.and_then(|p| p.server_reference.clone()).or_else(|| {
            ev.server_disconnect
                .as_ref()
                .and_then(|d| d.server_reference.clone())
        });
        let redirected = e
            .failed_phase()
            .and_then(|p| p.class)
            .is_some_and(|c| c == FailureClass::MqttServerRedirect);
        if redirected || reference.is_some() {
            let to = reference
                .as_deref()
                .map(|r| format!("{r:?}"))
                .unwrap_or_else(|| "no Server Reference given".into());
            out.push(Finding {
                code: "mqtt5_server_redirect".into(),
                severity: if redirected {
                    Severity::Critical
                } else {
                    Severity::Warning
                },
                class: redirected.then_some(FailureClass::MqttServerRedirect),
                endpoints: vec![e.name.clone()],
                summary: format!("the broker redirects to another server: {to}"),
                hint: match &reference {
                    Some(r) => format!(
                        "point the device at {r} (the Server Reference of the broker's MQTT 5 answer); a device speaking MQTT 3.1.1 never learns this"
                    ),
                    None => "ask the broker operator which server to use".into(),
                },
                iothub_error: None,
            });
        }
    }
    out
}

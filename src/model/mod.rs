//! The report model, on the ground floor: everything a report holds, typed.
//!
//! Probes, the tuner and the agent produce these types; `diagnose` reads them;
//! `report/` renders them; `fleet` reads their JSON back. This module imports
//! nothing else of hubprobe, and its serde shape is the JSON Schema in
//! `docs/report.schema.json` (`hubprobe.report/1`).

pub mod canary;
pub mod class;
pub mod clock;
pub mod evidence;
pub mod finding;
pub mod keepalive;
pub mod mqtt5;
pub mod phase;
pub mod report;
pub mod result;
pub mod traffic;

pub use canary::{CanaryReport, Diagnosis, DiagnosisKind, DisconnectCause, DisconnectEvent};
pub use class::{catalogue_markdown, explain, Explanation, FailureClass};
pub use clock::{
    ClockReport, ClockSource, ClockSourceKind, ClockState, DeviceCertHealth, NtpEvidence, NtpStatus,
};
pub use evidence::*;
pub use finding::{Finding, Severity};
pub use keepalive::KeepaliveReport;
pub use mqtt5::{Mqtt5ConnackProperties, Mqtt5Disconnect, MqttVersion};
pub use phase::{ms, Phase, Status};
pub use report::{
    hostname, new_id, rfc3339, rfc3339_unix, EndpointReport, Protocol, ProxyInfo, Report,
    SasTokenInfo, Target, Transport, Verdict, JSON_SCHEMA, SCHEMA_ID,
};
pub use report::{ProvisioningReport, RegistrationStatus};
pub use result::{NoEvidence, PhaseResult};
pub use traffic::{ByteCount, PurposeBytes, TrafficReport};

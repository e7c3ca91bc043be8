//! The provisioning section of a report: what the Device Provisioning Service
//! answered a registration (`check --register`), and the check of the hub it
//! assigned (or the one given with `--assigned-hub`), chained into the same report:
//! two targets, one verdict.

use serde::{Deserialize, Serialize};

use super::class::FailureClass;
use super::report::Report;

/// Where a registration ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RegistrationStatus {
    /// DPS assigned the device to a hub.
    Assigned,
    /// Still `assigning` when the run's deadline came.
    Assigning,
    /// DPS finished with `failed`.
    Failed,
    /// The enrollment is disabled.
    Disabled,
    /// DPS refused the request (an error status: 400, 401, 404, 412, 429, 5xx).
    Refused,
    /// The registration could not be carried out (no MQTT session to DPS, no answer,
    /// a malformed answer).
    Error,
    /// Not attempted (no `--register`; the hub check runs on `--assigned-hub`).
    NotAttempted,
}

/// The registration and the chained hub check.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProvisioningReport {
    /// The DPS id scope.
    pub id_scope: String,
    /// The registration id.
    pub registration_id: String,
    /// Whether the device key was derived from an enrollment group's key.
    #[serde(default)]
    pub enrollment_group: bool,
    /// The DPS endpoint the registration used (`mqtt-tls` ...), when it ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Where the registration ended.
    pub status: RegistrationStatus,
    /// The failure class, when it did not end assigned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<FailureClass>,
    /// What happened, in words (DPS's own error message quoted, bounded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The status of DPS's last answer (200, 202, 401 ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    /// DPS's error code (`401002`, `429001` ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<u64>,
    /// The operation id of the registration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation_id: Option<String>,
    /// The hub DPS assigned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assigned_hub: Option<String>,
    /// The device id on that hub.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    /// DPS's substatus (`initialAssignment`, `reprovisionedToNewHub` ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub substatus: Option<String>,
    /// The retry-after DPS gave last (seconds): with 429, when to try again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_s: Option<u64>,
    /// Operation-status polls sent after the 202.
    #[serde(default)]
    pub polls: u32,
    /// Wall time of the registration, milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<f64>,
    /// The check of the assigned hub with the same key or certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hub: Option<Box<Report>>,
}

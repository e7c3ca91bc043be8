//! Findings: the conclusions drawn from a run, with their severity.

use serde::{Deserialize, Serialize};

use super::class::FailureClass;

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// The device cannot connect this way.
    Critical,
    /// Degraded, or will break soon.
    Warning,
    /// Worth knowing.
    Info,
}

/// One conclusion drawn from the results, with its evidence.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Finding {
    /// Stable code: a failure class id, or a cross-endpoint code (`port_blocked_use_websocket` ...).
    pub code: String,
    /// How serious.
    pub severity: Severity,
    /// The failure class, when the finding is about one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<FailureClass>,
    /// Endpoints it concerns.
    pub endpoints: Vec<String>,
    /// What happened.
    pub summary: String,
    /// What to do.
    pub hint: String,
    /// The IoT Hub error it explains.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iothub_error: Option<String>,
}

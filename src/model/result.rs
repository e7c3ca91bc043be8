//! The outcome of one phase: status, duration, class, message and typed evidence.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::class::FailureClass;
use super::evidence::Evidence;
use super::phase::{ms, Phase, Status};

/// The outcome of one phase: what a report shows for it.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseResult {
    /// Which phase.
    pub phase: Phase,
    /// How it ended.
    pub status: Status,
    /// Wall time of the phase in milliseconds (absent when skipped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<f64>,
    /// The failure class, set exactly when `status` is `failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<FailureClass>,
    /// Error detail for a failure, or the reason for a skip. Never holds a secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// What the phase saw (addresses, certificates, CONNACK ...), also on failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<Evidence>,
}

/// The wire form of a [`PhaseResult`]: the evidence is read by the phase beside it.
#[derive(Deserialize)]
struct RawPhaseResult {
    phase: Phase,
    status: Status,
    #[serde(default)]
    duration_ms: Option<f64>,
    #[serde(default)]
    class: Option<FailureClass>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    evidence: Option<serde_json::Value>,
}

impl<'de> Deserialize<'de> for PhaseResult {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = RawPhaseResult::deserialize(d)?;
        let evidence = match raw.evidence {
            None | Some(serde_json::Value::Null) => None,
            Some(v) => Some(Evidence::from_value(raw.phase, v).map_err(serde::de::Error::custom)?),
        };
        Ok(PhaseResult {
            phase: raw.phase,
            status: raw.status,
            duration_ms: raw.duration_ms,
            class: raw.class,
            message: raw.message,
            evidence,
        })
    }
}

impl PhaseResult {
    /// A successful phase.
    pub fn ok(phase: Phase, elapsed: Duration, evidence: impl Into<Option<Evidence>>) -> Self {
        PhaseResult {
            phase,
            status: Status::Ok,
            duration_ms: Some(ms(elapsed)),
            class: None,
            message: None,
            evidence: evidence.into(),
        }
    }

    /// A failed phase with its class and a message (which must not hold secrets).
    pub fn failed(
        phase: Phase,
        elapsed: Duration,
        class: FailureClass,
        message: impl Into<String>,
        evidence: impl Into<Option<Evidence>>,
    ) -> Self {
        PhaseResult {
            phase,
            status: Status::Failed,
            duration_ms: Some(ms(elapsed)),
            class: Some(class),
            message: Some(message.into()),
            evidence: evidence.into(),
        }
    }

    /// A phase that did not run, and why.
    pub fn skipped(phase: Phase, reason: impl Into<String>) -> Self {
        PhaseResult {
            phase,
            status: Status::Skipped,
            duration_ms: None,
            class: None,
            message: Some(reason.into()),
            evidence: None,
        }
    }

    /// The typed evidence of this phase, if it has any.
    pub fn evidence(&self) -> Option<&Evidence> {
        self.evidence.as_ref()
    }

    /// True when the phase succeeded.
    pub fn is_ok(&self) -> bool {
        self.status == Status::Ok
    }
}

/// No evidence: the phase result has none.
#[derive(Debug, Clone, Copy)]
pub struct NoEvidence;

impl From<NoEvidence> for Option<Evidence> {
    fn from(_: NoEvidence) -> Self {
        None
    }
}

//! The keep-alive tuner: network stability statistics, idle-timeout discovery (via a
//! reflector or the hub itself), and the keep-alive recommendation. The statistics,
//! the discovery state machines and the recommendation are pure (events in,
//! decisions out); the network drivers around them are thin.

pub mod discovery;
pub mod recommend;
pub mod reflector;
pub mod run;
pub mod stats;

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What happened to one connection left idle for a while.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "detail")]
pub enum IdleOutcome {
    /// The byte sent down after the idle period arrived and was echoed: the path kept the flow.
    Survived,
    /// Nothing arrived either way: the path forgot the flow and drops its packets silently.
    SilentDrop,
    /// The path answered with a TCP reset: it forgot the flow and says so.
    Reset,
    /// The byte sent down never arrived, but the client's byte up was answered: the
    /// downstream direction (cloud-to-device) broke while upstream still works.
    OneWay,
    /// The probe itself failed (could not connect, protocol error): no verdict on the path.
    Error(String),
}

impl IdleOutcome {
    /// Whether the flow is gone (any kind of drop).
    pub fn dropped(&self) -> bool {
        matches!(
            self,
            IdleOutcome::SilentDrop | IdleOutcome::Reset | IdleOutcome::OneWay
        )
    }
}

/// One idle probe's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdleResult {
    /// How long the connection was left idle.
    #[serde(rename = "idle_ms", with = "crate::tune::duration_ms")]
    pub idle: Duration,
    /// What happened.
    pub outcome: IdleOutcome,
}

/// serde adapter: a `Duration` as integer milliseconds (`idle_ms` style fields).
pub mod duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Serializes as whole milliseconds.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }

    /// Deserializes from whole milliseconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

//! The keep-alive tuner: network stability statistics, idle-timeout discovery (via a
//! reflector or the hub itself), and the keep-alive recommendation. The statistics,
//! the discovery state machines and the recommendation are pure (events in,
//! decisions out); the network drivers around them are thin.

pub mod discovery;
pub mod recommend;
pub mod reflector;
pub mod run;
pub mod stats;

pub use crate::model::keepalive::{duration_ms, IdleOutcome, IdleResult};

impl IdleOutcome {
    /// Whether the flow is gone (any kind of drop).
    pub fn dropped(&self) -> bool {
        matches!(
            self,
            IdleOutcome::SilentDrop
                | IdleOutcome::Reset
                | IdleOutcome::OneWay
                | IdleOutcome::Closed
        )
    }
}

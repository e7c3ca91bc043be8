//! The agent's device identity, shared by its canary session and its checks (a hub
//! allows one MQTT connection per identity; see [`crate::check::IdentityArbiter`]).

use std::sync::Arc;

/// A hub allows one MQTT connection per identity. In the agent, the canary session
/// holds `lock` while it connects and while it is connected; a check that finds a
/// live canary does not CONNECT with the identity (the hub would drop the canary),
/// and one that gets the lock keeps it for its whole run.
#[derive(Debug, Default)]
pub struct IdentityShare {
    /// Held by whoever uses the identity on MQTT.
    pub lock: Arc<tokio::sync::Mutex<()>>,
    /// The endpoint of the canary's live session (set only while it holds `lock`).
    pub live_canary: std::sync::Mutex<Option<String>>,
}

impl IdentityShare {
    /// The endpoint of the canary's live session, if there is one.
    pub fn live_canary(&self) -> Option<String> {
        self.live_canary
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Records the canary's session going up (`Some`) or down (`None`).
    pub fn set_live_canary(&self, endpoint: Option<String>) {
        *self.live_canary.lock().unwrap_or_else(|p| p.into_inner()) = endpoint;
    }
}

impl crate::check::IdentityArbiter for IdentityShare {
    fn try_take(&self) -> Option<tokio::sync::OwnedMutexGuard<()>> {
        self.lock.clone().try_lock_owned().ok()
    }

    fn live_canary(&self) -> Option<String> {
        IdentityShare::live_canary(self)
    }
}

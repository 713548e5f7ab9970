//! What the API shows of a trigger: its state (STARTING, RUNNING, STALLED with the lag,
//! RECONNECTING with the last error and attempt, STOPPED, FAILED) and its counters.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use serde::Serialize;
use swoop_core::Flow;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TriggerState {
    Starting,
    Running,
    /// The source holds events for this trigger (see `lag`) and none came for a watchdog
    /// interval while slots were free: the watchdog restarts the connection.
    Stalled,
    Reconnecting,
    Stopped,
    Failed,
    /// Switched off from the API: it runs nowhere until enabled again.
    Disabled,
}

impl TriggerState {
    /// The name the API shows (`RUNNING` …).
    pub fn as_str(self) -> &'static str {
        match self {
            TriggerState::Starting => "STARTING",
            TriggerState::Running => "RUNNING",
            TriggerState::Stalled => "STALLED",
            TriggerState::Reconnecting => "RECONNECTING",
            TriggerState::Stopped => "STOPPED",
            TriggerState::Failed => "FAILED",
            TriggerState::Disabled => "DISABLED",
        }
    }
}

/// What the API shows of one trigger.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct TriggerStatus {
    pub namespace: String,
    pub flow_id: String,
    pub trigger_id: String,
    #[serde(rename = "type")]
    pub type_name: String,
    pub state: TriggerState,
    pub since: DateTime<Utc>,
    /// The error that made it reconnect or fail.
    pub last_error: Option<String>,
    /// Connection attempts since the last success.
    pub attempt: u32,
    pub events: u64,
    pub executions_created: u64,
    pub duplicates: u64,
    /// Events that could never become a running execution (kept as FAILED executions).
    pub rejected: u64,
    /// The events waiting in the source, as last seen by the watchdog (when it can tell).
    pub lag: Option<u64>,
    pub last_event: Option<DateTime<Utc>>,
    pub in_flight: usize,
    pub max_in_flight: usize,
}

pub(crate) type SharedStatus = Arc<Mutex<TriggerStatus>>;

pub(crate) fn set_state(
    status: &SharedStatus,
    state: TriggerState,
    error: Option<String>,
    attempt: u32,
) {
    let mut s = status.lock();
    if s.state != state {
        s.since = Utc::now();
    }
    s.state = state;
    if error.is_some() || state == TriggerState::Running {
        s.last_error = error.or(s.last_error.take());
    }
    s.attempt = attempt;
}

pub(crate) fn new_status(
    flow: &Flow,
    trigger_id: &str,
    type_name: &str,
    max_in_flight: usize,
) -> SharedStatus {
    Arc::new(Mutex::new(TriggerStatus {
        namespace: flow.namespace.clone(),
        flow_id: flow.id.clone(),
        trigger_id: trigger_id.to_string(),
        type_name: type_name.to_string(),
        state: TriggerState::Starting,
        since: Utc::now(),
        last_error: None,
        attempt: 0,
        events: 0,
        executions_created: 0,
        duplicates: 0,
        rejected: 0,
        lag: None,
        last_event: None,
        in_flight: 0,
        max_in_flight,
    }))
}

/// Marks a trigger that needs no connection (a schedule) running.
pub(crate) fn set_running(status: &SharedStatus) {
    set_state(status, TriggerState::Running, None, 0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_names_are_the_api_names() {
        for state in [
            TriggerState::Starting,
            TriggerState::Running,
            TriggerState::Stalled,
            TriggerState::Reconnecting,
            TriggerState::Stopped,
            TriggerState::Failed,
        ] {
            assert_eq!(serde_json::to_value(state).unwrap(), state.as_str());
        }
    }
}

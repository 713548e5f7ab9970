//! The execution model, serialized in Kestra's JSON shape (camelCase): an [`Execution`] holds its
//! state with a timestamped history, the trigger that created it, its inputs and labels, and the
//! list of its [`TaskRun`]s; each task run holds its attempts and outputs. [`LogEntry`] is one line
//! a task logged.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Kestra's states, for executions, task runs and attempts alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum State {
    Created,
    Running,
    Success,
    Warning,
    Failed,
    Killing,
    Killed,
    Retrying,
    Retried,
    Restarted,
    Paused,
    Cancelled,
    Skipped,
}

impl State {
    /// A state nothing moves out of (except a restart).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            State::Success
                | State::Warning
                | State::Failed
                | State::Killed
                | State::Cancelled
                | State::Skipped
                | State::Retried
        )
    }

    /// Terminal and not a failure: what lets the next task run.
    pub fn is_successful(self) -> bool {
        matches!(self, State::Success | State::Warning | State::Skipped)
    }

    pub fn is_failed(self) -> bool {
        matches!(self, State::Failed | State::Killed | State::Cancelled)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            State::Created => "CREATED",
            State::Running => "RUNNING",
            State::Success => "SUCCESS",
            State::Warning => "WARNING",
            State::Failed => "FAILED",
            State::Killing => "KILLING",
            State::Killed => "KILLED",
            State::Retrying => "RETRYING",
            State::Retried => "RETRIED",
            State::Restarted => "RESTARTED",
            State::Paused => "PAUSED",
            State::Cancelled => "CANCELLED",
            State::Skipped => "SKIPPED",
        }
    }

    pub const ALL: [State; 13] = [
        State::Created,
        State::Running,
        State::Success,
        State::Warning,
        State::Failed,
        State::Killing,
        State::Killed,
        State::Retrying,
        State::Retried,
        State::Restarted,
        State::Paused,
        State::Cancelled,
        State::Skipped,
    ];
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for State {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        State::ALL
            .into_iter()
            .find(|st| st.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                format!(
                    "unknown state `{s}` (states are {})",
                    State::ALL.map(State::as_str).join(", ")
                )
            })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StateHistory {
    pub state: State,
    #[serde(serialize_with = "crate::rfc3339::serialize")]
    pub date: DateTime<Utc>,
}

/// A current state and every state it went through, with when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StateInfo {
    pub current: State,
    pub histories: Vec<StateHistory>,
}

impl StateInfo {
    pub fn new(state: State) -> Self {
        Self {
            current: state,
            histories: vec![StateHistory {
                state,
                date: Utc::now(),
            }],
        }
    }

    /// Moves to `state`, recording when. A move to the current state records nothing.
    pub fn transition(&mut self, state: State) {
        if self.current != state {
            self.current = state;
            self.histories.push(StateHistory {
                state,
                date: Utc::now(),
            });
        }
    }

    pub fn start_date(&self) -> Option<DateTime<Utc>> {
        self.histories.first().map(|h| h.date)
    }

    pub fn end_date(&self) -> Option<DateTime<Utc>> {
        if self.current.is_terminal() {
            self.histories.last().map(|h| h.date)
        } else {
            None
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Label {
    pub key: String,
    pub value: String,
}

/// Merges `new` into `labels`: a label with a key already there replaces it.
pub fn merge_labels(labels: &mut Vec<Label>, new: Vec<Label>) {
    for label in new {
        labels.retain(|l| l.key != label.key);
        labels.push(label);
    }
}

/// What fired an execution: the trigger's id and type and the variables it hands to the tasks
/// (`{{ trigger.* }}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ExecutionTrigger {
    pub id: String,
    #[serde(rename = "type")]
    pub type_name: String,
    /// Shared, not copied: an execution is cloned for every save and every event it announces,
    /// and the variables (a realtime event's payload) are most of its size. Change them with
    /// `Arc::make_mut`.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub variables: Arc<Map<String, Value>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Attempt {
    pub state: StateInfo,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct TaskRun {
    pub id: String,
    pub execution_id: String,
    pub namespace: String,
    pub flow_id: String,
    pub task_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_task_run_id: Option<String>,
    /// The ForEach value this run belongs to (as text, JSON for non-strings).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iteration: Option<u64>,
    #[serde(default)]
    pub attempts: Vec<Attempt>,
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    #[serde(default)]
    pub outputs: Map<String, Value>,
    pub state: StateInfo,
    /// Part of an `errors` branch (it ran because something failed).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub error_branch: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Execution {
    pub id: String,
    pub namespace: String,
    pub flow_id: String,
    pub flow_revision: u32,
    pub state: StateInfo,
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    #[serde(default)]
    pub inputs: Map<String, Value>,
    #[serde(default)]
    pub labels: Vec<Label>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<ExecutionTrigger>,
    #[serde(default)]
    pub task_run_list: Vec<TaskRun>,
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    #[serde(default)]
    pub outputs: Map<String, Value>,
    /// The execution that started this one through a Subflow task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_execution_id: Option<String>,
    /// The message that made it fail, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Execution {
    pub fn new(namespace: &str, flow_id: &str, flow_revision: u32) -> Self {
        Self {
            id: new_id(),
            namespace: namespace.to_string(),
            flow_id: flow_id.to_string(),
            flow_revision,
            state: StateInfo::new(State::Created),
            inputs: Map::new(),
            labels: Vec::new(),
            trigger: None,
            task_run_list: Vec::new(),
            outputs: Map::new(),
            parent_execution_id: None,
            error: None,
        }
    }

    pub fn task_run(&self, id: &str) -> Option<&TaskRun> {
        self.task_run_list.iter().find(|t| t.id == id)
    }

    pub fn task_run_mut(&mut self, id: &str) -> Option<&mut TaskRun> {
        self.task_run_list.iter_mut().find(|t| t.id == id)
    }

    /// The run of `task_id` under `parent` for `value`, if one was made already.
    pub fn find_task_run(
        &self,
        task_id: &str,
        parent: Option<&str>,
        value: Option<&str>,
    ) -> Option<&TaskRun> {
        self.task_run_list.iter().find(|t| {
            t.task_id == task_id
                && t.parent_task_run_id.as_deref() == parent
                && t.value.as_deref() == value
        })
    }
}

/// A time-ordered unique id (UUIDv7), in Kestra's short-ish text form.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "UPPERCASE")]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

impl std::str::FromStr for LogLevel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_uppercase().as_str() {
            "TRACE" => Ok(LogLevel::Trace),
            "DEBUG" => Ok(LogLevel::Debug),
            "INFO" => Ok(LogLevel::Info),
            "WARN" | "WARNING" => Ok(LogLevel::Warn),
            "ERROR" => Ok(LogLevel::Error),
            _ => Err(format!(
                "unknown log level `{s}` (levels are TRACE, DEBUG, INFO, WARN, ERROR)"
            )),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct LogEntry {
    pub namespace: String,
    pub flow_id: String,
    pub execution_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_run_id: Option<String>,
    #[serde(default)]
    pub attempt_number: u32,
    #[serde(serialize_with = "crate::rfc3339::serialize")]
    pub timestamp: DateTime<Utc>,
    pub level: LogLevel,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_roundtrips_in_kestra_spelling() {
        let json = serde_json::to_string(&State::Success).unwrap();
        assert_eq!(json, "\"SUCCESS\"");
        assert_eq!("killed".parse::<State>().unwrap(), State::Killed);
        assert!("nope".parse::<State>().is_err());
    }

    #[test]
    fn transition_records_history_once() {
        let mut s = StateInfo::new(State::Created);
        s.transition(State::Running);
        s.transition(State::Running);
        s.transition(State::Success);
        let states: Vec<_> = s.histories.iter().map(|h| h.state).collect();
        assert_eq!(states, [State::Created, State::Running, State::Success]);
        assert!(s.end_date().is_some());
    }

    #[test]
    fn execution_json_is_camel_case() {
        let e = Execution::new("company.team", "hello", 1);
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["flowId"], "hello");
        assert_eq!(v["state"]["current"], "CREATED");
        assert!(v["taskRunList"].as_array().unwrap().is_empty());
    }
}

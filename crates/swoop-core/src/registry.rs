//! The plugin contract and the registry of type names.
//!
//! A task or trigger type is a factory: its type names (Kestra's current fully qualified name
//! first, then older aliases), a property schema the validator checks without building anything,
//! and a `build` function that turns validated properties into the typed thing. Runnable tasks
//! (Log, Return, a Kafka Produce …) implement [`RunnableTask`]; tasks that run other tasks
//! (Sequential, ForEach, Subflow …) are [`crate::flow::Flowable`]s the engine interprets itself.
//! Plugins register their factories in one explicit list (see `swoop-plugins`).

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use crate::flow::{Flowable, TriggerKind};
use crate::model::{Label, LogLevel};
use crate::resources::SharedResources;
use crate::storage::TaskStorage;

/// The kind of value a property takes. The validator checks values against it; any string
/// value may also be a template, which is checked for syntax.
#[derive(Debug, Clone, Copy)]
pub enum PropType {
    /// Text (numbers and booleans are accepted and read as text).
    String,
    /// An integer, or a template that renders to one.
    Int,
    /// A number, or a template.
    Number,
    /// A boolean, or a template.
    Bool,
    /// An ISO-8601 duration such as `PT5S`.
    Duration,
    /// One of a fixed set of words (case-insensitive).
    Enum(&'static [&'static str]),
    /// A string or a list of strings.
    StringOrList,
    /// A list of anything.
    List,
    /// A map of anything.
    Map,
    /// Anything at all.
    Any,
    /// A list of tasks (validated recursively).
    Tasks,
    /// A map from a case value to a list of tasks (Switch `cases`).
    TaskCases,
    /// A map with known properties.
    Object(&'static [PropSpec]),
    /// A list of maps with known properties.
    ObjectList(&'static [PropSpec]),
    /// A map with known properties whose value for the property `type` picks which other
    /// properties apply (Kestra's `retry: {type: constant | exponential | random}`).
    Tagged(&'static [(&'static str, &'static [PropSpec])]),
}

#[derive(Debug, Clone, Copy)]
pub struct PropSpec {
    pub name: &'static str,
    pub ty: PropType,
    pub required: bool,
}

impl PropSpec {
    pub const fn required(name: &'static str, ty: PropType) -> Self {
        Self {
            name,
            ty,
            required: true,
        }
    }
    pub const fn optional(name: &'static str, ty: PropType) -> Self {
        Self {
            name,
            ty,
            required: false,
        }
    }
}

/// What a task's `build` produces.
pub enum TaskKind {
    Runnable(Arc<dyn RunnableTask>),
    Flowable(Flowable),
}

impl std::fmt::Debug for TaskKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TaskKind::Runnable(_) => f.write_str("Runnable"),
            TaskKind::Flowable(fl) => fl.fmt(f),
        }
    }
}

/// Builds a task from its validated properties (the whole task map, `id` and `type`
/// included). Child task lists are built through the registry.
pub type TaskBuildFn = fn(&Registry, &Value) -> Result<TaskKind, String>;
/// Builds a trigger from its validated properties.
pub type TriggerBuildFn = fn(&Value) -> Result<TriggerKind, String>;

pub struct TaskFactory {
    /// Every name this type answers to; the first is the canonical one.
    pub type_names: &'static [&'static str],
    /// The type's own properties (the common ones — id, type, retry, timeout … — are added).
    pub properties: &'static [PropSpec],
    pub build: TaskBuildFn,
}

pub struct TriggerFactory {
    pub type_names: &'static [&'static str],
    pub properties: &'static [PropSpec],
    /// A realtime trigger also accepts [`crate::realtime::REALTIME_PROPERTIES`].
    pub realtime: bool,
    pub build: TriggerBuildFn,
}

/// A task that does one thing and returns outputs.
#[async_trait]
pub trait RunnableTask: Send + Sync {
    async fn run(&self, ctx: &dyn RunContext) -> Result<Map<String, Value>, TaskError>;
}

/// Who is running: the coordinates of one attempt of one task run.
#[derive(Debug, Clone, Default)]
pub struct TaskRunInfo {
    pub namespace: String,
    pub flow_id: String,
    pub execution_id: String,
    pub task_id: String,
    pub task_run_id: String,
    /// 1-based.
    pub attempt: u32,
}

impl TaskRunInfo {
    /// `namespace/flowId`: the user of shared resources.
    pub fn flow_ref(&self) -> String {
        format!("{}/{}", self.namespace, self.flow_id)
    }

    /// A stable id for idempotent writes: the same for every attempt and every re-run after a
    /// crash of this task run (`<executionId>/<taskRunId>`).
    pub fn idempotency_key(&self) -> String {
        format!("{}/{}", self.execution_id, self.task_run_id)
    }
}

/// What a running task may use. The engine implements it; the task never sees the store or the
/// source that fired the flow.
///
/// - rendering over the execution's variables, as text ([`RunContext::render`]) or keeping
///   types ([`RunContext::render_typed`]);
/// - a cancellation token cancelled on kill and `timeout` (the engine also drops the task's
///   future then, which drops any request or query in flight; tasks holding things a drop does
///   not stop — a child process, a blocking thread — watch the token);
/// - the task run's internal storage and the execution's files;
/// - clients and pools shared by every execution on the node ([`SharedResources`]);
/// - logging, and the execution's labels.
pub trait RunContext: Send + Sync {
    /// Renders `template` (the value of `property`) against the execution's variables.
    fn render(&self, property: &str, template: &str) -> Result<String, TaskError>;
    /// Renders every string inside `value`.
    fn render_value(&self, property: &str, value: &Value) -> Result<Value, TaskError>;
    /// Renders `value` keeping types: a string that is one `{{ expression }}` yields the
    /// expression's value (a number, a list, a map).
    fn render_typed(&self, property: &str, value: &Value) -> Result<Value, TaskError>;
    fn log(&self, level: LogLevel, message: String);
    /// Cancelled when the execution is killed or the attempt's `timeout` passes.
    fn cancellation(&self) -> &CancellationToken;
    /// This task run's files.
    fn storage(&self) -> &TaskStorage;
    /// Clients and pools shared across executions (see [`shared_resource`]).
    fn resources(&self) -> &SharedResources;
    fn info(&self) -> &TaskRunInfo;
    /// Merges labels into the running execution's labels (same key: the new value wins).
    fn add_labels(&self, labels: Vec<Label>) -> Result<(), TaskError>;
}

/// Renders `value` keeping types, then converts it to `T`. A string where `T` wants a number or
/// a boolean is parsed (`"5"` → 5), as Kestra's `Property<Integer>` does.
pub fn render_as<T: DeserializeOwned>(
    ctx: &dyn RunContext,
    property: &str,
    value: &Value,
) -> Result<T, TaskError> {
    let rendered = ctx.render_typed(property, value)?;
    match serde_json::from_value::<T>(rendered.clone()) {
        Ok(v) => Ok(v),
        Err(first) => {
            if let Value::String(s) = &rendered
                && let Ok(parsed) = serde_json::from_str::<Value>(s)
                && let Ok(v) = serde_json::from_value::<T>(parsed)
            {
                return Ok(v);
            }
            Err(TaskError::permanent(format!(
                "property `{property}`: {first} (got {rendered})"
            )))
        }
    }
}

/// The shared resource of type `T` for `key` (the connection settings), created on first use
/// by `init` and shared by every execution of every flow on the node that asks for the same
/// key.
pub async fn shared_resource<T, F, Fut>(
    ctx: &dyn RunContext,
    key: &str,
    init: F,
) -> Result<Arc<T>, TaskError>
where
    T: std::any::Any + Send + Sync,
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<T, TaskError>>,
{
    ctx.resources()
        .get_or_try_init(&ctx.info().flow_ref(), key, init)
        .await
}

/// Why a task failed; the message is shown to the user as is. `retryable` says whether trying
/// again may help (a refused connection, a timeout, a 503) or not (a syntax error, a bad
/// property, a 404): a task's `retry` policy only acts on retryable errors.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskError {
    pub message: String,
    pub retryable: bool,
}

impl TaskError {
    /// An error that may go away (the default: when in doubt, let `retry` decide).
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: true,
        }
    }

    /// An error that will happen again however often the task is retried.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: false,
        }
    }

    /// Same error, with `context` in front of the message (`"task x: …"`).
    pub fn context(mut self, context: impl std::fmt::Display) -> Self {
        self.message = format!("{context}: {}", self.message);
        self
    }
}

impl std::fmt::Display for TaskError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for TaskError {}

/// All task and trigger types this build knows, by every name they answer to.
#[derive(Default)]
pub struct Registry {
    tasks: BTreeMap<&'static str, Arc<TaskFactory>>,
    triggers: BTreeMap<&'static str, Arc<TriggerFactory>>,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn register_task(&mut self, factory: TaskFactory) {
        let factory = Arc::new(factory);
        for name in factory.type_names {
            let previous = self.tasks.insert(name, factory.clone());
            assert!(previous.is_none(), "task type `{name}` registered twice");
        }
    }

    pub fn register_trigger(&mut self, factory: TriggerFactory) {
        let factory = Arc::new(factory);
        for name in factory.type_names {
            let previous = self.triggers.insert(name, factory.clone());
            assert!(previous.is_none(), "trigger type `{name}` registered twice");
        }
    }

    pub fn task(&self, type_name: &str) -> Option<&TaskFactory> {
        self.tasks.get(type_name).map(|f| f.as_ref())
    }

    pub fn trigger(&self, type_name: &str) -> Option<&TriggerFactory> {
        self.triggers.get(type_name).map(|f| f.as_ref())
    }

    pub fn task_type_names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.tasks.keys().copied()
    }

    pub fn trigger_type_names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.triggers.keys().copied()
    }

    /// Builds a list of tasks (the children of a flowable, or a flow's `tasks`).
    pub fn build_tasks(&self, tasks: &Value) -> Result<Vec<crate::flow::TaskDef>, String> {
        match tasks {
            Value::Null => Ok(Vec::new()),
            Value::Array(items) => items
                .iter()
                .map(|t| crate::flow::TaskDef::build(self, t))
                .collect(),
            other => Err(format!("expected a list of tasks, got {other}")),
        }
    }
}

/// The known names closest to `name`, best first (for "did you mean" hints).
pub fn closest_names<'a>(name: &str, known: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let last = |s: &str| s.rsplit('.').next().unwrap_or(s).to_ascii_lowercase();
    let wanted_last = last(name);
    let mut scored: Vec<(usize, &str)> = known
        .map(|k| {
            let mut score = levenshtein(&name.to_ascii_lowercase(), &k.to_ascii_lowercase());
            // A matching simple name (`Log` for `io.kestra.plugin.core.log.Log`) counts most.
            let simple = levenshtein(&wanted_last, &last(k));
            score = score.min(simple * 3);
            (score, k)
        })
        .collect();
    scored.sort();
    scored.into_iter().take(3).map(|(_, k)| k).collect()
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closest_names_prefers_same_simple_name() {
        let known = [
            "io.kestra.plugin.core.log.Log",
            "io.kestra.plugin.core.flow.Switch",
            "io.kestra.plugin.core.debug.Return",
        ];
        let best = closest_names("io.kestra.plugin.core.log.Logg", known.into_iter());
        assert_eq!(best[0], "io.kestra.plugin.core.log.Log");
        let best = closest_names("io.kestra.core.tasks.flows.Swtch", known.into_iter());
        assert_eq!(best[0], "io.kestra.plugin.core.flow.Switch");
    }
}

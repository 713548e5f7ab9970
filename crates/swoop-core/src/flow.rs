//! The typed flow model, built from Kestra-syntax YAML once [`crate::validate`] found nothing
//! wrong: flow properties, inputs, tasks (runnable or [`Flowable`]), triggers.
//!
//! The schemas here (flow properties, the properties every task shares, the flowable tasks' own)
//! are what the validator checks; `build` functions then only read values already known to have
//! the right shape.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::duration::parse_duration;
use crate::registry::{PropSpec, PropType, Registry, RunnableTask, TaskFactory, TaskKind};
use crate::validate::Diagnostic;

/// Properties every task accepts, whatever its type.
pub const TASK_COMMON_PROPERTIES: &[PropSpec] = &[
    PropSpec::required("id", PropType::String),
    PropSpec::required("type", PropType::String),
    PropSpec::optional("description", PropType::String),
    PropSpec::optional("retry", RETRY_TYPE),
    PropSpec::optional("timeout", PropType::Duration),
    PropSpec::optional("allowFailure", PropType::Bool),
    PropSpec::optional("disabled", PropType::Bool),
];

/// Properties every trigger accepts, whatever its type.
pub const TRIGGER_COMMON_PROPERTIES: &[PropSpec] = &[
    PropSpec::required("id", PropType::String),
    PropSpec::required("type", PropType::String),
    PropSpec::optional("description", PropType::String),
    PropSpec::optional("disabled", PropType::Bool),
];

const RETRY_COMMON: [PropSpec; 4] = [
    PropSpec::required(
        "type",
        PropType::Enum(&["constant", "exponential", "random"]),
    ),
    PropSpec::optional("maxAttempts", PropType::Int),
    PropSpec::optional("maxDuration", PropType::Duration),
    PropSpec::optional("warningOnRetry", PropType::Bool),
];

const RETRY_TYPE: PropType = PropType::Tagged(&[
    (
        "constant",
        &[
            RETRY_COMMON[0],
            RETRY_COMMON[1],
            RETRY_COMMON[2],
            RETRY_COMMON[3],
            PropSpec::required("interval", PropType::Duration),
        ],
    ),
    (
        "exponential",
        &[
            RETRY_COMMON[0],
            RETRY_COMMON[1],
            RETRY_COMMON[2],
            RETRY_COMMON[3],
            PropSpec::required("interval", PropType::Duration),
            PropSpec::required("maxInterval", PropType::Duration),
            PropSpec::optional("delayFactor", PropType::Number),
        ],
    ),
    (
        "random",
        &[
            RETRY_COMMON[0],
            RETRY_COMMON[1],
            RETRY_COMMON[2],
            RETRY_COMMON[3],
            PropSpec::required("minInterval", PropType::Duration),
            PropSpec::required("maxInterval", PropType::Duration),
        ],
    ),
]);

pub const INPUT_TYPES: &[&str] = &["STRING", "INT", "FLOAT", "BOOLEAN", "JSON", "DATETIME"];

const INPUT_PROPERTIES: &[PropSpec] = &[
    PropSpec::required("id", PropType::String),
    PropSpec::required("type", PropType::Enum(INPUT_TYPES)),
    PropSpec::optional("description", PropType::String),
    PropSpec::optional("defaults", PropType::Any),
    PropSpec::optional("required", PropType::Bool),
    PropSpec::optional("displayName", PropType::String),
];

const OUTPUT_PROPERTIES: &[PropSpec] = &[
    PropSpec::required("id", PropType::String),
    PropSpec::required("value", PropType::Any),
    PropSpec::optional("type", PropType::Enum(INPUT_TYPES)),
    PropSpec::optional("description", PropType::String),
];

const CONCURRENCY_PROPERTIES: &[PropSpec] = &[
    PropSpec::required("limit", PropType::Int),
    PropSpec::optional("behavior", PropType::Enum(&["QUEUE", "CANCEL", "FAIL"])),
];

/// The properties of a flow itself.
pub const FLOW_PROPERTIES: &[PropSpec] = &[
    PropSpec::required("id", PropType::String),
    PropSpec::required("namespace", PropType::String),
    PropSpec::optional("description", PropType::String),
    PropSpec::optional("labels", PropType::Any),
    PropSpec::optional("inputs", PropType::ObjectList(INPUT_PROPERTIES)),
    PropSpec::optional("variables", PropType::Map),
    PropSpec::required("tasks", PropType::Tasks),
    PropSpec::optional("errors", PropType::Tasks),
    PropSpec::optional("triggers", PropType::List),
    PropSpec::optional("disabled", PropType::Bool),
    PropSpec::optional("concurrency", PropType::Object(CONCURRENCY_PROPERTIES)),
    PropSpec::optional("outputs", PropType::ObjectList(OUTPUT_PROPERTIES)),
];

/// A flow, ready to run.
#[derive(Debug)]
pub struct Flow {
    pub id: String,
    pub namespace: String,
    pub revision: u32,
    pub description: Option<String>,
    pub labels: Vec<(String, String)>,
    pub inputs: Vec<InputDef>,
    pub variables: Map<String, Value>,
    pub tasks: Vec<TaskDef>,
    pub errors: Vec<TaskDef>,
    pub triggers: Vec<TriggerDef>,
    pub disabled: bool,
    pub concurrency: Option<Concurrency>,
    pub outputs: Vec<FlowOutput>,
    /// The YAML it was built from.
    pub source: String,
    /// The YAML as JSON (what the API returns for the flow).
    pub json: Value,
}

impl Flow {
    /// Parses and validates a flow; every problem is reported, each with its line and column.
    pub fn parse(source: &str, registry: &Registry) -> Result<Flow, Vec<Diagnostic>> {
        let node = crate::yaml::parse(source).map_err(|d| vec![d])?;
        let diagnostics = crate::validate::validate_flow(&node, registry);
        if !diagnostics.is_empty() {
            return Err(diagnostics);
        }
        let json = node.to_json();
        Flow::build(registry, json, source.to_string()).map_err(|message| {
            vec![Diagnostic {
                line: node.line,
                column: node.column,
                message,
            }]
        })
    }

    fn build(registry: &Registry, json: Value, source: String) -> Result<Flow, String> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Head {
            id: String,
            namespace: String,
            #[serde(default)]
            description: Option<String>,
            #[serde(default)]
            variables: Map<String, Value>,
            #[serde(default)]
            disabled: bool,
            #[serde(default)]
            concurrency: Option<Concurrency>,
            #[serde(default)]
            inputs: Vec<InputDef>,
            #[serde(default)]
            outputs: Vec<FlowOutput>,
        }
        let head: Head =
            serde_json::from_value(normalized_head(&json)).map_err(|e| e.to_string())?;
        let labels = match json.get("labels") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Object(m)) => m.iter().map(|(k, v)| (k.clone(), scalar_text(v))).collect(),
            Some(Value::Array(items)) => items
                .iter()
                .map(|i| {
                    let key = i.get("key").map(scalar_text).unwrap_or_default();
                    let value = i.get("value").map(scalar_text).unwrap_or_default();
                    (key, value)
                })
                .collect(),
            Some(other) => return Err(format!("`labels` must be a map, got {other}")),
        };
        let tasks = registry.build_tasks(json.get("tasks").unwrap_or(&Value::Null))?;
        let errors = registry.build_tasks(json.get("errors").unwrap_or(&Value::Null))?;
        let triggers = match json.get("triggers") {
            Some(Value::Array(items)) => items
                .iter()
                .map(|t| TriggerDef::build(registry, t))
                .collect::<Result<Vec<_>, _>>()?,
            _ => Vec::new(),
        };
        Ok(Flow {
            id: head.id,
            namespace: head.namespace,
            revision: 1,
            description: head.description,
            labels,
            inputs: head.inputs,
            variables: head.variables,
            tasks,
            errors,
            triggers,
            disabled: head.disabled,
            concurrency: head.concurrency,
            outputs: head.outputs,
            source,
            json,
        })
    }

    /// Every task of the flow, at any depth.
    pub fn all_tasks(&self) -> Vec<&TaskDef> {
        fn walk<'a>(tasks: &'a [TaskDef], out: &mut Vec<&'a TaskDef>) {
            for t in tasks {
                out.push(t);
                if let TaskKind::Flowable(f) = &t.kind {
                    for children in f.children() {
                        walk(children, out);
                    }
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.tasks, &mut out);
        walk(&self.errors, &mut out);
        out
    }
}

/// The flow's own properties in the shape the model reads: enum words upper-cased (validation
/// accepts any case) and scalar descriptions as text.
fn normalized_head(json: &Value) -> Value {
    let mut head = json.clone();
    let upper = |v: &mut Value| {
        if let Value::String(s) = v {
            *s = s.to_ascii_uppercase();
        }
    };
    for list in ["inputs", "outputs"] {
        if let Some(Value::Array(items)) = head.get_mut(list) {
            for item in items {
                if let Some(t) = item.get_mut("type") {
                    upper(t);
                }
            }
        }
    }
    if let Some(b) = head
        .get_mut("concurrency")
        .and_then(|c| c.get_mut("behavior"))
    {
        upper(b);
    }
    if let Some(d) = head.get_mut("description")
        && !d.is_null()
    {
        *d = Value::String(scalar_text(d));
    }
    head
}

/// A scalar as text (strings as they are, others as JSON).
pub fn scalar_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct InputDef {
    pub id: String,
    #[serde(rename = "type")]
    pub input_type: InputType,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub defaults: Option<Value>,
    #[serde(default = "default_true")]
    pub required: bool,
}

fn default_true() -> bool {
    true
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum InputType {
    String,
    Int,
    Float,
    Boolean,
    Json,
    Datetime,
}

#[derive(Debug, Clone, Deserialize)]
pub struct FlowOutput {
    pub id: String,
    pub value: Value,
    #[serde(rename = "type", default)]
    pub output_type: Option<InputType>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Concurrency {
    pub limit: u32,
    #[serde(default)]
    pub behavior: ConcurrencyBehavior,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ConcurrencyBehavior {
    #[default]
    Queue,
    Cancel,
    Fail,
}

/// One task of a flow: what every task has, and what its type does.
#[derive(Debug)]
pub struct TaskDef {
    pub id: String,
    pub type_name: String,
    pub retry: Option<RetryPolicy>,
    pub timeout: Option<Duration>,
    pub allow_failure: bool,
    pub disabled: bool,
    pub kind: TaskKind,
}

impl TaskDef {
    pub fn build(registry: &Registry, value: &Value) -> Result<TaskDef, String> {
        let id = value
            .get("id")
            .map(scalar_text)
            .ok_or("a task has no `id`")?;
        let type_name = value
            .get("type")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("task `{id}` has no `type`"))?
            .to_string();
        let factory = registry
            .task(&type_name)
            .ok_or_else(|| format!("task `{id}`: unknown task type `{type_name}`"))?;
        let kind = (factory.build)(registry, value).map_err(|e| format!("task `{id}`: {e}"))?;
        let retry = match value.get("retry") {
            None | Some(Value::Null) => None,
            Some(r) => Some(RetryPolicy::from_json(r).map_err(|e| format!("task `{id}`: {e}"))?),
        };
        Ok(TaskDef {
            timeout: opt_duration(value, "timeout").map_err(|e| format!("task `{id}`: {e}"))?,
            allow_failure: value
                .get("allowFailure")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            disabled: value
                .get("disabled")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            id,
            type_name,
            retry,
            kind,
        })
    }

    pub fn runnable(&self) -> Option<&Arc<dyn RunnableTask>> {
        match &self.kind {
            TaskKind::Runnable(r) => Some(r),
            TaskKind::Flowable(_) => None,
        }
    }
}

fn opt_duration(value: &Value, key: &str) -> Result<Option<Duration>, String> {
    match value.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => parse_duration(s)
            .map(Some)
            .map_err(|e| format!("`{key}`: {e}")),
        Some(other) => Err(format!(
            "`{key}` must be an ISO-8601 duration such as PT5S, got {other}"
        )),
    }
}

fn required_duration(value: &Value, key: &str) -> Result<Duration, String> {
    opt_duration(value, key)?.ok_or_else(|| format!("`{key}` is required"))
}

/// Kestra's retry policies.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    pub behavior: RetryBehavior,
    /// Attempts in all (the first run included); `None` means no limit but `max_duration`.
    pub max_attempts: Option<u32>,
    pub max_duration: Option<Duration>,
    pub warning_on_retry: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RetryBehavior {
    Constant {
        interval: Duration,
    },
    Exponential {
        interval: Duration,
        max_interval: Duration,
        delay_factor: f64,
    },
    Random {
        min_interval: Duration,
        max_interval: Duration,
    },
}

impl RetryPolicy {
    pub fn from_json(v: &Value) -> Result<RetryPolicy, String> {
        let kind = v
            .get("type")
            .and_then(Value::as_str)
            .ok_or("`retry.type` is required (constant, exponential or random)")?;
        let behavior = match kind.to_ascii_lowercase().as_str() {
            "constant" => RetryBehavior::Constant {
                interval: required_duration(v, "interval")?,
            },
            "exponential" => RetryBehavior::Exponential {
                interval: required_duration(v, "interval")?,
                max_interval: required_duration(v, "maxInterval")?,
                delay_factor: v.get("delayFactor").and_then(Value::as_f64).unwrap_or(2.0),
            },
            "random" => RetryBehavior::Random {
                min_interval: required_duration(v, "minInterval")?,
                max_interval: required_duration(v, "maxInterval")?,
            },
            other => {
                return Err(format!(
                    "unknown retry type `{other}` (constant, exponential or random)"
                ));
            }
        };
        let max_attempts = match v.get("maxAttempts") {
            None | Some(Value::Null) => None,
            Some(n) => Some(
                n.as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or("`retry.maxAttempts` must be a positive integer")?,
            ),
        };
        let max_duration = opt_duration(v, "maxDuration")?;
        if max_attempts.is_none() && max_duration.is_none() {
            return Err("`retry` needs `maxAttempts` or `maxDuration`".into());
        }
        Ok(RetryPolicy {
            behavior,
            max_attempts,
            max_duration,
            warning_on_retry: v
                .get("warningOnRetry")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        })
    }

    /// The wait before attempt number `next_attempt` (2 for the first retry), or `None` when no
    /// attempt is left. `elapsed` is the time since the first attempt started; `random01` is a
    /// number in [0, 1) for the random policy.
    pub fn delay_before(
        &self,
        next_attempt: u32,
        elapsed: Duration,
        random01: f64,
    ) -> Option<Duration> {
        if let Some(max) = self.max_attempts
            && next_attempt > max
        {
            return None;
        }
        let delay = match &self.behavior {
            RetryBehavior::Constant { interval } => *interval,
            RetryBehavior::Exponential {
                interval,
                max_interval,
                delay_factor,
            } => {
                let retries_so_far = next_attempt.saturating_sub(2) as i32;
                let d = interval.as_secs_f64() * delay_factor.powi(retries_so_far);
                Duration::from_secs_f64(d.min(max_interval.as_secs_f64()))
            }
            RetryBehavior::Random {
                min_interval,
                max_interval,
            } => {
                let span = max_interval.saturating_sub(*min_interval);
                *min_interval + span.mul_f64(random01.clamp(0.0, 1.0))
            }
        };
        if let Some(max) = self.max_duration
            && elapsed + delay > max
        {
            return None;
        }
        Some(delay)
    }
}

/// Tasks the engine interprets itself: they run other tasks or other flows.
#[derive(Debug)]
pub enum Flowable {
    Sequential {
        tasks: Vec<TaskDef>,
        errors: Vec<TaskDef>,
    },
    Parallel {
        tasks: Vec<TaskDef>,
        /// At most this many children at once; 0 means all.
        concurrent: usize,
        errors: Vec<TaskDef>,
    },
    ForEach {
        /// A list, or a template rendering to a JSON list.
        values: Value,
        /// At most this many iterations at once; 0 means all.
        concurrency_limit: usize,
        tasks: Vec<TaskDef>,
        errors: Vec<TaskDef>,
    },
    If {
        condition: String,
        then: Vec<TaskDef>,
        otherwise: Vec<TaskDef>,
        errors: Vec<TaskDef>,
    },
    Switch {
        value: String,
        cases: Vec<(String, Vec<TaskDef>)>,
        defaults: Vec<TaskDef>,
        errors: Vec<TaskDef>,
    },
    Subflow {
        namespace: String,
        flow_id: String,
        inputs: Map<String, Value>,
        labels: Map<String, Value>,
        wait: bool,
        transmit_failed: bool,
    },
}

impl Flowable {
    /// Every child task list, for walks over the whole flow.
    pub fn children(&self) -> Vec<&[TaskDef]> {
        match self {
            Flowable::Sequential { tasks, errors }
            | Flowable::Parallel { tasks, errors, .. }
            | Flowable::ForEach { tasks, errors, .. } => vec![tasks, errors],
            Flowable::If {
                then,
                otherwise,
                errors,
                ..
            } => vec![then, otherwise, errors],
            Flowable::Switch {
                cases,
                defaults,
                errors,
                ..
            } => {
                let mut v: Vec<&[TaskDef]> = cases.iter().map(|(_, t)| t.as_slice()).collect();
                v.push(defaults);
                v.push(errors);
                v
            }
            Flowable::Subflow { .. } => Vec::new(),
        }
    }

    /// The `errors` branch of this flowable (empty for Subflow).
    pub fn errors(&self) -> &[TaskDef] {
        match self {
            Flowable::Sequential { errors, .. }
            | Flowable::Parallel { errors, .. }
            | Flowable::ForEach { errors, .. }
            | Flowable::If { errors, .. }
            | Flowable::Switch { errors, .. } => errors,
            Flowable::Subflow { .. } => &[],
        }
    }
}

fn child_tasks(registry: &Registry, v: &Value, key: &str) -> Result<Vec<TaskDef>, String> {
    registry.build_tasks(v.get(key).unwrap_or(&Value::Null))
}

fn usize_prop(v: &Value, key: &str, default: usize) -> Result<usize, String> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(n) => n
            .as_u64()
            .map(|n| n as usize)
            .ok_or_else(|| format!("`{key}` must be a non-negative integer, got {n}")),
    }
}

fn string_prop(v: &Value, key: &str) -> Result<String, String> {
    v.get(key)
        .filter(|v| !v.is_null())
        .map(scalar_text)
        .ok_or_else(|| format!("`{key}` is required"))
}

fn map_prop(v: &Value, key: &str) -> Map<String, Value> {
    v.get(key)
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

/// The factories of the flowable tasks, registered by every build.
pub fn flowable_factories() -> Vec<TaskFactory> {
    const ERRORS: PropSpec = PropSpec::optional("errors", PropType::Tasks);
    vec![
        TaskFactory {
            type_names: &[
                "io.kestra.plugin.core.flow.Sequential",
                "io.kestra.core.tasks.flows.Sequential",
            ],
            properties: const { &[PropSpec::required("tasks", PropType::Tasks), ERRORS] },
            build: |r, v| {
                Ok(TaskKind::Flowable(Flowable::Sequential {
                    tasks: child_tasks(r, v, "tasks")?,
                    errors: child_tasks(r, v, "errors")?,
                }))
            },
        },
        TaskFactory {
            type_names: &[
                "io.kestra.plugin.core.flow.Parallel",
                "io.kestra.core.tasks.flows.Parallel",
            ],
            properties: const {
                &[
                    PropSpec::required("tasks", PropType::Tasks),
                    PropSpec::optional("concurrent", PropType::Int),
                    ERRORS,
                ]
            },
            build: |r, v| {
                Ok(TaskKind::Flowable(Flowable::Parallel {
                    tasks: child_tasks(r, v, "tasks")?,
                    concurrent: usize_prop(v, "concurrent", 0)?,
                    errors: child_tasks(r, v, "errors")?,
                }))
            },
        },
        TaskFactory {
            type_names: &[
                "io.kestra.plugin.core.flow.ForEach",
                "io.kestra.core.tasks.flows.ForEach",
                "io.kestra.plugin.core.flow.EachSequential",
                "io.kestra.core.tasks.flows.EachSequential",
                "io.kestra.plugin.core.flow.EachParallel",
                "io.kestra.core.tasks.flows.EachParallel",
            ],
            properties: const {
                &[
                    PropSpec::required("values", PropType::Any),
                    PropSpec::optional("concurrencyLimit", PropType::Int),
                    PropSpec::required("tasks", PropType::Tasks),
                    ERRORS,
                ]
            },
            build: |r, v| {
                let type_name = v.get("type").and_then(Value::as_str).unwrap_or_default();
                // EachParallel runs every value at once, EachSequential one at a time; ForEach
                // defaults to one at a time as Kestra's does.
                let default_limit = usize::from(!type_name.ends_with("EachParallel"));
                Ok(TaskKind::Flowable(Flowable::ForEach {
                    values: v.get("values").cloned().unwrap_or(Value::Null),
                    concurrency_limit: usize_prop(v, "concurrencyLimit", default_limit)?,
                    tasks: child_tasks(r, v, "tasks")?,
                    errors: child_tasks(r, v, "errors")?,
                }))
            },
        },
        TaskFactory {
            type_names: &[
                "io.kestra.plugin.core.flow.If",
                "io.kestra.core.tasks.flows.If",
            ],
            properties: const {
                &[
                    PropSpec::required("condition", PropType::String),
                    PropSpec::required("then", PropType::Tasks),
                    PropSpec::optional("else", PropType::Tasks),
                    ERRORS,
                ]
            },
            build: |r, v| {
                Ok(TaskKind::Flowable(Flowable::If {
                    condition: string_prop(v, "condition")?,
                    then: child_tasks(r, v, "then")?,
                    otherwise: child_tasks(r, v, "else")?,
                    errors: child_tasks(r, v, "errors")?,
                }))
            },
        },
        TaskFactory {
            type_names: &[
                "io.kestra.plugin.core.flow.Switch",
                "io.kestra.core.tasks.flows.Switch",
            ],
            properties: const {
                &[
                    PropSpec::required("value", PropType::String),
                    PropSpec::optional("cases", PropType::TaskCases),
                    PropSpec::optional("defaults", PropType::Tasks),
                    ERRORS,
                ]
            },
            build: |r, v| {
                let cases = v
                    .get("cases")
                    .and_then(Value::as_object)
                    .map(|m| {
                        m.iter()
                            .map(|(k, t)| Ok((k.clone(), r.build_tasks(t)?)))
                            .collect::<Result<Vec<_>, String>>()
                    })
                    .transpose()?
                    .unwrap_or_default();
                Ok(TaskKind::Flowable(Flowable::Switch {
                    value: string_prop(v, "value")?,
                    cases,
                    defaults: child_tasks(r, v, "defaults")?,
                    errors: child_tasks(r, v, "errors")?,
                }))
            },
        },
        TaskFactory {
            type_names: &[
                "io.kestra.plugin.core.flow.Subflow",
                "io.kestra.core.tasks.flows.Subflow",
                "io.kestra.core.tasks.flows.Flow",
            ],
            properties: const {
                &[
                    PropSpec::required("namespace", PropType::String),
                    PropSpec::required("flowId", PropType::String),
                    PropSpec::optional("inputs", PropType::Map),
                    PropSpec::optional("labels", PropType::Map),
                    PropSpec::optional("wait", PropType::Bool),
                    PropSpec::optional("transmitFailed", PropType::Bool),
                ]
            },
            build: |_, v| {
                Ok(TaskKind::Flowable(Flowable::Subflow {
                    namespace: string_prop(v, "namespace")?,
                    flow_id: string_prop(v, "flowId")?,
                    inputs: map_prop(v, "inputs"),
                    labels: map_prop(v, "labels"),
                    wait: v.get("wait").and_then(Value::as_bool).unwrap_or(true),
                    transmit_failed: v
                        .get("transmitFailed")
                        .and_then(Value::as_bool)
                        .unwrap_or(true),
                }))
            },
        },
    ]
}

/// One trigger of a flow.
#[derive(Debug)]
pub struct TriggerDef {
    pub id: String,
    pub type_name: String,
    pub disabled: bool,
    pub kind: TriggerKind,
}

impl TriggerDef {
    pub fn build(registry: &Registry, value: &Value) -> Result<TriggerDef, String> {
        let id = value
            .get("id")
            .map(scalar_text)
            .ok_or("a trigger has no `id`")?;
        let type_name = value
            .get("type")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("trigger `{id}` has no `type`"))?
            .to_string();
        let factory = registry
            .trigger(&type_name)
            .ok_or_else(|| format!("trigger `{id}`: unknown trigger type `{type_name}`"))?;
        let kind = (factory.build)(value).map_err(|e| format!("trigger `{id}`: {e}"))?;
        Ok(TriggerDef {
            disabled: value
                .get("disabled")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            id,
            type_name,
            kind,
        })
    }
}

/// What a trigger is.
#[derive(Debug, Clone)]
pub enum TriggerKind {
    Schedule(ScheduleTrigger),
    Webhook(WebhookTrigger),
    /// Fires once per event of a source (Kafka, MQTT …), through the realtime runtime.
    Realtime(crate::realtime::RealtimeTrigger),
}

#[derive(Debug, Clone)]
pub struct ScheduleTrigger {
    /// A cron expression, with an optional seconds field first.
    pub cron: String,
    /// An IANA time zone name; UTC when absent.
    pub timezone: Option<String>,
    pub inputs: Map<String, Value>,
}

#[derive(Debug, Clone)]
pub struct WebhookTrigger {
    pub key: String,
}

/// The factories of the triggers that need no broker.
pub fn builtin_trigger_factories() -> Vec<crate::registry::TriggerFactory> {
    use crate::registry::TriggerFactory;
    vec![
        TriggerFactory {
            type_names: &[
                "io.kestra.plugin.core.trigger.Schedule",
                "io.kestra.core.models.triggers.types.Schedule",
            ],
            realtime: false,
            properties: const {
                &[
                    PropSpec::required("cron", PropType::String),
                    PropSpec::optional("timezone", PropType::String),
                    PropSpec::optional("inputs", PropType::Map),
                ]
            },
            build: |v| {
                let cron = string_prop(v, "cron")?;
                crate::validate::check_cron(&cron)?;
                let timezone = v.get("timezone").map(scalar_text);
                if let Some(tz) = &timezone {
                    crate::validate::check_timezone(tz)?;
                }
                Ok(TriggerKind::Schedule(ScheduleTrigger {
                    cron,
                    timezone,
                    inputs: map_prop(v, "inputs"),
                }))
            },
        },
        TriggerFactory {
            type_names: &[
                "io.kestra.plugin.core.trigger.Webhook",
                "io.kestra.core.models.triggers.types.Webhook",
            ],
            realtime: false,
            properties: const { &[PropSpec::required("key", PropType::String)] },
            build: |v| {
                Ok(TriggerKind::Webhook(WebhookTrigger {
                    key: string_prop(v, "key")?,
                }))
            },
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn exponential_retry_grows_and_caps() {
        let p = RetryPolicy::from_json(&json!({
            "type": "exponential", "interval": "PT1S", "maxInterval": "PT5S", "maxAttempts": 5
        }))
        .unwrap();
        let d = |n| p.delay_before(n, Duration::ZERO, 0.0);
        assert_eq!(d(2), Some(Duration::from_secs(1)));
        assert_eq!(d(3), Some(Duration::from_secs(2)));
        assert_eq!(d(4), Some(Duration::from_secs(4)));
        assert_eq!(d(5), Some(Duration::from_secs(5)));
        assert_eq!(d(6), None);
    }

    #[test]
    fn max_duration_stops_retries() {
        let p = RetryPolicy::from_json(&json!({
            "type": "constant", "interval": "PT1S", "maxDuration": "PT3S"
        }))
        .unwrap();
        assert_eq!(
            p.delay_before(2, Duration::from_secs(1), 0.0),
            Some(Duration::from_secs(1))
        );
        assert_eq!(p.delay_before(9, Duration::from_secs(3), 0.0), None);
    }

    #[test]
    fn random_retry_stays_within_bounds() {
        let p = RetryPolicy::from_json(&json!({
            "type": "random", "minInterval": "PT1S", "maxInterval": "PT3S", "maxAttempts": 3
        }))
        .unwrap();
        assert_eq!(
            p.delay_before(2, Duration::ZERO, 0.5),
            Some(Duration::from_secs(2))
        );
    }
}

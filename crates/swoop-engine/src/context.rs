//! The variables a task's templates see, and the [`RunContext`] handed to runnable tasks.
//!
//! Context shape (Kestra's): `flow` {id, namespace, revision}, `execution` {id, startDate},
//! `inputs`, `vars` (the flow's `variables`), `trigger` (the trigger's variables), `labels`
//! (a map), `outputs.<taskId>` (or `outputs.<taskId>.<value>` for runs inside a ForEach),
//! `taskrun` {id, value, iteration, attemptsCount, parentId}, `task` {id, type}.
//! The file functions (`read()` …) see the execution's files through [`TaskTemplates`].

use std::sync::Arc;

use chrono::Utc;
use serde_json::{Map, Value, json};
use swoop_core::model::{Label, LogEntry, LogLevel, merge_labels};
use swoop_core::registry::{RunContext, TaskError, TaskRunInfo};
use swoop_core::resources::SharedResources;
use swoop_core::storage::TaskStorage;
use swoop_core::template::{TaskTemplates, TemplateContext, mask_secrets};
use swoop_core::{Execution, Flow};
use swoop_store::LogStore;
use tokio_util::sync::CancellationToken;

use crate::engine::LiveExecution;

/// The part of the context that is the same for every task of an execution, converted for
/// the templates once per execution.
pub fn base_context(flow: &Flow, execution: &Execution) -> TemplateContext {
    let mut ctx = TemplateContext::default();
    ctx.insert(
        "flow",
        &json!({"id": flow.id, "namespace": flow.namespace, "revision": execution.flow_revision}),
    );
    ctx.insert(
        "execution",
        &json!({
            "id": execution.id,
            "startDate": execution.state.start_date().map(|d| d.to_rfc3339()),
            "originalId": execution.id,
        }),
    );
    ctx.insert("inputs", &execution.inputs);
    ctx.insert("vars", &flow.variables);
    match &execution.trigger {
        Some(t) => ctx.insert_shared_map("trigger", &t.variables),
        None => ctx.insert("trigger", &Map::new()),
    }
    let labels: Map<String, Value> = execution
        .labels
        .iter()
        .map(|l| (l.key.clone(), Value::String(l.value.clone())))
        .collect();
    ctx.insert("labels", &labels);
    ctx
}

/// `outputs` as templates see them: `outputs.<taskId>` for a task run outside any ForEach,
/// `outputs.<taskId>.<value>` for one inside.
pub fn outputs_context(execution: &Execution) -> Map<String, Value> {
    let mut outputs = Map::new();
    for run in &execution.task_run_list {
        if run.outputs.is_empty() {
            continue;
        }
        let value = Value::Object(run.outputs.clone());
        match &run.value {
            None => {
                outputs.insert(run.task_id.clone(), value);
            }
            Some(v) => {
                let slot = outputs
                    .entry(run.task_id.clone())
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(m) = slot {
                    m.insert(v.clone(), value);
                }
            }
        }
    }
    outputs
}

/// Where a log line goes and what it is about.
#[derive(Clone)]
pub struct LogTarget {
    pub logs: Arc<dyn LogStore>,
    pub namespace: String,
    pub flow_id: String,
    pub execution_id: String,
    pub task_id: Option<String>,
    pub task_run_id: Option<String>,
    pub attempt_number: u32,
}

impl LogTarget {
    pub fn log(&self, level: LogLevel, message: &str) {
        let message = mask_secrets(message).into_owned();
        tracing::event!(
            target: "swoop::task",
            tracing::Level::DEBUG,
            execution = %self.execution_id,
            task = self.task_id.as_deref().unwrap_or(""),
            ?level,
            "{message}"
        );
        self.logs.append_logs(vec![LogEntry {
            namespace: self.namespace.clone(),
            flow_id: self.flow_id.clone(),
            execution_id: self.execution_id.clone(),
            task_id: self.task_id.clone(),
            task_run_id: self.task_run_id.clone(),
            attempt_number: self.attempt_number,
            timestamp: Utc::now(),
            level,
            message,
        }]);
    }
}

/// What a runnable task sees while it runs: its full template context, a logger, its storage,
/// the node's shared resources, a cancellation token, and its execution (for labels).
pub struct TaskRunContext {
    pub flow_ref: String,
    pub task_id: String,
    /// The task run's variables and its execution's files.
    pub templates: TaskTemplates,
    pub log: LogTarget,
    pub info: TaskRunInfo,
    pub storage: TaskStorage,
    pub resources: Arc<SharedResources>,
    pub cancel: CancellationToken,
    pub live: Arc<LiveExecution>,
}

impl TaskRunContext {
    fn render_error(&self, property: &str, e: impl std::fmt::Display) -> TaskError {
        // A template that does not render will not render on the next attempt either.
        TaskError::permanent(format!(
            "flow `{}`, task `{}`, property `{property}`: {e}",
            self.flow_ref, self.task_id
        ))
    }
}

impl RunContext for TaskRunContext {
    fn render(&self, property: &str, template: &str) -> Result<String, TaskError> {
        self.templates
            .render(template)
            .map_err(|e| self.render_error(property, e))
    }

    fn render_value(&self, property: &str, value: &Value) -> Result<Value, TaskError> {
        self.templates
            .render_value(value)
            .map_err(|e| self.render_error(property, e))
    }

    fn render_typed(&self, property: &str, value: &Value) -> Result<Value, TaskError> {
        self.templates
            .render_typed(value)
            .map_err(|e| self.render_error(property, e))
    }

    fn log(&self, level: LogLevel, message: String) {
        self.log.log(level, &message);
    }

    fn cancellation(&self) -> &CancellationToken {
        &self.cancel
    }

    fn storage(&self) -> &TaskStorage {
        &self.storage
    }

    fn resources(&self) -> &SharedResources {
        &self.resources
    }

    fn info(&self) -> &TaskRunInfo {
        &self.info
    }

    fn add_labels(&self, labels: Vec<Label>) -> Result<(), TaskError> {
        merge_labels(&mut self.live.execution.lock().labels, labels);
        Ok(())
    }
}

//! A [`RunContext`] for unit tests of tasks: a fixed template context, in-memory storage, its
//! own shared resources, and logs and labels collected in memory; and the helpers every task
//! family's tests use ([`build_task`], [`merged`], [`TestRunContext::read_ion`]).

use std::sync::Arc;

use parking_lot::Mutex;
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

use crate::Registry;
use crate::ion::IonReader;
use crate::model::{Label, LogLevel, merge_labels};
use crate::registry::{RunContext, RunnableTask, TaskError, TaskKind, TaskRunInfo};
use crate::resources::SharedResources;
use crate::storage::{
    ExecutionFiles, InternalStorage, MemoryStorage, TaskStorage, execution_prefix, task_run_prefix,
};
use crate::template::{RenderError, TaskTemplates};

/// Builds a runnable task of `type_name` (id `task`) with `props`, as a flow would.
pub fn build_task(
    registry: &Registry,
    type_name: &str,
    props: Value,
) -> Result<Arc<dyn RunnableTask>, String> {
    let factory = registry
        .task(type_name)
        .ok_or_else(|| format!("`{type_name}` is not registered"))?;
    let task = merged(json!({"id": "task", "type": type_name}), props);
    match (factory.build)(registry, &task)? {
        TaskKind::Runnable(r) => Ok(r),
        TaskKind::Flowable(_) => Err(format!("`{type_name}` is not a runnable task")),
    }
}

/// `base` with the properties of `extra` added (or replaced).
pub fn merged(mut base: Value, extra: Value) -> Value {
    if let (Some(b), Value::Object(e)) = (base.as_object_mut(), extra) {
        b.extend(e);
    }
    base
}

fn render_error(property: &str, e: RenderError) -> TaskError {
    TaskError::permanent(format!("property `{property}`: {e}"))
}

pub struct TestRunContext {
    pub templates: TaskTemplates,
    pub info: TaskRunInfo,
    pub storage: TaskStorage,
    pub resources: Arc<SharedResources>,
    pub cancel: CancellationToken,
    pub logs: Mutex<Vec<(LogLevel, String)>>,
    pub labels: Mutex<Vec<Label>>,
}

impl TestRunContext {
    /// A task `task` of flow `test/flow`, execution `exec1`, with `variables` merged into the
    /// template context (`{"trigger": {...}, "inputs": {...}}`).
    pub fn new(variables: Value) -> Self {
        Self::with_storage(variables, Arc::new(MemoryStorage::new()))
    }

    pub fn with_storage(variables: Value, storage: Arc<dyn InternalStorage>) -> Self {
        let info = TaskRunInfo {
            namespace: "test".into(),
            flow_id: "flow".into(),
            execution_id: "exec1".into(),
            task_id: "task".into(),
            task_run_id: "run1".into(),
            attempt: 1,
        };
        let prefix = execution_prefix(&info.namespace, &info.flow_id, &info.execution_id)
            .expect("a valid test prefix");
        let folder = task_run_prefix(&prefix, &info.task_id, &info.task_run_id)
            .expect("a valid test folder");
        let mut context = Map::new();
        context.insert(
            "flow".into(),
            json!({"id": info.flow_id, "namespace": info.namespace}),
        );
        context.insert("execution".into(), json!({"id": info.execution_id}));
        if let Value::Object(vars) = variables {
            context.extend(vars);
        }
        let files = ExecutionFiles { storage, prefix };
        Self {
            templates: TaskTemplates::new(Value::Object(context), Arc::new(files.clone())),
            info,
            storage: TaskStorage { files, folder },
            resources: Arc::new(SharedResources::new()),
            cancel: CancellationToken::new(),
            logs: Mutex::new(Vec::new()),
            labels: Mutex::new(Vec::new()),
        }
    }

    /// Every row of an ION file of this execution.
    pub async fn read_ion(&self, uri: &str) -> Vec<Value> {
        let file = self.storage.open(uri).await.expect("the ION file exists");
        let mut reader = IonReader::new(tokio::io::BufReader::new(file));
        let mut rows = Vec::new();
        while let Some(row) = reader.next().await.expect("valid ION") {
            rows.push(row);
        }
        rows
    }

    /// The messages logged so far at `level` or above.
    pub fn messages(&self) -> Vec<String> {
        self.logs.lock().iter().map(|(_, m)| m.clone()).collect()
    }
}

impl RunContext for TestRunContext {
    fn render(&self, property: &str, template: &str) -> Result<String, TaskError> {
        self.templates
            .render(template)
            .map_err(|e| render_error(property, e))
    }

    fn render_value(&self, property: &str, value: &Value) -> Result<Value, TaskError> {
        self.templates
            .render_value(value)
            .map_err(|e| render_error(property, e))
    }

    fn render_typed(&self, property: &str, value: &Value) -> Result<Value, TaskError> {
        self.templates
            .render_typed(value)
            .map_err(|e| render_error(property, e))
    }

    fn log(&self, level: LogLevel, message: String) {
        self.logs.lock().push((level, message));
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
        merge_labels(&mut self.labels.lock(), labels);
        Ok(())
    }
}

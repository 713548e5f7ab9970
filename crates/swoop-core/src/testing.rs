//! A [`RunContext`] for unit tests of tasks: a fixed template context, in-memory storage, its
//! own shared resources, and logs and labels collected in memory.

use std::sync::Arc;

use parking_lot::Mutex;
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

use crate::model::{Label, LogLevel};
use crate::registry::{RunContext, TaskError, TaskRunInfo};
use crate::resources::SharedResources;
use crate::storage::{
    ExecutionFiles, InternalStorage, MemoryStorage, TaskStorage, execution_prefix, task_run_prefix,
};
use crate::template::{Templates, with_files};

pub struct TestRunContext {
    pub context: Value,
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
        Self {
            context: Value::Object(context),
            info,
            storage: TaskStorage {
                files: ExecutionFiles { storage, prefix },
                folder,
            },
            resources: Arc::new(SharedResources::new()),
            cancel: CancellationToken::new(),
            logs: Mutex::new(Vec::new()),
            labels: Mutex::new(Vec::new()),
        }
    }

    /// The messages logged so far at `level` or above.
    pub fn messages(&self) -> Vec<String> {
        self.logs.lock().iter().map(|(_, m)| m.clone()).collect()
    }

    fn files(&self) -> Option<Arc<dyn crate::template::FileAccess>> {
        Some(Arc::new(self.storage.files.clone()))
    }
}

impl RunContext for TestRunContext {
    fn render(&self, property: &str, template: &str) -> Result<String, TaskError> {
        with_files(self.files(), || {
            Templates::global().render(template, &self.context)
        })
        .map_err(|e| TaskError::permanent(format!("property `{property}`: {e}")))
    }

    fn render_value(&self, property: &str, value: &Value) -> Result<Value, TaskError> {
        with_files(self.files(), || {
            Templates::global().render_value(value, &self.context)
        })
        .map_err(|e| TaskError::permanent(format!("property `{property}`: {e}")))
    }

    fn render_typed(&self, property: &str, value: &Value) -> Result<Value, TaskError> {
        with_files(self.files(), || {
            Templates::global().render_typed(value, &self.context)
        })
        .map_err(|e| TaskError::permanent(format!("property `{property}`: {e}")))
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
        let mut current = self.labels.lock();
        for label in labels {
            current.retain(|l| l.key != label.key);
            current.push(label);
        }
        Ok(())
    }
}

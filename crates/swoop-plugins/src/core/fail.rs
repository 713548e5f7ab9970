//! `io.kestra.plugin.core.execution.Fail`: fails (when `condition`, if given, renders true) with
//! `errorMessage`.

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{Map, Value};
use swoop_core::registry::{PropSpec, PropType, RunContext, RunnableTask, TaskError, TaskFactory};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Fail {
    #[serde(default)]
    condition: Option<Value>,
    #[serde(default)]
    error_message: Option<Value>,
}

#[async_trait]
impl RunnableTask for Fail {
    async fn run(&self, ctx: &dyn RunContext) -> Result<Map<String, Value>, TaskError> {
        if let Some(condition) = &self.condition {
            let rendered = ctx.render("condition", &swoop_core::flow::scalar_text(condition))?;
            if !swoop_core::template::is_truthy(&rendered) {
                return Ok(Map::new());
            }
        }
        let message = match &self.error_message {
            Some(m) => ctx.render("errorMessage", &swoop_core::flow::scalar_text(m))?,
            None => "Task failure".to_string(),
        };
        Err(TaskError::new(message))
    }
}

pub fn factory() -> TaskFactory {
    TaskFactory {
        type_names: &[
            "io.kestra.plugin.core.execution.Fail",
            "io.kestra.core.tasks.executions.Fail",
        ],
        properties: const {
            &[
                PropSpec::optional("condition", PropType::String),
                PropSpec::optional("errorMessage", PropType::String),
            ]
        },
        build: |_, v| super::runnable::<Fail>(v),
    }
}

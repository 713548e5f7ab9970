//! `io.kestra.plugin.core.debug.Return`: renders `format` into the output `value`.

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{Map, Value};
use swoop_core::registry::{PropSpec, PropType, RunContext, RunnableTask, TaskError, TaskFactory};

#[derive(Debug, Deserialize)]
pub struct Return {
    #[serde(default)]
    format: Option<Value>,
}

#[async_trait]
impl RunnableTask for Return {
    async fn run(&self, ctx: &dyn RunContext) -> Result<Map<String, Value>, TaskError> {
        let value = match &self.format {
            None | Some(Value::Null) => Value::Null,
            Some(f) => Value::String(ctx.render("format", &swoop_core::flow::scalar_text(f))?),
        };
        let mut outputs = Map::new();
        outputs.insert("value".into(), value);
        Ok(outputs)
    }
}

pub fn factory() -> TaskFactory {
    TaskFactory {
        type_names: &[
            "io.kestra.plugin.core.debug.Return",
            "io.kestra.core.tasks.debugs.Return",
        ],
        properties: const { &[PropSpec::optional("format", PropType::String)] },
        build: |_, v| super::runnable::<Return>(v),
    }
}

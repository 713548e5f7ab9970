//! `io.kestra.plugin.core.flow.Sleep`: waits `duration` (ISO-8601, e.g. PT5S). A kill stops it.

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{Map, Value};
use swoop_core::duration::parse_duration;
use swoop_core::registry::{PropSpec, PropType, RunContext, RunnableTask, TaskError, TaskFactory};

#[derive(Debug, Deserialize)]
pub struct Sleep {
    duration: String,
}

#[async_trait]
impl RunnableTask for Sleep {
    async fn run(&self, ctx: &dyn RunContext) -> Result<Map<String, Value>, TaskError> {
        let text = ctx.render("duration", &self.duration)?;
        let duration = parse_duration(&text)
            .map_err(|e| TaskError::new(format!("property `duration`: {e}")))?;
        tokio::time::sleep(duration).await;
        Ok(Map::new())
    }
}

pub fn factory() -> TaskFactory {
    TaskFactory {
        type_names: &[
            "io.kestra.plugin.core.flow.Sleep",
            "io.kestra.core.tasks.flows.Sleep",
        ],
        properties: const { &[PropSpec::required("duration", PropType::Duration)] },
        build: |_, v| super::runnable::<Sleep>(v),
    }
}

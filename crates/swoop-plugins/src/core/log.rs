//! `io.kestra.plugin.core.log.Log`: logs one message or several, at a level.

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{Map, Value};
use swoop_core::model::LogLevel;
use swoop_core::registry::{PropSpec, PropType, RunContext, RunnableTask, TaskError, TaskFactory};

#[derive(Debug, Deserialize)]
pub struct Log {
    message: Message,
    #[serde(default)]
    level: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Message {
    One(Value),
    Many(Vec<Value>),
}

fn text(v: &Value) -> String {
    swoop_core::flow::scalar_text(v)
}

#[async_trait]
impl RunnableTask for Log {
    async fn run(&self, ctx: &dyn RunContext) -> Result<Map<String, Value>, TaskError> {
        let level = match &self.level {
            None => LogLevel::Info,
            Some(l) => ctx.render("level", l)?.parse().map_err(TaskError::new)?,
        };
        let messages: Vec<String> = match &self.message {
            Message::One(m) => vec![text(m)],
            Message::Many(ms) => ms.iter().map(text).collect(),
        };
        for m in messages {
            let rendered = ctx.render("message", &m)?;
            ctx.log(level, rendered);
        }
        Ok(Map::new())
    }
}

pub fn factory() -> TaskFactory {
    TaskFactory {
        type_names: &[
            "io.kestra.plugin.core.log.Log",
            "io.kestra.core.tasks.log.Log",
        ],
        properties: const {
            &[
                PropSpec::required("message", PropType::StringOrList),
                PropSpec::optional(
                    "level",
                    PropType::Enum(&["TRACE", "DEBUG", "INFO", "WARN", "ERROR"]),
                ),
            ]
        },
        build: |_, v| super::runnable::<Log>(v),
    }
}

//! `io.kestra.plugin.core.execution.Labels`: merges labels into the running execution's labels
//! (same key: the new value wins). `labels` is a map, a list of `{key, value}`, or a string that
//! renders to a JSON object; `system.` keys are Kestra's own and refused.

use async_trait::async_trait;
use serde_json::{Map, Value};
use swoop_core::flow::scalar_text;
use swoop_core::model::Label;
use swoop_core::registry::{
    PropSpec, PropType, RunContext, RunnableTask, TaskError, TaskFactory, TaskKind,
};

const SYSTEM_PREFIX: &str = "system.";

#[derive(Debug)]
pub struct Labels {
    labels: Value,
}

#[async_trait]
impl RunnableTask for Labels {
    async fn run(&self, ctx: &dyn RunContext) -> Result<Map<String, Value>, TaskError> {
        let labels = resolve(ctx, &self.labels)?;
        if let Some(label) = labels.iter().find(|l| l.key.starts_with(SYSTEM_PREFIX)) {
            return Err(TaskError::permanent(format!(
                "`labels`: `{}` is a system label; labels starting with `{SYSTEM_PREFIX}` are set \
                 by the orchestrator only, pick another key",
                label.key
            )));
        }
        ctx.add_labels(labels)?;
        Ok(Map::new())
    }
}

/// The labels `value` stands for, rendered.
fn resolve(ctx: &dyn RunContext, value: &Value) -> Result<Vec<Label>, TaskError> {
    match value {
        Value::String(template) => {
            let rendered = ctx.render("labels", template)?;
            match serde_json::from_str::<Value>(&rendered) {
                // Rendered already: values are taken as they are.
                Ok(Value::Object(map)) => map
                    .iter()
                    .map(|(k, v)| label(k.clone(), json_text(v)))
                    .collect(),
                _ => Err(TaskError::permanent(format!(
                    "`labels`: a string must render to a JSON object such as {{\"key\": \"value\"}}, got `{rendered}`"
                ))),
            }
        }
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| label(ctx.render("labels", k)?, rendered_value(ctx, k, v)?))
            .collect(),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let (Some(key), Some(v)) = (item.get("key"), item.get("value")) else {
                    return Err(TaskError::permanent(format!(
                        "`labels[{i}]` must be a map with `key` and `value`"
                    )));
                };
                let key = ctx.render("labels", &scalar_text(key))?;
                let v = rendered_value(ctx, &key, v)?;
                label(key, v)
            })
            .collect(),
        other => Err(TaskError::permanent(format!(
            "`labels` must be a map, a list of {{key, value}} or a JSON string, got {other}"
        ))),
    }
}

fn label(key: String, value: Option<String>) -> Result<Label, TaskError> {
    let key = key.trim().to_string();
    if key.is_empty() {
        return Err(TaskError::permanent("`labels`: a label key is empty"));
    }
    let value = value.ok_or_else(|| {
        TaskError::permanent(format!("`labels`: label `{key}` has no value (null)"))
    })?;
    Ok(Label { key, value })
}

/// A value as label text: strings as they are, null as nothing, anything else as JSON.
fn json_text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// A written value, rendered: a string is rendered as text, a map or list has its strings
/// rendered and is then JSON-encoded, numbers and booleans are their text.
fn rendered_value(ctx: &dyn RunContext, key: &str, v: &Value) -> Result<Option<String>, TaskError> {
    let property = format!("labels.{key}");
    match v {
        Value::String(s) => ctx.render(&property, s).map(Some),
        Value::Object(_) | Value::Array(_) => Ok(json_text(&ctx.render_value(&property, v)?)),
        other => Ok(json_text(other)),
    }
}

fn build(v: &Value) -> Result<TaskKind, String> {
    let labels = v
        .get("labels")
        .filter(|x| !x.is_null())
        .cloned()
        .ok_or("`labels` is required")?;
    match &labels {
        Value::String(_) | Value::Object(_) => {}
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                if item.get("key").is_none() || item.get("value").is_none() {
                    return Err(format!(
                        "`labels[{i}]` must be a map with `key` and `value`"
                    ));
                }
            }
        }
        other => {
            return Err(format!(
                "`labels` must be a map, a list of {{key, value}} or a JSON string, got {other}"
            ));
        }
    }
    Ok(TaskKind::Runnable(std::sync::Arc::new(Labels { labels })))
}

pub fn factory() -> TaskFactory {
    TaskFactory {
        type_names: &[
            "io.kestra.plugin.core.execution.Labels",
            "io.kestra.core.tasks.executions.Labels",
        ],
        properties: const { &[PropSpec::required("labels", PropType::Any)] },
        build: |_, v| build(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use swoop_core::testing::TestRunContext;

    async fn run(labels: Value) -> Result<Vec<(String, String)>, TaskError> {
        let ctx = TestRunContext::new(json!({"inputs": {"customer": "acme", "n": 7}}));
        ctx.labels.lock().push(Label {
            key: "team".into(),
            value: "old".into(),
        });
        let TaskKind::Runnable(task) =
            build(&json!({"labels": labels})).map_err(TaskError::permanent)?
        else {
            unreachable!("Labels is runnable");
        };
        let out = task.run(&ctx).await?;
        assert!(out.is_empty(), "Labels has no outputs");
        let labels = ctx.labels.lock();
        Ok(labels
            .iter()
            .map(|l| (l.key.clone(), l.value.clone()))
            .collect())
    }

    fn pair(k: &str, v: &str) -> (String, String) {
        (k.to_string(), v.to_string())
    }

    #[tokio::test]
    async fn a_map_is_rendered_and_merged() {
        let labels = run(json!({
            "customer": "{{ inputs.customer }}",
            "team": "data",
            "count": 3,
            "meta": {"a": "{{ inputs.n }}"}
        }))
        .await
        .unwrap();
        assert_eq!(
            labels,
            vec![
                pair("customer", "acme"),
                pair("team", "data"),
                pair("count", "3"),
                pair("meta", r#"{"a":"7"}"#),
            ]
        );
    }

    #[tokio::test]
    async fn a_list_of_key_values() {
        let labels = run(json!([
            {"key": "order", "value": "{{ inputs.n }}"},
            {"key": "order", "value": "last wins"},
            {"key": "kind", "value": true}
        ]))
        .await
        .unwrap();
        assert_eq!(
            labels,
            vec![
                pair("team", "old"),
                pair("order", "last wins"),
                pair("kind", "true")
            ]
        );
        assert!(build(&json!({"labels": [{"key": "k"}]})).is_err());
    }

    #[tokio::test]
    async fn a_json_string() {
        let labels = run(json!(
            r#"{"customer": "{{ inputs.customer }}", "n": {{ inputs.n }}}"#
        ))
        .await
        .unwrap();
        assert_eq!(
            labels,
            vec![
                pair("team", "old"),
                pair("customer", "acme"),
                pair("n", "7")
            ]
        );
        let e = run(json!("not json")).await.unwrap_err();
        assert!(!e.retryable);
        assert!(e.message.contains("JSON object"), "{}", e.message);
    }

    #[tokio::test]
    async fn system_labels_are_refused() {
        for labels in [
            json!({"system.correlationId": "x"}),
            json!([{"key": "system.readOnly", "value": "true"}]),
            json!(r#"{"system.username": "me"}"#),
        ] {
            let e = run(labels).await.unwrap_err();
            assert!(!e.retryable);
            assert!(e.message.contains("system label"), "{}", e.message);
        }
        assert!(
            run(json!({"k": null}))
                .await
                .unwrap_err()
                .message
                .contains("no value")
        );
        assert!(build(&json!({"labels": 5})).is_err());
    }
}

//! The MongoDB family, through the official `mongodb` driver:
//! `io.kestra.plugin.mongodb.InsertOne`, `InsertMany` (a swoop addition), `Find`, `Update`
//! (with a swoop `upsert` option) and `Delete`.
//!
//! - [`connection`]: `connection.uri` / `database` / `collection`, the client shared per URI,
//!   error classification and password scrubbing;
//! - [`convert`]: document properties (JSON strings or maps, rendered first) → BSON, and BSON
//!   → output JSON as Kestra maps it;
//! - [`write`]: InsertOne, InsertMany, Update, Delete;
//! - [`find`]: Find (rows or an ION file).
//!
//! Not here yet: Kestra's `Aggregate`, `Bulk`, `Load` and the `Trigger` (unknown types are
//! refused by the validator). Kestra's `inserted.count` / `updated.count` metrics are not
//! emitted (swoop has no task metrics yet).

mod connection;
mod convert;
mod find;
mod write;

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde_json::Value;
use swoop_core::Registry;
use swoop_core::registry::{PropSpec, PropType, RunnableTask, TaskFactory, TaskKind};

use write::{DELETE_OPERATIONS, UPDATE_OPERATIONS};

/// A MongoDB task: what `build` checks without I/O (literal JSON, literal operation names).
trait MongoTask: RunnableTask + DeserializeOwned + 'static {
    fn check(&self) -> Result<(), String>;
}

fn build<T: MongoTask>(value: &Value) -> Result<TaskKind, String> {
    let task: T = serde_json::from_value(value.clone()).map_err(|e| e.to_string())?;
    task.check()?;
    Ok(TaskKind::Runnable(Arc::new(task)))
}

/// A property naming one of a fixed set of words (`operation`), possibly a template.
mod choice {
    use serde_json::Value;
    use swoop_core::flow::scalar_text;
    use swoop_core::registry::{RunContext, TaskError};

    use super::convert::is_template;

    fn parse(prop: &str, text: &str, allowed: &[&'static str]) -> Result<&'static str, String> {
        let wanted = text.trim();
        allowed
            .iter()
            .find(|a| a.eq_ignore_ascii_case(wanted))
            .copied()
            .ok_or_else(|| {
                format!(
                    "property `{prop}` must be one of {}, got `{wanted}`",
                    allowed.join(", ")
                )
            })
    }

    /// At build time: a literal value must be one of `allowed`.
    pub fn check(
        prop: &str,
        value: Option<&Value>,
        allowed: &[&'static str],
    ) -> Result<(), String> {
        match value {
            Some(v) if !v.is_null() => {
                let text = scalar_text(v);
                if is_template(&text) {
                    Ok(())
                } else {
                    parse(prop, &text, allowed).map(|_| ())
                }
            }
            _ => Ok(()),
        }
    }

    /// The rendered value; absent means the first of `allowed` (the default).
    pub fn render(
        ctx: &dyn RunContext,
        prop: &str,
        value: Option<&Value>,
        allowed: &[&'static str],
    ) -> Result<&'static str, TaskError> {
        match value {
            Some(v) if !v.is_null() => {
                let text = ctx.render(prop, &scalar_text(v))?;
                parse(prop, &text, allowed).map_err(TaskError::permanent)
            }
            _ => Ok(allowed[0]),
        }
    }
}

const CONNECTION: &[PropSpec] = &[PropSpec::required("uri", PropType::String)];

/// `connection`, `database`, `collection` followed by a task's own properties.
macro_rules! props {
    ($($extra:expr),* $(,)?) => {
        const {
            &[
                PropSpec::required("connection", PropType::Object(CONNECTION)),
                PropSpec::required("database", PropType::String),
                PropSpec::required("collection", PropType::String),
                $($extra),*
            ]
        }
    };
}

pub fn register(registry: &mut Registry) {
    registry.register_task(TaskFactory {
        type_names: &["io.kestra.plugin.mongodb.InsertOne"],
        properties: props![PropSpec::required("document", PropType::Any)],
        build: |_, v| build::<write::InsertOne>(v),
    });
    registry.register_task(TaskFactory {
        type_names: &["io.kestra.plugin.mongodb.InsertMany"],
        properties: props![PropSpec::required("documents", PropType::Any)],
        build: |_, v| build::<write::InsertMany>(v),
    });
    registry.register_task(TaskFactory {
        type_names: &["io.kestra.plugin.mongodb.Find"],
        properties: props![
            PropSpec::optional("filter", PropType::Any),
            PropSpec::optional("projection", PropType::Any),
            PropSpec::optional("sort", PropType::Any),
            PropSpec::optional("limit", PropType::Int),
            PropSpec::optional("skip", PropType::Int),
            PropSpec::optional("store", PropType::Bool),
        ],
        build: |_, v| build::<find::Find>(v),
    });
    registry.register_task(TaskFactory {
        type_names: &["io.kestra.plugin.mongodb.Update"],
        properties: props![
            PropSpec::required("document", PropType::Any),
            PropSpec::required("filter", PropType::Any),
            PropSpec::optional("operation", PropType::Enum(UPDATE_OPERATIONS)),
            PropSpec::optional("upsert", PropType::Bool),
        ],
        build: |_, v| build::<write::Update>(v),
    });
    registry.register_task(TaskFactory {
        type_names: &["io.kestra.plugin.mongodb.Delete"],
        properties: props![
            PropSpec::optional("filter", PropType::Any),
            PropSpec::optional("operation", PropType::Enum(DELETE_OPERATIONS)),
        ],
        build: |_, v| build::<write::Delete>(v),
    });
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    fn build(type_name: &str, props: serde_json::Value) -> Result<(), String> {
        let mut registry = swoop_core::Registry::new();
        super::register(&mut registry);
        let factory = registry.task(type_name).expect("registered");
        let base = json!({
            "id": "t", "type": type_name,
            "connection": {"uri": "mongodb://127.0.0.1:1/"},
            "database": "db", "collection": "c",
        });
        let task = crate::props::patched(base, props);
        (factory.build)(&registry, &task).map(|_| ())
    }

    #[test]
    fn build_checks_literals_without_connecting() {
        let insert = "io.kestra.plugin.mongodb.InsertOne";
        assert!(build(insert, json!({"document": {"a": 1}})).is_ok());
        assert!(build(insert, json!({"document": "{\"a\": {{ inputs.a }}}"})).is_ok());
        let e = build(insert, json!({"document": "{a: 1}"})).unwrap_err();
        assert!(e.contains("not valid JSON"), "{e}");
        let update = "io.kestra.plugin.mongodb.Update";
        let ok = json!({"document": {"$set": {"a": 1}}, "filter": {}, "operation": "update_many", "upsert": true});
        assert!(build(update, ok).is_ok());
        let e = build(
            update,
            json!({"document": {}, "filter": {}, "operation": "UPSERT"}),
        )
        .unwrap_err();
        assert!(
            e.contains("must be one of UPDATE_ONE, UPDATE_MANY, REPLACE_ONE"),
            "{e}"
        );
        assert!(
            build(
                update,
                json!({"document": {}, "filter": {}, "operation": "{{ inputs.op }}"})
            )
            .is_ok()
        );
        let delete = "io.kestra.plugin.mongodb.Delete";
        assert!(build(delete, json!({"operation": "DELETE_SOME"})).is_err());
        assert!(build(delete, json!({})).is_ok());
        let many = "io.kestra.plugin.mongodb.InsertMany";
        assert!(build(many, json!({"documents": "{\"a\": 1}"})).is_err());
        assert!(
            build(
                "io.kestra.plugin.mongodb.Find",
                json!({"sort": "{\"a\": -1}", "limit": 2})
            )
            .is_ok()
        );
    }
}

//! The tasks that write: InsertOne, InsertMany, Update (with swoop's `upsert`), Delete.

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use swoop_core::model::LogLevel;
use swoop_core::registry::{RunContext, RunnableTask, TaskError, render_as};

use super::connection::Common;
use super::convert::{self, check_literal, id_text};
use super::{MongoTask, choice};

pub const UPDATE_OPERATIONS: &[&str] = &["UPDATE_ONE", "UPDATE_MANY", "REPLACE_ONE"];
pub const DELETE_OPERATIONS: &[&str] = &["DELETE_ONE", "DELETE_MANY"];

fn log(ctx: &dyn RunContext, message: String) {
    tracing::debug!(task = %ctx.info().task_id, "{message}");
    ctx.log(LogLevel::Debug, message);
}

/// `io.kestra.plugin.mongodb.InsertOne`.
#[derive(Deserialize)]
pub struct InsertOne {
    #[serde(flatten)]
    common: Common,
    document: Value,
}

impl MongoTask for InsertOne {
    fn check(&self) -> Result<(), String> {
        check_literal("document", Some(&self.document), false)
    }
}

#[async_trait]
impl RunnableTask for InsertOne {
    async fn run(&self, ctx: &dyn RunContext) -> Result<Map<String, Value>, TaskError> {
        let document = convert::document(ctx, "document", Some(&self.document))?;
        let target = self.common.open(ctx).await?;
        let result = target
            .collection
            .insert_one(document)
            .await
            .map_err(|e| target.error("insert a document", &e))?;
        let id = id_text(result.inserted_id);
        log(ctx, format!("inserted document {id} into {}", target.label));
        Ok(outputs(json!({"insertedId": id, "wasAcknowledged": true})))
    }
}

/// `io.kestra.plugin.mongodb.InsertMany` (a swoop addition: Kestra inserts lists with `Bulk`
/// or `Load`).
#[derive(Deserialize)]
pub struct InsertMany {
    #[serde(flatten)]
    common: Common,
    documents: Value,
}

impl MongoTask for InsertMany {
    fn check(&self) -> Result<(), String> {
        check_literal("documents", Some(&self.documents), true)
    }
}

#[async_trait]
impl RunnableTask for InsertMany {
    async fn run(&self, ctx: &dyn RunContext) -> Result<Map<String, Value>, TaskError> {
        let documents = convert::documents(ctx, "documents", &self.documents)?;
        let target = self.common.open(ctx).await?;
        let result = target
            .collection
            .insert_many(&documents)
            .await
            .map_err(|e| target.error("insert documents", &e))?;
        let mut ids: Vec<(usize, bson::Bson)> = result.inserted_ids.into_iter().collect();
        ids.sort_by_key(|(i, _)| *i);
        let ids: Vec<String> = ids.into_iter().map(|(_, id)| id_text(id)).collect();
        log(
            ctx,
            format!("inserted {} documents into {}", ids.len(), target.label),
        );
        Ok(outputs(json!({
            "insertedIds": ids,
            "wasAcknowledged": true,
            "size": ids.len(),
        })))
    }
}

/// `io.kestra.plugin.mongodb.Update`, with `upsert` (a swoop addition; Kestra's Update has no
/// upsert option).
#[derive(Deserialize)]
pub struct Update {
    #[serde(flatten)]
    common: Common,
    document: Value,
    filter: Value,
    #[serde(default)]
    operation: Option<Value>,
    #[serde(default)]
    upsert: Option<Value>,
}

impl MongoTask for Update {
    fn check(&self) -> Result<(), String> {
        check_literal("document", Some(&self.document), false)?;
        check_literal("filter", Some(&self.filter), false)?;
        choice::check("operation", self.operation.as_ref(), UPDATE_OPERATIONS)
    }
}

#[async_trait]
impl RunnableTask for Update {
    async fn run(&self, ctx: &dyn RunContext) -> Result<Map<String, Value>, TaskError> {
        let operation =
            choice::render(ctx, "operation", self.operation.as_ref(), UPDATE_OPERATIONS)?;
        let upsert = match &self.upsert {
            None | Some(Value::Null) => false,
            Some(v) => render_as::<bool>(ctx, "upsert", v)?,
        };
        let document = convert::document(ctx, "document", Some(&self.document))?;
        let filter = convert::document(ctx, "filter", Some(&self.filter))?;
        let operators = document.keys().filter(|k| k.starts_with('$')).count();
        if operation == "REPLACE_ONE" && operators > 0 {
            return Err(TaskError::permanent(
                "property `document`: REPLACE_ONE takes a whole replacement document without update operators ($set …); use operation UPDATE_ONE to apply operators",
            ));
        }
        if operation != "REPLACE_ONE" && operators != document.len() {
            return Err(TaskError::permanent(format!(
                "property `document`: {operation} takes update operators only (e.g. {{\"$set\": {{…}}}}); to replace whole documents use operation REPLACE_ONE"
            )));
        }
        let target = self.common.open(ctx).await?;
        let coll = &target.collection;
        let result = match operation {
            "REPLACE_ONE" => coll.replace_one(filter, document).upsert(upsert).await,
            "UPDATE_MANY" => coll.update_many(filter, document).upsert(upsert).await,
            _ => coll.update_one(filter, document).upsert(upsert).await,
        }
        .map_err(|e| target.error(&format!("{operation} (upsert: {upsert})"), &e))?;
        log(
            ctx,
            format!(
                "{operation} on {}: matched {}, modified {}, upserted {}",
                target.label,
                result.matched_count,
                result.modified_count,
                result.upserted_id.is_some()
            ),
        );
        Ok(outputs(json!({
            "upsertedId": result.upserted_id.map(id_text),
            "wasAcknowledged": true,
            "matchedCount": result.matched_count,
            "modifiedCount": result.modified_count,
        })))
    }
}

/// `io.kestra.plugin.mongodb.Delete`.
#[derive(Deserialize)]
pub struct Delete {
    #[serde(flatten)]
    common: Common,
    #[serde(default)]
    filter: Option<Value>,
    #[serde(default)]
    operation: Option<Value>,
}

impl MongoTask for Delete {
    fn check(&self) -> Result<(), String> {
        check_literal("filter", self.filter.as_ref(), false)?;
        choice::check("operation", self.operation.as_ref(), DELETE_OPERATIONS)
    }
}

#[async_trait]
impl RunnableTask for Delete {
    async fn run(&self, ctx: &dyn RunContext) -> Result<Map<String, Value>, TaskError> {
        let operation =
            choice::render(ctx, "operation", self.operation.as_ref(), DELETE_OPERATIONS)?;
        let filter = convert::document(ctx, "filter", self.filter.as_ref())?;
        let target = self.common.open(ctx).await?;
        let coll = &target.collection;
        let result = if operation == "DELETE_MANY" {
            coll.delete_many(filter).await
        } else {
            coll.delete_one(filter).await
        }
        .map_err(|e| target.error(operation, &e))?;
        log(
            ctx,
            format!(
                "{operation} on {}: deleted {}",
                target.label, result.deleted_count
            ),
        );
        Ok(outputs(json!({
            "wasAcknowledged": true,
            "deletedCount": result.deleted_count,
        })))
    }
}

/// The output map of a `json!` object.
pub(super) fn outputs(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

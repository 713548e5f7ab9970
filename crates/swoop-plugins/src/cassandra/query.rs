//! `io.kestra.plugin.cassandra.standard.Query`: runs `cql` on the shared session and outputs,
//! by `fetchType` (or the deprecated `fetchOne` > `store` > `fetch`, which win over it, as in
//! Kestra): `row` and `size` (FETCH_ONE: the first row of the first page; no `row` and size 0
//! when there is none, where Kestra fails or says 1), `rows` and `size`
//! (FETCH: every page), `uri` and `size` (STORE: every page streamed into an ION file), or
//! nothing but `bytes` (NONE: the first page only). `bytes` is the size of the row data
//! received.
//!
//! Pages are fetched one request at a time (no background worker), so dropping the task's
//! future on kill or timeout stops the query between or inside requests.

use std::sync::Arc;

use async_trait::async_trait;
use scylla::client::session::Session;
use scylla::response::{PagingState, PagingStateResponse};
use scylla::statement::unprepared::Statement;
use scylla::value::Row;
use serde::Deserialize;
use serde_json::{Map, Value};
use swoop_core::ion::IonWriter;
use swoop_core::model::LogLevel;
use swoop_core::registry::{
    RunContext, RunnableTask, TaskError, TaskKind, render_as, shared_resource,
};

use super::FETCH_TYPES;
use super::cells;
use super::session::{SessionProps, SessionSettings, abbreviate, execution_error};

/// Rows per page.
const PAGE_SIZE: i32 = 1000;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Query {
    session: SessionProps,
    cql: Value,
    #[serde(default)]
    fetch_type: Option<Value>,
    #[serde(default)]
    fetch_one: Option<Value>,
    #[serde(default)]
    store: Option<Value>,
    #[serde(default)]
    fetch: Option<Value>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum FetchType {
    FetchOne,
    Fetch,
    Store,
    None,
}

pub fn build(value: &Value) -> Result<TaskKind, String> {
    let task: Query = serde_json::from_value(value.clone()).map_err(|e| e.to_string())?;
    task.session.check()?;
    Ok(TaskKind::Runnable(Arc::new(task)))
}

/// The shared driver session.
struct CqlSession(Session);

/// A deprecated boolean flag (`fetchOne`, `store`, `fetch`), false when absent.
fn flag(ctx: &dyn RunContext, name: &str, v: &Option<Value>) -> Result<bool, TaskError> {
    match v.as_ref().filter(|v| !v.is_null()) {
        None => Ok(false),
        Some(v) => render_as::<bool>(ctx, name, v),
    }
}

impl Query {
    fn fetch_type(&self, ctx: &dyn RunContext) -> Result<FetchType, TaskError> {
        if flag(ctx, "fetchOne", &self.fetch_one)? {
            return Ok(FetchType::FetchOne);
        }
        if flag(ctx, "store", &self.store)? {
            return Ok(FetchType::Store);
        }
        if flag(ctx, "fetch", &self.fetch)? {
            return Ok(FetchType::Fetch);
        }
        let Some(v) = self.fetch_type.as_ref().filter(|v| !v.is_null()) else {
            return Ok(FetchType::None);
        };
        let text = ctx.render("fetchType", &swoop_core::flow::scalar_text(v))?;
        match text.trim().to_ascii_uppercase().as_str() {
            "FETCH_ONE" => Ok(FetchType::FetchOne),
            "FETCH" => Ok(FetchType::Fetch),
            "STORE" => Ok(FetchType::Store),
            "NONE" => Ok(FetchType::None),
            other => Err(TaskError::permanent(format!(
                "property `fetchType`: `{other}` is not one of {}",
                FETCH_TYPES.join(", ")
            ))),
        }
    }
}

/// Where the rows of the pages go.
enum Sink {
    One(Option<Map<String, Value>>),
    All(Vec<Value>),
    File(IonWriter<swoop_core::storage::FileWriter>, String),
    Nothing,
}

impl Sink {
    /// Whether rows after the first page are wanted.
    fn wants_more(&self) -> bool {
        matches!(self, Sink::All(_) | Sink::File(..))
    }
}

#[async_trait]
impl RunnableTask for Query {
    async fn run(&self, ctx: &dyn RunContext) -> Result<Map<String, Value>, TaskError> {
        let settings: SessionSettings = self.session.render(ctx)?;
        let cql = ctx.render("cql", &swoop_core::flow::scalar_text(&self.cql))?;
        let fetch_type = self.fetch_type(ctx)?;
        let hosts = settings.hosts();
        let session = shared_resource::<CqlSession, _, _>(ctx, &settings.key(), || async {
            settings.connect().await.map(CqlSession)
        })
        .await?;

        let mut sink = match fetch_type {
            FetchType::FetchOne => Sink::One(None),
            FetchType::Fetch => Sink::All(Vec::new()),
            FetchType::Store => {
                let (uri, writer) =
                    ctx.storage().create("result.ion").await.map_err(|e| {
                        TaskError::new(format!("cannot create the result file: {e}"))
                    })?;
                Sink::File(IonWriter::new(writer), uri)
            }
            FetchType::None => Sink::Nothing,
        };

        let statement = Statement::new(cql.clone()).with_page_size(PAGE_SIZE);
        let mut paging = PagingState::start();
        let mut bytes: u64 = 0;
        let mut rows_seen: u64 = 0;
        loop {
            let (result, next) = session
                .0
                .query_single_page(statement.clone(), (), paging)
                .await
                .map_err(|e| execution_error(&hosts, &cql, &e))?;
            // A statement without rows (INSERT, CREATE …) ends here.
            let Ok(rows) = result.into_rows_result() else {
                break;
            };
            bytes += rows.rows_bytes_size() as u64;
            let specs = rows.column_specs();
            if let Some(spec) = specs.iter().find(|s| cells::has_udt(s.typ())) {
                return Err(TaskError::permanent(format!(
                    "column `{}` is of a user-defined type, which the Query task cannot output \
                     (Kestra refuses it too); select its fields instead (`SELECT {}.field …`)",
                    spec.name(),
                    spec.name()
                )));
            }
            let names: Vec<String> = specs.iter().map(|s| s.name().to_owned()).collect();
            let iter = rows
                .rows::<Row>()
                .map_err(|e| TaskError::permanent(format!("cannot read the rows: {e}")))?;
            for row in iter {
                let row =
                    row.map_err(|e| TaskError::permanent(format!("cannot read a row: {e}")))?;
                rows_seen += 1;
                match &mut sink {
                    Sink::One(first) => {
                        if first.is_none() {
                            *first = Some(convert_row(&names, &row)?);
                        }
                    }
                    Sink::All(all) => all.push(Value::Object(convert_row(&names, &row)?)),
                    Sink::File(writer, _) => {
                        let value = Value::Object(convert_row(&names, &row)?);
                        writer.write_row(&value).await.map_err(|e| {
                            TaskError::new(format!("cannot write the result file: {e}"))
                        })?;
                    }
                    Sink::Nothing => {}
                }
            }
            match next {
                PagingStateResponse::HasMorePages { state } if sink.wants_more() => paging = state,
                _ => break,
            }
        }

        tracing::debug!(hosts = %hosts, fetch_type = ?fetch_type, rows = rows_seen, bytes, cql = %abbreviate(&cql), "cassandra query done");
        let mut outputs = Map::new();
        match sink {
            Sink::One(row) => {
                outputs.insert("size".into(), Value::from(u64::from(row.is_some())));
                if let Some(row) = row {
                    outputs.insert("row".into(), Value::Object(row));
                }
            }
            Sink::All(rows) => {
                outputs.insert("size".into(), Value::from(rows.len()));
                outputs.insert("rows".into(), Value::Array(rows));
            }
            Sink::File(writer, uri) => {
                let (count, _) = writer
                    .finish()
                    .await
                    .map_err(|e| TaskError::new(format!("cannot write the result file: {e}")))?;
                outputs.insert("uri".into(), Value::String(uri));
                outputs.insert("size".into(), Value::from(count));
            }
            Sink::Nothing => ctx.log(LogLevel::Info, "FetchType is NONE".into()),
        }
        outputs.insert("bytes".into(), Value::from(bytes));
        Ok(outputs)
    }
}

fn convert_row(names: &[String], row: &Row) -> Result<Map<String, Value>, TaskError> {
    let mut map = Map::new();
    for (name, cell) in names.iter().zip(&row.columns) {
        let value = cells::to_json(cell.as_ref())
            .map_err(|e| TaskError::permanent(format!("column `{name}` holds {e}")))?;
        map.insert(name.clone(), value);
    }
    Ok(map)
}

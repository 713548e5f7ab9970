//! The Query task both drivers share: Kestra's common JDBC properties, `fetchType` (and the
//! deprecated booleans), `:name` parameters, the outputs and the ION file of `STORE`.
//!
//! A driver ([`Driver`]) parses its URL, owns its pool and runs the [`Plan`] this module
//! renders, pushing converted rows into a [`Sink`].

use std::sync::Arc;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{Map, Value};
use swoop_core::ion::IonWriter;
use swoop_core::model::LogLevel;
use swoop_core::registry::{RunContext, RunnableTask, TaskError, TaskKind, render_as};
use swoop_core::storage::FileWriter;

use super::sql::{self, Dialect};
use super::values::Zone;

/// The properties of every JDBC Query, then the driver's own (`$extra`).
macro_rules! query_properties {
    ($($extra:expr),* $(,)?) => {
        const { &[
            PropSpec::required("url", PropType::String),
            PropSpec::optional("username", PropType::String),
            PropSpec::optional("password", PropType::String),
            PropSpec::required("sql", PropType::String),
            PropSpec::optional("parameters", PropType::Map),
            PropSpec::optional(
                "fetchType",
                PropType::Enum(&["FETCH_ONE", "FETCH", "STORE", "NONE"]),
            ),
            PropSpec::optional("fetch", PropType::Bool),
            PropSpec::optional("fetchOne", PropType::Bool),
            PropSpec::optional("store", PropType::Bool),
            PropSpec::optional("fetchSize", PropType::Int),
            PropSpec::optional("afterSQL", PropType::String),
            PropSpec::optional("timeZoneId", PropType::String),
            PropSpec::optional("connectionPooling", PropType::Bool),
            PropSpec::optional("connectionPoolSize", PropType::Int),
            PropSpec::optional("outputFiles", PropType::List),
            $($extra,)*
        ] }
    };
}
pub(crate) use query_properties;

/// Kestra's default `fetchSize`.
pub const DEFAULT_FETCH_SIZE: i32 = 10_000;
/// Kestra's default `connectionPoolSize`.
pub const DEFAULT_POOL_SIZE: usize = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FetchType {
    FetchOne,
    Fetch,
    Store,
    None,
}

/// One statement to run: driver placeholders, values in placeholder order.
#[derive(Debug, Clone)]
pub struct Statement {
    pub text: String,
    pub params: Vec<Value>,
}

/// Where to connect, rendered.
#[derive(Clone)]
pub struct Connection {
    pub url: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub pooling: bool,
    pub pool_size: usize,
}

impl Connection {
    /// The shared-resource key of the pool: every connection setting, credentials included
    /// (keys are never shown).
    pub fn pool_key(&self) -> String {
        format!(
            "{}\u{0}{}\u{0}{}\u{0}{}",
            self.url,
            self.username.as_deref().unwrap_or(""),
            self.password.as_deref().unwrap_or(""),
            self.pool_size
        )
    }
}

/// Everything a driver needs for one run.
pub struct Plan {
    pub sql: Statement,
    pub after_sql: Option<Statement>,
    pub fetch: FetchType,
    pub fetch_size: i32,
    pub zone: Zone,
    pub connection: Connection,
}

/// A database driver behind the Query task.
#[async_trait]
pub trait Driver: Send + Sync + Sized + 'static {
    const DIALECT: Dialect;
    /// The driver's own properties, refusing what it does not support.
    fn build(v: &Value) -> Result<Self, String>;
    /// Checks a `url` written as is (not a template) when the flow is built, refusing what the
    /// driver does not support.
    fn check_url(url: &str) -> Result<(), String>;
    /// Runs `plan` (parsing its rendered URL), pushing rows into `sink`; returns whether the
    /// statement produced a result set (a `SELECT`, `RETURNING` …).
    async fn execute(
        &self,
        ctx: &dyn RunContext,
        plan: &Plan,
        sink: &mut Sink,
    ) -> Result<bool, TaskError>;
}

/// The common properties, as written (templates are rendered at run time).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Props {
    url: Value,
    username: Option<Value>,
    password: Option<Value>,
    sql: Value,
    parameters: Option<Value>,
    fetch_type: Option<Value>,
    fetch: Option<Value>,
    fetch_one: Option<Value>,
    store: Option<Value>,
    fetch_size: Option<Value>,
    #[serde(rename = "afterSQL")]
    after_sql: Option<Value>,
    time_zone_id: Option<Value>,
    connection_pooling: Option<Value>,
    connection_pool_size: Option<Value>,
}

pub struct Query<D: Driver> {
    props: Props,
    driver: D,
}

/// A literal (not templated) text value.
fn literal(v: &Value) -> Option<&str> {
    v.as_str()
        .filter(|s| !s.contains("{{") && !s.contains("{%"))
}

fn present(v: &Option<Value>) -> Option<&Value> {
    v.as_ref().filter(|x| !x.is_null())
}

/// Builds the task, checking what can be checked without I/O.
pub fn build<D: Driver>(v: &Value) -> Result<TaskKind, String> {
    if v.get("outputFiles").is_some_and(|x| !x.is_null()) {
        return Err(
            "`outputFiles` only applies to embedded databases (DuckDB, SQLite); remove it".into(),
        );
    }
    let props: Props = serde_json::from_value(v.clone()).map_err(|e| e.to_string())?;
    if let Some(url) = literal(&props.url) {
        D::check_url(url)?;
    }
    for (name, text) in [
        ("sql", Some(&props.sql)),
        ("afterSQL", props.after_sql.as_ref()),
    ] {
        if let Some(text) = text.and_then(literal) {
            sql::check_single_statement(text, D::DIALECT, name)?;
        }
    }
    if let Some(zone) = present(&props.time_zone_id).and_then(literal) {
        Zone::parse(zone)?;
    }
    if let Some(size) = present(&props.fetch_size).and_then(Value::as_i64) {
        check_fetch_size(size, D::DIALECT).map_err(|e| e.message)?;
    }
    if let Some(size) = present(&props.connection_pool_size).and_then(Value::as_i64) {
        check_pool_size(size).map_err(|e| e.message)?;
    }
    let driver = D::build(v)?;
    Ok(TaskKind::Runnable(Arc::new(Query { props, driver })))
}

fn check_fetch_size(size: i64, dialect: Dialect) -> Result<i32, TaskError> {
    match i32::try_from(size) {
        Ok(n) if n > 0 => Ok(n),
        // Connector/J's "stream the rows" marker; MySQL rows always stream here.
        Ok(i32::MIN) if dialect == Dialect::MySql => Ok(DEFAULT_FETCH_SIZE),
        _ => Err(TaskError::permanent(format!(
            "`fetchSize` must be a positive number of rows, got {size}"
        ))),
    }
}

fn check_pool_size(size: i64) -> Result<usize, TaskError> {
    match usize::try_from(size) {
        Ok(n) if (1..=1000).contains(&n) => Ok(n),
        _ => Err(TaskError::permanent(format!(
            "`connectionPoolSize` must be between 1 and 1000, got {size}"
        ))),
    }
}

impl Props {
    fn text(
        &self,
        ctx: &dyn RunContext,
        name: &str,
        v: Option<&Value>,
    ) -> Result<Option<String>, TaskError> {
        match v.filter(|x| !x.is_null()) {
            None => Ok(None),
            Some(Value::String(s)) => ctx.render(name, s).map(Some),
            Some(other) => Ok(Some(swoop_core::flow::scalar_text(other))),
        }
    }

    fn flag(
        &self,
        ctx: &dyn RunContext,
        name: &str,
        v: &Option<Value>,
    ) -> Result<Option<bool>, TaskError> {
        present(v)
            .map(|x| render_as::<bool>(ctx, name, x))
            .transpose()
    }

    /// Kestra's precedence: the deprecated `fetch`, then `fetchOne`, then `store`, then
    /// `fetchType` (default `NONE`).
    fn fetch_type(&self, ctx: &dyn RunContext) -> Result<FetchType, TaskError> {
        for (name, v, fetch) in [
            ("fetch", &self.fetch, FetchType::Fetch),
            ("fetchOne", &self.fetch_one, FetchType::FetchOne),
            ("store", &self.store, FetchType::Store),
        ] {
            if self.flag(ctx, name, v)? == Some(true) {
                return Ok(fetch);
            }
        }
        match self.text(ctx, "fetchType", present(&self.fetch_type))? {
            None => Ok(FetchType::None),
            Some(t) => {
                serde_json::from_value(Value::String(t.to_ascii_uppercase())).map_err(|_| {
                    TaskError::permanent(format!(
                        "`fetchType`: `{t}` is not one of FETCH_ONE, FETCH, STORE, NONE"
                    ))
                })
            }
        }
    }

    fn statement(
        &self,
        ctx: &dyn RunContext,
        name: &str,
        text: &str,
        dialect: Dialect,
        params: &Map<String, Value>,
    ) -> Result<Statement, TaskError> {
        let rendered = ctx.render(name, text)?;
        sql::check_single_statement(&rendered, dialect, name).map_err(TaskError::permanent)?;
        if params.is_empty() {
            // As Kestra: without parameters the text is sent as written.
            return Ok(Statement {
                text: rendered,
                params: Vec::new(),
            });
        }
        let translated = sql::translate(&rendered, dialect);
        let values = translated
            .names
            .iter()
            .map(|n| {
                params.get(n).cloned().ok_or_else(|| {
                    let known: Vec<&str> = params.keys().map(String::as_str).collect();
                    TaskError::permanent(format!(
                        "`{name}` uses the placeholder `:{n}`, which `parameters` does not define (it defines {}); add it to `parameters`",
                        known.join(", ")
                    ))
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Statement {
            text: translated.sql,
            params: values,
        })
    }

    fn plan(&self, ctx: &dyn RunContext, dialect: Dialect) -> Result<Plan, TaskError> {
        let params = match present(&self.parameters) {
            None => Map::new(),
            Some(p) => match ctx.render_typed("parameters", p)? {
                Value::Object(map) => map,
                Value::Null => Map::new(),
                other => {
                    return Err(TaskError::permanent(format!(
                        "`parameters` must be a map of names to values, got {other}"
                    )));
                }
            },
        };
        let sql_template = match &self.sql {
            Value::String(s) => s.clone(),
            other => swoop_core::flow::scalar_text(other),
        };
        let sql = self.statement(ctx, "sql", &sql_template, dialect, &params)?;
        let after_sql = match present(&self.after_sql).and_then(Value::as_str) {
            Some(text) => Some(self.statement(ctx, "afterSQL", text, dialect, &params)?),
            None => None,
        };
        let fetch_size = match present(&self.fetch_size) {
            Some(v) => check_fetch_size(render_as::<i64>(ctx, "fetchSize", v)?, dialect)?,
            None => DEFAULT_FETCH_SIZE,
        };
        let zone = match self.text(ctx, "timeZoneId", present(&self.time_zone_id))? {
            Some(id) => Zone::parse(&id).map_err(TaskError::permanent)?,
            None => Zone::Local,
        };
        let pool_size = match present(&self.connection_pool_size) {
            Some(v) => check_pool_size(render_as::<i64>(ctx, "connectionPoolSize", v)?)?,
            None => DEFAULT_POOL_SIZE,
        };
        // Kestra renders SQL with the rendered `sql` before the URL; the order matters not.
        let url = self.text(ctx, "url", Some(&self.url))?.unwrap_or_default();
        Ok(Plan {
            sql,
            after_sql,
            fetch: self.fetch_type(ctx)?,
            fetch_size,
            zone,
            connection: Connection {
                url,
                username: self.text(ctx, "username", present(&self.username))?,
                password: self.text(ctx, "password", present(&self.password))?,
                pooling: self
                    .flag(ctx, "connectionPooling", &self.connection_pooling)?
                    .unwrap_or(true),
                pool_size,
            },
        })
    }
}

#[async_trait]
impl<D: Driver> RunnableTask for Query<D> {
    async fn run(&self, ctx: &dyn RunContext) -> Result<Map<String, Value>, TaskError> {
        let plan = self.props.plan(ctx, D::DIALECT)?;
        ctx.log(
            LogLevel::Debug,
            format!("Starting query: {}", plan.sql.text),
        );
        tracing::debug!(fetch_type = ?plan.fetch, params = plan.sql.params.len(), "jdbc query");
        let mut sink = Sink::open(ctx, plan.fetch).await?;
        let had_result_set = self.driver.execute(ctx, &plan, &mut sink).await?;
        sink.finish(had_result_set).await
    }
}

/// Where rows go, by fetch type: nowhere, the first one, all of them, or an ION file.
pub enum Sink {
    None,
    One(Option<Map<String, Value>>),
    All(Vec<Value>),
    Store {
        uri: String,
        writer: IonWriter<FileWriter>,
    },
}

impl Sink {
    pub async fn open(ctx: &dyn RunContext, fetch: FetchType) -> Result<Sink, TaskError> {
        Ok(match fetch {
            FetchType::None => Sink::None,
            FetchType::FetchOne => Sink::One(None),
            FetchType::Fetch => Sink::All(Vec::new()),
            FetchType::Store => {
                let (uri, file) = ctx.storage().create("result.ion").await.map_err(|e| {
                    TaskError::new(format!(
                        "cannot create the result file in internal storage: {e}"
                    ))
                })?;
                Sink::Store {
                    uri,
                    writer: IonWriter::new(file),
                }
            }
        })
    }

    /// Whether the driver should read rows at all.
    pub fn wants_rows(&self) -> bool {
        !matches!(self, Sink::None)
    }

    /// Adds a row; returns whether more rows are wanted.
    pub async fn push(&mut self, row: Map<String, Value>) -> Result<bool, TaskError> {
        match self {
            Sink::None => Ok(false),
            Sink::One(slot) => {
                *slot = Some(row);
                Ok(false)
            }
            Sink::All(rows) => {
                rows.push(Value::Object(row));
                Ok(true)
            }
            Sink::Store { writer, .. } => {
                writer
                    .write_row(&Value::Object(row))
                    .await
                    .map_err(|e| TaskError::new(format!("cannot write the result file: {e}")))?;
                Ok(true)
            }
        }
    }

    /// The task's outputs: `row` (FETCH_ONE, even when null), `rows` (FETCH), `uri` (STORE),
    /// `size`. A statement without a result set outputs only `size: 0` (and `row: null`).
    pub async fn finish(self, had_result_set: bool) -> Result<Map<String, Value>, TaskError> {
        let mut out = Map::new();
        let size = match self {
            Sink::None => 0,
            Sink::One(row) => {
                let size = u64::from(row.is_some());
                out.insert("row".into(), row.map_or(Value::Null, Value::Object));
                size
            }
            Sink::All(rows) if had_result_set => {
                let size = rows.len() as u64;
                out.insert("rows".into(), Value::Array(rows));
                size
            }
            Sink::All(_) => 0,
            Sink::Store { uri, writer } if had_result_set => {
                let (rows, _) = writer
                    .finish()
                    .await
                    .map_err(|e| TaskError::new(format!("cannot complete the result file: {e}")))?;
                out.insert("uri".into(), Value::String(uri));
                rows
            }
            // Dropped unfinished: no file.
            Sink::Store { .. } => 0,
        };
        out.insert("size".into(), Value::from(size));
        Ok(out)
    }
}

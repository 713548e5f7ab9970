//! `io.kestra.plugin.jdbc.postgresql.Query` on `tokio-postgres`: the JDBC URL, connections
//! (pooled, cancelled on the server when a run is killed), parameters sent as text (the server
//! casts them to the placeholder's type, as JDBC's `setObject` with a string does), cells
//! decoded from the binary format into Kestra's JSON shapes, and SQLSTATE classification.
//!
//! `STORE` runs in a transaction through a portal: `fetchSize` rows per round trip, so the
//! result is never in memory whole. TLS is not supported: `ssl: true`, `sslMode` beyond
//! `PREFER` and the certificate properties are refused.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use futures::{TryStreamExt, pin_mut};
use serde_json::{Map, Value};
use swoop_core::registry::{PropSpec, PropType, RunContext, TaskError, TaskFactory};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, GenericClient, NoTls, Row};

use super::pg_values::{PgParam, Raw, decode};
use super::pool::{Connect, lease};
use super::query::{self, Driver, FetchType, Plan, Sink, query_properties};
use super::sql::Dialect;
use super::url::{JdbcUrl, bool_param};
use super::values::Zone;

pub const TYPE: &str = "io.kestra.plugin.jdbc.postgresql.Query";

pub fn factory() -> TaskFactory {
    TaskFactory {
        type_names: &[TYPE],
        properties: query_properties![
            PropSpec::optional("ssl", PropType::Bool),
            PropSpec::optional(
                "sslMode",
                PropType::Enum(&[
                    "DISABLE",
                    "ALLOW",
                    "PREFER",
                    "REQUIRE",
                    "VERIFY_CA",
                    "VERIFY_FULL"
                ]),
            ),
            PropSpec::optional("sslRootCert", PropType::String),
            PropSpec::optional("sslCert", PropType::String),
            PropSpec::optional("sslKey", PropType::String),
            PropSpec::optional("sslKeyPassword", PropType::String),
        ],
        build: |_, v| query::build::<Postgres>(v),
    }
}

const NO_TLS: &str = "swoop's PostgreSQL client does not do TLS; connect over a trusted network (or a local TLS tunnel) and remove it";

/// The driver; it has no state of its own (connections live in shared pools).
pub struct Postgres;

#[async_trait]
impl Driver for Postgres {
    const DIALECT: Dialect = Dialect::Postgres;

    fn build(v: &Value) -> Result<Self, String> {
        match v.get("ssl") {
            None | Some(Value::Null) | Some(Value::Bool(false)) => {}
            Some(Value::String(s)) if s == "false" => {}
            Some(_) => return Err(format!("`ssl`: {NO_TLS}")),
        }
        if let Some(mode) = v.get("sslMode").and_then(Value::as_str) {
            check_ssl_mode(mode).map_err(|e| format!("`sslMode`: {e}"))?;
        }
        for name in ["sslRootCert", "sslCert", "sslKey", "sslKeyPassword"] {
            if v.get(name).is_some_and(|x| !x.is_null()) {
                return Err(format!("`{name}`: {NO_TLS}"));
            }
        }
        Ok(Postgres)
    }

    fn check_url(url: &str) -> Result<(), String> {
        PgTarget::parse(url, None, None).map(|_| ())
    }

    async fn execute(
        &self,
        ctx: &dyn RunContext,
        plan: &Plan,
        sink: &mut Sink,
    ) -> Result<bool, TaskError> {
        let c = &plan.connection;
        let mut lease = lease(ctx, c, || {
            let target = PgTarget::parse(&c.url, c.username.as_deref(), c.password.as_deref())
                .map_err(TaskError::permanent)?;
            if target.config.get_user().is_none() {
                return Err(TaskError::permanent(
                    "no user: set `username` (or `user=` in the `url`)",
                ));
            }
            Ok(PgConnect::new(target))
        })
        .await?;
        lease.busy();
        let target = lease.conn().target.clone();
        match run(lease.conn(), plan, sink).await {
            Ok(had_result_set) => {
                lease.idle();
                Ok(had_result_set)
            }
            Err(Failure::Db(e, what)) => {
                lease.conn().statements.clear();
                if e.as_db_error().is_some() {
                    // The server answered: the connection is in a clean state (a failed
                    // transaction is rolled back when dropped).
                    lease.idle();
                }
                Err(classify(&e, what, &target))
            }
            // Anything else (a cell we cannot read, storage) leaves the lease busy: the
            // statement is cancelled and the connection closed.
            Err(Failure::Task(e)) => Err(e),
        }
    }
}

fn check_ssl_mode(mode: &str) -> Result<(), String> {
    match mode.to_ascii_lowercase().replace('_', "-").as_str() {
        "disable" | "allow" | "prefer" => Ok(()),
        other => Err(format!("`{other}` needs TLS: {NO_TLS}")),
    }
}

/// Where and as whom to connect, from `jdbc:postgresql://host[:port][,host2…]/db?…` and the
/// `username`/`password` properties (which win over the URL's `user`/`password`).
#[derive(Clone)]
struct PgTarget {
    config: tokio_postgres::Config,
    /// `host:port/db`, for messages.
    label: String,
}

impl PgTarget {
    fn parse(
        url: &str,
        username: Option<&str>,
        password: Option<&str>,
    ) -> Result<PgTarget, String> {
        let jdbc = JdbcUrl::parse(url, &["postgresql"], 5432)?;
        let mut config = tokio_postgres::Config::new();
        for (host, port) in &jdbc.hosts {
            config.host(host).port(*port);
        }
        if let Some(db) = &jdbc.database {
            config.dbname(db);
        }
        config.connect_timeout(Duration::from_secs(10));
        let mut user = None;
        let mut url_password = None;
        let mut options = Vec::new();
        for (key, value) in &jdbc.params {
            match key.as_str() {
                "user" => user = Some(value.clone()),
                "password" => url_password = Some(value.clone()),
                "sslmode" => check_ssl_mode(value).map_err(|e| format!("`url`: sslmode {e}"))?,
                "ssl" if !bool_param(key, value)? => {}
                "ssl" => return Err(format!("`url`: ssl=true: {NO_TLS}")),
                "ApplicationName" => {
                    config.application_name(value);
                }
                "connectTimeout" | "loginTimeout" => {
                    let secs: u64 = value.parse().map_err(|_| {
                        format!("`url`: `{key}` must be a number of seconds, got `{value}`")
                    })?;
                    if secs > 0 {
                        config.connect_timeout(Duration::from_secs(secs));
                    }
                }
                "tcpKeepAlive" => {
                    config.keepalives(bool_param(key, value)?);
                }
                "currentSchema" => options.push(format!("-c search_path={value}")),
                "options" => options.push(value.clone()),
                other => {
                    return Err(format!(
                        "`url`: the parameter `{other}` is not supported (supported: user, password, sslmode=disable|allow|prefer, ssl=false, ApplicationName, connectTimeout, loginTimeout, tcpKeepAlive, currentSchema, options); remove it"
                    ));
                }
            }
        }
        if !options.is_empty() {
            config.options(options.join(" "));
        }
        if let Some(u) = username.map(str::to_string).or(user) {
            config.user(&u);
        }
        if let Some(p) = password.map(str::to_string).or(url_password) {
            config.password(p);
        }
        Ok(PgTarget {
            config,
            label: jdbc.label(),
        })
    }
}

struct PgConnect {
    target: PgTarget,
}

impl PgConnect {
    fn new(target: PgTarget) -> Self {
        Self { target }
    }
}

/// A connection and its prepared statements (by SQL text).
struct PgConn {
    client: Client,
    statements: HashMap<String, tokio_postgres::Statement>,
    target: String,
}

/// Prepared statements kept per connection (then the cache starts over).
const STATEMENT_CACHE: usize = 100;

impl PgConn {
    async fn prepare(
        &mut self,
        sql: &str,
    ) -> Result<tokio_postgres::Statement, tokio_postgres::Error> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let statement = self.client.prepare(sql).await?;
        if self.statements.len() >= STATEMENT_CACHE {
            self.statements.clear();
        }
        self.statements.insert(sql.to_string(), statement.clone());
        Ok(statement)
    }
}

#[async_trait]
impl Connect for PgConnect {
    type Conn = PgConn;

    async fn connect(&self) -> Result<PgConn, TaskError> {
        let (client, connection) = self
            .target
            .config
            .connect(NoTls)
            .await
            .map_err(|e| classify(&e, "connecting", &self.target.label))?;
        let label = self.target.label.clone();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(target = %label, error = %e, "postgres connection ended");
            }
        });
        tracing::debug!(target = %self.target.label, "postgres connection opened");
        Ok(PgConn {
            client,
            statements: HashMap::new(),
            target: self.target.label.clone(),
        })
    }

    async fn alive(&self, conn: &mut PgConn, round_trip: bool) -> bool {
        !conn.client.is_closed() && (!round_trip || conn.client.simple_query("").await.is_ok())
    }

    fn abandon(&self, conn: PgConn) {
        let token = conn.client.cancel_token();
        let label = self.target.label.clone();
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let cancelled = tokio::time::timeout(Duration::from_secs(10), token.cancel_query(NoTls)).await;
                tracing::debug!(target = %label, ok = matches!(cancelled, Ok(Ok(()))), "postgres statement cancelled");
                drop(conn);
            });
        }
    }

    fn target(&self) -> &str {
        &self.target.label
    }
}

enum Failure {
    /// A driver error, and what was running.
    Db(tokio_postgres::Error, &'static str),
    Task(TaskError),
}

impl From<TaskError> for Failure {
    fn from(e: TaskError) -> Self {
        Failure::Task(e)
    }
}

fn db(what: &'static str) -> impl Fn(tokio_postgres::Error) -> Failure {
    move |e| Failure::Db(e, what)
}

async fn run(conn: &mut PgConn, plan: &Plan, sink: &mut Sink) -> Result<bool, Failure> {
    let statement = conn
        .prepare(&plan.sql.text)
        .await
        .map_err(db("preparing `sql`"))?;
    let after = match &plan.after_sql {
        Some(a) => Some((
            conn.prepare(&a.text)
                .await
                .map_err(db("preparing `afterSQL`"))?,
            a,
        )),
        None => None,
    };
    let has_result_set = !statement.columns().is_empty();
    let store = plan.fetch == FetchType::Store && has_result_set;
    let params: Vec<PgParam> = plan.sql.params.iter().map(PgParam).collect();
    let params: Vec<&(dyn ToSql + Sync)> =
        params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
    if !store && after.is_none() {
        read(&conn.client, &statement, &params, plan.zone, sink).await?;
        return Ok(has_result_set);
    }
    let tx = conn.client.transaction().await.map_err(db("BEGIN"))?;
    if store {
        let portal = tx
            .bind(&statement, &params)
            .await
            .map_err(db("running `sql`"))?;
        loop {
            let rows = tx
                .query_portal(&portal, plan.fetch_size)
                .await
                .map_err(db("fetching rows"))?;
            let complete = rows.len() < plan.fetch_size as usize;
            for row in &rows {
                sink.push(row_to_map(&statement, row, plan.zone)?).await?;
            }
            if complete {
                break;
            }
        }
    } else {
        read(&tx, &statement, &params, plan.zone, sink).await?;
    }
    if let Some((after_statement, after_sql)) = after {
        let after_params: Vec<PgParam> = after_sql.params.iter().map(PgParam).collect();
        tx.execute_raw(
            &after_statement,
            after_params.iter().map(|p| p as &(dyn ToSql + Sync)),
        )
        .await
        .map_err(db("running `afterSQL`"))?;
    }
    tx.commit().await.map_err(db("COMMIT"))?;
    Ok(has_result_set)
}

/// Runs `statement`, reading rows into `sink` unless it wants none.
async fn read<C: GenericClient>(
    client: &C,
    statement: &tokio_postgres::Statement,
    params: &[&(dyn ToSql + Sync)],
    zone: Zone,
    sink: &mut Sink,
) -> Result<(), Failure> {
    if !sink.wants_rows() || statement.columns().is_empty() {
        client
            .execute_raw(statement, params.iter().copied())
            .await
            .map_err(db("running `sql`"))?;
        return Ok(());
    }
    let rows = client
        .query_raw(statement, params.iter().copied())
        .await
        .map_err(db("running `sql`"))?;
    pin_mut!(rows);
    while let Some(row) = rows.try_next().await.map_err(db("fetching rows"))? {
        if !sink.push(row_to_map(statement, &row, zone)?).await? {
            break;
        }
    }
    Ok(())
}

fn row_to_map(
    statement: &tokio_postgres::Statement,
    row: &Row,
    zone: Zone,
) -> Result<Map<String, Value>, TaskError> {
    let mut map = Map::new();
    for (i, column) in statement.columns().iter().enumerate() {
        let raw: Raw = row
            .try_get(i)
            .map_err(|e| TaskError::permanent(format!("column `{}`: {e}", column.name())))?;
        let value = match raw.0 {
            None => Value::Null,
            Some(bytes) => decode(column.type_(), bytes, zone).map_err(|e| {
                TaskError::permanent(format!(
                    "column `{}` ({}): {e}; cast it in the SQL, e.g. `{}::text`",
                    column.name(),
                    column.type_().name(),
                    column.name()
                ))
            })?,
        };
        map.insert(column.name().to_string(), value);
    }
    Ok(map)
}

/// Whether an error with this SQLSTATE may go away: connection trouble, deadlocks and
/// serialization failures, too many connections, a server shutting down, a cancelled or
/// timed-out statement, a lock not available, a prepared plan outdated by a schema change.
fn retryable(code: &str, message: &str) -> bool {
    matches!(&code[..2.min(code.len())], "08" | "40" | "53" | "58")
        || code.starts_with("57P")
        || matches!(code, "57014" | "55P03")
        || (code == "0A000" && message.contains("cached plan"))
}

/// A driver error as a task error: the server's message, SQLSTATE, detail and hint; retryable
/// or not by SQLSTATE (no SQLSTATE: I/O, refused connection, closed socket → retryable).
fn classify(e: &tokio_postgres::Error, what: &str, target: &str) -> TaskError {
    match e.as_db_error() {
        Some(db) => {
            let code = db.code().code();
            let mut message = format!(
                "PostgreSQL {target}: {what} failed: {} (SQLSTATE {code})",
                db.message()
            );
            if let Some(detail) = db.detail() {
                message.push_str(&format!("; {detail}"));
            }
            if let Some(hint) = db.hint() {
                message.push_str(&format!("; hint: {hint}"));
            }
            if retryable(code, db.message()) {
                TaskError::new(message)
            } else {
                TaskError::permanent(message)
            }
        }
        None => TaskError::new(format!(
            "PostgreSQL {target}: {what} failed: {}",
            crate::props::error_chain(e)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_map_known_parameters_and_refuse_the_rest() {
        let t = PgTarget::parse(
            "jdbc:postgresql://db.example:5433/orders?user=u&password=s%40cret&sslmode=disable&currentSchema=app",
            None,
            None,
        )
        .unwrap();
        assert_eq!(t.label, "db.example:5433/orders");
        assert_eq!(t.config.get_user(), Some("u"));
        assert_eq!(t.config.get_password(), Some(&b"s@cret"[..]));
        assert_eq!(t.config.get_options(), Some("-c search_path=app"));
        let t = PgTarget::parse("jdbc:postgresql://h/db?user=u", Some("other"), None).unwrap();
        assert_eq!(t.config.get_user(), Some("other"), "`username` wins");
        let err = PgTarget::parse("jdbc:postgresql://h/db?sslmode=require", Some("u"), None)
            .err()
            .unwrap();
        assert!(err.contains("TLS"), "{err}");
        let err = PgTarget::parse("jdbc:postgresql://h/db?prepareThreshold=0", Some("u"), None)
            .err()
            .unwrap();
        assert!(
            err.contains("prepareThreshold") && err.contains("supported"),
            "{err}"
        );
        assert!(PgTarget::parse("jdbc:mysql://h/db", Some("u"), None).is_err());
    }

    #[test]
    fn sqlstates_split_retryable_from_permanent() {
        assert!(retryable("40P01", "deadlock detected"));
        assert!(retryable("40001", "could not serialize"));
        assert!(retryable("08006", ""));
        assert!(retryable("57P01", "terminating connection"));
        assert!(!retryable("42601", "syntax error"));
        assert!(!retryable("42P01", "relation does not exist"));
        assert!(!retryable("23505", "duplicate key"));
        assert!(!retryable("28P01", "password authentication failed"));
    }
}

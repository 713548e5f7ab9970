//! `io.kestra.plugin.jdbc.mysql.Query` (MySQL and MariaDB) on `mysql_async`: the JDBC URL,
//! connections (pooled; a killed run's statement is ended with `KILL` from a second
//! connection), statements prepared and run over the binary protocol with `?` parameters,
//! rows streamed one at a time (`STORE` never holds the result), cells shaped as Kestra's
//! MySQL converter (Connector/J) does, error codes and SQLSTATEs classified.
//!
//! Sessions run with `time_zone = '+00:00'`, so `TIMESTAMP` values are exact instants (`…Z`).
//! TLS and `LOAD DATA LOCAL INFILE` (`inputFile`) are not supported and refused.

use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use mysql_async::consts::{ColumnFlags, ColumnType};
use mysql_async::prelude::Queryable;
use mysql_async::{Column, Conn, Opts, OptsBuilder, Params, Row};
use serde_json::{Map, Value};
use swoop_core::registry::{PropSpec, PropType, RunContext, TaskError, TaskFactory};

use super::pool::{Connect, lease};
use super::query::{self, Driver, Plan, Sink, Statement, query_properties};
use super::sql::Dialect;
use super::url::{JdbcUrl, bool_param};
use super::values;

pub const TYPE: &str = "io.kestra.plugin.jdbc.mysql.Query";

pub fn factory() -> TaskFactory {
    TaskFactory {
        type_names: &[TYPE],
        properties: query_properties![PropSpec::optional("inputFile", PropType::String)],
        build: |_, v| query::build::<MySql>(v),
    }
}

const NO_TLS: &str = "swoop's MySQL client does not do TLS; connect over a trusted network (or a local TLS tunnel) and remove it";

pub struct MySql;

#[async_trait]
impl Driver for MySql {
    const DIALECT: Dialect = Dialect::MySql;

    fn build(v: &Value) -> Result<Self, String> {
        if v.get("inputFile").is_some_and(|x| !x.is_null()) {
            return Err("`inputFile` (LOAD DATA LOCAL INFILE) is not supported; load the file with INSERT statements (e.g. a ForEach over its rows) instead".into());
        }
        Ok(MySql)
    }

    fn check_url(url: &str) -> Result<(), String> {
        MyTarget::parse(url, None, None).map(|_| ())
    }

    async fn execute(
        &self,
        ctx: &dyn RunContext,
        plan: &Plan,
        sink: &mut Sink,
    ) -> Result<bool, TaskError> {
        let c = &plan.connection;
        let mut lease = lease(ctx, c, || {
            let target = MyTarget::parse(&c.url, c.username.as_deref(), c.password.as_deref())
                .map_err(TaskError::permanent)?;
            if target.opts.user().is_none() {
                return Err(TaskError::permanent(
                    "no user: set `username` (or `user=` in the `url`)",
                ));
            }
            Ok(target)
        })
        .await?;
        let label = lease.target().to_owned();
        lease.busy();
        match run(lease.conn(), plan, sink).await {
            Ok(had_result_set) => {
                lease.idle();
                Ok(had_result_set)
            }
            Err(Failure::Db(e, what)) => {
                // A server error leaves the connection usable (transactions are rolled back
                // in `run`); anything else (I/O, protocol) closes it.
                if matches!(e, mysql_async::Error::Server(_)) {
                    lease.idle();
                }
                Err(classify(&e, what, &label))
            }
            Err(Failure::Task(e)) => Err(e),
        }
    }
}

/// Where and as whom to connect, from `jdbc:mysql://host[:port]/db?…` (or `jdbc:mariadb:`)
/// and `username`/`password` (which win over the URL's `user`/`password`).
struct MyTarget {
    opts: Opts,
    connect_timeout: Duration,
    label: String,
}

impl MyTarget {
    fn parse(
        url: &str,
        username: Option<&str>,
        password: Option<&str>,
    ) -> Result<MyTarget, String> {
        let jdbc = JdbcUrl::parse(url, &["mysql", "mariadb"], 3306)?;
        let [(host, port)] = jdbc.hosts.as_slice() else {
            return Err("`url`: several hosts (failover) are not supported; name one".into());
        };
        let mut user = None;
        let mut url_password = None;
        let mut connect_timeout = Duration::from_secs(10);
        let mut keepalive = None;
        for (key, value) in &jdbc.params {
            let lower = value.to_ascii_lowercase();
            match key.as_str() {
                "user" => user = Some(value.clone()),
                "password" => url_password = Some(value.clone()),
                "useSSL" | "requireSSL" if !bool_param(key, value)? => {}
                "sslMode" if matches!(lower.as_str(), "disabled" | "preferred") => {}
                "useSSL" | "requireSSL" | "sslMode" => {
                    return Err(format!("`url`: {key}={value}: {NO_TLS}"));
                }
                "allowPublicKeyRetrieval" if bool_param(key, value)? => {}
                "useUnicode" if bool_param(key, value)? => {}
                "characterEncoding"
                    if matches!(lower.replace('-', "").as_str(), "utf8" | "utf8mb4") => {}
                "serverTimezone" | "connectionTimeZone"
                    if matches!(lower.as_str(), "utc" | "gmt" | "z" | "+00:00") => {}
                "connectTimeout" => {
                    let ms: u64 = value.parse().map_err(|_| {
                        format!("`url`: `connectTimeout` must be milliseconds, got `{value}`")
                    })?;
                    if ms > 0 {
                        connect_timeout = Duration::from_millis(ms);
                    }
                }
                "tcpKeepAlive" => {
                    keepalive = bool_param(key, value)?.then_some(Duration::from_secs(60));
                }
                other => {
                    return Err(format!(
                        "`url`: the parameter `{other}` (with this value) is not supported (supported: user, password, useSSL=false, sslMode=DISABLED|PREFERRED, allowPublicKeyRetrieval=true, useUnicode=true, characterEncoding=utf8, serverTimezone=UTC, connectTimeout, tcpKeepAlive); remove it"
                    ));
                }
            }
        }
        let user = username.map(str::to_string).or(user);
        let opts = OptsBuilder::default()
            .ip_or_hostname(host.clone())
            .tcp_port(*port)
            .user(user)
            .pass(password.map(str::to_string).or(url_password))
            .db_name(jdbc.database.clone())
            .prefer_socket(false)
            .tcp_keepalive(keepalive)
            .init(vec!["SET time_zone = '+00:00'"]);
        Ok(MyTarget {
            opts: opts.into(),
            connect_timeout,
            label: jdbc.label(),
        })
    }

    async fn open(&self) -> Result<Conn, TaskError> {
        match tokio::time::timeout(self.connect_timeout, Conn::new(self.opts.clone())).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) => Err(classify(&e, "connecting", &self.label)),
            Err(_) => Err(TaskError::new(format!(
                "MySQL {}: connecting timed out after {:?}",
                self.label, self.connect_timeout
            ))),
        }
    }
}

#[async_trait]
impl Connect for MyTarget {
    type Conn = Conn;

    async fn connect(&self) -> Result<Conn, TaskError> {
        let conn = self.open().await?;
        tracing::debug!(target = %self.label, id = conn.id(), "mysql connection opened");
        Ok(conn)
    }

    async fn alive(&self, conn: &mut Conn, round_trip: bool) -> bool {
        !round_trip || conn.ping().await.is_ok()
    }

    fn abandon(&self, conn: Conn) {
        let id = conn.id();
        let opts = self.opts.clone();
        let label = self.label.clone();
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let killed = async {
                    let mut killer = Conn::new(opts).await?;
                    killer.query_drop(format!("KILL {id}")).await?;
                    killer.disconnect().await
                };
                let killed = tokio::time::timeout(Duration::from_secs(10), killed).await;
                tracing::debug!(target = %label, id, ok = matches!(killed, Ok(Ok(()))), "mysql connection killed");
                drop(conn);
            });
        }
    }

    fn target(&self) -> &str {
        &self.label
    }
}

enum Failure {
    Db(mysql_async::Error, &'static str),
    Task(TaskError),
}

impl From<TaskError> for Failure {
    fn from(e: TaskError) -> Self {
        Failure::Task(e)
    }
}

fn db(what: &'static str) -> impl Fn(mysql_async::Error) -> Failure {
    move |e| Failure::Db(e, what)
}

fn params(values: &[Value]) -> Params {
    if values.is_empty() {
        return Params::Empty;
    }
    Params::Positional(
        values
            .iter()
            .map(|v| match v {
                Value::Null => mysql_async::Value::NULL,
                Value::Bool(b) => mysql_async::Value::Int(i64::from(*b)),
                Value::Number(n) => match (n.as_i64(), n.as_u64()) {
                    (Some(i), _) => mysql_async::Value::Int(i),
                    (None, Some(u)) => mysql_async::Value::UInt(u),
                    _ => mysql_async::Value::Double(n.as_f64().unwrap_or(f64::NAN)),
                },
                Value::String(s) => mysql_async::Value::Bytes(s.clone().into_bytes()),
                other => mysql_async::Value::Bytes(other.to_string().into_bytes()),
            })
            .collect(),
    )
}

/// Runs the plan; with `afterSQL`, both statements in one transaction (rolled back on error).
async fn run(conn: &mut Conn, plan: &Plan, sink: &mut Sink) -> Result<bool, Failure> {
    let Some(after) = &plan.after_sql else {
        return statement(conn, &plan.sql, sink).await;
    };
    conn.query_drop("START TRANSACTION")
        .await
        .map_err(db("START TRANSACTION"))?;
    let result = async {
        let had_result_set = statement(conn, &plan.sql, sink).await?;
        conn.exec_drop(after.text.as_str(), params(&after.params))
            .await
            .map_err(db("running `afterSQL`"))?;
        conn.query_drop("COMMIT").await.map_err(db("COMMIT"))?;
        Ok::<bool, Failure>(had_result_set)
    }
    .await;
    if result.is_err() {
        conn.query_drop("ROLLBACK").await.map_err(db("ROLLBACK"))?;
    }
    result
}

async fn statement(conn: &mut Conn, st: &Statement, sink: &mut Sink) -> Result<bool, Failure> {
    let mut result = conn
        .exec_iter(st.text.as_str(), params(&st.params))
        .await
        .map_err(db("running `sql`"))?;
    let has_result_set = result.columns().is_some_and(|c| !c.is_empty());
    if has_result_set && sink.wants_rows() {
        'sets: while let Some(mut rows) =
            result.stream::<Row>().await.map_err(db("fetching rows"))?
        {
            while let Some(row) = rows.next().await {
                let row = row.map_err(db("fetching rows"))?;
                if !sink.push(row_to_map(&row)?).await? {
                    break 'sets;
                }
            }
        }
    }
    result.drop_result().await.map_err(db("fetching rows"))?;
    Ok(has_result_set)
}

fn row_to_map(row: &Row) -> Result<Map<String, Value>, TaskError> {
    let mut map = Map::new();
    for (i, column) in row.columns_ref().iter().enumerate() {
        let value = row.as_ref(i).map_or(Value::Null, |v| decode(column, v));
        map.insert(column.name_str().into_owned(), value);
    }
    Ok(map)
}

/// One cell, as Kestra's MySQL converter (through Connector/J) shapes it.
fn decode(column: &Column, value: &mysql_async::Value) -> Value {
    use mysql_async::Value as V;
    let ty = column.column_type();
    let unsigned = column.flags().contains(ColumnFlags::UNSIGNED_FLAG);
    match value {
        V::NULL => Value::Null,
        // TINYINT(1) is a boolean (Connector/J's tinyInt1isBit), YEAR a date.
        V::Int(i) if ty == ColumnType::MYSQL_TYPE_TINY && column.column_length() == 1 => {
            Value::Bool(*i != 0)
        }
        V::Int(i) if ty == ColumnType::MYSQL_TYPE_YEAR => format!("{i:04}-01-01").into(),
        V::Int(i) => Value::from(*i),
        // BIGINT UNSIGNED is a BigInteger, which Kestra shows as text.
        V::UInt(u) if ty == ColumnType::MYSQL_TYPE_LONGLONG && unsigned => u.to_string().into(),
        V::UInt(u) => Value::from(*u),
        V::Float(f) => values::float(f.to_string().parse().unwrap_or(f64::from(*f))),
        V::Double(d) => values::float(*d),
        V::Date(y, mo, d, h, mi, s, us) => {
            let date = format!("{y:04}-{mo:02}-{d:02}");
            if matches!(
                ty,
                ColumnType::MYSQL_TYPE_DATE | ColumnType::MYSQL_TYPE_NEWDATE
            ) {
                return date.into();
            }
            let micros = (u64::from(*h) * 3600 + u64::from(*mi) * 60 + u64::from(*s)) * 1_000_000
                + u64::from(*us);
            let zulu = matches!(
                ty,
                ColumnType::MYSQL_TYPE_TIMESTAMP | ColumnType::MYSQL_TYPE_TIMESTAMP2
            );
            format!(
                "{date}T{}{}",
                values::time_of_day(false, micros),
                if zulu { "Z" } else { "" }
            )
            .into()
        }
        V::Time(negative, days, h, mi, s, us) => {
            let seconds = u64::from(*days) * 86_400
                + u64::from(*h) * 3600
                + u64::from(*mi) * 60
                + u64::from(*s);
            values::time_of_day(*negative, seconds * 1_000_000 + u64::from(*us)).into()
        }
        V::Bytes(b) => decode_bytes(column, ty, b),
    }
}

fn decode_bytes(column: &Column, ty: ColumnType, b: &[u8]) -> Value {
    use ColumnType as T;
    let text = || String::from_utf8_lossy(b).into_owned();
    match ty {
        T::MYSQL_TYPE_DECIMAL | T::MYSQL_TYPE_NEWDECIMAL => values::decimal(&text()),
        T::MYSQL_TYPE_BIT if column.column_length() == 1 => {
            Value::Bool(b.last().is_some_and(|x| *x != 0))
        }
        T::MYSQL_TYPE_BIT | T::MYSQL_TYPE_GEOMETRY => values::bytes(b),
        // Values the text protocol would send as text.
        T::MYSQL_TYPE_TINY
        | T::MYSQL_TYPE_SHORT
        | T::MYSQL_TYPE_LONG
        | T::MYSQL_TYPE_INT24
        | T::MYSQL_TYPE_LONGLONG
        | T::MYSQL_TYPE_FLOAT
        | T::MYSQL_TYPE_DOUBLE => values::decimal(&text()),
        // Binary strings and BLOBs (charset 63, `binary`) are bytes; JSON is text, as
        // Connector/J returns it.
        _ if column.character_set() == 63 && ty != T::MYSQL_TYPE_JSON => values::bytes(b),
        _ => Value::String(text()),
    }
}

/// Whether a server error may go away: SQLSTATE classes 08 (connection) and 40 (deadlock,
/// serialization), lock wait timeout (1205), too many connections (1040, 1203), shutdown
/// (1053), an interrupted or timed-out statement (1317, 1927, 3024, 1969).
fn retryable_server(code: u16, state: &str) -> bool {
    state.starts_with("08")
        || state.starts_with("40")
        || matches!(code, 1205 | 1040 | 1203 | 1053 | 1317 | 1927 | 3024 | 1969)
}

fn classify(e: &mysql_async::Error, what: &str, target: &str) -> TaskError {
    use mysql_async::{DriverError as D, Error as E};
    let retryable = match e {
        E::Server(s) => retryable_server(s.code, &s.state),
        E::Io(_) | E::Other(_) => true,
        E::Driver(d) => matches!(
            d,
            D::ConnectionClosed
                | D::PacketOutOfOrder
                | D::PoolDisconnected
                | D::UnexpectedPacket { .. }
                | D::BadCompressedPacketHeader
        ),
        E::Url(_) => false,
    };
    let detail = match e {
        E::Server(s) => format!("{} (error {}, SQLSTATE {})", s.message, s.code, s.state),
        other => crate::props::error_chain(other),
    };
    let message = format!("MySQL {target}: {what} failed: {detail}");
    if retryable {
        TaskError::new(message)
    } else {
        TaskError::permanent(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_map_known_parameters_and_refuse_the_rest() {
        let t = MyTarget::parse(
            "jdbc:mysql://db:3307/shop?user=u&password=p%3Dq&useSSL=false&serverTimezone=UTC",
            None,
            None,
        )
        .unwrap();
        assert_eq!(t.label, "db:3307/shop");
        assert_eq!(t.opts.user(), Some("u"));
        assert_eq!(t.opts.pass(), Some("p=q"));
        assert_eq!(t.opts.db_name(), Some("shop"));
        let t = MyTarget::parse("jdbc:mariadb://db/shop", Some("me"), Some("pw")).unwrap();
        assert_eq!((t.opts.user(), t.opts.tcp_port()), (Some("me"), 3306));
        let err = MyTarget::parse("jdbc:mysql://db/x?useSSL=true", Some("u"), None)
            .err()
            .unwrap();
        assert!(err.contains("TLS"), "{err}");
        let err = MyTarget::parse(
            "jdbc:mysql://db/x?rewriteBatchedStatements=true",
            Some("u"),
            None,
        )
        .err()
        .unwrap();
        assert!(err.contains("rewriteBatchedStatements"), "{err}");
        assert!(MyTarget::parse("jdbc:mysql://a,b/x", Some("u"), None).is_err());
    }

    #[test]
    fn error_codes_split_retryable_from_permanent() {
        assert!(retryable_server(1213, "40001"), "deadlock");
        assert!(retryable_server(1205, "HY000"), "lock wait timeout");
        assert!(retryable_server(1040, "08004"), "too many connections");
        assert!(!retryable_server(1064, "42000"), "syntax error");
        assert!(!retryable_server(1146, "42S02"), "no such table");
        assert!(!retryable_server(1062, "23000"), "duplicate key");
        assert!(!retryable_server(1045, "28000"), "access denied");
    }
}

//! The snapshot: the captured tables' existing rows, read in one consistent transaction whose
//! binlog position is known, each as a `READ` (`op: r`) change; streaming then starts from that
//! position, so nothing between the snapshot and the stream is missed.
//!
//! MariaDB gives the position of a consistent snapshot directly (`START TRANSACTION WITH
//! CONSISTENT SNAPSHOT`, then the `binlog_snapshot_file` / `binlog_snapshot_position` status);
//! MySQL holds `FLUSH TABLES WITH READ LOCK` while it opens the transaction and reads the
//! position (as Debezium does).
//!
//! Before the first row, the checkpoint says "snapshot at P in progress". A snapshot cut short
//! (a crash, a stop) is done again on the next run with the same position P in its rows' dedup
//! keys (`mysql:snapshot:<file>:<pos>:<db>.<table>:<primary key>`), so rows already recorded
//! make no second execution, and streaming starts from P: a change made between the two
//! attempts arrives as its own event, never lost. Once every row is recorded the checkpoint
//! becomes the binlog position P.

use futures::StreamExt;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row};
use serde_json::{Map, Value};
use swoop_core::realtime::{Ack, SourceContext, SourceError};

use super::checkpoint::{BinlogPos, Checkpoint};
use super::source::{MysqlCdcSource, classify, current_position, event, source_block};
use super::values::{Kind, json};
use crate::debezium::{Change, Op, now_us};

fn quote(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// The position of the transaction just opened, consistent with what it reads.
async fn open(conn: &mut Conn, mariadb: bool) -> Result<BinlogPos, SourceError> {
    let e = |what: &'static str| move |e: mysql_async::Error| classify(what, &e);
    for s in [
        "SET SESSION time_zone = '+00:00'",
        "SET SESSION net_write_timeout = 3600",
        "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ",
    ] {
        conn.query_drop(s)
            .await
            .map_err(e("preparing the snapshot"))?;
    }
    if mariadb {
        conn.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT")
            .await
            .map_err(e("opening the snapshot"))?;
        let status: Vec<(String, String)> = conn
            .query("SHOW STATUS LIKE 'binlog_snapshot_%'")
            .await
            .map_err(e("reading the snapshot's binlog position"))?;
        let get = |n: &str| {
            status
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(n))
                .map(|(_, v)| v.clone())
        };
        match (
            get("binlog_snapshot_file"),
            get("binlog_snapshot_position").and_then(|p| p.parse().ok()),
        ) {
            (Some(file), Some(pos)) if !file.is_empty() => Ok(BinlogPos { file, pos }),
            _ => Err(SourceError::Fatal(
                "MySQL CDC: MariaDB gave no binlog_snapshot_file/position: is the binary log on?"
                    .into(),
            )),
        }
    } else {
        conn.query_drop("FLUSH TABLES WITH READ LOCK")
            .await
            .map_err(e("locking the tables for the snapshot (needs RELOAD)"))?;
        let opened = conn
            .query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT")
            .await
            .map_err(e("opening the snapshot"));
        let pos = match opened {
            Ok(()) => current_position(conn).await,
            Err(err) => Err(err),
        };
        conn.query_drop("UNLOCK TABLES")
            .await
            .map_err(e("unlocking the tables"))?;
        pos
    }
}

/// The captured base tables, with their primary-key columns in order.
async fn tables(
    conn: &mut Conn,
    src: &MysqlCdcSource,
) -> Result<Vec<(String, String, Vec<String>)>, SourceError> {
    let all: Vec<(String, String)> = conn
        .query(
            "SELECT table_schema, table_name FROM information_schema.tables \
             WHERE table_type = 'BASE TABLE' \
             AND table_schema NOT IN ('mysql', 'information_schema', 'performance_schema', 'sys') \
             ORDER BY table_schema, table_name",
        )
        .await
        .map_err(|e| classify("listing the tables to snapshot", &e))?;
    let keys: Vec<(String, String, String)> = conn
        .query(
            "SELECT table_schema, table_name, column_name FROM information_schema.key_column_usage \
             WHERE constraint_name = 'PRIMARY' ORDER BY table_schema, table_name, ordinal_position",
        )
        .await
        .map_err(|e| classify("reading the primary keys", &e))?;
    Ok(all
        .into_iter()
        .filter(|(db, t)| src.config.common.captures(db, t))
        .map(|(db, t)| {
            let pk = keys
                .iter()
                .filter(|(d, n, _)| *d == db && *n == t)
                .map(|(_, _, c)| c.clone())
                .collect();
            (db, t, pk)
        })
        .collect())
}

/// Counts the snapshot's recorded rows.
#[derive(Default)]
struct Recorded(tokio::sync::watch::Sender<u64>);

/// Runs the snapshot (again, with the dedup keys of `from`, when one was cut short); returns
/// where streaming starts, or `None` when the trigger stopped first.
pub(super) async fn run(
    src: &MysqlCdcSource,
    ctx: &SourceContext,
    store: &dyn swoop_core::realtime::SourceState,
    key: &str,
    name: &str,
    mariadb: bool,
    from: Option<BinlogPos>,
) -> Result<Option<BinlogPos>, SourceError> {
    let mut conn = Conn::new(src.opts()?)
        .await
        .map_err(|e| classify("cannot connect for the snapshot", &e))?;
    let at = open(&mut conn, mariadb).await?;
    let id = from.unwrap_or(at);
    store
        .save(key, &Checkpoint::Snapshot(id.clone()).to_text())
        .await
        .map_err(SourceError::Transient)?;
    let tables = tables(&mut conn, src).await?;
    tracing::info!(file = %id.file, pos = id.pos, tables = tables.len(), "mysql cdc: snapshot");
    let recorded = std::sync::Arc::new(Recorded::default());
    let mut emitted = 0u64;
    let started_ms = now_us() / 1000;
    for (db, table, pk) in &tables {
        let sql = format!("SELECT * FROM {}.{}", quote(db), quote(table));
        let mut result = conn
            .exec_iter(sql.as_str(), ())
            .await
            .map_err(|e| classify(&format!("reading {db}.{table}"), &e))?;
        let Some(mut rows) = result
            .stream::<Row>()
            .await
            .map_err(|e| classify(&format!("reading {db}.{table}"), &e))?
        else {
            continue;
        };
        let mut ordinal = 0u64;
        while let Some(row) = rows.next().await {
            let row = row.map_err(|e| classify(&format!("reading {db}.{table}"), &e))?;
            let columns = row.columns();
            let values = row.unwrap();
            let mut after = Map::new();
            let mut row_key = Map::new();
            for (c, v) in columns.iter().zip(values) {
                let col = c.name_str().into_owned();
                let mut kind = Kind::of(c.column_type(), c.character_set(), c.flags());
                if let Kind::Bit { bits } = &mut kind {
                    *bits = c.column_length() as usize;
                }
                let v = json(v, &kind);
                if pk.contains(&col) {
                    row_key.insert(col.clone(), v.clone());
                }
                if src.config.common.keeps_column(db, table, &col) {
                    after.insert(col, v);
                }
            }
            let which = if row_key.is_empty() {
                ordinal.to_string()
            } else {
                Value::Object(row_key.clone()).to_string()
            };
            ordinal += 1;
            let dedup = format!("mysql:snapshot:{}:{}:{db}.{table}:{which}", id.file, id.pos);
            let change = Change {
                op: Op::Read,
                before: None,
                after: Some(after),
                key: row_key,
                source: source_block(name, db, table, started_ms, "true"),
                read_us: now_us(),
                transaction: None,
            };
            let counter = recorded.clone();
            let ack = Ack::on_recorded(move || counter.0.send_modify(|n| *n += 1));
            if let Some(ev) = event(&src.config, change, db, table, dedup, ack) {
                emitted += 1;
                if ctx.emit(ev).await.is_err() {
                    return Ok(None);
                }
            }
        }
    }
    conn.query_drop("COMMIT")
        .await
        .map_err(|e| classify("closing the snapshot", &e))?;
    drop(conn);
    let mut rx = recorded.0.subscribe();
    tokio::select! {
        biased;
        _ = ctx.stopped() => return Ok(None),
        r = rx.wait_for(|n| *n >= emitted) => { let _ = r; }
    }
    tracing::info!(rows = emitted, "mysql cdc: snapshot recorded");
    Ok(Some(id))
}

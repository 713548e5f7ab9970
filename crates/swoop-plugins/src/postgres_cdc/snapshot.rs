//! `snapshotMode: INITIAL`: the rows the included tables hold when the slot is created, each
//! as a READ change, before the stream — consistent with the slot's start.
//!
//! The replication session creates a *temporary* slot with `EXPORT_SNAPSHOT`; a REPEATABLE
//! READ transaction on the SQL connection imports that snapshot (`SET TRANSACTION SNAPSHOT`)
//! and reads every table through a cursor. Once every snapshot row's execution is recorded,
//! the temporary slot is copied into the permanent one (`pg_copy_logical_replication_slot`:
//! same consistent point) and dropped, and streaming starts from there. The permanent slot
//! thus exists only once the snapshot is durable: a crash or a stop during the snapshot leaves
//! no slot (the temporary one ends with its session), and the next run takes the snapshot
//! again. Its rows are keyed by the new snapshot's consistent point, so rows recorded by the
//! interrupted attempt come again (at least once for an interrupted snapshot; exactly once
//! otherwise).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use pgwire_replication::ReplicationClient;
use serde_json::Value;
use swoop_core::realtime::{Ack, Event, SourceContext, SourceError};
use tokio::sync::Notify;
use tokio_postgres::{Client, SimpleQueryMessage};

use super::pgoutput::{Column, Datum, Relation, Tuple, key_map, row_map};
use super::record::{Change, Origin, Shaper, lsn_text};
use super::source::{PostgresCdcSource, command, parse_lsn, quote, sql_error};
use crate::debezium::Op;

/// Rows fetched per round trip.
const FETCH: usize = 1000;

/// How many snapshot rows were recorded, and whether one was released (the trigger stops).
#[derive(Default)]
struct Recorded {
    count: AtomicU64,
    released: AtomicBool,
    changed: Notify,
}

/// Takes the snapshot and creates the slot; returns the slot's start, or `None` when the
/// trigger stopped first.
pub(super) async fn initial(
    source: &PostgresCdcSource,
    ctx: &SourceContext,
    shaper: &Shaper<'_>,
    sql: &Client,
    session: &mut ReplicationClient,
) -> Result<Option<u64>, SourceError> {
    let c = &source.config;
    let at = c.display();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let temporary = format!("swoop_snapshot_{:x}", nanos & 0xffff_ffff_ffff);
    let created = command(
        session,
        &at,
        &format!("CREATE_REPLICATION_SLOT {temporary} TEMPORARY LOGICAL pgoutput EXPORT_SNAPSHOT"),
    )
    .await?;
    let start = parse_lsn(&at, created.get(1))?;
    let snapshot = created.get(2).cloned().unwrap_or_default();
    tracing::info!(at = %at, slot = %c.slot_name, snapshot = %snapshot, consistent_point = %lsn_text(start), "postgres cdc: taking the initial snapshot");

    sql.batch_execute(&format!(
        "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT '{}'",
        snapshot.replace('\'', "''")
    ))
    .await
    .map_err(|e| sql_error(&at, "cannot open the snapshot", &e))?;
    let recorded = Arc::new(Recorded::default());
    let read = read_tables(c, ctx, shaper, sql, start, &recorded).await;
    let _ = sql.batch_execute("COMMIT").await;
    let Some(emitted) = read? else {
        return Ok(None);
    };
    // The slot is made permanent only once every snapshot row is recorded.
    loop {
        let notified = recorded.changed.notified();
        if recorded.released.load(Ordering::SeqCst) {
            return Ok(None);
        }
        if recorded.count.load(Ordering::SeqCst) >= emitted {
            break;
        }
        tokio::select! {
            _ = ctx.stopped() => return Ok(None),
            _ = notified => {}
        }
    }
    sql.execute(
        "SELECT pg_copy_logical_replication_slot($1, $2, false)",
        &[&temporary, &c.slot_name],
    )
    .await
    .map_err(|e| {
        sql_error(
            &at,
            "cannot create the replication slot from the snapshot's",
            &e,
        )
    })?;
    command(session, &at, &format!("DROP_REPLICATION_SLOT {temporary}")).await?;
    tracing::info!(at = %at, slot = %c.slot_name, rows = emitted, "postgres cdc: snapshot recorded, slot created");
    Ok(Some(start))
}

/// The snapshot's tables (published and included) with their columns.
async fn tables(
    config: &super::config::PostgresCdcConfig,
    sql: &Client,
) -> Result<Vec<Relation>, SourceError> {
    let at = config.display();
    let rows = sql
        .query(
            "SELECT schemaname::text, tablename::text FROM pg_publication_tables WHERE pubname = $1 ORDER BY 1, 2",
            &[&config.publication_name],
        )
        .await
        .map_err(|e| sql_error(&at, "cannot list the publication's tables", &e))?;
    let mut out = Vec::new();
    for row in rows {
        let (schema, name): (String, String) = (row.get(0), row.get(1));
        if !config.common.captures(&schema, &name) {
            continue;
        }
        let qualified = format!("{}.{}", quote(&schema), quote(&name));
        let columns = sql
            .query(
                "SELECT a.attname::text, a.atttypid::int8, coalesce(a.attnum = ANY(i.indkey), false)
                 FROM pg_attribute a
                 LEFT JOIN pg_index i ON i.indrelid = a.attrelid AND i.indisprimary
                 WHERE a.attrelid = $1::text::regclass AND a.attnum > 0 AND NOT a.attisdropped
                 ORDER BY a.attnum",
                &[&qualified],
            )
            .await
            .map_err(|e| sql_error(&at, &format!("cannot read the columns of {schema}.{name}"), &e))?
            .into_iter()
            .map(|r| Column {
                name: r.get(0),
                type_oid: r.get::<_, i64>(1) as u32,
                key: r.get(2),
            })
            .collect();
        out.push(Relation {
            oid: 0,
            schema,
            name,
            columns,
        });
    }
    Ok(out)
}

/// Emits every row of the snapshot; returns how many, or `None` when the trigger stopped.
async fn read_tables(
    config: &super::config::PostgresCdcConfig,
    ctx: &SourceContext,
    shaper: &Shaper<'_>,
    sql: &Client,
    start: u64,
    recorded: &Arc<Recorded>,
) -> Result<Option<u64>, SourceError> {
    let at = config.display();
    let relations = tables(config, sql).await?;
    let ts_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0);
    let mut emitter = Emitter {
        ctx,
        shaper,
        start,
        ts_us,
        recorded,
        emitted: 0,
        held: None,
    };
    for (index, rel) in relations.iter().enumerate() {
        let select = rel
            .columns
            .iter()
            .map(|c| format!("{}::text", quote(&c.name)))
            .collect::<Vec<_>>()
            .join(", ");
        let table = format!("{}.{}", quote(&rel.schema), quote(&rel.name));
        sql.batch_execute(&format!(
            "DECLARE swoop_snapshot NO SCROLL CURSOR FOR SELECT {select} FROM {table}"
        ))
        .await
        .map_err(|e| sql_error(&at, &format!("cannot read {}", rel.qualified()), &e))?;
        loop {
            let messages = sql
                .simple_query(&format!("FETCH {FETCH} FROM swoop_snapshot"))
                .await
                .map_err(|e| sql_error(&at, &format!("cannot read {}", rel.qualified()), &e))?;
            let mut rows = 0;
            for m in messages {
                if let SimpleQueryMessage::Row(row) = m {
                    rows += 1;
                    let tuple: Tuple = (0..rel.columns.len())
                        .map(|i| match row.get(i) {
                            Some(t) => Datum::Text(t.to_string()),
                            None => Datum::Null,
                        })
                        .collect();
                    if !emitter.push(&relations, index, tuple).await {
                        return Ok(None);
                    }
                }
            }
            if rows < FETCH {
                break;
            }
        }
        sql.batch_execute("CLOSE swoop_snapshot")
            .await
            .map_err(|e| sql_error(&at, "cannot close the snapshot cursor", &e))?;
    }
    if !emitter.flush(&relations, "last").await {
        return Ok(None);
    }
    Ok(Some(emitter.emitted))
}

/// Emits snapshot rows one behind, so that the last one says `snapshot: "last"`.
struct Emitter<'a> {
    ctx: &'a SourceContext,
    shaper: &'a Shaper<'a>,
    start: u64,
    ts_us: i64,
    recorded: &'a Arc<Recorded>,
    emitted: u64,
    held: Option<(usize, Tuple)>,
}

impl Emitter<'_> {
    async fn push(&mut self, relations: &[Relation], index: usize, tuple: Tuple) -> bool {
        let ok = self.flush(relations, "true").await;
        self.held = Some((index, tuple));
        ok
    }

    /// Emits the held row; false when the trigger is stopping.
    async fn flush(&mut self, relations: &[Relation], snapshot: &'static str) -> bool {
        let Some((index, tuple)) = self.held.take() else {
            return true;
        };
        let rel = &relations[index];
        let table = rel.qualified();
        let common = &self.shaper.config.common;
        let keep = |column: &str| common.keeps_column(&rel.schema, &rel.name, column);
        let change = Change {
            op: Op::Read,
            before: None,
            after: Some(row_map(rel, &tuple, &keep, false)),
            key: key_map(rel, &tuple),
            origin: Origin {
                schema: &rel.schema,
                table: &rel.name,
                tx_id: None,
                lsn: self.start,
                ts_us: self.ts_us,
                snapshot,
            },
        };
        let key = (!change.key.is_empty()).then(|| Value::Object(change.key.clone()).to_string());
        let Some(variables) = self.shaper.variables(change) else {
            return true;
        };
        let n = self.emitted;
        self.emitted += 1;
        let recorded = Arc::clone(self.recorded);
        let mut event = Event::new(variables);
        event.dedup_key = Some(format!("pg:snapshot:{}:{n}", lsn_text(self.start)));
        event.key = key;
        event.partition = Some(table);
        event.ack = Ack::new(move |outcome| {
            if outcome.is_recorded() {
                recorded.count.fetch_add(1, Ordering::SeqCst);
            } else {
                recorded.released.store(true, Ordering::SeqCst);
            }
            recorded.changed.notify_waiters();
        });
        self.ctx.emit(event).await.is_ok()
    }
}

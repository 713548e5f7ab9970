//! The PostgreSQL backend (`--db postgres://…`): the same tables as SQLite, the same
//! group-commit writer ([`crate::write_queue`]) and the same guarantees — an execution and its
//! dedup key are written in one transaction, and `create_execution` returns once it is
//! committed.
//!
//! - **Writes**: one writer thread owns a synchronous `postgres` connection; each batch is one
//!   transaction. Every message's SQL is written not to fail in the usual cases (`ON CONFLICT`,
//!   row counts), so a batch runs without savepoints, a creation in one statement. In
//!   PostgreSQL a failed statement aborts the whole transaction: when one does, the batch is
//!   rolled back and run again with each message in a savepoint, so the failing one fails alone.
//!   A lost connection is opened again at the next batch. Several nodes may share one database: the dedup key's primary key
//!   makes a concurrent duplicate wait for the other transaction, then create nothing.
//! - **Reads**: a few `tokio-postgres` connections, used round robin (a connection runs
//!   concurrent queries in a pipeline); a closed one is opened again when next used.
//! - **Schema**: migrations run at open under an advisory lock, so nodes starting together
//!   migrate once. Text columns use the "C" collation: ordering and namespace ranges are by
//!   bytes, as in SQLite.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use parking_lot::Mutex;
use serde_json::Value;
use swoop_core::{Execution, LogEntry, State};

use crate::write_queue::{
    BatchBackend, ExecRow, LogRow, WriteOp, WriteQueue, WriterStats, apply_in_order,
    millis_to_date, parse_execution,
};
use crate::{
    Created, DedupKey, Durability, ExecutionQuery, ExecutionStore, FlowRecord, FlowStore, LogStore,
    Page, Store, StoreError, StoreResult, TriggerStateStore,
};

const READERS: usize = 3;
const DEFAULT_PAGE_SIZE: usize = 25;
const MAX_PAGE_SIZE: usize = 1000;
/// The advisory lock migrations hold (any constant shared by every swoop node).
const MIGRATION_LOCK: i64 = 0x5700_0001;
/// The advisory lock a node holds for its lifetime (see [`PostgresStore::claim_single_node`]).
const NODE_LOCK: i64 = 0x5700_0002;
/// How long a node waits for another node's claim to go before it gives up.
const CLAIM_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The schema, one migration after the other; `swoop_schema.version` holds how many ran.
const MIGRATIONS: &[&str] = &[
    // 1: the initial schema (the SQLite one, with PostgreSQL types).
    r#"
    CREATE TABLE flows (
        namespace TEXT COLLATE "C" NOT NULL,
        id        TEXT COLLATE "C" NOT NULL,
        revision  INTEGER NOT NULL,
        source    TEXT NOT NULL,
        deleted   BOOLEAN NOT NULL DEFAULT FALSE,
        updated   BIGINT NOT NULL,
        PRIMARY KEY (namespace, id, revision)
    );
    CREATE TABLE executions (
        id         TEXT COLLATE "C" PRIMARY KEY,
        namespace  TEXT COLLATE "C" NOT NULL,
        flow_id    TEXT COLLATE "C" NOT NULL,
        state      TEXT NOT NULL,
        finished   BOOLEAN NOT NULL,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        doc        TEXT NOT NULL
    );
    CREATE INDEX executions_search ON executions (namespace, flow_id, created_at);
    CREATE INDEX executions_created ON executions (created_at);
    CREATE INDEX executions_unfinished ON executions (created_at, id) WHERE NOT finished;
    CREATE TABLE dedup (
        trigger      TEXT COLLATE "C" NOT NULL,
        key          TEXT COLLATE "C" NOT NULL,
        execution_id TEXT NOT NULL,
        PRIMARY KEY (trigger, key)
    );
    CREATE TABLE logs (
        seq          BIGSERIAL PRIMARY KEY,
        execution_id TEXT COLLATE "C" NOT NULL,
        doc          TEXT NOT NULL
    );
    CREATE INDEX logs_execution ON logs (execution_id, seq);
    CREATE TABLE trigger_state (
        trigger TEXT COLLATE "C" PRIMARY KEY,
        value   TEXT NOT NULL
    );
    "#,
];

fn pg_error(context: &str, e: postgres::Error) -> StoreError {
    StoreError::Backend(format!("postgres: {context}: {}", error_text(&e)))
}

/// The server's message when there is one (the driver's Display says only "db error").
fn error_text(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => e.to_string(),
    }
}

trait Ctx<T> {
    fn ctx(self, context: &str) -> StoreResult<T>;
}

impl<T> Ctx<T> for Result<T, postgres::Error> {
    fn ctx(self, context: &str) -> StoreResult<T> {
        self.map_err(|e| pg_error(context, e))
    }
}

/// A URL with its password replaced, for logs and errors.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// The PostgreSQL [`Store`].
pub struct PostgresStore {
    url: String,
    queue: WriteQueue,
    readers: Readers,
    /// The connection holding this node's claim on the database, once claimed.
    claim: Mutex<Option<tokio_postgres::Client>>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("url", &redacted(&self.url))
            .field("stats", &self.stats())
            .finish()
    }
}

impl PostgresStore {
    /// Connects, brings the schema up to date and starts the writer. `url` is a
    /// `postgres://user:password@host:port/database` URL (or a libpq key=value string).
    pub async fn connect(url: &str) -> StoreResult<Arc<PostgresStore>> {
        Self::connect_with(url, 2048).await
    }

    /// [`PostgresStore::connect`] with at most `max_batch` messages per transaction.
    pub async fn connect_with(url: &str, max_batch: usize) -> StoreResult<Arc<PostgresStore>> {
        let owned = url.to_string();
        // The synchronous client runs its own runtime: open it off the async threads.
        let writer = tokio::task::spawn_blocking(move || -> StoreResult<Writer> {
            let mut client = connect_sync(&owned)?;
            migrate(&mut client)?;
            Ok(Writer {
                url: owned,
                client,
                broken: false,
                failed: false,
                careful: false,
                statements: Default::default(),
            })
        })
        .await
        .map_err(|e| StoreError::Backend(format!("postgres: the connect task failed: {e}")))??;
        let readers = Readers::connect(url, READERS).await?;
        let queue = WriteQueue::start(writer, max_batch)?;
        tracing::debug!(url = %redacted(url), "postgres store open");
        Ok(Arc::new(PostgresStore {
            url: url.to_string(),
            queue,
            readers,
            claim: Mutex::new(None),
        }))
    }

    /// Claims the database for this node alone (a session advisory lock, held while the
    /// process lives): until nodes coordinate, a second node would resume the first one's
    /// running executions and run them twice, so it is refused with an explanation.
    pub async fn claim_single_node(&self) -> StoreResult<()> {
        let client = connect_async(&self.url).await?;
        // A node restarted after a crash may find its old session not gone yet: wait a little.
        let deadline = tokio::time::Instant::now() + CLAIM_WAIT;
        let got = loop {
            let got: bool = client
                .query_one("SELECT pg_try_advisory_lock($1)", &[&NODE_LOCK])
                .await
                .map_err(|e| pg_error("claim the database", e))?
                .get(0);
            if got || tokio::time::Instant::now() >= deadline {
                break got;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        };
        if !got {
            return Err(StoreError::Backend(format!(
                "another swoop node is using the database at {}: running several nodes on one PostgreSQL needs node coordination, which this version does not have yet (a second node would run the first one's executions again); stop the other node or give this one its own database",
                redacted(&self.url)
            )));
        }
        *self.claim.lock() = Some(client);
        Ok(())
    }

    pub fn stats(&self) -> WriterStats {
        self.queue.stats()
    }
}

fn connect_sync(url: &str) -> StoreResult<postgres::Client> {
    postgres::Client::connect(url, postgres::NoTls).map_err(|e| {
        StoreError::Backend(format!(
            "cannot connect to PostgreSQL at {}: {}",
            redacted(url),
            error_text(&e)
        ))
    })
}

/// Applies the migrations the database lacks, in one transaction, under an advisory lock.
fn migrate(client: &mut postgres::Client) -> StoreResult<()> {
    let mut tx = client.transaction().ctx("begin migrations")?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .ctx("lock migrations")?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS swoop_schema (version INTEGER NOT NULL)")
        .ctx("schema table")?;
    let version: Option<i32> = tx
        .query_opt("SELECT version FROM swoop_schema", &[])
        .ctx("schema version")?
        .map(|r| r.get(0));
    let applied = usize::try_from(version.unwrap_or(0))
        .map_err(|_| StoreError::Data(format!("bad schema version {version:?}")))?;
    if applied > MIGRATIONS.len() {
        return Err(StoreError::Data(format!(
            "the database's schema version is {applied}, newer than this swoop knows ({}): it was written by a newer swoop",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(applied) {
        tx.batch_execute(sql)
            .map_err(|e| pg_error(&format!("migration {}", i + 1), e))?;
    }
    if applied < MIGRATIONS.len() {
        let to = MIGRATIONS.len() as i32;
        if version.is_some() {
            tx.execute("UPDATE swoop_schema SET version = $1", &[&to])
        } else {
            tx.execute("INSERT INTO swoop_schema (version) VALUES ($1)", &[&to])
        }
        .ctx("schema version")?;
        tracing::info!(from = applied, to, "store schema migrated");
    }
    tx.commit().ctx("commit migrations")
}

// ---------------------------------------------------------------------------------------------
// The writer

struct Writer {
    url: String,
    client: postgres::Client,
    /// The connection failed mid-transaction: open it again before the next batch.
    broken: bool,
    /// A statement failed: the transaction is aborted.
    failed: bool,
    /// This batch runs each message in a savepoint (after a first try failed).
    careful: bool,
    /// Statements prepared on this connection.
    statements: std::collections::HashMap<&'static str, postgres::Statement>,
}

impl BatchBackend for Writer {
    fn name(&self) -> &'static str {
        "postgres"
    }

    fn begin(&mut self) -> StoreResult<()> {
        if self.broken || self.client.is_closed() {
            self.client = connect_sync(&self.url)?;
            self.statements.clear();
            self.broken = false;
            tracing::info!(url = %redacted(&self.url), "postgres writer reconnected");
        }
        self.failed = false;
        self.exec("BEGIN")
    }

    fn apply(&mut self, op: &mut WriteOp) {
        match op {
            WriteOp::Create { row, dedup, done } => {
                done.result = Some(self.in_savepoint(|w| w.create(row, dedup.as_ref())));
            }
            WriteOp::Save { row, done } => done.result = Some(self.in_savepoint(|w| w.save(row))),
            WriteOp::Logs { rows, done } => {
                done.result = Some(self.in_savepoint(|w| w.append_logs(rows)));
            }
            WriteOp::PutFlow {
                namespace,
                id,
                source,
                now_ms,
                done,
            } => {
                done.result =
                    Some(self.in_savepoint(|w| w.put_flow(namespace, id, source, *now_ms)));
            }
            WriteOp::DeleteFlow {
                namespace,
                id,
                done,
            } => done.result = Some(self.in_savepoint(|w| w.delete_flow(namespace, id))),
            WriteOp::DeleteExecution { id, done } => {
                done.result = Some(self.in_savepoint(|w| w.delete_execution(id)));
            }
            WriteOp::PutTriggerState {
                trigger,
                value,
                done,
            } => done.result = Some(self.in_savepoint(|w| w.put_trigger_state(trigger, value))),
            WriteOp::Flush { .. } => {}
        }
    }

    fn aborted(&mut self) -> bool {
        self.failed || self.broken || self.client.is_closed()
    }

    /// Creations one by one, then every save of the batch in one statement and every log line
    /// in another — when the batch holds only those and no save comes before a creation of
    /// the same execution (else, and in a careful batch, one by one in order).
    fn apply_all(&mut self, batch: &mut [WriteOp], plan: &[Option<usize>]) -> Option<usize> {
        if self.careful || !groupable(batch, plan) {
            return apply_in_order(self, batch, plan);
        }
        for (i, op) in batch.iter_mut().enumerate() {
            if plan[i].is_none() && matches!(op, WriteOp::Create { .. }) {
                self.apply(op);
                if self.aborted() {
                    return Some(i);
                }
            }
        }
        let grouped = match self.save_all(batch, plan) {
            Ok(()) => self.logs_all(batch),
            Err(e) => Err(e),
        };
        if let Err(e) = grouped {
            self.failed = true;
            // The batch fails: say why on the first message it has.
            let first = (0..batch.len()).find(|i| plan[*i].is_none())?;
            batch[first].fail(&e);
            return Some(first);
        }
        None
    }

    fn commit(&mut self) -> StoreResult<()> {
        self.exec("COMMIT")
    }

    fn rollback(&mut self) {
        if !self.broken && !self.client.is_closed() {
            let _ = self.client.batch_execute("ROLLBACK");
        }
    }

    fn committed(&mut self) {
        self.careful = false;
    }

    fn retry_carefully(&mut self) -> bool {
        if self.careful || self.broken || self.client.is_closed() {
            return false;
        }
        self.careful = true;
        true
    }
}

impl Writer {
    /// The prepared statement of `sql`, prepared once per connection.
    fn prepared(&mut self, sql: &'static str) -> Result<postgres::Statement, postgres::Error> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let s = self.client.prepare(sql)?;
        self.statements.insert(sql, s.clone());
        Ok(s)
    }

    fn run(
        &mut self,
        sql: &'static str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> Result<u64, postgres::Error> {
        let s = self.prepared(sql)?;
        self.client.execute(&s, params)
    }

    fn one(
        &mut self,
        sql: &'static str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> Result<postgres::Row, postgres::Error> {
        let s = self.prepared(sql)?;
        self.client.query_one(&s, params)
    }

    fn opt(
        &mut self,
        sql: &'static str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> Result<Option<postgres::Row>, postgres::Error> {
        let s = self.prepared(sql)?;
        self.client.query_opt(&s, params)
    }
    fn exec(&mut self, sql: &str) -> StoreResult<()> {
        match self.client.batch_execute(sql) {
            Ok(()) => Ok(()),
            Err(e) => {
                if self.client.is_closed() || e.as_db_error().is_none() {
                    self.broken = true;
                }
                Err(pg_error(sql, e))
            }
        }
    }

    /// Runs one message: directly, or in a savepoint in a careful batch. A database error
    /// outside a savepoint aborts the transaction (the batch is run again carefully).
    fn in_savepoint<T>(&mut self, f: impl FnOnce(&mut Self) -> StoreResult<T>) -> StoreResult<T> {
        if !self.careful {
            let result = f(self);
            if let Err(StoreError::Backend(_)) = &result {
                self.failed = true;
            }
            return result;
        }
        self.exec("SAVEPOINT op")?;
        let result = f(self);
        if result.is_err()
            && let Err(e) = self.exec("ROLLBACK TO SAVEPOINT op")
        {
            // Never commit half a message: give the whole transaction up.
            tracing::error!(error = %e, "cannot roll a savepoint back; the batch fails");
            self.broken = true;
            return result;
        }
        self.exec("RELEASE SAVEPOINT op")?;
        result
    }

    /// Every save of the batch (`plan` skips the coalesced ones) in one statement; a save of an
    /// execution never created fails alone.
    fn save_all(&mut self, batch: &mut [WriteOp], plan: &[Option<usize>]) -> StoreResult<()> {
        let mut ids = Vec::new();
        let mut states = Vec::new();
        let mut finished = Vec::new();
        let mut updated = Vec::new();
        let mut docs = Vec::new();
        for (i, op) in batch.iter().enumerate() {
            if let (WriteOp::Save { row, .. }, None) = (op, plan[i]) {
                ids.push(row.id.as_str());
                states.push(row.state);
                finished.push(row.finished);
                updated.push(row.updated_at);
                docs.push(row.doc.as_str());
            }
        }
        if ids.is_empty() {
            return Ok(());
        }
        let rows = {
            let s = self
                .prepared(
                    "UPDATE executions e SET state = v.state, finished = v.finished, \
                     updated_at = v.updated_at, doc = v.doc \
                     FROM UNNEST($1::text[], $2::text[], $3::bool[], $4::bigint[], $5::text[]) \
                     AS v(id, state, finished, updated_at, doc) \
                     WHERE e.id = v.id RETURNING e.id",
                )
                .ctx("prepare saves")?;
            self.client
                .query(&s, &[&ids, &states, &finished, &updated, &docs])
                .ctx("update executions")?
        };
        let saved: std::collections::HashSet<String> = rows.iter().map(|r| r.get(0)).collect();
        for (i, op) in batch.iter_mut().enumerate() {
            if let (WriteOp::Save { row, done }, None) = (op, plan[i]) {
                done.result = Some(if saved.contains(&row.id) {
                    Ok(())
                } else {
                    Err(StoreError::Data(format!(
                        "cannot save execution {}: it was never created",
                        row.id
                    )))
                });
            }
        }
        Ok(())
    }

    /// Every log line of the batch, in order, in one statement.
    fn logs_all(&mut self, batch: &mut [WriteOp]) -> StoreResult<()> {
        let (ids, docs): (Vec<&str>, Vec<&str>) = batch
            .iter()
            .filter_map(|op| match op {
                WriteOp::Logs { rows, .. } => Some(rows.iter()),
                _ => None,
            })
            .flatten()
            .map(|r| (r.execution_id.as_str(), r.doc.as_str()))
            .unzip();
        if !ids.is_empty() {
            self.insert_logs(&ids, &docs)?;
        }
        for op in batch.iter_mut() {
            if let WriteOp::Logs { done, .. } = op {
                done.result = Some(Ok(()));
            }
        }
        Ok(())
    }

    fn create(&mut self, row: &ExecRow, dedup: Option<&DedupKey>) -> StoreResult<Created> {
        let exists = || StoreError::Data(format!("execution {} already exists", row.id));
        let columns: [&(dyn postgres::types::ToSql + Sync); 8] = [
            &row.id,
            &row.namespace,
            &row.flow_id,
            &row.state,
            &row.finished,
            &row.created_at,
            &row.updated_at,
            &row.doc,
        ];
        let Some(key) = dedup else {
            let inserted = self
                .run(
                    "INSERT INTO executions \
                     (id, namespace, flow_id, state, finished, created_at, updated_at, doc) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (id) DO NOTHING",
                    &columns,
                )
                .ctx("insert execution")?;
            return if inserted == 1 {
                Ok(Created::Created)
            } else {
                Err(exists())
            };
        };
        // The key and the execution in one statement: the execution only if the key was new.
        let mut params: Vec<&(dyn postgres::types::ToSql + Sync)> = columns.to_vec();
        params.push(&key.trigger);
        params.push(&key.key);
        let row_out = self
            .one(
                "WITH d AS (\
                   INSERT INTO dedup (trigger, key, execution_id) VALUES ($9, $10, $1) \
                   ON CONFLICT DO NOTHING RETURNING 1\
                 ), e AS (\
                   INSERT INTO executions \
                   (id, namespace, flow_id, state, finished, created_at, updated_at, doc) \
                   SELECT $1, $2, $3, $4, $5, $6, $7, $8 WHERE EXISTS (SELECT 1 FROM d) \
                   ON CONFLICT (id) DO NOTHING RETURNING 1\
                 ) SELECT EXISTS (SELECT 1 FROM d), EXISTS (SELECT 1 FROM e)",
                &params,
            )
            .ctx("insert execution and dedup key")?;
        let (key_new, created): (bool, bool) = (row_out.get(0), row_out.get(1));
        match (key_new, created) {
            (true, true) => Ok(Created::Created),
            (true, false) => {
                // The id is taken: take the key back.
                self.run(
                    "DELETE FROM dedup WHERE trigger = $1 AND key = $2 AND execution_id = $3",
                    &[&key.trigger, &key.key, &row.id],
                )
                .ctx("take the dedup key back")?;
                Err(exists())
            }
            (false, _) => {
                // A new statement sees the holder, committed by then (also by another node).
                let existing_id: String = self
                    .one(
                        "SELECT execution_id FROM dedup WHERE trigger = $1 AND key = $2",
                        &[&key.trigger, &key.key],
                    )
                    .ctx("read dedup key")?
                    .get(0);
                Ok(Created::Duplicate { existing_id })
            }
        }
    }

    fn save(&mut self, row: &ExecRow) -> StoreResult<()> {
        let changed = self
            .run(
                "UPDATE executions SET state = $2, finished = $3, updated_at = $4, doc = $5 \
                 WHERE id = $1",
                &[
                    &row.id,
                    &row.state,
                    &row.finished,
                    &row.updated_at,
                    &row.doc,
                ],
            )
            .ctx("update execution")?;
        if changed == 0 {
            return Err(StoreError::Data(format!(
                "cannot save execution {}: it was never created",
                row.id
            )));
        }
        Ok(())
    }

    /// Inserts log lines in order (`seq` follows the arrays' order), in one statement.
    fn insert_logs(&mut self, ids: &[&str], docs: &[&str]) -> StoreResult<()> {
        self.run(
            "INSERT INTO logs (execution_id, doc) \
             SELECT e, d FROM UNNEST($1::text[], $2::text[]) WITH ORDINALITY AS t(e, d, n) \
             ORDER BY n",
            &[&ids, &docs],
        )
        .map(drop)
        .ctx("insert logs")
    }

    fn append_logs(&mut self, rows: &[LogRow]) -> StoreResult<()> {
        let ids: Vec<&str> = rows.iter().map(|r| r.execution_id.as_str()).collect();
        let docs: Vec<&str> = rows.iter().map(|r| r.doc.as_str()).collect();
        self.insert_logs(&ids, &docs)
    }

    fn put_flow(
        &mut self,
        namespace: &str,
        id: &str,
        source: &str,
        now_ms: i64,
    ) -> StoreResult<FlowRecord> {
        let latest = self
            .opt(
                "SELECT revision, source, deleted, updated FROM flows \
                 WHERE namespace = $1 AND id = $2 ORDER BY revision DESC LIMIT 1",
                &[&namespace, &id],
            )
            .ctx("latest flow")?;
        let mut revision = 1i32;
        if let Some(row) = latest {
            let (rev, old, deleted): (i32, String, bool) = (row.get(0), row.get(1), row.get(2));
            if !deleted && old == source {
                return Ok(FlowRecord {
                    namespace: namespace.to_string(),
                    id: id.to_string(),
                    revision: flow_revision(namespace, id, rev)?,
                    source: old,
                    updated: millis_to_date(row.get(3))?,
                });
            }
            revision = rev.checked_add(1).ok_or_else(|| {
                StoreError::Data(format!("flow {namespace}.{id}: too many revisions"))
            })?;
        }
        self.run(
            "INSERT INTO flows (namespace, id, revision, source, deleted, updated) \
                 VALUES ($1, $2, $3, $4, FALSE, $5)",
            &[&namespace, &id, &revision, &source, &now_ms],
        )
        .ctx("insert flow")?;
        Ok(FlowRecord {
            namespace: namespace.to_string(),
            id: id.to_string(),
            revision: flow_revision(namespace, id, revision)?,
            source: source.to_string(),
            updated: millis_to_date(now_ms)?,
        })
    }

    fn delete_flow(&mut self, namespace: &str, id: &str) -> StoreResult<bool> {
        let changed = self
            .run(
                "UPDATE flows SET deleted = TRUE WHERE namespace = $1 AND id = $2 AND NOT deleted",
                &[&namespace, &id],
            )
            .ctx("delete flow")?;
        Ok(changed > 0)
    }

    /// Deletes the execution and its logs; its dedup keys stay.
    fn delete_execution(&mut self, id: &str) -> StoreResult<bool> {
        self.run("DELETE FROM logs WHERE execution_id = $1", &[&id])
            .ctx("delete execution logs")?;
        let changed = self
            .run("DELETE FROM executions WHERE id = $1", &[&id])
            .ctx("delete execution")?;
        Ok(changed > 0)
    }

    fn put_trigger_state(&mut self, trigger: &str, value: &str) -> StoreResult<()> {
        self.run(
            "INSERT INTO trigger_state (trigger, value) VALUES ($1, $2) \
                 ON CONFLICT (trigger) DO UPDATE SET value = excluded.value",
            &[&trigger, &value],
        )
        .map(drop)
        .ctx("put trigger state")
    }
}

/// Whether a batch may run as creations, then saves, then logs: nothing else in it, and no
/// save of an execution before its creation or twice (those keep their order one by one).
fn groupable(batch: &[WriteOp], plan: &[Option<usize>]) -> bool {
    let mut created = std::collections::HashSet::new();
    let mut saved = std::collections::HashSet::new();
    for (i, op) in batch.iter().enumerate().rev() {
        match op {
            WriteOp::Create { row, .. } => {
                created.insert(row.id.as_str());
            }
            WriteOp::Save { row, .. } => {
                if plan[i].is_some() {
                    continue;
                }
                if created.contains(row.id.as_str()) || !saved.insert(row.id.as_str()) {
                    return false;
                }
            }
            WriteOp::Logs { .. } | WriteOp::Flush { .. } => {}
            _ => return false,
        }
    }
    true
}

fn flow_revision(namespace: &str, id: &str, revision: i32) -> StoreResult<u32> {
    u32::try_from(revision)
        .map_err(|_| StoreError::Data(format!("flow {namespace}.{id}: bad revision {revision}")))
}

// ---------------------------------------------------------------------------------------------
// Reads

/// A few asynchronous connections, used round robin; a closed one is opened again.
struct Readers {
    url: String,
    clients: Vec<Mutex<Arc<tokio_postgres::Client>>>,
    next: AtomicUsize,
}

async fn connect_async(url: &str) -> StoreResult<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .map_err(|e| {
            StoreError::Backend(format!(
                "cannot connect to PostgreSQL at {}: {}",
                redacted(url),
                error_text(&e)
            ))
        })?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "postgres read connection closed");
        }
    });
    Ok(client)
}

impl Readers {
    async fn connect(url: &str, n: usize) -> StoreResult<Readers> {
        let mut clients = Vec::with_capacity(n);
        for _ in 0..n {
            clients.push(Mutex::new(Arc::new(connect_async(url).await?)));
        }
        Ok(Readers {
            url: url.to_string(),
            clients,
            next: AtomicUsize::new(0),
        })
    }

    async fn client(&self) -> StoreResult<Arc<tokio_postgres::Client>> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.clients.len();
        let current = self.clients[i].lock().clone();
        if !current.is_closed() {
            return Ok(current);
        }
        let fresh = Arc::new(connect_async(&self.url).await?);
        *self.clients[i].lock() = fresh.clone();
        Ok(fresh)
    }

    async fn query(
        &self,
        context: &str,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> StoreResult<Vec<tokio_postgres::Row>> {
        self.client()
            .await?
            .query(sql, params)
            .await
            .map_err(|e| pg_error(context, e))
    }
}

fn flow_record(row: &tokio_postgres::Row) -> StoreResult<FlowRecord> {
    let namespace: String = row.get(0);
    let id: String = row.get(1);
    let revision = flow_revision(&namespace, &id, row.get(2))?;
    Ok(FlowRecord {
        revision,
        source: row.get(3),
        updated: millis_to_date(row.get(5))?,
        namespace,
        id,
    })
}

const FLOW_COLUMNS: &str = "namespace, id, revision, source, deleted, updated";

fn executions_of(rows: &[tokio_postgres::Row]) -> StoreResult<Vec<Execution>> {
    rows.iter()
        .map(|r| parse_execution(r.get::<_, &str>(0), r.get::<_, &str>(1)))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The traits

#[async_trait]
impl FlowStore for PostgresStore {
    async fn put_flow(&self, namespace: &str, id: &str, source: &str) -> StoreResult<FlowRecord> {
        self.queue.put_flow(namespace, id, source).await
    }

    async fn get_flow(&self, namespace: &str, id: &str) -> StoreResult<Option<FlowRecord>> {
        let rows = self
            .readers
            .query(
                "get flow",
                &format!(
                    "SELECT {FLOW_COLUMNS} FROM flows WHERE namespace = $1 AND id = $2 \
                     ORDER BY revision DESC LIMIT 1"
                ),
                &[&namespace, &id],
            )
            .await?;
        match rows.first() {
            Some(row) if !row.get::<_, bool>(4) => Ok(Some(flow_record(row)?)),
            _ => Ok(None),
        }
    }

    async fn get_flow_revision(
        &self,
        namespace: &str,
        id: &str,
        revision: u32,
    ) -> StoreResult<Option<FlowRecord>> {
        let Ok(revision) = i32::try_from(revision) else {
            return Ok(None);
        };
        let rows = self
            .readers
            .query(
                "flow revision",
                &format!(
                    "SELECT {FLOW_COLUMNS} FROM flows \
                     WHERE namespace = $1 AND id = $2 AND revision = $3"
                ),
                &[&namespace, &id, &revision],
            )
            .await?;
        rows.first().map(flow_record).transpose()
    }

    async fn delete_flow(&self, namespace: &str, id: &str) -> StoreResult<bool> {
        self.queue.delete_flow(namespace, id).await
    }

    async fn list_flows(&self) -> StoreResult<Vec<FlowRecord>> {
        let rows = self
            .readers
            .query(
                "list flows",
                &format!(
                    "SELECT {FLOW_COLUMNS} FROM flows f WHERE NOT deleted AND revision = \
                     (SELECT MAX(revision) FROM flows g \
                      WHERE g.namespace = f.namespace AND g.id = f.id) \
                     ORDER BY namespace, id"
                ),
                &[],
            )
            .await?;
        rows.iter().map(flow_record).collect()
    }
}

#[async_trait]
impl ExecutionStore for PostgresStore {
    async fn create_execution(
        &self,
        execution: &Execution,
        dedup: Option<DedupKey>,
    ) -> StoreResult<Created> {
        self.queue.create_execution(execution, dedup).await
    }

    async fn save_execution(
        &self,
        execution: &Execution,
        durability: Durability,
    ) -> StoreResult<()> {
        self.queue.save_execution(execution, durability).await
    }

    async fn get_execution(&self, id: &str) -> StoreResult<Option<Execution>> {
        let rows = self
            .readers
            .query(
                "get execution",
                "SELECT id, doc FROM executions WHERE id = $1",
                &[&id],
            )
            .await?;
        Ok(executions_of(&rows)?.pop())
    }

    async fn delete_execution(&self, id: &str) -> StoreResult<bool> {
        self.queue.delete_execution(id).await
    }

    async fn search_executions(&self, query: &ExecutionQuery) -> StoreResult<Page<Execution>> {
        let mut clauses: Vec<String> = Vec::new();
        let mut args: Vec<String> = Vec::new();
        let arg = |value: String, args: &mut Vec<String>| {
            args.push(value);
            format!("${}", args.len())
        };
        if let Some(ns) = &query.namespace {
            // The namespace itself, or one below it: `ns.` <= namespace < `ns/`.
            let a = arg(ns.clone(), &mut args);
            let b = arg(format!("{ns}."), &mut args);
            let c = arg(format!("{ns}/"), &mut args);
            clauses.push(format!(
                "(namespace = {a} OR (namespace >= {b} AND namespace < {c}))"
            ));
        }
        if let Some(flow_id) = &query.flow_id {
            let a = arg(flow_id.clone(), &mut args);
            clauses.push(format!("flow_id = {a}"));
        }
        if !query.states.is_empty() {
            let marks: Vec<String> = query
                .states
                .iter()
                .map(|s: &State| arg(s.as_str().to_string(), &mut args))
                .collect();
            clauses.push(format!("state IN ({})", marks.join(", ")));
        }
        let filter = if clauses.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", clauses.join(" AND "))
        };
        let size = match query.size {
            0 => DEFAULT_PAGE_SIZE,
            n => n.min(MAX_PAGE_SIZE),
        };
        let page = query.page.max(1);
        let offset = i64::try_from((page - 1).saturating_mul(size)).unwrap_or(i64::MAX);
        let limit = i64::try_from(size).unwrap_or(i64::MAX);
        let text: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = args
            .iter()
            .map(|a| a as &(dyn tokio_postgres::types::ToSql + Sync))
            .collect();
        let mut all = text.clone();
        all.push(&limit);
        all.push(&offset);
        // The count comes with the page (one snapshot); an empty page counts on its own.
        let rows = self
            .readers
            .query(
                "search executions",
                &format!(
                    "SELECT id, doc, COUNT(*) OVER () FROM executions {filter} \
                     ORDER BY created_at DESC, id DESC LIMIT ${} OFFSET ${}",
                    args.len() + 1,
                    args.len() + 2
                ),
                &all,
            )
            .await?;
        let total: i64 = match rows.first() {
            Some(r) => r.get(2),
            None => self
                .readers
                .query(
                    "count executions",
                    &format!("SELECT COUNT(*) FROM executions {filter}"),
                    &text,
                )
                .await?
                .first()
                .map_or(0, |r| r.get(0)),
        };
        Ok(Page {
            results: executions_of(&rows)?,
            total: u64::try_from(total).unwrap_or(0),
        })
    }

    async fn unfinished_executions(&self) -> StoreResult<Vec<Execution>> {
        let rows = self
            .readers
            .query(
                "unfinished executions",
                "SELECT id, doc FROM executions WHERE NOT finished ORDER BY created_at, id",
                &[],
            )
            .await?;
        executions_of(&rows)
    }

    async fn execution_for_dedup(&self, dedup: &DedupKey) -> StoreResult<Option<String>> {
        let rows = self
            .readers
            .query(
                "execution for dedup key",
                "SELECT execution_id FROM dedup WHERE trigger = $1 AND key = $2",
                &[&dedup.trigger, &dedup.key],
            )
            .await?;
        Ok(rows.first().map(|r| r.get(0)))
    }
}

#[async_trait]
impl LogStore for PostgresStore {
    fn append_logs(&self, logs: Vec<LogEntry>) {
        self.queue.append_logs(logs)
    }

    async fn logs_for_execution(&self, execution_id: &str) -> StoreResult<Vec<LogEntry>> {
        let rows = self
            .readers
            .query(
                "logs",
                "SELECT seq, doc FROM logs WHERE execution_id = $1 ORDER BY seq",
                &[&execution_id],
            )
            .await?;
        rows.iter()
            .map(|r| {
                let seq: i64 = r.get(0);
                serde_json::from_str(r.get::<_, &str>(1)).map_err(|e| {
                    StoreError::Data(format!(
                        "log line {seq} of execution {execution_id}: bad JSON document: {e}"
                    ))
                })
            })
            .collect()
    }
}

#[async_trait]
impl TriggerStateStore for PostgresStore {
    async fn get_trigger_state(&self, trigger: &str) -> StoreResult<Option<Value>> {
        let rows = self
            .readers
            .query(
                "get trigger state",
                "SELECT value FROM trigger_state WHERE trigger = $1",
                &[&trigger],
            )
            .await?;
        rows.first()
            .map(|r| {
                serde_json::from_str(r.get::<_, &str>(0)).map_err(|e| {
                    StoreError::Data(format!("state of trigger {trigger}: bad JSON: {e}"))
                })
            })
            .transpose()
    }

    async fn put_trigger_state(&self, trigger: &str, state: &Value) -> StoreResult<()> {
        self.queue.put_trigger_state(trigger, state).await
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn flush(&self) -> StoreResult<()> {
        self.queue.flush().await
    }

    fn backend(&self) -> &'static str {
        "postgres"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::{self, Guarded};
    use swoop_testkit::postgres::Postgres;

    /// A fresh PostgreSQL server (initdb on a free loopback port), stopped with the store.
    async fn server() -> (Postgres, String) {
        let pg = tokio::task::spawn_blocking(Postgres::start)
            .await
            .expect("the server starts");
        let url = format!("postgres://postgres@127.0.0.1:{}/postgres", pg.port());
        (pg, url)
    }

    async fn make_store() -> Guarded<Postgres> {
        let (pg, url) = server().await;
        let store = PostgresStore::connect(&url).await.expect("connects");
        Guarded { store, guard: pg }
    }

    crate::store_conformance_tests!(make_store);

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn durable_across_reopen() {
        let (_pg, url) = server().await;
        conformance::durable_across_reopen(|| {
            let url = url.clone();
            async move {
                let store: Arc<dyn Store> = PostgresStore::connect(&url).await.expect("connects");
                store
            }
        })
        .await;
    }

    /// Two nodes on one database: the same event offered to both creates one execution.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_stores_on_one_database_dedup_across_nodes() {
        let (_pg, url) = server().await;
        let a = PostgresStore::connect(&url).await.expect("connects");
        let b = PostgresStore::connect(&url).await.expect("connects");
        let mut created = 0;
        for i in 0..50 {
            let key = DedupKey {
                trigger: "ns/flow/t".into(),
                key: format!("topic/0/{i}"),
            };
            let ea = Execution::new("ns", "flow", 1);
            let eb = Execution::new("ns", "flow", 1);
            let (ra, rb) = tokio::join!(
                a.create_execution(&ea, Some(key.clone())),
                b.create_execution(&eb, Some(key.clone()))
            );
            let (ra, rb) = (ra.expect("a answers"), rb.expect("b answers"));
            created += [&ra, &rb]
                .iter()
                .filter(|r| ***r == Created::Created)
                .count();
            let holder = a
                .execution_for_dedup(&key)
                .await
                .unwrap()
                .expect("recorded");
            for (r, e) in [(&ra, &ea), (&rb, &eb)] {
                match r {
                    Created::Created => assert_eq!(holder, e.id),
                    Created::Duplicate { existing_id } => assert_eq!(existing_id, &holder),
                }
            }
        }
        assert_eq!(created, 50, "one execution per event");
    }

    /// Schema migrations run once when nodes start together.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nodes_starting_together_migrate_once() {
        let (_pg, url) = server().await;
        let (a, b, c) = tokio::join!(
            PostgresStore::connect(&url),
            PostgresStore::connect(&url),
            PostgresStore::connect(&url)
        );
        for s in [a, b, c] {
            s.expect("connects")
                .list_flows()
                .await
                .expect("the schema is there");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_second_node_is_refused_until_the_first_one_stops() {
        let (_pg, url) = server().await;
        let first = PostgresStore::connect(&url).await.expect("connects");
        first
            .claim_single_node()
            .await
            .expect("the first node claims");
        let second = PostgresStore::connect(&url).await.expect("connects");
        let e = second.claim_single_node().await.expect_err("refused");
        assert!(
            e.to_string()
                .contains("another swoop node is using the database"),
            "{e}"
        );
        drop(first);
        // The claim goes with the first node's connection.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while second.claim_single_node().await.is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "the claim is released"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// A message PostgreSQL rejects (text with a NUL byte) fails alone; the rest of its batch
    /// is written (the batch is run again with savepoints).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_rejected_message_fails_alone() {
        let (_pg, url) = server().await;
        let store = PostgresStore::connect(&url).await.expect("connects");
        let mut executions: Vec<Execution> =
            (0..200).map(|_| Execution::new("ns", "flow", 1)).collect();
        executions[100].id = "bad\0id".into();
        let results = futures_join(&store, &executions).await;
        for (e, r) in executions.iter().zip(&results) {
            if e.id.contains('\0') {
                assert!(r.is_err(), "the bad one fails");
            } else {
                assert_eq!(r.as_ref().ok(), Some(&Created::Created), "{r:?}");
                assert!(store.get_execution(&e.id).await.unwrap().is_some());
            }
        }
    }

    async fn futures_join(
        store: &Arc<PostgresStore>,
        executions: &[Execution],
    ) -> Vec<StoreResult<Created>> {
        let tasks: Vec<_> = executions
            .iter()
            .map(|e| {
                let store = store.clone();
                let e = e.clone();
                tokio::spawn(async move { store.create_execution(&e, None).await })
            })
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.expect("joins"));
        }
        out
    }

    #[tokio::test]
    async fn an_unreachable_database_says_where() {
        let e = PostgresStore::connect("postgres://swoop:secret@127.0.0.1:1/swoop")
            .await
            .expect_err("nothing listens on port 1");
        let text = e.to_string();
        assert!(
            text.contains("cannot connect to PostgreSQL at postgres://swoop:***@127.0.0.1:1/swoop"),
            "{text}"
        );
        assert!(!text.contains("secret"), "{text}");
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redacted("postgres://swoop:secret@db:5432/swoop"),
            "postgres://swoop:***@db:5432/swoop"
        );
        assert_eq!(redacted("postgres://db/swoop"), "postgres://db/swoop");
    }
}

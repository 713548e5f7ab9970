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
//! - **Several nodes** (`cluster.rs`): nodes, heartbeats, execution owners and trigger leases;
//!   once a node joined, creations and saves are fenced by what it owns (see
//!   [`crate::cluster`]).
//! - **Schema**: migrations run at open under an advisory lock, so nodes starting together
//!   migrate once. Text columns use the "C" collation: ordering and namespace ranges are by
//!   bytes, as in SQLite.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use parking_lot::Mutex;
use serde_json::Value;
use swoop_core::{Execution, LogEntry, State};

mod cluster;

use cluster::Fence;

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
    // 2: several nodes (see `cluster.rs`): who runs an execution, the nodes, the trigger leases.
    r#"
    ALTER TABLE executions ADD COLUMN owner TEXT COLLATE "C";
    CREATE INDEX executions_owner ON executions (owner) WHERE NOT finished;
    CREATE TABLE nodes (
        id           TEXT COLLATE "C" PRIMARY KEY,
        name         TEXT COLLATE "C" NOT NULL,
        roles        TEXT NOT NULL,
        state        TEXT NOT NULL,
        started_at   TIMESTAMPTZ NOT NULL,
        heartbeat_at TIMESTAMPTZ NOT NULL,
        state_at     TIMESTAMPTZ NOT NULL
    );
    CREATE TABLE trigger_leases (
        trigger    TEXT COLLATE "C" PRIMARY KEY,
        node_id    TEXT COLLATE "C" NOT NULL,
        token      BIGINT NOT NULL,
        expires_at TIMESTAMPTZ NOT NULL
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
    /// The cluster's own connection (heartbeats, claims, leases): a statement that waits for a
    /// row lock there never holds up the API's reads.
    cluster_conn: Readers,
    /// Who this store writes for, once a node joined (see [`crate::cluster`]).
    fence: Arc<Fence>,
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
        let fence = Arc::new(Fence::default());
        let writer_fence = fence.clone();
        // The synchronous client runs its own runtime: open it off the async threads.
        let writer = tokio::task::spawn_blocking(move || -> StoreResult<Writer> {
            let mut client = connect_sync(&owned)?;
            migrate(&mut client)?;
            Ok(Writer {
                fence: writer_fence,
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
        let cluster_conn = Readers::connect(url, 1).await?;
        let queue = WriteQueue::start(writer, max_batch)?;
        tracing::debug!(url = %redacted(url), "postgres store open");
        Ok(Arc::new(PostgresStore {
            url: url.to_string(),
            queue,
            readers,
            cluster_conn,
            fence,
        }))
    }

    pub fn stats(&self) -> WriterStats {
        self.queue.stats()
    }
}

/// How long the writer's transaction may sit idle on the server before the server ends the
/// session. A batch's transaction is never idle longer than a statement's round trip; a node
/// frozen mid-transaction (SIGSTOP, a VM paused) would otherwise hold its row locks, and every
/// node that then writes the same dedup key or lease waits for it.
const IDLE_IN_TRANSACTION_TIMEOUT: &str = "5s";

fn connect_sync(url: &str) -> StoreResult<postgres::Client> {
    let cannot = |e: postgres::Error| {
        StoreError::Backend(format!(
            "cannot connect to PostgreSQL at {}: {}",
            redacted(url),
            error_text(&e)
        ))
    };
    let mut client = postgres::Client::connect(url, postgres::NoTls).map_err(cannot)?;
    client
        .batch_execute(&format!(
            "SET idle_in_transaction_session_timeout = '{IDLE_IN_TRANSACTION_TIMEOUT}'"
        ))
        .map_err(cannot)?;
    Ok(client)
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
    fence: Arc<Fence>,
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
        let node = self.fence.node_id();
        let rows = {
            let s = self
                .prepared(
                    "UPDATE executions e SET state = v.state, finished = v.finished, \
                     updated_at = v.updated_at, doc = v.doc \
                     FROM UNNEST($1::text[], $2::text[], $3::bool[], $4::bigint[], $5::text[]) \
                     AS v(id, state, finished, updated_at, doc) \
                     WHERE e.id = v.id AND ($6::text IS NULL OR e.owner = $6) RETURNING e.id",
                )
                .ctx("prepare saves")?;
            self.client
                .query(&s, &[&ids, &states, &finished, &updated, &docs, &node])
                .ctx("update executions")?
        };
        let saved: std::collections::HashSet<String> = rows.iter().map(|r| r.get(0)).collect();
        for (i, op) in batch.iter_mut().enumerate() {
            if let (WriteOp::Save { row, done }, None) = (op, plan[i]) {
                done.result = Some(if saved.contains(&row.id) {
                    Ok(())
                } else {
                    Err(not_saved(&row.id, node.is_some()))
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
        let owner = self.fence.owner_of_new();
        let columns: [&(dyn postgres::types::ToSql + Sync); 9] = [
            &row.id,
            &row.namespace,
            &row.flow_id,
            &row.state,
            &row.finished,
            &row.created_at,
            &row.updated_at,
            &row.doc,
            &owner,
        ];
        let Some(key) = dedup else {
            let inserted = self
                .run(
                    "INSERT INTO executions \
                     (id, namespace, flow_id, state, finished, created_at, updated_at, doc, owner) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (id) DO NOTHING",
                    &columns,
                )
                .ctx("insert execution")?;
            return if inserted == 1 {
                Ok(Created::Created)
            } else {
                Err(exists())
            };
        };
        // The key and the execution in one statement: the execution only if the key was new,
        // and, for a trigger this node leased, only while it still holds the lease. The lease
        // row is read, not locked (a frozen node would hold the lock and stall the takeover):
        // a creation whose statement ran just before the takeover commits, and the new owner
        // finds its dedup key (waiting at most for this transaction) and creates nothing.
        let lease = self.fence.lease_of(&key.trigger);
        let mut params: Vec<&(dyn postgres::types::ToSql + Sync)> = columns.to_vec();
        params.push(&key.trigger);
        params.push(&key.key);
        let row_out = match &lease {
            None => self.one(
                "WITH d AS (\
                   INSERT INTO dedup (trigger, key, execution_id) VALUES ($10, $11, $1) \
                   ON CONFLICT DO NOTHING RETURNING 1\
                 ), e AS (\
                   INSERT INTO executions \
                   (id, namespace, flow_id, state, finished, created_at, updated_at, doc, owner) \
                   SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9 WHERE EXISTS (SELECT 1 FROM d) \
                   ON CONFLICT (id) DO NOTHING RETURNING 1\
                 ) SELECT EXISTS (SELECT 1 FROM d), EXISTS (SELECT 1 FROM e), TRUE",
                &params,
            ),
            Some((node, token)) => {
                params.push(node);
                params.push(token);
                self.one(
                    "WITH l AS (\
                       SELECT 1 FROM trigger_leases l JOIN nodes n ON n.id = l.node_id \
                       WHERE l.trigger = $10 AND l.node_id = $12 AND l.token = $13 \
                       AND n.state IN ('RUNNING', 'TERMINATING')\
                     ), d AS (\
                       INSERT INTO dedup (trigger, key, execution_id) \
                       SELECT $10, $11, $1 WHERE EXISTS (SELECT 1 FROM l) \
                       ON CONFLICT DO NOTHING RETURNING 1\
                     ), e AS (\
                       INSERT INTO executions \
                       (id, namespace, flow_id, state, finished, created_at, updated_at, doc, owner) \
                       SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9 WHERE EXISTS (SELECT 1 FROM d) \
                       ON CONFLICT (id) DO NOTHING RETURNING 1\
                     ) SELECT EXISTS (SELECT 1 FROM d), EXISTS (SELECT 1 FROM e), \
                       EXISTS (SELECT 1 FROM l)",
                    &params,
                )
            }
        }
        .ctx("insert execution and dedup key")?;
        let (key_new, created, leased): (bool, bool, bool) =
            (row_out.get(0), row_out.get(1), row_out.get(2));
        if !leased {
            return Err(StoreError::Fenced(format!(
                "trigger `{}` is run by another node now (this node's lease, token {}, was taken over): event `{}` is left to the new owner",
                key.trigger,
                lease.map_or(0, |(_, t)| t),
                key.key
            )));
        }
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
        let node = self.fence.node_id();
        let changed = self
            .run(
                "UPDATE executions SET state = $2, finished = $3, updated_at = $4, doc = $5 \
                 WHERE id = $1 AND ($6::text IS NULL OR owner = $6)",
                &[
                    &row.id,
                    &row.state,
                    &row.finished,
                    &row.updated_at,
                    &row.doc,
                    &node,
                ],
            )
            .ctx("update execution")?;
        if changed == 0 {
            return Err(not_saved(&row.id, node.is_some()));
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
/// Why a save changed no row: the execution was never created, or (once a node joined) another
/// node runs it now.
fn not_saved(id: &str, fenced: bool) -> StoreError {
    if fenced {
        StoreError::Fenced(format!(
            "cannot save execution {id}: this node does not run it (another node took it over after this one missed its heartbeats, or it was never created)"
        ))
    } else {
        StoreError::Data(format!("cannot save execution {id}: it was never created"))
    }
}

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

    fn cluster(&self) -> Option<&dyn crate::cluster::ClusterStore> {
        Some(self)
    }
}

#[cfg(test)]
mod tests;

//! The embedded backend: one SQLite database file in WAL mode.
//!
//! **Writes** go through a single group-commit writer: one dedicated OS thread owns the only
//! write connection and receives every write as a message on a channel. It blocks for the first
//! message, drains whatever else is already queued (up to [`SqliteOptions::max_batch`]) without
//! waiting for more, runs the whole batch in one transaction, commits once and then answers each
//! waiting caller. An idle store thus answers a write after one transaction, and a busy one pays
//! one commit (one fsync with [`SyncMode::Full`]) for many writes. Within a batch, several saves
//! of one execution are coalesced into the last one. A failing message rolls back only itself and
//! only its caller sees the error: a message of several statements runs in its own savepoint, or
//! (the creation with a dedup key, on the hot path) orders its statements so that a failure
//! leaves nothing to undo.
//!
//! Checkpoints (copying the WAL into the database file, with its fsyncs) run on a thread of their
//! own (`checkpointer`), off the writer's path.
//!
//! Callers serialize JSON documents before sending, so the writer thread (the bottleneck) only
//! runs SQL.
//!
//! **Reads** run on a small pool of read-only connections through
//! [`tokio::task::spawn_blocking`]; they see committed data only (call [`Store::flush`] first to
//! read background writes back).
//!
//! Dropping the store closes the channel: the writer drains what is queued, commits it and exits,
//! and the drop waits for it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};
use serde_json::Value;
use swoop_core::{Execution, LogEntry, State};

mod checkpointer;

pub use crate::write_queue::WriterStats;
use crate::write_queue::{
    BatchBackend, ExecRow, LogRow, WriteOp, WriteQueue, millis_to_date, parse_execution,
    where_clause,
};
use crate::{
    COUNT_CAP, Created, DedupKey, Durability, ExecutionCursor, ExecutionQuery, ExecutionStore,
    FlowRecord, FlowStore, LogStore, Page, Store, StoreError, StoreResult, TriggerStateStore,
};

/// How hard a commit is pushed to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncMode {
    /// WAL with `synchronous=NORMAL`: a commit survives a crash of the process (the OS has it),
    /// not necessarily a power loss. No fsync per commit.
    #[default]
    Normal,
    /// `synchronous=FULL`: every commit is fsynced and survives a power loss.
    Full,
}

#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// The database file, e.g. `<data-dir>/swoop.db`. Its parent directory is created.
    pub path: PathBuf,
    pub sync: SyncMode,
    /// The most messages the writer puts in one transaction.
    pub max_batch: usize,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            path: PathBuf::from("swoop.db"),
            sync: SyncMode::Normal,
            max_batch: 2048,
        }
    }
}

/// The database file's name under a data directory, for [`SqliteStore::open_in`].
pub const DEFAULT_FILE_NAME: &str = "swoop.db";

const READERS: usize = 3;
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_PAGE_SIZE: usize = 25;
const MAX_PAGE_SIZE: usize = 1000;

/// The schema, one migration after the other. `PRAGMA user_version` holds how many were applied;
/// the missing ones run in one transaction at open. Never edit a released migration: add one.
const MIGRATIONS: &[&str] = &[
    // 1: the initial schema.
    r#"
    -- Every revision of every flow. A put with a changed source (or after a delete) adds a row
    -- with the next revision; a delete sets `deleted` on all of the flow's rows, which stay
    -- readable by revision. `updated`: unix milliseconds.
    CREATE TABLE flows (
        namespace TEXT NOT NULL,
        id        TEXT NOT NULL,
        revision  INTEGER NOT NULL,
        source    TEXT NOT NULL,
        deleted   INTEGER NOT NULL DEFAULT 0,
        updated   INTEGER NOT NULL,
        PRIMARY KEY (namespace, id, revision)
    );

    -- One row per execution. `doc` is the Execution as JSON (the source of truth); the other
    -- columns are copies for searching: `state` the current state's name, `finished` 1 for a
    -- terminal state, `created_at` the first state's date and `updated_at` the last save, both in
    -- unix milliseconds.
    CREATE TABLE executions (
        id         TEXT PRIMARY KEY NOT NULL,
        namespace  TEXT NOT NULL,
        flow_id    TEXT NOT NULL,
        state      TEXT NOT NULL,
        finished   INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        doc        TEXT NOT NULL
    );
    -- Search by namespace (exact or prefix range) and flow, newest first.
    CREATE INDEX executions_search ON executions (namespace, flow_id, created_at);
    -- Unfiltered listing, newest first.
    CREATE INDEX executions_created ON executions (created_at);
    -- What a restart resumes; small, since most executions are finished.
    CREATE INDEX executions_unfinished ON executions (created_at, id) WHERE finished = 0;

    -- Which execution an event of a trigger created: (trigger, key) is unique, which is what
    -- makes a connector's redelivery create nothing.
    CREATE TABLE dedup (
        trigger      TEXT NOT NULL,
        key          TEXT NOT NULL,
        execution_id TEXT NOT NULL,
        PRIMARY KEY (trigger, key)
    ) WITHOUT ROWID;

    -- Log lines, in append order (`seq`); `doc` is the LogEntry as JSON.
    CREATE TABLE logs (
        seq          INTEGER PRIMARY KEY AUTOINCREMENT,
        execution_id TEXT NOT NULL,
        doc          TEXT NOT NULL
    );
    CREATE INDEX logs_execution ON logs (execution_id);

    -- The small state each trigger keeps between runs, as JSON.
    CREATE TABLE trigger_state (
        trigger TEXT PRIMARY KEY NOT NULL,
        value   TEXT NOT NULL
    ) WITHOUT ROWID;
    "#,
    // 2: the id in the listing indexes, so a page after a position (keyset paging) and the
    // tie-break on id are read from the index in order.
    r#"
    DROP INDEX executions_created;
    CREATE INDEX executions_created ON executions (created_at, id);
    DROP INDEX executions_search;
    CREATE INDEX executions_search ON executions (namespace, flow_id, created_at, id);
    "#,
    // 3: the state in an index with the namespace, so a search by namespace and state counts
    // and finds its rows from the index alone (1,000,000 executions: 1.2 s → 13 ms).
    r#"
    CREATE INDEX executions_filter ON executions (namespace, state, flow_id, created_at, id);
    "#,
    // 4: the trigger id and the labels searchable from indexes (they were read from the
    // documents: a rare label among 1,000,000 executions took 2.8 s). An execution without
    // labels adds no row to `execution_labels`.
    r#"
    ALTER TABLE executions ADD COLUMN trigger_id TEXT;
    UPDATE executions SET trigger_id = json_extract(doc, '$.trigger.id');
    CREATE INDEX executions_trigger ON executions (trigger_id, created_at, id);
    -- One row per label of an execution; `created_at` copied, so a label's executions are
    -- listed newest first from this table alone.
    CREATE TABLE execution_labels (
        key          TEXT NOT NULL,
        value        TEXT NOT NULL,
        created_at   INTEGER NOT NULL,
        execution_id TEXT NOT NULL,
        PRIMARY KEY (key, value, created_at, execution_id)
    ) WITHOUT ROWID;
    CREATE INDEX execution_labels_execution ON execution_labels (execution_id, key, value);
    INSERT OR IGNORE INTO execution_labels (key, value, created_at, execution_id)
        SELECT json_extract(l.value, '$.key'), json_extract(l.value, '$.value'), e.created_at, e.id
        FROM executions e, json_each(e.doc, '$.labels') l
        WHERE json_extract(l.value, '$.key') IS NOT NULL
          AND json_extract(l.value, '$.value') IS NOT NULL;
    "#,
];

/// The SQLite [`Store`].
pub struct SqliteStore {
    path: PathBuf,
    queue: WriteQueue,
    readers: Arc<ReadPool>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .field("stats", &self.stats())
            .finish()
    }
}

impl SqliteStore {
    /// Opens (or creates) the database, brings its schema up to date and starts the writer.
    pub fn open(options: SqliteOptions) -> StoreResult<Arc<SqliteStore>> {
        if let Some(parent) = options.path.parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent).map_err(|e| {
                StoreError::Backend(format!("cannot create {}: {e}", parent.display()))
            })?;
        }
        let path = options.path.clone();
        let mut conn = open_writer(&path, options.sync)?;
        migrate(&mut conn)?;

        let readers = (0..READERS)
            .map(|_| open_reader(&path).map(Mutex::new))
            .collect::<StoreResult<Vec<_>>>()?;
        let readers = Arc::new(ReadPool {
            conns: readers,
            next: AtomicUsize::new(0),
        });

        let writer = Writer {
            conn,
            checkpoints: checkpointer::start(&path)?,
        };
        let queue = WriteQueue::start(writer, options.max_batch)?;
        tracing::debug!(path = %path.display(), sync = ?options.sync, "sqlite store open");
        Ok(Arc::new(SqliteStore {
            path,
            queue,
            readers,
        }))
    }

    /// Opens `<dir>/swoop.db` with the default options.
    pub fn open_in(dir: &Path) -> StoreResult<Arc<SqliteStore>> {
        Self::open(SqliteOptions {
            path: dir.join(DEFAULT_FILE_NAME),
            ..SqliteOptions::default()
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn stats(&self) -> WriterStats {
        self.queue.stats()
    }

    /// Transactions committed so far.
    pub fn commits(&self) -> u64 {
        self.queue.stats().commits
    }

    async fn read<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    {
        let pool = self.readers.clone();
        tokio::task::spawn_blocking(move || pool.with(f))
            .await
            .map_err(|e| StoreError::Backend(format!("read task failed: {e}")))?
    }
}

// ---------------------------------------------------------------------------------------------
// Connections and migrations

fn open_writer(path: &Path, sync: SyncMode) -> StoreResult<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI,
    )
    .ctx_with(|| format!("cannot open {}", path.display()))?;
    conn.busy_timeout(BUSY_TIMEOUT).ctx("busy_timeout")?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .ctx("journal_mode")?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Backend(format!(
            "{}: cannot switch to WAL mode (journal_mode is {mode})",
            path.display()
        )));
    }
    let sync = match sync {
        SyncMode::Normal => "NORMAL",
        SyncMode::Full => "FULL",
    };
    conn.pragma_update(None, "synchronous", sync)
        .ctx("synchronous")?;
    conn.pragma_update(None, "foreign_keys", false)
        .ctx("foreign_keys")?;
    conn.pragma_update(None, "temp_store", "MEMORY")
        .ctx("temp_store")?;
    // A page cache that holds the hot part of the tables and indexes (the right edges the
    // inserts touch), and no more: SQLite walks the whole page cache's hash table at the end of
    // every write transaction (`pager_end_transaction` → `pcache1TruncateUnsafe`), so its cost
    // per commit grows with the cache. At 64 MiB that walk was 4.5 % of the Kafka drain's CPU;
    // at 8 MiB it is 0.15 %, and pages read back from the OS (`readDbPage`) stay at 0.01 %.
    conn.pragma_update(None, "cache_size", -8 * 1024)
        .ctx("cache_size")?;
    // The background checkpointer copies pages meanwhile (see `checkpointer`).
    conn.pragma_update(
        None,
        "wal_autocheckpoint",
        checkpointer::WRITER_AUTOCHECKPOINT_PAGES,
    )
    .ctx("wal_autocheckpoint")?;
    // Keep the WAL file from staying huge after a burst.
    conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)
        .ctx("journal_size_limit")?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

fn open_reader(path: &Path) -> StoreResult<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI,
    )
    .ctx_with(|| format!("cannot open {} for reading", path.display()))?;
    conn.busy_timeout(BUSY_TIMEOUT).ctx("busy_timeout")?;
    conn.set_prepared_statement_cache_capacity(32);
    Ok(conn)
}

/// Applies the migrations the database lacks, in one transaction.
fn migrate(conn: &mut Connection) -> StoreResult<()> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .ctx("begin migrations")?;
    let version: i64 = tx
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .ctx("user_version")?;
    let applied = usize::try_from(version)
        .map_err(|_| StoreError::Data(format!("bad schema version {version}")))?;
    if applied > MIGRATIONS.len() {
        return Err(StoreError::Data(format!(
            "the database's schema version is {applied}, newer than this swoop knows ({}): \
             it was written by a newer swoop",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(applied) {
        tx.execute_batch(sql)
            .ctx_with(|| format!("migration {}", i + 1))?;
    }
    if applied < MIGRATIONS.len() {
        tx.pragma_update(None, "user_version", MIGRATIONS.len() as i64)
            .ctx("user_version")?;
        tracing::info!(
            from = applied,
            to = MIGRATIONS.len(),
            "store schema migrated"
        );
    }
    tx.commit().ctx("commit migrations")
}

struct ReadPool {
    conns: Vec<Mutex<Connection>>,
    next: AtomicUsize,
}

impl ReadPool {
    /// Runs `f` on a free connection, or waits for one (taken round-robin) if all are busy.
    fn with<T>(&self, f: impl FnOnce(&mut Connection) -> StoreResult<T>) -> StoreResult<T> {
        for conn in &self.conns {
            if let Some(mut guard) = conn.try_lock() {
                return f(&mut guard);
            }
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.conns.len();
        let mut guard = self.conns[i].lock();
        f(&mut guard)
    }
}

// ---------------------------------------------------------------------------------------------
// Errors

fn db_error(context: &str, e: rusqlite::Error) -> StoreError {
    StoreError::Backend(format!("sqlite: {context}: {e}"))
}

trait Ctx<T> {
    fn ctx(self, context: &str) -> StoreResult<T>;
    fn ctx_with(self, context: impl FnOnce() -> String) -> StoreResult<T>;
}

impl<T> Ctx<T> for rusqlite::Result<T> {
    fn ctx(self, context: &str) -> StoreResult<T> {
        self.map_err(|e| db_error(context, e))
    }
    fn ctx_with(self, context: impl FnOnce() -> String) -> StoreResult<T> {
        self.map_err(|e| db_error(&context(), e))
    }
}

fn is_constraint(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::ConstraintViolation)
    )
}

// ---------------------------------------------------------------------------------------------
// Rows

fn revision_from_db(namespace: &str, id: &str, revision: i64) -> StoreResult<u32> {
    u32::try_from(revision)
        .map_err(|_| StoreError::Data(format!("flow {namespace}.{id}: bad revision {revision}")))
}

/// Reads rows of (id, doc) into executions.
fn collect_executions(rows: &mut rusqlite::Rows<'_>) -> StoreResult<Vec<Execution>> {
    let mut out = Vec::new();
    while let Some(row) = rows.next().ctx("read executions")? {
        let id: String = row.get(0).ctx("execution id")?;
        let doc: String = row.get(1).ctx("execution doc")?;
        out.push(parse_execution(&id, &doc)?);
    }
    Ok(out)
}

/// A flow row selected as (namespace, id, revision, source, deleted, updated).
struct FlowRow {
    record: FlowRecord,
    deleted: bool,
}

const FLOW_COLUMNS: &str = "namespace, id, revision, source, deleted, updated";

fn flow_row(row: &rusqlite::Row<'_>) -> StoreResult<FlowRow> {
    let namespace: String = row.get(0).ctx("flow namespace")?;
    let id: String = row.get(1).ctx("flow id")?;
    let revision: i64 = row.get(2).ctx("flow revision")?;
    let source: String = row.get(3).ctx("flow source")?;
    let deleted: bool = row.get(4).ctx("flow deleted")?;
    let updated: i64 = row.get(5).ctx("flow updated")?;
    Ok(FlowRow {
        record: FlowRecord {
            revision: revision_from_db(&namespace, &id, revision)?,
            updated: millis_to_date(updated)?,
            namespace,
            id,
            source,
        },
        deleted,
    })
}

fn latest_flow(conn: &Connection, namespace: &str, id: &str) -> StoreResult<Option<FlowRow>> {
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {FLOW_COLUMNS} FROM flows WHERE namespace = ?1 AND id = ?2 \
             ORDER BY revision DESC LIMIT 1"
        ))
        .ctx("prepare latest flow")?;
    let mut rows = stmt.query(params![namespace, id]).ctx("latest flow")?;
    match rows.next().ctx("latest flow")? {
        Some(row) => flow_row(row).map(Some),
        None => Ok(None),
    }
}

// ---------------------------------------------------------------------------------------------
// The writer

struct Writer {
    conn: Connection,
    checkpoints: checkpointer::Doorbell,
}

impl BatchBackend for Writer {
    fn name(&self) -> &'static str {
        "sqlite"
    }

    fn begin(&mut self) -> StoreResult<()> {
        self.exec("BEGIN IMMEDIATE")
    }

    fn apply(&mut self, op: &mut WriteOp) {
        Writer::apply(self, op)
    }

    fn aborted(&mut self) -> bool {
        // Some errors (disk full, I/O) make SQLite roll the whole transaction back.
        self.conn.is_autocommit()
    }

    fn commit(&mut self) -> StoreResult<()> {
        self.exec("COMMIT")
    }

    fn rollback(&mut self) {
        if !self.conn.is_autocommit() {
            let _ = self.exec("ROLLBACK");
        }
    }

    fn committed(&mut self) {
        self.checkpoints.ring();
    }
}

impl Writer {
    fn exec(&self, sql: &str) -> StoreResult<()> {
        self.conn
            .prepare_cached(sql)
            .and_then(|mut s| s.execute([]))
            .map(|_| ())
            .ctx(sql)
    }

    /// Runs `f` in a savepoint: rolled back alone when it fails.
    fn in_savepoint<T>(&self, f: impl FnOnce(&Self) -> StoreResult<T>) -> StoreResult<T> {
        self.exec("SAVEPOINT op")?;
        let result = f(self);
        if result.is_err()
            && !self.conn.is_autocommit()
            && let Err(e) = self.exec("ROLLBACK TO op")
        {
            // Never commit half a message: give the whole transaction up (the batch fails).
            tracing::error!(error = %e, "cannot roll a savepoint back; rolling the batch back");
            let _ = self.exec("ROLLBACK");
        }
        if !self.conn.is_autocommit() {
            self.exec("RELEASE op")?;
        }
        result
    }

    fn apply(&self, op: &mut WriteOp) {
        match op {
            WriteOp::Create { row, dedup, done } => {
                done.result = Some(self.create(row, dedup.as_ref()));
            }
            WriteOp::Save { row, done } => done.result = Some(self.save(row)),
            WriteOp::Logs { rows, done } => done.result = Some(self.append_logs(rows)),
            WriteOp::PutFlow {
                namespace,
                id,
                source,
                now_ms,
                done,
            } => done.result = Some(self.put_flow(namespace, id, source, *now_ms)),
            WriteOp::DeleteFlow {
                namespace,
                id,
                done,
            } => done.result = Some(self.delete_flow(namespace, id)),
            WriteOp::DeleteExecution { id, done } => done.result = Some(self.delete_execution(id)),
            WriteOp::PutTriggerState {
                trigger,
                value,
                done,
            } => done.result = Some(self.put_trigger_state(trigger, value)),
            WriteOp::Flush { .. } => {}
        }
    }

    /// Creates the execution unless its dedup key is taken. No savepoint: the key is read
    /// first (this writer is the only one, so it cannot be taken in between), then the
    /// execution is inserted (a failed single-row insert changes nothing), then the key; a key
    /// that still fails to insert takes the execution back out. A savepoint would copy every
    /// page the message touches into the statement journal.
    fn create(&self, row: &ExecRow, dedup: Option<&DedupKey>) -> StoreResult<Created> {
        let Some(key) = dedup else {
            self.insert_execution(row)?;
            return Ok(Created::Created);
        };
        let existing: Option<String> = self
            .conn
            .prepare_cached("SELECT execution_id FROM dedup WHERE trigger = ?1 AND key = ?2")
            .and_then(|mut s| {
                s.query_row(params![key.trigger, key.key], |r| r.get(0))
                    .optional()
            })
            .ctx("read dedup key")?;
        if let Some(existing_id) = existing {
            return Ok(Created::Duplicate { existing_id });
        }
        self.insert_execution(row)?;
        let inserted = self
            .conn
            .prepare_cached("INSERT INTO dedup (trigger, key, execution_id) VALUES (?1, ?2, ?3)")
            .and_then(|mut s| s.execute(params![key.trigger, key.key, row.id]))
            .ctx("insert dedup key");
        if let Err(e) = inserted {
            if !self.conn.is_autocommit() {
                self.delete_execution_row(&row.id)
                    .ctx("take back an execution whose dedup key failed")?;
            }
            return Err(e);
        }
        Ok(Created::Created)
    }

    fn insert_execution(&self, row: &ExecRow) -> StoreResult<()> {
        let result = self
            .conn
            .prepare_cached(
                "INSERT INTO executions \
                 (id, namespace, flow_id, state, finished, created_at, updated_at, doc, trigger_id) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    row.id,
                    row.namespace,
                    row.flow_id,
                    row.state,
                    row.finished,
                    row.created_at,
                    row.updated_at,
                    row.doc,
                    row.trigger_id
                ])
            });
        match result {
            Ok(_) => self.insert_labels(row),
            Err(e) if is_constraint(&e) => Err(StoreError::Data(format!(
                "execution {} already exists",
                row.id
            ))),
            Err(e) => Err(db_error("insert execution", e)),
        }
    }

    fn insert_labels(&self, row: &ExecRow) -> StoreResult<()> {
        for (key, value) in &row.labels {
            self.conn
                .prepare_cached(
                    "INSERT OR IGNORE INTO execution_labels (key, value, created_at, execution_id) \
                     VALUES (?1, ?2, ?3, ?4)",
                )
                .and_then(|mut s| s.execute(params![key, value, row.created_at, row.id]))
                .ctx("insert execution label")?;
        }
        Ok(())
    }

    /// The execution's row and its labels' rows.
    fn delete_execution_row(&self, id: &str) -> rusqlite::Result<usize> {
        self.conn
            .prepare_cached("DELETE FROM execution_labels WHERE execution_id = ?1")
            .and_then(|mut s| s.execute([id]))?;
        self.conn
            .prepare_cached("DELETE FROM executions WHERE id = ?1")
            .and_then(|mut s| s.execute([id]))
    }

    fn save(&self, row: &ExecRow) -> StoreResult<()> {
        let changed = self
            .conn
            .prepare_cached(
                "UPDATE executions SET state = ?2, finished = ?3, updated_at = ?4, doc = ?5 \
                 WHERE id = ?1",
            )
            .and_then(|mut s| {
                s.execute(params![
                    row.id,
                    row.state,
                    row.finished,
                    row.updated_at,
                    row.doc
                ])
            })
            .ctx("update execution")?;
        if changed == 0 {
            return Err(StoreError::Data(format!(
                "cannot save execution {}: it was never created",
                row.id
            )));
        }
        // A task may have changed the labels (an execution without any never had one: labels
        // are only added or replaced).
        if !row.labels.is_empty() {
            self.conn
                .prepare_cached("DELETE FROM execution_labels WHERE execution_id = ?1")
                .and_then(|mut s| s.execute([&row.id]))
                .ctx("replace execution labels")?;
            self.insert_labels(row)?;
        }
        Ok(())
    }

    /// One line needs no savepoint (a failed single-row insert changes nothing); several do.
    fn append_logs(&self, rows: &[LogRow]) -> StoreResult<()> {
        let insert = |w: &Self| {
            let mut stmt = w
                .conn
                .prepare_cached("INSERT INTO logs (execution_id, doc) VALUES (?1, ?2)")
                .ctx("prepare insert log")?;
            for row in rows {
                stmt.execute(params![row.execution_id, row.doc])
                    .ctx("insert log")?;
            }
            Ok(())
        };
        match rows {
            [_] => insert(self),
            _ => self.in_savepoint(insert),
        }
    }

    fn put_flow(
        &self,
        namespace: &str,
        id: &str,
        source: &str,
        now_ms: i64,
    ) -> StoreResult<FlowRecord> {
        let latest = latest_flow(&self.conn, namespace, id)?;
        if let Some(latest) = &latest
            && !latest.deleted
            && latest.record.source == source
        {
            return Ok(latest.record.clone());
        }
        let revision = match &latest {
            None => 1,
            Some(latest) => latest.record.revision.checked_add(1).ok_or_else(|| {
                StoreError::Data(format!("flow {namespace}.{id}: too many revisions"))
            })?,
        };
        self.conn
            .prepare_cached(
                "INSERT INTO flows (namespace, id, revision, source, deleted, updated) \
                 VALUES (?1, ?2, ?3, ?4, 0, ?5)",
            )
            .and_then(|mut s| s.execute(params![namespace, id, revision, source, now_ms]))
            .ctx("insert flow")?;
        Ok(FlowRecord {
            namespace: namespace.to_string(),
            id: id.to_string(),
            revision,
            source: source.to_string(),
            updated: millis_to_date(now_ms)?,
        })
    }

    fn delete_flow(&self, namespace: &str, id: &str) -> StoreResult<bool> {
        let changed = self
            .conn
            .prepare_cached(
                "UPDATE flows SET deleted = 1 WHERE namespace = ?1 AND id = ?2 AND deleted = 0",
            )
            .and_then(|mut s| s.execute(params![namespace, id]))
            .ctx("delete flow")?;
        Ok(changed > 0)
    }

    /// Deletes the execution and its logs; its dedup keys stay, so a redelivered event still
    /// creates nothing.
    fn delete_execution(&self, id: &str) -> StoreResult<bool> {
        self.conn
            .prepare_cached("DELETE FROM logs WHERE execution_id = ?1")
            .and_then(|mut s| s.execute([id]))
            .ctx("delete execution logs")?;
        let changed = self.delete_execution_row(id).ctx("delete execution")?;
        Ok(changed > 0)
    }

    fn put_trigger_state(&self, trigger: &str, value: &str) -> StoreResult<()> {
        self.conn
            .prepare_cached(
                "INSERT INTO trigger_state (trigger, value) VALUES (?1, ?2) \
                 ON CONFLICT (trigger) DO UPDATE SET value = excluded.value",
            )
            .and_then(|mut s| s.execute(params![trigger, value]))
            .ctx("put trigger state")?;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// The traits

#[async_trait]
impl FlowStore for SqliteStore {
    async fn put_flow(&self, namespace: &str, id: &str, source: &str) -> StoreResult<FlowRecord> {
        self.queue.put_flow(namespace, id, source).await
    }

    async fn get_flow(&self, namespace: &str, id: &str) -> StoreResult<Option<FlowRecord>> {
        let (namespace, id) = (namespace.to_string(), id.to_string());
        self.read(move |conn| {
            Ok(latest_flow(conn, &namespace, &id)?
                .filter(|f| !f.deleted)
                .map(|f| f.record))
        })
        .await
    }

    async fn get_flow_revision(
        &self,
        namespace: &str,
        id: &str,
        revision: u32,
    ) -> StoreResult<Option<FlowRecord>> {
        let (namespace, id) = (namespace.to_string(), id.to_string());
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {FLOW_COLUMNS} FROM flows \
                     WHERE namespace = ?1 AND id = ?2 AND revision = ?3"
                ))
                .ctx("prepare flow revision")?;
            let mut rows = stmt
                .query(params![namespace, id, revision])
                .ctx("flow revision")?;
            match rows.next().ctx("flow revision")? {
                Some(row) => Ok(Some(flow_row(row)?.record)),
                None => Ok(None),
            }
        })
        .await
    }

    async fn delete_flow(&self, namespace: &str, id: &str) -> StoreResult<bool> {
        self.queue.delete_flow(namespace, id).await
    }

    async fn list_flows(&self) -> StoreResult<Vec<FlowRecord>> {
        self.read(|conn| {
            // A delete marks every revision, so the newest revision of a live flow is the
            // newest row that is not deleted.
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {FLOW_COLUMNS} FROM flows f WHERE deleted = 0 AND revision = \
                     (SELECT MAX(revision) FROM flows g \
                      WHERE g.namespace = f.namespace AND g.id = f.id) \
                     ORDER BY namespace, id"
                ))
                .ctx("prepare list flows")?;
            let mut rows = stmt.query([]).ctx("list flows")?;
            let mut out = Vec::new();
            while let Some(row) = rows.next().ctx("list flows")? {
                out.push(flow_row(row)?.record);
            }
            Ok(out)
        })
        .await
    }
}

#[async_trait]
impl ExecutionStore for SqliteStore {
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

    async fn delete_execution(&self, id: &str) -> StoreResult<bool> {
        self.queue.delete_execution(id).await
    }

    async fn get_execution(&self, id: &str) -> StoreResult<Option<Execution>> {
        let id = id.to_string();
        self.read(move |conn| {
            let doc: Option<String> = conn
                .prepare_cached("SELECT doc FROM executions WHERE id = ?1")
                .and_then(|mut s| s.query_row([&id], |r| r.get(0)).optional())
                .ctx("get execution")?;
            doc.map(|doc| parse_execution(&id, &doc)).transpose()
        })
        .await
    }

    async fn search_executions(&self, query: &ExecutionQuery) -> StoreResult<Page<Execution>> {
        use rusqlite::types::Value as Sql;
        let mut clauses: Vec<String> = Vec::new();
        let mut args: Vec<Sql> = Vec::new();
        if let Some(ns) = &query.namespace {
            // The namespace itself, or one below it: `ns.` <= namespace < `ns/` ('/' follows
            // '.'), a range the index serves.
            clauses.push("(namespace = ? OR (namespace >= ? AND namespace < ?))".into());
            args.push(Sql::Text(ns.clone()));
            args.push(Sql::Text(format!("{ns}.")));
            args.push(Sql::Text(format!("{ns}/")));
        }
        if let Some(flow_id) = &query.flow_id {
            clauses.push("flow_id = ?".into());
            args.push(Sql::Text(flow_id.clone()));
        }
        if !query.states.is_empty() {
            let marks = vec!["?"; query.states.len()].join(", ");
            clauses.push(format!("state IN ({marks})"));
            args.extend(
                query
                    .states
                    .iter()
                    .map(|s: &State| Sql::Text(s.as_str().to_string())),
            );
        }
        if let Some(from) = query.created_from {
            clauses.push("executions.created_at >= ?".into());
            args.push(Sql::Integer(from));
        }
        if let Some(before) = query.created_before {
            clauses.push("executions.created_at < ?".into());
            args.push(Sql::Integer(before));
        }
        if let Some(trigger) = &query.trigger_id {
            clauses.push("trigger_id = ?".into());
            args.push(Sql::Text(trigger.clone()));
        }
        // The first label drives the search from `execution_labels`, newest first; the others
        // are looked up per execution.
        let mut from = "executions".to_string();
        let mut order = "created_at DESC, id DESC".to_string();
        let mut labels = query.labels.iter();
        if let Some((key, value)) = labels.next() {
            from = "execution_labels l JOIN executions ON executions.id = l.execution_id".into();
            order = "l.created_at DESC, l.execution_id DESC".into();
            clauses.push("l.key = ? AND l.value = ?".into());
            args.push(Sql::Text(key.clone()));
            args.push(Sql::Text(value.clone()));
        }
        for (key, value) in labels {
            clauses.push(
                "EXISTS (SELECT 1 FROM execution_labels o WHERE o.execution_id = executions.id \
                 AND o.key = ? AND o.value = ?)"
                    .into(),
            );
            args.push(Sql::Text(key.clone()));
            args.push(Sql::Text(value.clone()));
        }
        let filter = where_clause(&clauses);
        let capped = query.counts_up_to_cap();
        let count_sql = if capped {
            format!("SELECT COUNT(*) FROM (SELECT 1 FROM {from} {filter} LIMIT {COUNT_CAP})")
        } else {
            format!("SELECT COUNT(*) FROM {from} {filter}")
        };
        let size = match query.size {
            0 => DEFAULT_PAGE_SIZE,
            n => n.min(MAX_PAGE_SIZE),
        };
        // The page's own rows: after the cursor, or skipping whole pages.
        let mut page_clauses = clauses;
        let mut page_args = args.clone();
        let offset = match &query.after {
            Some(after) => {
                page_clauses.push(
                    "(executions.created_at < ? OR (executions.created_at = ? AND executions.id < ?))"
                        .into(),
                );
                page_args.push(Sql::Integer(after.created_at));
                page_args.push(Sql::Integer(after.created_at));
                page_args.push(Sql::Text(after.id.clone()));
                0
            }
            None => (query.page.max(1) - 1).saturating_mul(size),
        };
        let page_filter = where_clause(&page_clauses);
        let limit = i64::try_from(size).unwrap_or(i64::MAX);
        let offset = i64::try_from(offset).unwrap_or(i64::MAX);

        self.read(move |conn| {
            // One read transaction, so the count and the page agree.
            let tx = conn.transaction().ctx("begin search")?;
            let total: i64 = tx
                .prepare_cached(&count_sql)
                .and_then(|mut s| {
                    s.query_row(rusqlite::params_from_iter(args.iter()), |r| r.get(0))
                })
                .ctx("count executions")?;
            let mut results = Vec::new();
            let mut last = None;
            {
                let mut stmt = tx
                    // The page's ids first, from the indexes alone, then their documents:
                    // a filtered search does not read the document of every row it sorts.
                    .prepare_cached(&format!(
                        "SELECT e.id, e.doc, e.created_at FROM executions e JOIN \
                         (SELECT executions.id AS id FROM {from} {page_filter} \
                          ORDER BY {order} LIMIT ? OFFSET ?) p ON e.id = p.id \
                         ORDER BY e.created_at DESC, e.id DESC"
                    ))
                    .ctx("prepare search executions")?;
                page_args.push(Sql::Integer(limit));
                page_args.push(Sql::Integer(offset));
                let mut rows = stmt
                    .query(rusqlite::params_from_iter(page_args.iter()))
                    .ctx("search executions")?;
                while let Some(row) = rows.next().ctx("read executions")? {
                    let id: String = row.get(0).ctx("execution id")?;
                    let doc: String = row.get(1).ctx("execution doc")?;
                    let created_at: i64 = row.get(2).ctx("execution created_at")?;
                    results.push(parse_execution(&id, &doc)?);
                    last = Some(ExecutionCursor { created_at, id });
                }
            }
            tx.finish().ctx("end search")?;
            let total = u64::try_from(total).unwrap_or(0);
            Ok(Page {
                next: last.filter(|_| results.len() == size),
                results,
                total,
                total_is_lower_bound: capped && total >= COUNT_CAP,
            })
        })
        .await
    }

    async fn unfinished_executions(&self) -> StoreResult<Vec<Execution>> {
        self.read(|conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT id, doc FROM executions WHERE finished = 0 ORDER BY created_at, id",
                )
                .ctx("prepare unfinished executions")?;
            let mut rows = stmt.query([]).ctx("unfinished executions")?;
            collect_executions(&mut rows)
        })
        .await
    }

    async fn execution_for_dedup(&self, dedup: &DedupKey) -> StoreResult<Option<String>> {
        let dedup = dedup.clone();
        self.read(move |conn| {
            conn.prepare_cached("SELECT execution_id FROM dedup WHERE trigger = ?1 AND key = ?2")
                .and_then(|mut s| {
                    s.query_row(params![dedup.trigger, dedup.key], |r| r.get(0))
                        .optional()
                })
                .ctx("execution for dedup key")
        })
        .await
    }
}

#[async_trait]
impl LogStore for SqliteStore {
    fn append_logs(&self, logs: Vec<LogEntry>) {
        self.queue.append_logs(logs)
    }

    async fn logs_for_execution(&self, execution_id: &str) -> StoreResult<Vec<LogEntry>> {
        let execution_id = execution_id.to_string();
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached("SELECT seq, doc FROM logs WHERE execution_id = ?1 ORDER BY seq")
                .ctx("prepare logs")?;
            let mut rows = stmt.query([&execution_id]).ctx("logs")?;
            let mut out = Vec::new();
            while let Some(row) = rows.next().ctx("logs")? {
                let seq: i64 = row.get(0).ctx("log seq")?;
                let doc: String = row.get(1).ctx("log doc")?;
                out.push(serde_json::from_str(&doc).map_err(|e| {
                    StoreError::Data(format!(
                        "log line {seq} of execution {execution_id}: bad JSON document: {e}"
                    ))
                })?);
            }
            Ok(out)
        })
        .await
    }
}

#[async_trait]
impl TriggerStateStore for SqliteStore {
    async fn get_trigger_state(&self, trigger: &str) -> StoreResult<Option<Value>> {
        let trigger = trigger.to_string();
        self.read(move |conn| {
            let value: Option<String> = conn
                .prepare_cached("SELECT value FROM trigger_state WHERE trigger = ?1")
                .and_then(|mut s| s.query_row([&trigger], |r| r.get(0)).optional())
                .ctx("get trigger state")?;
            value
                .map(|v| {
                    serde_json::from_str(&v).map_err(|e| {
                        StoreError::Data(format!("state of trigger {trigger}: bad JSON: {e}"))
                    })
                })
                .transpose()
        })
        .await
    }

    async fn put_trigger_state(&self, trigger: &str, state: &Value) -> StoreResult<()> {
        self.queue.put_trigger_state(trigger, state).await
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn flush(&self) -> StoreResult<()> {
        self.queue.flush().await
    }

    fn backend(&self) -> &'static str {
        "sqlite"
    }

    fn writer_metrics(&self) -> Option<crate::WriterMetrics> {
        Some(self.queue.metrics())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::{self, Guarded};
    use crate::write_queue::{GroupWriter, Reply};
    use chrono::Utc;
    use serde_json::json;
    use tokio::sync::oneshot;

    /// A store in a temporary directory that lives as long as it.
    struct TempStore {
        store: Arc<SqliteStore>,
        _dir: tempfile::TempDir,
    }

    fn temp_store() -> TempStore {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = SqliteStore::open_in(dir.path()).expect("open the store");
        TempStore { store, _dir: dir }
    }

    async fn make_store() -> Guarded<tempfile::TempDir> {
        let TempStore { store, _dir } = temp_store();
        Guarded { store, guard: _dir }
    }

    crate::store_conformance_tests!(make_store);

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn durable_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested").join("swoop.db");
        conformance::durable_across_reopen(|| {
            let path = path.clone();
            async move {
                let store: Arc<dyn Store> = SqliteStore::open(SqliteOptions {
                    path,
                    sync: SyncMode::Full,
                    ..SqliteOptions::default()
                })
                .unwrap();
                store
            }
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writer_batches_concurrent_writes() {
        let t = temp_store();
        let store = t.store.clone();
        let before = store.stats();
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..1000 {
            let store = store.clone();
            tasks.spawn(async move {
                let e = Execution::new("batch", "flow", 1);
                let k = DedupKey {
                    trigger: "batch/flow/t".into(),
                    key: i.to_string(),
                };
                store.create_execution(&e, Some(k)).await
            });
        }
        while let Some(joined) = tasks.join_next().await {
            assert_eq!(joined.unwrap().unwrap(), Created::Created);
        }
        let stats = store.stats();
        let (commits, writes) = (stats.commits - before.commits, stats.writes - before.writes);
        assert_eq!(writes, 1000);
        assert!(commits < writes, "{commits} commits for {writes} writes");
        assert_eq!(store.commits(), stats.commits);
        assert_eq!(store.backend(), "sqlite");
    }

    #[tokio::test]
    async fn drop_drains_background_writes() {
        let dir = tempfile::tempdir().unwrap();
        let mut e = Execution::new("drain", "flow", 1);
        {
            let store = SqliteStore::open_in(dir.path()).unwrap();
            store.create_execution(&e, None).await.unwrap();
            e.state.transition(State::Running);
            store
                .save_execution(&e, Durability::Background)
                .await
                .unwrap();
            store.append_logs(vec![LogEntry {
                namespace: "drain".into(),
                flow_id: "flow".into(),
                execution_id: e.id.clone(),
                task_id: None,
                task_run_id: None,
                attempt_number: 0,
                timestamp: Utc::now(),
                level: swoop_core::model::LogLevel::Info,
                message: "hello".into(),
            }]);
            // No flush: dropping the store commits what is queued.
        }
        let store = SqliteStore::open_in(dir.path()).unwrap();
        let got = store.get_execution(&e.id).await.unwrap().unwrap();
        assert_eq!(got.state.current, State::Running);
        assert_eq!(store.logs_for_execution(&e.id).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn closed_store_says_so() {
        // A store whose writer is gone answers Closed rather than hanging.
        let t = temp_store();
        let e = Execution::new("closed", "flow", 1);
        let mut store = Arc::try_unwrap(t.store).expect("the only handle");
        store.queue.close();
        assert!(matches!(
            store.create_execution(&e, None).await,
            Err(StoreError::Closed)
        ));
        assert!(matches!(store.flush().await, Err(StoreError::Closed)));
        // Reads still work.
        assert!(store.get_execution(&e.id).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn schema_version_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("swoop.db");
        drop(SqliteStore::open_in(dir.path()).unwrap());
        {
            let conn = Connection::open(&path).unwrap();
            let v: i64 = conn
                .query_row("PRAGMA user_version", [], |r| r.get(0))
                .unwrap();
            assert_eq!(v, MIGRATIONS.len() as i64);
        }
        // Reopening applies nothing and keeps the data.
        drop(SqliteStore::open_in(dir.path()).unwrap());
        {
            let conn = Connection::open(&path).unwrap();
            conn.pragma_update(None, "user_version", 99).unwrap();
        }
        match SqliteStore::open_in(dir.path()) {
            Err(StoreError::Data(message)) => assert!(message.contains("newer"), "{message}"),
            other => panic!("expected a schema version error, got {other:?}"),
        }
    }

    // --- The writer's batch semantics, driven directly with hand-made batches.

    fn writer_in(dir: &Path) -> GroupWriter<Writer> {
        let path = dir.join("swoop.db");
        let mut conn = open_writer(&path, SyncMode::Normal).unwrap();
        migrate(&mut conn).unwrap();
        GroupWriter {
            backend: Writer {
                conn,
                checkpoints: checkpointer::start(&path).unwrap(),
            },
            max_batch: 2048,
            counters: Arc::default(),
        }
    }

    fn doc_of(w: &GroupWriter<Writer>, id: &str) -> Option<Execution> {
        let doc: Option<String> = w
            .backend
            .conn
            .query_row("SELECT doc FROM executions WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .optional()
            .unwrap();
        doc.map(|d| serde_json::from_str(&d).unwrap())
    }

    fn create_op(
        e: &Execution,
        dedup: Option<DedupKey>,
    ) -> (WriteOp, oneshot::Receiver<StoreResult<Created>>) {
        let (tx, rx) = oneshot::channel();
        let op = WriteOp::Create {
            row: ExecRow::new(e).unwrap(),
            dedup,
            done: Reply::to(tx),
        };
        (op, rx)
    }

    fn save_op(e: &Execution, wait: bool) -> (WriteOp, oneshot::Receiver<StoreResult<()>>) {
        let (tx, rx) = oneshot::channel();
        let op = WriteOp::Save {
            row: ExecRow::new(e).unwrap(),
            done: Reply::waits(tx, wait),
        };
        (op, rx)
    }

    #[test]
    fn batch_coalesces_saves_after_their_create() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = writer_in(dir.path());
        let mut e = Execution::new("ns", "flow", 1);
        let (c, c_rx) = create_op(&e, None);
        e.outputs.insert("step".into(), json!(1));
        let (s1, s1_rx) = save_op(&e, true);
        e.outputs.insert("step".into(), json!(2));
        let (s2, _) = save_op(&e, false);
        e.state.transition(State::Success);
        e.outputs.insert("step".into(), json!(3));
        let (s3, s3_rx) = save_op(&e, true);
        let mut batch = vec![c, s1, s2, s3];
        w.run_batch(&mut batch);

        assert_eq!(c_rx.blocking_recv().unwrap().unwrap(), Created::Created);
        assert!(s1_rx.blocking_recv().unwrap().is_ok());
        assert!(s3_rx.blocking_recv().unwrap().is_ok());
        let stored = doc_of(&w, &e.id).unwrap();
        assert_eq!(stored, e);
        let stats = &w.counters;
        assert_eq!(stats.commits.load(Ordering::Relaxed), 1);
        assert_eq!(stats.writes.load(Ordering::Relaxed), 4);
        assert_eq!(stats.coalesced.load(Ordering::Relaxed), 2);
        let finished: bool = w
            .backend
            .conn
            .query_row(
                "SELECT finished FROM executions WHERE id = ?1",
                [&e.id],
                |r| r.get(0),
            )
            .unwrap();
        assert!(finished);
    }

    #[test]
    fn batch_keeps_a_save_before_a_create_of_the_same_id_apart() {
        // save X, create X, save X: the first save is not merged into the last (it comes before
        // the create and fails, as it would alone).
        let dir = tempfile::tempdir().unwrap();
        let mut w = writer_in(dir.path());
        let mut e = Execution::new("ns", "flow", 1);
        let (s0, s0_rx) = save_op(&e, true);
        let (c, c_rx) = create_op(&e, None);
        e.state.transition(State::Running);
        let (s1, s1_rx) = save_op(&e, true);
        w.run_batch(&mut vec![s0, c, s1]);
        assert!(matches!(
            s0_rx.blocking_recv().unwrap(),
            Err(StoreError::Data(_))
        ));
        assert_eq!(c_rx.blocking_recv().unwrap().unwrap(), Created::Created);
        assert!(s1_rx.blocking_recv().unwrap().is_ok());
        assert_eq!(doc_of(&w, &e.id).unwrap().state.current, State::Running);
    }

    #[test]
    fn batch_dedups_within_itself() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = writer_in(dir.path());
        let k = DedupKey {
            trigger: "ns/flow/t".into(),
            key: "k".into(),
        };
        let a = Execution::new("ns", "flow", 1);
        let b = Execution::new("ns", "flow", 1);
        let (ca, ca_rx) = create_op(&a, Some(k.clone()));
        let (cb, cb_rx) = create_op(&b, Some(k));
        w.run_batch(&mut vec![ca, cb]);
        assert_eq!(ca_rx.blocking_recv().unwrap().unwrap(), Created::Created);
        assert_eq!(
            cb_rx.blocking_recv().unwrap().unwrap(),
            Created::Duplicate {
                existing_id: a.id.clone()
            }
        );
        assert!(doc_of(&w, &b.id).is_none());
    }

    #[test]
    fn a_failing_message_fails_alone() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = writer_in(dir.path());
        let a = Execution::new("ns", "flow", 1);
        let b = Execution::new("ns", "flow", 1);
        let ghost = Execution::new("ns", "flow", 1);
        let k = DedupKey {
            trigger: "ns/flow/t".into(),
            key: "k".into(),
        };
        let (ca, ca_rx) = create_op(&a, None);
        // Same id as `a`, with a dedup key: the insert fails, and its dedup row must go too.
        let (again, again_rx) = create_op(&a, Some(k.clone()));
        let (ghost_save, ghost_rx) = save_op(&ghost, true);
        let (cb, cb_rx) = create_op(&b, None);
        let (ftx, frx) = oneshot::channel();
        let flush = WriteOp::Flush {
            done: Reply::to(ftx),
        };
        w.run_batch(&mut vec![ca, again, ghost_save, cb, flush]);
        assert_eq!(ca_rx.blocking_recv().unwrap().unwrap(), Created::Created);
        assert!(matches!(
            again_rx.blocking_recv().unwrap(),
            Err(StoreError::Data(m)) if m.contains("already exists")
        ));
        assert!(matches!(
            ghost_rx.blocking_recv().unwrap(),
            Err(StoreError::Data(m)) if m.contains("never created")
        ));
        assert_eq!(cb_rx.blocking_recv().unwrap().unwrap(), Created::Created);
        assert!(frx.blocking_recv().unwrap().is_ok());
        assert!(doc_of(&w, &a.id).is_some());
        assert!(doc_of(&w, &b.id).is_some());
        let dedup_rows: i64 = w
            .backend
            .conn
            .query_row("SELECT COUNT(*) FROM dedup", [], |r| r.get(0))
            .unwrap();
        assert_eq!(
            dedup_rows, 0,
            "the failed create's dedup key was rolled back"
        );
    }

    #[test]
    fn flush_alone_commits_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = writer_in(dir.path());
        let (ftx, frx) = oneshot::channel();
        w.run_batch(&mut vec![WriteOp::Flush {
            done: Reply::to(ftx),
        }]);
        assert!(frx.blocking_recv().unwrap().is_ok());
        assert_eq!(w.counters.commits.load(Ordering::Relaxed), 0);
    }
}

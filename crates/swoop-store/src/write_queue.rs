//! What both backends share on the write side: the messages a store sends its writer, the rows
//! made on the caller's side (JSON serialized before the writer sees them), and the group-commit
//! writer loop — one OS thread owns the only write connection, takes the first queued message,
//! drains whatever else is queued (up to a batch's size; when it is busy, after a short
//! [`LINGER`] for more), runs the batch in one transaction, commits once, then answers each
//! caller. Several saves of one execution in a batch are coalesced into the last one; each
//! message that takes more than one statement runs in a savepoint, so a failing message fails
//! alone.
//!
//! [`WriteQueue`] is the sending side every store method uses; a backend implements
//! [`BatchBackend`] (its SQL) and nothing else of the loop.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;

use chrono::{DateTime, Utc};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use swoop_core::{Execution, LogEntry};
use tokio::sync::oneshot;

use crate::{Created, DedupKey, Durability, FlowRecord, StoreError, StoreResult};

/// What the writer did so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Transactions committed.
    pub commits: u64,
    /// Write messages received (creates, saves, log batches, flows, trigger states; not flush
    /// barriers), coalesced ones included.
    pub writes: u64,
    /// Saves skipped because a newer save of the same execution was in the same batch.
    pub coalesced: u64,
}

/// The writer's distributions, for `/metrics`: handles on the live histograms.
#[derive(Debug, Clone)]
pub struct WriterMetrics {
    /// Seconds to write and commit one batch (its whole transaction).
    pub commit_seconds: Histogram,
    /// Write messages per committed batch.
    pub batch_size: Histogram,
}

impl Default for WriterMetrics {
    fn default() -> Self {
        WriterMetrics {
            // 100 µs … ~3.3 s.
            commit_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            // 1 … 16,384 messages.
            batch_size: Histogram::new(exponential_buckets(1.0, 2.0, 15)),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Rows

/// An execution ready to write: the JSON document and the searchable columns, made on the
/// caller's side.
#[derive(Debug)]
pub(crate) struct ExecRow {
    pub(crate) id: String,
    pub(crate) namespace: String,
    pub(crate) flow_id: String,
    pub(crate) state: &'static str,
    pub(crate) finished: bool,
    pub(crate) created_at: i64,
    pub(crate) updated_at: i64,
    pub(crate) doc: String,
    /// The trigger's id in the flow, for the search by trigger.
    pub(crate) trigger_id: Option<String>,
    /// The labels (key, value), for the search by label.
    pub(crate) labels: Vec<(String, String)>,
}

impl ExecRow {
    pub(crate) fn new(execution: &Execution) -> StoreResult<Self> {
        let doc = serde_json::to_string(execution).map_err(|e| {
            StoreError::Data(format!("execution {}: cannot serialize: {e}", execution.id))
        })?;
        let now = Utc::now().timestamp_millis();
        Ok(Self {
            id: execution.id.clone(),
            namespace: execution.namespace.clone(),
            flow_id: execution.flow_id.clone(),
            state: execution.state.current.as_str(),
            finished: execution.state.current.is_terminal(),
            created_at: execution
                .state
                .start_date()
                .map_or(now, |d| d.timestamp_millis()),
            updated_at: now,
            doc,
            trigger_id: execution.trigger.as_ref().map(|t| t.id.clone()),
            labels: execution
                .labels
                .iter()
                .map(|l| (l.key.clone(), l.value.clone()))
                .collect(),
        })
    }
}

#[derive(Debug)]
pub(crate) struct LogRow {
    pub(crate) execution_id: String,
    pub(crate) doc: String,
}

pub(crate) fn millis_to_date(ms: i64) -> StoreResult<DateTime<Utc>> {
    DateTime::from_timestamp_millis(ms)
        .ok_or_else(|| StoreError::Data(format!("timestamp {ms} ms is out of range")))
}

pub(crate) fn parse_execution(id: &str, doc: &str) -> StoreResult<Execution> {
    serde_json::from_str(doc)
        .map_err(|e| StoreError::Data(format!("execution {id}: bad JSON document: {e}")))
}

pub(crate) fn clone_error(e: &StoreError) -> StoreError {
    match e {
        StoreError::Backend(s) => StoreError::Backend(s.clone()),
        StoreError::Data(s) => StoreError::Data(s.clone()),
        StoreError::Closed => StoreError::Closed,
        StoreError::Fenced(s) => StoreError::Fenced(s.clone()),
    }
}

// ---------------------------------------------------------------------------------------------
// Messages

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) commits: AtomicU64,
    pub(crate) writes: AtomicU64,
    pub(crate) coalesced: AtomicU64,
    pub(crate) metrics: WriterMetrics,
}

/// Where a message's outcome goes: its caller (if it waits) and, until the batch commits, the
/// outcome itself.
pub(crate) struct Reply<T> {
    tx: Option<oneshot::Sender<StoreResult<T>>>,
    pub(crate) result: Option<StoreResult<T>>,
}

impl<T> Reply<T> {
    pub(crate) fn to(tx: oneshot::Sender<StoreResult<T>>) -> Self {
        Self {
            tx: Some(tx),
            result: None,
        }
    }

    pub(crate) fn none() -> Self {
        Self {
            tx: None,
            result: None,
        }
    }

    pub(crate) fn waits(tx: oneshot::Sender<StoreResult<T>>, wait: bool) -> Self {
        if wait { Self::to(tx) } else { Self::none() }
    }

    pub(crate) fn fail(&mut self, e: &StoreError) {
        self.result = Some(Err(clone_error(e)));
    }

    /// Hands the outcome to the caller; an error nobody waits for is logged.
    pub(crate) fn finish(self, what: &'static str, key: &str) {
        let result = self
            .result
            .unwrap_or_else(|| Err(StoreError::Backend(format!("{what} {key}: no outcome"))));
        match self.tx {
            Some(tx) => {
                // The caller may have given up waiting; the write stands.
                let _ = tx.send(result);
            }
            None => {
                if let Err(e) = result {
                    tracing::warn!(op = what, key = %key, error = %e, "background write failed");
                }
            }
        }
    }
}

pub(crate) enum WriteOp {
    Create {
        row: ExecRow,
        dedup: Option<DedupKey>,
        done: Reply<Created>,
    },
    Save {
        row: ExecRow,
        done: Reply<()>,
    },
    Logs {
        rows: Vec<LogRow>,
        done: Reply<()>,
    },
    PutFlow {
        namespace: String,
        id: String,
        source: String,
        now_ms: i64,
        done: Reply<FlowRecord>,
    },
    DeleteFlow {
        namespace: String,
        id: String,
        done: Reply<bool>,
    },
    DeleteExecution {
        id: String,
        done: Reply<bool>,
    },
    PutTriggerState {
        trigger: String,
        value: String,
        done: Reply<()>,
    },
    Flush {
        done: Reply<()>,
    },
}

impl WriteOp {
    pub(crate) fn is_write(&self) -> bool {
        !matches!(self, WriteOp::Flush { .. })
    }

    /// The message's own error, once applied.
    pub(crate) fn error(&self) -> Option<String> {
        fn of<T>(done: &Reply<T>) -> Option<String> {
            match &done.result {
                Some(Err(e)) => Some(e.to_string()),
                _ => None,
            }
        }
        match self {
            WriteOp::Create { done, .. } => of(done),
            WriteOp::Save { done, .. }
            | WriteOp::Logs { done, .. }
            | WriteOp::PutTriggerState { done, .. }
            | WriteOp::Flush { done } => of(done),
            WriteOp::PutFlow { done, .. } => of(done),
            WriteOp::DeleteFlow { done, .. } | WriteOp::DeleteExecution { done, .. } => of(done),
        }
    }

    pub(crate) fn fail(&mut self, e: &StoreError) {
        match self {
            WriteOp::Create { done, .. } => done.fail(e),
            WriteOp::Save { done, .. }
            | WriteOp::Logs { done, .. }
            | WriteOp::PutTriggerState { done, .. }
            | WriteOp::Flush { done } => done.fail(e),
            WriteOp::PutFlow { done, .. } => done.fail(e),
            WriteOp::DeleteFlow { done, .. } | WriteOp::DeleteExecution { done, .. } => {
                done.fail(e)
            }
        }
    }

    pub(crate) fn finish(self) {
        match self {
            WriteOp::Create { row, done, .. } => done.finish("create_execution", &row.id),
            WriteOp::Save { row, done } => done.finish("save_execution", &row.id),
            WriteOp::Logs { rows, done } => done.finish(
                "append_logs",
                rows.first().map_or("", |r| r.execution_id.as_str()),
            ),
            WriteOp::PutFlow {
                namespace,
                id,
                done,
                ..
            } => done.finish("put_flow", &format!("{namespace}.{id}")),
            WriteOp::DeleteFlow {
                namespace,
                id,
                done,
                ..
            } => done.finish("delete_flow", &format!("{namespace}.{id}")),
            WriteOp::DeleteExecution { id, done } => done.finish("delete_execution", &id),
            WriteOp::PutTriggerState { trigger, done, .. } => {
                done.finish("put_trigger_state", &trigger)
            }
            WriteOp::Flush { done } => done.finish("flush", ""),
        }
    }
}

/// For each message of a batch, the later save that makes it useless: a save followed (before
/// any create of the same id) by another save of the same execution is skipped and shares that
/// save's outcome. Order is otherwise kept, so a create still precedes the saves after it.
pub(crate) fn coalesce_plan(batch: &[WriteOp]) -> Vec<Option<usize>> {
    let mut plan = vec![None; batch.len()];
    if batch.len() < 2 {
        return plan;
    }
    let mut next_save: HashMap<&str, usize> = HashMap::new();
    for (i, op) in batch.iter().enumerate().rev() {
        match op {
            WriteOp::Save { row, .. } => {
                if let Some(&j) = next_save.get(row.id.as_str()) {
                    plan[i] = Some(j);
                } else {
                    next_save.insert(&row.id, i);
                }
            }
            WriteOp::Create { row, .. } => {
                next_save.remove(row.id.as_str());
            }
            _ => {}
        }
    }
    plan
}

// ---------------------------------------------------------------------------------------------
// The writer loop

/// A backend's side of the writer: its transaction control and the SQL of each message.
pub(crate) trait BatchBackend {
    /// For logs and errors ("sqlite", "postgres").
    fn name(&self) -> &'static str;
    fn begin(&mut self) -> StoreResult<()>;
    /// Runs one message (in a savepoint when it takes several statements) and leaves its
    /// outcome in it.
    fn apply(&mut self, op: &mut WriteOp);
    /// Whether the transaction ended on its own (a fatal error): the batch fails.
    fn aborted(&mut self) -> bool;
    /// Runs the messages `plan` does not skip, leaving each one's outcome in it; returns the
    /// message after which the transaction aborted, if it did. By default one by one, in
    /// order (a backend may group messages into fewer statements).
    fn apply_all(&mut self, batch: &mut [WriteOp], plan: &[Option<usize>]) -> Option<usize>
    where
        Self: Sized,
    {
        apply_in_order(self, batch, plan)
    }
    fn commit(&mut self) -> StoreResult<()>;
    /// Rolls back what is open, if anything.
    fn rollback(&mut self);
    /// After each commit (SQLite rings its checkpointer).
    fn committed(&mut self) {}
    /// The batch aborted: whether to run it once more, more carefully (PostgreSQL runs each
    /// message in a savepoint then, so that the failing one fails alone).
    fn retry_carefully(&mut self) -> bool {
        false
    }
}

/// Runs the messages `plan` does not skip one by one, in order; returns the message after which
/// the transaction aborted, if it did.
pub(crate) fn apply_in_order<B: BatchBackend>(
    backend: &mut B,
    batch: &mut [WriteOp],
    plan: &[Option<usize>],
) -> Option<usize> {
    for i in 0..batch.len() {
        if plan[i].is_some() {
            continue;
        }
        backend.apply(&mut batch[i]);
        if backend.aborted() {
            return Some(i);
        }
    }
    None
}

/// How long the writer waits for more messages before it commits, when it is busy.
///
/// A commit writes every page its transaction touched (the right edges of the executions
/// table and of each index, the pages of the rows an end rewrites), however few messages it
/// holds; under a sustained load more messages per commit write far fewer pages in all. Measured
/// on the Kafka drain (20,000 records, 2 cores): 552 commits of ~110 messages without it, 149
/// with it, and about 11 % less CPU per execution. A writer that is not busy never waits, so a
/// lone event's commit is not delayed.
pub(crate) const LINGER: std::time::Duration = std::time::Duration::from_micros(200);

/// Busy: the last batch held at least this many write messages and was committed within
/// [`BUSY_WITHIN`]. A paced load (1,000 events/s arrive in fetches of 10–20) stays under it.
const BUSY_BATCH: usize = 32;
const BUSY_WITHIN: std::time::Duration = std::time::Duration::from_millis(1);

/// Whether the writer is under a sustained load, from its last commit.
#[derive(Default)]
struct Busy {
    last: Option<(std::time::Instant, usize)>,
}

impl Busy {
    fn committed(&mut self, writes: usize) {
        self.last = Some((std::time::Instant::now(), writes));
    }

    fn lingers(&self) -> bool {
        self.last
            .is_some_and(|(at, writes)| writes >= BUSY_BATCH && at.elapsed() < BUSY_WITHIN)
    }
}

pub(crate) struct GroupWriter<B> {
    pub(crate) backend: B,
    pub(crate) max_batch: usize,
    pub(crate) counters: Arc<Counters>,
}

impl<B: BatchBackend> GroupWriter<B> {
    pub(crate) fn run(mut self, rx: mpsc::Receiver<WriteOp>) {
        let mut batch = Vec::with_capacity(self.max_batch.min(4096));
        let mut busy = Busy::default();
        // `recv` fails only once every sender is gone and the queue is empty.
        while let Ok(first) = rx.recv() {
            batch.push(first);
            self.drain_queued(&rx, &mut batch);
            if busy.lingers() && batch.len() < self.max_batch {
                std::thread::sleep(LINGER);
                self.drain_queued(&rx, &mut batch);
            }
            let writes = self.run_batch(&mut batch);
            busy.committed(writes);
        }
        tracing::debug!(
            backend = self.backend.name(),
            commits = self.counters.commits.load(Ordering::Relaxed),
            writes = self.counters.writes.load(Ordering::Relaxed),
            coalesced = self.counters.coalesced.load(Ordering::Relaxed),
            "store writer stopped"
        );
    }

    /// Adds whatever is queued to `batch`, up to a batch's size, without waiting.
    fn drain_queued(&self, rx: &mpsc::Receiver<WriteOp>, batch: &mut Vec<WriteOp>) {
        while batch.len() < self.max_batch {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
    }

    /// Writes a batch in one transaction and answers every message in it. Returns the number
    /// of write messages in it.
    pub(crate) fn run_batch(&mut self, batch: &mut Vec<WriteOp>) -> usize {
        let writes = batch.iter().filter(|op| op.is_write()).count();
        if writes > 0 {
            self.counters
                .writes
                .fetch_add(writes as u64, Ordering::Relaxed);
            let started = std::time::Instant::now();
            if let Err(e) = self.write_batch(batch) {
                tracing::error!(error = %e, messages = batch.len(), "store batch failed");
                for op in batch.iter_mut() {
                    op.fail(&e);
                }
            } else {
                self.counters.commits.fetch_add(1, Ordering::Relaxed);
                let metrics = &self.counters.metrics;
                metrics
                    .commit_seconds
                    .observe(started.elapsed().as_secs_f64());
                metrics.batch_size.observe(writes as f64);
                self.backend.committed();
            }
        }
        for op in batch.drain(..) {
            if let WriteOp::Flush { mut done } = op {
                if done.result.is_none() {
                    done.result = Some(Ok(()));
                }
                done.finish("flush", "");
            } else {
                op.finish();
            }
        }
        writes
    }

    /// Runs the batch's messages in one transaction and commits. Each message's outcome is left
    /// in it; an `Err` here means the transaction as a whole failed (nothing was written).
    fn write_batch(&mut self, batch: &mut [WriteOp]) -> StoreResult<()> {
        let plan = coalesce_plan(batch);
        let mut attempt = 0;
        'batch: loop {
            attempt += 1;
            self.backend.begin()?;
            // Some errors (disk full, I/O, a lost connection) end the whole transaction.
            if let Some(i) = self.backend.apply_all(batch, &plan) {
                self.backend.rollback();
                if attempt == 1 && self.backend.retry_carefully() {
                    continue 'batch;
                }
                let cause = batch[i]
                    .error()
                    .unwrap_or_else(|| "unknown error".to_string());
                return Err(StoreError::Backend(format!(
                    "{} rolled the whole transaction back: {cause}",
                    self.backend.name()
                )));
            }
            break;
        }
        if let Err(e) = self.backend.commit() {
            self.backend.rollback();
            return Err(e);
        }
        // Skipped saves share the outcome of the save that replaced them.
        let mut coalesced = 0u64;
        for (i, later) in plan.iter().enumerate() {
            let Some(j) = *later else { continue };
            coalesced += 1;
            let outcome = match &batch[j] {
                WriteOp::Save { done, .. } => match &done.result {
                    Some(Ok(())) => Ok(()),
                    Some(Err(e)) => Err(clone_error(e)),
                    None => Ok(()),
                },
                _ => Ok(()),
            };
            if let WriteOp::Save { done, .. } = &mut batch[i] {
                done.result = Some(outcome);
            }
        }
        if coalesced > 0 {
            self.counters
                .coalesced
                .fetch_add(coalesced, Ordering::Relaxed);
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// The sending side

/// The channel to a store's writer thread, and the thread; dropping it lets the writer drain
/// what is queued, commit it and exit, and waits for that.
pub(crate) struct WriteQueue {
    tx: Option<mpsc::Sender<WriteOp>>,
    writer: Option<JoinHandle<()>>,
    counters: Arc<Counters>,
    name: &'static str,
}

impl WriteQueue {
    /// Starts the writer thread over `backend`.
    pub(crate) fn start<B: BatchBackend + Send + 'static>(
        backend: B,
        max_batch: usize,
    ) -> StoreResult<WriteQueue> {
        let name = backend.name();
        let counters = Arc::new(Counters::default());
        let (tx, rx) = mpsc::channel();
        let writer = GroupWriter {
            backend,
            max_batch: max_batch.max(1),
            counters: counters.clone(),
        };
        let handle = std::thread::Builder::new()
            .name("swoop-store-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| StoreError::Backend(format!("cannot start the writer thread: {e}")))?;
        Ok(WriteQueue {
            tx: Some(tx),
            writer: Some(handle),
            counters,
            name,
        })
    }

    /// Closes the channel without waiting for the writer (tests of a closed store).
    #[cfg(test)]
    pub(crate) fn close(&mut self) {
        drop(self.tx.take());
    }

    pub(crate) fn stats(&self) -> WriterStats {
        WriterStats {
            commits: self.counters.commits.load(Ordering::Relaxed),
            writes: self.counters.writes.load(Ordering::Relaxed),
            coalesced: self.counters.coalesced.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn metrics(&self) -> WriterMetrics {
        self.counters.metrics.clone()
    }

    fn send(&self, op: WriteOp) -> StoreResult<()> {
        match &self.tx {
            Some(tx) => tx.send(op).map_err(|_| StoreError::Closed),
            None => Err(StoreError::Closed),
        }
    }

    /// Sends a message whose answer comes through `rx`, and waits for the answer.
    async fn request<T>(
        &self,
        op: WriteOp,
        rx: oneshot::Receiver<StoreResult<T>>,
    ) -> StoreResult<T> {
        self.send(op)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    pub(crate) async fn put_flow(
        &self,
        namespace: &str,
        id: &str,
        source: &str,
    ) -> StoreResult<FlowRecord> {
        let (tx, rx) = oneshot::channel();
        let op = WriteOp::PutFlow {
            namespace: namespace.to_string(),
            id: id.to_string(),
            source: source.to_string(),
            now_ms: Utc::now().timestamp_millis(),
            done: Reply::to(tx),
        };
        self.request(op, rx).await
    }

    pub(crate) async fn delete_flow(&self, namespace: &str, id: &str) -> StoreResult<bool> {
        let (tx, rx) = oneshot::channel();
        let op = WriteOp::DeleteFlow {
            namespace: namespace.to_string(),
            id: id.to_string(),
            done: Reply::to(tx),
        };
        self.request(op, rx).await
    }

    pub(crate) async fn create_execution(
        &self,
        execution: &Execution,
        dedup: Option<DedupKey>,
    ) -> StoreResult<Created> {
        let row = ExecRow::new(execution)?;
        let (tx, rx) = oneshot::channel();
        let op = WriteOp::Create {
            row,
            dedup,
            done: Reply::to(tx),
        };
        self.request(op, rx).await
    }

    pub(crate) async fn save_execution(
        &self,
        execution: &Execution,
        durability: Durability,
    ) -> StoreResult<()> {
        let row = ExecRow::new(execution)?;
        let (tx, rx) = oneshot::channel();
        let wait = durability == Durability::Wait;
        let op = WriteOp::Save {
            row,
            done: Reply::waits(tx, wait),
        };
        if wait {
            self.request(op, rx).await
        } else {
            self.send(op)
        }
    }

    pub(crate) async fn delete_execution(&self, id: &str) -> StoreResult<bool> {
        let (tx, rx) = oneshot::channel();
        let op = WriteOp::DeleteExecution {
            id: id.to_string(),
            done: Reply::to(tx),
        };
        self.request(op, rx).await
    }

    pub(crate) fn append_logs(&self, logs: Vec<LogEntry>) {
        if logs.is_empty() {
            return;
        }
        let mut rows = Vec::with_capacity(logs.len());
        for entry in &logs {
            match serde_json::to_string(entry) {
                Ok(doc) => rows.push(LogRow {
                    execution_id: entry.execution_id.clone(),
                    doc,
                }),
                Err(e) => tracing::warn!(
                    execution_id = %entry.execution_id,
                    error = %e,
                    "cannot serialize a log line; dropped"
                ),
            }
        }
        let op = WriteOp::Logs {
            rows,
            done: Reply::none(),
        };
        if self.send(op).is_err() {
            tracing::warn!(lines = logs.len(), "store closed; log lines dropped");
        }
    }

    pub(crate) async fn put_trigger_state(
        &self,
        trigger: &str,
        state: &serde_json::Value,
    ) -> StoreResult<()> {
        let value = serde_json::to_string(state).map_err(|e| {
            StoreError::Data(format!("state of trigger {trigger}: cannot serialize: {e}"))
        })?;
        let (tx, rx) = oneshot::channel();
        let op = WriteOp::PutTriggerState {
            trigger: trigger.to_string(),
            value,
            done: Reply::to(tx),
        };
        self.request(op, rx).await
    }

    pub(crate) async fn flush(&self) -> StoreResult<()> {
        let (tx, rx) = oneshot::channel();
        self.request(
            WriteOp::Flush {
                done: Reply::to(tx),
            },
            rx,
        )
        .await
    }
}

impl Drop for WriteQueue {
    fn drop(&mut self) {
        // Closing the channel lets the writer drain what is queued, commit it and exit.
        drop(self.tx.take());
        if let Some(handle) = self.writer.take()
            && handle.join().is_err()
        {
            tracing::error!(backend = self.name, "the store's writer thread panicked");
        }
    }
}

/// `WHERE a AND b …` of a search's conditions, or nothing.
pub(crate) fn where_clause(clauses: &[String]) -> String {
    if clauses.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", clauses.join(" AND "))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_writer_lingers_only_right_after_a_big_batch() {
        let mut busy = super::Busy::default();
        assert!(!busy.lingers(), "before any commit");
        busy.committed(super::BUSY_BATCH - 1);
        assert!(!busy.lingers(), "after a small batch");
        busy.committed(super::BUSY_BATCH);
        assert!(busy.lingers(), "right after a big batch");
        busy.last = Some((
            std::time::Instant::now() - super::BUSY_WITHIN * 2,
            super::BUSY_BATCH * 4,
        ));
        assert!(!busy.lingers(), "a big batch committed a while ago");
    }
}

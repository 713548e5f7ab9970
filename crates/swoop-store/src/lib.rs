//! swoop's store: small traits for what the engine and the API keep (flows and their revisions,
//! executions with their dedup keys, logs, trigger state), the embedded SQLite backend, and the
//! PostgreSQL backend (feature `postgres`), and the conformance suite both pass.
//!
//! Durability contract: [`ExecutionStore::create_execution`] returns only once the execution and
//! its dedup key are durably written in one transaction; that is what lets a connector ack its
//! source. Later saves of a running execution may be [`Durability::Background`]: queued behind
//! the writer, coalesced with newer saves of the same execution, written in the next group
//! commit. A crash loses at most those in-between states, never an execution: on restart the
//! engine resumes every execution the store holds as unfinished.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use swoop_core::{Execution, LogEntry, State};

pub mod cluster;
pub mod local_storage;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod sqlite;
mod write_queue;

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;

pub use local_storage::LocalStorage;
#[cfg(feature = "postgres")]
pub use postgres::PostgresStore;
pub use sqlite::{SqliteOptions, SqliteStore, SyncMode};
pub use write_queue::{WriterMetrics, WriterStats};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store backend error: {0}")]
    Backend(String),
    #[error("store data error: {0}")]
    Data(String),
    #[error("the store is closed")]
    Closed,
    /// The write was refused because another node owns what it writes (an execution taken
    /// over, a trigger whose lease passed on): see [`cluster`].
    #[error("{0}")]
    Fenced(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// One revision of a flow's YAML source.
#[derive(Debug, Clone, PartialEq)]
pub struct FlowRecord {
    pub namespace: String,
    pub id: String,
    pub revision: u32,
    pub source: String,
    pub updated: DateTime<Utc>,
}

#[async_trait]
pub trait FlowStore: Send + Sync {
    /// Stores `source` as the flow's newest revision. An unchanged source keeps its revision;
    /// a changed one (or a flow deleted before) gets the next revision number.
    async fn put_flow(&self, namespace: &str, id: &str, source: &str) -> StoreResult<FlowRecord>;
    /// The newest revision of a flow that is not deleted.
    async fn get_flow(&self, namespace: &str, id: &str) -> StoreResult<Option<FlowRecord>>;
    /// A given revision, deleted or not (a running execution keeps the revision it started on).
    async fn get_flow_revision(
        &self,
        namespace: &str,
        id: &str,
        revision: u32,
    ) -> StoreResult<Option<FlowRecord>>;
    /// Marks a flow deleted; `false` when there was no such flow.
    async fn delete_flow(&self, namespace: &str, id: &str) -> StoreResult<bool>;
    /// The newest revision of every flow that is not deleted, by namespace then id.
    async fn list_flows(&self) -> StoreResult<Vec<FlowRecord>>;
}

/// Identifies one event of one trigger: (`trigger`, `key`) is unique among executions.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DedupKey {
    /// The trigger: `namespace/flowId/triggerId`.
    pub trigger: String,
    /// The event's coordinates in its source (`topic/partition/offset`, a message id, a
    /// scheduled date …).
    pub key: String,
}

/// What `create_execution` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    Created,
    /// The dedup key was recorded before, by this execution.
    Duplicate {
        existing_id: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Return once written and synced.
    Wait,
    /// Return at once; written with the next group commit.
    Background,
}

#[derive(Debug, Clone, Default)]
pub struct ExecutionQuery {
    /// This namespace and the ones below it (`company` matches `company.team`).
    pub namespace: Option<String>,
    pub flow_id: Option<String>,
    pub states: Vec<State>,
    /// Created at or after this time (unix milliseconds).
    pub created_from: Option<i64>,
    /// Created before this time (unix milliseconds).
    pub created_before: Option<i64>,
    /// Carrying every one of these labels (key, value). The count of such a search stops at
    /// [`COUNT_CAP`].
    pub labels: Vec<(String, String)>,
    /// Created by this trigger (its id in the flow). Counted up to [`COUNT_CAP`], as `labels`.
    pub trigger_id: Option<String>,
    /// 1-based; ignored when `after` is given.
    pub page: usize,
    pub size: usize,
    /// Keyset paging: the page that follows this position (a previous page's `next`), found
    /// through the index however deep it is, where `page` skips rows one by one.
    pub after: Option<ExecutionCursor>,
}

/// A position in the executions' order (newest first: creation time, then id, descending).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutionCursor {
    /// Creation time, unix milliseconds.
    pub created_at: i64,
    pub id: String,
}

impl ExecutionCursor {
    /// `<created_at>_<id>`, as the API carries it.
    pub fn encode(&self) -> String {
        format!("{}_{}", self.created_at, self.id)
    }

    pub fn decode(text: &str) -> Result<Self, String> {
        text.split_once('_')
            .and_then(|(ms, id)| {
                Some(ExecutionCursor {
                    created_at: ms.parse().ok()?,
                    id: id.to_string(),
                })
            })
            .filter(|c| !c.id.is_empty())
            .ok_or_else(|| {
                format!("`{text}` is not a page position: pass the `next` of a previous page")
            })
    }
}

#[derive(Debug, Clone)]
pub struct Page<T> {
    pub results: Vec<T>,
    /// How many match; at most [`COUNT_CAP`] when `total_is_lower_bound`.
    pub total: u64,
    /// The count stopped at [`COUNT_CAP`]: more match (a search that reads the documents).
    pub total_is_lower_bound: bool,
    /// Where the next page starts (`ExecutionQuery::after`); `None` on the last page.
    pub next: Option<ExecutionCursor>,
}

/// Where the count of a search that reads the documents (labels, trigger) stops.
pub const COUNT_CAP: u64 = 10_000;

impl ExecutionQuery {
    /// Whether the search's count stops at [`COUNT_CAP`] (no index answers it alone).
    pub fn counts_up_to_cap(&self) -> bool {
        !self.labels.is_empty() || self.trigger_id.is_some()
    }
}

#[async_trait]
pub trait ExecutionStore: Send + Sync {
    /// Writes a new execution durably. With a dedup key already recorded, writes nothing and
    /// says which execution holds it.
    async fn create_execution(
        &self,
        execution: &Execution,
        dedup: Option<DedupKey>,
    ) -> StoreResult<Created>;
    /// Writes the execution's current state over the stored one.
    async fn save_execution(
        &self,
        execution: &Execution,
        durability: Durability,
    ) -> StoreResult<()>;
    async fn get_execution(&self, id: &str) -> StoreResult<Option<Execution>>;
    /// Deletes an execution and its logs, durably; `false` when there was none. Its dedup keys
    /// are kept: an event redelivered later still creates nothing.
    async fn delete_execution(&self, id: &str) -> StoreResult<bool>;
    /// Newest first.
    async fn search_executions(&self, query: &ExecutionQuery) -> StoreResult<Page<Execution>>;
    /// Every execution not in a terminal state, oldest first (what a restart resumes).
    async fn unfinished_executions(&self) -> StoreResult<Vec<Execution>>;
    /// The execution that holds a dedup key, if any.
    async fn execution_for_dedup(&self, dedup: &DedupKey) -> StoreResult<Option<String>>;
}

#[async_trait]
pub trait LogStore: Send + Sync {
    /// Queues log lines; they are written with the next group commit.
    fn append_logs(&self, logs: Vec<LogEntry>);
    /// An execution's logs in the order they were appended.
    async fn logs_for_execution(&self, execution_id: &str) -> StoreResult<Vec<LogEntry>>;
}

/// Small durable state a trigger keeps between runs (a schedule's last date, …).
#[async_trait]
pub trait TriggerStateStore: Send + Sync {
    async fn get_trigger_state(&self, trigger: &str) -> StoreResult<Option<Value>>;
    async fn put_trigger_state(&self, trigger: &str, state: &Value) -> StoreResult<()>;
}

/// Everything swoop keeps.
#[async_trait]
pub trait Store: FlowStore + ExecutionStore + LogStore + TriggerStateStore {
    /// Returns once every write queued before it is durable.
    async fn flush(&self) -> StoreResult<()>;
    /// A short name for logs and `/health` ("sqlite", "postgres").
    fn backend(&self) -> &'static str;
    /// The store's side of several nodes, when the backend can be shared (PostgreSQL).
    fn cluster(&self) -> Option<&dyn cluster::ClusterStore> {
        None
    }
    /// The writer's commit latency and batch sizes, for `/metrics`.
    fn writer_metrics(&self) -> Option<WriterMetrics> {
        None
    }
}

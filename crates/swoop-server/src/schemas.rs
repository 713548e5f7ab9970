//! The shapes of the API's answers that are not one of the model's types, for the OpenAPI
//! document only: the handlers build these answers as JSON (a flow is its own YAML as JSON, a
//! page wraps the model's types).

// Described, never built: the fields exist for the schema.
#![allow(dead_code)]

use swoop_core::{Execution, LogEntry};
use swoop_engine::TriggerStatus;
use utoipa::ToSchema;

/// A flow: its YAML source as JSON (`id`, `namespace`, `tasks`, `triggers` … as written), and
/// these fields added.
#[derive(ToSchema)]
pub struct Flow {
    id: String,
    namespace: String,
    /// Starts at 1; a changed source gets the next one.
    revision: u32,
    deleted: bool,
    /// The YAML source.
    source: String,
}

/// One stored revision of a flow.
#[derive(ToSchema)]
pub struct FlowRevision {
    revision: u32,
    source: String,
    updated: chrono::DateTime<chrono::Utc>,
}

/// A page of flows.
#[derive(ToSchema)]
pub struct FlowPage {
    results: Vec<Flow>,
    total: u64,
}

/// A page of executions, newest first.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct ExecutionPage {
    results: Vec<Execution>,
    /// How many match (at most 10,000 when `totalIsLowerBound`).
    total: u64,
    /// The count stopped at 10,000 (a search by labels or trigger reads the documents).
    total_is_lower_bound: bool,
    /// Pass it as `after` for the following page; `null` on the last page.
    next: Option<String>,
}

/// The triggers' statuses.
#[derive(ToSchema)]
pub struct TriggerPage {
    results: Vec<TriggerStatus>,
    total: u64,
}

/// An execution's log lines, in order.
#[derive(ToSchema)]
pub struct Logs(Vec<LogEntry>);

//! swoop-engine: runs flows.
//!
//! - [`Engine`]: flows, execution creation (durable, idempotent with a dedup key), kill,
//!   restart, resume after a crash.
//! - `executor`: one execution's walk through its tasks (retry, timeout, flowables, errors).
//! - `triggers`: schedules; webhooks come through [`Engine::webhook`].
//! - [`metrics::EngineMetrics`]: what `/metrics` counts as it happens.
//! - [`flows_dir::FlowsDir`]: a folder of flow files kept in sync with the engine.

pub mod cluster;
mod context;
mod engine;
mod error;
mod executor;
pub mod flows_dir;
mod inputs;
pub mod metrics;
mod realtime;
mod saver;
mod triggers;

pub use cluster::{Node, NodeSettings};
pub use engine::{Engine, ExecutionEvent, FlowKey, LiveExecution, NewExecution};
pub use error::{EngineError, EngineResult};
pub use realtime::{TriggerState, TriggerStatus};

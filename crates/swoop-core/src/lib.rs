//! swoop-core: everything about flows and executions that does no I/O.
//!
//! - [`model`]: the execution model (states, executions, task runs, logs) in Kestra's JSON shape.
//! - [`flow`]: the typed flow model built from Kestra-syntax YAML.
//! - [`yaml`] + [`validate`]: YAML with positions, and validation that reports every problem
//!   with its line and column.
//! - [`registry`]: the plugin traits (runnable tasks, triggers) and the registry of type names.
//! - [`template`]: Pebble-style templates (minijinja + jaq).
//! - [`storage`] + [`ion`]: internal storage (`kestra:///…` URIs, the backend trait) and Ion
//!   row files; [`resources`]: clients and pools shared across executions; [`testing`]: a
//!   [`registry::RunContext`] for plugin unit tests.
//! - [`duration`]: ISO-8601 durations as Kestra writes them (`PT5S`); [`rfc3339`]: timestamps
//!   serialized as chrono does, faster.

pub mod duration;
pub mod flow;
pub mod ion;
pub mod model;
pub mod realtime;
pub mod registry;
pub mod resources;
pub mod rfc3339;
pub mod storage;
pub mod template;
pub mod testing;
pub mod validate;
pub mod yaml;

pub use flow::Flow;
pub use model::{Execution, LogEntry, State, TaskRun};
pub use registry::Registry;

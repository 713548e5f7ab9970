//! The contract between a realtime source (Kafka, MQTT, …) and swoop's realtime trigger
//! runtime (in `swoop-engine`).
//!
//! A source only connects, reads, decodes and acknowledges. The runtime owns everything else:
//! the bounded number of events in flight (it asks for the next event only when a slot is
//! free, so memory stays flat), turning each event into an execution durably with its dedup
//! key, acknowledging the event only after that, ordering, status, reconnection with backoff,
//! and the watchdog.
//!
//! Data flows one way: source → [`Event`] → runtime → store. The runtime calls
//! [`Event::ack`] once the event's execution is durably stored (or was already there).

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Map, Value};

/// One event read from a source.
pub struct Event {
    /// What the tasks see as `trigger.*` (`value`, `key`, `topic`, `offset`, …).
    pub variables: Map<String, Value>,
    /// The event's coordinates in its source (`topic/partition/offset`, a message id …), unique
    /// per trigger: a redelivered event with the same key creates no second execution.
    pub dedup_key: Option<String>,
    /// Events with the same key run one after another when the trigger asks for ordering by
    /// key; `partition` likewise for ordering by partition.
    pub key: Option<String>,
    pub partition: Option<String>,
    /// The payload could not be decoded: the execution is created FAILED with this error (the
    /// raw payload is in `variables`), and the stream goes on.
    pub decode_error: Option<String>,
    /// Called once the event's execution is durable (or the event was deliberately skipped).
    pub ack: Ack,
}

/// Acknowledges one event to its source.
pub struct Ack(Option<Box<dyn FnOnce() + Send>>);

impl Ack {
    pub fn new(f: impl FnOnce() + Send + 'static) -> Self {
        Ack(Some(Box::new(f)))
    }

    /// An event nothing needs to hear back about.
    pub fn none() -> Self {
        Ack(None)
    }

    pub fn ack(mut self) {
        if let Some(f) = self.0.take() {
            f();
        }
    }
}

impl std::fmt::Debug for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Event")
            .field("dedup_key", &self.dedup_key)
            .field("key", &self.key)
            .field("partition", &self.partition)
            .field("decode_error", &self.decode_error)
            .finish_non_exhaustive()
    }
}

/// Why a source cannot go on; the runtime shows it as the trigger's status and reconnects with
/// backoff (or stops, for a [`SourceError::Fatal`] one such as a rejected configuration).
#[derive(Debug, Clone, PartialEq)]
pub enum SourceError {
    /// Worth retrying: the broker is down, the connection dropped …
    Transient(String),
    /// Retrying will not help until the flow changes.
    Fatal(String),
}

impl std::fmt::Display for SourceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SourceError::Transient(m) | SourceError::Fatal(m) => f.write_str(m),
        }
    }
}

/// A live connection to a source.
#[async_trait]
pub trait RealtimeConnection: Send {
    /// The next event; waits until there is one. Must be cancel-safe: the runtime may drop the
    /// future (on shutdown) and never call it again.
    async fn next(&mut self) -> Result<Event, SourceError>;

    /// How many events are waiting in the source for this trigger, when the source can tell
    /// (for the watchdog). `None` when unknown.
    async fn backlog(&mut self) -> Option<u64> {
        None
    }

    /// Called before the connection is dropped: a last chance to acknowledge what was
    /// acknowledged in memory (commit offsets) and leave cleanly.
    async fn close(&mut self) {}
}

/// A configured realtime source (one trigger of one flow); connects on demand.
#[async_trait]
pub trait RealtimeSource: Send + Sync {
    /// Connects. `consumer_name` identifies this trigger (namespace/flow/trigger) for sources
    /// that need a stable client name.
    async fn connect(
        &self,
        consumer_name: &str,
    ) -> Result<Box<dyn RealtimeConnection>, SourceError>;
}

/// What the runtime does with ordering.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Ordering {
    /// Executions run concurrently (the default).
    #[default]
    None,
    /// Executions of events with the same key run one after another.
    Key,
    /// Executions of events from the same partition run one after another.
    Partition,
}

/// The runtime's settings for one realtime trigger (from the properties every realtime
/// trigger shares: `maxInFlight`, `ordering`).
#[derive(Debug, Clone)]
pub struct RealtimeSettings {
    pub max_in_flight: usize,
    pub ordering: Ordering,
}

pub const DEFAULT_MAX_IN_FLIGHT: usize = 1000;

impl RealtimeSettings {
    pub fn from_json(v: &Value) -> Result<RealtimeSettings, String> {
        let max_in_flight = match v.get("maxInFlight") {
            None | Some(Value::Null) => DEFAULT_MAX_IN_FLIGHT,
            Some(n) => n
                .as_u64()
                .filter(|n| *n > 0)
                .map(|n| n as usize)
                .ok_or_else(|| format!("`maxInFlight` must be a positive integer, got {n}"))?,
        };
        let ordering = match v.get("ordering").and_then(Value::as_str) {
            None => Ordering::None,
            Some(o) => match o.to_ascii_uppercase().as_str() {
                "NONE" => Ordering::None,
                "KEY" => Ordering::Key,
                "PARTITION" => Ordering::Partition,
                other => {
                    return Err(format!(
                        "`ordering` must be NONE, KEY or PARTITION, got `{other}`"
                    ));
                }
            },
        };
        Ok(RealtimeSettings {
            max_in_flight,
            ordering,
        })
    }
}

/// The properties every realtime trigger accepts on top of its own.
pub const REALTIME_PROPERTIES: &[crate::registry::PropSpec] = &[
    crate::registry::PropSpec::optional("maxInFlight", crate::registry::PropType::Int),
    crate::registry::PropSpec::optional(
        "ordering",
        crate::registry::PropType::Enum(&["NONE", "KEY", "PARTITION"]),
    ),
];

/// A realtime trigger as built from a flow: its source and the runtime settings.
#[derive(Clone)]
pub struct RealtimeTrigger {
    pub source: Arc<dyn RealtimeSource>,
    pub settings: RealtimeSettings,
}

impl std::fmt::Debug for RealtimeTrigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RealtimeTrigger")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

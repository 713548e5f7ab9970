//! The contract between a realtime source (Kafka, MQTT, CDC, …) and swoop's realtime trigger
//! runtime (in `swoop-engine`), written once for every source.
//!
//! A source only connects, reads, decodes and acknowledges. It is **push-based**: the runtime
//! calls [`RealtimeSource::run`] with a [`SourceContext`], and the source hands each event to
//! [`SourceContext::emit`], which waits for one of the trigger's in-flight slots (that wait is
//! the backpressure: a source that awaits `emit` stops pulling). The runtime owns everything
//! else: turning each event into an execution durably with its dedup key, ordering, status,
//! reconnection with backoff, and the watchdog.
//!
//! Each event carries an [`Ack`]; the runtime settles it once with the event's [`Outcome`]:
//! recorded (created, a duplicate, or rejected and kept as a FAILED execution) means the source
//! acknowledges; released (the trigger stopped before the event was recorded) means a source
//! that can nack does so, so the event is redelivered at once instead of after the broker's
//! timeout. An `Ack` dropped without an outcome is released.
//!
//! Log-like sources (Kafka partitions, a replication slot, Pulsar cumulative acks) confirm a
//! *position* up to which everything is recorded: [`ordered_acks::OrderedAcks`] does that
//! bookkeeping once for all of them.
//!
//! Data flows one way: source → [`Event`] → runtime → store → [`Ack`].

mod context;
pub mod ordered_acks;

pub use context::{
    Backlog, EventSink, MemoryState, SourceContext, SourceState, Stopped, TriggerFiles,
};

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Map, Value};

/// One event read from a source.
pub struct Event {
    /// What the tasks see as `trigger.*` (`value`, `key`, `topic`, `offset`, …).
    pub variables: Map<String, Value>,
    /// The event's coordinates in its source (`topic/partition/offset`, a message id, an LSN
    /// …), unique per trigger: a redelivered event with the same key creates no second
    /// execution.
    pub dedup_key: Option<String>,
    /// Events with the same key run one after another when the trigger asks for ordering by
    /// key; `partition` likewise for ordering by partition (a table, a partition, a shard).
    pub key: Option<String>,
    pub partition: Option<String>,
    /// The payload could not be decoded: the execution is created FAILED with this error (the
    /// raw payload is in `variables`), and the stream goes on.
    pub decode_error: Option<String>,
    /// The id its execution gets, chosen by a source that wrote the event's files first, in
    /// that execution's trigger folder (see [`TriggerFiles`]); `None`: a new id.
    pub execution_id: Option<String>,
    /// Settled once with the event's outcome.
    pub ack: Ack,
}

impl Event {
    /// An event with these variables and nothing else (no dedup key, no ordering key, no
    /// acknowledgement).
    pub fn new(variables: Map<String, Value>) -> Self {
        Event {
            variables,
            dedup_key: None,
            key: None,
            partition: None,
            decode_error: None,
            execution_id: None,
            ack: Ack::none(),
        }
    }
}

/// What became of an event: the runtime's answer to the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Its execution was created durably (possibly FAILED, when its payload did not decode).
    Created,
    /// An execution with its dedup key was recorded before (a redelivery).
    Duplicate,
    /// The event can never become a running execution (its inputs do not resolve, say): it is
    /// kept as a FAILED execution that holds the raw event and this reason. Acknowledge it,
    /// as a poison event is.
    Rejected(String),
    /// Not recorded: the trigger stopped first. Give the event back (nack) when the source
    /// can, so it is redelivered now; otherwise it is redelivered after a reconnect.
    Released,
}

impl Outcome {
    /// Whether the event is recorded in the store: then the source acknowledges it.
    pub fn is_recorded(&self) -> bool {
        !matches!(self, Outcome::Released)
    }
}

/// Settles one event with its source: called once with the event's [`Outcome`]; dropped
/// unsettled, it is called with [`Outcome::Released`].
pub struct Ack(Option<Box<dyn FnOnce(Outcome) + Send>>);

impl Ack {
    pub fn new(f: impl FnOnce(Outcome) + Send + 'static) -> Self {
        Ack(Some(Box::new(f)))
    }

    /// An event the source needs to hear nothing back about.
    pub fn none() -> Self {
        Ack(None)
    }

    /// Calls `f` only when the event is recorded (a source that cannot nack).
    pub fn on_recorded(f: impl FnOnce() + Send + 'static) -> Self {
        Ack::new(move |outcome| {
            if outcome.is_recorded() {
                f()
            }
        })
    }

    pub fn settle(mut self, outcome: Outcome) {
        if let Some(f) = self.0.take() {
            f(outcome);
        }
    }
}

impl Drop for Ack {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f(Outcome::Released);
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

/// A configured realtime source (one trigger of one flow).
#[async_trait]
pub trait RealtimeSource: Send + Sync {
    /// Connects, calls [`SourceContext::connected`] once it consumes, and emits events until
    /// the context says stop ([`SourceContext::stopped`]); then acknowledges to the source what
    /// was recorded (a last commit), leaves cleanly and returns `Ok`. Returns an error when the
    /// source fails: the runtime reconnects (calls `run` again) after a backoff, or stops for
    /// a fatal error. Events emitted and not settled yet are settled later through their
    /// [`Ack`]s, possibly after `run` returned.
    async fn run(&self, ctx: SourceContext) -> Result<(), SourceError>;
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

//! [`SourceContext`]: what a running source gets from the runtime — a way to emit events
//! (waiting for an in-flight slot), to say it is connected, to let the watchdog look at its
//! backlog, to keep a little durable state between runs, to write files for the executions it
//! starts, and to learn when to stop.

use std::io;
use std::sync::Arc;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use super::Event;
use crate::storage::{self, FileReader, FileWriter, InternalStorage, MemoryStorage, StoragePath};

/// `emit` refused the event: the trigger is stopping (the event was released).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped;

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the trigger is stopping")
    }
}

impl std::error::Error for Stopped {}

/// The runtime's side of a [`SourceContext`] (implemented by `swoop-engine`, and by
/// [`SourceContext::channel`] for tests).
#[async_trait]
pub trait EventSink: Send + Sync {
    /// Waits for a free in-flight slot, then takes the event. Cancel-safe: dropping the future
    /// drops (releases) the event.
    async fn emit(&self, event: Event) -> Result<(), Stopped>;
    /// The source is connected and consuming.
    fn connected(&self) {}
    /// The watchdog's probe of this connection's source.
    fn watch_backlog(&self, _backlog: Arc<dyn Backlog>) {}
}

/// Tells the watchdog how much work waits in the source for this trigger.
#[async_trait]
pub trait Backlog: Send + Sync {
    /// The events this trigger has not consumed yet (Kafka: committed offsets behind the high
    /// watermarks over every partition of the topics, assigned to this member or not; a list
    /// or queue: its length), `None` when unknown. A backlog that stays above zero while no
    /// event comes makes the trigger STALLED, and the watchdog restarts the connection.
    async fn backlog(&self) -> Option<u64>;
}

/// A small durable key-value space of one trigger, kept by the runtime in its store, for what
/// a source must remember between runs and the server does not keep for it (MySQL CDC: the
/// binlog position to resume from). Values are small texts; `save` returns once the value is
/// durable.
#[async_trait]
pub trait SourceState: Send + Sync {
    /// The value saved under `key`, if any.
    async fn load(&self, key: &str) -> Result<Option<String>, String>;
    /// Saves `value` under `key`, replacing what was there; durable when it returns.
    async fn save(&self, key: &str, value: &str) -> Result<(), String>;
}

/// A [`SourceState`] in memory: the default of a context made without a runtime (tests). Share
/// one `Arc` between contexts to keep the state across a source's runs.
#[derive(Default)]
pub struct MemoryState(parking_lot::Mutex<std::collections::HashMap<String, String>>);

#[async_trait]
impl SourceState for MemoryState {
    async fn load(&self, key: &str) -> Result<Option<String>, String> {
        Ok(self.0.lock().get(key).cloned())
    }
    async fn save(&self, key: &str, value: &str) -> Result<(), String> {
        self.0.lock().insert(key.to_string(), value.to_string());
        Ok(())
    }
}

/// What a running source gets from the runtime. Cheap to clone (for the source's own tasks).
#[derive(Clone)]
pub struct SourceContext {
    name: Arc<str>,
    sink: Arc<dyn EventSink>,
    state: Arc<dyn SourceState>,
    files: TriggerFiles,
    stop: CancellationToken,
    exclusive: bool,
}

/// Where a source writes the files of an execution it is about to start (a batch of records):
/// the trigger folder of that execution, `…/executions/<id>/trigger/<triggerId>/`, Kestra's
/// layout. The source picks the execution's id first ([`TriggerFiles::new_execution_id`]),
/// writes, then emits the event with that id in [`Event::execution_id`].
#[derive(Clone)]
pub struct TriggerFiles {
    storage: Arc<dyn InternalStorage>,
    namespace: Arc<str>,
    flow_id: Arc<str>,
    trigger_id: Arc<str>,
}

impl TriggerFiles {
    pub fn new(
        storage: Arc<dyn InternalStorage>,
        namespace: &str,
        flow_id: &str,
        trigger_id: &str,
    ) -> Self {
        TriggerFiles {
            storage,
            namespace: namespace.into(),
            flow_id: flow_id.into(),
            trigger_id: trigger_id.into(),
        }
    }

    /// A fresh execution id (the engine's kind).
    pub fn new_execution_id() -> String {
        crate::model::new_id()
    }

    fn path(&self, execution_id: &str, name: &str) -> io::Result<StoragePath> {
        let prefix = storage::execution_prefix(&self.namespace, &self.flow_id, execution_id)
            .and_then(|e| storage::trigger_prefix(&e, &self.trigger_id))
            .and_then(|folder| folder.join(name))
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        Ok(prefix)
    }

    /// Opens `name` in the trigger folder of execution `execution_id` for writing (replacing
    /// what was there); returns its `kestra:///` URI and the writer (the file exists once
    /// `shutdown()` returned).
    pub async fn create(&self, execution_id: &str, name: &str) -> io::Result<(String, FileWriter)> {
        let path = self.path(execution_id, name)?;
        let writer = self.storage.create(&path).await?;
        Ok((path.uri(), writer))
    }

    /// Whether `name` exists in that folder.
    pub async fn exists(&self, execution_id: &str, name: &str) -> io::Result<bool> {
        let path = self.path(execution_id, name)?;
        match self.storage.open(&path).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Opens a file of that folder.
    pub async fn open(&self, execution_id: &str, name: &str) -> io::Result<FileReader> {
        let path = self.path(execution_id, name)?;
        self.storage.open(&path).await
    }
}

impl SourceContext {
    /// A context whose [`SourceContext::state`] is in memory until
    /// [`SourceContext::with_state`] gives it a durable one (the engine always does).
    pub fn new(name: &str, sink: Arc<dyn EventSink>, stop: CancellationToken) -> Self {
        SourceContext {
            name: name.into(),
            sink,
            state: Arc::new(MemoryState::default()),
            files: TriggerFiles::new(Arc::new(MemoryStorage::new()), "test", "test", "test"),
            stop,
            exclusive: false,
        }
    }

    /// The same context, marked exclusive: no other process runs this trigger while this one
    /// does (several nodes: this node holds the trigger's lease). A source may then take a name
    /// of its own in a shared group (Kafka's static membership) without meeting a namesake.
    pub fn with_exclusive(mut self, exclusive: bool) -> Self {
        self.exclusive = exclusive;
        self
    }

    /// See [`SourceContext::with_exclusive`]; `false` on one node, where two processes may
    /// share a group on purpose.
    pub fn is_exclusive(&self) -> bool {
        self.exclusive
    }

    /// The same context, writing trigger files through `files`.
    pub fn with_files(mut self, files: TriggerFiles) -> Self {
        self.files = files;
        self
    }

    /// Where this trigger writes the files of the executions it starts (in memory until
    /// [`SourceContext::with_files`] gives it the engine's storage; the engine always does).
    pub fn files(&self) -> &TriggerFiles {
        &self.files
    }

    /// The same context, keeping its state in `state`.
    pub fn with_state(mut self, state: Arc<dyn SourceState>) -> Self {
        self.state = state;
        self
    }

    /// This trigger's durable key-value space.
    pub fn state(&self) -> &Arc<dyn SourceState> {
        &self.state
    }

    /// `namespace/flowId/triggerId`: a stable name for sources that need one (a consumer
    /// group member, a client id, a slot …).
    pub fn consumer_name(&self) -> &str {
        &self.name
    }

    /// Hands the event to the runtime; waits while every in-flight slot is taken. `Err` when
    /// the trigger is stopping: the event was released (its `Ack` said so) and the source
    /// should wind down.
    pub async fn emit(&self, event: Event) -> Result<(), Stopped> {
        if self.stop.is_cancelled() {
            return Err(Stopped);
        }
        tokio::select! {
            biased;
            _ = self.stop.cancelled() => Err(Stopped),
            r = self.sink.emit(event) => r,
        }
    }

    /// The source is connected and consuming: the trigger shows RUNNING and its reconnection
    /// backoff starts over.
    pub fn connected(&self) {
        self.sink.connected();
    }

    /// Lets the watchdog ask this connection's source for its backlog.
    pub fn watch_backlog(&self, backlog: Arc<dyn Backlog>) {
        self.sink.watch_backlog(backlog);
    }

    /// Resolves when the source must stop (the trigger stops, or the watchdog restarts it).
    pub async fn stopped(&self) {
        self.stop.cancelled().await
    }

    pub fn is_stopped(&self) -> bool {
        self.stop.is_cancelled()
    }

    /// The token behind [`SourceContext::stopped`], for the source's own tasks.
    pub fn stop_token(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// For tests of a source without the engine: a context whose events arrive on the
    /// returned channel (`capacity` of them may wait), and the token that stops it.
    pub fn channel(
        name: &str,
        capacity: usize,
    ) -> (
        SourceContext,
        tokio::sync::mpsc::Receiver<Event>,
        CancellationToken,
    ) {
        struct ChannelSink(tokio::sync::mpsc::Sender<Event>);
        #[async_trait]
        impl EventSink for ChannelSink {
            async fn emit(&self, event: Event) -> Result<(), Stopped> {
                self.0.send(event).await.map_err(|_| Stopped)
            }
        }
        let (tx, rx) = tokio::sync::mpsc::channel(capacity.max(1));
        let stop = CancellationToken::new();
        (
            SourceContext::new(name, Arc::new(ChannelSink(tx)), stop.clone()),
            rx,
            stop,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::realtime::{Ack, Outcome};
    use parking_lot::Mutex;

    fn event(outcomes: &Arc<Mutex<Vec<Outcome>>>) -> Event {
        let outcomes = outcomes.clone();
        let mut event = Event::new(Default::default());
        event.ack = Ack::new(move |o| outcomes.lock().push(o));
        event
    }

    #[tokio::test]
    async fn emit_waits_for_room_and_a_stop_releases_the_waiting_event() {
        let (ctx, mut rx, stop) = SourceContext::channel("t", 1);
        let outcomes = Arc::new(Mutex::new(Vec::new()));
        ctx.emit(event(&outcomes)).await.expect("room for one");
        // The channel is full: the second emit waits until the stop, which releases it.
        let waiting = tokio::spawn({
            let ctx = ctx.clone();
            let outcomes = outcomes.clone();
            async move { ctx.emit(event(&outcomes)).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        stop.cancel();
        assert_eq!(waiting.await.expect("joins"), Err(Stopped));
        assert_eq!(*outcomes.lock(), vec![Outcome::Released]);
        rx.recv()
            .await
            .expect("the first event")
            .ack
            .settle(Outcome::Created);
        assert_eq!(*outcomes.lock(), vec![Outcome::Released, Outcome::Created]);
        assert_eq!(ctx.emit(event(&outcomes)).await, Err(Stopped));
    }

    #[test]
    fn an_ack_settles_once_and_an_unsettled_one_is_released() {
        let outcomes = Arc::new(Mutex::new(Vec::new()));
        drop(event(&outcomes));
        event(&outcomes).ack.settle(Outcome::Rejected("no".into()));
        assert_eq!(
            *outcomes.lock(),
            vec![Outcome::Released, Outcome::Rejected("no".into())]
        );
        let recorded = Arc::new(Mutex::new(0));
        let r = recorded.clone();
        Ack::on_recorded(move || *r.lock() += 1).settle(Outcome::Duplicate);
        let r = recorded.clone();
        drop(Ack::on_recorded(move || *r.lock() += 1));
        assert_eq!(*recorded.lock(), 1);
    }
}

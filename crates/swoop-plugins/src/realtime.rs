//! What every realtime trigger plugin shares: its registry entry, built from its source type
//! (the source's checked properties, then the runtime settings every realtime trigger has);
//! the plumbing the sources share (acknowledgements sent back to the task that owns a
//! connection, waiting for them when stopping, a backlog probe); and, for the plugins' tests,
//! a flow around one trigger block.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use swoop_core::flow::TriggerKind;
use swoop_core::realtime::{Ack, Backlog, SourceContext};
use swoop_core::realtime::{RealtimeSettings, RealtimeSource, RealtimeTrigger};
use swoop_core::registry::{PropSpec, TriggerFactory};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// A realtime source made from its trigger's properties.
pub trait FromTriggerProperties: RealtimeSource + Sized + 'static {
    /// Checks the trigger's properties (the whole trigger map, already checked against the
    /// schema) and makes the source; no I/O.
    fn from_properties(v: &Value) -> Result<Self, String>;
}

/// The registry entry of a realtime trigger whose source is `S`.
pub fn realtime_trigger_factory<S: FromTriggerProperties>(
    type_names: &'static [&'static str],
    properties: &'static [PropSpec],
) -> TriggerFactory {
    TriggerFactory {
        type_names,
        properties,
        realtime: true,
        build: build::<S>,
    }
}

fn build<S: FromTriggerProperties>(v: &Value) -> Result<TriggerKind, String> {
    let source = S::from_properties(v)?;
    let settings = RealtimeSettings::from_json(v)?;
    Ok(TriggerKind::Realtime(RealtimeTrigger {
        source: Arc::new(source),
        settings,
    }))
}

/// How an event was settled, on its way back to the task that owns its connection.
#[derive(Debug, PartialEq, Eq)]
pub enum Settled<T> {
    /// Recorded: acknowledge it.
    Ack(T),
    /// Released: give it back (nack) where the source can; otherwise forget it, and the source
    /// delivers it again after a reconnect.
    Nack(T),
}

/// Hands out the [`Ack`]s of one connection's events: each sends its event's [`Settled`] to
/// the task that owns the connection (a client whose acknowledgements are calls on its own
/// connection, channel or event loop). That task ends when every `Ack` is settled or dropped
/// and every `Settler` is dropped: see [`settle_until_done`].
pub struct Settler<T>(mpsc::UnboundedSender<Settled<T>>);

impl<T> Clone for Settler<T> {
    fn clone(&self) -> Self {
        Settler(self.0.clone())
    }
}

/// A [`Settler`] and what its `Ack`s send.
pub fn settlements<T: Send + 'static>() -> (Settler<T>, mpsc::UnboundedReceiver<Settled<T>>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (Settler(tx), rx)
}

impl<T: Send + 'static> Settler<T> {
    /// The `Ack` of the event that `item` identifies (a delivery tag, a receipt handle …). If
    /// the owning task is gone, its connection is gone too, and the source delivers the event
    /// again.
    pub fn ack(&self, item: T) -> Ack {
        let tx = self.0.clone();
        Ack::new(move |outcome| {
            let settled = if outcome.is_recorded() {
                Settled::Ack(item)
            } else {
                Settled::Nack(item)
            };
            let _ = tx.send(settled);
        })
    }
}

/// How long a source that was told to stop waits for the events it emitted to be settled (their
/// acknowledgements sent) before it leaves; what is settled later is delivered again.
pub const SETTLE_GRACE: Duration = Duration::from_secs(5);

/// Waits (up to [`SETTLE_GRACE`]) for the task that settles a connection's events to end, which
/// it does once they are all settled: the last acknowledgements are sent and the connection is
/// closed. The caller drops its [`Settler`] first. `false` when the grace ran out (the task
/// goes on, and what it still sends is sent).
pub async fn settle_until_done(task: JoinHandle<()>) -> bool {
    tokio::time::timeout(SETTLE_GRACE, task).await.is_ok()
}

/// `f`, unless the source is told to stop first (`None`).
pub async fn unless_stopped<F: Future>(ctx: &SourceContext, f: F) -> Option<F::Output> {
    tokio::select! {
        biased;
        _ = ctx.stopped() => None,
        out = f => Some(out),
    }
}

/// How long the watchdog's probe waits for the source's answer.
const BACKLOG_PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// A backlog probe made of a function (a cloned client asking for a queue's length …); no
/// answer within 5 s is "unknown".
pub fn backlog_probe<F, Fut>(probe: F) -> Arc<dyn Backlog>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Option<u64>> + Send + 'static,
{
    struct Probe<F>(F);
    #[async_trait]
    impl<F, Fut> Backlog for Probe<F>
    where
        F: Fn() -> Fut + Send + Sync,
        Fut: Future<Output = Option<u64>> + Send,
    {
        async fn backlog(&self) -> Option<u64> {
            tokio::time::timeout(BACKLOG_PROBE_TIMEOUT, (self.0)())
                .await
                .ok()
                .flatten()
        }
    }
    Arc::new(Probe(probe))
}

/// A live connection read by pulling: the older sources are written this way; [`run_pull`]
/// puts one on the push-based contract.
#[async_trait::async_trait]
pub trait PullConnection: Send {
    /// The next event; waits until there is one. Must be cancel-safe.
    async fn next(
        &mut self,
    ) -> Result<swoop_core::realtime::Event, swoop_core::realtime::SourceError>;

    /// How many events wait in the source for this trigger, when the source can tell.
    async fn backlog(&mut self) -> Option<u64> {
        None
    }

    /// Called before the connection is dropped: a last chance to acknowledge and leave cleanly.
    async fn close(&mut self) {}
}

/// The watchdog's probe of a pulled connection: asks the loop in [`run_pull`], which owns it.
struct PullBacklog(tokio::sync::mpsc::Sender<tokio::sync::oneshot::Sender<Option<u64>>>);

#[async_trait::async_trait]
impl swoop_core::realtime::Backlog for PullBacklog {
    async fn backlog(&self) -> Option<u64> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.0.send(tx).await.ok()?;
        tokio::time::timeout(std::time::Duration::from_secs(5), rx)
            .await
            .ok()?
            .ok()
            .flatten()
    }
}

/// Runs a connected pulled source until the context stops (Ok) or a read fails (Err): each
/// event pulled is emitted (waiting for a slot), and the connection is closed at the end.
pub async fn run_pull(
    connected: Result<Box<dyn PullConnection>, swoop_core::realtime::SourceError>,
    ctx: swoop_core::realtime::SourceContext,
) -> Result<(), swoop_core::realtime::SourceError> {
    let mut connection = connected?;
    ctx.connected();
    let (probe_tx, mut probes) = tokio::sync::mpsc::channel(1);
    ctx.watch_backlog(std::sync::Arc::new(PullBacklog(probe_tx)));
    let result = loop {
        let event = tokio::select! {
            biased;
            _ = ctx.stopped() => break Ok(()),
            Some(reply) = probes.recv() => {
                let _ = reply.send(connection.backlog().await);
                continue;
            }
            event = connection.next() => event,
        };
        match event {
            Ok(event) => {
                if ctx.emit(event).await.is_err() {
                    break Ok(());
                }
            }
            Err(e) => break Err(e),
        }
    };
    connection.close().await;
    result
}

/// For the plugins' tests: flows around one trigger block.
#[cfg(all(test, feature = "core"))]
#[allow(dead_code)] // used by the realtime source families' tests, absent in some feature sets
pub(crate) mod test_flows {
    use swoop_core::Flow;
    use swoop_core::flow::TriggerKind;
    use swoop_core::realtime::RealtimeSettings;

    /// A flow with one Log task and one trigger (id `realtime_trigger`) of `type_name`, with
    /// `properties` as its lines (indented by 4 spaces).
    pub fn flow(type_name: &str, properties: &str) -> String {
        format!(
            "id: realtime
namespace: dev

tasks:
  - id: log
    type: io.kestra.plugin.core.log.Log
    message: \"{{{{ trigger }}}}\"

triggers:
  - id: realtime_trigger
    type: {type_name}
{properties}"
        )
    }

    /// The trigger's type name and runtime settings; panics if the flow is rejected.
    pub fn parse(type_name: &str, properties: &str) -> (String, RealtimeSettings) {
        let flow = Flow::parse(&flow(type_name, properties), &crate::registry())
            .unwrap_or_else(|d| panic!("the flow parses: {d:?}"));
        let trigger = &flow.triggers[0];
        let TriggerKind::Realtime(realtime) = &trigger.kind else {
            panic!("a realtime trigger");
        };
        (trigger.type_name.clone(), realtime.settings.clone())
    }

    /// The problems of a flow that must be rejected.
    pub fn errors(type_name: &str, properties: &str) -> Vec<String> {
        match Flow::parse(&flow(type_name, properties), &crate::registry()) {
            Ok(_) => panic!("expected the flow to be rejected"),
            Err(diagnostics) => diagnostics.into_iter().map(|d| d.message).collect(),
        }
    }
}

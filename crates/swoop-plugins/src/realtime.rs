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

/// Waits (up to [`SETTLE_GRACE`]) for `done`: the end of the task that settles a connection's
/// events, which it reaches once they are all settled (the last acknowledgements sent, the
/// connection closed; the caller drops its [`Settler`] first), or a client's own shutdown that
/// waits for them. `false` when the grace ran out (a task goes on, and what it still sends is
/// sent).
pub async fn settle_until_done(done: impl Future) -> bool {
    tokio::time::timeout(SETTLE_GRACE, done).await.is_ok()
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

//! The realtime trigger runtime, shared by every source (Kafka, MQTT, CDC, …). For one trigger
//! of one flow it:
//!
//! - runs the source ([`RealtimeSource::run`]) with a [`SourceContext`], and runs it again with
//!   capped exponential backoff (with jitter) when it fails; a configuration the source rejects
//!   stops the trigger (FAILED) until the flow changes;
//! - takes an event only when one of the trigger's `maxInFlight` slots is free (the source's
//!   `emit` waits meanwhile), and keeps the slot until the event's execution has **ended**:
//!   memory stays flat whatever the input rate ([`sink`]);
//! - admits each event ([`sink`]): its execution is created durably with its dedup key, or, when
//!   the event can never become a running execution, it is kept as a FAILED execution holding
//!   the raw event and the reason; only then is the event's `Ack` settled, so the source
//!   acknowledges it. A store that is unavailable is the only reason to retry an event (with
//!   backoff, holding its slot). With `ordering: KEY` or `PARTITION`, runs the executions of
//!   one key (partition) one after another;
//! - shows its status (STARTING, RUNNING, STALLED with the lag, RECONNECTING with the last error
//!   and attempt, STOPPED, FAILED) and counters ([`status`]);
//! - watches for a stall: no event for a watchdog interval while slots are free and the
//!   source's backlog probe says events wait makes the trigger STALLED and restarts the source
//!   (which rejoins its group, reconnects …);
//! - gives the source a durable key-value space in the store's trigger state ([`state`]).
//!
//! Cancel policy: stopping the trigger (flow updated, disabled, deleted, engine shut down)
//! cancels the source's context: the source stops emitting, confirms what was recorded and
//! returns. Events already taken finish their admission and are settled; an event whose
//! settlement does not reach the source is redelivered later and deduplicated; an event not
//! admitted yet is released (nacked where the source can).

mod sink;
mod state;
mod status;

use std::sync::Arc;
use std::time::Duration;

use swoop_core::Flow;
use swoop_core::realtime::{RealtimeTrigger, SourceContext, SourceError, TriggerFiles};
use tokio_util::sync::CancellationToken;

use crate::engine::Engine;
use sink::{KeyedQueues, Runtime, RuntimeSink};
use state::StoreState;
use status::set_state;
pub(crate) use status::{SharedStatus, new_status, set_running};
pub use status::{TriggerState, TriggerStatus};

/// Backoff between connection attempts: 200 ms doubling up to 30 s, ±20 % jitter.
pub(crate) fn backoff(attempt: u32) -> Duration {
    let base =
        Duration::from_millis(200).saturating_mul(1u32 << attempt.clamp(1, 16).saturating_sub(1));
    let capped = base.min(Duration::from_secs(30));
    capped.mul_f64(0.8 + 0.4 * rand::random::<f64>())
}

/// How often the watchdog looks at a trigger: `SWOOP_REALTIME_WATCHDOG_SECS`, 30 s by default.
fn watchdog_interval() -> Duration {
    std::env::var("SWOOP_REALTIME_WATCHDOG_SECS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| *s > 0.0)
        .map_or(Duration::from_secs(30), Duration::from_secs_f64)
}

/// How long a source may take to return after it was told to stop before it is dropped.
const STOP_GRACE: Duration = Duration::from_secs(30);

/// Runs one realtime trigger until `stop` is cancelled.
pub(crate) async fn run(
    engine: Arc<Engine>,
    flow: Arc<Flow>,
    trigger_id: String,
    type_name: String,
    trigger: RealtimeTrigger,
    status: SharedStatus,
    stop: CancellationToken,
) {
    let files = TriggerFiles::new(
        engine.storage().clone(),
        &flow.namespace,
        &flow.id,
        &trigger_id,
    );
    let runtime = Arc::new(Runtime::new(
        engine,
        flow,
        trigger_id,
        type_name,
        &trigger.settings,
        status,
        stop,
    ));
    let keyed = KeyedQueues::default();
    let state = Arc::new(StoreState::new(
        runtime.engine.store().clone(),
        &runtime.uid,
    ));
    let watchdog = watchdog_interval();
    loop {
        if runtime.stop.is_cancelled() {
            break;
        }
        let connection_stop = runtime.stop.child_token();
        let sink = Arc::new(RuntimeSink::new(
            runtime.clone(),
            trigger.settings.ordering,
            keyed.clone(),
        ));
        let ctx = SourceContext::new(&runtime.uid, sink.clone(), connection_stop.clone())
            .with_state(state.clone())
            .with_files(files.clone())
            // On several nodes a trigger runs under its lease: in one process at a time.
            .with_exclusive(runtime.engine.node().is_some());
        let error = match supervise(&trigger, ctx, &sink, &connection_stop, watchdog).await {
            Ok(()) if runtime.stop.is_cancelled() => break,
            // The watchdog restarted it: run it again at once.
            Ok(()) if connection_stop.is_cancelled() => continue,
            Ok(()) => SourceError::Transient("the source ended its stream".into()),
            Err(e) => e,
        };
        match error {
            SourceError::Fatal(message) => {
                tracing::error!(trigger = %runtime.uid, error = %message, "realtime trigger failed; fix the flow to restart it");
                set_state(
                    &runtime.status,
                    TriggerState::Failed,
                    Some(message),
                    runtime.attempt(),
                );
                return;
            }
            SourceError::Transient(message) => {
                let attempt = runtime.next_attempt();
                let wait = backoff(attempt);
                tracing::warn!(trigger = %runtime.uid, attempt, error = %message, retry_in_ms = wait.as_millis() as u64, "realtime trigger reconnecting");
                set_state(
                    &runtime.status,
                    TriggerState::Reconnecting,
                    Some(message),
                    attempt,
                );
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = runtime.stop.cancelled() => break,
                }
            }
        }
    }
    set_state(
        &runtime.status,
        TriggerState::Stopped,
        None,
        runtime.attempt(),
    );
    tracing::info!(trigger = %runtime.uid, "realtime trigger stopped");
}

/// Runs the source once, with the watchdog beside it. Returns when the source returns, or
/// [`STOP_GRACE`] after it was told to stop.
async fn supervise(
    trigger: &RealtimeTrigger,
    ctx: SourceContext,
    sink: &Arc<RuntimeSink>,
    connection_stop: &CancellationToken,
    watchdog: Duration,
) -> Result<(), SourceError> {
    let run = trigger.source.run(ctx);
    tokio::pin!(run);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + watchdog, watchdog);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            result = &mut run => return result,
            _ = connection_stop.cancelled() => break,
            _ = tick.tick() => sink.watch(watchdog, connection_stop).await,
        }
    }
    match tokio::time::timeout(STOP_GRACE, run).await {
        Ok(result) => result,
        Err(_) => {
            tracing::warn!(trigger = %sink.uid(), grace_s = STOP_GRACE.as_secs(), "the source did not stop in time; dropped");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        assert!(backoff(1) <= Duration::from_millis(240));
        assert!(backoff(3) >= Duration::from_millis(640));
        assert!(backoff(30) <= Duration::from_secs(36));
        assert!(backoff(30) >= Duration::from_secs(24));
    }
}

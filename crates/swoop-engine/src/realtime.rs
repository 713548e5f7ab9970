//! The realtime trigger runtime, shared by every source (Kafka, MQTT, …). For one trigger of
//! one flow it:
//!
//! - connects the source, and reconnects with capped exponential backoff (with jitter) when it
//!   fails; a configuration the source rejects stops the trigger (FAILED) until the flow changes;
//! - pulls an event only when one of the trigger's `maxInFlight` slots is free, and keeps the
//!   slot until the event's execution has **ended**: memory stays flat whatever the input rate;
//! - turns each event into an execution created durably with its dedup key (a redelivered event
//!   creates nothing new), and only then acknowledges the event to its source;
//! - with `ordering: KEY` or `PARTITION`, runs the executions of one key (partition) one after
//!   another: each key has a queue and a worker that starts the next event's execution when the
//!   previous one has ended;
//! - shows its status (STARTING, RUNNING, RECONNECTING with the last error and attempt, STOPPED,
//!   FAILED) and counters;
//! - watches for a stall: waiting for an event while the source says it holds some makes the
//!   runtime reconnect.
//!
//! Cancel policy: stopping the trigger (flow updated, disabled, deleted, engine shut down) stops
//! pulling at once and closes the connection (the source commits what was acknowledged). Events
//! already pulled finish their creation and are acknowledged; an event whose acknowledgement
//! does not reach the source is redelivered later and deduplicated.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use serde::Serialize;
use swoop_core::Flow;
use swoop_core::model::ExecutionTrigger;
use swoop_core::realtime::{Event, Ordering, RealtimeConnection, RealtimeTrigger, SourceError};
use swoop_store::DedupKey;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::EngineError;
use crate::engine::{Engine, NewExecution, Submitted};

/// Backoff between connection attempts: 200 ms doubling up to 30 s, ±20 % jitter.
pub(crate) fn backoff(attempt: u32) -> Duration {
    let base =
        Duration::from_millis(200).saturating_mul(1u32 << attempt.clamp(1, 16).saturating_sub(1));
    let capped = base.min(Duration::from_secs(30));
    capped.mul_f64(0.8 + 0.4 * rand::random::<f64>())
}

/// How often the watchdog looks at a trigger that is waiting for events.
const WATCHDOG_INTERVAL: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TriggerState {
    Starting,
    Running,
    Reconnecting,
    Stopped,
    Failed,
}

/// What the API shows of one trigger.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TriggerStatus {
    pub namespace: String,
    pub flow_id: String,
    pub trigger_id: String,
    #[serde(rename = "type")]
    pub type_name: String,
    pub state: TriggerState,
    pub since: DateTime<Utc>,
    /// The error that made it reconnect or fail.
    pub last_error: Option<String>,
    /// Connection attempts since the last success.
    pub attempt: u32,
    pub events: u64,
    pub executions_created: u64,
    pub duplicates: u64,
    pub last_event: Option<DateTime<Utc>>,
    pub in_flight: usize,
    pub max_in_flight: usize,
}

pub(crate) type SharedStatus = Arc<Mutex<TriggerStatus>>;

fn set_state(status: &SharedStatus, state: TriggerState, error: Option<String>, attempt: u32) {
    let mut s = status.lock();
    if s.state != state {
        s.since = Utc::now();
    }
    s.state = state;
    if error.is_some() || state == TriggerState::Running {
        s.last_error = error.or(s.last_error.take());
    }
    s.attempt = attempt;
}

pub(crate) fn new_status(
    flow: &Flow,
    trigger_id: &str,
    type_name: &str,
    max_in_flight: usize,
) -> SharedStatus {
    Arc::new(Mutex::new(TriggerStatus {
        namespace: flow.namespace.clone(),
        flow_id: flow.id.clone(),
        trigger_id: trigger_id.to_string(),
        type_name: type_name.to_string(),
        state: TriggerState::Starting,
        since: Utc::now(),
        last_error: None,
        attempt: 0,
        events: 0,
        executions_created: 0,
        duplicates: 0,
        last_event: None,
        in_flight: 0,
        max_in_flight,
    }))
}

/// Everything one trigger's tasks share.
struct Runtime {
    engine: Arc<Engine>,
    flow: Arc<Flow>,
    trigger_id: String,
    type_name: String,
    /// `namespace/flowId/triggerId`: the dedup scope and the consumer's name.
    uid: String,
    status: SharedStatus,
    slots: Arc<Semaphore>,
    stop: CancellationToken,
}

/// One pulled event and the in-flight slot it holds.
struct Job {
    event: Event,
    slot: Slot,
}

/// An in-flight slot taken by a pulled event, counted in the status until it is freed (the
/// permit the pump holds while it waits for an event is not in flight).
struct Slot {
    _permit: OwnedSemaphorePermit,
    status: SharedStatus,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut s = self.status.lock();
        s.in_flight = s.in_flight.saturating_sub(1);
    }
}

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
    let slots = Arc::new(Semaphore::new(trigger.settings.max_in_flight));
    let runtime = Arc::new(Runtime {
        uid: format!("{}/{}/{}", flow.namespace, flow.id, trigger_id),
        engine,
        flow,
        trigger_id,
        type_name,
        status,
        slots,
        stop,
    });
    let keyed = KeyedQueues::default();
    let mut attempt: u32 = 0;
    loop {
        if runtime.stop.is_cancelled() {
            break;
        }
        let connected = tokio::select! {
            c = trigger.source.connect(&runtime.uid) => c,
            _ = runtime.stop.cancelled() => break,
        };
        let error = match connected {
            Ok(mut connection) => {
                tracing::info!(trigger = %runtime.uid, attempt, "realtime trigger connected");
                set_state(&runtime.status, TriggerState::Running, None, attempt);
                let result = pump(
                    &runtime,
                    connection.as_mut(),
                    trigger.settings.ordering,
                    &keyed,
                    &mut attempt,
                )
                .await;
                connection.close().await;
                match result {
                    Ok(()) => break,
                    Err(e) => e,
                }
            }
            Err(e) => e,
        };
        match error {
            SourceError::Fatal(message) => {
                tracing::error!(trigger = %runtime.uid, error = %message, "realtime trigger failed; fix the flow to restart it");
                set_state(
                    &runtime.status,
                    TriggerState::Failed,
                    Some(message),
                    attempt,
                );
                return;
            }
            SourceError::Transient(message) => {
                attempt += 1;
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
    set_state(&runtime.status, TriggerState::Stopped, None, attempt);
    tracing::info!(trigger = %runtime.uid, "realtime trigger stopped");
}

/// Pulls events while slots are free, until stopped (Ok) or the source fails (Err).
async fn pump(
    runtime: &Arc<Runtime>,
    connection: &mut dyn RealtimeConnection,
    ordering: Ordering,
    keyed: &KeyedQueues,
    attempt: &mut u32,
) -> Result<(), SourceError> {
    let mut quiet_since = tokio::time::Instant::now();
    loop {
        let slot = tokio::select! {
            s = runtime.slots.clone().acquire_owned() => s.map_err(|_| SourceError::Fatal("the trigger's slots were closed".into()))?,
            _ = runtime.stop.cancelled() => return Ok(()),
        };
        let event = loop {
            tokio::select! {
                e = connection.next() => break e?,
                _ = runtime.stop.cancelled() => return Ok(()),
                _ = tokio::time::sleep_until(quiet_since + WATCHDOG_INTERVAL) => {
                    // The source has been quiet for a while: is it really empty?
                    if let Some(waiting) = connection.backlog().await.filter(|n| *n > 0) {
                        return Err(SourceError::Transient(format!(
                            "stalled: the source holds {waiting} events but delivered none for {} s; reconnecting",
                            WATCHDOG_INTERVAL.as_secs()
                        )));
                    }
                    quiet_since = tokio::time::Instant::now();
                }
            }
        };
        quiet_since = tokio::time::Instant::now();
        if *attempt > 0 {
            *attempt = 0;
            set_state(&runtime.status, TriggerState::Running, None, 0);
        }
        {
            let mut s = runtime.status.lock();
            s.events += 1;
            s.in_flight += 1;
            s.last_event = Some(Utc::now());
        }
        let slot = Slot {
            _permit: slot,
            status: runtime.status.clone(),
        };
        let job = Job { event, slot };
        let key = match ordering {
            Ordering::None => None,
            Ordering::Key => job.event.key.clone(),
            Ordering::Partition => job.event.partition.clone(),
        };
        match key {
            None => {
                let runtime = runtime.clone();
                tokio::spawn(async move {
                    runtime.process(job).await;
                });
            }
            Some(key) => keyed.push(runtime, key, job),
        }
    }
}

impl Runtime {
    /// Creates the event's execution durably (retrying store errors), then acknowledges the
    /// event. Returns a receiver that resolves when the execution has ended.
    async fn process(&self, job: Job) -> Option<oneshot::Receiver<()>> {
        let Job { event, slot } = job;
        let (ended_tx, ended_rx) = oneshot::channel::<()>();
        // Dropped when the execution ends: frees the slot and wakes the key's queue.
        let mut hold: Option<crate::engine::Hold> = Some(Box::new((slot, ended_tx)));
        let request = NewExecution {
            namespace: self.flow.namespace.clone(),
            flow_id: self.flow.id.clone(),
            trigger: Some(ExecutionTrigger {
                id: self.trigger_id.clone(),
                type_name: self.type_name.clone(),
                variables: event.variables,
            }),
            dedup: event.dedup_key.map(|key| DedupKey {
                trigger: self.uid.clone(),
                key,
            }),
            failed: event
                .decode_error
                .map(|e| format!("the event could not be decoded: {e}")),
            ..Default::default()
        };
        let mut attempt = 0;
        loop {
            match self
                .engine
                .submit(&self.flow, request.clone(), &mut hold)
                .await
            {
                Ok(submitted) => {
                    // Not running (a duplicate, or created FAILED): it has ended already.
                    drop(hold);
                    event.ack.ack();
                    let mut s = self.status.lock();
                    match submitted {
                        Submitted::Created(_) => s.executions_created += 1,
                        Submitted::Duplicate(_) => s.duplicates += 1,
                    }
                    return Some(ended_rx);
                }
                Err(EngineError::ShuttingDown) => return None,
                Err(e) => {
                    // Not acknowledged: the event stays in the source. Keep trying, the slot
                    // stays taken, so the trigger slows down instead of losing events.
                    attempt += 1;
                    tracing::error!(trigger = %self.uid, attempt, error = %e, "cannot create the execution of an event; retrying");
                    self.status.lock().last_error = Some(e.to_string());
                    tokio::select! {
                        _ = tokio::time::sleep(backoff(attempt)) => {}
                        _ = self.stop.cancelled() => return None,
                    }
                }
            }
        }
    }
}

/// Per-key queues for ordered triggers: one worker per active key runs its events' executions
/// one after another; a worker with nothing left to do goes away.
#[derive(Default, Clone)]
struct KeyedQueues {
    queues: Arc<Mutex<HashMap<String, mpsc::UnboundedSender<Job>>>>,
}

impl KeyedQueues {
    fn push(&self, runtime: &Arc<Runtime>, key: String, job: Job) {
        let mut queues = self.queues.lock();
        let job = match queues.get(&key) {
            Some(tx) => match tx.send(job) {
                Ok(()) => return,
                Err(mpsc::error::SendError(job)) => job,
            },
            None => job,
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = tx.send(job);
        queues.insert(key.clone(), tx);
        tokio::spawn(Self::work(self.clone(), runtime.clone(), key, rx));
    }

    async fn work(self, runtime: Arc<Runtime>, key: String, mut rx: mpsc::UnboundedReceiver<Job>) {
        loop {
            let job = match rx.try_recv() {
                Ok(job) => job,
                Err(_) => {
                    // Nothing queued: leave, unless something arrives while we unregister.
                    let mut queues = self.queues.lock();
                    match rx.try_recv() {
                        Ok(job) => job,
                        Err(_) => {
                            queues.remove(&key);
                            return;
                        }
                    }
                }
            };
            if let Some(ended) = runtime.process(job).await {
                tokio::select! {
                    _ = ended => {}
                    _ = runtime.stop.cancelled() => {}
                }
            }
        }
    }
}

/// Marks a trigger that needs no connection (a schedule) running.
pub(crate) fn set_running(status: &SharedStatus) {
    set_state(status, TriggerState::Running, None, 0);
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

//! The runtime's side of a source's context: taking an event into an in-flight slot, admitting
//! it (execution created, duplicate, rejected into a FAILED execution, or retried while the
//! store is unavailable), settling its `Ack`, per-key queues for ordered triggers, and the
//! watchdog's look at a connection.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering as AtomicOrdering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use parking_lot::Mutex;
use swoop_core::Flow;
use swoop_core::model::ExecutionTrigger;
use swoop_core::realtime::{
    Backlog, Event, EventSink, Ordering, Outcome, RealtimeSettings, Stopped,
};
use swoop_store::DedupKey;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::backoff;
use super::status::{SharedStatus, TriggerState, set_state};
use crate::engine::{Admission, Engine, NewExecution, Submitted};

/// Everything one trigger's tasks share, across connections.
pub(crate) struct Runtime {
    pub(crate) engine: Arc<Engine>,
    flow: Arc<Flow>,
    trigger_id: String,
    type_name: String,
    /// `namespace/flowId/triggerId`: the dedup scope and the consumer's name.
    pub(crate) uid: String,
    pub(crate) status: SharedStatus,
    slots: Arc<Semaphore>,
    max_in_flight: usize,
    pub(crate) stop: CancellationToken,
    /// Connection attempts since the last event.
    attempt: AtomicU32,
    /// When an event last came or a slot was last freed: the watchdog's measure of progress.
    progress: Arc<Mutex<Instant>>,
    /// This trigger's event → RUNNING latency (`/metrics`).
    latency: prometheus_client::metrics::histogram::Histogram,
}

impl Runtime {
    pub(crate) fn new(
        engine: Arc<Engine>,
        flow: Arc<Flow>,
        trigger_id: String,
        type_name: String,
        settings: &RealtimeSettings,
        status: SharedStatus,
        stop: CancellationToken,
    ) -> Self {
        Runtime {
            uid: crate::triggers::trigger_key(&flow, &trigger_id),
            latency: engine
                .metrics
                .event_to_running_of(&flow.namespace, &flow.id, &trigger_id),
            engine,
            flow,
            trigger_id,
            type_name,
            status,
            slots: Arc::new(Semaphore::new(settings.max_in_flight)),
            max_in_flight: settings.max_in_flight,
            stop,
            attempt: AtomicU32::new(0),
            progress: Arc::new(Mutex::new(Instant::now())),
        }
    }

    pub(crate) fn attempt(&self) -> u32 {
        self.attempt.load(AtomicOrdering::Relaxed)
    }

    pub(crate) fn next_attempt(&self) -> u32 {
        self.attempt.fetch_add(1, AtomicOrdering::Relaxed) + 1
    }

    /// Admits the event (retrying while the store is unavailable), then settles its `Ack`.
    /// Returns a receiver that resolves when the execution has ended; `None` when the trigger
    /// stopped first (the event is released).
    async fn process(&self, job: Job) -> Option<oneshot::Receiver<()>> {
        let Job {
            event,
            slot,
            received,
        } = job;
        let (ended_tx, ended_rx) = oneshot::channel::<()>();
        // Dropped when the execution ends: frees the slot and wakes the key's queue.
        let mut hold: Option<crate::engine::Hold> = Some(Box::new((slot, ended_tx)));
        let request = NewExecution {
            namespace: self.flow.namespace.clone(),
            flow_id: self.flow.id.clone(),
            trigger: Some(ExecutionTrigger {
                id: self.trigger_id.clone(),
                type_name: self.type_name.clone(),
                variables: event.variables.into(),
            }),
            dedup: event.dedup_key.map(|key| DedupKey {
                trigger: self.uid.clone(),
                key,
            }),
            failed: event
                .decode_error
                .map(|e| format!("the event could not be decoded: {e}")),
            execution_id: event.execution_id,
            ..Default::default()
        };
        let mut attempt = 0;
        loop {
            let outcome = match self.engine.admit(&self.flow, &request, &mut hold).await {
                Admission::Admitted(Submitted::Created(_)) => {
                    self.latency.observe(received.elapsed().as_secs_f64());
                    self.status.lock().executions_created += 1;
                    Outcome::Created
                }
                Admission::Admitted(Submitted::Duplicate(_)) => {
                    self.status.lock().duplicates += 1;
                    Outcome::Duplicate
                }
                Admission::Rejected(reason) => {
                    tracing::warn!(trigger = %self.uid, reason = %reason, "event rejected: kept as a FAILED execution");
                    self.status.lock().rejected += 1;
                    Outcome::Rejected(reason)
                }
                Admission::ShuttingDown => return None,
                Admission::RetryLater(e) => {
                    // Not settled: the event stays in the source. Keep trying; the slot stays
                    // taken, so the trigger slows down instead of losing events.
                    attempt += 1;
                    tracing::error!(trigger = %self.uid, attempt, error = %e, "cannot record the execution of an event; retrying");
                    self.status.lock().last_error = Some(e.to_string());
                    tokio::select! {
                        _ = tokio::time::sleep(backoff(attempt)) => continue,
                        _ = self.stop.cancelled() => return None,
                    }
                }
            };
            // Not running (a duplicate, or created FAILED): it has ended already.
            drop(hold);
            event.ack.settle(outcome);
            return Some(ended_rx);
        }
    }
}

/// One taken event, the in-flight slot it holds, and when it came.
struct Job {
    event: Event,
    slot: Slot,
    received: Instant,
}

/// An in-flight slot taken by an event, counted in the status until it is freed.
struct Slot {
    _permit: OwnedSemaphorePermit,
    status: SharedStatus,
    progress: Arc<Mutex<Instant>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        *self.progress.lock() = Instant::now();
        let mut s = self.status.lock();
        s.in_flight = s.in_flight.saturating_sub(1);
    }
}

/// What a source's context emits into: one per connection.
pub(crate) struct RuntimeSink {
    runtime: Arc<Runtime>,
    ordering: Ordering,
    keyed: KeyedQueues,
    backlog: Mutex<Option<Arc<dyn Backlog>>>,
}

impl RuntimeSink {
    pub(crate) fn new(runtime: Arc<Runtime>, ordering: Ordering, keyed: KeyedQueues) -> Self {
        RuntimeSink {
            runtime,
            ordering,
            keyed,
            backlog: Mutex::new(None),
        }
    }

    pub(crate) fn uid(&self) -> &str {
        &self.runtime.uid
    }

    /// The watchdog's look: when no event came and no slot was freed for `interval` while a
    /// slot is free, asks the source's backlog probe; events waiting → STALLED with the lag,
    /// and the connection is stopped (the runtime runs the source again).
    pub(crate) async fn watch(&self, interval: Duration, connection_stop: &CancellationToken) {
        let runtime = &self.runtime;
        let idle = runtime.progress.lock().elapsed() >= interval;
        let slot_free = runtime.slots.available_permits() > 0;
        let probe = self.backlog.lock().clone();
        let Some(probe) = probe.filter(|_| idle && slot_free) else {
            return;
        };
        let lag = probe.backlog().await;
        let mut status = runtime.status.lock();
        status.lag = lag;
        match lag {
            Some(lag) if lag > 0 => {
                drop(status);
                let message = format!(
                    "stalled: the source holds {lag} events for this trigger but delivered none for {} s; restarting the connection",
                    interval.as_secs_f64()
                );
                tracing::warn!(trigger = %runtime.uid, lag, "{message}");
                set_state(
                    &runtime.status,
                    TriggerState::Stalled,
                    Some(message),
                    runtime.attempt(),
                );
                connection_stop.cancel();
            }
            _ => {}
        }
    }
}

#[async_trait]
impl EventSink for RuntimeSink {
    async fn emit(&self, event: Event) -> Result<(), Stopped> {
        // Before the wait for a slot: a full trigger's wait is part of the latency.
        let received = Instant::now();
        let runtime = &self.runtime;
        let permit = runtime
            .slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Stopped)?;
        *runtime.progress.lock() = Instant::now();
        if runtime.attempt.swap(0, AtomicOrdering::Relaxed) > 0
            || runtime.status.lock().state != TriggerState::Running
        {
            set_state(&runtime.status, TriggerState::Running, None, 0);
        }
        {
            let mut s = runtime.status.lock();
            s.events += 1;
            s.in_flight += 1;
            s.lag = None;
            s.last_event = Some(Utc::now());
        }
        let slot = Slot {
            _permit: permit,
            status: runtime.status.clone(),
            progress: runtime.progress.clone(),
        };
        let job = Job {
            event,
            slot,
            received,
        };
        let key = match self.ordering {
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
            Some(key) => self.keyed.push(runtime, key, job),
        }
        Ok(())
    }

    fn connected(&self) {
        let runtime = &self.runtime;
        tracing::info!(trigger = %runtime.uid, attempt = runtime.attempt(), "realtime trigger connected");
        *runtime.progress.lock() = Instant::now();
        set_state(
            &runtime.status,
            TriggerState::Running,
            None,
            runtime.attempt(),
        );
        let mut s = runtime.status.lock();
        s.max_in_flight = runtime.max_in_flight;
    }

    fn watch_backlog(&self, backlog: Arc<dyn Backlog>) {
        *self.backlog.lock() = Some(backlog);
    }
}

/// Per-key queues for ordered triggers: one worker per active key runs its events' executions
/// one after another; a worker with nothing left to do goes away.
#[derive(Default, Clone)]
pub(crate) struct KeyedQueues {
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

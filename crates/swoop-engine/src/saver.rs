//! Background saves of running executions, coalesced in time.
//!
//! A change that need not be durable at once (a task run opened, an attempt began, a retry
//! waits) only marks its execution *unsaved* ([`BackgroundSaver::mark`]). One saver task writes
//! the latest state of every execution still unsaved [`SAVE_DELAY`] after the first mark, as a
//! background save (the store's next group commit). An execution that changes several times
//! within the delay is written once; one that ends within it is written only by its durable end
//! save, so a short execution costs two writes (created, ended) instead of three or more.
//!
//! What a crash loses is what any background save could lose: the in-between states of the last
//! few milliseconds. The execution itself is in the store since its creation and resumes at the
//! next start (its running task runs again, as after any crash).
//!
//! Ordering: a background save must never land after the execution's end save (it would bring
//! an ended execution back to RUNNING). Both take the execution's `save_order` lock; the end save
//! clears the mark under it, so a background save either went to the store's queue before the
//! end save or is not made at all.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use parking_lot::Mutex;
use swoop_store::{Durability, Store};
use tokio::sync::Notify;

use crate::engine::LiveExecution;

/// How long a change may wait before its background save.
pub(crate) const SAVE_DELAY: Duration = Duration::from_millis(10);

#[derive(Default)]
pub(crate) struct BackgroundSaver {
    pending: Mutex<Vec<Arc<LiveExecution>>>,
    wake: Notify,
}

impl BackgroundSaver {
    /// Marks `live` as changed: it is saved within [`SAVE_DELAY`] unless it ends first.
    pub(crate) fn mark(&self, live: &Arc<LiveExecution>) {
        if !live.unsaved.swap(true, Ordering::AcqRel) {
            let first = {
                let mut pending = self.pending.lock();
                pending.push(live.clone());
                pending.len() == 1
            };
            if first {
                self.wake.notify_one();
            }
        }
    }

    /// Saves the executions marked until the engine's `stop` is cancelled. What is marked after
    /// that is saved by `Engine::shutdown` ([`BackgroundSaver::save_pending`]), once the running
    /// executions had their grace period.
    pub(crate) async fn run(
        self: Arc<Self>,
        store: Arc<dyn Store>,
        stop: tokio_util::sync::CancellationToken,
    ) {
        loop {
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = stop.cancelled() => break,
            }
            tokio::select! {
                _ = tokio::time::sleep(SAVE_DELAY) => {}
                _ = stop.cancelled() => break,
            }
            self.save_pending(store.as_ref()).await;
        }
    }

    /// Writes every marked execution's current state (background durability).
    pub(crate) async fn save_pending(&self, store: &dyn Store) {
        let batch = std::mem::take(&mut *self.pending.lock());
        for live in batch {
            let _order = live.save_order.lock().await;
            if !live.unsaved.swap(false, Ordering::AcqRel) {
                continue;
            }
            let snapshot = live.execution.lock().clone();
            if let Err(e) = store
                .save_execution(&snapshot, Durability::Background)
                .await
            {
                tracing::error!(execution = %snapshot.id, error = %e, "cannot save execution");
            }
        }
    }
}

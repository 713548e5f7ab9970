//! `io.kestra.plugin.kafka.Trigger`: every `interval`, one batch of records read into an ION
//! file in internal storage, and one execution per non-empty batch with `trigger.uri` and
//! `trigger.messagesCount`.
//!
//! It runs on the realtime runtime as a source whose events are batches, so it has the same
//! status, reconnection with backoff and durable admission as the realtime triggers. One batch
//! execution is in flight at a time: the next batch is read once the previous one's execution
//! has ended.
//!
//! Exactly one stored batch per record, across crashes. Each batch is, in order:
//! 1. read into `…/executions/<id>/trigger/<triggerId>/batch.ion`, `<id>` chosen first;
//! 2. written ahead to the trigger's durable state: the execution id, the file, its count, its
//!    offset ranges (the dedup key) and the offsets to commit;
//! 3. emitted; its execution is created durably with that id and dedup key;
//! 4. its offsets committed to the group, then the state cleared.
//!
//! After a crash anywhere in 2–4 the next run finds the batch in the state and emits it again
//! before reading anything (the store answers "duplicate" if step 3 had happened), then skips
//! the records it holds when they are read again, and commits its offsets with the next batch's.
//! A crash during step 1 leaves an orphan file and no execution; those records go to the next
//! batch.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use swoop_core::ion::IonWriter;
use swoop_core::realtime::{
    Ack, Event, Outcome, RealtimeSettings, RealtimeSource, RealtimeTrigger, SourceContext,
    SourceError, TriggerFiles,
};
use swoop_core::registry::{PropSpec, PropType, TriggerFactory};
use swoop_core::{duration::parse_duration, flow::TriggerKind};
use tokio::sync::oneshot;

use super::batch::{
    BATCH_PROPERTIES, Batch, BatchConfig, BatchConsumer, BatchError, PartitionKey, Reader,
};
use crate::props::{no_template, present, scalar};

/// The trigger's type name.
pub const BATCH_TRIGGER: &str = "io.kestra.plugin.kafka.Trigger";

/// Kestra's default `interval`.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);

/// The batch's file name in the execution's trigger folder.
const FILE_NAME: &str = "batch.ion";

/// The state key of the batch written ahead of its execution.
const PENDING_KEY: &str = "pending-batch";

/// The trigger's properties: the batch ones and `interval`.
pub fn properties() -> &'static [PropSpec] {
    static ALL: std::sync::OnceLock<Vec<PropSpec>> = std::sync::OnceLock::new();
    ALL.get_or_init(|| {
        let mut all = BATCH_PROPERTIES.to_vec();
        all.push(PropSpec::optional("interval", PropType::String));
        all
    })
}

pub fn factory() -> TriggerFactory {
    TriggerFactory {
        type_names: &[BATCH_TRIGGER],
        properties: properties(),
        // Not a per-event trigger: `maxInFlight` and `ordering` do not apply.
        realtime: false,
        build: |v| {
            let source = KafkaBatchTrigger::from_json(v)?;
            Ok(TriggerKind::Realtime(RealtimeTrigger {
                source: std::sync::Arc::new(source),
                settings: RealtimeSettings {
                    max_in_flight: 1,
                    ordering: Default::default(),
                },
            }))
        },
    }
}

/// A checked batch trigger.
#[derive(Debug, Clone)]
pub struct KafkaBatchTrigger {
    pub config: BatchConfig,
    pub interval: Duration,
}

/// A batch written ahead of its execution (see the module's comment).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PendingBatch {
    execution_id: String,
    uri: String,
    messages_count: u64,
    ranges: String,
    /// `topic/partition` → the next offset to commit.
    commit: BTreeMap<String, i64>,
}

impl PendingBatch {
    fn commit_offsets(&self) -> BTreeMap<PartitionKey, i64> {
        self.commit
            .iter()
            .filter_map(|(tp, next)| {
                let (topic, partition) = tp.rsplit_once('/')?;
                Some(((topic.to_string(), partition.parse().ok()?), *next))
            })
            .collect()
    }
}

fn commit_map(offsets: &BTreeMap<PartitionKey, i64>) -> BTreeMap<String, i64> {
    offsets
        .iter()
        .map(|((t, p), n)| (format!("{t}/{p}"), *n))
        .collect()
}

impl KafkaBatchTrigger {
    pub fn from_json(v: &Value) -> Result<KafkaBatchTrigger, String> {
        for (name, value) in v.as_object().into_iter().flatten() {
            if let Value::String(s) = value
                && matches!(
                    name.as_str(),
                    "topic" | "topicPattern" | "groupId" | "interval"
                )
            {
                no_template(super::config::SOURCE, name, s)?;
            }
        }
        let interval = match present(v, "interval") {
            None => DEFAULT_INTERVAL,
            Some(i) => {
                let text = scalar(i, "interval")?;
                let d = parse_duration(&text).map_err(|e| format!("`interval`: {e}"))?;
                if d < Duration::from_millis(100) {
                    return Err(format!("`interval` must be at least 0.1 s, got `{text}`"));
                }
                d
            }
        };
        Ok(KafkaBatchTrigger {
            config: BatchConfig::from_json(v, Reader::Trigger)?,
            interval,
        })
    }

    /// Emits `batch` and waits until it is recorded. `Ok(false)`: the trigger stopped first.
    async fn emit(&self, ctx: &SourceContext, batch: &PendingBatch) -> Result<bool, SourceError> {
        let (tx, rx) = oneshot::channel();
        let mut variables = Map::new();
        variables.insert("uri".into(), Value::String(batch.uri.clone()));
        variables.insert("messagesCount".into(), Value::from(batch.messages_count));
        let mut event = Event::new(variables);
        event.dedup_key = Some(batch.ranges.clone());
        event.execution_id = Some(batch.execution_id.clone());
        event.ack = Ack::new(move |outcome| {
            let _ = tx.send(outcome);
        });
        if ctx.emit(event).await.is_err() {
            return Ok(false);
        }
        match rx.await {
            Ok(Outcome::Released) | Err(_) => Ok(false),
            Ok(outcome) => {
                tracing::info!(trigger = %ctx.consumer_name(), execution = %batch.execution_id, messages = batch.messages_count, ranges = %batch.ranges, outcome = ?outcome, "kafka: batch recorded");
                Ok(true)
            }
        }
    }

    async fn save(
        &self,
        ctx: &SourceContext,
        pending: Option<&PendingBatch>,
    ) -> Result<(), SourceError> {
        let text = match pending {
            Some(p) => serde_json::to_string(p).map_err(|e| SourceError::Fatal(e.to_string()))?,
            None => String::new(),
        };
        ctx.state()
            .save(PENDING_KEY, &text)
            .await
            .map_err(|e| SourceError::Transient(format!("cannot save the batch state: {e}")))
    }

    async fn load(&self, ctx: &SourceContext) -> Result<Option<PendingBatch>, SourceError> {
        let text = ctx
            .state()
            .load(PENDING_KEY)
            .await
            .map_err(|e| SourceError::Transient(format!("cannot load the batch state: {e}")))?;
        match text.as_deref().map(str::trim) {
            None | Some("") => Ok(None),
            Some(t) => serde_json::from_str(t).map(Some).map_err(|e| {
                SourceError::Fatal(format!("the saved batch state is unreadable ({e}): {t}"))
            }),
        }
    }

    /// One evaluation: the batch left by a crash first, then a new batch.
    async fn evaluate(&self, ctx: &SourceContext, first: &mut bool) -> Result<bool, SourceError> {
        let owed = match self.load(ctx).await? {
            Some(pending) => {
                tracing::info!(trigger = %ctx.consumer_name(), execution = %pending.execution_id, ranges = %pending.ranges, "kafka: a batch from before a restart, emitted again");
                if !self.emit(ctx, &pending).await? {
                    return Ok(false);
                }
                pending.commit_offsets()
            }
            None => BTreeMap::new(),
        };
        let consumer = BatchConsumer::open(&self.config, ctx.consumer_name())
            .await
            .map_err(source_error)?;
        if std::mem::take(first) {
            ctx.connected();
            for w in &self.config.warnings {
                tracing::warn!(trigger = %ctx.consumer_name(), "kafka: {w}");
            }
        }
        let execution_id = TriggerFiles::new_execution_id();
        let (uri, file) = ctx
            .files()
            .create(&execution_id, FILE_NAME)
            .await
            .map_err(|e| SourceError::Transient(format!("cannot create the batch file: {e}")))?;
        let mut rows = IonWriter::new(file);
        let stop = ctx.stop_token();
        let batch: Batch = match consumer.read(&self.config, &mut rows, &owed, &stop).await {
            Ok(b) => b,
            Err(BatchError::Cancelled) => return Ok(false),
            Err(e) => return Err(source_error(e)),
        };
        let commit = batch.next_offsets(&owed);
        if batch.rows == 0 {
            // Nothing to run (records filtered out count as read): no execution, no file.
            drop(rows);
            consumer.commit(&commit).await.map_err(source_error)?;
            if !owed.is_empty() {
                self.save(ctx, None).await?;
            }
            return Ok(true);
        }
        rows.finish().await.map_err(|e| {
            SourceError::Transient(format!("cannot store the batch file {uri}: {e}"))
        })?;
        let pending = PendingBatch {
            execution_id,
            uri,
            messages_count: batch.rows,
            ranges: batch.ranges(),
            commit: commit_map(&commit),
        };
        self.save(ctx, Some(&pending)).await?;
        if !self.emit(ctx, &pending).await? {
            return Ok(false);
        }
        consumer.commit(&commit).await.map_err(source_error)?;
        self.save(ctx, None).await?;
        Ok(true)
    }
}

fn source_error(e: BatchError) -> SourceError {
    match e {
        BatchError::Fatal(m) => SourceError::Fatal(m),
        BatchError::Transient(m) => SourceError::Transient(m),
        BatchError::Cancelled => SourceError::Transient("stopped".into()),
    }
}

#[async_trait]
impl RealtimeSource for KafkaBatchTrigger {
    async fn run(&self, ctx: SourceContext) -> Result<(), SourceError> {
        let mut first = true;
        let mut next = tokio::time::Instant::now();
        loop {
            tokio::select! {
                biased;
                _ = ctx.stopped() => return Ok(()),
                _ = tokio::time::sleep_until(next) => {}
            }
            // Start to start, as Kestra's polling triggers; a late batch does not pile up.
            next = (next + self.interval).max(tokio::time::Instant::now());
            if !self.evaluate(&ctx, &mut first).await? {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_trigger_parses_with_kestras_defaults() {
        let t = KafkaBatchTrigger::from_json(&json!({
            "topic": "orders", "groupId": "g",
            "properties": {"bootstrap.servers": "localhost:9092"},
        }))
        .expect("parses");
        assert_eq!(t.interval, DEFAULT_INTERVAL);
        assert_eq!(t.config.max_records, None);
        let e = KafkaBatchTrigger::from_json(&json!({
            "topic": "orders", "groupId": "{{ inputs.g }}",
            "properties": {"bootstrap.servers": "localhost:9092"},
        }))
        .unwrap_err();
        assert!(e.contains("template"), "{e}");
        let e = KafkaBatchTrigger::from_json(&json!({
            "topic": "orders", "groupId": "g", "interval": "PT0.01S",
            "properties": {"bootstrap.servers": "localhost:9092"},
        }))
        .unwrap_err();
        assert!(e.contains("at least 0.1 s"), "{e}");
    }

    #[test]
    fn a_pending_batch_keeps_its_offsets_through_its_text() {
        let offsets = BTreeMap::from([(("a.b-c".to_string(), 3), 17), (("x".to_string(), 0), 2)]);
        let p = PendingBatch {
            execution_id: "e".into(),
            uri: "kestra:///a".into(),
            messages_count: 4,
            ranges: "x/0:0-1".into(),
            commit: commit_map(&offsets),
        };
        let text = serde_json::to_string(&p).unwrap();
        let back: PendingBatch = serde_json::from_str(&text).unwrap();
        assert_eq!(back, p);
        assert_eq!(back.commit_offsets(), offsets);
    }
}

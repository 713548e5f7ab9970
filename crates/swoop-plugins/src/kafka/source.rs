//! The Kafka consumer behind the realtime trigger.
//!
//! [`KafkaSource::run`] owns the polling of librdkafka's `StreamConsumer`: it decodes each
//! record into an [`Event`] and emits it into the runtime's context, which waits for a free
//! in-flight slot. While it waits, records stay in librdkafka's bounded prefetch queue; if
//! that lasts [`PAUSE_AFTER`], it pauses every assigned partition (librdkafka drops what it
//! prefetched and resumes from the first record not handed out) and polls again, to serve
//! rebalances and errors and stay in the group, until the event is taken. Memory stays
//! bounded: one event, plus librdkafka's prefetch queue (`queued.max.messages.kbytes`).
//!
//! Offsets: every record read is recorded in the [`OffsetTracker`] before it is handed out,
//! and acknowledged by the event's [`Ack`] once its execution is recorded (or at once, for a
//! record filtered out or skipped); a released event stays pending. Every
//! [`COMMIT_INTERVAL`] the consumer commits, per partition, the committable offset when it
//! moved (asynchronously); a revoked partition is committed synchronously in the rebalance
//! callback (which runs inside the poll) and forgotten; stopping commits synchronously. While the brokers are unreachable nothing is committed (a
//! commit would only wait, and hold up closing the consumer): those records are read again,
//! and their dedup keys prevent duplicate executions. librdkafka never commits by itself.
//!
//! Health: client errors (brokers down, refused connections) that last [`TROUBLE_GRACE`]
//! with no record in between are confirmed with a metadata request; if it fails too, `run`
//! returns [`SourceError::Transient`] and the runtime reconnects with backoff. A fatal
//! librdkafka error, or a configuration it rejects, is [`SourceError::Fatal`].

use std::collections::{HashMap, VecDeque};
use std::ffi::CString;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rdkafka::client::ClientContext;
use rdkafka::config::{FromClientConfigAndContext, RDKafkaLogLevel};
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::producer::FutureProducer;
use rdkafka::statistics::Statistics;
use rdkafka::{Offset, TopicPartitionList};
use swoop_core::realtime::{
    Ack, Backlog, Event, Outcome, RealtimeSource, SourceContext, SourceError, Stopped,
};

use super::clients::{LogContext, log_to_tracing, send_dead_letter, spawn_drop};
use super::config::{KafkaTriggerConfig, OnSerdeError, Subscription, config_error};
use super::offsets::{OffsetTracker, TopicPartition};
use super::record::{Record, decode_record};
use super::serde::headers_match;

/// How often acknowledged offsets are committed (at most).
pub const COMMIT_INTERVAL: Duration = Duration::from_millis(50);

/// How long a revoke waits for the executions of records already handed to the runtime.
pub const REVOKE_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether this thread may block (a multi-threaded tokio runtime, via `block_in_place`).
fn can_block_here() -> bool {
    tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
}
/// While an event waits this long for a slot, the consumer pauses the assigned partitions and goes
/// back to polling, to serve rebalances and stay in the group (librdkafka resumes a paused
/// partition only at its broker thread's next wake-up, up to a second later: pausing is for
/// long stalls only).
pub const PAUSE_AFTER: Duration = Duration::from_secs(5);
/// How long client errors (brokers down, connections failing) may last before `run`
/// reports the source as unavailable — after a metadata request confirms it.
pub const TROUBLE_GRACE: Duration = Duration::from_secs(5);
const HEALTH_CHECK_EVERY: Duration = Duration::from_millis(500);
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long closing the consumer may wait for its last commit.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// The dead-letter producer's delivery timeout, unless `message.timeout.ms` is set: bounded
/// well below `max.poll.interval.ms`, since the pump waits for each delivery.
const DLQ_MESSAGE_TIMEOUT_MS: &str = "30000";

/// A configured Kafka realtime trigger; each [`RealtimeSource::connect`] makes a consumer.
#[derive(Debug, Clone)]
pub struct KafkaSource {
    config: Arc<KafkaTriggerConfig>,
    pause_after: Duration,
}

impl KafkaSource {
    pub fn new(config: KafkaTriggerConfig) -> Self {
        Self {
            config: Arc::new(config),
            pause_after: PAUSE_AFTER,
        }
    }

    /// How long an event may wait for a slot before the partitions are paused (for tests).
    #[doc(hidden)]
    pub fn with_pause_after(mut self, pause_after: Duration) -> Self {
        self.pause_after = pause_after;
        self
    }

    pub fn config(&self) -> &KafkaTriggerConfig {
        &self.config
    }
}

#[async_trait]
impl RealtimeSource for KafkaSource {
    async fn run(&self, ctx: SourceContext) -> Result<(), SourceError> {
        let consumer_name = ctx.consumer_name();
        let config = self.config.clone();
        for warning in &config.warnings {
            tracing::warn!(consumer = consumer_name, group_id = %config.group_id, "kafka trigger: {warning}");
        }
        let shared = Arc::new(Shared {
            group_id: config.group_id.clone(),
            consumer_name: consumer_name.to_string(),
            tracker: Mutex::new(OffsetTracker::new()),
            acked: Condvar::new(),
            health: Mutex::new(Health::default()),
            lags: Mutex::new(HashMap::new()),
        });
        let consumer: StreamConsumer<KafkaContext> = StreamConsumer::from_config_and_context(
            &config.static_consumer_config(consumer_name, ctx.is_exclusive()),
            KafkaContext {
                shared: shared.clone(),
            },
        )
        .map_err(|e| SourceError::Fatal(creation_error(&e, &config)))?;
        let consumer = Arc::new(consumer);

        let names = config.subscription.librdkafka_names();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        if let Err(e) = consumer.subscribe(&refs) {
            let what = match &config.subscription {
                Subscription::Pattern(p) => {
                    format!("`topicPattern` `{p}` is not a regular expression librdkafka accepts")
                }
                s => format!("cannot subscribe to {}", s.describe()),
            };
            spawn_drop(consumer);
            return Err(SourceError::Fatal(format!(
                "kafka (groupId `{}`): {what}: {e}",
                config.group_id
            )));
        }

        let dlq = match &config.on_serde_error {
            OnSerdeError::Dlq { topic } => {
                let mut producer_config = config.producer_config(consumer_name);
                if !config.properties.contains_key("message.timeout.ms") {
                    producer_config.set("message.timeout.ms", DLQ_MESSAGE_TIMEOUT_MS);
                }
                let producer = FutureProducer::from_config_and_context(
                    &producer_config,
                    LogContext {
                        group_id: config.group_id.clone(),
                    },
                )
                .map_err(|e| {
                    spawn_drop(consumer.clone());
                    SourceError::Fatal(format!(
                        "kafka (groupId `{}`): cannot create the dead-letter producer for `{topic}`: {}",
                        config.group_id,
                        creation_error(&e, &config)
                    ))
                })?;
                Some(Dlq {
                    producer,
                    topic: topic.clone(),
                })
            }
            _ => None,
        };

        let mut pump = Pump {
            consumer: Some(consumer.clone()),
            shared: shared.clone(),
            config: config.clone(),
            ready: VecDeque::new(),
            paused: false,
            pause_after: self.pause_after,
            dlq,
        };
        tracing::info!(
            consumer = consumer_name,
            group_id = %config.group_id,
            bootstrap_servers = config.bootstrap_servers(),
            subscription = %config.subscription.describe(),
            "kafka trigger subscribed"
        );
        ctx.connected();
        ctx.watch_backlog(Arc::new(KafkaBacklog {
            consumer: consumer.clone(),
            shared: shared.clone(),
            topics: match &config.subscription {
                Subscription::Topics(topics) => topics.clone(),
                Subscription::Pattern(_) => Vec::new(),
            },
        }));
        let result = pump.run(&ctx).await;
        drop(pump);
        // Events not emitted were never recorded: their offsets stay pending, so nothing past
        // them is committed.
        let closing = shared.clone();
        let done = tokio::task::spawn_blocking(move || final_commit(&closing, consumer));
        if tokio::time::timeout(STOP_TIMEOUT, done).await.is_err() {
            tracing::warn!(group_id = %shared.group_id, consumer = %shared.consumer_name, "kafka: the consumer is still closing (waiting for the brokers); going on without it");
        }
        result
    }
}

fn creation_error(e: &KafkaError, config: &KafkaTriggerConfig) -> String {
    match e {
        KafkaError::ClientConfig(..) => config_error(e),
        other => format!(
            "cannot create the Kafka client for groupId `{}`: {other}",
            config.group_id
        ),
    }
}

/// What the pump, the client callbacks and the acknowledgements share.
struct Shared {
    group_id: String,
    consumer_name: String,
    tracker: Mutex<OffsetTracker>,
    /// Signalled at every acknowledgement (a revoke waits on it).
    acked: Condvar,
    health: Mutex<Health>,
    /// Records waiting per assigned partition past its committed offset, from the last
    /// statistics (when the consumer's own position is not known yet).
    lags: Mutex<HashMap<TopicPartition, i64>>,
}

impl Shared {
    fn tracker(&self) -> MutexGuard<'_, OffsetTracker> {
        self.tracker.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn health(&self) -> MutexGuard<'_, Health> {
        self.health.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The offsets that moved since their last commit, as a commit request.
    fn take_commits(&self) -> Option<TopicPartitionList> {
        let commits = self.tracker().take_commits();
        if commits.is_empty() {
            return None;
        }
        let mut tpl = TopicPartitionList::with_capacity(commits.len());
        for (topic, partition, offset) in commits {
            if let Err(e) = tpl.add_partition_offset(&topic, partition, Offset::Offset(offset)) {
                tracing::warn!(group_id = %self.group_id, topic, partition, offset, error = %e, "kafka: cannot prepare a commit");
                self.tracker().commit_failed(&topic, partition, offset);
            }
        }
        Some(tpl)
    }

    fn commit_failed(&self, tpl: &TopicPartitionList) {
        let mut tracker = self.tracker();
        for e in tpl.elements() {
            if let Offset::Offset(offset) = e.offset() {
                tracker.commit_failed(e.topic(), e.partition(), offset);
            }
        }
    }
}

/// Whether the brokers answer, from the client's error callbacks.
#[derive(Debug, Default)]
struct Health {
    /// Since when client errors occur with no sign of life in between.
    trouble_since: Option<Instant>,
    last_error: Option<String>,
    /// librdkafka raised a fatal error: this client cannot go on.
    fatal: Option<String>,
}

impl Health {
    fn ok(&mut self) {
        self.trouble_since = None;
    }

    /// Whether commits should wait: while the brokers are in trouble a commit is not
    /// answered, is held by librdkafka until its timeout, and holds up closing the consumer
    /// for as long. The offsets stay pending meanwhile; records whose commit is lost are read
    /// again, and their dedup keys prevent duplicate executions.
    fn can_commit(&self) -> bool {
        self.trouble_since.is_none() && self.fatal.is_none()
    }
}

/// The consumer's callbacks: logs, errors, statistics, rebalances and commit results.
struct KafkaContext {
    shared: Arc<Shared>,
}

impl ClientContext for KafkaContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        log_to_tracing(&self.shared.group_id, level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let mut health = self.shared.health();
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::Fatal) {
            tracing::error!(group_id = %self.shared.group_id, error = %error, "kafka: fatal client error: {reason}");
            health.fatal = Some(reason.to_string());
            return;
        }
        if matches!(
            error.rdkafka_error_code(),
            Some(
                RDKafkaErrorCode::UnknownTopicOrPartition
                    | RDKafkaErrorCode::UnknownTopic
                    | RDKafkaErrorCode::UnknownPartition
            )
        ) {
            // The brokers answer; the topic is not there (yet): not a connection problem.
            tracing::warn!(group_id = %self.shared.group_id, consumer = %self.shared.consumer_name, error = %error, "kafka: {reason}");
            return;
        }
        if health.trouble_since.is_none() {
            tracing::warn!(group_id = %self.shared.group_id, consumer = %self.shared.consumer_name, error = %error, "kafka client error: {reason}");
            health.trouble_since = Some(Instant::now());
        } else {
            tracing::debug!(group_id = %self.shared.group_id, consumer = %self.shared.consumer_name, error = %error, "kafka client error: {reason}");
        }
        health.last_error = Some(reason.to_string());
    }

    fn stats(&self, statistics: Statistics) {
        let mut lags = HashMap::new();
        for (name, topic) in &statistics.topics {
            for p in topic.partitions.values() {
                if p.partition >= 0 && p.desired && p.consumer_lag >= 0 {
                    lags.insert((name.clone(), p.partition), p.consumer_lag);
                }
            }
        }
        *self.shared.lags.lock().unwrap_or_else(|e| e.into_inner()) = lags;
    }
}

impl ConsumerContext for KafkaContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(revoked) = rebalance else {
            return;
        };
        let mut commits = TopicPartitionList::new();
        {
            let mut tracker = self.shared.tracker();
            for e in revoked.elements() {
                tracker.begin_revoke(e.topic(), e.partition());
            }
            // Records already handed to the runtime are about to be durable: wait (bounded)
            // for their acknowledgements, so the commit below covers them and the partition's
            // next owner does not read them again. Records not handed over yet are dropped before
            // they are emitted; the commit stays below them, so the next owner reads them.
            let partitions: Vec<(String, i32)> = revoked
                .elements()
                .iter()
                .map(|e| (e.topic().to_string(), e.partition()))
                .collect();
            let in_runtime = |t: &mut OffsetTracker| {
                partitions
                    .iter()
                    .map(|(topic, p)| t.delivered_unacked(topic, *p))
                    .sum::<usize>()
            };
            if in_runtime(&mut tracker) > 0 && can_block_here() {
                let waited = Instant::now();
                tracker = tokio::task::block_in_place(|| {
                    self.shared
                        .acked
                        .wait_timeout_while(tracker, REVOKE_DRAIN_TIMEOUT, |t| in_runtime(t) > 0)
                        .map(|(guard, _)| guard)
                        .unwrap_or_else(|e| e.into_inner().0)
                });
                let left = in_runtime(&mut tracker);
                if left > 0 {
                    tracing::warn!(group_id = %self.shared.group_id, left, "kafka: revoked partitions still have records whose executions are not stored; their next owner reads them again (a shared store's dedup keys prevent duplicates)");
                } else {
                    tracing::debug!(group_id = %self.shared.group_id, waited_ms = waited.elapsed().as_millis() as u64, "kafka: revoked partitions drained");
                }
            }
            for e in revoked.elements() {
                if let Some(offset) = tracker.revoke(e.topic(), e.partition())
                    && let Err(err) = commits.add_partition_offset(
                        e.topic(),
                        e.partition(),
                        Offset::Offset(offset),
                    )
                {
                    tracing::warn!(group_id = %self.shared.group_id, topic = e.topic(), partition = e.partition(), offset, error = %err, "kafka: cannot prepare the commit of a revoked partition");
                }
            }
        }
        let partitions = partition_names(revoked);
        if consumer.assignment_lost() {
            tracing::warn!(group_id = %self.shared.group_id, partitions = %partitions, "kafka: partitions lost; their latest offsets are not committed (the new owner re-reads them, and swoop's dedup keys prevent duplicate executions)");
            return;
        }
        if commits.count() > 0 {
            if !self.shared.health().can_commit() {
                tracing::warn!(group_id = %self.shared.group_id, offsets = %partition_offsets(&commits), "kafka: the brokers are unreachable; revoked partitions are not committed (the new owner re-reads them, and dedup keys prevent duplicate executions)");
                return;
            }
            match consumer.commit(&commits, CommitMode::Sync) {
                Ok(()) => {
                    tracing::debug!(group_id = %self.shared.group_id, offsets = %partition_offsets(&commits), "kafka: committed revoked partitions")
                }
                Err(e) => {
                    tracing::warn!(group_id = %self.shared.group_id, offsets = %partition_offsets(&commits), error = %e, "kafka: cannot commit revoked partitions (the new owner re-reads from the last commit)")
                }
            }
        }
        tracing::info!(group_id = %self.shared.group_id, consumer = %self.shared.consumer_name, partitions = %partitions, "kafka: partitions revoked");
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(assigned) => {
                {
                    let mut tracker = self.shared.tracker();
                    for e in assigned.elements() {
                        tracker.assign(e.topic(), e.partition());
                    }
                }
                self.shared.health().ok();
                tracing::info!(group_id = %self.shared.group_id, consumer = %self.shared.consumer_name, partitions = %partition_names(assigned), "kafka: partitions assigned");
            }
            Rebalance::Error(e) => {
                tracing::warn!(group_id = %self.shared.group_id, error = %e, "kafka: rebalance error");
            }
            Rebalance::Revoke(_) => {}
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        match result {
            // Nothing to commit: not an error.
            Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(e) => {
                tracing::warn!(group_id = %self.shared.group_id, offsets = %partition_offsets(offsets), error = %e, "kafka: commit failed; retrying with the next commit");
                self.shared.commit_failed(offsets);
            }
            Ok(()) => {
                let mut failed = TopicPartitionList::new();
                for e in offsets.elements() {
                    if let Err(err) = e.error() {
                        tracing::warn!(group_id = %self.shared.group_id, topic = e.topic(), partition = e.partition(), error = %err, "kafka: commit of a partition failed; retrying with the next commit");
                        if let Offset::Offset(o) = e.offset() {
                            let _ = failed.add_partition_offset(
                                e.topic(),
                                e.partition(),
                                Offset::Offset(o),
                            );
                        }
                    }
                }
                if failed.count() > 0 {
                    self.shared.commit_failed(&failed);
                }
            }
        }
    }
}

fn partition_names(tpl: &TopicPartitionList) -> String {
    tpl.elements()
        .iter()
        .map(|e| format!("{}/{}", e.topic(), e.partition()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn partition_offsets(tpl: &TopicPartitionList) -> String {
    tpl.elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(o) => format!("{}/{}@{o}", e.topic(), e.partition()),
            other => format!("{}/{}@{other:?}", e.topic(), e.partition()),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

struct Dlq {
    producer: FutureProducer<LogContext>,
    topic: String,
}

/// An event on its way to the runtime, with where it comes from: it is emitted only if its
/// partition is still assigned to this consumer (see [`OffsetTracker::deliver`]).
struct Handout {
    event: Event,
    topic: String,
    partition: i32,
    offset: i64,
    epoch: u64,
}

/// The emit in progress: it resolves when the runtime has taken the event (a slot was free).
type Emitting = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), Stopped>> + Send>>;

/// The consumer's polling loop (see the module documentation).
struct Pump {
    consumer: Option<Arc<StreamConsumer<KafkaContext>>>,
    shared: Arc<Shared>,
    config: Arc<KafkaTriggerConfig>,
    /// Decoded events waiting for the one being emitted: only from partitions assigned while
    /// the others are paused (each is paused too).
    ready: VecDeque<Handout>,
    paused: bool,
    pause_after: Duration,
    dlq: Option<Dlq>,
}

enum Step {
    Stop,
    Tick,
    Emitted(Result<(), Stopped>),
    Message(KafkaResult<Record>),
}

impl Drop for Pump {
    fn drop(&mut self) {
        if let Some(consumer) = self.consumer.take() {
            spawn_drop(consumer);
        }
        if let Some(dlq) = self.dlq.take() {
            spawn_drop(dlq);
        }
    }
}

impl Pump {
    /// Polls and emits until the context stops (Ok) or the source fails (Err).
    async fn run(&mut self, ctx: &SourceContext) -> Result<(), SourceError> {
        let Some(consumer) = self.consumer.clone() else {
            return Ok(());
        };
        let mut tick = tokio::time::interval(COMMIT_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_health_check = Instant::now();
        let mut emitting: Option<Emitting> = None;
        // Since when the event being emitted waits for a slot.
        let mut waiting_since = tokio::time::Instant::now();
        // Made once, not once per round: each round of the loop is one record or one emit.
        let stopped = ctx.stopped();
        tokio::pin!(stopped);
        loop {
            if emitting.is_none() {
                emitting = self.next_emit(ctx);
                waiting_since = tokio::time::Instant::now();
                if emitting.is_none() && self.paused {
                    self.resume_all(&consumer);
                }
            }
            let step = tokio::select! {
                biased;
                _ = &mut stopped => Step::Stop,
                _ = tick.tick() => Step::Tick,
                r = async { emitting.as_mut().expect("guarded by the condition").await }, if emitting.is_some() => Step::Emitted(r),
                // While an event waits for a slot (and the partitions are not paused yet),
                // records stay in librdkafka's bounded prefetch queue.
                message = consumer.recv(), if emitting.is_none() || self.paused => {
                    Step::Message(message.map(|m| Record::from_message(&m)))
                }
            };
            let outcome = match step {
                Step::Stop | Step::Emitted(Err(Stopped)) => return Ok(()),
                Step::Emitted(Ok(())) => {
                    emitting = None;
                    Ok(())
                }
                Step::Tick => {
                    // Checked on the commit tick rather than with a timer per record.
                    if emitting.is_some()
                        && !self.paused
                        && waiting_since.elapsed() >= self.pause_after
                    {
                        self.pause_all(&consumer);
                    }
                    self.commit(&consumer);
                    if last_health_check.elapsed() >= HEALTH_CHECK_EVERY {
                        last_health_check = Instant::now();
                        self.check_health(&consumer).await
                    } else {
                        Ok(())
                    }
                }
                Step::Message(Ok(record)) => {
                    self.shared.health().ok();
                    self.on_record(&consumer, record).await
                }
                Step::Message(Err(e)) => self.on_error(e),
            };
            if let Err(e) = outcome {
                tracing::warn!(group_id = %self.config.group_id, consumer = %self.shared.consumer_name, error = %e, "kafka trigger: stopping the consumer");
                // Events not emitted are dropped: their offsets stay uncommitted, so the next
                // connection reads them again.
                return Err(e);
            }
        }
    }

    /// Starts emitting the next ready event whose partition is still assigned.
    fn next_emit(&mut self, ctx: &SourceContext) -> Option<Emitting> {
        while let Some(h) = self.ready.pop_front() {
            // A record of a partition revoked meanwhile is dropped here: the partition's new
            // owner reads it again from the committed offset, which stayed below it.
            if self
                .shared
                .tracker()
                .deliver(&h.topic, h.partition, h.offset, h.epoch)
            {
                let ctx = ctx.clone();
                return Some(Box::pin(async move { ctx.emit(h.event).await }));
            }
            tracing::debug!(group_id = %self.shared.group_id, topic = %h.topic, partition = h.partition, offset = h.offset, "kafka: record of a revoked partition dropped before delivery");
        }
        None
    }

    fn pause_all(&mut self, consumer: &StreamConsumer<KafkaContext>) {
        match consumer.assignment() {
            Ok(assignment) if assignment.count() > 0 => {
                if let Err(e) = consumer.pause(&assignment) {
                    tracing::warn!(group_id = %self.config.group_id, error = %e, "kafka: cannot pause the partitions");
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(group_id = %self.config.group_id, error = %e, "kafka: cannot read the assignment to pause it")
            }
        }
        self.paused = true;
        tracing::debug!(group_id = %self.config.group_id, "kafka: partitions paused (the runtime has been busy for a while)");
    }

    fn pause_one(&self, consumer: &StreamConsumer<KafkaContext>, topic: &str, partition: i32) {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(topic, partition);
        if let Err(e) = consumer.pause(&tpl) {
            tracing::warn!(group_id = %self.config.group_id, topic, partition, error = %e, "kafka: cannot pause a partition");
        }
    }

    fn resume_all(&mut self, consumer: &StreamConsumer<KafkaContext>) {
        match consumer.assignment() {
            Ok(assignment) => {
                if assignment.count() > 0
                    && let Err(e) = consumer.resume(&assignment)
                {
                    tracing::warn!(group_id = %self.config.group_id, error = %e, "kafka: cannot resume the partitions");
                    return;
                }
                self.paused = false;
                tracing::debug!(group_id = %self.config.group_id, "kafka: partitions resumed");
            }
            Err(e) => {
                tracing::warn!(group_id = %self.config.group_id, error = %e, "kafka: cannot read the assignment to resume it")
            }
        }
    }

    /// Commits the offsets acknowledged since the last commit (asynchronously; failures come
    /// back through the commit callback and are retried).
    fn commit(&self, consumer: &StreamConsumer<KafkaContext>) {
        if !self.shared.health().can_commit() {
            return;
        }
        let Some(tpl) = self.shared.take_commits() else {
            return;
        };
        if tpl.count() == 0 {
            return;
        }
        tracing::trace!(group_id = %self.config.group_id, offsets = %partition_offsets(&tpl), "kafka: committing");
        if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
            tracing::debug!(group_id = %self.config.group_id, offsets = %partition_offsets(&tpl), error = %e, "kafka: commit not sent; retrying");
            self.shared.commit_failed(&tpl);
        }
    }

    /// A fatal client error stops the source; client errors lasting [`TROUBLE_GRACE`] with
    /// no record in between are checked with a metadata request, and make the source
    /// unavailable when it fails too.
    async fn check_health(
        &mut self,
        consumer: &Arc<StreamConsumer<KafkaContext>>,
    ) -> Result<(), SourceError> {
        let (fatal, trouble_since, last_error) = {
            let health = self.shared.health();
            (
                health.fatal.clone(),
                health.trouble_since,
                health.last_error.clone(),
            )
        };
        if let Some(reason) = fatal {
            return Err(SourceError::Fatal(format!(
                "kafka (groupId `{}`): fatal client error: {reason}",
                self.config.group_id
            )));
        }
        let Some(since) = trouble_since else {
            return Ok(());
        };
        if since.elapsed() < TROUBLE_GRACE {
            return Ok(());
        }
        let probe_topic = match &self.config.subscription {
            Subscription::Topics(topics) => topics.first().cloned(),
            Subscription::Pattern(_) => None,
        };
        let c = consumer.clone();
        let probe = tokio::task::spawn_blocking(move || {
            c.fetch_metadata(probe_topic.as_deref(), PROBE_TIMEOUT)
                .map(drop)
        })
        .await;
        match probe {
            Ok(Ok(())) => {
                let mut health = self.shared.health();
                if health.trouble_since == Some(since) {
                    health.ok();
                }
                tracing::info!(group_id = %self.config.group_id, "kafka: the brokers answer again");
                Ok(())
            }
            Ok(Err(e)) => Err(SourceError::Transient(format!(
                "kafka: no broker of `{}` answers (groupId `{}`, for {} s): {}; {e}",
                self.config.bootstrap_servers(),
                self.config.group_id,
                since.elapsed().as_secs(),
                last_error.unwrap_or_else(|| "client errors".into()),
            ))),
            Err(e) => Err(SourceError::Transient(format!(
                "kafka (groupId `{}`): the broker check failed: {e}",
                self.config.group_id
            ))),
        }
    }

    fn on_error(&self, e: KafkaError) -> Result<(), SourceError> {
        let group_id = &self.config.group_id;
        match (&e, e.rdkafka_error_code()) {
            (KafkaError::MessageConsumptionFatal(_), _) | (_, Some(RDKafkaErrorCode::Fatal)) => {
                Err(SourceError::Fatal(format!(
                    "kafka (groupId `{group_id}`): fatal consumer error: {e}"
                )))
            }
            (KafkaError::PartitionEOF(_), _) => Ok(()),
            (
                _,
                Some(
                    RDKafkaErrorCode::UnknownTopicOrPartition
                    | RDKafkaErrorCode::UnknownTopic
                    | RDKafkaErrorCode::UnknownPartition,
                ),
            ) => {
                tracing::warn!(group_id = %group_id, subscription = %self.config.subscription.describe(), error = %e, "kafka: a subscribed topic does not exist (yet); waiting for it");
                Ok(())
            }
            (
                _,
                Some(
                    code @ (RDKafkaErrorCode::TopicAuthorizationFailed
                    | RDKafkaErrorCode::GroupAuthorizationFailed
                    | RDKafkaErrorCode::SaslAuthenticationFailed
                    | RDKafkaErrorCode::Authentication),
                ),
            ) => Err(SourceError::Transient(format!(
                "kafka (groupId `{group_id}`, {}): not allowed: {code}",
                self.config.subscription.describe()
            ))),
            // Connection problems also reach the client's error callback, which logs them.
            (
                _,
                Some(
                    RDKafkaErrorCode::AllBrokersDown
                    | RDKafkaErrorCode::BrokerTransportFailure
                    | RDKafkaErrorCode::Resolve
                    | RDKafkaErrorCode::OperationTimedOut
                    | RDKafkaErrorCode::RequestTimedOut,
                ),
            ) => {
                tracing::debug!(group_id = %group_id, error = %e, "kafka consumer error");
                Ok(())
            }
            _ => {
                tracing::warn!(group_id = %group_id, error = %e, "kafka consumer error");
                Ok(())
            }
        }
    }

    fn ack_for(&self, record: &Record, epoch: u64) -> Ack {
        let shared = self.shared.clone();
        let topic = record.topic.clone();
        let (partition, offset) = (record.partition, record.offset);
        Ack::new(move |outcome| {
            if !outcome.is_recorded() {
                // Released: the offset stays pending, nothing past it is committed, and the
                // next connection reads it again.
                return;
            }
            let acked = shared.tracker().ack(&topic, partition, offset, epoch);
            if acked {
                // A revoke may be waiting for this partition's delivered records.
                shared.acked.notify_all();
            } else {
                tracing::debug!(group_id = %shared.group_id, topic, partition, offset, "kafka: acknowledgement ignored (the partition was revoked)");
            }
        })
    }

    async fn on_record(
        &mut self,
        consumer: &StreamConsumer<KafkaContext>,
        record: Record,
    ) -> Result<(), SourceError> {
        let epoch =
            self.shared
                .tracker()
                .handed_out(&record.topic, record.partition, record.offset);
        let ack = self.ack_for(&record, epoch);
        if !headers_match(&self.config.header_filters, &record.headers) {
            tracing::trace!(group_id = %self.config.group_id, record = %record.coordinates(), "kafka: record filtered out by its headers");
            ack.settle(Outcome::Created);
            return Ok(());
        }
        let decoded = decode_record(
            &record,
            self.config.key_deserializer,
            self.config.value_deserializer,
        );
        if let Some(error) = &decoded.error {
            match &self.config.on_serde_error {
                OnSerdeError::Fail => {
                    tracing::warn!(group_id = %self.config.group_id, topic = %record.topic, partition = record.partition, offset = record.offset, "kafka: {error}; the execution is created FAILED");
                }
                OnSerdeError::Skip => {
                    tracing::warn!(group_id = %self.config.group_id, topic = %record.topic, partition = record.partition, offset = record.offset, "kafka: {error}; record skipped (onSerdeError: SKIPPED)");
                    ack.settle(Outcome::Created);
                    return Ok(());
                }
                OnSerdeError::Dlq { .. } => {
                    self.dead_letter(&record, error).await?;
                    ack.settle(Outcome::Created);
                    return Ok(());
                }
            }
        }
        let event = Event {
            variables: decoded.variables,
            dedup_key: Some(decoded.dedup_key),
            key: decoded.key,
            partition: Some(decoded.partition),
            decode_error: decoded.error,
            execution_id: None,
            ack,
        };
        self.ready.push_back(Handout {
            event,
            topic: record.topic.clone(),
            partition: record.partition,
            offset: record.offset,
            epoch,
        });
        if self.paused {
            // A partition assigned while paused: hold it too.
            self.pause_one(consumer, &record.topic, record.partition);
        }
        Ok(())
    }

    /// Produces the raw record to the dead-letter topic and waits for its delivery.
    async fn dead_letter(&mut self, record: &Record, error: &str) -> Result<(), SourceError> {
        let Some(dlq) = &self.dlq else {
            return Err(SourceError::Fatal(
                "kafka: no dead-letter producer".to_string(),
            ));
        };
        send_dead_letter(
            &dlq.producer,
            &dlq.topic,
            record,
            error,
            &self.config.group_id,
        )
        .await
        .map_err(SourceError::Transient)
    }
}

/// The watchdog's probe: how many records of the subscribed topics the group has not
/// consumed, over **every** partition (assigned to this member or to none: a consumer that
/// was assigned nothing after a crash shows its whole lag), as the brokers' high watermarks
/// less the group's committed offsets. For a `topicPattern`, the partitions assigned here.
struct KafkaBacklog {
    consumer: Arc<StreamConsumer<KafkaContext>>,
    shared: Arc<Shared>,
    topics: Vec<String>,
}

#[async_trait]
impl Backlog for KafkaBacklog {
    async fn backlog(&self) -> Option<u64> {
        let consumer = self.consumer.clone();
        let topics = self.topics.clone();
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || {
            if topics.is_empty() {
                assigned_backlog(&consumer, &shared)
            } else {
                group_backlog(&consumer, &topics)
            }
        })
        .await
        .ok()
        .flatten()
    }
}

/// High watermarks less the group's committed offsets (the low watermark where nothing is
/// committed), over every partition of `topics`. Asks the brokers (bounded by
/// [`PROBE_TIMEOUT`] per request); `None` when they do not answer.
fn group_backlog(consumer: &StreamConsumer<KafkaContext>, topics: &[String]) -> Option<u64> {
    let mut tpl = TopicPartitionList::new();
    for topic in topics {
        let metadata = consumer.fetch_metadata(Some(topic), PROBE_TIMEOUT).ok()?;
        for t in metadata.topics() {
            for p in t.partitions() {
                tpl.add_partition(t.name(), p.id());
            }
        }
    }
    let committed = consumer.committed_offsets(tpl, PROBE_TIMEOUT).ok()?;
    let mut total = 0u64;
    for e in committed.elements() {
        let (low, high) = consumer
            .fetch_watermarks(e.topic(), e.partition(), PROBE_TIMEOUT)
            .ok()?;
        let from = match e.offset() {
            Offset::Offset(o) => o,
            _ => low,
        };
        total += u64::try_from(high - from).unwrap_or(0);
    }
    Some(total)
}

/// Per assigned partition: the high watermark librdkafka last saw (or the last stable offset,
/// under `read_committed`, as in the statistics) less the consumer's position. Nothing is
/// asked of the brokers.
fn assigned_backlog(consumer: &StreamConsumer<KafkaContext>, shared: &Shared) -> Option<u64> {
    let assignment = consumer.assignment().ok()?;
    let positions = consumer.position().ok()?;
    let lags = shared
        .lags
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let mut total: u64 = 0;
    let mut known = false;
    for e in assignment.elements() {
        let (topic, partition) = (e.topic(), e.partition());
        let position = match positions
            .find_partition(topic, partition)
            .map(|p| p.offset())
        {
            Some(Offset::Offset(o)) => Some(o),
            _ => None,
        };
        let waiting = match (position, cached_high_watermark(consumer, topic, partition)) {
            (Some(position), Some(high)) => Some((high - position).max(0)),
            _ => lags.get(&(topic.to_string(), partition)).copied(),
        };
        if let Some(w) = waiting {
            total += u64::try_from(w).unwrap_or(0);
            known = true;
        }
    }
    known.then_some(total)
}

/// The partition's high watermark as librdkafka last saw it in a fetch response (no request).
fn cached_high_watermark(
    consumer: &StreamConsumer<KafkaContext>,
    topic: &str,
    partition: i32,
) -> Option<i64> {
    let topic = CString::new(topic).ok()?;
    let (mut low, mut high) = (-1i64, -1i64);
    // SAFETY: the client handle is valid while `consumer` is borrowed, `topic` is a valid
    // NUL-terminated string for the duration of the call, and librdkafka only writes the two
    // offsets through the pointers (it reads its cached watermarks under its own locks).
    let err = unsafe {
        rdkafka::bindings::rd_kafka_get_watermark_offsets(
            consumer.client().native_ptr(),
            topic.as_ptr(),
            partition,
            &mut low,
            &mut high,
        )
    };
    (err == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0)
        .then_some(high)
}

/// Commits what is committable, synchronously, and closes the consumer (leaving the group).
fn final_commit(shared: &Shared, consumer: Arc<StreamConsumer<KafkaContext>>) {
    if let Some(tpl) = shared.take_commits() {
        if !shared.health().can_commit() {
            tracing::warn!(group_id = %shared.group_id, offsets = %partition_offsets(&tpl), "kafka: the brokers are unreachable; offsets not committed on close (those records will be read again; dedup keys prevent duplicate executions)");
            drop(consumer);
            return;
        }
        match consumer.commit(&tpl, CommitMode::Sync) {
            Ok(()) => {
                tracing::debug!(group_id = %shared.group_id, offsets = %partition_offsets(&tpl), "kafka: committed on close")
            }
            Err(e) => {
                tracing::warn!(group_id = %shared.group_id, offsets = %partition_offsets(&tpl), error = %e, "kafka: cannot commit on close (those records will be read again; dedup keys prevent duplicate executions)")
            }
        }
    }
    drop(consumer);
}

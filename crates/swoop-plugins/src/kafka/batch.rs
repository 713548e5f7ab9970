//! Reading a bounded batch of records into an ION file: what the `Consume` task and the batch
//! `Trigger` share — their properties (Kestra's, section A.2), the consumer (a group
//! subscription, an explicit assignment, or every partition from the start or from `since`),
//! the loop and its end rules, and the commit once the file is stored.
//!
//! End rules: the batch ends when every assigned partition is read to its end (librdkafka
//! reports each partition's end; the high watermarks are checked before ending), when no record
//! came for `pollDuration` (Kestra's "first empty poll"), at `maxRecords` records, or when
//! `maxDuration` has passed — whichever comes first. Before any partition is assigned, the wait
//! is bounded by `maxDuration` (or [`ASSIGNMENT_WAIT`]).
//!
//! `since` seeks each partition by time (ListOffsets); records older than `since` are also
//! passed over as they are read, for brokers whose time index is coarse.
//!
//! Each record becomes one row — `key`, `value`, `topic`, `partition`, `offset`, `timestamp`,
//! `headers`, as Kestra writes them — streamed to the file: a batch of any size holds one record
//! in memory at a time. A record whose key or value does not decode is kept with its raw payload
//! (`rawValueBase64` / `rawKeyBase64`) and an `error` field, unless `onSerdeError` says to skip it
//! or to send it to a dead-letter topic.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rdkafka::config::FromClientConfigAndContext;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::FutureProducer;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::Value;
use swoop_core::duration::parse_duration;
use swoop_core::ion::IonWriter;
use swoop_core::registry::{PropSpec, PropType};
use tokio::io::AsyncWrite;
use tokio_util::sync::CancellationToken;

use super::clients::{LogContext, send_dead_letter, spawn_drop};
use super::config::{
    OnSerdeError, SOURCE, Subscription, base_config, check_client_config, client_properties,
    deserializers, on_serde_error, string_map, subscription,
};
use super::record::{Record, decode_record};
use super::serde::{Deserializer, headers_match};
use crate::props::{no_template, present, scalar};

/// How long a batch waits for its first partition assignment when `maxDuration` is not set.
pub const ASSIGNMENT_WAIT: Duration = Duration::from_secs(30);
/// Kestra's `pollDuration` default.
pub const DEFAULT_POLL_DURATION: Duration = Duration::from_secs(5);
/// Bound of the metadata, watermark and commit calls.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The properties `Consume` and `Trigger` share (the Trigger adds `interval`).
pub const BATCH_PROPERTIES: &[PropSpec] = &[
    PropSpec::optional("topic", PropType::StringOrList),
    PropSpec::optional("topicPattern", PropType::String),
    PropSpec::optional("partitions", PropType::Any),
    PropSpec::optional("groupId", PropType::String),
    PropSpec::required("properties", PropType::Map),
    PropSpec::optional("serdeProperties", PropType::Map),
    PropSpec::optional("keyDeserializer", PropType::String),
    PropSpec::optional("valueDeserializer", PropType::String),
    PropSpec::optional("since", PropType::String),
    PropSpec::optional("pollDuration", PropType::String),
    PropSpec::optional("maxRecords", PropType::Any),
    PropSpec::optional("maxDuration", PropType::String),
    PropSpec::optional("headerFilters", PropType::Map),
    PropSpec::optional("onSerdeError", PropType::Any),
    PropSpec::optional("groupType", PropType::String),
    PropSpec::optional("acknowledgeType", PropType::String),
    PropSpec::optional("schemaRegistryVendor", PropType::Any),
];

/// Why `groupType: SHARE` is refused (say which broker and client it needs).
pub const SHARE_GROUPS_REFUSED: &str = "`groupType: SHARE` (KIP-932 share groups) is not supported: it needs an Apache Kafka broker 4.2 or later (4.1 as a preview) and a client with a share consumer; librdkafka 2.12 (the client swoop is built with) has none, and neither does tansu. Use `groupType: CONSUMER` (the default)";

/// Who reads the batch: the task may run without a group; the trigger needs one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reader {
    ConsumeTask,
    Trigger,
}

/// Which partitions the consumer reads, and from where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Assignment {
    /// A consumer group subscription: the group's committed offsets.
    Group,
    /// These partitions of every topic, from the group's committed offsets when there is a
    /// group, else from `since` or the beginning.
    Partitions(Vec<i32>),
    /// Every partition of every topic, from `since` or the beginning (no group).
    All,
}

/// Checked `Consume` / `Trigger` properties.
#[derive(Debug, Clone)]
pub struct BatchConfig {
    pub subscription: Subscription,
    pub assignment: Assignment,
    pub group_id: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub properties: BTreeMap<String, String>,
    pub key_deserializer: Deserializer,
    pub value_deserializer: Deserializer,
    pub header_filters: Vec<(String, String)>,
    pub on_serde_error: OnSerdeError,
    pub poll_duration: Duration,
    pub max_records: Option<u64>,
    pub max_duration: Option<Duration>,
    pub warnings: Vec<String>,
}

impl BatchConfig {
    /// Checks the properties (already rendered, for the task). No I/O.
    pub fn from_json(v: &Value, reader: Reader) -> Result<BatchConfig, String> {
        let mut warnings = Vec::new();
        if let Some(group_type) = present(v, "groupType") {
            let group_type = scalar(group_type, "groupType")?;
            match group_type.trim().to_ascii_uppercase().as_str() {
                "CONSUMER" => {}
                "SHARE" => return Err(SHARE_GROUPS_REFUSED.into()),
                other => {
                    return Err(format!(
                        "`groupType` must be CONSUMER or SHARE, got `{other}`"
                    ));
                }
            }
        }
        if present(v, "acknowledgeType").is_some() {
            return Err(format!(
                "`acknowledgeType` only applies to `groupType: SHARE`; {SHARE_GROUPS_REFUSED}"
            ));
        }
        if present(v, "schemaRegistryVendor").is_some() {
            return Err("`schemaRegistryVendor` is not supported yet: AVRO and PROTOBUF need a schema registry, and none is supported (use BYTES or STRING and decode in a task)".into());
        }
        let subscription = subscription(v)?;
        let from_properties = v
            .get("properties")
            .and_then(|p| p.get("group.id"))
            .filter(|g| !g.is_null())
            .map(|g| scalar(g, "properties.group.id"))
            .transpose()?;
        let group_id = match present(v, "groupId") {
            Some(g) => Some(scalar(g, "groupId")?),
            None => from_properties,
        };
        if let Some(g) = &group_id {
            no_template(SOURCE, "groupId", g)?;
            if g.trim().is_empty() {
                return Err("`groupId` is empty".into());
            }
        }
        if reader == Reader::Trigger && group_id.is_none() {
            return Err("`groupId` is required: the trigger commits each batch's offsets to its group once the batch's execution is stored".into());
        }
        let partitions = match present(v, "partitions") {
            None => None,
            Some(p) => Some(partition_list(p)?),
        };
        let assignment = match (&partitions, &group_id) {
            (Some(p), _) => Assignment::Partitions(p.clone()),
            (None, Some(_)) => Assignment::Group,
            (None, None) => Assignment::All,
        };
        if matches!(subscription, Subscription::Pattern(_)) && assignment != Assignment::Group {
            return Err(
                "`topicPattern` needs `groupId` and no `partitions` (the group subscribes to the pattern)"
                    .into(),
            );
        }
        let since = match present(v, "since") {
            None => None,
            Some(s) => {
                let text = scalar(s, "since")?;
                if assignment == Assignment::Group {
                    return Err("`since` applies only without a group subscription (no `groupId`, or with `partitions`): a group reads from its committed offsets".into());
                }
                let at = DateTime::parse_from_rfc3339(text.trim()).map_err(|e| {
                    format!("`since` `{text}` is not an ISO-8601 date-time with a zone (such as 2024-06-01T10:00:00Z): {e}")
                })?;
                Some(at.with_timezone(&Utc))
            }
        };
        let properties = client_properties(v, group_id.as_deref().unwrap_or(""), &mut warnings)?;
        let (key_deserializer, value_deserializer) = deserializers(v, &mut warnings)?;
        let header_filters: Vec<(String, String)> =
            string_map(v, "headerFilters")?.into_iter().collect();
        let on_serde_error = on_serde_error(present(v, "onSerdeError"))?;
        if let OnSerdeError::Dlq { topic } = &on_serde_error
            && let Subscription::Topics(topics) = &subscription
            && topics.contains(topic)
        {
            return Err(format!(
                "`onSerdeError.topic` `{topic}` is a topic this batch reads: records that fail would come back"
            ));
        }
        let poll_duration = optional_duration(v, "pollDuration")?.unwrap_or(DEFAULT_POLL_DURATION);
        let max_duration = optional_duration(v, "maxDuration")?;
        let max_records = match present(v, "maxRecords") {
            None => None,
            Some(n) => {
                let text = scalar(n, "maxRecords")?;
                let n: u64 = text.trim().parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                    format!("`maxRecords` must be a positive integer, got `{text}`")
                })?;
                Some(n)
            }
        };
        let config = BatchConfig {
            subscription,
            assignment,
            group_id,
            since,
            properties,
            key_deserializer,
            value_deserializer,
            header_filters,
            on_serde_error,
            poll_duration,
            max_records,
            max_duration,
            warnings,
        };
        check_client_config(&config.consumer_config("swoop"))?;
        Ok(config)
    }

    /// `groupId `g`` or `no group`, for messages.
    pub fn describe(&self) -> String {
        match &self.group_id {
            Some(g) => format!("{} (groupId `{g}`)", self.subscription.describe()),
            None => self.subscription.describe(),
        }
    }

    pub fn consumer_config(&self, client_id: &str) -> ClientConfig {
        let mut c = base_config(&self.properties, client_id);
        match &self.group_id {
            Some(g) => c.set("group.id", g),
            // librdkafka assigns partitions only in a group; this one never commits.
            None => c.set(
                "group.id",
                format!("swoop-{client_id}-{}", swoop_core::model::new_id()),
            ),
        };
        c.set("enable.auto.commit", "false");
        c.set("enable.auto.offset.store", "false");
        // Each partition's end is how a batch knows it has read everything there is.
        c.set("enable.partition.eof", "true");
        let defaults = [
            ("auto.offset.reset", "earliest"),
            ("isolation.level", "read_committed"),
            (
                "fetch.wait.max.ms",
                super::config::DEFAULT_FETCH_WAIT_MAX_MS,
            ),
            ("session.timeout.ms", "10000"),
            ("heartbeat.interval.ms", "500"),
        ];
        for (key, value) in defaults {
            if !self.properties.contains_key(key) {
                c.set(key, value);
            }
        }
        c
    }

    fn producer_config(&self, client_id: &str) -> ClientConfig {
        let mut c = base_config(&self.properties, client_id);
        c.set("linger.ms", "0");
        c
    }
}

fn optional_duration(v: &Value, name: &str) -> Result<Option<Duration>, String> {
    match present(v, name) {
        None => Ok(None),
        Some(d) => {
            let text = scalar(d, name)?;
            let d = parse_duration(&text).map_err(|e| format!("`{name}`: {e}"))?;
            if d.is_zero() {
                return Err(format!("`{name}` must be longer than zero"));
            }
            Ok(Some(d))
        }
    }
}

fn partition_list(v: &Value) -> Result<Vec<i32>, String> {
    let items = match v {
        Value::Array(items) => items.clone(),
        other => vec![other.clone()],
    };
    if items.is_empty() {
        return Err("`partitions` is an empty list".into());
    }
    let mut out = Vec::new();
    for item in &items {
        let text = scalar(item, "partitions")?;
        let p: i32 = text
            .trim()
            .parse()
            .ok()
            .filter(|p| *p >= 0)
            .ok_or_else(|| format!("`partitions` lists `{text}`, not a partition number"))?;
        if out.contains(&p) {
            return Err(format!("`partitions` lists partition {p} twice"));
        }
        out.push(p);
    }
    Ok(out)
}

/// `topic/partition`.
pub type PartitionKey = (String, i32);

/// What one batch read: the rows written, and per partition the first and last offset seen
/// (rows or not: a record a header filter dropped is consumed too).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Batch {
    pub rows: u64,
    pub seen: BTreeMap<PartitionKey, (i64, i64)>,
    pub skipped: u64,
}

impl Batch {
    /// The offsets to commit: after the last record seen of each partition, and at least
    /// `floor` (offsets owed by an earlier batch).
    pub fn next_offsets(&self, floor: &BTreeMap<PartitionKey, i64>) -> BTreeMap<PartitionKey, i64> {
        let mut next = floor.clone();
        for (tp, (_, last)) in &self.seen {
            let n = next.entry(tp.clone()).or_insert(last + 1);
            *n = (*n).max(last + 1);
        }
        next
    }

    /// `topic/partition:first-last` per partition, sorted: the batch's identity.
    pub fn ranges(&self) -> String {
        self.seen
            .iter()
            .map(|((t, p), (first, last))| format!("{t}/{p}:{first}-{last}"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Why a batch stopped early.
#[derive(Debug)]
pub enum BatchError {
    /// The task was killed or timed out, or the trigger is stopping.
    Cancelled,
    /// Worth retrying (the broker, the file).
    Transient(String),
    /// Retrying will not help.
    Fatal(String),
}

/// An open consumer, closed on a blocking thread when dropped (closing leaves the group and
/// may wait for the brokers) — also when a killed task drops it mid-batch.
pub struct BatchConsumer {
    consumer: Option<Arc<StreamConsumer<LogContext>>>,
    dlq: Option<(FutureProducer<LogContext>, String)>,
    label: String,
}

impl Drop for BatchConsumer {
    fn drop(&mut self) {
        if let Some(c) = self.consumer.take() {
            spawn_drop(c);
        }
        if let Some(d) = self.dlq.take() {
            spawn_drop(d);
        }
    }
}

impl BatchConsumer {
    fn consumer(&self) -> &Arc<StreamConsumer<LogContext>> {
        self.consumer
            .as_ref()
            .expect("the consumer is open until dropped")
    }

    /// Creates the consumer and subscribes or assigns its partitions.
    pub async fn open(config: &BatchConfig, client_id: &str) -> Result<BatchConsumer, BatchError> {
        let label = config.describe();
        let context = LogContext {
            group_id: config.group_id.clone().unwrap_or_default(),
        };
        let consumer: StreamConsumer<LogContext> =
            StreamConsumer::from_config_and_context(&config.consumer_config(client_id), context)
                .map_err(|e| {
                    BatchError::Fatal(format!("cannot create the Kafka consumer for {label}: {e}"))
                })?;
        let consumer = Arc::new(consumer);
        let dlq = match &config.on_serde_error {
            OnSerdeError::Dlq { topic } => {
                let context = LogContext {
                    group_id: config.group_id.clone().unwrap_or_default(),
                };
                let producer = FutureProducer::from_config_and_context(
                    &config.producer_config(client_id),
                    context,
                )
                .map_err(|e| {
                    BatchError::Fatal(format!("cannot create the dead-letter producer: {e}"))
                })?;
                Some((producer, topic.clone()))
            }
            _ => None,
        };
        let opened = BatchConsumer {
            consumer: Some(consumer.clone()),
            dlq,
            label: label.clone(),
        };
        match (&config.assignment, &config.subscription) {
            (Assignment::Group, subscription) => {
                let names = subscription.librdkafka_names();
                let names: Vec<&str> = names.iter().map(String::as_str).collect();
                consumer
                    .subscribe(&names)
                    .map_err(|e| BatchError::Fatal(format!("cannot subscribe to {label}: {e}")))?;
            }
            (assignment, Subscription::Topics(topics)) => {
                let tpl = assignment_list(
                    consumer.clone(),
                    topics.clone(),
                    assignment.clone(),
                    config.group_id.is_some(),
                    config.since,
                )
                .await
                .map_err(|e| BatchError::Transient(format!("{label}: {e}")))?;
                consumer.assign(&tpl).map_err(|e| {
                    BatchError::Transient(format!("cannot assign the partitions of {label}: {e}"))
                })?;
            }
            (_, Subscription::Pattern(_)) => {
                return Err(BatchError::Fatal(
                    "`topicPattern` needs a group subscription".into(),
                ));
            }
        }
        Ok(opened)
    }

    /// Reads records into `rows` until an end rule says stop. Records of a partition below
    /// `floor` (offsets owed by an earlier batch) are passed over.
    pub async fn read<W: AsyncWrite + Unpin + Send>(
        &self,
        config: &BatchConfig,
        rows: &mut IonWriter<W>,
        floor: &BTreeMap<PartitionKey, i64>,
        cancel: &CancellationToken,
    ) -> Result<Batch, BatchError> {
        let consumer = self.consumer();
        let started = Instant::now();
        let deadline = config.max_duration.map(|d| started + d);
        let assignment_deadline = started + config.max_duration.unwrap_or(ASSIGNMENT_WAIT);
        let mut batch = Batch::default();
        let mut assigned = false;
        // Partitions at their end since their last record (librdkafka names only the partition
        // number; the high watermarks are checked before the batch ends).
        let mut at_end: std::collections::BTreeSet<i32> = Default::default();
        loop {
            if config.max_records.is_some_and(|max| batch.rows >= max) {
                break;
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                break;
            }
            let mut wait = if assigned {
                config.poll_duration
            } else {
                Duration::from_millis(100)
            };
            if let Some(d) = deadline {
                wait = wait.min(d.saturating_duration_since(now));
            }
            let received = tokio::select! {
                biased;
                _ = cancel.cancelled() => return Err(BatchError::Cancelled),
                r = tokio::time::timeout(wait, consumer.recv()) => r,
            };
            match received {
                Err(_silence) => {
                    if assigned {
                        // Kestra's end: a poll that found nothing.
                        break;
                    }
                    if consumer.assignment().is_ok_and(|a| a.count() > 0) {
                        assigned = true;
                    } else if Instant::now() >= assignment_deadline {
                        tracing::warn!(batch = %self.label, "kafka: no partition was assigned in time; the batch is empty");
                        break;
                    }
                }
                Ok(Err(KafkaError::PartitionEOF(partition))) => {
                    assigned = true;
                    at_end.insert(partition);
                    if self.all_at_end(&at_end).await? {
                        break;
                    }
                }
                Ok(Err(e)) if !assigned && is_missing_topic(&e) => {
                    // As Kafka's Java consumer: a group waits for its topics to exist.
                    tracing::debug!(batch = %self.label, error = %e, "kafka: waiting for the topic");
                    if Instant::now() >= assignment_deadline {
                        return Err(BatchError::Transient(format!(
                            "kafka: {} does not exist (waited {:?}): {e}",
                            self.label,
                            config.max_duration.unwrap_or(ASSIGNMENT_WAIT)
                        )));
                    }
                }
                Ok(Err(e)) => {
                    return Err(BatchError::Transient(format!(
                        "kafka: cannot read {}: {e}",
                        self.label
                    )));
                }
                Ok(Ok(message)) => {
                    assigned = true;
                    let record = Record::from_message(&message);
                    drop(message);
                    at_end.remove(&record.partition);
                    self.take(config, record, rows, floor, &mut batch).await?;
                }
            }
        }
        Ok(batch)
    }

    /// Writes one record's row (or passes it over), and counts it.
    async fn take<W: AsyncWrite + Unpin + Send>(
        &self,
        config: &BatchConfig,
        record: Record,
        rows: &mut IonWriter<W>,
        floor: &BTreeMap<PartitionKey, i64>,
        batch: &mut Batch,
    ) -> Result<(), BatchError> {
        let tp = (record.topic.clone(), record.partition);
        if floor.get(&tp).is_some_and(|next| record.offset < *next) {
            return Ok(());
        }
        match batch.seen.get_mut(&tp) {
            // Seen already (the group rebalanced and the partition was read again).
            Some((_, last)) if record.offset <= *last => return Ok(()),
            Some((_, last)) => *last = record.offset,
            None => {
                batch.seen.insert(tp, (record.offset, record.offset));
            }
        }
        if !headers_match(&config.header_filters, &record.headers) {
            return Ok(());
        }
        // The seek by time is the broker's answer; a broker with a coarse time index (tansu)
        // may start earlier, so older records are passed over here too.
        if let (Some(since), Some(ts)) = (config.since, record.timestamp)
            && ts < since.timestamp_millis()
        {
            return Ok(());
        }
        let decoded = decode_record(&record, config.key_deserializer, config.value_deserializer);
        let mut row = decoded.variables;
        if let Some(error) = decoded.error {
            match &config.on_serde_error {
                OnSerdeError::Fail => {
                    tracing::warn!(batch = %self.label, record = %record.coordinates(), error = %error, "kafka: record kept with its raw payload and an `error` field");
                    row.insert("error".into(), Value::String(error));
                }
                OnSerdeError::Skip => {
                    tracing::warn!(batch = %self.label, record = %record.coordinates(), error = %error, "kafka: undecodable record skipped (onSerdeError: SKIPPED)");
                    batch.skipped += 1;
                    return Ok(());
                }
                OnSerdeError::Dlq { .. } => {
                    let (producer, topic) = self
                        .dlq
                        .as_ref()
                        .ok_or_else(|| BatchError::Fatal("no dead-letter producer".into()))?;
                    let group = config.group_id.as_deref().unwrap_or("");
                    send_dead_letter(producer, topic, &record, &error, group)
                        .await
                        .map_err(BatchError::Transient)?;
                    batch.skipped += 1;
                    return Ok(());
                }
            }
        }
        rows.write_row(&Value::Object(row))
            .await
            .map_err(|e| BatchError::Transient(format!("cannot write the batch file: {e}")))?;
        batch.rows += 1;
        Ok(())
    }

    /// Whether every assigned partition is read to its high watermark. Asked only when
    /// librdkafka said a partition ended and every assigned partition number did.
    async fn all_at_end(
        &self,
        at_end: &std::collections::BTreeSet<i32>,
    ) -> Result<bool, BatchError> {
        let consumer = self.consumer().clone();
        let Ok(assignment) = consumer.assignment() else {
            return Ok(false);
        };
        if assignment.count() == 0
            || !assignment
                .elements()
                .iter()
                .all(|e| at_end.contains(&e.partition()))
        {
            return Ok(false);
        }
        blocking(move || {
            let positions = consumer.position()?;
            for e in positions.elements() {
                let (_, high) =
                    consumer.fetch_watermarks(e.topic(), e.partition(), CALL_TIMEOUT)?;
                // A position not known as a number (nothing read yet): librdkafka's end
                // event for the partition stands.
                let behind = matches!(e.offset(), Offset::Offset(position) if position < high);
                if behind {
                    return Ok(false);
                }
            }
            Ok(true)
        })
        .await
        .map_err(|e| {
            BatchError::Transient(format!(
                "kafka: cannot read the high watermarks of {}: {e}",
                self.label
            ))
        })
    }

    /// Commits `offsets` to the group (synchronously: the batch is done only once it holds).
    pub async fn commit(&self, offsets: &BTreeMap<PartitionKey, i64>) -> Result<(), BatchError> {
        if offsets.is_empty() {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), next) in offsets {
            tpl.add_partition_offset(topic, *partition, Offset::Offset(*next))
                .map_err(|e| {
                    BatchError::Fatal(format!("offset {next} of {topic}/{partition}: {e}"))
                })?;
        }
        let consumer = self.consumer().clone();
        blocking(move || consumer.commit(&tpl, CommitMode::Sync))
            .await
            .map_err(|e| {
                BatchError::Transient(format!(
                    "kafka: cannot commit the offsets of {}: {e}",
                    self.label
                ))
            })
    }
}

fn is_missing_topic(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic)
    )
}

/// Runs a blocking librdkafka call on a blocking thread.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, KafkaError> + Send + 'static,
) -> Result<T, KafkaError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or(Err(KafkaError::Canceled))
}

/// The partitions to assign, with their start offsets: the group's (stored) offsets when there
/// is a group; else `since` (looked up by time) or the beginning.
async fn assignment_list(
    consumer: Arc<StreamConsumer<LogContext>>,
    topics: Vec<String>,
    assignment: Assignment,
    has_group: bool,
    since: Option<DateTime<Utc>>,
) -> Result<TopicPartitionList, String> {
    blocking(move || {
        let mut tpl = TopicPartitionList::new();
        for topic in &topics {
            let partitions: Vec<i32> = match &assignment {
                Assignment::Partitions(p) => p.clone(),
                _ => {
                    let metadata = consumer.fetch_metadata(Some(topic), CALL_TIMEOUT)?;
                    metadata
                        .topics()
                        .iter()
                        .filter(|t| t.name() == topic)
                        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
                        .collect()
                }
            };
            for p in partitions {
                let start = match (since, has_group) {
                    (Some(at), _) => Offset::Offset(at.timestamp_millis()),
                    (None, true) => Offset::Stored,
                    (None, false) => Offset::Beginning,
                };
                tpl.add_partition_offset(topic, p, start)?;
            }
        }
        if since.is_some() {
            // Timestamps → the first offset at or after them (the end when there is none).
            let found = consumer.offsets_for_times(tpl, CALL_TIMEOUT)?;
            let mut resolved = TopicPartitionList::new();
            for e in found.elements() {
                let offset = match e.offset() {
                    Offset::Offset(o) if o >= 0 => Offset::Offset(o),
                    _ => Offset::End,
                };
                resolved.add_partition_offset(e.topic(), e.partition(), offset)?;
            }
            return Ok(resolved);
        }
        Ok(tpl)
    })
    .await
    .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value, reader: Reader) -> Result<BatchConfig, String> {
        BatchConfig::from_json(&v, reader)
    }

    fn base() -> Value {
        json!({"topic": "orders", "properties": {"bootstrap.servers": "localhost:9092"}})
    }

    fn with(extra: Value) -> Value {
        swoop_core::testing::merged(base(), extra)
    }

    #[test]
    fn the_task_needs_no_group_and_the_trigger_does() {
        let c = parse(base(), Reader::ConsumeTask).expect("parses");
        assert_eq!(c.assignment, Assignment::All);
        assert_eq!(c.poll_duration, DEFAULT_POLL_DURATION);
        let e = parse(base(), Reader::Trigger).unwrap_err();
        assert!(e.contains("`groupId` is required"), "{e}");
        let c = parse(with(json!({"groupId": "g"})), Reader::Trigger).expect("parses");
        assert_eq!(c.assignment, Assignment::Group);
        // Kestra's fallback: the group in `properties`.
        let c = parse(
            json!({"topic": "t", "properties": {"bootstrap.servers": "x:1", "group.id": "pg"}}),
            Reader::Trigger,
        )
        .expect("parses");
        assert_eq!(c.group_id.as_deref(), Some("pg"));
    }

    #[test]
    fn end_rules_and_assignments_parse() {
        let c = parse(
            with(
                json!({"partitions": [0, 2], "since": "2024-06-01T10:00:00+02:00",
                "pollDuration": "PT1S", "maxRecords": 500, "maxDuration": "PT30S"}),
            ),
            Reader::ConsumeTask,
        )
        .expect("parses");
        assert_eq!(c.assignment, Assignment::Partitions(vec![0, 2]));
        assert_eq!(c.since.unwrap().to_rfc3339(), "2024-06-01T08:00:00+00:00");
        assert_eq!(c.poll_duration, Duration::from_secs(1));
        assert_eq!(c.max_records, Some(500));
        assert_eq!(c.max_duration, Some(Duration::from_secs(30)));
    }

    #[test]
    fn problems_say_what_to_change() {
        let cases = [
            (
                json!({"groupType": "SHARE", "groupId": "g"}),
                "needs an Apache Kafka broker 4.2",
            ),
            (
                json!({"acknowledgeType": "ACCEPT"}),
                "only applies to `groupType: SHARE`",
            ),
            (
                json!({"groupId": "g", "since": "2024-06-01T10:00:00Z"}),
                "only without a group subscription",
            ),
            (json!({"since": "yesterday"}), "not an ISO-8601 date-time"),
            (json!({"maxRecords": 0}), "positive integer"),
            (json!({"pollDuration": "5s"}), "`pollDuration`"),
            (json!({"partitions": [0, 0]}), "twice"),
            (json!({"partitions": ["x"]}), "not a partition number"),
            (
                json!({"schemaRegistryVendor": {"type": "x"}}),
                "schema registry",
            ),
            (
                json!({"valueDeserializer": "AVRO"}),
                "AVRO is not supported yet",
            ),
            (
                json!({"onSerdeError": {"type": "DLQ", "topic": "orders"}}),
                "is a topic this batch reads",
            ),
        ];
        for (extra, wanted) in cases {
            let e = parse(with(extra.clone()), Reader::ConsumeTask).unwrap_err();
            assert!(e.contains(wanted), "{extra}: {e}");
        }
        let e = parse(
            json!({"topicPattern": "o.*", "properties": {"bootstrap.servers": "x:1"}}),
            Reader::ConsumeTask,
        )
        .unwrap_err();
        assert!(e.contains("`topicPattern` needs `groupId`"), "{e}");
    }

    #[test]
    fn a_batch_commits_after_its_last_records_and_never_below_what_is_owed() {
        let mut batch = Batch::default();
        batch.seen.insert(("a".into(), 0), (10, 19));
        batch.seen.insert(("a".into(), 1), (5, 5));
        let owed = BTreeMap::from([(("a".to_string(), 1), 40), (("b".to_string(), 0), 7)]);
        let next = batch.next_offsets(&owed);
        assert_eq!(
            next,
            BTreeMap::from([
                (("a".to_string(), 0), 20),
                (("a".to_string(), 1), 40),
                (("b".to_string(), 0), 7)
            ])
        );
        assert_eq!(batch.ranges(), "a/0:10-19,a/1:5-5");
    }
}

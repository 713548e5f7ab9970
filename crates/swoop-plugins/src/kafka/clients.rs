//! What every Kafka client here shares: librdkafka's log lines into `tracing`, the context of
//! the clients that need no callbacks of their own (the dead-letter producer, `Consume`,
//! `Trigger`, `Produce`), closing a client off the async threads, and sending a record to a
//! dead-letter topic.

use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;

use super::record::Record;

/// How long a dead-letter delivery may take.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(2);

/// Drops a client on a blocking thread: closing a consumer leaves its group and may wait
/// for the brokers.
pub(crate) fn spawn_drop<T: Send + 'static>(client: T) {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => {
            handle.spawn_blocking(move || drop(client));
        }
        Err(_) => drop(client),
    }
}

pub(crate) fn log_to_tracing(
    group_id: &str,
    level: RDKafkaLogLevel,
    facility: &str,
    message: &str,
) {
    match level {
        RDKafkaLogLevel::Emerg
        | RDKafkaLogLevel::Alert
        | RDKafkaLogLevel::Critical
        | RDKafkaLogLevel::Error => {
            tracing::error!(target: "librdkafka", group_id, facility, "{message}")
        }
        RDKafkaLogLevel::Warning => {
            tracing::warn!(target: "librdkafka", group_id, facility, "{message}")
        }
        RDKafkaLogLevel::Notice => {
            tracing::info!(target: "librdkafka", group_id, facility, "{message}")
        }
        RDKafkaLogLevel::Info | RDKafkaLogLevel::Debug => {
            tracing::debug!(target: "librdkafka", group_id, facility, "{message}")
        }
    }
}

/// Logs of the dead-letter producer, and of the `Consume` and `Trigger` clients.
pub(crate) struct LogContext {
    pub(crate) group_id: String,
}

impl rdkafka::consumer::ConsumerContext for LogContext {}

impl ClientContext for LogContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        log_to_tracing(&self.group_id, level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if matches!(error, KafkaError::Global(RDKafkaErrorCode::PartitionEOF)) {
            // A batch reading to each partition's end asks for these.
            return;
        }
        tracing::warn!(group_id = %self.group_id, error = %error, "kafka client error: {reason}");
    }
}

/// Produces `record` as it came (key, value, headers, timestamp) to the dead-letter `topic`,
/// with two more headers, `swoop.error` and `swoop.source` (its coordinates), and waits for
/// its delivery.
pub(crate) async fn send_dead_letter(
    producer: &FutureProducer<LogContext>,
    topic: &str,
    record: &Record,
    error: &str,
    group_id: &str,
) -> Result<(), String> {
    let source = record.coordinates();
    let mut headers = OwnedHeaders::new_with_capacity(record.headers.len() + 2);
    for (key, value) in &record.headers {
        headers = headers.insert(Header {
            key,
            value: value.as_deref(),
        });
    }
    headers = headers
        .insert(Header {
            key: "swoop.error",
            value: Some(error.as_bytes()),
        })
        .insert(Header {
            key: "swoop.source",
            value: Some(source.as_bytes()),
        });
    let mut out: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).headers(headers);
    if let Some(key) = &record.key {
        out = out.key(key.as_slice());
    }
    if let Some(value) = &record.value {
        out = out.payload(value.as_slice());
    }
    if let Some(ts) = record.timestamp {
        out = out.timestamp(ts);
    }
    match producer.send(out, Timeout::After(DELIVERY_TIMEOUT)).await {
        Ok(delivery) => {
            tracing::warn!(group_id = %group_id, record = %source, dlq_topic = %topic, dlq_partition = delivery.partition, dlq_offset = delivery.offset, "kafka: {error}; record sent to the dead-letter topic");
            Ok(())
        }
        Err((e, _)) => Err(format!(
            "kafka (groupId `{group_id}`): cannot produce {source} to the dead-letter topic `{topic}`: {e}"
        )),
    }
}

//! `io.kestra.plugin.kafka.Produce`: sends records given in `from` — a map, a list of maps, or
//! the `kestra:///` URI of an ION file (read one row at a time, never whole) — each with `key`,
//! `value`, `topic`, `partition`, `headers` and `timestamp`; outputs `messagesCount`.
//!
//! - **Transactional by default**, as Kestra: one transaction per run, committed once every
//!   record is delivered, aborted on any error, kill or timeout; a `read_committed` consumer
//!   sees all of a run's records or none. Rows are checked and serialized in a first pass before
//!   the transaction opens, so a bad row halfway through a file sends nothing. The
//!   `transactional.id` is `swoop-<executionId>/<taskRunId>`, the same for every attempt of the
//!   task run: a new attempt fences the transaction of an attempt that died.
//! - A broker that cannot run transactions is detected before anything is sent (its API
//!   versions lack EndTxn): the error says to set `transactional: false`.
//! - Not transactional: one producer shared by every run with the same `properties`; a retry
//!   after a failure sends again what was delivered before it (at least once).
//! - Rows written in the flow are rendered, and name their destination (their `topic` wins
//!   over the task's, as in Kestra). Rows of a file are data: not rendered (a payload is never
//!   evaluated as a template), and since a file `Consume` wrote says in `topic` where each record
//!   was read, the task's `topic` wins there when set — so `Consume` then `Produce` with a
//!   `topic` moves records to that topic.
//! - At most [`MAX_IN_FLIGHT`] records wait for their delivery at a time, so memory stays flat
//!   whatever the file's size.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use rdkafka::ClientConfig;
use rdkafka::config::FromClientConfigAndContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use serde_json::{Map, Value};
use swoop_core::ion::IonReader;
use swoop_core::model::LogLevel;
use swoop_core::registry::{
    PropSpec, PropType, RunContext, RunnableTask, TaskError, TaskFactory, TaskKind, shared_resource,
};

use super::clients::LogContext;
use super::config::{
    base_config, check_client_config, client_properties, config_error, string_map,
};
use super::serde::Serializer;
use crate::props::{has_template, present, scalar};

pub const PRODUCE_TASK: &str = "io.kestra.plugin.kafka.Produce";

/// Records waiting for their delivery at most, per run.
pub const MAX_IN_FLIGHT: usize = 10_000;
/// Bound of `init_transactions`, `commit_transaction` and `abort_transaction`.
const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(30);

pub const PRODUCE_PROPERTIES: &[PropSpec] = &[
    PropSpec::required("properties", PropType::Map),
    PropSpec::required("from", PropType::Any),
    PropSpec::optional("topic", PropType::String),
    PropSpec::optional("keySerializer", PropType::String),
    PropSpec::optional("valueSerializer", PropType::String),
    PropSpec::optional("transactional", PropType::Any),
    PropSpec::optional("serdeProperties", PropType::Map),
    PropSpec::optional("keyAvroSchema", PropType::String),
    PropSpec::optional("valueAvroSchema", PropType::String),
    PropSpec::optional("schemaRegistryVendor", PropType::Any),
];

pub fn factory() -> TaskFactory {
    TaskFactory {
        type_names: &[PRODUCE_TASK],
        properties: PRODUCE_PROPERTIES,
        build: |_, v| {
            let mut literal = v.clone();
            // `from` may be a template or a file; the rest is checked now when it is literal.
            if let Some(m) = literal.as_object_mut() {
                m.remove("from");
            }
            if !has_template(&literal) {
                ProduceConfig::from_json(&literal)?;
            }
            if let Some(from) = present(v, "from")
                && !has_template(from)
            {
                check_from(from)?;
            }
            Ok(TaskKind::Runnable(Arc::new(Produce { raw: v.clone() })))
        },
    }
}

/// The checked properties, `from` aside.
#[derive(Debug, Clone)]
struct ProduceConfig {
    properties: std::collections::BTreeMap<String, String>,
    topic: Option<String>,
    key_serializer: Serializer,
    value_serializer: Serializer,
    transactional: bool,
    warnings: Vec<String>,
}

impl ProduceConfig {
    fn from_json(v: &Value) -> Result<ProduceConfig, String> {
        let mut warnings = Vec::new();
        for refused in ["keyAvroSchema", "valueAvroSchema", "schemaRegistryVendor"] {
            if present(v, refused).is_some() {
                return Err(format!(
                    "`{refused}` is not supported yet: AVRO needs a schema registry, and none is supported (use BYTES, STRING or JSON)"
                ));
            }
        }
        let properties = client_properties(v, "", &mut warnings)?;
        for key in string_map(v, "serdeProperties")?.keys() {
            warnings.push(format!(
                "`serdeProperties.{key}` is ignored (it configures Kafka's Java serializers)"
            ));
        }
        let serializer = |name: &str| -> Result<Serializer, String> {
            match present(v, name) {
                None => Ok(Serializer::parse("STRING")?),
                Some(s) => {
                    Serializer::parse(&scalar(s, name)?).map_err(|e| format!("`{name}`: {e}"))
                }
            }
        };
        let transactional = match present(v, "transactional") {
            None => true,
            Some(Value::Bool(b)) => *b,
            Some(other) => match scalar(other, "transactional")?.trim() {
                "true" => true,
                "false" => false,
                t => return Err(format!("`transactional` must be true or false, got `{t}`")),
            },
        };
        let config = ProduceConfig {
            topic: present(v, "topic")
                .map(|t| scalar(t, "topic"))
                .transpose()?,
            key_serializer: serializer("keySerializer")?,
            value_serializer: serializer("valueSerializer")?,
            transactional,
            properties,
            warnings,
        };
        check_client_config(&config.producer_config("swoop", None))?;
        Ok(config)
    }

    fn producer_config(&self, client_id: &str, transactional_id: Option<&str>) -> ClientConfig {
        let mut c = base_config(&self.properties, client_id);
        if !self.properties.contains_key("linger.ms") {
            c.set("linger.ms", "5");
        }
        if let Some(id) = transactional_id {
            c.set("transactional.id", id);
        }
        c
    }
}

/// A literal `from`: a URI, a map, or a list of maps, each a valid record.
fn check_from(from: &Value) -> Result<(), String> {
    match from {
        Value::String(s) => swoop_core::storage::StoragePath::parse(s)
            .map(drop)
            .map_err(|e| format!("`from`: {e}")),
        Value::Object(_) => RecordFields::check(from, 1),
        Value::Array(rows) => rows
            .iter()
            .enumerate()
            .try_for_each(|(i, r)| RecordFields::check(r, i + 1)),
        other => Err(format!(
            "`from` must be a kestra:/// URI, a map or a list of maps, got {other}"
        )),
    }
}

/// The fields a record may have.
const RECORD_FIELDS: &[&str] = &["key", "value", "topic", "partition", "timestamp", "headers"];
/// Fields of the rows `Consume` writes that a record does not use (so its file can be sent on
/// as it is).
const CONSUMED_FIELDS: &[&str] = &["offset", "error", "rawKeyBase64", "rawValueBase64"];

/// One record to send, serialized.
struct RecordFields {
    topic: String,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    partition: Option<i32>,
    timestamp: Option<i64>,
    headers: Vec<HeaderBytes>,
}

/// A header's name and value.
type HeaderBytes = (String, Option<Vec<u8>>);

impl RecordFields {
    fn check(row: &Value, n: usize) -> Result<(), String> {
        let Value::Object(m) = row else {
            return Err(format!("record {n} of `from` must be a map, got {row}"));
        };
        if let Some(unknown) = m.keys().find(|k| {
            !RECORD_FIELDS.contains(&k.as_str()) && !CONSUMED_FIELDS.contains(&k.as_str())
        }) {
            return Err(format!(
                "record {n} of `from` has an unknown field `{unknown}` (fields are {})",
                RECORD_FIELDS.join(", ")
            ));
        }
        Ok(())
    }

    /// One row's record. A row of a file (`from_file`) is data — a file `Consume` wrote says in
    /// `topic` and `partition` where each record was read — so the task's `topic`, when set,
    /// wins there, and the row's `partition` is kept only for its own topic. A row written in
    /// the flow names its destination: its `topic` wins, as in Kestra.
    fn from_row(
        row: &Value,
        n: usize,
        config: &ProduceConfig,
        from_file: bool,
    ) -> Result<RecordFields, String> {
        Self::check(row, n)?;
        let field = |name: &str| row.get(name).filter(|v| !v.is_null());
        let at = |e: String| format!("record {n} of `from`: {e}");
        let own_topic = field("topic")
            .map(|t| scalar(t, "topic"))
            .transpose()
            .map_err(at)?;
        let topic = match (&own_topic, &config.topic) {
            (Some(own), Some(task)) if from_file => task.clone(),
            (Some(own), _) => own.clone(),
            (None, Some(task)) => task.clone(),
            (None, None) => {
                return Err(at(
                    "no `topic`: give the record one, or set the task's `topic`".into(),
                ));
            }
        };
        let keep_partition = own_topic.as_deref().is_none_or(|own| own == topic);
        let partition = field("partition")
            .filter(|_| keep_partition)
            .map(|p| {
                scalar(p, "partition")?
                    .trim()
                    .parse::<i32>()
                    .ok()
                    .filter(|p| *p >= 0)
                    .ok_or_else(|| format!("`partition` must be a partition number, got {p}"))
            })
            .transpose()
            .map_err(at)?;
        let timestamp = field("timestamp")
            .map(timestamp_millis)
            .transpose()
            .map_err(at)?;
        let headers = match field("headers") {
            None => Vec::new(),
            Some(h) => headers(h).map_err(at)?,
        };
        Ok(RecordFields {
            topic,
            key: config
                .key_serializer
                .encode(row.get("key").unwrap_or(&Value::Null))
                .map_err(|e| at(format!("key: {e}")))?,
            value: config
                .value_serializer
                .encode(row.get("value").unwrap_or(&Value::Null))
                .map_err(|e| at(format!("value: {e}")))?,
            partition,
            timestamp,
            headers,
        })
    }
}

/// Milliseconds since the epoch, or an ISO-8601 instant.
fn timestamp_millis(v: &Value) -> Result<i64, String> {
    match v {
        Value::Number(n) => n
            .as_i64()
            .ok_or_else(|| format!("`timestamp` {n} is not whole milliseconds")),
        Value::String(s) => chrono::DateTime::parse_from_rfc3339(s.trim())
            .map(|t| t.timestamp_millis())
            .or_else(|_| s.trim().parse::<i64>())
            .map_err(|_| {
                format!("`timestamp` `{s}` is neither epoch milliseconds nor an ISO-8601 instant")
            }),
        other => Err(format!(
            "`timestamp` must be epoch milliseconds or an ISO-8601 instant, got {other}"
        )),
    }
}

/// A map of headers, or a list of single-entry maps (as `Consume` writes them).
fn headers(v: &Value) -> Result<Vec<HeaderBytes>, String> {
    let bytes = |v: &Value| match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone().into_bytes()),
        other => Some(other.to_string().into_bytes()),
    };
    match v {
        Value::Object(m) => Ok(m.iter().map(|(k, v)| (k.clone(), bytes(v))).collect()),
        Value::Array(items) => items
            .iter()
            .flat_map(|item| match item {
                Value::Object(m) => m
                    .iter()
                    .map(|(k, v)| Ok((k.clone(), bytes(v))))
                    .collect::<Vec<_>>(),
                other => vec![Err(format!(
                    "`headers` lists {other}, not a single-entry map"
                ))],
            })
            .collect(),
        other => Err(format!(
            "`headers` must be a map or a list of single-entry maps, got {other}"
        )),
    }
}

/// Where the rows come from.
enum Rows {
    Inline(Vec<Value>),
    File(String),
}

/// The rows, one at a time.
enum RowStream {
    Inline(std::vec::IntoIter<Value>),
    File(
        IonReader<tokio::io::BufReader<swoop_core::storage::FileReader>>,
        String,
    ),
}

impl Rows {
    fn is_file(&self) -> bool {
        matches!(self, Rows::File(_))
    }

    async fn open(&self, ctx: &dyn RunContext) -> Result<RowStream, TaskError> {
        Ok(match self {
            Rows::Inline(rows) => RowStream::Inline(rows.clone().into_iter()),
            Rows::File(uri) => {
                let file =
                    ctx.storage().open(uri).await.map_err(|e| {
                        TaskError::permanent(format!("cannot open `from` {uri}: {e}"))
                    })?;
                RowStream::File(IonReader::new(tokio::io::BufReader::new(file)), uri.clone())
            }
        })
    }
}

impl RowStream {
    async fn next(&mut self) -> Result<Option<Value>, TaskError> {
        match self {
            RowStream::Inline(rows) => Ok(rows.next()),
            RowStream::File(reader, uri) => reader
                .next()
                .await
                .map_err(|e| TaskError::permanent(format!("cannot read `from` {uri}: {e}"))),
        }
    }
}

pub struct Produce {
    raw: Value,
}

type SharedProducer = FutureProducer<LogContext>;

#[async_trait]
impl RunnableTask for Produce {
    async fn run(&self, ctx: &dyn RunContext) -> Result<Map<String, Value>, TaskError> {
        let mut props = self.raw.clone();
        let from = props
            .as_object_mut()
            .and_then(|m| m.remove("from"))
            .ok_or_else(|| TaskError::permanent("`from` is required"))?;
        let props = ctx.render_value("properties", &props)?;
        let config = ProduceConfig::from_json(&props).map_err(TaskError::permanent)?;
        for w in &config.warnings {
            ctx.log(LogLevel::Warn, w.clone());
        }
        let rows = match ctx.render_typed("from", &from)? {
            Value::String(uri) => Rows::File(uri),
            Value::Object(m) => Rows::Inline(vec![Value::Object(m)]),
            Value::Array(rows) => Rows::Inline(rows),
            other => {
                return Err(TaskError::permanent(format!(
                    "`from` must be a kestra:/// URI, a map or a list of maps, got {other}"
                )));
            }
        };
        let info = ctx.info();
        let client_id = format!("swoop-{}-{}", info.flow_ref(), info.task_id);
        let sent = if config.transactional {
            // First pass: every row must serialize before anything is sent.
            let mut stream = rows.open(ctx).await?;
            let mut n = 0;
            while let Some(row) = stream.next().await? {
                n += 1;
                RecordFields::from_row(&row, n, &config, rows.is_file())
                    .map_err(TaskError::permanent)?;
            }
            let bootstrap = config
                .properties
                .get("bootstrap.servers")
                .cloned()
                .unwrap_or_default();
            if is_plaintext(&config) {
                probe_transactions(&bootstrap).await?;
            }
            let id = format!("swoop-{}", info.idempotency_key());
            let producer: SharedProducer = FutureProducer::from_config_and_context(
                &config.producer_config(&client_id, Some(&id)),
                LogContext {
                    group_id: id.clone(),
                },
            )
            .map_err(|e| TaskError::permanent(config_error(&e)))?;
            let txn = Transaction::begin(producer).await?;
            let result = send_all(ctx, &config, &rows, txn.producer()).await;
            match result {
                Ok(sent) => {
                    txn.commit().await?;
                    sent
                }
                Err(e) => {
                    txn.abort().await;
                    return Err(e);
                }
            }
        } else {
            let key = format!(
                "kafka-producer:{}",
                serde_json::to_string(&config.properties).unwrap_or_default()
            );
            let producer: Arc<SharedProducer> = shared_resource(ctx, &key, || async {
                FutureProducer::from_config_and_context(
                    &config.producer_config(&client_id, None),
                    LogContext {
                        group_id: String::new(),
                    },
                )
                .map_err(|e| TaskError::permanent(config_error(&e)))
            })
            .await?;
            send_all(ctx, &config, &rows, &producer).await?
        };
        ctx.log(
            LogLevel::Info,
            format!(
                "produced {sent} records{}",
                if config.transactional {
                    " in one transaction"
                } else {
                    ""
                }
            ),
        );
        let mut out = Map::new();
        out.insert("messagesCount".into(), Value::from(sent));
        Ok(out)
    }
}

/// Sends every row, at most [`MAX_IN_FLIGHT`] waiting for delivery; the first failed delivery
/// fails the run. Returns how many were delivered.
async fn send_all(
    ctx: &dyn RunContext,
    config: &ProduceConfig,
    rows: &Rows,
    producer: &SharedProducer,
) -> Result<u64, TaskError> {
    let mut stream = rows.open(ctx).await?;
    let mut pending: FuturesUnordered<DeliveryFuture> = FuturesUnordered::new();
    let mut delivered = 0u64;
    let mut n = 0;
    let cancel = ctx.cancellation();
    loop {
        if cancel.is_cancelled() {
            return Err(TaskError::new(
                "the Kafka producer was stopped (killed or timed out)",
            ));
        }
        while pending.len() >= MAX_IN_FLIGHT {
            delivered += settle(pending.next().await)?;
        }
        let Some(row) = stream.next().await? else {
            break;
        };
        n += 1;
        let record = RecordFields::from_row(&row, n, config, rows.is_file())
            .map_err(TaskError::permanent)?;
        let headers = (!record.headers.is_empty()).then(|| {
            let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
            for (key, value) in &record.headers {
                headers = headers.insert(Header {
                    key,
                    value: value.as_deref(),
                });
            }
            headers
        });
        loop {
            let mut out: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&record.topic);
            if let Some(h) = &headers {
                out = out.headers(h.clone());
            }
            if let Some(k) = &record.key {
                out = out.key(k.as_slice());
            }
            if let Some(v) = &record.value {
                out = out.payload(v.as_slice());
            }
            if let Some(p) = record.partition {
                out = out.partition(p);
            }
            if let Some(t) = record.timestamp {
                out = out.timestamp(t);
            }
            match producer.send_result(out) {
                Ok(delivery) => {
                    pending.push(delivery);
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _))
                    if !pending.is_empty() =>
                {
                    delivered += settle(pending.next().await)?;
                }
                Err((e, _)) => {
                    return Err(TaskError::new(format!(
                        "cannot produce record {n} to `{}`: {e}",
                        record.topic
                    )));
                }
            }
        }
    }
    while let Some(d) = pending.next().await {
        if cancel.is_cancelled() {
            return Err(TaskError::new(
                "the Kafka producer was stopped (killed or timed out)",
            ));
        }
        delivered += settle(Some(d))?;
    }
    Ok(delivered)
}

fn settle(
    d: Option<
        Result<
            rdkafka::producer::future_producer::OwnedDeliveryResult,
            futures::channel::oneshot::Canceled,
        >,
    >,
) -> Result<u64, TaskError> {
    match d {
        None => Ok(0),
        Some(Ok(Ok(_))) => Ok(1),
        Some(Ok(Err((e, m)))) => {
            use rdkafka::Message;
            Err(TaskError::new(format!(
                "a record to `{}` was not delivered: {e}",
                m.topic()
            )))
        }
        Some(Err(_)) => Err(TaskError::new(
            "the producer closed before a delivery was confirmed",
        )),
    }
}

/// An open transaction; dropped without `commit` (a killed task), it is aborted on a blocking
/// thread.
struct Transaction {
    producer: Option<Arc<SharedProducer>>,
}

impl Transaction {
    async fn begin(producer: SharedProducer) -> Result<Transaction, TaskError> {
        let producer = Arc::new(producer);
        let p = producer.clone();
        tokio::task::spawn_blocking(move || {
            p.init_transactions(TRANSACTION_TIMEOUT)?;
            p.begin_transaction()
        })
        .await
        .unwrap_or(Err(KafkaError::Canceled))
        .map_err(|e| transaction_error("start a transaction", &e))?;
        Ok(Transaction {
            producer: Some(producer),
        })
    }

    fn producer(&self) -> &SharedProducer {
        self.producer
            .as_ref()
            .expect("open until committed or aborted")
    }

    async fn commit(mut self) -> Result<(), TaskError> {
        let p = self.producer.take().expect("open");
        let result = tokio::task::spawn_blocking({
            let p = p.clone();
            move || p.commit_transaction(TRANSACTION_TIMEOUT)
        })
        .await
        .unwrap_or(Err(KafkaError::Canceled));
        if let Err(e) = result {
            self.producer = Some(p);
            return Err(transaction_error("commit the transaction", &e));
        }
        tokio::task::spawn_blocking(move || drop(p));
        Ok(())
    }

    async fn abort(mut self) {
        if let Some(p) = self.producer.take() {
            let _ = tokio::task::spawn_blocking(move || {
                if let Err(e) = p.abort_transaction(TRANSACTION_TIMEOUT) {
                    tracing::warn!(error = %e, "kafka: cannot abort the transaction; the broker aborts it after `transaction.timeout.ms`");
                }
            })
            .await;
        }
    }
}

impl Drop for Transaction {
    fn drop(&mut self) {
        if let Some(p) = self.producer.take()
            && let Ok(handle) = tokio::runtime::Handle::try_current()
        {
            handle.spawn_blocking(move || {
                let _ = p.abort_transaction(TRANSACTION_TIMEOUT);
            });
        }
    }
}

fn transaction_error(what: &str, e: &KafkaError) -> TaskError {
    let unsupported = matches!(
        e.rdkafka_error_code(),
        Some(RDKafkaErrorCode::UnsupportedFeature | RDKafkaErrorCode::UnsupportedVersion)
    );
    if unsupported {
        TaskError::permanent(format!(
            "cannot {what}: the broker does not support transactions ({e}); set `transactional: false` to produce without one"
        ))
    } else {
        TaskError::new(format!(
            "cannot {what}: {e} (set `transactional: false` if the broker does not support transactions)"
        ))
    }
}

fn is_plaintext(config: &ProduceConfig) -> bool {
    config
        .properties
        .get("security.protocol")
        .is_none_or(|p| p.eq_ignore_ascii_case("plaintext"))
}

/// Asks the first bootstrap broker for its API versions (a plain-text connection) and fails
/// when it lacks EndTxn, before anything is sent: a broker without it keeps every record of a
/// "transaction" (tansu does). When the broker cannot be reached, says nothing: the producer
/// reports that itself.
async fn probe_transactions(bootstrap: &str) -> Result<(), TaskError> {
    const END_TXN: i16 = 26;
    let Some(address) = bootstrap.split(',').map(str::trim).find(|a| !a.is_empty()) else {
        return Ok(());
    };
    let address = address
        .strip_prefix("PLAINTEXT://")
        .unwrap_or(address)
        .to_string();
    let keys = match tokio::time::timeout(Duration::from_secs(5), api_keys(&address)).await {
        Ok(Ok(keys)) => keys,
        _ => return Ok(()),
    };
    if keys.contains(&END_TXN) {
        Ok(())
    } else {
        Err(TaskError::permanent(format!(
            "the broker at {address} does not support transactions (it has no EndTxn API): set `transactional: false` to produce without one"
        )))
    }
}

/// The API keys a broker supports (an ApiVersions v0 request).
async fn api_keys(address: &str) -> std::io::Result<Vec<i16>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await?;
    let client_id = b"swoop";
    let mut request = Vec::new();
    request.extend_from_slice(&18i16.to_be_bytes()); // ApiVersions
    request.extend_from_slice(&0i16.to_be_bytes()); // version 0
    request.extend_from_slice(&1i32.to_be_bytes()); // correlation id
    request.extend_from_slice(&(client_id.len() as i16).to_be_bytes());
    request.extend_from_slice(client_id);
    stream
        .write_all(&(request.len() as i32).to_be_bytes())
        .await?;
    stream.write_all(&request).await?;
    let size = stream.read_i32().await?;
    if !(6..=1 << 20).contains(&size) {
        return Err(std::io::Error::other(
            "unexpected ApiVersions response size",
        ));
    }
    let mut body = vec![0u8; size as usize];
    stream.read_exact(&mut body).await?;
    let invalid = || std::io::Error::other("malformed ApiVersions response");
    // correlation id (4), error code (2), array length (4), then 6 bytes per key.
    let error = i16::from_be_bytes([body[4], body[5]]);
    if error != 0 || body.len() < 10 {
        return Err(invalid());
    }
    let count = i32::from_be_bytes([body[6], body[7], body[8], body[9]]);
    let mut keys = Vec::new();
    for i in 0..usize::try_from(count).map_err(|_| invalid())? {
        let at = 10 + i * 6;
        let key = body.get(at..at + 2).ok_or_else(invalid)?;
        keys.push(i16::from_be_bytes([key[0], key[1]]));
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(extra: Value) -> Result<ProduceConfig, String> {
        let base = json!({"properties": {"bootstrap.servers": "localhost:9092"}});
        ProduceConfig::from_json(&swoop_core::testing::merged(base, extra))
    }

    #[test]
    fn defaults_are_kestras() {
        let c = config(json!({})).expect("parses");
        assert!(c.transactional);
        assert_eq!(c.key_serializer, Serializer::parse("STRING").unwrap());
        let c = config(json!({"transactional": "false", "valueSerializer": "JSON"})).unwrap();
        assert!(!c.transactional);
        assert!(
            config(json!({"valueSerializer": "AVRO"}))
                .unwrap_err()
                .contains("AVRO")
        );
        assert!(
            config(json!({"valueAvroSchema": "{}"}))
                .unwrap_err()
                .contains("schema registry")
        );
    }

    #[test]
    fn records_are_checked_with_their_number() {
        let c = config(json!({"topic": "t", "valueSerializer": "INTEGER"})).unwrap();
        let r = RecordFields::from_row(
            &json!({"key": "k", "value": 5, "partition": 1, "timestamp": "2024-06-01T10:00:00Z",
                "headers": [{"a": "1"}, {"b": null}]}),
            1,
            &c,
            false,
        )
        .unwrap();
        assert_eq!(r.topic, "t");
        assert_eq!(r.value, Some(5i32.to_be_bytes().to_vec()));
        assert_eq!(r.timestamp, Some(1_717_236_000_000));
        assert_eq!(
            r.headers,
            vec![("a".into(), Some(b"1".to_vec())), ("b".into(), None)]
        );
        let e = RecordFields::from_row(&json!({"value": "x"}), 3, &c, false)
            .err()
            .unwrap();
        assert!(
            e.starts_with("record 3 of `from`: value: INTEGER needs"),
            "{e}"
        );
        let e = RecordFields::from_row(&json!({"valu": 1}), 2, &c, false)
            .err()
            .unwrap();
        assert!(e.contains("unknown field `valu`"), "{e}");
        let c = config(json!({})).unwrap();
        let e = RecordFields::from_row(&json!({"value": "x"}), 1, &c, false)
            .err()
            .unwrap();
        assert!(e.contains("no `topic`"), "{e}");
        // A consumed row names where it was read: in a file, the task's topic wins.
        let c = config(json!({"topic": "out"})).unwrap();
        let consumed = json!({"value": "v", "topic": "in", "partition": 3, "offset": 9});
        let r = RecordFields::from_row(&consumed, 1, &c, true).unwrap();
        assert_eq!((r.topic.as_str(), r.partition), ("out", None));
        let r = RecordFields::from_row(&consumed, 1, &c, false).unwrap();
        assert_eq!((r.topic.as_str(), r.partition), ("in", Some(3)));
        assert!(check_from(&json!(5)).is_err());
        assert!(check_from(&json!("kestra:///a/b.ion")).is_ok());
    }
}

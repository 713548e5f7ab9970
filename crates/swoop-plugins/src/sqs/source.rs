//! The queue consumer behind the realtime trigger, as a [`RealtimeSource`].
//!
//! Each connection builds an SDK client (the dynamic properties rendered now, so a rotated
//! secret is picked up on reconnect), checks that the queue answers, then runs:
//!
//! - `run` keeps [`POLLERS`] long polls (`ReceiveMessage`) going, and emits the messages of
//!   each batch as it comes (waiting for an in-flight slot; meanwhile no new poll starts: what
//!   swoop holds stays bounded, at most [`POLLERS`] batches, whatever the queue holds);
//! - a settling task ([`Settler`]): an event's ack sends its receipt handle there, and it
//!   deletes messages in batches of up to 10 (`DeleteMessageBatch`) once the runtime has stored
//!   the execution, or makes a released one (the trigger stopped first) visible again at once
//!   (`ChangeMessageVisibilityBatch` to 0). A message never deleted (crash, lost connection)
//!   becomes visible again after `visibilityTimeout` and is received again.
//!
//! Any SQS error ends the connection with [`SourceError::Transient`] (the SDK has retried it
//! `clientRetryMaxAttempts` times already); the runtime reconnects with backoff. A template
//! that cannot be rendered (a secret that is not set) is [`SourceError::Fatal`].
//!
//! Every SQS message has a `MessageId`, the event's dedup key: a message received again after
//! a crash (its execution stored, its delete lost) creates nothing new.

use std::time::Duration;

use async_trait::async_trait;
use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::config::{Credentials, Region};
use aws_sdk_sqs::operation::receive_message::{ReceiveMessageError, ReceiveMessageOutput};
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry, Message,
    MessageAttributeValue, MessageSystemAttributeName, QueueAttributeName,
};
use base64::Engine;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use serde_json::{Map, Value};
use swoop_core::realtime::{Ack, Event, RealtimeSource, SourceContext, SourceError};
use tokio::sync::mpsc;

use crate::realtime::{Settled, Settler, unless_stopped};

use super::config::{SerdeType, SqsTriggerConfig, region_of_queue_url};
use crate::props::error_chain;

/// Concurrent `ReceiveMessage` calls per trigger.
pub const POLLERS: usize = 4;
/// How long connecting (building the client and checking the queue) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// SQS's largest batch for `DeleteMessageBatch` and `ChangeMessageVisibilityBatch`.
const SQS_BATCH: usize = 10;
/// Receipt handles taken per wake-up of the settling task at most.
const SETTLE_BATCH: usize = 100;

/// A configured SQS realtime trigger.
pub struct SqsSource {
    config: SqsTriggerConfig,
}

impl SqsSource {
    pub fn new(config: SqsTriggerConfig) -> Self {
        SqsSource { config }
    }

    pub fn config(&self) -> &SqsTriggerConfig {
        &self.config
    }

    /// The SDK client and the queue URL, the dynamic properties rendered.
    async fn client(&self) -> Result<(Client, String), SourceError> {
        let config = &self.config;
        let queue_url = config
            .queue_url
            .resolve("queueUrl")
            .map_err(SourceError::Fatal)?;
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .retry_config(
                RetryConfig::standard().with_max_attempts(config.client_retry_max_attempts),
            )
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(10))
                    // A long poll answers within `waitTime`; leave room for the network.
                    .operation_attempt_timeout(config.wait_time + Duration::from_secs(15))
                    .build(),
            );
        let region = match &config.region {
            Some(region) => Some(region.resolve("region").map_err(SourceError::Fatal)?),
            None => region_of_queue_url(&queue_url).map(str::to_string),
        };
        if let Some(region) = region {
            loader = loader.region(Region::new(region));
        }
        if let Some(credentials) = &config.credentials {
            let resolve = |text: &crate::props::DynamicText, name| {
                text.resolve(name).map_err(SourceError::Fatal)
            };
            let session_token = match &credentials.session_token {
                Some(token) => Some(resolve(token, "sessionToken")?),
                None => None,
            };
            loader = loader.credentials_provider(Credentials::new(
                resolve(&credentials.access_key_id, "accessKeyId")?,
                resolve(&credentials.secret_key_id, "secretKeyId")?,
                session_token,
                None,
                "swoop-flow",
            ));
        }
        if let Some(endpoint) = &config.endpoint_override {
            loader = loader.endpoint_url(
                endpoint
                    .resolve("endpointOverride")
                    .map_err(SourceError::Fatal)?,
            );
        }
        let sdk_config = loader.load().await;
        if sdk_config.region().is_none() {
            return Err(SourceError::Fatal(format!(
                "SQS queue {queue_url}: no region: set `region` (or AWS_REGION)"
            )));
        }
        Ok((Client::new(&sdk_config), queue_url))
    }
}

fn transient(queue_url: &str, what: &str, e: impl std::error::Error + 'static) -> SourceError {
    SourceError::Transient(format!(
        "SQS queue {queue_url}: {what}: {}",
        error_chain(&e)
    ))
}

#[async_trait]
impl RealtimeSource for SqsSource {
    async fn run(&self, ctx: SourceContext) -> Result<(), SourceError> {
        let (client, queue_url) = self.client().await?;
        // Fail now, with the reason, if the queue or the credentials are wrong.
        tokio::time::timeout(CONNECT_TIMEOUT, queue_depth(&client, &queue_url))
            .await
            .map_err(|_| {
                SourceError::Transient(format!(
                    "SQS queue {queue_url}: no answer within {CONNECT_TIMEOUT:?}"
                ))
            })?
            .map_err(|e| {
                transient(
                    &queue_url,
                    "cannot read the queue's attributes (does it exist? may these credentials read it?)",
                    e,
                )
            })?;
        ctx.connected();
        let probed = (client.clone(), queue_url.clone());
        ctx.watch_backlog(crate::realtime::backlog_probe(move || {
            let (client, queue_url) = probed.clone();
            async move { queue_depth(&client, &queue_url).await.ok() }
        }));

        let (settler, settlements) = crate::realtime::settlements();
        let settling = tokio::spawn(settle_loop(client.clone(), queue_url.clone(), settlements));
        let receive = Receive {
            client,
            queue_url: queue_url.clone(),
            batch: i32::from(self.config.max_number_of_message),
            wait_seconds: self.config.wait_time.as_secs() as i32,
            visibility_timeout: self.config.visibility_timeout_seconds as i32,
        };
        let result = self.read(&ctx, &receive, &settler).await;
        drop(settler);
        if result.is_ok() && !crate::realtime::settle_until_done(settling).await {
            tracing::warn!(queue_url = %queue_url, "sqs trigger: events not settled in time; SQS will deliver them again");
        }
        result
    }
}

impl SqsSource {
    /// Emits the messages of the long polls until the trigger stops (Ok) or SQS fails (Err).
    async fn read(
        &self,
        ctx: &SourceContext,
        receive: &Receive,
        settler: &Settler<String>,
    ) -> Result<(), SourceError> {
        let mut polls: FuturesUnordered<_> = (0..POLLERS).map(|_| receive.call()).collect();
        loop {
            // A long poll is always going: `polls` is never empty.
            let Some(Some(received)) = unless_stopped(ctx, polls.next()).await else {
                return Ok(());
            };
            let received = received
                .map_err(|e| transient(&receive.queue_url, "cannot receive messages", e))?;
            // Events first: those not emitted are released (made visible again) as they drop.
            let events: Vec<Event> = received
                .messages
                .unwrap_or_default()
                .iter()
                .filter_map(|message| {
                    let handle = message.receipt_handle()?.to_string();
                    Some(event(self.config.serde_type, message, settler.ack(handle)))
                })
                .collect();
            for event in events {
                if ctx.emit(event).await.is_err() {
                    return Ok(());
                }
            }
            polls.push(receive.call());
        }
    }
}

/// The approximate number of visible messages in the queue.
async fn queue_depth(
    client: &Client,
    queue_url: &str,
) -> Result<
    u64,
    aws_sdk_sqs::error::SdkError<
        aws_sdk_sqs::operation::get_queue_attributes::GetQueueAttributesError,
    >,
> {
    let out = client
        .get_queue_attributes()
        .queue_url(queue_url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .send()
        .await?;
    Ok(out
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::ApproximateNumberOfMessages))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0))
}

/// How the long polls ask.
struct Receive {
    client: Client,
    queue_url: String,
    batch: i32,
    wait_seconds: i32,
    visibility_timeout: i32,
}

impl Receive {
    fn call(
        &self,
    ) -> impl Future<
        Output = Result<ReceiveMessageOutput, aws_sdk_sqs::error::SdkError<ReceiveMessageError>>,
    > + use<> {
        self.client
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(self.batch)
            .wait_time_seconds(self.wait_seconds)
            .visibility_timeout(self.visibility_timeout)
            .message_attribute_names("All")
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
    }
}

/// Deletes acknowledged messages and makes released ones visible again, in batches, until
/// every event of the run is settled.
async fn settle_loop(
    client: Client,
    queue_url: String,
    mut rx: mpsc::UnboundedReceiver<Settled<String>>,
) {
    let mut settled = Vec::with_capacity(SETTLE_BATCH);
    while rx.recv_many(&mut settled, SETTLE_BATCH).await > 0 {
        let (acked, released): (Vec<_>, Vec<_>) = settled
            .drain(..)
            .partition(|s| matches!(s, Settled::Ack(_)));
        let handles = |s: Vec<Settled<String>>| -> Vec<String> {
            s.into_iter()
                .map(|(Settled::Ack(h) | Settled::Nack(h))| h)
                .collect()
        };
        let failed = delete(&client, &queue_url, &handles(acked)).await;
        if !failed.is_empty() {
            // The messages become visible again; their executions exist, so receiving
            // them again creates nothing new.
            tracing::warn!(queue_url = %queue_url, errors = ?failed, "sqs trigger: cannot delete handled messages; SQS will deliver them again, and swoop will skip them");
        }
        release(&client, &queue_url, &handles(released)).await;
    }
}

/// Deletes these messages; the errors.
async fn delete(client: &Client, queue_url: &str, handles: &[String]) -> Vec<String> {
    let calls = handles.chunks(SQS_BATCH).map(|chunk| {
        let entries = chunk
            .iter()
            .enumerate()
            .filter_map(|(i, handle)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(handle)
                    .build()
                    .ok()
            })
            .collect::<Vec<_>>();
        client
            .delete_message_batch()
            .queue_url(queue_url)
            .set_entries(Some(entries))
            .send()
    });
    let mut failed = Vec::new();
    for result in futures::future::join_all(calls).await {
        match result {
            Ok(out) => failed.extend(
                out.failed()
                    .iter()
                    .map(|f| format!("{}: {}", f.code(), f.message().unwrap_or_default())),
            ),
            Err(e) => failed.push(error_chain(&e)),
        }
    }
    failed
}

/// Makes these messages visible again at once, instead of after `visibilityTimeout` (best
/// effort: what is not released becomes visible after `visibilityTimeout`).
async fn release(client: &Client, queue_url: &str, handles: &[String]) {
    let calls = handles.chunks(SQS_BATCH).map(|chunk| {
        let entries = chunk
            .iter()
            .enumerate()
            .filter_map(|(i, handle)| {
                ChangeMessageVisibilityBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(handle)
                    .visibility_timeout(0)
                    .build()
                    .ok()
            })
            .collect::<Vec<_>>();
        client
            .change_message_visibility_batch()
            .queue_url(queue_url)
            .set_entries(Some(entries))
            .send()
    });
    let _ = tokio::time::timeout(Duration::from_secs(5), futures::future::join_all(calls)).await;
}

/// The event of one message (its variables are Kestra's outputs, plus the attributes).
fn event(serde_type: SerdeType, message: &Message, ack: Ack) -> Event {
    let (data, decode_error) =
        serde_type.decode(message.body().unwrap_or_default().as_bytes(), "the message");
    let system = |name: MessageSystemAttributeName| {
        message
            .attributes()
            .and_then(|a| a.get(&name))
            .map(String::as_str)
    };
    let text = |s: Option<&str>| s.map_or(Value::Null, |s| Value::String(s.to_string()));
    let group_id = system(MessageSystemAttributeName::MessageGroupId).map(str::to_string);
    let mut variables = Map::new();
    variables.insert("data".into(), data);
    variables.insert("messageId".into(), text(message.message_id()));
    variables.insert("groupId".into(), text(group_id.as_deref()));
    variables.insert(
        "deduplicationId".into(),
        text(system(MessageSystemAttributeName::MessageDeduplicationId)),
    );
    variables.insert(
        "attributes".into(),
        Value::Object(
            message
                .message_attributes()
                .into_iter()
                .flatten()
                .map(|(name, value)| (name.clone(), attribute_value(value)))
                .collect(),
        ),
    );
    variables.insert(
        "systemAttributes".into(),
        Value::Object(
            message
                .attributes()
                .into_iter()
                .flatten()
                .map(|(name, value)| (name.as_str().to_string(), Value::String(value.clone())))
                .collect(),
        ),
    );
    Event {
        variables,
        dedup_key: message
            .message_id()
            .filter(|id| !id.is_empty())
            .map(str::to_string),
        key: group_id.clone(),
        partition: group_id,
        decode_error,
        execution_id: None,
        ack,
    }
}

/// A message attribute's value: its text (String and Number types), else its bytes in base64.
fn attribute_value(value: &MessageAttributeValue) -> Value {
    match (value.string_value(), value.binary_value()) {
        (Some(text), _) => Value::String(text.to_string()),
        (None, Some(bytes)) => {
            Value::String(base64::engine::general_purpose::STANDARD.encode(bytes.as_ref()))
        }
        (None, None) => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_sqs::primitives::Blob;
    use serde_json::json;

    #[test]
    fn events_carry_kestras_outputs() {
        let message = Message::builder()
            .message_id("m-1")
            .receipt_handle("rh-1")
            .body(r#"{"id": 1}"#)
            .attributes(MessageSystemAttributeName::MessageGroupId, "g")
            .attributes(MessageSystemAttributeName::ApproximateReceiveCount, "1")
            .message_attributes(
                "who",
                MessageAttributeValue::builder()
                    .data_type("String")
                    .string_value("me")
                    .build()
                    .unwrap(),
            )
            .message_attributes(
                "raw",
                MessageAttributeValue::builder()
                    .data_type("Binary")
                    .binary_value(Blob::new(b"hi".to_vec()))
                    .build()
                    .unwrap(),
            )
            .build();
        let (settler, mut rx) = crate::realtime::settlements();
        let e = event(SerdeType::Json, &message, settler.ack("rh-1".to_string()));
        assert_eq!(e.variables["data"], json!({"id": 1}));
        assert_eq!(e.variables["messageId"], "m-1");
        assert_eq!(e.variables["groupId"], "g");
        assert_eq!(e.variables["deduplicationId"], Value::Null);
        assert_eq!(
            e.variables["attributes"],
            json!({"who": "me", "raw": "aGk="})
        );
        assert_eq!(
            e.variables["systemAttributes"]["ApproximateReceiveCount"],
            "1"
        );
        assert_eq!(e.dedup_key.as_deref(), Some("m-1"));
        assert_eq!(e.key.as_deref(), Some("g"));
        assert!(e.decode_error.is_none());
        e.ack.settle(swoop_core::realtime::Outcome::Created);
        assert_eq!(rx.try_recv().unwrap(), Settled::Ack("rh-1".to_string()));
    }

    #[test]
    fn undecodable_bodies() {
        let message = Message::builder()
            .message_id("m-2")
            .body("this is { not json")
            .build();
        let e = event(SerdeType::Json, &message, Ack::none());
        assert_eq!(e.variables["data"], "this is { not json");
        assert!(e.decode_error.unwrap().contains("not valid JSON"));
        assert_eq!(e.variables["attributes"], json!({}));
        assert!(e.key.is_none());
    }
}

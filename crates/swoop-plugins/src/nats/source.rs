//! The JetStream durable pull consumer behind the realtime trigger.
//!
//! On connect: the stream covering `subject` is looked up (it is never created: without one the
//! connect fails, transiently, saying which subject has no stream), then the durable consumer
//! is reused, or created with an explicit ack policy, [`ACK_WAIT`] and the `deliverPolicy`.
//!
//! `run` pulls batches of up to `batchSize` messages and emits them one by one (waiting for an
//! in-flight slot: what was pulled and is not emitted yet is at most one batch). An event's
//! ack goes to another task ([`Settler`]), which publishes `+ACK` to the message's reply
//! subject once the execution is durable, or `-NAK` when the event is released (the trigger
//! stopped first), so the server delivers it again at once. A message not acknowledged within
//! [`ACK_WAIT`] (a crash, a batch left unread at a stop) is redelivered, and its dedup key
//! (`stream/sequence`) makes the redelivery create nothing new.

use std::pin::Pin;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::PullConsumer};
use async_nats::{Client, ConnectOptions, Subject};
use async_trait::async_trait;
use futures::Stream;
use serde_json::{Map, Value};
use swoop_core::realtime::{Ack, Event, RealtimeSource, SourceContext, SourceError};
use tokio::sync::mpsc;

use crate::realtime::{Settled, Settler, unless_stopped};

use super::config::{DeliverPolicy, NatsTriggerConfig, SerdeType};

/// How long the server waits for an acknowledgement before redelivering a message.
pub const ACK_WAIT: Duration = Duration::from_secs(30);
/// How long one pull request waits for messages before the pump asks again.
pub const PULL_EXPIRES: Duration = Duration::from_secs(2);
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(5);
/// Beyond the connection timeout, how long the JetStream set-up may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(15);

/// A configured NATS JetStream trigger.
pub struct NatsSource {
    config: NatsTriggerConfig,
}

impl NatsSource {
    pub fn new(config: NatsTriggerConfig) -> NatsSource {
        NatsSource { config }
    }
}

fn transient(url: &str, what: &str, e: impl std::fmt::Display) -> SourceError {
    SourceError::Transient(format!("NATS at {url}: {what}: {e}"))
}

impl NatsSource {
    async fn setup(
        &self,
        consumer_name: &str,
        url: &str,
    ) -> Result<(Client, PullConsumer), SourceError> {
        let c = &self.config;
        let mut options = ConnectOptions::new()
            .name(format!("swoop {consumer_name}"))
            .connection_timeout(CONNECTION_TIMEOUT);
        if let Some(credentials) = &c.credentials {
            let (user, password) = credentials.resolve().map_err(SourceError::Fatal)?;
            options = options.user_and_password(user, password);
        }
        if let Some(token) = &c.token {
            options = options.token(token.resolve("token").map_err(SourceError::Fatal)?);
        }
        let servers: Vec<async_nats::ServerAddr> = c
            .servers
            .iter()
            .map(|s| s.parse())
            .collect::<Result<_, _>>()
            .map_err(|e| SourceError::Fatal(format!("`url`: {e}")))?;
        let client = options
            .connect(servers)
            .await
            .map_err(|e| transient(url, "cannot connect", e))?;
        let js = jetstream::new(client.clone());

        let stream_name = js.stream_by_subject(c.subject.clone()).await.map_err(|e| {
            use async_nats::jetstream::context::GetStreamByNameErrorKind as K;
            match e.kind() {
                K::NotFound => SourceError::Transient(format!(
                    "NATS at {url}: no JetStream stream covers the subject `{}`: create one (the trigger does not)",
                    c.subject
                )),
                _ => transient(
                    url,
                    &format!("cannot find the stream of the subject `{}`", c.subject),
                    e,
                ),
            }
        })?;
        let stream = js
            .get_stream(&stream_name)
            .await
            .map_err(|e| transient(url, &format!("cannot get the stream `{stream_name}`"), e))?;

        let durable = c.durable_for(consumer_name);
        let consumer: PullConsumer = match stream.consumer_info(&durable).await {
            Ok(info) => {
                if info.config.filter_subject != c.subject {
                    return Err(SourceError::Fatal(format!(
                        "NATS at {url}: the durable consumer `{durable}` of the stream `{stream_name}` reads `{}`, not `{}`: use another `durableId`, or delete that consumer",
                        info.config.filter_subject, c.subject
                    )));
                }
                if info.config.ack_policy != jetstream::consumer::AckPolicy::Explicit {
                    return Err(SourceError::Fatal(format!(
                        "NATS at {url}: the durable consumer `{durable}` of the stream `{stream_name}` does not use explicit acks: use another `durableId`, or delete that consumer"
                    )));
                }
                stream.get_consumer(&durable).await.map_err(|e| {
                    transient(url, &format!("cannot get the consumer `{durable}`"), e)
                })?
            }
            Err(e) if is_not_found(&e) => {
                let deliver_policy = match c.deliver_policy {
                    DeliverPolicy::All => jetstream::consumer::DeliverPolicy::All,
                    DeliverPolicy::Last => jetstream::consumer::DeliverPolicy::Last,
                    DeliverPolicy::New => jetstream::consumer::DeliverPolicy::New,
                    DeliverPolicy::LastPerSubject => {
                        jetstream::consumer::DeliverPolicy::LastPerSubject
                    }
                    DeliverPolicy::ByStartTime(start_time) => {
                        jetstream::consumer::DeliverPolicy::ByStartTime { start_time }
                    }
                };
                let config = jetstream::consumer::pull::Config {
                    durable_name: Some(durable.clone()),
                    filter_subject: c.subject.clone(),
                    deliver_policy,
                    ack_policy: jetstream::consumer::AckPolicy::Explicit,
                    ack_wait: ACK_WAIT,
                    ..Default::default()
                };
                let consumer = stream.create_consumer(config).await.map_err(|e| {
                    transient(
                        url,
                        &format!(
                            "cannot create the durable consumer `{durable}` on `{stream_name}`"
                        ),
                        e,
                    )
                })?;
                tracing::info!(url = %url, stream = %stream_name, durable = %durable, subject = %c.subject, "NATS trigger: created the durable consumer");
                consumer
            }
            Err(e) => {
                return Err(transient(
                    url,
                    &format!("cannot get the consumer `{durable}` of `{stream_name}`"),
                    e,
                ));
            }
        };
        Ok((client, consumer))
    }
}

fn is_not_found(e: &jetstream::context::ConsumerInfoError) -> bool {
    use jetstream::context::ConsumerInfoErrorKind as K;
    match e.kind() {
        K::NotFound => true,
        K::JetStream(j) => j.error_code() == jetstream::ErrorCode::CONSUMER_NOT_FOUND,
        _ => false,
    }
}

#[async_trait]
impl RealtimeSource for NatsSource {
    async fn run(&self, ctx: SourceContext) -> Result<(), SourceError> {
        let url = self.config.display_url();
        let (client, consumer) = tokio::time::timeout(
            CONNECTION_TIMEOUT + SETUP_TIMEOUT,
            self.setup(ctx.consumer_name(), &url),
        )
        .await
        .map_err(|_| {
            SourceError::Transient(format!(
                "NATS at {url}: connecting and finding the consumer took more than {:?}",
                CONNECTION_TIMEOUT + SETUP_TIMEOUT
            ))
        })??;
        tracing::info!(url = %url, subject = %self.config.subject, "NATS trigger consuming");
        ctx.connected();
        let probed = consumer.clone();
        ctx.watch_backlog(crate::realtime::backlog_probe(move || {
            let consumer = probed.clone();
            async move { Some(consumer.get_info().await.ok()?.num_pending) }
        }));

        let (settler, settlements) = crate::realtime::settlements();
        let acks = tokio::spawn(ack_loop(client.clone(), settlements));
        let result = self.read(&ctx, &client, &consumer, &settler, &url).await;
        drop(settler);
        if result.is_ok() && !crate::realtime::settle_until_done(acks).await {
            tracing::warn!(url = %url, subject = %self.config.subject, "NATS trigger: events not settled in time; the server will deliver them again");
        }
        result
    }
}

impl NatsSource {
    /// Pulls batches and emits their messages until the trigger stops (Ok) or the connection
    /// fails (Err).
    async fn read(
        &self,
        ctx: &SourceContext,
        client: &Client,
        consumer: &PullConsumer,
        settler: &Settler<Subject>,
        url: &str,
    ) -> Result<(), SourceError> {
        loop {
            if client.connection_state() != async_nats::connection::State::Connected {
                return Err(SourceError::Transient(format!(
                    "NATS at {url}: disconnected"
                )));
            }
            let pulled = consumer
                .batch()
                .max_messages(self.config.batch_size)
                .expires(PULL_EXPIRES)
                .messages();
            let Some(batch) = unless_stopped(ctx, pulled).await else {
                return Ok(());
            };
            let mut batch = batch.map_err(|e| transient(url, "pull request failed", e))?;
            loop {
                let message = match unless_stopped(ctx, next(&mut batch)).await {
                    None => return Ok(()),
                    Some(None) => break,
                    Some(Some(Ok(message))) => message,
                    Some(Some(Err(e))) => return Err(transient(url, "reading messages failed", e)),
                };
                let event = event(message, self.config.serde_type, settler);
                if ctx.emit(event).await.is_err() {
                    return Ok(());
                }
            }
        }
    }
}

async fn next<S: Stream + Unpin>(s: &mut S) -> Option<S::Item> {
    std::future::poll_fn(|cx| Pin::new(&mut *s).poll_next(cx)).await
}

/// Acknowledges messages (publishes `+ACK`, or `-NAK` for a released one, to their reply
/// subjects), until every event of the run is settled. A lost ack only means a redelivery,
/// which dedup absorbs.
async fn ack_loop(client: Client, mut rx: mpsc::UnboundedReceiver<Settled<Subject>>) {
    let mut batch = Vec::with_capacity(256);
    while rx.recv_many(&mut batch, 256).await > 0 {
        for settled in batch.drain(..) {
            let (reply, answer) = match settled {
                Settled::Ack(reply) => (reply, "+ACK"),
                Settled::Nack(reply) => (reply, "-NAK"),
            };
            if client.publish(reply, answer.into()).await.is_err() {
                return;
            }
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), client.flush()).await;
}

/// A message's trigger variables (Kestra's `subject`, `headers`, `data`, `timestamp`), its
/// dedup key (`stream/sequence`) and the decode error.
pub(crate) fn event(
    message: jetstream::Message,
    serde_type: SerdeType,
    settler: &Settler<Subject>,
) -> Event {
    let subject = message.subject.to_string();
    let mut headers = Map::new();
    if let Some(h) = &message.headers {
        let mut names: Vec<_> = h.iter().collect();
        names.sort_by_key(|(name, _)| name.to_string());
        for (name, values) in names {
            headers.insert(
                name.to_string(),
                Value::Array(values.iter().map(|v| Value::from(v.as_str())).collect()),
            );
        }
    }
    let (data, decode_error) = serde_type.decode(&message.payload, "the message data");
    let (dedup_key, timestamp) = match message.info() {
        Ok(info) => (
            Some(format!("{}/{}", info.stream, info.stream_sequence)),
            Some(
                info.published
                    .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
            ),
        ),
        Err(_) => (None, None),
    };
    let mut variables = Map::new();
    variables.insert("subject".into(), Value::from(subject.clone()));
    variables.insert("headers".into(), Value::Object(headers));
    variables.insert("data".into(), data);
    variables.insert(
        "timestamp".into(),
        timestamp.map(Value::from).unwrap_or(Value::Null),
    );
    // No reply subject: not a JetStream message, nothing to acknowledge.
    let ack = match message.message.reply.clone() {
        Some(reply) => settler.ack(reply),
        None => Ack::none(),
    };
    Event {
        variables,
        dedup_key,
        key: None,
        partition: Some(subject),
        decode_error,
        execution_id: None,
        ack,
    }
}

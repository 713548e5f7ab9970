//! The JetStream durable pull consumer behind the realtime trigger.
//!
//! On connect: the stream covering `subject` is looked up (it is never created: without one the
//! connect fails, transiently, saying which subject has no stream), then the durable consumer
//! is reused, or created with an explicit ack policy, [`ACK_WAIT`] and the `deliverPolicy`.
//!
//! A background task (the pump) pulls batches and hands the messages to the connection through
//! a bounded channel of `batchSize` slots; `next()` only receives from it, so it is cancel-safe
//! and memory stays flat. A batch asks for no more messages than the channel has room for, so
//! the pump never waits in the middle of a batch (a batch left unread would expire with its
//! messages unacknowledged). Acknowledgements (`+ACK` to the message's reply subject) go
//! through an unbounded channel to another task, once the execution is durable; a message not
//! acknowledged within [`ACK_WAIT`] is redelivered, and its dedup key (`stream/sequence`) makes
//! the redelivery create nothing new.

use std::pin::Pin;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::PullConsumer};
use async_nats::{Client, ConnectOptions, Subject};
use async_trait::async_trait;
use futures::Stream;
use serde_json::{Map, Value};
use swoop_core::realtime::{Ack, Event, RealtimeSource, SourceContext, SourceError};

use crate::realtime::PullConnection;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

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
        crate::realtime::run_pull(self.connect(ctx.consumer_name()).await, ctx).await
    }
}

impl NatsSource {
    async fn connect(&self, consumer_name: &str) -> Result<Box<dyn PullConnection>, SourceError> {
        let url = self.config.display_url();
        let (client, consumer) = tokio::time::timeout(
            CONNECTION_TIMEOUT + SETUP_TIMEOUT,
            self.setup(consumer_name, &url),
        )
        .await
        .map_err(|_| {
            SourceError::Transient(format!(
                "NATS at {url}: connecting and finding the consumer took more than {:?}",
                CONNECTION_TIMEOUT + SETUP_TIMEOUT
            ))
        })??;
        tracing::info!(url = %url, subject = %self.config.subject, "NATS trigger consuming");

        let (tx, rx) = mpsc::channel(self.config.batch_size);
        let pump = tokio::spawn(pump(
            client.clone(),
            consumer.clone(),
            tx,
            self.config.batch_size,
            url.clone(),
        ));
        let (ack_tx, ack_rx) = mpsc::unbounded_channel();
        tokio::spawn(ack_loop(client.clone(), ack_rx));
        Ok(Box::new(NatsConnection {
            rx,
            pump,
            ack_tx,
            client,
            consumer,
            serde_type: self.config.serde_type,
        }))
    }
}

/// Pulls batches and hands their messages out, until an error or until the connection is
/// dropped.
async fn pump(
    client: Client,
    consumer: PullConsumer,
    tx: mpsc::Sender<Result<jetstream::Message, SourceError>>,
    batch_size: usize,
    url: String,
) {
    loop {
        // Wait for room, then ask for no more than there is room for.
        match tx.reserve().await {
            Ok(permit) => drop(permit),
            Err(_) => return,
        }
        if client.connection_state() != async_nats::connection::State::Connected {
            let _ = tx
                .send(Err(SourceError::Transient(format!(
                    "NATS at {url}: disconnected"
                ))))
                .await;
            return;
        }
        let room = tx.capacity().clamp(1, batch_size);
        let batch = consumer
            .batch()
            .max_messages(room)
            .expires(PULL_EXPIRES)
            .messages()
            .await;
        let mut batch = match batch {
            Ok(b) => b,
            Err(e) => {
                let _ = tx
                    .send(Err(transient(&url, "pull request failed", e)))
                    .await;
                return;
            }
        };
        while let Some(item) = next(&mut batch).await {
            match item {
                Ok(message) => match tx.try_send(Ok(message)) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(m)) => {
                        // Cannot happen (this task is the only sender), but never drop one.
                        if tx.send(m).await.is_err() {
                            return;
                        }
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => return,
                },
                Err(e) => {
                    let _ = tx
                        .send(Err(transient(&url, "reading messages failed", e)))
                        .await;
                    return;
                }
            }
        }
    }
}

async fn next<S: Stream + Unpin>(s: &mut S) -> Option<S::Item> {
    std::future::poll_fn(|cx| Pin::new(&mut *s).poll_next(cx)).await
}

/// Acknowledges messages (publishes `+ACK` to their reply subjects), until every ack of the
/// connection is done or dropped. A lost ack only means a redelivery, which dedup absorbs.
async fn ack_loop(client: Client, mut rx: mpsc::UnboundedReceiver<Subject>) {
    let mut batch = Vec::with_capacity(256);
    while rx.recv_many(&mut batch, 256).await > 0 {
        for reply in batch.drain(..) {
            if client.publish(reply, "+ACK".into()).await.is_err() {
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
    ack_tx: &mpsc::UnboundedSender<Subject>,
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
    let reply = message.message.reply.clone();
    let ack_tx = ack_tx.clone();
    Event {
        variables,
        dedup_key,
        key: None,
        partition: Some(subject),
        decode_error,
        ack: Ack::on_recorded(move || {
            if let Some(reply) = reply {
                // If the ack task is gone, the server redelivers after the ack wait.
                let _ = ack_tx.send(reply);
            }
        }),
    }
}

/// A live JetStream consumer.
pub struct NatsConnection {
    rx: mpsc::Receiver<Result<jetstream::Message, SourceError>>,
    pump: JoinHandle<()>,
    ack_tx: mpsc::UnboundedSender<Subject>,
    client: Client,
    consumer: PullConsumer,
    serde_type: SerdeType,
}

#[async_trait]
impl PullConnection for NatsConnection {
    async fn next(&mut self) -> Result<Event, SourceError> {
        match self.rx.recv().await {
            Some(Ok(message)) => Ok(event(message, self.serde_type, &self.ack_tx)),
            Some(Err(e)) => Err(e),
            None => Err(SourceError::Transient(
                "the NATS reader stopped; reconnecting".into(),
            )),
        }
    }

    async fn backlog(&mut self) -> Option<u64> {
        let info = tokio::time::timeout(Duration::from_secs(5), self.consumer.get_info())
            .await
            .ok()?
            .ok()?;
        Some(info.num_pending + self.rx.len() as u64)
    }

    async fn close(&mut self) {
        // Messages handed out but not acknowledged are redelivered after the ack wait.
        self.pump.abort();
        let _ = tokio::time::timeout(Duration::from_secs(2), self.client.flush()).await;
    }
}

impl Drop for NatsConnection {
    fn drop(&mut self) {
        self.pump.abort();
    }
}

//! The consumer behind the realtime trigger: finds the topics (a list, or a pattern over a
//! namespace), their partitions and the broker of each (LOOKUP, following redirects),
//! subscribes to every one with the trigger's subscription, and emits each message.
//!
//! - **Flow control**: the broker sends as many messages as it was given permits (FLOW);
//!   permits are given back as messages are emitted, so a trigger whose in-flight slots are
//!   all taken stops the broker (memory stays flat).
//! - **Acks**: an entry (one message, or one batch of them) is acknowledged (individual ACK)
//!   once every message in it is recorded; a released message (the trigger stopped before
//!   recording it) is given back at once with REDELIVER_UNACKNOWLEDGED_MESSAGES (its entry on
//!   a Shared or Key_Shared subscription; on an Exclusive or Failover one everything not
//!   acknowledged, as the Java client does: what is still in flight comes again and is
//!   recorded as a duplicate), and its entry is not acknowledged by this delivery. Acks are sent on the connection the message
//!   came from; one settled after that connection is gone is lost, and the broker redelivers
//!   the message, which the dedup key (the message id) makes a duplicate, not a second
//!   execution.
//! - **Stop**: CLOSE_CONSUMER for each consumer after the acks already settled, then the
//!   connections close.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use swoop_core::realtime::{Ack, Outcome, RealtimeSource, SourceContext, SourceError};
use tokio::sync::mpsc;

use super::config::{PulsarTriggerConfig, SubscriptionType, Topics};
use super::connection::{Connection, Incoming, RequestError};
use super::proto::{self, BaseCommand, MessageIdData, command_type as t, lookup_type};

/// Permits given to each consumer: how many messages the broker may send ahead.
pub const RECEIVER_QUEUE: u32 = 1000;
/// Redirects followed by one lookup at most.
const MAX_REDIRECTS: usize = 20;

/// Consumer ids, unique in the process: Pulsar scopes them to a connection, but pulsar-lite
/// refuses (closes the connection on) an id another connection uses.
static CONSUMER_IDS: AtomicU64 = AtomicU64::new(1);

/// A configured Pulsar trigger.
pub struct PulsarSource {
    config: PulsarTriggerConfig,
}

impl PulsarSource {
    pub fn new(config: PulsarTriggerConfig) -> PulsarSource {
        PulsarSource { config }
    }
}

/// One subscribed topic (or partition of one).
struct Consumer {
    topic: String,
    partition: i32,
    connection: Arc<Connection>,
    /// Messages emitted since the last FLOW.
    emitted: u32,
}

#[async_trait]
impl RealtimeSource for PulsarSource {
    async fn run(&self, ctx: SourceContext) -> Result<(), SourceError> {
        let token = match &self.config.authentication_token {
            Some(t) => Some(
                t.resolve("authenticationToken")
                    .map_err(SourceError::Fatal)?,
            ),
            None => None,
        };
        let (incoming_tx, mut incoming) = mpsc::unbounded_channel();
        let mut session = Session {
            config: &self.config,
            token,
            incoming: incoming_tx,
            connections: HashMap::new(),
            consumers: HashMap::new(),
        };
        let result = async {
            tokio::select! {
                biased;
                _ = ctx.stopped() => return Ok(()),
                subscribed = session.subscribe_all(ctx.consumer_name()) => subscribed?,
            }
            ctx.connected();
            loop {
                let next = tokio::select! {
                    biased;
                    _ = ctx.stopped() => return Ok(()),
                    next = incoming.recv() => next,
                };
                let Some(next) = next else {
                    return Err(SourceError::Transient(
                        "pulsar: every connection closed".into(),
                    ));
                };
                match next {
                    Incoming::Message {
                        consumer_id,
                        message,
                        metadata,
                        payload,
                    } => {
                        if !session
                            .deliver(&ctx, consumer_id, message, metadata, payload)
                            .await
                        {
                            return Ok(());
                        }
                    }
                    Incoming::ConsumerClosed { consumer_id, why } => {
                        if let Some(c) = session.consumers.get(&consumer_id) {
                            return Err(SourceError::Transient(format!(
                                "pulsar topic {}: {why}",
                                c.topic
                            )));
                        }
                    }
                    Incoming::Closed { broker, why } => {
                        if session.connections.contains_key(&broker) {
                            return Err(SourceError::Transient(format!("pulsar: {why}")));
                        }
                    }
                    Incoming::Receipt { .. } => {}
                }
            }
        }
        .await;
        session.close().await;
        result
    }
}

/// One run: the connections (by broker) and consumers (by id) it opened.
struct Session<'a> {
    config: &'a PulsarTriggerConfig,
    token: Option<String>,
    incoming: mpsc::UnboundedSender<Incoming>,
    connections: HashMap<String, Arc<Connection>>,
    consumers: HashMap<u64, Consumer>,
}

fn transient(what: &str, e: impl std::fmt::Display) -> SourceError {
    SourceError::Transient(format!("pulsar: {what}: {e}"))
}

/// A refused request: configuration the broker will keep refusing is fatal.
fn refused(what: &str, e: RequestError) -> SourceError {
    match e.server_error {
        Some(
            "AuthenticationError" | "AuthorizationError" | "InvalidTopicName" | "NotAllowedError",
        ) => SourceError::Fatal(format!("pulsar: {what}: {e}")),
        _ => transient(what, e),
    }
}

impl Session<'_> {
    /// The connection to `broker` (`host:port`), opened if needed.
    async fn connection(&mut self, broker: &str) -> Result<Arc<Connection>, SourceError> {
        if let Some(c) = self.connections.get(broker) {
            return Ok(c.clone());
        }
        let c = Connection::connect(broker, self.token.as_deref(), self.incoming.clone())
            .await
            .map_err(|e| SourceError::Transient(format!("pulsar: {e}")))?;
        let c = Arc::new(c);
        self.connections.insert(broker.to_string(), c.clone());
        Ok(c)
    }

    /// The first service host that answers.
    async fn service(&mut self) -> Result<Arc<Connection>, SourceError> {
        let mut last = None;
        for host in &self.config.hosts.clone() {
            match self.connection(host).await {
                Ok(c) => return Ok(c),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| SourceError::Fatal("pulsar: `uri` names no host".into())))
    }

    async fn subscribe_all(&mut self, name: &str) -> Result<(), SourceError> {
        let service = self.service().await?;
        let topics = match &self.config.topics {
            Topics::Names(names) => names.clone(),
            Topics::Pattern {
                namespace,
                persistent,
                pattern,
            } => {
                let topics = list_topics(&service, namespace, *persistent).await?;
                let matching: Vec<String> =
                    topics.into_iter().filter(|t| pattern.is_match(t)).collect();
                tracing::info!(namespace = %namespace, pattern = %pattern, topics = ?matching, "pulsar: topics matching the pattern");
                matching
            }
        };
        for topic in topics {
            for (partition_topic, partition) in partitions(&service, &topic).await? {
                let connection = self.lookup(&service, &partition_topic).await?;
                let consumer_id = CONSUMER_IDS.fetch_add(1, Ordering::Relaxed);
                self.subscribe(&connection, &partition_topic, consumer_id, name)
                    .await?;
                let mut flow = BaseCommand::of(t::FLOW);
                flow.flow = Some(proto::CommandFlow {
                    consumer_id,
                    message_permits: RECEIVER_QUEUE,
                });
                connection.send(&flow);
                tracing::info!(topic = %partition_topic, subscription = %self.config.subscription_name, broker = %connection.broker, "pulsar: subscribed");
                self.consumers.insert(
                    consumer_id,
                    Consumer {
                        topic: partition_topic,
                        partition,
                        connection,
                        emitted: 0,
                    },
                );
            }
        }
        Ok(())
    }

    /// The connection to the broker that owns `topic`.
    async fn lookup(
        &mut self,
        service: &Arc<Connection>,
        topic: &str,
    ) -> Result<Arc<Connection>, SourceError> {
        let mut asking = service.clone();
        let mut authoritative = false;
        for _ in 0..MAX_REDIRECTS {
            let request_id = asking.request_id();
            let mut command = BaseCommand::of(t::LOOKUP);
            command.lookup_topic = Some(proto::CommandLookupTopic {
                topic: topic.to_string(),
                request_id,
                authoritative: Some(authoritative),
            });
            let what = format!("looking up topic {topic}");
            let response = asking
                .request(request_id, &command)
                .await
                .map_err(|e| refused(&what, e))?;
            let lookup = response.lookup_topic_response.unwrap_or_default();
            if lookup.response == Some(lookup_type::FAILED) {
                let error = RequestError {
                    server_error: lookup.error.map(proto::server_error_name),
                    message: lookup.message.unwrap_or_default(),
                };
                return Err(refused(&what, error));
            }
            if lookup.proxy_through_service_url == Some(true) {
                return Ok(service.clone());
            }
            let url = lookup.broker_service_url.unwrap_or_default();
            let broker = url
                .strip_prefix("pulsar://")
                .unwrap_or(&url)
                .trim_end_matches('/');
            if broker.is_empty() {
                return Err(transient(&what, "the answer names no broker"));
            }
            let connection = self.connection(broker).await?;
            if lookup.response == Some(lookup_type::REDIRECT) {
                authoritative = lookup.authoritative.unwrap_or(false);
                asking = connection;
                continue;
            }
            return Ok(connection);
        }
        Err(transient(
            &format!("looking up topic {topic}"),
            format!("more than {MAX_REDIRECTS} redirects"),
        ))
    }

    async fn subscribe(
        &self,
        connection: &Connection,
        topic: &str,
        consumer_id: u64,
        name: &str,
    ) -> Result<(), SourceError> {
        let c = self.config;
        let request_id = connection.request_id();
        let mut command = BaseCommand::of(t::SUBSCRIBE);
        command.subscribe = Some(proto::CommandSubscribe {
            topic: topic.to_string(),
            subscription: c.subscription_name.clone(),
            sub_type: c.subscription_type as i32,
            consumer_id,
            request_id,
            consumer_name: Some(c.consumer_name.clone().unwrap_or_else(|| name.to_string())),
            durable: Some(true),
            metadata: c
                .consumer_properties
                .iter()
                .map(|(key, value)| proto::KeyValue {
                    key: key.clone(),
                    value: value.clone(),
                })
                .collect(),
            initial_position: Some(c.initial_position as i32),
        });
        connection
            .request(request_id, &command)
            .await
            .map(drop)
            .map_err(|e| {
                refused(
                    &format!("subscribing `{}` to topic {topic}", c.subscription_name),
                    e,
                )
            })
    }

    /// Emits the messages of one entry; `false` when the trigger stopped.
    async fn deliver(
        &mut self,
        ctx: &SourceContext,
        consumer_id: u64,
        message: proto::CommandMessage,
        metadata: Box<proto::MessageMetadata>,
        payload: Bytes,
    ) -> bool {
        let Some(consumer) = self.consumers.get(&consumer_id) else {
            return true;
        };
        let entry = Arc::new(EntryAck {
            out: consumer.connection.sender(),
            redeliver_all: matches!(
                self.config.subscription_type,
                SubscriptionType::Exclusive | SubscriptionType::Failover
            ),
            consumer_id,
            id: MessageIdData {
                ledger_id: message.message_id.ledger_id,
                entry_id: message.message_id.entry_id,
                partition: message.message_id.partition,
                batch_index: None,
            },
            remaining: AtomicUsize::new(0),
            nacked: AtomicBool::new(false),
        });
        let events = super::message::events(
            &consumer.topic,
            consumer.partition,
            &message.message_id,
            &metadata,
            payload,
            self.config.deserializer,
        );
        entry.remaining.store(events.len(), Ordering::Relaxed);
        if events.is_empty() {
            // Every message of the batch was compacted out: nothing to record.
            entry.settle(Outcome::Created);
        }
        let count = events.len() as u32;
        for mut event in events {
            let entry = entry.clone();
            event.ack = Ack::new(move |outcome| entry.settle(outcome));
            if ctx.emit(event).await.is_err() {
                return false;
            }
        }
        if let Some(consumer) = self.consumers.get_mut(&consumer_id) {
            consumer.emitted += count.max(1);
            if consumer.emitted >= RECEIVER_QUEUE / 2 {
                let mut flow = BaseCommand::of(t::FLOW);
                flow.flow = Some(proto::CommandFlow {
                    consumer_id,
                    message_permits: consumer.emitted,
                });
                consumer.connection.send(&flow);
                consumer.emitted = 0;
            }
        }
        true
    }

    /// CLOSE_CONSUMER for each consumer (after the acks queued before it), then the
    /// connections close as they are dropped.
    async fn close(&mut self) {
        let closing = self.consumers.iter().map(|(id, c)| {
            let request_id = c.connection.request_id();
            let mut command = BaseCommand::of(t::CLOSE_CONSUMER);
            command.close_consumer = Some(proto::CommandCloseConsumer {
                consumer_id: *id,
                request_id,
            });
            let connection = c.connection.clone();
            async move {
                let _ = tokio::time::timeout(
                    std::time::Duration::from_secs(2),
                    connection.request(request_id, &command),
                )
                .await;
            }
        });
        futures::future::join_all(closing).await;
        self.consumers.clear();
        self.connections.clear();
    }
}

/// The topics of `namespace` (partitions folded into their topic).
async fn list_topics(
    service: &Connection,
    namespace: &str,
    persistent: bool,
) -> Result<Vec<String>, SourceError> {
    let request_id = service.request_id();
    let mut command = BaseCommand::of(t::GET_TOPICS_OF_NAMESPACE);
    command.get_topics_of_namespace = Some(proto::CommandGetTopicsOfNamespace {
        request_id,
        namespace: namespace.to_string(),
        mode: Some(if persistent { 0 } else { 1 }),
    });
    let what = format!("listing the topics of namespace {namespace}");
    let response = service
        .request(request_id, &command)
        .await
        .map_err(|e| refused(&what, e))?;
    let mut topics: Vec<String> = Vec::new();
    for topic in response
        .get_topics_of_namespace_response
        .unwrap_or_default()
        .topics
    {
        let topic = match topic.rsplit_once("-partition-") {
            Some((base, n)) if n.parse::<u32>().is_ok() => base.to_string(),
            _ => topic,
        };
        if !topics.contains(&topic) {
            topics.push(topic);
        }
    }
    Ok(topics)
}

/// The topic's partitions as (topic name, partition index); a topic without partitions is
/// itself, with index -1.
async fn partitions(service: &Connection, topic: &str) -> Result<Vec<(String, i32)>, SourceError> {
    let request_id = service.request_id();
    let mut command = BaseCommand::of(t::PARTITIONED_METADATA);
    command.partition_metadata = Some(proto::CommandPartitionedTopicMetadata {
        topic: topic.to_string(),
        request_id,
    });
    let what = format!("reading the partitions of topic {topic}");
    let response = service
        .request(request_id, &command)
        .await
        .map_err(|e| refused(&what, e))?;
    let metadata = response.partition_metadata_response.unwrap_or_default();
    if metadata.response == Some(1) {
        let error = RequestError {
            server_error: metadata.error.map(proto::server_error_name),
            message: metadata.message.unwrap_or_default(),
        };
        return Err(refused(&what, error));
    }
    Ok(match metadata.partitions.unwrap_or(0) {
        0 => vec![(topic.to_string(), -1)],
        n => (0..n as i32)
            .map(|i| (format!("{topic}-partition-{i}"), i))
            .collect(),
    })
}

/// The acknowledgement of one entry, shared by the events of its messages.
struct EntryAck {
    /// Exclusive and Failover subscriptions give back everything unacknowledged (the broker
    /// rewinds the one consumer's cursor, as the Java client asks), Shared ones the entry.
    redeliver_all: bool,
    out: mpsc::UnboundedSender<Bytes>,
    consumer_id: u64,
    id: MessageIdData,
    remaining: AtomicUsize,
    nacked: AtomicBool,
}

impl EntryAck {
    fn settle(&self, outcome: Outcome) {
        if outcome.is_recorded() {
            if self.remaining.fetch_sub(1, Ordering::AcqRel) <= 1
                && !self.nacked.load(Ordering::Acquire)
            {
                let mut ack = BaseCommand::of(t::ACK);
                ack.ack = Some(proto::CommandAck {
                    consumer_id: self.consumer_id,
                    ack_type: 0,
                    message_id: vec![self.id.clone()],
                });
                let _ = self.out.send(proto::encode(&ack));
            }
        } else if !self.nacked.swap(true, Ordering::AcqRel) {
            let mut redeliver = BaseCommand::of(t::REDELIVER_UNACKNOWLEDGED_MESSAGES);
            redeliver.redeliver_unacknowledged_messages =
                Some(proto::CommandRedeliverUnacknowledgedMessages {
                    consumer_id: self.consumer_id,
                    message_ids: if self.redeliver_all {
                        Vec::new()
                    } else {
                        vec![self.id.clone()]
                    },
                });
            let _ = self.out.send(proto::encode(&redeliver));
        }
    }
}

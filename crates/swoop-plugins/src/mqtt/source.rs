//! The MQTT subscriber, as a [`RealtimeSource`].
//!
//! Each run is a fresh rumqttc client (MQTT 3.1.1, or 5 with `mqttVersion: V5`) with the
//! trigger's stable client id, a persistent session (3.1.1: `clean_session: false`; 5:
//! `clean_start: false` and a session that never expires) and manual acknowledgements:
//!
//! - `run` connects, subscribes and waits for the SUBACK, so once the trigger is RUNNING the
//!   broker keeps the session's messages even while swoop is down;
//! - it then polls the event loop and emits every incoming PUBLISH. The event loop keeps
//!   being polled while an emit waits for an in-flight slot (keep-alives, acknowledgements),
//!   holding at most [`BUFFER`] messages meanwhile. rumqttc's `poll` is not cancel-safe: the
//!   future that polls owns the event loop and is kept across `select!`s, never dropped
//!   mid-poll ([`Polling`]);
//! - an event's ack goes to another task ([`Settler`]), which sends the PUBACK (PUBREC for
//!   QoS 2) through the client once the runtime has stored the execution. Until then the
//!   broker counts the message as in flight (mosquitto's `max_inflight_messages`; MQTT 5's
//!   receive maximum, which swoop sets), which bounds what it sends. A released event (the
//!   trigger stopped first) and a message never acknowledged (crash, lost connection) get no
//!   PUBACK: the broker delivers them again when the same client id reconnects (MQTT has no
//!   nack);
//! - on stop, once every event is settled (at most [`SETTLE_GRACE`]), that task sends the
//!   DISCONNECT; the session stays on the broker;
//! - any connection error ends the run with [`SourceError::Transient`]; the runtime
//!   reconnects with backoff, and the new client resumes the same session.
//!
//! Events have no dedup key: MQTT packet ids are reused as soon as a message is acknowledged,
//! so they do not identify a message. A message whose execution was stored but whose PUBACK
//! was lost (a crash between the two) is delivered again and makes a second execution —
//! at-least-once, never lost.

use std::collections::VecDeque;
use std::pin::Pin;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Map, Value};
use swoop_core::realtime::{Ack, Event, RealtimeSource, SourceContext, SourceError};
use tokio::sync::mpsc;

use super::config::{MqttTriggerConfig, MqttVersion, Qos, SerdeType};
use crate::props::UserPassword;
use crate::realtime::{SETTLE_GRACE, Settled, Settler};

/// Incoming messages held while an emit waits for an in-flight slot; beyond, polling pauses.
/// For QoS 1 and 2 the broker's in-flight window (unacknowledged messages) is the real bound.
pub const BUFFER: usize = 128;

/// rumqttc's outgoing in-flight limit (swoop only sends acks and subscriptions), and the
/// receive maximum announced to MQTT 5 brokers (unacknowledged messages they may send).
pub const MAX_INFLIGHT: u16 = 100;

/// The keep-alive interval sent to the broker.
pub const KEEP_ALIVE: Duration = Duration::from_secs(30);

/// The largest message accepted.
pub const MAX_PACKET_SIZE: usize = 64 * 1024 * 1024;

/// How long the DISCONNECT may take to go out after the last acknowledgement.
const DISCONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A configured MQTT realtime trigger.
pub struct MqttSource {
    config: MqttTriggerConfig,
}

impl MqttSource {
    pub fn new(config: MqttTriggerConfig) -> Self {
        MqttSource { config }
    }

    pub fn config(&self) -> &MqttTriggerConfig {
        &self.config
    }
}

/// `username` and `password`, rendered (a secret that is not set fails the trigger).
fn credentials(c: &MqttTriggerConfig) -> Result<Option<(String, String)>, SourceError> {
    c.credentials
        .as_ref()
        .map(UserPassword::resolve)
        .transpose()
        .map_err(SourceError::Fatal)
}

/// What one poll of the event loop gave, whatever the protocol version.
enum Step {
    ConnAck {
        session_present: bool,
    },
    /// The SUBACK: the indexes of the topics the broker refused.
    SubAck {
        refused: Vec<usize>,
    },
    Publish(Message),
    /// Our DISCONNECT went out.
    Disconnected,
    Failed(SourceError),
    Other,
}

/// A protocol version's event loop, owned by the future that polls it once.
trait EventLoopPoll: Send + 'static {
    fn poll(self: Box<Self>) -> Polling;
}

/// One poll of the event loop, which hands the loop back with what it gave.
type Polling = Pin<Box<dyn Future<Output = (Box<dyn EventLoopPoll>, Step)> + Send>>;

/// A protocol version's client: what the acknowledging task sends.
#[async_trait]
trait MqttClient: Send + Sync + 'static {
    /// The PUBACK (PUBREC); `false` when the event loop is gone.
    async fn ack(&self, pkid: u16, qos: Qos) -> bool;
    async fn disconnect(&self);
}

/// The next step of the event loop; `polling` goes on with the next poll.
async fn step(polling: &mut Polling) -> Step {
    // Awaited by reference: dropping this future leaves the poll going in `polling`.
    let (event_loop, step) = (&mut *polling).await;
    *polling = event_loop.poll();
    step
}

/// A protocol version's event loop.
#[async_trait]
trait VersionLoop: Send + 'static {
    /// Polls the event loop once.
    async fn next_step(&mut self, server: &str, serde_type: SerdeType) -> Step;
}

/// An event loop with what its steps need.
struct Loop<V> {
    version: V,
    server: String,
    serde_type: SerdeType,
}

impl<V: VersionLoop> EventLoopPoll for Loop<V> {
    fn poll(mut self: Box<Self>) -> Polling {
        Box::pin(async move {
            let step = self.version.next_step(&self.server, self.serde_type).await;
            (self as Box<dyn EventLoopPoll>, step)
        })
    }
}

/// The client, and the first poll of its event loop (which connects).
fn started(
    client: impl MqttClient,
    version: impl VersionLoop,
    c: &MqttTriggerConfig,
    server: &str,
) -> (Box<dyn MqttClient>, Polling) {
    let event_loop = Box::new(Loop {
        version,
        server: server.to_string(),
        serde_type: c.serde_type,
    });
    (Box::new(client), event_loop.poll())
}

#[async_trait]
impl RealtimeSource for MqttSource {
    async fn run(&self, ctx: SourceContext) -> Result<(), SourceError> {
        let c = &self.config;
        let client_id = c.client_id_for(ctx.consumer_name());
        let server = format!("{}:{}", c.host, c.port);
        let credentials = credentials(c)?;
        let (client, mut polling) = match c.version {
            MqttVersion::V3 => v3::start(c, client_id.clone(), credentials, &server).await?,
            MqttVersion::V5 => v5::start(c, client_id.clone(), credentials, &server).await?,
        };
        let (early, session_present) = subscribed(c, &server, &mut polling).await?;
        tracing::info!(
            server = %server,
            client_id = %client_id,
            session_present,
            version = ?c.version,
            topics = ?c.topics,
            "MQTT trigger subscribed"
        );
        ctx.connected();
        let (settler, settlements) = crate::realtime::settlements();
        tokio::spawn(acknowledge(client, settlements));
        let result = read(&ctx, &mut polling, early, &settler).await;
        drop(settler);
        if result.is_ok() {
            disconnect(&server, polling).await;
        }
        result
    }
}

/// Connects and waits for the SUBACK (a resumed session may deliver messages first: they are
/// returned, with whether the broker had the session).
async fn subscribed(
    c: &MqttTriggerConfig,
    server: &str,
    polling: &mut Polling,
) -> Result<(VecDeque<Message>, bool), SourceError> {
    let mut early = VecDeque::new();
    let mut session_present = false;
    let subscribed = tokio::time::timeout(c.connection_timeout, async {
        loop {
            match step(polling).await {
                Step::ConnAck {
                    session_present: present,
                } => session_present = present,
                Step::SubAck { refused } if refused.is_empty() => return Ok(()),
                Step::SubAck { refused } => {
                    let topics: Vec<&str> = refused
                        .iter()
                        .filter_map(|i| c.topics.get(*i).map(String::as_str))
                        .collect();
                    return Err(SourceError::Transient(format!(
                        "the MQTT broker {server} refused the subscription to `{}`",
                        topics.join("`, `")
                    )));
                }
                Step::Publish(message) => early.push_back(message),
                Step::Failed(e) => return Err(e),
                Step::Disconnected | Step::Other => {}
            }
        }
    })
    .await;
    match subscribed {
        Ok(result) => result.map(|()| (early, session_present)),
        Err(_) => Err(SourceError::Transient(format!(
            "MQTT broker {server}: no connection and subscription within {} s",
            c.connection_timeout.as_secs()
        ))),
    }
}

/// Emits the incoming messages (`early` first) until the trigger stops (Ok) or the connection
/// fails (Err), polling the event loop meanwhile.
async fn read(
    ctx: &SourceContext,
    polling: &mut Polling,
    early: VecDeque<Message>,
    settler: &Settler<(u16, Qos)>,
) -> Result<(), SourceError> {
    let mut held: VecDeque<Event> = early.into_iter().map(|m| event(m, settler)).collect();
    loop {
        let Some(next) = held.pop_front() else {
            tokio::select! {
                biased;
                _ = ctx.stopped() => return Ok(()),
                step = step(polling) => take(step, &mut held, settler)?,
            }
            continue;
        };
        let emit = ctx.emit(next);
        tokio::pin!(emit);
        loop {
            tokio::select! {
                biased;
                emitted = &mut emit => match emitted {
                    Ok(()) => break,
                    Err(_) => return Ok(()),
                },
                step = step(polling), if held.len() < BUFFER => take(step, &mut held, settler)?,
            }
        }
    }
}

/// Holds an incoming message; a failure ends the run.
fn take(
    step: Step,
    held: &mut VecDeque<Event>,
    settler: &Settler<(u16, Qos)>,
) -> Result<(), SourceError> {
    match step {
        Step::Publish(message) => held.push_back(event(message, settler)),
        Step::Failed(e) => return Err(e),
        Step::ConnAck { .. } | Step::SubAck { .. } | Step::Disconnected | Step::Other => {}
    }
    Ok(())
}

/// After a stop: polls the event loop while the last acknowledgements go out and then the
/// DISCONNECT (sent once every event is settled). Messages coming meanwhile are dropped
/// unacknowledged: the broker delivers them again.
async fn disconnect(server: &str, mut polling: Polling) {
    let done = async {
        loop {
            if let Step::Disconnected | Step::Failed(_) = step(&mut polling).await {
                return;
            }
        }
    };
    if tokio::time::timeout(SETTLE_GRACE + DISCONNECT_TIMEOUT, done)
        .await
        .is_err()
    {
        tracing::warn!(server = %server, "MQTT trigger: events not settled in time; the broker will deliver them again");
    }
}

/// Sends the acknowledgements through the client, in order, until every event of the run is
/// settled; then the DISCONNECT.
async fn acknowledge(
    client: Box<dyn MqttClient>,
    mut rx: mpsc::UnboundedReceiver<Settled<(u16, Qos)>>,
) {
    while let Some(settled) = rx.recv().await {
        match settled {
            Settled::Ack((pkid, qos)) => {
                if !client.ack(pkid, qos).await {
                    // The event loop is gone: the broker redelivers what was not acknowledged.
                    return;
                }
            }
            // No PUBACK: the broker delivers it again when the session resumes.
            Settled::Nack(_) => {}
        }
    }
    client.disconnect().await;
}

fn qos_of_level(level: u8) -> Qos {
    Qos::from_level(level).unwrap_or(Qos::AtMostOnce)
}

/// An incoming message, decoded, whatever the protocol version.
struct Message {
    topic: String,
    qos: Qos,
    retain: bool,
    pkid: u16,
    properties: Map<String, Value>,
    payload: Value,
    decode_error: Option<String>,
}

impl Message {
    fn decoded(
        topic: String,
        (qos, retain, pkid): (Qos, bool, u16),
        properties: Map<String, Value>,
        payload: &[u8],
        serde_type: SerdeType,
    ) -> Message {
        let (payload, decode_error) = match serde_type.decode(payload) {
            Ok(v) => (v, None),
            Err((raw, e)) => (raw, Some(e)),
        };
        Message {
            topic,
            qos,
            retain,
            pkid,
            properties,
            payload,
            decode_error,
        }
    }
}

/// An incoming message as the event the runtime sees.
fn event(message: Message, settler: &Settler<(u16, Qos)>) -> Event {
    let Message {
        topic,
        qos,
        retain,
        pkid,
        properties,
        payload,
        decode_error,
    } = message;
    let mut variables = Map::new();
    variables.insert("topic".into(), Value::String(topic.clone()));
    variables.insert("payload".into(), payload);
    variables.insert("qos".into(), Value::from(qos.level()));
    variables.insert("retain".into(), Value::Bool(retain));
    variables.insert("id".into(), Value::from(pkid));
    variables.insert("properties".into(), Value::Object(properties));
    let ack = if qos == Qos::AtMostOnce {
        Ack::none()
    } else {
        settler.ack((pkid, qos))
    };
    Event {
        variables,
        dedup_key: None,
        key: Some(topic.clone()),
        partition: Some(topic),
        decode_error,
        execution_id: None,
        ack,
    }
}

fn connection_error(server: &str, refused: Option<String>, e: &dyn std::fmt::Display) -> Step {
    Step::Failed(SourceError::Transient(match refused {
        Some(code) => format!("the MQTT broker {server} refused the connection: {code}"),
        None => format!("MQTT broker {server}: {e}"),
    }))
}

fn subscribe_error(e: impl std::fmt::Display) -> SourceError {
    SourceError::Transient(format!("MQTT subscribe: {e}"))
}

/// MQTT 3.1.1.
mod v3 {
    use rumqttc::{
        AsyncClient, ConnectionError, Event as MqttEvent, EventLoop, MqttOptions, Outgoing, Packet,
        Publish, QoS, SubscribeFilter, SubscribeReasonCode,
    };

    use super::*;

    fn qos(q: Qos) -> QoS {
        match q {
            Qos::AtMostOnce => QoS::AtMostOnce,
            Qos::AtLeastOnce => QoS::AtLeastOnce,
            Qos::ExactlyOnce => QoS::ExactlyOnce,
        }
    }

    /// The client, and the first poll of its event loop (which connects), the subscription
    /// queued.
    pub(super) async fn start(
        c: &MqttTriggerConfig,
        client_id: String,
        credentials: Option<(String, String)>,
        server: &str,
    ) -> Result<(Box<dyn MqttClient>, Polling), SourceError> {
        let mut options = MqttOptions::new(client_id, c.host.clone(), c.port);
        options
            .set_clean_session(false)
            .set_manual_acks(true)
            .set_keep_alive(KEEP_ALIVE)
            .set_inflight(MAX_INFLIGHT)
            .set_max_packet_size(MAX_PACKET_SIZE, MAX_PACKET_SIZE);
        if let Some((username, password)) = credentials {
            options.set_credentials(username, password);
        }
        let (client, mut eventloop) = AsyncClient::new(options, 64);
        let mut network = eventloop.network_options();
        network.set_connection_timeout(c.connection_timeout.as_secs().max(1));
        eventloop.set_network_options(network);
        let filters = c
            .topics
            .iter()
            .map(|t| SubscribeFilter::new(t.clone(), qos(c.qos)));
        client
            .subscribe_many(filters)
            .await
            .map_err(subscribe_error)?;
        Ok(started(client, eventloop, c, server))
    }

    #[async_trait]
    impl VersionLoop for EventLoop {
        async fn next_step(&mut self, server: &str, serde_type: SerdeType) -> Step {
            match self.poll().await {
                Ok(MqttEvent::Incoming(Packet::ConnAck(ack))) => Step::ConnAck {
                    session_present: ack.session_present,
                },
                Ok(MqttEvent::Incoming(Packet::SubAck(ack))) => Step::SubAck {
                    refused: (ack.return_codes.iter().enumerate())
                        .filter(|(_, code)| matches!(code, SubscribeReasonCode::Failure))
                        .map(|(i, _)| i)
                        .collect(),
                },
                Ok(MqttEvent::Incoming(Packet::Publish(p))) => Step::Publish(Message::decoded(
                    p.topic,
                    (qos_of_level(p.qos as u8), p.retain, p.pkid),
                    Map::new(),
                    &p.payload,
                    serde_type,
                )),
                Ok(MqttEvent::Incoming(Packet::Disconnect)) => {
                    Step::Failed(SourceError::Transient(format!(
                        "the MQTT broker {server} closed the connection"
                    )))
                }
                Ok(MqttEvent::Outgoing(Outgoing::Disconnect)) => Step::Disconnected,
                Ok(_) => Step::Other,
                Err(ConnectionError::ConnectionRefused(code)) => {
                    connection_error(server, Some(format!("{code:?}")), &"")
                }
                Err(e) => connection_error(server, None, &e),
            }
        }
    }

    #[async_trait]
    impl MqttClient for AsyncClient {
        async fn ack(&self, pkid: u16, q: Qos) -> bool {
            // Only the packet id and QoS matter to an ack.
            let mut p = Publish::new("", qos(q), Vec::new());
            p.pkid = pkid;
            AsyncClient::ack(self, &p).await.is_ok()
        }

        async fn disconnect(&self) {
            let _ = AsyncClient::disconnect(self).await;
        }
    }
}

/// MQTT 5.
mod v5 {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD as BASE64;
    use rumqttc::Outgoing;
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::mqttbytes::v5::{
        Filter, Packet, Publish, PublishProperties, SubscribeReasonCode,
    };
    use rumqttc::v5::{AsyncClient, ConnectionError, Event as MqttEvent, EventLoop, MqttOptions};

    use super::*;

    fn qos(q: Qos) -> QoS {
        match q {
            Qos::AtMostOnce => QoS::AtMostOnce,
            Qos::AtLeastOnce => QoS::AtLeastOnce,
            Qos::ExactlyOnce => QoS::ExactlyOnce,
        }
    }

    /// A message's MQTT 5 properties as the tasks see them (camelCase, only those present;
    /// `userProperties` as a map, the last value of a repeated name winning).
    pub(super) fn properties(p: Option<&PublishProperties>) -> Map<String, Value> {
        let mut m = Map::new();
        let Some(p) = p else {
            return m;
        };
        if let Some(v) = p.payload_format_indicator {
            m.insert("payloadFormatIndicator".into(), Value::from(v));
        }
        if let Some(v) = p.message_expiry_interval {
            m.insert("messageExpiryInterval".into(), Value::from(v));
        }
        if let Some(v) = &p.response_topic {
            m.insert("responseTopic".into(), Value::from(v.clone()));
        }
        if let Some(v) = &p.correlation_data {
            m.insert("correlationData".into(), Value::from(BASE64.encode(v)));
        }
        if let Some(v) = &p.content_type {
            m.insert("contentType".into(), Value::from(v.clone()));
        }
        if !p.subscription_identifiers.is_empty() {
            m.insert(
                "subscriptionIdentifiers".into(),
                Value::from(p.subscription_identifiers.clone()),
            );
        }
        if !p.user_properties.is_empty() {
            let users: Map<String, Value> = p
                .user_properties
                .iter()
                .map(|(k, v)| (k.clone(), Value::from(v.clone())))
                .collect();
            m.insert("userProperties".into(), Value::Object(users));
        }
        m
    }

    /// The client, and the first poll of its event loop (which connects), the subscription
    /// queued.
    pub(super) async fn start(
        c: &MqttTriggerConfig,
        client_id: String,
        credentials: Option<(String, String)>,
        server: &str,
    ) -> Result<(Box<dyn MqttClient>, Polling), SourceError> {
        let mut options = MqttOptions::new(client_id, c.host.clone(), c.port);
        options
            .set_clean_start(false)
            .set_session_expiry_interval(Some(u32::MAX))
            .set_receive_maximum(Some(MAX_INFLIGHT))
            .set_manual_acks(true)
            .set_keep_alive(KEEP_ALIVE)
            .set_max_packet_size(Some(MAX_PACKET_SIZE as u32))
            .set_connection_timeout(c.connection_timeout.as_secs().max(1));
        if let Some((username, password)) = credentials {
            options.set_credentials(username, password);
        }
        let (client, eventloop) = AsyncClient::new(options, 64);
        let filters = c.topics.iter().map(|t| Filter::new(t.clone(), qos(c.qos)));
        client
            .subscribe_many(filters)
            .await
            .map_err(subscribe_error)?;
        Ok(started(client, eventloop, c, server))
    }

    #[async_trait]
    impl VersionLoop for EventLoop {
        async fn next_step(&mut self, server: &str, serde_type: SerdeType) -> Step {
            match self.poll().await {
                Ok(MqttEvent::Incoming(Packet::ConnAck(ack))) => Step::ConnAck {
                    session_present: ack.session_present,
                },
                Ok(MqttEvent::Incoming(Packet::SubAck(ack))) => Step::SubAck {
                    refused: (ack.return_codes.iter().enumerate())
                        .filter(|(_, code)| !matches!(code, SubscribeReasonCode::Success(_)))
                        .map(|(i, _)| i)
                        .collect(),
                },
                Ok(MqttEvent::Incoming(Packet::Publish(p))) => Step::Publish(Message::decoded(
                    String::from_utf8_lossy(&p.topic).into_owned(),
                    (qos_of_level(p.qos as u8), p.retain, p.pkid),
                    properties(p.properties.as_ref()),
                    &p.payload,
                    serde_type,
                )),
                Ok(MqttEvent::Incoming(Packet::Disconnect(d))) => {
                    Step::Failed(SourceError::Transient(format!(
                        "the MQTT broker {server} closed the connection: {:?}",
                        d.reason_code
                    )))
                }
                Ok(MqttEvent::Outgoing(Outgoing::Disconnect)) => Step::Disconnected,
                Ok(_) => Step::Other,
                Err(ConnectionError::ConnectionRefused(code)) => {
                    connection_error(server, Some(format!("{code:?}")), &"")
                }
                Err(e) => connection_error(server, None, &e),
            }
        }
    }

    #[async_trait]
    impl MqttClient for AsyncClient {
        async fn ack(&self, pkid: u16, q: Qos) -> bool {
            let mut p = Publish::new("", qos(q), Vec::new(), None);
            p.pkid = pkid;
            AsyncClient::ack(self, &p).await.is_ok()
        }

        async fn disconnect(&self) {
            let _ = AsyncClient::disconnect(self).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use swoop_core::realtime::Outcome;

    #[test]
    fn events_carry_kestras_variables() {
        let (settler, mut acks) = crate::realtime::settlements();
        let message = |topic: &str, qos, retain, pkid, payload: &[u8]| {
            Message::decoded(
                topic.into(),
                (qos, retain, pkid),
                Map::new(),
                payload,
                SerdeType::Json,
            )
        };
        let e = event(
            message("sensors/a", Qos::AtLeastOnce, true, 7, br#"{"n": 1}"#),
            &settler,
        );
        assert_eq!(
            Value::Object(e.variables.clone()),
            json!({"topic": "sensors/a", "payload": {"n": 1}, "qos": 1, "retain": true, "id": 7, "properties": {}})
        );
        assert_eq!(e.dedup_key, None);
        assert_eq!(e.partition.as_deref(), Some("sensors/a"));
        assert!(e.decode_error.is_none());
        e.ack.settle(Outcome::Created);
        assert_eq!(acks.try_recv(), Ok(Settled::Ack((7, Qos::AtLeastOnce))));

        // Released: no PUBACK (the acknowledging task ignores it).
        drop(event(
            message("t", Qos::ExactlyOnce, false, 8, b"1"),
            &settler,
        ));
        assert_eq!(acks.try_recv(), Ok(Settled::Nack((8, Qos::ExactlyOnce))));

        let e = event(
            message("t", Qos::AtMostOnce, false, 0, b"not json"),
            &settler,
        );
        assert_eq!(e.variables["payload"], json!("not json"));
        assert!(e.decode_error.is_some());
        e.ack.settle(Outcome::Created);
        assert!(acks.try_recv().is_err(), "QoS 0 needs no ack");
    }

    #[test]
    fn mqtt5_properties() {
        use rumqttc::v5::mqttbytes::v5::PublishProperties;
        let p = PublishProperties {
            content_type: Some("application/json".into()),
            user_properties: vec![("source".into(), "lab".into())],
            correlation_data: Some(vec![1u8, 2].into()),
            ..Default::default()
        };
        assert_eq!(
            Value::Object(v5::properties(Some(&p))),
            json!({"contentType": "application/json", "correlationData": "AQI=", "userProperties": {"source": "lab"}})
        );
        assert!(v5::properties(None).is_empty());
    }
}

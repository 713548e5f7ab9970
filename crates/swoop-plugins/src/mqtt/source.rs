//! The MQTT subscriber, as a [`RealtimeSource`].
//!
//! Each connection is a fresh rumqttc client (MQTT 3.1.1, or 5 with `mqttVersion: V5`) with
//! the trigger's stable client id, a persistent session (3.1.1: `clean_session: false`; 5:
//! `clean_start: false` and a session that never expires) and manual acknowledgements:
//!
//! - `connect` connects, subscribes and waits for the SUBACK, so once the trigger is RUNNING
//!   the broker keeps the session's messages even while swoop is down;
//! - a spawned task polls the event loop continuously (keep-alives, acks) and forwards every
//!   incoming PUBLISH, decoded, into a small bounded channel that [`MqttConnection::next`]
//!   reads;
//! - an event's ack sends the PUBACK (PUBREC for QoS 2) through another task, only once the
//!   runtime has stored its execution. Until then the broker counts the message as in flight
//!   (mosquitto's `max_inflight_messages`; MQTT 5's receive maximum, which swoop sets), which
//!   bounds what it sends: with the bounded channel, memory stays flat. A message never
//!   acknowledged (crash, lost connection) is redelivered by the broker when the same client
//!   id reconnects;
//! - any connection error ends the connection with [`SourceError::Transient`]; the runtime
//!   reconnects with backoff, and the new client resumes the same session.
//!
//! Events have no dedup key: MQTT packet ids are reused as soon as a message is acknowledged,
//! so they do not identify a message. A message whose execution was stored but whose PUBACK
//! was lost (a crash between the two) is delivered again and makes a second execution —
//! at-least-once, never lost.

use std::collections::VecDeque;
use std::time::Duration;

use async_trait::async_trait;
use rumqttc::{
    AsyncClient, ConnectionError, Event as MqttEvent, EventLoop, MqttOptions, Outgoing, Packet,
    Publish, QoS, SubscribeFilter, SubscribeReasonCode,
};
use serde_json::{Map, Value};
use swoop_core::realtime::{Ack, Event, RealtimeSource, SourceContext, SourceError};

use crate::realtime::PullConnection;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::config::{MqttTriggerConfig, MqttVersion, Qos, SerdeType};
use crate::props::UserPassword;

/// Incoming messages waiting for the runtime. Small: for QoS 1 and 2 the broker's in-flight
/// window (unacknowledged messages) is the real bound; when the channel is full (QoS 0, or a
/// broker with a larger window) reading pauses until the runtime takes an event.
pub const CHANNEL_CAPACITY: usize = 128;

/// rumqttc's outgoing in-flight limit (swoop only sends acks and subscriptions), and the
/// receive maximum announced to MQTT 5 brokers (unacknowledged messages they may send).
pub const MAX_INFLIGHT: u16 = 100;

/// The keep-alive interval sent to the broker.
pub const KEEP_ALIVE: Duration = Duration::from_secs(30);

/// The largest message accepted.
pub const MAX_PACKET_SIZE: usize = 64 * 1024 * 1024;

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

#[async_trait]
impl RealtimeSource for MqttSource {
    async fn run(&self, ctx: SourceContext) -> Result<(), SourceError> {
        crate::realtime::run_pull(self.connect(ctx.consumer_name()).await, ctx).await
    }
}

impl MqttSource {
    async fn connect(&self, consumer_name: &str) -> Result<Box<dyn PullConnection>, SourceError> {
        let client_id = self.config.client_id_for(consumer_name);
        let connection = match self.config.version {
            MqttVersion::V3 => v3::connect(&self.config, client_id).await?,
            MqttVersion::V5 => v5::connect(&self.config, client_id).await?,
        };
        Ok(Box::new(connection))
    }
}

/// What the ack task sends, in order.
enum Request {
    Ack { pkid: u16, qos: Qos },
    Disconnect,
}

fn qos_of_level(level: u8) -> Qos {
    Qos::from_level(level).unwrap_or(Qos::AtMostOnce)
}

/// An incoming message, less its payload, whatever the protocol version.
struct Message {
    topic: String,
    qos: Qos,
    retain: bool,
    pkid: u16,
    properties: Map<String, Value>,
}

/// An incoming message as the event the runtime sees.
fn event(
    message: Message,
    payload: &[u8],
    serde_type: SerdeType,
    ack_tx: &mpsc::UnboundedSender<Request>,
) -> Event {
    let Message {
        topic,
        qos,
        retain,
        pkid,
        properties,
    } = message;
    let (payload, decode_error) = match serde_type.decode(payload) {
        Ok(v) => (v, None),
        Err((raw, e)) => (raw, Some(e)),
    };
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
        let tx = ack_tx.clone();
        Ack::on_recorded(move || {
            let _ = tx.send(Request::Ack { pkid, qos });
        })
    };
    Event {
        variables,
        dedup_key: None,
        key: Some(topic.clone()),
        partition: Some(topic),
        decode_error,
        ack,
    }
}

fn timed_out(server: &str, timeout: Duration) -> SourceError {
    SourceError::Transient(format!(
        "MQTT broker {server}: no connection and subscription within {} s",
        timeout.as_secs()
    ))
}

fn refused_subscriptions(server: &str, topics: &[&String]) -> SourceError {
    SourceError::Transient(format!(
        "the MQTT broker {server} refused the subscription to `{}`",
        topics
            .iter()
            .map(|t| t.as_str())
            .collect::<Vec<_>>()
            .join("`, `")
    ))
}

/// MQTT 3.1.1.
mod v3 {
    use super::*;

    fn qos(q: Qos) -> QoS {
        match q {
            Qos::AtMostOnce => QoS::AtMostOnce,
            Qos::AtLeastOnce => QoS::AtLeastOnce,
            Qos::ExactlyOnce => QoS::ExactlyOnce,
        }
    }

    fn level(q: QoS) -> u8 {
        q as u8
    }

    fn connection_error(server: &str, e: &ConnectionError) -> SourceError {
        SourceError::Transient(match e {
            ConnectionError::ConnectionRefused(code) => {
                format!("the MQTT broker {server} refused the connection: {code:?}")
            }
            e => format!("MQTT broker {server}: {e}"),
        })
    }

    pub(super) async fn connect(
        c: &MqttTriggerConfig,
        client_id: String,
    ) -> Result<MqttConnection, SourceError> {
        let server = format!("{}:{}", c.host, c.port);
        let mut options = MqttOptions::new(client_id.clone(), c.host.clone(), c.port);
        options
            .set_clean_session(false)
            .set_manual_acks(true)
            .set_keep_alive(KEEP_ALIVE)
            .set_inflight(MAX_INFLIGHT)
            .set_max_packet_size(MAX_PACKET_SIZE, MAX_PACKET_SIZE);
        if let Some((username, password)) = credentials(c)? {
            options.set_credentials(username, password);
        }
        let (client, mut eventloop) = AsyncClient::new(options, 64);
        let mut network = eventloop.network_options();
        network.set_connection_timeout(c.connection_timeout.as_secs().max(1));
        eventloop.set_network_options(network);

        let filters: Vec<SubscribeFilter> = c
            .topics
            .iter()
            .map(|t| SubscribeFilter::new(t.clone(), qos(c.qos)))
            .collect();
        client
            .subscribe_many(filters)
            .await
            .map_err(|e| SourceError::Transient(format!("MQTT subscribe: {e}")))?;

        // Connect and wait for the SUBACK; a resumed session may deliver messages first.
        let mut early = VecDeque::new();
        let mut session_present = false;
        let subscribed = tokio::time::timeout(c.connection_timeout, async {
            loop {
                match eventloop.poll().await {
                    Ok(MqttEvent::Incoming(Packet::ConnAck(ack))) => {
                        session_present = ack.session_present;
                    }
                    Ok(MqttEvent::Incoming(Packet::SubAck(ack))) => {
                        let refused: Vec<&String> = ack
                            .return_codes
                            .iter()
                            .zip(&c.topics)
                            .filter(|(code, _)| matches!(code, SubscribeReasonCode::Failure))
                            .map(|(_, topic)| topic)
                            .collect();
                        if !refused.is_empty() {
                            return Err(refused_subscriptions(&server, &refused));
                        }
                        return Ok(());
                    }
                    Ok(MqttEvent::Incoming(Packet::Publish(p))) => early.push_back(p),
                    Ok(_) => {}
                    Err(e) => return Err(connection_error(&server, &e)),
                }
            }
        })
        .await
        .unwrap_or_else(|_| Err(timed_out(&server, c.connection_timeout)));
        subscribed?;
        tracing::info!(
            server = %server,
            client_id = %client_id,
            session_present,
            topics = ?c.topics,
            "MQTT trigger subscribed"
        );

        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        let (ack_tx, ack_rx) = mpsc::unbounded_channel();
        let poller = tokio::spawn(poll(
            eventloop,
            early,
            tx,
            ack_tx.clone(),
            c.serde_type,
            server,
        ));
        tokio::spawn(acknowledge(client, ack_rx));
        Ok(MqttConnection { rx, ack_tx, poller })
    }

    fn to_event(
        p: Publish,
        serde_type: SerdeType,
        ack_tx: &mpsc::UnboundedSender<Request>,
    ) -> Event {
        let message = Message {
            topic: p.topic,
            qos: qos_of_level(level(p.qos)),
            retain: p.retain,
            pkid: p.pkid,
            properties: Map::new(),
        };
        event(message, &p.payload, serde_type, ack_tx)
    }

    /// Polls the event loop until it fails, forwarding incoming messages (`early` first).
    async fn poll(
        mut eventloop: EventLoop,
        mut early: VecDeque<Publish>,
        tx: mpsc::Sender<Result<Event, SourceError>>,
        ack_tx: mpsc::UnboundedSender<Request>,
        serde_type: SerdeType,
        server: String,
    ) {
        while let Some(p) = early.pop_front() {
            if tx.send(Ok(to_event(p, serde_type, &ack_tx))).await.is_err() {
                return;
            }
        }
        loop {
            match eventloop.poll().await {
                Ok(MqttEvent::Incoming(Packet::Publish(p))) => {
                    if tx.send(Ok(to_event(p, serde_type, &ack_tx))).await.is_err() {
                        return;
                    }
                }
                Ok(MqttEvent::Incoming(Packet::Disconnect)) => {
                    let _ = tx
                        .send(Err(SourceError::Transient(format!(
                            "the MQTT broker {server} closed the connection"
                        ))))
                        .await;
                    return;
                }
                Ok(MqttEvent::Outgoing(Outgoing::Disconnect)) => return,
                Ok(_) => {}
                Err(e) => {
                    let _ = tx.send(Err(connection_error(&server, &e))).await;
                    return;
                }
            }
        }
    }

    /// Sends the acknowledgements (and the final DISCONNECT) through the client, in order.
    async fn acknowledge(client: AsyncClient, mut rx: mpsc::UnboundedReceiver<Request>) {
        while let Some(request) = rx.recv().await {
            let sent = match request {
                Request::Ack { pkid, qos: q } => {
                    // Only the packet id and QoS matter to an ack.
                    let mut p = Publish::new("", qos(q), Vec::new());
                    p.pkid = pkid;
                    client.ack(&p).await
                }
                Request::Disconnect => {
                    let _ = client.disconnect().await;
                    return;
                }
            };
            if sent.is_err() {
                // The event loop is gone: the broker redelivers what was not acknowledged.
                return;
            }
        }
    }
}

/// MQTT 5.
mod v5 {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD as BASE64;
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

    fn level(q: QoS) -> u8 {
        q as u8
    }

    fn connection_error(server: &str, e: &ConnectionError) -> SourceError {
        SourceError::Transient(match e {
            ConnectionError::ConnectionRefused(code) => {
                format!("the MQTT broker {server} refused the connection: {code:?}")
            }
            e => format!("MQTT broker {server}: {e}"),
        })
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

    pub(super) async fn connect(
        c: &MqttTriggerConfig,
        client_id: String,
    ) -> Result<MqttConnection, SourceError> {
        let server = format!("{}:{}", c.host, c.port);
        let mut options = MqttOptions::new(client_id.clone(), c.host.clone(), c.port);
        options
            .set_clean_start(false)
            .set_session_expiry_interval(Some(u32::MAX))
            .set_receive_maximum(Some(MAX_INFLIGHT))
            .set_manual_acks(true)
            .set_keep_alive(KEEP_ALIVE)
            .set_max_packet_size(Some(MAX_PACKET_SIZE as u32))
            .set_connection_timeout(c.connection_timeout.as_secs().max(1));
        if let Some((username, password)) = credentials(c)? {
            options.set_credentials(username, password);
        }
        let (client, mut eventloop) = AsyncClient::new(options, 64);

        let filters: Vec<Filter> = c
            .topics
            .iter()
            .map(|t| Filter::new(t.clone(), qos(c.qos)))
            .collect();
        client
            .subscribe_many(filters)
            .await
            .map_err(|e| SourceError::Transient(format!("MQTT subscribe: {e}")))?;

        let mut early = VecDeque::new();
        let mut session_present = false;
        let subscribed = tokio::time::timeout(c.connection_timeout, async {
            loop {
                match eventloop.poll().await {
                    Ok(MqttEvent::Incoming(Packet::ConnAck(ack))) => {
                        session_present = ack.session_present;
                    }
                    Ok(MqttEvent::Incoming(Packet::SubAck(ack))) => {
                        let refused: Vec<&String> = ack
                            .return_codes
                            .iter()
                            .zip(&c.topics)
                            .filter(|(code, _)| !matches!(code, SubscribeReasonCode::Success(_)))
                            .map(|(_, topic)| topic)
                            .collect();
                        if !refused.is_empty() {
                            return Err(refused_subscriptions(&server, &refused));
                        }
                        return Ok(());
                    }
                    Ok(MqttEvent::Incoming(Packet::Publish(p))) => early.push_back(p),
                    Ok(_) => {}
                    Err(e) => return Err(connection_error(&server, &e)),
                }
            }
        })
        .await
        .unwrap_or_else(|_| Err(timed_out(&server, c.connection_timeout)));
        subscribed?;
        tracing::info!(
            server = %server,
            client_id = %client_id,
            session_present,
            topics = ?c.topics,
            "MQTT 5 trigger subscribed"
        );

        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        let (ack_tx, ack_rx) = mpsc::unbounded_channel();
        let poller = tokio::spawn(poll(
            eventloop,
            early,
            tx,
            ack_tx.clone(),
            c.serde_type,
            server,
        ));
        tokio::spawn(acknowledge(client, ack_rx));
        Ok(MqttConnection { rx, ack_tx, poller })
    }

    fn to_event(
        p: Publish,
        serde_type: SerdeType,
        ack_tx: &mpsc::UnboundedSender<Request>,
    ) -> Event {
        let message = Message {
            topic: String::from_utf8_lossy(&p.topic).into_owned(),
            qos: qos_of_level(level(p.qos)),
            retain: p.retain,
            pkid: p.pkid,
            properties: properties(p.properties.as_ref()),
        };
        event(message, &p.payload, serde_type, ack_tx)
    }

    async fn poll(
        mut eventloop: EventLoop,
        mut early: VecDeque<Publish>,
        tx: mpsc::Sender<Result<Event, SourceError>>,
        ack_tx: mpsc::UnboundedSender<Request>,
        serde_type: SerdeType,
        server: String,
    ) {
        while let Some(p) = early.pop_front() {
            if tx.send(Ok(to_event(p, serde_type, &ack_tx))).await.is_err() {
                return;
            }
        }
        loop {
            match eventloop.poll().await {
                Ok(MqttEvent::Incoming(Packet::Publish(p))) => {
                    if tx.send(Ok(to_event(p, serde_type, &ack_tx))).await.is_err() {
                        return;
                    }
                }
                Ok(MqttEvent::Incoming(Packet::Disconnect(d))) => {
                    let _ = tx
                        .send(Err(SourceError::Transient(format!(
                            "the MQTT broker {server} closed the connection: {:?}",
                            d.reason_code
                        ))))
                        .await;
                    return;
                }
                Ok(MqttEvent::Outgoing(Outgoing::Disconnect)) => return,
                Ok(_) => {}
                Err(e) => {
                    let _ = tx.send(Err(connection_error(&server, &e))).await;
                    return;
                }
            }
        }
    }

    async fn acknowledge(client: AsyncClient, mut rx: mpsc::UnboundedReceiver<Request>) {
        while let Some(request) = rx.recv().await {
            let sent = match request {
                Request::Ack { pkid, qos: q } => {
                    let mut p = Publish::new("", qos(q), Vec::new(), None);
                    p.pkid = pkid;
                    client.ack(&p).await
                }
                Request::Disconnect => {
                    let _ = client.disconnect().await;
                    return;
                }
            };
            if sent.is_err() {
                return;
            }
        }
    }
}

/// A live MQTT subscription.
pub struct MqttConnection {
    rx: mpsc::Receiver<Result<Event, SourceError>>,
    ack_tx: mpsc::UnboundedSender<Request>,
    poller: JoinHandle<()>,
}

#[async_trait]
impl PullConnection for MqttConnection {
    async fn next(&mut self) -> Result<Event, SourceError> {
        match self.rx.recv().await {
            Some(result) => result,
            None => Err(SourceError::Transient(
                "the MQTT connection ended".to_string(),
            )),
        }
    }

    async fn close(&mut self) {
        // After the acknowledgements already given; the session stays on the broker.
        // Messages still queued here are dropped unacknowledged (the broker redelivers them),
        // which also lets the event loop run until the DISCONNECT is sent.
        let _ = self.ack_tx.send(Request::Disconnect);
        let deadline = tokio::time::sleep(Duration::from_secs(2));
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                biased;
                _ = &mut self.poller => break,
                _ = &mut deadline => break,
                _ = self.rx.recv() => {}
            }
        }
        self.poller.abort();
    }
}

impl Drop for MqttConnection {
    fn drop(&mut self) {
        self.poller.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_carry_kestras_variables() {
        let (ack_tx, mut ack_rx) = mpsc::unbounded_channel();
        let message = |topic: &str, qos, retain, pkid| Message {
            topic: topic.into(),
            qos,
            retain,
            pkid,
            properties: Map::new(),
        };
        let e = event(
            message("sensors/a", Qos::AtLeastOnce, true, 7),
            br#"{"n": 1}"#,
            SerdeType::Json,
            &ack_tx,
        );
        assert_eq!(
            Value::Object(e.variables.clone()),
            json!({"topic": "sensors/a", "payload": {"n": 1}, "qos": 1, "retain": true, "id": 7, "properties": {}})
        );
        assert_eq!(e.dedup_key, None);
        assert_eq!(e.partition.as_deref(), Some("sensors/a"));
        assert!(e.decode_error.is_none());
        e.ack.settle(swoop_core::realtime::Outcome::Created);
        assert!(matches!(
            ack_rx.try_recv(),
            Ok(Request::Ack {
                pkid: 7,
                qos: Qos::AtLeastOnce
            })
        ));

        let e = event(
            message("t", Qos::AtMostOnce, false, 0),
            b"not json",
            SerdeType::Json,
            &ack_tx,
        );
        assert_eq!(e.variables["payload"], json!("not json"));
        assert!(e.decode_error.is_some());
        e.ack.settle(swoop_core::realtime::Outcome::Created);
        assert!(ack_rx.try_recv().is_err(), "QoS 0 needs no ack");
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

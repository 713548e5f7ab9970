//! The trigger's properties through the flow parser, and the source against a real broker
//! (pulsar-lite, started by each test): trigger variables, acks that hold across a
//! reconnect, a released message redelivered at once, and the subscription types.

use std::time::Duration;

use serde_json::{Value, json};
use swoop_core::realtime::{Event, Outcome, RealtimeSource, SourceContext, SourceError};
use swoop_testkit::pulsar::PulsarLite;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::PulsarSource;
use super::config::{Deserializer, InitialPosition, PulsarTriggerConfig, SubscriptionType, Topics};
use super::producer::Producer;

fn errors(trigger: &str) -> Vec<String> {
    crate::realtime::test_flows::errors(super::REALTIME_TRIGGER, trigger)
}

#[test]
fn kestras_example_parses() {
    let (type_name, settings) = crate::realtime::test_flows::parse(
        super::REALTIME_TRIGGER,
        "    uri: pulsar://localhost:26650\n    topic: tenant/namespace/topic\n    subscriptionName: kestra_trigger_sub\n    maxInFlight: 8\n",
    );
    assert_eq!(type_name, super::REALTIME_TRIGGER);
    assert_eq!(settings.max_in_flight, 8);
}

fn config(patch: Value) -> Result<PulsarTriggerConfig, String> {
    let base = json!({
        "id": "t",
        "type": super::REALTIME_TRIGGER,
        "uri": "pulsar://localhost:6650",
        "topic": "orders",
        "subscriptionName": "sub",
    });
    PulsarTriggerConfig::from_json(&crate::props::patched(base, patch))
}

#[test]
fn defaults_and_choices() {
    let c = config(json!({})).unwrap();
    assert_eq!(c.hosts, ["localhost:6650"]);
    let Topics::Names(names) = &c.topics else {
        panic!("names")
    };
    assert_eq!(names, &["persistent://public/default/orders"]);
    assert_eq!(c.subscription_type, SubscriptionType::Exclusive);
    assert_eq!(c.initial_position, InitialPosition::Earliest);
    assert_eq!(c.deserializer, Deserializer::String);

    let c = config(json!({
        "uri": "pulsar://a:1,b",
        "topic": ["t/n/x", "persistent://t/n/y", "t/n/x"],
        "subscriptionType": "key_shared",
        "initialPosition": "Latest",
        "deserializer": "BYTES",
        "consumerName": "me",
        "consumerProperties": {"team": "ops", "n": 1},
        "schemaType": "NONE",
        "authenticationToken": "{{ secret('PULSAR_TOKEN') }}",
    }))
    .unwrap();
    assert_eq!(c.hosts, ["a:1", "b:6650"]);
    let Topics::Names(names) = &c.topics else {
        panic!("names")
    };
    assert_eq!(names, &["persistent://t/n/x", "persistent://t/n/y"]);
    assert_eq!(c.subscription_type, SubscriptionType::KeyShared);
    assert_eq!(c.initial_position, InitialPosition::Latest);
    assert_eq!(c.deserializer, Deserializer::Bytes);
    assert_eq!(c.consumer_name.as_deref(), Some("me"));
    assert_eq!(
        c.consumer_properties,
        [("team".into(), "ops".into()), ("n".into(), "1".into())]
    );
    assert!(c.authentication_token.is_some());

    let c = config(json!({"topic": null, "topicPattern": "orders-.*"})).unwrap();
    let Topics::Pattern {
        namespace, pattern, ..
    } = &c.topics
    else {
        panic!("a pattern")
    };
    assert_eq!(namespace, "public/default");
    assert!(pattern.is_match("persistent://public/default/orders-eu"));
    assert!(!pattern.is_match("persistent://public/default/refunds"));
}

#[test]
fn every_problem_is_reported_at_once() {
    let e = config(json!({
        "uri": "http://localhost",
        "topic": null,
        "subscriptionName": null,
        "deserializer": "AVRO",
        "encryptionKey": "k",
        "schemaType": "AVRO",
    }))
    .unwrap_err();
    for part in [
        "`encryptionKey` is not supported",
        "`schemaType: AVRO` is not supported",
        "not a Pulsar service URL",
        "`topic` (a topic or a list of topics) or `topicPattern`",
        "`subscriptionName` is required",
        "`deserializer` must be STRING, JSON, BYTES",
    ] {
        assert!(e.contains(part), "{part} in {e}");
    }
    let e = config(json!({"uri": "pulsar+ssl://h:6651", "tlsOptions": {"ca": "x"}})).unwrap_err();
    assert!(e.contains("TLS (`pulsar+ssl://`) is not supported"), "{e}");
    assert!(e.contains("`tlsOptions` is not supported"), "{e}");
    assert!(
        config(json!({"topicPattern": "x"}))
            .unwrap_err()
            .contains("not both")
    );
    assert!(
        config(json!({"topic": "a/b"}))
            .unwrap_err()
            .contains("tenant/namespace/topic")
    );
    assert!(
        config(json!({"topic": "{{ x }}"}))
            .unwrap_err()
            .contains("template")
    );
    assert!(
        config(json!({"topic": null, "topicPattern": "pub.*/default/x"}))
            .unwrap_err()
            .contains("only the topic part")
    );
    assert!(
        config(json!({"uri": "pulsar://h:port"}))
            .unwrap_err()
            .contains("not a port")
    );
    assert!(
        config(json!({"schemaString": "{}"}))
            .unwrap_err()
            .contains("`schemaString`")
    );

    let e = errors(
        "    uri: pulsar://h\n    topic: t\n    subscriptionName: s\n    subscriptionType: Shared_Key\n",
    );
    assert!(e[0].contains("subscriptionType"), "{e:?}");
    let e = errors("    uri: pulsar://h\n    topic: t\n");
    assert!(e[0].contains("subscriptionName"), "{e:?}");
}

/// A source of `broker` on `topic` with the subscription and extra properties.
fn source(broker: &PulsarLite, topic: &str, subscription: &str, extra: Value) -> PulsarSource {
    let base = json!({
        "id": "t",
        "type": super::REALTIME_TRIGGER,
        "uri": broker.uri(),
        "topic": topic,
        "subscriptionName": subscription,
        "deserializer": "JSON",
    });
    PulsarSource::new(
        PulsarTriggerConfig::from_json(&crate::props::patched(base, extra))
            .expect("the config is valid"),
    )
}

struct Running {
    events: mpsc::Receiver<Event>,
    stop: CancellationToken,
    task: JoinHandle<Result<(), SourceError>>,
}

fn run(source: PulsarSource) -> Running {
    let (ctx, events, stop) = SourceContext::channel("test/flow/pulsar", 16);
    let task = tokio::spawn(async move { source.run(ctx).await });
    Running { events, stop, task }
}

impl Running {
    async fn next(&mut self) -> Event {
        match tokio::time::timeout(Duration::from_secs(20), self.events.recv()).await {
            Ok(Some(event)) => event,
            Ok(None) => panic!("the source ended: {:?}", (&mut self.task).await),
            Err(_) if self.task.is_finished() => {
                panic!("the source ended: {:?}", (&mut self.task).await)
            }
            Err(_) => panic!("no event within 20 s"),
        }
    }

    async fn stop(self) -> Result<(), SourceError> {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(20), self.task)
            .await
            .expect("the source stops within 20 s")
            .expect("the source task")
    }
}

async fn publish(broker: &PulsarLite, topic: &str, messages: &[(Option<&str>, Value)]) {
    let mut producer = Producer::connect(&format!("127.0.0.1:{}", broker.port()), topic)
        .await
        .expect("a producer");
    let bodies: Vec<Vec<u8>> = messages
        .iter()
        .map(|(_, v)| v.to_string().into_bytes())
        .collect();
    let messages: Vec<(Option<&str>, &[u8])> = messages
        .iter()
        .zip(&bodies)
        .map(|((k, _), b)| (*k, b.as_slice()))
        .collect();
    producer.send(&messages).await.expect("published");
}

fn n(event: &Event) -> i64 {
    event.variables["value"]["n"]
        .as_i64()
        .expect("a payload with n")
}

#[tokio::test]
async fn messages_become_events_and_acks_hold_across_a_reconnect() {
    let broker = PulsarLite::start();
    publish(
        &broker,
        "orders",
        &[(Some("k0"), json!({"n": 0})), (None, json!({"n": 1}))],
    )
    .await;
    let mut running = run(source(&broker, "orders", "s", json!({})));
    let first = running.next().await;
    assert_eq!(first.variables["value"], json!({"n": 0}));
    assert_eq!(first.variables["key"], json!("k0"));
    assert_eq!(
        first.variables["topic"],
        json!("persistent://public/default/orders")
    );
    assert_eq!(first.variables["properties"], json!({}));
    let id = first.variables["messageId"].as_str().unwrap().to_string();
    assert_eq!(id.split(':').count(), 3, "ledger:entry:partition, got {id}");
    assert_eq!(
        first.dedup_key.as_deref(),
        Some(format!("{id}:-1").as_str())
    );
    assert_eq!(first.key.as_deref(), Some("k0"));
    assert_eq!(
        first.partition.as_deref(),
        Some("persistent://public/default/orders")
    );
    let second = running.next().await;
    assert_eq!(n(&second), 1);
    assert_eq!(second.variables["key"], Value::Null);
    first.ack.settle(Outcome::Created);
    second.ack.settle(Outcome::Duplicate);
    running.stop().await.expect("a clean stop");

    // Both were acknowledged: a new connection gets only what comes next.
    publish(&broker, "orders", &[(None, json!({"n": 2}))]).await;
    let mut running = run(source(&broker, "orders", "s", json!({})));
    let next = running.next().await;
    assert_eq!(n(&next), 2, "acknowledged messages are not redelivered");
    next.ack.settle(Outcome::Created);
    running.stop().await.expect("a clean stop");
}

#[tokio::test]
async fn a_released_message_is_redelivered_at_once() {
    // Without the nack, an unacknowledged message would come again only after a reconnect.
    // Shared and Key_Shared only: pulsar-lite ignores REDELIVER_UNACKNOWLEDGED_MESSAGES on
    // Exclusive and Failover subscriptions ("Ignoring redelivery command for non-shared
    // subscription"), where a real broker rewinds the consumer.
    let broker = PulsarLite::start();
    for (topic, kind) in [("nack-shared", "Shared"), ("nack-key-shared", "Key_Shared")] {
        publish(
            &broker,
            topic,
            &[(None, json!({"n": 0})), (None, json!({"n": 1}))],
        )
        .await;
        let mut running = run(source(
            &broker,
            topic,
            "s",
            json!({"subscriptionType": kind}),
        ));
        let first = running.next().await;
        let id = first.variables["messageId"].clone();
        assert_eq!(n(&first), 0);
        let released = std::time::Instant::now();
        drop(first.ack); // unsettled: released, the source nacks
        let mut seen = Vec::new();
        let again = loop {
            let e = running.next().await;
            if e.variables["messageId"] == id {
                break e;
            }
            seen.push(n(&e));
            e.ack.settle(Outcome::Created);
        };
        assert!(
            released.elapsed() < Duration::from_secs(5),
            "{kind}: redelivered after {:?}",
            released.elapsed()
        );
        assert_eq!(n(&again), 0, "{kind}: the released message comes again");
        assert!(seen.iter().all(|n| *n == 1), "{kind}: {seen:?}");
        again.ack.settle(Outcome::Created);
        running.stop().await.expect("a clean stop");
    }
}

#[tokio::test]
async fn a_decode_error_is_an_event_with_the_raw_payload() {
    let broker = PulsarLite::start();
    let mut producer = Producer::connect(&format!("127.0.0.1:{}", broker.port()), "bad")
        .await
        .expect("a producer");
    producer
        .send(&[(None, b"not json")])
        .await
        .expect("published");
    let mut running = run(source(&broker, "bad", "s", json!({})));
    let e = running.next().await;
    assert!(
        e.decode_error
            .as_deref()
            .unwrap()
            .contains("not valid JSON")
    );
    assert_eq!(e.variables["value"], json!("not json"));
    e.ack.settle(Outcome::Created);
    running.stop().await.expect("a clean stop");
}

#[tokio::test]
async fn shared_subscriptions_share_the_messages_between_consumers() {
    // Both consume at once; what one leaves unacknowledged when it stops goes to the other.
    // (How the broker splits the messages between them is its choice: not checked.)
    let broker = PulsarLite::start();
    let shared = || {
        source(
            &broker,
            "shared",
            "s",
            json!({"subscriptionType": "Shared"}),
        )
    };
    let mut a = run(shared());
    let mut b = run(shared());
    let messages: Vec<(Option<&str>, Value)> = (0..40).map(|i| (None, json!({"n": i}))).collect();
    publish(&broker, "shared", &messages).await;
    let mut acked = Vec::new();
    let mut held = Vec::new();
    while acked.len() + held.len() < 40 {
        tokio::select! {
            e = a.next() => held.push(e),
            e = b.next() => {
                acked.push(n(&e));
                e.ack.settle(Outcome::Created);
            }
        }
    }
    assert!(
        !b.task.is_finished(),
        "the second Shared consumer runs alongside the first"
    );
    let mut left: Vec<i64> = held.iter().map(n).collect();
    a.stop().await.expect("a clean stop");
    drop(held); // their nacks go to a closed connection: the broker redelivers on its own
    let mut redelivered = Vec::new();
    while redelivered.len() < left.len() {
        let e = b.next().await;
        redelivered.push(n(&e));
        e.ack.settle(Outcome::Created);
    }
    redelivered.sort();
    left.sort();
    assert_eq!(
        redelivered, left,
        "the other consumer gets what the first left"
    );
    let mut all: Vec<i64> = acked.into_iter().chain(redelivered).collect();
    all.sort();
    assert_eq!(all, (0..40).collect::<Vec<_>>(), "every message once");
    b.stop().await.expect("a clean stop");
}

#[tokio::test]
async fn an_exclusive_subscription_refuses_a_second_consumer() {
    let broker = PulsarLite::start();
    let exclusive = || {
        source(
            &broker,
            "excl",
            "s",
            json!({"subscriptionType": "Exclusive"}),
        )
    };
    publish(&broker, "excl", &[(None, json!({"n": 0}))]).await;
    let mut first = run(exclusive());
    let e = first.next().await;
    let second = run(exclusive());
    let refused = tokio::time::timeout(Duration::from_secs(20), second.task)
        .await
        .expect("the second consumer is refused within 20 s")
        .expect("the source task");
    let Err(SourceError::Transient(why)) = refused else {
        panic!("a transient error, got {refused:?}");
    };
    assert!(why.contains("pulsar"), "{why}");
    e.ack.settle(Outcome::Created);
    first
        .stop()
        .await
        .expect("the first consumer still runs and stops cleanly");
}

#[tokio::test]
async fn failover_and_key_shared_subscriptions_consume() {
    let broker = PulsarLite::start();
    for (topic, kind) in [("failover", "Failover"), ("keyshared", "Key_Shared")] {
        publish(
            &broker,
            topic,
            &[(Some("a"), json!({"n": 0})), (Some("b"), json!({"n": 1}))],
        )
        .await;
        let mut running = run(source(
            &broker,
            topic,
            "s",
            json!({"subscriptionType": kind}),
        ));
        let mut got = Vec::new();
        for _ in 0..2 {
            let e = running.next().await;
            got.push((n(&e), e.key.clone()));
            e.ack.settle(Outcome::Created);
        }
        got.sort();
        assert_eq!(
            got,
            [(0, Some("a".into())), (1, Some("b".into()))],
            "{kind}"
        );
        running.stop().await.expect("a clean stop");
    }
}

#[tokio::test]
async fn a_broker_restart_ends_the_run_with_a_transient_error() {
    let mut broker = PulsarLite::start();
    publish(&broker, "restart", &[(None, json!({"n": 0}))]).await;
    let mut running = run(source(&broker, "restart", "s", json!({})));
    let e = running.next().await;
    e.ack.settle(Outcome::Created);
    broker.restart();
    let result = tokio::time::timeout(Duration::from_secs(20), running.task)
        .await
        .expect("the run ends within 20 s")
        .expect("the source task");
    assert!(
        matches!(result, Err(SourceError::Transient(_))),
        "{result:?}"
    );
}

//! The Event Hubs source end to end against librdkafka's in-process mock cluster, standing in
//! for a namespace's Kafka endpoint (through `kafkaProperties`): events come out in Kestra's
//! Event Hubs shape, and what is acknowledged is committed as the consumer group's offsets —
//! the checkpoints.

use std::time::Duration;

use rdkafka::mocking::MockCluster;
use serde_json::json;
use swoop_core::realtime::{Outcome, RealtimeSource, SourceContext};

use super::{EventHubsSource, EventHubsTriggerConfig};
use crate::kafka::mock_tests::{committed, produce, rec};

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_come_out_in_event_hubs_shape_and_acks_are_checkpoints() {
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster.create_topic("orders", 1, 1).expect("topic");
    let bootstrap = cluster.bootstrap_servers();
    let headers = [("source", "web")];
    produce(
        &bootstrap,
        "orders",
        &[
            rec(0, "c1", r#"{"n": 0}"#, &headers),
            rec(0, "c2", "not json", &headers),
        ],
    )
    .await;

    let config = EventHubsTriggerConfig::from_json(&json!({
        "eventHubName": "orders",
        "namespace": "test-ns",
        "bodyDeserializer": "JSON",
        "checkpointStoreProperties": {"containerName": "unused"},
        "kafkaProperties": {"bootstrap.servers": bootstrap, "security.protocol": "plaintext"},
    }))
    .expect("valid trigger");
    let source = EventHubsSource::new(config);
    let (ctx, mut rx, stop) = SourceContext::channel("ns/flow/t", 1);
    let task = tokio::spawn(async move { source.run(ctx).await });

    let first = tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("in time")
        .expect("an event");
    let v = &first.variables;
    assert_eq!(v["body"], json!({"n": 0}));
    assert_eq!(v["partitionKey"], json!("c1"));
    assert_eq!(v["properties"], json!({"source": "web"}));
    assert_eq!(v["offset"], json!(0));
    assert_eq!(v["sequenceNumber"], json!(0));
    assert_eq!(v["partitionId"], json!("0"));
    assert!(v["enqueuedTimestamp"].is_i64(), "epoch ms: {v:?}");
    assert!(
        !v.contains_key("topic") && !v.contains_key("value"),
        "{v:?}"
    );
    assert_eq!(first.dedup_key.as_deref(), Some("orders/0/0"));
    assert_eq!(first.decode_error, None);
    first.ack.settle(Outcome::Created);

    let poison = tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("in time")
        .expect("an event");
    assert_eq!(poison.variables["body"], json!("not json"));
    assert_eq!(poison.variables["rawBodyBase64"], json!("bm90IGpzb24="));
    assert!(
        poison
            .decode_error
            .as_deref()
            .is_some_and(|e| e.contains("not valid JSON"))
    );
    poison.ack.settle(Outcome::Created);

    stop.cancel();
    tokio::time::timeout(WAIT, task)
        .await
        .expect("stops in time")
        .expect("no panic")
        .expect("a clean stop");
    // Both acknowledged: the group's committed offset (Event Hubs' checkpoint) is past them.
    assert_eq!(
        committed(&bootstrap, "$Default", "orders", 1),
        vec![Some(2)]
    );
}

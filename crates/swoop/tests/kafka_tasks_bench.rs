//! Benchmarks of the Kafka tasks and the batch trigger, each against a bare rdkafka client in
//! the same run (run by hand, prints figures; see BENCHMARKS.md):
//!
//! `cargo test --release -p swoop --test kafka_tasks_bench -- --ignored --nocapture`
//!
//! - `Produce` records/s from an ION file, not transactional, on the test broker (tansu),
//!   against a bare `FutureProducer`;
//! - `Produce` records/s transactional and not on librdkafka's mock cluster (tansu has no
//!   EndTxn), against bare producers doing the same;
//! - the batch `Trigger`: records/s read into an ION file on the local disk, against a bare
//!   consumer reading the same records.

#![cfg(feature = "kafka")]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::kafka::Broker;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use serde_json::json;
use swoop_core::ion::IonWriter;
use swoop_core::realtime::{Outcome, RealtimeSource, SourceContext, TriggerFiles};
use swoop_core::storage::{InternalStorage, StoragePath};
use swoop_core::testing::{TestRunContext, build_task};
use swoop_plugins::kafka::trigger::KafkaBatchTrigger;

const N: usize = 100_000;

fn value(i: usize) -> String {
    format!(
        r#"{{"order_id":{i},"customer":"Kelly Olsen","product_id":{},"total":166.89}}"#,
        i % 50
    )
}

/// Sends N records with a window of pending deliveries, in a transaction when asked.
async fn bare_produce(bootstrap: &str, topic: &str, transactional: bool) -> f64 {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "5");
    if transactional {
        config.set(
            "transactional.id",
            format!("bare-{}", swoop_core::model::new_id()),
        );
    }
    let producer: FutureProducer = config.create().expect("producer");
    if transactional {
        producer
            .init_transactions(Duration::from_secs(30))
            .expect("init");
        producer.begin_transaction().expect("begin");
    }
    let started = Instant::now();
    let mut pending: FuturesUnordered<rdkafka::producer::DeliveryFuture> = FuturesUnordered::new();
    for i in 0..N {
        while pending.len() >= 10_000 {
            pending
                .next()
                .await
                .expect("pending")
                .expect("sent")
                .expect("delivered");
        }
        let v = value(i);
        let key = format!("k{i}");
        let record = FutureRecord::to(topic).key(&key).payload(&v);
        pending.push(
            producer
                .send_result(record)
                .map_err(|(e, _)| e)
                .expect("queued"),
        );
    }
    while let Some(d) = pending.next().await {
        d.expect("sent").expect("delivered");
    }
    if transactional {
        producer
            .commit_transaction(Duration::from_secs(30))
            .expect("commit");
    }
    N as f64 / started.elapsed().as_secs_f64()
}

/// Runs the Produce task over an ION file of N rows; records/s.
async fn task_produce(bootstrap: &str, topic: &str, transactional: bool) -> f64 {
    let ctx = TestRunContext::new(json!({}));
    let path = StoragePath::parse("kestra:///test/flow/executions/exec1/rows.ion").unwrap();
    let file = ctx.storage.files.storage.create(&path).await.expect("file");
    let mut rows = IonWriter::new(file);
    for i in 0..N {
        rows.write_row(&json!({"key": format!("k{i}"), "value": value(i)}))
            .await
            .expect("row");
    }
    rows.finish().await.expect("stored");
    let task = build_task(
        &swoop_plugins::registry(),
        "io.kestra.plugin.kafka.Produce",
        json!({"topic": topic, "transactional": transactional,
               "properties": {"bootstrap.servers": bootstrap},
               "from": path.uri()}),
    )
    .expect("task");
    let started = Instant::now();
    let out = task.run(&ctx).await.expect("produced");
    assert_eq!(out["messagesCount"], json!(N));
    N as f64 / started.elapsed().as_secs_f64()
}

/// A bare consumer reading N records of `topic` from the start; records/s.
async fn bare_consume(bootstrap: &str, topic: &str) -> f64 {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("bare-{}", swoop_core::model::new_id()))
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "10")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let started = Instant::now();
    for _ in 0..N {
        consumer.recv().await.expect("a record");
    }
    N as f64 / started.elapsed().as_secs_f64()
}

/// The batch trigger reading N records into a file on the local disk; records/s, from its
/// start to the batch's event.
async fn trigger_batch(bootstrap: &str, topic: &str) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let storage: Arc<dyn InternalStorage> =
        Arc::new(swoop_store::LocalStorage::open(dir.path()).expect("storage"));
    let trigger = KafkaBatchTrigger::from_json(&json!({
        "topic": topic, "groupId": format!("batch-{}", swoop_core::model::new_id()),
        "valueDeserializer": "JSON", "interval": "PT1H",
        "properties": {"bootstrap.servers": bootstrap},
    }))
    .expect("trigger");
    let (ctx, mut rx, stop) = SourceContext::channel("bench/flow/t", 1);
    let ctx = ctx.with_files(TriggerFiles::new(storage, "bench", "flow", "t"));
    let started = Instant::now();
    let run = tokio::spawn(async move { trigger.run(ctx).await });
    let event = rx.recv().await.expect("a batch");
    let elapsed = started.elapsed();
    assert_eq!(event.variables["messagesCount"], json!(N));
    event.ack.settle(Outcome::Created);
    stop.cancel();
    let _ = run.await;
    N as f64 / elapsed.as_secs_f64()
}

fn row(what: &str, rate: f64, floor: f64) {
    println!(
        "| {what} | {rate:.0} records/s | {floor:.0} records/s | {:.2}× |",
        rate / floor
    );
}

#[test]
#[ignore = "a benchmark: run by hand with --ignored --nocapture"]
fn bench_kafka_tasks() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        println!("| what ({N} records of ~90 B) | swoop | bare client | ratio |");
        println!("|---|---|---|---|");
        let broker = Broker::start();
        let bootstrap = broker.bootstrap();
        for t in ["bare", "task", "read"] {
            broker.create_topic(t, 2).await;
        }
        let floor = bare_produce(&bootstrap, "bare", false).await;
        let rate = task_produce(&bootstrap, "task", false).await;
        row("Produce, not transactional (tansu)", rate, floor);

        let mock = MockCluster::new(3).expect("mock cluster");
        for t in ["bare", "bare-txn", "task", "task-txn"] {
            mock.create_topic(t, 2, 3).expect("topic");
        }
        let mb = mock.bootstrap_servers();
        let floor = bare_produce(&mb, "bare", false).await;
        let rate = task_produce(&mb, "task", false).await;
        row("Produce, not transactional (mock cluster)", rate, floor);
        let floor = bare_produce(&mb, "bare-txn", true).await;
        let rate = task_produce(&mb, "task-txn", true).await;
        row("Produce, transactional (mock cluster)", rate, floor);

        // The batch trigger and a bare consumer read the `bare` topic's N records.
        let floor = bare_consume(&bootstrap, "bare").await;
        let rate = trigger_batch(&bootstrap, "bare").await;
        row("batch Trigger into an ION file (tansu)", rate, floor);
    });
}

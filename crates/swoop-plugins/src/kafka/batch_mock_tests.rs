//! `Consume`, `Produce` and the batch `Trigger` against librdkafka's in-process mock cluster:
//! the rows written, the end rules, commits only after the file, exactly one stored batch per
//! record across a restart, a transaction that sends nothing when a row is bad, and a kill that
//! stops a consumer at once. (The mock cluster does not filter aborted transactions for
//! `read_committed` consumers — its fetch handler ignores the isolation level — so what an
//! abort hides is not observable here; the tests check that nothing is sent instead.)

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;
use serde_json::{Value, json};
use swoop_core::realtime::{MemoryState, Outcome, RealtimeSource, SourceContext, TriggerFiles};
use swoop_core::registry::RunnableTask;
use swoop_core::storage::{InternalStorage, MemoryStorage, StoragePath};
use swoop_core::testing::{TestRunContext, build_task};

use super::consume::CONSUME_TASK;
use super::mock_tests::{committed, produce, rec};
use super::produce::PRODUCE_TASK;
use super::trigger::KafkaBatchTrigger;

const WAIT: Duration = Duration::from_secs(20);

fn task(type_name: &str, props: Value) -> Arc<dyn RunnableTask> {
    build_task(&crate::registry(), type_name, props).expect("the task builds")
}

async fn orders(bootstrap: &str, n: usize, partitions: i32) {
    let values: Vec<String> = (0..n).map(|i| format!(r#"{{"id":{i}}}"#)).collect();
    let records: Vec<_> = values
        .iter()
        .enumerate()
        .map(|(i, v)| rec(i as i32 % partitions, "k", v, &[("type", "order")]))
        .collect();
    produce(bootstrap, "orders", &records).await;
}

/// Every (partition, offset) of the rows.
fn positions(rows: &[Value]) -> Vec<(i64, i64)> {
    rows.iter()
        .map(|r| {
            (
                r["partition"].as_i64().unwrap(),
                r["offset"].as_i64().unwrap(),
            )
        })
        .collect()
}

/// Every record of `topic`, read from the start without a group (read_uncommitted).
type KeyValue = (Option<Vec<u8>>, Option<Vec<u8>>);

fn read_all(bootstrap: &str, topic: &str) -> Vec<KeyValue> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set(
            "group.id",
            format!("reader-{}", swoop_core::model::new_id()),
        )
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "true")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => out.push((m.key().map(<[u8]>::to_vec), m.payload().map(<[u8]>::to_vec))),
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => break,
            _ => {}
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consume_without_a_group_reads_every_partition_from_the_start() {
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster.create_topic("orders", 2, 1).expect("topic");
    let bootstrap = cluster.bootstrap_servers();
    orders(&bootstrap, 30, 2).await;
    let consume = task(
        CONSUME_TASK,
        json!({"topic": "orders", "properties": {"bootstrap.servers": bootstrap},
               "valueDeserializer": "JSON", "pollDuration": "PT10S"}),
    );
    let ctx = TestRunContext::new(json!({}));
    let started = Instant::now();
    let out = consume.run(&ctx).await.expect("consumed");
    // Both partitions' ends end the batch, not the 10 s of silence.
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(out["messagesCount"], json!(30));
    let rows = ctx.read_ion(out["uri"].as_str().unwrap()).await;
    assert_eq!(rows.len(), 30);
    let mut got = positions(&rows);
    got.sort();
    let wanted: Vec<(i64, i64)> = (0..2).flat_map(|p| (0..15).map(move |o| (p, o))).collect();
    assert_eq!(got, wanted);
    assert_eq!(rows[0]["topic"], json!("orders"));
    assert_eq!(rows[0]["key"], json!("k"));
    assert!(rows[0]["value"]["id"].is_i64(), "{}", rows[0]);
    assert_eq!(rows[0]["headers"], json!([{"type": "order"}]));
    // A second run without a group reads the same records again (nothing is committed).
    let again = consume.run(&ctx).await.expect("consumed");
    assert_eq!(again["messagesCount"], json!(30));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consume_with_a_group_commits_after_the_file_and_stops_at_max_records() {
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster.create_topic("orders", 2, 1).expect("topic");
    let bootstrap = cluster.bootstrap_servers();
    orders(&bootstrap, 25, 2).await;
    let consume = task(
        CONSUME_TASK,
        json!({"topic": "orders", "groupId": "g", "maxRecords": 10,
               "properties": {"bootstrap.servers": bootstrap}}),
    );
    let ctx = TestRunContext::new(json!({}));
    let mut seen = BTreeSet::new();
    let mut counts = Vec::new();
    for _ in 0..4 {
        let out = consume.run(&ctx).await.expect("consumed");
        let rows = ctx.read_ion(out["uri"].as_str().unwrap()).await;
        counts.push(rows.len());
        for p in positions(&rows) {
            assert!(seen.insert(p), "{p:?} was read twice");
        }
    }
    assert_eq!(counts, vec![10, 10, 5, 0]);
    assert_eq!(seen.len(), 25);
    assert_eq!(
        committed(&bootstrap, "g", "orders", 2),
        vec![Some(13), Some(12)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_consume_stops_at_once() {
    let cluster = MockCluster::new(1).expect("mock cluster");
    let bootstrap = cluster.bootstrap_servers();
    // A group on a topic that does not exist is never assigned anything: the task waits.
    let consume = task(
        CONSUME_TASK,
        json!({"topic": "nowhere", "groupId": "g", "maxDuration": "PT60S",
               "properties": {"bootstrap.servers": bootstrap}}),
    );
    let ctx = Arc::new(TestRunContext::new(json!({})));
    let cancel = ctx.cancel.clone();
    let run = tokio::spawn({
        let ctx = ctx.clone();
        async move { consume.run(ctx.as_ref()).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!run.is_finished(), "the task waits for an assignment");
    let killed = Instant::now();
    cancel.cancel();
    let result = tokio::time::timeout(Duration::from_secs(2), run)
        .await
        .expect("the task stops within 2 s of the kill")
        .expect("joins");
    let e = result.expect_err("a killed task fails");
    assert!(e.message.contains("stopped"), "{e:?}");
    assert!(killed.elapsed() < Duration::from_secs(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_sends_a_list_and_an_ion_file_in_a_transaction() {
    let cluster = MockCluster::new(3).expect("mock cluster");
    cluster.create_topic("out", 1, 3).expect("topic");
    cluster.create_topic("other", 1, 3).expect("topic");
    let bootstrap = cluster.bootstrap_servers();
    let ctx = TestRunContext::new(json!({"inputs": {"n": 7}}));
    let list = task(
        PRODUCE_TASK,
        json!({"topic": "out", "transactional": false, "valueSerializer": "JSON",
               "properties": {"bootstrap.servers": bootstrap},
               "from": [{"key": "a", "value": {"n": "{{ inputs.n }}"}},
                        {"key": "b", "value": [1], "topic": "other"}]}),
    );
    let out = list.run(&ctx).await.expect("produced");
    assert_eq!(out["messagesCount"], json!(2));
    let got = read_all(&bootstrap, "out");
    // `from` is rendered keeping types: a value that is one expression keeps its type.
    assert_eq!(
        got,
        vec![(Some(b"a".to_vec()), Some(br#"{"n":7}"#.to_vec()))]
    );
    assert_eq!(read_all(&bootstrap, "other").len(), 1);

    // 1,000 rows from an ION file, as Consume writes them, in one transaction.
    let mut text = String::new();
    for i in 0..1000 {
        text.push_str(&format!(
            "{{key:\"k{i}\",value:\"v{i}\",topic:\"orders\",partition:0,offset:{i},headers:[{{h:\"x\"}}]}}\n"
        ));
    }
    let path = StoragePath::parse("kestra:///test/flow/executions/exec1/rows.ion").unwrap();
    swoop_core::storage::put(
        ctx.storage.files.storage.as_ref(),
        &path,
        &mut text.as_bytes(),
    )
    .await
    .expect("stored");
    let file = task(
        PRODUCE_TASK,
        json!({"topic": "copied", "properties": {"bootstrap.servers": bootstrap},
               "from": "{{ 'kestra:///test/flow/executions/exec1/rows.ion' }}"}),
    );
    // The rows say they were read from `orders`: in a file, the task's topic wins.
    cluster.create_topic("copied", 1, 3).expect("topic");
    let out = file.run(&ctx).await.expect("produced in a transaction");
    assert_eq!(out["messagesCount"], json!(1000));
    let got = read_all(&bootstrap, "copied");
    assert_eq!(got.len(), 1000);
    assert_eq!(got[999], (Some(b"k999".to_vec()), Some(b"v999".to_vec())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_row_halfway_sends_nothing_in_a_transaction() {
    let cluster = MockCluster::new(3).expect("mock cluster");
    cluster.create_topic("out", 1, 3).expect("topic");
    let bootstrap = cluster.bootstrap_servers();
    let ctx = TestRunContext::new(json!({}));
    let produce = task(
        PRODUCE_TASK,
        json!({"topic": "out", "valueSerializer": "INTEGER",
               "properties": {"bootstrap.servers": bootstrap},
               "from": [{"value": 1}, {"value": 2}, {"value": "three"}, {"value": 4}]}),
    );
    let e = produce
        .run(&ctx)
        .await
        .expect_err("a bad row fails the run");
    assert!(!e.retryable, "{e:?}");
    assert!(
        e.message
            .contains("record 3 of `from`: value: INTEGER needs"),
        "{e:?}"
    );
    assert!(read_all(&bootstrap, "out").is_empty(), "nothing was sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_batch_trigger_stores_each_record_in_exactly_one_batch_across_a_restart() {
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster.create_topic("orders", 2, 1).expect("topic");
    let bootstrap = cluster.bootstrap_servers();
    orders(&bootstrap, 40, 2).await;
    let trigger = Arc::new(
        KafkaBatchTrigger::from_json(&json!({
            "topic": "orders", "groupId": "batch", "interval": "PT0.2S",
            "valueDeserializer": "JSON",
            "properties": {"bootstrap.servers": bootstrap},
        }))
        .expect("a valid trigger"),
    );
    let storage = Arc::new(MemoryStorage::new());
    let state = Arc::new(MemoryState::default());
    let start = || {
        let (ctx, rx, stop) = SourceContext::channel("ns/flow/t", 1);
        let ctx = ctx.with_state(state.clone()).with_files(TriggerFiles::new(
            storage.clone(),
            "ns",
            "flow",
            "t",
        ));
        let t = trigger.clone();
        (tokio::spawn(async move { t.run(ctx).await }), rx, stop)
    };
    let read = |uri: String| {
        let storage = storage.clone();
        async move {
            let path = StoragePath::parse(&uri).unwrap();
            let file = storage.open(&path).await.expect("the batch file exists");
            let mut reader = swoop_core::ion::IonReader::new(tokio::io::BufReader::new(file));
            let mut rows = Vec::new();
            while let Some(r) = reader.next().await.expect("valid ION") {
                rows.push(r);
            }
            rows
        }
    };

    // First run: one batch of 40; the trigger stops before it is recorded (a crash).
    let (run, mut rx, stop) = start();
    let first = tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("in time")
        .expect("a batch");
    assert_eq!(first.variables["messagesCount"], json!(40));
    let uri = first.variables["uri"].as_str().unwrap().to_string();
    let id = first
        .execution_id
        .clone()
        .expect("the execution id is chosen first");
    assert!(
        uri.starts_with(&format!("kestra:///ns/flow/executions/{id}/trigger/t/")),
        "{uri}"
    );
    assert_eq!(
        first.dedup_key.as_deref(),
        Some("orders/0:0-19,orders/1:0-19")
    );
    assert_eq!(read(uri.clone()).await.len(), 40);
    stop.cancel();
    drop(first); // released
    tokio::time::timeout(WAIT, run)
        .await
        .expect("stops")
        .expect("joins")
        .expect("ok");
    assert_eq!(
        committed(&bootstrap, "batch", "orders", 2),
        vec![None, None]
    );

    // Second run: the same batch first (same id and dedup key), then only new records.
    orders(&bootstrap, 6, 2).await;
    let (run, mut rx, stop) = start();
    let again = tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("in time")
        .expect("a batch");
    assert_eq!(again.execution_id.as_deref(), Some(id.as_str()));
    assert_eq!(again.dedup_key, first_key());
    again.ack.settle(Outcome::Duplicate);
    let next = tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("in time")
        .expect("a batch");
    assert_eq!(next.variables["messagesCount"], json!(6));
    let rows = read(next.variables["uri"].as_str().unwrap().to_string()).await;
    let mut got = positions(&rows);
    got.sort();
    assert_eq!(
        got,
        vec![(0, 20), (0, 21), (0, 22), (1, 20), (1, 21), (1, 22)]
    );
    next.ack.settle(Outcome::Created);
    // Committed once recorded; nothing is left to emit.
    let deadline = Instant::now() + WAIT;
    while committed(&bootstrap, "batch", "orders", 2) != vec![Some(23), Some(23)] {
        assert!(
            Instant::now() < deadline,
            "the batch's offsets are committed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.cancel();
    tokio::time::timeout(WAIT, run)
        .await
        .expect("stops")
        .expect("joins")
        .expect("ok");
}

fn first_key() -> Option<String> {
    Some("orders/0:0-19,orders/1:0-19".to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consume_keeps_or_skips_undecodable_records_and_filters_headers() {
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster.create_topic("orders", 1, 1).expect("topic");
    let bootstrap = cluster.bootstrap_servers();
    produce(
        &bootstrap,
        "orders",
        &[
            rec(0, "a", r#"{"n":1}"#, &[("type", "order")]),
            rec(0, "b", "not json", &[("type", "order")]),
            rec(0, "c", r#"{"n":3}"#, &[("type", "refund")]),
        ],
    )
    .await;
    let ctx = TestRunContext::new(json!({}));
    let run = |extra: Value| {
        let props = swoop_core::testing::merged(
            json!({"topic": "orders", "valueDeserializer": "JSON",
                   "properties": {"bootstrap.servers": bootstrap}}),
            extra,
        );
        let consume = task(CONSUME_TASK, props);
        let ctx = &ctx;
        async move {
            let out = consume.run(ctx).await.expect("consumed");
            ctx.read_ion(out["uri"].as_str().unwrap()).await
        }
    };
    // By default the undecodable record is kept, raw, with the reason.
    let rows = run(json!({})).await;
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[1]["value"], json!("not json"));
    assert_eq!(rows[1]["rawValueBase64"], json!("bm90IGpzb24="));
    assert!(
        rows[1]["error"]
            .as_str()
            .unwrap()
            .contains("not valid JSON"),
        "{}",
        rows[1]
    );
    let rows = run(json!({"onSerdeError": "SKIPPED"})).await;
    assert_eq!(positions(&rows), vec![(0, 0), (0, 2)]);
    let rows = run(json!({"headerFilters": {"type": "order"}})).await;
    assert_eq!(positions(&rows), vec![(0, 0), (0, 1)]);
}

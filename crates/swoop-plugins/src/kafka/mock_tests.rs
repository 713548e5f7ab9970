//! The consumer end to end against librdkafka's in-process mock cluster (no broker needed):
//! decoding, header filters, serde-error handling, commits only of acknowledged offsets,
//! backpressure, and an unreachable broker surfacing as a transient error.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use swoop_core::realtime::{
    Backlog, Event, EventSink, Outcome, RealtimeSource, SourceContext, SourceError, Stopped,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{KafkaSource, KafkaTriggerConfig};

const WAIT: Duration = Duration::from_secs(20);

pub(crate) struct Rec<'a> {
    partition: i32,
    key: Option<&'a [u8]>,
    value: Option<&'a [u8]>,
    headers: &'a [(&'a str, &'a str)],
}

pub(crate) fn rec<'a>(
    partition: i32,
    key: &'a str,
    value: &'a str,
    headers: &'a [(&'a str, &'a str)],
) -> Rec<'a> {
    Rec {
        partition,
        key: Some(key.as_bytes()),
        value: Some(value.as_bytes()),
        headers,
    }
}

pub(crate) async fn produce(bootstrap: &str, topic: &str, records: &[Rec<'_>]) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("producer");
    for r in records {
        let mut headers = OwnedHeaders::new();
        for (k, v) in r.headers {
            headers = headers.insert(Header {
                key: k,
                value: Some(*v),
            });
        }
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic)
            .partition(r.partition)
            .headers(headers);
        if let Some(k) = r.key {
            record = record.key(k);
        }
        if let Some(v) = r.value {
            record = record.payload(v);
        }
        producer
            .send(record, Duration::from_secs(5))
            .await
            .map_err(|(e, _)| e)
            .expect("delivered");
    }
    producer.flush(Duration::from_secs(5)).expect("flushed");
}

fn source(bootstrap: &str, group: &str, extra: Value) -> KafkaSource {
    let mut v = json!({
        "id": "t",
        "type": "io.kestra.plugin.kafka.RealtimeTrigger",
        "topic": "orders",
        "groupId": group,
        "properties": {"bootstrap.servers": bootstrap},
    });
    for (k, x) in extra.as_object().expect("an object") {
        v[k] = x.clone();
    }
    KafkaSource::new(KafkaTriggerConfig::from_json(&v).expect("valid trigger"))
}

/// The runtime's side for these tests: events arrive on a channel of one (so the source
/// waits as it would for a slot), and the backlog probe is kept.
struct TestSink {
    tx: mpsc::Sender<Event>,
    backlog: Mutex<Option<Arc<dyn Backlog>>>,
}

#[async_trait]
impl EventSink for TestSink {
    async fn emit(&self, event: Event) -> Result<(), Stopped> {
        self.tx.send(event).await.map_err(|_| Stopped)
    }

    fn watch_backlog(&self, backlog: Arc<dyn Backlog>) {
        *self.backlog.lock().expect("not poisoned") = Some(backlog);
    }
}

/// A running source, as the tests drive it.
struct Conn {
    rx: mpsc::Receiver<Event>,
    sink: Arc<TestSink>,
    stop: CancellationToken,
    task: Option<JoinHandle<Result<(), SourceError>>>,
}

fn connect(src: &KafkaSource) -> Conn {
    let (tx, rx) = mpsc::channel(1);
    let sink = Arc::new(TestSink {
        tx,
        backlog: Mutex::new(None),
    });
    let stop = CancellationToken::new();
    let ctx = SourceContext::new("ns/flow/t", sink.clone(), stop.clone());
    let src = src.clone();
    let task = tokio::spawn(async move { src.run(ctx).await });
    Conn {
        rx,
        sink,
        stop,
        task: Some(task),
    }
}

impl Conn {
    /// The next event, or the error the source stopped with. Cancel-safe.
    async fn next(&mut self) -> Result<Event, SourceError> {
        let Some(task) = self.task.as_mut() else {
            return Err(SourceError::Transient("the source ended".into()));
        };
        tokio::select! {
            Some(event) = self.rx.recv() => Ok(event),
            result = task => {
                self.task = None;
                match result.expect("the source does not panic") {
                    Ok(()) => Err(SourceError::Transient("the source ended".into())),
                    Err(e) => Err(e),
                }
            }
        }
    }

    async fn backlog(&self) -> Option<u64> {
        let probe = self.sink.backlog.lock().expect("not poisoned").clone()?;
        probe.backlog().await
    }

    /// Stops the source and waits for it (its last commit).
    async fn close(&mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(WAIT, task)
                .await
                .expect("the source stops in time");
        }
    }
}

async fn next(conn: &mut Conn) -> Event {
    tokio::time::timeout(WAIT, conn.next())
        .await
        .expect("an event in time")
        .expect("an event")
}

/// The committed offsets of `group` for `topic`'s partitions 0..n.
pub(crate) fn committed(
    bootstrap: &str,
    group: &str,
    topic: &str,
    partitions: i32,
) -> Vec<Option<i64>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let got = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .expect("committed offsets");
    (0..partitions)
        .map(|p| match got.find_partition(topic, p).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => Some(o),
            _ => None,
        })
        .collect()
}

fn offset(e: &Event) -> i64 {
    e.variables["offset"].as_i64().expect("an offset")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumes_filters_and_commits_only_what_is_acknowledged() {
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster.create_topic("orders", 2, 1).expect("topic");
    let bootstrap = cluster.bootstrap_servers();
    let order = [("type", "order")];
    produce(
        &bootstrap,
        "orders",
        &[
            rec(0, "c1", r#"{"n": 0}"#, &order),
            rec(0, "c2", r#"{"n": 1}"#, &order),
            rec(0, "c1", "not json", &order),
            rec(0, "c3", r#"{"n": 3}"#, &[("type", "other")]),
            rec(0, "c1", r#"{"n": 4}"#, &order),
        ],
    )
    .await;
    // The mock cluster lets a group rebalance for the session timeout after a member leaves
    // (a real broker does not wait): keep it short for the reconnection below.
    let src = source(
        &bootstrap,
        "g1",
        json!({"valueDeserializer": "JSON", "headerFilters": {"type": "order"}, "properties": {"bootstrap.servers": bootstrap, "session.timeout.ms": 6000, "heartbeat.interval.ms": 500}}),
    );

    let mut conn = connect(&src);
    let e0 = next(&mut conn).await;
    assert_eq!(e0.variables["value"], json!({"n": 0}));
    assert_eq!(e0.variables["key"], json!("c1"));
    assert_eq!(e0.variables["topic"], json!("orders"));
    assert_eq!(e0.variables["partition"], json!(0));
    assert_eq!(e0.variables["headers"], json!([{"type": "order"}]));
    assert!(
        e0.variables["timestamp"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );
    assert_eq!(e0.dedup_key.as_deref(), Some("orders/0/0"));
    assert_eq!(e0.partition.as_deref(), Some("orders/0"));
    assert_eq!(e0.key.as_deref(), Some("c1"));
    let e1 = next(&mut conn).await;
    let e2 = next(&mut conn).await;
    assert_eq!(offset(&e2), 2);
    assert!(
        e2.decode_error
            .as_deref()
            .is_some_and(|e| e.contains("cannot decode the value of orders/0/2 as JSON")),
        "{:?}",
        e2.decode_error
    );
    assert_eq!(e2.variables["value"], json!("not json"));
    // Offset 3 is filtered out by its headers.
    let e4 = next(&mut conn).await;
    assert_eq!(offset(&e4), 4);

    // Offset 1 stays unacknowledged: nothing from it on is committed.
    e0.ack.settle(Outcome::Created);
    e2.ack.settle(Outcome::Created);
    e4.ack.settle(Outcome::Created);
    tokio::time::sleep(Duration::from_millis(300)).await;
    conn.close().await;
    assert_eq!(committed(&bootstrap, "g1", "orders", 1), vec![Some(1)]);

    // The next connection reads from offset 1 again; acknowledging everything commits it all.
    let mut conn = connect(&src);
    let again = next(&mut conn).await;
    assert_eq!(offset(&again), 1);
    assert_eq!(again.dedup_key, e1.dedup_key);
    again.ack.settle(Outcome::Created);
    let e2 = next(&mut conn).await;
    e2.ack.settle(Outcome::Created);
    let e4 = next(&mut conn).await;
    e4.ack.settle(Outcome::Created);
    // An acknowledgement from the closed connection is ignored.
    e1.ack.settle(Outcome::Created);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(committed(&bootstrap, "g1", "orders", 1), vec![Some(5)]);
    conn.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skipped_and_dead_lettered_records_are_committed_past() {
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster.create_topic("orders", 1, 1).expect("topic");
    cluster.create_topic("orders-dlq", 1, 1).expect("dlq topic");
    let bootstrap = cluster.bootstrap_servers();
    produce(
        &bootstrap,
        "orders",
        &[
            rec(0, "a", "\u{1}\u{2}", &[]),
            rec(0, "b", "\u{0}\u{0}\u{0}\u{5}", &[("trace", "t1")]),
        ],
    )
    .await;

    // SKIPPED: the 2-byte value is not an INTEGER; it is skipped and committed past.
    let src = source(
        &bootstrap,
        "g-skip",
        json!({"valueDeserializer": "INTEGER", "onSerdeError": "SKIPPED"}),
    );
    let mut conn = connect(&src);
    let e = next(&mut conn).await;
    assert_eq!(offset(&e), 1);
    assert_eq!(e.variables["value"], json!(5));
    e.ack.settle(Outcome::Created);
    tokio::time::sleep(Duration::from_millis(300)).await;
    conn.close().await;
    assert_eq!(committed(&bootstrap, "g-skip", "orders", 1), vec![Some(2)]);

    // DLQ: the raw record goes to the dead-letter topic with the error in a header.
    let src = source(
        &bootstrap,
        "g-dlq",
        json!({"valueDeserializer": "INTEGER", "onSerdeError": {"type": "DLQ", "topic": "orders-dlq"}}),
    );
    let mut conn = connect(&src);
    let e = next(&mut conn).await;
    assert_eq!(offset(&e), 1);
    conn.close().await;
    assert_eq!(committed(&bootstrap, "g-dlq", "orders", 1), vec![Some(1)]);

    let reader: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", "dlq-reader")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("orders-dlq", 0, Offset::Beginning)
        .expect("partition");
    reader.assign(&tpl).expect("assigned");
    let dead = tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + WAIT;
        while std::time::Instant::now() < deadline {
            if let Some(m) = reader.poll(Duration::from_millis(200)) {
                let m = m.expect("a record");
                let headers: Vec<(String, String)> = m
                    .headers()
                    .map(|hs| {
                        hs.iter()
                            .map(|h| {
                                (
                                    h.key.to_string(),
                                    String::from_utf8_lossy(h.value.unwrap_or_default())
                                        .into_owned(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                return Some((
                    m.key().map(<[u8]>::to_vec),
                    m.payload().map(<[u8]>::to_vec),
                    headers,
                ));
            }
        }
        None
    })
    .await
    .expect("joined")
    .expect("a dead letter");
    assert_eq!(dead.0.as_deref(), Some(&b"a"[..]));
    assert_eq!(dead.1.as_deref(), Some(&b"\x01\x02"[..]));
    let error = dead
        .2
        .iter()
        .find(|(k, _)| k == "swoop.error")
        .map(|(_, v)| v.clone());
    assert!(
        error
            .as_deref()
            .is_some_and(|e| e.contains("INTEGER expects 4 bytes, got 2")),
        "{:?}",
        dead.2
    );
    assert!(
        dead.2
            .contains(&("swoop.source".to_string(), "orders/0/0".to_string()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backpressure_pauses_without_losing_or_repeating_records() {
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster.create_topic("orders", 3, 1).expect("topic");
    let bootstrap = cluster.bootstrap_servers();
    let values: Vec<String> = (0..300).map(|i| i.to_string()).collect();
    let records: Vec<Rec<'_>> = values
        .iter()
        .enumerate()
        .map(|(i, v)| rec((i % 3) as i32, "k", v, &[]))
        .collect();
    produce(&bootstrap, "orders", &records).await;

    let src = source(&bootstrap, "g-bp", json!({})).with_pause_after(Duration::from_millis(300));
    let mut conn = connect(&src);
    let mut seen: Vec<Vec<i64>> = vec![Vec::new(); 3];
    let mut take = |e: Event| {
        let p = e.variables["partition"].as_i64().expect("partition") as usize;
        seen[p].push(offset(&e));
        e.ack.settle(Outcome::Created);
        seen.iter().map(Vec::len).sum::<usize>()
    };
    take(next(&mut conn).await);
    // Nobody asks for a while: the pump fills its channel, waits, then pauses the partitions.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut backlog = None;
    for _ in 0..50 {
        backlog = conn.backlog().await;
        if backlog.is_some_and(|b| b >= 250) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        backlog.is_some_and(|b| (250..=299).contains(&b)),
        "{backlog:?}"
    );
    for _ in 1..300 {
        let taken = take(next(&mut conn).await);
        if taken == 150 {
            // A stall long enough to pause again.
            tokio::time::sleep(Duration::from_millis(1000)).await;
        } else if taken % 40 == 0 {
            // A slow runtime now and then.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    for offsets in &seen {
        assert_eq!(offsets, &(0..100).collect::<Vec<i64>>());
    }
    // Nothing more.
    assert!(
        tokio::time::timeout(Duration::from_millis(500), conn.next())
            .await
            .is_err()
    );
    let mut backlog = None;
    for _ in 0..50 {
        backlog = conn.backlog().await;
        if backlog == Some(0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(backlog, Some(0));
    conn.close().await;
    assert_eq!(
        committed(&bootstrap, "g-bp", "orders", 3),
        vec![Some(100), Some(100), Some(100)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_broker_is_a_transient_error() {
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster.create_topic("orders", 1, 1).expect("topic");
    let bootstrap = cluster.bootstrap_servers();
    produce(&bootstrap, "orders", &[rec(0, "k", "v", &[])]).await;
    let src = source(&bootstrap, "g-down", json!({}));
    let mut conn = connect(&src);
    let e = next(&mut conn).await;
    e.ack.settle(Outcome::Created);
    cluster.broker_down(-1).expect("broker down");
    let started = std::time::Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(30), conn.next())
        .await
        .expect("an error in time");
    match result {
        Err(SourceError::Transient(message)) => {
            assert!(message.contains("g-down"), "{message}");
        }
        other => panic!("expected a transient error, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(15));
    // Closing does not wait for the unreachable brokers.
    let closing = std::time::Instant::now();
    conn.close().await;
    assert!(closing.elapsed() < Duration::from_secs(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_listening_is_a_transient_error() {
    // A port nothing listens on.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let port = listener.local_addr().expect("address").port();
    drop(listener);
    let src = source(&format!("127.0.0.1:{port}"), "g-none", json!({}));
    let mut conn = connect(&src);
    let result = tokio::time::timeout(Duration::from_secs(30), conn.next())
        .await
        .expect("an error in time");
    assert!(
        matches!(&result, Err(SourceError::Transient(m)) if m.contains(&port.to_string())),
        "{result:?}"
    );
    conn.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_pattern_subscribes_to_matching_topics_only() {
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster.create_topic("orders-eu", 1, 1).expect("topic");
    cluster
        .create_topic("orders-eu-archive", 1, 1)
        .expect("topic");
    let bootstrap = cluster.bootstrap_servers();
    produce(&bootstrap, "orders-eu-archive", &[rec(0, "k", "old", &[])]).await;
    produce(&bootstrap, "orders-eu", &[rec(0, "k", "new", &[])]).await;
    let mut v = json!({
        "id": "t",
        "type": "io.kestra.plugin.kafka.RealtimeTrigger",
        "topicPattern": "orders-[a-z]+",
        "groupId": "g-pattern",
        "properties": {"bootstrap.servers": bootstrap, "topic.metadata.refresh.interval.ms": 500},
    });
    let src = KafkaSource::new(KafkaTriggerConfig::from_json(&v).expect("valid"));
    let mut conn = connect(&src);
    let e = next(&mut conn).await;
    assert_eq!(e.variables["topic"], json!("orders-eu"));
    assert_eq!(e.variables["value"], json!("new"));
    assert!(
        tokio::time::timeout(Duration::from_millis(1500), conn.next())
            .await
            .is_err()
    );
    conn.close().await;

    // A pattern librdkafka cannot compile is fatal.
    v["topicPattern"] = json!("orders-[");
    let src = KafkaSource::new(KafkaTriggerConfig::from_json(&v).expect("valid"));
    match tokio::time::timeout(WAIT, connect(&src).next()).await {
        Ok(Err(SourceError::Fatal(m))) => assert!(m.contains("topicPattern"), "{m}"),
        Ok(Err(other)) => panic!("expected a fatal error, got {other:?}"),
        Ok(Ok(_)) => panic!("expected a fatal error, got an event"),
        Err(_) => panic!("no fatal error in time"),
    }
}

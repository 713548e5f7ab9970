//! The MySQL CDC realtime source against a real MariaDB (swoop-testkit's `mariadb`, started
//! with the row-based binlog on), without the engine: `SourceContext::channel` takes the events,
//! the test settles them as the runtime would. Row changes in each format, a 1,000-row
//! transaction, a snapshot, a server restart and a crash of the reader (a new source from the
//! saved checkpoint): nothing lost, and nothing new under an old dedup key.

#![cfg(feature = "mysql-cdc")]

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use swoop_core::realtime::{
    Event, MemoryState, Outcome, RealtimeSource, SourceContext, SourceError, SourceState,
};
use swoop_plugins::mysql_cdc::checkpoint::Checkpoint;
use swoop_plugins::mysql_cdc::{MysqlCdcConfig, MysqlCdcSource};
use swoop_testkit::mariadb::MariaDb;
use tokio::sync::mpsc::Receiver;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const NAME: &str = "dev/cdc/orders";

/// A trigger's source and the durable state it keeps its checkpoint in (the engine's is the
/// store's trigger state).
struct Trigger {
    source: Arc<MysqlCdcSource>,
    state: Arc<MemoryState>,
}

fn source(db: &MariaDb, store: &Arc<MemoryState>, extra: Value) -> Trigger {
    let mut v = json!({
        "hostname": "127.0.0.1",
        "port": db.port(),
        "username": "root",
        "serverId": "5400",
        "includedTables": "shop\\..*",
    });
    if let (Some(v), Some(extra)) = (v.as_object_mut(), extra.as_object()) {
        v.extend(extra.clone());
    }
    let config = MysqlCdcConfig::from_json(&v).expect("a valid trigger");
    Trigger {
        source: Arc::new(MysqlCdcSource::new(config)),
        state: store.clone(),
    }
}

struct Running {
    run: JoinHandle<Result<(), SourceError>>,
    events: Receiver<Event>,
    stop: CancellationToken,
}

fn start(trigger: &Trigger) -> Running {
    let (ctx, events, stop) = SourceContext::channel(NAME, 256);
    let ctx = ctx.with_state(trigger.state.clone());
    let source = trigger.source.clone();
    let run = tokio::spawn(async move { source.run(ctx).await });
    Running { run, events, stop }
}

impl Running {
    async fn next(&mut self) -> Event {
        let next = tokio::time::timeout(Duration::from_secs(30), self.events.recv())
            .await
            .expect("an event within 30 s");
        match next {
            Some(e) => e,
            None => panic!("the source ended: {:?}", (&mut self.run).await),
        }
    }

    /// The next `n` events, each acknowledged as recorded.
    async fn take(&mut self, n: usize) -> Vec<Event> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let mut e = self.next().await;
            std::mem::replace(&mut e.ack, swoop_core::realtime::Ack::none())
                .settle(Outcome::Created);
            out.push(e);
        }
        out
    }

    async fn stop(self) -> Result<(), SourceError> {
        self.stop.cancel();
        drop(self.events);
        tokio::time::timeout(Duration::from_secs(30), self.run)
            .await
            .expect("the run ends within 30 s")
            .expect("joins")
    }
}

/// Waits until the trigger's checkpoint is a binlog position (its snapshot is done), so that
/// what is written next arrives through the binlog.
async fn streaming(store: &MemoryState) -> Checkpoint {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(text) = store.load("debezium-state").await.unwrap()
            && let Ok(c @ Checkpoint::Binlog(_)) = Checkpoint::parse(&text)
        {
            return c;
        }
        assert!(
            Instant::now() < deadline,
            "no binlog checkpoint within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn server() -> (MariaDb, Arc<MemoryState>) {
    let db = MariaDb::start_with_binlog();
    db.sql("CREATE DATABASE shop; CREATE TABLE shop.orders (id INT PRIMARY KEY AUTO_INCREMENT, n INT, note VARCHAR(20), d DATE, at DATETIME(3), price DECIMAL(10,2), flag BIT(1), kind ENUM('small','big'))");
    (db, Arc::new(MemoryState::default()))
}

fn data(e: &Event) -> &Value {
    &e.variables["data"]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inserts_updates_and_deletes_in_each_format() {
    let (db, _store) = server();
    for (i, format) in ["INLINE", "WRAP", "RAW"].iter().enumerate() {
        // Each format is its own trigger (its own checkpoint).
        let name_store = Arc::new(MemoryState::default());
        let src = source(&db, &name_store, json!({"format": format}));
        let mut run = start(&src);
        streaming(&name_store).await;
        let id = 100 + i;
        db.sql(&format!("INSERT INTO shop.orders VALUES ({id}, 1, 'new', '2026-01-02', '2026-01-02 03:04:05.120', 12.50, b'1', 'big')"));
        db.sql(&format!(
            "UPDATE shop.orders SET n = 2, note = 'paid' WHERE id = {id}"
        ));
        db.sql(&format!("DELETE FROM shop.orders WHERE id = {id}"));
        let events = run.take(3).await;
        for e in &events {
            assert_eq!(e.variables["stream"], "shop.orders");
            assert_eq!(e.partition.as_deref(), Some("shop.orders"));
            assert_eq!(e.key.as_deref(), Some(id.to_string().as_str()));
        }
        let keys: HashSet<_> = events
            .iter()
            .map(|e| e.dedup_key.clone().unwrap())
            .collect();
        assert_eq!(keys.len(), 3, "distinct dedup keys: {keys:?}");
        let [c, u, d] = [data(&events[0]), data(&events[1]), data(&events[2])];
        match *format {
            "INLINE" => {
                assert_eq!(c["id"], id);
                assert_eq!(c["note"], "new");
                assert_eq!(c["d"], "2026-01-02");
                assert_eq!(c["at"], "2026-01-02T03:04:05.120Z");
                assert_eq!(c["price"], 12.5);
                assert_eq!(c["flag"], true);
                assert_eq!(c["kind"], "big");
                assert_eq!(c["deleted"], false);
                assert_eq!(c["metadata"]["operation"], "CREATE");
                assert_eq!(c["metadata"]["source"]["connector"], "mysql");
                assert_eq!(c["metadata"]["source"]["db"], "shop");
                assert_eq!(c["metadata"]["source"]["table"], "orders");
                assert_eq!(c["metadata"]["source"]["snapshot"], "false");
                assert!(c["metadata"]["source"]["gtid"].is_string(), "{c}");
                assert_eq!(
                    (u["n"].clone(), u["note"].clone()),
                    (json!(2), json!("paid"))
                );
                assert_eq!(u["metadata"]["operation"], "UPDATE");
                assert_eq!(
                    (d["note"].clone(), d["deleted"].clone()),
                    (json!("paid"), json!(true))
                );
                assert_eq!(d["metadata"]["operation"], "DELETE");
            }
            "WRAP" => {
                assert_eq!(c["record"]["note"], "new");
                assert_eq!(c["id"], id, "the key beside the record");
                assert_eq!(u["record"]["n"], 2);
                assert_eq!(
                    (d["record"]["note"].clone(), d["deleted"].clone()),
                    (json!("paid"), json!(true))
                );
            }
            _ => {
                assert_eq!(c["key"], json!({"id": id}));
                assert_eq!(c["value"]["op"], "c");
                assert_eq!(c["value"]["before"], Value::Null);
                assert_eq!(u["value"]["op"], "u");
                assert_eq!(u["value"]["before"]["note"], "new");
                assert_eq!(u["value"]["after"]["note"], "paid");
                assert_eq!(d["value"]["op"], "d");
                assert_eq!(d["value"]["after"], Value::Null);
                assert_eq!(d["deleted"], true);
            }
        }
        run.stop().await.expect("a clean stop");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_dropped_and_columns_excluded() {
    let (db, store) = server();
    let src = source(
        &db,
        &store,
        json!({"deleted": "DROP", "excludedColumns": "shop\\.orders\\.note", "metadata": "DROP"}),
    );
    let mut run = start(&src);
    streaming(&store).await;
    db.sql("INSERT INTO shop.orders (n, note) VALUES (1, 'secret'); DELETE FROM shop.orders; INSERT INTO shop.orders (n) VALUES (2)");
    let events = run.take(2).await;
    assert_eq!(data(&events[0])["n"], 1);
    assert!(
        data(&events[0]).get("note").is_none(),
        "{}",
        data(&events[0])
    );
    assert!(data(&events[0]).get("metadata").is_none());
    assert_eq!(data(&events[1])["n"], 2, "the delete was dropped");
    run.stop().await.expect("a clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_of_1000_rows() {
    let (db, store) = server();
    let src = source(&db, &store, json!({}));
    let mut run = start(&src);
    streaming(&store).await;
    db.sql("INSERT INTO shop.orders (n) SELECT seq FROM shop.seq_1_to_1000");
    let events = run.take(1000).await;
    let ns: Vec<i64> = events
        .iter()
        .map(|e| data(e)["n"].as_i64().unwrap())
        .collect();
    assert_eq!(ns, (1..=1000).collect::<Vec<_>>(), "in order");
    let keys: HashSet<_> = events
        .iter()
        .map(|e| e.dedup_key.clone().unwrap())
        .collect();
    assert_eq!(keys.len(), 1000);
    let gtids: HashSet<_> = events
        .iter()
        .map(|e| data(e)["metadata"]["source"]["gtid"].clone())
        .collect();
    assert_eq!(gtids.len(), 1, "one transaction");
    // Everything is recorded: the checkpoint moves past the transaction.
    let before = streaming(&store).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while streaming(&store).await == before {
        assert!(Instant::now() < deadline, "the checkpoint did not move");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    run.stop().await.expect("a clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_of_an_existing_table_then_changes() {
    let (db, store) = server();
    db.sql("INSERT INTO shop.orders (n) SELECT seq FROM shop.seq_1_to_50");
    let src = source(&db, &store, json!({}));
    let mut run = start(&src);
    let snap = run.take(50).await;
    for (i, e) in snap.iter().enumerate() {
        assert_eq!(data(e)["n"], i as i64 + 1);
        assert_eq!(data(e)["metadata"]["operation"], "READ");
        assert_eq!(data(e)["metadata"]["source"]["snapshot"], "true");
        assert!(
            e.dedup_key
                .as_deref()
                .unwrap()
                .starts_with("mysql:snapshot:")
        );
    }
    streaming(&store).await;
    db.sql("INSERT INTO shop.orders (n) VALUES (51)");
    let next = run.take(1).await;
    assert_eq!(data(&next[0])["n"], 51);
    assert_eq!(data(&next[0])["metadata"]["operation"], "CREATE");
    run.stop().await.expect("a clean stop");
    // A second start resumes from the checkpoint: no snapshot again.
    let mut run = start(&source(&db, &store, json!({})));
    db.sql("INSERT INTO shop.orders (n) VALUES (52)");
    assert_eq!(data(&run.take(1).await[0])["n"], 52);
    run.stop().await.expect("a clean stop");
}

/// The `n` of each event, by dedup key (the store's view: one execution per key).
fn record(seen: &mut HashMap<String, i64>, events: &[Event]) {
    for e in events {
        let n = data(e)["n"].as_i64().unwrap();
        if let Some(old) = seen.insert(e.dedup_key.clone().unwrap(), n) {
            assert_eq!(old, n, "a dedup key names one row");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_restart_and_reader_crash_lose_nothing() {
    let (mut db, store) = server();
    let src = source(&db, &store, json!({}));
    let mut run = start(&src);
    streaming(&store).await;
    let mut seen = HashMap::new();
    db.sql("INSERT INTO shop.orders (n) SELECT seq FROM shop.seq_1_to_100");
    record(&mut seen, &run.take(100).await);

    // The server restarts: the run fails (transient), and the next run resumes from memory.
    db.restart();
    let ended = tokio::time::timeout(Duration::from_secs(60), &mut run.run)
        .await
        .expect("the run notices the restart")
        .expect("joins");
    assert!(matches!(ended, Err(SourceError::Transient(_))), "{ended:?}");
    let mut run = start(&src);
    db.sql("INSERT INTO shop.orders (n) SELECT seq FROM shop.seq_101_to_200");
    record(&mut seen, &run.take(100).await);

    // The reader records half of a transaction, then dies: a new source (a new process)
    // reads from the checkpoint, and what it gives again has the same dedup keys.
    db.sql("INSERT INTO shop.orders (n) SELECT seq FROM shop.seq_201_to_300");
    let mut half = Vec::new();
    for i in 0..100 {
        let mut e = run.next().await;
        if i < 50 {
            std::mem::replace(&mut e.ack, swoop_core::realtime::Ack::none())
                .settle(Outcome::Created);
        }
        half.push(e);
    }
    record(&mut seen, &half[..50]);
    run.run.abort();
    drop(half);
    let mut run = start(&source(&db, &store, json!({})));
    db.sql("INSERT INTO shop.orders (n) VALUES (301)");
    let mut again = Vec::new();
    while !again.iter().any(|e: &Event| data(e)["n"] == 301) {
        again.extend(run.take(1).await);
    }
    record(&mut seen, &again);
    let ns: HashSet<i64> = seen.values().copied().collect();
    assert_eq!(
        ns,
        (1..=301).collect::<HashSet<_>>(),
        "every row, once per dedup key"
    );
    assert_eq!(seen.len(), 301, "no row under two keys");
    run.stop().await.expect("a clean stop");
}

/// By hand: `cargo test -p swoop-plugins --release --no-default-features --features
/// core,mysql-cdc --test mysql_cdc bench_ -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark, run by hand with --ignored --nocapture"]
async fn bench_one_100000_row_transaction() {
    let (db, store) = server();
    let src = source(&db, &store, json!({}));
    let mut run = start(&src);
    streaming(&store).await;
    db.sql("INSERT INTO shop.orders (n, note) SELECT seq, 'benchmark' FROM shop.seq_1_to_100000");
    let started = Instant::now();
    let events = run.take(100_000).await;
    let took = started.elapsed();
    assert_eq!(data(&events[99_999])["n"], 100_000);
    println!(
        "one 100,000-row transaction read by the source alone in {:.2} s: {:.0} rows/s",
        took.as_secs_f64(),
        100_000.0 / took.as_secs_f64()
    );
    run.stop().await.expect("a clean stop");
}

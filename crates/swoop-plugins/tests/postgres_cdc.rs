//! The PostgreSQL CDC source alone (no engine: `SourceContext::channel`), against a real
//! PostgreSQL started with `wal_level = logical` by swoop-testkit: row changes in each output
//! format and delete mode, a 1,000-row transaction, the initial snapshot, a database restart,
//! and the slot's confirmed position never passing an unrecorded row.

#![cfg(feature = "postgres-cdc")]

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use swoop_core::realtime::{Event, Outcome, RealtimeSource, SourceContext, SourceError};
use swoop_plugins::postgres_cdc::{PostgresCdcConfig, PostgresCdcSource};
use swoop_testkit::postgres::Postgres;
use tokio::sync::mpsc::Receiver;
use tokio::task::JoinHandle;

const WAIT: Duration = Duration::from_secs(30);

fn server() -> Postgres {
    let pg = Postgres::start_logical();
    pg.create_database("shop");
    pg
}

fn source(pg: &Postgres, props: Value) -> Arc<PostgresCdcSource> {
    let mut v = json!({
        "id": "cdc",
        "type": "io.kestra.plugin.debezium.postgres.RealtimeTrigger",
        "hostname": "127.0.0.1",
        "port": pg.port(),
        "username": "postgres",
        "database": "shop",
    });
    for (k, x) in props.as_object().cloned().unwrap_or_default() {
        v[k] = x;
    }
    Arc::new(PostgresCdcSource::new(
        PostgresCdcConfig::from_json(&v).expect("a valid trigger"),
    ))
}

struct Running {
    events: Receiver<Event>,
    stop: Box<dyn FnOnce() + Send>,
    task: JoinHandle<Result<(), SourceError>>,
}

fn run(source: &Arc<PostgresCdcSource>) -> Running {
    let (ctx, events, stop) = SourceContext::channel("test/cdc/trigger", 2000);
    let source = source.clone();
    let task = tokio::spawn(async move { source.run(ctx).await });
    Running {
        events,
        stop: Box::new(move || stop.cancel()),
        task,
    }
}

impl Running {
    async fn next(&mut self) -> Event {
        tokio::time::timeout(WAIT, self.events.recv())
            .await
            .expect("an event within 30 s")
            .expect("the source is running")
    }

    async fn take(&mut self, n: usize) -> Vec<Event> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(self.next().await);
        }
        out
    }

    async fn stop(self) -> Result<(), SourceError> {
        (self.stop)();
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("the source stops within 30 s")
            .expect("joins")
    }
}

fn ack(events: Vec<Event>) -> Vec<Value> {
    events
        .into_iter()
        .map(|e| {
            let data = e.variables["data"].clone();
            e.ack.settle(Outcome::Created);
            data
        })
        .collect()
}

/// The slot's confirmed position (0 when the slot does not exist).
fn confirmed(pg: &Postgres, slot: &str) -> u64 {
    let text = pg.psql(
        "shop",
        &format!("SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '{slot}'"),
    );
    lsn(&text)
}

fn lsn(text: &str) -> u64 {
    let Some((hi, lo)) = text.trim().split_once('/') else {
        return 0;
    };
    (u64::from_str_radix(hi, 16).unwrap_or(0) << 32) | u64::from_str_radix(lo, 16).unwrap_or(0)
}

/// The commit LSN in a dedup key (`pg:<lsn>:<index>`).
fn commit_of(e: &Event) -> u64 {
    let key = e.dedup_key.as_deref().expect("a dedup key");
    lsn(key.split(':').nth(1).expect("pg:<lsn>:<index>"))
}

async fn wait_confirmed(pg: &Postgres, slot: &str, at_least: u64) {
    let deadline = Instant::now() + WAIT;
    while confirmed(pg, slot) < at_least {
        assert!(
            Instant::now() < deadline,
            "the slot was not confirmed past {at_least:#x}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the source streams (the slot is active).
async fn wait_streaming(pg: &Postgres, slot: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let active = pg.psql(
            "shop",
            &format!("SELECT active FROM pg_replication_slots WHERE slot_name = '{slot}'"),
        );
        if active == "t" {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the slot `{slot}` did not become active"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const TABLE: &str =
    "CREATE TABLE orders (id int PRIMARY KEY, status text, amount numeric, at timestamptz)";

/// Insert, update and delete of one row in `format`, with `deleted` mode.
async fn changes(format: &str, deleted: &str) -> Vec<Value> {
    let pg = server();
    pg.psql("shop", TABLE);
    let slot = format!("s_{}_{}", format.to_lowercase(), deleted.to_lowercase());
    let src = source(
        &pg,
        json!({"format": format, "deleted": deleted, "snapshotMode": "NEVER", "slotName": slot, "publicationName": slot}),
    );
    let mut running = run(&src);
    wait_streaming(&pg, &slot).await;
    pg.psql(
        "shop",
        "INSERT INTO orders VALUES (7, 'new', 12.50, '2026-01-01 10:00:00+00'); UPDATE orders SET status = 'paid' WHERE id = 7; DELETE FROM orders WHERE id = 7; INSERT INTO orders VALUES (8, 'new', 1, NULL)",
    );
    let n = if deleted == "DROP" { 3 } else { 4 };
    let events = running.take(n).await;
    for e in &events {
        assert_eq!(e.partition.as_deref(), Some("public.orders"));
        assert_eq!(e.variables["stream"], "shop.orders");
        assert!(
            e.key.as_deref().is_some_and(|k| k.contains("\"id\"")),
            "{:?}",
            e.key
        );
    }
    let data = ack(events);
    running.stop().await.expect("stops cleanly");
    data
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inline_changes() {
    let d = changes("INLINE", "ADD_FIELD").await;
    assert_eq!(d[0]["id"], 7);
    assert_eq!(d[0]["status"], "new");
    assert_eq!(d[0]["amount"], 12.5);
    assert_eq!(d[0]["at"], "2026-01-01T10:00:00Z");
    assert_eq!(d[0]["deleted"], false);
    assert_eq!(d[0]["metadata"]["operation"], "CREATE");
    assert_eq!(d[0]["metadata"]["source"]["table"], "orders");
    assert_eq!(d[0]["metadata"]["source"]["db"], "shop");
    assert_eq!(d[0]["metadata"]["source"]["snapshot"], "false");
    assert_eq!(d[1]["status"], "paid");
    assert_eq!(d[1]["metadata"]["operation"], "UPDATE");
    // The delete carries the before-image (the key, with the default replica identity).
    assert_eq!(d[2]["id"], 7);
    assert_eq!(d[2]["deleted"], true);
    assert_eq!(d[2]["metadata"]["operation"], "DELETE");
    assert_eq!(d[3]["id"], 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrap_changes() {
    let d = changes("WRAP", "ADD_FIELD").await;
    assert_eq!(d[0]["record"]["id"], 7);
    assert_eq!(d[0]["record"]["status"], "new");
    assert_eq!(d[0]["deleted"], false);
    assert_eq!(d[1]["record"]["status"], "paid");
    assert_eq!(d[2]["deleted"], true);
    assert_eq!(d[2]["metadata"]["operation"], "DELETE");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_changes() {
    let d = changes("RAW", "ADD_FIELD").await;
    assert_eq!(d[0]["key"], json!({"id": 7}));
    assert_eq!(d[0]["value"]["op"], "c");
    assert_eq!(d[0]["value"]["before"], Value::Null);
    assert_eq!(d[0]["value"]["after"]["status"], "new");
    assert_eq!(d[0]["value"]["source"]["connector"], "postgresql");
    assert_eq!(d[1]["value"]["op"], "u");
    assert_eq!(d[2]["value"]["op"], "d");
    assert_eq!(d[2]["value"]["before"]["id"], 7);
    assert_eq!(d[2]["value"]["after"], Value::Null);
    assert_eq!(d[2]["deleted"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_null_and_drop() {
    let d = changes("INLINE", "NULL").await;
    assert_eq!(d[2]["id"], Value::Null);
    assert_eq!(d[2]["metadata"]["operation"], "DELETE");
    assert!(d[2].get("deleted").is_none());
    let d = changes("INLINE", "DROP").await;
    let ops: Vec<&Value> = d.iter().map(|x| &x["metadata"]["operation"]).collect();
    assert_eq!(
        ops,
        ["CREATE", "UPDATE", "CREATE"],
        "the delete makes no event"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_of_1000_rows_is_confirmed_once_recorded() {
    let pg = server();
    pg.psql("shop", TABLE);
    let src = source(
        &pg,
        json!({"snapshotMode": "NEVER", "includedTables": "public.orders"}),
    );
    let mut running = run(&src);
    wait_streaming(&pg, "kestra").await;
    let before = confirmed(&pg, "kestra");
    pg.psql(
        "shop",
        "INSERT INTO orders SELECT n, 'new', n, now() FROM generate_series(1, 1000) n",
    );
    let events = running.take(1000).await;
    let commit = commit_of(&events[0]);
    assert!(commit > before);
    let keys: HashSet<String> = events.iter().filter_map(|e| e.dedup_key.clone()).collect();
    assert_eq!(keys.len(), 1000, "one dedup key per row");
    assert!(
        events.iter().all(|e| commit_of(e) == commit),
        "one transaction"
    );
    assert_eq!(
        events[999]
            .dedup_key
            .as_deref()
            .map(|k| k.ends_with(":999")),
        Some(true)
    );
    // Idle keepalives may move the slot, never to the unrecorded transaction's commit.
    assert!(
        confirmed(&pg, "kestra") <= commit,
        "confirmed before recorded"
    );
    ack(events);
    wait_confirmed(&pg, "kestra", commit + 1).await;
    running.stop().await.expect("stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_confirmed_position_does_not_pass_an_unrecorded_row() {
    let pg = server();
    pg.psql("shop", TABLE);
    let src = source(&pg, json!({"snapshotMode": "NEVER"}));
    let mut running = run(&src);
    wait_streaming(&pg, "kestra").await;
    pg.psql("shop", "INSERT INTO orders VALUES (1, 'a', 1, now())");
    pg.psql("shop", "INSERT INTO orders VALUES (2, 'b', 1, now())");
    let mut events = running.take(2).await;
    let second = events.pop().expect("two");
    let first = events.pop().expect("two");
    let (c1, c2) = (commit_of(&first), commit_of(&second));
    assert!(c1 < c2);
    second.ack.settle(Outcome::Created);
    // A third transaction, recorded too: the source has seen the acknowledgements by the time
    // its event arrives; the status interval is 0.5 s, so 2 s cover several updates.
    pg.psql("shop", "INSERT INTO orders VALUES (3, 'c', 1, now())");
    let third = running.next().await;
    let c3 = commit_of(&third);
    third.ack.settle(Outcome::Created);
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        assert!(
            confirmed(&pg, "kestra") <= c1,
            "confirmed past the unrecorded row"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    first.ack.settle(Outcome::Duplicate);
    wait_confirmed(&pg, "kestra", c3 + 1).await;
    running.stop().await.expect("stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_initial_snapshot_then_the_stream() {
    let pg = server();
    pg.psql("shop", TABLE);
    pg.psql("shop", "CREATE TABLE other (id int PRIMARY KEY)");
    pg.psql(
        "shop",
        "INSERT INTO orders SELECT n, 'old', n, NULL FROM generate_series(1, 2500) n; INSERT INTO other VALUES (1)",
    );
    let src = source(&pg, json!({"includedTables": ["public.orders"]}));
    let mut running = run(&src);
    let events = running.take(2500).await;
    let ids: HashSet<i64> = events
        .iter()
        .filter_map(|e| e.variables["data"]["id"].as_i64())
        .collect();
    assert_eq!(ids.len(), 2500, "every row once");
    assert!(
        events
            .iter()
            .all(|e| e.variables["data"]["metadata"]["operation"] == "READ")
    );
    assert_eq!(
        events[0].variables["data"]["metadata"]["source"]["snapshot"],
        "true"
    );
    assert_eq!(
        events[2499].variables["data"]["metadata"]["source"]["snapshot"],
        "last"
    );
    assert!(
        events[0]
            .dedup_key
            .as_deref()
            .is_some_and(|k| k.starts_with("pg:snapshot:"))
    );
    // Changes made during the snapshot come after it, from the stream.
    pg.psql(
        "shop",
        "UPDATE orders SET status = 'paid' WHERE id = 1; INSERT INTO other VALUES (2)",
    );
    assert_eq!(
        pg.psql(
            "shop",
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'kestra'"
        ),
        "0",
        "the slot exists only once the snapshot is recorded"
    );
    ack(events);
    let update = running.next().await;
    assert_eq!(update.variables["data"]["metadata"]["operation"], "UPDATE");
    assert_eq!(update.variables["data"]["status"], "paid");
    assert_eq!(
        update.partition.as_deref(),
        Some("public.orders"),
        "`other` is not included"
    );
    let update_commit = commit_of(&update);
    ack(vec![update]);
    // Confirmed once the transaction's Commit is read too (not only its row): stopping before
    // that would rightly replay the update on the next run.
    wait_confirmed(&pg, "kestra", update_commit + 1).await;
    running.stop().await.expect("stops cleanly");
    assert_eq!(
        pg.psql("shop", "SELECT count(*) FROM pg_replication_slots"),
        "1",
        "the temporary slot is gone"
    );
    // Next run: no snapshot again, only new changes.
    let mut running = run(&src);
    pg.psql("shop", "INSERT INTO orders VALUES (9999, 'new', 1, NULL)");
    let next = running.next().await;
    assert_eq!(next.variables["data"]["id"], 9999);
    running.stop().await.expect("stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_restart_resumes_from_the_confirmed_position() {
    let pg = server();
    pg.psql("shop", TABLE);
    let src = source(&pg, json!({"snapshotMode": "NEVER"}));
    let mut running = run(&src);
    wait_streaming(&pg, "kestra").await;
    pg.psql(
        "shop",
        "INSERT INTO orders SELECT n, 'a', n, NULL FROM generate_series(1, 10) n",
    );
    let first = running.take(10).await;
    let commit = commit_of(&first[0]);
    let mut keys: HashSet<String> = first.iter().filter_map(|e| e.dedup_key.clone()).collect();
    ack(first);
    wait_confirmed(&pg, "kestra", commit + 1).await;

    pg.restart();
    let ended = tokio::time::timeout(WAIT, running.task)
        .await
        .expect("the source notices the restart")
        .expect("joins");
    assert!(matches!(ended, Err(SourceError::Transient(_))), "{ended:?}");
    // Rows written while nothing consumes wait in the slot.
    pg.psql(
        "shop",
        "INSERT INTO orders SELECT n, 'b', n, NULL FROM generate_series(11, 20) n",
    );
    // PostgreSQL before 17 writes a slot's confirmed position to disk only at its next
    // checkpoint with other slot changes, so the first rows may come again: with the same
    // dedup keys (the store drops them), never with new ones.
    let mut running = run(&src);
    let mut ids = HashSet::new();
    let mut second = Vec::new();
    while ids.len() < 10 {
        let e = running.next().await;
        let id = e.variables["data"]["id"].as_i64().expect("an id");
        let key = e.dedup_key.clone().expect("a key");
        if id <= 10 {
            assert!(keys.contains(&key), "row {id} again under a new key {key}");
        } else {
            assert!(keys.insert(key), "row {id} twice in one run");
            ids.insert(id);
        }
        second.push(e);
    }
    assert_eq!(ids, (11..=20).collect(), "nothing lost");
    ack(second);
    running.stop().await.expect("stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_settings_on_the_server_are_fatal() {
    let pg = Postgres::start();
    pg.create_database("shop");
    let src = source(&pg, json!({"snapshotMode": "NEVER"}));
    let running = run(&src);
    let ended = tokio::time::timeout(WAIT, running.task)
        .await
        .expect("ends")
        .expect("joins");
    match ended {
        Err(SourceError::Fatal(m)) => assert!(m.contains("wal_level"), "{m}"),
        other => panic!("expected a fatal error, got {other:?}"),
    }
}

/// By hand: `cargo test --release -p swoop-plugins --features postgres-cdc --test postgres_cdc
/// bench_one_transaction -- --ignored --nocapture` (ROWS, 100,000 by default).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark, run by hand with --ignored --nocapture"]
async fn bench_one_transaction() {
    let rows: usize = std::env::var("ROWS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(100_000);
    let pg = server();
    pg.psql("shop", TABLE);
    let src = source(&pg, json!({"snapshotMode": "NEVER"}));
    let mut running = run(&src);
    wait_streaming(&pg, "kestra").await;
    pg.psql(
        "shop",
        &format!("INSERT INTO orders SELECT n, 'new', n, now() FROM generate_series(1, {rows}) n"),
    );
    let started = Instant::now();
    let mut commit = 0;
    for _ in 0..rows {
        let e = running.next().await;
        commit = commit_of(&e);
        e.ack.settle(Outcome::Created);
    }
    let elapsed = started.elapsed();
    wait_confirmed(&pg, "kestra", commit + 1).await;
    println!(
        "{rows} rows of one transaction read by the source alone in {:.2} s: {:.0} rows/s (from the commit)",
        elapsed.as_secs_f64(),
        rows as f64 / elapsed.as_secs_f64()
    );
    running.stop().await.expect("stops cleanly");
}

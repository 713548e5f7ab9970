//! Benchmarks of tasks that act on the world, one execution per Kafka record (ignored tests that
//! print figures; they assert only that every execution succeeded):
//!
//! - (a) one HTTP request per event, to an in-process axum server;
//! - (b) one PostgreSQL INSERT per event;
//! - (c) Kestra's realtime demo flow (Cassandra lookup, MongoDB insert).
//!
//! Each runs the engine in this process on a SQLite store (as `swoop server local` does), with
//! a Kafka RealtimeTrigger on tansu, twice: at a fixed rate (latency: send → SUCCESS p50/p99,
//! the send time is in the record) and as a burst of records already in the topic
//! (throughput: executions/s from the first creation to the last end). Then its floor: a bare
//! client in this process doing the same calls, 64 at a time (the engine runs up to
//! `maxInFlight` = 1000 at once), on the same servers. Connections: how many the HTTP server
//! accepted in all, how many PostgreSQL sessions were open at the end, and how many TCP
//! connections to the CQL and MongoDB servers were established at the end.
//!
//! ```sh
//! cargo test --release -p swoop --test bench_tasks -- --ignored --nocapture --test-threads 1
//! ```
//! `SWOOP_BENCH_RECORDS` (default 10000) and `SWOOP_BENCH_RATE` (default 1000/s) tune it.

#![cfg(all(
    feature = "kafka",
    feature = "http",
    feature = "jdbc-postgres",
    feature = "cassandra",
    feature = "mongodb"
))]

mod common;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::serve::ListenerExt;
use common::kafka::Broker;
use futures::StreamExt;
use rdkafka::producer::FutureRecord;
use serde_json::{Value, json};
use swoop_core::{Execution, State};
use swoop_engine::Engine;
use swoop_store::{ExecutionQuery, LocalStorage, SqliteStore, Store};

const FLOOR_CONCURRENCY: usize = 64;

fn records() -> usize {
    std::env::var("SWOOP_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
}

fn rate() -> u64 {
    std::env::var("SWOOP_BENCH_RATE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[(((p / 100.0) * (sorted.len() - 1) as f64).round() as usize).min(sorted.len() - 1)]
}

fn print_latency(name: &str, mut ms: Vec<f64>) {
    ms.sort_by(f64::total_cmp);
    println!(
        "  {name:<40} p50 {:>8.2} ms   p99 {:>8.2} ms   (n={})",
        percentile(&ms, 50.0),
        percentile(&ms, 99.0),
        ms.len()
    );
}

/// An order record: the tutorial's fields plus the send time.
fn order(i: usize, sent_us: u64) -> String {
    json!({
        "order_id": i.to_string(), "customer_name": format!("Customer {i}"),
        "customer_email": format!("c{i}@example.com"), "product_id": (i % 20 + 1).to_string(),
        "price": "166.89", "quantity": "1", "total": "166.89", "sent_us": sent_us,
    })
    .to_string()
}

/// Produces `n` orders to `topic`, at `rate` per second (0: as fast as possible).
async fn produce(broker: &Broker, topic: &str, n: usize, offset: usize, rate: u64) {
    let producer = broker.producer();
    let started = Instant::now();
    let mut pending = Vec::with_capacity(n);
    for i in 0..n {
        if rate > 0 {
            let due = started + Duration::from_secs_f64(i as f64 / rate as f64);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                tokio::time::sleep(wait).await;
            }
        }
        let payload = order(offset + i, now_us());
        let key = (offset + i).to_string();
        let record = FutureRecord::to(topic).payload(&payload).key(&key);
        pending.push(
            producer
                .send_result(record)
                .unwrap_or_else(|(e, _)| panic!("cannot queue record {i}: {e}")),
        );
    }
    for p in pending {
        p.await
            .expect("delivery")
            .unwrap_or_else(|(e, _)| panic!("not delivered: {e}"));
    }
}

struct Swoop {
    engine: Arc<Engine>,
    _dir: tempfile::TempDir,
}

async fn start_swoop() -> Swoop {
    let dir = tempfile::tempdir().expect("a scratch folder");
    let store: Arc<dyn Store> = SqliteStore::open_in(dir.path()).expect("the store");
    let storage = LocalStorage::open(dir.path().join("storage")).expect("storage");
    let engine = Engine::start_with_storage(
        store,
        Arc::new(swoop_plugins::registry()),
        Arc::new(storage),
    )
    .await
    .expect("the engine");
    Swoop { engine, _dir: dir }
}

fn flow(namespace: &str, topic: &str, bootstrap: &str, tasks: &str) -> String {
    format!(
        r#"id: bench
namespace: {namespace}
triggers:
  - id: orders
    type: io.kestra.plugin.kafka.RealtimeTrigger
    topic: {topic}
    groupId: bench-{topic}
    properties:
      bootstrap.servers: "{bootstrap}"
    serdeProperties:
      valueDeserializer: JSON
tasks:
{tasks}"#
    )
}

async fn all_executions(store: &dyn Store, namespace: &str) -> Vec<Execution> {
    let mut all = Vec::new();
    for page in 1.. {
        let batch = store
            .search_executions(&ExecutionQuery {
                namespace: Some(namespace.to_string()),
                page,
                size: 1000,
                ..Default::default()
            })
            .await
            .expect("search");
        if batch.results.is_empty() {
            break;
        }
        all.extend(batch.results);
    }
    all
}

/// Waits for `n` executions of `namespace` to end (from the engine's events), then returns
/// send→SUCCESS latencies and executions/s (first creation to last end).
async fn measure(
    engine: &Engine,
    namespace: &str,
    n: usize,
    run: impl Future<Output = ()>,
) -> (Vec<f64>, f64) {
    let mut events = engine.subscribe();
    run.await;
    let mut ended = all_executions(engine.store().as_ref(), namespace)
        .await
        .iter()
        .filter(|e| e.state.current.is_terminal())
        .count();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
    while ended < n {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Ok(ev)) if ev.state.is_terminal() => ended += 1,
            Ok(Ok(_)) => {}
            Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => {
                engine.store().flush().await.expect("flush");
                ended = all_executions(engine.store().as_ref(), namespace)
                    .await
                    .iter()
                    .filter(|e| e.state.current.is_terminal())
                    .count();
            }
            Ok(Err(e)) => panic!("engine events: {e}"),
            Err(_) => panic!("only {ended} of {n} executions ended in 600 s"),
        }
    }
    // Counted from events, which may include duplicates of the same end: confirm in the store.
    engine.store().flush().await.expect("flush");
    let executions = loop {
        let all = all_executions(engine.store().as_ref(), namespace).await;
        if all.iter().filter(|e| e.state.current.is_terminal()).count() >= n {
            break all;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let failed: Vec<&Execution> = executions
        .iter()
        .filter(|e| e.state.current != State::Success)
        .collect();
    assert!(
        failed.is_empty(),
        "{} executions did not succeed, e.g. {:?}",
        failed.len(),
        failed.first().map(|e| &e.error)
    );
    let mut latencies = Vec::new();
    let (mut first, mut last) = (None, None);
    for e in &executions {
        let sent = e
            .trigger
            .as_ref()
            .and_then(|t| t.variables.get("value"))
            .and_then(|v| v["sent_us"].as_u64());
        let created = e.state.histories[0].date;
        first = Some(first.map_or(created, |f: chrono::DateTime<chrono::Utc>| f.min(created)));
        if let Some(end) = e.state.end_date() {
            last = last.max(Some(end));
            if let Some(sent) = sent {
                latencies
                    .push((end.timestamp_micros() as u64).saturating_sub(sent) as f64 / 1000.0);
            }
        }
    }
    let busy = match (first, last) {
        (Some(a), Some(b)) => (b - a).to_std().unwrap_or_default().as_secs_f64(),
        _ => f64::NAN,
    };
    (latencies, executions.len() as f64 / busy.max(1e-9))
}

/// Runs the scenario through swoop: a fixed-rate run, then a burst; prints the figures.
async fn run_swoop(name: &str, broker: &Broker, tasks: &str, after: impl Fn() -> String) {
    let n = records();
    let swoop = start_swoop().await;
    // Fixed rate, for latency.
    let ns = format!("bench.{name}.rate");
    let topic = format!("bench-{name}-rate");
    broker.create_topic(&topic, 3).await;
    swoop
        .engine
        .put_flow(&flow(&ns, &topic, &broker.bootstrap(), tasks))
        .await
        .expect("the flow is valid");
    // Let the consumer join before producing, so latency is not startup time.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (lat, _) = measure(
        &swoop.engine,
        &ns,
        n / 2,
        produce(broker, &topic, n / 2, 0, rate()),
    )
    .await;
    println!("\n{name}: swoop, {} records at {}/s", n / 2, rate());
    print_latency("send → SUCCESS", lat);
    // Burst: the records are in the topic before the flow exists.
    let ns = format!("bench.{name}.burst");
    let topic = format!("bench-{name}-burst");
    broker.create_topic(&topic, 3).await;
    produce(broker, &topic, n, n, 0).await;
    let started = Instant::now();
    let (_, per_s) = measure(&swoop.engine, &ns, n, async {
        swoop
            .engine
            .put_flow(&flow(&ns, &topic, &broker.bootstrap(), tasks))
            .await
            .expect("the flow is valid");
    })
    .await;
    println!(
        "{name}: swoop, burst of {n}: {per_s:.0} executions/s ({:.2} s from the flow's creation to the last end)",
        started.elapsed().as_secs_f64()
    );
    println!("  connections: {}", after());
    swoop.engine.shutdown().await;
}

/// Runs `n` calls of `call`, `FLOOR_CONCURRENCY` at a time; prints latency and calls/s.
async fn run_floor<F, Fut>(name: &str, n: usize, call: F)
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = ()>,
{
    let started = Instant::now();
    let latencies: Vec<f64> = futures::stream::iter(0..n)
        .map(|i| {
            let fut = call(i);
            async move {
                let t = Instant::now();
                fut.await;
                t.elapsed().as_secs_f64() * 1000.0
            }
        })
        .buffer_unordered(FLOOR_CONCURRENCY)
        .collect()
        .await;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{name}: floor (bare client, {FLOOR_CONCURRENCY} in flight), {n} calls: {:.0} calls/s",
        n as f64 / secs
    );
    print_latency("call", latencies);
}

/// TCP connections established to `port` on loopback (client side), from /proc/net/tcp.
fn established_to(port: u16) -> usize {
    let text = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    text.lines()
        .skip(1)
        .filter(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            cols.len() > 3
                && cols[3] == "01"
                && cols[2].rsplit(':').next() == Some(&format!("{port:04X}"))
        })
        .count()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

#[test]
#[ignore = "a benchmark: run by hand (see the module comment)"]
fn bench_http_request_per_event() {
    let rt = runtime();
    rt.block_on(async {
        let broker = Broker::start();
        let accepted = Arc::new(AtomicU64::new(0));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let counter = accepted.clone();
        let listener = listener.tap_io(move |_| {
            counter.fetch_add(1, Ordering::Relaxed);
        });
        let app = axum::Router::new().route(
            "/orders",
            axum::routing::post(|body: String| async move { format!("{{\"received\": {}}}", body.len()) }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        let tasks = format!(
            "  - id: call\n    type: io.kestra.plugin.core.http.Request\n    uri: http://127.0.0.1:{port}/orders\n    method: POST\n    body: \"{{{{ trigger.value | toJson }}}}\"\n"
        );
        let seen = accepted.clone();
        run_swoop("http", &broker, &tasks, || format!("{} accepted by the HTTP server in all", seen.load(Ordering::Relaxed))).await;
        let before = accepted.load(Ordering::Relaxed);
        let client = reqwest::Client::new();
        let url = format!("http://127.0.0.1:{port}/orders");
        run_floor("http", records(), |i| {
            let (client, url) = (client.clone(), url.clone());
            async move {
                let r = client.post(url).body(order(i, 0)).send().await.expect("request");
                assert!(r.status().is_success());
                r.bytes().await.expect("body");
            }
        })
        .await;
        println!("  connections: {} accepted for the floor", accepted.load(Ordering::Relaxed) - before);
    });
}

#[test]
#[ignore = "a benchmark: run by hand (see the module comment)"]
fn bench_postgres_insert_per_event() {
    let rt = runtime();
    let pg = swoop_testkit::postgres::Postgres::start();
    let url = pg.create_database("bench");
    pg.psql(
        "bench",
        "CREATE TABLE orders (order_id text PRIMARY KEY, customer text, payload text)",
    );
    let sessions = || {
        pg.psql(
            "bench",
            "SELECT count(*) FROM pg_stat_activity WHERE datname = 'bench' AND application_name <> 'psql'",
        )
    };
    rt.block_on(async {
        let broker = Broker::start();
        let tasks = format!(
            "  - id: insert\n    type: io.kestra.plugin.jdbc.postgresql.Query\n    url: {url}\n    username: postgres\n    sql: INSERT INTO orders (order_id, customer, payload) VALUES (:id, :customer, :payload)\n    parameters:\n      id: \"{{{{ trigger.value | jq('.order_id') | first }}}}\"\n      customer: \"{{{{ trigger.value | jq('.customer_name') | first }}}}\"\n      payload: \"{{{{ trigger.value | toJson }}}}\"\n"
        );
        run_swoop("postgres", &broker, &tasks, || format!("{} PostgreSQL sessions open at the end", sessions())).await;
        let (client, connection) = tokio_postgres::connect(
            &format!("host=127.0.0.1 port={} user=postgres dbname=bench", pg.port()),
            tokio_postgres::NoTls,
        )
        .await
        .expect("connect");
        tokio::spawn(connection);
        let client = Arc::new(client);
        let statement = client
            .prepare("INSERT INTO orders (order_id, customer, payload) VALUES ($1, $2, $3)")
            .await
            .expect("prepare");
        run_floor("postgres", records(), |i| {
            let (client, statement) = (client.clone(), statement.clone());
            async move {
                let id = format!("floor-{i}");
                let payload = order(i, 0);
                client
                    .execute(&statement, &[&id, &"Customer", &payload])
                    .await
                    .expect("insert");
            }
        })
        .await;
        println!("  connections: 1 (one connection, pipelined)");
    });
}

#[test]
#[ignore = "a benchmark: run by hand (see the module comment)"]
fn bench_realtime_demo_flow() {
    let rt = runtime();
    let cql = swoop_testkit::cql::CqlServer::start();
    cql.execute_script(
        "CREATE KEYSPACE IF NOT EXISTS kestra WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1};
         CREATE TABLE kestra.products (product_id int, product_name text, product_category text, brand text, PRIMARY KEY (product_id));",
    )
    .expect("schema");
    for id in 1..=20 {
        cql.execute(&format!(
            "INSERT INTO kestra.products (product_id, product_name, product_category, brand) VALUES ({id}, 'name {id}', 'category {id}', 'brand {id}')"
        ))
        .expect("a product");
    }
    let mongo = swoop_testkit::mongo::Mongo::start();
    let (cql_port, mongo_port, mongo_uri) = (cql.port(), mongo.port(), mongo.uri());
    rt.block_on(async {
        let broker = Broker::start();
        let tasks = format!(
            r#"  - id: get_product_from_cassandra
    type: io.kestra.plugin.cassandra.Query
    session:
      endpoints:
        - hostname: 127.0.0.1
          port: {cql_port}
      localDatacenter: datacenter1
    cql: SELECT * FROM kestra.products WHERE product_id = {{{{ trigger.value | jq('.product_id') | first }}}}
    fetchOne: true
  - id: insert_into_mongodb
    type: io.kestra.plugin.mongodb.InsertOne
    connection:
      uri: "{mongo_uri}"
    database: kestra
    collection: detailed_orders
    document: |
      {{"order_id": "{{{{ trigger.value | jq('.order_id') | first }}}}",
       "customer_name": "{{{{ trigger.value | jq('.customer_name') | first }}}}",
       "product": {{"id": "{{{{ outputs.get_product_from_cassandra.row.product_id }}}}",
                   "name": "{{{{ outputs.get_product_from_cassandra.row.product_name }}}}"}}}}
"#
        );
        run_swoop("demo", &broker, &tasks, || {
            format!(
                "{} established to the CQL server, {} to MongoDB, at the end",
                established_to(cql_port),
                established_to(mongo_port)
            )
        })
        .await;
        let session = Arc::new(
            scylla::client::session_builder::SessionBuilder::new()
                .known_node(format!("127.0.0.1:{cql_port}"))
                .build()
                .await
                .expect("a CQL session"),
        );
        let lookup = session
            .prepare("SELECT product_id, product_name FROM kestra.products WHERE product_id = ?")
            .await
            .expect("prepare");
        let client = mongodb::Client::with_uri_str(&mongo_uri).await.expect("a MongoDB client");
        let collection = client
            .database("kestra")
            .collection::<bson::Document>("floor_orders");
        run_floor("demo", records(), |i| {
            let (session, lookup, collection) = (session.clone(), lookup.clone(), collection.clone());
            async move {
                let rows = session
                    .execute_unpaged(&lookup, ((i % 20 + 1) as i32,))
                    .await
                    .expect("lookup")
                    .into_rows_result()
                    .expect("rows");
                let (id, name) = rows
                    .first_row::<(i32, String)>()
                    .expect("a product");
                let order: Value = serde_json::from_str(&order(i, 0)).expect("order");
                let doc = bson::doc! {
                    "order_id": order["order_id"].as_str().unwrap_or_default(),
                    "customer_name": order["customer_name"].as_str().unwrap_or_default(),
                    "product": { "id": id.to_string(), "name": name },
                };
                collection.insert_one(doc).await.expect("insert");
            }
        })
        .await;
        println!(
            "  connections: {} established to the CQL server, {} to MongoDB, at the end",
            established_to(cql_port),
            established_to(mongo_port)
        );
    });
}

//! Kestra's realtime tutorial end to end ("Using Realtime Triggers in Kestra", the
//! `get_detailed_order` flow): each order record on Kafka is looked up in Cassandra and written,
//! enriched with its product, to MongoDB. Real servers on loopback: tansu (Kafka), the CQL test
//! server (kassandra behind a shim), secantusdb (MongoDB wire protocol), and `swoop server
//! local` as a child process.
//!
//! 1. The tutorial's flow, verbatim but for hosts and ports: 1,000 orders → exactly 1,000
//!    documents, each with the product of its order.
//! 2. A second burst with a `kill -9` of swoop in the middle: every order still has its document.
//!    The insert that was running at the kill runs again (tasks are at least once), so an order
//!    may have two documents here.
//! 3. The idempotent form (an Update with `upsert: true` keyed by the order id) through the same
//!    kill: exactly one document per order.

#![cfg(all(feature = "kafka", feature = "cassandra", feature = "mongodb"))]

mod common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use common::kafka::{Broker, produce};
use common::{Server, free_port};
use serde_json::{Value, json};
use swoop_testkit::cql::CqlServer;
use swoop_testkit::mongo::Mongo;

/// How long any phase may take before the test fails.
const WAIT: Duration = Duration::from_secs(120);
/// Pause between two counts of a MongoDB collection (nothing announces a new document).
const POLL: Duration = Duration::from_millis(100);

const CATEGORIES: [&str; 5] = ["Electronics", "Household", "Clothing", "Books", "Garden"];

/// Kestra's `products.csv` has 20 products; the tutorial shows five of them, the rest are made
/// up in the same shape.
fn products() -> Vec<(i32, String, String, String)> {
    let shown: HashMap<i32, (&str, &str, &str)> = HashMap::from([
        (1, ("gomez", "Electronics", "streamline turn-key systems")),
        (2, ("wolfe", "Household", "morph viral applications")),
        (18, ("lewis", "Clothing", "deliver integrated interfaces")),
        (19, ("crawford-gaines", "Books", "monetize B2B ROI")),
        (
            20,
            (
                "wolfe",
                "Electronics",
                "envisioneer cross-media convergence",
            ),
        ),
    ]);
    (1..=20)
        .map(|id| match shown.get(&id) {
            Some((name, category, brand)) => (
                id,
                name.to_string(),
                category.to_string(),
                brand.to_string(),
            ),
            None => (
                id,
                format!("product-{id}"),
                CATEGORIES[id as usize % CATEGORIES.len()].to_string(),
                format!("brand number {id}"),
            ),
        })
        .collect()
}

fn load_products(cql: &CqlServer) {
    cql.execute_script(
        // The tutorial's setup CQL, but for `keyspace` in capitals and no space before the map's
        // colons, which the test server's parser (kassandra) needs.
        "CREATE KEYSPACE IF NOT EXISTS kestra WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1};
         CREATE TABLE kestra.products (
            product_id int,
            product_name text,
            product_category text,
            brand text,
            PRIMARY KEY (product_id));",
    )
    .unwrap_or_else(|e| panic!("cannot create the products table: {e}\n{}", cql.log()));
    for (id, name, category, brand) in products() {
        cql.execute(&format!(
            "INSERT INTO kestra.products (product_id, product_name, product_category, brand) VALUES ({id}, '{name}', '{category}', '{brand}')"
        ))
        .unwrap_or_else(|e| panic!("cannot insert product {id}: {e}"));
    }
}

/// An order as the tutorial's producer writes it (every field a string, from the CSV).
fn order(n: usize) -> String {
    let product = n % 20 + 1;
    json!({
        "order_id": n.to_string(),
        "customer_name": format!("Customer {n}"),
        "customer_email": format!("customer{n}@example.com"),
        "product_id": product.to_string(),
        "price": format!("{}.{:02}", 10 + n % 90, n % 100),
        "quantity": "1",
        "total": format!("{}.{:02}", 10 + n % 90, n % 100),
    })
    .to_string()
}

/// The tutorial's `insert_into_mongodb` document, as written there.
const TUTORIAL_DOCUMENT: &str = r#"      {
        "order_id": "{{ trigger.value | jq('.order_id') | first }}",
        "customer_name": "{{ trigger.value | jq('.customer_name') | first }}",
        "customer_email": "{{ trigger.value | jq('.customer_email') | first }}",
        "product_id": "{{ trigger.value | jq('.product_id') | first }}",
        "price": "{{ trigger.value | jq('.price') | first }}",
        "quantity": "{{ trigger.value | jq('.quantity') | first }}",
        "total": "{{ trigger.value | jq('.total') | first }}",
        "product": {
          "id": "{{ outputs.get_product_from_cassandra.row.product_id }}",
          "name": "{{ outputs.get_product_from_cassandra.row.product_name }}",
          "brand": "{{ outputs.get_product_from_cassandra.row.brand }}",
          "category": "{{ outputs.get_product_from_cassandra.row.product_category }}"
        }
      }"#;

/// The tutorial's flow; `idempotent` swaps InsertOne for an upsert keyed by the order id.
fn flow(
    id: &str,
    topic: &str,
    cql_port: u16,
    mongo_uri: &str,
    kafka: &str,
    idempotent: bool,
) -> String {
    let insert = if idempotent {
        format!(
            r#"  - id: insert_into_mongodb
    type: "io.kestra.plugin.mongodb.Update"
    connection:
      uri: "{mongo_uri}"
    database: "kestra"
    collection: "{topic}"
    operation: REPLACE_ONE
    upsert: true
    filter:
      order_id: "{{{{ trigger.value | jq('.order_id') | first }}}}"
    document: |
{TUTORIAL_DOCUMENT}
"#
        )
    } else {
        format!(
            r#"  - id: insert_into_mongodb
    type: "io.kestra.plugin.mongodb.InsertOne"
    connection:
      uri: "{mongo_uri}"
    database: "kestra"
    collection: "{topic}"
    document: |
{TUTORIAL_DOCUMENT}
"#
        )
    };
    format!(
        r#"id: {id}
namespace: dev

tasks:
  - id: get_product_from_cassandra
    type: io.kestra.plugin.cassandra.Query
    session:
      endpoints:
        - hostname: 127.0.0.1
          port: {cql_port}
      localDatacenter: datacenter1
    cql: SELECT * FROM kestra.products WHERE product_id = {{{{ trigger.value | jq('.product_id') | first }}}}
    fetchOne: true

{insert}
triggers:
  - id: daily
    type: io.kestra.plugin.kafka.RealtimeTrigger
    topic: {topic}
    properties:
      bootstrap.servers: {kafka}
    serdeProperties:
      valueDeserializer: JSON
    groupId: kestraConsumer-{topic}
"#
    )
}

struct Demo {
    broker: Broker,
    cql: CqlServer,
    mongo: Mongo,
    rt: tokio::runtime::Runtime,
    data: tempfile::TempDir,
    flows: tempfile::TempDir,
    port: u16,
}

impl Demo {
    fn new() -> Demo {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime");
        let cql = CqlServer::start();
        load_products(&cql);
        Demo {
            broker: Broker::start(),
            cql,
            mongo: Mongo::start(),
            rt,
            data: tempfile::tempdir().expect("a data folder"),
            flows: tempfile::tempdir().expect("a flows folder"),
            port: free_port(),
        }
    }

    fn add_flow(&self, id: &str, topic: &str, idempotent: bool) {
        self.rt.block_on(self.broker.create_topic(topic, 3));
        let yaml = flow(
            id,
            topic,
            self.cql.port(),
            &self.mongo.uri(),
            &self.broker.bootstrap(),
            idempotent,
        );
        std::fs::write(self.flows.path().join(format!("{id}.yml")), yaml).expect("write the flow");
    }

    fn server(&self) -> Server {
        Server::start(self.data.path(), Some(self.flows.path()), self.port)
    }

    fn produce(&self, topic: &str, orders: std::ops::Range<usize>) {
        let values: Vec<String> = orders.map(order).collect();
        self.rt
            .block_on(produce(&self.broker.producer(), topic, 3, &values));
    }

    fn documents(&self, collection: &str) -> Vec<Value> {
        self.rt
            .block_on(self.mongo.find("kestra", collection, json!({})))
    }

    fn count(&self, collection: &str) -> u64 {
        self.rt
            .block_on(self.mongo.count("kestra", collection, json!({})))
    }

    /// Waits until `collection` holds at least `n` documents.
    fn wait_for_count(&self, collection: &str, n: u64, server: &Server) {
        let deadline = Instant::now() + WAIT;
        loop {
            let count = self.count(collection);
            if count >= n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{collection}: {count} documents of {n} after {WAIT:?}; triggers: {}",
                triggers(server.port)
            );
            std::thread::sleep(POLL);
        }
    }

    /// Waits until every order of `orders` has a document in `collection`.
    fn wait_for_orders(&self, collection: &str, orders: std::ops::Range<usize>, server: &Server) {
        let deadline = Instant::now() + WAIT;
        loop {
            let seen = order_ids(&self.documents(collection));
            let missing = orders
                .clone()
                .filter(|n| !seen.contains(&n.to_string()))
                .count();
            if missing == 0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{collection}: {missing} orders of {orders:?} have no document after {WAIT:?}; triggers: {}",
                triggers(server.port)
            );
            std::thread::sleep(POLL);
        }
    }
}

fn triggers(port: u16) -> String {
    common::http(port, "GET", "/api/v1/triggers/search", None)
        .map(|(_, body)| body)
        .unwrap_or_else(|e| e.to_string())
}

fn order_ids(docs: &[Value]) -> HashSet<String> {
    docs.iter()
        .filter_map(|d| d["order_id"].as_str().map(str::to_string))
        .collect()
}

/// Each document holds its order's fields and the product the order names.
fn check_documents(docs: &[Value]) {
    let products: HashMap<String, (i32, String, String, String)> = products()
        .into_iter()
        .map(|p| (p.0.to_string(), p))
        .collect();
    for doc in docs {
        let n: usize = doc["order_id"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("a document without an order id: {doc}"));
        let expected: Value = serde_json::from_str(&order(n)).expect("an order");
        for field in [
            "customer_name",
            "customer_email",
            "product_id",
            "price",
            "total",
        ] {
            assert_eq!(doc[field], expected[field], "{field} of {doc}");
        }
        let product_id = expected["product_id"].as_str().unwrap_or_default();
        let (id, name, category, brand) = &products[product_id];
        assert_eq!(doc["product"]["id"], json!(id.to_string()), "{doc}");
        assert_eq!(doc["product"]["name"], json!(name), "{doc}");
        assert_eq!(doc["product"]["category"], json!(category), "{doc}");
        assert_eq!(doc["product"]["brand"], json!(brand), "{doc}");
    }
}

/// Produces `orders` while swoop runs, `kill -9`s it once `kill_after` documents exist, starts
/// it again and waits until every order has a document.
fn burst_with_kill(demo: &Demo, topic: &str, orders: std::ops::Range<usize>, kill_after: u64) {
    let mut server = demo.server();
    demo.produce(topic, orders.clone());
    demo.wait_for_count(topic, kill_after, &server);
    server.kill_9();
    // Orders before this burst have their documents already: all of them make `orders.end`.
    let before_restart = demo.count(topic);
    assert!(
        (before_restart as usize) < orders.end,
        "the kill came after the last order ({before_restart} documents): the test proves nothing"
    );
    let server = demo.server();
    demo.wait_for_orders(topic, orders, &server);
}

fn assert_no_failed_executions(port: u16) {
    let failed: Vec<Value> = common::executions_in(port, "dev")
        .into_iter()
        .filter(|e| e["state"]["current"] == "FAILED")
        .collect();
    assert!(failed.is_empty(), "failed executions: {failed:#?}");
}

#[test]
fn kestra_realtime_tutorial_end_to_end() {
    let demo = Demo::new();
    demo.add_flow("get_detailed_order", "orders", false);

    // 1. The tutorial as written: 1,000 orders, 1,000 documents, each with its product.
    let server = demo.server();
    demo.produce("orders", 0..1000);
    demo.wait_for_count("orders", 1000, &server);
    let docs = demo.documents("orders");
    assert_eq!(docs.len(), 1000, "exactly one document per order");
    assert_eq!(order_ids(&docs).len(), 1000);
    check_documents(&docs);
    assert_no_failed_executions(server.port);
    drop(server);

    // 2. A second burst with a kill -9 in the middle: none lost (the insert running at the kill
    //    may have run twice).
    burst_with_kill(&demo, "orders", 1000..3000, 1600);
    let docs = demo.documents("orders");
    assert_eq!(order_ids(&docs).len(), 3000, "every order has its document");
    check_documents(&docs);
    assert!(docs.len() >= 3000);
    eprintln!(
        "InsertOne through kill -9: {} documents for 3000 orders ({} duplicates)",
        docs.len(),
        docs.len() - 3000
    );
}

#[test]
fn idempotent_form_gives_one_document_per_order_through_kill_9() {
    let demo = Demo::new();
    demo.add_flow("get_detailed_order_idempotent", "orders_upsert", true);
    burst_with_kill(&demo, "orders_upsert", 0..2000, 700);
    let docs = demo.documents("orders_upsert");
    assert_eq!(order_ids(&docs).len(), 2000, "every order has its document");
    assert_eq!(docs.len(), 2000, "exactly one document per order");
    check_documents(&docs);
}

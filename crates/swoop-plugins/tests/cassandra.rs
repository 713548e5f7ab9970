//! The Cassandra Query task against a real CQL server on loopback: swoop-testkit's
//! `swoop-cql-test-server` (kassandra behind a system-table shim), driven by the scylla driver.
#![cfg(feature = "cassandra")]

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use swoop_core::ion::IonReader;
use swoop_core::registry::{RunnableTask, TaskError};
use swoop_core::resources::SharedResources;
use swoop_core::testing::{TestRunContext, build_task};
use swoop_testkit::cql::{Bind, CqlServer};
use tokio::io::BufReader;

const QUERY: &str = "io.kestra.plugin.cassandra.standard.Query";
const ALIAS: &str = "io.kestra.plugin.cassandra.Query";

fn build(props: Value) -> Result<Arc<dyn RunnableTask>, String> {
    build_task(&swoop_plugins::registry(), QUERY, props)
}

fn session(port: u16) -> Value {
    json!({"endpoints": [{"hostname": "127.0.0.1", "port": port}], "localDatacenter": "datacenter1"})
}

async fn run(
    ctx: &TestRunContext,
    props: Value,
) -> Result<serde_json::Map<String, Value>, TaskError> {
    let task = build(props).expect("the task builds");
    tokio::time::timeout(Duration::from_secs(60), task.run(ctx))
        .await
        .expect("the task finishes within 60 s")
}

/// Kestra's tutorial table, with 20 products.
fn load_products(server: &CqlServer) {
    let mut script = String::from(
        "CREATE KEYSPACE IF NOT EXISTS kestra WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1};
         CREATE TABLE kestra.products (product_id int, product_name text, product_category text, brand text, PRIMARY KEY (product_id));",
    );
    let categories = ["Electronics", "Books", "Garden", "Toys"];
    for id in 1..=20 {
        script.push_str(&format!(
            "INSERT INTO kestra.products (product_id, product_name, product_category, brand) VALUES ({id}, 'product {id}', '{}', 'brand {}');",
            categories[id % 4],
            id % 3
        ));
    }
    server
        .execute_script(&script)
        .unwrap_or_else(|e| panic!("{e}\n{}", server.log()));
}

#[tokio::test]
async fn tutorial_fetch_one_reads_product_20() {
    let server = CqlServer::start();
    load_products(&server);
    let ctx = TestRunContext::new(json!({}));
    let out = run(
        &ctx,
        json!({
            "session": session(server.port()),
            "cql": "SELECT * FROM kestra.products WHERE product_id = 20",
            "fetchOne": true,
        }),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", server.log()));
    let row = &out["row"];
    assert_eq!(row["product_id"], json!(20));
    assert_eq!(row["product_name"], json!("product 20"));
    assert_eq!(row["product_category"], json!("Electronics"));
    assert_eq!(row["brand"], json!("brand 2"));
    assert_eq!(out["size"], json!(1));
    assert!(out["bytes"].as_u64().unwrap() > 0);
    assert!(out.get("rows").is_none() && out.get("uri").is_none());
}

#[tokio::test]
async fn each_fetch_type_and_the_deprecated_flags() {
    let server = CqlServer::start();
    load_products(&server);
    let ctx = TestRunContext::new(json!({"inputs": {"kind": "FETCH"}}));
    let base = |extra: Value| {
        let mut p = json!({"session": session(server.port()), "cql": "SELECT product_id, brand FROM kestra.products"});
        if let (Some(p), Value::Object(e)) = (p.as_object_mut(), extra) {
            p.extend(e);
        }
        p
    };

    // FETCH (through a template): every row.
    let out = run(&ctx, base(json!({"fetchType": "{{ inputs.kind }}"})))
        .await
        .unwrap();
    assert_eq!(out["size"], json!(20));
    let mut ids: Vec<i64> = out["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["product_id"].as_i64().unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids, (1..=20).collect::<Vec<_>>());

    // NONE (the default): no rows in the outputs.
    let out = run(&ctx, base(json!({}))).await.unwrap();
    assert!(out.get("rows").is_none() && out.get("row").is_none() && out.get("size").is_none());
    assert!(ctx.messages().iter().any(|m| m == "FetchType is NONE"));

    // The deprecated flags win over fetchType: fetchOne > store > fetch.
    let out = run(
        &ctx,
        base(json!({"fetchType": "FETCH", "fetchOne": true, "store": true})),
    )
    .await
    .unwrap();
    assert!(out.get("row").is_some() && out.get("uri").is_none());
    let out = run(
        &ctx,
        base(json!({"fetchType": "FETCH_ONE", "store": true, "fetch": true})),
    )
    .await
    .unwrap();
    assert_eq!(out["size"], json!(20));
    assert!(out["uri"].as_str().unwrap().ends_with(".ion"));
    let out = run(&ctx, base(json!({"fetchType": "NONE", "fetch": "true"})))
        .await
        .unwrap();
    assert_eq!(out["rows"].as_array().unwrap().len(), 20);

    // A statement without rows, with FETCH: no rows, no error.
    let out = run(
        &ctx,
        json!({"session": session(server.port()), "fetchType": "FETCH",
               "cql": "INSERT INTO kestra.products (product_id, product_name) VALUES (21, 'new')"}),
    )
    .await
    .unwrap();
    assert_eq!(out["size"], json!(0));
    assert_eq!(out["rows"], json!([]));
    let out = run(
        &ctx,
        json!({"session": session(server.port()), "fetchType": "FETCH_ONE",
               "cql": "SELECT product_name, brand FROM kestra.products WHERE product_id = 21"}),
    )
    .await
    .unwrap();
    assert_eq!(out["row"], json!({"product_name": "new", "brand": null}));
}

/// The types the test server stores (it has no decimal, varint, duration, time, smallint,
/// tinyint, timeuuid or tuple values; `cells.rs` unit-tests those).
#[tokio::test]
async fn cell_types_map_to_json() {
    let server = CqlServer::start();
    server
        .execute_script(
            "CREATE KEYSPACE t WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1};
             CREATE TABLE t.types (id int PRIMARY KEY, big bigint, s text, a ascii, b boolean,
                 f float, d double, u uuid, ip inet, ts timestamp, dt date, bl blob,
                 l list<int>, st set<text>, m map<text, int>)",
        )
        .unwrap_or_else(|e| panic!("{e}\n{}", server.log()));
    server
        .execute_with(
            "INSERT INTO t.types (id, big, s, a, b, f, d, u, ip, ts, dt, bl, l, st, m)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            &[
                Bind::Int(1),
                Bind::BigInt(9_000_000_000),
                Bind::Text("héllo".into()),
                Bind::Text("plain".into()),
                Bind::Bool(true),
                Bind::Float(1.1),
                Bind::Double(2.25),
                Bind::Uuid(0x6a6b5d86_1c4f_4b1f_9e9e_0e7c3c7b5e11),
                Bind::Inet("10.0.0.1".parse().unwrap()),
                Bind::Timestamp(1_706_695_200_123),
                Bind::Date(19_782),
                Bind::Blob(b"hello".to_vec()),
                Bind::List(vec![Bind::Int(1), Bind::Int(2), Bind::Int(3)]),
                Bind::List(vec![Bind::Text("x".into()), Bind::Text("y".into())]),
                Bind::Map(vec![(Bind::Text("k".into()), Bind::Int(1))]),
            ],
        )
        .unwrap_or_else(|e| panic!("{e}\n{}", server.log()));
    server
        .execute("INSERT INTO t.types (id) VALUES (2)")
        .unwrap();
    let ctx = TestRunContext::new(json!({}));
    let out = run(
        &ctx,
        json!({"session": session(server.port()), "fetchType": "FETCH_ONE",
               "cql": "SELECT * FROM t.types WHERE id = 1"}),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", server.log()));
    let row = &out["row"];
    let expect = json!({
        "id": 1, "big": 9_000_000_000i64, "s": "héllo", "a": "plain", "b": true,
        "f": 1.1, "d": 2.25, "u": "6a6b5d86-1c4f-4b1f-9e9e-0e7c3c7b5e11", "ip": "10.0.0.1",
        "ts": "2024-01-31T10:00:00.123Z", "dt": "2024-02-29", "bl": "aGVsbG8=",
        "l": [1, 2, 3], "st": ["x", "y"], "m": {"k": 1}
    });
    for (column, value) in expect.as_object().unwrap() {
        assert_eq!(&row[column], value, "column {column}: {row}");
    }
    let out = run(
        &ctx,
        json!({"session": session(server.port()), "fetchType": "FETCH_ONE",
               "cql": "SELECT id, big, l, m FROM t.types WHERE id = 2"}),
    )
    .await
    .unwrap();
    assert_eq!(
        out["row"],
        json!({"id": 2, "big": null, "l": null, "m": null})
    );
}

#[tokio::test]
async fn store_pages_thousands_of_rows_into_an_ion_file() {
    let server = CqlServer::start();
    server
        .execute_script(
            "CREATE KEYSPACE s WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1};
             CREATE TABLE s.events (id int PRIMARY KEY, label text)",
        )
        .unwrap();
    const N: i64 = 3500;
    for id in 0..N {
        server
            .execute(&format!(
                "INSERT INTO s.events (id, label) VALUES ({id}, 'event {id}')"
            ))
            .unwrap();
    }
    let ctx = TestRunContext::new(json!({}));
    let out = run(
        &ctx,
        json!({"session": session(server.port()), "fetchType": "STORE", "cql": "SELECT * FROM s.events"}),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", server.log()));
    assert_eq!(out["size"], json!(N));
    let uri = out["uri"].as_str().unwrap();
    let file = ctx.storage.open(uri).await.unwrap();
    let mut reader = IonReader::new(BufReader::new(file));
    let mut seen = vec![false; N as usize];
    while let Some(row) = reader.next().await.unwrap() {
        let id = row["id"].as_i64().unwrap();
        assert_eq!(row["label"], json!(format!("event {id}")));
        assert!(!seen[id as usize], "row {id} twice");
        seen[id as usize] = true;
    }
    assert!(seen.iter().all(|s| *s), "every row is in the file once");
    let pages = server.requests_with("SELECT * FROM s.events");
    assert!(pages >= 3, "the rows came in pages ({pages} requests)");
}

#[tokio::test]
async fn a_syntax_error_is_permanent() {
    let server = CqlServer::start();
    let ctx = TestRunContext::new(json!({}));
    let err = run(
        &ctx,
        json!({"session": session(server.port()), "cql": "SELEKT nothing FROM"}),
    )
    .await
    .unwrap_err();
    assert!(!err.retryable, "{err}");
    assert!(err.message.contains("SELEKT nothing FROM"), "{err}");
    assert!(err.message.contains("127.0.0.1"), "{err}");
}

#[tokio::test]
async fn an_unknown_local_datacenter_is_permanent() {
    let server = CqlServer::start();
    let ctx = TestRunContext::new(json!({}));
    let mut props = json!({"session": session(server.port()), "cql": "SELECT * FROM system.local"});
    props["session"]["localDatacenter"] = json!("nowhere");
    let err = run(&ctx, props).await.unwrap_err();
    assert!(!err.retryable, "{err}");
    assert!(err.message.contains("localDatacenter"), "{err}");
}

#[tokio::test]
async fn a_refused_connection_is_retryable_and_quick() {
    let port = swoop_testkit::free_port();
    let ctx = TestRunContext::new(json!({}));
    let started = Instant::now();
    let err = run(
        &ctx,
        json!({"session": session(port), "cql": "SELECT * FROM k.t"}),
    )
    .await
    .unwrap_err();
    assert!(err.retryable, "{err}");
    assert!(err.message.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "took {:?}",
        started.elapsed()
    );
    assert!(ctx.resources.is_empty(), "a failed session is not kept");
}

#[tokio::test]
async fn credentials_are_sent_and_a_wrong_password_is_permanent() {
    let server = CqlServer::start_with_credentials("alice", "s3cret");
    server.execute("CREATE KEYSPACE a WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}").unwrap();
    let ctx = TestRunContext::new(json!({}));
    let mut props = json!({"session": session(server.port()), "cql": "SELECT * FROM system.local", "fetchType": "FETCH_ONE"});
    props["session"]["username"] = json!("alice");
    props["session"]["password"] = json!("s3cret");
    let out = run(&ctx, props.clone())
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", server.log()));
    assert_eq!(out["row"]["data_center"], json!("datacenter1"));

    props["session"]["password"] = json!("wrong-password");
    let err = run(&ctx, props).await.unwrap_err();
    assert!(!err.retryable, "{err}");
    assert!(
        !err.message.contains("wrong-password"),
        "the password is never shown: {err}"
    );
}

#[tokio::test]
async fn one_session_is_shared_across_100_runs() {
    let server = CqlServer::start();
    load_products(&server);
    let resources = Arc::new(SharedResources::new());
    let task = build(json!({
        "session": session(server.port()),
        "cql": "SELECT product_name FROM kestra.products WHERE product_id = {{ inputs.id }}",
        "fetchType": "FETCH_ONE",
    }))
    .unwrap();
    for i in 0..100 {
        let id = i % 20 + 1;
        let mut ctx = TestRunContext::new(json!({"inputs": {"id": id}}));
        ctx.resources = resources.clone();
        let out = tokio::time::timeout(Duration::from_secs(30), task.run(&ctx))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(out["row"]["product_name"], json!(format!("product {id}")));
        assert_eq!(resources.len(), 1);
    }
}

#[test]
fn the_alias_is_the_same_type() {
    let registry = swoop_plugins::registry();
    let (canonical, alias) = (registry.task(QUERY).unwrap(), registry.task(ALIAS).unwrap());
    assert!(std::ptr::eq(canonical, alias));
    assert_eq!(canonical.type_names[0], QUERY);
}

#[test]
fn unsupported_settings_are_refused_at_build() {
    let tls = build(json!({
        "session": {"endpoints": [{"hostname": "h"}], "secureConnection": {"truststorePath": "/x"}},
        "cql": "SELECT 1",
    }));
    assert!(tls.err().unwrap().contains("secureConnection"));
    let sni = build(json!({
        "session": {"endpoints": [{"hostname": "h", "serverName": "x"}]},
        "cql": "SELECT 1",
    }));
    assert!(sni.err().unwrap().contains("serverName"));
    let none = build(json!({"session": {"endpoints": []}, "cql": "SELECT 1"}));
    assert!(none.err().unwrap().contains("endpoints"));
}

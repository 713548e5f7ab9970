//! The MongoDB tasks against a real MongoDB wire-protocol server on loopback: secantusdb
//! (`swoop_testkit::mongo`, installed by `scripts/install-secantus.sh`), driven by the
//! `mongodb` driver. Each test starts its own server and checks what the tasks wrote with the
//! fixture's own client.
#![cfg(feature = "mongodb")]

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use swoop_core::ion::IonReader;
use swoop_core::registry::{RunnableTask, TaskError};
use swoop_core::resources::SharedResources;
use swoop_core::testing::{TestRunContext, build_task, merged};
use swoop_testkit::mongo::Mongo;
use tokio::io::BufReader;

const DB: &str = "shop";

fn build(kind: &str, props: Value) -> Result<Arc<dyn RunnableTask>, String> {
    build_task(
        &swoop_plugins::registry(),
        &format!("io.kestra.plugin.mongodb.{kind}"),
        props,
    )
}

/// `props` plus the connection to `uri`, `database: shop` and `collection`.
fn on(uri: &str, collection: &str, props: Value) -> Value {
    merged(
        json!({"connection": {"uri": uri}, "database": DB, "collection": collection}),
        props,
    )
}

async fn run(
    ctx: &TestRunContext,
    kind: &str,
    props: Value,
) -> Result<Map<String, Value>, TaskError> {
    let task = build(kind, props).expect("the task builds");
    tokio::time::timeout(Duration::from_secs(30), task.run(ctx))
        .await
        .expect("the task finishes within 30 s")
}

async fn ok(ctx: &TestRunContext, kind: &str, props: Value) -> Map<String, Value> {
    run(ctx, kind, props)
        .await
        .unwrap_or_else(|e| panic!("{kind} failed: {e}"))
}

fn is_object_id_hex(v: &Value) -> bool {
    v.as_str()
        .is_some_and(|s| s.len() == 24 && s.chars().all(|c| c.is_ascii_hexdigit()))
}

#[tokio::test]
async fn insert_one_renders_a_json_string_then_parses_it_and_takes_maps() {
    let mongo = Mongo::start();
    let ctx = TestRunContext::new(json!({
        "trigger": {"value": "{\"order_id\": \"o-17\", \"amount\": 12.5, \"items\": [\"a\", \"b\"]}"}
    }));
    // Kestra's demo shape: a JSON string with templates inside.
    let document = r#"{
      "order_id": "{{ trigger.value | jq('.order_id') | first }}",
      "amount": {{ trigger.value | jq('.amount') | first }},
      "items": {{ trigger.value | jq('.items') | first | toJson }},
      "at": {"$date": "2024-05-01T10:00:00Z"}
    }"#;
    let out = ok(
        &ctx,
        "InsertOne",
        on(&mongo.uri(), "orders", json!({"document": document})),
    )
    .await;
    assert!(is_object_id_hex(&out["insertedId"]), "{out:?}");
    assert_eq!(out["wasAcknowledged"], json!(true));
    let docs = mongo.find(DB, "orders", json!({"order_id": "o-17"})).await;
    assert_eq!(docs.len(), 1, "{docs:?}");
    assert_eq!(docs[0]["amount"], json!(12.5));
    assert_eq!(docs[0]["items"], json!(["a", "b"]));
    assert_eq!(docs[0]["_id"]["$oid"], out["insertedId"]);
    assert!(docs[0]["at"]["$date"].is_string(), "a BSON date: {docs:?}");

    // A map: its strings are rendered; extended JSON inside is read.
    let out = ok(
        &ctx,
        "InsertOne",
        on(
            &mongo.uri(),
            "orders",
            json!({"document": {
                "_id": {"$oid": "60930c39a982931c20ef6cd6"},
                "order_id": "{{ trigger.value | jq('.order_id') | first }}-map",
            }}),
        ),
    )
    .await;
    assert_eq!(out["insertedId"], json!("60930c39a982931c20ef6cd6"));
    assert_eq!(
        mongo
            .count(DB, "orders", json!({"order_id": "o-17-map"}))
            .await,
        1
    );

    // An `_id` that is not an ObjectId is output as text.
    let out = ok(
        &ctx,
        "InsertOne",
        on(
            &mongo.uri(),
            "orders",
            json!({"document": {"_id": "order-1"}}),
        ),
    )
    .await;
    assert_eq!(out["insertedId"], json!("order-1"));

    // A document that is not JSON fails before connecting, permanently.
    let e = run(
        &ctx,
        "InsertOne",
        on(
            &mongo.uri(),
            "orders",
            json!({"document": "{{ trigger.value }} trailing"}),
        ),
    )
    .await
    .unwrap_err();
    assert!(!e.retryable);
    assert!(e.message.contains("not valid JSON"), "{e}");
}

#[tokio::test]
async fn insert_many_outputs_ids_in_order() {
    let mongo = Mongo::start();
    let ctx = TestRunContext::new(json!({"inputs": {"n": 3}}));
    let out = ok(
        &ctx,
        "InsertMany",
        on(
            &mongo.uri(),
            "items",
            json!({"documents": [
                {"_id": "a", "n": 1},
                "{\"_id\": \"b\", \"n\": {{ inputs.n }}}",
                {"n": 3},
            ]}),
        ),
    )
    .await;
    assert_eq!(out["size"], json!(3));
    assert_eq!(out["insertedIds"][0], json!("a"));
    assert_eq!(out["insertedIds"][1], json!("b"));
    assert!(is_object_id_hex(&out["insertedIds"][2]), "{out:?}");
    assert_eq!(mongo.count(DB, "items", json!({})).await, 3);
    assert_eq!(mongo.count(DB, "items", json!({"n": 3})).await, 2);
}

async fn seed_products(mongo: &Mongo) {
    let docs = (1..=6)
        .map(|n| json!({"sku": format!("p{n}"), "n": n, "group": if n % 2 == 0 { "even" } else { "odd" }}))
        .collect();
    mongo.insert(DB, "products", docs).await;
}

#[tokio::test]
async fn find_filters_projects_sorts_skips_limits_and_stores() {
    let mongo = Mongo::start();
    seed_products(&mongo).await;
    let ctx = TestRunContext::new(json!({"inputs": {"group": "even"}}));
    let props = json!({
        "filter": {"group": "{{ inputs.group }}"},
        "projection": "{\"_id\": 0, \"sku\": 1, \"n\": 1}",
        "sort": {"n": -1},
        "skip": 1,
        "limit": "{{ 2 }}",
    });
    let out = ok(&ctx, "Find", on(&mongo.uri(), "products", props.clone())).await;
    assert_eq!(out["size"], json!(2));
    assert_eq!(
        out["rows"],
        json!([{"sku": "p4", "n": 4}, {"sku": "p2", "n": 2}])
    );
    assert!(out.get("uri").is_none());

    // Everything, with ObjectIds as hex.
    let out = ok(&ctx, "Find", on(&mongo.uri(), "products", json!({}))).await;
    assert_eq!(out["size"], json!(6));
    assert!(is_object_id_hex(&out["rows"][0]["_id"]), "{out:?}");

    // store: an ION file, streamed, read back.
    let mut stored = props;
    stored["store"] = json!(true);
    stored["limit"] = json!(10);
    let out = ok(&ctx, "Find", on(&mongo.uri(), "products", stored)).await;
    assert_eq!(out["size"], json!(2));
    assert!(out.get("rows").is_none());
    let uri = out["uri"].as_str().expect("a uri");
    assert!(
        uri.starts_with("kestra:///") && uri.ends_with(".ion"),
        "{uri}"
    );
    let file = ctx.storage.open(uri).await.expect("the ION file");
    let mut reader = IonReader::new(BufReader::new(file));
    let mut rows = Vec::new();
    while let Some(row) = reader.next().await.expect("valid ION") {
        rows.push(row);
    }
    assert_eq!(
        rows,
        vec![json!({"sku": "p4", "n": 4}), json!({"sku": "p2", "n": 2})]
    );
}

#[tokio::test]
async fn update_one_many_replace_and_upsert_is_idempotent() {
    let mongo = Mongo::start();
    seed_products(&mongo).await;
    let ctx = TestRunContext::new(
        json!({"trigger": {"value": "{\"order_id\": \"o-1\", \"total\": 30}"}}),
    );
    let uri = mongo.uri();

    let out = ok(
        &ctx,
        "Update",
        on(
            &uri,
            "products",
            json!({
                "filter": {"group": "odd"},
                "document": "{\"$set\": {\"flag\": true}}",
            }),
        ),
    )
    .await;
    assert_eq!(
        (out["matchedCount"].clone(), out["modifiedCount"].clone()),
        (json!(1), json!(1))
    );
    assert_eq!(out["upsertedId"], Value::Null);
    assert_eq!(out["wasAcknowledged"], json!(true));
    assert_eq!(mongo.count(DB, "products", json!({"flag": true})).await, 1);

    let out = ok(
        &ctx,
        "Update",
        on(
            &uri,
            "products",
            json!({
                "operation": "UPDATE_MANY",
                "filter": {"group": "odd"},
                "document": {"$set": {"flag": true}},
            }),
        ),
    )
    .await;
    assert_eq!(
        (out["matchedCount"].clone(), out["modifiedCount"].clone()),
        (json!(3), json!(2))
    );
    assert_eq!(mongo.count(DB, "products", json!({"flag": true})).await, 3);

    let out = ok(
        &ctx,
        "Update",
        on(
            &uri,
            "products",
            json!({
                "operation": "REPLACE_ONE",
                "filter": {"sku": "p2"},
                "document": {"sku": "p2", "replaced": true},
            }),
        ),
    )
    .await;
    assert_eq!(out["modifiedCount"], json!(1));
    let p2 = mongo.find(DB, "products", json!({"sku": "p2"})).await;
    assert_eq!(p2[0]["replaced"], json!(true));
    assert!(p2[0].get("n").is_none(), "replaced whole: {p2:?}");

    // The idempotent insert: the same key twice makes one document.
    let upsert = on(
        &uri,
        "orders",
        json!({
            "filter": "{\"order_id\": \"{{ trigger.value | jq('.order_id') | first }}\"}",
            "document": "{\"$set\": {\"total\": {{ trigger.value | jq('.total') | first }}}}",
            "upsert": true,
        }),
    );
    let first = ok(&ctx, "Update", upsert.clone()).await;
    assert!(is_object_id_hex(&first["upsertedId"]), "{first:?}");
    assert_eq!(first["matchedCount"], json!(0));
    let second = ok(&ctx, "Update", upsert).await;
    assert_eq!(second["upsertedId"], Value::Null);
    assert_eq!(second["matchedCount"], json!(1));
    assert_eq!(second["modifiedCount"], json!(0));
    let orders = mongo.find(DB, "orders", json!({})).await;
    assert_eq!(orders.len(), 1, "{orders:?}");
    assert_eq!(orders[0]["order_id"], json!("o-1"));
    assert_eq!(orders[0]["total"], json!(30));

    // REPLACE_ONE with upsert, twice: one document.
    let replace = on(
        &uri,
        "orders",
        json!({
            "operation": "REPLACE_ONE",
            "filter": {"order_id": "o-2"},
            "document": {"order_id": "o-2", "total": 5},
            "upsert": true,
        }),
    );
    ok(&ctx, "Update", replace.clone()).await;
    ok(&ctx, "Update", replace).await;
    assert_eq!(
        mongo.count(DB, "orders", json!({"order_id": "o-2"})).await,
        1
    );

    // Operators with REPLACE_ONE, or a plain document with UPDATE_ONE: refused, permanently.
    let e = run(
        &ctx,
        "Update",
        on(
            &uri,
            "orders",
            json!({
                "filter": {}, "document": {"total": 1},
            }),
        ),
    )
    .await
    .unwrap_err();
    assert!(!e.retryable && e.message.contains("REPLACE_ONE"), "{e}");
}

#[tokio::test]
async fn delete_one_and_many() {
    let mongo = Mongo::start();
    seed_products(&mongo).await;
    let ctx = TestRunContext::new(json!({}));
    let out = ok(
        &ctx,
        "Delete",
        on(
            &mongo.uri(),
            "products",
            json!({"filter": {"group": "odd"}}),
        ),
    )
    .await;
    assert_eq!(out["deletedCount"], json!(1));
    assert_eq!(out["wasAcknowledged"], json!(true));
    let out = ok(
        &ctx,
        "Delete",
        on(
            &mongo.uri(),
            "products",
            json!({
                "operation": "DELETE_MANY", "filter": "{\"group\": \"odd\"}",
            }),
        ),
    )
    .await;
    assert_eq!(out["deletedCount"], json!(2));
    assert_eq!(mongo.count(DB, "products", json!({})).await, 3);
    // No filter: DELETE_MANY removes everything.
    let out = ok(
        &ctx,
        "Delete",
        on(
            &mongo.uri(),
            "products",
            json!({"operation": "DELETE_MANY"}),
        ),
    )
    .await;
    assert_eq!(out["deletedCount"], json!(3));
}

#[tokio::test]
async fn a_duplicate_key_is_a_permanent_error() {
    let mongo = Mongo::start();
    mongo.create_unique_index(DB, "orders", "order_id").await;
    let ctx = TestRunContext::new(json!({}));
    let props = on(
        &mongo.uri(),
        "orders",
        json!({"document": {"order_id": "o-1"}}),
    );
    ok(&ctx, "InsertOne", props.clone()).await;
    let e = run(&ctx, "InsertOne", props).await.unwrap_err();
    assert!(!e.retryable, "{e}");
    assert!(e.message.contains("11000"), "{e}");
    assert!(e.message.contains("upsert"), "the hint: {e}");
    let e = run(
        &ctx,
        "InsertMany",
        on(
            &mongo.uri(),
            "orders",
            json!({
                "documents": [{"order_id": "o-2"}, {"order_id": "o-1"}],
            }),
        ),
    )
    .await
    .unwrap_err();
    assert!(!e.retryable && e.message.contains("11000"), "{e}");
    assert_eq!(mongo.count(DB, "orders", json!({})).await, 2);
}

#[tokio::test]
async fn a_refused_connection_is_retryable_bounded_and_hides_the_password() {
    // Nothing listens on this port.
    let port = swoop_testkit::free_port();
    let uri = format!(
        "mongodb://swoop:s3cr%40t@127.0.0.1:{port}/?directConnection=true&serverSelectionTimeoutMS=500&connectTimeoutMS=500"
    );
    let ctx = TestRunContext::new(json!({}));
    let started = Instant::now();
    let e = run(
        &ctx,
        "InsertOne",
        on(&uri, "orders", json!({"document": {"a": 1}})),
    )
    .await
    .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(e.retryable, "{e}");
    assert!(e.message.contains(&format!("127.0.0.1:{port}")), "{e}");
    assert!(!e.message.contains("s3cr"), "the password leaked: {e}");
    assert!(e.message.contains("swoop:***@"), "{e}");
    for (_, log) in ctx.logs.lock().iter() {
        assert!(
            !log.contains("s3cr"),
            "the password leaked into the logs: {log}"
        );
    }
}

#[tokio::test]
async fn one_client_is_shared_across_runs() {
    let mongo = Mongo::start();
    let shared = Arc::new(SharedResources::new());
    let task = build(
        "InsertOne",
        on(&mongo.uri(), "runs", json!({"document": {"run": 1}})),
    )
    .expect("builds");
    for i in 0..100 {
        let mut ctx = TestRunContext::new(json!({}));
        ctx.resources = shared.clone();
        tokio::time::timeout(Duration::from_secs(30), task.run(&ctx))
            .await
            .expect("within 30 s")
            .unwrap_or_else(|e| panic!("run {i}: {e}"));
        assert_eq!(shared.len(), 1);
    }
    assert_eq!(mongo.count(DB, "runs", json!({})).await, 100);
}

/// The example flow is valid (it also uses the core Log task).
#[cfg(feature = "core")]
#[test]
fn the_example_flow_validates() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/mongodb-insert.yml"
    );
    let source = std::fs::read_to_string(path).expect("the example");
    let registry = swoop_plugins::registry();
    if let Err(diagnostics) = swoop_core::flow::Flow::parse(&source, &registry) {
        panic!("{diagnostics:?}");
    }
}

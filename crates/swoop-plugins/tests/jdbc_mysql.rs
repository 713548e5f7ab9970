//! `io.kestra.plugin.jdbc.mysql.Query` against a real MariaDB on loopback
//! (`swoop_testkit::mariadb`, from the `mariadb-server` Debian package, see
//! `scripts/install-sql-servers.sh`). Each test starts its own server; setup SQL and checks of
//! what the task did go through the fixture's `mariadb` client.
#![cfg(feature = "jdbc-mysql")]

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use swoop_core::ion::IonReader;
use swoop_core::registry::{RunnableTask, TaskError};
use swoop_core::resources::SharedResources;
use swoop_core::testing::{TestRunContext, build_task, merged};
use swoop_testkit::mariadb::MariaDb;
use tokio::io::BufReader;

const TYPE: &str = "io.kestra.plugin.jdbc.mysql.Query";

fn build(props: Value) -> Result<Arc<dyn RunnableTask>, String> {
    build_task(&swoop_plugins::registry(), TYPE, props)
}

/// `props` with the `shop` database's `url` and `username`.
fn on(db: &MariaDb, props: Value) -> Value {
    merged(
        json!({"url": db.url_for("shop"), "username": "root"}),
        props,
    )
}

async fn run(ctx: &TestRunContext, props: Value) -> Result<Map<String, Value>, TaskError> {
    let task = build(props).expect("the task builds");
    tokio::time::timeout(Duration::from_secs(60), task.run(ctx))
        .await
        .expect("the task finishes within 60 s")
}

async fn ok(ctx: &TestRunContext, props: Value) -> Map<String, Value> {
    run(ctx, props.clone())
        .await
        .unwrap_or_else(|e| panic!("{props} failed: {e}"))
}

/// A server with a `shop` database holding three orders.
fn shop() -> MariaDb {
    let db = MariaDb::start();
    db.create_database("shop");
    db.sql(
        "CREATE TABLE shop.orders (id INT PRIMARY KEY, customer VARCHAR(20) NOT NULL, total DECIMAL(10,2));
         INSERT INTO shop.orders VALUES (1, 'ada', 12.50), (2, 'bob', 7), (3, 'ada', 99.99);",
    );
    db
}

#[tokio::test]
async fn every_fetch_type_and_the_deprecated_booleans() {
    let db = shop();
    let ctx = TestRunContext::new(json!({}));
    let select = "SELECT id, customer, total FROM orders ORDER BY id";

    let out = ok(
        &ctx,
        on(&db, json!({"sql": select, "fetchType": "FETCH_ONE"})),
    )
    .await;
    assert_eq!(
        out["row"],
        json!({"id": 1, "customer": "ada", "total": 12.5})
    );
    assert_eq!(out["size"], 1);

    let out = ok(&ctx, on(&db, json!({"sql": select, "fetchType": "FETCH"}))).await;
    assert_eq!(out["size"], 3);
    assert_eq!(
        out["rows"][2],
        json!({"id": 3, "customer": "ada", "total": 99.99})
    );

    let out = ok(&ctx, on(&db, json!({"sql": select, "fetchType": "STORE"}))).await;
    assert_eq!(out["size"], 3);
    let file = ctx
        .storage
        .open(out["uri"].as_str().unwrap())
        .await
        .unwrap();
    let mut reader = IonReader::new(BufReader::new(file));
    assert_eq!(
        reader.next().await.unwrap(),
        Some(json!({"id": 1, "customer": "ada", "total": 12.5}))
    );

    let out = ok(&ctx, on(&db, json!({"sql": select}))).await;
    assert_eq!(
        out,
        json!({"size": 0}).as_object().unwrap().clone(),
        "NONE is the default"
    );

    let out = ok(
        &ctx,
        on(
            &db,
            json!({"sql": "SELECT * FROM orders WHERE id = 42", "fetchType": "FETCH_ONE"}),
        ),
    )
    .await;
    assert_eq!(out["row"], Value::Null);

    let out = ok(
        &ctx,
        on(&db, json!({"sql": select, "fetch": true, "store": true})),
    )
    .await;
    assert_eq!(
        out["rows"].as_array().unwrap().len(),
        3,
        "fetch wins over store"
    );
    let out = ok(
        &ctx,
        on(
            &db,
            json!({"sql": select, "fetchOne": true, "fetchType": "FETCH"}),
        ),
    )
    .await;
    assert_eq!(out["row"]["id"], 1, "fetchOne wins over fetchType");

    // The connection is still usable after FETCH_ONE left rows unread.
    let out = ok(
        &ctx,
        on(
            &db,
            json!({"sql": "UPDATE orders SET total = 8 WHERE id = 2", "fetchType": "FETCH"}),
        ),
    )
    .await;
    assert_eq!(out["size"], 0);
    assert_eq!(db.sql("SELECT total FROM shop.orders WHERE id = 2"), "8.00");
}

#[tokio::test]
async fn named_parameters_become_question_marks() {
    let db = shop();
    let ctx = TestRunContext::new(json!({"inputs": {"who": "ada"}}));
    let out = ok(
        &ctx,
        on(
            &db,
            json!({
                "sql": "SELECT :n + :n AS twice, ':notaparam' AS literal, :who AS who, \
                        (SELECT count(*) FROM orders WHERE customer = :who) AS orders, :none AS none",
                "parameters": {"n": 21, "who": "{{ inputs.who }}", "none": null},
                "fetchType": "FETCH_ONE"
            }),
        ),
    )
    .await;
    assert_eq!(
        out["row"],
        json!({"twice": 42, "literal": ":notaparam", "who": "ada", "orders": 2, "none": null})
    );
    ok(
        &ctx,
        on(
            &db,
            json!({
                "sql": "INSERT INTO orders VALUES (:id, :customer, :total)",
                "parameters": {"id": 4, "customer": "o'hara\\", "total": 1.25}
            }),
        ),
    )
    .await;
    assert_eq!(
        db.sql("SELECT customer, total FROM shop.orders WHERE id = 4"),
        "o'hara\\\\\t1.25"
    );
}

#[tokio::test]
async fn column_types_map_as_kestra_does() {
    let db = MariaDb::start();
    db.create_database("shop");
    db.sql(
        "CREATE TABLE shop.types (i INT, big BIGINT, ubig BIGINT UNSIGNED, d DECIMAL(10,3), \
           f FLOAT, dbl DOUBLE, s VARCHAR(10), flag TINYINT(1), tiny TINYINT, bit1 BIT(1), \
           dt DATETIME(3), ts TIMESTAMP NULL, day DATE, t TIME, y YEAR, j JSON, b BLOB, nothing INT);
         SET time_zone = '+00:00';
         INSERT INTO shop.types VALUES (-7, 9007199254740993, 18446744073709551615, 12345.678, \
           0.1, 1.5, 'x', 1, 5, b'1', '2024-05-01 10:20:30.5', '2024-05-01 10:20:30', \
           '2024-05-01', '-01:02:03', 2024, '{\"a\": [1, 2]}', x'0102ff', NULL);",
    );
    let ctx = TestRunContext::new(json!({}));
    let out = ok(
        &ctx,
        on(
            &db,
            json!({"sql": "SELECT * FROM types", "fetchType": "FETCH_ONE"}),
        ),
    )
    .await;
    assert_eq!(
        out["row"],
        json!({
            "i": -7, "big": 9007199254740993i64, "ubig": "18446744073709551615",
            "d": 12345.678, "f": 0.1, "dbl": 1.5, "s": "x", "flag": true, "tiny": 5,
            "bit1": true, "dt": "2024-05-01T10:20:30.5", "ts": "2024-05-01T10:20:30Z",
            "day": "2024-05-01", "t": "-01:02:03", "y": "2024-01-01",
            "j": "{\"a\": [1, 2]}", "b": "AQL/", "nothing": null
        })
    );
}

#[tokio::test]
async fn store_streams_100k_rows_into_an_ion_file() {
    let db = MariaDb::start();
    let url = db.create_database("big");
    let ctx = TestRunContext::new(json!({}));
    let out = ok(
        &ctx,
        json!({
            "url": url, "username": "root", "fetchType": "STORE",
            "sql": "SELECT seq AS id, CONCAT('row ', seq) AS name FROM seq_1_to_100000"
        }),
    )
    .await;
    assert_eq!(out["size"], 100_000);
    let file = ctx
        .storage
        .open(out["uri"].as_str().unwrap())
        .await
        .unwrap();
    let mut reader = IonReader::new(BufReader::new(file));
    let mut count = 0u64;
    let mut last = Value::Null;
    while let Some(row) = reader.next().await.unwrap() {
        count += 1;
        last = row;
    }
    assert_eq!(count, 100_000);
    assert_eq!(last, json!({"id": 100000, "name": "row 100000"}));
}

#[tokio::test]
async fn errors_are_classified_and_after_sql_shares_the_transaction() {
    let db = shop();
    let ctx = TestRunContext::new(json!({}));
    let err = run(&ctx, on(&db, json!({"sql": "SELEC 1"})))
        .await
        .unwrap_err();
    assert!(!err.retryable && err.message.contains("1064"), "{err:?}");
    let err = run(&ctx, on(&db, json!({"sql": "SELECT * FROM nowhere"})))
        .await
        .unwrap_err();
    assert!(!err.retryable && err.message.contains("1146"), "{err:?}");
    let err = run(
        &ctx,
        on(
            &db,
            json!({"sql": "INSERT INTO orders VALUES (1, 'dup', 0)"}),
        ),
    )
    .await
    .unwrap_err();
    assert!(!err.retryable && err.message.contains("1062"), "{err:?}");

    let closed = swoop_testkit::free_port();
    let err = run(
        &ctx,
        json!({"url": format!("jdbc:mysql://127.0.0.1:{closed}/shop"), "username": "root",
               "password": "hunter2-secret", "sql": "SELECT 1"}),
    )
    .await
    .unwrap_err();
    assert!(err.retryable, "{err:?}");
    assert!(!err.message.contains("hunter2"), "{err:?}");

    for (props, needle) in [
        (json!({"sql": "SELECT 1; SELECT 2"}), "more than one"),
        (
            json!({"sql": "SELECT 1", "inputFile": "kestra:///x.csv"}),
            "LOAD DATA",
        ),
        (
            json!({"sql": "SELECT 1", "url": "jdbc:mysql://h/db?useSSL=true"}),
            "TLS",
        ),
    ] {
        let err = build(on(&db, props)).err().expect("refused");
        assert!(err.contains(needle), "{err}");
    }

    // afterSQL: committed with the statement; a failing one rolls both back.
    let out = ok(
        &ctx,
        on(
            &db,
            json!({"sql": "SELECT id FROM orders WHERE customer = :who FOR UPDATE",
                   "afterSQL": "DELETE FROM orders WHERE customer = :who",
                   "parameters": {"who": "ada"}, "fetchType": "FETCH"}),
        ),
    )
    .await;
    assert_eq!(out["rows"], json!([{"id": 1}, {"id": 3}]));
    assert_eq!(db.sql("SELECT count(*) FROM shop.orders"), "1");
    let err = run(
        &ctx,
        on(&db, json!({"sql": "INSERT INTO orders VALUES (9, 'eve', 1)", "afterSQL": "UPDATE nowhere SET x = 1"})),
    )
    .await
    .unwrap_err();
    assert!(err.message.contains("afterSQL"), "{err:?}");
    assert_eq!(
        db.sql("SELECT count(*) FROM shop.orders"),
        "1",
        "rolled back"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_shared_pool_bounds_server_connections() {
    let db = MariaDb::start();
    let url = db.create_database("pooltest");
    let shared = Arc::new(SharedResources::new());
    let task = build(json!({
        "url": url, "username": "root", "connectionPoolSize": 4, "fetchType": "FETCH_ONE",
        "sql": "SELECT count(*) AS n, SLEEP(0.005) AS s FROM information_schema.PROCESSLIST WHERE DB = 'pooltest'"
    }))
    .unwrap();
    let mut handles = Vec::new();
    for _ in 0..200 {
        let (task, shared) = (task.clone(), shared.clone());
        handles.push(tokio::spawn(async move {
            let mut ctx = TestRunContext::new(json!({}));
            ctx.resources = shared;
            task.run(&ctx).await
        }));
    }
    let mut most = 0;
    for h in handles {
        let out = h.await.unwrap().expect("every run succeeds");
        most = most.max(out["row"]["n"].as_i64().unwrap());
    }
    assert!(
        (1..=4).contains(&most),
        "at most the pool's 4 connections, saw {most}"
    );
    assert_eq!(shared.len(), 1, "one pool for one url + credentials");
    let open: i64 = db
        .sql("SELECT count(*) FROM information_schema.PROCESSLIST WHERE DB = 'pooltest'")
        .parse()
        .unwrap();
    assert!((1..=4).contains(&open), "{open} connections stay open");
}

#[tokio::test]
async fn a_killed_query_stops_on_the_server_and_the_pool_lives_on() {
    let db = MariaDb::start();
    let url = db.create_database("killtest");
    let ctx = TestRunContext::new(json!({}));
    let props = |sql: &str| json!({"url": url, "username": "root", "sql": sql, "fetchType": "FETCH_ONE", "connectionPoolSize": 1});
    let task = build(props("SELECT SLEEP(30)")).unwrap();
    let started = Instant::now();
    let result = tokio::time::timeout(Duration::from_millis(500), task.run(&ctx)).await;
    assert!(result.is_err(), "the query was still running");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "dropping the future returns at once"
    );

    let started = Instant::now();
    let out = ok(&ctx, props("SELECT 1 AS one")).await;
    assert_eq!(out["row"]["one"], 1);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let sleeping = db.sql(
            "SELECT count(*) FROM information_schema.PROCESSLIST WHERE INFO LIKE 'SELECT SLEEP(30)%'",
        );
        if sleeping == "0" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "SLEEP(30) still runs on the server"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

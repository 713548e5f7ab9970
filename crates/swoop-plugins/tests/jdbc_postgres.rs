//! `io.kestra.plugin.jdbc.postgresql.Query` against a real PostgreSQL on loopback
//! (`swoop_testkit::postgres`, from the `postgresql` Debian package, see
//! `scripts/install-sql-servers.sh`). Each test starts its own cluster; setup SQL and checks
//! of what the task did go through the fixture's `psql`.
#![cfg(feature = "jdbc-postgres")]

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use swoop_core::registry::{RunnableTask, TaskError};
use swoop_core::resources::SharedResources;
use swoop_core::testing::{TestRunContext, build_task, merged};
use swoop_testkit::postgres::Postgres;

const TYPE: &str = "io.kestra.plugin.jdbc.postgresql.Query";

fn build(props: Value) -> Result<Arc<dyn RunnableTask>, String> {
    build_task(&swoop_plugins::registry(), TYPE, props)
}

/// `props` with the server's `url` and `username`.
fn on(pg: &Postgres, props: Value) -> Value {
    merged(json!({"url": pg.url(), "username": "postgres"}), props)
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

async fn read_ion(ctx: &TestRunContext, uri: &str) -> Vec<Value> {
    ctx.read_ion(uri).await
}

fn with_orders(pg: &Postgres) {
    pg.psql(
        "postgres",
        "CREATE TABLE orders (id int PRIMARY KEY, customer text NOT NULL, total numeric(10,2));
         INSERT INTO orders VALUES (1, 'ada', 12.50), (2, 'bob', 7), (3, 'ada', 99.99);",
    );
}

#[tokio::test]
async fn every_fetch_type_and_the_deprecated_booleans() {
    let pg = Postgres::start();
    with_orders(&pg);
    let ctx = TestRunContext::new(json!({}));
    let select = "SELECT id, customer, total FROM orders ORDER BY id";

    let out = ok(
        &ctx,
        on(&pg, json!({"sql": select, "fetchType": "FETCH_ONE"})),
    )
    .await;
    assert_eq!(
        out["row"],
        json!({"id": 1, "customer": "ada", "total": 12.5})
    );
    assert_eq!(out["size"], 1);

    let out = ok(&ctx, on(&pg, json!({"sql": select, "fetchType": "FETCH"}))).await;
    assert_eq!(out["size"], 3);
    assert_eq!(
        out["rows"][2],
        json!({"id": 3, "customer": "ada", "total": 99.99})
    );
    assert!(out.get("row").is_none() && out.get("uri").is_none());

    let out = ok(&ctx, on(&pg, json!({"sql": select, "fetchType": "STORE"}))).await;
    assert_eq!(out["size"], 3);
    let rows = read_ion(&ctx, out["uri"].as_str().unwrap()).await;
    assert_eq!(rows[1], json!({"id": 2, "customer": "bob", "total": 7}));

    let out = ok(&ctx, on(&pg, json!({"sql": select}))).await;
    assert_eq!(
        out,
        json!({"size": 0}).as_object().unwrap().clone(),
        "NONE is the default"
    );

    // A row that is not there: `row` is present, null.
    let out = ok(
        &ctx,
        on(
            &pg,
            json!({"sql": "SELECT * FROM orders WHERE id = 42", "fetchType": "FETCH_ONE"}),
        ),
    )
    .await;
    assert_eq!(out["row"], Value::Null);
    assert_eq!(out["size"], 0);

    // Kestra's precedence: fetch > fetchOne > store > fetchType.
    let out = ok(
        &ctx,
        on(
            &pg,
            json!({"sql": select, "fetchOne": true, "fetch": true, "fetchType": "STORE"}),
        ),
    )
    .await;
    assert_eq!(out["size"], 3);
    assert!(out.contains_key("rows"));
    let out = ok(
        &ctx,
        on(&pg, json!({"sql": select, "store": true, "fetchOne": true})),
    )
    .await;
    assert_eq!(out["row"]["id"], 1);
    let out = ok(&ctx, on(&pg, json!({"sql": select, "store": true}))).await;
    assert!(out["uri"].as_str().unwrap().ends_with(".ion"));

    // A statement without a result set.
    let out = ok(
        &ctx,
        on(
            &pg,
            json!({"sql": "UPDATE orders SET total = 8 WHERE id = 2", "fetchType": "FETCH"}),
        ),
    )
    .await;
    assert_eq!(out["size"], 0);
    assert_eq!(
        pg.psql("postgres", "SELECT total FROM orders WHERE id = 2"),
        "8.00"
    );
}

#[tokio::test]
async fn named_parameters_skip_literals_and_casts() {
    let pg = Postgres::start();
    with_orders(&pg);
    let ctx = TestRunContext::new(json!({"inputs": {"who": "ada"}}));
    let out = ok(
        &ctx,
        on(
            &pg,
            json!({
                "sql": "SELECT :n::int + :n::int AS twice, ':notaparam' AS literal, :who AS who, \
                        (SELECT count(*) FROM orders WHERE customer = :who)::int AS orders, \
                        :tags::text[] AS tags, :none::text AS none",
                "parameters": {"n": 21, "who": "{{ inputs.who }}", "tags": ["a", "b c"], "none": null},
                "fetchType": "FETCH_ONE"
            }),
        ),
    )
    .await;
    assert_eq!(
        out["row"],
        json!({"twice": 42, "literal": ":notaparam", "who": "ada", "orders": 2, "tags": ["a", "b c"], "none": null})
    );

    // Inserting through parameters (no SQL injection: the value is bound).
    ok(
        &ctx,
        on(
            &pg,
            json!({
                "sql": "INSERT INTO orders VALUES (:id, :customer, :total)",
                "parameters": {"id": 4, "customer": "o'hara; DROP TABLE orders", "total": 1.25}
            }),
        ),
    )
    .await;
    assert_eq!(
        pg.psql(
            "postgres",
            "SELECT customer, total FROM orders WHERE id = 4"
        ),
        "o'hara; DROP TABLE orders|1.25"
    );

    let err = run(
        &ctx,
        on(
            &pg,
            json!({"sql": "SELECT :missing", "parameters": {"n": 1}}),
        ),
    )
    .await
    .unwrap_err();
    assert!(
        !err.retryable && err.message.contains(":missing"),
        "{err:?}"
    );
}

#[tokio::test]
async fn column_types_map_as_kestra_does() {
    let pg = Postgres::start();
    let ctx = TestRunContext::new(json!({}));
    let sql = "SELECT 1::int2 AS small, 2147483647::int AS int, 9007199254740993::bigint AS big, \
        12345.678::numeric(10,3) AS num, 123456789012345678901234.5::numeric AS huge, \
        1.5::float8 AS dbl, 0.1::real AS real, 'x'::text AS text, 'ab'::char(3) AS chr, \
        true AS bool, '2024-05-01 10:20:30.5'::timestamp AS ts, \
        '2024-05-01 10:20:30+00'::timestamptz AS tstz, '2024-05-01'::date AS date, \
        '13:14:15'::time AS time, '{\"a\": [1, 2]}'::json AS json, '{\"b\": null}'::jsonb AS jsonb, \
        ARRAY[1, 2, 3] AS arr, ARRAY[['a', 'b'], ['c', NULL]] AS arr2, \
        'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid AS uuid, '\\x0102ff'::bytea AS bytes, \
        interval '1 year 2 months 3 days 04:05:06' AS span, NULL::int AS nothing, \
        'infinity'::timestamp AS forever";
    let out = ok(
        &ctx,
        on(
            &pg,
            json!({"sql": sql, "fetchType": "FETCH_ONE", "timeZoneId": "Europe/Paris"}),
        ),
    )
    .await;
    assert_eq!(
        out["row"],
        json!({
            "small": 1, "int": 2147483647, "big": 9007199254740993i64,
            "num": 12345.678, "huge": "123456789012345678901234.5",
            "dbl": 1.5, "real": 0.1, "text": "x", "chr": "ab ", "bool": true,
            "ts": "2024-05-01T10:20:30.5", "tstz": "2024-05-01T12:20:30+02:00",
            "date": "2024-05-01", "time": "13:14:15",
            "json": {"a": [1, 2]}, "jsonb": {"b": null},
            "arr": [1, 2, 3], "arr2": [["a", "b"], ["c", null]],
            "uuid": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "bytes": "AQL/",
            "span": "P1Y2M3DT4H5M6S", "nothing": null, "forever": "infinity"
        })
    );
    // Types it does not read are refused with a way out.
    let err = run(
        &ctx,
        on(
            &pg,
            json!({"sql": "SELECT '10.0.0.1'::inet AS addr", "fetchType": "FETCH"}),
        ),
    )
    .await
    .unwrap_err();
    assert!(
        err.message.contains("addr") && err.message.contains("::text"),
        "{err:?}"
    );
}

#[tokio::test]
async fn store_streams_100k_rows_into_an_ion_file() {
    let pg = Postgres::start();
    let ctx = TestRunContext::new(json!({}));
    let out = ok(
        &ctx,
        on(
            &pg,
            json!({
                "sql": "SELECT g AS id, 'row ' || g AS name, g * 0.5 AS half FROM generate_series(1, 100000) g",
                "fetchType": "STORE",
                "fetchSize": 7000
            }),
        ),
    )
    .await;
    assert_eq!(out["size"], 100_000);
    let rows = read_ion(&ctx, out["uri"].as_str().unwrap()).await;
    assert_eq!(rows.len(), 100_000);
    assert_eq!(rows[0], json!({"id": 1, "name": "row 1", "half": 0.5}));
    assert_eq!(
        rows[99_999],
        json!({"id": 100000, "name": "row 100000", "half": 50000})
    );
}

#[tokio::test]
async fn errors_are_classified_and_name_the_server() {
    let pg = Postgres::start();
    with_orders(&pg);
    let ctx = TestRunContext::new(json!({}));
    let err = run(&ctx, on(&pg, json!({"sql": "SELEC 1"})))
        .await
        .unwrap_err();
    assert!(!err.retryable, "a syntax error is permanent: {err:?}");
    assert!(
        err.message.contains("42601") && err.message.contains("127.0.0.1"),
        "{err:?}"
    );
    let err = run(&ctx, on(&pg, json!({"sql": "SELECT * FROM nowhere"})))
        .await
        .unwrap_err();
    assert!(!err.retryable && err.message.contains("42P01"), "{err:?}");
    let err = run(
        &ctx,
        on(
            &pg,
            json!({"sql": "INSERT INTO orders VALUES (1, 'dup', 0)"}),
        ),
    )
    .await
    .unwrap_err();
    assert!(!err.retryable && err.message.contains("23505"), "{err:?}");

    // A refused connection may go away: retryable; the password is never shown.
    let closed = swoop_testkit::free_port();
    let err = run(
        &ctx,
        json!({"url": format!("jdbc:postgresql://127.0.0.1:{closed}/postgres"), "username": "postgres",
               "password": "hunter2-secret", "sql": "SELECT 1"}),
    )
    .await
    .unwrap_err();
    assert!(err.retryable, "{err:?}");
    assert!(!err.message.contains("hunter2"), "{err:?}");

    // Refused when the flow is built.
    for (props, needle) in [
        (json!({"sql": "SELECT 1; SELECT 2"}), "more than one"),
        (json!({"sql": "SELECT 1", "ssl": true}), "TLS"),
        (json!({"sql": "SELECT 1", "sslMode": "VERIFY_FULL"}), "TLS"),
        (
            json!({"sql": "SELECT 1", "timeZoneId": "Nowhere/Land"}),
            "time zone",
        ),
        (
            json!({"sql": "SELECT 1", "outputFiles": ["a.csv"]}),
            "embedded",
        ),
        (
            json!({"sql": "SELECT 1", "url": "jdbc:postgresql://h/db?foo=bar"}),
            "foo",
        ),
    ] {
        let err = build(on(&pg, props)).err().expect("refused");
        assert!(err.contains(needle), "{err}");
    }
}

#[tokio::test]
async fn after_sql_runs_in_the_same_transaction() {
    let pg = Postgres::start();
    pg.psql("postgres", "CREATE TABLE jobs (id int PRIMARY KEY, done bool NOT NULL DEFAULT false); INSERT INTO jobs VALUES (1), (2)");
    let ctx = TestRunContext::new(json!({}));
    let out = ok(
        &ctx,
        on(
            &pg,
            json!({
                "sql": "SELECT id FROM jobs WHERE NOT done ORDER BY id FOR UPDATE",
                "afterSQL": "UPDATE jobs SET done = true WHERE NOT done",
                "fetchType": "FETCH"
            }),
        ),
    )
    .await;
    assert_eq!(out["rows"], json!([{"id": 1}, {"id": 2}]));
    assert_eq!(
        pg.psql("postgres", "SELECT count(*) FROM jobs WHERE done"),
        "2"
    );

    // A failing afterSQL rolls the main statement back.
    let err = run(
        &ctx,
        on(
            &pg,
            json!({
                "sql": "INSERT INTO jobs VALUES (3) RETURNING id",
                "afterSQL": "UPDATE nowhere SET x = 1",
                "fetchType": "STORE"
            }),
        ),
    )
    .await
    .unwrap_err();
    assert!(err.message.contains("afterSQL"), "{err:?}");
    assert_eq!(pg.psql("postgres", "SELECT count(*) FROM jobs"), "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_shared_pool_bounds_server_connections() {
    let pg = Postgres::start();
    let url = pg.create_database("pooltest");
    let shared = Arc::new(SharedResources::new());
    let task = build(json!({
        "url": url, "username": "postgres", "connectionPoolSize": 4, "fetchType": "FETCH_ONE",
        "sql": "SELECT count(*)::int AS n, pg_sleep(0.005)::text AS s FROM pg_stat_activity WHERE datname = current_database()"
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
    let open: i64 = pg
        .psql(
            "postgres",
            "SELECT count(*) FROM pg_stat_activity WHERE datname = 'pooltest'",
        )
        .parse()
        .unwrap();
    assert!((1..=4).contains(&open), "{open} connections stay open");

    // Without pooling: no shared pool, the connection is closed after the run.
    let mut ctx = TestRunContext::new(json!({}));
    ctx.resources = Arc::new(SharedResources::new());
    let out = ok(
        &ctx,
        json!({"url": url, "username": "postgres", "connectionPooling": false, "sql": "SELECT 1 AS one", "fetchType": "FETCH_ONE"}),
    )
    .await;
    assert_eq!(out["row"]["one"], 1);
    assert_eq!(ctx.resources.len(), 0);
}

#[tokio::test]
async fn a_killed_query_stops_on_the_server_and_the_pool_lives_on() {
    let pg = Postgres::start();
    let url = pg.create_database("killtest");
    let ctx = TestRunContext::new(json!({}));
    let props = |sql: &str| json!({"url": url, "username": "postgres", "sql": sql, "fetchType": "FETCH_ONE", "connectionPoolSize": 1});
    let task = build(props("SELECT pg_sleep(30)")).unwrap();
    let started = Instant::now();
    let result = tokio::time::timeout(Duration::from_millis(500), task.run(&ctx)).await;
    assert!(result.is_err(), "the query was still running");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "dropping the future returns at once"
    );

    // The only pooled connection was abandoned; the next run gets a new one at once.
    let started = Instant::now();
    let out = ok(&ctx, props("SELECT 1 AS one")).await;
    assert_eq!(out["row"]["one"], 1);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    // The server stopped sleeping (the statement was cancelled, not left to run 30 s).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let sleeping = pg.psql(
            "postgres",
            "SELECT count(*) FROM pg_stat_activity WHERE datname = 'killtest' AND query LIKE '%pg_sleep(30)%' AND state = 'active'",
        );
        if sleeping == "0" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "pg_sleep(30) still runs on the server"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

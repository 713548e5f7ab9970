//! `swoop server local --db postgres://…` against a real PostgreSQL started by the test (initdb
//! on a free loopback port): executions run and survive a `kill -9` of the server, the health
//! check names the store and the cluster API shows the node. (Several nodes: `cluster.rs`.)

mod common;

use std::time::{Duration, Instant};

use common::{Server, free_port, http, json, swoop};
use swoop_testkit::postgres::Postgres;

const FLOW: &str = r#"id: hello
namespace: pg.test
tasks:
  - id: greet
    type: io.kestra.plugin.core.debug.Return
    format: "hello {{ execution.id }}"
"#;

fn wait_success(port: u16, id: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = http(port, "GET", &format!("/api/v1/executions/{id}"), None).unwrap();
        assert_eq!(status, 200, "{body}");
        let e = json(&body);
        if e["state"]["current"] == "SUCCESS" {
            return e;
        }
        assert!(
            Instant::now() < deadline,
            "execution {id} did not succeed: {e}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_server_runs_on_postgres_and_survives_a_kill_9() {
    let pg = Postgres::start();
    let url = format!("postgres://postgres@127.0.0.1:{}/postgres", pg.port());
    let data = tempfile::tempdir().unwrap();
    let flows = tempfile::tempdir().unwrap();
    std::fs::write(flows.path().join("hello.yml"), FLOW).unwrap();
    let port = free_port();
    let mut server =
        Server::start_with_args(data.path(), Some(flows.path()), port, &[], &["--db", &url]);
    let (_, health) = http(port, "GET", "/health", None).unwrap();
    assert_eq!(json(&health)["store"], "postgres", "{health}");
    let (status, body) = http(
        port,
        "POST",
        "/api/v1/executions/pg.test/hello",
        Some(("application/json", "{}")),
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let id = json(&body)["id"].as_str().unwrap().to_string();
    let e = wait_success(port, &id);
    assert_eq!(
        e["taskRunList"][0]["outputs"]["value"],
        format!("hello {id}")
    );

    // The node shows itself in the cluster API.
    let (status, body) = http(port, "GET", "/api/v1/cluster/nodes", None).unwrap();
    assert_eq!(status, 200, "{body}");
    let nodes = json(&body);
    assert_eq!(nodes["total"], 1, "{nodes}");
    assert_eq!(nodes["results"][0]["state"], "RUNNING");
    assert_eq!(nodes["results"][0]["thisNode"], true);

    // What was stored survives a kill -9 of the server.
    server.kill_9();
    let server =
        Server::start_with_args(data.path(), Some(flows.path()), port, &[], &["--db", &url]);
    let (status, body) = http(
        server.port,
        "GET",
        &format!("/api/v1/executions/{id}"),
        None,
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["state"]["current"], "SUCCESS");
}

#[test]
fn a_bad_db_is_named() {
    let out = swoop()
        .args([
            "server",
            "local",
            "--port",
            &free_port().to_string(),
            "--db",
            "mysql://x",
        ])
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("neither `sqlite` nor a PostgreSQL URL"),
        "{text}"
    );
}

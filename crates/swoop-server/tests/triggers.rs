//! Switching triggers off and on from the API, and restarting them: the router over a real
//! engine on SQLite (a Schedule trigger needs no server), with `oneshot` requests.

mod common;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use serde_json::Value;
use swoop_engine::Engine;
use swoop_store::{SqliteStore, Store};

/// A yearly schedule (it does not fire during the test) and a webhook.
const FLOW: &str = "id: switched
namespace: ui.triggers
tasks:
  - id: hello
    type: io.kestra.plugin.core.log.Log
    message: hello
triggers:
  - id: yearly
    type: io.kestra.plugin.core.trigger.Schedule
    cron: \"0 0 1 1 *\"
  - id: hook
    type: io.kestra.plugin.core.trigger.Webhook
    key: k3y
";

async fn call(router: &axum::Router, method: Method, uri: &str, body: &str) -> (StatusCode, Value) {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/x-yaml")
        .body(Body::from(body.to_string()))
        .expect("a request");
    let (status, _, bytes) = common::send(router, request).await;
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, json)
}

async fn state_of(router: &axum::Router, trigger_id: &str) -> Option<String> {
    let (status, body) = call(
        router,
        Method::GET,
        "/api/v1/triggers/search?namespace=ui.triggers",
        "",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body:#}");
    body["results"]
        .as_array()
        .expect("results")
        .iter()
        .find(|t| t["triggerId"] == trigger_id)
        .map(|t| t["state"].as_str().unwrap_or_default().to_string())
}

async fn open(dir: &std::path::Path) -> Arc<Engine> {
    let store: Arc<dyn Store> = SqliteStore::open_in(dir).expect("open the store");
    Engine::start(store, Arc::new(swoop_plugins::registry()))
        .await
        .expect("start the engine")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disable_enable_and_restart_a_trigger() {
    let (engine, dir) = common::engine().await;
    let router = swoop_server::app(engine.clone());
    let (status, body) = call(&router, Method::POST, "/api/v1/flows", FLOW).await;
    assert_eq!(status, StatusCode::OK, "{body:#}");
    assert_eq!(
        state_of(&router, "yearly").await.as_deref(),
        Some("RUNNING")
    );
    assert_eq!(
        state_of(&router, "hook").await,
        None,
        "a webhook runs no task"
    );

    let base = "/api/v1/triggers/ui.triggers/switched";
    let (status, body) = call(&router, Method::POST, &format!("{base}/yearly/disable"), "").await;
    assert_eq!(status, StatusCode::OK, "{body:#}");
    assert_eq!(body["state"], "DISABLED", "{body:#}");
    assert_eq!(body["type"], "io.kestra.plugin.core.trigger.Schedule");
    assert_eq!(
        state_of(&router, "yearly").await.as_deref(),
        Some("DISABLED")
    );

    // Restarting a disabled trigger is refused with what to do instead.
    let (status, body) = call(&router, Method::POST, &format!("{base}/yearly/restart"), "").await;
    assert_eq!(status, StatusCode::CONFLICT, "{body:#}");
    assert!(
        body["message"].as_str().unwrap().contains("enable"),
        "{body:#}"
    );

    // A disabled webhook answers 409; the other flows' webhooks are not concerned.
    let (status, body) = call(&router, Method::POST, &format!("{base}/hook/disable"), "").await;
    assert_eq!(status, StatusCode::OK, "{body:#}");
    assert_eq!(body["state"], "DISABLED", "{body:#}");
    let hook = "/api/v1/executions/webhook/ui.triggers/switched/k3y";
    let (status, body) = call(&router, Method::POST, hook, "").await;
    assert_eq!(status, StatusCode::CONFLICT, "{body:#}");
    assert!(
        body["message"].as_str().unwrap().contains("disabled"),
        "{body:#}"
    );

    // Disabled stays disabled across a restart of the server.
    engine.shutdown().await;
    drop(router);
    drop(engine);
    let engine = open(dir.path()).await;
    let router = swoop_server::app(engine.clone());
    assert_eq!(
        state_of(&router, "yearly").await.as_deref(),
        Some("DISABLED")
    );
    let (status, _) = call(&router, Method::POST, hook, "").await;
    assert_eq!(status, StatusCode::CONFLICT);

    // Enabled again: it runs, and the webhook answers.
    let (status, body) = call(&router, Method::POST, &format!("{base}/yearly/enable"), "").await;
    assert_eq!(status, StatusCode::OK, "{body:#}");
    assert_eq!(body["state"], "RUNNING", "{body:#}");
    let (status, _) = call(&router, Method::POST, &format!("{base}/hook/enable"), "").await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = call(&router, Method::POST, hook, "").await;
    assert_eq!(status, StatusCode::OK, "{body:#}");

    // A restart starts a new task: its status is new.
    let before = state_since(&router).await;
    let (status, body) = call(&router, Method::POST, &format!("{base}/yearly/restart"), "").await;
    assert_eq!(status, StatusCode::OK, "{body:#}");
    assert_eq!(body["state"], "RUNNING", "{body:#}");
    let date = |s: &str| chrono::DateTime::parse_from_rfc3339(s).expect("an RFC 3339 date");
    assert!(
        date(body["since"].as_str().unwrap()) > date(&before),
        "restarted at {} after {before}",
        body["since"]
    );

    // Unknown ones are named, with what exists.
    let (status, body) = call(&router, Method::POST, &format!("{base}/nope/disable"), "").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body:#}");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("yearly, hook"), "{message}");
    let (status, _) = call(
        &router,
        Method::POST,
        "/api/v1/triggers/ui.triggers/nope/yearly/disable",
        "",
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    engine.shutdown().await;
}

async fn state_since(router: &axum::Router) -> String {
    let (_, body) = call(
        router,
        Method::GET,
        "/api/v1/triggers/search?flowId=switched",
        "",
    )
    .await;
    body["results"][0]["since"]
        .as_str()
        .expect("a since")
        .to_string()
}

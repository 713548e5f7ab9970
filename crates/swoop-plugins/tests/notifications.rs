//! The Slack incoming webhook against an in-process axum server on loopback that records what it
//! receives.

#![cfg(feature = "notifications")]

mod http_support;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use http_support::{refused, serve, task, try_task};
use serde_json::{Value, json};
use swoop_core::registry::TaskError;
use swoop_core::testing::TestRunContext;

const SLACK: &str = "io.kestra.plugin.notifications.slack.SlackIncomingWebhook";

/// What the webhook received, request by request: content type, `X-Team` header, body.
#[derive(Default)]
struct Received(std::sync::Mutex<Vec<(String, String, String)>>);

async fn hook(
    State(received): State<Arc<Received>>,
    Path(code): Path<u16>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, &'static str) {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    received.0.lock().expect("the record").push((
        header("content-type"),
        header("x-team"),
        String::from_utf8_lossy(&body).into_owned(),
    ));
    let status = StatusCode::from_u16(code).expect("a valid status");
    let answer = if status.is_success() {
        "ok"
    } else {
        "invalid_token"
    };
    (status, answer)
}

async fn start() -> (String, Arc<Received>) {
    let received = Arc::new(Received::default());
    let router = Router::new()
        .route("/services/T000/B000/{code}", post(hook))
        .with_state(received.clone());
    (format!("http://{}", serve(router).await), received)
}

async fn run(props: Value) -> Result<(), TaskError> {
    let ctx = TestRunContext::new(json!({"inputs": {"who": "Ada"}}));
    let out = tokio::time::timeout(Duration::from_secs(20), task(SLACK, props).run(&ctx))
        .await
        .expect("the webhook call ends in time")?;
    assert!(out.is_empty(), "the task has no outputs");
    Ok(())
}

fn last(received: &Received) -> (String, String, Value) {
    let all = received.0.lock().expect("the record");
    let (ct, team, body) = all.last().cloned().expect("a request arrived");
    (ct, team, serde_json::from_str(&body).expect("a JSON body"))
}

#[tokio::test]
async fn posts_the_rendered_payload_as_json() {
    let (base, received) = start().await;
    run(json!({
        "url": format!("{base}/services/T000/B000/200"),
        "payload": "{\"text\": \"Flow {{ flow.namespace }}.{{ flow.id }} by {{ inputs.who }}\"}",
        "options": {"headers": {"X-Team": "data"}}
    }))
    .await
    .unwrap();
    let (content_type, team, body) = last(&received);
    assert_eq!(content_type, "application/json");
    assert_eq!(team, "data");
    assert_eq!(body, json!({"text": "Flow test.flow by Ada"}));
}

#[tokio::test]
async fn message_text_becomes_mrkdwn() {
    let (base, received) = start().await;
    run(json!({
        "url": format!("{base}/services/T000/B000/200"),
        "messageText": "**{{ inputs.who }}** failed, see [logs](http://k/x)"
    }))
    .await
    .unwrap();
    assert_eq!(
        last(&received).2,
        json!({"text": "*Ada* failed, see <http://k/x|logs>"})
    );
    // JSON text is sent as it is.
    run(json!({
        "url": format!("{base}/services/T000/B000/200"),
        "messageText": "{\"blocks\": []}"
    }))
    .await
    .unwrap();
    assert_eq!(last(&received).2, json!({"blocks": []}));
}

#[tokio::test]
async fn failures_are_classified_and_never_show_the_url() {
    let (base, _) = start().await;
    let e = run(json!({
        "url": format!("{base}/services/T000/B000/500"),
        "payload": "{\"text\": \"x\"}"
    }))
    .await
    .unwrap_err();
    assert!(e.retryable, "{}", e.message);
    assert!(e.message.contains("500"), "{}", e.message);
    assert!(
        !e.message.contains("B000"),
        "the secret URL leaked: {}",
        e.message
    );

    let e = run(json!({
        "url": format!("{base}/services/T000/B000/403"),
        "payload": "{\"text\": \"x\"}"
    }))
    .await
    .unwrap_err();
    assert!(!e.retryable, "{}", e.message);
    assert!(e.message.contains("invalid_token"), "{}", e.message);

    let e = run(json!({
        "url": format!("{base}/services/T000/B000/429"),
        "payload": "{\"text\": \"x\"}"
    }))
    .await
    .unwrap_err();
    assert!(e.retryable, "{}", e.message);

    let e = run(json!({
        "url": format!("{base}/services/T000/B000/200"),
        "payload": "not json {{ inputs.who }}"
    }))
    .await
    .unwrap_err();
    assert!(!e.retryable);
    assert!(e.message.contains("not valid JSON"), "{}", e.message);
}

#[test]
fn the_schema_and_names() {
    for name in [
        SLACK,
        "io.kestra.plugin.slack.SlackIncomingWebhook",
        "io.kestra.plugin.slack.notifications.SlackIncomingWebhook",
    ] {
        assert!(
            try_task(name, json!({"url": "http://h", "payload": "{}"})).is_ok(),
            "{name}"
        );
    }
    let e = refused(SLACK, json!({"payload": "{}"}));
    assert!(e.contains("url"), "{e}");
    let e = refused(
        SLACK,
        json!({"url": "http://h", "payload": "{}", "messageText": "x"}),
    );
    assert!(e.contains("not both"), "{e}");
    let e = refused(
        SLACK,
        json!({"url": "http://h", "payload": "{}", "options": {"connectionPoolIdleTimeout": "PT1S"}}),
    );
    assert!(e.contains("connectionPoolIdleTimeout"), "{e}");
}

#[test]
fn the_example_is_valid() {
    http_support::check_example("slack-notify.yml");
}

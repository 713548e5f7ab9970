//! `GET /metrics` through the whole router (a real engine on SQLite, `oneshot`): the OpenMetrics
//! text with executions by flow and state, the store writer's histograms and HTTP latency by
//! route. The realtime triggers' series are checked by the conformance suite of every source.

mod common;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};

/// The status, the content type and the body as text.
async fn send(
    router: &Router,
    method: Method,
    uri: &str,
    body: &str,
) -> (StatusCode, String, String) {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::CONTENT_TYPE, "application/x-yaml")
        .body(Body::from(body.to_string()))
        .unwrap();
    let (status, headers, body) = common::send(router, request).await;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or_default().to_string())
        .unwrap_or_default();
    (
        status,
        content_type,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

/// The value of the one sample `series` (name and labels exactly as printed).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_executions_store_commits_and_requests() {
    let (engine, _dir) = common::engine().await;
    let router = swoop_server::app(engine.clone());
    let ok = "id: ok\nnamespace: metrics.test\ntasks:\n  - id: t\n    type: io.kestra.plugin.core.log.Log\n    message: hi\n";
    let bad = "id: bad\nnamespace: metrics.test\ntasks:\n  - id: t\n    type: io.kestra.plugin.core.execution.Fail\n";
    for flow in [ok, bad] {
        let (status, _, body) = send(&router, Method::POST, "/api/v1/flows", flow).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    for _ in 0..3 {
        let (status, _, body) = send(
            &router,
            Method::POST,
            "/api/v1/executions/metrics.test/ok?wait=true",
            "",
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let (status, _, body) = send(
        &router,
        Method::POST,
        "/api/v1/executions/metrics.test/bad?wait=true",
        "",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _, _) = send(&router, Method::GET, "/api/v1/executions/nope", "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, content_type, text) = send(&router, Method::GET, "/metrics", "").await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    assert!(text.trim_end().ends_with("# EOF"), "{text}");
    let value =
        |series: &str| sample(&text, series).unwrap_or_else(|| panic!("no `{series}` in:\n{text}"));
    assert_eq!(
        value(r#"swoop_executions_created_total{namespace="metrics.test",flow="ok"}"#),
        3.0
    );
    assert_eq!(
        value(
            r#"swoop_executions_ended_total{namespace="metrics.test",flow="ok",state="SUCCESS"}"#
        ),
        3.0
    );
    assert_eq!(
        value(
            r#"swoop_executions_ended_total{namespace="metrics.test",flow="bad",state="FAILED"}"#
        ),
        1.0
    );
    assert_eq!(value("swoop_executions_running"), 0.0);
    // Two flows and four executions (created, ended) and their logs were written.
    assert!(value("swoop_store_commit_seconds_count") >= 4.0, "{text}");
    assert!(value("swoop_store_batch_size_count") >= 4.0, "{text}");
    // Latency by route pattern, not by path.
    assert_eq!(
        value(
            r#"swoop_http_request_duration_seconds_count{method="POST",route="/api/v1/executions/{namespace}/{flow_id}",status="200"}"#
        ),
        4.0
    );
    assert_eq!(
        value(
            r#"swoop_http_request_duration_seconds_count{method="GET",route="/api/v1/executions/{id}",status="404"}"#
        ),
        1.0
    );
    assert!(!text.contains("/api/v1/executions/nope"), "{text}");
    engine.shutdown().await;
}

//! Request and Download against an in-process axum server on loopback.

#![cfg(feature = "http")]

mod http_support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Multipart, Path, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use http_support::{closed_addr, refused, serve, task, try_task};
use serde_json::{Map, Value, json};
use swoop_core::registry::TaskError;
use swoop_core::resources::SharedResources;
use swoop_core::storage::StoragePath;
use swoop_core::testing::TestRunContext;
use tokio::io::AsyncReadExt;
use tokio::sync::Notify;

const REQUEST: &str = "io.kestra.plugin.core.http.Request";
const DOWNLOAD: &str = "io.kestra.plugin.core.http.Download";
/// Every call here is bounded: nothing may hang the suite.
const BOUND: Duration = Duration::from_secs(20);

#[derive(Clone, Default)]
struct Server {
    /// Notified when a request reaches `/slow`.
    slow_arrived: Arc<Notify>,
    /// Notified when the server drops a `/slow` handler (its client went away).
    slow_dropped: Arc<Notify>,
}

async fn echo(method: Method, headers: HeaderMap, body: Bytes) -> axum::Json<Value> {
    let headers: BTreeMap<String, String> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("?").to_string()))
        .collect();
    axum::Json(json!({
        "method": method.as_str(),
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
    }))
}

async fn parts(mut form: Multipart) -> axum::Json<Value> {
    let mut out = Vec::new();
    while let Some(field) = form.next_field().await.expect("a multipart field") {
        let name = field.name().unwrap_or("").to_string();
        let file_name = field.file_name().map(str::to_string);
        let content_type = field.content_type().map(str::to_string);
        let data = field.bytes().await.expect("the field's bytes");
        out.push(json!({
            "name": name,
            "fileName": file_name,
            "contentType": content_type,
            "text": String::from_utf8_lossy(&data),
        }));
    }
    axum::Json(Value::Array(out))
}

async fn status(Path(code): Path<u16>) -> Response {
    let code = StatusCode::from_u16(code).expect("a valid status");
    (code, format!("status {}", code.as_u16())).into_response()
}

/// `n` bytes of a repeating pattern, with a Content-Length.
fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| b'a' + (i % 26) as u8).collect()
}

async fn big(Path(n): Path<usize>) -> Response {
    let mut response = Response::new(Body::from(pattern(n)));
    response.headers_mut().insert(
        header::CONTENT_DISPOSITION,
        "attachment; filename=\"data.bin\""
            .parse()
            .expect("a header"),
    );
    response
}

/// Notifies its `Notify` when dropped.
struct OnDrop(Arc<Notify>);

impl Drop for OnDrop {
    fn drop(&mut self) {
        self.0.notify_one();
    }
}

async fn slow(State(server): State<Server>) -> &'static str {
    let _guard = OnDrop(server.slow_dropped.clone());
    server.slow_arrived.notify_one();
    std::future::pending::<()>().await;
    "never"
}

async fn start() -> (String, Server) {
    let server = Server::default();
    let router = Router::new()
        .route("/echo", any(echo))
        .route("/parts", post(parts))
        .route(
            "/redirect",
            get(|| async { (StatusCode::FOUND, [(header::LOCATION, "/echo")]) }),
        )
        .route("/status/{code}", any(status))
        .route("/big/{n}", get(big))
        .route("/empty", get(|| async { "" }))
        .route("/binary", get(|| async { vec![0xffu8, 0xfe, 0x00, 0x41] }))
        .route("/slow", get(slow))
        .with_state(server.clone());
    let addr = serve(router).await;
    (format!("http://{addr}"), server)
}

async fn run(
    type_name: &str,
    props: Value,
    ctx: &TestRunContext,
) -> Result<Map<String, Value>, TaskError> {
    let task = task(type_name, props);
    tokio::time::timeout(BOUND, task.run(ctx))
        .await
        .expect("the task ends in time")
}

fn ctx() -> TestRunContext {
    TestRunContext::new(json!({"inputs": {"name": "Ada", "token": "t0ken"}}))
}

/// The echo server's view of the request: the task's `body` output, parsed.
fn echoed(out: &Map<String, Value>) -> Value {
    let body = out["body"].as_str().expect("a text body");
    serde_json::from_str(body).expect("the echo is JSON")
}

#[tokio::test]
async fn get_with_rendered_headers() {
    let (base, _) = start().await;
    let ctx = ctx();
    let out = run(
        REQUEST,
        json!({
            "uri": format!("{base}/echo?q=1"),
            "headers": {"X-Custom": "hello {{ inputs.name }}", "Accept": "application/json"}
        }),
        &ctx,
    )
    .await
    .unwrap();
    assert_eq!(out["code"], 200);
    assert_eq!(out["uri"], format!("{base}/echo?q=1"));
    let seen = echoed(&out);
    assert_eq!(seen["method"], "GET");
    assert_eq!(seen["headers"]["x-custom"], "hello Ada");
    assert_eq!(seen["headers"]["accept"], "application/json");
    // Kestra sends the default contentType even without a body.
    assert_eq!(seen["headers"]["content-type"], "application/json");
    assert_eq!(out["headers"]["content-type"], json!(["application/json"]));
}

#[tokio::test]
async fn post_a_json_body() {
    let (base, _) = start().await;
    let ctx = ctx();
    let out = run(
        REQUEST,
        json!({
            "uri": format!("{base}/echo"),
            "method": "post",
            "body": "{\"user\": \"{{ inputs.name }}\"}"
        }),
        &ctx,
    )
    .await
    .unwrap();
    let seen = echoed(&out);
    assert_eq!(seen["method"], "POST");
    assert_eq!(seen["body"], "{\"user\": \"Ada\"}");
    assert_eq!(
        seen["headers"]["content-type"],
        "application/json; charset=UTF-8"
    );
}

#[tokio::test]
async fn form_data_is_url_encoded() {
    let (base, _) = start().await;
    let ctx = ctx();
    let out = run(
        REQUEST,
        json!({
            "uri": format!("{base}/echo"),
            "method": "POST",
            "formData": {"user": "{{ inputs.name }}", "note": "a b&c", "n": 5}
        }),
        &ctx,
    )
    .await
    .unwrap();
    let seen = echoed(&out);
    assert_eq!(seen["body"], "user=Ada&note=a+b%26c&n=5");
    assert_eq!(
        seen["headers"]["content-type"],
        "application/x-www-form-urlencoded; charset=UTF-8"
    );
}

#[tokio::test]
async fn multipart_streams_a_file_from_internal_storage() {
    let (base, _) = start().await;
    let ctx = ctx();
    let (uri, _) = ctx
        .storage
        .put("input.txt", &mut &b"hello from storage"[..])
        .await
        .unwrap();
    let out = run(
        REQUEST,
        json!({
            "uri": format!("{base}/parts"),
            "method": "POST",
            "contentType": "multipart/form-data",
            "formData": {
                "file": uri,
                "renamed": {"name": "report.csv", "content": uri},
                "user": "{{ inputs.name }}",
                "meta": {"a": 1}
            }
        }),
        &ctx,
    )
    .await
    .unwrap();
    let parts = echoed(&out);
    assert_eq!(parts[0]["name"], "file");
    assert_eq!(parts[0]["fileName"], "input.txt");
    assert_eq!(parts[0]["contentType"], "application/octet-stream");
    assert_eq!(parts[0]["text"], "hello from storage");
    assert_eq!(parts[1]["fileName"], "report.csv");
    assert_eq!(parts[1]["text"], "hello from storage");
    assert_eq!(parts[2]["name"], "user");
    assert_eq!(parts[2]["fileName"], Value::Null);
    assert_eq!(parts[2]["text"], "Ada");
    assert_eq!(parts[3]["text"], "{\"a\":1}");

    let e = run(
        REQUEST,
        json!({
            "uri": format!("{base}/parts"),
            "method": "POST",
            "contentType": "multipart/form-data",
            "formData": {"file": "kestra:///other/flow/executions/x/file.txt"}
        }),
        &ctx,
    )
    .await
    .unwrap_err();
    assert!(!e.retryable);
    assert!(e.message.contains("formData.file"), "{}", e.message);
}

#[tokio::test]
async fn basic_and_bearer_auth() {
    let (base, _) = start().await;
    let ctx = ctx();
    let out = run(
        REQUEST,
        json!({
            "uri": format!("{base}/echo"),
            "options": {"auth": {"type": "BASIC", "username": "user", "password": "pass"}}
        }),
        &ctx,
    )
    .await
    .unwrap();
    assert_eq!(
        echoed(&out)["headers"]["authorization"],
        "Basic dXNlcjpwYXNz"
    );
    let out = run(
        REQUEST,
        json!({
            "uri": format!("{base}/echo"),
            "options": {"auth": {"type": "BEARER", "token": "{{ inputs.token }}"}}
        }),
        &ctx,
    )
    .await
    .unwrap();
    assert_eq!(echoed(&out)["headers"]["authorization"], "Bearer t0ken");
}

#[tokio::test]
async fn redirects_are_followed_unless_disabled() {
    let (base, _) = start().await;
    let ctx = ctx();
    let out = run(REQUEST, json!({"uri": format!("{base}/redirect")}), &ctx)
        .await
        .unwrap();
    assert_eq!(out["code"], 200);
    assert_eq!(echoed(&out)["method"], "GET");
    let out = run(
        REQUEST,
        json!({"uri": format!("{base}/redirect"), "options": {"followRedirects": false}}),
        &ctx,
    )
    .await
    .unwrap();
    assert_eq!(out["code"], 302);
    assert_eq!(out["headers"]["location"], json!(["/echo"]));
}

#[tokio::test]
async fn a_404_fails_permanently_unless_allowed() {
    let (base, _) = start().await;
    let ctx = ctx();
    let uri = format!("{base}/status/404");
    let e = run(REQUEST, json!({"uri": uri}), &ctx).await.unwrap_err();
    assert!(!e.retryable, "a 404 is not worth retrying");
    assert!(e.message.contains("404"), "{}", e.message);
    assert!(e.message.contains("allowFailed"), "{}", e.message);

    let out = run(
        REQUEST,
        json!({"uri": uri, "options": {"allowFailed": true}}),
        &ctx,
    )
    .await
    .unwrap();
    assert_eq!(out["code"], 404);
    assert_eq!(out["body"], "status 404");
    // The deprecated top-level `allowFailed` too.
    let out = run(REQUEST, json!({"uri": uri, "allowFailed": true}), &ctx)
        .await
        .unwrap();
    assert_eq!(out["code"], 404);
}

#[tokio::test]
async fn server_errors_and_throttling_are_retryable() {
    let (base, _) = start().await;
    let ctx = ctx();
    for code in [503, 500, 429] {
        let e = run(
            REQUEST,
            json!({"uri": format!("{base}/status/{code}")}),
            &ctx,
        )
        .await
        .unwrap_err();
        assert!(e.retryable, "{code} should be retryable: {}", e.message);
        assert!(
            e.message.contains(&format!("status {code}")),
            "{}",
            e.message
        );
    }
}

#[tokio::test]
async fn connection_refused_is_retryable() {
    let addr = closed_addr().await;
    let ctx = ctx();
    let e = run(
        REQUEST,
        json!({"uri": format!("http://user:secret@{addr}/x?api_key=k")}),
        &ctx,
    )
    .await
    .unwrap_err();
    assert!(e.retryable, "{}", e.message);
    assert!(e.message.contains("cannot connect"), "{}", e.message);
    assert!(
        !e.message.contains("secret"),
        "credentials leaked: {}",
        e.message
    );
    assert!(
        !e.message.contains("api_key"),
        "query leaked: {}",
        e.message
    );
}

#[tokio::test]
async fn a_server_that_never_answers_times_out_promptly() {
    let (base, _) = start().await;
    let ctx = ctx();
    let started = Instant::now();
    let e = run(
        REQUEST,
        json!({
            "uri": format!("{base}/slow"),
            "options": {"timeout": {"readIdleTimeout": "PT0.3S"}}
        }),
        &ctx,
    )
    .await
    .unwrap_err();
    assert!(e.retryable, "{}", e.message);
    assert!(e.message.contains("timed out"), "{}", e.message);
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_killed_request_stops_promptly() {
    let (base, server) = start().await;
    let ctx = ctx();
    let task = task(REQUEST, json!({"uri": format!("{base}/slow")}));

    // Dropped (what the engine does on kill/timeout): the connection closes, and the server
    // sees its handler abandoned.
    let mut run = task.run(&ctx);
    tokio::select! {
        _ = &mut run => panic!("the slow request cannot finish"),
        () = server.slow_arrived.notified() => {}
    }
    drop(run);
    tokio::time::timeout(Duration::from_secs(2), server.slow_dropped.notified())
        .await
        .expect("the server sees the request abandoned promptly");

    // Cancelled through the token: the run returns at once.
    let mut run = task.run(&ctx);
    tokio::select! {
        _ = &mut run => panic!("the slow request cannot finish"),
        () = server.slow_arrived.notified() => {}
    }
    ctx.cancel.cancel();
    let started = Instant::now();
    let e = tokio::time::timeout(Duration::from_secs(2), run)
        .await
        .expect("a cancelled request stops promptly")
        .unwrap_err();
    assert!(e.message.contains("cancelled"), "{}", e.message);
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn bodies_that_are_not_text_or_too_big_point_to_download() {
    let (base, _) = start().await;
    let ctx = ctx();
    let e = run(REQUEST, json!({"uri": format!("{base}/binary")}), &ctx)
        .await
        .unwrap_err();
    assert!(!e.retryable);
    assert!(e.message.contains("UTF-8"), "{}", e.message);
    assert!(e.message.contains("Download"), "{}", e.message);

    let e = run(
        REQUEST,
        json!({"uri": format!("{base}/big/5000"), "options": {"maxContentLength": 1000}}),
        &ctx,
    )
    .await
    .unwrap_err();
    assert!(e.message.contains("Download"), "{}", e.message);
    let e = run(
        REQUEST,
        json!({"uri": format!("{base}/big/{}", 11 * 1024 * 1024)}),
        &ctx,
    )
    .await
    .unwrap_err();
    assert!(
        e.message.contains("more than the 10485760 bytes"),
        "{}",
        e.message
    );
}

#[tokio::test]
async fn download_streams_a_multi_megabyte_body_to_storage() {
    let (base, _) = start().await;
    let ctx = ctx();
    let size = 5 * 1024 * 1024 + 123;
    let out = run(DOWNLOAD, json!({"uri": format!("{base}/big/{size}")}), &ctx)
        .await
        .unwrap();
    assert_eq!(out["code"], 200);
    assert_eq!(out["length"], size);
    assert_eq!(out["headers"]["content-length"], json!([size.to_string()]));
    let uri = out["uri"].as_str().unwrap();
    assert!(uri.starts_with("kestra:///test/flow/executions/exec1/tasks/task/run1/"));
    assert!(
        uri.ends_with("/data.bin"),
        "named after Content-Disposition: {uri}"
    );
    let path = StoragePath::parse(uri).unwrap();
    assert_eq!(
        ctx.storage.files.storage.size(&path).unwrap(),
        Some(size as u64)
    );
    let mut stored = Vec::new();
    ctx.storage
        .open(uri)
        .await
        .unwrap()
        .read_to_end(&mut stored)
        .await
        .unwrap();
    assert!(stored == pattern(size), "the stored bytes differ");
}

#[tokio::test]
async fn download_failures_and_empty_bodies() {
    let (base, _) = start().await;
    let ctx = ctx();
    let e = run(DOWNLOAD, json!({"uri": format!("{base}/status/404")}), &ctx)
        .await
        .unwrap_err();
    assert!(!e.retryable);
    let e = run(DOWNLOAD, json!({"uri": format!("{base}/empty")}), &ctx)
        .await
        .unwrap_err();
    assert!(e.message.contains("failOnEmptyResponse"), "{}", e.message);
    let out = run(
        DOWNLOAD,
        json!({"uri": format!("{base}/empty"), "failOnEmptyResponse": false}),
        &ctx,
    )
    .await
    .unwrap();
    assert_eq!(out["length"], 0);
    assert!(out["uri"].as_str().unwrap().ends_with("/empty"));
    // The alias answers too.
    let out = run(
        "io.kestra.plugin.fs.http.Download",
        json!({"uri": format!("{base}/big/10")}),
        &ctx,
    )
    .await
    .unwrap();
    assert_eq!(out["length"], 10);
}

#[tokio::test]
async fn one_client_is_shared_by_every_execution() {
    let (base, _) = start().await;
    let shared = Arc::new(SharedResources::new());
    let task = task(REQUEST, json!({"uri": format!("{base}/echo")}));
    for _ in 0..50 {
        let mut ctx = ctx();
        ctx.resources = shared.clone();
        let out = tokio::time::timeout(BOUND, task.run(&ctx))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(out["code"], 200);
        assert_eq!(shared.len(), 1);
    }
    // Another configuration is another client.
    let other = http_support::task(
        DOWNLOAD,
        json!({"uri": format!("{base}/big/10"), "options": {"followRedirects": false}}),
    );
    let mut ctx = ctx();
    ctx.resources = shared.clone();
    other.run(&ctx).await.unwrap();
    assert_eq!(shared.len(), 2);
}

#[tokio::test]
async fn logs_show_the_exchange_without_credentials() {
    let (base, _) = start().await;
    let ctx = ctx();
    run(
        REQUEST,
        json!({
            "uri": format!("{base}/echo"),
            "method": "POST",
            "body": "ping",
            "options": {
                "logs": ["REQUEST_HEADERS", "REQUEST_BODY", "RESPONSE_HEADERS", "RESPONSE_BODY"],
                "auth": {"type": "BEARER", "token": "s3cret"}
            }
        }),
        &ctx,
    )
    .await
    .unwrap();
    let logs = ctx.messages().join("\n");
    assert!(logs.contains("authorization: ***"), "{logs}");
    // (The echo's body repeats the token: only the request's own lines must hide it.)
    let request_lines: Vec<String> = ctx
        .messages()
        .into_iter()
        .filter(|m| m.starts_with("request "))
        .collect();
    assert_eq!(request_lines.len(), 2, "{logs}");
    assert!(
        request_lines.iter().all(|l| !l.contains("s3cret")),
        "{logs}"
    );
    assert!(logs.contains("body: ping"), "{logs}");
    assert!(logs.contains("response 200 OK"), "{logs}");
    assert!(logs.contains("\"method\":\"POST\""), "{logs}");
}

#[test]
fn unsupported_properties_are_refused_when_the_flow_is_built() {
    let e = refused(
        REQUEST,
        json!({"uri": "http://h", "options": {"auth": {"type": "DIGEST", "username": "u"}}}),
    );
    assert!(e.contains("DIGEST"), "{e}");
    let e = refused(
        REQUEST,
        json!({"uri": "http://h", "options": {"proxy": {"address": "p"}}}),
    );
    assert!(e.contains("proxy"), "{e}");
    let e = refused(REQUEST, json!({"uri": "http://h", "encryptBody": true}));
    assert!(e.contains("encryptBody"), "{e}");
    let e = refused(REQUEST, json!({"uri": "http://h", "nope": 1}));
    assert!(e.contains("nope"), "{e}");
    let e = refused(REQUEST, json!({"method": "GET"}));
    assert!(e.contains("uri"), "{e}");
    assert!(try_task(DOWNLOAD, json!({"uri": "http://h", "encryptBody": false})).is_err());
    assert!(
        try_task(
            "io.kestra.plugin.fs.http.Request",
            json!({"uri": "http://h"})
        )
        .is_ok()
    );
}

#[test]
fn the_examples_are_valid() {
    http_support::check_example("http-request.yml");
    #[cfg(feature = "core")]
    http_support::check_example("labels.yml");
}

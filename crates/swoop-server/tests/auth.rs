//! Basic authentication through the whole router (a real engine on SQLite, `oneshot`, no
//! socket): 401 without or with wrong credentials, the API with the right ones, webhooks and
//! `/health` open.

mod common;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use base64::Engine as _;
use serde_json::Value;
use swoop_server::{BasicAuth, ServerOptions};

/// The status, the body as JSON and the `WWW-Authenticate` challenge.
async fn send(router: &Router, request: Request<Body>) -> (StatusCode, Value, Option<String>) {
    let (status, headers, body) = common::send(router, request).await;
    let challenge = headers
        .get(header::WWW_AUTHENTICATE)
        .map(|v| v.to_str().unwrap_or_default().to_string());
    (
        status,
        serde_json::from_slice(&body).unwrap_or(Value::Null),
        challenge,
    )
}

fn request(method: Method, uri: &str, credentials: Option<&str>, body: &str) -> Request<Body> {
    let mut builder = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::CONTENT_TYPE, "application/x-yaml");
    if let Some(credentials) = credentials {
        let encoded = base64::engine::general_purpose::STANDARD.encode(credentials);
        builder = builder.header(header::AUTHORIZATION, format!("Basic {encoded}"));
    }
    builder.body(Body::from(body.to_string())).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_needs_credentials_but_webhooks_and_health_do_not() {
    let (engine, _dir) = common::engine().await;
    let auth = BasicAuth::new("admin", "s3cret").unwrap();
    let router = swoop_server::app_with(engine.clone(), ServerOptions { auth: Some(auth) });
    let flow = "id: hook\nnamespace: auth.test\ntasks:\n  - id: t\n    type: io.kestra.plugin.core.log.Log\n    message: hi\ntriggers:\n  - id: w\n    type: io.kestra.plugin.core.trigger.Webhook\n    key: k3y\n";

    for (method, uri) in [
        (Method::GET, "/"),
        (Method::GET, "/api/v1/flows/search"),
        (Method::POST, "/api/v1/flows"),
        (Method::GET, "/api/v1/executions/search"),
        (Method::GET, "/api/v1/triggers/search"),
    ] {
        for credentials in [None, Some("admin:wrong"), Some("someone:s3cret")] {
            let (status, body, challenge) =
                send(&router, request(method.clone(), uri, credentials, flow)).await;
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{method} {uri} with {credentials:?}: {body}"
            );
            assert_eq!(challenge.as_deref(), Some(r#"Basic realm="swoop""#));
            assert!(
                body["message"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("authentication"),
                "{body}"
            );
        }
    }
    // Nothing was created by the refused POSTs.
    assert!(engine.flow("auth.test", "hook").is_none());

    let ok = Some("admin:s3cret");
    let (status, body, _) = send(&router, request(Method::POST, "/api/v1/flows", ok, flow)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body, _) = send(
        &router,
        request(Method::GET, "/api/v1/flows/search", ok, ""),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["total"], 1, "{body}");

    // The webhook answers with its key alone, and /health with nothing.
    let (status, body, _) = send(
        &router,
        request(
            Method::POST,
            "/api/v1/executions/webhook/auth.test/hook/k3y",
            None,
            "",
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["namespace"], "auth.test", "{body}");
    let (status, _, _) = send(
        &router,
        request(
            Method::POST,
            "/api/v1/executions/webhook/auth.test/hook/wrong",
            None,
            "",
        ),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body, _) = send(&router, request(Method::GET, "/health", None, "")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "UP", "{body}");
    engine.shutdown().await;
}

//! What the web UI asks of the server beyond the core API: its embedded files (compressed,
//! cached, light), a flow's revisions, replaying an execution, and the executions' filters by
//! time, label and trigger.

mod common;

use std::io::Read;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use serde_json::Value;

async fn call(
    router: &axum::Router,
    method: Method,
    uri: &str,
    content_type: &str,
    body: &str,
) -> (StatusCode, Value) {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", content_type)
        .body(Body::from(body.to_string()))
        .expect("a request");
    let (status, _, bytes) = common::send(router, request).await;
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, json)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ui_files_are_embedded_compressed_and_cached() {
    let (engine, _dir) = common::engine().await;
    let router = swoop_server::app(engine);
    let get = |uri: &str, headers: &[(header::HeaderName, &str)]| {
        let mut request = Request::builder().uri(uri);
        for (name, value) in headers {
            request = request.header(name, *value);
        }
        request.body(Body::empty()).expect("a request")
    };
    let (status, headers, page) = common::send(&router, get("/", &[])).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let page = String::from_utf8_lossy(&page).to_string();
    for file in ["/ui/app.js", "/ui/app.css"] {
        assert!(page.contains(file), "the page loads {file}: {page}");
        let (status, headers, plain) = common::send(&router, get(file, &[])).await;
        assert_eq!(status, StatusCode::OK, "{file}");
        assert!(!plain.is_empty(), "{file} is empty");
        assert!(headers.get(header::CONTENT_ENCODING).is_none());
        let etag = headers[header::ETAG].to_str().unwrap().to_string();

        let (status, headers, gzipped) =
            common::send(&router, get(file, &[(header::ACCEPT_ENCODING, "br, gzip")])).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[header::CONTENT_ENCODING], "gzip", "{file}");
        let mut unzipped = Vec::new();
        flate2::read::GzDecoder::new(&gzipped[..])
            .read_to_end(&mut unzipped)
            .expect("valid gzip");
        assert_eq!(unzipped, plain.to_vec(), "{file} decompresses to itself");

        let (status, _, body) =
            common::send(&router, get(file, &[(header::IF_NONE_MATCH, &etag)])).await;
        assert_eq!(status, StatusCode::NOT_MODIFIED, "{file}");
        assert!(body.is_empty());
    }
    let (status, _, _) = common::send(&router, get("/ui/../Cargo.toml", &[])).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // The issue's budget for a first load.
    let compressed = swoop_server::first_load_compressed_bytes();
    assert!(
        compressed < 500 * 1024,
        "the UI's first load is {compressed} bytes compressed, over 500 KB"
    );
    // The UI is the real app, not a placeholder.
    assert!(
        compressed > 20 * 1024,
        "only {compressed} bytes: is ui/dist built?"
    );
}

const V1: &str = "id: revised
namespace: ui.api
inputs:
  - id: who
    type: STRING
    defaults: world
tasks:
  - id: hello
    type: io.kestra.plugin.core.log.Log
    message: \"hello {{ inputs.who }}\"
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revisions_and_replay() {
    let (engine, _dir) = common::engine().await;
    let router = swoop_server::app(engine.clone());
    let yaml = "application/x-yaml";
    let (status, body) = call(&router, Method::POST, "/api/v1/flows", yaml, V1).await;
    assert_eq!(status, StatusCode::OK, "{body:#}");
    let v2 = V1.replace("hello {{", "hi {{");
    let (status, body) = call(
        &router,
        Method::PUT,
        "/api/v1/flows/ui.api/revised",
        yaml,
        &v2,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body:#}");

    let (status, body) = call(
        &router,
        Method::GET,
        "/api/v1/flows/ui.api/revised/revisions",
        yaml,
        "",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body:#}");
    let revisions = body.as_array().expect("an array");
    assert_eq!(revisions.len(), 2, "{body:#}");
    assert_eq!(
        (
            revisions[0]["revision"].as_u64(),
            revisions[1]["revision"].as_u64()
        ),
        (Some(1), Some(2))
    );
    assert_eq!(revisions[0]["source"], V1);
    assert_eq!(revisions[1]["source"], v2.as_str());
    assert!(revisions[1]["updated"].is_string());
    let (status, _) = call(
        &router,
        Method::GET,
        "/api/v1/flows/ui.api/nope/revisions",
        yaml,
        "",
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Replay: a new execution with the same inputs and labels, marked with what it replays.
    let json = "application/json";
    let (status, first) = call(
        &router,
        Method::POST,
        "/api/v1/executions/ui.api/revised?wait=true&labels=team:blue",
        json,
        r#"{"who": "swoop"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{first:#}");
    assert_eq!(first["state"]["current"], "SUCCESS", "{first:#}");
    let first_id = first["id"].as_str().unwrap();
    let (status, replay) = call(
        &router,
        Method::POST,
        &format!("/api/v1/executions/{first_id}/replay"),
        json,
        "",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{replay:#}");
    let replay_id = replay["id"].as_str().unwrap().to_string();
    assert_ne!(replay_id, first_id);
    assert_eq!(replay["inputs"]["who"], "swoop", "{replay:#}");
    assert_eq!(replay["flowRevision"], 2, "the newest revision: {replay:#}");
    let labels = replay["labels"].as_array().unwrap();
    assert!(
        labels
            .iter()
            .any(|l| l["key"] == "replayOf" && l["value"] == first_id),
        "{replay:#}"
    );
    let (status, _) = call(
        &router,
        Method::POST,
        "/api/v1/executions/nope/replay",
        json,
        "",
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // The filters the executions page offers: label, time range, trigger.
    let deadline = tokio::time::Instant::now() + common::WAIT;
    let search = |q: String| {
        let router = router.clone();
        async move {
            let (status, body) = call(
                &router,
                Method::GET,
                &format!("/api/v1/executions/search?namespace=ui.api{q}"),
                json,
                "",
            )
            .await;
            assert_eq!(status, StatusCode::OK, "{body:#}");
            body
        }
    };
    loop {
        let body = search(format!("&labels=replayOf:{first_id}")).await;
        if body["total"] == 1 {
            assert_eq!(body["results"][0]["id"], replay_id.as_str());
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the replay is not found by its label: {body:#}"
        );
    }
    let body = search("&labels=team:blue".into()).await;
    assert_eq!(body["total"], 2, "the replay keeps the labels: {body:#}");
    let body = search("&startDate=2000-01-01T00:00:00Z&endDate=2001-01-01T00:00:00Z".into()).await;
    assert_eq!(body["total"], 0, "{body:#}");
    let body = search("&startDate=2000-01-01T00:00:00Z".into()).await;
    assert_eq!(body["total"], 2, "{body:#}");
    let body = search("&triggerId=nope".into()).await;
    assert_eq!(body["total"], 0, "{body:#}");
    let (status, body) = call(
        &router,
        Method::GET,
        "/api/v1/executions/search?startDate=yesterday",
        json,
        "",
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body:#}");
    assert!(
        body["message"].as_str().unwrap().contains("startDate"),
        "{body:#}"
    );
    let (status, _) = call(
        &router,
        Method::GET,
        "/api/v1/executions/search?labels=nocolon",
        json,
        "",
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    engine.shutdown().await;
}

//! `/api/v1/openapi.json` is kept true: every operation it lists is served by the router (a
//! request to it reaches a handler, not the router's 404 or 405), each has a tag and its
//! responses, and the README's API table lists exactly the same operations.

mod common;

use std::collections::BTreeSet;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use serde_json::Value;

async fn send(router: &Router, method: Method, uri: &str) -> (StatusCode, Vec<u8>) {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .body(Body::empty())
        .unwrap();
    let (status, _, body) = common::send(router, request).await;
    (status, body.to_vec())
}

/// `{namespace}` → `{}`: the README and the code name path parameters differently.
fn shape(path: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for c in path.chars() {
        match c {
            '{' => {
                inside = true;
                out.push('{');
            }
            '}' => {
                inside = false;
                out.push('}');
            }
            _ if inside => {}
            _ => out.push(c),
        }
    }
    out
}

/// The operations of the README's API table: `METHOD path` with the path's shape.
fn readme_operations() -> BTreeSet<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))
        .expect("the README");
    let table = readme
        .split("### The API")
        .nth(1)
        .expect("the README has a section `### The API`");
    let mut operations = BTreeSet::new();
    for line in table.lines().skip_while(|l| !l.starts_with('|')) {
        if !line.starts_with('|') {
            break;
        }
        let Some(cell) = line.split('`').nth(1) else {
            continue;
        };
        let Some((methods, path)) = cell.split_once(' ') else {
            continue;
        };
        let path = path.split(['?', ' ']).next().unwrap_or_default();
        for method in methods.split(['/', '|']).map(|m| m.trim_matches('\\')) {
            if !method.is_empty() {
                operations.insert(format!("{method} {}", shape(path)));
            }
        }
    }
    operations
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_matches_the_router_and_the_readme() {
    let (engine, _dir) = common::engine().await;
    let router = swoop_server::app(engine.clone());
    let (status, body) = send(&router, Method::GET, "/api/v1/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    let doc: Value = serde_json::from_slice(&body).expect("the document is JSON");
    assert!(
        doc["openapi"]
            .as_str()
            .unwrap_or_default()
            .starts_with("3."),
        "{doc:#}"
    );
    assert_eq!(
        doc["components"]["securitySchemes"]["basicAuth"]["scheme"], "basic",
        "{doc:#}"
    );
    assert!(
        doc["components"]["schemas"]["ApiErrorBody"].is_object(),
        "{doc:#}"
    );

    let mut documented = BTreeSet::new();
    let mut operation_ids = BTreeSet::new();
    let paths = doc["paths"].as_object().expect("paths");
    assert!(paths.len() >= 15, "{} paths", paths.len());
    for (path, operations) in paths {
        for (method, operation) in operations.as_object().expect("operations") {
            if method == "parameters" {
                continue;
            }
            let what = format!("{} {path}", method.to_uppercase());
            assert!(
                operation["tags"].as_array().is_some_and(|t| !t.is_empty()),
                "{what} has no tag"
            );
            assert!(
                operation["responses"]
                    .as_object()
                    .is_some_and(|r| !r.is_empty()),
                "{what} has no responses"
            );
            let id = operation["operationId"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            assert!(
                operation_ids.insert(id.clone()),
                "{what}: operationId `{id}` is not unique"
            );
            documented.insert(format!("{} {}", method.to_uppercase(), shape(path)));
            // Served: reaches a handler (which may refuse the made-up ids, in JSON), not
            // the router's empty 404 or its 405.
            let uri = path
                .replace("{namespace}", "nothing.here")
                .replace('{', "x")
                .replace('}', "");
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let (status, body) = send(&router, method, &uri).await;
            assert_ne!(
                status,
                StatusCode::METHOD_NOT_ALLOWED,
                "{what} is not routed"
            );
            assert!(
                !(status == StatusCode::NOT_FOUND && body.is_empty()),
                "{what} is not routed"
            );
        }
    }
    // Not JSON API operations: the document itself and the Prometheus text.
    let mut readme = readme_operations();
    for outside in ["GET /api/v1/openapi.json", "GET /metrics"] {
        assert!(
            readme.remove(outside),
            "the README's API table lacks `{outside}`"
        );
    }
    assert_eq!(
        documented, readme,
        "the OpenAPI document (left) and the README's API table (right) differ"
    );
    engine.shutdown().await;
}

/// The answers are described by schemas, which hold what the API really sends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_answers_have_schemas() {
    let (engine, _dir) = common::engine().await;
    let router = swoop_server::app(engine.clone());
    let (status, body) = send(&router, Method::GET, "/api/v1/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    let doc: Value = serde_json::from_slice(&body).expect("JSON");
    let schemas = &doc["components"]["schemas"];
    for name in [
        "Execution",
        "TaskRun",
        "StateInfo",
        "State",
        "TriggerStatus",
        "Flow",
        "ExecutionPage",
        "LogEntry",
    ] {
        assert!(
            schemas[name].is_object(),
            "no schema `{name}` in {schemas:#}"
        );
    }
    let answer = |path: &str, method: &str| {
        doc["paths"][path][method]["responses"]["200"]["content"]["application/json"]["schema"]
            .to_string()
    };
    assert!(answer("/api/v1/executions/{id}", "get").contains("#/components/schemas/Execution"));
    assert!(answer("/api/v1/executions/search", "get").contains("ExecutionPage"));
    assert!(answer("/api/v1/triggers/search", "get").contains("TriggerPage"));
    assert!(answer("/api/v1/flows/{namespace}/{id}", "get").contains("#/components/schemas/Flow"));
    // The schema's fields are the ones an execution has when serialised.
    let execution = serde_json::to_value(swoop_core::Execution::new("a.b", "c", 1)).unwrap();
    let properties = schemas["Execution"]["properties"]
        .as_object()
        .expect("properties");
    for field in execution.as_object().unwrap().keys() {
        assert!(
            properties.contains_key(field),
            "the Execution schema lacks `{field}`: {properties:#?}"
        );
    }
    let required: Vec<&str> = schemas["Execution"]["required"]
        .as_array()
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    assert!(
        required.contains(&"id") && required.contains(&"state"),
        "{required:?}"
    );
    engine.shutdown().await;
}

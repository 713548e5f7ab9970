//! The REST API end to end: the whole router over a real engine on a SQLite store in a scratch
//! folder, driven with `tower::ServiceExt::oneshot` (no socket). Every wait is bounded.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use swoop_engine::Engine;
use swoop_store::{SqliteStore, Store};
use tempfile::TempDir;
use tower::ServiceExt;

/// How long a test waits for an execution to reach a state before failing.
const WAIT: Duration = Duration::from_secs(10);

struct TestApp {
    router: Router,
    engine: Arc<Engine>,
    _dir: TempDir,
}

impl TestApp {
    async fn new() -> TestApp {
        let dir = tempfile::tempdir().expect("a scratch folder");
        let store: Arc<dyn Store> = SqliteStore::open_in(dir.path()).expect("open the store");
        let engine = Engine::start(store, Arc::new(swoop_plugins::registry()))
            .await
            .expect("start the engine");
        TestApp {
            router: swoop_server::app(engine.clone()),
            engine,
            _dir: dir,
        }
    }

    /// Sends one request; answers the status and the body as JSON (`Value::String` when the
    /// body is not JSON, `Null` when empty).
    async fn send(&self, request: Request<Body>) -> (StatusCode, Value) {
        let what = format!("{} {}", request.method(), request.uri());
        let response = tokio::time::timeout(WAIT, self.router.clone().oneshot(request))
            .await
            .unwrap_or_else(|_| panic!("{what} did not answer within {WAIT:?}"))
            .expect("the router never fails");
        let status = response.status();
        let bytes = tokio::time::timeout(WAIT, response.into_body().collect())
            .await
            .unwrap_or_else(|_| panic!("the body of {what} did not end within {WAIT:?}"))
            .expect("read the body")
            .to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        (status, body)
    }

    async fn get(&self, uri: &str) -> (StatusCode, Value) {
        self.send(request(Method::GET, uri, None, Body::empty()))
            .await
    }

    async fn post_yaml(&self, uri: &str, yaml: &str) -> (StatusCode, Value) {
        self.send(request(
            Method::POST,
            uri,
            Some("application/x-yaml"),
            Body::from(yaml.to_string()),
        ))
        .await
    }

    async fn put_yaml(&self, uri: &str, yaml: &str) -> (StatusCode, Value) {
        self.send(request(
            Method::PUT,
            uri,
            Some("application/x-yaml"),
            Body::from(yaml.to_string()),
        ))
        .await
    }

    async fn post_json(&self, uri: &str, body: &Value) -> (StatusCode, Value) {
        self.send(request(
            Method::POST,
            uri,
            Some("application/json"),
            Body::from(body.to_string()),
        ))
        .await
    }

    /// Creates a flow, asserting it was accepted.
    async fn create_flow(&self, yaml: &str) -> Value {
        let (status, body) = self.post_yaml("/api/v1/flows", yaml).await;
        assert_eq!(status, StatusCode::OK, "creating the flow: {body:#}");
        body
    }

    /// Starts an execution and waits for its end; asserts the request was accepted.
    async fn run(&self, namespace: &str, flow_id: &str, inputs: &Value) -> Value {
        let uri = format!("/api/v1/executions/{namespace}/{flow_id}?wait=true");
        let (status, body) = self.post_json(&uri, inputs).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "running {namespace}.{flow_id}: {body:#}"
        );
        body
    }

    /// Polls GET /api/v1/executions/{id} until its state is `want`; fails on another terminal
    /// state or after [`WAIT`].
    async fn wait_for_state(&self, id: &str, want: &str) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let (status, body) = self.get(&format!("/api/v1/executions/{id}")).await;
            assert_eq!(status, StatusCode::OK, "{body:#}");
            let current = body["state"]["current"].as_str().unwrap_or_default();
            if current == want {
                return body;
            }
            let terminal = [
                "SUCCESS",
                "WARNING",
                "FAILED",
                "KILLED",
                "CANCELLED",
                "SKIPPED",
            ];
            assert!(
                !terminal.contains(&current),
                "execution {id} ended {current}, not {want}: {body:#}"
            );
            assert!(
                tokio::time::Instant::now() < deadline,
                "execution {id} is still {current} after {WAIT:?}, not {want}: {body:#}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl TestApp {
    /// Waits (bounded) until the engine runs no execution any more.
    async fn wait_until_nothing_runs(&self) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.engine.running_count() > 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} executions still running after {WAIT:?}",
                self.engine.running_count()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn request(method: Method, uri: &str, content_type: Option<&str>, body: Body) -> Request<Body> {
    let mut builder = Request::builder().method(method).uri(uri);
    if let Some(content_type) = content_type {
        builder = builder.header(header::CONTENT_TYPE, content_type);
    }
    builder.body(body).expect("a valid request")
}

/// The task run of `task_id` (the only one, or the first).
fn task_run<'a>(execution: &'a Value, task_id: &str) -> &'a Value {
    task_runs(execution, task_id)
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no task run of `{task_id}` in {execution:#}"))
}

fn task_runs<'a>(execution: &'a Value, task_id: &str) -> Vec<&'a Value> {
    execution["taskRunList"]
        .as_array()
        .expect("taskRunList is an array")
        .iter()
        .filter(|t| t["taskId"] == task_id)
        .collect()
}

fn id_of(execution: &Value) -> String {
    execution["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no execution id in {execution:#}"))
        .to_string()
}

const HELLO: &str = "id: hello
namespace: company.team
tasks:
  - id: greet
    type: io.kestra.plugin.core.log.Log
    message: hello
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flow_crud() {
    let app = TestApp::new().await;

    let (status, created) = app.post_yaml("/api/v1/flows", HELLO).await;
    assert_eq!(status, StatusCode::OK, "{created:#}");
    assert_eq!(created["id"], "hello");
    assert_eq!(created["namespace"], "company.team");
    assert_eq!(created["revision"], 1);
    assert_eq!(created["source"], HELLO);
    assert_eq!(created["tasks"][0]["id"], "greet");

    let (status, body) = app.post_yaml("/api/v1/flows", HELLO).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body:#}");
    assert!(body["message"].as_str().is_some(), "{body:#}");

    let (status, got) = app.get("/api/v1/flows/company.team/hello").await;
    assert_eq!(status, StatusCode::OK, "{got:#}");
    assert_eq!(got["revision"], 1);
    assert_eq!(got["source"], HELLO);

    let changed = HELLO.replace("message: hello", "message: hello again");
    let (status, updated) = app
        .put_yaml("/api/v1/flows/company.team/hello", &changed)
        .await;
    assert_eq!(status, StatusCode::OK, "{updated:#}");
    assert_eq!(updated["revision"], 2);
    assert_eq!(updated["tasks"][0]["message"], "hello again");
    let (_, got) = app.get("/api/v1/flows/company.team/hello").await;
    assert_eq!(got["revision"], 2);

    let renamed = changed.replace("id: hello", "id: other");
    let (status, body) = app
        .put_yaml("/api/v1/flows/company.team/hello", &renamed)
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body:#}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("other"),
        "{body:#}"
    );

    let (status, body) = app
        .send(request(
            Method::DELETE,
            "/api/v1/flows/company.team/hello",
            None,
            Body::empty(),
        ))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body:#}");
    assert_eq!(body, Value::Null);

    let (status, body) = app.get("/api/v1/flows/company.team/hello").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body:#}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("hello"),
        "{body:#}"
    );

    let (status, body) = app
        .send(request(
            Method::DELETE,
            "/api/v1/flows/company.team/hello",
            None,
            Body::empty(),
        ))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_flow_answers_every_mistake_with_its_position() {
    let app = TestApp::new().await;
    let source = "id: broken
namespace: company.team
tasks:
  - id: first
    type: io.kestra.plugin.core.log.Logg
    message: hi
  - id: second
    type: io.kestra.plugin.core.log.Log
    mesage: hi
    message: hello
  - id: third
    type: io.kestra.plugin.core.log.Log
    message: x
    allowFailure: maybe
";
    let (status, body) = app.post_yaml("/api/v1/flows", source).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body:#}");
    assert!(body["message"].as_str().is_some(), "{body:#}");
    let details = body["details"].as_array().expect("details is an array");
    assert_eq!(details.len(), 3, "{body:#}");
    let positions: Vec<(u64, u64)> = details
        .iter()
        .map(|d| {
            assert!(
                !d["message"].as_str().unwrap_or_default().is_empty(),
                "{d:#}"
            );
            (
                d["line"].as_u64().expect("a line"),
                d["column"].as_u64().expect("a column"),
            )
        })
        .collect();
    assert_eq!(positions, [(5, 11), (9, 5), (14, 19)], "{body:#}");
    assert!(
        details[0]["message"]
            .as_str()
            .unwrap()
            .contains("io.kestra.plugin.core.log.Logg"),
        "{body:#}"
    );

    // Nothing was stored.
    let (status, _) = app.get("/api/v1/flows/company.team/broken").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_several_documents_with_absolute_lines() {
    let app = TestApp::new().await;
    let body = "id: fine
namespace: company.team
tasks:
  - id: a
    type: io.kestra.plugin.core.log.Log
    message: hi
---
id: wrong
namespace: company.team
tasks:
  - id: b
    type: io.kestra.plugin.core.log.Logg
    message: hi
";
    let (status, answer) = app.post_yaml("/api/v1/flows/validate", body).await;
    assert_eq!(status, StatusCode::OK, "{answer:#}");
    let results = answer.as_array().expect("an array");
    assert_eq!(results.len(), 2, "{answer:#}");

    assert_eq!(results[0]["flow"], "fine");
    assert_eq!(results[0]["constraints"], Value::Null, "{answer:#}");

    assert_eq!(results[1]["flow"], "wrong");
    let constraints = results[1]["constraints"]
        .as_str()
        .unwrap_or_else(|| panic!("constraints for the bad flow: {answer:#}"));
    assert!(constraints.starts_with("12:11: "), "{constraints}");
    assert!(
        constraints.contains("io.kestra.plugin.core.log.Logg"),
        "{constraints}"
    );
    assert_eq!(results[1]["errors"][0]["line"], 12, "{answer:#}");
    assert_eq!(results[1]["errors"][0]["column"], 11, "{answer:#}");

    // Validating stores nothing.
    let (status, _) = app.get("/api/v1/flows/company.team/fine").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_flows_by_namespace_prefix() {
    let app = TestApp::new().await;
    for (namespace, id) in [
        ("company", "top"),
        ("company.shop", "cart"),
        ("company.shop.eu", "tax"),
        ("companyx", "other"),
        ("elsewhere", "far"),
    ] {
        app.create_flow(&format!(
            "id: {id}\nnamespace: {namespace}\ntasks:\n  - id: t\n    type: io.kestra.plugin.core.log.Log\n    message: x\n"
        ))
        .await;
    }

    let (status, body) = app.get("/api/v1/flows/search?namespace=company").await;
    assert_eq!(status, StatusCode::OK, "{body:#}");
    assert_eq!(body["total"], 3, "{body:#}");
    let found: Vec<(&str, &str)> = body["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|f| (f["namespace"].as_str().unwrap(), f["id"].as_str().unwrap()))
        .collect();
    assert_eq!(
        found,
        [
            ("company", "top"),
            ("company.shop", "cart"),
            ("company.shop.eu", "tax")
        ]
    );

    let (_, body) = app.get("/api/v1/flows/search?namespace=company.shop").await;
    assert_eq!(body["total"], 2, "{body:#}");

    let (_, body) = app.get("/api/v1/flows/search").await;
    assert_eq!(body["total"], 5, "{body:#}");

    let (status, body) = app
        .get("/api/v1/flows/search?namespace=company&page=2&size=2")
        .await;
    assert_eq!(status, StatusCode::OK, "{body:#}");
    assert_eq!(body["total"], 3, "{body:#}");
    assert_eq!(
        body["results"].as_array().map(Vec::len),
        Some(1),
        "{body:#}"
    );
    assert_eq!(body["results"][0]["id"], "tax", "{body:#}");

    let (_, body) = app.get("/api/v1/flows/search?q=CART").await;
    assert_eq!(body["total"], 1, "{body:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_comprehensive_example_through_the_api() {
    let app = TestApp::new().await;
    for file in [
        concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/invoice.yml"),
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../examples/enrich-order.yml"
        ),
    ] {
        let source = std::fs::read_to_string(file).expect("read the example");
        app.create_flow(&source).await;
    }

    let e = app.run("company.shop", "enrich-order", &json!({})).await;
    assert_eq!(e["state"]["current"], "SUCCESS", "{e:#}");
    assert_eq!(e["namespace"], "company.shop");
    assert_eq!(e["flowId"], "enrich-order");
    assert_eq!(e["flowRevision"], 1);
    assert_eq!(e["inputs"]["order"]["country"], "FR", "{e:#}");
    assert_eq!(
        e["outputs"]["warehouse"], "EU warehouse for swoop-demo",
        "{e:#}"
    );

    for run in e["taskRunList"].as_array().expect("taskRunList") {
        assert_eq!(run["state"]["current"], "SUCCESS", "{run:#}");
        assert_eq!(run["executionId"], e["id"], "{run:#}");
        assert!(run["id"].as_str().is_some(), "{run:#}");
        assert!(run["attempts"].is_array(), "{run:#}");
        assert!(run["outputs"].is_object(), "{run:#}");
    }

    assert_eq!(task_run(&e, "first_price")["outputs"]["value"], "10.5");

    let route = task_run(&e, "route");
    assert_eq!(route["outputs"]["value"], "FR", "{route:#}");
    let eu = task_run(&e, "eu");
    assert_eq!(eu["parentTaskRunId"], route["id"], "{eu:#}");
    assert!(task_runs(&e, "world").is_empty(), "{e:#}");

    let each = task_run(&e, "each_item");
    let items = task_runs(&e, "item");
    assert_eq!(items.len(), 2, "{e:#}");
    let mut values: Vec<&str> = items
        .iter()
        .map(|run| {
            assert_eq!(run["parentTaskRunId"], each["id"], "{run:#}");
            assert_eq!(
                run["outputs"]["value"],
                format!("sku {}", run["value"].as_str().unwrap()),
                "{run:#}"
            );
            run["value"].as_str().expect("a ForEach value")
        })
        .collect();
    values.sort_unstable();
    assert_eq!(values, ["A-1", "B-2"]);

    let flaky = task_run(&e, "flaky");
    let attempts = flaky["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 3, "{flaky:#}");
    assert_eq!(attempts[0]["state"]["current"], "FAILED", "{flaky:#}");
    assert_eq!(attempts[2]["state"]["current"], "SUCCESS", "{flaky:#}");

    let invoice = task_run(&e, "invoice");
    assert_eq!(
        invoice["outputs"]["outputs"]["number"], "INV-1",
        "{invoice:#}"
    );
    let child_id = invoice["outputs"]["executionId"]
        .as_str()
        .expect("the subflow's execution id");
    let (status, child) = app.get(&format!("/api/v1/executions/{child_id}")).await;
    assert_eq!(status, StatusCode::OK, "{child:#}");
    assert_eq!(child["flowId"], "invoice");
    assert_eq!(child["parentExecutionId"], e["id"]);
    assert_eq!(child["inputs"]["order_id"], "1");

    assert!(
        task_runs(&e, "alert").is_empty(),
        "the errors branch ran: {e:#}"
    );
}

const TYPED_INPUTS: &str = "id: typed
namespace: api.inputs
inputs:
  - id: count
    type: INT
  - id: payload
    type: JSON
tasks:
  - id: show
    type: io.kestra.plugin.core.debug.Return
    format: \"{{ inputs.count + 1 }} {{ inputs.payload.tags | length }}\"
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inputs_as_json_and_as_a_multipart_form() {
    let app = TestApp::new().await;
    app.create_flow(TYPED_INPUTS).await;

    // JSON: the JSON input may come as a JSON value or as text.
    let e = app
        .run(
            "api.inputs",
            "typed",
            &json!({"count": "42", "payload": "{\"tags\": [\"a\", \"b\"], \"n\": 1}"}),
        )
        .await;
    assert_eq!(e["state"]["current"], "SUCCESS", "{e:#}");
    assert_eq!(e["inputs"]["count"], json!(42), "{e:#}");
    assert_eq!(
        e["inputs"]["payload"],
        json!({"tags": ["a", "b"], "n": 1}),
        "{e:#}"
    );
    assert_eq!(task_run(&e, "show")["outputs"]["value"], "43 2", "{e:#}");

    // multipart/form-data, built by hand.
    let boundary = "swoop-test-boundary-7MA4YWxkTrZu0gW";
    let form = format!(
        "--{boundary}\r\n\
         Content-Disposition: form-data; name=\"count\"\r\n\r\n\
         42\r\n\
         --{boundary}\r\n\
         Content-Disposition: form-data; name=\"payload\"\r\n\
         Content-Type: application/json\r\n\r\n\
         {{\"tags\": [\"x\", \"y\", \"z\"]}}\r\n\
         --{boundary}--\r\n"
    );
    let (status, started) = app
        .send(request(
            Method::POST,
            "/api/v1/executions/api.inputs/typed?wait=true",
            Some(&format!("multipart/form-data; boundary={boundary}")),
            Body::from(form),
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{started:#}");
    assert_eq!(started["state"]["current"], "SUCCESS", "{started:#}");
    assert_eq!(started["inputs"]["count"], json!(42), "{started:#}");
    assert!(started["inputs"]["count"].is_number(), "{started:#}");
    assert_eq!(
        started["inputs"]["payload"],
        json!({"tags": ["x", "y", "z"]}),
        "{started:#}"
    );
    assert_eq!(task_run(&started, "show")["outputs"]["value"], "43 3");

    // A missing required input.
    let (status, body) = app
        .post_json("/api/v1/executions/api.inputs/typed", &json!({"count": 1}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body:#}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("payload"),
        "{body:#}"
    );
    assert!(
        body["details"]
            .as_array()
            .is_some_and(|d| d.iter().any(|d| d["message"]
                .as_str()
                .unwrap_or_default()
                .contains("payload"))),
        "{body:#}"
    );

    // A value of the wrong type.
    let (status, body) = app
        .post_json(
            "/api/v1/executions/api.inputs/typed",
            &json!({"count": "many", "payload": {}}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body:#}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("count"),
        "{body:#}"
    );

    // Not JSON at all.
    let (status, body) = app
        .send(request(
            Method::POST,
            "/api/v1/executions/api.inputs/typed",
            Some("application/json"),
            Body::from("{not json"),
        ))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body:#}");

    // An unknown flow.
    let (status, body) = app
        .post_json("/api/v1/executions/api.inputs/nope", &json!({}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body:#}");
    assert!(body["message"].as_str().is_some(), "{body:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_an_execution() {
    let app = TestApp::new().await;
    app.create_flow(HELLO).await;
    let e = app.run("company.team", "hello", &json!({})).await;
    assert_eq!(e["state"]["current"], "SUCCESS", "{e:#}");
    let id = id_of(&e);

    let (status, got) = app.get(&format!("/api/v1/executions/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{got:#}");
    assert_eq!(got["id"], id.as_str());
    assert_eq!(got["state"]["current"], "SUCCESS");
    assert_eq!(got["taskRunList"][0]["taskId"], "greet");
    let histories: Vec<&str> = got["state"]["histories"]
        .as_array()
        .expect("histories")
        .iter()
        .map(|h| h["state"].as_str().unwrap())
        .collect();
    assert_eq!(histories.first(), Some(&"CREATED"), "{got:#}");
    assert_eq!(histories.last(), Some(&"SUCCESS"), "{got:#}");

    let (status, labelled) = app
        .post_json(
            "/api/v1/executions/company.team/hello?wait=true&labels=team:data,env:test",
            &json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{labelled:#}");
    assert_eq!(
        labelled["labels"],
        json!([{"key": "team", "value": "data"}, {"key": "env", "value": "test"}]),
        "{labelled:#}"
    );
    let (status, body) = app
        .post_json(
            "/api/v1/executions/company.team/hello?labels=no-colon",
            &json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body:#}");

    let (status, body) = app.get("/api/v1/executions/does-not-exist").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body:#}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("does-not-exist"),
        "{body:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_executions_with_paging() {
    let app = TestApp::new().await;
    app.create_flow(HELLO).await;
    app.create_flow(&HELLO.replace("id: hello", "id: other"))
        .await;
    app.create_flow(
        "id: failing
namespace: company.team
tasks:
  - id: boom
    type: io.kestra.plugin.core.execution.Fail
",
    )
    .await;
    let mut hello_ids = Vec::new();
    for _ in 0..3 {
        let e = app.run("company.team", "hello", &json!({})).await;
        assert_eq!(e["state"]["current"], "SUCCESS", "{e:#}");
        hello_ids.push(id_of(&e));
    }
    let e = app.run("company.team", "other", &json!({})).await;
    assert_eq!(e["state"]["current"], "SUCCESS", "{e:#}");
    let e = app.run("company.team", "failing", &json!({})).await;
    assert_eq!(e["state"]["current"], "FAILED", "{e:#}");

    let base = "/api/v1/executions/search?namespace=company&flowId=hello&state=SUCCESS";
    let (status, page1_body) = app.get(&format!("{base}&page=1&size=2")).await;
    assert_eq!(status, StatusCode::OK, "{page1_body:#}");
    assert_eq!(page1_body["total"], 3, "{page1_body:#}");
    let next = page1_body["next"]
        .as_str()
        .expect("a next position")
        .to_string();
    let page1 = page1_body["results"].as_array().expect("results").clone();
    assert_eq!(page1.len(), 2);
    let (status, page2) = app.get(&format!("{base}&page=2&size=2")).await;
    assert_eq!(status, StatusCode::OK, "{page2:#}");
    assert_eq!(page2["total"], 3, "{page2:#}");
    assert!(
        page2["next"].is_null(),
        "the last page has no next: {page2:#}"
    );
    let page2 = page2["results"].as_array().expect("results").clone();
    assert_eq!(page2.len(), 1);
    // Keyset paging reaches the same page.
    let (status, after) = app.get(&format!("{base}&size=2&after={next}")).await;
    assert_eq!(status, StatusCode::OK, "{after:#}");
    assert_eq!(after["total"], 3, "{after:#}");
    assert_eq!(after["results"], json!(page2), "{after:#}");
    let (status, body) = app.get(&format!("{base}&after=nonsense")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body:#}");

    let mut seen: Vec<String> = page1.iter().chain(&page2).map(id_of).collect();
    for e in page1.iter().chain(&page2) {
        assert_eq!(e["flowId"], "hello");
        assert_eq!(e["state"]["current"], "SUCCESS");
    }
    // Newest first.
    let mut newest_first = hello_ids.clone();
    newest_first.reverse();
    assert_eq!(seen, newest_first);
    seen.sort();
    hello_ids.sort();
    assert_eq!(seen, hello_ids);

    let (_, all) = app
        .get("/api/v1/executions/search?namespace=company.team")
        .await;
    assert_eq!(all["total"], 5, "{all:#}");
    let (_, failed) = app.get("/api/v1/executions/search?state=FAILED").await;
    assert_eq!(failed["total"], 1, "{failed:#}");
    assert_eq!(failed["results"][0]["flowId"], "failing");
    let (_, several) = app
        .get("/api/v1/executions/search?state=FAILED,SUCCESS")
        .await;
    assert_eq!(several["total"], 5, "{several:#}");
    let (_, none) = app
        .get("/api/v1/executions/search?namespace=companyx")
        .await;
    assert_eq!(none["total"], 0, "{none:#}");

    let (status, body) = app.get("/api/v1/executions/search?state=DONE").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body:#}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("DONE"),
        "{body:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_of_an_execution() {
    let app = TestApp::new().await;
    app.create_flow(
        "id: chatty
namespace: api.logs
inputs:
  - id: name
    type: STRING
    defaults: world
tasks:
  - id: greet
    type: io.kestra.plugin.core.log.Log
    message: \"Hello, {{ inputs.name }}!\"
  - id: shout
    type: io.kestra.plugin.core.log.Log
    level: ERROR
    message: \"Bad news for {{ inputs.name }}\"
",
    )
    .await;
    let e = app.run("api.logs", "chatty", &json!({"name": "Bob"})).await;
    assert_eq!(e["state"]["current"], "SUCCESS", "{e:#}");
    let id = id_of(&e);

    let (status, logs) = app.get(&format!("/api/v1/logs/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{logs:#}");
    let logs = logs.as_array().expect("an array of log entries");
    let greet = logs
        .iter()
        .find(|l| l["taskId"] == "greet")
        .unwrap_or_else(|| panic!("no log of `greet`: {logs:#?}"));
    assert_eq!(greet["level"], "INFO");
    assert_eq!(greet["message"], "Hello, Bob!");
    assert_eq!(greet["executionId"], id.as_str());
    assert!(greet["timestamp"].is_string(), "{greet:#}");
    assert!(
        logs.iter()
            .any(|l| l["taskId"] == "shout" && l["message"] == "Bad news for Bob"),
        "{logs:#?}"
    );

    let (status, errors) = app.get(&format!("/api/v1/logs/{id}?minLevel=ERROR")).await;
    assert_eq!(status, StatusCode::OK, "{errors:#}");
    let errors = errors.as_array().expect("an array");
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(errors[0]["taskId"], "shout");
    assert_eq!(errors[0]["level"], "ERROR");

    let (status, body) = app.get(&format!("/api/v1/logs/{id}?minLevel=LOUD")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body:#}");
}

const SLEEPY: &str = "id: sleepy
namespace: api.kill
tasks:
  - id: nap
    type: io.kestra.plugin.core.flow.Sleep
    duration: PT30S
  - id: never
    type: io.kestra.plugin.core.log.Log
    message: not reached
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_a_running_execution() {
    let app = TestApp::new().await;
    app.create_flow(SLEEPY).await;
    let (status, started) = app
        .post_json("/api/v1/executions/api.kill/sleepy", &json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{started:#}");
    let id = id_of(&started);
    assert!(
        ["CREATED", "RUNNING"].contains(&started["state"]["current"].as_str().unwrap_or("")),
        "{started:#}"
    );

    let kill = || {
        request(
            Method::DELETE,
            &format!("/api/v1/executions/{id}/kill"),
            None,
            Body::empty(),
        )
    };
    let (status, body) = app.send(kill()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body:#}");
    assert_eq!(body["id"], id.as_str());

    let started_at = std::time::Instant::now();
    let killed = app.wait_for_state(&id, "KILLED").await;
    assert!(
        started_at.elapsed() < Duration::from_secs(5),
        "the kill took {:?}",
        started_at.elapsed()
    );
    assert!(task_runs(&killed, "never").is_empty(), "{killed:#}");
    app.wait_until_nothing_runs().await;

    let (status, body) = app.send(kill()).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body:#}");

    let (status, _) = app
        .send(request(
            Method::DELETE,
            "/api/v1/executions/nope/kill",
            None,
            Body::empty(),
        ))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_a_failed_execution() {
    // The secret's values are distinctive on purpose: every value `secret()` returns is masked in
    // the logs of this whole process, so a short one ("no") would garble other tests' logs.
    const VAR: &str = "SWOOP_SECRET_API_RESTART_FAIL";
    // SAFETY: only this test reads or writes this variable. Other threads read the environment
    // through `std::env`, which takes the same lock as `set_var`; the only foreign code here is
    // SQLite, which reads it (TMPDIR) only to make temporary files, which these small databases
    // do not need.
    unsafe { std::env::set_var(VAR, "fail-on-purpose") };

    let app = TestApp::new().await;
    app.create_flow(
        "id: restartable
namespace: api.restart
tasks:
  - id: before
    type: io.kestra.plugin.core.debug.Return
    format: before
  - id: maybe_fail
    type: io.kestra.plugin.core.execution.Fail
    condition: \"{{ secret('API_RESTART_FAIL') == 'fail-on-purpose' }}\"
    errorMessage: failing on purpose
  - id: after
    type: io.kestra.plugin.core.debug.Return
    format: after
",
    )
    .await;
    let e = app.run("api.restart", "restartable", &json!({})).await;
    assert_eq!(e["state"]["current"], "FAILED", "{e:#}");
    assert!(task_runs(&e, "after").is_empty(), "{e:#}");
    let id = id_of(&e);
    let before_id = task_run(&e, "before")["id"].clone();

    // SAFETY: as above.
    unsafe { std::env::set_var(VAR, "pass-on-purpose") };

    // The engine keeps an ended execution "running" for a moment after it announced its end
    // (see `restart_right_after_the_end_is_accepted`): wait for that, so this test checks the
    // restart itself.
    app.wait_until_nothing_runs().await;

    let restart = || {
        request(
            Method::POST,
            &format!("/api/v1/executions/{id}/restart"),
            None,
            Body::empty(),
        )
    };
    let (status, body) = app.send(restart()).await;
    assert_eq!(status, StatusCode::OK, "{body:#}");
    assert_eq!(body["id"], id.as_str());
    assert_eq!(body["state"]["current"], "RESTARTED", "{body:#}");

    let done = app.wait_for_state(&id, "SUCCESS").await;
    assert_eq!(task_run(&done, "after")["outputs"]["value"], "after");
    // The successful task run was kept, not run again.
    assert_eq!(task_runs(&done, "before").len(), 1, "{done:#}");
    assert_eq!(task_run(&done, "before")["id"], before_id, "{done:#}");
    let histories: Vec<&str> = done["state"]["histories"]
        .as_array()
        .expect("histories")
        .iter()
        .map(|h| h["state"].as_str().unwrap())
        .collect();
    assert!(
        histories.contains(&"FAILED") && histories.contains(&"RESTARTED"),
        "{histories:?}"
    );

    let (status, body) = app.send(restart()).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body:#}");

    let (status, _) = app
        .send(request(
            Method::POST,
            "/api/v1/executions/nope/restart",
            None,
            Body::empty(),
        ))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// A client that got a FAILED execution (from `?wait=true`, a GET or the event stream) may
/// restart it at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_right_after_the_end_is_accepted() {
    let app = TestApp::new().await;
    app.create_flow(
        "id: always_fails
namespace: api.restart
tasks:
  - id: boom
    type: io.kestra.plugin.core.execution.Fail
",
    )
    .await;
    for _ in 0..5 {
        let e = app.run("api.restart", "always_fails", &json!({})).await;
        assert_eq!(e["state"]["current"], "FAILED", "{e:#}");
        let (status, body) = app
            .send(request(
                Method::POST,
                &format!("/api/v1/executions/{}/restart", id_of(&e)),
                None,
                Body::empty(),
            ))
            .await;
        assert_eq!(status, StatusCode::OK, "{body:#}");
        app.wait_for_state(&id_of(&e), "FAILED").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_an_execution_with_server_sent_events() {
    let app = TestApp::new().await;
    app.create_flow(
        "id: short
namespace: api.follow
tasks:
  - id: nap
    type: io.kestra.plugin.core.flow.Sleep
    duration: PT0.3S
  - id: done
    type: io.kestra.plugin.core.debug.Return
    format: done
",
    )
    .await;
    let (status, started) = app
        .post_json("/api/v1/executions/api.follow/short", &json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{started:#}");
    let id = id_of(&started);

    let response = app
        .router
        .clone()
        .oneshot(request(
            Method::GET,
            &format!("/api/v1/executions/{id}/follow"),
            None,
            Body::empty(),
        ))
        .await
        .expect("the router never fails");
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        content_type.starts_with("text/event-stream"),
        "{content_type}"
    );
    let bytes = tokio::time::timeout(WAIT, response.into_body().collect())
        .await
        .expect("the event stream ends once the execution ends")
        .expect("read the event stream")
        .to_bytes();
    let text = String::from_utf8(bytes.to_vec()).expect("UTF-8 events");

    let frames: Vec<&str> = text
        .split("\n\n")
        .filter(|f| f.lines().any(|l| l.starts_with("data:")))
        .collect();
    assert!(frames.len() >= 2, "expected several events: {text}");
    for frame in &frames {
        assert!(
            frame.lines().any(|l| l == "event: execution"),
            "frame without `event: execution`: {frame}"
        );
    }
    let executions: Vec<Value> = frames
        .iter()
        .map(|frame| {
            let data: String = frame
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(str::trim_start)
                .collect();
            serde_json::from_str(&data).unwrap_or_else(|e| panic!("{e}: {data}"))
        })
        .collect();
    assert!(executions.iter().all(|e| e["id"] == id.as_str()));
    assert_ne!(executions[0]["state"]["current"], "SUCCESS", "{text}");
    let last = executions.last().unwrap();
    assert_eq!(last["state"]["current"], "SUCCESS", "{last:#}");
    assert_eq!(task_run(last, "done")["outputs"]["value"], "done");

    // Following an ended execution answers it once and ends.
    let (status, body) = app.get(&format!("/api/v1/executions/{id}/follow")).await;
    assert_eq!(status, StatusCode::OK);
    let text = body.as_str().expect("event-stream text");
    assert_eq!(text.matches("event: execution").count(), 1, "{text}");
    assert!(text.contains("\"SUCCESS\""), "{text}");

    let (status, _) = app.get("/api/v1/executions/nope/follow").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_starts_an_execution() {
    let app = TestApp::new().await;
    app.create_flow(
        "id: hook
namespace: api.hooks
tasks:
  - id: greet
    type: io.kestra.plugin.core.debug.Return
    format: \"{{ trigger.body.name }} {{ trigger.parameters.x | first }} {{ trigger.headers['x-test'] | first }}\"
triggers:
  - id: incoming
    type: io.kestra.plugin.core.trigger.Webhook
    key: s3cr3t
",
    )
    .await;

    let (status, started) = app
        .send(
            Request::builder()
                .method(Method::POST)
                .uri("/api/v1/executions/webhook/api.hooks/hook/s3cr3t?x=1")
                .header(header::CONTENT_TYPE, "application/json")
                .header("x-test", "hello")
                .body(Body::from(json!({"name": "alice"}).to_string()))
                .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{started:#}");
    let id = id_of(&started);
    assert_eq!(started["trigger"]["id"], "incoming", "{started:#}");
    assert_eq!(
        started["trigger"]["type"], "io.kestra.plugin.core.trigger.Webhook",
        "{started:#}"
    );

    let done = app.wait_for_state(&id, "SUCCESS").await;
    assert_eq!(
        task_run(&done, "greet")["outputs"]["value"],
        "alice 1 hello",
        "{done:#}"
    );

    let (status, body) = app
        .get("/api/v1/executions/webhook/api.hooks/hook/wrong")
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body:#}");
    let (status, body) = app
        .get("/api/v1/executions/webhook/api.hooks/nope/s3cr3t")
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_web_page() {
    let app = TestApp::new().await;
    let (status, body) = app.get("/health").await;
    assert_eq!(status, StatusCode::OK, "{body:#}");
    assert_eq!(body["status"], "UP", "{body:#}");
    assert_eq!(body["store"], "sqlite", "{body:#}");

    let response = app
        .router
        .clone()
        .oneshot(request(Method::GET, "/", None, Body::empty()))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .to_string();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let page = String::from_utf8_lossy(&bytes);
    assert!(page.to_ascii_lowercase().contains("<html"), "{page}");

    let (status, _) = app.get("/api/v1/nothing-here").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// Files of an execution: listed, streamed, sized; another execution's URI, a traversal and a
/// missing file answer 404; deleting the execution deletes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn execution_files_are_served_only_to_their_execution() {
    use tokio::io::AsyncWriteExt;
    let app = TestApp::new().await;
    app.create_flow(
        "id: files\nnamespace: company.team\ntasks:\n  - id: hello\n    type: io.kestra.plugin.core.log.Log\n    message: hi\n",
    )
    .await;
    let a = app.run("company.team", "files", &json!({})).await;
    let b = app.run("company.team", "files", &json!({})).await;
    let (a_id, b_id) = (a["id"].as_str().unwrap(), b["id"].as_str().unwrap());
    // A file as a task of `a` would have written it.
    let uri = format!("kestra:///company/team/files/executions/{a_id}/tasks/hello/r1/out.txt");
    let path = swoop_core::storage::StoragePath::parse(&uri).unwrap();
    let mut w = app.engine.storage().create(&path).await.unwrap();
    w.write_all(b"hello file").await.unwrap();
    w.shutdown().await.unwrap();

    let (status, body) = app
        .get(&format!("/api/v1/executions/{a_id}/file?path={uri}"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!("hello file"));
    let (status, body) = app
        .get(&format!("/api/v1/executions/{a_id}/file/metas?path={uri}"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["size"], json!(10));
    let (_, body) = app
        .get(&format!("/api/v1/executions/{a_id}/file/metas"))
        .await;
    assert_eq!(body["total"], json!(1));
    assert_eq!(body["results"][0]["uri"], json!(uri));

    // `b` cannot reach `a`'s file; traversal and missing files are 404 too.
    let (status, _) = app
        .get(&format!("/api/v1/executions/{b_id}/file?path={uri}"))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let sneaky =
        format!("kestra:///company/team/files/executions/{b_id}/../{a_id}/tasks/hello/r1/out.txt");
    let (status, _) = app
        .get(&format!("/api/v1/executions/{b_id}/file?path={sneaky}"))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app
        .get(&format!(
            "/api/v1/executions/{a_id}/file?path=kestra:///company/team/files/executions/{a_id}/nope"
        ))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = app.get(&format!("/api/v1/executions/{a_id}/file")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    let (status, _) = app
        .send(request(
            Method::DELETE,
            &format!("/api/v1/executions/{a_id}"),
            None,
            Body::empty(),
        ))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(app.engine.storage().size(&path).unwrap(), None);
    let (status, _) = app.get(&format!("/api/v1/executions/{a_id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// One node alone shows itself, RUNNING, with every role and the triggers it runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_nodes_of_one_node() {
    let app = TestApp::new().await;
    let (status, body) = app.get("/api/v1/cluster/nodes").await;
    assert_eq!(status, StatusCode::OK, "{body:#}");
    assert_eq!(body["total"], 1, "{body:#}");
    let node = &body["results"][0];
    assert_eq!(node["state"], "RUNNING", "{body:#}");
    assert_eq!(node["thisNode"], true);
    assert_eq!(
        node["roles"],
        json!(["executor", "worker", "scheduler", "webserver"])
    );
    assert_eq!(node["triggers"], json!([]));
    assert!(node["heartbeatAt"].as_str().is_some(), "{body:#}");
}

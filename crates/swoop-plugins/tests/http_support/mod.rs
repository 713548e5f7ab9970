//! Shared by the HTTP and notifications integration tests: an in-process axum server on
//! 127.0.0.1 and building one task through the real validator and registry.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use serde_json::{Value, json};
use swoop_core::Flow;
use swoop_core::registry::RunnableTask;

/// Serves `router` on a free loopback port until the test's runtime ends.
pub async fn serve(router: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let addr = listener.local_addr().expect("a local address");
    tokio::spawn(async move {
        axum::serve(listener, router)
            .await
            .expect("the test server runs");
    });
    addr
}

/// A loopback address nobody listens on (bound then released).
pub async fn closed_addr() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    listener.local_addr().expect("a local address")
}

/// The flow (as JSON, which is YAML) holding one task of `type_name` with `props`.
fn flow_source(type_name: &str, props: &Value) -> String {
    let mut task = json!({"id": "task", "type": type_name});
    if let (Some(t), Some(p)) = (task.as_object_mut(), props.as_object()) {
        t.extend(p.clone());
    }
    json!({"id": "flow", "namespace": "test", "tasks": [task]}).to_string()
}

/// Validates and builds the task; `Err` holds every diagnostic.
pub fn try_task(type_name: &str, props: Value) -> Result<Arc<dyn RunnableTask>, String> {
    let registry = swoop_plugins::registry();
    let flow = Flow::parse(&flow_source(type_name, &props), &registry).map_err(|d| {
        d.iter()
            .map(|x| x.message.clone())
            .collect::<Vec<_>>()
            .join("; ")
    })?;
    let task = flow.tasks[0]
        .runnable()
        .ok_or_else(|| "not a runnable task".to_string())?;
    Ok(task.clone())
}

pub fn task(type_name: &str, props: Value) -> Arc<dyn RunnableTask> {
    try_task(type_name, props).unwrap_or_else(|e| panic!("the task should build: {e}"))
}

/// The diagnostics of a task the validator or `build` must refuse.
pub fn refused(type_name: &str, props: Value) -> String {
    match try_task(type_name, props) {
        Ok(_) => panic!("the task should be refused"),
        Err(e) => e,
    }
}

/// Parses `examples/<name>` with every check a flow gets when it is loaded.
pub fn check_example(name: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(name);
    let source = std::fs::read_to_string(&path).expect("the example exists");
    if let Err(d) = Flow::parse(&source, &swoop_plugins::registry()) {
        panic!("{name}: {d:?}");
    }
}

//! What the router tests share: an engine on SQLite in a scratch folder, and one bounded
//! `oneshot` request.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use swoop_engine::Engine;
use swoop_store::{SqliteStore, Store};
use tempfile::TempDir;
use tower::ServiceExt;

/// How long a request (and its body) may take.
pub const WAIT: Duration = Duration::from_secs(10);

/// A started engine and the folder holding its store.
pub async fn engine() -> (Arc<Engine>, TempDir) {
    let dir = tempfile::tempdir().expect("a scratch folder");
    let store: Arc<dyn Store> = SqliteStore::open_in(dir.path()).expect("open the store");
    let engine = Engine::start(store, Arc::new(swoop_plugins::registry()))
        .await
        .expect("start the engine");
    (engine, dir)
}

/// Sends one request: the status, the headers and the whole body.
pub async fn send(router: &Router, request: Request<Body>) -> (StatusCode, HeaderMap, Bytes) {
    let what = format!("{} {}", request.method(), request.uri());
    let response = tokio::time::timeout(WAIT, router.clone().oneshot(request))
        .await
        .unwrap_or_else(|_| panic!("{what} did not answer within {WAIT:?}"))
        .expect("the router never fails");
    let status = response.status();
    let headers = response.headers().clone();
    let body = tokio::time::timeout(WAIT, response.into_body().collect())
        .await
        .unwrap_or_else(|_| panic!("the body of {what} did not end within {WAIT:?}"))
        .expect("read the body")
        .to_bytes();
    (status, headers, body)
}

//! swoop's REST API, Kestra-shaped, under `/api/v1`, plus `/health` and a small web page at `/`.
//!
//! [`app`] builds the whole router over an [`Engine`]; tests drive it with `oneshot`, no socket.
//! [`app_with`] adds what the binary configures: Basic authentication ([`auth`]).
//! Errors are JSON `{"message": …, "details": [{line, column, message}]}`: 400/404/409/422 for
//! the caller's mistakes, 500 for ours.

mod auth;
mod executions;
mod files;
mod flows;
mod metrics;
mod openapi;
mod schemas;
mod triggers;
mod ui;

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use swoop_engine::{Engine, EngineError};

pub use auth::BasicAuth;
pub use ui::first_load_compressed_bytes;

#[derive(Clone)]
pub struct AppState {
    pub engine: Arc<Engine>,
}

/// What the binary configures about the HTTP side.
#[derive(Debug, Clone, Default)]
pub struct ServerOptions {
    /// `None`: no authentication (the binary allows it on a loopback address only).
    pub auth: Option<BasicAuth>,
}

/// The whole HTTP API, without authentication.
pub fn app(engine: Arc<Engine>) -> Router {
    app_with(engine, ServerOptions::default())
}

/// The whole HTTP API with `options`.
pub fn app_with(engine: Arc<Engine>, options: ServerOptions) -> Router {
    let metrics = metrics::Metrics::new(&engine);
    let router = routes(engine)
        .merge(
            Router::new()
                .route("/metrics", get(metrics::serve))
                .with_state(metrics.clone()),
        )
        // A route layer: it runs once the route matched, so it sees the route's pattern.
        .route_layer(axum::middleware::from_fn_with_state(
            metrics,
            metrics::time_requests,
        ));
    match options.auth {
        Some(auth) => router.layer(axum::middleware::from_fn_with_state(
            Arc::new(auth),
            auth::require,
        )),
        None => router,
    }
}

/// Every route, and the OpenAPI document made from the same declarations ([`openapi`]).
fn routes(engine: Arc<Engine>) -> Router {
    let state = AppState { engine };
    let (api, doc) = openapi::api_router().split_for_parts();
    let doc = Arc::new(doc);
    Router::new()
        .route("/", get(ui::index))
        .route("/ui/{file}", get(ui::asset))
        .route(
            "/api/v1/openapi.json",
            get(move || {
                let doc = doc.clone();
                async move { Json(doc.as_ref().clone()) }
            }),
        )
        .merge(api)
        .with_state(state)
}

/// Liveness: the store backend, the executions running, this node.
#[utoipa::path(get, operation_id = "health", path = "/health", tag = "system", security(()),
    responses((status = 200, description = "`{\"status\": \"UP\", \"store\", \"runningExecutions\", \"node\"}`", body = serde_json::Value)))]
async fn health(axum::extract::State(state): axum::extract::State<AppState>) -> Response {
    Json(json!({
        "status": "UP",
        "store": state.engine.store().backend(),
        "runningExecutions": state.engine.running_count(),
        "node": state.engine.node().map(|n| json!({"id": n.id, "name": n.settings.name})),
    }))
    .into_response()
}

/// The nodes of the cluster (one node alone: this one), with their state, heartbeat and the
/// triggers each runs: `{"results": [...], "total": N}`.
#[utoipa::path(get, operation_id = "clusterNodes", path = "/api/v1/cluster/nodes", tag = "system",
    responses((status = 200, description = "`{\"results\": [node …], \"total\": N}`", body = serde_json::Value)))]
async fn cluster_nodes(
    axum::extract::State(state): axum::extract::State<AppState>,
) -> ApiResult<Json<serde_json::Value>> {
    let nodes = state.engine.cluster_nodes().await?;
    Ok(Json(json!({"total": nodes.len(), "results": nodes})))
}

/// An error as the API answers it.
pub struct ApiError {
    status: StatusCode,
    message: String,
    details: Vec<swoop_core::validate::Diagnostic>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            details: Vec::new(),
        }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::NotFound(m) => ApiError::new(StatusCode::NOT_FOUND, m),
            EngineError::Invalid { message, details } => ApiError {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                message,
                details,
            },
            EngineError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, m),
            EngineError::ShuttingDown => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
            }
            EngineError::Store(err) => {
                tracing::error!(error = %err, "store error answering a request");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, err.to_string())
            }
            EngineError::Storage(err) => {
                tracing::error!(error = %err, "internal storage error answering a request");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("internal storage: {err}"),
                )
            }
        }
    }
}

/// An error's JSON body.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ApiErrorBody {
    /// What went wrong and how to fix it.
    message: String,
    /// For a flow: each problem at its place.
    details: Vec<Problem>,
}

/// One problem of a flow, at its line and column (1-based; 0 when it has no place).
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Problem {
    line: usize,
    column: usize,
    message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ApiErrorBody {
            message: self.message,
            details: self
                .details
                .into_iter()
                .map(|d| Problem {
                    line: d.line,
                    column: d.column,
                    message: d.message,
                })
                .collect(),
        };
        (self.status, Json(body)).into_response()
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// Kestra's paging defaults: `page` is 1-based, `size` 25.
pub(crate) fn one() -> usize {
    1
}
pub(crate) fn twenty_five() -> usize {
    25
}

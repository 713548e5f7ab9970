//! `/api/v1/flows`: create, read, update, delete, search and validate flows (YAML bodies).

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use swoop_core::Flow;

use crate::{ApiErrorBody, ApiResult, AppState};

/// A flow as the API shows it: its YAML as JSON, plus revision and source.
pub fn flow_json(flow: &Flow) -> Value {
    let mut v = flow.json.clone();
    if let Value::Object(m) = &mut v {
        m.insert("revision".into(), json!(flow.revision));
        m.insert("deleted".into(), json!(false));
        m.insert("source".into(), json!(flow.source));
    }
    v
}

/// Creates a flow from its YAML source.
#[utoipa::path(post, operation_id = "createFlow", path = "/api/v1/flows", tag = "flows",
    request_body(content = String, content_type = "application/x-yaml", description = "The flow's YAML"),
    responses((status = 200, description = "The flow: its YAML as JSON, with `revision` and `source`", body = crate::schemas::Flow), (status = 409, description = "The flow exists", body = ApiErrorBody), (status = 422, description = "The flow is invalid: every problem with its line", body = ApiErrorBody)))]
pub async fn create(State(state): State<AppState>, body: String) -> ApiResult<Response> {
    let flow = state.engine.create_flow(&body).await?;
    Ok((StatusCode::OK, Json(flow_json(&flow))).into_response())
}

/// Replaces a flow's source: a new revision.
#[utoipa::path(put, operation_id = "updateFlow", path = "/api/v1/flows/{namespace}/{id}", tag = "flows", params(("namespace" = String, Path, description = "The flow's namespace"), ("id" = String, Path, description = "The flow's id")),
    request_body(content = String, content_type = "application/x-yaml", description = "The flow's YAML"),
    responses((status = 200, description = "The flow: its YAML as JSON, with `revision` and `source`", body = crate::schemas::Flow), (status = 404, description = "Not found", body = ApiErrorBody), (status = 422, description = "The flow is invalid: every problem with its line", body = ApiErrorBody)))]
pub async fn update(
    State(state): State<AppState>,
    Path((namespace, id)): Path<(String, String)>,
    body: String,
) -> ApiResult<Json<Value>> {
    let flow = state.engine.update_flow(&namespace, &id, &body).await?;
    Ok(Json(flow_json(&flow)))
}

/// One flow, its latest revision.
#[utoipa::path(get, operation_id = "getFlow", path = "/api/v1/flows/{namespace}/{id}", tag = "flows", params(("namespace" = String, Path, description = "The flow's namespace"), ("id" = String, Path, description = "The flow's id")),
    responses((status = 200, description = "The flow: its YAML as JSON, with `revision` and `source`", body = crate::schemas::Flow), (status = 404, description = "Not found", body = ApiErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    Path((namespace, id)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let flow = state.engine.flow(&namespace, &id).ok_or_else(|| {
        crate::ApiError::new(
            StatusCode::NOT_FOUND,
            format!("flow `{namespace}.{id}` not found"),
        )
    })?;
    Ok(Json(flow_json(&flow)))
}

/// Every revision of a flow, oldest first: `[{"revision", "source", "updated"}, …]`.
#[utoipa::path(get, operation_id = "flowRevisions", path = "/api/v1/flows/{namespace}/{id}/revisions", tag = "flows", params(("namespace" = String, Path, description = "The flow's namespace"), ("id" = String, Path, description = "The flow's id")),
    responses((status = 200, description = "The revisions, oldest first", body = Vec<crate::schemas::FlowRevision>), (status = 404, description = "Not found", body = ApiErrorBody)))]
pub async fn revisions(
    State(state): State<AppState>,
    Path((namespace, id)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let revisions = state.engine.flow_revisions(&namespace, &id).await?;
    Ok(Json(Value::Array(
        revisions
            .into_iter()
            .map(|r| {
                serde_json::json!({
                    "revision": r.revision,
                    "source": r.source,
                    "updated": r.updated,
                })
            })
            .collect(),
    )))
}

/// Deletes a flow (its revisions stay readable); its triggers stop.
#[utoipa::path(delete, operation_id = "deleteFlow", path = "/api/v1/flows/{namespace}/{id}", tag = "flows", params(("namespace" = String, Path, description = "The flow's namespace"), ("id" = String, Path, description = "The flow's id")),
    responses((status = 204, description = "Deleted"), (status = 404, description = "Not found", body = ApiErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    Path((namespace, id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    state.engine.delete_flow(&namespace, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FlowSearch {
    namespace: Option<String>,
    q: Option<String>,
    // Not `#[serde(flatten)]`: flattening makes serde_urlencoded see numbers as strings.
    #[serde(default = "crate::one")]
    page: usize,
    #[serde(default = "crate::twenty_five")]
    size: usize,
}

/// Flows, filtered by namespace (and its children) and text.
#[utoipa::path(get, operation_id = "searchFlows", path = "/api/v1/flows/search", tag = "flows", params(FlowSearch),
    responses((status = 200, description = "A page of flows", body = crate::schemas::FlowPage)))]
pub async fn search(State(state): State<AppState>, Query(query): Query<FlowSearch>) -> Json<Value> {
    let matches: Vec<_> = state
        .engine
        .flows()
        .into_iter()
        .filter(|f| {
            query
                .namespace
                .as_deref()
                .is_none_or(|ns| f.namespace == ns || f.namespace.starts_with(&format!("{ns}.")))
        })
        .filter(|f| {
            query.q.as_deref().is_none_or(|q| {
                let q = q.to_lowercase();
                f.id.to_lowercase().contains(&q) || f.namespace.to_lowercase().contains(&q)
            })
        })
        .collect();
    let total = matches.len();
    let size = query.size.clamp(1, 1000);
    let page = query.page.max(1);
    let results: Vec<Value> = matches
        .iter()
        .skip((page - 1) * size)
        .take(size)
        .map(|f| flow_json(f))
        .collect();
    Json(json!({"results": results, "total": total}))
}

/// Splits a multi-document YAML body on `---` lines, keeping each document's first line number.
fn documents(body: &str) -> Vec<(usize, String)> {
    let mut docs = Vec::new();
    let mut current = String::new();
    let mut start = 1;
    for (i, line) in body.lines().enumerate() {
        if line.trim_end() == "---" {
            if !current.trim().is_empty() {
                docs.push((start, std::mem::take(&mut current)));
            }
            current.clear();
            start = i + 2;
            continue;
        }
        current.push_str(line);
        current.push('\n');
    }
    if !current.trim().is_empty() {
        docs.push((start, current));
    }
    docs
}

/// Validates one or several flows (documents separated by `---`); answers one entry per flow.
#[utoipa::path(post, operation_id = "validateFlows", path = "/api/v1/flows/validate", tag = "flows",
    request_body(content = String, content_type = "application/x-yaml", description = "One flow or several, separated by `---` lines"),
    responses((status = 200, description = "One entry per flow: its id, namespace and every problem with its line and column", body = serde_json::Value)))]
pub async fn validate(State(state): State<AppState>, body: String) -> Json<Value> {
    let results: Vec<Value> = documents(&body)
        .into_iter()
        .enumerate()
        .map(|(index, (first_line, source))| {
            let head: Value = swoop_core::yaml::parse(&source).map(|n| n.to_json()).unwrap_or(Value::Null);
            let errors: Vec<Value> = state
                .engine
                .validate(&source)
                .into_iter()
                .map(|d| json!({"line": d.line + first_line - 1, "column": d.column, "message": d.message}))
                .collect();
            let constraints = (!errors.is_empty()).then(|| {
                errors
                    .iter()
                    .map(|e| format!("{}:{}: {}", e["line"], e["column"], e["message"].as_str().unwrap_or_default()))
                    .collect::<Vec<_>>()
                    .join("\n")
            });
            json!({
                "index": index,
                "flow": head.get("id"),
                "namespace": head.get("namespace"),
                "constraints": constraints,
                "errors": errors,
            })
        })
        .collect();
    Json(Value::Array(results))
}

//! `/api/v1/triggers`: every trigger's status, and switching one off, on, or restarting it.

use axum::Json;
use axum::extract::{Path, Query, State};
use serde_json::{Value, json};

use crate::{ApiErrorBody, ApiResult, AppState};

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct TriggerSearch {
    namespace: Option<String>,
    flow_id: Option<String>,
}

/// Every trigger running here, and every one disabled from the API, with its status:
/// `{"results": [...], "total": N}`.
#[utoipa::path(get, operation_id = "searchTriggers", path = "/api/v1/triggers/search", tag = "triggers", params(TriggerSearch),
    responses((status = 200, description = "Every trigger's status: state, events, in flight, lag, last error …", body = crate::schemas::TriggerPage)))]
pub async fn search(State(state): State<AppState>, Query(q): Query<TriggerSearch>) -> Json<Value> {
    let results: Vec<_> = state
        .engine
        .trigger_statuses()
        .into_iter()
        .filter(|t| {
            q.namespace
                .as_deref()
                .is_none_or(|ns| t.namespace == ns || t.namespace.starts_with(&format!("{ns}.")))
        })
        .filter(|t| q.flow_id.as_deref().is_none_or(|f| t.flow_id == f))
        .collect();
    Json(json!({"total": results.len(), "results": results}))
}

type TriggerPath = Path<(String, String, String)>;

/// Disables a trigger, durably and on every node: its task stops (a realtime source first
/// confirms what was recorded), a webhook answers 409.
#[utoipa::path(post, operation_id = "disableTrigger", path = "/api/v1/triggers/{namespace}/{flowId}/{triggerId}/disable", tag = "triggers",
    params(("namespace" = String, Path, description = "The flow's namespace"), ("flowId" = String, Path, description = "The flow's id"), ("triggerId" = String, Path, description = "The trigger's id")),
    responses((status = 200, description = "The trigger's status, `DISABLED`", body = swoop_engine::TriggerStatus), (status = 404, description = "No such flow or trigger", body = ApiErrorBody), (status = 409, description = "Disabled in the flow's source", body = ApiErrorBody)))]
pub async fn disable(
    State(state): State<AppState>,
    Path((namespace, flow_id, trigger_id)): TriggerPath,
) -> ApiResult<Json<Value>> {
    let status = state
        .engine
        .set_trigger_disabled(&namespace, &flow_id, &trigger_id, true)
        .await?;
    Ok(Json(json!(status)))
}

/// Enables a trigger disabled from the API: it starts again (on the node that takes it).
#[utoipa::path(post, operation_id = "enableTrigger", path = "/api/v1/triggers/{namespace}/{flowId}/{triggerId}/enable", tag = "triggers",
    params(("namespace" = String, Path, description = "The flow's namespace"), ("flowId" = String, Path, description = "The flow's id"), ("triggerId" = String, Path, description = "The trigger's id")),
    responses((status = 200, description = "The trigger's status", body = swoop_engine::TriggerStatus), (status = 404, description = "No such flow or trigger", body = ApiErrorBody), (status = 409, description = "Disabled in the flow's source", body = ApiErrorBody)))]
pub async fn enable(
    State(state): State<AppState>,
    Path((namespace, flow_id, trigger_id)): TriggerPath,
) -> ApiResult<Json<Value>> {
    let status = state
        .engine
        .set_trigger_disabled(&namespace, &flow_id, &trigger_id, false)
        .await?;
    Ok(Json(json!(status)))
}

/// Stops a trigger and starts it again: a realtime source reconnects.
#[utoipa::path(post, operation_id = "restartTrigger", path = "/api/v1/triggers/{namespace}/{flowId}/{triggerId}/restart", tag = "triggers",
    params(("namespace" = String, Path, description = "The flow's namespace"), ("flowId" = String, Path, description = "The flow's id"), ("triggerId" = String, Path, description = "The trigger's id")),
    responses((status = 200, description = "The trigger's status", body = swoop_engine::TriggerStatus), (status = 404, description = "No such flow or trigger", body = ApiErrorBody), (status = 409, description = "Disabled, or running on another node", body = ApiErrorBody)))]
pub async fn restart(
    State(state): State<AppState>,
    Path((namespace, flow_id, trigger_id)): TriggerPath,
) -> ApiResult<Json<Value>> {
    let status = state
        .engine
        .restart_trigger(&namespace, &flow_id, &trigger_id)
        .await?;
    Ok(Json(json!(status)))
}

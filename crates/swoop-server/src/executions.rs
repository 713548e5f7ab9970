//! `/api/v1/executions` and `/api/v1/logs`: start (with inputs as JSON or a multipart form,
//! optionally waiting for the end), read, search, follow (server-sent events), kill, restart,
//! webhooks, logs.

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use swoop_core::model::{Label, LogLevel};
use swoop_core::{Execution, State as ExecState};
use swoop_engine::NewExecution;
use swoop_store::{ExecutionCursor, ExecutionQuery};

use crate::{ApiError, ApiErrorBody, ApiResult, AppState};

fn execution_json(e: &Execution) -> Value {
    serde_json::to_value(e).unwrap_or(Value::Null)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CreateParams {
    #[serde(default)]
    wait: bool,
    /// `key:value`, comma-separated.
    #[serde(default)]
    labels: Option<String>,
}

async fn inputs_from_request(request: Request) -> ApiResult<Map<String, Value>> {
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    if content_type.starts_with("multipart/form-data") {
        let mut form = Multipart::from_request(request, &())
            .await
            .map_err(|e| ApiError::bad_request(format!("cannot read the multipart form: {e}")))?;
        let mut inputs = Map::new();
        while let Some(field) = form
            .next_field()
            .await
            .map_err(|e| ApiError::bad_request(format!("cannot read the multipart form: {e}")))?
        {
            let name = field.name().unwrap_or_default().to_string();
            let text = field
                .text()
                .await
                .map_err(|e| ApiError::bad_request(format!("form field `{name}`: {e}")))?;
            inputs.insert(name, Value::String(text));
        }
        return Ok(inputs);
    }
    let body = Bytes::from_request(request, &())
        .await
        .map_err(|e| ApiError::bad_request(format!("cannot read the body: {e}")))?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ApiError::bad_request(
            "inputs must be a JSON object: {\"name\": value, …}",
        )),
        Err(e) => Err(ApiError::bad_request(format!(
            "inputs are not valid JSON ({e}); send a JSON object or a multipart form"
        ))),
    }
}

fn parse_labels(text: Option<&str>) -> ApiResult<Vec<Label>> {
    text.unwrap_or_default()
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|pair| {
            pair.split_once(':')
                .map(|(k, v)| Label {
                    key: k.trim().to_string(),
                    value: v.trim().to_string(),
                })
                .ok_or_else(|| ApiError::bad_request(format!("label `{pair}` must be key:value")))
        })
        .collect()
}

/// Runs a flow. Inputs come as a JSON object or a multipart form (files among them).
#[utoipa::path(post, operation_id = "createExecution", path = "/api/v1/executions/{namespace}/{flow_id}", tag = "executions",
    params(("namespace" = String, Path, description = "The flow's namespace"), ("flow_id" = String, Path, description = "The flow's id"), CreateParams),
    request_body(content = serde_json::Value, description = "The inputs (JSON, or multipart/form-data)"),
    responses((status = 200, description = "The execution (ended, with `wait=true`)", body = swoop_core::Execution), (status = 404, description = "Not found", body = ApiErrorBody), (status = 422, description = "The flow is invalid: every problem with its line", body = ApiErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    Path((namespace, flow_id)): Path<(String, String)>,
    Query(params): Query<CreateParams>,
    request: Request,
) -> ApiResult<Json<Value>> {
    let inputs = inputs_from_request(request).await?;
    let labels = parse_labels(params.labels.as_deref())?;
    let execution = state
        .engine
        .execute(NewExecution {
            namespace,
            flow_id,
            inputs,
            labels,
            ..Default::default()
        })
        .await?;
    let execution = if params.wait {
        state.engine.wait_for_end(&execution.id, None).await?
    } else {
        execution
    };
    Ok(Json(execution_json(&execution)))
}

/// One execution, as it is now.
#[utoipa::path(get, operation_id = "getExecution", path = "/api/v1/executions/{id}", tag = "executions", params(("id" = String, Path, description = "The execution's id")),
    responses((status = 200, description = "The execution", body = swoop_core::Execution), (status = 404, description = "Not found", body = ApiErrorBody)))]
pub async fn get(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    Ok(Json(execution_json(
        &state.engine.get_execution(&id).await?,
    )))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionSearch {
    namespace: Option<String>,
    flow_id: Option<String>,
    /// One state or several, comma-separated.
    state: Option<String>,
    /// Created at or after this date (RFC 3339).
    start_date: Option<String>,
    /// Created before this date (RFC 3339).
    end_date: Option<String>,
    /// `key:value`; several comma-separated, all must match. With `triggerId`, the count
    /// stops at 10,000 (`totalIsLowerBound`).
    labels: Option<String>,
    /// Created by this trigger (its id in the flow).
    trigger_id: Option<String>,
    // Not `#[serde(flatten)]`: flattening makes serde_urlencoded see numbers as strings.
    #[serde(default = "crate::one")]
    page: usize,
    #[serde(default = "crate::twenty_five")]
    size: usize,
    /// Keyset paging: the page after this position, the `next` of the previous page (fast at
    /// any depth; `page` is then ignored).
    after: Option<String>,
}

/// Executions, newest first, filtered by namespace (and its children), flow and state.
#[utoipa::path(get, operation_id = "searchExecutions", path = "/api/v1/executions/search", tag = "executions", params(ExecutionSearch),
    responses((status = 200, description = "A page: pass `next` as `after` for the following page", body = crate::schemas::ExecutionPage),
        (status = 400, description = "A bad state or `after`", body = ApiErrorBody)))]
pub async fn search(
    State(state): State<AppState>,
    Query(q): Query<ExecutionSearch>,
) -> ApiResult<Json<Value>> {
    let states = q
        .state
        .as_deref()
        .unwrap_or_default()
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse::<ExecState>().map_err(ApiError::bad_request))
        .collect::<ApiResult<Vec<_>>>()?;
    let date = |name: &str, text: &Option<String>| {
        text.as_deref()
            .filter(|t| !t.is_empty())
            .map(|t| {
                chrono::DateTime::parse_from_rfc3339(t)
                    .map(|d| d.timestamp_millis())
                    .map_err(|e| {
                        ApiError::bad_request(format!(
                            "`{name}` must be an RFC 3339 date (2026-12-07T10:00:00Z): `{t}`: {e}"
                        ))
                    })
            })
            .transpose()
    };
    let created_from = date("startDate", &q.start_date)?;
    let created_before = date("endDate", &q.end_date)?;
    let labels = parse_labels(q.labels.as_deref())?
        .into_iter()
        .map(|l| (l.key, l.value))
        .collect();
    let after = q
        .after
        .as_deref()
        .map(ExecutionCursor::decode)
        .transpose()
        .map_err(ApiError::bad_request)?;
    // Running executions are saved in the background: make the search see their newest state.
    state
        .engine
        .store()
        .flush()
        .await
        .map_err(swoop_engine::EngineError::from)?;
    let page = state
        .engine
        .store()
        .search_executions(&ExecutionQuery {
            namespace: q.namespace,
            flow_id: q.flow_id,
            states,
            created_from,
            created_before,
            labels,
            trigger_id: q.trigger_id.filter(|t| !t.is_empty()),
            page: q.page,
            size: q.size,
            after,
        })
        .await
        .map_err(swoop_engine::EngineError::from)?;
    let results: Vec<Value> = page.results.iter().map(execution_json).collect();
    Ok(Json(json!({
        "results": results,
        "total": page.total,
        "totalIsLowerBound": page.total_is_lower_bound,
        "next": page.next.map(|c| c.encode()),
    })))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct LogParams {
    min_level: Option<String>,
}

/// An execution's log lines, in order.
#[utoipa::path(get, operation_id = "getLogs", path = "/api/v1/logs/{id}", tag = "logs", params(("id" = String, Path, description = "The execution's id"), LogParams),
    responses((status = 200, description = "The log lines", body = crate::schemas::Logs), (status = 400, description = "Bad `minLevel`", body = ApiErrorBody)))]
pub async fn logs(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(params): Query<LogParams>,
) -> ApiResult<Json<Value>> {
    let min: Option<LogLevel> = params
        .min_level
        .as_deref()
        .map(str::parse)
        .transpose()
        .map_err(ApiError::bad_request)?;
    let store = state.engine.store();
    store
        .flush()
        .await
        .map_err(swoop_engine::EngineError::from)?;
    let logs = store
        .logs_for_execution(&id)
        .await
        .map_err(swoop_engine::EngineError::from)?;
    let logs: Vec<Value> = logs
        .into_iter()
        .filter(|l| min.is_none_or(|m| l.level >= m))
        .map(|l| serde_json::to_value(l).unwrap_or(Value::Null))
        .collect();
    Ok(Json(Value::Array(logs)))
}

/// Server-sent events: the execution now, then again after every change, until it ends.
#[utoipa::path(get, operation_id = "followExecution", path = "/api/v1/executions/{id}/follow", tag = "executions", params(("id" = String, Path, description = "The execution's id")),
    responses((status = 200, description = "Server-sent events, each the execution as JSON, until it ends", content_type = "text/event-stream", body = String), (status = 404, description = "Not found", body = ApiErrorBody)))]
pub async fn follow(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let engine = state.engine.clone();
    let mut events = engine.subscribe();
    let first = engine.get_execution(&id).await?;
    let stream = async_stream(move |tx| async move {
        let mut current = first;
        loop {
            let ended = current.state.current.is_terminal();
            let event = Event::default()
                .event("execution")
                .json_data(&current)
                .unwrap_or_default();
            if tx.send(Ok(event)).await.is_err() || ended {
                return;
            }
            loop {
                match events.recv().await {
                    Ok(ev) if ev.id == id => break,
                    Ok(_) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => break,
                    Err(_) => return,
                }
            }
            match engine.get_execution(&id).await {
                Ok(e) => current = e,
                Err(_) => return,
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// A stream fed by a spawned producer through a small channel.
fn async_stream<F, Fut>(producer: F) -> impl Stream<Item = Result<Event, Infallible>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<Event, Infallible>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(producer(tx));
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// Runs an execution again as a new one: same inputs, labels and trigger event, on the flow's
/// newest revision, labelled `replayOf`.
#[utoipa::path(post, operation_id = "replayExecution", path = "/api/v1/executions/{id}/replay", tag = "executions", params(("id" = String, Path, description = "The execution's id")),
    responses((status = 200, description = "The new execution", body = swoop_core::Execution), (status = 404, description = "Not found, or its flow is gone", body = ApiErrorBody), (status = 422, description = "Its inputs no longer fit the flow", body = ApiErrorBody)))]
pub async fn replay(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(execution_json(&state.engine.replay(&id).await?)))
}

/// Restarts a FAILED or KILLED execution from its failed tasks.
#[utoipa::path(post, operation_id = "restartExecution", path = "/api/v1/executions/{id}/restart", tag = "executions", params(("id" = String, Path, description = "The execution's id")),
    responses((status = 200, description = "The restarted execution", body = swoop_core::Execution), (status = 404, description = "Not found", body = ApiErrorBody), (status = 409, description = "Not restartable in its state", body = ApiErrorBody)))]
pub async fn restart(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(execution_json(&state.engine.restart(&id).await?)))
}

/// Kills a running execution.
#[utoipa::path(delete, operation_id = "killExecution", path = "/api/v1/executions/{id}/kill", tag = "executions", params(("id" = String, Path, description = "The execution's id")),
    responses((status = 202, description = "The kill was asked; the execution ends KILLED", body = swoop_core::Execution), (status = 404, description = "Not found", body = ApiErrorBody), (status = 409, description = "It has ended already", body = ApiErrorBody)))]
pub async fn kill(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let e = state.engine.kill(&id).await?;
    Ok((StatusCode::ACCEPTED, Json(execution_json(&e))))
}

/// Fires a Webhook trigger with a GET (query parameters and headers only).
#[utoipa::path(get, operation_id = "webhookGet", path = "/api/v1/executions/webhook/{namespace}/{flow_id}/{key}", tag = "executions", security(()),
    params(("namespace" = String, Path, description = "The flow's namespace"), ("flow_id" = String, Path, description = "The flow's id"), ("key" = String, Path, description = "The Webhook trigger's key")),
    responses((status = 200, description = "The execution started", body = swoop_core::Execution), (status = 404, description = "No flow has a Webhook trigger with this key", body = ApiErrorBody)))]
pub async fn webhook_get(
    state: State<AppState>,
    path: Path<(String, String, String)>,
    query: Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> ApiResult<Json<Value>> {
    webhook(state, path, query, headers, Bytes::new()).await
}

/// Fires a Webhook trigger with a POST: the body becomes `trigger.body` too.
#[utoipa::path(post, operation_id = "webhookPost", path = "/api/v1/executions/webhook/{namespace}/{flow_id}/{key}", tag = "executions", security(()),
    params(("namespace" = String, Path, description = "The flow's namespace"), ("flow_id" = String, Path, description = "The flow's id"), ("key" = String, Path, description = "The Webhook trigger's key")),
    request_body(content = serde_json::Value, description = "Any body: JSON becomes `trigger.body` as a value, anything else as text"),
    responses((status = 200, description = "The execution started", body = swoop_core::Execution), (status = 404, description = "No flow has a Webhook trigger with this key", body = ApiErrorBody)))]
pub async fn webhook_post(
    state: State<AppState>,
    path: Path<(String, String, String)>,
    query: Query<Vec<(String, String)>>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    webhook(state, path, query, headers, body).await
}

/// Starts the flow whose Webhook trigger has this key; the body, headers and query parameters
/// become `trigger.body`, `trigger.headers`, `trigger.parameters`.
async fn webhook(
    State(state): State<AppState>,
    Path((namespace, flow_id, key)): Path<(String, String, String)>,
    Query(parameters): Query<Vec<(String, String)>>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let mut params: HashMap<String, Vec<String>> = HashMap::new();
    for (k, v) in parameters {
        params.entry(k).or_default().push(v);
    }
    let mut header_map: HashMap<String, Vec<String>> = HashMap::new();
    for (name, value) in &headers {
        header_map
            .entry(name.as_str().to_string())
            .or_default()
            .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
    }
    let body = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()))
    };
    let mut variables = Map::new();
    variables.insert("body".into(), body);
    variables.insert("headers".into(), json!(header_map));
    variables.insert("parameters".into(), json!(params));
    let execution = state
        .engine
        .webhook(&namespace, &flow_id, &key, variables)
        .await?;
    Ok(Json(execution_json(&execution)))
}

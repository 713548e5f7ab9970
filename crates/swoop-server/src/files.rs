//! An execution's internal-storage files: `GET /api/v1/executions/{id}/file?path=kestra:///…`
//! streams one (never loaded whole), `GET …/file/metas?path=…` gives its size (Kestra's shape),
//! and `…/file/metas` without `path` lists every file of the execution (swoop's addition, for
//! the UI). Only the files of that execution are reachable: another execution's URI, or one
//! with `..`, answers 404 like a missing file.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{ApiError, ApiErrorBody, ApiResult, AppState};

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FileQuery {
    path: Option<String>,
}

fn required(q: &FileQuery) -> ApiResult<&str> {
    q.path.as_deref().ok_or_else(|| {
        ApiError::bad_request("the query parameter `path` (a kestra:///… URI) is required")
    })
}

/// Streams one file of the execution.
#[utoipa::path(get, operation_id = "downloadFile", path = "/api/v1/executions/{id}/file", tag = "files", params(("id" = String, Path, description = "The execution's id"), FileQuery),
    responses((status = 200, description = "The file", content_type = "application/octet-stream", body = Vec<u8>), (status = 400, description = "`path` is missing", body = ApiErrorBody), (status = 404, description = "No such file in this execution", body = ApiErrorBody)))]
pub async fn download(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<FileQuery>,
) -> ApiResult<Response> {
    let (meta, reader) = state.engine.open_execution_file(&id, required(&q)?).await?;
    let name = meta
        .uri
        .rsplit('/')
        .next()
        .unwrap_or("file")
        .replace('"', "");
    let body = Body::from_stream(tokio_util::io::ReaderStream::with_capacity(
        reader,
        64 * 1024,
    ));
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_LENGTH, meta.size.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        body,
    )
        .into_response())
}

/// One file's size, or without `path` every file of the execution.
#[utoipa::path(get, operation_id = "fileMetas", path = "/api/v1/executions/{id}/file/metas", tag = "files", params(("id" = String, Path, description = "The execution's id"), FileQuery),
    responses((status = 200, description = "`{\"path\", \"size\"}`, or `{\"results\": [...], \"total\": N}`", body = serde_json::Value), (status = 404, description = "Not found", body = ApiErrorBody)))]
pub async fn metas(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<FileQuery>,
) -> ApiResult<Json<Value>> {
    match q.path.as_deref() {
        Some(path) => {
            let (meta, _) = state.engine.open_execution_file(&id, path).await?;
            Ok(Json(json!({"path": meta.uri, "size": meta.size})))
        }
        None => {
            let files = state.engine.execution_files(&id).await?;
            Ok(Json(json!({"total": files.len(), "results": files})))
        }
    }
}

/// `DELETE /api/v1/executions/{id}`: the execution, its logs and its files.
#[utoipa::path(delete, operation_id = "deleteExecution", path = "/api/v1/executions/{id}", tag = "executions", params(("id" = String, Path, description = "The execution's id")),
    responses((status = 204, description = "Deleted, with its logs and files"), (status = 404, description = "Not found", body = ApiErrorBody), (status = 409, description = "It is still running", body = ApiErrorBody)))]
pub async fn delete_execution(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    state.engine.delete_execution(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

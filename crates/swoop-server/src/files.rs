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

use crate::{ApiError, ApiResult, AppState};

#[derive(Debug, Deserialize)]
pub struct FileQuery {
    path: Option<String>,
}

fn required(q: &FileQuery) -> ApiResult<&str> {
    q.path.as_deref().ok_or_else(|| {
        ApiError::bad_request("the query parameter `path` (a kestra:///… URI) is required")
    })
}

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
pub async fn delete_execution(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    state.engine.delete_execution(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

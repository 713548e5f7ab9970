//! `io.kestra.plugin.core.http.Request`: one HTTP call; the response (status, headers, body as
//! text, at most 10 MB by default) becomes the task's outputs.

use async_trait::async_trait;
use reqwest::{Method, StatusCode};
use serde_json::{Map, Value};
use swoop_core::model::LogLevel;
use swoop_core::registry::{
    PropSpec, PropType, RunContext, RunnableTask, TaskError, TaskFactory, TaskKind, render_as,
};

use super::client::{
    body_excerpt, headers_output, read_body_limited, send, status_error, until_cancelled,
};
use super::common::{RequestDef, log_request, log_response_headers, request_properties};

/// The largest body kept in memory unless `options.maxContentLength` says otherwise.
pub const DEFAULT_MAX_BODY: u64 = 10 * 1024 * 1024;

const USE_DOWNLOAD: &str =
    "use io.kestra.plugin.core.http.Download to store it in internal storage";

pub struct Request {
    def: RequestDef,
    encrypt_body: Option<Value>,
}

#[async_trait]
impl RunnableTask for Request {
    async fn run(&self, ctx: &dyn RunContext) -> Result<Map<String, Value>, TaskError> {
        until_cancelled(ctx, self.call(ctx)).await
    }
}

impl Request {
    async fn call(&self, ctx: &dyn RunContext) -> Result<Map<String, Value>, TaskError> {
        if let Some(v) = &self.encrypt_body
            && render_as::<bool>(ctx, "encryptBody", v)?
        {
            return Err(TaskError::permanent(encrypt_refusal()));
        }
        let prepared = self.def.prepare(ctx).await?;
        log_request(ctx, &prepared);
        let head = prepared.request.method() == Method::HEAD;
        let mut response = send(&prepared.client.0, prepared.request, &prepared.target).await?;
        let status = response.status();
        log_response_headers(ctx, &prepared.logs, &prepared.target, &response);
        tracing::debug!(target_url = %prepared.target, code = status.as_u16(), "http request answered");
        if status.as_u16() >= 400 && !prepared.allow_failed {
            let excerpt = body_excerpt(response).await;
            return Err(status_error(
                status,
                &prepared.target,
                &excerpt,
                "set `options.allowFailed: true` to accept it",
            ));
        }
        let headers = headers_output(response.headers());
        let limit = prepared.max_content_length.unwrap_or(DEFAULT_MAX_BODY);
        let bytes = read_body_limited(&mut response, limit, &prepared.target, USE_DOWNLOAD).await?;
        let body = if head || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED
        {
            Value::Null
        } else {
            let text = String::from_utf8(bytes).map_err(|e| {
                TaskError::permanent(format!(
                    "the response of {} is not valid UTF-8 text (byte {}): the Request task only \
                     outputs text bodies; {USE_DOWNLOAD}",
                    prepared.target,
                    e.utf8_error().valid_up_to()
                ))
            })?;
            if prepared.logs.response_body {
                ctx.log(
                    LogLevel::Info,
                    format!("response {} body: {text}", prepared.target),
                );
            }
            Value::String(text)
        };
        let mut out = Map::new();
        out.insert("uri".into(), Value::String(prepared.uri));
        out.insert("code".into(), Value::from(status.as_u16()));
        out.insert("headers".into(), headers);
        out.insert("body".into(), body);
        Ok(out)
    }
}

fn encrypt_refusal() -> String {
    "`encryptBody: true` is not supported (swoop has no output encryption); remove it, and \
     keep secrets out of responses stored as outputs"
        .into()
}

fn build(v: &Value) -> Result<TaskKind, String> {
    let encrypt_body = v.get("encryptBody").filter(|x| !x.is_null()).cloned();
    if encrypt_body == Some(Value::Bool(true)) {
        return Err(encrypt_refusal());
    }
    Ok(TaskKind::Runnable(std::sync::Arc::new(Request {
        def: RequestDef::from_json(v)?,
        encrypt_body,
    })))
}

pub fn factory() -> TaskFactory {
    TaskFactory {
        type_names: &[
            "io.kestra.plugin.core.http.Request",
            "io.kestra.plugin.fs.http.Request",
        ],
        properties: const { request_properties![PropSpec::optional("encryptBody", PropType::Bool)] },
        build: |_, v| build(v),
    }
}

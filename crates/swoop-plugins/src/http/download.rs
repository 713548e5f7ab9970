//! `io.kestra.plugin.core.http.Download`: one HTTP call whose response body is streamed into
//! internal storage (never held whole in memory); outputs its `uri`, `length`, `code` and
//! `headers`.

use async_trait::async_trait;
use reqwest::header::{CONTENT_DISPOSITION, CONTENT_ENCODING};
use serde_json::{Map, Value};
use swoop_core::model::LogLevel;
use swoop_core::registry::{
    PropSpec, PropType, RunContext, RunnableTask, TaskError, TaskFactory, TaskKind, render_as,
};
use tokio::io::AsyncWriteExt;

use super::client::{
    body_excerpt, headers_output, send, send_error, status_error, until_cancelled,
};
use super::common::{RequestDef, log_request, log_response_headers, request_properties};

pub struct Download {
    def: RequestDef,
    fail_on_empty_response: Option<Value>,
}

#[async_trait]
impl RunnableTask for Download {
    async fn run(&self, ctx: &dyn RunContext) -> Result<Map<String, Value>, TaskError> {
        until_cancelled(ctx, self.call(ctx)).await
    }
}

impl Download {
    async fn call(&self, ctx: &dyn RunContext) -> Result<Map<String, Value>, TaskError> {
        let fail_on_empty = match &self.fail_on_empty_response {
            Some(v) => render_as::<bool>(ctx, "failOnEmptyResponse", v)?,
            None => true,
        };
        let prepared = self.def.prepare(ctx).await?;
        log_request(ctx, &prepared);
        let url = prepared.request.url().clone();
        let mut response = send(&prepared.client.0, prepared.request, &prepared.target).await?;
        let status = response.status();
        let target = prepared.target;
        log_response_headers(ctx, &prepared.logs, &target, &response);
        if status.as_u16() >= 400 && !prepared.allow_failed {
            let excerpt = body_excerpt(response).await;
            return Err(status_error(
                status,
                &target,
                &excerpt,
                "set `options.allowFailed: true` to accept it",
            ));
        }
        let headers = headers_output(response.headers());
        let announced = response
            .headers()
            .get(CONTENT_ENCODING)
            .is_none()
            .then(|| response.content_length())
            .flatten();
        let name = response
            .headers()
            .get(CONTENT_DISPOSITION)
            .and_then(|v| v.to_str().ok())
            .and_then(filename_from_disposition)
            .or_else(|| {
                url.path_segments()
                    .and_then(|mut s| s.next_back())
                    .and_then(safe_name)
            })
            .unwrap_or_else(|| "download".to_string());

        let storage_error = |e: std::io::Error| {
            TaskError::new(format!(
                "cannot write the download of {target} to internal storage: {e}"
            ))
        };
        let (uri, mut writer) = ctx.storage().create(&name).await.map_err(storage_error)?;
        let mut length: u64 = 0;
        while let Some(chunk) = response.chunk().await.map_err(|e| send_error(e, &target))? {
            length += chunk.len() as u64;
            if let Some(limit) = prepared.max_content_length
                && length > limit
            {
                return Err(TaskError::permanent(format!(
                    "the response of {target} is longer than `options.maxContentLength` ({limit} bytes)"
                )));
            }
            writer.write_all(&chunk).await.map_err(storage_error)?;
        }
        if let Some(expected) = announced
            && expected != length
        {
            return Err(TaskError::new(format!(
                "the download of {target} is incomplete: got {length} bytes, the server announced {expected}"
            )));
        }
        if length == 0 {
            if fail_on_empty && !prepared.allow_failed {
                return Err(TaskError::new(format!(
                    "{target} answered {status} with an empty body; set `failOnEmptyResponse: false` to accept it"
                )));
            }
            ctx.log(LogLevel::Warn, format!("the download of {target} is empty"));
        }
        writer.shutdown().await.map_err(storage_error)?;
        tracing::debug!(target_url = %target, length, %uri, "http download stored");
        let mut out = Map::new();
        out.insert("uri".into(), Value::String(uri));
        out.insert("code".into(), Value::from(status.as_u16()));
        out.insert("length".into(), Value::from(length));
        out.insert("headers".into(), headers);
        Ok(out)
    }
}

/// The `filename` (or RFC 5987 `filename*`) of a `Content-Disposition` header, made safe.
fn filename_from_disposition(header: &str) -> Option<String> {
    let mut plain = None;
    let mut extended = None;
    for part in header.split(';') {
        let part = part.trim();
        let Some((key, value)) = part.split_once('=') else {
            continue;
        };
        match key.trim().to_ascii_lowercase().as_str() {
            "filename" => plain = Some(value.trim().trim_matches('"').to_string()),
            "filename*" => {
                // charset'language'percent-encoded
                let encoded = value.trim().rsplit('\'').next().unwrap_or("");
                extended = Some(percent_decode(encoded));
            }
            _ => {}
        }
    }
    extended.or(plain).and_then(|n| safe_name(&n))
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = text.get(i + 1..i + 3)
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The last path segment of `name` if it is a usable file name (no `..`, no control chars).
fn safe_name(name: &str) -> Option<String> {
    let last = name.rsplit(['/', '\\']).next().unwrap_or("");
    let clean: String = last.chars().filter(|c| !c.is_control()).collect();
    let clean = clean.trim();
    (!clean.is_empty() && clean != "." && clean != ".." && clean.len() <= 200)
        .then(|| clean.to_string())
}

fn build(v: &Value) -> Result<TaskKind, String> {
    Ok(TaskKind::Runnable(std::sync::Arc::new(Download {
        def: RequestDef::from_json(v)?,
        fail_on_empty_response: v
            .get("failOnEmptyResponse")
            .filter(|x| !x.is_null())
            .cloned(),
    })))
}

pub fn factory() -> TaskFactory {
    TaskFactory {
        type_names: &[
            "io.kestra.plugin.core.http.Download",
            "io.kestra.plugin.fs.http.Download",
        ],
        properties: const {
            request_properties![PropSpec::optional("failOnEmptyResponse", PropType::Bool)]
        },
        build: |_, v| build(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_come_from_the_disposition_and_are_safe() {
        assert_eq!(
            filename_from_disposition("attachment; filename=\"report.csv\"").as_deref(),
            Some("report.csv")
        );
        assert_eq!(
            filename_from_disposition("attachment; filename*=UTF-8''na%C3%AFve%20file.txt")
                .as_deref(),
            Some("naïve file.txt")
        );
        assert_eq!(
            filename_from_disposition("attachment; filename=\"../../etc/passwd\"").as_deref(),
            Some("passwd")
        );
        assert_eq!(
            filename_from_disposition("attachment; filename=\"..\""),
            None
        );
        assert_eq!(filename_from_disposition("inline"), None);
    }
}

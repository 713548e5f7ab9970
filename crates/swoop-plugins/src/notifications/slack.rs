//! `io.kestra.plugin.notifications.slack.SlackIncomingWebhook` (also answering to the newer
//! `io.kestra.plugin.slack.*` names): posts a JSON message to a Slack incoming webhook, through
//! the HTTP family's shared client. The webhook URL is a secret: it is never logged or shown in
//! errors (only its host is).

use async_trait::async_trait;
use reqwest::Url;
use reqwest::header::CONTENT_TYPE;
use serde_json::{Map, Value};
use swoop_core::flow::scalar_text;
use swoop_core::model::LogLevel;
use swoop_core::registry::{
    PropSpec, PropType, RunContext, RunnableTask, TaskError, TaskFactory, TaskKind, render_as,
};

use crate::http::client::{
    ClientSettings, DEFAULT_READ_IDLE_TIMEOUT, apply_headers, body_excerpt, read_body_limited,
    render_duration, send, shared_client, status_error, until_cancelled,
};

/// Kestra's default `options.readTimeout` for Slack: the whole call.
const DEFAULT_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Kestra's default `options.maxContentLength`.
const DEFAULT_MAX_CONTENT_LENGTH: u64 = 10 * 1024 * 1024;

const OPTIONS: &[PropSpec] = &[
    PropSpec::optional("connectTimeout", PropType::Duration),
    PropSpec::optional("readTimeout", PropType::Duration),
    PropSpec::optional("readIdleTimeout", PropType::Duration),
    PropSpec::optional("connectionPoolIdleTimeout", PropType::Duration),
    PropSpec::optional("maxContentLength", PropType::Int),
    PropSpec::optional("defaultCharset", PropType::String),
    PropSpec::optional("headers", PropType::Map),
];

pub struct SlackIncomingWebhook {
    url: Value,
    message: Message,
    options: Map<String, Value>,
}

enum Message {
    /// JSON text, sent as is (after checking it is JSON).
    Payload(Value),
    /// Text: JSON is sent as is, anything else as `{"text": …}` with Markdown turned into
    /// Slack's mrkdwn.
    Text(Value),
}

#[async_trait]
impl RunnableTask for SlackIncomingWebhook {
    async fn run(&self, ctx: &dyn RunContext) -> Result<Map<String, Value>, TaskError> {
        until_cancelled(ctx, self.call(ctx)).await
    }
}

impl SlackIncomingWebhook {
    async fn call(&self, ctx: &dyn RunContext) -> Result<Map<String, Value>, TaskError> {
        let raw_url = ctx.render("url", &scalar_text(&self.url))?;
        let url = Url::parse(raw_url.trim()).map_err(|e| {
            TaskError::permanent(format!(
                "`url` is not a valid URL ({e}); expected https://hooks.slack.com/services/…"
            ))
        })?;
        let target = format!("the Slack webhook at {}", url.host_str().unwrap_or("?"));
        let body = self.body(ctx)?;
        let opts = &self.options;
        let duration =
            |name: &str| render_duration(ctx, &format!("options.{name}"), opts.get(name));
        let settings = ClientSettings {
            connect_timeout: duration("connectTimeout")?,
            read_idle_timeout: duration("readIdleTimeout")?.unwrap_or(DEFAULT_READ_IDLE_TIMEOUT),
            follow_redirects: true,
        };
        let read_timeout = duration("readTimeout")?.unwrap_or(DEFAULT_READ_TIMEOUT);
        let max_length = match opts.get("maxContentLength").filter(|v| !v.is_null()) {
            Some(v) => render_as::<u64>(ctx, "options.maxContentLength", v)?,
            None => DEFAULT_MAX_CONTENT_LENGTH,
        };
        let client = shared_client(ctx, &settings).await?;
        let mut request = client
            .0
            .post(url)
            .timeout(read_timeout)
            .header(CONTENT_TYPE, "application/json")
            .body(body.clone())
            .build()
            .map_err(|e| crate::http::client::send_error(e, &target))?;
        if let Some(Value::Object(headers)) = opts.get("headers") {
            apply_headers(ctx, "options.headers", headers, request.headers_mut())?;
        }
        ctx.log(LogLevel::Debug, format!("sending to {target}: {body}"));
        let _slot = client.slot(request.url()).await;
        let mut response = send(&client.0, request, &target).await?;
        let status = response.status();
        if !status.is_success() {
            let excerpt = body_excerpt(response).await;
            return Err(status_error(status, &target, &excerpt, ""));
        }
        let answer = read_body_limited(
            &mut response,
            max_length,
            &target,
            "raise `options.maxContentLength`",
        )
        .await?;
        tracing::debug!(
            host = url_host(&target),
            code = status.as_u16(),
            "slack webhook sent"
        );
        ctx.log(
            LogLevel::Info,
            format!(
                "{target} accepted the message ({status}: {})",
                String::from_utf8_lossy(&answer).trim()
            ),
        );
        Ok(Map::new())
    }

    /// The JSON text to send.
    fn body(&self, ctx: &dyn RunContext) -> Result<String, TaskError> {
        match &self.message {
            Message::Payload(p) => {
                let rendered = ctx.render("payload", &scalar_text(p))?;
                let json: Value = serde_json::from_str(&rendered).map_err(|e| {
                    TaskError::permanent(format!(
                        "`payload` is not valid JSON once rendered ({e}); write a JSON object such as {{\"text\": \"…\"}}, or use `messageText` for plain text"
                    ))
                })?;
                Ok(json.to_string())
            }
            Message::Text(t) => {
                let rendered = ctx.render("messageText", &scalar_text(t))?;
                match serde_json::from_str::<Value>(&rendered) {
                    Ok(json @ Value::Object(_)) => Ok(json.to_string()),
                    _ => Ok(serde_json::json!({"text": to_mrkdwn(&rendered)}).to_string()),
                }
            }
        }
    }
}

fn url_host(target: &str) -> &str {
    target.rsplit(' ').next().unwrap_or(target)
}

/// Markdown's `**bold**`, `__italic__` and `[text](url)` in Slack's mrkdwn (`*bold*`,
/// `_italic_`, `<url|text>`), as Kestra converts `messageText`.
pub fn to_mrkdwn(text: &str) -> String {
    let text = replace_pairs(text, "**", "*");
    let text = replace_pairs(&text, "__", "_");
    replace_links(&text)
}

/// Each `marker…marker` (shortest match) becomes `with…with`; an unclosed marker is kept.
fn replace_pairs(text: &str, marker: &str, with: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(marker) {
        let after = &rest[start + marker.len()..];
        let Some(end) = after.find(marker) else {
            break;
        };
        out.push_str(&rest[..start]);
        out.push_str(with);
        out.push_str(&after[..end]);
        out.push_str(with);
        rest = &after[end + marker.len()..];
    }
    out.push_str(rest);
    out
}

/// `[text](url)` → `<url|text>`.
fn replace_links(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find('[') {
        let after = &rest[open + 1..];
        let link = after.find("](").and_then(|close| {
            let url_part = &after[close + 2..];
            url_part.find(')').map(|end| (close, end))
        });
        let Some((close, end)) = link else {
            out.push_str(&rest[..open + 1]);
            rest = after;
            continue;
        };
        let label = &after[..close];
        let url = &after[close + 2..close + 2 + end];
        out.push_str(&rest[..open]);
        out.push_str(&format!("<{url}|{label}>"));
        rest = &after[close + 2 + end + 1..];
    }
    out.push_str(rest);
    out
}

fn build(v: &Value) -> Result<TaskKind, String> {
    let get = |name: &str| v.get(name).filter(|x| !x.is_null()).cloned();
    let url = get("url").ok_or(
        "`url` is required (the incoming webhook URL, usually `{{ secret('SLACK_WEBHOOK') }}`)",
    )?;
    let message = match (get("payload"), get("messageText")) {
        (Some(p), None) => Message::Payload(p),
        (None, Some(t)) => Message::Text(t),
        (Some(_), Some(_)) => {
            return Err("set either `payload` (JSON) or `messageText` (text), not both".into());
        }
        (None, None) => {
            return Err(
                "set `payload` (a JSON message such as {\"text\": \"…\"}) or `messageText`".into(),
            );
        }
    };
    let options = match get("options") {
        Some(Value::Object(o)) => o,
        Some(other) => return Err(format!("`options` must be a map, got {other}")),
        None => Map::new(),
    };
    if options
        .get("connectionPoolIdleTimeout")
        .is_some_and(|x| !x.is_null())
    {
        return Err("`options.connectionPoolIdleTimeout` is not supported (connections are pooled and shared by every execution); remove it".into());
    }
    if let Some(charset) = options.get("defaultCharset").filter(|x| !x.is_null()) {
        let name = scalar_text(charset).to_ascii_uppercase().replace('_', "-");
        if name != "UTF-8" && name != "UTF8" {
            return Err(format!(
                "`options.defaultCharset`: only UTF-8 is supported, got `{}`",
                scalar_text(charset)
            ));
        }
    }
    Ok(TaskKind::Runnable(std::sync::Arc::new(
        SlackIncomingWebhook {
            url,
            message,
            options,
        },
    )))
}

pub fn factory() -> TaskFactory {
    TaskFactory {
        type_names: &[
            "io.kestra.plugin.notifications.slack.SlackIncomingWebhook",
            "io.kestra.plugin.slack.notifications.SlackIncomingWebhook",
            "io.kestra.plugin.slack.SlackIncomingWebhook",
        ],
        properties: const {
            &[
                PropSpec::required("url", PropType::String),
                PropSpec::optional("payload", PropType::String),
                PropSpec::optional("messageText", PropType::String),
                PropSpec::optional("options", PropType::Object(OPTIONS)),
            ]
        },
        build: |_, v| build(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_becomes_mrkdwn() {
        assert_eq!(
            to_mrkdwn("**Flow** __failed__, see [logs](https://k/x)"),
            "*Flow* _failed_, see <https://k/x|logs>"
        );
        assert_eq!(to_mrkdwn("a ** b [c] (d)"), "a ** b [c] (d)");
    }

    #[test]
    fn exactly_one_message_property() {
        let both = serde_json::json!({"url": "http://h", "payload": "{}", "messageText": "x"});
        assert!(build(&both).err().unwrap().contains("not both"));
        let none = serde_json::json!({"url": "http://h"});
        assert!(build(&none).is_err());
    }
}

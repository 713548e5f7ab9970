//! What Request and Download share: their request properties (`uri`, `method`, `body`,
//! `formData`, `contentType`, `headers`, `options`, the deprecated `allowFailed`), the checks
//! made when the flow is built (what is refused, and why), and turning them, rendered, into a
//! `reqwest::Request` sent through the shared client.

use std::sync::Arc;

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use reqwest::multipart::{Form, Part};
use reqwest::{Method, Url};
use serde_json::{Map, Value};
use swoop_core::flow::scalar_text;
use swoop_core::model::LogLevel;
use swoop_core::registry::{PropSpec, PropType, RunContext, TaskError, render_as};
use tokio_util::io::ReaderStream;

use super::client::{
    ClientSettings, DEFAULT_READ_IDLE_TIMEOUT, HttpClient, apply_headers,
    render_duration as duration, shared_client,
};

const TIMEOUT: &[PropSpec] = &[
    PropSpec::optional("connectTimeout", PropType::Duration),
    PropSpec::optional("readIdleTimeout", PropType::Duration),
];

const BASIC: &[PropSpec] = &[
    PropSpec::required("type", PropType::String),
    PropSpec::optional("username", PropType::String),
    PropSpec::optional("password", PropType::String),
];

const BEARER: &[PropSpec] = &[
    PropSpec::required("type", PropType::String),
    PropSpec::optional("token", PropType::String),
];

/// Kestra's `options` (`HttpConfiguration`), deprecated flat keys included; the unsupported ones
/// are listed so that [`RequestDef::from_json`] refuses them with a reason.
pub const OPTIONS: &[PropSpec] = &[
    PropSpec::optional("timeout", PropType::Object(TIMEOUT)),
    PropSpec::optional(
        "auth",
        PropType::Tagged(&[("BASIC", BASIC), ("BEARER", BEARER), ("DIGEST", BASIC)]),
    ),
    PropSpec::optional("followRedirects", PropType::Bool),
    PropSpec::optional("allowFailed", PropType::Bool),
    PropSpec::optional("defaultCharset", PropType::String),
    PropSpec::optional("logs", PropType::List),
    PropSpec::optional("proxy", PropType::Any),
    PropSpec::optional("ssl", PropType::Any),
    // Deprecated flat keys.
    PropSpec::optional("connectTimeout", PropType::Duration),
    PropSpec::optional("readTimeout", PropType::Duration),
    PropSpec::optional("readIdleTimeout", PropType::Duration),
    PropSpec::optional("connectionPoolIdleTimeout", PropType::Duration),
    PropSpec::optional("maxContentLength", PropType::Int),
    PropSpec::optional("basicAuthUser", PropType::String),
    PropSpec::optional("basicAuthPassword", PropType::String),
    PropSpec::optional("logLevel", PropType::String),
    PropSpec::optional("proxyType", PropType::Any),
    PropSpec::optional("proxyAddress", PropType::Any),
    PropSpec::optional("proxyPort", PropType::Any),
    PropSpec::optional("proxyUsername", PropType::Any),
    PropSpec::optional("proxyPassword", PropType::Any),
];

/// The request properties of Request and Download, followed by `$extra`.
macro_rules! request_properties {
    ($($extra:expr),* $(,)?) => {
        &[
            PropSpec::required("uri", PropType::String),
            PropSpec::optional("method", PropType::String),
            PropSpec::optional("body", PropType::String),
            PropSpec::optional("formData", PropType::Map),
            PropSpec::optional("contentType", PropType::String),
            PropSpec::optional("headers", PropType::Map),
            PropSpec::optional("options", PropType::Object($crate::http::common::OPTIONS)),
            PropSpec::optional("allowFailed", PropType::Bool),
            PropSpec::optional("sslOptions", PropType::Any),
            $($extra),*
        ]
    };
}
pub(crate) use request_properties;

const LOG_TYPES: &[&str] = &[
    "REQUEST_HEADERS",
    "REQUEST_BODY",
    "RESPONSE_HEADERS",
    "RESPONSE_BODY",
];

/// Which parts of the exchange `options.logs` asks to log.
#[derive(Debug, Clone, Copy, Default)]
pub struct Logs {
    pub request_headers: bool,
    pub request_body: bool,
    pub response_headers: bool,
    pub response_body: bool,
}

impl Logs {
    fn set(&mut self, name: &str) -> Result<(), String> {
        match name.to_ascii_uppercase().as_str() {
            "REQUEST_HEADERS" => self.request_headers = true,
            "REQUEST_BODY" => self.request_body = true,
            "RESPONSE_HEADERS" => self.response_headers = true,
            "RESPONSE_BODY" => self.response_body = true,
            _ => {
                return Err(format!(
                    "`options.logs`: unknown value `{name}` (expected {})",
                    LOG_TYPES.join(", ")
                ));
            }
        }
        Ok(())
    }

    /// The deprecated `options.logLevel`, mapped as Kestra does.
    fn from_level(level: &str) -> Result<Logs, String> {
        let all = Logs {
            request_headers: true,
            request_body: true,
            response_headers: true,
            response_body: true,
        };
        match level.to_ascii_uppercase().as_str() {
            "TRACE" => Ok(all),
            "DEBUG" => Ok(Logs {
                request_headers: true,
                response_headers: true,
                ..Logs::default()
            }),
            "INFO" => Ok(Logs {
                response_headers: true,
                ..Logs::default()
            }),
            "WARN" | "ERROR" | "OFF" | "NOT_SPECIFIED" => Ok(Logs::default()),
            _ => Err(format!(
                "`options.logLevel`: unknown level `{level}`; use `options.logs` instead"
            )),
        }
    }
}

/// Request and Download's request properties, as written (rendered at run time).
#[derive(Debug, Clone)]
pub struct RequestDef {
    uri: Value,
    method: Option<Value>,
    body: Option<Value>,
    form_data: Option<Map<String, Value>>,
    content_type: Option<Value>,
    headers: Map<String, Value>,
    options: Map<String, Value>,
    /// Top-level `allowFailed` (deprecated alias of `options.allowFailed`).
    allow_failed: Option<Value>,
    logs: Logs,
}

/// A request ready to send, with what the task needs to judge the response.
pub struct Prepared {
    pub client: Arc<HttpClient>,
    pub request: reqwest::Request,
    /// The server, for messages (no credentials, no query string).
    pub target: String,
    /// The rendered `uri` (Request's `uri` output).
    pub uri: String,
    pub allow_failed: bool,
    pub logs: Logs,
    /// `options.maxContentLength`, when set.
    pub max_content_length: Option<u64>,
    /// This request's slot among the host's: held, never read, until the task ends.
    #[allow(dead_code)]
    pub slot: tokio::sync::OwnedSemaphorePermit,
}

fn present<'a>(v: &'a Value, name: &str) -> Option<&'a Value> {
    v.get(name).filter(|x| !x.is_null())
}

fn literal(v: &Value) -> Option<String> {
    let text = scalar_text(v);
    (!text.contains("{{") && !text.contains("{%")).then_some(text)
}

fn is_utf8_name(name: &str) -> bool {
    matches!(
        name.trim().to_ascii_uppercase().replace('_', "-").as_str(),
        "UTF-8" | "UTF8"
    )
}

impl RequestDef {
    /// Reads the properties and refuses what swoop does not support, saying what to do instead.
    pub fn from_json(v: &Value) -> Result<RequestDef, String> {
        if present(v, "sslOptions").is_some() {
            return Err(
                "`sslOptions` is not supported: swoop verifies server certificates \
                 against the system's trusted roots; remove it (use an http:// URL or a \
                 certificate the system trusts)"
                    .into(),
            );
        }
        let options = match present(v, "options") {
            Some(Value::Object(o)) => o.clone(),
            Some(other) => return Err(format!("`options` must be a map, got {other}")),
            None => Map::new(),
        };
        let logs = check_options(&options)?;
        let object = |name: &str| match present(v, name) {
            Some(Value::Object(m)) => Ok(Some(m.clone())),
            Some(other) => Err(format!("`{name}` must be a map, got {other}")),
            None => Ok(None),
        };
        Ok(RequestDef {
            uri: present(v, "uri")
                .cloned()
                .ok_or("`uri` is required (the URL to call)")?,
            method: present(v, "method").cloned(),
            body: present(v, "body").cloned(),
            form_data: object("formData")?,
            content_type: present(v, "contentType").cloned(),
            headers: object("headers")?.unwrap_or_default(),
            options,
            allow_failed: present(v, "allowFailed").cloned(),
            logs,
        })
    }

    /// Renders the properties, gets the shared client for the options and builds the request.
    pub async fn prepare(&self, ctx: &dyn RunContext) -> Result<Prepared, TaskError> {
        let opts = &self.options;
        let settings = client_settings(ctx, opts)?;
        let allow_failed = match (opts.get("allowFailed"), &self.allow_failed) {
            (Some(v), _) if !v.is_null() => render_as::<bool>(ctx, "options.allowFailed", v)?,
            (_, Some(v)) => render_as::<bool>(ctx, "allowFailed", v)?,
            _ => false,
        };
        if let Some(charset) = opts.get("defaultCharset").filter(|c| !c.is_null()) {
            let name = ctx.render("options.defaultCharset", &scalar_text(charset))?;
            if !is_utf8_name(&name) {
                return Err(TaskError::permanent(format!(
                    "`options.defaultCharset`: only UTF-8 is supported, got `{name}`"
                )));
            }
        }
        let max_content_length = match opts.get("maxContentLength").filter(|c| !c.is_null()) {
            Some(v) => Some(render_as::<u64>(ctx, "options.maxContentLength", v)?),
            None => None,
        };

        let uri = ctx
            .render("uri", &scalar_text(&self.uri))?
            .trim()
            .replace(' ', "%20");
        let url = Url::parse(&uri)
            .map_err(|e| TaskError::permanent(format!("`uri`: `{uri}` is not a valid URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(TaskError::permanent(format!(
                "`uri`: only http:// and https:// URLs are supported, got `{}:`",
                url.scheme()
            )));
        }
        let target = super::client::display_target(&url);
        let method = match &self.method {
            Some(m) => ctx
                .render("method", &scalar_text(m))?
                .trim()
                .to_ascii_uppercase(),
            None => "GET".to_string(),
        };
        let method = Method::from_bytes(method.as_bytes()).map_err(|_| {
            TaskError::permanent(format!("`method`: `{method}` is not an HTTP method"))
        })?;
        let content_type = match &self.content_type {
            Some(c) => ctx.render("contentType", &scalar_text(c))?,
            None => "application/json".to_string(),
        };

        let client = shared_client(ctx, &settings).await?;
        let mut builder = client.0.request(method, url);
        builder = self.with_auth(ctx, builder)?;
        let mut forced_content_type = None;
        let form = match &self.form_data {
            Some(form) if !form.is_empty() => {
                Some(ctx.render_value("formData", &Value::Object(form.clone()))?)
            }
            _ => None,
        };
        if let Some(Value::Object(form)) = form {
            if is_multipart(&content_type) {
                builder = builder.multipart(multipart_form(ctx, &form).await?);
            } else {
                let pairs: Vec<(String, String)> = form
                    .iter()
                    .map(|(k, v)| (k.clone(), form_text(v)))
                    .collect();
                builder = builder.form(&pairs);
                forced_content_type =
                    Some("application/x-www-form-urlencoded; charset=UTF-8".into());
            }
        } else if let Some(body) = &self.body {
            builder = builder.body(ctx.render("body", &scalar_text(body))?);
            forced_content_type = Some(with_charset(&content_type));
        } else {
            forced_content_type = Some(content_type.clone());
        }
        let mut request = builder
            .build()
            .map_err(|e| super::client::send_error(e, &target))?;
        if let Some(ct) = forced_content_type {
            let value = HeaderValue::from_str(&ct).map_err(|_| {
                TaskError::permanent(format!("`contentType`: `{ct}` is not a valid header value"))
            })?;
            request.headers_mut().insert(CONTENT_TYPE, value);
        }
        // They replace what the task set: a `Content-Type` header wins over `contentType`.
        apply_headers(ctx, "headers", &self.headers, request.headers_mut())?;
        let slot = client.slot(request.url()).await;
        Ok(Prepared {
            slot,
            client,
            request,
            target,
            uri,
            allow_failed,
            logs: self.logs,
            max_content_length,
        })
    }

    fn with_auth(
        &self,
        ctx: &dyn RunContext,
        builder: reqwest::RequestBuilder,
    ) -> Result<reqwest::RequestBuilder, TaskError> {
        let opts = &self.options;
        let text = |name: &str, v: Option<&Value>| -> Result<String, TaskError> {
            match v.filter(|x| !x.is_null()) {
                Some(v) => ctx.render(name, &scalar_text(v)),
                None => Ok(String::new()),
            }
        };
        if let Some(auth) = opts.get("auth").filter(|a| !a.is_null()) {
            let kind = text("options.auth.type", auth.get("type"))?.to_ascii_uppercase();
            return match kind.as_str() {
                "BASIC" => {
                    let user = text("options.auth.username", auth.get("username"))?;
                    let password = text("options.auth.password", auth.get("password"))?;
                    Ok(builder.basic_auth(user, Some(password)))
                }
                "BEARER" => Ok(builder.bearer_auth(text("options.auth.token", auth.get("token"))?)),
                other => Err(TaskError::permanent(format!(
                    "`options.auth.type`: `{other}` is not supported (use BASIC or BEARER)"
                ))),
            };
        }
        if opts.get("basicAuthUser").is_some_and(|u| !u.is_null()) {
            let user = text("options.basicAuthUser", opts.get("basicAuthUser"))?;
            let password = text("options.basicAuthPassword", opts.get("basicAuthPassword"))?;
            return Ok(builder.basic_auth(user, Some(password)));
        }
        Ok(builder)
    }
}

/// Build-time checks of `options`; returns what `logs` / `logLevel` ask to log.
fn check_options(options: &Map<String, Value>) -> Result<Logs, String> {
    let set = |name: &str| options.get(name).is_some_and(|v| !v.is_null());
    if set("proxy")
        || [
            "proxyType",
            "proxyAddress",
            "proxyPort",
            "proxyUsername",
            "proxyPassword",
        ]
        .iter()
        .any(|k| set(k))
    {
        return Err(
            "`options.proxy` (and the `options.proxy*` keys) are not supported: \
             swoop connects to the server directly; remove them"
                .into(),
        );
    }
    if set("ssl") {
        return Err(
            "`options.ssl` is not supported: swoop verifies server certificates against \
             the system's trusted roots; remove it"
                .into(),
        );
    }
    if set("connectionPoolIdleTimeout") {
        return Err(
            "`options.connectionPoolIdleTimeout` is not supported (connections are pooled \
             and shared by every execution); remove it"
                .into(),
        );
    }
    if let Some(auth) = options.get("auth").filter(|a| !a.is_null()) {
        if set("basicAuthUser") || set("basicAuthPassword") {
            return Err("set either `options.auth` or the deprecated \
                 `options.basicAuthUser`/`basicAuthPassword`, not both"
                .into());
        }
        if let Some(kind) = auth.get("type").and_then(literal)
            && kind.eq_ignore_ascii_case("DIGEST")
        {
            return Err(
                "`options.auth.type: DIGEST` is not supported; use BASIC or BEARER, \
                 or send an `Authorization` header in `headers`"
                    .into(),
            );
        }
    } else if set("basicAuthPassword") && !set("basicAuthUser") {
        return Err("`options.basicAuthPassword` is set without `options.basicAuthUser`".into());
    }
    if let Some(charset) = options.get("defaultCharset").and_then(literal)
        && !charset.is_empty()
        && !is_utf8_name(&charset)
    {
        return Err(format!(
            "`options.defaultCharset`: only UTF-8 is supported, got `{charset}`"
        ));
    }
    let mut logs = match options.get("logLevel").and_then(literal) {
        Some(level) if set("logLevel") => Logs::from_level(&level)?,
        _ => Logs::default(),
    };
    if let Some(list) = options.get("logs").filter(|l| !l.is_null()) {
        if set("logLevel") {
            return Err(
                "set either `options.logs` or the deprecated `options.logLevel`, not both".into(),
            );
        }
        let Value::Array(items) = list else {
            return Err(format!(
                "`options.logs` must be a list of {}",
                LOG_TYPES.join(", ")
            ));
        };
        for item in items {
            logs.set(&scalar_text(item))?;
        }
    }
    let has_timeout = options.get("timeout").is_some_and(|t| !t.is_null());
    if has_timeout && (set("connectTimeout") || set("readTimeout") || set("readIdleTimeout")) {
        return Err("set either `options.timeout` or the deprecated flat \
             `options.connectTimeout`/`readTimeout`/`readIdleTimeout`, not both"
            .into());
    }
    if set("readTimeout") && set("readIdleTimeout") {
        return Err(
            "`options.readTimeout` and `options.readIdleTimeout` mean the same here \
             (the longest wait for data); set one"
                .into(),
        );
    }
    Ok(logs)
}

/// The client settings of `options` (rendered).
fn client_settings(
    ctx: &dyn RunContext,
    opts: &Map<String, Value>,
) -> Result<ClientSettings, TaskError> {
    let timeout = opts.get("timeout").filter(|t| !t.is_null());
    let (connect, read_idle) = match timeout {
        Some(t) => (
            duration(
                ctx,
                "options.timeout.connectTimeout",
                t.get("connectTimeout"),
            )?,
            duration(
                ctx,
                "options.timeout.readIdleTimeout",
                t.get("readIdleTimeout"),
            )?,
        ),
        None => (
            duration(ctx, "options.connectTimeout", opts.get("connectTimeout"))?,
            match duration(ctx, "options.readTimeout", opts.get("readTimeout"))? {
                Some(d) => Some(d),
                None => duration(ctx, "options.readIdleTimeout", opts.get("readIdleTimeout"))?,
            },
        ),
    };
    let follow_redirects = match opts.get("followRedirects").filter(|f| !f.is_null()) {
        Some(v) => render_as::<bool>(ctx, "options.followRedirects", v)?,
        None => true,
    };
    Ok(ClientSettings {
        connect_timeout: connect,
        read_idle_timeout: read_idle.unwrap_or(DEFAULT_READ_IDLE_TIMEOUT),
        follow_redirects,
    })
}

fn is_multipart(content_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("multipart/form-data"))
}

/// `application/json` → `application/json; charset=UTF-8` (as Kestra's string bodies say).
fn with_charset(content_type: &str) -> String {
    if content_type.to_ascii_lowercase().contains("charset=") {
        content_type.to_string()
    } else {
        format!("{content_type}; charset=UTF-8")
    }
}

/// A form value as text: strings as they are, other values as JSON.
fn form_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A multipart form: a `kestra:///` string is a file streamed from internal storage, a
/// `{name, content}` map a file sent under `name`, anything else a text part (non-strings as
/// JSON).
async fn multipart_form(
    ctx: &dyn RunContext,
    form: &Map<String, Value>,
) -> Result<Form, TaskError> {
    let mut out = Form::new();
    for (key, value) in form {
        let file = match value {
            Value::String(s) if s.starts_with(swoop_core::storage::SCHEME) => {
                let name = s.rsplit('/').next().unwrap_or("file").to_string();
                Some((s.clone(), name))
            }
            Value::Object(m) if m.contains_key("name") && m.contains_key("content") => {
                let content = m.get("content").map(scalar_text).unwrap_or_default();
                if !content.starts_with(swoop_core::storage::SCHEME) {
                    return Err(TaskError::permanent(format!(
                        "`formData.{key}.content` must be a kestra:/// file URI, got `{content}`"
                    )));
                }
                Some((content, m.get("name").map(scalar_text).unwrap_or_default()))
            }
            _ => None,
        };
        out = match file {
            Some((uri, file_name)) => {
                let reader = ctx.storage().open(&uri).await.map_err(|e| {
                    TaskError::permanent(format!("`formData.{key}`: cannot read {uri}: {e}"))
                })?;
                let part = Part::stream(reqwest::Body::wrap_stream(ReaderStream::new(reader)))
                    .file_name(file_name)
                    .mime_str("application/octet-stream")
                    .map_err(|e| TaskError::permanent(e.to_string()))?;
                out.part(key.clone(), part)
            }
            None => out.text(key.clone(), form_text(value)),
        };
    }
    Ok(out)
}

/// Logs the request's headers and body as `options.logs` asks (the `Authorization` value is
/// never shown).
pub fn log_request(ctx: &dyn RunContext, prepared: &Prepared) {
    let request = &prepared.request;
    if prepared.logs.request_headers {
        let headers: Vec<String> = request
            .headers()
            .iter()
            .map(|(name, value)| {
                if name == AUTHORIZATION {
                    format!("{name}: ***")
                } else {
                    format!("{name}: {}", String::from_utf8_lossy(value.as_bytes()))
                }
            })
            .collect();
        ctx.log(
            LogLevel::Info,
            format!(
                "request {} {}: headers {}",
                request.method(),
                prepared.target,
                headers.join(", ")
            ),
        );
    }
    if prepared.logs.request_body {
        let body = match request.body().map(|b| b.as_bytes()) {
            None => "(none)".to_string(),
            Some(Some(bytes)) => String::from_utf8_lossy(bytes).into_owned(),
            Some(None) => "(streamed)".to_string(),
        };
        ctx.log(
            LogLevel::Info,
            format!("request {} body: {body}", prepared.target),
        );
    }
}

/// Logs the response's headers as `options.logs` asks.
pub fn log_response_headers(
    ctx: &dyn RunContext,
    logs: &Logs,
    target: &str,
    response: &reqwest::Response,
) {
    if logs.response_headers {
        let headers: Vec<String> = response
            .headers()
            .iter()
            .map(|(n, v)| format!("{n}: {}", String::from_utf8_lossy(v.as_bytes())))
            .collect();
        ctx.log(
            LogLevel::Info,
            format!(
                "response {} {}: headers {}",
                response.status(),
                target,
                headers.join(", ")
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn def(v: Value) -> Result<RequestDef, String> {
        RequestDef::from_json(&v)
    }

    #[test]
    fn unsupported_options_are_refused() {
        let base = |options: Value| def(json!({"uri": "http://h", "options": options}));
        assert!(
            base(json!({"proxy": {"address": "p"}}))
                .unwrap_err()
                .contains("proxy")
        );
        assert!(base(json!({"ssl": {}})).unwrap_err().contains("ssl"));
        assert!(
            base(json!({"auth": {"type": "DIGEST"}}))
                .unwrap_err()
                .contains("DIGEST")
        );
        assert!(
            base(json!({"defaultCharset": "ISO-8859-1"}))
                .unwrap_err()
                .contains("UTF-8")
        );
        assert!(
            base(json!({"logs": ["NOPE"]}))
                .unwrap_err()
                .contains("NOPE")
        );
        assert!(base(json!({"connectionPoolIdleTimeout": "PT1S"})).is_err());
        assert!(
            def(json!({"uri": "http://h", "sslOptions": {}}))
                .unwrap_err()
                .contains("sslOptions")
        );
        assert!(base(json!({"defaultCharset": "utf-8", "logs": ["REQUEST_HEADERS"]})).is_ok());
        let logs = base(json!({"logLevel": "DEBUG"})).unwrap().logs;
        assert!(logs.request_headers && logs.response_headers && !logs.request_body);
    }

    #[test]
    fn content_types() {
        assert!(is_multipart("multipart/form-data"));
        assert!(is_multipart("Multipart/Form-Data; boundary=x"));
        assert!(!is_multipart("application/json"));
        assert_eq!(
            with_charset("application/json"),
            "application/json; charset=UTF-8"
        );
        assert_eq!(
            with_charset("text/plain; charset=latin1"),
            "text/plain; charset=latin1"
        );
    }
}

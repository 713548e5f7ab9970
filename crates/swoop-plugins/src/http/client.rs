//! The HTTP client every HTTP-speaking task shares (Request, Download, the Slack webhook): one
//! `reqwest::Client` per distinct client configuration (timeouts, redirects), kept in the node's
//! shared resources, and the common handling of what comes back — how a failed send or a status
//! is classified (retryable or not), bounded body reads, response headers as outputs.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Response, StatusCode, Url};
use serde_json::{Map, Value};
use swoop_core::flow::scalar_text;
use swoop_core::registry::{RunContext, TaskError, shared_resource};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Kestra's default `readIdleTimeout`.
pub const DEFAULT_READ_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// What makes two clients different. Credentials are not part of it: they go on each request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientSettings {
    pub connect_timeout: Option<Duration>,
    /// The longest wait between two reads of a response.
    pub read_idle_timeout: Duration,
    pub follow_redirects: bool,
}

impl Default for ClientSettings {
    fn default() -> Self {
        Self {
            connect_timeout: None,
            read_idle_timeout: DEFAULT_READ_IDLE_TIMEOUT,
            follow_redirects: true,
        }
    }
}

impl ClientSettings {
    fn key(&self) -> String {
        format!(
            "connect={:?};readIdle={:?};redirects={}",
            self.connect_timeout, self.read_idle_timeout, self.follow_redirects
        )
    }
}

/// Requests in flight at once to one host (scheme, host and port) through one shared client.
/// More wait for a free slot: 1,000 executions in flight then share a few dozen pooled
/// connections instead of opening 1,000 (swoop's choice; Kestra has no such limit).
pub const MAX_REQUESTS_PER_HOST: usize = 64;

/// A client shared by every execution that asks for the same [`ClientSettings`], with its
/// per-host request slots.
pub struct HttpClient(pub reqwest::Client, HostSlots);

#[derive(Default)]
pub struct HostSlots(std::sync::Mutex<std::collections::HashMap<String, Arc<Semaphore>>>);

impl HttpClient {
    /// Waits for a free request slot to `url`'s host; hold it until the response is read.
    pub async fn slot(&self, url: &Url) -> OwnedSemaphorePermit {
        let host = format!(
            "{}://{}:{}",
            url.scheme(),
            url.host_str().unwrap_or(""),
            url.port_or_known_default().unwrap_or(0)
        );
        let semaphore = {
            let mut slots = self.1.0.lock().unwrap_or_else(|e| e.into_inner());
            slots
                .entry(host)
                .or_insert_with(|| Arc::new(Semaphore::new(MAX_REQUESTS_PER_HOST)))
                .clone()
        };
        semaphore
            .acquire_owned()
            .await
            .unwrap_or_else(|_| unreachable!("request slots are never closed"))
    }
}

/// The shared client for `settings`, created on first use.
pub async fn shared_client(
    ctx: &dyn RunContext,
    settings: &ClientSettings,
) -> Result<Arc<HttpClient>, TaskError> {
    let settings = settings.clone();
    shared_resource::<HttpClient, _, _>(ctx, &settings.key(), || async move {
        let redirects = if settings.follow_redirects {
            reqwest::redirect::Policy::limited(10)
        } else {
            reqwest::redirect::Policy::none()
        };
        let mut builder = reqwest::Client::builder()
            .redirect(redirects)
            .read_timeout(settings.read_idle_timeout)
            .user_agent(concat!("swoop/", env!("CARGO_PKG_VERSION")));
        if let Some(connect) = settings.connect_timeout {
            builder = builder.connect_timeout(connect);
        }
        builder
            .build()
            .map(|c| HttpClient(c, HostSlots::default()))
            .map_err(|e| {
                TaskError::permanent(format!(
                    "cannot create the HTTP client: {}",
                    crate::props::error_chain(&e)
                ))
            })
    })
    .await
}

/// `scheme://host[:port]/path` of `url`: what errors and logs show (no credentials, no query
/// string, which often carries an API key).
pub fn display_target(url: &Url) -> String {
    let mut shown = format!("{}://{}", url.scheme(), url.host_str().unwrap_or(""));
    if let Some(port) = url.port() {
        shown.push_str(&format!(":{port}"));
    }
    shown.push_str(url.path());
    shown
}

/// Sends `request`; a failure to get a response is classified (connection refused, timeouts:
/// retryable; a request that cannot be built or too many redirects: permanent). `target` names
/// the server in the error.
pub async fn send(
    client: &reqwest::Client,
    request: reqwest::Request,
    target: &str,
) -> Result<Response, TaskError> {
    client
        .execute(request)
        .await
        .map_err(|e| send_error(e, target))
}

/// The task error for a failed send or body read.
/// reqwest's own messages name the full URL (query string included): it is dropped.
pub fn send_error(e: reqwest::Error, target: &str) -> TaskError {
    let e = e.without_url();
    let chain = crate::props::error_chain(&e);
    if e.is_timeout() {
        TaskError::new(format!(
            "request to {target} timed out ({chain}); raise `options.timeout` if the server is slow"
        ))
    } else if e.is_connect() {
        TaskError::new(format!("cannot connect to {target}: {chain}"))
    } else if e.is_builder() {
        TaskError::permanent(format!("invalid request to {target}: {chain}"))
    } else if e.is_redirect() {
        TaskError::permanent(format!(
            "request to {target} failed following redirects: {chain}"
        ))
    } else {
        TaskError::new(format!("request to {target} failed: {chain}"))
    }
}

/// Whether a failed status may go away on retry: 5xx, 429 (too many requests), 408 (timeout).
pub fn status_is_retryable(status: StatusCode) -> bool {
    status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
}

/// The error for a response with a failed `status`; `excerpt` is the start of its body.
pub fn status_error(status: StatusCode, target: &str, excerpt: &str, hint: &str) -> TaskError {
    let mut message = format!("{target} answered {status}");
    if !excerpt.is_empty() {
        message.push_str(&format!(": {excerpt}"));
    }
    if !hint.is_empty() {
        message.push_str(&format!(" ({hint})"));
    }
    if status_is_retryable(status) {
        TaskError::new(message)
    } else {
        TaskError::permanent(message)
    }
}

/// The start of a (failed) response's body, as text, for an error message: at most 1 KB read.
pub async fn body_excerpt(response: Response) -> String {
    const LIMIT: usize = 1024;
    let mut response = response;
    let mut bytes = Vec::new();
    while bytes.len() < LIMIT {
        match response.chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
            _ => break,
        }
    }
    let truncated = bytes.len() > LIMIT;
    bytes.truncate(LIMIT);
    let mut text = String::from_utf8_lossy(&bytes).trim().to_string();
    if truncated {
        text.push('…');
    }
    text
}

/// Reads the whole body, refusing one longer than `limit` bytes (before reading it when the
/// server announces its length). `too_big` says what to do instead.
pub async fn read_body_limited(
    response: &mut Response,
    limit: u64,
    target: &str,
    too_big: &str,
) -> Result<Vec<u8>, TaskError> {
    let over = |size: String| {
        TaskError::permanent(format!(
            "the response of {target} is {size}, more than the {limit} bytes allowed; {too_big}"
        ))
    };
    if let Some(length) = response.content_length()
        && length > limit
    {
        return Err(over(format!("{length} bytes")));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| send_error(e, target))? {
        if (body.len() + chunk.len()) as u64 > limit {
            return Err(over("longer".into()));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Response headers as Kestra outputs them: name → list of values (names are lower case, as
/// HTTP/2 and the client normalise them).
pub fn headers_output(headers: &HeaderMap) -> Value {
    let mut out = Map::new();
    for name in headers.keys() {
        let values: Vec<Value> = headers
            .get_all(name)
            .iter()
            .map(|v| Value::String(String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect();
        out.insert(name.as_str().to_string(), Value::Array(values));
    }
    Value::Object(out)
}

/// Renders the duration property `name` (`PT5S`), when set.
pub fn render_duration(
    ctx: &dyn RunContext,
    name: &str,
    v: Option<&Value>,
) -> Result<Option<Duration>, TaskError> {
    match v.filter(|x| !x.is_null()) {
        None => Ok(None),
        Some(v) => {
            let text = ctx.render(name, &scalar_text(v))?;
            swoop_core::duration::parse_duration(&text)
                .map(Some)
                .map_err(|e| TaskError::permanent(format!("`{name}`: {e}")))
        }
    }
}

/// Sets the headers of the map property `property` (names and values rendered) on `headers`,
/// replacing any value already there; a list value sends the header once per item.
pub fn apply_headers(
    ctx: &dyn RunContext,
    property: &str,
    written: &Map<String, Value>,
    headers: &mut HeaderMap,
) -> Result<(), TaskError> {
    for (key, value) in written {
        let name = ctx.render(property, key)?;
        let name = HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| {
            TaskError::permanent(format!("`{property}`: `{name}` is not a valid header name"))
        })?;
        let items: Vec<&Value> = match value {
            Value::Array(items) => items.iter().collect(),
            Value::Null => Vec::new(),
            one => vec![one],
        };
        headers.remove(&name);
        for item in items {
            let rendered = ctx.render(&format!("{property}.{name}"), &scalar_text(item))?;
            let value = HeaderValue::from_str(&rendered).map_err(|_| {
                TaskError::permanent(format!(
                    "`{property}.{name}`: the value is not a valid header value (control characters?)"
                ))
            })?;
            headers.append(name.clone(), value);
        }
    }
    Ok(())
}

/// Runs `work` unless the task is killed or times out first (the engine also drops the future
/// then; this makes the stop immediate even where a drop would come late).
pub async fn until_cancelled<T>(
    ctx: &dyn RunContext,
    work: impl std::future::Future<Output = Result<T, TaskError>>,
) -> Result<T, TaskError> {
    tokio::select! {
        result = work => result,
        () = ctx.cancellation().cancelled() => {
            Err(TaskError::permanent("the request was cancelled (kill or timeout)"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_hide_credentials_and_query() {
        let url = Url::parse("https://user:secret@example.com:8443/a/b?api_key=k#x").unwrap();
        assert_eq!(display_target(&url), "https://example.com:8443/a/b");
    }

    #[test]
    fn statuses_are_classified() {
        assert!(status_is_retryable(StatusCode::SERVICE_UNAVAILABLE));
        assert!(status_is_retryable(StatusCode::TOO_MANY_REQUESTS));
        assert!(!status_is_retryable(StatusCode::NOT_FOUND));
        let e = status_error(StatusCode::NOT_FOUND, "http://h/x", "nope", "");
        assert!(!e.retryable);
        assert_eq!(e.message, "http://h/x answered 404 Not Found: nope");
    }

    #[test]
    fn client_keys_differ_by_settings() {
        let a = ClientSettings::default();
        let b = ClientSettings {
            follow_redirects: false,
            ..ClientSettings::default()
        };
        assert_ne!(a.key(), b.key());
        assert_eq!(a.key(), ClientSettings::default().key());
    }
}

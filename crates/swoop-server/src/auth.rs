//! Basic authentication for the web page and the API, Kestra's open-source model: one user and
//! password, checked on every request but the open ones.
//!
//! Open without credentials: `/health` (for load balancers and orchestrators) and the webhook
//! triggers (`/api/v1/executions/webhook/…`), which carry their own key in the URL, as in
//! Kestra. Everything else answers `401` with `WWW-Authenticate: Basic realm="swoop"` until the
//! right `Authorization: Basic …` header comes. Whether a server may run without it (only on a
//! loopback address) is decided by the binary, which owns the listening address.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// The one user allowed in.
#[derive(Clone)]
pub struct BasicAuth {
    user: String,
    password: String,
}

impl std::fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BasicAuth")
            .field("user", &self.user)
            .field("password", &"******")
            .finish()
    }
}

impl BasicAuth {
    /// A user and password; the user may not be empty nor hold `:` (Basic authentication
    /// separates them with it), the password may not be empty.
    pub fn new(user: impl Into<String>, password: impl Into<String>) -> Result<Self, String> {
        let (user, password) = (user.into(), password.into());
        if user.is_empty() || user.contains(':') {
            return Err(format!(
                "the auth user `{user}` must be a non-empty name without `:`"
            ));
        }
        if password.is_empty() {
            return Err(format!("the auth user `{user}` needs a non-empty password"));
        }
        Ok(Self { user, password })
    }

    pub fn user(&self) -> &str {
        &self.user
    }

    /// Whether an `Authorization` header's value names this user with this password.
    fn accepts(&self, authorization: Option<&HeaderValue>) -> bool {
        let Some(credentials) = authorization
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Basic "))
            .and_then(|b64| STANDARD.decode(b64.trim()).ok())
        else {
            return false;
        };
        let expected = format!("{}:{}", self.user, self.password);
        constant_time_eq(&credentials, expected.as_bytes())
    }
}

/// Compares without stopping at the first difference, so the time taken does not tell how much
/// of a guess was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for (i, byte) in b.iter().enumerate() {
        diff |= usize::from(a.get(i).copied().unwrap_or(!byte) ^ byte);
    }
    diff == 0
}

/// The paths any caller may reach.
fn is_open(path: &str) -> bool {
    path == "/health" || path.starts_with("/api/v1/executions/webhook/")
}

/// The middleware: lets open paths and authenticated requests through.
pub(crate) async fn require(
    State(auth): State<Arc<BasicAuth>>,
    request: Request,
    next: Next,
) -> Response {
    if is_open(request.uri().path()) || auth.accepts(request.headers().get(header::AUTHORIZATION)) {
        return next.run(request).await;
    }
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, r#"Basic realm="swoop""#)],
        axum::Json(serde_json::json!({
            "message": "authentication required: send the server's user and password (HTTP Basic)",
            "details": [],
        })),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header_for(user: &str, password: &str) -> HeaderValue {
        let value = format!("Basic {}", STANDARD.encode(format!("{user}:{password}")));
        HeaderValue::from_str(&value).unwrap()
    }

    #[test]
    fn accepts_only_the_right_user_and_password() {
        let auth = BasicAuth::new("admin", "pa:ss").unwrap();
        assert!(auth.accepts(Some(&header_for("admin", "pa:ss"))));
        assert!(!auth.accepts(Some(&header_for("admin", "pa:s"))));
        assert!(!auth.accepts(Some(&header_for("admin", "pa:sss"))));
        assert!(!auth.accepts(Some(&header_for("other", "pa:ss"))));
        assert!(!auth.accepts(Some(&HeaderValue::from_static("Bearer abc"))));
        assert!(!auth.accepts(Some(&HeaderValue::from_static("Basic not-base64!"))));
        assert!(!auth.accepts(None));
    }

    #[test]
    fn refuses_unusable_credentials() {
        assert!(BasicAuth::new("", "x").is_err());
        assert!(BasicAuth::new("a:b", "x").is_err());
        assert!(BasicAuth::new("a", "").is_err());
        assert!(!format!("{:?}", BasicAuth::new("a", "secret").unwrap()).contains("secret"));
    }

    #[test]
    fn only_health_and_webhooks_are_open() {
        assert!(is_open("/health"));
        assert!(is_open("/api/v1/executions/webhook/ns/flow/key"));
        assert!(!is_open("/"));
        assert!(!is_open("/api/v1/flows/search"));
        assert!(!is_open("/api/v1/executions/webhookish"));
        assert!(!is_open("/metrics"));
    }
}

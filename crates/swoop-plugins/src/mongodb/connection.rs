//! The properties every MongoDB task shares (`connection.uri`, `database`, `collection`), the
//! shared driver client, and how driver errors become task errors.
//!
//! One `mongodb::Client` per connection URI (the rendered text, credentials included, is the
//! key) lives in the node's shared resources: the client keeps its own connection pool and
//! server monitors, so executions reuse connections. The URI is a secret: messages show it with
//! the password replaced by `***` and never contain the password in any form.
//!
//! Errors: a network error, a server selection timeout, a cleared pool, an error labelled
//! `RetryableWriteError` / `RetryableError` / `TransientTransactionError`, and the server's
//! transient codes (not primary, shutting down, host unreachable, time limit …) are retryable;
//! a duplicate key (11000), a document failing validation (121), a bad argument, an
//! authentication failure and every other server error are permanent.

use bson::Document;
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::options::ClientOptions;
use mongodb::{Client, Collection};
use serde::Deserialize;
use serde_json::Value;
use swoop_core::flow::scalar_text;
use swoop_core::registry::{RunContext, TaskError, shared_resource};

use crate::props::redact_url;

#[derive(Deserialize)]
pub struct ConnectionProp {
    uri: Value,
}

/// `connection`, `database` and `collection`: flattened into every task.
#[derive(Deserialize)]
pub struct Common {
    connection: ConnectionProp,
    database: Value,
    collection: Value,
}

/// An open collection, and what messages about it say.
pub struct Target {
    pub collection: Collection<Document>,
    /// `db.collection at mongodb://user:***@host/…`
    pub label: String,
    secrets: Secrets,
}

impl Common {
    /// Renders the properties and gets the shared client (created on first use).
    pub async fn open(&self, ctx: &dyn RunContext) -> Result<Target, TaskError> {
        let uri = ctx.render("connection.uri", &scalar_text(&self.connection.uri))?;
        let secrets = Secrets::of(&uri);
        let database = non_empty(ctx, "database", &self.database)?;
        let collection = non_empty(ctx, "collection", &self.collection)?;
        let shown = redact_url(&uri);
        let label = format!("{database}.{collection} at {shown}");
        if !uri.starts_with("mongodb://") && !uri.starts_with("mongodb+srv://") {
            return Err(TaskError::permanent(format!(
                "property `connection.uri` must start with mongodb:// or mongodb+srv://, got `{}`",
                secrets.scrub(&shown)
            )));
        }
        let client = shared_resource::<Client, _, _>(ctx, &uri, || async {
            let mut options = ClientOptions::parse(&uri)
                .await
                .map_err(|e| task_error(&e, &format!("connection.uri {shown}"), &secrets))?;
            if options.app_name.is_none() {
                options.app_name = Some("swoop".into());
            }
            Client::with_options(options)
                .map_err(|e| task_error(&e, &format!("connection.uri {shown}"), &secrets))
        })
        .await?;
        Ok(Target {
            collection: client.database(&database).collection(&collection),
            label,
            secrets,
        })
    }
}

impl Target {
    /// The task error for `e`, which happened while doing `what` (`insert a document`).
    pub fn error(&self, what: &str, e: &mongodb::error::Error) -> TaskError {
        task_error(e, &format!("{what} in {}", self.label), &self.secrets)
    }
}

fn non_empty(ctx: &dyn RunContext, prop: &str, value: &Value) -> Result<String, TaskError> {
    let text = ctx.render(prop, &scalar_text(value))?;
    if text.trim().is_empty() {
        return Err(TaskError::permanent(format!(
            "property `{prop}` is empty: name the MongoDB {prop}"
        )));
    }
    Ok(text)
}

/// The password of a connection URI, as written and percent-decoded: what must never be shown.
struct Secrets(Vec<String>);

impl Secrets {
    fn of(uri: &str) -> Secrets {
        let rest = uri.split_once("://").map_or("", |(_, r)| r);
        // The userinfo ends at the last `@` before the path (a password must escape `@`).
        let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
        let password = authority
            .rfind('@')
            .and_then(|at| authority[..at].split_once(':'))
            .map(|(_, p)| p)
            .filter(|p| !p.is_empty());
        let mut secrets = Vec::new();
        if let Some(p) = password {
            let decoded = percent_decode(p);
            if decoded != p {
                secrets.push(decoded);
            }
            secrets.push(p.to_string());
        }
        Secrets(secrets)
    }

    fn scrub(&self, text: &str) -> String {
        let mut out = text.to_string();
        for secret in &self.0 {
            out = out.replace(secret.as_str(), "***");
        }
        out
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(b) = text
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Server error codes that may go away on their own (MongoDB's retryable and "not primary"
/// codes, and time limits).
const TRANSIENT_CODES: &[i32] = &[
    6,     // HostUnreachable
    7,     // HostNotFound
    24,    // LockTimeout
    50,    // MaxTimeMSExpired
    64,    // WriteConcernFailed
    89,    // NetworkTimeout
    91,    // ShutdownInProgress
    112,   // WriteConflict
    189,   // PrimarySteppedDown
    262,   // ExceededTimeLimit
    9001,  // SocketException
    10107, // NotWritablePrimary
    11600, // InterruptedAtShutdown
    11602, // InterruptedDueToReplStateChange
    13435, // NotPrimaryNoSecondaryOk
    13436, // NotPrimaryOrSecondary
];

fn is_retryable(e: &mongodb::error::Error) -> bool {
    use mongodb::error::{
        RETRYABLE_ERROR, RETRYABLE_WRITE_ERROR, SYSTEM_OVERLOADED_ERROR,
        TRANSIENT_TRANSACTION_ERROR,
    };
    if [
        RETRYABLE_WRITE_ERROR,
        RETRYABLE_ERROR,
        TRANSIENT_TRANSACTION_ERROR,
        SYSTEM_OVERLOADED_ERROR,
    ]
    .iter()
    .any(|l| e.contains_label(l))
    {
        return true;
    }
    match e.kind.as_ref() {
        ErrorKind::Command(c) => TRANSIENT_CODES.contains(&c.code),
        ErrorKind::Write(WriteFailure::WriteError(w)) => TRANSIENT_CODES.contains(&w.code),
        ErrorKind::Write(WriteFailure::WriteConcernError(_)) => true,
        ErrorKind::InsertMany(m) => match m.write_errors.as_ref().and_then(|w| w.first()) {
            Some(first) => TRANSIENT_CODES.contains(&first.code),
            None => m.write_concern_error.is_some(),
        },
        ErrorKind::Authentication { .. }
        | ErrorKind::InvalidArgument { .. }
        | ErrorKind::Bson(_)
        | ErrorKind::InvalidTlsConfig { .. }
        | ErrorKind::IncompatibleServer { .. }
        | ErrorKind::SessionsNotSupported => false,
        // Io, ServerSelection, ConnectionPoolCleared, DnsResolve, InvalidResponse, Shutdown …
        _ => true,
    }
}

/// The driver error in words, with a hint for the common cases.
fn describe(e: &mongodb::error::Error) -> String {
    let (code, text) = match e.kind.as_ref() {
        ErrorKind::Command(c) => (
            Some(c.code),
            format!("{} ({}): {}", c.code_name, c.code, c.message),
        ),
        ErrorKind::Write(WriteFailure::WriteError(w)) => (
            Some(w.code),
            format!(
                "write error {}{}: {}",
                w.code,
                w.code_name
                    .as_deref()
                    .map(|n| format!(" {n}"))
                    .unwrap_or_default(),
                w.message
            ),
        ),
        ErrorKind::Write(WriteFailure::WriteConcernError(w)) => (
            Some(w.code),
            format!(
                "write concern error {} {}: {}",
                w.code, w.code_name, w.message
            ),
        ),
        ErrorKind::InsertMany(m) => match m.write_errors.as_ref().and_then(|w| w.first()) {
            Some(first) => (
                Some(first.code),
                format!(
                    "document {} of the list: write error {}: {} ({} write error(s) in all; the documents before it were inserted)",
                    first.index,
                    first.code,
                    first.message,
                    m.write_errors.as_ref().map_or(0, Vec::len)
                ),
            ),
            None => (
                None,
                match &m.write_concern_error {
                    Some(w) => format!("write concern error {}: {}", w.code, w.message),
                    None => "insert_many failed".to_string(),
                },
            ),
        },
        ErrorKind::ServerSelection { message, .. } => (
            None,
            format!(
                "no MongoDB server could be selected: {message} (check the host and port of connection.uri; a single server that is not a replica set member may need directConnection=true; serverSelectionTimeoutMS in the URI sets how long to wait)"
            ),
        ),
        ErrorKind::Authentication { message, .. } => (
            None,
            format!(
                "authentication failed: {message} (check the user, password and authSource of connection.uri)"
            ),
        ),
        other => (None, other.to_string()),
    };
    let hint = match code {
        Some(11000) => {
            " (a document with this key already exists: use the Update task with `upsert: true` to write idempotently)"
        }
        Some(121) => " (the document fails the collection's validation rules)",
        _ => "",
    };
    format!("{text}{hint}")
}

/// A task error for a driver error: classified, with context, the password scrubbed.
fn task_error(e: &mongodb::error::Error, context: &str, secrets: &Secrets) -> TaskError {
    let message = secrets.scrub(&format!("MongoDB: {context}: {}", describe(e)));
    tracing::debug!(retryable = is_retryable(e), error = %message, "mongodb error");
    if is_retryable(e) {
        TaskError::new(message)
    } else {
        TaskError::permanent(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_found_and_scrubbed() {
        let s = Secrets::of("mongodb://me:p%40ss@h1:27017,h2/db?authSource=admin");
        assert_eq!(s.scrub("x p@ss y p%40ss z"), "x *** y *** z");
        let s = Secrets::of("mongodb://127.0.0.1:27017/?directConnection=true");
        assert_eq!(s.scrub("nothing to hide"), "nothing to hide");
        assert_eq!(percent_decode("a%2Fb%"), "a/b%");
    }

    #[test]
    fn errors_are_classified() {
        // An unknown error is retryable (let `retry` decide); the server's errors are tested
        // against a real server in tests/mongodb.rs.
        assert!(is_retryable(&mongodb::error::Error::custom(())));
        let io = mongodb::error::Error::from(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        ));
        assert!(is_retryable(&io));
        assert!(describe(&io).contains("I/O error"));
    }
}

//! The `session` property of the Cassandra tasks (endpoints, local datacenter, credentials,
//! application name), the one driver session per distinct settings that every execution on the
//! node shares, and how driver errors are classified (retryable or not) and worded.

use std::time::Duration;

use scylla::client::SelfIdentity;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::errors::{
    ConnectionError, ConnectionPoolError, ConnectionSetupRequestErrorKind, DbError, ExecutionError,
    MetadataError, NewSessionError, PrepareError, RequestAttemptError,
};
use serde::Deserialize;
use serde_json::Value;
use swoop_core::registry::{RunContext, TaskError, render_as};

/// How long opening one TCP connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long creating a session (connect, handshake, topology) may take in all.
const SESSION_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionProps {
    endpoints: Vec<EndpointProps>,
    #[serde(default)]
    local_datacenter: Option<Value>,
    #[serde(default)]
    username: Option<Value>,
    #[serde(default)]
    password: Option<Value>,
    #[serde(default)]
    application_name: Option<Value>,
    #[serde(default)]
    secure_connection: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EndpointProps {
    hostname: Value,
    #[serde(default)]
    port: Option<Value>,
    #[serde(default)]
    server_name: Option<Value>,
}

/// The rendered settings: what a session is made from, and its sharing key.
pub struct SessionSettings {
    /// `host:port` of each endpoint.
    nodes: Vec<String>,
    local_datacenter: Option<String>,
    credentials: Option<(String, String)>,
    application_name: Option<String>,
}

fn present(v: &Option<Value>) -> Option<&Value> {
    v.as_ref().filter(|v| !v.is_null())
}

fn text(ctx: &dyn RunContext, property: &str, v: &Value) -> Result<String, TaskError> {
    ctx.render(property, &swoop_core::flow::scalar_text(v))
}

fn optional_text(
    ctx: &dyn RunContext,
    property: &str,
    v: &Option<Value>,
) -> Result<Option<String>, TaskError> {
    present(v).map(|v| text(ctx, property, v)).transpose()
}

impl SessionProps {
    /// What can be refused before anything runs.
    pub fn check(&self) -> Result<(), String> {
        if present(&self.secure_connection).is_some() {
            return Err(
                "`session.secureConnection`: TLS connections to Cassandra are not \
                supported by swoop yet; connect over plain CQL (for example through a local \
                TLS-terminating proxy) and remove `secureConnection`"
                    .into(),
            );
        }
        if self.endpoints.is_empty() {
            return Err(
                "`session.endpoints` is empty: list at least one `{hostname, port}`".into(),
            );
        }
        if self
            .endpoints
            .iter()
            .any(|e| present(&e.server_name).is_some())
        {
            return Err(
                "`session.endpoints[].serverName` (SNI) only applies to TLS \
                connections, which swoop does not support yet; remove it"
                    .into(),
            );
        }
        Ok(())
    }

    pub fn render(&self, ctx: &dyn RunContext) -> Result<SessionSettings, TaskError> {
        let mut nodes = Vec::with_capacity(self.endpoints.len());
        for (i, endpoint) in self.endpoints.iter().enumerate() {
            let host_prop = format!("session.endpoints[{i}].hostname");
            let host = text(ctx, &host_prop, &endpoint.hostname)?;
            let host = host.trim();
            if host.is_empty() {
                return Err(TaskError::permanent(format!("`{host_prop}` is empty")));
            }
            let port: u16 = match present(&endpoint.port) {
                None => 9042,
                Some(p) => render_as(ctx, &format!("session.endpoints[{i}].port"), p)?,
            };
            // An IPv6 literal needs brackets before the port.
            nodes.push(if host.contains(':') && !host.starts_with('[') {
                format!("[{host}]:{port}")
            } else {
                format!("{host}:{port}")
            });
        }
        let username = optional_text(ctx, "session.username", &self.username)?;
        let password = optional_text(ctx, "session.password", &self.password)?;
        Ok(SessionSettings {
            nodes,
            local_datacenter: optional_text(
                ctx,
                "session.localDatacenter",
                &self.local_datacenter,
            )?
            .filter(|dc| !dc.is_empty()),
            // As in Kestra: credentials are sent only when both are set.
            credentials: username.zip(password),
            application_name: optional_text(
                ctx,
                "session.applicationName",
                &self.application_name,
            )?,
        })
    }
}

impl SessionSettings {
    /// The sharing key: every setting, the password included (never shown anywhere).
    pub fn key(&self) -> String {
        serde_json::json!([
            self.nodes,
            self.local_datacenter,
            self.credentials,
            self.application_name
        ])
        .to_string()
    }

    /// The endpoints, for messages.
    pub fn hosts(&self) -> String {
        self.nodes.join(", ")
    }

    pub async fn connect(&self) -> Result<Session, TaskError> {
        let mut builder = SessionBuilder::new()
            .known_nodes(&self.nodes)
            .connection_timeout(CONNECT_TIMEOUT)
            // The task reads result metadata, not the schema.
            .fetch_schema_metadata(false);
        if let Some(dc) = &self.local_datacenter {
            builder = builder.prefer_datacenter(dc.clone());
        }
        if let Some((user, pass)) = &self.credentials {
            builder = builder.user(user, pass);
        }
        if let Some(name) = &self.application_name {
            builder =
                builder.custom_identity(SelfIdentity::new().with_application_name(name.clone()));
        }
        let hosts = self.hosts();
        match tokio::time::timeout(SESSION_TIMEOUT, builder.build()).await {
            Ok(Ok(session)) => {
                tracing::debug!(hosts = %hosts, "cassandra session created");
                Ok(session)
            }
            Ok(Err(e)) => Err(session_error(&hosts, &e)),
            Err(_) => Err(TaskError::new(format!(
                "cannot connect to Cassandra at {hosts}: no session within {SESSION_TIMEOUT:?}; \
                 check that the endpoints are reachable"
            ))),
        }
    }
}

fn session_error(hosts: &str, e: &NewSessionError) -> TaskError {
    let message = format!("cannot connect to Cassandra at {hosts}: {e}");
    match e {
        NewSessionError::EmptyKnownNodesList | NewSessionError::IllegalConfig(_) => {
            TaskError::permanent(message)
        }
        NewSessionError::MetadataError(MetadataError::ConnectionPoolError(
            ConnectionPoolError::Broken {
                last_connection_error: ConnectionError::ConnectionSetupRequestError(setup),
            },
        )) => match setup.get_error() {
            ConnectionSetupRequestErrorKind::DbError(db, _) if !db_retryable(db) => {
                TaskError::permanent(format!(
                    "{message}; check `session.username` and `session.password`"
                ))
            }
            ConnectionSetupRequestErrorKind::MissingAuthentication => TaskError::permanent(
                format!("{message}; set `session.username` and `session.password`"),
            ),
            _ => TaskError::new(message),
        },
        _ => TaskError::new(message),
    }
}

/// Server errors that will not go away by retrying (syntax, invalid query, permissions …).
fn db_retryable(db: &DbError) -> bool {
    !matches!(
        db,
        DbError::SyntaxError
            | DbError::Invalid
            | DbError::AlreadyExists { .. }
            | DbError::FunctionFailure { .. }
            | DbError::AuthenticationError
            | DbError::Unauthorized
            | DbError::ConfigError
            | DbError::ProtocolError
    )
}

fn attempt_retryable(e: &RequestAttemptError) -> bool {
    match e {
        RequestAttemptError::DbError(db, _) => db_retryable(db),
        RequestAttemptError::SerializationError(_)
        | RequestAttemptError::CqlRequestSerialization(_) => false,
        _ => true,
    }
}

/// A failed statement as a task error: permanent for what the statement or the settings
/// cause, retryable for what the cluster's state causes (unavailable, timeouts, overload,
/// broken connections).
pub fn execution_error(hosts: &str, cql: &str, e: &ExecutionError) -> TaskError {
    let retryable = match e {
        ExecutionError::BadQuery(_) => false,
        ExecutionError::EmptyPlan => {
            return TaskError::permanent(format!(
                "Cassandra at {hosts}: no node to send the statement to; check that \
                 `session.localDatacenter` names a datacenter of the cluster"
            ));
        }
        ExecutionError::LastAttemptError(attempt) => attempt_retryable(attempt),
        ExecutionError::PrepareError(PrepareError::AllAttemptsFailed { first_attempt }) => {
            attempt_retryable(first_attempt)
        }
        _ => true,
    };
    let message = format!(
        "CQL statement failed on Cassandra at {hosts}: {e} (cql: {})",
        abbreviate(cql)
    );
    if retryable {
        TaskError::new(message)
    } else {
        TaskError::permanent(message)
    }
}

/// The statement for messages: one line, at most 200 characters.
pub fn abbreviate(cql: &str) -> String {
    let one_line: String = cql.split_whitespace().collect::<Vec<_>>().join(" ");
    match one_line.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &one_line[..i]),
        None => one_line,
    }
}

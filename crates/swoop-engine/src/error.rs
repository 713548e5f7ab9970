//! The engine's errors, sorted by whose mistake they are so the API can answer 4xx or 5xx.

use swoop_core::validate::Diagnostic;
use swoop_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The flow or execution asked for does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request is wrong (bad flow, bad inputs, wrong state …); `details` say where.
    #[error("{message}")]
    Invalid {
        message: String,
        details: Vec<Diagnostic>,
    },
    /// The thing exists already or is in a state that forbids the request.
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Internal storage failed (a disk error, …).
    #[error("internal storage: {0}")]
    Storage(String),
    #[error("the engine is shutting down")]
    ShuttingDown,
}

impl EngineError {
    pub fn invalid(message: impl Into<String>) -> Self {
        EngineError::Invalid {
            message: message.into(),
            details: Vec::new(),
        }
    }
}

pub type EngineResult<T> = Result<T, EngineError>;

//! Datastore errors, shaped so that every backend (including Kubernetes later) maps onto them.

use tortie_api::{Kind, ValidationError};

/// Everything a datastore call can fail with.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// No such object.
    #[error("{kind} {name:?} not found")]
    NotFound {
        /// Kind.
        kind: Kind,
        /// Name.
        name: String,
    },
    /// `create` of an object that exists.
    #[error("{kind} {name:?} already exists")]
    AlreadyExists {
        /// Kind.
        kind: Kind,
        /// Name.
        name: String,
    },
    /// The object changed since the given resource version (HTTP 409 in Kubernetes terms).
    #[error(
        "{kind} {name:?} was modified concurrently (resourceVersion {given} is stale, current is {current}); read it again and retry"
    )]
    Conflict {
        /// Kind.
        kind: Kind,
        /// Name.
        name: String,
        /// What the caller sent.
        given: String,
        /// What is stored.
        current: String,
    },
    /// The object is invalid, alone or together with the others (e.g. pool overlap).
    #[error("{kind} {name:?} is invalid: {error}")]
    Invalid {
        /// Kind.
        kind: Kind,
        /// Name.
        name: String,
        /// Which fields, and why.
        error: ValidationError,
    },
    /// The backend asked us to slow down (HTTP 429); retry after this many milliseconds.
    #[error("datastore is throttling requests; retry after {retry_after_ms} ms")]
    TooManyRequests {
        /// Suggested wait.
        retry_after_ms: u64,
    },
    /// Contention did not settle within the retry budget.
    #[error("gave up after {attempts} attempts: the objects kept changing underneath")]
    Contended {
        /// How many times the transaction was tried.
        attempts: u32,
    },
    /// The backend cannot be reached or failed.
    #[error("datastore unavailable: {0}")]
    Unavailable(String),
    /// Stored data could not be decoded.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// The datastore URL is not understood.
    #[error("bad datastore URL {url:?}: {why}")]
    BadUrl {
        /// What was given.
        url: String,
        /// Why it is bad.
        why: String,
    },
    /// An error about the `index`-th change of a batch.
    #[error("{error}")]
    InBatch {
        /// Position in the batch.
        index: usize,
        /// The error.
        error: Box<Error>,
    },
}

impl Error {
    /// Position in the batch, if the error is about one change of a batch.
    pub fn batch_index(&self) -> Option<usize> {
        match self {
            Error::InBatch { index, .. } => Some(*index),
            _ => None,
        }
    }

    /// The error without its batch position.
    pub fn root(&self) -> &Error {
        match self {
            Error::InBatch { error, .. } => error.root(),
            e => e,
        }
    }

    /// Worth retrying later without changing the request.
    pub fn is_transient(&self) -> bool {
        matches!(
            self.root(),
            Error::Unavailable(_) | Error::TooManyRequests { .. } | Error::Contended { .. }
        )
    }
}

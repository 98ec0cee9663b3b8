//! Errors from the data source; the variants drive the retry decision.

/// A failed query.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request did not complete within the configured timeout.
    #[error("query timed out after {0:?}")]
    Timeout(std::time::Duration),
    /// The server answered with a non-success HTTP status.
    #[error("server answered HTTP {code}: {body}")]
    Status {
        /// The HTTP status code.
        code: u16,
        /// The start of the answer body.
        body: String,
    },
    /// The answer was not a valid Prometheus API response.
    #[error("decoding the answer: {0}")]
    Decode(String),
    /// The connection failed.
    #[error("connecting: {0}")]
    Transport(String),
    /// The client could not be built from its configuration.
    #[error("source config: {0}")]
    Config(String),
    /// The answer's body is larger than the client accepts (see
    /// [`MAX_ANSWER_BYTES`](super::MAX_ANSWER_BYTES)).
    #[error("the answer is larger than {limit} bytes: split the expression (narrower selectors, or shards)")]
    TooLarge {
        /// The cap, in bytes.
        limit: usize,
    },
    /// Two series of the answer have the same labels without `__name__`, which pulsewatch's
    /// outputs drop.
    #[error("vector cannot contain metrics with the same labelset: {first} and {second} are both {key} once __name__ is dropped")]
    DuplicateLabelset {
        /// The labels they share.
        key: String,
        /// One series' labels.
        first: String,
        /// The other's.
        second: String,
    },
}

impl Error {
    /// Whether the server refused the query as loading too many samples (Prometheus's 422,
    /// `query processing would load too many samples into memory`): a shorter range may pass.
    pub fn is_too_many_samples(&self) -> bool {
        matches!(self, Error::Status { code: 422, body } if body.contains("too many samples"))
    }

    /// Whether trying again may help: timeouts, transport errors, 5xx and 429 (rate limited, as
    /// Mimir and Cortex answer); never other 4xx.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Timeout(_) | Error::Transport(_) => true,
            Error::Status { code, .. } => *code >= 500 || *code == 429,
            // the same query would get the same answer
            Error::Decode(_) | Error::Config(_) | Error::TooLarge { .. } | Error::DuplicateLabelset { .. } => false,
        }
    }
}

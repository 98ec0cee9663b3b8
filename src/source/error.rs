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
}

impl Error {
    /// Whether trying again may help: timeouts, transport errors, 5xx and 429 (rate limited, as
    /// Mimir and Cortex answer); never other 4xx.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Timeout(_) | Error::Transport(_) => true,
            Error::Status { code, .. } => *code >= 500 || *code == 429,
            Error::Decode(_) | Error::Config(_) => false,
        }
    }
}

//! Reading series from a Prometheus-compatible HTTP API.
//!
//! [`PromClient`] speaks `/api/v1/query_range`; the engine sees it through the [`Source`] trait
//! so that tests can substitute canned series. Samples that are NaN or infinite are dropped here,
//! so they never reach a model or a score.

mod client;
mod error;
mod model;

pub use client::{backoff_delay, PromClient, MAX_POINTS_PER_QUERY};
pub use error::Error;
pub use model::{format_labels, series_key, Labels, Series};

use futures::future::BoxFuture;

/// Where series come from.
pub trait Source: Send + Sync {
    /// Evaluates `expr` at every `step` seconds from `start` to `end` (Unix seconds, inclusive).
    fn query_range<'a>(&'a self, expr: &'a str, start: i64, end: i64, step: i64) -> BoxFuture<'a, Result<Vec<Series>, Error>>;
}

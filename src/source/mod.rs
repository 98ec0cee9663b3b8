//! Reading series from a Prometheus-compatible HTTP API.
//!
//! [`PromClient`] speaks `/api/v1/query_range`; the engine sees it through the [`Source`] trait
//! so that tests can substitute canned series. Whatever a source answers passes [`validate`]
//! before it reaches a model (the engine calls it for every query): samples outside the asked
//! range, off its step grid, NaN or infinite are dropped and counted by [`Rejection`], each
//! series is sorted and its duplicate timestamps dropped. [`check_labelsets`] refuses answers
//! whose series collide once `__name__` is dropped.

mod client;
mod error;
mod model;
mod validate;

pub(crate) use client::http_client;
pub use client::{backoff_delay, PromClient, MAX_ANSWER_BYTES, MAX_POINTS_PER_QUERY, MAX_SAMPLES_PER_QUERY};
pub use error::Error;
pub use model::{format_labels, series_key, Labels, Series};
pub use validate::{check_labelsets, validate, Rejection, Rejections};

use futures::future::BoxFuture;
use futures::{FutureExt, TryFutureExt};

/// Where series come from.
pub trait Source: Send + Sync {
    /// Evaluates `expr` at every `step` seconds from `start` to `end` (Unix seconds, inclusive).
    ///
    /// The engine does not trust the answer: it passes it through [`validate`], so an
    /// implementation may return samples outside the range, off the grid, unsorted or NaN.
    fn query_range<'a>(&'a self, expr: &'a str, start: i64, end: i64, step: i64) -> BoxFuture<'a, Result<Vec<Series>, Error>>;

    /// [`Source::query_range`] before any check of its own, for the engine to [`validate`], with
    /// the samples the source had to drop because a [`Series`] cannot hold them (a fractional
    /// timestamp) already counted. The default is `query_range` with nothing counted.
    fn query_range_raw<'a>(
        &'a self,
        expr: &'a str,
        start: i64,
        end: i64,
        step: i64,
    ) -> BoxFuture<'a, Result<(Vec<Series>, Rejections), Error>> {
        self.query_range(expr, start, end, step).map_ok(|series| (series, Rejections::default())).boxed()
    }
}

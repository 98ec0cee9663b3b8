//! What every rule evaluation shares: the context it runs in, what it produces, how it fails,
//! and the query that counts itself.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::detector::window::JoinError;
use crate::detector::{LoadError, ScoreError};
use crate::exporter::{Metrics, SeriesOutput};
use crate::source::{self, Series, Source};

/// Bounds how many model fits run at once, across all groups.
#[derive(Clone, Debug)]
pub struct FitPool(Arc<Semaphore>);

impl FitPool {
    /// A pool of `permits` (0: one per CPU).
    pub fn new(permits: usize) -> Self {
        let permits = if permits == 0 { std::thread::available_parallelism().map_or(2, |n| n.get()) } else { permits };
        Self(Arc::new(Semaphore::new(permits)))
    }

    /// Waits for a free slot; the fit holds the permit while it runs.
    pub(crate) async fn acquire(&self) -> OwnedSemaphorePermit {
        // The semaphore is never closed, so acquiring only waits.
        self.0.clone().acquire_owned().await.expect("fit pool semaphore is never closed")
    }
}

/// What one evaluation of a rule works with.
#[derive(Clone, Copy)]
pub struct EvalContext<'a> {
    /// Where series come from.
    pub source: &'a dyn Source,
    /// Self-monitoring; `None` where nothing is monitored (a backtest).
    pub metrics: Option<&'a Metrics>,
    /// Bounds concurrent fits.
    pub pool: &'a FitPool,
    /// Wall time of the evaluation, Unix seconds.
    pub now: i64,
    /// Series whose newest sample is older than this many seconds are dropped.
    pub stale_secs: i64,
}

/// A failed evaluation.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// The query failed (after retries).
    #[error("query: {0}")]
    Query(#[from] source::Error),
    /// The detector could not be loaded, or does not fit the rule.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The detector failed to score.
    #[error("scoring: {0}")]
    Score(#[from] ScoreError),
    /// The channels' series could not be joined.
    #[error(transparent)]
    Join(#[from] JoinError),
}

/// What an evaluation produced.
#[derive(Debug, Default)]
pub struct Outcome {
    /// One entry per scored series, in label order.
    pub series: Vec<SeriesOutput>,
    /// Fits that ran.
    pub fits: u64,
    /// Problems with single series (fit failures) that did not fail the rule.
    pub warnings: Vec<String>,
}

/// A `query_range` through the context's source, timed and counted when it has metrics.
pub(crate) async fn query(ctx: &EvalContext<'_>, expr: &str, start: i64, end: i64, step: i64) -> Result<Vec<Series>, source::Error> {
    let began = Instant::now();
    let result = ctx.source.query_range(expr, start, end, step).await;
    if let Some(metrics) = ctx.metrics {
        metrics.observe_query(began.elapsed(), result.is_ok());
    }
    result
}

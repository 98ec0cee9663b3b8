//! Test doubles for the engine: a source that answers from a formula and records every query,
//! and a context over it.

use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use prometheus_client::registry::Registry;
use tokio::sync::Semaphore;

use super::{Context, FitPool};
use crate::clock::Clock;
use crate::exporter::{Exporter, Metrics};
use crate::source::{self, Labels, Series, Source};

/// One query the source answered: expression and range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Query {
    pub(crate) expr: String,
    pub(crate) start: i64,
    pub(crate) end: i64,
    pub(crate) step: i64,
}

impl Query {
    /// Whether this asked for more than a few points: a history download, not an update.
    pub(crate) fn is_history(&self) -> bool {
        (self.end - self.start) / self.step >= 9
    }
}

/// Answers every expression with one series `{job="<expr>"}` whose value at `t` is
/// `(t / step) % 10`, a clean sawtooth any model fits, and records each query.
#[derive(Clone, Default)]
pub(crate) struct FakeSource {
    pub(crate) queries: Arc<Mutex<Vec<Query>>>,
    /// How long each answer takes (tokio time).
    pub(crate) delay: Duration,
    /// When set, a query of the expression waits for one permit first.
    pub(crate) gate: Option<(String, Arc<Semaphore>)>,
}

impl FakeSource {
    /// The queries of `expr` so far.
    pub(crate) fn queries_of(&self, expr: &str) -> Vec<Query> {
        self.queries.lock().unwrap().iter().filter(|q| q.expr == expr).cloned().collect()
    }

    /// History downloads of `expr` so far.
    pub(crate) fn history_downloads(&self, expr: &str) -> usize {
        self.queries_of(expr).iter().filter(|q| q.is_history()).count()
    }
}

impl Source for FakeSource {
    fn query_range<'a>(&'a self, expr: &'a str, start: i64, end: i64, step: i64) -> BoxFuture<'a, Result<Vec<Series>, source::Error>> {
        async move {
            if let Some((gated, gate)) = &self.gate {
                if gated == expr {
                    gate.acquire().await.expect("the gate stays open").forget();
                }
            }
            tokio::time::sleep(self.delay).await;
            self.queries.lock().unwrap().push(Query { expr: expr.to_string(), start, end, step });
            let labels = Labels::from([("job".to_string(), expr.to_string())]);
            let samples = (start..=end).step_by(step as usize).map(|t| (t, ((t / step) % 10) as f64)).collect();
            Ok(vec![Series { labels, samples }])
        }
        .boxed()
    }
}

/// A context over `source` that records into `exporter`, with `clock`.
pub(crate) fn context(source: impl Source + 'static, exporter: &Exporter, clock: Clock) -> Arc<Context> {
    Arc::new(Context {
        source: RwLock::new(Arc::new(source)),
        metrics: Metrics::register(&mut Registry::default()),
        exporter: exporter.clone(),
        pool: FitPool::new(1),
        staleness: 300.0,
        clock,
        shard: super::Shard::ALL,
        remote_write: Vec::new(),
    })
}

//! What every rule evaluation shares: the context it runs in, what it produces, how it fails,
//! and the query that counts itself.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::detector::window::JoinError;
use crate::detector::{LoadError, ScoreError};
use crate::exporter::{Metrics, SeriesOutput};
use crate::source::{self, Series, Source};

use super::Shard;

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
    /// The series this replica scores; the others are dropped from every answer.
    pub shard: Shard,
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

/// A `query_range` through the context's source, timed and counted when it has metrics: the one
/// way every evaluation reads series.
///
/// Whatever the source answered is [`source::validate`]d against `[start, end]` and `step`
/// (the samples dropped are counted in `pulsewatch_samples_rejected_total` by reason and logged),
/// so no sample after `end` can size a forecast path or keep a vanished series alive.
///
/// # Errors
/// The source's error, or [`source::Error::DuplicateLabelset`] when two series differ only in
/// `__name__` (counted as a rule failure, not a query failure: the source answered).
pub(crate) async fn query(ctx: &EvalContext<'_>, expr: &str, start: i64, end: i64, step: i64) -> Result<Vec<Series>, source::Error> {
    let began = Instant::now();
    let result = ctx.source.query_range_raw(expr, start, end, step).await;
    if let Some(metrics) = ctx.metrics {
        metrics.observe_query(began.elapsed(), result.is_ok());
    }
    let (series, mut rejected) = result?;
    let (series, checked) = source::validate(series, start, end, step);
    rejected.merge(checked);
    if rejected.total() > 0 {
        tracing::debug!(expr, start, end, step, %rejected, "samples of the answer dropped");
        if let Some(metrics) = ctx.metrics {
            metrics.observe_rejections(&rejected);
        }
    }
    source::check_labelsets(&series)?;
    Ok(series)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::rules::test_forecast_rule;
    use crate::engine::ForecastState;
    use crate::models::ModelSpec;
    use crate::source::Labels;
    use futures::future::BoxFuture;
    use futures::FutureExt;
    use prometheus_client::registry::Registry;
    use std::sync::Mutex;

    type Answer = Box<dyn Fn(i64, i64, i64) -> Vec<Series> + Send + Sync>;

    /// Answers every query with what its closure makes of `(start, end, step)`.
    struct Scripted(Mutex<Answer>);

    impl Scripted {
        fn new(answer: impl Fn(i64, i64, i64) -> Vec<Series> + Send + Sync + 'static) -> Self {
            Self(Mutex::new(Box::new(answer)))
        }

        fn set(&self, answer: impl Fn(i64, i64, i64) -> Vec<Series> + Send + Sync + 'static) {
            *self.0.lock().unwrap() = Box::new(answer);
        }
    }

    impl Source for Scripted {
        fn query_range<'a>(&'a self, _: &'a str, start: i64, end: i64, step: i64) -> BoxFuture<'a, Result<Vec<Series>, source::Error>> {
            let answer = (self.0.lock().unwrap())(start, end, step);
            async move { Ok(answer) }.boxed()
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn encode(registry: &Registry) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
        text
    }

    #[tokio::test]
    async fn samples_outside_the_asked_grid_are_dropped_and_counted() {
        let (start, step) = (6_000_000, 60);
        let end = start + 10 * step;
        let source = Scripted::new(move |_, _, _| {
            vec![
                Series {
                    labels: labels(&[("__name__", "m"), ("s", "a")]),
                    samples: vec![
                        (start + 120, 4.0),
                        (end + 60, 1.0),                  // after the range
                        (start + 30, 2.0),                // between grid points
                        (start + 60, f64::NAN),           // not a number
                        (start, 3.0),                     // out of order
                        (start + 120, 5.0),               // a second sample at one timestamp
                        (start - 60, 6.0),                // before the range
                        (start + 180, f64::INFINITY),     // not finite
                        (start + 1_000_000_000_000, 7.0), // far in the future
                    ],
                },
                Series { labels: labels(&[("__name__", "m"), ("s", "b")]), samples: vec![(start, f64::NAN)] },
            ]
        });
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        let pool = FitPool::new(1);
        let ctx = EvalContext { source: &source, metrics: Some(&metrics), pool: &pool, now: end, stale_secs: 600, shard: Shard::ALL };
        let series = query(&ctx, "m", start, end, step).await.unwrap();
        assert_eq!(series.len(), 1, "a series left without samples is dropped: {series:?}");
        assert_eq!(series[0].samples, vec![(start, 3.0), (start + 120, 4.0)]);
        let text = encode(&registry);
        for (reason, n) in [("out_of_range", 3), ("off_grid", 1), ("not_finite", 3), ("duplicate", 1)] {
            let line = format!("pulsewatch_samples_rejected_total{{reason=\"{reason}\"}} {n}\n");
            assert!(text.contains(&line), "no {line:?} in\n{text}");
        }
    }

    #[tokio::test]
    async fn series_that_differ_only_in_their_name_are_an_error_not_a_merge() {
        let source = Scripted::new(|start, end, step| {
            ["a", "b"]
                .iter()
                .map(|name| Series {
                    labels: labels(&[("__name__", name), ("x", "1")]),
                    samples: (start..=end).step_by(step as usize).map(|t| (t, 1.0)).collect(),
                })
                .collect()
        });
        let pool = FitPool::new(1);
        let ctx = EvalContext { source: &source, metrics: None, pool: &pool, now: 6_000_000, stale_secs: 600, shard: Shard::ALL };
        let err = query(&ctx, "{x=\"1\"}", 6_000_000 - 600, 6_000_000, 60).await.unwrap_err().to_string();
        assert!(err.contains("same labelset"), "{err}");
        assert!(err.contains(r#"{x="1"}"#) && err.contains(r#"__name__="a""#) && err.contains(r#"__name__="b""#), "{err}");
    }

    /// A line with a little wave: the linear model fits it with a narrow band.
    fn line(start: i64, end: i64, step: i64, until: i64) -> Vec<(i64, f64)> {
        (start..=end.min(until)).step_by(step as usize).map(|t| (t, t as f64 / 60.0 + ((t / 60) % 3) as f64)).collect()
    }

    /// Evaluates `state` at `now` against `source`.
    async fn eval(state: &mut ForecastState, source: &Scripted, now: i64) -> Outcome {
        let rule = test_forecast_rule("r", "m", ModelSpec::Linear {});
        let pool = FitPool::new(1);
        let ctx = EvalContext { source, metrics: None, pool: &pool, now, stale_secs: 600, shard: Shard::ALL };
        state.evaluate(&rule, rule.forecast().unwrap(), &ctx).await.unwrap()
    }

    #[tokio::test]
    async fn values_near_the_largest_float_give_finite_outputs_and_a_high_score() {
        let t0 = 6_000_000;
        let a = || labels(&[("s", "a")]);
        // a wave around 1e308: sums and squares of it overflow
        let wave = |t: i64| 1e308 + 1e306 * ((t / 60) % 3) as f64;
        for model in [ModelSpec::Linear {}, ModelSpec::Ets {}, ModelSpec::Holt {}] {
            let source = Scripted::new(move |start, end, step| {
                vec![Series { labels: a(), samples: (start..=end).step_by(step as usize).map(|t| (t, wave(t))).collect() }]
            });
            let rule = test_forecast_rule("r", "m", model.clone());
            let pool = FitPool::new(1);
            let mut state = ForecastState::default();
            let mut eval = async |now: i64| {
                let ctx = EvalContext { source: &source, metrics: None, pool: &pool, now, stale_secs: 600, shard: Shard::ALL };
                state.evaluate(&rule, rule.forecast().unwrap(), &ctx).await.unwrap()
            };
            let first = eval(t0).await;
            assert_eq!(first.warnings, Vec::<String>::new(), "{model:?}");
            let p = *first.series[0].point().unwrap();
            assert!([p.y, p.yhat, p.lower, p.upper, p.score].iter().all(|v| v.is_finite()) && p.score < 1.0, "{model:?}: {p:?}");
            // the farthest finite value from the history: a maximal anomaly
            source.set(move |start, end, step| {
                vec![Series { labels: a(), samples: (start..=end).step_by(step as usize).map(|t| (t, -f64::MAX)).collect() }]
            });
            let p = *eval(t0 + 60).await.series[0].point().unwrap();
            assert!([p.y, p.yhat, p.lower, p.upper, p.score].iter().all(|v| v.is_finite()), "{model:?}: {p:?}");
            assert!(p.score > 100.0, "{model:?}: a maximal deviation scored {}", p.score);
        }
    }

    /// One upstream sample `ahead` seconds after the asked range, in the incremental answers:
    /// it is never scored, the series goes on scoring, and it is dropped once it stops.
    async fn a_future_sample(ahead: i64) {
        let t0 = 6_000_000;
        let a = || labels(&[("__name__", "m"), ("s", "a")]);
        let source = Scripted::new(move |start, end, step| vec![Series { labels: a(), samples: line(start, end, step, i64::MAX) }]);
        let mut state = ForecastState::default();
        assert_eq!(eval(&mut state, &source, t0 + 30).await.series[0].ts(), t0);
        source.set(move |start, end, step| {
            let mut samples = line(start, end, step, i64::MAX);
            samples.push((end + ahead, 1e6));
            vec![Series { labels: a(), samples }]
        });
        for now in [t0 + 90, t0 + 150, t0 + 210] {
            let out = eval(&mut state, &source, now).await;
            let end = now - now.rem_euclid(60);
            assert_eq!(out.series.len(), 1);
            let point = out.series[0].point().unwrap();
            assert_eq!(point.ts, end, "the newest grid point is scored, never one after the range");
            assert!(point.y < 1e6 && point.score < 1.0, "the future sample was scored: {point:?}");
        }
        // the series stops (its future sample with it): gone once older than the staleness
        source.set(move |start, end, step| vec![Series { labels: a(), samples: line(start, end, step, t0 + 180) }]);
        assert_eq!(eval(&mut state, &source, t0 + 180 + 600 + 60).await.series.len(), 0);
        assert_eq!(state.series_count(), 0);
    }

    #[tokio::test]
    async fn a_sample_a_day_ahead_is_neither_scored_nor_keeps_its_series() {
        a_future_sample(86_400).await;
    }

    #[tokio::test]
    async fn a_sample_far_in_the_future_does_not_size_the_forecast() {
        // 1e12 s ahead: a path to reach it would take hundreds of GB
        a_future_sample(1_000_000_000_000).await;
    }
}

//! Evaluating one forecast rule: fetch what is new, fit or refit where due, score, and build its
//! outputs.
//!
//! The first evaluation downloads `history` at `step` and fits a model per series; later ones
//! download only the grid points since the previous evaluation. A series first seen in an
//! incremental answer gets its history downloaded once. Refits train on the history kept in
//! memory. Fits run on the blocking pool, at most `FitPool` permits at a time.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::Semaphore;

use crate::config::{Forecast, Rule};
use crate::exporter::{Metrics, SeriesOutput};
use crate::models::{self, SeriesModel};
use crate::source::{self, series_key, Labels, Series, Source};

/// Bounds how many model fits run at once, across all groups.
#[derive(Clone, Debug)]
pub struct FitPool(Arc<Semaphore>);

impl FitPool {
    /// A pool of `permits` (0: one per CPU).
    pub fn new(permits: usize) -> Self {
        let permits = if permits == 0 { std::thread::available_parallelism().map_or(2, |n| n.get()) } else { permits };
        Self(Arc::new(Semaphore::new(permits)))
    }
}

/// A failed evaluation.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// The query failed (after retries).
    #[error("query: {0}")]
    Query(#[from] source::Error),
    /// The detector's model could not be loaded or run.
    #[error("{0}")]
    Model(String),
    /// The channels' series could not be joined.
    #[error("{0}")]
    Join(String),
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

/// The models of one forecast rule, kept across evaluations (and across reloads that leave the
/// rule as is).
#[derive(Debug, Default)]
pub struct ForecastState {
    series: HashMap<Labels, SeriesModel>,
    /// End of the last successful query, Unix seconds.
    last_end: Option<i64>,
}

impl ForecastState {
    /// Number of series with a model.
    pub fn series_count(&self) -> usize {
        self.series.len()
    }

    /// Runs one evaluation at wall time `now` (Unix seconds). `stale_secs`: series whose newest
    /// sample is older than this are dropped with their model.
    ///
    /// # Errors
    /// A failed query; the state is then unchanged.
    #[allow(clippy::too_many_arguments)]
    pub async fn evaluate(
        &mut self,
        rule: &Rule,
        forecast: &Forecast,
        source: &dyn Source,
        metrics: &Metrics,
        pool: &FitPool,
        now: i64,
        stale_secs: i64,
    ) -> Result<Outcome, EvalError> {
        let step = rule.step.secs();
        let end = now - now.rem_euclid(step);
        let points = forecast.history_points(&rule.step);
        let history_start = end - (points as i64 - 1) * step;
        let expr = forecast.expr.as_str();
        let mut pending: HashMap<Labels, Vec<(i64, f64)>> = HashMap::new();
        let mut fresh: Vec<Series> = Vec::new();

        match self.last_end {
            Some(last) if !self.series.is_empty() => {
                // Always ask for at least the newest grid point: it proves the source is up and
                // the series still exist, even when no new point has come since the last run.
                let answer = query(source, metrics, expr, (last + step).min(end), end, step).await?;
                let (known, new): (Vec<Series>, Vec<Series>) =
                    answer.into_iter().partition(|s| self.series.contains_key(&series_key(&s.labels)));
                if !new.is_empty() {
                    let wanted: std::collections::HashSet<Labels> = new.iter().map(|s| series_key(&s.labels)).collect();
                    let history = query(source, metrics, expr, history_start, end, step).await?;
                    fresh.extend(history.into_iter().filter(|s| wanted.contains(&series_key(&s.labels))));
                }
                for s in known {
                    pending.insert(series_key(&s.labels), s.samples);
                }
            }
            _ => fresh = query(source, metrics, expr, history_start, end, step).await?,
        }
        // A new series trains on all but its newest sample, which it then scores.
        for s in fresh {
            let mut model = SeriesModel::new(step, points).calibrated(forecast.band);
            let mut samples = s.samples;
            let last = samples.pop();
            samples.iter().for_each(|&(ts, v)| model.push(ts, v));
            let labels = series_key(&s.labels);
            pending.insert(labels.clone(), last.into_iter().collect());
            self.series.insert(labels, model);
        }

        let mut outcome = Outcome::default();
        self.refit_due(&rule.step, forecast, &pending, metrics, pool, end, &mut outcome).await;
        for (labels, samples) in pending {
            if let Some(model) = self.series.get_mut(&labels) {
                for (ts, v) in samples {
                    model.observe(ts, v, forecast.direction, forecast.min_deviation);
                }
            }
        }
        self.series.retain(|_, m| m.last_ts().is_some_and(|ts| ts >= end - stale_secs));
        self.last_end = Some(end);

        let mut labels: Vec<&Labels> = self.series.keys().collect();
        labels.sort();
        for l in labels {
            let model = &self.series[l];
            let Some(point) = model.last_point() else { continue };
            let forecasts = forecast
                .horizons
                .iter()
                .filter_map(|h| model.predict(point.ts + h.secs()).map(|f| (h.to_string(), f)))
                .collect();
            outcome.series.push(SeriesOutput::forecast(l, rule, point, forecasts));
        }
        Ok(outcome)
    }

    /// Fits every series that is due, in parallel on the blocking pool.
    #[allow(clippy::too_many_arguments)]
    async fn refit_due(
        &mut self,
        step: &crate::config::Duration,
        forecast: &Forecast,
        pending: &HashMap<Labels, Vec<(i64, f64)>>,
        metrics: &Metrics,
        pool: &FitPool,
        end: i64,
        outcome: &mut Outcome,
    ) {
        let min_points = forecast.model.min_points(step);
        let step = step.secs();
        let reach = forecast.horizons.iter().map(|h| h.secs()).max().unwrap_or(0);
        let refit = forecast.refit.secs();
        // After a failed fit, wait this long (in sample time) before trying again.
        let retry_after = refit.min(10 * step);
        let mut tasks = tokio::task::JoinSet::new();
        let due: Vec<(Labels, i64)> = self
            .series
            .iter()
            .filter_map(|(labels, model)| {
                let until = pending.get(labels).and_then(|s| s.last()).map_or(end, |s| s.0);
                (model.len() >= min_points && model.needs_fit(until, refit, reach)).then(|| (labels.clone(), until))
            })
            .collect();
        for (labels, until) in due {
            // Take the permit before copying the history, so at most pool-size copies exist.
            // The semaphore is never closed, so acquiring only waits.
            let permit = pool.0.clone().acquire_owned().await.expect("fit pool semaphore is never closed");
            let Some((values, start)) = self.series.get(&labels).and_then(SeriesModel::training_data) else { continue };
            let at_ts = start + (values.len() as i64 - 1) * step;
            // Long enough to score until the next refit and still reach the furthest horizon.
            let horizon = ((until - at_ts + refit + reach) / step + 2) as usize;
            let (spec, band) = (forecast.model.clone(), forecast.band);
            tasks.spawn(async move {
                let _permit = permit;
                let began = Instant::now();
                let result = tokio::task::spawn_blocking(move || models::fit(&spec, &values, start, step, band, horizon)).await;
                (labels, at_ts, began.elapsed(), result)
            });
        }
        while let Some(joined) = tasks.join_next().await {
            let Ok((labels, at_ts, took, result)) = joined else { continue };
            metrics.observe_fit(took);
            outcome.fits += 1;
            match result {
                Ok(Ok(path)) => {
                    if let Some(model) = self.series.get_mut(&labels) {
                        model.set_fit(at_ts, path);
                    }
                }
                failed => {
                    let why = match failed {
                        Ok(Err(err)) => err.to_string(),
                        Err(panic) => format!("fit panicked: {panic}"),
                        Ok(Ok(_)) => unreachable!("matched above"),
                    };
                    outcome.warnings.push(format!("series {}: {why}", source::format_labels(&labels)));
                    if let Some(model) = self.series.get_mut(&labels) {
                        model.fit_failed(at_ts + retry_after);
                    }
                }
            }
        }
    }
}

pub(super) async fn query(source: &dyn Source, metrics: &Metrics, expr: &str, start: i64, end: i64, step: i64) -> Result<Vec<Series>, source::Error> {
    let began = Instant::now();
    let result = source.query_range(expr, start, end, step).await;
    metrics.observe_query(began.elapsed(), result.is_ok());
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Duration;
    use crate::models::ModelSpec;
    use futures::FutureExt;
    use prometheus_client::registry::Registry;
    use std::sync::Mutex;

    /// Serves `a` always and `b` from `b_from` on, as a line plus a little wave; records queries.
    struct FakeSource {
        b_from: i64,
        a_until: Mutex<i64>,
        queries: Mutex<Vec<(i64, i64)>>,
    }

    impl Source for FakeSource {
        fn query_range<'a>(&'a self, _: &'a str, start: i64, end: i64, step: i64) -> futures::future::BoxFuture<'a, Result<Vec<Series>, source::Error>> {
            self.queries.lock().unwrap().push((start, end));
            let a_until = *self.a_until.lock().unwrap();
            let make = |name: &str, from: i64, until: i64| Series {
                labels: Labels::from([("__name__".into(), "m".into()), ("s".into(), name.into())]),
                samples: (start..=end).step_by(step as usize).filter(|t| *t >= from && *t <= until).map(|t| (t, t as f64 / 60.0 + ((t / 60) % 3) as f64)).collect(),
            };
            let mut out = vec![make("a", i64::MIN, a_until)];
            if end >= self.b_from {
                out.push(make("b", self.b_from - 3600, i64::MAX));
            }
            out.retain(|s| !s.samples.is_empty());
            async move { Ok(out) }.boxed()
        }
    }

    fn rule() -> Rule {
        let mut rule = crate::config::rules::test_forecast_rule("r", "m", ModelSpec::Linear {});
        if let crate::config::RuleKind::Forecast(f) = &mut rule.kind {
            f.horizons = vec![Duration::from_secs(300)];
        }
        rule
    }

    #[tokio::test]
    async fn fetches_history_once_then_only_new_points() {
        let t0 = 6_000_000;
        let source = FakeSource { b_from: t0 + 180, a_until: Mutex::new(i64::MAX), queries: Mutex::new(vec![]) };
        let metrics = Metrics::register(&mut Registry::default());
        let pool = FitPool::new(2);
        let (rule, mut state) = (rule(), ForecastState::default());
        let forecast = rule.forecast().unwrap();
        macro_rules! eval {
            ($now:expr) => {
                state.evaluate(&rule, forecast, &source, &metrics, &pool, $now, 600).await.unwrap()
            };
        }
        let first = eval!(t0 + 30);
        assert_eq!(first.fits, 1);
        assert_eq!(first.series.len(), 1);
        assert_eq!(first.series[0].ts(), t0);
        assert_eq!(first.series[0].labels, vec![("rule".to_string(), "r".to_string()), ("s".to_string(), "a".to_string())]);
        assert_eq!(first.series[0].forecasts()[0].0, "5m");

        let second = eval!(t0 + 120);
        assert_eq!(second.fits, 0, "no refit before the cadence");
        assert_eq!(second.series[0].ts(), t0 + 120);

        // `b` appears: its history is fetched once, and it gets its own model
        let third = eval!(t0 + 180);
        assert_eq!(third.fits, 1);
        assert_eq!(third.series.len(), 2);

        // refit cadence reached
        let fourth = eval!(t0 + 900);
        assert_eq!(fourth.fits, 2);

        // `a` stops: dropped once its newest sample is older than the staleness period
        *source.a_until.lock().unwrap() = t0 + 900;
        assert_eq!(eval!(t0 + 1200).series.len(), 2);
        let last = eval!(t0 + 1560);
        assert_eq!(last.series.len(), 1);
        assert_eq!(state.series_count(), 1);

        let queries = source.queries.lock().unwrap().clone();
        let step = 60;
        assert_eq!(queries[0], (t0 - 59 * step, t0), "history");
        assert_eq!(queries[1], (t0 + step, t0 + 120), "only the new points");
        assert_eq!(queries[2], (t0 + 180, t0 + 180));
        assert_eq!(queries[3], (t0 + 180 - 59 * step, t0 + 180), "history for the new series");
        assert_eq!(queries.len(), 7);
    }
}

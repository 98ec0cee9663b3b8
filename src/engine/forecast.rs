//! Evaluating one forecast rule: fetch what is new, fit or refit where due, score, and build its
//! outputs.
//!
//! The first evaluation downloads `history` at `step` and fits a model per series; later ones
//! download only the grid points since the previous evaluation. A series first seen in an
//! incremental answer gets its history downloaded once. Refits train on the history kept in
//! memory. Fits run on the blocking pool, at most `FitPool` permits at a time.
//!
//! An ensemble rule keeps one model per member for each series, each fitted and updated as a
//! single model would be; its point combines theirs once every member has scored the sample.

use std::collections::HashMap;
use std::time::Instant;

use super::evaluation::{query, EvalContext, EvalError, Outcome};
use crate::config::{Forecast, ModelSpec, Rule};
use crate::exporter::SeriesOutput;
use crate::models::{self, Point, SeriesModel};
use crate::source::{self, series_key, Labels, Series};

/// The models of one forecast rule, kept across evaluations (and across reloads that leave the
/// rule as is).
#[derive(Debug, Default)]
pub struct ForecastState {
    /// Per series, one model per member of the rule's model (one unless it is an ensemble).
    series: HashMap<Labels, Vec<SeriesModel>>,
    /// End of the last successful query, Unix seconds.
    last_end: Option<i64>,
}

impl ForecastState {
    /// Number of series with a model.
    pub fn series_count(&self) -> usize {
        self.series.len()
    }

    /// Runs one evaluation at `ctx.now`; series whose newest sample is older than
    /// `ctx.stale_secs` are dropped with their model.
    ///
    /// # Errors
    /// A failed query; the state is then unchanged.
    pub async fn evaluate(&mut self, rule: &Rule, forecast: &Forecast, ctx: &EvalContext<'_>) -> Result<Outcome, EvalError> {
        let step = rule.step.secs();
        let end = ctx.now - ctx.now.rem_euclid(step);
        let points = forecast.history_points(&rule.step);
        let history_start = end - (points as i64 - 1) * step;
        let expr = forecast.expr.as_str();
        let mut pending: HashMap<Labels, Vec<(i64, f64)>> = HashMap::new();
        let mut fresh: Vec<Series> = Vec::new();

        match self.last_end {
            Some(last) if !self.series.is_empty() => {
                // Always ask for at least the newest grid point: it proves the source is up and
                // the series still exist, even when no new point has come since the last run.
                let answer = query(ctx, expr, (last + step).min(end), end, step).await?;
                let (known, new): (Vec<Series>, Vec<Series>) =
                    answer.into_iter().partition(|s| self.series.contains_key(&series_key(&s.labels)));
                // A known series was this shard's when it came: only new ones need the hash.
                let new = owned(ctx, new);
                if !new.is_empty() {
                    let wanted: std::collections::HashSet<Labels> = new.iter().map(|s| series_key(&s.labels)).collect();
                    let history = query(ctx, expr, history_start, end, step).await?;
                    fresh.extend(history.into_iter().filter(|s| wanted.contains(&series_key(&s.labels))));
                }
                for s in known {
                    pending.insert(series_key(&s.labels), s.samples);
                }
            }
            _ => fresh = owned(ctx, query(ctx, expr, history_start, end, step).await?),
        }
        // A new series trains on all but its newest sample, which it then scores.
        for s in fresh {
            let mut samples = s.samples;
            let last = samples.pop();
            let models = forecast
                .model
                .members()
                .iter()
                .map(|member| {
                    let model = SeriesModel::new(step, points);
                    // An online model's band follows its deviations already.
                    let mut model = if member.is_online() { model } else { model.calibrated(forecast.band) };
                    samples.iter().for_each(|&(ts, v)| model.push(ts, v));
                    model
                })
                .collect();
            let labels = series_key(&s.labels);
            pending.insert(labels.clone(), last.into_iter().collect());
            self.series.insert(labels, models);
        }

        let mut outcome = self.refit_due(rule, forecast, &pending, ctx, end).await;
        for (labels, samples) in pending {
            for model in self.series.get_mut(&labels).into_iter().flatten() {
                for &(ts, v) in &samples {
                    model.observe(ts, v, forecast.direction, forecast.min_deviation);
                }
            }
        }
        // The members of a series see the same samples: the first one's newest is theirs.
        self.series.retain(|_, m| m[0].last_ts().is_some_and(|ts| ts >= end - ctx.stale_secs));
        self.last_end = Some(end);

        let mut labels: Vec<&Labels> = self.series.keys().collect();
        labels.sort();
        for l in labels {
            let models = &self.series[l];
            if let Some(output) = output(rule, forecast, l, models) {
                outcome.series.push(output);
            }
        }
        Ok(outcome)
    }

    /// Fits every series that is due, in parallel on the blocking pool; the outcome counts the
    /// fits and says which failed.
    async fn refit_due(
        &mut self,
        rule: &Rule,
        forecast: &Forecast,
        pending: &HashMap<Labels, Vec<(i64, f64)>>,
        ctx: &EvalContext<'_>,
        end: i64,
    ) -> Outcome {
        let mut outcome = Outcome::default();
        let members = forecast.model.members();
        let step = rule.step.secs();
        let reach = forecast.horizons.iter().map(|h| h.secs()).max().unwrap_or(0);
        let refit = forecast.refit.secs();
        // After a failed fit, wait this long (in sample time) before trying again.
        let retry_after = refit.min(10 * step);
        let mut tasks = tokio::task::JoinSet::new();
        // (series, member, newest sample to score)
        let due: Vec<(Labels, usize, i64)> = self
            .series
            .iter()
            .flat_map(|(labels, models)| {
                let until = pending.get(labels).and_then(|s| s.last()).map_or(end, |s| s.0);
                let due = move |(_, (model, spec)): &(usize, (&SeriesModel, &ModelSpec))| {
                    model.len() >= spec.min_points(&rule.step) && model.needs_fit(until, refit, reach)
                };
                models.iter().zip(members).enumerate().filter(due).map(move |(m, _)| (labels.clone(), m, until))
            })
            .collect();
        for (labels, m, until) in due {
            // Take the permit before copying the history, so at most pool-size copies exist.
            // The semaphore is never closed, so acquiring only waits.
            let permit = ctx.pool.acquire().await;
            let Some((values, start)) = self.series.get(&labels).and_then(|models| models[m].training_data()) else { continue };
            let at_ts = start + (values.len() as i64 - 1) * step;
            // Long enough to score until the next refit and still reach the furthest horizon.
            let horizon = ((until - at_ts + refit + reach) / step + 2) as usize;
            let (spec, band) = (members[m].clone(), forecast.band);
            tasks.spawn(async move {
                let _permit = permit;
                let began = Instant::now();
                let result = tokio::task::spawn_blocking(move || models::train(&spec, &values, start, step, band, horizon)).await;
                (labels, m, at_ts, began.elapsed(), result)
            });
        }
        while let Some(joined) = tasks.join_next().await {
            let Ok((labels, m, at_ts, took, result)) = joined else { continue };
            if let Some(metrics) = ctx.metrics {
                metrics.observe_fit(took);
            }
            outcome.fits += 1;
            match result {
                Ok(Ok(fit)) => {
                    if let Some(models) = self.series.get_mut(&labels) {
                        models[m].set_fit(at_ts, fit);
                    }
                }
                failed => {
                    let why = match failed {
                        Ok(Err(err)) => err.to_string(),
                        Err(panic) => format!("fit panicked: {panic}"),
                        Ok(Ok(_)) => unreachable!("matched above"),
                    };
                    let member = if members.len() > 1 { format!(" (member {})", members[m].name()) } else { String::new() };
                    outcome.warnings.push(format!("series {}{member}: {why}", source::format_labels(&labels)));
                    if let Some(models) = self.series.get_mut(&labels) {
                        models[m].fit_failed(at_ts + retry_after);
                    }
                }
            }
        }
        outcome
    }
}

/// The series of `answer` that this replica's shard scores.
fn owned(ctx: &EvalContext<'_>, mut answer: Vec<Series>) -> Vec<Series> {
    answer.retain(|s| ctx.shard.owns(&s.labels));
    answer
}

/// The output of series `labels` from its members' models: once every member has scored the
/// newest sample, their points combined, each horizon the mean of their forecasts, and an
/// ensemble's members' scores.
fn output(rule: &Rule, forecast: &Forecast, labels: &Labels, models: &[SeriesModel]) -> Option<SeriesOutput> {
    let points: Vec<Point> = models.iter().map(SeriesModel::last_point).collect::<Option<_>>()?;
    let Some(combine) = forecast.model.combine() else {
        let (model, point) = (&models[0], points[0]);
        let forecasts = forecast.horizons.iter().filter_map(|h| model.predict(point.ts + h.secs()).map(|f| (h.to_string(), f))).collect();
        return Some(SeriesOutput::forecast(labels, rule, point, forecasts));
    };
    let point = combine.point(&points);
    let n = models.len() as f64;
    let forecasts = forecast
        .horizons
        .iter()
        .filter_map(|h| {
            let each: Vec<(f64, f64, f64)> = models.iter().map(|m| m.predict(point.ts + h.secs())).collect::<Option<_>>()?;
            let mean = each.iter().fold((0.0, 0.0, 0.0), |(p, l, u), f| (p + f.0 / n, l + f.1 / n, u + f.2 / n));
            Some((h.to_string(), mean))
        })
        .collect();
    let members = forecast.model.members().iter().zip(&points).map(|(spec, p)| (spec.name(), p.score)).collect();
    Some(SeriesOutput::forecast(labels, rule, point, forecasts).with_members(members))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Duration;
    use crate::engine::FitPool;
    use crate::engine::Shard;
    use crate::exporter::Metrics;
    use crate::models::ModelSpec;
    use crate::source::Source;
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
        fn query_range<'a>(
            &'a self,
            _: &'a str,
            start: i64,
            end: i64,
            step: i64,
        ) -> futures::future::BoxFuture<'a, Result<Vec<Series>, source::Error>> {
            self.queries.lock().unwrap().push((start, end));
            let a_until = *self.a_until.lock().unwrap();
            let make = |name: &str, from: i64, until: i64| Series {
                labels: Labels::from([("__name__".into(), "m".into()), ("s".into(), name.into())]),
                samples: (start..=end)
                    .step_by(step as usize)
                    .filter(|t| *t >= from && *t <= until)
                    .map(|t| (t, t as f64 / 60.0 + ((t / 60) % 3) as f64))
                    .collect(),
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

    /// Shards score `a` and `b` between them, each series once, in first and later evaluations
    /// alike (`b` appears in a later one, in a shard that already scores `a` or in one that
    /// scores nothing yet).
    #[tokio::test]
    async fn shards_split_the_series_in_every_evaluation() {
        let t0 = 6_000_000;
        let pool = FitPool::new(1);
        let rule = rule();
        let forecast = rule.forecast().unwrap();
        let owner = |s: &str, count: u64| {
            let labels = Labels::from([("s".to_string(), s.to_string())]);
            (0..count).find(|&i| Shard::new(i, count).unwrap().owns(&labels)).unwrap()
        };
        // A count that puts them in different shards, so that one shard's later evaluations see
        // a series that is not its own.
        let count = (2..20).find(|&c| owner("a", c) != owner("b", c)).unwrap();
        let mut scored: Vec<Vec<Vec<String>>> = Vec::new();
        for index in 0..count {
            let source = FakeSource { b_from: t0 + 120, a_until: Mutex::new(i64::MAX), queries: Mutex::new(vec![]) };
            let mut state = ForecastState::default();
            let mut per_eval = Vec::new();
            for now in [t0 + 30, t0 + 90, t0 + 150, t0 + 210] {
                let ctx = EvalContext {
                    source: &source,
                    metrics: None,
                    pool: &pool,
                    now,
                    stale_secs: 600,
                    shard: Shard::new(index, count).unwrap(),
                };
                let outcome = state.evaluate(&rule, forecast, &ctx).await.unwrap();
                per_eval.push(outcome.series.iter().map(|s| s.labels[1].1.clone()).collect());
            }
            scored.push(per_eval);
        }
        for eval in 0..4 {
            let mut both: Vec<String> = scored.iter().flat_map(|shard| shard[eval].clone()).collect();
            both.sort();
            let expected: &[&str] = if eval < 2 { &["a"] } else { &["a", "b"] };
            assert_eq!(both, expected, "evaluation {eval}: {scored:?}");
        }
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
                state
                    .evaluate(
                        &rule,
                        forecast,
                        &EvalContext {
                            source: &source,
                            metrics: Some(&metrics),
                            pool: &pool,
                            now: $now,
                            stale_secs: 600,
                            shard: Shard::ALL,
                        },
                    )
                    .await
                    .unwrap()
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

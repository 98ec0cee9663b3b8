//! Replaying a recording through the live engine on a simulated clock.
//!
//! The engine's [`RuleState::evaluate`] runs once per grid point, with `now` set to that point
//! and a [`Source`] that answers from the recording: the same history download, online
//! updates, refit cadence and scoring as a live rule whose group runs every step.

use futures::future::BoxFuture;
use futures::FutureExt;

use super::data::Recording;
use crate::config::{Duration, ModelError, Rule, RuleKind};
use crate::engine::{EvalContext, FitPool, RuleState, Shard};
use crate::models::Point;
use crate::source::{self, Series, Source};

/// A [`Source`] over recorded series: every query answers with their samples in range.
struct Replay(Vec<Series>);

impl Source for Replay {
    fn query_range<'a>(&'a self, _expr: &'a str, start: i64, end: i64, _step: i64) -> BoxFuture<'a, Result<Vec<Series>, source::Error>> {
        let answer = self
            .0
            .iter()
            .map(|s| {
                let from = s.samples.partition_point(|p| p.0 < start);
                let to = s.samples.partition_point(|p| p.0 <= end);
                Series { labels: s.labels.clone(), samples: s.samples[from..to].to_vec() }
            })
            .filter(|s| !s.samples.is_empty())
            .collect();
        async move { Ok(answer) }.boxed()
    }
}

/// What the engine made of one recording, row by row.
#[derive(Clone, Debug)]
pub struct Trace {
    /// The input.
    pub recording: Recording,
    /// The scored point of each row; `None` while the model warms up (or a fit failed).
    pub points: Vec<Option<Point>>,
    /// An ensemble's member model types (empty for other rules).
    pub members: Vec<&'static str>,
    /// Per row, the members' scores, in the order of [`members`](Self::members) (empty where
    /// the row is not scored).
    pub member_scores: Vec<Vec<f64>>,
    /// Model fits run.
    pub fits: u64,
    /// Fit failures, as the live engine would log them.
    pub warnings: Vec<String>,
}

/// A rule that cannot replay a recording.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// A detector rule of several channels: a recording is one series.
    #[error("rule {rule:?} has {channels} channels; a backtest replays one series per recording, so detectors of one channel")]
    Channels {
        /// The rule.
        rule: String,
        /// Its channels.
        channels: usize,
    },
    /// The model does not fit the recording's step.
    #[error("{key}: at its step of {step}: {cause}")]
    Model {
        /// The recording.
        key: String,
        /// Its step.
        step: Duration,
        /// What does not fit.
        cause: Box<ModelError>,
    },
}

/// The rule as it runs on `recording`: its step is the recording's.
///
/// # Errors
/// When the rule is not a forecast rule, or its model does not fit that step (a season shorter
/// than it, say).
pub fn rule_for(rule: &Rule, recording: &Recording) -> Result<Rule, ReplayError> {
    let step = Duration::from_secs(recording.step as u64);
    let forecast = match &rule.kind {
        RuleKind::Forecast(forecast) => forecast,
        // A detector checks its model against the step when it loads it, as the live one does.
        RuleKind::Anomaly(anomaly) if anomaly.channels.len() == 1 => return Ok(Rule { step, ..rule.clone() }),
        RuleKind::Anomaly(anomaly) => return Err(ReplayError::Channels { rule: rule.name.clone(), channels: anomaly.channels.len() }),
    };
    forecast.model.validate(&step, &forecast.history).map_err(|cause| ReplayError::Model {
        key: recording.key.clone(),
        step: step.clone(),
        cause: Box::new(cause),
    })?;
    Ok(Rule { step, ..rule.clone() })
}

/// Runs `rule` (already adapted by [`rule_for`]) over `recording`, evaluating at every row, and
/// calls `progress` after each.
pub async fn run(rule: &Rule, recording: Recording, pool: &FitPool, progress: impl Fn()) -> Trace {
    let source = Replay(vec![recording.series()]);
    // The engine records query and fit durations; a backtest has no use for them.
    let mut state = RuleState::for_rule(rule);
    let rows = recording.values.len();
    let members = match rule.forecast() {
        Some(forecast) if forecast.model.combine().is_some() => forecast.model.members().iter().map(|m| m.name()).collect(),
        _ => Vec::new(),
    };
    let mut trace =
        Trace { points: vec![None; rows], members, member_scores: vec![Vec::new(); rows], fits: 0, warnings: Vec::new(), recording };
    for i in 0..rows {
        let now = trace.recording.ts(i);
        let ctx = EvalContext { source: &source, metrics: None, pool, now, stale_secs: i64::MAX / 4, shard: Shard::ALL };
        // A replay's source always answers; what can fail is a detector's model (a file that
        // does not load, a step it was not trained for), which fails every row alike.
        let outcome = match state.evaluate(rule, &ctx).await {
            Ok(outcome) => outcome,
            Err(err) => {
                trace.warnings.push(err.to_string());
                return trace;
            }
        };
        trace.fits += outcome.fits;
        trace.warnings.extend(outcome.warnings);
        if let Some(out) = outcome.series.first().filter(|o| o.ts() == now) {
            // A detector has a score and no prediction: its band columns stay empty.
            let y = trace.recording.values[i];
            trace.points[i] = Some(out.point().copied().unwrap_or(Point {
                ts: now,
                y,
                yhat: f64::NAN,
                lower: f64::NAN,
                upper: f64::NAN,
                score: out.score(),
            }));
            trace.member_scores[i] = out.members().iter().map(|(_, score)| *score).collect();
        }
        progress();
    }
    trace
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::ModelSpec;
    use crate::source::Labels;

    fn recording(values: Vec<f64>) -> Recording {
        let n = values.len();
        Recording {
            key: "t.csv".into(),
            labels: Labels::from([("file".to_string(), "t.csv".to_string())]),
            step: 300,
            start: 1_400_000_100,
            timestamps: (0..n).map(|i| chrono::DateTime::from_timestamp(1_400_000_100 + 300 * i as i64, 0).unwrap().naive_utc()).collect(),
            values,
        }
    }

    fn rule() -> Rule {
        rule_with(ModelSpec::Linear {})
    }

    fn rule_with(model: ModelSpec) -> Rule {
        let mut rule = crate::config::rules::test_forecast_rule("r", "x", model);
        if let crate::config::RuleKind::Forecast(f) = &mut rule.kind {
            f.history = Duration::from_secs(86400);
            f.refit = Duration::from_secs(3600);
        }
        rule
    }

    #[tokio::test]
    async fn scores_every_row_after_warm_up_and_flags_a_jump() {
        // a gentle wave, then a jump at row 150
        let values: Vec<f64> = (0..200).map(|i| 10.0 + (i as f64 / 5.0).sin() + if i >= 150 { 20.0 } else { 0.0 }).collect();
        let rec = recording(values.clone());
        let trace = run(&rule_for(&rule(), &rec).unwrap(), rec, &FitPool::new(1), || {}).await;
        let scored: Vec<usize> = (0..200).filter(|&i| trace.points[i].is_some()).collect();
        // linear needs 10 points: the first fit trains on rows 0..=9 and scores row 10 on
        assert_eq!(scored.first(), Some(&10));
        assert_eq!(scored.len(), 190);
        for &i in &scored {
            let p = trace.points[i].unwrap();
            assert_eq!(p.ts, trace.recording.ts(i));
            assert_eq!(p.y, values[i]);
        }
        assert!(trace.points[150].unwrap().score > 1.0, "{:?}", trace.points[150]);
        assert!(trace.points[140].unwrap().score < 1.0, "{:?}", trace.points[140]);
        // refit every hour (12 rows): about 190 / 12 fits
        assert!((15..=18).contains(&trace.fits), "{}", trace.fits);
    }

    /// Each member of an ensemble scores as it would alone, and the ensemble's point is their
    /// combination, row by row; an ensemble of one model is that model.
    #[tokio::test]
    async fn ensembles_combine_what_their_members_score_alone() {
        use crate::config::{Combine, Seasonality};
        // A wave with noise, a spike at row 500 and a level shift from row 700.
        let values: Vec<f64> = (0..900)
            .map(|i| {
                50.0 + 10.0 * (i as f64 / 40.0).sin()
                    + ((i * 37) % 11) as f64 / 5.0
                    + if i == 500 { 30.0 } else { 0.0 }
                    + if i >= 700 { 15.0 } else { 0.0 }
            })
            .collect();
        let members = vec![
            ModelSpec::Online { seasonality: Seasonality::Auto },
            ModelSpec::Mad { window: Duration::from_secs(6 * 3600) },
            ModelSpec::Linear {},
        ];
        let replay = |model: ModelSpec| {
            let rec = recording(values.clone());
            async move { run(&rule_for(&rule_with(model), &rec).unwrap(), rec, &FitPool::new(1), || {}).await }
        };
        let mut alone = Vec::new();
        for member in &members {
            alone.push(replay(member.clone()).await);
        }
        for combine in [Combine::Min, Combine::Max, Combine::Mean, Combine::Vote] {
            let trace = replay(ModelSpec::Ensemble { combine, members: members.clone() }).await;
            assert_eq!(trace.members, ["online", "mad", "linear"]);
            let mut scored = 0;
            for i in 0..values.len() {
                let each: Option<Vec<Point>> = alone.iter().map(|t| t.points[i]).collect();
                assert_eq!(trace.points[i], each.as_ref().map(|p| combine.point(p)), "{combine:?}, row {i}");
                if let Some(each) = each {
                    assert_eq!(trace.member_scores[i], each.iter().map(|p| p.score).collect::<Vec<_>>(), "row {i}");
                    scored += 1;
                }
            }
            // the mad's window (72 rows) is the longest warm-up
            assert!(scored > 800, "{scored}");
            let one = replay(ModelSpec::Ensemble { combine, members: vec![members[0].clone()] }).await;
            assert_eq!(one.points, alone[0].points, "an ensemble of one, {combine:?}");
        }
        let spike = |t: &Trace| t.points[500].unwrap().score;
        assert!(alone.iter().all(|t| spike(t) > 1.0), "every member sees the spike");
    }

    #[tokio::test]
    async fn replays_are_deterministic() {
        let values: Vec<f64> = (0..400).map(|i| 50.0 + 10.0 * (i as f64 / 40.0).sin() + ((i * 37) % 11) as f64 / 5.0).collect();
        let rule = rule_for(&rule_with(ModelSpec::Ets {}), &recording(vec![0.0])).unwrap();
        let a = run(&rule, recording(values.clone()), &FitPool::new(2), || {}).await;
        let b = run(&rule, recording(values), &FitPool::new(1), || {}).await;
        let bits =
            |t: &Trace| t.points.iter().map(|p| p.map(|p| [p.yhat, p.lower, p.upper, p.score].map(f64::to_bits))).collect::<Vec<_>>();
        assert!(a.points.iter().filter(|p| p.is_some()).count() > 300);
        assert_eq!(bits(&a), bits(&b));
    }
}

//! The evaluation engine: one task per rule group, each evaluating its rules on the group's
//! schedule, and the manager that starts, stops and swaps groups on reload.

mod clock;
mod detect;
mod eval;
mod group;
mod manager;
#[cfg(test)]
mod testing;

pub use clock::Clock;
pub use detect::DetectorState;
pub use eval::{EvalError, FitPool, ForecastState, Outcome};
pub use group::{slot_offset, Context};
pub use manager::RuleManager;

use chrono::{DateTime, Utc};
use croner::parser::{CronParser, Seconds};
use croner::Cron;

use crate::config::{Rule, RuleKind, Schedule};
use crate::exporter::Metrics;
use crate::source::Source;

/// What a rule keeps between evaluations: a forecast rule its fitted models, a detector rule
/// its loaded model.
#[derive(Debug)]
pub enum RuleState {
    /// A forecast rule's state.
    Forecast(ForecastState),
    /// A detector rule's state.
    Detector(DetectorState),
}

impl RuleState {
    /// An empty state for `rule`.
    pub fn for_rule(rule: &Rule) -> Self {
        match rule.kind {
            RuleKind::Forecast(_) => Self::Forecast(ForecastState::default()),
            RuleKind::Anomaly(_) => Self::Detector(DetectorState::default()),
        }
    }

    /// Series with a model (forecast) or scored by the last evaluation (detector).
    pub fn series_count(&self) -> usize {
        match self {
            Self::Forecast(s) => s.series_count(),
            Self::Detector(s) => s.series_count(),
        }
    }

    /// Evaluates `rule` at wall time `now` (Unix seconds); see [`ForecastState::evaluate`] and
    /// [`DetectorState::evaluate`].
    ///
    /// # Errors
    /// What failed the evaluation.
    pub async fn evaluate(&mut self, rule: &Rule, source: &dyn Source, metrics: &Metrics, pool: &FitPool, now: i64, stale_secs: i64) -> Result<Outcome, EvalError> {
        if matches!((&*self, &rule.kind), (Self::Forecast(_), RuleKind::Anomaly(_)) | (Self::Detector(_), RuleKind::Forecast(_))) {
            *self = Self::for_rule(rule);
        }
        match (self, &rule.kind) {
            (Self::Forecast(state), RuleKind::Forecast(forecast)) => state.evaluate(rule, forecast, source, metrics, pool, now, stale_secs).await,
            (Self::Detector(state), RuleKind::Anomaly(anomaly)) => state.evaluate(rule, anomaly, source, metrics, now).await,
            _ => unreachable!("the state was made for the rule's kind above"),
        }
    }
}

/// How long outputs of a group on `schedule` stay exported without a refresh: the configured
/// `staleness`, and at least two of the group's periods, so that one late run never blinks them.
pub(crate) fn stale_after(staleness: f64, schedule: &Schedule) -> f64 {
    staleness.max(2.0 * schedule_interval(schedule))
}

/// Parses a cron expression of 5 fields, or 6 with seconds first.
///
/// # Errors
/// croner's description of what is wrong.
pub fn parse_cron(expr: &str) -> Result<Cron, String> {
    CronParser::builder().seconds(Seconds::Optional).build().parse(expr).map_err(|e| e.to_string())
}

/// The next run of `cron` strictly after `after`.
pub(crate) fn next_run(cron: &Cron, after: &DateTime<Utc>) -> Option<DateTime<Utc>> {
    cron.find_next_occurrence(after, false).ok()
}

/// Seconds between runs of a schedule (for cron: between its next two runs).
pub fn schedule_interval(schedule: &Schedule) -> f64 {
    match schedule {
        Schedule::Interval(d) => d.get().as_secs_f64(),
        Schedule::Cron(expr) => cron_period(expr).unwrap_or(60.0),
    }
}

/// The longest gap between runs of a cron expression over the next eight days (at most 20,000
/// runs), in seconds: the period that staleness must cover (a weekday-only or office-hours
/// schedule has night and weekend gaps, whenever it is loaded).
pub fn cron_period(expr: &str) -> Option<f64> {
    let cron = parse_cron(expr).ok()?;
    let mut at = next_run(&cron, &Utc::now())?;
    let horizon = at + chrono::Duration::days(8);
    let mut longest: Option<f64> = None;
    for _ in 0..20_000 {
        if at > horizon {
            break;
        }
        let Some(next) = next_run(&cron, &at) else { break };
        let gap = (next - at).num_milliseconds() as f64 / 1000.0;
        longest = Some(longest.map_or(gap, |l: f64| l.max(gap)));
        at = next;
    }
    longest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cron_with_five_or_six_fields() {
        assert_eq!(cron_period("*/5 * * * *"), Some(300.0));
        assert_eq!(cron_period("*/10 * * * * *"), Some(10.0));
        assert_eq!(schedule_interval(&Schedule::Cron("0 * * * *".into())), 3600.0);
        assert_eq!(cron_period("0 9 * * 1-5"), Some(3.0 * 86400.0), "the weekend gap");
        // frequent runs in office hours: the gap is the weekend, not five minutes
        let gap = cron_period("*/5 9-17 * * 1-5").unwrap();
        assert!(gap > 2.0 * 86400.0, "{gap}");
        assert!(parse_cron("61 * * * *").is_err());
        let at = DateTime::parse_from_rfc3339("2026-01-01T00:02:30Z").unwrap().with_timezone(&Utc);
        let next = next_run(&parse_cron("*/5 * * * *").unwrap(), &at).unwrap();
        assert_eq!(next.to_rfc3339(), "2026-01-01T00:05:00+00:00");
    }

    #[test]
    fn staleness_is_the_longer_of_the_setting_and_two_periods() {
        let every = |secs| Schedule::Interval(crate::config::Duration::from_secs(secs));
        let cron = |expr: &str| Schedule::Cron(expr.into());
        let cases = [
            (300.0, every(15), 300.0),
            (300.0, every(150), 300.0),
            (300.0, every(151), 302.0),
            (300.0, every(3600), 7200.0),
            (300.0, cron("*/5 * * * *"), 600.0),
            (60.0, cron("*/10 * * * * *"), 60.0),
            (300.0, cron("0 * * * *"), 7200.0),
            // weekdays at 9: the weekend gap, three days, twice
            (300.0, cron("0 9 * * 1-5"), 6.0 * 86400.0),
        ];
        for (staleness, schedule, expected) in cases {
            assert_eq!(stale_after(staleness, &schedule), expected, "{staleness} s, {schedule:?}");
        }
    }
}

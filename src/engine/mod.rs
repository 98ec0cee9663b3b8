//! The evaluation engine: one task per rule group, each evaluating its rules on the group's
//! schedule, and the manager that starts, stops and swaps groups on reload.

mod detect;
mod eval;
mod group;
mod manager;
#[cfg(test)]
mod testing;

pub use detect::DetectorState;
pub use eval::{EvalError, FitPool, ForecastState, Outcome};
pub use group::{slot_offset, Context};
pub use manager::RuleManager;

use crate::config::{Rule, RuleKind};
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

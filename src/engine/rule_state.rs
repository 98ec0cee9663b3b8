//! What a rule keeps between evaluations, whatever its kind.

use super::detect::DetectorState;
use super::evaluation::{EvalContext, EvalError, Outcome};
use super::forecast::ForecastState;
use crate::config::{Rule, RuleKind};

/// A forecast rule's fitted models, or a detector rule's loaded detector.
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

    /// Evaluates `rule`; see [`ForecastState::evaluate`] and [`DetectorState::evaluate`].
    ///
    /// # Errors
    /// What failed the evaluation.
    pub async fn evaluate(&mut self, rule: &Rule, ctx: &EvalContext<'_>) -> Result<Outcome, EvalError> {
        match (&mut *self, &rule.kind) {
            (Self::Forecast(state), RuleKind::Forecast(forecast)) => state.evaluate(rule, forecast, ctx).await,
            (Self::Detector(state), RuleKind::Anomaly(anomaly)) => state.evaluate(rule, anomaly, ctx).await,
            // A state of the other kind (a name now used by a rule of the other kind) starts over.
            (state, _) => {
                *state = Self::for_rule(rule);
                Box::pin(state.evaluate(rule, ctx)).await
            }
        }
    }
}

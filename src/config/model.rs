//! The model of a forecast rule as written in YAML (`model: { type: mstl, seasonality: [1d] }`),
//! and what each type needs of the rule's step and history. Fitting lives in `models`.

use serde::Deserialize;

use super::Duration;

/// A model that does not fit its rule's step or history.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// MSTL without a season.
    #[error("mstl needs at least one seasonality (use `ets` for none)")]
    NoSeason,
    /// Prophet in a build without it.
    #[error("model prophet needs pulsewatch built with the `prophet` feature")]
    NoProphet,
    /// A season that is not whole steps.
    #[error("season {season} must be a whole number (>= 2) of steps of {step}")]
    Season {
        /// The season.
        season: Duration,
        /// The rule's step.
        step: Duration,
    },
    /// Too short a history for the model.
    #[error("{model} needs a history of at least {needed}, got {got}")]
    History {
        /// The model type.
        model: &'static str,
        /// The shortest history it can fit.
        needed: Duration,
        /// The rule's history.
        got: Duration,
    },
}

/// The model of a rule, as written in YAML: `model: { type: mstl, seasonality: [1d] }`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ModelSpec {
    /// MSTL decomposition with an AutoETS trend: the default for seasonal data.
    Mstl {
        /// Season lengths, e.g. `[1d, 1w]`; each a whole number of steps.
        seasonality: Vec<Duration>,
    },
    // Field-less variants are written `{}`: a unit variant would silently accept unknown keys.
    /// AutoETS without seasonality (model selected by AICc).
    Ets {},
    /// Holt's linear trend (double exponential smoothing, Prometheus's `holt_winters`).
    Holt {},
    /// Least-squares line over the history (what `predict_linear` does).
    Linear {},
    /// The value one season ago.
    SeasonalNaive {
        /// The season length, a whole number of steps.
        season: Duration,
    },
    /// Prophet (needs the `prophet` cargo feature).
    Prophet {},
}

impl Default for ModelSpec {
    fn default() -> Self {
        ModelSpec::Mstl { seasonality: vec![Duration::from_secs(86400)] }
    }
}

impl ModelSpec {
    /// The model type as written in YAML.
    pub fn name(&self) -> &'static str {
        match self {
            ModelSpec::Mstl { .. } => "mstl",
            ModelSpec::Ets {} => "ets",
            ModelSpec::Holt {} => "holt",
            ModelSpec::Linear {} => "linear",
            ModelSpec::SeasonalNaive { .. } => "seasonal_naive",
            ModelSpec::Prophet {} => "prophet",
        }
    }

    /// Season lengths in steps.
    pub(crate) fn periods(&self, step: &Duration) -> Vec<usize> {
        let to_steps = |d: &Duration| (d.secs() / step.secs()) as usize;
        match self {
            ModelSpec::Mstl { seasonality } => seasonality.iter().map(to_steps).collect(),
            ModelSpec::SeasonalNaive { season } => vec![to_steps(season)],
            _ => Vec::new(),
        }
    }

    /// Fewest training samples a fit needs.
    pub fn min_points(&self, step: &Duration) -> usize {
        let longest = self.periods(step).into_iter().max().unwrap_or(0);
        match self {
            // MSTL needs two full periods of its longest season.
            ModelSpec::Mstl { .. } => (2 * longest).max(10),
            ModelSpec::SeasonalNaive { .. } => (longest + 2).max(10),
            _ => 10,
        }
    }

    /// Checks the model against the rule's step and history.
    ///
    /// # Errors
    /// Which setting does not fit.
    pub fn validate(&self, step: &Duration, history: &Duration) -> Result<(), ModelError> {
        let seasons: Vec<&Duration> = match self {
            ModelSpec::Mstl { seasonality } if seasonality.is_empty() => return Err(ModelError::NoSeason),
            ModelSpec::Mstl { seasonality } => seasonality.iter().collect(),
            ModelSpec::SeasonalNaive { season } => vec![season],
            ModelSpec::Prophet {} if !cfg!(feature = "prophet") => return Err(ModelError::NoProphet),
            _ => Vec::new(),
        };
        for season in &seasons {
            if season.secs() % step.secs() != 0 || season.secs() / step.secs() < 2 {
                return Err(ModelError::Season { season: (*season).clone(), step: step.clone() });
            }
        }
        let needed = self.min_points(step) as i64 * step.secs();
        if history.secs() < needed {
            return Err(ModelError::History { model: self.name(), needed: Duration::from_secs(needed as u64), got: history.clone() });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Duration {
        Duration::parse(s).unwrap()
    }

    #[test]
    fn mstl_needs_two_seasons_of_history() {
        let spec = ModelSpec::Mstl { seasonality: vec![d("1d")] };
        assert!(spec.validate(&d("5m"), &d("2d")).is_ok());
        let err = spec.validate(&d("5m"), &d("1d")).unwrap_err().to_string();
        assert!(err.contains("at least 2d"), "{err}");
    }

    #[test]
    fn season_must_be_whole_steps() {
        let spec = ModelSpec::SeasonalNaive { season: d("7m") };
        assert!(matches!(spec.validate(&d("5m"), &d("7d")), Err(ModelError::Season { .. })));
    }

    #[test]
    fn parses_from_yaml() {
        let spec: ModelSpec = serde_saphyr::from_str("{ type: mstl, seasonality: [1d, 1w] }").unwrap();
        assert_eq!(spec.periods(&d("1h")), vec![24, 168]);
        assert!(serde_saphyr::from_str::<ModelSpec>("{ type: ets, alpha: 1 }").is_err());
        assert!(serde_saphyr::from_str::<ModelSpec>("{ type: arima }").is_err());
    }
}

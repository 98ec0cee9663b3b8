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
    /// A season or window that is not whole steps.
    #[error("{what} {season} must be a whole number (>= 2) of steps of {step}")]
    Season {
        /// `season` or `window`.
        what: &'static str,
        /// The season or window.
        season: Duration,
        /// The rule's step.
        step: Duration,
    },
    /// An ensemble that is empty, nested or names a model type twice.
    #[error("ensemble: {0}")]
    Ensemble(String),
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
    /// MSTL decomposition with an AutoETS trend.
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
    /// The online seasonal model (the default): a level and a per-phase season and spread,
    /// updated with every sample (no batch refit; a refit re-checks the seasons).
    Online {
        /// `auto` (the default) finds the seasons in each series' history; `none`, or a list
        /// such as `[1d]` or `[1d, 1w]`, sets them.
        #[serde(default)]
        seasonality: Seasonality,
    },
    /// Rolling mean and standard deviation over `window`: the band is `z` standard deviations.
    Zscore {
        /// The window, a whole number (>= 2) of steps.
        window: Duration,
    },
    /// Rolling median and median absolute deviation over `window`.
    Mad {
        /// The window, a whole number (>= 2) of steps.
        window: Duration,
    },
    /// Rolling quartiles over `window`: Tukey's fences, the band's width scaled to its level.
    Iqr {
        /// The window, a whole number (>= 2) of steps.
        window: Duration,
    },
    /// Several models of the series, each scoring every sample; `combine` makes one score of
    /// theirs (each member's stays visible as `pulsewatch_member_anomaly_score{model=…}`).
    Ensemble {
        /// How the members' scores make the rule's.
        combine: Combine,
        /// The models, each of a different type; none an ensemble.
        members: Vec<ModelSpec>,
    },
}

/// How an ensemble's members' scores make one score: the members that decide, and through that
/// what it takes to be above 1 (anomalous).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Combine {
    /// The least surprised member: anomalous when every member is.
    Min,
    /// The most surprised member: anomalous when any member is.
    Max,
    /// The mean of the members' scores.
    Mean,
    /// A strict majority: the score that more than half of the members reach, so anomalous when
    /// more than half of them are.
    Vote,
}

impl Combine {
    /// The name as written in YAML.
    pub fn name(self) -> &'static str {
        match self {
            Combine::Min => "min",
            Combine::Max => "max",
            Combine::Mean => "mean",
            Combine::Vote => "vote",
        }
    }
}

/// The seasons of an online model.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Seasonality {
    /// Found in each series' history at every fit ([`crate::models::find_seasons`]).
    #[default]
    Auto,
    /// These seasons (none when empty).
    Fixed(Vec<Duration>),
}

impl<'de> Deserialize<'de> for Seasonality {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            Word(String),
            List(Vec<Duration>),
        }
        match Written::deserialize(deserializer)? {
            Written::Word(word) if word == "auto" => Ok(Seasonality::Auto),
            Written::Word(word) if word == "none" => Ok(Seasonality::Fixed(Vec::new())),
            Written::Word(word) => {
                Err(serde::de::Error::custom(format!("seasonality must be `auto`, `none` or a list of durations, got `{word}`")))
            }
            Written::List(seasons) => Ok(Seasonality::Fixed(seasons)),
        }
    }
}

/// The online seasonal model with its seasons found per series: chosen by cross-validation on
/// NAB (docs/backtest.md), and the cheapest model that follows daily and weekly patterns.
impl Default for ModelSpec {
    fn default() -> Self {
        ModelSpec::Online { seasonality: Seasonality::Auto }
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
            ModelSpec::Online { .. } => "online",
            ModelSpec::Zscore { .. } => "zscore",
            ModelSpec::Mad { .. } => "mad",
            ModelSpec::Iqr { .. } => "iqr",
            ModelSpec::Ensemble { .. } => "ensemble",
        }
    }

    /// The models that score each sample: an ensemble's members, else the model itself.
    pub fn members(&self) -> &[ModelSpec] {
        match self {
            ModelSpec::Ensemble { members, .. } => members,
            model => std::slice::from_ref(model),
        }
    }

    /// How the scores of [`members`](Self::members) combine; `None` for a single model.
    pub fn combine(&self) -> Option<Combine> {
        match self {
            ModelSpec::Ensemble { combine, .. } => Some(*combine),
            _ => None,
        }
    }

    /// Whether the model is updated online with every sample (a refit only re-checks its
    /// seasons), rather than fitted in batch to a prediction path.
    pub fn is_online(&self) -> bool {
        matches!(self, ModelSpec::Online { .. } | ModelSpec::Zscore { .. } | ModelSpec::Mad { .. } | ModelSpec::Iqr { .. })
    }

    /// Season lengths in steps.
    pub(crate) fn periods(&self, step: &Duration) -> Vec<usize> {
        let to_steps = |d: &Duration| (d.secs() / step.secs()) as usize;
        match self {
            ModelSpec::Mstl { seasonality } => seasonality.iter().map(to_steps).collect(),
            ModelSpec::SeasonalNaive { season } => vec![to_steps(season)],
            ModelSpec::Online { seasonality: Seasonality::Fixed(seasons) } => seasons.iter().map(to_steps).collect(),
            _ => Vec::new(),
        }
    }

    /// The rolling window in steps, for the rolling detectors.
    pub(crate) fn window(&self, step: &Duration) -> Option<usize> {
        match self {
            ModelSpec::Zscore { window } | ModelSpec::Mad { window } | ModelSpec::Iqr { window } => {
                Some((window.secs() / step.secs()) as usize)
            }
            _ => None,
        }
    }

    /// Fewest training samples a fit needs.
    pub fn min_points(&self, step: &Duration) -> usize {
        let longest = self.periods(step).into_iter().max().unwrap_or(0);
        match self {
            // MSTL needs two full periods of its longest season.
            ModelSpec::Mstl { .. } => (2 * longest).max(10),
            ModelSpec::SeasonalNaive { .. } => (longest + 2).max(10),
            // A fixed season is learned from two of its periods; `auto` starts without one.
            ModelSpec::Online { .. } => (2 * longest).max(10),
            ModelSpec::Zscore { .. } | ModelSpec::Mad { .. } | ModelSpec::Iqr { .. } => self.window(step).unwrap_or(0).max(10),
            // The ensemble scores once every member does.
            ModelSpec::Ensemble { members, .. } => members.iter().map(|m| m.min_points(step)).max().unwrap_or(10),
            _ => 10,
        }
    }

    /// Checks the model against the rule's step and history.
    ///
    /// # Errors
    /// Which setting does not fit.
    pub fn validate(&self, step: &Duration, history: &Duration) -> Result<(), ModelError> {
        if let ModelSpec::Ensemble { members, .. } = self {
            if members.is_empty() {
                return Err(ModelError::Ensemble("needs at least one member".into()));
            }
            let mut types = std::collections::HashSet::new();
            for member in members {
                let name = member.name();
                if matches!(member, ModelSpec::Ensemble { .. }) {
                    return Err(ModelError::Ensemble("a member cannot be an ensemble".into()));
                }
                // The type names the member's score (`model="mad"`), so it must be unique.
                if !types.insert(name) {
                    return Err(ModelError::Ensemble(format!("two members of type {name}; each type may appear once")));
                }
                member.validate(step, history).map_err(|e| ModelError::Ensemble(format!("member {name}: {e}")))?;
            }
            return Ok(());
        }
        let what = if self.window(step).is_some() { "window" } else { "season" };
        let seasons: Vec<&Duration> = match self {
            ModelSpec::Mstl { seasonality } if seasonality.is_empty() => return Err(ModelError::NoSeason),
            ModelSpec::Mstl { seasonality } => seasonality.iter().collect(),
            ModelSpec::SeasonalNaive { season } => vec![season],
            ModelSpec::Online { seasonality: Seasonality::Fixed(seasons) } => seasons.iter().collect(),
            ModelSpec::Zscore { window } | ModelSpec::Mad { window } | ModelSpec::Iqr { window } => vec![window],
            ModelSpec::Prophet {} if !cfg!(feature = "prophet") => return Err(ModelError::NoProphet),
            _ => Vec::new(),
        };
        for season in &seasons {
            if season.secs() % step.secs() != 0 || season.secs() / step.secs() < 2 {
                return Err(ModelError::Season { what, season: (*season).clone(), step: step.clone() });
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
    fn online_models_parse_with_their_seasons_and_windows() {
        let parse = |yaml: &str| serde_saphyr::from_str::<ModelSpec>(yaml);
        assert_eq!(parse("{ type: online }").unwrap(), ModelSpec::Online { seasonality: Seasonality::Auto });
        assert_eq!(parse("{ type: online, seasonality: auto }").unwrap(), ModelSpec::Online { seasonality: Seasonality::Auto });
        assert_eq!(parse("{ type: online, seasonality: none }").unwrap(), ModelSpec::Online { seasonality: Seasonality::Fixed(vec![]) });
        let both = parse("{ type: online, seasonality: [1d, 1w] }").unwrap();
        assert_eq!(both, ModelSpec::Online { seasonality: Seasonality::Fixed(vec![d("1d"), d("1w")]) });
        assert_eq!(both.periods(&d("1h")), vec![24, 168]);
        assert!(both.is_online());
        let err = parse("{ type: online, seasonality: weekly }").unwrap_err().to_string();
        assert!(err.contains("`auto`, `none` or a list of durations"), "{err}");
        let mad = parse("{ type: mad, window: 1h }").unwrap();
        assert_eq!(mad.window(&d("5m")), Some(12));
        assert_eq!(mad.min_points(&d("5m")), 12);
        assert!(parse("{ type: zscore }").is_err(), "a rolling detector needs its window");
        assert_eq!(ModelSpec::default(), ModelSpec::Online { seasonality: Seasonality::Auto });
    }

    #[test]
    fn online_models_are_checked_against_step_and_history() {
        let window = ModelSpec::Iqr { window: d("7m") };
        assert_eq!(window.validate(&d("5m"), &d("7d")).unwrap_err().to_string(), "window 7m must be a whole number (>= 2) of steps of 5m");
        let weekly = ModelSpec::Online { seasonality: Seasonality::Fixed(vec![d("1w")]) };
        assert!(matches!(weekly.validate(&d("5m"), &d("7d")), Err(ModelError::History { .. })), "a weekly season needs two weeks");
        assert!(weekly.validate(&d("5m"), &d("14d")).is_ok());
        // `auto` looks for what the history can show: any history will do
        assert!(ModelSpec::Online { seasonality: Seasonality::Auto }.validate(&d("5m"), &d("1h")).is_ok());
    }

    #[test]
    fn ensembles_parse_and_are_checked_member_by_member() {
        let parse = |yaml: &str| serde_saphyr::from_str::<ModelSpec>(yaml);
        let spec = parse("{ type: ensemble, combine: vote, members: [{ type: online }, { type: mad, window: 1d }] }").unwrap();
        assert_eq!(spec.combine(), Some(Combine::Vote));
        assert_eq!(spec.members().iter().map(ModelSpec::name).collect::<Vec<_>>(), ["online", "mad"]);
        assert_eq!(spec.min_points(&d("5m")), 288, "the longest warm-up of its members");
        assert!(spec.validate(&d("5m"), &d("7d")).is_ok());
        assert_eq!(ModelSpec::Linear {}.members(), [ModelSpec::Linear {}]);
        assert_eq!(ModelSpec::Linear {}.combine(), None);
        for (yaml, error) in [
            ("{ type: ensemble, combine: min, members: [] }", "ensemble: needs at least one member"),
            (
                "{ type: ensemble, combine: min, members: [{ type: linear }, { type: linear }] }",
                "ensemble: two members of type linear; each type may appear once",
            ),
            (
                "{ type: ensemble, combine: min, members: [{ type: ensemble, combine: max, members: [{ type: linear }] }] }",
                "ensemble: a member cannot be an ensemble",
            ),
            (
                "{ type: ensemble, combine: max, members: [{ type: linear }, { type: mad, window: 7m }] }",
                "ensemble: member mad: window 7m must be a whole number (>= 2) of steps of 5m",
            ),
        ] {
            assert_eq!(parse(yaml).unwrap().validate(&d("5m"), &d("7d")).unwrap_err().to_string(), error, "{yaml}");
        }
        assert!(parse("{ type: ensemble, members: [{ type: linear }] }").is_err(), "combine is required");
        assert!(parse("{ type: ensemble, combine: median, members: [{ type: linear }] }").is_err());
    }

    #[test]
    fn parses_from_yaml() {
        let spec: ModelSpec = serde_saphyr::from_str("{ type: mstl, seasonality: [1d, 1w] }").unwrap();
        assert_eq!(spec.periods(&d("1h")), vec![24, 168]);
        assert!(serde_saphyr::from_str::<ModelSpec>("{ type: ets, alpha: 1 }").is_err());
        assert!(serde_saphyr::from_str::<ModelSpec>("{ type: arima }").is_err());
    }
}

//! Fitting a model to a regular series and producing its prediction path.
//!
//! This is CPU work (tens of ms for MSTL, most of a second for Prophet): callers run it off the
//! async runtime.

use augurs::ets::AutoETS;
use augurs::mstl::MSTLModel;
use augurs::{Fit as _, Forecast, Predict};

use super::online::Online;
use super::{Error, ModelSpec};

/// What a fit produces: a batch model's prediction path, or an online model's trained state.
#[derive(Clone, Debug)]
pub enum Fit {
    /// A batch model's predictions for the steps after the training data.
    Path(Path),
    /// An online model, trained up to the last training sample.
    Online(Online),
}

/// Fits `spec` to `y` as [`fit`] does, or trains an online model on it.
///
/// # Errors
/// As [`fit`], for batch models; online models do not fail.
pub fn train(spec: &ModelSpec, y: &[f64], start_ts: i64, step_secs: i64, level: f64, horizon: usize) -> Result<Fit, Error> {
    if !spec.is_online() {
        return fit(spec, y, start_ts, step_secs, level, horizon).map(Fit::Path);
    }
    let step = crate::config::Duration::from_secs(step_secs as u64);
    let needed = spec.min_points(&step);
    if y.len() < needed {
        return Err(Error::TooShort { model: spec.name(), needed, got: y.len() });
    }
    Ok(Fit::Online(Online::train(spec, y, start_ts, step_secs, level, resolution(y))))
}

/// Point forecasts and band for the steps after the training data: index 0 is one step ahead.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Path {
    /// Predicted values.
    pub point: Vec<f64>,
    /// Lower edge of the band.
    pub lower: Vec<f64>,
    /// Upper edge of the band.
    pub upper: Vec<f64>,
}

impl Path {
    /// Number of steps covered.
    pub fn len(&self) -> usize {
        self.point.len()
    }

    /// Whether the path is empty.
    pub fn is_empty(&self) -> bool {
        self.point.is_empty()
    }

    fn from_forecast(model: &'static str, f: Forecast) -> Result<Self, Error> {
        let intervals = f.intervals.ok_or_else(|| Error::Fit { model, reason: "no prediction intervals".into() })?;
        Ok(Self { point: f.point, lower: intervals.lower, upper: intervals.upper })
    }

    /// Widens the band to at least the `level` quantile of the absolute in-sample residuals.
    ///
    /// Model intervals assume the model is right; on real data MSTL's are too narrow (on
    /// art_daily_small_noise 6 of 40 points fell outside a 95% band). The empirical residual
    /// quantile is a floor that keeps the band honest about the errors the fit actually made.
    ///
    /// With a `season`, the quantile is taken per phase of it: busy hours are often noisier
    /// than quiet ones, and one quantile for the whole day makes the band too narrow when busy
    /// (false alarms every day) and too wide when quiet (missed anomalies).
    fn widen_to_residuals(mut self, y: &[f64], fitted: &[f64], level: f64, season: Option<usize>) -> Self {
        let residuals: Vec<(usize, f64)> =
            y.iter().zip(fitted).map(|(a, b)| (a - b).abs()).enumerate().filter(|(_, r)| r.is_finite()).collect();
        if residuals.is_empty() {
            return self;
        }
        let n = y.len();
        let width: Vec<f64> = match season.filter(|&p| p >= PHASE_BUCKETS && n >= 2 * p) {
            Some(p) => {
                let bucket = |i: usize| (i % p) * PHASE_BUCKETS / p;
                let mut by_bucket = vec![Vec::new(); PHASE_BUCKETS];
                for &(i, r) in &residuals {
                    by_bucket[bucket(i)].push(r);
                }
                // each bucket pooled with its neighbours, so the band does not jump hour to hour
                let q: Vec<f64> = (0..PHASE_BUCKETS)
                    .map(|b| {
                        let mut pooled: Vec<f64> =
                            [PHASE_BUCKETS - 1, 0, 1].iter().flat_map(|d| by_bucket[(b + d) % PHASE_BUCKETS].iter().copied()).collect();
                        quantile(&mut pooled, level)
                    })
                    .collect();
                (0..self.len()).map(|k| q[bucket(n + k)]).collect()
            }
            None => {
                let q = quantile(&mut residuals.iter().map(|r| r.1).collect::<Vec<_>>(), level);
                vec![q; self.len()]
            }
        };
        for (((p, l), u), q) in self.point.iter().zip(&mut self.lower).zip(&mut self.upper).zip(width) {
            *l = l.min(p - q);
            *u = u.max(p + q);
        }
        self
    }

    /// Widens the band to at least `half_width` on each side.
    fn at_least(mut self, half_width: f64) -> Self {
        for ((p, l), u) in self.point.iter().zip(&mut self.lower).zip(&mut self.upper) {
            *l = l.min(p - half_width);
            *u = u.max(p + half_width);
        }
        self
    }

    /// A path with a constant-width band of `half_width` around `point`.
    fn symmetric(point: Vec<f64>, half_width: impl Fn(usize) -> f64) -> Self {
        let lower = point.iter().enumerate().map(|(k, p)| p - half_width(k)).collect();
        let upper = point.iter().enumerate().map(|(k, p)| p + half_width(k)).collect();
        Self { point, lower, upper }
    }

    fn is_finite(&self) -> bool {
        [&self.point, &self.lower, &self.upper].iter().all(|v| v.iter().all(|x| x.is_finite()))
    }

    /// Every value multiplied by `factor`, a power of two, cut to ±f64::MAX where that overflows.
    fn scaled(mut self, factor: f64) -> Self {
        for v in [&mut self.point, &mut self.lower, &mut self.upper] {
            v.iter_mut().for_each(|x| *x = (*x * factor).clamp(-f64::MAX, f64::MAX));
        }
        self
    }
}

/// Series with a value beyond this are fitted scaled down by a power of two: the sums and
/// squares every model takes overflow for values near f64::MAX.
const LARGEST_FITTED: f64 = 1e100;

/// Fits `spec` to `y` (regular samples, `step_secs` apart, the first at `start_ts`) and predicts
/// `horizon` steps ahead with a band at `level`.
///
/// An online model is trained, then predicts `horizon` steps ahead without learning more. An
/// ensemble predicts the mean of its members' paths (point and band edges alike).
///
/// # Errors
/// Too few samples, or the fitting library failed or produced non-finite values.
pub fn fit(spec: &ModelSpec, y: &[f64], start_ts: i64, step_secs: i64, level: f64, horizon: usize) -> Result<Path, Error> {
    if let ModelSpec::Ensemble { members, .. } = spec {
        let paths = members.iter().map(|m| fit(m, y, start_ts, step_secs, level, horizon)).collect::<Result<Vec<_>, _>>()?;
        let mean = |edge: fn(&Path) -> &Vec<f64>| -> Vec<f64> {
            (0..horizon).map(|k| paths.iter().map(|p| edge(p)[k] / paths.len() as f64).sum()).collect()
        };
        return Ok(Path { point: mean(|p| &p.point), lower: mean(|p| &p.lower), upper: mean(|p| &p.upper) });
    }
    if spec.is_online() {
        return match train(spec, y, start_ts, step_secs, level, horizon)? {
            Fit::Online(online) => Ok(online.path(start_ts.div_euclid(step_secs) + y.len() as i64, horizon)),
            Fit::Path(path) => Ok(path),
        };
    }
    let largest = y.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    if largest > LARGEST_FITTED && largest.is_finite() {
        // Exact: dividing by a power of two changes only the exponent. Then the largest value is
        // in [1, 2), so this does not recurse again.
        let factor = 2f64.powi(largest.log2().floor() as i32);
        let scaled: Vec<f64> = y.iter().map(|v| v / factor).collect();
        return fit(spec, &scaled, start_ts, step_secs, level, horizon).map(|path| path.scaled(factor));
    }
    let model = spec.name();
    let step = crate::config::Duration::from_secs(step_secs as u64);
    let periods = spec.periods(&step);
    let needed = spec.min_points(&step);
    if y.len() < needed {
        return Err(Error::TooShort { model, needed, got: y.len() });
    }
    let lib = |err: &dyn std::fmt::Display| Error::Fit { model, reason: err.to_string() };
    let path = match spec {
        ModelSpec::Mstl { .. } => {
            let trend = AutoETS::non_seasonal().into_trend_model();
            let season = periods.iter().max().copied();
            let fitted = MSTLModel::new(periods, trend).fit(y).map_err(|e| lib(&e))?;
            augurs_path(model, &fitted, y, level, horizon, season)?
        }
        ModelSpec::Ets {} => {
            let fitted = AutoETS::non_seasonal().fit(y).map_err(|e| lib(&e))?;
            augurs_path(model, &fitted, y, level, horizon, None)?
        }
        ModelSpec::Holt {} => {
            let fitted = AutoETS::new(1, "AAN").map_err(|e| lib(&e))?.fit(y).map_err(|e| lib(&e))?;
            augurs_path(model, &fitted, y, level, horizon, None)?
        }
        ModelSpec::Linear {} => linear(y, level, horizon),
        ModelSpec::SeasonalNaive { .. } => seasonal_naive(y, periods[0], level, horizon),
        ModelSpec::Prophet {} => prophet(y, start_ts, step_secs, level, horizon)?,
        ModelSpec::Online { .. }
        | ModelSpec::Zscore { .. }
        | ModelSpec::Mad { .. }
        | ModelSpec::Iqr { .. }
        | ModelSpec::Ensemble { .. } => {
            unreachable!("online models and ensembles are handled above")
        }
    };
    let path = path.at_least(resolution(y));
    if path.len() != horizon || !path.is_finite() {
        return Err(Error::Fit { model, reason: "the forecast has missing or non-finite values".into() });
    }
    Ok(path)
}

/// The forecast of a fitted augurs model, its band floored by the in-sample residuals.
fn augurs_path<P: Predict>(
    model: &'static str,
    fitted: &P,
    y: &[f64],
    level: f64,
    horizon: usize,
    season: Option<usize>,
) -> Result<Path, Error> {
    let lib = |err: &dyn std::fmt::Display| Error::Fit { model, reason: err.to_string() };
    let in_sample = fitted.predict_in_sample(None).map_err(|e| lib(&e))?;
    let path = Path::from_forecast(model, fitted.predict(horizon, level).map_err(|e| lib(&e))?)?;
    Ok(path.widen_to_residuals(y, &in_sample.point, level, season))
}

/// Phases per season whose residuals are pooled for the band: hourly for a daily season.
const PHASE_BUCKETS: usize = 24;

/// The `level` quantile of `values` (nearest rank; reorders them); `values` must not be empty.
pub(super) fn quantile(values: &mut [f64], level: f64) -> f64 {
    let rank = ((values.len() - 1) as f64 * level).round() as usize;
    *values.select_nth_unstable_by(rank, f64::total_cmp).1
}

/// Smallest half-width of a band, relative to the series' mean absolute value.
const RELATIVE_RESOLUTION: f64 = 1e-3;

/// The smallest deviation worth a score: a series that a model fits exactly (a flat line, a
/// clean wave) has a zero-width band, and float noise in the fit would otherwise score in the
/// millions. 0.1% of the series' typical magnitude is below what any dashboard shows.
pub(super) fn resolution(y: &[f64]) -> f64 {
    let scale = y.iter().map(|v| v.abs()).sum::<f64>() / y.len().max(1) as f64;
    if scale > 0.0 {
        RELATIVE_RESOLUTION * scale
    } else {
        f64::MIN_POSITIVE
    }
}

/// Two-sided standard-normal quantile for a central interval at `level`.
pub(super) fn z(level: f64) -> f64 {
    distrs::Normal::ppf(0.5 + level / 2.0, 0.0, 1.0)
}

/// Ordinary least squares on the index, with the textbook prediction interval.
fn linear(y: &[f64], level: f64, horizon: usize) -> Path {
    let n = y.len() as f64;
    let x_mean = (n - 1.0) / 2.0;
    let y_mean = y.iter().sum::<f64>() / n;
    let (mut sxy, mut sxx) = (0.0, 0.0);
    for (i, v) in y.iter().enumerate() {
        let dx = i as f64 - x_mean;
        sxy += dx * (v - y_mean);
        sxx += dx * dx;
    }
    let slope = sxy / sxx;
    let intercept = y_mean - slope * x_mean;
    let sse: f64 = y.iter().enumerate().map(|(i, v)| (v - intercept - slope * i as f64).powi(2)).sum();
    let sigma = (sse / (n - 2.0)).sqrt();
    let z = z(level);
    let x = |k: usize| n - 1.0 + (k + 1) as f64;
    let point = (0..horizon).map(|k| intercept + slope * x(k)).collect();
    Path::symmetric(point, |k| z * sigma * (1.0 + 1.0 / n + (x(k) - x_mean).powi(2) / sxx).sqrt())
}

/// The value one season back, with a band from the spread of seasonal differences.
fn seasonal_naive(y: &[f64], season: usize, level: f64, horizon: usize) -> Path {
    let diffs: Vec<f64> = y.windows(season + 1).map(|w| w[season] - w[0]).collect();
    let mean = diffs.iter().sum::<f64>() / diffs.len() as f64;
    let sigma = (diffs.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / diffs.len() as f64).sqrt();
    let last_season = &y[y.len() - season..];
    let point = (0..horizon).map(|k| last_season[k % season]).collect();
    let z = z(level);
    // Each further season ahead adds one more seasonal difference of uncertainty.
    Path::symmetric(point, |k| z * sigma * ((k / season + 1) as f64).sqrt())
}

#[cfg(feature = "prophet")]
fn prophet(y: &[f64], start_ts: i64, step_secs: i64, level: f64, horizon: usize) -> Result<Path, Error> {
    use augurs::prophet::{wasmstan::WasmstanOptimizer, IntervalWidth, PredictionData, Prophet, ProphetOptions, TrainingData};
    use std::sync::OnceLock;
    // Creating the optimizer compiles the Stan WASM module (~2 s); do it once per process.
    static OPTIMIZER: OnceLock<WasmstanOptimizer> = OnceLock::new();
    let model = "prophet";
    let lib = |err: &dyn std::fmt::Display| Error::Fit { model, reason: err.to_string() };
    let ds: Vec<i64> = (0..y.len() as i64).map(|i| start_ts + i * step_secs).collect();
    let last = *ds.last().unwrap_or(&start_ts);
    let future: Vec<i64> = (1..=horizon as i64).map(|k| last + k * step_secs).collect();
    let data = TrainingData::new(ds, y.to_vec()).map_err(|e| lib(&e))?;
    let opts = ProphetOptions { interval_width: IntervalWidth::try_new(level).map_err(|e| lib(&e))?, ..Default::default() };
    let optimizer = OPTIMIZER.get_or_init(WasmstanOptimizer::new).clone();
    let mut prophet = Prophet::new(opts, optimizer);
    prophet.fit(data, Default::default()).map_err(|e| lib(&e))?;
    let predictions = prophet.predict(PredictionData::new(future)).map_err(|e| lib(&e))?;
    let yhat = predictions.yhat;
    match (yhat.lower, yhat.upper) {
        (Some(lower), Some(upper)) => Ok(Path { point: yhat.point, lower, upper }),
        _ => Err(lib(&"no prediction intervals")),
    }
}

#[cfg(not(feature = "prophet"))]
fn prophet(_: &[f64], _: i64, _: i64, _: f64, _: usize) -> Result<Path, Error> {
    Err(Error::Fit { model: "prophet", reason: "pulsewatch was built without the `prophet` feature".into() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Duration;

    /// A daily sine (period 24 steps) with a gentle trend.
    fn seasonal(n: usize) -> Vec<f64> {
        (0..n).map(|i| 10.0 + 0.01 * i as f64 + 3.0 * (i as f64 * std::f64::consts::TAU / 24.0).sin()).collect()
    }

    #[track_caller]
    fn assert_close(actual: &[f64], expected: &[f64], tol: f64) {
        assert_eq!(actual.len(), expected.len());
        for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
            assert!((a - e).abs() <= tol, "index {i}: {a} vs {e} (tol {tol})");
        }
    }

    #[test]
    fn every_model_follows_a_clean_seasonal_series() {
        let y = seasonal(24 * 8);
        let truth: Vec<f64> = seasonal(24 * 8 + 12)[24 * 8..].to_vec();
        let day = Duration::from_secs(24 * 3600);
        for spec in [ModelSpec::Mstl { seasonality: vec![day.clone()] }, ModelSpec::SeasonalNaive { season: day }] {
            let path = fit(&spec, &y, 0, 3600, 0.95, 12).unwrap();
            assert_close(&path.point, &truth, 0.3);
            assert!(path.lower.iter().zip(&path.upper).all(|(l, u)| l <= u));
        }
    }

    #[test]
    fn trend_models_extrapolate_a_line() {
        let y: Vec<f64> = (0..100).map(|i| 2.0 * i as f64 + 1.0).collect();
        let truth: Vec<f64> = (100..110).map(|i| 2.0 * i as f64 + 1.0).collect();
        for spec in [ModelSpec::Linear {}, ModelSpec::Holt {}] {
            let path = fit(&spec, &y, 0, 60, 0.9, 10).unwrap();
            assert_close(&path.point, &truth, 0.5);
        }
        let flat = vec![5.0; 50];
        let path = fit(&ModelSpec::Ets {}, &flat, 0, 60, 0.9, 3).unwrap();
        assert_close(&path.point, &[5.0; 3], 1e-6);
    }

    #[test]
    fn wider_band_at_higher_level() {
        let y: Vec<f64> = (0..200).map(|i| (i as f64 * 0.7).sin()).collect();
        let narrow = fit(&ModelSpec::Linear {}, &y, 0, 60, 0.5, 1).unwrap();
        let wide = fit(&ModelSpec::Linear {}, &y, 0, 60, 0.99, 1).unwrap();
        assert!(wide.upper[0] - wide.lower[0] > 2.0 * (narrow.upper[0] - narrow.lower[0]));
    }

    #[test]
    fn band_is_at_least_the_residual_quantile() {
        let narrow = Path { point: vec![10.0, 20.0], lower: vec![9.9, 19.0], upper: vec![10.1, 21.0] };
        // absolute residuals 0, 1, ..., 10: the 0.9 quantile is 9
        let y: Vec<f64> = (0..=10).map(f64::from).collect();
        let widened = narrow.widen_to_residuals(&y, &[0.0; 11], 0.9, None);
        assert_eq!(widened.lower, vec![1.0, 11.0]);
        assert_eq!(widened.upper, vec![19.0, 29.0]);
        // a band already wider than the residuals is kept
        let wide = Path { point: vec![0.0], lower: vec![-50.0], upper: vec![50.0] };
        assert_eq!(wide.clone().widen_to_residuals(&y, &[0.0; 11], 0.9, None), wide);
    }

    #[test]
    fn seasonal_band_follows_the_noise_of_each_phase() {
        // two seasons of 24 steps: residual 0.1 in the first half of the season, 5 in the second
        let y: Vec<f64> = (0..48).map(|i| if i % 24 < 12 { 0.1 } else { 5.0 }).collect();
        let path = Path { point: vec![0.0; 24], lower: vec![0.0; 24], upper: vec![0.0; 24] };
        let widened = path.clone().widen_to_residuals(&y, &[0.0; 48], 0.9, Some(24));
        // step k of the path is phase (48 + k) % 24 = k; phase 5 pools phases 4-6, phase 17 16-18
        assert_eq!((widened.lower[5], widened.upper[5]), (-0.1, 0.1));
        assert_eq!((widened.lower[17], widened.upper[17]), (-5.0, 5.0));
        // phase 12 pools 11 (quiet) with 12 and 13 (noisy): the 0.9 quantile is noisy
        assert_eq!(widened.upper[12], 5.0);
        // without a season, one quantile for all
        let flat = path.widen_to_residuals(&y, &[0.0; 48], 0.9, None);
        assert!(flat.upper.iter().all(|u| *u == 5.0));
    }

    #[test]
    fn an_exact_fit_still_has_a_band() {
        // a flat line is fitted exactly: its band is 0.1% of the level wide on each side
        let path = fit(&ModelSpec::Linear {}, &[200.0; 50], 0, 60, 0.95, 3).unwrap();
        for k in 0..3 {
            assert!((path.upper[k] - path.point[k] - 0.2).abs() < 1e-9, "{path:?}");
            assert!((path.point[k] - path.lower[k] - 0.2).abs() < 1e-9, "{path:?}");
        }
        // an all-zero series has no scale: the band stays as narrow as a float allows
        let zeros = fit(&ModelSpec::Linear {}, &[0.0; 50], 0, 60, 0.95, 1).unwrap();
        assert!(zeros.upper[0] > 0.0 && zeros.upper[0] < 1e-300);
    }

    #[test]
    fn values_near_the_largest_float_are_fitted() {
        let day = Duration::from_secs(24 * 3600);
        let specs = [ModelSpec::Linear {}, ModelSpec::Ets {}, ModelSpec::Holt {}, ModelSpec::Mstl { seasonality: vec![day.clone()] }];
        // up to 1.5e308: every sum or square of these overflows
        let big: Vec<f64> = seasonal(24 * 8).iter().map(|v| v * 1e307).collect();
        for spec in specs.iter().chain([&ModelSpec::SeasonalNaive { season: day }]) {
            let path = fit(spec, &big, 0, 3600, 0.95, 12).unwrap_or_else(|e| panic!("{spec:?}: {e}"));
            assert!(path.is_finite(), "{spec:?}: {path:?}");
            // the fit the model makes of the series at an ordinary scale
            let plain = fit(spec, &seasonal(24 * 8), 0, 3600, 0.95, 12).unwrap();
            let unscaled = |v: &[f64]| v.iter().map(|x| x / 1e307).collect::<Vec<_>>();
            assert_close(&unscaled(&path.point), &plain.point, 0.05);
            assert_close(&unscaled(&path.upper), &plain.upper, 0.05);
        }
    }

    #[test]
    fn too_short_is_a_clear_error() {
        let spec = ModelSpec::Mstl { seasonality: vec![Duration::from_secs(86400)] };
        let err = fit(&spec, &[1.0; 30], 0, 3600, 0.95, 1).unwrap_err();
        assert_eq!(err.to_string(), "mstl needs at least 48 samples, the series has 30");
    }

    #[cfg(feature = "prophet")]
    #[test]
    fn prophet_fits_and_bands() {
        let y = seasonal(24 * 8);
        let path = fit(&ModelSpec::Prophet {}, &y, 1_700_000_000, 3600, 0.8, 6).unwrap();
        assert_eq!(path.len(), 6);
        let truth: Vec<f64> = seasonal(24 * 8 + 6)[24 * 8..].to_vec();
        assert_close(&path.point, &truth, 1.5);
        assert!(path.lower.iter().zip(&path.upper).all(|(l, u)| l < u));
    }
}

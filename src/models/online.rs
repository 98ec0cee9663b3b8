//! Online models: a state updated with every sample at O(1) cost (or O(window) for the rolling
//! quantiles), so that no batch refit is needed. A "fit" of an online model trains a fresh
//! state on the series' history, re-checking its seasons; between fits every sample updates it.

use super::rolling::{Rolling, Statistic};
use super::seasonal::Seasonal;
use super::{find_seasons, ModelSpec, Path};
use crate::config::{Duration, Seasonality};

/// Consecutive samples outside the band on the same side: once there are enough, they are a new
/// normal rather than an anomaly, and the model restarts its level from them.
#[derive(Clone, Debug, Default)]
pub(crate) struct Run {
    above: bool,
    values: Vec<f64>,
}

impl Run {
    /// Notes a sample `value` whose `residual` is measured against a band of half-width `half`;
    /// returns the run's values when `len` samples in a row were outside on one side.
    pub(crate) fn push(&mut self, value: f64, residual: f64, half: f64, len: usize) -> Option<Vec<f64>> {
        if residual.abs() <= half || residual.is_nan() {
            self.values.clear();
            return None;
        }
        let above = residual > 0.0;
        if above != self.above {
            self.values.clear();
            self.above = above;
        }
        self.values.push(value);
        (self.values.len() >= len).then(|| std::mem::take(&mut self.values))
    }

    pub(crate) fn state_bytes(&self) -> usize {
        8 * self.values.capacity()
    }
}

/// An online model's state.
#[derive(Clone, Debug)]
pub struct Online {
    model: Model,
    /// The narrowest half-width of the band: the `level` quantile of the absolute one-step
    /// residuals over the training data. The model's spread is a mean, which a series of long
    /// quiet stretches and short bursts (a load balancer's errors, disk writes) brings near 0
    /// between bursts; the quantile of the residuals it actually had keeps the bursts it has
    /// always had inside the band.
    least_half: f64,
    /// Samples are divided by this power of two: sums of values near f64::MAX overflow.
    scale: f64,
}

#[derive(Clone, Debug)]
enum Model {
    Seasonal(Seasonal),
    Rolling(Rolling),
}

/// Series with a value beyond this are learned scaled down by a power of two.
const LARGEST_LEARNED: f64 = 1e100;

impl Online {
    /// Trains `spec` (an online model) on `y`, samples `step_secs` apart from `start_ts`, with a
    /// band at `level` (two-sided) and no narrower than `floor`.
    pub(crate) fn train(spec: &ModelSpec, y: &[f64], start_ts: i64, step_secs: i64, level: f64, floor: f64) -> Self {
        let z = super::fit::z(level);
        let largest = y.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let scale = if largest > LARGEST_LEARNED && largest.is_finite() { 2f64.powi(largest.log2().floor() as i32) } else { 1.0 };
        let scaled: Vec<f64>;
        let y = if scale == 1.0 {
            y
        } else {
            scaled = y.iter().map(|v| v / scale).collect();
            &scaled
        };
        let floor = floor / scale;
        let step = Duration::from_secs(step_secs as u64);
        let first = start_ts.div_euclid(step_secs);
        let window = spec.window(&step).unwrap_or(0);
        let model = match spec {
            ModelSpec::Zscore { .. } => Model::Rolling(Rolling::new(Statistic::Zscore, window, z, floor)),
            ModelSpec::Mad { .. } => Model::Rolling(Rolling::new(Statistic::Mad, window, z, floor)),
            ModelSpec::Iqr { .. } => Model::Rolling(Rolling::new(Statistic::Iqr, window, z, floor)),
            _ => {
                let seasons = match spec {
                    ModelSpec::Online { seasonality: Seasonality::Auto } => find_seasons(y, step_secs),
                    _ => spec.periods(&step),
                };
                // The longest season holds the shorter ones: a week of phases has every day's.
                let period = seasons.into_iter().max().unwrap_or(0);
                Model::Seasonal(Seasonal::new(y, first, period, z, floor))
            }
        };
        let mut online = Self { model, scale: 1.0, least_half: 0.0 };
        let mut residuals = Vec::with_capacity(y.len());
        for (i, &v) in y.iter().enumerate() {
            let (yhat, _, _) = online.observe(first + i as i64, v, 1);
            residuals.push((v - yhat).abs());
        }
        // The first quarter is the model's own warm-up, not the series' noise.
        let settled = &mut residuals[y.len() / 4..];
        if !settled.is_empty() {
            online.least_half = super::fit::quantile(settled, level);
        }
        online.scale = scale;
        online
    }

    /// The prediction and band at step number `index` (Unix time over step), `ahead` steps after
    /// the newest sample learned.
    pub(crate) fn predict(&self, index: i64, ahead: usize) -> (f64, f64, f64) {
        let (yhat, lower, upper) = match &self.model {
            Model::Seasonal(m) => m.predict(index, ahead),
            Model::Rolling(m) => m.predict(),
        };
        let (lower, upper) = (lower.min(yhat - self.least_half), upper.max(yhat + self.least_half));
        let s = |v: f64| (v * self.scale).clamp(-f64::MAX, f64::MAX);
        (s(yhat), s(lower), s(upper))
    }

    /// The predictions for `horizon` steps from step number `next` on, learning nothing.
    pub(crate) fn path(&self, next: i64, horizon: usize) -> Path {
        let (mut point, mut lower, mut upper) = (Vec::with_capacity(horizon), Vec::with_capacity(horizon), Vec::with_capacity(horizon));
        for k in 0..horizon {
            let (p, l, u) = self.predict(next + k as i64, k + 1);
            point.push(p);
            lower.push(l);
            upper.push(u);
        }
        Path { point, lower, upper }
    }

    /// Predicts sample `y` at step number `index`, `ahead` steps after the newest one, then
    /// learns it; returns the prediction and band.
    pub(crate) fn observe(&mut self, index: i64, y: f64, ahead: usize) -> (f64, f64, f64) {
        let predicted = self.predict(index, ahead);
        let y = y / self.scale;
        match &mut self.model {
            Model::Seasonal(m) => m.update(index, y),
            Model::Rolling(m) => m.update(y),
        }
        predicted
    }

    /// The season in use, in steps (0 for none).
    pub fn period(&self) -> usize {
        match &self.model {
            Model::Seasonal(m) => m.period(),
            Model::Rolling(_) => 0,
        }
    }

    /// Bytes of state.
    pub fn state_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + match &self.model {
                Model::Seasonal(m) => m.state_bytes(),
                Model::Rolling(m) => m.state_bytes(),
            }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_needs_len_samples_in_a_row_on_one_side() {
        let mut run = Run::default();
        assert_eq!(run.push(5.0, 2.0, 1.0, 3), None);
        assert_eq!(run.push(5.0, 0.5, 1.0, 3), None, "inside the band: the run ends");
        assert_eq!(run.push(6.0, 2.0, 1.0, 3), None);
        assert_eq!(run.push(0.0, -2.0, 1.0, 3), None, "the other side: a new run");
        assert_eq!(run.push(1.0, -2.0, 1.0, 3), None);
        assert_eq!(run.push(2.0, -2.0, 1.0, 3), Some(vec![0.0, 1.0, 2.0]));
        assert_eq!(run.push(3.0, -2.0, 1.0, 3), None, "a returned run starts again");
    }

    #[test]
    fn seasons_are_found_or_set() {
        let y: Vec<f64> = (0..24 * 14).map(|i| (i as f64 * std::f64::consts::TAU / 24.0).sin()).collect();
        let auto = Online::train(&ModelSpec::Online { seasonality: Seasonality::Auto }, &y, 0, 3600, 0.99, 1e-9);
        assert_eq!(auto.period(), 24);
        let none = Online::train(&ModelSpec::Online { seasonality: Seasonality::Fixed(vec![]) }, &y, 0, 3600, 0.99, 1e-9);
        assert_eq!(none.period(), 0);
        let week = Duration::from_secs(7 * 86400);
        let weekly = Online::train(&ModelSpec::Online { seasonality: Seasonality::Fixed(vec![week]) }, &y, 0, 3600, 0.99, 1e-9);
        assert_eq!(weekly.period(), 168);
    }

    #[test]
    fn a_fit_of_an_online_model_is_its_prediction_path() {
        // a daily wave at hourly steps over two weeks, starting at step 0: the path continues it
        let wave = |i: usize| 10.0 + (i as f64 * std::f64::consts::TAU / 24.0).sin();
        let y: Vec<f64> = (0..24 * 14).map(wave).collect();
        let spec = ModelSpec::Online { seasonality: Seasonality::Auto };
        let path = crate::models::fit(&spec, &y, 0, 3600, 0.99, 30).unwrap();
        assert_eq!(path.len(), 30);
        for (k, p) in path.point.iter().enumerate() {
            assert!((p - wave(24 * 14 + k)).abs() < 0.05, "step {k}: {p} against {}", wave(24 * 14 + k));
        }
        assert!(path.lower.iter().zip(&path.point).zip(&path.upper).all(|((l, p), u)| l < p && p < u));
    }

    #[test]
    fn state_is_a_few_kilobytes() {
        // a daily season at 5 minutes: 288 phases
        let y: Vec<f64> = (0..288 * 7).map(|i| (i as f64 * std::f64::consts::TAU / 288.0).sin()).collect();
        let daily = Online::train(&ModelSpec::Online { seasonality: Seasonality::Auto }, &y, 0, 300, 0.999, 1e-9);
        assert_eq!(daily.period(), 288);
        assert!(daily.state_bytes() < 3000, "{} bytes", daily.state_bytes());
        let window = ModelSpec::Mad { window: Duration::from_secs(86400) };
        let rolling = Online::train(&window, &y, 0, 300, 0.999, 1e-9);
        assert!(rolling.state_bytes() < 16 * 288 + 500, "{} bytes", rolling.state_bytes());
    }

    #[test]
    fn values_near_the_largest_float_are_learned_scaled() {
        let y: Vec<f64> = (0..200).map(|i| 1e307 * (1.0 + 0.01 * (i % 2) as f64)).collect();
        let mut m = Online::train(&ModelSpec::Online { seasonality: Seasonality::Auto }, &y, 0, 60, 0.99, 1e300);
        let (yhat, lower, upper) = m.predict(200, 1);
        assert!(yhat.is_finite() && lower < yhat && yhat < upper, "{lower} {yhat} {upper}");
        assert!((yhat / 1e307 - 1.005).abs() < 0.01, "{yhat}");
        m.observe(200, f64::MAX, 1);
        let (yhat, lower, upper) = m.predict(201, 1);
        assert!(yhat.is_finite() && lower.is_finite() && upper.is_finite());
    }
}

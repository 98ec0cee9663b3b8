//! One input series' model state: its recent history, its fitted prediction path and the online
//! correction applied between refits.
//!
//! Between refits a new sample costs O(1): its prediction is read from the path fitted last,
//! shifted by an online level correction (an exponentially weighted mean of in-band residuals,
//! so slow drift is absorbed while anomalies are not learned). Refits train on the history kept
//! here, so they never re-download it. A sample scored further than [`CLIP_BEYOND`] half-widths
//! of the band from its prediction enters that history at that distance, so a refit does not
//! learn an incident at full weight (nearer samples enter as they are: the residual floor of a
//! batch model's band is measured on them). Once [`RELEVEL_AFTER`] samples in a row are outside
//! the band on the same side, they and those that follow on that side enter as they are: a
//! lasting change is learned by the next refit.
//!
//! Every prediction, band and score is finite, even for values near ±f64::MAX: differences are
//! taken in halves (exact for ordinary values) and results beyond f64's range are cut to ±MAX.

use std::collections::VecDeque;

use super::calibration::Calibration;
use super::online::Run;
use super::seasonal::RELEVEL_AFTER;
use super::{anomaly_score, Fit};
use crate::config::Direction;
use crate::exporter::Point;

/// A batch-scored sample further than this many half-widths of the band from the prediction
/// enters the history at that distance.
const CLIP_BEYOND: f64 = 3.0;

/// Weight of the newest in-band residual in the online level correction.
const LEVEL_ALPHA: f64 = 0.1;

/// `x`, with an infinity (an overflow of finite operands) cut to the nearest finite value.
fn saturate(x: f64) -> f64 {
    x.clamp(-f64::MAX, f64::MAX)
}

#[derive(Clone, Debug)]
struct Fitted {
    /// Timestamp of the last training sample; `path[0]` predicts one step after it.
    at_ts: i64,
    model: Fit,
}

/// Model state of one series.
#[derive(Clone, Debug)]
pub struct SeriesModel {
    step: i64,
    capacity: usize,
    values: VecDeque<f64>,
    last_ts: Option<i64>,
    fitted: Option<Fitted>,
    offset: f64,
    last_point: Option<Point>,
    /// After a failed fit, no new attempt before this timestamp.
    retry_at: Option<i64>,
    /// Scales the band by the deviations observed, when enabled.
    calibration: Option<Calibration>,
    /// The samples in a row outside the band on one side, as observed.
    run: Run,
    /// `Some(above)` while a lasting change (a run of [`RELEVEL_AFTER`]) goes on on that side.
    lasting: Option<bool>,
}

impl SeriesModel {
    /// An empty model for samples `step` seconds apart, keeping at most `capacity` of them.
    pub fn new(step: i64, capacity: usize) -> Self {
        Self {
            step,
            capacity,
            values: VecDeque::new(),
            last_ts: None,
            fitted: None,
            offset: 0.0,
            last_point: None,
            retry_at: None,
            calibration: None,
            run: Run::default(),
            lasting: None,
        }
    }

    /// Scales the band online so that about `level` of the recent observations fall inside it:
    /// in-sample residuals understate a fit's errors out of sample.
    pub fn calibrated(mut self, level: f64) -> Self {
        self.calibration = Some(Calibration::new(level));
        self
    }

    fn scale(&self) -> f64 {
        self.calibration.as_ref().map_or(1.0, Calibration::scale)
    }

    /// Appends a sample to the history (not scored). Samples at or before the newest one are
    /// ignored; a gap is filled by carrying the last value forward, keeping the grid regular.
    pub fn push(&mut self, ts: i64, y: f64) {
        if !y.is_finite() {
            return;
        }
        if let Some(last) = self.last_ts {
            if ts <= last {
                return;
            }
            let missing = ((ts - last) / self.step - 1).clamp(0, self.capacity as i64);
            let fill = *self.values.back().unwrap_or(&y);
            self.values.extend(std::iter::repeat_n(fill, missing as usize));
        }
        self.values.push_back(y);
        self.last_ts = Some(ts);
        while self.values.len() > self.capacity {
            self.values.pop_front();
        }
    }

    /// Timestamp of the newest sample.
    pub fn last_ts(&self) -> Option<i64> {
        self.last_ts
    }

    /// Number of samples held.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether no sample is held.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Whether a (re)fit is due before scoring samples up to `until_ts`: never fitted, fitted more
    /// than `refit_secs` ago, or its path does not reach `until_ts + reach_secs`.
    pub fn needs_fit(&self, until_ts: i64, refit_secs: i64, reach_secs: i64) -> bool {
        if self.retry_at.is_some_and(|at| until_ts < at) {
            return false;
        }
        match &self.fitted {
            None => true,
            // An online model predicts any step ahead: only the cadence re-trains it.
            Some(Fitted { at_ts, model: Fit::Online(_) }) => until_ts - at_ts >= refit_secs,
            Some(Fitted { at_ts, model: Fit::Path(path) }) => {
                let path_end = at_ts + path.len() as i64 * self.step;
                until_ts - at_ts >= refit_secs || until_ts + reach_secs > path_end
            }
        }
    }

    /// The history to train on and the timestamp of its first sample.
    pub fn training_data(&self) -> Option<(Vec<f64>, i64)> {
        let last = self.last_ts?;
        let start = last - (self.values.len() as i64 - 1) * self.step;
        Some((self.values.iter().copied().collect(), start))
    }

    /// Installs a fit of the history that ends at `at_ts`, and resets the online correction.
    pub fn set_fit(&mut self, at_ts: i64, model: Fit) {
        self.fitted = Some(Fitted { at_ts, model });
        self.offset = 0.0;
        self.retry_at = None;
    }

    /// Records a failed fit: the next attempt waits until `retry_at`.
    pub fn fit_failed(&mut self, retry_at: i64) {
        self.retry_at = Some(retry_at);
    }

    /// The prediction and band for `ts`: from the fitted path with the online correction, or
    /// from the online model.
    pub fn predict(&self, ts: i64) -> Option<(f64, f64, f64)> {
        let f = self.fitted.as_ref()?;
        let (p, l, u) = match &f.model {
            Fit::Path(path) => {
                let ahead = ts - f.at_ts;
                if ahead <= 0 || ahead % self.step != 0 {
                    return None;
                }
                let k = (ahead / self.step - 1) as usize;
                (*path.point.get(k)?, *path.lower.get(k)?, *path.upper.get(k)?)
            }
            Fit::Online(online) => {
                let last = self.last_ts?;
                let ahead = ts - last;
                if ahead <= 0 || ahead % self.step != 0 {
                    return None;
                }
                let (yhat, lower, upper) = online.predict(ts.div_euclid(self.step), (ahead / self.step) as usize);
                return Some(self.calibrated_band(yhat, lower, upper, 0.0));
            }
        };
        Some(self.calibrated_band(p, l, u, self.offset))
    }

    /// The prediction `p + offset` with the band `[l, u]` around `p` scaled by the calibration.
    fn calibrated_band(&self, p: f64, l: f64, u: f64, offset: f64) -> (f64, f64, f64) {
        let (yhat, scale) = (saturate(p + offset), self.scale());
        // Half-widths in halves: `p - l` of two finite values can overflow, half of it cannot.
        // Halving and doubling are exact, so ordinary bands come out as `yhat - (p - l) * scale`.
        let (below, above) = ((p / 2.0 - l / 2.0) * scale, (u / 2.0 - p / 2.0) * scale);
        (yhat, saturate((yhat / 2.0 - below) * 2.0), saturate((yhat / 2.0 + above) * 2.0))
    }

    /// Scores a new sample, updates the online state and appends it to the history.
    /// Returns `None` (and only stores the sample) when the model cannot predict `ts`.
    pub fn observe(&mut self, ts: i64, y: f64, direction: Direction, min_deviation: f64) -> Option<Point> {
        if !y.is_finite() || self.last_ts.is_some_and(|last| ts <= last) {
            return None;
        }
        if let (Some(Fitted { model: Fit::Online(online), .. }), Some(last)) = (&mut self.fitted, self.last_ts) {
            let ahead = ts - last;
            let point = (ahead % self.step == 0).then(|| {
                let (yhat, lower, upper) = online.observe(ts.div_euclid(self.step), y, (ahead / self.step) as usize);
                Point { ts, y, yhat, lower, upper, score: anomaly_score(y, yhat, lower, upper, direction, min_deviation) }
            });
            self.push(ts, y);
            self.last_point = point;
            return point;
        }
        let point = self.predict(ts).map(|(yhat, lower, upper)| {
            let score = anomaly_score(y, yhat, lower, upper, direction, min_deviation);
            // Learn only from in-band samples, judged without the guards: a drop that
            // `direction: above` ignores must not drag the level down.
            // Deviations below `min_deviation` are learned too: a flat history has a zero-width
            // band, and its slow drift must not grow until it scores.
            let unguarded = anomaly_score(y, yhat, lower, upper, Direction::Both, 0.0);
            let deviation = y - yhat;
            if unguarded <= 1.0 || deviation.abs() < min_deviation {
                // y and yhat near ±f64::MAX: their difference overflows, a tenth of each does not
                let correction = if deviation.is_finite() { LEVEL_ALPHA * deviation } else { LEVEL_ALPHA * y - LEVEL_ALPHA * yhat };
                self.offset = saturate(self.offset + correction);
            }
            // measured against the fit's own band, before scaling; in halves, which have the same
            // ratio and cannot overflow
            let side = if y >= yhat { upper / 2.0 - yhat / 2.0 } else { yhat / 2.0 - lower / 2.0 };
            let scale = self.scale();
            if let Some(c) = &mut self.calibration {
                c.record(y / 2.0 - yhat / 2.0, side / scale);
            }
            Point { ts, y, yhat, lower, upper, score }
        });
        let learned = point.map_or(y, |p| self.learned(&p));
        self.push(ts, learned);
        if point.is_some() {
            self.last_point = point;
        }
        point
    }

    /// What a batch-scored sample enters the history as: itself, or cut to [`CLIP_BEYOND`]
    /// half-widths from the prediction, unless it belongs to a lasting change (see the module
    /// docs), whose samples so far are then restored in the history.
    fn learned(&mut self, p: &Point) -> f64 {
        // In halves, as everywhere here, so that extreme values do not overflow.
        let residual = p.y / 2.0 - p.yhat / 2.0;
        let half = if residual >= 0.0 { p.upper / 2.0 - p.yhat / 2.0 } else { p.yhat / 2.0 - p.lower / 2.0 };
        let outside = residual.abs() > half;
        if outside && self.lasting == Some(residual > 0.0) {
            return p.y;
        }
        self.lasting = None;
        if let Some(run) = self.run.push(p.y, residual, half, RELEVEL_AFTER) {
            self.lasting = Some(residual > 0.0);
            let earlier = &run[..run.len() - 1];
            let from = self.values.len().saturating_sub(earlier.len());
            for (slot, &v) in self.values.range_mut(from..).zip(earlier) {
                *slot = v;
            }
            return p.y;
        }
        if residual.abs() > CLIP_BEYOND * half {
            let edge = CLIP_BEYOND * half;
            saturate(p.yhat + if residual > 0.0 { 2.0 * edge } else { -2.0 * edge })
        } else {
            p.y
        }
    }

    /// The newest observation, if it was scored: once a sample cannot be scored (the path ran
    /// out and no refit succeeded), there is nothing current to export.
    pub fn last_point(&self) -> Option<Point> {
        self.last_point.filter(|p| Some(p.ts) == self.last_ts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::Path;

    fn path(n: usize, value: f64) -> Path {
        Path { point: vec![value; n], lower: vec![value - 1.0; n], upper: vec![value + 1.0; n] }
    }

    #[test]
    fn history_is_bounded_and_gaps_are_filled() {
        let mut m = SeriesModel::new(60, 5);
        m.push(0, 1.0);
        m.push(180, 4.0); // two missing steps
        assert_eq!(m.training_data().unwrap(), (vec![1.0, 1.0, 1.0, 4.0], 0));
        m.push(180, 9.0); // duplicate timestamp: ignored
        m.push(240, 5.0);
        m.push(300, 6.0);
        let (values, start) = m.training_data().unwrap();
        assert_eq!(values, vec![1.0, 1.0, 4.0, 5.0, 6.0]);
        assert_eq!(start, 60);
        m.push(360, f64::NAN);
        assert_eq!(m.last_ts(), Some(300));
    }

    #[test]
    fn scores_against_the_path_and_tracks_level() {
        let mut m = SeriesModel::new(60, 100);
        m.push(0, 10.0);
        m.set_fit(0, Fit::Path(path(10, 10.0)));
        let p = m.observe(60, 10.5, Direction::Both, 0.0).unwrap();
        assert_eq!((p.yhat, p.score), (10.0, 0.5));
        // the in-band residual moved the level by alpha * 0.5
        let (yhat, _, _) = m.predict(120).unwrap();
        assert!((yhat - 10.05).abs() < 1e-12);
        // an anomaly scores > 1 and does not move the level
        let p = m.observe(120, 20.0, Direction::Both, 0.0).unwrap();
        assert!(p.score > 9.0);
        assert!((m.predict(180).unwrap().0 - 10.05).abs() < 1e-12);
        assert_eq!(m.last_point().unwrap().ts, 120);
    }

    /// A refit trains on a spike cut to 3 half-widths of the band, and on a lasting change as it was.
    #[test]
    fn refits_do_not_learn_incidents_but_learn_lasting_changes() {
        let mut m = SeriesModel::new(60, 100);
        m.push(0, 10.0);
        m.set_fit(0, Fit::Path(path(100, 10.0)));
        let history = |m: &SeriesModel| m.training_data().unwrap().0;
        m.observe(60, 10.5, Direction::Both, 0.0).unwrap();
        let spike = m.observe(120, 50.0, Direction::Both, 0.0).unwrap();
        assert!(spike.score > 1.0);
        let cut = |p: &Point, sign: f64| p.yhat + sign * CLIP_BEYOND * (p.upper - p.yhat);
        assert_eq!(history(&m), [10.0, 10.5, cut(&spike, 1.0)], "the spike enters 3 half-widths above");
        // A dip below enters 3 half-widths below; a guard that ignores it does not matter.
        let dip = m.observe(180, -20.0, Direction::Above, 0.0).unwrap();
        assert_eq!((dip.score, *history(&m).last().unwrap()), (0.0, cut(&dip, -1.0)));
        // Within 3 half-widths, a sample outside the band enters as it is.
        let near = m.observe(240, 12.5, Direction::Both, 0.0).unwrap();
        assert!(near.score > 1.0 && *history(&m).last().unwrap() == 12.5, "{near:?}");
        m.observe(300, 10.0, Direction::Both, 0.0).unwrap();
        // A level shift to 30: the first RELEVEL_AFTER - 1 samples enter clipped, the next
        // restores them, and every later one on that side enters as it is.
        for k in 0..RELEVEL_AFTER as i64 + 3 {
            let p = m.observe(360 + 60 * k, 30.0, Direction::Both, 0.0).unwrap();
            assert!(p.score > 3.0, "the path does not follow the shift before a refit");
            if k == 0 {
                assert!(*history(&m).last().unwrap() < 30.0, "cut while it may be an incident");
            }
        }
        let h = history(&m);
        assert_eq!(h[h.len() - RELEVEL_AFTER - 3..], [30.0; RELEVEL_AFTER + 3], "the lasting change as it was");
        // Back inside the band, then one more spike: an incident again.
        m.observe(360 + 60 * (RELEVEL_AFTER as i64 + 3), 10.0, Direction::Both, 0.0).unwrap();
        let again = m.observe(420 + 60 * (RELEVEL_AFTER as i64 + 3), 30.0, Direction::Both, 0.0).unwrap();
        assert_eq!(*history(&m).last().unwrap(), cut(&again, 1.0));
    }

    #[test]
    fn guarded_deviations_are_not_learned() {
        let mut m = SeriesModel::new(60, 100);
        m.push(0, 10.0);
        m.set_fit(0, Fit::Path(path(10, 10.0)));
        // a drop far below the band scores 0 under `direction: above`, and must not move the level
        let p = m.observe(60, 0.0, Direction::Above, 0.0).unwrap();
        assert_eq!(p.score, 0.0);
        assert_eq!(m.predict(120).unwrap().0, 10.0);
    }

    #[test]
    fn flat_series_learns_drift_below_min_deviation() {
        let mut m = SeriesModel::new(60, 100);
        m.push(0, 5.0);
        m.set_fit(0, Fit::Path(Path { point: vec![5.0; 10], lower: vec![5.0; 10], upper: vec![5.0; 10] }));
        let p = m.observe(60, 5.1, Direction::Both, 0.5).unwrap();
        assert_eq!(p.score, 0.0);
        assert!((m.predict(120).unwrap().0 - 5.01).abs() < 1e-12, "the level moved toward 5.1");
    }

    #[test]
    fn failed_fit_waits_and_unscored_samples_are_not_exported() {
        let mut m = SeriesModel::new(60, 100);
        m.push(0, 1.0);
        m.set_fit(0, Fit::Path(path(2, 1.0)));
        assert!(m.observe(60, 1.0, Direction::Both, 0.0).is_some());
        assert_eq!(m.last_point().unwrap().ts, 60);
        // the path has run out: the sample is kept but nothing current can be exported
        assert!(m.observe(180, 1.0, Direction::Both, 0.0).is_none());
        assert!(m.last_point().is_none());
        m.fit_failed(600);
        assert!(!m.needs_fit(300, 3600, 0), "no retry before 600");
        assert!(m.needs_fit(600, 3600, 0));
    }

    #[test]
    fn calibration_widens_a_band_the_observations_exceed() {
        // deviations spread evenly over ±1.5 around 0, against a fitted band of ±1: a third of
        // them fall outside it, where a 90% band should let a tenth through
        let y = |i: i64| ((i * 7919) % 301) as f64 / 100.0 - 1.5;
        let outside = |m: &mut SeriesModel| {
            m.push(0, 0.0);
            m.set_fit(0, Fit::Path(path(1000, 0.0)));
            let scores: Vec<f64> = (1..=600).map(|i| m.observe(60 * i, y(i), Direction::Both, 0.0).unwrap().score).collect();
            scores[300..].iter().filter(|s| **s > 1.0).count() as f64 / 300.0
        };
        let mut plain = SeriesModel::new(60, 1000);
        let share = outside(&mut plain);
        assert!((0.3..0.37).contains(&share), "{share}");
        let mut calibrated = SeriesModel::new(60, 1000).calibrated(0.9);
        let share = outside(&mut calibrated);
        assert!((0.05..0.15).contains(&share), "{share}");
        let (yhat, lower, upper) = calibrated.predict(60 * 601).unwrap();
        assert!((1.2..1.6).contains(&(upper - yhat)) && (1.2..1.6).contains(&(yhat - lower)), "{lower} {yhat} {upper}");
    }

    #[track_caller]
    fn assert_finite(p: &Point) {
        assert!([p.y, p.yhat, p.lower, p.upper, p.score].iter().all(|v| v.is_finite()), "{p:?}");
    }

    #[test]
    fn extreme_finite_values_give_finite_outputs_and_high_scores() {
        // a path near f64::MAX whose band is wider than f64::MAX can hold
        let extreme = Path { point: vec![1e308; 20], lower: vec![-1e308; 20], upper: vec![1.2e308; 20] };
        for mut m in [SeriesModel::new(60, 100), SeriesModel::new(60, 100).calibrated(0.9)] {
            m.push(0, 1e308);
            m.set_fit(0, Fit::Path(extreme.clone()));
            let (yhat, lower, upper) = m.predict(60).unwrap();
            assert!(yhat.is_finite() && lower.is_finite() && upper.is_finite(), "{lower} {yhat} {upper}");
            // the farthest finite observation below: a deviation of more than f64::MAX
            let p = m.observe(60, -f64::MAX, Direction::Both, 0.0).unwrap();
            assert_finite(&p);
            assert!(p.score > 1.0, "a maximal deviation scored {}", p.score);
            // in-band observations far from the prediction move the level without overflowing it
            for (i, y) in [f64::MAX, -1e308, f64::MAX, f64::MAX, 0.0].into_iter().enumerate() {
                let p = m.observe(120 + 60 * i as i64, y, Direction::Both, 0.0).unwrap();
                assert_finite(&p);
            }
            let (yhat, lower, upper) = m.predict(480).unwrap();
            assert!(yhat.is_finite() && lower.is_finite() && upper.is_finite(), "{lower} {yhat} {upper}");
        }
        // a narrow band at the top of the range: the largest deviation scores the most
        let mut m = SeriesModel::new(60, 100);
        m.push(0, 1.7e308);
        m.set_fit(0, Fit::Path(Path { point: vec![1.7e308; 5], lower: vec![1.69e308; 5], upper: vec![1.71e308; 5] }));
        let p = m.observe(60, -f64::MAX, Direction::Both, 0.0).unwrap();
        assert_finite(&p);
        assert!(p.score > 100.0, "{p:?}");
        let p = m.observe(120, -f64::MAX, Direction::Both, 0.0).unwrap();
        assert_finite(&p);
        assert!(p.score > 100.0, "an anomaly is not learned: {p:?}");
    }

    #[test]
    fn an_online_model_scores_learns_and_predicts_any_step_ahead() {
        let spec = crate::config::ModelSpec::Online { seasonality: crate::config::Seasonality::Fixed(vec![]) };
        let y = |i: i64| 10.0 + crate::models::testing::noise(i as usize);
        let mut m = SeriesModel::new(60, 1000);
        (0..200).for_each(|i| m.push(60 * i, y(i)));
        let (values, start) = m.training_data().unwrap();
        m.set_fit(60 * 199, crate::models::train(&spec, &values, start, 60, 0.999, 1).unwrap());
        // in the noise: scored low; a jump to 30 is anomalous for RELEVEL_AFTER samples, then the
        // new level is normal
        let scores: Vec<f64> = (200..220)
            .map(|i| m.observe(60 * i, if i < 205 { y(i) } else { 30.0 + y(i) - 10.0 }, Direction::Both, 0.0).unwrap().score)
            .collect();
        assert!(scores[..5].iter().all(|s| *s < 1.0), "{scores:?}");
        let relevel = crate::models::seasonal::RELEVEL_AFTER;
        assert!(scores[5..5 + relevel].iter().all(|s| *s > 1.0), "{scores:?}");
        assert!(scores[5 + relevel..].iter().all(|s| *s < 1.0), "{scores:?}");
        // any step ahead, and a refit only by cadence
        assert!((m.predict(60 * 219 + 3600).unwrap().0 - 30.0).abs() < 1.0);
        assert!(!m.needs_fit(60 * 219, 6 * 3600, 24 * 3600), "an online model has no path to run out of");
        assert!(m.needs_fit(60 * 199 + 6 * 3600, 6 * 3600, 0));
        // a gap of three steps: scored three steps ahead
        assert!(m.observe(60 * 223, 30.0, Direction::Both, 0.0).is_some());
    }

    #[test]
    fn refit_due_by_cadence_or_path_end() {
        let mut m = SeriesModel::new(60, 100);
        assert!(m.needs_fit(0, 3600, 0));
        m.push(0, 1.0);
        m.set_fit(0, Fit::Path(path(10, 1.0)));
        assert!(!m.needs_fit(300, 3600, 0));
        assert!(m.needs_fit(300, 300, 0), "refit cadence reached");
        assert!(m.needs_fit(300, 3600, 600), "path too short for the horizons");
        assert!(m.observe(660, 1.0, Direction::Both, 0.0).is_none(), "beyond the path");
    }
}

//! The online seasonal model: a level, a season (one value per phase) and a spread (per part of
//! the season), each updated with every sample at O(1) cost.
//!
//! The prediction for a sample is `level + season[phase]`; the band is `z` standard deviations
//! on each side, the standard deviation estimated from the mean absolute residual of that part of
//! the season (busy hours are noisier than quiet ones). It is Holt-Winters' additive model
//! without a trend, with three changes for anomaly detection:
//!
//! - **Incidents do not teach it.** A residual enters the level and the season clipped to
//!   [`LEARN_CLIP`] standard deviations, and the spread clipped to [`SPREAD_CLIP`]: a spike moves
//!   nothing much, and an incident cannot widen the band for the days after it.
//! - **A lasting change of level is learned at once.** After [`RELEVEL_AFTER`] consecutive
//!   samples outside the band on the same side, the level restarts at their median (less the
//!   season): the new level is normal from then on, instead of a band that stays exceeded for hours (the
//!   first samples of the change are the anomaly; what follows is the new normal).
//! - **Phases are bucketed** to at most [`MAX_BUCKETS`] per season, so a weekly season at
//!   30-second steps costs the same memory as a daily one at five minutes.

use super::online::Run;

/// Level learning rate per sample.
const ALPHA: f64 = 0.1;
/// Season learning rate per visit of a phase bucket.
const GAMMA: f64 = 0.2;
/// Spread learning rate per visit of a spread bucket.
const BETA: f64 = 0.05;
/// Residuals enter the level and the season clipped to this many standard deviations.
const LEARN_CLIP: f64 = 2.0;
/// Residuals enter the spread clipped to this many standard deviations.
const SPREAD_CLIP: f64 = 3.0;
/// Consecutive samples outside the band on one side after which the level moves to them.
pub(crate) const RELEVEL_AFTER: usize = 6;
/// Most phase buckets per season.
pub(crate) const MAX_BUCKETS: usize = 512;
/// Parts of the season with their own spread (hours of a daily season).
const SPREAD_BUCKETS: usize = 24;
/// Standard deviations per mean absolute deviation, for normal residuals: √(π/2).
const SIGMA_PER_MAD: f64 = 1.253_314_137_315_500_3;

/// One series' online seasonal state.
#[derive(Clone, Debug)]
pub(crate) struct Seasonal {
    /// Steps per season; 0 without one.
    period: usize,
    /// Steps per phase bucket.
    per_bucket: usize,
    level: f64,
    /// Per phase bucket; empty without a season.
    season: Vec<f64>,
    /// Mean absolute residual, per spread bucket (one without a season).
    spread: Vec<f64>,
    /// The smallest spread: a flat line still has a band.
    floor: f64,
    /// Standard deviations from the prediction to the band's edge.
    z: f64,
    run: Run,
}

impl Seasonal {
    /// A model with a season of `period` steps (0: none), first estimated from `y` (see
    /// [`Self::initialise`]), whose first sample is step number `first` (Unix time over step:
    /// phases follow the clock, not the history). It has learned none of `y` yet.
    pub(crate) fn new(y: &[f64], first: i64, period: usize, z: f64, floor: f64) -> Self {
        let period = if period >= 2 && y.len() >= 2 * period { period } else { 0 };
        let per_bucket = period.div_ceil(MAX_BUCKETS).max(1);
        let buckets = period.div_ceil(per_bucket);
        let mut model = Self {
            period,
            per_bucket,
            level: 0.0,
            season: vec![0.0; buckets],
            spread: vec![0.0; if period > 0 { SPREAD_BUCKETS.min(period) } else { 1 }],
            floor: floor.max(f64::MIN_POSITIVE),
            z,
            run: Run::default(),
        };
        model.initialise(y, first);
        model
    }

    /// [`Self::new`], then learns `y`.
    #[cfg(test)]
    pub(crate) fn train(y: &[f64], first: i64, period: usize, z: f64, floor: f64) -> Self {
        let mut model = Self::new(y, first, period, z, floor);
        for (i, &v) in y.iter().enumerate() {
            model.update(first + i as i64, v);
        }
        model
    }

    /// A first estimate from the whole history: the season is each bucket's median offset from
    /// its period's mean, the level the first period's mean (without a season, the median of the
    /// first 50 values), the spread the mean absolute residual of that fit per spread bucket.
    fn initialise(&mut self, y: &[f64], first: i64) {
        if y.is_empty() {
            return;
        }
        // What each sample is measured against before the season: its period's mean, or the level.
        let baseline: Vec<f64> = if self.period > 0 {
            let mut offsets: Vec<Vec<f64>> = vec![Vec::new(); self.season.len()];
            let mut baseline = Vec::with_capacity(y.len());
            for (c, cycle) in y.chunks(self.period).enumerate() {
                let mean = cycle.iter().sum::<f64>() / cycle.len() as f64;
                baseline.extend(std::iter::repeat_n(mean, cycle.len()));
                if cycle.len() == self.period {
                    for (i, v) in cycle.iter().enumerate() {
                        offsets[self.bucket(first + (c * self.period + i) as i64)].push(v - mean);
                    }
                }
            }
            for (s, o) in self.season.iter_mut().zip(&mut offsets) {
                *s = median(o);
            }
            self.level = baseline[0];
            baseline
        } else {
            self.level = median(&mut y[..y.len().min(50)].to_vec());
            vec![self.level; y.len()]
        };
        let mut sums = vec![(0.0, 0usize); self.spread.len()];
        for (i, (v, base)) in y.iter().zip(&baseline).enumerate() {
            let index = first + i as i64;
            let b = self.spread_bucket(index);
            sums[b].0 += (v - base - self.seasonal(index)).abs();
            sums[b].1 += 1;
        }
        let overall = sums.iter().map(|s| s.0).sum::<f64>() / y.len() as f64;
        for (s, (sum, n)) in self.spread.iter_mut().zip(sums) {
            *s = if n > 0 { sum / n as f64 } else { overall };
        }
    }

    fn phase(&self, index: i64) -> usize {
        index.rem_euclid(self.period.max(1) as i64) as usize
    }

    fn bucket(&self, index: i64) -> usize {
        self.phase(index) / self.per_bucket
    }

    fn spread_bucket(&self, index: i64) -> usize {
        self.phase(index) * self.spread.len() / self.period.max(1)
    }

    fn seasonal(&self, index: i64) -> f64 {
        if self.period == 0 {
            0.0
        } else {
            self.season[self.bucket(index)]
        }
    }

    /// The standard deviation of a residual at step `index`.
    fn sigma(&self, index: i64) -> f64 {
        SIGMA_PER_MAD * self.spread[self.spread_bucket(index)].max(self.floor)
    }

    /// The prediction and band for step `index`, `ahead` steps after the newest sample learned.
    pub(crate) fn predict(&self, index: i64, ahead: usize) -> (f64, f64, f64) {
        let yhat = self.level + self.seasonal(index);
        // The level's error grows with the steps it has not been corrected for.
        let widening = (1.0 + ALPHA * ALPHA * ahead.saturating_sub(1) as f64).sqrt();
        let half = self.z * self.sigma(index) * widening;
        (yhat, yhat - half, yhat + half)
    }

    /// Learns sample `y` at step `index`.
    pub(crate) fn update(&mut self, index: i64, y: f64) {
        let sigma = self.sigma(index);
        let residual = y - self.level - self.seasonal(index);
        if !residual.is_finite() {
            return;
        }
        if let Some(mut run) = self.run.push(y - self.seasonal(index), residual, self.z * sigma, RELEVEL_AFTER) {
            self.level = median(&mut run);
            return;
        }
        let learned = residual.clamp(-LEARN_CLIP * sigma, LEARN_CLIP * sigma);
        self.level += ALPHA * learned;
        if self.period > 0 {
            let b = self.bucket(index);
            self.season[b] += GAMMA * (1.0 - ALPHA) * learned;
        }
        let b = self.spread_bucket(index);
        let clipped = residual.abs().min(SPREAD_CLIP * sigma);
        self.spread[b] += BETA * (clipped - self.spread[b]);
    }

    /// Steps per season (0 without one).
    pub(crate) fn period(&self) -> usize {
        self.period
    }

    /// Bytes of state.
    pub(crate) fn state_bytes(&self) -> usize {
        std::mem::size_of::<Self>() + 8 * (self.season.capacity() + self.spread.capacity()) + self.run.state_bytes()
    }
}

/// The median of `values` (reorders them); 0 for none.
pub(crate) fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mid = values.len() / 2;
    *values.select_nth_unstable_by(mid, f64::total_cmp).1
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::testing::noise;

    const Z: f64 = 3.0;

    /// Scores `y[from..]` one step ahead after training on `y[..from]`: (yhat, lower, upper) each.
    fn run(y: &[f64], from: usize, period: usize) -> (Seasonal, Vec<(f64, f64, f64)>) {
        let mut m = Seasonal::train(&y[..from], 0, period, Z, 1e-9);
        let mut out = Vec::new();
        for (i, &v) in y.iter().enumerate().skip(from) {
            out.push(m.predict(i as i64, 1));
            m.update(i as i64, v);
        }
        (m, out)
    }

    fn outside(y: f64, (_, lower, upper): (f64, f64, f64)) -> bool {
        y < lower || y > upper
    }

    #[test]
    fn a_flat_line_is_predicted_exactly_with_the_floor_as_band() {
        let y = vec![7.0; 100];
        let (_, out) = run(&y, 50, 0);
        for p in out {
            assert_eq!(p.0, 7.0);
            assert!((p.2 - 7.0 - Z * SIGMA_PER_MAD * 1e-9).abs() < 1e-15, "{p:?}");
        }
    }

    #[test]
    fn a_season_is_learned_per_phase() {
        // period 24: 0 for 12 steps, 10 for 12 steps, no noise; trained on two periods
        let y: Vec<f64> = (0..24 * 6).map(|i| if i % 24 < 12 { 0.0 } else { 10.0 }).collect();
        let (m, out) = run(&y, 48, 24);
        assert_eq!(m.period(), 24);
        for (k, p) in out.iter().enumerate() {
            let i = 48 + k;
            assert!((p.0 - y[i]).abs() < 1e-9, "step {i}: {p:?}");
        }
    }

    #[test]
    fn a_spike_scores_and_teaches_little() {
        let y: Vec<f64> = (0..200).map(|i| 100.0 + noise(i)).collect();
        let mut m = Seasonal::train(&y, 0, 0, Z, 1e-9);
        let before = m.predict(200, 1);
        assert!((before.0 - 100.0).abs() < 0.3, "{before:?}");
        // noise uniform in [-1, 1]: mean absolute deviation 0.5, σ ≈ 0.627, band ≈ ±1.9
        assert!((1.5..2.5).contains(&(before.2 - before.0)), "{before:?}");
        assert!(outside(150.0, before));
        m.update(200, 150.0);
        let after = m.predict(201, 1);
        // the level moved by at most ALPHA · LEARN_CLIP σ
        assert!((after.0 - before.0).abs() <= ALPHA * LEARN_CLIP * SIGMA_PER_MAD * 0.6, "{before:?} → {after:?}");
        // and the spread by at most BETA · SPREAD_CLIP σ
        assert!((after.2 - after.0) < 1.2 * (before.2 - before.0), "{before:?} → {after:?}");
    }

    #[test]
    fn a_step_is_anomalous_for_relevel_after_samples_then_normal() {
        let y: Vec<f64> = (0..300).map(|i| if i < 200 { 10.0 } else { 30.0 } + 0.5 * noise(i)).collect();
        let (_, out) = run(&y, 100, 0);
        let flagged: Vec<usize> = out.iter().enumerate().filter(|(k, p)| outside(y[100 + k], **p)).map(|(k, _)| 100 + k).collect();
        assert_eq!(flagged, (200..200 + RELEVEL_AFTER).collect::<Vec<_>>());
    }

    #[test]
    fn a_slow_drift_is_followed() {
        // 0.01 per step over 1,000 steps, noise ±0.5: never outside a 3σ band
        let y: Vec<f64> = (0..1200).map(|i| 0.01 * i as f64 + 0.5 * noise(i)).collect();
        let (_, out) = run(&y, 200, 0);
        let flagged = out.iter().enumerate().filter(|(k, p)| outside(y[200 + k], **p)).count();
        assert!(flagged <= 3, "{flagged} of 1,000 drift samples flagged");
    }

    #[test]
    fn phases_follow_the_clock_and_are_bucketed() {
        // a weekly season at 30-second steps: 20,160 steps in 512 buckets of 40 steps
        let period = 7 * 2880;
        let y: Vec<f64> = (0..3 * period).map(|i| ((i / 2880) % 7) as f64).collect();
        let m = Seasonal::train(&y, 0, period, Z, 1e-9);
        assert_eq!((m.season.len(), m.per_bucket), (504, 40));
        assert!(m.state_bytes() < 5000, "{} bytes", m.state_bytes());
        // trained from step 0 or from a later step, the prediction for a step is the same day's
        assert!((m.predict(3 * period as i64 + 3 * 2880 + 5, 1).0 - 3.0).abs() < 1e-6);
        let late = Seasonal::train(&y[2880..], 2880, period, Z, 1e-9);
        assert!((late.predict(3 * period as i64 + 3 * 2880 + 5, 1).0 - 3.0).abs() < 1e-6);
    }

    #[test]
    fn after_a_gap_the_phase_is_the_clock_s_and_the_band_widens() {
        // period 4: 0, 10, 20, 30; trained on three periods, no noise
        let y: Vec<f64> = (0..12).map(|i| 10.0 * (i % 4) as f64).collect();
        let m = Seasonal::train(&y, 0, 4, Z, 1e-9);
        let one = m.predict(13, 1);
        // five steps missing: step 17 has phase 1, like step 13; the level has gone uncorrected for
        // five more steps, so the band is √(1 + 5 α²) as wide
        let later = m.predict(17, 6);
        assert!((one.0 - 10.0).abs() < 1e-9 && (later.0 - 10.0).abs() < 1e-9, "{one:?} {later:?}");
        let ratio = (later.2 - later.0) / (one.2 - one.0);
        assert!((ratio - (1.0 + 5.0 * ALPHA * ALPHA).sqrt()).abs() < 1e-6, "{ratio}");
    }

    #[test]
    fn too_short_a_history_for_the_season_gives_none() {
        let y = vec![1.0; 47];
        assert_eq!(Seasonal::train(&y, 0, 24, Z, 1e-9).period(), 0);
    }
}

//! Rolling-window detectors: z-score (mean and standard deviation), median and MAD, and
//! quartiles (IQR), over the last `window` samples.
//!
//! The band is `z` standard deviations on each side (`z` from the rule's `band` level), each
//! detector estimating the deviation its own way: the sample standard deviation, 1.4826 MADs,
//! or for the IQR Tukey's fences `Q1 − k·IQR` and `Q3 + k·IQR` with `k = (z − 0.6745) / 1.349`,
//! which for normal data puts the fence at `z` standard deviations (Tukey's 1.5 is `z` = 2.7,
//! a band of 0.993).
//!
//! As in the seasonal model, incidents do not teach: a sample outside the band enters the window
//! at the band's edge, and after [`RELEVEL_AFTER`] samples in a row outside it on the same side
//! the window restarts from them, so a lasting new level is normal from then on.
//!
//! The window is kept twice, in arrival order and sorted: `16 · window` bytes. The z-score keeps
//! running sums (O(1) per sample); the median and quartiles are read from the sorted copy, which
//! takes a binary search and a move of up to `window` values per sample, and the MAD a walk of
//! half the window.

use std::collections::VecDeque;

use super::online::Run;
use super::seasonal::RELEVEL_AFTER;

/// Standard deviations per median absolute deviation, for normal data.
const SIGMA_PER_MAD: f64 = 1.4826;
/// The interquartile range of a standard normal.
const NORMAL_IQR: f64 = 1.349;
/// Its upper quartile.
const NORMAL_Q3: f64 = 0.6745;

/// Which statistic a rolling detector uses.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Statistic {
    /// Mean and standard deviation.
    Zscore,
    /// Median and median absolute deviation.
    Mad,
    /// Median and quartiles.
    Iqr,
}

/// One series' rolling window.
#[derive(Clone, Debug)]
pub(crate) struct Rolling {
    statistic: Statistic,
    window: usize,
    z: f64,
    floor: f64,
    values: VecDeque<f64>,
    sorted: Vec<f64>,
    /// Sums of the window's values less `shift` (near their mean, so that the variance of
    /// large values does not cancel out), recomputed every `window` samples against rounding
    /// drift.
    sum: f64,
    sum_squares: f64,
    shift: f64,
    since_exact: usize,
    run: Run,
}

impl Rolling {
    /// An empty detector over `window` samples.
    pub(crate) fn new(statistic: Statistic, window: usize, z: f64, floor: f64) -> Self {
        let window = window.max(2);
        Self {
            statistic,
            window,
            z,
            floor: floor.max(f64::MIN_POSITIVE),
            values: VecDeque::with_capacity(window),
            sorted: Vec::with_capacity(window),
            sum: 0.0,
            sum_squares: 0.0,
            shift: 0.0,
            since_exact: 0,
            run: Run::default(),
        }
    }

    /// [`Self::new`], then learns `y`.
    #[cfg(test)]
    pub(crate) fn train(statistic: Statistic, y: &[f64], window: usize, z: f64, floor: f64) -> Self {
        let mut model = Self::new(statistic, window, z, floor);
        y.iter().for_each(|v| model.update(*v));
        model
    }

    /// The prediction and band for the next sample.
    pub(crate) fn predict(&self) -> (f64, f64, f64) {
        let n = self.values.len();
        if n == 0 {
            return (0.0, -self.floor, self.floor);
        }
        match self.statistic {
            Statistic::Zscore => {
                let offset = self.sum / n as f64;
                let mean = self.shift + offset;
                let variance = (self.sum_squares / n as f64 - offset * offset).max(0.0);
                let half = self.z * variance.sqrt().max(self.floor);
                (mean, mean - half, mean + half)
            }
            Statistic::Mad => {
                let median = self.quantile(0.5);
                let half = self.z * (SIGMA_PER_MAD * self.mad(median)).max(self.floor);
                (median, median - half, median + half)
            }
            Statistic::Iqr => {
                let (q1, median, q3) = (self.quantile(0.25), self.quantile(0.5), self.quantile(0.75));
                let k = ((self.z - NORMAL_Q3) / NORMAL_IQR).max(0.0);
                let iqr = (q3 - q1).max(NORMAL_IQR * self.floor);
                (median, (q1 - k * iqr).min(median - self.z * self.floor), (q3 + k * iqr).max(median + self.z * self.floor))
            }
        }
    }

    /// Learns sample `y`.
    pub(crate) fn update(&mut self, y: f64) {
        if !y.is_finite() {
            return;
        }
        if self.values.len() < self.window.min(10) {
            self.insert(y);
            return;
        }
        let (yhat, lower, upper) = self.predict();
        let half = if y >= yhat { upper - yhat } else { yhat - lower };
        if let Some(run) = self.run.push(y, y - yhat, half, RELEVEL_AFTER) {
            self.values.clear();
            self.sorted.clear();
            (self.sum, self.sum_squares, self.since_exact) = (0.0, 0.0, 0);
            run.into_iter().for_each(|v| self.insert(v));
            return;
        }
        self.insert(y.clamp(lower, upper));
    }

    fn insert(&mut self, y: f64) {
        if self.values.len() == self.window {
            if let Some(old) = self.values.pop_front() {
                let at = self.sorted.partition_point(|v| *v < old);
                self.sorted.remove(at);
                self.sum -= old - self.shift;
                self.sum_squares -= (old - self.shift) * (old - self.shift);
            }
        }
        self.values.push_back(y);
        let at = self.sorted.partition_point(|v| *v < y);
        self.sorted.insert(at, y);
        if self.values.len() == 1 {
            self.shift = y;
        }
        self.sum += y - self.shift;
        self.sum_squares += (y - self.shift) * (y - self.shift);
        self.since_exact += 1;
        if self.since_exact >= self.window {
            self.since_exact = 0;
            self.shift = self.values.iter().sum::<f64>() / self.values.len() as f64;
            self.sum = self.values.iter().map(|v| v - self.shift).sum();
            self.sum_squares = self.values.iter().map(|v| (v - self.shift) * (v - self.shift)).sum();
        }
    }

    /// The `q` quantile of the window (linear between ranks).
    fn quantile(&self, q: f64) -> f64 {
        let rank = q * (self.sorted.len() - 1) as f64;
        let (below, above) = (rank.floor() as usize, rank.ceil() as usize);
        let frac = rank - below as f64;
        self.sorted[below] * (1.0 - frac) + self.sorted[above] * frac
    }

    /// The median absolute deviation from `median`: a merge walking outwards from the median.
    fn mad(&self, median: f64) -> f64 {
        let s = &self.sorted;
        let mut below = s.partition_point(|v| *v < median);
        let mut above = below;
        let wanted = s.len() / 2 + 1;
        let mut last = 0.0;
        for _ in 0..wanted {
            let down = below.checked_sub(1).map(|i| median - s[i]);
            let up = s.get(above).map(|v| v - median);
            last = match (down, up) {
                (Some(d), Some(u)) if d <= u => {
                    below -= 1;
                    d
                }
                (_, Some(u)) => {
                    above += 1;
                    u
                }
                (Some(d), None) => {
                    below -= 1;
                    d
                }
                (None, None) => break,
            };
        }
        last
    }

    /// Bytes of state.
    pub(crate) fn state_bytes(&self) -> usize {
        std::mem::size_of::<Self>() + 8 * (self.values.capacity() + self.sorted.capacity()) + self.run.state_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_statistics() {
        // window 1..=9 (no clipping: each sample joins while the window fills to 10)
        let y: Vec<f64> = (1..=9).map(f64::from).collect();
        let z = |s| Rolling::train(s, &y, 9, 2.0, 1e-9);
        // mean 5, population variance 60/9
        let (mean, lower, upper) = z(Statistic::Zscore).predict();
        let sd = (60.0f64 / 9.0).sqrt();
        assert_eq!(mean, 5.0);
        assert!((upper - 5.0 - 2.0 * sd).abs() < 1e-12 && (5.0 - lower - 2.0 * sd).abs() < 1e-12);
        // median 5, absolute deviations 0,1,1,2,2,3,3,4,4: MAD 2
        let (median, _, upper) = z(Statistic::Mad).predict();
        assert_eq!(median, 5.0);
        assert!((upper - 5.0 - 2.0 * SIGMA_PER_MAD * 2.0).abs() < 1e-12);
        // quartiles 3 and 7: IQR 4, k = (2 − 0.6745) / 1.349
        let (median, lower, upper) = z(Statistic::Iqr).predict();
        let k = (2.0 - NORMAL_Q3) / NORMAL_IQR;
        assert_eq!(median, 5.0);
        assert!((upper - 7.0 - 4.0 * k).abs() < 1e-12 && (3.0 - 4.0 * k - lower).abs() < 1e-12);
    }

    #[test]
    fn the_window_slides() {
        let mut r = Rolling::train(Statistic::Mad, &[5.0; 10], 10, 3.0, 1e-6);
        assert_eq!(r.predict().0, 5.0);
        // a constant window has no spread: the band is the floor, ±3e-6; ten samples inside it
        // replace the window
        for _ in 0..10 {
            r.update(5.0 + 1e-6);
        }
        assert!((r.predict().0 - (5.0 + 1e-6)).abs() < 1e-12, "{:?}", r.predict());
    }

    #[test]
    fn a_spike_enters_at_the_band_edge_and_a_step_restarts_the_window() {
        for statistic in [Statistic::Zscore, Statistic::Mad, Statistic::Iqr] {
            let base: Vec<f64> = (0..100).map(|i| 10.0 + if i % 2 == 0 { 0.5 } else { -0.5 }).collect();
            let mut r = Rolling::train(statistic, &base, 50, 3.0, 1e-9);
            let (_, _, upper) = r.predict();
            r.update(1000.0);
            assert!(r.values.back().copied().unwrap() <= upper + 1e-12, "{statistic:?}: the spike entered at full weight");
            for v in [10.5, 9.5] {
                r.update(v);
            }
            // a step to 50: outside for RELEVEL_AFTER samples, then normal
            let mut outside = 0;
            for _ in 0..20 {
                let (_, lower, upper) = r.predict();
                if !(lower..=upper).contains(&50.0) {
                    outside += 1;
                }
                r.update(50.0);
            }
            assert_eq!(outside, RELEVEL_AFTER, "{statistic:?}");
            assert!((r.predict().0 - 50.0).abs() < 1e-9, "{statistic:?}: {:?}", r.predict());
        }
    }

    #[test]
    fn a_slow_drift_stays_inside_the_band() {
        // 0.001 per step, noise ±0.5: the window's median lags the drift by half a window (0.05),
        // far inside a band of 3 standard deviations
        for statistic in [Statistic::Zscore, Statistic::Mad, Statistic::Iqr] {
            let y = |i: usize| 0.001 * i as f64 + 0.5 * crate::models::testing::noise(i);
            let mut r = Rolling::new(statistic, 100, 3.0, 1e-9);
            let mut outside = 0;
            for i in 0..3000 {
                let (_, lower, upper) = r.predict();
                if i >= 100 && !(lower..=upper).contains(&y(i)) {
                    outside += 1;
                }
                r.update(y(i));
            }
            assert_eq!(outside, 0, "{statistic:?}");
        }
    }

    #[test]
    fn the_variance_of_large_values_does_not_cancel_out() {
        // 1e12 ± 1: sums of squares near 1e24 would leave nothing of a variance of 1
        let y: Vec<f64> = (0..5000).map(|i| 1e12 + if i % 2 == 0 { 1.0 } else { -1.0 }).collect();
        let r = Rolling::train(Statistic::Zscore, &y, 100, 3.0, 1e-9);
        let (mean, _, upper) = r.predict();
        assert!((mean - 1e12).abs() < 1e-3, "{mean}");
        assert!((upper - mean - 3.0).abs() < 1e-3, "{}", upper - mean);
    }

    #[test]
    fn state_is_sixteen_bytes_a_sample() {
        let r = Rolling::train(Statistic::Iqr, &[1.0; 500], 288, 3.0, 1e-9);
        assert!(r.state_bytes() < 16 * 288 + 400, "{}", r.state_bytes());
    }
}

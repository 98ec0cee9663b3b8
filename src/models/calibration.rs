//! Online calibration of a band's width from the deviations a series actually showed.
//!
//! A fit's band comes from its in-sample residuals, which understate its errors out of sample
//! (MSTL's seasonal component absorbs part of the noise it is fitted on). Every scored
//! observation records its deviation relative to the band's half-width on its side; once enough
//! are recorded, the band is scaled by their `level` quantile when that exceeds 1, so that about
//! `level` of recent observations fall inside it, as the band promises. The band is never
//! narrowed below the fit's own, and never widened more than [`MAX_SCALE`] times. Deviations
//! beyond [`LEARN_LIMIT`] times the current band are anomalies, not noise, and are not recorded:
//! at a 0.99 level a dozen of them would otherwise set the quantile, and every incident would
//! blind the series for the length of the window.

use std::collections::VecDeque;

/// Recent deviations kept.
const WINDOW: usize = 1000;
/// Deviations needed before the band is scaled.
const MIN_RECORDED: usize = 100;
/// The scale is recomputed every this many records.
const EVERY: usize = 10;
/// Deviations beyond this many current band half-widths are not learned.
const LEARN_LIMIT: f64 = 3.0;
/// The widest the band is scaled.
pub(crate) const MAX_SCALE: f64 = 10.0;

/// The scale of one series' band.
#[derive(Clone, Debug)]
pub(crate) struct Calibration {
    level: f64,
    ratios: VecDeque<f64>,
    scale: f64,
    since: usize,
}

impl Calibration {
    /// Calibrates a band meant to hold `level` of the observations.
    pub(crate) fn new(level: f64) -> Self {
        Self { level, ratios: VecDeque::with_capacity(WINDOW), scale: 1.0, since: 0 }
    }

    /// The factor the fit's half-widths are multiplied by (at least 1).
    pub(crate) fn scale(&self) -> f64 {
        self.scale
    }

    /// Records a deviation from the prediction, with the fit's own (unscaled) half-width on
    /// the deviation's side.
    pub(crate) fn record(&mut self, deviation: f64, half_width: f64) {
        let ratio = deviation.abs() / half_width;
        // NaN-safe: a zero or tiny half-width gives an infinite or huge ratio, skipped here
        if !(half_width > 0.0 && ratio.is_finite() && ratio <= LEARN_LIMIT * self.scale) {
            return;
        }
        if self.ratios.len() == WINDOW {
            self.ratios.pop_front();
        }
        self.ratios.push_back(ratio);
        self.since += 1;
        if self.ratios.len() >= MIN_RECORDED && self.since >= EVERY {
            self.since = 0;
            let mut ratios: Vec<f64> = self.ratios.iter().copied().collect();
            self.scale = super::fit::quantile(&mut ratios, self.level).clamp(1.0, MAX_SCALE);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scales_to_the_level_quantile_of_recent_deviations() {
        let mut c = Calibration::new(0.9);
        // 0.1, 0.2, ..., 2.0 five times over: 100 records, their 0.9 quantile is 1.8
        for _ in 0..5 {
            for i in 1..=20 {
                c.record(i as f64 / 10.0, 1.0);
            }
        }
        assert_eq!(c.scale(), 1.8);
        // the half-width is the unit: the same deviations against a band of 2 are half as large
        let mut c = Calibration::new(0.9);
        for _ in 0..5 {
            for i in 1..=20 {
                c.record(-(i as f64) / 5.0, 2.0);
            }
        }
        assert_eq!(c.scale(), 1.8);
    }

    #[test]
    fn needs_enough_records_and_never_narrows() {
        let mut c = Calibration::new(0.95);
        for _ in 0..99 {
            c.record(2.0, 1.0);
        }
        assert_eq!(c.scale(), 1.0, "99 records are not enough");
        let mut c = Calibration::new(0.95);
        for _ in 0..500 {
            c.record(0.2, 1.0);
        }
        assert_eq!(c.scale(), 1.0, "a band wider than needed stays as fitted");
    }

    #[test]
    fn anomalies_are_not_learned() {
        let mut c = Calibration::new(0.99);
        for i in 0..1000 {
            c.record(if i % 2 == 0 { 0.5 } else { 1.2 }, 1.0);
        }
        assert_eq!(c.scale(), 1.2);
        // a 20-sample incident at 10 times the band: at 0.99, 11 records would set the quantile
        for _ in 0..20 {
            c.record(10.0, 1.0);
        }
        assert_eq!(c.scale(), 1.2);
    }

    #[test]
    fn grows_step_by_step_and_stays_bounded() {
        // a band far too narrow: each recomputation may learn up to 3 times the current scale
        let mut c = Calibration::new(0.9);
        let mut scales = Vec::new();
        for _ in 0..300 {
            c.record(50.0, 1.0);
            scales.push(c.scale());
        }
        assert!(scales.iter().all(|s| *s == 1.0), "deviations 50 times the band are anomalies, not noise");
        let mut c = Calibration::new(0.9);
        for i in 0..3000 {
            c.record(2.5 + (i % 10) as f64 * 0.5, 1.0);
        }
        assert_eq!(c.scale(), 6.5);
        for _ in 0..3000 {
            c.record(15.0, 1.0);
        }
        assert_eq!(c.scale(), MAX_SCALE);
    }

    #[test]
    fn degenerate_half_widths_are_ignored() {
        let mut c = Calibration::new(0.9);
        for _ in 0..500 {
            c.record(1.0, f64::MIN_POSITIVE);
            c.record(1.0, 0.0);
            c.record(f64::NAN, 1.0);
        }
        assert_eq!(c.scale(), 1.0);
    }
}

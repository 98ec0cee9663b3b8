//! Online calibration of a band's width from the deviations a series actually showed.
//!
//! A fit's band comes from its in-sample residuals, which understate its errors out of sample
//! (MSTL's seasonal component absorbs part of the noise it is fitted on). Every scored
//! observation records its deviation relative to the band's half-width on its side; once enough
//! are recorded, the band is scaled by their `level` quantile when that exceeds 1, so that about
//! `level` of recent observations fall inside it, as the band promises. Anomalies are rare, so
//! they barely move that quantile; the band is never narrowed below the fit's own.

use std::collections::VecDeque;

/// Recent deviations kept.
const WINDOW: usize = 1000;
/// Deviations needed before the band is scaled.
const MIN_RECORDED: usize = 100;
/// The scale is recomputed every this many records.
const EVERY: usize = 10;

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

    /// Records a deviation as a multiple of the fit's (unscaled) half-width on its side.
    pub(crate) fn record(&mut self, ratio: f64) {
        if !ratio.is_finite() {
            return;
        }
        if self.ratios.len() == WINDOW {
            self.ratios.pop_front();
        }
        self.ratios.push_back(ratio);
        self.since += 1;
        if self.ratios.len() >= MIN_RECORDED && self.since >= EVERY {
            self.since = 0;
            let mut sorted: Vec<f64> = self.ratios.iter().copied().collect();
            let rank = ((sorted.len() - 1) as f64 * self.level).round() as usize;
            let (_, q, _) = sorted.select_nth_unstable_by(rank, f64::total_cmp);
            self.scale = q.max(1.0);
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
                c.record(i as f64 / 10.0);
            }
        }
        assert_eq!(c.scale(), 1.8);
    }

    #[test]
    fn needs_enough_records_and_never_narrows() {
        let mut c = Calibration::new(0.95);
        for _ in 0..99 {
            c.record(5.0);
        }
        assert_eq!(c.scale(), 1.0, "99 records are not enough");
        let mut c = Calibration::new(0.95);
        for _ in 0..500 {
            c.record(0.2);
        }
        assert_eq!(c.scale(), 1.0, "a band wider than needed stays as fitted");
    }

    #[test]
    fn a_short_anomaly_barely_moves_it() {
        let mut c = Calibration::new(0.95);
        for i in 0..1000 {
            c.record(if i % 2 == 0 { 0.5 } else { 1.2 });
        }
        let before = c.scale();
        for _ in 0..20 {
            c.record(50.0);
        }
        assert_eq!(before, 1.2);
        assert_eq!(c.scale(), 1.2, "20 anomalous points of 1000 stay above the 95% quantile");
    }
}

//! Window-level detection counts, and precision, recall and F1 over them: coarser than NAB's
//! score, which also weighs how early a window is detected and how far a false positive lies.
//!
//! A window is detected (tp) if any scored row in it reaches the threshold and missed (fn_)
//! otherwise. Detections outside every window are grouped into runs of consecutive rows, and
//! each run is one false positive (fp): a long alert counts once, as one page would. Rows in the
//! probationary period are ignored, and so are windows that lie entirely in it, as in NAB.

use std::ops::Add;

use super::sweep::{zones, Zone};
use super::{Error, FileResult, Window};

/// Detected windows, false-positive runs and missed windows, summable over files.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WindowCounts {
    /// Windows with at least one detection.
    pub tp: usize,
    /// Runs of consecutive detections outside every window.
    pub fp: usize,
    /// Windows without a detection.
    pub fn_: usize,
}

impl WindowCounts {
    /// Counts one file's windows and false-positive runs at `threshold` (score ≥ threshold).
    ///
    /// # Errors
    /// When the file's rows do not fit its windows (see [`Error`]).
    pub fn count(file: &FileResult, windows: &[Window], threshold: f64) -> Result<Self, Error> {
        let zones = zones(file, windows)?;
        // None: no scored row; Some(detected).
        let mut detected = vec![None; windows.len()];
        let mut counts = WindowCounts::default();
        let mut in_run = false;
        for (zone, &score) in zones.iter().zip(&file.scores) {
            let flagged = score >= threshold;
            match *zone {
                Zone::Probation => {}
                Zone::Inside { window, .. } => {
                    detected[window] = Some(flagged || detected[window] == Some(true));
                }
                Zone::Outside { .. } => {
                    if flagged && !in_run {
                        counts.fp += 1;
                    }
                }
            }
            in_run = flagged && matches!(zone, Zone::Outside { .. });
        }
        counts.tp = detected.iter().filter(|d| **d == Some(true)).count();
        counts.fn_ = detected.iter().filter(|d| **d == Some(false)).count();
        Ok(counts)
    }

    /// tp / (tp + fp), or 0 without detections.
    pub fn precision(&self) -> f64 {
        ratio(self.tp, self.tp + self.fp)
    }

    /// tp / (tp + fn_), or 0 without windows.
    pub fn recall(&self) -> f64 {
        ratio(self.tp, self.tp + self.fn_)
    }

    /// The harmonic mean of precision and recall, or 0 when both are 0.
    pub fn f1(&self) -> f64 {
        ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn_)
    }
}

fn ratio(part: usize, whole: usize) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

impl Add for WindowCounts {
    type Output = Self;

    fn add(self, other: Self) -> Self {
        WindowCounts { tp: self.tp + other.tp, fp: self.fp + other.fp, fn_: self.fn_ + other.fn_ }
    }
}

impl std::iter::Sum for WindowCounts {
    fn sum<I: Iterator<Item = Self>>(iter: I) -> Self {
        iter.fold(WindowCounts::default(), Add::add)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nab::fixtures::{assert_close, detections, window};

    #[test]
    fn counts_windows_and_false_positive_runs() {
        // 40 rows, rows 0..=5 probationary. Window 2..=4 lies in probation and is ignored.
        // Row 3: probation. Rows 8, 9: one run. Rows 12, 13: window 10..=14 detected.
        // Rows 17 and 19: two runs. Window 25..=29: missed.
        let file = detections("a/b.csv", 40, &[3, 8, 9, 12, 13, 17, 19]);
        let windows = [window(2, 4), window(10, 14), window(25, 29)];
        let counts = WindowCounts::count(&file, &windows, 0.5).unwrap();
        assert_eq!(counts, WindowCounts { tp: 1, fp: 3, fn_: 1 });
        assert_close(counts.precision(), 0.25); // 1/(1 + 3)
        assert_close(counts.recall(), 0.5); // 1/(1 + 1)
        assert_close(counts.f1(), 1.0 / 3.0); // 2·0.25·0.5/(0.25 + 0.5)
    }

    #[test]
    fn a_window_row_ends_a_run_and_counts_sum() {
        // Rows 9, 10 (window 10..=14) and 15: the window splits them into two runs.
        let file = detections("a/b.csv", 40, &[9, 10, 15]);
        let counts = WindowCounts::count(&file, &[window(10, 14)], 0.5).unwrap();
        assert_eq!(counts, WindowCounts { tp: 1, fp: 2, fn_: 0 });
        let total: WindowCounts = [counts, WindowCounts { tp: 0, fp: 0, fn_: 3 }].into_iter().sum();
        assert_eq!(total, WindowCounts { tp: 1, fp: 2, fn_: 3 });
        assert_eq!(WindowCounts::default().precision(), 0.0);
        assert_eq!(WindowCounts::default().f1(), 0.0);
    }
}

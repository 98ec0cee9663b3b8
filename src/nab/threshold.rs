//! NAB's threshold sweep (`Sweeper.calcScoreByThreshold`): the score with every distinct anomaly
//! score as threshold, and one file's score at a given threshold (`Sweeper.scoreDataSet`).
//!
//! A row is a detection when its anomaly score is at least the threshold. Each window counts
//! once: its best (earliest) detection, or -fn_weight without one. Every detection outside the
//! windows adds its own (negative) weight.

use std::cmp::Ordering;

use super::sweep::{zones, Zone};
use super::{Error, FileResult, Profile, Window};

/// The threshold NAB starts from: above every anomaly score, so nothing is detected.
const NO_DETECTION: f64 = 1.1;

/// A scored row as the sweep needs it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Candidate {
    pub(crate) anomaly: f64,
    /// Corpus-wide window number, `None` outside the windows.
    pub(crate) window: Option<usize>,
    pub(crate) weight: f64,
}

/// The scored rows of one file, skipping the probationary period; window numbers start at
/// `first_window`.
pub(crate) fn candidates(file: &FileResult, zones: &[Zone], profile: &Profile, first_window: usize) -> Vec<Candidate> {
    zones
        .iter()
        .zip(&file.scores)
        .filter(|(zone, _)| **zone != Zone::Probation)
        .map(|(&zone, &anomaly)| Candidate {
            anomaly,
            window: match zone {
                Zone::Inside { window, .. } => Some(first_window + window),
                _ => None,
            },
            weight: zone.weight(profile),
        })
        .collect()
}

/// Score and row counts with rows at or above `threshold` taken as detections.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct ThresholdScore {
    pub(crate) threshold: f64,
    pub(crate) score: f64,
    pub(crate) tp: usize,
    pub(crate) tn: usize,
    pub(crate) fp: usize,
    pub(crate) fn_: usize,
}

/// The score at [`NO_DETECTION`] and then at each distinct anomaly score, highest first.
///
/// `windows` bounds the window numbers. Only windows with a scored row count, as in NAB.
pub(crate) fn sweep_thresholds(mut rows: Vec<Candidate>, windows: usize, fn_weight: f64) -> Vec<ThresholdScore> {
    // Stable, like Python's sort: ties keep file order. NaN was rejected when zoning.
    rows.sort_by(|a, b| b.anomaly.partial_cmp(&a.anomaly).unwrap_or(Ordering::Equal));
    // NAB sums a dict of per-window parts in insertion order, i.e. in order of first appearance
    // in the sorted rows; summing the same way keeps ties between thresholds as NAB sees them.
    let mut order = Vec::new();
    let mut listed = vec![false; windows];
    for w in rows.iter().filter_map(|r| r.window) {
        if !listed[w] {
            listed[w] = true;
            order.push(w);
        }
    }
    let mut part = vec![-fn_weight; windows];
    let mut fp_part = 0.0;
    let total = |fp_part: f64, part: &[f64]| order.iter().fold(fp_part, |sum, &w| sum + part[w]);
    let inside = rows.iter().filter(|r| r.window.is_some()).count();
    let mut current = ThresholdScore { threshold: NO_DETECTION, score: 0.0, tp: 0, tn: rows.len() - inside, fp: 0, fn_: inside };
    let mut scores = Vec::new();
    for row in &rows {
        if row.anomaly != current.threshold {
            scores.push(ThresholdScore { score: total(fp_part, &part), ..current });
            current.threshold = row.anomaly;
        }
        match row.window {
            Some(w) => {
                current.tp += 1;
                current.fn_ -= 1;
                // The earliest detection has the highest weight: only it counts.
                part[w] = part[w].max(row.weight);
            }
            None => {
                current.fp += 1;
                current.tn -= 1;
                fp_part += row.weight;
            }
        }
    }
    scores.push(ThresholdScore { score: total(fp_part, &part), ..current });
    scores
}

/// The entry of a sweep that applies at `threshold`: the lowest swept threshold at or above it,
/// or no detection when `threshold` is above them all.
///
/// NAB has no answer (`None`) below the lowest anomaly score or above 1.1; all rows, or none,
/// are detections there, which is what this returns.
pub(crate) fn at_threshold(scores: &[ThresholdScore], threshold: f64) -> ThresholdScore {
    let applies = scores.iter().take_while(|s| s.threshold >= threshold).last();
    // A sweep always has its NO_DETECTION entry first.
    *applies.unwrap_or(&scores[0])
}

/// One file's NAB score at a threshold, with NAB's row counts (scored rows only).
#[derive(Clone, Debug, PartialEq)]
pub struct FileScore {
    /// The file's key, `category/file.csv`.
    pub key: String,
    /// Rows with an anomaly score at least this are detections.
    pub threshold: f64,
    /// The raw NAB score: window rewards and misses plus false-positive costs.
    pub raw: f64,
    /// Detected rows inside windows.
    pub tp: usize,
    /// Detected rows outside windows.
    pub fp: usize,
    /// Undetected rows inside windows.
    pub fn_: usize,
    /// Undetected rows outside windows.
    pub tn: usize,
}

impl FileScore {
    pub(crate) fn new(key: &str, threshold: f64, s: ThresholdScore) -> Self {
        FileScore { key: key.to_string(), threshold, raw: s.score, tp: s.tp, fp: s.fp, fn_: s.fn_, tn: s.tn }
    }
}

/// Scores one file at `threshold` under `profile`, as NAB's scoring step does.
///
/// # Errors
/// When the file's rows do not fit its windows (see [`Error`]).
pub fn score_file(file: &FileResult, windows: &[Window], profile: &Profile, threshold: f64) -> Result<FileScore, Error> {
    let zones = zones(file, windows)?;
    let sweep = sweep_thresholds(candidates(file, &zones, profile, 0), windows.len(), profile.fn_weight);
    Ok(FileScore::new(&file.key, threshold, at_threshold(&sweep, threshold)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nab::fixtures::{assert_close, detections, file, window};

    /// tanh(2.5): the scaled sigmoid at a window's first row, NAB's maxTP.
    fn max_tp() -> f64 {
        2.5f64.tanh()
    }

    #[test]
    fn standard_profile_by_detection_row() {
        struct Case {
            name: &'static str,
            rows: &'static [usize],
            raw: f64,
            tp: usize,
            fp: usize,
        }
        // 40 rows: rows 0..=5 are probationary (floor(0.15·40) = 6), 34 rows are scored.
        // One window, rows 10..=14: 5 rows. Standard profile: tp 1, fp 0.11, fn 1.
        // Scaled sigmoid S(x) = -tanh(2.5x); a detection at position p is worth S(p)/S(-1).
        let cases = [
            Case { name: "none: one missed window", rows: &[], raw: -1.0, tp: 0, fp: 0 },
            // Position -(14 - 10 + 1)/5 = -1: S(-1)/S(-1) = 1.
            Case { name: "at the start", rows: &[10], raw: 1.0, tp: 1, fp: 0 },
            // Position -(14 - 14 + 1)/5 = -0.2: tanh(0.5)/tanh(2.5) = 0.46212/0.98661 = 0.46839.
            Case { name: "at the end", rows: &[14], raw: 0.4683868439022782, tp: 1, fp: 0 },
            // No window before row 9: -0.11; the window is missed: -1.
            Case { name: "one row before the start", rows: &[9], raw: -1.11, tp: 0, fp: 1 },
            // |15 - 14|/(5 - 1) = 0.25: 0.11·S(0.25) = -0.11·tanh(0.625) = -0.06101; minus 1.
            Case { name: "one row after the end", rows: &[15], raw: -1.061005969458432, tp: 0, fp: 1 },
            // |26 - 14|/4 = 3: 0.11·S(3) = -0.11·tanh(7.5) = -0.10999993; minus 1.
            Case { name: "three window lengths after the end", rows: &[26], raw: -1.10999993270151, tp: 0, fp: 1 },
            // |30 - 14|/4 = 4 > 3: the full -0.11; minus 1.
            Case { name: "far after the end", rows: &[30], raw: -1.11, tp: 0, fp: 1 },
            // Positions -0.8 and -0.4: max(tanh(2), tanh(1))/tanh(2.5) = 0.96403/0.98661 = 0.97711.
            Case { name: "only the first detection", rows: &[11, 13], raw: 0.9771068409226047, tp: 2, fp: 0 },
            // Row 3 is probationary: not a false positive.
            Case { name: "in probation", rows: &[3], raw: -1.0, tp: 0, fp: 0 },
        ];
        for case in cases {
            let file = detections("a/b.csv", 40, case.rows);
            let score = score_file(&file, &[window(10, 14)], &Profile::STANDARD, 0.5).unwrap();
            assert!((score.raw - case.raw).abs() < 1e-12, "{}: {} != {}", case.name, score.raw, case.raw);
            // 5 scored rows inside the window, 29 outside.
            assert_eq!((score.tp, score.fp, score.fn_, score.tn), (case.tp, case.fp, 5 - case.tp, 29 - case.fp), "{}", case.name);
        }
    }

    #[test]
    fn profiles_weigh_misses_and_false_positives() {
        // Row 9 before the window 10..=14, which is missed: -fp_weight - fn_weight.
        let file = detections("a/b.csv", 40, &[9]);
        let raw = |p| score_file(&file, &[window(10, 14)], p, 0.5).unwrap().raw;
        assert_close(raw(&Profile::STANDARD), -1.11);
        assert_close(raw(&Profile::REWARD_LOW_FP_RATE), -1.22);
        assert_close(raw(&Profile::REWARD_LOW_FN_RATE), -2.11);
    }

    #[test]
    fn probation_hides_windows_but_not_their_length() {
        // 40 rows, rows 0..=5 probationary.
        // Window 2..=4 lies in probation: no miss counted, yet it is the window before row 7:
        // |7 - 4|/(3 - 1) = 1.5, so -0.11·tanh(3.75) = -0.10988.
        let file1 = detections("a/b.csv", 40, &[3, 7]);
        let score = score_file(&file1, &[window(2, 4)], &Profile::STANDARD, 0.5).unwrap();
        assert_close(score.raw, -0.1098783886998768);
        // Window 4..=8 straddles it: the detection on row 4 is ignored (so 6 is the first), and
        // row 6 keeps its place in the 5-row window: -(8 - 6 + 1)/5 = -0.6, tanh(1.5)/tanh(2.5).
        let file2 = detections("a/b.csv", 40, &[4, 6]);
        let score = score_file(&file2, &[window(4, 8)], &Profile::STANDARD, 0.5).unwrap();
        assert_close(score.raw, 1.5f64.tanh() / max_tp()); // 0.91743
        assert_eq!((score.tp, score.fn_), (1, 2));
    }

    #[test]
    fn threshold_selects_rows_at_or_above_it() {
        // Window 10..=14; row 14 scores 0.9 (position -0.2), row 10 scores 0.6 (position -1).
        let file = file("a/b.csv", 40, &[(14, 0.9), (10, 0.6)]);
        let raw = |threshold| score_file(&file, &[window(10, 14)], &Profile::STANDARD, threshold).unwrap().raw;
        let late = 0.5f64.tanh() / max_tp();
        assert_close(raw(2.0), -1.0);
        assert_close(raw(0.9), late);
        assert_close(raw(0.7), late);
        assert_close(raw(0.6), 1.0);
        // Below every score all rows are detections: the window's first row gives 1, and each of
        // the 29 scored rows outside costs; 0.0 is the lowest score, so 0.0 and -1 agree.
        assert_close(raw(-1.0), raw(0.0));
        assert!(raw(0.0) < 0.0);
    }
}

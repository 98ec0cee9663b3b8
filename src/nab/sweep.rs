//! NAB's walk over one file's rows (`Sweeper.calcSweepScore`): where each row lies relative to
//! the windows, and what flagging it is worth under a profile.
//!
//! Rows are scored by their index in file order; timestamps only open and close windows. As in
//! NAB, the next window (in label order) opens at the row whose timestamp equals its start and
//! closes after the row whose timestamp equals its end, so repeated or backward timestamps
//! elsewhere change nothing. Each window edge must be the timestamp of exactly one row, which
//! NAB's labeler enforces too.

use std::collections::HashMap;

use chrono::NaiveDateTime;

use super::{Error, Profile, Window};

/// Fraction of each file, from its start, that is never scored.
const PROBATIONARY_PERCENT: f64 = 0.15;

/// One data file's anomaly scores, row by row in file order.
#[derive(Clone, Debug, PartialEq)]
pub struct FileResult {
    /// The file's key in the labels, `category/file.csv`.
    pub key: String,
    /// The timestamp of each row.
    pub timestamps: Vec<NaiveDateTime>,
    /// The detector's anomaly score of each row, in `[0, 1]`.
    pub scores: Vec<f64>,
}

/// Where a row lies, which decides what flagging it is worth.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Zone {
    /// In the probationary period: never scored.
    Probation,
    /// In the file's window number `window`, at `position` in `[-1, 0)`; -1 is its first row.
    Inside { window: usize, position: f64 },
    /// Outside every window: rows since the end of the last closed window over its length
    /// minus one (NAB's measure), infinite before the first window.
    Outside { distance: f64 },
}

impl Zone {
    /// What flagging this row adds to the score (NAB's per-row `sweepScore`).
    pub(crate) fn weight(self, profile: &Profile) -> f64 {
        match self {
            Zone::Probation => 0.0,
            // Dividing by the sigmoid at -1 makes a detection on a window's first row worth
            // exactly tp_weight.
            Zone::Inside { position, .. } => scaled_sigmoid(position) * profile.tp_weight / scaled_sigmoid(-1.0),
            Zone::Outside { distance } => scaled_sigmoid(distance) * profile.fp_weight,
        }
    }
}

/// NAB's scaled sigmoid `2·σ(-5x) - 1`: near 1 at a window's start (-1), 0 at its end, near -1
/// one window length after it, and exactly -1 beyond three lengths.
pub(crate) fn scaled_sigmoid(position: f64) -> f64 {
    if position > 3.0 {
        -1.0
    } else {
        2.0 / (1.0 + (5.0 * position).exp()) - 1.0
    }
}

/// Number of leading rows that are not scored: 15% of the file, at most 750 rows (15% of 5000).
///
/// A float, as in NAB, which compares row indices with it.
pub(crate) fn probationary_length(rows: usize) -> f64 {
    (PROBATIONARY_PERCENT * rows as f64).floor().min(PROBATIONARY_PERCENT * 5000.0)
}

/// The open window: its number, the row of its end and its length in rows.
#[derive(Clone, Copy)]
struct Span {
    window: usize,
    right: usize,
    width: f64,
}

/// Places every row of `file` relative to `windows`.
///
/// # Errors
/// When timestamps and scores differ in number, a score is NaN, or a window edge is not the
/// timestamp of exactly one row or the window ends before it starts.
pub(crate) fn zones(file: &FileResult, windows: &[Window]) -> Result<Vec<Zone>, Error> {
    check(file)?;
    let spans = spans(file, windows)?;
    let probation = probationary_length(file.timestamps.len());
    let mut next = 0;
    let mut open: Option<Span> = None;
    let mut closed: Option<Span> = None;
    let mut zones = Vec::with_capacity(file.timestamps.len());
    for (i, t) in file.timestamps.iter().enumerate() {
        // NAB checks for the next start even inside a window: touching windows hand over.
        if next < windows.len() && *t == windows[next].start {
            open = Some(spans[next]);
            next += 1;
        }
        let zone = match (open, closed) {
            (Some(span), _) => Zone::Inside { window: span.window, position: -((span.right as f64) - (i as f64) + 1.0) / span.width },
            // No window yet: NAB's "really far away", the full false-positive cost.
            (None, None) => Zone::Outside { distance: f64::INFINITY },
            // A one-row window divides by zero here: NAB raises, the infinity gives the full
            // false-positive cost instead.
            (None, Some(span)) => Zone::Outside { distance: ((i as f64) - (span.right as f64)).abs() / (span.width - 1.0) },
        };
        zones.push(if (i as f64) < probation { Zone::Probation } else { zone });
        if let Some(span) = open {
            if *t == windows[span.window].end {
                closed = Some(Span { right: i, ..span });
                open = None;
            }
        }
    }
    Ok(zones)
}

fn check(file: &FileResult) -> Result<(), Error> {
    if file.timestamps.len() != file.scores.len() {
        return Err(Error::Length { key: file.key.clone(), timestamps: file.timestamps.len(), scores: file.scores.len() });
    }
    match file.scores.iter().position(|s| s.is_nan()) {
        Some(row) => Err(Error::NanScore { key: file.key.clone(), row }),
        None => Ok(()),
    }
}

/// The rows of each window's edges, each required to be the timestamp of exactly one row.
fn spans(file: &FileResult, windows: &[Window]) -> Result<Vec<Span>, Error> {
    let mut rows: HashMap<NaiveDateTime, (usize, usize)> = HashMap::new();
    for (i, t) in file.timestamps.iter().enumerate() {
        rows.entry(*t).or_insert((i, 0)).1 += 1;
    }
    let row = |timestamp: NaiveDateTime| match rows.get(&timestamp) {
        Some(&(row, 1)) => Ok(row),
        found => Err(Error::WindowEdge { key: file.key.clone(), timestamp, rows: found.map_or(0, |&(_, count)| count) }),
    };
    let mut spans = Vec::with_capacity(windows.len());
    for (window, w) in windows.iter().enumerate() {
        let (left, right) = (row(w.start)?, row(w.end)?);
        if right < left {
            return Err(Error::WindowOrder { key: file.key.clone(), start: w.start, end: w.end });
        }
        spans.push(Span { window, right, width: (right - left + 1) as f64 });
    }
    Ok(spans)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nab::fixtures::{assert_close, detections, t, window};

    #[test]
    fn probationary_length_is_15_percent_up_to_750_rows() {
        // floor(0.15·n), capped at 0.15·5000 = 750.
        let cases = [(6, 0.0), (20, 3.0), (40, 6.0), (100, 15.0), (4032, 604.0), (5000, 750.0), (22695, 750.0)];
        for (rows, expected) in cases {
            assert_eq!(probationary_length(rows), expected, "{rows} rows");
        }
    }

    #[test]
    fn scaled_sigmoid_values() {
        // 2/(1+e^(5x)) - 1 = -tanh(2.5x).
        assert_close(scaled_sigmoid(-1.0), 2.5f64.tanh()); // 0.98661
        assert_close(scaled_sigmoid(-0.5), 1.25f64.tanh()); // 0.84828
        assert_eq!(scaled_sigmoid(0.0), 0.0);
        assert_close(scaled_sigmoid(1.0), -(2.5f64.tanh()));
        assert_close(scaled_sigmoid(3.0), -(7.5f64.tanh())); // -0.9999994
        assert_eq!(scaled_sigmoid(3.0001), -1.0);
    }

    #[test]
    fn rows_are_placed_by_index_not_by_time() {
        // 40 rows, probation rows 0..=5, window rows 10..=14 (5 rows).
        let mut file = detections("a/b.csv", 40, &[]);
        // Row 20 repeats row 3's timestamp, going backwards: still 6 rows after the window.
        file.timestamps[20] = t(3);
        let zones = zones(&file, &[window(10, 14)]).unwrap();
        assert_eq!(zones[5], Zone::Probation);
        assert_eq!(zones[6], Zone::Outside { distance: f64::INFINITY });
        // -(14 - 10 + 1)/5 = -1 and -(14 - 14 + 1)/5 = -0.2.
        assert_eq!(zones[10], Zone::Inside { window: 0, position: -1.0 });
        assert_eq!(zones[14], Zone::Inside { window: 0, position: -0.2 });
        // |20 - 14| / (5 - 1) = 1.5.
        assert_eq!(zones[20], Zone::Outside { distance: 1.5 });
    }

    /// The zone of each row in `rows`, for compact comparisons.
    fn zones_of(windows: &[Window], rows: std::ops::RangeInclusive<usize>) -> Vec<Zone> {
        let zones = zones(&detections("a/b.csv", 40, &[]), windows).unwrap();
        zones[rows].to_vec()
    }

    fn inside(window: usize, position: f64) -> Zone {
        Zone::Inside { window, position }
    }

    #[test]
    fn adjacent_windows_follow_each_other() {
        // rows 10..=14 and 15..=19, 5 rows each
        let got = zones_of(&[window(10, 14), window(15, 19)], 13..=20);
        let expected = [
            inside(0, -0.4),
            inside(0, -0.2),
            inside(1, -1.0),
            inside(1, -0.8),
            inside(1, -0.6),
            inside(1, -0.4),
            inside(1, -0.2),
            // distance from the second window's end: 1 / (5 - 1)
            Zone::Outside { distance: 0.25 },
        ];
        assert_eq!(got, expected);
    }

    #[test]
    fn a_window_that_starts_inside_another_takes_over() {
        // The first window ends on the second's first row: that row is the second's.
        let got = zones_of(&[window(10, 14), window(14, 19)], 13..=15);
        assert_eq!(got, [inside(0, -0.4), inside(1, -1.0), inside(1, -5.0 / 6.0)]);
        // Overlapping: the second opens at its start, and the first's end no longer closes
        // anything; distances then count from the second's end over its width (11 rows).
        let got = zones_of(&[window(10, 20), window(15, 25)], 14..=26);
        assert_eq!(got[0], inside(0, -7.0 / 11.0));
        assert_eq!(got[1], inside(1, -1.0));
        assert_eq!(got[6], inside(1, -6.0 / 11.0), "row 20, the first window's end");
        assert_eq!(got[11], inside(1, -1.0 / 11.0));
        assert_eq!(got[12], Zone::Outside { distance: 0.1 });
    }

    #[test]
    fn one_row_windows() {
        let got = zones_of(&[window(10, 10)], 9..=12);
        let far = Zone::Outside { distance: f64::INFINITY };
        assert_eq!(got, [far, inside(0, -1.0), far, far]);
        // a detection on the row is worth a whole true positive; after it, a whole false one
        let profile = Profile::STANDARD;
        assert_close(got[1].weight(&profile), profile.tp_weight);
        assert_close(got[2].weight(&profile), -profile.fp_weight);
    }

    #[test]
    fn window_edges_must_match_one_row() {
        let mut file = detections("a/b.csv", 40, &[]);
        let late = window(10, 14).end + chrono::Duration::seconds(1);
        let missing = zones(&file, &[Window { end: late, ..window(10, 14) }]).unwrap_err();
        assert!(matches!(missing, Error::WindowEdge { rows: 0, .. }), "{missing}");
        let reversed = zones(&file, &[window(14, 10)]).unwrap_err();
        assert!(matches!(reversed, Error::WindowOrder { .. }), "{reversed}");
        file.timestamps[30] = t(10);
        let repeated = zones(&file, &[window(10, 14)]).unwrap_err();
        assert!(matches!(repeated, Error::WindowEdge { rows: 2, .. }), "{repeated}");
    }

    #[test]
    fn rejects_mismatched_or_nan_scores() {
        let mut file = detections("a/b.csv", 10, &[]);
        file.scores.pop();
        assert!(matches!(zones(&file, &[]), Err(Error::Length { timestamps: 10, scores: 9, .. })));
        file.scores.push(f64::NAN);
        assert!(matches!(zones(&file, &[]), Err(Error::NanScore { row: 9, .. })));
    }
}

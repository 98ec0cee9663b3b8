//! Synthetic files for the unit tests: row `i` is at 2014-04-01 00:00 plus `5·i` minutes.

use chrono::{Duration, NaiveDate, NaiveDateTime};

use super::{FileResult, Window};

/// The timestamp of row `i`.
pub(crate) fn t(i: usize) -> NaiveDateTime {
    let start = NaiveDate::from_ymd_opt(2014, 4, 1).and_then(|d| d.and_hms_opt(0, 0, 0));
    start.expect("valid date") + Duration::minutes(5 * i as i64)
}

/// The window from row `a` to row `b`, inclusive.
pub(crate) fn window(a: usize, b: usize) -> Window {
    Window { start: t(a), end: t(b) }
}

/// A file of `rows` rows scoring 0 except `(row, score)` in `hits`.
pub(crate) fn file(key: &str, rows: usize, hits: &[(usize, f64)]) -> FileResult {
    let mut scores = vec![0.0; rows];
    for &(row, score) in hits {
        scores[row] = score;
    }
    FileResult { key: key.to_string(), timestamps: (0..rows).map(t).collect(), scores }
}

/// A file of `rows` rows scoring 1 at `rows_hit` and 0 elsewhere.
pub(crate) fn detections(key: &str, rows: usize, rows_hit: &[usize]) -> FileResult {
    let hits: Vec<_> = rows_hit.iter().map(|&row| (row, 1.0)).collect();
    file(key, rows, &hits)
}

#[track_caller]
pub(crate) fn assert_close(actual: f64, expected: f64) {
    assert!((actual - expected).abs() < 1e-12, "{actual} != {expected}");
}

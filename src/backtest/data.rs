//! Recorded series to replay: NAB-style CSV files (`timestamp,value`) or a Prometheus range.
//!
//! NAB scores by row, and some of its files repeat timestamps, step backwards or have gaps of
//! days. The engine works on a regular grid, so rows are placed on one: row `i` sits at
//! `start + i · step`, with `step` the file's median spacing and `start` its first timestamp
//! aligned down to a step. Every row keeps its original timestamp for the outputs.

use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDateTime};

use crate::source::{Labels, Series};

/// One recorded series.
#[derive(Clone, Debug)]
pub struct Recording {
    /// What outputs and labels call it: `category/file.csv` for NAB files.
    pub key: String,
    /// The series' labels (for CSV files, `file="<key>"`).
    pub labels: Labels,
    /// Grid spacing, seconds.
    pub step: i64,
    /// Grid time of the first row.
    pub start: i64,
    /// Original timestamp of each row.
    pub timestamps: Vec<NaiveDateTime>,
    /// Value of each row.
    pub values: Vec<f64>,
}

impl Recording {
    /// Grid time of row `i`.
    pub fn ts(&self, i: usize) -> i64 {
        self.start + i as i64 * self.step
    }

    /// The recording as the engine's series (its samples on the grid).
    pub fn series(&self) -> Series {
        Series { labels: self.labels.clone(), samples: self.values.iter().enumerate().map(|(i, &v)| (self.ts(i), v)).collect() }
    }
}

/// A problem with the input data.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file could not be read.
    #[error("{}: {cause}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why (in the message, not as a `source`, so `{:#}` says it once).
        cause: std::io::Error,
    },
    /// A row is not `timestamp,value`.
    #[error("{path}:{line}: {why}")]
    Row {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: u64,
        /// Why.
        why: String,
    },
    /// Too few rows to find a spacing.
    #[error("{0}: needs at least two rows with different timestamps")]
    TooShort(PathBuf),
}

/// Reads a `timestamp,value` CSV (header first; timestamps `YYYY-MM-DD HH:MM:SS`, taken as UTC).
///
/// # Errors
/// An unreadable file or a malformed row, with its line.
pub fn load_csv(path: &Path, key: &str) -> Result<Recording, DataError> {
    let text = std::fs::read_to_string(path).map_err(|cause| DataError::Read { path: path.into(), cause })?;
    let mut reader = csv::ReaderBuilder::new().trim(csv::Trim::All).from_reader(text.as_bytes());
    let (mut timestamps, mut values) = (Vec::new(), Vec::new());
    for record in reader.records() {
        let bad = |line: u64, why: String| DataError::Row { path: path.into(), line, why };
        let record = record.map_err(|e| bad(e.position().map_or(0, |p| p.line()), e.to_string()))?;
        let line = record.position().map_or(0, |p| p.line());
        let (Some(ts), Some(value)) = (record.get(0), record.get(1)) else {
            return Err(bad(line, "expected timestamp,value".into()));
        };
        let ts = crate::nab::parse_timestamp(ts).map_err(|e| bad(line, format!("timestamp {ts:?}: {e}")))?;
        let value: f64 = value.parse().map_err(|_| bad(line, format!("value {value:?} is not a number")))?;
        if !value.is_finite() {
            return Err(bad(line, format!("value {value} is not finite")));
        }
        timestamps.push(ts);
        values.push(value);
    }
    let unix: Vec<i64> = timestamps.iter().map(|t| t.and_utc().timestamp()).collect();
    let step = median_spacing(&unix).ok_or_else(|| DataError::TooShort(path.into()))?;
    let labels = Labels::from([("file".to_string(), key.to_string())]);
    Ok(Recording { key: key.into(), labels, step, start: unix[0] - unix[0].rem_euclid(step), timestamps, values })
}

/// The recordings of a Prometheus range answer, one per series (already on the `step` grid).
pub fn from_series(series: Vec<Series>, step: i64) -> Vec<Recording> {
    series
        .into_iter()
        .filter(|s| !s.samples.is_empty())
        .map(|s| {
            let start = s.samples[0].0;
            // carry the last value over missing grid points, as the engine does
            let n = ((s.samples.last().map_or(start, |l| l.0) - start) / step + 1) as usize;
            let mut values = Vec::with_capacity(n);
            let mut next = s.samples.iter().peekable();
            let mut last = s.samples[0].1;
            for i in 0..n {
                let t = start + i as i64 * step;
                while let Some(&&(ts, v)) = next.peek() {
                    if ts > t {
                        break;
                    }
                    last = v;
                    next.next();
                }
                values.push(last);
            }
            let timestamps = (0..n).filter_map(|i| DateTime::from_timestamp(start + i as i64 * step, 0).map(|d| d.naive_utc())).collect();
            let key = crate::source::format_labels(&s.labels);
            Recording { key, labels: s.labels, step, start, timestamps, values }
        })
        .collect()
}

/// Every `*.csv` under `dir` (one level of category directories, as NAB lays them out),
/// sorted, with its key `category/file.csv`.
///
/// # Errors
/// An unreadable directory.
pub fn dataset_files(dir: &Path) -> Result<Vec<(PathBuf, String)>, DataError> {
    let read = |d: &Path| std::fs::read_dir(d).map_err(|cause| DataError::Read { path: d.into(), cause });
    let mut files = Vec::new();
    for entry in read(dir)? {
        let category = entry.map_err(|cause| DataError::Read { path: dir.into(), cause })?.path();
        if !category.is_dir() {
            continue;
        }
        for file in read(&category)? {
            let path = file.map_err(|cause| DataError::Read { path: category.clone(), cause })?.path();
            if path.extension().is_some_and(|e| e == "csv") {
                let key = nab_key(&path);
                files.push((path, key));
            }
        }
    }
    files.sort_by(|a, b| a.1.cmp(&b.1));
    Ok(files)
}

/// The key NAB's labels give a data file: `category/file.csv`, its directory and its name.
pub fn nab_key(path: &Path) -> String {
    let name = |p: Option<&Path>| p.and_then(Path::file_name).map(|n| n.to_string_lossy().into_owned());
    match (name(path.parent()), name(Some(path))) {
        (Some(category), Some(file)) => format!("{category}/{file}"),
        (_, file) => file.unwrap_or_default(),
    }
}

/// The (lower) median of the positive gaps between consecutive timestamps.
fn median_spacing(unix: &[i64]) -> Option<i64> {
    let mut gaps: Vec<i64> = unix.windows(2).map(|w| w[1] - w[0]).filter(|g| *g > 0).collect();
    if gaps.is_empty() {
        return None;
    }
    gaps.sort_unstable();
    Some(gaps[(gaps.len() - 1) / 2])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_go_on_a_regular_grid_in_file_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.csv");
        // a repeated timestamp and a step back, as in NAB's DST files: every row is kept
        std::fs::write(&path, "timestamp,value\n2014-03-09 02:50:00,1\n2014-03-09 02:55:00,2\n2014-03-09 02:55:00,3\n2014-03-09 02:50:00,4\n2014-03-09 03:05:00,5\n").unwrap();
        let rec = load_csv(&path, "c/a.csv").unwrap();
        assert_eq!(rec.step, 300);
        assert_eq!(rec.values, vec![1.0, 2.0, 3.0, 4.0, 5.0]);
        assert_eq!(rec.start, 1_394_333_400); // 2014-03-09 02:50:00 UTC
        assert_eq!(rec.ts(4), rec.start + 1200);
        assert_eq!(rec.timestamps[3].to_string(), "2014-03-09 02:50:00");
        assert_eq!(rec.labels["file"], "c/a.csv");
    }

    #[test]
    fn bad_rows_say_where() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.csv");
        std::fs::write(&path, "timestamp,value\n2014-03-09 02:50:00,1\n2014-03-09 02:55:00,x\n").unwrap();
        let err = load_csv(&path, "a.csv").unwrap_err().to_string();
        assert!(err.ends_with("a.csv:3: value \"x\" is not a number"), "{err}");
    }

    #[test]
    fn range_answers_fill_gaps_forward() {
        let s = Series { labels: Labels::from([("job".to_string(), "x".to_string())]), samples: vec![(60, 1.0), (180, 3.0), (240, 4.0)] };
        let rec = &from_series(vec![s], 60)[0];
        assert_eq!(rec.values, vec![1.0, 1.0, 3.0, 4.0]);
        assert_eq!(rec.key, "{job=\"x\"}");
    }
}

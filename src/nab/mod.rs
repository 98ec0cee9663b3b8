//! NAB (Numenta Anomaly Benchmark) scoring of a detector's anomaly scores against labelled
//! anomaly windows, following NAB 1.1 (`sweeper.py`, `optimizer.py`, `runner.py`).
//!
//! Rows are scored by index in file order, the first 15% of each file (at most 750 rows) is
//! probationary, a window earns by its earliest detection on a scaled sigmoid, false positives
//! cost less just after a window, one threshold per profile is optimised over the whole corpus,
//! and scores are normalised so the null detector gets 0 and a perfect one 100. Running
//! detectors and reading data files live elsewhere.
//!
//! ```
//! use chrono::{Duration, NaiveDate};
//! use pulsewatch::nab::{optimize, FileResult, Labels, Profile, Window};
//!
//! let start = NaiveDate::from_ymd_opt(2014, 4, 1).unwrap().and_hms_opt(0, 0, 0).unwrap();
//! let timestamps: Vec<_> = (0..100).map(|i| start + Duration::minutes(5 * i)).collect();
//! let window = Window { start: timestamps[40], end: timestamps[49] };
//! let labels: Labels = [("a/b.csv".to_string(), vec![window])].into_iter().collect();
//! // Fires on the window's first row only: a perfect detector.
//! let scores = (0..100).map(|i| if i == 40 { 1.0 } else { 0.0 }).collect();
//! let file = FileResult { key: "a/b.csv".into(), timestamps, scores };
//! let score = optimize(&[file], &labels, &Profile::STANDARD)?;
//! assert_eq!((score.threshold, score.raw, score.normalized), (1.0, 1.0, Some(100.0)));
//! # Ok::<(), pulsewatch::nab::Error>(())
//! ```

mod corpus;
mod error;
#[cfg(test)]
mod fixtures;
mod profile;
mod sweep;
mod threshold;
mod window_counts;
mod windows;

pub use corpus::{cross_validate, optimize, CorpusScore, CrossValidated};
pub use error::Error;
pub use profile::Profile;
pub use sweep::FileResult;
pub(crate) use sweep::{zones, Zone};
pub use threshold::{score_file, FileScore};
pub use window_counts::WindowCounts;
pub use windows::{parse_timestamp, Labels, Window};

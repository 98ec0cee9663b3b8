//! Errors from reading NAB labels and from scoring files against them.

use std::path::PathBuf;

use chrono::NaiveDateTime;

/// A label file that cannot be used, or a data file that does not fit its labels.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The label file could not be read.
    #[error("reading labels {path}")]
    Read {
        /// The label file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The label file is not `{"category/file.csv": [[start, end], ...]}` JSON.
    #[error("parsing labels")]
    Json(#[source] serde_json::Error),
    /// A window edge is not a `YYYY-MM-DD HH:MM:SS[.ffffff]` timestamp.
    #[error("{key}: window edge {text:?} is not a timestamp")]
    Timestamp {
        /// The data file the window belongs to.
        key: String,
        /// The text that failed to parse.
        text: String,
        /// What chrono said.
        #[source]
        source: chrono::ParseError,
    },
    /// A data file has no entry in the labels.
    #[error("{key}: not in the labels")]
    Unlabelled {
        /// The data file.
        key: String,
    },
    /// A data file has a different number of timestamps and anomaly scores.
    #[error("{key}: {timestamps} timestamps but {scores} anomaly scores")]
    Length {
        /// The data file.
        key: String,
        /// Number of timestamps.
        timestamps: usize,
        /// Number of anomaly scores.
        scores: usize,
    },
    /// An anomaly score is NaN, which has no place in the threshold order.
    #[error("{key}: anomaly score of row {row} is NaN")]
    NanScore {
        /// The data file.
        key: String,
        /// The row, from 0.
        row: usize,
    },
    /// A window edge is not the timestamp of exactly one row (NAB's labeler requires it).
    #[error("{key}: window edge {timestamp} is the timestamp of {rows} rows, not of one")]
    WindowEdge {
        /// The data file.
        key: String,
        /// The window's start or end.
        timestamp: NaiveDateTime,
        /// How many rows have this timestamp.
        rows: usize,
    },
    /// A window's end row comes before its start row.
    #[error("{key}: window {start} .. {end} ends before it starts")]
    WindowOrder {
        /// The data file.
        key: String,
        /// The window's start.
        start: NaiveDateTime,
        /// The window's end.
        end: NaiveDateTime,
    },
}

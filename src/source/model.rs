//! Series and samples as the engine uses them.

use std::collections::BTreeMap;

/// A series' labels, sorted by name.
pub type Labels = BTreeMap<String, String>;

/// The identity of a series: its labels without `__name__`, which pulsewatch's outputs drop.
pub fn series_key(labels: &Labels) -> Labels {
    labels.iter().filter(|(k, _)| k.as_str() != "__name__").map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// `{a="1", b="2"}`, for log and error messages.
pub fn format_labels(labels: &Labels) -> String {
    let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{{{}}}", inner.join(", "))
}

/// One series of a range-query answer: its labels and samples.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// The labels, `__name__` included when the expression keeps it.
    pub labels: Labels,
    /// `(timestamp in Unix seconds, value)`. Once [`validate`](super::validate)d (as everything
    /// the engine reads is): on the query's grid, strictly increasing in time, all finite.
    pub samples: Vec<(i64, f64)>,
}

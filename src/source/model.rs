//! Series and samples as the engine uses them.

use std::collections::BTreeMap;

/// A series' labels, sorted by name.
pub type Labels = BTreeMap<String, String>;

/// One series of a range-query answer: its labels and finite samples in time order.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// The labels, `__name__` included when the expression keeps it.
    pub labels: Labels,
    /// `(timestamp in Unix seconds, value)`, strictly increasing in time, all finite.
    pub samples: Vec<(i64, f64)>,
}

//! Forecasting models: fitting a rule's model ([`ModelSpec`], from the config) to a regular series, and the
//! prediction path that later evaluations read from.
//!
//! A fit produces a [`Path`]: point forecasts with the band for the next `n` steps after the
//! training data. Between refits a series is scored against that path (see `series.rs`), so an
//! evaluation costs a lookup, not a fit.

mod calibration;
mod ensemble;
mod fit;
mod online;
mod rolling;
mod score;
mod seasonal;
mod seasonality;
mod series;
#[cfg(test)]
mod testing;

pub use crate::config::ModelSpec;

pub use crate::exporter::Point;
pub use fit::{fit, train, Fit, Path};
pub use online::Online;
pub use score::anomaly_score;
pub(crate) use score::MAX_SCORE;
pub use seasonality::find_seasons;
pub use series::SeriesModel;

/// Errors from fitting or predicting.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Too few samples to fit this model.
    #[error("{model} needs at least {needed} samples, the series has {got}")]
    TooShort {
        /// The model type.
        model: &'static str,
        /// Samples needed.
        needed: usize,
        /// Samples available.
        got: usize,
    },
    /// The fitting library failed.
    #[error("fitting {model}: {reason}")]
    Fit {
        /// The model type.
        model: &'static str,
        /// What the library said.
        reason: String,
    },
}

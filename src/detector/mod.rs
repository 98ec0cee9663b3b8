//! Detectors of `anomaly:` rules: each scores windows of the last N steps of a rule's channels,
//! 1 at its threshold, as forecast rules score 1 at their band's edge.
//!
//! The engine sees one interface, [`Detector`]; [`load`] builds the one a rule's
//! [`DetectorSpec`] names. A new detector is one file here and one arm of `DetectorSpec`.
//! Windows are built by [`window`], the same way for every detector and for
//! `pulsewatch export-windows`.

pub mod autoencoder;
pub mod window;

use std::fmt::Debug;
use std::path::PathBuf;
use std::sync::Arc;

pub use autoencoder::Autoencoder;

use crate::config::{Anomaly, DetectorSpec, Duration};

/// A loaded detector.
pub trait Detector: Send + Sync + Debug {
    /// Steps in each window it scores.
    fn window(&self) -> usize;

    /// Scores windows laid one after another, each `window() × channels` raw values,
    /// time-major (all channels of the oldest sample first): one [`Score`] per window.
    ///
    /// # Errors
    /// The windows are not whole, or the detector failed to run.
    fn score(&self, windows: &[f64]) -> Result<Vec<Score>, ScoreError>;

    /// What was loaded, for the log.
    fn describe(&self) -> String;
}

/// The score of one window.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Score {
    /// 0 normal, 1 at the detector's threshold, above 1 beyond it.
    pub score: f64,
    /// The detector's own measure (an autoencoder's reconstruction error), exported beside it.
    pub raw: f64,
}

/// A detector that could not be loaded, or does not fit its rule.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("model file {}: {cause}", path.display())]
pub struct LoadError {
    /// The model file.
    pub path: PathBuf,
    /// What is wrong with it.
    pub cause: LoadCause,
}

/// Why a model did not load.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum LoadCause {
    /// The file could not be read.
    #[error("reading: {0}")]
    Read(String),
    /// The bytes are not an ONNX model.
    #[error("not an ONNX model: {0}")]
    NotOnnx(String),
    /// tract cannot run the model.
    #[error("unsupported model: {0}")]
    Unsupported(String),
    /// tract panicked on the graph.
    #[error("tract panicked loading the model: {0}")]
    Panicked(String),
    /// The inputs, outputs or their shapes are not those of a detector.
    #[error("{0}")]
    Shape(String),
    /// pulsewatch's metadata in the model is missing or invalid.
    #[error("{0}")]
    Metadata(String),
    /// The model does not score what the rule queries (channels, step).
    #[error("{0}")]
    Rule(String),
}

/// A detector that failed to score.
#[derive(Debug, thiserror::Error)]
pub enum ScoreError {
    /// The values are not a whole number of windows.
    #[error("{values} values are not a whole number of windows of {size}")]
    Ragged {
        /// Values given.
        values: usize,
        /// Values per window.
        size: usize,
    },
    /// The model failed to run.
    #[error("running the model: {0}")]
    Run(String),
    /// The detector panicked.
    #[error("the detector panicked: {0}")]
    Panicked(String),
}

/// Loads the detector of a rule and checks that it scores what the rule queries. Blocking:
/// run it off the async runtime.
///
/// # Errors
/// What [`LoadError`] says.
pub fn load(anomaly: &Anomaly, step: &Duration) -> Result<Arc<dyn Detector>, LoadError> {
    match &anomaly.detector {
        DetectorSpec::Autoencoder { model_file } => Ok(Arc::new(Autoencoder::load_for_rule(model_file, &anomaly.channels, step)?)),
    }
}

//! The ONNX autoencoder detector: a model that reconstructs a window of the last N samples of
//! one or more channels, run with tract. A window it cannot reconstruct well is anomalous.
//!
//! The model file is self-contained: besides the graph it carries, in the ONNX `metadata_props`
//! entry `pulsewatch` (a JSON object), the per-channel normalisation and the calibrated
//! threshold. One file means a model and its statistics are always swapped together.
//!
//! ```json
//! {"format": 1, "channels": [{"name": "value", "mean": 85.2, "std": 12.1}],
//!  "threshold": 0.41, "step_seconds": 300}
//! ```
//!
//! The input is `[batch, window, channels]` of z-scores, `(x - mean) / std` per channel; the
//! output is the reconstruction, of the same shape. The reconstruction error of a window is the
//! mean squared difference over all its values; the score is that error over `threshold`, so a
//! score of 1 is the threshold, as for forecast rules.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;
use tract_onnx::prelude::*;

use super::{Detector, LoadCause, LoadError, Score, ScoreError};
use crate::config::{Channel, Duration};

/// The `metadata_props` key that holds pulsewatch's metadata.
pub const METADATA_KEY: &str = "pulsewatch";

/// Longest window a model may take: each evaluation queries and holds that many steps.
const MAX_WINDOW: usize = 10_000;

/// Normalisation of one channel, from the model's metadata.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct ChannelStats {
    /// The channel's name; a rule lists its channels in the same order with the same names.
    pub name: String,
    /// Mean of the training values.
    pub mean: f64,
    /// Standard deviation of the training values.
    pub std: f64,
}

#[derive(Debug, Deserialize)]
struct Metadata {
    format: u32,
    channels: Vec<ChannelStats>,
    threshold: f64,
    #[serde(default)]
    step_seconds: Option<i64>,
}

/// A loaded, optimised autoencoder with its normalisation and threshold.
#[derive(Debug)]
pub struct Autoencoder {
    plan: Arc<TypedRunnableModel>,
    window: usize,
    channels: Vec<ChannelStats>,
    threshold: f64,
    step_seconds: Option<i64>,
    /// The batch dimension is symbolic: many windows go in one call.
    batched: bool,
    /// tract calls made, for tests of the batching.
    #[cfg(test)]
    pub(crate) runs: std::sync::atomic::AtomicUsize,
}

impl Autoencoder {
    /// Reads and loads a model file.
    ///
    /// # Errors
    /// The file cannot be read, is not a model tract can run, has no valid pulsewatch metadata,
    /// or its shapes are not `[batch, window, channels]` in and out.
    pub fn load(path: &Path) -> Result<Self, LoadError> {
        let error = |cause: LoadCause| LoadError { path: path.to_path_buf(), cause };
        // Read into memory rather than let tract map the file: a model replaced in place
        // while mapped would fault the process.
        let bytes = crate::files::read(path, crate::files::MAX_MODEL_BYTES).map_err(|err| error(LoadCause::Read(err.to_string())))?;
        Self::from_bytes(&bytes).map_err(error)
    }

    /// Loads the model at `path` for a rule with `channels` at `step`, and checks that it
    /// fits them.
    ///
    /// # Errors
    /// As [`Autoencoder::load`], and what [`Autoencoder::check_rule`] finds.
    pub fn load_for_rule(path: &Path, channels: &[Channel], step: &Duration) -> Result<Self, LoadError> {
        let model = Self::load(path)?;
        model.check_rule(channels, step).map_err(|cause| LoadError { path: path.to_path_buf(), cause })?;
        Ok(model)
    }

    /// Loads a model from its bytes. tract panics on some malformed graphs, so the panic is
    /// caught and reported as an error.
    ///
    /// # Errors
    /// As [`Autoencoder::load`], without the file name.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, LoadCause> {
        match catch_unwind(AssertUnwindSafe(|| Self::build(bytes))) {
            Ok(result) => result,
            Err(panic) => {
                let what = panic.downcast_ref::<String>().map(String::as_str).or_else(|| panic.downcast_ref::<&str>().copied());
                Err(LoadCause::Panicked(what.unwrap_or("no message").to_string()))
            }
        }
    }

    fn build(bytes: &[u8]) -> Result<Self, LoadCause> {
        let onnx = tract_onnx::onnx();
        let proto = onnx.proto_model_for_read(&mut &bytes[..]).map_err(|err| LoadCause::NotOnnx(format!("{err:#}")))?;
        let model = onnx.model_for_proto_model(&proto).map_err(|err| LoadCause::Unsupported(format!("{err:#}")))?;
        let metadata = metadata(&proto).map_err(LoadCause::Metadata)?;
        let typed = model.into_typed().map_err(|err| LoadCause::Unsupported(format!("{err:#}")))?;
        Self::from_typed(typed, metadata).map_err(LoadCause::Shape)
    }

    /// Checks the graph's inputs and outputs against the metadata, and optimises it.
    fn from_typed(typed: TypedModel, metadata: Metadata) -> Result<Self, String> {
        if typed.inputs.len() != 1 || typed.outputs.len() != 1 {
            return Err(format!(
                "the model has {} inputs and {} outputs; an autoencoder has one of each",
                typed.inputs.len(),
                typed.outputs.len()
            ));
        }
        let fact = |fact: TractResult<&TypedFact>| fact.cloned().map_err(|err| format!("{err:#}"));
        let (input_fact, output_fact) = (fact(typed.input_fact(0))?, fact(typed.output_fact(0))?);
        for (what, fact) in [("input", &input_fact), ("output", &output_fact)] {
            if fact.datum_type != f32::datum_type() {
                return Err(format!("the {what} is {:?}; an autoencoder takes and returns float32", fact.datum_type));
            }
        }
        let input = input_fact.shape.dims().to_vec();
        let output = output_fact.shape.dims().to_vec();
        let dims = |d: &[TDim]| d.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
        let fixed = |d: &TDim| d.to_i64().ok().filter(|n| *n > 0).map(|n| n as usize);
        let (window, channels) = match input.as_slice() {
            [_, n, c] => match (fixed(n), fixed(c)) {
                (Some(n), Some(_)) if n > MAX_WINDOW => {
                    return Err(format!("input shape [{}]: a window of {n} samples is more than {MAX_WINDOW}", dims(&input)))
                }
                (Some(n), Some(c)) => (n, c),
                _ => return Err(format!("input shape [{}]: window and channels must be fixed sizes", dims(&input))),
            },
            _ => return Err(format!("input shape [{}]: expected [batch, window, channels]", dims(&input))),
        };
        if output != input {
            return Err(format!(
                "output shape [{}] differs from input shape [{}]; an autoencoder reconstructs its input",
                dims(&output),
                dims(&input)
            ));
        }
        let batched = match fixed(&input[0]) {
            None => true,
            Some(1) => false,
            Some(n) => return Err(format!("input shape [{}]: the batch dimension must be symbolic or 1, not {n}", dims(&input))),
        };
        if metadata.channels.len() != channels {
            return Err(format!(
                "input shape [{}] has {channels} channels but the metadata describes {}",
                dims(&input),
                metadata.channels.len()
            ));
        }
        let plan = typed.into_optimized().and_then(|m| m.into_runnable()).map_err(|err| format!("optimising the model: {err:#}"))?;
        Ok(Self {
            plan,
            window,
            channels: metadata.channels,
            threshold: metadata.threshold,
            step_seconds: metadata.step_seconds,
            batched,
            #[cfg(test)]
            runs: Default::default(),
        })
    }

    /// Samples per window (the model's input length).
    pub fn window(&self) -> usize {
        self.window
    }

    /// The channels, in the model's order.
    pub fn channels(&self) -> &[ChannelStats] {
        &self.channels
    }

    /// The reconstruction error that scores 1.
    pub fn threshold(&self) -> f64 {
        self.threshold
    }

    /// Whether one call scores many windows.
    pub fn batched(&self) -> bool {
        self.batched
    }

    /// Checks that the model scores what a rule queries: the same channels in the same order,
    /// at the step the model was trained at.
    ///
    /// # Errors
    /// What does not match.
    pub fn check_rule(&self, channels: &[Channel], step: &Duration) -> Result<(), LoadCause> {
        let ours: Vec<&str> = channels.iter().map(|c| c.name.as_str()).collect();
        let model: Vec<&str> = self.channels.iter().map(|c| c.name.as_str()).collect();
        if ours != model {
            return Err(LoadCause::Rule(format!(
                "the rule's channels {ours:?} are not the model's channels {model:?} (same names, same order)"
            )));
        }
        match self.step_seconds {
            Some(trained) if trained != step.secs() => Err(LoadCause::Rule(format!(
                "the model was trained on samples {} apart, the rule's step is {step}",
                Duration::from_secs(trained as u64)
            ))),
            _ => Ok(()),
        }
    }

    /// The reconstruction error of each window. `values` holds the windows one after another,
    /// each `window × channels` raw values, time-major (all channels of the oldest sample
    /// first).
    ///
    /// # Errors
    /// tract failed to run the model, or `values` is not a whole number of windows.
    pub fn reconstruction_errors(&self, values: &[f64]) -> Result<Vec<f64>, ScoreError> {
        let size = self.window * self.channels.len();
        if values.len() % size != 0 {
            return Err(ScoreError::Ragged { values: values.len(), size });
        }
        let z: Vec<f32> = values
            .iter()
            .enumerate()
            .map(|(i, x)| {
                let c = &self.channels[i % self.channels.len()];
                ((x - c.mean) / c.std) as f32
            })
            .collect();
        // All windows in one call when the batch is symbolic (10,000 windows of 32 × 3 are a
        // 4 MB tensor), else one call per window.
        let per_call = if self.batched { z.len().max(size) } else { size };
        let mut errors = Vec::with_capacity(values.len() / size);
        for chunk in z.chunks(per_call) {
            let batch = chunk.len() / size;
            let run = |err: TractError| ScoreError::Run(format!("{err:#}"));
            let input = Tensor::from_shape(&[batch, self.window, self.channels.len()], chunk).map_err(run)?;
            #[cfg(test)]
            self.runs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let output = self.plan.run(tvec!(input.into_tvalue())).map_err(run)?;
            let view = output[0].try_as_plain_ram().map_err(run)?;
            let reconstruction = view.as_slice::<f32>().map_err(run)?;
            if reconstruction.len() != chunk.len() {
                return Err(ScoreError::Run(format!("the model returned {} values for {} inputs", reconstruction.len(), chunk.len())));
            }
            errors.extend(
                chunk
                    .chunks(size)
                    .zip(reconstruction.chunks(size))
                    .map(|(x, r)| x.iter().zip(r).map(|(x, r)| f64::from(x - r).powi(2)).sum::<f64>() / size as f64),
            );
        }
        Ok(errors)
    }
}

impl Detector for Autoencoder {
    fn window(&self) -> usize {
        self.window
    }

    fn score(&self, windows: &[f64]) -> Result<Vec<Score>, ScoreError> {
        let errors = self.reconstruction_errors(windows)?;
        Ok(errors.into_iter().map(|error| Score { score: error / self.threshold, raw: error }).collect())
    }

    fn describe(&self) -> String {
        format!("autoencoder of {} × {} samples{}", self.window, self.channels.len(), if self.batched { ", batched" } else { "" })
    }
}

/// Reads and checks the `pulsewatch` entry of the model's `metadata_props`.
fn metadata(proto: &tract_onnx::pb::ModelProto) -> Result<Metadata, String> {
    let Some(entry) = proto.metadata_props.iter().find(|e| e.key == METADATA_KEY) else {
        return Err(format!("no `{METADATA_KEY}` entry in the model's metadata_props: it carries the normalisation and threshold (see examples/autoencoder/train.py)"));
    };
    let meta: Metadata = serde_json::from_str(&entry.value).map_err(|err| format!("metadata `{METADATA_KEY}`: {err}"))?;
    if meta.format != 1 {
        return Err(format!("metadata `{METADATA_KEY}`: format {} is not supported (only 1)", meta.format));
    }
    if !(meta.threshold.is_finite() && meta.threshold > 0.0) {
        return Err(format!("metadata `{METADATA_KEY}`: threshold {} must be a positive number", meta.threshold));
    }
    for c in &meta.channels {
        if !(c.mean.is_finite() && c.std.is_finite() && c.std > 0.0) {
            return Err(format!("metadata `{METADATA_KEY}`: channel {:?} needs a finite mean and a positive std", c.name));
        }
    }
    if meta.step_seconds.is_some_and(|s| s < 1) {
        return Err(format!("metadata `{METADATA_KEY}`: step_seconds must be at least 1"));
    }
    Ok(meta)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/models").join(name)
    }

    fn load_err(name: &str) -> String {
        Autoencoder::load(&fixture(name)).unwrap_err().to_string()
    }

    #[test]
    fn scores_are_the_normalised_squared_error_over_the_threshold() {
        let model = Autoencoder::load(&fixture("zero_w4_c2.onnx")).unwrap();
        assert_eq!((model.window(), model.channels().len(), model.batched()), (4, 2, true));
        assert_eq!(model.threshold(), 2.0);
        // channel a: mean 10, std 2; channel b: mean 100, std 10. The model outputs zeros, so the
        // error is the mean of the squared z-scores.
        let on_mean = [10.0, 100.0].repeat(4);
        let one_sd = [10.0, 100.0, 12.0, 110.0, 8.0, 90.0, 10.0, 100.0];
        let three_sd = [16.0, 130.0].repeat(4);
        let windows: Vec<f64> = [on_mean.as_slice(), &one_sd, &three_sd].concat();
        let errors = model.reconstruction_errors(&windows).unwrap();
        assert_eq!(errors, vec![0.0, 0.5, 9.0]);
        assert!(model.reconstruction_errors(&windows[..5]).is_err(), "not a whole window");
    }

    #[test]
    fn a_symbolic_batch_scores_every_window_in_one_call_a_fixed_one_one_by_one() {
        let windows = [1.0, 1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 2.0, 0.0, 0.0, 0.0, 3.0];
        for (name, batched, runs) in [("zero_w4_c1.onnx", true, 1), ("fixed_batch_w4_c1.onnx", false, 3)] {
            let model = Autoencoder::load(&fixture(name)).unwrap();
            assert_eq!(model.batched(), batched);
            assert_eq!(model.reconstruction_errors(&windows).unwrap(), vec![1.0, 4.0, 2.25]);
            assert_eq!(model.runs.load(std::sync::atomic::Ordering::Relaxed), runs, "{name}");
        }
    }

    #[test]
    fn bad_models_get_errors_naming_the_file_and_the_cause() {
        let expected: [(&str, &[&str]); 8] = [
            ("unsupported_op.onnx", &["unsupported_op.onnx", "PulsewatchNoSuchOp"]),
            ("bad_output_shape.onnx", &["output shape [batch, 2, 1] differs from input shape [batch, 4, 1]"]),
            ("float64_w4_c1.onnx", &["the input is F64; an autoencoder takes and returns float32"]),
            ("batch2_w4_c1.onnx", &["input shape [2, 4, 1]: the batch dimension must be symbolic or 1, not 2"]),
            ("window_20000_c1.onnx", &["a window of 20000 samples is more than 10000"]),
            ("lstm_no_initial_state.onnx", &["lstm_no_initial_state.onnx: tract panicked loading the model", "UndeterminedSymbol"]),
            ("no_metadata.onnx", &["no `pulsewatch` entry in the model's metadata_props"]),
            ("does_not_exist.onnx", &["does_not_exist.onnx: reading"]),
        ];
        for (file, parts) in expected {
            let err = load_err(file);
            assert!(parts.iter().all(|p| err.contains(p)), "{file}: {err}");
        }
        // a truncated model and bytes that are no model at all
        let bytes = std::fs::read(fixture("zero_w4_c2.onnx")).unwrap();
        assert!(matches!(Autoencoder::from_bytes(&bytes[..bytes.len() / 2]), Err(LoadCause::NotOnnx(_))), "truncated");
        assert!(matches!(Autoencoder::from_bytes(b"\xff\xfe this is not protobuf"), Err(LoadCause::NotOnnx(_))));
        // the causes callers can tell apart
        let cause = |name: &str| Autoencoder::load(&fixture(name)).unwrap_err().cause;
        assert!(matches!(cause("does_not_exist.onnx"), LoadCause::Read(_)));
        assert!(matches!(cause("lstm_no_initial_state.onnx"), LoadCause::Panicked(_)));
        assert!(matches!(cause("unsupported_op.onnx"), LoadCause::Unsupported(_)));
        assert!(matches!(cause("bad_output_shape.onnx"), LoadCause::Shape(_)));
        assert!(matches!(cause("no_metadata.onnx"), LoadCause::Metadata(_)));
    }

    #[test]
    fn rule_must_match_the_model_channels_and_step() {
        let model = Autoencoder::load(&fixture("zero_w4_c2.onnx")).unwrap();
        let channel = |name: &str| Channel { name: name.into(), expr: "up".into() };
        let minute = Duration::from_secs(60);
        assert!(model.check_rule(&[channel("a"), channel("b")], &minute).is_ok());
        let err = model.check_rule(&[channel("b"), channel("a")], &minute).unwrap_err().to_string();
        assert!(err.contains(r#"the rule's channels ["b", "a"] are not the model's channels ["a", "b"]"#), "{err}");
        let err = model.check_rule(&[channel("a")], &minute).unwrap_err().to_string();
        assert!(err.contains("not the model's channels"), "{err}");
        let err = model.check_rule(&[channel("a"), channel("b")], &Duration::from_secs(300)).unwrap_err();
        assert!(matches!(err, LoadCause::Rule(_)));
        let err = err.to_string();
        assert!(err.contains("trained on samples 1m apart, the rule's step is 5m"), "{err}");
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

            /// Mutated model bytes load or fail with a cause, never panic through: tract's panics
            /// on malformed graphs are caught.
            #[test]
            fn mutated_models_never_panic(file in 0usize..4, at in 0usize..600, len in 0usize..16, byte in any::<u8>(), cut in any::<bool>()) {
                let name = ["zero_w4_c2.onnx", "half_w4_c1.onnx", "lstm_no_initial_state.onnx", "fixed_batch_w4_c1.onnx"][file];
                let mut bytes = std::fs::read(fixture(name)).unwrap();
                let at = at % bytes.len();
                if cut {
                    bytes.truncate(at);
                } else {
                    let end = (at + len).min(bytes.len());
                    bytes[at..end].fill(byte);
                }
                if let Ok(model) = Autoencoder::from_bytes(&bytes) {
                    // a model that loads also scores, or says why not
                    let values = vec![1.0; model.window() * model.channels().len()];
                    let _ = model.reconstruction_errors(&values);
                }
            }
        }
    }
}

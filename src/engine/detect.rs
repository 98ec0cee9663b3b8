//! Evaluating one detector rule: query the last window of every channel, join the channels on
//! their labels, and score all series in one batched model call.
//!
//! A detector keeps no per-series state: each evaluation queries only the model's window, so a
//! new series is scored as soon as it has one. The model is loaded on the first evaluation and
//! again whenever its file changes, so a retrained model is picked up without a restart.

use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use super::evaluation::{query, EvalContext, EvalError, Outcome};
use crate::config::{Anomaly, Rule};
use crate::detector::window::{self, Joined};
use crate::detector::{self, Detector, LoadCause, LoadError, ScoreError};
use crate::exporter::{SeriesOutput, Values};
use crate::models::MAX_SCORE;
use crate::source::format_labels;

/// What identifies one version of a model file: a rename, a rewrite, a copy or a change of
/// permissions changes it. On Unix the inode change time is part of it, because tools that keep
/// a file's size and modification time (`cp -p`, `rsync -t`) cannot keep that.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Fingerprint {
    len: u64,
    modified: Option<SystemTime>,
    #[cfg(unix)]
    inode: (u64, u64, i64, i64),
}

impl Fingerprint {
    /// The fingerprint of the detector's file; a detector without one has a single version.
    fn of(path: Option<&Path>) -> Result<Option<Self>, LoadError> {
        let Some(path) = path else { return Ok(None) };
        let meta =
            std::fs::metadata(path).map_err(|err| LoadError { path: path.to_path_buf(), cause: LoadCause::Read(err.to_string()) })?;
        Ok(Some(Self {
            len: meta.len(),
            modified: meta.modified().ok(),
            #[cfg(unix)]
            inode: {
                use std::os::unix::fs::MetadataExt;
                (meta.dev(), meta.ino(), meta.ctime(), meta.ctime_nsec())
            },
        }))
    }
}

/// What loading a detector gave.
type Loaded = Result<Arc<dyn Detector>, LoadError>;

/// The detector of one rule, and the version of the file it came from.
#[derive(Debug, Default)]
pub struct DetectorState {
    /// The file's fingerprint when last loaded, and what loading it gave.
    loaded: Option<(Option<Fingerprint>, Loaded)>,
    /// Loads attempted, successful or not.
    loads: u64,
    series: usize,
}

impl DetectorState {
    /// Series scored by the last evaluation.
    pub fn series_count(&self) -> usize {
        self.series
    }

    /// The rule's detector, (re)loaded if its file changed since the last load. A detector that
    /// failed to load is not retried until the file changes.
    ///
    /// # Errors
    /// The file cannot be read, or the detector cannot be loaded or does not fit the rule.
    pub async fn load_model(&mut self, rule: &Rule, anomaly: &Anomaly) -> Result<Arc<dyn Detector>, LoadError> {
        let fingerprint = Fingerprint::of(anomaly.detector.model_file())?;
        if let Some((loaded_from, detector)) = &self.loaded {
            if *loaded_from == fingerprint {
                return detector.clone();
            }
        }
        let (spec, step) = (anomaly.clone(), rule.step.clone());
        self.loads += 1;
        let detector = tokio::task::spawn_blocking(move || detector::load(&spec, &step)).await.unwrap_or_else(|panic| {
            let path = anomaly.detector.model_file().unwrap_or(Path::new("")).to_path_buf();
            Err(LoadError { path, cause: LoadCause::Panicked(panic.to_string()) })
        });
        match &detector {
            Ok(d) => tracing::info!(rule = %rule.name, detector = %d.describe(), "model loaded"),
            Err(err) => tracing::error!(rule = %rule.name, error = %err, "model not loaded"),
        }
        self.loaded = Some((fingerprint, detector.clone()));
        detector
    }

    /// Runs one evaluation at `ctx.now`.
    ///
    /// # Errors
    /// The detector cannot be loaded or run, a query failed, or a channel's series cannot be
    /// joined. The outputs of the previous evaluation then stay until they are stale.
    pub async fn evaluate(&mut self, rule: &Rule, anomaly: &Anomaly, ctx: &EvalContext<'_>) -> Result<Outcome, EvalError> {
        let detector = self.load_model(rule, anomaly).await?;
        let step = rule.step.secs();
        let end = ctx.now - ctx.now.rem_euclid(step);
        let n = detector.window();
        let start = end - (n as i64 - 1) * step;
        let joined = fetch_channels(ctx, anomaly, start, end, step).await?;
        let mut outcome = Outcome::default();
        if let Some((key, channel)) = joined.partial.first() {
            outcome.warnings.push(format!(
                "{} series lack a channel and are not scored, e.g. {} has no {channel:?}: do the channels' labels match (see `on`)?",
                joined.partial.len(),
                format_labels(key)
            ));
        }
        let mut keys = Vec::new();
        let mut values = Vec::new();
        for (key, channels) in joined.series {
            let grid = window::align(&channels, start, step, n);
            if let Some(w) = window::window(&grid, n - 1, n) {
                keys.push(key);
                values.extend(w);
            }
        }
        // Every window in one call: a batched model scores them together.
        let scores = if keys.is_empty() {
            vec![]
        } else {
            let scorer = detector.clone();
            tokio::task::spawn_blocking(move || scorer.score(&values))
                .await
                .unwrap_or_else(|panic| Err(ScoreError::Panicked(panic.to_string())))?
        };
        for (key, detector::Score { score, raw }) in keys.iter().zip(scores) {
            if !(score.is_finite() && raw.is_finite()) {
                outcome.warnings.push(format!("series {}: the detector's value is {raw}", format_labels(key)));
                continue;
            }
            let score = score.min(MAX_SCORE);
            outcome.series.push(SeriesOutput::new(key, rule, Values::Reconstruction { ts: end, score, error: raw }));
        }
        self.series = outcome.series.len();
        Ok(outcome)
    }
}

/// Queries every channel of `anomaly` over `[start, end]` and joins their series on the rule's
/// labels: what the live detector scores and `export-windows` writes.
///
/// # Errors
/// A failed query, or two series of one channel on one key.
pub async fn fetch_channels(ctx: &EvalContext<'_>, anomaly: &Anomaly, start: i64, end: i64, step: i64) -> Result<Joined, EvalError> {
    let mut answers = Vec::with_capacity(anomaly.channels.len());
    for channel in &anomaly.channels {
        answers.push((channel.name.as_str(), query(ctx, &channel.expr, start, end, step).await?));
    }
    let mut joined = window::join(answers, anomaly.on.as_deref())?;
    // The join key is the series: all channels of a key go to the same shard.
    joined.series.retain(|key, _| ctx.shard.owns(key));
    joined.partial.retain(|(key, _)| ctx.shard.owns(key));
    Ok(joined)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Channel, DetectorSpec, RuleKind};
    use crate::engine::FitPool;
    use crate::engine::Shard;
    use crate::source::{self, Labels, Series, Source};
    use futures::future::BoxFuture;
    use futures::FutureExt;

    /// Answers constant series: `cpu` for instances a, b and c, `mem` for a and c, `value` for a.
    struct Constant;

    impl Source for Constant {
        fn query_range<'a>(&'a self, expr: &'a str, start: i64, end: i64, step: i64) -> BoxFuture<'a, Result<Vec<Series>, source::Error>> {
            let make = |instance: &str, v: f64| Series {
                labels: Labels::from([("__name__".into(), expr.into()), ("instance".into(), instance.into())]),
                samples: (start..=end).step_by(step as usize).map(|t| (t, v)).collect(),
            };
            let out = match expr {
                "cpu" => vec![make("a", 14.0), make("b", 10.0), make("c", 10.0)],
                "mem" => vec![make("a", 100.0), make("c", 110.0)],
                _ => vec![make("a", 3.0)],
            };
            async move { Ok(out) }.boxed()
        }
    }

    fn fixture(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/models").join(name)
    }

    /// Evaluates at `now` against the `Constant` source.
    async fn eval(state: &mut DetectorState, rule: &Rule, anomaly: &Anomaly, now: i64) -> Result<Outcome, EvalError> {
        let pool = FitPool::new(1);
        state
            .evaluate(
                rule,
                anomaly,
                &EvalContext { source: &Constant, metrics: None, pool: &pool, now, stale_secs: 600, shard: Shard::ALL },
            )
            .await
    }

    /// Shards split a detector's series by their join key: every key goes to one shard with
    /// all of its channels, and so do the keys some channel lacks.
    #[tokio::test]
    async fn shards_split_joined_series_by_their_key() {
        let (_, anomaly) = rule(&["cpu", "mem"], &fixture("zero_w4_c2.onnx"));
        let pool = FitPool::new(1);
        let (mut series, mut partial) = (Vec::new(), Vec::new());
        for index in 0..3 {
            let shard = Shard::new(index, 3).unwrap();
            let ctx = EvalContext { source: &Constant, metrics: None, pool: &pool, now: 6_000_000, stale_secs: 600, shard };
            let joined = fetch_channels(&ctx, &anomaly, 6_000_000 - 180, 6_000_000, 60).await.unwrap();
            assert!(joined.series.values().all(|channels| channels.len() == 2), "both channels of a key together");
            series.extend(joined.series.into_keys().map(|k| k["instance"].clone()));
            partial.extend(joined.partial.into_iter().map(|(k, _)| k["instance"].clone()));
        }
        series.sort();
        assert_eq!(series, ["a", "c"], "each joined key in exactly one shard");
        assert_eq!(partial, ["b"]);
    }

    fn rule(channels: &[&str], model_file: &Path) -> (Rule, Anomaly) {
        let anomaly = Anomaly {
            channels: channels.iter().map(|c| Channel { name: (*c).into(), expr: (*c).into() }).collect(),
            on: None,
            detector: DetectorSpec::Autoencoder { model_file: model_file.to_path_buf() },
        };
        let rule = Rule {
            name: "ae".into(),
            step: crate::config::Duration::from_secs(60),
            labels: Default::default(),
            kind: RuleKind::Anomaly(anomaly.clone()),
        };
        (rule, anomaly)
    }

    #[tokio::test]
    async fn scores_joined_channels() {
        // zero_w4_c2: channels a (mean 10, std 2) and b (mean 100, std 10), threshold 2
        let (rule, mut anomaly) = rule(&["cpu", "mem"], &fixture("zero_w4_c2.onnx"));
        let mut state = DetectorState::default();
        let err = eval(&mut state, &rule, &anomaly, 6_000_030).await.unwrap_err().to_string();
        assert!(err.contains(r#"the rule's channels ["cpu", "mem"] are not the model's channels ["a", "b"]"#), "{err}");

        anomaly.channels[0].name = "a".into();
        anomaly.channels[1].name = "b".into();
        let mut state = DetectorState::default();
        let outcome = eval(&mut state, &rule, &anomaly, 6_000_030).await.unwrap();
        // a: z = ((14 - 10) / 2, 0) = (2, 0), so the error is (4 + 0) / 2 = 2
        // c: z = (0, (110 - 100) / 10) = (0, 1), so the error is 0.5
        // b has no mem (channel "b" of the model): not scored, and said so
        let labels = |i: &str| vec![("instance".to_string(), i.to_string()), ("rule".to_string(), "ae".to_string())];
        let got: Vec<_> = outcome.series.iter().map(|o| (o.labels.clone(), o.values.clone())).collect();
        assert_eq!(
            got,
            vec![
                (labels("a"), Values::Reconstruction { ts: 6_000_000, score: 1.0, error: 2.0 }),
                (labels("c"), Values::Reconstruction { ts: 6_000_000, score: 0.25, error: 0.5 }),
            ]
        );
        assert_eq!(state.series_count(), 2);
        assert_eq!(outcome.warnings.len(), 1);
        assert!(
            outcome.warnings[0].starts_with(r#"1 series lack a channel and are not scored, e.g. {instance="b"} has no "b""#),
            "{:?}",
            outcome.warnings
        );
    }

    #[tokio::test]
    async fn a_replaced_model_file_is_loaded_at_the_next_evaluation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.onnx");
        let (rule, anomaly) = rule(&["value"], &path);
        let mut state = DetectorState::default();
        let swap = |name: &str| {
            // as a user should: write beside, then rename over
            let tmp = dir.path().join(".model.onnx.tmp");
            std::fs::copy(fixture(name), &tmp).unwrap();
            std::fs::rename(&tmp, &path).unwrap();
        };
        let score = |outcome: Outcome| outcome.series.iter().map(SeriesOutput::score).collect::<Vec<_>>();

        let err = eval(&mut state, &rule, &anomaly, 6_000_030).await.unwrap_err().to_string();
        assert!(err.contains("model.onnx") && err.contains("No such file"), "{err}");

        // value: mean 0, std 1, threshold 1; the series is 3. The zero model's error is 3².
        swap("zero_w4_c1.onnx");
        let outcome = eval(&mut state, &rule, &anomaly, 6_000_030).await.unwrap();
        assert_eq!(score(outcome), vec![9.0]);

        // the half model reconstructs x / 2, so the error is a quarter
        swap("half_w4_c1.onnx");
        let outcome = eval(&mut state, &rule, &anomaly, 6_000_090).await.unwrap();
        assert_eq!(score(outcome), vec![2.25]);

        // a broken replacement fails the rule, with the file and the cause
        std::fs::write(&path, b"garbage").unwrap();
        let err = eval(&mut state, &rule, &anomaly, 6_000_150).await.unwrap_err().to_string();
        assert!(err.contains("model.onnx: not an ONNX model"), "{err}");

        // and a good one brings it back
        swap("zero_w4_c1.onnx");
        assert_eq!(score(eval(&mut state, &rule, &anomaly, 6_000_210).await.unwrap()), vec![9.0]);
    }

    /// Rewrites `path` in place with `content`, then gives it back its size and modification
    /// time, as `cp -p` or `rsync -t` do: only the inode change time tells the versions apart.
    fn rewrite_keeping_mtime(path: &Path, content: &[u8]) {
        let before = std::fs::metadata(path).unwrap();
        assert_eq!(before.len(), content.len() as u64, "the versions must have one size");
        let ctime = |m: &std::fs::Metadata| {
            use std::os::unix::fs::MetadataExt;
            (m.ctime(), m.ctime_nsec())
        };
        // File times tick with the kernel's coarse clock: rewrite until the change time moved.
        for _ in 0..100 {
            std::fs::write(path, content).unwrap();
            std::fs::File::options().write(true).open(path).unwrap().set_modified(before.modified().unwrap()).unwrap();
            let after = std::fs::metadata(path).unwrap();
            assert_eq!((after.len(), after.modified().unwrap()), (before.len(), before.modified().unwrap()));
            if ctime(&after) != ctime(&before) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("the inode change time of {} did not move", path.display());
    }

    #[tokio::test]
    async fn a_model_rewritten_with_its_size_and_mtime_is_loaded_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.onnx");
        std::fs::copy(fixture("zero_w4_c1.onnx"), &path).unwrap();
        let (rule, anomaly) = rule(&["value"], &path);
        let mut state = DetectorState::default();
        let score = |outcome: Outcome| outcome.series.iter().map(SeriesOutput::score).collect::<Vec<_>>();
        assert_eq!(score(eval(&mut state, &rule, &anomaly, 6_000_030).await.unwrap()), vec![9.0]);
        rewrite_keeping_mtime(&path, &std::fs::read(fixture("half_w4_c1.onnx")).unwrap());
        assert_eq!(score(eval(&mut state, &rule, &anomaly, 6_000_090).await.unwrap()), vec![2.25], "the half model");
        assert_eq!(state.loads, 2);
    }

    #[tokio::test]
    async fn a_failed_load_is_retried_only_when_the_file_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.onnx");
        std::fs::write(&path, b"garbage").unwrap();
        let (rule, anomaly) = rule(&["value"], &path);
        let mut state = DetectorState::default();
        for now in [6_000_030, 6_000_090, 6_000_150] {
            let err = eval(&mut state, &rule, &anomaly, now).await.unwrap_err().to_string();
            assert!(err.contains("model.onnx: not an ONNX model"), "{err}");
        }
        assert_eq!(state.loads, 1, "one failed load, remembered");
        rewrite_keeping_mtime(&path, b"garbag2");
        assert!(eval(&mut state, &rule, &anomaly, 6_000_210).await.is_err());
        assert_eq!(state.loads, 2, "a changed file is tried again");
        std::fs::copy(fixture("zero_w4_c1.onnx"), &path).unwrap();
        for now in [6_000_270, 6_000_330] {
            assert!(eval(&mut state, &rule, &anomaly, now).await.is_ok());
        }
        assert_eq!(state.loads, 3, "a good model is loaded once");
    }
}

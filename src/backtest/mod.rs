//! Backtests: how a rule would have behaved on recorded data, scored against labelled anomaly
//! windows (NAB) and on forecast accuracy.
//!
//! Each recording is replayed through the live engine ([`replay`]), then scored: window
//! precision/recall/F1 at the alerting threshold, NAB's score with its threshold optimised over
//! all files, the accuracy of a holdout forecast ([`accuracy`]), and what the shipped alerting
//! rules would have sent ([`alerts`]). Outputs: per-point, NAB results and alerts CSVs
//! ([`report`]) and an SVG per series ([`plot`]).

pub mod accuracy;
pub mod alerts;
pub mod data;
pub mod plot;
pub mod replay;
pub mod report;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressStyle};

use crate::config::Rule;
use crate::engine::FitPool;
use crate::nab::{self, CorpusScore, CrossValidated, Profile, WindowCounts};
use alerts::{AlertCounts, AlertRules};
use data::Recording;
use replay::Trace;
use report::FileLine;

/// How to run a backtest.
#[derive(Clone, Debug)]
pub struct Options {
    /// Share of each recording, at its end, held out for the forecast-accuracy check.
    pub holdout: f64,
    /// Where to write the CSVs and plots (nothing is written without it).
    pub out: Option<PathBuf>,
    /// Show a progress bar (drawn only when stderr is a terminal).
    pub progress: bool,
}

/// A backtest's results.
#[derive(Debug)]
pub struct Report {
    /// What the engine did with each recording, sorted by key.
    pub traces: Vec<Trace>,
    /// One summary line per recording.
    pub lines: Vec<FileLine>,
    /// NAB scores of the labelled recordings, one per profile (empty without labels).
    pub corpus: Vec<CorpusScore>,
    /// The same profiles cross-validated by NAB category ([`fold`]); `None` with one category.
    pub cross_validated: Vec<Option<CrossValidated>>,
}

impl Report {
    /// The summary table.
    pub fn summary(&self) -> String {
        report::summary(&self.lines, &self.corpus, &self.cross_validated)
    }

    /// The totals of each report, one line per `(name, report)`: an ensemble beside its members.
    pub fn compared(reports: &[(&str, &Report)]) -> String {
        report::members_summary(reports)
    }
}

/// Replays `recordings` through `rule` (several at once, one per CPU), then scores them against
/// `labels` (recordings it does not name are not NAB-scored) and writes the outputs.
///
/// # Errors
/// Labels that do not fit a recording's rows, and output I/O errors.
pub async fn run(rule: &Rule, recordings: Vec<Recording>, labels: Option<&nab::Labels>, options: &Options) -> anyhow::Result<Report> {
    // Everything that can be checked is checked before minutes of replay.
    let alert_rules = AlertRules::shipped()?;
    let mut rules = Vec::with_capacity(recordings.len());
    for recording in &recordings {
        rules.push(Arc::new(replay::rule_for(rule, recording)?));
        if let Some(windows) = labels.and_then(|l| l.windows(&recording.key)) {
            let unscored = nab::FileResult {
                key: recording.key.clone(),
                timestamps: recording.timestamps.clone(),
                scores: vec![0.0; recording.values.len()],
            };
            WindowCounts::count(&unscored, windows, report::ALERT_THRESHOLD).with_context(|| format!("labels of {}", recording.key))?;
        }
    }
    let rows: usize = recordings.iter().map(|r| r.values.len()).sum();
    let bar = if options.progress { ProgressBar::new(rows as u64) } else { ProgressBar::hidden() };
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{wide_bar}] {pos}/{len} rows, eta {eta} {msg}").expect("static template"),
    );
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    let pool = FitPool::new(cpus);
    let gate = Arc::new(tokio::sync::Semaphore::new(cpus));
    let mut tasks = tokio::task::JoinSet::new();
    for (recording, rule) in recordings.into_iter().zip(rules) {
        let (pool, gate, bar) = (pool.clone(), gate.clone(), bar.clone());
        tasks.spawn(async move {
            let _turn = gate.acquire_owned().await.expect("never closed");
            let trace = replay::run(&rule, recording, &pool, || bar.inc(1)).await;
            (trace, rule)
        });
    }
    let mut replays = Vec::new();
    while let Some(done) = tasks.join_next().await {
        replays.push(done.context("a replay panicked")?);
    }
    bar.finish_and_clear();
    replays.sort_by(|a, b| a.0.recording.key.cmp(&b.0.recording.key));

    let windows_of = |t: &Trace| labels.and_then(|l| l.windows(&t.recording.key));
    let results: Vec<nab::FileResult> = replays.iter().map(|(t, _)| report::file_result(t)).collect();
    let labelled: Vec<nab::FileResult> =
        replays.iter().zip(&results).filter(|((t, _), _)| windows_of(t).is_some()).map(|(_, r)| r.clone()).collect();
    let corpus = match labels {
        Some(labels) if !labelled.is_empty() => {
            Profile::ALL.iter().map(|p| nab::optimize(&labelled, labels, p)).collect::<Result<Vec<_>, _>>()?
        }
        _ => Vec::new(),
    };
    let cross_validated = match labels {
        Some(labels) if !labelled.is_empty() => Profile::ALL
            .iter()
            .map(|p| nab::cross_validate(&labelled, labels, p, |key| fold(key).to_string()))
            .collect::<Result<Vec<_>, _>>()?,
        _ => Vec::new(),
    };

    let stems = output_stems(replays.iter().map(|(t, _)| t.recording.key.as_str()));
    let mut lines = Vec::new();
    for (((trace, rule), stem), result) in replays.iter().zip(&stems).zip(&results) {
        let key = &trace.recording.key;
        let windows = windows_of(trace);
        let counts = windows.map(|w| WindowCounts::count(result, w, report::ALERT_THRESHOLD)).transpose()?;
        let rows = alerts::rows(trace);
        let episodes = alert_rules.episodes(&rows);
        let (alert_counts, outcomes) = match windows {
            Some(w) => {
                let (counts, outcomes) = AlertCounts::count(&episodes, &rows, result, w)?;
                (counts, Some(outcomes))
            }
            None => (AlertCounts::unlabelled(&episodes), None),
        };
        let holdout = accuracy::holdout(rule, &trace.recording, options.holdout).unwrap_or_else(|e| {
            tracing::warn!(series = %key, error = %e, "holdout fit failed");
            None
        });
        lines.push(FileLine {
            key: key.clone(),
            rows: trace.points.len(),
            scored: trace.points.iter().flatten().count(),
            flagged: trace.points.iter().flatten().filter(|p| p.score >= 1.0).count(),
            windows: counts,
            alerts: alert_counts,
            nab_raw: corpus.first().and_then(|c| c.files.iter().find(|f| &f.key == key)).map(|f| f.raw),
            accuracy: holdout.as_ref().map(|h| h.accuracy.clone()),
        });
        if let Some(out) = &options.out {
            let base = out.join(stem);
            if let Some(parent) = base.parent() {
                std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
            }
            let with = |ext: &str| PathBuf::from(format!("{}.{ext}", base.display()));
            report::write_points(&with("points.csv"), trace).with_context(|| format!("writing {}", with("points.csv").display()))?;
            report::write_alerts(&with("alerts.csv"), trace, &episodes, outcomes.as_deref())
                .with_context(|| format!("writing {}", with("alerts.csv").display()))?;
            if let Some(w) = windows {
                report::write_nab(&with("nab.csv"), trace, w).with_context(|| format!("writing {}", with("nab.csv").display()))?;
            }
            plot::draw(&with("svg"), trace, windows.unwrap_or_default(), holdout.as_ref())?;
        }
    }
    let traces = replays.into_iter().map(|(t, _)| t).collect();
    Ok(Report { traces, lines, corpus, cross_validated })
}

/// The fold of a recording in the cross-validated NAB score: its NAB category (`realTraffic` of
/// `realTraffic/speed_6005.csv`), or the recording itself when its key has none.
pub fn fold(key: &str) -> &str {
    key.split_once('/').map_or(key, |(category, _)| category)
}

/// A file name (with NAB's category directory) for a recording's outputs.
fn file_stem(key: &str) -> PathBuf {
    let key = key.strip_suffix(".csv").unwrap_or(key);
    let safe: String = key.chars().map(|c| if c.is_ascii_alphanumeric() || "._-/".contains(c) { c } else { '_' }).collect();
    Path::new(safe.trim_matches('/'))
        .components()
        .filter_map(|c| match c {
            // file systems allow 255 bytes a name; leave room for the extensions
            std::path::Component::Normal(name) => Some(name.to_string_lossy().chars().take(200).collect::<String>()),
            _ => None,
        })
        .collect()
}

/// One [`file_stem`] per key, numbered `-2`, `-3`... where keys would share one, so no output
/// overwrites another.
fn output_stems<'a>(keys: impl Iterator<Item = &'a str>) -> Vec<PathBuf> {
    let mut used = std::collections::HashSet::new();
    keys.map(|key| {
        let stem = file_stem(key);
        let mut candidate = stem.clone();
        for n in 2.. {
            if used.insert(candidate.clone()) {
                break;
            }
            candidate = PathBuf::from(format!("{}-{n}", stem.display()));
        }
        candidate
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_names_stay_inside_the_out_dir() {
        assert_eq!(file_stem("realKnownCause/nyc_taxi.csv"), PathBuf::from("realKnownCause/nyc_taxi"));
        assert_eq!(file_stem("{job=\"a/../b\"}"), PathBuf::from("_job__a/b__"));
        assert_eq!(file_stem("../../etc/x.csv"), PathBuf::from("etc/x"));
        assert_eq!(file_stem(&"a".repeat(300)).to_string_lossy().len(), 200);
        // labels that differ only in characters mapped to `_` keep their own files
        let stems = output_stems(["{a=\"x:1\"}", "{a=\"x_1\"}", "{a=\"x;1\"}"].into_iter());
        assert_eq!(stems, vec![PathBuf::from("_a__x_1__"), PathBuf::from("_a__x_1__-2"), PathBuf::from("_a__x_1__-3")]);
    }
}

//! What a backtest writes: per-point CSVs, NAB results files, alerts CSVs, and the summary table.

use std::fmt::Write as _;
use std::path::Path;

use super::accuracy::Accuracy;
use super::alerts::{self, AlertCounts, Episode, Outcome};
use super::replay::Trace;
use crate::nab::{self, CorpusScore, CrossValidated, FileResult, WindowCounts};

/// Maps an anomaly score (0 at the prediction, 1 at the band's edge, unbounded) into NAB's
/// `[0, 1]`: `s / (1 + s)`. Monotone, so NAB's threshold sweep sees the same order; the band's
/// edge maps to 0.5. Rows not scored yet (warm-up) get 0.
pub fn nab_score(score: Option<f64>) -> f64 {
    score.map_or(0.0, |s| s / (1.0 + s))
}

/// The NAB threshold equal to the alerting threshold `pulsewatch_anomaly_score >= 1`.
pub const ALERT_THRESHOLD: f64 = 0.5;

/// The trace as NAB's scorer takes it.
pub fn file_result(trace: &Trace) -> FileResult {
    FileResult {
        key: trace.recording.key.clone(),
        timestamps: trace.recording.timestamps.clone(),
        scores: trace.points.iter().map(|p| nab_score(p.map(|p| p.score))).collect(),
    }
}

fn timestamp(trace: &Trace, i: usize) -> String {
    trace.recording.timestamps[i].format("%Y-%m-%d %H:%M:%S").to_string()
}

/// Writes `timestamp,value,yhat,yhat_lower,yhat_upper,anomaly_score`, then for an ensemble
/// `anomaly_score_<model>` per member, one row per input row (the model's columns empty while it
/// warms up).
///
/// # Errors
/// I/O errors.
pub fn write_points(path: &Path, trace: &Trace) -> Result<(), csv::Error> {
    let mut w = csv::Writer::from_path(path)?;
    let members = trace.members.iter().map(|m| format!("anomaly_score_{m}"));
    let header = ["timestamp", "value", "yhat", "yhat_lower", "yhat_upper", "anomaly_score"].map(String::from);
    w.write_record(header.into_iter().chain(members))?;
    for (i, point) in trace.points.iter().enumerate() {
        let value = trace.recording.values[i].to_string();
        let model = match point {
            // a detector predicts nothing: NaN there, written as empty
            Some(p) => [p.yhat, p.lower, p.upper, p.score].map(|v| if v.is_nan() { String::new() } else { v.to_string() }),
            None => Default::default(),
        };
        let mut members: Vec<String> = trace.member_scores[i].iter().map(f64::to_string).collect();
        members.resize(trace.members.len(), String::new());
        w.write_record([timestamp(trace, i), value].iter().chain(&model).chain(&members))?;
    }
    w.flush()?;
    Ok(())
}

/// Writes NAB's results format: `timestamp,value,anomaly_score,label`, the score mapped by
/// [`nab_score`] and the label 1 inside a labelled window.
///
/// # Errors
/// I/O errors.
pub fn write_nab(path: &Path, trace: &Trace, windows: &[nab::Window]) -> Result<(), csv::Error> {
    let mut w = csv::Writer::from_path(path)?;
    w.write_record(["timestamp", "value", "anomaly_score", "label"])?;
    for (i, point) in trace.points.iter().enumerate() {
        let t = trace.recording.timestamps[i];
        let label = u8::from(windows.iter().any(|w| w.start <= t && t <= w.end));
        w.write_record([
            timestamp(trace, i),
            trace.recording.values[i].to_string(),
            nab_score(point.map(|p| p.score)).to_string(),
            label.to_string(),
        ])?;
    }
    w.flush()?;
    Ok(())
}

/// Writes `firing,resolved,severity,outcome,window,delay_s`, one row per alert the shipped
/// alerting rules would have sent (see [`alerts`]): the timestamps of the rows at which it starts
/// firing and is resolved (empty if it still fires at the end), the severities that fired during
/// it (`;`-separated), and with labels how it counts: `window` (with the window's number, from 1,
/// and the seconds from its first row), `false`, or `probation` (not counted).
///
/// # Errors
/// I/O errors.
pub fn write_alerts(path: &Path, trace: &Trace, episodes: &[Episode], outcomes: Option<&[Outcome]>) -> Result<(), csv::Error> {
    let mut w = csv::Writer::from_path(path)?;
    w.write_record(["firing", "resolved", "severity", "outcome", "window", "delay_s"])?;
    for (i, episode) in episodes.iter().enumerate() {
        let resolved = if episode.end < trace.points.len() { timestamp(trace, episode.end) } else { String::new() };
        let severity = episode.severities.iter().map(String::as_str).collect::<Vec<_>>().join(";");
        let [outcome, window, delay] = match outcomes.map(|o| o[i]) {
            None => Default::default(),
            Some(Outcome::Probation) => ["probation".to_string(), String::new(), String::new()],
            Some(Outcome::False) => ["false".to_string(), String::new(), String::new()],
            Some(Outcome::Window { window, delay }) => ["window".to_string(), (window + 1).to_string(), delay.to_string()],
        };
        w.write_record([timestamp(trace, episode.start), resolved, severity, outcome, window, delay])?;
    }
    w.flush()?;
    Ok(())
}

/// One line of the summary.
#[derive(Clone, Debug)]
pub struct FileLine {
    /// The recording's key.
    pub key: String,
    /// Rows.
    pub rows: usize,
    /// Rows scored (after warm-up).
    pub scored: usize,
    /// Rows scoring at least 1.
    pub flagged: usize,
    /// Window counts at the alerting threshold, when labelled.
    pub windows: Option<WindowCounts>,
    /// What the shipped alerting rules would have sent (only [`AlertCounts::sent`] without
    /// labels).
    pub alerts: AlertCounts,
    /// Raw NAB standard-profile score at the optimised threshold, when labelled.
    pub nab_raw: Option<f64>,
    /// Holdout accuracy.
    pub accuracy: Option<Accuracy>,
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("-".into(), |v| format!("{v:.digits$}"))
}

fn delay(v: Option<i64>) -> String {
    v.map_or("-".into(), alerts::format_secs)
}

/// The summary table: one line per file, a total, and the corpus NAB scores.
pub fn summary(lines: &[FileLine], corpus: &[CorpusScore], cross_validated: &[Option<CrossValidated>]) -> String {
    let width = lines.iter().map(|l| l.key.len()).max().unwrap_or(4).max(5);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:width$}  {:>6} {:>6} {:>7} {:>3} {:>3} {:>3} {:>9} {:>6} {:>5} {:>6} {:>7} {:>5} {:>6} {:>8} {:>8} {:>10} {:>10} {:>6} {:>8}",
        "file",
        "rows",
        "scored",
        "flagged",
        "tp",
        "fp",
        "fn",
        "precision",
        "recall",
        "f1",
        "alerts",
        "alerted",
        "false",
        "missed",
        "delay",
        "nab_raw",
        "mae",
        "rmse",
        "mase",
        "coverage"
    );
    let mut total = WindowCounts::default();
    let mut total_alerts = AlertCounts::default();
    for l in lines {
        let w = l.windows.unwrap_or_default();
        total = total + w;
        if l.windows.is_some() {
            total_alerts = total_alerts + l.alerts.clone();
        }
        let counts = |v: usize| if l.windows.is_some() { v.to_string() } else { "-".into() };
        let acc = l.accuracy.as_ref();
        let _ = writeln!(
            out,
            "{:width$}  {:>6} {:>6} {:>7} {:>3} {:>3} {:>3} {:>9} {:>6} {:>5} {:>6} {:>7} {:>5} {:>6} {:>8} {:>8} {:>10} {:>10} {:>6} {:>8}",
            l.key,
            l.rows,
            l.scored,
            l.flagged,
            counts(w.tp),
            counts(w.fp),
            counts(w.fn_),
            opt(l.windows.map(|w| w.precision()), 2),
            opt(l.windows.map(|w| w.recall()), 2),
            opt(l.windows.map(|w| w.f1()), 2),
            l.alerts.sent,
            counts(l.alerts.windows_alerted),
            counts(l.alerts.false_alerts),
            counts(l.alerts.windows_missed),
            delay(l.alerts.median_delay()),
            opt(l.nab_raw, 2),
            opt(acc.map(|a| a.mae), 3),
            opt(acc.map(|a| a.rmse), 3),
            opt(acc.and_then(|a| a.mase), 2),
            opt(acc.map(|a| a.coverage), 2),
        );
    }
    if lines.iter().any(|l| l.windows.is_some()) {
        let _ = writeln!(
            out,
            "{:width$}  {:>6} {:>6} {:>7} {:>3} {:>3} {:>3} {:>9.2} {:>6.2} {:>5.2} {:>6} {:>7} {:>5} {:>6} {:>8}",
            "total",
            lines.iter().map(|l| l.rows).sum::<usize>(),
            lines.iter().map(|l| l.scored).sum::<usize>(),
            lines.iter().map(|l| l.flagged).sum::<usize>(),
            total.tp,
            total.fp,
            total.fn_,
            total.precision(),
            total.recall(),
            total.f1(),
            total_alerts.sent,
            total_alerts.windows_alerted,
            total_alerts.false_alerts,
            total_alerts.windows_missed,
            delay(total_alerts.median_delay()),
        );
        let a = &total_alerts;
        let _ = writeln!(
            out,
            "alerts ({} of rules/pulsewatch.rules.yml): {} of {} windows alerted, {} missed, {} false alerts ({} sent in all); \
             delay to a window's first alert: median {}, max {}",
            alerts::GROUP,
            a.windows_alerted,
            a.windows_alerted + a.windows_missed,
            a.windows_missed,
            a.false_alerts,
            a.sent,
            delay(a.median_delay()),
            delay(a.max_delay()),
        );
    }
    for c in corpus {
        let _ = writeln!(out, "NAB {:<19} {:>7} (threshold {:.4}, raw {:.2})", c.profile.name, opt(c.normalized, 1), c.threshold, c.raw);
    }
    let folded: Vec<String> = corpus
        .iter()
        .zip(cross_validated)
        .filter_map(|(c, cv)| Some(format!("{} {}", c.profile.name, opt(cv.as_ref()?.normalized, 1))))
        .collect();
    if !folded.is_empty() {
        let _ = writeln!(out, "NAB cross-validated (each category at the threshold of the others): {}", folded.join(", "));
    }
    out
}

/// One line per model of an ensemble (each replayed alone) and one for the ensemble: what it
/// flagged, the windows it found and missed, the alerts it would have sent, its NAB scores.
pub fn members_summary(models: &[(&str, &super::Report)]) -> String {
    let width = models.iter().map(|m| m.0.len()).max().unwrap_or(5).max(5);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:width$}  {:>7} {:>3} {:>3} {:>3} {:>7} {:>5} {:>6} {:>8} {:>8} {:>8} {:>8}",
        "model", "flagged", "tp", "fp", "fn", "alerted", "false", "missed", "standard", "low_fp", "low_fn", "cv_std"
    );
    for (name, report) in models {
        let (lines, corpus, cross_validated) = (&report.lines, &report.corpus, &report.cross_validated);
        let labelled = || lines.iter().filter(|l| l.windows.is_some());
        let windows = labelled().fold(WindowCounts::default(), |t, l| t + l.windows.unwrap_or_default());
        let alerts = labelled().fold(AlertCounts::default(), |t, l| t + l.alerts.clone());
        let nab = |i: usize| opt(corpus.get(i).and_then(|c| c.normalized), 1);
        let cv = opt(cross_validated.first().and_then(|cv| cv.as_ref()?.normalized), 1);
        let _ = writeln!(
            out,
            "{name:width$}  {:>7} {:>3} {:>3} {:>3} {:>7} {:>5} {:>6} {:>8} {:>8} {:>8} {:>8}",
            lines.iter().map(|l| l.flagged).sum::<usize>(),
            windows.tp,
            windows.fp,
            windows.fn_,
            alerts.windows_alerted,
            alerts.false_alerts,
            alerts.windows_missed,
            nab(0),
            nab(1),
            nab(2),
            cv
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nab_mapping_is_monotone_and_puts_the_band_edge_at_one_half() {
        assert_eq!(nab_score(None), 0.0);
        assert_eq!(nab_score(Some(0.0)), 0.0);
        assert_eq!(nab_score(Some(1.0)), ALERT_THRESHOLD);
        assert_eq!(nab_score(Some(3.0)), 0.75);
        assert!(nab_score(Some(1e9)) < 1.0);
        let xs = [0.0, 0.1, 0.9, 1.0, 2.0, 50.0, 1e9];
        assert!(xs.windows(2).all(|w| nab_score(Some(w[0])) < nab_score(Some(w[1]))));
    }
}

//! `pulsewatch backtest`: replay recorded data through a rule and score what it would have done.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use super::{EXIT_FAILURE, EXIT_OK};
use crate::backtest::replay::ReplayError;
use crate::backtest::{self, data, Options};
use crate::config::{self, Defaults, Rule, RuleKind, SourceConfig};
use crate::nab;
use crate::source::PromClient;

/// The rule to replay when no rule file is given: every setting at its default.
const DEFAULT_RULES: &str = "groups: [{ name: backtest, rules: [{ forecast: backtest, expr: value }] }]";

/// What `pulsewatch backtest` was asked.
#[derive(Debug, clap::Args)]
pub struct BacktestArgs {
    /// Rule file; without it, one rule with every setting at its default.
    #[arg(long)]
    rules: Option<PathBuf>,
    /// The rule to replay, when the file has several.
    #[arg(long)]
    rule: Option<String>,
    /// CSV files (`timestamp,value`, NAB's format) to replay.
    #[arg(long)]
    csv: Vec<PathBuf>,
    /// A NAB-layout directory (`<category>/<file>.csv` and `labels.json`): replay every CSV.
    #[arg(long)]
    dataset: Option<PathBuf>,
    /// Anomaly windows in NAB's `combined_windows.json` format (default with --dataset: its
    /// labels.json), keyed `category/file.csv` (CSV input) or by the series' labels.
    #[arg(long)]
    labels: Option<PathBuf>,
    /// Replay the rule's expression from this Prometheus-compatible server instead.
    #[arg(long)]
    source: Option<String>,
    /// Start of the range with --source (RFC 3339 or Unix seconds).
    #[arg(long)]
    start: Option<String>,
    /// End of the range with --source (RFC 3339 or Unix seconds).
    #[arg(long)]
    end: Option<String>,
    /// Directory for per-point CSVs, NAB results files and SVG plots.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Share of each series, at its end, held out to measure forecast accuracy.
    #[arg(long, default_value_t = 0.1)]
    holdout: f64,
}

/// Runs the backtest and prints its summary; returns the exit code.
pub(super) fn backtest(args: &BacktestArgs) -> anyhow::Result<u8> {
    let rule = match pick_rule(args.rules.as_deref(), args.rule.as_deref()) {
        Ok(rule) => rule,
        Err(err) => {
            eprintln!("{err:#}");
            return Ok(EXIT_FAILURE);
        }
    };
    // The query to replay: a forecast's, or a one-channel detector's (`replay::rule_for` says
    // why several channels cannot replay).
    let expr = match &rule.kind {
        RuleKind::Forecast(forecast) => forecast.expr.clone(),
        RuleKind::Anomaly(anomaly) if anomaly.channels.len() == 1 => anomaly.channels[0].expr.clone(),
        RuleKind::Anomaly(anomaly) => bail!(ReplayError::Channels { rule: rule.name.clone(), channels: anomaly.channels.len() }),
    };
    if !(0.0..1.0).contains(&args.holdout) {
        bail!("--holdout must be in [0, 1), got {}", args.holdout);
    }
    let runtime = tokio::runtime::Runtime::new()?;
    let (recordings, labels) = runtime.block_on(inputs(args, &expr, rule.step.secs()))?;
    if recordings.is_empty() {
        bail!("nothing to replay: give --csv, --dataset or --source");
    }
    let options = Options { holdout: args.holdout, out: args.out.clone(), progress: std::io::stderr().is_terminal() };
    let report = runtime.block_on(backtest::run(&rule, recordings.clone(), labels.as_ref(), &options))?;
    for trace in &report.traces {
        for warning in &trace.warnings {
            eprintln!("{}: {warning}", trace.recording.key);
        }
    }
    print!("{}", report.summary());
    // An ensemble beside each of its members replayed alone (their outputs under `members/`).
    if let Some(forecast) = rule.forecast().filter(|f| f.model.combine().is_some()) {
        let mut members = Vec::new();
        for member in forecast.model.members() {
            let kind = RuleKind::Forecast(config::Forecast { model: member.clone(), ..forecast.clone() });
            let alone = Rule { kind, ..rule.clone() };
            let out = args.out.as_ref().map(|out| out.join("members").join(member.name()));
            let options = Options { out, ..options.clone() };
            members.push((member.name(), runtime.block_on(backtest::run(&alone, recordings.clone(), labels.as_ref(), &options))?));
        }
        let combine = forecast.model.combine().map_or("", |c| c.name());
        let mut rows: Vec<(&str, &backtest::Report)> = members.iter().map(|(name, r)| (*name, r)).collect();
        let name = format!("ensemble ({combine})");
        rows.push((&name, &report));
        print!("\nthe ensemble and each of its members alone:\n{}", backtest::Report::compared(&rows));
    }
    Ok(EXIT_OK)
}

/// The rule named `name` in `rules` (the default rule without a file); the only one when no name
/// is given.
pub(super) fn pick_rule(rules: Option<&Path>, name: Option<&str>) -> anyhow::Result<Rule> {
    let defaults = Defaults::default();
    let groups = match rules {
        Some(path) => config::rules::load_file(path, &defaults),
        None => config::rules::parse(Path::new("<default rule>"), DEFAULT_RULES, &defaults),
    }
    .map_err(|problems| anyhow::anyhow!("{problems}"))?;
    let mut rules: Vec<Rule> = groups.into_iter().flat_map(|g| g.rules).collect();
    match name {
        Some(name) => rules.into_iter().find(|r| r.name == name).with_context(|| format!("no rule named {name:?}")),
        None if rules.len() == 1 => Ok(rules.remove(0)),
        None => bail!("the rule file has {} rules: pick one with --rule", rules.len()),
    }
}

async fn inputs(args: &BacktestArgs, expr: &str, step: i64) -> anyhow::Result<(Vec<data::Recording>, Option<nab::Labels>)> {
    let mut recordings = Vec::new();
    for path in &args.csv {
        recordings.push(data::load_csv(path, &data::nab_key(path))?);
    }
    let mut labels_file = args.labels.clone();
    if let Some(dir) = &args.dataset {
        for (path, key) in data::dataset_files(dir)? {
            recordings.push(data::load_csv(&path, &key)?);
        }
        labels_file = labels_file.or_else(|| Some(dir.join("labels.json")).filter(|p| p.exists()));
    }
    if let Some(url) = &args.source {
        let (Some(start), Some(end)) = (&args.start, &args.end) else { bail!("--source needs --start and --end") };
        let (start, end) = (parse_time(start)?, parse_time(end)?);
        let source_config = SourceConfig::for_url(url);
        let client = PromClient::new(&source_config)?;
        let series =
            client.query_range(expr, start - start.rem_euclid(step), end, step).await.with_context(|| format!("querying {url}"))?;
        if series.is_empty() {
            bail!("{url} returned no series for {expr} between {start} and {end}");
        }
        recordings.extend(data::from_series(series, step));
    }
    let labels = labels_file.map(|path| nab::Labels::load(&path).with_context(|| format!("labels file {}", path.display()))).transpose()?;
    Ok((recordings, labels))
}

/// RFC 3339 or Unix seconds.
pub(super) fn parse_time(text: &str) -> anyhow::Result<i64> {
    if let Ok(secs) = text.parse::<i64>() {
        return Ok(secs);
    }
    Ok(chrono::DateTime::parse_from_rfc3339(text).with_context(|| format!("time {text:?}: expected RFC 3339 or Unix seconds"))?.timestamp())
}

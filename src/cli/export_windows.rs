//! `pulsewatch export-windows`: write a detector rule's training windows to a CSV file, built
//! exactly as the live detector builds the windows it scores.
//!
//! The file has a header `series,end,step,<channel>@<t>...` and one row per window: the joined
//! series' labels, the Unix time of the window's newest sample, the rule's step in seconds, and
//! its `window × channels` values, time-major, oldest first. `examples/autoencoder/train.py`
//! reads it.

use std::path::PathBuf;

use anyhow::{bail, Context};

use super::backtest::{parse_time, pick_rule};
use super::EXIT_OK;
use crate::backtest::data;
use crate::config::{Anomaly, Rule, RuleKind, SourceConfig};
use crate::detector::window;
use crate::engine::{fetch_channels, EvalContext, FitPool, Shard};
use crate::source::{format_labels, Labels, PromClient, Series};

/// What `pulsewatch export-windows` was asked.
#[derive(Debug, clap::Args)]
pub struct ExportWindowsArgs {
    /// Rule file holding the `anomaly:` rule.
    #[arg(long)]
    rules: PathBuf,
    /// The rule, when the file has several.
    #[arg(long)]
    rule: Option<String>,
    /// Read the rule's channels from this Prometheus-compatible server (needs --start, --end).
    #[arg(long)]
    source: Option<String>,
    /// CSV files (`timestamp,value`, NAB's format) to cut into windows, each one series of a
    /// single-channel rule.
    #[arg(long)]
    csv: Vec<PathBuf>,
    /// Start of the range (RFC 3339 or Unix seconds); with --csv, rows before it are skipped.
    #[arg(long)]
    start: Option<String>,
    /// End of the range (RFC 3339 or Unix seconds); with --csv, rows after it are skipped.
    #[arg(long)]
    end: Option<String>,
    /// Samples per window; by default the input length of the rule's model.
    #[arg(long)]
    window: Option<usize>,
    /// Steps between the ends of consecutive windows.
    #[arg(long, default_value_t = 1)]
    stride: usize,
    /// The CSV file to write.
    #[arg(long)]
    out: PathBuf,
}

/// Writes the windows; returns the exit code.
pub(super) fn export_windows(args: &ExportWindowsArgs) -> anyhow::Result<u8> {
    let rule = pick_rule(Some(&args.rules), args.rule.as_deref())?;
    let RuleKind::Anomaly(anomaly) = &rule.kind else {
        bail!("rule {:?} is a forecast rule; export-windows writes the windows of `anomaly:` rules", rule.name)
    };
    let n = match args.window {
        Some(0) => bail!("--window must be at least 1"),
        Some(n) => n,
        None => crate::detector::load(anomaly, &rule.step)
            .map(|d| d.window())
            .map_err(|err| anyhow::anyhow!("pass --window: the window length comes from the rule's model, and {err}"))?,
    };
    let start = args.start.as_deref().map(parse_time).transpose()?;
    let end = args.end.as_deref().map(parse_time).transpose()?;
    let series = match (&args.source, args.csv.is_empty()) {
        (Some(url), true) => {
            let (Some(start), Some(end)) = (start, end) else { bail!("--source needs --start and --end") };
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(query(url, &rule, anomaly, start, end))?
        }
        (None, false) => from_csv(&args.csv, &rule, anomaly, start, end)?,
        _ => bail!("give either --source or --csv"),
    };
    let file = std::fs::File::create(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let mut out = csv::Writer::from_writer(std::io::BufWriter::new(file));
    let mut header = vec!["series".to_string(), "end".to_string(), "step".to_string()];
    header.extend((0..n).flat_map(|t| anomaly.channels.iter().map(move |c| format!("{}@{t}", c.name))));
    out.write_record(&header)?;
    let mut written = 0;
    let step = rule.step.secs();
    for (key, channels, grid_start, len) in &series {
        let grid = window::align(channels, *grid_start, step, *len);
        for (last, values) in window::windows(&grid, n, args.stride) {
            let mut row = vec![format_labels(key), (grid_start + last as i64 * step).to_string(), step.to_string()];
            row.extend(values.iter().map(f64::to_string));
            out.write_record(&row)?;
            written += 1;
        }
    }
    out.flush()?;
    eprintln!("wrote {written} windows of {n} × {} from {} series to {}", anomaly.channels.len(), series.len(), args.out.display());
    if written == 0 {
        bail!("no complete window: the range is shorter than {n} steps of {}, or the data has too many gaps", rule.step);
    }
    Ok(EXIT_OK)
}

/// A joined series: its key, each channel's samples, and its grid (start, points).
type Joined = (Labels, Vec<window::Samples>, i64, usize);

async fn query(url: &str, rule: &Rule, anomaly: &Anomaly, start: i64, end: i64) -> anyhow::Result<Vec<Joined>> {
    let step = rule.step.secs();
    let (start, end) = (start - start.rem_euclid(step), end - end.rem_euclid(step));
    let client = PromClient::new(&SourceConfig::for_url(url))?;
    let pool = FitPool::new(1);
    let ctx = EvalContext { source: &client, metrics: None, pool: &pool, now: end, stale_secs: i64::MAX, shard: Shard::ALL };
    let joined = fetch_channels(&ctx, anomaly, start, end, step).await.with_context(|| format!("querying {url}"))?;
    if let Some((key, channel)) = joined.partial.first() {
        eprintln!("skipping {} series that a channel lacks, e.g. {} has no {channel:?}", joined.partial.len(), format_labels(key));
    }
    if joined.series.is_empty() {
        bail!("{url} returned no series that every channel has between {start} and {end}");
    }
    let len = ((end - start) / step + 1) as usize;
    Ok(joined.series.into_iter().map(|(key, channels)| (key, channels, start, len)).collect())
}

fn from_csv(files: &[PathBuf], rule: &Rule, anomaly: &Anomaly, start: Option<i64>, end: Option<i64>) -> anyhow::Result<Vec<Joined>> {
    if anomaly.channels.len() != 1 {
        bail!("rule {:?} has {} channels; a CSV holds one series, so use --source", rule.name, anomaly.channels.len());
    }
    let mut joined = Vec::new();
    for path in files {
        let recording = data::load_csv(path, &data::nab_key(path))?;
        if recording.step != rule.step.secs() {
            bail!("{}: its samples are {}s apart, the rule's step is {}", path.display(), recording.step, rule.step);
        }
        let Series { labels, samples } = recording.series();
        let samples: Vec<(i64, f64)> =
            samples.into_iter().filter(|(ts, _)| start.is_none_or(|s| *ts >= s) && end.is_none_or(|e| *ts <= e)).collect();
        let Some(&(first, _)) = samples.first() else { continue };
        let len = samples.len();
        joined.push((labels, vec![samples], first, len));
    }
    Ok(joined)
}

//! The command line: run the sidecar (the default), check config and rule files, backtest a
//! rule, or export a detector rule's training windows.

mod backtest;
mod check;
mod export_windows;
mod run;

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::engine::{Shard, ShardError};

/// Exit code for success.
pub const EXIT_OK: u8 = 0;
/// Exit code for failure (invalid files, a daemon that cannot start).
pub const EXIT_FAILURE: u8 = 1;

/// pulsewatch: forecasts and anomaly scores for Prometheus series, served as metrics.
#[derive(Debug, Parser)]
#[command(name = "pulsewatch", version, about)]
pub struct Cli {
    /// Configuration file.
    #[arg(long = "config.file", default_value = "pulsewatch.yml", global = true)]
    pub config_file: PathBuf,
    /// Address to serve /metrics and the API on.
    #[arg(long = "web.listen-address", default_value = ":9464")]
    pub listen_address: String,
    /// Exporter-toolkit web config file (TLS, basic auth).
    #[arg(long = "web.config.file")]
    pub web_config_file: Option<PathBuf>,
    /// Enable POST /-/reload.
    #[arg(long = "web.enable-lifecycle")]
    pub enable_lifecycle: bool,
    /// Longest wait for in-flight evaluations on shutdown.
    #[arg(long = "shutdown.grace-period", default_value = "30s", value_parser = humantime::parse_duration)]
    pub grace_period: std::time::Duration,
    /// Only log messages at or above this level.
    #[arg(long = "log.level", default_value = "info")]
    pub log_level: LogLevel,
    /// Log line format.
    #[arg(long = "log.format", default_value = "logfmt")]
    pub log_format: LogFormat,
    /// Replicas that split every rule's series between them (each still runs every query).
    #[arg(long = "shard.count", default_value_t = 1)]
    pub shard_count: u64,
    /// This replica's shard, below `--shard.count`: a number, or a name ending in `-<number>`
    /// such as a StatefulSet pod's (`--shard.index=$(POD_NAME)`).
    #[arg(long = "shard.index", default_value = "0")]
    pub shard_index: String,
    /// A subcommand; without one pulsewatch runs the sidecar.
    #[command(subcommand)]
    pub command: Option<Command>,
}

impl Cli {
    /// The shard the flags name.
    ///
    /// # Errors
    /// A count of 0, or an index that is not one or not below the count.
    pub fn shard(&self) -> Result<Shard, ShardError> {
        Shard::new(Shard::parse_index(&self.shard_index)?, self.shard_count)
    }
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate files, as `promtool check` does.
    #[command(subcommand)]
    Check(CheckCommand),
    /// Replay recorded data (CSV, a NAB dataset, or a Prometheus range) through a rule on a
    /// simulated clock, and score it: NAB, window precision/recall/F1, forecast accuracy.
    Backtest(backtest::BacktestArgs),
    /// Write an `anomaly:` rule's windows, from Prometheus or CSV files, to a CSV file to train
    /// its autoencoder on (examples/autoencoder/train.py).
    ExportWindows(export_windows::ExportWindowsArgs),
}

/// What to check.
#[derive(Debug, Subcommand)]
pub enum CheckCommand {
    /// Check a config file and every rule file it names.
    Config {
        /// The config file.
        file: PathBuf,
    },
    /// Check rule files.
    Rules {
        /// The rule files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

/// `--log.level`.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogLevel {
    /// Everything.
    Debug,
    /// Lifecycle events and above.
    Info,
    /// Problems that do not need an operator yet.
    Warn,
    /// Problems an operator must act on.
    Error,
}

/// `--log.format`.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormat {
    /// `key=value` pairs.
    Logfmt,
    /// One JSON object per line.
    Json,
}

/// Runs the command; returns the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<u8> {
    match &cli.command {
        Some(Command::Check(CheckCommand::Config { file })) => Ok(check::config(file)),
        Some(Command::Check(CheckCommand::Rules { files })) => Ok(check::rules(files)),
        Some(Command::Backtest(args)) => {
            init_logging(LogLevel::Warn, cli.log_format);
            backtest::backtest(args)
        }
        Some(Command::ExportWindows(args)) => {
            init_logging(LogLevel::Warn, cli.log_format);
            export_windows::export_windows(args)
        }
        None => {
            init_logging(cli.log_level, cli.log_format);
            log_panics();
            let runtime = tokio::runtime::Runtime::new()?;
            let result = runtime.block_on(run::daemon(cli));
            // The daemon drained within the grace period; a fit still running on a blocking
            // thread must not hold the exit.
            runtime.shutdown_background();
            result?;
            Ok(EXIT_OK)
        }
    }
}

/// Logs panics as error events in the log's format. tract panics on some malformed models; the
/// loader catches that and fails the rule, but the default hook would also print the panic to
/// stderr outside the log format.
fn log_panics() {
    std::panic::set_hook(Box::new(|info| {
        let backtrace = std::backtrace::Backtrace::capture();
        if backtrace.status() == std::backtrace::BacktraceStatus::Captured {
            tracing::error!(panic = %info, backtrace = %backtrace, "panic");
        } else {
            tracing::error!(panic = %info, "panic");
        }
    }));
}

fn init_logging(level: LogLevel, format: LogFormat) {
    let level = match level {
        LogLevel::Debug => tracing::Level::DEBUG,
        LogLevel::Info => tracing::Level::INFO,
        LogLevel::Warn => tracing::Level::WARN,
        LogLevel::Error => tracing::Level::ERROR,
    };
    let builder = tracing_subscriber::fmt().with_max_level(level).with_writer(std::io::stderr).with_ansi(false);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Logfmt => {
            builder.event_format(tracing_logfmt::EventsFormatter::default()).fmt_fields(tracing_logfmt::FieldsFormatter::default()).init()
        }
    }
}

//! pulsewatch: a forecasting and anomaly-detection sidecar for Prometheus.
//!
//! It reads Prometheus-style rule files, queries a Prometheus-compatible server on a schedule,
//! fits a forecasting model or runs an ONNX autoencoder on every series a rule returns, and serves
//! anomaly scores, predicted values with bands and future forecasts as Prometheus metrics.
//!
//! # Layout
//! - [`config`]: the main config file and rule files, validated with located errors.
//! - [`clock`]: the time of day the engine and the exporter read (tests set it).
//! - [`source`]: the Prometheus HTTP API client (`query_range`, retries, auth, TLS).
//! - [`models`]: fitting (augurs), the prediction path, online updates and the anomaly score.
//! - [`detector`]: the detectors of `anomaly:` rules (the ONNX autoencoder, run with tract), and
//!   the windows they score.
//! - [`engine`]: one task per group, rule evaluation, reload semantics.
//! - [`exporter`]: the atomically swapped snapshot `/metrics` encodes, and self-monitoring.
//! - [`http`]: the HTTP endpoints, TLS and basic auth.
//! - [`remote_write`]: sending every output series to remote-write endpoints.
//! - [`files`]: reading the files a configuration names (regular files only, size caps).
//! - [`watch`]: debounced directory watches that trigger reloads.
//! - [`backtest`]: replaying recorded data through a rule on a simulated clock, and scoring it.
//! - [`nab`]: the Numenta Anomaly Benchmark's scoring.
//! - [`cli`]: the command line (`run`, `check`, `backtest`, `export-windows`).

pub mod backtest;
pub mod cli;
pub mod clock;
pub mod config;
pub mod detector;
pub mod engine;
pub mod exporter;
pub mod files;
pub mod http;
pub mod models;
/// NAB (Numenta Anomaly Benchmark) scoring of anomaly scores against labelled windows.
pub mod nab;
pub mod remote_write;
pub mod source;
pub mod watch;

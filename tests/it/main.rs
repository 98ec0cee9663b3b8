//! The one integration-test binary: real `prometheus` and `promtool`, the real `pulsewatch` binary.

mod alerting;
mod autoencoder;
mod backtest;
mod chaos;
mod cli;
mod dashboards;
mod e2e;
mod grafana;
mod harness;
mod http_limits;
mod lifecycle;
mod remote_write;
mod shard;
mod web;

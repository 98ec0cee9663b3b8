//! The one integration-test binary: real `prometheus` and `promtool`, the real `pulsewatch` binary.

mod alerting;
mod autoencoder;
mod backtest;
mod cli;
mod dashboards;
mod e2e;
mod grafana;
mod harness;
mod lifecycle;
mod web;

//! The one integration-test binary: real `prometheus` and `promtool`, the real `pulsewatch` binary.

mod cli;
mod e2e;
mod harness;
mod web;

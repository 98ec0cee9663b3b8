//! pulsewatch's own process-wide metrics, registered once in the registry `/metrics` encodes.
//!
//! Per-rule counters live in the snapshot (see `collector.rs`); what is here has no rule label.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::info::Info;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use crate::source::{Rejection, Rejections};

/// `pulsewatch_samples_rejected_total`, one counter per [`Rejection`], written in
/// [`Rejection::ALL`] order with every reason from the start (so that `rate()` sees the first
/// rejection). A `Family` would write them in hash order, which changes from process to process.
#[derive(Debug, Clone, Default)]
struct RejectedSamples(Arc<[Counter; Rejection::ALL.len()]>);

impl Collector for RejectedSamples {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut family = encoder.encode_descriptor(
            "pulsewatch_samples_rejected",
            "Samples of query answers dropped before modelling, by reason: out_of_range, off_grid (not at start + k*step), not_finite, duplicate (timestamp)",
            None,
            MetricType::Counter,
        )?;
        for reason in Rejection::ALL {
            self.0[reason as usize].encode(family.encode_family(&[("reason", reason.as_str())])?)?;
        }
        Ok(())
    }
}

/// Handles to the self-monitoring metrics.
#[derive(Debug, Clone)]
pub struct Metrics {
    evaluation_duration: Histogram,
    fit_duration: Histogram,
    query_duration: Histogram,
    query_failures: Counter,
    samples_rejected: RejectedSamples,
    reload_successful: Gauge,
    reload_success_timestamp: Gauge<f64, AtomicU64>,
}

impl Metrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            evaluation_duration: Histogram::new(exponential_buckets(0.001, 4.0, 10)),
            fit_duration: Histogram::new(exponential_buckets(0.0005, 4.0, 10)),
            query_duration: Histogram::new(exponential_buckets(0.001, 4.0, 10)),
            query_failures: Counter::default(),
            samples_rejected: RejectedSamples::default(),
            reload_successful: Gauge::default(),
            reload_success_timestamp: Gauge::default(),
        };
        registry.register(
            // client_rust appends `_info` to info metrics.
            "pulsewatch_build",
            "A metric with a constant 1 labelled by the version pulsewatch was built from",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION")), ("prophet", if cfg!(feature = "prophet") { "true" } else { "false" })]),
        );
        registry.register_with_unit(
            "pulsewatch_rule_evaluation_duration",
            "Duration of rule evaluations",
            Unit::Seconds,
            metrics.evaluation_duration.clone(),
        );
        registry.register_with_unit(
            "pulsewatch_model_fit_duration",
            "Duration of model fits of one series",
            Unit::Seconds,
            metrics.fit_duration.clone(),
        );
        registry.register_with_unit(
            "pulsewatch_query_duration",
            "Duration of queries to the data source, retries included",
            Unit::Seconds,
            metrics.query_duration.clone(),
        );
        registry.register(
            "pulsewatch_query_failures",
            "Queries to the data source that failed after their retries",
            metrics.query_failures.clone(),
        );
        registry.register_collector(Box::new(metrics.samples_rejected.clone()));
        registry.register(
            "pulsewatch_config_last_reload_successful",
            "Whether the last configuration reload succeeded",
            metrics.reload_successful.clone(),
        );
        registry.register_with_unit(
            "pulsewatch_config_last_reload_success_timestamp",
            "Time of the last successful configuration reload",
            Unit::Seconds,
            metrics.reload_success_timestamp.clone(),
        );
        metrics
    }

    /// Records one rule evaluation's duration.
    pub fn observe_evaluation(&self, took: Duration) {
        self.evaluation_duration.observe(took.as_secs_f64());
    }

    /// Records one model fit's duration.
    pub fn observe_fit(&self, took: Duration) {
        self.fit_duration.observe(took.as_secs_f64());
    }

    /// Records one query and whether it succeeded.
    pub fn observe_query(&self, took: Duration, ok: bool) {
        self.query_duration.observe(took.as_secs_f64());
        if !ok {
            self.query_failures.inc();
        }
    }

    /// Counts the samples an answer's validation dropped.
    pub fn observe_rejections(&self, rejected: &Rejections) {
        for (reason, n) in rejected.iter() {
            self.samples_rejected.0[reason as usize].inc_by(n);
        }
    }

    /// Records a reload attempt at Unix time `now`.
    pub fn reloaded(&self, ok: bool, now: f64) {
        self.reload_successful.set(i64::from(ok));
        if ok {
            self.reload_success_timestamp.set(now);
        }
    }
}

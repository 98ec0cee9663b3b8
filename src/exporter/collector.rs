//! The `/metrics` side of the snapshot: rule outputs and per-rule status, in a fixed order.
//!
//! Families come in a fixed order, series within a family in rule then label order (the snapshot
//! is a BTreeMap and each rule's series are sorted), so the output is deterministic. Outputs older
//! than their rule's staleness period are skipped here, so they vanish even when no evaluation
//! runs to remove them (for instance while the data source is down).

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;

use super::snapshot::{Exporter, RuleEntry, RuleId, SeriesOutput, Values};
use crate::clock::Clock;

type Labels<'a> = Vec<(&'a str, &'a str)>;

/// Encodes the current snapshot on every scrape.
#[derive(Debug)]
pub struct SnapshotCollector {
    exporter: Exporter,
    /// What staleness is judged by; a field so that tests can set it.
    clock: Clock,
}

impl SnapshotCollector {
    /// A collector over `exporter`'s snapshots.
    pub fn new(exporter: Exporter) -> Self {
        Self { exporter, clock: Clock::System }
    }
}

fn series_labels(s: &SeriesOutput) -> Labels<'_> {
    s.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// `rule_group` is `file;group`, as Prometheus labels its `prometheus_rule_*` metrics.
fn rule_labels(id: &RuleId) -> Vec<(&'static str, String)> {
    vec![("rule", id.rule.clone()), ("rule_group", id.group.to_string())]
}

/// Per-series outputs: (name, help, value of a series; None when its rule has no such value).
type SeriesFamily = (&'static str, &'static str, fn(&SeriesOutput) -> Option<f64>);

const SERIES_FAMILIES: [SeriesFamily; 6] = [
    (
        "pulsewatch_anomaly_score",
        "How anomalous the series is now: 0 normal, 1 at the band edge or the detector's threshold, above 1 beyond it",
        |s| Some(s.score()),
    ),
    ("pulsewatch_y", "The observation that was scored", |s| s.point().map(|p| p.y)),
    ("pulsewatch_yhat", "The prediction for the scored observation", |s| s.point().map(|p| p.yhat)),
    ("pulsewatch_yhat_lower", "Lower edge of the prediction band", |s| s.point().map(|p| p.lower)),
    ("pulsewatch_yhat_upper", "Upper edge of the prediction band", |s| s.point().map(|p| p.upper)),
    (
        "pulsewatch_reconstruction_error",
        "Mean squared error of the autoencoder's reconstruction of the newest window, in normalised units",
        |s| match s.values {
            Values::Reconstruction { error, .. } => Some(error),
            Values::Forecast { .. } => None,
        },
    ),
];

/// Forecast outputs: (name, help, value of a forecast).
type ForecastFamily = (&'static str, &'static str, fn(&(f64, f64, f64)) -> f64);

const FORECAST_FAMILIES: [ForecastFamily; 3] = [
    ("pulsewatch_forecast", "Value predicted for now plus the horizon", |f| f.0),
    ("pulsewatch_forecast_lower", "Lower edge of the band of the forecast at the horizon", |f| f.1),
    ("pulsewatch_forecast_upper", "Upper edge of the band of the forecast at the horizon", |f| f.2),
];

/// Per-rule status: (name, help, type, unit, value; None skips the rule).
type StatusFamily = (&'static str, &'static str, MetricType, Option<Unit>, fn(&RuleEntry) -> Option<f64>);

fn status_families() -> [StatusFamily; 5] {
    [
        ("pulsewatch_rule_evaluations", "Rule evaluations run", MetricType::Counter, None, |e| Some(e.status.evaluations as f64)),
        ("pulsewatch_rule_evaluation_failures", "Rule evaluations that failed", MetricType::Counter, None, |e| {
            Some(e.status.failures as f64)
        }),
        ("pulsewatch_rule_last_evaluation_timestamp", "When the rule was last evaluated", MetricType::Gauge, Some(Unit::Seconds), |e| {
            e.status.last_evaluation
        }),
        ("pulsewatch_rule_series", "Series of the rule that have a model", MetricType::Gauge, None, |e| Some(e.status.series as f64)),
        ("pulsewatch_model_fits", "Model fits run for the rule", MetricType::Counter, None, |e| Some(e.status.fits as f64)),
    ]
}

impl Collector for SnapshotCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let snapshot = self.exporter.load();
        let now = self.clock.now();
        let fresh: Vec<&SeriesOutput> =
            snapshot.rules.values().filter(|e| now - e.refreshed <= e.stale_after).flat_map(|e| e.series.iter()).collect();

        for (name, help, value) in SERIES_FAMILIES {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for s in &fresh {
                let Some(v) = value(s) else { continue };
                ConstGauge::new(v).encode(family.encode_family(&series_labels(s))?)?;
            }
        }
        for (name, help, value) in FORECAST_FAMILIES {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for s in &fresh {
                for (horizon, forecast) in s.forecasts() {
                    let mut labels = series_labels(s);
                    labels.push(("horizon", horizon.as_str()));
                    labels.sort();
                    ConstGauge::new(value(forecast)).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        for (name, help, kind, unit, value) in status_families() {
            let mut family = encoder.encode_descriptor(name, help, unit.as_ref(), kind)?;
            for (id, entry) in &snapshot.rules {
                let Some(v) = value(entry) else { continue };
                let labels = rule_labels(id);
                let metric = family.encode_family(&labels)?;
                match kind {
                    MetricType::Counter => ConstCounter::new(v as u64).encode(metric)?,
                    _ => ConstGauge::new(v).encode(metric)?,
                }
            }
        }
        let mut missed = encoder.encode_descriptor(
            "pulsewatch_group_iterations_missed",
            "Scheduled group runs skipped because the previous run was still going",
            None,
            MetricType::Counter,
        )?;
        for (key, group) in &snapshot.groups {
            let labels = [("rule_group", key.to_string())];
            ConstCounter::new(group.missed).encode(missed.encode_family(&labels)?)?;
        }
        // Lets alerting rules say "no evaluation for 3 intervals" whatever each group's interval.
        let mut interval = encoder.encode_descriptor(
            "pulsewatch_rule_group_interval_seconds",
            "The group's evaluation interval (for a cron group, the longest gap between its runs)",
            None,
            MetricType::Gauge,
        )?;
        for (key, group) in &snapshot.groups {
            let labels = [("rule_group", key.to_string())];
            ConstGauge::new(group.interval).encode(interval.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::registry::Registry;

    use super::*;
    use crate::config::ModelSpec;
    use crate::config::{Duration, GroupKey, RuleGroup, Schedule};
    use crate::exporter::Point;
    use crate::exporter::{encode, Format};
    use crate::source::Labels;

    fn render(exporter: &Exporter, now: f64) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(SnapshotCollector { exporter: exporter.clone(), clock: Clock::Fixed(now) }));
        encode(&registry, Format::Text).unwrap()
    }

    /// Group `name` of file `file` with one linear rule per name in `rules`, each recorded at
    /// `refreshed` with one series per `job` label value in `jobs`, in the order given.
    fn record(exporter: &Exporter, file: &str, rules: &[&str], jobs: &[&str], refreshed: f64, stale_after: f64) -> GroupKey {
        let key = GroupKey { file: file.into(), name: "g".into() };
        let rules: Vec<_> = rules.iter().map(|r| crate::config::rules::test_forecast_rule(r, "up", ModelSpec::Linear {})).collect();
        let group = RuleGroup { key: key.clone(), schedule: Schedule::Interval(Duration::from_secs(60)), rules: rules.clone() };
        exporter.set_group(&group, 60.0, &[]);
        for rule in &rules {
            let point = Point { ts: 0, y: 1.0, yhat: 1.0, lower: 0.0, upper: 2.0, score: 0.5 };
            let series = jobs
                .iter()
                .map(|job| SeriesOutput::forecast(&Labels::from([("job".to_string(), job.to_string())]), rule, point, vec![]))
                .collect();
            let id = RuleId { group: key.clone(), rule: rule.name.clone() };
            exporter.record(&id, refreshed, 0.0, Ok((series, 1, jobs.len())), stale_after);
        }
        key
    }

    /// A fixed snapshot of every kind of output: a forecast rule with a horizon, an input label
    /// that collides with ours and a static label; a detector rule; a rule that failed; a group
    /// with missed runs. Own metrics as registered, with one observation each.
    fn golden_registry() -> Registry {
        use crate::config::{Anomaly, Channel, DetectorSpec, Rule, RuleKind};
        use crate::exporter::{Metrics, Values};
        let exporter = Exporter::default();
        let key = GroupKey { file: "rules/node.yaml".into(), name: "node".into() };
        let mut cpu = crate::config::rules::test_forecast_rule("cpu", "rate(cpu[5m])", ModelSpec::Linear {});
        cpu.labels.insert("team".into(), "infra".into());
        let temp = Rule {
            name: "temp_ae".into(),
            step: Duration::from_secs(300),
            labels: Default::default(),
            kind: RuleKind::Anomaly(Anomaly {
                channels: vec![Channel { name: "value".into(), expr: "temp".into() }],
                on: None,
                detector: DetectorSpec::Autoencoder { model_file: "m.onnx".into() },
            }),
        };
        let broken = crate::config::rules::test_forecast_rule("broken", "up", ModelSpec::Linear {});
        let group = RuleGroup {
            key: key.clone(),
            schedule: Schedule::Interval(Duration::from_secs(60)),
            rules: vec![cpu.clone(), temp.clone(), broken.clone()],
        };
        exporter.set_group(&group, 60.0, &[]);
        exporter.count_missed(&key, 3);
        let labels = |pairs: &[(&str, &str)]| -> Labels { pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect() };
        let point = Point { ts: 1_700_000_000, y: 0.75, yhat: 0.5, lower: 0.25, upper: 0.625, score: 2.0 };
        let forecast = vec![("1h".to_string(), (0.5, 0.125, 0.875))];
        let series = vec![
            SeriesOutput::forecast(&labels(&[("__name__", "cpu"), ("instance", "b:9100")]), &cpu, point, forecast.clone()),
            SeriesOutput::forecast(&labels(&[("instance", "a:9100"), ("rule", "input")]), &cpu, Point { score: 0.0, ..point }, forecast),
        ];
        let id = |rule: &Rule| RuleId { group: key.clone(), rule: rule.name.clone() };
        exporter.record(&id(&cpu), 1_700_000_000.0, 0.25, Ok((series, 2, 2)), 300.0);
        let reconstruction =
            SeriesOutput::new(&labels(&[("machine", "m1")]), &temp, Values::Reconstruction { ts: 1_700_000_000, score: 0.5, error: 1.5 });
        exporter.record(&id(&temp), 1_700_000_000.0, 0.5, Ok((vec![reconstruction], 0, 1)), 600.0);
        exporter.record(&id(&broken), 1_700_000_000.0, 0.125, Err("query: connection refused".into()), 300.0);
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        metrics.observe_evaluation(std::time::Duration::from_millis(250));
        metrics.observe_fit(std::time::Duration::from_millis(40));
        metrics.observe_query(std::time::Duration::from_millis(30), false);
        metrics.reloaded(true, 1_699_999_000.0);
        registry.register_collector(Box::new(SnapshotCollector { exporter, clock: Clock::Fixed(1_700_000_030.0) }));
        registry
    }

    /// `/metrics` for the fixed snapshot, in both formats, byte for byte as in `tests/golden/`
    /// (regenerate with `UPDATE_GOLDEN=1` and review the diff).
    #[test]
    fn golden_exposition() {
        let registry = golden_registry();
        for (format, file) in [(Format::Text, "metrics.prom"), (Format::OpenMetrics, "metrics.om.txt")] {
            let body = encode(&registry, format).unwrap();
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(file);
            if std::env::var_os("UPDATE_GOLDEN").is_some() {
                std::fs::write(&path, &body).unwrap();
            }
            let golden = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 writes it)", path.display()));
            assert!(body == golden, "{file} differs from the golden file; diff it after UPDATE_GOLDEN=1:\n{body}");
        }
    }

    #[test]
    fn outputs_vanish_once_older_than_their_rules_staleness() {
        let exporter = Exporter::default();
        // refreshed at 1,000 s (started 1,000, took 0), stale after 120 s
        record(&exporter, "a.yaml", &["r"], &["x"], 1000.0, 120.0);
        let fresh = render(&exporter, 1119.0);
        assert!(fresh.contains("pulsewatch_anomaly_score{job=\"x\",rule=\"r\"} 0.5"), "{fresh}");
        let at_edge = render(&exporter, 1120.0);
        assert!(at_edge.contains("pulsewatch_anomaly_score{"), "{at_edge}");
        let stale = render(&exporter, 1121.0);
        assert!(!stale.contains("pulsewatch_anomaly_score{") && !stale.contains("pulsewatch_yhat{"), "{stale}");
        // the rule's status stays: only its outputs go
        assert!(stale.contains("pulsewatch_rule_evaluations_total{rule=\"r\",rule_group=\"a.yaml;g\"} 1"), "{stale}");
    }

    #[test]
    fn metrics_come_in_rule_then_label_order_whatever_the_insertion_order() {
        let (one, two) = (Exporter::default(), Exporter::default());
        record(&one, "b.yaml", &["zeta", "alpha"], &["j2", "j1", "j3"], 1000.0, 300.0);
        record(&one, "a.yaml", &["mid"], &["j2", "j1"], 1000.0, 300.0);
        record(&two, "a.yaml", &["mid"], &["j1", "j2"], 1000.0, 300.0);
        record(&two, "b.yaml", &["alpha", "zeta"], &["j3", "j1", "j2"], 1000.0, 300.0);
        let text = render(&one, 1001.0);
        assert_eq!(text, render(&two, 1001.0), "same snapshot, same bytes");
        let scores: Vec<&str> =
            text.lines().filter(|l| l.starts_with("pulsewatch_anomaly_score{")).map(|l| l.split(' ').next().unwrap()).collect();
        let expected: Vec<String> = [("mid", &["j1", "j2"][..]), ("alpha", &["j1", "j2", "j3"]), ("zeta", &["j1", "j2", "j3"])]
            .iter()
            .flat_map(|(rule, jobs)| jobs.iter().map(move |job| format!("pulsewatch_anomaly_score{{job=\"{job}\",rule=\"{rule}\"}}")))
            .collect();
        assert_eq!(scores, expected, "groups by key (file, then name), rules by name within, series by labels");
        let families: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("# TYPE ")).map(|l| l.split(' ').next().unwrap()).collect();
        assert_eq!(families[..3], ["pulsewatch_anomaly_score", "pulsewatch_y", "pulsewatch_yhat"]);
    }

    #[test]
    fn groups_export_interval_and_missed_runs() {
        let exporter = Exporter::default();
        let key = GroupKey { file: "a.yaml".into(), name: "g".into() };
        let group = RuleGroup { key: key.clone(), schedule: Schedule::Interval(Duration::from_secs(90)), rules: vec![] };
        exporter.set_group(&group, 90.0, &[]);
        exporter.count_missed(&key, 2);
        let mut registry = Registry::default();
        registry.register_collector(Box::new(SnapshotCollector::new(exporter)));
        let text = crate::exporter::encode(&registry, crate::exporter::Format::Text).unwrap();
        assert!(text.contains("pulsewatch_rule_group_interval_seconds{rule_group=\"a.yaml;g\"} 90"), "{text}");
        assert!(text.contains("pulsewatch_group_iterations_missed_total{rule_group=\"a.yaml;g\"} 2"), "{text}");
    }
}

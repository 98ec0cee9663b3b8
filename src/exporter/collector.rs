//! The `/metrics` side of the exporter: rule outputs and per-rule status, in a fixed order.
//!
//! Families come in a fixed order, series within a family in rule then label order (groups by
//! key, rules by name, each rule's series by labels), so the output is deterministic. Outputs
//! older than their rule's staleness period are skipped here, so they vanish even when no
//! evaluation runs to remove them (for instance while the data source is down). Upstream label
//! names are written as the scrape negotiated ([`Escaping`]): a name outside the legacy set never
//! reaches the body as it is, and no sample is NaN or infinite.
//!
//! A rule's sample lines are written once per evaluation (and escaping) and kept with its entry
//! ([`RuleLines`]); a scrape copies them under the family headers. So a scrape costs a copy of
//! the body, whatever the number of rules, and an evaluation costs the lines of its own rule.
//! That is why this module writes the exposition itself rather than through client_rust, whose
//! encoder writes whole families only; the bytes are the same (golden files in `tests/golden/`).

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, OnceLock};

use super::format::{self, is_legacy_label_name, Escaping, Exposition};
use super::snapshot::{Exporter, RuleEntry, SeriesOutput, Values, MEMBER_LABEL, OWN_LABELS};
use crate::clock::Clock;

/// Writes the current snapshot: every scrape builds one (it is an `Exporter` handle).
#[derive(Debug)]
pub struct SnapshotCollector {
    exporter: Exporter,
    /// What staleness is judged by; a field so that tests can set it.
    clock: Clock,
}

/// How a family's samples are typed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Gauge,
    /// Samples are named `<name>_total`; the value is written as an integer.
    Counter,
}

/// A metric family as its header names it: OpenMetrics names (a unit is already in the name).
struct Family {
    name: &'static str,
    help: &'static str,
    kind: Kind,
    unit: Option<&'static str>,
}

const fn gauge(name: &'static str, help: &'static str) -> Family {
    Family { name, help, kind: Kind::Gauge, unit: None }
}

const fn counter(name: &'static str, help: &'static str) -> Family {
    Family { name, help, kind: Kind::Counter, unit: None }
}

/// Per-series outputs: the family, and the value of a series (None when its rule has no such value).
type SeriesFamily = (Family, fn(&SeriesOutput) -> Option<f64>);

const SERIES_FAMILIES: [SeriesFamily; 6] = [
    (
        gauge(
            "pulsewatch_anomaly_score",
            "How anomalous the series is now: 0 normal, 1 at the band edge or the detector's threshold, above 1 beyond it",
        ),
        |s| Some(s.score()),
    ),
    (gauge("pulsewatch_y", "The observation that was scored"), |s| s.point().map(|p| p.y)),
    (gauge("pulsewatch_yhat", "The prediction for the scored observation"), |s| s.point().map(|p| p.yhat)),
    (gauge("pulsewatch_yhat_lower", "Lower edge of the prediction band"), |s| s.point().map(|p| p.lower)),
    (gauge("pulsewatch_yhat_upper", "Upper edge of the prediction band"), |s| s.point().map(|p| p.upper)),
    (
        gauge(
            "pulsewatch_reconstruction_error",
            "Mean squared error of the autoencoder's reconstruction of the newest window, in normalised units",
        ),
        |s| match s.values {
            Values::Reconstruction { error, .. } => Some(error),
            Values::Forecast { .. } => None,
        },
    ),
];

/// Forecast outputs: the family, and the value of a forecast.
type ForecastFamily = (Family, fn(&(f64, f64, f64)) -> f64);

const FORECAST_FAMILIES: [ForecastFamily; 3] = [
    (gauge("pulsewatch_forecast", "Value predicted for now plus the horizon"), |f| f.0),
    (gauge("pulsewatch_forecast_lower", "Lower edge of the band of the forecast at the horizon"), |f| f.1),
    (gauge("pulsewatch_forecast_upper", "Upper edge of the band of the forecast at the horizon"), |f| f.2),
];

/// An ensemble's members' scores, one series per member labelled with its model type. A family
/// of its own, so that alerting rules on `pulsewatch_anomaly_score` see the combination only.
const MEMBERS: Family =
    gauge("pulsewatch_member_anomaly_score", "The anomaly score of one model of an ensemble rule, before the ensemble combines them");

/// Families of a rule's outputs: [`SERIES_FAMILIES`], [`FORECAST_FAMILIES`], then [`MEMBERS`].
const OUTPUT_FAMILIES: usize = SERIES_FAMILIES.len() + FORECAST_FAMILIES.len() + 1;

/// Per-rule status: the family, and the value (None skips the rule).
type StatusFamily = (Family, fn(&RuleEntry) -> Option<f64>);

const STATUS_FAMILIES: [StatusFamily; 5] = [
    (counter("pulsewatch_rule_evaluations", "Rule evaluations run"), |e| Some(e.status.evaluations as f64)),
    (counter("pulsewatch_rule_evaluation_failures", "Rule evaluations that failed"), |e| Some(e.status.failures as f64)),
    (
        Family {
            name: "pulsewatch_rule_last_evaluation_timestamp_seconds",
            help: "When the rule was last evaluated",
            kind: Kind::Gauge,
            unit: Some("seconds"),
        },
        |e| e.status.last_evaluation,
    ),
    (gauge("pulsewatch_rule_series", "Series of the rule that have a model"), |e| Some(e.status.series as f64)),
    (counter("pulsewatch_model_fits", "Model fits run for the rule"), |e| Some(e.status.fits as f64)),
];

const MISSED: Family =
    counter("pulsewatch_group_iterations_missed", "Scheduled group runs skipped because the previous run was still going");
// Lets alerting rules say "no evaluation for 3 intervals" whatever each group's interval.
const INTERVAL: Family =
    gauge("pulsewatch_rule_group_interval_seconds", "The group's evaluation interval (for a cron group, the longest gap between its runs)");

/// One rule's sample lines for one escaping, per family: what scrapes copy until the rule's
/// next evaluation replaces its entry.
#[derive(Debug, Default)]
pub(crate) struct RuleLines {
    /// Per family of [`SERIES_FAMILIES`], [`FORECAST_FAMILIES`], then [`MEMBERS`].
    outputs: [String; OUTPUT_FAMILIES],
    /// Per family of [`STATUS_FAMILIES`].
    status: [String; STATUS_FAMILIES.len()],
}

impl RuleLines {
    fn len(&self) -> usize {
        self.outputs.iter().chain(&self.status).map(String::len).sum()
    }
}

/// A rule entry's lines: written by the evaluation that made the entry for the default escaping
/// ([`LinesCache::prepare`]), by the first scrape that needs them for another. An entry never
/// changes, so they stay right for its life. A rule whose label names are all legacy names has
/// the same lines under every escaping, and keeps one copy.
#[derive(Default)]
pub(crate) struct LinesCache {
    /// Whether some output label name is written differently under some escaping.
    escaped: OnceLock<bool>,
    /// By `Escaping as usize`.
    by_escaping: [OnceLock<RuleLines>; 4],
}

impl LinesCache {
    /// Writes the lines scrapers that do not negotiate an escaping get.
    pub(crate) fn prepare(&self, entry: &RuleEntry, group: &str, rule: &str) {
        self.get(entry, group, rule, Escaping::default());
    }

    fn get(&self, entry: &RuleEntry, group: &str, rule: &str, escaping: Escaping) -> &RuleLines {
        let escaped = *self.escaped.get_or_init(|| entry.series.iter().any(|s| s.labels.iter().any(|(name, _)| needs_escaping(name))));
        let escaping = if escaped { escaping } else { Escaping::default() };
        self.by_escaping[escaping as usize].get_or_init(|| rule_lines(entry, group, rule, escaping))
    }
}

// The cache is derived from its entry: a copy starts empty, and it takes no part in comparisons.
impl Clone for LinesCache {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl PartialEq for LinesCache {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl fmt::Debug for LinesCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LinesCache")
    }
}

/// A label as written: its name in the negotiated syntax and its value.
type Label<'a> = (Cow<'a, str>, &'a str);

/// One output series as this scrape writes it.
struct Written<'a> {
    series: &'a SeriesOutput,
    /// Sorted by the names the scraper stores; `None` when every name is written as recorded (the
    /// common case, which then costs no copy).
    escaped: Option<Vec<Label<'a>>>,
    /// Where `horizon` goes among the labels for the forecast families.
    horizon_at: usize,
}

impl Written<'_> {
    /// The labels as (name, value) pairs, sorted.
    fn pairs(&self) -> Vec<(&str, &str)> {
        match &self.escaped {
            None => self.series.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect(),
            Some(labels) => labels.iter().map(|(k, v)| (k.as_ref(), *v)).collect(),
        }
    }
}

/// Whether label `name` cannot be written as it is: outside the legacy set, or `__name__`, which
/// would set the metric name.
fn needs_escaping(name: &str) -> bool {
    !is_legacy_label_name(name) || name == "__name__"
}
/// The labels of `series` as written for `escaping`. Legacy names stay as they are; every other
/// name is escaped and, if that collides with a name already present (or with `rule`, `horizon`
/// or `__name__`), prefixed with `exported_` until it is free, in input order, as
/// `SeriesOutput::new` renames input labels that collide with pulsewatch's own.
fn written(series: &SeriesOutput, escaping: Escaping) -> Written<'_> {
    let labels = &series.labels;
    if !labels.iter().any(|(name, _)| needs_escaping(name)) {
        // Recorded labels are sorted (`SeriesOutput::new` builds them from a BTreeMap).
        let horizon_at = labels.partition_point(|(k, _)| k.as_str() < "horizon");
        return Written { series, escaped: None, horizon_at };
    }
    let mut taken: HashSet<Cow<'_, str>> = OWN_LABELS.iter().chain(&["__name__"]).map(|n| Cow::Borrowed(*n)).collect();
    taken.extend(labels.iter().filter(|(name, _)| !needs_escaping(name)).map(|(name, _)| Cow::Borrowed(name.as_str())));
    let mut out: Vec<Label<'_>> = Vec::with_capacity(labels.len());
    for (name, value) in labels {
        if !needs_escaping(name) {
            out.push((Cow::Borrowed(name.as_str()), value.as_str()));
            continue;
        }
        let mut stored = escaping.escape(name);
        while taken.contains(&stored) {
            stored = Cow::Owned(format!("exported_{stored}"));
        }
        taken.insert(stored.clone());
        out.push((stored, value.as_str()));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    let horizon_at = out.partition_point(|(k, _)| k.as_ref() < "horizon");
    if escaping == Escaping::AllowUtf8 {
        for (name, _) in &mut out {
            if !is_legacy_label_name(name) {
                *name = Cow::Owned(format::quote(name));
            }
        }
    }
    Written { series, escaped: Some(out), horizon_at }
}

/// The series of one rule as written, each label set once, so that the body never repeats a
/// series. Input series that differ only in `__name__` are alike (the first is kept; a rule's
/// series are sorted, so they are neighbours). When escaping made two series alike, the one whose
/// names needed no escaping is kept, else the first; only rules with an escaped name pay for that.
fn written_rule(series: &[SeriesOutput], escaping: Escaping) -> Vec<Written<'_>> {
    let mut out: Vec<Written<'_>> = series.iter().map(|s| written(s, escaping)).collect();
    if out.iter().all(|w| w.escaped.is_none()) {
        out.dedup_by(|later, earlier| later.series.labels == earlier.series.labels);
        return out;
    }
    let pairs: Vec<Vec<(&str, &str)>> = out.iter().map(Written::pairs).collect();
    let mut first: HashMap<&[(&str, &str)], usize> = HashMap::with_capacity(out.len());
    let mut keep = vec![true; out.len()];
    for (i, labels) in pairs.iter().enumerate() {
        match first.get(labels.as_slice()) {
            None => {
                first.insert(labels, i);
            }
            Some(&j) if out[j].escaped.is_some() && out[i].escaped.is_none() => {
                keep[j] = false;
                first.insert(labels, i);
            }
            Some(_) => keep[i] = false,
        }
    }
    let mut keep = keep.into_iter();
    out.retain(|_| keep.next().unwrap_or(true));
    out
}

/// A sample value, unless it is NaN or infinite: the last defence, so that a model that produced
/// one costs that sample only, never the scrape or an alert's meaning.
fn finite(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

/// Appends the label set `{name="value",…}` (values escaped as the exposition formats ask).
fn write_labels<'n, 'v>(out: &mut String, labels: impl IntoIterator<Item = (&'n str, &'v str)>) {
    let mut sep = '{';
    for (name, value) in labels {
        out.push(sep);
        sep = ',';
        out.push_str(name);
        out.push_str("=\"");
        if value.contains(['\\', '"', '\n']) {
            for c in value.chars() {
                match c {
                    '\\' => out.push_str("\\\\"),
                    '"' => out.push_str("\\\""),
                    '\n' => out.push_str("\\n"),
                    c => out.push(c),
                }
            }
        } else {
            out.push_str(value);
        }
        out.push('"');
    }
    if sep == ',' {
        out.push('}');
    }
}

/// Appends one sample line of `family`; `v` is finite.
fn write_sample<'n, 'v>(out: &mut String, family: &Family, labels: impl IntoIterator<Item = (&'n str, &'v str)>, v: f64) {
    out.push_str(family.name);
    if family.kind == Kind::Counter {
        out.push_str("_total");
    }
    write_labels(out, labels);
    out.push(' ');
    match family.kind {
        // Counters are integers, as client_rust writes a `u64` counter.
        Kind::Counter => out.push_str(itoa::Buffer::new().format(v as u64)),
        Kind::Gauge => out.push_str(dtoa::Buffer::new().format(v)),
    }
    out.push('\n');
}

/// Appends the `# HELP`, `# TYPE` (and in OpenMetrics `# UNIT`) lines of `family`. The text
/// format types a counter under its sample name and has no unit line.
fn write_header(out: &mut String, family: &Family, exposition: Exposition) {
    let kind = match family.kind {
        Kind::Gauge => "gauge",
        Kind::Counter => "counter",
    };
    let suffix = if exposition == Exposition::Text && family.kind == Kind::Counter { "_total" } else { "" };
    for (tag, text) in [("HELP", family.help), ("TYPE", kind)] {
        out.push_str("# ");
        out.push_str(tag);
        out.push(' ');
        out.push_str(family.name);
        out.push_str(suffix);
        out.push(' ');
        out.push_str(text);
        out.push('\n');
    }
    if let (Exposition::OpenMetrics, Some(unit)) = (exposition, family.unit) {
        out.push_str("# UNIT ");
        out.push_str(family.name);
        out.push(' ');
        out.push_str(unit);
        out.push('\n');
    }
}

/// Calls `f` with every output sample of `series` (one rule's), family by family within each
/// series: the family's index in [`RuleLines::outputs`], the family, the labels written for
/// `escaping` in sorted order (`horizon` and `model` in their places) and the finite value.
fn for_each_output(
    series: &[SeriesOutput],
    escaping: Escaping,
    mut f: impl FnMut(usize, &Family, &mut dyn Iterator<Item = (&str, &str)>, f64),
) {
    for w in written_rule(series, escaping) {
        let pairs = w.pairs();
        for (i, (family, value)) in SERIES_FAMILIES.iter().enumerate() {
            let Some(v) = value(w.series).and_then(finite) else { continue };
            f(i, family, &mut pairs.iter().copied(), v);
        }
        let (before, after) = pairs.split_at(w.horizon_at);
        for (i, (family, value)) in FORECAST_FAMILIES.iter().enumerate() {
            for (horizon, forecast) in w.series.forecasts() {
                let Some(v) = finite(value(forecast)) else { continue };
                let mut labels = before.iter().copied().chain([("horizon", horizon.as_str())]).chain(after.iter().copied());
                f(SERIES_FAMILIES.len() + i, family, &mut labels, v);
            }
        }
        let (before, after) = pairs.split_at(pairs.partition_point(|(k, _)| *k < MEMBER_LABEL));
        for (model, score) in w.series.members() {
            let Some(v) = finite(*score) else { continue };
            let mut labels = before.iter().copied().chain([(MEMBER_LABEL, *model)]).chain(after.iter().copied());
            f(OUTPUT_FAMILIES - 1, &MEMBERS, &mut labels, v);
        }
    }
}

/// The sample lines of the entry of rule `rule` of group label `group`, for `escaping`.
fn rule_lines(entry: &RuleEntry, group: &str, rule: &str, escaping: Escaping) -> RuleLines {
    let mut lines = RuleLines::default();
    for_each_output(&entry.series, escaping, |i, family, labels, v| write_sample(&mut lines.outputs[i], family, labels, v));
    for ((family, value), out) in STATUS_FAMILIES.iter().zip(&mut lines.status) {
        let Some(v) = value(entry).and_then(finite) else { continue };
        write_sample(out, family, [("rule", rule), ("rule_group", group)], v);
    }
    lines
}

/// One output sample as remote write sends it: the metric name and every label, sorted by name
/// (`__name__` among them), label names escaped as for a scraper that does not negotiate.
#[derive(Clone, Debug, PartialEq)]
pub struct OutputSample {
    /// Label pairs, sorted by name, `__name__` included.
    pub labels: Vec<(String, String)>,
    /// The value (finite).
    pub value: f64,
}

/// The samples `/metrics` would show for these outputs of one rule (the output families only,
/// not the rule's status), in family order.
pub fn output_samples(series: &[SeriesOutput]) -> Vec<OutputSample> {
    let mut out = Vec::new();
    for_each_output(series, Escaping::default(), |_, family, labels, value| {
        let mut labels: Vec<(String, String)> = labels.map(|(k, v)| (k.to_string(), v.to_string())).collect();
        labels.push(("__name__".to_string(), family.name.to_string()));
        labels.sort_unstable();
        out.push(OutputSample { labels, value });
    });
    out
}

impl SnapshotCollector {
    /// A collector over `exporter`'s snapshots.
    pub fn new(exporter: Exporter) -> Self {
        Self { exporter, clock: Clock::System }
    }

    /// Appends every rule's outputs and status and every group's facts in `exposition`'s syntax,
    /// label names written for `escaping`.
    pub fn write(&self, out: &mut String, exposition: Exposition, escaping: Escaping) {
        let layout = self.exporter.layout();
        let now = self.clock.now();
        let groups = layout.groups();
        // Each rule's entry is read once, so that all families of a scrape agree on it.
        let entries: Vec<(&str, &str, Arc<RuleEntry>)> =
            groups.iter().flat_map(|(_, g)| g.slots.iter().map(|(rule, slot)| (g.label.as_str(), rule.as_str(), slot.load()))).collect();
        let rules: Vec<(&RuleLines, bool)> = entries
            .iter()
            .map(|(group, rule, entry)| (entry.lines.get(entry, group, rule, escaping), now - entry.refreshed <= entry.stale_after))
            .collect();
        out.reserve(rules.iter().map(|(lines, _)| lines.len()).sum::<usize>() + 128 * groups.len() + 4096);

        let outputs = SERIES_FAMILIES.iter().map(|(f, _)| f).chain(FORECAST_FAMILIES.iter().map(|(f, _)| f)).chain([&MEMBERS]);
        for (i, family) in outputs.enumerate() {
            write_header(out, family, exposition);
            for (lines, _) in rules.iter().filter(|(_, fresh)| *fresh) {
                out.push_str(&lines.outputs[i]);
            }
        }
        for (i, (family, _)) in STATUS_FAMILIES.iter().enumerate() {
            write_header(out, family, exposition);
            for (lines, _) in &rules {
                out.push_str(&lines.status[i]);
            }
        }
        write_header(out, &MISSED, exposition);
        for (_, group) in groups {
            write_sample(out, &MISSED, [("rule_group", group.label.as_str())], group.missed() as f64);
        }
        write_header(out, &INTERVAL, exposition);
        for (_, group) in groups {
            let Some(v) = finite(group.interval) else { continue };
            write_sample(out, &INTERVAL, [("rule_group", group.label.as_str())], v);
        }
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::registry::Registry;

    use super::*;
    use crate::config::ModelSpec;
    use crate::config::{Duration, GroupKey, RuleGroup, Schedule};
    use crate::exporter::{encode, Format};
    use crate::exporter::{Point, RuleId};
    use crate::source::Labels;

    fn render(exporter: &Exporter, now: f64) -> String {
        let registry = Registry::default();
        let collector = SnapshotCollector { exporter: exporter.clone(), clock: Clock::Fixed(now) };
        encode(&registry, Some(&collector), Format::TEXT).unwrap()
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
    /// with missed runs. Own metrics as registered, with one observation each; and a collector
    /// over the snapshot.
    fn golden_registry() -> (Registry, SnapshotCollector) {
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
        (registry, SnapshotCollector { exporter, clock: Clock::Fixed(1_700_000_030.0) })
    }

    /// `/metrics` for the fixed snapshot, in both formats, byte for byte as in `tests/golden/`
    /// (regenerate with `UPDATE_GOLDEN=1` and review the diff).
    #[test]
    fn golden_exposition() {
        let (registry, collector) = golden_registry();
        for (format, file) in [(Format::TEXT, "metrics.prom"), (Format::OPENMETRICS, "metrics.om.txt")] {
            let body = encode(&registry, Some(&collector), format).unwrap();
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(file);
            if std::env::var_os("UPDATE_GOLDEN").is_some() {
                std::fs::write(&path, &body).unwrap();
            }
            let golden = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 writes it)", path.display()));
            check_exposition(&body, false).unwrap_or_else(|e| panic!("{file}: {e}"));
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

    /// The entry of rule `rule` of the only group.
    fn entry(exporter: &Exporter, rule: &str) -> Arc<RuleEntry> {
        let layout = exporter.layout();
        let groups = layout.groups();
        groups[0].1.slots[rule].load()
    }

    #[test]
    fn scrapes_copy_the_lines_each_evaluation_wrote() {
        let exporter = Exporter::default();
        let key = record(&exporter, "a.yaml", &["r", "s"], &["x"], 1000.0, 300.0);
        let lines = |rule: &str| entry(&exporter, rule).lines.by_escaping[0].get().map(|l| l as *const RuleLines);
        let s_lines = lines("s").expect("the evaluation wrote the lines of s");
        let (first, again) = (render(&exporter, 1001.0), render(&exporter, 1002.0));
        assert_eq!(first, again, "no evaluation between two scrapes: the same bytes");
        assert!(entry(&exporter, "s").lines.by_escaping[1..].iter().all(|l| l.get().is_none()), "one copy for legacy names");

        // A new evaluation of r: the next scrape serves its new value and reuses the lines of s.
        let rule = crate::config::rules::test_forecast_rule("r", "up", ModelSpec::Linear {});
        let point = Point { ts: 60, y: 3.0, yhat: 1.0, lower: 0.0, upper: 2.0, score: 2.0 };
        let series = vec![SeriesOutput::forecast(&Labels::from([("job".to_string(), "x".to_string())]), &rule, point, vec![])];
        exporter.record(&RuleId { group: key, rule: "r".into() }, 1060.0, 0.0, Ok((series, 0, 1)), 300.0);
        let next = render(&exporter, 1061.0);
        assert!(next.contains("pulsewatch_anomaly_score{job=\"x\",rule=\"r\"} 2.0\n"), "{next}");
        assert!(next.contains("pulsewatch_rule_evaluations_total{rule=\"r\",rule_group=\"a.yaml;g\"} 2\n"), "{next}");
        assert!(next.contains("pulsewatch_anomaly_score{job=\"x\",rule=\"s\"} 0.5\n"), "{next}");
        assert_eq!(lines("s"), Some(s_lines), "the lines of s were not written again");
    }

    /// An ensemble's members score in their own family, `model` in its sorted place; an input
    /// label `model` of an ensemble rule is renamed, as `rule` and `horizon` are.
    #[test]
    fn ensemble_members_score_in_their_own_family() {
        use crate::config::{Combine, ModelSpec};
        let exporter = Exporter::default();
        let key = GroupKey { file: "a.yaml".into(), name: "g".into() };
        let members = vec![ModelSpec::Linear {}, ModelSpec::Holt {}];
        let rule = crate::config::rules::test_forecast_rule("r", "up", ModelSpec::Ensemble { combine: Combine::Max, members });
        let group = RuleGroup { key: key.clone(), schedule: Schedule::Interval(Duration::from_secs(60)), rules: vec![rule.clone()] };
        exporter.set_group(&group, 60.0, &[]);
        let point = Point { ts: 0, y: 1.0, yhat: 1.0, lower: 0.0, upper: 2.0, score: 1.5 };
        let input = labels(&[("a", "1"), ("model", "gpu"), ("z", "2")]);
        let series = SeriesOutput::forecast(&input, &rule, point, vec![]).with_members(vec![("linear", 1.5), ("holt", f64::NAN)]);
        exporter.record(&RuleId { group: key, rule: "r".into() }, 1000.0, 0.0, Ok((vec![series], 2, 1)), 300.0);
        let body = render(&exporter, 1001.0);
        check_exposition(&body, false).unwrap_or_else(|e| panic!("{e}\n{body}"));
        let members: Vec<&str> = body.lines().filter(|l| l.starts_with("pulsewatch_member_anomaly_score{")).collect();
        assert_eq!(members, [r#"pulsewatch_member_anomaly_score{a="1",exported_model="gpu",model="linear",rule="r",z="2"} 1.5"#], "{body}");
        assert!(body.contains("pulsewatch_anomaly_score{a=\"1\",exported_model=\"gpu\",rule=\"r\",z=\"2\"} 1.5\n"), "{body}");
        // Other rules keep an input label named `model`.
        let plain = render_inputs(&[labels(&[("model", "gpu")])], None);
        assert!(score_line(&plain).contains("{model=\"gpu\",rule=\"r\"}"), "{plain}");
    }

    #[test]
    fn each_escaping_gets_its_own_lines() {
        let inputs = [labels(&[("service.name", "api")])];
        let utf8 = Some("application/openmetrics-text;version=1.0.0;escaping=allow-utf-8");
        let alone = (render_inputs(&inputs, None), render_inputs(&inputs, utf8));
        assert!(score_line(&alone.0).contains("{rule=\"r\",service_name=\"api\"}"), "{}", alone.0);
        assert!(score_line(&alone.1).contains("{rule=\"r\",\"service.name\"=\"api\"}"), "{}", alone.1);
        // Scrapes of one entry in alternating escapings: each as if it came alone.
        let collector = one_rule(&inputs);
        for _ in 0..2 {
            assert_eq!(encode(&Registry::default(), Some(&collector), Format::negotiate(None)).unwrap(), alone.0);
            assert_eq!(encode(&Registry::default(), Some(&collector), Format::negotiate(utf8)).unwrap(), alone.1);
        }
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
        let registry = Registry::default();
        let collector = SnapshotCollector::new(exporter);
        let text = crate::exporter::encode(&registry, Some(&collector), crate::exporter::Format::TEXT).unwrap();
        assert!(text.contains("pulsewatch_rule_group_interval_seconds{rule_group=\"a.yaml;g\"} 90"), "{text}");
        assert!(text.contains("pulsewatch_group_iterations_missed_total{rule_group=\"a.yaml;g\"} 2"), "{text}");
    }

    // === hostile upstream labels ===

    /// A collector over one forecast rule `r` (one horizon) with one output series per label set
    /// of `inputs`.
    fn one_rule(inputs: &[Labels]) -> SnapshotCollector {
        let exporter = Exporter::default();
        let key = GroupKey { file: "a.yaml".into(), name: "g".into() };
        let rule = crate::config::rules::test_forecast_rule("r", "up", ModelSpec::Linear {});
        let group = RuleGroup { key: key.clone(), schedule: Schedule::Interval(Duration::from_secs(60)), rules: vec![rule.clone()] };
        exporter.set_group(&group, 60.0, &[]);
        let point = Point { ts: 0, y: 1.0, yhat: 1.0, lower: 0.0, upper: 2.0, score: 0.5 };
        let series =
            inputs.iter().map(|labels| SeriesOutput::forecast(labels, &rule, point, vec![("1h".to_string(), (1.0, 0.5, 1.5))])).collect();
        exporter.record(&RuleId { group: key, rule: "r".into() }, 1000.0, 0.0, Ok((series, 1, inputs.len())), 300.0);
        SnapshotCollector { exporter, clock: Clock::Fixed(1001.0) }
    }

    /// `/metrics` of [`one_rule`], as negotiated for `accept`.
    fn render_inputs(inputs: &[Labels], accept: Option<&str>) -> String {
        encode(&Registry::default(), Some(&one_rule(inputs)), Format::negotiate(accept)).unwrap()
    }

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    /// A quoted string at the start of `s` as the exposition formats write it (only `\\`, `\"` and
    /// `\n` escapes, no raw newline): its content and what follows the closing quote.
    fn quoted(s: &str) -> Result<(String, &str), String> {
        let body = s.strip_prefix('"').ok_or_else(|| format!("expected '\"' at {s:?}"))?;
        let mut out = String::new();
        let mut chars = body.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => return Ok((out, &body[i + 1..])),
                '\n' => return Err(format!("raw newline in {s:?}")),
                '\\' => match chars.next() {
                    Some((_, '\\')) => out.push('\\'),
                    Some((_, '"')) => out.push('"'),
                    Some((_, 'n')) => out.push('\n'),
                    other => return Err(format!("invalid escape {other:?} in {s:?}")),
                },
                c => out.push(c),
            }
        }
        Err(format!("unterminated string {s:?}"))
    }

    fn is_legacy_label_name(name: &str) -> bool {
        let mut chars = name.chars();
        chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_') && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
    }

    /// A sample read back from an exposition: its name and labels.
    type ParsedSample = (String, Vec<(String, String)>);

    /// What the Prometheus and OpenMetrics parsers demand of a `/metrics` body, line by line:
    /// comments are `# HELP`, `# TYPE`, `# UNIT` or `# EOF`; a sample is `name{label="value",…}
    /// value` with a legacy metric name, label names that are legacy (or, with `utf8`, quoted) and
    /// unique in the sample and never `__name__`, values escaped as the formats require, and a
    /// finite number. No series comes twice. Returns the samples as (name, labels).
    fn check_exposition(body: &str, utf8: bool) -> Result<Vec<ParsedSample>, String> {
        let mut seen = std::collections::HashSet::new();
        let mut samples = Vec::new();
        for line in body.lines() {
            if let Some(comment) = line.strip_prefix('#') {
                if !["# HELP ", "# TYPE ", "# UNIT "].iter().any(|p| line.starts_with(p)) && comment != " EOF" {
                    return Err(format!("bad comment line {line:?}"));
                }
                continue;
            }
            let end = line.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':')).unwrap_or(line.len());
            let (name, mut rest) = line.split_at(end);
            if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
                return Err(format!("bad metric name in {line:?}"));
            }
            let mut labels: Vec<(String, String)> = Vec::new();
            if let Some(mut inner) = rest.strip_prefix('{') {
                loop {
                    if let Some(after) = inner.strip_prefix('}') {
                        rest = after;
                        break;
                    }
                    let (label, after) = if inner.starts_with('"') && utf8 {
                        quoted(inner)?
                    } else {
                        let end = inner.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(inner.len());
                        let (label, after) = inner.split_at(end);
                        if !is_legacy_label_name(label) {
                            return Err(format!("bad label name {label:?} in {line:?}"));
                        }
                        (label.to_string(), after)
                    };
                    if label.is_empty() || label == "__name__" || labels.iter().any(|(l, _)| *l == label) {
                        return Err(format!("label name {label:?} empty, reserved or repeated in {line:?}"));
                    }
                    let after = after.strip_prefix('=').ok_or_else(|| format!("expected '=' after {label:?} in {line:?}"))?;
                    let (value, after) = quoted(after)?;
                    labels.push((label, value));
                    inner = after.strip_prefix(',').unwrap_or(after);
                    if !inner.starts_with('}') && after == inner {
                        return Err(format!("expected ',' or '}}' in {line:?}"));
                    }
                }
            }
            let value = rest.strip_prefix(' ').ok_or_else(|| format!("expected ' ' before the value in {line:?}"))?;
            match value.parse::<f64>() {
                Ok(v) if v.is_finite() => {}
                _ => return Err(format!("value {value:?} is not a finite number in {line:?}")),
            }
            let mut key = labels.clone();
            key.sort();
            if !seen.insert((name.to_string(), key)) {
                return Err(format!("series repeated: {line:?}"));
            }
            samples.push((name.to_string(), labels));
        }
        Ok(samples)
    }

    /// A label of the score sample of `body` whose value is `value`: (name as written, value).
    fn score_line(body: &str) -> &str {
        body.lines().find(|l| l.starts_with("pulsewatch_anomaly_score{")).unwrap_or_else(|| panic!("no score in {body}"))
    }

    #[test]
    fn label_names_outside_the_legacy_set_are_escaped_with_underscores() {
        struct Case {
            name: &'static str,
            written: &'static str,
        }
        let cases = [
            Case { name: "service.name", written: "service_name" },
            Case { name: "", written: "_" },
            Case { name: "größe", written: "gr__e" },
            Case { name: "1st", written: "_st" },
            Case { name: "a:b", written: "a_b" },
            Case { name: "http.request/method name", written: "http_request_method_name" },
            Case { name: "x\"} 1\nevil_injected_metric{y=\"", written: "x___1_evil_injected_metric_y__" },
            Case { name: "{", written: "_" },
            Case { name: "__name._", written: "exported___name__" },
            // legacy-valid names are written as they are, reserved prefix or not
            Case { name: "__meta_x", written: "__meta_x" },
            Case { name: "job", written: "job" },
        ];
        for case in cases {
            let body = render_inputs(&[labels(&[(case.name, "v")])], None);
            let mut expected = [(case.written, "v"), ("rule", "r")];
            expected.sort();
            let expected =
                format!("pulsewatch_anomaly_score{{{}=\"{}\",{}=\"{}\"}} 0.5", expected[0].0, expected[0].1, expected[1].0, expected[1].1);
            assert_eq!(score_line(&body), expected, "{:?}", case.name);
            let samples = check_exposition(&body, false).unwrap_or_else(|e| panic!("{:?}: {e}\n{body}", case.name));
            assert!(samples.iter().all(|(name, _)| name.starts_with("pulsewatch_")), "{body}");
            assert_eq!(samples.iter().filter(|(name, _)| name == "pulsewatch_forecast").count(), 1, "{body}");
        }
    }

    #[test]
    fn names_that_collide_once_escaped_are_renamed_exported() {
        let input = labels(&[("service.name", "a"), ("service_name", "b"), ("service name", "c"), ("exported_service_name", "d")]);
        let body = render_inputs(&[input], None);
        // Legacy-valid names keep theirs; escaped ones take `exported_` prefixes in input order
        // (' ' sorts before '.') until free.
        assert_eq!(
            score_line(&body),
            "pulsewatch_anomaly_score{exported_exported_exported_service_name=\"a\",exported_exported_service_name=\"c\",\
             exported_service_name=\"d\",rule=\"r\",service_name=\"b\"} 0.5"
        );
        // `horizon` stays ours whatever escapes to it
        let body = render_inputs(&[labels(&[("horizon", "a"), ("exported.horizon", "b")])], None);
        let forecast = body.lines().find(|l| l.starts_with("pulsewatch_forecast{")).unwrap();
        assert_eq!(forecast, "pulsewatch_forecast{exported_exported_horizon=\"b\",exported_horizon=\"a\",horizon=\"1h\",rule=\"r\"} 1.0");
        check_exposition(&body, false).unwrap();
    }

    #[test]
    fn series_that_escape_to_the_same_labels_are_exported_once() {
        // Distinct upstream, alike once escaped: the series whose names needed no escaping wins
        // (it sorts second here, '.' < '_'), whatever the order.
        let exporter = Exporter::default();
        let key = GroupKey { file: "a.yaml".into(), name: "g".into() };
        let rule = crate::config::rules::test_forecast_rule("r", "up", ModelSpec::Linear {});
        let group = RuleGroup { key: key.clone(), schedule: Schedule::Interval(Duration::from_secs(60)), rules: vec![rule.clone()] };
        exporter.set_group(&group, 60.0, &[]);
        let point = |score| Point { ts: 0, y: 1.0, yhat: 1.0, lower: 0.0, upper: 2.0, score };
        let series = vec![
            SeriesOutput::forecast(&labels(&[("a.b", "1")]), &rule, point(0.25), vec![]),
            SeriesOutput::forecast(&labels(&[("a_b", "1")]), &rule, point(0.75), vec![]),
            SeriesOutput::forecast(&labels(&[("a b", "1")]), &rule, point(0.5), vec![]),
        ];
        exporter.record(&RuleId { group: key, rule: "r".into() }, 1000.0, 0.0, Ok((series, 1, 3)), 300.0);
        let registry = Registry::default();
        let collector = SnapshotCollector { exporter, clock: Clock::Fixed(1001.0) };
        let body = encode(&registry, Some(&collector), Format::TEXT).unwrap();
        check_exposition(&body, false).unwrap_or_else(|e| panic!("{e}\n{body}"));
        let scores: Vec<&str> = body.lines().filter(|l| l.starts_with("pulsewatch_anomaly_score{")).collect();
        assert_eq!(scores, [r#"pulsewatch_anomaly_score{a_b="1",rule="r"} 0.75"#], "{body}");
    }

    #[test]
    fn series_that_differ_only_in_their_metric_name_are_exported_once() {
        // `{__name__=~"a|b"}` answers a{job="x"} and b{job="x"}; without `__name__` they are alike.
        let body = render_inputs(&[labels(&[("__name__", "a"), ("job", "x")]), labels(&[("__name__", "b"), ("job", "x")])], None);
        check_exposition(&body, false).unwrap_or_else(|e| panic!("{e}\n{body}"));
        assert_eq!(body.lines().filter(|l| l.starts_with("pulsewatch_anomaly_score{")).count(), 1, "{body}");
    }

    /// Prometheus 3's default `Accept` header.
    const PROMETHEUS_3_ACCEPT: &str = "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,\
        application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,\
        text/plain;version=0.0.4;q=0.3,*/*;q=0.2";

    #[test]
    fn scrapers_that_allow_utf8_get_quoted_names() {
        let input = labels(&[("service.name", "api"), ("job", "j"), ("a\"b\\c\nd", "v"), ("", "e")]);
        for (accept, content_type) in [
            (PROMETHEUS_3_ACCEPT, "application/openmetrics-text; version=1.0.0; charset=utf-8; escaping=allow-utf-8"),
            ("text/plain;version=1.0.0;escaping=allow-utf-8", "text/plain; version=1.0.0; charset=utf-8; escaping=allow-utf-8"),
        ] {
            assert_eq!(Format::negotiate(Some(accept)).content_type(), content_type);
            let body = render_inputs(std::slice::from_ref(&input), Some(accept));
            // sorted by the names the scraper stores; an empty name, which no syntax can carry, is `_`
            assert_eq!(
                score_line(&body),
                r#"pulsewatch_anomaly_score{_="e","a\"b\\c\nd"="v",job="j",rule="r","service.name"="api"} 0.5"#,
                "{accept}"
            );
            let samples = check_exposition(&body, true).unwrap_or_else(|e| panic!("{e}\n{body}"));
            let (_, got) = samples.iter().find(|(n, _)| n == "pulsewatch_anomaly_score").unwrap();
            assert!(got.contains(&("a\"b\\c\nd".to_string(), "v".to_string())), "{got:?}");
        }
        // Scrapers that do not ask get underscores, and so do those that ask for them.
        for accept in [None, Some("text/plain;version=0.0.4"), Some("application/openmetrics-text;version=1.0.0;escaping=underscores")] {
            let body = render_inputs(&[labels(&[("service.name", "api")])], accept);
            assert_eq!(score_line(&body), r#"pulsewatch_anomaly_score{rule="r",service_name="api"} 0.5"#, "{accept:?}");
        }
    }

    #[test]
    fn non_finite_values_are_skipped_sample_by_sample() {
        use crate::exporter::Values;
        let exporter = Exporter::default();
        let key = GroupKey { file: "a.yaml".into(), name: "g".into() };
        let forecast = crate::config::rules::test_forecast_rule("f", "up", ModelSpec::Linear {});
        let detector = crate::config::rules::test_forecast_rule("d", "up", ModelSpec::Linear {});
        let group = RuleGroup {
            key: key.clone(),
            schedule: Schedule::Interval(Duration::from_secs(60)),
            rules: vec![forecast.clone(), detector.clone()],
        };
        exporter.set_group(&group, 60.0, &[]);
        let point = Point { ts: 0, y: f64::NAN, yhat: 1.0, lower: f64::NEG_INFINITY, upper: f64::INFINITY, score: f64::NAN };
        let out = SeriesOutput::forecast(&labels(&[("job", "a")]), &forecast, point, vec![("1h".into(), (f64::NAN, 0.5, f64::INFINITY))]);
        exporter.record(&RuleId { group: key.clone(), rule: "f".into() }, 1000.0, 0.0, Ok((vec![out], 1, 1)), 300.0);
        let out =
            SeriesOutput::new(&labels(&[("job", "b")]), &detector, Values::Reconstruction { ts: 0, score: f64::INFINITY, error: f64::NAN });
        let ok = SeriesOutput::new(&labels(&[("job", "c")]), &detector, Values::Reconstruction { ts: 0, score: 0.25, error: 0.5 });
        exporter.record(&RuleId { group: key, rule: "d".into() }, 1000.0, 0.0, Ok((vec![out, ok], 1, 2)), 300.0);
        let registry = Registry::default();
        let collector = SnapshotCollector { exporter, clock: Clock::Fixed(1001.0) };
        for format in [Format::negotiate(None), Format::negotiate(Some("application/openmetrics-text"))] {
            let body = encode(&registry, Some(&collector), format).unwrap();
            let samples = check_exposition(&body, false).unwrap_or_else(|e| panic!("{e}\n{body}"));
            let names: Vec<String> = samples
                .iter()
                .filter(|(n, _)| {
                    !n.starts_with("pulsewatch_rule") && !n.starts_with("pulsewatch_model") && !n.starts_with("pulsewatch_group")
                })
                .map(|(n, l)| format!("{n}{{{}}}", l.iter().find(|(k, _)| k == "job").unwrap().1))
                .collect();
            assert_eq!(
                names,
                ["pulsewatch_anomaly_score{c}", "pulsewatch_yhat{a}", "pulsewatch_reconstruction_error{c}", "pulsewatch_forecast_lower{a}"],
                "only the finite samples, each family as before\n{body}"
            );
        }
    }

    /// An upstream label name: legacy ones, any text, and the names that broke or could break the
    /// exposition.
    fn label_name() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-zA-Z_][a-zA-Z0-9_]{0,6}",
            "(?s).{0,6}",
            prop::sample::select(vec![
                "",
                "rule",
                "horizon",
                "exported_rule",
                "__name__",
                "__name._",
                "service.name",
                "service_name",
                "_",
                "a\nb",
                "a\"b",
                "}",
                "{",
                "=",
                ",",
                "\\",
                " ",
                "exported_service_name",
                "1",
                "ä",
            ])
            .prop_map(String::from),
        ]
    }

    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Whatever the upstream sends, every format and escaping gives a body the parsers accept,
        /// with no sample outside pulsewatch's families and at most one per input series.
        #[test]
        fn any_upstream_labels_render_a_valid_exposition(
            inputs in prop::collection::vec(prop::collection::btree_map(label_name(), "(?s).{0,6}", 0..5), 1..4),
            accept in prop::sample::select(vec![None, Some("application/openmetrics-text"), Some(PROMETHEUS_3_ACCEPT), Some("text/plain;version=1.0.0;escaping=allow-utf-8")]),
        ) {
            let body = render_inputs(&inputs, accept);
            let utf8 = accept.is_some_and(|a| a.contains("allow-utf-8"));
            let samples = check_exposition(&body, utf8).map_err(|e| TestCaseError::fail(format!("{e}\n{body}")))?;
            prop_assert!(samples.iter().all(|(name, _)| name.starts_with("pulsewatch_")));
            let scores = samples.iter().filter(|(name, _)| name == "pulsewatch_anomaly_score").count();
            prop_assert!(scores >= 1 && scores <= inputs.len(), "{} scores for {} inputs\n{}", scores, inputs.len(), body);
        }
    }

    /// The text format as Prometheus's own parser and linter read it, for the labels that break it.
    #[test]
    fn promtool_accepts_the_exposition_whatever_the_labels() {
        use std::io::Write;
        use std::process::{Command, Stdio};
        let inputs = [
            labels(&[("service.name", "api"), ("", "empty"), ("1st", "digit"), ("größe", "umlaut")]),
            labels(&[("__meta", "x"), ("__name._", "name"), ("a\"b", "quote"), ("a\nb", "newline"), ("}", "brace")]),
            labels(&[("x\"} 1\nevil_injected_metric{y=\"", "injected"), ("rule", "collides"), ("exported_rule", "also")]),
            labels(&[("a.b", "1")]),
            labels(&[("a_b", "1")]),
            labels(&[("v", "value \"quoted\" \\ with\nnewline\r and \u{2028}")]),
        ];
        let body = render_inputs(&inputs, None);
        let mut child = match Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
        {
            Ok(child) => child,
            Err(e) => panic!("promtool not runnable ({e}); install it with `apt-get install -y --no-install-recommends prometheus`"),
        };
        child.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "promtool check metrics: {}{}\n{body}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!body.contains("\nevil_injected_metric"), "{body}");
    }
}

//! The exported state: per rule its output series and status, swapped atomically on each update.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use crate::config::{GroupKey, Rule, RuleGroup};
use crate::source::{series_key, Labels};

/// Labels pulsewatch adds; an input label of the same name is renamed `exported_<name>`.
const OWN_LABELS: [&str; 2] = ["rule", "horizon"];

/// A rule within its group.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RuleId {
    /// The group.
    pub group: GroupKey,
    /// The rule name.
    pub rule: String,
}

/// A scored observation: what `pulsewatch_y`, `_yhat*` and `_anomaly_score` export.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Point {
    /// Sample timestamp, Unix seconds.
    pub ts: i64,
    /// The observation.
    pub y: f64,
    /// The prediction for `ts`.
    pub yhat: f64,
    /// Lower edge of the band.
    pub lower: f64,
    /// Upper edge of the band.
    pub upper: f64,
    /// The anomaly score.
    pub score: f64,
}

/// One output series of a rule: its labels and what its newest evaluation produced.
#[derive(Clone, Debug, PartialEq)]
pub struct SeriesOutput {
    /// Output labels, sorted: input labels (minus `__name__`), `rule`, static labels.
    pub labels: Vec<(String, String)>,
    /// The values exported for the series.
    pub values: Values,
}

/// What a rule exports per series.
#[derive(Clone, Debug, PartialEq)]
pub enum Values {
    /// A forecast rule: the scored observation, and per horizon as written `(point, lower, upper)`.
    Forecast {
        /// The scored observation.
        point: Point,
        /// `(horizon as written, (point, lower, upper))`.
        forecasts: Vec<(String, (f64, f64, f64))>,
    },
    /// A detector rule: the window ending at `ts`, its score and its reconstruction error.
    Reconstruction {
        /// Timestamp of the window's newest sample, Unix seconds.
        ts: i64,
        /// The error over the model's threshold.
        score: f64,
        /// The mean squared reconstruction error, in normalised units.
        error: f64,
    },
}

impl SeriesOutput {
    /// The output of a forecast rule for an input series.
    pub fn forecast(input: &Labels, rule: &Rule, point: Point, forecasts: Vec<(String, (f64, f64, f64))>) -> Self {
        Self::new(input, rule, Values::Forecast { point, forecasts })
    }

    /// The anomaly score, whatever the rule's kind.
    pub fn score(&self) -> f64 {
        match &self.values {
            Values::Forecast { point, .. } => point.score,
            Values::Reconstruction { score, .. } => *score,
        }
    }

    /// The timestamp of what was scored.
    pub fn ts(&self) -> i64 {
        match &self.values {
            Values::Forecast { point, .. } => point.ts,
            Values::Reconstruction { ts, .. } => *ts,
        }
    }

    /// The scored point of a forecast rule.
    pub fn point(&self) -> Option<&Point> {
        match &self.values {
            Values::Forecast { point, .. } => Some(point),
            Values::Reconstruction { .. } => None,
        }
    }

    /// The forecasts of a forecast rule (none for a detector).
    pub fn forecasts(&self) -> &[(String, (f64, f64, f64))] {
        match &self.values {
            Values::Forecast { forecasts, .. } => forecasts,
            Values::Reconstruction { .. } => &[],
        }
    }

    /// Builds the output labels for an input series of `rule`.
    pub fn new(input: &Labels, rule: &Rule, values: Values) -> Self {
        let input = series_key(input);
        let mut labels: BTreeMap<String, String> = BTreeMap::new();
        for (name, value) in &input {
            let ours = OWN_LABELS.contains(&name.as_str()) || rule.labels.contains_key(name);
            let mut name = name.clone();
            if ours {
                // Prefix until the name is free, as Prometheus does (`exported_exported_rule`).
                name = format!("exported_{name}");
                while input.contains_key(&name) || labels.contains_key(&name) || rule.labels.contains_key(&name) {
                    name = format!("exported_{name}");
                }
            }
            labels.insert(name, value.clone());
        }
        labels.extend(rule.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
        labels.insert("rule".into(), rule.name.clone());
        Self { labels: labels.into_iter().collect(), values }
    }
}

/// Health of a rule, as `/api/v1/rules` reports it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Health {
    /// Not evaluated yet.
    #[default]
    Unknown,
    /// The last evaluation succeeded.
    Ok,
    /// The last evaluation failed.
    Err,
}

impl Health {
    /// The name Prometheus uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Ok => "ok",
            Health::Err => "err",
        }
    }
}

/// Counters and last-evaluation facts of a rule.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RuleStatus {
    /// Health of the last evaluation.
    pub health: Health,
    /// Error of the last evaluation, if it failed.
    pub last_error: Option<String>,
    /// Start of the last evaluation, Unix seconds.
    pub last_evaluation: Option<f64>,
    /// How long the last evaluation took, seconds.
    pub evaluation_seconds: f64,
    /// Evaluations run.
    pub evaluations: u64,
    /// Evaluations failed.
    pub failures: u64,
    /// Model fits run.
    pub fits: u64,
    /// Series with a model.
    pub series: usize,
}

/// A rule's outputs and status.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RuleEntry {
    /// The outputs of the last successful evaluation.
    pub series: Vec<SeriesOutput>,
    /// When the outputs were last refreshed, Unix seconds.
    pub refreshed: f64,
    /// Outputs older than this many seconds are not served.
    pub stale_after: f64,
    /// The query, for `/api/v1/rules`.
    pub expr: String,
    /// `forecast` or `anomaly`, for `/api/v1/rules`.
    pub kind: &'static str,
    /// Counters and last-evaluation facts.
    pub status: RuleStatus,
}

/// A group as `/api/v1/rules` lists it.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupInfo {
    /// Interval in seconds (for cron groups: the gap between the next two runs).
    pub interval: f64,
    /// Rule names in file order.
    pub rules: Vec<String>,
    /// Scheduled runs skipped because the previous one was still running.
    pub missed: u64,
}

/// Everything a scrape or `/api/v1/rules` reads.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Per rule, its entry.
    pub rules: BTreeMap<RuleId, Arc<RuleEntry>>,
    /// Per group, its listing facts.
    pub groups: BTreeMap<GroupKey, GroupInfo>,
}

/// The writer side of the snapshot: evaluations and reloads update it, scrapes load it.
#[derive(Clone, Debug, Default)]
pub struct Exporter {
    current: Arc<ArcSwap<Snapshot>>,
    // Serialises writers so that concurrent groups do not lose each other's updates; held only
    // while a new snapshot is built, never across an await.
    write: Arc<Mutex<()>>,
}

impl Exporter {
    /// The snapshot to read.
    pub fn load(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    fn update(&self, f: impl FnOnce(&mut Snapshot)) {
        let _guard = self.write.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut next = Snapshot::clone(&self.current.load());
        f(&mut next);
        self.current.store(Arc::new(next));
    }

    /// Lists a (new or changed) group: the entries of the rules in `kept` (whose models carry
    /// over) survive, every other rule of the group starts empty.
    pub fn set_group(&self, group: &RuleGroup, interval: f64, kept: &[String]) {
        self.update(|s| {
            let names: Vec<String> = group.rules.iter().map(|r| r.name.clone()).collect();
            s.rules.retain(|id, _| id.group != group.key || kept.contains(&id.rule));
            for rule in &group.rules {
                let id = RuleId { group: group.key.clone(), rule: rule.name.clone() };
                s.rules
                    .entry(id)
                    .or_insert_with(|| Arc::new(RuleEntry { expr: rule.display_query(), kind: rule.kind_name(), ..Default::default() }));
            }
            let missed = s.groups.get(&group.key).map_or(0, |g| g.missed);
            s.groups.insert(group.key.clone(), GroupInfo { interval, rules: names, missed });
        });
    }

    /// Removes a group and all its outputs.
    pub fn remove_group(&self, key: &GroupKey) {
        self.update(|s| {
            s.rules.retain(|id, _| &id.group != key);
            s.groups.remove(key);
        });
    }

    /// Counts `n` skipped runs of a group.
    pub fn count_missed(&self, key: &GroupKey, n: u64) {
        self.update(|s| {
            if let Some(g) = s.groups.get_mut(key) {
                g.missed += n;
            }
        });
    }

    /// Records one evaluation: new outputs on success, only the status on failure (the old
    /// outputs then age out after `stale_after`).
    pub fn record(&self, id: &RuleId, started: f64, took: f64, result: Result<(Vec<SeriesOutput>, u64, usize), String>, stale_after: f64) {
        self.update(|s| {
            let Some(entry) = s.rules.get_mut(id) else { return };
            let entry = Arc::make_mut(entry);
            let status = &mut entry.status;
            status.evaluations += 1;
            status.last_evaluation = Some(started);
            status.evaluation_seconds = took;
            entry.stale_after = stale_after;
            match result {
                Ok((mut series, fits, models)) => {
                    // The collector's order, whatever order the evaluation produced them in.
                    series.sort_unstable_by(|a, b| a.labels.cmp(&b.labels));
                    status.health = Health::Ok;
                    status.last_error = None;
                    status.fits += fits;
                    status.series = models;
                    entry.series = series;
                    entry.refreshed = started + took;
                }
                Err(err) => {
                    status.health = Health::Err;
                    status.last_error = Some(err);
                    status.failures += 1;
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Duration, Schedule};

    fn rule(labels: &[(&str, &str)]) -> Rule {
        let mut rule = crate::config::rules::test_forecast_rule("r", "up", crate::config::ModelSpec::Linear {});
        rule.labels = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        rule
    }

    #[test]
    fn output_labels_rename_collisions() {
        let input: Labels =
            [("__name__", "up"), ("rule", "x"), ("team", "a"), ("job", "j")].iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let point = Point { ts: 0, y: 0.0, yhat: 0.0, lower: 0.0, upper: 0.0, score: 0.0 };
        let out = SeriesOutput::forecast(&input, &rule(&[("team", "infra")]), point, vec![]);
        let got: Vec<(&str, &str)> = out.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(got, vec![("exported_rule", "x"), ("exported_team", "a"), ("job", "j"), ("rule", "r"), ("team", "infra")]);
    }

    #[test]
    fn renamed_labels_never_overwrite() {
        let input: Labels = [("rule", "a"), ("exported_rule", "b")].iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let point = Point { ts: 0, y: 0.0, yhat: 0.0, lower: 0.0, upper: 0.0, score: 0.0 };
        let out = SeriesOutput::forecast(&input, &rule(&[]), point, vec![]);
        let got: Vec<(&str, &str)> = out.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(got, vec![("exported_exported_rule", "a"), ("exported_rule", "b"), ("rule", "r")]);
        // a static label may take the renamed name too
        let input: Labels = [("rule".to_string(), "a".to_string())].into();
        let out = SeriesOutput::forecast(&input, &rule(&[("exported_rule", "x")]), point, vec![]);
        let got: Vec<(&str, &str)> = out.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(got, vec![("exported_exported_rule", "a"), ("exported_rule", "x"), ("rule", "r")]);
    }

    #[test]
    fn failure_keeps_outputs_and_counts() {
        let exporter = Exporter::default();
        let group = RuleGroup {
            key: GroupKey { file: "f".into(), name: "g".into() },
            schedule: Schedule::Interval(Duration::from_secs(60)),
            rules: vec![rule(&[])],
        };
        exporter.set_group(&group, 60.0, &[]);
        let id = RuleId { group: group.key.clone(), rule: "r".into() };
        let point = Point { ts: 0, y: 1.0, yhat: 1.0, lower: 0.0, upper: 2.0, score: 0.0 };
        let out = SeriesOutput::forecast(&Labels::new(), &group.rules[0], point, vec![]);
        exporter.record(&id, 100.0, 1.0, Ok((vec![out], 1, 1)), 120.0);
        exporter.record(&id, 160.0, 1.0, Err("down".into()), 120.0);
        let snap = exporter.load();
        let entry = &snap.rules[&id];
        assert_eq!(entry.series.len(), 1);
        assert_eq!(entry.refreshed, 101.0);
        assert_eq!((entry.status.evaluations, entry.status.failures), (2, 1));
        assert_eq!(entry.status.health, Health::Err);
        exporter.remove_group(&group.key);
        assert!(exporter.load().rules.is_empty());
    }
}

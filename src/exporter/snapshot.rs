//! The exported state: per rule its output series and status, each rule's entry swapped
//! atomically on its own evaluations, and the set of groups and rules swapped on reloads.
//!
//! An evaluation costs the exporter its own rule's outputs, whatever the number of other rules:
//! it looks its slot up in the current [`Layout`] and swaps the slot's entry. Scrapes take no lock.

use std::collections::{BTreeMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use arc_swap::ArcSwap;

use super::collector::LinesCache;
use crate::config::{GroupKey, Rule, RuleGroup};
use crate::source::{series_key, Labels};

/// Labels pulsewatch adds; an input label of the same name is renamed `exported_<name>`.
pub(crate) const OWN_LABELS: [&str; 2] = ["rule", "horizon"];

/// The label of an ensemble member's score; an ensemble rule's input label of that name is
/// renamed `exported_model` too (other rules keep theirs).
pub(crate) const MEMBER_LABEL: &str = "model";

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
        /// An ensemble's members' scores of the same sample, by model type; empty otherwise.
        members: Vec<(&'static str, f64)>,
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
        Self::new(input, rule, Values::Forecast { point, forecasts, members: Vec::new() })
    }

    /// The output with an ensemble's members' scores, by model type.
    pub fn with_members(mut self, scores: Vec<(&'static str, f64)>) -> Self {
        if let Values::Forecast { members, .. } = &mut self.values {
            *members = scores;
        }
        self
    }

    /// An ensemble's members' scores, by model type (none for other rules).
    pub fn members(&self) -> &[(&'static str, f64)] {
        match &self.values {
            Values::Forecast { members, .. } => members,
            Values::Reconstruction { .. } => &[],
        }
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
        let ensemble = rule.forecast().is_some_and(|f| f.model.combine().is_some());
        let mut labels: BTreeMap<String, String> = BTreeMap::new();
        for (name, value) in &input {
            let ours = OWN_LABELS.contains(&name.as_str()) || (ensemble && name == MEMBER_LABEL) || rule.labels.contains_key(name);
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
    /// The sample lines `/metrics` copies, written on the first scrape after the evaluation.
    pub(crate) lines: LinesCache,
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

/// Everything `/api/v1/rules` reads: every rule's entry as it was when [`Exporter::load`] ran.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Per rule, its entry.
    pub rules: BTreeMap<RuleId, Arc<RuleEntry>>,
    /// Per group, its listing facts.
    pub groups: BTreeMap<GroupKey, GroupInfo>,
}

/// One rule's place in the exporter: its current entry, swapped whole by its own evaluations.
#[derive(Debug)]
pub(crate) struct RuleSlot {
    entry: ArcSwap<RuleEntry>,
    // Serialises the read-modify-write of `record` for this rule only. A rule is evaluated by its
    // group's task alone, so this is uncontended; it is never held across an await.
    write: Mutex<()>,
}

impl RuleSlot {
    fn new(entry: RuleEntry) -> Self {
        Self { entry: ArcSwap::from_pointee(entry), write: Mutex::new(()) }
    }

    /// The rule's current entry.
    pub(crate) fn load(&self) -> Arc<RuleEntry> {
        self.entry.load_full()
    }
}

/// A group's place in the exporter: its listing facts and its rules' slots, by rule name.
#[derive(Debug)]
pub(crate) struct GroupSlot {
    /// `file;group`, the `rule_group` label value, as Prometheus labels `prometheus_rule_*`.
    pub(crate) label: String,
    /// Interval in seconds.
    pub(crate) interval: f64,
    /// Rule names in file order.
    rules: Vec<String>,
    /// Scheduled runs skipped; shared with the group's next slot on a reload, so no count is lost.
    missed: Arc<AtomicU64>,
    /// By rule name: the collector's order within the group.
    pub(crate) slots: BTreeMap<String, Arc<RuleSlot>>,
}

impl GroupSlot {
    /// Scheduled runs skipped because the previous one was still running.
    pub(crate) fn missed(&self) -> u64 {
        self.missed.load(Ordering::Relaxed)
    }
}

/// Groups in one shard of the layout, by key.
type Shard = BTreeMap<Arc<GroupKey>, Arc<GroupSlot>>;

/// Shards of the layout: a reload copies one shard (and this many pointers), so that listing
/// 10,000 one-rule groups one after the other costs a few milliseconds, not seconds.
const SHARDS: usize = 64;

/// Which rules and groups exist: replaced on reloads only, never by an evaluation. Groups are
/// spread over [`SHARDS`] shards by a hash of their key; keys are `Arc`s, so a reload copies
/// pointers, not paths and names.
#[derive(Debug)]
pub(crate) struct Layout {
    shards: Vec<Arc<Shard>>,
    /// Every group in key order, sorted by the first scrape of this layout: a scrape lists the
    /// groups in order, and sorting 10,000 keys (paths compare component by component) took
    /// more than the rest of such a scrape.
    order: OnceLock<Vec<(Arc<GroupKey>, Arc<GroupSlot>)>>,
}

impl Layout {
    fn new(shards: Vec<Arc<Shard>>) -> Self {
        Self { shards, order: OnceLock::new() }
    }
}

impl Default for Layout {
    fn default() -> Self {
        Self::new((0..SHARDS).map(|_| Arc::default()).collect())
    }
}

impl Layout {
    fn shard_of(key: &GroupKey) -> usize {
        // `DefaultHasher::new` has fixed keys: the same shard for a key for the process's life.
        let mut hasher = DefaultHasher::new();
        key.hash(&mut hasher);
        (hasher.finish() % SHARDS as u64) as usize
    }

    fn group(&self, key: &GroupKey) -> Option<&Arc<GroupSlot>> {
        self.shards[Self::shard_of(key)].get(key)
    }

    /// Every group, by key: the collector's order.
    pub(crate) fn groups(&self) -> &[(Arc<GroupKey>, Arc<GroupSlot>)] {
        self.order.get_or_init(|| {
            let mut groups: Vec<_> = self.shards.iter().flat_map(|shard| shard.iter().map(|(k, g)| (k.clone(), g.clone()))).collect();
            groups.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            groups
        })
    }
}

/// The writer side of the exported state: evaluations and reloads update it, scrapes read it.
///
/// An evaluation replaces its own rule's entry and nothing else; a reload replaces the
/// `Layout` (a copy of one shard's pointers) and keeps the slots of the rules it keeps.
/// Readers never lock: they load the layout, then each rule's entry.
#[derive(Clone, Debug, Default)]
pub struct Exporter {
    layout: Arc<ArcSwap<Layout>>,
    // Serialises reloads so that concurrent groups do not lose each other's layout changes; held
    // only while a new layout is built, never across an await. Evaluations do not take it.
    write: Arc<Mutex<()>>,
}

impl Exporter {
    /// Every rule's current entry and every group's listing, copied into a [`Snapshot`] (for
    /// `/api/v1/rules`; scrapes read the slots directly).
    pub fn load(&self) -> Arc<Snapshot> {
        let layout = self.layout.load_full();
        let mut snapshot = Snapshot::default();
        for (key, group) in layout.groups() {
            for (name, slot) in &group.slots {
                snapshot.rules.insert(RuleId { group: GroupKey::clone(key), rule: name.clone() }, slot.load());
            }
            let info = GroupInfo { interval: group.interval, rules: group.rules.clone(), missed: group.missed() };
            snapshot.groups.insert(GroupKey::clone(key), info);
        }
        Arc::new(snapshot)
    }

    /// The current layout, for the collector.
    pub(crate) fn layout(&self) -> Arc<Layout> {
        self.layout.load_full()
    }

    /// Builds and stores a new layout from the current one, `f` changing the shard of `key`;
    /// see the `write` field.
    fn relayout(&self, key: &GroupKey, f: impl FnOnce(&mut Shard)) {
        let _guard = self.write.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut shards = self.layout.load().shards.clone();
        let shard = &mut shards[Layout::shard_of(key)];
        f(Arc::make_mut(shard));
        self.layout.store(Arc::new(Layout::new(shards)));
    }

    /// Lists a (new or changed) group: the entries of the rules in `kept` (whose models carry
    /// over) survive, every other rule of the group starts empty.
    pub fn set_group(&self, group: &RuleGroup, interval: f64, kept: &[String]) {
        let kept: HashSet<&str> = kept.iter().map(String::as_str).collect();
        self.relayout(&group.key, |groups| {
            let previous = groups.get(&group.key);
            let slots = group
                .rules
                .iter()
                .map(|rule| {
                    let carried = previous.and_then(|g| g.slots.get(&rule.name)).filter(|_| kept.contains(rule.name.as_str()));
                    let slot = carried.cloned().unwrap_or_else(|| {
                        Arc::new(RuleSlot::new(RuleEntry { expr: rule.display_query(), kind: rule.kind_name(), ..Default::default() }))
                    });
                    (rule.name.clone(), slot)
                })
                .collect();
            let slot = GroupSlot {
                label: group.key.to_string(),
                interval,
                rules: group.rules.iter().map(|r| r.name.clone()).collect(),
                missed: previous.map_or_else(Default::default, |g| g.missed.clone()),
                slots,
            };
            groups.insert(Arc::new(group.key.clone()), Arc::new(slot));
        });
    }

    /// Removes a group and all its outputs.
    pub fn remove_group(&self, key: &GroupKey) {
        self.relayout(key, |groups| {
            groups.remove(key);
        });
    }

    /// Counts `n` skipped runs of a group.
    pub fn count_missed(&self, key: &GroupKey, n: u64) {
        if let Some(group) = self.layout.load().group(key) {
            group.missed.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Records one evaluation: new outputs on success, only the status on failure (the old
    /// outputs then age out after `stale_after`). Replaces this rule's entry and nothing else.
    pub fn record(&self, id: &RuleId, started: f64, took: f64, result: Result<(Vec<SeriesOutput>, u64, usize), String>, stale_after: f64) {
        let layout = self.layout.load();
        let Some(group) = layout.group(&id.group) else { return };
        let Some(slot) = group.slots.get(&id.rule) else { return };
        let _guard = slot.write.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let old = slot.entry.load_full();
        let mut status = old.status.clone();
        status.evaluations += 1;
        status.last_evaluation = Some(started);
        status.evaluation_seconds = took;
        let (series, refreshed) = match result {
            Ok((mut series, fits, models)) => {
                // The collector's order, whatever order the evaluation produced them in.
                series.sort_unstable_by(|a, b| a.labels.cmp(&b.labels));
                status.health = Health::Ok;
                status.last_error = None;
                status.fits += fits;
                status.series = models;
                (series, started + took)
            }
            Err(err) => {
                status.health = Health::Err;
                status.last_error = Some(err);
                status.failures += 1;
                (old.series.clone(), old.refreshed)
            }
        };
        let entry = Arc::new(RuleEntry {
            series,
            refreshed,
            stale_after,
            expr: old.expr.clone(),
            kind: old.kind,
            status,
            lines: LinesCache::default(),
        });
        // Written here, by the evaluation, so that scrapes only copy them.
        entry.lines.prepare(&entry, &group.label, &id.rule);
        slot.entry.store(entry);
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

    /// A group `g` of file `f.yaml` with `n` forecast rules `r00000`, `r00001`, ….
    fn group_of(n: usize) -> RuleGroup {
        let base = rule(&[]);
        RuleGroup {
            key: GroupKey { file: "f.yaml".into(), name: "g".into() },
            schedule: Schedule::Interval(Duration::from_secs(60)),
            rules: (0..n).map(|i| Rule { name: format!("r{i:05}"), ..base.clone() }).collect(),
        }
    }

    /// The least of five timings of `f`, so that a busy machine distorts less.
    fn least_of_five(mut f: impl FnMut()) -> std::time::Duration {
        (0..5)
            .map(|_| {
                let t = std::time::Instant::now();
                f();
                t.elapsed()
            })
            .min()
            .unwrap()
    }

    /// One evaluation's `record` must not copy every other rule's state: with 16× the rules, a
    /// record may not cost 16× (it did while every record cloned the whole snapshot).
    #[test]
    fn a_record_costs_the_same_however_many_rules_there_are() {
        let per_record = |n: usize| {
            let exporter = Exporter::default();
            let group = group_of(n);
            exporter.set_group(&group, 60.0, &[]);
            let point = Point { ts: 0, y: 1.0, yhat: 1.0, lower: 0.0, upper: 2.0, score: 0.0 };
            let ids: Vec<(RuleId, SeriesOutput)> = group
                .rules
                .iter()
                .step_by(n / 200)
                .map(|r| {
                    (RuleId { group: group.key.clone(), rule: r.name.clone() }, SeriesOutput::forecast(&Labels::new(), r, point, vec![]))
                })
                .collect();
            least_of_five(|| {
                for (id, out) in &ids {
                    exporter.record(id, 100.0, 1.0, Ok((vec![out.clone()], 0, 1)), 120.0);
                }
            })
            .as_secs_f64()
                / ids.len() as f64
        };
        let (few, many) = (per_record(500), per_record(8000));
        assert!(many < 4.0 * few, "a record costs {:.1} µs among 500 rules, {:.1} µs among 8,000", few * 1e6, many * 1e6);
    }

    /// A reload that keeps every rule of a group must cost in proportion to the group, not to its
    /// square (it did while each rule looked itself up in the `kept` list).
    #[test]
    fn a_reload_costs_in_proportion_to_the_rules() {
        let reload = |n: usize| {
            let exporter = Exporter::default();
            let group = group_of(n);
            let kept: Vec<String> = group.rules.iter().map(|r| r.name.clone()).collect();
            exporter.set_group(&group, 60.0, &[]);
            least_of_five(|| exporter.set_group(&group, 60.0, &kept)).as_secs_f64()
        };
        let (few, many) = (reload(500), reload(8000));
        // 16× the rules: about 16× (plus the maps' log factor and cache misses; up to 90× seen on
        // a loaded machine), far from the 256× of the square.
        assert!(many < 160.0 * few, "a reload costs {:.2} ms with 500 rules, {:.2} ms with 8,000", few * 1e3, many * 1e3);
    }

    /// Listing groups one after the other, as a start or a reload of every group does, must not
    /// copy every listed group each time: that cost the square of the groups (16× the groups took
    /// about 256× as long; 10,000 one-rule groups took 87 s). A listing copies one shard of the
    /// layout, so 16× the groups may take about 50× (more on a loaded machine), never 256×.
    #[test]
    fn listing_a_group_does_not_copy_every_group() {
        let exporter = Exporter::default();
        for i in 0..8000 {
            exporter.set_group(&RuleGroup { key: GroupKey { file: "f.yaml".into(), name: format!("g{i:05}") }, ..group_of(1) }, 60.0, &[]);
        }
        // One more group: the new layout shares every shard but the one it lands in, so a
        // listing copies about 8,000 / SHARDS pointers, not 8,000.
        let before = exporter.layout();
        exporter.set_group(&RuleGroup { key: GroupKey { file: "f.yaml".into(), name: "new".into() }, ..group_of(1) }, 60.0, &[]);
        let after = exporter.layout();
        let shared = before.shards.iter().zip(&after.shards).filter(|(a, b)| Arc::ptr_eq(a, b)).count();
        assert_eq!(shared, SHARDS - 1);
        assert!(before.shards.iter().all(|shard| shard.len() < 2 * 8000 / SHARDS), "groups spread over the shards");
        let exporter = Exporter::default();
        for i in [3, 1, 2] {
            exporter.set_group(&RuleGroup { key: GroupKey { file: "f.yaml".into(), name: format!("g{i}") }, ..group_of(1) }, 60.0, &[]);
        }
        let names: Vec<String> = exporter.load().groups.keys().map(|k| k.name.clone()).collect();
        assert_eq!(names, ["g1", "g2", "g3"]);
    }
}

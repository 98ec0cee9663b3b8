//! What the shipped alerting rules would have sent: Prometheus's alerting-rule semantics run over
//! a replayed series' anomaly scores, and the resulting alerts counted against NAB's windows.
//!
//! The rules are those of group [`GROUP`] in `rules/pulsewatch.rules.yml` ([`SHIPPED`], built
//! into the binary, so what is simulated is what the repository ships). Each rule's `expr` must
//! be one of the two shapes that group uses, `pulsewatch_anomaly_score > A` or
//! `pulsewatch_anomaly_score > A unless pulsewatch_anomaly_score > B`; anything else is an error
//! rather than a guess.
//!
//! # Semantics (Prometheus's `AlertingRule.Eval`)
//! The rules are evaluated at every row's timestamp on the recording's grid (an evaluation
//! interval equal to the step). A row without a score (warm-up, a failed fit) makes the expr
//! empty there. When the expr holds and the rule has no active alert, the alert turns pending
//! with `activeAt` = now; it fires at the first evaluation with `now - activeAt >= for`
//! (at once without `for`). When the expr stops holding, a pending alert is dropped, and a firing
//! one keeps firing while `now - keepFiringSince < keep_firing_for`, `keepFiringSince` being the
//! first evaluation without the expr (reset whenever it holds again); then it is resolved.
//!
//! # Alerts
//! An alert is one *episode* for the series: from the row at which any rule of the group starts
//! firing to the row at which none fires any more. A warning that escalates to the critical is
//! one episode, even when the warning resolves at the very evaluation the critical starts to fire
//! (which is how the shipped pair hands over): they share the alertname and the series' labels,
//! and are one incident for whoever is paged. The shipped Alertmanager config
//! (`deploy/alertmanager/alertmanager.yml`) does group by `severity` too, so an escalation also
//! sends a critical notification (to PagerDuty) besides the warning's; that second notification
//! is not counted as a second alert.
//!
//! An episode counts for the window its firing *starts* in (NAB's zones: the window opens at the
//! row of its start timestamp and closes after the row of its end). One that starts outside every
//! window is a false alert, even if it runs on into one. As for [`nab::WindowCounts`], episodes
//! starting in NAB's probationary period (the first 15% of the rows, at most 750) count neither
//! way, and windows lying wholly in it are neither alerted nor missed. The delay of an alerted
//! window runs from its first row to the row at which its first alert fires, on the grid.

use std::collections::BTreeSet;

use serde::Deserialize;

use super::replay::Trace;
use crate::config::Duration;
use crate::nab::{self, zones, FileResult, Window, Zone};

/// The shipped alerting rules, `rules/pulsewatch.rules.yml`.
pub const SHIPPED: &str = include_str!("../../rules/pulsewatch.rules.yml");

/// The group of [`SHIPPED`] whose rules alert on the anomaly score.
pub const GROUP: &str = "pulsewatch-anomaly";

/// The metric the rules' expressions compare.
const METRIC: &str = "pulsewatch_anomaly_score";

/// When an alerting rule's expression returns the series, given its score.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Condition {
    /// `pulsewatch_anomaly_score > above`.
    Above(f64),
    /// `pulsewatch_anomaly_score > above unless pulsewatch_anomaly_score > unless_above`.
    Between {
        /// The lower threshold (exclusive).
        above: f64,
        /// The upper threshold: above it the expression is empty.
        unless_above: f64,
    },
}

impl Condition {
    /// Whether the expression returns the series when it scores `score`.
    pub fn holds(self, score: f64) -> bool {
        match self {
            Condition::Above(above) => score > above,
            Condition::Between { above, unless_above } => score > above && score <= unless_above,
        }
    }

    /// Parses one of the two shapes (whitespace is free).
    fn parse(expr: &str) -> Option<Self> {
        let spaced = expr.replace('>', " > ");
        let tokens: Vec<&str> = spaced.split_whitespace().collect();
        let threshold = |metric: &str, op: &str, value: &str| -> Option<f64> {
            let value: f64 = value.parse().ok()?;
            (metric == METRIC && op == ">" && value.is_finite()).then_some(value)
        };
        match tokens.as_slice() {
            [m, op, v] => threshold(m, op, v).map(Condition::Above),
            [m, op, v, "unless", m2, op2, v2] => {
                let (above, unless_above) = (threshold(m, op, v)?, threshold(m2, op2, v2)?);
                Some(Condition::Between { above, unless_above })
            }
            _ => None,
        }
    }
}

/// One alerting rule of the group.
#[derive(Clone, Debug, PartialEq)]
pub struct AlertRule {
    /// Its `alert` name.
    pub name: String,
    /// Its `severity` label (empty without one).
    pub severity: String,
    /// Its `expr`.
    pub condition: Condition,
    /// Its `for`, seconds (0 without one).
    pub hold: i64,
    /// Its `keep_firing_for`, seconds (0 without one).
    pub keep_firing_for: i64,
}

/// The alerting rules whose alerts are counted together, one episode at a time per series.
#[derive(Clone, Debug, PartialEq)]
pub struct AlertRules {
    /// The rules, in file order.
    pub rules: Vec<AlertRule>,
}

/// Alerting rules that cannot be simulated.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    /// Not a Prometheus rule file.
    #[error("alerting rules: {0}")]
    Yaml(String),
    /// The group is missing or has no alerting rule.
    #[error("alerting rules: no group {0:?} with alerting rules")]
    NoGroup(String),
    /// An expression of another shape than the two simulated ones.
    #[error("alerting rule {alert}: cannot simulate `{expr}`: only `{METRIC} > A` and `{METRIC} > A unless {METRIC} > B` are simulated")]
    Expr {
        /// The rule.
        alert: String,
        /// Its expression.
        expr: String,
    },
    /// A `for` or `keep_firing_for` that is not a duration.
    #[error("alerting rule {alert}: {field}: {cause}")]
    Duration {
        /// The rule.
        alert: String,
        /// Which field.
        field: &'static str,
        /// Why.
        cause: crate::config::DurationError,
    },
}

#[derive(Deserialize)]
struct RuleFile {
    groups: Vec<RawGroup>,
}

#[derive(Deserialize)]
struct RawGroup {
    name: String,
    #[serde(default)]
    rules: Vec<RawRule>,
}

#[derive(Deserialize)]
struct RawRule {
    alert: Option<String>,
    expr: String,
    #[serde(rename = "for")]
    hold: Option<String>,
    keep_firing_for: Option<String>,
    #[serde(default)]
    labels: std::collections::BTreeMap<String, String>,
}

impl AlertRules {
    /// The alerting rules of group [`GROUP`] in [`SHIPPED`].
    ///
    /// # Errors
    /// As [`AlertRules::parse`] (the unit tests make sure it does not).
    pub fn shipped() -> Result<Self, RulesError> {
        Self::parse(SHIPPED, GROUP)
    }

    /// The alerting rules of `group` in the Prometheus rule file `text` (recording rules are
    /// skipped).
    ///
    /// # Errors
    /// Text that is not a rule file, no such group, an expression of another shape, a bad
    /// duration.
    pub fn parse(text: &str, group: &str) -> Result<Self, RulesError> {
        let file: RuleFile = serde_saphyr::from_str(text).map_err(|e| RulesError::Yaml(e.to_string()))?;
        let found = file.groups.into_iter().find(|g| g.name == group).ok_or_else(|| RulesError::NoGroup(group.to_string()))?;
        let mut rules = Vec::new();
        for raw in found.rules {
            let Some(name) = raw.alert else { continue };
            let condition =
                Condition::parse(&raw.expr).ok_or_else(|| RulesError::Expr { alert: name.clone(), expr: raw.expr.trim().to_string() })?;
            let secs = |field: &'static str, text: Option<String>| -> Result<i64, RulesError> {
                match text.as_deref().map(str::trim) {
                    None | Some("0" | "0s") => Ok(0),
                    Some(text) => {
                        Duration::parse(text).map(|d| d.secs()).map_err(|cause| RulesError::Duration { alert: name.clone(), field, cause })
                    }
                }
            };
            let hold = secs("for", raw.hold)?;
            let keep_firing_for = secs("keep_firing_for", raw.keep_firing_for)?;
            let severity = raw.labels.get("severity").cloned().unwrap_or_default();
            rules.push(AlertRule { name, severity, condition, hold, keep_firing_for });
        }
        if rules.is_empty() {
            return Err(RulesError::NoGroup(group.to_string()));
        }
        Ok(AlertRules { rules })
    }

    /// The episodes the rules send over `rows`, in order (see the module's documentation).
    pub fn episodes(&self, rows: &[Row]) -> Vec<Episode> {
        let mut firings: Vec<(usize, Firing)> =
            self.rules.iter().enumerate().flat_map(|(r, rule)| firings(rule, rows).into_iter().map(move |f| (r, f))).collect();
        firings.sort_by_key(|(_, f)| (f.start, f.end));
        let mut episodes: Vec<Episode> = Vec::new();
        for (r, firing) in firings {
            let severity = self.rules[r].severity.clone();
            match episodes.last_mut() {
                // overlapping, or handing over at one evaluation
                Some(last) if firing.start <= last.end => {
                    last.end = last.end.max(firing.end);
                    last.severities.insert(severity);
                }
                _ => episodes.push(Episode { start: firing.start, end: firing.end, severities: BTreeSet::from([severity]) }),
            }
        }
        episodes
    }
}

/// One evaluation: the row's grid time (Unix seconds) and its score, `None` where unscored.
pub type Row = (i64, Option<f64>);

/// The rows of a replay as the rules see them.
pub fn rows(trace: &Trace) -> Vec<Row> {
    trace.points.iter().enumerate().map(|(i, p)| (trace.recording.ts(i), p.map(|p| p.score))).collect()
}

/// One rule's alert firing: rows `start..end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Firing {
    /// The row at which it starts firing.
    pub start: usize,
    /// The row at which it is resolved, or the number of rows if it still fires at the end.
    pub end: usize,
}

/// Where one rule's alert is.
#[derive(Clone, Copy)]
enum State {
    Inactive,
    Pending { active_at: i64 },
    Firing { start: usize, keep_firing_since: Option<i64> },
}

/// When `rule`'s alert for the series fires over `rows`.
pub fn firings(rule: &AlertRule, rows: &[Row]) -> Vec<Firing> {
    let mut out = Vec::new();
    let mut state = State::Inactive;
    for (i, &(now, score)) in rows.iter().enumerate() {
        let holds = score.is_some_and(|s| rule.condition.holds(s));
        state = match (state, holds) {
            (State::Inactive, false) | (State::Pending { .. }, false) => State::Inactive,
            (State::Inactive, true) => State::Pending { active_at: now },
            (State::Pending { active_at }, true) => State::Pending { active_at },
            (State::Firing { start, .. }, true) => State::Firing { start, keep_firing_since: None },
            (State::Firing { start, keep_firing_since }, false) => {
                let since = keep_firing_since.unwrap_or(now);
                if now - since < rule.keep_firing_for {
                    State::Firing { start, keep_firing_since: Some(since) }
                } else {
                    out.push(Firing { start, end: i });
                    State::Inactive
                }
            }
        };
        // a new pending alert can fire in the same evaluation (no `for`)
        if let State::Pending { active_at } = state {
            if now - active_at >= rule.hold {
                state = State::Firing { start: i, keep_firing_since: None };
            }
        }
    }
    if let State::Firing { start, .. } = state {
        out.push(Firing { start, end: rows.len() });
    }
    out
}

/// One alert for the series: rows `start..end`, while at least one rule fires.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Episode {
    /// The row at which the first rule starts firing.
    pub start: usize,
    /// The row at which the last one is resolved, or the number of rows if one still fires at
    /// the end.
    pub end: usize,
    /// The severities that fired during it.
    pub severities: BTreeSet<String>,
}

/// How an episode counts against the labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It starts in NAB's probationary period: not counted.
    Probation,
    /// It starts inside window number `window` (label order), `delay` seconds after its start.
    Window {
        /// The window.
        window: usize,
        /// Seconds from the window's first row to this alert's.
        delay: i64,
    },
    /// It starts outside every window.
    False,
}

/// Alerts of one file or more against their windows, summable.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AlertCounts {
    /// Episodes sent over the whole replay, the probationary period included.
    pub sent: usize,
    /// Episodes starting inside a window.
    pub in_windows: usize,
    /// Windows in which at least one episode starts.
    pub windows_alerted: usize,
    /// Episodes starting outside every window, after the probationary period.
    pub false_alerts: usize,
    /// Windows in which none starts (windows wholly in the probationary period excepted).
    pub windows_missed: usize,
    /// Seconds from each alerted window's first row to its first alert.
    pub delays: Vec<i64>,
}

impl AlertCounts {
    /// The counts of a file without labels: only [`AlertCounts::sent`].
    pub fn unlabelled(episodes: &[Episode]) -> Self {
        AlertCounts { sent: episodes.len(), ..Self::default() }
    }

    /// Classifies `episodes` (over `rows`, of `file`) against `windows`, and counts them.
    ///
    /// # Errors
    /// When the file's rows do not fit its windows (as [`nab::WindowCounts::count`]).
    pub fn count(episodes: &[Episode], rows: &[Row], file: &FileResult, windows: &[Window]) -> Result<(Self, Vec<Outcome>), nab::Error> {
        let zones = zones(file, windows)?;
        let mut counted = vec![false; windows.len()];
        for zone in &zones {
            if let Zone::Inside { window, .. } = *zone {
                counted[window] = true;
            }
        }
        let first_row = |window: usize| file.timestamps.iter().position(|t| *t == windows[window].start).expect("zones checked the edges");
        let mut first: Vec<Option<i64>> = vec![None; windows.len()];
        let mut counts = AlertCounts::unlabelled(episodes);
        let mut outcomes = Vec::with_capacity(episodes.len());
        for episode in episodes {
            let outcome = match zones[episode.start] {
                Zone::Probation => Outcome::Probation,
                Zone::Outside { .. } => {
                    counts.false_alerts += 1;
                    Outcome::False
                }
                Zone::Inside { window, .. } => {
                    counts.in_windows += 1;
                    let delay = rows[episode.start].0 - rows[first_row(window)].0;
                    first[window].get_or_insert(delay);
                    Outcome::Window { window, delay }
                }
            };
            outcomes.push(outcome);
        }
        counts.windows_alerted = first.iter().flatten().count();
        counts.windows_missed = counted.iter().zip(&first).filter(|(c, f)| **c && f.is_none()).count();
        counts.delays = first.into_iter().flatten().collect();
        Ok((counts, outcomes))
    }

    /// The median of [`AlertCounts::delays`] (the mean of the middle two for an even number).
    pub fn median_delay(&self) -> Option<i64> {
        let mut d = self.delays.clone();
        d.sort_unstable();
        let n = d.len();
        match n {
            0 => None,
            _ if n % 2 == 1 => Some(d[n / 2]),
            _ => Some((d[n / 2 - 1] + d[n / 2]) / 2),
        }
    }

    /// The longest of [`AlertCounts::delays`].
    pub fn max_delay(&self) -> Option<i64> {
        self.delays.iter().copied().max()
    }
}

impl std::ops::Add for AlertCounts {
    type Output = Self;

    fn add(mut self, other: Self) -> Self {
        self.sent += other.sent;
        self.in_windows += other.in_windows;
        self.windows_alerted += other.windows_alerted;
        self.false_alerts += other.false_alerts;
        self.windows_missed += other.windows_missed;
        self.delays.extend(other.delays);
        self
    }
}

impl std::iter::Sum for AlertCounts {
    fn sum<I: Iterator<Item = Self>>(iter: I) -> Self {
        iter.fold(AlertCounts::default(), std::ops::Add::add)
    }
}

/// Seconds in Prometheus's compact form: `0s`, `45s`, `25m`, `2h5m`, `1d3h`.
pub fn format_secs(secs: i64) -> String {
    if secs == 0 {
        return "0s".into();
    }
    let sign = if secs < 0 { "-" } else { "" };
    let mut left = secs.unsigned_abs();
    let mut out = sign.to_string();
    for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
        if left >= size {
            out.push_str(&format!("{}{unit}", left / size));
            left %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nab::{parse_timestamp, FileResult};

    const STEP: i64 = 300;

    /// Rows at 5-minute steps scoring `scores` (NaN: unscored).
    fn rows(scores: &[f64]) -> Vec<Row> {
        scores.iter().enumerate().map(|(i, &s)| (1_400_000_100 + STEP * i as i64, (!s.is_nan()).then_some(s))).collect()
    }

    fn shipped() -> AlertRules {
        AlertRules::shipped().unwrap()
    }

    fn warning() -> AlertRule {
        shipped().rules[0].clone()
    }

    fn critical() -> AlertRule {
        shipped().rules[1].clone()
    }

    #[test]
    fn reads_the_shipped_rules() {
        let rules = shipped();
        assert_eq!(
            rules.rules,
            [
                AlertRule {
                    name: "PulsewatchAnomaly".into(),
                    severity: "warning".into(),
                    condition: Condition::Between { above: 1.0, unless_above: 3.0 },
                    hold: 600,
                    keep_firing_for: 300,
                },
                AlertRule {
                    name: "PulsewatchAnomaly".into(),
                    severity: "critical".into(),
                    condition: Condition::Above(3.0),
                    hold: 300,
                    keep_firing_for: 0,
                },
            ]
        );
        // the comparisons are strict, as `>` is
        assert!(!Condition::Above(3.0).holds(3.0) && Condition::Above(3.0).holds(3.01));
        let band = Condition::Between { above: 1.0, unless_above: 3.0 };
        assert!(!band.holds(1.0) && band.holds(1.5) && band.holds(3.0) && !band.holds(3.5));
    }

    #[test]
    fn other_rules_are_refused_clearly() {
        let file = |expr: &str, extra: &str| format!("groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: {expr}\n{extra}");
        let err = AlertRules::parse(&file("rate(pulsewatch_anomaly_score[5m]) > 1", ""), "g").unwrap_err();
        assert!(err.to_string().contains("alerting rule A: cannot simulate `rate(pulsewatch_anomaly_score[5m]) > 1`"), "{err}");
        assert!(matches!(AlertRules::parse(&file("pulsewatch_anomaly_score >= 1", ""), "g"), Err(RulesError::Expr { .. })));
        assert!(matches!(AlertRules::parse(&file("pulsewatch_anomaly_score > 1", ""), "h"), Err(RulesError::NoGroup(_))));
        let err = AlertRules::parse(&file("pulsewatch_anomaly_score > 1", "        for: soon\n"), "g").unwrap_err();
        assert!(err.to_string().starts_with("alerting rule A: for: invalid duration"), "{err}");
        assert!(matches!(AlertRules::parse("groups: 3", "g"), Err(RulesError::Yaml(_))));
        // no `for`, spaces left out: fires at once
        let rules = AlertRules::parse(&file("pulsewatch_anomaly_score>2", ""), "g").unwrap();
        assert_eq!((rules.rules[0].condition, rules.rules[0].hold, rules.rules[0].keep_firing_for), (Condition::Above(2.0), 0, 0));
        assert_eq!(firings(&rules.rules[0], &rows(&[0.0, 2.5, 0.0])), [Firing { start: 1, end: 2 }]);
    }

    #[test]
    fn a_run_shorter_than_for_never_fires() {
        // warning: for 10m = two steps; rows 1 and 2 (5m apart) are pending, then it drops
        assert_eq!(firings(&warning(), &rows(&[0.0, 2.0, 2.0, 0.5, 2.0, 2.0, f64::NAN, 2.0, 2.0])), []);
        // critical: for 5m; a single row above 3 is not enough
        assert_eq!(firings(&critical(), &rows(&[0.0, 4.0, 0.0, 4.0])), []);
    }

    #[test]
    fn a_run_exactly_for_long_fires_at_its_last_row() {
        // pending at row 1 (activeAt), row 3 is 10m later: fires there; resolved at row 5, one
        // step (< 5m is false at 5m) after the expr stopped at row 4
        assert_eq!(firings(&warning(), &rows(&[0.0, 2.0, 2.0, 2.0, 0.0, 0.0, 0.0])), [Firing { start: 3, end: 5 }]);
        // critical: rows 2 and 3 are 5m apart: fires at row 3, resolved at once at row 4
        assert_eq!(firings(&critical(), &rows(&[0.0, 0.0, 4.0, 4.0, 0.0])), [Firing { start: 3, end: 4 }]);
        // still firing at the end: up to the number of rows
        assert_eq!(firings(&warning(), &rows(&[2.0, 2.0, 2.0])), [Firing { start: 2, end: 3 }]);
    }

    #[test]
    fn keep_firing_for_bridges_a_short_gap_only() {
        let rules = shipped();
        // fires at row 2; row 3 is a one-row gap (kept firing: 0 < 5m), row 4 holds again
        let short = rows(&[2.0, 2.0, 2.0, 0.0, 2.0, 2.0, 0.0, 0.0, 0.0]);
        assert_eq!(firings(&warning(), &short), [Firing { start: 2, end: 7 }]);
        assert_eq!(rules.episodes(&short).len(), 1);
        // an unscored row is a gap too
        let unscored = rows(&[2.0, 2.0, 2.0, f64::NAN, 2.0, 0.0, 0.0]);
        assert_eq!(firings(&warning(), &unscored), [Firing { start: 2, end: 6 }]);
        // a two-row gap: resolved at its second row (5m since it began), and the next run must
        // wait out `for` again: two episodes
        let long = rows(&[2.0, 2.0, 2.0, 0.0, 0.0, 2.0, 2.0, 2.0, 0.0, 0.0]);
        assert_eq!(firings(&warning(), &long), [Firing { start: 2, end: 4 }, Firing { start: 7, end: 9 }]);
        let episodes = rules.episodes(&long);
        assert_eq!(episodes.iter().map(|e| (e.start, e.end)).collect::<Vec<_>>(), [(2, 4), (7, 9)]);
    }

    #[test]
    fn escalation_to_critical_is_one_episode() {
        // warning fires at row 2; from row 3 the score is above 3: the warning's expr is empty,
        // it keeps firing at row 3 and resolves at row 4, the very evaluation at which the
        // critical (pending at row 3) fires. Back to 2 at row 6: the critical resolves there, the
        // warning is pending again (rows 6, 7) and fires at row 8.
        let scores = rows(&[2.0, 2.0, 2.0, 5.0, 5.0, 5.0, 2.0, 2.0, 2.0, 0.0, 0.0, 0.0]);
        assert_eq!(firings(&warning(), &scores), [Firing { start: 2, end: 4 }, Firing { start: 8, end: 10 }]);
        assert_eq!(firings(&critical(), &scores), [Firing { start: 4, end: 6 }]);
        // ... but at row 6 and 7 nothing fires: the series has two episodes, the first escalated
        let episodes = shipped().episodes(&scores);
        assert_eq!(
            episodes,
            [
                Episode { start: 2, end: 6, severities: BTreeSet::from(["critical".into(), "warning".into()]) },
                Episode { start: 8, end: 10, severities: BTreeSet::from(["warning".into()]) },
            ]
        );
        // The other way round there is a gap: the critical (no keep_firing_for) fires at row 4
        // and resolves at row 5 when the score falls to 2, and the warning, pending from row 5,
        // fires only at row 7. A de-escalation is two episodes.
        let scores = rows(&[0.0, 0.0, 0.0, 5.0, 5.0, 2.0, 2.0, 2.0, 0.0, 0.0]);
        let spans: Vec<_> = shipped().episodes(&scores).iter().map(|e| (e.start, e.end)).collect();
        assert_eq!(spans, [(4, 5), (7, 9)]);
    }

    /// Rows at 5 minutes from 2014-04-01 00:00, and the file NAB's zones need.
    fn file(n: usize) -> FileResult {
        let start = parse_timestamp("2014-04-01 00:00:00").unwrap();
        FileResult {
            key: "a/b.csv".into(),
            timestamps: (0..n).map(|i| start + chrono::Duration::minutes(5 * i as i64)).collect(),
            scores: vec![0.0; n],
        }
    }

    #[test]
    fn counts_alerts_against_windows() {
        // 100 rows: rows 0..15 are NAB's probation. Windows 30..=40, 60..=70 and 80..=90.
        let f = file(100);
        let window = |a: usize, b: usize| Window { start: f.timestamps[a], end: f.timestamps[b] };
        let windows = [window(30, 40), window(60, 70), window(80, 90)];
        let mut scores = vec![0.0; 100];
        let mut set = |from: usize, to: usize, s: f64| scores[from..=to].iter_mut().for_each(|x| *x = s);
        set(2, 6, 2.0); // fires at row 4: in probation, not counted
        set(20, 23, 2.0); // fires at row 22: a false alert
        set(28, 40, 2.0); // fires at row 30, the window's first row: delay 0
        set(33, 34, 0.0); // gap of two rows: resolved at row 34, fires again at row 37
        set(63, 70, 5.0); // critical at row 64: delay 4 steps = 20m
        set(78, 79, 5.0); // critical at row 79, just before the window: false; window 3 missed
        let rows = rows(&scores);
        let episodes = shipped().episodes(&rows);
        assert_eq!(
            episodes.iter().map(|e| (e.start, e.end)).collect::<Vec<_>>(),
            [(4, 8), (22, 25), (30, 34), (37, 42), (64, 71), (79, 80)]
        );
        let (counts, outcomes) = AlertCounts::count(&episodes, &rows, &f, &windows).unwrap();
        assert_eq!(
            outcomes,
            [
                Outcome::Probation,
                Outcome::False,
                Outcome::Window { window: 0, delay: 0 },
                Outcome::Window { window: 0, delay: 7 * STEP },
                Outcome::Window { window: 1, delay: 4 * STEP },
                Outcome::False,
            ]
        );
        assert_eq!(
            counts,
            AlertCounts { sent: 6, in_windows: 3, windows_alerted: 2, false_alerts: 2, windows_missed: 1, delays: vec![0, 1200] }
        );
        assert_eq!((counts.median_delay(), counts.max_delay()), (Some(600), Some(1200)));
        let total: AlertCounts = [counts.clone(), AlertCounts::unlabelled(&episodes[..1])].into_iter().sum();
        assert_eq!((total.sent, total.windows_alerted, total.delays.len()), (7, 2, 2));
        // labels that do not fit the rows are refused, as by WindowCounts
        let off = Window { start: f.timestamps[30] + chrono::Duration::minutes(1), end: f.timestamps[40] };
        assert!(AlertCounts::count(&episodes, &rows, &f, &[off]).is_err());
        // a window wholly in probation is neither alerted nor missed
        let (counts, _) = AlertCounts::count(&episodes, &rows, &f, &[window(2, 10)]).unwrap();
        assert_eq!((counts.windows_alerted, counts.windows_missed, counts.false_alerts), (0, 0, 5));
    }

    #[test]
    fn delays_print_compactly() {
        assert_eq!(format_secs(0), "0s");
        assert_eq!(format_secs(45), "45s");
        assert_eq!(format_secs(1500), "25m");
        assert_eq!(format_secs(7500), "2h5m");
        assert_eq!(format_secs(86_400 + 3 * 3600), "1d3h");
        assert_eq!(AlertCounts::default().median_delay(), None);
        let odd = AlertCounts { delays: vec![900, 0, 300], ..AlertCounts::default() };
        assert_eq!((odd.median_delay(), odd.max_delay()), (Some(300), Some(900)));
    }
}

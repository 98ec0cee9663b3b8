//! Rule files: Prometheus-style `groups:` of forecast rules, deserialized strictly and validated.
//!
//! Parsing (`RuleFileConfig`) keeps the source location of every group and rule so that
//! validation can report each problem as `file:line:col: group "g", rule N, "name": msg`,
//! the shape `promtool check rules` uses. Validation never stops at the first problem.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::duration::Duration;
use super::error::{Problem, Problems};
use super::Defaults;
use crate::models::ModelSpec;

/// Label names that pulsewatch sets itself; a rule may not set them as static labels.
const RESERVED_LABELS: [&str; 3] = ["__name__", "rule", "horizon"];

/// Most points a single series history may hold: bounds memory per series.
const MAX_HISTORY_POINTS: i64 = 100_000;

// === YAML shape ===

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFileConfig {
    #[serde(default)]
    groups: Vec<Spanned<GroupConfig>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupConfig {
    name: Spanned<String>,
    #[serde(default)]
    interval: Option<Duration>,
    #[serde(default)]
    cron: Option<String>,
    #[serde(default)]
    rules: Vec<Spanned<RuleConfig>>,
}

/// One forecast rule as written in YAML; unset fields take the global defaults.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleConfig {
    forecast: Option<String>,
    expr: Option<String>,
    step: Option<Duration>,
    history: Option<Duration>,
    refit: Option<Duration>,
    model: Option<ModelSpec>,
    band: Option<f64>,
    #[serde(default)]
    horizons: Vec<Duration>,
    direction: Option<Direction>,
    min_deviation: Option<f64>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

// === validated rules ===

/// Which deviations from the prediction may score.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Only observations above the prediction score.
    Above,
    /// Only observations below the prediction score.
    Below,
    /// Deviations on either side score.
    #[default]
    Both,
}

/// How a group is scheduled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Schedule {
    /// Every `interval`, at a phase derived from the group key.
    Interval(Duration),
    /// On a cron expression (5 fields, or 6 with seconds), in UTC.
    Cron(String),
}

/// Identifies a group across reloads: the file it came from and its name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupKey {
    /// The rule file.
    pub file: PathBuf,
    /// The group name, unique within the file.
    pub name: String,
}

impl std::fmt::Display for GroupKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{};{}", self.file.display(), self.name)
    }
}

/// A validated group of rules.
#[derive(Clone, Debug, PartialEq)]
pub struct RuleGroup {
    /// File and name.
    pub key: GroupKey,
    /// When the group evaluates.
    pub schedule: Schedule,
    /// The rules, in file order.
    pub rules: Vec<Rule>,
}

/// A validated forecast rule with all defaults applied.
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    /// Exported as the `rule` label.
    pub name: String,
    /// The PromQL expression, already checked by promql-parser.
    pub expr: String,
    /// Resolution of the history and update queries.
    pub step: Duration,
    /// Training window.
    pub history: Duration,
    /// Full refit cadence.
    pub refit: Duration,
    /// The forecasting model.
    pub model: ModelSpec,
    /// Prediction-interval level behind the band, in (0, 1).
    pub band: f64,
    /// Future horizons exported as `pulsewatch_forecast{horizon=..}`.
    pub horizons: Vec<Duration>,
    /// Which deviations can score.
    pub direction: Direction,
    /// Deviations smaller than this score 0.
    pub min_deviation: f64,
    /// Static labels added to every output series.
    pub labels: BTreeMap<String, String>,
}

impl Rule {
    /// Number of `step`s in the training window.
    pub fn history_points(&self) -> usize {
        (self.history.secs() / self.step.secs()) as usize
    }
}

// === loading ===

/// Reads and validates one rule file; every problem found is returned, not just the first.
///
/// # Errors
/// All problems in the file, each with its location.
pub fn load_file(path: &Path, defaults: &Defaults) -> Result<Vec<RuleGroup>, Problems> {
    let text = std::fs::read_to_string(path).map_err(|err| {
        Problems::one(Problem::file(path, format!("reading rule file: {err}")))
    })?;
    parse(path, &text, defaults)
}

/// Validates rule-file `text` as if read from `path`.
///
/// # Errors
/// All problems in the text, each with its location.
pub fn parse(path: &Path, text: &str, defaults: &Defaults) -> Result<Vec<RuleGroup>, Problems> {
    let file: RuleFileConfig = serde_saphyr::from_str(text)
        .map_err(|err| Problems::one(Problem::yaml(path, &err)))?;
    let mut problems = Problems::default();
    let mut groups = Vec::new();
    let mut names = HashSet::new();
    for group in file.groups {
        let line = (group.referenced.line(), group.referenced.column());
        let group = group.value;
        let name = group.name.value.clone();
        let at = |line: (u64, u64)| Problem::at(path, line).group(&name);
        if name.trim().is_empty() {
            problems.push(at(line).msg("group name must not be empty"));
        } else if !names.insert(name.clone()) {
            problems.push(at(line).msg("group name is not unique in this file"));
        }
        let schedule = match (group.interval, group.cron) {
            (Some(_), Some(_)) => {
                problems.push(at(line).msg("set either interval or cron, not both"));
                None
            }
            (None, Some(cron)) => match crate::engine::parse_cron(&cron) {
                Ok(_) => Some(Schedule::Cron(cron)),
                Err(err) => {
                    problems.push(at(line).msg(format!("invalid cron {cron:?}: {err}")));
                    None
                }
            },
            (Some(interval), None) => Some(Schedule::Interval(interval)),
            (None, None) => Some(Schedule::Interval(defaults.evaluation_interval.clone())),
        };
        let mut rules = Vec::new();
        let mut rule_names = HashSet::new();
        for (index, rule) in group.rules.into_iter().enumerate() {
            let rule_line = (rule.referenced.line(), rule.referenced.column());
            let at = at(rule_line).rule(index + 1, rule.value.forecast.as_deref().unwrap_or(""));
            match validate_rule(rule.value, defaults) {
                Ok(rule) => {
                    if !rule_names.insert(rule.name.clone()) {
                        problems.push(at.msg("rule name is not unique in this group"));
                    }
                    rules.push(rule);
                }
                Err(msgs) => msgs.into_iter().for_each(|m| problems.push(at.clone().msg(m))),
            }
        }
        if let Some(schedule) = schedule {
            groups.push(RuleGroup {
                key: GroupKey { file: path.to_path_buf(), name },
                schedule,
                rules,
            });
        }
    }
    problems.into_result(groups)
}

/// Checks one rule and applies defaults; returns every problem message found.
fn validate_rule(rule: RuleConfig, defaults: &Defaults) -> Result<Rule, Vec<String>> {
    let mut errs = Vec::new();
    let name = rule.forecast.unwrap_or_default();
    if name.trim().is_empty() {
        errs.push("rule needs a non-empty `forecast` name".to_string());
    }
    let expr = rule.expr.unwrap_or_default();
    if expr.trim().is_empty() {
        errs.push("rule needs an `expr`".to_string());
    } else if let Err(err) = promql_parser::parser::parse(&expr) {
        errs.push(format!("could not parse expression: {}", err.trim()));
    }
    let step = rule.step.unwrap_or_else(|| defaults.step.clone());
    let history = rule.history.unwrap_or_else(|| defaults.history.clone());
    let refit = rule.refit.unwrap_or_else(|| defaults.refit.clone());
    if step.secs() < 1 {
        errs.push(format!("step {step} must be at least 1s"));
    } else {
        let points = history.secs() / step.secs();
        if points < 10 {
            errs.push(format!("history {history} holds {points} steps of {step}; at least 10 are needed"));
        } else if points > MAX_HISTORY_POINTS {
            errs.push(format!("history {history} holds {points} steps of {step}; at most {MAX_HISTORY_POINTS} are allowed"));
        }
    }
    let model = rule.model.unwrap_or_else(|| defaults.model.clone());
    if step.secs() >= 1 {
        if let Err(msg) = model.validate(&step, &history) {
            errs.push(msg);
        }
    }
    let band = rule.band.unwrap_or(defaults.band);
    if !(band > 0.0 && band < 1.0) {
        errs.push(format!("band {band} must be between 0 and 1 (exclusive)"));
    }
    if step.get().subsec_nanos() != 0 {
        errs.push(format!("step {step} must be a whole number of seconds"));
    }
    let mut horizons = HashSet::new();
    for horizon in &rule.horizons {
        if horizon.secs() < step.secs() || step.secs() > 0 && horizon.secs() % step.secs() != 0 {
            errs.push(format!("horizon {horizon} must be a whole number (>= 1) of steps of {step}"));
        }
        if !horizons.insert(horizon.secs()) {
            errs.push(format!("horizon {horizon} is listed twice"));
        }
    }
    if refit.secs() < step.secs() {
        errs.push(format!("refit {refit} is shorter than step {step}"));
    }
    let reach = rule.horizons.iter().map(Duration::secs).max().unwrap_or(0);
    if step.secs() > 0 && (refit.secs() + reach) / step.secs() > MAX_HISTORY_POINTS {
        errs.push(format!("refit plus the longest horizon spans more than {MAX_HISTORY_POINTS} steps of {step}"));
    }
    let min_deviation = rule.min_deviation.unwrap_or(0.0);
    if !(min_deviation >= 0.0 && min_deviation.is_finite()) {
        errs.push(format!("min_deviation {min_deviation} must be a finite number >= 0"));
    }
    for label in rule.labels.keys() {
        if RESERVED_LABELS.contains(&label.as_str()) {
            errs.push(format!("label {label:?} is set by pulsewatch and cannot be a static label"));
        } else if !is_valid_label_name(label) {
            errs.push(format!("invalid label name {label:?}"));
        }
    }
    if !errs.is_empty() {
        return Err(errs);
    }
    Ok(Rule {
        name,
        expr,
        step,
        history,
        refit,
        model,
        band,
        horizons: rule.horizons,
        direction: rule.direction.unwrap_or_default(),
        min_deviation,
        labels: rule.labels,
    })
}

/// Prometheus label-name syntax: `[a-zA-Z_][a-zA-Z0-9_]*`.
pub(crate) fn is_valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Vec<RuleGroup>, Problems> {
        parse(Path::new("r.yaml"), text, &Defaults::default())
    }

    #[test]
    fn parses_design_example_with_defaults() {
        let groups = load(
            r#"
groups:
  - name: node
    interval: 1m
    rules:
      - forecast: node_cpu_busy
        expr: 1 - avg by (instance) (rate(node_cpu_seconds_total{mode="idle"}[5m]))
        step: 1m
        history: 14d
        refit: 6h
        model: { type: mstl, seasonality: [1d, 1w] }
        band: 0.95
        horizons: [15m, 1h, 4h]
        direction: both
        min_deviation: 0.02
        labels: { team: infra }
      - forecast: load
        expr: node_load1
"#,
        )
        .unwrap();
        assert_eq!(groups.len(), 1);
        let g = &groups[0];
        assert_eq!(g.schedule, Schedule::Interval(Duration::parse("1m").unwrap()));
        assert_eq!(g.rules[0].horizons.len(), 3);
        assert_eq!(g.rules[0].labels["team"], "infra");
        assert_eq!(g.rules[0].history_points(), 14 * 1440);
        let defaults = Defaults::default();
        assert_eq!(g.rules[1].model, defaults.model);
        assert_eq!(g.rules[1].band, defaults.band);
    }

    #[test]
    fn unknown_key_is_an_error_with_its_line() {
        let err = load("groups:\n  - name: g\n    rules:\n      - forecast: a\n        expr: up\n        min_devation: 1\n").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("r.yaml:6"), "{text}");
        assert!(text.contains("min_devation"), "{text}");
    }

    #[test]
    fn reports_every_problem_with_location() {
        let err = load(
            r#"groups:
  - name: g
    rules:
      - forecast: bad_expr
        expr: rate(up[5m]
      - forecast: bad_band
        expr: up
        band: 1.5
  - name: g
    cron: "not a cron"
    rules: []
"#,
        )
        .unwrap_err();
        let lines: Vec<String> = err.iter().map(|p| p.to_string()).collect();
        assert_eq!(lines.len(), 4, "{lines:#?}");
        assert!(lines[0].starts_with("r.yaml:4:") && lines[0].contains(r#"group "g", rule 1, "bad_expr": could not parse expression"#), "{}", lines[0]);
        assert!(lines[1].starts_with("r.yaml:6:") && lines[1].contains("rule 2, \"bad_band\": band 1.5"), "{}", lines[1]);
        assert!(lines.iter().any(|l| l.starts_with("r.yaml:9:") && l.contains("not unique")), "{lines:#?}");
        assert!(lines.iter().any(|l| l.contains("invalid cron")), "{lines:#?}");
    }

    #[test]
    fn rejects_reserved_and_invalid_labels() {
        let err = load("groups:\n  - name: g\n    rules:\n      - forecast: a\n        expr: up\n        labels: { rule: x, 1bad: y }\n").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("\"rule\" is set by pulsewatch"), "{text}");
        assert!(text.contains("invalid label name \"1bad\""), "{text}");
    }

    #[test]
    fn cron_with_five_or_six_fields() {
        let groups = load("groups:\n  - name: a\n    cron: \"*/5 * * * *\"\n  - name: b\n    cron: \"0 */5 * * * *\"\n").unwrap();
        assert_eq!(groups.len(), 2);
        assert!(matches!(groups[1].schedule, Schedule::Cron(_)));
    }

    #[test]
    fn horizons_and_refit_fit_the_step() {
        let err = load("groups:\n  - name: g\n    rules:\n      - forecast: a\n        expr: up\n        step: 7m\n        history: 1d\n        refit: 5m\n        horizons: [1h, 14m, 14m]\n").unwrap_err().to_string();
        assert!(err.contains("horizon 1h must be a whole number (>= 1) of steps of 7m"), "{err}");
        assert!(err.contains("horizon 14m is listed twice"), "{err}");
        assert!(err.contains("refit 5m is shorter than step 7m"), "{err}");
    }

    #[test]
    fn label_names() {
        assert!(is_valid_label_name("team_a"));
        assert!(is_valid_label_name("_x"));
        assert!(!is_valid_label_name("a-b"));
        assert!(!is_valid_label_name(""));
    }
}

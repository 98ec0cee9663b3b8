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
use super::schedule::{CronSchedule, Schedule};
use super::Defaults;
use super::ModelSpec;

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

/// One rule as written in YAML: a forecast rule (`forecast:`) or a detector-only rule
/// (`anomaly:`); unset fields take the global defaults.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleConfig {
    forecast: Option<String>,
    anomaly: Option<String>,
    expr: Option<String>,
    channels: Option<Vec<Channel>>,
    on: Option<Vec<String>>,
    detector: Option<DetectorSpec>,
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

/// The detector of an `anomaly:` rule: one arm per type, implemented in `crate::detector`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum DetectorSpec {
    /// An ONNX autoencoder run with tract.
    Autoencoder {
        /// The ONNX file; in a rule file, relative to the file's directory.
        model_file: PathBuf,
    },
}

impl DetectorSpec {
    /// The file the detector is loaded from: a change of it reloads the detector.
    pub fn model_file(&self) -> Option<&Path> {
        match self {
            Self::Autoencoder { model_file } => Some(model_file),
        }
    }

    /// The spec with its file resolved against `base`, the rule file's directory.
    fn resolved(self, base: &Path) -> Self {
        match self {
            Self::Autoencoder { model_file } => Self::Autoencoder { model_file: base.join(model_file) },
        }
    }
}

// === validated rules ===

/// One input of a detector: a named PromQL expression.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Channel {
    /// Names the channel; the model's metadata lists its channels by these names.
    pub name: String,
    /// The PromQL expression.
    pub expr: String,
}

/// The channel name of a rule that has a single `expr`.
pub const SINGLE_CHANNEL: &str = "value";

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

/// A validated rule with all defaults applied.
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    /// Exported as the `rule` label.
    pub name: String,
    /// Resolution of the queries.
    pub step: Duration,
    /// Static labels added to every output series.
    pub labels: BTreeMap<String, String>,
    /// What the rule does with its series.
    pub kind: RuleKind,
}

/// A forecast rule or a detector-only rule.
#[derive(Clone, Debug, PartialEq)]
pub enum RuleKind {
    /// `forecast:` fits a model per series and scores against its band.
    Forecast(Forecast),
    /// `anomaly:` scores windows of one or more channels with a detector.
    Anomaly(Anomaly),
}

/// The settings of a forecast rule.
#[derive(Clone, Debug, PartialEq)]
pub struct Forecast {
    /// The PromQL expression, already checked by promql-parser.
    pub expr: String,
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
}

impl Forecast {
    /// Number of `step`s in the training window.
    pub fn history_points(&self, step: &Duration) -> usize {
        (self.history.secs() / step.secs()) as usize
    }
}

/// The settings of a detector-only rule.
#[derive(Clone, Debug, PartialEq)]
pub struct Anomaly {
    /// The inputs, in the order of the model's channels (one, named `value`, for `expr:`).
    pub channels: Vec<Channel>,
    /// Labels that join the channels' series; `None` joins on all labels but `__name__`.
    pub on: Option<Vec<String>>,
    /// The detector, its files resolved against the rule file's directory.
    pub detector: DetectorSpec,
}

impl Rule {
    /// The forecast settings, for a forecast rule.
    pub fn forecast(&self) -> Option<&Forecast> {
        match &self.kind {
            RuleKind::Forecast(f) => Some(f),
            RuleKind::Anomaly(_) => None,
        }
    }

    /// `forecast` or `anomaly`, as `/api/v1/rules` shows the rule's type.
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            RuleKind::Forecast(_) => "forecast",
            RuleKind::Anomaly(_) => "anomaly",
        }
    }

    /// The query as `/api/v1/rules` shows it: a detector's channels one per line, `name: expr`.
    pub fn display_query(&self) -> String {
        match &self.kind {
            RuleKind::Forecast(f) => f.expr.clone(),
            RuleKind::Anomaly(a) if a.channels.len() == 1 => a.channels[0].expr.clone(),
            RuleKind::Anomaly(a) => a.channels.iter().map(|c| format!("{}: {}", c.name, c.expr)).collect::<Vec<_>>().join("\n"),
        }
    }
}

// === loading ===

/// Reads and validates one rule file; every problem found is returned, not just the first.
///
/// # Errors
/// All problems in the file, each with its location.
pub fn load_file(path: &Path, defaults: &Defaults) -> Result<Vec<RuleGroup>, Problems> {
    let text = crate::files::read_to_string(path, crate::files::MAX_CONFIG_BYTES)
        .map_err(|err| Problems::one(Problem::file(path, format!("reading rule file: {err}"))))?;
    parse(path, &text, defaults)
}

/// Validates rule-file `text` as if read from `path`.
///
/// # Errors
/// All problems in the text, each with its location.
pub fn parse(path: &Path, text: &str, defaults: &Defaults) -> Result<Vec<RuleGroup>, Problems> {
    let file: RuleFileConfig = serde_saphyr::from_str(text).map_err(|err| Problems::one(Problem::yaml(path, &err)))?;
    let base = path.parent().unwrap_or(Path::new(""));
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
            (None, Some(cron)) => match CronSchedule::parse(&cron) {
                Ok(cron) => Some(Schedule::Cron(Box::new(cron))),
                Err(err) => {
                    problems.push(at(line).msg(err.to_string()));
                    None
                }
            },
            (Some(interval), None) if interval.get() < std::time::Duration::from_secs(1) => {
                problems.push(at(line).msg(format!("interval {interval} is shorter than 1s")));
                None
            }
            (Some(interval), None) => Some(Schedule::Interval(interval)),
            (None, None) => Some(Schedule::Interval(defaults.evaluation_interval.clone())),
        };
        let mut rules = Vec::new();
        let mut rule_names = HashSet::new();
        for (index, rule) in group.rules.into_iter().enumerate() {
            let rule_line = (rule.referenced.line(), rule.referenced.column());
            let rule_name = rule.value.forecast.as_deref().or(rule.value.anomaly.as_deref()).unwrap_or("");
            let at = at(rule_line).rule(index + 1, rule_name);
            match validate_rule(rule.value, base, defaults) {
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
            groups.push(RuleGroup { key: GroupKey { file: path.to_path_buf(), name }, schedule, rules });
        }
    }
    problems.into_result(groups)
}

/// Checks one rule and applies defaults; returns every problem message found. `base` is the rule
/// file's directory, against which a relative `model_file` resolves.
fn validate_rule(rule: RuleConfig, base: &Path, defaults: &Defaults) -> Result<Rule, Vec<String>> {
    let mut errs = Vec::new();
    if rule.forecast.is_some() && rule.anomaly.is_some() {
        errs.push("set either `forecast` or `anomaly`, not both".to_string());
    }
    let name = rule.forecast.clone().or_else(|| rule.anomaly.clone()).unwrap_or_default();
    if name.trim().is_empty() {
        errs.push("rule needs a non-empty `forecast` or `anomaly` name".to_string());
    }
    let step = rule.step.clone().unwrap_or_else(|| defaults.step.clone());
    if step.secs() < 1 {
        errs.push(format!("step {step} must be at least 1s"));
    }
    if step.get().subsec_nanos() != 0 {
        errs.push(format!("step {step} must be a whole number of seconds"));
    }
    for label in rule.labels.keys() {
        if RESERVED_LABELS.contains(&label.as_str()) {
            errs.push(format!("label {label:?} is set by pulsewatch and cannot be a static label"));
        } else if !is_valid_label_name(label) {
            errs.push(format!("invalid label name {label:?}"));
        }
    }
    let labels = rule.labels.clone();
    let kind = if rule.anomaly.is_some() {
        validate_anomaly(rule, base, &mut errs).map(RuleKind::Anomaly)
    } else {
        validate_forecast(rule, &step, defaults, &mut errs).map(RuleKind::Forecast)
    };
    match kind {
        Some(kind) if errs.is_empty() => Ok(Rule { name, step, labels, kind }),
        _ => Err(errs),
    }
}

/// Longest expression accepted, in bytes.
const MAX_EXPR_BYTES: usize = 64 << 10;
/// Deepest nesting of parentheses, brackets and braces accepted: the parser recurses once per
/// level, and a hostile file must not overflow the stack.
const MAX_EXPR_DEPTH: usize = 256;
/// Most operators accepted (label matchers count too): the parser's time grows with the square
/// of a chain's length (5,000 terms took 0.2 s here, 40,000 took 9 s).
const MAX_EXPR_OPERATORS: usize = 2_000;

/// Pushes an error if `expr` is empty, too large to parse safely, or does not parse.
fn check_expr(expr: &str, what: &str, errs: &mut Vec<String>) {
    if expr.trim().is_empty() {
        errs.push(format!("{what} is empty"));
    } else if let Err(why) = expr_within_limits(expr) {
        errs.push(format!("{what} {why}"));
    } else if let Err(err) = promql_parser::parser::parse(expr) {
        errs.push(format!("could not parse {what}: {}", err.trim()));
    }
}

/// Checks the size, nesting and operator count of a PromQL text without parsing it.
fn expr_within_limits(expr: &str) -> Result<(), String> {
    if expr.len() > MAX_EXPR_BYTES {
        return Err(format!("is {} bytes long; at most {MAX_EXPR_BYTES} are accepted", expr.len()));
    }
    let (mut depth, mut deepest, mut operators) = (0usize, 0usize, 0usize);
    let mut chars = expr.chars();
    while let Some(c) = chars.next() {
        match c {
            // Strings: skip to the closing quote (backquoted ones have no escapes).
            '"' | '\'' | '`' => {
                while let Some(d) = chars.next() {
                    if d == '\\' && c != '`' {
                        chars.next();
                    } else if d == c {
                        break;
                    }
                }
            }
            '#' => {
                chars.find(|&d| d == '\n');
            }
            '(' | '[' | '{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            ')' | ']' | '}' => depth = depth.saturating_sub(1),
            '+' | '-' | '*' | '/' | '%' | '^' | '<' | '>' | '=' | '!' => operators += 1,
            _ => {}
        }
    }
    operators += expr.split(|c: char| !(c.is_alphanumeric() || c == '_')).filter(|w| matches!(*w, "and" | "or" | "unless")).count();
    if deepest > MAX_EXPR_DEPTH {
        return Err(format!("nests {deepest} levels deep; at most {MAX_EXPR_DEPTH} are accepted"));
    }
    if operators > MAX_EXPR_OPERATORS {
        return Err(format!("has {operators} operators; at most {MAX_EXPR_OPERATORS} are accepted"));
    }
    Ok(())
}

fn validate_forecast(rule: RuleConfig, step: &Duration, defaults: &Defaults, errs: &mut Vec<String>) -> Option<Forecast> {
    for (key, set) in [("channels", rule.channels.is_some()), ("on", rule.on.is_some()), ("detector", rule.detector.is_some())] {
        if set {
            errs.push(format!("`{key}` applies to `anomaly` rules only"));
        }
    }
    let expr = rule.expr.unwrap_or_default();
    if expr.trim().is_empty() {
        errs.push("rule needs an `expr`".to_string());
    } else {
        check_expr(&expr, "expression", errs);
    }
    let history = rule.history.unwrap_or_else(|| defaults.history.clone());
    let refit = rule.refit.unwrap_or_else(|| defaults.refit.clone());
    if step.secs() >= 1 {
        let points = history.secs() / step.secs();
        if points < 10 {
            errs.push(format!("history {history} holds {points} steps of {step}; at least 10 are needed"));
        } else if points > MAX_HISTORY_POINTS {
            errs.push(format!("history {history} holds {points} steps of {step}; at most {MAX_HISTORY_POINTS} are allowed"));
        }
    }
    let model = rule.model.unwrap_or_else(|| defaults.model.clone());
    if model.combine().is_some() && rule.labels.contains_key("model") {
        errs.push("label \"model\" labels an ensemble's member scores and cannot be a static label of an ensemble rule".to_string());
    }
    if step.secs() >= 1 {
        if let Err(err) = model.validate(step, &history) {
            errs.push(err.to_string());
        }
    }
    let band = rule.band.unwrap_or(defaults.band);
    if !(band > 0.0 && band < 1.0) {
        errs.push(format!("band {band} must be between 0 and 1 (exclusive)"));
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
    Some(Forecast {
        expr,
        history,
        refit,
        model,
        band,
        horizons: rule.horizons,
        direction: rule.direction.unwrap_or_default(),
        min_deviation,
    })
}

fn validate_anomaly(rule: RuleConfig, base: &Path, errs: &mut Vec<String>) -> Option<Anomaly> {
    let forecast_only = [
        ("history", rule.history.is_some()),
        ("refit", rule.refit.is_some()),
        ("model", rule.model.is_some()),
        ("band", rule.band.is_some()),
        ("horizons", !rule.horizons.is_empty()),
        ("direction", rule.direction.is_some()),
        ("min_deviation", rule.min_deviation.is_some()),
    ];
    for (key, set) in forecast_only {
        if set {
            errs.push(format!("`{key}` applies to `forecast` rules only"));
        }
    }
    let channels = match (rule.expr, rule.channels) {
        (Some(_), Some(_)) => {
            errs.push("set either `expr` or `channels`, not both".to_string());
            vec![]
        }
        (Some(expr), None) => {
            check_expr(&expr, "expression", errs);
            vec![Channel { name: SINGLE_CHANNEL.to_string(), expr }]
        }
        (None, Some(channels)) => {
            if channels.is_empty() {
                errs.push("`channels` must list at least one channel".to_string());
            }
            let mut names = HashSet::new();
            for channel in &channels {
                if !is_valid_label_name(&channel.name) {
                    errs.push(format!("channel name {:?} must be a valid label name", channel.name));
                } else if !names.insert(channel.name.as_str()) {
                    errs.push(format!("channel name {:?} is listed twice", channel.name));
                }
                check_expr(&channel.expr, &format!("the expression of channel {:?}", channel.name), errs);
            }
            channels
        }
        (None, None) => {
            errs.push("rule needs an `expr` or `channels`".to_string());
            vec![]
        }
    };
    if rule.on.as_ref().is_some_and(Vec::is_empty) {
        errs.push("`on` must list at least one label; leave it out to join on all labels".to_string());
    }
    for label in rule.on.iter().flatten() {
        if !is_valid_label_name(label) || label == "__name__" {
            errs.push(format!("`on` label {label:?} must be a valid label name other than __name__"));
        }
    }
    let Some(detector) = rule.detector else {
        errs.push("rule needs a `detector`, e.g. `{ type: autoencoder, model_file: model.onnx }`".to_string());
        return None;
    };
    Some(Anomaly { channels, on: rule.on, detector: detector.resolved(base) })
}

/// A forecast rule for unit tests: step 1m, history 1h, refit 10m, band 0.95, no horizons.
#[cfg(test)]
pub(crate) fn test_forecast_rule(name: &str, expr: &str, model: ModelSpec) -> Rule {
    Rule {
        name: name.into(),
        step: Duration::from_secs(60),
        labels: BTreeMap::new(),
        kind: RuleKind::Forecast(Forecast {
            expr: expr.into(),
            history: Duration::from_secs(3600),
            refit: Duration::from_secs(600),
            model,
            band: 0.95,
            horizons: vec![],
            direction: Direction::Both,
            min_deviation: 0.0,
        }),
    }
}

/// Prometheus label-name syntax: `[a-zA-Z_][a-zA-Z0-9_]*`.
pub(crate) fn is_valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_') && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
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
        let first = g.rules[0].forecast().unwrap();
        let d = |s: &str| Duration::parse(s).unwrap();
        assert_eq!(first.horizons, vec![d("15m"), d("1h"), d("4h")]);
        assert_eq!(g.rules[0].labels["team"], "infra");
        assert_eq!(g.rules[0].step, d("1m"));
        assert_eq!(first.history_points(&g.rules[0].step), 14 * 1440);
        assert_eq!(first.refit, d("6h"));
        assert_eq!(first.band, 0.95);
        assert_eq!(first.direction, Direction::Both);
        assert_eq!(first.min_deviation, 0.02);
        assert_eq!(first.model, ModelSpec::Mstl { seasonality: vec![d("1d"), d("1w")] });
        // the second rule takes every default
        let defaults = Defaults::default();
        let second = g.rules[1].forecast().unwrap();
        assert_eq!(g.rules[1].step, defaults.step);
        assert_eq!((&second.history, &second.refit), (&defaults.history, &defaults.refit));
        assert_eq!(second.model, defaults.model);
        assert_eq!(second.band, defaults.band);
        assert_eq!((second.direction, second.min_deviation), (Direction::Both, 0.0));
        assert!(second.horizons.is_empty());
    }

    #[test]
    fn direction_and_min_deviation() {
        let rule = |extra: &str| format!("groups:\n  - name: g\n    rules:\n      - forecast: a\n        expr: up\n{extra}");
        for (text, direction) in [("above", Direction::Above), ("below", Direction::Below), ("both", Direction::Both)] {
            let groups = load(&rule(&format!("        direction: {text}\n"))).unwrap();
            assert_eq!(groups[0].rules[0].forecast().unwrap().direction, direction, "{text}");
        }
        let err = load(&rule("        direction: up\n")).unwrap_err().to_string();
        assert!(err.contains("r.yaml:6"), "{err}");
        for bad in ["-0.5", ".nan", ".inf"] {
            let err = load(&rule(&format!("        min_deviation: {bad}\n"))).unwrap_err().to_string();
            assert!(err.contains("r.yaml:4:") && err.contains("must be a finite number >= 0"), "{bad}: {err}");
        }
        let groups = load(&rule("        min_deviation: 3\n")).unwrap();
        assert_eq!(groups[0].rules[0].forecast().unwrap().min_deviation, 3.0);
    }

    #[test]
    fn expressions_too_large_to_parse_safely_are_refused_before_parsing() {
        let rule = |expr: &str| format!("groups:\n  - name: g\n    rules:\n      - forecast: a\n        expr: '{expr}'\n");
        // 200,000 nested parentheses overflowed the stack of the parser
        let deep = format!("{}up{}", "(".repeat(200_000), ")".repeat(200_000));
        let err = load(&rule(&deep)).unwrap_err().to_string();
        assert!(
            err.contains("r.yaml:4:") && err.contains("expression is 400002 bytes long; at most 65536"),
            "{}",
            &err[..err.len().min(300)]
        );
        let deep = format!("{}up{}", "(".repeat(300), ")".repeat(300));
        assert!(load(&rule(&deep)).unwrap_err().to_string().contains("expression nests 300 levels deep; at most 256"));
        let nested = format!("{}up{}", "(".repeat(200), ")".repeat(200));
        assert!(load(&rule(&nested)).is_ok(), "200 levels parse");
        // a chain of 40,000 terms took 9 s to parse
        let chain = format!("up{}", " + up".repeat(5_000));
        assert!(load(&rule(&chain)).unwrap_err().to_string().contains("expression has 5000 operators; at most 2000"));
        let chain = format!("up{}", " or up".repeat(1_500));
        assert!(load(&rule(&chain)).is_ok());
        // what strings and comments hold does not count
        let matchers = format!("up{{job=\"{}\"}}", "((((+".repeat(1_000));
        assert!(load(&rule(&matchers)).is_ok());
    }

    #[test]
    fn intervals_under_a_second_are_refused() {
        let err = load("groups:\n  - name: g\n    interval: 1ns\n    rules: []\n").unwrap_err().to_string();
        assert!(err.contains("r.yaml:2:") && err.contains("interval 1ns is shorter than 1s"), "{err}");
        assert!(load("groups:\n  - name: g\n    interval: 1s\n    rules: []\n").is_ok());
    }

    #[test]
    fn interval_and_cron_both_set_is_an_error() {
        let err = load("groups:\n  - name: g\n    interval: 1m\n    cron: \"*/5 * * * *\"\n    rules: []\n").unwrap_err();
        let lines: Vec<String> = err.iter().map(|p| p.to_string()).collect();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].starts_with("r.yaml:2:")
                && lines[0].contains("group \"g\"")
                && lines[0].contains("set either interval or cron, not both"),
            "{}",
            lines[0]
        );
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
        assert!(
            lines[0].starts_with("r.yaml:4:") && lines[0].contains(r#"group "g", rule 1, "bad_expr": could not parse expression"#),
            "{}",
            lines[0]
        );
        assert!(lines[1].starts_with("r.yaml:6:") && lines[1].contains("rule 2, \"bad_band\": band 1.5"), "{}", lines[1]);
        assert!(lines.iter().any(|l| l.starts_with("r.yaml:9:") && l.contains("not unique")), "{lines:#?}");
        assert!(lines.iter().any(|l| l.contains("invalid cron")), "{lines:#?}");
    }

    #[test]
    fn rejects_reserved_and_invalid_labels() {
        let err = load("groups:\n  - name: g\n    rules:\n      - forecast: a\n        expr: up\n        labels: { rule: x, 1bad: y }\n")
            .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("\"rule\" is set by pulsewatch"), "{text}");
        assert!(text.contains("invalid label name \"1bad\""), "{text}");
    }

    #[test]
    fn an_ensemble_rule_keeps_the_model_label_for_its_members() {
        let ensemble = "model: { type: ensemble, combine: max, members: [{ type: linear }] }";
        let rule = |model: &str| {
            format!("groups:\n  - name: g\n    rules:\n      - forecast: a\n        expr: up\n        {model}\n        labels: {{ model: x }}\n")
        };
        let text = load(&rule(ensemble)).unwrap_err().to_string();
        assert!(text.contains("label \"model\" labels an ensemble's member scores"), "{text}");
        assert!(load(&rule("model: { type: linear }")).is_ok(), "other rules may set it");
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
    fn anomaly_rules_with_one_or_several_channels() {
        let groups = parse(
            Path::new("rules/r.yaml"),
            r#"groups:
  - name: g
    rules:
      - anomaly: temp
        expr: machine_temperature
        step: 5m
        detector: { type: autoencoder, model_file: models/temp.onnx }
      - anomaly: host
        channels:
          - { name: cpu, expr: 'sum by (instance) (rate(node_cpu_seconds_total{mode!="idle"}[5m]))' }
          - { name: mem, expr: 'node_memory_MemAvailable_bytes' }
        on: [instance]
        detector: { type: autoencoder, model_file: /abs/host.onnx }
"#,
            &Defaults::default(),
        )
        .unwrap();
        let rules = &groups[0].rules;
        let RuleKind::Anomaly(temp) = &rules[0].kind else { panic!("{:?}", rules[0]) };
        assert_eq!(temp.channels, vec![Channel { name: "value".into(), expr: "machine_temperature".into() }]);
        assert_eq!(temp.detector.model_file(), Some(Path::new("rules/models/temp.onnx")), "relative to the rule file");
        assert_eq!(rules[0].step, Duration::from_secs(300));
        assert_eq!(rules[0].kind_name(), "anomaly");
        let RuleKind::Anomaly(host) = &rules[1].kind else { panic!("{:?}", rules[1]) };
        assert_eq!(host.channels.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["cpu", "mem"]);
        assert_eq!(host.on.as_deref(), Some(&["instance".to_string()][..]));
        assert_eq!(host.detector.model_file(), Some(Path::new("/abs/host.onnx")));
        assert!(rules[1].display_query().starts_with("cpu: sum by (instance)"), "{}", rules[1].display_query());
    }

    #[test]
    fn anomaly_rule_problems() {
        let err = load(
            r#"groups:
  - name: g
    rules:
      - anomaly: a
        expr: up
        band: 0.9
        detector: { type: autoencoder, model_file: m.onnx }
      - anomaly: b
        channels: [{ name: x, expr: up }, { name: x, expr: 'rate(' }]
      - anomaly: c
        expr: up
        channels: [{ name: 1x, expr: up }]
        detector: { type: autoencoder, model_file: m.onnx }
      - forecast: d
        expr: up
        detector: { type: autoencoder, model_file: m.onnx }
      - anomaly: e
        expr: up
        on: []
        detector: { type: autoencoder, model_file: m.onnx }
"#,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains(r#"rule 1, "a": `band` applies to `forecast` rules only"#), "{err}");
        assert!(err.contains(r#"rule 2, "b": channel name "x" is listed twice"#), "{err}");
        assert!(err.contains(r#"could not parse the expression of channel "x""#), "{err}");
        assert!(err.contains(r#"rule 2, "b": rule needs a `detector`"#), "{err}");
        assert!(err.contains(r#"rule 3, "c": set either `expr` or `channels`"#), "{err}");
        assert!(err.contains(r#"rule 4, "d": `detector` applies to `anomaly` rules only"#), "{err}");
        assert!(err.contains(r#"rule 5, "e": `on` must list at least one label"#), "{err}");
        // an unknown detector type is a YAML error, with its line
        let err = load("groups:\n  - name: g\n    rules:\n      - anomaly: e\n        expr: up\n        detector: { type: zscore }\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("r.yaml:6") && err.contains("zscore"), "{err}");
    }

    #[test]
    fn label_names() {
        assert!(is_valid_label_name("team_a"));
        assert!(is_valid_label_name("_x"));
        assert!(!is_valid_label_name("a-b"));
        assert!(!is_valid_label_name(""));
    }
}

//! The Grafana dashboards under `grafana/dashboards` and the provisioning files under
//! `grafana/provisioning`.
//!
//! Static checks (no Prometheus needed): every dashboard parses, has a stable unique uid, a
//! `datasource` variable that every panel, target and query variable uses, only defined
//! variables, PromQL that `promql-parser` accepts once Grafana's variables are substituted, and
//! fill-between / by-name overrides that point at series the panel draws.
//!
//! Live check: the real `pulsewatch` binary scores backfilled NAB series, a real Prometheus
//! scrapes it (with `honor_labels: true`, as README says) and loads the shipped alerting rules.
//! The metric names pulsewatch exports come from its own `/metrics` (the `# TYPE` lines, expanded
//! the way Prometheus stores each type), so there is no hand-copied list to drift. Then every
//! variable is resolved the way Grafana resolves it (`label_values` through the label values API,
//! `query_result` through an instant query and the variable's regex), and every panel query is run
//! with those values: it must use only exported (or Prometheus's own) metrics, succeed, return data
//! and carry the labels its legend names.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use promql_parser::label::MatchOp;
use promql_parser::parser::{Expr, VectorSelector};
use serde_json::{json, Value};

use crate::harness::*;

/// Every panel, target and query variable names its data source like this.
const DATASOURCE_UID: &str = "${datasource}";

/// Panel types the dashboards may use (core panels of Grafana 10 and 11).
const PANEL_TYPES: [&str; 4] = ["row", "stat", "table", "timeseries"];

/// Grafana's global variables, with the values the checks substitute. `$__rate_interval` is
/// `max(4 × scrape interval, $__interval + scrape interval)` in Grafana; a minute suits the test
/// Prometheus, which scrapes every second.
const BUILTINS: [(&str, &str); 9] = [
    ("__rate_interval", "1m"),
    ("__interval", "15s"),
    ("__interval_ms", "15000"),
    ("__range", "1h"),
    ("__range_s", "3600"),
    ("__range_ms", "3600000"),
    ("__from", "1700000000000"),
    ("__to", "1700003600000"),
    ("__dashboard", "pulsewatch"),
];

/// Grafana variables that only exist in data links and field overrides, never in queries.
const LINK_BUILTINS: [&str; 6] = ["__data", "__field", "__series", "__value", "__cell", "__url_time_range"];

/// Metrics a dashboard may use beside pulsewatch's own: what Prometheus writes itself for every
/// scrape (`up`, `scrape_*`) and for alerting rules (`ALERTS`, `ALERTS_FOR_STATE`).
fn prometheus_own_metric(name: &str) -> bool {
    matches!(name, "up" | "ALERTS" | "ALERTS_FOR_STATE") || name.starts_with("scrape_")
}

// ------------------------------------------------------------------------------------------------
// Reading dashboards

fn grafana_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("grafana")
}

struct Dashboard {
    file: String,
    json: Value,
}

/// Every `grafana/dashboards/*.json`, or the reasons they do not parse.
fn load_dashboards() -> Result<Vec<Dashboard>, Vec<String>> {
    let dir = grafana_dir().join("dashboards");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    let mut errs = Vec::new();
    for path in files {
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        match serde_json::from_str(&text) {
            Ok(json) => out.push(Dashboard { file, json }),
            Err(e) => errs.push(format!("{file}: not JSON: {e}")),
        }
    }
    if errs.is_empty() {
        Ok(out)
    } else {
        Err(errs)
    }
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// Panels in layout order, rows' nested panels (collapsed rows keep theirs) included.
fn panels(d: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().into_iter().flatten() {
        out.push(p);
        out.extend(p["panels"].as_array().into_iter().flatten());
    }
    out
}

#[derive(Clone, Debug)]
struct Variable {
    name: String,
    kind: String,
    /// The query (`label_values(...)`, `query_result(...)`), custom values, textbox default...
    query: String,
    regex: String,
    multi: bool,
    include_all: bool,
    all_value: Option<String>,
    datasource: Value,
}

fn variables(d: &Value) -> Vec<Variable> {
    d["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| Variable {
            name: str_of(v, "name").to_string(),
            kind: str_of(v, "type").to_string(),
            // Grafana 10+ stores a Prometheus variable query as {"query": "...", "qryType": n}.
            query: match &v["query"] {
                Value::String(s) => s.clone(),
                q => str_of(q, "query").to_string(),
            },
            regex: str_of(v, "regex").to_string(),
            multi: v["multi"].as_bool().unwrap_or(false),
            include_all: v["includeAll"].as_bool().unwrap_or(false),
            all_value: v["allValue"].as_str().filter(|s| !s.is_empty()).map(str::to_string),
            datasource: v["datasource"].clone(),
        })
        .collect()
}

/// One query a panel runs.
struct Target<'a> {
    panel: &'a Value,
    expr: String,
    instant: bool,
    legend: String,
    hidden: bool,
}

fn targets(d: &Value) -> Vec<Target<'_>> {
    let mut out = Vec::new();
    for p in panels(d) {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push(Target {
                panel: p,
                expr: str_of(t, "expr").to_string(),
                instant: t["instant"].as_bool().unwrap_or(false) && !t["range"].as_bool().unwrap_or(false),
                legend: str_of(t, "legendFormat").to_string(),
                hidden: t["hide"].as_bool().unwrap_or(false),
            });
        }
    }
    out
}

fn panel_name(p: &Value) -> String {
    format!("panel {} {:?}", p["id"], str_of(p, "title"))
}

// ------------------------------------------------------------------------------------------------
// Grafana variables

/// A variable reference: `$name`, `${name}`, `${name.path}`, `${name:format}`, `[[name]]` or
/// `[[name:format]]` (the syntaxes of Grafana's template service).
#[derive(Debug)]
struct VarRef {
    name: String,
    format: Option<String>,
    range: std::ops::Range<usize>,
}

fn is_word(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

fn var_refs(text: &str) -> Vec<VarRef> {
    let b = text.as_bytes();
    let word_end = |mut i: usize| {
        while i < b.len() && is_word(b[i]) {
            i += 1;
        }
        i
    };
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'$' && b.get(i + 1) == Some(&b'{') {
            let end = word_end(i + 2);
            if let Some(close) = text[end..].find('}').map(|c| end + c) {
                if end > i + 2 {
                    let rest = &text[end..close];
                    let format = rest.find(':').map(|c| rest[c + 1..].to_string());
                    out.push(VarRef { name: text[i + 2..end].to_string(), format, range: i..close + 1 });
                    i = close + 1;
                    continue;
                }
            }
        } else if b[i] == b'$' && b.get(i + 1).is_some_and(|&c| is_word(c)) {
            let end = word_end(i + 1);
            out.push(VarRef { name: text[i + 1..end].to_string(), format: None, range: i..end });
            i = end;
            continue;
        } else if text[i..].starts_with("[[") {
            let end = word_end(i + 2);
            if let Some(close) = text[end..].find("]]").map(|c| end + c) {
                let rest = &text[end..close];
                if end > i + 2 && (rest.is_empty() || rest.starts_with(':')) {
                    out.push(VarRef { name: text[i + 2..end].to_string(), format: rest.strip_prefix(':').map(str::to_string), range: i..close + 2 });
                    i = close + 2;
                    continue;
                }
            }
        }
        i += 1;
    }
    out
}

/// Replaces every variable reference with what `value` says, or fails on the first it refuses.
fn interpolate(text: &str, value: &dyn Fn(&VarRef) -> Result<String, String>) -> Result<String, String> {
    let mut out = String::new();
    let mut last = 0;
    for r in var_refs(text) {
        out.push_str(&text[last..r.range.start]);
        out.push_str(&value(&r)?);
        last = r.range.end;
    }
    out.push_str(&text[last..]);
    Ok(out)
}

/// A variable's value: the selected values, or "All".
#[derive(Clone, Debug)]
struct Current {
    values: Vec<String>,
    all: bool,
}

/// Grafana's Prometheus escaping of a value inside a regex matcher (`prometheusSpecialRegexEscape`).
fn regex_escape(v: &str) -> String {
    let mut out = String::new();
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\\\\\"),
            '$' | '^' | '*' | '{' | '}' | '[' | ']' | '\'' | '+' | '?' | '.' | '(' | ')' | '|' => {
                out.push_str("\\\\");
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    out
}

/// How Grafana writes `var`'s value into a Prometheus query, with an optional `:format`.
fn render(var: &Variable, cur: &Current, format: Option<&str>) -> Result<String, String> {
    if cur.all {
        if let Some(all) = &var.all_value {
            return Ok(all.clone());
        }
    }
    let alternation = || format!("({})", cur.values.iter().map(|v| regex_escape(v)).collect::<Vec<_>>().join("|"));
    Ok(match format {
        Some("raw") | Some("csv") => cur.values.join(","),
        Some("pipe") => cur.values.join("|"),
        Some("regex") => alternation(),
        Some(other) => return Err(format!("variable format :{other} is not one these checks know")),
        // The Prometheus data source's own interpolation (`interpolateQueryExpr`).
        None if !var.multi && !var.include_all => cur.values.first().cloned().unwrap_or_default().replace('\\', "\\\\").replace('\'', "\\\\'"),
        None if cur.values.len() == 1 => regex_escape(&cur.values[0]),
        None => alternation(),
    })
}

/// The function a Prometheus query variable calls (Grafana's `metric_find_query.ts`).
#[derive(Debug, PartialEq)]
enum VarQuery {
    /// `label_values(label)` or `label_values(selector, label)`.
    LabelValues { selector: Option<String>, label: String },
    /// `query_result(expr)`: one value per series of the instant query.
    QueryResult(String),
}

fn parse_var_query(q: &str) -> Result<VarQuery, String> {
    let q = q.trim();
    let call = |f: &str| q.strip_prefix(f).and_then(|r| r.strip_prefix('(')).and_then(|r| r.strip_suffix(')'));
    let label_ok = |l: &str| !l.is_empty() && !l.as_bytes()[0].is_ascii_digit() && l.bytes().all(is_word);
    if let Some(inner) = call("label_values") {
        let (selector, label) = match inner.rsplit_once(',') {
            Some((s, l)) => (Some(s.trim().to_string()), l.trim()),
            None => (None, inner.trim()),
        };
        if !label_ok(label) {
            return Err(format!("{q}: {label:?} is not a label name"));
        }
        return Ok(VarQuery::LabelValues { selector, label: label.to_string() });
    }
    if let Some(inner) = call("query_result") {
        return Ok(VarQuery::QueryResult(inner.trim().to_string()));
    }
    Err(format!("{q}: not label_values(...) or query_result(...), the variable queries these dashboards use"))
}

/// Grafana's handling of a variable regex (`/re/flags`, JavaScript) on one value: skip the value
/// when it does not match, else keep the group named `value`, else the first group, else the
/// match. The regex is compiled by promql-parser's label matcher (the `regex` crate), which
/// anchors it as `^(?:re)$`; wrapping it in `.*?(?:re).*` makes that the unanchored search
/// JavaScript's `exec` does.
fn apply_regex(re: &str, text: &str) -> Result<Option<String>, String> {
    if re.is_empty() {
        return Ok(Some(text.to_string()));
    }
    let (body, flags) = match re.strip_prefix('/').and_then(|r| r.rsplit_once('/')) {
        Some((body, flags)) => (body, flags),
        None => (re, ""),
    };
    let inline = if flags.contains('i') { "(?i)" } else { "" };
    let pattern = format!("{inline}.*?(?:{body}).*");
    let selector = format!("{{__regex__=~\"{}\"}}", pattern.replace('\\', "\\\\").replace('"', "\\\""));
    let matcher = match promql_parser::parser::parse(&selector) {
        Ok(Expr::VectorSelector(vs)) => vs.matchers.matchers.into_iter().next(),
        Ok(_) => None,
        Err(e) => return Err(format!("regex {re}: {e}")),
    };
    let Some(MatchOp::Re(compiled)) = matcher.map(|m| m.op) else { return Err(format!("regex {re}: not compiled")) };
    let Some(caps) = compiled.captures(text) else { return Ok(None) };
    let group = caps.name("value").or_else(|| (1..caps.len()).find_map(|i| caps.get(i))).or_else(|| caps.get(0));
    Ok(group.map(|m| m.as_str().to_string()))
}

/// The text Grafana makes of one series of a `query_result` variable's instant query.
fn query_result_text(metric: &BTreeMap<String, String>, value: &str, ts: f64) -> String {
    let name = metric.get("__name__").cloned().unwrap_or_default();
    let labels: Vec<String> = metric.iter().filter(|(k, _)| *k != "__name__").map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    format!("{name}{{{}}} {value} {}", labels.join(","), (ts * 1000.0) as i64)
}

/// Values for checks without a data source: "1h" is both a label value and a PromQL duration, so
/// it fits wherever a variable may stand; a `query_result` variable gets what its regex makes of
/// a typical series.
fn static_values(vars: &[Variable]) -> BTreeMap<String, Current> {
    let sample = query_result_text(
        &BTreeMap::from([("__name__".into(), "pulsewatch_anomaly_score".into()), ("instance".into(), "1h".into()), ("rule".into(), "1h".into())]),
        "1.5",
        1.7e9,
    );
    vars.iter()
        .map(|v| {
            let value = match v.kind.as_str() {
                "datasource" => "prometheus".to_string(),
                "query" if v.query.trim_start().starts_with("query_result") => apply_regex(&v.regex, &sample).ok().flatten().unwrap_or_default(),
                "custom" | "interval" => v.query.split(',').next().unwrap_or("").trim().to_string(),
                "query" => "1h".to_string(),
                _ => v.query.clone(),
            };
            (v.name.clone(), Current { values: vec![value], all: v.include_all })
        })
        .collect()
}

/// Substitutes the variables of `vars` (with values `values`) and Grafana's built-ins.
fn substitute(text: &str, vars: &[Variable], values: &BTreeMap<String, Current>) -> Result<String, String> {
    interpolate(text, &|r| {
        if let Some((_, v)) = BUILTINS.iter().find(|(n, _)| *n == r.name) {
            return Ok(v.to_string());
        }
        let var = vars.iter().find(|v| v.name == r.name).ok_or_else(|| format!("${} is not defined", r.name))?;
        let cur =
            values.get(&r.name).ok_or_else(|| format!("${} has no value (it did not resolve, or is defined after the variable using it)", r.name))?;
        render(var, cur, r.format.as_deref())
    })
}

// ------------------------------------------------------------------------------------------------
// PromQL

fn selectors<'a>(e: &'a Expr, out: &mut Vec<&'a VectorSelector>) {
    match e {
        Expr::Aggregate(a) => {
            selectors(&a.expr, out);
            if let Some(p) = &a.param {
                selectors(p, out);
            }
        }
        Expr::Unary(u) => selectors(&u.expr, out),
        Expr::Binary(b) => {
            selectors(&b.lhs, out);
            selectors(&b.rhs, out);
        }
        Expr::Paren(p) => selectors(&p.expr, out),
        Expr::Subquery(s) => selectors(&s.expr, out),
        Expr::VectorSelector(v) => out.push(v),
        Expr::MatrixSelector(m) => out.push(&m.vs),
        Expr::Call(c) => c.args.args.iter().for_each(|a| selectors(a, out)),
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
    }
}

/// The metric names an expression reads, or why one of its selectors names none. A regex on
/// `__name__` stands for the known names it matches (and must match one).
fn metric_names(e: &Expr, known: &dyn Fn(&str) -> bool, all_known: &BTreeSet<String>) -> Result<BTreeSet<String>, String> {
    let mut found = Vec::new();
    selectors(e, &mut found);
    let mut names = BTreeSet::new();
    for vs in found {
        let mut named = vs.name.iter().cloned().collect::<Vec<_>>();
        for m in vs.matchers.matchers.iter().filter(|m| m.name == "__name__") {
            match &m.op {
                MatchOp::Equal => named.push(m.value.clone()),
                MatchOp::Re(_) => {
                    let matched: Vec<String> = all_known.iter().filter(|n| m.is_match(n)).cloned().collect();
                    if matched.is_empty() {
                        return Err(format!("{vs}: __name__=~{:?} matches no known metric", m.value));
                    }
                    named.extend(matched);
                }
                _ => {}
            }
        }
        if named.is_empty() {
            return Err(format!("{vs}: selector without a metric name"));
        }
        names.extend(named);
    }
    if let Some(unknown) = names.iter().find(|n| !known(n)) {
        return Err(format!("unknown metric {unknown}: neither exported by pulsewatch nor written by Prometheus itself"));
    }
    Ok(names)
}

/// Every PromQL expression of a dashboard, with where it comes from: panel targets, and the
/// selector or expression inside each query variable.
fn expressions(d: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for v in variables(d).iter().filter(|v| v.kind == "query") {
        match parse_var_query(&v.query) {
            Ok(VarQuery::LabelValues { selector: Some(s), .. }) => out.push((format!("variable ${}", v.name), s)),
            Ok(VarQuery::QueryResult(e)) => out.push((format!("variable ${}", v.name), e)),
            _ => {}
        }
    }
    for t in targets(d) {
        out.push((panel_name(t.panel), t.expr));
    }
    out
}

/// Checks that every expression parses (after static substitution) and reads only metrics that
/// `known` accepts.
fn check_metric_names(file: &str, d: &Value, known: &dyn Fn(&str) -> bool, all_known: &BTreeSet<String>) -> Vec<String> {
    let vars = variables(d);
    let values = static_values(&vars);
    let mut errs = Vec::new();
    for (place, expr) in expressions(d) {
        let parsed = substitute(&expr, &vars, &values).and_then(|e| promql_parser::parser::parse(&e).map_err(|err| format!("{e}: {err}")));
        match parsed.and_then(|e| metric_names(&e, known, all_known)) {
            Ok(_) => {}
            Err(e) => errs.push(format!("{file}: {place}: {e}")),
        }
    }
    errs
}

// ------------------------------------------------------------------------------------------------
// Static checks

fn datasource_is_variable(ds: &Value) -> bool {
    str_of(ds, "uid") == DATASOURCE_UID && matches!(ds.get("type").and_then(Value::as_str), None | Some("prometheus"))
}

/// Every string of the dashboard with its JSON path, skipping variable regexes (where `$` is an
/// anchor).
fn strings<'a>(v: &'a Value, path: String, out: &mut Vec<(String, &'a str)>) {
    match v {
        Value::String(s) => out.push((path, s)),
        Value::Array(a) => a.iter().enumerate().for_each(|(i, x)| strings(x, format!("{path}[{i}]"), out)),
        Value::Object(o) => {
            for (k, x) in o.iter().filter(|(k, _)| *k != "regex") {
                strings(x, format!("{path}.{k}"), out);
            }
        }
        _ => {}
    }
}

fn check_dashboard(file: &str, d: &Value) -> Vec<String> {
    let mut errs = Vec::new();
    let mut err = |e: String| errs.push(format!("{file}: {e}"));
    let uid = str_of(d, "uid");
    if uid.is_empty() || uid.len() > 40 || !uid.bytes().all(|c| is_word(c) || c == b'-') {
        err(format!("uid {uid:?} must be 1-40 characters of [A-Za-z0-9_-]"));
    }
    if str_of(d, "title").is_empty() {
        err("no title".into());
    }
    if !d["schemaVersion"].as_u64().is_some_and(|v| (36..=41).contains(&v)) {
        err(format!("schemaVersion {} is not one of Grafana 10/11 (36-41)", d["schemaVersion"]));
    }

    // variables
    let vars = variables(d);
    let mut names = BTreeSet::new();
    for v in &vars {
        if !names.insert(v.name.clone()) {
            err(format!("variable ${} defined twice", v.name));
        }
    }
    match vars.iter().find(|v| v.kind == "datasource") {
        Some(v) if v.name == "datasource" && v.query == "prometheus" => {}
        Some(v) => err(format!("data source variable ${} must be named `datasource` and have query `prometheus`, has {:?}", v.name, v.query)),
        None => err("no data source variable (type `datasource`, query `prometheus`)".into()),
    }
    let values = static_values(&vars);
    let mut earlier = BTreeMap::new();
    for v in &vars {
        if v.kind == "query" {
            if !datasource_is_variable(&v.datasource) {
                err(format!("variable ${}: data source {} is not ${{datasource}}", v.name, v.datasource));
            }
            match parse_var_query(&v.query) {
                Err(e) => err(format!("variable ${}: {e}", v.name)),
                Ok(q) => {
                    let expr = match q {
                        VarQuery::LabelValues { selector, .. } => selector,
                        VarQuery::QueryResult(e) => Some(e),
                    };
                    if let Some(expr) = expr {
                        match substitute(&expr, &vars, &earlier).and_then(|e| promql_parser::parser::parse(&e).map_err(|err| format!("{e}: {err}"))) {
                            Err(e) => err(format!("variable ${}: {e}", v.name)),
                            Ok(parsed) if matches!(q_kind(&v.query), "label_values") && !matches!(parsed, Expr::VectorSelector(_)) => {
                                err(format!("variable ${}: label_values takes a series selector, not {parsed}", v.name))
                            }
                            Ok(_) => {}
                        }
                    }
                }
            }
            if v.query.trim_start().starts_with("query_result") {
                match apply_regex(&v.regex, "x{a=\"b\"} 1 1000") {
                    Err(e) => err(format!("variable ${}: {e}", v.name)),
                    Ok(None) => err(format!("variable ${}: regex {} matches no query_result line", v.name, v.regex)),
                    Ok(Some(_)) => {}
                }
            }
        }
        earlier.insert(v.name.clone(), values[&v.name].clone());
    }

    // panels
    let mut ids = BTreeSet::new();
    for p in panels(d) {
        let name = panel_name(p);
        if !p["id"].as_u64().is_some_and(|id| ids.insert(id)) {
            err(format!("{name}: id missing or not unique"));
        }
        let kind = str_of(p, "type");
        if !PANEL_TYPES.contains(&kind) {
            err(format!("{name}: panel type {kind:?} is not one of {PANEL_TYPES:?}"));
        }
        let grid = &p["gridPos"];
        let (x, w) = (grid["x"].as_u64(), grid["w"].as_u64());
        if !matches!((x, w, grid["h"].as_u64(), grid["y"].as_u64()), (Some(x), Some(w), Some(_), Some(_)) if w > 0 && x + w <= 24) {
            err(format!("{name}: gridPos {grid} does not fit the 24 columns"));
        }
        if kind == "row" {
            if p.get("datasource").is_some_and(|ds| !ds.is_null() && !datasource_is_variable(ds)) {
                err(format!("{name}: data source is not ${{datasource}}"));
            }
            continue;
        }
        if !datasource_is_variable(&p["datasource"]) {
            err(format!("{name}: data source {} is not ${{datasource}}", p["datasource"]));
        }
        let targets = p["targets"].as_array().cloned().unwrap_or_default();
        if targets.is_empty() {
            err(format!("{name}: no queries"));
        }
        let mut ref_ids = BTreeSet::new();
        for t in &targets {
            if !datasource_is_variable(&t["datasource"]) {
                err(format!("{name}: query {} has data source {}, not ${{datasource}}", t["refId"], t["datasource"]));
            }
            if !ref_ids.insert(str_of(t, "refId").to_string()) || str_of(t, "refId").is_empty() {
                err(format!("{name}: refId {} missing or repeated", t["refId"]));
            }
            let expr = str_of(t, "expr");
            match substitute(expr, &vars, &values) {
                Err(e) => err(format!("{name}: {e}")),
                Ok(e) => {
                    if let Err(parse) = promql_parser::parser::parse(&e) {
                        err(format!("{name}: `{e}` does not parse: {parse}"));
                    }
                }
            }
        }
        // By-name overrides and fill-between must name a series the panel draws: Grafana ignores
        // them silently otherwise. Series names are the fixed legends of the queries.
        let legends: BTreeSet<&str> = targets.iter().map(|t| str_of(t, "legendFormat")).collect();
        let fixed = legends.iter().all(|l| !l.contains("{{") && *l != "__auto" && !l.is_empty());
        for o in p["fieldConfig"]["overrides"].as_array().into_iter().flatten() {
            let (matcher, option) = (str_of(&o["matcher"], "id"), str_of(&o["matcher"], "options"));
            if matcher == "byName" && fixed && !legends.contains(option) {
                err(format!("{name}: override for series {option:?}, but the panel draws {legends:?}"));
            }
            if matcher == "byFrameRefID" && !ref_ids.contains(option) {
                err(format!("{name}: override for query {option:?}, which the panel does not have"));
            }
            for prop in o["properties"].as_array().into_iter().flatten().filter(|p| str_of(p, "id") == "custom.fillBelowTo") {
                let to = str_of(prop, "value");
                if !fixed || !legends.contains(to) {
                    err(format!("{name}: fills below to {to:?}, not a fixed legend of this panel ({legends:?})"));
                }
            }
        }
    }

    // every variable referenced is defined (or a Grafana built-in), every variable is used
    let mut all = Vec::new();
    strings(d, String::new(), &mut all);
    let mut used = BTreeSet::new();
    for (path, s) in &all {
        for r in var_refs(s) {
            used.insert(r.name.clone());
            let builtin = BUILTINS.iter().any(|(n, _)| *n == r.name) || LINK_BUILTINS.contains(&r.name.as_str());
            if !builtin && !names.contains(&r.name) {
                err(format!("{path}: ${} is not a variable of this dashboard", r.name));
            }
        }
    }
    for v in &vars {
        if !used.contains(&v.name) {
            err(format!("variable ${} is never used", v.name));
        }
    }
    errs
}

fn q_kind(q: &str) -> &str {
    q.trim_start().split('(').next().unwrap_or("")
}

/// Static checks over all dashboards, cross-dashboard uniqueness included.
fn check_dashboards(dashboards: &[Dashboard]) -> Vec<String> {
    let mut errs = Vec::new();
    let mut uids = BTreeMap::new();
    let mut titles = BTreeMap::new();
    for d in dashboards {
        errs.extend(check_dashboard(&d.file, &d.json));
        if let Some(other) = uids.insert(str_of(&d.json, "uid").to_string(), d.file.clone()) {
            errs.push(format!("{}: uid {:?} is also the uid of {other}", d.file, str_of(&d.json, "uid")));
        }
        if let Some(other) = titles.insert(str_of(&d.json, "title").to_string(), d.file.clone()) {
            errs.push(format!("{}: title {:?} is also the title of {other}", d.file, str_of(&d.json, "title")));
        }
    }
    errs
}

#[test]
fn dashboards_are_well_formed() {
    let dashboards = load_dashboards().unwrap_or_else(|errs| panic!("{}", errs.join("\n")));
    let files: Vec<&str> = dashboards.iter().map(|d| d.file.as_str()).collect();
    for expected in ["pulsewatch-overview.json", "pulsewatch-self.json", "pulsewatch-series.json"] {
        assert!(files.contains(&expected), "{expected} missing from grafana/dashboards ({files:?})");
    }
    let errs = check_dashboards(&dashboards);
    assert!(errs.is_empty(), "{} problems:\n{}", errs.len(), errs.join("\n"));
}

#[test]
fn dashboards_provisioning_files_point_at_the_dashboards() {
    let read = |rel: &str| -> Value {
        let path = grafana_dir().join("provisioning").join(rel);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    };
    let ds = read("datasources/prometheus.yml");
    assert_eq!(ds["apiVersion"], 1);
    let sources = ds["datasources"].as_array().expect("datasources list");
    assert!(sources.iter().any(|s| s["type"] == "prometheus" && s["url"].is_string()), "{ds}");

    let dash = read("dashboards/pulsewatch.yml");
    assert_eq!(dash["apiVersion"], 1);
    let providers = dash["providers"].as_array().expect("providers list");
    assert!(!providers.is_empty());
    for p in providers {
        assert_eq!(p["type"], "file", "{p}");
        let path = str_of(&p["options"], "path");
        assert!(path.starts_with('/'), "provider path {path:?} should be absolute (where the JSON is mounted)");
        // The README documents the mount of grafana/dashboards at that path.
        let readme = std::fs::read_to_string(grafana_dir().join("README.md")).unwrap();
        assert!(readme.contains(path), "grafana/README.md does not mention the provider path {path}");
    }
}

// ------------------------------------------------------------------------------------------------
// The checker must fail on real mistakes.

/// A small valid dashboard in the shape of the shipped ones.
fn sample_dashboard() -> Value {
    let ds = json!({ "type": "prometheus", "uid": "${datasource}" });
    json!({
        "uid": "sample", "title": "sample", "schemaVersion": 39,
        "templating": { "list": [
            { "name": "datasource", "type": "datasource", "query": "prometheus" },
            { "name": "rule", "type": "query", "datasource": ds, "multi": true, "includeAll": true, "allValue": ".+",
              "query": { "query": "label_values(pulsewatch_anomaly_score, rule)", "qryType": 1 } },
            { "name": "series", "type": "query", "datasource": ds, "regex": "/\\{(.*)\\}/",
              "query": { "query": "query_result(topk(5, pulsewatch_anomaly_score{rule=~\"$rule\"}))", "qryType": 3 } }
        ]},
        "panels": [{
            "id": 1, "type": "timeseries", "title": "band $rule", "datasource": ds, "gridPos": { "x": 0, "y": 0, "w": 24, "h": 8 },
            "fieldConfig": { "defaults": {}, "overrides": [
                { "matcher": { "id": "byName", "options": "upper" }, "properties": [{ "id": "custom.fillBelowTo", "value": "lower" }] }
            ]},
            "targets": [
                { "refId": "A", "datasource": ds, "expr": "pulsewatch_yhat_lower{${series:raw}}", "legendFormat": "lower" },
                { "refId": "B", "datasource": ds, "expr": "pulsewatch_yhat_upper{${series:raw}}", "legendFormat": "upper" },
                { "refId": "C", "datasource": ds, "expr": "sum(rate(pulsewatch_rule_evaluations_total{rule=~\"$rule\"}[$__rate_interval]))", "legendFormat": "evaluations" }
            ]
        }]
    })
}

#[test]
fn dashboards_checker_rejects_mistakes() {
    let known_names: BTreeSet<String> =
        ["pulsewatch_anomaly_score", "pulsewatch_yhat_lower", "pulsewatch_yhat_upper", "pulsewatch_rule_evaluations_total"].map(String::from).into();
    let known = |n: &str| known_names.contains(n) || prometheus_own_metric(n);
    let names_errors = |d: &Value| check_metric_names("sample.json", d, &known, &known_names);

    let good = sample_dashboard();
    assert_eq!(check_dashboard("sample.json", &good), Vec::<String>::new());
    assert_eq!(names_errors(&good), Vec::<String>::new());

    let expect = |errs: Vec<String>, what: &str| {
        assert!(errs.iter().any(|e| e.contains(what)), "expected an error containing {what:?}, got {errs:?}");
    };
    let mut d = good.clone();
    d["panels"][0]["targets"][0]["expr"] = json!("pulsewatch_anomaly_scores{rule=~\"$rule\"} > 1");
    expect(names_errors(&d), "unknown metric pulsewatch_anomaly_scores");
    d["panels"][0]["targets"][0]["expr"] = json!("rate(pulsewatch_rule_evaluation_duration_seconds[5m])");
    expect(names_errors(&d), "unknown metric pulsewatch_rule_evaluation_duration_seconds");
    d["panels"][0]["targets"][0]["expr"] = json!("{rule=~\"$rule\"}");
    expect(names_errors(&d), "selector without a metric name");
    d["templating"]["list"][1]["query"]["query"] = json!("label_values(pulsewatch_anomaly_scor, rule)");
    expect(names_errors(&d), "unknown metric pulsewatch_anomaly_scor");

    let mut d = good.clone();
    d["panels"][0]["targets"][2]["expr"] = json!("sum(rate(pulsewatch_rule_evaluations_total{rule=~\"$rules\"}[$__rate_interval]))");
    expect(check_dashboard("sample.json", &d), "$rules is not");
    let mut d = good.clone();
    d["panels"][0]["targets"][2]["expr"] = json!("sum(rate(pulsewatch_rule_evaluations_total{rule=~\"$rule\"}[$__rate_interval])");
    expect(check_dashboard("sample.json", &d), "does not parse");
    let mut d = good.clone();
    d["panels"][0]["datasource"] = json!({ "type": "prometheus", "uid": "P1809F7CD0C75ACF3" });
    expect(check_dashboard("sample.json", &d), "is not ${datasource}");
    let mut d = good.clone();
    d["panels"][0]["targets"][1]["legendFormat"] = json!("high");
    expect(check_dashboard("sample.json", &d), "override for series \"upper\"");
    let mut d = good.clone();
    d["panels"][0]["fieldConfig"]["overrides"][0]["properties"][0]["value"] = json!("low");
    expect(check_dashboard("sample.json", &d), "fills below to \"low\"");
    let mut d = good.clone();
    d["templating"]["list"][2]["regex"] = json!("/\\[(.*)\\]/");
    expect(check_dashboard("sample.json", &d), "matches no query_result line");

    let twins = [Dashboard { file: "a.json".into(), json: good.clone() }, Dashboard { file: "b.json".into(), json: good }];
    expect(check_dashboards(&twins), "uid \"sample\" is also the uid of a.json");
}

#[test]
fn dashboards_variable_syntax_is_grafanas() {
    let refs: Vec<(String, Option<String>)> =
        var_refs("a $rule b ${series:raw} [[x]] [[y:csv]] ${z} $__rate_interval \"foo$\" ${__data.fields.rule}")
            .into_iter()
            .map(|r| (r.name, r.format))
            .collect();
    let expected: Vec<(String, Option<String>)> = vec![
        ("rule".into(), None),
        ("series".into(), Some("raw".into())),
        ("x".into(), None),
        ("y".into(), Some("csv".into())),
        ("z".into(), None),
        ("__rate_interval".into(), None),
        ("__data".into(), None),
    ];
    assert_eq!(refs, expected);
    let metric: BTreeMap<String, String> =
        [("__name__", "m"), ("a", "b\"c"), ("rule", "r")].iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let line = query_result_text(&metric, "2", 1.5);
    assert_eq!(line, "m{a=\"b\"c\",rule=\"r\"} 2 1500");
    assert_eq!(apply_regex("/\\{(.*)\\}/", "m{a=\"b\",rule=\"r\"} 2 1500").unwrap().as_deref(), Some("a=\"b\",rule=\"r\""));
    assert_eq!(apply_regex("/rule=\"(?<value>[^\"]*)\"/", "m{a=\"b\",rule=\"r\"} 2 1500").unwrap().as_deref(), Some("r"));
    assert_eq!(apply_regex("/^x/", "m{} 2 1500").unwrap(), None);
    assert_eq!(
        parse_var_query("label_values(up{job=~\"a,b\"}, instance)"),
        Ok(VarQuery::LabelValues { selector: Some("up{job=~\"a,b\"}".into()), label: "instance".into() })
    );
}

// ------------------------------------------------------------------------------------------------
// Live: real pulsewatch, real Prometheus

/// A small Prometheus HTTP API client (blocking: the tests run on plain threads).
struct PromApi {
    url: String,
    rt: tokio::runtime::Runtime,
    client: reqwest::Client,
}

impl PromApi {
    fn new(url: String) -> Self {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        Self { url, rt, client: reqwest::Client::builder().timeout(Duration::from_secs(20)).build().unwrap() }
    }

    /// GET `path` with `params`; the `data` of a successful answer, else the error.
    fn get(&self, path: &str, params: &[(&str, String)]) -> Result<Value, String> {
        self.rt.block_on(async {
            let resp = self.client.get(format!("{}{path}", self.url)).query(params).send().await.map_err(|e| e.to_string())?;
            let body: Value = resp.json().await.map_err(|e| e.to_string())?;
            if body["status"] == "success" {
                Ok(body["data"].clone())
            } else {
                Err(format!("{}: {}", body["errorType"], body["error"]))
            }
        })
    }

    fn instant(&self, expr: &str) -> Result<Vec<Value>, String> {
        let data = self.get("/api/v1/query", &[("query", expr.to_string()), ("time", unix_now().to_string())])?;
        Ok(data["result"].as_array().cloned().unwrap_or_default())
    }
}

fn labels_of(series: &Value) -> BTreeMap<String, String> {
    series["metric"].as_object().into_iter().flatten().map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string())).collect()
}

/// The sample names pulsewatch exposes, as Prometheus stores them: every family of the
/// OpenMetrics exposition (what Prometheus asks for) expanded by its type, plus every sample seen.
fn exported_names(openmetrics: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (family, kind) = rest.split_once(' ').unwrap();
            let suffixes: &[&str] = match kind {
                "counter" => &["_total", "_created"],
                "histogram" => &["_bucket", "_sum", "_count", "_created"],
                "gaugehistogram" => &["_bucket", "_gsum", "_gcount"],
                "summary" => &["", "_sum", "_count", "_created"],
                "info" => &["_info"],
                _ => &[""],
            };
            names.extend(suffixes.iter().map(|s| format!("{family}{s}")));
        } else if !line.starts_with('#') && !line.is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            names.insert(line[..end].to_string());
        }
    }
    names
}

/// NAB `art_daily_jumpsup` cut just after its level jump (row 2988): scores above 1 (see e2e.rs).
const JUMP_CUTS: [usize; 6] = [2989, 2990, 2991, 2992, 2993, 2994];
const NOISE_CUTS: [usize; 3] = [3000, 3100, 3200];

#[test]
fn dashboards_work_against_pulsewatch_and_prometheus() {
    let dashboards = load_dashboards().unwrap_or_else(|errs| panic!("{}", errs.join("\n")));

    // pulsewatch scoring backfilled series, with forecasts, so every output family has series
    let jumps = nab_values("artificialWithAnomaly/art_daily_jumpsup.csv");
    let noise = nab_values("artificialNoAnomaly/art_daily_small_noise.csv");
    let cut = |dataset: &str, values: &[f64], at: usize| Backfill {
        labels: vec![("dataset".into(), dataset.into()), ("cut".into(), at.to_string())],
        values: values[..=at].to_vec(),
    };
    let mut series: Vec<Backfill> = JUMP_CUTS.iter().map(|&at| cut("jumpsup", &jumps, at)).collect();
    series.extend(NOISE_CUTS.iter().map(|&at| cut("small_noise", &noise, at)));
    let n = series.len();
    let mut prom = Prometheus::start(&series, unix_now());
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("rules")).unwrap();
    let mut rules = String::from("groups:\n  - name: nab\n    interval: 2s\n    rules:\n");
    for (name, dataset) in [("jumpsup", "jumpsup"), ("small_noise", "small_noise")] {
        rules.push_str(&format!(
            "      - forecast: {name}\n        expr: nab_value{{dataset=\"{dataset}\"}}\n        refit: 1h\n        model: {{ type: mstl, seasonality: [1d] }}\n        horizons: [1h, 30m]\n        labels: {{ team: test }}\n"
        ));
    }
    std::fs::write(dir.path().join("rules/nab.yaml"), rules).unwrap();
    let config =
        format!("global: {{ step: 5m, history: 10d }}\nsource: {{ url: '{}', timeout: 5s, retries: 2 }}\nrule_files: ['rules/*.yaml']\n", prom.url());
    let pw = Pulsewatch::start(dir.path(), &config, &[]);
    pw.wait_metrics(Duration::from_secs(240), "forecasts of every series", |s| find(s, "pulsewatch_forecast", &[]).len() == 2 * n);

    // The names pulsewatch exports, from its own exposition.
    let (status, body) = request("GET", &format!("{}/metrics", pw.url()), &[("Accept", "application/openmetrics-text; version=1.0.0")]).unwrap();
    assert_eq!(status, 200);
    let exported = exported_names(&body);
    for family in
        ["pulsewatch_anomaly_score", "pulsewatch_forecast_upper", "pulsewatch_rule_evaluation_duration_seconds_bucket", "process_cpu_seconds_total"]
    {
        assert!(exported.contains(family), "{family} not derived from /metrics: {exported:?}");
    }

    // Prometheus scrapes pulsewatch every second and evaluates the shipped alerting rules.
    let alert_rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules/pulsewatch.rules.yml");
    let prom_config = format!(
        "global: {{ scrape_interval: 1s, evaluation_interval: 1s }}\nrule_files: ['{}']\nscrape_configs:\n  - job_name: pulsewatch\n    honor_labels: true\n    static_configs: [{{ targets: ['127.0.0.1:{}'] }}]\n",
        alert_rules.display(),
        pw.port
    );
    std::fs::write(prom.dir.path().join("prometheus.yml"), prom_config).unwrap();
    prom.stop();
    prom.spawn();
    let api = PromApi::new(prom.url());
    let began = Instant::now();
    let ready = [
        format!("count(pulsewatch_forecast) == {}", 2 * n),
        "count_over_time(pulsewatch_build_info[1m]) >= 8".to_string(),
        "ALERTS{alertname=\"PulsewatchAnomaly\"}".to_string(),
    ];
    while !ready.iter().all(|q| api.instant(q).is_ok_and(|r| !r.is_empty())) {
        assert!(began.elapsed() < Duration::from_secs(90), "Prometheus never had {ready:?}; pulsewatch log:\n{}", pw.log());
        std::thread::sleep(Duration::from_millis(500));
    }
    let in_prometheus: BTreeSet<String> =
        api.get("/api/v1/label/__name__/values", &[]).unwrap().as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect();
    let known = |name: &str| (exported.contains(name) || prometheus_own_metric(name)) && in_prometheus.contains(name);

    let mut errs = Vec::new();
    for d in &dashboards {
        errs.extend(check_metric_names(&d.file, &d.json, &known, &in_prometheus));
        errs.extend(check_live(&api, &d.json).into_iter().map(|e| format!("{}: {e}", d.file)));
    }
    assert!(errs.is_empty(), "{} problems:\n{}\npulsewatch /metrics:\n{body}", errs.len(), errs.join("\n"));
}

/// Resolves the dashboard's variables as Grafana does, then runs every query with those values.
fn check_live(api: &PromApi, d: &Value) -> Vec<String> {
    let vars = variables(d);
    let mut values: BTreeMap<String, Current> = BTreeMap::new();
    let mut errs = Vec::new();
    let now = unix_now();
    for v in &vars {
        let options: Result<Vec<String>, String> = match v.kind.as_str() {
            "datasource" => Ok(vec!["prometheus".into()]),
            "query" => parse_var_query(&v.query).and_then(|q| match q {
                VarQuery::LabelValues { selector, label } => {
                    let mut params = vec![("start", (now - 3600).to_string()), ("end", now.to_string())];
                    if let Some(s) = &selector {
                        params.push(("match[]", substitute(s, &vars, &values)?));
                    }
                    let got = api.get(&format!("/api/v1/label/{label}/values"), &params)?;
                    let mut got: Vec<String> = got.as_array().into_iter().flatten().filter_map(|v| v.as_str().map(str::to_string)).collect();
                    if got.is_empty() {
                        let Some(s) = &selector else { return Err(format!("label_values: no series has label {label}")) };
                        let carried = api.get("/api/v1/labels", &[("match[]", substitute(s, &vars, &values)?)])?;
                        return Err(format!("label_values: {s} has no label {label} in Prometheus; its labels are {carried}"));
                    }
                    got.sort();
                    Ok(got)
                }
                VarQuery::QueryResult(expr) => {
                    let expr = substitute(&expr, &vars, &values)?;
                    let mut out = Vec::new();
                    for s in api.instant(&expr)? {
                        let text = query_result_text(&labels_of(&s), s["value"][1].as_str().unwrap_or(""), s["value"][0].as_f64().unwrap_or(0.0));
                        if let Some(value) = apply_regex(&v.regex, &text)? {
                            if !out.contains(&value) {
                                out.push(value);
                            }
                        }
                    }
                    Ok(out)
                }
            }),
            other => Err(format!("variable type {other} is not one these checks resolve")),
        };
        match options {
            Ok(options) if !options.is_empty() => {
                let cur =
                    if v.include_all { Current { values: options, all: true } } else { Current { values: vec![options[0].clone()], all: false } };
                values.insert(v.name.clone(), cur);
            }
            Ok(_) => errs.push(format!("variable ${} has no values", v.name)),
            Err(e) => errs.push(format!("variable ${}: {e}", v.name)),
        }
    }
    // Queries that use a variable that did not resolve report it as "has no value".
    for t in targets(d).into_iter().filter(|t| !t.hidden) {
        let place = panel_name(t.panel);
        let expr = match substitute(&t.expr, &vars, &values) {
            Ok(e) => e,
            Err(e) => {
                errs.push(format!("{place}: {e}"));
                continue;
            }
        };
        // Range queries reach into the future: the forecast panel draws `offset $horizon` there.
        let answer = if t.instant {
            api.instant(&expr)
        } else {
            let params = [("query", expr.clone()), ("start", (now - 600).to_string()), ("end", (now + 7200).to_string()), ("step", "15".to_string())];
            api.get("/api/v1/query_range", &params).map(|d| d["result"].as_array().cloned().unwrap_or_default())
        };
        let result = match answer {
            Ok(r) => r,
            Err(e) => {
                errs.push(format!("{place}: `{expr}` failed: {e}"));
                continue;
            }
        };
        if result.is_empty() {
            errs.push(format!("{place}: `{expr}` returned no data"));
        }
        // every label the legend names is on every series
        for label in t.legend.split("{{").skip(1).filter_map(|s| s.split_once("}}")).map(|(l, _)| l.trim()) {
            if let Some(s) = result.iter().find(|s| !labels_of(s).contains_key(label)) {
                errs.push(format!("{place}: legend {:?} names label {label}, which `{expr}` does not have ({})", t.legend, s["metric"]));
            }
        }
    }
    errs
}

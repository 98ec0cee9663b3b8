//! Grafana's template variables, as far as these dashboards use them: the reference syntaxes,
//! the formats a value is written in, the two Prometheus variable queries (`label_values`,
//! `query_result`) and a variable's regex, and substitution with Grafana's built-ins.

use std::collections::BTreeMap;

use promql_parser::label::MatchOp;
use promql_parser::parser::Expr;

use super::dashboard::Variable;

/// Grafana's global variables, with the values the checks substitute. `$__rate_interval` is
/// `max(4 × scrape interval, $__interval + scrape interval)` in Grafana; a minute suits the test
/// Prometheus, which scrapes every second.
pub(crate) const BUILTINS: [(&str, &str); 9] = [
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
pub(crate) const LINK_BUILTINS: [&str; 6] = ["__data", "__field", "__series", "__value", "__cell", "__url_time_range"];

/// A variable reference: `$name`, `${name}`, `${name.path}`, `${name:format}`, `[[name]]` or
/// `[[name:format]]` (the syntaxes of Grafana's template service).
#[derive(Debug)]
pub(crate) struct VarRef {
    pub(crate) name: String,
    pub(crate) format: Option<String>,
    pub(crate) range: std::ops::Range<usize>,
}

pub(crate) fn is_word(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

pub(crate) fn var_refs(text: &str) -> Vec<VarRef> {
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
                    out.push(VarRef {
                        name: text[i + 2..end].to_string(),
                        format: rest.strip_prefix(':').map(str::to_string),
                        range: i..close + 2,
                    });
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
pub(crate) fn interpolate(text: &str, value: &dyn Fn(&VarRef) -> Result<String, String>) -> Result<String, String> {
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
pub(crate) struct Current {
    pub(crate) values: Vec<String>,
    pub(crate) all: bool,
}

/// Grafana's Prometheus escaping of a value inside a regex matcher (`prometheusSpecialRegexEscape`).
pub(crate) fn regex_escape(v: &str) -> String {
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
pub(crate) fn render(var: &Variable, cur: &Current, format: Option<&str>) -> Result<String, String> {
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
        None if !var.multi && !var.include_all => {
            cur.values.first().cloned().unwrap_or_default().replace('\\', "\\\\").replace('\'', "\\\\'")
        }
        None if cur.values.len() == 1 => regex_escape(&cur.values[0]),
        None => alternation(),
    })
}

/// The function a Prometheus query variable calls (Grafana's `metric_find_query.ts`).
#[derive(Debug, PartialEq)]
pub(crate) enum VarQuery {
    /// `label_values(label)` or `label_values(selector, label)`.
    LabelValues { selector: Option<String>, label: String },
    /// `query_result(expr)`: one value per series of the instant query.
    QueryResult(String),
}

pub(crate) fn parse_var_query(q: &str) -> Result<VarQuery, String> {
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
pub(crate) fn apply_regex(re: &str, text: &str) -> Result<Option<String>, String> {
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
pub(crate) fn query_result_text(metric: &BTreeMap<String, String>, value: &str, ts: f64) -> String {
    let name = metric.get("__name__").cloned().unwrap_or_default();
    let labels: Vec<String> = metric.iter().filter(|(k, _)| *k != "__name__").map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    format!("{name}{{{}}} {value} {}", labels.join(","), (ts * 1000.0) as i64)
}

/// Values for checks without a data source: "1h" is both a label value and a PromQL duration, so
/// it fits wherever a variable may stand; a `query_result` variable gets what its regex makes of
/// a typical series.
pub(crate) fn static_values(vars: &[Variable]) -> BTreeMap<String, Current> {
    let sample = query_result_text(
        &BTreeMap::from([
            ("__name__".into(), "pulsewatch_anomaly_score".into()),
            ("instance".into(), "1h".into()),
            ("rule".into(), "1h".into()),
        ]),
        "1.5",
        1.7e9,
    );
    vars.iter()
        .map(|v| {
            let value = match v.kind.as_str() {
                "datasource" => "prometheus".to_string(),
                "query" if v.query.trim_start().starts_with("query_result") => {
                    apply_regex(&v.regex, &sample).ok().flatten().unwrap_or_default()
                }
                "custom" | "interval" => v.query.split(',').next().unwrap_or("").trim().to_string(),
                "query" => "1h".to_string(),
                _ => v.query.clone(),
            };
            (v.name.clone(), Current { values: vec![value], all: v.include_all })
        })
        .collect()
}

/// Substitutes the variables of `vars` (with values `values`) and Grafana's built-ins.
pub(crate) fn substitute(text: &str, vars: &[Variable], values: &BTreeMap<String, Current>) -> Result<String, String> {
    interpolate(text, &|r| {
        if let Some((_, v)) = BUILTINS.iter().find(|(n, _)| *n == r.name) {
            return Ok(v.to_string());
        }
        let var = vars.iter().find(|v| v.name == r.name).ok_or_else(|| format!("${} is not defined", r.name))?;
        let cur = values
            .get(&r.name)
            .ok_or_else(|| format!("${} has no value (it did not resolve, or is defined after the variable using it)", r.name))?;
        render(var, cur, r.format.as_deref())
    })
}

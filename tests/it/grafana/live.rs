//! Dashboards against a live Prometheus: every variable resolved the way Grafana resolves it
//! (`label_values` through the label values API, `query_result` through an instant query and the
//! variable's regex), then every panel query run with those values; and the metric names a
//! pulsewatch `/metrics` exposition stands for once Prometheus stores it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::Value;

use super::dashboard::{panel_name, targets, variables};
use super::variables::{apply_regex, parse_var_query, query_result_text, substitute, Current, VarQuery};
use crate::harness::unix_now;

/// A small Prometheus HTTP API client (blocking: the tests run on plain threads).
pub(crate) struct PromApi {
    url: String,
    rt: tokio::runtime::Runtime,
    client: reqwest::Client,
}

impl PromApi {
    pub(crate) fn new(url: String) -> Self {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        Self { url, rt, client: reqwest::Client::builder().timeout(Duration::from_secs(20)).build().unwrap() }
    }

    /// GET `path` with `params`; the `data` of a successful answer, else the error.
    pub(crate) fn get(&self, path: &str, params: &[(&str, String)]) -> Result<Value, String> {
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

    pub(crate) fn instant(&self, expr: &str) -> Result<Vec<Value>, String> {
        let data = self.get("/api/v1/query", &[("query", expr.to_string()), ("time", unix_now().to_string())])?;
        Ok(data["result"].as_array().cloned().unwrap_or_default())
    }
}

pub(crate) fn labels_of(series: &Value) -> BTreeMap<String, String> {
    series["metric"].as_object().into_iter().flatten().map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string())).collect()
}

/// The sample names pulsewatch exposes, as Prometheus stores them: every family of the
/// OpenMetrics exposition (what Prometheus asks for) expanded by its type, plus every sample seen.
pub(crate) fn exported_names(openmetrics: &str) -> BTreeSet<String> {
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

/// Resolves the dashboard's variables as Grafana does, then runs every query with those values.
pub(crate) fn check_live(api: &PromApi, d: &Value) -> Vec<String> {
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
                    let mut got: Vec<String> =
                        got.as_array().into_iter().flatten().filter_map(|v| v.as_str().map(str::to_string)).collect();
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
                        let text =
                            query_result_text(&labels_of(&s), s["value"][1].as_str().unwrap_or(""), s["value"][0].as_f64().unwrap_or(0.0));
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
                let cur = if v.include_all {
                    Current { values: options, all: true }
                } else {
                    Current { values: vec![options[0].clone()], all: false }
                };
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
            let params = [
                ("query", expr.clone()),
                ("start", (now - 600).to_string()),
                ("end", (now + 7200).to_string()),
                ("step", "15".to_string()),
            ];
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

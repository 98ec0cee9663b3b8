//! Reading dashboards: the JSON files, their panels (rows' nested ones included), variables and
//! panel queries, as plain structs over `serde_json::Value`.

use std::path::{Path, PathBuf};

use serde_json::Value;

pub(crate) fn grafana_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("grafana")
}

pub(crate) struct Dashboard {
    pub(crate) file: String,
    pub(crate) json: Value,
}

/// Every `grafana/dashboards/*.json`, or the reasons they do not parse.
pub(crate) fn load_dashboards() -> Result<Vec<Dashboard>, Vec<String>> {
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

pub(crate) fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// Panels in layout order, rows' nested panels (collapsed rows keep theirs) included.
pub(crate) fn panels(d: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().into_iter().flatten() {
        out.push(p);
        out.extend(p["panels"].as_array().into_iter().flatten());
    }
    out
}

#[derive(Clone, Debug)]
pub(crate) struct Variable {
    pub(crate) name: String,
    pub(crate) kind: String,
    /// The query (`label_values(...)`, `query_result(...)`), custom values, textbox default...
    pub(crate) query: String,
    pub(crate) regex: String,
    pub(crate) multi: bool,
    pub(crate) include_all: bool,
    pub(crate) all_value: Option<String>,
    pub(crate) datasource: Value,
}

pub(crate) fn variables(d: &Value) -> Vec<Variable> {
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
pub(crate) struct Target<'a> {
    pub(crate) panel: &'a Value,
    pub(crate) expr: String,
    pub(crate) instant: bool,
    pub(crate) legend: String,
    pub(crate) hidden: bool,
}

pub(crate) fn targets(d: &Value) -> Vec<Target<'_>> {
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

pub(crate) fn panel_name(p: &Value) -> String {
    format!("panel {} {:?}", p["id"], str_of(p, "title"))
}

//! Static checks of dashboards (no Prometheus needed): uid, title and schema version; one
//! `datasource` variable that every panel, target and query variable uses; only defined (and only
//! used) variables; PromQL that parses once the variables are substituted; panel layout; and
//! fill-between and by-name overrides that point at series the panel draws.

use std::collections::{BTreeMap, BTreeSet};

use promql_parser::parser::Expr;
use serde_json::Value;

use super::dashboard::{panel_name, panels, str_of, variables, Dashboard};
use super::variables::{apply_regex, is_word, parse_var_query, static_values, substitute, var_refs, VarQuery, BUILTINS, LINK_BUILTINS};

/// Every panel, target and query variable names its data source like this.
pub(crate) const DATASOURCE_UID: &str = "${datasource}";

/// Panel types the dashboards may use (core panels of Grafana 10 and 11).
pub(crate) const PANEL_TYPES: [&str; 4] = ["row", "stat", "table", "timeseries"];

pub(crate) fn datasource_is_variable(ds: &Value) -> bool {
    str_of(ds, "uid") == DATASOURCE_UID && matches!(ds.get("type").and_then(Value::as_str), None | Some("prometheus"))
}

/// Every string of the dashboard with its JSON path, skipping variable regexes (where `$` is an
/// anchor).
pub(crate) fn strings<'a>(v: &'a Value, path: String, out: &mut Vec<(String, &'a str)>) {
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

pub(crate) fn check_dashboard(file: &str, d: &Value) -> Vec<String> {
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
        Some(v) => {
            err(format!("data source variable ${} must be named `datasource` and have query `prometheus`, has {:?}", v.name, v.query))
        }
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
                        match substitute(&expr, &vars, &earlier)
                            .and_then(|e| promql_parser::parser::parse(&e).map_err(|err| format!("{e}: {err}")))
                        {
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

pub(crate) fn q_kind(q: &str) -> &str {
    q.trim_start().split('(').next().unwrap_or("")
}

/// Static checks over all dashboards, cross-dashboard uniqueness included.
pub(crate) fn check_dashboards(dashboards: &[Dashboard]) -> Vec<String> {
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

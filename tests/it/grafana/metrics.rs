//! The metric names a dashboard's PromQL reads: every selector of every panel query and query
//! variable, checked against what pulsewatch exports (or Prometheus writes itself).

use std::collections::BTreeSet;

use promql_parser::label::MatchOp;
use promql_parser::parser::{Expr, VectorSelector};
use serde_json::Value;

use super::dashboard::{panel_name, targets, variables};
use super::variables::{parse_var_query, static_values, substitute, VarQuery};

/// Metrics a dashboard may use beside pulsewatch's own: what Prometheus writes itself for every
/// scrape (`up`, `scrape_*`) and for alerting rules (`ALERTS`, `ALERTS_FOR_STATE`).
pub(crate) fn prometheus_own_metric(name: &str) -> bool {
    matches!(name, "up" | "ALERTS" | "ALERTS_FOR_STATE") || name.starts_with("scrape_")
}

pub(crate) fn selectors<'a>(e: &'a Expr, out: &mut Vec<&'a VectorSelector>) {
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
pub(crate) fn metric_names(e: &Expr, known: &dyn Fn(&str) -> bool, all_known: &BTreeSet<String>) -> Result<BTreeSet<String>, String> {
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
pub(crate) fn expressions(d: &Value) -> Vec<(String, String)> {
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
pub(crate) fn check_metric_names(file: &str, d: &Value, known: &dyn Fn(&str) -> bool, all_known: &BTreeSet<String>) -> Vec<String> {
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

//! A checker for the Grafana dashboards under `grafana/dashboards`, which `dashboards.rs` runs:
//! Grafana's variable interpreter (as far as these dashboards use it) and the checks, static and
//! against a live Prometheus.
//!
//! - `dashboard`: reading the JSON: panels, variables, panel queries.
//! - `variables`: Grafana's variable syntaxes, formats, variable queries and regexes; substitution.
//! - `metrics`: the metric names each PromQL expression reads, against the known ones.
//! - `check`: the static checks, one dashboard and all of them.
//! - `live`: variables resolved and every panel query run against a Prometheus.

mod check;
mod dashboard;
mod live;
mod metrics;
mod variables;

pub(crate) use check::{check_dashboard, check_dashboards};
pub(crate) use dashboard::{grafana_dir, load_dashboards, str_of, Dashboard};
pub(crate) use live::{check_live, exported_names, PromApi};
pub(crate) use metrics::{check_metric_names, prometheus_own_metric};
pub(crate) use variables::{apply_regex, parse_var_query, query_result_text, var_refs, VarQuery};

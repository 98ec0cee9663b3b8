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
//!
//! The checker and Grafana's variable interpreter are in `grafana/`; the tests here run it, and
//! check that it fails on real mistakes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::grafana::{
    apply_regex, check_dashboard, check_dashboards, check_live, check_metric_names, exported_names, grafana_dir, load_dashboards,
    parse_var_query, prometheus_own_metric, query_result_text, str_of, var_refs, Dashboard, PromApi, VarQuery,
};
use crate::harness::*;

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
        ["pulsewatch_anomaly_score", "pulsewatch_yhat_lower", "pulsewatch_yhat_upper", "pulsewatch_rule_evaluations_total"]
            .map(String::from)
            .into();
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
    let config = format!(
        "global: {{ step: 5m, history: 10d }}\nsource: {{ url: '{}', timeout: 5s, retries: 2 }}\nrule_files: ['rules/*.yaml']\n",
        prom.url()
    );
    let pw = Pulsewatch::start(dir.path(), &config, &[]);
    pw.wait_metrics(Duration::from_secs(240), "forecasts of every series", |s| find(s, "pulsewatch_forecast", &[]).len() == 2 * n);

    // The names pulsewatch exports, from its own exposition.
    let (status, body) =
        request("GET", &format!("{}/metrics", pw.url()), &[("Accept", "application/openmetrics-text; version=1.0.0")]).unwrap();
    assert_eq!(status, 200);
    let exported = exported_names(&body);
    for family in [
        "pulsewatch_anomaly_score",
        "pulsewatch_forecast_upper",
        "pulsewatch_rule_evaluation_duration_seconds_bucket",
        "process_cpu_seconds_total",
    ] {
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
    let in_prometheus: BTreeSet<String> = api
        .get("/api/v1/label/__name__/values", &[])
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let known = |name: &str| (exported.contains(name) || prometheus_own_metric(name)) && in_prometheus.contains(name);

    let mut errs = Vec::new();
    for d in &dashboards {
        errs.extend(check_metric_names(&d.file, &d.json, &known, &in_prometheus));
        errs.extend(check_live(&api, &d.json).into_iter().map(|e| format!("{}: {e}", d.file)));
    }
    assert!(errs.is_empty(), "{} problems:\n{}\npulsewatch /metrics:\n{body}", errs.len(), errs.join("\n"));
}

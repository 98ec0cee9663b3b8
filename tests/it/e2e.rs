//! End to end against a real Prometheus backfilled with NAB data.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::harness::*;

/// `art_daily_jumpsup`: the level jumps from ~70 to ~125 at row 2988 (2014-04-11 09:00), inside
/// the labelled window (2014-04-10 16:15 – 2014-04-12 01:45, rows 2787–3189). Each cut is one
/// series ending at that row; the first evaluation scores the row before it (see
/// `end_away_from_grid_boundary`), so rows 2987 (before the jump) to 2994 are scored.
const JUMP_CUTS: [usize; 8] = [2988, 2989, 2990, 2991, 2992, 2993, 2994, 2995];

fn cut(dataset: &str, values: &[f64], at: usize, extra: &[(&str, &str)]) -> Backfill {
    let mut labels = vec![("dataset".to_string(), dataset.to_string()), ("cut".to_string(), at.to_string())];
    labels.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Backfill { labels, values: values[..=at].to_vec() }
}

fn config(prom: &Prometheus, extra_global: &str) -> String {
    format!("global: {{ step: 5m, history: 10d {extra_global} }}\nsource: {{ url: '{}', timeout: 5s, retries: 1 }}\nrule_files: ['rules/*.yaml']\n", prom.url())
}

fn rules(interval: &str, names: &[(&str, &str)]) -> String {
    let mut out = format!("groups:\n  - name: nab\n    interval: {interval}\n    rules:\n");
    for (name, dataset) in names {
        out.push_str(&format!(
            "      - forecast: {name}\n        expr: nab_value{{dataset=\"{dataset}\"}}\n        refit: 1h\n        model: {{ type: mstl, seasonality: [1d] }}\n        band: 0.95\n        horizons: [1h]\n        labels: {{ team: test }}\n"
        ));
    }
    out
}

#[test]
fn scores_nab_series_against_real_prometheus() {
    let jumps = nab_values("artificialWithAnomaly/art_daily_jumpsup.csv");
    let noise = nab_values("artificialNoAnomaly/art_daily_small_noise.csv");
    let mut series: Vec<Backfill> = JUMP_CUTS.iter().map(|&at| cut("jumpsup", &jumps, at, &[])).collect();
    let noise_cuts: Vec<usize> = (0..40).map(|i| 3000 + i * 25).collect();
    series.extend(noise_cuts.iter().map(|&at| cut("small_noise", &noise, at, &[("rule", "input")])));
    let prom = Prometheus::start(&series, end_away_from_grid_boundary());

    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("rules")).unwrap();
    std::fs::write(dir.path().join("rules/nab.yaml"), rules("3s", &[("jumpsup", "jumpsup"), ("small_noise", "small_noise")])).unwrap();
    let pw = Pulsewatch::start(dir.path(), &config(&prom, ""), &[]);
    let samples = pw.wait_metrics(Duration::from_secs(240), "scores of all 48 series", |s| find(s, "pulsewatch_anomaly_score", &[]).len() == 48);

    // labels: input labels kept, __name__ dropped, ours added, collisions renamed
    let noise_scores = find(&samples, "pulsewatch_anomaly_score", &[("rule", "small_noise")]);
    assert_eq!(noise_scores.len(), 40);
    for s in &noise_scores {
        let keys: Vec<&str> = s.labels.keys().map(String::as_str).collect();
        assert_eq!(keys, vec!["cut", "dataset", "exported_rule", "rule", "team"], "{s:?}");
        assert_eq!(s.labels["exported_rule"], "input");
        assert_eq!(s.labels["team"], "test");
    }
    for name in ["pulsewatch_y", "pulsewatch_yhat", "pulsewatch_yhat_lower", "pulsewatch_yhat_upper"] {
        assert_eq!(find(&samples, name, &[]).len(), 48, "{name}");
    }
    let forecasts = find(&samples, "pulsewatch_forecast", &[("horizon", "1h")]);
    assert_eq!(forecasts.len(), 48);
    // band is ordered around the prediction
    for s in find(&samples, "pulsewatch_yhat", &[]) {
        let labels: Vec<(&str, &str)> = s.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let lower = find(&samples, "pulsewatch_yhat_lower", &labels)[0].value;
        let upper = find(&samples, "pulsewatch_yhat_upper", &labels)[0].value;
        assert!(lower <= s.value && s.value <= upper, "{lower} <= {} <= {upper}", s.value);
    }

    // the jump scores above 1 inside its labelled window
    let jump_scores: Vec<f64> = find(&samples, "pulsewatch_anomaly_score", &[("rule", "jumpsup")]).iter().map(|s| s.value).collect();
    assert!(jump_scores.iter().filter(|&&v| v > 1.0).count() >= 3, "jump scores {jump_scores:?}");
    // a clean series stays below 1 for most points (at band 0.95, ~95% if the band is calibrated)
    let calm = noise_scores.iter().filter(|s| s.value < 1.0).count();
    let values: Vec<f64> = noise_scores.iter().map(|s| s.value).collect();
    assert!(calm >= 34, "only {calm}/40 below 1: {values:?}");

    // self-monitoring
    let fits: f64 = find(&samples, "pulsewatch_model_fits_total", &[]).iter().map(|s| s.value).sum();
    assert!(fits >= 48.0, "fits {fits}");
    assert_eq!(find(&samples, "pulsewatch_rule_series", &[("rule", "jumpsup")])[0].value, 8.0);

    // promtool accepts the exposition
    let body = pw.metrics();
    let mut child = Command::new(binary("PROMTOOL_BIN", "promtool"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), body.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "promtool check metrics: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));

    // /api/v1/rules
    let (status, api) = get(&format!("{}/api/v1/rules", pw.url())).unwrap();
    assert_eq!(status, 200);
    let api: serde_json::Value = serde_json::from_str(&api).unwrap();
    let rules = &api["data"]["groups"][0]["rules"];
    assert_eq!(rules[0]["name"], "jumpsup");
    assert_eq!(rules[0]["health"], "ok");
    assert_eq!(rules[1]["series"], 40);
}

#[test]
fn outage_removes_stale_outputs_and_recovers() {
    let noise = nab_values("artificialNoAnomaly/art_daily_small_noise.csv");
    let mut prom = Prometheus::start(&[cut("small_noise", &noise, 3500, &[])], unix_now());
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("rules")).unwrap();
    std::fs::write(dir.path().join("rules/nab.yaml"), rules("1s", &[("noise", "small_noise")])).unwrap();
    let mut pw = Pulsewatch::start(dir.path(), &config(&prom, ", staleness: 6s"), &[]);
    pw.wait_metrics(Duration::from_secs(120), "the first score", |s| find(s, "pulsewatch_anomaly_score", &[]).len() == 1);

    prom.stop();
    let samples = pw.wait_metrics(Duration::from_secs(30), "outputs removed after the staleness period", |s| {
        find(s, "pulsewatch_anomaly_score", &[]).is_empty() && find(s, "pulsewatch_yhat", &[]).is_empty()
    });
    assert!(pw.is_running());
    let failures = find(&samples, "pulsewatch_rule_evaluation_failures_total", &[("rule", "noise")])[0].value;
    assert!(failures >= 1.0);
    assert!(find(&samples, "pulsewatch_query_failures_total", &[])[0].value >= 1.0);
    let (_, api) = get(&format!("{}/api/v1/rules", pw.url())).unwrap();
    let api: serde_json::Value = serde_json::from_str(&api).unwrap();
    let rule = &api["data"]["groups"][0]["rules"][0];
    assert_eq!(rule["health"], "err");
    assert!(rule["lastError"].as_str().unwrap().contains("connect"), "{rule}");

    prom.spawn();
    pw.wait_metrics(Duration::from_secs(60), "outputs back after recovery", |s| find(s, "pulsewatch_anomaly_score", &[]).len() == 1);
    assert_eq!(pw.signal("TERM").map(|s| s.success()), Some(true), "graceful exit on SIGTERM");
}

#[test]
fn broken_reload_keeps_old_rules_and_unchanged_rules_keep_models() {
    let noise = nab_values("artificialNoAnomaly/art_daily_small_noise.csv");
    let prom = Prometheus::start(&[cut("small_noise", &noise, 3500, &[])], unix_now());
    let dir = tempfile::tempdir().unwrap();
    let rules_dir = dir.path().join("rules");
    std::fs::create_dir(&rules_dir).unwrap();
    std::fs::write(rules_dir.join("a.yaml"), rules("1s", &[("noise", "small_noise")])).unwrap();
    let mut pw = Pulsewatch::start(dir.path(), &config(&prom, ""), &["--web.enable-lifecycle"]);
    let value = |s: &[Sample], name: &str, labels: &[(&str, &str)]| find(s, name, labels).first().map(|s| s.value);
    let before = pw.wait_metrics(Duration::from_secs(120), "the first score", |s| find(s, "pulsewatch_anomaly_score", &[]).len() == 1);
    let fits = value(&before, "pulsewatch_model_fits_total", &[("rule", "noise")]).unwrap();

    // a broken file: the reload fails, the old rule keeps running and serving
    std::fs::write(rules_dir.join("b.yaml"), "groups:\n  - name: other\n    rules:\n      - forecast: x\n        expr: 'rate(up[5m]'\n").unwrap();
    let after = pw.wait_metrics(Duration::from_secs(20), "failed reload", |s| value(s, "pulsewatch_config_last_reload_successful", &[]) == Some(0.0));
    assert_eq!(find(&after, "pulsewatch_anomaly_score", &[("rule", "noise")]).len(), 1);
    let evals = value(&after, "pulsewatch_rule_evaluations_total", &[("rule", "noise")]).unwrap();
    pw.wait_metrics(Duration::from_secs(20), "evaluations continuing", |s| value(s, "pulsewatch_rule_evaluations_total", &[("rule", "noise")]) > Some(evals));
    let (status, body) = request("POST", &format!("{}/-/reload", pw.url()), &[]).unwrap();
    assert_eq!(status, 500);
    assert!(body.contains("b.yaml:4:") && body.contains("could not parse expression"), "{body}");

    // fixed, picked up by SIGHUP as well as by the watch: the new group starts, `noise` keeps its models
    std::fs::write(rules_dir.join("b.yaml"), rules("1s", &[("other", "small_noise")]).replace("name: nab", "name: other")).unwrap();
    Command::new("kill").args(["-HUP", &pw.pid().to_string()]).status().unwrap();
    let fixed = pw.wait_metrics(Duration::from_secs(120), "the new rule scoring", |s| {
        value(s, "pulsewatch_config_last_reload_successful", &[]) == Some(1.0) && find(s, "pulsewatch_anomaly_score", &[("rule", "other")]).len() == 1
    });
    assert_eq!(value(&fixed, "pulsewatch_model_fits_total", &[("rule", "noise")]), Some(fits), "unchanged rule was refitted");
    assert!(pw.is_running());
    assert_eq!(pw.signal("INT").map(|s| s.success()), Some(true));
}

/// A "Prometheus" that answers every request with 200 and an HTML page.
fn garbage_server() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut stream = stream;
            let mut buf = [0u8; 4096];
            let _ = std::io::Read::read(&mut stream, &mut buf);
            let body = "<html>maintenance</html>";
            let _ = std::io::Write::write_all(&mut stream, format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len()).as_bytes());
        }
    });
    port
}

#[test]
fn garbage_answers_fail_the_rule_not_the_process() {
    let port = garbage_server();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("rules")).unwrap();
    std::fs::write(dir.path().join("rules/nab.yaml"), rules("1s", &[("noise", "small_noise")])).unwrap();
    let config = format!("global: {{ step: 5m, history: 10d }}\nsource: {{ url: 'http://127.0.0.1:{port}', timeout: 2s, retries: 0 }}\nrule_files: ['rules/*.yaml']\n");
    let mut pw = Pulsewatch::start(dir.path(), &config, &[]);
    let samples = pw.wait_metrics(Duration::from_secs(30), "failed evaluations", |s| {
        find(s, "pulsewatch_rule_evaluation_failures_total", &[("rule", "noise")]).first().is_some_and(|s| s.value >= 2.0)
    });
    assert!(find(&samples, "pulsewatch_anomaly_score", &[]).is_empty());
    assert!(pw.is_running());
    let (_, api) = get(&format!("{}/api/v1/rules", pw.url())).unwrap();
    let api: serde_json::Value = serde_json::from_str(&api).unwrap();
    let rule = &api["data"]["groups"][0]["rules"][0];
    assert_eq!(rule["health"], "err");
    assert!(rule["lastError"].as_str().unwrap().starts_with("query: decoding the answer"), "{rule}");
}

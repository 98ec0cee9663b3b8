//! End to end against a real Prometheus backfilled with NAB data.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::harness::*;

/// `art_daily_jumpsup`: the level jumps from ~70 to ~125 at row 2988 (2014-04-11 09:00), inside
/// the labelled window (2014-04-10 16:15 – 2014-04-12 01:45, rows 2787–3189). Each cut is one
/// series ending at that row; the first evaluation scores the row before it (see
/// `end_away_from_grid_boundary`),
/// so rows 2986 and 2987 (before the jump) to 2994 are scored.
const JUMP_CUTS: [usize; 9] = [2987, 2988, 2989, 2990, 2991, 2992, 2993, 2994, 2995];

/// The cuts whose scored row is on the jump (row 2988 on).
fn on_the_jump(cut: usize) -> bool {
    cut > 2988
}

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

/// The jump series under the three guards of the README: `direction: both` (as the `jumpsup`
/// rule), `direction: below`, and a `min_deviation` beyond the jump's size (~55; the deviations
/// from the seasonal naive forecast on the jump are 45 to 62). seasonal_naive: cheap, and what it
/// predicts is easy to check by hand (the value a day before).
const GUARD_MIN_DEVIATION: f64 = 80.0;

fn guard_rules() -> String {
    let rule = |name: &str, guard: &str| {
        forecast_rule(name, "nab_value{dataset=\"jumpsup\"}", &["model: { type: seasonal_naive, season: 1d }", "band: 0.95", guard])
    };
    let rules = [
        rule("jump_both", "direction: both"),
        rule("jump_below", "direction: below"),
        rule("jump_min_deviation", &format!("min_deviation: {GUARD_MIN_DEVIATION}")),
    ];
    format!("groups:\n{}", group("guards", "3s", &rules))
}

/// Scores, bands and labels of NAB series through a real Prometheus; the guards of `guard_rules`
/// on the same Prometheus and sidecar; input labels `rule` and `horizon` renamed.
#[test]
fn scores_nab_series_against_real_prometheus() {
    let jumps = nab_values("artificialWithAnomaly/art_daily_jumpsup.csv");
    let noise = nab_values("artificialNoAnomaly/art_daily_small_noise.csv");
    let mut series: Vec<Backfill> = JUMP_CUTS.iter().map(|&at| cut("jumpsup", &jumps, at, &[])).collect();
    let noise_cuts: Vec<usize> = (0..40).map(|i| 3000 + i * 25).collect();
    series.extend(noise_cuts.iter().map(|&at| cut("small_noise", &noise, at, &[("rule", "input"), ("horizon", "input_h")])));
    let prom = Prometheus::start(&series, end_away_from_grid_boundary());

    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("rules")).unwrap();
    std::fs::write(dir.path().join("rules/nab.yaml"), rules("3s", &[("jumpsup", "jumpsup"), ("small_noise", "small_noise")])).unwrap();
    std::fs::write(dir.path().join("rules/guards.yaml"), guard_rules()).unwrap();
    let pw = Pulsewatch::start(dir.path(), &config(&prom, ""), &[]);
    let (n_jumps, n_nab) = (JUMP_CUTS.len(), JUMP_CUTS.len() + 40);
    let samples = pw.wait_metrics(Duration::from_secs(240), "scores of all series", |s| {
        find(s, "pulsewatch_anomaly_score", &[]).len() == n_nab + 3 * n_jumps
    });

    // labels: input labels kept, __name__ dropped, ours added, collisions renamed
    let noise_scores = find(&samples, "pulsewatch_anomaly_score", &[("rule", "small_noise")]);
    assert_eq!(noise_scores.len(), 40);
    for s in &noise_scores {
        let keys: Vec<&str> = s.labels.keys().map(String::as_str).collect();
        assert_eq!(keys, vec!["cut", "dataset", "exported_horizon", "exported_rule", "rule", "team"], "{s:?}");
        assert_eq!(s.labels["exported_rule"], "input");
        assert_eq!(s.labels["exported_horizon"], "input_h");
        assert_eq!(s.labels["team"], "test");
    }
    let nab_rules = [("jumpsup", n_jumps), ("small_noise", 40)];
    for name in ["pulsewatch_y", "pulsewatch_yhat", "pulsewatch_yhat_lower", "pulsewatch_yhat_upper"] {
        for (rule, n) in nab_rules {
            assert_eq!(find(&samples, name, &[("rule", rule)]).len(), n, "{name} {rule}");
        }
    }
    for name in ["pulsewatch_forecast", "pulsewatch_forecast_lower", "pulsewatch_forecast_upper"] {
        assert_eq!(find(&samples, name, &[]).len(), n_nab, "{name}: the rules with horizons, one each");
        assert_eq!(find(&samples, name, &[("horizon", "1h")]).len(), n_nab, "{name}");
        // ours is `horizon`, the input's is renamed: both on the same series
        let noise_forecasts = find(
            &samples,
            name,
            &[("horizon", "1h"), ("exported_horizon", "input_h"), ("rule", "small_noise"), ("exported_rule", "input")],
        );
        assert_eq!(noise_forecasts.len(), 40, "{name}");
        let keys: Vec<&str> = noise_forecasts[0].labels.keys().map(String::as_str).collect();
        assert_eq!(keys, vec!["cut", "dataset", "exported_horizon", "exported_rule", "horizon", "rule", "team"], "{name}");
    }
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

    check_guards(&samples);

    // self-monitoring
    let fits: f64 = find(&samples, "pulsewatch_model_fits_total", &[]).iter().map(|s| s.value).sum();
    assert!(fits >= (n_nab + 3 * n_jumps) as f64, "fits {fits}");
    assert_eq!(find(&samples, "pulsewatch_rule_series", &[("rule", "jumpsup")])[0].value, n_jumps as f64);

    // promtool accepts the exposition (a `horizon` label twice on one series, say, it refuses)
    let body = pw.metrics();
    assert!(body.contains("exported_horizon=\"input_h\""), "{body}");
    let mut child = Command::new(binary("PROMTOOL_BIN", "promtool"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), body.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // /api/v1/rules
    let (status, api) = get(&format!("{}/api/v1/rules", pw.url())).unwrap();
    assert_eq!(status, 200);
    let api: serde_json::Value = serde_json::from_str(&api).unwrap();
    let groups = api["data"]["groups"].as_array().unwrap();
    let nab = groups.iter().find(|g| g["name"] == "nab").unwrap_or_else(|| panic!("{api}"));
    let rules = &nab["rules"];
    assert_eq!(rules[0]["name"], "jumpsup");
    assert_eq!(rules[0]["health"], "ok");
    assert_eq!(rules[1]["series"], 40);
}

/// The guards reach scoring: per cut, the three rules share the model (same data, same fit, so
/// the same prediction and band), and differ only where the README says the guard applies.
fn check_guards(samples: &[Sample]) {
    let one = |name: &str, rule: &str, cut: &str| {
        let found = find(samples, name, &[("rule", rule), ("cut", cut)]);
        assert_eq!(found.len(), 1, "{name} {rule} cut {cut}");
        found[0].value
    };
    let mut jump_deviations = Vec::new();
    let mut below_the_prediction = 0;
    for at in JUMP_CUTS {
        let cut = at.to_string();
        let out = |name: &str, rule: &str| one(name, rule, &cut);
        for name in ["pulsewatch_y", "pulsewatch_yhat", "pulsewatch_yhat_lower", "pulsewatch_yhat_upper"] {
            for rule in ["jump_below", "jump_min_deviation"] {
                assert_eq!(out(name, rule), out(name, "jump_both"), "{name} {rule} cut {cut}: not the same model");
            }
        }
        let (y, yhat) = (out("pulsewatch_y", "jump_both"), out("pulsewatch_yhat", "jump_both"));
        let both = out("pulsewatch_anomaly_score", "jump_both");
        let below = out("pulsewatch_anomaly_score", "jump_below");
        let min_deviation = out("pulsewatch_anomaly_score", "jump_min_deviation");
        let all = format!("cut {cut}: y {y}, yhat {yhat}, scores both {both}, below {below}, min_deviation {min_deviation}");
        if on_the_jump(at) {
            // the model sees the jump, upwards
            assert!(both > 1.0 && y > yhat, "{all}");
            jump_deviations.push(y - yhat);
        }
        // `below`: 0 above the prediction, as `both` below it
        if y > yhat {
            assert_eq!(below, 0.0, "{all}");
        } else {
            below_the_prediction += 1;
            assert!(below > 0.0 && below == both, "{all}");
        }
        // every deviation here is smaller than `min_deviation`
        assert!((y - yhat).abs() < GUARD_MIN_DEVIATION, "{all}");
        assert_eq!(min_deviation, 0.0, "{all}");
    }
    assert_eq!(jump_deviations.len(), 7);
    assert!(jump_deviations.iter().all(|d| (40.0..GUARD_MIN_DEVIATION).contains(d)), "{jump_deviations:?}");
    assert!(below_the_prediction >= 1, "no cut scored below its prediction: `direction: below` would not be seen scoring");
}

#[test]
fn outage_removes_stale_outputs_and_recovers() {
    let noise = nab_values("artificialNoAnomaly/art_daily_small_noise.csv");
    let mut prom = Prometheus::start(&[cut("small_noise", &noise, 3500, &[])], unix_now());
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("rules")).unwrap();
    std::fs::write(dir.path().join("rules/nab.yaml"), rules("1s", &[("noise", "small_noise")])).unwrap();
    let mut pw = Pulsewatch::start(dir.path(), &config(&prom, ", staleness: 3s"), &[]);
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

/// One forecast rule for a rule file: `settings` are YAML lines for the rule, without indent.
fn forecast_rule(name: &str, expr: &str, settings: &[&str]) -> String {
    let mut out = format!("      - forecast: {name}\n        expr: '{expr}'\n");
    for line in settings {
        out.push_str(&format!("        {line}\n"));
    }
    out
}

fn group(name: &str, interval: &str, rules: &[String]) -> String {
    format!("  - name: {name}\n    interval: {interval}\n    rules:\n{}", rules.concat())
}

/// Writes a rule file in one rename, so that no reload (the watch's) ever reads half of it.
fn write_atomically(path: &std::path::Path, text: &str) {
    let tmp = path.parent().unwrap().parent().unwrap().join("rule-file.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The `query_range` requests for `expr` seen by `proxy`, as `(start, end)`.
fn range_queries(proxy: &RecordingProxy, expr: &str) -> Vec<(i64, i64)> {
    let int = |r: &ProxiedRequest, name: &str| r.param(name).and_then(|v| v.parse::<f64>().ok()).map(|v| v as i64);
    proxy
        .requests()
        .iter()
        .filter(|r| r.path == "/api/v1/query_range" && r.param("query") == Some(expr))
        .filter_map(|r| Some((int(r, "start")?, int(r, "end")?)))
        .collect()
}

/// How often the history of `expr` was downloaded: queries spanning more than a day (the
/// rules' history is 10d; an incremental query asks for the newest grid point or two).
fn history_downloads(proxy: &RecordingProxy, expr: &str) -> usize {
    range_queries(proxy, expr).iter().filter(|(start, end)| end - start > 86_400).count()
}

/// The evaluations of `rule` the sidecar logged (`rule evaluated ... fits=N`, at debug level),
/// as their fits.
fn logged_evaluations(log: &str, rule: &str) -> Vec<u64> {
    let rule = format!("rule={rule}");
    log.lines()
        .filter(|l| l.contains("message=\"rule evaluated\"") && l.split_whitespace().any(|t| t == rule))
        .map(|l| {
            l.split_whitespace()
                .find_map(|t| t.strip_prefix("fits="))
                .and_then(|n| n.parse().ok())
                .expect("fits=N in a `rule evaluated` line")
        })
        .collect()
}

/// Polls until `pred` holds, or panics after `limit` with the sidecar's log.
fn wait_until(pw: &Pulsewatch, limit: Duration, what: &str, pred: impl Fn() -> bool) {
    let began = std::time::Instant::now();
    while !pred() {
        assert!(began.elapsed() < limit, "timed out waiting for {what}; log:\n{}", pw.log());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Reloads keep models as the README says: a broken reload changes nothing; an unchanged group
/// keeps its rules' models; in a changed group an unchanged rule keeps its model and a new one
/// is fitted; a rule whose definition changed is refitted. "Kept" is told from "refitted" by what
/// the sidecar asks Prometheus (through a recording proxy): a fresh model downloads the rule's
/// history, a kept one asks only for the newest points. The sidecar's own counters cannot tell,
/// since a reload that drops a rule's model drops its counters with it.
#[test]
fn reloads_keep_unchanged_rules_models_and_refit_changed_rules() {
    let noise = nab_values("artificialNoAnomaly/art_daily_small_noise.csv");
    let prom = Prometheus::start(&[cut("small_noise", &noise, 3500, &[])], unix_now());
    let proxy = RecordingProxy::start(prom.port);
    let dir = tempfile::tempdir().unwrap();
    let rules_dir = dir.path().join("rules");
    std::fs::create_dir(&rules_dir).unwrap();
    // the same series under three spellings, so the proxy tells the rules' queries apart
    let (noise_expr, noise2_expr, other_expr) =
        ("nab_value{dataset=\"small_noise\"}", "nab_value{dataset=\"small_noise\",cut=\"3500\"}", "nab_value{cut=\"3500\"}");
    let settings = ["refit: 1h", "model: { type: linear }", "band: 0.95", "horizons: [1h]"];
    let noise_rule = forecast_rule("noise", noise_expr, &settings);
    let noise2_rule = forecast_rule("noise2", noise2_expr, &settings);
    std::fs::write(rules_dir.join("a.yaml"), format!("groups:\n{}", group("nab", "1s", std::slice::from_ref(&noise_rule)))).unwrap();
    let config = format!(
        "global: {{ step: 5m, history: 10d }}\nsource: {{ url: '{}', timeout: 5s, retries: 1 }}\nrule_files: ['rules/*.yaml']\n",
        proxy.url()
    );
    let mut pw = Pulsewatch::start(dir.path(), &config, &["--web.enable-lifecycle"]);
    let value = |s: &[Sample], name: &str, labels: &[(&str, &str)]| find(s, name, labels).first().map(|s| s.value);
    pw.wait_metrics(Duration::from_secs(120), "the first score", |s| find(s, "pulsewatch_anomaly_score", &[]).len() == 1);
    // How many evaluations of each rule have been logged: the marks to wait from.
    let marks = |rules: &[&str]| -> Vec<usize> {
        let log = pw.log();
        rules.iter().map(|r| logged_evaluations(&log, r).len()).collect()
    };
    // Waits until each of `rules` finished an evaluation after `marks` were taken (after a
    // reload had returned: that evaluation ran on what the reload left).
    let evaluated_since = |rules: &[&str], marks: &[usize]| {
        wait_until(&pw, Duration::from_secs(30), &format!("{rules:?} evaluating after the reload"), || {
            let log = pw.log();
            rules.iter().zip(marks).all(|(r, &m)| logged_evaluations(&log, r).len() > m)
        });
    };
    // What `rule` downloaded and fitted since the start, in all.
    let check = |rule: &str, expr: &str, downloads: usize, fits: u64, why: &str| {
        let log = pw.log();
        let queries = range_queries(&proxy, expr);
        assert_eq!(history_downloads(&proxy, expr), downloads, "{rule}: {why}: history downloads in queries {queries:?}; log:\n{log}");
        assert_eq!(logged_evaluations(&log, rule).iter().sum::<u64>(), fits, "{rule}: {why}: fits; log:\n{log}");
    };
    check("noise", noise_expr, 1, 1, "first evaluation");

    // a broken file: the reload fails, the old rule keeps running and serving
    std::fs::write(rules_dir.join("b.yaml"), "groups:\n  - name: other\n    rules:\n      - forecast: x\n        expr: 'rate(up[5m]'\n")
        .unwrap();
    let after = pw
        .wait_metrics(Duration::from_secs(20), "failed reload", |s| value(s, "pulsewatch_config_last_reload_successful", &[]) == Some(0.0));
    assert_eq!(find(&after, "pulsewatch_anomaly_score", &[("rule", "noise")]).len(), 1);
    let evals = value(&after, "pulsewatch_rule_evaluations_total", &[("rule", "noise")]).unwrap();
    pw.wait_metrics(Duration::from_secs(20), "evaluations continuing", |s| {
        value(s, "pulsewatch_rule_evaluations_total", &[("rule", "noise")]) > Some(evals)
    });
    let (status, body) = request("POST", &format!("{}/-/reload", pw.url()), &[]).unwrap();
    assert_eq!(status, 500);
    assert!(body.contains("b.yaml:4:") && body.contains("could not parse expression"), "{body}");

    // (a) fixed, picked up by SIGHUP as well as by the watch: the new group starts, the
    // unchanged group `nab` keeps `noise`'s model
    std::fs::write(
        rules_dir.join("b.yaml"),
        format!("groups:\n{}", group("other", "1s", &[forecast_rule("other", other_expr, &settings)])),
    )
    .unwrap();
    Command::new("kill").args(["-HUP", &pw.pid().to_string()]).status().unwrap();
    pw.wait_metrics(Duration::from_secs(120), "the new rule scoring", |s| {
        value(s, "pulsewatch_config_last_reload_successful", &[]) == Some(1.0)
            && find(s, "pulsewatch_anomaly_score", &[("rule", "other")]).len() == 1
    });
    evaluated_since(&["noise"], &marks(&["noise"]));
    check("noise", noise_expr, 1, 1, "unchanged group: its model is kept");
    check("other", other_expr, 1, 1, "new group: fitted");

    // (b) group `nab` changes (a second rule), `noise` does not: `noise` keeps its model, the
    // new rule is fitted
    let reload = || {
        let (status, body) = request("POST", &format!("{}/-/reload", pw.url()), &[]).unwrap();
        assert_eq!(status, 200, "{body}");
    };
    write_atomically(&rules_dir.join("a.yaml"), &format!("groups:\n{}", group("nab", "1s", &[noise_rule.clone(), noise2_rule.clone()])));
    reload();
    evaluated_since(&["noise", "noise2"], &marks(&["noise", "noise2"]));
    check("noise", noise_expr, 1, 1, "unchanged rule in a changed group: its model is kept");
    check("noise2", noise2_expr, 1, 1, "added rule: fitted");

    // (c) `noise`'s band changes: it is refitted on a fresh download; `noise2` keeps its model
    let changed = noise_rule.replace("band: 0.95", "band: 0.9");
    assert_ne!(changed, noise_rule);
    write_atomically(&rules_dir.join("a.yaml"), &format!("groups:\n{}", group("nab", "1s", &[changed, noise2_rule])));
    reload();
    evaluated_since(&["noise", "noise2"], &marks(&["noise", "noise2"]));
    check("noise", noise_expr, 2, 2, "changed rule: refitted");
    check("noise2", noise2_expr, 1, 1, "unchanged rule in a changed group: its model is kept");
    let samples = parse(&pw.metrics());
    for rule in ["noise", "noise2", "other"] {
        assert_eq!(find(&samples, "pulsewatch_anomaly_score", &[("rule", rule)]).len(), 1, "{rule}");
    }
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
            let _ = std::io::Write::write_all(
                &mut stream,
                format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len()).as_bytes(),
            );
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

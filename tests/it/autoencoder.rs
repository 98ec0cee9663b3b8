//! The autoencoder detector against a real Prometheus: the committed models catch NAB's machine
//! temperature failure; a broken model file makes only its own rule unhealthy; a model file
//! replaced on disk is used from the next evaluation on, without a restart.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::harness::*;

fn repo(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// NAB's `machine_temperature_system_failure`: its timestamps and values, one row per 5 minutes
/// (but for one step back in time, which the backfill, like the detector, takes as the next row).
fn machine_temperature() -> (Vec<String>, Vec<f64>) {
    let path = repo("examples/autoencoder/data/machine_temperature_system_failure.csv");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    text.lines().skip(1).map(|l| l.split_once(',').unwrap()).map(|(t, v)| (t.to_string(), v.trim().parse::<f64>().unwrap())).unzip()
}

/// The row of the first timestamp at or after `at` (`YYYY-MM-DD HH:MM`).
fn row(timestamps: &[String], at: &str) -> usize {
    timestamps.iter().position(|t| t.as_str() >= at).unwrap()
}

fn anomaly_rule(name: &str, expr: &str, step: &str, model: &str) -> String {
    format!("      - anomaly: {name}\n        expr: '{expr}'\n        step: {step}\n        detector: {{ type: autoencoder, model_file: models/{model} }}\n")
}

fn write_rules(dir: &Path, interval: &str, rules: &[String]) {
    std::fs::create_dir_all(dir.join("rules/models")).unwrap();
    std::fs::write(dir.join("rules/ae.yaml"), format!("groups:\n  - name: ae\n    interval: {interval}\n    rules:\n{}", rules.concat()))
        .unwrap();
}

fn config(prom: &Prometheus) -> String {
    format!("source: {{ url: '{}', timeout: 5s, retries: 1 }}\nrule_files: ['rules/*.yaml']\n", prom.url())
}

fn api_rules(pw: &Pulsewatch) -> Vec<serde_json::Value> {
    let (status, body) = get(&format!("{}/api/v1/rules", pw.url())).unwrap();
    assert_eq!(status, 200);
    let api: serde_json::Value = serde_json::from_str(&body).unwrap();
    api["data"]["groups"][0]["rules"].as_array().unwrap().clone()
}

/// Replaces `to` as a user should: write a temporary file beside it, then rename it over.
fn swap(from: &Path, to: &Path) {
    let tmp = to.with_extension("onnx.tmp");
    std::fs::copy(from, &tmp).unwrap();
    std::fs::rename(&tmp, to).unwrap();
}

#[test]
fn committed_models_score_the_machine_failure_above_1_and_normal_days_below() {
    let (timestamps, values) = machine_temperature();
    // Rows of normal days outside the models' training data (2013-12-18 to 2014-01-26) and
    // outside NAB's labelled windows, the last of them hours before the labelled failure
    // (2014-02-07 14:55 – 2014-02-09 14:05); and rows inside it, as the machine cools down: the
    // score crosses 1 in between.
    let normal: Vec<usize> =
        ["2013-12-04 12:00", "2013-12-08 12:00", "2014-02-04 12:00", "2014-02-07 12:00"].iter().map(|t| row(&timestamps, t)).collect();
    let failing: Vec<usize> = ["2014-02-08 12:00", "2014-02-08 14:00", "2014-02-08 16:00"].iter().map(|t| row(&timestamps, t)).collect();
    let cut = |kind: &str, at: usize| Backfill {
        labels: vec![("dataset".into(), "machine".into()), ("kind".into(), kind.into()), ("cut".into(), at.to_string())],
        values: values[..=at].to_vec(),
    };
    let series: Vec<Backfill> = normal.iter().map(|&at| cut("normal", at)).chain(failing.iter().map(|&at| cut("failing", at))).collect();
    let prom = Prometheus::start(&series, end_away_from_grid_boundary());

    let dir = tempfile::tempdir().unwrap();
    let expr = r#"nab_value{dataset="machine"}"#;
    write_rules(
        dir.path(),
        "2s",
        &[anomaly_rule("machine_dense", expr, "5m", "dense.onnx"), anomaly_rule("machine_lstm", expr, "5m", "lstm.onnx")],
    );
    for kind in ["dense", "lstm"] {
        std::fs::copy(
            repo(&format!("examples/autoencoder/models/machine_temperature_{kind}.onnx")),
            dir.path().join(format!("rules/models/{kind}.onnx")),
        )
        .unwrap();
    }
    let pw = Pulsewatch::start(dir.path(), &config(&prom), &[]);
    let n = series.len();
    let samples = pw.wait_metrics(Duration::from_secs(120), "scores of every cut by both rules", |s| {
        find(s, "pulsewatch_anomaly_score", &[]).len() == 2 * n
    });

    for rule in ["machine_dense", "machine_lstm"] {
        let score = |kind: &str| -> Vec<f64> {
            find(&samples, "pulsewatch_anomaly_score", &[("rule", rule), ("kind", kind)]).iter().map(|s| s.value).collect()
        };
        let (normal, failing) = (score("normal"), score("failing"));
        assert!(normal.iter().all(|&v| v < 1.0), "{rule}: normal days {normal:?}");
        assert!(failing.iter().all(|&v| v > 1.0), "{rule}: the failure {failing:?}");
        // the raw error is exported beside the score, and no forecast outputs
        let errors = find(&samples, "pulsewatch_reconstruction_error", &[("rule", rule)]);
        assert_eq!(errors.len(), n);
        assert!(errors.iter().all(|s| s.value > 0.0), "{errors:?}");
        assert!(find(&samples, "pulsewatch_yhat", &[("rule", rule)]).is_empty());
        assert_eq!(find(&samples, "pulsewatch_rule_series", &[("rule", rule)])[0].value, n as f64);
    }
    for rule in api_rules(&pw) {
        assert_eq!(rule["type"], "anomaly", "{rule}");
        assert_eq!(rule["health"], "ok", "{rule}");
        assert_eq!(rule["query"], expr, "{rule}");
    }
}

/// The test models (tests/data/models) have a window of 4 at a 1-minute step, mean 0 and std 1,
/// threshold 1: on a constant series of 3, the zero model's error is 9, the half model's 2.25.
#[test]
fn broken_models_fail_only_their_rule_and_replaced_models_are_used() {
    let prom = Prometheus::start_with(
        &[Backfill { labels: vec![("dataset".into(), "flat".into())], values: vec![3.0; 30] }],
        unix_now(),
        60,
        free_port(),
        "global: { scrape_interval: 15s }\n",
    );
    let dir = tempfile::tempdir().unwrap();
    let expr = r#"nab_value{dataset="flat"}"#;
    let broken = [
        ("corrupt", "corrupt.onnx", "not an ONNX model"),
        ("wrong_shape", "shape.onnx", "output shape [batch, 2, 1] differs from input shape [batch, 4, 1]"),
        ("unsupported_op", "op.onnx", "PulsewatchNoSuchOp"),
        ("wrong_channels", "channels.onnx", r#"the rule's channels ["value"] are not the model's channels ["a", "b"]"#),
        ("tract_panics", "panics.onnx", "tract panicked loading the model"),
    ];
    let mut rules = vec![anomaly_rule("good", expr, "1m", "good.onnx")];
    rules.extend(broken.iter().map(|(name, file, _)| anomaly_rule(name, expr, "1m", file)));
    write_rules(dir.path(), "1s", &rules);
    let models = dir.path().join("rules/models");
    let fixture = |name: &str| repo("tests/data/models").join(name);
    std::fs::copy(fixture("zero_w4_c1.onnx"), models.join("good.onnx")).unwrap();
    std::fs::write(models.join("corrupt.onnx"), b"\x08\x07 certainly not a model").unwrap();
    std::fs::copy(fixture("bad_output_shape.onnx"), models.join("shape.onnx")).unwrap();
    std::fs::copy(fixture("unsupported_op.onnx"), models.join("op.onnx")).unwrap();
    std::fs::copy(fixture("zero_w4_c2.onnx"), models.join("channels.onnx")).unwrap();
    std::fs::copy(fixture("lstm_no_initial_state.onnx"), models.join("panics.onnx")).unwrap();

    let mut pw = Pulsewatch::start(dir.path(), &config(&prom), &[]);
    let good =
        |value: f64| move |s: &[Sample]| find(s, "pulsewatch_anomaly_score", &[("rule", "good")]).first().is_some_and(|s| s.value == value);
    let samples = pw.wait_metrics(Duration::from_secs(60), "the good rule's score", good(9.0));
    assert_eq!(find(&samples, "pulsewatch_reconstruction_error", &[("rule", "good")])[0].value, 9.0);
    // every broken rule has failed at least once by now; the good one never
    let samples = pw.wait_metrics(Duration::from_secs(30), "a failure of every broken rule", |s| {
        broken.iter().all(|(name, _, _)| {
            find(s, "pulsewatch_rule_evaluation_failures_total", &[("rule", name)]).first().is_some_and(|f| f.value >= 1.0)
        })
    });
    assert_eq!(find(&samples, "pulsewatch_rule_evaluation_failures_total", &[("rule", "good")])[0].value, 0.0);
    assert_eq!(find(&samples, "pulsewatch_anomaly_score", &[]).len(), 1, "only the good rule scores");
    let api = api_rules(&pw);
    for (name, file, cause) in broken {
        let rule = api.iter().find(|r| r["name"] == name).unwrap();
        assert_eq!(rule["health"], "err", "{rule}");
        let error = rule["lastError"].as_str().unwrap();
        assert!(error.contains(&format!("models/{file}")) && error.contains(cause), "{name}: {error}");
    }
    assert_eq!(api[0]["health"], "ok");
    assert!(pw.is_running());
    // tract's panic is logged as an event in the log's format, not printed raw
    let log = pw.log();
    assert!(log.lines().any(|l| l.contains("level=error") && l.contains("UndeterminedSymbol")), "{log}");
    assert!(!log.lines().any(|l| l.starts_with("thread '")), "{log}");

    // a new model under the same name is used without a restart
    swap(&fixture("half_w4_c1.onnx"), &models.join("good.onnx"));
    pw.wait_metrics(Duration::from_secs(30), "the replaced model's score", good(2.25));
    // and a good model over a broken one heals its rule
    swap(&fixture("zero_w4_c1.onnx"), &models.join("corrupt.onnx"));
    pw.wait_metrics(Duration::from_secs(30), "the repaired rule's score", |s| {
        find(s, "pulsewatch_anomaly_score", &[("rule", "corrupt")]).first().is_some_and(|s| s.value == 9.0)
    });
    assert!(api_rules(&pw).iter().any(|r| r["name"] == "corrupt" && r["health"] == "ok"));

    // a reload that changes the group (a rule goes) keeps the good rule's loaded model
    let loads = |pw: &Pulsewatch| pw.log().lines().filter(|l| l.contains("model loaded") && l.contains("rule=good ")).count();
    let before = loads(&pw);
    assert_eq!(before, 2, "the first model and its replacement: {}", pw.log());
    rules.pop();
    write_rules(dir.path(), "1s", &rules);
    let evaluations = |s: &[Sample]| find(s, "pulsewatch_rule_evaluations_total", &[("rule", "good")])[0].value;
    let reloaded = pw.wait_metrics(Duration::from_secs(30), "the reload", |s| {
        find(s, "pulsewatch_rule_evaluations_total", &[("rule", "tract_panics")]).is_empty()
    });
    let samples = pw.wait_metrics(Duration::from_secs(30), "the restarted group's evaluations", |s| {
        evaluations(s) >= evaluations(&reloaded) + 2.0 && good(2.25)(s)
    });
    assert_eq!(find(&samples, "pulsewatch_config_last_reload_successful", &[])[0].value, 1.0);
    assert_eq!(loads(&pw), before, "{}", pw.log());
}

#[test]
fn check_rules_loads_every_model() {
    let dir = tempfile::tempdir().unwrap();
    write_rules(
        dir.path(),
        "1m",
        &[
            anomaly_rule("good", "up", "1m", "good.onnx"),
            anomaly_rule("unsupported_op", "up", "1m", "op.onnx"),
            anomaly_rule("missing", "up", "1m", "missing.onnx"),
        ],
    );
    let models = dir.path().join("rules/models");
    std::fs::copy(repo("tests/data/models/zero_w4_c1.onnx"), models.join("good.onnx")).unwrap();
    std::fs::copy(repo("tests/data/models/unsupported_op.onnx"), models.join("op.onnx")).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pulsewatch"))
        .args(["check", "rules"])
        .arg(dir.path().join("rules/ae.yaml"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| l.contains("ae.yaml")).collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    assert!(
        lines[0].contains(r#"group "ae", rule 2, "unsupported_op": model file "#) && lines[0].contains("PulsewatchNoSuchOp"),
        "{stderr}"
    );
    assert!(lines[1].contains(r#"rule 3, "missing""#) && lines[1].contains("missing.onnx: reading"), "{stderr}");
}

fn export_windows(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_pulsewatch")).arg("export-windows").args(args).output().unwrap()
}

fn read_csv(path: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let mut reader = csv::Reader::from_path(path).unwrap();
    let header = reader.headers().unwrap().iter().map(String::from).collect();
    let rows = reader.records().map(|r| r.unwrap().iter().map(String::from).collect()).collect();
    (header, rows)
}

#[test]
fn export_windows_from_a_csv_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("w.csv");
    let data = repo("examples/autoencoder/data/machine_temperature_system_failure.csv");
    let rules = repo("examples/autoencoder/rules.yaml");
    // 2013-12-02 21:15 to 21:15 + 99 steps: 100 rows, so 100 - 31 windows of 32
    let start = "2013-12-02T21:15:00Z";
    let end = (chrono::DateTime::parse_from_rfc3339(start).unwrap() + chrono::Duration::minutes(5 * 99)).to_rfc3339();
    let args = [
        "--rules",
        rules.to_str().unwrap(),
        "--rule",
        "machine_temperature_lstm",
        "--csv",
        data.to_str().unwrap(),
        "--start",
        start,
        "--end",
        &end,
        "--out",
        out.to_str().unwrap(),
    ];
    let result = export_windows(&args);
    assert!(result.status.success(), "{}", String::from_utf8_lossy(&result.stderr));
    let (header, rows) = read_csv(&out);
    // the window length comes from the rule's model
    assert_eq!(header.len(), 3 + 32);
    assert_eq!(&header[..4], ["series", "end", "step", "value@0"]);
    assert_eq!(header[34], "value@31");
    assert_eq!(rows.len(), 69);
    let (_, values) = machine_temperature();
    let first_end = chrono::DateTime::parse_from_rfc3339(start).unwrap().timestamp() + 31 * 300;
    for (k, row) in rows.iter().enumerate() {
        assert_eq!(row[0], r#"{file="data/machine_temperature_system_failure.csv"}"#);
        assert_eq!(row[1].parse::<i64>().unwrap(), first_end + 300 * k as i64);
        assert_eq!(row[2], "300");
        let window: Vec<f64> = row[3..].iter().map(|v| v.parse().unwrap()).collect();
        assert_eq!(window, values[k..k + 32], "window {k}");
    }

    // --stride thins them; a forecast rule has no windows
    let strided = export_windows(&[&args[..], &["--stride", "10"]].concat());
    assert!(strided.status.success());
    assert_eq!(read_csv(&out).1.len(), 7);
    let forecast = dir.path().join("f.yaml");
    std::fs::write(&forecast, "groups:\n  - name: g\n    rules:\n      - forecast: f\n        expr: up\n").unwrap();
    let result = export_windows(&[
        "--rules",
        forecast.to_str().unwrap(),
        "--csv",
        data.to_str().unwrap(),
        "--window",
        "4",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(result.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&result.stderr).contains(r#"rule "f" is a forecast rule"#),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
}

#[test]
fn export_windows_joins_channels_from_prometheus() {
    // instance a has cpu and mem, b only cpu; 1-minute samples, and a label that differs by channel
    let series = |dataset: &str, instance: &str, base: f64| Backfill {
        labels: vec![("dataset".into(), dataset.into()), ("instance".into(), instance.into()), ("extra".into(), dataset.into())],
        values: (0..10).map(|i| base + i as f64).collect(),
    };
    let end = unix_now() - 60;
    let end = end - end % 60;
    let prom = Prometheus::start_with(
        &[series("cpu", "a", 0.0), series("mem", "a", 100.0), series("cpu", "b", 10.0)],
        end,
        60,
        free_port(),
        "global: { scrape_interval: 15s }\n",
    );
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("r.yaml");
    std::fs::write(
        &rules,
        "groups:\n  - name: g\n    rules:\n      - anomaly: host\n        channels:\n          - { name: cpu, expr: 'nab_value{dataset=\"cpu\"}' }\n          - { name: mem, expr: 'nab_value{dataset=\"mem\"}' }\n        on: [instance]\n        detector: { type: autoencoder, model_file: missing.onnx }\n",
    )
    .unwrap();
    let out = dir.path().join("w.csv");
    let (start, end) = ((end - 9 * 60).to_string(), end.to_string());
    let base =
        ["--rules", rules.to_str().unwrap(), "--source", &prom.url(), "--start", &start, "--end", &end, "--out", out.to_str().unwrap()];
    // without --window, the missing model is named
    let result = export_windows(&base);
    assert_eq!(result.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&result.stderr).contains("pass --window")
            && String::from_utf8_lossy(&result.stderr).contains("missing.onnx")
    );

    let result = export_windows(&[&base[..], &["--window", "3"]].concat());
    assert!(result.status.success(), "{}", String::from_utf8_lossy(&result.stderr));
    let (header, rows) = read_csv(&out);
    assert_eq!(header[3..], ["cpu@0", "mem@0", "cpu@1", "mem@1", "cpu@2", "mem@2"]);
    // only instance a has both channels: 10 samples, 8 windows of 3, time-major
    assert_eq!(rows.len(), 8);
    assert!(rows.iter().all(|r| r[0] == r#"{instance="a"}"#), "{rows:?}");
    assert_eq!(rows[0][3..], ["0", "100", "1", "101", "2", "102"]);
    assert_eq!(rows[7][1], end);
}

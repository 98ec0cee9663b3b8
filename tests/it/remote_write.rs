//! remote_write into a real Prometheus (`--web.enable-remote-write-receiver`): every output
//! series a rule exports arrives, with pulsewatch's labels, and is queried back; scraping keeps
//! working beside it. And VictoriaMetrics as both ends: pulsewatch reads from it and writes into it.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::harness::*;

const SERIES: usize = 4;

/// The label sets of `query`'s answer on the server at `base`, as `(metric name, instance, horizon)`.
fn instant(base: &str, query: &str) -> BTreeSet<(String, String, String)> {
    let url = format!("{base}/api/v1/query?query={}", urlencode(query));
    let Some((200, body)) = get(&url) else { return BTreeSet::new() };
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    let field = |m: &serde_json::Value, k: &str| m[k].as_str().unwrap_or_default().to_string();
    answer["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (field(&r["metric"], "__name__"), field(&r["metric"], "instance"), field(&r["metric"], "horizon")))
        .collect()
}

fn urlencode(text: &str) -> String {
    text.bytes().map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") }).collect()
}

fn series() -> Vec<Backfill> {
    (0..SERIES)
        .map(|i| Backfill {
            labels: vec![("instance".to_string(), format!("host-{i}"))],
            values: (0..100).map(|t| 10.0 + i as f64 + ((t * 7 + i) % 5) as f64).collect(),
        })
        .collect()
}

const RULES: &str = "groups:\n  - name: g\n    interval: 2s\n    rules:\n      - forecast: load\n        expr: nab_value\n        step: 5m\n        history: 6h\n        model: { type: online }\n        horizons: [1h]\n";

/// Every output family of every series, as [`instant`] lists them.
fn wanted() -> BTreeSet<(String, String, String)> {
    (0..SERIES)
        .flat_map(|i| {
            let instance = format!("host-{i}");
            let plain = ["pulsewatch_anomaly_score", "pulsewatch_y", "pulsewatch_yhat", "pulsewatch_yhat_lower", "pulsewatch_yhat_upper"]
                .map(|name| (name.to_string(), instance.clone(), String::new()));
            let ahead = ["pulsewatch_forecast", "pulsewatch_forecast_lower", "pulsewatch_forecast_upper"]
                .map(|name| (name.to_string(), instance.clone(), "1h".to_string()));
            plain.into_iter().chain(ahead)
        })
        .collect()
}

const OUTPUTS: &str = r#"{__name__=~"pulsewatch_(anomaly_score|y|yhat.*|forecast.*)", rule="load"}"#;

/// Starts pulsewatch on `RULES`, reading from and writing to `url` (plus `extra` settings of the
/// endpoint), and waits until the server at `url` holds every output series (calling
/// `before_query` before each look).
fn write_and_find_outputs(dir: &std::path::Path, url: &str, extra: &str, before_query: impl Fn()) -> Pulsewatch {
    std::fs::write(dir.join("rules.yaml"), RULES).unwrap();
    let config = format!(
        "source: {{ url: '{url}', timeout: 5s }}\nrule_files: ['rules.yaml']\nremote_write:\n  - url: '{url}/api/v1/write'\n{extra}    queue_config: {{ batch_send_deadline: 500ms }}\n"
    );
    let pw = Pulsewatch::start(dir, &config, &[]);
    let began = Instant::now();
    let mut got = BTreeSet::new();
    while began.elapsed() < Duration::from_secs(60) {
        before_query();
        got = instant(url, OUTPUTS);
        if got == wanted() {
            return pw;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!("outputs in the server: {got:?}, not {:?}; log:\n{}", wanted(), pw.log());
}

#[test]
fn outputs_arrive_in_a_real_prometheus_and_scrapes_go_on() {
    let series = series();
    let prom = Prometheus::start_with_flags(
        &series,
        end_away_from_grid_boundary(),
        300,
        free_port(),
        "global: { scrape_interval: 15s }\n",
        &["--web.enable-remote-write-receiver"],
    );
    // Every output family of every series, with the rule's labels, in Prometheus.
    let dir = tempfile::tempdir().unwrap();
    let extra = "    name: local\n    headers: { X-Scope-OrgID: team-a }\n";
    let pw = write_and_find_outputs(dir.path(), &prom.url(), extra, || {});

    // The values Prometheus received are those pulsewatch serves (it scores every 2 s the same
    // newest sample, so they do not change between evaluations).
    let samples = parse(&pw.metrics());
    let served = find(&samples, "pulsewatch_anomaly_score", &[("rule", "load"), ("instance", "host-0")])[0].value;
    let url = format!("{}/api/v1/query?query={}", prom.url(), urlencode(r#"pulsewatch_anomaly_score{rule="load",instance="host-0"}"#));
    let answer: serde_json::Value = serde_json::from_str(&get(&url).unwrap().1).unwrap();
    let received: f64 = answer["data"]["result"][0]["value"][1].as_str().unwrap().parse().unwrap();
    assert_eq!(received, served);
    // Counted as sent, none failed or dropped; the scrape above answered beside the sender.
    let sent = find(&samples, "pulsewatch_remote_write_samples_total", &[("remote_name", "local")]);
    assert!(sent.first().is_some_and(|s| s.value >= wanted().len() as f64), "{sent:?}");
    for family in ["pulsewatch_remote_write_samples_failed_total", "pulsewatch_remote_write_samples_dropped_total"] {
        assert!(find(&samples, family, &[]).iter().all(|s| s.value == 0.0), "{family}");
    }
}

#[test]
fn victoria_metrics_is_read_from_and_written_into() {
    let vm = VictoriaMetrics::start(&series(), end_away_from_grid_boundary());
    let dir = tempfile::tempdir().unwrap();
    write_and_find_outputs(dir.path(), &vm.url(), "", || vm.flush());
}

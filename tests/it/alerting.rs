//! The shipped alerting rules and Alertmanager config, end to end: a real Prometheus scrapes an
//! application and pulsewatch, evaluates rules/pulsewatch.rules.yml, and sends to a real
//! Alertmanager running deploy/alertmanager/alertmanager.yml, whose receivers all post to a
//! webhook served by this test.
//!
//! Two things differ from the shipped files, so that the test takes seconds, not minutes: every
//! `for:` and `keep_firing_for:` is 3s, and the route's group_wait/group_interval are 1s.
//! Receivers keep their names (the webhook payload's `receiver` says which route an alert took)
//! but post to the test.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::routing::{get, post};
use serde_json::{json, Value};

use crate::harness::*;

/// What the test serves: the application's metric and the webhook's inbox.
#[derive(Clone, Default)]
struct Peer {
    value: Arc<AtomicU64>,
    received: Arc<Mutex<Vec<Value>>>,
}

impl Peer {
    /// Serves `/metrics` and `/hook` on `port` from a runtime of its own, until the test ends.
    fn serve(port: u16) -> Self {
        let peer = Self::default();
        peer.set(0.0);
        let app = axum::Router::new()
            .route("/metrics", get(|State(p): State<Peer>| async move { format!("nab_value{{dataset=\"app\"}} {}\n", p.get()) }))
            .route(
                "/hook",
                post(|State(p): State<Peer>, body: axum::Json<Value>| async move {
                    p.received.lock().unwrap().push(body.0);
                }),
            )
            .with_state(peer.clone());
        let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
        listener.set_nonblocking(true).unwrap();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                axum::serve(listener, app).await.unwrap();
            });
        });
        peer
    }

    fn set(&self, v: f64) {
        self.value.store(v.to_bits(), Ordering::Relaxed);
    }

    fn get(&self) -> f64 {
        f64::from_bits(self.value.load(Ordering::Relaxed))
    }

    /// Notifications so far, flattened to (receiver, status, alert labels).
    fn notifications(&self) -> Vec<(String, String, Value)> {
        let received = self.received.lock().unwrap();
        received
            .iter()
            .flat_map(|n| {
                let receiver = n["receiver"].as_str().unwrap_or_default().to_string();
                n["alerts"].as_array().cloned().unwrap_or_default().into_iter().map(move |a| (receiver.clone(), a["status"].as_str().unwrap_or_default().to_string(), a["labels"].clone()))
            })
            .collect()
    }

    /// Waits until a notification satisfies `pred`, panicking after `limit`.
    fn wait_for(&self, limit: Duration, what: &str, pred: impl Fn(&str, &str, &Value) -> bool) {
        let began = Instant::now();
        while began.elapsed() < limit {
            if self.notifications().iter().any(|(r, s, l)| pred(r, s, l)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("no notification {what} after {limit:?}; received: {:#?}", self.notifications());
    }
}

fn repo_file(path: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The shipped Alertmanager config with fast timers and every receiver posting to `hook`.
/// Alertmanager reads JSON as YAML, so the result is written as JSON.
fn alertmanager_config(hook: &str) -> String {
    let mut config: Value = serde_saphyr::from_str(&repo_file("deploy/alertmanager/alertmanager.yml")).unwrap();
    config.as_object_mut().unwrap().remove("global");
    let route = &mut config["route"];
    route["group_wait"] = json!("1s");
    route["group_interval"] = json!("1s");
    let receivers = config["receivers"].as_array_mut().unwrap();
    for receiver in receivers.iter_mut() {
        let name = receiver["name"].clone();
        *receiver = json!({ "name": name, "webhook_configs": [{ "url": hook, "send_resolved": true }] });
    }
    config.to_string()
}

/// The shipped alerting rules with every `for:` and `keep_firing_for:` shortened to 3s.
fn alerting_rules() -> String {
    repo_file("rules/pulsewatch.rules.yml")
        .lines()
        .map(|line| {
            let indent = &line[..line.len() - line.trim_start().len()];
            match ["for:", "keep_firing_for:"].iter().find(|key| line.trim_start().starts_with(**key)) {
                Some(key) => format!("{indent}{key} 3s"),
                None => line.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_anomaly(labels: &Value, severity: &str) -> bool {
    labels["alertname"] == "PulsewatchAnomaly" && labels["severity"] == severity && labels["rule"] == "app_value" && labels["dataset"] == "app"
}

/// An anomaly in the application's metric reaches the webhook as a critical alert through the
/// PagerDuty route (and no warning: the rules give a series one severity at a time), and
/// resolves when the metric returns to normal.
#[test]
fn anomaly_fires_and_resolves_through_alertmanager() {
    let (app_port, am_port, pw_port) = (free_port(), free_port(), free_port());
    let peer = Peer::serve(app_port);
    let am = Alertmanager::start(am_port, &alertmanager_config(&format!("http://127.0.0.1:{app_port}/hook")));

    // 30 minutes of history at 1s around 100, under the labels the scrape will give the series
    let normal = |i: usize| 100.0 + ((i * 7919) % 41) as f64 / 10.0 - 2.0;
    let instance = format!("127.0.0.1:{app_port}");
    let history = Backfill {
        labels: vec![("dataset".into(), "app".into()), ("job".into(), "app".into()), ("instance".into(), instance.clone())],
        values: (0..1800).map(normal).collect(),
    };
    peer.set(normal(0));
    let dir = tempfile::tempdir().unwrap();
    let alerts = dir.path().join("alerts.yml");
    std::fs::write(&alerts, alerting_rules()).unwrap();
    let prometheus_yml = format!(
        "global: {{ scrape_interval: 1s, evaluation_interval: 1s }}\n\
         rule_files: ['{}']\n\
         alerting: {{ alertmanagers: [{{ static_configs: [{{ targets: ['127.0.0.1:{am_port}'] }}] }}] }}\n\
         scrape_configs:\n\
         - {{ job_name: app, static_configs: [{{ targets: ['{instance}'] }}] }}\n\
         - {{ job_name: pulsewatch, honor_labels: true, static_configs: [{{ targets: ['127.0.0.1:{pw_port}'] }}] }}\n",
        alerts.display()
    );
    let prom = Prometheus::start_with(&[history], unix_now() - 1, 1, free_port(), &prometheus_yml);

    std::fs::create_dir(dir.path().join("rules")).unwrap();
    std::fs::write(
        dir.path().join("rules/app.yaml"),
        "groups:\n  - name: app\n    interval: 1s\n    rules:\n      - forecast: app_value\n        expr: nab_value{dataset=\"app\"}\n        model: { type: linear }\n        min_deviation: 5\n",
    )
    .unwrap();
    let config = format!("global: {{ step: 1s, history: 30m, refit: 10m }}\nsource: {{ url: '{}', timeout: 5s }}\nrule_files: ['rules/*.yaml']\n", prom.url());
    let pw = Pulsewatch::start_on(pw_port, dir.path(), &config, &[]);
    pw.wait_metrics(Duration::from_secs(60), "a score for the app series", |s| !find(s, "pulsewatch_anomaly_score", &[("rule", "app_value")]).is_empty());

    peer.set(200.0);
    peer.wait_for(Duration::from_secs(90), "firing critical on the pagerduty route", |r, s, l| r == "pagerduty" && s == "firing" && is_anomaly(l, "critical"));
    let firing = peer.notifications();
    let (_, _, labels) = firing.iter().find(|(r, _, l)| r == "pagerduty" && is_anomaly(l, "critical")).unwrap();
    // honor_labels kept the application's job and instance on the re-exported series
    assert_eq!(labels["job"], "app");
    assert_eq!(labels["instance"], instance.as_str());
    assert_eq!(labels["category"], "anomaly");
    // each receiver is its own aggregation group, notified on its own schedule
    for receiver in ["webhook", "slack"] {
        peer.wait_for(Duration::from_secs(30), &format!("firing critical on the {receiver} route"), |r, s, l| r == receiver && s == "firing" && is_anomaly(l, "critical"));
    }

    peer.set(normal(1));
    peer.wait_for(Duration::from_secs(90), "resolved critical on the pagerduty route", |r, s, l| r == "pagerduty" && s == "resolved" && is_anomaly(l, "critical"));
    // a warning, had it fired, would be notified on its own 1s group schedule: give it time
    std::thread::sleep(Duration::from_secs(3));
    let all = peer.notifications();
    assert!(!all.iter().any(|(_, _, l)| is_anomaly(l, "warning")), "a warning alongside the critical alert: {all:#?}");
    drop(am);
}

/// While pulsewatch reports its source down, anomaly alerts are inhibited; once that resolves,
/// they are delivered. Alerts are posted straight to Alertmanager's API.
#[test]
fn source_down_inhibits_anomaly_alerts() {
    let hook_port = free_port();
    let peer = Peer::serve(hook_port);
    let am = Alertmanager::start(free_port(), &alertmanager_config(&format!("http://127.0.0.1:{hook_port}/hook")));
    let post = |alerts: Value| {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let status = rt.block_on(async { reqwest::Client::new().post(format!("{}/api/v2/alerts", am.url())).json(&alerts).send().await.unwrap().status() });
        assert!(status.is_success(), "posting alerts: {status}");
    };
    let source_down = json!({ "labels": { "alertname": "PulsewatchSourceDown", "severity": "critical", "category": "health", "instance": "pw1", "job": "pulsewatch" } });
    let anomaly = json!({ "labels": { "alertname": "PulsewatchAnomaly", "severity": "warning", "category": "anomaly", "rule": "latency", "instance": "a", "job": "api" } });

    post(json!([source_down, anomaly]));
    peer.wait_for(Duration::from_secs(30), "for the source-down alert", |r, s, l| r == "pagerduty" && s == "firing" && l["alertname"] == "PulsewatchSourceDown");
    // group_wait and group_interval are 1s: an uninhibited alert would have gone out by now
    std::thread::sleep(Duration::from_secs(4));
    let seen = peer.notifications();
    assert!(!seen.iter().any(|(_, _, l)| l["alertname"] == "PulsewatchAnomaly"), "anomaly delivered while the source is down: {seen:#?}");

    let mut resolved = source_down.clone();
    resolved["endsAt"] = json!(chrono::Utc::now().to_rfc3339());
    post(json!([resolved, anomaly]));
    peer.wait_for(Duration::from_secs(30), "for the anomaly after the source recovered", |r, s, l| r == "slack" && s == "firing" && l["alertname"] == "PulsewatchAnomaly");
}

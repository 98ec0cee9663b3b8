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
                n["alerts"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .map(move |a| (receiver.clone(), a["status"].as_str().unwrap_or_default().to_string(), a["labels"].clone()))
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

/// The shipped Alertmanager config with every receiver posting to `hook`; `route` and
/// `inhibit_rules` are untouched. Of `global` only resolve_timeout is kept: the rest configures
/// email and Slack, which no receiver uses now (and nothing may leave loopback). Alertmanager
/// reads JSON as YAML, so the config is written as JSON.
fn shipped_alertmanager_config(hook: &str) -> Value {
    let mut config: Value = serde_saphyr::from_str(&repo_file("deploy/alertmanager/alertmanager.yml")).unwrap();
    config["global"] = json!({ "resolve_timeout": config["global"]["resolve_timeout"].clone() });
    let receivers = config["receivers"].as_array_mut().unwrap();
    for receiver in receivers.iter_mut() {
        let name = receiver["name"].clone();
        *receiver = json!({ "name": name, "webhook_configs": [{ "url": hook, "send_resolved": true }] });
    }
    config
}

/// [`shipped_alertmanager_config`] with the route's group_wait and group_interval at 1s.
fn alertmanager_config(hook: &str) -> String {
    let mut config = shipped_alertmanager_config(hook);
    let route = &mut config["route"];
    route["group_wait"] = json!("1s");
    route["group_interval"] = json!("1s");
    config.to_string()
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
}

/// Posts `alerts` to Alertmanager's API, as Prometheus does.
fn post_alerts(am: &Alertmanager, alerts: Value) {
    let status =
        block_on(async { reqwest::Client::new().post(format!("{}/api/v2/alerts", am.url())).json(&alerts).send().await.unwrap().status() });
    assert!(status.is_success(), "posting alerts: {status}");
}

/// The result of the instant query `expr`.
fn query(prom: &Prometheus, expr: &str) -> Vec<Value> {
    let body: Value = block_on(async {
        reqwest::Client::new()
            .get(format!("{}/api/v1/query", prom.url()))
            .query(&[("query", expr)])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    });
    assert_eq!(body["status"], "success", "query {expr}: {body}");
    body["data"]["result"].as_array().cloned().unwrap_or_default()
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
    labels["alertname"] == "PulsewatchAnomaly"
        && labels["severity"] == severity
        && labels["rule"] == "app_value"
        && labels["dataset"] == "app"
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
    let config = format!(
        "global: {{ step: 1s, history: 30m, refit: 10m }}\nsource: {{ url: '{}', timeout: 5s }}\nrule_files: ['rules/*.yaml']\n",
        prom.url()
    );
    let pw = Pulsewatch::start_on(pw_port, dir.path(), &config, &[]);
    pw.wait_metrics(Duration::from_secs(60), "a score for the app series", |s| {
        !find(s, "pulsewatch_anomaly_score", &[("rule", "app_value")]).is_empty()
    });

    peer.set(200.0);
    peer.wait_for(Duration::from_secs(90), "firing critical on the pagerduty route", |r, s, l| {
        r == "pagerduty" && s == "firing" && is_anomaly(l, "critical")
    });
    let firing = peer.notifications();
    let (_, _, labels) = firing.iter().find(|(r, _, l)| r == "pagerduty" && is_anomaly(l, "critical")).unwrap();
    // honor_labels kept the application's job and instance on the re-exported series
    assert_eq!(labels["job"], "app");
    assert_eq!(labels["instance"], instance.as_str());
    assert_eq!(labels["category"], "anomaly");
    // each receiver is its own aggregation group, notified on its own schedule
    for receiver in ["webhook", "slack"] {
        peer.wait_for(Duration::from_secs(30), &format!("firing critical on the {receiver} route"), |r, s, l| {
            r == receiver && s == "firing" && is_anomaly(l, "critical")
        });
    }

    peer.set(normal(1));
    peer.wait_for(Duration::from_secs(90), "resolved critical on the pagerduty route", |r, s, l| {
        r == "pagerduty" && s == "resolved" && is_anomaly(l, "critical")
    });
    // No warning fired, so none can have been sent, however slow its delivery. Waiting at the
    // webhook cannot show that: a late warning is indistinguishable from none. But Prometheus
    // sends Alertmanager only firing alerts (and their resolution), and every evaluation in which
    // an alert fires writes ALERTS{alertstate="firing"} for it, just after handing it to the
    // notifier. So this series' ALERTS history holds every alert that was ever sent for it. The
    // critical alert must be in the same answer: it shows that the query matches this series'
    // alerts, because an empty answer would prove nothing.
    let fired = query(
        &prom,
        r#"count by (severity) (count_over_time(ALERTS{alertname="PulsewatchAnomaly", alertstate="firing", rule="app_value", dataset="app"}[1h]))"#,
    );
    let mut severities: Vec<&str> = fired.iter().map(|s| s["metric"]["severity"].as_str().unwrap_or_default()).collect();
    severities.sort_unstable();
    assert_eq!(severities, ["critical"], "severities that fired for the app series: {fired:#?}");
    // and so none reached the webhook
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
    let source_down = json!({ "labels": { "alertname": "PulsewatchSourceDown", "severity": "critical", "category": "health", "instance": "pw1", "job": "pulsewatch" } });
    let anomaly = json!({ "labels": { "alertname": "PulsewatchAnomaly", "severity": "warning", "category": "anomaly", "rule": "latency", "instance": "a", "job": "api" } });
    // The probe has the anomaly's alertname, rule and severity (the route's group_by) and takes the
    // same routes, so on each route it is in the anomaly's aggregation group; its category is not
    // a target of the inhibition.
    let probe = json!({ "labels": { "alertname": "PulsewatchAnomaly", "severity": "warning", "category": "health", "rule": "latency", "instance": "probe", "job": "api" } });
    let is_the_anomaly = |l: &Value| l["alertname"] == "PulsewatchAnomaly" && l["instance"] == "a";

    // the source first: Alertmanager's inhibitor learns of alerts apart from its dispatcher, so
    // an anomaly posted along with it could be flushed before the inhibitor holds it
    post_alerts(&am, json!([source_down]));
    peer.wait_for(Duration::from_secs(30), "for the source-down alert", |r, s, l| {
        r == "pagerduty" && s == "firing" && l["alertname"] == "PulsewatchSourceDown"
    });
    post_alerts(&am, json!([anomaly, probe]));
    // Why seeing the probe proves the anomaly was held back, and not that it is still on its way:
    // Alertmanager notifies per aggregation group, and each flush of a group sends every alert
    // the group holds that passes the inhibition (and silences). A group's flushes run one after
    // another, each waiting for the webhook's answer. The anomaly joined its groups before the
    // probe (one POST, listed first, handed to the dispatcher in order), so the flush that
    // delivered the probe held the anomaly too: its absence from that notification, and from the
    // group's earlier ones (received before it), is the inhibition's doing. A probe in another
    // group would prove nothing, since groups flush on timers of their own.
    for receiver in ["webhook", "slack"] {
        peer.wait_for(Duration::from_secs(30), &format!("for the probe on the {receiver} route"), |r, s, l| {
            r == receiver && s == "firing" && l["instance"] == "probe"
        });
    }
    let seen = peer.notifications();
    assert!(!seen.iter().any(|(_, _, l)| is_the_anomaly(l)), "anomaly delivered while the source is down: {seen:#?}");

    let mut resolved = source_down.clone();
    resolved["endsAt"] = json!(chrono::Utc::now().to_rfc3339());
    post_alerts(&am, json!([resolved, anomaly]));
    peer.wait_for(Duration::from_secs(30), "for the anomaly after the source recovered", |r, s, l| {
        r == "slack" && s == "firing" && is_the_anomaly(l)
    });
}

/// One read of Alertmanager's `/api/v2/alerts`: each alert's labels, fingerprint and
/// `status.inhibitedBy`, which Alertmanager computes anew on every read.
fn inhibitions(am: &Alertmanager) -> Vec<(Value, String, Vec<String>)> {
    let (status, body) = crate::harness::get(&format!("{}/api/v2/alerts", am.url())).expect("reading /api/v2/alerts");
    assert_eq!(status, 200, "reading /api/v2/alerts: {body}");
    let alerts: Vec<Value> = serde_json::from_str(&body).unwrap();
    alerts
        .into_iter()
        .map(|a| {
            let by = a["status"]["inhibitedBy"].as_array().cloned().unwrap_or_default();
            (
                a["labels"].clone(),
                a["fingerprint"].as_str().unwrap().to_string(),
                by.iter().map(|f| f.as_str().unwrap().to_string()).collect(),
            )
        })
        .collect()
}

/// Checks a read against `expected`: each (target, source) pair's target is listed and inhibited
/// by exactly that source's alert, or by nothing for `None`.
fn check_inhibitions(read: &[(Value, String, Vec<String>)], expected: &[(&Value, Option<&Value>)]) -> Result<(), String> {
    let fingerprint = |labels: &Value| read.iter().find(|(l, _, _)| l == labels).map(|(_, fp, _)| fp.clone());
    for (target, source) in expected {
        let Some((_, _, by)) = read.iter().find(|(l, _, _)| l == *target) else { return Err(format!("{target} is not listed")) };
        let want: Vec<String> = match source {
            Some(source) => vec![fingerprint(source).ok_or_else(|| format!("source {source} is not listed"))?],
            None => vec![],
        };
        if *by != want {
            return Err(format!("{target} is inhibited by {by:?}, expected {want:?} ({source:?})"));
        }
    }
    Ok(())
}

/// Waits until a read of `/api/v2/alerts` matches `expected`, then asserts that a later read
/// matches too. Alertmanager's inhibitor learns of posted alerts asynchronously, so an alert
/// shown uninhibited could mean "not yet". The first matching read shows each target inhibited
/// by its source, so the inhibitor held every source by then; the second read, begun after it,
/// judges every alert against all of them, and an empty `inhibitedBy` there is a real "no".
#[track_caller]
fn assert_inhibitions(am: &Alertmanager, expected: &[(&Value, Option<&Value>)]) {
    let began = Instant::now();
    let mut last = check_inhibitions(&inhibitions(am), expected);
    while last.is_err() && began.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
        last = check_inhibitions(&inhibitions(am), expected);
    }
    let read = inhibitions(am);
    if let Err(e) = last.and_then(|()| check_inhibitions(&read, expected)) {
        panic!("{e}; alerts (labels, fingerprint, inhibitedBy): {read:#?}");
    }
}

/// The shipped config's inhibit rules, as a real Alertmanager applies them (route and
/// inhibit_rules as shipped, only the receivers post to the test): PulsewatchDown, and
/// separately PulsewatchSourceDown, inhibit anomaly and capacity alerts but no health alert;
/// once both resolve, nothing is inhibited; PulsewatchFilesystemFullIn4h inhibits
/// PulsewatchFilesystemFullIn24h only when instance, device and mountpoint are all equal.
#[test]
fn shipped_inhibit_rules() {
    let hook_port = free_port();
    let _peer = Peer::serve(hook_port);
    let am = Alertmanager::start(free_port(), &shipped_alertmanager_config(&format!("http://127.0.0.1:{hook_port}/hook")).to_string());
    let resolved = |labels: &Value| json!({ "labels": labels, "endsAt": chrono::Utc::now().to_rfc3339() });
    let with = |labels: &Value, name: &str, value: &str| {
        let mut labels = labels.clone();
        labels[name] = json!(value);
        labels
    };
    let down =
        json!({ "alertname": "PulsewatchDown", "severity": "critical", "category": "health", "job": "pulsewatch", "instance": "pw1" });
    let source_down = with(&down, "alertname", "PulsewatchSourceDown");
    let anomaly = json!({ "alertname": "PulsewatchAnomaly", "severity": "critical", "category": "anomaly", "rule": "latency", "job": "api", "instance": "a" });
    let memory = json!({ "alertname": "PulsewatchMemoryExhaustedIn1h", "severity": "warning", "category": "capacity", "rule": "node_memory_available", "horizon": "1h", "job": "node", "instance": "n1" });
    let failing = json!({ "alertname": "PulsewatchRuleEvaluationFailing", "severity": "warning", "category": "health", "rule": "latency", "rule_group": "r.yaml;g", "job": "pulsewatch", "instance": "pw1" });

    post_alerts(&am, json!([{ "labels": down }, { "labels": anomaly }, { "labels": memory }, { "labels": failing }]));
    assert_inhibitions(&am, &[(&anomaly, Some(&down)), (&memory, Some(&down)), (&failing, None), (&down, None)]);

    post_alerts(&am, json!([resolved(&down), { "labels": source_down }]));
    assert_inhibitions(&am, &[(&anomaly, Some(&source_down)), (&memory, Some(&source_down)), (&failing, None), (&source_down, None)]);

    // both sources resolved: the 24h alerts below are capacity alerts too, and only the second
    // rule may decide them
    let in4h = json!({ "alertname": "PulsewatchFilesystemFullIn4h", "severity": "critical", "category": "capacity", "rule": "node_filesystem_avail", "horizon": "4h", "job": "node", "instance": "n1", "device": "sda1", "fstype": "ext4", "mountpoint": "/" });
    let in24h = with(&with(&with(&in4h, "alertname", "PulsewatchFilesystemFullIn24h"), "severity", "warning"), "horizon", "24h");
    let (other_mountpoint, other_device, other_instance) =
        (with(&in24h, "mountpoint", "/data"), with(&in24h, "device", "sdb1"), with(&in24h, "instance", "n2"));
    post_alerts(
        &am,
        json!([resolved(&source_down), { "labels": in4h }, { "labels": in24h }, { "labels": other_mountpoint }, { "labels": other_device }, { "labels": other_instance }]),
    );
    assert_inhibitions(
        &am,
        &[
            (&in24h, Some(&in4h)),
            (&other_mountpoint, None),
            (&other_device, None),
            (&other_instance, None),
            (&in4h, None),
            (&anomaly, None),
            (&memory, None),
            (&failing, None),
        ],
    );
}

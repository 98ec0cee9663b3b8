//! Signals in every state: shutdown within the grace period while a reload waits on a slow
//! query or a model file is a FIFO, a second signal at once, and `/-/ready` 503 while draining.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::harness::*;

/// A "Prometheus" that accepts connections and never answers: a query hangs until the source
/// timeout. Counts the connections.
fn silent_server() -> (u16, Arc<AtomicUsize>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    std::thread::spawn(move || {
        let mut open = Vec::new();
        for stream in listener.incoming().flatten() {
            count.fetch_add(1, Ordering::SeqCst);
            open.push(stream);
        }
    });
    (port, accepted)
}

fn rules(extra_rule: bool) -> String {
    let rule = |name: &str| format!("      - {{ forecast: {name}, expr: 'up', step: 1m, history: 1h, model: {{ type: linear }} }}\n");
    let mut text = format!("groups:\n  - name: g\n    interval: 1s\n    rules:\n{}", rule("a"));
    if extra_rule {
        text.push_str(&rule("b"));
    }
    text
}

/// A sidecar whose first evaluation hangs on its query, then a reload that must wait for it.
fn reloading_while_a_query_hangs(grace: &str) -> (Pulsewatch, tempfile::TempDir) {
    let (port, accepted) = silent_server();
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().to_path_buf();
    std::fs::create_dir(dir.join("rules")).unwrap();
    std::fs::write(dir.join("rules/a.yaml"), rules(false)).unwrap();
    let config = format!("source: {{ url: 'http://127.0.0.1:{port}', timeout: 60s, retries: 0 }}\nrule_files: ['rules/*.yaml']\n");
    let pw = Pulsewatch::start(&dir, &config, &[&format!("--shutdown.grace-period={grace}")]);
    let began = Instant::now();
    while accepted.load(Ordering::SeqCst) == 0 {
        assert!(began.elapsed() < Duration::from_secs(20), "no query reached the source; log:\n{}", pw.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    // group g changes: the reload stops it, which waits for the query in flight
    std::fs::write(dir.join("rules/a.yaml"), rules(true)).unwrap();
    pw.kill("HUP");
    pw.wait_log(Duration::from_secs(10), "reloading");
    (pw, temp)
}

/// SIGTERM while a reload waits 60 s on a query: the drain takes the 2 s grace period, during
/// which `/-/ready` says 503, and the process exits (it took 38.6 s with a 5 s grace).
#[test]
fn sigterm_during_a_reload_waiting_on_a_slow_query_exits_after_the_grace_period() {
    let (mut pw, _dir) = reloading_while_a_query_hangs("2s");
    let ready = format!("{}/-/ready", pw.url());
    assert_eq!(get(&ready).map(|(status, _)| status), Some(200));
    let began = Instant::now();
    pw.kill("TERM");
    let mut draining = false;
    while pw.is_running() && began.elapsed() < Duration::from_secs(2) {
        draining |= get(&ready).is_some_and(|(status, _)| status == 503);
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = pw.wait_exit(Duration::from_secs(15)).unwrap_or_else(|| panic!("still running 15 s after SIGTERM; log:\n{}", pw.log()));
    let took = began.elapsed();
    eprintln!("SIGTERM to exit during a reload waiting on a slow query, grace 2s: {took:?}");
    assert!(status.success(), "{status:?}");
    assert!(draining, "/-/ready never answered 503 while draining; log:\n{}", pw.log());
    // well below the query's 60 s timeout; the benchmark (docs/benchmarks.md) measures how close
    // to the grace period it is
    assert!(took < Duration::from_secs(15), "exit took {took:?}");
    assert!(pw.log().contains("in-flight evaluations did not finish in the grace period"), "{}", pw.log());
}

/// A second signal during the drain exits at once, whatever the grace period.
#[test]
fn a_second_signal_exits_at_once() {
    let (mut pw, _dir) = reloading_while_a_query_hangs("5m");
    pw.kill("TERM");
    pw.wait_log(Duration::from_secs(10), "shutting down");
    let began = Instant::now();
    pw.kill("TERM");
    let status =
        pw.wait_exit(Duration::from_secs(15)).unwrap_or_else(|| panic!("still running 15 s after a second SIGTERM; log:\n{}", pw.log()));
    assert!(status.success(), "{status:?}");
    assert!(began.elapsed() < Duration::from_secs(15));
    eprintln!("second SIGTERM to exit, grace 5m: {:?}", began.elapsed());
}

/// A FIFO named as a model file: the rule fails at once with a clear error (reading it waited
/// forever for a writer), and the process exits on SIGTERM.
#[test]
fn a_fifo_model_file_fails_its_rule_and_does_not_hold_the_exit() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("rules")).unwrap();
    let made = std::process::Command::new("mkfifo").arg(dir.path().join("rules/model.onnx")).status().expect("mkfifo (coreutils)");
    assert!(made.success());
    let rule =
        "groups:\n  - name: g\n    rules:\n      - { anomaly: ae, expr: up, detector: { type: autoencoder, model_file: model.onnx } }\n";
    std::fs::write(dir.path().join("rules/a.yaml"), rule).unwrap();
    let mut pw = Pulsewatch::start(
        dir.path(),
        "source: { url: 'http://127.0.0.1:1' }\nrule_files: ['rules/*.yaml']\n",
        &["--shutdown.grace-period=2s"],
    );
    let began = Instant::now();
    let error = loop {
        let (_, body) = get(&format!("{}/api/v1/rules", pw.url())).unwrap();
        let api: serde_json::Value = serde_json::from_str(&body).unwrap();
        if let Some(err) = api["data"]["groups"][0]["rules"][0]["lastError"].as_str() {
            break err.to_string();
        }
        assert!(began.elapsed() < Duration::from_secs(20), "no error for the rule: {body}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(error.contains("model.onnx") && error.contains("not a regular file"), "{error}");
    let began = Instant::now();
    pw.kill("TERM");
    let status = pw.wait_exit(Duration::from_secs(10)).unwrap_or_else(|| panic!("still running 10 s after SIGTERM; log:\n{}", pw.log()));
    eprintln!("SIGTERM to exit with a FIFO as a model file, grace 2s: {:?}", began.elapsed());
    assert!(status.success(), "{status:?}");
}

//! Sharding: three replicas against one real Prometheus split the series of every rule between
//! them exactly, as one unsharded replica scores them; a restarted replica keeps its series.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::harness::*;

/// Series of the rule, `instance="host-<i>"`.
const SERIES: usize = 24;
const SHARDS: usize = 3;

fn config(prom: &Prometheus) -> String {
    format!("source: {{ url: '{}', timeout: 5s, retries: 1 }}\nrule_files: ['rules.yaml']\n", prom.url())
}

const RULES: &str = "groups:\n  - name: g\n    interval: 2s\n    rules:\n      - forecast: load\n        expr: nab_value\n        step: 5m\n        history: 6h\n        model: { type: online }\n";

/// The instances a replica scores, once its rule has evaluated.
fn scored(pw: &Pulsewatch) -> BTreeSet<String> {
    let samples = pw.wait_metrics(Duration::from_secs(60), "an evaluation of the rule", |s| {
        find(s, "pulsewatch_rule_evaluations_total", &[("rule", "load")]).first().is_some_and(|e| e.value >= 1.0)
    });
    find(&samples, "pulsewatch_anomaly_score", &[("rule", "load")]).iter().map(|s| s.labels["instance"].clone()).collect()
}

#[test]
fn replicas_split_every_series_once_and_keep_them_across_restarts() {
    let series: Vec<Backfill> = (0..SERIES)
        .map(|i| Backfill {
            labels: vec![("instance".to_string(), format!("host-{i}"))],
            values: (0..100).map(|t| 10.0 + i as f64 + ((t * 7 + i) % 5) as f64).collect(),
        })
        .collect();
    let prom = Prometheus::start(&series, end_away_from_grid_boundary());
    let start = |index: Option<usize>| {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("rules.yaml"), RULES).unwrap();
        // The index as a StatefulSet's pod name, as `--shard.index=$(POD_NAME)` passes it.
        let flags: Vec<String> =
            index.map_or_else(Vec::new, |i| vec![format!("--shard.count={SHARDS}"), format!("--shard.index=pulsewatch-{i}")]);
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let pw = Pulsewatch::start(dir.path(), &config(&prom), &flags);
        (dir, pw)
    };

    // All four run at once, as they would in production.
    let (_one_dir, one) = start(None);
    let mut replicas: Vec<_> = (0..SHARDS).map(|i| start(Some(i))).collect();
    let all = scored(&one);
    assert_eq!(all.len(), SERIES, "the unsharded replica scores every series");
    let parts: Vec<BTreeSet<String>> = replicas.iter().map(|(_, pw)| scored(pw)).collect();
    for (i, part) in parts.iter().enumerate() {
        assert!(!part.is_empty(), "shard {i} scores nothing: {parts:?}");
        for other in &parts[i + 1..] {
            assert!(part.is_disjoint(other), "a series in two shards: {parts:?}");
        }
        let info = parse(&replicas[i].1.metrics());
        let info = find(&info, "pulsewatch_shard_info", &[("index", &i.to_string()), ("count", "3")]);
        assert_eq!(info.len(), 1, "shard {i} says which it is");
    }
    let union: BTreeSet<String> = parts.iter().flatten().cloned().collect();
    assert_eq!(union, all, "the shards together score what one replica does");

    // SIGKILL and restart shard 1: it scores the same series as before.
    let (dir, mut killed) = replicas.remove(1);
    killed.signal("KILL");
    drop(killed);
    let flags = [format!("--shard.count={SHARDS}"), "--shard.index=pulsewatch-1".to_string()];
    let restarted = Pulsewatch::start(dir.path(), &config(&prom), &flags.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(scored(&restarted), parts[1], "a restart moves no series");

    // Flags that cannot work stop the start with the reason.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pulsewatch"))
        .args(["--config.file=/nonexistent.yml", "--shard.count=3", "--shard.index=pulsewatch-3"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("--shard.index 3 must be below --shard.count 3"), "{stderr}");
}

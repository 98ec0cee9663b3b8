//! `pulsewatch backtest` on the NAB files committed under tests/data/nab.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn backtest(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pulsewatch")).arg("backtest").args(args).output().unwrap()
}

fn data(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/nab").join(path)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A whole NAB-layout directory: summary, outputs in NAB's formats, and the same outputs when
/// a file is replayed on its own (a backtest is deterministic and files do not interact).
#[test]
fn dataset_outputs_and_determinism() {
    let out = tempfile::tempdir().unwrap();
    let run = backtest(&["--dataset", data("").to_str().unwrap(), "--out", out.path().to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&run.stderr));
    for key in
        ["artificialNoAnomaly/art_daily_small_noise.csv", "artificialWithAnomaly/art_daily_jumpsup.csv", "realKnownCause/nyc_taxi.csv"]
    {
        assert!(stdout.lines().any(|l| l.starts_with(key)), "{key} missing from:\n{stdout}");
    }
    for profile in ["standard", "reward_low_FP_rate", "reward_low_FN_rate"] {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(&format!("NAB {profile} ")))
            .unwrap_or_else(|| panic!("no NAB {profile} line:\n{stdout}"));
        let score: f64 = line.split_whitespace().nth(2).unwrap().parse().unwrap();
        assert!((-100.0..=100.0).contains(&score), "{line}");
    }
    // the jump is detected: the jumpsup line has tp 1, fn 0
    let jumps: Vec<&str> =
        stdout.lines().find(|l| l.starts_with("artificialWithAnomaly/art_daily_jumpsup.csv")).unwrap().split_whitespace().collect();
    assert_eq!((jumps[4], jumps[6]), ("1", "0"), "{jumps:?}");
    // ... and the shipped alerting rules alert in its window: alerts, alerted, false, missed
    assert_eq!(jumps[10..14], ["3", "1", "0", "0"], "{jumps:?}");
    let alerts = read(&out.path().join("artificialWithAnomaly/art_daily_jumpsup.alerts.csv"));
    let alerts: Vec<Vec<&str>> = alerts.lines().map(|l| l.split(',').collect()).collect();
    assert_eq!(alerts[0], ["firing", "resolved", "severity", "outcome", "window", "delay_s"]);
    // the first day's rise, before the model has a season, is sent but in NAB's probation
    assert_eq!(alerts[1][2..4], ["critical", "probation"]);
    // the jump at 2014-04-11 09:00 scores 3.9, then between 1 and 3 from 09:05 to 09:15: the
    // warning is pending from 09:05, fires after its 10 minutes, and keeps firing 5 minutes past
    // the last true evaluation; 61200 s after the window opened (NAB's windows start well before
    // the anomaly)
    assert_eq!(alerts[2], ["2014-04-11 09:15:00", "2014-04-11 09:25:00", "warning", "window", "1", "61200"]);
    // the jumped day's evening drop scores just above 1 for six samples (18:00 to 18:25), until the
    // model takes the new level: a second warning in the same window
    assert_eq!(alerts[3], ["2014-04-11 18:10:00", "2014-04-11 18:35:00", "warning", "window", "1", "93300"]);
    assert_eq!(alerts.len(), 4, "{alerts:?}");
    assert!(stdout.lines().any(|l| l.starts_with("alerts (pulsewatch-anomaly of rules/pulsewatch.rules.yml): ")), "{stdout}");

    let input: Vec<String> = read(&data("artificialWithAnomaly/art_daily_jumpsup.csv")).lines().map(String::from).collect();
    let points = read(&out.path().join("artificialWithAnomaly/art_daily_jumpsup.points.csv"));
    let points: Vec<&str> = points.lines().collect();
    assert_eq!(points[0], "timestamp,value,yhat,yhat_lower,yhat_upper,anomaly_score");
    assert_eq!(points.len(), input.len(), "one line per input row");
    let nab = read(&out.path().join("artificialWithAnomaly/art_daily_jumpsup.nab.csv"));
    let nab: Vec<Vec<&str>> = nab.lines().map(|l| l.split(',').collect()).collect();
    assert_eq!(nab[0], ["timestamp", "value", "anomaly_score", "label"]);
    for (row, line) in nab.iter().zip(&input).skip(1) {
        // same timestamp and value as the input
        assert!(line.starts_with(&format!("{},", row[0])), "{row:?} vs {line}");
        assert_eq!(row[1].parse::<f64>().unwrap(), line.split(',').nth(1).unwrap().parse::<f64>().unwrap());
        let score: f64 = row[2].parse().unwrap();
        assert!((0.0..1.0).contains(&score), "{row:?}");
    }
    // 2014-04-10 16:15 to 2014-04-12 01:45 at 5 minutes: 33.5 h · 12 + 1 rows
    assert_eq!(nab.iter().filter(|r| r[3] == "1").count(), 403);
    assert!(nab.iter().find(|r| r[3] == "1").unwrap()[0] == "2014-04-10 16:15:00");
    let svg = read(&out.path().join("artificialWithAnomaly/art_daily_jumpsup.svg"));
    assert!(svg.starts_with("<svg") && svg.contains("art_daily_jumpsup.csv"), "{}", &svg[..200.min(svg.len())]);
    // a labelled file without windows: every label 0
    let quiet = read(&out.path().join("artificialNoAnomaly/art_daily_small_noise.nab.csv"));
    assert!(quiet.lines().skip(1).all(|l| l.ends_with(",0")));

    let again = tempfile::tempdir().unwrap();
    let csv = data("artificialWithAnomaly/art_daily_jumpsup.csv");
    let run = backtest(&[
        "--csv",
        csv.to_str().unwrap(),
        "--labels",
        data("labels.json").to_str().unwrap(),
        "--out",
        again.path().to_str().unwrap(),
    ]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    for file in ["points.csv", "nab.csv", "alerts.csv", "svg"] {
        let name = format!("artificialWithAnomaly/art_daily_jumpsup.{file}");
        assert!(read(&out.path().join(&name)) == read(&again.path().join(&name)), "{name} differs between runs");
    }
}

#[test]
fn bad_input_says_where() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("bad.csv");
    std::fs::write(&csv, "timestamp,value\n2014-04-01 00:00:00,1\n2014-04-01 00:05:00,oops\n").unwrap();
    let run = backtest(&["--csv", csv.to_str().unwrap()]);
    assert_eq!(run.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("bad.csv:3: value \"oops\" is not a number"), "{stderr}");

    // labels are checked against the rows before any replay: a window edge that is no row's time
    let good = data("artificialWithAnomaly/art_daily_jumpsup.csv");
    let labels = dir.path().join("labels.json");
    std::fs::write(&labels, r#"{"artificialWithAnomaly/art_daily_jumpsup.csv": [["2014-04-10 16:17:00", "2014-04-12 01:45:00"]]}"#)
        .unwrap();
    let run = backtest(&["--csv", good.to_str().unwrap(), "--labels", labels.to_str().unwrap()]);
    assert_eq!(run.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("labels of artificialWithAnomaly/art_daily_jumpsup.csv"), "{stderr}");
    assert!(run.stdout.is_empty(), "nothing replayed: {}", String::from_utf8_lossy(&run.stdout));

    // a model that does not fit the data's spacing: a season shorter than the 5m rows
    let short = dir.path().join("short.yaml");
    std::fs::write(
        &short,
        "groups:\n  - name: g\n    rules:\n      - { forecast: a, expr: x, step: 1m, model: { type: seasonal_naive, season: 2m } }\n",
    )
    .unwrap();
    let run = backtest(&["--rules", short.to_str().unwrap(), "--csv", good.to_str().unwrap()]);
    assert_eq!(run.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("artificialWithAnomaly/art_daily_jumpsup.csv: at its step of 5m"), "{stderr}");

    let rules = dir.path().join("two.yaml");
    std::fs::write(&rules, "groups:\n  - name: g\n    rules:\n      - { forecast: a, expr: x }\n      - { forecast: b, expr: y }\n")
        .unwrap();
    let run = backtest(&["--rules", rules.to_str().unwrap(), "--csv", csv.to_str().unwrap()]);
    assert_eq!(run.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&run.stderr).contains("the rule file has 2 rules: pick one with --rule"));
}

/// A range from a real Prometheus replays exactly like the same rows from a CSV: both inputs go
/// through the same engine path, so the model columns agree row for row, for the default online
/// model and for a batch one.
#[test]
fn prometheus_range_replays_like_the_csv() {
    use crate::harness::{nab_values, unix_now, Backfill, Prometheus};
    let rows = 1500;
    let values = nab_values("artificialWithAnomaly/art_daily_jumpsup.csv")[..rows].to_vec();
    // The online model's phases follow the clock: Prometheus's copy ends at the CSV's time of day
    // (its last row is 2014-04-01 00:00 UTC plus 1,499 steps), a whole number of days later.
    let csv_end = 1_396_310_400 + (rows as i64 - 1) * 300;
    let latest = unix_now() - 300;
    let end = latest - (latest - csv_end).rem_euclid(86_400);
    let prom = Prometheus::start(&[Backfill { labels: vec![("dataset".into(), "jumpsup".into())], values }], end);
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("jumps.csv");
    let text = read(&data("artificialWithAnomaly/art_daily_jumpsup.csv"));
    std::fs::write(&csv, text.lines().take(rows + 1).collect::<Vec<_>>().join("\n")).unwrap();
    let (start, end) = ((end - (rows as i64 - 1) * 300).to_string(), end.to_string());
    for model in ["", "\n        model: { type: mstl, seasonality: [1d] }"] {
        let rules = dir.path().join("r.yaml");
        std::fs::write(
            &rules,
            format!("groups:\n  - name: g\n    rules:\n      - forecast: jumps\n        expr: nab_value{{dataset=\"jumpsup\"}}\n        step: 5m{model}\n"),
        )
        .unwrap();
        let from_prom = dir.path().join("prom");
        let from_csv = dir.path().join("csv");
        for out in [&from_prom, &from_csv] {
            let _ = std::fs::remove_dir_all(out);
        }
        let run = backtest(&[
            "--rules",
            rules.to_str().unwrap(),
            "--source",
            &prom.url(),
            "--start",
            &start,
            "--end",
            &end,
            "--out",
            from_prom.to_str().unwrap(),
        ]);
        assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
        let run = backtest(&["--rules", rules.to_str().unwrap(), "--csv", csv.to_str().unwrap(), "--out", from_csv.to_str().unwrap()]);
        assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));

        let points = |dir: &Path| -> Vec<String> {
            let found: Vec<PathBuf> = walk(dir).into_iter().filter(|p| p.to_string_lossy().ends_with(".points.csv")).collect();
            assert_eq!(found.len(), 1, "{found:?}");
            // drop the timestamp column: the CSV keeps 2014's times, Prometheus has today's
            read(&found[0]).lines().skip(1).map(|l| l.split_once(',').unwrap().1.to_string()).collect()
        };
        let (a, b) = (points(&from_prom), points(&from_csv));
        assert_eq!(a.len(), rows);
        assert!(a.iter().filter(|l| !l.ends_with(',')).count() > 800, "{model}: most rows scored");
        assert_eq!(a, b, "{model}");
    }
}

/// An autoencoder rule replays like a forecast rule: NAB's machine temperature through the
/// committed dense model scores every row once a window is full, alerts in each of the four
/// labelled windows, and leaves the prediction columns empty. A detector of two channels is
/// refused, since a recording is one series.
#[test]
fn autoencoder_rules_replay() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dataset = root.join("../shared/datasets/nab-dev");
    let csv = dataset.join("realKnownCause/machine_temperature_system_failure.csv");
    let out = tempfile::tempdir().unwrap();
    let rules = root.join("examples/autoencoder/rules.yaml");
    let run = backtest(&[
        "--rules",
        rules.to_str().unwrap(),
        "--rule",
        "machine_temperature_dense",
        "--csv",
        csv.to_str().unwrap(),
        "--labels",
        dataset.join("labels.json").to_str().unwrap(),
        "--out",
        out.path().to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&run.stderr));
    let line: Vec<&str> =
        stdout.lines().find(|l| l.starts_with("realKnownCause/machine_temperature")).unwrap().split_whitespace().collect();
    // rows, scored: all but the first rows, before the model's window of 32 steps can be filled
    let (rows, scored): (usize, usize) = (line[1].parse().unwrap(), line[2].parse().unwrap());
    assert_eq!(rows, 22695);
    assert!((22600..rows).contains(&scored), "{line:?}");
    // tp 4, fn 0 at score >= 1; 4 windows alerted
    assert_eq!((line[4], line[6], line[11]), ("4", "0", "4"), "{line:?}");
    let points = read(&out.path().join("realKnownCause/machine_temperature_system_failure.points.csv"));
    let scored_row = points.lines().nth(1000).unwrap();
    let fields: Vec<&str> = scored_row.split(',').collect();
    assert_eq!(fields[2..5], ["", "", ""], "no prediction: {scored_row}");
    assert!(fields[5].parse::<f64>().unwrap() >= 0.0, "{scored_row}");

    let two = out.path().join("two.yaml");
    std::fs::write(
        &two,
        "groups:\n  - name: g\n    rules:\n      - anomaly: pair\n        step: 5m\n        channels:\n          - { name: a, expr: a }\n          - { name: b, expr: b }\n        detector: { type: autoencoder, model_file: m.onnx }\n",
    )
    .unwrap();
    let run = backtest(&["--rules", two.to_str().unwrap(), "--csv", csv.to_str().unwrap()]);
    assert_eq!(run.status.code(), Some(1), "{}", String::from_utf8_lossy(&run.stderr));
    assert!(String::from_utf8_lossy(&run.stderr).contains("rule \"pair\" has 2 channels; a backtest replays one series per recording"));
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// The progress bar is drawn on a terminal (a pty from util-linux's `script`) and only there.
#[test]
fn progress_bar_only_on_a_terminal() {
    let csv = data("artificialWithAnomaly/art_daily_jumpsup.csv");
    let command = format!("{} backtest --csv {}", env!("CARGO_BIN_EXE_pulsewatch"), csv.display());
    let dir = tempfile::tempdir().unwrap();
    let typescript = dir.path().join("tty.log");
    let status = Command::new("script")
        .args(["-qec", &command])
        .arg(&typescript)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("`script` (Debian's bsdutils, util-linux) runs the backtest on a pty");
    assert!(status.success());
    let on_tty = String::from_utf8_lossy(&std::fs::read(&typescript).unwrap()).into_owned();
    assert!(on_tty.contains("/4032 rows"), "no progress bar on a terminal:\n{}", &on_tty[..on_tty.len().min(500)]);
    let piped = backtest(&["--csv", csv.to_str().unwrap()]);
    assert!(piped.status.success());
    assert!(!String::from_utf8_lossy(&piped.stderr).contains("rows"), "a progress bar on a pipe");
}

/// The figures the README states for `nab-dev` (with the default settings) are what a backtest
/// of `../shared/datasets/nab-dev` prints: NAB's three scores, windows flagged and false runs.
#[test]
fn readme_figures_for_nab_dev_hold() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = read(&root.join("README.md"));
    let start = readme.find("With the default settings, the 21 NAB files of").expect("the README's nab-dev paragraph");
    // one line: the figures' sentences wrap anywhere
    let paragraph = readme[start..start + readme[start..].find("\n\n").unwrap()].split_whitespace().collect::<Vec<_>>().join(" ");
    // "**52.3** (standard), **44.3** (reward_low_FP) and **58.0** (reward_low_FN)"
    let stated: Vec<f64> = paragraph.split("**").skip(1).step_by(2).take(3).map(|n| n.parse().unwrap()).collect();
    let number_before = |marker: &str| -> usize {
        let at = paragraph.find(marker).unwrap_or_else(|| panic!("{marker:?} in: {paragraph}"));
        paragraph[..at].split_whitespace().last().unwrap().parse().unwrap()
    };
    let (flagged, false_runs) = (number_before(" of the 26 windows are flagged"), number_before(" runs of flagged rows outside"));
    // "The shipped alerting rules would have alerted in 10 of the 26 windows, with 18 false alerts"
    let (alerted, false_alerts) = (number_before(" of the 26 windows, with"), number_before(" false alerts"));
    // "the standard score is 52.9 (the `NAB cross-validated` line of the summary)"
    let cross_validated: f64 = {
        let at = paragraph.find(" (the `NAB cross-validated` line").expect("the cross-validated figure");
        paragraph[..at].split_whitespace().last().unwrap().parse().unwrap()
    };

    let dataset = root.join("../shared/datasets/nab-dev");
    assert!(
        dataset.join("labels.json").is_file(),
        "{} is missing: the project's shared data sets sit beside the repository",
        dataset.display()
    );
    let run = backtest(&["--dataset", dataset.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&run.stderr));
    let score = |profile: &str| -> f64 {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(&format!("NAB {profile} ")))
            .unwrap_or_else(|| panic!("no NAB {profile} line:\n{stdout}"));
        line.split_whitespace().nth(2).unwrap().parse().unwrap()
    };
    let measured = [score("standard"), score("reward_low_FP_rate"), score("reward_low_FN_rate")];
    assert_eq!(measured.to_vec(), stated, "NAB scores (standard, reward_low_FP, reward_low_FN) against the README's");
    let total: Vec<&str> = stdout.lines().find(|l| l.starts_with("total ")).unwrap().split_whitespace().collect();
    assert_eq!(
        (total[4].parse::<usize>().unwrap(), total[5].parse::<usize>().unwrap()),
        (flagged, false_runs),
        "windows flagged and false runs at score >= 1: {total:?}"
    );
    assert_eq!(total[4].parse::<usize>().unwrap() + total[6].parse::<usize>().unwrap(), 26, "26 windows");
    // "alerts (pulsewatch-anomaly of rules/pulsewatch.rules.yml): 10 of 26 windows alerted, 16 missed, 18 false alerts (...)"
    let alerts = stdout.lines().find(|l| l.starts_with("alerts (")).unwrap_or_else(|| panic!("no alerts line:\n{stdout}"));
    let words: Vec<&str> = alerts.split(": ").nth(1).unwrap().split_whitespace().collect();
    let count = |i: usize| -> usize { words[i].parse().unwrap_or_else(|e| panic!("{:?} in {alerts}: {e}", words[i])) };
    assert_eq!((count(2), count(5) + count(0)), (26, 26), "windows alerted and missed: {alerts}");
    assert_eq!((count(0), count(7)), (alerted, false_alerts), "windows alerted and false alerts with the shipped rules: {alerts}");
    let folded =
        stdout.lines().find(|l| l.starts_with("NAB cross-validated")).unwrap_or_else(|| panic!("no cross-validated line:\n{stdout}"));
    let standard = folded.split("standard ").nth(1).and_then(|rest| rest.split(',').next()).unwrap();
    assert_eq!(standard.parse::<f64>().unwrap(), cross_validated, "cross-validated standard score: {folded}");
}

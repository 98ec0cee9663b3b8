//! Benchmarks: per-series model fit and per-sample update+score CPU time on one week at 5-minute
//! steps (2016 samples of NAB's art_daily_small_noise), autoencoder inference per window (the
//! committed machine-temperature models, one window per call and batched), `/metrics` render
//! time at 10k and 100k exported series of one rule, and the exporter's cost with 1k–10k rules
//! (one evaluation of every rule, a scrape, a reload). Run with `cargo bench --bench pulsewatch`;
//! prints Markdown tables. `cargo bench --bench pulsewatch -- rules` (or `render`, `models`,
//! `autoencoders`) runs only those tables.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use prometheus_client::registry::Registry;
use pulsewatch::config::{Direction, Duration as PwDuration, GroupKey, Rule, RuleGroup, Schedule, Seasonality};
use pulsewatch::detector::Autoencoder;
use pulsewatch::exporter::{encode, Exporter, Format, RuleId, SeriesOutput, SnapshotCollector};
use pulsewatch::models::{fit, train, ModelSpec, Point, SeriesModel};

const STEP: i64 = 300;
const WEEK: usize = 2016;

fn series() -> Vec<f64> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/nab/artificialNoAnomaly/art_daily_small_noise.csv");
    std::fs::read_to_string(path).unwrap().lines().skip(1).map(|l| l.split(',').nth(1).unwrap().parse().unwrap()).collect()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn models() -> Vec<(&'static str, ModelSpec, usize)> {
    let day = PwDuration::from_secs(86400);
    let mut m = vec![
        ("mstl [1d]", ModelSpec::Mstl { seasonality: vec![day.clone()] }, 7),
        ("ets", ModelSpec::Ets {}, 7),
        ("holt", ModelSpec::Holt {}, 7),
        ("linear", ModelSpec::Linear {}, 7),
        ("seasonal_naive 1d", ModelSpec::SeasonalNaive { season: day.clone() }, 7),
        ("online, seasonality auto", ModelSpec::Online { seasonality: Seasonality::Auto }, 7),
        ("zscore 1d", ModelSpec::Zscore { window: day.clone() }, 7),
        ("mad 1d", ModelSpec::Mad { window: day.clone() }, 7),
        ("iqr 1d", ModelSpec::Iqr { window: day }, 7),
    ];
    if cfg!(feature = "prophet") {
        m.push(("prophet", ModelSpec::Prophet {}, 3));
    }
    m
}

fn bench_models() {
    let data = series();
    let history = &data[..WEEK];
    // What an evaluation does per series: score the new sample against the path, update online.
    let horizon = 12 * 6 + 12; // refit 6h + 1h of horizons at 5m steps
    println!("| model | fit, one series (median) | update + score, one sample (mean) |\n|---|---|---|");
    for (name, spec, runs) in models() {
        // The first Prophet fit also creates the wasmstan optimizer (once per process); keep it out.
        let _ = fit(&spec, history, 0, STEP, 0.95, horizon);
        let fits: Vec<Duration> = (0..runs)
            .map(|_| {
                let t = Instant::now();
                black_box(train(&spec, black_box(history), 0, STEP, 0.95, horizon).unwrap());
                t.elapsed()
            })
            .collect();
        // Updates as the engine runs them: a batch model's band calibrated, scored over the
        // following week so that the calibration's periodic recomputation is included; an online
        // model learning every sample.
        let trained = train(&spec, history, 0, STEP, 0.99, WEEK).unwrap();
        let updates = 200_000;
        let mut total = Duration::ZERO;
        let mut done = 0;
        while done < updates {
            let model = SeriesModel::new(STEP, WEEK);
            let mut model = if spec.is_online() { model } else { model.calibrated(0.99) };
            for (i, v) in history.iter().enumerate() {
                model.push(i as i64 * STEP, *v);
            }
            let at = (WEEK as i64 - 1) * STEP;
            model.set_fit(at, trained.clone());
            let t = Instant::now();
            for k in 1..=WEEK as i64 {
                black_box(model.observe(at + k * STEP, data[WEEK + k as usize - 1], Direction::Both, 0.0));
            }
            total += t.elapsed();
            done += WEEK;
        }
        println!("| {name} | {:.2} ms | {:.0} ns |", median(fits).as_secs_f64() * 1e3, total.as_secs_f64() * 1e9 / done as f64);
    }
}

/// The one-series forecast rule the render and rules benches export.
fn bench_rule() -> Rule {
    pulsewatch::config::rules::parse(
        std::path::Path::new("bench.yaml"),
        "groups: [{ name: g, rules: [{ forecast: bench, expr: up, step: 1m, history: 1d, refit: 1h, model: { type: linear }, horizons: [1h] }] }]",
        &Default::default(),
    )
    .expect("the bench rule is valid")
    .remove(0)
    .rules
    .remove(0)
}

fn bench_render() {
    println!(
        "\n| exported input series | label names | output samples | record (writes the lines) | first scrape after it: text | OpenMetrics | OpenMetrics, UTF-8 names | later scrapes (median of 5): text | OpenMetrics | OpenMetrics, UTF-8 names |\n|---|---|---|---|---|---|---|---|---|---|"
    );
    // Legacy names only, and OpenTelemetry-style names that every scrape escapes (or quotes).
    for (n, otel) in [(10_000usize, false), (100_000, false), (10_000, true), (100_000, true)] {
        let exporter = Exporter::default();
        let rule = bench_rule();
        let group = RuleGroup {
            key: GroupKey { file: "bench.yaml".into(), name: "g".into() },
            schedule: Schedule::Interval(PwDuration::from_secs(60)),
            rules: vec![rule.clone()],
        };
        exporter.set_group(&group, 60.0, &[]);
        let point = Point { ts: 0, y: 1.5, yhat: 1.25, lower: 0.5, upper: 2.0, score: 0.3333 };
        let outputs: Vec<SeriesOutput> = (0..n)
            .map(|i| {
                let (instance, job) = if otel { ("service.instance.id", "service.name") } else { ("instance", "job") };
                let labels = BTreeMap::from([(instance.to_string(), format!("host-{i:06}:9100")), (job.to_string(), "node".to_string())]);
                SeriesOutput::forecast(&labels, &rule, point, vec![("1h".into(), (1.0, 0.5, 1.5))])
            })
            .collect();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
        // The outputs are copied before the clock starts: building them is the evaluation's work.
        let evaluate = || {
            let outputs = outputs.clone();
            let t = Instant::now();
            exporter.record(&RuleId { group: group.key.clone(), rule: "bench".into() }, now, 0.0, Ok((outputs, 0, n)), 3600.0);
            t.elapsed()
        };
        let (registry, snapshot) = (Registry::default(), SnapshotCollector::new(exporter.clone()));
        let scrape = |format: Format| {
            let t = Instant::now();
            black_box(encode(&registry, Some(&snapshot), format).unwrap());
            t.elapsed()
        };
        let utf8 = Format::negotiate(Some("application/openmetrics-text;version=1.0.0;escaping=allow-utf-8"));
        let formats = [Format::TEXT, Format::OPENMETRICS, utf8];
        // A record writes the lines for the default escaping; the first scrape in another writes
        // those; later scrapes copy them.
        let record = median((0..3).map(|_| evaluate()).collect());
        let first: Vec<Duration> = formats
            .iter()
            .map(|&format| {
                evaluate();
                scrape(format)
            })
            .collect();
        let later: Vec<Duration> = formats.iter().map(|&format| median((0..5).map(|_| scrape(format)).collect())).collect();
        let samples = encode(&registry, Some(&snapshot), Format::TEXT).unwrap().lines().filter(|l| l.starts_with("pulsewatch_")).count();
        let cells: Vec<String> = [record].iter().chain(&first).chain(&later).map(|d| format!("{:.1} ms", d.as_secs_f64() * 1e3)).collect();
        println!(
            "| {n} | {} | {samples} | {} |",
            if otel { "`service.instance.id`, `service.name`" } else { "`instance`, `job`" },
            cells.join(" | ")
        );
    }
}

/// `n` rules of one series each, in groups of `per_group`: what one evaluation of every rule costs
/// the exporter (one `record` per rule, as at a 1 m cadence), what a scrape costs, and what a
/// reload that keeps every rule costs (`set_group` per group).
fn bench_rules() {
    println!(
        "\n| rules (1 series each) | groups | record every rule once | per record | first scrape after that, text | later scrapes (median of 5): text | OpenMetrics | reload (set_group, every group) | exporter CPU at 1 m evaluations + 15 s scrapes |\n|---|---|---|---|---|---|---|---|---|"
    );
    let base = bench_rule();
    // Groups of 100 rules, and once 10,000 groups of one rule (a reload then lists 10,000 groups).
    for (n, per_group) in [(1_000usize, 100usize), (3_000, 100), (10_000, 100), (10_000, 1)] {
        let groups: Vec<RuleGroup> = (0..n.div_ceil(per_group))
            .map(|g| RuleGroup {
                key: GroupKey { file: format!("rules/bench-{g:03}.yaml").into(), name: format!("g{g:03}") },
                schedule: Schedule::Interval(PwDuration::from_secs(60)),
                rules: (0..per_group.min(n - g * per_group))
                    .map(|r| Rule { name: format!("rule_{g:03}_{r:03}"), ..base.clone() })
                    .collect(),
            })
            .collect();
        let exporter = Exporter::default();
        for group in &groups {
            exporter.set_group(group, 60.0, &[]);
        }
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
        let point = Point { ts: now as i64, y: 1.5, yhat: 1.25, lower: 0.5, upper: 2.0, score: 0.3333 };
        // The outputs are built before the clock starts: building them is the evaluation's work.
        let outputs: Vec<(RuleId, Vec<SeriesOutput>)> = groups
            .iter()
            .flat_map(|group| {
                group.rules.iter().enumerate().map(move |(i, rule)| {
                    let labels =
                        BTreeMap::from([("instance".to_string(), format!("host-{i:03}:9100")), ("job".to_string(), "node".to_string())]);
                    let series = vec![SeriesOutput::forecast(&labels, rule, point, vec![("1h".into(), (1.0, 0.5, 1.5))])];
                    (RuleId { group: group.key.clone(), rule: rule.name.clone() }, series)
                })
            })
            .collect();
        let t = Instant::now();
        for (id, series) in outputs {
            exporter.record(&id, now, 0.01, Ok((series, 0, 1)), 3600.0);
        }
        let record = t.elapsed();
        let (registry, snapshot) = (Registry::default(), SnapshotCollector::new(exporter.clone()));
        let scrape = |format: Format| {
            let t = Instant::now();
            black_box(encode(&registry, Some(&snapshot), format).unwrap());
            t.elapsed()
        };
        // Each record wrote its rule's lines: every scrape copies them.
        let first = scrape(Format::TEXT);
        let time = |format: Format| median((0..5).map(|_| scrape(format)).collect());
        let (text, om) = (time(Format::TEXT), time(Format::OPENMETRICS));
        let kept: Vec<Vec<String>> = groups.iter().map(|g| g.rules.iter().map(|r| r.name.clone()).collect()).collect();
        let t = Instant::now();
        for (group, kept) in groups.iter().zip(&kept) {
            exporter.set_group(group, 60.0, kept);
        }
        let reload = t.elapsed();
        let cpu = (record.as_secs_f64() + first.as_secs_f64() + 3.0 * text.as_secs_f64().max(om.as_secs_f64())) / 60.0;
        println!(
            "| {n} | {} | {:.1} ms | {:.1} µs | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | {:.2}% of a core |",
            groups.len(),
            record.as_secs_f64() * 1e3,
            record.as_secs_f64() * 1e6 / n as f64,
            first.as_secs_f64() * 1e3,
            text.as_secs_f64() * 1e3,
            om.as_secs_f64() * 1e3,
            reload.as_secs_f64() * 1e3,
            cpu * 100.0
        );
    }
}

fn bench_autoencoders() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/autoencoder/data/machine_temperature_system_failure.csv");
    let data: Vec<f64> =
        std::fs::read_to_string(path).unwrap().lines().skip(1).map(|l| l.split(',').nth(1).unwrap().parse().unwrap()).collect();
    println!("\n| model | load | one window per call (mean) | batches of 1,000 windows, per window (mean) |\n|---|---|---|---|");
    for kind in ["dense", "lstm"] {
        let file = format!("{}/examples/autoencoder/models/machine_temperature_{kind}.onnx", env!("CARGO_MANIFEST_DIR"));
        let loads: Vec<Duration> = (0..5)
            .map(|_| {
                let t = Instant::now();
                black_box(Autoencoder::load(std::path::Path::new(&file)).unwrap());
                t.elapsed()
            })
            .collect();
        let model = Autoencoder::load(std::path::Path::new(&file)).unwrap();
        let n = model.window();
        // 1,000 consecutive windows of the series, as one rule with 1,000 series would score them
        let windows: Vec<f64> = (0..1000).flat_map(|i| data[i * 7..i * 7 + n].to_vec()).collect();
        let rounds = 5;
        let t = Instant::now();
        for _ in 0..rounds {
            for w in windows.chunks(n) {
                black_box(model.reconstruction_errors(black_box(w)).unwrap());
            }
        }
        let single = t.elapsed().as_secs_f64() / (rounds * 1000) as f64;
        let t = Instant::now();
        for _ in 0..rounds {
            black_box(model.reconstruction_errors(black_box(&windows)).unwrap());
        }
        let batched = t.elapsed().as_secs_f64() / (rounds * 1000) as f64;
        println!(
            "| {kind} (window {n}) | {:.1} ms | {:.1} µs | {:.1} µs |",
            median(loads).as_secs_f64() * 1e3,
            single * 1e6,
            batched * 1e6
        );
    }
}

fn main() {
    // `cargo test --all-targets` builds and runs benches with `--bench`-less args: stay quick there.
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let run = |name: &str| args.is_empty() || args.iter().any(|a| a == name);
    if std::env::args().any(|a| a == "--bench") {
        if run("models") {
            bench_models();
        }
        if run("autoencoders") {
            bench_autoencoders();
        }
        if run("render") {
            bench_render();
        }
        if run("rules") {
            bench_rules();
        }
    }
}

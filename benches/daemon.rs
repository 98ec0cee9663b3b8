//! Benchmarks of the daemon binary against a stub Prometheus on 127.0.0.1 (docs/benchmarks.md,
//! "10,000 rules" and "Signal to exit during a Prophet fit"):
//!
//! - `rules`: 10,000 forecast rules of one series each at a 1 m interval, in several layouts of
//!   groups. Once every rule has had its first evaluation, the daemon's CPU (utime + stime of
//!   `/proc/<pid>/stat`) over a 60 s window in which Prometheus-like scrapes come every 15 s,
//!   then the latency of 20 scrapes of `/metrics` one after another in each format, and the
//!   daemon's CPU per scrape (which machine load does not inflate, unlike the latency).
//! - `prophet`: SIGTERM while a Prophet fit of a long history runs, with a 2 s grace period:
//!   the time from the signal to the process's exit.
//!
//! Run with `cargo bench --bench daemon` (optionally `-- rules` or `-- prophet`); prints
//! Markdown tables. The stub answers `query_range` at once with series on the asked grid; it
//! runs in this process, so the daemon's CPU is its own. Every scenario is bounded in time, the
//! only process started is the daemon (stopped by its PID: SIGTERM, SIGKILL if it outlives a
//! bound), and all traffic stays on 127.0.0.1. `PULSEWATCH_BIN` runs another daemon binary.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Form, State};
use axum::response::IntoResponse;

/// Rules in the `rules` scenario, one series each.
const RULES: usize = 10_000;
/// The window over which the daemon's CPU is measured: one evaluation of every rule.
const CPU_WINDOW: Duration = Duration::from_secs(60);
/// Scrapes during the window (as Prometheus at a 15 s interval).
const SCRAPE_EVERY: Duration = Duration::from_secs(15);
/// Scrapes timed one after another after the window, in each format.
const TIMED_SCRAPES: usize = 20;
/// The formats: the text format (no `Accept`), OpenMetrics as Prometheus's default
/// `scrape_protocols` ask for it, and that gzipped, as Prometheus always asks
/// (`Accept-Encoding: gzip`; the body is then counted compressed and its samples are not).
const FORMATS: [(&str, Option<&str>, bool); 3] =
    [("text 0.0.4", None, false), ("OpenMetrics", Some(PROMETHEUS_ACCEPT), false), ("OpenMetrics, gzip", Some(PROMETHEUS_ACCEPT), true)];
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.3,*/*;q=0.2";
/// How long the first evaluation of every rule may take before the scenario gives up.
const FIRST_PASS_BOUND: Duration = Duration::from_secs(240);
/// Series of the Prophet rule, and their history (7 days at 1 m: 10,080 points each).
const PROPHET_SERIES: usize = 4;
/// Runs of the signal-during-a-fit case.
const PROPHET_RUNS: usize = 3;
/// When SIGTERM comes, after the stub answered the history query.
const SIGNAL_AFTER_ANSWER: Duration = Duration::from_millis(1000);
const GRACE: &str = "2s";
/// How long the daemon may take to exit before it is killed and the run counted as failed.
const EXIT_BOUND: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// The stub Prometheus

/// What the stub saw: history queries (more than one point asked) and incremental ones, and
/// when it last answered a history query.
#[derive(Default)]
struct Stub {
    history: AtomicU64,
    incremental: AtomicU64,
    samples: AtomicU64,
    last_history_answer: Mutex<Option<Instant>>,
}

#[derive(serde::Deserialize)]
struct QueryRange {
    query: String,
    start: i64,
    end: i64,
    step: i64,
}

/// A deterministic value in [0, 1) for `(series, ts)`.
fn noise(series: u64, ts: i64) -> f64 {
    let mut x = (ts as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ series.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 31;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 29;
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// `prophet_input` answers `PROPHET_SERIES` series with a daily and a weekly season; any other
/// expression one series (`instance="stub"`) of a daily season with noise.
async fn query_range(State(stub): State<Arc<Stub>>, Form(q): Form<QueryRange>) -> impl IntoResponse {
    let points = if q.step > 0 && q.end >= q.start { (q.end - q.start) / q.step + 1 } else { 0 };
    let series = if q.query == "prophet_input" { PROPHET_SERIES } else { 1 };
    let mut body = String::with_capacity(64 + series * points as usize * 24);
    body.push_str(r#"{"status":"success","data":{"resultType":"matrix","result":["#);
    for s in 0..series {
        if s > 0 {
            body.push(',');
        }
        body.push_str(&format!(r#"{{"metric":{{"instance":"stub","series":"{s}"}},"values":["#));
        for k in 0..points {
            let ts = q.start + k * q.step;
            let day = (ts % 86_400) as f64 / 86_400.0 * std::f64::consts::TAU;
            let week = (ts % 604_800) as f64 / 604_800.0 * std::f64::consts::TAU;
            let v = 100.0 + 20.0 * day.sin() + 5.0 * week.sin() + 3.0 * noise(s as u64, ts);
            if k > 0 {
                body.push(',');
            }
            body.push_str(&format!(r#"[{ts},"{v:.4}"]"#));
        }
        body.push_str("]}");
    }
    body.push_str("]}}");
    stub.samples.fetch_add((series as i64 * points) as u64, Ordering::Relaxed);
    if points > 1 {
        stub.history.fetch_add(1, Ordering::Relaxed);
        *stub.last_history_answer.lock().unwrap() = Some(Instant::now());
    } else {
        stub.incremental.fetch_add(1, Ordering::Relaxed);
    }
    ([(axum::http::header::CONTENT_TYPE, "application/json")], body)
}

/// Starts the stub on the current runtime; returns its port.
async fn start_stub(stub: Arc<Stub>) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new().route("/api/v1/query_range", axum::routing::post(query_range).get(query_range)).with_state(stub);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    port
}

// ---------------------------------------------------------------------------------------------
// The daemon

struct Daemon {
    child: Child,
    port: u16,
    log: std::path::PathBuf,
}

impl Daemon {
    fn start(dir: &Path, config: &str, args: &[&str]) -> Self {
        std::fs::write(dir.join("pulsewatch.yml"), config).unwrap();
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let log = dir.join("pulsewatch.log");
        let bin = std::env::var("PULSEWATCH_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_pulsewatch").to_string());
        let child = Command::new(bin)
            .arg(format!("--config.file={}", dir.join("pulsewatch.yml").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .args(args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Self { child, port, log }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/metrics", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// utime + stime of the daemon, seconds.
    fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        // The command name may hold spaces: fields count from after its closing parenthesis.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = rest.split(' ').collect();
        // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
        let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
        ticks / clock_ticks()
    }

    fn rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let kib: f64 =
            status.lines().find_map(|l| l.strip_prefix("VmRSS:")).unwrap().trim().trim_end_matches(" kB").trim().parse().unwrap();
        kib / 1024.0
    }

    /// Sends `signal` to the daemon (by its PID).
    fn signal(&self, signal: &str) {
        let sent = Command::new("kill").arg(format!("-{signal}")).arg(self.pid().to_string()).status().unwrap();
        assert!(sent.success());
    }

    /// Waits for the exit, polling every 10 ms; `None` after `bound`.
    fn wait_exit(&mut self, bound: Duration) -> Option<ExitStatus> {
        let began = Instant::now();
        while began.elapsed() < bound {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    /// SIGTERM, then the time to exit (SIGKILL and `None` if it outlives `EXIT_BOUND`).
    fn terminate(&mut self) -> Option<(Duration, ExitStatus)> {
        let began = Instant::now();
        self.signal("TERM");
        self.wait_exit(EXIT_BOUND).map(|status| (began.elapsed(), status))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        let out = Command::new("getconf").arg("CLK_TCK").output().expect("getconf (libc-bin)");
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    })
}

/// One scrape: its latency, and the body's size and sample lines (0 when gzipped); `None` if
/// it failed.
async fn scrape(client: &reqwest::Client, url: &str, accept: Option<&str>, gzip: bool) -> Option<(Duration, usize, usize)> {
    let t = Instant::now();
    let mut request = client.get(url);
    if let Some(accept) = accept {
        request = request.header("accept", accept);
    }
    if gzip {
        request = request.header("accept-encoding", "gzip");
    }
    let resp = request.send().await.ok()?;
    if resp.status() != 200 {
        return None;
    }
    let body = resp.bytes().await.ok()?;
    let took = t.elapsed();
    let samples = if gzip { 0 } else { body.split(|b| *b == b'\n').filter(|l| !l.starts_with(b"#") && !l.is_empty()).count() };
    Some((took, body.len(), samples))
}

async fn wait_up(client: &reqwest::Client, daemon: &mut Daemon) {
    let began = Instant::now();
    while scrape(client, &daemon.url(), None, false).await.is_none() {
        assert!(daemon.child.try_wait().unwrap().is_none(), "the daemon exited; log:\n{}", daemon.log());
        assert!(began.elapsed() < Duration::from_secs(20), "the daemon did not start; log:\n{}", daemon.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The value of the first sample line that starts with `name` (labels included), or 0.
fn sample(body: &str, name: &str) -> f64 {
    body.lines().find(|l| l.starts_with(name)).and_then(|l| l.rsplit(' ').next()).and_then(|v| v.parse().ok()).unwrap_or(0.0)
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

// ---------------------------------------------------------------------------------------------
// 10,000 rules

/// Writes `RULES` rules in `groups` groups over `files` files (`rules/f-NNN.yaml`).
fn write_rules(dir: &Path, groups: usize, files: usize) {
    std::fs::create_dir_all(dir.join("rules")).unwrap();
    let per_group = RULES / groups;
    let groups_per_file = groups / files;
    let mut rule = 0;
    for f in 0..files {
        let mut text = String::from("groups:\n");
        for g in 0..groups_per_file {
            text.push_str(&format!("  - name: g{f:03}_{g:05}\n    interval: 1m\n    rules:\n"));
            for _ in 0..per_group {
                text.push_str(&format!(
                    "      - {{ forecast: r{rule:05}, expr: 'up{{rule=\"{rule:05}\"}}', step: 1m, history: 1d, refit: 6h, model: {{ type: linear }}, horizons: [1h] }}\n"
                ));
                rule += 1;
            }
        }
        std::fs::write(dir.join(format!("rules/f-{f:03}.yaml")), text).unwrap();
    }
    assert_eq!(rule, RULES);
}

async fn bench_rules(port: u16, stub: &Arc<Stub>) {
    println!(
        "| layout | first evaluation of every rule | RSS | CPU over {} s (OpenMetrics scrapes every {} s) | busiest 15 s | evaluations in the window | /metrics during the window (max) | SIGTERM to exit |",
        CPU_WINDOW.as_secs(),
        SCRAPE_EVERY.as_secs()
    );
    println!("|---|---|---|---|---|---|---|---|");
    let mut scrape_rows = Vec::new();
    let client = reqwest::Client::builder().timeout(Duration::from_secs(120)).build().unwrap();
    for (groups, files) in [(100usize, 10usize), (10_000, 100), (1, 1)] {
        let dir = tempfile::tempdir().unwrap();
        write_rules(dir.path(), groups, files);
        let config = format!("source: {{ url: 'http://127.0.0.1:{port}', timeout: 30s }}\nrule_files: ['rules/*.yaml']\n");
        let history0 = stub.history.load(Ordering::Relaxed);
        let began = Instant::now();
        let mut daemon = Daemon::start(dir.path(), &config, &["--shutdown.grace-period=5s"]);
        wait_up(&client, &mut daemon).await;
        while stub.history.load(Ordering::Relaxed) - history0 < RULES as u64 {
            assert!(began.elapsed() < FIRST_PASS_BOUND, "first evaluations did not end; log:\n{}", daemon.log());
            assert!(daemon.child.try_wait().unwrap().is_none(), "the daemon exited; log:\n{}", daemon.log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let first_pass = began.elapsed();
        // Let the last fits and records finish.
        tokio::time::sleep(Duration::from_secs(5)).await;

        let (cpu0, incremental_before) = (daemon.cpu_seconds(), stub.incremental.load(Ordering::Relaxed));
        let window = Instant::now();
        let mut during = Duration::ZERO;
        let mut busiest = 0.0f64;
        let mut last = (cpu0, Instant::now());
        let mut failed = 0;
        for tick in 1..=CPU_WINDOW.as_secs() / SCRAPE_EVERY.as_secs() {
            match scrape(&client, &daemon.url(), FORMATS[1].1, false).await {
                Some((took, _, _)) => during = during.max(took),
                None => failed += 1,
            }
            tokio::time::sleep_until((window + SCRAPE_EVERY * tick as u32).into()).await;
            let now = (daemon.cpu_seconds(), Instant::now());
            busiest = busiest.max((now.0 - last.0) / now.1.duration_since(last.1).as_secs_f64());
            last = now;
        }
        let cpu = (daemon.cpu_seconds() - cpu0) / window.elapsed().as_secs_f64();
        let evaluations = stub.incremental.load(Ordering::Relaxed) - incremental_before;
        let rss = daemon.rss_mib();

        let layout = format!(
            "{groups} group{} of {} rule{}",
            if groups == 1 { "" } else { "s" },
            RULES / groups,
            if groups == RULES { "" } else { "s" }
        );
        for (format, accept, gzip) in FORMATS {
            let mut timed = Vec::new();
            let mut size = (0, 0);
            let cpu0 = daemon.cpu_seconds();
            for _ in 0..TIMED_SCRAPES {
                match scrape(&client, &daemon.url(), accept, gzip).await {
                    Some((took, bytes, lines)) => {
                        timed.push(took);
                        size = (bytes, lines);
                    }
                    None => failed += 1,
                }
            }
            let cpu_per_scrape = (daemon.cpu_seconds() - cpu0) / TIMED_SCRAPES as f64;
            timed.sort();
            let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
            let body = if gzip {
                format!("{:.2} MB gzipped", size.0 as f64 / 1e6)
            } else {
                format!("{:.1} MB, {} samples", size.0 as f64 / 1e6, size.1)
            };
            scrape_rows.push(format!(
                "| {layout} | {format} | {body} | {} | {} | {:.0} ms | {} |",
                timed.get(timed.len() / 2).map_or("–".into(), |d| ms(*d)),
                timed.last().map_or("–".into(), |d| ms(*d)),
                cpu_per_scrape * 1e3,
                load.split(' ').next().unwrap_or("?")
            ));
        }
        let exit = daemon.terminate();
        println!(
            "| {layout} | {:.1} s | {:.0} MiB | {:.2}% of a core | {:.1}% | {evaluations} | {}{} | {} |",
            first_pass.as_secs_f64(),
            rss,
            cpu * 100.0,
            busiest * 100.0,
            ms(during),
            if failed > 0 { format!(", {failed} scrapes failed") } else { String::new() },
            exit.map_or("killed after 60 s".into(), |(d, s)| format!("{} ({s})", ms(d)))
        );
    }
    println!(
        "\n| layout | format | body | /metrics, {TIMED_SCRAPES} scrapes one after another: p50 | max | daemon CPU per scrape | load average (1 min) |\n|---|---|---|---|---|---|---|"
    );
    for row in scrape_rows {
        println!("{row}");
    }
}

// ---------------------------------------------------------------------------------------------
// SIGTERM during a Prophet fit

fn prophet_config(dir: &Path, port: u16) -> String {
    std::fs::create_dir_all(dir.join("rules")).unwrap();
    // A 10 s interval: the group's first run (at its slot within the interval) comes soon.
    std::fs::write(
        dir.join("rules/prophet.yaml"),
        "groups:\n  - name: prophet\n    interval: 10s\n    rules:\n      - { forecast: fitted, expr: prophet_input, step: 1m, history: 7d, refit: 6h, model: { type: prophet }, horizons: [1h] }\n",
    )
    .unwrap();
    format!("source: {{ url: 'http://127.0.0.1:{port}', timeout: 30s }}\nrule_files: ['rules/*.yaml']\n")
}

/// Waits for the stub's next history answer after `since`; its time.
async fn history_answered(stub: &Stub, since: Instant, daemon: &mut Daemon) -> Instant {
    loop {
        if let Some(t) = *stub.last_history_answer.lock().unwrap() {
            if t > since {
                return t;
            }
        }
        assert!(since.elapsed() < Duration::from_secs(60), "no history query; log:\n{}", daemon.log());
        assert!(daemon.child.try_wait().unwrap().is_none(), "the daemon exited; log:\n{}", daemon.log());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A daemon with the Prophet rule in a new directory, once the stub has answered its history
/// query: the directory (kept while the daemon runs), the daemon and when the answer came.
async fn start_prophet(port: u16, stub: &Arc<Stub>, client: &reqwest::Client) -> (tempfile::TempDir, Daemon, Instant) {
    let dir = tempfile::tempdir().unwrap();
    let config = prophet_config(dir.path(), port);
    let began = Instant::now();
    let mut daemon = Daemon::start(dir.path(), &config, &[&format!("--shutdown.grace-period={GRACE}")]);
    wait_up(client, &mut daemon).await;
    let answered = history_answered(stub, began, &mut daemon).await;
    (dir, daemon, answered)
}

async fn bench_prophet(port: u16, stub: &Arc<Stub>) {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let fits = |body: &str| sample(body, "pulsewatch_model_fit_duration_seconds_count");
    let fit_sum = |body: &str| sample(body, "pulsewatch_model_fit_duration_seconds_sum");

    // How long the fits take when nothing interrupts them.
    let (_dir, mut daemon, answered) = start_prophet(port, stub, &client).await;
    let (fitted, sum) = loop {
        let body = client.get(daemon.url()).send().await.unwrap().text().await.unwrap();
        if fits(&body) >= PROPHET_SERIES as f64 {
            break (answered.elapsed(), fit_sum(&body));
        }
        assert!(answered.elapsed() < Duration::from_secs(120), "fits did not finish; log:\n{}", daemon.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let idle_exit = daemon.terminate();
    drop(daemon);
    println!(
        "Uninterrupted: {PROPHET_SERIES} Prophet fits of 10,080 points (7 d at 1 m), 2 at a time, first of the process: {:.2} s from the history answer to the last fit recorded; fit durations sum {:.2} s, mean {:.2} s per series. SIGTERM to exit after the fits: {}.\n",
        fitted.as_secs_f64(),
        sum,
        sum / PROPHET_SERIES as f64,
        idle_exit.map_or("killed after 60 s".into(), |(d, s)| format!("{} ({s})", ms(d)))
    );

    println!(
        "| run | SIGTERM after the history answer | fits recorded at the signal | grace | SIGTERM to exit | exit status | drain timed out (log) |\n|---|---|---|---|---|---|---|"
    );
    for run in 1..=PROPHET_RUNS {
        let (_dir, mut daemon, answered) = start_prophet(port, stub, &client).await;
        tokio::time::sleep_until((answered + SIGNAL_AFTER_ANSWER).into()).await;
        let body = client.get(daemon.url()).send().await.unwrap().text().await.unwrap();
        let at_signal = fits(&body);
        let after = answered.elapsed();
        let exit = daemon.terminate();
        let log = daemon.log();
        println!(
            "| {run} | {} | {at_signal} of {PROPHET_SERIES} | {GRACE} | {} | {} | {} |",
            ms(after),
            exit.as_ref().map_or("killed after 60 s".into(), |(d, _)| ms(*d)),
            exit.as_ref().map_or("–".into(), |(_, s)| s.to_string()),
            if log.contains("did not finish in the grace period") { "yes" } else { "no" }
        );
    }
}

fn main() {
    // `cargo test --all-targets` builds and runs benches without `--bench`: do nothing there.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let run = |name: &str| args.is_empty() || args.iter().any(|a| a == name);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let stub = Arc::new(Stub::default());
        let port = start_stub(stub.clone()).await;
        if run("rules") {
            bench_rules(port, &stub).await;
            println!();
        }
        if run("prophet") {
            bench_prophet(port, &stub).await;
        }
    });
}

//! Chaos: the real binary against a fake upstream that cycles through fault modes (5xx, 429,
//! truncated answers, an oversized answer, NaN and infinite values, future, unsorted and
//! off-grid timestamps, series that collide without `__name__`, label names such as
//! `service.name`, connection resets, answers slower than the source timeout) while `/metrics` is scraped every ~200 ms.
//!
//! Every scrape must pass `promtool check metrics` and hold no NaN or infinite score or
//! prediction; each fault must show in the failure or rejection counters; after each fault the
//! sidecar must score again once the upstream is healthy. Bounded: about 45 s in all.
//! An input label that is not a Prometheus label name (`service.name`) relies on the exporter's
//! escaping of label names.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::harness::*;

/// What the fake upstream does with the next request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Healthy,
    /// 503 with Prometheus's JSON error body.
    ServerError,
    /// 429, as Mimir and Cortex answer when rate limited.
    RateLimited,
    /// A body cut short: a complete response whose JSON ends early, or a connection closed
    /// before the announced length.
    Truncated,
    /// A 1 GiB answer announced (and the first 64 KiB of it sent).
    Oversized,
    /// The newest samples NaN, +Inf and -Inf, and a series of NaN only.
    NonFinite,
    /// Samples after the asked range: a step, a day and 1e12 s ahead.
    FutureTimestamps,
    /// Samples in reverse order, each twice.
    Unsorted,
    /// Samples between grid points, whole and fractional seconds.
    OffGrid,
    /// A second series with the same labels once `__name__` is dropped.
    DuplicateLabelset,
    /// A series with the label `service.name` (OpenTelemetry's), not a Prometheus label name.
    BadLabelNames,
    /// The connection reset before any answer.
    Reset,
    /// The answer only after 2.5 s, beyond the 1 s source timeout.
    Slow,
}

/// What a fault must show on `/metrics` while it lasts.
#[derive(Clone, Copy, Debug)]
enum Shows {
    /// The rule's evaluations fail, and its last error contains this.
    Failure(&'static str),
    /// Samples are rejected for this reason.
    Rejected(&'static str),
    /// A series with this `job` is scored and exported.
    Exported(&'static str),
}

const FAULTS: [(Mode, Shows); 13] = [
    (Mode::ServerError, Shows::Failure("HTTP 503")),
    (Mode::RateLimited, Shows::Failure("HTTP 429")),
    (Mode::Truncated, Shows::Failure("query: ")),
    (Mode::Oversized, Shows::Failure("larger than")),
    (Mode::NonFinite, Shows::Rejected("not_finite")),
    (Mode::FutureTimestamps, Shows::Rejected("out_of_range")),
    (Mode::Unsorted, Shows::Rejected("duplicate")),
    (Mode::OffGrid, Shows::Rejected("off_grid")),
    (Mode::DuplicateLabelset, Shows::Failure("same labelset")),
    (Mode::BadLabelNames, Shows::Exported("otel")),
    (Mode::Reset, Shows::Failure("connecting")),
    (Mode::Slow, Shows::Failure("timed out")),
    (Mode::Truncated, Shows::Failure("query: ")),
];

/// The rule's step, in seconds: 2 s, so that there are whole seconds between grid points.
const STEP: i64 = 2;

/// A fake Prometheus on loopback: `chaos{job="a"}` and `chaos{job="b"}`, a slow wave on the
/// asked grid, or the fault of its current [`Mode`]. One thread per connection, each closed
/// after its answer; the listener lives as long as the test process.
struct Upstream {
    port: u16,
    mode: Arc<Mutex<Mode>>,
}

impl Upstream {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mode = Arc::new(Mutex::new(Mode::Healthy));
        let current = mode.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let current = current.clone();
                std::thread::spawn(move || serve(conn, &current));
            }
        });
        Self { port, mode }
    }

    fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

fn serve(mut conn: TcpStream, mode: &Mutex<Mode>) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    if *mode.lock().unwrap() == Mode::Reset {
        // Closing with the request unread makes the kernel answer with a RST.
        std::thread::sleep(Duration::from_millis(20));
        let _ = conn.read(&mut [0u8; 1]);
        return;
    }
    let Some(form) = read_form(&mut conn) else { return };
    let int = |name: &str| form.iter().find(|(k, _)| k == name).and_then(|(_, v)| v.parse::<f64>().ok()).map(|v| v as i64);
    let (Some(start), Some(end), Some(step)) = (int("start"), int("end"), int("step")) else { return };
    let grid: Vec<i64> = (start..=end).step_by(step.max(1) as usize).collect();
    let wave = |job: &str, t: i64| format!("{}", 10.0 + 2.0 * (t as f64 / 60.0).sin() + if job == "a" { 0.0 } else { 5.0 });
    let series = |name: &str, job: &str, samples: Vec<(String, String)>| -> String {
        let values: Vec<String> = samples.iter().map(|(t, v)| format!("[{t},\"{v}\"]")).collect();
        format!(r#"{{"metric":{{"__name__":"{name}","job":"{job}"}},"values":[{}]}}"#, values.join(","))
    };
    let healthy = |job: &str| -> Vec<(String, String)> { grid.iter().map(|&t| (t.to_string(), wave(job, t))).collect() };
    let matrix =
        |result: Vec<String>| format!(r#"{{"status":"success","data":{{"resultType":"matrix","result":[{}]}}}}"#, result.join(","));
    let mode = *mode.lock().unwrap();
    let answer = match mode {
        Mode::Healthy | Mode::Slow | Mode::Reset => matrix(vec![series("chaos", "a", healthy("a")), series("chaos", "b", healthy("b"))]),
        Mode::ServerError => {
            let body = r#"{"status":"error","errorType":"unavailable","error":"chaos: overloaded"}"#;
            return respond(&mut conn, "503 Service Unavailable", body.as_bytes(), None);
        }
        Mode::RateLimited => return respond(&mut conn, "429 Too Many Requests", b"rate limited", None),
        Mode::Truncated => {
            let full = matrix(vec![series("chaos", "a", healthy("a"))]);
            let cut = &full.as_bytes()[..full.len() / 2];
            // alternately: a complete response of half a JSON, and half a response
            let announced = if end % (2 * STEP) == 0 { None } else { Some(full.len()) };
            return respond(&mut conn, "200 OK", cut, announced);
        }
        Mode::Oversized => {
            let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1073741824\r\nconnection: close\r\n\r\n";
            let _ = conn.write_all(head.as_bytes());
            let _ = conn.write_all(&[b' '; 64 << 10]);
            return;
        }
        Mode::NonFinite => {
            let mut a = healthy("a");
            let mut b = healthy("b");
            for (i, (_, v)) in a.iter_mut().rev().enumerate().take(3) {
                *v = ["NaN", "+Inf", "-Inf"][i].into();
            }
            if let Some(last) = b.last_mut() {
                last.1 = "NaN".into();
            }
            let nan_only: Vec<(String, String)> = grid.iter().map(|t| (t.to_string(), "NaN".to_string())).collect();
            matrix(vec![series("chaos", "a", a), series("chaos", "b", b), series("chaos", "nan", nan_only)])
        }
        Mode::FutureTimestamps => {
            let mut a = healthy("a");
            for ahead in [step, 86_400, 1_000_000_000_000] {
                a.push(((end + ahead).to_string(), "1e6".into()));
            }
            matrix(vec![series("chaos", "a", a), series("chaos", "b", healthy("b"))])
        }
        Mode::Unsorted => {
            let twice = |job: &str| -> Vec<(String, String)> { healthy(job).into_iter().rev().flat_map(|s| [s.clone(), s]).collect() };
            matrix(vec![series("chaos", "a", twice("a")), series("chaos", "b", twice("b"))])
        }
        Mode::OffGrid => {
            let mut a = healthy("a");
            for &t in &grid {
                a.push(((t + 1).to_string(), "1e6".into()));
                a.push((format!("{t}.5"), "1e6".into()));
            }
            matrix(vec![series("chaos", "a", a), series("chaos", "b", healthy("b"))])
        }
        Mode::DuplicateLabelset => {
            matrix(vec![series("chaos", "a", healthy("a")), series("chaos", "b", healthy("b")), series("chaos_copy", "a", healthy("a"))])
        }
        Mode::BadLabelNames => {
            let values: Vec<String> = healthy("a").iter().map(|(t, v)| format!("[{t},\"{v}\"]")).collect();
            let odd = format!(r#"{{"metric":{{"__name__":"chaos","job":"otel","service.name":"api"}},"values":[{}]}}"#, values.join(","));
            matrix(vec![series("chaos", "a", healthy("a")), series("chaos", "b", healthy("b")), odd])
        }
    };
    if mode == Mode::Slow {
        std::thread::sleep(Duration::from_millis(2500));
    }
    respond(&mut conn, "200 OK", answer.as_bytes(), None);
}

/// Writes a response whose `content-length` is `announced` (the body's own length by default).
fn respond(conn: &mut TcpStream, status: &str, body: &[u8], announced: Option<usize>) {
    let head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        announced.unwrap_or(body.len())
    );
    let _ = conn.write_all(head.as_bytes());
    let _ = conn.write_all(body);
}

/// Reads one request and returns its form parameters (reqwest sends a `content-length`).
fn read_form(conn: &mut TcpStream) -> Option<Vec<(String, String)>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = conn.read(&mut chunk).ok().filter(|n| *n > 0)?;
        buf.extend_from_slice(&chunk[..n]);
        let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4) else { continue };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        let length: usize = head.lines().find_map(|l| l.strip_prefix("content-length:")).map_or(0, |v| v.trim().parse().unwrap_or(0));
        if buf.len() >= head_end + length {
            let body = String::from_utf8_lossy(&buf[head_end..head_end + length]).into_owned();
            let url = reqwest::Url::parse(&format!("http://upstream/?{body}")).ok()?;
            return Some(url.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect());
        }
    }
}

/// Runs `promtool check metrics` over a scraped body: the problems it prints, if any.
fn promtool_check(body: &str) -> Result<(), String> {
    let mut child = Command::new(binary("PROMTOOL_BIN", "promtool"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running promtool");
    child.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    }
}

/// The outputs that must never be NaN or infinite.
const FINITE_OUTPUTS: [&str; 5] =
    ["pulsewatch_anomaly_score", "pulsewatch_y", "pulsewatch_yhat", "pulsewatch_yhat_lower", "pulsewatch_yhat_upper"];

/// One scrape, checked: it passes promtool and every output value is finite. Panics otherwise,
/// naming the mode the upstream was in.
fn scrape(pw: &Pulsewatch, mode: Mode) -> Vec<Sample> {
    let Some((_, body)) = get(&format!("{}/metrics", pw.url())) else {
        let log = pw.log();
        let tail: Vec<&str> = log.lines().rev().take(20).collect();
        panic!(
            "during {mode:?}: /metrics did not answer: did pulsewatch die? log tail:\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    };
    if let Err(problems) = promtool_check(&body) {
        panic!("during {mode:?}: promtool check metrics failed:\n{problems}\n--- body:\n{body}");
    }
    for line in body.lines().filter(|l| !l.starts_with('#')) {
        let name = line.split(['{', ' ']).next().unwrap_or_default();
        let value = line.rsplit(' ').next().unwrap_or_default();
        if FINITE_OUTPUTS.contains(&name) {
            assert!(value.parse::<f64>().is_ok_and(f64::is_finite), "during {mode:?}: {line}");
        }
    }
    parse(&body)
}

fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    find(samples, name, labels).iter().map(|s| s.value).sum()
}

/// Rule evaluations and failures of the `chaos` rule.
fn evaluations(samples: &[Sample]) -> (f64, f64) {
    let rule = [("rule", "chaos")];
    (value(samples, "pulsewatch_rule_evaluations_total", &rule), value(samples, "pulsewatch_rule_evaluation_failures_total", &rule))
}

fn scores_both(samples: &[Sample]) -> bool {
    ["a", "b"].iter().all(|job| find(samples, "pulsewatch_anomaly_score", &[("rule", "chaos"), ("job", job)]).len() == 1)
}

fn last_error(pw: &Pulsewatch) -> String {
    let (_, api) = get(&format!("{}/api/v1/rules", pw.url())).expect("rules API");
    let api: serde_json::Value = serde_json::from_str(&api).unwrap();
    api["data"]["groups"][0]["rules"][0]["lastError"].as_str().unwrap_or_default().to_string()
}

/// Scrapes (checking each scrape) until the upstream, healthy again, is scored again: between
/// two scrapes an evaluation ran and none failed, and both series are exported. Panics after
/// `limit`.
fn wait_recovered(pw: &Pulsewatch, after: Mode, limit: Duration) -> Vec<Sample> {
    let began = Instant::now();
    let mut previous: Option<(f64, f64)> = None;
    loop {
        let samples = scrape(pw, Mode::Healthy);
        let (evals, failures) = evaluations(&samples);
        if previous.is_some_and(|(e, f)| evals > e && failures == f) && scores_both(&samples) {
            return samples;
        }
        previous = Some((evals, failures));
        assert!(began.elapsed() < limit, "no recovery {limit:?} after {after:?}; last error: {}; log:\n{}", last_error(pw), pw.log());
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A sidecar scoring the fake upstream every second at a 2 s step, its source timeout 1 s.
fn start(upstream: &Upstream, dir: &std::path::Path) -> Pulsewatch {
    std::fs::create_dir_all(dir.join("rules")).unwrap();
    let rules = format!(
        "groups:\n  - name: chaos\n    interval: 1s\n    rules:\n      - forecast: chaos\n        expr: chaos\n        step: {STEP}s\n        history: 2m\n        refit: 1m\n        model: {{ type: linear }}\n        band: 0.95\n        horizons: [10s]\n"
    );
    std::fs::write(dir.join("rules/chaos.yaml"), rules).unwrap();
    let config = format!(
        "global: {{ step: {STEP}s, history: 2m, staleness: 1m }}\nsource: {{ url: '{}', timeout: 1s, retries: 1 }}\nrule_files: ['rules/*.yaml']\n",
        upstream.url()
    );
    Pulsewatch::start(dir, &config, &[])
}

#[test]
fn faults_upstream_never_break_the_exposition_and_scoring_recovers() {
    let began = Instant::now();
    let upstream = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let mut pw = start(&upstream, dir.path());
    let mut samples = wait_recovered(&pw, Mode::Healthy, Duration::from_secs(30));
    let first_rejected = |s: &[Sample], reason: &str| value(s, "pulsewatch_samples_rejected_total", &[("reason", reason)]);
    for reason in ["out_of_range", "off_grid", "not_finite", "duplicate"] {
        assert_eq!(find(&samples, "pulsewatch_samples_rejected_total", &[("reason", reason)]).len(), 1, "{reason} exported from the start");
    }
    let query_failures_before = value(&samples, "pulsewatch_query_failures_total", &[]);
    for (mode, shows) in FAULTS {
        let before = samples.clone();
        upstream.set(mode);
        let fault_began = Instant::now();
        // long enough for a retried query to fail; a slow one takes two timeouts and a backoff
        let lasts = if mode == Mode::Slow { Duration::from_secs(4) } else { Duration::from_millis(2500) };
        let mut error = String::new();
        let mut exported = false;
        while fault_began.elapsed() < lasts {
            samples = scrape(&pw, mode);
            if let Shows::Exported(job) = shows {
                exported |= !find(&samples, "pulsewatch_anomaly_score", &[("rule", "chaos"), ("job", job)]).is_empty();
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        if let Shows::Failure(_) = shows {
            error = last_error(&pw);
        }
        upstream.set(Mode::Healthy);
        match shows {
            Shows::Failure(expected) => {
                assert!(evaluations(&samples).1 > evaluations(&before).1, "{mode:?}: no evaluation failed");
                assert!(error.contains(expected), "{mode:?}: last error {error:?} lacks {expected:?}");
            }
            Shows::Exported(job) => assert!(exported, "{mode:?}: the series of job {job:?} was never exported; log:\n{}", pw.log()),
            Shows::Rejected(reason) => {
                assert!(first_rejected(&samples, reason) > first_rejected(&before, reason), "{mode:?}: nothing rejected as {reason}");
                assert_eq!(evaluations(&samples).1, evaluations(&before).1, "{mode:?}: dropped samples must not fail the rule");
                assert!(scores_both(&samples), "{mode:?}: scoring stopped");
            }
        }
        samples = wait_recovered(&pw, mode, Duration::from_secs(20));
    }
    assert!(value(&samples, "pulsewatch_query_failures_total", &[]) > query_failures_before, "query failures counted");
    // nothing was kept of the oversized answers, nor of the far-future samples' horizons
    if let Some(rss) = find(&samples, "process_resident_memory_bytes", &[]).first() {
        assert!(rss.value < 300e6, "resident memory {} MB after the faults", rss.value / 1e6);
    }
    assert!(pw.is_running());
    assert_eq!(pw.signal("TERM").map(|s| s.success()), Some(true), "graceful exit on SIGTERM");
    eprintln!("chaos: {} faults in {:?}", FAULTS.len(), began.elapsed());
}

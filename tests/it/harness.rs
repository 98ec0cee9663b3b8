//! Test harness: a real Prometheus backfilled with NAB data, and the pulsewatch binary.
//!
//! Prometheus, promtool and Alertmanager come from `PROMETHEUS_BIN`/`PROMTOOL_BIN`/
//! `ALERTMANAGER_BIN` or `PATH` (Debian's `prometheus` and `prometheus-alertmanager` packages). A missing binary fails the test with the command that installs it.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub(crate) const INSTALL_HINT: &str =
    "install it with: apt-get update && apt-get install -y --no-install-recommends prometheus prometheus-alertmanager victoria-metrics (or run scripts/install-prometheus.sh)";

pub(crate) fn binary(env: &str, name: &str) -> PathBuf {
    if let Ok(path) = std::env::var(env) {
        return PathBuf::from(path);
    }
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join(name))
        .find(|p| p.is_file());
    found.unwrap_or_else(|| panic!("`{name}` not found on PATH (or set {env}); {INSTALL_HINT}"))
}

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub(crate) fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// Reads a NAB CSV (`timestamp,value`) into its values.
pub(crate) fn nab_values(relative: &str) -> Vec<f64> {
    let path = datasets_dir().join(relative);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    text.lines().skip(1).map(|l| l.split(',').nth(1).unwrap().trim().parse().unwrap()).collect()
}

/// The NAB files committed under `tests/data/nab`, or a full NAB layout in `NAB_DIR`.
pub(crate) fn datasets_dir() -> PathBuf {
    std::env::var("NAB_DIR").map(PathBuf::from).unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/nab"))
}

/// An end time for the backfill at least two minutes before the next 5-minute boundary, so the
/// first evaluation's grid (aligned down to 5m) always scores each cut's second-newest sample:
/// the points scored, and so a test's assertions, do not depend on when it runs.
pub(crate) fn end_away_from_grid_boundary() -> i64 {
    loop {
        let now = unix_now();
        // Not on the grid itself either: the first evaluation would then score the newest sample.
        if (1..180).contains(&(now % 300)) {
            return now;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// One backfilled series (metric `nab_value`): labels and values 5 minutes apart, the last at
/// `end`.
pub(crate) struct Backfill {
    pub(crate) labels: Vec<(String, String)>,
    pub(crate) values: Vec<f64>,
}

pub(crate) struct Prometheus {
    pub(crate) port: u16,
    pub(crate) dir: tempfile::TempDir,
    child: Option<Child>,
    /// Flags besides the config, data, address and retention.
    flags: Vec<String>,
}

impl Prometheus {
    /// Backfills `series` (as metric `nab_value`) ending at `end`, then starts Prometheus.
    pub(crate) fn start(series: &[Backfill], end: i64) -> Self {
        Self::start_with(series, end, 300, free_port(), "global: { scrape_interval: 15s }\n")
    }

    /// Like [`Prometheus::start`], with samples `spacing` seconds apart, on `port`, with
    /// `config` as prometheus.yml (paths in it are relative to [`Prometheus::dir`]).
    pub(crate) fn start_with(series: &[Backfill], end: i64, spacing: i64, port: u16, config: &str) -> Self {
        Self::start_with_flags(series, end, spacing, port, config, &[])
    }

    /// Like [`Prometheus::start_with`], with more command-line `flags`.
    pub(crate) fn start_with_flags(series: &[Backfill], end: i64, spacing: i64, port: u16, config: &str, flags: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let om = dir.path().join("backfill.om");
        let mut f = std::io::BufWriter::new(std::fs::File::create(&om).unwrap());
        writeln!(f, "# HELP nab_value NAB benchmark series.\n# TYPE nab_value gauge").unwrap();
        for s in series {
            let labels: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
            let n = s.values.len() as i64;
            for (i, v) in s.values.iter().enumerate() {
                writeln!(f, "nab_value{{{}}} {v} {}", labels.join(","), end - (n - 1 - i as i64) * spacing).unwrap();
            }
        }
        writeln!(f, "# EOF").unwrap();
        drop(f);
        let status = Command::new(binary("PROMTOOL_BIN", "promtool"))
            .args(["tsdb", "create-blocks-from", "openmetrics", "--max-block-duration=168h"])
            .arg(&om)
            .arg(&data)
            .stdout(Stdio::null())
            .status()
            .expect("running promtool");
        assert!(status.success(), "promtool backfill failed");
        std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
        let mut prom = Self { port, dir, child: None, flags: flags.iter().map(|f| f.to_string()).collect() };
        prom.spawn();
        prom
    }

    /// (Re)starts the server on the same port and data.
    pub(crate) fn spawn(&mut self) {
        let child = Command::new(binary("PROMETHEUS_BIN", "prometheus"))
            .arg(format!("--config.file={}", self.dir.path().join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", self.dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{}", self.port))
            .arg("--storage.tsdb.retention.time=60d")
            .args(&self.flags)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting prometheus");
        self.child = Some(child);
        wait_for(&format!("{}/-/ready", self.url()), Duration::from_secs(60));
    }

    pub(crate) fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Polls `url` until it answers 200, panicking after `limit`.
pub(crate) fn wait_for(url: &str, limit: Duration) {
    let began = Instant::now();
    while began.elapsed() < limit {
        if get(url).is_some_and(|(status, _)| status == 200) {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("{url} not ready after {limit:?}");
}

/// A blocking GET (tests run it on plain threads).
pub(crate) fn get(url: &str) -> Option<(u16, String)> {
    request("GET", url, &[])
}

pub(crate) fn request(method: &str, url: &str, headers: &[(&str, &str)]) -> Option<(u16, String)> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
        let mut req = client.request(method.parse().unwrap(), url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.ok()?;
        let status = resp.status().as_u16();
        Some((status, resp.text().await.ok()?))
    })
}

/// A real single-node VictoriaMetrics (Debian's `victoria-metrics`) on loopback: it serves the
/// Prometheus query API and receives remote write.
pub(crate) struct VictoriaMetrics {
    pub(crate) port: u16,
    _dir: tempfile::TempDir,
    child: Child,
}

impl VictoriaMetrics {
    /// Starts it with `series` (as metric `nab_value`, 5 minutes apart, the last at `end`)
    /// imported, and waits until they can be queried.
    pub(crate) fn start(series: &[Backfill], end: i64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let child = Command::new(binary("VICTORIA_METRICS_BIN", "victoria-metrics"))
            .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
            .arg(format!("-storageDataPath={}", dir.path().display()))
            .arg("-retentionPeriod=100y")
            // Points of the last minute are hidden by default, as possibly incomplete.
            .arg("-search.latencyOffset=0s")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting victoria-metrics");
        let vm = Self { port, _dir: dir, child };
        wait_for(&format!("{}/health", vm.url()), Duration::from_secs(30));
        let mut text = String::new();
        for s in series {
            let labels: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
            let n = s.values.len() as i64;
            for (i, v) in s.values.iter().enumerate() {
                text.push_str(&format!("nab_value{{{}}} {v} {}\n", labels.join(","), (end - (n - 1 - i as i64) * 300) * 1000));
            }
        }
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let status = rt.block_on(async {
            let client = reqwest::Client::new();
            client.post(format!("{}/api/v1/import/prometheus", vm.url())).body(text).send().await.unwrap().status()
        });
        assert!(status.is_success(), "import: {status}");
        vm.flush();
        vm
    }

    /// Makes what it received searchable at once.
    pub(crate) fn flush(&self) {
        get(&format!("{}/internal/force_flush", self.url()));
    }

    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for VictoriaMetrics {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A real Alertmanager (Debian's `prometheus-alertmanager`) on loopback.
pub(crate) struct Alertmanager {
    pub(crate) port: u16,
    _dir: tempfile::TempDir,
    child: Child,
}

impl Alertmanager {
    /// Starts Alertmanager on `port` with `config` and waits until it is ready.
    pub(crate) fn start(port: u16, config: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("alertmanager.yml");
        std::fs::write(&file, config).unwrap();
        let child = Command::new(binary("ALERTMANAGER_BIN", "prometheus-alertmanager"))
            .arg(format!("--config.file={}", file.display()))
            .arg(format!("--storage.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            // no gossip: a single instance, nothing listening beyond the web port
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting prometheus-alertmanager");
        let am = Self { port, _dir: dir, child };
        wait_for(&format!("{}/-/ready", am.url()), Duration::from_secs(30));
        am
    }

    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) struct Pulsewatch {
    pub(crate) port: u16,
    child: Child,
    log: PathBuf,
}

impl Pulsewatch {
    /// Starts the binary with `config` written to `dir/pulsewatch.yml` and waits until healthy.
    pub(crate) fn start(dir: &Path, config: &str, extra: &[&str]) -> Self {
        Self::start_on(free_port(), dir, config, extra)
    }

    /// [`Pulsewatch::start`] listening on `port`.
    pub(crate) fn start_on(port: u16, dir: &Path, config: &str, extra: &[&str]) -> Self {
        let pw = Self::spawn_on(port, dir, config, extra);
        wait_for(&format!("{}/-/healthy", pw.url()), Duration::from_secs(30));
        pw
    }

    /// Starts the binary without waiting for it.
    pub(crate) fn spawn(dir: &Path, config: &str, extra: &[&str]) -> Self {
        Self::spawn_on(free_port(), dir, config, extra)
    }

    /// Starts the binary listening on `port`, without waiting for it.
    pub(crate) fn spawn_on(port: u16, dir: &Path, config: &str, extra: &[&str]) -> Self {
        std::fs::write(dir.join("pulsewatch.yml"), config).unwrap();
        let log = dir.join("pulsewatch.log");
        let child = Command::new(env!("CARGO_BIN_EXE_pulsewatch"))
            .arg(format!("--config.file={}", dir.join("pulsewatch.yml").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=debug")
            .args(extra)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Self { port, child, log }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub(crate) fn metrics(&self) -> String {
        get(&format!("{}/metrics", self.url())).expect("scrape").1
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Sends a signal and waits for the exit status (bounded).
    pub(crate) fn signal(&mut self, sig: &str) -> Option<std::process::ExitStatus> {
        Command::new("kill").arg(format!("-{sig}")).arg(self.child.id().to_string()).status().unwrap();
        let began = Instant::now();
        while began.elapsed() < Duration::from_secs(30) {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }

    /// Polls the metrics until `pred` holds on the parsed samples, or panics after `limit`.
    pub(crate) fn wait_metrics(&self, limit: Duration, what: &str, pred: impl Fn(&[Sample]) -> bool) -> Vec<Sample> {
        let began = Instant::now();
        loop {
            let samples = parse(&self.metrics());
            if pred(&samples) {
                return samples;
            }
            if began.elapsed() > limit {
                panic!("timed out waiting for {what}; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Pulsewatch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A parsed text-format sample.
#[derive(Clone, Debug)]
pub(crate) struct Sample {
    pub(crate) name: String,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) value: f64,
}

/// Parses the text exposition format (enough of it for these tests: no escaped quotes).
pub(crate) fn parse(body: &str) -> Vec<Sample> {
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').unwrap();
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split("\",")
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap();
                    (k.to_string(), v.trim_matches('"').to_string())
                })
                .collect();
            Sample { name: name.to_string(), labels, value: value.parse().unwrap() }
        })
        .collect()
}

pub(crate) fn find<'a>(samples: &'a [Sample], name: &str, labels: &[(&str, &str)]) -> Vec<&'a Sample> {
    samples.iter().filter(|s| s.name == name && labels.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))).collect()
}

/// One HTTP request seen by a [`RecordingProxy`]: its path and its parameters, from the query
/// string and the form body, decoded.
#[derive(Clone, Debug)]
pub(crate) struct ProxiedRequest {
    pub(crate) path: String,
    pub(crate) params: Vec<(String, String)>,
}

impl ProxiedRequest {
    /// The first parameter called `name`.
    pub(crate) fn param(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// A TCP proxy on loopback in front of `127.0.0.1:upstream`: it forwards the bytes unchanged
/// both ways and records every HTTP/1.1 request a client sends (keep-alive connections too;
/// bodies must have a `content-length`, as reqwest's forms do), before forwarding it. Tests count
/// with it what the sidecar asked its source.
pub(crate) struct RecordingProxy {
    pub(crate) port: u16,
    requests: std::sync::Arc<std::sync::Mutex<Vec<ProxiedRequest>>>,
}

impl RecordingProxy {
    pub(crate) fn start(upstream: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = requests.clone();
        // Lives as long as the test process, like `garbage_server` in e2e.rs.
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                // Upstream down: dropping the client fails its request, as Prometheus down would.
                let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", upstream)) else { continue };
                let seen = seen.clone();
                std::thread::spawn(move || relay(client, server, &seen));
            }
        });
        Self { port, requests }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every request so far, in the order they were sent.
    pub(crate) fn requests(&self) -> Vec<ProxiedRequest> {
        self.requests.lock().unwrap().clone()
    }
}

fn relay(mut client: std::net::TcpStream, mut server: std::net::TcpStream, seen: &std::sync::Mutex<Vec<ProxiedRequest>>) {
    use std::io::Read;
    let (Ok(mut client_out), Ok(mut server_in)) = (client.try_clone(), server.try_clone()) else { return };
    let answers = std::thread::spawn(move || {
        let _ = std::io::copy(&mut server_in, &mut client_out);
        let _ = client_out.shutdown(std::net::Shutdown::Write);
    });
    let mut pending = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match client.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        pending.extend_from_slice(&buf[..n]);
        while let Some((request, used)) = parse_request(&pending) {
            seen.lock().unwrap().push(request);
            pending.drain(..used);
        }
        if server.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = server.shutdown(std::net::Shutdown::Write);
    let _ = answers.join();
}

/// The first complete request in `buf`, and how many bytes it took.
fn parse_request(buf: &[u8]) -> Option<(ProxiedRequest, usize)> {
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&buf[..head_end]);
    let mut lines = head.split("\r\n");
    let target = lines.next()?.split(' ').nth(1)?.to_string();
    let length: usize = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .map_or(0, |(_, v)| v.trim().parse().unwrap_or(0));
    if buf.len() < head_end + length {
        return None;
    }
    let body = String::from_utf8_lossy(&buf[head_end..head_end + length]);
    let decode = |url: &str| -> Vec<(String, String)> {
        reqwest::Url::parse(url).map(|u| u.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect()).unwrap_or_default()
    };
    let url = reqwest::Url::parse(&format!("http://proxy{target}")).ok()?;
    let mut params = decode(url.as_str());
    params.extend(decode(&format!("http://proxy/?{body}")));
    Some((ProxiedRequest { path: url.path().to_string(), params }, head_end + length))
}

impl Pulsewatch {
    /// Sends a signal without waiting.
    pub(crate) fn kill(&self, sig: &str) {
        Command::new("kill").arg(format!("-{sig}")).arg(self.child.id().to_string()).status().unwrap();
    }

    /// Waits up to `limit` for the process to exit.
    pub(crate) fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let began = Instant::now();
        while began.elapsed() < limit {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// Waits up to `limit` for a log line containing `text`.
    pub(crate) fn wait_log(&self, limit: Duration, text: &str) {
        let began = Instant::now();
        while !self.log().contains(text) {
            assert!(began.elapsed() < limit, "no log line with {text:?} in {limit:?}; log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

//! HTTP server benchmarks (docs/benchmarks.md, "HTTP server"): scrape latency of 20 concurrent
//! scrapers with bcrypt basic auth over TLS (in process), and `/metrics` latency while 200 idle
//! connections are held, or reopened as soon as they are closed, against the daemon started
//! with a 128-file-descriptor limit (it serves at most 64 connections, so it must close idle
//! ones) and with a 1,024 limit (512 connections: it holds all 200), plain and TLS listener.
//! Run with `cargo bench --bench http` (optionally `-- auth` or `-- idle`); prints Markdown
//! tables.
//! Every scenario is bounded in time and in requests; all traffic stays on 127.0.0.1.
//! `PULSEWATCH_BIN` runs another daemon binary in the idle scenario (to compare builds).

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::registry::Registry;
use pulsewatch::exporter::{Exporter, Metrics, ProcessCollector};
use pulsewatch::http::{self, AppState, WebConfig};
use tokio_util::sync::CancellationToken;

/// Concurrent scrapers, as many Prometheus replicas and agents scraping one sidecar.
const SCRAPERS: usize = 20;
/// Requests per scraper, and the wall-clock bound of one scenario (whichever comes first).
const REQUESTS_PER_SCRAPER: usize = 100;
const SCENARIO_BOUND: Duration = Duration::from_secs(20);
/// Idle connections held open, and the daemon's file-descriptor limits (`ulimit -n`): the
/// server serves at most half of it as connections.
const IDLE_CONNECTIONS: usize = 200;
const FD_LIMITS: [u32; 2] = [128, 1024];
/// Scrapes timed while the idle connections are held; each gives up after `SCRAPE_TIMEOUT`.
const IDLE_SCRAPES: usize = 100;
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);
/// How soon a churning idle connection reconnects after the server closed it.
const CHURN_PAUSE: Duration = Duration::from_millis(100);
/// htpasswd's default cost (`htpasswd -nBC 10`), as an operator's web config has it.
const BCRYPT_COST: u32 = 10;

fn self_signed(dir: &Path) {
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
        .args(["-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .args(["-keyout", "key.pem", "-out", "cert.pem"])
        .current_dir(dir)
        .output()
        .expect("openssl is needed: apt-get install -y --no-install-recommends openssl");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// The registry the daemon serves, without rules.
fn state() -> AppState {
    let mut registry = Registry::default();
    let exporter = Exporter::default();
    Metrics::register(&mut registry);
    registry.register_collector(Box::new(ProcessCollector));
    AppState { registry: Arc::new(registry), exporter, reload: None, ready: Arc::new(AtomicBool::new(true)) }
}

struct Latencies {
    ok: Vec<Duration>,
    failed: usize,
    wall: Duration,
}

impl Latencies {
    fn quantile(&self, q: f64) -> String {
        if self.ok.is_empty() {
            return "–".to_string();
        }
        let mut v = self.ok.clone();
        v.sort();
        let i = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1;
        format!("{:.1} ms", v[i].as_secs_f64() * 1e3)
    }

    fn row(&self, name: &str) -> String {
        format!(
            "| {name} | {} | {} | {} | {} | {} | {:.0} |",
            self.ok.len(),
            self.failed,
            self.quantile(0.5),
            self.quantile(0.99),
            self.quantile(1.0),
            self.ok.len() as f64 / self.wall.as_secs_f64()
        )
    }
}

/// `SCRAPERS` clients, each scraping `url` back to back over its own connection (kept alive
/// unless `reuse` is false), until each made `REQUESTS_PER_SCRAPER` or `SCENARIO_BOUND` passed.
async fn scrape_concurrently(url: &str, cert: &reqwest::Certificate, password: &str, reuse: bool) -> Latencies {
    let began = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..SCRAPERS {
        let mut builder = reqwest::Client::builder().add_root_certificate(cert.clone()).timeout(SCRAPE_TIMEOUT);
        if !reuse {
            builder = builder.pool_max_idle_per_host(0);
        }
        let client = builder.build().unwrap();
        let (url, password) = (url.to_string(), password.to_string());
        tasks.push(tokio::spawn(async move {
            let (mut ok, mut failed) = (Vec::new(), 0);
            for _ in 0..REQUESTS_PER_SCRAPER {
                if began.elapsed() > SCENARIO_BOUND {
                    break;
                }
                let t = Instant::now();
                let answered = match client.get(&url).basic_auth("prometheus", Some(&password)).send().await {
                    Ok(resp) if resp.status() == 200 => resp.bytes().await.is_ok(),
                    _ => false,
                };
                if answered {
                    ok.push(t.elapsed());
                } else {
                    failed += 1;
                }
            }
            (ok, failed)
        }));
    }
    let mut all = Latencies { ok: Vec::new(), failed: 0, wall: Duration::ZERO };
    for task in tasks {
        let (ok, failed) = task.await.unwrap();
        all.ok.extend(ok);
        all.failed += failed;
    }
    all.wall = began.elapsed();
    all
}

async fn bench_auth() {
    let dir = tempfile::tempdir().unwrap();
    self_signed(dir.path());
    let hash = bcrypt::hash("s3cret", BCRYPT_COST).unwrap();
    let web_file = dir.path().join("web.yml");
    std::fs::write(
        &web_file,
        format!("tls_server_config: {{ cert_file: cert.pem, key_file: key.pem }}\nbasic_auth_users: {{ prometheus: '{hash}' }}\n"),
    )
    .unwrap();
    let web = WebConfig::load(&web_file).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("https://127.0.0.1:{}/metrics", listener.local_addr().unwrap().port());
    let token = CancellationToken::new();
    let server = tokio::spawn(http::serve(http::router(state()), listener, web, token.clone()));
    let cert = reqwest::Certificate::from_pem(&std::fs::read(dir.path().join("cert.pem")).unwrap()).unwrap();
    // Warm up: the server is up and the TLS stack initialised.
    let client = reqwest::Client::builder().add_root_certificate(cert.clone()).build().unwrap();
    let began = Instant::now();
    while client.get(&url).send().await.is_err() {
        assert!(began.elapsed() < Duration::from_secs(10), "server did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    println!("| {SCRAPERS} scrapers, TLS + basic auth (bcrypt cost {BCRYPT_COST}) | ok | failed | p50 | p99 | max | req/s |");
    println!("|---|---|---|---|---|---|---|");
    println!("{}", scrape_concurrently(&url, &cert, "s3cret", true).await.row("keep-alive"));
    println!("{}", scrape_concurrently(&url, &cert, "s3cret", false).await.row("new connection per request"));
    token.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
}

/// The daemon under a `ulimit -n`, stopped (SIGKILL) on drop.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn daemon_binary() -> String {
    std::env::var("PULSEWATCH_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_pulsewatch").to_string())
}

/// `IDLE_SCRAPES` scrapes of `url`, one after another, each on a new connection.
async fn timed_scrapes(client: &reqwest::Client, url: &str) -> Latencies {
    let began = Instant::now();
    let mut result = Latencies { ok: Vec::new(), failed: 0, wall: Duration::ZERO };
    for _ in 0..IDLE_SCRAPES {
        if began.elapsed() > SCENARIO_BOUND {
            break;
        }
        let t = Instant::now();
        let answered = match client.get(url).send().await {
            Ok(resp) if resp.status() == 200 => resp.bytes().await.is_ok(),
            _ => false,
        };
        if answered {
            result.ok.push(t.elapsed());
        } else {
            result.failed += 1;
        }
    }
    result.wall = began.elapsed();
    result
}

/// Idle connections that reconnect whenever the server closes one (an active attacker rather
/// than a leak), each at most every `CHURN_PAUSE`, until `stop`.
fn churn(port: u16, stop: CancellationToken) -> Vec<tokio::task::JoinHandle<()>> {
    (0..IDLE_CONNECTIONS)
        .map(|_| {
            let stop = stop.clone();
            tokio::spawn(async move {
                while !stop.is_cancelled() {
                    let connect = tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(("127.0.0.1", port)));
                    if let Ok(Ok(mut stream)) = connect.await {
                        let mut buf = [0u8; 64];
                        tokio::select! {
                            _ = tokio::io::AsyncReadExt::read(&mut stream, &mut buf) => {}
                            () = stop.cancelled() => return,
                        }
                    }
                    tokio::time::sleep(CHURN_PAUSE).await;
                }
            })
        })
        .collect()
}

async fn bench_idle(tls: bool, fd_limit: u32) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pulsewatch.yml"), "source: { url: 'http://127.0.0.1:1' }\n").unwrap();
    let mut args = vec![];
    let mut client = reqwest::Client::builder().timeout(SCRAPE_TIMEOUT).pool_max_idle_per_host(0);
    if tls {
        self_signed(dir.path());
        std::fs::write(dir.path().join("web.yml"), "tls_server_config: { cert_file: cert.pem, key_file: key.pem }\n").unwrap();
        args.push(format!("--web.config.file={}", dir.path().join("web.yml").display()));
        let cert = reqwest::Certificate::from_pem(&std::fs::read(dir.path().join("cert.pem")).unwrap()).unwrap();
        client = client.add_root_certificate(cert);
    }
    let client = client.build().unwrap();
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new("sh")
        .args(["-c", &format!("ulimit -n {fd_limit} && exec \"$0\" \"$@\""), &daemon_binary()])
        .arg(format!("--config.file={}", dir.path().join("pulsewatch.yml").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _daemon = Daemon(child);
    let url = format!("{}://127.0.0.1:{port}/metrics", if tls { "https" } else { "http" });
    let began = Instant::now();
    while client.get(&url).send().await.is_err() {
        assert!(began.elapsed() < Duration::from_secs(10), "daemon did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let listener = format!("{}, `ulimit -n {fd_limit}`", if tls { "TLS" } else { "plain" });

    // Connections that never send a byte, as a misbehaving client or a port scanner leaves them.
    let mut idle = Vec::new();
    for _ in 0..IDLE_CONNECTIONS {
        let connect = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(("127.0.0.1", port)));
        match connect.await {
            Ok(Ok(stream)) => idle.push(stream),
            other => panic!("connecting idle connection {}: {other:?}", idle.len()),
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    println!("{}", timed_scrapes(&client, &url).await.row(&format!("{listener}, {IDLE_CONNECTIONS} idle connections held")));
    drop(idle);

    let stop = CancellationToken::new();
    let attackers = churn(port, stop.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    println!(
        "{}",
        timed_scrapes(&client, &url).await.row(&format!("{listener}, {IDLE_CONNECTIONS} idle connections, reopened when closed"))
    );
    stop.cancel();
    for attacker in attackers {
        let _ = attacker.await;
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
        if run("auth") {
            bench_auth().await;
            println!();
        }
        if run("idle") {
            println!(
                "| `/metrics`, a new connection per scrape (timeout {} s) | ok | failed | p50 | p99 | max | req/s |",
                SCRAPE_TIMEOUT.as_secs()
            );
            println!("|---|---|---|---|---|---|---|");
            for fd_limit in FD_LIMITS {
                bench_idle(false, fd_limit).await;
                bench_idle(true, fd_limit).await;
            }
        }
    });
}

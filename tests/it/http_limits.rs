//! The daemon's HTTP server under connection pressure: idle connections held against a process
//! with a small file-descriptor limit must not starve a scraper, on the plain and the TLS
//! listener; basic auth takes any case of the scheme name.
//!
//! Each scrape gives up after `SCRAPE_BOUND`, shorter than the server's 10 s header-read
//! timeout: an answer within it comes from the connection limit making room, not from idle
//! connections timing out. The bound keeps a failing test short; nothing here measures speed.

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;

use crate::harness::free_port;

/// The daemon's `ulimit -n`, and the idle connections held against it (more than it can open).
const FD_LIMIT: u32 = 128;
const IDLE_CONNECTIONS: usize = 200;
const SCRAPE_BOUND: Duration = Duration::from_secs(5);

/// The pulsewatch binary under `ulimit -n FD_LIMIT`, killed on drop.
struct Limited {
    port: u16,
    child: Child,
    log: std::path::PathBuf,
}

impl Limited {
    fn spawn(dir: &Path, extra: &[&str]) -> Self {
        std::fs::write(dir.join("pulsewatch.yml"), "source: { url: 'http://127.0.0.1:1' }\n").unwrap();
        let port = free_port();
        let log = dir.join("pulsewatch.log");
        let child = Command::new("sh")
            .args(["-c", &format!("ulimit -n {FD_LIMIT} && exec \"$0\" \"$@\""), env!("CARGO_BIN_EXE_pulsewatch")])
            .arg(format!("--config.file={}", dir.join("pulsewatch.yml").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .args(extra)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Self { port, child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the port accepts connections (bounded).
    fn wait_listening(&self) {
        let began = Instant::now();
        while TcpStream::connect(self.addr()).is_err() {
            assert!(began.elapsed() < Duration::from_secs(30), "pulsewatch did not listen; log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// `IDLE_CONNECTIONS` connections that never send a byte.
    fn hold_idle_connections(&self) -> Vec<TcpStream> {
        (0..IDLE_CONNECTIONS)
            .map(|i| {
                TcpStream::connect_timeout(&self.addr(), Duration::from_secs(5)).unwrap_or_else(|e| panic!("idle connection {i}: {e}"))
            })
            .collect()
    }
}

impl Drop for Limited {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn self_signed(dir: &Path) {
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
        .args(["-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1", "-addext", "basicConstraints=critical,CA:FALSE"])
        .args(["-keyout", "key.pem", "-out", "cert.pem"])
        .current_dir(dir)
        .output()
        .expect("openssl is needed for this test: apt-get install -y --no-install-recommends openssl");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// One scrape on a new connection, or why it failed.
async fn scrape(client: &reqwest::Client, url: &str, authorization: Option<&str>) -> Result<(u16, String), String> {
    let mut req = client.get(url);
    if let Some(v) = authorization {
        req = req.header("authorization", v);
    }
    let resp = req.send().await.map_err(|e| format!("{e:?}"))?;
    let status = resp.status().as_u16();
    Ok((status, resp.text().await.map_err(|e| format!("{e:?}"))?))
}

fn client(builder: reqwest::ClientBuilder) -> reqwest::Client {
    builder.timeout(SCRAPE_BOUND).pool_max_idle_per_host(0).build().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_connections_do_not_starve_a_scraper() {
    let dir = tempfile::tempdir().unwrap();
    let pw = Limited::spawn(dir.path(), &[]);
    pw.wait_listening();
    let url = format!("http://127.0.0.1:{}/metrics", pw.port);
    let client = client(reqwest::Client::builder());
    assert_eq!(scrape(&client, &url, None).await.map(|r| r.0), Ok(200), "before; log:\n{}", pw.log());

    let idle = pw.hold_idle_connections();
    for attempt in 0..3 {
        match scrape(&client, &url, None).await {
            Ok((200, body)) => assert!(body.contains("pulsewatch_build_info"), "{body}"),
            other => panic!("scrape {attempt} with {} idle connections held: {other:?}; log:\n{}", idle.len(), pw.log()),
        }
    }
    // The connection limit keeps descriptors for the rest of the process (config reloads, say).
    assert!(!pw.log().contains("Too many open files"), "log:\n{}", pw.log());
    drop(idle);
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_connections_do_not_starve_a_tls_scraper_and_the_scheme_is_case_insensitive() {
    let dir = tempfile::tempdir().unwrap();
    self_signed(dir.path());
    let hash = bcrypt::hash("s3cret", 4).unwrap();
    let web = dir.path().join("web.yml");
    std::fs::write(
        &web,
        format!("tls_server_config: {{ cert_file: cert.pem, key_file: key.pem }}\nbasic_auth_users: {{ prom: '{hash}' }}\n"),
    )
    .unwrap();
    let pw = Limited::spawn(dir.path(), &["--web.config.file", web.to_str().unwrap()]);
    pw.wait_listening();
    let url = format!("https://127.0.0.1:{}/metrics", pw.port);
    let cert = reqwest::Certificate::from_pem(&std::fs::read(dir.path().join("cert.pem")).unwrap()).unwrap();
    let client = client(reqwest::Client::builder().add_root_certificate(cert));
    let credentials = base64::engine::general_purpose::STANDARD.encode("prom:s3cret");
    let (upper, lower) = (format!("Basic {credentials}"), format!("basic {credentials}"));
    assert_eq!(scrape(&client, &url, Some(&upper)).await.map(|r| r.0), Ok(200), "log:\n{}", pw.log());
    assert_eq!(scrape(&client, &url, None).await.map(|r| r.0), Ok(401));

    let idle = pw.hold_idle_connections();
    for attempt in 0..3 {
        match scrape(&client, &url, Some(&upper)).await {
            Ok((200, body)) => assert!(body.contains("pulsewatch_build_info"), "{body}"),
            other => panic!("TLS scrape {attempt} with {} idle connections held: {other:?}; log:\n{}", idle.len(), pw.log()),
        }
    }
    assert!(!pw.log().contains("Too many open files"), "log:\n{}", pw.log());
    // RFC 7235: the scheme name is case-insensitive.
    assert_eq!(scrape(&client, &url, Some(&lower)).await.map(|r| r.0), Ok(200), "lower-case scheme; log:\n{}", pw.log());
    drop(idle);
}

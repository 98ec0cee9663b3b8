//! `--web.config.file`: TLS and bcrypt basic auth on pulsewatch's own endpoints, and a custom CA
//! for the source client (checked against pulsewatch's TLS listener).

use std::process::Command;
use std::time::{Duration, Instant};

use pulsewatch::config::SourceConfig;
use pulsewatch::source::{Error, PromClient};

use crate::harness::*;

fn self_signed(dir: &std::path::Path) {
    let status = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
        .args(["-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
        // webpki refuses a CA certificate as the server certificate.
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .args(["-keyout", "key.pem", "-out", "cert.pem"])
        .current_dir(dir)
        .output()
        .expect("openssl is needed for this test: apt-get install -y --no-install-recommends openssl");
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_and_basic_auth() {
    let dir = tempfile::tempdir().unwrap();
    self_signed(dir.path());
    let hash = bcrypt::hash("s3cret", 4).unwrap();
    std::fs::write(dir.path().join("web.yml"), format!("tls_server_config: {{ cert_file: cert.pem, key_file: key.pem }}\nbasic_auth_users: {{ prom: '{hash}' }}\n")).unwrap();
    let web = dir.path().join("web.yml");
    let pw = Pulsewatch::spawn(dir.path(), "source: { url: 'http://127.0.0.1:1' }\n", &["--web.config.file", web.to_str().unwrap()]);
    let url = format!("https://127.0.0.1:{}", pw.port);

    let cert = reqwest::Certificate::from_pem(&std::fs::read(dir.path().join("cert.pem")).unwrap()).unwrap();
    let client = reqwest::Client::builder().add_root_certificate(cert).timeout(Duration::from_secs(5)).build().unwrap();
    let began = Instant::now();
    let unauthenticated = loop {
        match client.get(format!("{url}/-/healthy")).send().await {
            Ok(resp) => break resp,
            Err(err) if began.elapsed() < Duration::from_secs(30) => {
                let _ = err;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(err) => panic!("pulsewatch TLS not up: {err}; log:\n{}", pw.log()),
        }
    };
    assert_eq!(unauthenticated.status(), 401);
    let wrong = client.get(format!("{url}/metrics")).basic_auth("prom", Some("nope")).send().await.unwrap();
    assert_eq!(wrong.status(), 401);
    let ok = client.get(format!("{url}/metrics")).basic_auth("prom", Some("s3cret")).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    assert!(ok.text().await.unwrap().contains("pulsewatch_build_info"));

    // The source client trusts exactly the CA it is given.
    let source = |extra: &str| -> SourceConfig {
        serde_saphyr::from_str(&format!("url: '{url}'\nretries: 0\nbasic_auth: {{ username: prom, password: {{ value: s3cret }} }}\n{extra}")).unwrap()
    };
    let ca = format!("tls_config: {{ ca_file: '{}' }}", dir.path().join("cert.pem").display());
    let trusted = PromClient::new(&source(&ca)).unwrap();
    // pulsewatch has no query API: a 404 proves the TLS handshake and auth went through.
    let answer = trusted.query_range("up", 0, 60, 60).await;
    assert!(matches!(answer, Err(Error::Status { code: 404 | 405, .. })), "{answer:?}");
    let untrusted = PromClient::new(&source("")).unwrap();
    let answer = untrusted.query_range("up", 0, 60, 60).await;
    assert!(matches!(&answer, Err(Error::Transport(msg)) if msg.to_lowercase().contains("certificate")), "{answer:?}");
}

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
    std::fs::write(
        dir.path().join("web.yml"),
        format!("tls_server_config: {{ cert_file: cert.pem, key_file: key.pem }}\nbasic_auth_users: {{ prom: '{hash}' }}\n"),
    )
    .unwrap();
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
        serde_saphyr::from_str(&format!(
            "url: '{url}'\nretries: 0\nbasic_auth: {{ username: prom, password: {{ value: s3cret }} }}\n{extra}"
        ))
        .unwrap()
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

/// A CA, and a server (`IP:127.0.0.1`) and a client certificate it signed, in `dir`.
fn ca_signed(dir: &std::path::Path) {
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl is needed for this test: apt-get install -y --no-install-recommends openssl");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    openssl(&["-subj", "/CN=test-ca", "-keyout", "ca-key.pem", "-out", "ca.pem"]);
    for (who, san, usage) in [("server", "IP:127.0.0.1", "serverAuth"), ("client", "DNS:client", "clientAuth")] {
        let (san, usage) = (format!("subjectAltName={san}"), format!("extendedKeyUsage={usage}"));
        let (key, cert) = (format!("{who}-key.pem"), format!("{who}.pem"));
        openssl(&[
            "-subj",
            &format!("/CN={who}"),
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca-key.pem",
            "-addext",
            &san,
            "-addext",
            "basicConstraints=critical,CA:FALSE",
            "-addext",
            &usage,
            "-keyout",
            &key,
            "-out",
            &cert,
        ]);
    }
}

/// A Prometheus stand-in over TLS that demands a client certificate signed by `ca.pem`, and
/// answers every `query_range` with one series.
fn mutual_tls_stub(dir: &std::path::Path) -> String {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(dir.join("ca.pem")).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider.clone()).build().unwrap();
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(dir.join("server.pem")).unwrap().map(Result::unwrap).collect();
    let key = PrivateKeyDer::from_pem_file(dir.join("server-key.pem")).unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let answer = r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"job":"tls"},"values":[[60,"1"]]}]}}"#;
    let app = axum::Router::new().route("/api/v1/query_range", axum::routing::post(move || async move { answer }));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let tls = axum_server::tls_rustls::RustlsConfig::from_config(config.into());
    tokio::spawn(async move { axum_server::from_tcp_rustls(listener, tls).unwrap().serve(app.into_make_service()).await.unwrap() });
    format!("https://127.0.0.1:{port}")
}

/// The source client presents `cert_file`/`key_file` to a server that requires them, and
/// `insecure_skip_verify` trusts a server whose CA it was not given (and only then).
#[tokio::test(flavor = "multi_thread")]
async fn source_client_certificates_and_insecure_skip_verify() {
    let dir = tempfile::tempdir().unwrap();
    ca_signed(dir.path());
    let url = mutual_tls_stub(dir.path());
    let path = |name: &str| dir.path().join(name).display().to_string();
    let client = |tls: &str| {
        PromClient::new(&serde_saphyr::from_str(&format!("url: '{url}'\nretries: 0\ntimeout: 5s\ntls_config: {{ {tls} }}\n")).unwrap())
            .unwrap()
    };
    let identity = format!("cert_file: '{}', key_file: '{}'", path("client.pem"), path("client-key.pem"));

    let answer = client(&format!("ca_file: '{}', {identity}", path("ca.pem"))).query_range("up", 60, 60, 60).await;
    let series = answer.unwrap_or_else(|e| panic!("with the CA and a client certificate: {e}"));
    assert_eq!(series[0].labels["job"], "tls");
    // without a client certificate the server ends the handshake
    let answer = client(&format!("ca_file: '{}'", path("ca.pem"))).query_range("up", 60, 60, 60).await;
    assert!(matches!(answer, Err(Error::Transport(_))), "no client certificate: {answer:?}");
    // without the CA: refused, unless verification is skipped
    let answer = client(&identity).query_range("up", 60, 60, 60).await;
    assert!(matches!(&answer, Err(Error::Transport(msg)) if msg.to_lowercase().contains("certificate")), "unknown CA: {answer:?}");
    let answer = client(&format!("insecure_skip_verify: true, {identity}")).query_range("up", 60, 60, 60).await;
    assert_eq!(answer.unwrap_or_else(|e| panic!("insecure_skip_verify: {e}")).len(), 1);
}

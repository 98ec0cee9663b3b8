//! `--web.config.file` in the Prometheus exporter-toolkit format: TLS and bcrypt basic auth.
//!
//! ```yaml
//! tls_server_config: { cert_file: server.crt, key_file: server.key }
//! basic_auth_users: { prometheus: "$2y$10$..." }   # bcrypt hashes (htpasswd -nBC 10)
//! ```

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use base64::Engine;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

/// The web config file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebConfig {
    /// Serve HTTPS with this certificate.
    #[serde(default)]
    pub tls_server_config: Option<TlsServerConfig>,
    /// User name to bcrypt hash; when set, every request needs basic auth.
    #[serde(default)]
    pub basic_auth_users: BTreeMap<String, String>,
}

/// Server certificate and key, PEM. Relative paths are relative to the web config file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsServerConfig {
    /// Certificate chain.
    pub cert_file: PathBuf,
    /// Private key.
    pub key_file: PathBuf,
}

/// A web config file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum WebConfigError {
    /// The file could not be read.
    #[error("reading web config {}: {cause}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        cause: std::io::Error,
    },
    /// The YAML is invalid or has unknown keys.
    #[error("{}: {message}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// Where and what, from the YAML parser.
        message: String,
    },
    /// A password that is not a bcrypt hash.
    #[error("{}: basic_auth_users {user:?}: the password must be a bcrypt hash", path.display())]
    NotBcrypt {
        /// The file.
        path: PathBuf,
        /// The user.
        user: String,
    },
}

impl WebConfig {
    /// Reads and checks a web config file.
    ///
    /// # Errors
    /// What is wrong and where, e.g. an unknown key or a hash that is not bcrypt.
    pub fn load(path: &Path) -> Result<Self, WebConfigError> {
        let text = std::fs::read_to_string(path).map_err(|cause| WebConfigError::Read { path: path.to_path_buf(), cause })?;
        let mut config: WebConfig = serde_saphyr::from_str(&text)
            .map_err(|e| WebConfigError::Parse { path: path.to_path_buf(), message: e.without_snippet().to_string() })?;
        for (user, hash) in &config.basic_auth_users {
            if !hash.starts_with("$2") {
                return Err(WebConfigError::NotBcrypt { path: path.to_path_buf(), user: user.clone() });
            }
        }
        if let Some(tls) = &mut config.tls_server_config {
            let base = path.parent().unwrap_or(Path::new("."));
            tls.cert_file = base.join(&tls.cert_file);
            tls.key_file = base.join(&tls.key_file);
        }
        Ok(config)
    }
}

async fn basic_auth(State(users): State<Arc<BTreeMap<String, String>>>, request: Request, next: Next) -> Response {
    let credentials = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
        .and_then(|raw| String::from_utf8(raw).ok())
        .and_then(|pair| pair.split_once(':').map(|(u, p)| (u.to_string(), p.to_string())));
    let allowed = match credentials.and_then(|(user, password)| users.get(&user).map(|hash| (password, hash.clone()))) {
        // bcrypt is deliberately slow: keep it off the async workers.
        Some((password, hash)) => {
            tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash).unwrap_or(false)).await.unwrap_or(false)
        }
        None => false,
    };
    if allowed {
        next.run(request).await
    } else {
        (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Basic")], "Unauthorized\n").into_response()
    }
}

/// Serves `router` on `listener` with `web`'s TLS and auth until `token` is cancelled.
///
/// # Errors
/// Binding the address or loading the certificate failed.
pub async fn serve(router: Router, listener: TcpListener, web: WebConfig, token: CancellationToken) -> std::io::Result<()> {
    let router = if web.basic_auth_users.is_empty() {
        router
    } else {
        router.layer(axum::middleware::from_fn_with_state(Arc::new(web.basic_auth_users.clone()), basic_auth))
    };
    let router = router.layer(tower_http::timeout::TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, Duration::from_secs(30)));
    let handle = axum_server::Handle::new();
    let stopper = handle.clone();
    tokio::spawn(async move {
        token.cancelled().await;
        stopper.graceful_shutdown(Some(Duration::from_secs(5)));
    });
    let service = router.into_make_service();
    match web.tls_server_config {
        Some(tls) => {
            // One process-wide crypto provider; a second install attempt is harmless.
            let _ = rustls::crypto::ring::default_provider().install_default();
            let config = axum_server::tls_rustls::RustlsConfig::from_pem_file(&tls.cert_file, &tls.key_file).await.map_err(|e| {
                std::io::Error::new(e.kind(), format!("loading {} / {}: {e}", tls.cert_file.display(), tls.key_file.display()))
            })?;
            axum_server::from_tcp_rustls(listener, config)?.handle(handle).serve(service).await
        }
        None => axum_server::from_tcp(listener)?.handle(handle).serve(service).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use tower::ServiceExt;

    #[test]
    fn rejects_plain_passwords_and_unknown_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("web.yml");
        std::fs::write(&path, "basic_auth_users: { a: plain }\n").unwrap();
        assert!(matches!(WebConfig::load(&path), Err(WebConfigError::NotBcrypt { .. })));
        std::fs::write(&path, "tls_config: {}\n").unwrap();
        assert!(WebConfig::load(&path).unwrap_err().to_string().contains("tls_config"));
    }

    #[tokio::test]
    async fn basic_auth_checks_bcrypt() {
        let hash = bcrypt::hash("secret", 4).unwrap();
        let users = Arc::new(BTreeMap::from([("prom".to_string(), hash)]));
        let app =
            Router::new().route("/", axum::routing::get(|| async { "ok" })).layer(axum::middleware::from_fn_with_state(users, basic_auth));
        let auth = |cred: &str| format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(cred));
        for (header_value, want) in [
            (Some(auth("prom:secret")), StatusCode::OK),
            (Some(auth("prom:wrong")), StatusCode::UNAUTHORIZED),
            (None, StatusCode::UNAUTHORIZED),
        ] {
            let mut req = Request::get("/");
            if let Some(v) = header_value {
                req = req.header(header::AUTHORIZATION, v);
            }
            let resp = app.clone().oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
            assert_eq!(resp.status(), want);
        }
    }
}

//! The HTTP API: `/metrics`, `/-/healthy`, `/-/ready`, `/-/reload` and `/api/v1/rules`; the
//! exporter-toolkit web config (TLS, bcrypt basic auth) in `web_config.rs`; basic auth with its
//! credential cache in `auth.rs`; the server with its connection limit and timeouts in
//! `server.rs`.

mod auth;
mod rules_api;
mod server;
mod web_config;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use prometheus_client::registry::Registry;
use tokio::sync::{mpsc, oneshot};
use tower_http::compression::{CompressionLayer, CompressionLevel};

use crate::exporter::{self, Exporter, Format, SnapshotCollector};

pub use server::serve;
pub use web_config::{TlsServerConfig, WebConfig, WebConfigError};

/// A reload request and where to send its outcome.
pub type ReloadRequest = oneshot::Sender<Result<(), ReloadError>>;

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The config or a rule file has problems (every one, located).
    #[error("{0}")]
    Config(#[from] crate::config::Problems),
    /// The source settings cannot make a client (a secret or certificate file, say).
    #[error("{0}")]
    Source(#[from] crate::source::Error),
    /// Loading panicked (a bug): the running configuration stays.
    #[error("loading panicked: {0}")]
    Panicked(String),
}

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// Own and process metrics; `/metrics` adds the exporter's snapshot.
    pub registry: Arc<Registry>,
    /// Rule outputs and status.
    pub exporter: Exporter,
    /// Set to ask for reloads; `None` unless `--web.enable-lifecycle`.
    pub reload: Option<mpsc::Sender<ReloadRequest>>,
    /// True once the first configuration is loaded and groups run.
    pub ready: Arc<AtomicBool>,
}

/// The routes, without the auth and TLS layers (see [`serve`]).
pub fn router(state: AppState) -> Router {
    Router::new()
        // Gzip when the scraper asks (Prometheus does): a body of 10,000 rules shrinks about
        // 16 times. The fastest level, as a scrape's CPU matters more than the last bytes.
        .route("/metrics", get(metrics).layer(CompressionLayer::new().gzip(true).quality(CompressionLevel::Fastest)))
        .route("/-/healthy", get(|| async { "pulsewatch is Healthy.\n" }).head(|| async {}))
        .route("/-/ready", get(ready).head(ready))
        .route("/-/reload", post(reload).put(reload))
        .route("/api/v1/rules", get(rules_api::rules))
        .with_state(state)
}

async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let format = Format::negotiate(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    let snapshot = SnapshotCollector::new(state.exporter.clone());
    match exporter::encode(&state.registry, Some(&snapshot), format) {
        Ok(body) => ([(header::CONTENT_TYPE, format.content_type())], body).into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "encoding metrics failed\n").into_response(),
    }
}

async fn ready(State(state): State<AppState>) -> Response {
    if state.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "pulsewatch is Ready.\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable\n").into_response()
    }
}

async fn reload(State(state): State<AppState>) -> Response {
    let Some(tx) = state.reload else {
        return (StatusCode::FORBIDDEN, "Lifecycle API is not enabled.\n").into_response();
    };
    let (reply, outcome) = oneshot::channel();
    if tx.send(reply).await.is_err() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    }
    match outcome.await {
        Ok(Ok(())) => (StatusCode::OK, "").into_response(),
        Ok(Err(err)) => (StatusCode::INTERNAL_SERVER_ERROR, format!("failed to reload config: {err}\n")).into_response(),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    fn state(lifecycle: bool) -> (AppState, Option<mpsc::Receiver<ReloadRequest>>) {
        let mut registry = Registry::default();
        let exporter = Exporter::default();
        crate::exporter::Metrics::register(&mut registry);
        let (tx, rx) = mpsc::channel(1);
        let state =
            AppState { registry: Arc::new(registry), exporter, reload: lifecycle.then_some(tx), ready: Arc::new(AtomicBool::new(false)) };
        (state, lifecycle.then_some(rx))
    }

    async fn call(router: Router, req: Request<Body>) -> (StatusCode, String, String) {
        let resp = router.oneshot(req).await.unwrap();
        let status = resp.status();
        let ctype = resp.headers().get(header::CONTENT_TYPE).map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
        (status, ctype, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn metrics_negotiates_format() {
        let (state, _) = state(false);
        let (status, ctype, body) = call(router(state.clone()), Request::get("/metrics").body(Body::empty()).unwrap()).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(ctype, "text/plain; version=0.0.4; charset=utf-8");
        assert!(body.contains("# TYPE pulsewatch_query_failures_total counter"), "{body}");
        assert!(!body.contains("# EOF"));
        assert!(body.contains("\npulsewatch_build_info{"), "{body}");
        let req = Request::get("/metrics").header("accept", "application/openmetrics-text;version=1.0.0").body(Body::empty()).unwrap();
        let (_, ctype, body) = call(router(state), req).await;
        assert!(ctype.starts_with("application/openmetrics-text"), "{ctype}");
        assert!(body.ends_with("# EOF\n"));
    }

    /// A scraper that accepts gzip (Prometheus always does) gets the same body compressed; one
    /// that does not gets it as it is.
    #[tokio::test]
    async fn metrics_are_gzipped_when_asked() {
        use std::io::Read;
        let (state, _) = state(false);
        let plain = router(state.clone()).oneshot(Request::get("/metrics").body(Body::empty()).unwrap()).await.unwrap();
        assert!(plain.headers().get(header::CONTENT_ENCODING).is_none());
        let plain = axum::body::to_bytes(plain.into_body(), usize::MAX).await.unwrap();
        let req = Request::get("/metrics").header("accept-encoding", "gzip").body(Body::empty()).unwrap();
        let resp = router(state).oneshot(req).await.unwrap();
        assert_eq!(resp.headers()[header::CONTENT_ENCODING], "gzip");
        assert_eq!(resp.headers()[header::CONTENT_TYPE], "text/plain; version=0.0.4; charset=utf-8");
        let compressed = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
        let mut body = Vec::new();
        flate2::read::GzDecoder::new(&compressed[..]).read_to_end(&mut body).unwrap();
        // The process metrics move between two scrapes; the rest is the same.
        let stable = |b: &[u8]| String::from_utf8_lossy(b).lines().filter(|l| !l.starts_with("process_")).collect::<Vec<_>>().join("\n");
        assert_eq!(stable(&body), stable(&plain));
        assert!(compressed.len() < body.len(), "{} bytes compressed from {}", compressed.len(), body.len());
    }

    #[tokio::test]
    async fn ready_follows_state_and_reload_needs_lifecycle() {
        let (state, _) = state(false);
        let (status, _, _) = call(router(state.clone()), Request::get("/-/ready").body(Body::empty()).unwrap()).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        state.ready.store(true, Ordering::Release);
        let (status, _, _) = call(router(state.clone()), Request::get("/-/ready").body(Body::empty()).unwrap()).await;
        assert_eq!(status, StatusCode::OK);
        let (status, _, body) = call(router(state), Request::post("/-/reload").body(Body::empty()).unwrap()).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    }

    /// The daemon clears `ready` when it starts draining and keeps serving: from then on
    /// `/-/ready` answers 503 (GET and HEAD), so load balancers stop sending scrapes, while
    /// `/metrics` and `/-/healthy` still answer.
    #[tokio::test]
    async fn ready_answers_503_while_draining() {
        let (state, _) = state(false);
        state.ready.store(true, Ordering::Release);
        let get = |path: &str| Request::get(path).body(Body::empty()).unwrap();
        let head = || Request::head("/-/ready").body(Body::empty()).unwrap();
        assert_eq!(call(router(state.clone()), get("/-/ready")).await.0, StatusCode::OK);
        assert_eq!(call(router(state.clone()), head()).await.0, StatusCode::OK);
        state.ready.store(false, Ordering::Release); // what the daemon does on SIGTERM
        let (status, _, body) = call(router(state.clone()), get("/-/ready")).await;
        assert_eq!((status, body.as_str()), (StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable\n"));
        assert_eq!(call(router(state.clone()), head()).await.0, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(call(router(state.clone()), get("/-/healthy")).await.0, StatusCode::OK);
        assert_eq!(call(router(state), get("/metrics")).await.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn reload_reports_failure() {
        let (state, rx) = state(true);
        let mut rx = rx.unwrap();
        tokio::spawn(async move {
            let reply = rx.recv().await.unwrap();
            let problem = crate::config::Problem::file(std::path::Path::new("r.yaml"), "bad");
            reply.send(Err(crate::config::Problems::one(problem).into())).unwrap();
        });
        let (status, _, body) = call(router(state), Request::post("/-/reload").body(Body::empty()).unwrap()).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(body.contains("r.yaml: bad"), "{body}");
    }
}

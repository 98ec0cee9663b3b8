//! The daemon: load, start groups and the HTTP server, then reload and shut down on request.

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use anyhow::{anyhow, Context as _};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Cli;
use crate::clock::Clock;
use crate::config;
use crate::engine::{Context, FitPool, RuleManager};
use crate::exporter::{Exporter, Metrics, ProcessCollector};
use crate::http::{self, AppState, ReloadError, WebConfig};
use crate::remote_write::RemoteWriter;
use crate::source::PromClient;
use crate::watch;

/// `:9464` means every interface, as in Go's `net.Listen`.
fn parse_listen_address(text: &str) -> anyhow::Result<SocketAddr> {
    let full = if text.starts_with(':') { format!("0.0.0.0{text}") } else { text.to_string() };
    full.parse().with_context(|| format!("invalid --web.listen-address {text:?}"))
}

/// Holds what a reload changes.
struct Daemon {
    config_file: std::path::PathBuf,
    manager: RuleManager,
    metrics: Metrics,
    watch_tx: mpsc::Sender<()>,
    watch: Option<watch::Watch>,
    /// The digest of the files the running configuration was loaded from.
    digest: u64,
}

/// What asked for a reload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Trigger {
    /// SIGHUP or `/-/reload`: reload whatever the files hold, as Prometheus does.
    Request,
    /// The file watch: reload only if a file's content changed.
    Watch,
}

impl Daemon {
    /// Validates everything first; only a fully valid configuration replaces the running one.
    async fn reload(&mut self, trigger: Trigger) -> Result<(), ReloadError> {
        tracing::debug!(?trigger, "reloading");
        let result = self.try_reload(trigger).await;
        match &result {
            Ok(false) => tracing::debug!(file = %self.config_file.display(), "files saved without a change, not reloaded"),
            Ok(true) => tracing::info!(file = %self.config_file.display(), "configuration reloaded"),
            Err(err) => {
                tracing::error!(file = %self.config_file.display(), error = %err, "reload failed, keeping the running configuration")
            }
        }
        if result.as_ref().map_or(true, |reloaded| *reloaded) {
            self.metrics.reloaded(result.is_ok(), Clock::System.now());
        }
        result.map(|_| ())
    }

    /// Whether the configuration was replaced.
    async fn try_reload(&mut self, trigger: Trigger) -> Result<bool, ReloadError> {
        // Parsing a large rule file takes a while: off the runtime, so that signals and
        // scrapes are served meanwhile.
        let file = self.config_file.clone();
        let loaded = tokio::task::spawn_blocking(move || config::load(&file)).await.map_err(|e| ReloadError::Panicked(e.to_string()))??;
        if trigger == Trigger::Watch && loaded.digest == self.digest {
            return Ok(false);
        }
        // Rebuilt every time, so rotated token, password and certificate files are re-read.
        let client = PromClient::new(&loaded.config.source)?;
        *self.manager.context().source.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(client);
        self.rewatch(&loaded.config.rule_files);
        self.manager.update(loaded.groups).await;
        self.digest = loaded.digest;
        Ok(true)
    }

    fn rewatch(&mut self, patterns: &[String]) {
        let dirs = watch::directories(&self.config_file, patterns);
        self.watch = None;
        match watch::start(&dirs, watch::Relevant::new(&self.config_file, patterns), self.watch_tx.clone()) {
            Ok(w) => self.watch = Some(w),
            Err(err) => tracing::warn!(error = %err, "cannot watch rule directories; reload with SIGHUP or /-/reload"),
        }
    }
}

pub(super) async fn daemon(cli: Cli) -> anyhow::Result<()> {
    let shard = cli.shard()?;
    let loaded = config::load(&cli.config_file).map_err(|p| anyhow!("invalid configuration:\n{p}"))?;
    let web = match &cli.web_config_file {
        Some(path) => WebConfig::load(path).map_err(|e| anyhow!(e))?,
        None => WebConfig::default(),
    };
    let addr = parse_listen_address(&cli.listen_address)?;
    let listener = TcpListener::bind(addr).with_context(|| format!("listening on {addr}"))?;
    listener.set_nonblocking(true)?;

    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    registry.register(
        "pulsewatch_shard",
        "This replica's shard of every rule's series (--shard.index of --shard.count)",
        Info::new(vec![("index", shard.index().to_string()), ("count", shard.count().to_string())]),
    );
    let exporter = Exporter::default();
    registry.register_collector(Box::new(ProcessCollector));

    let client = PromClient::new(&loaded.config.source).map_err(|e| anyhow!("{e}"))?;
    // Senders stop with the process; their settings take effect on restart.
    let remote_metrics = crate::remote_write::Metrics::register(&mut registry);
    let remote_write = loaded
        .config
        .remote_write
        .iter()
        .map(|rw| {
            RemoteWriter::start(rw, &remote_metrics, CancellationToken::new())
                .map_err(|e| anyhow!("remote_write {}: {e}", rw.remote_name()))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let ctx = Arc::new(Context {
        source: RwLock::new(Arc::new(client)),
        metrics: metrics.clone(),
        exporter: exporter.clone(),
        pool: FitPool::new(loaded.config.global.max_concurrent_fits),
        staleness: loaded.config.global.staleness.get().as_secs_f64(),
        clock: Clock::System,
        shard,
        remote_write,
    });
    let root = CancellationToken::new();
    let (watch_tx, mut watch_rx) = mpsc::channel(1);
    let mut daemon = Daemon {
        config_file: cli.config_file.clone(),
        manager: RuleManager::new(ctx, root.clone()),
        metrics: metrics.clone(),
        watch_tx,
        watch: None,
        digest: loaded.digest,
    };
    daemon.rewatch(&loaded.config.rule_files);
    daemon.manager.update(loaded.groups).await;
    metrics.reloaded(true, Clock::System.now());

    let (reload_tx, mut reload_rx) = mpsc::channel::<http::ReloadRequest>(4);
    let ready = Arc::new(AtomicBool::new(true));
    let state =
        AppState { registry: Arc::new(registry), exporter, reload: cli.enable_lifecycle.then_some(reload_tx), ready: ready.clone() };
    let local = listener.local_addr()?;
    // Not a child of `root`: the listener stays open while the groups drain, so that `/-/ready`
    // answers 503 and scrapes still get the last outputs.
    let http_token = CancellationToken::new();
    let server = tokio::spawn(http::serve(http::router(state), listener, web, http_token.clone()));
    tracing::info!(address = %local, config = %cli.config_file.display(), version = env!("CARGO_PKG_VERSION"), "pulsewatch started");

    let mut hangup = signal(SignalKind::hangup())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    loop {
        let (trigger, reply) = tokio::select! {
            _ = terminate.recv() => { tracing::info!("received SIGTERM, shutting down"); break }
            _ = interrupt.recv() => { tracing::info!("received SIGINT, shutting down"); break }
            _ = hangup.recv() => (Trigger::Request, None),
            Some(()) = watch_rx.recv() => (Trigger::Watch, None),
            Some(reply) = reload_rx.recv() => (Trigger::Request, Some(reply)),
            result = server_done(&server) => {
                return Err(anyhow!("HTTP server stopped: {result}"));
            }
        };
        // A reload waits for the evaluations in flight (a slow query, a long fit): a signal
        // meanwhile still stops the process.
        let outcome = tokio::select! {
            outcome = daemon.reload(trigger) => outcome,
            _ = terminate.recv() => { tracing::info!("received SIGTERM during a reload, shutting down"); break }
            _ = interrupt.recv() => { tracing::info!("received SIGINT during a reload, shutting down"); break }
        };
        if let Some(reply) = reply {
            let _ = reply.send(outcome);
        }
    }

    ready.store(false, Ordering::Release);
    drop(daemon.watch.take());
    // A second signal during the drain exits at once.
    let drained = tokio::select! {
        drained = daemon.manager.shutdown(cli.grace_period) => drained,
        _ = terminate.recv() => false,
        _ = interrupt.recv() => false,
    };
    if !drained {
        tracing::warn!(grace = ?cli.grace_period, "in-flight evaluations did not finish in the grace period");
    }
    http_token.cancel();
    // Open connections get a moment to finish their request, not the grace period again.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), server).await;
    tracing::info!("pulsewatch stopped");
    Ok(())
}

/// Resolves when the server task ends (which only happens on an error before shutdown).
async fn server_done(server: &tokio::task::JoinHandle<std::io::Result<()>>) -> String {
    loop {
        if server.is_finished() {
            return "the server task ended".to_string();
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A Prometheus stand-in that records each request's `Authorization` and answers an empty
    /// matrix.
    async fn recording_source(seen: Arc<Mutex<Vec<String>>>) -> String {
        let handler = move |headers: axum::http::HeaderMap| async move {
            let auth = headers.get("authorization").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
            seen.lock().unwrap().push(auth);
            r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#
        };
        let app = axum::Router::new().route("/api/v1/query_range", axum::routing::post(handler));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        url
    }

    #[tokio::test]
    async fn a_reload_rereads_a_rotated_token_file() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let url = recording_source(seen.clone()).await;
        let dir = tempfile::tempdir().unwrap();
        let config_file = dir.path().join("pulsewatch.yml");
        std::fs::write(dir.path().join("token"), "first\n").unwrap();
        let token = dir.path().join("token").display().to_string();
        std::fs::write(
            &config_file,
            format!("source: {{ url: '{url}', retries: 0, bearer_token: {{ file: '{token}' }} }}\nrule_files: []\n"),
        )
        .unwrap();
        let loaded = config::load(&config_file).unwrap();
        let metrics = Metrics::register(&mut Registry::default());
        let ctx = Arc::new(Context {
            source: RwLock::new(Arc::new(PromClient::new(&loaded.config.source).unwrap())),
            metrics: metrics.clone(),
            exporter: Exporter::default(),
            pool: FitPool::new(1),
            staleness: 300.0,
            clock: Clock::System,
            shard: crate::engine::Shard::ALL,
            remote_write: Vec::new(),
        });
        let (watch_tx, _watch_rx) = mpsc::channel(1);
        let mut daemon = Daemon {
            config_file,
            manager: RuleManager::new(ctx.clone(), CancellationToken::new()),
            metrics,
            watch_tx,
            watch: None,
            digest: loaded.digest,
        };
        let query = || async {
            let source = ctx.source.read().unwrap().clone();
            source.query_range("up", 0, 60, 60).await.unwrap();
            seen.lock().unwrap().last().cloned().unwrap()
        };
        assert_eq!(query().await, "Bearer first");
        // the token is rotated in place; the configuration itself does not change
        std::fs::write(dir.path().join("token"), "second\n").unwrap();
        assert_eq!(query().await, "Bearer first", "read at start, not per request");
        // a watch event for files whose content did not change is not a reload
        daemon.reload(Trigger::Watch).await.unwrap();
        assert_eq!(query().await, "Bearer first", "no reload for an unchanged configuration");
        daemon.reload(Trigger::Request).await.unwrap();
        assert_eq!(query().await, "Bearer second", "re-read on reload");
        // a changed config is reloaded by the watch
        std::fs::write(dir.path().join("token"), "third\n").unwrap();
        let config = std::fs::read_to_string(&daemon.config_file).unwrap();
        std::fs::write(&daemon.config_file, config.replace("retries: 0", "retries: 1")).unwrap();
        daemon.reload(Trigger::Watch).await.unwrap();
        assert_eq!(query().await, "Bearer third", "a changed file is reloaded");
    }

    #[test]
    fn listen_address_forms() {
        assert_eq!(parse_listen_address(":9464").unwrap(), "0.0.0.0:9464".parse().unwrap());
        assert_eq!(parse_listen_address("127.0.0.1:1").unwrap(), "127.0.0.1:1".parse().unwrap());
        assert!(parse_listen_address("nope").is_err());
    }
}

//! The HTTP server behind [`serve`]: one accept loop for the plain and the TLS listener, with a
//! connection limit and per-connection deadlines, so that idle, slow or stuck clients can
//! neither starve a scraper nor run the process out of file descriptors.
//!
//! - A new connection must deliver a complete request head within [`HEADER_READ_TIMEOUT`] (its
//!   TLS handshake included); so must a later request on it, counted from its first byte.
//! - A keep-alive connection with no request in flight is closed after [`IDLE_TIMEOUT`].
//! - A connection whose request makes no progress for [`RESPONSE_TIMEOUT`] (a client that does
//!   not read its response) is closed; handlers themselves stop at [`REQUEST_TIMEOUT`] (408).
//! - At most `Limits::max_connections` are open. At the limit a new connection closes one
//!   without a request in flight: first one that never sent a byte, then an idle keep-alive
//!   one, then one mid-handshake or mid-request-head; the oldest first within each. If every
//!   connection has a request in flight, new ones wait in the listen queue until one finishes.
//!   A connection with a request in flight is never closed to make room.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{Request, Response, StatusCode};
use axum::Router;
use axum_server::accept::Accept;
use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};
use futures::future::BoxFuture;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::auth::BasicAuth;
use super::web_config::{TlsServerConfig, WebConfig};

/// From accepting a connection (TLS handshake included) to its first complete request head,
/// and from the first byte of a later request to its complete head. Scrapers send a request
/// head in one write; 10 s leaves room for a slow link and bounds a slow-header client.
pub(crate) const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection with no request in flight is closed after this. Above Prometheus's default 1m
/// scrape interval with room for jitter, so a scraper at that interval keeps its connection
/// (and TLS session); an idle connection costs a file descriptor.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// A handler that runs longer answers 408.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// A connection whose request in flight makes no progress (none starts or finishes) for this
/// long is closed: the handler's bound, and as long again to send the response.
pub(crate) const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
/// The most connections served at once, whatever the file-descriptor limit. A sidecar has a
/// handful of scrapers (Prometheus replicas, agents); this bounds memory, not them.
pub(crate) const MAX_CONNECTIONS: usize = 1024;
/// The fewest, however low the file-descriptor limit.
const MIN_CONNECTIONS: usize = 8;
/// On shutdown, connections get this long to finish their requests.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// A connection closed for idleness gets this long to close cleanly (an HTTP/2 GOAWAY; an idle
/// HTTP/1 connection closes at once).
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// Pause after a failed accept (out of file descriptors, say), so that it does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// A failing accept is logged at WARN at most this often (DEBUG otherwise).
const ACCEPT_WARN_EVERY: Duration = Duration::from_secs(60);

/// The server's connection limit and deadlines.
#[derive(Clone, Debug)]
pub(crate) struct Limits {
    pub(crate) max_connections: usize,
    pub(crate) header_read_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) response_timeout: Duration,
}

impl Limits {
    /// The constants above, with at most half the process's open-file limit as connections
    /// (within [`MIN_CONNECTIONS`, `MAX_CONNECTIONS`]): the other half stays for the source
    /// client, rule and model files, directory watches and the runtime.
    pub(crate) fn for_this_process() -> Self {
        let soft =
            procfs::process::Process::myself().ok().and_then(|me| me.limits().ok()).and_then(|l| match l.max_open_files.soft_limit {
                procfs::process::LimitValue::Value(v) => Some(v),
                procfs::process::LimitValue::Unlimited => None,
            });
        let max_connections =
            soft.map_or(MAX_CONNECTIONS, |n| usize::try_from(n / 2).unwrap_or(usize::MAX).clamp(MIN_CONNECTIONS, MAX_CONNECTIONS));
        Self { max_connections, header_read_timeout: HEADER_READ_TIMEOUT, idle_timeout: IDLE_TIMEOUT, response_timeout: RESPONSE_TIMEOUT }
    }
}

/// Serves `router` on `listener` with `web`'s TLS and auth until `token` is cancelled, then
/// gives requests in flight a few seconds to finish.
///
/// # Errors
/// The listener cannot be used, or the certificate or key cannot be loaded.
pub async fn serve(router: Router, listener: std::net::TcpListener, web: WebConfig, token: CancellationToken) -> io::Result<()> {
    serve_with(router, listener, web, Limits::for_this_process(), token).await
}

/// [`serve`] with explicit limits (tests use small ones).
pub(crate) async fn serve_with(
    router: Router,
    listener: std::net::TcpListener,
    web: WebConfig,
    limits: Limits,
    token: CancellationToken,
) -> io::Result<()> {
    let router = if web.basic_auth_users.is_empty() {
        router
    } else {
        let auth = Arc::new(BasicAuth::new(web.basic_auth_users));
        router.layer(axum::middleware::from_fn_with_state(auth, super::auth::middleware))
    };
    let router = router.layer(tower_http::timeout::TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, REQUEST_TIMEOUT));
    let tls = web.tls_server_config.as_ref().map(|tls| acceptor(tls, limits.header_read_timeout)).transpose()?;
    // tokio needs a non-blocking socket; the daemon sets it, but a blocking one would stall a worker.
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    run(listener, router, tls, limits, token).await;
    Ok(())
}

/// The TLS acceptor for `tls` (offering HTTP/2 and HTTP/1.1), with `handshake_timeout`.
fn acceptor(tls: &TlsServerConfig, handshake_timeout: Duration) -> io::Result<RustlsAcceptor> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let failed = |e: &dyn std::fmt::Display| {
        io::Error::new(io::ErrorKind::InvalidData, format!("loading {} / {}: {e}", tls.cert_file.display(), tls.key_file.display()))
    };
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(&tls.cert_file).map_err(|e| failed(&e))?.collect::<Result<_, _>>().map_err(|e| failed(&e))?;
    if chain.is_empty() {
        return Err(failed(&"no certificate in the certificate file"));
    }
    let key = PrivateKeyDer::from_pem_file(&tls.key_file).map_err(|e| failed(&e))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| failed(&e))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| failed(&e))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(RustlsAcceptor::new(RustlsConfig::from_config(Arc::new(config))).handshake_timeout(handshake_timeout))
}

/// The accept loop, until `token` is cancelled; then every connection drains (bounded by
/// [`SHUTDOWN_GRACE`]).
async fn run(listener: tokio::net::TcpListener, router: Router, tls: Option<RustlsAcceptor>, limits: Limits, token: CancellationToken) {
    let connections = Arc::new(Connections::default());
    let tracker = TaskTracker::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // hyper's header-read timer also runs while a keep-alive connection waits for its next
    // request, so it would cut idle connections at the header-read timeout: the deadlines of
    // `serve_connection` do both jobs instead.
    builder.http1().timer(TokioTimer::new()).header_read_timeout(None);
    let builder = Arc::new(builder);
    let mut last_warning: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = token.cancelled() => break,
        };
        let tcp = match accepted {
            Ok((tcp, _)) => tcp,
            Err(err) => {
                // Out of file descriptors (ENFILE, EMFILE): an idle connection gives one back.
                if matches!(err.raw_os_error(), Some(23 | 24)) {
                    connections.evict_one();
                }
                if last_warning.is_none_or(|t| t.elapsed() >= ACCEPT_WARN_EVERY) {
                    last_warning = Some(Instant::now());
                    tracing::warn!(error = %err, "accepting a connection failed");
                } else {
                    tracing::debug!(error = %err, "accepting a connection failed");
                }
                tokio::select! {
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                    () = token.cancelled() => break,
                }
            }
        };
        if !connections.make_room(limits.max_connections, &token).await {
            break;
        }
        let (conn, registration) = connections.insert();
        let (router, tls, builder, limits, token) = (router.clone(), tls.clone(), builder.clone(), limits.clone(), token.clone());
        tracker.spawn(async move {
            let _registration = registration;
            connection(tcp, tls, router, conn, &builder, &limits, &token).await;
        });
    }
    // Refuse new connections at once rather than leaving them queued.
    drop(listener);
    tracker.close();
    tracker.wait().await;
}

/// One connection: the TLS handshake if any, then HTTP until it ends or a deadline passes.
async fn connection(
    tcp: TcpStream,
    tls: Option<RustlsAcceptor>,
    router: Router,
    conn: Arc<Conn>,
    builder: &auto::Builder<TokioExecutor>,
    limits: &Limits,
    token: &CancellationToken,
) {
    // Responses go out in one or two writes; Nagle's algorithm would hold the second for the
    // client's delayed ACK (tens of milliseconds).
    let _ = tcp.set_nodelay(true);
    let Some(acceptor) = tls else {
        return serve_connection(tcp, router, conn, builder, limits, token).await;
    };
    let (deadline, _) = conn.deadline(limits);
    // Under TLS, so that a ClientHello counts as hearing from the peer.
    let tcp = ReadTracker { inner: tcp, conn: conn.clone(), plaintext: false };
    let handshake = tokio::select! {
        handshake = acceptor.accept(tcp, ()) => handshake,
        () = tokio::time::sleep_until(deadline) => return,
        () = conn.evict.cancelled() => return,
        () = token.cancelled() => return,
    };
    match handshake {
        Ok((stream, _)) => serve_connection(stream, router, conn, builder, limits, token).await,
        Err(err) => tracing::debug!(error = %err, "TLS handshake failed"),
    }
}

/// Serves HTTP/1 or HTTP/2 on `io` under the connection's deadlines.
async fn serve_connection<S>(
    io: S,
    router: Router,
    conn: Arc<Conn>,
    builder: &auto::Builder<TokioExecutor>,
    limits: &Limits,
    token: &CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(ReadTracker { inner: io, conn: conn.clone(), plaintext: true });
    let served = builder.serve_connection(io, TowerToHyperService::new(Tracked { router, conn: conn.clone() }));
    tokio::pin!(served);
    let grace = loop {
        let (deadline, _) = conn.deadline(limits);
        tokio::select! {
            result = served.as_mut() => {
                if let Err(err) = result {
                    tracing::debug!(error = %err, "connection ended with an error");
                }
                return;
            }
            // A request started or finished, or its first bytes came: a new deadline.
            () = conn.wake.notified() => {}
            () = tokio::time::sleep_until(deadline) => {
                let (deadline, phase) = conn.deadline(limits);
                if deadline > Instant::now() {
                    continue; // the state changed just now
                }
                tracing::debug!(?phase, "closing connection: deadline passed");
                match phase {
                    Phase::Idle => break CLOSE_GRACE,
                    // Mid-request: there is no one to tell.
                    Phase::FirstRequest | Phase::Reading | Phase::Busy => return,
                }
            }
            () = conn.evict.cancelled() => {
                tracing::debug!("closing idle connection to make room for a new one");
                if conn.deadline(limits).1 == Phase::Busy {
                    // A request came in as it was chosen: let that one finish.
                    break limits.response_timeout;
                }
                // At once: a new connection waits for this descriptor.
                return;
            }
            () = token.cancelled() => break SHUTDOWN_GRACE,
        }
    };
    served.as_mut().graceful_shutdown();
    // A server shutdown cuts a longer grace to its own.
    let shutdown = async {
        token.cancelled().await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        _ = tokio::time::timeout(grace, served) => {}
        () = shutdown => {}
    }
}

// === impl Connections ===

/// The open connections.
#[derive(Default)]
struct Connections {
    open: Mutex<HashMap<u64, Arc<Conn>>>,
    /// A connection closed, or has no request in flight any more: there may be room now.
    changed: Arc<Notify>,
    next_id: AtomicU64,
}

/// Removes its connection from [`Connections`] when dropped.
struct Registration {
    connections: Arc<Connections>,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.connections.lock().remove(&self.id);
        self.connections.changed.notify_waiters();
    }
}

impl Connections {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Conn>>> {
        // Short critical sections, never across an await; a panic elsewhere cannot leave the map
        // inconsistent, so a poisoned lock is still usable.
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn insert(self: &Arc<Self>) -> (Arc<Conn>, Registration) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Conn {
            state: Mutex::new(ConnState { in_flight: 0, requests: 0, reading: false, http2: false, heard: false, since: Instant::now() }),
            wake: Notify::new(),
            evict: CancellationToken::new(),
            changed: self.changed.clone(),
        });
        self.lock().insert(id, conn.clone());
        (conn, Registration { connections: self.clone(), id })
    }

    /// Asks the connection ranked first by [`Conn::eviction_rank`] to close; false if every
    /// connection has a request in flight. It counts until its task has closed it: only then
    /// is its file descriptor free.
    fn evict_one(&self) -> bool {
        let open = self.lock();
        let oldest = open
            .values()
            .filter(|conn| !conn.evict.is_cancelled())
            .filter_map(|conn| Some((conn.eviction_rank()?, conn)))
            .min_by_key(|(rank, _)| *rank);
        match oldest {
            Some((_, conn)) => {
                conn.evict.cancel();
                true
            }
            None => false,
        }
    }

    /// Waits until a new connection fits under `max`, closing an idle one if needed; false if
    /// `token` was cancelled first.
    async fn make_room(&self, max: usize, token: &CancellationToken) -> bool {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            // Registered before looking, so that a change in between is not missed.
            changed.as_mut().enable();
            {
                let open = self.lock();
                if open.len() < max {
                    return true;
                }
                // One eviction at a time: wait for it to take effect before asking for another.
                if !open.values().any(|conn| conn.evict.is_cancelled()) {
                    drop(open);
                    self.evict_one();
                }
            }
            tokio::select! {
                () = changed => {}
                () = token.cancelled() => return false,
            }
        }
    }
}

// === impl Conn ===

/// One connection's state, shared by its task, its requests and its reads.
struct Conn {
    state: Mutex<ConnState>,
    /// The state changed: the connection's task computes its deadline again.
    wake: Notify,
    /// Cancelled to close the connection and make room for a new one.
    evict: CancellationToken,
    changed: Arc<Notify>,
}

struct ConnState {
    /// Requests whose response is not fully sent.
    in_flight: usize,
    /// Requests received so far.
    requests: u64,
    /// Bytes of a next request arrived while none was in flight (HTTP/1 only: an HTTP/2 client
    /// sends control frames between requests, so its idle time counts from the last response).
    reading: bool,
    http2: bool,
    /// The peer sent at least one byte (a TLS record counts).
    heard: bool,
    /// When the current phase began (see [`Conn::deadline`]).
    since: Instant,
}

/// What a connection is doing, which sets its deadline.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Phase {
    /// Accepted, no request yet: [`Limits::header_read_timeout`] from the accept.
    FirstRequest,
    /// A later request is arriving: the header-read timeout from its first byte.
    Reading,
    /// Between requests: [`Limits::idle_timeout`].
    Idle,
    /// A request is in flight: [`Limits::response_timeout`] from its last progress.
    Busy,
}

impl Conn {
    fn lock(&self) -> std::sync::MutexGuard<'_, ConnState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn deadline(&self, limits: &Limits) -> (Instant, Phase) {
        let state = self.lock();
        let phase = match &*state {
            ConnState { in_flight: 1.., .. } => Phase::Busy,
            ConnState { requests: 0, .. } => Phase::FirstRequest,
            ConnState { reading: true, .. } => Phase::Reading,
            ConnState { .. } => Phase::Idle,
        };
        let timeout = match phase {
            Phase::FirstRequest | Phase::Reading => limits.header_read_timeout,
            Phase::Idle => limits.idle_timeout,
            Phase::Busy => limits.response_timeout,
        };
        (state.since + timeout, phase)
    }

    /// Which connection to close first to make room (the lowest), or `None` with a request
    /// in flight: one that never sent a byte (a leak, a port scan, a flood), then one idle
    /// between requests (its client reconnects when it needs to), then one mid-handshake or
    /// mid-request-head (a scraper's new connection looks like that for a moment); within each,
    /// the one whose phase began earliest.
    fn eviction_rank(&self) -> Option<(u8, Instant)> {
        let state = self.lock();
        let class = match &*state {
            ConnState { in_flight: 1.., .. } => return None,
            ConnState { heard: false, .. } => 0,
            ConnState { requests: 1.., reading: false, .. } => 1,
            ConnState { .. } => 2,
        };
        Some((class, state.since))
    }

    fn begin_request(self: &Arc<Self>, version: axum::http::Version) -> InFlight {
        {
            let mut state = self.lock();
            state.http2 |= version == axum::http::Version::HTTP_2;
            state.in_flight += 1;
            state.requests += 1;
            state.reading = false;
            state.since = Instant::now();
        }
        self.wake.notify_one();
        InFlight(self.clone())
    }

    /// The peer sent bytes: TLS records (`plaintext` false) or HTTP.
    fn bytes_read(&self, plaintext: bool) {
        {
            let mut state = self.lock();
            state.heard = true;
            if !plaintext || state.in_flight > 0 || state.requests == 0 || state.reading || state.http2 {
                return;
            }
            state.reading = true;
            state.since = Instant::now();
        }
        self.wake.notify_one();
    }
}

/// A request in flight, until its response body is sent (or dropped).
struct InFlight(Arc<Conn>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let idle = {
            let mut state = self.0.lock();
            state.in_flight -= 1;
            state.since = Instant::now();
            state.in_flight == 0
        };
        self.0.wake.notify_one();
        if idle {
            self.0.changed.notify_waiters();
        }
    }
}

// === impl Tracked ===

/// The router, counting each request in flight on its connection until the response is sent.
#[derive(Clone)]
struct Tracked {
    router: Router,
    conn: Arc<Conn>,
}

impl<B> tower::Service<Request<B>> for Tracked
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response<TrackedBody>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let in_flight = self.conn.begin_request(request.version());
        // A Router is always ready, so it can be called without `poll_ready`.
        let response = tower::Service::call(&mut self.router.clone(), request);
        Box::pin(async move {
            let response = response.await.unwrap_or_else(|never| match never {});
            Ok(response.map(|body| TrackedBody { body, _in_flight: in_flight }))
        })
    }
}

/// A response body that ends its request's time in flight when it is dropped (hyper drops it
/// once the last frame is sent, or when the connection ends).
struct TrackedBody {
    body: Body,
    _in_flight: InFlight,
}

impl http_body::Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// A connection's byte stream, noting that the peer sent something and, for the plain text
/// (HTTP, above TLS if any), the first bytes of each request that arrive between requests.
struct ReadTracker<S> {
    inner: S,
    conn: Arc<Conn>,
    plaintext: bool,
}

impl<S: AsyncRead + Unpin> AsyncRead for ReadTracker<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.conn.bytes_read(this.plaintext);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ReadTracker<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read as _, Write as _};
    use std::net::SocketAddr;
    use std::path::Path;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    /// Longer than any of the server's timeouts: a test that waits this long has failed.
    const GIVE_UP: Duration = Duration::from_secs(3600);
    const HEALTHY: &[u8] = b"GET /-/healthy HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    const SLOW: &[u8] = b"GET /slow HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";

    /// `/-/healthy`, and `/slow`, which answers once `release` is notified.
    fn app(release: Arc<Notify>) -> Router {
        Router::new()
            .route("/-/healthy", axum::routing::get(|| async { "pulsewatch is Healthy.\n" }))
            .route(
                "/slow",
                axum::routing::get(move || async move {
                    release.notified().await;
                    "pulsewatch is Healthy.\n"
                }),
            )
            .route(
                "/endless",
                axum::routing::get(|| async {
                    Body::from_stream(futures::stream::repeat_with(|| Ok::<_, Infallible>(Bytes::from_static(&[b'x'; 1 << 16]))))
                }),
            )
    }

    /// Serves `app()` with `web` on a free port until the guard is dropped.
    fn start(web: WebConfig) -> (SocketAddr, tokio_util::sync::DropGuard) {
        start_with(web, Limits::for_this_process(), Arc::new(Notify::new())).0
    }

    fn start_with(
        web: WebConfig,
        limits: Limits,
        release: Arc<Notify>,
    ) -> ((SocketAddr, tokio_util::sync::DropGuard), tokio::task::JoinHandle<io::Result<()>>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let token = CancellationToken::new();
        let server = tokio::spawn(serve_with(app(release), listener, web, limits, token.clone()));
        ((addr, token.drop_guard()), server)
    }

    /// Connects with a blocking connect, so that the connection is established (and queued for
    /// the server's accept) before paused time can auto-advance.
    fn connect(addr: SocketAddr) -> TcpStream {
        let stream = std::net::TcpStream::connect(addr).unwrap();
        stream.set_nonblocking(true).unwrap();
        TcpStream::from_std(stream).unwrap()
    }

    /// Reads until the server closes the connection; how long that took. Panics after
    /// `GIVE_UP` (of paused time) if it never does.
    async fn until_closed(stream: &mut TcpStream) -> Duration {
        let began = Instant::now();
        let mut buf = [0u8; 4096];
        let read = async {
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        };
        tokio::time::timeout(GIVE_UP, read).await.expect("the server never closed the connection");
        began.elapsed()
    }

    /// Reads (and drops) up to `limit` bytes; true if the server closed the connection first.
    /// Paused time stands still meanwhile: a bulk transfer over loopback waits for the kernel
    /// (a delayed ACK, say) in real time, and auto-advancing past the server's deadlines
    /// then would close the connection under the test.
    async fn closed_within(stream: &mut TcpStream, limit: usize) -> bool {
        let drain = async {
            let mut buf = vec![0u8; 1 << 16];
            let mut total = 0;
            while total < limit {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return true,
                    Ok(n) => total += n,
                }
            }
            false
        };
        // Always ready again: the runtime never idles, so the paused clock never advances.
        let hold_time = async {
            loop {
                tokio::task::yield_now().await;
            }
        };
        tokio::select! {
            closed = drain => closed,
            () = hold_time => unreachable!(),
        }
    }

    /// Reads one response to `HEALTHY` (which is small, so one `read` per chunk suffices).
    async fn read_healthy(stream: &mut TcpStream) {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&got).contains("Healthy.\n") {
            let n = tokio::time::timeout(GIVE_UP, stream.read(&mut buf)).await.expect("no response").unwrap();
            assert!(n > 0, "closed before the response: {}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
        assert!(got.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&got));
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_connection_is_closed_after_the_header_read_timeout() {
        let (addr, _server) = start(WebConfig::default());
        let mut stream = connect(addr);
        let waited = until_closed(&mut stream).await;
        assert!(waited >= HEADER_READ_TIMEOUT && waited < IDLE_TIMEOUT, "{waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_request_head_is_closed_after_the_header_read_timeout() {
        let (addr, _server) = start(WebConfig::default());
        let mut stream = connect(addr);
        stream.write_all(HEALTHY).await.unwrap();
        read_healthy(&mut stream).await;
        // A keep-alive connection starts its next request but never finishes the head.
        stream.write_all(b"GET /-/healthy HTTP/1.1\r\nHost: 127.0.0.1\r\n").await.unwrap();
        let waited = until_closed(&mut stream).await;
        assert!(waited >= HEADER_READ_TIMEOUT && waited < IDLE_TIMEOUT, "{waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
        let (addr, _server) = start(WebConfig::default());
        let mut stream = connect(addr);
        for _ in 0..2 {
            stream.write_all(HEALTHY).await.unwrap();
            read_healthy(&mut stream).await;
        }
        let waited = until_closed(&mut stream).await;
        assert!(waited >= IDLE_TIMEOUT && waited < IDLE_TIMEOUT + HEADER_READ_TIMEOUT, "{waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn the_connection_limit_has_a_floor_and_a_ceiling() {
        let limits = Limits::for_this_process();
        assert!((MIN_CONNECTIONS..=MAX_CONNECTIONS).contains(&limits.max_connections), "{limits:?}");
    }

    /// At the limit, a new connection closes the one idle longest; the scraper is served.
    #[tokio::test(start_paused = true)]
    async fn at_the_limit_the_connection_idle_longest_makes_room() {
        let limits = Limits { max_connections: 3, ..Limits::for_this_process() };
        let ((addr, _server), _) = start_with(WebConfig::default(), limits, Arc::new(Notify::new()));
        let mut oldest = connect(addr);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut idle: Vec<TcpStream> = (0..2).map(|_| connect(addr)).collect();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let began = Instant::now();
        let mut scraper = connect(addr);
        scraper.write_all(HEALTHY).await.unwrap();
        read_healthy(&mut scraper).await;
        assert!(began.elapsed() < Duration::from_secs(1), "the scraper waited {:?}", began.elapsed());
        // The oldest idle connection was closed for it, at once; the younger ones are open.
        assert!(until_closed(&mut oldest).await < Duration::from_secs(1));
        for conn in &mut idle {
            conn.write_all(HEALTHY).await.unwrap();
            read_healthy(conn).await;
        }
    }

    /// To make room, a connection that never sent a byte goes first (even the newest), then
    /// one idle between requests, before one that is sending a request head.
    #[tokio::test(start_paused = true)]
    async fn eviction_prefers_silent_then_idle_connections() {
        let limits = Limits { max_connections: 3, ..Limits::for_this_process() };
        let ((addr, _server), _) = start_with(WebConfig::default(), limits, Arc::new(Notify::new()));
        let mut sending = connect(addr);
        sending.write_all(b"GET /-/healthy HTTP/1.1\r\n").await.unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut idle = connect(addr);
        idle.write_all(HEALTHY).await.unwrap();
        read_healthy(&mut idle).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut silent = connect(addr);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut scrapers = Vec::new();
        for (victim, name) in [(&mut silent, "silent"), (&mut idle, "idle")] {
            let mut scraper = connect(addr);
            scraper.write_all(HEALTHY).await.unwrap();
            read_healthy(&mut scraper).await;
            assert!(until_closed(victim).await < Duration::from_secs(1), "{name} was not closed first");
            // Idle too now, but more recently than `idle`.
            scrapers.push(scraper);
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        sending.write_all(b"Host: 127.0.0.1\r\n\r\n").await.unwrap();
        read_healthy(&mut sending).await;
    }

    /// A connection with a request in flight is never closed to make room: with every slot busy,
    /// a new connection waits until one is free.
    #[tokio::test(start_paused = true)]
    async fn connections_with_a_request_in_flight_are_not_evicted() {
        let release = Arc::new(Notify::new());
        let limits = Limits { max_connections: 1, ..Limits::for_this_process() };
        let ((addr, _server), _) = start_with(WebConfig::default(), limits, release.clone());
        let mut busy = connect(addr);
        busy.write_all(SLOW).await.unwrap();
        tokio::task::yield_now().await;
        let mut waiting = connect(addr);
        waiting.write_all(HEALTHY).await.unwrap();
        let mut buf = [0u8; 64];
        let early = tokio::time::timeout(REQUEST_TIMEOUT / 2, waiting.read(&mut buf)).await;
        assert!(early.is_err(), "answered while the only slot was busy: {early:?}");
        release.notify_one();
        read_healthy(&mut busy).await;
        // Now idle, `busy` makes room for the waiting connection.
        read_healthy(&mut waiting).await;
    }

    /// A client that stops reading its response is closed once its request made no progress for
    /// the response timeout.
    #[tokio::test(start_paused = true)]
    async fn a_client_that_does_not_read_its_response_is_closed_after_the_response_timeout() {
        let ((addr, _server), _) = start_with(WebConfig::default(), Limits::for_this_process(), Arc::new(Notify::new()));
        let mut stuck = connect(addr);
        stuck.write_all(b"GET /endless HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").await.unwrap();
        // The socket buffers fill (a few MB on loopback), then the server waits. Reading more
        // than they hold tells whether it is still sending.
        tokio::time::sleep(RESPONSE_TIMEOUT - Duration::from_secs(1)).await;
        assert!(!closed_within(&mut stuck, 64 << 20).await, "closed before the response timeout");
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(closed_within(&mut stuck, 256 << 20).await, "still sending after the response timeout");
    }

    /// On shutdown the server stops accepting, lets the request in flight finish, and returns.
    #[tokio::test(start_paused = true)]
    async fn shutdown_drains_requests_in_flight() {
        let release = Arc::new(Notify::new());
        let ((addr, guard), server) = start_with(WebConfig::default(), Limits::for_this_process(), release.clone());
        let mut busy = connect(addr);
        busy.write_all(SLOW).await.unwrap();
        tokio::task::yield_now().await;
        drop(guard);
        tokio::task::yield_now().await;
        assert!(std::net::TcpStream::connect(addr).is_err(), "still accepting after shutdown");
        release.notify_one();
        read_healthy(&mut busy).await;
        tokio::time::timeout(GIVE_UP, server).await.expect("serve did not return").unwrap().unwrap();
    }

    fn self_signed(dir: &Path) -> TlsServerConfig {
        let out = std::process::Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
            .args(["-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1", "-addext", "basicConstraints=critical,CA:FALSE"])
            .args(["-keyout", "key.pem", "-out", "cert.pem"])
            .current_dir(dir)
            .output()
            .expect("openssl is needed for this test: apt-get install -y --no-install-recommends openssl");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        TlsServerConfig { cert_file: dir.join("cert.pem"), key_file: dir.join("key.pem") }
    }

    /// A TLS client driven by hand over a tokio socket, in the test's own runtime: with paused
    /// time every wait is then either loopback I/O that is already ready or a server timer.
    struct TlsClient {
        tcp: TcpStream,
        conn: rustls::ClientConnection,
    }

    impl TlsClient {
        async fn connect(addr: SocketAddr, cert: &Path) -> Self {
            use rustls::pki_types::pem::PemObject;
            let mut roots = rustls::RootCertStore::empty();
            for c in rustls::pki_types::CertificateDer::pem_file_iter(cert).unwrap() {
                roots.add(c.unwrap()).unwrap();
            }
            let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
            let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
            let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
            let mut client = Self { tcp: connect(addr), conn };
            while client.conn.is_handshaking() {
                client.flush().await;
                if client.conn.is_handshaking() {
                    assert!(client.fill().await, "closed during the handshake");
                }
            }
            client.flush().await;
            client
        }

        async fn flush(&mut self) {
            while self.conn.wants_write() {
                let mut out = Vec::new();
                self.conn.write_tls(&mut out).unwrap();
                self.tcp.write_all(&out).await.unwrap();
            }
        }

        /// Reads one chunk of TLS records; false once the server closed or reset.
        async fn fill(&mut self) -> bool {
            let mut buf = [0u8; 16384];
            let n = match tokio::time::timeout(GIVE_UP, self.tcp.read(&mut buf)).await.expect("the server never answered or closed") {
                Ok(0) | Err(_) => return false,
                Ok(n) => n,
            };
            self.conn.read_tls(&mut &buf[..n]).unwrap();
            self.conn.process_new_packets().is_ok()
        }

        async fn healthy(&mut self) {
            self.conn.writer().write_all(HEALTHY).unwrap();
            self.flush().await;
            let mut got = Vec::new();
            while !String::from_utf8_lossy(&got).contains("Healthy.\n") {
                assert!(self.fill().await, "closed before the response");
                let mut buf = [0u8; 4096];
                while let Ok(n) = self.conn.reader().read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    got.extend_from_slice(&buf[..n]);
                }
            }
            assert!(got.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&got));
        }

        /// How long until the server closes (EOF, reset, or close_notify).
        async fn until_closed(&mut self) -> Duration {
            let began = Instant::now();
            while self.fill().await {
                if matches!(self.conn.reader().read(&mut [0u8; 1]), Ok(0)) {
                    break;
                }
            }
            began.elapsed()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn tls_connections_are_closed_after_the_header_read_and_idle_timeouts() {
        let dir = tempfile::tempdir().unwrap();
        let tls = self_signed(dir.path());
        let cert = tls.cert_file.clone();
        let (addr, _server) = start(WebConfig { tls_server_config: Some(tls), ..WebConfig::default() });
        // No handshake at all.
        let mut silent = connect(addr);
        let waited = until_closed(&mut silent).await;
        assert!(waited >= HEADER_READ_TIMEOUT && waited < IDLE_TIMEOUT, "silent: {waited:?}");
        // A handshake, then no request.
        let waited = TlsClient::connect(addr, &cert).await.until_closed().await;
        assert!(waited >= HEADER_READ_TIMEOUT - Duration::from_millis(100) && waited < IDLE_TIMEOUT, "no request: {waited:?}");
        // Requests, then idle.
        let mut client = TlsClient::connect(addr, &cert).await;
        client.healthy().await;
        client.healthy().await;
        let waited = client.until_closed().await;
        assert!(waited >= IDLE_TIMEOUT && waited < IDLE_TIMEOUT + HEADER_READ_TIMEOUT, "idle: {waited:?}");
    }
}

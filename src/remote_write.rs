//! Remote write: every output series of each evaluation, sent to the `remote_write:` endpoints
//! with the Prometheus remote-write protocol 1.0 (a protobuf `WriteRequest`, snappy-compressed).
//!
//! Each endpoint has a bounded queue and one sender task. An evaluation enqueues its rule's
//! output samples, stamped with the evaluation's start (never a future time); samples that find
//! the queue full are dropped and counted. The sender sends a request once `max_samples_per_send`
//! samples wait or the oldest has waited `batch_send_deadline`. A 5xx answer, a 429 or a
//! transport error is retried with exponential backoff (`min_backoff` doubling up to
//! `max_backoff`, `max_retries` times); any other 4xx is not, as the receiver will refuse it
//! again. Requests go one at a time, so samples of a series arrive in order.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::{QueueConfig, RemoteWriteConfig};
use crate::exporter::OutputSample;

/// The protobuf messages of `prometheus/prompb` that remote write 1.0 sends.
pub mod proto {
    /// A batch of series.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct WriteRequest {
        /// The series.
        #[prost(message, repeated, tag = "1")]
        pub timeseries: Vec<TimeSeries>,
    }

    /// One series: labels sorted by name, `__name__` included, and samples in time order.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TimeSeries {
        /// The labels.
        #[prost(message, repeated, tag = "1")]
        pub labels: Vec<Label>,
        /// The samples.
        #[prost(message, repeated, tag = "2")]
        pub samples: Vec<Sample>,
    }

    /// A label pair.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Label {
        /// The name.
        #[prost(string, tag = "1")]
        pub name: String,
        /// The value.
        #[prost(string, tag = "2")]
        pub value: String,
    }

    /// A sample.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Sample {
        /// The value.
        #[prost(double, tag = "1")]
        pub value: f64,
        /// Unix milliseconds.
        #[prost(int64, tag = "2")]
        pub timestamp: i64,
    }
}

/// The body of a request: `series` as a snappy-compressed (block format) `WriteRequest`.
pub fn encode(series: Vec<proto::TimeSeries>) -> Vec<u8> {
    use prost::Message as _;
    let request = proto::WriteRequest { timeseries: series };
    snap::raw::Encoder::new().compress_vec(&request.encode_to_vec()).expect("snappy compresses any input")
}

/// Self-metrics of remote write, by `remote_name`.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    sent: Family<Vec<(String, String)>, Counter>,
    failed: Family<Vec<(String, String)>, Counter>,
    dropped: Family<Vec<(String, String)>, Counter>,
    retried: Family<Vec<(String, String)>, Counter>,
    pending: Family<Vec<(String, String)>, Gauge>,
}

impl Metrics {
    /// Creates the families and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register("pulsewatch_remote_write_samples", "Samples the remote-write endpoint accepted", m.sent.clone());
        registry.register(
            "pulsewatch_remote_write_samples_failed",
            "Samples in requests that failed for good (a 4xx other than 429, or every retry failed)",
            m.failed.clone(),
        );
        registry.register("pulsewatch_remote_write_samples_dropped", "Samples dropped because the queue was full", m.dropped.clone());
        registry.register("pulsewatch_remote_write_samples_retried", "Samples in requests that were retried", m.retried.clone());
        registry.register("pulsewatch_remote_write_samples_pending", "Samples in the queue, waiting to be sent", m.pending.clone());
        m
    }
}

/// The queue of one endpoint: what evaluations give [`RemoteWriter::enqueue`], until the sender
/// takes it.
#[derive(Debug)]
struct Queue {
    series: Mutex<VecDeque<proto::TimeSeries>>,
    /// Woken when a request's worth waits.
    full_batch: Notify,
}

/// One remote-write endpoint: its queue, and a sender task that runs until the token is
/// cancelled.
#[derive(Clone, Debug)]
pub struct RemoteWriter {
    name: String,
    queue: Arc<Queue>,
    settings: QueueConfig,
    metrics: Metrics,
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
enum SendError {
    /// Worth retrying: a 5xx, a 429 or a transport error.
    #[error("{0}")]
    Retryable(String),
    /// Not worth retrying: the receiver refused the request.
    #[error("{0}")]
    Refused(String),
}

impl RemoteWriter {
    /// Starts the sender task of `config` on the current runtime.
    ///
    /// # Errors
    /// The HTTP client's settings (a secret or certificate file, say).
    pub fn start(config: &RemoteWriteConfig, metrics: &Metrics, token: CancellationToken) -> Result<Self, crate::source::Error> {
        let http = crate::source::http_client(&config.http())?;
        let writer = Self {
            name: config.remote_name(),
            queue: Arc::new(Queue { series: Mutex::new(VecDeque::new()), full_batch: Notify::new() }),
            settings: config.queue_config.clone(),
            metrics: metrics.clone(),
        };
        let url = config.url.clone();
        tokio::spawn(writer.clone().send_loop(http, url, token));
        Ok(writer)
    }

    fn labels(&self) -> Vec<(String, String)> {
        vec![("remote_name".to_string(), self.name.clone())]
    }

    /// Queues `samples` at `timestamp_ms`; those that do not fit are dropped and counted.
    pub fn enqueue(&self, samples: &[OutputSample], timestamp_ms: i64) {
        let mut queue = self.queue.series.lock().unwrap_or_else(|p| p.into_inner());
        let room = self.settings.capacity.saturating_sub(queue.len());
        let taken = samples.len().min(room);
        queue.extend(samples[..taken].iter().map(|s| proto::TimeSeries {
            labels: s.labels.iter().map(|(name, value)| proto::Label { name: name.clone(), value: value.clone() }).collect(),
            samples: vec![proto::Sample { value: s.value, timestamp: timestamp_ms }],
        }));
        let pending = queue.len();
        drop(queue);
        if taken < samples.len() {
            self.metrics.dropped.get_or_create(&self.labels()).inc_by((samples.len() - taken) as u64);
        }
        self.metrics.pending.get_or_create(&self.labels()).set(pending as i64);
        if pending >= self.settings.max_samples_per_send {
            self.queue.full_batch.notify_one();
        }
    }

    /// Takes up to a request's worth of the queue.
    fn take_batch(&self) -> Vec<proto::TimeSeries> {
        let mut queue = self.queue.series.lock().unwrap_or_else(|p| p.into_inner());
        let n = queue.len().min(self.settings.max_samples_per_send);
        let batch: Vec<_> = queue.drain(..n).collect();
        self.metrics.pending.get_or_create(&self.labels()).set(queue.len() as i64);
        batch
    }

    async fn send_loop(self, http: reqwest::Client, url: String, token: CancellationToken) {
        loop {
            // A request's worth, or whatever waits once the deadline passes.
            tokio::select! {
                () = token.cancelled() => return,
                () = self.queue.full_batch.notified() => {}
                () = tokio::time::sleep(self.settings.batch_send_deadline.get()) => {}
            }
            loop {
                let batch = self.take_batch();
                if batch.is_empty() {
                    break;
                }
                let n = batch.len() as u64;
                let body = encode(batch);
                match self.send_with_retries(&http, &url, body, &token).await {
                    Ok(()) => {
                        self.metrics.sent.get_or_create(&self.labels()).inc_by(n);
                    }
                    Err(err) => {
                        self.metrics.failed.get_or_create(&self.labels()).inc_by(n);
                        tracing::warn!(remote_name = %self.name, samples = n, error = %err, "remote write failed; samples dropped");
                    }
                }
                if token.is_cancelled()
                    || self.queue.series.lock().unwrap_or_else(|p| p.into_inner()).len() < self.settings.max_samples_per_send
                {
                    break;
                }
            }
        }
    }

    async fn send_with_retries(
        &self,
        http: &reqwest::Client,
        url: &str,
        body: Vec<u8>,
        token: &CancellationToken,
    ) -> Result<(), SendError> {
        let mut backoff = self.settings.min_backoff.get();
        let mut attempt = 0;
        loop {
            match send(http, url, body.clone()).await {
                Err(SendError::Retryable(why)) if attempt < self.settings.max_retries && !token.is_cancelled() => {
                    attempt += 1;
                    tracing::debug!(remote_name = %self.name, attempt, error = %why, "remote write retried");
                    self.metrics.retried.get_or_create(&self.labels()).inc();
                    tokio::select! {
                        () = token.cancelled() => return Err(SendError::Retryable(why)),
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(self.settings.max_backoff.get());
                }
                result => return result,
            }
        }
    }
}

/// One request.
async fn send(http: &reqwest::Client, url: &str, body: Vec<u8>) -> Result<(), SendError> {
    let answer = http
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/x-protobuf")
        .header(reqwest::header::CONTENT_ENCODING, "snappy")
        .header("X-Prometheus-Remote-Write-Version", "0.1.0")
        .body(body)
        .send()
        .await
        .map_err(|e| SendError::Retryable(format!("sending: {e}")))?;
    let status = answer.status();
    if status.is_success() {
        return Ok(());
    }
    // The start of the receiver's reason, which names what it refused.
    let text = answer.text().await.unwrap_or_default();
    let why = format!("{status}: {}", text.chars().take(256).collect::<String>().trim());
    if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
        Err(SendError::Retryable(why))
    } else {
        Err(SendError::Refused(why))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// How long a test waits for a sender.
    const WAIT: Duration = Duration::from_secs(10);
    use axum::body::Bytes;
    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode};
    use prost::Message as _;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A receiver that answers the statuses of `script` in turn (then 204), and keeps what it
    /// decoded.
    #[derive(Default)]
    struct Receiver {
        script: Mutex<VecDeque<u16>>,
        requests: AtomicUsize,
        received: Mutex<Vec<proto::TimeSeries>>,
    }

    async fn receive(State(r): State<Arc<Receiver>>, headers: HeaderMap, body: Bytes) -> StatusCode {
        r.requests.fetch_add(1, Ordering::SeqCst);
        assert_eq!(headers["content-encoding"], "snappy");
        assert_eq!(headers["x-scope-orgid"], "team-a", "configured headers are sent");
        let status = r.script.lock().unwrap().pop_front().unwrap_or(204);
        if status == 204 {
            let raw = snap::raw::Decoder::new().decompress_vec(&body).unwrap();
            r.received.lock().unwrap().extend(proto::WriteRequest::decode(raw.as_slice()).unwrap().timeseries);
        }
        StatusCode::from_u16(status).unwrap()
    }

    async fn start(script: &[u16], queue: &str) -> (Arc<Receiver>, RemoteWriter, Metrics, CancellationToken) {
        let receiver = Arc::new(Receiver { script: Mutex::new(script.iter().copied().collect()), ..Default::default() });
        let app = axum::Router::new().route("/write", axum::routing::post(receive)).with_state(receiver.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let yaml = format!("url: http://127.0.0.1:{port}/write\nname: test\nheaders: {{ X-Scope-OrgID: team-a }}\nqueue_config: {queue}\n");
        let config: RemoteWriteConfig = serde_saphyr::from_str(&yaml).unwrap();
        let metrics = Metrics::default();
        let token = CancellationToken::new();
        let writer = RemoteWriter::start(&config, &metrics, token.clone()).unwrap();
        (receiver, writer, metrics, token)
    }

    fn sample(i: usize) -> OutputSample {
        OutputSample {
            labels: vec![
                ("__name__".into(), "pulsewatch_anomaly_score".into()),
                ("instance".into(), format!("h{i}")),
                ("rule".into(), "r".into()),
            ],
            value: i as f64 / 4.0,
        }
    }

    fn count(family: &Family<Vec<(String, String)>, Counter>) -> u64 {
        family.get_or_create(&vec![("remote_name".to_string(), "test".to_string())]).get()
    }

    async fn until(what: &str, f: impl Fn() -> bool) {
        let began = std::time::Instant::now();
        while !f() {
            assert!(began.elapsed() < WAIT, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn sends_batches_and_retries_5xx_and_429_but_not_other_4xx() {
        let (receiver, writer, metrics, token) =
            start(&[503, 429, 204, 400], "{ max_samples_per_send: 3, batch_send_deadline: 50ms, min_backoff: 10ms, max_backoff: 20ms }")
                .await;
        // The first batch of 3 meets 503, then 429 (both retried), then succeeds. The next
        // batch meets a 400: dropped, not retried.
        writer.enqueue(&(0..3).map(sample).collect::<Vec<_>>(), 1_700_000_000_000);
        until("the first batch", || count(&metrics.sent) == 3).await;
        assert_eq!(receiver.requests.load(Ordering::SeqCst), 3);
        assert_eq!(count(&metrics.retried), 2);
        writer.enqueue(&(3..5).map(sample).collect::<Vec<_>>(), 1_700_000_060_000);
        until("the refused batch", || count(&metrics.failed) == 2).await;
        assert_eq!(receiver.requests.load(Ordering::SeqCst), 4, "a 400 is not retried");
        // A batch smaller than max_samples_per_send goes after the deadline.
        writer.enqueue(&[sample(9)], 1_700_000_120_000);
        until("the deadline's batch", || count(&metrics.sent) == 4).await;
        let received = receiver.received.lock().unwrap().clone();
        assert_eq!(received.len(), 4);
        assert_eq!(received[0].labels[1], proto::Label { name: "instance".into(), value: "h0".into() });
        assert_eq!(received[0].samples, [proto::Sample { value: 0.0, timestamp: 1_700_000_000_000 }]);
        assert_eq!(received[3].samples, [proto::Sample { value: 2.25, timestamp: 1_700_000_120_000 }]);
        token.cancel();
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_counts_what_does_not_fit() {
        // A receiver that fails every request keeps the first batch in retries for a while.
        let (_receiver, writer, metrics, token) =
            start(&[503; 50], "{ capacity: 5, max_samples_per_send: 5, batch_send_deadline: 10s, min_backoff: 1s, max_backoff: 1s }").await;
        writer.enqueue(&(0..4).map(sample).collect::<Vec<_>>(), 0);
        writer.enqueue(&(4..8).map(sample).collect::<Vec<_>>(), 0);
        assert_eq!(count(&metrics.dropped), 3, "5 fit, 3 are dropped");
        let pending = metrics.pending.get_or_create(&vec![("remote_name".to_string(), "test".to_string())]).get();
        assert!(pending <= 5, "{pending}");
        token.cancel();
    }
}

//! `PromClient`: `query_range` over HTTP with auth, TLS, timeouts, retries, range splitting and
//! a cap on the size of an answer.

use std::time::Duration;

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use rand::Rng;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION};
use serde::Deserialize;

use super::{validate, Error, Labels, Rejection, Rejections, Series, Source};
use crate::config::SourceConfig;

/// Points per series per request: Prometheus refuses more than 11,000.
pub const MAX_POINTS_PER_QUERY: i64 = 10_000;

/// Most samples (series × points) a request asks for, the series counted in the answer for the
/// range's newest point: a fifth of Prometheus's default `--query.max-samples` (50M), which
/// counts the samples a query loads, more than those it answers with when the expression reads
/// ranges.
pub const MAX_SAMPLES_PER_QUERY: i64 = 10_000_000;

/// The largest answer body one request may have (512 MiB); a larger one fails the query with
/// [`Error::TooLarge`] as soon as it is announced (`Content-Length`) or, streamed, once that many
/// bytes have arrived, so memory stays bounded whatever the server sends.
///
/// A request asks at most [`MAX_POINTS_PER_QUERY`] points per series, and Prometheus writes a
/// sample in about 23 bytes (1,000 series of a week at 1m, 10,080 points each, measured 230 MB):
/// the cap holds about 2,300 series of 10,000 points per request, or 1,300 at 40 bytes a
/// sample (long values, many labels). An expression that returns more series than that must be
/// narrowed or sharded. Holding a maximal answer costs about the cap again while it is decoded.
pub const MAX_ANSWER_BYTES: usize = 512 << 20;

/// How much of an error answer's body is read for its message.
const MAX_ERROR_BYTES: usize = 64 << 10;

const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// The HTTP client of `config`'s settings: headers, credentials (read now), TLS and timeout. The
/// source's client, and each remote-write endpoint's.
///
/// # Errors
/// `Error::Config` naming the setting or file that is wrong.
pub(crate) fn http_client(config: &SourceConfig) -> Result<reqwest::Client, Error> {
    let cfg = |msg: String| Error::Config(msg);
    let mut headers = HeaderMap::new();
    for (name, value) in &config.headers {
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| cfg(format!("header {name:?}: {e}")))?;
        let value = HeaderValue::from_str(value).map_err(|e| cfg(format!("header {name} value: {e}")))?;
        headers.insert(name, value);
    }
    let auth = match (&config.basic_auth, &config.bearer_token) {
        (Some(_), Some(_)) => return Err(cfg("set basic_auth or bearer_token, not both".into())),
        (Some(basic), None) => {
            use base64::Engine;
            let password = basic.password.resolve().map_err(|e| cfg(format!("basic_auth password: {e}")))?;
            let token = base64::engine::general_purpose::STANDARD.encode(format!("{}:{password}", basic.username));
            Some(format!("Basic {token}"))
        }
        (None, Some(bearer)) => Some(format!("Bearer {}", bearer.resolve().map_err(|e| cfg(format!("bearer_token: {e}")))?)),
        (None, None) => None,
    };
    if let Some(auth) = auth {
        let mut value = HeaderValue::from_str(&auth).map_err(|e| cfg(format!("credentials: {e}")))?;
        value.set_sensitive(true);
        headers.insert(AUTHORIZATION, value);
    }
    let mut builder = reqwest::Client::builder()
        .default_headers(headers)
        .timeout(config.timeout.get())
        .user_agent(concat!("pulsewatch/", env!("CARGO_PKG_VERSION")));
    if let Some(tls) = &config.tls_config {
        let read = |path: &std::path::Path| {
            crate::files::read(path, crate::files::MAX_PEM_BYTES).map_err(|e| cfg(format!("reading {}: {e}", path.display())))
        };
        if let Some(ca) = &tls.ca_file {
            for cert in reqwest::Certificate::from_pem_bundle(&read(ca)?).map_err(|e| cfg(format!("ca_file {}: {e}", ca.display())))? {
                builder = builder.add_root_certificate(cert);
            }
        }
        match (&tls.cert_file, &tls.key_file) {
            (Some(cert), Some(key)) => {
                let mut pem = read(cert)?;
                pem.push(b'\n');
                pem.extend(read(key)?);
                let identity = reqwest::Identity::from_pem(&pem).map_err(|e| cfg(format!("client certificate {}: {e}", cert.display())))?;
                builder = builder.identity(identity);
            }
            (None, None) => {}
            _ => return Err(cfg("tls_config needs both cert_file and key_file".into())),
        }
        builder = builder.danger_accept_invalid_certs(tls.insecure_skip_verify);
    }
    builder.build().map_err(|e| cfg(format!("building HTTP client: {e}")))
}

/// A client for one Prometheus-compatible server.
#[derive(Clone, Debug)]
pub struct PromClient {
    http: reqwest::Client,
    base: reqwest::Url,
    timeout: Duration,
    retries: u32,
    max_answer_bytes: usize,
    max_samples: i64,
}

impl PromClient {
    /// Builds a client; secrets and certificates are read now.
    ///
    /// # Errors
    /// `Error::Config` naming the setting or file that is wrong.
    pub fn new(config: &SourceConfig) -> Result<Self, Error> {
        let mut base = reqwest::Url::parse(&config.url)
            .map_err(|e| Error::Config(format!("url {:?}: {e}", crate::config::redact_url(&config.url))))?;
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        let http = http_client(config)?;
        Ok(Self {
            http,
            base,
            timeout: config.timeout.get(),
            retries: config.retries,
            max_answer_bytes: MAX_ANSWER_BYTES,
            max_samples: MAX_SAMPLES_PER_QUERY,
        })
    }

    /// Sets the largest answer body accepted, in bytes ([`MAX_ANSWER_BYTES`] by default).
    pub fn with_max_answer_bytes(mut self, limit: usize) -> Self {
        self.max_answer_bytes = limit;
        self
    }

    /// Sets the most samples a request asks for ([`MAX_SAMPLES_PER_QUERY`] by default).
    pub fn with_max_samples_per_query(mut self, limit: i64) -> Self {
        self.max_samples = limit.max(1);
        self
    }

    /// `query_range`, split into requests of at most [`MAX_POINTS_PER_QUERY`] points per series
    /// and at most [`MAX_SAMPLES_PER_QUERY`] samples (the newest point is asked for first, to
    /// count the series), with the pieces' series merged by label set and [`validate`]d: only
    /// finite samples on the grid of `[start, end]`, sorted, one per timestamp. What was dropped is logged at debug
    /// level (the engine counts it; see [`Source::query_range_raw`]).
    ///
    /// # Errors
    /// The first piece that still fails after the retries.
    pub async fn query_range(&self, expr: &str, start: i64, end: i64, step: i64) -> Result<Vec<Series>, Error> {
        let (series, mut rejected) = self.query_range_raw(expr, start, end, step).await?;
        let (series, checked) = validate(series, start, end, step);
        rejected.merge(checked);
        if rejected.total() > 0 {
            tracing::debug!(expr, %rejected, "samples of the answer dropped");
        }
        Ok(series)
    }

    /// The pieces' answers merged by label set, as the server sent them but for the samples
    /// with fractional timestamps, which are counted as off the grid.
    async fn query_range_raw(&self, expr: &str, start: i64, end: i64, step: i64) -> Result<(Vec<Series>, Rejections), Error> {
        let mut merged: std::collections::BTreeMap<Labels, Vec<(i64, f64)>> = Default::default();
        let mut rejected = Rejections::default();
        // at least one point per request: a step of 0 would never advance
        let step = step.max(1);
        // Points per series of the next piece: at most MAX_POINTS_PER_QUERY and at most
        // `max_samples` in all for the series the range holds; halved when the server refuses
        // a piece as too many samples.
        let mut points = MAX_POINTS_PER_QUERY;
        let newest = start.saturating_add((end.saturating_sub(start) / step).saturating_mul(step));
        let mut last_piece = None;
        let mut until = end;
        if newest > start {
            // The newest point alone first: how many series it holds bounds every other piece.
            let (series, fractional) = self.query_range_once(expr, newest, newest, step).await?;
            rejected.add(Rejection::OffGrid, fractional);
            points = points.min((self.max_samples / series.len().max(1) as i64).max(1));
            last_piece = Some(series);
            until = newest - step;
        }
        let mut from = start;
        while from <= until {
            let to = from.saturating_add((points - 1).saturating_mul(step)).min(until);
            let (series, fractional) = match self.query_range_once(expr, from, to, step).await {
                Err(err) if err.is_too_many_samples() && to > from => {
                    points = ((to - from) / step + 2) / 2;
                    tracing::debug!(expr, points, "the server refused a piece as too many samples; asking for less");
                    continue;
                }
                answer => answer?,
            };
            rejected.add(Rejection::OffGrid, fractional);
            points = points.min((self.max_samples / series.len().max(1) as i64).max(1));
            for series in series {
                merged.entry(series.labels).or_default().extend(series.samples);
            }
            from = match to.checked_add(step) {
                Some(next) => next,
                None => break,
            };
        }
        for series in last_piece.into_iter().flatten() {
            merged.entry(series.labels).or_default().extend(series.samples);
        }
        Ok((merged.into_iter().map(|(labels, samples)| Series { labels, samples }).collect(), rejected))
    }

    async fn query_range_once(&self, expr: &str, start: i64, end: i64, step: i64) -> Result<(Vec<Series>, u64), Error> {
        let mut attempt = 0;
        loop {
            match self.request(expr, start, end, step).await {
                Err(err) if err.is_retryable() && attempt < self.retries => {
                    let delay = backoff_delay(attempt, &mut rand::rng());
                    tracing::debug!(error = %err, attempt, ?delay, "query failed, retrying");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    async fn request(&self, expr: &str, start: i64, end: i64, step: i64) -> Result<(Vec<Series>, u64), Error> {
        let url = self.base.join("api/v1/query_range").map_err(|e| Error::Config(e.to_string()))?;
        let form = [("query", expr.to_string()), ("start", start.to_string()), ("end", end.to_string()), ("step", step.to_string())];
        let response = self.http.post(url).form(&form).send().await.map_err(|e| self.transport(e))?;
        let status = response.status();
        // Prometheus answers 400/422/503 with a JSON error body; keep its message.
        if !status.is_success() {
            let body = self.read_body(response, MAX_ERROR_BYTES, true).await?;
            let text = String::from_utf8_lossy(&body);
            let detail =
                serde_json::from_slice::<Answer>(&body).ok().and_then(|a| a.error).unwrap_or_else(|| text.chars().take(200).collect());
            return Err(Error::Status { code: status.as_u16(), body: detail });
        }
        let body = self.read_body(response, self.max_answer_bytes, false).await?;
        decode(&body)
    }

    /// Reads the body as it streams in, up to `limit` bytes: beyond that it fails with
    /// [`Error::TooLarge`], or with `truncate` returns the first `limit` bytes. The client's
    /// timeout covers the body too, so a server that trickles bytes fails with a timeout.
    async fn read_body(&self, response: reqwest::Response, limit: usize, truncate: bool) -> Result<Vec<u8>, Error> {
        let announced = response.content_length().map(|n| usize::try_from(n).unwrap_or(usize::MAX));
        if !truncate && announced.is_some_and(|n| n > limit) {
            return Err(Error::TooLarge { limit });
        }
        // One allocation of the announced size rather than doubling up to it.
        let mut body = Vec::with_capacity(announced.unwrap_or(0).min(limit));
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| self.transport(e))?;
            if body.len() + chunk.len() > limit {
                if truncate {
                    body.extend_from_slice(&chunk[..limit - body.len()]);
                    return Ok(body);
                }
                return Err(Error::TooLarge { limit });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    fn transport(&self, err: reqwest::Error) -> Error {
        if err.is_timeout() {
            Error::Timeout(self.timeout)
        } else {
            // The source chain says why (refused, reset, DNS); the top level only "error sending
            // request". The URL is left out: it may hold credentials, and the rule names the source.
            let err = err.without_url();
            let mut msg = err.to_string();
            let mut source = std::error::Error::source(&err);
            while let Some(s) = source {
                msg = format!("{msg}: {s}");
                source = s.source();
            }
            Error::Transport(msg)
        }
    }
}

impl Source for PromClient {
    fn query_range<'a>(&'a self, expr: &'a str, start: i64, end: i64, step: i64) -> BoxFuture<'a, Result<Vec<Series>, Error>> {
        PromClient::query_range(self, expr, start, end, step).boxed()
    }

    fn query_range_raw<'a>(
        &'a self,
        expr: &'a str,
        start: i64,
        end: i64,
        step: i64,
    ) -> BoxFuture<'a, Result<(Vec<Series>, Rejections), Error>> {
        PromClient::query_range_raw(self, expr, start, end, step).boxed()
    }
}

/// Delay before retry number `attempt` (0-based): exponential from 200 ms, capped at 5 s, with
/// jitter drawn from the upper half so that retries of many rules spread out.
pub fn backoff_delay(attempt: u32, rng: &mut impl Rng) -> Duration {
    let ceiling = BACKOFF_MIN.saturating_mul(2u32.saturating_pow(attempt)).min(BACKOFF_MAX);
    let floor = (ceiling / 2).max(BACKOFF_MIN);
    if floor >= ceiling {
        return ceiling;
    }
    rng.random_range(floor..=ceiling)
}

#[derive(Deserialize)]
struct Answer {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Data {
    result_type: String,
    result: Vec<MatrixSeries>,
}

#[derive(Deserialize)]
struct MatrixSeries {
    metric: Labels,
    values: Samples,
}

/// A series' `values`, converted while they are parsed, so a large answer is not first held as
/// one `(f64, String)` per sample. Values are borrowed from the answer (numbers never need
/// unescaping); one that is not a number becomes NaN, for [`validate`] to count. A fractional
/// timestamp cannot be on a whole-second grid, and an `i64` cannot hold it: it is counted here.
struct Samples {
    samples: Vec<(i64, f64)>,
    fractional: u64,
}

impl<'de> Deserialize<'de> for Samples {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Samples;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a list of [timestamp, \"value\"] pairs")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Samples, A::Error> {
                let mut out = Samples { samples: Vec::with_capacity(seq.size_hint().unwrap_or(0)), fractional: 0 };
                while let Some((ts, value)) = seq.next_element::<(f64, &'de str)>()? {
                    if ts.fract() != 0.0 {
                        out.fractional += 1;
                        continue;
                    }
                    // Saturates: a timestamp beyond i64 is out of any range asked.
                    out.samples.push((ts as i64, value.parse().unwrap_or(f64::NAN)));
                }
                Ok(out)
            }
        }
        deserializer.deserialize_seq(Visitor)
    }
}

/// Decodes a `query_range` answer: its series with every sample that has a whole-second
/// timestamp, NaN and infinities included, and how many had a fractional one.
fn decode(body: &[u8]) -> Result<(Vec<Series>, u64), Error> {
    let answer: Answer = serde_json::from_slice(body).map_err(|e| Error::Decode(e.to_string()))?;
    if answer.status != "success" {
        return Err(Error::Decode(format!("status {:?}: {}", answer.status, answer.error.unwrap_or_default())));
    }
    let data = answer.data.ok_or_else(|| Error::Decode("no data in a success answer".into()))?;
    if data.result_type != "matrix" {
        return Err(Error::Decode(format!("expected a matrix, got {:?}", data.result_type)));
    }
    let fractional = data.result.iter().map(|s| s.values.fractional).sum();
    Ok((data.result.into_iter().map(|s| Series { labels: s.metric, samples: s.values.samples }).collect(), fractional))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn decode_keeps_labels_and_marks_what_validation_drops() {
        let body = br#"{"status":"success","data":{"resultType":"matrix","result":[
            {"metric":{"__name__":"up","job":"a"},"values":[[1,"1"],[2,"NaN"],[3,"+Inf"],[4,"-Inf"],[5,"2.5"],[6,"x"],[6.5,"1"]]}]}}"#;
        let (series, fractional) = decode(body).unwrap();
        assert_eq!(series.len(), 1);
        assert_eq!(series[0].labels["job"], "a");
        let samples: Vec<(i64, String)> = series[0].samples.iter().map(|(t, v)| (*t, v.to_string())).collect();
        let expected = [(1, "1"), (2, "NaN"), (3, "inf"), (4, "-inf"), (5, "2.5"), (6, "NaN")];
        assert_eq!(samples, expected.map(|(t, v)| (t, v.to_string())));
        assert_eq!(fractional, 1);
        let (series, rejected) = validate(series, 1, 6, 1);
        assert_eq!(series[0].samples, vec![(1, 1.0), (5, 2.5)]);
        assert_eq!(rejected.get(Rejection::NotFinite), 4);
    }

    #[test]
    fn decode_rejects_garbage() {
        for body in
            [&b"<html>"[..], br#"{"status":"error","error":"boom"}"#, br#"{"status":"success","data":{"resultType":"vector","result":[]}}"#]
        {
            assert!(matches!(decode(body), Err(Error::Decode(_))), "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn retry_only_when_it_can_help() {
        assert!(Error::Status { code: 503, body: String::new() }.is_retryable());
        assert!(!Error::Status { code: 400, body: String::new() }.is_retryable());
        assert!(!Error::Status { code: 422, body: String::new() }.is_retryable());
        assert!(Error::Status { code: 429, body: String::new() }.is_retryable());
        assert!(Error::Transport("refused".into()).is_retryable());
        assert!(!Error::Decode("x".into()).is_retryable());
    }

    use axum::extract::{Form, State};
    use axum::http::{HeaderMap, StatusCode};
    use std::collections::{HashMap, VecDeque};
    use std::sync::{Arc, Mutex};

    /// Headers and form of one request the stub received.
    type Seen = (HeaderMap, HashMap<String, String>);

    /// A stub Prometheus: answers from a script of statuses (then 200), records every request.
    #[derive(Clone, Default)]
    struct Stub {
        script: Arc<Mutex<VecDeque<(u16, &'static str)>>>,
        seen: Arc<Mutex<Vec<Seen>>>,
        delay: Arc<Mutex<std::time::Duration>>,
    }

    async fn stub_handler(State(stub): State<Stub>, headers: HeaderMap, Form(form): Form<HashMap<String, String>>) -> (StatusCode, String) {
        stub.seen.lock().unwrap().push((headers, form.clone()));
        let delay = *stub.delay.lock().unwrap();
        tokio::time::sleep(delay).await;
        if let Some((code, body)) = stub.script.lock().unwrap().pop_front() {
            return (StatusCode::from_u16(code).unwrap(), body.to_string());
        }
        let (start, end, step): (i64, i64, i64) =
            (form["start"].parse().unwrap(), form["end"].parse().unwrap(), form["step"].parse().unwrap());
        let values: Vec<String> = (start..=end).step_by(step as usize).map(|t| format!("[{t},\"{}\"]", t % 7)).collect();
        (
            StatusCode::OK,
            format!(
                r#"{{"status":"success","data":{{"resultType":"matrix","result":[{{"metric":{{"job":"x"}},"values":[{}]}}]}}}}"#,
                values.join(",")
            ),
        )
    }

    async fn serve_stub(stub: Stub) -> String {
        let app = axum::Router::new().route("/prefix/api/v1/query_range", axum::routing::post(stub_handler)).with_state(stub);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        format!("http://{addr}/prefix")
    }

    fn config(url: &str, extra: &str) -> SourceConfig {
        serde_saphyr::from_str(&format!("url: '{url}'\ntimeout: 2s\nretries: 2\n{extra}")).unwrap()
    }

    #[tokio::test]
    async fn sends_auth_and_headers_and_splits_long_ranges() {
        let stub = Stub::default();
        let url = serve_stub(stub.clone()).await;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), "t0ken\n").unwrap();
        let extra = format!("bearer_token: {{ file: '{}' }}\nheaders: {{ X-Scope-OrgID: tenant-1 }}", dir.path().join("token").display());
        let client = PromClient::new(&config(&url, &extra)).unwrap();
        let points = 2 * MAX_POINTS_PER_QUERY + 5;
        let series = client.query_range("up", 0, (points - 1) * 60, 60).await.unwrap();
        assert_eq!(series.len(), 1);
        assert_eq!(series[0].samples.len() as i64, points, "pieces merged without gaps or duplicates");
        let seen = stub.seen.lock().unwrap();
        assert_eq!(seen.len(), 4, "the newest point, then three pieces");
        for (headers, form) in seen.iter() {
            assert_eq!(headers["authorization"], "Bearer t0ken");
            assert_eq!(headers["x-scope-orgid"], "tenant-1");
            let n = (form["end"].parse::<i64>().unwrap() - form["start"].parse::<i64>().unwrap()) / 60 + 1;
            assert!(n <= MAX_POINTS_PER_QUERY, "{n} points in one request");
        }
    }

    /// A server that holds `series` series and refuses, as Prometheus does with 422, a query
    /// that would load more than `limit` samples; it records the points of every request.
    async fn serve_limited(series: usize, limit: i64) -> (String, Arc<Mutex<Vec<(i64, bool)>>>) {
        let asked = Arc::new(Mutex::new(Vec::new()));
        let seen = asked.clone();
        let handler = move |Form(form): Form<HashMap<String, String>>| {
            let seen = seen.clone();
            async move {
                let (start, end, step): (i64, i64, i64) =
                    (form["start"].parse().unwrap(), form["end"].parse().unwrap(), form["step"].parse().unwrap());
                let points = (end - start) / step + 1;
                let refused = points * series as i64 > limit;
                seen.lock().unwrap().push((points, refused));
                if refused {
                    let body = r#"{"status":"error","errorType":"execution","error":"query processing would load too many samples into memory in query execution"}"#;
                    return (StatusCode::UNPROCESSABLE_ENTITY, body.to_string());
                }
                let values: Vec<String> = (start..=end).step_by(step as usize).map(|t| format!("[{t},\"1\"]")).collect();
                let result: Vec<String> =
                    (0..series).map(|i| format!(r#"{{"metric":{{"i":"{i}"}},"values":[{}]}}"#, values.join(","))).collect();
                (StatusCode::OK, format!(r#"{{"status":"success","data":{{"resultType":"matrix","result":[{}]}}}}"#, result.join(",")))
            }
        };
        let app = axum::Router::new().route("/prefix/api/v1/query_range", axum::routing::post(handler));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (format!("http://{addr}/prefix"), asked)
    }

    #[tokio::test]
    async fn a_range_refused_as_too_many_samples_is_asked_for_in_halves() {
        // 3 series, at most 9,000 samples per query: after the newest point, 10,000 points are
        // refused, then 5,000, then 2,500 pass, and every later piece asks for at most 2,500.
        let (url, asked) = serve_limited(3, 9_000).await;
        let client = PromClient::new(&config(&url, "")).unwrap();
        let series = client.query_range("up", 0, 11_999 * 60, 60).await.unwrap();
        assert_eq!(series.len(), 3);
        assert!(series.iter().all(|s| s.samples.len() == 12_000), "every point, once");
        let asked = asked.lock().unwrap().clone();
        assert_eq!(asked[..4], [(1, false), (10_000, true), (5_000, true), (2_500, false)]);
        assert!(asked[4..].iter().all(|&(points, refused)| points <= 2_500 && !refused), "{asked:?}");
        // A refusal of a single point is the query's error.
        let (url, _) = serve_limited(3, 2).await;
        let err = PromClient::new(&config(&url, "")).unwrap().query_range("up", 0, 0, 60).await.unwrap_err();
        assert!(err.is_too_many_samples(), "{err}");
    }

    #[tokio::test]
    async fn no_piece_asks_for_more_than_the_sample_budget() {
        // The newest point says there are 40 series: with a budget of 1,000, pieces of 25 points.
        let (url, asked) = serve_limited(40, i64::MAX).await;
        let client = PromClient::new(&config(&url, "")).unwrap().with_max_samples_per_query(1_000);
        let series = client.query_range("up", 0, 200 * 60, 60).await.unwrap();
        assert_eq!((series.len(), series[0].samples.len()), (40, 201));
        assert!(series[0].samples.windows(2).all(|w| w[1].0 == w[0].0 + 60), "in order, no gaps");
        let asked: Vec<i64> = asked.lock().unwrap().iter().map(|&(points, _)| points).collect();
        assert_eq!(asked, [1, 25, 25, 25, 25, 25, 25, 25, 25]);
    }

    #[tokio::test]
    async fn basic_auth_from_env() {
        let stub = Stub::default();
        let url = serve_stub(stub.clone()).await;
        std::env::set_var("PULSEWATCH_TEST_PW", "pw");
        let client = PromClient::new(&config(&url, "basic_auth: { username: u, password: { env: PULSEWATCH_TEST_PW } }")).unwrap();
        client.query_range("up", 0, 60, 60).await.unwrap();
        assert_eq!(stub.seen.lock().unwrap()[0].0["authorization"], "Basic dTpwdw==");
    }

    #[tokio::test]
    async fn retries_5xx_but_not_4xx_and_rejects_garbage() {
        let stub = Stub::default();
        let url = serve_stub(stub.clone()).await;
        let client = PromClient::new(&config(&url, "")).unwrap();
        stub.script.lock().unwrap().extend([(503, "overloaded"), (502, "bad gateway")]);
        client.query_range("up", 60, 60, 60).await.unwrap();
        assert_eq!(stub.seen.lock().unwrap().len(), 3, "two retries, then success");

        stub.script.lock().unwrap().push_back((400, r#"{"status":"error","errorType":"bad_data","error":"parse error"}"#));
        let err = client.query_range("up", 60, 60, 60).await.unwrap_err();
        assert!(matches!(&err, Error::Status { code: 400, body } if body == "parse error"), "{err}");
        assert_eq!(stub.seen.lock().unwrap().len(), 4, "no retry on 4xx");

        stub.script.lock().unwrap().extend([(200, "<html>not prometheus</html>")]);
        assert!(matches!(client.query_range("up", 60, 60, 60).await, Err(Error::Decode(_))));

        let mut refused = config("http://127.0.0.1:1", "");
        refused.retries = 0;
        let down = PromClient::new(&refused).unwrap();
        assert!(matches!(down.query_range("up", 0, 60, 60).await, Err(Error::Transport(_))));
    }

    #[tokio::test]
    async fn slow_answers_time_out() {
        let stub = Stub::default();
        let url = serve_stub(stub.clone()).await;
        // An answer that would take a minute: without the 2 s timeout the two attempts would take
        // two minutes, far from the 4.2 s they take, so the bound below holds on a loaded machine.
        *stub.delay.lock().unwrap() = std::time::Duration::from_secs(60);
        let mut cfg = config(&url, "");
        cfg.retries = 1;
        let client = PromClient::new(&cfg).unwrap();
        let began = std::time::Instant::now();
        let err = client.query_range("up", 0, 60, 60).await.unwrap_err();
        let took = began.elapsed();
        assert!(matches!(err, Error::Timeout(d) if d == std::time::Duration::from_secs(2)), "{err}");
        assert_eq!(stub.seen.lock().unwrap().len(), 2, "a timeout is retried");
        assert!(took >= std::time::Duration::from_secs(4), "each attempt waited for its timeout: {took:?}");
        assert!(took < std::time::Duration::from_secs(30), "each attempt bounded by the 2s timeout: {took:?}");
    }

    /// A raw HTTP/1.1 stub on loopback: reads each request's head and body, then writes what
    /// `answer` returns for the connection's n-th request and closes the connection.
    async fn serve_raw(answer: impl Fn(usize) -> Vec<Vec<u8>> + Send + Sync + 'static) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let answer = Arc::new(answer);
        tokio::spawn(async move {
            for n in 0.. {
                let Ok((mut conn, _)) = listener.accept().await else { return };
                let answer = answer.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    // the request: its head, then as many body bytes as it announces
                    loop {
                        let Ok(read) = conn.read(&mut chunk).await else { return };
                        if read == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..read]);
                        let Some(head) = buf.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
                        let text = String::from_utf8_lossy(&buf[..head]).to_ascii_lowercase();
                        let length: usize =
                            text.lines().find_map(|l| l.strip_prefix("content-length:")).map_or(0, |v| v.trim().parse().unwrap());
                        if buf.len() >= head + 4 + length {
                            break;
                        }
                    }
                    for part in answer(n) {
                        if conn.write_all(&part).await.is_err() {
                            return;
                        }
                    }
                    let _ = conn.shutdown().await;
                });
            }
        });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn an_answer_announcing_more_than_the_cap_fails_before_it_is_read() {
        // 1 GiB announced, 1 MiB sent: refused on the header, not after the bytes arrive
        let url = serve_raw(|_| {
            vec![b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1073741824\r\n\r\n".to_vec(), vec![b' '; 1 << 20]]
        })
        .await;
        let mut cfg = config(&url, "");
        cfg.retries = 0;
        let err = PromClient::new(&cfg).unwrap().query_range("up", 0, 60, 60).await.unwrap_err();
        assert!(err.to_string().contains("larger than"), "{err}");
        assert!(!err.is_retryable(), "the same query gets the same answer: {err:?}");
    }

    /// A chunked answer: `chunks` pieces of `size` bytes, no `Content-Length`.
    fn chunked(chunks: usize, size: usize) -> Vec<Vec<u8>> {
        let mut parts = vec![b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n".to_vec()];
        let chunk: Vec<u8> = [format!("{size:x}\r\n").into_bytes(), vec![b' '; size], b"\r\n".to_vec()].concat();
        parts.extend(std::iter::repeat_n(chunk, chunks));
        parts.push(b"0\r\n\r\n".to_vec());
        parts
    }

    #[tokio::test]
    async fn a_streamed_answer_beyond_the_cap_fails_once_the_cap_is_read() {
        // 64 MiB streamed against a 1 MiB cap; then an answer that fits
        let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = sent.clone();
        let url = serve_raw(move |n| {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if n == 0 {
                chunked(1024, 64 << 10)
            } else {
                let body = r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"job":"a"},"values":[[60,"1"]]}]}}"#;
                vec![format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}", body.len()).into_bytes()]
            }
        })
        .await;
        let mut cfg = config(&url, "");
        cfg.retries = 0;
        let client = PromClient::new(&cfg).unwrap().with_max_answer_bytes(1 << 20);
        let err = client.query_range("up", 60, 60, 60).await.unwrap_err();
        assert!(matches!(err, Error::TooLarge { limit } if limit == 1 << 20), "{err:?}");
        assert_eq!(err.to_string(), "the answer is larger than 1048576 bytes: split the expression (narrower selectors, or shards)");
        let series = client.query_range("up", 60, 60, 60).await.unwrap();
        assert_eq!(series[0].samples, vec![(60, 1.0)]);
        assert_eq!(sent.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn an_error_answer_is_read_only_as_far_as_its_message() {
        // a 503 whose HTML body goes on for 8 MiB: its start is the message, and it is retried
        let url = serve_raw(|n| {
            let mut parts = chunked(128, 64 << 10);
            parts[0] = if n == 0 {
                b"HTTP/1.1 503 Service Unavailable\r\ntransfer-encoding: chunked\r\n\r\n".to_vec()
            } else {
                b"HTTP/1.1 429 Too Many Requests\r\ntransfer-encoding: chunked\r\n\r\n".to_vec()
            };
            parts.insert(1, b"7\r\noverloa\r\n".to_vec());
            parts
        })
        .await;
        let mut cfg = config(&url, "");
        cfg.retries = 1;
        let err = PromClient::new(&cfg).unwrap().query_range("up", 0, 60, 60).await.unwrap_err();
        assert!(matches!(&err, Error::Status { code: 429, body } if body.starts_with("overloa") && body.len() <= 200), "{err:?}");
    }

    #[test]
    fn backoff_doubles_from_200ms_to_5s_with_jitter() {
        use rand::SeedableRng;
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let ms = std::time::Duration::from_millis;
        // attempt: the range its delay is drawn from (the upper half below the cap)
        for (attempt, low, high) in
            [(0, 200, 200), (1, 200, 400), (2, 400, 800), (3, 800, 1600), (4, 1600, 3200), (5, 2500, 5000), (30, 2500, 5000)]
        {
            let delays: Vec<Duration> = (0..500).map(|_| backoff_delay(attempt, &mut rng)).collect();
            let (min, max) = (*delays.iter().min().unwrap(), *delays.iter().max().unwrap());
            assert!(min >= ms(low) && max <= ms(high), "attempt {attempt}: {min:?}..{max:?} outside {low}..{high} ms");
            // jitter covers the range instead of repeating one value
            assert!(max - min >= ms(high - low) * 9 / 10, "attempt {attempt}: {min:?}..{max:?} does not spread over {low}..{high} ms");
            let distinct: std::collections::BTreeSet<Duration> = delays.iter().copied().collect();
            assert!(low == high || distinct.len() > 100, "attempt {attempt}: {} distinct delays", distinct.len());
        }
    }

    /// The asked range of the fuzzed answers.
    const FUZZ_RANGE: (i64, i64, i64) = (1_700_000_000, 1_700_000_000 + 50 * 60, 60);

    /// A timestamp as an answer may write it: on the grid, near it, fractional, far off, huge.
    fn fuzz_ts() -> impl Strategy<Value = String> {
        let (start, end, step) = FUZZ_RANGE;
        prop_oneof![
            4 => (0..=(end - start) / step).prop_map(move |k| (start + k * step).to_string()),
            2 => (start - 600..end + 600).prop_map(|t| t.to_string()),
            1 => (0..=(end - start) / step).prop_map(move |k| format!("{}.5", start + k * step)),
            1 => proptest::num::f64::NORMAL.prop_map(|t| format!("{t:?}")),
            1 => prop_oneof![
                Just("1000000000000".to_string()),
                Just((end + 1_000_000_000_000).to_string()),
                Just("123456789012345678901234567890".into()),
                Just("-1e300".into()),
                Just("0".into())
            ],
        ]
    }

    /// A value as an answer may write it, and whether the decoder can take it: a string that
    /// needs unescaping, or a number that is not quoted, fails the answer.
    fn fuzz_value() -> impl Strategy<Value = (String, bool)> {
        let quoted = |v: String| (format!("\"{v}\""), true);
        prop_oneof![
            4 => (-1e6f64..1e6).prop_map(move |v| quoted(v.to_string())),
            1 => proptest::num::f64::ANY.prop_map(move |v| quoted(format!("{v:?}"))),
            1 => prop_oneof![
                Just(quoted("NaN".into())),
                Just(quoted("+Inf".into())),
                Just(quoted("-Inf".into())),
                Just(quoted("1e309".into())),
                Just(quoted("1.7976931348623157e308".into())),
                Just(quoted("x".into())),
                Just(("\"\\u0031\"".to_string(), false)),
                Just(("1".to_string(), false))
            ],
        ]
    }

    /// A `query_range` answer: up to 4 series (label sets may repeat) of up to 40 samples, how
    /// many samples it has, and whether the decoder can take all of them.
    fn fuzz_answer() -> impl Strategy<Value = (String, usize, bool)> {
        let series = ((0..3u8, 0..2u8), proptest::collection::vec((fuzz_ts(), fuzz_value()), 0..40));
        proptest::collection::vec(series, 0..4).prop_map(|series| {
            let n = series.iter().map(|(_, v)| v.len()).sum();
            let decodable = series.iter().all(|(_, v)| v.iter().all(|(_, (_, ok))| *ok));
            let result: Vec<String> = series
                .into_iter()
                .map(|((name, job), values)| {
                    let values: Vec<String> = values.into_iter().map(|(t, (v, _))| format!("[{t},{v}]")).collect();
                    format!(r#"{{"metric":{{"__name__":"m{name}","job":"j{job}"}},"values":[{}]}}"#, values.join(","))
                })
                .collect();
            (format!(r#"{{"status":"success","data":{{"resultType":"matrix","result":[{}]}}}}"#, result.join(",")), n, decodable)
        })
    }

    proptest! {
        // Bounded: 2048 answers of at most 160 samples, well under a second. No regression file
        // is written into the tree; a failure prints its minimal input.
        #![proptest_config(ProptestConfig { cases: 2048, failure_persistence: None, ..ProptestConfig::default() })]

        /// Whatever the answer, decoding does not panic, and what validation lets through is
        /// inside the range, on its grid, finite and strictly increasing; every sample of an
        /// answer that decodes is either kept or counted.
        #[test]
        fn decoded_and_validated_answers_hold_only_grid_samples(
            (body, n, decodable) in fuzz_answer(),
            cut in proptest::option::weighted(0.2, any::<proptest::sample::Index>()),
            flip in proptest::option::weighted(0.1, (any::<proptest::sample::Index>(), any::<u8>())),
        ) {
            let (start, end, step) = FUZZ_RANGE;
            let mut body = body.into_bytes();
            if let Some(cut) = cut {
                body.truncate(cut.index(body.len()));
            }
            // a cut can leave nothing to flip
            if let Some((at, byte)) = flip.filter(|_| !body.is_empty()) {
                let at = at.index(body.len());
                body[at] = byte;
            }
            let mangled = cut.is_some() || flip.is_some();
            let Ok((series, fractional)) = decode(&body) else {
                prop_assert!(mangled || !decodable, "a well-formed answer failed: {}", String::from_utf8_lossy(&body));
                return Ok(());
            };
            let decoded: usize = series.iter().map(|s| s.samples.len()).sum();
            let (series, rejected) = validate(series, start, end, step);
            let kept: usize = series.iter().map(|s| s.samples.len()).sum();
            prop_assert_eq!(kept as u64 + rejected.total(), decoded as u64);
            if !mangled {
                prop_assert_eq!(decoded as u64 + fractional, n as u64);
            }
            for s in &series {
                prop_assert!(!s.samples.is_empty());
                for w in s.samples.windows(2) {
                    prop_assert!(w[0].0 < w[1].0, "not strictly increasing: {:?}", s.samples);
                }
                for &(ts, v) in &s.samples {
                    prop_assert!((start..=end).contains(&ts) && (ts - start) % step == 0, "{ts} off the grid");
                    prop_assert!(v.is_finite(), "{v} at {ts}");
                }
            }
        }
    }

    proptest! {
        #[test]
        fn backoff_within_bounds(attempt in 0u32..40, seed in any::<u64>()) {
            use rand::SeedableRng;
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let d = backoff_delay(attempt, &mut rng);
            prop_assert!(d >= BACKOFF_MIN && d <= BACKOFF_MAX);
        }
    }
}

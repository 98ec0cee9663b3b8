//! `PromClient`: `query_range` over HTTP with auth, TLS, timeouts, retries and range splitting.

use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use rand::Rng;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION};
use serde::Deserialize;

use super::{Error, Labels, Series, Source};
use crate::config::SourceConfig;

/// Points per series per request: Prometheus refuses more than 11,000.
pub const MAX_POINTS_PER_QUERY: i64 = 10_000;

const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// A client for one Prometheus-compatible server.
#[derive(Clone, Debug)]
pub struct PromClient {
    http: reqwest::Client,
    base: reqwest::Url,
    timeout: Duration,
    retries: u32,
}

impl PromClient {
    /// Builds a client; secrets and certificates are read now.
    ///
    /// # Errors
    /// `Error::Config` naming the setting or file that is wrong.
    pub fn new(config: &SourceConfig) -> Result<Self, Error> {
        let cfg = |msg: String| Error::Config(msg);
        let mut base = reqwest::Url::parse(&config.url).map_err(|e| cfg(format!("url {:?}: {e}", config.url)))?;
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
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
            let read = |path: &std::path::Path| std::fs::read(path).map_err(|e| cfg(format!("reading {}: {e}", path.display())));
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
                    let identity =
                        reqwest::Identity::from_pem(&pem).map_err(|e| cfg(format!("client certificate {}: {e}", cert.display())))?;
                    builder = builder.identity(identity);
                }
                (None, None) => {}
                _ => return Err(cfg("tls_config needs both cert_file and key_file".into())),
            }
            builder = builder.danger_accept_invalid_certs(tls.insecure_skip_verify);
        }
        let http = builder.build().map_err(|e| cfg(format!("building HTTP client: {e}")))?;
        Ok(Self { http, base, timeout: config.timeout.get(), retries: config.retries })
    }

    /// `query_range`, split into requests of at most [`MAX_POINTS_PER_QUERY`] points per series,
    /// with the pieces' series merged by label set.
    ///
    /// # Errors
    /// The first piece that still fails after the retries.
    pub async fn query_range(&self, expr: &str, start: i64, end: i64, step: i64) -> Result<Vec<Series>, Error> {
        let mut merged: std::collections::BTreeMap<Labels, Vec<(i64, f64)>> = Default::default();
        let span = MAX_POINTS_PER_QUERY * step;
        let mut from = start;
        while from <= end {
            let to = (from + span - step).min(end);
            for series in self.query_range_once(expr, from, to, step).await? {
                merged.entry(series.labels).or_default().extend(series.samples);
            }
            from = to + step;
        }
        Ok(merged
            .into_iter()
            .map(|(labels, mut samples)| {
                samples.dedup_by_key(|s| s.0);
                Series { labels, samples }
            })
            .collect())
    }

    async fn query_range_once(&self, expr: &str, start: i64, end: i64, step: i64) -> Result<Vec<Series>, Error> {
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

    async fn request(&self, expr: &str, start: i64, end: i64, step: i64) -> Result<Vec<Series>, Error> {
        let url = self.base.join("api/v1/query_range").map_err(|e| Error::Config(e.to_string()))?;
        let form = [("query", expr.to_string()), ("start", start.to_string()), ("end", end.to_string()), ("step", step.to_string())];
        async {
            let response = self.http.post(url).form(&form).send().await.map_err(|e| self.transport(e))?;
            let status = response.status();
            let body = response.bytes().await.map_err(|e| self.transport(e))?;
            // Prometheus answers 400/422/503 with a JSON error body; keep its message.
            if !status.is_success() {
                let text = String::from_utf8_lossy(&body);
                let detail =
                    serde_json::from_slice::<Answer>(&body).ok().and_then(|a| a.error).unwrap_or_else(|| text.chars().take(200).collect());
                return Err(Error::Status { code: status.as_u16(), body: detail });
            }
            decode(&body)
        }
        .await
    }

    fn transport(&self, err: reqwest::Error) -> Error {
        if err.is_timeout() {
            Error::Timeout(self.timeout)
        } else {
            // The source chain says why (refused, reset, DNS); the top level only "error sending request".
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
struct Answer<'a> {
    status: String,
    #[serde(default, borrow)]
    data: Option<Data<'a>>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Data<'a> {
    result_type: String,
    #[serde(borrow)]
    result: Vec<MatrixSeries<'a>>,
}

/// Sample values are borrowed from the answer (numbers never need unescaping), so a large
/// answer is not copied into one `String` per sample before it is parsed.
#[derive(Deserialize)]
struct MatrixSeries<'a> {
    metric: Labels,
    #[serde(borrow)]
    values: Vec<(f64, &'a str)>,
}

/// Decodes a `query_range` answer, dropping samples that are not finite numbers.
fn decode(body: &[u8]) -> Result<Vec<Series>, Error> {
    let answer: Answer = serde_json::from_slice(body).map_err(|e| Error::Decode(e.to_string()))?;
    if answer.status != "success" {
        return Err(Error::Decode(format!("status {:?}: {}", answer.status, answer.error.unwrap_or_default())));
    }
    let data = answer.data.ok_or_else(|| Error::Decode("no data in a success answer".into()))?;
    if data.result_type != "matrix" {
        return Err(Error::Decode(format!("expected a matrix, got {:?}", data.result_type)));
    }
    Ok(data
        .result
        .into_iter()
        .map(|s| Series {
            labels: s.metric,
            samples: s
                .values
                .into_iter()
                .filter_map(|(ts, v)| v.parse::<f64>().ok().filter(|v| v.is_finite()).map(|v| (ts.round() as i64, v)))
                .collect(),
        })
        // A series whose samples were all NaN (e.g. 0/0) has nothing to model.
        .filter(|s| !s.samples.is_empty())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn decode_drops_non_finite_and_keeps_labels() {
        let body = br#"{"status":"success","data":{"resultType":"matrix","result":[
            {"metric":{"__name__":"up","job":"a"},"values":[[1,"1"],[2,"NaN"],[3,"+Inf"],[4,"-Inf"],[5,"2.5"]]}]}}"#;
        let series = decode(body).unwrap();
        assert_eq!(series.len(), 1);
        assert_eq!(series[0].labels["job"], "a");
        assert_eq!(series[0].samples, vec![(1, 1.0), (5, 2.5)]);
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
        assert_eq!(seen.len(), 3);
        for (headers, form) in seen.iter() {
            assert_eq!(headers["authorization"], "Bearer t0ken");
            assert_eq!(headers["x-scope-orgid"], "tenant-1");
            let n = (form["end"].parse::<i64>().unwrap() - form["start"].parse::<i64>().unwrap()) / 60 + 1;
            assert!(n <= MAX_POINTS_PER_QUERY, "{n} points in one request");
        }
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
        client.query_range("up", 0, 60, 60).await.unwrap();
        assert_eq!(stub.seen.lock().unwrap().len(), 3, "two retries, then success");

        stub.script.lock().unwrap().push_back((400, r#"{"status":"error","errorType":"bad_data","error":"parse error"}"#));
        let err = client.query_range("up", 0, 60, 60).await.unwrap_err();
        assert!(matches!(&err, Error::Status { code: 400, body } if body == "parse error"), "{err}");
        assert_eq!(stub.seen.lock().unwrap().len(), 4, "no retry on 4xx");

        stub.script.lock().unwrap().extend([(200, "<html>not prometheus</html>")]);
        assert!(matches!(client.query_range("up", 0, 60, 60).await, Err(Error::Decode(_))));

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

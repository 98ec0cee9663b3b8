//! The `remote_write:` section: where pulsewatch sends every output series after each
//! evaluation, in the shape of Prometheus's own `remote_write` (`url`, `basic_auth`,
//! `bearer_token`, `tls_config`, `headers`, `queue_config`).

use std::collections::BTreeMap;

use serde::Deserialize;

use super::source::{BasicAuth, Secret, SourceConfig, TlsConfig};
use super::Duration;

/// One remote-write endpoint (Prometheus's receiver, Mimir, Thanos Receive, Cortex,
/// VictoriaMetrics).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteWriteConfig {
    /// The endpoint, e.g. `http://prometheus:9090/api/v1/write` or `http://mimir/api/v1/push`.
    pub url: String,
    /// Names the endpoint in self-metrics (`remote_name`); the URL without credentials if unset.
    #[serde(default)]
    pub name: Option<String>,
    /// Timeout of one request.
    #[serde(default = "default_remote_timeout")]
    pub remote_timeout: Duration,
    /// HTTP basic authentication.
    #[serde(default)]
    pub basic_auth: Option<BasicAuth>,
    /// `Authorization: Bearer` credentials.
    #[serde(default)]
    pub bearer_token: Option<Secret>,
    /// TLS settings for `https` URLs.
    #[serde(default)]
    pub tls_config: Option<TlsConfig>,
    /// Extra headers sent with every request, e.g. `X-Scope-OrgID` for a Mimir or Cortex tenant.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The queue in front of the endpoint.
    #[serde(default)]
    pub queue_config: QueueConfig,
}

/// The queue of samples waiting to be sent, as Prometheus's `queue_config` names its settings.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// Samples the queue holds; samples that find it full are dropped (and counted).
    pub capacity: usize,
    /// Most samples in one request.
    pub max_samples_per_send: usize,
    /// Longest a sample waits for a request to fill.
    pub batch_send_deadline: Duration,
    /// First wait before a retry; doubled on each retry.
    pub min_backoff: Duration,
    /// Longest wait between retries.
    pub max_backoff: Duration,
    /// Attempts of one request before it is dropped (and counted as failed).
    pub max_retries: u32,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            capacity: 10_000,
            max_samples_per_send: 2_000,
            batch_send_deadline: Duration::from_secs(5),
            min_backoff: Duration::parse("30ms").expect("a valid duration"),
            max_backoff: Duration::from_secs(5),
            max_retries: 10,
        }
    }
}

fn default_remote_timeout() -> Duration {
    Duration::from_secs(30)
}

/// Most samples a queue may hold: bounds the memory of one endpoint (about 100 bytes each).
const MAX_QUEUE_CAPACITY: usize = 10_000_000;

impl RemoteWriteConfig {
    /// The name in self-metrics and logs.
    pub fn remote_name(&self) -> String {
        self.name.clone().unwrap_or_else(|| super::redact_url(&self.url))
    }

    /// The HTTP settings, as a source's (the client is built the same way).
    pub fn http(&self) -> SourceConfig {
        SourceConfig {
            url: self.url.clone(),
            timeout: self.remote_timeout.clone(),
            retries: 0,
            basic_auth: self.basic_auth.clone(),
            bearer_token: self.bearer_token.clone(),
            tls_config: self.tls_config.clone(),
            headers: self.headers.clone(),
        }
    }

    /// What is wrong with the settings, each as a sentence naming the setting.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let name = self.remote_name();
        if let Err(err) = reqwest::Url::parse(&self.url) {
            out.push(format!("remote_write {name}: url: {err}"));
        }
        let q = &self.queue_config;
        if q.capacity == 0 || q.capacity > MAX_QUEUE_CAPACITY {
            out.push(format!("remote_write {name}: queue_config capacity {} must be between 1 and {MAX_QUEUE_CAPACITY}", q.capacity));
        }
        if q.max_samples_per_send == 0 || q.max_samples_per_send > q.capacity {
            out.push(format!(
                "remote_write {name}: queue_config max_samples_per_send {} must be between 1 and the capacity {}",
                q.max_samples_per_send, q.capacity
            ));
        }
        if q.min_backoff.get() > q.max_backoff.get() {
            out.push(format!(
                "remote_write {name}: queue_config min_backoff {} is longer than max_backoff {}",
                q.min_backoff, q.max_backoff
            ));
        }
        if self.remote_timeout.get().is_zero() || q.batch_send_deadline.get().is_zero() {
            out.push(format!("remote_write {name}: remote_timeout and batch_send_deadline must be longer than 0"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_prometheus_shaped_settings_and_checks_them() {
        let yaml = "url: http://mimir:8080/api/v1/push\nheaders: { X-Scope-OrgID: team-a }\nbearer_token: { value: t }\nqueue_config: { capacity: 500, max_samples_per_send: 100, batch_send_deadline: 1s }\n";
        let rw: RemoteWriteConfig = serde_saphyr::from_str(yaml).unwrap();
        assert_eq!(rw.remote_name(), "http://mimir:8080/api/v1/push");
        assert_eq!(rw.headers["X-Scope-OrgID"], "team-a");
        assert_eq!((rw.queue_config.capacity, rw.queue_config.max_samples_per_send), (500, 100));
        assert_eq!(rw.queue_config.max_backoff, Duration::from_secs(5), "unset settings keep Prometheus's defaults");
        assert_eq!(rw.remote_timeout, Duration::from_secs(30));
        assert!(rw.problems().is_empty(), "{:?}", rw.problems());
        assert_eq!(rw.http().headers["X-Scope-OrgID"], "team-a");

        let bad: RemoteWriteConfig = serde_saphyr::from_str(
            "url: 'http://u:secret@h/w'\nqueue_config: { capacity: 10, max_samples_per_send: 20, min_backoff: 10s, max_backoff: 1s }\n",
        )
        .unwrap();
        let problems = bad.problems().join("\n");
        assert!(problems.contains("max_samples_per_send 20 must be between 1 and the capacity 10"), "{problems}");
        assert!(problems.contains("min_backoff 10s is longer than max_backoff 1s"), "{problems}");
        assert!(!problems.contains("secret"), "no credential in a message: {problems}");
        assert!(serde_saphyr::from_str::<RemoteWriteConfig>("url: http://h/w\nqueue_config: { shards: 2 }\n").is_err());
    }
}

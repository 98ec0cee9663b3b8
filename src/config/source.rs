//! The `source:` section: where and how pulsewatch queries the Prometheus HTTP API.
//!
//! Secrets (passwords, bearer tokens) come from files or environment variables, as well as inline,
//! so they need never be on a command line. They are read when the client is built, so a reload
//! picks up a rotated token file.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::duration::Duration;

/// Connection settings for a Prometheus-compatible server (Prometheus, Thanos, Mimir, Cortex,
/// VictoriaMetrics).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Base URL, e.g. `http://127.0.0.1:9090` or `http://mimir/prometheus`.
    pub url: String,
    /// Timeout of one HTTP request.
    #[serde(default = "default_timeout")]
    pub timeout: Duration,
    /// Attempts after the first on 5xx answers and transport errors (never on 4xx).
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// HTTP basic authentication.
    #[serde(default)]
    pub basic_auth: Option<BasicAuth>,
    /// `Authorization: Bearer` credentials.
    #[serde(default)]
    pub bearer_token: Option<Secret>,
    /// TLS settings for `https` URLs.
    #[serde(default)]
    pub tls_config: Option<TlsConfig>,
    /// Extra headers sent with every request, e.g. `X-Scope-OrgID` for Mimir or Cortex tenants.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// `url` with any `user:password@` replaced by `<redacted>@`, for messages and logs: a URL
/// that carries credentials must not leak them in an error.
pub fn redact_url(url: &str) -> String {
    let start = url.find("://").map_or(0, |i| i + 3);
    let authority_end = url[start..].find(['/', '?', '#']).map_or(url.len(), |i| start + i);
    match url[start..authority_end].rfind('@') {
        Some(at) => format!("{}<redacted>@{}", &url[..start], &url[start + at + 1..]),
        None => url.to_string(),
    }
}

impl SourceConfig {
    /// A source at `url` with every other setting at its default (the command line's
    /// `--source URL`).
    pub fn for_url(url: &str) -> Self {
        Self {
            url: url.to_string(),
            timeout: default_timeout(),
            retries: default_retries(),
            basic_auth: None,
            bearer_token: None,
            tls_config: None,
            headers: BTreeMap::new(),
        }
    }
}

/// Username and password for basic auth.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    /// The user name.
    pub username: String,
    /// The password.
    pub password: Secret,
}

/// A secret given inline, in a file, or in an environment variable (exactly one of them).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Secret {
    /// The secret itself (avoid in files under version control).
    #[serde(default)]
    pub value: Option<String>,
    /// A file whose content (trailing newline trimmed) is the secret.
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// An environment variable that holds the secret.
    #[serde(default)]
    pub env: Option<String>,
}

/// A secret that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The file could not be read.
    #[error("reading secret file {}: {cause}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        cause: std::io::Error,
    },
    /// The variable is not set (or not Unicode).
    #[error("environment variable {0} is not set")]
    Env(String),
    /// None or several of `value`, `file`, `env`.
    #[error("a secret needs exactly one of `value`, `file` or `env`")]
    Ambiguous,
}

impl Secret {
    /// Reads the secret from wherever it is configured.
    ///
    /// # Errors
    /// Names the file or variable that could not be read, or says the secret is ambiguous.
    pub fn resolve(&self) -> Result<String, SecretError> {
        match (&self.value, &self.file, &self.env) {
            (Some(value), None, None) => Ok(value.clone()),
            (None, Some(file), None) => crate::files::read_to_string(file, crate::files::MAX_SECRET_BYTES)
                .map(|s| s.trim_end_matches(['\r', '\n']).to_string())
                .map_err(|cause| SecretError::File { path: file.clone(), cause }),
            (None, None, Some(var)) => std::env::var(var).map_err(|_| SecretError::Env(var.clone())),
            _ => Err(SecretError::Ambiguous),
        }
    }
}

/// TLS settings for the source, as in Prometheus's `tls_config`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// CA certificate(s) to trust, PEM.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Client certificate for mutual TLS, PEM.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// Client key for mutual TLS, PEM.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Skip server certificate verification (testing only).
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

fn default_retries() -> u32 {
    3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_from_each_place() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "s3cret\n").unwrap();
        let from_file = Secret { value: None, file: Some(file), env: None };
        assert_eq!(from_file.resolve().unwrap(), "s3cret");
        let inline = Secret { value: Some("x".into()), file: None, env: None };
        assert_eq!(inline.resolve().unwrap(), "x");
        std::env::set_var("PULSEWATCH_TEST_SECRET", "y");
        let env = Secret { value: None, file: None, env: Some("PULSEWATCH_TEST_SECRET".into()) };
        assert_eq!(env.resolve().unwrap(), "y");
        let missing = Secret { value: None, file: None, env: Some("PULSEWATCH_UNSET_VAR".into()) };
        assert!(missing.resolve().unwrap_err().to_string().contains("PULSEWATCH_UNSET_VAR"));
        let both = Secret { value: Some("x".into()), file: None, env: Some("Y".into()) };
        assert!(matches!(both.resolve(), Err(SecretError::Ambiguous)));
    }

    #[test]
    fn credentials_in_urls_are_redacted() {
        let cases = [
            ("http://u:p@prom:9090/x?a=b", "http://<redacted>@prom:9090/x?a=b"),
            ("https://user@host", "https://<redacted>@host"),
            ("u:p@w@host/path@x", "<redacted>@host/path@x"),
            ("http://prom:9090/a@b", "http://prom:9090/a@b"),
            ("not a url", "not a url"),
        ];
        for (url, expected) in cases {
            assert_eq!(redact_url(url), expected, "{url}");
        }
    }
}

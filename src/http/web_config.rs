//! `--web.config.file` in the Prometheus exporter-toolkit format: TLS and bcrypt basic auth.
//!
//! ```yaml
//! tls_server_config: { cert_file: server.crt, key_file: server.key }
//! basic_auth_users: { prometheus: "$2y$10$..." }   # bcrypt hashes (htpasswd -nBC 10)
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

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
        let text = crate::files::read_to_string(path, crate::files::MAX_CONFIG_BYTES)
            .map_err(|cause| WebConfigError::Read { path: path.to_path_buf(), cause })?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_plain_passwords_and_unknown_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("web.yml");
        std::fs::write(&path, "basic_auth_users: { a: plain }\n").unwrap();
        assert!(matches!(WebConfig::load(&path), Err(WebConfigError::NotBcrypt { .. })));
        std::fs::write(&path, "tls_config: {}\n").unwrap();
        assert!(WebConfig::load(&path).unwrap_err().to_string().contains("tls_config"));
    }
}

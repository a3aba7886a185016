//! krakectl's configuration file, found where Krake's krakectl looks for it.
//!
//! Search order: the `--config` path, `./krakectl.yaml`,
//! `$XDG_CONFIG_HOME/krakectl.yaml` (`~/.config` when unset),
//! `/etc/krakectl/krakectl.yaml`; the first that exists wins, else the
//! built-in defaults (`api_url: http://localhost:8080`, `user: system:admin`).

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The `tls` section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct TlsConfig {
    /// Use the certificates below.
    pub enabled: bool,
    /// The CA that signed the API's certificate.
    pub client_ca: Option<PathBuf>,
    /// The client certificate.
    pub client_cert: Option<PathBuf>,
    /// The client certificate's key.
    pub client_key: Option<PathBuf>,
}

/// The whole file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Config {
    /// The API's base URL.
    pub api_url: String,
    /// The user; also the default namespace, as in Krake.
    pub user: String,
    /// Client TLS.
    pub tls: TlsConfig,
    /// Beyond Krake: a token sent as-is in `Authorization` (Keystone, Keycloak).
    pub token: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            api_url: "http://localhost:8080".to_owned(),
            user: "system:admin".to_owned(),
            tls: TlsConfig::default(),
            token: None,
        }
    }
}

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The `--config` file does not exist.
    #[error("configuration file {0} does not exist")]
    Missing(PathBuf),
    /// A file could not be read.
    #[error("cannot read configuration file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A file is not valid.
    #[error("invalid configuration file {path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// The files searched, in order.
pub fn search_path(explicit: Option<&Path>) -> Vec<PathBuf> {
    let mut paths = Vec::new();
    if let Some(path) = explicit {
        paths.push(path.to_owned());
    }
    paths.push(PathBuf::from("krakectl.yaml"));
    let xdg = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".config")));
    if let Some(dir) = xdg {
        paths.push(dir.join("krakectl.yaml"));
    }
    paths.push(PathBuf::from("/etc/krakectl/krakectl.yaml"));
    paths
}

/// Loads the configuration: an explicit `--config` must exist; otherwise
/// the first file of the search path, or the defaults.
pub fn load(explicit: Option<&Path>) -> Result<(Config, Option<PathBuf>), ConfigError> {
    if let Some(path) = explicit {
        if !path.exists() {
            return Err(ConfigError::Missing(path.to_owned()));
        }
    }
    for path in search_path(explicit) {
        if path.is_file() {
            let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
            let config = parse(&text).map_err(|message| ConfigError::Invalid {
                path: path.clone(),
                message,
            })?;
            return Ok((config, Some(path)));
        }
    }
    Ok((Config::default(), None))
}

/// Reads a configuration text (an empty file means the defaults).
pub fn parse(text: &str) -> Result<Config, String> {
    if text.trim().is_empty() {
        return Ok(Config::default());
    }
    serde_saphyr::from_str(text).map_err(|err| err.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_krake_keys_with_defaults() {
        let config = parse(
            "api_url: https://krake:8443\nuser: alice\ntls:\n  enabled: true\n  client_ca: ca.pem\n  client_cert: c.pem\n  client_key: k.pem\n",
        )
        .unwrap();
        assert_eq!(config.api_url, "https://krake:8443");
        assert_eq!(config.user, "alice");
        assert!(config.tls.enabled);
        assert_eq!(config.tls.client_key.as_deref(), Some(Path::new("k.pem")));
        let partial = parse("user: bob\n").unwrap();
        assert_eq!(partial.api_url, "http://localhost:8080");
        assert_eq!(parse("").unwrap(), Config::default());
        assert!(parse("api_url: [\n").is_err());
    }

    #[test]
    fn search_path_follows_krake() {
        let paths = search_path(Some(Path::new("/tmp/x.yaml")));
        assert_eq!(paths[0], Path::new("/tmp/x.yaml"));
        assert_eq!(paths[1], Path::new("krakectl.yaml"));
        assert_eq!(
            paths.last().unwrap(),
            Path::new("/etc/krakectl/krakectl.yaml")
        );
    }
}

//! The server's configuration: a YAML file with the keys of Krake's
//! `api.yaml` where they apply, overridden by `KRAKE_*` environment
//! variables, overridden by command-line flags.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

/// A configuration problem, reported in one line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read the configuration file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid YAML or has a key of the wrong type.
    #[error("invalid configuration file {path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A setting has a value the server does not support.
    #[error("unsupported configuration: {0}")]
    Unsupported(String),
}

/// Krake's `etcd` section, plus a list of endpoints for a cluster.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct EtcdSection {
    /// etcd host (Krake's key).
    pub host: Option<String>,
    /// etcd client port (Krake's key).
    pub port: Option<u16>,
    /// Beyond Krake: full endpoint URLs of an etcd cluster (every member;
    /// the server fails over between them).
    pub endpoints: Vec<String>,
    /// Beyond Krake: the CA certificate (PEM file) that signed the etcd
    /// members' certificates. Makes the endpoints `https://`.
    pub ca_cert: Option<PathBuf>,
    /// Beyond Krake: the client certificate (PEM file) presented to etcd
    /// (for etcd's `--client-cert-auth`); needs `client_key`.
    pub client_cert: Option<PathBuf>,
    /// Beyond Krake: the private key (PEM file) of `client_cert`.
    pub client_key: Option<PathBuf>,
    /// Krake's key; krake-rs retries conflicting writes internally.
    pub retry_transactions: Option<u32>,
    /// Beyond Krake: seconds any etcd request may take before it fails
    /// with 503 (default 5).
    pub request_timeout: Option<f64>,
    /// Beyond Krake: seconds a request may be held while etcd elects a
    /// leader or the server fails over to another member (default 4; at
    /// most `request_timeout`).
    pub retry_budget: Option<f64>,
}

/// Krake's `tls` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct TlsSection {
    /// Serve HTTPS.
    pub enabled: bool,
    /// The server's certificate chain (PEM).
    pub cert: Option<PathBuf>,
    /// The server's private key (PEM).
    pub key: Option<PathBuf>,
    /// The CA of client certificates (PEM); clients with a certificate it
    /// signed are the certificate's common name.
    pub client_ca: Option<PathBuf>,
}

/// Krake's `authentication.strategy.static`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct StaticStrategy {
    /// Use it.
    pub enabled: bool,
    /// The user every request runs as.
    pub name: Option<String>,
}

/// Krake's `authentication.strategy.keystone`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct KeystoneStrategy {
    /// Use it.
    pub enabled: bool,
    /// Keystone's v3 URL (Krake's default: `http://localhost:5000/v3`).
    pub endpoint: Option<String>,
}

/// Krake's `authentication.strategy.keycloak`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct KeycloakStrategy {
    /// Use it.
    pub enabled: bool,
    /// Keycloak's URL (Krake's default: `http://localhost:9080`).
    pub endpoint: Option<String>,
    /// The realm (Krake's default: `krake`).
    pub realm: Option<String>,
}

/// Beyond Krake: `authentication.strategy.oidc`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct OidcStrategy {
    /// Use it.
    pub enabled: bool,
    /// The issuer URL (`iss`).
    pub issuer: Option<String>,
    /// The audience (`aud`), usually the client id.
    pub audience: Option<String>,
    /// The JWKS URL (default: from the issuer's discovery document).
    pub jwks_url: Option<String>,
    /// The claim naming the user (default: `preferred_username`).
    pub username_claim: Option<String>,
    /// The web console's client id at the issuer (default: the audience).
    pub client_id: Option<String>,
}

/// Krake's `authentication.strategy`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Strategies {
    /// Every request is one user.
    #[serde(rename = "static")]
    pub static_user: StaticStrategy,
    /// Keystone tokens.
    pub keystone: KeystoneStrategy,
    /// Keycloak tokens.
    pub keycloak: KeycloakStrategy,
    /// OpenID Connect JWTs (beyond Krake).
    pub oidc: OidcStrategy,
}

/// Krake's `authentication` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct AuthenticationSection {
    /// Unauthenticated requests run as `system:anonymous` (default: true
    /// when the file does not say).
    pub allow_anonymous: Option<bool>,
    /// CORS origin.
    pub cors_origin: Option<String>,
    /// The strategies.
    pub strategy: Strategies,
    /// Beyond Krake: seconds a token Keystone or Keycloak accepted is
    /// trusted without asking again (default 30; 0 asks every time).
    pub token_cache_ttl: Option<u64>,
}

/// Krake's `log` section (only `level` is read; the rest is Python's
/// logging configuration).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct LogSection {
    /// `DEBUG`, `INFO`, `WARNING`, `ERROR` (Python names) or a tracing filter.
    pub level: Option<String>,
}

/// Beyond Krake: `connections`, how the server treats clients that stop
/// reading (see `krake_api::slow_clients`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConnectionsSection {
    /// Seconds a write to a client may stay blocked (the client reading
    /// nothing, e.g. a stuck watcher) before its connection is closed
    /// (default 30; 0 never closes).
    pub write_timeout: Option<f64>,
    /// The kernel send buffer of each connection, in KiB (default: the
    /// kernel's autotuning, up to 4 MiB). Smaller bounds what a stuck
    /// client holds and makes the write timeout start sooner.
    pub send_buffer_kib: Option<usize>,
}

/// Where the embedded store keeps its data (beyond Krake).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct StoreSection {
    /// `embedded` or `etcd` (default: etcd when an etcd endpoint is
    /// configured, else embedded).
    pub backend: Option<String>,
    /// The embedded store's folder.
    pub data_dir: Option<PathBuf>,
    /// Embedded store: at most how many changes its history keeps for
    /// watches to resume from (default 100,000).
    pub history_events: Option<usize>,
    /// Embedded store: at most about how many MiB of the file its history
    /// takes (default 32).
    pub history_mib: Option<f64>,
    /// Embedded store: how many seconds its history keeps a change
    /// (default 600).
    pub history_seconds: Option<f64>,
    /// Embedded store: MiB of memory caching the file's pages (default 8).
    pub cache_mib: Option<f64>,
}

impl StoreSection {
    /// The embedded store's options from `history_*` and `cache_mib`, or a
    /// one-line error naming the key.
    pub fn embedded_options(
        &self,
    ) -> Result<krake_api::store::embedded::EmbeddedOptions, ConfigError> {
        let mut options = krake_api::store::embedded::EmbeddedOptions::default();
        let mib = |key: &str, value: f64| -> Result<u64, ConfigError> {
            if value.is_finite() && value > 0.0 && value <= 1_048_576.0 {
                Ok((value * 1_048_576.0) as u64)
            } else {
                Err(ConfigError::Unsupported(format!(
                    "store.{key}: {value} (a number of MiB, more than 0)"
                )))
            }
        };
        if let Some(events) = self.history_events {
            if events == 0 {
                return Err(ConfigError::Unsupported(
                    "store.history_events: 0 (at least 1)".into(),
                ));
            }
            options.retained_events = events;
        }
        if let Some(value) = self.history_mib {
            options.retained_bytes = mib("history_mib", value)?;
        }
        if let Some(value) = self.history_seconds {
            options.retained_age = match std::time::Duration::try_from_secs_f64(value) {
                Ok(age) if !age.is_zero() => age,
                _ => {
                    return Err(ConfigError::Unsupported(format!(
                        "store.history_seconds: {value} (a number of seconds, more than 0)"
                    )));
                }
            };
        }
        if let Some(value) = self.cache_mib {
            options.cache_bytes = usize::try_from(mib("cache_mib", value)?).unwrap_or(usize::MAX);
        }
        Ok(options)
    }

    /// Whether any setting of the embedded store alone is given.
    pub fn has_embedded_settings(&self) -> bool {
        self.history_events.is_some()
            || self.history_mib.is_some()
            || self.history_seconds.is_some()
            || self.cache_mib.is_some()
    }
}

/// The configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct FileConfig {
    /// Listen host.
    pub host: Option<String>,
    /// Listen port.
    pub port: Option<u16>,
    /// etcd.
    pub etcd: Option<EtcdSection>,
    /// The store.
    pub store: StoreSection,
    /// TLS.
    pub tls: TlsSection,
    /// Authentication.
    pub authentication: AuthenticationSection,
    /// `always-allow`, `always-deny` or `RBAC`.
    pub authorization: Option<String>,
    /// Logging.
    pub log: LogSection,
    /// Beyond Krake: the controllers run in the server's process.
    pub controllers: ControllersSection,
    /// Beyond Krake: clients that stop reading.
    pub connections: ConnectionsSection,
}

/// Beyond Krake: `controllers`, the controllers krake-server runs next to
/// the API (each through the API over a loopback listener).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ControllersSection {
    /// The garbage collector.
    pub gc: ControllerSettings,
    /// The scheduler.
    pub scheduler: ControllerSettings,
    /// The Kubernetes application controller.
    pub kubernetes_application: ControllerSettings,
    /// The Kubernetes cluster controller.
    pub kubernetes_cluster: ControllerSettings,
    /// The Magnum controller (acts only on MagnumClusters bound to a
    /// Project).
    pub magnum: ControllerSettings,
    /// The infrastructure controller (acts only on Clusters bound to a
    /// Cloud with a TOSCA template).
    pub infrastructure: ControllerSettings,
    /// Active-passive replicas of krake-server (each controller elects its
    /// own leader through a Lease).
    pub leader_election: LeaderElectionSection,
}

/// The settings of one controller, as Krake's controller files name them
/// (`garbage_collector.yaml`, `scheduler.yaml`, `kubernetes_application.yaml`,
/// `kubernetes_cluster.yaml`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ControllerSettings {
    /// In `controllers` of krake-server's file: run it (default true).
    pub enabled: Option<bool>,
    /// How many objects are handled at once (default 5).
    pub worker_count: Option<usize>,
    /// Krake's debounce of the work queue, in seconds (accepted; krake-rs
    /// debounces internally).
    pub debounce: Option<f64>,
    /// Scheduler: seconds before a scheduled application is scheduled again
    /// (default 60).
    pub reschedule_after: Option<f64>,
    /// Scheduler: the weight of staying on the current cluster (default 0.1).
    pub stickiness: Option<f64>,
    /// Scheduler: clusters created for applications that ask for one.
    pub automatic_cluster_creation: AutomaticClusterCreation,
    /// Beyond Krake, scheduler: queries to metrics providers.
    pub metrics_providers: MetricsProvidersSection,
    /// Kubernetes application controller: Krake's `complete` and `shutdown`
    /// hooks.
    pub hooks: Option<HooksSection>,
    /// Kubernetes application controller: Krake's migration of applications
    /// with volumes (validated, not used yet).
    pub migration: Option<MigrationSection>,
    /// Beyond Krake, Kubernetes application controller: seconds between
    /// looks at every application even when nothing changed (default 60).
    pub resync: Option<f64>,
    /// Beyond Krake, Kubernetes controllers: seconds connecting to a
    /// cluster may take (default 5).
    pub connect_timeout: Option<f64>,
    /// Beyond Krake, Kubernetes controllers: seconds a request to a cluster
    /// (not a watch) may wait for its answer (default 20).
    pub request_timeout: Option<f64>,
    /// Beyond Krake, Kubernetes application controller: seconds a cluster
    /// may take to list the objects of a kind before the application shows
    /// DEGRADED (default 20).
    pub list_timeout: Option<f64>,
    /// Beyond Krake, Kubernetes application controller: seconds reading the
    /// TOSCA template or CSAR archive of an application from its URL may
    /// take (default 30).
    pub tosca_timeout: Option<f64>,
    /// Kubernetes cluster controller: seconds between Krake's looks at a
    /// cluster's Nodes, in some Krake versions of `kubernetes_cluster.yaml`.
    /// Accepted so those files load, and ignored: krake-rs watches the
    /// Nodes, so a change shows within the watch's latency, not a period.
    /// Magnum controller (`magnum.yaml`): seconds between looks at a cluster
    /// being created, resized or deleted (default 30).
    /// Infrastructure controller (`infrastructure.yaml`): seconds between
    /// looks at an infrastructure being created, updated or deleted
    /// (default 30).
    pub poll_interval: Option<f64>,
}

/// Krake's `hooks` of `kubernetes_application.yaml`: the settings of the
/// hooks applications ask for in `spec.hooks` (a hook without settings
/// works with Krake's defaults and without certificates). Checked as Krake
/// checks them; the intermediate CAs are read when the configuration is
/// loaded (see `krake_controller::kubernetes::hooks`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct HooksSection {
    /// The `complete` hook: applications report that they finished.
    pub complete: Option<HookSection>,
    /// The `shutdown` hook: applications shut down gracefully before they
    /// are deleted or migrated.
    pub shutdown: Option<HookSection>,
}

/// One hook of [`HooksSection`], Krake's keys.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct HookSection {
    /// The user of the hook's certificate (`system:complete-hook`,
    /// `system:shutdown-hook`).
    pub hook_user: Option<String>,
    /// The intermediate CA that signs the hook's certificates (required).
    pub intermediate_src: Option<PathBuf>,
    /// The intermediate CA's key (required).
    pub intermediate_key_src: Option<PathBuf>,
    /// Where the certificates are mounted in the application's containers.
    pub cert_dest: Option<String>,
    /// The environment variable holding the hook's token.
    pub env_token: Option<String>,
    /// The environment variable holding the hook's URL.
    pub env_url: Option<String>,
    /// The API's URL as the applications reach it (an http or https URL
    /// with a host; default: `api_endpoint`).
    pub external_endpoint: Option<String>,
    /// Shutdown: seconds the application has to shut down (more than 0,
    /// default 30).
    pub timeout: Option<f64>,
    /// Shutdown: what happens when it does not (`delete` or `give_up`,
    /// default `delete`).
    pub failure_strategy: Option<String>,
    /// Shutdown: how many times it is asked again (0 or more, default 0).
    pub failure_retry_count: Option<i64>,
}

/// Krake's `migration` of `kubernetes_application.yaml` (validated, not
/// used yet: applications with volumes migrate without copying them).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct MigrationSection {
    /// Retries of a failed copy of volumes.
    pub retry: MigrationRetry,
}

/// Krake's `migration.retry`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct MigrationRetry {
    /// How many times a migration is tried (0 or more, default 10).
    pub max: Option<i64>,
    /// Seconds between tries, times the tries so far (0 or more, default 60).
    pub timeout: Option<f64>,
}

impl HooksSection {
    /// Checks the hooks as Krake does; `section` names them in errors.
    pub fn validate(&self, section: &str) -> Result<(), ConfigError> {
        for (name, hook) in [("complete", &self.complete), ("shutdown", &self.shutdown)] {
            if let Some(hook) = hook {
                hook.validate(&format!("{section}: hooks.{name}"), name == "shutdown")?;
            }
        }
        Ok(())
    }
}

impl HookSection {
    fn validate(&self, prefix: &str, shutdown: bool) -> Result<(), ConfigError> {
        let bad = |message: String| Err(ConfigError::Unsupported(format!("{prefix}.{message}")));
        if self.intermediate_src.is_none() {
            return bad("intermediate_src is required".into());
        }
        if self.intermediate_key_src.is_none() {
            return bad("intermediate_key_src is required".into());
        }
        if let Some(endpoint) = &self.external_endpoint {
            if !http_url_with_host(endpoint) {
                return bad(format!(
                    "external_endpoint: {endpoint:?} (an http or https URL with a host)"
                ));
            }
        }
        let shutdown_only = [
            ("timeout", self.timeout.is_some()),
            ("failure_strategy", self.failure_strategy.is_some()),
            ("failure_retry_count", self.failure_retry_count.is_some()),
        ];
        if !shutdown {
            if let Some((key, _)) = shutdown_only.iter().find(|(_, set)| *set) {
                return bad(format!("{key} is a setting of the shutdown hook only"));
            }
        }
        if let Some(timeout) = self.timeout {
            if !(timeout.is_finite() && timeout > 0.0) {
                return bad(format!(
                    "timeout: {timeout} (a number of seconds, more than 0)"
                ));
            }
        }
        if let Some(strategy) = &self.failure_strategy {
            if strategy != "delete" && strategy != "give_up" {
                return bad(format!(
                    "failure_strategy: {strategy:?} (delete or give_up)"
                ));
            }
        }
        if let Some(count) = self.failure_retry_count {
            if count < 0 {
                return bad(format!("failure_retry_count: {count} (0 or more)"));
            }
        }
        Ok(())
    }
}

impl MigrationSection {
    /// Checks the migration settings; `section` names them in errors.
    pub fn validate(&self, section: &str) -> Result<(), ConfigError> {
        if let Some(max) = self.retry.max {
            if max < 0 {
                return Err(ConfigError::Unsupported(format!(
                    "{section}: migration.retry.max: {max} (0 or more)"
                )));
            }
        }
        if let Some(timeout) = self.retry.timeout {
            if !(timeout.is_finite() && timeout >= 0.0) {
                return Err(ConfigError::Unsupported(format!(
                    "{section}: migration.retry.timeout: {timeout} (a number of seconds, zero or more)"
                )));
            }
        }
        Ok(())
    }
}

/// Whether `text` is an `http` or `https` URL with a host (Krake's check of
/// `external_endpoint`).
fn http_url_with_host(text: &str) -> bool {
    text.parse::<axum::http::Uri>().is_ok_and(|uri| {
        matches!(uri.scheme_str(), Some("http" | "https"))
            && uri.host().is_some_and(|host| !host.is_empty())
    })
}

/// Krake's `automatic_cluster_creation`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct AutomaticClusterCreation {
    /// The TOSCA template (YAML) of created clusters; none: no clusters
    /// are created.
    pub tosca_file: Option<PathBuf>,
    /// Seconds an unused created cluster is kept (default 600).
    pub deletion_retention: Option<f64>,
}

/// Beyond Krake: `metrics_providers`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct MetricsProvidersSection {
    /// Seconds one query may take (default 20).
    pub timeout: Option<f64>,
    /// Seconds an answer is reused (default 5).
    pub cache_ttl: Option<f64>,
}

/// Beyond Krake: `leader_election`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct LeaderElectionSection {
    /// Campaign for a Lease and work only while holding it.
    pub enabled: Option<bool>,
    /// The Lease's namespace (default `system`).
    pub namespace: Option<String>,
    /// The Lease's name (default `krake-<controller>`; only in a
    /// controller's own file).
    pub name: Option<String>,
    /// Seconds the Lease is held after a renewal (default 15).
    pub lease_duration: Option<f64>,
}

/// Krake's `tls` section of a controller.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ClientTlsSection {
    /// Talk HTTPS, with a client certificate.
    pub enabled: bool,
    /// The CA of the API's certificate (PEM).
    pub client_ca: Option<PathBuf>,
    /// The controller's certificate (PEM).
    pub client_cert: Option<PathBuf>,
    /// The controller's private key (PEM).
    pub client_key: Option<PathBuf>,
}

/// A controller's own configuration file (Krake's `garbage_collector.yaml`,
/// `scheduler.yaml`, `kubernetes_application.yaml` and
/// `kubernetes_cluster.yaml`), for `krake-server controller`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ControllerFileConfig {
    /// The API's URL (Krake's default: `http://localhost:8080`).
    pub api_endpoint: Option<String>,
    /// TLS to the API.
    pub tls: ClientTlsSection,
    /// Beyond Krake: a bearer token for the API.
    pub token: Option<String>,
    /// The controller's keys (read from the same mapping).
    #[serde(skip)]
    pub settings: ControllerSettings,
    /// Beyond Krake: leader election.
    pub leader_election: LeaderElectionSection,
    /// Beyond Krake: where to serve the controller's metrics (`host:port`).
    pub metrics_address: Option<String>,
    /// Logging.
    pub log: LogSection,
}

/// Replaces `-` by `_` in every key, as Krake's loader does (`cors-origin`).
fn normalize_keys(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (k.replace('-', "_"), normalize_keys(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(normalize_keys).collect()),
        other => other,
    }
}

/// Reads a YAML file into `T`: Krake's key spelling (`-` for `_`), an
/// empty file is the defaults.
pub fn load_yaml<T: serde::de::DeserializeOwned + Default>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_yaml(&text).map_err(|message| ConfigError::Invalid {
        path: path.to_owned(),
        message,
    })
}

impl ControllerFileConfig {
    /// Reads a controller's configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let mut config: ControllerFileConfig = load_yaml(path)?;
        config.settings = load_yaml(path)?;
        Ok(config)
    }
}

/// Parses YAML text into `T` (see [`load_yaml`]).
pub fn parse_yaml<T: serde::de::DeserializeOwned + Default>(text: &str) -> Result<T, String> {
    if text.trim().is_empty() {
        return Ok(T::default());
    }
    let value: Value = serde_saphyr::from_str(text).map_err(|err| one_line(&err.to_string()))?;
    let value = match value {
        Value::Null => return Ok(T::default()),
        other => normalize_keys(other),
    };
    serde_path_to_error::deserialize(value).map_err(|err| {
        let path = err.path().to_string();
        if path == "." || path.is_empty() {
            err.into_inner().to_string()
        } else {
            format!("{path}: {}", err.into_inner())
        }
    })
}

/// `text` on one line.
pub fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

impl FileConfig {
    /// Reads a YAML configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        load_yaml(path)
    }

    /// Parses YAML text.
    #[cfg(test)]
    pub fn parse(text: &str) -> Result<Self, String> {
        parse_yaml(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_krakes_api_yaml() {
        let config = FileConfig::parse(
            "host: 0.0.0.0\nport: 9090\netcd:\n  host: 127.0.0.1\n  port: 2379\n  retry_transactions: 1\n\
             docs:\n  problem_base_url: x\ntls:\n  enabled: false\n  cert: a\n  key: b\n  client_ca: c\n\
             authentication:\n  allow_anonymous: true\n  cors-origin: 'http://x'\n  strategy:\n    \
             keystone: {enabled: false, endpoint: 'http://k'}\n    keycloak: {enabled: false}\n    \
             static: {enabled: true, name: system}\nauthorization: always-allow\nlog:\n  level: INFO\n",
        )
        .unwrap();
        assert_eq!(config.host.as_deref(), Some("0.0.0.0"));
        assert_eq!(config.port, Some(9090));
        assert_eq!(config.etcd.unwrap().port, Some(2379));
        assert_eq!(
            config.authentication.cors_origin.as_deref(),
            Some("http://x")
        );
        assert!(config.authentication.strategy.static_user.enabled);
        assert_eq!(config.authorization.as_deref(), Some("always-allow"));
        assert_eq!(config.log.level.as_deref(), Some("INFO"));
    }

    #[test]
    fn reads_the_controllers_and_names_bad_keys() {
        let config = FileConfig::parse(
            "controllers:\n  gc: {enabled: false, worker_count: 2}\n  scheduler:\n    worker_count: 3\n    \
             reschedule_after: 60\n    stickiness: 0.1\n    automatic_cluster_creation: {tosca_file: null, deletion_retention: 600}\n    \
             metrics_providers: {timeout: 20, cache_ttl: 5}\n  leader_election: {enabled: true, namespace: ha}\n",
        )
        .unwrap();
        assert_eq!(config.controllers.gc.enabled, Some(false));
        assert_eq!(config.controllers.gc.worker_count, Some(2));
        assert_eq!(config.controllers.scheduler.stickiness, Some(0.1));
        assert_eq!(
            config.controllers.leader_election.namespace.as_deref(),
            Some("ha")
        );
        let err = FileConfig::parse("controllers:\n  gc: {worker_count: zero}\n").unwrap_err();
        assert!(err.starts_with("controllers.gc.worker_count: "), "{err}");
        let err = parse_yaml::<ControllerSettings>("worker_count: zero\n").unwrap_err();
        assert!(err.starts_with("worker_count: "), "{err}");
    }

    #[test]
    fn reports_wrong_types() {
        let err = FileConfig::parse("port: eighty\n").unwrap_err();
        assert!(err.contains("port") || err.contains("invalid"), "{err}");
        assert!(FileConfig::parse("").is_ok());
    }
}

//! `krake-server`: the krake-rs reference server, serving Krake 1.0.1's REST
//! API (from `krake-api`) on the embedded store or on etcd.
//!
//! With no arguments it serves on `127.0.0.1:8080` with the embedded store in
//! `./data`. `--etcd URL` (repeatable) switches to etcd. Settings come from a
//! YAML file with the keys of Krake's `api.yaml` (`--config`, else
//! `./api.yaml`, else `/etc/krake/api.yaml`, else built-in defaults),
//! overridden by `KRAKE_*` environment variables, overridden by flags.
//! SIGTERM or SIGINT stops it gracefully: no new connections, watch streams
//! end, requests in flight finish.
//!
//! It also runs Krake's garbage collector, scheduler, Kubernetes
//! application controller, Kubernetes cluster controller, Magnum
//! controller and infrastructure controller in its process (`controllers`
//! in the file; `--no-gc`, `--no-scheduler`, `--no-kubernetes-application`,
//! `--no-kubernetes-cluster`, `--no-magnum`, `--no-infrastructure` switch
//! one off). They reach the API over HTTP like any client: through a second
//! listener on `127.0.0.1`, plain HTTP, where they authenticate with a
//! random token made at start (the in-process user `system:krake-server`),
//! whatever TLS, authentication and authorization the public listener has.
//! `krake-server controller <gc|scheduler|kubernetes-application|kubernetes-cluster|magnum|infrastructure>`
//! runs one controller alone against a remote API, with Krake's
//! `garbage_collector.yaml`, `scheduler.yaml`, `kubernetes_application.yaml`,
//! `kubernetes_cluster.yaml`, `magnum.yaml` or `infrastructure.yaml`.

mod config;
mod console;
mod controllers;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use krake_api::bootstrap::{self, BootstrapError, Outcome};
use krake_api::slow_clients::CutSlowClients;
use krake_api::store::Store;
use krake_api::store::embedded::{EmbeddedOptions, EmbeddedStore};
use krake_api::store::etcd::{EtcdOptions, EtcdStore, EtcdTls};
use krake_api::tls::{PeerInfo, TlsError, TlsFiles, TlsListener};
use krake_api::{
    ApiConfig, ApiState, AuthenticationConfig, AuthenticationStrategy, AuthorizationMode,
    OidcConfig, router,
};

use krake_api::authentication::InternalUser;
use krake_client::{Client, TlsOptions};
use krake_controller::metrics::Metrics;
use tokio_util::sync::CancellationToken;

use crate::config::{ConfigError, ControllerFileConfig, FileConfig};
use crate::controllers::{ControllerKind, ControllerSpec, Controllers, Election, error_chain};

/// The in-process user of the server's own controllers.
const INTERNAL_USER: &str = "system:krake-server";

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// krake-rs: Krake's REST API on an embedded store or etcd.
#[derive(Debug, Parser)]
#[command(name = "krake-server", version, about)]
struct Cli {
    /// Configuration file (YAML, Krake's api.yaml keys).
    #[arg(short, long, env = "KRAKE_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1].
    #[arg(long, env = "KRAKE_HOST")]
    host: Option<String>,
    /// Port to listen on [default: 8080].
    #[arg(short, long, env = "KRAKE_PORT")]
    port: Option<u16>,
    /// etcd endpoint URL; repeat (or separate with commas) for a cluster.
    /// Switches from the embedded store to etcd.
    #[arg(long = "etcd", env = "KRAKE_ETCD", value_delimiter = ',')]
    etcd: Vec<String>,
    /// The CA certificate (PEM) that signed etcd's certificates: TLS to
    /// etcd (https:// endpoints).
    #[arg(long, env = "KRAKE_ETCD_CA")]
    etcd_ca: Option<PathBuf>,
    /// The client certificate (PEM) presented to etcd (needs --etcd-key).
    #[arg(long, env = "KRAKE_ETCD_CERT")]
    etcd_cert: Option<PathBuf>,
    /// The private key (PEM) of --etcd-cert.
    #[arg(long, env = "KRAKE_ETCD_KEY")]
    etcd_key: Option<PathBuf>,
    /// Folder of the embedded store [default: ./data].
    #[arg(long, env = "KRAKE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// always-allow, always-deny or RBAC.
    #[arg(long, env = "KRAKE_AUTHORIZATION")]
    authorization: Option<String>,
    /// Serve HTTPS (needs --tls-cert and --tls-key).
    #[arg(long, env = "KRAKE_TLS_ENABLED")]
    tls_enabled: Option<bool>,
    /// The server's certificate chain (PEM).
    #[arg(long, env = "KRAKE_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// The server's private key (PEM).
    #[arg(long, env = "KRAKE_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// The CA of client certificates (PEM): a client with a certificate it
    /// signed is the certificate's common name.
    #[arg(long, env = "KRAKE_TLS_CLIENT_CA")]
    tls_client_ca: Option<PathBuf>,
    /// Load these YAML manifests (Roles, RoleBindings, any kind) before
    /// serving, as `bootstrap` does; repeatable.
    #[arg(long = "bootstrap", value_name = "FILE")]
    bootstrap_files: Vec<PathBuf>,
    /// Let unauthenticated requests run as system:anonymous.
    #[arg(long, env = "KRAKE_ALLOW_ANONYMOUS")]
    allow_anonymous: Option<bool>,
    /// Do not serve the web console at `/console/`.
    #[arg(long)]
    no_console: bool,
    /// Serve the API alone: no controller in the server's process (all of
    /// the `--no-*` flags below at once; a controller's `*_enabled` setting
    /// does not bring it back).
    #[arg(long)]
    no_controllers: bool,
    /// Do not run the garbage collector in the server's process.
    #[arg(long)]
    no_gc: bool,
    /// Do not run the scheduler in the server's process.
    #[arg(long)]
    no_scheduler: bool,
    /// Do not run the Kubernetes application controller in the server's
    /// process.
    #[arg(long)]
    no_kubernetes_application: bool,
    /// Do not run the Kubernetes cluster controller in the server's process.
    #[arg(long)]
    no_kubernetes_cluster: bool,
    /// Do not run the Magnum controller in the server's process.
    #[arg(long)]
    no_magnum: bool,
    /// Do not run the infrastructure controller in the server's process.
    #[arg(long)]
    no_infrastructure: bool,
    /// Run the garbage collector in the server's process [default: true].
    #[arg(long, env = "KRAKE_GC_ENABLED")]
    gc_enabled: Option<bool>,
    /// Run the scheduler in the server's process [default: true].
    #[arg(long, env = "KRAKE_SCHEDULER_ENABLED")]
    scheduler_enabled: Option<bool>,
    /// Run the Kubernetes application controller in the server's process
    /// [default: true].
    #[arg(long, env = "KRAKE_KUBERNETES_APPLICATION_ENABLED")]
    kubernetes_application_enabled: Option<bool>,
    /// Run the Kubernetes cluster controller in the server's process
    /// [default: true].
    #[arg(long, env = "KRAKE_KUBERNETES_CLUSTER_ENABLED")]
    kubernetes_cluster_enabled: Option<bool>,
    /// Run the Magnum controller in the server's process (it acts only on
    /// MagnumClusters bound to a Project) [default: true].
    #[arg(long, env = "KRAKE_MAGNUM_ENABLED")]
    magnum_enabled: Option<bool>,
    /// Run the infrastructure controller in the server's process (it acts
    /// only on Clusters bound to a Cloud with a TOSCA template) [default:
    /// true].
    #[arg(long, env = "KRAKE_INFRASTRUCTURE_ENABLED")]
    infrastructure_enabled: Option<bool>,
    /// In-process controllers work only while this server holds their
    /// Lease (`system/krake-gc`, `system/krake-scheduler`,
    /// `system/krake-kubernetes-application`,
    /// `system/krake-kubernetes-cluster`): for several krake-server
    /// replicas on one etcd.
    #[arg(long, env = "KRAKE_LEADER_ELECT")]
    leader_elect: bool,
    /// Log level: DEBUG, INFO, WARNING, ERROR, or a tracing filter.
    #[arg(long, env = "KRAKE_LOG_LEVEL", global = true)]
    log_level: Option<String>,
    /// Log format.
    #[arg(long, env = "KRAKE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    /// What to do (default: serve the API).
    #[command(subcommand)]
    command: Option<Command>,
}

/// The server's commands.
#[derive(Debug, Subcommand)]
enum Command {
    /// Load YAML manifests (multi-document; Roles, RoleBindings or any kind)
    /// into the configured store through the API's validation, and exit.
    /// Objects that exist are left alone unless --force is given.
    Bootstrap {
        /// The manifests.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Update objects that exist.
        #[arg(long)]
        force: bool,
    },
    /// Run one of Krake's controllers alone, against the API at --api
    /// (split deployments). Settings from a YAML file with Krake's keys
    /// (-c, else ./garbage_collector.yaml, ./scheduler.yaml,
    /// ./kubernetes_application.yaml, ./kubernetes_cluster.yaml or
    /// ./magnum.yaml or ./infrastructure.yaml, else the same file in
    /// /etc/krake), overridden by flags.
    Controller(Box<ControllerArgs>),
}

/// `krake-server controller`.
#[derive(Debug, clap::Args)]
struct ControllerArgs {
    /// Which controller.
    #[arg(value_enum)]
    controller: ControllerKind,
    /// Configuration file (YAML, Krake's controller keys).
    #[arg(short, long)]
    config: Option<PathBuf>,
    /// The API's URL (api_endpoint) [default: http://localhost:8080].
    /// Several replicas of the API, separated by commas, are tried in
    /// order: the client moves to the next when one cannot be reached.
    #[arg(
        long = "api",
        visible_alias = "api-endpoint",
        env = "KRAKE_API_ENDPOINT"
    )]
    api: Option<String>,
    /// How many objects are handled at once (worker_count) [default: 5].
    #[arg(long)]
    worker_count: Option<usize>,
    /// Talk HTTPS with a client certificate (tls.enabled); implied by the
    /// --tls-client-* flags.
    #[arg(long)]
    tls_enabled: Option<bool>,
    /// The CA of the API's certificate (tls.client_ca).
    #[arg(long)]
    tls_client_ca: Option<PathBuf>,
    /// The controller's certificate (tls.client_cert).
    #[arg(long)]
    tls_client_cert: Option<PathBuf>,
    /// The controller's private key (tls.client_key).
    #[arg(long)]
    tls_client_key: Option<PathBuf>,
    /// A bearer token for the API (OIDC, Keystone, Keycloak).
    #[arg(long, env = "KRAKE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Scheduler: seconds before an application is scheduled again.
    #[arg(long)]
    reschedule_after: Option<f64>,
    /// Scheduler: the weight of staying on the current cluster.
    #[arg(long)]
    stickiness: Option<f64>,
    /// Scheduler: the TOSCA template (YAML) of automatically created clusters.
    #[arg(
        long = "automatic-cluster-creation-tosca-file",
        visible_alias = "tosca-file"
    )]
    tosca_file: Option<PathBuf>,
    /// Scheduler: seconds an unused created cluster is kept.
    #[arg(
        long = "automatic-cluster-creation-deletion-retention",
        visible_alias = "deletion-retention"
    )]
    deletion_retention: Option<f64>,
    /// Kubernetes application controller: seconds between looks at every
    /// application even when nothing changed (resync) [default: 60].
    #[arg(long)]
    resync: Option<f64>,
    /// Kubernetes application controller: Krake's hooks.* keys.
    #[command(flatten)]
    hooks: HookFlags,
    /// Kubernetes application controller: seconds a cluster may take to
    /// list the objects of a kind (list_timeout) [default: 20].
    #[arg(long)]
    list_timeout: Option<f64>,
    /// Kubernetes controllers: seconds connecting to a cluster may take
    /// (connect_timeout) [default: 5].
    #[arg(long)]
    connect_timeout: Option<f64>,
    /// Kubernetes controllers: seconds a request to a cluster may wait for
    /// its answer (request_timeout) [default: 20].
    #[arg(long)]
    request_timeout: Option<f64>,
    /// Magnum controller: seconds between looks at a cluster being
    /// created, resized or deleted (poll_interval) [default: 30].
    #[arg(long)]
    poll_interval: Option<f64>,
    /// Work only while holding the Lease, so replicas run active-passive.
    #[arg(long)]
    leader_elect: bool,
    /// The Lease's namespace [default: system].
    #[arg(long)]
    lease_namespace: Option<String>,
    /// The Lease's name [default: krake-CONTROLLER, e.g. krake-gc].
    #[arg(long)]
    lease_name: Option<String>,
    /// Seconds the Lease is held after a renewal [default: 15].
    #[arg(long)]
    lease_duration: Option<f64>,
    /// Serve the controller's Prometheus metrics at http://ADDRESS/metrics.
    #[arg(long)]
    metrics_address: Option<String>,
}

/// `krake-server controller kubernetes-application`: Krake's `hooks.*`
/// keys as flags (`--hooks-complete-hook-user`,
/// `--hooks-shutdown-failure-strategy`, ...), over the file.
#[derive(Debug, Default, clap::Args)]
struct HookFlags {
    /// The complete hook's certificate user (hooks.complete.hook_user).
    #[arg(long = "hooks-complete-hook-user")]
    complete_hook_user: Option<String>,
    /// The intermediate CA signing the complete hook's certificates.
    #[arg(long = "hooks-complete-intermediate-src")]
    complete_intermediate_src: Option<PathBuf>,
    /// The key of hooks.complete.intermediate_src.
    #[arg(long = "hooks-complete-intermediate-key-src")]
    complete_intermediate_key_src: Option<PathBuf>,
    /// Where the complete hook's certificates are mounted.
    #[arg(long = "hooks-complete-cert-dest")]
    complete_cert_dest: Option<String>,
    /// The complete hook's token variable [default: KRAKE_COMPLETE_TOKEN].
    #[arg(long = "hooks-complete-env-token")]
    complete_env_token: Option<String>,
    /// The complete hook's URL variable [default: KRAKE_COMPLETE_URL].
    #[arg(long = "hooks-complete-env-url")]
    complete_env_url: Option<String>,
    /// The API as workloads reach it, for the complete hook's URL.
    #[arg(long = "hooks-complete-external-endpoint")]
    complete_external_endpoint: Option<String>,
    /// The shutdown hook's certificate user (hooks.shutdown.hook_user).
    #[arg(long = "hooks-shutdown-hook-user")]
    shutdown_hook_user: Option<String>,
    /// The intermediate CA signing the shutdown hook's certificates.
    #[arg(long = "hooks-shutdown-intermediate-src")]
    shutdown_intermediate_src: Option<PathBuf>,
    /// The key of hooks.shutdown.intermediate_src.
    #[arg(long = "hooks-shutdown-intermediate-key-src")]
    shutdown_intermediate_key_src: Option<PathBuf>,
    /// Where the shutdown hook's certificates are mounted.
    #[arg(long = "hooks-shutdown-cert-dest")]
    shutdown_cert_dest: Option<String>,
    /// The shutdown hook's token variable [default: KRAKE_SHUTDOWN_TOKEN].
    #[arg(long = "hooks-shutdown-env-token")]
    shutdown_env_token: Option<String>,
    /// The shutdown hook's URL variable [default: KRAKE_SHUTDOWN_URL].
    #[arg(long = "hooks-shutdown-env-url")]
    shutdown_env_url: Option<String>,
    /// The API as workloads reach it, for the shutdown hook's URL.
    #[arg(long = "hooks-shutdown-external-endpoint")]
    shutdown_external_endpoint: Option<String>,
    /// Seconds a workload has to shut down [default: 30].
    #[arg(long = "hooks-shutdown-timeout")]
    shutdown_timeout: Option<f64>,
    /// delete or give_up when it does not [default: delete].
    #[arg(long = "hooks-shutdown-failure-strategy")]
    shutdown_failure_strategy: Option<String>,
    /// How many times it is asked again [default: 0].
    #[arg(long = "hooks-shutdown-failure-retry-count")]
    shutdown_failure_retry_count: Option<i64>,
}

impl HookFlags {
    /// Puts the flags over the file's `hooks` (a section is made for a hook
    /// that only flags name).
    fn apply(&self, hooks: &mut Option<config::HooksSection>) {
        fn over<T: Clone>(flag: &Option<T>, file: &mut Option<T>) {
            if flag.is_some() {
                file.clone_from(flag);
            }
        }
        let complete_set = self.complete_hook_user.is_some()
            || self.complete_intermediate_src.is_some()
            || self.complete_intermediate_key_src.is_some()
            || self.complete_cert_dest.is_some()
            || self.complete_env_token.is_some()
            || self.complete_env_url.is_some()
            || self.complete_external_endpoint.is_some();
        if complete_set {
            let hook = hooks
                .get_or_insert_default()
                .complete
                .get_or_insert_default();
            over(&self.complete_hook_user, &mut hook.hook_user);
            over(&self.complete_intermediate_src, &mut hook.intermediate_src);
            over(
                &self.complete_intermediate_key_src,
                &mut hook.intermediate_key_src,
            );
            over(&self.complete_cert_dest, &mut hook.cert_dest);
            over(&self.complete_env_token, &mut hook.env_token);
            over(&self.complete_env_url, &mut hook.env_url);
            over(
                &self.complete_external_endpoint,
                &mut hook.external_endpoint,
            );
        }
        let shutdown_set = self.shutdown_hook_user.is_some()
            || self.shutdown_intermediate_src.is_some()
            || self.shutdown_intermediate_key_src.is_some()
            || self.shutdown_cert_dest.is_some()
            || self.shutdown_env_token.is_some()
            || self.shutdown_env_url.is_some()
            || self.shutdown_external_endpoint.is_some()
            || self.shutdown_timeout.is_some()
            || self.shutdown_failure_strategy.is_some()
            || self.shutdown_failure_retry_count.is_some();
        if shutdown_set {
            let hook = hooks
                .get_or_insert_default()
                .shutdown
                .get_or_insert_default();
            over(&self.shutdown_hook_user, &mut hook.hook_user);
            over(&self.shutdown_intermediate_src, &mut hook.intermediate_src);
            over(
                &self.shutdown_intermediate_key_src,
                &mut hook.intermediate_key_src,
            );
            over(&self.shutdown_cert_dest, &mut hook.cert_dest);
            over(&self.shutdown_env_token, &mut hook.env_token);
            over(&self.shutdown_env_url, &mut hook.env_url);
            over(
                &self.shutdown_external_endpoint,
                &mut hook.external_endpoint,
            );
            over(&self.shutdown_timeout, &mut hook.timeout);
            over(&self.shutdown_failure_strategy, &mut hook.failure_strategy);
            over(
                &self.shutdown_failure_retry_count,
                &mut hook.failure_retry_count,
            );
        }
    }
}

/// Where the objects are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
enum StoreChoice {
    Embedded(PathBuf, EmbeddedOptions),
    /// The endpoints, and TLS to etcd.
    Etcd(Vec<String>, Option<EtcdTls>),
}

/// `etcd.request_timeout` and `etcd.retry_budget`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct EtcdTiming {
    request_timeout: Duration,
    retry_budget: Duration,
}

impl EtcdTiming {
    /// From the file's etcd section, checked; the store's defaults for what
    /// it leaves out.
    fn from_file(etcd: Option<&config::EtcdSection>) -> Result<Self, ConfigError> {
        let defaults = EtcdOptions::default();
        let seconds = |name: &str, value: Option<f64>, default: Duration| match value {
            None => Ok(default),
            Some(s) if s.is_finite() && s > 0.0 => {
                Duration::try_from_secs_f64(s).map_err(|_| bad_seconds(name, s))
            }
            Some(s) => Err(bad_seconds(name, s)),
        };
        let request_timeout = seconds(
            "etcd.request_timeout",
            etcd.and_then(|e| e.request_timeout),
            defaults.request_timeout,
        )?;
        let retry_budget = seconds(
            "etcd.retry_budget",
            etcd.and_then(|e| e.retry_budget),
            defaults.retry_budget.min(request_timeout),
        )?;
        if retry_budget > request_timeout {
            return Err(ConfigError::Unsupported(format!(
                "etcd.retry_budget ({retry_budget:?}) is longer than etcd.request_timeout \
                 ({request_timeout:?})"
            )));
        }
        Ok(EtcdTiming {
            request_timeout,
            retry_budget,
        })
    }
}

fn bad_seconds(name: &str, value: f64) -> ConfigError {
    ConfigError::Unsupported(format!(
        "{name}: {value} is not a positive number of seconds"
    ))
}

/// Everything the server needs, after merging file, environment and flags.
#[derive(Debug)]
struct Settings {
    address: String,
    store: StoreChoice,
    /// The etcd request timeout and retry budget (with etcd).
    etcd_timing: EtcdTiming,
    api: ApiConfig,
    tls: Option<TlsFiles>,
    bootstrap: Vec<PathBuf>,
    controllers: Vec<ControllerSpec>,
    election: Option<Election>,
    log_filter: String,
    log_format: LogFormat,
    /// The web console (`None` with `--no-console`).
    console: Option<console::ConsoleConfig>,
}

/// The API endpoints of `--api` / `api_endpoint`: one URL or several
/// (replicas) separated by commas. With TLS, `http://` becomes `https://`
/// (Krake's `create_endpoint`).
fn api_endpoints(list: &str, tls: bool) -> Result<Vec<String>, ConfigError> {
    let endpoints: Vec<String> = list
        .split(',')
        .map(str::trim)
        .filter(|url| !url.is_empty())
        .map(|url| match url.strip_prefix("http://") {
            Some(rest) if tls => format!("https://{rest}"),
            _ => url.to_owned(),
        })
        .collect();
    if endpoints.is_empty() {
        return Err(ConfigError::Unsupported(format!(
            "api_endpoint {list:?} names no URL"
        )));
    }
    Ok(endpoints)
}

/// Everything `krake-server controller` needs.
#[derive(Debug)]
struct ControllerRun {
    /// The API's replicas, in order of preference.
    api: Vec<String>,
    tls: Option<ClientTls>,
    token: Option<String>,
    spec: ControllerSpec,
    election: Option<Election>,
    metrics_address: Option<String>,
    log_filter: String,
    log_format: LogFormat,
}

/// The client side of TLS: the API's CA and the controller's certificate.
#[derive(Debug, Clone)]
struct ClientTls {
    client_ca: Option<PathBuf>,
    client_cert: Option<PathBuf>,
    client_key: Option<PathBuf>,
}

/// Why the server stopped.
#[derive(Debug, thiserror::Error)]
enum ServerError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot open the store: {0}")]
    Store(#[from] krake_api::store::StoreError),
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("server failed: {0}")]
    Serve(#[source] std::io::Error),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("cannot read {path}: {source}")]
    ReadManifest {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Bootstrap {
        path: PathBuf,
        #[source]
        source: BootstrapError,
    },
    #[error("{0}")]
    Client(String),
    #[error("{0}")]
    Leader(#[from] krake_controller::leader::LeaderError),
    #[error(
        "the API at {url} refused the controller's credentials ({problem}): check tls.client_cert, tls.client_key and the token"
    )]
    Refused { url: String, problem: String },
    #[error("{0} failed")]
    Task(String),
}

fn load_file(cli: &Cli) -> Result<FileConfig, ConfigError> {
    if let Some(path) = &cli.config {
        return FileConfig::load(path);
    }
    for candidate in ["api.yaml", "/etc/krake/api.yaml"] {
        let path = PathBuf::from(candidate);
        if path.is_file() {
            return FileConfig::load(&path);
        }
    }
    Ok(FileConfig::default())
}

fn python_level_to_filter(level: &str) -> String {
    match level.to_ascii_uppercase().as_str() {
        "DEBUG" => "debug".into(),
        "INFO" => "info".into(),
        "WARNING" | "WARN" => "warn".into(),
        "ERROR" | "CRITICAL" => "error".into(),
        _ => level.to_owned(),
    }
}

/// TLS to etcd from `--etcd-ca`, `--etcd-cert` and `--etcd-key` (or the
/// file's `etcd.ca_cert`, `client_cert` and `client_key`), the files read
/// and checked now so that a mistake is one clear line at start.
fn etcd_tls(
    cli: &Cli,
    section: Option<&config::EtcdSection>,
) -> Result<Option<EtcdTls>, ConfigError> {
    let pick = |flag: &Option<PathBuf>, key: fn(&config::EtcdSection) -> &Option<PathBuf>| {
        flag.clone()
            .or_else(|| section.and_then(|s| key(s).clone()))
    };
    let ca = pick(&cli.etcd_ca, |s| &s.ca_cert);
    let cert = pick(&cli.etcd_cert, |s| &s.client_cert);
    let key = pick(&cli.etcd_key, |s| &s.client_key);
    let Some(ca) = ca else {
        if cert.is_some() || key.is_some() {
            return Err(ConfigError::Unsupported(
                "an etcd client certificate (etcd.client_cert/client_key, --etcd-cert/--etcd-key) \
                 needs the CA of etcd's certificates (etcd.ca_cert or --etcd-ca)"
                    .into(),
            ));
        }
        return Ok(None);
    };
    EtcdTls::from_files(&ca, cert.as_deref(), key.as_deref())
        .map(Some)
        .map_err(|error| ConfigError::Unsupported(error.to_string()))
}

/// Every etcd endpoint is `https://` with TLS settings and not without.
fn check_etcd_schemes(endpoints: &[String], tls: bool) -> Result<(), ConfigError> {
    for endpoint in endpoints {
        if tls && endpoint.starts_with("http://") {
            return Err(ConfigError::Unsupported(format!(
                "the etcd endpoint {endpoint} is http:// but TLS to etcd is configured \
                 (etcd.ca_cert or --etcd-ca): use https://"
            )));
        }
        if !tls && endpoint.starts_with("https://") {
            return Err(ConfigError::Unsupported(format!(
                "the etcd endpoint {endpoint} is https:// but no CA is configured for it \
                 (etcd.ca_cert or --etcd-ca)"
            )));
        }
    }
    Ok(())
}

fn settings(cli: Cli) -> Result<Settings, ConfigError> {
    let file = load_file(&cli)?;
    let tls = if cli.tls_enabled.unwrap_or(file.tls.enabled) {
        let missing = |key: &str| {
            ConfigError::Unsupported(format!("tls.enabled needs tls.{key} (or --tls-{key})"))
        };
        Some(TlsFiles {
            cert: cli
                .tls_cert
                .clone()
                .or(file.tls.cert.clone())
                .ok_or_else(|| missing("cert"))?,
            key: cli
                .tls_key
                .clone()
                .or(file.tls.key.clone())
                .ok_or_else(|| missing("key"))?,
            client_ca: cli.tls_client_ca.clone().or(file.tls.client_ca.clone()),
        })
    } else {
        None
    };
    let authorization: AuthorizationMode = cli
        .authorization
        .clone()
        .or(file.authorization.clone())
        .as_deref()
        .unwrap_or("always-allow")
        .parse()
        .map_err(ConfigError::Unsupported)?;
    let mut authentication = AuthenticationConfig {
        allow_anonymous: cli
            .allow_anonymous
            .or(file.authentication.allow_anonymous)
            .unwrap_or(true),
        strategy: strategy(&file.authentication.strategy)?,
        ..AuthenticationConfig::default()
    };
    if let Some(seconds) = file.authentication.token_cache_ttl {
        authentication.token_cache_ttl = Duration::from_secs(seconds);
    }
    let etcd_tls = etcd_tls(&cli, file.etcd.as_ref())?;
    let mut endpoints = cli.etcd.clone();
    if endpoints.is_empty() {
        if let Some(etcd) = &file.etcd {
            endpoints.extend(etcd.endpoints.iter().cloned());
            if endpoints.is_empty() {
                if let Some(host) = &etcd.host {
                    let scheme = if etcd_tls.is_some() { "https" } else { "http" };
                    endpoints.push(format!("{scheme}://{host}:{}", etcd.port.unwrap_or(2379)));
                }
            }
        }
    }
    check_etcd_schemes(&endpoints, etcd_tls.is_some())?;
    let etcd_timing = EtcdTiming::from_file(file.etcd.as_ref())?;
    let data_dir = cli
        .data_dir
        .or(file.store.data_dir.clone())
        .unwrap_or_else(|| PathBuf::from("data"));
    let embedded_options = file.store.embedded_options()?;
    let store = match (file.store.backend.as_deref(), cli.etcd.is_empty()) {
        (_, false) => StoreChoice::Etcd(endpoints, etcd_tls),
        (Some("embedded"), true) => StoreChoice::Embedded(data_dir, embedded_options),
        (Some("etcd"), true) | (None, true) if !endpoints.is_empty() => {
            StoreChoice::Etcd(endpoints, etcd_tls)
        }
        (Some("etcd"), true) => {
            return Err(ConfigError::Unsupported(
                "store.backend is etcd but no etcd endpoint is configured".into(),
            ));
        }
        (None, true) => StoreChoice::Embedded(data_dir, embedded_options),
        (Some(other), true) => {
            return Err(ConfigError::Unsupported(format!(
                "store.backend: {other:?} (use embedded or etcd)"
            )));
        }
    };
    if matches!(store, StoreChoice::Etcd(..)) && file.store.has_embedded_settings() {
        return Err(ConfigError::Unsupported(
            "store.history_events, history_mib, history_seconds and cache_mib are settings of \
             the embedded store, not of etcd"
                .into(),
        ));
    }
    let host = cli
        .host
        .or(file.host)
        .unwrap_or_else(|| "127.0.0.1".to_owned());
    let port = cli.port.or(file.port).unwrap_or(8080);
    let address = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let mut api = ApiConfig {
        authentication,
        authorization,
        ..ApiConfig::default()
    };
    if let Some(origin) = file.authentication.cors_origin {
        if !is_cors_origin(&origin) {
            return Err(ConfigError::Unsupported(format!(
                "authentication.cors_origin: {origin:?} is neither \"*\" nor an origin such as \"https://console.example:8443\""
            )));
        }
        api.cors_origin = origin;
    }
    if let Some(seconds) = file.connections.write_timeout {
        api.write_timeout = Duration::try_from_secs_f64(seconds)
            .ok()
            .filter(|_| seconds.is_finite())
            .ok_or_else(|| {
                ConfigError::Unsupported(format!(
                    "connections.write_timeout: {seconds} is not a number of seconds"
                ))
            })?;
    }
    if let Some(kib) = file.connections.send_buffer_kib {
        if kib == 0 {
            return Err(ConfigError::Unsupported(
                "connections.send_buffer_kib: must be at least 1".into(),
            ));
        }
        api.send_buffer_bytes = Some(kib.saturating_mul(1024));
    }
    let log_filter = cli
        .log_level
        .or(file.log.level)
        .map(|level| python_level_to_filter(&level))
        .unwrap_or_else(|| "info".to_owned());
    let sections = &file.controllers;
    let mut controllers = Vec::new();
    // The in-process hooks' URLs name this server (a wildcard address as
    // localhost; `external_endpoint` for workloads elsewhere) and their
    // ca-bundle.pem the CA of the clients' certificates.
    let hook_api = controllers::HookApi {
        endpoint: Some(format!(
            "{}://{}",
            if tls.is_some() { "https" } else { "http" },
            reachable_address(&address)
        )),
        krake_ca: tls.as_ref().and_then(|tls| tls.client_ca.clone()),
    };
    for (kind, section, enabled, off) in [
        (ControllerKind::Gc, &sections.gc, cli.gc_enabled, cli.no_gc),
        (
            ControllerKind::Scheduler,
            &sections.scheduler,
            cli.scheduler_enabled,
            cli.no_scheduler,
        ),
        (
            ControllerKind::KubernetesApplication,
            &sections.kubernetes_application,
            cli.kubernetes_application_enabled,
            cli.no_kubernetes_application,
        ),
        (
            ControllerKind::KubernetesCluster,
            &sections.kubernetes_cluster,
            cli.kubernetes_cluster_enabled,
            cli.no_kubernetes_cluster,
        ),
        (
            ControllerKind::Magnum,
            &sections.magnum,
            cli.magnum_enabled,
            cli.no_magnum,
        ),
        (
            ControllerKind::Infrastructure,
            &sections.infrastructure,
            cli.infrastructure_enabled,
            cli.no_infrastructure,
        ),
    ] {
        let name = format!("controllers.{}", kind.name().replace('-', "_"));
        if !off && !cli.no_controllers && enabled.or(section.enabled).unwrap_or(true) {
            controllers.push(controllers::spec_with_api(kind, section, &name, &hook_api)?);
        }
    }
    let election = election(
        cli.leader_elect,
        &sections.leader_election,
        None,
        None,
        None,
    )?;
    if sections.leader_election.name.is_some() {
        return Err(ConfigError::Unsupported(
            "controllers.leader_election.name: each in-process controller has its own lease (krake-gc, krake-scheduler, krake-kubernetes-application, krake-kubernetes-cluster, krake-magnum, krake-infrastructure)".into(),
        ));
    }
    if let Some(election) = &election {
        for spec in &controllers {
            election.validate(spec.kind())?;
        }
    }
    let console = (!cli.no_console).then(|| console_config(&file.authentication.strategy));
    Ok(Settings {
        address,
        store,
        etcd_timing,
        api,
        tls,
        bootstrap: cli.bootstrap_files,
        controllers,
        election,
        log_filter,
        log_format: cli.log_format,
        console,
    })
}

/// `address` (host:port) as a client reaches it: a wildcard host becomes
/// `localhost`.
fn reachable_address(address: &str) -> String {
    for wildcard in ["0.0.0.0:", "[::]:"] {
        if let Some(port) = address.strip_prefix(wildcard) {
            return format!("localhost:{port}");
        }
    }
    address.to_owned()
}

/// Leader election settings: flags over the file's `leader_election`.
fn election(
    flag: bool,
    section: &config::LeaderElectionSection,
    namespace: Option<String>,
    name: Option<String>,
    duration: Option<f64>,
) -> Result<Option<Election>, ConfigError> {
    if !flag && !section.enabled.unwrap_or(false) {
        return Ok(None);
    }
    let seconds = duration.or(section.lease_duration).unwrap_or(15.0);
    let lease_duration = Duration::try_from_secs_f64(seconds).map_err(|_| {
        ConfigError::Unsupported(format!(
            "leader_election.lease_duration: {seconds} (a number of seconds)"
        ))
    })?;
    Ok(Some(Election {
        namespace: namespace
            .or(section.namespace.clone())
            .unwrap_or_else(|| "system".to_owned()),
        name: name.or(section.name.clone()),
        lease_duration,
    }))
}

/// The settings of `krake-server controller`: the file (Krake's controller
/// keys), overridden by flags.
fn controller_settings(
    args: ControllerArgs,
    log_level: Option<String>,
    log_format: LogFormat,
) -> Result<ControllerRun, ConfigError> {
    let kind = args.controller;
    let (file, file_name): (ControllerFileConfig, String) = match &args.config {
        Some(path) => (
            ControllerFileConfig::load(path)?,
            path.display().to_string(),
        ),
        None => {
            let local = PathBuf::from(kind.file_name());
            let system = PathBuf::from("/etc/krake").join(kind.file_name());
            match [local, system].into_iter().find(|path| path.is_file()) {
                Some(path) => (
                    ControllerFileConfig::load(&path)?,
                    path.display().to_string(),
                ),
                None => (ControllerFileConfig::default(), kind.file_name().to_owned()),
            }
        }
    };
    let mut settings = file.settings.clone();
    settings.worker_count = args.worker_count.or(settings.worker_count);
    settings.reschedule_after = args.reschedule_after.or(settings.reschedule_after);
    settings.stickiness = args.stickiness.or(settings.stickiness);
    let creation = &mut settings.automatic_cluster_creation;
    creation.tosca_file = args.tosca_file.clone().or(creation.tosca_file.take());
    creation.deletion_retention = args.deletion_retention.or(creation.deletion_retention);
    settings.resync = args.resync.or(settings.resync);
    settings.list_timeout = args.list_timeout.or(settings.list_timeout);
    settings.connect_timeout = args.connect_timeout.or(settings.connect_timeout);
    settings.request_timeout = args.request_timeout.or(settings.request_timeout);
    settings.poll_interval = args.poll_interval.or(settings.poll_interval);
    args.hooks.apply(&mut settings.hooks);
    if settings.enabled.is_some() {
        return Err(ConfigError::Unsupported(format!(
            "{file_name}: enabled is a key of krake-server's controllers section, not of a controller's file"
        )));
    }
    let tls_flags = args.tls_client_ca.is_some()
        || args.tls_client_cert.is_some()
        || args.tls_client_key.is_some();
    let tls_enabled = args.tls_enabled.unwrap_or(file.tls.enabled || tls_flags);
    let tls = tls_enabled.then(|| ClientTls {
        client_ca: args.tls_client_ca.clone().or(file.tls.client_ca.clone()),
        client_cert: args
            .tls_client_cert
            .clone()
            .or(file.tls.client_cert.clone()),
        client_key: args.tls_client_key.clone().or(file.tls.client_key.clone()),
    });
    if let Some(tls) = &tls {
        if tls.client_cert.is_some() != tls.client_key.is_some() {
            return Err(ConfigError::Unsupported(
                "tls: client_cert and client_key go together (--tls-client-cert, --tls-client-key)"
                    .into(),
            ));
        }
    }
    let api_list = args
        .api
        .clone()
        .or(file.api_endpoint.clone())
        .unwrap_or_else(|| "http://localhost:8080".to_owned());
    let api = api_endpoints(&api_list, tls.is_some())?;
    // The hooks' URLs name the first replica (or `external_endpoint`).
    let hook_api = controllers::HookApi {
        endpoint: api.first().cloned(),
        krake_ca: tls.as_ref().and_then(|tls| tls.client_ca.clone()),
    };
    let spec = controllers::spec_with_api(kind, &settings, &file_name, &hook_api)?;
    let election = election(
        args.leader_elect,
        &file.leader_election,
        args.lease_namespace.clone(),
        args.lease_name.clone(),
        args.lease_duration,
    )?;
    if let Some(election) = &election {
        election.validate(kind)?;
    }
    let log_filter = log_level
        .or(file.log.level.clone())
        .map(|level| python_level_to_filter(&level))
        .unwrap_or_else(|| "info".to_owned());
    Ok(ControllerRun {
        api,
        tls,
        token: args.token.clone().or(file.token.clone()),
        spec,
        election,
        metrics_address: args
            .metrics_address
            .clone()
            .or(file.metrics_address.clone()),
        log_filter,
        log_format,
    })
}

/// What the web console needs to know of the `oidc` strategy: its issuer
/// and the console's client id (`client_id`, else the audience).
fn console_config(strategies: &config::Strategies) -> console::ConsoleConfig {
    let oidc = &strategies.oidc;
    // Static, Keystone and Keycloak come first (see `strategy`).
    let chosen = oidc.enabled
        && !strategies.static_user.enabled
        && !strategies.keystone.enabled
        && !strategies.keycloak.enabled;
    let client_id = oidc.client_id.clone().or(oidc.audience.clone());
    console::ConsoleConfig {
        oidc: match (chosen, &oidc.issuer, client_id) {
            (true, Some(issuer), Some(client_id)) => Some(console::ConsoleOidc {
                issuer: issuer.clone(),
                client_id,
            }),
            _ => None,
        },
    }
}

/// The one strategy of `authentication.strategy`, chosen as Krake does:
/// the first enabled of static, keystone, keycloak (then oidc).
fn strategy(strategies: &config::Strategies) -> Result<AuthenticationStrategy, ConfigError> {
    if strategies.static_user.enabled {
        let name = strategies.static_user.name.clone();
        return Ok(AuthenticationStrategy::Static {
            name: name.unwrap_or_else(|| "system".to_owned()),
        });
    }
    if strategies.keystone.enabled {
        let endpoint = strategies.keystone.endpoint.clone();
        return Ok(AuthenticationStrategy::Keystone {
            endpoint: endpoint.unwrap_or_else(|| "http://localhost:5000/v3".to_owned()),
        });
    }
    if strategies.keycloak.enabled {
        let keycloak = &strategies.keycloak;
        return Ok(AuthenticationStrategy::Keycloak {
            endpoint: keycloak
                .endpoint
                .clone()
                .unwrap_or_else(|| "http://localhost:9080".to_owned()),
            realm: keycloak.realm.clone().unwrap_or_else(|| "krake".to_owned()),
        });
    }
    let oidc = &strategies.oidc;
    if oidc.enabled {
        let required = |value: &Option<String>, key: &str| {
            value.clone().ok_or_else(|| {
                ConfigError::Unsupported(format!("authentication.strategy.oidc needs {key}"))
            })
        };
        let mut config = OidcConfig::new(
            required(&oidc.issuer, "issuer")?,
            required(&oidc.audience, "audience")?,
        );
        config.jwks_url = oidc.jwks_url.clone();
        if let Some(claim) = &oidc.username_claim {
            config.username_claim = claim.clone();
        }
        return Ok(AuthenticationStrategy::Oidc(config));
    }
    Ok(AuthenticationStrategy::None)
}

fn init_logging(filter: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(filter))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn open_store(
    choice: &StoreChoice,
    timing: EtcdTiming,
) -> Result<Arc<dyn Store>, ServerError> {
    Ok(match choice {
        StoreChoice::Embedded(dir, options) => {
            let path = dir.join("krake.redb");
            tracing::info!(
                path = %path.display(),
                history_events = options.retained_events,
                history_bytes = options.retained_bytes,
                history_age = ?options.retained_age,
                cache_bytes = options.cache_bytes,
                "using the embedded store"
            );
            Arc::new(EmbeddedStore::open_with(path, options.clone())?)
        }
        StoreChoice::Etcd(endpoints, tls) => {
            tracing::info!(?endpoints, tls = tls.is_some(), "using etcd");
            let options = EtcdOptions {
                tls: tls.clone(),
                request_timeout: timing.request_timeout,
                retry_budget: timing.retry_budget,
                ..EtcdOptions::default()
            };
            Arc::new(EtcdStore::connect(endpoints, options).await?)
        }
    })
}

/// Waits for SIGTERM or SIGINT.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
}

/// Loads every manifest of `files` into `store`, logging what happened.
async fn load_manifests(
    store: &Arc<dyn Store>,
    files: &[PathBuf],
    force: bool,
) -> Result<(), ServerError> {
    for path in files {
        let text = std::fs::read_to_string(path).map_err(|source| ServerError::ReadManifest {
            path: path.clone(),
            source,
        })?;
        let loaded = bootstrap::load(store.clone(), &text, force)
            .await
            .map_err(|source| ServerError::Bootstrap {
                path: path.clone(),
                source,
            })?;
        for item in loaded {
            let outcome = match item.outcome {
                Outcome::Created => "created",
                Outcome::Exists => "exists (left alone; --force updates it)",
                Outcome::Updated => "updated",
                Outcome::Unchanged => "unchanged",
            };
            tracing::debug!(file = %path.display(), object = %item.object, "{outcome}");
            println!("{}: {outcome}", item.object);
        }
    }
    Ok(())
}

/// `GET /metrics/controllers`: the in-process controllers' metrics.
fn controller_metrics_route(metrics: &Metrics) -> axum::Router {
    let metrics = metrics.clone();
    axum::Router::new().route(
        "/metrics/controllers",
        axum::routing::get(move || {
            let metrics = metrics.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    metrics.encode(),
                )
            }
        }),
    )
}

/// Serves `app` on `listener` (HTTPS with `tls`) until `stop`.
/// Serves `app` on `listener` (over TLS with `tls`) until `stop`. With the
/// API's `state`, a connection whose writes stay blocked for longer than the
/// API's `write_timeout` (a client that stopped reading, such as a stuck
/// watcher) is cut and counted (`krake_api::slow_clients`).
async fn serve_on(
    listener: tokio::net::TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    app: axum::Router,
    state: Option<ApiState>,
    stop: CancellationToken,
) -> Result<(), ServerError> {
    let app = app.into_make_service_with_connect_info::<PeerInfo>();
    let stopped = async move { stop.cancelled().await };
    match (tls, state) {
        (Some(config), Some(state)) => {
            let listener = CutSlowClients::from_state(TlsListener::new(listener, config), &state);
            axum::serve(listener, app)
                .with_graceful_shutdown(stopped)
                .await
        }
        (Some(config), None) => {
            axum::serve(TlsListener::new(listener, config), app)
                .with_graceful_shutdown(stopped)
                .await
        }
        (None, Some(state)) => {
            axum::serve(CutSlowClients::from_state(listener, &state), app)
                .with_graceful_shutdown(stopped)
                .await
        }
        (None, None) => {
            axum::serve(listener, app)
                .with_graceful_shutdown(stopped)
                .await
        }
    }
    .map_err(ServerError::Serve)
}

/// Binds the API's listener, with the connections' send buffer if one is
/// configured.
async fn bind_public(
    address: &str,
    send_buffer: Option<usize>,
) -> Result<tokio::net::TcpListener, ServerError> {
    let Some(bytes) = send_buffer else {
        return bind(address).await;
    };
    let listen_error = |source| ServerError::Listen {
        address: address.to_owned(),
        source,
    };
    let resolved = tokio::net::lookup_host(address)
        .await
        .map_err(listen_error)?
        .next()
        .ok_or_else(|| {
            listen_error(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "the name resolves to no address",
            ))
        })?;
    krake_api::slow_clients::bind(resolved, Some(bytes)).map_err(listen_error)
}

async fn bind(address: &str) -> Result<tokio::net::TcpListener, ServerError> {
    tokio::net::TcpListener::bind(address)
        .await
        .map_err(|source| ServerError::Listen {
            address: address.to_owned(),
            source,
        })
}

/// Waits for a server task; a panic is an error.
async fn joined(
    what: &str,
    task: tokio::task::JoinHandle<Result<(), ServerError>>,
) -> Result<(), ServerError> {
    task.await
        .map_err(|err| ServerError::Task(format!("{what}: {err}")))?
}

async fn serve(mut settings: Settings) -> Result<(), ServerError> {
    let store = open_store(&settings.store, settings.etcd_timing).await?;
    load_manifests(&store, &settings.bootstrap, false).await?;
    let tls = settings
        .tls
        .as_ref()
        .map(krake_api::tls::server_config)
        .transpose()?;
    let internal =
        (!settings.controllers.is_empty()).then(|| InternalUser::generate(INTERNAL_USER));
    settings.api.authentication.internal_user = internal.clone();
    let state = ApiState::new(store, settings.api);
    if let Some(rbac) = state.rbac() {
        if !rbac.wait_loaded(Duration::from_secs(10)).await {
            tracing::warn!("RBAC roles are not loaded yet; requests get 503 until they are");
        }
    }
    let metrics = Metrics::new();
    let mut app = router(state.clone()).merge(controller_metrics_route(&metrics));
    if let Some(console) = settings.console.clone() {
        app = app.merge(console::router(console));
    }
    let listener = bind_public(&settings.address, state.config().send_buffer_bytes).await?;
    let local: Option<SocketAddr> = listener.local_addr().ok();
    let api_stop = CancellationToken::new();
    let controllers_stop = CancellationToken::new();

    let mut loopback = None;
    let mut controllers = None;
    if let Some(internal) = &internal {
        // The controllers' own way in: plain HTTP on loopback, the same
        // router; only the token makes a request the internal user's.
        let inner = bind("127.0.0.1:0").await?;
        let inner_address = inner.local_addr().map_err(|source| ServerError::Listen {
            address: "127.0.0.1:0".to_owned(),
            source,
        })?;
        tracing::info!(address = %inner_address, "controllers reach the API on a loopback listener");
        loopback = Some(tokio::spawn(serve_on(
            inner,
            None,
            app.clone(),
            Some(state.clone()),
            api_stop.clone(),
        )));
        let client = Client::builder(format!("http://{inner_address}"))
            .bearer_token(internal.token())
            .build()
            .map_err(|err| ServerError::Client(error_chain(&err)))?;
        let prepared = Controllers::new(
            client,
            std::mem::take(&mut settings.controllers),
            settings.election.as_ref(),
            metrics.clone(),
        )?;
        controllers = Some(tokio::spawn(prepared.run(controllers_stop.clone())));
    }
    match &tls {
        Some(_) => tracing::info!(address = ?local, "krake-server listening (HTTPS)"),
        None => tracing::info!(address = ?local, "krake-server listening"),
    }
    let mut public = tokio::spawn(serve_on(
        listener,
        tls,
        app,
        Some(state.clone()),
        api_stop.clone(),
    ));
    let early = tokio::select! {
        () = shutdown_signal() => None,
        result = &mut public => Some(result),
    };
    tracing::info!(
        "shutting down: controllers first, then the API (no new connections, ending watch streams)"
    );
    controllers_stop.cancel();
    if let Some(controllers) = controllers {
        if let Err(err) = controllers.await {
            tracing::error!(error = %err, "the controllers failed");
        }
    }
    state.shutdown();
    api_stop.cancel();
    if let Some(loopback) = loopback {
        joined("the loopback listener", loopback).await?;
    }
    match early {
        Some(result) => result
            .map_err(|err| ServerError::Task(format!("the listener: {err}")))
            .and_then(|served| served)?,
        None => joined("the listener", public).await?,
    }
    tracing::info!("krake-server stopped");
    Ok(())
}

/// `krake-server controller`: one controller against a remote API.
async fn run_controller(run: ControllerRun) -> Result<(), ServerError> {
    let kind = run.spec.kind();
    let first = run.api.first().cloned().unwrap_or_default();
    let mut builder = Client::builder(first).endpoints(run.api.clone());
    if let Some(tls) = &run.tls {
        let options = TlsOptions::from_files(
            tls.client_ca.as_deref(),
            tls.client_cert.as_deref(),
            tls.client_key.as_deref(),
        )
        .map_err(|err| ServerError::Client(error_chain(&err)))?;
        builder = builder.tls(options);
    }
    if let Some(token) = &run.token {
        builder = builder.bearer_token(token);
    }
    let client = builder
        .build()
        .map_err(|err| ServerError::Client(error_chain(&err)))?;
    let metrics = Metrics::new();
    let stop = CancellationToken::new();
    let metrics_server = match &run.metrics_address {
        Some(address) => {
            let listener = bind(address).await?;
            tracing::info!(address = ?listener.local_addr().ok(), "serving the controller's metrics at /metrics");
            Some(tokio::spawn(serve_on(
                listener,
                None,
                metrics.router(),
                None,
                stop.clone(),
            )))
        }
        None => None,
    };
    let signal = tokio::spawn({
        let stop = stop.clone();
        async move {
            shutdown_signal().await;
            stop.cancel();
        }
    });
    let result = async {
        if !connect(&client, &run.api.join(","), kind, &stop).await? {
            return Ok(());
        }
        let prepared = Controllers::new(client, vec![run.spec], run.election.as_ref(), metrics)?;
        let controllers_stop = CancellationToken::new();
        let controllers = tokio::spawn(prepared.run(controllers_stop.clone()));
        stop.cancelled().await;
        tracing::info!(controller = kind.name(), "shutting down");
        controllers_stop.cancel();
        controllers
            .await
            .map_err(|err| ServerError::Task(format!("the controller: {err}")))
    }
    .await;
    stop.cancel();
    signal.abort();
    if let Some(server) = metrics_server {
        joined("the metrics listener", server).await?;
    }
    result?;
    tracing::info!(controller = kind.name(), "stopped");
    Ok(())
}

/// Asks the API who this controller is until it answers; `false` if
/// stopped first. Refused credentials (401) end the controller: trying
/// again would not help.
async fn connect(
    client: &Client,
    url: &str,
    kind: ControllerKind,
    stop: &CancellationToken,
) -> Result<bool, ServerError> {
    let mut delay = Duration::from_millis(500);
    loop {
        let attempt = tokio::select! {
            () = stop.cancelled() => return Ok(false),
            me = client.me() => me,
        };
        match attempt {
            Ok(me) => {
                tracing::info!(controller = kind.name(), api = url, user = %me.user, "connected to the API");
                return Ok(true);
            }
            Err(krake_client::Error::Api(problem)) if problem.status == 401 => {
                return Err(ServerError::Refused {
                    url: url.to_owned(),
                    problem: problem.to_string(),
                });
            }
            Err(err) => {
                tracing::warn!(
                    controller = kind.name(),
                    "cannot reach the API at {url}: {}; retrying in {delay:?}",
                    error_chain(&err)
                );
            }
        }
        tokio::select! {
            () = stop.cancelled() => return Ok(false),
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(10));
    }
}

async fn run(settings: Settings, command: Option<Command>) -> Result<(), ServerError> {
    match command {
        None => serve(settings).await,
        // Handled by `main` before the server's settings are read.
        Some(Command::Controller(_)) => Ok(()),
        Some(Command::Bootstrap { files, force }) => {
            let store = open_store(&settings.store, settings.etcd_timing).await?;
            load_manifests(&store, &files, force).await
        }
    }
}

/// Runs `future` on a fresh runtime; errors in one line.
fn block_on(future: impl std::future::Future<Output = Result<(), ServerError>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("krake-server: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(future) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("krake-server: {}", config::one_line(&err.to_string()));
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let mut cli = Cli::parse();
    let command = cli.command.take();
    if let Some(Command::Controller(args)) = command {
        let run = match controller_settings(*args, cli.log_level.take(), cli.log_format) {
            Ok(run) => run,
            Err(err) => {
                eprintln!("krake-server: {err}");
                return ExitCode::FAILURE;
            }
        };
        init_logging(&run.log_filter, run.log_format);
        return block_on(run_controller(run));
    }
    let settings = match settings(cli) {
        Ok(settings) => settings,
        Err(err) => {
            eprintln!("krake-server: {err}");
            return ExitCode::FAILURE;
        }
    };
    init_logging(&settings.log_filter, settings.log_format);
    block_on(run(settings, command))
}

/// Whether `origin` is `*` or a browser origin: `http(s)://host[:port]`,
/// nothing after it (browsers send exactly that in `Origin`, so anything else
/// would never match).
fn is_cors_origin(origin: &str) -> bool {
    if origin == "*" {
        return true;
    }
    let Some(authority) = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
    else {
        return false;
    };
    !authority.is_empty()
        && authority
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-.:[]_".contains(c))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn parse(args: &[&str]) -> Result<Settings, ConfigError> {
        let mut argv = vec!["krake-server"];
        argv.extend_from_slice(args);
        settings(Cli::parse_from(argv))
    }

    #[test]
    fn the_embedded_store_history_and_cache_are_configurable() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("store.yaml");
        std::fs::write(
            &file,
            "store: {history_events: 500, history_mib: 4, history_seconds: 30, cache_mib: 2}\n",
        )
        .unwrap();
        let s = parse(&["--config", file.to_str().unwrap()]).unwrap();
        let expected = EmbeddedOptions {
            retained_events: 500,
            retained_bytes: 4 << 20,
            retained_age: std::time::Duration::from_secs(30),
            cache_bytes: 2 << 20,
            ..EmbeddedOptions::default()
        };
        assert_eq!(
            s.store,
            StoreChoice::Embedded(PathBuf::from("data"), expected)
        );

        for (yaml, key) in [
            ("store: {history_events: 0}\n", "history_events"),
            ("store: {history_mib: -1}\n", "history_mib"),
            ("store: {history_seconds: 0}\n", "history_seconds"),
            ("store: {cache_mib: .nan}\n", "cache_mib"),
        ] {
            std::fs::write(&file, yaml).unwrap();
            let err = parse(&["--config", file.to_str().unwrap()]).unwrap_err();
            assert!(err.to_string().contains(key), "{yaml}: {err}");
        }
        std::fs::write(&file, "store: {history_mib: 4}\n").unwrap();
        let err = parse(&[
            "--config",
            file.to_str().unwrap(),
            "--etcd",
            "http://127.0.0.1:2379",
        ])
        .unwrap_err();
        assert!(err.to_string().contains("embedded store"), "{err}");
    }

    #[test]
    fn cors_origin_is_star_or_an_origin() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("api.yaml");
        for (origin, accepted) in [
            ("*", true),
            ("https://console.example:8443", true),
            ("http://localhost:3000", true),
            ("http://[::1]:8080", true),
            ("https://console.example/", false),
            ("console.example", false),
            ("https://a.example, https://b.example", false),
            ("", false),
        ] {
            std::fs::write(
                &file,
                format!("authentication:\n  cors_origin: '{origin}'\n"),
            )
            .unwrap();
            match parse(&["--config", file.to_str().unwrap()]) {
                Ok(settings) => {
                    assert!(accepted, "{origin} was accepted");
                    assert_eq!(settings.api.cors_origin, origin);
                }
                Err(err) => {
                    assert!(!accepted, "{origin}: {err}");
                    assert!(err.to_string().contains("cors_origin"), "{err}");
                }
            }
        }
    }

    #[test]
    fn defaults_are_local_and_embedded() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.yaml");
        std::fs::write(&empty, "").unwrap();
        let s = parse(&["--config", empty.to_str().unwrap()]).unwrap();
        assert_eq!(s.address, "127.0.0.1:8080");
        assert_eq!(
            s.store,
            StoreChoice::Embedded(PathBuf::from("data"), EmbeddedOptions::default())
        );
        assert!(s.api.authentication.allow_anonymous);
    }

    #[test]
    fn flags_override_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("api.yaml");
        std::fs::write(
            &file,
            "host: 0.0.0.0\nport: 9000\netcd: {host: 10.1.1.1, port: 2379}\n",
        )
        .unwrap();
        let path = file.to_str().unwrap();
        let s = parse(&["--config", path]).unwrap();
        assert_eq!(s.address, "0.0.0.0:9000");
        assert_eq!(
            s.store,
            StoreChoice::Etcd(vec!["http://10.1.1.1:2379".into()], None)
        );
        let s = parse(&[
            "--config",
            path,
            "--port",
            "7000",
            "--etcd",
            "http://a:1",
            "--etcd",
            "http://b:2",
        ])
        .unwrap();
        assert_eq!(s.address, "0.0.0.0:7000");
        assert_eq!(
            s.store,
            StoreChoice::Etcd(vec!["http://a:1".into(), "http://b:2".into()], None)
        );
    }

    #[test]
    fn etcd_timing_comes_from_the_file_and_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("api.yaml");
        let parse_etcd = |section: &str| {
            std::fs::write(
                &file,
                format!("etcd: {{endpoints: [\"http://a:1\"], {section}}}\n"),
            )
            .unwrap();
            parse(&["--config", file.to_str().unwrap()])
        };
        let s = parse_etcd("request_timeout: 2, retry_budget: 1.5").unwrap();
        assert_eq!(s.etcd_timing.request_timeout, Duration::from_secs(2));
        assert_eq!(s.etcd_timing.retry_budget, Duration::from_millis(1_500));
        // Without a budget: the default, within the timeout.
        let s = parse_etcd("request_timeout: 1").unwrap();
        assert_eq!(s.etcd_timing.retry_budget, Duration::from_secs(1));
        let s = parse_etcd("port: 2379").unwrap();
        assert_eq!(
            s.etcd_timing.request_timeout,
            EtcdOptions::default().request_timeout
        );
        for (section, named) in [
            ("request_timeout: 2, retry_budget: 3", "longer than"),
            ("request_timeout: -1", "etcd.request_timeout"),
            ("retry_budget: 0", "etcd.retry_budget"),
        ] {
            let err = parse_etcd(section).unwrap_err().to_string();
            assert!(err.contains(named), "{section}: {err}");
        }
    }

    #[test]
    fn etcd_tls_settings_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let pem = |name: &str, label: &str| {
            let path = dir.path().join(name);
            std::fs::write(
                &path,
                format!("-----BEGIN {label}-----\nAA==\n-----END {label}-----\n"),
            )
            .unwrap();
            path.to_str().unwrap().to_owned()
        };
        let ca = pem("ca.pem", "CERTIFICATE");
        let cert = pem("cert.pem", "CERTIFICATE");
        let key = pem("key.pem", "PRIVATE KEY");
        let file = dir.path().join("api.yaml");
        std::fs::write(
            &file,
            format!(
                "etcd:\n  endpoints: [https://e1:2379, https://e2:2379]\n  ca_cert: {ca}\n  \
                 client_cert: {cert}\n  client_key: {key}\n"
            ),
        )
        .unwrap();
        let s = parse(&["--config", file.to_str().unwrap()]).unwrap();
        let StoreChoice::Etcd(endpoints, Some(tls)) = &s.store else {
            panic!("{:?}", s.store);
        };
        assert_eq!(endpoints, &["https://e1:2379", "https://e2:2379"]);
        assert!(tls.has_client_certificate());

        // Krake's host and port become an https:// endpoint with a CA.
        std::fs::write(
            &file,
            format!("etcd: {{host: e1, port: 2379, ca_cert: {ca}}}\n"),
        )
        .unwrap();
        let s = parse(&["--config", file.to_str().unwrap()]).unwrap();
        let StoreChoice::Etcd(endpoints, Some(tls)) = &s.store else {
            panic!("{:?}", s.store);
        };
        assert_eq!(endpoints, &["https://e1:2379"]);
        assert!(!tls.has_client_certificate());

        let s = parse(&["--etcd", "https://a:1", "--etcd-ca", &ca]).unwrap();
        assert!(matches!(s.store, StoreChoice::Etcd(_, Some(_))));
        for (args, expected) in [
            (
                vec!["--etcd", "http://a:1", "--etcd-ca", &ca],
                "use https://",
            ),
            (vec!["--etcd", "https://a:1"], "no CA is configured"),
            (
                vec![
                    "--etcd",
                    "https://a:1",
                    "--etcd-ca",
                    &ca,
                    "--etcd-cert",
                    &cert,
                ],
                "needs its key",
            ),
            (
                vec!["--etcd", "http://a:1", "--etcd-key", &key],
                "needs the CA",
            ),
            (
                vec!["--etcd", "https://a:1", "--etcd-ca", "/no/such.pem"],
                "cannot read",
            ),
            (
                vec![
                    "--etcd",
                    "https://a:1",
                    "--etcd-ca",
                    &ca,
                    "--etcd-cert",
                    &key,
                    "--etcd-key",
                    &key,
                ],
                "is not PEM",
            ),
        ] {
            let error = parse(&args).unwrap_err().to_string();
            assert!(error.contains(expected), "{args:?}: {error}");
            assert!(!error.contains('\n'), "{error}");
        }
    }

    #[test]
    fn the_ha_example_configuration_is_valid() {
        let path = format!("{}/../config/ha/api.yaml", env!("CARGO_MANIFEST_DIR"));
        let file = FileConfig::load(std::path::Path::new(&path)).unwrap();
        let etcd = file.etcd.unwrap();
        assert_eq!(etcd.endpoints.len(), 3);
        assert!(etcd.endpoints.iter().all(|e| e.starts_with("https://")));
        assert!(etcd.ca_cert.is_some() && etcd.client_cert.is_some());
        assert!(etcd.client_key.is_some());
        // The certificates are not here: the one-line error names the CA.
        let error = parse(&["--config", &path]).unwrap_err().to_string();
        assert!(error.contains("etcd-ca.pem"), "{error}");
    }

    #[test]
    fn controllers_run_unless_switched_off() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("api.yaml");
        std::fs::write(&file, "controllers: {scheduler: {worker_count: 2}}\n").unwrap();
        let path = file.to_str().unwrap();
        let kinds = |s: &Settings| s.controllers.iter().map(|c| c.kind()).collect::<Vec<_>>();
        use ControllerKind::{
            Gc, Infrastructure, KubernetesApplication, KubernetesCluster, Magnum, Scheduler,
        };
        let s = parse(&["--config", path]).unwrap();
        assert_eq!(
            kinds(&s),
            [
                Gc,
                Scheduler,
                KubernetesApplication,
                KubernetesCluster,
                Magnum,
                Infrastructure
            ]
        );
        assert!(s.election.is_none());
        let s = parse(&[
            "--config",
            path,
            "--no-gc",
            "--no-magnum",
            "--no-infrastructure",
        ])
        .unwrap();
        assert_eq!(
            kinds(&s),
            [Scheduler, KubernetesApplication, KubernetesCluster]
        );
        let s = parse(&[
            "--config",
            path,
            "--scheduler-enabled",
            "false",
            "--kubernetes-cluster-enabled",
            "false",
            "--magnum-enabled",
            "false",
            "--infrastructure-enabled",
            "false",
            "--leader-elect",
        ])
        .unwrap();
        assert_eq!(kinds(&s), [Gc, KubernetesApplication]);
        let election = s.election.unwrap();
        assert_eq!(election.namespace, "system");
        assert_eq!(
            election.lease(KubernetesApplication).name,
            "krake-kubernetes-application"
        );
        let s = parse(&["--config", path, "--no-kubernetes-application"]).unwrap();
        assert_eq!(
            kinds(&s),
            [Gc, Scheduler, KubernetesCluster, Magnum, Infrastructure]
        );
        let s = parse(&[
            "--config",
            path,
            "--no-kubernetes-cluster",
            "--no-magnum",
            "--no-infrastructure",
        ])
        .unwrap();
        assert_eq!(kinds(&s), [Gc, Scheduler, KubernetesApplication]);
        std::fs::write(&file, "controllers: {magnum: {enabled: false}}\n").unwrap();
        let s = parse(&["--config", path]).unwrap();
        assert!(!kinds(&s).contains(&Magnum));
        let s = parse(&["--config", path, "--magnum-enabled", "true"]).unwrap();
        assert_eq!(kinds(&s).last(), Some(&Infrastructure));
        std::fs::write(&file, "controllers: {infrastructure: {enabled: false}}\n").unwrap();
        let s = parse(&["--config", path]).unwrap();
        assert!(!kinds(&s).contains(&Infrastructure));
        let s = parse(&["--config", path, "--infrastructure-enabled", "true"]).unwrap();
        assert_eq!(kinds(&s).last(), Some(&Infrastructure));
        let s = parse(&["--config", path, "--no-infrastructure"]).unwrap();
        assert_eq!(kinds(&s).last(), Some(&Magnum));
        let s = parse(&[
            "--config",
            path,
            "--no-gc",
            "--no-scheduler",
            "--no-kubernetes-application",
            "--no-kubernetes-cluster",
            "--no-magnum",
            "--no-infrastructure",
        ])
        .unwrap();
        assert!(s.controllers.is_empty());
        std::fs::write(&file, "controllers: {magnum: {enabled: true}}\n").unwrap();
        let s = parse(&["--config", path, "--no-controllers", "--gc-enabled", "true"]).unwrap();
        assert!(s.controllers.is_empty(), "{:?}", kinds(&s));
    }

    #[test]
    fn the_kubernetes_controllers_follow_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("api.yaml");
        std::fs::write(
            &file,
            "controllers:\n  kubernetes_application: {worker_count: 7, resync: 30}\n  \
             kubernetes_cluster: {enabled: false}\n",
        )
        .unwrap();
        let path = file.to_str().unwrap();
        let s = parse(&[
            "--config",
            path,
            "--no-gc",
            "--no-scheduler",
            "--no-magnum",
            "--no-infrastructure",
        ])
        .unwrap();
        let [ControllerSpec::KubernetesApplication(config)] = s.controllers.as_slice() else {
            panic!("not only the application controller: {:?}", s.controllers);
        };
        assert_eq!(config.workers, 7);
        assert_eq!(config.resync, Duration::from_secs(30));
        let s = parse(&[
            "--config",
            path,
            "--kubernetes-cluster-enabled",
            "true",
            "--no-kubernetes-application",
            "--no-magnum",
            "--no-infrastructure",
        ])
        .unwrap();
        assert_eq!(
            s.controllers.last().map(ControllerSpec::kind),
            Some(ControllerKind::KubernetesCluster)
        );
        std::fs::write(
            &file,
            "controllers:\n  kubernetes_cluster: {reschedule_after: 5}\n",
        )
        .unwrap();
        let err = parse(&["--config", path]).unwrap_err().to_string();
        assert!(
            err.contains(
                "controllers.kubernetes_cluster: reschedule_after is a setting of the scheduler"
            ),
            "{err}"
        );
    }

    #[test]
    fn controller_flags_override_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("scheduler.yaml");
        std::fs::write(
            &file,
            "api_endpoint: http://api:8080\nworker_count: 4\nreschedule_after: 30\n\
             tls: {enabled: true, client_ca: ca.pem, client_cert: s.pem, client_key: s-key.pem}\n\
             leader_election: {enabled: true}\n",
        )
        .unwrap();
        let parse = |args: &[&str]| {
            let mut argv = vec![
                "krake-server",
                "controller",
                "scheduler",
                "-c",
                file.to_str().unwrap(),
            ];
            argv.extend_from_slice(args);
            let Some(Command::Controller(args)) = Cli::parse_from(argv).command else {
                panic!("not the controller command");
            };
            controller_settings(*args, None, LogFormat::Text)
        };
        let run = parse(&[]).unwrap();
        assert_eq!(
            run.api,
            ["https://api:8080"],
            "TLS means https, as in Krake"
        );
        let ControllerSpec::Scheduler(config) = &run.spec else {
            panic!("not the scheduler");
        };
        assert_eq!(config.workers, 4);
        assert_eq!(config.reschedule_after, Duration::from_secs(30));
        let election = run.election.unwrap();
        assert_eq!(
            election.lease(ControllerKind::Scheduler).name,
            "krake-scheduler"
        );
        let run = parse(&[
            "--api",
            "https://other:1",
            "--worker-count",
            "9",
            "--tls-client-cert",
            "x.pem",
        ])
        .unwrap();
        assert_eq!(run.api, ["https://other:1"]);
        assert_eq!(run.tls.unwrap().client_cert, Some(PathBuf::from("x.pem")));
        let ControllerSpec::Scheduler(config) = &run.spec else {
            panic!("not the scheduler");
        };
        assert_eq!(config.workers, 9);
        let run = parse(&["--tls-enabled", "false", "--api", "http://plain:1"]).unwrap();
        assert!(run.tls.is_none());
        assert_eq!(run.api, ["http://plain:1"]);
        let run = parse(&["--api", "http://a:1, http://b:2"]).unwrap();
        assert_eq!(
            run.api,
            ["https://a:1", "https://b:2"],
            "replicas, each https"
        );
        let err = parse(&["--api", " , "]).unwrap_err();
        assert!(err.to_string().contains("names no URL"), "{err}");
    }

    /// Flags naming fresh intermediate CAs of both hooks in `dir` (the
    /// files name paths of a deployment).
    fn hook_ca_flags(dir: &Path) -> Vec<String> {
        let mut flags = Vec::new();
        for hook in ["complete", "shutdown"] {
            let (cert, key) = controllers::write_intermediate(dir, hook);
            flags.push(format!(
                "--hooks-{hook}-intermediate-src={}",
                cert.display()
            ));
            flags.push(format!(
                "--hooks-{hook}-intermediate-key-src={}",
                key.display()
            ));
        }
        flags
    }

    #[test]
    fn the_example_controller_files_are_valid() {
        let dir = tempfile::tempdir().unwrap();
        let ca_flags = hook_ca_flags(dir.path());
        for (kind, file) in [
            ("gc", "garbage_collector.yaml"),
            ("scheduler", "scheduler.yaml"),
            ("kubernetes-application", "kubernetes_application.yaml"),
            ("kubernetes-cluster", "kubernetes_cluster.yaml"),
            ("magnum", "magnum.yaml"),
            ("infrastructure", "infrastructure.yaml"),
        ] {
            let path = format!("{}/../config/{file}", env!("CARGO_MANIFEST_DIR"));
            let mut argv = vec!["krake-server", "controller", kind, "-c", &path];
            if kind == "kubernetes-application" {
                argv.extend(ca_flags.iter().map(String::as_str));
            }
            let cli = Cli::parse_from(argv);
            let Some(Command::Controller(args)) = cli.command else {
                panic!("not the controller command");
            };
            let run = controller_settings(*args, None, LogFormat::Text).unwrap();
            assert_eq!(run.api, ["http://localhost:8080"]);
            assert_eq!(run.spec.kind().name(), kind);
            assert!(run.election.is_none());
        }
    }

    /// Krake's `kubernetes_application.yaml.template` as
    /// `krake_generate_config` renders it (its defaults, no complete
    /// `external_endpoint`, a shutdown one), Python's logging keys and all.
    const KRAKE_KUBERNETES_APPLICATION: &str = r#"## Configuration file for the Krake Kubernetes Application Controller

api_endpoint: http://localhost:8080
worker_count: 5
debounce: 1.0
hooks:
  complete:
    hook_user: system:complete-hook
    intermediate_src: tmp/pki/system:complete-signing.pem
    intermediate_key_src: tmp/pki/system:complete-signing-key.pem
    cert_dest: /etc/krake_complete_certs
    env_token: KRAKE_COMPLETE_TOKEN
    env_url: KRAKE_COMPLETE_URL
    
  shutdown:
    hook_user: system:shutdown-hook
    intermediate_src: tmp/pki/system:shutdown-signing.pem
    intermediate_key_src: tmp/pki/system:shutdown-signing-key.pem
    cert_dest: /etc/krake_shutdown_certs
    env_token: KRAKE_SHUTDOWN_TOKEN
    env_url: KRAKE_SHUTDOWN_URL
    external_endpoint: https://krake.example:8443
migration:
  retry:
    max: 10
    timeout: 60


tls:
  enabled: false
  client_ca: tmp/pki/ca.pem
  client_cert: tmp/pki/system:kubernetes-application.pem
  client_key: tmp/pki/system:kubernetes-application-key.pem


log:
  version: 1
  level: INFO
  disable_existing_loggers: false
  formatters:
    krake:
      format: "%(asctime)s - [%(name)s] - [%(levelname)-5s] - %(message)s"
  handlers:
    console:
      class: logging.StreamHandler
      formatter: krake
      stream: ext://sys.stdout
    file:
      class: logging.handlers.WatchedFileHandler
      formatter: krake
      filename: ./logs/krake-app.log
    rotating:
      class: logging.handlers.RotatingFileHandler
      formatter: krake
      filename: ./logs/krake-app.rotating.log
      mode: 'a'
      maxBytes: 2000000
      backupCount: 3
  root: # Configuring the default (root) logger is highly recommended
    handlers: [console]
  loggers:
    krake:
      handlers: [console]
      propagate: no
"#;

    /// Krake's `kubernetes_cluster.yaml` of a version with
    /// `poll_interval`, with TLS and the `tls.external_endpoint` of its
    /// template's comment.
    const KRAKE_KUBERNETES_CLUSTER: &str = r#"## Configuration file for the Krake Kubernetes Cluster Controller

api_endpoint: http://krake-api:8080
worker_count: 3
debounce: 1.0
poll_interval: 2

tls:
  enabled: true
  client_ca: tmp/pki/ca.pem
  client_cert: tmp/pki/system:kubernetes-cluster.pem
  client_key: tmp/pki/system:kubernetes-cluster-key.pem
  external_endpoint: https://krake.host:1234


log:
  version: 1
  level: DEBUG
  disable_existing_loggers: false
  handlers:
    console:
      class: logging.StreamHandler
      stream: ext://sys.stdout
  root:
    handlers: [console]
"#;

    fn controller_run(kind: &str, file: &Path) -> Result<ControllerRun, ConfigError> {
        controller_run_with(kind, file, &[])
    }

    fn controller_run_with(
        kind: &str,
        file: &Path,
        flags: &[String],
    ) -> Result<ControllerRun, ConfigError> {
        let mut argv = vec![
            "krake-server",
            "controller",
            kind,
            "-c",
            file.to_str().unwrap(),
        ];
        argv.extend(flags.iter().map(String::as_str));
        let cli = Cli::parse_from(argv);
        let Some(Command::Controller(args)) = cli.command else {
            panic!("not the controller command");
        };
        controller_settings(*args, None, LogFormat::Text)
    }

    #[test]
    fn krakes_kubernetes_controller_files_load() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("kubernetes_application.yaml");
        std::fs::write(&file, KRAKE_KUBERNETES_APPLICATION).unwrap();
        // The file's intermediate CAs are not there.
        let err = controller_run("kubernetes-application", &file)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("hooks.complete: cannot read tmp/pki/system:complete-signing.pem"),
            "{err}"
        );
        let mut flags = hook_ca_flags(dir.path());
        flags.extend([
            "--hooks-complete-env-url=MY_URL".to_owned(),
            "--hooks-shutdown-failure-strategy=give_up".to_owned(),
            "--hooks-shutdown-timeout=7".to_owned(),
        ]);
        let run = controller_run_with("kubernetes-application", &file, &flags).unwrap();
        assert_eq!(run.api, ["http://localhost:8080"]);
        assert!(run.tls.is_none());
        assert_eq!(run.log_filter, "info");
        let ControllerSpec::KubernetesApplication(config) = &run.spec else {
            panic!("not the application controller");
        };
        assert_eq!(config.workers, 5);
        // Krake's keys, the flags over them.
        let hooks = &config.hooks;
        assert_eq!(hooks.api_endpoint, "http://localhost:8080");
        assert_eq!(hooks.complete.env_url, "MY_URL");
        assert_eq!(hooks.complete.env_token, "KRAKE_COMPLETE_TOKEN");
        assert_eq!(hooks.complete.cert_dest, "/etc/krake_complete_certs");
        assert!(hooks.complete.ca.is_some() && hooks.shutdown.ca.is_some());
        assert_eq!(
            hooks.shutdown.external_endpoint.as_deref(),
            Some("https://krake.example:8443")
        );
        assert_eq!(hooks.shutdown_settings.timeout, Duration::from_secs(7));
        assert_eq!(
            hooks.shutdown_settings.failure_strategy,
            krake_controller::kubernetes::hooks::shutdown::FailureStrategy::GiveUp
        );

        let file = dir.path().join("kubernetes_cluster.yaml");
        std::fs::write(&file, KRAKE_KUBERNETES_CLUSTER).unwrap();
        let run = controller_run("kubernetes-cluster", &file).unwrap();
        assert_eq!(run.api, ["https://krake-api:8080"], "TLS means https");
        let tls = run.tls.unwrap();
        assert_eq!(
            tls.client_cert,
            Some(PathBuf::from("tmp/pki/system:kubernetes-cluster.pem"))
        );
        assert_eq!(run.log_filter, "debug");
        let ControllerSpec::KubernetesCluster(config) = &run.spec else {
            panic!("not the cluster controller");
        };
        assert_eq!(config.workers, 3);

        // Each file belongs to its controller.
        let err = controller_run(
            "kubernetes-cluster",
            &dir.path().join("kubernetes_application.yaml"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("kubernetes_application.yaml: hooks is a setting of the Kubernetes application controller, not of the Kubernetes cluster controller"),
            "{err}"
        );
    }

    #[test]
    fn kubernetes_controller_flags_override_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("kubernetes_application.yaml");
        std::fs::write(&file, "worker_count: 2\nresync: 10\nconnect_timeout: 1\n").unwrap();
        let parse = |args: &[&str]| {
            let mut argv = vec![
                "krake-server",
                "controller",
                "kubernetes-application",
                "-c",
                file.to_str().unwrap(),
            ];
            argv.extend_from_slice(args);
            let Some(Command::Controller(args)) = Cli::parse_from(argv).command else {
                panic!("not the controller command");
            };
            controller_settings(*args, None, LogFormat::Text)
        };
        let run = parse(&[
            "--resync",
            "5",
            "--list-timeout",
            "3",
            "--request-timeout",
            "4",
        ])
        .unwrap();
        let ControllerSpec::KubernetesApplication(config) = &run.spec else {
            panic!("not the application controller");
        };
        assert_eq!(config.workers, 2);
        assert_eq!(config.resync, Duration::from_secs(5));
        assert_eq!(config.list_timeout, Duration::from_secs(3));
        assert_eq!(config.timeouts.connect, Duration::from_secs(1));
        assert_eq!(config.timeouts.request, Duration::from_secs(4));
        let err = parse(&["--stickiness", "0.3"]).unwrap_err().to_string();
        assert!(
            err.contains("stickiness is a setting of the scheduler, not of the Kubernetes application controller"),
            "{err}"
        );
    }

    #[test]
    fn unsupported_settings_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("api.yaml");
        std::fs::write(&file, "authorization: sometimes\n").unwrap();
        let err = parse(&["--config", file.to_str().unwrap()]).unwrap_err();
        assert!(
            err.to_string().contains("authorization: \"sometimes\""),
            "{err}"
        );
        let err = parse(&["--config", "/nonexistent/api.yaml"]).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("cannot read the configuration file"),
            "{err}"
        );
    }
}

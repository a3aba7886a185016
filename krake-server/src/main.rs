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

mod config;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use krake_api::bootstrap::{self, BootstrapError, Outcome};
use krake_api::store::Store;
use krake_api::store::embedded::EmbeddedStore;
use krake_api::store::etcd::{EtcdOptions, EtcdStore};
use krake_api::tls::{PeerInfo, TlsError, TlsFiles, TlsListener};
use krake_api::{
    ApiConfig, ApiState, AuthenticationConfig, AuthenticationStrategy, AuthorizationMode,
    OidcConfig, router,
};

use crate::config::{ConfigError, FileConfig};

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
    /// Log level: DEBUG, INFO, WARNING, ERROR, or a tracing filter.
    #[arg(long, env = "KRAKE_LOG_LEVEL")]
    log_level: Option<String>,
    /// Log format.
    #[arg(long, env = "KRAKE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
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
}

/// Where the objects are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
enum StoreChoice {
    Embedded(PathBuf),
    Etcd(Vec<String>),
}

/// Everything the server needs, after merging file, environment and flags.
#[derive(Debug)]
struct Settings {
    address: String,
    store: StoreChoice,
    api: ApiConfig,
    tls: Option<TlsFiles>,
    bootstrap: Vec<PathBuf>,
    log_filter: String,
    log_format: LogFormat,
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
    let mut endpoints = cli.etcd.clone();
    if endpoints.is_empty() {
        if let Some(etcd) = &file.etcd {
            endpoints.extend(etcd.endpoints.iter().cloned());
            if endpoints.is_empty() {
                if let Some(host) = &etcd.host {
                    endpoints.push(format!("http://{host}:{}", etcd.port.unwrap_or(2379)));
                }
            }
        }
    }
    let data_dir = cli
        .data_dir
        .or(file.store.data_dir)
        .unwrap_or_else(|| PathBuf::from("data"));
    let store = match (file.store.backend.as_deref(), cli.etcd.is_empty()) {
        (_, false) => StoreChoice::Etcd(endpoints),
        (Some("embedded"), true) => StoreChoice::Embedded(data_dir),
        (Some("etcd"), true) | (None, true) if !endpoints.is_empty() => {
            StoreChoice::Etcd(endpoints)
        }
        (Some("etcd"), true) => {
            return Err(ConfigError::Unsupported(
                "store.backend is etcd but no etcd endpoint is configured".into(),
            ));
        }
        (None, true) => StoreChoice::Embedded(data_dir),
        (Some(other), true) => {
            return Err(ConfigError::Unsupported(format!(
                "store.backend: {other:?} (use embedded or etcd)"
            )));
        }
    };
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
        api.cors_origin = origin;
    }
    let log_filter = cli
        .log_level
        .or(file.log.level)
        .map(|level| python_level_to_filter(&level))
        .unwrap_or_else(|| "info".to_owned());
    Ok(Settings {
        address,
        store,
        api,
        tls,
        bootstrap: cli.bootstrap_files,
        log_filter,
        log_format: cli.log_format,
    })
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
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn open_store(choice: &StoreChoice) -> Result<Arc<dyn Store>, ServerError> {
    Ok(match choice {
        StoreChoice::Embedded(dir) => {
            let path = dir.join("krake.redb");
            tracing::info!(path = %path.display(), "using the embedded store");
            Arc::new(EmbeddedStore::open(path)?)
        }
        StoreChoice::Etcd(endpoints) => {
            tracing::info!(?endpoints, "using etcd");
            Arc::new(EtcdStore::connect(endpoints, EtcdOptions::default()).await?)
        }
    })
}

async fn shutdown_signal(state: ApiState) {
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
    tracing::info!("shutting down: no new connections, ending watch streams");
    state.shutdown();
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

async fn serve(settings: Settings) -> Result<(), ServerError> {
    let store = open_store(&settings.store).await?;
    load_manifests(&store, &settings.bootstrap, false).await?;
    let tls = settings
        .tls
        .as_ref()
        .map(krake_api::tls::server_config)
        .transpose()?;
    let state = ApiState::new(store, settings.api);
    if let Some(rbac) = state.rbac() {
        if !rbac.wait_loaded(Duration::from_secs(10)).await {
            tracing::warn!("RBAC roles are not loaded yet; requests get 503 until they are");
        }
    }
    let app = router(state.clone()).into_make_service_with_connect_info::<PeerInfo>();
    let listener = tokio::net::TcpListener::bind(&settings.address)
        .await
        .map_err(|source| ServerError::Listen {
            address: settings.address.clone(),
            source,
        })?;
    let local: Option<SocketAddr> = listener.local_addr().ok();
    match tls {
        Some(config) => {
            tracing::info!(address = ?local, "krake-server listening (HTTPS)");
            axum::serve(TlsListener::new(listener, config), app)
                .with_graceful_shutdown(shutdown_signal(state))
                .await
        }
        None => {
            tracing::info!(address = ?local, "krake-server listening");
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown_signal(state))
                .await
        }
    }
    .map_err(ServerError::Serve)?;
    tracing::info!("krake-server stopped");
    Ok(())
}

async fn run(settings: Settings, command: Option<Command>) -> Result<(), ServerError> {
    match command {
        None => serve(settings).await,
        Some(Command::Bootstrap { files, force }) => {
            let store = open_store(&settings.store).await?;
            load_manifests(&store, &files, force).await
        }
    }
}

fn main() -> ExitCode {
    let mut cli = Cli::parse();
    let command = cli.command.take();
    let settings = match settings(cli) {
        Ok(settings) => settings,
        Err(err) => {
            eprintln!("krake-server: {err}");
            return ExitCode::FAILURE;
        }
    };
    init_logging(&settings.log_filter, settings.log_format);
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
    match runtime.block_on(run(settings, command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("krake-server: {err}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Settings, ConfigError> {
        let mut argv = vec!["krake-server"];
        argv.extend_from_slice(args);
        settings(Cli::parse_from(argv))
    }

    #[test]
    fn defaults_are_local_and_embedded() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.yaml");
        std::fs::write(&empty, "").unwrap();
        let s = parse(&["--config", empty.to_str().unwrap()]).unwrap();
        assert_eq!(s.address, "127.0.0.1:8080");
        assert_eq!(s.store, StoreChoice::Embedded(PathBuf::from("data")));
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
            StoreChoice::Etcd(vec!["http://10.1.1.1:2379".into()])
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
            StoreChoice::Etcd(vec!["http://a:1".into(), "http://b:2".into()])
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

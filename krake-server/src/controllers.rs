//! Krake's controllers as krake-server runs them: next to the API in the
//! server's process (through a loopback listener), or alone against a
//! remote API (`krake-server controller <gc|scheduler|kubernetes-application|kubernetes-cluster|magnum|infrastructure>`).
//! Either way they talk to the API over HTTP through `krake-client`, never
//! to the store.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use krake_client::Client;
use krake_controller::gc::{GarbageCollector, GcConfig};
use krake_controller::infrastructure::{InfrastructureController, InfrastructureControllerConfig};
use krake_controller::kubernetes::hooks::certs::HookCa;
use krake_controller::kubernetes::hooks::shutdown::FailureStrategy;
use krake_controller::kubernetes::hooks::{Hook, HookConfig, HooksConfig};
use krake_controller::kubernetes::{
    ApplicationController, ApplicationControllerConfig, ClientTimeouts, ClusterController,
    ClusterControllerConfig,
};
use krake_controller::leader::{LeaderElector, LeaderError, LeaseConfig, unique_identity};
use krake_controller::magnum::{MagnumController, MagnumControllerConfig};
use krake_controller::metrics::Metrics;
use krake_controller::metrics_provider::ProvidersConfig;
use krake_controller::scheduler::{Scheduler, SchedulerConfig};
use krake_controller::shared::Reflectors;
use serde_json::{Map, Value};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{ConfigError, ControllerSettings, HookSection, HooksSection, one_line};

/// How long the controllers may take to drain on shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Which of Krake's controllers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ControllerKind {
    /// The garbage collector (cascading deletion).
    Gc,
    /// The scheduler (applications on clusters, clusters on clouds).
    Scheduler,
    /// The Kubernetes application controller (applications on their
    /// clusters).
    KubernetesApplication,
    /// The Kubernetes cluster controller (the state of clusters).
    KubernetesCluster,
    /// The Magnum controller (clusters made through OpenStack Magnum;
    /// deprecated in Krake).
    Magnum,
    /// The infrastructure controller (clusters created on clouds through
    /// the Infrastructure Manager).
    Infrastructure,
}

impl ControllerKind {
    /// The name in logs, metrics and lease names.
    pub fn name(self) -> &'static str {
        match self {
            ControllerKind::Gc => "gc",
            ControllerKind::Scheduler => "scheduler",
            ControllerKind::KubernetesApplication => "kubernetes-application",
            ControllerKind::KubernetesCluster => "kubernetes-cluster",
            ControllerKind::Magnum => "magnum",
            ControllerKind::Infrastructure => "infrastructure",
        }
    }

    /// What it is, in error messages.
    pub fn description(self) -> &'static str {
        match self {
            ControllerKind::Gc => "garbage collector",
            ControllerKind::Scheduler => "scheduler",
            ControllerKind::KubernetesApplication => "Kubernetes application controller",
            ControllerKind::KubernetesCluster => "Kubernetes cluster controller",
            ControllerKind::Magnum => "Magnum controller",
            ControllerKind::Infrastructure => "infrastructure controller",
        }
    }

    /// Krake's name of its configuration file.
    pub fn file_name(self) -> &'static str {
        match self {
            ControllerKind::Gc => "garbage_collector.yaml",
            ControllerKind::Scheduler => "scheduler.yaml",
            ControllerKind::KubernetesApplication => "kubernetes_application.yaml",
            ControllerKind::KubernetesCluster => "kubernetes_cluster.yaml",
            ControllerKind::Magnum => "magnum.yaml",
            ControllerKind::Infrastructure => "infrastructure.yaml",
        }
    }
}

/// A controller ready to run, with its settings.
#[derive(Debug, Clone)]
pub enum ControllerSpec {
    /// The garbage collector.
    Gc(GcConfig),
    /// The scheduler.
    Scheduler(SchedulerConfig),
    /// The Kubernetes application controller.
    KubernetesApplication(ApplicationControllerConfig),
    /// The Kubernetes cluster controller.
    KubernetesCluster(ClusterControllerConfig),
    /// The Magnum controller.
    Magnum(MagnumControllerConfig),
    /// The infrastructure controller.
    Infrastructure(InfrastructureControllerConfig),
}

impl ControllerSpec {
    /// Which controller.
    pub fn kind(&self) -> ControllerKind {
        match self {
            ControllerSpec::Gc(_) => ControllerKind::Gc,
            ControllerSpec::Scheduler(_) => ControllerKind::Scheduler,
            ControllerSpec::KubernetesApplication(_) => ControllerKind::KubernetesApplication,
            ControllerSpec::KubernetesCluster(_) => ControllerKind::KubernetesCluster,
            ControllerSpec::Magnum(_) => ControllerKind::Magnum,
            ControllerSpec::Infrastructure(_) => ControllerKind::Infrastructure,
        }
    }
}

/// `value` seconds of the setting `key`, or a one-line error.
fn seconds(key: &str, value: f64) -> Result<Duration, ConfigError> {
    Duration::try_from_secs_f64(value).map_err(|_| {
        ConfigError::Unsupported(format!(
            "{key}: {value} (a number of seconds, zero or more)"
        ))
    })
}

/// `value` seconds of the setting `key`, more than zero, or a one-line
/// error.
fn positive_seconds(key: &str, value: f64) -> Result<Duration, ConfigError> {
    match Duration::try_from_secs_f64(value) {
        Ok(duration) if !duration.is_zero() => Ok(duration),
        _ => Err(ConfigError::Unsupported(format!(
            "{key}: {value} (a number of seconds, more than 0)"
        ))),
    }
}

/// The first key of `settings` that `kind` does not have, with the
/// controllers it belongs to.
fn foreign_key(
    kind: ControllerKind,
    settings: &ControllerSettings,
) -> Option<(&'static str, &'static str)> {
    use ControllerKind::{
        Infrastructure, KubernetesApplication, KubernetesCluster, Magnum, Scheduler,
    };
    let creation = &settings.automatic_cluster_creation;
    let providers = &settings.metrics_providers;
    let keys: [(&str, bool, &[ControllerKind], &str); 12] = [
        (
            "reschedule_after",
            settings.reschedule_after.is_some(),
            &[Scheduler],
            "the scheduler",
        ),
        (
            "stickiness",
            settings.stickiness.is_some(),
            &[Scheduler],
            "the scheduler",
        ),
        (
            "automatic_cluster_creation",
            creation.tosca_file.is_some() || creation.deletion_retention.is_some(),
            &[Scheduler],
            "the scheduler",
        ),
        (
            "metrics_providers",
            providers.timeout.is_some() || providers.cache_ttl.is_some(),
            &[Scheduler],
            "the scheduler",
        ),
        (
            "hooks",
            settings.hooks.is_some(),
            &[KubernetesApplication],
            "the Kubernetes application controller",
        ),
        (
            "migration",
            settings.migration.is_some(),
            &[KubernetesApplication],
            "the Kubernetes application controller",
        ),
        (
            "resync",
            settings.resync.is_some(),
            &[KubernetesApplication],
            "the Kubernetes application controller",
        ),
        (
            "list_timeout",
            settings.list_timeout.is_some(),
            &[KubernetesApplication],
            "the Kubernetes application controller",
        ),
        (
            "tosca_timeout",
            settings.tosca_timeout.is_some(),
            &[KubernetesApplication],
            "the Kubernetes application controller",
        ),
        (
            "connect_timeout",
            settings.connect_timeout.is_some(),
            &[KubernetesApplication, KubernetesCluster],
            "the Kubernetes controllers",
        ),
        (
            "request_timeout",
            settings.request_timeout.is_some(),
            &[KubernetesApplication, KubernetesCluster],
            "the Kubernetes controllers",
        ),
        (
            "poll_interval",
            settings.poll_interval.is_some(),
            &[KubernetesCluster, Magnum, Infrastructure],
            "the Kubernetes cluster controller, the Magnum controller and the infrastructure controller",
        ),
    ];
    keys.iter()
        .find(|(_, set, owners, _)| *set && !owners.contains(&kind))
        .map(|(key, _, _, owner)| (*key, *owner))
}

/// The timeouts of the cluster clients from `connect_timeout` and
/// `request_timeout`.
fn client_timeouts(
    settings: &ControllerSettings,
    section: &str,
) -> Result<ClientTimeouts, ConfigError> {
    let mut timeouts = ClientTimeouts::default();
    if let Some(value) = settings.connect_timeout {
        timeouts.connect = positive_seconds(&format!("{section}: connect_timeout"), value)?;
    }
    if let Some(value) = settings.request_timeout {
        timeouts.request = positive_seconds(&format!("{section}: request_timeout"), value)?;
    }
    Ok(timeouts)
}

/// The API as the Kubernetes application controller's hooks see it.
#[derive(Debug, Clone, Default)]
pub struct HookApi {
    /// The URL the workloads call unless a hook has an `external_endpoint`
    /// (default `http://localhost:8080`, Krake's `api_endpoint`).
    pub endpoint: Option<String>,
    /// The CA of the API's certificate, put into the hooks' `ca-bundle.pem`
    /// before the intermediate (Krake puts the controller's CAs there).
    pub krake_ca: Option<PathBuf>,
}

/// The hooks' settings from Krake's `hooks` keys: defaults for what they
/// leave out, the intermediate CAs read and checked now (a file that cannot
/// be read or a key that does not belong to its certificate fails here, not
/// at the first application).
pub fn hooks_config(
    hooks: Option<&HooksSection>,
    section: &str,
    api: &HookApi,
) -> Result<HooksConfig, ConfigError> {
    let mut config = HooksConfig::default();
    if let Some(endpoint) = &api.endpoint {
        config.api_endpoint = endpoint.clone();
    }
    let Some(hooks) = hooks else {
        return Ok(config);
    };
    hooks.validate(section)?;
    for (hook, given) in [
        (Hook::Complete, &hooks.complete),
        (Hook::Shutdown, &hooks.shutdown),
    ] {
        let Some(given) = given else { continue };
        let prefix = format!("{section}: hooks.{}", hook.name());
        let target = match hook {
            Hook::Complete => &mut config.complete,
            Hook::Shutdown => &mut config.shutdown,
        };
        *target = hook_config(hook, given, &prefix, api)?;
        if hook == Hook::Shutdown {
            let flow = &mut config.shutdown_settings;
            if let Some(timeout) = given.timeout {
                flow.timeout = positive_seconds(&format!("{prefix}.timeout"), timeout)?;
            }
            if let Some(strategy) = &given.failure_strategy {
                flow.failure_strategy = FailureStrategy::parse(strategy).ok_or_else(|| {
                    ConfigError::Unsupported(format!(
                        "{prefix}.failure_strategy: {strategy:?} (delete or give_up)"
                    ))
                })?;
            }
            if let Some(count) = given.failure_retry_count {
                flow.failure_retry_count = u32::try_from(count).map_err(|_| {
                    ConfigError::Unsupported(format!(
                        "{prefix}.failure_retry_count: {count} (0 or more)"
                    ))
                })?;
            }
        }
    }
    Ok(config)
}

fn hook_config(
    hook: Hook,
    given: &HookSection,
    prefix: &str,
    api: &HookApi,
) -> Result<HookConfig, ConfigError> {
    let mut config = HookConfig::defaults(hook);
    let set = |target: &mut String, value: &Option<String>| {
        if let Some(value) = value {
            target.clone_from(value);
        }
    };
    set(&mut config.hook_user, &given.hook_user);
    set(&mut config.cert_dest, &given.cert_dest);
    set(&mut config.env_token, &given.env_token);
    set(&mut config.env_url, &given.env_url);
    for (key, value) in [
        ("env_token", &config.env_token),
        ("env_url", &config.env_url),
    ] {
        if !is_env_name(value) {
            return Err(ConfigError::Unsupported(format!(
                "{prefix}.{key}: {value:?} (an environment variable name: letters, digits, _)"
            )));
        }
    }
    config
        .external_endpoint
        .clone_from(&given.external_endpoint);
    if let (Some(cert), Some(key)) = (&given.intermediate_src, &given.intermediate_key_src) {
        let ca = HookCa::load(cert, key, api.krake_ca.as_deref())
            .map_err(|err| ConfigError::Unsupported(one_line(&format!("{prefix}: {err}"))))?;
        config.ca = Some(Arc::new(ca));
    }
    Ok(config)
}

/// A name Kubernetes takes for an environment variable whose lowercase
/// form is also a Secret key.
fn is_env_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
}

/// The spec of `kind` from its settings; `section` names them in errors
/// (`controllers.gc`, `scheduler.yaml`); the hooks call the API at the
/// default `http://localhost:8080` (see [`spec_with_api`]).
#[cfg(test)]
pub fn spec(
    kind: ControllerKind,
    settings: &ControllerSettings,
    section: &str,
) -> Result<ControllerSpec, ConfigError> {
    spec_with_api(kind, settings, section, &HookApi::default())
}

/// The spec of `kind` from its settings; `section` names them in errors
/// (`controllers.gc`, `scheduler.yaml`); `api` is the API as the hooks of
/// the Kubernetes application controller see it.
pub fn spec_with_api(
    kind: ControllerKind,
    settings: &ControllerSettings,
    section: &str,
    api: &HookApi,
) -> Result<ControllerSpec, ConfigError> {
    let workers = settings.worker_count.unwrap_or(5);
    if workers == 0 {
        return Err(ConfigError::Unsupported(format!(
            "{section}: worker_count must be at least 1"
        )));
    }
    if let Some(debounce) = settings.debounce {
        seconds(&format!("{section}: debounce"), debounce)?;
    }
    if let Some((key, owner)) = foreign_key(kind, settings) {
        return Err(ConfigError::Unsupported(format!(
            "{section}: {key} is a setting of {owner}, not of the {}",
            kind.description()
        )));
    }
    match kind {
        ControllerKind::Gc => Ok(ControllerSpec::Gc(GcConfig { workers })),
        ControllerKind::Scheduler => {
            let mut config = SchedulerConfig {
                workers,
                ..SchedulerConfig::default()
            };
            if let Some(value) = settings.reschedule_after {
                config.reschedule_after = seconds(&format!("{section}: reschedule_after"), value)?;
            }
            if let Some(value) = settings.stickiness {
                if !value.is_finite() || value < 0.0 {
                    return Err(ConfigError::Unsupported(format!(
                        "{section}: stickiness: {value} (a number, zero or more)"
                    )));
                }
                config.stickiness = value;
            }
            let creation = &settings.automatic_cluster_creation;
            if let Some(path) = &creation.tosca_file {
                config.cluster_tosca = Some(load_tosca(path)?);
            }
            if let Some(value) = creation.deletion_retention {
                config.deletion_retention = seconds(
                    &format!("{section}: automatic_cluster_creation.deletion_retention"),
                    value,
                )?;
            }
            let providers = &settings.metrics_providers;
            let mut providers_config = ProvidersConfig::default();
            if let Some(value) = providers.timeout {
                providers_config.timeout =
                    seconds(&format!("{section}: metrics_providers.timeout"), value)?;
            }
            if let Some(value) = providers.cache_ttl {
                providers_config.cache_ttl =
                    seconds(&format!("{section}: metrics_providers.cache_ttl"), value)?;
            }
            config.providers = providers_config;
            Ok(ControllerSpec::Scheduler(config))
        }
        ControllerKind::KubernetesApplication => {
            // Krake's hooks (their intermediate CAs read now); migration is
            // checked so that a wrong file fails now, not used yet.
            let hooks = hooks_config(settings.hooks.as_ref(), section, api)?;
            if let Some(migration) = &settings.migration {
                migration.validate(section)?;
            }
            let mut config = ApplicationControllerConfig {
                workers,
                timeouts: client_timeouts(settings, section)?,
                hooks: Arc::new(hooks),
                ..ApplicationControllerConfig::default()
            };
            if let Some(value) = settings.resync {
                config.resync = positive_seconds(&format!("{section}: resync"), value)?;
            }
            if let Some(value) = settings.list_timeout {
                config.list_timeout = positive_seconds(&format!("{section}: list_timeout"), value)?;
            }
            if let Some(value) = settings.tosca_timeout {
                config.tosca_timeout =
                    positive_seconds(&format!("{section}: tosca_timeout"), value)?;
            }
            Ok(ControllerSpec::KubernetesApplication(config))
        }
        ControllerKind::KubernetesCluster => {
            // `poll_interval` (some Krake versions) is accepted and ignored:
            // the controller watches the Nodes of each cluster instead.
            if let Some(value) = settings.poll_interval {
                seconds(&format!("{section}: poll_interval"), value)?;
            }
            Ok(ControllerSpec::KubernetesCluster(ClusterControllerConfig {
                workers,
                timeouts: client_timeouts(settings, section)?,
            }))
        }
        ControllerKind::Magnum => {
            let mut config = MagnumControllerConfig {
                workers,
                ..MagnumControllerConfig::default()
            };
            if let Some(value) = settings.poll_interval {
                config.poll_interval =
                    positive_seconds(&format!("{section}: poll_interval"), value)?;
            }
            Ok(ControllerSpec::Magnum(config))
        }
        ControllerKind::Infrastructure => {
            let mut config = InfrastructureControllerConfig {
                workers,
                ..InfrastructureControllerConfig::default()
            };
            if let Some(value) = settings.poll_interval {
                config.poll_interval =
                    positive_seconds(&format!("{section}: poll_interval"), value)?;
            }
            Ok(ControllerSpec::Infrastructure(config))
        }
    }
}

/// Reads the TOSCA template of automatically created clusters: a YAML
/// mapping.
pub fn load_tosca(path: &Path) -> Result<Map<String, Value>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let invalid = |message: String| ConfigError::Invalid {
        path: path.to_owned(),
        message,
    };
    let value: Value =
        serde_saphyr::from_str(&text).map_err(|err| invalid(one_line(&err.to_string())))?;
    match value {
        Value::Object(map) => Ok(map),
        _ => Err(invalid(
            "a TOSCA template must be a YAML mapping (tosca_definitions_version, topology_template, ...)"
                .to_owned(),
        )),
    }
}

/// Leader election: which lease namespace, its duration, and the lease
/// name of each controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Election {
    /// The namespace of the leases.
    pub namespace: String,
    /// The lease name, if not `krake-<controller>`.
    pub name: Option<String>,
    /// How long a lease is held after a renewal.
    pub lease_duration: Duration,
}

impl Election {
    /// The lease configuration of `kind` under a fresh identity: renewed
    /// every third of the lease, read by standbys every fifth (at most 2 s).
    pub fn lease(&self, kind: ControllerKind) -> LeaseConfig {
        let name = self
            .name
            .clone()
            .unwrap_or_else(|| format!("krake-{}", kind.name()));
        let mut config =
            LeaseConfig::new(self.namespace.clone(), name, unique_identity(kind.name()));
        config.lease_duration = self.lease_duration;
        config.renew_every = self.lease_duration / 3;
        config.retry_every = (self.lease_duration / 5).min(Duration::from_secs(2));
        config.max_clock_skew = (self.lease_duration / 10).min(Duration::from_secs(1));
        config
    }

    /// Checks the lease configuration (one line on error).
    pub fn validate(&self, kind: ControllerKind) -> Result<(), ConfigError> {
        self.lease(kind)
            .validate()
            .map_err(|err| ConfigError::Unsupported(format!("leader election: {err}")))
    }
}

/// The controllers of a process, ready to run.
#[derive(Debug)]
pub struct Controllers {
    client: Client,
    specs: Vec<(ControllerSpec, Option<LeaderElector>)>,
    metrics: Metrics,
}

impl Controllers {
    /// The controllers `specs` on `client`, recording into `metrics`, each
    /// with its own leader election if `election` is given.
    pub fn new(
        client: Client,
        specs: Vec<ControllerSpec>,
        election: Option<&Election>,
        metrics: Metrics,
    ) -> Result<Self, LeaderError> {
        let specs = specs
            .into_iter()
            .map(|spec| {
                let elector = election
                    .map(|election| LeaderElector::new(client.clone(), election.lease(spec.kind())))
                    .transpose()?;
                Ok((spec, elector))
            })
            .collect::<Result<Vec<_>, LeaderError>>()?;
        Ok(Controllers {
            client,
            specs,
            metrics,
        })
    }

    /// Runs the controllers until `stop` is cancelled; then lets them drain
    /// (at most 30 s), stops the reflectors and releases the leases.
    pub async fn run(self, stop: CancellationToken) {
        let work = CancellationToken::new();
        let campaigns = CancellationToken::new();
        let reflectors = Reflectors::new(self.client.clone(), work.clone());
        let mut controllers: Vec<(&'static str, JoinHandle<()>)> = Vec::new();
        let mut electors: Vec<JoinHandle<()>> = Vec::new();
        for (spec, elector) in self.specs {
            let name = spec.kind().name();
            // Under leader election the controller writes through a client
            // fenced by its elector (no write once its lease ran out, even
            // before the campaign notices); the elector keeps the unguarded
            // client for the lease itself.
            let (leader, own_reflectors) = match elector {
                Some(elector) => {
                    let fenced = self.client.with_write_guard(elector.write_guard());
                    let config = elector.config();
                    tracing::info!(
                        controller = name,
                        identity = %config.identity,
                        lease = %format!("{}/{}", config.namespace, config.name),
                        "campaigning for the lease"
                    );
                    let leading = elector.is_leader();
                    tokio::spawn(follow_leadership(
                        name,
                        leading.clone(),
                        self.metrics.clone(),
                    ));
                    electors.push(tokio::spawn(elector.run(campaigns.clone())));
                    (Some(leading), reflectors.with_client(fenced))
                }
                None => {
                    self.metrics.set_leader(name, true);
                    (None, reflectors.clone())
                }
            };
            let handle = match spec {
                ControllerSpec::Gc(config) => {
                    tracing::info!(
                        controller = name,
                        workers = config.workers,
                        "controller started"
                    );
                    let mut gc = GarbageCollector::new(&own_reflectors, config)
                        .metrics(self.metrics.clone());
                    if let Some(leader) = leader {
                        gc = gc.leader(leader);
                    }
                    tokio::spawn(gc.run(work.clone()))
                }
                ControllerSpec::Scheduler(config) => {
                    tracing::info!(
                        controller = name,
                        workers = config.workers,
                        reschedule_after = ?config.reschedule_after,
                        stickiness = config.stickiness,
                        automatic_cluster_creation = config.cluster_tosca.is_some(),
                        "controller started"
                    );
                    let mut scheduler =
                        Scheduler::new(&own_reflectors, config).metrics(self.metrics.clone());
                    if let Some(leader) = leader {
                        scheduler = scheduler.leader(leader);
                    }
                    tokio::spawn(scheduler.run(work.clone()))
                }
                ControllerSpec::KubernetesApplication(config) => {
                    tracing::info!(
                        controller = name,
                        workers = config.workers,
                        resync = ?config.resync,
                        connect_timeout = ?config.timeouts.connect,
                        request_timeout = ?config.timeouts.request,
                        list_timeout = ?config.list_timeout,
                        "controller started"
                    );
                    let mut applications = ApplicationController::new(&own_reflectors, config)
                        .metrics(self.metrics.clone());
                    if let Some(leader) = leader {
                        applications = applications.leader(leader);
                    }
                    tokio::spawn(applications.run(work.clone()))
                }
                ControllerSpec::KubernetesCluster(config) => {
                    tracing::info!(
                        controller = name,
                        workers = config.workers,
                        connect_timeout = ?config.timeouts.connect,
                        request_timeout = ?config.timeouts.request,
                        "controller started"
                    );
                    let mut clusters = ClusterController::new(&own_reflectors, config)
                        .metrics(self.metrics.clone());
                    if let Some(leader) = leader {
                        clusters = clusters.leader(leader);
                    }
                    tokio::spawn(clusters.run(work.clone()))
                }
                ControllerSpec::Magnum(config) => {
                    tracing::info!(
                        controller = name,
                        workers = config.workers,
                        poll_interval = ?config.poll_interval,
                        "controller started"
                    );
                    let mut magnum = MagnumController::new(&own_reflectors, config)
                        .metrics(self.metrics.clone());
                    if let Some(leader) = leader {
                        magnum = magnum.leader(leader);
                    }
                    tokio::spawn(magnum.run(work.clone()))
                }
                ControllerSpec::Infrastructure(config) => {
                    tracing::info!(
                        controller = name,
                        workers = config.workers,
                        poll_interval = ?config.poll_interval,
                        "controller started"
                    );
                    let mut infrastructure = InfrastructureController::new(&own_reflectors, config)
                        .metrics(self.metrics.clone());
                    if let Some(leader) = leader {
                        infrastructure = infrastructure.leader(leader);
                    }
                    tokio::spawn(infrastructure.run(work.clone()))
                }
            };
            controllers.push((name, handle));
        }
        stop.cancelled().await;
        if controllers.is_empty() {
            return;
        }
        tracing::info!("stopping the controllers");
        work.cancel();
        let deadline = tokio::time::Instant::now() + DRAIN_TIMEOUT;
        for (name, mut handle) in controllers {
            match tokio::time::timeout_at(deadline, &mut handle).await {
                Ok(Ok(())) => tracing::info!(controller = name, "controller stopped"),
                Ok(Err(err)) => {
                    tracing::error!(controller = name, error = %err, "controller failed");
                }
                Err(_) => {
                    tracing::warn!(controller = name, "controller did not drain in time");
                    handle.abort();
                }
            }
            self.metrics.set_leader(name, false);
        }
        if tokio::time::timeout(Duration::from_secs(5), reflectors.stopped())
            .await
            .is_err()
        {
            tracing::warn!("reflectors did not stop within 5 s");
        }
        campaigns.cancel();
        for elector in electors {
            let _ = tokio::time::timeout(Duration::from_secs(5), elector).await;
        }
    }
}

/// Logs and records leadership changes of `name`.
async fn follow_leadership(
    name: &'static str,
    mut leading: watch::Receiver<bool>,
    metrics: Metrics,
) {
    let mut was = false;
    metrics.set_leader(name, false);
    while leading.changed().await.is_ok() {
        let now = *leading.borrow_and_update();
        if now != was {
            metrics.set_leader(name, now);
            if now {
                tracing::info!(controller = name, "leading: this replica works");
            } else {
                tracing::info!(controller = name, "standing by: another replica leads");
            }
            was = now;
        }
    }
    metrics.set_leader(name, false);
}

/// `err` and its sources, on one line.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    one_line(&text)
}

/// An intermediate CA for the hooks, written as `<name>.pem` and
/// `<name>-key.pem` into `dir` (tests).
#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) fn write_intermediate(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let cert_file = dir.join(format!("{name}.pem"));
    let key_file = dir.join(format!("{name}-key.pem"));
    std::fs::write(&cert_file, cert.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    (cert_file, key_file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_yaml;

    #[test]
    fn scheduler_settings_follow_krakes_keys() {
        let dir = tempfile::tempdir().unwrap();
        let tosca = dir.path().join("cluster.yaml");
        std::fs::write(&tosca, "tosca_definitions_version: tosca_simple_yaml_1_3\n").unwrap();
        let settings: ControllerSettings = parse_yaml(&format!(
            "worker_count: 3\nreschedule_after: 30\nstickiness: 0.5\n\
             automatic_cluster_creation: {{tosca_file: {}, deletion_retention: 60}}\n\
             metrics_providers: {{timeout: 2, cache_ttl: 0.5}}\n",
            tosca.display()
        ))
        .unwrap();
        let ControllerSpec::Scheduler(config) =
            spec(ControllerKind::Scheduler, &settings, "scheduler.yaml").unwrap()
        else {
            panic!("not a scheduler");
        };
        assert_eq!(config.workers, 3);
        assert_eq!(config.reschedule_after, Duration::from_secs(30));
        assert_eq!(config.stickiness, 0.5);
        assert_eq!(config.deletion_retention, Duration::from_secs(60));
        assert_eq!(config.providers.timeout, Duration::from_secs(2));
        assert_eq!(config.providers.cache_ttl, Duration::from_millis(500));
        assert_eq!(
            config.cluster_tosca.unwrap()["tosca_definitions_version"],
            "tosca_simple_yaml_1_3"
        );
        let ControllerSpec::Scheduler(defaults) = spec(
            ControllerKind::Scheduler,
            &ControllerSettings::default(),
            "x",
        )
        .unwrap() else {
            panic!("not a scheduler");
        };
        assert_eq!(defaults, SchedulerConfig::default());
    }

    #[test]
    fn kubernetes_settings_follow_krakes_keys() {
        let dir = tempfile::tempdir().unwrap();
        let (a, a_key) = write_intermediate(dir.path(), "a");
        let (b, b_key) = write_intermediate(dir.path(), "b");
        let settings: ControllerSettings = parse_yaml(&format!(
            "worker_count: 3\ndebounce: 1.0\n\
             hooks:\n  complete: {{hook_user: system:complete-hook, intermediate_src: {a}, intermediate_key_src: {a_key}, \
             cert_dest: /etc/krake_complete_certs, env_token: KRAKE_COMPLETE_TOKEN, env_url: KRAKE_COMPLETE_URL}}\n  \
             shutdown: {{hook_user: system:bye, intermediate_src: {b}, intermediate_key_src: {b_key}, external_endpoint: 'https://krake:8443', \
             env_token: BYE_TOKEN, timeout: 12, failure_strategy: give_up, failure_retry_count: 2}}\n\
             migration: {{retry: {{max: 10, timeout: 60}}}}\n\
             resync: 30\nconnect_timeout: 2\nrequest_timeout: 10\nlist_timeout: 0.5\n",
            a = a.display(),
            a_key = a_key.display(),
            b = b.display(),
            b_key = b_key.display(),
        ))
        .unwrap();
        let ControllerSpec::KubernetesApplication(config) = spec(
            ControllerKind::KubernetesApplication,
            &settings,
            "kubernetes_application.yaml",
        )
        .unwrap() else {
            panic!("not the application controller");
        };
        assert_eq!(config.workers, 3);
        assert_eq!(config.resync, Duration::from_secs(30));
        assert_eq!(config.timeouts.connect, Duration::from_secs(2));
        assert_eq!(config.timeouts.request, Duration::from_secs(10));
        assert_eq!(config.list_timeout, Duration::from_millis(500));
        let hooks = &config.hooks;
        assert_eq!(hooks.api_endpoint, "http://localhost:8080");
        assert_eq!(hooks.complete.hook_user, "system:complete-hook");
        assert_eq!(hooks.complete.cert_dest, "/etc/krake_complete_certs");
        assert!(hooks.complete.ca.is_some());
        assert_eq!(hooks.shutdown.hook_user, "system:bye");
        assert_eq!(hooks.shutdown.env_token, "BYE_TOKEN");
        assert_eq!(hooks.shutdown.env_url, "KRAKE_SHUTDOWN_URL");
        assert_eq!(hooks.shutdown.cert_dest, "/etc/krake_shutdown_certs/");
        assert_eq!(
            hooks.shutdown.external_endpoint.as_deref(),
            Some("https://krake:8443")
        );
        assert_eq!(hooks.shutdown_settings.timeout, Duration::from_secs(12));
        assert_eq!(
            hooks.shutdown_settings.failure_strategy,
            FailureStrategy::GiveUp
        );
        assert_eq!(hooks.shutdown_settings.failure_retry_count, 2);

        // The intermediate CAs are read with the configuration.
        let settings: ControllerSettings = parse_yaml(&format!(
            "hooks: {{complete: {{intermediate_src: {a}, intermediate_key_src: {b_key}}}}}\n",
            a = a.display(),
            b_key = b_key.display(),
        ))
        .unwrap();
        let err = spec(ControllerKind::KubernetesApplication, &settings, "x.yaml")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("x.yaml: hooks.complete: the key") && err.contains("does not belong"),
            "{err}"
        );
        let settings: ControllerSettings = parse_yaml(
            "hooks: {shutdown: {intermediate_src: /nonexistent/i.pem, intermediate_key_src: /nonexistent/k.pem}}\n",
        )
        .unwrap();
        let err = spec(ControllerKind::KubernetesApplication, &settings, "x.yaml")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("hooks.shutdown: cannot read /nonexistent/i.pem"),
            "{err}"
        );

        let defaults = ApplicationControllerConfig::default();
        let ControllerSpec::KubernetesApplication(config) = spec(
            ControllerKind::KubernetesApplication,
            &ControllerSettings::default(),
            "x",
        )
        .unwrap() else {
            panic!("not the application controller");
        };
        assert_eq!(config.workers, defaults.workers);
        assert_eq!(config.resync, defaults.resync);
        assert_eq!(config.list_timeout, defaults.list_timeout);
        assert_eq!(config.timeouts.connect, defaults.timeouts.connect);

        let settings: ControllerSettings =
            parse_yaml("worker_count: 2\npoll_interval: 2\nrequest_timeout: 3\n").unwrap();
        let ControllerSpec::KubernetesCluster(config) = spec(
            ControllerKind::KubernetesCluster,
            &settings,
            "kubernetes_cluster.yaml",
        )
        .unwrap() else {
            panic!("not the cluster controller");
        };
        assert_eq!(config.workers, 2);
        assert_eq!(config.timeouts.request, Duration::from_secs(3));
        assert_eq!(config.timeouts.connect, ClientTimeouts::default().connect);
    }

    #[test]
    fn infrastructure_settings_follow_krakes_keys() {
        let read = |yaml: &str| {
            let settings: ControllerSettings = parse_yaml(yaml).unwrap();
            spec(
                ControllerKind::Infrastructure,
                &settings,
                "infrastructure.yaml",
            )
        };
        let Ok(ControllerSpec::Infrastructure(config)) =
            read("worker_count: 3\ndebounce: 1.0\npoll_interval: 2.5\n")
        else {
            panic!("not the infrastructure controller");
        };
        assert_eq!(config.workers, 3);
        assert_eq!(config.poll_interval, Duration::from_millis(2500));
        let Ok(ControllerSpec::Infrastructure(config)) = read("worker_count: 1\n") else {
            panic!("not the infrastructure controller");
        };
        assert_eq!(config.poll_interval, Duration::from_secs(30));
        let message = |yaml: &str| match read(yaml) {
            Err(err) => err.to_string(),
            Ok(_) => panic!("{yaml} accepted"),
        };
        assert!(
            message("poll_interval: 0\n").ends_with(
                "infrastructure.yaml: poll_interval: 0 (a number of seconds, more than 0)"
            )
        );
        assert!(message("stickiness: 0.5\n").contains(
            "stickiness is a setting of the scheduler, not of the infrastructure controller"
        ));
        assert_eq!(
            ControllerKind::Infrastructure.file_name(),
            "infrastructure.yaml"
        );
        assert_eq!(ControllerKind::Infrastructure.name(), "infrastructure");
    }

    #[test]
    fn magnum_settings_follow_krakes_keys() {
        let read = |yaml: &str| {
            let settings: ControllerSettings = parse_yaml(yaml).unwrap();
            spec(ControllerKind::Magnum, &settings, "magnum.yaml")
        };
        let Ok(ControllerSpec::Magnum(config)) = read("worker_count: 2\npoll_interval: 0.5\n")
        else {
            panic!("not the Magnum controller");
        };
        assert_eq!(config.workers, 2);
        assert_eq!(config.poll_interval, Duration::from_millis(500));
        let Ok(ControllerSpec::Magnum(config)) = read("debounce: 1.0\n") else {
            panic!("not the Magnum controller");
        };
        assert_eq!(config.poll_interval, Duration::from_secs(30));
        let message = |yaml: &str| match read(yaml) {
            Err(err) => err.to_string(),
            Ok(_) => panic!("{yaml} accepted"),
        };
        assert!(
            message("poll_interval: 0\n")
                .ends_with("magnum.yaml: poll_interval: 0 (a number of seconds, more than 0)")
        );
        assert!(
            message("hooks: {}\n").contains("hooks is a setting of the Kubernetes application controller, not of the Magnum controller")
        );
        assert_eq!(ControllerKind::Magnum.file_name(), "magnum.yaml");
        assert_eq!(ControllerKind::Magnum.name(), "magnum");
    }

    #[test]
    fn tosca_timeout_is_read_and_checked() {
        let read = |yaml: &str, kind: ControllerKind| {
            let settings: ControllerSettings = parse_yaml(yaml).unwrap();
            spec(kind, &settings, "kubernetes_application.yaml")
        };
        let tosca_timeout = |yaml: &str| match read(yaml, ControllerKind::KubernetesApplication) {
            Ok(ControllerSpec::KubernetesApplication(config)) => config.tosca_timeout,
            _ => panic!("not the settings of the application controller"),
        };
        assert_eq!(
            tosca_timeout("tosca_timeout: 2.5\n"),
            Duration::from_millis(2500)
        );
        assert_eq!(tosca_timeout("worker_count: 1\n"), Duration::from_secs(30));
        let message = |yaml: &str, kind: ControllerKind| match read(yaml, kind) {
            Err(err) => err.to_string(),
            Ok(_) => panic!("{yaml} accepted"),
        };
        let zero = message("tosca_timeout: 0\n", ControllerKind::KubernetesApplication);
        assert!(
            zero.ends_with(
                "kubernetes_application.yaml: tosca_timeout: 0 (a number of seconds, more than 0)"
            ),
            "{zero}"
        );
        assert!(
            message("tosca_timeout: 5\n", ControllerKind::KubernetesCluster)
                .contains("tosca_timeout is a setting of the Kubernetes application controller"),
        );
    }

    #[test]
    fn bad_kubernetes_settings_are_one_line_errors() {
        let bad = |yaml: &str, kind: ControllerKind| {
            let settings: ControllerSettings = parse_yaml(yaml).unwrap();
            let err = spec(kind, &settings, "kubernetes_application.yaml")
                .unwrap_err()
                .to_string();
            assert_eq!(err.lines().count(), 1, "{err}");
            err
        };
        use ControllerKind::{Gc, KubernetesApplication, KubernetesCluster, Scheduler};
        let cases: &[(&str, ControllerKind, &str)] = &[
            (
                "hooks: {complete: {intermediate_key_src: k.pem}}\n",
                KubernetesApplication,
                "kubernetes_application.yaml: hooks.complete.intermediate_src is required",
            ),
            (
                "hooks: {complete: {intermediate_src: a, intermediate_key_src: b, timeout: 3}}\n",
                KubernetesApplication,
                "hooks.complete.timeout is a setting of the shutdown hook only",
            ),
            (
                "hooks: {shutdown: {intermediate_src: a, intermediate_key_src: b, failure_strategy: retry}}\n",
                KubernetesApplication,
                "hooks.shutdown.failure_strategy: \"retry\" (delete or give_up)",
            ),
            (
                "hooks: {shutdown: {intermediate_src: a, intermediate_key_src: b, external_endpoint: 'krake:8443'}}\n",
                KubernetesApplication,
                "hooks.shutdown.external_endpoint",
            ),
            (
                "migration: {retry: {max: -1}}\n",
                KubernetesApplication,
                "migration.retry.max: -1 (0 or more)",
            ),
            (
                "list_timeout: 0\n",
                KubernetesApplication,
                "list_timeout: 0 (a number of seconds, more than 0)",
            ),
            (
                "stickiness: 0.5\n",
                KubernetesCluster,
                "stickiness is a setting of the scheduler, not of the Kubernetes cluster controller",
            ),
            (
                "hooks: {}\n",
                KubernetesCluster,
                "hooks is a setting of the Kubernetes application controller, not of the Kubernetes cluster controller",
            ),
            (
                "resync: 10\n",
                Scheduler,
                "resync is a setting of the Kubernetes application controller, not of the scheduler",
            ),
            (
                "connect_timeout: 1\n",
                Gc,
                "connect_timeout is a setting of the Kubernetes controllers, not of the garbage collector",
            ),
            (
                "poll_interval: 2\n",
                KubernetesApplication,
                "poll_interval is a setting of the Kubernetes cluster controller",
            ),
            (
                "poll_interval: -2\n",
                KubernetesCluster,
                "poll_interval: -2",
            ),
        ];
        for (yaml, kind, expected) in cases {
            let err = bad(yaml, *kind);
            assert!(err.contains(expected), "{yaml}: {err}");
        }
    }

    #[test]
    fn bad_settings_are_one_line_errors() {
        let bad = |yaml: &str, kind: ControllerKind| {
            let settings: ControllerSettings = parse_yaml(yaml).unwrap();
            spec(kind, &settings, "garbage_collector.yaml")
                .unwrap_err()
                .to_string()
        };
        let err = bad("worker_count: 0\n", ControllerKind::Gc);
        assert!(err.contains("worker_count must be at least 1"), "{err}");
        let err = bad("stickiness: 0.2\n", ControllerKind::Gc);
        assert!(
            err.contains("stickiness is a setting of the scheduler"),
            "{err}"
        );
        let err = bad("reschedule_after: -1\n", ControllerKind::Scheduler);
        assert!(err.contains("reschedule_after: -1"), "{err}");

        let dir = tempfile::tempdir().unwrap();
        let tosca = dir.path().join("cluster.yaml");
        std::fs::write(&tosca, "- a\n- b\n").unwrap();
        let err = load_tosca(&tosca).unwrap_err().to_string();
        assert!(err.contains(&tosca.display().to_string()), "{err}");
        assert!(err.contains("must be a YAML mapping"), "{err}");
        std::fs::write(&tosca, "a: [unclosed\n").unwrap();
        let err = load_tosca(&tosca).unwrap_err().to_string();
        assert_eq!(err.lines().count(), 1, "{err}");
        let err = load_tosca(&dir.path().join("missing.yaml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing.yaml"), "{err}");
    }

    #[test]
    fn leases_default_per_controller_and_are_checked() {
        let election = Election {
            namespace: "system".into(),
            name: None,
            lease_duration: Duration::from_secs(15),
        };
        let lease = election.lease(ControllerKind::Gc);
        assert_eq!(lease.name, "krake-gc");
        assert!(lease.identity.starts_with("gc-"));
        assert_eq!(lease.renew_every, Duration::from_secs(5));
        assert_eq!(lease.retry_every, Duration::from_secs(2));
        assert!(election.validate(ControllerKind::Scheduler).is_ok());
        let broken = Election {
            namespace: "not valid!".into(),
            ..election
        };
        assert!(broken.validate(ControllerKind::Gc).is_err());
    }
}

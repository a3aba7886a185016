//! Krake's controllers as krake-server runs them: next to the API in the
//! server's process (through a loopback listener), or alone against a
//! remote API (`krake-server controller <gc|scheduler>`). Either way they
//! talk to the API over HTTP through `krake-client`, never to the store.

use std::path::Path;
use std::time::Duration;

use krake_client::Client;
use krake_controller::gc::{GarbageCollector, GcConfig};
use krake_controller::leader::{LeaderElector, LeaderError, LeaseConfig, unique_identity};
use krake_controller::metrics::Metrics;
use krake_controller::metrics_provider::ProvidersConfig;
use krake_controller::scheduler::{Scheduler, SchedulerConfig};
use krake_controller::shared::Reflectors;
use serde_json::{Map, Value};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{ConfigError, ControllerSettings, one_line};

/// How long the controllers may take to drain on shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Which of Krake's controllers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ControllerKind {
    /// The garbage collector (cascading deletion).
    Gc,
    /// The scheduler (applications on clusters, clusters on clouds).
    Scheduler,
}

impl ControllerKind {
    /// The name in logs, metrics and lease names.
    pub fn name(self) -> &'static str {
        match self {
            ControllerKind::Gc => "gc",
            ControllerKind::Scheduler => "scheduler",
        }
    }

    /// Krake's name of its configuration file.
    pub fn file_name(self) -> &'static str {
        match self {
            ControllerKind::Gc => "garbage_collector.yaml",
            ControllerKind::Scheduler => "scheduler.yaml",
        }
    }
}

/// A controller ready to run, with its settings.
#[derive(Debug, Clone, PartialEq)]
pub enum ControllerSpec {
    /// The garbage collector.
    Gc(GcConfig),
    /// The scheduler.
    Scheduler(SchedulerConfig),
}

impl ControllerSpec {
    /// Which controller.
    pub fn kind(&self) -> ControllerKind {
        match self {
            ControllerSpec::Gc(_) => ControllerKind::Gc,
            ControllerSpec::Scheduler(_) => ControllerKind::Scheduler,
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

/// The spec of `kind` from its settings; `section` names them in errors
/// (`controllers.gc`, `scheduler.yaml`).
pub fn spec(
    kind: ControllerKind,
    settings: &ControllerSettings,
    section: &str,
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
    match kind {
        ControllerKind::Gc => {
            let creation = &settings.automatic_cluster_creation;
            let providers = &settings.metrics_providers;
            let scheduler_only = [
                ("reschedule_after", settings.reschedule_after.is_some()),
                ("stickiness", settings.stickiness.is_some()),
                (
                    "automatic_cluster_creation",
                    creation.tosca_file.is_some() || creation.deletion_retention.is_some(),
                ),
                (
                    "metrics_providers",
                    providers.timeout.is_some() || providers.cache_ttl.is_some(),
                ),
            ];
            if let Some((key, _)) = scheduler_only.iter().find(|(_, set)| *set) {
                return Err(ConfigError::Unsupported(format!(
                    "{section}: {key} is a setting of the scheduler, not of the garbage collector"
                )));
            }
            Ok(ControllerSpec::Gc(GcConfig { workers }))
        }
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
            let leader = match elector {
                Some(elector) => {
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
                    Some(leading)
                }
                None => {
                    self.metrics.set_leader(name, true);
                    None
                }
            };
            let handle = match spec {
                ControllerSpec::Gc(config) => {
                    tracing::info!(
                        controller = name,
                        workers = config.workers,
                        "controller started"
                    );
                    let mut gc =
                        GarbageCollector::new(&reflectors, config).metrics(self.metrics.clone());
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
                        Scheduler::new(&reflectors, config).metrics(self.metrics.clone());
                    if let Some(leader) = leader {
                        scheduler = scheduler.leader(leader);
                    }
                    tokio::spawn(scheduler.run(work.clone()))
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
        let defaults = spec(
            ControllerKind::Scheduler,
            &ControllerSettings::default(),
            "x",
        )
        .unwrap();
        assert_eq!(
            defaults,
            ControllerSpec::Scheduler(SchedulerConfig::default())
        );
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

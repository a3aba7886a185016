//! The scheduler (feature `scheduler`).

use std::time::Duration;

use serde_json::{Map, Value};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::metrics_provider::ProvidersConfig;
use crate::shared::Reflectors;

/// Settings of the [`Scheduler`] (Krake's `scheduler.yaml`).
#[derive(Debug, Clone, PartialEq)]
pub struct SchedulerConfig {
    /// How many objects are scheduled at once (`worker_count`, default 5).
    pub workers: usize,
    /// How often a scheduled application is scheduled again
    /// (`reschedule_after`, default 60 s).
    pub reschedule_after: Duration,
    /// The weight of staying on the current cluster (`stickiness`, default 0.1).
    pub stickiness: f64,
    /// The TOSCA template of clusters created for applications with
    /// `auto_cluster_create` (`automatic_cluster_creation.tosca_file`,
    /// loaded); `None`: the scheduler creates no clusters.
    pub cluster_tosca: Option<Map<String, Value>>,
    /// How long an automatically created cluster that no application uses
    /// is kept (`automatic_cluster_creation.deletion_retention`, default 600 s).
    pub deletion_retention: Duration,
    /// Metrics providers: query timeout and cache.
    pub providers: ProvidersConfig,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            workers: 5,
            reschedule_after: Duration::from_secs(60),
            stickiness: 0.1,
            cluster_tosca: None,
            deletion_retention: Duration::from_secs(600),
            providers: ProvidersConfig::default(),
        }
    }
}

/// Krake's scheduler.
#[derive(Debug)]
pub struct Scheduler {
    reflectors: Reflectors,
    config: SchedulerConfig,
    metrics: Metrics,
    leader: Option<watch::Receiver<bool>>,
}

impl Scheduler {
    /// A scheduler over the shared reflectors of the process.
    pub fn new(reflectors: &Reflectors, config: SchedulerConfig) -> Self {
        Scheduler {
            reflectors: reflectors.clone(),
            config,
            metrics: Metrics::new(),
            leader: None,
        }
    }

    /// Records into `metrics`.
    #[must_use]
    pub fn metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Works only while `leader` is true.
    #[must_use]
    pub fn leader(mut self, leader: watch::Receiver<bool>) -> Self {
        self.leader = Some(leader);
        self
    }

    /// Runs until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let _ = (&self.reflectors, &self.config, &self.metrics, &self.leader);
        shutdown.cancelled().await;
    }
}

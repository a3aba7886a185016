#![allow(clippy::unwrap_used)]

use krake_data::kinds::kubernetes::{Cluster, ClusterSpec, ClusterState};
use krake_data::metadata::{Metadata, ResourceRef};
use krake_data::{ReasonCode, Timestamp};
use serde_json::{Map, Value, json};

use super::*;

fn tosca(workers: u64) -> Map<String, Value> {
    json!({
        "tosca_definitions_version": "tosca_simple_yaml_1_0",
        "topology_template": {
            "node_templates": {"wn": {"capabilities": {"scalable": {"properties": {"count": workers}}}}},
            "outputs": {"kubeconfig": {"value": "x"}}
        }
    })
    .as_object()
    .unwrap()
    .clone()
}

/// A bound cluster with a template, nothing created yet.
fn bound() -> Cluster {
    let mut spec = ClusterSpec::from_kubeconfig(Map::new());
    spec.tosca = tosca(1);
    let mut cluster = Cluster::new(Metadata::namespaced("ns", "c"), spec);
    cluster.status.scheduled_to = Some(ResourceRef::new(
        "infrastructure",
        "Cloud",
        Some("ns".to_owned()),
        "os",
    ));
    cluster
}

/// `bound` after a successful create.
fn created() -> Cluster {
    let mut cluster = bound();
    cluster.metadata.finalizers.push(FINALIZER.into());
    cluster.status = after_create(&cluster, Ok("id-1".into())).status;
    cluster
}

const KUBECONFIG: &str = "apiVersion: v1\nclusters: [{name: c, cluster: {server: 'https://1.2.3.4'}}]\n\
contexts: [{name: c, context: {cluster: c, user: u}}]\ncurrent-context: c\nusers: [{name: u, user: {token: t}}]\n";

#[test]
fn only_bound_clusters_with_a_template_are_handled() {
    let mut registered = bound();
    registered.status.scheduled_to = None;
    assert_eq!(plan(&registered), Plan::Ignore);
    let mut no_template = bound();
    no_template.spec.tosca = Map::new();
    assert_eq!(plan(&no_template), Plan::Ignore);
    assert_eq!(plan(&bound()), Plan::Create);
}

#[test]
fn a_create_records_the_infrastructure_and_polls() {
    let cluster = bound();
    let step = after_create(&cluster, Ok("id-1".into()));
    assert_eq!(step.status.state, ClusterState::Creating);
    assert_eq!(step.status.cluster_id.as_deref(), Some("id-1"));
    assert_eq!(step.status.running_on, cluster.status.scheduled_to);
    assert_eq!(step.status.last_applied_tosca, cluster.spec.tosca);
    assert_eq!(step.next, Next::Poll);
    // And the next decision is a poll, not a second create.
    assert_eq!(plan(&created()), Plan::Poll);
}

#[test]
fn polls_follow_the_provider_until_configured() {
    let cluster = created();
    for busy in [InfrastructureState::Pending, InfrastructureState::Creating] {
        let step = after_poll(&cluster, Ok(busy));
        assert_eq!(step.status, cluster.status, "nothing to write");
        assert_eq!(step.next, Next::Poll);
    }
    let step = after_poll(&cluster, Ok(InfrastructureState::Configured));
    assert_eq!(step.next, Next::FetchKubeconfig);
    let step = after_kubeconfig(&cluster, Ok(KUBECONFIG.into()));
    assert_eq!(step.status.state, ClusterState::Connecting);
    let kubeconfig = step.kubeconfig.unwrap();
    assert_eq!(kubeconfig["current-context"], "c");
    assert_eq!(step.next, Next::Idle);
    let mut connected = cluster.clone();
    connected.status = step.status;
    connected.spec.kubeconfig = kubeconfig;
    assert_eq!(plan(&connected), Plan::Idle);
    connected.status.state = ClusterState::Online;
    assert_eq!(plan(&connected), Plan::Idle);
    // Same kubeconfig again (after a reconfiguration): no spec write.
    assert_eq!(
        after_kubeconfig(&connected, Ok(KUBECONFIG.into())).kubeconfig,
        None
    );
}

#[test]
fn a_changed_template_is_an_update() {
    let mut cluster = created();
    cluster.status.state = ClusterState::Online;
    cluster.spec.tosca = tosca(3);
    assert_eq!(plan(&cluster), Plan::Update);
    let step = after_update(&cluster, Ok(()));
    assert_eq!(step.status.state, ClusterState::Reconciling);
    assert_eq!(step.status.last_applied_tosca, tosca(3));
    cluster.status = step.status;
    assert_eq!(plan(&cluster), Plan::Poll);
}

#[test]
fn unconfigured_is_failing_reconciliation_then_a_reconfiguration() {
    let mut cluster = created();
    let step = after_poll(&cluster, Ok(InfrastructureState::Unconfigured));
    assert_eq!(step.status.state, ClusterState::FailingReconciliation);
    assert_eq!(
        step.status.reason.as_ref().unwrap().code,
        ReasonCode::ReconcileFailed
    );
    cluster.status = step.status;
    assert_eq!(plan(&cluster), Plan::Reconfigure);
    assert!(may_reconfigure(&cluster));
    let step = after_reconfigure(&cluster, Ok(()));
    assert_eq!(step.status.state, ClusterState::Reconciling);
    assert_eq!(step.status.retries, 1);
    cluster.status = step.status;
    assert_eq!(plan(&cluster), Plan::Poll);
    cluster.spec.backoff_limit = 1;
    assert!(!may_reconfigure(&cluster));
    let step = reconfigurations_exhausted(&cluster);
    assert_eq!(step.status.state, ClusterState::Failed);
}

#[test]
fn a_vanished_infrastructure_is_created_again() {
    let cluster = created();
    let step = after_poll(&cluster, Err(ProviderError::NotFound));
    assert_eq!(step.status.state, ClusterState::Pending);
    assert_eq!(step.status.cluster_id, None);
    assert_eq!(step.status.running_on, None);
    assert!(step.status.last_applied_tosca.is_empty());
    let mut reset = cluster.clone();
    reset.status = step.status;
    assert_eq!(plan(&reset), Plan::Create);
}

#[test]
fn an_unreachable_provider_is_degraded_and_retried() {
    let cluster = created();
    let err = ProviderError::Unavailable("503 Service Unavailable".into());
    let step = after_poll(&cluster, Err(err.clone()));
    assert_eq!(step.status.state, ClusterState::Degraded);
    assert!(step.status.reason.as_ref().unwrap().message.contains("503"));
    assert_eq!(step.next, Next::Retry);
    let mut degraded = cluster.clone();
    degraded.status = step.status;
    assert_eq!(plan(&degraded), Plan::Poll);
    // Back to CREATING once the provider answers.
    let step = after_poll(&degraded, Ok(InfrastructureState::Creating));
    assert_eq!(step.status.state, ClusterState::Creating);
    assert_eq!(step.status.reason, None);
    // A create that could not be sent is sent again.
    let cluster = bound();
    let step = after_create(&cluster, Err(err));
    assert_eq!(step.status.state, ClusterState::Degraded);
    let mut degraded = cluster;
    degraded.status = step.status;
    assert_eq!(plan(&degraded), Plan::Create);
}

#[test]
fn a_refused_template_fails_until_it_changes_or_a_retry_is_asked() {
    let cluster = bound();
    let step = after_create(
        &cluster,
        Err(ProviderError::Refused(
            "400 Bad Request: Error parsing TOSCA".into(),
        )),
    );
    assert_eq!(step.status.state, ClusterState::Failed);
    let reason = step.status.reason.clone().unwrap();
    assert_eq!(reason.code, ReasonCode::CreateFailed);
    assert!(
        reason.message.contains("Error parsing TOSCA"),
        "{}",
        reason.message
    );
    assert_eq!(step.next, Next::Idle);
    let mut failed = cluster.clone();
    failed.status = step.status;
    assert_eq!(plan(&failed), Plan::Idle, "never sent again as it is");
    let mut edited = failed.clone();
    edited.spec.tosca = tosca(2);
    assert_eq!(plan(&edited), Plan::Create);
    let mut retry = failed;
    retry.status.state = ClusterState::Pending;
    assert_eq!(plan(&retry), Plan::Create);
}

#[test]
fn failed_infrastructures_and_bad_kubeconfigs_fail() {
    let cluster = created();
    let step = after_poll(
        &cluster,
        Ok(InfrastructureState::Failed("IM says failed".into())),
    );
    assert_eq!(step.status.state, ClusterState::Failed);
    let mut failed = cluster.clone();
    failed.status = step.status;
    assert_eq!(plan(&failed), Plan::Idle);
    for bad in [
        "{unclosed",
        "- a list",
        "apiVersion: v1\n",
        "clusters: []\ncontexts: [a]\nusers: [b]\n",
    ] {
        let step = after_kubeconfig(&cluster, Ok(bad.into()));
        assert_eq!(step.status.state, ClusterState::Failed, "{bad}");
        assert!(
            step.status
                .reason
                .unwrap()
                .message
                .contains("kubeconfig output"),
            "{bad}"
        );
        assert_eq!(step.kubeconfig, None);
    }
}

#[test]
fn deletion_deletes_polls_and_releases() {
    let mut cluster = created();
    cluster.metadata.deleted = Some(Timestamp::now());
    cluster.metadata.finalizers.push("cascade_deletion".into());
    assert_eq!(plan(&cluster), Plan::WaitForOthers);
    cluster.metadata.finalizers.pop();
    assert_eq!(plan(&cluster), Plan::Delete);
    let step = after_delete(&cluster, Ok(()));
    assert_eq!(step.status.state, ClusterState::Deleting);
    cluster.status = step.status;
    assert_eq!(plan(&cluster), Plan::PollDeletion);
    let step = after_deletion_poll(&cluster, Ok(InfrastructureState::Deleting));
    assert_eq!(step.next, Next::Poll);
    let step = after_deletion_poll(&cluster, Err(ProviderError::NotFound));
    assert_eq!(step.status.cluster_id, None);
    cluster.status = step.status;
    assert_eq!(plan(&cluster), Plan::Release);
    // Gone already when asked: straight to the release.
    let mut other = created();
    other.metadata.deleted = Some(Timestamp::now());
    let step = after_delete(&other, Err(ProviderError::NotFound));
    other.status = step.status;
    assert_eq!(plan(&other), Plan::Release);
    // A refused delete is not asked again and again.
    let mut refused = created();
    refused.metadata.deleted = Some(Timestamp::now());
    refused.status = after_delete(&refused, Err(ProviderError::Refused("403".into()))).status;
    assert_eq!(refused.status.state, ClusterState::Failed);
    assert_eq!(plan(&refused), Plan::Idle);
    // Never created: nothing to delete.
    let mut never = bound();
    never.metadata.finalizers.push(FINALIZER.into());
    never.metadata.deleted = Some(Timestamp::now());
    assert_eq!(plan(&never), Plan::Release);
    let mut foreign = bound();
    foreign.metadata.deleted = Some(Timestamp::now());
    assert_eq!(plan(&foreign), Plan::Ignore);
}

#[test]
fn templates_are_sent_as_yaml() {
    let text = template_text(&tosca(2)).unwrap();
    assert!(text.contains("tosca_definitions_version"), "{text}");
    let back: Value = serde_saphyr::from_str(&text).unwrap();
    assert_eq!(back, Value::Object(tosca(2)));
}

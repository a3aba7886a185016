//! The Magnum handler (deprecated in Krake, kept small): binds Magnum
//! clusters to OpenStack projects.
//!
//! An unbound, not deleted MagnumCluster is bound to the best project of
//! its namespace (Krake looks across all namespaces; a tenant's cluster
//! should not land in another tenant's project) whose labels match
//! `spec.constraints.project.labels`, scored like clouds. The project's
//! labels and metrics are first copied into the cluster (a PUT, only when
//! something is missing), then `PUT /binding` with the project and its
//! template. No match: `status.reason` NO_SUITABLE_RESOURCE, looked at again
//! when a project changes.

use std::sync::Arc;

use futures::future::join_all;
use krake_client::Api;
use krake_data::kinds::openstack::{
    MagnumCluster, MagnumClusterBinding, Project, ProjectState, ProjectStatus,
};
use krake_data::{Reason, ReasonCode, ResourceRef};

use crate::action::Action;
use crate::scheduler::candidates::{candidate, write_status};
use crate::scheduler::placement::{self, Candidate, CandidateKind};
use crate::scheduler::{Context, SchedulerError};

/// One Magnum cluster.
pub(crate) async fn reconcile(
    cluster: Arc<MagnumCluster>,
    cx: Arc<Context>,
) -> Result<Action, SchedulerError> {
    if cluster.metadata.is_deleted() || cluster.status.project.is_some() {
        return Ok(Action::await_change());
    }
    let namespace = cluster.metadata.namespace.clone();
    let labels = cluster
        .spec
        .constraints
        .as_ref()
        .and_then(|c| c.project.as_ref())
        .and_then(|p| p.labels.clone());
    let projects = cx.projects.filter(|p| {
        p.metadata.namespace == namespace
            && !p.metadata.is_deleted()
            && placement::labels_match(labels.as_deref(), &p.metadata.labels)
    });
    let candidates = join_all(projects.iter().map(|p| project_candidate(p, &cx))).await;
    let refs: Vec<&Candidate> = candidates.iter().collect();
    let Some(winner) = placement::choose(&refs, None, 0.0, |n| fastrand::usize(..n)) else {
        let reason = Reason::new(ReasonCode::NoSuitableResource, "No matching project found");
        if cluster.status.reason.as_ref() != Some(&reason) {
            let mut updated = (*cluster).clone();
            updated.status.reason = Some(reason);
            Api::<MagnumCluster>::all(cx.client.clone())
                .status(&updated)
                .await?;
        }
        return Ok(Action::await_change());
    };
    let Some(project) = projects
        .iter()
        .find(|p| ResourceRef::of(p.as_ref()) == winner.target)
    else {
        return Ok(Action::await_change());
    };
    let Some(namespace) = namespace else {
        return Ok(Action::await_change());
    };
    let api: Api<MagnumCluster> = Api::namespaced(cx.client.clone(), &namespace);
    let mut updated = (*cluster).clone();
    for (key, value) in &project.metadata.labels {
        updated
            .metadata
            .labels
            .entry(key.clone())
            .or_insert_with(|| value.clone());
    }
    for metric in &project.spec.metrics {
        if !updated.spec.metrics.iter().any(|m| m.name == metric.name) {
            updated.spec.metrics.push(metric.clone());
        }
    }
    if updated.metadata.labels != cluster.metadata.labels || updated.spec != cluster.spec {
        api.update(&updated).await?;
    }
    tracing::info!(
        namespace = %namespace,
        cluster = %cluster.metadata.name,
        project = %project.metadata.name,
        "binding Magnum cluster to a project"
    );
    api.binding(
        &cluster.metadata.name,
        &MagnumClusterBinding::new(winner.target.clone(), project.spec.template.clone()),
    )
    .await?;
    Ok(Action::await_change())
}

async fn project_candidate(project: &Arc<Project>, cx: &Context) -> Candidate {
    let fetched = cx
        .candidates
        .fetcher
        .fetch(&project.spec.metrics, project.metadata.namespace.as_deref())
        .await;
    let wanted = if fetched.failures.is_empty() {
        ProjectStatus::default()
    } else {
        ProjectStatus {
            state: ProjectState::FailingMetrics,
            metrics_reasons: fetched.failures.clone(),
        }
    };
    if wanted != project.status {
        let mut updated = (**project).clone();
        updated.status = wanted;
        let api: Api<Project> = Api::all(cx.client.clone());
        write_status(api.status(&updated).await, project.as_ref());
    }
    candidate(
        ResourceRef::of(project.as_ref()),
        CandidateKind::Cloud,
        project.metadata.labels.clone(),
        Vec::new(),
        fetched,
    )
}

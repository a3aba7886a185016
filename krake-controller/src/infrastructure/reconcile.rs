//! The decisions of the infrastructure controller, without I/O: what to do
//! with a cluster ([`plan`]) and the cluster's status after each answer of
//! the provider ([`after_create`], [`after_update`], [`after_reconfigure`], [`after_poll`], [`after_kubeconfig`],
//! [`after_deletion_poll`]).
//!
//! The states, as Krake has them:
//!
//! - `spec.tosca` differs from `status.last_applied_tosca`: without an
//!   infrastructure (`cluster_id`) a create, CREATING; with one an update,
//!   RECONCILING. `last_applied_tosca` is the template last *sent*, so a
//!   template the provider refused is not sent again until it changes.
//! - CREATING, RECONCILING or DEGRADED with an infrastructure: polled.
//!   Configured: the kubeconfig output becomes `spec.kubeconfig` and the
//!   cluster CONNECTING (the Kubernetes cluster controller takes it on).
//!   Unconfigured: FAILING_RECONCILIATION, then a reconfiguration
//!   (RECONCILING, `retries` + 1, FAILED past `spec.backoff_limit`). Failed:
//!   FAILED. Gone (404): back to PENDING without `cluster_id`, `running_on`
//!   and `last_applied_tosca`, so it is created again.
//! - A provider that cannot be reached or fails on its side: DEGRADED with
//!   the reason, tried again with backoff. A provider that refuses: FAILED
//!   with its message.
//! - FAILED stays FAILED until the template changes, or until someone asks
//!   for a retry by setting the state to PENDING (`/status`).
//! - Deleted: the infrastructure is deleted (DELETING), polled until gone,
//!   then the finalizer is removed.

use krake_data::kinds::kubernetes::{Cluster, ClusterState, ClusterStatus};
use krake_data::{Reason, ReasonCode};
use serde_json::{Map, Value};

use super::provider::{InfrastructureState, ProviderError};

/// The finalizer of the infrastructure controller.
pub use krake_data::kinds::infrastructure::INFRASTRUCTURE_RESOURCES_DELETION_FINALIZER as FINALIZER;

/// What to do with a cluster now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// Not created by this controller (not bound to a cloud, no template,
    /// not carrying our finalizer).
    Ignore,
    /// Nothing to do until the cluster changes (it runs, or it FAILED).
    Idle,
    /// Create the infrastructure from the template.
    Create,
    /// Send the changed template to the infrastructure.
    Update,
    /// Configure the infrastructure again.
    Reconfigure,
    /// Ask the provider for the infrastructure's state.
    Poll,
    /// Deleted: delete the infrastructure.
    Delete,
    /// Deleted, deletion under way: ask whether it is gone.
    PollDeletion,
    /// Deleted, nothing (left) to delete: remove our finalizer.
    Release,
    /// Deleted, but another finalizer comes first: wait.
    WaitForOthers,
}

/// What to do after a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Look again after the poll interval.
    Poll,
    /// A transient failure: try again after the backoff.
    Retry,
    /// Read the kubeconfig output now.
    FetchKubeconfig,
    /// Decide again at once (the status written says what comes next).
    Again,
    /// Nothing until the cluster changes.
    Idle,
}

/// The outcome of a step: the status to write (when it differs), the
/// kubeconfig to put into the spec, and what comes next.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// The cluster's status after the step.
    pub status: ClusterStatus,
    /// A new `spec.kubeconfig`.
    pub kubeconfig: Option<Map<String, Value>>,
    /// What comes next.
    pub next: Next,
}

impl Step {
    fn new(status: ClusterStatus, next: Next) -> Self {
        Step {
            status,
            kubeconfig: None,
            next,
        }
    }
}

fn ours(cluster: &Cluster) -> bool {
    cluster.metadata.finalizers.iter().any(|f| f == FINALIZER)
}

/// Whether the cluster is one this controller creates: bound to a cloud
/// and described by a template.
pub fn managed(cluster: &Cluster) -> bool {
    cluster.status.scheduled_to.is_some() && !cluster.spec.tosca.is_empty()
}

/// What to do with `cluster` now.
pub fn plan(cluster: &Cluster) -> Plan {
    let status = &cluster.status;
    if cluster.metadata.is_deleted() {
        if !ours(cluster) {
            return Plan::Ignore;
        }
        if cluster.metadata.tail_finalizer() != Some(FINALIZER) {
            return Plan::WaitForOthers;
        }
        let delete_failed = status.state == ClusterState::Failed
            && status.reason.as_ref().map(|r| r.code) == Some(ReasonCode::DeleteFailed);
        return match (&status.cluster_id, status.state) {
            // FAILED deleting: until someone asks for a retry (or forces
            // the deletion).
            (Some(_), _) if delete_failed => Plan::Idle,
            (Some(_), ClusterState::Deleting) => Plan::PollDeletion,
            (Some(_), _) => Plan::Delete,
            (None, _) => Plan::Release,
        };
    }
    if !managed(cluster) {
        return Plan::Ignore;
    }
    let changed = cluster.spec.tosca != status.last_applied_tosca;
    match (status.state, &status.cluster_id, changed) {
        (ClusterState::Failed, _, false) => Plan::Idle,
        (_, None, true) | (ClusterState::Pending, None, false) => Plan::Create,
        (_, Some(_), true) => Plan::Update,
        (_, None, false) => Plan::Idle,
        (ClusterState::FailingReconciliation, Some(_), false) => Plan::Reconfigure,
        (
            ClusterState::Pending
            | ClusterState::Creating
            | ClusterState::Reconciling
            | ClusterState::Degraded,
            Some(_),
            false,
        ) => Plan::Poll,
        (_, Some(_), false) => Plan::Idle,
    }
}

fn reason(code: ReasonCode, message: impl Into<String>) -> Option<Reason> {
    Some(Reason::new(code, message))
}

/// DEGRADED with `reason`, tried again with backoff.
fn degraded(status: &ClusterStatus, code: ReasonCode, err: &ProviderError) -> Step {
    let mut status = status.clone();
    status.state = ClusterState::Degraded;
    status.reason = reason(code, err.to_string());
    Step::new(status, Next::Retry)
}

/// FAILED with `reason`, until the cluster changes.
fn failed(status: &ClusterStatus, code: ReasonCode, message: String) -> Step {
    let mut status = status.clone();
    status.state = ClusterState::Failed;
    status.reason = reason(code, message);
    Step::new(status, Next::Idle)
}

/// The infrastructure is gone: created again from scratch.
fn reset(status: &ClusterStatus) -> Step {
    let mut status = status.clone();
    status.state = ClusterState::Pending;
    status.reason = None;
    status.cluster_id = None;
    status.running_on = None;
    status.last_applied_tosca = Map::new();
    status.retries = 0;
    Step::new(status, Next::Again)
}

/// Whether the infrastructure already has a kubeconfig (it was configured
/// once): a running infrastructure is then RECONCILING, not CREATING.
fn phase(cluster: &Cluster) -> ClusterState {
    if cluster.spec.kubeconfig.is_empty() {
        ClusterState::Creating
    } else {
        ClusterState::Reconciling
    }
}

/// After a provider call that failed with `err`: `code` and `what` name
/// the call in the reason.
fn call_failed(cluster: &Cluster, err: ProviderError, code: ReasonCode, what: &str) -> Step {
    let current = &cluster.status;
    match err {
        ProviderError::NotFound if current.cluster_id.is_some() => reset(current),
        err if err.is_transient() => degraded(current, code, &err),
        err => {
            let mut step = failed(current, code, format!("the {what} failed: {err}"));
            if what != "reconfiguration" {
                // Not sent again until the template changes.
                step.status.last_applied_tosca = cluster.spec.tosca.clone();
            }
            step
        }
    }
}

/// The status after a create answered `result` (the new infrastructure's
/// id).
pub fn after_create(cluster: &Cluster, result: Result<String, ProviderError>) -> Step {
    match result {
        Ok(id) => {
            let mut status = cluster.status.clone();
            status.state = ClusterState::Creating;
            status.reason = None;
            status.cluster_id = Some(id);
            status.running_on.clone_from(&status.scheduled_to);
            status.last_applied_tosca = cluster.spec.tosca.clone();
            status.retries = 0;
            Step::new(status, Next::Poll)
        }
        Err(err) => call_failed(cluster, err, ReasonCode::CreateFailed, "creation"),
    }
}

/// The status after an update answered `result`.
pub fn after_update(cluster: &Cluster, result: Result<(), ProviderError>) -> Step {
    match result {
        Ok(()) => {
            let mut status = cluster.status.clone();
            status.state = ClusterState::Reconciling;
            status.reason = None;
            status.last_applied_tosca = cluster.spec.tosca.clone();
            status.retries = 0;
            Step::new(status, Next::Poll)
        }
        Err(err) => call_failed(cluster, err, ReasonCode::ReconcileFailed, "update"),
    }
}

/// The status after a reconfiguration answered `result`.
pub fn after_reconfigure(cluster: &Cluster, result: Result<(), ProviderError>) -> Step {
    match result {
        Ok(()) => {
            let mut status = cluster.status.clone();
            status.state = ClusterState::Reconciling;
            status.retries = status.retries.saturating_add(1);
            Step::new(status, Next::Poll)
        }
        Err(err) => call_failed(
            cluster,
            err,
            ReasonCode::ReconfigureFailed,
            "reconfiguration",
        ),
    }
}

/// Whether a reconfiguration may be tried (`spec.backoff_limit` -1: always;
/// else at most that many).
pub fn may_reconfigure(cluster: &Cluster) -> bool {
    cluster.spec.backoff_limit < 0 || cluster.status.retries < cluster.spec.backoff_limit
}

/// FAILED because the reconfigurations did not help.
pub fn reconfigurations_exhausted(cluster: &Cluster) -> Step {
    failed(
        &cluster.status,
        ReasonCode::ReconfigureFailed,
        format!(
            "the infrastructure is still unconfigured after {} reconfigurations (spec.backoff_limit)",
            cluster.status.retries
        ),
    )
}

/// The status after a poll answered `result`.
pub fn after_poll(cluster: &Cluster, result: Result<InfrastructureState, ProviderError>) -> Step {
    let current = &cluster.status;
    let busy = || {
        let mut status = current.clone();
        if matches!(status.state, ClusterState::Degraded | ClusterState::Pending) {
            status.state = phase(cluster);
            status.reason = None;
        }
        Step::new(status, Next::Poll)
    };
    match result {
        Ok(InfrastructureState::Pending | InfrastructureState::Creating) => busy(),
        Ok(InfrastructureState::Deleting) => busy(),
        Ok(InfrastructureState::Configured) => Step::new(current.clone(), Next::FetchKubeconfig),
        Ok(InfrastructureState::Unconfigured) => {
            let mut status = current.clone();
            status.state = ClusterState::FailingReconciliation;
            status.reason = reason(
                ReasonCode::ReconcileFailed,
                "the infrastructure provider could not configure the infrastructure",
            );
            Step::new(status, Next::Again)
        }
        Ok(InfrastructureState::Failed(message)) => failed(
            current,
            ReasonCode::ReconcileFailed,
            format!("the infrastructure failed: {message}"),
        ),
        Err(ProviderError::NotFound) => reset(current),
        Err(err) if err.is_transient() => degraded(current, ReasonCode::RetrieveFailed, &err),
        Err(err) => failed(
            current,
            ReasonCode::RetrieveFailed,
            format!("cannot read the infrastructure's state: {err}"),
        ),
    }
}

/// Why a kubeconfig output cannot be used, if it cannot.
pub fn parse_kubeconfig(text: &str) -> Result<Map<String, Value>, String> {
    let value: Value = serde_saphyr::from_str(text)
        .map_err(|err| format!("not YAML: {}", one_line(&err.to_string())))?;
    let Value::Object(map) = value else {
        return Err("not a YAML mapping".to_owned());
    };
    for key in ["clusters", "contexts", "users"] {
        let present = map
            .get(key)
            .and_then(Value::as_array)
            .is_some_and(|list| !list.is_empty());
        if !present {
            return Err(format!("no {key}"));
        }
    }
    Ok(map)
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The status and kubeconfig after reading the kubeconfig output answered
/// `result`.
pub fn after_kubeconfig(cluster: &Cluster, result: Result<String, ProviderError>) -> Step {
    let current = &cluster.status;
    match result {
        Ok(text) => match parse_kubeconfig(&text) {
            Ok(kubeconfig) => {
                let mut status = current.clone();
                status.state = ClusterState::Connecting;
                status.reason = None;
                status.retries = 0;
                Step {
                    status,
                    kubeconfig: (kubeconfig != cluster.spec.kubeconfig).then_some(kubeconfig),
                    next: Next::Idle,
                }
            }
            Err(problem) => failed(
                current,
                ReasonCode::InvalidResource,
                format!("the kubeconfig output of the infrastructure cannot be used: {problem}"),
            ),
        },
        Err(ProviderError::NotFound) => reset(current),
        Err(err) if err.is_transient() => degraded(current, ReasonCode::RetrieveFailed, &err),
        Err(err) => failed(
            current,
            ReasonCode::RetrieveFailed,
            format!("cannot read the kubeconfig output of the infrastructure: {err}"),
        ),
    }
}

/// The status after asking for the deletion (`Ok(())`, or the provider's
/// error).
pub fn after_delete(cluster: &Cluster, result: Result<(), ProviderError>) -> Step {
    let current = &cluster.status;
    match result {
        Ok(()) => {
            let mut status = current.clone();
            status.state = ClusterState::Deleting;
            status.reason = None;
            Step::new(status, Next::Poll)
        }
        Err(ProviderError::NotFound) => gone(current),
        Err(err) if err.is_transient() => degraded(current, ReasonCode::DeleteFailed, &err),
        Err(err) => failed(
            current,
            ReasonCode::DeleteFailed,
            format!("the infrastructure provider refused the delete: {err}"),
        ),
    }
}

/// Nothing left to delete: the finalizer goes next.
fn gone(status: &ClusterStatus) -> Step {
    let mut status = status.clone();
    status.cluster_id = None;
    status.running_on = None;
    Step::new(status, Next::Again)
}

/// The status after polling a deletion answered `result`.
pub fn after_deletion_poll(
    cluster: &Cluster,
    result: Result<InfrastructureState, ProviderError>,
) -> Step {
    let current = &cluster.status;
    match result {
        Err(ProviderError::NotFound) => gone(current),
        Ok(InfrastructureState::Failed(message)) => failed(
            current,
            ReasonCode::DeleteFailed,
            format!("the deletion of the infrastructure failed: {message}"),
        ),
        Ok(_) => {
            let mut status = current.clone();
            status.state = ClusterState::Deleting;
            status.reason = None;
            Step::new(status, Next::Poll)
        }
        Err(err) if err.is_transient() => {
            let mut step = degraded(current, ReasonCode::DeleteFailed, &err);
            // Still deleting: the state stays what tells the next step.
            step.status.state = ClusterState::Deleting;
            step
        }
        Err(err) => failed(
            current,
            ReasonCode::DeleteFailed,
            format!("cannot read the state of the infrastructure being deleted: {err}"),
        ),
    }
}

/// The template as the provider takes it (YAML text).
pub fn template_text(tosca: &Map<String, Value>) -> Result<String, String> {
    serde_saphyr::to_string(tosca).map_err(|err| one_line(&err.to_string()))
}

#[cfg(test)]
mod tests;

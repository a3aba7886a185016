//! The Kubernetes application controller: applications applied to,
//! observed on, healed on, migrated between and removed from their
//! clusters.
//!
//! # Flow (one reconcile of an application)
//!
//! 1. **Deleted**, our finalizer `kubernetes_resources_deletion` at the
//!    tail: with the `shutdown` hook, the workload is asked to shut down
//!    first (below); then state DELETING, every resource of the
//!    application deleted on its `running_on` cluster and on its
//!    `scheduled_to` cluster (where an apply may have happened that
//!    `running_on` does not record yet; 404 is fine; a cluster that no
//!    longer exists is skipped), `running_on` cleared, the finalizer popped
//!    (the API then removes the object).
//! 2. **Accepted** only once the scheduler handed it over
//!    (`kube_controller_triggered ≥ modified`, Krake's rule, so every user
//!    update goes through the scheduler first) and it has `scheduled_to`.
//!    A FAILED application is taken again when the user changed it after
//!    it failed (Krake never takes it again).
//!    A TOSCA or CSAR application without a manifest is **translated**
//!    first ([`tosca`](crate::kubernetes::tosca)): state TRANSLATING, the
//!    template read (inline, or from its URL with a timeout and a size cap)
//!    and translated, the manifest written into `spec.manifest` with an
//!    update of the application. That update is a change like a user's: the
//!    scheduler hands the application over again
//!    (`kube_controller_triggered ≥ modified`), and from then on it is a
//!    plain manifest application (CREATING, RUNNING). A template that
//!    cannot be read or translated: FAILED with INVALID_TOSCA_MANIFEST and
//!    the problem with its place, until the user changes the application.
//! 3. The finalizer is pushed (once).
//! 4. **Migration** (`running_on` ≠ `scheduled_to`): with the `shutdown`
//!    hook, the workload is asked to shut down first (below); then state
//!    MIGRATING, every resource applied on the new cluster, then deleted on
//!    the old one; then `running_on` moves (state RUNNING, the hook's grace
//!    period cleared).
//! 5. **Reconcile**: the hooks' tokens and certificates written to the
//!    status first if missing ([`hooks`]); the
//!    desired manifest (`spec.manifest`, through the
//!    [`ApplicationExtensions`] seam for TOSCA, then mangled by the hooks:
//!    their Secrets, variables and volume), its observer schema (custom
//!    entries from `spec.observer_schema` with the hooks' fields, the
//!    default for the rest) and `last_applied_manifest`. The live objects
//!    come from the shared watches ([`Observations`]), not from GETs. A
//!    resource that is missing on the cluster, drifted in an observed
//!    field, or whose desired state changed since the last apply (a field
//!    removed) is applied (server-side apply); a resource no longer in the
//!    manifest (or a hook's Secret once the hook is gone) is deleted.
//!    Fields nobody observes are left alone.
//! 6. The status (state from the workloads' health, `container_health`,
//!    `services`, `running_on`, the manifests) is written only when it
//!    changed.
//!
//! Every change of an observed object on the cluster wakes its application
//! at once (a deleted Deployment is back within the watch latency); a slow
//! resync (`resync`, default 60 s) is the safety net.
//!
//! # The shutdown hook before a deletion or migration
//!
//! (Details: [`shutdown`].) Unless the
//! state is READY_FOR_ACTION already (or DELETING, MIGRATING: the step
//! began):
//!
//! 1. state WAITING_FOR_CLEANING and `shutdown_grace_period = now + grace`
//!    written, then `PUT http://<status.services["shutdown"]>/shutdown`
//!    sent to the workload (fenced like the cluster writes); the reconcile
//!    ends and asks to run again when the grace period ends;
//! 2. the workload's acknowledgement (`PUT …/shutdown {token}` to the API:
//!    READY_FOR_ACTION) wakes the application through the watch, and the
//!    deletion or migration goes on;
//! 3. a grace period over without it: asked again `failure_retry_count`
//!    times, then the failure strategy: `delete` writes READY_FOR_ACTION
//!    and goes on anyway, `give_up` leaves DEGRADED with a reason naming
//!    the failed shutdown until `PUT …/retry` (WAITING_FOR_CLEANING) starts
//!    again.
//!
//! A cluster error during a migration past the hook keeps the state
//! (READY_FOR_ACTION, MIGRATING) and writes only the reason, so the retry
//! does not ask the workload again.
//!
//! # Errors (unlike Krake's "FAILED at the first exception")
//!
//! - A cluster that cannot be reached, times out or answers 5xx/429: state
//!   DEGRADED with reason CLUSTER_NOT_REACHABLE and the cause, retried with
//!   the controller's per-key exponential backoff.
//! - A manifest the cluster refuses (400, 403, 404 such as a missing
//!   namespace, 409, 422): FAILED with KUBERNETES_ERROR and the cluster's
//!   own message. A kind the cluster does not serve: FAILED with
//!   UNSUPPORTED_RESOURCE; a custom resource definition that cannot be read:
//!   INVALID_CUSTOM_RESOURCE; a resource without apiVersion, kind or name:
//!   INVALID_RESOURCE.
//! - Krake API failures: retried with backoff, nothing written.
//!
//! # Fencing
//!
//! Every write to a cluster (apply, delete, the shutdown hook's request)
//! first asks the Krake client's write guard
//! ([`Client::may_write`](krake_client::Client::may_write)):
//! under leader election a replica that lost its lease (a paused process
//! that woke up) changes nothing on the clusters either.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use krake_client::{Api, Client};
use krake_data::Timestamp;
use krake_data::kinds::kubernetes::{
    Application, ApplicationState, ApplicationStatus, Cluster, ManifestResource,
};
use krake_data::{Reason, ReasonCode, ResourceRef};
use kube::api::DynamicObject;
use serde_json::Value;

use crate::action::Action;
use crate::kubernetes::cluster_client::{
    ClusterClient, ClusterClients, KubeError, ResolvedKind, fingerprint,
};
use crate::kubernetes::health::{application_health, service_endpoint, workload_health};
use crate::kubernetes::hooks::shutdown::{self, Purpose, ShutdownHook, Step};
use crate::kubernetes::hooks::{self, HooksConfig};
use crate::kubernetes::observation::{Observations, Observed};
use crate::kubernetes::observer_schema::{self, ResourceId};
use crate::object_key::ObjectKey;
use crate::store::Store;
use crate::work_queue::Attempt;

/// The finalizer of the application controller (Krake's name).
pub const FINALIZER: &str = "kubernetes_resources_deletion";

/// The seam for hooks (`complete`, `shutdown`) and TOSCA/CSAR translation:
/// what turns an application into the manifest applied to its cluster. The
/// default ([`PlainManifest`]) applies `spec.manifest` as it is.
pub trait ApplicationExtensions: Send + Sync + std::fmt::Debug {
    /// The manifest to apply for `app`, and the observer schema entries to
    /// add for what it added (Krake's mangling hooks). `Err` is a message
    /// for INVALID_TOSCA_MANIFEST.
    fn desired_manifest(&self, app: &Application) -> Result<DesiredManifest, String>;
}

/// What [`ApplicationExtensions::desired_manifest`] returns.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DesiredManifest {
    /// The resources to apply.
    pub manifest: Vec<ManifestResource>,
    /// Extra custom observer schema entries (for resources or fields the
    /// extension added).
    pub observer_schema: Vec<ManifestResource>,
}

/// `spec.manifest` as it is. TOSCA and CSAR applications get theirs from
/// the translation step before ([`tosca`](crate::kubernetes::tosca)); one
/// that comes here without a manifest is refused with
/// INVALID_TOSCA_MANIFEST.
#[derive(Debug, Clone, Copy, Default)]
pub struct PlainManifest;

impl ApplicationExtensions for PlainManifest {
    fn desired_manifest(&self, app: &Application) -> Result<DesiredManifest, String> {
        if app.spec.manifest.is_empty() && (!app.spec.tosca.is_empty() || app.spec.csar.is_some()) {
            return Err(
                "TOSCA and CSAR applications are not supported by this controller yet".into(),
            );
        }
        Ok(DesiredManifest {
            manifest: app.spec.manifest.clone(),
            observer_schema: Vec::new(),
        })
    }
}

/// Why a reconcile step failed; the application is tried again with
/// backoff.
#[derive(Debug, thiserror::Error)]
pub enum ApplicationError {
    /// A request to the Krake API failed.
    #[error("krake api: {0}")]
    Api(#[from] krake_client::Error),
    /// The cluster could not be reached (the status says DEGRADED).
    #[error("{0}")]
    Cluster(KubeError),
    /// The application's cluster is not known (yet).
    #[error("the cluster {0} does not exist")]
    MissingCluster(String),
}

/// `metadata.modified` after our own write, and before it.
pub(crate) type OwnWrite = (Option<Timestamp>, Option<Timestamp>);

/// What the reconciles share.
#[derive(Debug)]
pub(crate) struct Context {
    pub client: Client,
    pub clusters: Store<Cluster>,
    pub clients: Arc<ClusterClients>,
    pub observations: Observations,
    pub extensions: Arc<dyn ApplicationExtensions>,
    /// Reads the templates and archives of TOSCA and CSAR applications.
    pub fetcher: crate::kubernetes::tosca::fetch::Fetcher,
    pub resync: Duration,
    /// `metadata.modified` our own finalizer push produced, per application,
    /// with the `modified` before it: that change is not the user's, so it
    /// needs no new hand-off from the scheduler.
    pub own_writes: Mutex<HashMap<ObjectKey, OwnWrite>>,
    /// The hooks' settings: tokens, certificates, mangling.
    pub hooks: Arc<HooksConfig>,
    /// The shutdown hook before deletions and migrations.
    pub shutdown: ShutdownHook,
}

/// One application.
pub(crate) async fn reconcile(
    app: Arc<Application>,
    cx: Arc<Context>,
) -> Result<Action, ApplicationError> {
    let name = app.metadata.name.clone();
    match reconcile_version(app, cx).await {
        // Someone (the scheduler, a user) wrote the application since this
        // version was read: the newer one is on its way through the watch
        // and starts the next run; no backoff for that.
        Err(ApplicationError::Api(err)) if err.is_conflict() => {
            tracing::debug!(application = %name, "application changed meanwhile; next version");
            Ok(Action::await_change())
        }
        other => other,
    }
}

async fn reconcile_version(
    app: Arc<Application>,
    cx: Arc<Context>,
) -> Result<Action, ApplicationError> {
    let key = ObjectKey::of(app.as_ref());
    if app.metadata.is_deleted() {
        if app.metadata.finalizers.last().map(String::as_str) == Some(FINALIZER) {
            return match shutdown_first(&app, &cx, Purpose::Deletion).await? {
                Gate::Proceed(app) => cleanup(&app, &cx).await,
                Gate::Wait(action) => Ok(action),
            };
        }
        if !app.metadata.finalizers.iter().any(|f| f == FINALIZER) {
            cx.observations.release(&key, None);
        }
        return Ok(Action::await_change());
    }
    if !accepted(&app, &cx) {
        return Ok(Action::await_change());
    }
    let Some(target) = app.status.scheduled_to.clone() else {
        return Ok(Action::await_change());
    };
    if crate::kubernetes::tosca::fetch::needs_translation(&app.spec) {
        return translate(&app, &cx).await;
    }
    let app = if app.metadata.finalizers.iter().any(|f| f == FINALIZER) {
        app
    } else {
        let mut updated = (*app).clone();
        updated.metadata.finalizers.push(FINALIZER.to_owned());
        let updated = apps(&app, &cx).update(&updated).await?;
        if let Ok(mut own) = cx.own_writes.lock() {
            own.insert(
                key.clone(),
                (updated.metadata.modified, app.metadata.modified),
            );
        }
        Arc::new(updated)
    };
    // The hooks' tokens and certificates: in the status before any
    // manifest that uses them is applied, made once.
    let app = match hooks::prepare_status(&cx.hooks, &app) {
        Ok(None) => app,
        Ok(Some(status)) => {
            let mut updated = (*app).clone();
            updated.status = status;
            Arc::new(apps(&app, &cx).status(&updated).await?)
        }
        Err(err) => {
            let mut status = app.status.clone();
            status.state = ApplicationState::Failed;
            status.reason = Some(Reason::new(ReasonCode::InternalError, err.to_string()));
            status.kube_controller_triggered = Some(Timestamp::now());
            write_status(&app, &cx, status).await?;
            return Ok(Action::await_change());
        }
    };
    match app.status.running_on.clone() {
        Some(old) if !same_cluster(&old, &target) => {
            match shutdown_first(&app, &cx, Purpose::Migration).await? {
                Gate::Proceed(app) => migrate(&app, &cx, old, target).await,
                Gate::Wait(action) => Ok(action),
            }
        }
        _ => run_on(&app, &cx, &target, None).await,
    }
}

/// Whether a deletion or migration may go on after the shutdown hook.
enum Gate {
    /// Yes, with this (maybe just written) version of the application.
    Proceed(Arc<Application>),
    /// Not yet: the workload was asked, or is given time, or the hook gave
    /// up.
    Wait(Action),
}

/// The shutdown hook before a deletion or migration (see
/// [`shutdown`](crate::kubernetes::hooks::shutdown)): one step of it, never
/// waiting in the worker.
async fn shutdown_first(
    app: &Arc<Application>,
    cx: &Context,
    purpose: Purpose,
) -> Result<Gate, ApplicationError> {
    let key = ObjectKey::of(app.as_ref());
    match cx.shutdown.next_step(&key, app, purpose) {
        Step::Proceed => {
            cx.shutdown.forget(&key);
            Ok(Gate::Proceed(app.clone()))
        }
        Step::Ask {
            attempt,
            grace_period,
            grace,
        } => {
            // The request is a write to the cluster's world: fenced. The
            // state is written first, so that an acknowledgement that comes
            // at once finds WAITING_FOR_CLEANING.
            cx.client.may_write()?;
            let mut updated = (**app).clone();
            updated.status.state = ApplicationState::WaitingForCleaning;
            updated.status.shutdown_grace_period = Some(grace_period);
            let updated = apps(app, cx).status(&updated).await?;
            cx.shutdown.record(&key, attempt);
            cx.client.may_write()?;
            tracing::info!(
                application = %app.metadata.name,
                purpose = ?purpose,
                attempt,
                grace = ?grace,
                "shutdown hook: waiting for the application to shut down"
            );
            cx.shutdown.request(&updated, attempt, grace);
            Ok(Gate::Wait(Action::requeue(grace)))
        }
        Step::Wait(rest) => Ok(Gate::Wait(Action::requeue(rest))),
        Step::Force => {
            tracing::warn!(
                application = %app.metadata.name,
                purpose = ?purpose,
                "shutdown hook: no acknowledgement; going ahead (failure strategy delete)"
            );
            let mut updated = (**app).clone();
            updated.status.state = ApplicationState::ReadyForAction;
            updated.status.shutdown_grace_period = None;
            let updated = apps(app, cx).status(&updated).await?;
            cx.shutdown.forget(&key);
            Ok(Gate::Proceed(Arc::new(updated)))
        }
        Step::GiveUp(reason) => {
            tracing::warn!(
                application = %app.metadata.name,
                purpose = ?purpose,
                reason = %reason.message,
                "shutdown hook: no acknowledgement; giving up"
            );
            let mut status = app.status.clone();
            status.state = ApplicationState::Degraded;
            status.reason = Some(reason);
            status.shutdown_grace_period = None;
            write_status(app, cx, status).await?;
            cx.shutdown.forget(&key);
            Ok(Gate::Wait(Action::await_change()))
        }
        Step::GivenUp => Ok(Gate::Wait(Action::await_change())),
    }
}

/// Krake's hand-off rule, plus: our own finalizer push is not a user change;
/// a FAILED application changed after it failed is taken again.
fn accepted(app: &Application, cx: &Context) -> bool {
    let triggered = app.status.kube_controller_triggered;
    let modified = app.metadata.modified;
    if app.status.state == ApplicationState::Failed {
        return triggered.is_none_or(|t| Some(t) < modified);
    }
    if triggered.is_some() && triggered >= modified {
        return true;
    }
    let key = ObjectKey::of(app);
    cx.own_writes
        .lock()
        .ok()
        .and_then(|own| own.get(&key).copied())
        .is_some_and(|(ours, before)| {
            ours == modified && triggered.is_some() && triggered >= before
        })
}

/// A TOSCA or CSAR application: state TRANSLATING, then its manifest
/// written into `spec.manifest` (the scheduler hands the updated
/// application over again), or FAILED with INVALID_TOSCA_MANIFEST.
async fn translate(app: &Arc<Application>, cx: &Context) -> Result<Action, ApplicationError> {
    let mut current = (**app).clone();
    if current.status.state != ApplicationState::Translating {
        current.status.state = ApplicationState::Translating;
        current.status.reason = None;
        current = apps(app, cx).status(&current).await?;
    }
    match crate::kubernetes::tosca::fetch::translate_spec(&current.spec, &cx.fetcher).await {
        Ok(Some(manifest)) => {
            tracing::info!(
                application = %app.metadata.name,
                resources = manifest.len(),
                "TOSCA translated into the manifest"
            );
            current.spec.manifest = manifest;
            apps(app, cx).update(&current).await?;
        }
        Ok(None) => {}
        Err(err) => {
            tracing::info!(
                application = %app.metadata.name,
                error = %err,
                "TOSCA translation failed"
            );
            let mut status = current.status.clone();
            status.state = ApplicationState::Failed;
            status.reason = Some(Reason::new(
                ReasonCode::InvalidToscaManifest,
                err.to_string(),
            ));
            status.kube_controller_triggered = Some(Timestamp::now());
            write_status(&Arc::new(current), cx, status).await?;
        }
    }
    Ok(Action::await_change())
}

fn same_cluster(a: &ResourceRef, b: &ResourceRef) -> bool {
    a.name == b.name && a.namespace == b.namespace && a.kind == b.kind
}

fn apps(app: &Application, cx: &Context) -> Api<Application> {
    match app.metadata.namespace.as_deref() {
        Some(namespace) => Api::namespaced(cx.client.clone(), namespace),
        None => Api::all(cx.client.clone()),
    }
}

fn cluster_key(cluster: &ResourceRef) -> ObjectKey {
    ObjectKey::new(cluster.namespace.as_deref(), &cluster.name)
}

/// The cluster `reference` names and its client.
async fn connect(
    cx: &Context,
    reference: &ResourceRef,
) -> Result<(Arc<Cluster>, ClusterClient), ApplicationError> {
    let key = cluster_key(reference);
    let cluster = cx
        .clusters
        .get(key.namespace.as_deref(), &key.name)
        .ok_or_else(|| ApplicationError::MissingCluster(reference.name.clone()))?;
    let client = cx
        .clients
        .get(&key, &cluster.spec.kubeconfig)
        .await
        .map_err(ApplicationError::Cluster)?;
    Ok((cluster, client))
}

/// One manifest resource, resolved on a cluster.
struct Planned {
    id: ResourceId,
    kind: ResolvedKind,
    namespace: String,
    schema: ManifestResource,
    desired: ManifestResource,
}

/// The outcome of a step that may end the application in a state.
enum Outcome {
    /// Done; the status to write.
    Done(Box<ApplicationStatus>),
    /// A permanent failure: FAILED with this reason.
    Failed(Reason),
}

/// Reconciles `app` on `target`. With `leaving`, the application migrates
/// from that cluster: its resources there are deleted once `target` has
/// them.
async fn run_on(
    app: &Arc<Application>,
    cx: &Context,
    target: &ResourceRef,
    leaving: Option<&ResourceRef>,
) -> Result<Action, ApplicationError> {
    let outcome = match apply_on(app, cx, target, leaving).await {
        Ok(outcome) => outcome,
        Err(ApplicationError::Cluster(err)) if !err.is_transient() => {
            Outcome::Failed(failure_reason(&err))
        }
        Err(err) => {
            degrade(app, cx, &err).await?;
            return Err(err);
        }
    };
    match outcome {
        Outcome::Done(status) => {
            tracing::debug!(
                application = %app.metadata.name,
                state = ?status.state,
                "application reconciled"
            );
            write_status(app, cx, *status).await?;
            Ok(Action::requeue(cx.resync))
        }
        Outcome::Failed(reason) => {
            tracing::info!(
                application = %app.metadata.name,
                reason = %reason.message,
                "application failed"
            );
            let mut status = app.status.clone();
            status.state = ApplicationState::Failed;
            status.reason = Some(reason);
            status.kube_controller_triggered = Some(Timestamp::now());
            write_status(app, cx, status).await?;
            Ok(Action::await_change())
        }
    }
}

/// The reason of a permanent failure.
fn failure_reason(err: &KubeError) -> Reason {
    let code = match err {
        KubeError::UnsupportedResource(_) => ReasonCode::UnsupportedResource,
        KubeError::InvalidCustomResource(_) => ReasonCode::InvalidCustomResource,
        KubeError::InvalidResource(_) => ReasonCode::InvalidResource,
        _ => ReasonCode::KubernetesError,
    };
    Reason::new(code, err.to_string())
}

/// Shows a transient failure: DEGRADED with the reason (written only when
/// it changed).
async fn degrade(
    app: &Arc<Application>,
    cx: &Context,
    err: &ApplicationError,
) -> Result<(), ApplicationError> {
    let message = match err {
        ApplicationError::Api(_) => return Ok(()),
        ApplicationError::Cluster(err) => err.to_string(),
        ApplicationError::MissingCluster(_) => err.to_string(),
    };
    let mut status = app.status.clone();
    // A migration past the shutdown hook keeps its state (READY_FOR_ACTION,
    // MIGRATING): DEGRADED would make the hook ask the workload again.
    if !(shutdown::enabled(app) && shutdown::past(app, Purpose::Migration)) {
        status.state = ApplicationState::Degraded;
    }
    status.reason = Some(Reason::new(ReasonCode::ClusterNotReachable, message));
    write_status(app, cx, status).await
}

/// Writes `status` if it differs from the application's.
async fn write_status(
    app: &Arc<Application>,
    cx: &Context,
    status: ApplicationStatus,
) -> Result<(), ApplicationError> {
    if status == app.status {
        return Ok(());
    }
    let mut updated = (**app).clone();
    updated.status = status;
    apps(app, cx).status(&updated).await?;
    Ok(())
}

/// Resolves every resource of `manifest` on `client`'s cluster.
async fn plan(
    client: &ClusterClient,
    cluster: &Cluster,
    manifest: &[ManifestResource],
    schemas: &[ManifestResource],
) -> Result<Vec<Planned>, KubeError> {
    let mut planned = Vec::with_capacity(manifest.len());
    for (desired, schema) in manifest.iter().zip(schemas) {
        let id = ResourceId::of(desired).ok_or_else(|| {
            KubeError::InvalidResource(
                "a resource without apiVersion, kind or metadata.name".into(),
            )
        })?;
        let kind = client
            .resolve(&id.api_version, &id.kind, &cluster.spec.custom_resources)
            .await?;
        let namespace = id
            .namespace
            .clone()
            .unwrap_or_else(|| client.default_namespace().to_owned());
        planned.push(Planned {
            id,
            kind,
            namespace,
            schema: schema.clone(),
            desired: desired.clone(),
        });
    }
    Ok(planned)
}

/// The desired state of `app` on `target` applied; the new status.
async fn apply_on(
    app: &Arc<Application>,
    cx: &Context,
    target: &ResourceRef,
    leaving: Option<&ResourceRef>,
) -> Result<Outcome, ApplicationError> {
    let mut desired = match cx.extensions.desired_manifest(app) {
        Ok(desired) => desired,
        Err(message) => {
            return Ok(Outcome::Failed(Reason::new(
                ReasonCode::InvalidToscaManifest,
                message,
            )));
        }
    };
    let (cluster, client) = connect(cx, target).await?;
    let key = ObjectKey::of(app.as_ref());
    let target_key = cluster_key(target);
    let mut custom = app.spec.observer_schema.clone();
    custom.extend(desired.observer_schema);
    // The hooks' Secrets, environment variables and volumes, observed.
    if let Err(err) = hooks::mangle::mangle(&cx.hooks, app, &mut desired.manifest, &mut custom) {
        return Ok(Outcome::Failed(Reason::new(
            ReasonCode::InvalidResource,
            err.to_string(),
        )));
    }
    let schemas = observer_schema::schemas_for(&desired.manifest, &custom);
    let mut last_applied = observer_schema::last_applied(
        &desired.manifest,
        &schemas,
        &app.status.last_applied_manifest,
    );
    let planned = plan(&client, &cluster, &last_applied, &schemas)
        .await
        .map_err(ApplicationError::Cluster)?;
    let observed: Vec<Observed<'_>> = planned
        .iter()
        .map(|p| Observed {
            resource: &p.kind,
            namespace: &p.namespace,
            name: &p.id.name,
        })
        .collect();
    let mut live = cx
        .observations
        .observe(
            &target_key,
            fingerprint(&cluster.spec.kubeconfig),
            &client,
            &key,
            &observed,
        )
        .await
        .map_err(ApplicationError::Cluster)?;

    // What to apply: missing on the cluster, or drifted in an observed field.
    let mut fresh = vec![false; planned.len()];
    let mut to_apply = Vec::new();
    for (index, p) in planned.iter().enumerate() {
        match &live[index] {
            None => to_apply.push(index),
            Some(object) => {
                let value = object_value(object);
                let seen = observer_schema::observe(&p.schema, &value);
                if let Some(drift) = observer_schema::drift(&p.schema, &p.desired, &seen) {
                    tracing::info!(
                        application = %app.metadata.name,
                        resource = %p.id,
                        drift = %drift,
                        "resource drifted; applying"
                    );
                    to_apply.push(index);
                } else if hooks::mangle::reads_disabled_hook(app, &value) {
                    // A hook's variables or volume left on the workload
                    // (seen on the object, whatever the status says).
                    tracing::info!(
                        application = %app.metadata.name,
                        resource = %p.id,
                        "a disabled hook's Secret is still read; applying"
                    );
                    to_apply.push(index);
                } else if observer_schema::find(
                    &app.status.last_applied_manifest,
                    &p.id,
                    client.default_namespace(),
                )
                .is_some_and(|before| before != &last_applied[index])
                {
                    // Changed since the last apply in a way no observed
                    // field shows, such as a field removed (a hook's
                    // variables): server-side apply removes it.
                    tracing::info!(
                        application = %app.metadata.name,
                        resource = %p.id,
                        "desired state changed; applying"
                    );
                    to_apply.push(index);
                }
            }
        }
    }
    // What to delete: applied before, no longer in the manifest.
    let current: HashSet<ResourceId> = planned.iter().map(|p| p.id.clone()).collect();
    let mut removed: Vec<ManifestResource> = app
        .status
        .last_applied_manifest
        .iter()
        .filter(|r| ResourceId::of(r).is_some_and(|id| !current.contains(&id)))
        .cloned()
        .collect();
    // The Secrets of hooks no longer asked for (their tokens are cleared
    // below).
    for secret in hooks::mangle::disabled_secrets(app, &desired.manifest) {
        if !removed
            .iter()
            .any(|r| ResourceId::of(r) == ResourceId::of(&secret))
        {
            removed.push(secret);
        }
    }

    let mut status = app.status.clone();
    if !to_apply.is_empty() || !removed.is_empty() || leaving.is_some() {
        let state = if leaving.is_some() {
            ApplicationState::Migrating
        } else if app.status.running_on.is_none() {
            ApplicationState::Creating
        } else {
            ApplicationState::Reconciling
        };
        if status.state != state {
            let mut interim = app.status.clone();
            interim.state = state;
            write_status(app, cx, interim.clone()).await?;
            status = interim;
        }
    }
    for index in to_apply {
        let p = &planned[index];
        cx.client.may_write()?;
        let object = client
            .apply(&p.kind, &p.namespace, &last_applied[index])
            .await
            .map_err(ApplicationError::Cluster)?;
        let value = object_value(&object);
        observer_schema::fill_from_live(&mut last_applied[index], &p.schema, &value);
        live[index] = Some(Arc::new(object));
        fresh[index] = true;
    }
    if !removed.is_empty() {
        let old = plan(&client, &cluster, &removed, &removed)
            .await
            .map_err(ApplicationError::Cluster);
        match old {
            Ok(old) => {
                for p in old {
                    cx.client.may_write()?;
                    client
                        .delete(&p.kind, &p.namespace, &p.id.name)
                        .await
                        .map_err(ApplicationError::Cluster)?;
                }
            }
            // A kind the cluster no longer serves has nothing to delete.
            Err(ApplicationError::Cluster(err)) if !err.is_transient() => {}
            Err(err) => return Err(err),
        }
    }
    if let Some(old) = leaving {
        delete_everything(app, cx, old).await?;
        cx.observations.release(&key, Some(&cluster_key(old)));
    }

    // The new status.
    let values: Vec<Option<Value>> = live
        .iter()
        .map(|o| o.as_deref().map(object_value))
        .collect();
    let mut last_observed = Vec::new();
    let mut health = Vec::new();
    let mut services = indexmap::IndexMap::new();
    for (index, p) in planned.iter().enumerate() {
        let Some(value) = &values[index] else {
            continue;
        };
        last_observed.push(observer_schema::observe(&p.schema, value));
        // A workload just applied has not started yet: its health comes
        // with the next observation.
        if !fresh[index]
            && let Some(h) = workload_health(value)
        {
            health.push(h);
        }
        if p.id.kind == "Service"
            && let Some(endpoint) = service_endpoint(value, client.host())
        {
            services.insert(p.id.name.clone(), endpoint);
        }
    }
    let (container_health, state) = application_health(health);
    status.state = state.unwrap_or(ApplicationState::Running);
    status.reason = None;
    // Out of the shutdown hook's flow (a migration done, or called off): the
    // next migration asks again.
    status.shutdown_grace_period = None;
    status.container_health = container_health;
    status.services = services;
    status.running_on = Some(target.clone());
    status.last_applied_manifest = last_applied;
    status.last_observed_manifest = last_observed;
    status.mangled_observer_schema = schemas;
    hooks::forget_disabled(app, &mut status);
    Ok(Outcome::Done(Box::new(status)))
}

/// The JSON of a live object.
fn object_value(object: &DynamicObject) -> Value {
    serde_json::to_value(object).unwrap_or(Value::Null)
}

/// Migration: everything applied on the new cluster first, then deleted on
/// the old one.
async fn migrate(
    app: &Arc<Application>,
    cx: &Context,
    old: ResourceRef,
    target: ResourceRef,
) -> Result<Action, ApplicationError> {
    tracing::info!(
        application = %app.metadata.name,
        from = %old.name,
        to = %target.name,
        "migrating application"
    );
    run_on(app, cx, &target, Some(&old)).await
}

/// Deletes every resource `app` applied on `cluster` (404 is fine; a
/// cluster that no longer exists has nothing to delete).
async fn delete_everything(
    app: &Application,
    cx: &Context,
    cluster: &ResourceRef,
) -> Result<(), ApplicationError> {
    let (cluster, client) = match connect(cx, cluster).await {
        Ok(found) => found,
        Err(ApplicationError::MissingCluster(_)) => return Ok(()),
        Err(err) => return Err(err),
    };
    // What was applied, and what the spec (with its hooks' Secrets) asks
    // for: a status write that recorded an apply may have been lost to a
    // concurrent update (a complete hook's call right after the apply), so
    // the last applied manifest alone can miss something. Deleting what is
    // not there is a 404, which is fine.
    let mut resources = app.status.last_applied_manifest.clone();
    let mut desired = app.spec.manifest.clone();
    let mut custom = Vec::new();
    if hooks::mangle::mangle(&cx.hooks, app, &mut desired, &mut custom).is_err() {
        desired = app.spec.manifest.clone();
    }
    let mut seen: HashSet<ResourceId> = resources.iter().filter_map(ResourceId::of).collect();
    for resource in desired {
        if let Some(id) = ResourceId::of(&resource) {
            if seen.insert(id) {
                resources.push(resource);
            }
        }
    }
    // Reverse order: a namespace or CRD of the manifest goes last.
    for resource in resources.iter().rev() {
        let Some(id) = ResourceId::of(resource) else {
            continue;
        };
        let kind = match client
            .resolve(&id.api_version, &id.kind, &cluster.spec.custom_resources)
            .await
        {
            Ok(kind) => kind,
            Err(err) if err.is_transient() => return Err(ApplicationError::Cluster(err)),
            // Not served (any more): nothing of that kind to delete.
            Err(_) => continue,
        };
        let namespace = id
            .namespace
            .clone()
            .unwrap_or_else(|| client.default_namespace().to_owned());
        cx.client.may_write()?;
        client
            .delete(&kind, &namespace, &id.name)
            .await
            .map_err(ApplicationError::Cluster)?;
    }
    Ok(())
}

/// Deletion: state DELETING, the resources deleted, `running_on` cleared,
/// the finalizer popped.
async fn cleanup(app: &Arc<Application>, cx: &Context) -> Result<Action, ApplicationError> {
    let key = ObjectKey::of(app.as_ref());
    let mut current = (**app).clone();
    if current.status.state != ApplicationState::Deleting {
        current.status.state = ApplicationState::Deleting;
        current = apps(app, cx).status(&current).await?;
    }
    // `running_on` is written after the resources are applied, so a
    // deletion that comes between the apply and that write (or after an
    // apply that failed half-way) finds resources on `scheduled_to` that
    // `running_on` does not name: both are cleaned (404 is fine there).
    let mut clusters: Vec<ResourceRef> = current.status.running_on.iter().cloned().collect();
    if let Some(scheduled_to) = &current.status.scheduled_to
        && !clusters.contains(scheduled_to)
    {
        clusters.push(scheduled_to.clone());
    }
    for cluster in &clusters {
        if let Err(err) = delete_everything(&current, cx, cluster).await {
            if let ApplicationError::Cluster(cause) = &err {
                let mut status = current.status.clone();
                status.reason = Some(Reason::new(ReasonCode::DeleteFailed, cause.to_string()));
                write_status(&Arc::new(current.clone()), cx, status).await?;
            }
            return Err(err);
        }
    }
    if current.status.running_on.is_some() {
        current.status.running_on = None;
        current.status.reason = None;
        current = apps(app, cx).status(&current).await?;
    }
    cx.observations.release(&key, None);
    if let Ok(mut own) = cx.own_writes.lock() {
        own.remove(&key);
    }
    if current.metadata.finalizers.last().map(String::as_str) == Some(FINALIZER) {
        current.metadata.finalizers.pop();
        apps(app, cx).update(&current).await?;
    }
    Ok(Action::await_change())
}

/// After a failed step: the queue's exponential backoff.
pub(crate) fn error_policy(
    app: Arc<Application>,
    error: &ApplicationError,
    attempt: Attempt,
    _: Arc<Context>,
) -> Action {
    tracing::warn!(
        namespace = app.metadata.namespace.as_deref().unwrap_or(""),
        application = %app.metadata.name,
        retries = attempt.retries,
        error = %error,
        "application step failed; trying again"
    );
    Action::await_change()
}

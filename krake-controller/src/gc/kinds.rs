//! The kinds the collector follows, behind one object-safe trait: the
//! shared store of each, its change feed, and the two writes the collector
//! makes (DELETE a dependent, pop `cascade_deletion`).

use std::sync::Arc;

use futures::future::BoxFuture;
use krake_client::{Api, Client, DeleteParams};
use krake_data::kinds::core::{
    GlobalMetric, GlobalMetricsProvider, Lease, Metric, MetricsProvider, Role, RoleBinding,
};
use krake_data::kinds::infrastructure::{
    Cloud, GlobalCloud, GlobalInfrastructureProvider, InfrastructureProvider,
};
use krake_data::kinds::kubernetes::{Application, Cluster};
use krake_data::kinds::openstack::{MagnumCluster, Project};
use krake_data::metadata::{CASCADE_DELETION_FINALIZER, Metadata, ResourceRef};
use krake_data::registry::{KindInfo, Resource};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::GcError;
use crate::shared::{Change, Reflectors};
use crate::store::{Store, StoreError};

/// How often a pop is tried again at once after a 409 (re-reading the
/// object each time) before the key goes back to the queue's backoff.
const CONFLICT_RETRIES: usize = 5;

/// What the collector hears from a kind's feed.
#[derive(Debug, Clone)]
pub(crate) enum Heard {
    /// This object changed or disappeared (read the store for which).
    Object(ResourceRef),
    /// The kind was relisted, or the feed lagged: anything may have changed.
    Restarted(&'static KindInfo),
}

/// What popping `cascade_deletion` came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Popped {
    /// The finalizer was removed (the object may be gone with it).
    Done,
    /// Nothing to do any more: the object is gone, not deleted, or its tail
    /// finalizer is not ours (someone else changed it meanwhile).
    NotNeeded,
}

/// True when `metadata` is the collector's to handle: deleted, with
/// `cascade_deletion` at the tail of its finalizers.
pub(crate) fn is_ours(metadata: &Metadata) -> bool {
    metadata.is_deleted() && metadata.tail_finalizer() == Some(CASCADE_DELETION_FINALIZER)
}

/// One kind, type-erased.
pub(crate) trait AnyKind: Send + Sync {
    /// The kind.
    fn info(&self) -> &'static KindInfo;
    /// Waits until the kind's store was listed.
    fn ready(&self) -> BoxFuture<'static, Result<(), StoreError>>;
    /// The metadata of one object in the store.
    fn metadata(&self, namespace: Option<&str>, name: &str) -> Option<Metadata>;
    /// The metadata of every object in the store.
    fn all(&self) -> Vec<Metadata>;
    /// Follows the kind's changes until `stop`, telling `heard` about each.
    fn follow(
        &self,
        stop: CancellationToken,
        heard: Arc<dyn Fn(Heard) + Send + Sync>,
    ) -> BoxFuture<'static, ()>;
    /// `DELETE`s the object (the API marks it and appends
    /// `cascade_deletion`); a 404 counts as done.
    fn delete(&self, client: Client, node: ResourceRef) -> BoxFuture<'static, Result<(), GcError>>;
    /// Pops `cascade_deletion` from the tail with a conditional `PUT`
    /// (re-reading and retrying on 409).
    fn pop(&self, client: Client, node: ResourceRef)
    -> BoxFuture<'static, Result<Popped, GcError>>;
}

struct Kind<K: Resource> {
    store: Store<K>,
    changes: broadcast::Receiver<Change<K>>,
}

fn api<K: Resource>(client: Client, namespace: Option<&str>) -> Api<K> {
    match namespace {
        Some(namespace) if K::INFO.is_namespaced() => Api::namespaced(client, namespace),
        _ => Api::all(client),
    }
}

fn node<K: Resource>(object: &K) -> ResourceRef {
    ResourceRef::of(object)
}

impl<K: Resource> AnyKind for Kind<K> {
    fn info(&self) -> &'static KindInfo {
        K::INFO
    }

    fn ready(&self) -> BoxFuture<'static, Result<(), StoreError>> {
        let store = self.store.clone();
        Box::pin(async move { store.wait_ready().await })
    }

    fn metadata(&self, namespace: Option<&str>, name: &str) -> Option<Metadata> {
        self.store
            .get(namespace, name)
            .map(|object| object.metadata().clone())
    }

    fn all(&self) -> Vec<Metadata> {
        self.store
            .list()
            .iter()
            .map(|object| object.metadata().clone())
            .collect()
    }

    fn follow(
        &self,
        stop: CancellationToken,
        heard: Arc<dyn Fn(Heard) + Send + Sync>,
    ) -> BoxFuture<'static, ()> {
        let changes = self.changes.resubscribe();
        Box::pin(crate::controller::follow(
            changes,
            stop,
            move |change| match change {
                Change::Applied(object) | Change::Deleted(object) => {
                    heard(Heard::Object(node(object.as_ref())));
                }
                Change::Restarted => heard(Heard::Restarted(K::INFO)),
            },
        ))
    }

    fn delete(&self, client: Client, node: ResourceRef) -> BoxFuture<'static, Result<(), GcError>> {
        Box::pin(async move {
            let api = api::<K>(client, node.namespace.as_deref());
            match api.delete(&node.name, &DeleteParams::default()).await {
                Ok(_) => Ok(()),
                Err(err) if err.is_not_found() => Ok(()),
                Err(source) => Err(GcError::Delete { node, source }),
            }
        })
    }

    fn pop(
        &self,
        client: Client,
        node: ResourceRef,
    ) -> BoxFuture<'static, Result<Popped, GcError>> {
        let current = self
            .store
            .get(node.namespace.as_deref(), &node.name)
            .map(|object| K::clone(&object));
        Box::pin(async move {
            let Some(mut current) = current else {
                return Ok(Popped::NotNeeded);
            };
            let api = api::<K>(client, node.namespace.as_deref());
            for _ in 0..CONFLICT_RETRIES {
                if !is_ours(current.metadata()) {
                    return Ok(Popped::NotNeeded);
                }
                let mut updated = current.clone();
                updated.metadata_mut().finalizers.pop();
                match api.update(&updated).await {
                    Ok(_) => return Ok(Popped::Done),
                    Err(err) if err.is_not_found() => return Ok(Popped::NotNeeded),
                    Err(err) if err.is_conflict() => {
                        // Someone else wrote meanwhile: look again, never
                        // overwrite their change.
                        current = match api.get(&node.name).await {
                            Ok(fresh) => fresh,
                            Err(err) if err.is_not_found() => return Ok(Popped::NotNeeded),
                            Err(source) => return Err(GcError::Read { node, source }),
                        };
                    }
                    Err(source) => return Err(GcError::Update { node, source }),
                }
            }
            Err(GcError::Contended { node })
        })
    }
}

fn kind<K: Resource>(reflectors: &Reflectors) -> Arc<dyn AnyKind> {
    let subscription = reflectors.subscribe::<K>(None, None);
    Arc::new(Kind {
        store: subscription.store,
        changes: subscription.changes,
    })
}

/// Every kind of the registry, subscribed in all namespaces.
pub(crate) fn all(reflectors: &Reflectors) -> Vec<Arc<dyn AnyKind>> {
    vec![
        kind::<Role>(reflectors),
        kind::<RoleBinding>(reflectors),
        kind::<GlobalMetric>(reflectors),
        kind::<Metric>(reflectors),
        kind::<GlobalMetricsProvider>(reflectors),
        kind::<MetricsProvider>(reflectors),
        kind::<Application>(reflectors),
        kind::<Cluster>(reflectors),
        kind::<GlobalInfrastructureProvider>(reflectors),
        kind::<InfrastructureProvider>(reflectors),
        kind::<GlobalCloud>(reflectors),
        kind::<Cloud>(reflectors),
        kind::<Project>(reflectors),
        kind::<MagnumCluster>(reflectors),
        kind::<Lease>(reflectors),
    ]
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[tokio::test]
    async fn every_kind_of_the_registry_is_followed() {
        let shutdown = CancellationToken::new();
        let client = Client::new("http://127.0.0.1:9").unwrap();
        let reflectors = Reflectors::new(client, shutdown.clone());
        let kinds = all(&reflectors);
        let key = |k: &&KindInfo| (k.api, k.kind);
        let mut followed: Vec<&KindInfo> = kinds.iter().map(|k| k.info()).collect();
        let mut registry: Vec<&KindInfo> = krake_data::registry::ALL.to_vec();
        followed.sort_by_key(key);
        registry.sort_by_key(key);
        assert_eq!(followed, registry);
        shutdown.cancel();
    }
}

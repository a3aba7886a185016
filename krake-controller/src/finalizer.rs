//! Krake's finalizer stack, for controllers that must clean up before an
//! object goes away.
//!
//! Krake keeps `metadata.finalizers` as a stack: a controller pushes its
//! finalizer while the object lives; `DELETE` marks the object deleted and
//! pushes `cascade_deletion` (the garbage collector's); the object is removed
//! once a `PUT` leaves it deleted with no finalizers. Whoever owns the
//! finalizer at the **tail** acts next, so controllers clean up in the
//! reverse order of joining.
//!
//! # Expected flow
//!
//! [`finalizer`] looks at the object and picks one step:
//! 1. alive, without our finalizer: push it (a conditional `PUT`), then run
//!    [`Event::Apply`] on the updated object;
//! 2. alive, with it: [`Event::Apply`];
//! 3. deleted, ours at the tail: [`Event::Cleanup`]; when it succeeds, pop
//!    our finalizer (a conditional `PUT`, which may remove the object);
//! 4. deleted, ours elsewhere in the stack: wait for the others
//!    ([`Action::await_change`]): their removal changes the object;
//! 5. deleted, not ours (never added, or already removed): nothing.
//!
//! # Guarantees
//!
//! - Cleanup runs only when our finalizer is at the tail of a deleted
//!   object, so the object still exists while it runs.
//! - Every step is safe to rerun: a crash between cleanup and the removal of
//!   the finalizer reruns the cleanup (make it idempotent); a crash after
//!   adding the finalizer reruns `Apply`.
//! - Writes carry the object's `resource_version`: a concurrent change makes
//!   them fail with 409 ([`FinalizerError::AddFinalizer`] or
//!   [`FinalizerError::RemoveFinalizer`]), and the next reconcile sees the
//!   new version; nothing is overwritten.
//!
//! # Errors
//!
//! Errors of `Apply` or `Cleanup` come back as [`FinalizerError::Apply`] and
//! [`FinalizerError::Cleanup`], and the finalizer is left in place.

use std::future::Future;
use std::sync::Arc;

use krake_client::Api;
use krake_data::registry::Resource;

use crate::action::Action;

/// What the reconcile is asked to do.
#[derive(Debug)]
pub enum Event<K> {
    /// The object is alive and carries our finalizer: make the world match it.
    Apply(Arc<K>),
    /// The object is being deleted and it is our turn: undo what `Apply` did.
    Cleanup(Arc<K>),
}

/// Why [`finalizer`] failed.
#[derive(Debug, thiserror::Error)]
pub enum FinalizerError<E: std::error::Error + 'static> {
    /// The reconcile failed while applying.
    #[error("apply failed: {0}")]
    Apply(#[source] E),
    /// The reconcile failed while cleaning up; the finalizer stays.
    #[error("cleanup failed: {0}")]
    Cleanup(#[source] E),
    /// Pushing the finalizer failed (409 if the object changed meanwhile).
    #[error("cannot add the finalizer: {0}")]
    AddFinalizer(#[source] krake_client::Error),
    /// Popping the finalizer failed (409 if the object changed meanwhile).
    #[error("cannot remove the finalizer: {0}")]
    RemoveFinalizer(#[source] krake_client::Error),
}

/// Runs `reconcile` for `object` within the finalizer stack protocol of the
/// module docs, with `name` as our finalizer, writing through `api` (a
/// handle of the object's namespace).
pub async fn finalizer<K, F, Fut, E>(
    api: &Api<K>,
    name: &str,
    object: Arc<K>,
    reconcile: F,
) -> Result<Action, FinalizerError<E>>
where
    K: Resource,
    F: FnOnce(Event<K>) -> Fut,
    Fut: Future<Output = Result<Action, E>>,
    E: std::error::Error + 'static,
{
    let metadata = object.metadata();
    let ours = metadata.finalizers.iter().any(|f| f == name);
    match (metadata.is_deleted(), ours) {
        (false, false) => {
            let mut updated = K::clone(&object);
            updated.metadata_mut().finalizers.push(name.to_owned());
            let updated = api
                .update(&updated)
                .await
                .map_err(FinalizerError::AddFinalizer)?;
            reconcile(Event::Apply(Arc::new(updated)))
                .await
                .map_err(FinalizerError::Apply)
        }
        (false, true) => reconcile(Event::Apply(object))
            .await
            .map_err(FinalizerError::Apply),
        (true, true) if metadata.tail_finalizer() == Some(name) => {
            let action = reconcile(Event::Cleanup(object.clone()))
                .await
                .map_err(FinalizerError::Cleanup)?;
            let mut updated = K::clone(&object);
            updated.metadata_mut().finalizers.pop();
            match api.update(&updated).await {
                Ok(_) => Ok(action),
                // Popping the last finalizer removes the object; a 404 means
                // someone (a forced delete) removed it already.
                Err(err) if err.is_not_found() => Ok(action),
                Err(err) => Err(FinalizerError::RemoveFinalizer(err)),
            }
        }
        (true, _) => Ok(Action::await_change()),
    }
}

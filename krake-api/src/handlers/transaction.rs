//! Read-modify-write of one object with compare-and-swap.
//!
//! Every change to an existing object reads it, computes the new version and
//! writes it only if the object has not changed since the read (the store's
//! `mod_revision`). A request that names a `resource_version` fails with 409
//! when it is stale; one that does not keeps Krake's last-writer-wins: the
//! change is recomputed on the fresh object and retried, and only after
//! `transaction_retries` conflicts does the client get 409 TRANSACTION_ERROR.

use krake_store::{Revision, StoreError};
use serde_json::Value;

use super::Target;
use crate::object;
use crate::problem::ApiError;
use crate::state::ApiState;

/// What to do with the object after looking at it.
#[derive(Debug)]
pub enum Change {
    /// Write this new version.
    Write(Value),
    /// Remove the object from the store; answer with this last version.
    Remove(Value),
    /// Write nothing; answer with this version.
    Keep(Value),
}

/// The outcome of [`read_modify_write`]: the object to answer with and the
/// revision it has (for a removal, the revision of the deletion).
#[derive(Debug)]
pub struct Outcome {
    /// The object, with its `resource_version` set.
    pub object: Value,
    /// Its revision.
    pub revision: Revision,
    /// True if the object was removed from the store.
    pub removed: bool,
}

/// Reads the target, applies `change`, writes the result with
/// compare-and-swap, retrying on concurrent writes unless `precondition`
/// pins the revision the client read.
pub async fn read_modify_write(
    state: &ApiState,
    target: &Target,
    precondition: Option<Revision>,
    mut change: impl FnMut(Value) -> Result<Change, ApiError>,
) -> Result<Outcome, ApiError> {
    let key = target.key()?;
    let store = state.store();
    for _ in 0..=state.config().transaction_retries {
        let kv = store.get(&key).await?.ok_or_else(|| target.not_found())?;
        if let Some(expected) = precondition {
            if expected != kv.mod_revision {
                return Err(stale(expected, kv.mod_revision));
            }
        }
        let current = object::decode_kv(&kv)?;
        let result = match change(current)? {
            Change::Keep(object) => {
                return Ok(Outcome {
                    object,
                    revision: kv.mod_revision,
                    removed: false,
                });
            }
            Change::Write(object) => store
                .update(&key, object::encode(&object)?, kv.mod_revision)
                .await
                .map(|revision| (object, revision, false)),
            Change::Remove(object) => store
                .delete(&key, Some(kv.mod_revision))
                .await
                .map(|revision| (object, revision, true)),
        };
        match result {
            Ok((mut object, revision, removed)) => {
                object::set_resource_version(&mut object, revision);
                return Ok(Outcome {
                    object,
                    revision,
                    removed,
                });
            }
            Err(StoreError::Conflict { actual, .. }) => {
                if let Some(expected) = precondition {
                    return Err(stale(expected, actual));
                }
            }
            // Removed concurrently: the next read answers 404.
            Err(StoreError::NotFound { .. }) => {}
            Err(other) => return Err(other.into()),
        }
    }
    Err(ApiError::transaction("Concurrent writes to database"))
}

fn stale(expected: Revision, actual: Revision) -> ApiError {
    ApiError::transaction(format!(
        "The object was modified: resource_version {expected} is not the current one ({actual})."
    ))
}

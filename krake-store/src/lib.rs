//! Storage for the Krake API: a small key-value [`Store`] trait with
//! revisions, compare-and-swap writes and resumable prefix watches, and two
//! backends that pass one conformance suite:
//!
//! - `etcd::EtcdStore` (feature `etcd`): etcd v3 through `etcd-client`, with
//!   Krake's key layout and JSON values, so a krake-rs server can take over
//!   the etcd of an existing Krake deployment; the revision is etcd's
//!   `mod_revision`;
//! - `embedded::EmbeddedStore` (feature `embedded`): a single-file, crash-safe
//!   store (redb) with its own revision counter and a change log for watch
//!   resume. It is the default of `krake-server`.
//!
//! Only the API server touches the store; everything else talks to the API.
//! Keys are strings such as `/kubernetes/applications/ns/web`; values are the
//! objects' JSON bytes.
//!
//! # Example
//!
//! ```
//! # #[cfg(feature = "embedded")]
//! # async fn example() -> Result<(), krake_store::StoreError> {
//! use bytes::Bytes;
//! use krake_store::{ListOptions, Store, embedded::EmbeddedStore};
//!
//! let dir = tempfile::tempdir().expect("a temporary folder");
//! let store = EmbeddedStore::open(dir.path().join("krake.redb"))?;
//! let revision = store.create("/core/roles/admin", Bytes::from_static(b"{}")).await?;
//! let current = store.get("/core/roles/admin").await?.expect("just created");
//! assert_eq!(current.mod_revision, revision);
//! // Compare-and-swap: only succeeds against the revision it read.
//! store.update("/core/roles/admin", Bytes::from_static(b"{\"a\":1}"), revision).await?;
//! let page = store.list("/core/roles/", &ListOptions::default()).await?;
//! assert_eq!(page.items.len(), 1);
//! # Ok(())
//! # }
//! ```

use std::fmt;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;

#[cfg(feature = "embedded")]
pub mod embedded;
#[cfg(feature = "etcd")]
pub mod etcd;
#[cfg(feature = "testing")]
pub mod testing;

/// A store revision: increases with every write, across all keys.
pub type Revision = i64;

/// One key with its value and revisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: String,
    /// The value (an object's JSON).
    pub value: Bytes,
    /// The revision at which the key was created.
    pub create_revision: Revision,
    /// The revision of the last write of the key.
    pub mod_revision: Revision,
}

/// What happened to a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// The key was created or changed.
    Put,
    /// The key was deleted.
    Delete,
}

/// One change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreEvent {
    /// Put or delete.
    pub kind: EventKind,
    /// For a put, the new key-value (`mod_revision` is the event's revision).
    /// For a delete, the value as it was just before the deletion, with
    /// `mod_revision` set to the revision of the deletion itself.
    pub kv: KeyValue,
}

impl StoreEvent {
    /// The revision at which this change happened.
    pub fn revision(&self) -> Revision {
        self.kv.mod_revision
    }

    /// True for the first write of a key (a put whose create and mod
    /// revisions are equal): Krake's `ADDED`.
    pub fn is_create(&self) -> bool {
        self.kind == EventKind::Put && self.kv.create_revision == self.kv.mod_revision
    }
}

/// Options of [`Store::list`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListOptions {
    /// Only keys strictly greater than this one (for the next page).
    pub start_after: Option<String>,
    /// At most this many items (`Some(0)`, like `None`, means no limit, as in etcd).
    pub limit: Option<usize>,
    /// Read the data as it was at this revision (a consistent snapshot across
    /// pages). [`StoreError::Compacted`] if the store no longer has it.
    pub revision: Option<Revision>,
}

/// One page of a [`Store::list`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListPage {
    /// The key-values, in key order.
    pub items: Vec<KeyValue>,
    /// The store revision the list was read at; a watch from it misses nothing.
    pub revision: Revision,
    /// True if more keys match after the last item.
    pub more: bool,
}

/// A stream of changes under a prefix, in revision order.
pub type EventStream = BoxStream<'static, Result<StoreEvent, StoreError>>;

/// What can go wrong in a store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// [`Store::create`] of a key that exists.
    #[error("key {key} already exists")]
    AlreadyExists {
        /// The key.
        key: String,
    },
    /// An update or delete of a key that does not exist.
    #[error("key {key} does not exist")]
    NotFound {
        /// The key.
        key: String,
    },
    /// A compare-and-swap failed: the key changed since it was read.
    #[error("key {key} was modified concurrently (expected revision {expected}, found {actual})")]
    Conflict {
        /// The key.
        key: String,
        /// The revision the caller read.
        expected: Revision,
        /// The revision the key has now.
        actual: Revision,
    },
    /// The revision asked for is older than what the store keeps.
    #[error("revision {requested} is compacted; the oldest available is {oldest}")]
    Compacted {
        /// The revision asked for.
        requested: Revision,
        /// The oldest revision the store can still serve.
        oldest: Revision,
    },
    /// The store cannot be reached or did not answer in time.
    #[error("store unavailable: {message}")]
    Unavailable {
        /// What failed.
        message: String,
    },
    /// The store answered with something that makes no sense (a bug or corruption).
    #[error("store error: {message}")]
    Internal {
        /// What failed.
        message: String,
    },
}

impl StoreError {
    /// An [`StoreError::Unavailable`] from any error.
    pub fn unavailable(error: impl fmt::Display) -> Self {
        StoreError::Unavailable {
            message: error.to_string(),
        }
    }

    /// An [`StoreError::Internal`] from any error.
    pub fn internal(error: impl fmt::Display) -> Self {
        StoreError::Internal {
            message: error.to_string(),
        }
    }
}

/// The storage behind the Krake API.
///
/// Every write is atomic and bumps the store's revision. Implementations
/// answer within a bounded time: an unreachable backend gives
/// [`StoreError::Unavailable`] rather than a hang.
#[async_trait]
pub trait Store: fmt::Debug + Send + Sync + 'static {
    /// The key, if it exists.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError>;

    /// The keys under `prefix` (a string prefix), in key order.
    async fn list(&self, prefix: &str, options: &ListOptions) -> Result<ListPage, StoreError>;

    /// Creates `key`; [`StoreError::AlreadyExists`] if it exists. Returns the
    /// new revision.
    async fn create(&self, key: &str, value: Bytes) -> Result<Revision, StoreError>;

    /// Replaces the value of `key` if its `mod_revision` is still `expected`;
    /// [`StoreError::Conflict`] if not, [`StoreError::NotFound`] if the key is
    /// gone. Returns the new revision.
    async fn update(
        &self,
        key: &str,
        value: Bytes,
        expected: Revision,
    ) -> Result<Revision, StoreError>;

    /// Deletes `key` (if its `mod_revision` is `expected`, when given).
    /// Returns the revision of the deletion; [`StoreError::NotFound`] if the
    /// key does not exist.
    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<Revision, StoreError>;

    /// The changes under `prefix` with a revision greater than `after`
    /// (`None`: from now on), in revision order, without gaps or duplicates.
    /// [`StoreError::Compacted`] (as the call's error, or as the first item
    /// of the stream) if `after` is older than the store keeps.
    async fn watch(&self, prefix: &str, after: Option<Revision>)
    -> Result<EventStream, StoreError>;

    /// The store's current revision.
    async fn revision(&self) -> Result<Revision, StoreError>;
}

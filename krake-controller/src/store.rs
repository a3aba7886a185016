//! The in-memory copy of a collection that a reflector keeps: one
//! [`Writer`] applies watch events, any number of [`Store`] readers query the
//! objects (by key, by labels, or through user-defined secondary indexes).
//!
//! # Expected flow
//!
//! A reflector (see [`crate::reflector`]) feeds the events of a
//! [`krake_client::Api::watch`] to [`Writer::apply`]: first a
//! [`WatchEvent::Restarted`] with every object, then one `Added`, `Modified`
//! or `Deleted` per change, and a new `Restarted` after every relist.
//! Controllers hold [`Store`]s ([`Writer::reader`]), wait for
//! [`Store::wait_ready`], and read.
//!
//! # Guarantees
//!
//! - A `Restarted` replaces the whole content at once: the new set (and its
//!   indexes) is built outside the lock and swapped in, so a reader sees
//!   either the old set or the new one, never a mix, and objects deleted
//!   while the watch was down disappear.
//! - The store is *ready* after its first `Restarted` (the first full list)
//!   and stays ready; events before it are applied but do not make it ready.
//! - Secondary indexes are kept in step with the objects under the same lock:
//!   an index lookup never names an object the store no longer has, nor
//!   misses one it has. An index declared before the first event (with
//!   [`Writer::with_index`]) is complete as soon as the store is ready.
//! - The lock is held only to look up, insert or swap; readers get
//!   [`Arc`]s and never hold it while the caller works.
//!
//! # Caveats
//!
//! - An index function is called with the lock held: keep it cheap and pure
//!   (the same object must give the same values). A panic in it leaves the
//!   store as it was before that event.
//! - Index names are unique per store: declaring a name twice keeps the first
//!   function.
//! - Objects of a global kind are keyed by name only: the namespace given to
//!   [`Store::get`] is ignored for them, as the client does.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use krake_client::WatchEvent;
use krake_data::{LabelConstraint, Resource};
use tokio::sync::watch;

/// Why a store could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The [`Writer`] went away (its reflector stopped) before the first full
    /// list: the store will never be ready.
    #[error("the store's writer was dropped before the first full list")]
    WriterDropped,
}

/// A secondary index function: the index values of an object (none, one or
/// several; duplicates are ignored).
pub type IndexFn<K> = Arc<dyn Fn(&K) -> Vec<String> + Send + Sync>;

/// The identity of an object in a store: namespace (none for global kinds)
/// and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct ObjectKey {
    namespace: Option<String>,
    name: String,
}

impl ObjectKey {
    fn new<K: Resource>(namespace: Option<&str>, name: &str) -> Self {
        let namespace = if K::INFO.is_namespaced() {
            namespace.map(str::to_owned)
        } else {
            None
        };
        ObjectKey {
            namespace,
            name: name.to_owned(),
        }
    }

    fn of<K: Resource>(object: &K) -> Self {
        let metadata = object.metadata();
        Self::new::<K>(metadata.namespace.as_deref(), &metadata.name)
    }
}

/// One object and the values it has in each index (in index order).
struct Entry<K> {
    object: Arc<K>,
    values: Vec<Vec<String>>,
}

/// One secondary index: value to the keys of the objects that have it.
struct Index<K> {
    name: String,
    function: IndexFn<K>,
    keys: BTreeMap<String, BTreeSet<ObjectKey>>,
}

impl<K> Index<K> {
    fn values_of(&self, object: &K) -> Vec<String> {
        let mut values = (self.function)(object);
        values.sort_unstable();
        values.dedup();
        values
    }

    fn insert(&mut self, key: &ObjectKey, values: &[String]) {
        for value in values {
            self.keys
                .entry(value.clone())
                .or_default()
                .insert(key.clone());
        }
    }

    fn remove(&mut self, key: &ObjectKey, values: &[String]) {
        for value in values {
            if let Some(keys) = self.keys.get_mut(value) {
                keys.remove(key);
                if keys.is_empty() {
                    self.keys.remove(value);
                }
            }
        }
    }
}

/// Everything behind the lock. Invariant: every entry has one value list per
/// index, and each index maps exactly the values of the entries.
struct State<K> {
    objects: BTreeMap<ObjectKey, Entry<K>>,
    indexes: Vec<Index<K>>,
}

impl<K> Default for State<K> {
    fn default() -> Self {
        State {
            objects: BTreeMap::new(),
            indexes: Vec::new(),
        }
    }
}

impl<K> State<K> {
    fn entry_values(&self, object: &K) -> Vec<Vec<String>> {
        self.indexes.iter().map(|i| i.values_of(object)).collect()
    }

    /// Inserts or replaces an object; returns the replaced one (for the
    /// caller to drop after releasing the lock). The index functions run
    /// before any change, so a panicking one leaves the state as it was.
    fn upsert(&mut self, key: ObjectKey, object: Arc<K>) -> Option<Arc<K>> {
        let values = self.entry_values(&object);
        let replaced = self.remove(&key);
        for (index, values) in self.indexes.iter_mut().zip(&values) {
            index.insert(&key, values);
        }
        self.objects.insert(key, Entry { object, values });
        replaced
    }

    fn remove(&mut self, key: &ObjectKey) -> Option<Arc<K>> {
        let entry = self.objects.remove(key)?;
        for (index, values) in self.indexes.iter_mut().zip(&entry.values) {
            index.remove(key, values);
        }
        Some(entry.object)
    }

    fn has_index(&self, name: &str) -> bool {
        self.indexes.iter().any(|i| i.name == name)
    }

    /// Adds an index built from the current objects; `false` (and nothing
    /// changes) if one of that name exists.
    fn add_index(&mut self, name: &str, function: IndexFn<K>) -> bool {
        if self.has_index(name) {
            return false;
        }
        let mut index = Index {
            name: name.to_owned(),
            function,
            keys: BTreeMap::new(),
        };
        let values: Vec<Vec<String>> = self
            .objects
            .values()
            .map(|entry| index.values_of(&entry.object))
            .collect();
        for ((key, entry), values) in self.objects.iter_mut().zip(values) {
            index.insert(key, &values);
            entry.values.push(values);
        }
        self.indexes.push(index);
        true
    }
}

/// What applying one event did, for the shared reflectors' change feed.
pub(crate) enum Applied<K> {
    /// The object was inserted or replaced.
    Upserted(Arc<K>),
    /// The object was removed (its last state, from the event).
    Deleted(Arc<K>),
    /// The content was replaced; these objects were in the old content and
    /// are not in the new one.
    Restarted {
        /// The objects that disappeared, in their last known state.
        removed: Vec<Arc<K>>,
    },
}

fn read<K>(state: &RwLock<State<K>>) -> RwLockReadGuard<'_, State<K>> {
    // Every mutation runs the user's code before changing anything, so the
    // state behind a poisoned lock is consistent.
    state.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<K>(state: &RwLock<State<K>>) -> RwLockWriteGuard<'_, State<K>> {
    state.write().unwrap_or_else(PoisonError::into_inner)
}

/// A reader of the objects a reflector keeps. Cheap to clone; every clone
/// sees the same content. Results are sorted by namespace, then name.
pub struct Store<K> {
    state: Arc<RwLock<State<K>>>,
    ready: watch::Receiver<bool>,
}

impl<K> Clone for Store<K> {
    fn clone(&self) -> Self {
        Store {
            state: self.state.clone(),
            ready: self.ready.clone(),
        }
    }
}

impl<K: Resource> fmt::Debug for Store<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("kind", &K::INFO.kind)
            .field("len", &self.len())
            .field("ready", &self.is_ready())
            .finish()
    }
}

impl<K: Resource> Store<K> {
    /// The object `name` in `namespace` (ignored for global kinds).
    pub fn get(&self, namespace: Option<&str>, name: &str) -> Option<Arc<K>> {
        let key = ObjectKey::new::<K>(namespace, name);
        read(&self.state)
            .objects
            .get(&key)
            .map(|entry| entry.object.clone())
    }

    /// Every object.
    pub fn list(&self) -> Vec<Arc<K>> {
        read(&self.state)
            .objects
            .values()
            .map(|entry| entry.object.clone())
            .collect()
    }

    /// The objects for which `predicate` holds. The predicate runs with the
    /// read lock held: keep it cheap.
    pub fn filter(&self, predicate: impl Fn(&K) -> bool) -> Vec<Arc<K>> {
        read(&self.state)
            .objects
            .values()
            .filter(|entry| predicate(&entry.object))
            .map(|entry| entry.object.clone())
            .collect()
    }

    /// The objects whose labels match every constraint of `selector` (an
    /// empty selector matches everything), in Krake's label constraint
    /// language, as the server's `label_selector` does.
    ///
    /// ```
    /// # fn example(store: krake_controller::store::Store<krake_data::kinds::kubernetes::Application>)
    /// # -> Result<(), krake_data::constraints::ConstraintError> {
    /// use krake_data::LabelConstraint;
    /// let web = store.by_labels(&[LabelConstraint::parse("tier = web")?]);
    /// # let _ = web;
    /// # Ok(())
    /// # }
    /// ```
    pub fn by_labels(&self, selector: &[LabelConstraint]) -> Vec<Arc<K>> {
        self.filter(|object| {
            selector
                .iter()
                .all(|constraint| constraint.matches(&object.metadata().labels))
        })
    }

    /// The objects that have `value` in the secondary index `index`. Empty
    /// if no object has it, or if there is no such index (see
    /// [`Store::has_index`]).
    pub fn index(&self, index: &str, value: &str) -> Vec<Arc<K>> {
        let state = read(&self.state);
        let Some(index) = state.indexes.iter().find(|i| i.name == index) else {
            return Vec::new();
        };
        index
            .keys
            .get(value)
            .into_iter()
            .flatten()
            .filter_map(|key| state.objects.get(key))
            .map(|entry| entry.object.clone())
            .collect()
    }

    /// Whether the secondary index `index` was declared.
    pub fn has_index(&self, index: &str) -> bool {
        read(&self.state).has_index(index)
    }

    /// Adds a secondary index built at once from the current objects (so it
    /// is complete when this returns, and kept up to date after). `false` if
    /// an index of that name exists: the first function is kept.
    pub(crate) fn add_index(&self, name: &str, function: IndexFn<K>) -> bool {
        write(&self.state).add_index(name, function)
    }

    /// True once the first full list has been applied.
    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// Waits until the first full list has been applied (at once if it has).
    ///
    /// # Errors
    ///
    /// [`StoreError::WriterDropped`] if the writer went away before (its
    /// reflector stopped, for example on shutdown).
    pub async fn wait_ready(&self) -> Result<(), StoreError> {
        let mut ready = self.ready.clone();
        ready
            .wait_for(|ready| *ready)
            .await
            .map(drop)
            .map_err(|_| StoreError::WriterDropped)
    }

    /// The number of objects.
    pub fn len(&self) -> usize {
        read(&self.state).objects.len()
    }

    /// True if there are no objects.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The writing side of a [`Store`]: applies the events of a watch. There is
/// one writer per store; it is not `Clone`.
///
/// ```
/// use krake_client::WatchEvent;
/// use krake_controller::store::Writer;
/// use krake_data::kinds::core::Role;
/// use krake_data::Metadata;
///
/// let role = |name: &str| Role {
///     api: "core".into(),
///     kind: "Role".into(),
///     metadata: Metadata::named(name),
///     rules: vec![],
/// };
/// let mut writer = Writer::<Role>::new()
///     .with_index("first_letter", |role| vec![role.metadata.name[..1].to_owned()]);
/// let store = writer.reader();
/// assert!(!store.is_ready());
/// writer.apply(&WatchEvent::Restarted(vec![role("admin"), role("auditor")]));
/// writer.apply(&WatchEvent::Added(role("viewer")));
/// assert!(store.is_ready());
/// assert_eq!(store.len(), 3);
/// assert_eq!(store.index("first_letter", "a").len(), 2);
/// assert!(store.get(None, "viewer").is_some());
/// ```
pub struct Writer<K> {
    state: Arc<RwLock<State<K>>>,
    ready: watch::Sender<bool>,
}

impl<K: Resource> fmt::Debug for Writer<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Writer")
            .field("kind", &K::INFO.kind)
            .field("ready", &*self.ready.borrow())
            .finish_non_exhaustive()
    }
}

impl<K: Resource> Default for Writer<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Resource> Writer<K> {
    /// An empty store, not ready, without indexes.
    pub fn new() -> Self {
        let (ready, _) = watch::channel(false);
        Writer {
            state: Arc::default(),
            ready,
        }
    }

    /// Declares the secondary index `name`: `function` gives the index
    /// values of an object, and [`Store::index`] finds the objects by value.
    /// Declared before the first event, the index is complete once the store
    /// is ready. A second declaration of the same name is ignored.
    #[must_use]
    pub fn with_index(
        self,
        name: &str,
        function: impl Fn(&K) -> Vec<String> + Send + Sync + 'static,
    ) -> Self {
        write(&self.state).add_index(name, Arc::new(function));
        self
    }

    /// A reader of this writer's store.
    pub fn reader(&self) -> Store<K> {
        Store {
            state: self.state.clone(),
            ready: self.ready.subscribe(),
        }
    }

    /// Applies one watch event: `Added` and `Modified` insert or replace the
    /// object, `Deleted` removes it, `Restarted` replaces everything at once
    /// and makes the store ready.
    pub fn apply(&mut self, event: &WatchEvent<K>) {
        self.apply_owned(event.clone());
    }

    /// [`Writer::apply`] on an owned event, telling what it did.
    pub(crate) fn apply_owned(&mut self, event: WatchEvent<K>) -> Applied<K> {
        match event {
            WatchEvent::Added(object) | WatchEvent::Modified(object) => {
                let key = ObjectKey::of(&object);
                let object = Arc::new(object);
                // Drop the replaced object after the lock is released.
                let replaced = write(&self.state).upsert(key, object.clone());
                drop(replaced);
                Applied::Upserted(object)
            }
            WatchEvent::Deleted(object) => {
                let key = ObjectKey::of(&object);
                // Drop the removed entry after the lock is released.
                let removed = write(&self.state).remove(&key);
                drop(removed);
                Applied::Deleted(Arc::new(object))
            }
            WatchEvent::Restarted(objects) => {
                let removed = self.replace(objects);
                self.ready.send_replace(true);
                Applied::Restarted { removed }
            }
        }
    }

    /// Builds the new content outside the lock, swaps it in, and returns the
    /// objects of the old content that are not in the new one.
    fn replace(&mut self, objects: Vec<K>) -> Vec<Arc<K>> {
        let functions: Vec<(String, IndexFn<K>)> = read(&self.state)
            .indexes
            .iter()
            .map(|i| (i.name.clone(), i.function.clone()))
            .collect();
        let mut fresh = State {
            objects: BTreeMap::new(),
            indexes: functions
                .into_iter()
                .map(|(name, function)| Index {
                    name,
                    function,
                    keys: BTreeMap::new(),
                })
                .collect(),
        };
        for object in objects {
            // A duplicate in the list: the later object wins.
            fresh.upsert(ObjectKey::of(&object), Arc::new(object));
        }
        let old = {
            let mut state = write(&self.state);
            // Indexes added meanwhile (by a late subscriber) are built here.
            for index in state.indexes.iter().skip(fresh.indexes.len()) {
                fresh.add_index(&index.name, index.function.clone());
            }
            std::mem::replace(&mut *state, fresh)
        };
        let state = read(&self.state);
        old.objects
            .into_iter()
            .filter(|(key, _)| !state.objects.contains_key(key))
            .map(|(_, entry)| entry.object)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::time::Duration;

    use krake_data::Metadata;
    use krake_data::kinds::core::Role;
    use krake_data::kinds::kubernetes::{Application, ApplicationSpec};

    use super::*;

    fn app(namespace: &str, name: &str, labels: &[(&str, &str)]) -> Application {
        let manifest = serde_json::from_value(serde_json::json!([
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}}
        ]))
        .unwrap();
        let mut metadata = Metadata::named(name);
        metadata.namespace = Some(namespace.to_owned());
        for (key, value) in labels {
            metadata.labels.insert((*key).into(), (*value).into());
        }
        Application::new(metadata, ApplicationSpec::from_manifest(manifest))
    }

    fn role(name: &str) -> Role {
        Role {
            api: "core".into(),
            kind: "Role".into(),
            metadata: Metadata::named(name),
            rules: vec![],
        }
    }

    fn names<K: Resource>(objects: &[Arc<K>]) -> Vec<String> {
        objects
            .iter()
            .map(|o| {
                let m = o.metadata();
                match &m.namespace {
                    Some(ns) => format!("{ns}/{}", m.name),
                    None => m.name.clone(),
                }
            })
            .collect()
    }

    fn tier_index(app: &Application) -> Vec<String> {
        app.metadata
            .labels
            .get("tier")
            .cloned()
            .into_iter()
            .collect()
    }

    #[test]
    fn added_modified_and_deleted_events_are_applied_in_order() {
        let mut writer = Writer::<Application>::new();
        let store = writer.reader();
        writer.apply(&WatchEvent::Restarted(vec![]));
        writer.apply(&WatchEvent::Added(app("a", "one", &[])));
        writer.apply(&WatchEvent::Added(app("b", "one", &[])));
        writer.apply(&WatchEvent::Added(app("a", "two", &[])));
        assert_eq!(names(&store.list()), ["a/one", "a/two", "b/one"]);

        writer.apply(&WatchEvent::Modified(app("a", "one", &[("v", "2")])));
        let one = store.get(Some("a"), "one").unwrap();
        assert_eq!(one.metadata.labels.get("v").map(String::as_str), Some("2"));
        assert!(
            store
                .get(Some("b"), "one")
                .unwrap()
                .metadata
                .labels
                .is_empty()
        );

        writer.apply(&WatchEvent::Deleted(app("a", "one", &[])));
        assert!(store.get(Some("a"), "one").is_none());
        assert!(store.get(Some("b"), "one").is_some());
        assert_eq!(store.len(), 2);
        // Deleting what is not there changes nothing.
        writer.apply(&WatchEvent::Deleted(app("c", "none", &[])));
        assert_eq!(names(&store.list()), ["a/two", "b/one"]);
        // A namespaced kind needs the namespace.
        assert!(store.get(None, "two").is_none());
    }

    #[test]
    fn global_kinds_ignore_the_namespace() {
        let mut writer = Writer::<Role>::new();
        let store = writer.reader();
        writer.apply(&WatchEvent::Restarted(vec![role("admin")]));
        assert!(store.get(None, "admin").is_some());
        assert!(store.get(Some("anything"), "admin").is_some());
        writer.apply(&WatchEvent::Deleted(role("admin")));
        assert!(store.is_empty());
    }

    #[test]
    fn restarted_replaces_everything_and_reports_what_vanished() {
        let mut writer = Writer::<Application>::new().with_index("tier", tier_index);
        let store = writer.reader();
        writer.apply(&WatchEvent::Restarted(vec![
            app("ns", "keep", &[("tier", "web")]),
            app("ns", "gone", &[("tier", "web")]),
        ]));
        let clone = store.clone();
        let applied = writer.apply_owned(WatchEvent::Restarted(vec![
            app("ns", "keep", &[("tier", "db")]),
            app("ns", "new", &[("tier", "web")]),
        ]));
        let Applied::Restarted { removed } = applied else {
            panic!("a restart");
        };
        assert_eq!(names(&removed), ["ns/gone"]);
        assert_eq!(names(&clone.list()), ["ns/keep", "ns/new"]);
        assert_eq!(names(&store.index("tier", "web")), ["ns/new"]);
        assert_eq!(names(&store.index("tier", "db")), ["ns/keep"]);
        // An empty relist empties the store.
        let Applied::Restarted { removed } = writer.apply_owned(WatchEvent::Restarted(vec![]))
        else {
            panic!("a restart");
        };
        assert_eq!(names(&removed), ["ns/keep", "ns/new"]);
        assert!(store.is_empty());
        assert!(store.index("tier", "web").is_empty());
        assert!(store.is_ready());
    }

    #[test]
    fn restarted_swaps_atomically_for_concurrent_readers() {
        const SIZE: usize = 1000;
        let set = |prefix: &str| -> Vec<Application> {
            (0..SIZE)
                .map(|i| app("ns", &format!("{prefix}{i:05}"), &[("set", prefix)]))
                .collect()
        };
        let (a, b) = (set("a"), set("b"));
        let mut writer = Writer::<Application>::new().with_index("set", |app| {
            app.metadata
                .labels
                .get("set")
                .cloned()
                .into_iter()
                .collect()
        });
        let store = writer.reader();
        writer.apply(&WatchEvent::Restarted(a.clone()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let store = store.clone();
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut snapshots = 0usize;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) || snapshots == 0 {
                        let all = store.list();
                        assert_eq!(all.len(), SIZE);
                        let first = all[0].metadata.labels["set"].clone();
                        assert!(all.iter().all(|o| o.metadata.labels["set"] == first));
                        // The index moves with the objects: all of a set or none.
                        for value in ["a", "b"] {
                            let indexed = store.index("set", value);
                            assert!(indexed.len() == SIZE || indexed.is_empty());
                            assert!(indexed.iter().all(|o| o.metadata.labels["set"] == value));
                        }
                        snapshots += 1;
                    }
                    snapshots
                })
            })
            .collect();
        for round in 0..20 {
            let next = if round % 2 == 0 { &b } else { &a };
            writer.apply(&WatchEvent::Restarted(next.clone()));
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for reader in readers {
            assert!(reader.join().expect("no reader saw a mixed state") > 0);
        }
    }

    #[tokio::test]
    async fn ready_only_after_the_first_full_list() {
        let mut writer = Writer::<Application>::new();
        let store = writer.reader();
        assert!(!store.is_ready());
        writer.apply(&WatchEvent::Added(app("ns", "early", &[])));
        assert!(!store.is_ready(), "an event is not a full list");
        let waiting = tokio::spawn({
            let store = store.clone();
            async move { store.wait_ready().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        writer.apply(&WatchEvent::Restarted(vec![app("ns", "listed", &[])]));
        let waited = tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("ready within the guard")
            .unwrap();
        assert_eq!(waited, Ok(()));
        assert!(store.is_ready());
        assert_eq!(names(&store.list()), ["ns/listed"]);
        // Stays ready, even once the writer is gone.
        writer.apply(&WatchEvent::Deleted(app("ns", "listed", &[])));
        drop(writer);
        assert!(store.is_ready());
        assert_eq!(store.wait_ready().await, Ok(()));
    }

    #[tokio::test]
    async fn a_writer_dropped_before_the_list_fails_the_wait() {
        let writer = Writer::<Application>::new();
        let store = writer.reader();
        let waiting = tokio::spawn({
            let store = store.clone();
            async move { store.wait_ready().await }
        });
        drop(writer);
        let waited = tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("an answer within the guard")
            .unwrap();
        assert_eq!(waited, Err(StoreError::WriterDropped));
        assert!(!store.is_ready());
    }

    #[test]
    fn indexes_follow_inserts_updates_and_deletes() {
        let mut writer = Writer::<Application>::new()
            .with_index("tier", tier_index)
            .with_index("labels", |app| {
                app.metadata
                    .labels
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .chain(["all".to_owned(), "all".to_owned()])
                    .collect()
            })
            // Ignored: the first "tier" wins.
            .with_index("tier", |_| vec!["never".to_owned()]);
        let store = writer.reader();
        assert!(store.has_index("tier") && store.has_index("labels"));
        assert!(!store.has_index("nope"));
        writer.apply(&WatchEvent::Restarted(vec![
            app("a", "w1", &[("tier", "web"), ("zone", "x")]),
            app("b", "w2", &[("tier", "web")]),
            app("a", "d1", &[("tier", "db")]),
            app("a", "none", &[]),
        ]));
        assert_eq!(names(&store.index("tier", "web")), ["a/w1", "b/w2"]);
        assert_eq!(names(&store.index("tier", "db")), ["a/d1"]);
        assert!(store.index("tier", "never").is_empty());
        assert_eq!(store.index("labels", "all").len(), 4, "duplicates ignored");
        assert_eq!(names(&store.index("labels", "zone=x")), ["a/w1"]);

        // An update moves an object from one value to another.
        writer.apply(&WatchEvent::Modified(app("a", "w1", &[("tier", "db")])));
        assert_eq!(names(&store.index("tier", "web")), ["b/w2"]);
        assert_eq!(names(&store.index("tier", "db")), ["a/d1", "a/w1"]);
        assert!(store.index("labels", "zone=x").is_empty());
        // The index gives the current object.
        let w1 = &store.index("labels", "tier=db")[1];
        assert_eq!(w1.metadata.name, "w1");
        assert!(!w1.metadata.labels.contains_key("zone"));

        writer.apply(&WatchEvent::Deleted(app("b", "w2", &[("tier", "web")])));
        assert!(store.index("tier", "web").is_empty());
        writer.apply(&WatchEvent::Added(app("c", "w3", &[("tier", "web")])));
        assert_eq!(names(&store.index("tier", "web")), ["c/w3"]);
        assert!(store.index("nope", "web").is_empty());
    }

    #[test]
    fn an_index_added_later_is_built_from_the_current_objects() {
        let mut writer = Writer::<Application>::new();
        let store = writer.reader();
        writer.apply(&WatchEvent::Restarted(vec![
            app("a", "w1", &[("tier", "web")]),
            app("a", "d1", &[("tier", "db")]),
        ]));
        assert!(store.add_index("tier", Arc::new(tier_index)));
        assert!(!store.add_index("tier", Arc::new(|_: &Application| vec![])));
        assert_eq!(names(&store.index("tier", "web")), ["a/w1"]);
        writer.apply(&WatchEvent::Added(app("a", "w2", &[("tier", "web")])));
        assert_eq!(names(&store.index("tier", "web")), ["a/w1", "a/w2"]);
        // And it survives a relist.
        writer.apply(&WatchEvent::Restarted(vec![app(
            "a",
            "d2",
            &[("tier", "db")],
        )]));
        assert!(store.index("tier", "web").is_empty());
        assert_eq!(names(&store.index("tier", "db")), ["a/d2"]);
    }

    #[test]
    fn a_panicking_index_function_leaves_the_store_consistent() {
        let mut writer = Writer::<Application>::new().with_index("tier", |app: &Application| {
            assert!(app.metadata.name != "bomb", "boom");
            tier_index(app)
        });
        let store = writer.reader();
        writer.apply(&WatchEvent::Restarted(vec![app(
            "a",
            "w1",
            &[("tier", "web")],
        )]));
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            writer.apply(&WatchEvent::Added(app("a", "bomb", &[("tier", "web")])));
        }));
        assert!(result.is_err());
        assert_eq!(names(&store.list()), ["a/w1"]);
        assert_eq!(names(&store.index("tier", "web")), ["a/w1"]);
        writer.apply(&WatchEvent::Added(app("a", "w2", &[("tier", "web")])));
        assert_eq!(names(&store.index("tier", "web")), ["a/w1", "a/w2"]);
    }

    #[test]
    fn by_labels_matches_every_constraint() {
        let mut writer = Writer::<Application>::new();
        let store = writer.reader();
        writer.apply(&WatchEvent::Restarted(vec![
            app("a", "w1", &[("tier", "web"), ("env", "prod")]),
            app("a", "w2", &[("tier", "web"), ("env", "dev")]),
            app("a", "d1", &[("tier", "db"), ("env", "prod")]),
            app("a", "none", &[]),
        ]));
        let parse = |text: &str| LabelConstraint::parse(text).unwrap();
        assert_eq!(names(&store.by_labels(&[])).len(), 4);
        assert_eq!(
            names(&store.by_labels(&[parse("tier = web")])),
            ["a/w1", "a/w2"]
        );
        assert_eq!(
            names(&store.by_labels(&[parse("tier = web"), parse("env is prod")])),
            ["a/w1"]
        );
        assert_eq!(
            names(&store.by_labels(&[parse("env in (prod, dev)"), parse("tier != web")])),
            ["a/d1"]
        );
        // A missing label never matches, not even `not in`.
        assert_eq!(
            names(&store.by_labels(&[parse("tier not in (db)")])),
            ["a/w1", "a/w2"]
        );
    }
}

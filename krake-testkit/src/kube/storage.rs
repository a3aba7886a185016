//! The one generic object storage of a fake: every object of every kind,
//! a global resourceVersion counter, a bounded history of changes for
//! watches to resume from, and a broadcast channel per resource.
//!
//! Every write happens under one lock and sends its event while holding
//! it, so a watch that reads the history and subscribes under the same
//! lock never misses nor repeats an event.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::Value;
use tokio::sync::broadcast;

use super::registry::Registry;

/// How many events a watch may fall behind before it is closed (the
/// client then resumes from its last resourceVersion, out of the history).
const CHANNEL_CAPACITY: usize = 1024;

/// The type of a watch event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventType {
    /// `ADDED`
    Added,
    /// `MODIFIED`
    Modified,
    /// `DELETED`
    Deleted,
    /// `BOOKMARK` (no object; the resourceVersion only)
    Bookmark,
}

/// One change of one object.
#[derive(Debug)]
pub(crate) struct Event {
    /// The resourceVersion the change made.
    pub rv: u64,
    /// The storage key of the resource, `apps/deployments`.
    pub resource: Arc<str>,
    /// The object's namespace, `""` when cluster scoped.
    pub namespace: String,
    /// What happened.
    pub kind: EventType,
    /// The object after the change (before deletion for `Deleted`, with the
    /// deletion's resourceVersion). `Null` for bookmarks.
    pub object: Arc<Value>,
    /// The object before the change, for selector transitions.
    pub old: Option<Arc<Value>>,
}

/// Objects of one resource by (namespace, name).
pub(crate) type Objects = BTreeMap<(String, String), Arc<Value>>;

/// The state under the lock.
#[derive(Debug)]
pub(crate) struct StoreInner {
    /// Served kinds (CRDs add to it).
    pub registry: Registry,
    rv: u64,
    objects: HashMap<Arc<str>, Objects>,
    history: VecDeque<Arc<Event>>,
    history_limit: usize,
    /// The highest resourceVersion whose event left the history.
    compacted: u64,
    channels: HashMap<Arc<str>, broadcast::Sender<Arc<Event>>>,
    all: broadcast::Sender<Arc<Event>>,
    /// The last cluster IP handed out (10.96.0.0/12).
    pub next_cluster_ip: u32,
}

/// The shared storage.
#[derive(Debug)]
pub(crate) struct Store {
    inner: Mutex<StoreInner>,
}

impl Store {
    /// An empty store serving the built-in kinds.
    pub(crate) fn new(history_limit: usize) -> Self {
        let (all, _) = broadcast::channel(CHANNEL_CAPACITY * 4);
        Self {
            inner: Mutex::new(StoreInner {
                registry: Registry::builtin(),
                rv: 0,
                objects: HashMap::new(),
                history: VecDeque::new(),
                history_limit: history_limit.max(1),
                compacted: 0,
                channels: HashMap::new(),
                all,
                next_cluster_ip: 1,
            }),
        }
    }

    /// Takes the lock (a poisoned lock is taken over: the state stays
    /// consistent between writes).
    pub(crate) fn lock(&self) -> MutexGuard<'_, StoreInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Sets `metadata.resourceVersion`.
fn stamp(object: &mut Value, rv: u64) {
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("resourceVersion".into(), Value::String(rv.to_string()));
    }
}

impl StoreInner {
    /// The current resourceVersion.
    pub(crate) fn rv(&self) -> u64 {
        self.rv
    }

    /// The lowest resourceVersion a watch may still resume from.
    pub(crate) fn compacted(&self) -> u64 {
        self.compacted
    }

    /// One object.
    pub(crate) fn get(&self, resource: &str, namespace: &str, name: &str) -> Option<Arc<Value>> {
        self.objects
            .get(resource)?
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }

    /// The objects of a resource, in one namespace or all, in key order.
    pub(crate) fn list(&self, resource: &str, namespace: Option<&str>) -> Vec<Arc<Value>> {
        let Some(objects) = self.objects.get(resource) else {
            return Vec::new();
        };
        match namespace {
            Some(ns) => objects
                .range((ns.to_string(), String::new())..)
                .take_while(|((n, _), _)| n == ns)
                .map(|(_, v)| v.clone())
                .collect(),
            None => objects.values().cloned().collect(),
        }
    }

    /// Every stored object of every resource, with its resource key.
    pub(crate) fn all_objects(&self) -> Vec<(Arc<str>, Arc<Value>)> {
        self.objects
            .iter()
            .flat_map(|(k, objs)| objs.values().map(move |v| (k.clone(), v.clone())))
            .collect()
    }

    /// Stores an object (new or replacing one), stamping a new
    /// resourceVersion, and sends its event.
    pub(crate) fn put(
        &mut self,
        resource: &Arc<str>,
        namespace: &str,
        name: &str,
        mut object: Value,
    ) -> Arc<Value> {
        self.rv += 1;
        stamp(&mut object, self.rv);
        let object = Arc::new(object);
        let old = self
            .objects
            .entry(resource.clone())
            .or_default()
            .insert((namespace.to_string(), name.to_string()), object.clone());
        let kind = if old.is_some() {
            EventType::Modified
        } else {
            EventType::Added
        };
        self.emit(Event {
            rv: self.rv,
            resource: resource.clone(),
            namespace: namespace.to_string(),
            kind,
            object: object.clone(),
            old,
        });
        object
    }

    /// Removes an object, sending a `DELETED` event whose object carries the
    /// deletion's resourceVersion.
    pub(crate) fn remove(
        &mut self,
        resource: &Arc<str>,
        namespace: &str,
        name: &str,
    ) -> Option<Arc<Value>> {
        let old = self
            .objects
            .get_mut(resource)?
            .remove(&(namespace.to_string(), name.to_string()))?;
        self.rv += 1;
        let mut last = (*old).clone();
        stamp(&mut last, self.rv);
        let last = Arc::new(last);
        self.emit(Event {
            rv: self.rv,
            resource: resource.clone(),
            namespace: namespace.to_string(),
            kind: EventType::Deleted,
            object: last.clone(),
            old: Some(old),
        });
        Some(last)
    }

    fn emit(&mut self, event: Event) {
        let event = Arc::new(event);
        self.history.push_back(event.clone());
        while self.history.len() > self.history_limit {
            if let Some(e) = self.history.pop_front() {
                self.compacted = e.rv;
            }
        }
        if let Some(tx) = self.channels.get(&event.resource) {
            if tx.send(event.clone()).is_err() {
                self.channels.remove(&event.resource);
            }
        }
        let _ = self.all.send(event);
    }

    /// The events of a resource after `rv`, or `None` when the history no
    /// longer reaches back that far.
    pub(crate) fn since(&self, resource: &str, rv: u64) -> Option<Vec<Arc<Event>>> {
        if rv < self.compacted {
            return None;
        }
        let start = self.history.partition_point(|e| e.rv <= rv);
        Some(
            self.history
                .iter()
                .skip(start)
                .filter(|e| &*e.resource == resource)
                .cloned()
                .collect(),
        )
    }

    /// Subscribes to the changes of one resource.
    pub(crate) fn subscribe(&mut self, resource: &Arc<str>) -> broadcast::Receiver<Arc<Event>> {
        self.channels
            .entry(resource.clone())
            .or_insert_with(|| broadcast::channel(CHANNEL_CAPACITY).0)
            .subscribe()
    }

    /// Subscribes to every change.
    pub(crate) fn subscribe_all(&self) -> broadcast::Receiver<Arc<Event>> {
        self.all.subscribe()
    }

    /// Sends a bookmark at the current resourceVersion to every watched
    /// resource.
    pub(crate) fn bookmark(&mut self) {
        let rv = self.rv;
        self.channels.retain(|resource, tx| {
            let event = Event {
                rv,
                resource: resource.clone(),
                namespace: String::new(),
                kind: EventType::Bookmark,
                object: Arc::new(Value::Null),
                old: None,
            };
            tx.send(Arc::new(event)).is_ok()
        });
    }

    /// Drops the whole history, as an etcd compaction at the current
    /// revision would.
    pub(crate) fn compact(&mut self) {
        self.history.clear();
        self.compacted = self.rv;
    }

    /// Forgets every object of a resource without events (its CRD is gone
    /// and the objects were deleted one by one before).
    pub(crate) fn drop_resource(&mut self, resource: &str) {
        self.objects.remove(resource);
    }
}

//! Event-driven observation of the resources applications run on clusters.
//!
//! Krake polls every resource of every application every 2 s. Here there is
//! one watch per (cluster, kind, namespace) in use, shared by every
//! application with a resource of that kind in that namespace of that
//! cluster: a `kube` watcher feeding a reflector store of the live objects.
//! A change of an object (edited, deleted, its status moving) wakes exactly
//! the applications that own it, through the sender of
//! [`Observations::triggers`]; a relist (a watch that came back after the
//! cluster went away) wakes every application of that watch. The
//! application controller reads the live objects from the stores and never
//! GETs them.
//!
//! Interest is registered per application ([`Observations::observe`]) and
//! dropped when it leaves the cluster ([`Observations::release`]); a watch
//! nobody uses any more stops.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::api::DynamicObject;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher::Event;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use crate::kubernetes::cluster_client::{ClusterClient, KubeError, ResolvedKind, api_for};
use crate::kubernetes::cluster_watch;
use crate::object_key::ObjectKey;

/// One shared watch: a kind in a namespace (`None`: a cluster-wide kind)
/// of a cluster, through one client (a new kubeconfig is a new watch).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WatchKey {
    /// The Krake Cluster.
    pub cluster: ObjectKey,
    /// The fingerprint of the kubeconfig the watch was opened with.
    pub kubeconfig: u64,
    /// `apiVersion` of the kind.
    pub api_version: String,
    /// The kind.
    pub kind: String,
    /// The namespace, for namespaced kinds.
    pub namespace: Option<String>,
}

struct Watch {
    store: Store<DynamicObject>,
    /// True once the watch has listed its objects (and stays true across
    /// relists, as the store keeps serving the last view meanwhile).
    ready: watch::Receiver<bool>,
    /// Object name -> applications owning it.
    owners: HashMap<String, HashSet<ObjectKey>>,
    last_error: Arc<Mutex<Option<String>>>,
    stop: CancellationToken,
}

#[derive(Default)]
struct State {
    watches: HashMap<WatchKey, Watch>,
    /// Application -> the (watch, object name) pairs it owns.
    interests: HashMap<ObjectKey, HashSet<(WatchKey, String)>>,
}

/// The shared watches of a process; see the module docs. Cheap to clone.
#[derive(Clone)]
pub struct Observations {
    state: Arc<Mutex<State>>,
    triggers: broadcast::Sender<ObjectKey>,
    shutdown: CancellationToken,
    ready_timeout: Duration,
}

impl std::fmt::Debug for Observations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observations")
            .field("watches", &self.watch_count())
            .finish_non_exhaustive()
    }
}

/// What an application asks to observe: one of its resources.
#[derive(Debug, Clone)]
pub struct Observed<'a> {
    /// The kind as the cluster serves it.
    pub resource: &'a ResolvedKind,
    /// Its namespace (ignored for cluster-wide kinds).
    pub namespace: &'a str,
    /// Its name.
    pub name: &'a str,
}

impl Observations {
    /// No watches yet; every watch stops at `shutdown`. Applications whose
    /// objects change are sent on [`Observations::triggers`]. A watch that
    /// has not listed its objects within `ready_timeout` makes
    /// [`Observations::observe`] fail as unreachable.
    pub fn new(shutdown: CancellationToken, ready_timeout: Duration) -> Self {
        let (triggers, _) = broadcast::channel(16_384);
        Observations {
            state: Arc::new(Mutex::new(State::default())),
            triggers,
            shutdown,
            ready_timeout,
        }
    }

    /// The sender of the keys of applications whose observed objects
    /// changed (for [`Controller::triggered_by`](crate::controller::Controller::triggered_by)).
    pub fn triggers(&self) -> broadcast::Sender<ObjectKey> {
        self.triggers.clone()
    }

    /// How many watches are open.
    pub fn watch_count(&self) -> usize {
        self.state.lock().map(|s| s.watches.len()).unwrap_or(0)
    }

    /// Makes `app` the owner of exactly `resources` on `cluster` (its
    /// interest in other objects of that cluster is dropped), opening the
    /// watches needed, and returns the live objects (`None`: absent on
    /// the cluster) once every watch has listed.
    pub async fn observe(
        &self,
        cluster: &ObjectKey,
        kubeconfig: u64,
        client: &ClusterClient,
        app: &ObjectKey,
        resources: &[Observed<'_>],
    ) -> Result<Vec<Option<Arc<DynamicObject>>>, KubeError> {
        let mut wanted = HashSet::new();
        let mut refs = Vec::with_capacity(resources.len());
        let mut stores = Vec::new();
        {
            let Ok(mut state) = self.state.lock() else {
                return Err(KubeError::Unreachable("observation state poisoned".into()));
            };
            for observed in resources {
                let key = WatchKey {
                    cluster: cluster.clone(),
                    kubeconfig,
                    api_version: observed.resource.resource.api_version.clone(),
                    kind: observed.resource.resource.kind.clone(),
                    namespace: observed
                        .resource
                        .namespaced
                        .then(|| observed.namespace.to_owned()),
                };
                if !state.watches.contains_key(&key) {
                    let watch = self.open(&key, client, observed.resource);
                    state.watches.insert(key.clone(), watch);
                }
                if let Some(watch) = state.watches.get_mut(&key) {
                    watch
                        .owners
                        .entry(observed.name.to_owned())
                        .or_default()
                        .insert(app.clone());
                    stores.push((watch.ready.clone(), watch.last_error.clone()));
                    let mut reference = ObjectRef::<DynamicObject>::new_with(
                        observed.name,
                        observed.resource.resource.clone(),
                    );
                    if observed.resource.namespaced {
                        reference = reference.within(observed.namespace);
                    }
                    refs.push((watch.store.clone(), reference));
                }
                wanted.insert((key, observed.name.to_owned()));
            }
            // Drop what this application no longer owns on this cluster.
            let before = state.interests.remove(app).unwrap_or_default();
            let mut kept = HashSet::new();
            for (key, name) in before {
                if wanted.contains(&(key.clone(), name.clone())) || key.cluster != *cluster {
                    kept.insert((key, name));
                } else {
                    Self::drop_interest(&mut state, app, &key, &name);
                }
            }
            kept.extend(wanted);
            state.interests.insert(app.clone(), kept);
        }
        for (mut ready, last_error) in stores {
            self.wait_ready(&mut ready, &last_error).await?;
        }
        Ok(refs
            .into_iter()
            .map(|(store, reference)| store.get(&reference))
            .collect())
    }

    /// Drops every interest of `app` on `cluster` (`None`: on every
    /// cluster); watches left without owners stop.
    pub fn release(&self, app: &ObjectKey, cluster: Option<&ObjectKey>) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        let interests = state.interests.remove(app).unwrap_or_default();
        let mut kept = HashSet::new();
        for (key, name) in interests {
            if cluster.is_none_or(|c| *c == key.cluster) {
                Self::drop_interest(&mut state, app, &key, &name);
            } else {
                kept.insert((key, name));
            }
        }
        if !kept.is_empty() {
            state.interests.insert(app.clone(), kept);
        }
    }

    /// Stops every watch of `cluster` opened with another kubeconfig than
    /// `kubeconfig` (`None`: every watch of the cluster).
    pub fn retire_cluster(&self, cluster: &ObjectKey, kubeconfig: Option<u64>) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        state.watches.retain(|key, watch| {
            let retire = key.cluster == *cluster && Some(key.kubeconfig) != kubeconfig;
            if retire {
                watch.stop.cancel();
            }
            !retire
        });
    }

    fn drop_interest(state: &mut State, app: &ObjectKey, key: &WatchKey, name: &str) {
        let Some(watch) = state.watches.get_mut(key) else {
            return;
        };
        if let Some(owners) = watch.owners.get_mut(name) {
            owners.remove(app);
            if owners.is_empty() {
                watch.owners.remove(name);
            }
        }
        if watch.owners.is_empty() {
            watch.stop.cancel();
            state.watches.remove(key);
        }
    }

    async fn wait_ready(
        &self,
        ready: &mut watch::Receiver<bool>,
        last_error: &Mutex<Option<String>>,
    ) -> Result<(), KubeError> {
        // Not `Store::wait_until_ready`: its readiness is set when the
        // reflector applies the first InitDone, and a waiter that arrives
        // around then was seen to sleep until its timeout; this flag is set
        // by the task below after the store has the listed objects.
        match tokio::time::timeout(self.ready_timeout, ready.wait_for(|ready| *ready)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(KubeError::Unreachable("the watch stopped".into())),
            Err(_) => {
                let error = last_error.lock().ok().and_then(|e| e.clone());
                Err(KubeError::Unreachable(error.unwrap_or_else(|| {
                    "the cluster did not list the objects in time".into()
                })))
            }
        }
    }

    /// Starts the watch task of `key`.
    fn open(&self, key: &WatchKey, client: &ClusterClient, resource: &ResolvedKind) -> Watch {
        let writer = reflector::store::Writer::new(resource.resource.clone());
        let store = writer.as_reader();
        let stop = self.shutdown.child_token();
        let last_error = Arc::new(Mutex::new(None));
        let api = api_for(
            client.watch_client(),
            resource,
            key.namespace.as_deref().unwrap_or(""),
        );
        let state = Arc::downgrade(&self.state);
        let triggers = self.triggers.clone();
        let task_stop = stop.clone();
        let task_key = key.clone();
        let task_error = last_error.clone();
        let (ready_tx, ready) = watch::channel(false);
        tokio::spawn(cluster_watch::drive(writer, api, task_stop, move |event| {
            let Some(state) = state.upgrade() else {
                return false;
            };
            let woken: Vec<ObjectKey> = match event {
                Ok(Event::Apply(object) | Event::Delete(object)) => {
                    let name = object.metadata.name.unwrap_or_default();
                    owners_of(&state, &task_key, Some(&name))
                }
                Ok(Event::InitDone) => {
                    if let Ok(mut error) = task_error.lock() {
                        *error = None;
                    }
                    ready_tx.send_replace(true);
                    owners_of(&state, &task_key, None)
                }
                Ok(Event::Init | Event::InitApply(_)) => Vec::new(),
                Err(err) => {
                    tracing::debug!(
                        cluster = %task_key.cluster,
                        kind = %task_key.kind,
                        error = %err,
                        "watch failed; retrying"
                    );
                    if let Ok(mut error) = task_error.lock() {
                        *error = Some(err.to_string());
                    }
                    Vec::new()
                }
            };
            for app in woken {
                let _ = triggers.send(app);
            }
            true
        }));
        Watch {
            store,
            ready,
            owners: HashMap::new(),
            last_error,
            stop,
        }
    }
}

/// The owners of `name` in the watch `key` (`None`: of every object).
fn owners_of(state: &Mutex<State>, key: &WatchKey, name: Option<&str>) -> Vec<ObjectKey> {
    let Ok(state) = state.lock() else {
        return Vec::new();
    };
    let Some(watch) = state.watches.get(key) else {
        return Vec::new();
    };
    match name {
        Some(name) => watch
            .owners
            .get(name)
            .map(|owners| owners.iter().cloned().collect())
            .unwrap_or_default(),
        None => {
            let all: HashSet<&ObjectKey> = watch.owners.values().flatten().collect();
            all.into_iter().cloned().collect()
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

//! Process-wide shared reflectors: one watch per (kind, namespace, label
//! selector), however many controllers of the process need it.
//!
//! # Expected flow
//!
//! The process makes one [`Reflectors`] (from its [`Client`] and its shutdown
//! token) and hands clones to its controllers. Each controller
//! [`subscribes`](Reflectors::subscribe) to what it watches and gets a
//! [`Subscription`]: the shared [`Store`] and a receiver of [`Change`]s. The
//! first subscriber to a (kind, namespace, selector) starts its reflector
//! (a [`krake_client::Api::watch`] feeding a [`Writer`] in a task of its
//! own); later subscribers share its store and watch.
//!
//! ```no_run
//! # async fn example(client: krake_client::Client) -> Result<(), Box<dyn std::error::Error>> {
//! use krake_controller::shared::{Change, Reflectors};
//! use krake_data::kinds::kubernetes::Application;
//! use tokio_util::sync::CancellationToken;
//!
//! let shutdown = CancellationToken::new();
//! let reflectors = Reflectors::new(client, shutdown.clone());
//! let mut apps = reflectors.subscribe_with_index::<Application>(
//!     Some("testing"),
//!     None,
//!     "cluster",
//!     |app| app.status.scheduled_to.iter().map(|c| c.name.clone()).collect(),
//! );
//! apps.store.wait_ready().await?;
//! while let Ok(change) = apps.changes.recv().await {
//!     if let Change::Applied(app) = change {
//!         println!("{} changed", app.metadata.name);
//!     }
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # Guarantees
//!
//! - One watch per (kind, namespace, selector): the selector is compared as
//!   text (trimmed), so spell it the same way everywhere to share.
//! - A change is sent after it is applied: a subscriber finds the store
//!   already reflecting it. Every change applied after [`Reflectors::subscribe`]
//!   returned reaches the subscription; earlier ones are in the store, so read
//!   the store first, then follow the changes.
//! - On a relist, the objects that disappeared while the watch was down are
//!   sent as [`Change::Deleted`], followed by one [`Change::Restarted`].
//! - Indexes: a subscriber declares the indexes it needs with
//!   [`Reflectors::subscribe_with_index`] (call it once per index; the
//!   subscriptions share one store). An index declared on a reflector that
//!   already runs is built at once from its current objects, so it is
//!   complete when the call returns; declared before the first list, it is
//!   complete when the store is ready. Index names are shared by every
//!   subscriber of a reflector: the first declaration of a name wins, so
//!   subscribers that need different functions must use different names
//!   (for example prefixed with the controller's name).
//! - Reflectors run until the shutdown token is cancelled (not when their
//!   subscribers go away); then their watches close and
//!   [`Store::wait_ready`] on a store that never became ready fails.
//!
//! # Caveats
//!
//! - The change feed is a bounded broadcast channel
//!   ([`SharedConfig::channel_capacity`]): a subscriber that falls further
//!   behind gets [`broadcast::error::RecvError::Lagged`] and should treat it
//!   like a [`Change::Restarted`] (re-read the whole store).
//! - Watch errors that are not retried silently (401, 403, 400) are logged
//!   with `tracing` and the watch keeps retrying; the store stays as it was
//!   (so [`Store::wait_ready`] waits until a list succeeds, or fails once the
//!   reflector stops).

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use futures::StreamExt;
use krake_client::{Api, Client, WatchConfig};
use krake_data::Resource;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::store::{Applied, IndexFn, Store, Writer};

/// What changed in a shared store, for triggering reconciles.
#[derive(Debug, Clone)]
pub enum Change<K> {
    /// The object was created or changed (its new state).
    Applied(Arc<K>),
    /// The object was removed (its last state): from a watch event, or
    /// because a relist no longer had it.
    Deleted(Arc<K>),
    /// The store was relisted: anything may have changed.
    Restarted,
}

/// Settings of the shared reflectors.
#[derive(Debug, Clone)]
#[must_use]
pub struct SharedConfig {
    /// The watch settings (heartbeat, reconnection backoff); the label
    /// selector is each subscription's.
    pub watch: WatchConfig,
    /// How many changes a subscriber may fall behind before it lags.
    pub channel_capacity: usize,
}

impl Default for SharedConfig {
    fn default() -> Self {
        SharedConfig {
            watch: WatchConfig::default(),
            channel_capacity: 1024,
        }
    }
}

/// What a subscriber gets: the shared store and the changes applied to it.
pub struct Subscription<K> {
    /// The store of the reflector, shared with every other subscriber.
    pub store: Store<K>,
    /// The changes applied to the store after the subscription was made.
    pub changes: broadcast::Receiver<Change<K>>,
}

impl<K: Resource> fmt::Debug for Subscription<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

/// What identifies a shared reflector.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ReflectorKey {
    kind: TypeId,
    namespace: Option<String>,
    selector: Option<String>,
}

/// One running reflector, as kept in the registry.
struct Shared<K> {
    store: Store<K>,
    changes: broadcast::Sender<Change<K>>,
}

struct Inner {
    client: Client,
    shutdown: CancellationToken,
    config: SharedConfig,
    reflectors: Mutex<HashMap<ReflectorKey, Box<dyn Any + Send + Sync>>>,
    tasks: TaskTracker,
}

/// The shared reflectors of a process. Cheap to clone (clones share them).
#[derive(Clone)]
pub struct Reflectors {
    inner: Arc<Inner>,
    /// The client handed to controllers ([`Reflectors::client`]).
    client: Client,
}

impl fmt::Debug for Reflectors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reflectors")
            .field("count", &self.count())
            .field("running", &self.inner.tasks.len())
            .finish_non_exhaustive()
    }
}

impl Reflectors {
    /// Shared reflectors over `client` with the default settings, stopped
    /// when `shutdown` is cancelled.
    pub fn new(client: Client, shutdown: CancellationToken) -> Self {
        Self::with_config(client, shutdown, SharedConfig::default())
    }

    /// Shared reflectors with these settings.
    pub fn with_config(client: Client, shutdown: CancellationToken, config: SharedConfig) -> Self {
        Reflectors {
            client: client.clone(),
            inner: Arc::new(Inner {
                client,
                shutdown,
                config,
                reflectors: Mutex::default(),
                tasks: TaskTracker::new(),
            }),
        }
    }

    /// The client for controllers to write with: the one the reflectors
    /// watch through, unless another was given with
    /// [`Reflectors::with_client`].
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The same reflectors (watching through their own client), handing
    /// `client` to the controllers built on the result: for instance a
    /// client fenced by a leader elector's write guard, one per controller
    /// of a process.
    pub fn with_client(&self, client: Client) -> Reflectors {
        Reflectors {
            inner: self.inner.clone(),
            client,
        }
    }

    /// The objects of kind `K` in `namespace` (`None`: every namespace, or a
    /// global kind) whose labels match `selector` (`None`: all), starting
    /// the reflector if nobody watches them yet.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, when it has to start a reflector.
    pub fn subscribe<K: Resource>(
        &self,
        namespace: Option<&str>,
        selector: Option<&str>,
    ) -> Subscription<K> {
        self.subscribe_inner(namespace, selector, None)
    }

    /// [`Reflectors::subscribe`], declaring the secondary index `name` on the
    /// shared store (see the module documentation for how indexes of
    /// several subscribers combine).
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, when it has to start a reflector.
    pub fn subscribe_with_index<K: Resource>(
        &self,
        namespace: Option<&str>,
        selector: Option<&str>,
        name: &str,
        function: impl Fn(&K) -> Vec<String> + Send + Sync + 'static,
    ) -> Subscription<K> {
        self.subscribe_inner(namespace, selector, Some((name, Arc::new(function))))
    }

    fn subscribe_inner<K: Resource>(
        &self,
        namespace: Option<&str>,
        selector: Option<&str>,
        index: Option<(&str, IndexFn<K>)>,
    ) -> Subscription<K> {
        let namespace = namespace.filter(|_| K::INFO.is_namespaced());
        let selector = selector.map(str::trim).filter(|s| !s.is_empty());
        let key = ReflectorKey {
            kind: TypeId::of::<K>(),
            namespace: namespace.map(str::to_owned),
            selector: selector.map(str::to_owned),
        };
        let mut reflectors = self
            .inner
            .reflectors
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(shared) = reflectors
            .get(&key)
            .and_then(|shared| shared.downcast_ref::<Shared<K>>())
        {
            if let Some((name, function)) = index {
                shared.store.add_index(name, function);
            }
            return Subscription {
                store: shared.store.clone(),
                changes: shared.changes.subscribe(),
            };
        }
        let mut writer = Writer::new();
        if let Some((name, function)) = index {
            writer = writer.with_index(name, move |object| function(object));
        }
        let store = writer.reader();
        let (changes, receiver) = broadcast::channel(self.inner.config.channel_capacity.max(1));
        let api = match namespace {
            Some(namespace) => Api::<K>::namespaced(self.inner.client.clone(), namespace),
            None => Api::<K>::all(self.inner.client.clone()),
        };
        let mut config = self.inner.config.watch.clone();
        config.label_selector = selector.map(str::to_owned);
        tracing::debug!(
            kind = K::INFO.kind,
            namespace,
            selector,
            "shared reflector: starting"
        );
        self.inner.tasks.spawn(run(
            api,
            config,
            writer,
            changes.clone(),
            self.inner.shutdown.clone(),
        ));
        reflectors.insert(
            key,
            Box::new(Shared {
                store: store.clone(),
                changes,
            }),
        );
        Subscription {
            store,
            changes: receiver,
        }
    }

    /// How many reflectors were started (one per distinct kind, namespace
    /// and selector subscribed to).
    pub fn count(&self) -> usize {
        self.inner
            .reflectors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Waits until the shutdown token is cancelled and every reflector has
    /// stopped (its watch closed).
    pub async fn stopped(&self) {
        self.inner.shutdown.cancelled().await;
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
    }
}

/// Feeds one shared store from its watch until shutdown.
async fn run<K: Resource>(
    api: Api<K>,
    config: WatchConfig,
    mut writer: Writer<K>,
    changes: broadcast::Sender<Change<K>>,
    shutdown: CancellationToken,
) {
    let selector = config.label_selector.clone();
    let namespace = api.dynamic().namespace().map(str::to_owned);
    let mut events = std::pin::pin!(api.watch(config));
    loop {
        let next = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            next = events.next() => next,
        };
        let Some(next) = next else { break };
        match next {
            Ok(event) => match writer.apply_owned(event) {
                Applied::Upserted(object) => {
                    let _ = changes.send(Change::Applied(object));
                }
                Applied::Deleted(object) => {
                    let _ = changes.send(Change::Deleted(object));
                }
                Applied::Restarted { removed } => {
                    for object in removed {
                        let _ = changes.send(Change::Deleted(object));
                    }
                    let _ = changes.send(Change::Restarted);
                }
            },
            Err(err) => tracing::warn!(
                kind = K::INFO.kind,
                namespace,
                selector,
                error = %err,
                "shared reflector: watch error; retrying"
            ),
        }
    }
    tracing::debug!(
        kind = K::INFO.kind,
        namespace,
        selector,
        "shared reflector: stopped"
    );
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::time::Duration;

    use krake_data::kinds::core::Role;
    use krake_data::kinds::kubernetes::Application;

    use super::*;

    /// Reflectors against a port nobody listens on: their watches keep
    /// retrying, which is enough to check the registry.
    fn unreachable(shutdown: &CancellationToken) -> Reflectors {
        let client = Client::new("http://127.0.0.1:9").unwrap();
        Reflectors::new(client, shutdown.clone())
    }

    #[tokio::test]
    async fn one_reflector_per_kind_namespace_and_selector() {
        let shutdown = CancellationToken::new();
        let reflectors = unreachable(&shutdown);
        let a = reflectors.subscribe::<Application>(Some("ns"), None);
        let b = reflectors
            .clone()
            .subscribe::<Application>(Some("ns"), Some("  "));
        assert_eq!(reflectors.count(), 1, "an empty selector is no selector");
        reflectors.subscribe::<Application>(Some("ns"), Some("tier=web"));
        reflectors.subscribe::<Application>(Some("ns"), Some(" tier=web "));
        assert_eq!(reflectors.count(), 2, "selectors are compared trimmed");
        reflectors.subscribe::<Application>(Some("other"), None);
        reflectors.subscribe::<Application>(None, None);
        assert_eq!(reflectors.count(), 4);
        // A global kind has no namespace to tell reflectors apart.
        reflectors.subscribe::<Role>(None, None);
        reflectors.subscribe::<Role>(Some("ns"), None);
        assert_eq!(reflectors.count(), 5);

        // Shared means the same store: an index declared through one is
        // seen through the other.
        assert!(!a.store.is_ready() && !b.store.is_ready());
        let c = reflectors.subscribe_with_index::<Application>(Some("ns"), None, "i", |_| vec![]);
        assert!(a.store.has_index("i") && b.store.has_index("i") && c.store.has_index("i"));
        assert_eq!(reflectors.count(), 5);

        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), reflectors.stopped())
            .await
            .expect("stopped within the guard");
        assert_eq!(
            a.store.wait_ready().await,
            Err(crate::store::StoreError::WriterDropped)
        );
    }
}
